/*
 * runtime.c — the agent runtime: one command of one session, as a state
 * machine that returns what it needs and never waits (runtime.h).
 *
 *   tool    {"name", "args"}: a direct tool call on the session's sandbox.
 *   message {"text"}: model step → reply, and for each tool call the model
 *           asks for: permission (if the session's policy says so; the
 *           command then waits in Postgres, not here), the call, the result
 *           back to the model, until it answers without tool calls.
 *
 * Every write carries the lease epoch (the fenced SQL API), so a cell that
 * lost its lease cannot change the session.  Writes wait in
 * RtSession.pending; before anything slow (a tool call, a network model, a
 * timer) they are made durable by a store need, with a check for a cancel;
 * the rest are committed by the host after the command.  The conversation
 * in RtSession.messages is built exactly as nadi.session_replay() folds the
 * events this code writes (invariant 7).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime_int.h"

int64_t
rt_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * USECS_PER_SEC + ts.tv_nsec / 1000;
}

void
rt_log(Runtime *rt, RtLogLevel level, const char *fmt,...)
{
	char		msg[1024];
	va_list		ap;

	if (rt->cfg.log == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	rt->cfg.log(rt->cfg.log_arg, level, msg);
}


void
runtime_init(Runtime *rt)
{
	memset(rt, 0, sizeof(*rt));
}

void
runtime_session_init(RtSession *s, const char *id, int64_t epoch, json_t *messages,
					 json_t *policy, const char *sandbox_url)
{
	memset(s, 0, sizeof(*s));
	snprintf(s->id, sizeof(s->id), "%s", id);
	s->epoch = epoch;
	s->messages = messages ? json_incref(messages) : json_array();
	s->policy = json_incref(policy);
	if (sandbox_url)
		snprintf(s->sandbox_url, sizeof(s->sandbox_url), "%s", sandbox_url);
	s->need.flush = s->need.read = -1;
}


static void
command_clear(RtCommand *c)
{
	json_decref(c->payload);
	json_decref(c->call);
	json_decref(c->info);
	json_decref(c->args);
	json_decref(c->result);
	json_decref(c->reply);
	json_decref(c->out);
	json_decref(c->rollback);
	memset(c, 0, sizeof(*c));
}

void
runtime_session_fork(RtSession *s, json_t *state)
{
	json_t	   *ws = json_object_get(json_object_get(state, "fork"), "workspace");
	json_t	   *host = json_object_get(ws, "host_id");
	const char *sandbox = json_string_value(json_object_get(ws, "sandbox_id"));
	const char *snapshot = json_string_value(json_object_get(ws, "snapshot"));

	json_decref(s->fork_from);
	s->fork_from = NULL;
	if (!sandbox || !snapshot || (host && !json_is_null(host) && !json_is_string(host)))
		return;
	/* sandboxd's "from": host_id only when there is one */
	s->fork_from = json_pack("{s:s, s:s}", "sandbox_id", sandbox, "snapshot", snapshot);
	if (s->fork_from && json_is_string(host))
		json_object_set(s->fork_from, "host_id", host);
}

void
runtime_session_free(RtSession *s)
{
	json_decref(s->fork_from);
	s->fork_from = NULL;
	command_clear(&s->cmd);
	need_clear(&s->need);
	json_decref(s->pending);
	json_decref(s->messages);
	json_decref(s->policy);
	s->pending = s->messages = s->policy = NULL;
}


/* ---- the conversation ---- */

static void
message_add(RtSession *s, const char *role, json_t *content, const char *extra_key, json_t *extra)
{
	json_t	   *m = json_pack("{s:s, s:O, s:I}", "role", role, "content", content ? content : json_null(),
							  "command_id", (json_int_t) s->cmd.id);

	if (extra_key && extra)
		json_object_set(m, extra_key, extra);
	json_array_append_new(s->messages, m);
}

