/*
 * store_pq.c — the cell store over libpq (see store_pq.h): one blocking
 * connection, statements prepared once per connection and text, groups in
 * one transaction with a savepoint each, sent in a pipeline.
 *
 * Failure outcomes, as the cell reads them (a failed group is a lost
 * lease, which is always safe: the next holder finds on record what was
 * written):
 *   a statement fails      its group rolls back to its savepoint alone
 *   the connection breaks  before COMMIT was sent: every group failed
 *                          (08006, nothing committed); while COMMIT (or a
 *                          lone statement) waited for its answer: 08007,
 *                          it may or may not have committed
 *   COMMIT fails           every group failed with its SQLSTATE
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemonlib/log.h"
#include "daemonlib/util.h"
#include "store_pq.h"

#define TEXTOID 25
#define STORE_PQ_PREPARED_MAX 256 /* distinct texts kept prepared; others run unnamed */

typedef struct Prepared
{
	char *sql;
	int	  nargs;
} Prepared;

struct StorePq
{
	CellStore	 store;
	PqConnParams params;
	char		*conninfo, *program, *options;
	uint64_t	 timeout_ms;
	StorePqCheck check;
	void		*check_arg;

	PGconn	 *pg;
	PqBackoff backoff;
	uint64_t  retry_at_ms;
	Prepared  prepared[STORE_PQ_PREPARED_MAX];
	int		  n_prepared;
	char	  error[PQ_ERROR_MAX];

	StorePqStats stats;
};

/* What went wrong with one exchange. */
typedef enum Outcome
{
	OUT_OK,
	OUT_FAILED, /* the statement failed; the connection is fine */
	OUT_LOST,	/* the connection broke before the server could have acted */
	OUT_UNKNOWN /* it broke (or gave no answer) once the server had it */
} Outcome;

/* snprintf, for messages that may be cut short (a long server error into a small field) */
static void _printf_(3, 4) setf(char *dst, size_t size, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(dst, size, fmt, ap);
	va_end(ap);
}

static char *
dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

StorePq *
store_pq_new(const PqConnParams *params, uint64_t timeout_ms, StorePqCheck check, void *check_arg)
{
	StorePq *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->conninfo = dup_or_null(params->conninfo);
	s->program = dup_or_null(params->program);
	s->options = dup_or_null(params->options);
	s->params = (PqConnParams){s->conninfo, s->program, s->options, params->connect_timeout_s};
	s->timeout_ms = timeout_ms;
	s->check = check;
	s->check_arg = check_arg;
	return s;
}

static void
forget_prepared(StorePq *s)
{
	for (int i = 0; i < s->n_prepared; i++)
		free(s->prepared[i].sql);
	s->n_prepared = 0;
}

static void
disconnect(StorePq *s)
{
	if (s->pg)
		PQfinish(s->pg);
	s->pg = NULL;
	forget_prepared(s);
}

void
store_pq_free(StorePq *s)
{
	if (!s)
		return;
	disconnect(s);
	free(s->conninfo);
	free(s->program);
	free(s->options);
	free(s);
}

bool
store_pq_up(const StorePq *s)
{
	return s->pg != NULL;
}

const char *
store_pq_last_error(const StorePq *s)
{
	return s->error;
}

void
store_pq_stats(const StorePq *s, StorePqStats *out)
{
	*out = s->stats;
}

/* The connection broke under a call: drop it, retry after the back-off. */
static void
lost(StorePq *s, const char *what)
{
	char line[PQ_ERROR_MAX];

	pq_error_line(s->pg, NULL, line, sizeof(line));
	setf(s->error, sizeof(s->error), "%s: %s", what, line);
	log_warning("postgres: connection lost (%s)", s->error);
	s->stats.lost++;
	disconnect(s);
	s->retry_at_ms = now_ms() + pq_backoff_next(&s->backoff);
}

int
store_pq_connect(StorePq *s)
{
	char err[PQ_ERROR_MAX];
	int	 r;

	if (s->pg)
		return 0;
	if (now_ms() < s->retry_at_ms)
		return -EAGAIN;
	s->pg = pq_connect_wait(&s->params, err, sizeof(err));
	if (!s->pg)
	{
		setf(s->error, sizeof(s->error), "cannot connect: %s", err);
		log_warning("postgres: %s", s->error);
		s->retry_at_ms = now_ms() + pq_backoff_next(&s->backoff);
		return -EIO;
	}
	if (s->check && (r = s->check(s->pg, s->check_arg, err, sizeof(err))) < 0)
	{
		setf(s->error, sizeof(s->error), "%s", err);
		log_error("postgres: %s", err);
		disconnect(s);
		s->retry_at_ms = now_ms() + pq_backoff_next(&s->backoff);
		return r == -EPERM ? -EPERM : -EIO;
	}
	pq_backoff_reset(&s->backoff);
	s->error[0] = '\0';
	s->stats.connects++;
	log_info("postgres: connected (server %d, backend pid %d)", PQserverVersion(s->pg),
			 PQbackendPID(s->pg));
	return 0;
}

