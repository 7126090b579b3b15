/*
 * agent.c — the agent loop for one command of one session.
 *
 *   tool    {"name", "args"}: a direct tool call on the session's sandbox.
 *   message {"text"}: model step → reply, and for each tool call the model
 *           asks for: permission (if the session's policy says so; the
 *           command then waits in Postgres, not here), the call, the result
 *           back to the model, until it answers without tool calls.
 *
 * Every write carries the lease epoch (store.c → the fenced SQL API), so a
 * cell that lost its lease cannot change the session.  The conversation in
 * CellSession.messages is built exactly as nadi.session_replay() folds the
 * events this loop writes (invariant 7).
 */
#include "postgres.h"

#include <errno.h>

#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/wait_event.h"
#include "utils/timestamp.h"

#include "nadi.h"
#include "cell.h"
#include "http.h"

#define NA_FENCED SQLSTATE_NADI_FENCED

static char *
json_text(json_t *j)
{
	return json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
}

static char *
int64_text(int64 v)
{
	return psprintf(INT64_FORMAT, v);
}

/* One statement for a StoreGroup: [sql, [args...]]. */
json_t *
agent_stmt(const char *sql, int nargs, const char *const *args)
{
	json_t	   *a = json_array();

	for (int i = 0; i < nargs; i++)
		json_array_append_new(a, args[i] ? json_string(args[i]) : json_null());
	return json_pack("[s, o]", sql, a);
}

/*
 * A fenced write.  In a batched round it joins the session's pending group,
 * committed with every other session's at the end of the round (or before
 * anything slow); otherwise it commits now.  Returns false if it failed (the
 * lease moved on): the session is then dropped.
 */
static bool
agent_write(CellSession *s, const char *sql, int nargs, const char *const *args)
{
	StoreResult r;
	bool		ok;

	if (s->epoch < 0)
		return false;
	if (s->batched)
	{
		if (s->pending == NULL)
			s->pending = json_array();
		json_array_append_new(s->pending, agent_stmt(sql, nargs, args));
		return true;
	}
	r = store_exec(sql, nargs, args);
	ok = r.sqlerrcode == 0;
	if (!ok)
		s->epoch = -1;
	store_result_free(&r);
	return ok;
}

/* Commit a session's pending writes now (before anything slow). */
void
agent_flush(CellSession *s)
{
	StoreGroup	g = {0};

	if (s->pending == NULL || json_array_size(s->pending) == 0)
		return;
	g.stmts = s->pending;
	s->pending = NULL;
	store_exec_groups(&g, 1);
	if (g.sqlerrcode != 0)
		s->epoch = -1;
	store_group_free(&g);
}

/* Append a cell event (fenced).  Returns false if the lease moved on. */
static bool
agent_event(CellSession *s, int64 cmd, const char *kind, json_t *payload)
{
	char	   *p = json_text(payload);
	const char *args[5] = {s->id_text, int64_text(s->epoch), kind, p, int64_text(cmd)};
	bool		ok = agent_write(s, "SELECT seq FROM nadi.event_append($1::uuid, $2::bigint, $3, $4::jsonb, $5::bigint)",
								 5, args);

	free(p);
	return ok;
}

/* Complete a command, appending one cell event first in the same call. */
static bool
agent_complete_with(CellSession *s, int64 cmd, json_t *result, const char *kind, json_t *payload)
{
	json_t	   *events = kind ? json_pack("[{s:s, s:O}]", "kind", kind, "payload", payload) : NULL;
	char	   *p = json_text(result);
	char	   *e = events ? json_text(events) : NULL;
	const char *args[5] = {s->id_text, int64_text(cmd), int64_text(s->epoch), p, e};
	bool		ok = agent_write(s, "SELECT status FROM nadi.command_complete($1::uuid, $2::bigint, $3::bigint, "
								 "$4::jsonb, $5::jsonb)", 5, args);

	free(p);
	free(e);
	json_decref(events);
	return ok;
}

static bool
agent_complete(CellSession *s, int64 cmd, json_t *result)
{
	return agent_complete_with(s, cmd, result, NULL, NULL);
}

/* Fail a command with an error object ({code, message, ...}). */
static void
agent_fail_with(CellSession *s, int64 cmd, json_t *error, bool retryable)
{
	char	   *p = json_text(error);
	const char *args[5] = {s->id_text, int64_text(cmd), int64_text(s->epoch), p, retryable ? "true" : "false"};

	agent_write(s, "SELECT status FROM nadi.command_fail($1::uuid, $2::bigint, $3::bigint, $4::jsonb, $5::boolean)",
				5, args);
	free(p);
}

static void
agent_fail(CellSession *s, int64 cmd, const char *code, const char *message, bool retryable)
{
	json_t	   *e = json_pack("{s:s, s:s}", "code", code, "message", message);

	agent_fail_with(s, cmd, e, retryable);
	json_decref(e);
}

