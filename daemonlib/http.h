/*
 * http.h — the request layer every daemon's libmicrohttpd adapter is built
 * on, whatever its threading (an event loop in nadi-edge and nadi-sandboxd,
 * a thread per connection in nadi-gitd and nadi-credproxy):
 *
 *	- a request id per request: the client's X-Request-Id when it is well
 *	  formed, else one made here; every answer carries it back (header,
 *	  and "request_id" in problem+json bodies);
 *	- one access-log line per request, the same in every daemon;
 *	- the bearer token of a request;
 *	- request bodies read up to a limit, and the one answer to a body over
 *	  it (413 body_too_large);
 *	- the per-request record ("struct mhd_req") that
 *	  nadi-sandboxd and nadi-gitd keep until they answer.
 *
 * How an answer reaches its connection (at once, after a suspend, from a
 * connection thread) stays with each daemon's http.c.
 */
#ifndef NADI_DAEMONLIB_HTTP_H
#define NADI_DAEMONLIB_HTTP_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include <microhttpd.h>

#include "problem.h"
#include "util.h"

/* ----------------------------------------------------------------------
 * Request ids and the access log
 * ---------------------------------------------------------------------- */

#define HTTP_REQUEST_ID_HEADER "X-Request-Id"
#define HTTP_REQUEST_ID_MAX 64

/*
 * A client's request id is taken as it is when it has 1 to
 * HTTP_REQUEST_ID_MAX characters of [A-Za-z0-9._:+=/@-]; anything else
 * (and no header) gets a fresh one, 24 hex digits.
 */
extern bool http_request_id_valid(const char *s);

/*
 * What the access log needs of one request, from its headers to its end.
 * Owned copies: it outlives libmicrohttpd's strings.
 */
typedef struct HttpAccess
{
	char	 request_id[HTTP_REQUEST_ID_MAX + 1];
	char	 method[16];
	char	*path;	   /* the path without the query, made printable */
	uint64_t start_us; /* CLOCK_MONOTONIC */
	unsigned status;   /* of the answer queued; 0: none yet */
	int64_t	 bytes;	   /* its body's size; -1: streamed, unknown */
	bool	 started;
} HttpAccess;

/*
 * The request begins (its headers are in): take or make its id, note the
 * method, the path (the query is left out of the log) and the time.
 */
extern void
http_access_start(HttpAccess *a, struct MHD_Connection *conn, const char *method, const char *path);

/*
 * The answer resp (status, a body of bytes, -1 when unknown) is about to
 * be queued: it gets the X-Request-Id header.  resp may be NULL.
 */
extern void
http_access_answer(HttpAccess *a, struct MHD_Response *resp, unsigned status, int64_t bytes);

/*
 * The request ended: log its one line and free what a holds.  The line:
 *
 *	 access method=GET path=/v1/x status=200 bytes=17 ms=0.412 request_id=ID
 *
 * with "-" for a status or size not known, and " end=REASON" when the
 * connection ended before the answer was sent.  A record never started
 * (libmicrohttpd refused the request itself) is started here.
 */
extern void
http_access_end(HttpAccess *a, struct MHD_Connection *conn, enum MHD_RequestTerminationCode toe);

/*
 * A problem+json body (problem_text) with "request_id", when request_id is
 * a well-formed id (http_request_id_valid); NULL when out of memory.
 */
extern char *
http_problem_text(unsigned status, const char *code, const char *detail, const char *request_id);

/* ----------------------------------------------------------------------
 * Credentials
 * ---------------------------------------------------------------------- */

typedef enum HttpBearer
{
	HTTP_BEARER_NONE,  /* no Authorization header, or an empty one */
	HTTP_BEARER_OTHER, /* another scheme (or "Bearer" without a space) */
	HTTP_BEARER_EMPTY, /* "Bearer " and no token */
	HTTP_BEARER_TOKEN  /* "Bearer TOKEN": *token is set */
} HttpBearer;

/* Read an Authorization header's value (NULL: none). */
static inline HttpBearer
http_bearer_parse(const char *authorization, const char **token)
{
	const char *h = authorization;

	*token = NULL;
	if (h == NULL || *h == '\0')
		return HTTP_BEARER_NONE;
	if (strncasecmp(h, "Bearer ", 7) != 0)
		return HTTP_BEARER_OTHER;
	h += 7;
	while (*h == ' ')
		h++;
	if (*h == '\0')
		return HTTP_BEARER_EMPTY;
	*token = h;
	return HTTP_BEARER_TOKEN;
}

/* The Authorization header of conn, read as http_bearer_parse does. */
extern HttpBearer http_bearer(struct MHD_Connection *conn, const char **token);

/* The token of "Authorization: Bearer TOKEN", NULL when there is none. */
extern const char *bearer_token(struct MHD_Connection *conn);

/* ----------------------------------------------------------------------
 * Slow clients
 *
 * libmicrohttpd's connection timeout ends an idle connection, but a client
 * that trickles a byte at a time is never idle.  A daemon whose HTTP runs
 * on one thread (its event loop) gives each connection a deadline: to
 * send its headers from the start, then its body, then (kept alive) its
 * next request; a sweep, from a timer, shuts down the socket of every
 * connection past its deadline.
 * ---------------------------------------------------------------------- */

