/*
 * api.c — nadi's requests to the edge: the checks of what goes into a URL
 * or a body (done before any request: a bad id or a hostile name never
 * reaches the network), one request with libcurl, and the answer's
 * problem+json (RFC 9457) printed on stderr with the exit code its status
 * stands for.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "cli.h"
#include "daemonlib/util.h"

/* 1 to 2^63-1, decimal digits only (no sign, no leading zero) */
bool
command_id_valid(const char *s)
{
	size_t n = s ? strlen(s) : 0;

	if (n < 1 || n > 19 || s[0] == '0' || s[strspn(s, "0123456789")] != '\0')
		return false;
	return n < 19 || strcmp(s, "9223372036854775807") <= 0;
}

/* The extension's rule for tool names (NA013): ^[a-z][a-z0-9_]{0,63}$ */
bool
tool_name_valid(const char *s)
{
	size_t n = s ? strlen(s) : 0;

	if (n < 1 || n > 64 || s[0] < 'a' || s[0] > 'z')
		return false;
	return s[strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_")] == '\0';
}

/* the edge's rule for an Idempotency-Key: 1 to 255 printable ASCII characters */
bool
idem_key_valid(const char *s)
{
	size_t n = strlen(s);

	if (n < 1 || n > 255)
		return false;
	for (; *s; s++)
		if (*s < 0x20 || *s > 0x7e)
			return false;
	return true;
}

/* a session or command state for a filter: lower-case letters */
bool
state_name_valid(const char *s)
{
	size_t n = s ? strlen(s) : 0;

	return n >= 1 && n <= 32 && s[strspn(s, "abcdefghijklmnopqrstuvwxyz_")] == '\0';
}

static int
json_depth(json_t *v)
{
	bool   obj = json_is_object(v);
	size_t n = obj ? json_object_size(v) : json_array_size(v);
	void  *it = obj ? json_object_iter(v) : NULL;
	int	   max = 0;

	if (!obj && !json_is_array(v))
		return 0;
	for (size_t i = 0; i < n; i++)
	{
		int d = json_depth(obj ? json_object_iter_value(it) : json_array_get(v, i));

		if (d > CLI_JSON_DEPTH)
			return d;
		max = MAX(max, d);
		if (obj)
			it = json_object_iter_next(v, it);
	}
	return max + 1;
}

json_t *
json_arg(const char *what, const char *text, bool object)
{
	json_error_t e;
	json_t		*v;

	if (strlen(text) > CLI_BODY_MAX)
	{
		cli_err(EXIT_USAGE, "%s: larger than the edge takes (%d bytes)", what, CLI_BODY_MAX);
		return NULL;
	}
	v = json_loads(text, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &e);
	if (v == NULL)
	{
		cli_err(EXIT_USAGE, "%s: not JSON: %s (column %d)", what, e.text, e.column);
		return NULL;
	}
	if (object && !json_is_object(v))
	{
		cli_err(EXIT_USAGE, "%s: must be a JSON object", what);
		json_decref(v);
		return NULL;
	}
	if (json_depth(v) > CLI_JSON_DEPTH)
	{
		cli_err(EXIT_USAGE, "%s: nested deeper than %d levels", what, CLI_JSON_DEPTH);
		json_decref(v);
		return NULL;
	}
	return v;
}

int
status_exit(long status)
{
	if (status >= 200 && status < 300)
		return EXIT_OK;
	if (status == 401 || status == 403)
		return EXIT_AUTH;
	if (status == 404 || status == 410) /* 410: the session was purged */
		return EXIT_NOT_FOUND;
	if (status == 429 || status >= 500 || status == 0)
		return EXIT_UNAVAILABLE;
	if (status >= 400)
		return EXIT_REFUSED;
	return EXIT_ERROR;
}

/*
 * The length of the control character s starts with: 1 for C0 and DEL, 2
 * for C1 (U+0080 to U+009F in UTF-8: U+009B is a CSI to many terminals), 0
 * for anything a terminal prints.
 */
size_t
term_control(const char *s)
{
	unsigned char c = (unsigned char) s[0];

	if (c < 0x20 || c == 0x7f)
		return c ? 1 : 0;
	if (c == 0xc2 && (unsigned char) s[1] >= 0x80 && (unsigned char) s[1] <= 0x9f)
		return 2;
	return 0;
}

void
term_put(FILE *out, const char *s, bool lines)
{
	for (size_t n; s && *s; s += n ? n : 1)
	{
		n = term_control(s);
		if (n == 0 || (lines && (*s == '\n' || *s == '\t')))
			fputc(*s, out);
		else
			fputc('?', out);
	}
}

/* printable for a terminal: control characters as '?' */
static void
put_clean(FILE *out, const char *s)
{
	term_put(out, s, true);
}

int
problem_print(long status, const char *body, size_t len)
{
	int			code = status_exit(status);
	json_t	   *p = body && len ? json_loadb(body, len, 0, NULL) : NULL;
	const char *title = json_string_value(json_object_get(p, "title"));
	const char *detail = json_string_value(json_object_get(p, "detail"));
	const char *hint = json_string_value(json_object_get(p, "hint"));
	const char *pcode = json_string_value(json_object_get(p, "code"));

	fprintf(stderr, "%s: %ld ", cli_prog, status);
	if (title)
	{
		put_clean(stderr, title);
		if (pcode)
		{
			fputs(" (", stderr);
			put_clean(stderr, pcode);
			fputc(')', stderr);
		}
		if (detail)
		{
			fputs(": ", stderr);
			put_clean(stderr, detail);
		}
		if (hint)
		{
			fputs("\n  hint: ", stderr);
			put_clean(stderr, hint);
		}
	}
	else
		fputs("(the answer is not a problem+json body)", stderr);
	fputc('\n', stderr);
	json_decref(p);
	return code;
}

char *
seg(const char *s)
{
	char *e = curl_easy_escape(NULL, s, 0);
	char *r = e ? strdup(e) : NULL;

	curl_free(e);
	if (r == NULL)
		abort();
	return r;
}

/* a token goes into a header: printable ASCII without spaces only */
static bool
token_safe(const char *t)
{
	for (; *t; t++)
		if (*t <= 0x20 || *t >= 0x7f)
			return false;
	return true;
}

struct curl_slist *
api_headers(struct curl_slist *h)
{
	if (cli_cfg.token)
	{
		char *v = xasprintf("Authorization: Bearer %s", cli_cfg.token);

		h = curl_slist_append(h, v);
		explicit_bzero(v, strlen(v));
		free(v);
	}
	return curl_slist_append(h, "User-Agent: nadi-cli");
}

size_t
answer_append(char *p, size_t size, size_t n, void *arg)
{
	Answer *a = arg;
	size_t	add = size * n;
	char   *q;

	if (a->len + add > 64 * 1024 * 1024)
		return 0;
	if ((q = realloc(a->body, a->len + add + 1)) == NULL)
		return 0;
	a->body = q;
	memcpy(a->body + a->len, p, add);
	a->len += add;
	a->body[a->len] = '\0';
	return add;
}

static size_t
on_header(char *p, size_t size, size_t n, void *arg)
{
	Answer *a = arg;
	size_t	len = size * n;

	if (len >= 27 && strncasecmp(p, "Idempotency-Replayed:", 21) == 0 &&
		strncasecmp(p + 21 + strspn(p + 21, " "), "true", 4) == 0)
		a->replayed = true;
	return len;
}

int
api_call(const char *method, const char *path, json_t *body, const char *idem_key, Answer *a)
{
	_cleanup_(freep) char *url = xasprintf("%s%s", cli_cfg.url, path);
	_cleanup_(freep) char *text = NULL;
	struct curl_slist	  *h = NULL;
	char				   errbuf[CURL_ERROR_SIZE] = "";
	CURL				  *c;
	CURLcode			   rc;
	int					   r;

	memset(a, 0, sizeof(*a));
	if (cli_cfg.token && !token_safe(cli_cfg.token))
		return cli_err(EXIT_USAGE, "the token holds spaces or control characters");
	if (body)
	{
		text = json_dumps(body, JSON_COMPACT);
		if (text == NULL)
			return cli_err(EXIT_ERROR, "out of memory");
		if (strlen(text) > CLI_BODY_MAX)
			return cli_err(EXIT_USAGE, "the request is larger than the edge takes (%d bytes)",
						   CLI_BODY_MAX);
		h = curl_slist_append(h, "Content-Type: application/json");
	}
	if (idem_key)
	{
		_cleanup_(freep) char *v = xasprintf("Idempotency-Key: %s", idem_key);

		h = curl_slist_append(h, v);
	}
	h = curl_slist_append(h, "Accept: application/json");
	h = api_headers(h);
	if ((c = curl_easy_init()) == NULL)
		return cli_err(EXIT_ERROR, "curl_easy_init failed");
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, answer_append);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, a);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, a);
	if (text)
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, text);
	else if (strcmp(method, "POST") == 0)
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
	rc = curl_easy_perform(c);
	if (rc == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &a->status);
	curl_easy_cleanup(c);
	curl_slist_free_all(h);
	if (rc != CURLE_OK)
	{
		answer_free(a);
		return cli_err(EXIT_UNAVAILABLE, "%s %s: %s", method, cli_cfg.url,
					   errbuf[0] ? errbuf : curl_easy_strerror(rc));
	}
	if (a->status >= 200 && a->status < 300)
	{
		if (a->body)
			a->json = json_loadb(a->body, a->len, 0, NULL);
		return EXIT_OK;
	}
	r = problem_print(a->status, a->body, a->len);
	answer_free(a);
	return r;
}

void
answer_free(Answer *a)
{
	free(a->body);
	json_decref(a->json);
	memset(a, 0, sizeof(*a));
}
