/*
 * pq.c — see pq.h.
 *
 * Nothing here keeps state beyond the PqConn it is given, so the pieces
 * serve an event loop (the edge's pool, sandboxd's registration) and the
 * threads of a blocking pool (the credentials proxy) alike.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "log.h"
#include "nadi_version.h"
#include "pq.h"
#include "util.h"

/* The keywords and values handed to libpq, built from PqConnParams. */
typedef struct PqKeys
{
	const char		**keys;
	const char		**vals;
	int				  n;
	PQconninfoOption *parsed;
	char			 *options;
	char			  appname[64]; /* NAMEDATALEN */
	char			  timeout[16];
} PqKeys;

/* ------------------------------------------------------------------------
 * Back-off
 * ------------------------------------------------------------------------ */

/*
 * The next delay: the step doubles from PQ_BACKOFF_MIN_MS up to
 * PQ_BACKOFF_MAX_MS, and the delay is drawn from its upper half, so that
 * daemons that lost the same server do not come back in step.
 */
uint64_t
pq_backoff_next(PqBackoff *b)
{
	uint64_t half;

	b->cur_ms = b->cur_ms ? b->cur_ms * 2 : PQ_BACKOFF_MIN_MS;
	if (b->cur_ms > PQ_BACKOFF_MAX_MS)
		b->cur_ms = PQ_BACKOFF_MAX_MS;
	half = b->cur_ms / 2;
	return b->cur_ms - half + arc4random_uniform((uint32_t) half + 1);
}

void
pq_backoff_reset(PqBackoff *b)
{
	b->cur_ms = 0;
}

/* ------------------------------------------------------------------------
 * Errors
 * ------------------------------------------------------------------------ */

/*
 * msg as one line: line breaks and tabs become spaces, runs of spaces one,
 * other control characters '?' (messages quote what clients sent).
 */
const char *
pq_one_line(const char *msg, char *buf, size_t size)
{
	size_t n = 0;

	if (size == 0)
		return buf;
	for (const char *p = msg ? msg : ""; *p && n + 1 < size; p++)
	{
		unsigned char ch = (unsigned char) *p;

		if (ch == '\n' || ch == '\t' || ch == '\r')
			ch = ' ';
		else if (ch < 0x20 || ch == 0x7f)
			ch = '?';
		if (ch == ' ' && (n == 0 || buf[n - 1] == ' '))
			continue;
		buf[n++] = (char) ch;
	}
	while (n > 0 && buf[n - 1] == ' ')
		n--;
	buf[n] = '\0';
	if (n == 0)
		snprintf(buf, size, "unknown error");
	return buf;
}

const char *
pq_error_line(PGconn *pg, const PGresult *res, char *buf, size_t size)
{
	const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
	const char *ss = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	char		line[PQ_ERROR_MAX];

	if (msg)
	{
		pq_one_line(msg, line, sizeof(line));
		if (ss)
			snprintf(buf, size, "%s (SQLSTATE %s)", line, ss);
		else
			snprintf(buf, size, "%s", line);
		return buf;
	}
	if (res && *PQresultErrorMessage(res))
		return pq_one_line(PQresultErrorMessage(res), buf, size);
	return pq_one_line(pg ? PQerrorMessage(pg) : "no connection", buf, size);
}

char *
pq_result_sqlstate(const PGresult *res, char sqlstate[6], const char *fallback)
{
	const char *ss = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

	snprintf(sqlstate, 6, "%s", ss && strlen(ss) == 5 ? ss : fallback);
	return sqlstate;
}

/* Notices and warnings of the server: one log line each, at their level. */
static void
pq_notice(void *arg, const PGresult *res)
{
	const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
	int			level = LOG_LEVEL_INFO;
	char		line[PQ_ERROR_MAX];

	if (sev && strcmp(sev, "WARNING") == 0)
		level = LOG_LEVEL_WARNING;
	else if (sev && strcmp(sev, "NOTICE") == 0)
		level = LOG_LEVEL_NOTICE;
	else if (sev && strcmp(sev, "DEBUG") == 0)
		level = LOG_LEVEL_DEBUG;
	log_at(level, "postgres: %s", pq_one_line(PQresultErrorMessage(res), line, sizeof(line)));
}

/* ------------------------------------------------------------------------
 * Connection parameters
 * ------------------------------------------------------------------------ */

/* What libpq itself takes for a connection string rather than a database name. */
static bool
pq_is_conninfo(const char *s)
{
	return strchr(s, '=') != NULL || strncmp(s, "postgresql://", 13) == 0 ||
		   strncmp(s, "postgres://", 11) == 0;
}

static void
pq_keys_free(PqKeys *k)
{
	free(k->keys);
	free(k->vals);
	free(k->options);
	if (k->parsed)
		PQconninfoFree(k->parsed);
	memset(k, 0, sizeof(*k));
}

static void
pq_keys_add(PqKeys *k, const char *key, const char *val)
{
	k->keys[k->n] = key;
	k->vals[k->n] = val;
	k->n++;
}

