/*
 * store_pq.h — nadi-celld's store: the cell store interface
 * (bgworkers/cell_store.h) over libpq, blocking, on one connection.
 *
 * Every statement runs as the embedded cell's store runs it
 * (bgworkers/store_spi.c): wrapped as
 *
 *     SELECT coalesce(json_agg(row_to_json(q)), '[]')::text FROM (sql) q
 *
 * with text parameters, prepared once per connection and text, its rows
 * handed back as a JSON array of objects.  exec is one statement in a
 * transaction of its own; exec_groups is BEGIN, per group SAVEPOINT,
 * statements, RELEASE (or ROLLBACK TO, the group failed alone), COMMIT,
 * pipelined (libpq pipeline mode): one round trip for up to 64 groups, one
 * more per failed group, and the COMMIT.
 *
 * A broken connection fails what was under way (08006; 08007 when the
 * outcome cannot be known: lost while a COMMIT or a lone statement waited
 * for its answer) and is made again on the next call, no sooner than the
 * back-off of daemonlib/pq allows: in between, calls fail at once (the
 * cell's loop never sleeps here).  Every wait for an answer is bounded.
 */
#ifndef NADI_CELLD_STORE_PQ_H
#define NADI_CELLD_STORE_PQ_H

#include <stdbool.h>
#include <stdint.h>

#include "bgworkers/cell_store.h"
#include "daemonlib/pq.h"

/* SQLSTATEs of a broken connection (PostgreSQL's names) */
#define STORE_PQ_CONNECTION_FAILURE "08006"
#define STORE_PQ_RESOLUTION_UNKNOWN "08007" /* transaction_resolution_unknown */

typedef struct StorePq StorePq;

/*
 * Called on every new connection before it is used: 0 to use it, < 0 to
 * drop it (and wait the back-off).  msg gets why (logged by the store).
 */
typedef int (*StorePqCheck)(PGconn *pg, void *arg, char *msg, size_t msglen);

typedef struct StorePqStats
{
	uint64_t statements; /* run (each statement of a group too) */
	uint64_t failures;	 /* statements that failed (not the connection) */
	uint64_t batches;	 /* exec_groups transactions */
	uint64_t connects;	 /* connections made */
	uint64_t lost;		 /* connections that broke under a call */
} StorePqStats;

/*
 * A store on params (copied), waiting at most timeout_ms for any answer.
 * It connects on first use.  NULL when out of memory.
 */
StorePq *
store_pq_new(const PqConnParams *params, uint64_t timeout_ms, StorePqCheck check, void *check_arg);
void store_pq_free(StorePq *s);

/* The CellStore of s (valid while s is). */
const CellStore *store_pq_store(StorePq *s);

/*
 * Connect now if down and the back-off allows: 0 when up, -EAGAIN while
 * waiting out the back-off, -EIO when connecting failed, -EPERM when the
 * check refused the connection.
 */
int store_pq_connect(StorePq *s);

bool		store_pq_up(const StorePq *s);
const char *store_pq_last_error(const StorePq *s);
void		store_pq_stats(const StorePq *s, StorePqStats *out);

#endif /* NADI_CELLD_STORE_PQ_H */
