/*
 * problem.c — see problem.h.
 */
#include <stdio.h>
#include <string.h>

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
