/* The originating side of the front's Raft pipes over TLS, in C with OpenSSL.

   `Front.dial` (on an engine thread, GIL released) connects to a peer's front, then
   `cowsqlpy_tls_connect` does the client handshake with the settings of
   `cowsqlpy.tls.make_client_context` (the same options, cipher list, TLS >= 1.2, the
   cluster CA, the peer's certificate required and checked against the server name),
   and a thread of its own runs `cowsqlpy_tls_relay`: engine bytes <-> TLS records with
   no Python and no event loop on a Raft message's path.

   Built without OpenSSL (no pkg-config `openssl`), every function here reports that it
   is missing and the front keeps its Python path (with a warning). */

#include "tls_relay.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifdef COWSQLPY_HAVE_OPENSSL

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

/* CPython 3.11's defaults for an SSLContext (Modules/_ssl.c, `_ssl__SSLContext_impl`),
   so that this side offers and accepts exactly what `make_client_context` does; a test
   compares them with the Python context's (tests/security/test_native_tls.py). */
#define COWSQLPY_CIPHERS \
    "@SECLEVEL=2:ECDH+AESGCM:ECDH+CHACHA20:ECDH+AES:DHE+AES:!aNULL:!eNULL:!aDSS:!SHA1:!AESCCM"
#define COWSQLPY_OPTIONS                                                                \
    ((SSL_OP_ALL & ~SSL_OP_DONT_INSERT_EMPTY_FRAGMENTS) | SSL_OP_NO_SSLv3               \
     | SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_SINGLE_DH_USE   \
     | SSL_OP_SINGLE_ECDH_USE | SSL_OP_ENABLE_MIDDLEBOX_COMPAT)
#define COWSQLPY_TLS_BUF (256 * 1024)

int cowsqlpy_tls_available(void) { return 1; }

static void cowsqlpy_tls_error(char *err, size_t errlen, const char *what)
{
    unsigned long e = ERR_get_error();
    char reason[200] = "";
    if (e) ERR_error_string_n(e, reason, sizeof reason);
    snprintf(err, errlen, "%s%s%s", what, e ? ": " : "", reason);
    ERR_clear_error();
}

void *cowsqlpy_tls_client_ctx(const char *cert, const char *key, const char *ca, char *err,
                              size_t errlen)
{
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        cowsqlpy_tls_error(err, errlen, "SSL_CTX_new");
        return NULL;
    }
    SSL_CTX_clear_options(ctx, SSL_CTX_get_options(ctx));
    SSL_CTX_set_options(ctx, COWSQLPY_OPTIONS);
    /* Partial writes: the relay loop writes what the socket takes and polls for the rest. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER
                              | SSL_MODE_AUTO_RETRY);
    const char *step = "TLS 1.2 minimum";
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION)) goto fail;
    step = "cipher list";
    if (!SSL_CTX_set_cipher_list(ctx, COWSQLPY_CIPHERS)) goto fail;
    step = "certificate";
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) goto fail;
    step = "private key";
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) goto fail;
    step = "key does not match the certificate";
    if (SSL_CTX_check_private_key(ctx) != 1) goto fail;
    step = "CA";
    if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) goto fail;
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);  /* CERT_REQUIRED */
    X509_VERIFY_PARAM_set_flags(SSL_CTX_get0_param(ctx), X509_V_FLAG_TRUSTED_FIRST);
    return ctx;
fail:
    cowsqlpy_tls_error(err, errlen, step);
    SSL_CTX_free(ctx);
    return NULL;
}

void cowsqlpy_tls_ctx_free(void *ctx) { SSL_CTX_free((SSL_CTX *)ctx); }

uint64_t cowsqlpy_tls_ctx_options(void *ctx) { return SSL_CTX_get_options((SSL_CTX *)ctx); }

int cowsqlpy_tls_ctx_min_version(void *ctx)
{
    return (int)SSL_CTX_get_min_proto_version((SSL_CTX *)ctx);
}

int cowsqlpy_tls_ctx_verify_mode(void *ctx) { return SSL_CTX_get_verify_mode((SSL_CTX *)ctx); }

