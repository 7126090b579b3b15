/*
 * main.c — nadi-gitd: configuration, start-up order, signals, shutdown,
 * sd_notify.  The main thread only waits for signals (and sends the
 * watchdog's pings between them); HTTP connections have their threads
 * (http.c), background fetches theirs (sched.c).
 *
 * SIGTERM or SIGINT: stop accepting connections, stop the running git
 * processes (SIGTERM, SIGKILL after a grace period), answer what is still
 * waiting, exit 0.  SIGHUP re-reads the token file.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "daemonlib/listener.h"
#include "daemonlib/notify.h"
#include "gitd.h"
#include "http.h"

int
main(int argc, char **argv)
{
	sigset_t mask;
	int		 r, sig = 0;

	log_ident = "nadi-gitd";
	/* Mirrors must be readable by every sandbox user: dirs 0755, files 0644. */
	umask(022);
	r = config_parse_args(argc, argv);
	if (r < 0)
		return 2;
	r = config_finish();
	if (r < 0)
		return 2;

	/* Before any thread exists, so that every thread inherits the mask. */
	signals_block(&mask);

	log_notice("nadi-gitd %s starting (mirrors in %s)", NADI_VERSION, cfg.mirror_dir);
	r = repo_init();
	if (r < 0)
	{
		log_error("start-up failed");
		return 1;
	}
	r = http_init();
	if (r >= 0)
		r = sched_start();
	if (r < 0)
	{
		errno = -r;
		log_error("start-up failed: %m");
		atomic_store(&gitd_stopping, true);
		git_stop_all(SIGKILL);
		sched_stop();
		http_done();
		return 1;
	}
	if (ready_file_write(cfg.ready_file, http_tcp_port()) < 0)
	{
		atomic_store(&gitd_stopping, true);
		git_stop_all(SIGKILL);
		sched_stop();
		http_done();
		return 1;
	}
	notify_ready("Mirroring %zu repositories", repo_count());
	log_notice("ready: %zu repositories", repo_count());

	for (;;)
	{
		siginfo_t si;
		int		  ping_ms = notify_watchdog_tick(now_ms());

		if (ping_ms < 0)
			sig = sigwaitinfo(&mask, &si);
		else
			sig = sigtimedwait(&mask, &si,
							   &(struct timespec){ping_ms / 1000, (ping_ms % 1000) * 1000000L});
		if (sig < 0)
			continue; /* EINTR, or time for the next watchdog ping */
		if (sig == SIGHUP)
		{
			if (config_reload_token() == 0 && cfg.token_file)
				log_notice("token reloaded from %s", cfg.token_file);
			continue;
		}
		break;
	}

	log_notice("%s: stopping", strsignal(sig));
	notify_stopping("Stopping");
	atomic_store(&gitd_stopping, true);
	http_quiesce();
	git_stop_all(SIGTERM);
	sched_stop(); /* workers end when their git has */
	http_done();  /* handlers too: their fetches are ending the same way */
	repo_done();
	ready_file_remove(cfg.ready_file);
	log_notice("stopped");
	return 0;
}