/*
 * Collect the results of what was sent (pq_collect: the first error wins,
 * else the last result).  OUT_LOST, or OUT_UNKNOWN with unknown_if_lost,
 * when the connection broke or no answer came in time; the connection is
 * then gone.
 */
static Outcome
collect(StorePq *s, bool unknown_if_lost, PGresult **res, const char *what)
{
	bool timed_out;

	if (!pq_collect(s->pg, now_ms() + s->timeout_ms, res, &timed_out))
	{
		PQclear(*res);
		*res = NULL;
		if (timed_out)
		{
			setf(s->error, sizeof(s->error), "%s: no answer within %llu ms", what,
				 (unsigned long long) s->timeout_ms);
			log_warning("postgres: %s", s->error);
			s->stats.lost++;
			disconnect(s);
			s->retry_at_ms = now_ms() + pq_backoff_next(&s->backoff);
		}
		else
			lost(s, what);
		return unknown_if_lost ? OUT_UNKNOWN : OUT_LOST;
	}
	if (*res &&
		(PQresultStatus(*res) == PGRES_TUPLES_OK || PQresultStatus(*res) == PGRES_COMMAND_OK))
		return OUT_OK;
	return OUT_FAILED;
}

/* The SQLSTATE and message of a failure (res may be NULL: the connection's). */
static void
failure_of(StorePq *s, PGresult *res, char sqlstate[6], char *message, size_t msglen)
{
	const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;

	pq_result_sqlstate(res, sqlstate, "XX000");
	if (msg)
		pq_one_line(msg, message, msglen);
	else
		pq_error_line(s->pg, res, message, msglen);
}

/* A statement of the store's own (BEGIN, SAVEPOINT ...). */
static Outcome
command(StorePq *s, const char *sql, bool unknown_if_lost, char sqlstate[6], char *message,
		size_t msglen)
{
	PGresult *res;
	Outcome	  o;

	if (!PQsendQuery(s->pg, sql))
	{
		lost(s, sql);
		o = OUT_LOST;
	}
	else
		o = collect(s, unknown_if_lost, &res, sql);
	if (o == OUT_FAILED)
		failure_of(s, res, sqlstate, message, msglen);
	if (o == OUT_OK || o == OUT_FAILED)
		PQclear(res);
	else
	{
		setf(sqlstate, 6, "%s",
			 o == OUT_UNKNOWN ? STORE_PQ_RESOLUTION_UNKNOWN : STORE_PQ_CONNECTION_FAILURE);
		setf(message, msglen, "%s", s->error);
	}
	return o;
}

/* The name a statement is prepared under, preparing it first if need be; NULL: run it unnamed. */
static Outcome
prepared_name(StorePq *s, const char *sql, int nargs, char name[16], PGresult **fail)
{
	Oid		  types[nargs + 1];
	char	 *wrapped;
	PGresult *res;
	Outcome	  o;
	int		  i;

	*fail = NULL;
	for (i = 0; i < s->n_prepared; i++)
		if (s->prepared[i].nargs == nargs && strcmp(s->prepared[i].sql, sql) == 0)
		{
			snprintf(name, 16, "nadi_%d", i);
			return OUT_OK;
		}
	name[0] = '\0';
	if (s->n_prepared == STORE_PQ_PREPARED_MAX)
		return OUT_OK;
	if (asprintf(&wrapped, "SELECT coalesce(json_agg(row_to_json(q)), '[]')::text FROM (%s) q",
				 sql) < 0)
		return OUT_OK;
	for (i = 0; i < nargs; i++)
		types[i] = TEXTOID;
	snprintf(name, 16, "nadi_%d", s->n_prepared);
	if (!PQsendPrepare(s->pg, name, wrapped, nargs, types))
	{
		free(wrapped);
		lost(s, "prepare");
		return OUT_LOST;
	}
	free(wrapped);
	o = collect(s, false, &res, "prepare");
	if (o == OUT_OK)
	{
		PQclear(res);
		s->prepared[s->n_prepared].sql = strdup(sql);
		s->prepared[s->n_prepared].nargs = nargs;
		if (s->prepared[s->n_prepared].sql)
			s->n_prepared++;
		else
			name[0] = '\0'; /* prepared, not kept: the next call prepares it again */
	}
	else if (o == OUT_FAILED)
		*fail = res;
	return o;
}

