"""cffi out-of-line API-mode builder for the engine binding (`cowsqlpy._engine`).

Every engine symbol lives here and in `cowsqlpy/node.py`, so a libcowsql build
(`cowsql_*` names) can later be added in one place.
"""

import shutil
import subprocess
import sys

from cffi import FFI

PKG = "dqlite"
DEBIAN_HINT = "install the Debian package 'libdqlite-dev' (apt-get install libdqlite-dev pkg-config)"


def _pkg_config(*args: str) -> list[str]:
    if shutil.which("pkg-config") is None:
        sys.exit(f"cowsqlpy: pkg-config not found; {DEBIAN_HINT}")
    proc = subprocess.run(["pkg-config", *args, PKG], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"cowsqlpy: libdqlite not found by pkg-config ({proc.stderr.strip()}); {DEBIAN_HINT}")
    return proc.stdout.split()


_cflags = _pkg_config("--cflags")
_libs = _pkg_config("--libs")

ffibuilder = FFI()
ffibuilder.cdef(
    """
    typedef struct dqlite_node dqlite_node;
    typedef unsigned long long dqlite_node_id;

    typedef struct dqlite_node_info_ext {
        uint64_t size;
        uint64_t id;
        uint64_t address;
        uint64_t dqlite_role;
    } dqlite_node_info_ext;

    int dqlite_version_number(void);
    int dqlite_node_create(dqlite_node_id id, const char *address, const char *data_dir,
                           dqlite_node **n);
    void dqlite_node_destroy(dqlite_node *n);
    int dqlite_node_set_bind_address(dqlite_node *n, const char *address);
    const char *dqlite_node_get_bind_address(dqlite_node *n);
    int dqlite_node_set_connect_func(dqlite_node *n,
                                     int (*f)(void *arg, const char *address, int *fd),
                                     void *arg);
    int dqlite_node_set_network_latency(dqlite_node *n, unsigned long long nanoseconds);
    int dqlite_node_set_failure_domain(dqlite_node *n, unsigned long long code);
    int dqlite_node_set_snapshot_params(dqlite_node *n, unsigned snapshot_threshold,
                                        unsigned snapshot_trailing);
    int dqlite_node_start(dqlite_node *n);
    int dqlite_node_stop(dqlite_node *n);
    int dqlite_node_recover_ext(dqlite_node *n, dqlite_node_info_ext infos[], int n_info);
    const char *dqlite_node_errmsg(dqlite_node *n);
    dqlite_node_id dqlite_generate_node_id(const char *address);

    extern "Python" int cowsqlpy_dial(void *arg, const char *address, int *fd);
    """
)

ffibuilder.set_source(
    "cowsqlpy._engine",
    """
    #include <dqlite.h>
    #if !defined(DQLITE_NODE_INFO_EXT_SZ_ORIG)
    #error "dqlite.h is older than 1.11 (no dqlite_node_recover_ext); install libdqlite-dev >= 1.11"
    #endif
    """,
    extra_compile_args=[f for f in _cflags],
    libraries=[f[2:] for f in _libs if f.startswith("-l")],
    library_dirs=[f[2:] for f in _libs if f.startswith("-L")],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
