/*
 * inbox.c — the command inbox.  Commands are queued per session in commit
 * order (ids are drawn under the session lock), claimed one at a time by the
 * cell that holds the session's lease, and completed or failed under that
 * lease's epoch.  Failures retry with exponential backoff and are
 * dead-lettered after max_attempts.  cancel, approve and deny are control
 * commands: they take effect when they are enqueued, not in queue order.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "nadi.h"
#include "session.h"
#include "wake.h"

#define OPEN_STATUSES "('queued', 'running', 'waiting')"

typedef struct CommandRef
{
	int64		id;
	char	   *status;
	int32		attempts;
	int32		max_attempts;
	int64		claimed_epoch;	/* -1 when not claimed */
	bool		cancel_requested;
	char	   *type;
} CommandRef;

static const char *const command_types[] = {"message", "tool", "cancel", "approve", "deny"};

static bool
is_control(const char *type)
{
	return strcmp(type, "cancel") == 0 || strcmp(type, "approve") == 0 ||
		strcmp(type, "deny") == 0;
}

static void
payload_invalid(const char *type, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid payload for a %s command", type),
			 errdetail("%s", detail)));
}

/* The command_id a control command targets, or 0 for "the obvious one". */
static int64
payload_target(Jsonb *payload, const char *type)
{
	JsonbValue *v = nadi_jsonb_member(payload, "command_id");

	if (v == NULL || v->type == jbvNull)
		return 0;
	if (v->type != jbvNumeric)
		payload_invalid(type, "\"command_id\" must be a number.");
	return DatumGetInt64(DirectFunctionCall1(numeric_int8, NumericGetDatum(v->val.numeric)));
}

/* Check the shape of a payload for its type; raise if it is wrong. */
static void
payload_validate(const char *type, Jsonb *payload)
{
	JsonbValue *v;
	bool		known = false;

	for (int i = 0; i < lengthof(command_types); i++)
		known |= strcmp(type, command_types[i]) == 0;
	if (!known)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown command type %s", nadi_shown(type, strlen(type))),
				 errhint("Command types are message, tool, cancel, approve and deny.")));
	if (!JB_ROOT_IS_OBJECT(payload) || JB_ROOT_IS_SCALAR(payload))
		payload_invalid(type, "The payload must be a JSON object.");
	nadi_check_payload(payload, "command payload");

	if (strcmp(type, "message") == 0)
	{
		v = nadi_jsonb_member(payload, "text");
		if (v == NULL || v->type != jbvString)
			payload_invalid(type, "A message needs a string \"text\".");
		busy_check_policy(payload, "payload");
	}
	else if (strcmp(type, "tool") == 0)
	{
		v = nadi_jsonb_member(payload, "name");
		if (v == NULL)
			payload_invalid(type, "A tool call needs a string \"name\".");
		nadi_check_tool_name(v, "a tool command");
		v = nadi_jsonb_member(payload, "args");
		if (v != NULL && (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data)))
			payload_invalid(type, "\"args\" must be a JSON object.");
	}
	else
		(void) payload_target(payload, type);
}

static void
command_not_found(int64 command_id, const char *session_id)
{
	ereport(ERROR,
			(errcode(ERRCODE_NADI_COMMAND_NOT_FOUND),
			 errmsg("command " INT64_FORMAT " not found in session %s", command_id, session_id)));
}

/* Load one command of a locked session into *c; false if it does not exist. */
static bool
command_find(SessionTx *tx, int64 command_id, CommandRef *out)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[2] = {UUIDPGetDatum(&tx->id), Int64GetDatum(command_id)};
	CommandRef	c = {0};
	HeapTuple	row;
	TupleDesc	desc;
	bool		isnull;
	Datum		d;

	nadi_exec(nadi_plan(&plan,
						"SELECT status::text, attempts, max_attempts, claimed_epoch, "
						"cancel_requested, type FROM nadi.command_inbox "
						"WHERE session_id = $1 AND command_id = $2",
						2, (Oid[]) {UUIDOID, INT8OID}),
			  values, NULL, false, 1);
	if (SPI_processed != 1)
		return false;
	row = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	c.id = command_id;
	c.status = SPI_getvalue(row, desc, 1);
	c.attempts = DatumGetInt32(SPI_getbinval(row, desc, 2, &isnull));
	c.max_attempts = DatumGetInt32(SPI_getbinval(row, desc, 3, &isnull));
	d = SPI_getbinval(row, desc, 4, &isnull);
	c.claimed_epoch = isnull ? -1 : DatumGetInt64(d);
	c.cancel_requested = DatumGetBool(SPI_getbinval(row, desc, 5, &isnull));
	c.type = SPI_getvalue(row, desc, 6);
	*out = c;
	return true;
}

/* Load one command of a locked session; raise if it does not exist. */
static CommandRef
command_load(SessionTx *tx, int64 command_id)
{
	CommandRef	c;

	if (!command_find(tx, command_id, &c))
		command_not_found(command_id, tx->id_text);
	return c;
}