/*
 * Send one statement of the cell, wrapped: prepared under name, or unnamed
 * when name is "".  false when the connection broke (it is then gone).
 */
static bool
send_statement(StorePq *s, const char *sql, int nargs, const char *const *args, const char *name)
{
	Oid	  types[nargs + 1];
	char *wrapped = NULL;
	bool  ok;

	s->stats.statements++;
	if (name[0])
		ok = PQsendQueryPrepared(s->pg, name, nargs, args, NULL, NULL, 0);
	else
	{
		for (int i = 0; i < nargs; i++)
			types[i] = TEXTOID;
		ok = asprintf(&wrapped, "SELECT coalesce(json_agg(row_to_json(q)), '[]')::text FROM (%s) q",
					  sql) >= 0 &&
			 PQsendQueryParams(s->pg, wrapped, nargs, types, args, NULL, NULL, 0);
		free(wrapped);
	}
	if (!ok)
		lost(s, "send");
	return ok;
}

/*
 * What a statement's outcome o (its result res) gives the cell: its rows
 * (*rows, OUT_OK), or its SQLSTATE and message.
 */
static void
outcome_of(StorePq *s, Outcome o, PGresult *res, json_t **rows, char sqlstate[6], char *message,
		   size_t msglen)
{
	json_error_t jerr;

	*rows = NULL;
	switch (o)
	{
		case OUT_OK:
			if (PQntuples(res) == 1 && !PQgetisnull(res, 0, 0))
				*rows = json_loads(PQgetvalue(res, 0, 0), 0, &jerr);
			if (!*rows)
				*rows = json_array();
			sqlstate[0] = '\0';
			break;
		case OUT_FAILED:
			s->stats.failures++;
			failure_of(s, res, sqlstate, message, msglen);
			/* fencing is an expected outcome, not noise */
			log_at(strcmp(sqlstate, NA_FENCED) == 0 ? LOG_LEVEL_DEBUG : LOG_LEVEL_INFO,
				   "cell statement failed: %s (SQLSTATE %s)", message, sqlstate);
			break;
		case OUT_LOST:
		case OUT_UNKNOWN:
			setf(sqlstate, 6, "%s",
				 o == OUT_UNKNOWN ? STORE_PQ_RESOLUTION_UNKNOWN : STORE_PQ_CONNECTION_FAILURE);
			setf(message, msglen, "%s", s->error);
			break;
	}
}

/*
 * One statement of the cell, alone: its rows into *rows.  unknown_if_lost:
 * a break while it runs leaves its outcome unknown (it commits alone).
 */
static Outcome
statement(StorePq *s, const char *sql, int nargs, const char *const *args, bool unknown_if_lost,
		  json_t **rows, char sqlstate[6], char *message, size_t msglen)
{
	char	  name[16];
	PGresult *res = NULL;
	Outcome	  o;

	o = prepared_name(s, sql, nargs, name, &res);
	if (o == OUT_OK)
		o = send_statement(s, sql, nargs, args, name)
				? collect(s, unknown_if_lost, &res, "statement")
				: OUT_LOST;
	outcome_of(s, o, res, rows, sqlstate, message, msglen);
	PQclear(res);
	return o;
}

/* Not connected (and not connecting now): a failure of the connection's kind. */
static bool
ensure(StorePq *s, char sqlstate[6], char *message, size_t msglen)
{
	if (store_pq_connect(s) == 0)
		return true;
	setf(sqlstate, 6, "%s", STORE_PQ_CONNECTION_FAILURE);
	setf(message, msglen, "no connection to the database (%s)",
		 s->error[0] ? s->error : "waiting to reconnect");
	return false;
}

static void
pq_exec(void *ctx, const char *sql, int nargs, const char *const *args, StoreResult *out)
{
	StorePq *s = ctx;

	memset(out, 0, sizeof(*out));
	if (ensure(s, out->sqlstate, out->message, sizeof(out->message)))
		statement(s, sql, nargs, args, true, &out->rows, out->sqlstate, out->message,
				  sizeof(out->message));
	if (!out->rows)
		out->rows = json_array();
}

