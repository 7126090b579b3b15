/*
 * cell.c — the `nadi cell` background workers: an embedded cell host.
 *
 * Each of the nadi.cell_workers processes of host nadi.cell_host_id is a
 * cell (cellhost.c, the same code nadi-celld runs outside Postgres) over
 * the SPI store: it takes the sessions placed on the host whose id hashes
 * to it, keeps their leases, runs their commands, many at once (a session
 * waiting on a model, a tool or a timer holds no one up), suspends idle
 * sessions and lets go of terminating ones.  This file is the cell's host
 * in a background worker: its settings (GUCs), its log, and its loop.
 *
 * The worker sleeps on its latch and on the cell's calls in flight; a
 * commit that enqueues a command for one of its host's sessions sets the
 * latch (wake.c).  Timeouts only cover renewals, heartbeats, retry
 * backoffs, timers and idleness.
 */
#include "postgres.h"

#include <sys/resource.h>
#include <unistd.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"


#include "nadi.h"
#include "cell.h"
#include "cellhost.h"
#include "store_spi.h"
#include "wake.h"
#include "worker.h"

static char *nadi_cell_host_id = NULL;
static int	nadi_cell_capacity = 1000;
static int	nadi_heartbeat_interval_ms = 2000;
static int	nadi_idle_suspend_ms = 60000;
static char *nadi_sandboxd_url = NULL;
static char *nadi_sandboxd_token = NULL;
static char *nadi_sandbox_image = NULL;
static int	nadi_tool_timeout_ms = 30000;
static char *nadi_model_provider = NULL;
static char *nadi_model_url = NULL;
static bool nadi_proxy_tokens = true;
static char *nadi_model_name = NULL;
static int	nadi_model_max_steps = 8;

static int	nadi_cell_max_in_flight = 1000;
static int	nadi_cell_max_in_flight_tenant = 500;

static int	cell_index;
static int	cell_slot = -1;
static char host_id[NADI_HOST_ID_LEN];

/* The runtime's messages, in the server log. */
static void
cell_log(void *arg, RtLogLevel level, const char *msg)
{
	elog(level == RT_LOG_WARNING ? WARNING : level == RT_LOG_INFO ? LOG : DEBUG1, "%s", msg);
}

/* The cell's configuration, from the GUCs (read again after a reload). */
static void
cell_config(CellHostConfig *cfg, RuntimeConfig *rcfg)
{
	*cfg = (CellHostConfig)
	{
		.host_id = host_id,
		.address = "embedded",
		.capacity = nadi_cell_capacity,
		.workers = nadi_cell_workers,
		.index = cell_index,
		.heartbeat_ms = nadi_heartbeat_interval_ms,
		.idle_suspend_ms = nadi_idle_suspend_ms,
		.max_in_flight = nadi_cell_max_in_flight,
		.max_in_flight_tenant = nadi_cell_max_in_flight_tenant,
	};
	*rcfg = (RuntimeConfig)
	{
		.sandboxd_url = nadi_sandboxd_url,
		.sandbox_image = nadi_sandbox_image,
		.tool_timeout_ms = nadi_tool_timeout_ms,
		.model = {nadi_model_provider, nadi_model_url, nadi_model_name, nadi_tool_timeout_ms},
		.model_max_steps = nadi_model_max_steps,
		.proxy_tokens = nadi_proxy_tokens,
		.log = cell_log,
	};
}