/* The oldest open command of a locked session (id 0 if none). */
static CommandRef
command_head(SessionTx *tx, TimestampTz *available_at)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[1] = {UUIDPGetDatum(&tx->id)};
	CommandRef	c = {0};
	bool		isnull;

	nadi_exec(nadi_plan(&plan,
						"SELECT command_id, status::text, available_at FROM nadi.command_inbox "
						"WHERE session_id = $1 AND status IN " OPEN_STATUSES " "
						"ORDER BY command_id LIMIT 1",
						1, (Oid[]) {UUIDOID}),
			  values, NULL, false, 1);
	if (SPI_processed == 1)
	{
		c.id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		c.status = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
		if (available_at)
			*available_at = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0],
															  SPI_tuptable->tupdesc, 3, &isnull));
	}
	return c;
}

/* Refuse a cell write about a command it does not hold under this epoch. */
static void
command_require_running(const CommandRef *c, int64 epoch)
{
	if (strcmp(c->status, "running") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_NADI_COMMAND_STATE),
				 errmsg("command " INT64_FORMAT " is %s, not running", c->id, c->status)));
	if (c->claimed_epoch != epoch)
		ereport(ERROR,
				(errcode(ERRCODE_NADI_FENCED),
				 errmsg("command " INT64_FORMAT " was claimed under epoch " INT64_FORMAT ", not " INT64_FORMAT,
						c->id, c->claimed_epoch, epoch)));
}

/*
 * The start of a cell's write about a command (session_id and command_id the
 * function's first two arguments): lock the session, check the epoch, load
 * the command and check that this epoch is running it.  SPI connected.
 */
static CommandRef
command_lock_running(FunctionCallInfo fcinfo, int64 epoch, SessionTx **txp)
{
	SessionTx  *tx = session_lock_fenced(PG_GETARG_UUID_P(0), epoch, NULL);
	CommandRef	c = command_load(tx, PG_GETARG_INT64(1));

	command_require_running(&c, epoch);
	*txp = tx;
	return c;
}

/*
 * Set a command's status and the columns that go with it; leaves the new
 * row in SPI_tuptable.
 */
static void
command_update(SessionTx *tx, int64 command_id, const char *status, Jsonb *result,
			   Jsonb *error, TimestampTz available_at, bool finished)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[7] = {UUIDOID, INT8OID, TEXTOID, JSONBOID, JSONBOID, TIMESTAMPTZOID, TIMESTAMPTZOID};
	Datum		values[7];
	char		nulls[7] = {' ', ' ', ' ', 'n', 'n', 'n', 'n'};

	values[0] = UUIDPGetDatum(&tx->id);
	values[1] = Int64GetDatum(command_id);
	values[2] = CStringGetTextDatum(status);
	if (result)
	{
		values[3] = JsonbPGetDatum(result);
		nulls[3] = ' ';
	}
	if (error)
	{
		values[4] = JsonbPGetDatum(error);
		nulls[4] = ' ';
	}
	if (available_at)
	{
		values[5] = TimestampTzGetDatum(available_at);
		nulls[5] = ' ';
	}
	if (finished)
	{
		values[6] = TimestampTzGetDatum(nadi_now());
		nulls[6] = ' ';
	}
	nadi_exec(nadi_plan(&plan,
						"UPDATE nadi.command_inbox SET status = $3::nadi.command_status, "
						"result = coalesce($4, result), last_error = coalesce($5, last_error), "
						"available_at = coalesce($6, available_at), finished_at = $7, "
						"claimed_epoch = CASE WHEN $3 = 'running' THEN claimed_epoch END, "
						"claimed_at = CASE WHEN $3 = 'running' THEN claimed_at END "
						"WHERE session_id = $1 AND command_id = $2 RETURNING *",
						7, types),
			  values, nulls, false, 0);
}

/* Ask the cell to stop a command (it sees cancel_requested), and wake it. */
static void
command_request_cancel(SessionTx *tx, int64 command_id, const char *reason)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[2] = {UUIDPGetDatum(&tx->id), Int64GetDatum(command_id)};

	nadi_exec(nadi_plan(&plan,
						"UPDATE nadi.command_inbox SET cancel_requested = true "
						"WHERE session_id = $1 AND command_id = $2",
						2, (Oid[]) {UUIDOID, INT8OID}),
			  values, NULL, false, 0);
	session_event(tx, "command.cancel_requested", nadi_json_strings("reason", reason, NULL), command_id, -1);
	nadi_wake_cell_at_commit(tx->cell_host_id);
}

/*
 * Cancel one command of a locked session: a queued or waiting one at once,
 * a running one by asking its cell (which sees cancel_requested).  Returns
 * false if it had already finished.
 */
static bool
command_cancel_one(SessionTx *tx, const CommandRef *c, const char *reason)
{
	if (strcmp(c->status, "queued") == 0 || strcmp(c->status, "waiting") == 0)
	{
		command_update(tx, c->id, "cancelled", NULL, NULL, 0, true);
		session_event(tx, "command.cancelled", nadi_json_strings("reason", reason, NULL), c->id, -1);
		return true;
	}
	if (strcmp(c->status, "running") == 0)
	{
		if (!c->cancel_requested)
			command_request_cancel(tx, c->id, reason);
		return true;
	}
	return false;
}

