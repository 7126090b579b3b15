/*
 * runtime_store.c — what the agent runtime asks of its driver and the
 * store: the fenced writes a command queues in RtSession.pending, the store
 * needs that make them durable before anything slow (with a check for a
 * cancel, or a read), the HTTP and timer needs, and the tokens minted in
 * Postgres that a session keeps.  Nothing here runs a statement: a need is
 * returned, and read when its outcome comes back.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime_int.h"

/*
 * Tokens live 15 minutes and are minted again after half of that, so a busy
 * session mints a few an hour, not one per call.  A failure is logged once
 * and tried again after TOKEN_RETRY_US.
 */
#define TOKEN_RENEW_US		(450 * USECS_PER_SEC)
#define TOKEN_RETRY_US		(30 * USECS_PER_SEC)

static char *
json_text(json_t *j)
{
	return json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
}

void
need_clear(RtNeed *n)
{
	for (int g = 0; g < n->ngroups; g++)
		store_group_free(&n->groups[g]);
	memset(n->groups, 0, sizeof(n->groups));
	n->ngroups = 0;
	n->flush = n->read = -1;
	http_request_clear(&n->http);
	n->timer_ms = 0;
	n->kind = RT_NEED_NONE;
}

/* ---- writes: fenced, queued in s->pending ---- */

/* Queue a fenced write.  False if the lease moved on (the session is dropped). */
bool
rt_write(RtSession *s, const char *sql, int nargs, const char *const *args)
{
	if (s->epoch < 0)
		return false;
	if (s->pending == NULL)
		s->pending = json_array();
	json_array_append_new(s->pending, store_stmt(sql, nargs, args));
	return true;
}

/* Append a cell event (fenced). */
bool
rt_event(RtSession *s, const char *kind, json_t *payload)
{
	char		epoch[32],
				cmd[32];
	char	   *p = json_text(payload);
	const char *args[5] = {s->id, epoch, kind, p, cmd};
	bool		ok;

	snprintf(epoch, sizeof(epoch), "%" PRId64, s->epoch);
	snprintf(cmd, sizeof(cmd), "%" PRId64, s->cmd.id);
	ok = rt_write(s, "SELECT seq FROM nadi.event_append($1::uuid, $2::bigint, $3, $4::jsonb, $5::bigint)",
				  5, args);
	free(p);
	return ok;
}

/* Complete the command, appending one cell event first in the same call. */
bool
rt_complete_with(RtSession *s, json_t *result, const char *kind, json_t *payload)
{
	json_t	   *events = kind ? json_pack("[{s:s, s:O}]", "kind", kind, "payload", payload) : NULL;
	char	   *p = json_text(result);
	char	   *e = events ? json_text(events) : NULL;
	char		epoch[32],
				cmd[32];
	const char *args[5] = {s->id, cmd, epoch, p, e};
	bool		ok;

	snprintf(epoch, sizeof(epoch), "%" PRId64, s->epoch);
	snprintf(cmd, sizeof(cmd), "%" PRId64, s->cmd.id);
	ok = rt_write(s, "SELECT status FROM nadi.command_complete($1::uuid, $2::bigint, $3::bigint, "
				  "$4::jsonb, $5::jsonb)", 5, args);
	free(p);
	free(e);
	json_decref(events);
	return ok;
}

/* Fail the command with an error object ({code, message, ...}). */
void
rt_fail_with(RtSession *s, json_t *error, bool retryable)
{
	char	   *p = json_text(error);
	char		epoch[32],
				cmd[32];
	const char *args[5] = {s->id, cmd, epoch, p, retryable ? "true" : "false"};

	snprintf(epoch, sizeof(epoch), "%" PRId64, s->epoch);
	snprintf(cmd, sizeof(cmd), "%" PRId64, s->cmd.id);
	rt_write(s, "SELECT status FROM nadi.command_fail($1::uuid, $2::bigint, $3::bigint, $4::jsonb, $5::boolean)",
			 5, args);
	free(p);
}

void
rt_fail(RtSession *s, const char *code, const char *message, bool retryable)
{
	json_t	   *e = json_pack("{s:s, s:s}", "code", code, "message", message);

	rt_fail_with(s, e, retryable);
	json_decref(e);
}

/* A tool.error event. */
bool
rt_tool_error(RtSession *s, json_t *name_j, const char *code, const char *message)
{
	json_t	   *ev = json_pack("{s:O, s:s, s:s}", "name", name_j ? name_j : json_null(),
							   "code", code, "message", message);
	bool		ok = rt_event(s, "tool.error", ev);

	json_decref(ev);
	return ok;
}

