/*
 * metrics.c — counters and gauges of one edge, rendered in the Prometheus
 * text format (version 0.0.4) at GET /metrics.  Everything is updated on
 * the loop thread, so plain integers suffice.
 */
#include <stdio.h>
#include <stdlib.h>

#include "edge.h"

EdgeMetrics edge_metrics;

/* Upper bounds of the request latency histogram, in seconds. */
static const double latency_le[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};
#define NBUCKETS (sizeof(latency_le) / sizeof(latency_le[0]))

void
metrics_observe_request(int status, uint64_t elapsed_ms)
{
	double		s = (double) elapsed_ms / 1000.0;
	int			cls = status / 100;

	edge_metrics.http_requests[cls >= 1 && cls <= 5 ? cls : 0]++;
	for (size_t i = 0; i < NBUCKETS; i++)
		if (s <= latency_le[i])
			edge_metrics.http_latency_bucket[i]++;
	edge_metrics.http_latency_sum += s;
	edge_metrics.http_latency_count++;
}

static void
counter(EdgeBuf *b, const char *name, const char *help, uint64_t v)
{
	buf_printf(b, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name,
			   (unsigned long long) v);
}

static void
gauge(EdgeBuf *b, const char *name, const char *help, long long v)
{
	buf_printf(b, "# HELP %s %s\n# TYPE %s gauge\n%s %lld\n", name, help, name, name, v);
}

/* The exposition text (malloc'd), or NULL when out of memory. */
char *
metrics_render(void)
{
	EdgeBuf		b = {0};
	EdgeDbStats db;
	const EdgeMetrics *m = &edge_metrics;
	static const char *const classes[] = {"other", "1xx", "2xx", "3xx", "4xx", "5xx"};

	db_stats(&db);
	buf_puts(&b, "# HELP nadi_edge_http_requests_total HTTP requests answered, by status class.\n"
			 "# TYPE nadi_edge_http_requests_total counter\n");
	for (int i = 0; i < 6; i++)
		buf_printf(&b, "nadi_edge_http_requests_total{code=\"%s\"} %llu\n", classes[i],
				   (unsigned long long) m->http_requests[i]);
	buf_puts(&b, "# HELP nadi_edge_http_request_duration_seconds Time from request headers to response.\n"
			 "# TYPE nadi_edge_http_request_duration_seconds histogram\n");
	for (size_t i = 0; i < NBUCKETS; i++)
		buf_printf(&b, "nadi_edge_http_request_duration_seconds_bucket{le=\"%g\"} %llu\n",
				   latency_le[i], (unsigned long long) m->http_latency_bucket[i]);
	buf_printf(&b, "nadi_edge_http_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n"
			   "nadi_edge_http_request_duration_seconds_sum %.6f\n"
			   "nadi_edge_http_request_duration_seconds_count %llu\n",
			   (unsigned long long) m->http_latency_count, m->http_latency_sum,
			   (unsigned long long) m->http_latency_count);
	counter(&b, "nadi_edge_auth_failures_total", "Requests refused for their token.", m->auth_failures);
	counter(&b, "nadi_edge_jwks_refreshes_total", "Signing key set reloads.", m->jwks_refreshes);
	gauge(&b, "nadi_edge_jwks_keys", "Signing keys in the cache.", auth_key_count());
	counter(&b, "nadi_edge_slow_requests_cut_total",
			"Connections closed for not sending their request in time.", m->slowloris_cut);
	gauge(&b, "nadi_edge_sse_streams", "Open SSE streams of session events.", sse_active());
	counter(&b, "nadi_edge_sse_streams_opened_total", "SSE streams opened.", m->sse_opened);
	counter(&b, "nadi_edge_sse_events_total", "Events written to SSE streams.", m->sse_events);
	counter(&b, "nadi_edge_sse_slow_clients_cut_total",
			"Streams closed because their client fell behind.", m->sse_slow_cut);
	counter(&b, "nadi_edge_sse_rejected_total", "Streams refused at a stream limit.", m->sse_rejected);
	counter(&b, "nadi_edge_tenant_limited_total",
			"Streams and ACP connections refused at a tenant's limit.", m->tenant_limited);
	gauge(&b, "nadi_edge_tenants", "Tenants holding streams or ACP connections here.", quota_tenants());
	gauge(&b, "nadi_edge_feeds", "Sessions with subscribers on this edge.", feed_count());
	counter(&b, "nadi_edge_feed_fetches_total", "Event reads made for feeds.", m->feed_fetches);
	gauge(&b, "nadi_edge_acp_connections", "Open ACP connections (HTTP and WebSocket).", acp_active());
	gauge(&b, "nadi_edge_acp_sessions", "Sessions loaded on ACP connections.", acp_session_count());
	gauge(&b, "nadi_edge_websockets", "Open WebSocket connections.", ws_count());
	counter(&b, "nadi_edge_acp_messages_in_total", "JSON-RPC messages received.", m->acp_messages_in);
	counter(&b, "nadi_edge_acp_messages_out_total", "JSON-RPC messages sent.", m->acp_messages_out);
	gauge(&b, "nadi_edge_db_pool_size", "Pool connections configured.", db.pool_size);
	gauge(&b, "nadi_edge_db_pool_up", "Pool connections open.", db.pool_up);
	gauge(&b, "nadi_edge_db_pool_busy", "Pool connections running a job.", db.pool_busy);
	gauge(&b, "nadi_edge_db_queue", "Jobs waiting for a connection.", db.queued);
	counter(&b, "nadi_edge_db_jobs_total", "Database jobs submitted.", db.jobs);
	counter(&b, "nadi_edge_db_errors_total", "Database jobs that ended in an error.", db.errors);
	counter(&b, "nadi_edge_db_rejected_total", "Jobs refused because the queue was full.", db.rejected);
	counter(&b, "nadi_edge_db_notifications_total", "NOTIFY nadi_events received.", db.notifications);
	gauge(&b, "nadi_edge_db_listen_up", "1 while the LISTEN connection is up.", db.listen_up);
	gauge(&b, "nadi_edge_draining", "1 while shutting down.", edge_draining);
	return b.data ? buf_cstr(&b) : NULL;
}
