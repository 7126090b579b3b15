/*
 * pg.c — the libpq adapter (see pg.h).  One connection, never blocking the
 * event loop: PQconnectStart/PQconnectPoll, PQsendQueryParams, PQflush and
 * PQconsumeInput are driven by readiness of PQsocket().  Any failure drops
 * the connection and retries after a back-off; the next success registers
 * again, so a database restart or a lost row heals by itself.  The same
 * connection fetches nadi.jwks() for access.c: once connected and whenever
 * access.c asks, between heartbeats.  The role in the conninfo needs only
 * nadi_sandbox_host.
 */
#include <libpq-fe.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>

#include "access.h"
#include "pg.h"
#include "sbx.h"

#define BACKOFF_MS 5000

enum pg_state { PG_OFF, PG_BACKOFF, PG_CONNECTING, PG_QUERY, PG_IDLE };
enum pg_query { Q_REGISTER, Q_HEARTBEAT, Q_JWKS };

static PGconn *conn;
static enum pg_state state = PG_OFF;
static EvIo io;
static EvTimer timer;
static bool registered;     /* last register/heartbeat succeeded */
static bool need_register = true;
static bool need_jwks;       /* access.c asked for the keys */
static enum pg_query current;
static uint64_t next_beat_ms; /* when the next heartbeat (or registration retry) is due */
static bool warned;

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

static void
on_timer(EvTimer *t);

static void
drop(const char *why)
{
	if (why && (!warned || registered)) {
		char line[512];
		snprintf(line, sizeof line, "%s", why);
		line[strcspn(line, "\n")] = '\0';
		log_warning("postgres: %s; retrying in %d s", line, BACKOFF_MS / 1000);
	}
	warned = true;
	need_jwks = false;
	access_keys_failed(why ? why : "the connection to postgres was lost");
	ev_io_stop(&io);
	if (conn)
		PQfinish(conn);
	conn = NULL;
	registered = false;
	need_register = true;
	state = PG_BACKOFF;
	ev_timer_arm(&timer, BACKOFF_MS, on_timer, NULL);
}

static void
watch(uint32_t events)
{
	int fd = PQsocket(conn);

	if (fd < 0) {
		drop("connection has no socket");
		return;
	}
	if (io.added && io.fd != fd)
		ev_io_stop(&io);
	if (!io.added)
		ev_io_start(&io, fd, events, on_io, NULL);
	else
		ev_io_modify(&io, events);
}

static void
send_query(void)
{
	char cap[32];
	const char *sql, *params[4];
	int n;

	if (need_jwks) {
		sql = "SELECT nadi.jwks()::text";
		n = 0;
		need_jwks = false;
		current = Q_JWKS;
	} else if (need_register) {
		snprintf(cap, sizeof cap, "%llu", (unsigned long long)cfg.max_sandboxes);
		sql = "SELECT host_id FROM nadi.sandbox_host_register($1, $2, $3::integer, $4::jsonb)";
		params[0] = cfg.host_id;
		params[1] = cfg.advertise;
		params[2] = cap;
		params[3] = cfg.labels;
		n = 4;
		current = Q_REGISTER;
	} else {
		sql = "SELECT host_id FROM nadi.sandbox_host_heartbeat($1)";
		params[0] = cfg.host_id;
		n = 1;
		current = Q_HEARTBEAT;
	}
	if (!PQsendQueryParams(conn, sql, n, NULL, params, NULL, NULL, 0)) {
		drop(PQerrorMessage(conn));
		return;
	}
	state = PG_QUERY;
	watch(PQflush(conn) == 1 ? EPOLLIN | EPOLLOUT : EPOLLIN);
}

static void
on_timer(EvTimer *t)
{
	(void)t;
	if (state == PG_BACKOFF)
		start_connect();
	else if (state == PG_IDLE)
		send_query();
}

/* Idle until the next heartbeat, or on to the keys access.c asked for meanwhile. */
static void
go_idle(void)
{
	uint64_t now = now_ms();

	state = PG_IDLE;
	watch(EPOLLIN); /* notice a closed connection while idle */
	if (state != PG_IDLE)
		return;
	if (need_jwks)
		send_query();
	else
		ev_timer_arm(&timer, next_beat_ms > now ? next_beat_ms - now : 0, on_timer, NULL);
}

