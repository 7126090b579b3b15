/*
 * guc.c — the nadi.* configuration parameters.  Units are declared so that
 * SHOW prints them and postgresql.conf accepts "10s" or "1MB".
 */
#include "postgres.h"

#include <limits.h>

#include "utils/guc.h"

#include "nadi.h"

int			nadi_lease_ttl_ms = 10000;
int			nadi_host_ttl_ms = 15000;
int			nadi_max_payload_bytes = 1024 * 1024;
int			nadi_max_attempts = 5;
int			nadi_backoff_base_ms = 1000;
int			nadi_backoff_max_ms = 300000;
int			nadi_crash_budget = 3;
int			nadi_max_queued_per_session = 10000;
int			nadi_max_live_sessions = 10000;
int			nadi_clock_offset_ms = 0;
bool		nadi_notify = true;
bool		nadi_allow_hs256 = false;

/* The integer settings, one row each; boot values are the variables' own. */
typedef struct IntSetting
{
	const char *name;
	const char *short_desc;
	const char *long_desc;
	int		   *var;
	int			min;
	int			max;
	GucContext	context;
	int			flags;			/* a GUC_UNIT_*, or 0 */
} IntSetting;

static const IntSetting int_settings[] = {
	{"nadi.lease_ttl", "How long a session lease lasts without renewal.",
		"A cell that stops renewing loses its sessions after this long.",
	&nadi_lease_ttl_ms, 100, INT_MAX / 2, PGC_SIGHUP, GUC_UNIT_MS},
	{"nadi.host_ttl", "How long a host may go without a heartbeat before it is marked dead.", NULL,
	&nadi_host_ttl_ms, 100, INT_MAX / 2, PGC_SIGHUP, GUC_UNIT_MS},
	{"nadi.max_payload_size", "Largest command payload, command result or event payload accepted.", NULL,
	&nadi_max_payload_bytes, 1024, 256 * 1024 * 1024, PGC_SUSET, GUC_UNIT_BYTE},
	{"nadi.max_attempts", "How many times a command is tried before it is dead-lettered.", NULL,
	&nadi_max_attempts, 1, 1000, PGC_SUSET, 0},
	{"nadi.retry_backoff_base", "Delay before the first retry of a failed command; doubles with each attempt.", NULL,
	&nadi_backoff_base_ms, 0, INT_MAX / 2, PGC_SUSET, GUC_UNIT_MS},
	{"nadi.retry_backoff_max", "Longest delay between retries of a failed command.", NULL,
	&nadi_backoff_max_ms, 0, INT_MAX / 2, PGC_SUSET, GUC_UNIT_MS},
	{"nadi.crash_budget", "How many times a session's cell may die holding it before the session fails.", NULL,
	&nadi_crash_budget, 0, 1000, PGC_SUSET, 0},
	{"nadi.max_queued_commands", "Most commands one session may have queued or in flight.", NULL,
	&nadi_max_queued_per_session, 1, INT_MAX, PGC_SUSET, 0},
	{"nadi.max_live_sessions", "Most sessions one tenant may have that are not terminated or failed.", NULL,
	&nadi_max_live_sessions, 1, INT_MAX, PGC_SUSET, 0},
	{"nadi.clock_offset", "Shifts nadi.now() forward, for tests of expiry (never set this in production).", NULL,
	&nadi_clock_offset_ms, INT_MIN / 2, INT_MAX / 2, PGC_SUSET, GUC_UNIT_MS},
};

void
nadi_guc_define(void)
{
	for (int i = 0; i < lengthof(int_settings); i++)
	{
		const IntSetting *s = &int_settings[i];

		DefineCustomIntVariable(s->name, s->short_desc, s->long_desc, s->var, *s->var,
								s->min, s->max, s->context, s->flags, NULL, NULL, NULL);
	}
	DefineCustomBoolVariable("nadi.notify",
							 "Send NOTIFY nadi_events with the session id when events commit.",
							 NULL,
							 &nadi_notify, true,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("nadi.allow_hs256",
							 "Allow HS256 (shared secret) signing keys: a development option only.",
							 NULL,
							 &nadi_allow_hs256, false,
							 PGC_SUSET, 0, NULL, NULL, NULL);
}
