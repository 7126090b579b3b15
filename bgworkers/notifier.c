/*
 * notifier.c — the `nadi notifier` background worker.  Committing
 * transactions hand it the ids of sessions with new events (wake.c); it
 * sends NOTIFY nadi_events, one per session, many commits' worth in one
 * transaction.  PostgreSQL serializes notifying commits on one lock held
 * through their WAL flush; moving the NOTIFY here lets every other commit
 * share flushes again.  Listeners still hear only of committed events; a
 * "*" payload means some ids were dropped and every stream must re-read.
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/async.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "nadi.h"
#include "wake.h"
#include "worker.h"

#define BATCH 1024

static int	notifier_slot = -1;

static void
notifier_detach(int code, Datum arg)
{
	if (notifier_slot >= 0)
		nadi_worker_detach(notifier_slot);
}

void
nadi_notifier_main(Datum arg)
{
	MemoryContext ctx;
	pg_uuid_t  *ids = palloc(sizeof(pg_uuid_t) * BATCH);

	worker_setup("nadi notifier");
	notifier_slot = nadi_worker_attach(NADI_WORKER_NOTIFIER, NULL);
	before_shmem_exit(notifier_detach, (Datum) 0);
	ctx = AllocSetContextCreate(TopMemoryContext, "nadi notifier", ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		bool		overflow = false;
		int			n = nadi_notify_drain(ids, BATCH, &overflow);

		if (n == 0 && !overflow)
		{
			worker_wait(1000);
			continue;
		}
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		{
			MemoryContext old = MemoryContextSwitchTo(ctx);

			for (int i = 0; i < n; i++)
				Async_Notify("nadi_events",
							 DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&ids[i]))));
			if (overflow)
				Async_Notify("nadi_events", "*");
			MemoryContextSwitchTo(old);
		}
		CommitTransactionCommand();
		MemoryContextReset(ctx);
		pgstat_report_activity(STATE_IDLE, NULL);
		CHECK_FOR_INTERRUPTS();
	}
}
