"""The filesystem's tables (JuiceFS's SQL layout: node, edge, chunk, symlink, xattr) and
the superblock, created by mkfs and checked at every mount."""

from __future__ import annotations

import os
import stat
import time
import uuid
from dataclasses import dataclass
from typing import Any

S_IFMT, S_IFDIR = 0o170000, stat.S_IFDIR

MAGIC = "cowsqlfs"
FORMAT_VERSION = 3  # 2: format 1 and the create procedure (fs_create_op); 3: and fs_unlink_op
ROOT_INO = 1
DEFAULT_CHUNK_SIZE = 64 * 1024
DEFAULT_CAPACITY = 1 << 30
DEFAULT_MAX_INODES = 1 << 20
MAX_FILE_SIZE = 1 << 42  # 4 TiB of logical size: chunks are sparse
NAME_MAX = 255
PATH_MAX = 4096
LINK_MAX = 65000

# Every table and index, in creation order. Names are BLOBs: POSIX names are bytes.
TABLES = (
    """CREATE TABLE IF NOT EXISTS fs_superblock (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        magic TEXT NOT NULL,
        format INTEGER NOT NULL,
        uuid TEXT NOT NULL,
        chunk_size INTEGER NOT NULL,
        capacity INTEGER NOT NULL,
        max_inodes INTEGER NOT NULL,
        used_bytes INTEGER NOT NULL,
        used_inodes INTEGER NOT NULL,
        created_ns INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS fs_node (
        ino INTEGER PRIMARY KEY AUTOINCREMENT,
        mode INTEGER NOT NULL,
        uid INTEGER NOT NULL,
        gid INTEGER NOT NULL,
        size INTEGER NOT NULL DEFAULT 0,
        stored INTEGER NOT NULL DEFAULT 0,
        nlink INTEGER NOT NULL,
        rdev INTEGER NOT NULL DEFAULT 0,
        atime INTEGER NOT NULL,
        mtime INTEGER NOT NULL,
        ctime INTEGER NOT NULL,
        generation INTEGER NOT NULL DEFAULT 1)""",
    """CREATE TABLE IF NOT EXISTS fs_edge (
        parent INTEGER NOT NULL,
        name BLOB NOT NULL,
        ino INTEGER NOT NULL,
        PRIMARY KEY (parent, name))""",
    "CREATE INDEX IF NOT EXISTS fs_edge_ino ON fs_edge (ino)",
    """CREATE TABLE IF NOT EXISTS fs_chunk (
        ino INTEGER NOT NULL,
        idx INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (ino, idx))""",
    "CREATE TABLE IF NOT EXISTS fs_symlink (ino INTEGER PRIMARY KEY, target BLOB NOT NULL)",
    """CREATE TABLE IF NOT EXISTS fs_xattr (
        ino INTEGER NOT NULL,
        name BLOB NOT NULL,
        value BLOB NOT NULL,
        PRIMARY KEY (ino, name))""",
    # One row per mount; an unlinked file still open on a mount is kept by a row here.
    """CREATE TABLE IF NOT EXISTS fs_session (
        sid INTEGER PRIMARY KEY AUTOINCREMENT,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        mountpoint TEXT NOT NULL,
        started_ns INTEGER NOT NULL,
        heartbeat_ns INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS fs_sustained (
        sid INTEGER NOT NULL,
        ino INTEGER NOT NULL,
        PRIMARY KEY (sid, ino))""",
)

NODE_COLUMNS = "ino, mode, uid, gid, size, stored, nlink, rdev, atime, mtime, ctime, generation"

