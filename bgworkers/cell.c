/*
 * cell.c — the `nadi cell` background workers: an embedded cell host.
 *
 * Each of the nadi.cell_workers processes of host nadi.cell_host_id takes
 * the sessions placed on the host whose id hashes to it, acquires their
 * leases, keeps them renewed, runs their commands one at a time (the agent
 * runtime, runtime.c, through its blocking driver: this file is its host),
 * suspends sessions idle for nadi.idle_suspend (lease released, state stays
 * in Postgres) and lets go of terminating ones.  A session it (re)takes is
 * resumed from nadi.session_replay(): the event log is the state.
 *
 * The worker sleeps on its latch; a commit that enqueues a command for one
 * of its host's sessions sets it (wake.c).  Timeouts only cover renewals,
 * heartbeats, retry backoffs and idleness.
 */
#include "postgres.h"

#include <unistd.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "storage/latch.h"
#include "utils/wait_event.h"

#include "nadi.h"
#include "cell.h"
#include "runtime.h"
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

/* A session this worker holds the lease of. */
typedef struct CellSession
{
	pg_uuid_t	id;				/* hash key */
	RtSession	rt;				/* what the runtime keeps (id as text, epoch, conversation) */
	TimestampTz lease_expires;
	TimestampTz last_active;
	bool		listed;			/* seen in this round's listing */
} CellSession;

static int	cell_index;
static int	cell_slot = -1;
static char host_id[NADI_HOST_ID_LEN];
static HTAB *sessions;
static const CellStore *store = &store_spi;
static Runtime runtime;

static void cell_keepalive(bool forget);

/* One statement in a transaction of its own (the store's exec). */
static StoreResult
cell_exec(const char *sql, int nargs, const char *const *args)
{
	StoreResult r;

	store->exec(store->ctx, sql, nargs, args, &r);
	return r;
}

/* The runtime's messages, in the server log. */
static void
cell_log(void *arg, RtLogLevel level, const char *msg)
{
	elog(level == RT_LOG_WARNING ? WARNING : level == RT_LOG_INFO ? LOG : DEBUG1, "%s", msg);
}

