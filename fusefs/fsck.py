"""fsck: the filesystem's invariants, checked in one consistent read of the database."""

from __future__ import annotations

import stat
from typing import Any

from .schema import PROCEDURE_NAMES, ROOT_INO, NotAFilesystemError, read_superblock

IFMT = 0o170000

# (what is wrong, the query that lists the offenders)
CHECKS: tuple[tuple[str, str], ...] = (
    (
        "entry in a parent that is not a live directory",
        "SELECT e.parent, e.name FROM fs_edge e LEFT JOIN fs_node p ON p.ino = e.parent"
        f" WHERE p.ino IS NULL OR (p.mode & {IFMT}) != {stat.S_IFDIR}",
    ),
    (
        "entry pointing at no inode",
        "SELECT e.parent, e.name, e.ino FROM fs_edge e LEFT JOIN fs_node n ON n.ino = e.ino WHERE n.ino IS NULL",
    ),
    (
        "file whose nlink is not its count of entries",
        "SELECT n.ino, n.nlink, (SELECT count(*) FROM fs_edge e WHERE e.ino = n.ino) AS links FROM fs_node n"
        f" WHERE (n.mode & {IFMT}) != {stat.S_IFDIR} AND n.nlink != links",
    ),
    (
        "directory whose nlink is not 2 + its subdirectories",
        "SELECT n.ino, n.nlink FROM fs_node n"
        f" WHERE (n.mode & {IFMT}) = {stat.S_IFDIR} AND n.nlink != 2 + (SELECT count(*) FROM fs_edge e"
        f" JOIN fs_node c ON c.ino = e.ino WHERE e.parent = n.ino AND (c.mode & {IFMT}) = {stat.S_IFDIR})",
    ),
    (
        "directory without exactly one parent entry",
        "SELECT n.ino, (SELECT count(*) FROM fs_edge e WHERE e.ino = n.ino) AS links FROM fs_node n"
        f" WHERE (n.mode & {IFMT}) = {stat.S_IFDIR} AND n.ino != {ROOT_INO} AND links != 1",
    ),
    ("the root has a parent entry", f"SELECT parent, name FROM fs_edge WHERE ino = {ROOT_INO}"),
    (
        "chunk without an inode",
        "SELECT c.ino, c.idx FROM fs_chunk c LEFT JOIN fs_node n ON n.ino = c.ino WHERE n.ino IS NULL",
    ),
    (
        "chunk beyond its file's size, or longer than a chunk",
        "SELECT c.ino, c.idx, length(c.data), n.size FROM fs_chunk c JOIN fs_node n ON n.ino = c.ino"
        " WHERE c.idx * :cs + length(c.data) > n.size OR length(c.data) > :cs OR length(c.data) = 0",
    ),
    (
        "chunk of an inode that is not a regular file",
        "SELECT c.ino, c.idx FROM fs_chunk c JOIN fs_node n ON n.ino = c.ino"
        f" WHERE (n.mode & {IFMT}) != {stat.S_IFREG}",
    ),
    (
        "stored bytes of an inode differ from its chunks",
        "SELECT n.ino, n.stored, coalesce((SELECT sum(length(data)) FROM fs_chunk c WHERE c.ino = n.ino), 0) AS s"
        " FROM fs_node n WHERE n.stored != s",
    ),
    (
        "symlink inode without a target, or a target of no symlink",
        f"SELECT n.ino FROM fs_node n LEFT JOIN fs_symlink s ON s.ino = n.ino WHERE (n.mode & {IFMT}) = {stat.S_IFLNK}"
        " AND s.ino IS NULL UNION ALL SELECT s.ino FROM fs_symlink s LEFT JOIN fs_node n ON n.ino = s.ino"
        f" WHERE n.ino IS NULL OR (n.mode & {IFMT}) != {stat.S_IFLNK}",
    ),
    (
        "xattr of no inode",
        "SELECT x.ino, x.name FROM fs_xattr x LEFT JOIN fs_node n ON n.ino = x.ino WHERE n.ino IS NULL",
    ),
    (
        "unlinked inode that no live mount keeps open",
        "SELECT n.ino FROM fs_node n WHERE n.nlink = 0 AND NOT EXISTS (SELECT 1 FROM fs_sustained s"
        " JOIN fs_session m ON m.sid = s.sid WHERE s.ino = n.ino)",
    ),
    (
        "kept-open record of a gone inode or a linked one",
        "SELECT s.sid, s.ino FROM fs_sustained s LEFT JOIN fs_node n ON n.ino = s.ino WHERE n.ino IS NULL OR n.nlink != 0",
    ),
    (
        "superblock used_bytes differs from chunks + symlinks + xattrs",
        "SELECT used_bytes, (SELECT coalesce(sum(stored), 0) FROM fs_node)"
        " + (SELECT coalesce(sum(length(target)), 0) FROM fs_symlink)"
        " + (SELECT coalesce(sum(length(name) + length(value)), 0) FROM fs_xattr) AS u"
        " FROM fs_superblock WHERE used_bytes != u",
    ),
    (
        "superblock used_inodes differs from the inode count",
        "SELECT used_inodes, (SELECT count(*) FROM fs_node) AS n FROM fs_superblock WHERE used_inodes != n",
    ),
    (
        "superblock over capacity",
        "SELECT used_bytes, capacity FROM fs_superblock WHERE used_bytes > capacity",
    ),
    (
        "procedure missing (format 3: views fs_create_op and fs_unlink_op with their triggers)",
        "SELECT group_concat(p.name) FROM ({}) p WHERE p.name NOT IN (SELECT name FROM sqlite_master)"
        " HAVING count(*)".format(
            " UNION ALL ".join(f"SELECT '{n}' AS name" for n in PROCEDURE_NAMES)
        ),
    ),
)


def fsck(conn: Any, limit: int = 20) -> list[str]:
    """Check every invariant; returns the problems found (empty: consistent).

    :raises NotAFilesystemError: no filesystem in the database.
    """
    sb = read_superblock(conn)
    if sb is None:
        raise NotAFilesystemError("the database holds no filesystem")
    problems: list[str] = []
    conn.execute("BEGIN IMMEDIATE")  # one snapshot for every check
    try:
        if conn.execute(f"SELECT mode FROM fs_node WHERE ino = {ROOT_INO}").fetchone() is None:
            problems.append("the root inode is missing")
        for what, sql in CHECKS:
            params = {"cs": sb.chunk_size} if ":cs" in sql else ()
            rows = conn.execute(sql, params).fetchmany(limit)
            if rows:
                problems.append(f"{what}: {rows}")
    finally:
        conn.rollback()
    return problems
