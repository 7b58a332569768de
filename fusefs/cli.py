"""`python -m fusefs` / `cowsqlfs`: mkfs, mount, umount, fsck."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import Any

import cowsqlpy
from cowsqlpy.tls import TLSConfig

from .fsck import fsck
from .schema import (
    DEFAULT_CAPACITY,
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_INODES,
    NotAFilesystemError,
    mkfs,
)
from .store import Store, io_policy

log = logging.getLogger("fusefs.cli")
UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def size(text: str) -> int:
    """'64K', '10M', '2G', '4096' -> bytes."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1:] if t[-1:] in UNITS and not t[-1:].isdigit() else ""
    try:
        value = float(t[: len(t) - len(unit)])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return int(value * UNITS[unit])


def _addresses(text: str) -> list[str]:
    return [a.strip() for a in text.split(",") if a.strip()]


def _snapshot_params(text: str) -> tuple[int, int]:
    """'THRESHOLD,TRAILING' -> two positive ints, the threshold not above the trailing."""
    try:
        threshold, trailing = (int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--snapshot-params takes THRESHOLD,TRAILING (two integers), got {text!r}"
        ) from None
    if not 0 < threshold <= trailing:
        raise argparse.ArgumentTypeError(
            f"--snapshot-params needs 0 < THRESHOLD <= TRAILING, got {text!r}"
        )
    return threshold, trailing


def _cluster_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument(
        "--cluster",
        type=_addresses,
        required=required,
        default=[],
        help="cluster node addresses, comma-separated",
    )
    p.add_argument(
        "--database", default="fs", help="database that holds the filesystem (default fs)"
    )
    p.add_argument(
        "--io-timeout",
        type=float,
        default=30.0,
        help="seconds an operation waits for a quorum before EIO (default 30)",
    )
    p.add_argument(
        "--cert", help="cluster TLS certificate (PEM; mutual TLS, as the cowsql shell's)"
    )
    p.add_argument("--key", help="private key of --cert (PEM)")
    p.add_argument("--ca", help="CA that signs the nodes' certificates (default: --cert itself)")


def _tls(args: argparse.Namespace) -> TLSConfig | None:
    """The TLS options as a config; ValueError (one line) when they do not go together."""
    if (args.cert is None) != (args.key is None) or (args.ca and not args.cert):
        raise ValueError("--cert and --key go together (and --ca needs them)")
    return TLSConfig(args.cert, args.key, args.ca) if args.cert else None


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="cowsqlfs", description="A POSIX filesystem served from a cowsqlpy cluster."
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=0)
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "mkfs", parents=[common], help="create the filesystem (or check the one there)"
    )
    _cluster_args(p)
    p.add_argument(
        "--capacity", type=size, default=DEFAULT_CAPACITY, help="bytes of data (default 1G)"
    )
    p.add_argument(
        "--chunk-size", type=size, default=DEFAULT_CHUNK_SIZE, help="bytes per chunk (default 64K)"
    )
    p.add_argument("--max-inodes", type=int, default=DEFAULT_MAX_INODES)
    p.add_argument(
        "--upgrade",
        action="store_true",
        help="bring an older format to this one in place (while nothing has it mounted)",
    )

    p = sub.add_parser("mount", parents=[common], help="mount the filesystem")
    _cluster_args(p, required=False)
    p.add_argument("mountpoint")
    p.add_argument("--view", choices=("fs", "kv"), default="fs")
    p.add_argument("--kv-url", help="kvstore URL for --view kv (default cowsql://CLUSTER/kv)")
    p.add_argument("-f", "--foreground", action="store_true", help="stay in the foreground")
    p.add_argument("--embed-node", action="store_true", help="run a cluster node in this process")
    p.add_argument("--address", help="the embedded node's address")
    p.add_argument("--dir", help="the embedded node's data directory")
    p.add_argument(
        "--join",
        type=_addresses,
        default=[],
        help="addresses of the cluster the embedded node joins",
    )
    p.add_argument(
        "--snapshot-params",
        type=_snapshot_params,
        metavar="THRESHOLD,TRAILING",
        help="the embedded node's Raft entries between snapshots of the whole database and"
        " entries kept after one (default: the engine's 1024,8192; docs/fusefs.md, Limits)",
    )
    p.add_argument(
        "--attr-timeout",
        type=float,
        default=1.0,
        help="seconds the kernel caches attributes (default 1)",
    )
    p.add_argument(
        "--entry-timeout",
        type=float,
        default=1.0,
        help="seconds the kernel caches names (default 1)",
    )
    p.add_argument(
        "--read-ahead",
        type=int,
        default=1024,
        metavar="KIB",
        help="the kernel's read-ahead for the mount, KiB (default 1024; 0: the kernel's 128)",
    )
    p.add_argument("--allow-other", action="store_true")
    p.add_argument("--debug", action="store_true", help="libfuse debug output")
    p.add_argument("--log-file", help="log here (background mode: default /tmp/cowsqlfs-PID.log)")

    p = sub.add_parser(
        "umount", parents=[common], help="unmount (fusermount3 -u; --lazy: umount -l)"
    )
    p.add_argument("mountpoint")
    p.add_argument("--lazy", action="store_true")

    p = sub.add_parser("fsck", parents=[common], help="check the filesystem's invariants")
    _cluster_args(p)
    return ap