/* command_cancel_one(), raising if the command had already finished. */
static void
command_cancel_unfinished(SessionTx *tx, const CommandRef *c, const char *reason)
{
	if (!command_cancel_one(tx, c, reason))
		ereport(ERROR,
				(errcode(ERRCODE_NADI_COMMAND_STATE),
				 errmsg("command " INT64_FORMAT " has already finished", c->id),
				 errdetail("It is %s.", c->status)));
}

/*
 * One command_inbox row as the function's result; raises if there is none.
 * read_only as for nadi_exec().
 */
static Datum
command_row(FunctionCallInfo fcinfo, const pg_uuid_t *id, int64 command_id, bool read_only,
			MemoryContext outer)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[2] = {UUIDPGetDatum(id), Int64GetDatum(command_id)};

	nadi_exec(nadi_plan(&plan,
						"SELECT * FROM nadi.command_inbox WHERE session_id = $1 AND command_id = $2",
						2, (Oid[]) {UUIDOID, INT8OID}),
			  values, NULL, read_only, 1);
	if (SPI_processed != 1)
		command_not_found(command_id, nadi_uuid_out(id));
	return nadi_spi_row(fcinfo, outer);
}

/* Cancel every open command of a locked session.  Returns how many. */
int
inbox_cancel_open(SessionTx *tx, const char *reason)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[1] = {UUIDPGetDatum(&tx->id)};
	uint64		n;
	int64	   *ids;
	int			count = 0;

	nadi_exec(nadi_plan(&plan,
						"SELECT command_id FROM nadi.command_inbox WHERE session_id = $1 "
						"AND status IN " OPEN_STATUSES " ORDER BY command_id",
						1, (Oid[]) {UUIDOID}),
			  values, NULL, false, 0);
	ids = nadi_spi_int8s(&n);
	for (uint64 i = 0; i < n; i++)
	{
		CommandRef	c = command_load(tx, ids[i]);

		count += command_cancel_one(tx, &c, reason) ? 1 : 0;
	}
	return count;
}

/* Cancel one open command of a locked session (busy.c's interrupt and rollback). */
void
inbox_cancel_command(SessionTx *tx, int64 command_id, const char *reason)
{
	CommandRef	c = command_load(tx, command_id);

	(void) command_cancel_one(tx, &c, reason);
}

/*
 * A waiting or queued command of a locked session that its cell must stop
 * itself (busy.c's rollback: the cell restores what the command changed):
 * back to the head of the queue, due now, with its cancel asked for; the
 * cell that claims it sees the cancel before anything else.
 */
void
inbox_stop_at_cell(SessionTx *tx, int64 command_id, const char *reason)
{
	StringInfoData buf;
	bool		isnull;

	command_update(tx, command_id, "queued", NULL, NULL, nadi_now(), false);
	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	nadi_json_str(&buf, "reason", reason);
	nadi_json_int(&buf, "attempts",
				  DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
											  SPI_fnumber(SPI_tuptable->tupdesc, "attempts"), &isnull)));
	appendStringInfoChar(&buf, '}');
	session_event(tx, "command.requeued", nadi_jsonb(buf.data), command_id, -1);
	command_request_cancel(tx, command_id, reason);
}

/* The command a control command acts on: explicit, or found by status. */
static CommandRef
control_target(SessionTx *tx, const char *type, Jsonb *payload)
{
	int64		target = payload_target(payload, type);
	CommandRef	head;

	if (target > 0)
		return command_load(tx, target);
	head = command_head(tx, NULL);
	if (head.id == 0 ||
		(strcmp(type, "cancel") != 0 && strcmp(head.status, "waiting") != 0))
		ereport(ERROR,
				(errcode(ERRCODE_NADI_COMMAND_STATE),
				 errmsg("session %s has no command to %s", tx->id_text, type),
				 strcmp(type, "cancel") == 0 ?
				 errdetail("No command is queued, running or waiting.") :
				 errdetail("No tool call is waiting for permission.")));
	return command_load(tx, head.id);
}

/*
 * Apply a control command now.  Returns its result (the control command
 * itself is recorded as completed with it).
 */
static Jsonb *
control_apply(SessionTx *tx, const char *type, Jsonb *payload)
{
	CommandRef	c = control_target(tx, type, payload);
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	nadi_json_int(&buf, "command_id", c.id);

	if (strcmp(type, "cancel") == 0)
	{
		command_cancel_unfinished(tx, &c, "cancel command");
		nadi_json_str(&buf, "outcome", strcmp(c.status, "running") == 0 ? "cancel_requested" : "cancelled");
	}
	else
	{
		bool		approve = strcmp(type, "approve") == 0;
		JsonbValue *reason = nadi_jsonb_member(payload, "reason");

		if (strcmp(c.status, "waiting") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_NADI_COMMAND_STATE),
					 errmsg("command " INT64_FORMAT " is not waiting for permission", c.id),
					 errdetail("It is %s.", c.status)));
		nadi_json_str(&buf, "decision", approve ? "approved" : "denied");
		if (reason && reason->type == jbvString)
			nadi_json_str(&buf, "reason", pnstrdup(reason->val.string.val, reason->val.string.len));
		appendStringInfoChar(&buf, '}');
		/* back to the head of the queue: the cell resumes it, decision in hand */
		command_update(tx, c.id, "queued", NULL, NULL, nadi_now(), false);
		session_event(tx, "permission.resolved", nadi_jsonb(buf.data), c.id, -1);
		nadi_wake_cell_at_commit(tx->cell_host_id);
		return nadi_jsonb(buf.data);
	}
	appendStringInfoChar(&buf, '}');
	return nadi_jsonb(buf.data);
}