unsigned long cowsqlpy_tls_ctx_verify_flags(void *ctx)
{
    return X509_VERIFY_PARAM_get_flags(SSL_CTX_get0_param((SSL_CTX *)ctx));
}

size_t cowsqlpy_tls_ctx_ciphers(void *ctx, char *out, size_t len)
{
    STACK_OF(SSL_CIPHER) *ciphers = SSL_CTX_get_ciphers((SSL_CTX *)ctx);
    size_t used = 0;
    if (len) out[0] = '\0';
    for (int i = 0; ciphers != NULL && i < sk_SSL_CIPHER_num(ciphers); i++) {
        const char *name = SSL_CIPHER_get_name(sk_SSL_CIPHER_value(ciphers, i));
        int n = used < len ? snprintf(out + used, len - used, "%s%s", i ? ":" : "", name)
                           : snprintf(NULL, 0, "%s%s", i ? ":" : "", name);
        if (n < 0) break;
        used += (size_t)n;
    }
    return used;  /* > len - 1: `out` was too short */
}

void cowsqlpy_tls_free(void *ssl) { SSL_free((SSL *)ssl); }

static long cowsqlpy_ms_left(const struct timespec *deadline)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (deadline->tv_sec - now.tv_sec) * 1000L + (deadline->tv_nsec - now.tv_nsec) / 1000000L;
}

static int cowsqlpy_set_nonblocking(int fd)
{
    int flags = fcntl(fd, F_GETFL);
    return flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0 ? -1 : 0;
}

/* Client handshake on the connected socket `fd` within `timeout_ms`, checking the server
   against the CA and `server_name` (a DNS name; or an IP address, checked as CPython
   checks one: against the certificate's IP subjectAltNames, without SNI). Leaves `fd`
   non-blocking. Returns the SSL (which does not own fd), or NULL with the reason in err. */
void *cowsqlpy_tls_connect(void *ctx, int fd, const char *server_name, int timeout_ms,
                           int *reason, char *err, size_t errlen)
{
    *reason = COWSQLPY_TLS_FAILED;
    ERR_clear_error();
    SSL *ssl = SSL_new((SSL_CTX *)ctx);
    if (ssl == NULL) {
        cowsqlpy_tls_error(err, errlen, "SSL_new");
        return NULL;
    }
    unsigned char ip[16];
    int is_ip = inet_pton(AF_INET, server_name, ip) == 1 || inet_pton(AF_INET6, server_name, ip) == 1;
    X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, server_name) == 1
                   : (SSL_set_tlsext_host_name(ssl, server_name) == 1
                      && X509_VERIFY_PARAM_set1_host(param, server_name, 0) == 1);
    if (!ok) {
        cowsqlpy_tls_error(err, errlen, "server name");
        SSL_free(ssl);
        return NULL;
    }
    if (cowsqlpy_set_nonblocking(fd) < 0 || SSL_set_fd(ssl, fd) != 1) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        ERR_clear_error();
        SSL_free(ssl);
        return NULL;
    }
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    for (;;) {
        errno = 0;
        int rv = SSL_connect(ssl);
        if (rv == 1) return ssl;
        int e = SSL_get_error(ssl, rv);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
            long verify = SSL_get_verify_result(ssl);
            if (verify != X509_V_OK) {
                *reason = COWSQLPY_TLS_UNTRUSTED;
                snprintf(err, errlen, "certificate verify failed: %s",
                         X509_verify_cert_error_string(verify));
                ERR_clear_error();
            } else if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
                snprintf(err, errlen, "TLS handshake: %s",
                         errno ? strerror(errno) : "the peer closed the connection");
            } else {
                cowsqlpy_tls_error(err, errlen, "TLS handshake");
            }
            SSL_free(ssl);
            return NULL;
        }
        long left = cowsqlpy_ms_left(&deadline);
        struct pollfd p = {fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, 0};
        int n = left > 0 ? poll(&p, 1, left > 1000000 ? 1000000 : (int)left) : 0;
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            if (n == 0) *reason = COWSQLPY_TLS_TIMED_OUT;
            snprintf(err, errlen, "TLS handshake: %s", n == 0 ? "timed out" : strerror(errno));
            SSL_free(ssl);
            return NULL;
        }
    }
}

