/*
 * db.c — the edge's one adapter to libpq.
 *
 * A pool of --pool non-blocking connections runs jobs from one FIFO queue.
 * A job is one transaction in one round trip: in pipeline mode the edge
 * sends `SELECT nadi.authenticate($token)` and the API statement (both
 * prepared once per connection), then a Sync; the two form one implicit
 * transaction, so the token's tenant is in force for the API call and
 * gone at commit, and an error in either rolls back both.
 *
 * One more connection LISTENs on nadi_events; each notification's payload
 * (a session id) goes to feed.c.  When that connection comes back after a
 * loss, notifications may have been missed, so feed.c re-reads every feed.
 *
 * Connections are opened and driven through daemonlib/pq (connecting
 * without blocking, application_name, notices, back-off) and every socket
 * lives in the event loop: nothing here blocks.  A lost connection fails
 * its job with SQLSTATE 08006 (HTTP 503; nothing is retried, since a write
 * may have committed) and is reopened after pq's back-off.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include <libpq-fe.h>

#include "daemonlib/pq.h"
#include "edge.h"

#define DB_MAX_PARAMS 6
#define DB_OPTIONS \
	"-c TimeZone=UTC -c statement_timeout=30s -c idle_in_transaction_session_timeout=30s"

#define SESSION_FIELDS \
	"'id', s.session_id, 'tenant_id', s.tenant_id, 'state', s.state, " \
	"'metadata', s.metadata, 'labels', s.labels, 'policy', s.policy, 'last_seq', s.last_seq, " \
	"'created_at', s.created_at, 'updated_at', s.updated_at"
#define SESSION_JSON "json_build_object(" SESSION_FIELDS ")::text"
/*
 * the list adds the session's open commands: a count over the partial index
 * command_inbox_open_idx, under the token's row-level security
 */
#define SESSION_OPEN_JSON \
	"json_build_object(" SESSION_FIELDS ", 'open_commands', (SELECT count(*) FROM " \
	"nadi.command_inbox ci WHERE ci.session_id = s.session_id " \
	"AND ci.status IN ('queued', 'running', 'waiting')))::text"
#define COMMAND_JSON \
	"json_build_object('id', c.command_id, 'session_id', c.session_id, 'type', c.type, " \
	"'status', c.status, 'payload', c.payload, 'idempotency_key', c.idempotency_key, " \
	"'attempts', c.attempts, 'max_attempts', c.max_attempts, " \
	"'cancel_requested', c.cancel_requested, 'result', c.result, 'error', c.last_error, " \
	"'created_at', c.created_at, 'finished_at', c.finished_at)::text"

/*
 * A fork and its session.  The fork's own row is not visible to this
 * statement (nadi.session_fork inserts it), so the session is built from
 * what the fork is by definition: pending, one event, the parent's
 * metadata, labels and policy.
 */
#define FORK_JSON \
	"json_build_object('parent_session_id', f.parent_session_id, 'at_seq', f.at_seq, " \
	"'seq', f.seq, 'workspace', f.workspace)"
#define FORK_SQL \
	"WITH f AS MATERIALIZED (SELECT * FROM nadi.session_fork($1::uuid, $2::bigint)) " \
	"SELECT json_build_object('id', f.session_id, 'tenant_id', f.tenant_id, 'state', 'pending', " \
	"'metadata', p.metadata, 'labels', p.labels, 'policy', p.policy, 'last_seq', 1, " \
	"'created_at', f.created_at, 'updated_at', f.created_at, 'fork', " FORK_JSON ")::text, " \
	"f.session_id, 1, " FORK_JSON "::text " \
	"FROM f JOIN nadi.sessions p ON p.session_id = f.parent_session_id"

