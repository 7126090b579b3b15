/*
 * metrics.c — the daemon's counters and their Prometheus text exposition
 * (GET /metrics).  Gauges are computed at scrape time from the registry.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "child.h"
#include "limits.h"
#include "metrics.h"
#include "pg.h"
#include "sandbox.h"
#include "btrfs_store.h"

extern bool sbx_draining;

static const char *tools[] = {"echo", "uppercase", "list_files", "exec", "read_file", "write_file", "edit_file"};
static const char *outcomes[] = {"ok", "failed", "timed_out", "error"};
static const double buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
#define NB ARRAY_SIZE(buckets)

struct histogram {
	uint64_t counts[NB + 1];
	uint64_t n;
	double sum;
};

static uint64_t http_by_class[6];
static uint64_t calls[ARRAY_SIZE(tools)][ARRAY_SIZE(outcomes)];
static struct histogram call_hist[2]; /* warm, cold */
static struct histogram start_hist;
static uint64_t starts_failed;

static void
observe(struct histogram *h, double seconds)
{
	size_t i = 0;

	while (i < NB && seconds > buckets[i])
		i++;
	h->counts[i]++;
	h->n++;
	h->sum += seconds;
}

void
metrics_http(unsigned status)
{
	unsigned cls = status / 100;

	if (cls < ARRAY_SIZE(http_by_class))
		http_by_class[cls]++;
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
	observe(&call_hist[cold ? 1 : 0], (double)duration_us / 1e6);
}

void
metrics_container_started(uint64_t ms)
{
	observe(&start_hist, (double)ms / 1e3);
}

void
metrics_container_failed(void)
{
	starts_failed++;
}

struct out {
	char *buf;
	size_t len, cap;
	bool oom;
};

static void _printf_(2, 3)
emit(struct out *o, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (o->oom)
		return;
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			o->oom = true;
			return;
		}
		if ((size_t)n < o->cap - o->len) {
			o->len += (size_t)n;
			return;
		}
		size_t want = (o->cap + (size_t)n + 1) * 2;
		char *nb = realloc(o->buf, want);
		if (!nb) {
			o->oom = true;
			return;
		}
		o->buf = nb;
		o->cap = want;
	}
}

static void
emit_histogram(struct out *o, const char *name, const char *labels, const struct histogram *h)
{
	uint64_t cum = 0;
	const char *sep = labels[0] ? "," : "";

	for (size_t i = 0; i < NB; i++) {
		cum += h->counts[i];
		emit(o, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, buckets[i], (unsigned long long)cum);
	}
	cum += h->counts[NB];
	emit(o, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep, (unsigned long long)cum);
	if (labels[0]) {
		emit(o, "%s_sum{%s} %.6f\n", name, labels, h->sum);
		emit(o, "%s_count{%s} %llu\n", name, labels, (unsigned long long)h->n);
	} else {
		emit(o, "%s_sum %.6f\n", name, h->sum);
		emit(o, "%s_count %llu\n", name, (unsigned long long)h->n);
	}
}

