/*
 * session_core.c — the session core: the state machine (a transition table
 * enforced here and nowhere else), the per-session lock every writer takes
 * first (SessionTx), event sequencing and the fence on lease epochs.  It
 * calls only the base layer (util, clock, caller, wake, GUCs): never an
 * SQL-callable function, never the code of sessions, leases, the inbox,
 * events or placement, which all build on it (scripts/check-layers).
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "nodes/makefuncs.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"

#include "nadi.h"
#include "session_core.h"
#include "wake.h"

static const char *const state_names[SS_COUNT] = {
	[SS_PENDING] = "pending",
	[SS_PLACED] = "placed",
	[SS_ACTIVE] = "active",
	[SS_SUSPENDED] = "suspended",
	[SS_TERMINATING] = "terminating",
	[SS_TERMINATED] = "terminated",
	[SS_FAILED] = "failed",
};

/*
 * The transition table.  A pair not listed here is illegal and raises
 * ERRCODE_NADI_INVALID_TRANSITION.  docs/SQL_API.md draws it.
 */
static const SessionTransition transitions[] = {
	{SS_PENDING, SS_PLACED, "the broker placed it on a live cell host"},
	{SS_PLACED, SS_ACTIVE, "a cell acquired its lease"},
	{SS_PLACED, SS_PENDING, "its cell host died or was drained before taking it"},
	{SS_ACTIVE, SS_SUSPENDED, "its cell released the lease while idle"},
	{SS_ACTIVE, SS_PENDING, "its lease expired; the epoch moved on"},
	{SS_SUSPENDED, SS_PENDING, "a command arrived for it"},
	{SS_PENDING, SS_TERMINATING, "terminate"},
	{SS_PLACED, SS_TERMINATING, "terminate"},
	{SS_ACTIVE, SS_TERMINATING, "terminate"},
	{SS_SUSPENDED, SS_TERMINATING, "terminate"},
	{SS_TERMINATING, SS_TERMINATED, "no cell holds it any more"},
	{SS_PENDING, SS_FAILED, "crash budget exhausted, or an operator failed it"},
	{SS_PLACED, SS_FAILED, "crash budget exhausted, or an operator failed it"},
	{SS_ACTIVE, SS_FAILED, "crash budget exhausted, or an operator failed it"},
	{SS_SUSPENDED, SS_FAILED, "an operator failed it"},
};

const char *
session_state_name(SessionState s)
{
	return state_names[s];
}

SessionState
session_state_from_name(const char *name)
{
	for (int i = 0; i < SS_COUNT; i++)
		if (strcmp(state_names[i], name) == 0)
			return (SessionState) i;
	elog(ERROR, "unknown session state \"%s\"", name);
	return SS_COUNT;
}

bool
session_state_is_live(SessionState s)
{
	return s != SS_TERMINATED && s != SS_FAILED;
}

/* The whole table, for nadi.session_transitions(). */
const SessionTransition *
session_transitions(int *count)
{
	*count = lengthof(transitions);
	return transitions;
}

static const SessionTransition *
transition_find(SessionState from, SessionState to)
{
	for (int i = 0; i < lengthof(transitions); i++)
		if (transitions[i].from == from && transitions[i].to == to)
			return &transitions[i];
	return NULL;
}

/*
 * Raise "session not found".  A session the caller may not see is reported
 * the same way as one that does not exist, so ids do not leak across tenants.
 * A session removed by nadi.purge() that the caller may see answers
 * "purged" (NA014) from its tombstone instead (none before the 1.1 schema).
 */
void
session_not_found(const pg_uuid_t *id)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[1] = {UUIDPGetDatum(id)};

	/*
	 * Not read-only: a fresh snapshot, so that a caller that waited for the
	 * purge's lock on the session row sees the tombstone that purge wrote.
	 */
	if (OidIsValid(RangeVarGetRelid(makeRangeVar("nadi", "purged_sessions", -1), NoLock, true)))
	{
		nadi_exec(nadi_plan(&plan,
							"SELECT tenant_id, state::text, "
							"to_char(purged_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') "
							"FROM nadi.purged_sessions "
							"WHERE session_id = $1",
							1, (Oid[]) {UUIDOID}),
				  values, NULL, false, 1);
		if (SPI_processed == 1 &&
			nadi_tenant_visible(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), id))
			ereport(ERROR,
					(errcode(ERRCODE_NADI_SESSION_PURGED),
					 errmsg("session %s was purged", nadi_uuid_out(id)),
					 errdetail("The session ended (%s) and its events and commands were removed at %s.",
							   SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2),
							   SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3)),
					 errhint("Purged sessions cannot be read or resumed; create a new session.")));
	}
	ereport(ERROR,
			(errcode(ERRCODE_NADI_SESSION_NOT_FOUND),
			 errmsg("session %s not found", nadi_uuid_out(id)),
			 errdetail("No session with this id is visible to the caller.")));
	pg_unreachable();
}