/*
 * The daemon's defaults first, then every setting of the conninfo, which
 * libpq lets win; the daemon's options and the conninfo's go together, the
 * daemon's last, so that its "-c" limits (the edge's statement and idle
 * timeouts, its time zone) hold whatever the conninfo's options say.
 */
static int
pq_keys_build(const PqConnParams *p, PqKeys *k, char *err, size_t errsize)
{
	const char *conninfo = p->conninfo ? p->conninfo : "";
	const char *their_options = NULL;
	char	   *perr = NULL;
	size_t		cap = 6;

	memset(k, 0, sizeof(*k));
	if (pq_is_conninfo(conninfo))
	{
		k->parsed = PQconninfoParse(conninfo, &perr);
		if (k->parsed == NULL)
		{
			pq_one_line(perr ? perr : "out of memory", err, errsize);
			PQfreemem(perr);
			return -EINVAL;
		}
		for (PQconninfoOption *o = k->parsed; o->keyword; o++)
		{
			cap++;
			if (strcmp(o->keyword, "options") == 0 && o->val && *o->val)
				their_options = o->val;
		}
	}
	k->keys = calloc(cap, sizeof(*k->keys));
	k->vals = calloc(cap, sizeof(*k->vals));
	if (p->options && *p->options && their_options)
	{
		size_t len = strlen(p->options) + strlen(their_options) + 2;

		if ((k->options = malloc(len)) != NULL)
			snprintf(k->options, len, "%s %s", their_options, p->options);
	}
	else if ((p->options && *p->options) || their_options)
		k->options = strdup(their_options ? their_options : p->options);
	if (k->keys == NULL || k->vals == NULL ||
		(k->options == NULL && ((p->options && *p->options) || their_options)))
	{
		pq_keys_free(k);
		snprintf(err, errsize, "out of memory");
		return -ENOMEM;
	}

	snprintf(k->appname, sizeof(k->appname), "%s/%s", p->program, NADI_VERSION);
	pq_keys_add(k, "application_name", k->appname);
	if (p->connect_timeout_s > 0)
	{
		snprintf(k->timeout, sizeof(k->timeout), "%d", p->connect_timeout_s);
		pq_keys_add(k, "connect_timeout", k->timeout);
	}
	if (k->options)
		pq_keys_add(k, "options", k->options);
	if (k->parsed == NULL && *conninfo)
		pq_keys_add(k, "dbname", conninfo);
	for (PQconninfoOption *o = k->parsed; o && o->keyword; o++)
		if (o->val && *o->val && strcmp(o->keyword, "options") != 0)
			pq_keys_add(k, o->keyword, o->val);
	pq_keys_add(k, NULL, NULL);
	return 0;
}

/* ------------------------------------------------------------------------
 * Non-blocking connections
 * ------------------------------------------------------------------------ */

void
pq_conn_init(PqConn *c)
{
	memset(c, 0, sizeof(*c));
	c->fd = -1;
}

const char *
pq_conn_error(PqConn *c)
{
	if (c->pg && *PQerrorMessage(c->pg))
		pq_one_line(PQerrorMessage(c->pg), c->error, sizeof(c->error));
	else if (!c->error[0])
		snprintf(c->error, sizeof(c->error), "the connection was lost");
	return c->error;
}

bool
pq_conn_broken(const PqConn *c)
{
	return c->pg == NULL || PQstatus(c->pg) == CONNECTION_BAD;
}

void
pq_conn_close(PqConn *c)
{
	if (c->pg)
		PQfinish(c->pg);
	c->pg = NULL;
	c->status = PQ_DOWN;
	c->fd = -1;
	c->events = 0;
}

/* The socket libpq uses now (it may have changed). */
static PqStep
pq_conn_wait(PqConn *c, uint32_t events)
{
	c->fd = PQsocket(c->pg);
	c->events = events;
	if (c->fd < 0)
	{
		snprintf(c->error, sizeof(c->error), "the connection has no socket");
		return PQ_STEP_FAILED;
	}
	return PQ_STEP_WAIT;
}

PqStep
pq_conn_start(PqConn *c, const PqConnParams *p)
{
	PqKeys k;

	pq_conn_close(c);
	c->error[0] = '\0';
	if (pq_keys_build(p, &k, c->error, sizeof(c->error)) < 0)
		return PQ_STEP_FAILED;
	c->pg = PQconnectStartParams(k.keys, k.vals, 0);
	pq_keys_free(&k);
	if (c->pg == NULL)
	{
		snprintf(c->error, sizeof(c->error), "out of memory");
		return PQ_STEP_FAILED;
	}
	if (PQstatus(c->pg) == CONNECTION_BAD)
	{
		pq_conn_error(c);
		return PQ_STEP_FAILED;
	}
	PQsetNoticeReceiver(c->pg, pq_notice, NULL);
	c->status = PQ_CONNECTING;
	/* libpq: start as if PQconnectPoll had asked to write */
	return pq_conn_wait(c, EPOLLOUT);
}

