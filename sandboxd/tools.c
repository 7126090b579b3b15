/*
 * tools.c — the tools a sandbox offers.  echo, uppercase, exec and
 * git_clone run as a command in the sandbox's container; list_files,
 * read_file, write_file and edit_file work on the workspace from the host
 * (fsops.c), without a container.  Arguments are checked strictly: unknown
 * keys and wrong types are refused with a 400 naming the argument.  A call's
 * proxy token (api.c) reaches the environment of exec and git_clone only,
 * and is never stored or logged.
 *
 * Every answer has the same shape: ok, exit_status, signal, stdout, stderr,
 * truncated, timed_out, oom_killed, duration_ms, cold, result, and error
 * when the command could not run or finish.
 */
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

#include "fsops.h"
#include "http.h"
#include "limits.h"
#include "metrics.h"
#include "sandbox.h"
#include "btrfs_store.h"
#include "tools.h"
#include "workspace.h"

#define MAX_LIST_ENTRIES 10000

enum kind
{
	T_ECHO,
	T_UPPERCASE,
	T_EXEC,
	T_GIT_CLONE
};

struct tool_call
{
	struct sbx_call		call;
	struct http_req	   *req;
	const char		   *tool;
	enum kind			kind;
	char			   *repo, *path, *branch; /* git_clone */
	bool				stream;				  /* the caller takes NDJSON (tools_call_streamed) */
	struct http_stream *st;					  /* the NDJSON answer, once output came */
};

static bool want_stream; /* set around tools_call_streamed's call of tools_call */

static const char *const known[] = {"echo",		 "uppercase",  "list_files", "exec",
									"read_file", "write_file", "edit_file",	 "git_clone"};

static bool
tools_known(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(known); i++)
		if (strcmp(known[i], name) == 0)
			return true;
	return false;
}

/* Whether a call of tool may change the sandbox (and so gets a workspace snapshot). */
static bool
side_effects(const char *tool)
{
	return strcmp(tool, "exec") == 0 || strcmp(tool, "git_clone") == 0 ||
		   strcmp(tool, "write_file") == 0 || strcmp(tool, "edit_file") == 0;
}

/* The result j gets the "workspace" object when the call left a new snapshot. */
static json_t *
with_workspace(json_t *j, struct sbx_sandbox *sb, const char *tool)
{
	json_t *ws = ws_after_call(sb, side_effects(tool));

	if (ws && j)
		json_object_set_new(j, "workspace", ws);
	else
		json_decref(ws);
	return j;
}

/*
 * What a caller needs to know to call a tool and wait for it: the limit a
 * call gets unless it asks for another (timeout_max_ms: the most it may ask
 * for, when it may ask at all), whether a call changes the sandbox, so
 * that a caller never repeats one blindly after an unknown outcome, and
 * whether it streams its output (streams: true).
 */
json_t *
tools_list_json(void)
{
	json_t *a = json_array();

	for (size_t i = 0; i < ARRAY_SIZE(known); i++)
	{
		const char *n = known[i];
		bool		exec = strcmp(n, "exec") == 0 || strcmp(n, "git_clone") == 0;
		json_t	   *t = json_pack("{s:s, s:I, s:b}", "name", n, "timeout_ms",
								  (json_int_t) cfg.call_timeout_ms, "side_effects", side_effects(n));

		if (exec)
			json_object_set_new(t, "timeout_max_ms",
								json_integer((json_int_t) cfg.call_timeout_max_ms));
		/* its output while it runs, to a caller that accepts NDJSON (tools_call_streamed) */
		if (strcmp(n, "exec") == 0)
			json_object_set_new(t, "streams", json_true());
		json_array_append_new(a, t);
	}
	return a;
}

/* ---- encodings ------------------------------------------------------------- */

/*
 * Copy s, replacing every invalid UTF-8 sequence, and every NUL (which no
 * PostgreSQL text or jsonb value can hold), by U+FFFD.
 */
static char *
utf8_sanitize(const char *s, size_t len, size_t *out_len, bool *lossy)
{
	const unsigned char *p = (const unsigned char *) s, *end = p + len;
	char				*out = malloc(len * 3 + 1), *o = out;

	if (!out)
		return NULL;
	*lossy = false;
	while (p < end)
	{
		unsigned c = *p;
		size_t	 n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
		bool	 ok = n > 0 && c != 0 && (size_t) (end - p) >= n;
		uint32_t cp = n == 1 ? c : n == 2 ? c & 0x1f : n == 3 ? c & 0x0f : c & 0x07;

		for (size_t i = 1; ok && i < n; i++)
		{
			ok = (p[i] & 0xc0) == 0x80;
			cp = cp << 6 | (p[i] & 0x3f);
		}
		if (ok && ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) ||
				   (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) || (cp >= 0xd800 && cp <= 0xdfff)))
			ok = false;
		if (!ok)
		{
			memcpy(o, "\xef\xbf\xbd", 3);
			o += 3;
			p++;
			*lossy = true;
			continue;
		}
		memcpy(o, p, n);
		o += n;
		p += n;
	}
	*o = '\0';
	*out_len = (size_t) (o - out);
	return out;
}

static json_t *
text_json(const char *s, size_t len, bool *lossy)
{
	size_t				   n = 0;
	bool				   l = false;
	_cleanup_(freep) char *clean = utf8_sanitize(s ? s : "", s ? len : 0, &n, &l);

	if (lossy)
		*lossy = l;
	return clean ? json_stringn(clean, n) : json_string("");
}

