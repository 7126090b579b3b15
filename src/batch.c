/*
 * batch.c — the set-based calls of a cell host: one statement claims the
 * next command of many sessions (nadi.command_claim_many), one renews many
 * leases (nadi.lease_renew_many), one completes many commands and appends
 * their events (nadi.command_complete_many).  The caller names the sessions
 * it holds and the epoch it holds each at; every claim, renewal and
 * completion is fenced by that epoch, and a session whose lease moved on is
 * reported, not raised, so one lost session does not abort the others.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

#include "nadi.h"
#include "session.h"

/*
 * The named sessions whose lease host ($1) holds at the named epoch ($2
 * session_ids, $3 epochs), unexpired at $4 (nadi.now()): the fence of
 * lease_check, in SQL, for a look before locking.  u.ord is the 1-based
 * index of the session in the call.
 */
#define BATCH_HELD_LEASES \
	"FROM unnest($2::uuid[], $3::bigint[]) WITH ORDINALITY AS u(session_id, epoch, ord) " \
	"JOIN nadi.session_leases l ON l.session_id = u.session_id " \
	"  AND l.cell_host_id = $1 AND l.epoch = u.epoch AND l.expires_at > $4 "

/* The most sessions one call may name, and the most claims it may make. */
#define BATCH_MAX_SESSIONS 100000
#define BATCH_MAX_CLAIMS 1000

/* The sessions a call names, and the epoch the caller holds each at. */
typedef struct BatchSessions
{
	int			n;
	Datum	   *ids;			/* uuid datums, in the caller's order */
	int64	   *epochs;
	Datum		ids_array;		/* the arguments, detoasted, for SPI */
	Datum		epochs_array;
} BatchSessions;

/* A named session to lock: its index in BatchSessions, sorted by uuid. */
typedef struct BatchTarget
{
	int			i;
	pg_uuid_t	id;
} BatchTarget;

/* qsort and bsearch comparators: uuids by their bytes, the order of uuid_cmp */
static int
batch_uuid_cmp(const void *a, const void *b)
{
	return memcmp(a, b, UUID_LEN);
}

static int
uuid_datum_cmp(const void *a, const void *b)
{
	return batch_uuid_cmp(DatumGetUUIDP(*(const Datum *) a), DatumGetUUIDP(*(const Datum *) b));
}

static int
batch_target_cmp(const void *a, const void *b)
{
	return batch_uuid_cmp(&((const BatchTarget *) a)->id, &((const BatchTarget *) b)->id);
}

/* A uuid[] or bigint[] argument as datums: not NULL, one dimension, no NULL element. */
static Datum *
batch_array(FunctionCallInfo fcinfo, int arg, const char *name, int *n, Datum *array)
{
	ArrayType  *a;
	Oid			elem;
	int16		len;
	bool		byval;
	char		align;
	Datum	   *values;
	bool	   *nulls;

	NADI_ARG_NOT_NULL(arg, name);
	a = PG_GETARG_ARRAYTYPE_P(arg);
	*array = PointerGetDatum(a);
	if (ARR_NDIM(a) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a one-dimensional array", name)));
	elem = ARR_ELEMTYPE(a);
	get_typlenbyvalalign(elem, &len, &byval, &align);
	deconstruct_array(a, elem, len, byval, align, &values, &nulls, n);
	for (int i = 0; i < *n; i++)
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("%s must not contain nulls", name),
					 errdetail("Element %d is null.", i + 1)));
	return values;
}

/*
 * The session_ids and epochs arguments, checked: the same length, at most
 * BATCH_MAX_SESSIONS, no NULL and no session named twice.  Before SPI.
 */