/* Refuse an idempotency key of the wrong length. */
void
inbox_check_key(text *key)
{
	if (key && (VARSIZE_ANY_EXHDR(key) == 0 || VARSIZE_ANY_EXHDR(key) > 255))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("idempotency_key must be 1 to 255 bytes long")));
}

/* Check a command's type and payload before any lock is taken. */
void
inbox_check_command(const char *type, Jsonb *payload)
{
	payload_validate(type, payload);
}

/*
 * Enqueue one checked command into a locked session (the body of
 * nadi.command_enqueue, also run once per element by
 * nadi.command_enqueue_many).  Returns the command's row (or the row first
 * enqueued with the same key) in the current memory context, and its
 * descriptor in *desc.  *open caches how many open commands the session has
 * (-1: not known yet) so that a batch counts them once per session; it is
 * kept up to date here.  The caller saves the session (session_save).
 */
HeapTuple
inbox_enqueue_locked(SessionTx *tx, const char *type, Jsonb *payload, text *key,
					 int64 *open, TupleDesc *desc)
{
	static SPIPlanPtr key_plan = NULL;
	static SPIPlanPtr count_plan = NULL;
	static SPIPlanPtr insert_plan = NULL;
	MemoryContext mine = CurrentMemoryContext;
	MemoryContext old;
	Datum		values[10];
	char		nulls[10] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	bool		control = is_control(type);
	Jsonb	   *control_result = NULL;
	int64		command_id;
	bool		isnull;
	HeapTuple	row;
	StringInfoData buf;

#ifdef NADI_UNSAFE_NO_IDEMPOTENCY

	/*
	 * An extension that forgets the key, built for one purpose only:
	 * test/suites/60-chaos shows that the chaos checker catches the
	 * duplicate commands a retried request then makes.
	 */
	key = NULL;
#endif
	/* a retry with the same key gets the original, whatever happened since */
	if (key)
	{
		values[0] = UUIDPGetDatum(&tx->id);
		values[1] = PointerGetDatum(key);
		nadi_exec(nadi_plan(&key_plan,
							"SELECT * FROM nadi.command_inbox "
							"WHERE session_id = $1 AND idempotency_key = $2 AND idempotency_key IS NOT NULL",
							2, (Oid[]) {UUIDOID, TEXTOID}),
				  values, NULL, false, 1);
		if (SPI_processed == 1)
		{
			TupleDesc	d = SPI_tuptable->tupdesc;
			char	   *old_type;
			Jsonb	   *old_payload;

			row = SPI_tuptable->vals[0];
			old_type = SPI_getvalue(row, d, SPI_fnumber(d, "type"));
			old_payload = DatumGetJsonbP(SPI_getbinval(row, d, SPI_fnumber(d, "payload"), &isnull));
			if (strcmp(old_type, type) != 0 ||
				compareJsonbContainers(&old_payload->root, &payload->root) != 0)
				ereport(ERROR,
						(errcode(ERRCODE_NADI_IDEMPOTENCY_CONFLICT),
						 errmsg("idempotency key already used for a different command"),
						 errdetail("The key was first used for a %s command with another payload.",
								   old_type),
						 errhint("Use a new idempotency key for a new command.")));
			old = MemoryContextSwitchTo(mine);
			*desc = CreateTupleDescCopy(d);
			row = heap_copytuple(row);
			MemoryContextSwitchTo(old);
			return row;
		}
	}

	if (!session_state_is_live(tx->state) || tx->state == SS_TERMINATING)
		ereport(ERROR,
				(errcode(ERRCODE_NADI_SESSION_NOT_LIVE),
				 errmsg("session %s is %s", tx->id_text, session_state_name(tx->state)),
				 errdetail("Commands can only be sent to a live session.")));

	if (control)
	{
		control_result = control_apply(tx, type, payload);
		*open = -1;				/* a control command may have closed some */
	}
	else
	{
		/* a message while another runs: the session's policy (busy.c) */
		if (strcmp(type, "message") == 0 && busy_apply(tx, payload))
			*open = -1;
		if (*open < 0)
		{
			values[0] = UUIDPGetDatum(&tx->id);
			values[1] = Int32GetDatum(nadi_max_queued_per_session);
			nadi_exec(nadi_plan(&count_plan,
								"SELECT count(*) FROM (SELECT 1 FROM nadi.command_inbox "
								"WHERE session_id = $1 AND status IN " OPEN_STATUSES " LIMIT $2) s",
								2, (Oid[]) {UUIDOID, INT4OID}),
					  values, NULL, false, 1);
			*open = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
												&isnull));
		}
		if (*open >= nadi_max_queued_per_session)
			ereport(ERROR,
					(errcode(ERRCODE_NADI_LIMIT_EXCEEDED),
					 errmsg("session %s has too many open commands", tx->id_text),
					 errdetail("The limit is %d queued, running or waiting commands.",
							   nadi_max_queued_per_session),
					 errhint("Wait for the session to catch up, or raise nadi.max_queued_commands.")));
		(*open)++;
	}

	/* the command id is drawn under the session lock: ids follow commit order */
	values[0] = UUIDPGetDatum(&tx->id);
	values[1] = CStringGetTextDatum(tx->tenant);
	values[2] = CStringGetTextDatum(type);
	values[3] = JsonbPGetDatum(payload);
	if (key)
		values[4] = PointerGetDatum(key);
	else
		nulls[4] = 'n';
	values[5] = CStringGetTextDatum(control ? "completed" : "queued");
	values[6] = Int32GetDatum(nadi_max_attempts);
	values[7] = TimestampTzGetDatum(nadi_now());
	if (control_result)
		values[8] = JsonbPGetDatum(control_result);
	else
		nulls[8] = 'n';
	nadi_exec(nadi_plan(&insert_plan,
						"INSERT INTO nadi.command_inbox (session_id, tenant_id, type, payload, "
						"idempotency_key, status, max_attempts, available_at, created_at, result, "
						"finished_at) VALUES ($1, $2, $3, $4, $5, $6::nadi.command_status, $7, $8, $8, $9, "
						"CASE WHEN $9 IS NULL THEN NULL ELSE $8 END) RETURNING *",
						9, (Oid[]) {UUIDOID, TEXTOID, TEXTOID, JSONBOID, TEXTOID, TEXTOID, INT4OID,
						TIMESTAMPTZOID, JSONBOID}),
			  values, nulls, false, 0);
	command_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
											 SPI_fnumber(SPI_tuptable->tupdesc, "command_id"),
											 &isnull));
	old = MemoryContextSwitchTo(mine);
	*desc = CreateTupleDescCopy(SPI_tuptable->tupdesc);
	row = heap_copytuple(SPI_tuptable->vals[0]);
	MemoryContextSwitchTo(old);

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	nadi_json_str(&buf, "type", type);
	nadi_json_raw(&buf, "payload", nadi_jsonb_text(payload));
	if (key)
		nadi_json_str(&buf, "idempotency_key", text_to_cstring(key));
	appendStringInfoChar(&buf, '}');
	session_event(tx, "command.received", nadi_jsonb(buf.data), command_id, -1);

	/*
	 * New work (a command, or an approved/denied tool call back in the queue)
	 * brings a suspended session back; a held one gets its cell woken.
	 */
	if (!control || strcmp(type, "cancel") != 0)
	{
		if (tx->state == SS_SUSPENDED)
			session_set_state(tx, SS_PENDING, NULL);
		else
			nadi_wake_cell_at_commit(tx->cell_host_id);
	}
	return row;
}

