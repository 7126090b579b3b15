/*
 * worker.h — nadi's background workers: the broker (placement and healing,
 * one per cluster) and the embedded cell host (N worker processes that run
 * the agent loop).  Both attach to the database named by nadi.database.
 */
#ifndef NADI_WORKER_H
#define NADI_WORKER_H

#include "postgres.h"

extern char *nadi_database;
extern bool nadi_broker_enabled;
extern int	nadi_broker_naptime_ms;
extern int	nadi_cell_workers;
extern bool nadi_notifier_enabled;
extern int	nadi_retention_s;
extern int	nadi_audit_retention_s;
extern int	nadi_retention_interval_ms;

extern void nadi_workers_define_gucs(void);
extern void nadi_workers_register(void);

/* entry points, looked up by name by the postmaster */
extern PGDLLEXPORT void nadi_broker_main(Datum arg);
extern PGDLLEXPORT void nadi_cell_main(Datum arg);
extern PGDLLEXPORT void nadi_notifier_main(Datum arg);

/* worker.c: what every worker's main loop shares */
extern void worker_setup(const char *what);
extern bool worker_wait(long timeout_ms);
extern bool worker_wait_fd(long timeout_ms, pgsocket fd);
extern bool worker_reloaded(void);
extern bool worker_extension_ready(void);

#endif							/* NADI_WORKER_H */
