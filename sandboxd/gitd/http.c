/*
 * http.c — the libmicrohttpd adapter (see http.h): listeners on a unix
 * socket and/or TCP, request bodies with a size limit, bearer-token
 * authentication compared in constant time, and RFC 9457 problem+json
 * errors carrying a stable "code".  The request layer (request ids, the
 * access log, bodies, bearer tokens) is daemonlib/http.c; listeners are
 * daemonlib/listener.c.
 */
#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "daemonlib/http.h"
#include "daemonlib/listener.h"
#include "daemonlib/metrics.h"
#include "gitd.h"
#include "http.h"

#define DISCARD_MAX (1u << 20) /* bytes of an oversized body read before hanging up */

struct http_req
{
	struct mhd_req		   m; /* method, path, body, the answer */
	struct MHD_Connection *conn;
};

static struct mhd_listeners listeners;
static atomic_ullong		answers[6]; /* by status class, for /metrics */

const char *
http_query(const struct http_req *r, const char *key)
{
	return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, key);
}

uint16_t
http_tcp_port(void)
{
	return listeners.tcp_port;
}

void
http_metrics(struct metrics_out *o)
{
	uint64_t counts[METRICS_HTTP_CLASSES];

	for (unsigned c = 0; c < METRICS_HTTP_CLASSES; c++)
		counts[c] = atomic_load(&answers[c]);
	metrics_http_codes(o, "nadi_gitd_http_responses_total", "HTTP answers by status class.",
					   counts);
}

static void
deliver(struct http_req *r, unsigned status, struct MHD_Response *resp, int64_t bytes)
{
	if (mhd_req_answer(&r->m, status, resp, bytes))
	{
		if (r->m.status / 100 < ARRAY_SIZE(answers))
			atomic_fetch_add(&answers[r->m.status / 100], 1);
	}
}

void
http_reply_text(struct http_req *r, unsigned status, char *text, const char *content_type)
{
	int64_t				 len = 0;
	struct MHD_Response *resp = text_response(text, content_type, &len);

	deliver(r, status, resp, len);
}

void
http_reply_json(struct http_req *r, unsigned status, json_t *body)
{
	char *text = body ? json_dumps(body, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;

	json_decref(body);
	if (!text)
	{
		http_reply_problem(r, 500, "internal", "cannot encode the answer");
		return;
	}
	http_reply_text(r, status, text, "application/json");
}

void
http_reply_problem(struct http_req *r, unsigned status, const char *code, const char *fmt, ...)
{
	struct MHD_Response *resp;
	int64_t				 bytes;
	va_list				 ap;

	va_start(ap, fmt);
	resp = mhd_req_problem(&r->m, status, code, GITD_ERR_MAX + 512, &bytes, fmt, ap);
	va_end(ap);
	deliver(r, status, resp, bytes);
}

void
http_reply_empty(struct http_req *r, unsigned status)
{
	deliver(r, status, MHD_create_response_from_buffer(0, (void *) "", MHD_RESPMEM_PERSISTENT), 0);
}

json_t *
http_body_json(struct http_req *r)
{
	char	why[512];
	json_t *j;

	if (r->m.body.len == 0)
	{
		http_reply_problem(r, 400, "invalid_json", "the request needs a JSON object as its body");
		return NULL;
	}
	j = json_object_parse(r->m.body.data, r->m.body.len, why, sizeof why);
	if (!j)
		http_reply_problem(r, 400, "invalid_json", "%s", why);
	return j;
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
		   const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	struct http_req *r = *con_cls;
	(void) cls;
	(void) version;

	if (!r)
	{
		r = calloc(1, sizeof *r);
		if (!r || mhd_req_init(&r->m, conn, method, url, GITD_BODY_MAX) < 0)
		{
			free(r);
			return MHD_NO;
		}
		*con_cls = r;
		r->conn = conn;
		/* Refuse early, before reading a body that would be thrown away. */
		if (strcmp(url, "/healthz") != 0 && strcmp(url, "/metrics") != 0 &&
			!config_token_matches(bearer_token(conn)))
		{
			http_add_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
			http_reply_problem(r, 401, "not_authenticated", "a valid bearer token is required");
		}
		else if (req_body_announced_too_large(conn, GITD_BODY_MAX))
			http_reply_problem(r, HTTP_BODY_TOO_LARGE_STATUS, HTTP_BODY_TOO_LARGE_CODE,
							   HTTP_BODY_TOO_LARGE_DETAIL, (unsigned long long) GITD_BODY_MAX);
		return r->m.resp ? mhd_req_queue(&r->m, conn) : MHD_YES;
	}
	if (*upload_data_size)
		return req_body_feed(&r->m.body, upload_data, upload_data_size, DISCARD_MAX);
	if (r->m.body.too_large)
		http_reply_problem(r, HTTP_BODY_TOO_LARGE_STATUS, HTTP_BODY_TOO_LARGE_CODE,
						   HTTP_BODY_TOO_LARGE_DETAIL, (unsigned long long) GITD_BODY_MAX);
	else if (gitd_stopping)
		http_reply_problem(r, 503, "shutting_down", "the mirror daemon is stopping");
	else
		api_dispatch(r);
	if (!r->m.resp)
		http_reply_problem(r, 500, "internal", "no answer was produced");
	return mhd_req_queue(&r->m, conn);
}

static void
on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct http_req *r = *con_cls;
	(void) cls;

	if (!r)
	{
		/* refused by libmicrohttpd before the handler saw it */
		HttpAccess a;
		http_access_start(&a, NULL, NULL, NULL);
		http_access_end(&a, conn, toe);
		return;
	}
	mhd_req_done(&r->m, conn, toe);
	free(r);
	*con_cls = NULL;
}

int
http_init(void)
{
	return mhd_listeners_start(&listeners, cfg.listen_unix, cfg.listen_tcp,
							   MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
								   MHD_USE_POLL | MHD_USE_ITC | MHD_USE_ERROR_LOG,
							   (unsigned) cfg.max_connections, on_request, on_completed);
}

/* Stop accepting connections; those open are served to the end. */
void
http_quiesce(void)
{
	mhd_listeners_quiesce(&listeners);
}

void
http_done(void)
{
	mhd_listeners_stop(&listeners);
}
