/*
 * problem.h — what the HTTP APIs of the sandbox-host daemons share on top
 * of libmicrohttpd and jansson: RFC 9457 problem+json bodies with a stable
 * "code", JSON and text responses ending in a newline, and JSON-object
 * bodies.  The request layer (request ids, the access log, bodies, bearer
 * tokens, the per-request record) is http.h.
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

/*
 * A non-empty body that must be a JSON object.  NULL with why filled
 * ("the request body is not valid JSON: ..." or "... must be a JSON
 * object") otherwise.
 */
json_t *json_object_parse(const char *body, size_t len, char *why, size_t whylen);

#endif
