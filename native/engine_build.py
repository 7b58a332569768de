"""cffi out-of-line API-mode builder for the engine binding (`cowsqlpy._engine`).

The engine is libcowsql 1.15 (Debian bookworm-backports: libcowsql-dev, with
libraft0 0.22). Every engine symbol lives here and in `cowsqlpy/node.py`.
Without the library the build still succeeds: this module is skipped (see
setup.py) and `cowsqlpy.node.Node` raises `EngineUnavailableError`.
"""

import os
import shutil
import subprocess
import sys

from cffi import FFI

PKG = "cowsql"
DEBIAN_HINT = (
    "install libcowsql-dev from Debian bookworm-backports "
    "(apt-get install -t bookworm-backports libcowsql-dev; pkg-config)"
)


def _pkg_config(*args: str, pkg: str = PKG) -> list[str]:
    if shutil.which("pkg-config") is None:
        sys.exit(f"cowsqlpy: pkg-config not found; {DEBIAN_HINT}")
    proc = subprocess.run(["pkg-config", *args, pkg], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"cowsqlpy: libcowsql not found by pkg-config ({proc.stderr.strip()}); {DEBIAN_HINT}")
    return proc.stdout.split()


_cflags = _pkg_config("--cflags")
_libs = _pkg_config("--libs")
# OpenSSL (libssl-dev) is optional: without it, or with COWSQLPY_NO_OPENSSL=1,
# native/tls_relay.c builds stubs and the front's TLS Raft pipes stay on its event loop.
if os.environ.get("COWSQLPY_NO_OPENSSL") != "1" and (
    subprocess.run(["pkg-config", "--exists", "openssl"], check=False).returncode == 0
):
    _cflags += ["-DCOWSQLPY_HAVE_OPENSSL"] + _pkg_config("--cflags", pkg="openssl")
    _libs += _pkg_config("--libs", pkg="openssl")
else:
    print(
        "cowsqlpy: building the engine binding without OpenSSL (pkg-config openssl: install "
        "libssl-dev): the front's TLS Raft pipes will run on its event loop",
        file=sys.stderr,
    )

ffibuilder = FFI()
ffibuilder.cdef(
    """
    typedef struct cowsql_node cowsql_node;
    typedef unsigned long long cowsql_node_id;

    typedef struct cowsql_node_info_ext {
        uint64_t size;
        uint64_t id;
        uint64_t address;
        uint64_t cowsql_role;
    } cowsql_node_info_ext;

    int cowsql_version_number(void);
    int cowsql_node_create(cowsql_node_id id, const char *address, const char *data_dir,
                           cowsql_node **n);
    void cowsql_node_destroy(cowsql_node *n);
    int cowsql_node_set_bind_address(cowsql_node *n, const char *address);
    const char *cowsql_node_get_bind_address(cowsql_node *n);
    int cowsql_node_set_connect_func(cowsql_node *n,
                                     int (*f)(void *arg, const char *address, int *fd),
                                     void *arg);
    int cowsql_node_set_network_latency_ms(cowsql_node *n, unsigned milliseconds);
    int cowsql_node_set_failure_domain(cowsql_node *n, unsigned long long code);
    int cowsql_node_set_snapshot_params(cowsql_node *n, unsigned snapshot_threshold,
                                        unsigned snapshot_trailing);
    int cowsql_node_set_block_size(cowsql_node *n, size_t size);
    int cowsql_node_set_target_voters(cowsql_node *n, int voters);
    int cowsql_node_set_target_standbys(cowsql_node *n, int standbys);
    int cowsql_node_set_auto_recovery(cowsql_node *n, bool enabled);
    int cowsql_node_enable_role_management(cowsql_node *n);
    int cowsql_node_start(cowsql_node *n);
    int cowsql_node_handover(cowsql_node *n);
    int cowsql_node_stop(cowsql_node *n);
    int cowsql_node_recover_ext(cowsql_node *n, cowsql_node_info_ext infos[], int n_info);
    const char *cowsql_node_errmsg(cowsql_node *n);
    cowsql_node_id cowsql_generate_node_id(const char *address);

    extern "Python" int cowsqlpy_dial(void *arg, const char *address, int *fd);
    int cowsqlpy_connect_nodelay(void *arg, const char *address, int *fd);
    int cowsqlpy_set_checkpoint_threshold(cowsql_node *n, cowsql_node_id id, const char *address,
                                          unsigned threshold);
    int cowsqlpy_relay(int a, int b, int stop);

    /* native/tls_relay.h */
    int cowsqlpy_tls_available(void);
    void *cowsqlpy_tls_client_ctx(const char *cert, const char *key, const char *ca, char *err,
                                  size_t errlen);
    void cowsqlpy_tls_ctx_free(void *ctx);
    uint64_t cowsqlpy_tls_ctx_options(void *ctx);
    int cowsqlpy_tls_ctx_min_version(void *ctx);
    int cowsqlpy_tls_ctx_verify_mode(void *ctx);
    unsigned long cowsqlpy_tls_ctx_verify_flags(void *ctx);
    size_t cowsqlpy_tls_ctx_ciphers(void *ctx, char *out, size_t len);
    #define COWSQLPY_TLS_FAILED ...
    #define COWSQLPY_TLS_UNTRUSTED ...
    #define COWSQLPY_TLS_TIMED_OUT ...
    void *cowsqlpy_tls_connect(void *ctx, int fd, const char *server_name, int timeout_ms,
                               int *reason, char *err, size_t errlen);
    void cowsqlpy_tls_free(void *ssl);
    int cowsqlpy_tls_relay(void *ssl, int plain, int stop);
    """
)