/* The runtime's configuration, from the GUCs (read again after a reload). */
static void
cell_configure(void)
{
	runtime.cfg = (RuntimeConfig)
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

/*
 * While a request of the runtime is out: keep leases alive; give the
 * request up when the worker is told to exit (it does so at its next store
 * call, before anything more is written).
 */
static bool
cell_abort_requested(void *arg)
{
	if (!ProcDiePending)
		cell_keepalive(false);
	return ProcDiePending;
}

/* A timer of the runtime (the builtin model's /sleep): wait on the latch, keeping leases. */
static void
cell_wait(void *arg, long ms)
{
	TimestampTz end = GetCurrentTimestamp() + (TimestampTz) ms * 1000;

	while (GetCurrentTimestamp() < end)
	{
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Min(Max(1, (end - GetCurrentTimestamp()) / 1000), nadi_lease_ttl_ms / 6 + 1),
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		cell_keepalive(false);
	}
}

static const RtHost cell_host = {&store_spi, cell_abort_requested, cell_wait, NULL};

/* The cells' settings; integers and booleans boot with their variables' values. */
static const NadiSetting cell_settings[] = {
	{NADI_SETTING_STRING, "nadi.cell_host_id", "Host id of the embedded cell host (default: the machine's host name).", NULL,
	&nadi_cell_host_id, "", 0, 0, PGC_POSTMASTER, 0},
	{NADI_SETTING_INT, "nadi.cell_capacity", "Sessions the embedded cell host offers to hold.", NULL,
	&nadi_cell_capacity, NULL, 0, 1000000, PGC_SIGHUP, 0},
	{NADI_SETTING_INT, "nadi.heartbeat_interval", "How often cells heartbeat their host and renew their leases at the latest.", NULL,
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

static TimestampTz
ts_from_json(json_t *v)
{
	const char *s = json_string_value(v);

	return s ? nadi_timestamptz_parse(s) : 0;
}

static void
session_forget(CellSession *s)
{
	runtime_session_free(&s->rt);
	hash_search(sessions, &s->id, HASH_REMOVE, NULL);
}

/* Register the host, or heartbeat it (registering again if it was lost). */
static void
cell_heartbeat(void)
{
	char		cap[16];
	const char *args[3] = {host_id, NULL, cap};
	StoreResult r;

	r = cell_exec("SELECT state FROM nadi.cell_host_heartbeat($1)", 1, args);
	if (r.sqlstate[0] != '\0')
	{
		store_result_free(&r);
		snprintf(cap, sizeof(cap), "%d", nadi_cell_capacity);
		args[1] = "embedded";
		r = cell_exec("SELECT state FROM nadi.cell_host_register($1, $2, $3::integer)", 3, args);
	}
	store_result_free(&r);
}

/* Take a placed session: acquire its lease and rebuild its state by replay. */
static void
cell_take(const char *id_text, json_t *row)
{
	const char *args[2] = {id_text, host_id};
	StoreResult r = cell_exec("SELECT epoch, expires_at FROM nadi.lease_acquire($1::uuid, $2)", 2, args);
	StoreResult replay;
	json_t	   *lease = json_array_get(r.rows, 0);
	pg_uuid_t	id;
	CellSession *s;
	bool		found;

	if (r.sqlstate[0] != '\0' || lease == NULL)
	{
		store_result_free(&r);
		return;
	}
	replay = cell_exec("SELECT nadi.session_replay($1::uuid) AS state", 1, args);
	nadi_uuid_parse(id_text, &id);
	s = hash_search(sessions, &id, HASH_ENTER, &found);
	memset((char *) s + sizeof(pg_uuid_t), 0, sizeof(CellSession) - sizeof(pg_uuid_t));
	runtime_session_init(&s->rt, id_text, json_integer_value(json_object_get(lease, "epoch")),
						 json_object_get(json_object_get(json_array_get(replay.rows, 0), "state"), "messages"),
						 json_object_get(row, "policy"),
						 json_string_value(json_object_get(row, "sandbox_url")));
	s->lease_expires = ts_from_json(json_object_get(lease, "expires_at"));
	s->last_active = GetCurrentTimestamp();
	s->listed = true;
	store_result_free(&replay);
	store_result_free(&r);
}

/*
 * Let go of a session: write the cell's state as a cell.checkpoint event
 * (so a test can compare it with the replay), then release the lease.
 */
static void
cell_release(CellSession *s)
{
	json_t	   *cp = json_pack("{s:O}", "messages", s->rt.messages);
	char	   *p = json_dumps(cp, JSON_COMPACT);
	char		epoch[32];
	const char *args[4] = {s->rt.id, epoch, "cell.checkpoint", p};
	StoreResult r;

	snprintf(epoch, sizeof(epoch), INT64_FORMAT, s->rt.epoch);
	r = cell_exec("SELECT seq FROM nadi.event_append($1::uuid, $2::bigint, $3, $4::jsonb)", 4, args);
	store_result_free(&r);
	r = cell_exec("SELECT epoch FROM nadi.lease_release($1::uuid, $2::bigint)", 2, args);
	store_result_free(&r);
	free(p);
	json_decref(cp);
	session_forget(s);
}

/*
 * Renew the leases that are due for it (a third of the TTL left to run at
 * the latest).  Called between rounds and, through the runtime's host
 * callbacks, while a long model step, tool call or timer is under way, so slow work does not lose its
 * lease.  With forget, sessions that are no longer ours are dropped;
 * otherwise (in the middle of a command) they are only marked (epoch -1).
 */
static void
cell_keepalive(bool forget)
{
	static TimestampTz last = 0;
	long		count = hash_get_num_entries(sessions);
	CellSession **all;
	HASH_SEQ_STATUS seq;
	CellSession *s;
	long		m = 0;

	if (!forget && !TimestampDifferenceExceeds(last, GetCurrentTimestamp(), nadi_lease_ttl_ms / 6))
		return;
	last = GetCurrentTimestamp();
	/* collect first: a hash scan must not stay open across transactions */
	all = palloc(sizeof(CellSession *) * (count + 1));
	hash_seq_init(&seq, sessions);
	while ((s = hash_seq_search(&seq)) != NULL)
		all[m++] = s;
	for (long j = 0; j < m; j++)
	{
		s = all[j];
		if (forget && (!s->listed || s->rt.epoch < 0))
			session_forget(s);
		else if (s->rt.epoch >= 0 &&
				 s->lease_expires - GetCurrentTimestamp() < (TimestampTz) nadi_lease_ttl_ms * 1000 * 2 / 3)
		{
			char		epoch[32];
			const char *rargs[2] = {s->rt.id, epoch};
			StoreResult r;

			snprintf(epoch, sizeof(epoch), INT64_FORMAT, s->rt.epoch);
			r = cell_exec("SELECT expires_at FROM nadi.lease_renew($1::uuid, $2::bigint)", 2, rargs);
			if (r.sqlstate[0] != '\0')
				s->rt.epoch = -1;
			else
				s->lease_expires = ts_from_json(json_object_get(json_array_get(r.rows, 0), "expires_at"));
			store_result_free(&r);
			if (forget && s->rt.epoch < 0)
				session_forget(s);
		}
	}
	pfree(all);
}

/*
 * The batched path: claim the next command of every session with work in
 * one transaction, run them one after the other through the runtime's
 * blocking driver (instant steps write nothing yet; slow steps commit what
 * they must first, as store needs), then commit every session's writes in one
 * transaction, a subtransaction per session.  One commit serves many
 * sessions; per session the order of events and fencing are unchanged.
 */
static void
cell_run_batch(CellSession **work, int nwork)
{
	StoreGroup *groups = palloc0(sizeof(StoreGroup) * nwork);
	int			nflush = 0;

	for (int j = 0; j < nwork; j++)
	{
		char	   *epoch = psprintf(INT64_FORMAT, work[j]->rt.epoch);
		const char *args[2] = {work[j]->rt.id, epoch};

		groups[j].stmts = json_pack("[o]", store_stmt("SELECT command_id, type, payload "
													  "FROM nadi.command_claim($1::uuid, $2::bigint)",
													  2, args));
	}
	store->exec_groups(store->ctx, groups, nwork);
	cell_configure();
	for (int j = 0; j < nwork; j++)
	{
		json_t	   *row = json_array_get(json_array_get(groups[j].results, 0), 0);

		if (groups[j].sqlstate[0] != '\0')
			work[j]->rt.epoch = -1;
		else if (row)
		{
			work[j]->last_active = GetCurrentTimestamp();
			runtime_run(&runtime, &work[j]->rt, row, &cell_host);
		}
		store_group_free(&groups[j]);
	}

	/* one commit for everything the instant steps wrote */
	memset(groups, 0, sizeof(StoreGroup) * nwork);
	for (int j = 0; j < nwork; j++)
	{
		if (work[j]->rt.pending && json_array_size(work[j]->rt.pending) > 0)
		{
			groups[nflush].stmts = work[j]->rt.pending;
			work[j]->rt.pending = NULL;
			work[nflush++] = work[j];
		}
	}
	store->exec_groups(store->ctx, groups, nflush);
	for (int j = 0; j < nflush; j++)
	{
		if (groups[j].sqlstate[0] != '\0')
			work[j]->rt.epoch = -1;
		store_group_free(&groups[j]);
	}
	pfree(groups);
}

/*
 * One round: list this worker's sessions, take placed ones, renew, run one
 * command per session with work, release idle and terminating ones.
 * Returns how long the worker may sleep (ms), 0 if there may be more work.
 */
static long
cell_round(void)
{
	char		n[16],
				i[16];
	const char *args[3] = {host_id, n, i};
	StoreResult list;
	json_t	   *row;
	size_t		k;
	HASH_SEQ_STATUS seq;
	CellSession *s;
	TimestampTz now = GetCurrentTimestamp();
	long		sleep_ms = nadi_heartbeat_interval_ms;
	bool		worked = false;
	CellSession **work;
	int			nwork = 0;

	snprintf(n, sizeof(n), "%d", nadi_cell_workers);
	snprintf(i, sizeof(i), "%d", cell_index);
	list = cell_exec("SELECT s.session_id, s.state, l.epoch, l.cell_host_id AS holder, s.policy, "
					  "h.address AS sandbox_url, "
					  "EXISTS (SELECT 1 FROM nadi.command_inbox c WHERE c.session_id = s.session_id "
					  "  AND c.status = 'queued' AND c.available_at <= nadi.now()) AS has_work, "
					  "EXISTS (SELECT 1 FROM nadi.command_inbox c WHERE c.session_id = s.session_id "
					  "  AND c.status IN ('queued', 'running', 'waiting')) AS has_open, "
					  "(SELECT ceil(extract(epoch FROM min(c.available_at) - nadi.now()) * 1000) "
					  "  FROM nadi.command_inbox c WHERE c.session_id = s.session_id "
					  "  AND c.status = 'queued') AS next_due_ms "
					  "FROM nadi.sessions s JOIN nadi.session_leases l USING (session_id) "
					  "LEFT JOIN nadi.sandbox_hosts h ON h.host_id = s.sandbox_host_id "
					  "WHERE s.cell_host_id = $1 AND s.state IN ('placed', 'active', 'terminating') "
					  "AND get_byte(uuid_send(s.session_id), 15) % $2::integer = $3::integer",
					  3, args);

	hash_seq_init(&seq, sessions);
	while ((s = hash_seq_search(&seq)) != NULL)
		s->listed = false;
	work = palloc(sizeof(CellSession *) * (json_array_size(list.rows) + 1));

	json_array_foreach(list.rows, k, row)
	{
		const char *id_text = json_string_value(json_object_get(row, "session_id"));
		const char *state = json_string_value(json_object_get(row, "state"));
		int64		epoch = json_integer_value(json_object_get(row, "epoch"));
		json_t	   *due = json_object_get(row, "next_due_ms");
		pg_uuid_t	id;
		bool		found;

		nadi_uuid_parse(id_text, &id);
		s = hash_search(sessions, &id, HASH_FIND, &found);
		if (strcmp(state, "placed") == 0)
		{
			if (found)
				session_forget(s);
			cell_take(id_text, row);
			s = hash_search(sessions, &id, HASH_FIND, &found);
			if (found)
				epoch = s->rt.epoch;	/* the listing predates our acquire */
		}
		if (!found || s->rt.epoch != epoch)
			continue;			/* not ours (or not any more) */
		s->listed = true;

		if (strcmp(state, "terminating") == 0)
		{
			cell_release(s);
			continue;
		}
		if (json_is_true(json_object_get(row, "has_work")))
			work[nwork++] = s;
		else if (json_is_number(due))
			sleep_ms = Min(sleep_ms, Max(1, (long) json_number_value(due)));
		if (!json_is_true(json_object_get(row, "has_open")) &&
			TimestampDifferenceExceeds(s->last_active, now, nadi_idle_suspend_ms))
			cell_release(s);
	}
	store_result_free(&list);

	if (nwork > 0)
	{
		cell_run_batch(work, nwork);
		worked = true;
	}

	/* forget what is no longer ours; renew what is due */
	cell_keepalive(true);
	sleep_ms = Min(sleep_ms, nadi_lease_ttl_ms / 3);
	return worked ? 0 : sleep_ms;
}

void
nadi_cell_main(Datum arg)
{
	MemoryContext round_ctx;
	HASHCTL		ctl = {0};
	TimestampTz last_heartbeat = 0;

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

	ctl.keysize = sizeof(pg_uuid_t);
	ctl.entrysize = sizeof(CellSession);
	ctl.hcxt = TopMemoryContext;
	sessions = hash_create("nadi cell sessions", 1024, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	round_ctx = AllocSetContextCreate(TopMemoryContext, "nadi cell round", ALLOCSET_DEFAULT_SIZES);
	runtime_init(&runtime);

	for (;;)
	{
		MemoryContext old;
		long		sleep_ms;
		bool		ready;

		old = MemoryContextSwitchTo(round_ctx);
		{
			StoreResult r = cell_exec("SELECT 1 AS ready FROM pg_extension WHERE extname = 'nadi'", 0, NULL);

			ready = json_array_size(r.rows) == 1;
			store_result_free(&r);
		}
		if (!ready)
			sleep_ms = 1000;
		else
		{
			if (TimestampDifferenceExceeds(last_heartbeat, GetCurrentTimestamp(), nadi_heartbeat_interval_ms))
			{
				cell_heartbeat();
				last_heartbeat = GetCurrentTimestamp();
			}
			sleep_ms = cell_round();
		}
		MemoryContextSwitchTo(old);
		MemoryContextReset(round_ctx);
		worker_wait(sleep_ms);
	}
}
