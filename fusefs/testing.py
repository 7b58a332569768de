"""Helpers for tests and benchmarks that run real mounts."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence


def mount_command(
    servers: Sequence[str],
    mountpoint: str | os.PathLike[str],
    *options: str,
    database: str = "fs",
) -> list[str]:
    """The command line of a mount daemon in the foreground (`python -m fusefs mount
    --foreground`) of `database` on the cluster at `servers` (empty with
    `--embed-node ... --join`), with more mount `options` (`--log-file F`, `-v`, ...).
    Its caller starts it, waits for the mountpoint and unmounts it."""
    return [
        sys.executable,
        "-m",
        "fusefs",
        "mount",
        "--foreground",
        "--cluster",
        ",".join(servers),
        "--database",
        database,
        *options,
        os.fspath(mountpoint),
    ]
