/*
 * proxy.c — one exchange (see proxy.h): check the request, ask
 * nadi.proxy_authorize(), read the body (bounded), forward it with the
 * upstream's credential in place of the client's token, stream the answer
 * back (bounded), and report the end to nadi.proxy_finish().  Nothing is
 * forwarded without an "allowed" answer from the database.  Runs on the
 * connection's own thread, so it may block (database, upstream).
 */
#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <openssl/crypto.h>

#include "fwd.h"
#include "http.h"
#include "pg.h"
#include "proxy.h"
#include "target.h"

#define READ_BLOCK (32u << 10)
#define DISCARD_MAX (1u << 20) /* bytes of an oversized body read before hanging up */

struct proxy_stats proxy_stats;

struct exchange
{
	struct client		  *client;
	struct MHD_Connection *mc;
	char				  *uri;
	char				   method[17];
	struct target		   target;
	char				  *token; /* cleansed before it is freed */
	enum token_source	   token_src;
	char				  *body;
	size_t				   body_len;
	uint64_t			   seen;
	bool				   started, answered, too_large, streaming;
	int64_t				   exchange_id; /* > 0 once authorized: proxy_finish is owed */
	struct curl_slist	  *headers;		/* sent upstream; holds the credential */
	struct fwd			  *fwd;
	unsigned			   status; /* the upstream's, passed on */
	uint64_t			   bytes_down;
	const char			  *error; /* why the answer is not the upstream's, whole */
	uint64_t			   t0;	  /* µs */
};

struct exchange *
proxy_new(const char *uri, struct client *client)
{
	struct exchange *ex = calloc(1, sizeof *ex);

	if (!ex)
		return NULL;
	ex->uri = strdup(uri ? uri : "");
	ex->client = client;
	ex->t0 = now_us();
	if (!ex->uri)
	{
		free(ex);
		return NULL;
	}
	atomic_fetch_add(&proxy_stats.requests, 1);
	return ex;
}

const char *
proxy_uri(const struct exchange *ex)
{
	return ex->uri;
}

struct client *
proxy_client(const struct exchange *ex)
{
	return ex->client;
}

static const char *
where(const struct exchange *ex)
{
	return ex->client && ex->client->sbx ? sandbox_id(ex->client->sbx) : "main";
}

/* A refusal or error of the proxy's own; the request was not (or no longer) forwarded. */
static enum MHD_Result
refuse(struct exchange *ex, unsigned status, const char *code, const char *const *headers,
	   const char *detail)
{
	ex->answered = true;
	atomic_fetch_add(&proxy_stats.refused, 1);
	log_info("[%s] %s %s%s -> %u %s", where(ex), ex->method,
			 ex->target.up ? ex->target.up->name : "-", ex->target.path ? ex->target.path : "",
			 status, code);
	return http_reply_problem(ex->mc, status, code, headers, "%s", detail);
}

static bool
method_valid(const char *m)
{
	size_t n = strlen(m);

	if (n == 0 || n > 16)
		return false;
	for (; *m; m++)
		if (*m < 'A' || *m > 'Z')
			return false;
	return true;
}

static const char *
header(struct MHD_Connection *mc, const char *name)
{
	return MHD_lookup_connection_value(mc, MHD_HEADER_KIND, name);
}