char *
metrics_render(size_t *len)
{
	struct out o = {0};
	unsigned by_state[CT_STOPPING + 1] = {0};

	for (struct sbx_sandbox *sb = sandboxes; sb; sb = sb->next)
		by_state[sb->ct.state]++;

	emit(&o, "# HELP nadi_sandboxd_info Build and configuration of this daemon.\n"
		 "# TYPE nadi_sandboxd_info gauge\n"
		 "nadi_sandboxd_info{version=\"%s\",limits=\"%s\",storage=\"%s\"} 1\n",
	     SBX_VERSION, limit_mode_name(limits_mode()), store_is_loop() ? "loop" : "btrfs");
	emit(&o, "# HELP nadi_sandboxd_sandboxes Sandboxes on this host.\n"
		 "# TYPE nadi_sandboxd_sandboxes gauge\n"
		 "nadi_sandboxd_sandboxes %zu\n"
		 "# HELP nadi_sandboxd_sandbox_capacity Sandboxes this host accepts.\n"
		 "# TYPE nadi_sandboxd_sandbox_capacity gauge\n"
		 "nadi_sandboxd_sandbox_capacity %llu\n",
	     sandbox_count(), (unsigned long long)cfg.max_sandboxes);
	emit(&o, "# HELP nadi_sandboxd_containers Containers by state.\n"
		 "# TYPE nadi_sandboxd_containers gauge\n");
	for (int s = CT_STARTING; s <= CT_STOPPING; s++)
		emit(&o, "nadi_sandboxd_containers{state=\"%s\"} %u\n", ct_state_name((enum ct_state)s), by_state[s]);
	emit(&o, "# HELP nadi_sandboxd_calls_queued Tool calls waiting or running.\n"
		 "# TYPE nadi_sandboxd_calls_queued gauge\n"
		 "nadi_sandboxd_calls_queued %u\n", run_busy());
	emit(&o, "# HELP nadi_sandboxd_http_responses_total HTTP responses by status class.\n"
		 "# TYPE nadi_sandboxd_http_responses_total counter\n");
	for (unsigned c = 1; c < ARRAY_SIZE(http_by_class); c++)
		emit(&o, "nadi_sandboxd_http_responses_total{class=\"%uxx\"} %llu\n", c,
		     (unsigned long long)http_by_class[c]);
	emit(&o, "# HELP nadi_sandboxd_tool_calls_total Tool calls by tool and outcome.\n"
		 "# TYPE nadi_sandboxd_tool_calls_total counter\n");
	for (size_t t = 0; t < ARRAY_SIZE(tools); t++)
		for (size_t k = 0; k < ARRAY_SIZE(outcomes); k++)
			emit(&o, "nadi_sandboxd_tool_calls_total{tool=\"%s\",outcome=\"%s\"} %llu\n", tools[t],
			     outcomes[k], (unsigned long long)calls[t][k]);
	emit(&o, "# HELP nadi_sandboxd_call_duration_seconds Container tool calls, end to end.\n"
		 "# TYPE nadi_sandboxd_call_duration_seconds histogram\n");
	emit_histogram(&o, "nadi_sandboxd_call_duration_seconds", "start=\"warm\"", &call_hist[0]);
	emit_histogram(&o, "nadi_sandboxd_call_duration_seconds", "start=\"cold\"", &call_hist[1]);
	emit(&o, "# HELP nadi_sandboxd_container_start_seconds Time from fork to the init's hello.\n"
		 "# TYPE nadi_sandboxd_container_start_seconds histogram\n");
	emit_histogram(&o, "nadi_sandboxd_container_start_seconds", "", &start_hist);
	emit(&o, "# HELP nadi_sandboxd_container_start_failures_total Containers that never came up.\n"
		 "# TYPE nadi_sandboxd_container_start_failures_total counter\n"
		 "nadi_sandboxd_container_start_failures_total %llu\n", (unsigned long long)starts_failed);
	emit(&o, "# HELP nadi_sandboxd_store_free_bytes Free space in the sandbox store.\n"
		 "# TYPE nadi_sandboxd_store_free_bytes gauge\n"
		 "nadi_sandboxd_store_free_bytes %llu\n", (unsigned long long)store_free_bytes());
	emit(&o, "# HELP nadi_sandboxd_helpers Helper processes (btrfs send/receive) running.\n"
		 "# TYPE nadi_sandboxd_helpers gauge\n"
		 "nadi_sandboxd_helpers %u\n", child_count());
	emit(&o, "# HELP nadi_sandboxd_registered Whether the last registration or heartbeat succeeded.\n"
		 "# TYPE nadi_sandboxd_registered gauge\n"
		 "nadi_sandboxd_registered %d\n"
		 "# HELP nadi_sandboxd_draining Whether the daemon is draining.\n"
		 "# TYPE nadi_sandboxd_draining gauge\n"
		 "nadi_sandboxd_draining %d\n", pg_registered() ? 1 : 0, sbx_draining ? 1 : 0);
	if (o.oom) {
		free(o.buf);
		return NULL;
	}
	*len = o.len;
	return o.buf;
}