PqStep
pq_conn_step(PqConn *c)
{
	switch (PQconnectPoll(c->pg))
	{
		case PGRES_POLLING_READING:
			return pq_conn_wait(c, EPOLLIN);
		case PGRES_POLLING_WRITING:
			return pq_conn_wait(c, EPOLLOUT);
		case PGRES_POLLING_OK:
			if (PQsetnonblocking(c->pg, 1) != 0)
				break;
			c->status = PQ_UP;
			pq_backoff_reset(&c->backoff);
			return pq_conn_wait(c, EPOLLIN) == PQ_STEP_WAIT ? PQ_STEP_UP : PQ_STEP_FAILED;
		default:
			break;
	}
	pq_conn_error(c);
	return PQ_STEP_FAILED;
}

bool
pq_conn_flush(PqConn *c)
{
	int f = PQflush(c->pg);

	if (f < 0)
	{
		pq_conn_error(c);
		return false;
	}
	c->events = EPOLLIN | (f == 1 ? EPOLLOUT : 0);
	return true;
}

bool
pq_conn_io(PqConn *c, uint32_t revents)
{
	if ((revents & EPOLLOUT) && !pq_conn_flush(c))
		return false;
	if ((revents & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !PQconsumeInput(c->pg))
	{
		pq_conn_error(c);
		return false;
	}
	return true;
}

/* ------------------------------------------------------------------------
 * Blocking use
 * ------------------------------------------------------------------------ */

PGconn *
pq_connect_wait(const PqConnParams *p, char *err, size_t errsize)
{
	PqKeys	k;
	PGconn *pg;

	if (pq_keys_build(p, &k, err, errsize) < 0)
		return NULL;
	pg = PQconnectdbParams(k.keys, k.vals, 0);
	pq_keys_free(&k);
	if (pg == NULL)
	{
		snprintf(err, errsize, "out of memory");
		return NULL;
	}
	if (PQstatus(pg) != CONNECTION_OK)
	{
		pq_one_line(PQerrorMessage(pg), err, errsize);
		PQfinish(pg);
		return NULL;
	}
	PQsetNoticeReceiver(pg, pq_notice, NULL);
	return pg;
}

/* Wait until libpq has a whole result; false on a broken connection or at the deadline. */
static bool
pq_wait_result(PGconn *pg, uint64_t deadline_ms, bool *timed_out)
{
	while (PQisBusy(pg))
	{
		uint64_t	  now = now_ms();
		struct pollfd pfd = {.fd = PQsocket(pg), .events = POLLIN};
		int			  n;

		if (now >= deadline_ms)
		{
			*timed_out = true;
			return false;
		}
		if (pfd.fd < 0)
			return false;
		n = poll(&pfd, 1, (int) (deadline_ms - now > 60000 ? 60000 : deadline_ms - now));
		if (n < 0 && errno != EINTR)
			return false;
		if (n > 0 && !PQconsumeInput(pg))
			return false;
	}
	return true;
}

bool
pq_collect(PGconn *pg, uint64_t deadline_ms, PGresult **res, bool *timed_out)
{
	PGresult *r;

	*res = NULL;
	*timed_out = false;
	for (;;)
	{
		if (!pq_wait_result(pg, deadline_ms, timed_out))
			return false;
		if ((r = PQgetResult(pg)) == NULL)
			return PQstatus(pg) != CONNECTION_BAD;
		if (*res && PQresultStatus(*res) == PGRES_FATAL_ERROR)
			PQclear(r);
		else
		{
			PQclear(*res);
			*res = r;
		}
	}
}

int
pq_exec_wait(PGconn *pg, const char *sql, int nparams, const char *const *params,
			 uint64_t timeout_ms, PGresult **res, char sqlstate[6], char *err, size_t errsize)
{
	uint64_t	   deadline = now_ms() + timeout_ms;
	PGresult	  *keep = NULL;
	bool		   timed_out = false;
	bool		   broken;
	ExecStatusType st;

	*res = NULL;
	sqlstate[0] = '\0';
	err[0] = '\0';
	if (!PQsendQueryParams(pg, sql, nparams, NULL, params, NULL, NULL, 0))
	{
		pq_error_line(pg, NULL, err, errsize);
		if (PQstatus(pg) != CONNECTION_BAD)
			return -EIO;
		snprintf(sqlstate, 6, "08006");
		return -ECONNRESET;
	}
	broken = !pq_collect(pg, deadline, &keep, &timed_out) && !timed_out;
	if (timed_out)
	{
		PQclear(keep);
		snprintf(err, errsize, "no answer within %llu ms", (unsigned long long) timeout_ms);
		return -ETIMEDOUT;
	}
	if (broken || PQstatus(pg) == CONNECTION_BAD)
	{
		pq_error_line(pg, NULL, err, errsize);
		PQclear(keep);
		snprintf(sqlstate, 6, "08006");
		return -ECONNRESET;
	}
	st = keep ? PQresultStatus(keep) : PGRES_FATAL_ERROR;
	if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
	{
		*res = keep;
		return 0;
	}
	pq_error_line(pg, keep, err, errsize);
	pq_result_sqlstate(keep, sqlstate, "");
	PQclear(keep);
	return -EIO;
}
