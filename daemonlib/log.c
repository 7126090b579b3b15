/*
 * log.c — see log.h.  Each line is one write(2), so the lines of
 * concurrent threads do not interleave.  Callers never pass tokens or
 * secrets here.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "log.h"

int log_max_level = LOG_LEVEL_INFO;
const char *log_ident = "nadi";

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
log_at(int level, const char *fmt, ...)
{
	static const char *names[] = {"emerg", "alert", "crit", "error", "warning", "notice", "info", "debug"};
	int saved = errno;
	char msg[2048], line[2400];
	va_list ap;
	int n;

	if (level > log_max_level)
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
		n = snprintf(line, sizeof line, "%s.%03ldZ %s[%d] %s: %s\n", stamp, ts.tv_nsec / 1000000, log_ident,
			     (int)getpid(), names[level & 7], msg);
	}
	if (n > (int)sizeof line - 1) {
		n = (int)sizeof line - 1;
		line[n - 1] = '\n';
	}
	if (n > 0 && write(STDERR_FILENO, line, (size_t)n) < 0) {
		/* nowhere left to complain */
	}
	errno = saved;
}

int
log_level_parse(const char *name)
{
	static const char *names[] = {"error", "warning", "notice", "info", "debug"};

	for (size_t i = 0; i < ARRAY_SIZE(names); i++)
		if (strcmp(name, names[i]) == 0) {
			log_max_level = LOG_LEVEL_ERR + (int)i;
			return 0;
		}
	return -EINVAL;
}
