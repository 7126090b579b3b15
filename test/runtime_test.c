/*
 * runtime_test.c — the agent runtime (bgworkers/runtime*.c, model_client.c,
 * http_client.c) without PostgreSQL: it compiles and links with no
 * PostgreSQL header or library (`make runtime-check`, a prerequisite of
 * installcheck), and this driver plays store, model provider and sandbox
 * host by hand, checking the needs the runtime returns, in order.
 *
 * Prints one line per failure and a final "N passed, M failed"; exits
 * non-zero when anything failed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "../bgworkers/runtime_int.h"

static Runtime rt;
static int	logged;

static void
test_log(void *arg, RtLogLevel level, const char *msg)
{
	logged++;
}

static void
session(RtSession *s, const char *policy)
{
	json_error_t jerr;
	json_t	   *p = policy ? json_loads(policy, 0, &jerr) : NULL;

	runtime_session_init(s, "00000000-0000-0000-0000-000000000001", 7, NULL, p, "http://sandbox.test");
	json_decref(p);
}

static json_t *
claimed(long long id, const char *type, const char *payload)
{
	json_error_t jerr;

	return json_pack("{s:I, s:s, s:o}", "command_id", (json_int_t) id, "type", type,
					 "payload", json_loads(payload, 0, &jerr));
}

/* A session that has just claimed a command: the first need. */
static RtNeed *
begin(RtSession *s, const char *policy, long long id, const char *type, const char *payload)
{
	json_t	   *row = claimed(id, type, payload);
	RtNeed	   *n;

	session(s, policy);
	n = runtime_start(&rt, s, row);
	json_decref(row);			/* what the runtime keeps, it holds a reference to */
	return n;
}

/* The store's answer: every statement ran; the read returns row (or no row). */
static RtNeed *
store_answer(RtSession *s, RtNeed *n, json_t *row)
{
	for (int g = 0; g < n->ngroups; g++)
	{
		n->groups[g].results = json_array();
		for (size_t i = 0; i < json_array_size(n->groups[g].stmts); i++)
			json_array_append_new(n->groups[g].results,
								  g == n->read && row ? json_pack("[O]", row) : json_array());
	}
	json_decref(row);
	return runtime_on_store(&rt, s);
}

static RtNeed *
http_answer(RtSession *s, RtNeed *n, int rc, long status, const char *body)
{
	HttpReply	r = {0};
	json_error_t jerr;
	RtNeed	   *next;

	r.rc = rc;
	r.status = status;
	r.body = body ? json_loads(body, 0, &jerr) : NULL;
	if (rc < 0)
		snprintf(r.error, sizeof(r.error), "no answer");
	next = n->kind == RT_NEED_MODEL ? runtime_on_model_reply(&rt, s, &r) : runtime_on_tool_result(&rt, s, &r);
	http_reply_clear(&r);
	return next;
}

/* Does a queued write (or a flushed group) call fn, with text in its arguments? */
static int
wrote(json_t *stmts, const char *fn, const char *text)
{
	size_t		i;
	json_t	   *st;

	json_array_foreach(stmts, i, st)
	{
		char	   *args = json_dumps(json_array_get(st, 1), JSON_COMPACT);
		int			hit = strstr(json_string_value(json_array_get(st, 0)), fn) != NULL &&
			(text == NULL || (args && strstr(args, text) != NULL));

		free(args);
		if (hit)
			return 1;
	}
	return 0;
}

static int
stmt_has(RtNeed *n, int group, const char *fn)
{
	return group >= 0 && wrote(n->groups[group].stmts, fn, NULL);
}

