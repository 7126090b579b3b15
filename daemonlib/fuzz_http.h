/*
 * fuzz_http.h — the reply side of the HTTP layer, faked for the libFuzzer
 * targets of the daemons' request handlers (sandboxd/fuzz/fuzz_tool_args.c,
 * sandboxd/gitd/fuzz/fuzz_api.c).  Each answer is checked: at most one per
 * request, a valid status, problem codes present, header values without a
 * line break.  The answer itself is dropped.
 *
 * Include it once, in the fuzz target, after the target's own struct
 * http_req, which has at least the members "int replies" (answers given)
 * and "unsigned status" (the last answer's status).
 */
#ifndef NADI_DAEMONLIB_FUZZ_HTTP_H
#define NADI_DAEMONLIB_FUZZ_HTTP_H

#include <assert.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
reply(struct http_req *r, unsigned status)
{
	assert(r->replies == 0);
	assert(status >= 200 && status < 600);
	r->replies++;
	r->status = status;
}

/* As the daemons do: a body that cannot be encoded (or none) is a 500. */
void
http_reply_json(struct http_req *r, unsigned status, json_t *body)
{
	char *s = body ? json_dumps(body, 0) : NULL;

	free(s);
	json_decref(body);
	reply(r, body ? status : 500);
}

void
http_reply_problem(struct http_req *r, unsigned status, const char *code, const char *fmt, ...)
{
	char	buf[1024];
	va_list ap;

	assert(status >= 400 && code && *code);
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	reply(r, status);
}

void
http_add_header(struct http_req *r, const char *name, const char *value)
{
	assert(r->replies == 0 && name && value && !strpbrk(value, "\r\n"));
}

#endif /* NADI_DAEMONLIB_FUZZ_HTTP_H */
