/*
 * runtime_tools.c — the tool-call client of the agent runtime: the list of
 * tools each sandbox host offers (cached per host), and the requests a
 * tool call takes (a sandbox for the session, the call itself) with the
 * reading of their answers, and the steps of the runtime's state machine
 * that check a tool's name and make a call (tool_advance).  Nothing here
 * performs I/O or runs a statement: the steps return needs.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime_int.h"

/*
 * A name not in the list refreshes it, at most every TOOLS_REFRESH_US; a
 * list older than TOOLS_MAX_AGE_US is refreshed on the next use.  An entry
 * is what the host said of the tool: timeout_ms (the limit it enforces when
 * a call names none), side_effects; {} for a host that lists bare names.
 */
#define TOOLS_REFRESH_US	(5 * USECS_PER_SEC)
#define TOOLS_MAX_AGE_US	(300 * USECS_PER_SEC)

/*
 * Tool names are identifiers, ^[a-z][a-z0-9_]{0,63}$, as at enqueue: checked
 * again before anything else looks at a name (the approval policy, a URL),
 * since a model's tool calls never went through enqueue.
 */
bool
tool_name_valid(const char *name)
{
	size_t		len = name ? strlen(name) : 0;

	if (len < 1 || len > 64 || name[0] < 'a' || name[0] > 'z')
		return false;
	return name[strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_")] == '\0';
}

ToolsCache *
tools_slot(Runtime *rt, const char *base)
{
	ToolsCache *oldest = &rt->tools[0];

	for (int i = 0; i < TOOLS_CACHE_SLOTS; i++)
	{
		ToolsCache *c = &rt->tools[i];

		if (strcmp(c->url, base) == 0)
			return c;
		if (c->url[0] == '\0' || (oldest->url[0] != '\0' && c->tried_at < oldest->tried_at))
			oldest = c;
	}
	json_decref(oldest->tools);
	memset(oldest, 0, sizeof(*oldest));
	snprintf(oldest->url, sizeof(oldest->url), "%s", base);
	return oldest;
}

bool
tools_due(const ToolsCache *c, const char *name, int64_t now)
{
	json_t	   *entry = c->tools ? json_object_get(c->tools, name) : NULL;

	return (entry == NULL || now - c->fetched_at >= TOOLS_MAX_AGE_US) &&
		(c->tried_at == 0 || now - c->tried_at >= TOOLS_REFRESH_US);
}

int
tools_list_request(HttpRequest *req, const char *base, const char *token, long timeout_ms)
{
	char		url[1024];

	snprintf(url, sizeof(url), "%s/v1/tools", base);
	return http_request_set(req, "GET", url, token, NULL, timeout_ms, 1 << 20);
}

int
tools_list_take(ToolsCache *c, const HttpReply *reply, bool *unauthorized, char *err, size_t errlen)
{
	json_t	   *list = json_object_get(reply->body, "tools");
	json_t	   *tools;
	json_t	   *v;
	size_t		i;

	*unauthorized = false;
	if (reply->rc < 0)
	{
		snprintf(err, errlen, "%s", reply->error);
		return reply->rc == -EINTR ? reply->rc : -EAGAIN;
	}
	if (reply->status == 401)
		*unauthorized = true;	/* a new token next time */
	if (reply->status != 200 || !json_is_array(list))
	{
		snprintf(err, errlen, "sandbox host answered HTTP %ld to GET /v1/tools, without a list of tools",
				 reply->status);
		return -EAGAIN;
	}
	tools = http_json_object();
	json_array_foreach(list, i, v)
	{
		const char *name = json_is_string(v) ? json_string_value(v)
			: json_string_value(json_object_get(v, "name"));

		/* a name no call can use is not kept */
		if (tool_name_valid(name))
			json_object_set_new(tools, name, json_is_object(v) ? json_deep_copy(v) : http_json_object());
	}
	json_decref(c->tools);
	c->tools = tools;
	c->fetched_at = c->tried_at;
	return 0;
}

int
tool_sandbox_request(HttpRequest *req, const char *base, const char *token,
					 const char *session_id, const char *image, long timeout_ms)
{
	return tool_sandbox_request_from(req, base, token, session_id, image, NULL, timeout_ms);
}

int
tool_sandbox_request_from(HttpRequest *req, const char *base, const char *token,
						  const char *session_id, const char *image, json_t *from,
						  long timeout_ms)
{
	char		url[1024];
	json_t	   *body = json_pack("{s:s, s:s}", "session_id", session_id, "image", image ? image : "");

	snprintf(url, sizeof(url), "%s/v1/sandboxes", base);
	if (body && from)
		json_object_set(body, "from", from);
	return http_request_set(req, "POST", url, token, body, timeout_ms, 1 << 20);
}

int
tool_sandbox_take(const HttpReply *reply, char *id_out, size_t idlen, char *err, size_t errlen)
{
	long		status = reply->status;
	const char *id;
	const char *detail;

	if (reply->rc < 0)
	{
		snprintf(err, errlen, "%s", reply->error);
		return reply->rc == -EINTR ? reply->rc : -EAGAIN;
	}
	id = json_string_value(json_object_get(reply->body, "id"));
	if ((status == 200 || status == 201 || status == 409) && id)
	{
		/* a path component: 1 to 64 of [A-Za-z0-9_-], as sandboxd assigns them */
		if (id[0] == '\0' || strlen(id) > 64 || strlen(id) >= idlen ||
			id[strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")] != '\0')
		{
			snprintf(err, errlen, "sandbox host answered with an unusable sandbox id "
					 "(sandbox ids are 1 to 64 letters, digits, \"_\" and \"-\")");
			return -EPROTO;
		}
		snprintf(id_out, idlen, "%s", id);
		return 0;
	}

	/*
	 * 409 without an id: the session has a sandbox of another image or
	 * tenant there; retrying cannot change that.
	 */
	detail = json_string_value(json_object_get(reply->body, "detail"));
	snprintf(err, errlen, "sandbox host refused to create a sandbox (HTTP %ld%s%s)", status,
			 detail ? ": " : "", detail ? detail : "");
	return status >= 500 ? -EAGAIN : -EPROTO;
}

int
tool_call_request(HttpRequest *req, const char *base, const char *sandbox_id, const char *name,
				  const char *token, json_t *args, const char *proxy_token, long wait_ms,
				  char *err, size_t errlen)
{
	char		url[1024];
	char	   *sandbox = http_escape(sandbox_id);
	char	   *tool = http_escape(name);
	json_t	   *body;
	int			n;

	n = sandbox && tool ? snprintf(url, sizeof(url), "%s/v1/sandboxes/%s/tools/%s", base, sandbox, tool) : -1;
	free(sandbox);
	free(tool);
	if (n < 0 || n >= (int) sizeof(url))
	{
		snprintf(err, errlen, "cannot build the tool call's URL");
		return -EPROTO;
	}
	body = json_pack("{s:O}", "args", args);
	/* the tools' way out: a token the credentials proxy accepts from this sandbox only */
	if (proxy_token)
		json_object_set_new(body, "proxy_token", json_string(proxy_token));
	if (http_request_set(req, "POST", url, token, body, wait_ms, 4 << 20) < 0)
	{
		snprintf(err, errlen, "out of memory");
		return -EAGAIN;
	}
	/* an exec's output while it runs: tool.output events (runtime_output.c) */
	req->stream = true;
	return 0;
}

int
tool_call_take(const HttpReply *reply, json_t **result, bool *sandbox_lost, bool *unauthorized,
			   char *err, size_t errlen)
{
	json_t	   *resp = reply->body;
	long		status = reply->status;
	int			r = reply->rc;

	*result = NULL;
	*sandbox_lost = *unauthorized = false;
	if (r < 0)
		snprintf(err, errlen, "%s", reply->error);
	if (r == -EINTR)
		return r;
	if (r == -ETIMEDOUT || r == -EIO || r == -EMSGSIZE)
		return -ETIMEDOUT;		/* sent: it may have run */
	if (r < 0)
		return -EAGAIN;			/* it never reached the host */
	if (status == 404 && json_is_string(json_object_get(resp, "code")) &&
		strcmp(json_string_value(json_object_get(resp, "code")), "sandbox_not_found") == 0)
	{
		/* the sandbox host lost it (restart): make a new one next attempt */
		*sandbox_lost = true;
		snprintf(err, errlen, "sandbox not found on its host");
		return -EAGAIN;
	}
	if (status >= 500 || status == 401)
	{
		/* 401: refused before anything ran; the next attempt mints a new token */
		*unauthorized = status == 401;
		snprintf(err, errlen, "sandbox host answered HTTP %ld", status);
		return -EAGAIN;
	}
	if (resp == NULL)
	{
		snprintf(err, errlen, "sandbox host answered HTTP %ld without a JSON body", status);
		return status >= 400 ? -EPROTO : -ETIMEDOUT;
	}
	if (status >= 400)
	{
		json_t	   *detail = json_object_get(resp, "detail");

		snprintf(err, errlen, "%s", json_is_string(detail) ? json_string_value(detail) : "tool call refused");
		*result = json_pack("{s:b, s:O}", "ok", 0, "error", resp);
		return -EPROTO;
	}
	*result = json_incref(resp);
	return 0;
}

/*
 * How long to wait for a tool call's answer: the call's own limit (its
 * "timeout_ms", or "timeout" in seconds, as exec and git_clone take them;
 * else the limit the host listed for the tool; else nadi.tool_timeout) plus
 * TOOL_MARGIN_MS for the host to answer once the limit hit, and never less
 * than nadi.tool_timeout.  A call that hits its limit is then answered by
 * the host (timed_out), not given up by the cell.
 */
#define TOOL_MARGIN_MS		10000
#define TOOL_LIMIT_MAX_MS	(24 * 3600 * 1000L)

long
tool_wait_ms(json_t *info, json_t *args, long tool_timeout_ms)
{
	json_t	   *ms = json_object_get(args, "timeout_ms");
	json_t	   *sec = json_object_get(args, "timeout");
	json_t	   *listed = json_object_get(info, "timeout_ms");
	long		limit = tool_timeout_ms;

	if (json_is_integer(ms) && json_integer_value(ms) > 0)
		limit = json_integer_value(ms) < TOOL_LIMIT_MAX_MS ? (long) json_integer_value(ms) : TOOL_LIMIT_MAX_MS;
	else if (json_is_integer(sec) && json_integer_value(sec) > 0)
		limit = (json_integer_value(sec) < TOOL_LIMIT_MAX_MS / 1000 ? (long) json_integer_value(sec)
				 : TOOL_LIMIT_MAX_MS / 1000) * 1000;
	else if (json_is_integer(listed) && json_integer_value(listed) > 0)
		limit = json_integer_value(listed) < TOOL_LIMIT_MAX_MS ? (long) json_integer_value(listed) : TOOL_LIMIT_MAX_MS;
	limit += TOOL_MARGIN_MS;
	return limit > tool_timeout_ms ? limit : tool_timeout_ms;
}

/* May the tool change anything?  Unless its host says it does not, yes. */
bool
tool_has_side_effects(json_t *info)
{
	return !json_is_false(json_object_get(info, "side_effects"));
}

/* What goes into the conversation for a tool's result (borrowed). */
json_t *
tool_content(json_t *result)
{
	json_t	   *v = json_object_get(result, "result");

	if (v == NULL || json_is_null(v))
		v = json_object_get(result, "stdout");
	if (v == NULL || json_is_null(v))
		v = json_object_get(result, "error");
	return v ? v : json_null();
}

/*
 * Why a direct tool command failed, from the tool's answer: the code says
 * whether it hit its time limit, ran out of memory, or its outcome is
 * unknown, and the answer's flags and exit status come along.
 */
json_t *
tool_failure(json_t *result)
{
	static const char *const flags[] = {"timed_out", "oom_killed", "outcome", "exit_status", "signal", "truncated"};
	json_t	   *error = json_object_get(result, "error");
	json_t	   *e;

	if (json_is_true(json_object_get(result, "timed_out")))
		e = json_pack("{s:s, s:s}", "code", "timed_out", "message", "the tool call hit its time limit and was stopped");
	else if (json_is_true(json_object_get(result, "oom_killed")))
		e = json_pack("{s:s, s:s}", "code", "oom_killed", "message", "the tool call ran out of memory and was killed");
	else if (json_is_string(json_object_get(result, "outcome")) &&
			 strcmp(json_string_value(json_object_get(result, "outcome")), "unknown") == 0)
		e = json_pack("{s:s, s:s}", "code", "outcome_unknown", "message",
					  json_string_value(json_object_get(error, "message")) ?
					  json_string_value(json_object_get(error, "message")) : "the tool call's outcome is unknown");
	else
		e = json_pack("{s:s, s:s}", "code", "tool_error", "message", "the tool call failed");
	for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
		if (json_object_get(result, flags[i]))
			json_object_set(e, flags[i], json_object_get(result, flags[i]));
	if (error)
		json_object_set(e, "detail", error);
	return e;
}

/* ---- the steps: a name checked, a call made and recorded ---- */

/* A call that may have run: its result says the outcome is unknown. */
static json_t *
outcome_unknown(const char *why)
{
	return json_pack("{s:b, s:s, s:{s:s, s:s}}", "ok", 0, "outcome", "unknown", "error",
					 "code", "outcome_unknown", "message", why);
}

/* A tool.result event for the call at hand (cmd.result); the sub-step ends. */
static void
call_record_result(RtSession *s)
{
	RtCommand  *c = &s->cmd;
	json_t	   *ev = json_deep_copy(c->result);

	json_object_set(ev, "name", json_object_get(c->call, "name"));
	c->rc = rt_event(s, "tool.result", ev) ? 1 : -1;
	json_decref(ev);
	c->state = c->ret;
}

/*
 * After the sandbox host's answer (or none): record it.  A call that was
 * sent but got no answer may have run.  A tool that may have side effects
 * is not run again blindly: its tool.result says "outcome": "unknown" (the
 * model sees it; a direct tool command fails for good).  One without side
 * effects is tried again, and the tool.error says the outcome was unknown.
 */
static void
call_end(RtSession *s)
{
	RtCommand  *c = &s->cmd;
	int			r = c->rc;

	if (r == -ETIMEDOUT && tool_has_side_effects(c->info))
	{
		char		why[768];

		snprintf(why, sizeof(why), "%s; the call may or may not have run, and is not tried again "
				 "because the tool may have side effects", c->err);
		json_decref(c->result);
		c->result = outcome_unknown(why);
	}
	else if (r == -EAGAIN || r == -EINTR || r == -ETIMEDOUT)
	{
		json_t	   *ev = json_pack("{s:O, s:s, s:s}", "name", json_object_get(c->call, "name"),
								   "code", r == -ETIMEDOUT ? "outcome_unknown" : "sandbox_unavailable",
								   "message", c->err);

		if (r == -ETIMEDOUT)
			json_object_set_new(ev, "outcome", json_string("unknown"));
		rt_event(s, "tool.error", ev);
		json_decref(ev);
		rt_fail(s, "sandbox_unavailable", c->err, true);
		c->rc = 0;
		c->state = c->ret;
		return;
	}
	if (c->result == NULL)
		c->result = json_pack("{s:b, s:{s:s}}", "ok", 0, "error", "message", c->err);
	call_record_result(s);
}

/* The name check's end: is the name one the host offers? */
static void
check_end(Runtime *rt, RtSession *s)
{
	RtCommand  *c = &s->cmd;
	json_t	   *name_j = json_object_get(c->call, "name");
	ToolsCache *cache = tools_slot(rt, c->base);
	json_t	   *entry = cache->tools ? json_object_get(cache->tools, json_string_value(name_j)) : NULL;

	c->state = c->ret;
	if (entry)
	{
		c->info = json_incref(entry);
		c->check = TOOL_OFFERED;
		return;
	}
	if (cache->tools == NULL)
	{
		c->code = "sandbox_unavailable";
		snprintf(c->err, sizeof(c->err), "cannot list the sandbox host's tools: %.400s", cache->error);
		c->check = TOOL_UNKNOWABLE;
		return;
	}
	c->code = "unknown_tool";
	snprintf(c->err, sizeof(c->err), "the sandbox host offers no tool \"%s\"", json_string_value(name_j));
	c->check = rt_tool_error(s, name_j, c->code, c->err) ? TOOL_REJECTED : TOOL_LOST;
}

/*
 * One step of a tool name check or a tool call (RtCommand.state in ST_CHECK
 * … ST_CALL_END): a need to return, or NULL to go on at the new state.
 */
RtNeed *
tool_advance(Runtime *rt, RtSession *s, const HttpReply *reply)
{
	RtCommand  *c = &s->cmd;
	RtNeed	   *n;

	switch ((RtState) c->state)
	{
			/*
			 * The name check: an identifier naming a tool the session's
			 * sandbox host offers.  TOOL_OFFERED sets cmd.info; otherwise
			 * cmd.code and cmd.err say why, nothing was sent to the
			 * tools' routes, and for TOOL_REJECTED a tool.error is on
			 * record.
			 */
		case ST_CHECK:
			{
				const char *name = json_string_value(json_object_get(c->call, "name"));
				const char *base = s->sandbox_url[0] ? s->sandbox_url
					: (rt->cfg.sandboxd_url ? rt->cfg.sandboxd_url : "");
				ToolsCache *cache;
				int64_t		now = rt_now_us();

				json_decref(c->info);
				c->info = NULL;
				c->state = c->ret;
				if (!tool_name_valid(name))
				{
					c->code = "invalid_tool_name";
					snprintf(c->err, sizeof(c->err), "a tool name is a lowercase identifier of at most %d "
							 "characters (^[a-z][a-z0-9_]{0,63}$)", 64);
					c->check = rt_tool_error(s, json_object_get(c->call, "name"), c->code, c->err)
						? TOOL_REJECTED : TOOL_LOST;
					break;
				}
				if (strlen(base) >= sizeof(c->base))
				{
					c->code = "sandbox_unavailable";
					snprintf(c->err, sizeof(c->err), "the sandbox host's URL is longer than %zu bytes",
							 sizeof(c->base) - 1);
					c->check = TOOL_UNKNOWABLE;
					break;
				}
				snprintf(c->base, sizeof(c->base), "%s", base);
				cache = tools_slot(rt, c->base);
				c->state = ST_CHECK_END;
				if (tools_due(cache, name, now))
				{
					cache->tried_at = now;
					if ((n = need_token(s, RT_TOKEN_SANDBOXD, ST_CHECK_SEND)) != NULL)
						return n;
				}
			}
			break;

		case ST_CHECK_SEND:
			{
				const char *token = token_get(s, RT_TOKEN_SANDBOXD, c->err, sizeof(c->err));

				need_clear(&s->need);
				c->state = ST_CHECK_END;
				if (token == NULL ||
					tools_list_request(&s->need.http, c->base, token, rt->cfg.tool_timeout_ms) < 0)
				{
					if (token)
						snprintf(c->err, sizeof(c->err), "out of memory");
					snprintf(tools_slot(rt, c->base)->error, sizeof(rt->tools[0].error), "%s", c->err);
					break;
				}
				/* slow: what was written so far is committed first */
				c->state = ST_CHECK_FLUSHED;
				{
					HttpRequest keep = s->need.http;

					memset(&s->need.http, 0, sizeof(keep));
					n = need_store(s, true, NULL, 0, NULL);
					s->need.http = keep;
					if (n != NULL)
						return n;
				}
			}
			break;

		case ST_CHECK_FLUSHED:
			took_store(s);
			for (int g = 0; g < s->need.ngroups; g++)
				store_group_free(&s->need.groups[g]);
			s->need.ngroups = 0;
			s->need.flush = s->need.read = -1;
			return need_http(s, RT_NEED_TOOL, ST_CHECK_LISTED);

		case ST_CHECK_LISTED:
			{
				ToolsCache *cache = tools_slot(rt, c->base);
				bool		unauthorized;

				if (tools_list_take(cache, reply, &unauthorized, c->err, sizeof(c->err)) < 0)
					snprintf(cache->error, sizeof(cache->error), "%s", c->err);
				if (unauthorized)
					s->tokens[RT_TOKEN_SANDBOXD].renew_at = 0;
				need_clear(&s->need);
				c->state = ST_CHECK_END;
			}
			break;

		case ST_CHECK_END:
			/* a stale list still answers while the host cannot be asked */
			check_end(rt, s);
			break;

			/*
			 * A tool call (its name checked): tool.call, the call,
			 * tool.result.  cmd.rc: 1 when the result is in (cmd.result),
			 * 0 when the command was failed (already recorded), -1 when
			 * the lease is gone.
			 */
		case ST_CALL:
			json_decref(c->args);
			c->args = json_object_get(c->call, "args") ? json_incref(json_object_get(c->call, "args"))
				: http_json_object();
			json_decref(c->result);
			c->result = NULL;
			c->state = ST_CALL_RECORD;
			/* a call that may have run when its cell went away is not made again blindly */
			if (tool_has_side_effects(c->info))
			{
				c->state = ST_CALL_CUT;
				return need_command_store(s, true, "SELECT kind FROM nadi.events WHERE session_id = $1::uuid "
										  "AND command_id = $2::bigint AND kind IN ('tool.call', 'tool.result', "
										  "'tool.error') ORDER BY seq DESC LIMIT 1");
			}
			break;

		case ST_CALL_CUT:

			/*
			 * Did an earlier attempt stop in the middle of this call (a
			 * tool.call on record, with no tool.result or tool.error
			 * after it)?  The cell that made it died, or lost its lease,
			 * while the call was out.
			 */
			{
				json_t	   *row = took_store(s);

				c->state = ST_CALL_RECORD;
				if (strcmp(json_string_value(json_object_get(row, "kind")) ?: "", "tool.call") == 0)
				{
					c->result = outcome_unknown("an earlier attempt made this call and stopped before its "
												"answer came: it may or may not have run, and is not "
												"tried again because the tool may have side effects");
					call_record_result(s);
				}
			}
			break;

		case ST_CALL_RECORD:
			{
				json_t	   *ev = json_pack("{s:O, s:O}", "name", json_object_get(c->call, "name"),
										   "args", c->args);
				bool		ok = rt_event(s, "tool.call", ev);

				json_decref(ev);
				c->rc = -1;
				c->state = c->ret;
				if (!ok)
					break;
				/* flushes: the call is on record before it is made */
				c->state = ST_CALL_CANCEL;
				return need_cancel_check(s);
			}

		case ST_CALL_CANCEL:
			if (took_cancel(s))
			{
				c->rc = 0;
				c->state = c->ret;
			}
			else if ((n = need_token(s, RT_TOKEN_SANDBOXD, ST_CALL_SANDBOX)) != NULL)
				return n;
			break;

		case ST_CALL_SANDBOX:
			{
				const char *token = token_get(s, RT_TOKEN_SANDBOXD, c->err, sizeof(c->err));

				need_clear(&s->need);
				c->state = ST_CALL_PROXY_TOKEN;
				if (token == NULL)
				{
					c->rc = -EAGAIN;
					c->state = ST_CALL_END;
				}
				else if (s->sandbox_id[0] == '\0')
				{
					if (tool_sandbox_request_from(&s->need.http, c->base, token, s->id,
												  rt->cfg.sandbox_image, s->fork_from,
												  rt->cfg.tool_timeout_ms) == 0)
						return need_http(s, RT_NEED_TOOL, ST_CALL_SANDBOX_MADE);
					snprintf(c->err, sizeof(c->err), "out of memory");
					c->rc = -EAGAIN;
					c->state = ST_CALL_END;
				}
			}
			break;

		case ST_CALL_SANDBOX_MADE:
			c->rc = tool_sandbox_take(reply, s->sandbox_id, sizeof(s->sandbox_id), c->err, sizeof(c->err));
			need_clear(&s->need);
			c->state = c->rc < 0 ? ST_CALL_END : ST_CALL_PROXY_TOKEN;
			break;

		case ST_CALL_PROXY_TOKEN:
			/* the tools' way out: without a token the tool runs all the same, with no way out */
			if (!rt->cfg.proxy_tokens)
				c->state = ST_CALL_POST;
			else if ((n = need_token(s, RT_TOKEN_SANDBOX, ST_CALL_POST)) != NULL)
				return n;
			break;

		case ST_CALL_POST:
			{
				char		why[512];
				const char *token = token_get(s, RT_TOKEN_SANDBOXD, c->err, sizeof(c->err));
				const char *proxy = rt->cfg.proxy_tokens ? token_get(s, RT_TOKEN_SANDBOX, why, sizeof(why)) : NULL;

				need_clear(&s->need);
				c->state = ST_CALL_END;
				rt_output_reset(c);
				if (token == NULL)
					c->rc = -EAGAIN;
				else if ((c->rc = tool_call_request(&s->need.http, c->base, s->sandbox_id,
													json_string_value(json_object_get(c->call, "name")),
													token, c->args, proxy,
													tool_wait_ms(c->info, c->args, rt->cfg.tool_timeout_ms),
													c->err, sizeof(c->err))) == 0)
					return need_http(s, RT_NEED_TOOL, ST_CALL_ANSWERED);
			}
			break;

		case ST_CALL_ANSWERED:
			{
				bool		lost,
							unauthorized;

				/* the output not yet written goes before the tool.result */
				rt_output_flush(s);
				c->rc = tool_call_take(reply, &c->result, &lost, &unauthorized, c->err, sizeof(c->err));
				if (lost)
					s->sandbox_id[0] = '\0';
				if (unauthorized)
					s->tokens[RT_TOKEN_SANDBOXD].renew_at = 0;
				need_clear(&s->need);
				c->state = ST_CALL_END;
			}
			break;

		case ST_CALL_END:
			call_end(s);
			break;
		default:
			break;
	}
	return NULL;
}

/*
 * The end of a message rolled back by a newer one (cmd.rollback, the
 * command.rolled_back payload; its turn already left the conversation):
 * the session's sandbox goes back to the workspace snapshot the payload
 * names, if any (POST <base>/v1/sandboxes/<id>/restore {"snapshot"}), a
 * workspace.restore event records how that went, and the command stops as
 * cancelled.  A restore that fails is recorded and logged; the command
 * stops all the same (the new message runs on the workspace as it is).
 */
static void
rollback_end(Runtime *rt, RtSession *s, json_t *workspace, const char *error)
{
	RtCommand  *c = &s->cmd;

	if (workspace)
	{
		json_t	   *ev = json_pack("{s:I, s:O, s:b}", "command_id", (json_int_t) c->id,
								   "workspace", workspace, "ok", error == NULL);

		if (error)
		{
			json_object_set_new(ev, "error", json_string(error));
			rt_log(rt, RT_LOG_WARNING, "nadi cell: session %s: command %" PRId64
				   " rolled back, but its workspace was not restored: %s", s->id, c->id, error);
		}
		rt_event(s, "workspace.restore", ev);
		json_decref(ev);
	}
	rt_fail(s, "cancelled", "rolled back by a new message at the cell's next step", false);
	json_decref(c->rollback);
	c->rollback = NULL;
	need_clear(&s->need);
	c->state = ST_DONE;
}

RtNeed *
rollback_advance(Runtime *rt, RtSession *s, const HttpReply *reply)
{
	RtCommand  *c = &s->cmd;
	json_t	   *ws = json_object_get(c->rollback, "workspace");
	const char *sandbox = json_string_value(json_object_get(ws, "sandbox_id"));
	const char *snapshot = json_string_value(json_object_get(ws, "snapshot"));
	RtNeed	   *n;

	if (s->epoch < 0)
	{
		json_decref(c->rollback);
		c->rollback = NULL;
		c->state = ST_DONE;
		return NULL;
	}
	switch ((RtState) c->state)
	{
		case ST_ROLLBACK:
			{
				const char *base = s->sandbox_url[0] ? s->sandbox_url
					: (rt->cfg.sandboxd_url ? rt->cfg.sandboxd_url : "");

				if (sandbox == NULL || snapshot == NULL)
					rollback_end(rt, s, NULL, NULL);	/* no tool call ever took a snapshot */
				else if (base[0] == '\0' || strlen(base) >= sizeof(c->base))
					rollback_end(rt, s, ws, "no usable sandbox host URL");
				else
				{
					snprintf(c->base, sizeof(c->base), "%s", base);
					if ((n = need_token(s, RT_TOKEN_SANDBOXD, ST_ROLLBACK_SEND)) != NULL)
						return n;
				}
			}
			break;

		case ST_ROLLBACK_SEND:
			{
				char		url[1024];
				const char *token = token_get(s, RT_TOKEN_SANDBOXD, c->err, sizeof(c->err));

				need_clear(&s->need);
				/* the id goes into the path: only what sandboxd assigns */
				if (token == NULL)
					rollback_end(rt, s, ws, c->err);
				else if (sandbox[0] == '\0' || strlen(sandbox) > 64 ||
						 sandbox[strspn(sandbox, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")] != '\0')
					rollback_end(rt, s, ws, "the snapshot names an unusable sandbox id");
				else
				{
					snprintf(url, sizeof(url), "%s/v1/sandboxes/%s/restore", c->base, sandbox);
					if (http_request_set(&s->need.http, "POST", url, token,
										 json_pack("{s:s}", "snapshot", snapshot),
										 rt->cfg.tool_timeout_ms, 1 << 20) < 0)
						rollback_end(rt, s, ws, "out of memory");
					else
						return need_http(s, RT_NEED_TOOL, ST_ROLLBACK_SENT);
				}
			}
			break;

		case ST_ROLLBACK_SENT:
			if (reply->rc < 0)
				snprintf(c->err, sizeof(c->err), "%s", reply->error);
			else if (reply->status / 100 != 2)
			{
				const char *detail = json_string_value(json_object_get(reply->body, "detail"));

				if (reply->status == 401)
					s->tokens[RT_TOKEN_SANDBOXD].renew_at = 0;
				snprintf(c->err, sizeof(c->err), "the sandbox host answered %ld%s%.400s", reply->status,
						 detail ? ": " : "", detail ? detail : "");
			}
			else
				c->err[0] = '\0';
			rollback_end(rt, s, ws, c->err[0] ? c->err : NULL);
			break;

		default:
			break;
	}
	return NULL;
}