/* Ask the client for permission; the command waits in Postgres. */
void
rt_park(RtSession *s, json_t *call)
{
	json_t	   *req = json_pack("{s:O, s:O}", "tool", json_object_get(call, "name"),
								"args", json_object_get(call, "args"));
	char	   *p = json_text(req);
	char		epoch[32],
				cmd[32];
	const char *args[4] = {s->id, cmd, epoch, p};

	snprintf(epoch, sizeof(epoch), "%" PRId64, s->epoch);
	snprintf(cmd, sizeof(cmd), "%" PRId64, s->cmd.id);
	rt_write(s, "SELECT status FROM nadi.command_await_permission("
			 "$1::uuid, $2::bigint, $3::bigint, $4::jsonb)", 4, args);
	free(p);
	json_decref(req);
}

/* ---- store needs ---- */

/*
 * A store need: the session's pending writes (flush) as one group, and a
 * statement to read (sql, or none) as another, in that order, in one
 * transaction.  NULL when there is nothing to run.
 */
RtNeed *
need_store(RtSession *s, bool flush, const char *sql, int nargs, const char *const *args)
{
	RtNeed	   *n = &s->need;

	need_clear(n);
	if (flush && s->pending && json_array_size(s->pending) > 0)
	{
		n->flush = n->ngroups;
		n->groups[n->ngroups++].stmts = s->pending;
		s->pending = NULL;
	}
	if (sql)
	{
		n->read = n->ngroups;
		n->groups[n->ngroups++].stmts = json_pack("[o]", store_stmt(sql, nargs, args));
	}
	if (n->ngroups == 0)
		return NULL;
	n->kind = RT_NEED_STORE;
	return n;
}

/* A store need whose read takes the session ($1) and the command at hand ($2). */
RtNeed *
need_command_store(RtSession *s, bool flush, const char *sql)
{
	char		cmd[32];
	const char *args[2] = {s->id, cmd};

	snprintf(cmd, sizeof(cmd), "%" PRId64, s->cmd.id);
	return need_store(s, flush, sql, 2, args);
}

/* After a store need: the lease is lost if the flush failed.  Returns the read's first row. */
json_t *
took_store(RtSession *s)
{
	RtNeed	   *n = &s->need;

	if (n->kind != RT_NEED_STORE)
		return NULL;
	if (n->flush >= 0 && n->groups[n->flush].sqlstate[0] != '\0')
		s->epoch = -1;
	if (n->read >= 0 && n->groups[n->read].sqlstate[0] == '\0')
		return json_array_get(store_group_rows(&n->groups[n->read], 0), 0);
	return NULL;
}

/*
 * Has a cancel been asked for?  Checked before every slow step (a tool call,
 * a model call over the network, a timer), after making what was written so
 * far durable.  Between instant steps there is nothing to interrupt: a
 * cancel that arrives then is seen at the next slow step, or loses the race
 * to the completion.
 */
RtNeed *
need_cancel_check(RtSession *s)
{
	/*
	 * A cancel of a message rolled back by a newer one carries the rollback
	 * (read only then).  One without a workspace came before any tool call of
	 * the session recorded a snapshot: if a call of this very command has
	 * recorded one since (it changed the files), the workspace to go back to
	 * is that sandbox's first snapshot, ws-0.
	 */
	return need_command_store(s, true, "SELECT cancel_requested, CASE WHEN cancel_requested THEN "
					  "(SELECT CASE WHEN e.payload ? 'workspace' THEN e.payload ELSE e.payload || "
					  "coalesce((SELECT jsonb_build_object('workspace', jsonb_build_object("
					  "'host_id', t.payload->'workspace'->'host_id', "
					  "'sandbox_id', t.payload->'workspace'->'sandbox_id', 'snapshot', 'ws-0')) "
					  "FROM nadi.events t WHERE t.session_id = c.session_id AND t.command_id = c.command_id "
					  "AND t.kind = 'tool.result' AND jsonb_typeof(t.payload->'workspace') = 'object' "
					  "ORDER BY t.seq LIMIT 1), '{}') END "
					  "FROM nadi.events e WHERE e.session_id = c.session_id "
					  "AND e.command_id = c.command_id AND e.kind = 'command.rolled_back' LIMIT 1) "
					  "END AS rolled_back FROM nadi.command_inbox c "
					  "WHERE session_id = $1::uuid AND command_id = $2::bigint");
}

