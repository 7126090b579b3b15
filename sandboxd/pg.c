/*
 * pg.c — the libpq adapter (see pg.h).  One connection, never blocking the
 * event loop: daemonlib/pq connects without blocking and says which
 * readiness of its socket to wait for; PQsendQueryParams, PQflush and
 * PQconsumeInput follow that readiness.  Any failure drops the connection
 * and retries after pq's back-off; the next success registers again, so a
 * database restart or a lost row heals by itself.  The same
 * connection fetches nadi.jwks() for access.c: once connected and whenever
 * access.c asks, between heartbeats; and it asks the reaper's questions
 * (reap.c: which sessions of this host's sandboxes ended) when they are due,
 * between heartbeats too.  The role in the conninfo needs only
 * nadi_sandbox_host.
 */
#include <libpq-fe.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>

#include "access.h"
#include "daemonlib/pq.h"
#include "pg.h"
#include "reap.h"
#include "sbx.h"

#define RETRY_MS 5000 /* after a failed registration or heartbeat */

enum pg_state
{
	PG_OFF,
	PG_BACKOFF,
	PG_CONNECTING,
	PG_QUERY,
	PG_IDLE
};
enum pg_query
{
	Q_REGISTER,
	Q_HEARTBEAT,
	Q_JWKS,
	Q_REAP,
	Q_HOST
};

/* A host address workspace.c waits for (a fork from another host), in a queue. */
struct host_lookup
{
	char				host_id[72];
	pg_host_cb			cb;
	void			   *ud;
	struct host_lookup *next;
};
static struct host_lookup *lookups;

static PqConn		 conn = {.fd = -1};
static enum pg_state state = PG_OFF;
static EvIo			 io;
static EvTimer		 timer;
static bool			 registered; /* last register/heartbeat succeeded */
static bool			 need_register = true;
static bool			 need_jwks; /* access.c asked for the keys */
static enum pg_query current;
static uint64_t		 next_beat_ms; /* when the next heartbeat (or registration retry) is due */
static bool			 warned;

static void start_connect(void);
static void on_io(EvIo *w, uint32_t revents);

bool
pg_registered(void)
{
	return registered;
}

bool
pg_connected(void)
{
	return state == PG_CONNECTING || state == PG_QUERY || state == PG_IDLE;
}

static void on_timer(EvTimer *t);

static void
drop(const char *why)
{
	uint64_t delay_ms = pq_backoff_next(&conn.backoff);

	if (why && (!warned || registered))
		log_warning("postgres: %s; retrying in %llu ms", why, (unsigned long long) delay_ms);
	warned = true;
	if (state == PG_QUERY && current == Q_REAP)
		reap_answered(false, why ? why : "the connection to postgres was lost");
	while (lookups)
	{
		struct host_lookup *l = lookups;
		lookups = l->next;
		l->cb(l->ud, NULL, why ? why : "the connection to postgres was lost");
		free(l);
	}
	need_jwks = false;
	access_keys_failed(why ? why : "the connection to postgres was lost");
	ev_io_stop(&io);
	pq_conn_close(&conn);
	registered = false;
	need_register = true;
	state = PG_BACKOFF;
	ev_timer_arm(&timer, delay_ms, on_timer, NULL);
}

/* Watch the socket for what pq asks (it may be a new one after a connect step). */
static void
watch(void)
{
	if (conn.fd < 0)
	{
		drop("connection has no socket");
		return;
	}
	if (io.added && io.fd != conn.fd)
		ev_io_stop(&io);
	if (!io.added)
		ev_io_start(&io, conn.fd, conn.events, on_io, NULL);
	else
		ev_io_modify(&io, conn.events);
}

/* Send what libpq holds and wait for the answer. */
static void
flush(void)
{
	if (!pq_conn_flush(&conn))
		drop(pq_conn_error(&conn));
	else
		watch();
}

static void go_idle(void);