/*
 * Raise "session not found" unless the session exists and the caller may see
 * it.  A read without the lock, for functions that only read.
 */
void
session_require_visible(const pg_uuid_t *id)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[1] = {UUIDPGetDatum(id)};

	nadi_exec(nadi_plan(&plan, "SELECT tenant_id FROM nadi.sessions WHERE session_id = $1",
						1, (Oid[]) {UUIDOID}),
			  values, NULL, true, 1);
	if (SPI_processed != 1 ||
		!nadi_tenant_visible(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), id))
		session_not_found(id);
}

/*
 * Lock a session row and load it.  Raises ERRCODE_NADI_SESSION_NOT_FOUND
 * when it does not exist or the caller may not see it (the two look the same
 * on purpose, so ids do not leak across tenants).  Visibility is a filter of
 * the scan, below the row lock: a session the caller may not see is never
 * locked, so the caller neither waits for another tenant's writer nor learns
 * from waiting that the id exists.  Call with SPI connected; the struct
 * lives in the SPI procedure context.
 */
SessionTx *
session_lock(const pg_uuid_t *id)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[1] = {UUIDOID};
	Datum		values[1];
	SessionTx  *tx;
	HeapTuple	row;
	TupleDesc	desc;
	bool		isnull;
	Datum		d;

	values[0] = UUIDPGetDatum(id);
	nadi_exec(nadi_plan(&plan,
						"SELECT tenant_id, state::text, cell_host_id, sandbox_host_id, "
						"last_seq, crash_count, policy "
						"FROM nadi.sessions WHERE session_id = $1 "
						"AND nadi.tenant_visible(tenant_id, session_id) FOR NO KEY UPDATE",
						1, types),
			  values, NULL, false, 1);
	if (SPI_processed == 1)
	{
		row = SPI_tuptable->vals[0];
		desc = SPI_tuptable->tupdesc;
		tx = palloc0(sizeof(SessionTx));
		tx->id = *id;
		tx->id_text = nadi_uuid_out(id);
		tx->tenant = SPI_getvalue(row, desc, 1);
		if (nadi_tenant_visible(tx->tenant, id))
		{
			tx->state = session_state_from_name(SPI_getvalue(row, desc, 2));
			tx->orig_state = tx->state;
			tx->cell_host_id = SPI_getvalue(row, desc, 3);
			tx->sandbox_host_id = SPI_getvalue(row, desc, 4);
			tx->last_seq = DatumGetInt64(SPI_getbinval(row, desc, 5, &isnull));
			tx->orig_last_seq = tx->last_seq;
			tx->crash_count = DatumGetInt32(SPI_getbinval(row, desc, 6, &isnull));
			d = SPI_getbinval(row, desc, 7, &isnull);
			tx->policy = DatumGetJsonbPCopy(d);
			return tx;
		}
	}
	session_not_found(id);
}

/*
 * Move a locked session to another state, or raise if the table does not
 * allow it.  Records a session.state event and wakes whoever must act.
 */
void
session_set_state(SessionTx *tx, SessionState to, const char *cause)
{
	const SessionTransition *t = transition_find(tx->state, to);
	Jsonb	   *detail;

	if (t == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NADI_INVALID_TRANSITION),
				 errmsg("invalid session state transition from %s to %s",
						state_names[tx->state], state_names[to]),
				 errdetail("Session %s is %s; the state machine has no edge to %s.",
						   tx->id_text, state_names[tx->state], state_names[to]),
				 errhint("See nadi.session_transitions() for the allowed transitions.")));

	detail = nadi_json_strings("from", state_names[tx->state], "to", state_names[to],
							   "cause", cause ? cause : t->cause, NULL);
	tx->state = to;
	tx->dirty = true;
	session_event(tx, "session.state", detail, 0, -1);

	switch (to)
	{
		case SS_PENDING:
			nadi_wake_broker_at_commit();
			break;
		case SS_PLACED:
		case SS_TERMINATING:
			nadi_wake_cell_at_commit(tx->cell_host_id);
			break;
		default:
			break;
	}
}

