"""Rights per client certificate: what a TLS connection to a node's front may do.

The cluster CA signs node and client certificates; a `Rights` map gives each certificate
subject common name (CN) an `Access` level, and every other certificate the CA signed
the map's default. The front (`cowsqlpy.front.Front(rights=...)`) asks the map once per
connection, after the TLS handshake, and its guard enforces the level on every request::

    rights = Rights({"node": Access.PEER, "ops": Access.ADMIN, "app": Access.WRITE},
                    default=Access.READ)
    rights = Rights.parse("node=peer,ops=admin,app=write,*=read")   # the same, as text

Levels, each including the ones below it:

* ``NONE``: LEADER and CLIENT only (so a client finds the leader and then gets a clear
  `cowsqlpy.errors.AccessDeniedError` instead of a closed connection);
* ``READ``: statements that cannot write (`cowsqlpy.guard.read_only_reason`), CLUSTER,
  DESCRIBE; plus the read barrier's own write in its own database (linearizable reads);
* ``WRITE``: every statement the guard lets through, but no admin request;
* ``ADMIN``: the admin requests too (`guard.ADMIN_REQUESTS`: ADD, ASSIGN, REMOVE,
  TRANSFER, WEIGHT, DUMP);
* ``PEER``: a node: CONNECT (Raft) too. Give it to the nodes' certificates: a node dials
  its peers and runs its App's membership changes with its own certificate.

Without a map every certificate the CA signed is a ``PEER`` (go-cowsql's one-certificate
scheme).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

from .tls import subject_cn


class Access(enum.IntEnum):
    """What a connection may do; a higher level includes every lower one."""

    NONE = 0
    READ = 1
    WRITE = 2
    ADMIN = 3
    PEER = 4

    @classmethod
    def named(cls, name: str) -> Access:
        """The level of a name (``"read"``, ``"WRITE"``...). :raises ValueError: no such level."""
        try:
            return cls[name.strip().upper()]
        except KeyError:
            levels = ", ".join(a.name.lower() for a in cls)
            raise ValueError(f"unknown access level {name!r} (one of {levels})") from None


class Rights:
    """Access levels by certificate subject CN; `default` for every other certificate.

    :param by_cn: subject CN -> level (an `Access` or its name).
    :param default: the level of a certificate whose CN is not in `by_cn`.
    :raises ValueError: an unknown level name or an empty CN.
    """

    def __init__(
        self,
        by_cn: Mapping[str, Access | str] | None = None,
        *,
        default: Access | str = Access.NONE,
    ) -> None:
        self.by_cn: dict[str, Access] = {}
        for cn, level in (by_cn or {}).items():
            if not cn:
                raise ValueError("a rights entry needs a certificate CN")
            self.by_cn[cn] = level if isinstance(level, Access) else Access.named(level)
        self.default = default if isinstance(default, Access) else Access.named(default)

    @classmethod
    def parse(cls, spec: str) -> Rights:
        """Rights from ``"CN=level,CN=level,*=level"`` (``*``: the default, else ``none``).

        :raises ValueError: an entry without ``=``, an unknown level, a CN given twice.
        """
        by_cn: dict[str, Access] = {}
        default = Access.NONE
        for entry in spec.split(","):
            if not entry.strip():
                continue
            cn, sep, level = entry.rpartition("=")
            cn = cn.strip()
            if not sep or not cn:
                raise ValueError(f"rights entry {entry.strip()!r} is not CN=level")
            if cn == "*":
                default = Access.named(level)
            elif cn in by_cn:
                raise ValueError(f"rights give CN {cn!r} twice")
            else:
                by_cn[cn] = Access.named(level)
        return cls(by_cn, default=default)

    def access(self, peercert: Mapping[str, Any] | None) -> Access:
        """The level of a verified peer certificate (`getpeercert()`); NONE without one."""
        if not peercert:
            return Access.NONE
        cn = subject_cn(peercert)
        return self.by_cn.get(cn, self.default) if cn is not None else self.default

    def __repr__(self) -> str:
        entries = [f"{cn}={level.name.lower()}" for cn, level in self.by_cn.items()]
        return f"Rights.parse({','.join([*entries, f'*={self.default.name.lower()}'])!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rights) and (self.by_cn, self.default) == (
            other.by_cn,
            other.default,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable-looking value object


__all__ = ["Access", "Rights"]
