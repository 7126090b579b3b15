/*
 * busy.c — what a new message does to a session that is still running one:
 * the session policy's "on_message_while_running" (or the message's own
 * payload key of that name), as LangGraph's multitask strategies:
 *
 *   enqueue    the message waits its turn (the default, and the behaviour
 *              before the policy existed)
 *   reject     the enqueue fails with NA015 (HTTP 409 session_busy)
 *   interrupt  the open messages are cancelled (a running one at its next
 *              step, as nadi.command_cancel does), then the new one runs
 *   rollback   each open message that had started is rolled back: a
 *              command.rolled_back event naming the workspace snapshot from
 *              before it, and its cell asked to stop it (a waiting one goes
 *              back to the head of the queue for that); the cell drops its
 *              turn, restores the snapshot and ends it cancelled, and
 *              nadi.session_replay() leaves its events out of the
 *              conversation from then on (the log keeps them).  The others
 *              are cancelled at once.
 *
 * Only messages are concerned, on both sides: a new tool command always
 * queues, and an open tool command neither makes the session busy nor is
 * cancelled.  All of it runs under the session lock, in the enqueue
 * (inbox_enqueue_locked), so both nadi.command_enqueue and
 * nadi.command_enqueue_many apply it.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"

#include "nadi.h"
#include "session.h"

#define BUSY_KEY "on_message_while_running"

static const char *const strategies[] = {"enqueue", "reject", "interrupt", "rollback"};

/* The strategy a string names, or -1. */
static int
strategy_of(const JsonbValue *v)
{
	if (v == NULL || v->type != jbvString)
		return -1;
	for (int i = 0; i < lengthof(strategies); i++)
		if (strlen(strategies[i]) == v->val.string.len &&
			memcmp(strategies[i], v->val.string.val, v->val.string.len) == 0)
			return i;
	return -1;
}

/* Raise unless j's "on_message_while_running", when present, names a strategy. */
void
busy_check_policy(Jsonb *j, const char *where)
{
	JsonbValue *v = nadi_jsonb_member(j, BUSY_KEY);

	if (v == NULL || strategy_of(v) >= 0)
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("%s." BUSY_KEY " must be \"enqueue\", \"reject\", \"interrupt\" or \"rollback\"", where),
			 v->type == jbvString ?
			 errdetail("It is %s.", nadi_shown(v->val.string.val, v->val.string.len)) :
			 errdetail("It is not a string."),
			 errhint("It says what a message does when the session is still running another.")));
}

/* Whether two workspace snapshots (JSON text) are of the same sandbox. */
static bool
same_sandbox(const char *a, const char *b)
{
	JsonbValue *x = nadi_jsonb_member(nadi_jsonb(a), "sandbox_id");
	JsonbValue *y = nadi_jsonb_member(nadi_jsonb(b), "sandbox_id");

	return x && y && x->type == jbvString && y->type == jbvString &&
		x->val.string.len == y->val.string.len &&
		memcmp(x->val.string.val, y->val.string.val, x->val.string.len) == 0;
}

/*
 * Record that a started message command is rolled back: command.rolled_back
 * {command_id, from_seq, to_seq, workspace?}.  from_seq is its first
 * command.started, to_seq the last event before this one; workspace where
 * the files were before from_seq as the replay folds them (replay.c), else
 * the session sandbox's first snapshot (ws-0); absent when no tool call
 * ever recorded one.
 * Returns false (and records nothing) if the command never started, or an
 * earlier message rolled it back already.
 */
