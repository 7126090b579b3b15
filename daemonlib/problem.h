/*
 * problem.h — what the HTTP APIs of the daemons share on top of
 * libmicrohttpd and jansson: RFC 9457 problem+json bodies in one
 * vocabulary (the codes of docs/HTTP_API.md and src/errcodes.txt), JSON
 * and text responses ending in a newline, the bearer token of a request,
 * request bodies read up to a limit, and JSON-object bodies.  How a
 * response reaches its connection stays with each daemon's http.c.
 */
#ifndef NADI_COMMON_PROBLEM_H
#define NADI_COMMON_PROBLEM_H

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
struct problem {
	int status;
	const char *code;         /* stable, machine-readable (docs/HTTP_API.md) */
	const char *title;        /* NULL: problem_title(status) */
	char detail[512];
	char hint[256];
	char sqlstate[6];
	int retry_after;          /* seconds, 0: none; the caller sends Retry-After */
	const char *request_id;   /* the request's id, when the request layer gives one */
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
bool problem_from_sqlstate(struct problem *p, const char *sqlstate, const char *msg, const char *detail,
			   const char *hint);
/* p as problem+json text (malloc'd, compact), NULL when out of memory. */
char *problem_json(const struct problem *p, const char *instance);

/*
 * problem_json() of a problem of status, code and detail (any length; left
 * out when it is not valid UTF-8).  NULL when out of memory.
 */
char *problem_text(unsigned status, const char *code, const char *detail);

/*
 * A response carrying text (taken: freed on failure too) with a newline
 * appended, so that curl output and logs read well; NULL on failure.
 */
struct MHD_Response *text_response(char *text, const char *content_type);

/* The token of "Authorization: Bearer TOKEN", NULL when there is none. */
const char *bearer_token(struct MHD_Connection *conn);

/*
 * A request body read as it arrives, up to limit bytes.  Beyond the limit
 * the body is dropped (too_large) and the rest read and discarded, so that
 * the client gets its 413 rather than a reset, but at most discard_max
 * bytes more.
 */
struct req_body {
	char *data;            /* NUL-terminated; NULL while empty */
	size_t len;
	size_t limit;
	uint64_t seen;
	bool too_large;
};

/* Take *size bytes of upload data; MHD_NO to hang up. */
enum MHD_Result req_body_feed(struct req_body *b, const char *data, size_t *size, uint64_t discard_max);
void req_body_free(struct req_body *b);
/* A Content-Length header above limit: refuse before reading the body. */
bool req_body_announced_too_large(struct MHD_Connection *conn, uint64_t limit);

/*
 * What a request handler keeps of one request until its answer is queued:
 * method and path, the body, extra response headers, and the answer.  Each
 * daemon's struct http_req starts with one and adds its own fields.
 */
#define MHD_REQ_MAX_HEADERS 4

struct mhd_req {
	const char *method;    /* MHD's, valid until the request completes */
	char *path;
	struct req_body body;
	unsigned status;
	struct MHD_Response *resp;   /* the answer, until it is queued */
	const char *hdr_name[MHD_REQ_MAX_HEADERS];
	char *hdr_value[MHD_REQ_MAX_HEADERS];
	int n_hdr;
};

int mhd_req_init(struct mhd_req *r, const char *method, const char *url, size_t body_limit);
/* A header for the answer (name static, value copied); more than four are dropped. */
void mhd_req_add_header(struct mhd_req *r, const char *name, const char *value);
/*
 * Keep resp (taken) as the answer, with the extra headers.  A NULL resp
 * (out of memory) becomes an empty 500.  false when there is no answer
 * to keep: allocation failed, or the request has one already (a bug,
 * logged; the first stays).
 */
bool mhd_req_answer(struct mhd_req *r, unsigned status, struct MHD_Response *resp);
/*
 * A problem+json response for r, the detail formatted into at most
 * detail_max bytes (NULL when out of memory); answers of 500 and above
 * are logged with the request.
 */
struct MHD_Response *mhd_req_problem(const struct mhd_req *r, unsigned status, const char *code, size_t detail_max,
				     const char *fmt, va_list ap) __attribute__((format(printf, 5, 0)));
/* Queue the kept answer on conn; MHD_NO when there is none. */
enum MHD_Result mhd_req_queue(struct mhd_req *r, struct MHD_Connection *conn);
/* The request ended (toe says how; logged unless it completed): free all but r itself. */
void mhd_req_done(struct mhd_req *r, enum MHD_RequestTerminationCode toe);

/*
 * A non-empty body that must be a JSON object.  NULL with why filled
 * ("the request body is not valid JSON: ..." or "... must be a JSON
 * object") otherwise.
 */
json_t *json_object_parse(const char *body, size_t len, char *why, size_t whylen);

#endif
