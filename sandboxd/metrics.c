/*
 * metrics.c — the daemon's counters and their Prometheus text exposition
 * (GET /metrics, daemonlib/metrics.h).  Gauges are computed at scrape time
 * from the registry.
 */
#include <stdio.h>
#include <string.h>

#include "child.h"
#include "daemonlib/metrics.h"
#include "limits.h"
#include "metrics.h"
#include "pg.h"
#include "pool.h"
#include "reap.h"
#include "sandbox.h"
#include "btrfs_store.h"
#include "workspace.h"

extern bool sbx_draining;

static const char  *tools[] = {"echo",		"uppercase",  "list_files", "exec",
							   "read_file", "write_file", "edit_file"};
static const char  *outcomes[] = {"ok", "failed", "timed_out", "error"};
static const double buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
								 0.25,	0.5,	1,	   2.5,	 5,		10,	  30};

static uint64_t					http_by_class[METRICS_HTTP_CLASSES];
static uint64_t					calls[ARRAY_SIZE(tools)][ARRAY_SIZE(outcomes)];
static struct metrics_histogram call_hist[2] = {METRICS_HISTOGRAM_INIT(buckets),
												METRICS_HISTOGRAM_INIT(buckets)}; /* warm, cold */
static struct metrics_histogram start_hist = METRICS_HISTOGRAM_INIT(buckets);
static uint64_t					starts_failed;

void
metrics_http(unsigned status)
{
	http_by_class[metrics_http_class(status)]++;
}

void
metrics_call(const char *tool, const char *outcome, bool cold, uint64_t duration_us)
{
	size_t t, o;

	for (t = 0; t < ARRAY_SIZE(tools) && strcmp(tools[t], tool) != 0; t++)
		;
	for (o = 0; o < ARRAY_SIZE(outcomes) && strcmp(outcomes[o], outcome) != 0; o++)
		;
	if (t < ARRAY_SIZE(tools) && o < ARRAY_SIZE(outcomes))
		calls[t][o]++;
	metrics_histogram_observe(&call_hist[cold ? 1 : 0], (double) duration_us / 1e6);
}

void
metrics_container_started(uint64_t ms)
{
	metrics_histogram_observe(&start_hist, (double) ms / 1e3);
}

void
metrics_container_failed(void)
{
	starts_failed++;
}

