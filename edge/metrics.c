/*
 * metrics.c — counters and gauges of one edge, rendered in the Prometheus
 * text format (daemonlib/metrics.h) at GET /metrics.  Everything is
 * updated on the loop thread, so plain integers suffice.
 */
#include <stdio.h>
#include <stdlib.h>

#include "edge.h"
#include "daemonlib/metrics.h"

EdgeMetrics edge_metrics;

/* Upper bounds of the request latency histogram, in seconds. */
static const double				latency_le[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
												0.1,   0.25,   0.5,	  1,	2.5};
static struct metrics_histogram latency = METRICS_HISTOGRAM_INIT(latency_le);

void
metrics_observe_request(int status, uint64_t elapsed_ms)
{
	edge_metrics.http_requests[metrics_http_class((unsigned) status)]++;
	metrics_histogram_observe(&latency, (double) elapsed_ms / 1000.0);
}

/*
 * The exposition text (malloc'd), or NULL when out of memory.  with_db: the
 * database's nadi_db_* numbers too (every tenant's: admin tokens only).
 */
char *
metrics_render(bool with_db)
{
	struct metrics_out *o = metrics_begin("nadi-edge");
	EdgeDbStats			db;
	const EdgeMetrics  *m = &edge_metrics;

	if (o == NULL)
		return NULL;
	db_stats(&db);
	metrics_http_codes(o, "nadi_edge_http_requests_total",
					   "HTTP requests answered, by status class.", m->http_requests);
	metrics_histogram(o, "nadi_edge_http_request_duration_seconds",
					  "Time from request headers to response.", NULL, &latency);
	metrics_counter(o, "nadi_edge_auth_failures_total", "Requests refused for their token.", NULL,
					m->auth_failures);
	metrics_counter(o, "nadi_edge_jwks_refreshes_total", "Signing key set reloads.", NULL,
					m->jwks_refreshes);
	metrics_gauge(o, "nadi_edge_jwks_keys", "Signing keys in the cache.", NULL, auth_key_count());
	metrics_counter(o, "nadi_edge_slow_requests_cut_total",
					"Connections closed for not sending their request in time.", NULL,
					m->slowloris_cut);
	metrics_gauge(o, "nadi_edge_sse_streams", "Open SSE streams of session events.", NULL,
				  sse_active());
	metrics_counter(o, "nadi_edge_sse_streams_opened_total", "SSE streams opened.", NULL,
					m->sse_opened);
	metrics_counter(o, "nadi_edge_sse_events_total", "Events written to SSE streams.", NULL,
					m->sse_events);
	metrics_counter(o, "nadi_edge_sse_slow_clients_cut_total",
					"Streams closed because their client fell behind.", NULL, m->sse_slow_cut);
	metrics_counter(o, "nadi_edge_sse_rejected_total", "Streams refused at a stream limit.", NULL,
					m->sse_rejected);
	metrics_counter(o, "nadi_edge_tenant_limited_total",
					"Streams and ACP connections refused at a tenant's limit.", NULL,
					m->tenant_limited);
	metrics_gauge(o, "nadi_edge_tenants", "Tenants holding streams or ACP connections here.", NULL,
				  quota_tenants());
	metrics_gauge(o, "nadi_edge_feeds", "Sessions with subscribers on this edge.", NULL,
				  feed_count());
	metrics_counter(o, "nadi_edge_feed_fetches_total", "Event reads made for feeds.", NULL,
					m->feed_fetches);
	metrics_gauge(o, "nadi_edge_acp_connections", "Open ACP connections (HTTP and WebSocket).",
				  NULL, acp_active());
	metrics_gauge(o, "nadi_edge_acp_sessions", "Sessions loaded on ACP connections.", NULL,
				  acp_session_count());
	metrics_gauge(o, "nadi_edge_websockets", "Open WebSocket connections.", NULL, ws_count());
	metrics_gauge(o, "nadi_edge_file_transfers",
				  "File transfers to or from sandboxes under way (PUT/GET .../files/...).", NULL,
				  files_active());
	metrics_counter(o, "nadi_edge_acp_messages_in_total", "JSON-RPC messages received.", NULL,
					m->acp_messages_in);
	metrics_counter(o, "nadi_edge_acp_messages_out_total", "JSON-RPC messages sent.", NULL,
					m->acp_messages_out);
	metrics_gauge(o, "nadi_edge_db_pool_size", "Pool connections configured.", NULL, db.pool_size);
	metrics_gauge(o, "nadi_edge_db_pool_up", "Pool connections open.", NULL, db.pool_up);
	metrics_gauge(o, "nadi_edge_db_pool_busy", "Pool connections running a job.", NULL,
				  db.pool_busy);
	metrics_gauge(o, "nadi_edge_db_queue", "Jobs waiting for a connection.", NULL, db.queued);
	metrics_counter(o, "nadi_edge_db_jobs_total", "Database jobs submitted.", NULL, db.jobs);
	metrics_counter(o, "nadi_edge_db_errors_total", "Database jobs that ended in an error.", NULL,
					db.errors);
	metrics_counter(o, "nadi_edge_db_rejected_total", "Jobs refused because the queue was full.",
					NULL, db.rejected);
	metrics_counter(o, "nadi_edge_db_notifications_total", "NOTIFY nadi_events received.", NULL,
					db.notifications);
	metrics_gauge(o, "nadi_edge_db_listen_up", "1 while the LISTEN connection is up.", NULL,
				  db.listen_up);
	metrics_gauge(o, "nadi_edge_draining", "1 while shutting down.", NULL, edge_draining);
	if (with_db)
		operator_metrics(o);
	return metrics_end(o, NULL);
}