static void
handle_jwks(void)
{
	PGresult *res;
	char line[512] = "";
	bool done = false;

	while ((res = PQgetResult(conn))) {
		if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 && !PQgetisnull(res, 0, 0) && !done) {
			access_keys_loaded(PQgetvalue(res, 0, 0));
			done = true;
		} else if (!done && !line[0]) {
			snprintf(line, sizeof line, "%s",
				 PQresultStatus(res) == PGRES_TUPLES_OK ? "nadi.jwks() returned no row" : PQresultErrorMessage(res));
			line[strcspn(line, "\n")] = '\0';
		}
		PQclear(res);
	}
	if (!done)
		access_keys_failed(line[0] ? line : "nadi.jwks() failed");
	go_idle();
}

static void
handle_results(void)
{
	PGresult *res;
	bool ok = true;

	if (current == Q_JWKS) {
		handle_jwks();
		return;
	}
	while ((res = PQgetResult(conn))) {
		if (PQresultStatus(res) != PGRES_TUPLES_OK) {
			const char *msg = PQresultErrorMessage(res);
			char line[512];
			snprintf(line, sizeof line, "%s", msg);
			line[strcspn(line, "\n")] = '\0';
			log_error("postgres: %s failed: %s", need_register ? "sandbox_host_register" : "sandbox_host_heartbeat",
				  line);
			ok = false;
		}
		PQclear(res);
	}
	if (ok) {
		if (need_register)
			log_notice("registered as sandbox host \"%s\" (%s, capacity %llu)", cfg.host_id, cfg.advertise,
				   (unsigned long long)cfg.max_sandboxes);
		need_register = false;
		warned = false;
	} else
		need_register = true; /* a heartbeat for a lost row fails: register again */
	registered = ok;
	next_beat_ms = now_ms() + (ok ? cfg.heartbeat_ms : BACKOFF_MS);
	go_idle();
}

static void
on_io(EvIo *w, uint32_t revents)
{
	(void)w;
	switch (state) {
	case PG_CONNECTING:
		switch (PQconnectPoll(conn)) {
		case PGRES_POLLING_READING:
			watch(EPOLLIN);
			return;
		case PGRES_POLLING_WRITING:
			watch(EPOLLOUT);
			return;
		case PGRES_POLLING_OK:
			log_info("postgres: connected");
			need_jwks = true;
			send_query();
			return;
		default:
			drop(PQerrorMessage(conn));
			return;
		}
	case PG_QUERY:
		if (revents & EPOLLOUT) {
			int f = PQflush(conn);
			if (f < 0) {
				drop(PQerrorMessage(conn));
				return;
			}
			watch(f == 1 ? EPOLLIN | EPOLLOUT : EPOLLIN);
		}
		if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
			if (!PQconsumeInput(conn)) {
				drop(PQerrorMessage(conn));
				return;
			}
			if (!PQisBusy(conn))
				handle_results();
		}
		return;
	case PG_IDLE:
		if (!PQconsumeInput(conn) || PQstatus(conn) != CONNECTION_OK) {
			drop("connection lost");
			return;
		}
		/* Discard notices; there are no queries in flight. */
		return;
	default:
		return;
	}
}

static void
start_connect(void)
{
	conn = PQconnectStart(cfg.pg_conninfo);
	if (!conn || PQstatus(conn) == CONNECTION_BAD) {
		drop(conn ? PQerrorMessage(conn) : "out of memory");
		return;
	}
	if (PQsetnonblocking(conn, 1) < 0) {
		drop(PQerrorMessage(conn));
		return;
	}
	state = PG_CONNECTING;
	watch(EPOLLOUT);
}

bool
pg_jwks_request(void)
{
	if (!pg_connected())
		return false;
	need_jwks = true;
	if (state == PG_IDLE) {
		ev_timer_cancel(&timer);
		send_query();
	}
	return pg_connected();
}

int
pg_init(void)
{
	if (!cfg.pg_conninfo || !*cfg.pg_conninfo) {
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
	if (conn)
		PQfinish(conn);
	conn = NULL;
	state = PG_OFF;
}