/* Every statement takes text parameters and casts them itself. */
static const char *const stmt_sql[STMT__COUNT] = {
	[STMT_FILES_BEGIN] = "SELECT f.transfer_id, f.address, f.token, f.image, f.fork FROM "
						 "nadi.session_files_begin($1::uuid, $2::text, $3::text) f",
	[STMT_FILES_END] =
		"SELECT nadi.session_files_end($1::bigint, $2::bigint, $3::integer, $4::text)",
	[STMT_PING] = "SELECT 1",
	[STMT_JWKS] = "SELECT nadi.jwks()::text",
	[STMT_SESSION_CREATE] =
		"SELECT " SESSION_JSON ", s.session_id, s.last_seq FROM nadi.session_create($1::text, "
		"coalesce($2::jsonb, '{}'), coalesce($3::jsonb, '{}'), coalesce($4::jsonb, '{}')) s",
	[STMT_SESSION_GET] = "SELECT " SESSION_JSON " FROM nadi.session_get($1::uuid) s",
	[STMT_SESSION_LIST] =
		"SELECT " SESSION_OPEN_JSON ", s.session_id FROM nadi.session_list($1::nadi.session_state, "
		"$2::uuid, $3::integer, $4::text) s",
	[STMT_SESSION_TERMINATE] =
		"SELECT " SESSION_JSON " FROM nadi.session_terminate($1::uuid, $2::text) s",
	[STMT_COMMAND_ENQUEUE] = "SELECT " COMMAND_JSON ", c.command_id, c.created_at <> nadi.now() "
							 "FROM nadi.command_enqueue($1::uuid, $2::text, $3::jsonb, $4::text) c",
	/* the commands in the batch's order, and whether every one was a replay */
	[STMT_COMMAND_ENQUEUE_MANY] = "SELECT '[' || coalesce(string_agg(" COMMAND_JSON
								  ", ',' ORDER BY c.ordinality), '') || ']', "
								  "coalesce(bool_and(c.created_at <> nadi.now()), false) "
								  "FROM nadi.command_enqueue_many($1::jsonb) WITH ORDINALITY c",
	[STMT_COMMAND_GET] = "SELECT " COMMAND_JSON " FROM nadi.command_get($1::uuid, $2::bigint) c",
	[STMT_COMMAND_LIST] = "SELECT " COMMAND_JSON ", c.command_id FROM nadi.command_list($1::uuid, "
						  "$2::nadi.command_status, $3::bigint, $4::integer) c",
	[STMT_COMMAND_CANCEL] =
		"SELECT " COMMAND_JSON " FROM nadi.command_cancel($1::uuid, $2::bigint) c",
	[STMT_EVENTS_READ] =
		"SELECT e.seq, json_build_object('seq', e.seq, 'kind', e.kind, 'session_id', e.session_id, "
		"'command_id', e.command_id, 'payload', e.payload, 'created_at', e.created_at)::text "
		"FROM nadi.events_read($1::uuid, $2::bigint, $3::integer) e",
	/*
	 * The session's last seq comes from the same snapshot as the events, so
	 * a cursor beyond it can be clamped to it; the read starts there too.
	 */
	[STMT_EVENTS_FOLLOW] =
		"SELECT s.last_seq, e.seq, json_build_object('seq', e.seq, 'kind', e.kind, "
		"'session_id', e.session_id, 'command_id', e.command_id, 'payload', e.payload, "
		"'created_at', e.created_at)::text "
		"FROM nadi.session_get($1::uuid) s LEFT JOIN LATERAL "
		"nadi.events_read($1::uuid, least($2::bigint, s.last_seq), $3::integer) e ON true "
		"ORDER BY e.seq",
	/* docs/HTTP_API.md, GET /v1/operator: the nadi.stat_* views as one object */
	[STMT_OPERATOR] =
		"SELECT json_build_object('at', nadi.now(), "
		"'sessions', coalesce((SELECT json_agg(json_build_object('tenant_id', x.tenant_id, "
		"'state', x.state, 'sessions', x.sessions, 'last_activity', x.last_activity) "
		"ORDER BY x.tenant_id, x.state) FROM nadi.stat_sessions x), '[]'), "
		"'queue', (SELECT json_build_object('queued', q.queued, 'running', q.running, "
		"'waiting', q.waiting, 'dead', q.dead, 'oldest_queued_at', q.oldest_queued_at, "
		"'oldest_queued_age_seconds', q.oldest_queued_age_seconds) "
		"FROM nadi.stat_queue q WHERE q.tenant_id IS NULL), "
		"'hosts', coalesce((SELECT json_agg(json_build_object('kind', h.kind, 'host_id', "
		"h.host_id, "
		"'state', h.state, 'address', h.address, 'capacity', h.capacity, 'load', h.load, "
		"'leases', h.leases, 'heartbeat_at', h.heartbeat_at, "
		"'heartbeat_age_seconds', h.heartbeat_age_seconds) ORDER BY h.kind, h.host_id) "
		"FROM nadi.stat_hosts h), '[]'), "
		"'takeovers', (SELECT json_build_object('takeovers_total', coalesce(sum(t.takeovers), 0), "
		"'sessions_with_crashes', coalesce(sum(t.sessions_with_crashes), 0), "
		"'crash_count_total', coalesce(sum(t.crash_count_total), 0)) FROM nadi.stat_takeovers t), "
		"'crashes', coalesce((SELECT json_agg(json_build_object('session_id', c.session_id, "
		"'tenant_id', c.tenant_id, 'crash_count', c.crash_count, 'epoch', c.epoch) "
		"ORDER BY c.crash_count DESC, c.session_id) FROM (SELECT * FROM nadi.stat_crashes "
		"ORDER BY crash_count DESC, session_id LIMIT 20) c), '[]'), "
		"'dead_letters', coalesce((SELECT json_agg(json_build_object('session_id', d.session_id, "
		"'tenant_id', d.tenant_id, 'command_id', d.command_id, 'type', d.type, "
		"'attempts', d.attempts, 'last_error', d.last_error, 'finished_at', d.finished_at) "
		"ORDER BY d.finished_at DESC, d.command_id DESC) FROM (SELECT * FROM "
		"nadi.stat_dead_letters ORDER BY finished_at DESC, command_id DESC LIMIT 50) d), '[]'), "
		"'calls', coalesce((SELECT json_agg(json_build_object('tenant_id', k.tenant_id, "
		"'kind', k.kind, 'name', k.name, 'calls', k.calls, 'errors', k.errors, "
		"'latency_avg_seconds', k.latency_avg_seconds, 'latency_count', k.latency_count, "
		"'latency_sum_seconds', k.latency_sum_seconds) ORDER BY k.tenant_id, k.kind, k.name) "
		"FROM nadi.stat_calls k WHERE k.kind IN ('tool', 'model')), '[]'), "
		"'tokens', coalesce((SELECT json_agg(json_build_object('tenant_id', o.tenant_id, "
		"'input_tokens', o.input_tokens, 'output_tokens', o.output_tokens) ORDER BY o.tenant_id) "
		"FROM nadi.stat_tokens o), '[]'))::text",
	[STMT_SESSION_FORK] = FORK_SQL,
};

