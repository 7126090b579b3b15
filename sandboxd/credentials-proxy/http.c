/*
 * http.c — the libmicrohttpd adapter (see http.h).  Thread per connection:
 * a handler may block on the database or the upstream, and the streamed
 * answer's reader pulls the upstream's body on the connection's own
 * thread.  The URI-log callback creates each request's exchange from the
 * raw request target (before libmicrohttpd splits off and decodes the
 * query), so what is forwarded is byte for byte what the client sent.
 * Request ids and the access log are daemonlib/http.c's; a connection
 * serves one request at a time, so its client record holds the request's
 * access record.  The proxy's own answers carry X-Request-Id; an
 * upstream's answer is passed on as the upstream made it.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "daemonlib/metrics.h"
#include "credproxy.h"
#include "http.h"
#include "listen.h"
#include "proxy.h"

static struct MHD_Daemon *daemon_;
static atomic_uint		  active;

unsigned
http_active_requests(void)
{
	return atomic_load(&active);
}

/* The access record of the request c is serving; NULL when there is none. */
static HttpAccess *
access_of(struct MHD_Connection *c)
{
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	struct client *client = ci ? ci->socket_context : NULL;

	return client ? &client->access : NULL;
}

static enum MHD_Result
reply_text(struct MHD_Connection *c, unsigned status, const char *content_type,
		   const char *const *headers, char *text)
{
	int64_t				 len = 0;
	struct MHD_Response *resp = text_response(text, content_type, &len);
	HttpAccess			*a = access_of(c);
	enum MHD_Result		 ret;

	if (!resp)
		return MHD_NO;
	if (a)
		http_access_answer(a, resp, status, len);
	for (size_t i = 0; headers && headers[i] && headers[i + 1]; i += 2)
		MHD_add_response_header(resp, headers[i], headers[i + 1]);
	if (atomic_load(&cp_draining))
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
	ret = MHD_queue_response(c, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

enum MHD_Result
http_reply_json(struct MHD_Connection *c, unsigned status, json_t *body)
{
	char *text = body ? json_dumps(body, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;

	json_decref(body);
	if (!text)
		return http_reply_problem(c, 500, "internal", NULL, "cannot encode the answer");
	return reply_text(c, status, "application/json", NULL, text);
}

enum MHD_Result
http_reply_problem(struct MHD_Connection *c, unsigned status, const char *code,
				   const char *const *headers, const char *fmt, ...)
{
	HttpAccess *a = access_of(c);
	char		detail[1024];
	va_list		ap;
	char	   *text;

	va_start(ap, fmt);
	vsnprintf(detail, sizeof detail, fmt, ap);
	va_end(ap);
	text = http_problem_text(status, code, detail, a ? a->request_id : NULL);
	if (!text)
		return MHD_NO;
	return reply_text(c, status, "application/problem+json", headers, text);
}

static enum MHD_Result
healthz(struct MHD_Connection *c)
{
	json_t *names = json_array();

	for (size_t i = 0; i < cfg.n_upstreams; i++)
		json_array_append_new(names, json_string(cfg.upstreams[i].name));
	return http_reply_json(c, 200,
						   json_pack("{s:s, s:s, s:s, s:o, s:i, s:i}", "status",
									 atomic_load(&cp_draining) ? "draining" : "ok", "version",
									 NADI_VERSION, "proxy_id", cfg.proxy_id, "upstreams", names,
									 "sandboxes", (int) listen_sandbox_count(), "connections",
									 (int) listen_client_count()));
}

/* The Prometheus exposition (daemonlib/metrics.h); text_response() ends it with its newline. */
static enum MHD_Result
metrics(struct MHD_Connection *c)
{
	const struct
	{
		const char		  *name, *help;
		unsigned long long value;
	} counters[] = {
		{"nadi_credproxy_requests_total", "Requests received on every listener.",
		 atomic_load(&proxy_stats.requests)},
		{"nadi_credproxy_refused_total", "Requests refused (token, policy, target or size).",
		 atomic_load(&proxy_stats.refused)},
		{"nadi_credproxy_forwarded_total", "Requests forwarded to an upstream.",
		 atomic_load(&proxy_stats.forwarded)},
		{"nadi_credproxy_upstream_errors_total", "Forwarded requests whose upstream failed.",
		 atomic_load(&proxy_stats.upstream_errors)},
		{"nadi_credproxy_bytes_up_total", "Request body bytes sent upstream.",
		 atomic_load(&proxy_stats.bytes_up)},
		{"nadi_credproxy_bytes_down_total", "Response body bytes sent back to clients.",
		 atomic_load(&proxy_stats.bytes_down)},
	};
	struct metrics_out *o = metrics_begin("nadi-credproxy");
	char			   *text;
	size_t				len = 0;

	if (!o)
		return MHD_NO;
	for (size_t i = 0; i < ARRAY_SIZE(counters); i++)
		metrics_counter(o, counters[i].name, counters[i].help, NULL, counters[i].value);
	metrics_gauge(o, "nadi_credproxy_connections", "Client connections open now.", NULL,
				  listen_client_count());
	metrics_gauge(o, "nadi_credproxy_sandboxes", "Sandbox sockets listened on now.", NULL,
				  listen_sandbox_count());
	text = metrics_end(o, &len);
	if (!text)
		return MHD_NO;
	if (len > 0 && text[len - 1] == '\n')
		text[len - 1] = '\0';
	return reply_text(c, 200, METRICS_CONTENT_TYPE, NULL, text);
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
		   const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	struct exchange *ex = *con_cls;
	struct client	*client;
	(void) cls;
	(void) url;
	(void) version;

	if (!ex)
		return MHD_NO; /* out of memory in on_uri */
	client = proxy_client(ex);
	if (client && !client->access.started)
		http_access_start(&client->access, conn, method, proxy_uri(ex));
	if ((!client || !client->sbx) && strcmp(method, "GET") == 0)
	{
		if (strcmp(proxy_uri(ex), "/healthz") == 0)
			return healthz(conn);
		if (strcmp(proxy_uri(ex), "/metrics") == 0)
			return metrics(conn);
	}
	return proxy_request(ex, conn, method, upload_data, upload_data_size);
}

static void *
on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	struct exchange *ex;
	(void) cls;

	ex = proxy_new(uri, ci ? ci->socket_context : NULL);
	if (ex)
		atomic_fetch_add(&active, 1);
	return ex;
}

static void
on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct exchange *ex = *con_cls;
	struct client	*client;
	(void) cls;

	if (!ex)
		return;
	*con_cls = NULL;
	client = proxy_client(ex);
	if (client)
		http_access_end(&client->access, conn, toe);
	proxy_end(ex, toe);
	atomic_fetch_sub(&active, 1);
}

static void
on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
			  enum MHD_ConnectionNotificationCode toe)
{
	(void) cls;
	if (toe == MHD_CONNECTION_NOTIFY_STARTED)
	{
		const union MHD_ConnectionInfo *ci =
			MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
		*socket_context = client_started(ci ? ci->connect_fd : -1);
	}
	else if (toe == MHD_CONNECTION_NOTIFY_CLOSED)
	{
		client_closed(*socket_context);
		*socket_context = NULL;
	}
}

