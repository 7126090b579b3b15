/*
 * operator.c — the operator's numbers: GET /v1/operator (admin tokens only)
 * and, on the one edge started with --export-db-metrics, the database-wide
 * numbers as nadi_db_* metrics.  Both come from one statement
 * (STMT_OPERATOR) over the nadi.stat_* views; the edge's database role must
 * be a member of nadi_monitor to read them.
 *
 * The export never blocks the loop: once every --db-metrics-interval
 * seconds the tick submits the statement to the pool with the edge's own
 * role (no token: every tenant), and /metrics renders the last answer.
 * With N edges only the flagged one exports nadi_db_*; each edge's own
 * nadi_edge_* numbers stay its own.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemonlib/metrics.h"
#include "edge.h"
#include "routes_int.h"

static json_t  *cache;		 /* the last answer of STMT_OPERATOR, parsed */
static uint64_t cache_ms;	 /* when it came (ev_now_ms) */
static uint64_t next_ms;	 /* when to ask again */
static bool		in_flight;	 /* a read is queued or running */
static uint64_t read_errors; /* reads that failed */
static uint64_t reads;		 /* reads that succeeded */

/* ------------------------------------------------------------------------
 * GET /v1/operator
 * ------------------------------------------------------------------------ */

static void
done_operator(void *arg, EdgeDbResult *r)
{
	EdgeReq *req = arg;

	req->job = NULL;
	single_row(req, r, 200);
}

void
operator_get(EdgeReq *req)
{
	static const char *const q[] = {NULL};

	/* host rows and every tenant's numbers: administrators only */
	if (req->has_auth && req->auth.scope != SCOPE_ADMIN)
	{
		respond_problem(req, 403, "forbidden", "%s",
						"The operator's numbers need an admin-scoped token.");
		return;
	}
	if (!query_only(req, q))
		return;
	route_db(req, STMT_OPERATOR, 0, NULL, done_operator);
}

/* ------------------------------------------------------------------------
 * The export: read on the pool now and then, render at scrape time
 * ------------------------------------------------------------------------ */

static void
done_export(void *arg EDGE_UNUSED, EdgeDbResult *r)
{
	json_t		*j = NULL;
	json_error_t err;

	in_flight = false;
	if (r->ok && db_rows(r) == 1)
		j = json_loads(db_value(r, 0, 0), 0, &err);
	if (!json_is_object(j))
	{
		json_decref(j);
		if (read_errors++ == 0 || edge_cfg.verbose)
			log_warning("export_db_metrics: reading the nadi.stat_* views failed: %s %s%s",
						r->ok ? "" : r->sqlstate, r->ok ? "no answer" : (r->message ?: ""),
						r->ok || strcmp(r->sqlstate, "42501") != 0
							? ""
							: " (grant nadi_monitor to the edge's database role)");
		return;
	}
	json_decref(cache);
	cache = j;
	cache_ms = ev_now_ms();
	reads++;
}

/* From the tick, once a second: time for another read? */
void
operator_tick(void)
{
	uint64_t now = ev_now_ms();

	if (!edge_cfg.export_db_metrics || in_flight || now < next_ms || edge_draining)
		return;
	next_ms = now + (uint64_t) edge_cfg.db_metrics_interval_s * 1000;
	/* no token: the edge's own role, a member of nadi_monitor, sees every tenant */
	if (db_submit(STMT_OPERATOR, NULL, 0, NULL, done_export, NULL) != NULL)
		in_flight = true;
	else
		read_errors++;
}

void
operator_shutdown(void)
{
	json_decref(cache);
	cache = NULL;
}

static double
num(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	return json_is_number(v) ? json_number_value(v) : 0;
}

static const char *
str(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s ? s : "";
}

/* A gauge per element of an array, labelled by tenant (and a second label). */
static void
tenant_gauges(struct metrics_out *o, const char *name, const char *help, json_t *arr,
			  const char *label, const char *key, const char *value_key)
{
	size_t	i;
	json_t *e;

	json_array_foreach(arr, i, e) metrics_gauge(
		o, name, help, METRICS_LABELS("tenant", str(e, "tenant_id"), label, str(e, key)),
		num(e, value_key));
}

/* The counters of the calls array: one family at a time. */
static void
call_counters(struct metrics_out *o, json_t *calls, const char *name, const char *help,
			  const char *key)
{
	size_t	i;
	json_t *e;

	json_array_foreach(calls, i, e)
		metrics_counter(o, name, help,
						METRICS_LABELS("tenant", str(e, "tenant_id"), "kind", str(e, "kind"),
									   "name", str(e, "name")),
						(uint64_t) num(e, key));
}

/* The host gauges: one family at a time. */
static void
host_gauges(struct metrics_out *o, json_t *hosts, const char *name, const char *help,
			const char *key)
{
	size_t	i;
	json_t *e;

	json_array_foreach(hosts, i, e) metrics_gauge(
		o, name, help, METRICS_LABELS("kind", str(e, "kind"), "host_id", str(e, "host_id")),
		num(e, key));
}

