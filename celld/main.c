/*
 * main.c — nadi-celld: a cell host outside PostgreSQL.  Start-up (the
 * configuration, the role check, the store, the cell, the LISTEN
 * connection, /metrics), the event loop around the cell host core
 * (bgworkers/cellhost.h), signals and the drain.
 *
 * The loop: run the cell (cellhost_run does what is due and says how long
 * it may wait), then wait in the epoll set for the cell's fd (a call in
 * flight needs attention), a wake-up (NOTIFY nadi_cell with our host id),
 * an HTTP request, a signal, or the time the cell asked for.
 *
 * SIGTERM (or SIGINT) drains: the cell stops claiming, the commands under
 * way run on until none is left or drain_timeout has passed, then every
 * session gets its checkpoint and its lease back (cellhost_release_all:
 * placed elsewhere by the broker), STOPPING=1, exit 0.  A second signal
 * ends the drain at once (leases are still released).  SIGHUP reloads the
 * configuration (conninfo, host_id and listen need a restart).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "celld.h"
#include "daemonlib/evloop.h"
#include "daemonlib/listener.h"
#include "daemonlib/log.h"
#include "daemonlib/notify.h"

#define STATUS_EVERY_MS 1000

static int		   saved_argc;
static char		 **saved_argv;
static CellHost	  *cell;
static StorePq	  *store;
static CelldHealth health;
static EvIo		   sig_io, cell_io;
static int		   stop_signals;
static bool		   reload_pending;
static bool		   role_refused;

/* The runtime's messages, in the daemon's log. */
static void
rt_log(void *arg, RtLogLevel level, const char *msg)
{
	log_at(level == RT_LOG_WARNING ? LOG_LEVEL_WARNING
		   : level == RT_LOG_INFO  ? LOG_LEVEL_INFO
								   : LOG_LEVEL_DEBUG,
		   "%s", msg);
}

/* MAJOR.MINOR versions compared as numbers: <0, 0, >0 (a malformed one is oldest). */
static int
ext_version_cmp(const char *a, const char *b)
{
	unsigned long am = 0, an = 0, bm = 0, bn = 0;

	if (sscanf(a, "%lu.%lu", &am, &an) != 2)
		return -1;
	if (sscanf(b, "%lu.%lu", &bm, &bn) != 2)
		return 1;
	if (am != bm)
		return am < bm ? -1 : 1;
	return an < bn ? -1 : an > bn;
}

/*
 * Every new store connection: the login must be a member of nadi_cell and
 * no superuser (a cell host holds nothing more: no model key, no upstream
 * secret, no sandbox hosts' operator token).  A refusal stops the daemon;
 * a database without the extension, or with an older version of it than
 * this build's (a rolling upgrade before ALTER EXTENSION nadi UPDATE), is
 * waited for.
 */
