"""A LazyFS-like pass-through FUSE filesystem: what was not fsynced is lost on a crash.

SIGKILL of a node leaves the kernel's page cache intact, so it never shows a missing
fsync. `LazyMount` mounts a directory through a FUSE daemon that keeps every write,
truncate and extension of a file in its own memory until that file is fsynced
(``fsync``/``fdatasync``, or any write on a handle opened with ``O_SYNC``/``O_DSYNC``);
`LazyMount.crash()` kills the daemon, so what was not synced is gone, as in a power
loss, and mounts the directory again::

    with LazyMount(backing_dir, mountpoint) as disk:
        ... run nodes whose data dirs are under `mountpoint`, SIGKILL them ...
        dropped = disk.crash()        # unsynced bytes lost; mounted again, empty cache
        ... restart the nodes on the same dirs ...

Rules (Jepsen's LazyFS keeps the same page cache model): file *contents and sizes*
are durable only once fsynced; directory operations (create, mkdir, unlink, rename,
symlink) reach the backing directory at once, as if every directory were fsynced
after each change (so the model is lenient on metadata, strict on data). Reads see
the unsynced writes. Shared writable mmap works (the kernel writes dirty pages back
as writes, kept like any other until an ``msync``/fsync). ``O_DIRECT`` opens work
(the daemon does the I/O itself).

Run the daemon alone with ``python -m cowsqlpy.testing.lazyfs BACKING MOUNTPOINT``.
It needs ``/dev/fuse``, ``fusermount3`` (Debian fuse3) and mfusepy: `unavailable()`
says what is missing.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .wait import wait_for

__all__ = ["LazyFS", "LazyMount", "unavailable"]

PAGE = 4096
_SYNC_FLAGS = os.O_SYNC | os.O_DSYNC
FALLOC_FL_KEEP_SIZE = 0x01
STATS_NAME = ".lazyfs-stats"  # read it (a JSON object) to see the daemon's counters


def unavailable() -> str | None:
    """Why a `LazyMount` cannot work here (None: it can)."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing (no FUSE in this kernel or container)"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not installed (Debian package fuse3)"
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as exc:  # OSError: libfuse3 itself is missing
        return f"mfusepy cannot load libfuse3: {exc}"
    return None


@dataclass
class _Pending:
    """A file's state as the mount shows it, beyond what the backing file holds."""

    size: int
    valid: int  # bytes of the backing file still part of the file (a shrink cuts it)
    pages: dict[int, bytearray] = field(default_factory=dict)  # page number -> PAGE bytes