void
session_set_hosts(SessionTx *tx, const char *cell_host_id, const char *sandbox_host_id)
{
	tx->cell_host_id = cell_host_id ? pstrdup(cell_host_id) : NULL;
	tx->sandbox_host_id = sandbox_host_id ? pstrdup(sandbox_host_id) : NULL;
	tx->dirty = true;
	tx->hosts_changed = true;
}

/*
 * Append an event to a locked session with the next sequence number.  epoch
 * < 0 means "not written by a cell".  Returns the sequence number; the
 * inserted row is left in SPI_tuptable.  The NOTIFY is delivered at commit
 * and folded into one per session per transaction.
 */
static int64
event_next_seq(SessionTx *tx, Jsonb *payload)
{
	nadi_check_payload(payload, "event payload");
	tx->last_seq++;
	tx->dirty = true;
	if (nadi_notify)
		nadi_notify_session(&tx->id, tx->id_text);
	return tx->last_seq;
}

/*
 * The operator's call counts (nadi.stat_calls), made where the events are
 * written.  One counted event appends one row to nadi.call_count_deltas,
 * which the broker folds into nadi.call_counts (nadi._call_counts_fold):
 *   - a tool.result or tool.error: a tool call; an error when ok is false
 *     or it is a tool.error; its duration from the tool.call of the same
 *     command and name at most 64 events before it, never negative;
 *   - a model.reply: a model call, with its duration and tokens when the
 *     cell recorded them (latency_ms, usage);
 *   - a command.failed with error code model_error: a failed model call;
 *   - a session.lease expired or taken_over: a takeover.
 * Names that are not identifiers count as "(invalid)", so a model cannot
 * make up label values; no payload can make counting fail (and with it the
 * append): latency_ms and usage are clamped as numbers (latency to 1e9 ms,
 * tokens to a billion per call, so the bigint sums cannot overflow); and a
 * tenant has at most 100 names of each kind (tool, model): a name not yet
 * folded when 100 are counts as "(other)" (names made up between two folds
 * may pass until the next fold, which holds the bound for them).
 */

/* The member key of the object c (NULL: none, or c is NULL). */
static JsonbValue *
count_member(JsonbContainer *c, const char *key)
{
	JsonbValue	k;

	if (c == NULL)
		return NULL;
	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	return findJsonbValueFromContainer(c, JB_FOBJECT, &k);
}

/* c->>key for a scalar member; NULL when missing or null.  A member that is
 * an object or an array gives "{", which no name rule accepts. */
static char *
count_member_text(JsonbContainer *c, const char *key)
{
	JsonbValue *v = count_member(c, key);

	if (v == NULL)
		return NULL;
	switch (v->type)
	{
		case jbvNull:
			return NULL;
		case jbvString:
			return pnstrdup(v->val.string.val, v->val.string.len);
		case jbvNumeric:
			return DatumGetCString(DirectFunctionCall1(numeric_out,
													   NumericGetDatum(v->val.numeric)));
		case jbvBool:
			return v->val.boolean ? "true" : "false";
		default:
			return "{";
	}
}