/*
 * The nadi_db_* families, from the last read; nothing unless this edge
 * exports them.  Names follow Prometheus' conventions: counters end in
 * _total, durations are in seconds.
 */
void
operator_metrics(struct metrics_out *o)
{
	static const char *const statuses[] = {"queued", "running", "waiting", "dead"};
	json_t					*queue, *takeovers, *hosts, *calls, *tokens;
	size_t					 i;
	json_t					*e;

	if (!edge_cfg.export_db_metrics)
		return;
	metrics_counter(o, "nadi_db_stats_reads_total",
					"Reads of the nadi.stat_* views by this edge (export_db_metrics).", NULL,
					reads);
	metrics_counter(o, "nadi_db_stats_read_errors_total",
					"Reads of the nadi.stat_* views that failed or could not be queued.", NULL,
					read_errors);
	metrics_gauge(o, "nadi_db_stats_age_seconds",
				  "Seconds since the numbers below were read (-1: never).", NULL,
				  cache ? (double) (ev_now_ms() - cache_ms) / 1000.0 : -1);
	if (cache == NULL)
		return;
	queue = json_object_get(cache, "queue");
	takeovers = json_object_get(cache, "takeovers");
	hosts = json_object_get(cache, "hosts");
	calls = json_object_get(cache, "calls");
	tokens = json_object_get(cache, "tokens");

	tenant_gauges(o, "nadi_db_sessions", "Sessions by tenant and state.",
				  json_object_get(cache, "sessions"), "state", "state", "sessions");
	for (i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++)
		metrics_gauge(o, "nadi_db_commands",
					  "Commands queued, running, waiting for a decision, or dead (dead letters).",
					  METRICS_LABELS("status", statuses[i]), num(queue, statuses[i]));
	metrics_gauge(o, "nadi_db_oldest_queued_command_age_seconds",
				  "Age of the oldest queued command (0 when none is queued).", NULL,
				  num(queue, "oldest_queued_age_seconds"));
	json_array_foreach(hosts, i, e)
		metrics_gauge(o, "nadi_db_host_info", "Cell and sandbox hosts, with their state.",
					  METRICS_LABELS("kind", str(e, "kind"), "host_id", str(e, "host_id"), "state",
									 str(e, "state")),
					  1);
	host_gauges(o, hosts, "nadi_db_host_capacity", "Sessions a host takes.", "capacity");
	host_gauges(o, hosts, "nadi_db_host_load", "Sessions placed on a host.", "load");
	host_gauges(o, hosts, "nadi_db_host_leases", "Unexpired session leases a cell host holds.",
				"leases");
	host_gauges(o, hosts, "nadi_db_host_heartbeat_age_seconds",
				"Seconds since a host's last heartbeat.", "heartbeat_age_seconds");
	metrics_counter(o, "nadi_db_lease_takeovers_total",
					"Leases their holder lost without giving them back (expired or taken over).",
					NULL, (uint64_t) num(takeovers, "takeovers_total"));
	metrics_gauge(o, "nadi_db_sessions_with_crashes",
				  "Sessions whose crash budget is in use (crash_count > 0).", NULL,
				  num(takeovers, "sessions_with_crashes"));
	metrics_gauge(o, "nadi_db_session_crashes",
				  "Crashes counted against the sessions' crash budgets now.", NULL,
				  num(takeovers, "crash_count_total"));
	call_counters(o, calls, "nadi_db_calls_total", "Tool and model calls.", "calls");
	call_counters(o, calls, "nadi_db_call_errors_total", "Tool and model calls that failed.",
				  "errors");
	json_array_foreach(calls, i, e)
		metrics_counter(o, "nadi_db_call_latency_samples_total", "Calls whose duration is known.",
						METRICS_LABELS("tenant", str(e, "tenant_id"), "kind", str(e, "kind"),
									   "name", str(e, "name")),
						(uint64_t) num(e, "latency_count"));
	json_array_foreach(calls, i, e)
		metrics_counter_f(o, "nadi_db_call_latency_seconds_total",
						  "Seconds spent in the calls whose duration is known.",
						  METRICS_LABELS("tenant", str(e, "tenant_id"), "kind", str(e, "kind"),
										 "name", str(e, "name")),
						  num(e, "latency_sum_seconds"));
	json_array_foreach(tokens, i, e)
		metrics_counter(o, "nadi_db_tokens_total", "Model tokens the providers reported.",
						METRICS_LABELS("tenant", str(e, "tenant_id"), "direction", "input"),
						(uint64_t) num(e, "input_tokens"));
	json_array_foreach(tokens, i, e)
		metrics_counter(o, "nadi_db_tokens_total", "Model tokens the providers reported.",
						METRICS_LABELS("tenant", str(e, "tenant_id"), "direction", "output"),
						(uint64_t) num(e, "output_tokens"));
}