/*
 * nadi.command_enqueue(session_id, type, payload, idempotency_key)
 *   → command_inbox
 * The same idempotency key returns the same command and changes nothing;
 * the same key with a different request is refused.  A suspended session
 * goes back to pending; the holding cell is woken at commit.
 */
PG_FUNCTION_INFO_V1(nadi_command_enqueue);
Datum
nadi_command_enqueue(PG_FUNCTION_ARGS)
{
	MemoryContext outer = CurrentMemoryContext;
	char	   *type;
	Jsonb	   *payload;
	text	   *key = NULL;
	SessionTx  *tx;
	HeapTuple	row;
	TupleDesc	desc;
	int64		open = -1;
	Datum		result;

	NADI_ARG_NOT_NULL(0, "session_id");
	NADI_ARG_NOT_NULL(1, "type");
	type = text_to_cstring(PG_GETARG_TEXT_PP(1));
	payload = PG_ARGISNULL(2) ? nadi_jsonb("{}") : PG_GETARG_JSONB_P(2);
	if (!PG_ARGISNULL(3))
		key = PG_GETARG_TEXT_PP(3);
	inbox_check_key(key);
	payload_validate(type, payload);

	nadi_connect();
	tx = session_lock(PG_GETARG_UUID_P(0));
	row = inbox_enqueue_locked(tx, type, payload, key, &open, &desc);
	result = nadi_row_datum(fcinfo, row, desc, outer);
	session_save(tx);
	nadi_finish();
	PG_RETURN_DATUM(result);
}

/*
 * Without locks: is the session's head command queued and due, under a
 * lease that looks current?  A stale answer is harmless: "yes" is checked
 * again under the lock, and "no" only means the cell looks again when it is
 * woken.  A lease that has visibly moved on raises NA005 as the locked path
 * would, so a fenced cell learns it at once.  Only for callers without a
 * token: with one, the locked path also checks the session is visible.
 */
static bool
claim_worth_locking(const pg_uuid_t *id, int64 epoch)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[3] = {UUIDPGetDatum(id), Int64GetDatum(epoch), TimestampTzGetDatum(nadi_now())};
	bool		isnull;
	Datum		d;

	nadi_exec(nadi_plan(&plan,
						"SELECT l.cell_host_id IS NOT NULL AND l.epoch = $2 AND l.expires_at > $3, "
						"  (SELECT c.status = 'queued' AND c.available_at <= $3 FROM nadi.command_inbox c "
						"   WHERE c.session_id = $1 AND c.status IN " OPEN_STATUSES " "
						"   ORDER BY c.command_id LIMIT 1) "
						"FROM nadi.session_leases l WHERE l.session_id = $1",
						3, (Oid[]) {UUIDOID, INT8OID, TIMESTAMPTZOID}),
			  values, NULL, true, 1);
	if (SPI_processed != 1)
		return true;			/* let the locked path say "not found" */
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (isnull || !DatumGetBool(d))
		return true;			/* let the locked path raise the fencing error */
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	return !isnull && DatumGetBool(d);
}

