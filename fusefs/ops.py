"""The filesystem's operations, independent of FUSE: paths in, attribute dicts, bytes or
FsError out. Every metadata operation is one engine transaction."""

from __future__ import annotations

import dataclasses
import errno
import functools
import logging
import os
import re
import socket
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from cowsqlpy.sqltext import literal

from .errors import FsError
from .schema import (
    CREATE_OP_COLUMNS,
    LINK_MAX,
    MAX_FILE_SIZE,
    NAME_MAX,
    NODE_COLUMNS,
    PATH_MAX,
    ROOT_INO,
    UNLINK_OP_COLUMNS,
    NotAFilesystemError,
    Superblock,
    read_superblock,
)
from .store import Store
from .writeback import OpenFile, Space

log = logging.getLogger("fusefs.ops")

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
XATTR_CREATE = 1
XATTR_REPLACE = 2
XATTR_NAME_MAX = 255
XATTR_SIZE_MAX = 65536
FALLOC_FL_KEEP_SIZE = 1
UTIME_NOW = "now"  # utimens: set to the current time; None: leave as is
BLOCK = 4096
NO_CAPABILITIES = b"security.capability"  # never stored: answering it costs no query
MAX_DEPTH_PER_QUERY = 120  # a path deeper than this resolves in several queries
HEARTBEAT_SECONDS = 10.0
SESSION_EXPIRY_NS = int(3 * HEARTBEAT_SECONDS * 1e9)
MAX_DIRTY_BYTES = 1 << 20  # flush a handle's buffer at 1 MiB
INO_RESERVE = 256  # inode numbers a mount reserves at a time
MAX_KNOWN = 1 << 16  # entries whose attributes a mount keeps (see FileSystem._known)
MAX_ABSENT = 1024  # missed lookups a mount keeps for the creates that follow them
RELIST_WITHIN = 60.0  # seconds after a listing in which a miss below it lists it again
# libfuse renames a file unlinked while open to such a name (hidden_name() in fuse.c)
# and keeps using that path for it: fstat, fsetxattr, /proc/self/fd reopens.
HIDDEN_NAME = re.compile(rb"\.fuse_hidden[0-9a-f]{16}")

TimeSpec = int | str | None


@dataclass
class Node:
    ino: int
    mode: int
    uid: int
    gid: int
    size: int
    stored: int
    nlink: int
    rdev: int
    atime: int
    mtime: int
    ctime: int
    generation: int

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


@dataclass
class Handle:
    ino: int
    flags: int
    file: OpenFile | None  # None for directories


def _node(row: Any) -> Node:
    return Node(*row)


def components(path: str) -> list[bytes]:
    """The path's names as bytes (FUSE gives paths decoded with surrogateescape)."""
    names = [os.fsencode(p) for p in path.split("/") if p]
    for name in names:
        if len(name) > NAME_MAX:
            raise FsError(errno.ENAMETOOLONG)
    return names


# the next inode number and whether one is free, read with the new entry's checks
NEW_INODE_SQL = (
    "(SELECT used_inodes < max_inodes FROM fs_superblock WHERE id = 1),"
    " coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'fs_node'), (SELECT max(ino) FROM fs_node))"
)
CREATE_OP_SQL = "INSERT INTO fs_create_op VALUES ({})".format(
    ", ".join("?" * len(CREATE_OP_COLUMNS))
)
UNLINK_OP_SQL = "INSERT INTO fs_unlink_op VALUES ({})".format(
    ", ".join("?" * len(UNLINK_OP_COLUMNS))
)
READDIR_COLUMNS = ", ".join(f"n.{c.strip()}" for c in NODE_COLUMNS.split(","))


@functools.lru_cache(maxsize=256)
def _resolve_sql(depth: int) -> str:
    """One query from a directory (first parameter) down `depth` names to the inode's row."""
    node_columns = ", ".join(f"n.{c.strip()}" for c in NODE_COLUMNS.split(","))
    if depth == 0:
        return f"SELECT {node_columns} FROM fs_node n WHERE n.ino = ?"
    tables = ", ".join(f"fs_edge e{i}" for i in range(depth))
    conds = ["e0.parent = ? AND e0.name = ?"]
    conds += [f"e{i}.parent = e{i - 1}.ino AND e{i}.name = ?" for i in range(1, depth)]
    return f"SELECT {node_columns} FROM {tables}, fs_node n WHERE {' AND '.join(conds)} AND n.ino = e{depth - 1}.ino"


@functools.lru_cache(maxsize=256)
def _probe_sql(depth: int) -> str:
    """`_resolve_sql(depth)` for the parent directory, and the inode of the name below
    it (first parameter), NULL columns when there is none: a lookup that misses tells
    which directory it missed in."""
    child = ", ".join(f"m.{c.strip()}" for c in NODE_COLUMNS.split(","))
    return (
        _resolve_sql(depth)
        .replace(
            " WHERE ",
            " LEFT JOIN fs_edge c ON c.parent = n.ino AND c.name = ?"
            " LEFT JOIN fs_node m ON m.ino = c.ino WHERE ",
            1,
        )
        .replace(" FROM ", f", {child} FROM ", 1)
    )