static int
role_check(PGconn *pg, void *arg, char *msg, size_t msglen)
{
	const char *sql = "SELECT r.rolsuper, r.rolname::text, "
					  "  to_regrole('nadi_cell') IS NOT NULL "
					  "    AND pg_has_role(r.oid, 'nadi_cell', 'MEMBER') AS cell, "
					  "  to_regrole('nadi_admin') IS NOT NULL "
					  "    AND pg_has_role(r.oid, 'nadi_admin', 'MEMBER') AS admin, "
					  "  (SELECT extversion FROM pg_extension WHERE extname = 'nadi') AS ext "
					  "FROM pg_roles r WHERE r.rolname = current_user";
	PGresult   *res = NULL;
	char		ss[6], err[PQ_ERROR_MAX];
	const char *role;

	if (pq_exec_wait(pg, sql, 0, NULL, 10000, &res, ss, err, sizeof(err)) < 0 ||
		PQntuples(res) != 1)
	{
		snprintf(msg, msglen, "cannot check the login's role: %s", err[0] ? err : "no row");
		PQclear(res);
		return -EIO;
	}
	role = PQgetvalue(res, 0, 1);
	if (strcmp(PQgetvalue(res, 0, 0), "t") == 0)
	{
		snprintf(msg, msglen,
				 "refusing to run as %s, a superuser: nadi-celld logs in as a role that is only a "
				 "member of nadi_cell (CREATE ROLE celld LOGIN IN ROLE nadi_cell; SELECT "
				 "nadi.host_bind('cell', '%s', 'celld'))",
				 role, celld_cfg.host_id);
		role_refused = true;
		PQclear(res);
		return -EPERM;
	}
	if (PQgetisnull(res, 0, 4))
	{
		snprintf(msg, msglen, "the nadi extension is not installed in this database (yet)");
		PQclear(res);
		return -EIO;
	}
	if (ext_version_cmp(PQgetvalue(res, 0, 4), NADI_EXT_VERSION) < 0)
	{
		/*
		 * A rolling upgrade: waited for until ALTER EXTENSION nadi UPDATE.  A
		 * newer schema is served (upgrade scripts keep what older cells call;
		 * docs/RELEASES.md), so updating the database does not stop the fleet.
		 */
		snprintf(
			msg, msglen,
			"the nadi extension in this database is version %s, nadi-celld %s needs version %s: "
			"waiting for ALTER EXTENSION nadi UPDATE",
			PQgetvalue(res, 0, 4), NADI_VERSION, NADI_EXT_VERSION);
		PQclear(res);
		return -EIO;
	}
	if (strcmp(PQgetvalue(res, 0, 2), "t") != 0)
	{
		snprintf(msg, msglen,
				 "refusing to run as %s, which is not a member of nadi_cell (GRANT nadi_cell TO "
				 "%s)",
				 role, role);
		role_refused = true;
		PQclear(res);
		return -EPERM;
	}
	if (strcmp(PQgetvalue(res, 0, 3), "t") == 0)
		log_warning("the login %s is a member of nadi_admin: a cell host needs nadi_cell only",
					role);
	PQclear(res);
	return 0;
}

/*
 * Register the host with this capacity (the address too): at the start
 * (the full capacity, and the state back to live after a drain), after a
 * reload, and at a drain (0: the placer gives it nothing new while the
 * commands under way finish).  The SQLSTATE of a failure, or "".
 */
static const char *
host_register(int capacity, char *message, size_t msglen)
{
	static char		 sqlstate[6];
	char			 cap[16];
	const char		*args[3] = {celld_cfg.host_id, celld_cfg.address, cap};
	const CellStore *st = store_pq_store(store);
	StoreResult		 r;

	snprintf(cap, sizeof(cap), "%d", capacity);
	st->exec(st->ctx, "SELECT state FROM nadi.cell_host_register($1, $2, $3::integer)", 3, args,
			 &r);
	snprintf(sqlstate, sizeof(sqlstate), "%s", r.sqlstate);
	snprintf(message, msglen, "%s", r.message);
	store_result_free(&r);
	return sqlstate;
}

static void
on_wake(void)
{
	cellhost_wake(cell);
}

static void
on_cell_fd(EvIo *io, uint32_t events)
{
	/* the loop runs the cell after every wait */
}

static void
on_signal(EvIo *io, uint32_t events)
{
	struct signalfd_siginfo si;

	while (read(io->fd, &si, sizeof(si)) == (ssize_t) sizeof(si))
	{
		if (si.ssi_signo == SIGHUP)
			reload_pending = true;
		else
			stop_signals++;
	}
}