/*
 * Claim the head of a locked session's queue under epoch, whose fence the
 * caller has checked: the head becomes running if the session is active and
 * the head is queued and due, and command.started records it.  Nothing is
 * claimed while another command of the session is running or waiting (one in
 * flight per session), or while the head waits out its retry backoff.
 * Returns the claimed command_inbox row (a tuple table valid until
 * SPI_finish) or NULL.  Shared by command_claim and command_claim_many
 * (batch.c).
 */
SPITupleTable *
inbox_claim_head(SessionTx *tx, int64 epoch)
{
	static SPIPlanPtr plan = NULL;
	CommandRef	head;
	TimestampTz available_at = 0;
	Datum		values[3];
	SPITupleTable *claimed;
	StringInfoData buf;
	bool		isnull;

	head = command_head(tx, &available_at);
	if (tx->state != SS_ACTIVE || head.id == 0 || strcmp(head.status, "queued") != 0 ||
		available_at > nadi_now())
		return NULL;
	values[0] = UUIDPGetDatum(&tx->id);
	values[1] = Int64GetDatum(head.id);
	values[2] = Int64GetDatum(epoch);
	nadi_exec(nadi_plan(&plan,
						"UPDATE nadi.command_inbox SET status = 'running', "
						"attempts = attempts + 1, claimed_epoch = $3, claimed_at = nadi.now() "
						"WHERE session_id = $1 AND command_id = $2 RETURNING *",
						3, (Oid[]) {UUIDOID, INT8OID, INT8OID}),
			  values, NULL, false, 0);
	claimed = SPI_tuptable;
	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	nadi_json_int(&buf, "attempt",
				  DatumGetInt32(SPI_getbinval(claimed->vals[0], claimed->tupdesc,
											  SPI_fnumber(claimed->tupdesc, "attempts"),
											  &isnull)));
	appendStringInfoChar(&buf, '}');
	session_event(tx, "command.started", nadi_jsonb(buf.data), head.id, epoch);
	session_save(tx);
	return claimed;
}

/*
 * nadi.command_claim(session_id, epoch) → setof command_inbox (0 or 1 row)
 * The head of the session's queue, if it is queued and due, becomes running
 * under the caller's epoch (inbox_claim_head).
 */
PG_FUNCTION_INFO_V1(nadi_command_claim);
Datum
nadi_command_claim(PG_FUNCTION_ARGS)
{
	SessionTx  *tx;
	SPITupleTable *claimed;
	int64		epoch;

	NADI_ARG_NOT_NULL(0, "session_id");
	NADI_ARG_NOT_NULL(1, "epoch");
	epoch = PG_GETARG_INT64(1);
	InitMaterializedSRF(fcinfo, 0);

	nadi_connect();

	/*
	 * Look before locking: a claim that finds nothing to do takes no row
	 * lock, so it needs no transaction id and no WAL flush at commit.
	 */
	if (nadi_auth_scope() == NADI_SCOPE_NONE &&
		!claim_worth_locking(PG_GETARG_UUID_P(0), epoch))
	{
		nadi_finish();
		return (Datum) 0;
	}
	tx = session_lock_fenced(PG_GETARG_UUID_P(0), epoch, NULL);
	claimed = inbox_claim_head(tx, epoch);
	if (claimed)
		nadi_tuptable_to_srf(fcinfo, claimed, 1);
	nadi_finish();
	return (Datum) 0;
}

/*
 * Complete a command of a locked session whose lease the caller has checked
 * at epoch: the cell's events (optional) in order, the command completed
 * with result, then command.completed.  The events go into batch when it is
 * not NULL (the caller flushes it), else they are inserted now.  Returns the
 * completed command_inbox row (a tuple table valid until SPI_finish).  A
 * command that is missing, not running, or running under another epoch
 * raises (NA003, NA006, NA005) when refused is NULL; otherwise *refused is
 * set ("not_found", "not_running", "fenced") and NULL returned, with
 * nothing written.
 */
SPITupleTable *
inbox_complete_locked(SessionTx *tx, int64 command_id, int64 epoch, Jsonb *result,
					  Jsonb *events, EventBatch *batch, const char **refused)
{
	CommandRef	c;
	SPITupleTable *row;
	StringInfoData buf;

	if (refused)
	{
		if (!command_find(tx, command_id, &c))
			*refused = "not_found";
		else if (strcmp(c.status, "running") != 0)
			*refused = "not_running";
		else if (c.claimed_epoch != epoch)
			*refused = "fenced";
		else
			*refused = NULL;
		if (*refused)
			return NULL;
	}
	else
	{
		c = command_load(tx, command_id);
		command_require_running(&c, epoch);
	}
	if (events)
		events_append_array(tx, events, c.id, epoch, batch);
	command_update(tx, c.id, "completed", result, NULL, 0, true);
	row = SPI_tuptable;

	/*
	 * The session made progress: the crash budget counts crashes since its
	 * last completed command, so cells lost now and then over a long life
	 * (a fleet's ordinary failures) never add up to a failed session.  A
	 * command that keeps killing its cell still dead-letters by its attempts.
	 */
	tx->crash_count = 0;
	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	nadi_json_raw(&buf, "result", nadi_jsonb_text(result));
	appendStringInfoChar(&buf, '}');
	if (batch)
		session_event_batched(batch, tx, "command.completed", nadi_jsonb(buf.data), c.id, epoch);
	else
		session_event(tx, "command.completed", nadi_jsonb(buf.data), c.id, epoch);
	return row;
}