#define AUTH_SQL "SELECT nadi.authenticate($1::text) IS NOT NULL"

struct EdgeJob
{
	EdgeStmt   stmt;
	char	  *token;
	int		   nparams;
	char	  *params[DB_MAX_PARAMS];
	EdgeDbDone done;
	void	  *arg;
	uint64_t   deadline_ms;
	bool	   cancelled;
	bool	   running;
	EdgeJob	  *next;
};

typedef enum DbState
{
	DB_DOWN = 0,
	DB_CONNECTING,
	DB_PREPARING,
	DB_IDLE,
	DB_BUSY
} DbState;

typedef struct DbConn
{
	PqConn	  pq;
	DbState	  state;
	bool	  listener;
	EvIo	  watch;
	EvTimer	  retry;
	EdgeJob	 *job;
	int		  nres;		 /* results (other than Sync) seen so far */
	int		  api_index; /* which of them is the API statement's */
	int		  nulls;	 /* consecutive NULL results */
	PGresult *api_res;	 /* result of the API statement */
	PGresult *err_res;	 /* first error */
} DbConn;

static DbConn	   *pool;
static DbConn		listener;
static EdgeJob	   *queue_head, *queue_tail;
static int			queue_len;
static EdgeDbStats	stats;
static DbNotifyFn	notify_fn;
static DbListenUpFn listen_up_fn;

