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
 * negative errno: -ETIMEDOUT, -ECONNREFUSED (cannot connect), -EIO, -EINTR
 * (abort_fn said stop), -EMSGSIZE (response over max_bytes).
 */
extern int	http_json(const char *method, const char *url, const char *bearer,
					  json_t *body, long timeout_ms, size_t max_bytes,
					  HttpAbortFn abort_fn, long *status, json_t **response,
					  char *err, size_t errlen);

#endif							/* NADI_HTTP_H */
