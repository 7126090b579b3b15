/*
 * wake.h — shared memory through which committing transactions wake the
 * workers that have something new to do (see wake.c).
 */
#ifndef NADI_WAKE_H
#define NADI_WAKE_H

#include "storage/proc.h"

#define NADI_MAX_WORKERS 64
#define NADI_HOST_ID_LEN 64

typedef enum NadiWorkerKind
{
	NADI_WORKER_FREE = 0,
	NADI_WORKER_BROKER,
	NADI_WORKER_CELL
} NadiWorkerKind;

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
} NadiShared;

extern NadiShared *nadi_shared;
extern bool nadi_preloaded;

extern void nadi_shmem_request(void);
extern void nadi_shmem_startup(void);
extern void nadi_wake_cell_at_commit(const char *host_id);
extern void nadi_wake_broker_at_commit(void);
extern int	nadi_worker_attach(NadiWorkerKind kind, const char *host_id);
extern void nadi_worker_detach(int slot);

#endif							/* NADI_WAKE_H */