/* Leave the path as the client wrote it: the upstream decodes it, not us. */
static size_t
no_unescape(void *cls, struct MHD_Connection *c, char *s)
{
	(void) cls;
	(void) c;
	return strlen(s);
}

static void
on_mhd_log(void *cls, const char *fmt, va_list ap)
{
	char   msg[512];
	size_t n;
	(void) cls;

	vsnprintf(msg, sizeof msg, fmt, ap);
	/* Unix sockets have no Nagle to switch off: nothing to report. */
	if (strstr(msg, "TCP_NODELAY") || strstr(msg, "TCP_CORK") ||
		strstr(msg, "push the data from buffers"))
		return;
	n = strlen(msg);
	while (n > 0 && msg[n - 1] == '\n')
		msg[--n] = '\0';
	log_debug("libmicrohttpd: %s", msg);
}

int
http_start(void)
{
	unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
					 MHD_USE_POLL | MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ITC | MHD_USE_ERROR_LOG;

	/* Headroom above max_connections so that the connections beyond it get their 429. */
	daemon_ = MHD_start_daemon(
		flags, 0, NULL, NULL, on_request, NULL, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL,
		MHD_OPTION_CONNECTION_LIMIT, (unsigned) (cfg.max_connections + 64),
		MHD_OPTION_CONNECTION_TIMEOUT, (unsigned) MAX(1, cfg.idle_timeout_ms / 1000),
		MHD_OPTION_NOTIFY_CONNECTION, on_connection, NULL, MHD_OPTION_NOTIFY_COMPLETED,
		on_completed, NULL, MHD_OPTION_URI_LOG_CALLBACK, on_uri, NULL, MHD_OPTION_UNESCAPE_CALLBACK,
		no_unescape, NULL, MHD_OPTION_END);
	if (!daemon_)
	{
		log_error("cannot start the HTTP server (libmicrohttpd)");
		return -EIO;
	}
	return 0;
}

int
http_add_connection(int fd, const struct sockaddr *sa, socklen_t len)
{
	if (MHD_add_connection(daemon_, fd, sa, len) != MHD_YES)
	{
		log_warning("cannot take a new connection: %m");
		return -EIO;
	}
	return 0;
}

void
http_stop(void)
{
	if (daemon_)
		MHD_stop_daemon(daemon_);
	daemon_ = NULL;
}