static BatchSessions
batch_sessions(FunctionCallInfo fcinfo, int ids_arg, int epochs_arg)
{
	BatchSessions b;
	int			n_epochs;
	Datum	   *epochs;
	Datum	   *sorted;

	b.ids = batch_array(fcinfo, ids_arg, "session_ids", &b.n, &b.ids_array);
	epochs = batch_array(fcinfo, epochs_arg, "epochs", &n_epochs, &b.epochs_array);
	if (b.n != n_epochs)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("session_ids and epochs must have the same length"),
				 errdetail("session_ids has %d elements and epochs %d.", b.n, n_epochs),
				 errhint("Pass the epoch the caller holds each session at, in the same order.")));
	if (b.n > BATCH_MAX_SESSIONS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("too many sessions in one call"),
				 errdetail("%d sessions were given; the limit is %d.", b.n, BATCH_MAX_SESSIONS),
				 errhint("Split the sessions over several calls.")));
	b.epochs = palloc(sizeof(int64) * (b.n + 1));
	for (int i = 0; i < b.n; i++)
		b.epochs[i] = DatumGetInt64(epochs[i]);

	sorted = palloc(sizeof(Datum) * (b.n + 1));
	memcpy(sorted, b.ids, sizeof(Datum) * b.n);
	qsort(sorted, b.n, sizeof(Datum), uuid_datum_cmp);
	for (int i = 1; i < b.n; i++)
		if (uuid_datum_cmp(&sorted[i - 1], &sorted[i]) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("session_ids must not name a session twice"),
					 errdetail("Session %s is named more than once.",
							   nadi_uuid_out(DatumGetUUIDP(sorted[i])))));
	pfree(sorted);
	return b;
}

/* The named session i as a target to lock. */
static BatchTarget
batch_target(const BatchSessions *b, int i)
{
	BatchTarget t;

	t.i = i;
	t.id = *DatumGetUUIDP(b->ids[i]);
	return t;
}

/* $1 host, $2 session_ids, $3 epochs, $4 nadi.now(): the batches' look parameters. */
static void
batch_look_values(Datum *values, const char *host, const BatchSessions *b)
{
	values[0] = CStringGetTextDatum(host);
	values[1] = b->ids_array;
	values[2] = b->epochs_array;
	values[3] = TimestampTzGetDatum(nadi_now());
}

/*
 * Lock a target session and decide again under the lock: the session if
 * host holds its lease at the named epoch, unexpired; NULL (fenced) if not.
 * Callers lock their targets in uuid order (batch_target_cmp), the order
 * of reap and place_pending, so concurrent batches cannot deadlock.
 */
static SessionTx *
batch_lock_held(const BatchSessions *b, const BatchTarget *t, const char *host)
{
	SessionTx  *tx = session_lock(&t->id);
	LeaseInfo	l = lease_read(tx);

	if (!lease_current(&l, b->epochs[t->i]) || strcmp(l.cell_host_id, host) != 0)
		return NULL;
	return tx;
}

/*
 * One row of command_claim_many: (session_id, epoch, status, command_id,
 * type, payload, attempts).  claimed is the command_inbox row, or NULL for
 * a session reported as fenced.
 */
