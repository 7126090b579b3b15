/*
 * main.c — nadi-edge: configuration (daemonlib/conf.h: flags, NADI_EDGE_*
 * environment, a config file), start-up, the event loop, signals and
 * shutdown.
 *
 * Shutdown: the first SIGTERM (or SIGINT) drains — stop accepting, tell
 * systemd STOPPING=1, end every stream (clients resume elsewhere from their
 * last event id), finish requests in flight — and exits when nothing is
 * left or after --drain-timeout.  A second signal exits at once.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "daemonlib/listener.h"
#include "daemonlib/log.h"
#include "edge.h"
#include "daemonlib/conf.h"
#include "daemonlib/notify.h"

EdgeConfig edge_cfg = {
	.port = 8080,
	.pool_size = 4,
	.queue_max = 4096,
	.queue_timeout_s = 5,
	.max_conns = 16384,
	.max_conns_per_ip = 512,
	.max_streams = 10000,
	.max_acp = 1000,
	.max_streams_per_tenant = 1000,
	.max_acp_per_tenant = 100,
	.max_acp_sessions = 64,
	.body_limit = 1024 * 1024,
	.json_depth = 64,
	.header_timeout_s = 10,
	.body_timeout_s = 30,
	.idle_timeout_s = 60,
	.heartbeat_s = 15,
	.stream_buffer = 256 * 1024,
	.jwks_refresh_s = 60,
	.drain_timeout_s = 10,
	.acp_idle_s = 300,
	.db_metrics_interval_s = 10,
	.files_max_bytes = 64 * 1024 * 1024,
	.files_buffer = 256 * 1024,
	.max_transfers = 256,
	.max_transfers_per_tenant = 16,
};

volatile bool edge_draining;

static EvIo		sig_watch;
static EvTimer	tick_timer;
static int		signals_seen;
static uint64_t drain_deadline_ms;

/* --verbose: --log-level=debug, and a few info lines more (bearer.c). */
static int
set_verbose(const char *value, bool from_flag EDGE_UNUSED)
{
	bool on;

	if (parse_bool(value, &on) < 0)
		return -EINVAL;
	edge_cfg.verbose = on;
	if (on)
		log_max_level = LOG_LEVEL_DEBUG;
	return 0;
}

#define E(f) offsetof(EdgeConfig, f)
static const struct conf_key edge_keys[] = {
	{"listen", CONF_STR, E(listen_addr), "IPv4 or IPv6 address to listen on (default 127.0.0.1)"},
	{"port", CONF_INT, E(port), "port (default 8080; 0: any free one, see --ready-file)", 0, NULL,
	 0, 65535},
	{"ready_file", CONF_STR, E(ready_file), "once serving, write the bound port to this file"},
	{"db", CONF_STR, E(conninfo), "libpq connection string (libpq's PG* variables apply too)"},
	{"pool", CONF_INT, E(pool_size), "database connections for requests (default 4)", 0, NULL, 1,
	 256},
	{"queue", CONF_INT, E(queue_max), "requests waiting for a connection (default 4096)", 0, NULL,
	 1, 1000000},
	{"queue_timeout", CONF_INT, E(queue_timeout_s),
	 "seconds a request waits for a connection (default 5)", 0, NULL, 1, 3600},
	{"max_connections", CONF_INT, E(max_conns), "HTTP connections in total (default 16384)", 0,
	 NULL, 16, 1000000},
	{"max_connections_per_ip", CONF_INT, E(max_conns_per_ip),
	 "HTTP connections from one address (default 512)", 0, NULL, 1, 1000000},
	{"max_streams", CONF_INT, E(max_streams), "SSE streams (default 10000)", 0, NULL, 0, 1000000},
	{"max_acp", CONF_INT, E(max_acp), "ACP connections (default 1000)", 0, NULL, 0, 100000},
	{"max_streams_per_tenant", CONF_INT, E(max_streams_per_tenant),
	 "streams one tenant may hold (default 1000)", 0, NULL, 0, 1000000},
	{"max_acp_per_tenant", CONF_INT, E(max_acp_per_tenant),
	 "ACP connections one tenant may hold (default 100)", 0, NULL, 0, 100000},
	{"max_acp_sessions", CONF_INT, E(max_acp_sessions),
	 "sessions loaded on one ACP connection (default 64)", 0, NULL, 1, 256},
	{"body_limit", CONF_SIZE, E(body_limit), "largest request body (default 1M)", 0, NULL, 1024,
	 256LL << 20},
	{"json_depth", CONF_INT, E(json_depth), "deepest JSON nesting accepted (default 64)", 0, NULL,
	 2, 1000},
	{"header_timeout", CONF_INT, E(header_timeout_s),
	 "seconds to send the request headers (default 10)", 0, NULL, 1, 3600},
	{"body_timeout", CONF_INT, E(body_timeout_s), "seconds to send a request body (default 30)", 0,
	 NULL, 1, 3600},
	{"idle_timeout", CONF_INT, E(idle_timeout_s),
	 "seconds before an idle connection is closed (default 60)", 0, NULL, 1, 86400},
	{"heartbeat", CONF_INT, E(heartbeat_s),
	 "seconds between SSE / WebSocket keep-alives (default 15)", 0, NULL, 1, 3600},
	{"stream_buffer", CONF_SIZE, E(stream_buffer), "output buffer per stream (default 256K)", 0,
	 NULL, 4096, 64LL << 20},
	{"jwks_refresh", CONF_INT, E(jwks_refresh_s),
	 "seconds between signing key reloads (default 60)", 0, NULL, 1, 86400},
	{"drain_timeout", CONF_INT, E(drain_timeout_s),
	 "longest graceful shutdown in seconds (default 10)", 0, NULL, 0, 3600},
	{"acp_idle", CONF_INT, E(acp_idle_s),
	 "seconds an HTTP ACP connection without a stream lives (default 300)", 0, NULL, 1, 86400},
	{"dev_no_auth", CONF_BOOL, E(dev_no_auth),
	 "DEVELOPMENT ONLY: requests without a token run with the edge's own database role"},
	{"cors_origins", CONF_FUNC, 0,
	 "origins (scheme://host[:port]) whose pages may call the API (repeatable; default none)",
	 CONF_LIST, console_cors_add},
	{"verbose", CONF_FUNC, 0, "debug logging (--log-level=debug)", CONF_SWITCH, set_verbose},
	{"export_db_metrics", CONF_BOOL, E(export_db_metrics),
	 "export the database-wide nadi_db_* metrics (on one edge only; its role needs nadi_monitor)"},
	{"db_metrics_interval", CONF_INT, E(db_metrics_interval_s),
	 "seconds between reads of the nadi.stat_* views for export_db_metrics (default 10)", 0, NULL,
	 1, 3600},
	{"files_max_bytes", CONF_SIZE, E(files_max_bytes),
	 "largest file PUT /v1/sessions/{id}/files/{path} takes (default 64M; at most the sandbox "
	 "hosts' max_file_bytes)",
	 0, NULL, 1, 1LL << 40},
	{"files_buffer", CONF_SIZE, E(files_buffer),
	 "bytes a file transfer buffers each way (default 256K)", 0, NULL, 4096, 64LL << 20},
	{"max_transfers", CONF_INT, E(max_transfers), "file transfers at once (default 256)", 0, NULL,
	 0, 1000000},
	{"max_transfers_per_tenant", CONF_INT, E(max_transfers_per_tenant),
	 "file transfers one tenant may run at once (default 16)", 0, NULL, 0, 1000000},
	{"files_image", CONF_STR, E(files_image),
	 "image of the sandbox a file PUT makes for a session without one (default: the database's "
	 "nadi.sandbox_image, as the embedded cells)"},
	CONF_KEY_LOG_LEVEL,
};
#undef E