/* The object member key of c, or NULL when missing or not an object. */
static JsonbContainer *
count_member_object(JsonbContainer *c, const char *key)
{
	JsonbValue *v = count_member(c, key);

	if (v == NULL || v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
		return NULL;
	return v->val.binary.data;
}

/* A numeric member clamped to [0, max]; false when not a number. */
static bool
count_member_numeric(JsonbContainer *c, const char *key, int64 max, Datum *out)
{
	JsonbValue *v = count_member(c, key);
	Datum		n;

	if (v == NULL || v->type != jbvNumeric)
		return false;
	n = DirectFunctionCall2(numeric_larger, NumericGetDatum(v->val.numeric),
							NumericGetDatum(int64_to_numeric(0)));
	*out = DirectFunctionCall2(numeric_smaller, n, NumericGetDatum(int64_to_numeric(max)));
	return true;
}

static bool
count_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* ^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$ */
static bool
count_model_name_ok(const char *s)
{
	size_t		len = strlen(s);

	if (len < 1 || len > 64 || !count_alnum(s[0]))
		return false;
	for (size_t i = 1; i < len; i++)
	{
		char		c = s[i];

		if (!(count_alnum(c) || c == '.' || c == '_' || c == ':' || c == '/' || c == '-'))
			return false;
	}
	return true;
}

static bool
count_string_is(JsonbContainer *c, const char *key, const char *want)
{
	JsonbValue *v = count_member(c, key);

	return v != NULL && v->type == jbvString && v->val.string.len == (int) strlen(want) &&
		memcmp(v->val.string.val, want, v->val.string.len) == 0;
}

/* Count one event just inserted, if its kind is counted. */
static void
event_count(const pg_uuid_t *session_id, int64 seq, Datum tenant, const char *kind,
			Jsonb *payload, int64 command_id, TimestampTz created_at)
{
	static SPIPlanPtr latency_plan = NULL;
	static SPIPlanPtr insert_plan = NULL;
	JsonbContainer *p;
	const char *k;
	char	   *n;
	bool		err = false;
	bool		has_lat = false;
	double		lat = 0;
	int64		t_in = 0;
	int64		t_out = 0;
	Datum		values[8];
	Datum		d;

	if (!nadi_count_calls)
		return;
	if (payload == NULL || !JB_ROOT_IS_OBJECT(payload) || JB_ROOT_IS_SCALAR(payload))
		p = NULL;
	else
		p = &payload->root;
	if (strcmp(kind, "tool.result") == 0 || strcmp(kind, "tool.error") == 0)
	{
		k = "tool";
		n = count_member_text(p, "name");
		if (strcmp(kind, "tool.error") == 0)
			err = true;
		else
		{
			JsonbValue *ok = count_member(p, "ok");

			err = ok != NULL && ok->type == jbvBool && !ok->val.boolean;
		}
		if (n != NULL && command_id > 0)
		{
			Oid			types[5] = {UUIDOID, INT8OID, INT8OID, JSONBOID, TIMESTAMPTZOID};
			Datum		lv[5];
			bool		isnull;

			lv[0] = UUIDPGetDatum(session_id);
			lv[1] = Int64GetDatum(seq);
			lv[2] = Int64GetDatum(command_id);
			lv[3] = JsonbPGetDatum(payload);
			lv[4] = TimestampTzGetDatum(created_at);
			nadi_exec(nadi_plan(&latency_plan,
								"SELECT greatest(extract(epoch FROM $5 - e.created_at)::float8, 0) "
								"FROM nadi.events e "
								"WHERE e.session_id = $1 AND e.seq < $2 AND e.seq >= $2 - 64 "
								"AND e.kind = 'tool.call' AND e.command_id = $3 "
								"AND e.payload->>'name' = $4->>'name' "
								"ORDER BY e.seq DESC LIMIT 1",
								5, types),
					  lv, NULL, false, 1);	/* (not read-only: sees its own batch) */
			if (SPI_processed == 1)
			{
				d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
				if (!isnull)
				{
					has_lat = true;
					lat = DatumGetFloat8(d);
				}
			}
		}
		if (!nadi_tool_name_ok(n, n ? strlen(n) : 0))
			n = "(invalid)";
	}
	else if (strcmp(kind, "model.reply") == 0 ||
			 (strcmp(kind, "command.failed") == 0 &&
			  count_string_is(count_member_object(p, "error"), "code", "model_error")))
	{
		JsonbContainer *usage = count_member_object(p, "usage");

		k = "model";
		n = count_member_text(p, "model");
		if (n == NULL)
			n = "model";
		if (!count_model_name_ok(n))
			n = "(invalid)";
		err = kind[0] == 'c';	/* command.failed */
		if (count_member_numeric(p, "latency_ms", 1000000000, &d))
		{
			d = DirectFunctionCall2(numeric_round, d, Int32GetDatum(3));
			lat = DatumGetFloat8(DirectFunctionCall1(numeric_float8, d)) / 1000;
			has_lat = true;
		}
		if (count_member_numeric(usage, "input_tokens", 1000000000, &d))
			t_in = DatumGetInt64(DirectFunctionCall1(numeric_int8, d));
		if (count_member_numeric(usage, "output_tokens", 1000000000, &d))
			t_out = DatumGetInt64(DirectFunctionCall1(numeric_int8, d));
	}
	else if (strcmp(kind, "session.lease") == 0 &&
			 (count_string_is(p, "event", "expired") || count_string_is(p, "event", "taken_over")))
	{
		k = "lease";
		n = count_member_text(p, "event");
	}
	else
		return;

	values[0] = tenant;
	values[1] = CStringGetTextDatum(k);
	values[2] = CStringGetTextDatum(n);
	values[3] = Int64GetDatum(err ? 1 : 0);
	values[4] = Int64GetDatum(has_lat ? 1 : 0);
	values[5] = Float8GetDatum(has_lat ? lat : 0);
	values[6] = Int64GetDatum(t_in);
	values[7] = Int64GetDatum(t_out);
	/* the bound: one index probe, and the count only for a name not folded */
	nadi_exec(nadi_plan(&insert_plan,
						"INSERT INTO nadi.call_count_deltas "
						"SELECT $1, $2, CASE WHEN $2 = 'lease' OR EXISTS ("
						"SELECT 1 FROM nadi.call_counts c "
						"WHERE c.tenant_id = $1 AND c.kind = $2 AND c.name = $3) "
						"OR (SELECT count(*) FROM (SELECT 1 FROM nadi.call_counts c "
						"WHERE c.tenant_id = $1 AND c.kind = $2 LIMIT 100) x) < 100 "
						"THEN $3 ELSE '(other)' END, 1, $4, $5, $6, $7, $8",
						8, (Oid[]) {TEXTOID, TEXTOID, TEXTOID, INT8OID, INT8OID, FLOAT8OID,
						INT8OID, INT8OID}),
			  values, NULL, false, 0);
}

int64
session_event(SessionTx *tx, const char *kind, Jsonb *payload, int64 command_id, int64 epoch)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[8] = {UUIDOID, INT8OID, TEXTOID, TEXTOID, JSONBOID, INT8OID, INT8OID, TIMESTAMPTZOID};
	Datum		values[8];
	char		nulls[8] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};

	event_next_seq(tx, payload);
	values[0] = UUIDPGetDatum(&tx->id);
	values[1] = Int64GetDatum(tx->last_seq);
	values[2] = CStringGetTextDatum(tx->tenant);
	values[3] = CStringGetTextDatum(kind);
	values[4] = JsonbPGetDatum(payload);
	values[5] = Int64GetDatum(command_id);
	if (command_id <= 0)
		nulls[5] = 'n';
	values[6] = Int64GetDatum(epoch);
	if (epoch < 0)
		nulls[6] = 'n';
	values[7] = TimestampTzGetDatum(nadi_now());
	nadi_exec(nadi_plan(&plan,
						"INSERT INTO nadi.events "
						"(session_id, seq, tenant_id, kind, payload, command_id, epoch, created_at) "
						"VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
						8, types),
			  values, nulls, false, 0);
	{
		/* the inserted row stays the caller's */
		SPITupleTable *row = SPI_tuptable;
		uint64		processed = SPI_processed;

		event_count(&tx->id, tx->last_seq, values[2], kind, payload, command_id,
					DatumGetTimestampTz(values[7]));
		SPI_tuptable = row;
		SPI_processed = processed;
	}
	return tx->last_seq;
}

