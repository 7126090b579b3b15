/*
 * main.c — nadi-credproxy: configuration, start-up order, the main event
 * loop, signals, shutdown, sd_notify.  The main thread owns one epoll set
 * with the signals (signalfd), the sandbox directory's inotify watch and
 * every listening socket; connections run on libmicrohttpd's threads.
 *
 * SIGHUP re-reads the upstreams' secrets.  The first SIGTERM (or SIGINT)
 * drains: the listeners close, new requests on open connections get 503
 * "draining", and the daemon exits once the running exchanges ended or
 * drain_timeout passed; a second one exits at once (running exchanges are
 * cut and recorded with error "shutdown").
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/stat.h>

#include "credproxy.h"
#include "fwd.h"
#include "http.h"
#include "listen.h"
#include "daemonlib/listener.h"
#include "daemonlib/notify.h"
#include "pg.h"

atomic_bool cp_draining;
atomic_bool cp_stopping;

#define SWEEP_MS 5000 /* how often idle upstream connections are looked at */

static struct watch signal_w = {.fd = -1, .late = true};
static int			stop_requests;

static void
on_signal(struct watch *w, uint32_t events)
{
	struct signalfd_siginfo si;
	(void) events;

	while (read(w->fd, &si, sizeof si) == (ssize_t) sizeof si)
	{
		if (si.ssi_signo == SIGHUP)
		{
			notify_reloading();
			if (config_reload_secrets() == 0)
				log_notice("SIGHUP: upstream secrets re-read");
			else
				log_error("SIGHUP: some secrets could not be re-read; those upstreams keep their "
						  "old ones");
			notify_ready("Serving %zu upstreams, %u sandboxes", cfg.n_upstreams,
						 listen_sandbox_count());
			continue;
		}
		stop_requests++;
		if (stop_requests == 1)
		{
			log_notice("%s: draining (%u requests running)", strsignal((int) si.ssi_signo),
					   http_active_requests());
			notify_stopping("Draining");
			atomic_store(&cp_draining, true);
			listen_stop();
		}
		else
			log_notice("%s again: stopping now", strsignal((int) si.ssi_signo));
	}
}

int
main(int argc, char **argv)
{
	struct epoll_event evs[32];
	uint64_t		   deadline = 0, last_sweep = now_ms();
	sigset_t		   mask;
	int				   epfd, r;

	log_ident = "nadi-credproxy";
	umask(022);
	if (config_parse_args(argc, argv) < 0 || config_finish() < 0)
		return 2;

	/* Before any thread exists, so that every thread inherits the mask. */
	signals_block(&mask);

	log_notice("nadi-credproxy %s starting (proxy id %s, %zu upstreams)", NADI_VERSION,
			   cfg.proxy_id, cfg.n_upstreams);
	epfd = epoll_create1(EPOLL_CLOEXEC);
	signal_w.fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	signal_w.cb = on_signal;
	if (epfd < 0 || signal_w.fd < 0)
	{
		log_error("epoll/signalfd: %m");
		return 1;
	}
	{
		struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &signal_w};
		epoll_ctl(epfd, EPOLL_CTL_ADD, signal_w.fd, &ev);
	}
	r = fwd_global_init();
	if (r >= 0)
		r = pg_init();
	if (r >= 0)
		r = http_start();
	if (r >= 0)
		r = listen_init(epfd);
	if (r >= 0)
		r = ready_file_write(cfg.ready_file, listen_tcp_port());
	if (r < 0)
	{
		log_error("start-up failed");
		listen_stop();
		http_stop();
		return 1;
	}
	notify_ready("Serving %zu upstreams, %u sandboxes", cfg.n_upstreams, listen_sandbox_count());
	log_notice("ready");

	while (stop_requests < 2)
	{
		int timeout = SWEEP_MS, n, ping_ms = notify_watchdog_tick(now_ms());

		if (stop_requests == 1)
		{
			if (!deadline)
				deadline = now_ms() + cfg.drain_timeout_ms;
			if (http_active_requests() == 0)
				break;
			if (now_ms() >= deadline)
			{
				log_warning("drain timeout: %u requests still running are cut",
							http_active_requests());
				break;
			}
			timeout = 100;
		}
		if (ping_ms >= 0 && ping_ms < timeout)
			timeout = ping_ms;
		n = epoll_wait(epfd, evs, (int) ARRAY_SIZE(evs), timeout);
		if (n < 0 && errno != EINTR)
		{
			log_error("epoll_wait: %m");
			break;
		}
		if (now_ms() - last_sweep >= SWEEP_MS)
		{
			fwd_sweep();
			last_sweep = now_ms();
		}
		/* Accepting first: a late watch may close (and free) listeners of this batch. */
		for (int pass = 0; pass < 2; pass++)
			for (int i = 0; i < n; i++)
			{
				struct watch *w = evs[i].data.ptr;
				if (w->late == (pass == 1))
					w->cb(w, evs[i].events);
			}
	}

	notify_stopping("Stopping");
	atomic_store(&cp_draining, true);
	atomic_store(&cp_stopping, true);
	listen_stop();
	http_stop(); /* joins the connection threads; each records its end */
	pg_done();
	fwd_global_done();
	ready_file_remove(cfg.ready_file);
	log_notice("stopped");
	return 0;
}