char *
metrics_render(size_t *len)
{
	struct metrics_out	  *o = metrics_begin("nadi-sandboxd");
	unsigned			   by_state[CT_STOPPING + 1] = {0};
	struct reap_stats	   reap;
	const struct ws_stats *ws;

	if (!o)
		return NULL;
	for (struct sbx_sandbox *sb = sandboxes; sb; sb = sb->next)
		by_state[sb->ct.state]++;

	metrics_gauge(o, "nadi_sandboxd_info", "Build and configuration of this daemon.",
				  METRICS_LABELS("version", NADI_VERSION, "limits", limit_mode_name(limits_mode()),
								 "storage", store_is_loop() ? "loop" : "btrfs"),
				  1);
	metrics_gauge(o, "nadi_sandboxd_sandboxes", "Sandboxes on this host.", NULL,
				  (double) sandbox_count());
	metrics_gauge(o, "nadi_sandboxd_sandbox_capacity", "Sandboxes this host accepts.", NULL,
				  (double) cfg.max_sandboxes);
	for (int s = CT_STARTING; s <= CT_STOPPING; s++)
		metrics_gauge(o, "nadi_sandboxd_containers", "Containers by state.",
					  METRICS_LABELS("state", ct_state_name((enum ct_state) s)), by_state[s]);
	metrics_gauge(o, "nadi_sandboxd_calls_queued", "Tool calls waiting or running.", NULL,
				  run_busy());
	metrics_http_codes(o, "nadi_sandboxd_http_responses_total", "HTTP responses by status class.",
					   http_by_class);
	for (size_t t = 0; t < ARRAY_SIZE(tools); t++)
		for (size_t k = 0; k < ARRAY_SIZE(outcomes); k++)
			metrics_counter(o, "nadi_sandboxd_tool_calls_total", "Tool calls by tool and outcome.",
							METRICS_LABELS("tool", tools[t], "outcome", outcomes[k]), calls[t][k]);
	metrics_histogram(o, "nadi_sandboxd_call_duration_seconds", "Container tool calls, end to end.",
					  METRICS_LABELS("start", "warm"), &call_hist[0]);
	metrics_histogram(o, "nadi_sandboxd_call_duration_seconds", "Container tool calls, end to end.",
					  METRICS_LABELS("start", "cold"), &call_hist[1]);
	metrics_histogram(o, "nadi_sandboxd_container_start_seconds",
					  "Time from fork to the init's hello.", NULL, &start_hist);
	metrics_counter(o, "nadi_sandboxd_container_start_failures_total",
					"Containers that never came up.", NULL, starts_failed);
	metrics_gauge(o, "nadi_sandboxd_store_free_bytes", "Free space in the sandbox store.", NULL,
				  (double) store_free_bytes());
	metrics_gauge(o, "nadi_sandboxd_helpers", "Helper processes (btrfs send/receive) running.",
				  NULL, child_count());
	metrics_gauge(o, "nadi_sandboxd_registered",
				  "Whether the last registration or heartbeat succeeded.", NULL,
				  pg_registered() ? 1 : 0);
	reap_get_stats(&reap);
	metrics_counter(o, "nadi_sandboxd_reaped_total",
					"Sandboxes the reaper destroyed because their session ended.", NULL,
					reap.reaped);
	metrics_counter(o, "nadi_sandboxd_reap_failures_total",
					"Reaper failures: questions to the database, deletions of reaped sandboxes.",
					METRICS_LABELS("stage", "query"), reap.query_failures);
	metrics_counter(o, "nadi_sandboxd_reap_failures_total",
					"Reaper failures: questions to the database, deletions of reaped sandboxes.",
					METRICS_LABELS("stage", "delete"), reap.delete_failures);
	metrics_counter(o, "nadi_sandboxd_reap_rounds_total",
					"Reaper rounds that asked about every candidate sandbox.", NULL, reap.rounds);
	ws = ws_get_stats();
	metrics_counter(o, "nadi_sandboxd_workspace_snapshots_total",
					"Calls with side effects: a workspace snapshot taken, none needed (nothing "
					"changed), or one that failed.",
					METRICS_LABELS("outcome", "taken"), ws->taken);
	metrics_counter(o, "nadi_sandboxd_workspace_snapshots_total",
					"Calls with side effects: a workspace snapshot taken, none needed (nothing "
					"changed), or one that failed.",
					METRICS_LABELS("outcome", "unchanged"), ws->unchanged);
	metrics_counter(o, "nadi_sandboxd_workspace_snapshots_total",
					"Calls with side effects: a workspace snapshot taken, none needed (nothing "
					"changed), or one that failed.",
					METRICS_LABELS("outcome", "failed"), ws->failed);
	metrics_counter(o, "nadi_sandboxd_workspace_snapshots_removed_total",
					"Workspace snapshots removed by retention.", NULL, ws->removed);
	metrics_counter(o, "nadi_sandboxd_forks_total",
					"Sandboxes made from a snapshot: here, or pulled from another host.",
					METRICS_LABELS("source", "local"), ws->forks_local);
	metrics_counter(o, "nadi_sandboxd_forks_total",
					"Sandboxes made from a snapshot: here, or pulled from another host.",
					METRICS_LABELS("source", "remote"), ws->forks_remote);
	metrics_counter(o, "nadi_sandboxd_fork_failures_total",
					"Forks from another host that failed (host unknown, fetch or receive).", NULL,
					ws->fork_failures);
	metrics_counter(o, "nadi_sandboxd_workspace_restores_total",
					"Sandboxes rolled back to one of their snapshots.", NULL, ws->restores);
	metrics_gauge(o, "nadi_sandboxd_draining", "Whether the daemon is draining.", NULL,
				  sbx_draining ? 1 : 0);
	pool_metrics(o);
	return metrics_end(o, len);
}
