/*
 * acp_session.c — the ACP sessions of one connection: each follows its Nadi
 * session's event log through the session's feed (feed.c), under the
 * connection's token, and turns the events into session/update
 * notifications and answers:
 *
 *   command.received (message)  user_message_chunk     (only when replaying)
 *   model.reply {text}          agent_message_chunk    (messageId msg-<seq>)
 *   model.reply {tool_calls}    tool_call, pending     (toolCallId call-<seq>)
 *   permission.requested        tool_call if none yet; session/request_permission
 *   permission.resolved denied  tool_call_update, failed
 *   tool.call                   tool_call (direct tool) or tool_call_update, in_progress
 *   tool.output                 tool_call_update, in_progress, with content: the
 *                               tail of the call's output so far (ACP content
 *                               replaces what the client shows)
 *   tool.result                 tool_call_update, completed or failed
 *   tool.error                  tool_call_update, failed (a retry reports again)
 *   command.completed           session/prompt answered: end_turn
 *   command.cancelled           session/prompt answered: cancelled
 *   command.dead                an agent_message_chunk with the error, then
 *                               end_turn with _meta.nadi.status "dead"
 *
 * ACP v1 has no "error" stop reason; "refusal" would tell the client to drop
 * the prompt from the conversation, which is not what happens (the failed
 * turn stays in the log and in the model's context), so a dead command ends
 * the turn with end_turn and says what failed.  After session/cancel every
 * open prompt of the session is answered "cancelled", whatever ends it.
 *
 * Every session/update carries the seq of the event it comes from in
 * _meta.nadi.seq.  session/load with _meta.nadi.after = N (a client that
 * resumes) still reads the whole log, to know each command's state, but
 * sends no update for events up to N: a client that remembers the last seq
 * it saw gets every update once, across reconnects and edges.  An N beyond
 * the log is lowered to its last seq once the read caught up.
 *
 * session/load reads the log from the start with `replaying` set and is
 * answered when the read catches up (feed.c's caught_up); a tool call still
 * waiting for a decision then gets a session/request_permission.  Reads are
 * flow-controlled by the transport's room: a catch-up pauses, a live event
 * that finds no room closes the connection (the client reloads).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edge.h"
#include "acp_int.h"

/* ------------------------------------------------------------------------
 * Sessions and their commands
 * ------------------------------------------------------------------------ */

static int nattached; /* sessions attached, all connections */

/* ACP sessions attached on this edge (for /metrics). */
int
acp_session_count(void)
{
	return nattached;
}

AcpSession *
acp_session_find(AcpConn *c, const char *sid)
{
	for (AcpSession *s = c->sessions; s; s = s->next)
		if (strcmp(s->sid, sid) == 0)
			return s;
	return NULL;
}

static void
cmd_free(AcpCmd *m)
{
	json_decref(m->call_args);
	free(m->out);
	json_decref(m->stop_meta);
	json_decref(m->prompt_id);
	free(m);
}

/* Free the sessions detached since the last iteration. */
void
acp_free_dead(AcpConn *c)
{
	while (c->dead)
	{
		AcpSession *s = c->dead;

		c->dead = s->next;
		free(s);
	}
}

static void
dead_timer_fn(EvTimer *t)
{
	acp_free_dead(t->data);
}

void
acp_session_detach(AcpSession *s)
{
	AcpConn *c = s->conn;

	for (AcpSession **pp = &c->sessions; *pp; pp = &(*pp)->next)
		if (*pp == s)
		{
			*pp = s->next;
			c->nsessions--;
			nattached--;
			break;
		}
	feed_unsubscribe(&s->sub);
	while (s->cmds)
	{
		AcpCmd *m = s->cmds;

		s->cmds = m->next;
		cmd_free(m);
	}
	json_decref(s->open_id);
	s->open_id = NULL;
	json_decref(s->open_meta);
	s->open_meta = NULL;
	/* a feed callback may be running for s: free it on the next iteration */
	s->conn = NULL;
	s->next = c->dead;
	c->dead = s;
	if (!c->closing)
		ev_timer_arm(&c->dead_timer, 0, dead_timer_fn, c);
}

AcpCmd *
acp_cmd_get(AcpSession *s, int64_t id)
{
	AcpCmd	*m;
	AcpCmd **pp;
	int		 n = 0;

	for (m = s->cmds; m; m = m->next)
		if (m->id == id)
			return m;
	m = calloc(1, sizeof(*m));
	if (m == NULL)
		return NULL;
	m->id = id;
	m->next = s->cmds;
	s->cmds = m;
	s->ncmds++;
	/* keep the newest; drop finished ones nobody waits for beyond that */
	for (pp = &s->cmds; *pp;)
	{
		AcpCmd *x = *pp;

		if (++n > ACP_MAX_CMDS && x->finished && x->prompt_id == NULL)
		{
			*pp = x->next;
			cmd_free(x);
			s->ncmds--;
		}
		else
			pp = &x->next;
	}
	return m;
}