class LazyFS:
    """The FUSE operations (mfusepy's path API) over `root`; writes wait in `_pending`."""

    use_ns = True

    def __init__(self, root: str) -> None:
        self.root = os.path.realpath(root)
        self._lock = threading.RLock()
        self._pending: dict[str, _Pending] = {}  # by path in the mount
        self._sync_handles: set[int] = set()
        self.stats = {
            "writes": 0,
            "dsync_writes": 0,
            "fsyncs": 0,
            "synced_bytes": 0,
            "direct_opens": 0,
            "sync_opens": 0,
        }

    def _p(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    # -- the page cache ----------------------------------------------------------

    def _state(self, path: str) -> _Pending:
        state = self._pending.get(path)
        if state is None:
            size = os.lstat(self._p(path)).st_size
            state = self._pending[path] = _Pending(size, size)
        return state

    def _page(self, path: str, state: _Pending, number: int) -> bytearray:
        page = state.pages.get(number)
        if page is None:
            page = bytearray(PAGE)
            start = number * PAGE
            if start < state.valid:  # bytes beyond it read as zeros
                with open(self._p(path), "rb") as f:
                    f.seek(start)
                    data = f.read(min(PAGE, state.valid - start))
                page[: len(data)] = data
            state.pages[number] = page
        return page

    def _write(self, path: str, data: bytes, offset: int) -> None:
        state = self._state(path)
        pos = 0
        while pos < len(data):
            number, start = divmod(offset + pos, PAGE)
            n = min(PAGE - start, len(data) - pos)
            self._page(path, state, number)[start : start + n] = data[pos : pos + n]
            pos += n
        state.size = max(state.size, offset + len(data))
        self.stats["writes"] += 1

    def _resize(self, path: str, length: int) -> None:
        state = self._state(path)
        state.valid = min(state.valid, length)
        if length < state.size:
            for number in [n for n in state.pages if n * PAGE >= length]:
                del state.pages[number]
            last = state.pages.get(length // PAGE)
            if last is not None:
                last[length % PAGE :] = bytes(PAGE - length % PAGE)
            elif length % PAGE:  # the backing file's tail beyond `length` must read as zeros
                page = self._page(path, state, length // PAGE)
                page[length % PAGE :] = bytes(PAGE - length % PAGE)
        state.size = length

    def _sync(self, path: str) -> None:
        state = self._pending.pop(path, None)
        if state is None:
            return
        with open(self._p(path), "r+b") as f:
            f.truncate(state.valid)  # what a shrink cut off must come back as zeros
            f.truncate(state.size)
            for number, page in sorted(state.pages.items()):
                start = number * PAGE
                if start >= state.size:
                    continue
                f.seek(start)
                f.write(page[: min(PAGE, state.size - start)])
                self.stats["synced_bytes"] += min(PAGE, state.size - start)
        self.stats["fsyncs"] += 1

    def _stats_bytes(self) -> bytes:
        with self._lock:
            unsynced = {path: len(s.pages) * PAGE for path, s in self._pending.items()}
            return json.dumps(
                {
                    **self.stats,
                    "unsynced_pages_bytes": sum(unsynced.values()),
                    "unsynced_files": unsynced,
                }
            ).encode()

    # -- operations --------------------------------------------------------------

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        if path == "/" + STATS_NAME:
            return {"st_mode": 0o100444, "st_nlink": 1, "st_size": len(self._stats_bytes())}
        st = os.lstat(self._p(path))
        attrs = {
            k: getattr(st, k)
            for k in ("st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks")
        }
        attrs |= {
            "st_atime": st.st_atime_ns,
            "st_mtime": st.st_mtime_ns,
            "st_ctime": st.st_ctime_ns,
        }
        with self._lock:
            state = self._pending.get(path)
            if state is not None:
                attrs["st_size"] = state.size
                attrs["st_blocks"] = max(st.st_blocks, (state.size + 511) // 512)
        return attrs

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", *os.listdir(self._p(path))]

    def open(self, path: str, flags: int) -> int:
        if path == "/" + STATS_NAME:
            return 0
        if flags & os.O_DIRECT:
            self.stats["direct_opens"] += 1
        with self._lock:
            fd = os.open(self._p(path), os.O_RDONLY)  # the handle only proves the file exists
            if flags & os.O_TRUNC:
                self._resize(path, 0)
            if flags & _SYNC_FLAGS:
                self.stats["sync_opens"] += 1
                self._sync_handles.add(fd)
        return fd

    def create(self, path: str, mode: int, flags: int = 0) -> int:
        fd = os.open(self._p(path), os.O_CREAT | os.O_WRONLY, mode)  # creation is durable at once
        os.close(fd)
        return self.open(path, flags & ~os.O_CREAT)

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        if path == "/" + STATS_NAME:
            return self._stats_bytes()[offset : offset + size]
        with self._lock:
            state = self._pending.get(path)
            if state is None:
                return os.pread(fh, size, offset)
            end = min(offset + size, state.size)
            out = bytearray()
            pos = offset
            while pos < end:
                number, start = divmod(pos, PAGE)
                n = min(PAGE - start, end - pos)
                page = state.pages.get(number)
                if page is not None:
                    out += page[start : start + n]
                else:
                    chunk = os.pread(fh, max(0, min(n, state.valid - pos)), pos)
                    out += chunk + bytes(n - len(chunk))  # a hole left by an extension
                pos += n
            return bytes(out)

    def write(self, path: str, data: bytes, offset: int, fh: int, flags: int = 0) -> int:
        """`flags`: the kernel's flags of this write (O_DSYNC for pwritev2's RWF_DSYNC)."""
        with self._lock:
            self._write(path, data, offset)
            if flags & os.O_DSYNC:
                self.stats["dsync_writes"] += 1
            if fh in self._sync_handles or flags & os.O_DSYNC:
                self._sync(path)
        return len(data)

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        with self._lock:
            self._resize(path, length)
        return 0

    def fallocate(self, path: str, mode: int, offset: int, size: int, fh: int) -> int:
        if mode & ~FALLOC_FL_KEEP_SIZE:
            raise OSError(errno.EOPNOTSUPP, "lazyfs: only plain fallocate")
        with self._lock:
            state = self._state(path)
            if not mode & FALLOC_FL_KEEP_SIZE and offset + size > state.size:
                self._resize(path, offset + size)
        return 0

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        with self._lock:
            self._sync(path)
        return 0

    def flush(self, path: str, fh: int) -> int:
        return 0  # close() syncs nothing

    def release(self, path: str, fh: int) -> int:
        if path != "/" + STATS_NAME:
            with self._lock:
                self._sync_handles.discard(fh)
            os.close(fh)
        return 0

    def unlink(self, path: str) -> int:
        with self._lock:
            os.unlink(self._p(path))
            self._pending.pop(path, None)
        return 0

    def rename(self, old: str, new: str, flags: int = 0) -> int:
        if flags:
            raise OSError(errno.EINVAL, "lazyfs: rename flags are not supported")
        with self._lock:
            os.rename(self._p(old), self._p(new))
            self._pending.pop(new, None)
            moved = {p: s for p, s in self._pending.items() if p == old or p.startswith(old + "/")}
            for p, s in moved.items():
                del self._pending[p]
                self._pending[new + p[len(old) :]] = s
        return 0

    def mkdir(self, path: str, mode: int) -> int:
        os.mkdir(self._p(path), mode)
        return 0

    def rmdir(self, path: str) -> int:
        os.rmdir(self._p(path))
        return 0

    def symlink(self, target: str, source: str) -> int:
        os.symlink(source, self._p(target))
        return 0

    def readlink(self, path: str) -> str:
        return os.readlink(self._p(path))

    def link(self, target: str, source: str) -> int:
        raise OSError(errno.EPERM, "lazyfs: hard links are not supported")

    def chmod(self, path: str, mode: int, fh: Any = None) -> int:
        os.chmod(self._p(path), mode)
        return 0

    def chown(self, path: str, uid: int, gid: int, fh: Any = None) -> int:
        os.lchown(self._p(path), uid, gid)
        return 0

    def utimens(self, path: str, times: Any = None, fh: Any = None) -> int:
        return 0  # times are not modelled

    def access(self, path: str, amode: int) -> int:
        if path != "/" + STATS_NAME and not os.access(self._p(path), amode):
            raise OSError(errno.EACCES, "lazyfs: access denied")
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        sv = os.statvfs(self.root)
        keys = (
            "f_bsize",
            "f_frsize",
            "f_blocks",
            "f_bfree",
            "f_bavail",
            "f_files",
            "f_ffree",
            "f_namemax",
        )
        return {k: getattr(sv, k) for k in keys}


def serve(root: str, mountpoint: str) -> None:
    """Mount `root` lazily at `mountpoint` and serve until unmounted; blocks."""
    import mfusepy

    from fusefs.binding import FUSE3  # rename flags and truncate's file handle passed on

    class LazyFUSE(FUSE3):
        def write(self, path: bytes | None, buf: Any, size: int, offset: int, fip: Any) -> int:
            # mfusepy drops the write's own flags: RWF_DSYNC arrives only as O_DSYNC there
            fi = fip.contents
            name = None if path is None else path.decode(self.encoding, self.errors)
            result: int = self.operations.write(
                name, ctypes.string_at(buf, size), offset, fi.fh, fi.flags
            )
            return result

    ops = LazyFS(root)
    operations = mfusepy.Operations()
    operations.use_ns = True

    def kernel_errors(method: Any) -> Any:
        @functools.wraps(method)  # mfusepy reads create's signature
        def call(*args: Any) -> Any:
            try:
                return method(*args)
            except OSError as exc:
                raise mfusepy.FuseOSError(exc.errno or errno.EIO) from exc

        return call

    for name in (n for n in dir(LazyFS) if not n.startswith("_") and callable(getattr(LazyFS, n))):
        setattr(operations, name, kernel_errors(getattr(ops, name)))
    LazyFUSE(operations, mountpoint, foreground=True, fsname="lazyfs", default_permissions=True)


# -- the harness side ----------------------------------------------------------------


class LazyMount:
    """A lazy mount of `backing` at `mountpoint`, served by a daemon process.

    :raises RuntimeError: the mount did not come up (the message has the daemon's output;
        check `unavailable()` first to skip where FUSE is missing).
    """

    def __init__(
        self,
        backing: str | os.PathLike[str],
        mountpoint: str | os.PathLike[str],
        *,
        timeout: float = 15.0,
    ) -> None:
        self.backing = os.fspath(backing)
        self.mountpoint = os.fspath(mountpoint)
        self.timeout = timeout
        os.makedirs(self.backing, exist_ok=True)
        os.makedirs(self.mountpoint, exist_ok=True)
        self.log_path = (
            self.backing.rstrip("/") + ".lazyfs.log"
        )  # beside, not inside: it must survive
        self.crashes = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._mount()

    def _mount(self) -> None:
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "cowsqlpy.testing.lazyfs", self.backing, self.mountpoint],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        try:
            wait_for(
                lambda: (
                    self._mounted()
                    or self._proc is None
                    or self._proc.poll() is not None
                ),
                self.timeout,
                f"lazyfs mount at {self.mountpoint}",
            )
        except TimeoutError:
            self._kill()
            raise RuntimeError(
                f"lazyfs did not mount {self.mountpoint}: {self._log_tail()}"
            ) from None
        if not self._mounted():
            raise RuntimeError(
                f"lazyfs exited before mounting {self.mountpoint}: {self._log_tail()}"
            )

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-4000:].decode(errors="replace")
        except OSError:
            return "(no log)"

    def stats(self) -> dict[str, Any]:
        """The daemon's counters (writes, dsync_writes, fsyncs, synced_bytes, ...),
        ``unsynced_pages_bytes`` and ``unsynced_files`` (path in the mount -> bytes)."""
        with open(os.path.join(self.mountpoint, STATS_NAME), "rb") as f:
            result: dict[str, Any] = json.loads(f.read())
        return result

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait(10)
        self._proc = None
        # the dead daemon leaves a mount that answers ENOTCONN (os.path.ismount cannot
        # stat it): detach it, which drops the kernel's cached pages of the mount too
        for _ in range(50):
            if not self._mounted():
                break
            subprocess.run(["fusermount3", "-u", "-z", self.mountpoint], capture_output=True)
            time.sleep(0.05)

    def _mounted(self) -> bool:
        target = os.path.realpath(self.mountpoint)
        with open("/proc/self/mountinfo") as f:  # field 5: the mount point (octal escapes)
            return any(line.split()[4].encode().decode("unicode_escape") == target for line in f)

    def crash(self) -> dict[str, Any]:
        """A power loss: every byte not fsynced is lost (the daemon is SIGKILLed), then
        the directory is mounted again. Processes that use the mount must be dead first
        (a live one would keep the old, dead mount open). Returns the counters the
        daemon had just before (how much was dropped: ``unsynced_pages_bytes``)."""
        before = self.stats()
        self._kill()
        self.crashes += 1
        self._mount()
        return before

    def close(self) -> None:
        """Unmount (what was not synced is dropped, as by a crash) and stop the daemon."""
        self._kill()

    def __enter__(self) -> LazyMount:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print("usage: python -m cowsqlpy.testing.lazyfs BACKING MOUNTPOINT", file=sys.stderr)
        sys.exit(2)
    serve(sys.argv[1], sys.argv[2])
