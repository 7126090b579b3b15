/*
 * events.c — the event log.  Events are appended under the session lock
 * with the next sequence number (session_core.c), so each session's log is
 * gapless and strictly increasing; readers page through it by sequence.
 * Appends NOTIFY nadi_events with the session id at commit, which is how an
 * edge learns there is something new to stream.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "funcapi.h"
#include "utils/builtins.h"

#include "nadi.h"
#include "session.h"

/* Kinds the extension writes itself; cells may not forge them. */
static const char *const reserved_prefixes[] = {"session.", "command.", "permission."};

static void
events_kind_validate(const char *kind)
{
	size_t		len = strlen(kind);
	bool		ok = len > 0 && len <= 64 && kind[0] >= 'a' && kind[0] <= 'z';
	bool		dot = false;

	for (size_t i = 0; ok && i < len; i++)
	{
		char		ch = kind[i];

		if (ch == '.')
		{
			ok = i + 1 < len && kind[i + 1] >= 'a' && kind[i + 1] <= 'z';
			dot = true;
		}
		else
			ok = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_';
	}
	if (!ok || !dot)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid event kind \"%s\"", kind),
				 errdetail("Event kinds are dotted lowercase names of at most 64 bytes, such as \"model.reply\".")));
	for (int i = 0; i < lengthof(reserved_prefixes); i++)
		if (strncmp(kind, reserved_prefixes[i], strlen(reserved_prefixes[i])) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("event kind \"%s\" is reserved", kind),
					 errdetail("Kinds starting with \"%s\" are written by nadi itself.", reserved_prefixes[i]),
					 errhint("Use the inbox and lease functions, which record these events.")));
}

/*
 * nadi.event_append(session_id, epoch, kind, payload, command_id) → events
 * A cell's write: fenced by the epoch it holds.  A command_id, if given,
 * must be a command this epoch is running.
 */
PG_FUNCTION_INFO_V1(nadi_event_append);
Datum
nadi_event_append(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr cmd_plan = NULL;
	MemoryContext outer = CurrentMemoryContext;
	SessionTx  *tx;
	int64		epoch;
	char	   *kind;
	Jsonb	   *payload;
	int64		command_id = 0;
	Datum		result;
	HeapTuple	row;
	TupleDesc	desc;

	NADI_ARG_NOT_NULL(0, "session_id");
	NADI_ARG_NOT_NULL(1, "epoch");
	NADI_ARG_NOT_NULL(2, "kind");
	epoch = PG_GETARG_INT64(1);
	kind = text_to_cstring(PG_GETARG_TEXT_PP(2));
	payload = PG_ARGISNULL(3) ? nadi_jsonb("{}") : PG_GETARG_JSONB_P(3);
	events_kind_validate(kind);
	nadi_check_payload(payload, "event payload");

	nadi_connect();
	tx = session_lock_fenced(PG_GETARG_UUID_P(0), epoch, NULL);
	if (!PG_ARGISNULL(4))
	{
		Datum		values[3];

		command_id = PG_GETARG_INT64(4);
		values[0] = UUIDPGetDatum(&tx->id);
		values[1] = Int64GetDatum(command_id);
		values[2] = Int64GetDatum(epoch);
		nadi_exec(nadi_plan(&cmd_plan,
							"SELECT 1 FROM nadi.command_inbox WHERE session_id = $1 "
							"AND command_id = $2 AND status = 'running' AND claimed_epoch = $3",
							3, (Oid[]) {UUIDOID, INT8OID, INT8OID}),
				  values, NULL, false, 1);
		if (SPI_processed != 1)
			ereport(ERROR,
					(errcode(ERRCODE_NADI_COMMAND_STATE),
					 errmsg("command " INT64_FORMAT " is not running under epoch " INT64_FORMAT,
							command_id, epoch),
					 errdetail("Events about a command are written while it runs.")));
	}
	session_event(tx, kind, payload, command_id, epoch);
	row = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	result = nadi_row_datum(fcinfo, row, desc, outer);
	session_save(tx);
	nadi_finish();
	PG_RETURN_DATUM(result);
}