/* SIGHUP: the configuration again; what needs a restart keeps its value. */
static void
reload(void)
{
	CelldConfig	   next = {0};
	CellHostConfig chc;
	RuntimeConfig  rtc;
	char		 **keep[][2] = {{&next.conninfo, &celld_cfg.conninfo},
								{&next.host_id, &celld_cfg.host_id},
								{&next.listen, &celld_cfg.listen},
								{&next.ready_file, &celld_cfg.ready_file}};

	notify_reloading();
	if (celld_conf_load(&next, saved_argc, saved_argv) < 0)
	{
		log_error("SIGHUP: the configuration is not valid; the old one stays");
		celld_conf_free(&next);
		notify_ready("%s", "Reload failed; running with the old configuration");
		return;
	}
	for (size_t i = 0; i < ARRAY_SIZE(keep); i++)
	{
		char *mine = *keep[i][1], *theirs = *keep[i][0];

		if ((mine || theirs) && (!mine || !theirs || strcmp(mine, theirs) != 0))
			log_warning("SIGHUP: a new %s takes effect at the next start", i == 0	? "conninfo"
																		   : i == 1 ? "host_id"
																		   : i == 2 ? "listen"
																					: "ready_file");
		*keep[i][0] = mine;
		*keep[i][1] = theirs;
	}
	celld_conf_free(&celld_cfg);
	celld_cfg = next;
	celld_conf_cell(&celld_cfg, &chc, &rtc);
	rtc.log = rt_log;
	cellhost_configure(cell, &chc, &rtc);
	{
		char msg[512];

		/* draining: the capacity stays 0 */
		if (stop_signals == 0 && *host_register(celld_cfg.capacity, msg, sizeof(msg)))
			log_warning("SIGHUP: cannot register the new capacity: %s", msg);
	}
	log_notice("SIGHUP: configuration reloaded");
	notify_ready("%s", "Reloaded");
}

static int
setup_signals(void)
{
	sigset_t mask;
	int		 fd;

	if (signals_block(&mask) < 0)
		return -1;
	fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (fd < 0 || ev_init() < 0 || ev_io_start(&sig_io, fd, EPOLLIN, on_signal, NULL) < 0)
	{
		log_error("cannot set up the event loop: %m");
		return -1;
	}
	return 0;
}

/* The longest the loop may wait: what the cell asked, the watchdog, HTTP's timers. */
static int64_t
wait_ms(long cell_ms, bool draining)
{
	int64_t	 w = cell_ms < 0 ? STATUS_EVERY_MS : cell_ms;
	int		 ping = notify_watchdog_tick(now_ms());
	uint64_t http = celld_http_timeout_ms();

	if (w > STATUS_EVERY_MS)
		w = STATUS_EVERY_MS;
	if (ping >= 0 && ping < w)
		w = ping;
	if (http < (uint64_t) w)
		w = (int64_t) http;
	if (draining && w > 100)
		w = 100;
	return w;
}

/* STATUS= for systemctl status, when the figures changed (at most once a second). */
static void
status_update(bool draining)
{
	static long		last_sessions = -1, last_in_flight = -1;
	static uint64_t last_ms;
	CellHostStats	s;

	if (now_ms() - last_ms < STATUS_EVERY_MS)
		return;
	last_ms = now_ms();
	cellhost_stats(cell, &s);
	if (s.sessions == last_sessions && s.in_flight == last_in_flight)
		return;
	last_sessions = s.sessions;
	last_in_flight = s.in_flight;
	if (draining)
		notify_stopping("Draining");
	else
		notify_ready("%ld sessions, %ld commands in flight", s.sessions, s.in_flight);
}

/*
 * The first connection and the registration: wait for the database, stop
 * on a signal, a refused role or a host id that is not the login's.
 */
static int
first_connect(void)
{
	char		msg[512];
	const char *ss;
	int			r;

	for (;;)
	{
		r = store_pq_connect(store);
		if (r == -EPERM || role_refused)
			return -EPERM;
		if (r == 0)
		{
			ss = host_register(celld_cfg.capacity, msg, sizeof(msg));
			if (!*ss)
				return 0;
			if (strcmp(ss, "42501") == 0)
			{
				log_error("cannot register cell host %s: %s (an administrator binds the host id to "
						  "this login: SELECT nadi.host_bind('cell', '%s', LOGIN))",
						  celld_cfg.host_id, msg, celld_cfg.host_id);
				return -EPERM;
			}
			if (strncmp(ss, "08", 2) != 0)
				log_warning("cannot register cell host %s: %s (SQLSTATE %s); trying again",
							celld_cfg.host_id, msg, ss);
		}
		ev_run_once(r == 0 ? 1000 : 200);
		if (stop_signals)
			return -EINTR;
	}
}

