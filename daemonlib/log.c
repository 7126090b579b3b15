/*
 * log.c — see log.h.  Each line is one write(2) (or one journal datagram),
 * so the lines of concurrent threads do not interleave.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#ifdef HAVE_SYSTEMD
#include <systemd/sd-journal.h>
#endif

#include "log.h"
#include "util.h"

#define LOG_FIELDS_MAX 16

int			log_max_level = LOG_LEVEL_INFO;
const char *log_ident = "nadi";

static bool
stderr_is_journal(void)
{
	static int	  cached = -1;
	const char	 *e;
	struct stat	  st;
	unsigned long dev, ino;

	if (cached >= 0)
		return cached;
	e = getenv("JOURNAL_STREAM");
	cached = e && sscanf(e, "%lu:%lu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &st) == 0 &&
			 st.st_dev == dev && st.st_ino == ino;
	return cached;
}

static bool
key_valid(const char *k)
{
	if (!k || !*k || *k == '_' || (*k >= '0' && *k <= '9') || strlen(k) > 64)
		return false;
	for (; *k; k++)
		if (!((*k >= 'A' && *k <= 'Z') || (*k >= '0' && *k <= '9') || *k == '_'))
			return false;
	return true;
}

/* " key=value" (lower-case key, value quoted unless plain) appended to buf at *n. */
static void
append_field(char *buf, size_t size, int *n, const char *key, const char *value)
{
	bool plain = *value != '\0';

	for (const char *v = value; *v && plain; v++)
		plain = strchr("._:/@+-", *v) || (*v >= 'a' && *v <= 'z') || (*v >= 'A' && *v <= 'Z') ||
				(*v >= '0' && *v <= '9');
	if (*n < (int) size)
		*n += snprintf(buf + *n, size - (size_t) *n, " ");
	for (const char *k = key; *k && *n < (int) size - 1; k++)
		buf[(*n)++] = (char) (*k >= 'A' && *k <= 'Z' ? *k + 32 : *k);
	if (plain)
	{
		if (*n < (int) size)
			*n += snprintf(buf + *n, size - (size_t) *n, "=%s", value);
		return;
	}
	if (*n < (int) size)
		*n += snprintf(buf + *n, size - (size_t) *n, "=\"");
	for (const unsigned char *v = (const unsigned char *) value; *v && *n < (int) size - 5; v++)
	{
		if (*v == '"' || *v == '\\')
			*n += snprintf(buf + *n, size - (size_t) *n, "\\%c", *v);
		else if (*v < 0x20 || *v == 0x7f)
			*n += snprintf(buf + *n, size - (size_t) *n, "\\x%02x", *v);
		else
			buf[(*n)++] = (char) *v;
	}
	if (*n < (int) size)
		*n += snprintf(buf + *n, size - (size_t) *n, "\"");
}

#ifdef HAVE_SYSTEMD
/* The entry through journald's native protocol; false when that failed. */
static bool
journal_send(int level, const char *msg, const struct log_field *fields, size_t n_fields)
{
	struct iovec iov[3 + LOG_FIELDS_MAX];
	char		 prio[16], *owned[3 + LOG_FIELDS_MAX];
	size_t		 n = 0, n_owned = 0;
	bool		 ok;

	snprintf(prio, sizeof prio, "PRIORITY=%d", level);
	owned[n_owned++] = xasprintf("MESSAGE=%s", msg);
	owned[n_owned++] = xasprintf("SYSLOG_IDENTIFIER=%s", log_ident);
	for (size_t i = 0; i < n_fields && i < LOG_FIELDS_MAX; i++)
		if (fields[i].value && key_valid(fields[i].key))
			owned[n_owned++] = xasprintf("%s=%s", fields[i].key, fields[i].value);
	iov[n++] = (struct iovec){prio, strlen(prio)};
	ok = true;
	for (size_t i = 0; i < n_owned; i++)
	{
		if (!owned[i])
			ok = false;
		else
			iov[n++] = (struct iovec){owned[i], strlen(owned[i])};
	}
	ok = ok && sd_journal_sendv(iov, (int) n) >= 0;
	for (size_t i = 0; i < n_owned; i++)
		free(owned[i]);
	return ok;
}
#endif

static void
log_emit(int level, const struct log_field *fields, size_t n_fields, const char *fmt, va_list ap)
{
	static const char *names[] = {"emerg",	 "alert",  "crit", "error",
								  "warning", "notice", "info", "debug"};
	char			   msg[2048], line[2400];
	int				   n;

	vsnprintf(msg, sizeof msg, fmt, ap);
	/*
	 * One message, one line: a control byte a client put in a path or a
	 * header (libmicrohttpd has already decoded %0A) must not start a line
	 * of its own or a journald "<N>" prefix.
	 */
	for (char *c = msg; *c; c++)
		if (((unsigned char) *c < 0x20 && *c != '\t') || *c == 0x7f)
			*c = '?';
#ifdef HAVE_SYSTEMD
	if (stderr_is_journal() && journal_send(level, msg, fields, n_fields))
		return;
#endif
	if (stderr_is_journal())
		n = snprintf(line, sizeof line, "<%d>%s", level, msg);
	else
	{
		struct timespec ts;
		struct tm		tm;
		char			stamp[32];

		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
		n = snprintf(line, sizeof line, "%s.%03ldZ %s[%d] %s: %s", stamp, ts.tv_nsec / 1000000,
					 log_ident, (int) getpid(), names[level & 7], msg);
	}
	for (size_t i = 0; i < n_fields && n < (int) sizeof line - 1; i++)
		if (fields[i].value && key_valid(fields[i].key))
			append_field(line, sizeof line - 1, &n, fields[i].key, fields[i].value);
	if (n > (int) sizeof line - 2)
		n = (int) sizeof line - 2;
	line[n++] = '\n';
	if (write(STDERR_FILENO, line, (size_t) n) < 0)
	{
		/* nowhere left to complain */
	}
}

void
log_at(int level, const char *fmt, ...)
{
	int		saved = errno;
	va_list ap;

	if (level > log_max_level)
		return;
	va_start(ap, fmt);
	errno = saved; /* so that %m works */
	log_emit(level, NULL, 0, fmt, ap);
	va_end(ap);
	errno = saved;
}

void
log_fields_at(int level, const struct log_field *fields, size_t n_fields, const char *fmt, ...)
{
	int		saved = errno;
	va_list ap;

	if (level > log_max_level)
		return;
	va_start(ap, fmt);
	errno = saved;
	log_emit(level, fields, n_fields, fmt, ap);
	va_end(ap);
	errno = saved;
}

int
log_level_parse(const char *name)
{
	static const char *names[] = {"error", "warning", "notice", "info", "debug"};

	for (size_t i = 0; i < ARRAY_SIZE(names); i++)
		if (strcmp(name, names[i]) == 0)
		{
			log_max_level = LOG_LEVEL_ERR + (int) i;
			return 0;
		}
	return -EINVAL;
}