/* The last conversation entry of the command, or NULL (borrowed reference). */
static json_t *
conversation_last(RtSession *s)
{
	for (size_t i = json_array_size(s->messages); i > 0; i--)
	{
		json_t	   *m = json_array_get(s->messages, i - 1);

		if (json_integer_value(json_object_get(m, "command_id")) == s->cmd.id)
			return m;
	}
	return NULL;
}

static bool
needs_permission(RtSession *s, const char *tool)
{
	json_t	   *list = json_object_get(s->policy, "require_approval");
	size_t		i;
	json_t	   *v;

	json_array_foreach(list, i, v)
		if (json_is_string(v) && (strcmp(json_string_value(v), tool) == 0 ||
								  strcmp(json_string_value(v), "*") == 0))
		return true;
	return false;
}


/* A message command's start, fresh or resumed (after the decision is read). */
static void
message_resume(RtSession *s, json_t *decision, json_t *request)
{
	RtCommand  *c = &s->cmd;
	json_t	   *last = conversation_last(s);
	const char *role = last ? json_string_value(json_object_get(last, "role")) : NULL;
	json_t	   *calls = last ? json_object_get(last, "tool_calls") : NULL;
	bool		pending = role && strcmp(role, "assistant") == 0 && json_array_size(calls) > 0;
	const char *verdict = decision ? json_string_value(json_object_get(decision, "decision")) : NULL;

	c->state = ST_LOOP;
	if (last == NULL)
		/* a fresh message: the user's turn enters the conversation */
		message_add(s, "user", json_object_get(c->payload, "text"), NULL, NULL);
	else if (pending && verdict && strcmp(verdict, "denied") == 0)
		message_add(s, "denied", json_object_get(decision, "reason"),
					"name", json_object_get(request, "tool"));
	else if (pending)
	{
		/* no decision yet: the tool step asks again if the policy wants one */
		c->call = json_incref(json_array_get(calls, 0));
		c->approved = verdict && strcmp(verdict, "approved") == 0;
	}
}

/* The permission decision recorded for a resumed command (read by ST_MSG_DECISION). */
static void
took_decision(RtSession *s)
{
	json_t	   *rows;
	json_t	   *first;
	json_t	   *second;
	json_t	   *decision = NULL;
	json_t	   *request = NULL;

	took_store(s);
	rows = s->need.read >= 0 ? store_group_rows(&s->need.groups[s->need.read], 0) : NULL;
	first = json_array_get(rows, 0);
	second = json_array_get(rows, 1);
	if (first && second &&
		strcmp(json_string_value(json_object_get(first, "kind")) ?: "", "permission.resolved") == 0)
	{
		decision = json_object_get(first, "payload");
		request = json_object_get(second, "payload");
	}
	message_resume(s, decision, request);
}

/* The model step's outcome, in cmd.rc / cmd.reply / cmd.err. */
static void
model_reply_take(RtSession *s)
{
	RtCommand  *c = &s->cmd;
	json_t	   *calls;

	if (c->rc < 0)
	{
		rt_fail(s, "model_error", c->err, c->rc == -EAGAIN);
		c->state = ST_DONE;
		return;
	}
	calls = json_object_get(c->reply, "tool_calls");
	if (json_array_size(calls) == 0)
	{
		json_t	   *result = json_pack("{s:O}", "text", json_object_get(c->reply, "text"));

		json_object_del(c->reply, "tool_calls");
		/* a cancel that came during the step discards the reply */
		if (s->epoch >= 0)
		{
			message_add(s, "assistant", json_object_get(c->reply, "text"), NULL, NULL);
			rt_complete_with(s, result, "model.reply", c->reply);
		}
		json_decref(result);
		c->state = ST_DONE;
		return;
	}
	if (!rt_event(s, "model.reply", c->reply))
	{
		c->state = ST_DONE;
		return;
	}
	message_add(s, "assistant", json_object_get(c->reply, "text"), "tool_calls", calls);
	c->call = json_incref(json_array_get(calls, 0));
	c->approved = false;
	json_decref(c->reply);
	c->reply = NULL;
	c->state = ST_CONVERSE_TOOL;
}