static void
claim_row(FunctionCallInfo fcinfo, Datum id, int64 epoch, SPITupleTable *claimed)
{
	static const char *const columns[] = {"command_id", "type", "payload", "attempts"};
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Datum		values[7];
	bool		nulls[7] = {false, false, false, true, true, true, true};

	values[0] = id;
	values[1] = Int64GetDatum(epoch);
	values[2] = CStringGetTextDatum(claimed ? "claimed" : "fenced");
	for (int k = 0; claimed && k < lengthof(columns); k++)
		values[3 + k] = SPI_getbinval(claimed->vals[0], claimed->tupdesc,
									  SPI_fnumber(claimed->tupdesc, columns[k]), &nulls[3 + k]);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

/*
 * nadi.command_claim_many(host_id, session_ids, epochs, max_n)
 *   → setof (session_id, epoch, status, command_id, type, payload, attempts)
 * Claims the next command of up to max_n of the named sessions, each as
 * nadi.command_claim(session, epoch) would (inbox_claim_head, under the
 * session lock), and reports every named session whose lease is not held by
 * host_id at the given epoch, unexpired, as 'fenced'.  Sessions with nothing
 * to claim are not returned.
 *
 * A lock-free look first picks the sessions worth locking (held, head
 * queued and due): the oldest-due max_n of them.  Those are then locked one
 * at a time in session_id order (the order reap and place_pending lock in)
 * and decided again under the lock.  Idle sessions cost one probe each in
 * the look and take no lock.  A fenced verdict of the look is final: an
 * epoch that is not current, or a lease that expired, never comes back.
 */
PG_FUNCTION_INFO_V1(nadi_command_claim_many);
Datum
nadi_command_claim_many(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr look_plan = NULL;
	char	   *host;
	BatchSessions b;
	int32		max_n;
	Datum		values[4];
	SPITupleTable *tt;
	uint64		rows;
	BatchTarget *targets;
	int			ntargets = 0;

	NADI_ARG_NOT_NULL(0, "host_id");
	NADI_ARG_NOT_NULL(3, "max_n");
	host = text_to_cstring(PG_GETARG_TEXT_PP(0));
	b = batch_sessions(fcinfo, 1, 2);
	max_n = PG_GETARG_INT32(3);
	if (max_n < 1 || max_n > BATCH_MAX_CLAIMS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_n must be between 1 and %d", BATCH_MAX_CLAIMS),
				 errdetail("The max_n given was %d.", max_n)));
	InitMaterializedSRF(fcinfo, 0);

	nadi_connect();
	nadi_require_host_binding("cell", host, "claim commands for");
	if (b.n == 0)
	{
		nadi_finish();
		return (Datum) 0;
	}

	/* 1. without locks: the sessions fenced, then those worth locking */
	batch_look_values(values, host, &b);
	nadi_exec(nadi_plan(&look_plan,
						"SELECT m.ord::integer, m.held FROM ("
						"  SELECT u.session_id, u.ord, coalesce(l.cell_host_id = $1 "
						"    AND l.epoch = u.epoch AND l.expires_at > $4, false) AS held "
						"  FROM unnest($2::uuid[], $3::bigint[]) WITH ORDINALITY AS u(session_id, epoch, ord) "
						"  LEFT JOIN nadi.session_leases l ON l.session_id = u.session_id) m "
						"LEFT JOIN LATERAL (SELECT c.status, c.available_at FROM nadi.command_inbox c "
						"  WHERE m.held AND c.session_id = m.session_id "
						"  AND c.status IN ('queued', 'running', 'waiting') "
						"  ORDER BY c.command_id LIMIT 1) h ON true "
						"WHERE NOT m.held OR (h.status = 'queued' AND h.available_at <= $4) "
						"ORDER BY m.held, h.available_at, m.session_id",
						4, (Oid[]) {TEXTOID, UUIDARRAYOID, INT8ARRAYOID, TIMESTAMPTZOID}),
			  values, NULL, true, 0);
	tt = SPI_tuptable;
	rows = SPI_processed;
	targets = palloc(sizeof(BatchTarget) * (Min(rows, (uint64) max_n) + 1));
	for (uint64 r = 0; r < rows; r++)
	{
		bool		isnull;
		int			i = DatumGetInt32(SPI_getbinval(tt->vals[r], tt->tupdesc, 1, &isnull)) - 1;
		bool		held = DatumGetBool(SPI_getbinval(tt->vals[r], tt->tupdesc, 2, &isnull));

		if (!held)
			claim_row(fcinfo, b.ids[i], b.epochs[i], NULL);
		else if (ntargets < max_n)
			targets[ntargets++] = batch_target(&b, i);
	}

	/* 2. one session at a time, in session_id order, decided under its lock */
	qsort(targets, ntargets, sizeof(BatchTarget), batch_target_cmp);
	for (int t = 0; t < ntargets; t++)
	{
		int			i = targets[t].i;
		SessionTx  *tx = batch_lock_held(&b, &targets[t], host);

		if (tx == NULL)
			claim_row(fcinfo, b.ids[i], b.epochs[i], NULL);
		else
		{
			SPITupleTable *claimed = inbox_claim_head(tx, b.epochs[i]);

			if (claimed)
				claim_row(fcinfo, b.ids[i], b.epochs[i], claimed);
		}
	}
	nadi_finish();
	return (Datum) 0;
}

/*
 * nadi.lease_renew_many(host_id, session_ids, epochs)
 *   → setof (session_id, ok, expires_in_ms)
 * Renews, in one statement, every named lease that host_id holds at the
 * given epoch and that has not expired: each is then good for
 * nadi.lease_ttl from this transaction's nadi.now(), as nadi.lease_renew
 * makes it.  One row per named session, in the caller's order; ok = false
 * means the session is no longer the caller's (its epoch moved on, it was
 * released, it expired, another host holds it, or it does not exist).
 * expires_in_ms is the time left, measured when the renewal is done, so a
 * cell on another machine needs no clock shared with the database.
 *
 * The session rows of the leases that look renewable are locked first, in
 * session_id order (writers of a lease hold its session's lock, and the
 * reaper and takeover decide under it); the UPDATE then re-checks each
 * lease, so a lease the reaper moved on while we waited is not renewed.
 */