/*
 * nadi.command_complete(session_id, command_id, epoch, result, events)
 *   → command_inbox
 * events, optional, is an array of {"kind", "payload"} the cell appends
 * (fenced, in order) just before command.completed: a reply and its
 * completion then cost one lock of the session, not two.
 */
PG_FUNCTION_INFO_V1(nadi_command_complete);
Datum
nadi_command_complete(PG_FUNCTION_ARGS)
{
	MemoryContext outer = CurrentMemoryContext;
	SessionTx  *tx;
	SPITupleTable *row;
	int64		epoch;
	Jsonb	   *result_json;
	Jsonb	   *events = NULL;
	Datum		result;

	NADI_ARG_NOT_NULL(0, "session_id");
	NADI_ARG_NOT_NULL(1, "command_id");
	NADI_ARG_NOT_NULL(2, "epoch");
	epoch = PG_GETARG_INT64(2);
	result_json = PG_ARGISNULL(3) ? nadi_jsonb("{}") : PG_GETARG_JSONB_P(3);
	nadi_check_payload(result_json, "command result");
	if (!PG_ARGISNULL(4))
	{
		events = PG_GETARG_JSONB_P(4);
		events_check_array(events);
	}

	nadi_connect();
	tx = session_lock_fenced(PG_GETARG_UUID_P(0), epoch, NULL);
	row = inbox_complete_locked(tx, PG_GETARG_INT64(1), epoch, result_json, events, NULL, NULL);
	result = nadi_row_datum(fcinfo, row->vals[0], row->tupdesc, outer);
	session_save(tx);
	nadi_finish();
	PG_RETURN_DATUM(result);
}

/* Delay before retry number `attempts` + 1: base * 2^(attempts-1), capped. */
static TimestampTz
retry_at(int32 attempts)
{
	int64		delay = nadi_backoff_base_ms;

	for (int i = 1; i < attempts && delay < nadi_backoff_max_ms; i++)
		delay *= 2;
	delay = Min(delay, (int64) nadi_backoff_max_ms);
	return nadi_now() + delay * 1000;
}

/*
 * nadi.command_fail(session_id, command_id, epoch, error, retryable)
 *   → command_inbox
 * A retryable failure with attempts left goes back to the queue after a
 * backoff; otherwise the command is dead-lettered (kept, status 'dead').  A
 * command whose cancel was requested ends as cancelled.
 */
PG_FUNCTION_INFO_V1(nadi_command_fail);
Datum
nadi_command_fail(PG_FUNCTION_ARGS)
{
	MemoryContext outer = CurrentMemoryContext;
	SessionTx  *tx;
	CommandRef	c;
	int64		epoch;
	Jsonb	   *error;
	bool		retryable;
	Datum		result;
	StringInfoData buf;
	const char *status;
	TimestampTz when = 0;

	NADI_ARG_NOT_NULL(0, "session_id");
	NADI_ARG_NOT_NULL(1, "command_id");
	NADI_ARG_NOT_NULL(2, "epoch");
	NADI_ARG_NOT_NULL(3, "error");
	epoch = PG_GETARG_INT64(2);
	error = PG_GETARG_JSONB_P(3);
	retryable = PG_ARGISNULL(4) ? true : PG_GETARG_BOOL(4);
	nadi_check_payload(error, "command error");

	nadi_connect();
	c = command_lock_running(fcinfo, epoch, &tx);

	if (c.cancel_requested)
		status = "cancelled";
	else if (retryable && c.attempts < c.max_attempts)
	{
		status = "queued";
		when = retry_at(c.attempts);
	}
	else
		status = "dead";
	command_update(tx, c.id, status, NULL, error, when, strcmp(status, "queued") != 0);
	result = nadi_spi_row(fcinfo, outer);

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	nadi_json_raw(&buf, "error", nadi_jsonb_text(error));
	nadi_json_int(&buf, "attempt", c.attempts);
	nadi_json_int(&buf, "max_attempts", c.max_attempts);
	nadi_json_raw(&buf, "will_retry", when ? "true" : "false");
	if (when)
		nadi_json_str(&buf, "retry_at", nadi_timestamptz_iso(when));
	appendStringInfoChar(&buf, '}');
	session_event(tx, "command.failed", nadi_jsonb(buf.data), c.id, epoch);
	if (strcmp(status, "dead") == 0)
		session_event(tx, "command.dead", nadi_jsonb(buf.data), c.id, epoch);
	else if (strcmp(status, "cancelled") == 0)
		session_event(tx, "command.cancelled", nadi_json_strings("reason", "cancelled in flight", NULL), c.id, epoch);
	session_save(tx);
	nadi_finish();
	PG_RETURN_DATUM(result);
}

