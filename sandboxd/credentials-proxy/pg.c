/*
 * pg.c — the libpq adapter (see pg.h).  Connection threads borrow one of
 * cfg.pg_pool connections (waiting at most pg_timeout for one), run one
 * parameterised statement through daemonlib/pq's blocking helpers, and
 * give it back.  A connection that broke is dropped and made again on next
 * use; a call that finds its pooled connection dead (the server restarted)
 * retries once on a fresh one.  statement_timeout bounds a slow statement
 * and pg_timeout the wait for any answer: a connection that gave none is
 * dropped.
 */
#include <libpq-fe.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "credproxy.h"
#include "daemonlib/pq.h"
#include "pg.h"

struct slot
{
	PGconn *conn;
	bool	busy;
};

static struct slot	  *slots;
static size_t		   n_slots;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t  freed = PTHREAD_COND_INITIALIZER;
static atomic_bool	   warned;

int
pg_init(void)
{
	slots = calloc(cfg.pg_pool, sizeof *slots);
	if (!slots)
		return -ENOMEM;
	n_slots = cfg.pg_pool;
	return 0;
}

void
pg_done(void)
{
	for (size_t i = 0; i < n_slots; i++)
		if (slots[i].conn)
			PQfinish(slots[i].conn);
	free(slots);
	slots = NULL;
	n_slots = 0;
}

static struct slot *
acquire(void)
{
	struct timespec deadline;
	struct slot	   *s = NULL;

	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += (time_t) (cfg.pg_timeout_ms / 1000);
	deadline.tv_nsec += (long) (cfg.pg_timeout_ms % 1000) * 1000000;
	if (deadline.tv_nsec >= 1000000000)
	{
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&lock);
	for (;;)
	{
		/* Prefer a slot with a live connection. */
		for (size_t i = 0; i < n_slots; i++)
			if (!slots[i].busy && (!s || (slots[i].conn && !s->conn)))
				s = &slots[i];
		if (s || pthread_cond_timedwait(&freed, &lock, &deadline) != 0)
			break;
	}
	if (s)
		s->busy = true;
	pthread_mutex_unlock(&lock);
	return s;
}

static void
release(struct slot *s)
{
	pthread_mutex_lock(&lock);
	s->busy = false;
	pthread_cond_signal(&freed);
	pthread_mutex_unlock(&lock);
}

static int
connect_slot(struct slot *s)
{
	char		 options[64];
	PqConnParams params = {
		.conninfo = cfg.pg_conninfo,
		.program = "nadi-credproxy",
		.options = options,
		.connect_timeout_s = (int) MAX(1, cfg.pg_timeout_ms / 1000),
	};
	char line[PQ_ERROR_MAX];

	snprintf(options, sizeof options, "-c statement_timeout=%llu",
			 (unsigned long long) cfg.pg_timeout_ms);
	s->conn = pq_connect_wait(&params, line, sizeof line);
	if (s->conn)
	{
		if (atomic_exchange(&warned, false))
			log_notice("postgres: connected again");
		return 0;
	}
	if (!atomic_exchange(&warned, true))
		log_warning("postgres: cannot connect: %s", line);
	return -EIO;
}

/*
 * Run sql with params on a pooled connection.  0 with *res (PGRES_TUPLES_OK);
 * -EIO with errcode set (SQLSTATE or ""), -EBUSY when the pool stayed full.
 */
static int
run(const char *what, const char *sql, int n, const char *const *params, PGresult **res,
	char errcode[6])
{
	struct slot *s = acquire();
	int			 r = -EIO;

	errcode[0] = '\0';
	if (!s)
	{
		log_warning("postgres: no pooled connection became free within %llu ms for %s",
					(unsigned long long) cfg.pg_timeout_ms, what);
		return -EBUSY;
	}
	for (int attempt = 0; attempt < 2; attempt++)
	{
		bool reused = s->conn != NULL;
		char line[PQ_ERROR_MAX];
		int	 e;

		if (!s->conn && connect_slot(s) < 0)
			break;
		/* a second more than statement_timeout: the server's own error comes first */
		e = pq_exec_wait(s->conn, sql, n, params, cfg.pg_timeout_ms + 1000, res, errcode, line,
						 sizeof line);
		if (e == 0)
		{
			r = 0;
			break;
		}
		if (e == -ECONNRESET || e == -ETIMEDOUT)
		{
			PQfinish(s->conn);
			s->conn = NULL;
			errcode[0] = '\0';
			if (e == -ECONNRESET && reused)
				continue; /* a stale pooled connection: once more on a new one */
			log_warning("postgres: %s during %s: %s",
						e == -ETIMEDOUT ? "no answer" : "connection lost", what, line);
			break;
		}
		log_warning("postgres: %s failed: %s", what, line);
		break;
	}
	release(s);
	return r;
}

int
pg_authorize(const char *token, const char *sandbox_id, const char *upstream, const char *method,
			 const char *path, json_t **answer, char errcode[6])
{
	const char	*params[] = {token, sandbox_id, upstream, method, path, cfg.proxy_id};
	PGresult	*res = NULL;
	json_error_t err;
	int			 r;

	r = run("proxy_authorize", "SELECT nadi.proxy_authorize($1, $2, $3, $4, $5, $6)", 6, params,
			&res, errcode);
	if (r < 0)
		return r;
	*answer = PQntuples(res) == 1 && !PQgetisnull(res, 0, 0)
				  ? json_loads(PQgetvalue(res, 0, 0), JSON_REJECT_DUPLICATES, &err)
				  : NULL;
	PQclear(res);
	if (!*answer || !json_is_object(*answer))
	{
		json_decref(*answer);
		*answer = NULL;
		log_error("postgres: proxy_authorize returned no JSON object");
		return -EIO;
	}
	return 0;
}

int
pg_finish(int64_t exchange_id, unsigned status, uint64_t bytes_up, uint64_t bytes_down,
		  double duration_ms, const char *error)
{
	char		id[32], st[16], up[32], down[32], ms[64], errcode[6];
	const char *params[] = {id, status ? st : NULL, up, down, ms, error};
	PGresult   *res = NULL;
	int			r;

	snprintf(id, sizeof id, "%lld", (long long) exchange_id);
	snprintf(st, sizeof st, "%u", status);
	snprintf(up, sizeof up, "%llu", (unsigned long long) bytes_up);
	snprintf(down, sizeof down, "%llu", (unsigned long long) bytes_down);
	snprintf(ms, sizeof ms, "%.3f", duration_ms);
	r = run("proxy_finish",
			"SELECT nadi.proxy_finish($1::bigint, $2::integer, $3::bigint, $4::bigint, $5::double "
			"precision, $6)",
			6, params, &res, errcode);
	PQclear(res);
	return r;
}
