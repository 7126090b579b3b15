/*
 * problem.c — see problem.h.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "errcodes.h"
#include "log.h"
#include "problem.h"

const char *
problem_title(int status)
{
	switch (status)
	{
		case 400:
			return "Bad request";
		case 401:
			return "Unauthorized";
		case 403:
			return "Forbidden";
		case 404:
			return "Not found";
		case 405:
			return "Method not allowed";
		case 406:
			return "Not acceptable";
		case 408:
			return "Request timeout";
		case 409:
			return "Conflict";
		case 410:
			return "Gone";
		case 413:
			return "Content too large";
		case 415:
			return "Unsupported media type";
		case 422:
			return "Unprocessable content";
		case 426:
			return "Upgrade required";
		case 429:
			return "Too many requests";
		case 501:
			return "Not implemented";
		case 502:
			return "Bad gateway";
		case 503:
			return "Service unavailable";
		case 504:
			return "Gateway timeout";
		case 507:
			return "Insufficient storage";
		default:
			return status >= 500 ? "Internal server error" : "Error";
	}
}

void
problem_set(struct problem *p, int status, const char *code, const char *fmt, ...)
{
	va_list ap;

	memset(p, 0, sizeof(*p));
	p->status = status;
	p->code = code;
	p->title = problem_title(status);
	if (fmt)
	{
		va_start(ap, fmt);
		vsnprintf(p->detail, sizeof(p->detail), fmt, ap);
		va_end(ap);
	}
}

bool
problem_from_sqlstate(struct problem *p, const char *sqlstate, const char *msg, const char *detail,
					  const char *hint)
{
	const ErrcodeInfo *e = errcode_find(sqlstate);

	if (e && e->status < 500)
	{
		memset(p, 0, sizeof(*p));
		p->status = e->status;
		p->code = e->code;
		p->title = e->title;
		snprintf(p->sqlstate, sizeof(p->sqlstate), "%s", sqlstate);
		if (msg && detail && *detail)
			snprintf(p->detail, sizeof(p->detail), "%s. %s", msg, detail);
		else if (msg)
			snprintf(p->detail, sizeof(p->detail), "%s", msg);
		if (hint)
			snprintf(p->hint, sizeof(p->hint), "%s", hint);
		return true;
	}
	if (e && e->status == 503)
	{
		problem_set(p, 503, e->code, "The database could not complete the request; retry.");
		p->retry_after = 1;
	}
	else
		problem_set(p, 500, "internal_error", "The request failed inside the service.");
	if (sqlstate)
		snprintf(p->sqlstate, sizeof(p->sqlstate), "%s", sqlstate);
	return false;
}

static char *
problem_render(int status, const char *code, const char *title, const char *detail,
			   const char *hint, const char *sqlstate, const char *instance, const char *request_id)
{
	json_t *o = json_object();
	char	type[128];
	char   *text;

	if (!o)
		return NULL;
	code = code ? code : "error";
	snprintf(type, sizeof(type), "urn:nadi:problem:%s", code);
	json_object_set_new(o, "type", json_string(type));
	json_object_set_new(o, "title", json_string(title ? title : problem_title(status)));
	json_object_set_new(o, "status", json_integer(status));
	json_object_set_new(o, "code", json_string(code));
	/* Text that is not valid UTF-8 (one cut short, say) is left out: json_string() is NULL. */
	if (detail && *detail)
		json_object_set_new(o, "detail", json_string(detail));
	if (hint && *hint)
		json_object_set_new(o, "hint", json_string(hint));
	if (sqlstate && *sqlstate && status < 500)
		json_object_set_new(o, "sqlstate", json_string(sqlstate));
	if (instance)
		json_object_set_new(o, "instance", json_string(instance));
	if (request_id && *request_id)
		json_object_set_new(o, "request_id", json_string(request_id));
	text = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return text;
}

char *
problem_json(const struct problem *p, const char *instance)
{
	return problem_render(p->status, p->code, p->title, p->detail, p->hint, p->sqlstate, instance,
						  p->request_id);
}

char *
problem_text(unsigned status, const char *code, const char *detail, const char *request_id)
{
	return problem_render((int) status, code, NULL, detail, NULL, NULL, NULL, request_id);
}

struct MHD_Response *
text_response(char *text, const char *content_type, int64_t *bytes)
{
	size_t				 len = strlen(text);
	char				*nl = realloc(text, len + 2);
	struct MHD_Response *resp;

	if (nl)
	{
		text = nl;
		text[len++] = '\n';
		text[len] = '\0';
	}
	if (bytes)
		*bytes = (int64_t) len;
	resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
	if (!resp)
	{
		free(text);
		return NULL;
	}
	if (content_type)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
	return resp;
}

json_t *
json_object_parse(const char *body, size_t len, char *why, size_t whylen)
{
	json_error_t err;
	json_t		*j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &err);

	if (!j)
	{
		snprintf(why, whylen, "the request body is not valid JSON: %s (line %d, column %d)",
				 err.text, err.line, err.column);
		return NULL;
	}
	if (!json_is_object(j))
	{
		json_decref(j);
		snprintf(why, whylen, "the request body must be a JSON object");
		return NULL;
	}
	return j;
}
