/*
 * http.c — nadi-celld's HTTP: GET /metrics (the Prometheus exposition:
 * nadi_build_info, the cell's figures and limits, the store's connection)
 * and GET /healthz (200 while the store's connection is up, else 503), on
 * one TCP listener run by libmicrohttpd inside the event loop (its epoll
 * fd is watched there), so the cell's figures are read on the loop's own
 * thread.  Nothing else is served.
 */
#include <microhttpd.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>

#include "celld.h"
#include "daemonlib/evloop.h"
#include "daemonlib/http.h"
#include "daemonlib/listener.h"
#include "daemonlib/log.h"
#include "daemonlib/metrics.h"
#include "daemonlib/problem.h"

struct http_req
{
	struct mhd_req m;
};

static struct mhd_listeners listeners;
static EvIo					io;
static CelldHealth		   *health;
static uint64_t				answers[METRICS_HTTP_CLASSES];

static void
deliver(struct http_req *r, unsigned status, struct MHD_Response *resp, int64_t bytes)
{
	if (mhd_req_answer(&r->m, status, resp, bytes))
		answers[metrics_http_class(r->m.status)]++;
}

static void
problem(struct http_req *r, unsigned status, const char *code, const char *fmt, ...) _printf_(4, 5);
static void
problem(struct http_req *r, unsigned status, const char *code, const char *fmt, ...)
{
	struct MHD_Response *resp;
	int64_t				 bytes;
	va_list				 ap;

	va_start(ap, fmt);
	resp = mhd_req_problem(&r->m, status, code, 512, &bytes, fmt, ap);
	va_end(ap);
	deliver(r, status, resp, bytes);
}

static void
text(struct http_req *r, unsigned status, char *body, const char *content_type)
{
	int64_t				 len = 0;
	struct MHD_Response *resp = text_response(body, content_type, &len);

	deliver(r, status, resp, len);
}

static void
metrics(struct http_req *r)
{
	struct metrics_out *o = metrics_begin(CELLD_PROGRAM);
	CellHostStats		s;
	StorePqStats		ps;
	char			   *body;
	size_t				len;

	cellhost_stats(health->cell, &s);
	store_pq_stats(health->store, &ps);
	if (!o)
	{
		problem(r, 500, "internal", "out of memory");
		return;
	}
	metrics_gauge(o, "nadi_celld_sessions", "Sessions whose lease this cell holds.", NULL,
				  (double) s.sessions);
	metrics_gauge(o, "nadi_celld_capacity", "Sessions this cell host offers to hold.", NULL,
				  celld_cfg.capacity);
	metrics_gauge(o, "nadi_celld_in_flight", "Commands under way.", NULL, (double) s.in_flight);
	metrics_gauge(o, "nadi_celld_waiting",
				  "Commands under way, by what they wait on (a model or tool call, a timer).",
				  METRICS_LABELS("on", "http"), (double) s.waiting_http);
	metrics_gauge(o, "nadi_celld_waiting", NULL, METRICS_LABELS("on", "timer"),
				  (double) s.waiting_timer);
	metrics_gauge(o, "nadi_celld_max_in_flight",
				  "The limit on commands under way at once (0: none).", NULL,
				  celld_cfg.max_in_flight);
	metrics_gauge(o, "nadi_celld_tenants_in_flight", "Tenants with a command under way.", NULL,
				  (double) s.tenants_in_flight);
	metrics_gauge(o, "nadi_celld_tenant_max_in_flight",
				  "The most commands any one tenant has under way.", NULL,
				  (double) s.tenant_max_in_flight);
	metrics_gauge(o, "nadi_celld_max_in_flight_tenant",
				  "The limit on commands of one tenant under way at once (0: none).", NULL,
				  celld_cfg.max_in_flight_tenant);
	metrics_counter(o, "nadi_celld_commands_started_total", "Commands claimed and started.", NULL,
					s.commands_started);
	metrics_counter(o, "nadi_celld_commands_finished_total", "Commands that came to an end here.",
					NULL, s.commands_finished);
	metrics_counter(o, "nadi_celld_claims_deferred_total",
					"Claims put off because a limit on commands under way was reached.",
					METRICS_LABELS("limit", "cell"), s.deferred_cell);
	metrics_counter(o, "nadi_celld_claims_deferred_total", NULL, METRICS_LABELS("limit", "tenant"),
					s.deferred_tenant);
	metrics_counter(o, "nadi_celld_leases_lost_total",
					"Sessions dropped because their lease moved on.", NULL, s.leases_lost);
	metrics_counter(o, "nadi_celld_rounds_total", "Rounds of the cell (claims, commits, renewals).",
					NULL, s.rounds);
	metrics_gauge(o, "nadi_celld_db_up", "Whether the store's database connection is up.", NULL,
				  store_pq_up(health->store) ? 1 : 0);
	metrics_gauge(o, "nadi_celld_listen_up", "Whether the LISTEN connection is up.", NULL,
				  celld_listen_up() ? 1 : 0);
	metrics_counter(o, "nadi_celld_wakeups_total", "Notifications on nadi_cell for this host.",
					NULL, celld_listen_wakeups());
	metrics_counter(o, "nadi_celld_db_statements_total", "Statements the store ran.", NULL,
					ps.statements);
	metrics_counter(o, "nadi_celld_db_statement_failures_total",
					"Statements that failed (fencing included).", NULL, ps.failures);
	metrics_counter(o, "nadi_celld_db_batches_total", "Transactions of grouped statements.", NULL,
					ps.batches);
	metrics_counter(o, "nadi_celld_db_connects_total", "Store connections made.", NULL,
					ps.connects);
	metrics_counter(o, "nadi_celld_db_connections_lost_total",
					"Store connections that broke under a call.", NULL, ps.lost);
	metrics_gauge(o, "nadi_celld_draining", "1 once SIGTERM started the drain.", NULL,
				  health->draining ? 1 : 0);
	metrics_http_codes(o, "nadi_celld_http_responses_total", "HTTP answers by status class.",
					   answers);
	body = metrics_end(o, &len);
	if (!body)
	{
		problem(r, 500, "internal", "cannot render the metrics");
		return;
	}
	if (len > 0 && body[len - 1] == '\n')
		body[len - 1] = '\0'; /* text_response ends it with one */
	text(r, 200, body, METRICS_CONTENT_TYPE);
}