static void conn_start(DbConn *c);
static void conn_io(EvIo *w, uint32_t events);
static void pool_dispatch(void);

void
db_listen_handlers(DbNotifyFn on_notify, DbListenUpFn on_up)
{
	notify_fn = on_notify;
	listen_up_fn = on_up;
}

static void
job_free(EdgeJob *j)
{
	if (j->token)
	{
		explicit_bzero(j->token, strlen(j->token));
		free(j->token);
	}
	for (int i = 0; i < j->nparams; i++)
		free(j->params[i]);
	free(j);
}

/* Finish a job: run its callback (unless cancelled) and free it. */
static void
job_finish(EdgeJob *j, EdgeDbResult *r)
{
	if (!r->ok)
		stats.errors++;
	if (!j->cancelled && j->done)
		j->done(j->arg, r);
	job_free(j);
}

static void
job_fail(EdgeJob *j, const char *sqlstate, const char *message)
{
	EdgeDbResult r = {.ok = false, .message = message};

	snprintf(r.sqlstate, sizeof(r.sqlstate), "%s", sqlstate);
	job_finish(j, &r);
}

/*
 * Queue a job.  params are copied (a NULL entry is SQL NULL); auth NULL or
 * without a token runs the statement with the edge role's own rights.
 * Returns NULL when the queue is full (the caller answers 503).
 */
EdgeJob *
db_submit(EdgeStmt stmt, const EdgeAuth *auth, int nparams, const char *const *params,
		  EdgeDbDone done, void *arg)
{
	return db_submit_ex(stmt, auth, nparams, params, done, arg, false);
}

/*
 * The same; urgent jobs go to the front of the queue.  Feed reads are
 * urgent: they carry events that are already committed to every stream,
 * and waiting behind a burst of writes would only add latency.
 */
EdgeJob *
db_submit_ex(EdgeStmt stmt, const EdgeAuth *auth, int nparams, const char *const *params,
			 EdgeDbDone done, void *arg, bool urgent)
{
	EdgeJob *j;

	if (queue_len >= edge_cfg.queue_max || nparams > DB_MAX_PARAMS)
	{
		stats.rejected++;
		return NULL;
	}
	j = calloc(1, sizeof(*j));
	if (j == NULL)
		return NULL;
	j->stmt = stmt;
	j->nparams = nparams;
	j->done = done;
	j->arg = arg;
	j->deadline_ms = ev_now_ms() + (uint64_t) edge_cfg.queue_timeout_s * 1000;
	if (auth && auth->token && (j->token = strdup(auth->token)) == NULL)
		goto oom;
	for (int i = 0; i < nparams; i++)
		if (params[i] && (j->params[i] = strdup(params[i])) == NULL)
			goto oom;
	if (urgent)
	{
		j->next = queue_head;
		queue_head = j;
		if (queue_tail == NULL)
			queue_tail = j;
	}
	else
	{
		if (queue_tail)
			queue_tail->next = j;
		else
			queue_head = j;
		queue_tail = j;
	}
	queue_len++;
	stats.jobs++;
	pool_dispatch();
	return j;
oom:
	job_free(j);
	return NULL;
}

/* The callback will not run; a job already sent still completes. */
void
db_cancel(EdgeJob *job)
{
	if (job)
		job->cancelled = true;
}

int
db_rows(EdgeDbResult *r)
{
	return r->res ? PQntuples(r->res) : 0;
}

const char *
db_value(EdgeDbResult *r, int row, int col)
{
	return PQgetvalue(r->res, row, col);
}

bool
db_isnull(EdgeDbResult *r, int row, int col)
{
	return PQgetisnull(r->res, row, col);
}

/* ------------------------------------------------------------------------
 * Connections
 * ------------------------------------------------------------------------ */

static void
conn_retry_fn(EvTimer *t)
{
	conn_start(t->data);
}