static void
test_sleep_is_a_timer(bool cancel)
{
	RtSession	s;
	RtNeed	   *n = begin(&s, NULL, 2, "message", "{\"text\": \"/sleep 50 slow\"}");

	/* slow: written so far is made durable, and a cancel looked for */
	CHECK(n->kind == RT_NEED_STORE && stmt_has(n, n->read, "cancel_requested"));
	CHECK(n->flush < 0);		/* the user's turn writes nothing */
	n = store_answer(&s, n, json_pack("{s:b}", "cancel_requested", cancel));
	if (cancel)
	{
		CHECK(n->kind == RT_NEED_NONE);
		CHECK(wrote(s.pending, "command_fail", "cancelled"));
		CHECK(!wrote(s.pending, "command_complete", NULL));
	}
	else
	{
		CHECK(n->kind == RT_NEED_TIMER && n->timer_ms == 50);
		n = runtime_on_timer(&rt, &s);
		CHECK(n->kind == RT_NEED_STORE && stmt_has(n, n->read, "cancel_requested"));
		n = store_answer(&s, n, json_pack("{s:b}", "cancel_requested", 0));
		CHECK(n->kind == RT_NEED_NONE);
		CHECK(wrote(s.pending, "command_complete", "You said: /sleep 50 slow"));
	}
	runtime_session_free(&s);
}

static void
test_tool_command(void)
{
	RtSession	s;
	json_t	   *row;
	RtNeed	   *n = begin(&s, NULL, 3, "tool", "{\"name\": \"echo\", \"args\": {\"text\": \"hi\"}}");

	/* the sandbox host's token first, then its list of tools */
	CHECK(n->kind == RT_NEED_STORE && stmt_has(n, n->read, "nadi.sandboxd_token"));
	n = store_answer(&s, n, json_pack("{s:s}", "token", "tok-1"));
	CHECK(n->kind == RT_NEED_TOOL && strcmp(n->http.method, "GET") == 0);
	CHECK(n->http.url && strcmp(n->http.url, "http://sandbox.test/v1/tools") == 0);
	CHECK(n->http.bearer && strcmp(n->http.bearer, "tok-1") == 0);
	n = http_answer(&s, n, 0, 200, "{\"tools\": [{\"name\": \"echo\", \"side_effects\": false}, \"Bad\"]}");
	/* no side effects: no look for a cut-short call; tool.call made durable with the cancel check */
	CHECK(n->kind == RT_NEED_STORE && stmt_has(n, n->flush, "event_append"));
	CHECK(n->flush >= 0 && wrote(n->groups[n->flush].stmts, "event_append", "tool.call"));
	n = store_answer(&s, n, json_pack("{s:b}", "cancel_requested", 0));
	CHECK(n->kind == RT_NEED_TOOL && strcmp(n->http.url, "http://sandbox.test/v1/sandboxes") == 0);
	n = http_answer(&s, n, 0, 201, "{\"id\": \"sbx-1\"}");
	CHECK(strcmp(s.sandbox_id, "sbx-1") == 0);
	CHECK(n->kind == RT_NEED_TOOL && strcmp(n->http.url, "http://sandbox.test/v1/sandboxes/sbx-1/tools/echo") == 0);
	CHECK(n->http.timeout_ms >= rt.cfg.tool_timeout_ms);
	n = http_answer(&s, n, 0, 200, "{\"ok\": true, \"stdout\": \"hi\"}");
	CHECK(n->kind == RT_NEED_NONE);
	CHECK(wrote(s.pending, "event_append", "tool.result"));
	CHECK(wrote(s.pending, "command_complete", NULL));

	/* a second call: the list and the token are cached, the sandbox is there */
	row = claimed(4, "tool", "{\"name\": \"echo\", \"args\": {}}");
	json_decref(s.pending);
	s.pending = NULL;
	n = runtime_start(&rt, &s, row);
	CHECK(n->kind == RT_NEED_STORE && stmt_has(n, n->read, "cancel_requested"));
	n = store_answer(&s, n, NULL);
	CHECK(n->kind == RT_NEED_TOOL && strstr(n->http.url, "/tools/echo") != NULL);
	/* sent, no answer: echo has no side effects, so the command is retried */
	n = http_answer(&s, n, -ETIMEDOUT, 0, NULL);
	CHECK(n->kind == RT_NEED_NONE);
	CHECK(wrote(s.pending, "event_append", "outcome_unknown"));
	CHECK(wrote(s.pending, "command_fail", "sandbox_unavailable"));
	json_decref(row);
	runtime_session_free(&s);
}

