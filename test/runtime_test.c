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

/* Index of the first queued write that calls fn with text in its arguments, or -1. */
static int
wrote_at(json_t *stmts, const char *fn, const char *text)
{
	for (size_t i = 0; i < json_array_size(stmts); i++)
	{
		json_t	   *one = json_pack("[O]", json_array_get(stmts, i));
		int			hit = wrote(one, fn, text);

		json_decref(one);
		if (hit)
			return (int) i;
	}
	return -1;
}

static void
output(RtSession *s, const char *stream, const char *data, long long offset, bool cut)
{
	json_t	   *o = json_pack("{s:s, s:s, s:I}", "stream", stream, "data", data, "offset", (json_int_t) offset);

	if (cut)
		json_object_set_new(o, "truncated", json_true());
	runtime_tool_output(&rt, s, o);
	json_decref(o);
}

/*
 * tool.output: a streamed call's output is kept while the call is out, one
 * event per stream, capped; taken as statements, and what is left goes
 * before the tool.result.
 */
static void
test_tool_output(void)
{
	RtSession	s;
	json_t	   *stmts;
	char	   *big = malloc(70001);
	RtNeed	   *n;

	/* a host whose list is not cached yet (the last test: the others use the cache) */
	for (int i = 0; i < TOOLS_CACHE_SLOTS; i++)
		json_decref(rt.tools[i].tools);
	memset(rt.tools, 0, sizeof(rt.tools));
	n = begin(&s, NULL, 9, "tool", "{\"name\": \"exec\", \"args\": {\"argv\": [\"x\"]}}");

	n = store_answer(&s, n, json_pack("{s:s}", "token", "tok-1"));
	n = http_answer(&s, n, 0, 200, "{\"tools\": [{\"name\": \"exec\", \"side_effects\": false}]}");
	n = store_answer(&s, n, json_pack("{s:b}", "cancel_requested", 0));
	n = http_answer(&s, n, 0, 201, "{\"id\": \"sbx-9\"}");
	CHECK(n->kind == RT_NEED_TOOL && strstr(n->http.url, "/tools/exec") != NULL);
	CHECK(n->http.stream);
	CHECK(runtime_output_due(&s) == 0);
	output(&s, "stdout", "ab", 0, false);
	output(&s, "stdout", "cd", 2, false);
	CHECK(runtime_output_due(&s) > 0 && runtime_output_due(&s) <= rt_now_us());
	stmts = runtime_output_take(&s);
	CHECK(json_array_size(stmts) == 1 && wrote(stmts, "event_append", "tool.output"));
	CHECK(wrote(stmts, "event_append", "\\\"data\\\":\\\"abcd\\\"") && wrote(stmts, "event_append", "\\\"name\\\":\\\"exec\\\""));
	json_decref(stmts);
	CHECK(runtime_output_due(&s) == 0);
	/* the next ones wait RT_OUTPUT_EVERY_US */
	output(&s, "stdout", "ef", 4, false);
	output(&s, "stderr", "x", 0, false);
	CHECK(runtime_output_due(&s) > rt_now_us());
	memset(big, 'a', 70000);
	big[70000] = '\0';
	output(&s, "stdout", big, 6, false);
	output(&s, "stdout", "never", 70006, false);
	CHECK(s.cmd.out_cut && s.cmd.out_bytes == RT_OUTPUT_MAX);
	stmts = runtime_output_take(&s);
	/* ef and the capped rest are one event (contiguous), the stderr one another */
	CHECK(json_array_size(stmts) == 3 || json_array_size(stmts) == 2);
	CHECK(wrote(stmts, "event_append", "\\\"truncated\\\":true") && !wrote(stmts, "event_append", "never"));
	json_decref(stmts);
	/* what is left when the answer comes goes before the tool.result */
	s.cmd.out_cut = false;
	output(&s, "stderr", "tail", 1, false);
	n = http_answer(&s, n, 0, 200, "{\"ok\": true, \"stdout\": \"abcdef\"}");
	CHECK(n->kind == RT_NEED_NONE);
	CHECK(wrote_at(s.pending, "event_append", "tool.output") >= 0 &&
		  wrote_at(s.pending, "event_append", "tool.output") < wrote_at(s.pending, "event_append", "tool.result"));
	/* no call out: output is not taken */
	output(&s, "stdout", "late", 0, false);
	CHECK(runtime_output_due(&s) == 0);
	free(big);
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

/* Where a queued write calling fn sits in s->pending (-1: none). */
static int
pending_at(RtSession *s, const char *fn)
{
	for (size_t i = 0; i < json_array_size(s->pending); i++)
		if (strstr(json_string_value(json_array_get(json_array_get(s->pending, i), 0)), fn))
			return (int) i;
	return -1;
}

/*
 * A message rolled back by a newer one (on_message_while_running =
 * rollback): the cancel check reads the rollback with the cancel; the turn
 * leaves the conversation (an earlier command's stays), the sandbox host is
 * asked to restore the snapshot named (answering status; 0: the payload
 * names none), workspace.restore is recorded before the command fails as
 * cancelled.  resumed: the message ran before (its turn is in the
 * conversation), and is checked for a cancel before anything else.
 */
static void
test_rollback(long status, bool resumed)
{
	RtSession	s;
	json_error_t jerr;
	json_t	   *conv = json_loads(resumed ?
								  "[{\"role\": \"user\", \"content\": \"before\", \"command_id\": 1},"
								  " {\"role\": \"user\", \"content\": \"/tool exec {}\", \"command_id\": 2}]" :
								  "[{\"role\": \"user\", \"content\": \"before\", \"command_id\": 1}]", 0, &jerr);
	json_t	   *row = claimed(2, "message", resumed ? "{\"text\": \"/tool exec {}\"}" : "{\"text\": \"/sleep 50 slow\"}");
	json_t	   *rb = json_loads(status ? "{\"command_id\": 2, \"workspace\": {\"host_id\": null, "
								"\"sandbox_id\": \"sbx-1\", \"snapshot\": \"ws-1\"}}" : "{\"command_id\": 2}", 0, &jerr);
	RtNeed	   *n;
	int			before = logged;

	runtime_session_init(&s, "00000000-0000-0000-0000-000000000001", 7, conv, NULL, "http://sandbox.test");
	n = runtime_start(&rt, &s, row);
	CHECK(n->kind == RT_NEED_STORE && stmt_has(n, n->read, "cancel_requested") &&
		  stmt_has(n, n->read, "command.rolled_back"));
	CHECK(json_array_size(s.messages) == 2);
	n = store_answer(&s, n, json_pack("{s:b, s:O}", "cancel_requested", 1, "rolled_back", rb));
	CHECK(json_array_size(s.messages) == 1);
	CHECK(json_integer_value(json_object_get(json_array_get(s.messages, 0), "command_id")) == 1);
	if (status)
	{
		CHECK(n->kind == RT_NEED_STORE && stmt_has(n, n->read, "nadi.sandboxd_token"));
		n = store_answer(&s, n, json_pack("{s:s}", "token", "tok-1"));
		CHECK(n->kind == RT_NEED_TOOL && strcmp(n->http.method, "POST") == 0);
		CHECK(n->http.url && strcmp(n->http.url, "http://sandbox.test/v1/sandboxes/sbx-1/restore") == 0);
		CHECK(n->http.bearer && strcmp(n->http.bearer, "tok-1") == 0);
		CHECK(json_is_object(n->http.body) && json_object_size(n->http.body) == 1 &&
			  strcmp(json_string_value(json_object_get(n->http.body, "snapshot")) ?: "", "ws-1") == 0);
		CHECK(pending_at(&s, "command_fail") < 0);	/* nothing ends before the restore */
		n = http_answer(&s, n, 0, status, status == 200 ? "{}" : "{\"detail\": \"no such snapshot\"}");
		CHECK(wrote(s.pending, "event_append", "workspace.restore"));
		CHECK(wrote(s.pending, "event_append", status == 200 ? "\\\"ok\\\":true" : "no such snapshot"));
		CHECK(pending_at(&s, "event_append") >= 0 && pending_at(&s, "event_append") < pending_at(&s, "command_fail"));
		CHECK((logged > before) == (status != 200));
	}
	else
		CHECK(!wrote(s.pending, "event_append", "workspace.restore"));
	CHECK(n->kind == RT_NEED_NONE);
	CHECK(wrote(s.pending, "command_fail", "cancelled"));
	CHECK(!wrote(s.pending, "command_complete", NULL));
	json_decref(rb);
	json_decref(row);
	json_decref(conv);
	runtime_session_free(&s);
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
	test_tool_output();
	test_rollback(200, false);
	test_rollback(404, false);
	test_rollback(0, false);
	test_rollback(200, true);
	return check_summary();
}