/* The outcome of need_cancel_check: true when the command stops here. */
bool
took_cancel(RtSession *s)
{
	json_t	   *row = took_store(s);
	bool		yes;

	if (s->epoch < 0)
		return true;
	yes = json_is_true(json_object_get(row, "cancel_requested"));
	if (yes && json_is_object(json_object_get(row, "rolled_back")))
	{
		/*
		 * Rolled back: the command's turn leaves the conversation (as
		 * nadi.session_replay drops it once the command stops), and it stops
		 * at ST_DONE, after its workspace is restored (rollback_advance).
		 */
		for (size_t i = json_array_size(s->messages); i > 0; i--)
			if (json_integer_value(json_object_get(json_array_get(s->messages, i - 1), "command_id")) ==
				s->cmd.id)
				json_array_remove(s->messages, i - 1);
		json_decref(s->cmd.rollback);
		s->cmd.rollback = json_incref(json_object_get(row, "rolled_back"));
	}
	else if (yes)
		rt_fail(s, "cancelled", "cancelled at the cell's next step", false);
	return yes;
}

/* ---- tokens ---- */

static bool
token_due(RtSession *s, RtTokenKind kind)
{
	RtToken    *t = &s->tokens[kind];

	return !(rt_now_us() < t->renew_at &&
			 (kind != RT_TOKEN_SANDBOX || strcmp(t->sandbox_id, s->sandbox_id) == 0));
}

/* The token of this kind (minted: not due), or NULL with err saying why. */
const char *
token_get(RtSession *s, RtTokenKind kind, char *err, size_t errlen)
{
	RtToken    *t = &s->tokens[kind];

	if (t->token[0])
		return t->token;
	snprintf(err, errlen, "%s", t->error[0] ? t->error : "no token");
	return NULL;
}

/*
 * A token minted in Postgres: the session's model token or the token of its
 * sandbox for the credentials proxy, or the session's token for its sandbox
 * host.  Goes on at next, minting first when the token is due.
 */
RtNeed *
need_token(RtSession *s, RtTokenKind kind, int next)
{
	static const char *const sql[] = {
		[RT_TOKEN_MODEL] = "SELECT nadi.model_token($1::uuid) AS token",
		[RT_TOKEN_SANDBOX] = "SELECT nadi.sandbox_token($1::uuid, $2) AS token",
		[RT_TOKEN_SANDBOXD] = "SELECT nadi.sandboxd_token($1::uuid) AS token",
	};
	const char *args[2] = {s->id, s->sandbox_id};
	RtToken    *t = &s->tokens[kind];

	s->cmd.state = next;
	if (!token_due(s, kind))
		return NULL;
	t->token[0] = '\0';
	snprintf(t->sandbox_id, sizeof(t->sandbox_id), "%s", s->sandbox_id);
	s->cmd.token_kind = kind;
	s->cmd.token_next = next;
	s->cmd.state = ST_TOKEN_MINTED;
	return need_store(s, false, sql[kind], kind == RT_TOKEN_SANDBOX ? 2 : 1, args);
}

void
took_token(Runtime *rt, RtSession *s)
{
	static const char *const what[] = {
		[RT_TOKEN_MODEL] = "a model token for the credentials proxy",
		[RT_TOKEN_SANDBOX] = "a sandbox token for the credentials proxy",
		[RT_TOKEN_SANDBOXD] = "a session token for the sandbox host",
	};
	RtTokenKind kind = s->cmd.token_kind;
	RtToken    *t = &s->tokens[kind];
	StoreGroup *g = &s->need.groups[s->need.read];
	const char *tok = json_string_value(json_object_get(took_store(s), "token"));

	if (g->sqlstate[0] != '\0' || tok == NULL || strlen(tok) >= sizeof(t->token))
	{
		snprintf(t->error, sizeof(t->error), "cannot mint %s: %s",
				 what[kind], g->sqlstate[0] ? g->message : "no usable token");
		rt_log(rt, RT_LOG_INFO, "nadi cell: session %s: %s", s->id, t->error);
		t->renew_at = rt_now_us() + TOKEN_RETRY_US;
	}
	else
	{
		snprintf(t->token, sizeof(t->token), "%s", tok);
		t->renew_at = rt_now_us() + TOKEN_RENEW_US;
	}
}

/* ---- the state machine ---- */

RtNeed *
need_http(RtSession *s, RtNeedKind kind, int next)
{
	s->need.kind = kind;
	s->cmd.state = next;
	return &s->need;
}

RtNeed *
need_timer(RtSession *s, long ms, int next)
{
	need_clear(&s->need);
	s->need.kind = RT_NEED_TIMER;
	s->need.timer_ms = ms;
	s->cmd.state = next;
	return &s->need;
}