static char *
base64_encode(const char *data, size_t len)
{
	char *out = malloc(4 * ((len + 2) / 3) + 1);

	if (out)
		EVP_EncodeBlock((unsigned char *) out, (const unsigned char *) data, (int) len);
	return out;
}

static int
base64_decode(const char *in, size_t len, char **out, size_t *out_len)
{
	char *buf;
	int	  n;

	if (len % 4 != 0 || len > INT32_MAX)
		return -EINVAL;
	buf = malloc(len / 4 * 3 + 1);
	if (!buf)
		return -ENOMEM;
	n = EVP_DecodeBlock((unsigned char *) buf, (const unsigned char *) in, (int) len);
	if (n < 0)
	{
		free(buf);
		return -EINVAL;
	}
	/* EVP_DecodeBlock counts padding as data. */
	if (len >= 1 && in[len - 1] == '=')
		n--;
	if (len >= 2 && in[len - 2] == '=')
		n--;
	*out = buf;
	*out_len = (size_t) n;
	return 0;
}

/* ---- argument checking ----------------------------------------------------- */

/* Refuse keys outside allowed; answers the request itself. */
static bool
check_keys(struct http_req *r, const char *tool, json_t *args, const char *const allowed[])
{
	const char *key;
	json_t	   *v;

	json_object_foreach(args, key, v)
	{
		bool ok = false;
		for (size_t i = 0; allowed[i]; i++)
			ok |= strcmp(allowed[i], key) == 0;
		if (!ok)
		{
			http_reply_problem(r, 400, "invalid_args", "%s: unknown argument \"%s\"", tool, key);
			return false;
		}
	}
	return true;
}

static const char *
arg_string(struct http_req *r, const char *tool, json_t *args, const char *key, bool required,
		   size_t *len)
{
	json_t *v = json_object_get(args, key);

	if (!v)
	{
		if (required)
			http_reply_problem(r, 400, "invalid_args", "%s: argument \"%s\" is required", tool,
							   key);
		return NULL;
	}
	if (!json_is_string(v))
	{
		http_reply_problem(r, 400, "invalid_args", "%s: argument \"%s\" must be a string", tool,
						   key);
		return NULL;
	}
	if (len)
		*len = json_string_length(v);
	return json_string_value(v);
}

/* -1: answered with an error; 0: absent; 1: *out set. */
static int
arg_bool(struct http_req *r, const char *tool, json_t *args, const char *key, bool *out)
{
	json_t *v = json_object_get(args, key);

	if (!v)
		return 0;
	if (!json_is_boolean(v))
	{
		http_reply_problem(r, 400, "invalid_args", "%s: argument \"%s\" must be true or false",
						   tool, key);
		return -1;
	}
	*out = json_is_true(v);
	return 1;
}

static int
arg_uint(struct http_req *r, const char *tool, json_t *args, const char *key, uint64_t max,
		 uint64_t *out)
{
	json_t *v = json_object_get(args, key);

	if (!v)
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < 1 || (uint64_t) json_integer_value(v) > max)
	{
		http_reply_problem(r, 400, "invalid_args",
						   "%s: argument \"%s\" must be an integer from 1 to %llu", tool, key,
						   (unsigned long long) max);
		return -1;
	}
	*out = (uint64_t) json_integer_value(v);
	return 1;
}

/* ---- answers --------------------------------------------------------------- */

static json_t *
answer(bool ok, const struct sbx_result *res, bool cold, uint64_t us, json_t *result)
{
	json_t *j = json_object();

	json_object_set_new(j, "ok", json_boolean(ok));
	json_object_set_new(j, "exit_status",
						res && res->exited ? json_integer(res->exit_status)
										   : (res ? json_null() : json_integer(0)));
	json_object_set_new(j, "signal", res && res->signal ? json_integer(res->signal) : json_null());
	json_object_set_new(j, "stdout",
						res ? text_json(res->out, res->out_len, NULL) : json_string(""));
	json_object_set_new(j, "stderr",
						res ? text_json(res->err, res->err_len, NULL) : json_string(""));
	json_object_set_new(j, "truncated",
						json_boolean(res && (res->out_truncated || res->err_truncated)));
	json_object_set_new(j, "stdout_truncated", json_boolean(res && res->out_truncated));
	json_object_set_new(j, "stderr_truncated", json_boolean(res && res->err_truncated));
	json_object_set_new(j, "timed_out", json_boolean(res && res->timed_out));
	json_object_set_new(j, "oom_killed", json_boolean(res && res->oom_killed));
	json_object_set_new(j, "duration_ms", json_real((double) us / 1000.0));
	json_object_set_new(j, "cold", json_boolean(cold));
	json_object_set_new(j, "result", result ? result : json_null());
	if (res && res->error)
		json_object_set_new(j, "error", text_json(res->error, strlen(res->error), NULL));
	return j;
}

static void
tool_call_free(struct tool_call *tc)
{
	free(tc->repo);
	free(tc->path);
	free(tc->branch);
	free(tc);
}