/* Answer the prompt waiting on m, if there is one and m is finished. */
void
acp_cmd_answer(AcpSession *s, AcpCmd *m)
{
	json_t *result;

	if (!m->finished || m->prompt_id == NULL)
		return;
	result = json_pack("{s:s}", "stopReason", m->cancel_requested ? "cancelled" : m->stop);
	if (m->stop_meta)
		json_object_set(result, "_meta", m->stop_meta);
	acp_reply(s->conn, m->prompt_id, result);
	json_decref(m->prompt_id);
	m->prompt_id = NULL;
}

static const char *
tool_kind(const char *name)
{
	static const char *const map[][2] = {
		{"read_file", "read"}, {"list_files", "search"}, {"write_file", "edit"},
		{"edit_file", "edit"}, {"exec", "execute"},		 {"git_clone", "fetch"},
	};

	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
		if (strcmp(name, map[i][0]) == 0)
			return map[i][1];
	return "other";
}

static void
ask_permission(AcpSession *s, AcpCmd *m)
{
	AcpConn *c = s->conn;
	AcpPerm *p = calloc(1, sizeof(*p));
	json_t	*msg;

	if (p == NULL || m->perm_asked)
	{
		free(p);
		return;
	}
	m->perm_asked = true;
	p->rpc_id = c->next_rpc_id++;
	snprintf(p->sid, sizeof(p->sid), "%s", s->sid);
	p->cmd = m->id;
	p->next = c->perms;
	c->perms = p;
	msg = json_pack(
		"{s:I, s:s, s:{s:s, s:{s:s, s:s, s:s, s:s, s:O}, s:[{s:s, s:s, s:s}, {s:s, s:s, s:s}]}}",
		"id", (json_int_t) p->rpc_id, "method", "session/request_permission", "params", "sessionId",
		s->sid, "toolCall", "toolCallId", m->call_id, "title", m->call_name, "kind",
		tool_kind(m->call_name), "status", "pending", "rawInput",
		m->call_args ? m->call_args : json_null(), "options", "optionId", "allow", "name", "Allow",
		"kind", "allow_once", "optionId", "reject", "name", "Deny", "kind", "reject_once");
	acp_send(c, msg, s->sid, NULL);
}

static void
tool_update(AcpSession *s, const char *call_id, const char *status, const char *text,
			json_t *raw_output)
{
	json_t *u = json_pack("{s:s, s:s, s:s}", "sessionUpdate", "tool_call_update", "toolCallId",
						  call_id, "status", status);

	if (text)
		json_object_set_new(
			u, "content",
			json_pack("[{s:s, s:o}]", "type", "content", "content", acp_text_block(text)));
	if (raw_output)
	{
		char *raw = json_compact(raw_output);

		/* large results go as (truncated) text only */
		if (raw && strlen(raw) <= ACP_TEXT_MAX)
			json_object_set(u, "rawOutput", raw_output);
		free(raw);
	}
	acp_notify_update(s, u);
}

/*
 * A tool.output event: its data joins the tail of the call's output
 * (ACP_OUTPUT_TAIL bytes, cut on a character boundary), which the client
 * is shown in place of what it had.
 */
static void
tool_output(AcpSession *s, AcpCmd *m, json_t *payload)
{
	json_t *data = json_object_get(payload, "data");
	size_t	n = json_string_length(data), keep, drop;
	char   *buf;

	if (!json_is_string(data) || n == 0)
		return;
	if (n > ACP_OUTPUT_TAIL)
	{
		keep = 0;
		drop = n - ACP_OUTPUT_TAIL;
	}
	else
	{
		keep = m->out_len + n > ACP_OUTPUT_TAIL ? ACP_OUTPUT_TAIL - n : m->out_len;
		drop = 0;
	}
	buf = malloc(keep + n - drop + 1);
	if (buf == NULL)
		return;
	if (keep > 0)
		memcpy(buf, m->out + (m->out_len - keep), keep);
	memcpy(buf + keep, json_string_value(data) + drop, n - drop);
	n = keep + n - drop;
	buf[n] = '\0';
	/* the cut is at the front: skip what is left of a character there */
	drop = 0;
	while (drop < n && ((unsigned char) buf[drop] & 0xc0) == 0x80)
		drop++;
	memmove(buf, buf + drop, n - drop + 1);
	free(m->out);
	m->out = buf;
	m->out_len = n - drop;
	tool_update(s, m->call_id, "in_progress", m->out, NULL);
}

