/*
 * worker.c — the parts of a worker's life that the broker and the cells
 * share: signals, connecting, waiting on the latch, and noticing that the
 * extension is (not yet) installed.
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "worker.h"

/*
 * Signals and the database connection.  SIGTERM is die(): the worker ends
 * at its next CHECK_FOR_INTERRUPTS(), aborting whatever transaction it is
 * in, which is always safe here because every step commits on its own.
 */
void
worker_setup(const char *what)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(nadi_database, NULL, 0);
	pgstat_report_appname(what);
	elog(LOG, "%s started in database \"%s\"", what, nadi_database);
}

static bool reloaded = false;

/* After a wait: exit if told to, read the configuration again if asked to. */
static void
worker_interrupts(void)
{
	CHECK_FOR_INTERRUPTS();
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
		reloaded = true;
	}
}

/*
 * Sleep until the latch is set or timeout_ms passes.  The latch is the
 * mechanism (commits set it); the timeout is only a safety net.  Returns
 * true when woken by the latch.
 */
bool
worker_wait(long timeout_ms)
{
	int			rc;

	rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
				   Max(timeout_ms, 1), PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	worker_interrupts();
	return (rc & WL_LATCH_SET) != 0;
}

/*
 * The same, also waking when fd is readable (a cell's calls in flight), and
 * not at all when timeout_ms is 0.  fd may be PGINVALID_SOCKET; a worker
 * waits on one fd all its life.
 */
bool
worker_wait_fd(long timeout_ms, pgsocket fd)
{
	static WaitEventSet *set = NULL;
	WaitEvent	ev[3];
	int			n;
	bool		latch = false;

	if (fd == PGINVALID_SOCKET)
		return worker_wait(timeout_ms);
	if (set == NULL)
	{
#if PG_VERSION_NUM >= 170000
		/*
		 * PostgreSQL 17: CreateWaitEventSet takes a resource owner, not a
		 * memory context, and always allocates in TopMemoryContext; with no
		 * owner the set lives as long as the process, as this one must.
		 */
		set = CreateWaitEventSet(NULL, 3);
#else
		set = CreateWaitEventSet(TopMemoryContext, 3);
#endif
		AddWaitEventToSet(set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
		AddWaitEventToSet(set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
		AddWaitEventToSet(set, WL_SOCKET_READABLE, fd, NULL, NULL);
	}
	n = WaitEventSetWait(set, Max(timeout_ms, 0), ev, lengthof(ev), PG_WAIT_EXTENSION);
	for (int i = 0; i < n; i++)
		if (ev[i].events & WL_LATCH_SET)
			latch = true;
	if (latch)
		ResetLatch(MyLatch);
	worker_interrupts();
	return latch;
}

/* Was the configuration read again since the last call? */
bool
worker_reloaded(void)
{
	bool		r = reloaded;

	reloaded = false;
	return r;
}

/* Inside a transaction: is CREATE EXTENSION nadi done in this database? */
bool
worker_extension_ready(void)
{
	return OidIsValid(get_extension_oid("nadi", true));
}
