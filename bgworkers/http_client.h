/*
 * http_client.h — requests the agent runtime wants made (JSON over HTTP to
 * a model provider or a sandbox host), and the one libcurl adapter that
 * makes them.  The runtime only builds an HttpRequest and reads an
 * HttpReply; a driver performs the request (the cell host: many at once,
 * with curl multi).  No PostgreSQL headers.
 */
#ifndef NADI_HTTP_CLIENT_H
#define NADI_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>

/* A request: every member owned by it (http_request_clear frees them). */
typedef struct HttpRequest
{
	const char *method;			/* "GET" or "POST" (a literal) */
	char	   *url;			/* malloc'd */
	char	   *bearer;			/* malloc'd, or NULL */
	json_t	   *body;			/* sent as JSON when not NULL */
	long		timeout_ms;
	size_t		max_bytes;		/* longest answer taken (streamed: longest line) */
	bool		stream;			/* take a streamed answer (below) */
} HttpRequest;

/*
 * A streamed answer: with req.stream the request accepts
 * application/x-ndjson.  When the server answers so, each line is read as
 * it arrives: {"output": {...}} goes to the call's line function
 * (http_call_set_line_fn) at once, and the last line {"result": X} becomes
 * the reply's body X, as if X had been the whole answer.  Any other answer
 * is read whole, as without stream.
 */
typedef void (*HttpLineFn) (void *arg, json_t *output);

/*
 * What came back.  rc is 0 with status and body (NULL if the answer was not
 * JSON), or a negative errno, with error saying why:
 *   -ECONNREFUSED  nothing reached the server: the name did not resolve, the
 *                  connection was refused, or time ran out before any byte
 *                  of the request was sent (safe to try again)
 *   -ETIMEDOUT     the request was sent; no whole answer came in time
 *   -EIO           the request was sent (or sending failed part way); the
 *                  connection broke before a whole answer
 *   -EINTR         the driver took the call back (its session went away)
 *   -EMSGSIZE      the answer was over max_bytes
 *   -EINVAL        the request could not be made (a malformed URL)
 * After -ETIMEDOUT, -EIO or -EMSGSIZE the server may have acted on the
 * request: its outcome is unknown.
 */
typedef struct HttpReply
{
	int			rc;
	long		status;
	json_t	   *body;
	char		error[512];
} HttpReply;

/* Fill req (body is taken over); -ENOMEM when out of memory. */
extern int	http_request_set(HttpRequest *req, const char *method, const char *url,
							 const char *bearer, json_t *body, long timeout_ms,
							 size_t max_bytes);
extern void http_request_clear(HttpRequest *req);
extern void http_reply_clear(HttpReply *reply);

/* Perform req, blocking until it is answered or fails (for tests and tools). */
extern void http_perform(const HttpRequest *req, HttpReply *reply);

/*
 * The same in two halves, for a driver with many requests in flight:
 * http_call_new sets up a call (0, or a negative errno with reply filled
 * in: nothing to perform); http_call_handle is its CURL easy handle (add it
 * to a multi handle; CURLINFO_PRIVATE is the call); http_call_finish takes
 * curl's result for it (a CURLcode), fills reply and frees the call (after
 * curl_multi_remove_handle).  req must stay as it is until then.
 */
typedef struct HttpCall HttpCall;

extern int	http_call_new(const HttpRequest *req, HttpCall **call, HttpReply *reply);
extern void *http_call_handle(HttpCall *call);

/* What the driver keeps with a call (its session), and gets back when curl is done with it. */
extern void http_call_set_owner(HttpCall *call, void *owner);
extern void *http_call_owner(HttpCall *call);

/* Where a streamed answer's output lines go (borrowed; called from curl's write callback). */
extern void http_call_set_line_fn(HttpCall *call, HttpLineFn fn, void *arg);
extern void http_call_finish(HttpCall *call, int curl_result, HttpReply *reply);

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

#endif							/* NADI_HTTP_CLIENT_H */