/*
 * A forked session (its replayed state has fork.workspace): its sandbox is
 * made "from" that snapshot; a fork without a workspace, or a malformed
 * one, makes a sandbox as any other.
 */
static void
fork_sandbox(const char *state, const char *from)
{
	RtSession	s;
	json_error_t jerr;
	json_t	   *st = json_loads(state, 0, &jerr);
	json_t	   *want = from ? json_loads(from, 0, &jerr) : NULL;
	json_t	   *row = claimed(6, "tool", "{\"name\": \"echo\", \"args\": {}}");
	RtNeed	   *n;

	session(&s, NULL);
	runtime_session_fork(&s, st);
	n = runtime_start(&rt, &s, row);
	/* the token, the list of tools and the durable tool.call (some cached already) */
	for (int i = 0; i < 6 && !(n->kind == RT_NEED_TOOL && strcmp(n->http.method, "POST") == 0); i++)
	{
		if (n->kind == RT_NEED_STORE && stmt_has(n, n->read, "nadi.sandboxd_token"))
			n = store_answer(&s, n, json_pack("{s:s}", "token", "tok-f"));
		else if (n->kind == RT_NEED_STORE)
			n = store_answer(&s, n, json_pack("{s:b}", "cancel_requested", 0));
		else if (n->kind == RT_NEED_TOOL)
			n = http_answer(&s, n, 0, 200, "{\"tools\": [{\"name\": \"echo\", \"side_effects\": false}]}");
		else
			break;
	}
	CHECK(n->kind == RT_NEED_TOOL && strcmp(n->http.url, "http://sandbox.test/v1/sandboxes") == 0);
	CHECK(n->http.body != NULL);
	if (want)
		CHECK(json_equal(json_object_get(n->http.body, "from"), want));
	else
		CHECK(json_object_get(n->http.body, "from") == NULL);
	json_decref(row);
	json_decref(st);
	json_decref(want);
	runtime_session_free(&s);
}

static void
test_fork_sandbox(void)
{
	fork_sandbox("{\"messages\": [], \"fork\": {\"parent_session_id\": \"p\", \"at_seq\": 4, \"seq\": 4, "
				 "\"workspace\": {\"host_id\": \"sbx-a\", \"sandbox_id\": \"0123456789abcdef0123\", "
				 "\"snapshot\": \"ws-2\"}}}",
				 "{\"host_id\": \"sbx-a\", \"sandbox_id\": \"0123456789abcdef0123\", \"snapshot\": \"ws-2\"}");
	fork_sandbox("{\"fork\": {\"workspace\": {\"host_id\": null, \"sandbox_id\": \"0123456789abcdef0123\", "
				 "\"snapshot\": \"ws-0\"}}}",
				 "{\"sandbox_id\": \"0123456789abcdef0123\", \"snapshot\": \"ws-0\"}");
	fork_sandbox("{\"fork\": {\"parent_session_id\": \"p\", \"workspace\": null}}", NULL);
	fork_sandbox("{\"fork\": null}", NULL);
	fork_sandbox("{\"fork\": {\"workspace\": {\"sandbox_id\": 5, \"snapshot\": \"ws-0\"}}}", NULL);
}

/*
 * A command that needs nothing (every step instant): it ends at once with
 * the two writes named (function, text in its arguments) queued.
 */
static void
instant(const char *type, const char *payload, const char *policy,
		const char *fn1, const char *text1, const char *fn2, const char *text2, int line)
{
	RtSession	s;
	RtNeed	   *n = begin(&s, policy, 5, type, payload);

	check(n->kind == RT_NEED_NONE, "nothing asked of anyone", __FILE__, line);
	check(wrote(s.pending, fn1, text1), fn1, __FILE__, line);
	check(wrote(s.pending, fn2, text2), fn2, __FILE__, line);
	runtime_session_free(&s);
}

