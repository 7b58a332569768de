"""fusefs: a POSIX filesystem (and a key/value view) served from a cowsqlpy cluster.

Inodes, directory entries, data chunks, symlink targets and xattrs live in one
database of the replicated engine; any machine that reaches the cluster mounts it.
See docs/fusefs.md.
"""

from .errors import FsError, to_errno
from .ops import FileSystem
from .schema import FORMAT_VERSION, NotAFilesystemError, Superblock, mkfs, read_superblock
from .store import Store

__all__ = [
    "FileSystem",
    "FsError",
    "FORMAT_VERSION",
    "NotAFilesystemError",
    "Store",
    "Superblock",
    "mkfs",
    "read_superblock",
    "to_errno",
]
