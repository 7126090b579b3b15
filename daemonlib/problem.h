/*
 * problem.h — what the HTTP APIs of the sandbox-host daemons share on top
 * of libmicrohttpd and jansson: RFC 9457 problem+json bodies with a stable
 * "code", JSON and text responses ending in a newline, the bearer token of
 * a request, request bodies read up to a limit, and JSON-object bodies.
 * How a response reaches its connection (at once, after a suspend, from a
 * connection thread) stays with each daemon's http.c.
 */
#ifndef NADI_COMMON_PROBLEM_H
#define NADI_COMMON_PROBLEM_H

#include <jansson.h>
#include <stdarg.h>
#include <microhttpd.h>

#include "util.h"

/* The reason phrase of status, "Error" for an unknown one. */
const char *http_reason(unsigned status);

/*
 * {"type":"about:blank","title":...,"status":...,"code":...,"detail":...}
 * encoded (compact, ASCII); without "detail" when it is not valid UTF-8.
 * NULL when out of memory.
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
