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
 * Connections are opened with PQconnectStartParams/PQconnectPoll and every
 * socket lives in the event loop: nothing here blocks.  A lost connection
 * fails its job with SQLSTATE 08006 (HTTP 503; nothing is retried, since a
 * write may have committed) and is reopened with exponential backoff.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include <libpq-fe.h>

#include "edge.h"

#define DB_MAX_PARAMS 6
#define DB_BACKOFF_MIN_MS 100
#define DB_BACKOFF_MAX_MS 5000

#define SESSION_JSON \
	"json_build_object('id', s.session_id, 'tenant_id', s.tenant_id, 'state', s.state, " \
	"'metadata', s.metadata, 'labels', s.labels, 'policy', s.policy, 'last_seq', s.last_seq, " \
	"'created_at', s.created_at, 'updated_at', s.updated_at)::text"
#define COMMAND_JSON \
	"json_build_object('id', c.command_id, 'session_id', c.session_id, 'type', c.type, " \
	"'status', c.status, 'payload', c.payload, 'idempotency_key', c.idempotency_key, " \
	"'attempts', c.attempts, 'max_attempts', c.max_attempts, " \
	"'cancel_requested', c.cancel_requested, 'result', c.result, 'error', c.last_error, " \
	"'created_at', c.created_at, 'finished_at', c.finished_at)::text"

/* Every statement takes text parameters and casts them itself. */
static const char *const stmt_sql[STMT__COUNT] = {
	[STMT_PING] = "SELECT 1",
	[STMT_JWKS] = "SELECT nadi.jwks()::text",
	[STMT_SESSION_CREATE] =
	"SELECT " SESSION_JSON ", s.session_id, s.last_seq FROM nadi.session_create($1::text, "
	"coalesce($2::jsonb, '{}'), coalesce($3::jsonb, '{}'), coalesce($4::jsonb, '{}')) s",
	[STMT_SESSION_GET] = "SELECT " SESSION_JSON " FROM nadi.session_get($1::uuid) s",
	[STMT_SESSION_LIST] =
	"SELECT " SESSION_JSON ", s.session_id FROM nadi.session_list($1::nadi.session_state, "
	"$2::uuid, $3::integer, $4::text) s",
	[STMT_SESSION_TERMINATE] =
	"SELECT " SESSION_JSON " FROM nadi.session_terminate($1::uuid, $2::text) s",
	[STMT_COMMAND_ENQUEUE] =
	"SELECT " COMMAND_JSON ", c.command_id, c.created_at <> nadi.now() "
	"FROM nadi.command_enqueue($1::uuid, $2::text, $3::jsonb, $4::text) c",
	[STMT_COMMAND_GET] = "SELECT " COMMAND_JSON " FROM nadi.command_get($1::uuid, $2::bigint) c",
	[STMT_COMMAND_LIST] =
	"SELECT " COMMAND_JSON ", c.command_id FROM nadi.command_list($1::uuid, "
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
};

#define AUTH_SQL "SELECT nadi.authenticate($1::text) IS NOT NULL"

struct EdgeJob
{
	EdgeStmt	stmt;
	char	   *token;
	int			nparams;
	char	   *params[DB_MAX_PARAMS];
	EdgeDbDone	done;
	void	   *arg;
	uint64_t	deadline_ms;
	bool		cancelled;
	bool		running;
	EdgeJob    *next;
};

typedef enum DbState
{
	DB_DOWN = 0, DB_CONNECTING, DB_PREPARING, DB_IDLE, DB_BUSY
} DbState;

typedef struct DbConn
{
	PGconn	   *pg;
	DbState		state;
	bool		listener;
	EvIo	watch;
	EvTimer	retry;
	uint64_t	backoff_ms;
	EdgeJob    *job;
	int			nres;			/* results (other than Sync) seen so far */
	int			api_index;		/* which of them is the API statement's */
	int			nulls;			/* consecutive NULL results */
	PGresult   *api_res;		/* result of the API statement */
	PGresult   *err_res;		/* first error */
} DbConn;

static DbConn *pool;
static DbConn listener;
static EdgeJob *queue_head, *queue_tail;
static int	queue_len;
static EdgeDbStats stats;
static DbNotifyFn notify_fn;
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
	EdgeJob    *j;

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

/* libpq's multi-line messages as one log line */
static const char *
one_line(const char *msg, char *buf, size_t size)
{
	size_t		n = 0;

	for (const char *p = msg ? msg : "unknown error"; *p && n + 1 < size; p++)
	{
		char		ch = (*p == '\n' || *p == '\t' || *p == '\r') ? ' ' : *p;

		if (ch == ' ' && (n == 0 || buf[n - 1] == ' '))
			continue;
		buf[n++] = ch;
	}
	while (n > 0 && buf[n - 1] == ' ')
		n--;
	buf[n] = '\0';
	return buf;
}

