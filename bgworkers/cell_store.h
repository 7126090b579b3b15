/*
 * cell_store.h — how a cell reaches Postgres: the store interface.  A
 * store runs SQL statements with text parameters and gives back their rows
 * as JSON (arrays of column → value objects), either one statement in a
 * transaction of its own, or groups of statements in one transaction, a
 * subtransaction per group.  The embedded cell's store is SPI (store_spi.c); an external
 * cell's is libpq over one connection (BEGIN; SAVEPOINT g; …; RELEASE g; …
 * COMMIT).  No PostgreSQL headers: the runtime and its drivers include this.
 *
 * The agent runtime never calls a store: it returns a "store need" (a few
 * groups) and its driver runs them, alone or together with other sessions'
 * (bgworkers/README.md).  A non-blocking driver may run them whenever its
 * connection is free; nothing in the runtime waits for them.
 */
#ifndef NADI_CELL_STORE_H
#define NADI_CELL_STORE_H

#include <jansson.h>

/* SQLSTATE of a write refused because the lease moved on (lease_check, src/session_core.c) */
#include "nadi_errcodes.h"		/* generated from src/errcodes.txt; no PostgreSQL header */
#define NA_FENCED SQLSTATE_NADI_FENCED

/* One statement's outcome (CellStore.exec). */
typedef struct StoreResult
{
	char		sqlstate[6];	/* "" on success */
	char		message[512];
	json_t	   *rows;			/* array of objects (column → value), never NULL */
} StoreResult;

/* A group of statements that commit or roll back together. */
typedef struct StoreGroup
{
	json_t	   *stmts;			/* [[sql, [text args or null, ...]], ...] */
	char		sqlstate[6];	/* "" when the group committed */
	char		message[256];
	json_t	   *results;		/* one row array per statement */
} StoreGroup;

typedef struct CellStore
{
	void	   *ctx;

	/* Run sql with text parameters $1..$n in a transaction of its own. */
	void		(*exec) (void *ctx, const char *sql, int nargs, const char *const *args,
						 StoreResult *r);

	/*
	 * Run the groups in ONE transaction, each in a subtransaction: a group
	 * that fails rolls back alone (its SQLSTATE recorded), the others commit
	 * together.  A failed commit fails every group.
	 */
	void		(*exec_groups) (void *ctx, StoreGroup *groups, int ngroups);
} CellStore;

/* One statement for a StoreGroup: [sql, [args...]]. */
static inline json_t *
store_stmt(const char *sql, int nargs, const char *const *args)
{
	json_t	   *a = json_array();

	for (int i = 0; i < nargs; i++)
		json_array_append_new(a, args[i] ? json_string(args[i]) : json_null());
	return json_pack("[s, o]", sql, a);
}

static inline void
store_result_free(StoreResult *r)
{
	json_decref(r->rows);
	r->rows = NULL;
}

static inline void
store_group_free(StoreGroup *g)
{
	json_decref(g->stmts);
	json_decref(g->results);
	g->stmts = g->results = NULL;
}

/* The rows of a group's n-th statement (borrowed), or NULL. */
static inline json_t *
store_group_rows(const StoreGroup *g, int n)
{
	return json_array_get(g->results, n);
}

#endif							/* NADI_CELL_STORE_H */
