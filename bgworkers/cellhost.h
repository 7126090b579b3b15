/*
 * cellhost.h — a cell host's work, with no PostgreSQL header: the sessions
 * it holds (leases taken, renewed, released), its rounds (claims and
 * commits, batched across sessions) and the non-blocking driver of the
 * agent runtime: every session's model call, tool call or timer is in
 * flight at once (curl multi), while the host keeps claiming, committing
 * and renewing for its other sessions.  Per session, one command at a time
 * and one need at a time, as the runtime requires.
 *
 * Two hosts embed it: the embedded cell (bgworkers/cell.c: SPI store, the
 * worker's latch) and nadi-celld (celld/: libpq store, an epoll loop).  The
 * host owns the loop:
 *
 *     ch = cellhost_new(store, &cfg, &rcfg)
 *     loop:
 *         ms = cellhost_run(ch)                do what is due
 *         wait until cellhost_fd(ch) is readable, a wake-up (cellhost_wake:
 *         a command may be there), or ms have passed
 *
 * Every store call is the host's store (blocking, short); HTTP never blocks.
 * Memory is malloc'd (jansson); nothing longjmps.
 */
#ifndef NADI_CELLHOST_H
#define NADI_CELLHOST_H

#include <stdbool.h>
#include <stdint.h>

#include "cell_store.h"
#include "runtime.h"

typedef struct CellHostConfig
{
	const char *host_id;
	const char *address;		/* what cell_host_register records ("embedded", a URL) */
	int			capacity;		/* sessions offered to the placer */
	int			workers;		/* sessions are partitioned between cells of one host id: */
	int			index;			/* this cell takes those whose id's last byte % workers == index */
	long		heartbeat_ms;	/* the host's heartbeat, and the longest a round is put off */
	long		idle_suspend_ms;	/* a session with nothing open this long is released */
	int			max_in_flight;	/* commands under way at once in this cell (0: no limit) */
	int			max_in_flight_tenant;	/* of them, of one tenant (0: no limit) */
} CellHostConfig;

/* What a cell is doing, for /metrics and the docs (cellhost_stats). */
typedef struct CellHostStats
{
	long		sessions;		/* leases held */
	long		in_flight;		/* commands under way */
	long		waiting_http;	/* of them, waiting on a model or tool call */
	long		waiting_timer;	/* of them, on a timer */
	long		tenants_in_flight;	/* tenants with a command under way */
	long		tenant_max_in_flight;	/* the most any one tenant has under way */
	uint64_t	commands_started;
	uint64_t	commands_finished;
	uint64_t	deferred_cell;	/* claims put off: the cell was at max_in_flight */
	uint64_t	deferred_tenant;	/* claims put off: the tenant was at max_in_flight_tenant */
	uint64_t	leases_lost;	/* sessions dropped because their lease moved on */
	uint64_t	rounds;
} CellHostStats;

typedef struct CellHost CellHost;

/*
 * A cell on store; cfg and rcfg are copied (strings too), so the host may
 * change its own afterwards.  NULL when out of memory or curl fails.
 */
extern CellHost *cellhost_new(const CellStore *store, const CellHostConfig *cfg,
							  const RuntimeConfig *rcfg);

/* New settings (a reload): taken at once; commands under way keep their requests. */
extern void cellhost_configure(CellHost *ch, const CellHostConfig *cfg, const RuntimeConfig *rcfg);

/* Readable when a call in flight needs attention: then call cellhost_run. */
extern int	cellhost_fd(CellHost *ch);

/* A command may have been enqueued (or a session placed): the next run has a round. */
extern void cellhost_wake(CellHost *ch);

/*
 * Do everything that is due: a round when woken or due (heartbeat, list,
 * take, release, claim), calls that finished, timers that fired, the store
 * needs that came up (batched), the commits of finished commands (one
 * transaction), renewals.  Returns how many ms may pass before the next
 * call (0: call again at once), the fd aside.
 */
extern long cellhost_run(CellHost *ch);

/* Stop claiming (a drain): commands under way go on; cellhost_stats says how many. */
extern void cellhost_stop_claiming(CellHost *ch);

/*
 * Let go of every session: calls in flight are taken back (their outcome
 * thrown away: the next attempt finds on record what was written), each
 * session gets its cell.checkpoint and its lease is released.
 */
extern void cellhost_release_all(CellHost *ch);

extern void cellhost_stats(CellHost *ch, CellHostStats *out);

/* The cell's runtime (its configuration and caches), for tests and hosts. */
extern Runtime *cellhost_runtime(CellHost *ch);

extern void cellhost_free(CellHost *ch);

#endif							/* NADI_CELLHOST_H */