static void
notice_processor(void *arg EDGE_UNUSED, const char *message)
{
	char		line[512];

	log_info("database: %s", one_line(message, line, sizeof(line)));
}

/* Drop a connection: fail its job, schedule a reconnect. */
static void
conn_lost(DbConn *c, const char *why)
{
	char		line[512];

	if (c->state >= DB_IDLE || c->job)
		log_warning("database connection %s lost: %s", c->listener ? "(LISTEN)" : "(pool)",
				 one_line(why, line, sizeof(line)));
	ev_io_stop(&c->watch);
	if (c->pg)
		PQfinish(c->pg);
	c->pg = NULL;
	c->state = DB_DOWN;
	conn_clear_results(c);
	if (c->job)
	{
		EdgeJob    *j = c->job;

		c->job = NULL;
		job_fail(j, "08006", "the database connection was lost");
	}
	if (c->listener)
		stats.listen_up = false;
	c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : DB_BACKOFF_MIN_MS;
	if (c->backoff_ms > DB_BACKOFF_MAX_MS)
		c->backoff_ms = DB_BACKOFF_MAX_MS;
	if (!edge_draining || !c->listener)
		ev_timer_arm(&c->retry, c->backoff_ms, conn_retry_fn, c);
}

static int
conn_watch(DbConn *c, uint32_t events)
{
	int			fd = PQsocket(c->pg);

	if (fd < 0)
		return -EBADF;
	return ev_io_start(&c->watch, fd, events, conn_io, c);
}

static void
conn_start(DbConn *c)
{
	const char *keys[] = {"dbname", "application_name", "options", "connect_timeout", NULL};
	const char *vals[] = {edge_cfg.conninfo ? edge_cfg.conninfo : "",
		c->listener ? "nadi-edge listen" : "nadi-edge",
		"-c TimeZone=UTC -c statement_timeout=30s -c idle_in_transaction_session_timeout=30s",
	"10", NULL};

	c->pg = PQconnectStartParams(keys, vals, 1);
	if (c->pg == NULL || PQstatus(c->pg) == CONNECTION_BAD)
	{
		conn_lost(c, c->pg ? PQerrorMessage(c->pg) : "out of memory");
		return;
	}
	PQsetNoticeProcessor(c->pg, notice_processor, NULL);
	c->state = DB_CONNECTING;
	if (conn_watch(c, EPOLLOUT) < 0)
		conn_lost(c, "no socket");
}

/* Send the prepares of every statement in one pipeline. */
static void
conn_prepare(DbConn *c)
{
	char		name[16];

	if (PQsetnonblocking(c->pg, 1) != 0 || PQenterPipelineMode(c->pg) != 1)
	{
		conn_lost(c, PQerrorMessage(c->pg));
		return;
	}
	if (!PQsendPrepare(c->pg, "auth", AUTH_SQL, 1, NULL))
		goto fail;
	for (int i = 0; i < STMT__COUNT; i++)
	{
		snprintf(name, sizeof(name), "s%d", i);
		if (!PQsendPrepare(c->pg, name, stmt_sql[i], 0, NULL))
			goto fail;
	}
	if (!PQpipelineSync(c->pg))
		goto fail;
	c->state = DB_PREPARING;
	c->nres = 0;
	c->api_index = -1;
	c->nulls = 0;
	conn_watch(c, EPOLLIN | (PQflush(c->pg) == 1 ? EPOLLOUT : 0));
	return;
fail:
	conn_lost(c, PQerrorMessage(c->pg));
}

static void
conn_listen(DbConn *c)
{
	if (PQsetnonblocking(c->pg, 1) != 0 || !PQsendQuery(c->pg, "LISTEN nadi_events"))
	{
		conn_lost(c, PQerrorMessage(c->pg));
		return;
	}
	c->state = DB_PREPARING;
	conn_watch(c, EPOLLIN | (PQflush(c->pg) == 1 ? EPOLLOUT : 0));
}

static void
conn_connect_step(DbConn *c)
{
	PostgresPollingStatusType st = PQconnectPoll(c->pg);

	/* libpq may have closed the socket and opened another (next host): re-add */
	ev_io_stop(&c->watch);
	switch (st)
	{
		case PGRES_POLLING_READING:
			conn_watch(c, EPOLLIN);
			break;
		case PGRES_POLLING_WRITING:
			conn_watch(c, EPOLLOUT);
			break;
		case PGRES_POLLING_OK:
			c->backoff_ms = 0;
			if (c->listener)
				conn_listen(c);
			else
				conn_prepare(c);
			break;
		default:
			conn_lost(c, PQerrorMessage(c->pg));
			break;
	}
}