static void
conn_clear_results(DbConn *c)
{
	PQclear(c->api_res);
	PQclear(c->err_res);
	c->api_res = c->err_res = NULL;
}

/* Drop a connection: fail its job, schedule a reconnect. */
static void
conn_lost(DbConn *c, const char *why)
{
	uint64_t delay_ms;

	if (c->state >= DB_IDLE || c->job)
		log_warning("database connection %s lost: %s", c->listener ? "(LISTEN)" : "(pool)", why);
	ev_io_stop(&c->watch);
	pq_conn_close(&c->pq);
	c->state = DB_DOWN;
	conn_clear_results(c);
	if (c->job)
	{
		EdgeJob *j = c->job;

		c->job = NULL;
		job_fail(j, "08006", "the database connection was lost");
	}
	if (c->listener)
		stats.listen_up = false;
	delay_ms = pq_backoff_next(&c->pq.backoff);
	if (!edge_draining || !c->listener)
		ev_timer_arm(&c->retry, delay_ms, conn_retry_fn, c);
}

/* Watch the socket for what pq asks (after a flush or a connect step). */
static int
conn_watch(DbConn *c)
{
	if (c->pq.fd < 0)
		return -EBADF;
	return ev_io_start(&c->watch, c->pq.fd, c->pq.events, conn_io, c);
}

/* Flush what was queued and watch for the answer. */
static void
conn_flush(DbConn *c)
{
	if (!pq_conn_flush(&c->pq))
		conn_lost(c, pq_conn_error(&c->pq));
	else
		conn_watch(c);
}

static void
conn_start(DbConn *c)
{
	const PqConnParams params = {
		.conninfo = edge_cfg.conninfo,
		.program = "nadi-edge",
		.options = DB_OPTIONS,
		.connect_timeout_s = 10,
	};

	if (pq_conn_start(&c->pq, &params) != PQ_STEP_WAIT)
	{
		conn_lost(c, pq_conn_error(&c->pq));
		return;
	}
	c->state = DB_CONNECTING;
	if (conn_watch(c) < 0)
		conn_lost(c, "no socket");
}

/* Send the prepares of every statement in one pipeline. */
static void
conn_prepare(DbConn *c)
{
	PGconn *pg = c->pq.pg;
	char	name[16];

	if (PQenterPipelineMode(pg) != 1)
		goto fail;
	if (!PQsendPrepare(pg, "auth", AUTH_SQL, 1, NULL))
		goto fail;
	for (int i = 0; i < STMT__COUNT; i++)
	{
		snprintf(name, sizeof(name), "s%d", i);
		if (!PQsendPrepare(pg, name, stmt_sql[i], 0, NULL))
			goto fail;
	}
	if (!PQpipelineSync(pg))
		goto fail;
	c->state = DB_PREPARING;
	c->nres = 0;
	c->api_index = -1;
	c->nulls = 0;
	conn_flush(c);
	return;
fail:
	conn_lost(c, pq_conn_error(&c->pq));
}

static void
conn_listen(DbConn *c)
{
	if (!PQsendQuery(c->pq.pg, "LISTEN nadi_events"))
	{
		conn_lost(c, pq_conn_error(&c->pq));
		return;
	}
	c->state = DB_PREPARING;
	conn_flush(c);
}

static void
conn_connect_step(DbConn *c)
{
	PqStep st = pq_conn_step(&c->pq);

	/* libpq may have closed the socket and opened another (next host): re-add */
	ev_io_stop(&c->watch);
	switch (st)
	{
		case PQ_STEP_WAIT:
			conn_watch(c);
			break;
		case PQ_STEP_UP:
			if (c->listener)
				conn_listen(c);
			else
				conn_prepare(c);
			break;
		case PQ_STEP_FAILED:
			conn_lost(c, pq_conn_error(&c->pq));
			break;
	}
}

