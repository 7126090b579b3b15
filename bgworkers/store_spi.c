/*
 * store_spi.c — the embedded cell's store (cell_store.h) over SPI: one SQL
 * statement in a transaction of its own, or groups of statements in one
 * transaction with a subtransaction each, with text parameters and rows
 * returned as JSON (row_to_json), so the runtime above it deals in plain
 * JSON and runs over libpq just as well.  Errors are caught and returned
 * with their SQLSTATE (nothing longjmps out of here); the worker goes on.
 */
#include "postgres.h"

#include "access/xact.h"
#include "utils/resowner.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
/* fmgrprotos.h declares the SQL function json_object(), as jansson does its own */
#define json_object pg_sql_json_object
#include "utils/builtins.h"
#undef json_object
#include "utils/memutils.h"
#include "utils/hsearch.h"
#include "utils/snapmgr.h"

#include "cell_store.h"
#include "store_spi.h"

/*
 * The group's PG_TRY nests inside the batch's.  PostgreSQL 16 gave PG_TRY,
 * PG_CATCH and PG_END_TRY an optional suffix so that a nested block's locals
 * do not shadow the outer ones (PGXS builds with -Wshadow=compatible-local
 * since 16); PostgreSQL 15's macros take no argument.
 */
#if PG_VERSION_NUM >= 160000
#define NADI_PG_INNER_TRY()		PG_TRY(inner)
#define NADI_PG_INNER_CATCH()	PG_CATCH(inner)
#define NADI_PG_INNER_END_TRY()	PG_END_TRY(inner)
#else
#define NADI_PG_INNER_TRY()		PG_TRY()
#define NADI_PG_INNER_CATCH()	PG_CATCH()
#define NADI_PG_INNER_END_TRY()	PG_END_TRY()
#endif

/*
 * In a PG_CATCH block: keep the error's SQLSTATE and message in the
 * caller's buffers and clear the error state (the caller then rolls back).
 */
static void
store_spi_caught(MemoryContext caller, char *sqlstate, char *message, size_t msglen)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(caller);
	edata = CopyErrorData();
	FlushErrorState();
	strlcpy(sqlstate, unpack_sql_state(edata->sqlerrcode), 6);
	strlcpy(message, edata->message ? edata->message : "error", msglen);
	FreeErrorData(edata);
}

/* fencing and missing rows are expected outcomes, not noise */
static void
store_spi_log_failure(const char *sqlstate, const char *message)
{
	ereport(strcmp(sqlstate, NA_FENCED) == 0 ? DEBUG1 : LOG,
			(errmsg("nadi cell: %s", message)));
}

/*
 * Kept plans, one per distinct statement text (a cell uses a handful), so a
 * statement is parsed and planned once per worker, not once per call.
 */
typedef struct PlanEntry
{
	char		key[NAMEDATALEN * 8];	/* statement text (truncated key) */
	SPIPlanPtr	plan;
	char	   *sql;
} PlanEntry;

static SPIPlanPtr
store_plan(const char *sql, int nargs)
{
	static HTAB *plans = NULL;
	PlanEntry  *e;
	bool		found;
	char		key[NAMEDATALEN * 8];

	if (plans == NULL)
	{
		HASHCTL		ctl = {0};

		ctl.keysize = sizeof(key);
		ctl.entrysize = sizeof(PlanEntry);
		plans = hash_create("nadi cell plans", 64, &ctl, HASH_ELEM | HASH_STRINGS);
	}
	memset(key, 0, sizeof(key));
	strlcpy(key, sql, sizeof(key));
	e = hash_search(plans, key, HASH_ENTER, &found);
	if (!found)
	{
		/* stays empty if preparing fails: the next call tries again */
		e->plan = NULL;
		e->sql = NULL;
	}
	if (e->plan == NULL || strcmp(e->sql, sql) != 0)
	{
		Oid		   *types = palloc(sizeof(Oid) * (nargs + 1));
		char	   *wrapped = psprintf("SELECT coalesce(json_agg(row_to_json(q)), '[]')::text FROM (%s) q", sql);
		SPIPlanPtr	plan;

		for (int i = 0; i < nargs; i++)
			types[i] = TEXTOID;
		plan = SPI_prepare(wrapped, nargs, types);
		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed for \"%s\": %s", sql, SPI_result_code_string(SPI_result));
		if (e->plan != NULL)
			return plan;		/* another statement with the same long prefix: not kept */
		SPI_keepplan(plan);
		e->sql = MemoryContextStrdup(TopMemoryContext, sql);
		e->plan = plan;
	}
	return e->plan;
}

