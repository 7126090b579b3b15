/*
 * main.c — nadi-edge: configuration (flags, then NADI_EDGE_* environment),
 * start-up, the event loop, signals and shutdown.
 *
 * Shutdown: the first SIGTERM (or SIGINT) drains — stop accepting, tell
 * systemd STOPPING=1, end every stream (clients resume elsewhere from their
 * last event id), finish requests in flight — and exits when nothing is
 * left or after --drain-timeout.  A second signal exits at once.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "daemonlib/log.h"
#include "edge.h"

EdgeConfig	edge_cfg = {
	.listen_addr = "127.0.0.1",
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
};

volatile bool edge_draining;

static bool journal;
static EdgeWatch sig_watch;
static EdgeTimer tick_timer;
static int	signals_seen;
static uint64_t drain_deadline_ms;
static uint64_t watchdog_usec;
static uint64_t watchdog_last_ms;

void
edge_log(int level, const char *fmt,...)
{
	static const char *const names[8] = {"", "", "", "error", "warning", "", "info", "debug"};
	char		line[1024];
	va_list		ap;

	if (level >= LOG_D && !edge_cfg.verbose)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (journal)
		fprintf(stderr, "<%d>%s\n", level, line);
	else
		fprintf(stderr, "nadi-edge: %s: %s\n", names[level & 7], line);
}

void
edge_notify(const char *state)
{
	(void) sd_notify(0, state);
}

static void
usage(FILE *f)
{
	fprintf(f,
			"Usage: nadi-edge [options]\n"
			"The stateless HTTP front of Nadi: REST, Server-Sent Events and ACP.\n\n"
			"  --listen ADDR              address to listen on (127.0.0.1)\n"
			"  --port N                   port (8080; 0: any free one, see --ready-file)\n"
			"  --ready-file PATH          once serving, write the bound port to PATH\n"
			"  --db CONNINFO              libpq connection string (libpq's PG* variables)\n"
			"  --pool N                   database connections for requests (4)\n"
			"  --queue N                  requests waiting for a connection (4096)\n"
			"  --max-connections N        HTTP connections in total (16384)\n"
			"  --max-connections-per-ip N (512)\n"
			"  --max-streams N            SSE streams (10000)\n"
			"  --max-acp N                ACP connections (1000)\n"
			"  --max-streams-per-tenant N streams one tenant may hold (1000)\n"
			"  --max-acp-per-tenant N     ACP connections one tenant may hold (100)\n"
			"  --max-acp-sessions N       sessions loaded on one ACP connection (64)\n"
			"  --body-limit BYTES         largest request body (1048576)\n"
			"  --json-depth N             deepest JSON nesting accepted (64)\n"
			"  --header-timeout S         time to send request headers (10)\n"
			"  --body-timeout S           time to send a request body (30)\n"
			"  --idle-timeout S           idle connection timeout (60)\n"
			"  --heartbeat S              SSE / WebSocket keep-alive interval (15)\n"
			"  --stream-buffer BYTES      output buffer per stream (262144)\n"
			"  --jwks-refresh S           signing key reload interval (60)\n"
			"  --drain-timeout S          longest graceful shutdown (10)\n"
			"  --dev-no-auth              DEVELOPMENT ONLY: requests without a token\n"
			"                             run with the edge's own database role\n"
			"  --verbose                  debug logging\n"
			"Each option can also be set as NADI_EDGE_<NAME> (e.g. NADI_EDGE_PORT=8080).\n");
}

typedef struct IntOpt
{
	const char *name;
	int		   *ip;
	size_t	   *zp;
	long long	min, max;
} IntOpt;

static const IntOpt int_opts[] = {
	{"port", &edge_cfg.port, NULL, 0, 65535},
	{"pool", &edge_cfg.pool_size, NULL, 1, 256},
	{"queue", &edge_cfg.queue_max, NULL, 1, 1000000},
	{"max-connections", &edge_cfg.max_conns, NULL, 16, 1000000},
	{"max-connections-per-ip", &edge_cfg.max_conns_per_ip, NULL, 1, 1000000},
	{"max-streams", &edge_cfg.max_streams, NULL, 0, 1000000},
	{"max-acp", &edge_cfg.max_acp, NULL, 0, 100000},
	{"body-limit", NULL, &edge_cfg.body_limit, 1024, 256LL * 1024 * 1024},
	{"json-depth", &edge_cfg.json_depth, NULL, 2, 1000},
	{"header-timeout", &edge_cfg.header_timeout_s, NULL, 1, 3600},
	{"body-timeout", &edge_cfg.body_timeout_s, NULL, 1, 3600},
	{"idle-timeout", &edge_cfg.idle_timeout_s, NULL, 1, 86400},
	{"heartbeat", &edge_cfg.heartbeat_s, NULL, 1, 3600},
	{"stream-buffer", NULL, &edge_cfg.stream_buffer, 4096, 64LL * 1024 * 1024},
	{"jwks-refresh", &edge_cfg.jwks_refresh_s, NULL, 1, 86400},
	{"drain-timeout", &edge_cfg.drain_timeout_s, NULL, 0, 3600},
	{"queue-timeout", &edge_cfg.queue_timeout_s, NULL, 1, 3600},
	{"acp-idle", &edge_cfg.acp_idle_s, NULL, 1, 86400},
	{"max-streams-per-tenant", &edge_cfg.max_streams_per_tenant, NULL, 0, 1000000},
	{"max-acp-per-tenant", &edge_cfg.max_acp_per_tenant, NULL, 0, 100000},
	{"max-acp-sessions", &edge_cfg.max_acp_sessions, NULL, 1, 256},
};

static int
set_option(const char *name, const char *value)
{
	int64_t		v;

	if (strcmp(name, "listen") == 0)
		edge_cfg.listen_addr = value;
	else if (strcmp(name, "ready-file") == 0)
		edge_cfg.ready_file = value;
	else if (strcmp(name, "db") == 0)
		edge_cfg.conninfo = value;
	else if (strcmp(name, "dev-no-auth") == 0)
		edge_cfg.dev_no_auth = value == NULL || strcmp(value, "1") == 0 || strcmp(value, "true") == 0;
	else if (strcmp(name, "verbose") == 0)
		edge_cfg.verbose = value == NULL || strcmp(value, "0") != 0;
	else
	{
		for (size_t i = 0; i < sizeof(int_opts) / sizeof(int_opts[0]); i++)
		{
			const IntOpt *o = &int_opts[i];

			if (strcmp(name, o->name) != 0)
				continue;
			if (!edge_parse_int64(value, o->min, o->max, &v))
			{
				fprintf(stderr, "nadi-edge: --%s must be an integer from %lld to %lld\n",
						name, o->min, o->max);
				return -EINVAL;
			}
			if (o->ip)
				*o->ip = (int) v;
			else
				*o->zp = (size_t) v;
			return 0;
		}
		fprintf(stderr, "nadi-edge: unknown option --%s\n", name);
		return -EINVAL;
	}
	return 0;
}

/* NADI_EDGE_MAX_STREAMS=... for --max-streams, and so on. */
static int
config_env(void)
{
	static const char *const names[] = {"listen", "db", "dev-no-auth", "verbose", "ready-file", NULL};
	char		var[64];

	for (size_t i = 0; i < sizeof(int_opts) / sizeof(int_opts[0]) + 5; i++)
	{
		const char *name = i < 5 ? names[i] : int_opts[i - 5].name;
		const char *v;
		size_t		j;

		snprintf(var, sizeof(var), "NADI_EDGE_%s", name);
		for (j = 10; var[j]; j++)
			var[j] = var[j] == '-' ? '_' : (char) (var[j] >= 'a' && var[j] <= 'z' ? var[j] - 32 : var[j]);
		v = getenv(var);
		if (v && *v && set_option(name, v) < 0)
			return -EINVAL;
	}
	return 0;
}