@contextlib.contextmanager
def _connection(args: argparse.Namespace) -> Iterator[Any]:
    conn = cowsqlpy.connect(
        args.cluster, database=args.database, policy=io_policy(args.io_timeout), tls=_tls(args)
    )
    try:
        yield conn
    finally:
        conn.close()


def cmd_mkfs(args: argparse.Namespace) -> int:
    with _connection(args) as conn:
        sb, created = mkfs(
            conn,
            capacity=args.capacity,
            chunk_size=args.chunk_size,
            max_inodes=args.max_inodes,
            upgrade=args.upgrade,
        )
    print(
        f"{'created' if created else 'found'} filesystem {sb.uuid} in database {args.database!r}: "
        f"format {sb.format}, chunk {sb.chunk_size} B, capacity {sb.capacity} B"
    )
    return 0


def cmd_fsck(args: argparse.Namespace) -> int:
    with _connection(args) as conn:
        problems = fsck(conn)
    for p in problems:
        print(f"fsck: {p}")
    print("fsck: clean" if not problems else f"fsck: {len(problems)} problem(s)")
    return 1 if problems else 0


def cmd_umount(args: argparse.Namespace) -> int:
    cmd = ["umount", "-l", args.mountpoint] if args.lazy else ["fusermount3", "-u", args.mountpoint]
    return subprocess.run(cmd).returncode


def _background(argv: Sequence[str], args: argparse.Namespace) -> int:
    """Start the mount as a child in its own session and wait until it is mounted."""
    log_file = args.log_file or f"/tmp/cowsqlfs-{os.getpid()}.log"
    with open(log_file, "ab") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "fusefs", *argv, "--foreground", "--log-file", log_file],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + args.io_timeout + 30
    while time.monotonic() < deadline:
        if os.path.ismount(args.mountpoint):
            print(f"mounted {args.mountpoint} (pid {child.pid}, log {log_file})")
            return 0
        if child.poll() is not None:
            print(f"mount failed (exit {child.returncode}); see {log_file}", file=sys.stderr)
            return 1
        time.sleep(0.05)
    print(f"mount not up after waiting; see {log_file}", file=sys.stderr)
    return 1


def _kv_url(servers: list[str], tls: TLSConfig | None) -> str:
    url = f"cowsql://{','.join(servers)}/kv"
    if tls is None:
        return url
    query = {"cert": str(tls.cert), "key": str(tls.key)}
    if tls.ca:
        query["ca"] = str(tls.ca)
    return f"{url}?{urllib.parse.urlencode(query)}"


def cmd_mount(args: argparse.Namespace) -> int:
    from .binding import MountOptions, serve

    if args.read_ahead < 0:
        print("--read-ahead must be 0 (the kernel's default) or more KiB", file=sys.stderr)
        return 2
    app: Any = None
    tls = _tls(args)
    servers = list(args.cluster)
    if args.embed_node:
        if not args.address or not args.dir:
            print("--embed-node needs --address and --dir", file=sys.stderr)
            return 2
        from cowsqlpy.app import App

        app = App(
            args.dir,
            args.address,
            cluster=args.join or None,
            tls=tls,
            snapshot_params=args.snapshot_params,
        )
        app.ready(timeout=max(60.0, args.io_timeout))
        servers = [app.address, *args.join, *servers]
    if not servers and not (args.view == "kv" and args.kv_url):
        print("give --cluster (or --embed-node, or --kv-url with --view kv)", file=sys.stderr)
        return 2
    options = MountOptions(
        attr_timeout=args.attr_timeout,
        entry_timeout=args.entry_timeout,
        allow_other=args.allow_other,
        debug=args.debug,
        read_ahead_kb=args.read_ahead,
        fsname=f"cowsqlfs:{args.database}" if args.view == "fs" else "cowsqlfs:kv",
    )
    store = None
    try:
        fs: Any
        if args.view == "kv":
            from .kvview import KVFileSystem

            fs = KVFileSystem(args.kv_url or _kv_url(servers, tls))
        else:
            from .ops import FileSystem

            store = Store(servers, args.database, io_timeout=args.io_timeout, tls=tls)
            fs = FileSystem(store, os.path.abspath(args.mountpoint), attr_timeout=args.attr_timeout)
        log.info("serving %s on %s", args.view, args.mountpoint)
        serve(fs, args.mountpoint, options)
    except NotAFilesystemError as exc:
        print(f"cowsqlfs: {exc}", file=sys.stderr)
        return 1
    finally:
        if store is not None:
            store.close()
        if app is not None:
            app.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    level = logging.WARNING - 10 * args.verbose
    log_file = getattr(args, "log_file", None)
    logging.basicConfig(
        level=level, filename=log_file, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    try:
        if args.command == "mkfs":
            return cmd_mkfs(args)
        if args.command == "fsck":
            return cmd_fsck(args)
        if args.command == "umount":
            return cmd_umount(args)
        if not args.foreground:
            return _background(argv, args)
        return cmd_mount(args)
    except (NotAFilesystemError, ValueError) as exc:
        print(f"cowsqlfs: {exc}", file=sys.stderr)
        return 1
    except cowsqlpy.Error as exc:
        print(f"cowsqlfs: cluster error: {exc}", file=sys.stderr)
        return 1