/* Every group failed as the first one did (a lost connection, a failed COMMIT). */
static void
fail_all(StoreGroup *groups, int ngroups, const char *sqlstate, const char *message)
{
	for (int g = 0; g < ngroups; g++)
	{
		setf(groups[g].sqlstate, sizeof(groups[g].sqlstate), "%s", sqlstate);
		setf(groups[g].message, sizeof(groups[g].message), "%s", message);
	}
}

/* A statement of the store's own, in the pipeline. */
static bool
send_command(StorePq *s, const char *sql)
{
	if (PQsendQueryParams(s->pg, sql, 0, NULL, NULL, NULL, NULL, 0))
		return true;
	lost(s, sql);
	return false;
}

/*
 * The results of one query of the pipeline: OUT_OK, OUT_FAILED (an error,
 * or skipped after one: PGRES_PIPELINE_ABORTED), OUT_LOST.
 */
static Outcome
pipe_result(StorePq *s, PGresult **res, const char *what)
{
	Outcome o = collect(s, false, res, what);

	if (o == OUT_FAILED && *res && PQresultStatus(*res) == PGRES_PIPELINE_SYNC)
		o = OUT_OK;
	return o;
}

/*
 * One stretch of the pipeline, groups from..n-1 (at most PIPE_CHUNK):
 * SAVEPOINT, statements, RELEASE of each, then a sync, and their results.
 * Returns the index after the last group done: a failed group stops the
 * stretch (the server skips the rest until the sync); its savepoint is
 * then rolled back to and released, and the next stretch starts after it.
 * -1 when the connection broke (sqlstate, message set).
 */
#define PIPE_CHUNK 64

static int
pipe_stretch(StorePq *s, StoreGroup *groups, int from, int n, char names[][16], bool begin,
			 char sqlstate[6], char *message, size_t msglen)
{
	int		  end = from + PIPE_CHUNK < n ? from + PIPE_CHUNK : n, failed = -1, ni = 0;
	PGresult *res = NULL;
	Outcome	  o;

	for (int g = 0; g < from; g++)
		ni += (int) json_array_size(groups[g].stmts);
	if (begin && !send_command(s, "BEGIN"))
		goto broken;
	for (int g = from, k = ni; g < end; g++)
	{
		size_t	i;
		json_t *stmt;

		if (!send_command(s, "SAVEPOINT g"))
			goto broken;
		json_array_foreach(groups[g].stmts, i, stmt)
		{
			json_t	   *jargs = json_array_get(stmt, 1);
			int			nargs = (int) json_array_size(jargs);
			const char *args[nargs + 1];

			for (int a = 0; a < nargs; a++)
				args[a] = json_string_value(json_array_get(jargs, a)); /* NULL: SQL NULL */
			if (!send_statement(s, json_string_value(json_array_get(stmt, 0)), nargs, args,
								names[k++]))
				goto broken;
		}
		if (!send_command(s, "RELEASE SAVEPOINT g"))
			goto broken;
	}
	if (!PQpipelineSync(s->pg))
	{
		lost(s, "sync");
		goto broken;
	}

	if (begin && (o = pipe_result(s, &res, "BEGIN")) != OUT_OK)
		goto result_broken;
	PQclear(res);
	res = NULL;
	for (int g = from; g < end; g++)
	{
		StoreGroup *grp = &groups[g];
		size_t		i;
		json_t	   *stmt;

		/* SAVEPOINT, the statements, RELEASE: after a failure, each is skipped */
		for (i = 0; i < json_array_size(grp->stmts) + 2; i++)
		{
			json_t *rows;

			o = pipe_result(s, &res, "batch");
			if (o == OUT_LOST)
				goto result_broken;
			stmt = i > 0 && i <= json_array_size(grp->stmts) ? json_array_get(grp->stmts, i - 1)
															 : NULL;
			if (failed < 0 && o == OUT_FAILED)
			{
				failed = g;
				outcome_of(s, o, res, &rows, grp->sqlstate, grp->message, sizeof(grp->message));
				if (!stmt) /* SAVEPOINT or RELEASE itself: nothing can go on */
				{
					setf(sqlstate, 6, "%s", grp->sqlstate);
					setf(message, msglen, "%s", grp->message);
					PQclear(res);
					return -2;
				}
			}
			else if (failed < 0 && stmt)
			{
				outcome_of(s, o, res, &rows, grp->sqlstate, grp->message, sizeof(grp->message));
				json_array_append_new(grp->results, rows);
			}
			PQclear(res);
			res = NULL;
		}
	}
	if ((o = pipe_result(s, &res, "sync")) != OUT_OK)
		goto result_broken;
	PQclear(res);
	if (failed < 0)
		return end;
	/* the failed group rolls back alone; the groups after it go on */
	if (!send_command(s, "ROLLBACK TO SAVEPOINT g") || !send_command(s, "RELEASE SAVEPOINT g") ||
		!PQpipelineSync(s->pg))
		goto broken;
	for (int q = 0; q < 3; q++)
	{
		res = NULL;
		o = pipe_result(s, &res, "rollback to savepoint");
		if (o != OUT_OK)
			goto result_broken;
		PQclear(res);
	}
	return failed + 1;

result_broken:
	if (o != OUT_LOST)
		failure_of(s, res, sqlstate, message, msglen);
	PQclear(res);
	if (o != OUT_LOST)
		return -2;
broken:
	setf(sqlstate, 6, "%s", STORE_PQ_CONNECTION_FAILURE);
	setf(message, msglen, "%s", s->error);
	return -1;
}

