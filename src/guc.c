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
bool		nadi_count_calls = true;
bool		nadi_allow_hs256 = false;

/* The settings, one row each; boot values are the variables' own. */
static const NadiSetting settings[] = {
	{NADI_SETTING_INT, "nadi.lease_ttl", "How long a session lease lasts without renewal.",
		"A cell that stops renewing loses its sessions after this long.",
	&nadi_lease_ttl_ms, NULL, 100, INT_MAX / 2, PGC_SIGHUP, GUC_UNIT_MS},
	{NADI_SETTING_INT, "nadi.host_ttl", "How long a host may go without a heartbeat before it is marked dead.", NULL,
	&nadi_host_ttl_ms, NULL, 100, INT_MAX / 2, PGC_SIGHUP, GUC_UNIT_MS},
	{NADI_SETTING_INT, "nadi.max_payload_size", "Largest command payload, command result or event payload accepted.", NULL,
	&nadi_max_payload_bytes, NULL, 1024, 256 * 1024 * 1024, PGC_SUSET, GUC_UNIT_BYTE},
	{NADI_SETTING_INT, "nadi.max_attempts", "How many times a command is tried before it is dead-lettered.", NULL,
	&nadi_max_attempts, NULL, 1, 1000, PGC_SUSET, 0},
	{NADI_SETTING_INT, "nadi.retry_backoff_base", "Delay before the first retry of a failed command; doubles with each attempt.", NULL,
	&nadi_backoff_base_ms, NULL, 0, INT_MAX / 2, PGC_SUSET, GUC_UNIT_MS},
	{NADI_SETTING_INT, "nadi.retry_backoff_max", "Longest delay between retries of a failed command.", NULL,
	&nadi_backoff_max_ms, NULL, 0, INT_MAX / 2, PGC_SUSET, GUC_UNIT_MS},
	{NADI_SETTING_INT, "nadi.crash_budget", "How many times a session's cell may die holding it before the session fails.", NULL,
	&nadi_crash_budget, NULL, 0, 1000, PGC_SUSET, 0},
	{NADI_SETTING_INT, "nadi.max_queued_commands", "Most commands one session may have queued or in flight.", NULL,
	&nadi_max_queued_per_session, NULL, 1, INT_MAX, PGC_SUSET, 0},
	{NADI_SETTING_INT, "nadi.max_live_sessions", "Most sessions one tenant may have that are not terminated or failed.", NULL,
	&nadi_max_live_sessions, NULL, 1, INT_MAX, PGC_SUSET, 0},
	{NADI_SETTING_INT, "nadi.clock_offset", "Shifts nadi.now() forward, for tests of expiry (never set this in production).", NULL,
	&nadi_clock_offset_ms, NULL, INT_MIN / 2, INT_MAX / 2, PGC_SUSET, GUC_UNIT_MS},
	{NADI_SETTING_BOOL, "nadi.notify", "Send NOTIFY nadi_events with the session id when events commit.", NULL,
	&nadi_notify, NULL, 0, 0, PGC_SUSET, 0},
	{NADI_SETTING_BOOL, "nadi.count_calls", "Count tool and model calls, tokens and takeovers for the operator's numbers (nadi.stat_calls, nadi.stat_tokens, nadi.stat_takeovers).",
		"Off: events are written without being counted (the numbers stop growing).",
	&nadi_count_calls, NULL, 0, 0, PGC_SUSET, 0},
	{NADI_SETTING_BOOL, "nadi.allow_hs256", "Allow HS256 (shared secret) signing keys: a development option only.", NULL,
	&nadi_allow_hs256, NULL, 0, 0, PGC_SUSET, 0},
};

/*
 * Define each setting of a table.  The extension's own (below) and the
 * workers' (bgworkers/register.c, bgworkers/cell.c) go through here.
 */
void
nadi_define_settings(const NadiSetting *settings, int n)
{
	for (int i = 0; i < n; i++)
	{
		const NadiSetting *s = &settings[i];

		switch (s->type)
		{
			case NADI_SETTING_INT:
				DefineCustomIntVariable(s->name, s->short_desc, s->long_desc, (int *) s->var,
										*(int *) s->var, s->min, s->max, s->context, s->flags,
										NULL, NULL, NULL);
				break;
			case NADI_SETTING_BOOL:
				DefineCustomBoolVariable(s->name, s->short_desc, s->long_desc, (bool *) s->var,
										 *(bool *) s->var, s->context, s->flags,
										 NULL, NULL, NULL);
				break;
			case NADI_SETTING_STRING:
				DefineCustomStringVariable(s->name, s->short_desc, s->long_desc, (char **) s->var,
										   s->boot_string, s->context, s->flags,
										   NULL, NULL, NULL);
				break;
		}
	}
}

void
nadi_guc_define(void)
{
	nadi_define_settings(settings, lengthof(settings));
}
