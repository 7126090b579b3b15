/*
 * wake.h — shared memory through which committing transactions wake the
 * workers that have something new to do (see wake.c).
 */
#ifndef NADI_WAKE_H
#define NADI_WAKE_H

#include "storage/proc.h"
#include "storage/spin.h"
#include "utils/uuid.h"

#define NADI_MAX_WORKERS 64

/* NOTIFY channel of cell hosts with no embedded worker (payload: host id) */
#define NADI_CELL_CHANNEL "nadi_cell"

#define NADI_HOST_ID_LEN 64

typedef enum NadiWorkerKind
{
	NADI_WORKER_FREE = 0,
	NADI_WORKER_BROKER,
	NADI_WORKER_CELL,
	NADI_WORKER_NOTIFIER
} NadiWorkerKind;

/* Sessions with new events, waiting for the notifier to NOTIFY them. */
#define NADI_NOTIFY_RING 8192

typedef struct NadiWorkerSlot
{
	NadiWorkerKind kind;
	PGPROC	   *proc;
	char		host_id[NADI_HOST_ID_LEN];
} NadiWorkerSlot;

typedef struct NadiShared
{
	LWLock	   *lock;			/* protects slots */
	pg_atomic_uint64 cell_wakeups;	/* latches set for cells, for tests and stats */
	pg_atomic_uint64 broker_wakeups;
	NadiWorkerSlot slots[NADI_MAX_WORKERS];

	slock_t		ring_lock;		/* protects the ring below */
	Oid			notifier_db;	/* database of the attached notifier, or InvalidOid */
	uint64		ring_head;		/* next slot to write */
	uint64		ring_tail;		/* next slot to read */
	bool		ring_overflow;	/* entries were dropped: listeners must resync */
	pg_uuid_t	ring[NADI_NOTIFY_RING];
} NadiShared;

extern bool nadi_preloaded;

extern void nadi_shmem_startup(void);
extern void nadi_wake_cell_at_commit(const char *host_id);
extern void nadi_wake_broker_at_commit(void);
extern int	nadi_worker_attach(NadiWorkerKind kind, const char *host_id);
extern void nadi_worker_detach(int slot);
extern void nadi_notify_session(const pg_uuid_t *id, const char *id_text);
extern int	nadi_notify_drain(pg_uuid_t *out, int max, bool *overflow);

#endif							/* NADI_WAKE_H */
