/*
 * replay.c — folds a session's event log into the state a cell holds for it
 * (invariant 7: cell state is reconstructable).  The fold is a pure function
 * of the events, applied in sequence order; docs/SQL_API.md lists what each
 * event kind contributes.  A cell that resumes a session after a crash or a
 * suspension starts from exactly this.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"

#include "nadi.h"
#include "session.h"

typedef struct ReplayCommand
{
	int64		command_id;		/* hash key */
	int			order;			/* position in the commands array */
} ReplayCommand;

typedef struct CommandState
{
	int64		id;
	char	   *type;
	const char *status;
	bool		cancel_requested;
	char	   *text;			/* a message's text (JSON), until it starts */
	char	   *pending_tool;	/* tool (JSON string) awaiting permission */
	int			rolled_back;	/* 1: command.rolled_back; 2: it ended so, out of the conversation */
	char	   *workspace;		/* its latest snapshot while rolled_back is 1 */
} CommandState;

typedef struct Replay
{
	char	   *tenant;
	const char *state;
	int64		last_seq;
	int64		epoch;
	char	   *cell_host_id;
	int64		open_command;
	char	   *pending_permission;	/* JSON text */
	StringInfoData messages;	/* JSON array elements, comma separated */
	int			nmessages;
	int64	   *message_cmd;	/* each message's command (0: none) */
	int		   *message_end;	/* and where it ends in messages.data */
	int			capmessages;
	CommandState *commands;
	int			ncommands;
	int			capcommands;
	HTAB	   *index;
	char	   *fork;			/* a fork's origin (JSON text), or NULL */
	char	   *workspace;		/* the files as they are: a snapshot (JSON text), or NULL */
	int64		span_command;	/* the command under way (started, not ended) */
	int64		span_start;		/* the seq of its first command.started */
} Replay;