static void
send_query(void)
{
	char				   cap[32], grace[48];
	const char			  *sql, *params[4];
	int					   n;
	uint64_t			   now = now_ms();
	_cleanup_(freep) char *ids = NULL;

	if (need_jwks)
	{
		sql = "SELECT nadi.jwks()::text";
		n = 0;
		need_jwks = false;
		current = Q_JWKS;
	}
	else if (lookups)
	{
		sql = "SELECT address FROM nadi.sandbox_hosts WHERE host_id = $1";
		params[0] = lookups->host_id;
		n = 1;
		current = Q_HOST;
	}
	else if (need_register)
	{
		snprintf(cap, sizeof cap, "%llu", (unsigned long long) cfg.max_sandboxes);
		sql = "SELECT host_id FROM nadi.sandbox_host_register($1, $2, $3::integer, $4::jsonb)";
		params[0] = cfg.host_id;
		params[1] = cfg.advertise;
		params[2] = cap;
		params[3] = cfg.labels;
		n = 4;
		current = Q_REGISTER;
	}
	else if (next_beat_ms <= now)
	{
		sql = "SELECT host_id FROM nadi.sandbox_host_heartbeat($1)";
		params[0] = cfg.host_id;
		n = 1;
		current = Q_HEARTBEAT;
	}
	else if (reap_next_ms() <= now && (ids = reap_question()))
	{
		snprintf(grace, sizeof grace, "%llu milliseconds", (unsigned long long) cfg.reap_grace_ms);
		sql = "SELECT nadi.sessions_ended($1::uuid[], $2::interval)";
		params[0] = ids;
		params[1] = grace;
		n = 2;
		current = Q_REAP;
	}
	else
	{
		go_idle(); /* nothing due (the reaper had nothing to ask) */
		return;
	}
	if (!PQsendQueryParams(conn.pg, sql, n, NULL, params, NULL, NULL, 0))
	{
		drop(pq_conn_error(&conn));
		return;
	}
	state = PG_QUERY;
	flush();
}

static void
on_timer(EvTimer *t)
{
	(void) t;
	if (state == PG_BACKOFF)
		start_connect();
	else if (state == PG_IDLE)
		send_query();
}

/*
 * Idle until the next heartbeat or reaper question, or on to the keys
 * access.c asked for meanwhile.
 */
static void
go_idle(void)
{
	uint64_t now = now_ms(), due = next_beat_ms;

	state = PG_IDLE;
	conn.events = EPOLLIN; /* notice a closed connection while idle */
	watch();
	if (state != PG_IDLE)
		return;
	if (need_jwks || lookups)
		send_query();
	else
	{
		if (!need_register && reap_next_ms() < due)
			due = reap_next_ms();
		ev_timer_arm(&timer, due > now ? due - now : 0, on_timer, NULL);
	}
}

static void
handle_jwks(void)
{
	PGresult *res;
	char	  line[PQ_ERROR_MAX] = "";
	bool	  done = false;

	while ((res = PQgetResult(conn.pg)))
	{
		if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
			!PQgetisnull(res, 0, 0) && !done)
		{
			access_keys_loaded(PQgetvalue(res, 0, 0));
			done = true;
		}
		else if (!done && !line[0])
		{
			if (PQresultStatus(res) == PGRES_TUPLES_OK)
				snprintf(line, sizeof line, "nadi.jwks() returned no row");
			else
				pq_error_line(conn.pg, res, line, sizeof line);
		}
		PQclear(res);
	}
	if (!done)
		access_keys_failed(line[0] ? line : "nadi.jwks() failed");
	go_idle();
}

/* The reaper's answer: the ids of ended sessions, one a row. */
static void
handle_reap(void)
{
	PGresult *res;
	char	  line[PQ_ERROR_MAX] = "";
	bool	  ok = true;

	while ((res = PQgetResult(conn.pg)))
	{
		if (PQresultStatus(res) == PGRES_TUPLES_OK && PQnfields(res) == 1)
		{
			for (int i = 0; i < PQntuples(res); i++)
				if (!PQgetisnull(res, i, 0))
					reap_ended(PQgetvalue(res, i, 0));
		}
		else
		{
			if (ok)
				pq_error_line(conn.pg, res, line, sizeof line);
			ok = false;
		}
		PQclear(res);
	}
	reap_answered(ok, line);
	go_idle();
}

/* The address of the first waiting lookup's host. */
static void
handle_host(void)
{
	struct host_lookup *l = lookups;
	PGresult		   *res;
	char				line[PQ_ERROR_MAX] = "";
	char			   *address = NULL;
	bool				ok = true;

	lookups = l->next;
	while ((res = PQgetResult(conn.pg)))
	{
		if (PQresultStatus(res) == PGRES_TUPLES_OK)
		{
			if (PQntuples(res) == 1 && !PQgetisnull(res, 0, 0) && !address)
				address = strdup(PQgetvalue(res, 0, 0));
		}
		else if (ok)
		{
			pq_error_line(conn.pg, res, line, sizeof line);
			ok = false;
		}
		PQclear(res);
	}
	l->cb(l->ud, ok ? address : NULL, ok ? "not registered, or without an address" : line);
	free(address);
	free(l);
	go_idle();
}

