/*
 * notify.c — see notify.h.  sd_notify() when the daemon is built with
 * libsystemd; the watchdog interval is read once, at the first call.
 */
#include <stdarg.h>
#include <stdio.h>

#ifdef HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "notify.h"

static uint64_t last_ping_ms;

static void
send_state(const char *state)
{
#ifdef HAVE_SYSTEMD
	(void) sd_notify(0, state);
#else
	(void) state;
#endif
}

void
notify_ready(const char *fmt, ...)
{
	char	state[600];
	int		n = snprintf(state, sizeof state, "READY=1\nSTATUS=");
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(state + n, sizeof state - (size_t) n, fmt, ap);
	va_end(ap);
	send_state(state);
	last_ping_ms = now_ms();
}

void
notify_stopping(const char *status)
{
	char state[600];

	snprintf(state, sizeof state, "STOPPING=1\nSTATUS=%s", status);
	send_state(state);
}

void
notify_reloading(void)
{
	send_state("RELOADING=1");
}

uint64_t
notify_watchdog_interval_ms(void)
{
	static int		known;
	static uint64_t interval_ms;

	if (!known)
	{
#ifdef HAVE_SYSTEMD
		uint64_t usec = 0;

		if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0)
			interval_ms = usec / 2000 > 0 ? usec / 2000 : 1;
#endif
		known = 1;
	}
	return interval_ms;
}

int
notify_watchdog_tick(uint64_t now)
{
	uint64_t interval = notify_watchdog_interval_ms();

	if (interval == 0)
		return -1;
	if (now - last_ping_ms >= interval)
	{
		send_state("WATCHDOG=1");
		last_ping_ms = now;
	}
	return (int) MIN(interval - (now - last_ping_ms), (uint64_t) INT32_MAX);
}