/* The cells' settings; integers and booleans boot with their variables' values. */
static const NadiSetting cell_settings[] = {
	{NADI_SETTING_STRING, "nadi.cell_host_id", "Host id of the embedded cell host (default: the machine's host name).", NULL,
	&nadi_cell_host_id, "", 0, 0, PGC_POSTMASTER, 0},
	{NADI_SETTING_INT, "nadi.cell_capacity", "Sessions the embedded cell host offers to hold.", NULL,
	&nadi_cell_capacity, NULL, 0, 1000000, PGC_SIGHUP, 0},
	{NADI_SETTING_INT, "nadi.heartbeat_interval", "How often cells heartbeat their host and sweep every session they hold (leases are renewed on their own schedule).", NULL,
	&nadi_heartbeat_interval_ms, NULL, 10, 3600 * 1000, PGC_SIGHUP, GUC_UNIT_MS},
	{NADI_SETTING_INT, "nadi.idle_suspend", "A session with no command for this long is suspended (its lease released).", NULL,
	&nadi_idle_suspend_ms, NULL, 10, INT_MAX, PGC_SIGHUP, GUC_UNIT_MS},
	{NADI_SETTING_STRING, "nadi.sandboxd_url", "Sandbox host to use for sessions whose sandbox host has no address.", NULL,
	&nadi_sandboxd_url, "http://127.0.0.1:7100", 0, 0, PGC_SIGHUP, 0},
	{NADI_SETTING_STRING, "nadi.sandboxd_token", "Deprecated and unused: cells do not send it (a warning says so when it is set).",
		"Cells present each session's own token, nadi.sandboxd_token(session).",
	&nadi_sandboxd_token, "", 0, 0, PGC_SIGHUP, GUC_SUPERUSER_ONLY},
	{NADI_SETTING_STRING, "nadi.sandbox_image", "Image new sandboxes are made from.", NULL,
	&nadi_sandbox_image, "busybox", 0, 0, PGC_SIGHUP, 0},
	{NADI_SETTING_INT, "nadi.tool_timeout", "Longest a model call, or a request to a sandbox host other than a tool call, may take.",
		"A tool call is waited for until its own limit (its arguments, else the limit its host lists, else this) plus 10 s, and never less than this.",
	&nadi_tool_timeout_ms, NULL, 100, 3600 * 1000, PGC_SIGHUP, GUC_UNIT_MS},
	{NADI_SETTING_STRING, "nadi.model", "Model provider: builtin (deterministic, offline) or openai (chat completions).", NULL,
	&nadi_model_provider, "builtin", 0, 0, PGC_SIGHUP, 0},
	{NADI_SETTING_STRING, "nadi.model_url", "Base URL of the chat-completions API (the credentials proxy, which holds the key).", NULL,
	&nadi_model_url, "", 0, 0, PGC_SIGHUP, 0},
	{NADI_SETTING_STRING, "nadi.model_name", "Model name sent to the chat-completions API.", NULL,
	&nadi_model_name, "default", 0, 0, PGC_SIGHUP, 0},
	{NADI_SETTING_BOOL, "nadi.proxy_tokens", "Mint short-lived tokens for the credentials proxy: one sent with each model call, one passed with each tool call.",
		"Model calls with nadi.model = openai fail without a signing key while this is on; tool calls go on without a token.",
	&nadi_proxy_tokens, NULL, 0, 0, PGC_SIGHUP, 0},
	{NADI_SETTING_INT, "nadi.cell_max_in_flight", "Most commands one cell worker has under way at once (waiting on a model, a tool or a timer included); 0: no limit.",
		"A session with work waits in its queue while its cell worker is at the limit.",
	&nadi_cell_max_in_flight, NULL, 0, 100000, PGC_SIGHUP, 0},
	{NADI_SETTING_INT, "nadi.cell_max_in_flight_per_tenant", "Most commands of one tenant one cell worker has under way at once; 0: no limit.",
		"So that one tenant cannot take a cell host: its other sessions wait in their queues while it is at the limit.",
	&nadi_cell_max_in_flight_tenant, NULL, 0, 100000, PGC_SIGHUP, 0},
	{NADI_SETTING_INT, "nadi.model_max_steps", "Most model steps (tool round trips) one message command may take.", NULL,
	&nadi_model_max_steps, NULL, 1, 100, PGC_SIGHUP, 0},
};

void
cell_define_gucs(void)
{
	nadi_define_settings(cell_settings, lengthof(cell_settings));
}

static void
cell_detach(int code, Datum arg)
{
	if (cell_slot >= 0)
		nadi_worker_detach(cell_slot);
}

/*
 * What the cell is doing, in pg_stat_activity.query of the worker while it
 * waits (state idle): the embedded cell's counterpart of nadi-celld's
 * /metrics.  Its store's statements show there while they run.
 */
static void
cell_report(CellHost *ch)
{
	char		now[256];
	CellHostStats st;

	cellhost_stats(ch, &st);
	snprintf(now, sizeof(now),
			 "sessions=%ld in_flight=%ld/%d waiting_http=%ld waiting_timer=%ld "
			 "tenant_max_in_flight=%ld/%d deferred_cell=%llu deferred_tenant=%llu",
			 st.sessions, st.in_flight, nadi_cell_max_in_flight, st.waiting_http, st.waiting_timer,
			 st.tenant_max_in_flight, nadi_cell_max_in_flight_tenant,
			 (unsigned long long) st.deferred_cell, (unsigned long long) st.deferred_tenant);
	pgstat_report_activity(STATE_IDLE, now);
}