/*
 * Has a cancel been asked for?  Checked before every slow step (a tool call,
 * a model call over the network, a delay), after making what was written so
 * far durable.  Between instant steps of a batched round there is nothing
 * to interrupt: a cancel that arrives then is seen at the next slow step, or
 * loses the race to the completion.
 */
static bool
agent_cancelled(CellSession *s, int64 cmd)
{
	const char *args[2] = {s->id_text, int64_text(cmd)};
	StoreResult r;
	bool		yes;

	agent_flush(s);
	if (s->epoch < 0)
		return true;
	r = store_exec("SELECT cancel_requested FROM nadi.command_inbox "
				   "WHERE session_id = $1::uuid AND command_id = $2::bigint", 2, args);
	yes = json_is_true(json_object_get(json_array_get(r.rows, 0), "cancel_requested"));
	store_result_free(&r);
	if (yes)
		agent_fail(s, cmd, "cancelled", "cancelled at the cell's next step", false);
	return yes;
}

/* A cancel point between instant steps: see agent_cancelled(). */
static bool
agent_cancel_point(CellSession *s, int64 cmd)
{
	return s->batched ? s->epoch < 0 : agent_cancelled(s, cmd);
}

static void
message_add(CellSession *s, const char *role, json_t *content, int64 cmd,
			const char *extra_key, json_t *extra)
{
	json_t	   *m = json_pack("{s:s, s:O, s:I}", "role", role, "content", content ? content : json_null(),
							  "command_id", (json_int_t) cmd);

	if (extra_key && extra)
		json_object_set(m, extra_key, extra);
	json_array_append_new(s->messages, m);
}

/* libcurl's progress callback: keep leases alive; stop when asked to. */
static bool
abort_requested(void)
{
	if (!InterruptPending)
		cell_keepalive(false);
	return InterruptPending;
}

/*
 * A token minted in Postgres: the session's model token or the token of its
 * sandbox for the credentials proxy, or the session's token for its sandbox
 * host.  Tokens live 15 minutes and are minted again after half of that, so
 * a busy session mints a few an hour, not one per call.  NULL (err says why)
 * when none can be minted; a failure is logged once and tried again after
 * PROXY_TOKEN_RETRY_US.
 */
#define PROXY_TOKEN_RENEW_US	(450 * USECS_PER_SEC)
#define PROXY_TOKEN_RETRY_US	(30 * USECS_PER_SEC)

typedef enum TokenKind
{
	TOKEN_MODEL,				/* nadi.model_token: model calls, via the proxy */
	TOKEN_SANDBOX,				/* nadi.sandbox_token: the tools' egress, via the proxy */
	TOKEN_SANDBOXD				/* nadi.sandboxd_token: every call to the sandbox host */
} TokenKind;

static const char *
agent_token(CellSession *s, TokenKind kind, char *err, size_t errlen)
{
	static const char *const what[] = {
		[TOKEN_MODEL] = "a model token for the credentials proxy",
		[TOKEN_SANDBOX] = "a sandbox token for the credentials proxy",
		[TOKEN_SANDBOXD] = "a session token for the sandbox host",
	};
	ProxyToken *t = kind == TOKEN_MODEL ? &s->model_token
		: kind == TOKEN_SANDBOX ? &s->sandbox_token : &s->sandboxd_token;
	TimestampTz now = GetCurrentTimestamp();
	const char *args[2] = {s->id_text, s->sandbox_id};
	StoreResult r;
	const char *tok;

	if (now < t->renew_at && (kind != TOKEN_SANDBOX || strcmp(t->sandbox_id, s->sandbox_id) == 0))
	{
		if (t->token[0])
			return t->token;
		strlcpy(err, t->error, errlen);
		return NULL;
	}
	t->token[0] = '\0';
	strlcpy(t->sandbox_id, s->sandbox_id, sizeof(t->sandbox_id));
	if (kind == TOKEN_MODEL)
		r = store_exec("SELECT nadi.model_token($1::uuid) AS token", 1, args);
	else if (kind == TOKEN_SANDBOX)
		r = store_exec("SELECT nadi.sandbox_token($1::uuid, $2) AS token", 2, args);
	else
		r = store_exec("SELECT nadi.sandboxd_token($1::uuid) AS token", 1, args);
	tok = json_string_value(json_object_get(json_array_get(r.rows, 0), "token"));
	if (r.sqlerrcode != 0 || tok == NULL || strlen(tok) >= sizeof(t->token))
	{
		snprintf(t->error, sizeof(t->error), "cannot mint %s: %s",
				 what[kind], r.sqlerrcode ? r.message : "no usable token");
		ereport(LOG, (errmsg("nadi cell: session %s: %s", s->id_text, t->error)));
		strlcpy(err, t->error, errlen);
		t->renew_at = now + PROXY_TOKEN_RETRY_US;
	}
	else
	{
		strlcpy(t->token, tok, sizeof(t->token));
		t->renew_at = now + PROXY_TOKEN_RENEW_US;
	}
	store_result_free(&r);
	return t->token[0] ? t->token : NULL;
}

