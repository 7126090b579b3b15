/*
 * broker.c — the `nadi broker` background worker: one per cluster, in the
 * database nadi.database.  It places pending sessions on live cell hosts
 * (nadi.place_pending) and heals (nadi.reap: expired leases, dead hosts,
 * orphaned placements, crash budgets), and runs retention when it is
 * configured (nadi.retention, nadi.audit_retention).  It never reads a
 * command's payload and is never in the path of a command or a tool call:
 * cells claim commands themselves, woken by the enqueuing commit.
 *
 * It sleeps on its latch.  Commits that make a session pending or change a
 * host set it (wake.c); the timeout is the next lease expiry or host
 * deadline, capped by nadi.broker_naptime as a safety net.
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "nadi.h"
#include "wake.h"
#include "worker.h"

static int	broker_slot = -1;

static void
broker_detach(int code, Datum arg)
{
	if (broker_slot >= 0)
		nadi_worker_detach(broker_slot);
}

/*
 * Run one SQL statement in its own transaction and return the first column
 * of its first row as int64 (or -1 when NULL or no row).  Errors are caught,
 * reported and survived: the next cycle tries again.
 */
static int64
broker_step(const char *what, const char *sql)
{
	MemoryContext ctx = CurrentMemoryContext;
	volatile int64 result = -1;

	pgstat_report_activity(STATE_RUNNING, sql);
	SetCurrentStatementStartTimestamp();	/* else now() stays at worker start */
	StartTransactionCommand();

	/*
	 * READ COMMITTED whatever default_transaction_isolation says (the
	 * database's or the role's settings apply to a worker too): a purge
	 * batch must see every hold committed while it waited for its lock, so
	 * it refuses to run on a transaction snapshot.  No snapshot is taken
	 * yet, so the level may still change.
	 */
	XactIsoLevel = XACT_READ_COMMITTED;
	PG_TRY();
	{
		PushActiveSnapshot(GetTransactionSnapshot());
		if (worker_extension_ready())
		{
			bool		isnull;
			Datum		d;

			if (SPI_connect() != SPI_OK_CONNECT)
				elog(ERROR, "SPI_connect failed");
			if (SPI_execute(sql, false, 1) < 0)
				elog(ERROR, "%s failed", what);
			if (SPI_processed == 1)
			{
				d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
				if (!isnull)
					result = DatumGetInt64(d);
			}
			SPI_finish();
		}
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(ctx);
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
		result = -1;
	}
	PG_END_TRY();
	pgstat_report_activity(STATE_IDLE, NULL);
	return result;
}

/*
 * Retention (nadi.retention, nadi.audit_retention; off by default): every
 * nadi.retention_interval, batches of nadi.purge_batch and
 * nadi.purge_audit_batch, each in its own transaction, at most
 * RETENTION_MAX_BATCHES of each per run so that placement never waits long
 * behind a purge (a backlog is worked off over the next runs), and each
 * waits at most a second for its lock (a hold being set in a transaction
 * left open must not stall placement: the next run tries again).  Nothing
 * runs before the extension has the 1.1 schema.
 */
#define RETENTION_BATCH 100
#define RETENTION_AUDIT_BATCH 1000
#define RETENTION_MAX_BATCHES 10

/* Whether the database has the function (its extension may still be 1.0). */
static bool
broker_has_function(const char *regprocedure)
{
	char		sql[160];

	snprintf(sql, sizeof(sql), "SELECT (to_regprocedure('%s') IS NOT NULL)::int::int8",
			 regprocedure);
	return broker_step("probe", sql) == 1;
}

/*
 * Up to RETENTION_MAX_BATCHES calls of one purge batch function (whose one
 * column is the rows it removed), until a batch removes fewer than
 * batch_size.
 */
static void
broker_purge_batches(const char *what, const char *select, int older_than_s, int batch_size)
{
	char		sql[256];

	snprintf(sql, sizeof(sql),
			 "SET LOCAL lock_timeout = '1s'; SELECT %s(make_interval(secs => %d), %d)", select,
			 older_than_s, batch_size);
	for (int i = 0; i < RETENTION_MAX_BATCHES; i++)
		if (broker_step(what, sql) < batch_size)
			break;
}

static void
broker_retention(void)
{
	static TimestampTz last = 0;
	TimestampTz now = GetCurrentTimestamp();

	if (nadi_retention_s <= 0 && nadi_audit_retention_s <= 0)
		return;
	if (last != 0 && !TimestampDifferenceExceeds(last, now, nadi_retention_interval_ms))
		return;
	last = now;
	if (!broker_has_function("nadi.purge_audit_batch(interval, integer)"))
		return;
	if (nadi_retention_s > 0)
		broker_purge_batches("purge", "sessions::bigint FROM nadi.purge_batch",
							 nadi_retention_s, RETENTION_BATCH);
	if (nadi_audit_retention_s > 0)
		broker_purge_batches("purge_audit",
							 "greatest(audit_rows, tombstones)::bigint FROM nadi.purge_audit_batch",
							 nadi_audit_retention_s, RETENTION_AUDIT_BATCH);
}

void
nadi_broker_main(Datum arg)
{
	bool		have_fold = false; /* once found, the probe is not repeated */

	worker_setup("nadi broker");
	broker_slot = nadi_worker_attach(NADI_WORKER_BROKER, NULL);
	before_shmem_exit(broker_detach, (Datum) 0);

	for (;;)
	{
		int64		placed;
		int64		next_ms;

		/* heal first: sessions freed by expiry are placed in the same cycle */
		broker_step("reap",
					"SELECT leases_expired + commands_requeued + hosts_dead + sessions_replaced "
					"FROM nadi.reap()");
		do
			placed = broker_step("place", "SELECT nadi.place_pending(1000)");
		while (placed == 1000);
		broker_retention();

		/*
		 * The operator's call counts: fold what the events' trigger appended
		 * (nadi._call_counts_fold() in sql/nadi--1.0--1.1.sql says why they
		 * are two tables).  The probe is there because this library also runs
		 * against a database whose extension is still 1.0 (before ALTER
		 * EXTENSION nadi UPDATE), which has no such function; once it is
		 * there (the update ran), it stays.
		 */
		if (have_fold || (have_fold = broker_has_function("nadi._call_counts_fold()")))
			broker_step("fold", "SELECT nadi._call_counts_fold()");

		/*
		 * sleep until the next lease can expire, or until woken; with no
		 * lease held the answer is NULL (greatest() would skip the NULL and
		 * say 0: a wake-up every millisecond), so the nap time applies
		 */
		next_ms = broker_step("deadline",
							  "SELECT CASE WHEN min(expires_at) IS NOT NULL THEN "
							  "greatest(0, ceil(extract(epoch FROM min(expires_at) - nadi.now()) * 1000))::bigint END "
							  "FROM nadi.session_leases WHERE cell_host_id IS NOT NULL");
		if (next_ms < 0 || next_ms > nadi_broker_naptime_ms)
			next_ms = nadi_broker_naptime_ms;
		worker_wait(next_ms + 1);
	}
}