static void
dispatch(struct http_req *r)
{
	const char *path = http_path(r);

	if (strcmp(http_method(r), "GET") != 0 && strcmp(http_method(r), "HEAD") != 0)
		problem(r, 405, "method_not_allowed", "only GET is served here");
	else if (strcmp(path, "/metrics") == 0)
		metrics(r);
	else if (strcmp(path, "/healthz") == 0)
	{
		char buf[PQ_ERROR_MAX + 64];

		if (store_pq_up(health->store))
			text(r, 200, strdup(health->draining ? "draining" : "ok"), "text/plain");
		else
		{
			snprintf(buf, sizeof(buf), "database unreachable: %s",
					 store_pq_last_error(health->store));
			text(r, 503, strdup(buf), "text/plain");
		}
	}
	else
		problem(r, 404, "not_found", "no such path: /metrics and /healthz are served");
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
		   const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	struct http_req *r = *con_cls;

	if (!r)
	{
		r = calloc(1, sizeof(*r));
		if (!r || mhd_req_init(&r->m, conn, method, url, 0) < 0)
		{
			free(r);
			return MHD_NO;
		}
		*con_cls = r;
		return MHD_YES;
	}
	if (*upload_data_size)
	{
		*upload_data_size = 0; /* no body is read */
		return MHD_YES;
	}
	dispatch(r);
	return mhd_req_queue(&r->m, conn);
}

static void
on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct http_req *r = *con_cls;

	if (!r)
	{
		HttpAccess a;

		http_access_start(&a, NULL, NULL, NULL);
		http_access_end(&a, conn, toe);
		return;
	}
	mhd_req_done(&r->m, conn, toe);
	free(r);
	*con_cls = NULL;
}

static void
on_ready(EvIo *w, uint32_t events)
{
	MHD_run(w->data);
}

int
celld_http_start(const char *listen, CelldHealth *h, uint16_t *port)
{
	const union MHD_DaemonInfo *info;
	int							r;

	health = h;
	*port = 0;
	if (!listen || !listen[0] || strcmp(listen, "off") == 0)
		return 0;
	r = mhd_listeners_start(&listeners, NULL, listen, MHD_USE_EPOLL | MHD_USE_ERROR_LOG, 64,
							on_request, on_completed);
	if (r < 0)
		return r;
	info = MHD_get_daemon_info(listeners.l[0].d, MHD_DAEMON_INFO_EPOLL_FD);
	if (!info || ev_io_start(&io, info->epoll_fd, EPOLLIN, on_ready, listeners.l[0].d) < 0)
		return -EIO;
	*port = listeners.tcp_port;
	return 0;
}

void
celld_http_run(void)
{
	if (listeners.n > 0)
		MHD_run(listeners.l[0].d); /* idle connections time out here */
}

uint64_t
celld_http_timeout_ms(void)
{
	MHD_UNSIGNED_LONG_LONG t;

	if (listeners.n == 0 || MHD_get_timeout(listeners.l[0].d, &t) != MHD_YES)
		return UINT64_MAX;
	return t;
}

void
celld_http_stop(void)
{
	ev_io_stop(&io);
	mhd_listeners_stop(&listeners);
}