typedef struct HttpConn HttpConn;

typedef struct HttpSlow
{
	uint64_t  header_timeout_ms; /* a new connection's deadline; 0: none */
	HttpConn *conns;
} HttpSlow;

/*
 * MHD_OPTION_NOTIFY_CONNECTION's callback, with the HttpSlow as its cls:
 * each connection's socket context becomes its HttpConn.
 */
extern void http_slow_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
							 enum MHD_ConnectionNotificationCode toe);
/* The HttpConn of a connection (NULL when none could be made). */
extern HttpConn *http_conn_of(struct MHD_Connection *conn);
/* Its next deadline, timeout_ms from now; 0: none.  c may be NULL. */
extern void http_conn_deadline(HttpConn *c, uint64_t timeout_ms);
/* Shut down the connections past their deadline; how many. */
extern unsigned http_slow_sweep(HttpSlow *s);

/* ----------------------------------------------------------------------
 * Request bodies
 * ---------------------------------------------------------------------- */

/* The one answer to a body over the limit, in every daemon. */
#define HTTP_BODY_TOO_LARGE_STATUS 413
#define HTTP_BODY_TOO_LARGE_CODE "body_too_large"
#define HTTP_BODY_TOO_LARGE_DETAIL "The request body is larger than %llu bytes."

/*
 * A request body read as it arrives, up to limit bytes.  Beyond the limit
 * the body is dropped (too_large) and the rest read and discarded, so that
 * the client gets its 413 rather than a reset, but at most discard_max
 * bytes more.
 */
struct req_body
{
	char	*data; /* NUL-terminated; NULL while empty */
	size_t	 len;
	size_t	 limit;
	uint64_t seen;
	bool	 too_large;
};

/* Take *size bytes of upload data; MHD_NO to hang up. */
extern enum MHD_Result
			req_body_feed(struct req_body *b, const char *data, size_t *size, uint64_t discard_max);
extern void req_body_free(struct req_body *b);

/*
 * A Content-Length header above limit: refuse before reading the body.
 * A malformed one is left to libmicrohttpd, which refuses it.
 */
extern bool req_body_announced_too_large(struct MHD_Connection *conn, uint64_t limit);

/* ----------------------------------------------------------------------
 * The per-request record of nadi-sandboxd and nadi-gitd
 * ---------------------------------------------------------------------- */

/*
 * What a request handler keeps of one request until its answer is queued:
 * method and path, the body, extra response headers, the answer, and the
 * access record.  Each daemon's struct http_req starts with one and adds
 * its own fields.
 */
#define MHD_REQ_MAX_HEADERS 4

struct mhd_req
{
	const char			*method; /* MHD's, valid until the request completes */
	char				*path;
	struct req_body		 body;
	unsigned			 status;
	struct MHD_Response *resp; /* the answer, until it is queued */
	const char			*hdr_name[MHD_REQ_MAX_HEADERS];
	char				*hdr_value[MHD_REQ_MAX_HEADERS];
	int					 n_hdr;
	HttpAccess			 access;
};

/*
 * For a daemon's struct http_req, whose first member is a struct mhd_req:
 * its method, its path, and a header for its answer (mhd_req_add_header).
 */
struct http_req;
extern const char *http_method(const struct http_req *r);
extern const char *http_path(const struct http_req *r);
extern void		   http_add_header(struct http_req *r, const char *name, const char *value);

extern int mhd_req_init(struct mhd_req *r, struct MHD_Connection *conn, const char *method,
						const char *url, size_t body_limit);

/* A header for the answer (name static, value copied); more than four are dropped. */
extern void mhd_req_add_header(struct mhd_req *r, const char *name, const char *value);

/*
 * Keep resp (taken; a body of bytes, -1 when unknown) as the answer, with
 * the extra headers and the request id.  A NULL resp (out of memory)
 * becomes an empty 500.  false when there is no answer to keep:
 * allocation failed, or the request has one already (a bug, logged; the
 * first stays).
 */
extern bool
mhd_req_answer(struct mhd_req *r, unsigned status, struct MHD_Response *resp, int64_t bytes);

/*
 * A problem+json response for r carrying its request id, the detail
 * formatted into at most detail_max bytes; *bytes gets its size.  NULL
 * when out of memory.  Answers of 500 and above are logged with the
 * request.
 */
extern struct MHD_Response *
mhd_req_problem(const struct mhd_req *r, unsigned status, const char *code, size_t detail_max,
				int64_t *bytes, const char *fmt, va_list ap) _printf_(6, 0);

/* Queue the kept answer on conn; MHD_NO when there is none. */
extern enum MHD_Result mhd_req_queue(struct mhd_req *r, struct MHD_Connection *conn);

/*
 * The request ended (toe says how): its access-log line; free all but r
 * itself.
 */
extern void
mhd_req_done(struct mhd_req *r, struct MHD_Connection *conn, enum MHD_RequestTerminationCode toe);

#endif /* NADI_DAEMONLIB_HTTP_H */
