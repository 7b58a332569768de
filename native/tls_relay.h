/* The front's Raft pipes over TLS in C (native/tls_relay.c); declared once for the cffi
   binding (native/engine_build.py) and the implementation. */
#ifndef COWSQLPY_TLS_RELAY_H
#define COWSQLPY_TLS_RELAY_H

#include <stddef.h>
#include <stdint.h>

int cowsqlpy_tls_available(void);
void *cowsqlpy_tls_client_ctx(const char *cert, const char *key, const char *ca, char *err,
                              size_t errlen);
void cowsqlpy_tls_ctx_free(void *ctx);
/* What a context was set to (tests compare it with `cowsqlpy.tls.make_client_context`). */
uint64_t cowsqlpy_tls_ctx_options(void *ctx);
int cowsqlpy_tls_ctx_min_version(void *ctx);
int cowsqlpy_tls_ctx_verify_mode(void *ctx);
unsigned long cowsqlpy_tls_ctx_verify_flags(void *ctx);
size_t cowsqlpy_tls_ctx_ciphers(void *ctx, char *out, size_t len);
/* `cowsqlpy_tls_connect`'s *reason when it returns NULL */
#define COWSQLPY_TLS_FAILED 1     /* the connection or the TLS handshake failed */
#define COWSQLPY_TLS_UNTRUSTED 2  /* the server's certificate was refused */
#define COWSQLPY_TLS_TIMED_OUT 3  /* no handshake within the timeout */
void *cowsqlpy_tls_connect(void *ctx, int fd, const char *server_name, int timeout_ms,
                           int *reason, char *err, size_t errlen);
void cowsqlpy_tls_free(void *ssl);
int cowsqlpy_tls_relay(void *ssl, int plain, int stop);

#endif
