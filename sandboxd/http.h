/*
 * http.h — the libmicrohttpd adapter.  Each listener (unix socket, loopback
 * TCP) is an MHD daemon in external-epoll mode driven by the daemon's event
 * loop.  A handler answers at once or later: a request left without an
 * answer is suspended and resumed when one of the http_reply_* functions is
 * called (from a container result, a helper's exit, ...).
 */
#ifndef SBX_HTTP_H
#define SBX_HTTP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct http_req;
struct access_principal;

int		 http_init(void);
uint16_t http_tcp_port(void);	/* the port listen_tcp is bound to (0: none) */
void	 http_run(void);		/* let MHD process ready sockets */
int64_t	 http_timeout_ms(void); /* MHD's next deadline, -1 for none */
void	 http_quiesce(void);	/* stop accepting connections (drain) */
void	 http_done(void);
unsigned http_pending(void); /* requests waiting for an answer, streamed answers not yet sent */

const char *http_method(const struct http_req *r);
const char *http_path(const struct http_req *r);
const char *http_query(const struct http_req *r, const char *key);
/* Who sent r (access.h); ACCESS_NONE on the public routes. */
const struct access_principal *http_principal(const struct http_req *r);
/* The bearer token r came with (NULL: none); valid while r is. */
const char *http_req_bearer(const struct http_req *r);
const char *http_body(const struct http_req *r, size_t *len);
/* The body as a JSON object ({} when empty); answers 400 itself on error. */
json_t *http_body_json(struct http_req *r);

/* Zeroed state for answering r later; NULL (r answered with a 500) when out of memory. */
void *http_calloc(struct http_req *r, size_t size);
void  http_reply_json(struct http_req *r, unsigned status, json_t *body); /* steals body */
void http_reply_problem(struct http_req *r, unsigned status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
void http_reply_text(struct http_req *r, unsigned status, const char *content_type, char *text,
					 size_t len);
void http_reply_fd(struct http_req *r, int fd, uint64_t size);
void http_reply_empty(struct http_req *r, unsigned status);
/* Map a negative errno from a file operation onto a problem answer. */
void http_reply_errno(struct http_req *r, int err, const char *what);
void http_add_header(struct http_req *r, const char *name, const char *value);
/* A request header (NULL: none). */
const char *http_header(const struct http_req *r, const char *name);

/*
 * An answer whose body is written while it is sent (chunked): started with
 * its status like any answer, written to, then ended.  Writes after the
 * client went away are dropped (-EPIPE).  The stream is freed once ended
 * and done with.
 */
struct http_stream;
struct http_stream		*
http_stream_start(struct http_req *r, unsigned status, const char *content_type);
int	 http_stream_write(struct http_stream *s, const char *data, size_t len);
void http_stream_end(struct http_stream *s);

#endif
