/*
 * notify.h — what a daemon tells systemd (sd_notify(3)): READY=1 with a
 * STATUS= line once it serves, STOPPING=1 when it drains or stops,
 * RELOADING=1 around a reload, and WATCHDOG=1 at half of WATCHDOG_USEC
 * when the unit sets WatchdogSec=.  Without libsystemd (no HAVE_SYSTEMD)
 * every call does nothing.  Call from one thread (the main one).
 */
#ifndef NADI_DAEMONLIB_NOTIFY_H
#define NADI_DAEMONLIB_NOTIFY_H

#include <stdint.h>

#include "util.h"

/* READY=1 and STATUS=<fmt>; also starts the watchdog clock. */
void notify_ready(const char *fmt, ...) _printf_(1, 2);
/* STOPPING=1 and STATUS=<status> ("Draining", "Stopping"). */
void notify_stopping(const char *status);
/* RELOADING=1 before a reload; notify_ready() after it. */
void notify_reloading(void);

/*
 * Half of WATCHDOG_USEC in milliseconds, 0 when the service manager wants
 * no keep-alive pings (or this process is not the one it watches).
 */
uint64_t notify_watchdog_interval_ms(void);

/*
 * WATCHDOG=1 when half the watchdog interval has passed since the last
 * ping (now is CLOCK_MONOTONIC milliseconds).  Returns the milliseconds
 * until the next ping is due, -1 when there is no watchdog: loops that
 * wait with a timeout wait at most that long.
 */
int notify_watchdog_tick(uint64_t now);

#endif
