"""`--view kv`: a kvstore namespace as files, through kvstore's public API (any backend).

`/` in keys are directories (a directory exists while a key lies below it, or until
rmdir when made here by mkdir); a file's content is the key's value, read at open and
put on close (close-to-open); rm deletes the key; mv is one transaction (delete +
put, guarded by the key's mod revision); a file's mtime is when this mount first
saw the key's mod revision (kvstore keeps no wall-clock time).
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import kvstore
from kvstore import CreateRevision, Delete, ModRevision, Put

from .errors import FsError
from .ops import RENAME_EXCHANGE, RENAME_NOREPLACE, TimeSpec

MAX_RENAME_KEYS = 60  # a directory move is one txn: 2 ops per key within kvstore's 128


@dataclass
class KVHandle:
    key: bytes
    data: bytearray
    dirty: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


def _key(path: str) -> bytes:
    key = os.fsencode(path.strip("/"))
    if len(key) > kvstore.MAX_KEY_BYTES:
        raise FsError(errno.ENAMETOOLONG)
    return key


class KVFileSystem:
    """The FileSystem methods the binding calls, over `kvstore.open(url)`."""

    def __init__(self, url: str, kv: kvstore.KV | None = None) -> None:
        self.kv = kv if kv is not None else kvstore.open(url)
        self._own = kv is None
        self._lock = threading.Lock()
        self._handles: dict[int, KVHandle] = {}
        self._next_fh = 1
        self._dirs: set[bytes] = set()  # made by mkdir here, no key below them yet
        self._seen: dict[int, int] = {}  # mod revision -> first time seen (ns)
        self._inos: dict[bytes, int] = {b"": 1}
        self.uid, self.gid = os.getuid(), os.getgid()
        self._started = time.time_ns()

    def close(self) -> None:
        for fh in list(self._handles):
            self.release(fh)
        if self._own:
            self.kv.close()

    # -- lookups --

    def _ino(self, key: bytes) -> int:
        with self._lock:
            return self._inos.setdefault(key, len(self._inos) + 1)

    def _time(self, revision: int) -> int:
        with self._lock:
            return self._seen.setdefault(revision, time.time_ns())

    def _is_dir(self, key: bytes) -> bool:
        if key == b"" or key in self._dirs:
            return True
        return self.kv.get_prefix(key + b"/", limit=1, keys_only=True).count > 0

    def _attrs(self, key: bytes, mode: int, size: int, mtime: int) -> dict[str, int]:
        return {
            "st_ino": self._ino(key),
            "st_mode": mode,
            "st_nlink": 2 if stat.S_ISDIR(mode) else 1,
            "st_uid": self.uid,
            "st_gid": self.gid,
            "st_size": size,
            "st_blocks": (size + 511) // 512,
            "st_atime": mtime,
            "st_mtime": mtime,
            "st_ctime": mtime,
        }

    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, int]:
        if fh is not None and fh in self._handles:
            h = self._handles[fh]
            kv = self.kv.get_kv(h.key)
            return self._attrs(
                h.key,
                stat.S_IFREG | 0o644,
                len(h.data),
                self._time(kv.mod_revision) if kv else time.time_ns(),
            )
        if path is None:
            raise FsError(errno.EBADF)
        key = _key(path)
        if self._is_dir(key):
            return self._attrs(key, stat.S_IFDIR | 0o755, 0, self._started)
        kv = self.kv.get_kv(key)
        if kv is None:
            raise FsError(errno.ENOENT)
        return self._attrs(key, stat.S_IFREG | 0o644, len(kv.value), self._time(kv.mod_revision))

    def readdir(self, path: str | None, fh: int | None = None) -> list[tuple[str, dict[str, int]]]:
        key = _key(path or "/")
        if not self._is_dir(key):
            raise FsError(errno.ENOTDIR)
        prefix = key + b"/" if key else b""
        entries: dict[bytes, int] = {}
        for kv in self.kv.get_prefix(prefix, keys_only=True).kvs:
            name, sep, _ = kv.key[len(prefix) :].partition(b"/")
            if name and (sep or name not in entries):
                entries[name] = stat.S_IFDIR if sep else stat.S_IFREG
        for d in self._dirs:
            if d.startswith(prefix) and b"/" not in d[len(prefix) :]:
                entries[d[len(prefix) :]] = stat.S_IFDIR
        out = [
            (".", {"st_ino": self._ino(key), "st_mode": stat.S_IFDIR}),
            ("..", {"st_mode": stat.S_IFDIR}),
        ]
        out += [
            (os.fsdecode(n), {"st_ino": self._ino(prefix + n), "st_mode": m})
            for n, m in sorted(entries.items())
        ]
        return out

    def opendir(self, path: str) -> int:
        if not self._is_dir(_key(path)):
            raise FsError(errno.ENOTDIR)
        return 0

    def releasedir(self, fh: int) -> None:
        pass

    def statfs(self) -> dict[str, int]:
        return {
            "f_bsize": 4096,
            "f_frsize": 4096,
            "f_blocks": 0,
            "f_bfree": 0,
            "f_bavail": 0,
            "f_files": 0,
            "f_ffree": 0,
            "f_namemax": 255,
        }

    # -- namespace --

    def mkdir(self, path: str, mode: int, uid: int, gid: int) -> None:
        key = _key(path)
        if self._is_dir(key) or self.kv.get_kv(key) is not None:
            raise FsError(errno.EEXIST)
        self._dirs.add(key)

    def rmdir(self, path: str) -> None:
        key = _key(path)
        if not self._is_dir(key):
            raise FsError(errno.ENOTDIR if self.kv.get_kv(key) is not None else errno.ENOENT)
        if self.kv.get_prefix(key + b"/", limit=1, keys_only=True).count or any(
            d.startswith(key + b"/") for d in self._dirs
        ):
            raise FsError(errno.ENOTEMPTY)
        self._dirs.discard(key)

    def unlink(self, path: str) -> None:
        key = _key(path)
        if self._is_dir(key):
            raise FsError(errno.EISDIR)
        if not self.kv.delete(key):
            raise FsError(errno.ENOENT)

    def rename(self, old: str, new: str, flags: int = 0) -> None:
        if flags & RENAME_EXCHANGE:
            raise FsError(errno.EINVAL, "RENAME_EXCHANGE is not offered by the kv view")
        src, dst = _key(old), _key(new)
        if self._is_dir(src):
            self._rename_dir(src, dst)
            return
        kv = self.kv.get_kv(src)
        if kv is None:
            raise FsError(errno.ENOENT)
        if self._is_dir(dst):
            raise FsError(errno.EISDIR)
        compare = [ModRevision(src) == kv.mod_revision]
        if flags & RENAME_NOREPLACE:
            compare.append(CreateRevision(dst) == 0)
        result = self.kv.txn(compare, [Delete(src), Put(dst, kv.value)])
        if not result.succeeded:
            raise FsError(
                errno.EEXIST if flags & RENAME_NOREPLACE and self.kv.get_kv(dst) else errno.EBUSY
            )
        self._keyed(dst)

    def _rename_dir(self, src: bytes, dst: bytes) -> None:
        if dst.startswith(src + b"/"):
            raise FsError(errno.EINVAL)
        if self.kv.get_kv(dst) is not None:
            raise FsError(errno.ENOTDIR)
        if self.kv.get_prefix(dst + b"/", limit=1, keys_only=True).count:
            raise FsError(errno.ENOTEMPTY)
        kvs = self.kv.get_prefix(src + b"/", limit=MAX_RENAME_KEYS + 1).kvs
        if len(kvs) > MAX_RENAME_KEYS:
            raise FsError(
                errno.EXDEV, "too many keys for one transaction"
            )  # mv then copies and deletes
        compare = [ModRevision(kv.key) == kv.mod_revision for kv in kvs]
        ops: list[Any] = []
        for kv in kvs:
            ops += [Delete(kv.key), Put(dst + kv.key[len(src) :], kv.value)]
        if ops and not self.kv.txn(compare, ops).succeeded:
            raise FsError(errno.EBUSY)
        for d in [d for d in self._dirs if d == src or d.startswith(src + b"/")]:
            self._dirs.discard(d)
            self._dirs.add(dst + d[len(src) :])
        if not kvs:
            self._dirs.add(dst)

    def _refuse(self, *args: Any) -> None:
        raise FsError(errno.EPERM, "the kv view has no links, modes or owners")

    symlink = link = chmod = chown = _refuse

    def readlink(self, path: str) -> str:
        raise FsError(errno.EINVAL)

    def mknod(self, path: str, mode: int, rdev: int, uid: int, gid: int) -> None:
        if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
            raise FsError(errno.EPERM)
        self.release(self.create(path, mode, os.O_WRONLY | os.O_EXCL, uid, gid))

    def utimens(
        self, path: str | None, atime: TimeSpec, mtime: TimeSpec, fh: int | None = None
    ) -> None:
        pass  # times follow the key's revisions; accepted so that touch and cp -p work

    def setxattr(self, *args: Any) -> None:
        raise FsError(errno.EOPNOTSUPP)

    getxattr = removexattr = setxattr

    def listxattr(self, path: str) -> list[str]:
        return []

    # -- contents --

    def _new_handle(self, key: bytes, data: bytes, dirty: bool) -> int:
        with self._lock:
            fh = self._next_fh
            self._next_fh += 1
            self._handles[fh] = KVHandle(key, bytearray(data), dirty)
        return fh

    def _handle(self, fh: int) -> KVHandle:
        h = self._handles.get(fh)
        if h is None:
            raise FsError(errno.EBADF)
        return h

    def open(self, path: str, flags: int) -> tuple[int, bool]:
        key = _key(path)
        if self._is_dir(key):
            raise FsError(errno.EISDIR)
        value = self.kv.get(key)
        if value is None:
            raise FsError(errno.ENOENT)
        trunc = bool(flags & os.O_TRUNC) and flags & os.O_ACCMODE != os.O_RDONLY
        return self._new_handle(key, b"" if trunc else value, trunc), False

    def create(self, path: str, mode: int, flags: int, uid: int, gid: int) -> int:
        key = _key(path)
        if self._is_dir(key):
            raise FsError(errno.EISDIR)
        try:
            self.kv.create(key, b"")
        except kvstore.KeyExists:
            if flags & os.O_EXCL:
                raise FsError(errno.EEXIST) from None
            return self.open(path, flags)[0]
        self._keyed(key)
        return self._new_handle(key, b"", False)

    def _keyed(self, key: bytes) -> None:
        """A key exists below the directories made by mkdir on its path: they stop living here."""
        parts = key.split(b"/")[:-1]
        for i in range(1, len(parts) + 1):
            self._dirs.discard(b"/".join(parts[:i]))

    def read(self, fh: int, size: int, offset: int) -> bytes:
        h = self._handle(fh)
        with h.lock:
            return bytes(h.data[offset : offset + size])

    def write(self, fh: int, data: bytes, offset: int) -> int:
        h = self._handle(fh)
        if offset + len(data) > kvstore.MAX_VALUE_BYTES:
            raise FsError(errno.EFBIG)
        with h.lock:
            if len(h.data) < offset:
                h.data += b"\0" * (offset - len(h.data))
            h.data[offset : offset + len(data)] = data
            h.dirty = True
        return len(data)

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> None:
        if length > kvstore.MAX_VALUE_BYTES:
            raise FsError(errno.EFBIG)
        if fh is not None and fh in self._handles:
            h = self._handles[fh]
            with h.lock:
                del h.data[length:]
                h.data += b"\0" * (length - len(h.data))
                h.dirty = True
            return
        if path is None:
            raise FsError(errno.EBADF)
        fh = self.open(path, os.O_RDWR)[0]
        try:
            self.truncate(None, length, fh)
        finally:
            self.release(fh)

    def flush(self, fh: int) -> None:
        h = self._handles.get(fh)
        if h is None:
            return
        with h.lock:
            if h.dirty:
                result = self.kv.put(h.key, bytes(h.data))
                self._time(result.revision)
                h.dirty = False
            self._keyed(h.key)

    fsync = flush

    def release(self, fh: int) -> None:
        try:
            self.flush(fh)
        finally:
            with self._lock:
                self._handles.pop(fh, None)

    def fallocate(self, fh: int, mode: int, offset: int, length: int) -> None:
        raise FsError(errno.EOPNOTSUPP)