/* nadi.proxy_authorize(); refuses itself unless the answer is "allowed". */
static enum MHD_Result
authorize(struct exchange *ex)
{
	static const char *const retry[] = {"Retry-After", "1", NULL};
	const char *sbx = ex->client && ex->client->sbx ? sandbox_id(ex->client->sbx) : NULL;
	json_t	   *ans = NULL, *v;
	char		errcode[6];
	int			r;

	r = pg_authorize(ex->token, sbx, ex->target.up->name, ex->method, ex->target.path, &ans,
					 errcode);
	if (r < 0)
	{
		if (strncmp(errcode, "22", 2) == 0)
			return refuse(ex, 400, "invalid_request", NULL,
						  "the database refused the request's upstream, method or path as invalid");
		return refuse(ex, 503, "database_unavailable", retry,
					  r == -EBUSY
						  ? "every database connection is busy; nothing was forwarded"
						  : "the database cannot be reached to authorize the request; nothing was "
							"forwarded");
	}
	v = json_object_get(ans, "exchange_id");
	if (json_is_true(json_object_get(ans, "allowed")) && json_is_integer(v) &&
		json_integer_value(v) > 0)
	{
		ex->exchange_id = json_integer_value(v);
		json_decref(ans);
		return MHD_YES;
	}
	{
		json_t	   *st = json_object_get(ans, "status");
		const char *code = json_string_value(json_object_get(ans, "code"));
		const char *detail = json_string_value(json_object_get(ans, "detail"));
		unsigned	status =
			   json_is_integer(st) && json_integer_value(st) >= 400 && json_integer_value(st) < 500
				   ? (unsigned) json_integer_value(st)
				   : 403;
		char			codebuf[64];
		enum MHD_Result ret;

		/* The code is a stable identifier; keep it one even if the database said something odd. */
		snprintf(codebuf, sizeof codebuf, "%s", code && *code ? code : "not_allowed");
		for (char *p = codebuf; *p; p++)
			if (!isalnum((unsigned char) *p) && *p != '_')
				*p = '_';
		ret = refuse(ex, status, codebuf, NULL, detail ? detail : "the request is not allowed");
		json_decref(ans);
		return ret;
	}
}

/* The first call: everything that can be decided before the body. */
static enum MHD_Result
begin(struct exchange *ex, const char *method)
{
	static const char *const close_conn[] = {"Connection", "close", NULL};
	static const char *const retry_close[] = {"Retry-After", "1", "Connection", "close", NULL};
	static const char *const ask_407[] = {"Proxy-Authenticate", "Basic realm=\"nadi-credproxy\"",
										  NULL};
	static const char *const ask_401[] = {"Proxy-Authenticate", "Basic realm=\"nadi-credproxy\"",
										  "WWW-Authenticate", "Bearer realm=\"nadi-credproxy\"",
										  NULL};
	struct problem			 p;
	const char				*why;

	snprintf(ex->method, sizeof ex->method, "%s", method);
	if (atomic_load(&cp_draining))
		return refuse(ex, 503, "draining", retry_close, "the proxy is shutting down");
	if (ex->client && ex->client->over_limit)
		return refuse(ex, 429, "too_many_connections", close_conn,
					  ex->client->sbx ? "this sandbox has too many connections to the proxy open"
									  : "the proxy has too many connections open");
	if (strcmp(method, "CONNECT") == 0)
		return refuse(
			ex, 405, "connect_not_supported", close_conn,
			"CONNECT opens a TLS tunnel, and the proxy cannot add credentials to a tunnel; send "
			"plain http:// requests through the proxy (it speaks https to the upstream itself) "
			"or use /u/UPSTREAM/PATH");
	if (!method_valid(method))
		return refuse(ex, 400, "invalid_method", NULL, "the method must be an upper-case token");
	if (target_parse(ex->uri, &ex->target, &p) < 0)
		return refuse(ex, p.status, p.code, NULL, p.detail);

	ex->token = malloc(CP_TOKEN_MAX + 1);
	if (!ex->token)
		return MHD_NO;
	ex->token_src = token_extract(header(ex->mc, MHD_HTTP_HEADER_PROXY_AUTHORIZATION),
								  header(ex->mc, MHD_HTTP_HEADER_AUTHORIZATION), ex->token,
								  CP_TOKEN_MAX + 1, &why);
	if (ex->token_src == TOKEN_NONE)
		return refuse(ex, ex->target.absolute ? 407 : 401, "token_missing",
					  ex->target.absolute ? ask_407 : ask_401, why);
	if (req_body_announced_too_large(ex->mc, cfg.max_request_bytes))
	{
		char d[128];
		snprintf(d, sizeof d, HTTP_BODY_TOO_LARGE_DETAIL,
				 (unsigned long long) cfg.max_request_bytes);
		return refuse(ex, HTTP_BODY_TOO_LARGE_STATUS, HTTP_BODY_TOO_LARGE_CODE, close_conn, d);
	}
	return authorize(ex);
}

