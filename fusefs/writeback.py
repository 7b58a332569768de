"""Per-inode write-back buffer and read cache of one mount.

Writes land in chunk-sized buffers and reach the database in one transaction per
flush (fsync, close, or a full buffer). A full buffer is flushed in the background
while the next one fills (one flush in flight per file), so commits overlap the
kernel's writes; an error of a background flush is given by the next write, fsync
or close. Reads are served from those buffers, from a small clean-chunk cache filled
by read-ahead (the next window is fetched in the background while the current one
is read), or from the database.
"""

from __future__ import annotations

import errno
import functools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from .errors import FsError
from .schema import MAX_FILE_SIZE
from .store import Store

READ_AHEAD_CHUNKS = 16
CLEAN_CACHE_CHUNKS = 64
# background flushes and read-ahead of every open file of the mount
BACKGROUND = ThreadPoolExecutor(4, thread_name_prefix="fusefs-io")


# chunks written (or dropped) by one statement of a flush: one request, not one a chunk
ROWS_PER_STATEMENT = 64


@functools.lru_cache(maxsize=2 * ROWS_PER_STATEMENT)
def _put_chunks_sql(rows: int) -> str:
    values = ", ".join(["(?, ?, ?)"] * rows)
    return f"INSERT OR REPLACE INTO fs_chunk (ino, idx, data) VALUES {values}"