/* git_clone's script prints HEAD's id, then the branch checked out (empty when detached). */
static json_t *
git_clone_result(const struct tool_call *tc, const struct sbx_result *res)
{
	const char *out = res->out ? res->out : "";
	size_t		n = strspn(out, "0123456789abcdef"), b;
	const char *br;

	if ((n != 40 && n != 64) || out[n] != '\n')
		return NULL;
	br = out + n + 1;
	b = strcspn(br, "\n");
	return json_pack("{s:s, s:s, s:s%, s:o}", "repo", tc->repo, "path", tc->path, "head", out, n,
					 "branch",
					 b			  ? json_stringn(br, b)
					 : tc->branch ? json_string(tc->branch)
								  : json_null());
}

/* ---- streamed answers (tools_call_streamed) -------------------------------- */

#define NDJSON "application/x-ndjson"

/*
 * {key: v} (v taken) as one NDJSON line, malloc'd, its newline where the
 * NUL was (*len counts it); NULL when it cannot be encoded.
 */
static char *
ndjson_line(const char *key, json_t *v, size_t *len)
{
	json_t *line = json_pack("{s:o}", key, v);
	char   *text =
		  line ? json_dumps(line, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_REAL_PRECISION(10)) : NULL;

	json_decref(line);
	if (text)
	{
		*len = strlen(text) + 1;
		text[*len - 1] = '\n';
	}
	return text;
}

/* One line {key: v} (v taken) on tc's stream. */
static void
stream_line(struct tool_call *tc, const char *key, json_t *v)
{
	size_t n;
	char  *text = ndjson_line(key, v, &n);

	if (text)
		http_stream_write(tc->st, text, n);
	free(text);
}

/* Partial output of a streamed exec: the answer starts (200, NDJSON) with the first. */
static void
call_output(struct sbx_call *c, const struct sbx_partial *p)
{
	static const char *const names[2] = {"stdout", "stderr"};
	struct tool_call		*tc = c->ud;
	int						 last = p->data[1] ? 1 : 0;

	if (!tc->st && !(tc->st = http_stream_start(tc->req, 200, NDJSON)))
	{
		c->output = NULL; /* answered 500: nothing more goes to the caller */
		return;
	}
	for (int i = 0; i < 2; i++)
	{
		json_t *o;

		if (!p->data[i] && !(i == last && p->cut))
			continue;
		o = json_object();
		json_object_set_new(o, "stream", json_string(names[i]));
		json_object_set_new(o, "data", text_json(p->data[i], p->len[i], NULL));
		json_object_set_new(o, "offset", json_integer((json_int_t) p->offset[i]));
		if (i == last && p->cut)
			json_object_set_new(o, "truncated", json_true());
		stream_line(tc, "output", o);
	}
}

/*
 * The answer of a call whose caller takes NDJSON: {"result": answer} as
 * the stream's last line when output went out, else as the whole body.
 */
static void
stream_result(struct tool_call *tc, json_t *answer)
{
	size_t n;
	char  *text;

	if (tc->st)
	{
		stream_line(tc, "result", answer);
		http_stream_end(tc->st);
		tc->st = NULL;
		return;
	}
	text = ndjson_line("result", answer, &n);
	if (text)
		http_reply_text(tc->req, 200, NDJSON, text, n);
	else
		http_reply_problem(tc->req, 500, "internal", "cannot encode the answer");
}

static void
call_done(struct sbx_call *c, int err)
{
	struct tool_call  *tc = c->ud;
	struct sbx_result *res = &c->res;
	uint64_t		   us = now_us() - c->submitted_us;
	const char		  *outcome;
	json_t			  *result = NULL;
	json_t			  *ans;
	bool			   ok;

	/* err < 0: the call never ran, so no output went out: the problem answers as always. */
	if (err < 0)
	{
		metrics_call(tc->tool, "error", c->cold, us);
		switch (-err)
		{
			case EAGAIN:
				http_add_header(tc->req, "Retry-After", "1");
				http_reply_problem(tc->req, 503, "no_capacity", "%s", c->errmsg);
				break;
			case ECANCELED:
				http_reply_problem(tc->req, 409, "sandbox_destroyed", "%s", c->errmsg);
				break;
			case ESHUTDOWN:
				http_reply_problem(tc->req, 503, "draining", "%s", c->errmsg);
				break;
			default:
				http_reply_problem(tc->req, 502, "container_failed", "%s", c->errmsg);
				break;
		}
		run_result_free(res);
		tool_call_free(tc);
		return;
	}
	ok = res->exited && res->exit_status == 0 && !res->timed_out && !res->exec_failed;
	if (tc->kind == T_GIT_CLONE && res->exited && res->exit_status == 127 && !res->exec_failed)
	{
		metrics_call(tc->tool, "failed", c->cold, us);
		http_reply_problem(
			tc->req, 422, "git_not_in_image",
			"git_clone: this sandbox's image has no git (git: command not found); use an image "
			"with git (sandboxd/images/build-busybox --with-git, or build-debian)");
		run_result_free(res);
		tool_call_free(tc);
		return;
	}
	if ((tc->kind == T_ECHO || tc->kind == T_UPPERCASE) && ok)
		result = json_pack("{s:o}", "text", text_json(res->out, res->out_len, NULL));
	if (tc->kind == T_GIT_CLONE && ok && !(result = git_clone_result(tc, res)))
	{
		ok = false;
		if (!res->error)
			res->error = strdup("git_clone: git printed no commit id for HEAD");
	}
	outcome = res->timed_out ? "timed_out" : ok ? "ok" : "failed";
	metrics_call(tc->tool, outcome, c->cold, us);
	ans = with_workspace(answer(ok, res, c->cold, us, result), c->sb, tc->tool);
	if (tc->stream)
		stream_result(tc, ans);
	else
		http_reply_json(tc->req, 200, ans);
	run_result_free(res);
	tool_call_free(tc);
}