static enum MHD_Result
upload(struct exchange *ex, const char *data, size_t *size)
{
	size_t n = *size;

	*size = 0;
	ex->seen += n;
	if (ex->answered || ex->too_large)
		return ex->seen > cfg.max_request_bytes + DISCARD_MAX ? MHD_NO : MHD_YES;
	if (ex->body_len + n > cfg.max_request_bytes)
	{
		ex->too_large = true;
		free(ex->body);
		ex->body = NULL;
		ex->body_len = 0;
		return MHD_YES;
	}
	char *nb = realloc(ex->body, ex->body_len + n + 1);
	if (!nb)
		return MHD_NO;
	ex->body = nb;
	memcpy(ex->body + ex->body_len, data, n);
	ex->body_len += n;
	return MHD_YES;
}

struct header_ctx
{
	struct exchange *ex;
	const char		*connection; /* the client's Connection header: names more hop-by-hop headers */
	bool			 has_content_type;
	bool			 failed;
};

static enum MHD_Result
add_request_header(void *cls, enum MHD_ValueKind kind, const char *name, const char *value)
{
	struct header_ctx *h = cls;
	struct exchange	  *ex = h->ex;
	struct curl_slist *l;
	char			  *line;
	(void) kind;

	if (!name || header_is_hop_by_hop(name) || strcasecmp(name, "Host") == 0 ||
		strcasecmp(name, "Content-Length") == 0 || strcasecmp(name, "Expect") == 0 ||
		strcasecmp(name, ex->target.up->header) == 0 || header_list_has(h->connection, name) ||
		(strcasecmp(name, "Authorization") == 0 &&
		 (ex->token_src == TOKEN_AUTHORIZATION || (value && strstr(value, ex->token)))))
		return MHD_YES; /* the token goes nowhere, whichever header carries it */
	if (strcasecmp(name, "Content-Type") == 0)
		h->has_content_type = true;
	/* curl sends "Name;" as a header with an empty value, "Name:" not at all */
	line = value && *value ? xasprintf("%s: %s", name, value) : xasprintf("%s;", name);
	l = line ? curl_slist_append(ex->headers, line) : NULL;
	free(line);
	if (!l)
	{
		h->failed = true;
		return MHD_NO;
	}
	ex->headers = l;
	return MHD_YES;
}

/* The upstream's credential, under the secret lock (SIGHUP may replace it). */
static int
add_credential(struct exchange *ex)
{
	const struct upstream *up = ex->target.up;
	const char			  *pct;
	struct curl_slist	  *l = NULL;
	char				  *line;

	pthread_rwlock_rdlock(&cp_secret_lock);
	pct = strstr(up->format, "%s");
	line = up->secret ? xasprintf("%s: %.*s%s%s", up->header, (int) (pct - up->format), up->format,
								  up->secret, pct + 2)
					  : NULL;
	pthread_rwlock_unlock(&cp_secret_lock);
	if (line)
	{
		l = curl_slist_append(ex->headers, line);
		OPENSSL_cleanse(line, strlen(line));
		free(line);
	}
	if (!l)
		return -ENOMEM;
	ex->headers = l;
	return 0;
}

static ssize_t
read_body(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct exchange *ex = cls;
	uint64_t		 room = cfg.max_response_bytes - ex->bytes_down;
	ssize_t			 n;
	char			 probe;
	(void) pos;

	/* At the limit: one byte more says whether the answer is too large. */
	n = room == 0 ? fwd_read(ex->fwd, &probe, 1)
				  : fwd_read(ex->fwd, buf, (size_t) MIN((uint64_t) max, room));
	if (n > 0 && room == 0)
	{
		ex->error = "response_too_large";
		log_warning("[%s] %s %s: the answer exceeds %llu bytes; connection cut", where(ex),
					ex->method, ex->target.up->name, (unsigned long long) cfg.max_response_bytes);
		atomic_fetch_add(&proxy_stats.upstream_errors, 1);
		return MHD_CONTENT_READER_END_WITH_ERROR;
	}
	if (n > 0)
	{
		ex->bytes_down += (uint64_t) n;
		return n;
	}
	if (n == 0)
		return MHD_CONTENT_READER_END_OF_STREAM;
	ex->error = n == -ETIMEDOUT	  ? "upstream_timeout"
				: n == -ECANCELED ? "shutdown"
								  : "upstream_error";
	log_warning("[%s] %s %s: the answer broke off after %llu bytes: %s", where(ex), ex->method,
				ex->target.up->name, (unsigned long long) ex->bytes_down, fwd_error(ex->fwd));
	atomic_fetch_add(&proxy_stats.upstream_errors, 1);
	return MHD_CONTENT_READER_END_WITH_ERROR;
}