PG_FUNCTION_INFO_V1(nadi_lease_renew_many);
Datum
nadi_lease_renew_many(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr lock_plan = NULL;
	static SPIPlanPtr renew_plan = NULL;
	ReturnSetInfo *rsinfo;
	char	   *host;
	BatchSessions b;
	Datum		values[5];
	TimestampTz expires_at;
	int64		expires_in_ms;
	pg_uuid_t  *renewed;
	uint64		nrenewed;

	NADI_ARG_NOT_NULL(0, "host_id");
	host = text_to_cstring(PG_GETARG_TEXT_PP(0));
	b = batch_sessions(fcinfo, 1, 2);
	InitMaterializedSRF(fcinfo, 0);
	rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	nadi_connect();
	nadi_require_host_binding("cell", host, "renew leases for");
	if (b.n == 0)
	{
		nadi_finish();
		return (Datum) 0;
	}
	expires_at = nadi_now() + (TimestampTz) nadi_lease_ttl_ms * 1000;
	batch_look_values(values, host, &b);
	values[4] = TimestampTzGetDatum(expires_at);
	nadi_exec(nadi_plan(&lock_plan,
						"SELECT s.session_id " BATCH_HELD_LEASES
						"JOIN nadi.sessions s ON s.session_id = u.session_id "
						"ORDER BY s.session_id FOR NO KEY UPDATE OF s",
						4, (Oid[]) {TEXTOID, UUIDARRAYOID, INT8ARRAYOID, TIMESTAMPTZOID}),
			  values, NULL, false, 0);
	nadi_exec(nadi_plan(&renew_plan,
						"UPDATE nadi.session_leases l SET renewed_at = $4, expires_at = $5 "
						"FROM unnest($2::uuid[], $3::bigint[]) AS u(session_id, epoch) "
						"WHERE l.session_id = u.session_id AND l.cell_host_id = $1 "
						"AND l.epoch = u.epoch AND l.expires_at > $4 "
						"RETURNING l.session_id",
						5, (Oid[]) {TEXTOID, UUIDARRAYOID, INT8ARRAYOID, TIMESTAMPTZOID,
						TIMESTAMPTZOID}),
			  values, NULL, false, 0);
	renewed = nadi_spi_uuids(&nrenewed);
	qsort(renewed, nrenewed, sizeof(pg_uuid_t), batch_uuid_cmp);

	/* the time left, from now (not from the transaction's start) */
	expires_in_ms = (expires_at - (GetCurrentTimestamp() + (TimestampTz) nadi_clock_offset_ms * 1000)) / 1000;
	for (int i = 0; i < b.n; i++)
	{
		Datum		out[3];
		bool		nulls[3] = {false, false, false};
		bool		ok = bsearch(DatumGetUUIDP(b.ids[i]), renewed, nrenewed, sizeof(pg_uuid_t),
								 batch_uuid_cmp) != NULL;

		out[0] = b.ids[i];
		out[1] = BoolGetDatum(ok);
		out[2] = Int64GetDatum(Max(expires_in_ms, 0));
		nulls[2] = !ok;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, out, nulls);
	}
	nadi_finish();
	return (Datum) 0;
}

/*
 * A jsonb[] argument as one Jsonb per element (NULL for a NULL element, or
 * for all of them when the argument is NULL); n elements are required.
 */
static Jsonb **
batch_jsonbs(FunctionCallInfo fcinfo, int arg, const char *name, int n)
{
	Jsonb	  **out = palloc0(sizeof(Jsonb *) * (n + 1));
	ArrayType  *a;
	Datum	   *values;
	bool	   *nulls;
	int			count;

	if (PG_ARGISNULL(arg))
		return out;
	a = PG_GETARG_ARRAYTYPE_P(arg);
	if (ARR_NDIM(a) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a one-dimensional array", name)));
	deconstruct_array(a, JSONBOID, -1, false, TYPALIGN_INT, &values, &nulls, &count);
	if (count != n)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("session_ids and %s must have the same length", name),
				 errdetail("session_ids has %d elements and %s %d.", n, name, count)));
	for (int i = 0; i < n; i++)
		out[i] = nulls[i] ? NULL : DatumGetJsonbP(values[i]);
	return out;
}