static void
output_clear(AcpCmd *m)
{
	free(m->out);
	m->out = NULL;
	m->out_len = 0;
}

static void
tool_start(AcpSession *s, AcpCmd *m, int64_t seq, const char *name, json_t *args,
		   const char *status)
{
	output_clear(m);
	snprintf(m->call_id, sizeof(m->call_id), "call-%lld", (long long) seq);
	snprintf(m->call_name, sizeof(m->call_name), "%s", name ? name : "tool");
	json_decref(m->call_args);
	m->call_args = json_incref(args);
	acp_notify_update(s, json_pack("{s:s, s:s, s:s, s:s, s:s, s:O}", "sessionUpdate", "tool_call",
								   "toolCallId", m->call_id, "title", m->call_name, "kind",
								   tool_kind(m->call_name), "status", status, "rawInput",
								   args ? args : json_null()));
}

/* A tool result as text for the client: the result itself, or its JSON. */
static char *
result_text(json_t *payload)
{
	json_t *v = json_object_get(payload, "result");
	char   *t;

	if (v == NULL)
		v = json_object_get(payload, "stdout");
	if (v == NULL)
		v = json_object_get(payload, "error");
	if (json_is_string(v))
		t = strdup(json_string_value(v));
	else
		t = json_compact(v ? v : payload);
	if (t && strlen(t) > ACP_TEXT_MAX)
		strcpy(t + ACP_TEXT_MAX - 4, "...");
	return t;
}

/*
 * A fork's first event, on session/load: the conversation it starts with
 * (its source's), as the user's and the agent's messages.  What one event
 * sends stays within the room the transport keeps for it (the newest
 * messages go, with a note of how many did not).
 */
static void
forked_replay(AcpSession *s, int64_t seq, json_t *payload)
{
	json_t *msgs = json_object_get(payload, "messages");
	size_t	n = json_array_size(msgs), from = n, bytes = 0;
	char	msg_id[48];

	while (from > 0)
	{
		const char *t =
			json_string_value(json_object_get(json_array_get(msgs, from - 1), "content"));
		size_t len = t ? strnlen(t, ACP_TEXT_MAX) + 256 : 0;

		if (bytes + len > ACP_RESERVE / 2)
			break;
		bytes += len;
		from--;
	}
	if (from > 0)
	{
		char note[96];

		snprintf(note, sizeof(note), "(%zu earlier messages of the forked session are not shown)",
				 from);
		snprintf(msg_id, sizeof(msg_id), "fork-%lld", (long long) seq);
		acp_notify_update(s, json_pack("{s:s, s:o, s:s}", "sessionUpdate", "agent_message_chunk",
									   "content", acp_text_block(note), "messageId", msg_id));
	}
	for (size_t i = from; i < n; i++)
	{
		json_t	   *m = json_array_get(msgs, i);
		const char *role = json_string_value(json_object_get(m, "role"));
		const char *text = json_string_value(json_object_get(m, "content"));
		char		clipped[ACP_TEXT_MAX + 1];

		if (role == NULL || text == NULL || *text == '\0' ||
			(strcmp(role, "user") != 0 && strcmp(role, "assistant") != 0))
			continue;
		snprintf(clipped, sizeof(clipped), "%s", text);
		snprintf(msg_id, sizeof(msg_id), "fork-%lld-%zu", (long long) seq, i);
		acp_notify_update(
			s, json_pack("{s:s, s:o, s:s}", "sessionUpdate",
						 strcmp(role, "user") == 0 ? "user_message_chunk" : "agent_message_chunk",
						 "content", acp_text_block(clipped), "messageId", msg_id));
	}
}