static int
config_args(int argc, char **argv)
{
	struct option opts[sizeof(int_opts) / sizeof(int_opts[0]) + 9];
	size_t		n = 0;
	int			c;
	int			idx;

	opts[n++] = (struct option) {"listen", required_argument, NULL, 0};
	opts[n++] = (struct option) {"ready-file", required_argument, NULL, 0};
	opts[n++] = (struct option) {"db", required_argument, NULL, 0};
	opts[n++] = (struct option) {"dev-no-auth", no_argument, NULL, 0};
	opts[n++] = (struct option) {"verbose", no_argument, NULL, 0};
	opts[n++] = (struct option) {"help", no_argument, NULL, 'h'};
	opts[n++] = (struct option) {"version", no_argument, NULL, 'V'};
	for (size_t i = 0; i < sizeof(int_opts) / sizeof(int_opts[0]); i++)
		opts[n++] = (struct option) {int_opts[i].name, required_argument, NULL, 0};
	opts[n] = (struct option) {NULL, 0, NULL, 0};

	while ((c = getopt_long(argc, argv, "hV", opts, &idx)) != -1)
	{
		if (c == 'h')
		{
			usage(stdout);
			exit(0);
		}
		if (c == 'V')
		{
			printf("nadi-edge %s (extension nadi %s)\n", NADI_VERSION, NADI_EXT_VERSION);
			exit(0);
		}
		if (c != 0 || set_option(opts[idx].name, optarg) < 0)
		{
			usage(stderr);
			return -EINVAL;
		}
	}
	if (optind < argc)
	{
		fprintf(stderr, "nadi-edge: unexpected argument \"%s\"\n", argv[optind]);
		return -EINVAL;
	}
	return 0;
}