int
main(int argc, char **argv)
{
	CellHostConfig chc;
	RuntimeConfig  rtc;
	PqConnParams   params;
	static char	   options[256];
	char		  *conninfo;
	uint16_t	   port = 0;
	uint64_t	   drain_deadline = 0;
	bool		   draining = false;
	int			   r;

	log_ident = CELLD_PROGRAM;
	saved_argc = argc;
	saved_argv = argv;
	if (celld_conf_load(&celld_cfg, argc, argv) < 0)
		return 2;
	if (setup_signals() < 0)
		return 1;
	/* the connection's parameters stay those of the start (a reload keeps them) */
	conninfo = strdup(celld_cfg.conninfo);
	celld_conf_pq(&celld_cfg, &params, options, sizeof(options));
	params.conninfo = conninfo;
	log_notice("%s %s starting (host %s, capacity %d, at most %d in flight, %d per tenant)",
			   CELLD_PROGRAM, NADI_VERSION, celld_cfg.host_id, celld_cfg.capacity,
			   celld_cfg.max_in_flight, celld_cfg.max_in_flight_tenant);

	store = store_pq_new(&params, celld_cfg.statement_timeout_ms + 5000, role_check, NULL);
	if (!store)
		return 1;
	r = first_connect();
	if (r == -EPERM)
		return 1;
	if (r < 0)
	{
		log_notice("stopped before the database answered");
		store_pq_free(store);
		return 0;
	}

	celld_conf_cell(&celld_cfg, &chc, &rtc);
	rtc.log = rt_log;
	cell = cellhost_new(store_pq_store(store), &chc, &rtc);
	if (!cell)
	{
		log_error("cannot make the cell host (out of memory, or curl failed)");
		return 1;
	}
	if (ev_io_start(&cell_io, cellhost_fd(cell), EPOLLIN, on_cell_fd, NULL) < 0)
	{
		log_error("cannot watch the cell's descriptor: %m");
		return 1;
	}
	health = (CelldHealth){cell, store, false};
	celld_listen_start(&params, celld_cfg.host_id, on_wake);
	if (celld_http_start(celld_cfg.listen, &health, &port) < 0 ||
		ready_file_write(celld_cfg.ready_file, port) < 0)
		return 1;
	notify_ready("Serving host %s", celld_cfg.host_id);
	log_notice("ready: cell host %s", celld_cfg.host_id);

	for (;;)
	{
		long		  ms = cellhost_run(cell);
		CellHostStats s;

		if (role_refused)
		{
			log_error("the login's role was refused on reconnecting: stopping");
			break;
		}
		if (reload_pending)
		{
			reload_pending = false;
			reload();
		}
		if (stop_signals > 0 && !draining)
		{
			draining = health.draining = true;
			drain_deadline = now_ms() + celld_cfg.drain_timeout_ms;
			cellhost_stop_claiming(cell);
			{
				char msg[512];

				if (*host_register(0, msg, sizeof(msg)))
					log_warning("cannot take the host out of placement: %s", msg);
			}
			cellhost_stats(cell, &s);
			log_notice("draining: %ld commands under way, %ld sessions held (at most %llu ms)",
					   s.in_flight, s.sessions, (unsigned long long) celld_cfg.drain_timeout_ms);
			notify_stopping("Draining");
		}
		if (draining)
		{
			cellhost_stats(cell, &s);
			if (s.in_flight == 0)
				break;
			if (stop_signals > 1 || now_ms() >= drain_deadline)
			{
				log_warning("drain %s: %ld commands still under way are taken back",
							stop_signals > 1 ? "cut short by a second signal" : "timed out",
							s.in_flight);
				break;
			}
		}
		status_update(draining);
		if (ev_run_once(wait_ms(ms, draining)) < 0)
		{
			log_error("epoll: %m");
			break;
		}
		celld_http_run();
	}

	notify_stopping("Stopping");
	{
		CellHostStats s;

		cellhost_stats(cell, &s);
		log_notice("releasing %ld sessions", s.sessions);
	}
	cellhost_release_all(cell);
	celld_http_stop();
	celld_listen_stop();
	ev_io_stop(&cell_io);
	cellhost_free(cell);
	store_pq_free(store);
	ready_file_remove(celld_cfg.ready_file);
	celld_conf_free(&celld_cfg);
	free(conninfo);
	log_notice("stopped");
	return role_refused ? 1 : 0;
}