/* Run a statement through its kept plan; return its rows as a JSON array. */
static json_t *
store_run(const char *sql, int nargs, Datum *values, const char *nulls)
{
	bool		isnull;
	json_t	   *rows = NULL;

	if (SPI_execute_plan(store_plan(sql, nargs), values, nulls, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "cell statement failed: %s", sql);
	if (SPI_processed == 1)
	{
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		json_error_t jerr;

		if (!isnull)
			rows = json_loads(TextDatumGetCString(d), 0, &jerr);
	}
	return rows ? rows : json_array();
}

/*
 * Run `sql` with text parameters $1..$n, wrapped as
 *   SELECT coalesce(json_agg(row_to_json(q)), '[]') FROM (sql) q
 * so any statement returning rows comes back as one JSON array.
 */
static void
spi_exec(void *ctx, const char *sql, int nargs, const char *const *args, StoreResult *out)
{
	StoreResult r = {0};
	MemoryContext caller = CurrentMemoryContext;
	volatile bool in_xact = false;

	/* a worker told to stop stops here, before it writes anything more */
	CHECK_FOR_INTERRUPTS();
	pgstat_report_activity(STATE_RUNNING, sql);
	PG_TRY();
	{
		Datum	   *values = palloc(sizeof(Datum) * (nargs + 1));
		char	   *nulls = palloc(nargs + 1);
		json_t	   *rows;

		for (int i = 0; i < nargs; i++)
		{
			values[i] = args[i] ? CStringGetTextDatum(args[i]) : (Datum) 0;
			nulls[i] = args[i] ? ' ' : 'n';
		}
		SetCurrentStatementStartTimestamp();	/* else now() stays at worker start */
		StartTransactionCommand();
		in_xact = true;
		PushActiveSnapshot(GetTransactionSnapshot());
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		rows = store_run(sql, nargs, values, nulls);
		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
		in_xact = false;
		r.rows = rows;
	}
	PG_CATCH();
	{
		store_spi_caught(caller, r.sqlstate, r.message, sizeof(r.message));
		if (in_xact)
			AbortCurrentTransaction();
		r.rows = json_array();
		store_spi_log_failure(r.sqlstate, r.message);
	}
	PG_END_TRY();
	pgstat_report_activity(STATE_IDLE, NULL);
	*out = r;
}

/*
 * Run groups of statements in ONE transaction, each group in a
 * subtransaction of its own: a group that fails is rolled back alone (its
 * SQLSTATE recorded), the others commit together.  This is how a cell
 * amortizes one commit over the work of many sessions.  Each group's stmts
 * is an array of [sql, [text args...]]; results get one row array per
 * statement.
 */
static void
spi_exec_groups(void *ctx, StoreGroup *groups, int ngroups)
{
	MemoryContext caller = CurrentMemoryContext;
	ResourceOwner owner;
	volatile bool in_xact = false;

	if (ngroups == 0)
		return;
	CHECK_FOR_INTERRUPTS();
	pgstat_report_activity(STATE_RUNNING, "nadi cell: batch");
	PG_TRY();
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		in_xact = true;
		PushActiveSnapshot(GetTransactionSnapshot());
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		owner = CurrentResourceOwner;
		for (volatile int g = 0; g < ngroups; g++)
		{
			StoreGroup *grp = &groups[g];
			MemoryContext xact_ctx = CurrentMemoryContext;

			grp->sqlstate[0] = '\0';
			json_decref(grp->results);
			grp->results = json_array();
			BeginInternalSubTransaction(NULL);
			MemoryContextSwitchTo(xact_ctx);
			NADI_PG_INNER_TRY();
			{
				size_t		i;
				json_t	   *stmt;

				json_array_foreach(grp->stmts, i, stmt)
				{
					json_t	   *args = json_array_get(stmt, 1);
					int			nargs = (int) json_array_size(args);
					Datum	   *values = palloc(sizeof(Datum) * (nargs + 1));
					char	   *nulls = palloc(nargs + 1);

					for (int a = 0; a < nargs; a++)
					{
						json_t	   *v = json_array_get(args, a);

						nulls[a] = json_is_string(v) ? ' ' : 'n';
						values[a] = json_is_string(v) ? CStringGetTextDatum(json_string_value(v)) : (Datum) 0;
					}
					json_array_append_new(grp->results,
										  store_run(json_string_value(json_array_get(stmt, 0)), nargs, values, nulls));
				}
				ReleaseCurrentSubTransaction();
				MemoryContextSwitchTo(xact_ctx);
				CurrentResourceOwner = owner;
			}
			NADI_PG_INNER_CATCH();
			{
				store_spi_caught(caller, grp->sqlstate, grp->message, sizeof(grp->message));
				RollbackAndReleaseCurrentSubTransaction();
				MemoryContextSwitchTo(xact_ctx);
				CurrentResourceOwner = owner;
				store_spi_log_failure(grp->sqlstate, grp->message);
			}
			NADI_PG_INNER_END_TRY();
		}
		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
		in_xact = false;
	}
	PG_CATCH();
	{
		/* the transaction itself failed (e.g. at commit): every group did */
		store_spi_caught(caller, groups[0].sqlstate, groups[0].message, sizeof(groups[0].message));
		if (in_xact)
			AbortCurrentTransaction();
		for (int g = 1; g < ngroups; g++)
		{
			memcpy(groups[g].sqlstate, groups[0].sqlstate, sizeof(groups[g].sqlstate));
			memcpy(groups[g].message, groups[0].message, sizeof(groups[g].message));
		}
		ereport(LOG, (errmsg("nadi cell: batch failed: %s", groups[0].message)));
	}
	PG_END_TRY();
	MemoryContextSwitchTo(caller);
	pgstat_report_activity(STATE_IDLE, NULL);
}

const CellStore store_spi = {NULL, spi_exec, spi_exec_groups};
