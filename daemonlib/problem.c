/*
 * problem.c — see problem.h.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "problem.h"

const char *
http_reason(unsigned status)
{
	const char *s = MHD_get_reason_phrase_for(status);
	return s && *s ? s : "Error";
}

char *
problem_text(unsigned status, const char *code, const char *detail)
{
	json_t *j;
	char *text;

	j = json_pack("{s:s, s:s, s:i, s:s, s:s}", "type", "about:blank", "title", http_reason(status), "status",
		      (int)status, "code", code, "detail", detail);
	if (!j) /* invalid UTF-8 in the detail (one cut short, say): say less rather than nothing */
		j = json_pack("{s:s, s:s, s:i, s:s}", "type", "about:blank", "title", http_reason(status), "status",
			      (int)status, "code", code);
	text = j ? json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
	json_decref(j);
	return text;
}

struct MHD_Response *
text_response(char *text, const char *content_type)
{
	size_t len = strlen(text);
	char *nl = realloc(text, len + 2);
	struct MHD_Response *resp;

	if (nl) {
		text = nl;
		text[len++] = '\n';
		text[len] = '\0';
	}
	resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(text);
		return NULL;
	}
	if (content_type)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
	return resp;
}

const char *
bearer_token(struct MHD_Connection *conn)
{
	const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);

	if (!h || strncasecmp(h, "Bearer ", 7) != 0)
		return NULL;
	h += 7;
	while (*h == ' ')
		h++;
	return h;
}

enum MHD_Result
req_body_feed(struct req_body *b, const char *data, size_t *size, uint64_t discard_max)
{
	b->seen += *size;
	if (!b->too_large && b->len + *size > b->limit) {
		b->too_large = true;
		req_body_free(b);
	}
	if (b->too_large) {
		*size = 0;
		return b->seen > b->limit + discard_max ? MHD_NO : MHD_YES;
	}
	char *nb = realloc(b->data, b->len + *size + 1);
	if (!nb)
		return MHD_NO;
	b->data = nb;
	memcpy(b->data + b->len, data, *size);
	b->len += *size;
	b->data[b->len] = '\0';
	*size = 0;
	return MHD_YES;
}

void
req_body_free(struct req_body *b)
{
	free(b->data);
	b->data = NULL;
	b->len = 0;
}

bool
req_body_announced_too_large(struct MHD_Connection *conn, uint64_t limit)
{
	const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);

	return cl && strtoull(cl, NULL, 10) > limit;
}

json_t *
json_object_parse(const char *body, size_t len, char *why, size_t whylen)
{
	json_error_t err;
	json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &err);

	if (!j) {
		snprintf(why, whylen, "the request body is not valid JSON: %s (line %d, column %d)", err.text, err.line,
			 err.column);
		return NULL;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		snprintf(why, whylen, "the request body must be a JSON object");
		return NULL;
	}
	return j;
}

int
mhd_req_init(struct mhd_req *r, const char *method, const char *url, size_t body_limit)
{
	r->method = method;
	r->body.limit = body_limit;
	r->path = strdup(url);
	return r->path ? 0 : -ENOMEM;
}

void
mhd_req_add_header(struct mhd_req *r, const char *name, const char *value)
{
	if (r->n_hdr < MHD_REQ_MAX_HEADERS && (r->hdr_value[r->n_hdr] = strdup(value)))
		r->hdr_name[r->n_hdr++] = name;
}

bool
mhd_req_answer(struct mhd_req *r, unsigned status, struct MHD_Response *resp)
{
	if (!resp) {
		log_error("cannot allocate an HTTP response");
		resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
		status = MHD_HTTP_INTERNAL_SERVER_ERROR;
		if (!resp)
			return false;
	}
	if (r->resp) {
		/* A second answer to one request is a bug; keep the first. */
		log_error("request %s %s answered twice", r->method, r->path);
		MHD_destroy_response(resp);
		return false;
	}
	for (int i = 0; i < r->n_hdr; i++)
		MHD_add_response_header(resp, r->hdr_name[i], r->hdr_value[i]);
	r->status = status;
	r->resp = resp;
	return true;
}

struct MHD_Response *
mhd_req_problem(const struct mhd_req *r, unsigned status, const char *code, size_t detail_max, const char *fmt,
		va_list ap)
{
	_cleanup_(freep) char *detail = malloc(detail_max);
	char *text;

	if (!detail)
		return NULL;
	vsnprintf(detail, detail_max, fmt, ap);
	text = problem_text(status, code, detail);
	if (status >= 500)
		log_warning("%s %s -> %u %s: %s", r->method, r->path, status, code, detail);
	return text ? text_response(text, "application/problem+json") : NULL;
}

enum MHD_Result
mhd_req_queue(struct mhd_req *r, struct MHD_Connection *conn)
{
	enum MHD_Result ret;

	if (!r->resp)
		return MHD_NO;
	ret = MHD_queue_response(conn, r->status, r->resp);
	MHD_destroy_response(r->resp);
	r->resp = NULL;
	r->status = 0;
	return ret;
}

void
mhd_req_done(struct mhd_req *r, enum MHD_RequestTerminationCode toe)
{
	if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
		log_debug("%s %s: connection ended early (%d)", r->method, r->path, (int)toe);
	if (r->resp)
		MHD_destroy_response(r->resp);
	r->resp = NULL;
	for (int i = 0; i < r->n_hdr; i++)
		free(r->hdr_value[i]);
	r->n_hdr = 0;
	req_body_free(&r->body);
	free(r->path);
	r->path = NULL;
}