/*
 * Run the command until it needs something.  reply is the answer to an
 * HTTP need (NULL otherwise); a store need's outcome is in s->need.
 */
static RtNeed *
rt_advance(Runtime *rt, RtSession *s, const HttpReply *reply)
{
	RtCommand  *c = &s->cmd;
	RtNeed *n;

	for (;;)
	{
		switch ((RtState) c->state)
		{
			case ST_DONE:
				if (c->rollback)
				{
					c->state = ST_ROLLBACK;
					break;
				}
				command_clear(c);
				need_clear(&s->need);
				return &s->need;

			case ST_MSG_DECISION:
				took_decision(s);
				break;

			case ST_MSG_CANCEL:
				if (took_cancel(s))
					c->state = ST_DONE;
				else
				{
					c->state = ST_MSG_DECISION;
					return need_command_store(s, false, "SELECT kind, payload FROM nadi.events WHERE session_id = $1::uuid "
											  "AND command_id = $2::bigint AND kind IN ('permission.requested', "
											  "'permission.resolved') ORDER BY seq DESC LIMIT 2");
				}
				break;

			case ST_LOOP:
				if (c->step >= rt->cfg.model_max_steps)
				{
					rt_fail(s, "too_many_steps", "the model kept calling tools", false);
					c->state = ST_DONE;
				}
				else
					c->state = c->call ? ST_CONVERSE_TOOL : ST_MODEL;
				break;

			case ST_MODEL:
				c->slow = model_is_slow(&rt->cfg.model, s->messages);
				c->state = ST_MODEL_CANCEL;
				if (c->slow)
				{
					if ((n = need_cancel_check(s)) != NULL)
						return n;
				}
				else if (s->epoch < 0)
					c->state = ST_DONE;
				else
					c->state = ST_MODEL_DELAY;
				break;

			case ST_MODEL_CANCEL:
				c->state = took_cancel(s) ? ST_DONE : ST_MODEL_DELAY;
				break;

			case ST_MODEL_DELAY:
				{
					long		ms = model_sleep_ms(&rt->cfg.model, s->messages);

					if (ms > 0)
						return need_timer(s, ms, ST_MODEL_TOKEN);
					c->state = ST_MODEL_TOKEN;
				}
				break;

			case ST_MODEL_TOKEN:
				if (rt->cfg.proxy_tokens && !model_is_builtin(&rt->cfg.model) &&
					strcmp(rt->cfg.model.provider, "openai") == 0)
				{
					if ((n = need_token(s, RT_TOKEN_MODEL, ST_MODEL_CALL)) != NULL)
						return n;
				}
				else
					c->state = ST_MODEL_CALL;
				break;

			case ST_MODEL_CALL:
				{
					const char *token = NULL;

					need_clear(&s->need);
					c->state = ST_MODEL_GOT;
					if (rt->cfg.proxy_tokens && !model_is_builtin(&rt->cfg.model) &&
						strcmp(rt->cfg.model.provider, "openai") == 0 &&
						(token = token_get(s, RT_TOKEN_MODEL, c->err, sizeof(c->err))) == NULL)
					{
						rt_fail(s, "model_error", c->err, true);
						c->state = ST_DONE;
					}
					else if (model_is_builtin(&rt->cfg.model))
						c->rc = model_builtin_step(s->messages, &c->reply, c->err, sizeof(c->err));
					else if ((c->rc = model_request(&rt->cfg.model, s->messages, NULL, token,
													&s->need.http, c->err, sizeof(c->err))) == 0)
					{
						c->model_sent_us = rt_now_us();
						return need_http(s, RT_NEED_MODEL, ST_MODEL_ANSWER);
					}
				}
				break;

			case ST_MODEL_ANSWER:
				c->rc = model_take_reply(reply, &c->reply, c->err, sizeof(c->err));
				/* how long the provider took: the operator's numbers count it (nadi.stat_calls) */
				if (c->rc >= 0 && c->reply)
					json_object_set_new(c->reply, "latency_ms",
										json_integer((json_int_t) ((rt_now_us() - c->model_sent_us) / 1000)));
				need_clear(&s->need);
				c->state = ST_MODEL_GOT;
				break;

			case ST_MODEL_GOT:
				/* a cancel that came during a slow step stops the command here */
				c->state = ST_MODEL_CANCEL_AFTER;
				if (!(c->slow && c->rc >= 0) || (n = need_cancel_check(s)) == NULL)
					c->state = ST_MODEL_REPLY;
				else
					return n;
				break;

			case ST_MODEL_CANCEL_AFTER:
				c->state = took_cancel(s) ? ST_DONE : ST_MODEL_REPLY;
				break;

			case ST_MODEL_REPLY:
				model_reply_take(s);
				break;

			case ST_CONVERSE_TOOL:
				/* the name first: the policy and the URL only ever see a tool the host offers */
				c->ret = ST_CONVERSE_CHECKED;
				c->state = ST_CHECK;
				break;

			case ST_CONVERSE_CHECKED:
				{
					json_t	   *name_j = json_object_get(c->call, "name");
					bool		ask = !c->approved && needs_permission(s, json_string_value(name_j));

					c->state = ST_DONE;
					if (c->check == TOOL_REJECTED)
					{
						/* the model sees the error as the call's result, and goes on */
						json_t	   *result = json_pack("{s:O, s:b, s:{s:s, s:s}}", "name", name_j ? name_j : json_null(),
													   "ok", 0, "error", "code", c->code, "message", c->err);

						if (rt_event(s, "tool.result", result))
							message_add(s, "tool", tool_content(result), "name", name_j);
						json_decref(result);
						json_decref(c->call);
						c->call = NULL;
						if (s->epoch >= 0)
						{
							c->step++;
							c->state = ST_LOOP;
						}
					}
					else if (c->check == TOOL_LOST)
						;
					/* the host cannot be asked: a yes or no may still be asked for */
					else if (c->check == TOOL_UNKNOWABLE && !ask)
					{
						if (rt_tool_error(s, name_j, c->code, c->err))
							rt_fail(s, c->code, c->err, true);
					}
					/* the policy names canonical tools: the name is one by now */
					else if (ask)
						rt_park(s, c->call);	/* parked in Postgres until approve/deny */
					else
					{
						c->ret = ST_CONVERSE_CALLED;
						c->state = ST_CALL;
					}
				}
				break;

			case ST_CONVERSE_CALLED:
				c->state = ST_DONE;
				if (c->rc > 0)
				{
					message_add(s, "tool", tool_content(c->result), "name", json_object_get(c->call, "name"));
					json_decref(c->result);
					json_decref(c->call);
					json_decref(c->info);
					json_decref(c->args);
					c->result = c->call = c->info = c->args = NULL;
					/* a tool call is slow: a cancel asked for meanwhile stops here */
					c->state = ST_CONVERSE_CANCEL;
					if ((n = need_cancel_check(s)) != NULL)
						return n;
				}
				break;

			case ST_CONVERSE_CANCEL:
				c->state = ST_DONE;
				if (!took_cancel(s))
				{
					c->step++;
					c->state = ST_LOOP;
				}
				break;

			case ST_TOOLCMD_CHECKED:
				c->state = ST_DONE;
				if (c->check == TOOL_OFFERED)
				{
					c->ret = ST_TOOLCMD_CALLED;
					c->state = ST_CALL;
				}
				else if (c->check == TOOL_REJECTED)
					rt_fail(s, c->code, c->err, false);
				else if (c->check == TOOL_UNKNOWABLE)
				{
					if (rt_tool_error(s, json_object_get(c->call, "name"), c->code, c->err))
						rt_fail(s, c->code, c->err, true);
				}
				break;

			case ST_TOOLCMD_CALLED:
				c->state = ST_DONE;
				if (c->rc <= 0)
					break;
				if (json_is_true(json_object_get(c->result, "ok")) || json_object_get(c->result, "ok") == NULL)
					rt_complete_with(s, c->result, NULL, NULL);
				else
				{
					json_t	   *e = tool_failure(c->result);

					rt_fail_with(s, e, false);
					json_decref(e);
				}
				break;

			default:
				/* ST_CHECK … ST_CALL_END: a tool's name checked, a tool called (runtime_tools.c) */
				if ((n = tool_advance(rt, s, reply)) != NULL)
					return n;
				break;

			case ST_TOKEN_MINTED:
				took_token(rt, s);
				need_clear(&s->need);
				c->state = c->token_next;
				break;

			case ST_ROLLBACK:
			case ST_ROLLBACK_SEND:
			case ST_ROLLBACK_SENT:
				if ((n = rollback_advance(rt, s, reply)) != NULL)
					return n;
				break;
		}
		/* a need's outcome is read by the state it was made for, and no other */
		reply = NULL;
		if (s->need.kind == RT_NEED_STORE)
			need_clear(&s->need);
	}
}