/* Send a job's pipeline on an idle connection. */
static bool
conn_send(DbConn *c, EdgeJob *j)
{
	PGconn	   *pg = c->pq.pg;
	char		name[16];
	const char *tok[1] = {j->token};

	snprintf(name, sizeof(name), "s%d", (int) j->stmt);
	if (j->token && !PQsendQueryPrepared(pg, "auth", 1, tok, NULL, NULL, 0))
		return false;
	if (!PQsendQueryPrepared(pg, name, j->nparams, (const char *const *) j->params, NULL, NULL, 0))
		return false;
	if (!PQpipelineSync(pg))
		return false;
	c->job = j;
	j->running = true;
	c->state = DB_BUSY;
	c->nres = 0;
	c->api_index = j->token ? 1 : 0;
	c->nulls = 0;
	conn_flush(c);
	return true;
}

static void
pool_dispatch(void)
{
	for (int i = 0; i < edge_cfg.pool_size && queue_head; i++)
	{
		DbConn	*c = &pool[i];
		EdgeJob *j;

		if (c->state != DB_IDLE)
			continue;
		j = queue_head;
		queue_head = j->next;
		if (queue_head == NULL)
			queue_tail = NULL;
		queue_len--;
		j->next = NULL;
		if (j->cancelled)
		{
			job_free(j);
			i--;
			continue;
		}
		if (!conn_send(c, j))
		{
			/* nothing ran: the job goes back to the front */
			c->job = NULL;
			j->running = false;
			j->next = queue_head;
			queue_head = j;
			if (queue_tail == NULL)
				queue_tail = j;
			queue_len++;
			conn_lost(c, pq_conn_error(&c->pq));
		}
	}
}

/* One result of the running pipeline (NULL: end of one query's results). */
static void
conn_result(DbConn *c, PGresult *r)
{
	ExecStatusType st = PQresultStatus(r);

	if (st == PGRES_PIPELINE_SYNC)
	{
		PQclear(r);
		if (c->state == DB_PREPARING)
		{
			if (c->err_res)
			{
				char line[PQ_ERROR_MAX];

				conn_lost(c, pq_error_line(c->pq.pg, c->err_res, line, sizeof(line)));
				return;
			}
			c->state = DB_IDLE;
			c->pq.events = EPOLLIN;
			conn_watch(c);
			return;
		}
		if (c->job)
		{
			EdgeJob		*j = c->job;
			EdgeDbResult res = {0};

			c->job = NULL;
			c->state = DB_IDLE;
			c->pq.events = EPOLLIN;
			conn_watch(c);
			if (c->err_res)
			{
				pq_result_sqlstate(c->err_res, res.sqlstate, "XX000");
				res.message = PQresultErrorField(c->err_res, PG_DIAG_MESSAGE_PRIMARY);
				res.detail = PQresultErrorField(c->err_res, PG_DIAG_MESSAGE_DETAIL);
				res.hint = PQresultErrorField(c->err_res, PG_DIAG_MESSAGE_HINT);
			}
			else
			{
				res.ok = true;
				res.res = c->api_res;
			}
			job_finish(j, &res);
			conn_clear_results(c);
		}
		return;
	}
	/* each query yields exactly one result: its position says whose it is */
	if (st == PGRES_FATAL_ERROR || st == PGRES_NONFATAL_ERROR)
	{
		if (c->err_res == NULL)
			c->err_res = r;
		else
			PQclear(r);
	}
	else if (st == PGRES_TUPLES_OK && c->state == DB_BUSY && c->nres == c->api_index)
		c->api_res = r;
	else
		PQclear(r);
	c->nres++;
}

static void
listener_io(DbConn *c)
{
	PGresult *r;
	PGnotify *n;
	char	  line[PQ_ERROR_MAX];

	while (!PQisBusy(c->pq.pg) && (r = PQgetResult(c->pq.pg)) != NULL)
	{
		if (PQresultStatus(r) != PGRES_COMMAND_OK)
		{
			log_error("LISTEN failed: %s", pq_error_line(c->pq.pg, r, line, sizeof(line)));
			PQclear(r);
			conn_lost(c, "LISTEN failed");
			return;
		}
		PQclear(r);
		if (c->state == DB_PREPARING)
		{
			c->state = DB_IDLE;
			stats.listen_up = true;
			log_info("listening on nadi_events");
			if (listen_up_fn)
				listen_up_fn();
		}
	}
	while ((n = PQnotifies(c->pq.pg)) != NULL)
	{
		stats.notifications++;
		if (notify_fn && n->extra)
			notify_fn(n->extra);
		PQfreemem(n);
	}
}

