/*
 * log.h — the log of the daemons of a sandbox host.  Lines go to stderr;
 * under systemd (stderr connected to the journal) each carries a "<N>"
 * priority prefix that journald understands, otherwise a timestamp, the
 * program's name (log_ident) and a level name.  Safe from any thread.
 */
#ifndef NADI_COMMON_LOG_H
#define NADI_COMMON_LOG_H

#include "util.h"

enum { LOG_LEVEL_ERR = 3, LOG_LEVEL_WARNING = 4, LOG_LEVEL_NOTICE = 5, LOG_LEVEL_INFO = 6, LOG_LEVEL_DEBUG = 7 };

extern int log_max_level;      /* LOG_LEVEL_INFO unless configured */
extern const char *log_ident;  /* the program's name; each main() sets it first */

void log_at(int level, const char *fmt, ...) _printf_(2, 3);
/* "error", "warning", "notice", "info" or "debug" → log_max_level. */
int log_level_parse(const char *name);

#define log_error(...) log_at(LOG_LEVEL_ERR, __VA_ARGS__)
#define log_warning(...) log_at(LOG_LEVEL_WARNING, __VA_ARGS__)
#define log_notice(...) log_at(LOG_LEVEL_NOTICE, __VA_ARGS__)
#define log_info(...) log_at(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) log_at(LOG_LEVEL_DEBUG, __VA_ARGS__)

#endif