static bool
busy_record_rollback(SessionTx *tx, int64 command_id)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[2] = {UUIDPGetDatum(&tx->id), Int64GetDatum(command_id)};
	bool		isnull;
	Datum		d;
	int64		from_seq;
	char	   *first;
	char	   *workspace;
	StringInfoData buf;

	nadi_exec(nadi_plan(&plan,
						"WITH s AS (SELECT min(seq) FILTER (WHERE kind = 'command.started') AS from_seq, "
						"  bool_or(kind = 'command.rolled_back') AS done FROM nadi.events "
						"  WHERE session_id = $1 AND command_id = $2 "
						"  AND kind IN ('command.started', 'command.rolled_back')), "
						"a AS (SELECT payload->'workspace' AS w FROM nadi.events "
						"  WHERE session_id = $1 AND kind = 'tool.result' "
						"  AND jsonb_typeof(payload->'workspace') = 'object' ORDER BY seq DESC LIMIT 1) "
						"SELECT CASE WHEN s.done THEN NULL ELSE s.from_seq END, "
						"  (CASE WHEN a.w IS NOT NULL THEN jsonb_build_object('host_id', a.w->'host_id', "
						"  'sandbox_id', a.w->'sandbox_id', 'snapshot', 'ws-0') END)::text "
						"FROM s LEFT JOIN a ON true",
						2, (Oid[]) {UUIDOID, INT8OID}),
			  values, NULL, false, 1);	/* a fresh snapshot: after the lock wait */
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (isnull)
		return false;
	from_seq = DatumGetInt64(d);
	(void) SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	first = isnull ? NULL : SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);

	/*
	 * The files from before it, as the replay folds them (a call's snapshot,
	 * an earlier rollback's restore), when that is a snapshot of the
	 * sandbox the session's calls use now; else that sandbox's first one
	 * (ws-0): a fork's origin is a snapshot of its parent's sandbox, and
	 * its own sandbox started as that (its ws-0).
	 */
	workspace = replay_workspace_at(&tx->id, from_seq - 1);
	if (workspace == NULL || first == NULL || !same_sandbox(workspace, first))
		workspace = first;
	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	nadi_json_int(&buf, "command_id", command_id);
	nadi_json_int(&buf, "from_seq", from_seq);
	nadi_json_int(&buf, "to_seq", tx->last_seq);
	if (workspace)
		nadi_json_raw(&buf, "workspace", workspace);
	appendStringInfoChar(&buf, '}');
	session_event(tx, "command.rolled_back", nadi_jsonb(buf.data), command_id, -1);
	return true;
}

/*
 * Apply the policy for a new message (payload already checked) to a locked,
 * live session, before the message is inserted.  Raises NA015 under reject;
 * returns true when it acted on open messages.
 */
bool
busy_apply(SessionTx *tx, Jsonb *payload)
{
	static SPIPlanPtr plan = NULL;
	JsonbValue *v = nadi_jsonb_member(payload, BUSY_KEY);
	int			strategy;
	Datum		values[1] = {UUIDPGetDatum(&tx->id)};
	uint64		n;
	SPITupleTable *tt;

	if (v == NULL && tx->policy != NULL)
		v = nadi_jsonb_member(tx->policy, BUSY_KEY);
	strategy = v ? strategy_of(v) : 0;
	if (strategy <= 0)
		return false;				/* enqueue (a policy stored before 1.1 is not checked) */

	nadi_exec(nadi_plan(&plan,
						"SELECT command_id, status::text, cancel_requested FROM nadi.command_inbox WHERE session_id = $1 AND type = 'message' "
						"AND status IN ('queued', 'running', 'waiting') ORDER BY command_id",
						1, (Oid[]) {UUIDOID}),
			  values, NULL, false, 0);
	n = SPI_processed;
	tt = SPI_tuptable;
	if (n == 0)
		return false;
	if (strcmp(strategies[strategy], "reject") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NADI_SESSION_BUSY),
				 errmsg("session %s is busy", tx->id_text),
				 errdetail("Message %s is %s, and the policy's " BUSY_KEY " is \"reject\".",
						   SPI_getvalue(tt->vals[0], tt->tupdesc, 1),
						   SPI_getvalue(tt->vals[0], tt->tupdesc, 2)),
				 errhint("Send the message when the session is idle, cancel the open one, or send it "
						 "with \"" BUSY_KEY "\": \"interrupt\" in its payload.")));
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull));
		bool		running = strcmp(SPI_getvalue(tt->vals[i], tt->tupdesc, 2), "running") == 0;
		bool		stopping = DatumGetBool(SPI_getbinval(tt->vals[i], tt->tupdesc, 3, &isnull));
		bool		rollback = strcmp(strategies[strategy], "rollback") == 0;

		/*
		 * Only the first open message can have started (the queue runs in
		 * order).  Rolled back, a running one is asked to stop; one no cell
		 * is running (waiting for permission, approved and queued again, or
		 * waiting for a retry) goes back to the head of the queue asked to
		 * stop: its cell claims it, sees the cancel at once, drops its turn
		 * and restores its workspace, as for a running one.  One already on
		 * that way is left to it.
		 */
		if (rollback && i == 0 && busy_record_rollback(tx, id))
		{
			if (running)
				inbox_cancel_command(tx, id, "rolled back by a new message");
			else
				inbox_stop_at_cell(tx, id, "rolled back by a new message");
		}
		else if (!(stopping && strcmp(SPI_getvalue(tt->vals[i], tt->tupdesc, 2), "queued") == 0))
			inbox_cancel_command(tx, id, rollback ? "rolled back by a new message" :
								 "interrupted by a new message");
	}
	return true;
}