static void
test_instant(void)
{
	/* the builtin model answers at once: the reply rides on the completion */
	instant("message", "{\"text\": \"hello\"}", NULL,
			"command_complete", "You said: hello", "command_complete", "model.reply", __LINE__);
	/* a hostile name: refused before the policy or a URL sees it */
	instant("tool", "{\"name\": \"x/../exec\", \"args\": {}}", "{\"require_approval\": [\"exec\"]}",
			"event_append", "invalid_tool_name", "command_fail", "invalid_tool_name", __LINE__);
	/* approval: parked (the host's list is still cached from test_tool_command) */
	instant("message", "{\"text\": \"/tool echo {}\"}", "{\"require_approval\": [\"*\"]}",
			"event_append", "model.reply", "command_await_permission", "echo", __LINE__);
	instant("launch", "{}", NULL, "command_fail", "unknown_type", "command_fail", "false", __LINE__);
}

static void
test_lost_lease(void)
{
	RtSession	s;
	json_t	   *row = claimed(7, "message", "{\"text\": \"/sleep 10 x\"}");
	RtNeed	   *n;

	session(&s, NULL);
	s.pending = json_pack("[[s, []]]", "SELECT 1");
	n = runtime_start(&rt, &s, row);
	CHECK(n->kind == RT_NEED_STORE && n->flush >= 0);
	snprintf(n->groups[n->flush].sqlstate, sizeof(n->groups[n->flush].sqlstate), "%s", NA_FENCED);
	n = store_answer(&s, n, NULL);
	CHECK(n->kind == RT_NEED_NONE);
	CHECK(s.epoch < 0);
	CHECK(s.pending == NULL || json_array_size(s.pending) == 0);	/* nothing more written */
	json_decref(row);
	runtime_session_free(&s);
}

static void
test_helpers(void)
{
	json_error_t jerr;
	json_t	   *info = json_loads("{\"timeout_ms\": 1500}", 0, &jerr);
	json_t	   *args = json_loads("{\"timeout\": 3}", 0, &jerr);
	json_t	   *none = json_loads("{}", 0, &jerr);

	CHECK(tool_name_valid("exec"));
	CHECK(tool_name_valid("git_clone2"));
	CHECK(!tool_name_valid("Exec"));
	CHECK(!tool_name_valid("x/../exec"));
	CHECK(!tool_name_valid(""));
	CHECK(!tool_name_valid(NULL));
	CHECK(!tool_name_valid("a234567890123456789012345678901234567890123456789012345678901234x"));
	CHECK(tool_wait_ms(info, none, 500) == 11500);
	CHECK(tool_wait_ms(info, args, 500) == 13000);
	CHECK(tool_wait_ms(none, none, 30000) == 40000);
	CHECK(tool_has_side_effects(none));
	json_decref(info);
	json_decref(args);
	json_decref(none);
}

/* The blocking HTTP client's failures, without a server. */
static void
test_http(void)
{
	HttpRequest req = {0};
	HttpReply	reply;

	CHECK(http_request_set(&req, "GET", "http://127.0.0.1:1/v1/tools", "t", NULL, 2000, 1024) == 0);
	http_perform(&req, &reply);
	CHECK(reply.rc == -ECONNREFUSED);	/* nothing reached a server: safe to retry */
	CHECK(strstr(reply.error, "127.0.0.1:1") != NULL);
	http_reply_clear(&reply);
	CHECK(http_request_set(&req, "GET", "unix:no-separator", NULL, NULL, 2000, 1024) == 0);
	http_perform(&req, &reply);
	CHECK(reply.rc == -EINVAL);
	http_reply_clear(&reply);
	http_request_clear(&req);
}

int
main(void)
{
	runtime_init(&rt);
	rt.cfg.sandboxd_url = "http://default.test";
	rt.cfg.sandbox_image = "busybox";
	rt.cfg.tool_timeout_ms = 500;
	rt.cfg.model.provider = "builtin";
	rt.cfg.model.timeout_ms = 500;
	rt.cfg.model_max_steps = 8;
	rt.cfg.proxy_tokens = false;
	rt.cfg.log = test_log;

	test_helpers();
	test_http();
	test_sleep_is_a_timer(false);
	test_sleep_is_a_timer(true);
	test_tool_command();
	test_fork_sandbox();
	test_instant();
	test_lost_lease();
	return check_summary();
}