/* One event of an attached session, in log order. */
static void
session_event(AcpSession *s, int64_t seq, json_t *ev)
{
	const char *kind = json_string_value(json_object_get(ev, "kind"));
	json_t	   *payload = json_object_get(ev, "payload");
	json_t	   *cmd_id = json_object_get(ev, "command_id");
	AcpCmd	   *m;
	char		msg_id[32];

	s->seq = seq;
	if (kind && s->replaying && strcmp(kind, "session.forked") == 0)
		forked_replay(s, seq, payload);
	if (kind == NULL || !json_is_integer(cmd_id))
		return;
	m = acp_cmd_get(s, json_integer_value(cmd_id));
	if (m == NULL)
		return;

	if (strcmp(kind, "command.received") == 0)
	{
		const char *type = json_string_value(json_object_get(payload, "type"));
		json_t	   *text = json_object_get(json_object_get(payload, "payload"), "text");

		if (s->replaying && type && strcmp(type, "message") == 0 && json_is_string(text))
		{
			snprintf(msg_id, sizeof(msg_id), "cmd-%lld", (long long) m->id);
			acp_notify_update(s, json_pack("{s:s, s:o, s:s}", "sessionUpdate", "user_message_chunk",
										   "content", acp_text_block(json_string_value(text)),
										   "messageId", msg_id));
		}
	}
	else if (strcmp(kind, "model.reply") == 0)
	{
		const char *text = json_string_value(json_object_get(payload, "text"));
		json_t	   *calls = json_object_get(payload, "tool_calls");
		json_t	   *call = json_array_get(calls, 0);

		if (text && *text)
		{
			snprintf(msg_id, sizeof(msg_id), "msg-%lld", (long long) seq);
			acp_notify_update(s,
							  json_pack("{s:s, s:o, s:s}", "sessionUpdate", "agent_message_chunk",
										"content", acp_text_block(text), "messageId", msg_id));
		}
		if (json_is_object(call))
			tool_start(s, m, seq, json_string_value(json_object_get(call, "name")),
					   json_object_get(call, "args"), "pending");
	}
	else if (strcmp(kind, "permission.requested") == 0)
	{
		if (m->call_id[0] == '\0')
			tool_start(s, m, seq, json_string_value(json_object_get(payload, "tool")),
					   json_object_get(payload, "args"), "pending");
		m->perm_pending = true;
		m->perm_asked = false;
		if (!s->replaying && !m->finished)
			ask_permission(s, m);
	}
	else if (strcmp(kind, "permission.resolved") == 0)
	{
		const char *d = json_string_value(json_object_get(payload, "decision"));

		m->perm_pending = false;
		if (d && strcmp(d, "denied") == 0 && m->call_id[0])
		{
			const char *why = json_string_value(json_object_get(payload, "reason"));
			char		text[512];

			snprintf(text, sizeof(text), "Permission denied%s%s", why ? ": " : ".", why ? why : "");
			tool_update(s, m->call_id, "failed", text, NULL);
			m->call_id[0] = '\0';
		}
	}
	else if (strcmp(kind, "tool.call") == 0)
	{
		if (m->call_id[0] == '\0')
			tool_start(s, m, seq, json_string_value(json_object_get(payload, "name")),
					   json_object_get(payload, "args"), "in_progress");
		else
			tool_update(s, m->call_id, "in_progress", NULL, NULL);
	}
	else if (strcmp(kind, "tool.output") == 0 && m->call_id[0])
		tool_output(s, m, payload);
	else if (strcmp(kind, "tool.result") == 0 && m->call_id[0])
	{
		output_clear(m);
		char *text = result_text(payload);

		tool_update(s, m->call_id,
					json_is_false(json_object_get(payload, "ok")) ? "failed" : "completed", text,
					payload);
		free(text);
		m->call_id[0] = '\0';
	}
	else if (strcmp(kind, "tool.error") == 0 && m->call_id[0])
	{
		const char *why = json_string_value(json_object_get(payload, "message"));
		char		text[600];

		snprintf(text, sizeof(text), "The tool could not run: %s", why ? why : "unknown error");
		tool_update(s, m->call_id, "failed", text, payload);
	}
	else if (strcmp(kind, "command.completed") == 0 || strcmp(kind, "command.cancelled") == 0 ||
			 strcmp(kind, "command.dead") == 0)
	{
		if (m->finished)
			return;
		m->finished = true;
		m->perm_pending = false;
		m->stop = strcmp(kind, "command.cancelled") == 0 ? "cancelled" : "end_turn";
		if (strcmp(kind, "command.dead") == 0)
		{
			json_t	   *err = json_object_get(payload, "error");
			const char *why = json_string_value(json_object_get(err, "message"));
			char		text[600];

			m->stop_meta = json_pack("{s:{s:s, s:I, s:O}}", "nadi", "status", "dead", "command_id",
									 (json_int_t) m->id, "error", err ? err : json_null());
			if (!m->cancel_requested)
			{
				snprintf(text, sizeof(text), "The turn failed: %s", why ? why : "unknown error");
				snprintf(msg_id, sizeof(msg_id), "msg-%lld", (long long) seq);
				acp_notify_update(s, json_pack("{s:s, s:o, s:s}", "sessionUpdate",
											   "agent_message_chunk", "content",
											   acp_text_block(text), "messageId", msg_id));
			}
		}
		acp_cmd_answer(s, m);
	}
}