@functools.lru_cache(maxsize=2 * ROWS_PER_STATEMENT)
def _drop_chunks_sql(rows: int) -> str:
    return f"DELETE FROM fs_chunk WHERE ino = ? AND idx IN ({', '.join('?' * rows)})"


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
        # the background flush in flight: its future and the chunks it writes
        self._flushing: Future[None] | None = None
        self._flushing_chunks: dict[int, bytes] = {}
        self._flushing_mtime: int | None = None
        self._failed: FsError | None = None  # a background flush's error, not yet reported
        self._prefetch: tuple[int, int, int, Future[dict[int, bytes]]] | None = None
        self._version = 0  # bumped by every change of the data: stale read-ahead is dropped
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
        if idx in self._flushing_chunks:
            return self._flushing_chunks[idx]
        if idx in fetched:
            return fetched[idx]
        self.clean.move_to_end(idx)
        return self.clean[idx]

    def _cached(self, idx: int) -> bool:
        return idx in self.dirty or idx in self._flushing_chunks or idx in self.clean

    def _keep_clean(self, chunks: dict[int, bytes]) -> None:
        for idx, got in chunks.items():
            if idx not in self.dirty:
                self.clean[idx] = got
        while len(self.clean) > CLEAN_CACHE_CHUNKS:
            self.clean.popitem(last=False)

    def _take_prefetch(self, first: int, last: int) -> None:
        """Merge finished read-ahead, or wait for the one covering chunks [first, last]."""
        if self._prefetch is None:
            return
        lo, hi, version, future = self._prefetch
        if not future.done() and (hi < first or lo > last):
            return
        self._prefetch = None
        try:
            got = future.result()
        except FsError:
            return  # the read fetches what it needs itself
        if version == self._version:
            self._keep_clean(got)

    def _read_ahead(self, after: int) -> None:
        """Fetch the window past what is cached after chunk `after`, in the background."""
        top = max(0, (self.size - 1) // self.chunk_size)
        lo = after + 1
        while lo <= top and lo - after <= READ_AHEAD_CHUNKS and self._cached(lo):
            lo += 1
        if self._prefetch is not None or lo > top or lo - after > READ_AHEAD_CHUNKS:
            return
        hi = min(top, lo + READ_AHEAD_CHUNKS - 1)
        self._prefetch = (lo, hi, self._version, BACKGROUND.submit(self._fetch, lo, hi))

    def read(self, offset: int, size: int) -> bytes:
        with self.lock:
            end = min(offset + size, self.size)
            if offset >= end:
                return b""
            cs = self.chunk_size
            first, last = offset // cs, (end - 1) // cs
            sequential = offset == self.last_read_end
            self._take_prefetch(first, last)
            missing = [i for i in range(first, last + 1) if not self._cached(i)]
            fetched: dict[int, bytes] = {}
            if missing:
                top = max(missing)
                if sequential:
                    top = min(top + READ_AHEAD_CHUNKS, max(0, (self.size - 1) // cs))
                fetched = self._fetch(min(missing), top)
                self._keep_clean(fetched)
            pieces: list[bytes | bytearray | memoryview] = []
            for idx in range(first, last + 1):
                data: bytes | bytearray = self._chunk(idx, fetched)
                lo = max(offset, idx * cs) - idx * cs
                hi = min(end, (idx + 1) * cs) - idx * cs
                piece = data if lo == 0 and hi == len(data) else memoryview(data)[lo:hi]
                pieces.append(piece)
                if len(piece) < hi - lo:  # trailing zeros are not stored
                    pieces.append(bytes(hi - lo - len(piece)))
            self.last_read_end = end
            if sequential:
                self._read_ahead(last)
            return b"".join(pieces)  # one copy, made while the lock still holds the chunks

    # -- writes --

    def write(self, offset: int, data: bytes) -> int:
        if offset + len(data) > MAX_FILE_SIZE:
            raise FsError(errno.EFBIG)
        cs = self.chunk_size
        touched = range(offset // cs, (offset + max(len(data), 1) - 1) // cs + 1)
        while True:
            self._wait_flushing(touched)
            with self.lock:
                if any(i in self._flushing_chunks for i in touched):
                    continue  # a chunk being flushed is written after its flush
                full = self._buffer(offset, data)
                break
        if full:
            self._wait_flushing()
            with self.lock:
                if len(self.dirty) >= self.max_dirty_chunks and self._flushing is None:
                    self._flush_in_background()
        return len(data)

    def _buffer(self, offset: int, data: bytes) -> bool:
        """Copy `data` into the dirty chunks (lock held); whether the buffer is full."""
        cs = self.chunk_size
        self._report_failure()
        self._version += 1
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
        return len(self.dirty) >= self.max_dirty_chunks

    def _wait_flushing(self, chunks: range | None = None) -> None:
        """Wait (holding no lock) for the flush in flight, if it writes any of `chunks`."""
        future = self._flushing
        if future is None:
            return
        if chunks is not None and not any(i in self._flushing_chunks for i in chunks):
            return
        future.exception()  # its error is kept in self._failed

    def _report_failure(self) -> None:
        if self._failed is not None:
            failed, self._failed = self._failed, None
            raise failed

    @property
    def buffered_mtime(self) -> int | None:
        """The time of the last write not yet flushed (or in flight)."""
        return self.mtime if self.mtime is not None else self._flushing_mtime

    @property
    def busy(self) -> bool:
        """Unflushed data: buffered, or a flush in flight."""
        return bool(self.dirty) or self._flushing is not None

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
        """Write every dirty chunk, the size and mtime in one transaction (after the
        flush in flight, whose error is raised here if it failed)."""
        while True:
            self._wait_flushing()
            with self.lock:
                if self._flushing is not None:
                    continue  # another thread started one meanwhile
                self._report_failure()
                if not self.dirty and self.mtime is None:
                    return
                batch = self._take_batch()
                try:
                    result = self.store.transaction(self._flush_tx(*batch))
                except FsError:
                    self._restore(*batch)
                    raise
                self._flushed(batch, result)
                return

    def _take_batch(self) -> tuple[dict[int, bytes], dict[int, int], int, int, int]:
        """Move the dirty chunks out of the buffer: (chunks, their stored lengths, growth,
        mtime, size)."""
        chunks = {idx: bytes(buf).rstrip(b"\0") for idx, buf in self.dirty.items()}
        batch = (chunks, dict(self.base_len), self.growth, self.mtime or time.time_ns(), self.size)
        self.dirty.clear()
        self.base_len.clear()
        self.growth = 0
        self.mtime = None
        return batch

    def _restore(
        self, chunks: dict[int, bytes], base: dict[int, int], growth: int, mtime: int, size: int
    ) -> None:
        """Put a batch that did not commit back into the buffer (under newer writes)."""
        for idx, data in chunks.items():
            if idx not in self.dirty:
                self.dirty[idx] = bytearray(data)
                self.base_len[idx] = base.get(idx, 0)
        self.growth += growth
        self.mtime = max(self.mtime or 0, mtime)

    def _flushed(
        self,
        batch: tuple[dict[int, bytes], dict[int, int], int, int, int],
        result: tuple[int, tuple[int, int, int], int] | None,
    ) -> None:
        chunks, _, growth, _, _ = batch
        self.space.settle(growth, result[0] if result else None)
        self._keep_clean({i: d for i, d in chunks.items()})
        self._version += 1
        if result is not None:
            self.size = max(self.size, result[1][2])
            if self.on_flushed is not None:
                self.on_flushed(self.ino, result[1], result[2])

    def _flush_in_background(self) -> None:
        """Hand the dirty chunks to a background flush (caller holds the lock, none in flight)."""
        batch = self._take_batch()
        self._flushing_chunks = batch[0]
        self._flushing_mtime = batch[3]
        tx = self._flush_tx(*batch)

        def run() -> None:
            try:
                result = self.store.transaction(tx)
            except Exception as exc:
                with self.lock:
                    self._restore(*batch)
                    self._failed = exc if isinstance(exc, FsError) else FsError(errno.EIO, str(exc))
                    self._flushing_chunks, self._flushing_mtime = {}, None
                    self._flushing = None
                return
            with self.lock:
                self._flushing_chunks, self._flushing_mtime = {}, None
                self._flushing = None
                self._flushed(batch, result)

        self._flushing = BACKGROUND.submit(run)

    def _flush_tx(
        self, chunks: dict[int, bytes], base: dict[int, int], growth: int, mtime: int, size: int
    ) -> Callable[[Any], tuple[int, tuple[int, int, int], int] | None]:
        """The flush as one transaction of seven requests (BEGIN, the inode with the used
        bytes, the stored chunk lengths, the capacity-guarded space, the chunks in one
        statement, the inode, COMMIT): each is a round trip, and the data's own Raft
        commit is the rest."""

        def tx(conn: Any) -> tuple[int, tuple[int, int, int], int] | None:
            row = conn.execute(
                "SELECT size, nlink, (SELECT used_bytes FROM fs_superblock WHERE id = 1)"
                " FROM fs_node WHERE ino = ?",
                (self.ino,),
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
            delta = sum(len(d) - stored.get(i, 0) for i, d in chunks.items() if d or i in stored)
            cur = conn.execute(
                "UPDATE fs_superblock SET used_bytes = used_bytes + ? WHERE id = 1 AND used_bytes + ? <= capacity",
                (delta, max(delta, 0)),
            )
            if cur.rowcount == 0:
                raise FsError(errno.ENOSPC)
            puts = [(i, d) for i, d in chunks.items() if d]
            drops = [i for i, d in chunks.items() if not d and i in stored]
            for at in range(0, len(puts), ROWS_PER_STATEMENT):
                part = puts[at : at + ROWS_PER_STATEMENT]
                conn.execute(_put_chunks_sql(len(part)), [v for p in part for v in (self.ino, *p)])
            for at in range(0, len(drops), ROWS_PER_STATEMENT):
                idxs = drops[at : at + ROWS_PER_STATEMENT]
                conn.execute(_drop_chunks_sql(len(idxs)), (self.ino, *idxs))
            conn.execute(
                "UPDATE fs_node SET size = ?, stored = stored + ?, mtime = ?, ctime = ? WHERE ino = ?",
                (new_size, delta, mtime, mtime, self.ino),
            )
            # the write lock is held since BEGIN IMMEDIATE: nothing else moved it
            used = int(row[2]) + delta
            return used, (mtime, mtime, new_size), int(row[1])

        return tx

    def discard(self) -> None:
        """Drop unflushed data (the inode is gone)."""
        self._wait_flushing()
        with self.lock:
            self._failed = None
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
            self._version += 1