/* session_event for an EventBatch: the row is kept for session_events_flush. */
int64
session_event_batched(EventBatch *b, SessionTx *tx, const char *kind, Jsonb *payload,
					  int64 command_id, int64 epoch)
{
	if (b->n == b->cap)
	{
		int			cap = Max(16, b->cap * 2);

#define BATCH_GROW(field, type) \
		b->field = b->field ? repalloc(b->field, sizeof(type) * cap) : palloc(sizeof(type) * cap)
		BATCH_GROW(session_ids, Datum);
		BATCH_GROW(seqs, Datum);
		BATCH_GROW(tenants, Datum);
		BATCH_GROW(kinds, Datum);
		BATCH_GROW(payloads, Datum);
		BATCH_GROW(command_ids, Datum);
		BATCH_GROW(command_id_nulls, bool);
		BATCH_GROW(epochs, Datum);
		BATCH_GROW(epoch_nulls, bool);
#undef BATCH_GROW
		b->cap = cap;
	}
	event_next_seq(tx, payload);
	b->session_ids[b->n] = UUIDPGetDatum(&tx->id);
	b->seqs[b->n] = Int64GetDatum(tx->last_seq);
	b->tenants[b->n] = CStringGetTextDatum(tx->tenant);
	b->kinds[b->n] = CStringGetTextDatum(kind);
	b->payloads[b->n] = JsonbPGetDatum(payload);
	b->command_ids[b->n] = Int64GetDatum(command_id);
	b->command_id_nulls[b->n] = command_id <= 0;
	b->epochs[b->n] = Int64GetDatum(epoch);
	b->epoch_nulls[b->n] = epoch < 0;
	b->n++;
	return tx->last_seq;
}