static bool
acp_deliver(EdgeSub *sub, int64_t seq, const char *json, size_t len)
{
	AcpSession *s = sub->owner;
	json_t	   *ev;

	if (s->conn == NULL || s->conn->closing)
		return true;
	/* no room for what this event may produce: pause (or, live, cut off) */
	if (s->conn->t->room(s->conn, s->sid) < ACP_RESERVE)
		return false;
	ev = json_loadb(json, len, 0, NULL);
	if (ev)
		session_event(s, seq, ev);
	json_decref(ev);
	return true;
}

/* Transports buffer at least this much per connection (or session stream). */
size_t
acp_buffer_limit(void)
{
	return edge_cfg.stream_buffer < 4 * ACP_RESERVE ? 4 * ACP_RESERVE : edge_cfg.stream_buffer;
}

static bool
acp_has_room(EdgeSub *sub)
{
	AcpSession *s = sub->owner;

	return s->conn && s->conn->t->room(s->conn, s->sid) >= 2 * ACP_RESERVE;
}

/* The transport has room again: catch-up reads that paused go on. */
void
acp_conn_writable(AcpConn *c)
{
	if (c->closing)
		return;
	for (AcpSession *s = c->sessions; s; s = s->next)
		feed_sub_room(&s->sub);
}

static void
acp_started(EdgeSub *sub, const EdgeProblem *p)
{
	AcpSession *s = sub->owner;

	if (p == NULL || s->conn == NULL)
		return;
	/*
	 * The first read failed (no such session, not the caller's, ...):
	 * session/new or session/load fails with it, and the session leaves
	 * the connection, so failed loads cost nothing.
	 */
	if (s->open_id)
		acp_reply_problem(s->conn, s->open_id, p);
	acp_session_detach(s);
}

static void
acp_caught_up(EdgeSub *sub)
{
	AcpSession *s = sub->owner;

	if (s->conn == NULL || s->open_id == NULL)
		return;
	if (s->is_load)
		acp_reply(s->conn, s->open_id, json_object());
	else if (s->open_meta)
		acp_reply(s->conn, s->open_id,
				  json_pack("{s:s, s:O}", "sessionId", s->sid, "_meta", s->open_meta));
	else
		acp_reply(s->conn, s->open_id, json_pack("{s:s}", "sessionId", s->sid));
	json_decref(s->open_id);
	s->open_id = NULL;
	json_decref(s->open_meta);
	s->open_meta = NULL;
	s->replaying = false;
	/* an `after` beyond the log holds back nothing that comes next */
	if (s->quiet_through > s->seq)
		s->quiet_through = s->seq;
	/* a tool call still waiting for a decision: ask this client too */
	for (AcpCmd *m = s->cmds; m; m = m->next)
		if (m->perm_pending && !m->finished)
			ask_permission(s, m);
}

static void
acp_failed(EdgeSub *sub, const EdgeProblem *p)
{
	AcpSession *s = sub->owner;

	if (s->conn)
	{
		log_info("ACP connection %s: session %s stream ended: %s", s->conn->id, s->sid, p->detail);
		s->conn->t->close(s->conn, 1008, p->code);
	}
}

static const EdgeSubOps acp_sub_ops = {
	.deliver = acp_deliver,
	.has_room = acp_has_room,
	.started = acp_started,
	.caught_up = acp_caught_up,
	.failed = acp_failed,
};

/* Attach sid to the connection and read its log after `after`. */
void
acp_session_attach(AcpConn *c, const char *sid, int64_t after, json_t *open_id, bool is_load,
				   int64_t quiet_through)
{
	AcpSession *s = acp_session_find(c, sid);

	if (s)
		acp_session_detach(s);
	s = calloc(1, sizeof(*s));
	if (s == NULL)
	{
		acp_reply_error(c, open_id, RPC_INTERNAL_ERROR, "Out of memory.", NULL);
		return;
	}
	s->conn = c;
	snprintf(s->sid, sizeof(s->sid), "%s", sid);
	s->open_id = json_incref(open_id);
	s->is_load = is_load;
	s->replaying = is_load;
	s->quiet_through = quiet_through;
	s->next = c->sessions;
	c->sessions = s;
	c->nsessions++;
	nattached++;
	if (feed_subscribe(&s->sub, sid, after, &c->auth, &acp_sub_ops, s) < 0)
	{
		acp_reply_error(c, open_id, RPC_INTERNAL_ERROR, "Out of memory.", NULL);
		acp_session_detach(s);
	}
}
