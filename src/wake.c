/*
 * wake.c — commit-time wake-ups.  A transaction that gives a cell or the
 * broker something to do (a command enqueued, a session pending, a host
 * changed) records whom to wake; an XactCallback sets their latches once the
 * commit is durable, and forgets them on abort.  Workers wait on their latch,
 * so a command reaches its cell without any polling.  A cell host with no
 * embedded worker (a cell outside PostgreSQL) is woken by NOTIFY nadi_cell
 * with its host id instead, sent by the same commit.
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "funcapi.h"
#include "commands/async.h"

#include "nadi.h"
#include "wake.h"

static NadiShared *nadi_shared = NULL;
bool		nadi_preloaded = false;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* Backend-local: whom to wake when the current transaction commits. */
#define MAX_PENDING_HOSTS 16
static char pending_hosts[MAX_PENDING_HOSTS][NADI_HOST_ID_LEN];
static int	n_pending_hosts = 0;
static bool pending_all_cells = false;
static bool pending_broker = false;
static bool callback_registered = false;

static void ensure_callback(void);

/*
 * Backend-local: sessions to hand to the notifier when this commits.  The
 * list grows in TopTransactionContext as a transaction touches sessions (a
 * batch may touch a thousand), up to half the notifier's ring; past that the
 * listeners are told to re-read everything ("*"), which costs every edge a
 * read of every feed, so the cap is far above what one call touches.
 */
#define MAX_PENDING_NOTIFY (NADI_NOTIFY_RING / 2)
static pg_uuid_t *pending_notify = NULL;	/* in TopTransactionContext */
static int	n_pending_notify = 0;
static int	pending_notify_size = 0;
static bool pending_notify_overflow = false;

static void
nadi_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(NadiShared)));
	RequestNamedLWLockTranche("nadi", 1);
}

static void
shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	nadi_shared = ShmemInitStruct("nadi", sizeof(NadiShared), &found);
	if (!found)
	{
		memset(nadi_shared, 0, sizeof(NadiShared));
		nadi_shared->lock = &(GetNamedLWLockTranche("nadi"))->lock;
		pg_atomic_init_u64(&nadi_shared->cell_wakeups, 0);
		pg_atomic_init_u64(&nadi_shared->broker_wakeups, 0);
		SpinLockInit(&nadi_shared->ring_lock);
		nadi_shared->notifier_db = InvalidOid;
	}
	LWLockRelease(AddinShmemInitLock);
}

void
nadi_shmem_startup(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = nadi_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = shmem_startup;
}

static void
wake_clear(void)
{
	n_pending_hosts = 0;
	pending_all_cells = false;
	pending_broker = false;
	pending_notify = NULL;		/* freed with TopTransactionContext */
	n_pending_notify = 0;
	pending_notify_size = 0;
	pending_notify_overflow = false;
}

/* At commit: queue this transaction's sessions for the notifier. */
static void
notify_flush(void)
{
	PGPROC	   *notifier = NULL;

	if (n_pending_notify == 0 && !pending_notify_overflow)
		return;
	SpinLockAcquire(&nadi_shared->ring_lock);
	for (int i = 0; i < n_pending_notify; i++)
	{
		if (nadi_shared->ring_head - nadi_shared->ring_tail >= NADI_NOTIFY_RING)
		{
			nadi_shared->ring_overflow = true;
			break;
		}
		nadi_shared->ring[nadi_shared->ring_head++ % NADI_NOTIFY_RING] = pending_notify[i];
	}
	if (pending_notify_overflow)
		nadi_shared->ring_overflow = true;
	SpinLockRelease(&nadi_shared->ring_lock);

	LWLockAcquire(nadi_shared->lock, LW_SHARED);
	for (int i = 0; i < NADI_MAX_WORKERS; i++)
		if (nadi_shared->slots[i].kind == NADI_WORKER_NOTIFIER)
			notifier = nadi_shared->slots[i].proc;
	if (notifier)
		SetLatch(&notifier->procLatch);
	LWLockRelease(nadi_shared->lock);
}

/*
 * A session has new events in this transaction.  With a notifier attached
 * to this database, the session id is handed to it at commit and it sends
 * the NOTIFY, batching many commits into one: PostgreSQL serializes every
 * notifying commit (and its WAL flush) on one lock, which would otherwise
 * cap all event-writing transactions at single-commit speed.  Without one,
 * NOTIFY directly.  Either way listeners hear of it only after the commit.
 */