class FileSystem:
    """A mounted filesystem's logic over a `Store`.

    Files unlinked while open are hidden by libfuse under a HIDDEN_NAME (the binding
    turns libfuse's hard_remove off for it), so fstat of them works.

    :param store: connections to the filesystem's database.
    :param mountpoint: recorded in this mount's session row.
    :raises NotAFilesystemError: the database holds no filesystem (run mkfs).
    """

    hides_unlinked_open_files = True

    def __init__(self, store: Store, mountpoint: str = "", attr_timeout: float = 1.0) -> None:
        self.store = store
        sb = store.read(read_superblock)
        if sb is None:
            raise NotAFilesystemError(
                f"database {store.database!r} holds no filesystem: run mkfs first"
            )
        self.sb: Superblock = sb
        self.chunk_size = sb.chunk_size
        self.space = Space(sb.capacity, sb.used_bytes)
        self._lock = threading.Lock()
        self._open: dict[int, OpenFile] = {}
        self._handles: dict[int, Handle] = {}
        self._next_fh = 1
        self._sustained: set[int] = set()  # inodes unlinked while this mount has them open
        self._hidden: dict[bytes, int] = {}  # libfuse's hidden name -> the unlinked open inode
        self._hidden_paths: dict[int, list[str]] = {}  # their paths, for kernel invalidations
        # per thread id: FUSE's threads are foreign to Python, whose thread-locals last
        # one callback only
        self._just_made: dict[int, tuple[str, Node, int]] = {}
        # path -> (its parent directory, when) of lookups that missed: the kernel asks one
        # right before a create (on any of libfuse's threads), which then reads nothing
        self._absent: OrderedDict[str, tuple[Node, float]] = OrderedDict()
        self._inos: list[int] = []  # reserved inode numbers, the next one last
        self._ino_lock = threading.Lock()
        # path -> (node as last read or as this mount's change left it, store.commits then,
        # when): parents for creates, and getattr within attr_timeout while this mount ran
        # no other transaction since (a listing fills it: `ls -l` asks no query per entry)
        self._known: OrderedDict[str, tuple[Node, int, float]] = OrderedDict()
        self.attr_timeout = attr_timeout
        self._listed: dict[str, float] = {}  # directory -> when this mount last listed it
        self._relisting: set[str] = set()
        # Called with the paths whose cached attributes went stale although their own entry
        # was not touched (the other names of a hard-linked inode); the binding tells the kernel.
        self.on_stale: Callable[[list[str]], None] | None = None
        self._seen: dict[
            int, tuple[int, int, int]
        ] = {}  # ino -> (mtime, ctime, size) this mount's page cache holds
        self.sid = self._start_session(mountpoint)
        self.reclaimed = self.reclaim_dead_sessions()
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, name="fusefs-heartbeat", daemon=True)
        self._heartbeat.start()

    # -- sessions --

    def _start_session(self, mountpoint: str) -> int:
        now = time.time_ns()

        def tx(conn: Any) -> int:
            cur = conn.execute(
                "INSERT INTO fs_session (host, pid, mountpoint, started_ns, heartbeat_ns) VALUES (?, ?, ?, ?, ?)",
                (socket.gethostname(), os.getpid(), mountpoint, now, now),
            )
            return int(cur.lastrowid)

        return self.store.transaction(tx)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                self.store.transaction(
                    lambda c: c.execute(
                        "UPDATE fs_session SET heartbeat_ns = ? WHERE sid = ?",
                        (time.time_ns(), self.sid),
                    )
                )
            except FsError as exc:
                log.warning("session heartbeat failed: %s", exc)

    def reclaim_dead_sessions(self) -> int:
        """Free the open-unlinked files of mounts that are gone (crashed daemons).

        A session is dead when its heartbeat is older than three intervals, or when it
        ran on this host under a pid that no longer exists. :returns: inodes freed.
        """
        host, now = socket.gethostname(), time.time_ns()
        sessions = self.store.read(
            lambda c: c.execute("SELECT sid, host, pid, heartbeat_ns FROM fs_session").fetchall()
        )
        dead = [
            sid
            for sid, h, pid, beat in sessions
            if sid != self.sid
            and (now - beat > SESSION_EXPIRY_NS or (h == host and not _pid_alive(pid)))
        ]
        freed = 0
        for sid in dead:

            def tx(conn: Any, sid: int = sid) -> int:
                n = 0
                for (ino,) in conn.execute(
                    "SELECT ino FROM fs_sustained WHERE sid = ?", (sid,)
                ).fetchall():
                    row = conn.execute("SELECT nlink FROM fs_node WHERE ino = ?", (ino,)).fetchone()
                    if row is not None and row[0] == 0:
                        self._delete_inode(conn, ino)
                        n += 1
                conn.execute("DELETE FROM fs_sustained WHERE sid = ?", (sid,))
                conn.execute("DELETE FROM fs_session WHERE sid = ?", (sid,))
                return n

            freed += self.store.transaction(tx)
        if dead:
            log.info("reclaimed %d sessions of gone mounts, %d orphaned inodes", len(dead), freed)
        return freed

    def close(self) -> None:
        """Flush every open file, release this mount's session (orphans it kept are freed)."""
        self._stop.set()
        with self._lock:
            files = list(self._open.values())
        for f in files:
            try:
                f.flush()
            except FsError as exc:
                log.error("flush of inode %d at unmount failed: %s", f.ino, exc)

        def tx(conn: Any) -> None:
            for (ino,) in conn.execute(
                "SELECT ino FROM fs_sustained WHERE sid = ?", (self.sid,)
            ).fetchall():
                row = conn.execute("SELECT nlink FROM fs_node WHERE ino = ?", (ino,)).fetchone()
                if row is not None and row[0] == 0:
                    self._delete_inode(conn, ino)
            conn.execute("DELETE FROM fs_sustained WHERE sid = ?", (self.sid,))
            conn.execute("DELETE FROM fs_session WHERE sid = ?", (self.sid,))

        try:
            self.store.transaction(tx)
        except FsError as exc:
            log.error("session %d not released: %s", self.sid, exc)

    # -- lookups --

    def _lookup(self, conn: Any, names: list[bytes]) -> Node:
        """The inode `names` lead to from the root, in one query per MAX_DEPTH_PER_QUERY names."""
        ino, start = ROOT_INO, 0
        while True:
            part = names[start : start + MAX_DEPTH_PER_QUERY]
            row = conn.execute(_resolve_sql(len(part)), (ino, *part)).fetchone()
            if row is None:
                raise FsError(errno.ENOENT)
            node = _node(row)
            start += len(part)
            if start >= len(names):
                return node
            ino = node.ino

    def _get(self, conn: Any, ino: int) -> Node:
        row = conn.execute(f"SELECT {NODE_COLUMNS} FROM fs_node WHERE ino = ?", (ino,)).fetchone()
        if row is None:
            raise FsError(errno.ENOENT)
        return _node(row)

    def _resolve(self, conn: Any, path: str) -> Node:
        names = components(path)
        ino = self._hidden.get(names[-1]) if names else None
        if ino is not None:
            return self._get(conn, ino)
        return self._lookup(conn, names)

    def hidden_ino(self, path: str) -> int | None:
        """The unlinked open inode libfuse names by `path` (see HIDDEN_NAME), if any."""
        name = os.fsencode(path.rsplit("/", 1)[-1])
        return self._hidden.get(name) if HIDDEN_NAME.fullmatch(name) else None

    def _parent(self, conn: Any, path: str) -> tuple[Node, bytes]:
        names = components(path)
        if not names:
            raise FsError(errno.EINVAL, "the root has no parent")
        parent = self._lookup(conn, names[:-1])
        if not parent.is_dir:
            raise FsError(errno.ENOTDIR)
        return parent, names[-1]

    def _entry(
        self, conn: Any, path: str, extra: str = ""
    ) -> tuple[Node, bytes, int | None, tuple[Any, ...]]:
        """(parent directory, last name, the inode that name holds or None, the values of
        the `extra` SQL columns) in one query."""
        names = components(path)
        if not names:
            raise FsError(errno.EINVAL, "the root has no parent")
        *dirs, name = names
        more = f", {extra}" if extra else ""
        if len(dirs) > MAX_DEPTH_PER_QUERY:
            parent, name = self._parent(conn, path)
            values = conn.execute(f"SELECT 1{more}").fetchone()[1:]
            return parent, name, self._child(conn, parent.ino, name), tuple(values)
        sql = (
            _resolve_sql(len(dirs))
            .replace(" WHERE ", " LEFT JOIN fs_edge c ON c.parent = n.ino AND c.name = ? WHERE ", 1)
            .replace(" FROM ", f"{more}, c.ino FROM ", 1)
        )
        row = conn.execute(sql, (name, ROOT_INO, *dirs)).fetchone()
        if row is None:
            raise FsError(errno.ENOENT)
        width = len(NODE_COLUMNS.split(","))
        parent = _node(row[:width])
        if not parent.is_dir:
            raise FsError(errno.ENOTDIR)
        return parent, name, None if row[-1] is None else int(row[-1]), tuple(row[width:-1])

    def _child(self, conn: Any, parent: int, name: bytes) -> int | None:
        row = conn.execute(
            "SELECT ino FROM fs_edge WHERE parent = ? AND name = ?", (parent, name)
        ).fetchone()
        return None if row is None else int(row[0])

    def _attrs(self, node: Node) -> dict[str, int]:
        size, mtime, ctime = node.size, node.mtime, node.ctime
        with self._lock:
            f = self._open.get(node.ino)
        if f is not None:
            size = f.size
            if f.buffered_mtime is not None:
                mtime = ctime = f.buffered_mtime
        return {
            "st_ino": node.ino,
            "st_mode": node.mode,
            "st_nlink": node.nlink,
            "st_uid": node.uid,
            "st_gid": node.gid,
            "st_rdev": node.rdev,
            "st_size": size,
            "st_blocks": (node.stored + 511) // 512,
            "st_blksize": self.chunk_size,
            "st_atime": node.atime,
            "st_mtime": mtime,
            "st_ctime": ctime,
        }

    def _made(self, path: str, node: Node) -> None:
        """libfuse asks for the attributes of what it just created, on the same thread:
        they are known (and a file's are kept as a listing keeps its entries: a stat or
        an unlink within the attribute timeout needs no read)."""
        self._just_made[threading.get_ident()] = (path, node, self.store.commits)
        if not node.is_dir:
            self._saw(path, ("", node))

    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, int]:
        made = self._just_made.pop(threading.get_ident(), None)
        if made is not None:
            if made[0] == path and made[2] == self.store.commits:  # nothing changed since
                return self._attrs(made[1])
        if path is not None:
            known = self._known_node(path)
            if known is None and self._relist_parent(path):
                known = self._known_node(path)
            if known is not None:
                return self._attrs(known)
        if fh is not None and fh in self._handles:
            ino = self._handles[fh].ino
            return self._attrs(self.store.read(lambda c: self._get(c, ino)))
        if path is None:
            raise FsError(errno.EBADF)
        node = self._probe(path)
        if node.is_dir:
            self._saw(path, ("", node))
        attrs = self._attrs(node)
        if attrs["st_nlink"] and self.hidden_ino(path) is not None:
            attrs["st_nlink"] += 1  # libfuse counts the hidden name as a link and subtracts it
        return attrs

    def _probe(self, path: str) -> Node:
        """The inode at `path`, in one query; on ENOENT in a directory that exists, this
        mount remembers the directory for the create that follows (`_fast_make`)."""
        names = components(path)
        if not names or len(names) > MAX_DEPTH_PER_QUERY or names[-1] in self._hidden:
            return self.store.read(lambda c: self._resolve(c, path))
        *dirs, name = names
        row = self.store.read(
            lambda c: c.execute(_probe_sql(len(dirs)), (name, ROOT_INO, *dirs)).fetchone()
        )
        if row is None:
            raise FsError(errno.ENOENT)
        width = len(NODE_COLUMNS.split(","))
        if row[width] is not None:
            return _node(row[width:])
        parent = _node(row[:width])
        if not parent.is_dir:
            raise FsError(errno.ENOTDIR)
        with self._lock:
            self._absent[path] = (parent, time.monotonic())
            if len(self._absent) > MAX_ABSENT:
                self._absent.popitem(last=False)
        raise FsError(errno.ENOENT)

    def _known_node(self, path: str) -> Node | None:
        """`path` as this mount knows it, if that is fresh (see `_known`)."""
        with self._lock:
            seen = self._known.get(path)
        if (
            seen is not None
            and seen[1] == self.store.commits
            and time.monotonic() - seen[2] < self.attr_timeout
        ):
            return seen[0]
        return None

    def _relist_parent(self, path: str) -> bool:
        """List again the directory of `path` when it was listed lately (one query for all
        its entries: `stat` of every entry after `ls` stays fresh past the attribute
        timeout). Whether it was."""
        parent = path.rstrip("/").rsplit("/", 1)[0] or "/"
        with self._lock:
            listed = self._listed.get(parent)
            age = None if listed is None else time.monotonic() - listed
            if age is None or not self.attr_timeout <= age <= RELIST_WITHIN:
                return False  # never listed, long ago, or fresh (the entry is not in it)
            if parent in self._relisting:
                return False  # another thread does it: ask for this one entry meanwhile
            self._relisting.add(parent)
        try:
            self.readdir(parent)
        except FsError:
            return False
        finally:
            with self._lock:
                self._relisting.discard(parent)
        return True

    def readdir(self, path: str | None, fh: int | None = None) -> list[tuple[str, dict[str, int]]]:
        def q(conn: Any) -> list[tuple[str, dict[str, int]]]:
            if fh is not None and fh in self._handles:
                node = self._get(conn, self._handles[fh].ino)
            else:
                node = self._resolve(conn, path or "/")
            if not node.is_dir:
                raise FsError(errno.ENOTDIR)
            up = conn.execute(
                "SELECT parent FROM fs_edge WHERE ino = ? LIMIT 1", (node.ino,)
            ).fetchone()
            entries = [
                (".", {"st_ino": node.ino, "st_mode": node.mode}),
                ("..", {"st_ino": int(up[0]) if up else node.ino, "st_mode": stat.S_IFDIR}),
            ]
            rows = conn.execute(
                f"SELECT e.name, {READDIR_COLUMNS} FROM fs_edge e JOIN fs_node n ON n.ino = e.ino"
                " WHERE e.parent = ? ORDER BY e.name",
                (node.ino,),
            ).fetchall()
            listed = [(os.fsdecode(bytes(r[0])), _node(r[1:])) for r in rows]
            if path is not None and len(listed) <= MAX_KNOWN // 2:
                self._saw(path, *listed)
                with self._lock:
                    self._listed[path] = time.monotonic()
                    while len(self._listed) > 1024:
                        del self._listed[next(iter(self._listed))]
            # every attribute: the binding answers READDIRPLUS with them
            return entries + [(name, self._attrs(n)) for name, n in listed]

        return self.store.read(q)

    def readlink(self, path: str) -> str:
        def q(conn: Any) -> bytes:
            node = self._resolve(conn, path)
            if not stat.S_ISLNK(node.mode):
                raise FsError(errno.EINVAL)
            row = conn.execute(
                "SELECT target FROM fs_symlink WHERE ino = ?", (node.ino,)
            ).fetchone()
            if row is None:
                raise FsError(errno.EIO, "symlink without target")
            return bytes(row[0])

        return os.fsdecode(self.store.read(q))

    def statfs(self) -> dict[str, int]:
        sb = self.store.read(read_superblock)
        assert sb is not None
        self.space.settle(0, sb.used_bytes)
        used = sb.used_bytes + self.space.pending
        blocks = sb.capacity // BLOCK
        free = max(0, blocks - (used + BLOCK - 1) // BLOCK)
        ffree = max(0, sb.max_inodes - sb.used_inodes)
        return {
            "f_bsize": BLOCK,
            "f_frsize": BLOCK,
            "f_blocks": blocks,
            "f_bfree": free,
            "f_bavail": free,
            "f_files": sb.max_inodes,
            "f_ffree": ffree,
            "f_favail": ffree,
            "f_namemax": NAME_MAX,
        }

    # -- creating --

    @staticmethod
    def _inherit(parent: Node, mode: int, gid: int) -> tuple[int, int]:
        """(mode, gid) of a new inode in `parent`: a setgid directory gives its group,
        and to subdirectories its setgid bit."""
        if parent.mode & stat.S_ISGID:
            gid = parent.gid
            if stat.S_ISDIR(mode):
                mode |= stat.S_ISGID
        return mode, gid

    def _make(self, conn: Any, path: str, mode: int, uid: int, gid: int, rdev: int = 0) -> Node:
        """Create the inode and its entry: one query for every check, then one statement
        of the create procedure (batchable: every FsError comes before the first write)."""
        parent, name, taken, (room, seq) = self._entry(conn, path, NEW_INODE_SQL)
        if taken is not None:
            raise FsError(errno.EEXIST)
        if not room:
            raise FsError(errno.ENOSPC, "no free inodes")
        mode, gid = self._inherit(parent, mode, gid)
        now = time.time_ns()
        ino = int(seq) + 1  # what AUTOINCREMENT would give: inode numbers are never reused
        conn.execute(
            CREATE_OP_SQL,
            (parent.ino, parent.mode, parent.gid, name, ino, mode, uid, gid, rdev, now),
        )
        nlink = 2 if stat.S_ISDIR(mode) else 1
        return Node(ino, mode, uid, gid, 0, 0, nlink, rdev, now, now, now, 1)

    def _new_ino(self) -> int:
        """An inode number of this mount's reserved range (reserved INO_RESERVE at a time
        by moving AUTOINCREMENT's counter: no other mount or transaction gets them).
        One thread reserves while the others wait for its range."""
        with self._ino_lock:
            return self._inos.pop() if self._inos else self._reserve_inos()

    def _reserve_inos(self) -> int:

        def tx(conn: Any) -> int:
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'fs_node'").fetchone()
            if row is None:
                seq = int(conn.execute("SELECT coalesce(max(ino), 0) FROM fs_node").fetchone()[0])
                conn.execute(
                    "INSERT INTO sqlite_sequence (name, seq) VALUES ('fs_node', ?)",
                    (seq + INO_RESERVE,),
                )
            else:
                seq = int(row[0])
                conn.execute(
                    "UPDATE sqlite_sequence SET seq = ? WHERE name = 'fs_node'",
                    (seq + INO_RESERVE,),
                )
            return seq

        seq = self.store.transaction(tx)
        self._inos.extend(range(seq + INO_RESERVE, seq + 1, -1))
        return seq + 1

    def _saw(self, path: str, *nodes: tuple[str, Node]) -> None:
        """Remember directory `path` (a Node) or entries of it ((name, Node) pairs)."""
        with self._lock:
            commits, now = self.store.commits, time.monotonic()
            for name, node in nodes:
                key = path if not name else f"{path.rstrip('/')}/{name}"
                self._known[key] = (node, commits, now)
                self._known.move_to_end(key)
            while len(self._known) > MAX_KNOWN:
                self._known.popitem(last=False)

    def _edge_is(self, parent: int, name: bytes, ino: int) -> bool:
        """Whether `name` in `parent` is `ino`, read linearizably (after a lost reply)."""
        row = self.store.read(
            lambda c: c.execute(
                "SELECT 1 FROM fs_edge WHERE parent = ? AND name = ? AND ino = ?",
                (parent, name, ino),
            ).fetchone(),
            linearizable=True,
        )
        return row is not None

    def _touched_dir(self, dirpath: str, ino: int, now: int, nlink_delta: int) -> None:
        """Keep the cached directory as this mount's change (at `now`) left it."""
        with self._lock:
            seen = self._known.get(dirpath)
            if seen is not None and seen[0].ino == ino:
                old = seen[0]
                new = dataclasses.replace(
                    old,
                    nlink=old.nlink + nlink_delta,
                    mtime=max(old.mtime, now),
                    ctime=max(old.ctime, now),
                )
                self._known[dirpath] = (new, seen[1], seen[2])

    def _fast_make(self, path: str, mode: int, uid: int, gid: int, rdev: int = 0) -> Node | None:
        """Create in one request (the create procedure, batched with other threads'
        creates: `Store.inserted`) in the directory the lookup of `path` that just missed
        found, when that was within the attribute timeout (as the kernel's own cached
        entries); None: use the transaction (`_make`)."""
        with self._lock:
            absent = self._absent.pop(path, None)
        if absent is None or time.monotonic() - absent[1] > self.attr_timeout:
            return None
        parent = absent[0]
        mode, gid = self._inherit(parent, mode, gid)
        name = components(path)[-1]
        ino, now, p = self._new_ino(), time.time_ns(), parent.ino
        row = (p, parent.mode, parent.gid, name, ino, mode, uid, gid, rdev, now)

        def committed() -> bool:
            return self._edge_is(p, name, ino)

        if not self.store.inserted("fs_create_op", row, committed):
            return None
        is_dir = int(stat.S_ISDIR(mode))
        self._touched_dir(path.rstrip("/").rsplit("/", 1)[0] or "/", p, now, is_dir)
        return Node(ino, mode, uid, gid, 0, 0, 1 + is_dir, rdev, now, now, now, 1)

    def mknod(self, path: str, mode: int, rdev: int, uid: int, gid: int) -> None:
        kind = stat.S_IFMT(mode) or stat.S_IFREG
        if kind not in (stat.S_IFREG, stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK):
            raise FsError(errno.EINVAL)
        mode = kind | (mode & 0o7777)
        node = self._fast_make(path, mode, uid, gid, rdev)
        if node is None:
            node = self.store.batched(lambda c: self._make(c, path, mode, uid, gid, rdev))
        self._made(path, node)

    def mkdir(self, path: str, mode: int, uid: int, gid: int) -> None:
        mode = stat.S_IFDIR | (mode & 0o7777)
        node = self._fast_make(path, mode, uid, gid)
        if node is None:
            node = self.store.batched(lambda c: self._make(c, path, mode, uid, gid))
        self._made(path, node)

    def symlink(self, path: str, target: str, uid: int, gid: int) -> None:
        raw = os.fsencode(target)
        if len(raw) >= PATH_MAX:
            raise FsError(errno.ENAMETOOLONG)
        if not raw:
            raise FsError(errno.ENOENT)

        def tx(conn: Any) -> None:
            node = self._make(conn, path, stat.S_IFLNK | 0o777, uid, gid)
            self._charge(conn, len(raw))
            conn.execute("INSERT INTO fs_symlink (ino, target) VALUES (?, ?)", (node.ino, raw))
            conn.execute("UPDATE fs_node SET size = ? WHERE ino = ?", (len(raw), node.ino))

        self.store.transaction(tx)

    def _charge(self, conn: Any, delta: int) -> None:
        cur = conn.execute(
            "UPDATE fs_superblock SET used_bytes = used_bytes + ? WHERE id = 1 AND used_bytes + ? <= capacity",
            (delta, max(delta, 0)),
        )
        if cur.rowcount == 0:
            raise FsError(errno.ENOSPC)

    def _names_of(self, conn: Any, ino: int, limit: int = 8) -> list[str]:
        paths = []
        for parent, name in conn.execute(
            "SELECT parent, name FROM fs_edge WHERE ino = ? LIMIT ?", (ino, limit)
        ).fetchall():
            rows = conn.execute(
                "WITH RECURSIVE up(child, name, lvl) AS (SELECT ?, ?, 0 UNION ALL SELECT e.parent, e.name, up.lvl + 1"
                f" FROM fs_edge e JOIN up ON e.ino = up.child WHERE up.child != {ROOT_INO} AND up.lvl < 4096)"
                " SELECT name FROM up ORDER BY lvl DESC",
                (parent, name),
            ).fetchall()
            paths.append("/" + "/".join(os.fsdecode(bytes(r[0])) for r in rows))
        return paths

    def _stale(self, inos: list[int]) -> None:
        if not inos:
            return
        paths = self.store.read(lambda c: [p for ino in inos for p in self._names_of(c, ino)])
        with self._lock:
            paths += [p for ino in inos for p in self._hidden_paths.get(ino, ())]
            for path in paths:  # nor may this mount answer for them from what it kept
                self._known.pop(path, None)
        if paths and self.on_stale is not None:
            self.on_stale(paths)

    def link(self, path: str, existing: str) -> None:
        def tx(conn: Any) -> int:
            node = self._resolve(conn, existing)
            if node.is_dir:
                raise FsError(errno.EPERM)
            if node.nlink >= LINK_MAX:
                raise FsError(errno.EMLINK)
            parent, name, taken, _ = self._entry(conn, path)
            if taken is not None:
                raise FsError(errno.EEXIST)
            now = time.time_ns()
            conn.executescript(
                f"INSERT INTO fs_edge (parent, name, ino) VALUES ({parent.ino}, {literal(name)}, {node.ino});"
                f" UPDATE fs_node SET nlink = nlink + 1, ctime = {now} WHERE ino = {node.ino};"
                f" UPDATE fs_node SET mtime = {now}, ctime = {now} WHERE ino = {parent.ino}"
            )
            return node.ino

        self._stale([self.store.transaction(tx)])

    # -- removing --

    @staticmethod
    def _delete_inode_sql(ino: int) -> list[str]:
        """Statements that free inode `ino` and everything it holds (space counted first)."""
        return [
            "UPDATE fs_superblock SET used_inodes = used_inodes - 1, used_bytes = used_bytes"
            f" - coalesce((SELECT stored FROM fs_node WHERE ino = {ino}), 0)"
            f" - coalesce((SELECT length(target) FROM fs_symlink WHERE ino = {ino}), 0)"
            f" - coalesce((SELECT sum(length(name) + length(value)) FROM fs_xattr WHERE ino = {ino}), 0)"
            " WHERE id = 1",
            *(
                f"DELETE FROM {t} WHERE ino = {ino}"
                for t in ("fs_chunk", "fs_symlink", "fs_xattr", "fs_node")
            ),
        ]

    def _delete_inode(self, conn: Any, ino: int) -> None:
        conn.executescript("; ".join(self._delete_inode_sql(ino)))

    def _sustain(self, node: Node) -> int | None:
        """This mount's session when `node`'s last name goes while this mount has it open
        (it is then kept, nlink 0, until released), else None."""
        if node.is_dir or node.nlink > 1:
            return None
        with self._lock:
            if node.ino not in self._open:
                return None
            self._sustained.add(node.ino)
        return self.sid

    def _drop_link_sql(self, node: Node, now: int) -> list[str]:
        """One name of `node` is gone: free it, or keep it while this mount has it open."""
        if node.is_dir:
            return self._delete_inode_sql(node.ino)
        if node.nlink > 1:
            return [f"UPDATE fs_node SET nlink = nlink - 1, ctime = {now} WHERE ino = {node.ino}"]
        sid = self._sustain(node)
        if sid is None:
            return self._delete_inode_sql(node.ino)
        return [
            f"UPDATE fs_node SET nlink = 0, ctime = {now} WHERE ino = {node.ino}",
            f"INSERT OR IGNORE INTO fs_sustained (sid, ino) VALUES ({sid}, {node.ino})",
        ]

    def _drop_link(self, conn: Any, node: Node, now: int) -> None:
        conn.executescript("; ".join(self._drop_link_sql(node, now)))

    def _unlink_row(self, parent: int, name: bytes, node: Node) -> tuple[Any, ...]:
        """The row of the unlink procedure (schema.UNLINK_OP_COLUMNS) for `name` in `parent`."""
        return (parent, name, node.ino, node.nlink, self._sustain(node), time.time_ns())

    def _unlink(self, conn: Any, path: str) -> tuple[int, list[int]]:
        """Batchable: every FsError comes before the first write."""
        parent, name, ino, _ = self._entry(conn, path)
        if ino is None:
            raise FsError(errno.ENOENT)
        node = self._get(conn, ino)
        if node.is_dir:
            raise FsError(errno.EISDIR)
        conn.execute(UNLINK_OP_SQL, self._unlink_row(parent.ino, name, node))
        shared = node.nlink > 1 or node.ino in self._hidden_paths
        return node.ino, [node.ino] if shared else []

    def unlink(self, path: str) -> None:
        ino = self.hidden_ino(path)
        if ino is not None:  # libfuse's last step for a hidden file: release freed it already
            with self._lock:
                self._hidden.pop(os.fsencode(path.rsplit("/", 1)[-1]), None)
            return
        stale = self._fast_unlink(path)
        if stale is None:
            stale = self.store.batched(lambda c: self._unlink(c, path)[1])
        self._stale(stale)

    def _fast_unlink(self, path: str) -> list[int] | None:
        """Unlink with one statement of the unlink procedure (batched with other threads'
        unlinks, as `_fast_make`), guarded by the entry and inode as this mount knows
        them (`_known`: fresh, as for getattr) or, when it does not or the procedure
        refused them, as one read finds them; None: use the transaction (`_unlink`)."""
        names = components(path)
        if not names or len(names) > MAX_DEPTH_PER_QUERY or names[-1] in self._hidden:
            return None
        dirpath = path.rstrip("/").rsplit("/", 1)[0] or "/"
        known = self._known_node(path)
        parent_known = self._known_node(dirpath) if known is not None else None
        if known is not None and parent_known is not None and parent_known.is_dir:
            if not known.is_dir:
                stale = self._unlink_one(path, parent_known.ino, names[-1], known)
                if stale is not None:
                    return stale
        node_sql = ", ".join(
            f"(SELECT {c} FROM fs_node WHERE ino = c.ino)" for c in NODE_COLUMNS.split(",")
        )
        try:
            parent, name, ino, row = self.store.read(lambda c: self._entry(c, path, node_sql))
        except FsError:
            return None
        if ino is None or row[0] is None:
            return None
        node = _node(row)
        if node.is_dir:
            return None
        return self._unlink_one(path, parent.ino, name, node)

    def _unlink_one(self, path: str, p: int, name: bytes, node: Node) -> list[int] | None:
        """One row of the unlink procedure: `name` in directory `p` is `node` (with its
        link count); the inodes whose other names went stale, or None: refused."""
        op = self._unlink_row(p, name, node)
        ino = node.ino

        def committed() -> bool:
            return not self._edge_is(p, name, ino)

        if not self.store.inserted("fs_unlink_op", op, committed):
            return None
        self._touched_dir(path.rstrip("/").rsplit("/", 1)[0] or "/", p, op[-1], 0)
        with self._lock:
            self._known.pop(path, None)
        for tid, made in list(self._just_made.items()):  # (transactions: by store.commits)
            if made[0] == path:
                self._just_made.pop(tid, None)
        shared = node.nlink > 1 or node.ino in self._hidden_paths
        return [node.ino] if shared else []

    def _hide(self, old: str, new: str, hidden: bytes) -> None:
        """libfuse hides a file unlinked (or renamed over) while this mount has it open by
        renaming it: unlink it here, and answer for its inode under the hidden name."""
        ino, stale = self.store.transaction(lambda c: self._unlink(c, old))
        with self._lock:
            self._hidden[hidden] = ino
            self._hidden_paths.setdefault(ino, []).append(new)
        self._stale(stale)

    def _check_empty(self, conn: Any, ino: int) -> None:
        if (
            conn.execute("SELECT 1 FROM fs_edge WHERE parent = ? LIMIT 1", (ino,)).fetchone()
            is not None
        ):
            raise FsError(errno.ENOTEMPTY)

    def rmdir(self, path: str) -> None:
        def tx(conn: Any) -> None:
            parent, name, ino, _ = self._entry(conn, path)
            if ino is None:
                raise FsError(errno.ENOENT)
            node = self._get(conn, ino)
            if not node.is_dir:
                raise FsError(errno.ENOTDIR)
            self._check_empty(conn, ino)
            now = time.time_ns()
            conn.execute("DELETE FROM fs_edge WHERE parent = ? AND name = ?", (parent.ino, name))
            conn.execute(
                "UPDATE fs_node SET nlink = nlink - 1, mtime = ?, ctime = ? WHERE ino = ?",
                (now, now, parent.ino),
            )
            self._delete_inode(conn, ino)

        self.store.transaction(tx)

    def _is_ancestor(self, conn: Any, ancestor: int, ino: int) -> bool:
        row = conn.execute(
            "WITH RECURSIVE up(ino) AS (SELECT ? UNION SELECT e.parent FROM fs_edge e JOIN up ON e.ino = up.ino"
            " WHERE up.ino != ?) SELECT 1 FROM up WHERE ino = ? LIMIT 1",
            (ino, ROOT_INO, ancestor),
        ).fetchone()
        return row is not None

    def rename(self, old: str, new: str, flags: int = 0) -> None:
        if (
            flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE)
            or flags == RENAME_NOREPLACE | RENAME_EXCHANGE
        ):
            raise FsError(errno.EINVAL)
        hidden = os.fsencode(new.rsplit("/", 1)[-1])
        if not flags and HIDDEN_NAME.fullmatch(hidden) and self._is_open(old):
            self._hide(old, new, hidden)
            return

        def tx(conn: Any) -> list[int]:
            stale: list[int] = []
            src_parent, src_name, src_ino, _ = self._entry(conn, old)
            dst_parent, dst_name, dst_ino, _ = self._entry(conn, new)
            if src_ino is None:
                raise FsError(errno.ENOENT)
            src = self._get(conn, src_ino)
            dst = None if dst_ino is None else self._get(conn, dst_ino)
            if flags & RENAME_NOREPLACE and dst is not None:
                raise FsError(errno.EEXIST)
            if flags & RENAME_EXCHANGE and dst is None:
                raise FsError(errno.ENOENT)
            moves = src_parent.ino != dst_parent.ino
            if src.is_dir and moves and self._is_ancestor(conn, src.ino, dst_parent.ino):
                raise FsError(errno.EINVAL)
            if (
                flags & RENAME_EXCHANGE
                and dst is not None
                and dst.is_dir
                and moves
                and self._is_ancestor(conn, dst.ino, src_parent.ino)
            ):
                raise FsError(errno.EINVAL)
            if dst is not None and dst.ino == src.ino:
                return stale  # two names of one file: POSIX says do nothing
            now = time.time_ns()
            if flags & RENAME_EXCHANGE:
                assert dst is not None
                conn.execute(
                    "UPDATE fs_edge SET ino = ? WHERE parent = ? AND name = ?",
                    (dst.ino, src_parent.ino, src_name),
                )
                conn.execute(
                    "UPDATE fs_edge SET ino = ? WHERE parent = ? AND name = ?",
                    (src.ino, dst_parent.ino, dst_name),
                )
                if moves and src.is_dir != dst.is_dir:
                    shift = 1 if src.is_dir else -1  # the directory among them changes parent
                    conn.execute(
                        "UPDATE fs_node SET nlink = nlink - ? WHERE ino = ?",
                        (shift, src_parent.ino),
                    )
                    conn.execute(
                        "UPDATE fs_node SET nlink = nlink + ? WHERE ino = ?",
                        (shift, dst_parent.ino),
                    )
                conn.execute(
                    "UPDATE fs_node SET ctime = ? WHERE ino IN (?, ?)", (now, src.ino, dst.ino)
                )
            else:
                if dst is not None:
                    if src.is_dir and not dst.is_dir:
                        raise FsError(errno.ENOTDIR)
                    if not src.is_dir and dst.is_dir:
                        raise FsError(errno.EISDIR)
                    if dst.is_dir:
                        self._check_empty(conn, dst.ino)
                        conn.execute(
                            "UPDATE fs_node SET nlink = nlink - 1 WHERE ino = ?", (dst_parent.ino,)
                        )
                    conn.execute(
                        "DELETE FROM fs_edge WHERE parent = ? AND name = ?",
                        (dst_parent.ino, dst_name),
                    )
                    self._drop_link(conn, dst, now)
                    if dst.nlink > 1 and not dst.is_dir:
                        stale.append(dst.ino)
                conn.execute(
                    "UPDATE fs_edge SET parent = ?, name = ? WHERE parent = ? AND name = ?",
                    (dst_parent.ino, dst_name, src_parent.ino, src_name),
                )
                if src.is_dir and moves:
                    conn.execute(
                        "UPDATE fs_node SET nlink = nlink - 1 WHERE ino = ?", (src_parent.ino,)
                    )
                    conn.execute(
                        "UPDATE fs_node SET nlink = nlink + 1 WHERE ino = ?", (dst_parent.ino,)
                    )
                conn.execute("UPDATE fs_node SET ctime = ? WHERE ino = ?", (now, src.ino))
            conn.execute(
                "UPDATE fs_node SET mtime = ?, ctime = ? WHERE ino IN (?, ?)",
                (now, now, src_parent.ino, dst_parent.ino),
            )
            return stale

        self._stale(self.store.transaction(tx))

    def _is_open(self, path: str) -> bool:
        try:
            ino = self.store.read(lambda c: self._resolve(c, path)).ino
        except FsError:
            return False
        with self._lock:
            return ino in self._open

    # -- attributes --

    def _target(self, conn: Any, path: str | None, fh: int | None) -> Node:
        if fh is not None and fh in self._handles:
            return self._get(conn, self._handles[fh].ino)
        if path is None:
            raise FsError(errno.EBADF)
        return self._resolve(conn, path)

    @staticmethod
    def _shared(node: Node) -> list[int]:
        """The inode when other names of it may hold stale cached attributes."""
        return [node.ino] if node.nlink > 1 and not node.is_dir else []

    def chmod(self, path: str | None, mode: int, fh: int | None = None) -> None:
        def tx(conn: Any) -> list[int]:
            node = self._target(conn, path, fh)
            conn.execute(
                "UPDATE fs_node SET mode = ?, ctime = ? WHERE ino = ?",
                (stat.S_IFMT(node.mode) | (mode & 0o7777), time.time_ns(), node.ino),
            )
            return self._shared(node)

        self._stale(self.store.transaction(tx))

    def chown(self, path: str | None, uid: int, gid: int, fh: int | None = None) -> None:
        def tx(conn: Any) -> list[int]:
            node = self._target(conn, path, fh)
            mode = node.mode
            if (uid != -1 or gid != -1) and stat.S_ISREG(mode):
                # as Linux: a change of owner drops set-user-ID, and set-group-ID where group-exec is set
                mode &= ~stat.S_ISUID
                if mode & stat.S_IXGRP:
                    mode &= ~stat.S_ISGID
            conn.execute(
                "UPDATE fs_node SET uid = ?, gid = ?, mode = ?, ctime = ? WHERE ino = ?",
                (
                    node.uid if uid == -1 else uid,
                    node.gid if gid == -1 else gid,
                    mode,
                    time.time_ns(),
                    node.ino,
                ),
            )
            return self._shared(node)

        self._stale(self.store.transaction(tx))

    def utimens(
        self, path: str | None, atime: TimeSpec, mtime: TimeSpec, fh: int | None = None
    ) -> None:
        now = time.time_ns()

        def tx(conn: Any) -> list[int]:
            node = self._target(conn, path, fh)
            a = node.atime if atime is None else now if atime == UTIME_NOW else int(atime)
            m = node.mtime if mtime is None else now if mtime == UTIME_NOW else int(mtime)
            conn.execute(
                "UPDATE fs_node SET atime = ?, mtime = ?, ctime = ? WHERE ino = ?",
                (a, m, now, node.ino),
            )
            return self._shared(node)

        ino = self._flush_target(path, fh)
        self._stale(self.store.transaction(tx))
        if ino is not None and mtime is not None:
            self._forget(ino)

    # -- data: handles --

    def _flush_target(self, path: str | None, fh: int | None) -> int | None:
        """Flush the open file `path`/`fh` names (its buffered mtime would win otherwise)."""
        if fh is not None and fh in self._handles:
            ino: int | None = self._handles[fh].ino
        elif path is not None:
            try:
                ino = self.store.read(lambda c: self._resolve(c, path).ino)
            except FsError:
                return None
        else:
            return None
        with self._lock:
            f = self._open.get(ino) if ino is not None else None
        if f is not None:
            f.flush()
        return ino

    def _forget(self, ino: int) -> None:
        with self._lock:
            self._seen.pop(ino, None)

    def _flushed(self, ino: int, stamp: tuple[int, int, int], nlink: int) -> None:
        with self._lock:
            self._seen[ino] = stamp
        if nlink > 1:
            self._stale([ino])

    def _attach(self, node: Node, flags: int) -> tuple[int, bool]:
        """A handle on `node`; returns (fh, keep_cache): the page cache may stay when the
        file is as this mount last saw it."""
        stamp = (node.mtime, node.ctime, node.size)
        with self._lock:
            keep = self._seen.get(node.ino) == stamp
            self._seen[node.ino] = stamp
            f = self._open.get(node.ino)
            if f is None:
                f = OpenFile(node.ino, node.size, self.chunk_size, self.store, self.space)
                f.max_dirty_chunks = max(1, MAX_DIRTY_BYTES // self.chunk_size)
                f.on_flushed = self._flushed
                self._open[node.ino] = f
            elif not f.busy and not keep:
                f.truncated(node.size)  # close-to-open: what another mount wrote is read anew
            f.refs += 1
            fh = self._next_fh
            self._next_fh += 1
            self._handles[fh] = Handle(node.ino, flags, f)
        return fh, keep

    def _file(self, fh: int) -> OpenFile:
        h = self._handles.get(fh)
        if h is None or h.file is None:
            raise FsError(errno.EBADF)
        return h.file

    def open(self, path: str, flags: int) -> tuple[int, bool]:
        # linearizable: what another mount closed before this open is seen (close-to-open)
        node = self.store.read(lambda c: self._resolve(c, path), linearizable=True)
        if node.is_dir and flags & os.O_ACCMODE != os.O_RDONLY:
            raise FsError(errno.EISDIR)
        fh, keep = self._attach(node, flags)
        if flags & os.O_TRUNC and flags & os.O_ACCMODE != os.O_RDONLY and node.size:
            try:
                self.truncate(None, 0, fh)
            except FsError:
                self.release(fh)
                raise
            keep = False
        return fh, keep

    def create(self, path: str, mode: int, flags: int, uid: int, gid: int) -> int:
        def tx(conn: Any) -> tuple[Node, bool]:
            try:
                return self._make(conn, path, stat.S_IFREG | (mode & 0o7777), uid, gid), True
            except FsError as exc:
                if exc.errno != errno.EEXIST or flags & os.O_EXCL:
                    raise
                return self._resolve(conn, path), False  # made by another mount meanwhile: open it

        fast = self._fast_make(path, stat.S_IFREG | (mode & 0o7777), uid, gid)
        node, made = (fast, True) if fast is not None else self.store.batched(tx)
        if not made:
            return self.open(path, flags)[0]
        self._made(path, node)
        return self._attach(node, flags)[0]

    def read(self, fh: int, size: int, offset: int) -> bytes:
        return self._file(fh).read(offset, size)

    def write(self, fh: int, data: bytes, offset: int) -> int:
        return self._file(fh).write(offset, data)

    def flush(self, fh: int) -> None:
        h = self._handles.get(fh)
        if h is not None and h.file is not None:
            h.file.flush()

    def fsync(self, fh: int) -> None:
        self.flush(fh)

    def release(self, fh: int) -> None:
        with self._lock:
            h = self._handles.pop(fh, None)
        if h is None or h.file is None:
            return
        f = h.file
        try:
            f.flush()
        finally:
            with self._lock:
                f.refs -= 1
                last = f.refs == 0
                if last:
                    del self._open[f.ino]
                    for name in [n for n, i in self._hidden.items() if i == f.ino]:
                        del self._hidden[name]
                    self._hidden_paths.pop(f.ino, None)
            if last:
                f.discard()  # what a failed flush (ENOSPC, EIO) left is gone with the last handle
                self._release_orphan(f)

    def _release_orphan(self, f: OpenFile) -> None:
        with self._lock:
            if f.ino not in self._sustained:
                return
            self._sustained.discard(f.ino)

        def tx(conn: Any) -> None:
            if (
                conn.execute(
                    "SELECT 1 FROM fs_sustained WHERE sid = ? AND ino = ?", (self.sid, f.ino)
                ).fetchone()
                is None
            ):
                return
            row = conn.execute("SELECT nlink FROM fs_node WHERE ino = ?", (f.ino,)).fetchone()
            if row is not None and row[0] == 0:
                self._delete_inode(conn, f.ino)
            conn.execute("DELETE FROM fs_sustained WHERE sid = ? AND ino = ?", (self.sid, f.ino))

        self.store.transaction(tx)

    def opendir(self, path: str) -> int:
        node = self.store.read(lambda c: self._resolve(c, path))
        if not node.is_dir:
            raise FsError(errno.ENOTDIR)
        with self._lock:
            fh = self._next_fh
            self._next_fh += 1
            self._handles[fh] = Handle(node.ino, os.O_RDONLY, None)
        return fh

    def releasedir(self, fh: int) -> None:
        with self._lock:
            self._handles.pop(fh, None)

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> None:
        if length < 0:
            raise FsError(errno.EINVAL)
        if length > MAX_FILE_SIZE:
            raise FsError(errno.EFBIG)
        ino = self._flush_target(path, fh)
        cs = self.chunk_size

        def tx(conn: Any) -> Node:
            node = self._target(conn, path, fh)
            if node.is_dir:
                raise FsError(errno.EISDIR)
            if not stat.S_ISREG(node.mode):
                raise FsError(errno.EINVAL)
            freed = 0
            if length < node.size:
                keep = (length + cs - 1) // cs  # chunks [0, keep) stay
                freed = conn.execute(
                    "SELECT coalesce(sum(length(data)), 0) FROM fs_chunk WHERE ino = ? AND idx >= ?",
                    (node.ino, keep),
                ).fetchone()[0]
                conn.execute("DELETE FROM fs_chunk WHERE ino = ? AND idx >= ?", (node.ino, keep))
                if length % cs:
                    row = conn.execute(
                        "SELECT data FROM fs_chunk WHERE ino = ? AND idx = ?",
                        (node.ino, length // cs),
                    ).fetchone()
                    if row is not None and len(row[0]) > length % cs:
                        cut = bytes(row[0])[: length % cs].rstrip(b"\0")
                        freed += len(row[0]) - len(cut)
                        if cut:
                            conn.execute(
                                "UPDATE fs_chunk SET data = ? WHERE ino = ? AND idx = ?",
                                (cut, node.ino, length // cs),
                            )
                        else:
                            conn.execute(
                                "DELETE FROM fs_chunk WHERE ino = ? AND idx = ?",
                                (node.ino, length // cs),
                            )
            now = time.time_ns()
            conn.execute(
                "UPDATE fs_node SET size = ?, stored = stored - ?, mtime = ?, ctime = ? WHERE ino = ?",
                (length, freed, now, now, node.ino),
            )
            if freed:
                conn.execute(
                    "UPDATE fs_superblock SET used_bytes = used_bytes - ? WHERE id = 1", (freed,)
                )
            return node

        node = self.store.transaction(tx)
        done = node.ino
        with self._lock:
            f = self._open.get(done if ino is None else ino)
        if f is not None:
            f.truncated(length)
        self._forget(done)
        self._stale(self._shared(node))

    def fallocate(self, fh: int, mode: int, offset: int, length: int) -> None:
        if mode & ~FALLOC_FL_KEEP_SIZE:
            raise FsError(errno.EOPNOTSUPP)
        if offset < 0 or length <= 0:
            raise FsError(errno.EINVAL)
        end = offset + length
        if end > MAX_FILE_SIZE:
            raise FsError(errno.EFBIG)
        f = self._file(fh)
        # Space is not reserved (chunks stay sparse); refuse what clearly cannot fit.
        with self.space.lock:
            if end - f.size > self.space.capacity - self.space.used - self.space.pending:
                raise FsError(errno.ENOSPC)
        if mode & FALLOC_FL_KEEP_SIZE or end <= f.size:
            return
        with f.lock:
            f.size = max(f.size, end)
            f.mtime = time.time_ns()
        f.flush()

    # -- xattrs --

    @staticmethod
    def _xattr_name(name: str) -> bytes:
        raw = os.fsencode(name)
        if not raw or len(raw) > XATTR_NAME_MAX:
            raise FsError(errno.ERANGE)
        if not raw.startswith((b"user.", b"trusted.", b"security.")) or raw == NO_CAPABILITIES:
            raise FsError(errno.EOPNOTSUPP)
        return raw

    def setxattr(self, path: str, name: str, value: bytes, options: int) -> None:
        raw = self._xattr_name(name)
        if len(value) > XATTR_SIZE_MAX:
            raise FsError(errno.E2BIG)

        def tx(conn: Any) -> None:
            node = self._resolve(conn, path)
            row = conn.execute(
                "SELECT length(value) FROM fs_xattr WHERE ino = ? AND name = ?", (node.ino, raw)
            ).fetchone()
            if row is not None and options & XATTR_CREATE:
                raise FsError(errno.EEXIST)
            if row is None and options & XATTR_REPLACE:
                raise FsError(errno.ENODATA)
            self._charge(conn, len(value) - (row[0] if row else -len(raw)))
            conn.execute(
                "INSERT OR REPLACE INTO fs_xattr (ino, name, value) VALUES (?, ?, ?)",
                (node.ino, raw, value),
            )
            conn.execute("UPDATE fs_node SET ctime = ? WHERE ino = ?", (time.time_ns(), node.ino))

        self.store.transaction(tx)

    def getxattr(self, path: str, name: str) -> bytes:
        if os.fsencode(name) == NO_CAPABILITIES:
            raise FsError(
                errno.ENODATA
            )  # the kernel asks before every write; file capabilities are refused
        raw = self._xattr_name(name)

        return bytes(self.store.read(lambda c: self._xattr(c, path, raw, "value")[1]))

    def _xattr(self, conn: Any, path: str, raw: bytes, column: str) -> tuple[Node, Any]:
        """(the inode, `column` of its xattr `raw`); ENODATA when it has none."""
        node = self._resolve(conn, path)
        row = conn.execute(
            f"SELECT {column} FROM fs_xattr WHERE ino = ? AND name = ?", (node.ino, raw)
        ).fetchone()
        if row is None:
            raise FsError(errno.ENODATA)
        return node, row[0]

    def listxattr(self, path: str) -> list[str]:
        def q(conn: Any) -> list[str]:
            node = self._resolve(conn, path)
            rows = conn.execute(
                "SELECT name FROM fs_xattr WHERE ino = ? ORDER BY name", (node.ino,)
            ).fetchall()
            return [os.fsdecode(bytes(r[0])) for r in rows]

        return self.store.read(q)

    def removexattr(self, path: str, name: str) -> None:
        raw = self._xattr_name(name)

        def tx(conn: Any) -> None:
            node, size = self._xattr(conn, path, raw, "length(value)")
            conn.execute("DELETE FROM fs_xattr WHERE ino = ? AND name = ?", (node.ino, raw))
            conn.execute(
                "UPDATE fs_superblock SET used_bytes = used_bytes - ? WHERE id = 1",
                (size + len(raw),),
            )
            conn.execute("UPDATE fs_node SET ctime = ? WHERE ino = ?", (time.time_ns(), node.ino))

        self.store.transaction(tx)

    def open_files(self) -> Iterator[OpenFile]:
        with self._lock:
            files = list(self._open.values())
        yield from files


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
