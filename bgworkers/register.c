/*
 * register.c — the workers' configuration (nadi.* GUCs that only the
 * workers read) and their registration with the postmaster at
 * shared_preload_libraries time.
 */
#include "postgres.h"

#include <limits.h>
#include <unistd.h>

#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "utils/guc.h"

#include "nadi.h"
#include "cell.h"
#include "worker.h"

char	   *nadi_database = NULL;
bool		nadi_broker_enabled = true;
int			nadi_broker_naptime_ms = 1000;
int			nadi_cell_workers = 2;
bool		nadi_notifier_enabled = true;
int			nadi_retention_s = 0;
int			nadi_audit_retention_s = 0;
int			nadi_retention_interval_ms = 60000;

static const NadiSetting settings[] = {
	{NADI_SETTING_STRING, "nadi.database", "Database the nadi broker and cells work in.", NULL,
	&nadi_database, "postgres", 0, 0, PGC_POSTMASTER, 0},
	{NADI_SETTING_BOOL, "nadi.broker", "Start the nadi broker (placement and healing).", NULL,
	&nadi_broker_enabled, NULL, 0, 0, PGC_POSTMASTER, 0},
	{NADI_SETTING_INT, "nadi.broker_naptime", "Longest the broker sleeps when nothing wakes it (a safety net).", NULL,
	&nadi_broker_naptime_ms, NULL, 10, 3600 * 1000, PGC_SIGHUP, GUC_UNIT_MS},
	{NADI_SETTING_INT, "nadi.cell_workers", "Worker processes of the embedded cell host (0: no embedded cell).", NULL,
	&nadi_cell_workers, NULL, 0, 32, PGC_POSTMASTER, 0},
	{NADI_SETTING_BOOL, "nadi.notifier", "Send NOTIFY nadi_events from a worker that batches many commits' notifications.",
		"Off: each event-writing transaction sends its own NOTIFY, which serializes their commits.",
	&nadi_notifier_enabled, NULL, 0, 0, PGC_POSTMASTER, 0},
	{NADI_SETTING_INT, "nadi.retention", "How long ended sessions are kept before the broker purges them (0: never).",
		"Every nadi.retention_interval the broker runs nadi.purge_batch for the sessions that ended longer ago; legal holds apply.",
	&nadi_retention_s, NULL, 0, INT_MAX, PGC_SIGHUP, GUC_UNIT_S},
	{NADI_SETTING_INT, "nadi.audit_retention", "How long audit rows are kept before the broker purges them (0: never).",
		"Every nadi.retention_interval the broker runs nadi.purge_audit_batch for older audit rows and tombstones; legal holds apply.",
	&nadi_audit_retention_s, NULL, 0, INT_MAX, PGC_SIGHUP, GUC_UNIT_S},
	{NADI_SETTING_INT, "nadi.retention_interval", "How often the broker runs retention (nadi.retention, nadi.audit_retention).", NULL,
	&nadi_retention_interval_ms, NULL, 100, INT_MAX / 2, PGC_SIGHUP, GUC_UNIT_MS},
};

void
nadi_workers_define_gucs(void)
{
	nadi_define_settings(settings, lengthof(settings));
	cell_define_gucs();
}

static void
register_worker(BackgroundWorker *worker, const char *function, const char *name,
				const char *type)
{
	strlcpy(worker->bgw_function_name, function, BGW_MAXLEN);
	strlcpy(worker->bgw_name, name, BGW_MAXLEN);
	strlcpy(worker->bgw_type, type, BGW_MAXLEN);
	RegisterBackgroundWorker(worker);
}

void
nadi_workers_register(void)
{
	BackgroundWorker worker;
	char		name[BGW_MAXLEN];

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	strlcpy(worker.bgw_library_name, "nadi", BGW_MAXLEN);

	if (nadi_broker_enabled)
		register_worker(&worker, "nadi_broker_main", "nadi broker", "nadi broker");
	if (nadi_notifier_enabled)
		register_worker(&worker, "nadi_notifier_main", "nadi notifier", "nadi notifier");
	for (int i = 0; i < nadi_cell_workers; i++)
	{
		snprintf(name, sizeof(name), "nadi cell %d", i);
		worker.bgw_main_arg = Int32GetDatum(i);
		register_worker(&worker, "nadi_cell_main", name, "nadi cell");
	}
}
