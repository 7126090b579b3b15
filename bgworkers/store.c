/*
 * store.c — how a cell talks to Postgres: one SQL statement per call, in a
 * transaction of its own, with text parameters and rows returned as JSON
 * (row_to_json), so the agent loop above it deals in plain JSON and could
 * run over libpq just as well (an external nadi-celld).  Errors are caught
 * and returned with their SQLSTATE; the worker goes on.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "pgstat.h"
/* fmgrprotos.h declares the SQL function json_object(), as jansson does its own */
#define json_object pg_sql_json_object
#include "utils/builtins.h"
#undef json_object
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "cell.h"

/*
 * Run `sql` with text parameters $1..$n, wrapped as
 *   SELECT coalesce(json_agg(row_to_json(q)), '[]') FROM (sql) q
 * so any statement returning rows comes back as one JSON array.
 */
StoreResult
store_exec(const char *sql, int nargs, const char *const *args)
{
	StoreResult r = {0};
	MemoryContext caller = CurrentMemoryContext;
	volatile bool in_xact = false;

	pgstat_report_activity(STATE_RUNNING, sql);
	PG_TRY();
	{
		Oid		   *types = palloc(sizeof(Oid) * (nargs + 1));
		Datum	   *values = palloc(sizeof(Datum) * (nargs + 1));
		char	   *nulls = palloc(nargs + 1);
		char	   *wrapped = psprintf("SELECT coalesce(json_agg(row_to_json(q)), '[]')::text FROM (%s) q", sql);
		bool		isnull;
		char	   *out = NULL;

		for (int i = 0; i < nargs; i++)
		{
			types[i] = TEXTOID;
			values[i] = args[i] ? CStringGetTextDatum(args[i]) : (Datum) 0;
			nulls[i] = args[i] ? ' ' : 'n';
		}
		SetCurrentStatementStartTimestamp();	/* else now() stays at worker start */
		StartTransactionCommand();
		in_xact = true;
		PushActiveSnapshot(GetTransactionSnapshot());
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		if (SPI_execute_with_args(wrapped, nargs, types, values, nulls, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "cell statement failed: %s", sql);
		if (SPI_processed == 1)
		{
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

			if (!isnull)
				out = MemoryContextStrdup(caller, TextDatumGetCString(d));
		}
		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
		in_xact = false;
		if (out)
		{
			json_error_t jerr;

			r.rows = json_loads(out, 0, &jerr);
		}
		if (r.rows == NULL)
			r.rows = json_array();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(caller);
		edata = CopyErrorData();
		FlushErrorState();
		if (in_xact)
			AbortCurrentTransaction();
		r.sqlerrcode = edata->sqlerrcode;
		strlcpy(r.message, edata->message ? edata->message : "error", sizeof(r.message));
		r.rows = json_array();
		/* fencing and missing rows are expected outcomes, not noise */
		ereport(r.sqlerrcode == MAKE_SQLSTATE('N', 'A', '0', '0', '5') ? DEBUG1 : LOG,
				(errmsg("nadi cell: %s", r.message)));
		FreeErrorData(edata);
	}
	PG_END_TRY();
	pgstat_report_activity(STATE_IDLE, NULL);
	return r;
}

void
store_result_free(StoreResult *r)
{
	json_decref(r->rows);
	r->rows = NULL;
}

bool
store_is(const StoreResult *r, const char *sqlstate)
{
	return r->sqlerrcode == MAKE_SQLSTATE(sqlstate[0], sqlstate[1], sqlstate[2], sqlstate[3], sqlstate[4]);
}
