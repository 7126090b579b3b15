/*
 * log.h — the log of every Nadi daemon.  Messages go to stderr, one line
 * each, as "TIMESTAMP IDENT[PID] LEVEL: MESSAGE"; when stderr is the
 * journal (systemd sets JOURNAL_STREAM), they go to journald with their
 * priority instead (the native protocol when built with libsystemd, else a
 * "<N>" prefix journald understands).  Safe from any thread.
 *
 * Structured fields: log_fields() adds KEY=VALUE pairs to a message.  In
 * the journal they are fields of the entry (journalctl REQUEST_ID=...);
 * on a terminal or in a file they follow the message as " key=value"
 * (lower case, the value quoted when it holds anything but letters,
 * digits and ._:/@+-).  Keys are journal field names: A-Z, 0-9 and '_',
 * not starting with '_' or a digit.  Callers never log tokens or secrets.
 */
#ifndef NADI_DAEMONLIB_LOG_H
#define NADI_DAEMONLIB_LOG_H

#include <stddef.h>

enum
{
	LOG_LEVEL_ERR = 3,
	LOG_LEVEL_WARNING = 4,
	LOG_LEVEL_NOTICE = 5,
	LOG_LEVEL_INFO = 6,
	LOG_LEVEL_DEBUG = 7
};

extern int		   log_max_level; /* LOG_LEVEL_INFO unless configured */
extern const char *log_ident;	  /* the program's name; each main() sets it first */

struct log_field
{
	const char *key;   /* "REQUEST_ID" */
	const char *value; /* NULL: the field is left out */
};

void log_at(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_fields_at(int level, const struct log_field *fields, size_t n_fields, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* "error", "warning", "notice", "info" or "debug" → log_max_level. */
int log_level_parse(const char *name);

#define log_error(...) log_at(LOG_LEVEL_ERR, __VA_ARGS__)
#define log_warning(...) log_at(LOG_LEVEL_WARNING, __VA_ARGS__)
#define log_notice(...) log_at(LOG_LEVEL_NOTICE, __VA_ARGS__)
#define log_info(...) log_at(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) log_at(LOG_LEVEL_DEBUG, __VA_ARGS__)
/*
 * log_fields(LOG_LEVEL_INFO, ((struct log_field[]){{"REQUEST_ID", id}, {"STATUS", code}}),
 *            "%s %s", method, path);
 */
#define log_fields(level, fields, ...) \
	log_fields_at(level, fields, sizeof(fields) / sizeof((fields)[0]), __VA_ARGS__)

#endif