static void
conn_io(EvIo *w, uint32_t events)
{
	DbConn	 *c = w->data;
	PGresult *r;

	if (c->state == DB_CONNECTING)
	{
		conn_connect_step(c);
		return;
	}
	/* flushes on EPOLLOUT, reads on EPOLLIN */
	if (!pq_conn_io(&c->pq, events))
	{
		conn_lost(c, pq_conn_error(&c->pq));
		return;
	}
	if (events & EPOLLOUT)
		conn_watch(c);
	if (!(events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
		return;
	if (c->listener)
	{
		listener_io(c);
		return;
	}
	if (c->state == DB_IDLE)
	{
		/* nothing is expected on an idle connection but a goodbye */
		if (pq_conn_broken(&c->pq))
			conn_lost(c, pq_conn_error(&c->pq));
		return;
	}
	while (c->pq.pg && (c->state == DB_BUSY || c->state == DB_PREPARING) && !PQisBusy(c->pq.pg))
	{
		r = PQgetResult(c->pq.pg);
		if (r == NULL)
		{
			/* ends one query's results; two in a row: nothing more yet */
			if (++c->nulls > 1)
				break;
			continue;
		}
		c->nulls = 0;
		conn_result(c, r);
	}
	if (c->pq.pg && pq_conn_broken(&c->pq))
		conn_lost(c, pq_conn_error(&c->pq));
	pool_dispatch();
}

/* ------------------------------------------------------------------------
 * Pool
 * ------------------------------------------------------------------------ */

int
db_init(void)
{
	pool = calloc((size_t) edge_cfg.pool_size, sizeof(DbConn));
	if (pool == NULL)
		return -ENOMEM;
	for (int i = 0; i < edge_cfg.pool_size; i++)
	{
		pq_conn_init(&pool[i].pq);
		conn_start(&pool[i]);
	}
	pq_conn_init(&listener.pq);
	listener.listener = true;
	conn_start(&listener);
	return 0;
}

/* Once a second: fail jobs that waited too long for a connection. */
void
db_tick(void)
{
	uint64_t now = ev_now_ms();

	while (queue_head && (queue_head->deadline_ms <= now || queue_head->cancelled))
	{
		EdgeJob *j = queue_head;

		queue_head = j->next;
		if (queue_head == NULL)
			queue_tail = NULL;
		queue_len--;
		if (j->cancelled)
			job_free(j);
		else
			job_fail(j, "08006", "no database connection became free in time");
	}
}

void
db_stats(EdgeDbStats *s)
{
	*s = stats;
	s->pool_size = edge_cfg.pool_size;
	s->pool_up = 0;
	s->pool_busy = 0;
	for (int i = 0; i < edge_cfg.pool_size; i++)
	{
		s->pool_up += pool[i].state >= DB_IDLE;
		s->pool_busy += pool[i].state == DB_BUSY;
	}
	s->queued = queue_len;
}

void
db_shutdown(void)
{
	while (queue_head)
	{
		EdgeJob *j = queue_head;

		queue_head = j->next;
		job_fail(j, "57P01", "the edge is shutting down");
	}
	queue_tail = NULL;
	queue_len = 0;
	for (int i = 0; pool && i < edge_cfg.pool_size; i++)
	{
		DbConn *c = &pool[i];

		ev_timer_cancel(&c->retry);
		ev_io_stop(&c->watch);
		if (c->job)
		{
			c->job->cancelled = true;
			job_free(c->job);
			c->job = NULL;
		}
		conn_clear_results(c);
		pq_conn_close(&c->pq);
	}
	ev_timer_cancel(&listener.retry);
	ev_io_stop(&listener.watch);
	pq_conn_close(&listener.pq);
	free(pool);
	pool = NULL;
}