/*
 * Tool names are identifiers, ^[a-z][a-z0-9_]{0,63}$, as at enqueue: checked
 * again here before anything else looks at a name (the approval policy, a
 * URL), since a model's tool calls never went through enqueue.
 */
static bool
tool_name_valid(const char *name)
{
	return name != NULL && nadi_tool_name_ok(name, strlen(name));
}

/*
 * The tools each sandbox host offers (GET /v1/tools), cached per URL in this
 * worker.  A name not in the list refreshes it, at most every
 * TOOLS_REFRESH_US; a list older than TOOLS_MAX_AGE_US is refreshed on the
 * next use.  An entry is what the host said of the tool: timeout_ms (the
 * limit it enforces when a call names none), side_effects; {} for a host
 * that lists bare names.
 */
#define TOOLS_CACHE_SLOTS	8
#define TOOLS_REFRESH_US	(5 * USECS_PER_SEC)
#define TOOLS_MAX_AGE_US	(300 * USECS_PER_SEC)

typedef struct ToolsCache
{
	char		url[256];
	json_t	   *tools;			/* name → entry, or NULL before the first list */
	TimestampTz fetched_at;		/* the list's age */
	TimestampTz tried_at;		/* the last attempt, good or bad */
	char		error[256];		/* why the last attempt failed */
} ToolsCache;

static ToolsCache tools_cache[TOOLS_CACHE_SLOTS];

static ToolsCache *
tools_slot(const char *base)
{
	ToolsCache *oldest = &tools_cache[0];

	for (int i = 0; i < TOOLS_CACHE_SLOTS; i++)
	{
		ToolsCache *c = &tools_cache[i];

		if (strcmp(c->url, base) == 0)
			return c;
		if (c->url[0] == '\0' || (oldest->url[0] != '\0' && c->tried_at < oldest->tried_at))
			oldest = c;
	}
	json_decref(oldest->tools);
	memset(oldest, 0, sizeof(*oldest));
	strlcpy(oldest->url, base, sizeof(oldest->url));
	return oldest;
}