void
nadi_notify_session(const pg_uuid_t *id, const char *id_text)
{
	if (nadi_shared == NULL || nadi_shared->notifier_db != MyDatabaseId)
	{
		Async_Notify("nadi_events", id_text);
		return;
	}
	ensure_callback();
	/* newest first: a session's events usually come one after another */
	for (int i = n_pending_notify - 1; i >= 0; i--)
		if (memcmp(pending_notify[i].data, id->data, UUID_LEN) == 0)
			return;
	if (n_pending_notify == MAX_PENDING_NOTIFY)
	{
		pending_notify_overflow = true;
		return;
	}
	if (n_pending_notify == pending_notify_size)
	{
		int			size = pending_notify_size == 0 ? 64 : Min(pending_notify_size * 2, MAX_PENDING_NOTIFY);

		pending_notify = pending_notify == NULL ?
			MemoryContextAlloc(TopTransactionContext, sizeof(pg_uuid_t) * size) :
			repalloc(pending_notify, sizeof(pg_uuid_t) * size);
		pending_notify_size = size;
	}
	pending_notify[n_pending_notify++] = *id;
}

/*
 * The notifier takes what is queued: up to max session ids, and whether
 * some were lost (listeners must then re-read every stream).
 */
int
nadi_notify_drain(pg_uuid_t *out, int max, bool *overflow)
{
	int			n = 0;

	SpinLockAcquire(&nadi_shared->ring_lock);
	while (n < max && nadi_shared->ring_tail < nadi_shared->ring_head)
		out[n++] = nadi_shared->ring[nadi_shared->ring_tail++ % NADI_NOTIFY_RING];
	*overflow = nadi_shared->ring_overflow;
	nadi_shared->ring_overflow = false;
	SpinLockRelease(&nadi_shared->ring_lock);
	return n;
}

/*
 * Just before commit: a host to wake that has no embedded cell worker
 * attached is served by a cell outside PostgreSQL (nadi-celld), which
 * LISTENs on "nadi_cell": NOTIFY it with the host id, once per host per
 * transaction.  NOTIFY is transactional, so it is heard only if the commit
 * succeeds.  "*" (after more hosts than pending_hosts holds) asks every
 * external cell to look.  A host with an embedded worker costs one pass over
 * the slots and no NOTIFY.
 */
static void
wake_notify_external_cells(void)
{
	bool		external[MAX_PENDING_HOSTS];

	if (pending_all_cells)
	{
		Async_Notify(NADI_CELL_CHANNEL, "*");
		return;
	}
	for (int h = 0; h < n_pending_hosts; h++)
		external[h] = true;
	if (nadi_shared != NULL)
	{
		LWLockAcquire(nadi_shared->lock, LW_SHARED);
		for (int i = 0; i < NADI_MAX_WORKERS; i++)
		{
			NadiWorkerSlot *slot = &nadi_shared->slots[i];

			if (slot->kind != NADI_WORKER_CELL)
				continue;
			for (int h = 0; h < n_pending_hosts; h++)
				if (strcmp(slot->host_id, pending_hosts[h]) == 0)
					external[h] = false;
		}
		LWLockRelease(nadi_shared->lock);
	}
	for (int h = 0; h < n_pending_hosts; h++)
		if (external[h])
			Async_Notify(NADI_CELL_CHANNEL, pending_hosts[h]);
}

/*
 * Runs in the committing backend.  Before the commit (XACT_EVENT_PRE_COMMIT)
 * it queues the NOTIFY for external cells; after the commit record is
 * flushed (XACT_EVENT_COMMIT) it sets latches, so a woken worker always
 * finds the committed rows.
 */