/* ---- container tools ------------------------------------------------------- */

static void
add_env_pair(struct pbuf *b, json_t *env, const char *key, const char *value)
{
	if (!env || !json_object_get(env, key))
	{
		_cleanup_(freep) char *kv = xasprintf("%s=%s", key, value);
		if (kv)
			pbuf_add_str(b, PT_ENV, kv);
	}
}

/*
 * The command's environment: defaults, then the proxy variables when the
 * call has a token and the host a proxy, then the caller's env (which wins
 * over both).
 */
static void
add_env(struct pbuf *b, json_t *env, const char *proxy_token)
{
	static const char *defaults[][2] = {
		{"PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		{"HOME", "/" SBX_WORKSPACE},
		{"LANG", "C.UTF-8"},
		{"TMPDIR", "/tmp"},
	};

	for (size_t i = 0; i < ARRAY_SIZE(defaults); i++)
		add_env_pair(b, env, defaults[i][0], defaults[i][1]);
	if (proxy_token && cfg.proxy_dir)
	{
		char				   url[64];
		_cleanup_(freep) char *auth =
			xasprintf("http://nadi:%s@127.0.0.1:%d", proxy_token, SBX_PROXY_PORT);

		snprintf(url, sizeof url, "http://127.0.0.1:%d", SBX_PROXY_PORT);
		add_env_pair(b, env, "NADI_PROXY_TOKEN", proxy_token);
		add_env_pair(b, env, "NADI_PROXY_URL", url);
		if (auth)
		{
			add_env_pair(b, env, "http_proxy", auth);
			add_env_pair(b, env, "HTTP_PROXY", auth);
		}
		add_env_pair(b, env, "no_proxy", "localhost,127.0.0.1");
	}
	if (env)
	{
		const char *k;
		json_t	   *v;
		json_object_foreach(env, k, v)
		{
			_cleanup_(freep) char *kv = xasprintf("%s=%s", k, json_string_value(v));
			if (kv)
				pbuf_add_str(b, PT_ENV, kv);
		}
	}
}

static bool
env_ok(struct http_req *r, json_t *env)
{
	const char *k;
	json_t	   *v;

	if (!json_is_object(env))
	{
		http_reply_problem(r, 400, "invalid_args", "exec: \"env\" must be an object of strings");
		return false;
	}
	if (json_object_size(env) > 256)
	{
		http_reply_problem(r, 400, "invalid_args", "exec: at most 256 environment variables");
		return false;
	}
	json_object_foreach(env, k, v)
	{
		bool good = *k && !(*k >= '0' && *k <= '9');
		for (const char *p = k; *p && good; p++)
			good = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
				   (*p >= '0' && *p <= '9') || *p == '_';
		if (!good)
		{
			http_reply_problem(r, 400, "invalid_args",
							   "exec: \"%s\" is not a valid environment variable name", k);
			return false;
		}
		if (!json_is_string(v) || memchr(json_string_value(v), '\0', json_string_length(v)))
		{
			http_reply_problem(r, 400, "invalid_args",
							   "exec: environment variable \"%s\" must be a string", k);
			return false;
		}
	}
	return true;
}

static bool
no_nul(struct http_req *r, const char *tool, const char *what, const char *s, size_t len)
{
	if (!memchr(s, '\0', len))
		return true;
	http_reply_problem(r, 400, "invalid_args", "%s: %s must not contain NUL characters", tool,
					   what);
	return false;
}

static struct tool_call *
tool_call_new(struct http_req *r, const char *tool, enum kind kind, uint64_t timeout)
{
	struct tool_call *tc = calloc(1, sizeof *tc);

	if (!tc)
	{
		http_reply_problem(r, 500, "internal", "out of memory");
		return NULL;
	}
	tc->req = r;
	tc->tool = tool;
	tc->kind = kind;
	tc->call.ud = tc;
	tc->call.done = call_done;
	tc->call.timeout_ms = timeout;
	pbuf_begin(&tc->call.frame);
	return tc;
}

/* Finish tc's frame (argv and env are in it) and queue it; answers r on failure. */
static void
tool_call_submit(struct http_req *r, struct sbx_sandbox *sb, struct tool_call *tc, const char *cwd)
{
	struct pbuf *b = &tc->call.frame;
	uint64_t	 as, nproc;
	int			 k;

	if (cwd && cwd[0] == '/')
		pbuf_add_str(b, PT_CWD, cwd);
	else
	{
		_cleanup_(freep) char *full =
			xasprintf("/%s%s%s", SBX_WORKSPACE, cwd ? "/" : "", cwd ? cwd : "");
		if (full)
			pbuf_add_str(b, PT_CWD, full);
	}
	limits_call_rlimits(&as, &nproc);
	pbuf_add_u64(b, PT_TIMEOUT_MS, tc->call.timeout_ms);
	pbuf_add_u64(b, PT_OUT_LIMIT, cfg.output_limit);
	pbuf_add_u64(b, PT_FSIZE, cfg.fsize_max);
	pbuf_add_u64(b, PT_AS, as);
	pbuf_add_u64(b, PT_NPROC, nproc);
	pbuf_add_u64(b, PT_UID, cfg.run_uid);
	pbuf_add_u64(b, PT_GID, cfg.run_gid);
	if (tc->stream)
	{
		pbuf_add_u64(b, PT_STREAM_MS, cfg.stream_interval_ms);
		pbuf_add_u64(b, PT_STREAM_MAX, cfg.stream_max);
		tc->call.output = call_output;
	}
	if (pbuf_finish(b) < 0)
	{
		pbuf_free(b);
		http_reply_problem(r, 413, "body_too_large", "%s: the call is too large to send", tc->tool);
		tool_call_free(tc);
		return;
	}
	k = run_submit(sb, &tc->call);
	if (k < 0)
	{
		pbuf_free(b);
		tool_call_free(tc);
		if (k == -EBUSY)
			http_reply_problem(r, 429, "sandbox_busy", "sandbox %s already has %llu calls waiting",
							   sb->id, (unsigned long long) cfg.max_queue);
		else if (k == -ESHUTDOWN)
			http_reply_problem(r, 503, "draining", "this sandbox host is shutting down");
		else
			http_reply_problem(r, 409, "sandbox_destroyed", "sandbox %s is being destroyed",
							   sb->id);
	}
}

static void
container_tool(struct http_req *r, struct sbx_sandbox *sb, const char *tool, json_t *args,
			   const char *proxy_token)
{
	static const char *const echo_keys[] = {"text", NULL};
	static const char *const exec_keys[] = {"argv",	   "stdin",		 "env", "cwd",
											"timeout", "timeout_ms", NULL};
	struct tool_call		*tc;
	struct pbuf				*b;
	uint64_t				 timeout = cfg.call_timeout_ms;
	const char				*text = NULL, *in = NULL, *cwd = NULL;
	size_t					 text_len = 0, in_len = 0, cwd_len = 0;
	json_t					*argv = NULL, *env = NULL;
	enum kind				 kind = strcmp(tool, "echo") == 0		 ? T_ECHO
									: strcmp(tool, "uppercase") == 0 ? T_UPPERCASE
																	 : T_EXEC;
	int						 k;

	if (kind != T_EXEC)
	{
		if (!check_keys(r, tool, args, echo_keys) ||
			!(text = arg_string(r, tool, args, "text", true, &text_len)) ||
			!no_nul(r, tool, "\"text\"", text, text_len))
			return;
	}
	else
	{
		json_t *v;
		size_t	i;

		if (!check_keys(r, tool, args, exec_keys))
			return;
		argv = json_object_get(args, "argv");
		if (!json_is_array(argv) || json_array_size(argv) == 0 ||
			json_array_size(argv) > PROTO_MAX_ARGS)
		{
			http_reply_problem(r, 400, "invalid_args",
							   "exec: \"argv\" must be a non-empty array of at most %d strings",
							   PROTO_MAX_ARGS);
			return;
		}
		json_array_foreach(argv, i, v)
		{
			if (!json_is_string(v) || (i == 0 && json_string_length(v) == 0) ||
				memchr(json_string_value(v), '\0', json_string_length(v)))
			{
				http_reply_problem(r, 400, "invalid_args",
								   "exec: argv[%zu] must be a %sstring without NUL", i,
								   i == 0 ? "non-empty " : "");
				return;
			}
		}
		if (json_object_get(args, "stdin") &&
			!(in = arg_string(r, tool, args, "stdin", false, &in_len)))
			return;
		env = json_object_get(args, "env");
		if (env && !env_ok(r, env))
			return;
		if (json_object_get(args, "cwd") &&
			(!(cwd = arg_string(r, tool, args, "cwd", false, &cwd_len)) ||
			 !no_nul(r, tool, "\"cwd\"", cwd, cwd_len)))
			return;
		if ((k = arg_uint(r, tool, args, "timeout_ms", cfg.call_timeout_max_ms, &timeout)) < 0)
			return;
		/* "timeout" (seconds) counts only without "timeout_ms" */
		if (k == 0)
		{
			if ((k = arg_uint(r, tool, args, "timeout", cfg.call_timeout_max_ms / 1000, &timeout)) <
				0)
				return;
			if (k > 0)
				timeout *= 1000;
		}
	}

	if (!(tc = tool_call_new(r, tool, kind, timeout)))
		return;
	tc->stream = want_stream && kind == T_EXEC;
	b = &tc->call.frame;
	if (kind == T_ECHO)
	{
		pbuf_add_str(b, PT_ARGV, "printf");
		pbuf_add_str(b, PT_ARGV, "%s");
		pbuf_add(b, PT_ARGV, text, text_len);
	}
	else if (kind == T_UPPERCASE)
	{
		pbuf_add_str(b, PT_ARGV, "tr");
		pbuf_add_str(b, PT_ARGV, "a-z");
		pbuf_add_str(b, PT_ARGV, "A-Z");
		pbuf_add(b, PT_STDIN, text, text_len);
	}
	else
	{
		size_t	i;
		json_t *v;
		json_array_foreach(argv, i, v)
			pbuf_add(b, PT_ARGV, json_string_value(v), json_string_length(v));
		if (in)
			pbuf_add(b, PT_STDIN, in, in_len);
	}
	add_env(b, env, kind == T_EXEC ? proxy_token : NULL);
	tool_call_submit(r, sb, tc, cwd);
}

/* ---- git_clone ------------------------------------------------------------ */

/*
 * Run as `sh -c SCRIPT sh MIRROR DEST BRANCH`: the values are positional
 * parameters, never part of the script text.  Exit 127 (with the message)
 * when the image has no git; otherwise git's own status.
 */
static const char git_clone_script[] =
	"command -v git >/dev/null 2>&1 || { echo 'git: command not found in this image' >&2; exit "
	"127; }\n"
	"src=$1 dest=/" SBX_WORKSPACE "/$2\n"
	"if [ -n \"$3\" ]; then git clone --shared --quiet --branch \"$3\" -- \"$src\" \"$dest\" || "
	"exit\n"
	"else git clone --shared --quiet -- \"$src\" \"$dest\" || exit; fi\n"
	"git -C \"$dest\" rev-parse --verify --quiet HEAD || { echo 'git_clone: the clone has no HEAD "
	"commit' >&2; exit 1; }\n"
	"git -C \"$dest\" symbolic-ref --quiet --short HEAD || echo\n";

/* A ref name git would accept for --branch (the rules of git check-ref-format that matter here). */
static bool
branch_ok(const char *s, size_t len)
{
	if (len == 0 || len > 255 || s[0] == '-' || s[0] == '/' || s[len - 1] == '/' ||
		s[len - 1] == '.' || strstr(s, "..") || strstr(s, "@{") || strstr(s, "//") ||
		(len >= 5 && strcmp(s + len - 5, ".lock") == 0) || strcmp(s, "@") == 0)
		return false;
	for (size_t i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) s[i];
		if (c < 0x20 || c == 0x7f || strchr(" ~^:?*[\\", c))
			return false;
	}
	return true;
}