/* Whether an answer header of the upstream is passed on. */
static bool
response_header_passes(const char *name, const char *connection)
{
	return !header_is_hop_by_hop(name) && strcasecmp(name, "Content-Length") != 0 &&
		   strcasecmp(name, "Date") != 0 && !header_list_has(connection, name);
}

/* The last call: the body is in; send it upstream and start the answer. */
static enum MHD_Result
forward(struct exchange *ex)
{
	static const char *const close_conn[] = {"Connection", "close", NULL};
	struct header_ctx	   h = {.ex = ex, .connection = header(ex->mc, MHD_HTTP_HEADER_CONNECTION)};
	struct fwd_request	   req = {.up = ex->target.up, .method = ex->method};
	struct MHD_Response	  *resp;
	const char			  *up_connection = NULL;
	char				   detail[512];
	_cleanup_(freep) char *url = NULL;
	int64_t				   cl;
	bool				   no_body;
	int					   r;

	if (ex->too_large)
	{
		ex->error = "body_too_large";
		snprintf(detail, sizeof detail, HTTP_BODY_TOO_LARGE_DETAIL,
				 (unsigned long long) cfg.max_request_bytes);
		return refuse(ex, HTTP_BODY_TOO_LARGE_STATUS, HTTP_BODY_TOO_LARGE_CODE, close_conn, detail);
	}
	MHD_get_connection_values(ex->mc, MHD_HEADER_KIND, add_request_header, &h);
	url = target_url(&ex->target);
	if (h.failed || !url || add_credential(ex) < 0 ||
		!(ex->headers = curl_slist_append(ex->headers, "Expect:")) ||
		(!h.has_content_type && !(ex->headers = curl_slist_append(ex->headers, "Content-Type:"))))
	{
		ex->error = "internal";
		return refuse(ex, 500, "internal", NULL, "out of memory");
	}
	req.url = url;
	req.headers = ex->headers;
	req.body = ex->body;
	req.body_len = ex->body_len;
	if (!req.body && (strcmp(ex->method, "POST") == 0 || strcmp(ex->method, "PUT") == 0 ||
					  strcmp(ex->method, "PATCH") == 0))
		req.body = ""; /* an empty body with its Content-Length: 0 */

	atomic_fetch_add(&proxy_stats.forwarded, 1);
	atomic_fetch_add(&proxy_stats.bytes_up, ex->body_len);
	r = fwd_start(&req, &ex->fwd);
	if (r < 0)
	{
		const char *code = r == -ETIMEDOUT		? "upstream_timeout"
						   : r == -ECONNREFUSED ? "upstream_unreachable"
						   : r == -ECANCELED	? "draining"
												: "upstream_error";
		unsigned	status = r == -ETIMEDOUT ? 504 : r == -ECANCELED ? 503 : 502;
		ex->error = code;
		atomic_fetch_add(&proxy_stats.upstream_errors, 1);
		log_warning("[%s] %s %s%s: %s", where(ex), ex->method, ex->target.up->name, ex->target.path,
					ex->fwd ? fwd_error(ex->fwd) : strerror(-r));
		snprintf(detail, sizeof detail, "upstream %s: %s", ex->target.up->name,
				 r == -ETIMEDOUT	  ? "no answer within the time limit"
				 : r == -ECONNREFUSED ? "cannot connect"
				 : r == -ECANCELED	  ? "the proxy is shutting down"
									  : "the exchange failed");
		return refuse(ex, status, code, NULL, detail);
	}
	ex->status = fwd_status(ex->fwd);
	cl = fwd_content_length(ex->fwd);
	if (cl >= 0 && (uint64_t) cl > cfg.max_response_bytes)
	{
		ex->error = "response_too_large";
		atomic_fetch_add(&proxy_stats.upstream_errors, 1);
		snprintf(detail, sizeof detail,
				 "upstream %s answered with %lld bytes, more than the %llu byte limit",
				 ex->target.up->name, (long long) cl, (unsigned long long) cfg.max_response_bytes);
		return refuse(ex, 502, "response_too_large", NULL, detail);
	}
	no_body = strcmp(ex->method, "HEAD") == 0 || ex->status == 204 || ex->status == 304;
	if (no_body && strcmp(ex->method, "HEAD") != 0)
		resp = MHD_create_response_from_buffer(0, (void *) "", MHD_RESPMEM_PERSISTENT);
	else
		resp = MHD_create_response_from_callback(cl >= 0 ? (uint64_t) cl : MHD_SIZE_UNKNOWN,
												 READ_BLOCK, read_body, ex, NULL);
	if (!resp)
	{
		ex->error = "internal";
		return refuse(ex, 500, "internal", NULL, "out of memory");
	}
	for (size_t i = 0; i < fwd_header_count(ex->fwd); i++)
	{
		const char *name, *value;
		fwd_header(ex->fwd, i, &name, &value);
		if (strcasecmp(name, "Connection") == 0)
			up_connection = value;
	}
	for (size_t i = 0; i < fwd_header_count(ex->fwd); i++)
	{
		const char *name, *value;
		fwd_header(ex->fwd, i, &name, &value);
		if (response_header_passes(name, up_connection))
			MHD_add_response_header(resp, name, value);
	}
	if (atomic_load(&cp_draining))
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
	ex->answered = true;
	ex->streaming = true;
	{
		enum MHD_Result ret = MHD_queue_response(ex->mc, ex->status, resp);
		MHD_destroy_response(resp);
		return ret;
	}
}