static void
wake_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
	{
		wake_clear();
		return;
	}
	if (event == XACT_EVENT_PRE_COMMIT)
	{
		if (n_pending_hosts > 0 || pending_all_cells)
			wake_notify_external_cells();
		return;
	}
	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_PARALLEL_COMMIT)
		return;
	if (nadi_shared != NULL)
		notify_flush();
	if (n_pending_hosts == 0 && !pending_all_cells && !pending_broker)
	{
		wake_clear();
		return;
	}

	if (nadi_shared != NULL)
	{
		LWLockAcquire(nadi_shared->lock, LW_SHARED);
		for (int i = 0; i < NADI_MAX_WORKERS; i++)
		{
			NadiWorkerSlot *slot = &nadi_shared->slots[i];
			bool		wake = false;

			if (slot->kind == NADI_WORKER_BROKER)
				wake = pending_broker;
			else if (slot->kind == NADI_WORKER_CELL)
			{
				wake = pending_all_cells;
				for (int h = 0; !wake && h < n_pending_hosts; h++)
					wake = strcmp(slot->host_id, pending_hosts[h]) == 0;
			}
			if (wake && slot->proc != NULL)
				SetLatch(&slot->proc->procLatch);
		}
		LWLockRelease(nadi_shared->lock);
		if (pending_broker)
			pg_atomic_fetch_add_u64(&nadi_shared->broker_wakeups, 1);
		if (n_pending_hosts > 0 || pending_all_cells)
			pg_atomic_fetch_add_u64(&nadi_shared->cell_wakeups, 1);
	}
	wake_clear();
}

static void
ensure_callback(void)
{
	if (!callback_registered)
	{
		RegisterXactCallback(wake_xact_callback, NULL);
		callback_registered = true;
	}
}

/* Wake the cell workers of host_id when this transaction commits. */
void
nadi_wake_cell_at_commit(const char *host_id)
{
	ensure_callback();
	if (host_id == NULL || pending_all_cells)
		return;
	for (int h = 0; h < n_pending_hosts; h++)
		if (strcmp(pending_hosts[h], host_id) == 0)
			return;
	if (n_pending_hosts == MAX_PENDING_HOSTS)
	{
		/* a transaction touching many hosts wakes every cell: still correct */
		pending_all_cells = true;
		return;
	}
	strlcpy(pending_hosts[n_pending_hosts++], host_id, NADI_HOST_ID_LEN);
}

void
nadi_wake_broker_at_commit(void)
{
	ensure_callback();
	pending_broker = true;
}

/*
 * A worker claims a slot so that commits can find its latch.  Returns the
 * slot number, or raises if all are taken.
 */
int
nadi_worker_attach(NadiWorkerKind kind, const char *host_id)
{
	int			found = -1;

	LWLockAcquire(nadi_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < NADI_MAX_WORKERS; i++)
	{
		if (nadi_shared->slots[i].kind == NADI_WORKER_FREE)
		{
			NadiWorkerSlot *slot = &nadi_shared->slots[i];

			slot->kind = kind;
			slot->proc = MyProc;
			if (kind == NADI_WORKER_NOTIFIER)
				nadi_shared->notifier_db = MyDatabaseId;
			strlcpy(slot->host_id, host_id ? host_id : "", NADI_HOST_ID_LEN);
			found = i;
			break;
		}
	}
	LWLockRelease(nadi_shared->lock);
	if (found < 0)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("too many nadi workers"),
				 errdetail("At most %d nadi workers can run at once.", NADI_MAX_WORKERS)));
	return found;
}

void
nadi_worker_detach(int slot)
{
	LWLockAcquire(nadi_shared->lock, LW_EXCLUSIVE);
	if (nadi_shared->slots[slot].kind == NADI_WORKER_NOTIFIER)
		nadi_shared->notifier_db = InvalidOid;
	memset(&nadi_shared->slots[slot], 0, sizeof(NadiWorkerSlot));
	LWLockRelease(nadi_shared->lock);
}

/* nadi.wakeup_stats(): how many commits woke cells and the broker. */
PG_FUNCTION_INFO_V1(nadi_wakeup_stats);
Datum
nadi_wakeup_stats(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};
	int			workers = 0;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	LWLockAcquire(nadi_shared->lock, LW_SHARED);
	for (int i = 0; i < NADI_MAX_WORKERS; i++)
		if (nadi_shared->slots[i].kind != NADI_WORKER_FREE)
			workers++;
	LWLockRelease(nadi_shared->lock);
	values[0] = Int64GetDatum((int64) pg_atomic_read_u64(&nadi_shared->cell_wakeups));
	values[1] = Int64GetDatum((int64) pg_atomic_read_u64(&nadi_shared->broker_wakeups));
	values[2] = Int32GetDatum(workers);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