static Datum
event_array(Datum *values, bool *nulls, int n, Oid type)
{
	int16		len;
	bool		byval;
	char		align;
	int			dims[1] = {n};
	int			lbs[1] = {1};

	get_typlenbyvalalign(type, &len, &byval, &align);
	return PointerGetDatum(construct_md_array(values, nulls, 1, dims, lbs, type, len, byval, align));
}

/* Insert every event kept in b, in one statement, and empty b. */
void
session_events_flush(EventBatch *b)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[8];

	if (b->n == 0)
		return;
	values[0] = event_array(b->session_ids, NULL, b->n, UUIDOID);
	values[1] = event_array(b->seqs, NULL, b->n, INT8OID);
	values[2] = event_array(b->tenants, NULL, b->n, TEXTOID);
	values[3] = event_array(b->kinds, NULL, b->n, TEXTOID);
	values[4] = event_array(b->payloads, NULL, b->n, JSONBOID);
	values[5] = event_array(b->command_ids, b->command_id_nulls, b->n, INT8OID);
	values[6] = event_array(b->epochs, b->epoch_nulls, b->n, INT8OID);
	values[7] = TimestampTzGetDatum(nadi_now());
	nadi_exec(nadi_plan(&plan,
						"INSERT INTO nadi.events "
						"(session_id, seq, tenant_id, kind, payload, command_id, epoch, created_at) "
						"SELECT e.*, $8 FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[], "
						"$5::jsonb[], $6::bigint[], $7::bigint[]) AS e",
						8, (Oid[]) {UUIDARRAYOID, INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
						JSONBARRAYOID, INT8ARRAYOID, INT8ARRAYOID, TIMESTAMPTZOID}),
			  values, NULL, false, 0);
	/* counted after the whole batch is in, as a tool.call may be in it */
	for (int i = 0; i < b->n; i++)
		event_count(DatumGetUUIDP(b->session_ids[i]), DatumGetInt64(b->seqs[i]), b->tenants[i],
					TextDatumGetCString(b->kinds[i]), DatumGetJsonbP(b->payloads[i]),
					b->command_id_nulls[i] ? 0 : DatumGetInt64(b->command_ids[i]),
					DatumGetTimestampTz(values[7]));
	b->n = 0;
}

/* Write a locked session's changes back, if it has any. */
void
session_save(SessionTx *tx)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr state_plan = NULL;
	Oid			types[7] = {UUIDOID, TEXTOID, TEXTOID, TEXTOID, INT8OID, INT4OID, TIMESTAMPTZOID};
	Datum		values[7];
	char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};

	if (!tx->dirty)
		return;
	values[0] = UUIDPGetDatum(&tx->id);
	values[1] = CStringGetTextDatum(state_names[tx->state]);
	if (tx->cell_host_id)
		values[2] = CStringGetTextDatum(tx->cell_host_id);
	else
		nulls[2] = 'n';
	if (tx->sandbox_host_id)
		values[3] = CStringGetTextDatum(tx->sandbox_host_id);
	else
		nulls[3] = 'n';
	values[4] = Int64GetDatum(tx->last_seq);
	values[5] = Int32GetDatum(tx->crash_count);
	values[6] = TimestampTzGetDatum(nadi_now());
	if (tx->hosts_changed)
		nadi_exec(nadi_plan(&plan,
							"UPDATE nadi.sessions SET state = $2::nadi.session_state, "
							"cell_host_id = $3, sandbox_host_id = $4, last_seq = $5, "
							"crash_count = $6, updated_at = $7 WHERE session_id = $1",
							7, types),
				  values, nulls, false, 0);
	else
	{
		/*
		 * Leave the host columns alone: an UPDATE that sets a foreign key
		 * fires its check (a row lock on the host) whenever the row was
		 * already changed in this transaction, even to the same value.
		 */
		Datum		v[5] = {values[0], values[1], values[4], values[5], values[6]};

		nadi_exec(nadi_plan(&state_plan,
							"UPDATE nadi.sessions SET state = $2::nadi.session_state, last_seq = $3, "
							"crash_count = $4, updated_at = $5 WHERE session_id = $1",
							5, (Oid[]) {UUIDOID, TEXTOID, INT8OID, INT4OID, TIMESTAMPTZOID}),
				  v, NULL, false, 0);
	}
	tx->hosts_changed = false;
	if (tx->state != tx->orig_state)
	{
		nadi_audit("session.state", &tx->id, tx->tenant,
				   nadi_json_strings("from", state_names[tx->orig_state],
									 "to", state_names[tx->state], NULL));
		tx->orig_state = tx->state;
	}
	tx->orig_last_seq = tx->last_seq;
	tx->dirty = false;
}

