/*
 * store_pq.c — the cell store over libpq (see store_pq.h): one blocking
 * connection, statements prepared once per connection and text, groups in
 * one transaction with a savepoint each.
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
 * One statement of the cell, wrapped, its rows into *rows.  unknown_if_lost:
 * a break while it runs leaves its outcome unknown (it commits alone).
 */
static Outcome
statement(StorePq *s, const char *sql, int nargs, const char *const *args, bool unknown_if_lost,
		  json_t **rows, char sqlstate[6], char *message, size_t msglen)
{
	char	  name[16];
	PGresult *res = NULL;
	Outcome	  o;
	int		  ok;

	*rows = NULL;
	s->stats.statements++;
	o = prepared_name(s, sql, nargs, name, &res);
	if (o == OUT_OK)
	{
		if (name[0])
			ok = PQsendQueryPrepared(s->pg, name, nargs, args, NULL, NULL, 0);
		else
		{
			Oid	  types[nargs + 1];
			char *wrapped = NULL;

			for (int i = 0; i < nargs; i++)
				types[i] = TEXTOID;
			ok = asprintf(&wrapped,
						  "SELECT coalesce(json_agg(row_to_json(q)), '[]')::text FROM (%s) q",
						  sql) >= 0 &&
				 PQsendQueryParams(s->pg, wrapped, nargs, types, args, NULL, NULL, 0);
			free(wrapped);
		}
		if (!ok)
		{
			lost(s, "send");
			o = OUT_LOST;
		}
		else
			o = collect(s, unknown_if_lost, &res, "statement");
	}
	switch (o)
	{
		case OUT_OK:
		{
			json_error_t jerr;

			if (PQntuples(res) == 1 && !PQgetisnull(res, 0, 0))
				*rows = json_loads(PQgetvalue(res, 0, 0), 0, &jerr);
			if (!*rows)
				*rows = json_array();
			sqlstate[0] = '\0';
			break;
		}
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

static void
pq_exec_groups(void *ctx, StoreGroup *groups, int ngroups)
{
	StorePq *s = ctx;
	char	 sqlstate[6], message[512];
	Outcome	 o;

	if (ngroups == 0)
		return;
	for (int g = 0; g < ngroups; g++)
	{
		groups[g].sqlstate[0] = '\0';
		groups[g].message[0] = '\0';
		json_decref(groups[g].results);
		groups[g].results = json_array();
	}
	if (!ensure(s, sqlstate, message, sizeof(message)))
	{
		fail_all(groups, ngroups, sqlstate, message);
		return;
	}
	s->stats.batches++;
	if (command(s, "BEGIN", false, sqlstate, message, sizeof(message)) != OUT_OK)
	{
		fail_all(groups, ngroups, sqlstate, message);
		return;
	}
	for (int g = 0; g < ngroups; g++)
	{
		StoreGroup *grp = &groups[g];
		size_t		i;
		json_t	   *stmt;

		if (command(s, "SAVEPOINT g", false, sqlstate, message, sizeof(message)) != OUT_OK)
			goto broken;
		json_array_foreach(grp->stmts, i, stmt)
		{
			json_t	   *jargs = json_array_get(stmt, 1);
			int			nargs = (int) json_array_size(jargs);
			const char *args[nargs + 1];
			json_t	   *rows;

			for (int a = 0; a < nargs; a++)
				args[a] = json_string_value(json_array_get(jargs, a)); /* NULL: SQL NULL */
			o = statement(s, json_string_value(json_array_get(stmt, 0)), nargs, args, false, &rows,
						  grp->sqlstate, grp->message, sizeof(grp->message));
			if (o == OUT_LOST || o == OUT_UNKNOWN)
			{
				setf(sqlstate, sizeof(sqlstate), "%s", grp->sqlstate);
				setf(message, sizeof(message), "%s", grp->message);
				goto broken;
			}
			if (o == OUT_FAILED)
				break;
			json_array_append_new(grp->results, rows);
		}
		if (grp->sqlstate[0])
		{
			if (command(s, "ROLLBACK TO SAVEPOINT g", false, sqlstate, message, sizeof(message)) !=
				OUT_OK)
				goto broken;
		}
		if (command(s, "RELEASE SAVEPOINT g", false, sqlstate, message, sizeof(message)) != OUT_OK)
			goto broken;
	}
	/* the one exchange whose outcome a lost connection leaves unknown */
	if (command(s, "COMMIT", true, sqlstate, message, sizeof(message)) == OUT_OK)
		return;
	fail_all(groups, ngroups, sqlstate, message);
	log_warning("postgres: a batch of %d groups failed at commit: %s (SQLSTATE %s)", ngroups,
				message, sqlstate);
	return;

broken:
	/* the transaction is gone with the connection (or cannot go on): nothing committed */
	if (s->pg)
	{
		char ss[6], m[256];

		(void) command(s, "ROLLBACK", false, ss, m, sizeof(m));
	}
	fail_all(groups, ngroups, sqlstate, message);
	log_warning("postgres: a batch of %d groups failed: %s (SQLSTATE %s)", ngroups, message,
				sqlstate);
}

const CellStore *
store_pq_store(StorePq *s)
{
	s->store = (CellStore){s, pq_exec, pq_exec_groups};
	return &s->store;
}