ffibuilder.set_source(
    "cowsqlpy._engine",
    """
    #include <cowsql.h>
    #if COWSQL_VERSION_NUMBER < 11500
    #error "cowsql.h is older than 1.15; install libcowsql-dev >= 1.15 from bookworm-backports"
    #endif
    #include <stdbool.h>
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
    #include <errno.h>
    #include <fcntl.h>
    #include <poll.h>
    #include <stdlib.h>

    #include "tls_relay.h"  /* the front's TLS Raft pipes (native/tls_relay.c) */

    /* cowsql 1.15 has no setter for the WAL checkpoint threshold (1,000 frames),
       and on every applied commit each node opens a follower connection to decide
       whether to checkpoint (src/fsm.c), which on a follower rebuilds the WAL
       index from the whole WAL: a commit costs O(WAL size). This sets the field
       in the node's config, which follows `initialized` and `thread` at the head
       of `struct cowsql_node` in 1.15 (src/server.h, src/config.h), only after
       every field around it holds what cowsql_node_create put there; any other
       layout is left untouched (returns 1). */
    struct cowsqlpy_cowsql_1_15_head {
        bool initialized;
        pthread_t thread;
        struct {
            cowsql_node_id id;
            char *address;
            unsigned heartbeat_timeout;
            unsigned page_size;
            unsigned checkpoint_threshold;
            struct { void *data; void (*emit)(void *, int, const char *, va_list); } logger;
            char name[256];
        } config;
    };

    int cowsqlpy_set_checkpoint_threshold(cowsql_node *n, cowsql_node_id id, const char *address,
                                          unsigned threshold)
    {
        struct cowsqlpy_cowsql_1_15_head *h = (struct cowsqlpy_cowsql_1_15_head *)n;
        int v = cowsql_version_number();
        if (v < 11500 || v >= 11600) return 1;
        if (!h->initialized || h->config.id != id || h->config.address == NULL
            || strcmp(h->config.address, address) != 0 || h->config.page_size != 4096
            || h->config.checkpoint_threshold == 0 || h->config.checkpoint_threshold > 1000000
            || strncmp(h->config.name, "cowsql-", 7) != 0
            || memchr(h->config.name, 0, sizeof h->config.name) == NULL) {
            return 1;
        }
        h->config.checkpoint_threshold = threshold;
        return 0;
    }

    /* The front's Raft pipes without TLS: after CONNECT the front only moves bytes, so
       it hands both sockets to this loop, run from a Python thread with the GIL released
       (cffi releases it), instead of waking the front's event loop for every Raft
       message. One direction's bytes are read only once the previous read is written
       out, so a slow reader stalls its own direction only. Returns 0 when a side closed
       or `stop` became readable, else an errno; closes a and b in every case. */
    #define COWSQLPY_RELAY_BUF (256 * 1024)

    struct cowsqlpy_direction {
        int from, to, tcp_from;
        char *buf;
        size_t len, off;
    };

    static int cowsqlpy_is_tcp(int fd)
    {
        int domain = 0;
        socklen_t len = sizeof domain;
        return getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0
               && (domain == AF_INET || domain == AF_INET6);
    }

    /* Write what is buffered; 1: all out, 0: the socket is full, -1: error (errno). */
    static int cowsqlpy_flush(struct cowsqlpy_direction *d)
    {
        while (d->off < d->len) {
            ssize_t n = send(d->to, d->buf + d->off, d->len - d->off, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EINTR) continue;
                return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
            }
            d->off += (size_t)n;
        }
        d->off = d->len = 0;
        return 1;
    }

    /* Read once and write at once; 1: go on, 0: end of stream, -1: error (errno). */
    static int cowsqlpy_pump(struct cowsqlpy_direction *d)
    {
        ssize_t n;
        do {
            n = recv(d->from, d->buf, COWSQLPY_RELAY_BUF, 0);
        } while (n < 0 && errno == EINTR);
        if (n == 0) return 0;
        if (n < 0) return (errno == EAGAIN || errno == EWOULDBLOCK) ? 1 : -1;
        if (d->tcp_from) {  /* the sender may keep Nagle on: do not delay our ACK */
            int one = 1;
            setsockopt(d->from, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
        }
        d->len = (size_t)n;
        d->off = 0;
        return cowsqlpy_flush(d) < 0 ? -1 : 1;
    }

    int cowsqlpy_relay(int a, int b, int stop)
    {
        struct cowsqlpy_direction dirs[2] = {
            {a, b, cowsqlpy_is_tcp(a), NULL, 0, 0},
            {b, a, cowsqlpy_is_tcp(b), NULL, 0, 0},
        };
        int err = 0;
        char *mem = malloc(2 * COWSQLPY_RELAY_BUF);
        if (mem == NULL) {
            err = ENOMEM;
            goto out;
        }
        dirs[0].buf = mem;
        dirs[1].buf = mem + COWSQLPY_RELAY_BUF;
        int fds[2] = {a, b};
        for (int i = 0; i < 2; i++) {
            int flags = fcntl(fds[i], F_GETFL);
            if (flags < 0 || fcntl(fds[i], F_SETFL, flags | O_NONBLOCK) < 0) {
                err = errno;
                goto out;
            }
        }
        for (;;) {
            struct pollfd p[3] = {{a, 0, 0}, {b, 0, 0}, {stop, POLLIN, 0}};
            for (int i = 0; i < 2; i++) {
                struct cowsqlpy_direction *d = &dirs[i];
                if (d->len) p[d->to == a ? 0 : 1].events |= POLLOUT;
                else p[d->from == a ? 0 : 1].events |= POLLIN;
            }
            if (poll(p, 3, -1) < 0) {
                if (errno == EINTR) continue;
                err = errno;
                goto out;
            }
            if (p[2].revents) goto out;
            if ((p[0].revents | p[1].revents) & POLLNVAL) {  /* not ours any more: never spin */
                err = EBADF;
                goto out;
            }
            for (int i = 0; i < 2; i++) {
                struct cowsqlpy_direction *d = &dirs[i];
                short from_ev = p[d->from == a ? 0 : 1].revents;
                short to_ev = p[d->to == a ? 0 : 1].revents;
                int rv = 1;
                if (d->len && (to_ev & (POLLOUT | POLLERR | POLLHUP))) rv = cowsqlpy_flush(d);
                else if (!d->len && (from_ev & (POLLIN | POLLERR | POLLHUP))) rv = cowsqlpy_pump(d);
                if (rv == 0 && !d->len) goto out;  /* end of stream */
                if (rv < 0) {
                    err = errno;
                    goto out;
                }
                /* A side that hung up while its bytes wait for the other: poll would
                   report it at once, for ever; the peer is gone, end the pipe. */
                if (d->len && (from_ev & (POLLHUP | POLLERR))) goto out;
            }
        }
    out:
        free(mem);
        close(a);
        close(b);
        return err;
    }

    /* The engine's own Raft dialer leaves Nagle on; with delayed ACKs that stalls
       commits by ~40 ms. This one is the same plain connect plus TCP_NODELAY (as
       go-cowsql's Go dialer does). Runs on a libuv worker thread, no GIL. */
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
    sources=["native/tls_relay.c"],
    include_dirs=["native"],
    extra_compile_args=_cflags,
    libraries=[f[2:] for f in _libs if f.startswith("-l")],
    library_dirs=[f[2:] for f in _libs if f.startswith("-L")],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