/* DIR/REPO.git below the mirror root (mfd) is a directory. */
static bool
mirror_found(int mfd, const char *dir, const char *repo)
{
	_cleanup_(freep) char *rel = mfd >= 0 && dir ? xasprintf("%s/%s.git", dir, repo) : NULL;
	struct stat			   st;

	return rel && fstatat(mfd, rel, &st, 0) == 0 && S_ISDIR(st.st_mode);
}

static void
git_clone_tool(struct http_req *r, struct sbx_sandbox *sb, json_t *args, const char *proxy_token)
{
	static const char *const keys[] = {"repo", "dest", "branch", "timeout_ms", NULL};
	static const char *const tool = "git_clone";
	const char				*repo, *dest = NULL, *branch = NULL;
	size_t					 dest_len = 0, branch_len = 0;
	uint64_t				 timeout = cfg.call_timeout_ms;
	_cleanup_(closep) int	 ws = -1, mfd = -1;
	_cleanup_(freep) char	*mirror = NULL, *tdir = NULL;
	const char				*mount = NULL;
	struct tool_call		*tc;
	struct pbuf				*b;
	char					 norm[4096];
	int						 k;

	if (!check_keys(r, tool, args, keys) || !(repo = arg_string(r, tool, args, "repo", true, NULL)))
		return;
	if (!repo_name_valid(repo))
	{ /* nadi-gitd's rule, daemonlib/util.c */
		http_reply_problem(
			r, 400, "invalid_args",
			"git_clone: \"repo\" must be a mirror name: 1 to 100 letters, digits, '.', '_' or '-', "
			"starting with a letter or digit, without \"..\" or a \".git\" suffix");
		return;
	}
	if (json_object_get(args, "dest") &&
		(!(dest = arg_string(r, tool, args, "dest", false, &dest_len)) ||
		 !no_nul(r, tool, "\"dest\"", dest, dest_len)))
		return;
	if (json_object_get(args, "branch") &&
		!(branch = arg_string(r, tool, args, "branch", false, &branch_len)))
		return;
	if (branch && (memchr(branch, '\0', branch_len) || !branch_ok(branch, branch_len)))
	{
		http_reply_problem(
			r, 400, "invalid_args",
			"git_clone: \"branch\" must be a ref name of at most 255 bytes (no leading '-', no "
			"\"..\", no spaces or control characters)");
		return;
	}
	if (arg_uint(r, tool, args, "timeout_ms", cfg.call_timeout_max_ms, &timeout) < 0)
		return;
	k = fs_normalize(dest ? dest : repo, norm, sizeof norm);
	if (k < 0)
	{
		http_reply_errno(r, k, dest ? dest : repo);
		return;
	}
	if (!cfg.git_mirror_dir)
	{
		http_reply_problem(r, 501, "git_mirror_unavailable",
						   "git_clone: this sandbox host has no git mirrors (nadi-sandboxd runs "
						   "without git_mirror_dir)");
		return;
	}
	/* The sandbox's tenant's mirror first, then the shared one: never another tenant's. */
	mfd = open(cfg.git_mirror_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	tdir = sb->tenant[0] ? mirror_owner_dir(sb->tenant) : NULL;
	if (mirror_found(mfd, tdir, repo))
		mount = MIRROR_MOUNT_TENANT;
	else if (mirror_found(mfd, MIRROR_SHARED, repo))
		mount = SBX_GIT_MOUNT;
	mirror = mount ? xasprintf("%s/%s.git", mount, repo) : NULL;
	if (!mirror)
	{
		http_reply_problem(
			r, 404, "repo_not_mirrored",
			"git_clone: no mirror of \"%s\" on this host; ask nadi-gitd to mirror it "
			"(POST /v1/repos {\"name\":\"%s\",\"url\":...}) and try again",
			repo, repo);
		return;
	}
	ws = fs_open_workspace(sb->id);
	if (ws < 0)
	{
		http_reply_errno(r, ws, "workspace");
		return;
	}
	k = fs_exists(ws, norm);
	if (k > 0)
	{
		http_reply_problem(r, 409, "destination_exists",
						   "git_clone: /%s%s%s already exists; choose another \"dest\"",
						   SBX_WORKSPACE, strcmp(norm, ".") == 0 ? "" : "/",
						   strcmp(norm, ".") == 0 ? "" : norm);
		return;
	}
	if (k < 0)
	{
		http_reply_errno(r, k, norm);
		return;
	}

	if (!(tc = tool_call_new(r, tool, T_GIT_CLONE, timeout)))
		return;
	tc->repo = strdup(repo);
	tc->path = xasprintf("/%s/%s", SBX_WORKSPACE, norm);
	tc->branch = branch ? strdup(branch) : NULL;
	if (!tc->repo || !tc->path || (branch && !tc->branch))
	{
		pbuf_free(&tc->call.frame);
		tool_call_free(tc);
		http_reply_problem(r, 500, "internal", "out of memory");
		return;
	}
	b = &tc->call.frame;
	pbuf_add_str(b, PT_ARGV, "sh");
	pbuf_add_str(b, PT_ARGV, "-c");
	pbuf_add_str(b, PT_ARGV, git_clone_script);
	pbuf_add_str(b, PT_ARGV, "sh");
	pbuf_add_str(b, PT_ARGV, mirror);
	pbuf_add_str(b, PT_ARGV, norm);
	pbuf_add_str(b, PT_ARGV, branch ? branch : "");
	add_env(b, NULL, proxy_token);
	/*
	 * The mirror belongs to another user: git wants safe.directory, which
	 * git 2.39 reads only from global or system configuration (SBX_GITCONFIG);
	 * newer git also takes it from GIT_CONFIG_COUNT.
	 */
	pbuf_add_str(b, PT_ENV, "GIT_CONFIG_GLOBAL=" SBX_GITCONFIG);
	pbuf_add_str(b, PT_ENV, "GIT_CONFIG_COUNT=2");
	pbuf_add_str(b, PT_ENV, "GIT_CONFIG_KEY_0=safe.directory");
	pbuf_add_str(b, PT_ENV, "GIT_CONFIG_VALUE_0=*");
	pbuf_add_str(b, PT_ENV, "GIT_CONFIG_KEY_1=protocol.file.allow");
	pbuf_add_str(b, PT_ENV, "GIT_CONFIG_VALUE_1=always");
	pbuf_add_str(b, PT_ENV, "GIT_TERMINAL_PROMPT=0");
	tool_call_submit(r, sb, tc, NULL);
}

/* ---- host-side file tools -------------------------------------------------- */

static void
file_answer(struct http_req *r, struct sbx_sandbox *sb, const char *tool, uint64_t t0,
			json_t *result, bool truncated)
{
	json_t *j = answer(true, NULL, false, now_us() - t0, result);

	json_object_set_new(j, "truncated", json_boolean(truncated));
	metrics_call(tool, "ok", false, now_us() - t0);
	http_reply_json(r, 200, with_workspace(j, sb, tool));
}

static void
file_tool(struct http_req *r, struct sbx_sandbox *sb, const char *tool, json_t *args)
{
	static const char *const list_keys[] = {"path", "recursive", NULL};
	static const char *const read_keys[] = {"path", "encoding", "max_bytes", NULL};
	static const char *const write_keys[] = {"path", "content", "encoding", "create_parents", NULL};
	static const char *const edit_keys[] = {"path", "old_string", "new_string", "replace_all",
											NULL};
	_cleanup_(closep) int	 ws = -1;
	uint64_t				 t0 = now_us();
	const char				*path, *enc = "utf-8";
	char					 norm[4096];
	int						 k;

	if (strcmp(tool, "list_files") == 0)
	{
		if (!check_keys(r, tool, args, list_keys))
			return;
	}
	else if (strcmp(tool, "read_file") == 0)
	{
		if (!check_keys(r, tool, args, read_keys))
			return;
	}
	else if (strcmp(tool, "write_file") == 0)
	{
		if (!check_keys(r, tool, args, write_keys))
			return;
	}
	else if (!check_keys(r, tool, args, edit_keys))
		return;

	path = arg_string(r, tool, args, "path", strcmp(tool, "list_files") != 0, NULL);
	if (!path && json_object_get(args, "path"))
		return;
	if (!path && strcmp(tool, "list_files") != 0)
		return;
	if (json_object_get(args, "encoding") &&
		!(enc = arg_string(r, tool, args, "encoding", false, NULL)))
		return;
	if (strcmp(enc, "utf-8") != 0 && strcmp(enc, "base64") != 0)
	{
		http_reply_problem(r, 400, "invalid_args",
						   "%s: \"encoding\" must be \"utf-8\" or \"base64\"", tool);
		return;
	}
	k = fs_normalize(path ? path : ".", norm, sizeof norm);
	if (k < 0)
	{
		http_reply_errno(r, k, path ? path : ".");
		return;
	}
	ws = fs_open_workspace(sb->id);
	if (ws < 0)
	{
		http_reply_errno(r, ws, "workspace");
		return;
	}

	if (strcmp(tool, "list_files") == 0)
	{
		bool	recursive = false, truncated;
		json_t *entries;
		if (arg_bool(r, tool, args, "recursive", &recursive) < 0)
			return;
		k = fs_list(ws, norm, recursive, MAX_LIST_ENTRIES, &entries, &truncated);
		if (k < 0)
		{
			http_reply_errno(r, k, norm);
			return;
		}
		file_answer(
			r, sb, tool, t0,
			json_pack("{s:s, s:o, s:b}", "path", norm, "entries", entries, "truncated", truncated),
			truncated);
	}
	else if (strcmp(tool, "read_file") == 0)
	{
		uint64_t			   max = cfg.max_file_bytes;
		_cleanup_(freep) char *data = NULL;
		size_t				   len;
		bool				   truncated, lossy = false;
		json_t				  *content;
		if (arg_uint(r, tool, args, "max_bytes", cfg.max_file_bytes, &max) < 0)
			return;
		k = fs_read(ws, norm, max, &data, &len, &truncated);
		if (k < 0)
		{
			http_reply_errno(r, k, norm);
			return;
		}
		if (strcmp(enc, "base64") == 0)
		{
			_cleanup_(freep) char *b64 = base64_encode(data, len);
			content = json_string(b64 ? b64 : "");
		}
		else
			content = text_json(data, len, &lossy);
		file_answer(r, sb, tool, t0,
					json_pack("{s:s, s:o, s:s, s:I, s:b, s:b}", "path", norm, "content", content,
							  "encoding", enc, "bytes", (json_int_t) len, "truncated", truncated,
							  "lossy", lossy),
					truncated);
	}
	else if (strcmp(tool, "write_file") == 0)
	{
		size_t				   len;
		const char			  *content = arg_string(r, tool, args, "content", true, &len);
		_cleanup_(freep) char *decoded = NULL;
		bool				   parents = true, created;
		if (!content || arg_bool(r, tool, args, "create_parents", &parents) < 0)
			return;
		if (strcmp(enc, "base64") == 0)
		{
			if (base64_decode(content, len, &decoded, &len) < 0)
			{
				http_reply_problem(r, 400, "invalid_args",
								   "write_file: \"content\" is not valid base64");
				return;
			}
			content = decoded;
		}
		if (len > cfg.max_file_bytes)
		{
			http_reply_errno(r, -EFBIG, norm);
			return;
		}
		k = fs_write(ws, norm, content, len, parents, &created);
		if (k < 0)
		{
			http_reply_errno(r, k, norm);
			return;
		}
		file_answer(r, sb, tool, t0,
					json_pack("{s:s, s:I, s:b}", "path", norm, "bytes", (json_int_t) len, "created",
							  created),
					false);
	}
	else
	{
		size_t		olen, nlen, count = 0;
		const char *old = arg_string(r, tool, args, "old_string", true, &olen), *new_;
		bool		all = false;
		if (!old || !(new_ = arg_string(r, tool, args, "new_string", true, &nlen)) ||
			arg_bool(r, tool, args, "replace_all", &all) < 0)
			return;
		if (olen == 0)
		{
			http_reply_problem(r, 400, "invalid_args",
							   "edit_file: \"old_string\" must not be empty");
			return;
		}
		k = fs_edit(ws, norm, old, olen, new_, nlen, all, cfg.max_file_bytes, &count);
		if (k == -ENODATA)
		{
			http_reply_problem(r, 409, "edit_no_match",
							   "edit_file: \"old_string\" does not occur in %s", norm);
			return;
		}
		if (k == -ENOTUNIQ)
		{
			http_reply_problem(
				r, 409, "edit_not_unique",
				"edit_file: \"old_string\" occurs %zu times in %s; make it unique or set "
				"\"replace_all\"",
				count, norm);
			return;
		}
		if (k < 0)
		{
			http_reply_errno(r, k, norm);
			return;
		}
		file_answer(r, sb, tool, t0,
					json_pack("{s:s, s:I}", "path", norm, "replacements", (json_int_t) count),
					false);
	}
}

void
tools_call(struct http_req *r, struct sbx_sandbox *sb, const char *name, json_t *args,
		   const char *proxy_token)
{
	/* Use the static name: it outlives the request for metrics and logs. */
	for (size_t i = 0; i < ARRAY_SIZE(known); i++)
		if (strcmp(known[i], name) == 0)
			name = known[i];
	if (!tools_known(name))
	{
		http_reply_problem(r, 404, "unknown_tool",
						   "no tool named \"%.64s\"; known tools: echo, uppercase, "
						   "list_files, exec, read_file, write_file, edit_file, git_clone",
						   name);
		return;
	}
	if (!json_is_object(args))
	{
		http_reply_problem(r, 400, "invalid_args", "%s: \"args\" must be a JSON object", name);
		return;
	}
	if (strcmp(name, "echo") == 0 || strcmp(name, "uppercase") == 0 || strcmp(name, "exec") == 0)
		container_tool(r, sb, name, args, proxy_token);
	else if (strcmp(name, "git_clone") == 0)
		git_clone_tool(r, sb, args, proxy_token);
	else
		file_tool(r, sb, name, args);
}

void
tools_call_streamed(struct http_req *r, struct sbx_sandbox *sb, const char *name, json_t *args,
					const char *proxy_token)
{
	want_stream = true;
	tools_call(r, sb, name, args, proxy_token);
	want_stream = false;
}