# A create as one statement with parameters (constant text: the driver checks it once, and
# one INSERT of several rows is several creates in one request, one commit, all or none).
# The parent must still be the directory this mount read (mode and group: setgid); a taken
# name fails the entry's primary key (format 2).
CREATE_OP_COLUMNS = (
    "parent",
    "parent_mode",
    "parent_gid",
    "name",
    "ino",
    "mode",
    "uid",
    "gid",
    "rdev",
    "now",
)
# An unlink of a name that is not a directory, the same way; the entry must still be the
# inode with the link count this mount read (format 3).
UNLINK_OP_COLUMNS = ("parent", "name", "ino", "nlink", "sustain", "now")
PROCEDURES = (
    "CREATE VIEW IF NOT EXISTS fs_create_op ({}) AS SELECT {} WHERE 0".format(
        ", ".join(CREATE_OP_COLUMNS), ", ".join(["NULL"] * len(CREATE_OP_COLUMNS))
    ),
    f"""CREATE TRIGGER IF NOT EXISTS fs_create_op_run INSTEAD OF INSERT ON fs_create_op BEGIN
        SELECT RAISE(ABORT, 'fs_create_op: parent changed') WHERE NOT EXISTS (SELECT 1 FROM fs_node
            WHERE ino = NEW.parent AND mode = NEW.parent_mode AND gid = NEW.parent_gid);
        SELECT RAISE(ABORT, 'fs_create_op: no free inode')
            WHERE (SELECT used_inodes >= max_inodes FROM fs_superblock WHERE id = 1);
        INSERT INTO fs_edge (parent, name, ino) VALUES (NEW.parent, NEW.name, NEW.ino);
        INSERT INTO fs_node (ino, mode, uid, gid, nlink, rdev, atime, mtime, ctime) VALUES (NEW.ino,
            NEW.mode, NEW.uid, NEW.gid, 1 + ((NEW.mode & {S_IFMT}) = {S_IFDIR}), NEW.rdev, NEW.now, NEW.now, NEW.now);
        UPDATE fs_node SET nlink = nlink + ((NEW.mode & {S_IFMT}) = {S_IFDIR}), mtime = NEW.now,
            ctime = NEW.now WHERE ino = NEW.parent;
        UPDATE fs_superblock SET used_inodes = used_inodes + 1 WHERE id = 1;
    END""",
    "CREATE VIEW IF NOT EXISTS fs_unlink_op ({}) AS SELECT {} WHERE 0".format(
        ", ".join(UNLINK_OP_COLUMNS), ", ".join(["NULL"] * len(UNLINK_OP_COLUMNS))
    ),
    # The last name of an inode: freed (space counted first), or kept with nlink 0 for the
    # session that still has it open (sustain: its sid; NULL frees it).
    f"""CREATE TRIGGER IF NOT EXISTS fs_unlink_op_run INSTEAD OF INSERT ON fs_unlink_op BEGIN
        SELECT RAISE(ABORT, 'fs_unlink_op: entry changed') WHERE NOT EXISTS (SELECT 1 FROM fs_edge e
            JOIN fs_node n ON n.ino = e.ino WHERE e.parent = NEW.parent AND e.name = NEW.name
            AND e.ino = NEW.ino AND n.nlink = NEW.nlink AND (n.mode & {S_IFMT}) != {S_IFDIR});
        DELETE FROM fs_edge WHERE parent = NEW.parent AND name = NEW.name;
        UPDATE fs_node SET mtime = NEW.now, ctime = NEW.now WHERE ino = NEW.parent;
        UPDATE fs_node SET nlink = nlink - 1, ctime = NEW.now
            WHERE ino = NEW.ino AND (NEW.nlink > 1 OR NEW.sustain IS NOT NULL);
        INSERT OR IGNORE INTO fs_sustained (sid, ino) SELECT NEW.sustain, NEW.ino
            WHERE NEW.nlink = 1 AND NEW.sustain IS NOT NULL;
        UPDATE fs_superblock SET used_inodes = used_inodes - 1, used_bytes = used_bytes
            - (SELECT stored FROM fs_node WHERE ino = NEW.ino)
            - coalesce((SELECT length(target) FROM fs_symlink WHERE ino = NEW.ino), 0)
            - coalesce((SELECT sum(length(name) + length(value)) FROM fs_xattr WHERE ino = NEW.ino), 0)
            WHERE id = 1 AND NEW.nlink = 1 AND NEW.sustain IS NULL;
        DELETE FROM fs_chunk WHERE ino = NEW.ino AND NEW.nlink = 1 AND NEW.sustain IS NULL;
        DELETE FROM fs_symlink WHERE ino = NEW.ino AND NEW.nlink = 1 AND NEW.sustain IS NULL;
        DELETE FROM fs_xattr WHERE ino = NEW.ino AND NEW.nlink = 1 AND NEW.sustain IS NULL;
        DELETE FROM fs_node WHERE ino = NEW.ino AND NEW.nlink = 1 AND NEW.sustain IS NULL;
    END""",
)
# the objects PROCEDURES makes (fsck checks they are all there)
PROCEDURE_NAMES = ("fs_create_op", "fs_create_op_run", "fs_unlink_op", "fs_unlink_op_run")


class NotAFilesystemError(Exception):
    """The database holds tables that are not (this format of) a fusefs filesystem."""


@dataclass(frozen=True)
class Superblock:
    uuid: str
    format: int
    chunk_size: int
    capacity: int
    max_inodes: int
    used_bytes: int
    used_inodes: int


