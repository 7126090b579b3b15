/*
 * main.c — nadi-sandboxd: configuration, start-up order, signals, the event
 * loop, drain and shutdown, sd_notify.  One thread; everything that waits
 * (HTTP sockets, container pipes, helper processes, the Postgres socket,
 * signals, timers) waits in the one epoll set of daemonlib/evloop.c.
 *
 * First SIGTERM (or SIGINT) drains: stop accepting connections, answer 503
 * on connections still open, let running and queued calls finish, stop the
 * containers, then exit.  A second one stops every container at once and
 * exits.  SIGHUP re-reads the token file.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <jansson.h>

#include "child.h"
#include "daemonlib/listener.h"
#include "daemonlib/notify.h"
#include "access.h"
#include "http.h"
#include "limits.h"
#include "pg.h"
#include "pool.h"
#include "sandbox.h"
#include "btrfs_store.h"
#include "unit.h"

bool		   sbx_draining;
static bool	   quit, forced;
static EvIo	   sig_io;
static EvTimer watchdog_timer, force_timer;

/* Re-evaluate whether a drain is complete; called whenever work finishes. */
void
main_kick(void)
{
	if (!sbx_draining || quit)
		return;
	if (http_pending() == 0 && run_busy() == 0 && run_count() == 0 && child_count() == 0)
	{
		log_notice("drained: no calls, containers or helpers left");
		quit = true;
	}
}

static void
on_force_timeout(EvTimer *t)
{
	(void) t;
	log_warning("containers did not stop in time; exiting anyway");
	quit = true;
}

static void
reload_token(void)
{
	_cleanup_(freep) char *buf = NULL;
	size_t				   len;

	if (!cfg.token_file)
		return;
	if (read_full_file(AT_FDCWD, cfg.token_file, &buf, &len, 4096) < 0)
	{
		log_error("cannot re-read %s: %m; keeping the old token", cfg.token_file);
		return;
	}
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == ' ' || buf[len - 1] == '\r'))
		buf[--len] = '\0';
	if (len < 16)
	{
		log_error("token in %s is shorter than 16 bytes; keeping the old token", cfg.token_file);
		return;
	}
	free(cfg.token);
	cfg.token = buf;
	cfg.token_len = len;
	buf = NULL;
	log_notice("token reloaded from %s", cfg.token_file);
}

static void
on_signal(EvIo *io, uint32_t revents)
{
	struct signalfd_siginfo si;
	(void) revents;

	while (read(io->fd, &si, sizeof si) == sizeof si)
	{
		if (si.ssi_signo == SIGHUP)
		{
			reload_token();
			continue;
		}
		if (!sbx_draining)
		{
			log_notice("%s: draining (send it again to stop at once)",
					   strsignal((int) si.ssi_signo));
			sbx_draining = true;
			pool_done(); /* no more entries; those there stop with the rest */
			notify_stopping("Draining");
			http_quiesce();
			run_stop_all(false);
			main_kick();
		}
		else if (!forced)
		{
			log_notice("%s again: stopping every container now", strsignal((int) si.ssi_signo));
			forced = true;
			run_stop_all(true);
			child_kill_all();
			ev_timer_arm(&force_timer, 5000, on_force_timeout, NULL);
			if (run_count() == 0 && child_count() == 0)
				quit = true;
		}
	}
}

static void
on_watchdog(EvTimer *t)
{
	int next = notify_watchdog_tick(now_ms());
	(void) t;

	if (next >= 0)
		ev_timer_arm(&watchdog_timer, next > 0 ? (uint64_t) next : 1, on_watchdog, NULL);
}

static int
setup_signals(void)
{
	sigset_t mask;
	int		 fd, r;

	r = signals_block(&mask);
	if (r < 0)
		return r;
	fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (fd < 0)
		return -errno;
	return ev_io_start(&sig_io, fd, EPOLLIN, on_signal, NULL);
}