/*
 * One element of a cell's events array, checked: its kind (validated) and
 * its payload ({} when absent).
 */
static void
event_elem(JsonbValue *v, char **kind_out, Jsonb **payload_out)
{
	Jsonb	   *elem;
	JsonbValue *kind;
	JsonbValue *payload;

	if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("each event must be a JSON object with \"kind\" and \"payload\"")));
	elem = JsonbValueToJsonb(v);
	kind = nadi_jsonb_member(elem, "kind");
	payload = nadi_jsonb_member(elem, "payload");
	if (kind == NULL || kind->type != jbvString)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("each event needs a string \"kind\"")));
	*kind_out = pnstrdup(kind->val.string.val, kind->val.string.len);
	events_kind_validate(*kind_out);
	*payload_out = payload ? JsonbValueToJsonb(payload) : nadi_jsonb("{}");
}

/*
 * Append cell events given as a JSON array of {"kind", "payload"} to a
 * locked session whose lease the caller has checked: now, or into batch
 * (session_events_flush inserts them) when it is not NULL.  Check them
 * first with events_check_array.
 */
void
events_append_array(SessionTx *tx, Jsonb *events, int64 command_id, int64 epoch, EventBatch *batch)
{
	JsonbIterator *it = JsonbIteratorInit(&events->root);
	JsonbValue	v;
	JsonbIteratorToken tok;

	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *kind;
		Jsonb	   *payload;

		if (tok != WJB_ELEM)
			continue;
		event_elem(&v, &kind, &payload);
		if (batch)
			session_event_batched(batch, tx, kind, payload, command_id, epoch);
		else
			session_event(tx, kind, payload, command_id, epoch);
	}
}

/*
 * Refuse a cell's events unless they are a JSON array of {"kind",
 * "payload"} objects with kinds a cell may write, within the payload limit:
 * bad input raises before anything is written.
 */
void
events_check_array(Jsonb *events)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;

	if (!JB_ROOT_IS_ARRAY(events) || JB_ROOT_IS_SCALAR(events))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("events must be a JSON array of {\"kind\", \"payload\"} objects")));
	nadi_check_payload(events, "events");
	it = JsonbIteratorInit(&events->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *kind;
		Jsonb	   *payload;

		if (tok == WJB_ELEM)
			event_elem(&v, &kind, &payload);
	}
}

/*
 * nadi.events_read(session_id, after, limit) → setof events
 * Events with seq > after, oldest first.  A reader that remembers the last
 * seq it saw resumes with no gap and no duplicate.
 */
PG_FUNCTION_INFO_V1(nadi_events_read);
Datum
nadi_events_read(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[3];
	int64		after = PG_ARGISNULL(1) ? 0 : PG_GETARG_INT64(1);
	int32		limit = PG_ARGISNULL(2) ? 100 : PG_GETARG_INT32(2);

	NADI_ARG_NOT_NULL(0, "session_id");
	if (after < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("after must not be negative"),
				 errdetail("Event sequence numbers start at 1; pass 0 to read from the start.")));
	nadi_check_limit(limit, 10000);
	InitMaterializedSRF(fcinfo, 0);
	nadi_connect();
	session_require_visible(PG_GETARG_UUID_P(0));
	values[0] = PG_GETARG_DATUM(0);
	values[1] = Int64GetDatum(after);
	values[2] = Int32GetDatum(limit);
	nadi_exec(nadi_plan(&plan,
						"SELECT * FROM nadi.events WHERE session_id = $1 AND seq > $2 "
						"ORDER BY seq LIMIT $3",
						3, (Oid[]) {UUIDOID, INT8OID, INT4OID}),
			  values, NULL, true, 0);
	nadi_rows_to_srf(fcinfo);
	nadi_finish();
	return (Datum) 0;
}