UPGRADABLE = {1, 2}  # formats mkfs --upgrade brings to FORMAT_VERSION in place


def _superblock(conn: Any) -> Superblock | None:
    """The superblock of any format, None on an empty database."""
    names = {
        r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    }
    names -= {"sqlite_sequence", "cowsqlpy_commit_markers"}
    if "fs_superblock" not in names:
        if names:
            raise NotAFilesystemError(
                f"the database holds other tables ({', '.join(sorted(names))}): not a filesystem"
            )
        return None
    row = conn.execute(
        "SELECT magic, format, uuid, chunk_size, capacity, max_inodes, used_bytes, used_inodes FROM fs_superblock WHERE id = 1"
    ).fetchone()
    if row is None or row[0] != MAGIC:
        raise NotAFilesystemError("fs_superblock has no valid row: not a filesystem")
    return Superblock(row[2], row[1], row[3], row[4], row[5], row[6], row[7])


def read_superblock(conn: Any) -> Superblock | None:
    """The superblock, None on an empty database.

    :raises NotAFilesystemError: tables exist but no valid superblock, or another format.
    """
    sb = _superblock(conn)
    if sb is not None and sb.format != FORMAT_VERSION:
        how = (
            "run mkfs --upgrade (in place, while nothing has it mounted)"
            if sb.format in UPGRADABLE
            else "a newer fusefs wrote it"
        )
        raise NotAFilesystemError(
            f"filesystem format {sb.format}, this fusefs reads format {FORMAT_VERSION}: {how}"
        )
    return sb


def _upgrade(conn: Any) -> None:
    """Format 1 or 2 -> 3: the procedures missing (additive: every table stays as it is)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        sb = _superblock(conn)
        if sb is not None and sb.format in UPGRADABLE:  # another mkfs may have done it
            for ddl in PROCEDURES:
                conn.executescript(ddl)
            conn.execute("UPDATE fs_superblock SET format = ? WHERE id = 1", (FORMAT_VERSION,))
        conn.commit()
    except BaseException:
        conn.rollback()
        raise


def mkfs(
    conn: Any,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    capacity: int = DEFAULT_CAPACITY,
    max_inodes: int = DEFAULT_MAX_INODES,
    root_mode: int = 0o755,
    root_uid: int | None = None,
    root_gid: int | None = None,
    upgrade: bool = False,
) -> tuple[Superblock, bool]:
    """Create the filesystem on `conn`'s database, or check the one there (`upgrade`:
    bring an older format to this one in place, see UPGRADABLE).

    :returns: (superblock, created).
    :raises NotAFilesystemError: the database is something else, or an older format
        without `upgrade`.
    :raises ValueError: bad sizes.
    """
    if not 4096 <= chunk_size <= 1 << 20 or chunk_size & (chunk_size - 1):
        raise ValueError("chunk size must be a power of two between 4 KiB and 1 MiB")
    if capacity < chunk_size:
        raise ValueError("capacity must be at least one chunk")
    if max_inodes < 2:
        raise ValueError("max_inodes must be at least 2")
    if upgrade:
        old = _superblock(conn)
        if old is not None and old.format in UPGRADABLE:
            _upgrade(conn)
    existing = read_superblock(conn)
    if existing is not None:
        return existing, False
    for ddl in TABLES:
        conn.execute(ddl)
    for ddl in PROCEDURES:
        conn.executescript(ddl)  # a trigger's body holds semicolons
    now = time.time_ns()
    uid = os.getuid() if root_uid is None else root_uid
    gid = os.getgid() if root_gid is None else root_gid
    conn.execute("BEGIN IMMEDIATE")
    try:
        if (
            conn.execute("SELECT 1 FROM fs_superblock").fetchone() is None
        ):  # another mkfs may have raced us
            conn.execute(
                "INSERT INTO fs_superblock VALUES (1, ?, ?, ?, ?, ?, ?, 0, 1, ?)",
                (MAGIC, FORMAT_VERSION, str(uuid.uuid4()), chunk_size, capacity, max_inodes, now),
            )
            conn.execute(
                "INSERT INTO fs_node (ino, mode, uid, gid, nlink, atime, mtime, ctime) VALUES (?, ?, ?, ?, 2, ?, ?, ?)",
                (ROOT_INO, 0o040000 | (root_mode & 0o7777), uid, gid, now, now, now),
            )
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    sb = read_superblock(conn)
    assert sb is not None
    return sb, True
