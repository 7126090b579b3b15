/*
 * log.c — the daemon's log.  Lines go to stderr; under systemd (stderr
 * connected to the journal) each line carries a "<N>" priority prefix that
 * journald understands, otherwise a timestamp and a level name.  Callers
 * never pass tokens or secrets here.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "credproxy.h"

int cp_log_level = CP_LOG_INFO;

static bool
stderr_is_journal(void)
{
	static int journal_stream = -1;
	const char *e;
	struct stat st;
	unsigned long dev, ino;

	if (journal_stream >= 0)
		return journal_stream;
	journal_stream = 0;
	e = getenv("JOURNAL_STREAM");
	if (e && sscanf(e, "%lu:%lu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &st) == 0 &&
	    st.st_dev == dev && st.st_ino == ino)
		journal_stream = 1;
	return journal_stream;
}

void
cp_log(int level, const char *fmt, ...)
{
	static const char *names[] = {"emerg", "alert", "crit", "error", "warning", "notice", "info", "debug"};
	int saved = errno;
	char msg[2048];
	va_list ap;

	if (level > cp_log_level)
		return;
	va_start(ap, fmt);
	errno = saved; /* so that %m works */
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);

	/* One fprintf per line: lines of concurrent connection threads do not interleave. */
	if (stderr_is_journal()) {
		fprintf(stderr, "<%d>%s\n", level, msg);
	} else {
		struct timespec ts;
		struct tm tm;
		char stamp[32];

		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
		fprintf(stderr, "%s.%03ldZ nadi-credproxy[%d] %s: %s\n", stamp, ts.tv_nsec / 1000000, (int)getpid(),
			names[level & 7], msg);
	}
	errno = saved;
}
