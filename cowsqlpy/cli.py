"""Command-line tools: the ``cowsql`` shell and the ``cowsqlpy-node`` node runner.

    cowsql -s 127.0.0.1:9001,127.0.0.1:9002 mydb            # interactive
    cowsql -s 127.0.0.1:9001 mydb -c "SELECT * FROM t"      # one command
    cowsql -s file:///var/lib/app/cowsqlpy-app.sqlite mydb < script.sql

    cowsqlpy-node --address 127.0.0.1:9001 --dir /var/lib/n1
    cowsqlpy-node --address 127.0.0.1:9002 --dir /var/lib/n2 --join 127.0.0.1:9001

Both are also reachable as ``python -m cowsqlpy shell|node ...``. See docs/cli.md.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import sqlite3
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from ._runner import StopSignals
from .client import SyncClient
from .errors import Error
from .protocol import SPARE, STANDBY, VOTER, NodeInfo
from .retry import RetryPolicy
from .store import MemoryNodeStore, NodeStore, NotANodeStoreError, SqliteNodeStore
from .tls import TLSConfig

READY_PREFIX = "cowsqlpy-node ready"

_ROLE: dict[int | None, str] = {VOTER: "voter", STANDBY: "stand-by", SPARE: "spare"}

HELP = """\
.cluster                 list the cluster's nodes: id|address|role
.leader                  the leader's address
.remove ADDRESS          remove the node at ADDRESS from the cluster
.describe ADDRESS        failure domain and weight of the node at ADDRESS
.weight ADDRESS N        set the weight of the node at ADDRESS
.dump ADDRESS [DB]       write DB (default: this shell's database) and its WAL, as
                         the node at ADDRESS has them, to the current directory
.help                    this text
.exit / .quit            leave the shell
Any other input is SQL, ended by ';'; interactively a line without ';' runs as it
is, unless it is unfinished (open parenthesis, quote, trigger body)."""


# -- Shell ----------------------------------------------------------------------------


class ShellError(Exception):
    """A dot-command used wrongly (shown as one line, the shell goes on)."""


def _text(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return "X'" + value.hex().upper() + "'"
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return str(value)  # datetimes


def split_statements(text: str) -> tuple[list[str], str]:
    """Complete statements in `text` and the incomplete rest (sqlite3's own rules)."""
    statements: list[str] = []
    start = 0
    pos = text.find(";")
    while pos != -1:
        candidate = text[start : pos + 1]
        if sqlite3.complete_statement(candidate):
            if candidate.strip(" \t\r\n;"):
                statements.append(candidate.strip())
            start = pos + 1
        pos = text.find(";", pos + 1)
    return statements, text[start:]


def _finished(text: str) -> bool:
    """True if `text` plus a ';' would be a complete statement: quotes, comments,
    parentheses and trigger bodies are all closed."""
    if not sqlite3.complete_statement(text + ";"):
        return False
    depth, i, n = 0, 0, len(text)
    closers = {"'": "'", '"': '"', "`": "`", "[": "]"}
    while i < n:
        ch = text[i]
        if ch in closers:
            end = text.find(closers[ch], i + 1)
            if end == -1:
                return False
            i = end + 1
            continue
        if text.startswith("--", i):
            nl = text.find("\n", i)
            i = n if nl == -1 else nl + 1
            continue
        if text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end == -1:
                return False
            i = end + 2
            continue
        depth += {"(": 1, ")": -1}.get(ch, 0)
        i += 1
    return depth <= 0


class Shell:
    """The logic of the ``cowsql`` shell, separate from its terminal I/O."""

    def __init__(self, store: NodeStore, database: str, *, fmt: str = "tabular",
                 out: TextIO = sys.stdout, err: TextIO = sys.stderr, policy: RetryPolicy | None = None,
                 tls: TLSConfig | None = None) -> None:
        from .dbapi import connect

        if fmt not in ("tabular", "json"):
            raise ValueError(f"unknown format {fmt!r} (tabular or json)")
        self.store = store
        self.database = database
        self.format = fmt
        self.out, self.err = out, err
        self.policy = policy or RetryPolicy(deadline=10.0)
        self.client = SyncClient(store, policy=self.policy, tls=tls)
        self.conn = connect(store=store, database=database, autocommit=True, policy=self.policy, tls=tls)
        self.errors = 0

    def close(self) -> None:
        self.conn.close()
        self.client.close()

    # -- output --

    def _emit(self, text: str) -> None:
        if text:
            self.out.write(text + "\n")
            self.out.flush()

    def _error(self, message: str) -> None:
        self.errors += 1
        self.err.write("Error: " + " ".join(message.split()) + "\n")
        self.err.flush()

    def _emit_json(self, value: Any) -> None:
        self._emit(json.dumps(value, indent=2))

    # -- input --

    def run_text(self, text: str) -> None:
        """Run a whole script: dot-command lines and ';'-terminated SQL."""
        pending = ""
        for line in text.splitlines():
            if not pending.strip() and line.strip().startswith("."):
                self.dot(line.strip())
                continue
            pending += line + "\n"
            statements, pending = split_statements(pending)
            for sql in statements:
                self.sql(sql)
        if pending.strip():
            self.sql(pending.strip())

    def dot(self, line: str) -> bool:
        """Run one dot-command; False for .exit/.quit."""
        parts = line.split()
        cmd, args = parts[0].lower(), parts[1:]
        try:
            if cmd in (".exit", ".quit"):
                return False
            handler = {
                ".cluster": self._cluster, ".leader": self._leader, ".remove": self._remove,
                ".describe": self._describe, ".weight": self._weight, ".dump": self._dump,
                ".help": self._help,
            }.get(cmd)
            if handler is None:
                raise ShellError(f"unknown command {cmd}; try .help")
            handler(args)
        except (ShellError, Error, OSError, ValueError) as exc:
            self._error(str(exc))
        return True

    def _want(self, args: list[str], low: int, high: int, usage: str) -> None:
        if not low <= len(args) <= high:
            raise ShellError(f"bad command format, should be: {usage}")

    def _help(self, args: list[str]) -> None:
        self._emit(HELP)

    def _cluster(self, args: list[str]) -> None:
        self._want(args, 0, 0, ".cluster")
        nodes = self.client.cluster()
        if self.format == "json":
            self._emit_json([{"ID": n.id, "Address": n.address, "Role": n.role} for n in nodes])
        else:
            self._emit("\n".join(f"{n.id:x}|{n.address}|{_ROLE.get(n.role, str(n.role))}" for n in nodes))

    def _leader(self, args: list[str]) -> None:
        self._want(args, 0, 0, ".leader")
        leader = self.client.leader()
        if self.format == "json":
            self._emit_json(None if leader is None else {"ID": leader.id, "Address": leader.address})
        elif leader is not None:
            self._emit(leader.address)

    def _node_by_address(self, address: str) -> NodeInfo:
        for node in self.client.cluster():
            if node.address == address:
                return node
        raise ShellError(f"no node has address {address!r}")

    def _remove(self, args: list[str]) -> None:
        self._want(args, 1, 1, ".remove <address>")
        node = self._node_by_address(args[0])
        self.client.remove(node.id)

    def _describe(self, args: list[str]) -> None:
        self._want(args, 1, 1, ".describe <address>")
        meta = self.client.describe(args[0])
        if self.format == "json":
            self._emit_json({"FailureDomain": meta.failure_domain, "Weight": meta.weight})
        else:
            self._emit(f"{args[0]}|{meta.failure_domain}|{meta.weight}")

    def _weight(self, args: list[str]) -> None:
        self._want(args, 2, 2, ".weight <address> <n>")
        try:
            weight = int(args[1])
            if weight < 0:
                raise ValueError
        except ValueError:
            raise ShellError(f"bad weight {args[1]!r}") from None
        self.client.weight(args[0], weight)

    def _dump(self, args: list[str]) -> None:
        self._want(args, 1, 2, ".dump <address> [<database>]")
        database = args[1] if len(args) == 2 else self.database
        files = self.client.dump(database, args[0])
        written = []
        for name, data in files.items():
            path = os.path.join(os.getcwd(), os.path.basename(name))
            with open(path, "wb") as f:
                f.write(data)
            written.append((path, len(data)))
        if self.format == "json":
            self._emit_json([{"Path": p, "Size": n} for p, n in written])
        else:
            self._emit("OK")

    def sql(self, sql: str) -> None:
        """Run one statement; rows are printed if it returned any columns."""
        try:
            cur = self.conn.execute(sql)
            if cur.description is None:
                return
            columns = [d[0] for d in cur.description]
            rows = cur.fetchall()
        except Error as exc:
            self._error(str(exc))
            return
        if self.format == "json":
            self._emit_json([{c: _json_value(v) for c, v in zip(columns, row, strict=False)} for row in rows])
        else:
            self._emit("\n".join("|".join(_text(v) for v in row) for row in rows))


def _store_from(servers: Sequence[str]) -> NodeStore:
    addresses: list[str] = []
    for item in servers:
        if item.startswith("file://"):
            if len(servers) != 1:
                raise SystemExit("cowsql: file://<store> cannot be combined with addresses")
            path = item[len("file://"):]
            if not os.path.isfile(path):
                raise SystemExit(f"cowsql: no node store at {path}")
            try:
                return SqliteNodeStore(path, create=False)
            except NotANodeStoreError as exc:
                raise SystemExit(f"cowsql: {exc}") from None
        addresses.extend(a.strip() for a in item.split(",") if a.strip())
    if not addresses:
        raise SystemExit("cowsql: -s/--servers needs at least one address")
    return MemoryNodeStore(addresses)


def _repl(shell: Shell) -> None:
    try:
        import readline
    except ImportError:  # pragma: no cover - no readline on this platform
        readline = None  # type: ignore[assignment]
    history = os.environ.get("COWSQL_HISTORY", os.path.expanduser("~/.cowsql_history"))
    if readline is not None:
        try:
            readline.read_history_file(history)
        except OSError:
            pass
        readline.set_history_length(1000)
    pending = ""
    try:
        while True:
            try:
                line = input("cowsql> " if not pending else "   ...> ")
            except EOFError:
                shell.out.write("\n")
                break
            except KeyboardInterrupt:
                shell.out.write("\n")
                pending = ""
                continue
            if not pending and line.strip().startswith("."):
                if not shell.dot(line.strip()):
                    break
                continue
            pending += line + "\n"
            statements, pending = split_statements(pending)
            if not pending.strip():
                pending = ""
            elif _finished(pending):
                # As dqlite's shell: a line without ';' runs as it is, unless it is
                # unfinished (open parenthesis, quote, trigger body): then read on.
                statements, pending = [*statements, pending.strip()], ""
            for sql in statements:
                shell.sql(sql)
    finally:
        if readline is not None:
            try:
                readline.write_history_file(history)
            except OSError:
                pass


def shell_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cowsql", description="SQL shell for a cowsqlpy/dqlite cluster")
    parser.add_argument("-s", "--servers", action="append", required=True,
                        help="comma-separated node addresses, or file://<node store>")
    parser.add_argument("-f", "--format", choices=("tabular", "json"), default="tabular")
    parser.add_argument("-c", "--command", help="run this SQL or dot-command and exit")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to find a leader (default 10)")
    parser.add_argument("--cert", help="cluster TLS certificate (mutual TLS, as go-cowsql's --cert)")
    parser.add_argument("--key", help="private key of --cert")
    parser.add_argument("--ca", help="CA bundle to trust (default: --cert itself)")
    parser.add_argument("database")
    args = parser.parse_args(argv)
    if (args.cert is None) != (args.key is None) or (args.ca and not args.cert):
        parser.error("--cert and --key go together (and --ca needs them)")
    tls = TLSConfig(args.cert, args.key, args.ca) if args.cert else None
    store = _store_from(args.servers)
    shell = Shell(store, args.database, fmt=args.format, policy=RetryPolicy(deadline=args.timeout), tls=tls)
    try:
        if args.command is not None:
            shell.run_text(args.command)
        elif sys.stdin.isatty():
            _repl(shell)
        else:
            shell.run_text(sys.stdin.read())
    finally:
        shell.close()
    return 1 if shell.errors and (args.command is not None or not sys.stdin.isatty()) else 0


# -- Node runner ------------------------------------------------------------------------


def node_main(argv: Sequence[str] | None = None) -> int:
    """Run an App in this process until SIGTERM/SIGINT, then hand over and exit 0."""
    parser = argparse.ArgumentParser(prog="cowsqlpy-node", description="Run a cowsqlpy App node")
    parser.add_argument("--address", help="host:port of this node (required on first start; :0 = free port)")
    parser.add_argument("--dir", required=True, help="data directory")
    parser.add_argument("--join", default="", help="comma-separated addresses of existing nodes")
    parser.add_argument("--voters", type=int, default=3)
    parser.add_argument("--standbys", type=int, default=3)
    parser.add_argument("--roles-adjustment-frequency", type=float, default=30.0, metavar="SECONDS")
    parser.add_argument("--network-latency", type=float, default=None, metavar="SECONDS")
    parser.add_argument("--failure-domain", type=int, default=None)
    parser.add_argument("--handover-timeout", type=float, default=60.0, metavar="SECONDS")
    parser.add_argument("--cert", help="cluster certificate (PEM): mutual TLS for clients and Raft "
                                       "(go-cowsql's scheme; python -m cowsqlpy tls make-cert)")
    parser.add_argument("--key", help="private key of --cert (PEM)")
    parser.add_argument("--ca", help="CA that signs peers' certificates (default: --cert itself)")
    parser.add_argument("--guard", action="store_true",
                        help="put the guarded front before the engine without TLS too (docs/security.md)")
    parser.add_argument("--rights", metavar="CN=LEVEL,...",
                        help="access per client certificate CN, LEVEL one of none, read, write, admin, peer; "
                             "'*' for every other certificate (e.g. node=peer,app=write,*=read; needs --cert)")
    parser.add_argument("--snapshot-params", metavar="THRESHOLD,TRAILING",
                        help="Raft entries between snapshots and entries kept after one (e.g. 64,128)")
    parser.add_argument("--dial-via", metavar="HOST:PORT",
                        help="dial every Raft peer through this fault relay (cowsqlpy.testing.FaultProxy(relay=True); "
                             "for tests: Cluster(processes=True, fault_proxies=True))")
    parser.add_argument("--log-level", default=os.environ.get("COWSQLPY_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr,
        format="%(asctime)s.%(msecs)03d %(process)d %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S",
    )
    log = logging.getLogger("cowsqlpy.node-runner")

    stop = StopSignals()

    from .app import App
    from .errors import NodeIdentityError
    from .tls import TLSConfig

    if bool(args.cert) != bool(args.key) or (args.ca and not args.cert):
        print("cowsqlpy-node: --cert and --key go together (and --ca needs them)", file=sys.stderr, flush=True)
        return 2
    tls = TLSConfig(args.cert, args.key, args.ca) if args.cert else None
    rights = None
    if args.rights is not None:
        from .rights import Rights

        try:
            rights = Rights.parse(args.rights)
        except ValueError as exc:
            print(f"cowsqlpy-node: --rights: {exc}", file=sys.stderr, flush=True)
            return 2
        if tls is None:
            print("cowsqlpy-node: --rights needs --cert and --key (rights come from client certificates)",
                  file=sys.stderr, flush=True)
            return 2
    snapshot_params = None
    if args.snapshot_params:
        try:
            threshold, trailing = (int(x) for x in args.snapshot_params.split(","))
        except ValueError:
            print("cowsqlpy-node: --snapshot-params takes THRESHOLD,TRAILING (two integers)", file=sys.stderr, flush=True)
            return 2
        snapshot_params = (threshold, trailing)
    dial = None
    if args.dial_via:
        if tls is not None:  # the relay forwards plain bytes: peers' TLS fronts would refuse them
            print("cowsqlpy-node: --dial-via cannot be combined with --cert", file=sys.stderr, flush=True)
            return 2
        from .testing.faults import dial_via

        try:
            dial = dial_via(args.dial_via)
        except ValueError as exc:
            print(f"cowsqlpy-node: --dial-via: {exc}", file=sys.stderr, flush=True)
            return 2

    try:
        app = App(
            args.dir, args.address,
            cluster=[a for a in args.join.split(",") if a.strip()] or None,
            voters=args.voters, standbys=args.standbys,
            roles_adjustment_frequency=args.roles_adjustment_frequency,
            network_latency=args.network_latency, failure_domain=args.failure_domain,
            tls=tls, guard=args.guard, rights=rights, dial=dial, snapshot_params=snapshot_params,
        )
    except (Error, ValueError, OSError) as exc:
        print(f"cowsqlpy-node: {exc}", file=sys.stderr, flush=True)
        return 2
    try:
        if stop.wait_ready(app):
            print(f"{READY_PREFIX} id={app.id:#x} address={app.address} dir={os.path.abspath(args.dir)}",
                  flush=True)
            stop.stopped.wait()
    except NodeIdentityError as exc:
        print(f"cowsqlpy-node: {exc}", file=sys.stderr, flush=True)
        app.close(handover=False)
        return 2
    log.info("signal %s: handing over and stopping", stop.received[0] if stop.received else "?")
    # A second signal during the hand-over skips the rest of it.
    code = stop.close(lambda: app.close(timeout=args.handover_timeout), app.node.close, log)
    if code == 0:
        log.info("stopped")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("node", "shell", "tls"):
        print("usage: python -m cowsqlpy {node|shell|tls} [options]  (see --help of each)", file=sys.stderr)
        return 2
    if argv[0] == "node":
        return node_main(argv[1:])
    if argv[0] == "tls":  # make-ca, make-cert: as python -m cowsqlpy.tls, without runpy's warning
        from .tls import main as tls_main

        return tls_main(argv[1:])
    return shell_main(argv[1:])


__all__ = ["Shell", "shell_main", "node_main", "main", "split_statements", "READY_PREFIX"]
