"""Per-inode write-back buffer and read cache of one mount.

Writes land in chunk-sized buffers and reach the database in one transaction per
flush (fsync, close, or a full buffer); reads are served from those buffers, from
a small clean-chunk cache filled with read-ahead, or from the database.
"""

from __future__ import annotations

import errno
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .errors import FsError
from .schema import MAX_FILE_SIZE
from .store import Store

READ_AHEAD_CHUNKS = 16
CLEAN_CACHE_CHUNKS = 64


class Space:
    """What this mount knows of the filesystem's space: the superblock's used bytes as of
    its last transaction, plus what its buffers will add (for an early ENOSPC)."""

    def __init__(self, capacity: int, used: int) -> None:
        self.capacity = capacity
        self.used = used
        self.pending = 0
        self.lock = threading.Lock()

    def adjust(self, growth: int) -> None:
        """Count `growth` more buffered bytes; ENOSPC if they cannot fit."""
        with self.lock:
            if growth > 0 and self.used + self.pending + growth > self.capacity:
                raise FsError(errno.ENOSPC)
            self.pending += growth

    def settle(self, growth: int, used: int | None) -> None:
        with self.lock:
            self.pending -= growth
            if used is not None:
                self.used = used


class OpenFile:
    """The state of one inode while this mount has it open (shared by its handles)."""

    def __init__(self, ino: int, size: int, chunk_size: int, store: Store, space: Space) -> None:
        self.ino = ino
        self.size = size
        self.chunk_size = chunk_size
        self.store = store
        self.space = space
        self.refs = 0
        self.lock = threading.RLock()
        self.dirty: dict[int, bytearray] = {}
        self.base_len: dict[int, int] = {}  # stored length of each dirty chunk before we touched it
        self.growth = 0  # bytes the dirty chunks add to what is stored
        self.clean: OrderedDict[int, bytes] = OrderedDict()
        self.mtime: int | None = None  # the last buffered write's time, until flushed
        self.last_read_end = -1
        self.max_dirty_chunks = 16
        # (ino, (mtime, ctime, size), nlink) after each flush
        self.on_flushed: Callable[[int, tuple[int, int, int], int], None] | None = None

    # -- reads --

    def _fetch(self, first: int, last: int) -> dict[int, bytes]:
        rows = self.store.read(
            lambda c: c.execute(
                "SELECT idx, data FROM fs_chunk WHERE ino = ? AND idx BETWEEN ? AND ?",
                (self.ino, first, last),
            ).fetchall()
        )
        got = {i: b"" for i in range(first, last + 1)}
        got.update({idx: bytes(data) for idx, data in rows})
        return got

    def _chunk(self, idx: int, fetched: dict[int, bytes]) -> bytes | bytearray:
        if idx in self.dirty:
            return self.dirty[idx]
        if idx in fetched:
            return fetched[idx]
        self.clean.move_to_end(idx)
        return self.clean[idx]

    def read(self, offset: int, size: int) -> bytes:
        with self.lock:
            end = min(offset + size, self.size)
            if offset >= end:
                return b""
            cs = self.chunk_size
            first, last = offset // cs, (end - 1) // cs
            missing = [
                i for i in range(first, last + 1) if i not in self.dirty and i not in self.clean
            ]
            fetched: dict[int, bytes] = {}
            if missing:
                top = max(missing)
                if offset == self.last_read_end:  # sequential: read ahead
                    top = min(top + READ_AHEAD_CHUNKS, max(0, (self.size - 1) // cs))
                fetched = self._fetch(min(missing), top)
                for idx, got in fetched.items():
                    if idx not in self.dirty:
                        self.clean[idx] = got
                while len(self.clean) > CLEAN_CACHE_CHUNKS:
                    self.clean.popitem(last=False)
            out = bytearray()
            for idx in range(first, last + 1):
                data: bytes | bytearray = self._chunk(idx, fetched)
                lo = max(offset, idx * cs) - idx * cs
                hi = min(end, (idx + 1) * cs) - idx * cs
                piece = bytes(data[lo:hi])
                out += piece + b"\0" * (hi - lo - len(piece))
            self.last_read_end = end
            return bytes(out)

    # -- writes --

    def write(self, offset: int, data: bytes) -> int:
        if offset + len(data) > MAX_FILE_SIZE:
            raise FsError(errno.EFBIG)
        with self.lock:
            cs = self.chunk_size
            pos = 0
            while pos < len(data):
                at = offset + pos
                idx, lo = divmod(at, cs)
                n = min(cs - lo, len(data) - pos)
                buf = self.dirty.get(idx)
                if buf is None:
                    buf = self._load_for_write(idx, whole=(lo == 0 and n == cs))
                grow = max(len(buf), lo + n) - len(buf)
                if grow:
                    self.space.adjust(grow)
                    self.growth += grow
                if len(buf) < lo:
                    buf += b"\0" * (lo - len(buf))
                buf[lo : lo + n] = data[pos : pos + n]
                pos += n
            self.size = max(self.size, offset + len(data))
            self.mtime = time.time_ns()
            full = len(self.dirty) >= self.max_dirty_chunks
        if full:
            self.flush()
        return len(data)

    def _load_for_write(self, idx: int, whole: bool) -> bytearray:
        if whole or idx * self.chunk_size >= self.size:
            stored = self.clean.pop(idx, None)
            base = len(stored) if stored is not None else self._stored_len(idx)
            buf = bytearray()
        else:
            stored = self.clean.pop(idx, None)
            if stored is None:
                stored = self._fetch(idx, idx)[idx]
            base = len(stored)
            buf = bytearray(stored)
        # growth counts against what is stored: an emptied buffer for a whole overwrite starts negative
        self.base_len[idx] = base
        self.growth += len(buf) - base
        self.space.adjust(len(buf) - base)
        self.dirty[idx] = buf
        return buf

    def _stored_len(self, idx: int) -> int:
        if idx * self.chunk_size >= self.size:
            return 0
        row = self.store.read(
            lambda c: c.execute(
                "SELECT length(data) FROM fs_chunk WHERE ino = ? AND idx = ?", (self.ino, idx)
            ).fetchone()
        )
        return int(row[0]) if row else 0

    def flush(self) -> None:
        """Write every dirty chunk, the size and mtime in one transaction."""
        with self.lock:
            if not self.dirty and self.mtime is None:
                return
            chunks = {idx: bytes(buf).rstrip(b"\0") for idx, buf in self.dirty.items()}
            mtime = self.mtime or time.time_ns()
            size = self.size

            def tx(conn: Any) -> tuple[int, tuple[int, int, int], int] | None:
                row = conn.execute(
                    "SELECT size, nlink FROM fs_node WHERE ino = ?", (self.ino,)
                ).fetchone()
                if row is None:
                    return None  # removed by another mount meanwhile: nothing to keep
                new_size = max(int(row[0]), size)
                stored: dict[int, int] = {}
                if chunks:
                    stored = dict(
                        conn.execute(
                            "SELECT idx, length(data) FROM fs_chunk WHERE ino = ? AND idx BETWEEN ? AND ?",
                            (self.ino, min(chunks), max(chunks)),
                        ).fetchall()
                    )
                delta = sum(
                    len(d) - stored.get(i, 0) for i, d in chunks.items() if d or i in stored
                )
                cur = conn.execute(
                    "UPDATE fs_superblock SET used_bytes = used_bytes + ? WHERE id = 1 AND used_bytes + ? <= capacity",
                    (delta, max(delta, 0)),
                )
                if cur.rowcount == 0:
                    raise FsError(errno.ENOSPC)
                puts = [(self.ino, i, d) for i, d in chunks.items() if d]
                drops = [(self.ino, i) for i, d in chunks.items() if not d and i in stored]
                if puts:
                    conn.executemany(
                        "INSERT OR REPLACE INTO fs_chunk (ino, idx, data) VALUES (?, ?, ?)", puts
                    )
                if drops:
                    conn.executemany("DELETE FROM fs_chunk WHERE ino = ? AND idx = ?", drops)
                conn.execute(
                    "UPDATE fs_node SET size = ?, stored = stored + ?, mtime = ?, ctime = ? WHERE ino = ?",
                    (new_size, delta, mtime, mtime, self.ino),
                )
                used = conn.execute("SELECT used_bytes FROM fs_superblock WHERE id = 1").fetchone()[
                    0
                ]
                return int(used), (mtime, mtime, new_size), int(row[1])

            result = self.store.transaction(tx)
            growth, self.growth = self.growth, 0
            self.space.settle(growth, result[0] if result else None)
            for idx, data in chunks.items():
                self.clean[idx] = data
            self.dirty.clear()
            self.base_len.clear()
            self.mtime = None
            if result is not None:
                self.size = result[1][2]
                if self.on_flushed is not None:
                    self.on_flushed(self.ino, result[1], result[2])

    def discard(self) -> None:
        """Drop unflushed data (the inode is gone)."""
        with self.lock:
            self.space.settle(self.growth, None)
            self.growth = 0
            self.dirty.clear()
            self.base_len.clear()
            self.mtime = None

    def truncated(self, size: int) -> None:
        """The stored file was truncated to `size` (after a flush): drop cached chunks."""
        with self.lock:
            self.size = size
            self.clean.clear()
