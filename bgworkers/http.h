/*
 * http.h — the one libcurl adapter the cell uses for JSON over HTTP (tool
 * calls to sandboxd, model providers).  No PostgreSQL headers.
 */
#ifndef NADI_HTTP_H
#define NADI_HTTP_H

#include <stdbool.h>
#include <jansson.h>

typedef bool (*HttpAbortFn) (void);

/*
 * POST (body != NULL) or GET a JSON document.  Returns 0 with *status and
 * *response (NULL if the body was not JSON; caller json_decref()s), or a
 * negative errno:
 *   -ECONNREFUSED  nothing reached the server: the name did not resolve, the
 *                  connection was refused, or time ran out before any byte
 *                  of the request was sent (safe to try again)
 *   -ETIMEDOUT     the request was sent; no whole answer came in time
 *   -EIO           the request was sent (or sending failed part way); the
 *                  connection broke before a whole answer
 *   -EINTR         abort_fn said stop
 *   -EMSGSIZE      the response was over max_bytes
 * After -ETIMEDOUT, -EIO or -EMSGSIZE the server may have acted on the
 * request: its outcome is unknown.
 */
extern int	http_json(const char *method, const char *url, const char *bearer,
					  json_t *body, long timeout_ms, size_t max_bytes,
					  HttpAbortFn abort_fn, long *status, json_t **response,
					  char *err, size_t errlen);

/*
 * A new, empty JSON object.  Code loaded into postgres must not call
 * jansson's json_object(): the name resolves to PostgreSQL's SQL function
 * json_object() there.
 */
static inline json_t *
http_json_object(void)
{
	return json_pack("{}");
}

/*
 * A URL path component, percent-encoded (every byte but A-Za-z0-9-._~);
 * malloc'd, free() it.  NULL when out of memory.  "." and ".." stay as they
 * are: callers refuse them.  Paths are sent as built (no dot segment is
 * removed on the way out).
 */
extern char *http_escape(const char *s);

#endif							/* NADI_HTTP_H */