/*
 * nadi.command_complete_many(host_id, session_ids, epochs, command_ids,
 *                            results, events)
 *   → setof (session_id, command_id, status)
 * Completes one running command per named session, each as
 * nadi.command_complete(session_id, command_id, epoch, result, events)
 * would (inbox_complete_locked), in one statement: the sessions are locked
 * one at a time in session_id order, every one's events and its
 * command.completed are kept in one EventBatch and inserted by one
 * multi-row INSERT at the end, and each session's row (last_seq) is written
 * once.  An item whose lease is not host_id's at its epoch, unexpired, is
 * reported 'fenced' with nothing written for it; so is a command claimed
 * under another epoch.  A missing command is 'not_found', one that is not
 * running 'not_running'.  Bad input (shapes, sizes, event kinds) raises and
 * the whole call changes nothing.
 */
PG_FUNCTION_INFO_V1(nadi_command_complete_many);
Datum
nadi_command_complete_many(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr look_plan = NULL;
	ReturnSetInfo *rsinfo;
	char	   *host;
	BatchSessions b;
	Datum	   *command_ids;
	int			n_commands;
	Datum		commands_array;
	Jsonb	  **results;
	Jsonb	  **events;
	BatchTarget *order;
	int			norder = 0;
	const char **statuses;
	EventBatch	batch = {0};
	Datum		values[4];

	NADI_ARG_NOT_NULL(0, "host_id");
	host = text_to_cstring(PG_GETARG_TEXT_PP(0));
	b = batch_sessions(fcinfo, 1, 2);
	command_ids = batch_array(fcinfo, 3, "command_ids", &n_commands, &commands_array);
	if (n_commands != b.n)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("session_ids and command_ids must have the same length"),
				 errdetail("session_ids has %d elements and command_ids %d.", b.n, n_commands)));
	results = batch_jsonbs(fcinfo, 4, "results", b.n);
	events = batch_jsonbs(fcinfo, 5, "events", b.n);
	statuses = palloc(sizeof(char *) * (b.n + 1));
	for (int i = 0; i < b.n; i++)
	{
		if (results[i] == NULL)
			results[i] = nadi_jsonb("{}");
		nadi_check_payload(results[i], "command result");
		if (events[i])
			events_check_array(events[i]);
		statuses[i] = "fenced";
	}
	InitMaterializedSRF(fcinfo, 0);
	rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	nadi_connect();
	nadi_require_host_binding("cell", host, "complete commands for");

	/* without locks: the sessions whose lease looks like the caller's */
	batch_look_values(values, host, &b);
	nadi_exec(nadi_plan(&look_plan,
						"SELECT u.ord::integer " BATCH_HELD_LEASES,
						4, (Oid[]) {TEXTOID, UUIDARRAYOID, INT8ARRAYOID, TIMESTAMPTZOID}),
			  values, NULL, true, 0);
	order = palloc(sizeof(BatchTarget) * (SPI_processed + 1));
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		int			i = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1,
												   &isnull)) - 1;

		order[norder++] = batch_target(&b, i);
	}

	/* one session at a time, in session_id order, decided under its lock */
	qsort(order, norder, sizeof(BatchTarget), batch_target_cmp);
	for (int t = 0; t < norder; t++)
	{
		int			i = order[t].i;
		SessionTx  *tx = batch_lock_held(&b, &order[t], host);
		const char *refused;

		if (tx == NULL)
			continue;
		inbox_complete_locked(tx, DatumGetInt64(command_ids[i]), b.epochs[i], results[i],
							  events[i], &batch, &refused);
		statuses[i] = refused ? refused : "completed";
		session_save(tx);
	}
	session_events_flush(&batch);

	for (int i = 0; i < b.n; i++)
	{
		Datum		out[3] = {b.ids[i], command_ids[i], CStringGetTextDatum(statuses[i])};
		bool		nulls[3] = {false, false, false};

		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, out, nulls);
	}
	nadi_finish();
	return (Datum) 0;
}