static char *
member_text(Jsonb *j, const char *key)
{
	JsonbValue *v = nadi_jsonb_member(j, key);

	if (v == NULL || v->type != jbvString)
		return NULL;
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/* A member as JSON text (any type), or NULL when absent. */
static char *
member_json(Jsonb *j, const char *key)
{
	JsonbValue *v = nadi_jsonb_member(j, key);
	Jsonb	   *sub;

	if (v == NULL)
		return NULL;
	sub = JsonbValueToJsonb(v);
	return nadi_jsonb_text(sub);
}

/*
 * A payload's "workspace" as {"host_id", "sandbox_id", "snapshot"} (JSON
 * text; host_id a string or null), or NULL when it has none of that shape.
 */
static char *
workspace_of(Jsonb *p)
{
	JsonbValue *w = nadi_jsonb_member(p, "workspace");
	Jsonb	   *wj;
	JsonbValue *host;
	char	   *sandbox;
	char	   *snapshot;
	StringInfoData buf;

	if (w == NULL || w->type != jbvBinary || !JsonContainerIsObject(w->val.binary.data))
		return NULL;
	wj = JsonbValueToJsonb(w);
	host = nadi_jsonb_member(wj, "host_id");
	sandbox = member_text(wj, "sandbox_id");
	snapshot = member_text(wj, "snapshot");
	if (sandbox == NULL || snapshot == NULL || (host && host->type != jbvString && host->type != jbvNull))
		return NULL;
	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	nadi_json_raw(&buf, "host_id", host && host->type == jbvString ? member_json(wj, "host_id") : "null");
	nadi_json_str(&buf, "sandbox_id", sandbox);
	nadi_json_str(&buf, "snapshot", snapshot);
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

static CommandState *
command_find(Replay *r, int64 id)
{
	bool		found;
	ReplayCommand *e = hash_search(r->index, &id, HASH_FIND, &found);

	return found ? &r->commands[e->order] : NULL;
}

static void
command_add(Replay *r, int64 id, const char *type, const char *status)
{
	bool		found;
	ReplayCommand *e;

	if (r->ncommands == r->capcommands)
	{
		r->capcommands = r->capcommands ? r->capcommands * 2 : 16;
		r->commands = r->commands ? repalloc(r->commands, sizeof(CommandState) * r->capcommands)
			: palloc(sizeof(CommandState) * r->capcommands);
	}
	e = hash_search(r->index, &id, HASH_ENTER, &found);
	e->order = r->ncommands;
	r->commands[r->ncommands].id = id;
	r->commands[r->ncommands].type = pstrdup(type);
	r->commands[r->ncommands].status = status;
	r->commands[r->ncommands].cancel_requested = false;
	r->commands[r->ncommands].text = NULL;
	r->commands[r->ncommands].pending_tool = NULL;
	r->commands[r->ncommands].rolled_back = 0;
	r->commands[r->ncommands].workspace = NULL;
	r->ncommands++;
}

static void
command_status(Replay *r, int64 id, const char *status)
{
	CommandState *c = command_find(r, id);

	if (c)
		c->status = status;
	if (r->open_command == id && strcmp(status, "running") != 0)
		r->open_command = 0;
}

static void message_push(Replay *r, const char *json, int64 command_id);

static void
message_add(Replay *r, const char *role, const char *content_json, int64 command_id,
			const char *extra_key, const char *extra_json)
{
	StringInfoData one;
	CommandState *c = command_id > 0 ? command_find(r, command_id) : NULL;

	if (c && c->rolled_back == 2)
		return;					/* a rolled-back command adds nothing any more */
	initStringInfo(&one);
	appendStringInfoChar(&one, '{');
	nadi_json_str(&one, "role", role);
	nadi_json_raw(&one, "content", content_json);
	if (command_id > 0)
		nadi_json_int(&one, "command_id", command_id);
	if (extra_key && extra_json)
		nadi_json_raw(&one, extra_key, extra_json);
	appendStringInfoChar(&one, '}');
	message_push(r, one.data, command_id);
}

/* Append one message (JSON text) of command_id (0: none) to the conversation. */
static void
message_push(Replay *r, const char *json, int64 command_id)
{
	StringInfo	m = &r->messages;

	if (r->nmessages == r->capmessages)
	{
		r->capmessages = r->capmessages ? r->capmessages * 2 : 64;
		r->message_cmd = r->message_cmd ? repalloc(r->message_cmd, sizeof(int64) * r->capmessages)
			: palloc(sizeof(int64) * r->capmessages);
		r->message_end = r->message_end ? repalloc(r->message_end, sizeof(int) * r->capmessages)
			: palloc(sizeof(int) * r->capmessages);
	}
	if (r->nmessages > 0)
		appendStringInfoChar(m, ',');
	appendStringInfoString(m, json);
	r->message_cmd[r->nmessages] = command_id;
	r->message_end[r->nmessages++] = m->len;
}

/*
 * A command rolled back (command.rolled_back) that then ends without
 * completing: its messages leave the conversation, and its later events add
 * none (the log keeps them all).  One that completes all the same (its cell
 * finished before it saw the cancel) keeps them, as its cell does.
 */
static void
messages_roll_back(Replay *r, CommandState *c)
{
	StringInfoData kept;
	int			n = 0;
	int			start = 0;
	int64		command_id = c->id;

	c->rolled_back = 2;
	initStringInfo(&kept);
	for (int i = 0; i < r->nmessages; i++)
	{
		int			from = start + (i > 0 ? 1 : 0);	/* past the comma */

		start = r->message_end[i];
		if (r->message_cmd[i] == command_id)
			continue;
		if (n > 0)
			appendStringInfoChar(&kept, ',');
		appendBinaryStringInfo(&kept, r->messages.data + from, r->message_end[i] - from);
		r->message_cmd[n] = r->message_cmd[i];
		r->message_end[n++] = kept.len;
	}
	r->nmessages = n;
	r->messages = kept;
}

/*
 * A fork's first event: its tenant, where it came from, and the parent's
 * conversation at the fork point, which the fork's own events extend.
 */
static void
replay_forked(Replay *r, Jsonb *p)
{
	JsonbValue *messages = nadi_jsonb_member(p, "messages");
	StringInfoData buf;

	r->tenant = member_text(p, "tenant_id");
	r->workspace = workspace_of(p);
	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	nadi_json_raw(&buf, "parent_session_id", member_json(p, "parent_session_id"));
	nadi_json_raw(&buf, "at_seq", member_json(p, "at_seq"));
	nadi_json_raw(&buf, "seq", member_json(p, "seq"));
	nadi_json_raw(&buf, "workspace", member_json(p, "workspace"));
	appendStringInfoChar(&buf, '}');
	r->fork = buf.data;
	if (messages == NULL || messages->type != jbvBinary ||
		!JsonContainerIsArray(messages->val.binary.data))
		return;
	for (uint32 i = 0; i < JsonContainerSize(messages->val.binary.data); i++)
	{
		JsonbValue *m = getIthJsonbValueFromContainer(messages->val.binary.data, i);

		/* the parent's commands are not the fork's: no command of its own */
		message_push(r, nadi_jsonb_text(JsonbValueToJsonb(m)), 0);
	}
}

/*
 * Which command is under way: from its first command.started until it
 * completes, fails for good, dies or is cancelled (a retry, a requeue or a
 * wait for permission leave it under way).  A fork never starts inside one.
 */
static void
replay_track_span(Replay *r, int64 seq, const char *kind, int64 cmd)
{
	CommandState *c;

	if (r->span_command == 0 && cmd > 0 && strcmp(kind, "command.started") == 0)
	{
		r->span_command = cmd;
		r->span_start = seq;
		return;
	}
	if (r->span_command == 0 || cmd != r->span_command)
		return;
	c = command_find(r, cmd);
	if (c && (strcmp(c->status, "completed") == 0 || strcmp(c->status, "failed") == 0 ||
			  strcmp(c->status, "dead") == 0 || strcmp(c->status, "cancelled") == 0))
		r->span_command = 0;
}

/* Apply one event.  Unknown kinds change nothing but last_seq. */
static void
replay_apply(Replay *r, int64 seq, const char *kind, Jsonb *p, int64 cmd)
{
	r->last_seq = seq;

	if (strcmp(kind, "session.created") == 0)
		r->tenant = member_text(p, "tenant_id");
	else if (strcmp(kind, "session.forked") == 0)
		replay_forked(r, p);
	else if (strcmp(kind, "session.state") == 0)
		r->state = member_text(p, "to");
	else if (strcmp(kind, "session.lease") == 0)
	{
		char	   *what = member_text(p, "event");
		JsonbValue *epoch = nadi_jsonb_member(p, "epoch");

		if (epoch && epoch->type == jbvNumeric)
			r->epoch = DatumGetInt64(DirectFunctionCall1(numeric_int8,
														 NumericGetDatum(epoch->val.numeric)));
		r->cell_host_id = (what && (strcmp(what, "acquired") == 0 || strcmp(what, "taken_over") == 0))
			? member_text(p, "cell_host_id") : NULL;
	}
	else if (strcmp(kind, "command.received") == 0)
	{
		char	   *type = member_text(p, "type");
		bool		control = type && (strcmp(type, "cancel") == 0 || strcmp(type, "approve") == 0 ||
									   strcmp(type, "deny") == 0);

		command_add(r, cmd, type ? type : "", control ? "completed" : "queued");
		if (type && strcmp(type, "message") == 0)
		{
			JsonbValue *payload = nadi_jsonb_member(p, "payload");

			if (payload && payload->type == jbvBinary)
				command_find(r, cmd)->text = member_json(JsonbValueToJsonb(payload), "text");
		}
	}
	else if (strcmp(kind, "command.started") == 0)
	{
		CommandState *c = command_find(r, cmd);

		/* the conversation gets a user message when the cell starts on it */
		if (c && c->text)
		{
			message_add(r, "user", c->text, cmd, NULL, NULL);
			c->text = NULL;
		}
		command_status(r, cmd, "running");
		r->open_command = cmd;
	}
	else if (strcmp(kind, "command.completed") == 0)
	{
		CommandState *c = command_find(r, cmd);

		if (c && c->rolled_back == 1)
		{
			c->rolled_back = 0; /* the rollback lost the race: its files stay */
			if (c->workspace)
				r->workspace = c->workspace;
		}
		command_status(r, cmd, "completed");
	}
	else if (strcmp(kind, "command.failed") == 0)
	{
		JsonbValue *retry = nadi_jsonb_member(p, "will_retry");

		command_status(r, cmd, (retry && retry->type == jbvBool && retry->val.boolean) ? "queued" : "failed");
	}
	else if (strcmp(kind, "command.dead") == 0 || strcmp(kind, "command.cancelled") == 0)
	{
		CommandState *c = command_find(r, cmd);

		if (c && c->rolled_back == 1)
			messages_roll_back(r, c);
		command_status(r, cmd, strcmp(kind, "command.dead") == 0 ? "dead" : "cancelled");
	}
	else if (strcmp(kind, "command.requeued") == 0)
		command_status(r, cmd, "queued");
	else if (strcmp(kind, "command.rolled_back") == 0)
	{
		CommandState *c = command_find(r, cmd);

		if (c && c->rolled_back == 0)
		{
			char	   *w = workspace_of(p);

			c->rolled_back = 1;
			/* the files from before it, once its cell restores them */
			if (w)
				r->workspace = w;
		}
	}
	else if (strcmp(kind, "workspace.restore") == 0)
	{
		CommandState *c = command_find(r, cmd);
		JsonbValue *ok = nadi_jsonb_member(p, "ok");
		char	   *w = workspace_of(p);

		if (ok && ok->type == jbvBool && ok->val.boolean)
		{
			if (w)
				r->workspace = w;
		}
		else if (c && c->workspace)
			r->workspace = c->workspace;	/* not restored: as the command left them */
	}
	else if (strcmp(kind, "command.cancel_requested") == 0)
	{
		CommandState *c = command_find(r, cmd);

		if (c)
			c->cancel_requested = true;
	}
	else if (strcmp(kind, "permission.requested") == 0)
	{
		StringInfoData buf;

		command_status(r, cmd, "waiting");
		if (command_find(r, cmd))
			command_find(r, cmd)->pending_tool = member_json(p, "tool");
		initStringInfo(&buf);
		appendStringInfoChar(&buf, '{');
		nadi_json_int(&buf, "command_id", cmd);
		nadi_json_raw(&buf, "request", nadi_jsonb_text(p));
		appendStringInfoChar(&buf, '}');
		r->pending_permission = buf.data;
	}
	else if (strcmp(kind, "permission.resolved") == 0)
	{
		char	   *decision = member_text(p, "decision");
		CommandState *c = command_find(r, cmd);

		/* a denial is part of the conversation: the model answers it */
		if (decision && strcmp(decision, "denied") == 0)
			message_add(r, "denied", member_json(p, "reason"), cmd,
						"name", c ? c->pending_tool : NULL);
		command_status(r, cmd, "queued");
		r->pending_permission = NULL;
	}
	else if (strcmp(kind, "model.reply") == 0)
		message_add(r, "assistant", member_json(p, "text"), cmd,
					"tool_calls", member_json(p, "tool_calls"));
	else if (strcmp(kind, "tool.result") == 0)
	{
		/* what the model sees of a result: result, else stdout, else error */
		CommandState *c = command_find(r, cmd);
		char	   *content;
		char	   *w = workspace_of(p);

		/*
		 * Where the files are: a call's snapshot, unless its command is being
		 * rolled back (kept aside in case the rollback loses the race).
		 */
		if (w && c)
			c->workspace = w;
		if (w && (c == NULL || c->rolled_back == 0))
			r->workspace = w;

		/*
		 * A client's own tool command is not part of the conversation: the
		 * model never asked for it, and the cell never shows it the result
		 * (a "tool" message answers a tool call of the model's).
		 */
		if (c && strcmp(c->type, "tool") == 0)
			return;
		content = member_json(p, "result");

		if (content == NULL || strcmp(content, "null") == 0)
			content = member_json(p, "stdout");
		if (content == NULL || strcmp(content, "null") == 0)
			content = member_json(p, "error");
		message_add(r, "tool", content, cmd, "name", member_json(p, "name"));
	}
}

static char *
replay_json(Replay *r, const pg_uuid_t *id)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	nadi_json_str(&buf, "session_id", nadi_uuid_out(id));
	nadi_json_str(&buf, "tenant_id", r->tenant);
	nadi_json_str(&buf, "state", r->state);
	nadi_json_int(&buf, "last_seq", r->last_seq);
	nadi_json_int(&buf, "epoch", r->epoch);
	nadi_json_str(&buf, "cell_host_id", r->cell_host_id);
	if (r->open_command > 0)
		nadi_json_int(&buf, "open_command", r->open_command);
	else
		nadi_json_raw(&buf, "open_command", "null");
	nadi_json_raw(&buf, "pending_permission", r->pending_permission);
	nadi_json_raw(&buf, "fork", r->fork);
	appendStringInfoString(&buf, ",\"messages\":[");
	appendStringInfoString(&buf, r->messages.data);
	appendStringInfoString(&buf, "],\"commands\":[");
	for (int i = 0; i < r->ncommands; i++)
	{
		StringInfoData c;

		initStringInfo(&c);
		appendStringInfoChar(&c, '{');
		nadi_json_int(&c, "command_id", r->commands[i].id);
		nadi_json_str(&c, "type", r->commands[i].type);
		nadi_json_str(&c, "status", r->commands[i].status);
		if (r->commands[i].cancel_requested)
			nadi_json_raw(&c, "cancel_requested", "true");
		if (r->commands[i].rolled_back == 2)
			nadi_json_raw(&c, "rolled_back", "true");
		appendStringInfoChar(&c, '}');
		if (i > 0)
			appendStringInfoChar(&buf, ',');
		appendStringInfoString(&buf, c.data);
	}
	appendStringInfoString(&buf, "]}");
	return buf.data;
}

/*
 * Fold the events 1..upto of a visible session into *r (SPI connected).
 */
static void
replay_run(Replay *r, const pg_uuid_t *id, int64 upto)
{
	static SPIPlanPtr plan = NULL;
	HASHCTL		ctl = {0};
	Portal		portal;
	Datum		values[2];

	memset(r, 0, sizeof(*r));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(ReplayCommand);
	ctl.hcxt = CurrentMemoryContext;
	r->index = hash_create("nadi replay commands", 256, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	r->state = "pending";
	initStringInfo(&r->messages);

	values[0] = UUIDPGetDatum(id);
	values[1] = Int64GetDatum(upto);
	portal = SPI_cursor_open(NULL,
							 nadi_plan(&plan,
									   "SELECT seq, kind, payload, command_id FROM nadi.events "
									   "WHERE session_id = $1 AND seq <= $2 ORDER BY seq",
									   2, (Oid[]) {UUIDOID, INT8OID}),
							 values, NULL, true);
	for (;;)
	{
		SPI_cursor_fetch(portal, true, 1000);
		if (SPI_processed == 0)
			break;
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			HeapTuple	row = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;
			int64		seq = DatumGetInt64(SPI_getbinval(row, desc, 1, &isnull));
			char	   *kind = SPI_getvalue(row, desc, 2);
			Jsonb	   *payload = DatumGetJsonbP(SPI_getbinval(row, desc, 3, &isnull));
			Datum		cmd = SPI_getbinval(row, desc, 4, &isnull);

			replay_apply(r, seq, kind, payload, isnull ? 0 : DatumGetInt64(cmd));
			replay_track_span(r, seq, kind, isnull ? 0 : DatumGetInt64(cmd));
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
}

/*
 * Where a fork asked at at_seq starts, and the conversation it inherits: at
 * at_seq, unless a command is under way there; then just before that
 * command started (its end is never half copied).  The caller checked that
 * the session is visible and at_seq within its log; SPI connected.
 */
ReplayFork
replay_fork_point(const pg_uuid_t *id, int64 at_seq)
{
	Replay		r;
	ReplayFork	f;

	replay_run(&r, id, at_seq);
	f.seq = at_seq;
	if (r.span_command > 0)
	{
		f.seq = r.span_start - 1;
		replay_run(&r, id, f.seq);
	}
	f.messages = psprintf("[%s]", r.messages.data);
	f.workspace = r.workspace;
	return f;
}

/*
 * The workspace snapshot the session's files were at after events 1..upto
 * (JSON text {"host_id", "sandbox_id", "snapshot"}), or NULL when none was
 * recorded: the latest call's snapshot, except those of a command rolled
 * back (its files were restored), as the replay folds them.  SPI connected.
 */
char *
replay_workspace_at(const pg_uuid_t *id, int64 upto)
{
	Replay		r;

	replay_run(&r, id, upto);
	return r.workspace;
}

/*
 * nadi.session_replay(session_id, upto) → jsonb
 * The state after applying events 1..upto (all when upto is NULL).
 */
PG_FUNCTION_INFO_V1(nadi_session_replay);
Datum
nadi_session_replay(PG_FUNCTION_ARGS)
{
	MemoryContext outer = CurrentMemoryContext;
	pg_uuid_t  *id;
	int64		upto = PG_ARGISNULL(1) ? PG_INT64_MAX : PG_GETARG_INT64(1);
	Replay		r;
	char	   *json;
	Jsonb	   *result;

	NADI_ARG_NOT_NULL(0, "session_id");
	id = PG_GETARG_UUID_P(0);
	if (upto < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("upto must not be negative")));

	nadi_connect();
	session_require_visible(id);
	replay_run(&r, id, upto);
	json = replay_json(&r, id);

	{
		MemoryContext old = MemoryContextSwitchTo(outer);

		result = nadi_jsonb(json);
		MemoryContextSwitchTo(old);
	}
	nadi_finish();
	PG_RETURN_JSONB_P(result);
}
