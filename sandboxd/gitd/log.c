/*
 * log.c — the daemon's log.  Lines go to stderr; under systemd (stderr
 * connected to the journal) each line carries a "<N>" priority prefix that
 * journald understands, otherwise a timestamp and a level name.  Safe to
 * call from any thread: each line is one write.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "gitd.h"

int gitd_log_level = GITD_LOG_INFO;

static bool
stderr_is_journal(void)
{
	static int cached = -1;
	const char *e;
	struct stat st;
	unsigned long dev, ino;

	if (cached >= 0)
		return cached;
	e = getenv("JOURNAL_STREAM");
	cached = e && sscanf(e, "%lu:%lu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &st) == 0 &&
		 st.st_dev == dev && st.st_ino == ino;
	return cached;
}

void
gitd_log(int level, const char *fmt, ...)
{
	static const char *names[] = {"emerg", "alert", "crit", "error", "warning", "notice", "info", "debug"};
	int saved = errno;
	char msg[2048], line[2200];
	va_list ap;
	int n;

	if (level > gitd_log_level)
		return;
	va_start(ap, fmt);
	errno = saved; /* so that %m works */
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);

	if (stderr_is_journal())
		n = snprintf(line, sizeof line, "<%d>%s\n", level, msg);
	else {
		struct timespec ts;
		struct tm tm;
		char stamp[32];

		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
		n = snprintf(line, sizeof line, "%s.%03ldZ nadi-gitd[%d] %s: %s\n", stamp, ts.tv_nsec / 1000000,
			     (int)getpid(), names[level & 7], msg);
	}
	if (n > (int)sizeof line - 1)
		n = (int)sizeof line - 1;
	if (write(STDERR_FILENO, line, (size_t)n) < 0) {
		/* nowhere left to complain */
	}
	errno = saved;
}