/*
 * --ready-file: the bound port and a newline, through a temporary file
 * beside it renamed into place, so a reader sees the whole port or no file.
 */
static int
ready_file_write(void)
{
	char		tmp[4096];
	FILE	   *f;

	if (edge_cfg.ready_file == NULL)
		return 0;
	if (snprintf(tmp, sizeof(tmp), "%s.tmp%d", edge_cfg.ready_file, (int) getpid()) >= (int) sizeof(tmp))
	{
		edge_log(LOG_E, "--ready-file: the path is too long");
		return -ENAMETOOLONG;
	}
	f = fopen(tmp, "we");
	if (f == NULL || fprintf(f, "%d\n", edge_cfg.port) < 0 || fflush(f) != 0 || fsync(fileno(f)) < 0 ||
		fclose(f) != 0 || rename(tmp, edge_cfg.ready_file) < 0)
	{
		edge_log(LOG_E, "could not write the ready file %s: %m", edge_cfg.ready_file);
		(void) unlink(tmp);
		return -EIO;
	}
	return 0;
}

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
	edge_notify("STOPPING=1");
	edge_log(LOG_I, "draining: no new connections; streams end, clients resume elsewhere");
	drain_deadline_ms = loop_now_ms() + (uint64_t) edge_cfg.drain_timeout_s * 1000;
	http_quiesce();
	sse_drain();
	acp_http_drain();
	ws_drain();
}

static void
signal_io(EdgeWatch *w, uint32_t events EDGE_UNUSED)
{
	struct signalfd_siginfo si;

	while (read(w->fd, &si, sizeof(si)) == sizeof(si))
	{
		if (si.ssi_signo == SIGHUP)
		{
			edge_log(LOG_I, "SIGHUP: reloading the signing keys");
			auth_reload();
			continue;
		}
		if (++signals_seen == 1)
			drain_start();
		else
		{
			edge_log(LOG_I, "second signal: exiting now");
			drain_deadline_ms = 1;
		}
	}
}

static void
tick(EdgeTimer *t)
{
	http_tick();
	db_tick();
	auth_tick();
	sse_tick();
	acp_http_tick();
	ws_tick();
	if (watchdog_usec && loop_now_ms() - watchdog_last_ms >= watchdog_usec / 2000)
	{
		edge_notify("WATCHDOG=1");
		watchdog_last_ms = loop_now_ms();
	}
	loop_timer_arm(t, 1000, tick, NULL);
}

int
main(int argc, char **argv)
{
	sigset_t	mask;
	int			sfd;
	int			wait_ms = 0;

	journal = getenv("JOURNAL_STREAM") != NULL;
	log_ident = "nadi-edge";	/* daemonlib's log: the database's notices */
	setvbuf(stderr, NULL, _IOLBF, 0);
	if (config_env() < 0 || config_args(argc, argv) < 0)
		return 2;
	if (edge_cfg.dev_no_auth)
		edge_log(LOG_W, "--dev-no-auth: requests without a token run with the edge's database "
				 "role; never use this outside development");
	raise_fd_limit();
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sfd < 0 || loop_init() < 0 || loop_watch(&sig_watch, sfd, EPOLLIN, signal_io, NULL) < 0)
	{
		edge_log(LOG_E, "could not set up the event loop: %m");
		return 1;
	}
	db_listen_handlers(feed_on_notify, feed_on_listen_up);
	if (db_init() < 0 || auth_init() < 0 || http_start() < 0 || ready_file_write() < 0)
		return 1;
	if (sd_watchdog_enabled(0, &watchdog_usec) <= 0)
		watchdog_usec = 0;
	loop_timer_arm(&tick_timer, 1000, tick, NULL);
	edge_notify("READY=1\nSTATUS=serving");

	for (;;)
	{
		if (loop_run_once(wait_ms) < 0)
		{
			edge_log(LOG_E, "event loop failed: %m");
			break;
		}
		wait_ms = http_run();
		if (edge_draining)
		{
			if (drain_deadline_ms && loop_now_ms() >= drain_deadline_ms)
				break;
			if (http_active() == 0 && ws_count() == 0)
				break;
			if (wait_ms > 100)
				wait_ms = 100;
		}
	}
	edge_log(LOG_I, "stopped");
	if (edge_cfg.ready_file)
		(void) unlink(edge_cfg.ready_file);
	http_stop();
	db_shutdown();
	return 0;
}