/* Send a job's pipeline on an idle connection. */
static bool
conn_send(DbConn *c, EdgeJob *j)
{
	char		name[16];
	const char *tok[1] = {j->token};

	snprintf(name, sizeof(name), "s%d", (int) j->stmt);
	if (j->token && !PQsendQueryPrepared(c->pg, "auth", 1, tok, NULL, NULL, 0))
		return false;
	if (!PQsendQueryPrepared(c->pg, name, j->nparams, (const char *const *) j->params,
							 NULL, NULL, 0))
		return false;
	if (!PQpipelineSync(c->pg))
		return false;
	c->job = j;
	j->running = true;
	c->state = DB_BUSY;
	c->nres = 0;
	c->api_index = j->token ? 1 : 0;
	c->nulls = 0;
	conn_watch(c, EPOLLIN | (PQflush(c->pg) == 1 ? EPOLLOUT : 0));
	return true;
}

static void
pool_dispatch(void)
{
	for (int i = 0; i < edge_cfg.pool_size && queue_head; i++)
	{
		DbConn	   *c = &pool[i];
		EdgeJob    *j;

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
			conn_lost(c, PQerrorMessage(c->pg));
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
				conn_lost(c, PQresultErrorMessage(c->err_res));
				return;
			}
			c->state = DB_IDLE;
			conn_watch(c, EPOLLIN);
			return;
		}
		if (c->job)
		{
			EdgeJob    *j = c->job;
			EdgeDbResult res = {0};

			c->job = NULL;
			c->state = DB_IDLE;
			conn_watch(c, EPOLLIN);
			if (c->err_res)
			{
				const char *ss = PQresultErrorField(c->err_res, PG_DIAG_SQLSTATE);

				snprintf(res.sqlstate, sizeof(res.sqlstate), "%s", ss ? ss : "XX000");
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
	PGresult   *r;
	PGnotify   *n;

	if (!PQconsumeInput(c->pg))
	{
		conn_lost(c, PQerrorMessage(c->pg));
		return;
	}
	while (!PQisBusy(c->pg) && (r = PQgetResult(c->pg)) != NULL)
	{
		if (PQresultStatus(r) != PGRES_COMMAND_OK)
		{
			log_error("LISTEN failed: %s", PQresultErrorMessage(r));
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
	while ((n = PQnotifies(c->pg)) != NULL)
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
	DbConn	   *c = w->data;
	PGresult   *r;

	if (c->state == DB_CONNECTING)
	{
		conn_connect_step(c);
		return;
	}
	if (events & EPOLLOUT)
	{
		int			f = PQflush(c->pg);

		if (f < 0)
		{
			conn_lost(c, PQerrorMessage(c->pg));
			return;
		}
		if (f == 0)
			conn_watch(c, EPOLLIN);
	}
	if (!(events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
		return;
	if (c->listener)
	{
		listener_io(c);
		return;
	}
	if (!PQconsumeInput(c->pg))
	{
		conn_lost(c, PQerrorMessage(c->pg));
		return;
	}
	if (c->state == DB_IDLE)
	{
		/* nothing is expected on an idle connection but a goodbye */
		if (PQstatus(c->pg) == CONNECTION_BAD)
			conn_lost(c, PQerrorMessage(c->pg));
		return;
	}
	while (c->pg && (c->state == DB_BUSY || c->state == DB_PREPARING) && !PQisBusy(c->pg))
	{
		r = PQgetResult(c->pg);
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
	if (c->pg && PQstatus(c->pg) == CONNECTION_BAD)
		conn_lost(c, PQerrorMessage(c->pg));
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
		conn_start(&pool[i]);
	listener.listener = true;
	conn_start(&listener);
	return 0;
}

/* Once a second: fail jobs that waited too long for a connection. */
void
db_tick(void)
{
	uint64_t	now = ev_now_ms();

	while (queue_head && (queue_head->deadline_ms <= now || queue_head->cancelled))
	{
		EdgeJob    *j = queue_head;

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
		EdgeJob    *j = queue_head;

		queue_head = j->next;
		job_fail(j, "57P01", "the edge is shutting down");
	}
	queue_tail = NULL;
	queue_len = 0;
	for (int i = 0; pool && i < edge_cfg.pool_size; i++)
	{
		DbConn	   *c = &pool[i];

		ev_timer_cancel(&c->retry);
		ev_io_stop(&c->watch);
		if (c->job)
		{
			c->job->cancelled = true;
			job_free(c->job);
			c->job = NULL;
		}
		conn_clear_results(c);
		if (c->pg)
			PQfinish(c->pg);
		c->pg = NULL;
	}
	ev_timer_cancel(&listener.retry);
	ev_io_stop(&listener.watch);
	if (listener.pg)
		PQfinish(listener.pg);
	listener.pg = NULL;
	free(pool);
	pool = NULL;
}