/* GET <base>/v1/tools into c.  0, or -EAGAIN / -EINTR (err says why). */
static int
tools_fetch(CellSession *s, ToolsCache *c, char *err, size_t errlen)
{
	char		url[1024];
	const char *token;
	json_t	   *resp = NULL;
	json_t	   *list;
	json_t	   *tools;
	json_t	   *v;
	long		status = 0;
	size_t		i;
	int			r;

	c->tried_at = GetCurrentTimestamp();
	if ((token = agent_token(s, TOKEN_SANDBOXD, err, errlen)) == NULL)
		return -EAGAIN;
	snprintf(url, sizeof(url), "%s/v1/tools", c->url);
	agent_flush(s);				/* slow: what was written so far is committed first */
	r = http_json("GET", url, token, NULL, nadi_tool_timeout_ms, 1 << 20,
				  abort_requested, &status, &resp, err, errlen);
	CHECK_FOR_INTERRUPTS();
	if (r < 0)
		return r == -EINTR ? r : -EAGAIN;
	list = json_object_get(resp, "tools");
	if (status == 401)
		s->sandboxd_token.renew_at = 0;	/* a new token next time */
	if (status != 200 || !json_is_array(list))
	{
		snprintf(err, errlen, "sandbox host answered HTTP %ld to GET /v1/tools, without a list of tools", status);
		json_decref(resp);
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
	json_decref(resp);
	json_decref(c->tools);
	c->tools = tools;
	c->fetched_at = c->tried_at;
	return 0;
}

/* A tool.error event.  Returns false if the lease moved on. */
static bool
agent_tool_error(CellSession *s, int64 cmd, json_t *name_j, const char *code, const char *message)
{
	json_t	   *ev = json_pack("{s:O, s:s, s:s}", "name", name_j ? name_j : json_null(),
							   "code", code, "message", message);
	bool		ok = agent_event(s, cmd, "tool.error", ev);

	json_decref(ev);
	return ok;
}

typedef enum ToolCheck
{
	TOOL_OFFERED,				/* go on: *info is the host's entry */
	TOOL_REJECTED,				/* not a name, or not a tool the host offers */
	TOOL_UNKNOWABLE,			/* the host's list could not be had: retry */
	TOOL_LOST					/* the lease is gone */
} ToolCheck;

/*
 * Check a tool call's name before anything else is done with it (the
 * approval policy, the call): an identifier naming a tool the session's
 * sandbox host offers.  TOOL_OFFERED sets *info (a new reference);
 * otherwise *code and err say why, nothing was sent to the tools' routes,
 * and for TOOL_REJECTED a tool.error is on record.
 */
static ToolCheck
agent_tool_check(CellSession *s, int64 cmd, json_t *name_j, json_t **info,
				 const char **code, char *err, size_t errlen)
{
	const char *name = json_string_value(name_j);
	const char *base = s->sandbox_url[0] ? s->sandbox_url : nadi_sandboxd_url;
	TimestampTz now = GetCurrentTimestamp();
	ToolsCache *c;
	json_t	   *entry = NULL;
	ToolCheck	res;

	*info = NULL;
	if (!tool_name_valid(name))
	{
		*code = "invalid_tool_name";
		snprintf(err, errlen, "a tool name is a lowercase identifier of at most %d characters "
				 "(^[a-z][a-z0-9_]{0,63}$)", 64);
		res = TOOL_REJECTED;
	}
	else if (strlen(base) >= sizeof(c->url))
	{
		*code = "sandbox_unavailable";
		snprintf(err, errlen, "the sandbox host's URL is longer than %zu bytes", sizeof(c->url) - 1);
		res = TOOL_UNKNOWABLE;
	}
	else
	{
		c = tools_slot(base);
		if (c->tools)
			entry = json_object_get(c->tools, name);
		if ((entry == NULL || now - c->fetched_at >= TOOLS_MAX_AGE_US) &&
			(c->tried_at == 0 || now - c->tried_at >= TOOLS_REFRESH_US))
		{
			if (tools_fetch(s, c, err, errlen) < 0)
				strlcpy(c->error, err, sizeof(c->error));
			/* a stale list still answers while the host cannot be asked */
			entry = c->tools ? json_object_get(c->tools, name) : NULL;
		}
		if (entry)
		{
			*info = json_incref(entry);
			return TOOL_OFFERED;
		}
		if (c->tools == NULL)
		{
			*code = "sandbox_unavailable";
			snprintf(err, errlen, "cannot list the sandbox host's tools: %s", c->error);
			res = TOOL_UNKNOWABLE;
		}
		else
		{
			*code = "unknown_tool";
			snprintf(err, errlen, "the sandbox host offers no tool \"%s\"", name);
			res = TOOL_REJECTED;
		}
	}
	if (res == TOOL_REJECTED && !agent_tool_error(s, cmd, name_j, *code, err))
		res = TOOL_LOST;
	return res;
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

static long
tool_wait_ms(json_t *info, json_t *args)
{
	json_t	   *ms = json_object_get(args, "timeout_ms");
	json_t	   *sec = json_object_get(args, "timeout");
	json_t	   *listed = json_object_get(info, "timeout_ms");
	long		limit = nadi_tool_timeout_ms;

	if (json_is_integer(ms) && json_integer_value(ms) > 0)
		limit = Min(json_integer_value(ms), TOOL_LIMIT_MAX_MS);
	else if (json_is_integer(sec) && json_integer_value(sec) > 0)
		limit = Min(json_integer_value(sec), TOOL_LIMIT_MAX_MS / 1000) * 1000;
	else if (json_is_integer(listed) && json_integer_value(listed) > 0)
		limit = Min(json_integer_value(listed), TOOL_LIMIT_MAX_MS);
	return Max((long) nadi_tool_timeout_ms, limit + TOOL_MARGIN_MS);
}

/* May the tool change anything?  Unless its host says it does not, yes. */
static bool
tool_has_side_effects(json_t *info)
{
	return !json_is_false(json_object_get(info, "side_effects"));
}

/*
 * Run a tool on the session's sandbox host.  Returns 0 and sets *result
 * ({ok, result, ...}); -EAGAIN when the call did not reach the sandbox host
 * (or it could not take it: the command should be retried); -ETIMEDOUT when
 * the call was sent and no usable answer came (it may have run: its outcome
 * is unknown); -EINTR when the worker is stopping; another negative errno
 * for a call the sandbox refused (err says why).
 */
static int
agent_tool(CellSession *s, const char *name, json_t *info, json_t *args, json_t **result,
		   char *err, size_t errlen)
{
	const char *base = s->sandbox_url[0] ? s->sandbox_url : nadi_sandboxd_url;
	const char *token;
	char		url[1024];
	char	   *sandbox;
	char	   *tool;
	json_t	   *resp = NULL;
	long		status = 0;
	int			r;

	*result = NULL;
	if ((token = agent_token(s, TOKEN_SANDBOXD, err, errlen)) == NULL)
		return -EAGAIN;
	if (s->sandbox_id[0] == '\0')
	{
		json_t	   *req = json_pack("{s:s, s:s}", "session_id", s->id_text, "image", nadi_sandbox_image);
		const char *id;

		snprintf(url, sizeof(url), "%s/v1/sandboxes", base);
		r = http_json("POST", url, token, req, nadi_tool_timeout_ms, 1 << 20,
					  abort_requested, &status, &resp, err, errlen);
		json_decref(req);
		CHECK_FOR_INTERRUPTS();
		if (r < 0)
			return r == -EINTR ? r : -EAGAIN;
		id = json_string_value(json_object_get(resp, "id"));
		if ((status == 200 || status == 201 || status == 409) && id)
		{
			/* a path component: 1 to 64 of [A-Za-z0-9_-], as sandboxd assigns them */
			if (id[0] == '\0' || strlen(id) > 64 ||
				id[strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")] != '\0')
			{
				snprintf(err, errlen, "sandbox host answered with an unusable sandbox id "
						 "(sandbox ids are 1 to 64 letters, digits, \"_\" and \"-\")");
				json_decref(resp);
				return -EPROTO;
			}
			strlcpy(s->sandbox_id, id, sizeof(s->sandbox_id));
		}
		else
		{
			/*
			 * 409 without an id: the session has a sandbox of another image
			 * or tenant there; retrying cannot change that.
			 */
			const char *detail = json_string_value(json_object_get(resp, "detail"));

			snprintf(err, errlen, "sandbox host refused to create a sandbox (HTTP %ld%s%s)", status,
					 detail ? ": " : "", detail ? detail : "");
			json_decref(resp);
			return status >= 500 ? -EAGAIN : -EPROTO;
		}
		json_decref(resp);
		resp = NULL;
	}

	sandbox = http_escape(s->sandbox_id);
	tool = http_escape(name);
	r = sandbox && tool ? snprintf(url, sizeof(url), "%s/v1/sandboxes/%s/tools/%s", base, sandbox, tool) : -1;
	free(sandbox);
	free(tool);
	if (r < 0 || r >= (int) sizeof(url))
	{
		snprintf(err, errlen, "cannot build the tool call's URL");
		return -EPROTO;
	}
	{
		json_t	   *req = json_pack("{s:O}", "args", args);

		/* the tools' way out: a token the credentials proxy accepts from this sandbox only */
		if (nadi_proxy_tokens)
		{
			char		why[512];
			const char *tok = agent_token(s, TOKEN_SANDBOX, why, sizeof(why));

			/* without one the tool runs all the same, with no way out */
			if (tok)
				json_object_set_new(req, "proxy_token", json_string(tok));
		}

		r = http_json("POST", url, token, req, tool_wait_ms(info, args), 4 << 20,
					  abort_requested, &status, &resp, err, errlen);
		json_decref(req);
	}
	CHECK_FOR_INTERRUPTS();
	if (r == -EINTR)
		return r;
	if (r == -ETIMEDOUT || r == -EIO || r == -EMSGSIZE)
		return -ETIMEDOUT;		/* sent: it may have run */
	if (r < 0)
		return -EAGAIN;			/* it never reached the host */
	if (status == 404 && json_is_object(resp) &&
		json_is_string(json_object_get(resp, "code")) &&
		strcmp(json_string_value(json_object_get(resp, "code")), "sandbox_not_found") == 0)
	{
		/* the sandbox host lost it (restart): make a new one next attempt */
		s->sandbox_id[0] = '\0';
		snprintf(err, errlen, "sandbox not found on its host");
		json_decref(resp);
		return -EAGAIN;
	}
	if (status >= 500 || status == 401)
	{
		/* 401: refused before anything ran; the next attempt mints a new token */
		if (status == 401)
			s->sandboxd_token.renew_at = 0;
		snprintf(err, errlen, "sandbox host answered HTTP %ld", status);
		json_decref(resp);
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
		json_decref(resp);
		return -EPROTO;
	}
	*result = resp;
	return 0;
}

/* What goes into the conversation for a tool's result. */
static json_t *
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
 * Call a tool (its name checked by agent_tool_check) and record tool.call /
 * tool.result.  Returns 1 when the result is in, 0 when the command was
 * failed (already recorded), -1 when the lease is gone.
 *
 * A call that was sent but got no answer may have run.  A tool that may
 * have side effects is not run again blindly: its tool.result says
 * "outcome": "unknown" (the model sees it; a direct tool command fails for
 * good).  One without side effects is tried again, and the tool.error says
 * the outcome was unknown.
 */
/*
 * Did an earlier attempt of this command stop in the middle of a tool call
 * (a tool.call on record, with no tool.result or tool.error after it)?  The
 * cell that made it died, or lost its lease, while the call was out.
 */
static bool
agent_call_cut_short(CellSession *s, int64 cmd)
{
	const char *args[2] = {s->id_text, int64_text(cmd)};
	StoreResult r;
	bool		yes;

	agent_flush(s);				/* this attempt's own events count too */
	r = store_exec("SELECT kind FROM nadi.events WHERE session_id = $1::uuid AND command_id = $2::bigint "
				   "AND kind IN ('tool.call', 'tool.result', 'tool.error') ORDER BY seq DESC LIMIT 1", 2, args);
	yes = r.sqlerrcode == 0 &&
		strcmp(json_string_value(json_object_get(json_array_get(r.rows, 0), "kind")) ?: "", "tool.call") == 0;
	store_result_free(&r);
	return yes;
}

static int
agent_call_args(CellSession *s, int64 cmd, const char *name, json_t *info, json_t *args, json_t **result)
{
	char		err[512] = "";
	int			r;
	json_t	   *ev;

	/* a call that may have run when its cell went away is not made again blindly */
	if (tool_has_side_effects(info) && agent_call_cut_short(s, cmd))
	{
		*result = json_pack("{s:b, s:s, s:{s:s, s:s}}", "ok", 0, "outcome", "unknown", "error",
							"code", "outcome_unknown", "message",
							"an earlier attempt made this call and stopped before its answer came: it may or may "
							"not have run, and is not tried again because the tool may have side effects");
		ev = json_deep_copy(*result);
		json_object_set_new(ev, "name", json_string(name));
		r = agent_event(s, cmd, "tool.result", ev) ? 1 : -1;
		json_decref(ev);
		return r;
	}
	ev = json_pack("{s:s, s:O}", "name", name, "args", args);
	if (!agent_event(s, cmd, "tool.call", ev))
	{
		json_decref(ev);
		return -1;
	}
	json_decref(ev);
	if (agent_cancelled(s, cmd))	/* flushes: the call is on record before it is made */
		return 0;
	if (s->epoch < 0)
		return -1;

	r = agent_tool(s, name, info, args, result, err, sizeof(err));
	if (r == -ETIMEDOUT && tool_has_side_effects(info))
		*result = json_pack("{s:b, s:s, s:{s:s, s:s}}", "ok", 0, "outcome", "unknown", "error",
							"code", "outcome_unknown", "message",
							psprintf("%s; the call may or may not have run, and is not tried again "
									 "because the tool may have side effects", err));
	else if (r == -EAGAIN || r == -EINTR || r == -ETIMEDOUT)
	{
		ev = json_pack("{s:s, s:s, s:s}", "name", name,
					   "code", r == -ETIMEDOUT ? "outcome_unknown" : "sandbox_unavailable", "message", err);
		if (r == -ETIMEDOUT)
			json_object_set_new(ev, "outcome", json_string("unknown"));
		agent_event(s, cmd, "tool.error", ev);
		json_decref(ev);
		agent_fail(s, cmd, "sandbox_unavailable", err, true);
		return 0;
	}
	if (*result == NULL)
		*result = json_pack("{s:b, s:{s:s}}", "ok", 0, "error", "message", err);
	ev = json_deep_copy(*result);
	json_object_set_new(ev, "name", json_string(name));
	if (!agent_event(s, cmd, "tool.result", ev))
	{
		json_decref(ev);
		return -1;
	}
	json_decref(ev);
	return 1;
}

/* agent_call_args(), with no arguments as {} */
static int
agent_call(CellSession *s, int64 cmd, const char *name, json_t *info, json_t *args, json_t **result)
{
	json_t	   *a = args ? json_incref(args) : http_json_object();
	int			r = agent_call_args(s, cmd, name, info, a, result);

	json_decref(a);
	return r;
}

/* Will the next model step take a while (network, or the builtin's delay)? */
static bool
model_is_slow(const ModelConfig *cfg, json_t *messages)
{
	json_t	   *last = json_array_get(messages, json_array_size(messages) - 1);
	const char *text = json_string_value(json_object_get(last, "content"));

	return (cfg->provider && strcmp(cfg->provider, "builtin") != 0) ||
		(text && strncmp(text, "/sleep ", 7) == 0);
}

/* The builtin model's "/sleep MS" prefix: a slow model step, for tests. */
static void
model_delay(json_t *messages)
{
	json_t	   *last = json_array_get(messages, json_array_size(messages) - 1);
	const char *text = json_string_value(json_object_get(last, "content"));
	long		ms;

	if (text == NULL || strncmp(text, "/sleep ", 7) != 0)
		return;
	ms = strtol(text + 7, NULL, 10);
	if (ms > 0 && ms <= 600000)
	{
		TimestampTz end = GetCurrentTimestamp() + ms * 1000;

		while (GetCurrentTimestamp() < end)
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 Min(Max(1, (end - GetCurrentTimestamp()) / 1000), nadi_lease_ttl_ms / 6 + 1),
							 PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
			cell_keepalive(false);
		}
	}
}

/* The permission decision recorded for a resumed command, or NULL. */
static json_t *
agent_decision(CellSession *s, int64 cmd, json_t **request)
{
	const char *args[2] = {s->id_text, int64_text(cmd)};
	StoreResult r = store_exec("SELECT kind, payload FROM nadi.events WHERE session_id = $1::uuid "
							   "AND command_id = $2::bigint AND kind IN ('permission.requested', 'permission.resolved') "
							   "ORDER BY seq DESC LIMIT 2", 2, args);
	json_t	   *decision = NULL;
	json_t	   *first = json_array_get(r.rows, 0);
	json_t	   *second = json_array_get(r.rows, 1);

	*request = NULL;
	if (first && strcmp(json_string_value(json_object_get(first, "kind")), "permission.resolved") == 0 && second)
	{
		decision = json_incref(json_object_get(first, "payload"));
		*request = json_incref(json_object_get(second, "payload"));
	}
	store_result_free(&r);
	return decision;
}

static bool
needs_permission(CellSession *s, const char *tool)
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

ModelConfig
agent_model_config(void)
{
	ModelConfig cfg = {nadi_model_provider, nadi_model_url, nadi_model_name, nadi_tool_timeout_ms, NULL};

	return cfg;
}

/* Ask the client for permission; the command waits in Postgres. */
static void
agent_converse_park(CellSession *s, int64 cmd, json_t *call)
{
	json_t	   *req = json_pack("{s:O, s:O}", "tool", json_object_get(call, "name"),
								"args", json_object_get(call, "args"));
	char	   *p = json_text(req);
	const char *args[4] = {s->id_text, int64_text(cmd), int64_text(s->epoch), p};

	agent_write(s, "SELECT status FROM nadi.command_await_permission("
				"$1::uuid, $2::bigint, $3::bigint, $4::jsonb)", 4, args);
	free(p);
	json_decref(req);
}

/*
 * Run the model loop of a message command from the conversation as it is:
 * from a pending tool call (approved: the client said yes to it), or from a
 * model step.
 */
static void
agent_converse(CellSession *s, int64 cmd, json_t *pending_call, bool approved)
{
	ModelConfig cfg = agent_model_config();
	json_t	   *call = json_incref(pending_call);

	for (int step = 0; step < nadi_model_max_steps; step++)
	{
		char		err[512] = "";
		json_t	   *reply = NULL;
		json_t	   *calls;
		bool		slow;

		if (call == NULL)
		{
			int			r;

			slow = model_is_slow(&cfg, s->messages);
			if (slow ? agent_cancelled(s, cmd) : agent_cancel_point(s, cmd))
				return;
			model_delay(s->messages);
			if (nadi_proxy_tokens && cfg.provider && strcmp(cfg.provider, "openai") == 0 &&
				(cfg.token = agent_token(s, TOKEN_MODEL, err, sizeof(err))) == NULL)
			{
				agent_fail(s, cmd, "model_error", err, true);
				return;
			}
			r = model_step(&cfg, s->messages, NULL, &reply, err, sizeof(err));
			/* a cancel that came during a slow step stops the command here */
			if (slow && r >= 0 && agent_cancelled(s, cmd))
			{
				json_decref(reply);
				return;
			}
			if (r < 0)
			{
				agent_fail(s, cmd, "model_error", err, r == -EAGAIN);
				return;
			}
			calls = json_object_get(reply, "tool_calls");
			if (json_array_size(calls) == 0)
			{
				json_t	   *result = json_pack("{s:O}", "text", json_object_get(reply, "text"));

				json_object_del(reply, "tool_calls");
				/* a cancel that came during the step discards the reply */
				if (!agent_cancel_point(s, cmd))
				{
					message_add(s, "assistant", json_object_get(reply, "text"), cmd, NULL, NULL);
					agent_complete_with(s, cmd, result, "model.reply", reply);
				}
				json_decref(result);
				json_decref(reply);
				return;
			}
			if (!agent_event(s, cmd, "model.reply", reply))
			{
				json_decref(reply);
				return;
			}
			message_add(s, "assistant", json_object_get(reply, "text"), cmd, "tool_calls", calls);
			call = json_incref(json_array_get(calls, 0));
			json_decref(reply);
			approved = false;
		}

		{
			json_t	   *result = NULL;
			json_t	   *name_j = json_object_get(call, "name");
			json_t	   *args = json_object_get(call, "args");
			json_t	   *info = NULL;
			const char *code = NULL;
			int			r;

			/* the name first: the policy and the URL only ever see a tool the host offers */
			switch (agent_tool_check(s, cmd, name_j, &info, &code, err, sizeof(err)))
			{
				case TOOL_OFFERED:
					break;
				case TOOL_REJECTED:
					/* the model sees the error as the call's result, and goes on */
					result = json_pack("{s:O, s:b, s:{s:s, s:s}}", "name", name_j ? name_j : json_null(),
									   "ok", 0, "error", "code", code, "message", err);
					if (agent_event(s, cmd, "tool.result", result))
						message_add(s, "tool", tool_content(result), cmd, "name", name_j);
					json_decref(result);
					json_decref(call);
					call = NULL;
					if (s->epoch < 0)
						return;
					continue;
				case TOOL_UNKNOWABLE:
					/* the host cannot be asked: a yes or no may still be asked for */
					if (!approved && needs_permission(s, json_string_value(name_j)))
						break;
					if (agent_tool_error(s, cmd, name_j, code, err))
						agent_fail(s, cmd, code, err, true);
					/* fall through */
				case TOOL_LOST:
					json_decref(call);
					return;
			}
			/* the policy names canonical tools: the name is one by now */
			if (!approved && needs_permission(s, json_string_value(name_j)))
			{
				agent_converse_park(s, cmd, call);
				json_decref(info);
				json_decref(call);
				return;			/* parked in Postgres until approve/deny */
			}

			r = agent_call(s, cmd, json_string_value(name_j), info, args, &result);
			json_decref(info);
			if (r <= 0)
			{
				json_decref(result);
				json_decref(call);
				return;
			}
			message_add(s, "tool", tool_content(result), cmd, "name", name_j);
			json_decref(result);
			json_decref(call);
			call = NULL;
			/* a tool call is slow: a cancel asked for meanwhile stops here */
			if (agent_cancelled(s, cmd))
				return;
		}
	}
	agent_fail(s, cmd, "too_many_steps", "the model kept calling tools", false);
}

/* The last conversation entry of a command, or NULL (borrowed reference). */
static json_t *
conversation_last(CellSession *s, int64 cmd)
{
	for (size_t i = json_array_size(s->messages); i > 0; i--)
	{
		json_t	   *m = json_array_get(s->messages, i - 1);

		if (json_integer_value(json_object_get(m, "command_id")) == cmd)
			return m;
	}
	return NULL;
}

/*
 * A message command, fresh or resumed: after a permission decision, or a
 * retry after the sandbox host was unreachable, it goes on from where its
 * conversation stopped rather than starting over.
 */
static void
agent_message(CellSession *s, int64 cmd, json_t *payload)
{
	json_t	   *request = NULL;
	json_t	   *last = conversation_last(s, cmd);
	/* only a command that ran before can have waited for a decision */
	json_t	   *decision = last ? agent_decision(s, cmd, &request) : NULL;
	const char *role = last ? json_string_value(json_object_get(last, "role")) : NULL;
	json_t	   *calls = last ? json_object_get(last, "tool_calls") : NULL;
	bool		pending = role && strcmp(role, "assistant") == 0 && json_array_size(calls) > 0;
	const char *verdict = decision ? json_string_value(json_object_get(decision, "decision")) : NULL;

	if (last == NULL)
	{
		/* a fresh message: the user's turn enters the conversation */
		message_add(s, "user", json_object_get(payload, "text"), cmd, NULL, NULL);
		agent_converse(s, cmd, NULL, false);
	}
	else if (pending && verdict && strcmp(verdict, "denied") == 0)
	{
		message_add(s, "denied", json_object_get(decision, "reason"), cmd,
					"name", json_object_get(request, "tool"));
		agent_converse(s, cmd, NULL, false);
	}
	else if (pending)
		/* no decision yet: agent_converse asks again if the policy wants one */
		agent_converse(s, cmd, json_array_get(calls, 0), verdict && strcmp(verdict, "approved") == 0);
	else
		agent_converse(s, cmd, NULL, false);
	json_decref(decision);
	json_decref(request);
}

/*
 * Why a direct tool command failed, from the tool's answer: the code says
 * whether it hit its time limit, ran out of memory, or its outcome is
 * unknown, and the answer's flags and exit status come along.
 */
static json_t *
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
	for (int i = 0; i < lengthof(flags); i++)
		if (json_object_get(result, flags[i]))
			json_object_set(e, flags[i], json_object_get(result, flags[i]));
	if (error)
		json_object_set(e, "detail", error);
	return e;
}

/*
 * Run a command this cell has just claimed (row: command_id, type, payload).
 */
void
agent_run_claimed(CellSession *s, json_t *row)
{
	int64		cmd = json_integer_value(json_object_get(row, "command_id"));
	const char *type = json_string_value(json_object_get(row, "type"));
	json_t	   *payload = json_object_get(row, "payload");

	s->last_active = GetCurrentTimestamp();
	if (strcmp(type, "tool") == 0)
	{
		json_t	   *result = NULL;
		json_t	   *args_j = json_object_get(payload, "args");
		json_t	   *name_j = json_object_get(payload, "name");
		json_t	   *info = NULL;
		const char *code = NULL;
		char		err[512];

		switch (agent_tool_check(s, cmd, name_j, &info, &code, err, sizeof(err)))
		{
			case TOOL_OFFERED:
				if (agent_call(s, cmd, json_string_value(name_j), info, args_j, &result) > 0)
				{
					if (json_is_true(json_object_get(result, "ok")) || json_object_get(result, "ok") == NULL)
						agent_complete(s, cmd, result);
					else
					{
						json_t	   *e = tool_failure(result);

						agent_fail_with(s, cmd, e, false);
						json_decref(e);
					}
				}
				break;
			case TOOL_REJECTED:
				agent_fail(s, cmd, code, err, false);
				break;
			case TOOL_UNKNOWABLE:
				if (agent_tool_error(s, cmd, name_j, code, err))
					agent_fail(s, cmd, code, err, true);
				break;
			case TOOL_LOST:
				break;
		}
		json_decref(info);
		json_decref(result);
	}
	else if (strcmp(type, "message") == 0)
		agent_message(s, cmd, payload);
	else
		agent_fail(s, cmd, "unknown_type", "the cell does not know this command type", false);
}

/*
 * Claim the next command of a session and run it, unbatched.  Returns true
 * if there was one.
 */
bool
agent_run_one(CellSession *s)
{
	const char *args[2] = {s->id_text, int64_text(s->epoch)};
	StoreResult r = store_exec("SELECT command_id, type, payload FROM nadi.command_claim($1::uuid, $2::bigint)",
							   2, args);
	json_t	   *row = json_array_get(r.rows, 0);
	bool		found = r.sqlerrcode == 0 && row != NULL;

	if (store_is(&r, NA_FENCED))
		s->epoch = -1;			/* lost: the caller drops the session */
	if (found)
		agent_run_claimed(s, row);
	store_result_free(&r);
	return found;
}
