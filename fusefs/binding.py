"""The FUSE face of a `FileSystem` (or any object with its methods), through mfusepy on
libfuse 3, with the small fixes mfusepy needs:

* utimens: mfusepy folds each timespec into one number, losing UTIME_NOW/UTIME_OMIT;
  `FUSE3` reads the timespecs itself.
* rename: mfusepy drops the flags (RENAME_NOREPLACE/RENAME_EXCHANGE would silently
  become plain renames); `FUSE3` passes them on.
* O_DIRECT: mfusepy passes the flag through and the page cache still serves the
  file; open() here sets direct_io for such handles.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import mfusepy

from .errors import FsError, to_errno
from .ops import UTIME_NOW, TimeSpec

log = logging.getLogger("fusefs.binding")

# <linux/stat.h>: the tv_nsec values that mean "now" and "leave alone"
UTIME_NOW_NS = (1 << 30) - 1
UTIME_OMIT_NS = (1 << 30) - 2

# <fuse.h>: readdir's flag (the kernel sent READDIRPLUS) and filler's (attributes are full)
FUSE_READDIR_PLUS = 1
FUSE_FILL_DIR_PLUS = 2
# <fuse_common.h>
FUSE_CAP_READDIRPLUS = 1 << 13
FUSE_CAP_READDIRPLUS_AUTO = 1 << 14

F = TypeVar("F", bound=Callable[..., Any])
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")  # /proc/self/mountinfo writes a space as \040


class _Context(ctypes.Structure):
    _fields_ = [("fuse", ctypes.c_void_p)]  # the head of struct fuse_context


class KernelCache:
    """Tells the kernel that a path's cached attributes and pages are stale
    (libfuse 3's fuse_invalidate_path, which mfusepy does not wrap)."""

    def __init__(self) -> None:
        self._lib = ctypes.CDLL(ctypes.util.find_library("fuse3") or "libfuse3.so.3")
        self._lib.fuse_get_context.restype = ctypes.POINTER(_Context)
        self._lib.fuse_invalidate_path.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        self._fuse: int | None = None

    def bind(self) -> None:
        """Call from inside a FUSE callback (init): remembers this mount's struct fuse."""
        self._fuse = self._lib.fuse_get_context().contents.fuse

    def invalidate(self, paths: list[str]) -> None:
        if self._fuse is None:
            return
        for path in paths:
            self._lib.fuse_invalidate_path(self._fuse, os.fsencode(path))  # -ENOENT: nothing cached


@dataclass(frozen=True)
class MountOptions:
    """What the kernel may cache (seconds), and who may use the mount.

    libfuse's path API gives each hard-link name its own kernel node, so after a
    link/unlink through one name the daemon invalidates the others' cached attributes;
    open() invalidates a file's attributes and pages when another mount changed it
    (close-to-open). A stat of a file another mount changed may be attr_timeout old.
    No negative caching: a name another mount created is seen at once."""

    attr_timeout: float = 1.0
    entry_timeout: float = 1.0
    negative_timeout: float = 0.0
    allow_other: bool = False
    debug: bool = False
    fsname: str = "cowsqlfs"
    # the kernel's read-ahead for the mount (KiB; 0: its default, 128): each FUSE read is
    # one window, so 1 MiB is one request per MiB instead of eight (root only: sysfs)
    read_ahead_kb: int = 1024


def _errno(fn: F) -> F:
    """Every failure leaves as an OSError with the errno from the one table (errors.py)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FsError:
            raise
        except Exception as exc:
            raise FsError(to_errno(exc), str(exc)) from exc

    return wrapper  # type: ignore[return-value]


def _time(ts: Any) -> TimeSpec:
    if ts.tv_nsec == UTIME_NOW_NS:
        return UTIME_NOW
    if ts.tv_nsec == UTIME_OMIT_NS:
        return None
    return int(ts.tv_sec) * 1_000_000_000 + int(ts.tv_nsec)


class FUSE3(mfusepy.FUSE):
    """mfusepy.FUSE with rename flags and utimens timespecs passed through."""

    def rename_fuse_3(self, old: bytes, new: bytes, flags: int) -> int:
        result: int = self.operations.rename(
            old.decode(self.encoding, self.errors), new.decode(self.encoding, self.errors), flags
        )
        return result

    def readdir_fuse_3(
        self, path: bytes | None, buf: Any, filler: Any, offset: int, fip: Any, flags: int
    ) -> int:
        # mfusepy ignores READDIRPLUS. Entries given with every attribute and an offset
        # (libfuse sends a plus entry's attributes only with one: without, its node id
        # is 0 and the kernel drops them) leave the kernel with them: `ls -l` and
        # `find` cost no lookup per entry.
        plus = FUSE_FILL_DIR_PLUS if flags & FUSE_READDIR_PLUS else 0
        listing = getattr(self.operations, "listing", None)
        fh = fip.contents.fh
        items = (
            listing(self._path(path), fh, offset)
            if listing is not None
            else self.operations.readdir(self._path(path), fh)
        )
        for at, item in enumerate(items, offset + 1):
            name, attrs = (item, {}) if isinstance(item, str) else item[:2]
            st = mfusepy.c_stat()
            mfusepy.set_st_attrs(st, attrs, use_ns=True)
            full = plus if "st_nlink" in attrs else 0
            next_offset = at if listing is not None else 0
            if filler(buf, name.encode(self.encoding, self.errors), st, next_offset, full) != 0:
                break
        return 0

    def _path(self, path: bytes | None) -> str | None:
        return None if path is None else path.decode(self.encoding, self.errors)

    # mfusepy drops the file handle of these three: an unlinked open file (hard_remove)
    # has no path, so they would fail on it.
    def truncate_fuse_3(self, path: bytes | None, length: int, fip: Any) -> int:
        result: int = self.operations.truncate(
            self._path(path), length, fip.contents.fh if fip else None
        )
        return result

    def chmod_fuse_3(self, path: bytes | None, mode: int, fip: Any) -> int:
        result: int = self.operations.chmod(
            self._path(path), mode, fip.contents.fh if fip else None
        )
        return result

    def chown_fuse_3(self, path: bytes | None, uid: int, gid: int, fip: Any) -> int:
        # mfusepy's _chown turns an overflowed -1 back into -1
        uid = -1 if ctypes.c_uint32(uid + 1).value == 0 else uid
        gid = -1 if ctypes.c_uint32(gid + 1).value == 0 else gid
        result: int = self.operations.chown(
            self._path(path), uid, gid, fip.contents.fh if fip else None
        )
        return result

    def utimens_fuse_3(self, path: bytes | None, buf: Any, fip: Any) -> int:
        if buf:
            atime, mtime = _time(buf.contents.actime), _time(buf.contents.modtime)
        else:
            atime = mtime = UTIME_NOW
        fh = fip.contents.fh if fip else None
        result: int = self.operations.utimens(self._path(path), (atime, mtime), fh)
        return result


class Operations(mfusepy.Operations):
    """Adapts a FileSystem's methods to mfusepy's callbacks (raw_fi: handles are
    fuse_file_info, so open can set keep_cache and direct_io)."""

    use_ns = True

    def __init__(self, fs: Any, options: MountOptions, mountpoint: str = "") -> None:
        self.fs = fs
        self.options = options
        self.mountpoint = mountpoint
        self._read_ahead_due = bool(mountpoint and options.read_ahead_kb)
        self.kernel = KernelCache()
        self._listings: dict[int, list[tuple[str, dict[str, int], int]]] = {}  # by dir handle
        if hasattr(fs, "on_stale"):
            fs.on_stale = self.kernel.invalidate

    @staticmethod
    def _ctx() -> tuple[int, int]:
        uid, gid, _pid = mfusepy.fuse_get_context()
        return uid, gid

    def init_with_config(self, conn_info: Any, config: Any) -> None:
        self.kernel.bind()
        if conn_info is not None and conn_info.capable & FUSE_CAP_READDIRPLUS:
            # READDIRPLUS for every batch of a listing, not the first one only ("auto")
            conn_info.want = (conn_info.want | FUSE_CAP_READDIRPLUS) & ~FUSE_CAP_READDIRPLUS_AUTO
        if config is not None:
            config.attr_timeout = self.options.attr_timeout
            config.entry_timeout = self.options.entry_timeout
            config.negative_timeout = self.options.negative_timeout
            config.use_ino = 1
            # libfuse's path API loses the path of an unlinked open file (fstat: ESTALE)
            # unless it renames it to a hidden name, which a filesystem must then handle.
            config.hard_remove = 0 if getattr(self.fs, "hides_unlinked_open_files", False) else 1

    def destroy(self, path: str) -> None:
        self.fs.close()

    @_errno
    def getattr(self, path: str | None, fh: Any = None) -> dict[str, int]:
        result: dict[str, int] = self.fs.getattr(path, None if fh is None else fh.fh)
        return result

    @_errno
    def readdir(self, path: str | None, fh: int) -> list[tuple[str, dict[str, int], int]]:
        return [(name, attrs, 0) for name, attrs in self.fs.readdir(path, fh)]

    def listing(
        self, path: str | None, fh: int, offset: int
    ) -> list[tuple[str, dict[str, int], int]]:
        """The entries of an open directory from `offset` on: read at offset 0 (opendir
        or rewinddir), then served from that listing until releasedir."""
        if offset == 0 or fh not in self._listings:
            self._listings[fh] = self.readdir(path, fh)
        return self._listings[fh][offset:]

    @_errno
    def opendir(self, path: str) -> int:
        result: int = self.fs.opendir(path)
        return result

    @_errno
    def releasedir(self, path: str | None, fh: int) -> int:
        self._listings.pop(fh, None)
        self.fs.releasedir(fh)
        return 0

    @_errno
    def readlink(self, path: str) -> str:
        result: str = self.fs.readlink(path)
        return result

    @_errno
    def mknod(self, path: str, mode: int, dev: int) -> int:
        self.fs.mknod(path, mode, dev, *self._ctx())
        return 0

    @_errno
    def mkdir(self, path: str, mode: int) -> int:
        self.fs.mkdir(path, mode, *self._ctx())
        return 0

    @_errno
    def symlink(self, target: str, source: str) -> int:
        self.fs.symlink(target, source, *self._ctx())  # mfusepy: (new link path, its target)
        return 0

    @_errno
    def link(self, target: str, source: str) -> int:
        self.fs.link(target, source)  # mfusepy: (new name, existing file)
        return 0

    @_errno
    def unlink(self, path: str) -> int:
        self.fs.unlink(path)
        return 0

    @_errno
    def rmdir(self, path: str) -> int:
        self.fs.rmdir(path)
        return 0

    @_errno
    def rename(self, old: str, new: str, flags: int = 0) -> int:
        self.fs.rename(old, new, flags)
        return 0

    @_errno
    def chmod(self, path: str | None, mode: int, fh: int | None = None) -> int:
        self.fs.chmod(path, mode, fh)
        return 0

    @_errno
    def chown(self, path: str | None, uid: int, gid: int, fh: int | None = None) -> int:
        self.fs.chown(path, uid, gid, fh)
        return 0

    @_errno
    def utimens(
        self,
        path: str | None,
        times: tuple[TimeSpec, TimeSpec] | None = None,
        fh: int | None = None,
    ) -> int:
        atime, mtime = times if times is not None else (UTIME_NOW, UTIME_NOW)
        self.fs.utimens(path, atime, mtime, fh)
        return 0

    @_errno
    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        self.fs.truncate(path, length, fh)
        return 0

    def _opened(self, fi: Any, fh: int, keep_cache: bool) -> int:
        fi.fh = fh
        if fi.flags & os.O_DIRECT:
            fi.direct_io = 1  # mfusepy would let the page cache serve an O_DIRECT handle
        else:
            fi.keep_cache = 1 if keep_cache else 0
        return 0

    def _raise_read_ahead(self) -> None:
        """Set the mount's read-ahead window. The kernel takes at most its own offer
        (128 KiB) from libfuse's init reply, and caps what sysfs held before that reply;
        done at the first open, which the kernel sends only after the reply."""
        self._read_ahead_due = False
        try:
            with open(bdi_read_ahead(self.mountpoint), "w") as f:
                f.write(str(self.options.read_ahead_kb))
        except OSError as exc:  # not root, or no sysfs: the kernel's default stays
            log.info("read-ahead of %s left at the kernel's: %s", self.mountpoint, exc)

    @_errno
    def open(self, path: str, fi: Any) -> int:
        if self._read_ahead_due:
            self._raise_read_ahead()
        fh, keep = self.fs.open(path, fi.flags)
        if not keep:  # changed since this mount last saw it: drop the kernel's attributes too
            self.kernel.invalidate([path])
        return self._opened(fi, fh, keep)

    @_errno
    def create(self, path: str, mode: int, fi: Any) -> int:
        if self._read_ahead_due:
            self._raise_read_ahead()
        fh = self.fs.create(path, mode, fi.flags, *self._ctx())
        return self._opened(fi, fh, True)

    @_errno
    def read(self, path: str | None, size: int, offset: int, fi: Any) -> bytes:
        result: bytes = self.fs.read(fi.fh, size, offset)
        return result

    @_errno
    def write(self, path: str | None, data: bytes, offset: int, fi: Any) -> int:
        result: int = self.fs.write(fi.fh, data, offset)
        return result

    @_errno
    def flush(self, path: str | None, fi: Any) -> int:
        self.fs.flush(fi.fh)
        return 0

    @_errno
    def fsync(self, path: str | None, datasync: int, fi: Any) -> int:
        self.fs.fsync(fi.fh)
        return 0

    @_errno
    def release(self, path: str | None, fi: Any) -> int:
        self.fs.release(fi.fh)
        return 0

    @_errno
    def fallocate(self, path: str | None, mode: int, offset: int, size: int, fi: Any) -> int:
        self.fs.fallocate(fi.fh, mode, offset, size)
        return 0

    @_errno
    def statfs(self, path: str) -> dict[str, int]:
        result: dict[str, int] = self.fs.statfs()
        return result

    @_errno
    def setxattr(self, path: str, name: str, value: bytes, options: int, position: int = 0) -> int:
        self.fs.setxattr(path, name, value, options)
        return 0

    @_errno
    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        result: bytes = self.fs.getxattr(path, name)
        return result

    @_errno
    def listxattr(self, path: str) -> list[str]:
        result: list[str] = self.fs.listxattr(path)
        return result

    @_errno
    def removexattr(self, path: str, name: str) -> int:
        self.fs.removexattr(path, name)
        return 0


def bdi_read_ahead(mountpoint: str) -> str:
    """The sysfs file of the kernel's read-ahead (KiB) for the filesystem mounted at
    `mountpoint`, found in /proc/self/mountinfo (a stat of a FUSE mount from its own
    daemon would wait on that daemon).

    :raises FileNotFoundError: nothing is mounted there.
    """
    target = os.path.realpath(mountpoint)
    dev = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()  # id, parent, major:minor, root, mountpoint, ...
            if _OCTAL_ESCAPE.sub(lambda m: chr(int(m[1], 8)), fields[4]) == target:
                dev = fields[2]  # the last mount there is the one on top
    if dev is None:
        raise FileNotFoundError(f"nothing mounted at {mountpoint}")
    return f"/sys/class/bdi/{dev}/read_ahead_kb"


def serve(fs: Any, mountpoint: str, options: MountOptions | None = None) -> None:
    """Mount `fs` at `mountpoint` and serve it until unmounted (or SIGINT/SIGTERM/SIGHUP,
    which libfuse turns into a clean unmount); blocks. Multi-threaded, default_permissions."""
    options = options or MountOptions()
    kwargs: dict[str, Any] = dict(
        foreground=True, default_permissions=True, fsname=options.fsname, subtype="cowsqlfs"
    )
    if options.allow_other:
        kwargs["allow_other"] = True
    if options.debug:
        kwargs["debug"] = True
    try:
        FUSE3(Operations(fs, options, mountpoint), mountpoint, raw_fi=True, **kwargs)
    except RuntimeError as exc:
        # fuse_main returns 8 when a signal ended the loop: libfuse unmounted, destroy flushed.
        if exc.args != (8,):
            raise
        log.info("unmounted on a signal")