/* What an SSL call that returned `rv` waits for: POLLIN or POLLOUT on the TCP socket;
   0: the stream ended (close_notify, or EOF); -1: it failed (errno set: EPROTO for a TLS
   error). */
static int cowsqlpy_tls_wait(SSL *ssl, int rv)
{
    int e = SSL_get_error(ssl, rv);
    switch (e) {
        case SSL_ERROR_WANT_READ:
            return POLLIN;
        case SSL_ERROR_WANT_WRITE:
            return POLLOUT;
        case SSL_ERROR_ZERO_RETURN:
            return 0;
        case SSL_ERROR_SYSCALL:
            if (ERR_peek_error() == 0) {
                if (errno == 0) return 0;  /* EOF without close_notify (OpenSSL 1.1) */
                return -1;
            }
            /* fall through */
        default:
            errno = EPROTO;
            return -1;
    }
}

/* Relay the plain socket (the engine's end of a socket pair) <-> the TLS session until a
   side closes or `stop` becomes readable. Each direction reads again only once what it
   read is written out (back-pressure both ways, as `cowsqlpy_relay`). Frees the SSL and
   closes its socket and `plain` in every case. Returns 0 (a side ended, or `stop`) or an
   errno (EPROTO: a TLS error). */
int cowsqlpy_tls_relay(void *ssl_, int plain, int stop)
{
    SSL *ssl = (SSL *)ssl_;
    int tcp = SSL_get_fd(ssl);
    int err = 0;
    int clean = 0;  /* the stream ended in order: say close_notify back */
    char *mem = malloc(2 * COWSQLPY_TLS_BUF);
    /* in: TLS -> engine (SSL_read, then send); out: engine -> TLS (recv, then SSL_write) */
    char *in = mem, *out = mem ? mem + COWSQLPY_TLS_BUF : NULL;
    size_t in_len = 0, in_off = 0, out_len = 0, out_off = 0;
    int read_wait = 0;   /* what SSL_read waits for; 0: call it */
    int write_wait = 0;  /* what SSL_write waits for (out_len > 0); 0: call it */
    int tls_eof = 0;     /* the peer ended its stream: deliver `in`, then stop */

    /* OpenSSL writes the TCP socket with write(): a reset peer must be EPIPE here, never
       a SIGPIPE for the process (this is the relay's own thread). */
    sigset_t pipe_set;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, NULL);

    if (mem == NULL) {
        err = ENOMEM;
        goto out;
    }
    if (cowsqlpy_set_nonblocking(plain) < 0 || cowsqlpy_set_nonblocking(tcp) < 0) {
        err = errno;
        goto out;
    }
    for (;;) {
        /* TLS -> in: what is decrypted at once, several records into one send. */
        if (in_len == 0 && read_wait == 0 && !tls_eof) {
            int quick = 0;
            while (in_len < COWSQLPY_TLS_BUF) {
                errno = 0;
                int rv = SSL_read(ssl, in + in_len, (int)(COWSQLPY_TLS_BUF - in_len));
                if (rv > 0) {
                    in_len += (size_t)rv;
                    quick = 1;
                    continue;
                }
                int w = cowsqlpy_tls_wait(ssl, rv);
                if (w < 0) {
                    err = errno;
                    goto out;
                }
                if (w == 0) {
                    tls_eof = clean = 1;
                    break;
                }
                read_wait = w;
                break;
            }
            if (quick) {
                int one = 1;  /* the peer's engine leaves Nagle on: ACK at once */
                setsockopt(tcp, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
            }
        }
        /* in -> engine */
        while (in_off < in_len) {
            ssize_t n = send(plain, in + in_off, in_len - in_off, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) break;
                err = errno;
                goto out;
            }
            in_off += (size_t)n;
        }
        if (in_off == in_len) {
            in_off = in_len = 0;
            if (tls_eof) goto out;
        }
        /* out -> TLS */
        while (out_len > 0 && write_wait == 0) {
            errno = 0;
            int rv = SSL_write(ssl, out + out_off, (int)(out_len - out_off));
            if (rv > 0) {
                out_off += (size_t)rv;
                if (out_off == out_len) out_off = out_len = 0;
                continue;
            }
            int w = cowsqlpy_tls_wait(ssl, rv);
            if (w <= 0) {
                err = w < 0 ? errno : EPIPE;
                goto out;
            }
            write_wait = w;
        }
        /* More decrypted already (the buffer filled): no poll before the next SSL_read. */
        if (in_len == 0 && read_wait == 0 && !tls_eof) continue;

        /* Wait. A socket with nothing to wait for leaves the poll set (fd -1), so that
           its hang-up cannot wake us for ever while the other side is slow. */
        struct pollfd p[3] = {{plain, 0, 0}, {tcp, 0, 0}, {stop, POLLIN, 0}};
        if (in_len) p[0].events |= POLLOUT;
        if (out_len == 0) p[0].events |= POLLIN;  /* the engine's next bytes, or its EOF */
        if (in_len == 0) p[1].events |= (short)read_wait;
        if (out_len) p[1].events |= (short)write_wait;
        if (!p[0].events) p[0].fd = -1;
        if (!p[1].events) p[1].fd = -1;
        if (poll(p, 3, -1) < 0) {
            if (errno == EINTR) continue;
            err = errno;
            goto out;
        }
        if (p[2].revents) {
            clean = 1;
            goto out;
        }
        if ((p[0].revents | p[1].revents) & POLLNVAL) {  /* not ours any more: never spin */
            err = EBADF;
            goto out;
        }
        if (p[1].revents) {
            /* Either SSL call may go on; a hang-up or an error shows in the call itself. */
            if (in_len == 0) read_wait = 0;
            if (out_len) write_wait = 0;
        }
        if ((p[0].revents & (POLLIN | POLLERR | POLLHUP)) && out_len == 0) {
            ssize_t n;
            do {
                n = recv(plain, out, COWSQLPY_TLS_BUF, 0);
            } while (n < 0 && errno == EINTR);
            if (n == 0) {  /* the engine closed the pipe */
                clean = 1;
                goto out;
            }
            if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
                err = errno;
                goto out;
            }
            if (n > 0) {
                out_len = (size_t)n;
                out_off = 0;
                write_wait = 0;
            }
        }
        /* p[0] POLLOUT/POLLERR/POLLHUP with `in` waiting: the send at the top goes on or
           reports the error. */
    }
