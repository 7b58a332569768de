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
    int cowsqlpy_connect_nodelay(void *arg, const char *address, int *fd);
    int cowsqlpy_set_checkpoint_threshold(dqlite_node *n, dqlite_node_id id, const char *address,
                                          unsigned threshold);
    """
)

ffibuilder.set_source(
    "cowsqlpy._engine",
    """
    #include <dqlite.h>
    #if !defined(DQLITE_NODE_INFO_EXT_SZ_ORIG)
    #error "dqlite.h is older than 1.11 (no dqlite_node_recover_ext); install libdqlite-dev >= 1.11"
    #endif
    #include <stddef.h>
    #include <netdb.h>
    #include <netinet/in.h>
    #include <netinet/tcp.h>
    #include <stdio.h>
    #include <string.h>
    #include <sys/socket.h>
    #include <sys/un.h>
    #include <unistd.h>
    #include <pthread.h>
    #include <stdarg.h>

    /* libdqlite 1.11 has no setter for the WAL checkpoint threshold (1,000 frames),
       and on every applied commit a follower rebuilds its WAL index by reading and
       checksumming the whole WAL (it opens a connection to decide whether to
       checkpoint), so a commit costs O(WAL size): 0.75 ms just after a checkpoint,
       2.2 ms near 1,000 frames. This sets the field in the node's config, which
       leads `struct dqlite_node` in 1.11 (src/server.h, src/config.h), only after
       every field around it holds what dqlite_node_create put there; any other
       layout is left untouched (returns 1). */
    struct cowsqlpy_dqlite_1_11_head {
        pthread_t thread;
        struct {
            dqlite_node_id id;
            char *address;
            unsigned heartbeat_timeout;
            unsigned page_size;
            unsigned checkpoint_threshold;
            struct { void *data; void (*emit)(void *, int, const char *, va_list); } logger;
            char name[256];
        } config;
    };

    int cowsqlpy_set_checkpoint_threshold(dqlite_node *n, dqlite_node_id id, const char *address,
                                          unsigned threshold)
    {
        struct cowsqlpy_dqlite_1_11_head *h = (struct cowsqlpy_dqlite_1_11_head *)n;
        int v = dqlite_version_number();
        if (v != 11000) return 1;  /* what 1.10.x and 1.11.x report */
        if (h->config.id != id || h->config.address == NULL
            || strcmp(h->config.address, address) != 0 || h->config.page_size != 4096
            || h->config.checkpoint_threshold == 0 || h->config.checkpoint_threshold > 1000000
            || strncmp(h->config.name, "dqlite-", 7) != 0
            || memchr(h->config.name, 0, sizeof h->config.name) == NULL) {
            return 1;
        }
        h->config.checkpoint_threshold = threshold;
        return 0;
    }

    /* The engine's own Raft dialer leaves Nagle on; with delayed ACKs that stalls
       commits by ~40 ms. This one is the same plain connect plus TCP_NODELAY (as
       go-dqlite's Go dialer does). Runs on a libuv worker thread, no GIL. */
    int cowsqlpy_connect_nodelay(void *arg, const char *address, int *fd)
    {
        (void)arg;
        if (address[0] == '@') {
            struct sockaddr_un sun;
            size_t len = strlen(address + 1);
            if (len + 1 > sizeof sun.sun_path) return 1;
            memset(&sun, 0, sizeof sun);
            sun.sun_family = AF_UNIX;
            memcpy(sun.sun_path + 1, address + 1, len);
            int s = socket(AF_UNIX, SOCK_STREAM, 0);
            if (s < 0) return 1;
            if (connect(s, (struct sockaddr *)&sun, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + len)) != 0) {
                close(s);
                return 1;
            }
            *fd = s;
            return 0;
        }
        char host[256];
        const char *colon = strrchr(address, ':');
        if (colon == NULL || (size_t)(colon - address) >= sizeof host) return 1;
        memcpy(host, address, (size_t)(colon - address));
        host[colon - address] = 0;
        char *h = host;
        if (h[0] == '[') {  /* [v6]:port */
            h++;
            h[strlen(h) - 1] = 0;
        }
        struct addrinfo hints, *res = NULL, *ai;
        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        if (getaddrinfo(h, colon + 1, &hints, &res) != 0) return 1;
        int s = -1;
        for (ai = res; ai != NULL; ai = ai->ai_next) {
            s = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
            if (s < 0) continue;
            if (connect(s, ai->ai_addr, ai->ai_addrlen) == 0) break;
            close(s);
            s = -1;
        }
        freeaddrinfo(res);
        if (s < 0) return 1;
        int one = 1;
        setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        *fd = s;
        return 0;
    }
    """,
    extra_compile_args=[f for f in _cflags],
    libraries=[f[2:] for f in _libs if f.startswith("-l")],
    library_dirs=[f[2:] for f in _libs if f.startswith("-L")],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