/*
 * nadi.command_await_permission(session_id, command_id, epoch, request)
 *   → command_inbox
 * The cell needs a yes or no before a tool call.  The command parks as
 * 'waiting' (still at the head of the queue, so nothing overtakes it), the
 * attempt ends without counting, and a permission.requested event asks the
 * client.  approve/deny put it back in the queue.
 */
PG_FUNCTION_INFO_V1(nadi_command_await_permission);
Datum
nadi_command_await_permission(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	MemoryContext outer = CurrentMemoryContext;
	SessionTx  *tx;
	CommandRef	c;
	int64		epoch;
	Jsonb	   *request;
	Datum		result;
	Datum		values[2];

	NADI_ARG_NOT_NULL(0, "session_id");
	NADI_ARG_NOT_NULL(1, "command_id");
	NADI_ARG_NOT_NULL(2, "epoch");
	NADI_ARG_NOT_NULL(3, "request");
	epoch = PG_GETARG_INT64(2);
	request = PG_GETARG_JSONB_P(3);
	nadi_check_object(request, "request");
	nadi_check_payload(request, "permission request");

	nadi_connect();
	c = command_lock_running(fcinfo, epoch, &tx);
	values[0] = UUIDPGetDatum(&tx->id);
	values[1] = Int64GetDatum(c.id);
	nadi_exec(nadi_plan(&plan,
						"UPDATE nadi.command_inbox SET status = 'waiting', attempts = attempts - 1, "
						"claimed_epoch = NULL, claimed_at = NULL "
						"WHERE session_id = $1 AND command_id = $2 RETURNING *",
						2, (Oid[]) {UUIDOID, INT8OID}),
			  values, NULL, false, 0);
	result = nadi_spi_row(fcinfo, outer);
	session_event(tx, "permission.requested", request, c.id, epoch);
	session_save(tx);
	nadi_finish();
	PG_RETURN_DATUM(result);
}

/* nadi.command_cancel(session_id, command_id) → command_inbox */
PG_FUNCTION_INFO_V1(nadi_command_cancel);
Datum
nadi_command_cancel(PG_FUNCTION_ARGS)
{
	MemoryContext outer = CurrentMemoryContext;
	SessionTx  *tx;
	CommandRef	c;
	Datum		result;

	NADI_ARG_NOT_NULL(0, "session_id");
	NADI_ARG_NOT_NULL(1, "command_id");
	nadi_connect();
	tx = session_lock(PG_GETARG_UUID_P(0));
	c = command_load(tx, PG_GETARG_INT64(1));
	command_cancel_unfinished(tx, &c, "cancelled by request");
	session_save(tx);
	result = command_row(fcinfo, &tx->id, c.id, false, outer);
	nadi_finish();
	PG_RETURN_DATUM(result);
}

/* nadi.command_get(session_id, command_id) → command_inbox */
PG_FUNCTION_INFO_V1(nadi_command_get);
Datum
nadi_command_get(PG_FUNCTION_ARGS)
{
	MemoryContext outer = CurrentMemoryContext;
	Datum		result;

	NADI_ARG_NOT_NULL(0, "session_id");
	NADI_ARG_NOT_NULL(1, "command_id");
	nadi_connect();
	session_require_visible(PG_GETARG_UUID_P(0));
	result = command_row(fcinfo, PG_GETARG_UUID_P(0), PG_GETARG_INT64(1), true, outer);
	nadi_finish();
	PG_RETURN_DATUM(result);
}

/* nadi.command_list(session_id, status, after, limit) → setof command_inbox */
PG_FUNCTION_INFO_V1(nadi_command_list);
Datum
nadi_command_list(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[4];
	char		nulls[4] = {' ', 'n', ' ', ' '};
	int32		limit = PG_ARGISNULL(3) ? 100 : PG_GETARG_INT32(3);
	int64		after = PG_ARGISNULL(2) ? 0 : PG_GETARG_INT64(2);

	NADI_ARG_NOT_NULL(0, "session_id");
	nadi_check_limit(limit, 10000);
	if (after < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("after must not be negative")));
	InitMaterializedSRF(fcinfo, 0);
	nadi_connect();
	session_require_visible(PG_GETARG_UUID_P(0));
	values[0] = PG_GETARG_DATUM(0);
	if (!PG_ARGISNULL(1))
	{
		values[1] = CStringGetTextDatum(DatumGetCString(DirectFunctionCall1(enum_out, PG_GETARG_DATUM(1))));
		nulls[1] = ' ';
	}
	values[2] = Int64GetDatum(after);
	values[3] = Int32GetDatum(limit);
	nadi_exec(nadi_plan(&plan,
						"SELECT * FROM nadi.command_inbox WHERE session_id = $1 "
						"AND ($2::text IS NULL OR status = $2::nadi.command_status) "
						"AND command_id > $3 ORDER BY command_id LIMIT $4",
						4, (Oid[]) {UUIDOID, TEXTOID, INT8OID, INT4OID}),
			  values, nulls, true, 0);
	nadi_rows_to_srf(fcinfo);
	nadi_finish();
	return (Datum) 0;
}