out:
    if (clean && err == 0) SSL_shutdown(ssl);  /* best effort close_notify, never waits */
    ERR_clear_error();
    free(mem);
    SSL_free(ssl);
    close(tcp);
    close(plain);
    return err;
}

#else /* no OpenSSL at build time */

int cowsqlpy_tls_available(void) { return 0; }

void *cowsqlpy_tls_client_ctx(const char *cert, const char *key, const char *ca, char *err,
                              size_t errlen)
{
    (void)cert, (void)key, (void)ca;
    snprintf(err, errlen, "built without OpenSSL");
    return NULL;
}

void cowsqlpy_tls_ctx_free(void *ctx) { (void)ctx; }
uint64_t cowsqlpy_tls_ctx_options(void *ctx) { (void)ctx; return 0; }
int cowsqlpy_tls_ctx_min_version(void *ctx) { (void)ctx; return 0; }
int cowsqlpy_tls_ctx_verify_mode(void *ctx) { (void)ctx; return 0; }
unsigned long cowsqlpy_tls_ctx_verify_flags(void *ctx) { (void)ctx; return 0; }

size_t cowsqlpy_tls_ctx_ciphers(void *ctx, char *out, size_t len)
{
    (void)ctx;
    if (len) out[0] = '\0';
    return 0;
}

void *cowsqlpy_tls_connect(void *ctx, int fd, const char *server_name, int timeout_ms,
                           int *reason, char *err, size_t errlen)
{
    (void)ctx, (void)fd, (void)server_name, (void)timeout_ms;
    *reason = COWSQLPY_TLS_FAILED;
    snprintf(err, errlen, "built without OpenSSL");
    return NULL;
}

void cowsqlpy_tls_free(void *ssl) { (void)ssl; }

int cowsqlpy_tls_relay(void *ssl, int plain, int stop)
{
    (void)ssl, (void)stop;
    close(plain);
    return ENOSYS;
}

#endif