/*
 * The groups in one transaction, a savepoint each, pipelined: every
 * statement is prepared first (once per connection: outside the
 * transaction), then the groups are sent in stretches with one round trip
 * each (and one more per failed group), then COMMIT.
 */
static void
pq_exec_groups(void *ctx, StoreGroup *groups, int ngroups)
{
	StorePq *s = ctx;
	char	 sqlstate[6], message[512];
	int		 nstmts = 0, k = 0, g;
	char(*names)[16];

	if (ngroups == 0)
		return;
	for (g = 0; g < ngroups; g++)
	{
		groups[g].sqlstate[0] = '\0';
		groups[g].message[0] = '\0';
		json_decref(groups[g].results);
		groups[g].results = json_array();
		nstmts += (int) json_array_size(groups[g].stmts);
	}
	if (!ensure(s, sqlstate, message, sizeof(message)))
	{
		fail_all(groups, ngroups, sqlstate, message);
		return;
	}
	s->stats.batches++;
	names = calloc(nstmts + 1, sizeof(*names));
	if (!names)
	{
		fail_all(groups, ngroups, "53200", "out of memory");
		return;
	}
	for (g = 0; g < ngroups; g++)
	{
		size_t	i;
		json_t *stmt;

		json_array_foreach(groups[g].stmts, i, stmt)
		{
			PGresult *fail = NULL;
			Outcome	  o =
				prepared_name(s, json_string_value(json_array_get(stmt, 0)),
							  (int) json_array_size(json_array_get(stmt, 1)), names[k++], &fail);

			if (o == OUT_LOST)
			{
				free(names);
				fail_all(groups, ngroups, STORE_PQ_CONNECTION_FAILURE, s->error);
				return;
			}
			if (o == OUT_FAILED)
			{
				/* it cannot even be prepared: run unnamed, to fail in its group */
				PQclear(fail);
				names[k - 1][0] = '\0';
			}
		}
	}
	if (PQenterPipelineMode(s->pg) != 1)
	{
		free(names);
		fail_all(groups, ngroups, "XX000", "cannot enter pipeline mode");
		return;
	}
	for (g = 0; g >= 0 && g < ngroups;)
		g = pipe_stretch(s, groups, g, ngroups, names, g == 0, sqlstate, message, sizeof(message));
	free(names);
	if (g < 0)
	{
		/* the transaction is gone with the connection, or cannot go on: nothing committed */
		if (s->pg)
			disconnect(s); /* a pipeline in an unknown state is not worth saving */
		fail_all(groups, ngroups, sqlstate, message);
		log_warning("postgres: a batch of %d groups failed: %s (SQLSTATE %s)", ngroups, message,
					sqlstate);
		return;
	}
	if (PQexitPipelineMode(s->pg) != 1)
	{
		lost(s, "pipeline");
		fail_all(groups, ngroups, STORE_PQ_CONNECTION_FAILURE, s->error);
		return;
	}
	/* the one exchange whose outcome a lost connection leaves unknown */
	if (command(s, "COMMIT", true, sqlstate, message, sizeof(message)) == OUT_OK)
		return;
	fail_all(groups, ngroups, sqlstate, message);
	log_warning("postgres: a batch of %d groups failed at commit: %s (SQLSTATE %s)", ngroups,
				message, sqlstate);
}

const CellStore *
store_pq_store(StorePq *s)
{
	s->store = (CellStore){s, pq_exec, pq_exec_groups};
	return &s->store;
}
