"""A CA that signs node and client certificates (what `cowsqlpy.rights` keys on), made
with the project's own tool (`cowsqlpy.tls.make_ca` / `make_cert(ca=, cn=)`)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from cowsqlpy.tls import TLSConfig, make_ca, make_cert


def make_pki(base: Path, cns: Iterable[str]) -> dict[str, TLSConfig]:
    """A CA in ``base/ca`` and one certificate per CN it signs (``base/CN.crt``, with the
    tool's default DNS name that clients check); the `TLSConfig` of each, keyed by CN."""
    ca = make_ca(base / "ca")
    return {cn: make_cert(base, ca=ca, cn=cn) for cn in cns}