static int
check_labels(void)
{
	json_error_t err;
	json_t		*j = json_loads(cfg.labels, 0, &err);
	bool		 ok = json_is_object(j);

	json_decref(j);
	if (!ok)
	{
		log_error("labels must be a JSON object, not \"%s\"", cfg.labels);
		return -EINVAL;
	}
	return 0;
}

/*
 * After http_init(): the port is the one bound (listen_tcp may say 0).  An
 * advertise address ending in ":0" ("http://127.0.0.1:0") gets that port too.
 */
static void
default_advertise(void)
{
	size_t n = cfg.advertise ? strlen(cfg.advertise) : 0;

	if (n > 2 && strcmp(cfg.advertise + n - 2, ":0") == 0 && http_tcp_port())
	{
		char *a = xasprintf("%.*s:%u", (int) (n - 2), cfg.advertise, (unsigned) http_tcp_port());
		if (a)
		{
			free(cfg.advertise);
			cfg.advertise = a;
		}
	}
	if (cfg.advertise)
		return;
	if (cfg.listen_tcp)
	{
		const char *colon = strrchr(cfg.listen_tcp, ':');
		cfg.advertise = xasprintf("%.*s:%u", colon ? (int) (colon - cfg.listen_tcp) : 9,
								  colon ? cfg.listen_tcp : "127.0.0.1", (unsigned) http_tcp_port());
	}
	else
		cfg.advertise = xasprintf("unix:%s", cfg.listen_unix);
}

int
main(int argc, char **argv)
{
	int r;

	log_ident = "nadi-sandboxd";
	r = config_parse_args(argc, argv);
	if (r < 0)
		return 2;
	r = config_finish();
	if (r < 0 || check_labels() < 0)
		return 2;
	if (geteuid() != 0)
		log_warning("not running as root: snapshots, mounts and containers will likely fail");

	r = ev_init();
	if (r >= 0)
		r = setup_signals();
	if (r < 0)
	{
		errno = -r;
		log_error("cannot set up the event loop: %m");
		return 1;
	}
	log_notice("nadi-sandboxd %s starting (state %s, images %s)", NADI_VERSION, cfg.state_dir,
			   cfg.image_dir);

	r = store_init();
	if (r < 0)
		goto fail;
	r = limits_init();
	if (r < 0)
		goto fail;
	r = sandbox_init();
	if (r < 0)
	{
		errno = -r;
		log_error("cannot recover sandboxes: %m");
		goto fail;
	}
	r = http_init();
	if (r < 0)
		goto fail;
	default_advertise();
	r = ready_file_write(cfg.ready_file, http_tcp_port());
	if (r < 0)
		goto fail;
	access_init();
	pg_init();
	r = pool_init();
	if (r < 0)
		goto fail;

	notify_ready("Serving %zu sandboxes (limits: %s)", sandbox_count(),
				 limit_mode_name(limits_mode()));
	if (notify_watchdog_interval_ms() > 0)
		ev_timer_arm(&watchdog_timer, notify_watchdog_interval_ms(), on_watchdog, NULL);
	log_notice("ready");

	while (!quit)
	{
		r = ev_run_once(http_timeout_ms());
		if (r < 0)
		{
			errno = -r;
			log_error("event loop: %m");
			break;
		}
		http_run();
	}

	notify_stopping("Stopping");
	/* Forced or after a drain: anything left now goes. */
	run_stop_all(true);
	child_kill_all();
	for (uint64_t until = now_ms() + 3000; (run_count() || child_count()) && now_ms() < until;)
		ev_run_once(100);
	pool_done();
	http_done();
	pg_done();
	access_done();
	if (run_count() == 0)
		limits_done();
	unit_done();
	store_done(run_count() == 0);
	sandbox_free_all();
	ev_done();
	ready_file_remove(cfg.ready_file);
	log_notice("stopped");
	return r < 0 ? 1 : 0;

fail:
	http_done();
	store_done(true);
	log_error("start-up failed");
	return 1;
}