/*
 * Calls in flight hold sockets of their own, beside the files the server
 * opens: let the worker use as many descriptors as its hard limit allows.
 */
static void
cell_raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max)
	{
		rl.rlim_cur = rl.rlim_max;
		(void) setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/*
 * Whether the database has the extension at the version this library's
 * cells run at (NADI_EXT_VERSION, nadi.control's default_version).  In a
 * rolling upgrade the new library runs against the old schema from the
 * restart until ALTER EXTENSION nadi UPDATE: the cells wait for the update
 * instead of calling functions the old schema lacks, and the first of them
 * says so once per version seen, naming both.
 */
static bool
cell_schema_ready(void)
{
	static char warned[32];
	StoreResult r;
	const char *have = NULL;
	bool		ready;

	store_spi.exec(store_spi.ctx, "SELECT extversion FROM pg_extension WHERE extname = 'nadi'", 0, NULL, &r);
	if (json_array_size(r.rows) == 1)
		have = json_string_value(json_object_get(json_array_get(r.rows, 0), "extversion"));
	ready = have != NULL && strcmp(have, NADI_EXT_VERSION) == 0;
	if (have != NULL && !ready && cell_index == 0 && strcmp(warned, have) != 0)
	{
		strlcpy(warned, have, sizeof(warned));
		ereport(WARNING,
				(errmsg("nadi cell: the nadi extension in database \"%s\" is version %s, this nadi library's cells run at version %s: they wait",
						nadi_database, have, NADI_EXT_VERSION),
				 errhint("Run ALTER EXTENSION nadi UPDATE in database \"%s\"; the cells start by themselves.",
						 nadi_database)));
	}
	if (ready)
		warned[0] = '\0';
	store_result_free(&r);
	return ready;
}

void
nadi_cell_main(Datum arg)
{
	MemoryContext run_ctx;
	CellHost   *ch = NULL;
	TimestampTz ready_at = 0;

	cell_index = DatumGetInt32(arg);
	if (nadi_cell_host_id && nadi_cell_host_id[0])
		strlcpy(host_id, nadi_cell_host_id, sizeof(host_id));
	else if (gethostname(host_id, sizeof(host_id)) != 0 || host_id[0] == '\0')
		strlcpy(host_id, "localhost", sizeof(host_id));

	worker_setup("nadi cell");
	cell_slot = nadi_worker_attach(NADI_WORKER_CELL, host_id);
	if (cell_index == 0 && nadi_sandboxd_token && nadi_sandboxd_token[0])
		ereport(WARNING,
				(errcode(ERRCODE_WARNING_DEPRECATED_FEATURE),
				 errmsg("nadi.sandboxd_token is set but cells no longer send it"),
				 errdetail("Each call to a sandbox host carries the session's own token, nadi.sandboxd_token(session)."),
				 errhint("Keep the sandbox hosts' operator token out of the database: ALTER SYSTEM RESET nadi.sandboxd_token.")));
	before_shmem_exit(cell_detach, (Datum) 0);
	cell_raise_fd_limit();
	run_ctx = AllocSetContextCreate(TopMemoryContext, "nadi cell run", ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		MemoryContext old = MemoryContextSwitchTo(run_ctx);
		long		sleep_ms = 1000;
		CellHostConfig cfg;
		RuntimeConfig rcfg;

		/* is the extension there?  Until it is, then once per heartbeat */
		if (ready_at == 0 ||
			TimestampDifferenceExceeds(ready_at, GetCurrentTimestamp(), nadi_heartbeat_interval_ms))
			ready_at = cell_schema_ready() ? GetCurrentTimestamp() : 0;
		if (ready_at != 0)
		{
			cell_config(&cfg, &rcfg);
			if (ch == NULL && (ch = cellhost_new(&store_spi, &cfg, &rcfg)) == NULL)
				ereport(FATAL,
						(errcode(ERRCODE_OUT_OF_MEMORY),
						 errmsg("nadi cell: could not set up the cell host")));
			sleep_ms = cellhost_run(ch);
			cell_report(ch);
		}
		MemoryContextSwitchTo(old);
		MemoryContextReset(run_ctx);
		if (worker_wait_fd(sleep_ms, ch ? cellhost_fd(ch) : PGINVALID_SOCKET) && ch)
			cellhost_wake(ch);
		if (ch && worker_reloaded())
		{
			cell_config(&cfg, &rcfg);
			cellhost_configure(ch, &cfg, &rcfg);
		}
	}
}
