/*
 * problem.h — what the HTTP APIs of the daemons share on top of
 * libmicrohttpd and jansson: RFC 9457 problem+json bodies in one
 * vocabulary (the codes of docs/HTTP_API.md and src/errcodes.txt), JSON
 * and text responses ending in a newline, and JSON-object bodies.  The
 * request layer (request ids, the access log, bodies, bearer tokens, the
 * per-request record) is http.h.
 */
#ifndef NADI_DAEMONLIB_PROBLEM_H
#define NADI_DAEMONLIB_PROBLEM_H

#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <microhttpd.h>

/*
 * A problem+json answer in the making.  Every daemon renders its problems
 * with problem_json(), so that all speak the same words:
 *
 *   {"type":"urn:nadi:problem:CODE","title":...,"status":...,"code":"CODE",
 *    "detail":...,"hint":...,"sqlstate":...,"instance":...,"request_id":...}
 *
 * detail, hint and sqlstate only when set (sqlstate only below 500),
 * instance and request_id only when given.
 */
struct problem
{
	int			status;
	const char *code;  /* stable, machine-readable (docs/HTTP_API.md) */
	const char *title; /* NULL: problem_title(status) */
	char		detail[512];
	char		hint[256];
	char		sqlstate[6];
	int			retry_after; /* seconds, 0: none; the caller sends Retry-After */
	const char *request_id;	 /* the request's id, when the request layer gives one */
};

/* The title of a problem of status: "Not found", "Content too large", ... */
const char *problem_title(int status);
/* p = a problem of status and code, its detail formatted (fmt may be NULL). */
void problem_set(struct problem *p, int status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/*
 * p = the answer to a database error, by the list of src/errcodes.txt.  A
 * listed SQLSTATE below 500 keeps the database's text (errmsg and errdetail
 * in detail, errhint in hint: the extension writes them for callers); a 503
 * asks to retry (retry_after 1), anything else is a 500 internal_error.
 * Those two say nothing of the database's text: false tells the caller to
 * log it.
 */
bool problem_from_sqlstate(struct problem *p, const char *sqlstate, const char *msg,
						   const char *detail, const char *hint);
/* p as problem+json text (malloc'd, compact), NULL when out of memory. */
char *problem_json(const struct problem *p, const char *instance);

/*
 * problem_json() of a problem of status, code and detail (any length; left
 * out when it is not valid UTF-8), with "request_id" when request_id is
 * neither NULL nor empty.  NULL when out of memory.
 */
char *problem_text(unsigned status, const char *code, const char *detail, const char *request_id);

/*
 * A response carrying text (taken: freed on failure too) with a newline
 * appended, so that curl output and logs read well; NULL on failure.
 * *bytes (when not NULL) gets the length of the body sent, for the access log.
 */
struct MHD_Response *text_response(char *text, const char *content_type, int64_t *bytes);

/*
 * A non-empty body that must be a JSON object.  NULL with why filled
 * ("the request body is not valid JSON: ..." or "... must be a JSON
 * object") otherwise.
 */
json_t *json_object_parse(const char *body, size_t len, char *why, size_t whylen);

#endif