/* Read the lease of a locked session (stable: the session lock is held). */
LeaseInfo
lease_read(const SessionTx *tx)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[1] = {UUIDPGetDatum(&tx->id)};
	LeaseInfo	l = {0};
	HeapTuple	row;
	TupleDesc	desc;
	bool		isnull;
	Datum		d;

	nadi_exec(nadi_plan(&plan,
						"SELECT cell_host_id, epoch, expires_at FROM nadi.session_leases "
						"WHERE session_id = $1",
						1, (Oid[]) {UUIDOID}),
			  values, NULL, false, 1);
	if (SPI_processed != 1)
		elog(ERROR, "session %s has no lease row", tx->id_text);
	row = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	l.cell_host_id = SPI_getvalue(row, desc, 1);
	l.held = l.cell_host_id != NULL;
	l.epoch = DatumGetInt64(SPI_getbinval(row, desc, 2, &isnull));
	d = SPI_getbinval(row, desc, 3, &isnull);
	l.expires_at = isnull ? 0 : DatumGetTimestampTz(d);
	return l;
}

/*
 * The fence.  Raises ERRCODE_NADI_FENCED unless epoch is the session's
 * current, held, unexpired lease, and 42501 unless the caller may act for
 * the cell host holding it.  Returns the lease.
 */
/*
 * Is the lease l (read under the session lock) held at epoch and not yet
 * expired?  The test of the fence, for callers that report a moved-on lease
 * instead of raising (the set-based calls of a cell host, batch.c).
 */
bool
lease_current(const LeaseInfo *l, int64 epoch)
{
	return l->held && l->epoch == epoch && l->expires_at > nadi_now();
}

LeaseInfo
lease_check(const SessionTx *tx, int64 epoch)
{
	LeaseInfo	l = lease_read(tx);

	if (!l.held || l.epoch != epoch)
		ereport(ERROR,
				(errcode(ERRCODE_NADI_FENCED),
				 errmsg("lease epoch " INT64_FORMAT " of session %s is not current", epoch, tx->id_text),
				 l.held ?
				 errdetail("The lease is at epoch " INT64_FORMAT ", held by cell host \"%s\".",
						   l.epoch, l.cell_host_id) :
				 errdetail("The lease is at epoch " INT64_FORMAT " and held by no cell.", l.epoch),
				 errhint("The session has moved on; this cell must drop it.")));
	if (l.expires_at <= nadi_now())
		ereport(ERROR,
				(errcode(ERRCODE_NADI_FENCED),
				 errmsg("lease epoch " INT64_FORMAT " of session %s has expired", epoch, tx->id_text),
				 errdetail("It expired at %s.", nadi_timestamptz_iso(l.expires_at)),
				 errhint("Renew leases well within nadi.lease_ttl.")));

	/*
	 * The epoch is readable by every cell login (nadi.session_leases): the
	 * writer must also be the host the lease names, bound to the caller.
	 */
	nadi_require_host_binding("cell", l.cell_host_id, "write as");
	return l;
}

/*
 * What every write a cell makes starts with: lock the session, then check
 * the epoch the cell holds.  The lease is returned in *lease when asked for.
 */
SessionTx *
session_lock_fenced(const pg_uuid_t *id, int64 epoch, LeaseInfo *lease)
{
	SessionTx  *tx = session_lock(id);
	LeaseInfo	l = lease_check(tx, epoch);

	if (lease)
		*lease = l;
	return tx;
}