RtNeed *
runtime_start(Runtime *rt, RtSession *s, json_t *row)
{
	RtCommand  *c = &s->cmd;
	const char *type = json_string_value(json_object_get(row, "type"));

	command_clear(c);
	need_clear(&s->need);
	c->id = json_integer_value(json_object_get(row, "command_id"));
	c->payload = json_incref(json_object_get(row, "payload"));
	c->state = ST_DONE;
	if (type && strcmp(type, "tool") == 0)
	{
		/* the payload is the call: {name, args} */
		c->call = json_incref(c->payload);
		c->ret = ST_TOOLCMD_CHECKED;
		c->state = ST_CHECK;
	}
	else if (type && strcmp(type, "message") == 0)
	{
		/*
		 * Only a command that ran before can have waited for a decision; and
		 * be asked to stop while it waited (rolled back by a newer message,
		 * it comes back only to stop here: busy.c)
		 */
		if (conversation_last(s) == NULL)
			message_resume(s, NULL, NULL);
		else
		{
			c->state = ST_MSG_CANCEL;
			return need_cancel_check(s);
		}
	}
	else
		rt_fail(s, "unknown_type", "the cell does not know this command type", false);
	return rt_advance(rt, s, NULL);
}

/* An outcome handed back for a need the session does not have: a driver's bug. */
static RtNeed *
wrong_outcome(Runtime *rt, RtSession *s, RtNeedKind kind)
{
	rt_log(rt, RT_LOG_WARNING, "nadi cell: session %s: an outcome of kind %d came back for a need of kind %d",
		   s->id, (int) kind, (int) s->need.kind);
	return &s->need;
}

RtNeed *
runtime_on_store(Runtime *rt, RtSession *s)
{
	if (s->need.kind != RT_NEED_STORE)
		return wrong_outcome(rt, s, RT_NEED_STORE);
	return rt_advance(rt, s, NULL);
}

RtNeed *
runtime_on_model_reply(Runtime *rt, RtSession *s, const HttpReply *reply)
{
	if (s->need.kind != RT_NEED_MODEL)
		return wrong_outcome(rt, s, RT_NEED_MODEL);
	return rt_advance(rt, s, reply);
}

RtNeed *
runtime_on_tool_result(Runtime *rt, RtSession *s, const HttpReply *reply)
{
	if (s->need.kind != RT_NEED_TOOL)
		return wrong_outcome(rt, s, RT_NEED_TOOL);
	return rt_advance(rt, s, reply);
}

RtNeed *
runtime_on_timer(Runtime *rt, RtSession *s)
{
	if (s->need.kind != RT_NEED_TIMER)
		return wrong_outcome(rt, s, RT_NEED_TIMER);
	need_clear(&s->need);
	return rt_advance(rt, s, NULL);
}