static const struct conf_spec edge_conf =
	CONF_SPEC("nadi-edge", "The stateless HTTP front of Nadi: REST, Server-Sent Events and ACP.\n",
			  edge_cfg, edge_keys);

/* Streams hold a socket each: take every descriptor the hard limit allows. */
static void
raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max)
	{
		rl.rlim_cur = rl.rlim_max;
		(void) setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static void
drain_start(void)
{
	edge_draining = true;
	notify_stopping("draining");
	log_info("draining: no new connections; streams end, clients resume elsewhere");
	drain_deadline_ms = ev_now_ms() + (uint64_t) edge_cfg.drain_timeout_s * 1000;
	http_quiesce();
	sse_drain();
	acp_http_drain();
	ws_drain();
}

static void
signal_io(EvIo *w, uint32_t events EDGE_UNUSED)
{
	struct signalfd_siginfo si;

	while (read(w->fd, &si, sizeof(si)) == sizeof(si))
	{
		if (si.ssi_signo == SIGHUP)
		{
			log_info("SIGHUP: reloading the signing keys");
			auth_reload();
			continue;
		}
		if (++signals_seen == 1)
			drain_start();
		else
		{
			log_info("second signal: exiting now");
			drain_deadline_ms = 1;
		}
	}
}

static void
tick(EvTimer *t)
{
	http_tick();
	db_tick();
	auth_tick();
	sse_tick();
	acp_http_tick();
	ws_tick();
	operator_tick();
	(void) notify_watchdog_tick(now_ms());
	ev_timer_arm(t, 1000, tick, NULL);
}

int
main(int argc, char **argv)
{
	sigset_t mask;
	int		 sfd;
	int		 wait_ms = 0;

	log_ident = "nadi-edge"; /* daemonlib's lines: access log, listener */
	if (conf_parse_args(&edge_conf, argc, argv) < 0)
		return 2;
	if (edge_cfg.listen_addr == NULL && (edge_cfg.listen_addr = strdup("127.0.0.1")) == NULL)
		return 1;
	if (edge_cfg.dev_no_auth)
		log_warning("--dev-no-auth: requests without a token run with the edge's database "
					"role; never use this outside development");
	raise_fd_limit();
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sfd < 0 || ev_init() < 0 || ev_io_start(&sig_watch, sfd, EPOLLIN, signal_io, NULL) < 0)
	{
		log_error("could not set up the event loop: %m");
		return 1;
	}
	db_listen_handlers(feed_on_notify, feed_on_listen_up);
	if (db_init() < 0 || auth_init() < 0 || files_init() < 0 || http_start() < 0 ||
		ready_file_write(edge_cfg.ready_file, (uint16_t) edge_cfg.port) < 0)
		return 1;
	ev_timer_arm(&tick_timer, 1000, tick, NULL);
	notify_ready("serving");

	for (;;)
	{
		if (ev_run_once(wait_ms) < 0)
		{
			log_error("event loop failed: %m");
			break;
		}
		wait_ms = http_run();
		if (edge_draining)
		{
			if (drain_deadline_ms && ev_now_ms() >= drain_deadline_ms)
				break;
			if (http_active() == 0 && ws_count() == 0)
				break;
			if (wait_ms > 100)
				wait_ms = 100;
		}
	}
	log_info("stopped");
	ready_file_remove(edge_cfg.ready_file);
	http_stop();
	files_shutdown();
	db_shutdown();
	operator_shutdown();
	return 0;
}