bool
pg_host_address(const char *host_id, pg_host_cb cb, void *ud)
{
	struct host_lookup *l, **pp = &lookups;

	if (!pg_connected() || !(l = calloc(1, sizeof *l)))
		return false;
	snprintf(l->host_id, sizeof l->host_id, "%s", host_id);
	l->cb = cb;
	l->ud = ud;
	while (*pp)
		pp = &(*pp)->next;
	*pp = l;
	if (state == PG_IDLE)
	{
		ev_timer_cancel(&timer);
		send_query();
	}
	return true;
}

static void
handle_results(void)
{
	PGresult *res;
	bool	  ok = true;

	if (current == Q_JWKS)
	{
		handle_jwks();
		return;
	}
	if (current == Q_REAP)
	{
		handle_reap();
		return;
	}
	if (current == Q_HOST)
	{
		handle_host();
		return;
	}
	while ((res = PQgetResult(conn.pg)))
	{
		if (PQresultStatus(res) != PGRES_TUPLES_OK)
		{
			char line[PQ_ERROR_MAX];

			pq_error_line(conn.pg, res, line, sizeof line);
			log_error("postgres: %s failed: %s",
					  need_register ? "sandbox_host_register" : "sandbox_host_heartbeat", line);
			ok = false;
		}
		PQclear(res);
	}
	if (ok)
	{
		if (need_register)
			log_notice("registered as sandbox host \"%s\" (%s, capacity %llu)", cfg.host_id,
					   cfg.advertise, (unsigned long long) cfg.max_sandboxes);
		need_register = false;
		warned = false;
	}
	else
		need_register = true; /* a heartbeat for a lost row fails: register again */
	registered = ok;
	next_beat_ms = now_ms() + (ok ? cfg.heartbeat_ms : RETRY_MS);
	go_idle();
}

static void
on_io(EvIo *w, uint32_t revents)
{
	(void) w;
	switch (state)
	{
		case PG_CONNECTING:
			switch (pq_conn_step(&conn))
			{
				case PQ_STEP_WAIT:
					watch();
					return;
				case PQ_STEP_UP:
					log_info("postgres: connected");
					need_jwks = true;
					send_query();
					return;
				case PQ_STEP_FAILED:
					drop(pq_conn_error(&conn));
					return;
			}
			return;
		case PG_QUERY:
			if (!pq_conn_io(&conn, revents))
			{
				drop(pq_conn_error(&conn));
				return;
			}
			if (revents & EPOLLOUT)
				watch();
			if ((revents & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !PQisBusy(conn.pg))
				handle_results();
			return;
		case PG_IDLE:
			/* Nothing is in flight: only notices, or the end of the connection. */
			if (!pq_conn_io(&conn, EPOLLIN) || PQstatus(conn.pg) != CONNECTION_OK)
			{
				drop("connection lost");
				return;
			}
			return;
		default:
			return;
	}
}

static void
start_connect(void)
{
	/*
	 * Every statement on this connection is short (registration, heartbeat,
	 * keys, the reaper's question); one stuck behind a lock must not hold up
	 * the heartbeats that keep this host live, so the server cuts it.
	 */
	const PqConnParams params = {
		.conninfo = cfg.pg_conninfo,
		.program = "nadi-sandboxd",
		.options = "-c statement_timeout=10s -c idle_in_transaction_session_timeout=15s"};

	if (pq_conn_start(&conn, &params) != PQ_STEP_WAIT)
	{
		drop(pq_conn_error(&conn));
		return;
	}
	state = PG_CONNECTING;
	watch();
}

bool
pg_jwks_request(void)
{
	if (!pg_connected())
		return false;
	need_jwks = true;
	if (state == PG_IDLE)
	{
		ev_timer_cancel(&timer);
		send_query();
	}
	return pg_connected();
}

int
pg_init(void)
{
	if (!cfg.pg_conninfo || !*cfg.pg_conninfo)
	{
		log_info("no pg_conninfo: not registering in Postgres");
		return 0;
	}
	start_connect();
	return 0;
}

void
pg_done(void)
{
	ev_timer_cancel(&timer);
	ev_io_stop(&io);
	pq_conn_close(&conn);
	state = PG_OFF;
}