enum MHD_Result
proxy_request(struct exchange *ex, struct MHD_Connection *mc, const char *method,
			  const char *upload_data, size_t *upload_data_size)
{
	ex->mc = mc;
	if (!ex->started)
	{
		ex->started = true;
		return begin(ex, method);
	}
	if (*upload_data_size)
		return upload(ex, upload_data, upload_data_size);
	if (ex->answered)
		return MHD_YES;
	return forward(ex);
}

void
proxy_end(struct exchange *ex, enum MHD_RequestTerminationCode toe)
{
	double	 ms = (double) (now_us() - ex->t0) / 1000.0;
	uint64_t up = ex->fwd ? fwd_bytes_sent(ex->fwd) : 0;

	if (ex->exchange_id > 0)
	{
		const char *error = ex->error;
		if (!error && toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
			error = toe == MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN ? "shutdown" : "client_gone";
		atomic_fetch_add(&proxy_stats.bytes_down, ex->bytes_down);
		if (ex->streaming)
			log_info("[%s] %s %s%s -> %u, %llu bytes up, %llu down, %.0f ms%s%s", where(ex),
					 ex->method, ex->target.up->name, ex->target.path, ex->status,
					 (unsigned long long) up, (unsigned long long) ex->bytes_down, ms,
					 error ? ": " : "", error ? error : "");
		if (pg_finish(ex->exchange_id, ex->status, up, ex->bytes_down, ms, error) < 0)
			log_warning("exchange %lld: the end could not be recorded",
						(long long) ex->exchange_id);
	}
	fwd_free(ex->fwd);
	for (struct curl_slist *l = ex->headers; l; l = l->next)
		OPENSSL_cleanse(l->data, strlen(l->data));
	curl_slist_free_all(ex->headers);
	if (ex->token)
	{
		OPENSSL_cleanse(ex->token, CP_TOKEN_MAX + 1);
		free(ex->token);
	}
	target_clear(&ex->target);
	free(ex->body);
	free(ex->uri);
	free(ex);
}
