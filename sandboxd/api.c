/*
 * api.c — the HTTP API: routing of /v1/... paths to handlers, who may use
 * which route, validation of identifiers and bodies.  Protocol reference:
 * README.md.  Handlers answer through http.h, at once or (tool calls,
 * deletes, exports, restores) when the work is done.
 *
 * Authorization: the operator token reaches everything.  A session token
 * (access.h) reaches GET /v1/tools, POST /v1/sandboxes for its own session,
 * and, on its session's sandbox, GET /v1/sandboxes/ID, its tools and its
 * files; anything else is 403 "forbidden".  It may also list the sandboxes
 * of its own session (GET /v1/sandboxes?session_id=SID).  A session token
 * of the edge's file routes (subject "files:...", access.h) reaches only
 * the creation, the listing and GET /v1/sandboxes/ID of its session's
 * sandbox and that sandbox's files: no tool.
 */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "access.h"
#include "export.h"
#include "fsops.h"
#include "http.h"
#include "limits.h"
#include "metrics.h"
#include "pool.h"
#include "sandbox.h"
#include "btrfs_store.h"
#include "tools.h"
#include "workspace.h"

extern bool sbx_draining;

static bool
session_id_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > SBX_SESSION_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
	{
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			  c == '-' || c == '_' || c == '.' || c == ':'))
			return false;
	}
	return true;
}

static bool
is_operator(const struct http_req *r)
{
	return http_principal(r)->kind == ACCESS_OPERATOR;
}

static void
forbidden(struct http_req *r, const char *what)
{
	http_reply_problem(r, 403, "forbidden",
					   "a session token does not reach %s; that needs the operator token", what);
}

/* Routes for the operator only: false (and 403 answered) for anyone else. */
static bool
operator_only(struct http_req *r, const char *what)
{
	if (is_operator(r))
		return true;
	forbidden(r, what);
	return false;
}

/* A session token may list its own session's sandboxes (GET /v1/sandboxes?session_id=SID). */
static bool
own_session_list(struct http_req *r)
{
	const char *session = http_query(r, "session_id");

	return http_principal(r)->kind == ACCESS_SESSION && session &&
		   strcmp(session, http_principal(r)->sid) == 0;
}

/* A tool name is an identifier: ^[a-z][a-z0-9_]{0,63}$. */
static bool
tool_name_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 64 || !(s[0] >= 'a' && s[0] <= 'z'))
		return false;
	return strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_") == n;
}

static void
method_not_allowed(struct http_req *r, const char *allow)
{
	http_add_header(r, "Allow", allow);
	http_reply_problem(r, 405, "method_not_allowed", "%s is not allowed here; use %s",
					   http_method(r), allow);
}

static bool
is(const struct http_req *r, const char *m)
{
	return strcmp(http_method(r), m) == 0;
}

/* ---- /healthz, /metrics, /v1/tools, /v1/objects ---------------------------- */

static void
healthz(struct http_req *r)
{
	json_t *j = json_pack("{s:s, s:s, s:I, s:I, s:s, s:s, s:s, s:b, s:b}", "status",
						  sbx_draining ? "draining" : "ok", "version", NADI_VERSION, "sandboxes",
						  (json_int_t) sandbox_count(), "containers", (json_int_t) run_count(),
						  "limits", limit_mode_name(limits_mode()), "storage",
						  store_is_loop() ? "loop" : "btrfs", "host_id", cfg.host_id, "proxy",
						  cfg.proxy_dir != NULL, "git_mirrors", cfg.git_mirror_dir != NULL);
	json_object_set_new(j, "pool", pool_json());
	http_reply_json(r, sbx_draining ? 503 : 200, j);
}

static void
metrics(struct http_req *r)
{
	size_t len;
	char  *text = metrics_render(&len);

	if (!text)
	{
		http_reply_problem(r, 500, "internal", "out of memory");
		return;
	}
	http_reply_text(r, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
}

/* ---- /v1/sandboxes ------------------------------------------------------------ */

/* "from" of POST /v1/sandboxes: a snapshot, here (no host_id, or this host's) or elsewhere. */
struct from
{
	const char *host_id, *sandbox_id, *snapshot;
};

/*
 * Parse "from" strictly into *f and check that the caller may use it: the
 * operator may; a session token only with a "fork" claim naming exactly
 * that snapshot.  false: answered.
 */
static bool
from_allowed(struct http_req *r, json_t *v, struct from *f)
{
	const struct access_principal *who = http_principal(r);
	json_t						  *host, *x;
	const char					  *key;

	if (!json_is_object(v))
		goto invalid;
	json_object_foreach(v, key, x)
	{
		if (strcmp(key, "host_id") != 0 && strcmp(key, "sandbox_id") != 0 &&
			strcmp(key, "snapshot") != 0)
			goto invalid;
	}
	host = json_object_get(v, "host_id");
	f->sandbox_id = json_string_value(json_object_get(v, "sandbox_id"));
	f->snapshot = json_string_value(json_object_get(v, "snapshot"));
	f->host_id = json_string_value(host);
	if (host && !json_is_null(host) && !(f->host_id && access_host_id_valid(f->host_id)))
		goto invalid;
	if (!f->sandbox_id || strlen(f->sandbox_id) != SBX_ID_LEN ||
		strspn(f->sandbox_id, "0123456789abcdef") != SBX_ID_LEN ||
		!ws_snapshot_name_valid(f->snapshot))
		goto invalid;
	if (who->kind == ACCESS_OPERATOR)
		return true;
	if (who->kind == ACCESS_SESSION && who->fork &&
		strcmp(who->fork_host, f->host_id ? f->host_id : "") == 0 &&
		strcmp(who->fork_sandbox, f->sandbox_id) == 0 &&
		strcmp(who->fork_snapshot, f->snapshot) == 0)
		return true;
	http_reply_problem(r, 403, "forbidden",
					   "this token may not make a sandbox from that snapshot: a session token "
					   "needs a \"fork\" claim naming exactly it");
	return false;
invalid:
	http_reply_problem(r, 400, "invalid_args",
					   "\"from\" must be {host_id?: a host id or null, sandbox_id: 20 hex "
					   "digits, snapshot: a snapshot name}");
	return false;
}

static void
create_sandbox(struct http_req *r)
{
	const struct access_principal *who = http_principal(r);
	json_t						  *body = http_body_json(r);
	const char					  *session, *image, *tenant = NULL, *key;
	struct from					   from = {0};
	struct sbx_sandbox			  *sb;
	json_t						  *v;
	int							   k;

	if (!body)
		return;
	json_object_foreach(body, key, v)
	{
		if (strcmp(key, "session_id") != 0 && strcmp(key, "image") != 0 &&
			strcmp(key, "tenant") != 0 && strcmp(key, "from") != 0)
		{
			http_reply_problem(r, 400, "invalid_args", "unknown field \"%s\"", key);
			goto out;
		}
	}
	session = json_string_value(json_object_get(body, "session_id"));
	image = json_string_value(json_object_get(body, "image"));
	tenant = json_string_value(json_object_get(body, "tenant"));
	/* The tenant whose git mirrors the sandbox sees besides the shared ones. */
	if (json_object_get(body, "tenant") &&
		(!tenant || !tenant_valid(tenant) || strcmp(tenant, MIRROR_OWNER_SHARED) == 0))
	{
		http_reply_problem(r, 400, "invalid_args",
						   "\"tenant\" must be a string of 1 to %d bytes without control "
						   "characters, not \"*\"",
						   SBX_TENANT_MAX);
		goto out;
	}
	if (json_object_get(body, "from") && !from_allowed(r, json_object_get(body, "from"), &from))
		goto out;
	if (who->kind == ACCESS_SESSION)
	{
		/* A session token creates its own session's sandbox, which takes the token's tenant. */
		if (!session || strcmp(session, who->sid) != 0 ||
			(tenant && strcmp(tenant, who->tenant) != 0))
		{
			http_reply_problem(r, 403, "forbidden",
							   "a session token creates a sandbox for its own session "
							   "(and tenant) only");
			goto out;
		}
		tenant = who->tenant;
	}
	if (!session || !session_id_valid(session))
	{
		http_reply_problem(
			r, 400, "invalid_args",
			"\"session_id\" must be a string of 1 to %d letters, digits, '-', '_', '.' or ':'",
			SBX_SESSION_MAX);
		goto out;
	}
	if (!image || !id_valid(image, SBX_IMAGE_MAX))
	{
		http_reply_problem(r, 400, "invalid_args",
						   "\"image\" must name a base image (letters, digits, '.', '_', '-')");
		goto out;
	}
	sb = sandbox_find_session(session);
	if (sb)
	{
		/* Creation is idempotent per session: a retried request gets the same sandbox. */
		if (strcmp(sb->image, image) != 0)
			http_reply_problem(r, 409, "session_has_sandbox",
							   "session %s already has sandbox %s from image %s", session, sb->id,
							   sb->image);
		else if (tenant && sb->tenant[0] && strcmp(sb->tenant, tenant) != 0)
			http_reply_problem(r, 409, "session_has_sandbox",
							   "session %s already has sandbox %s of another tenant", session,
							   sb->id);
		else if (tenant && !sb->tenant[0] && (k = sandbox_set_tenant(sb, tenant)) < 0)
			http_reply_errno(r, k, "record the tenant");
		else
			http_reply_json(r, 200, sandbox_json(sb));
		goto out;
	}
	if (sandbox_host_full())
	{
		http_add_header(r, "Retry-After", "5");
		http_reply_problem(r, 503, "no_capacity", "this host holds its maximum of %llu sandboxes",
						   (unsigned long long) cfg.max_sandboxes);
		goto out;
	}
	if (from.sandbox_id)
	{
		ws_create_from(r, session, tenant, image, from.host_id, from.sandbox_id, from.snapshot);
		goto out;
	}
	/* A plain create takes a warm pool entry when there is one (one made from a snapshot never does). */
	if (pool_take(session, tenant, image, &sb) == 0)
	{
		json_t *j = sandbox_json(sb);
		json_object_set_new(j, "from_pool", json_true());
		http_reply_json(r, 201, j);
		goto out;
	}
	k = sandbox_create(session, tenant, image, &sb);
	if (k == -ENOENT)
		http_reply_problem(r, 404, "image_not_found", "no base image named \"%s\"", image);
	else if (k < 0)
		http_reply_errno(r, k, "create sandbox");
	else
	{
		snprintf(sb->tenant, sizeof sb->tenant, "%s", tenant ? tenant : "");
		http_reply_json(r, 201, sandbox_json(sb));
	}
out:
	json_decref(body);
}

static void
list_sandboxes(struct http_req *r)
{
	json_t	   *a = json_array();
	const char *session = http_query(r, "session_id");

	for (struct sbx_sandbox *sb = sandboxes; sb; sb = sb->next)
		if (!sb->pooled && (!session || strcmp(session, sb->session_id) == 0))
			json_array_append_new(a, sandbox_json(sb));
	http_reply_json(r, 200, json_pack("{s:o}", "sandboxes", a));
}

static void
destroyed(void *ud, int res)
{
	struct http_req *r = ud;

	if (res < 0)
		http_reply_errno(r, res, "destroy");
	else
		http_reply_empty(r, 204);
}

static void
delete_sandbox(struct http_req *r, struct sbx_sandbox *sb)
{
	int k = sandbox_destroy(sb, destroyed, r);

	if (k == -EBUSY)
		http_reply_problem(r, 409, "sandbox_busy",
						   "an export of sandbox %s is running; retry when it is done", sb->id);
	else if (k == -EALREADY)
		http_reply_problem(r, 409, "sandbox_destroying", "sandbox %s is already being destroyed",
						   sb->id);
}

static void
restore(struct http_req *r)
{
	json_t	   *body = http_body_json(r);
	const char *object, *session;

	if (!body)
		return;
	object = json_string_value(json_object_get(body, "object"));
	session = json_string_value(json_object_get(body, "session_id"));
	if (!object)
		http_reply_problem(r, 400, "invalid_args", "\"object\" (a string) is required");
	else if (json_object_get(body, "session_id") && (!session || !session_id_valid(session)))
		http_reply_problem(r, 400, "invalid_args", "\"session_id\" is not a valid session id");
	else if (sandbox_host_full())
		http_reply_problem(r, 503, "no_capacity", "this host holds its maximum of %llu sandboxes",
						   (unsigned long long) cfg.max_sandboxes);
	else
		restore_object(r, object, session);
	json_decref(body);
}

/* ---- /v1/sandboxes/{id}/... -------------------------------------------------- */

/* A proxy token as the cells mint them: 1 to 4096 bytes of [A-Za-z0-9._-]. */
static bool
proxy_token_valid(json_t *v)
{
	const char *s = json_string_value(v);
	size_t		n = json_is_string(v) ? json_string_length(v) : 0;

	if (n == 0 || n > SBX_PROXY_TOKEN_MAX)
		return false;
	return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") == n;
}

/* Does the caller take a streamed answer (Accept names application/x-ndjson)? */
static bool
accepts_ndjson(const struct http_req *r)
{
	const char *accept = http_header(r, "Accept");

	return accept && strcasestr(accept, "application/x-ndjson");
}

static void
tool(struct http_req *r, struct sbx_sandbox *sb, const char *name)
{
	json_t	   *body = http_body_json(r), *args, *token;
	const char *key;
	json_t	   *v;

	if (!body)
		return;
	json_object_foreach(body, key, v)
	{
		if (strcmp(key, "args") != 0 && strcmp(key, "proxy_token") != 0)
		{
			http_reply_problem(r, 400, "invalid_args",
							   "unknown field \"%s\"; put tool arguments in \"args\"", key);
			json_decref(body);
			return;
		}
	}
	/* The token is only passed on: never stored, never logged, not echoed in the problem. */
	token = json_object_get(body, "proxy_token");
	if (token && !proxy_token_valid(token))
	{
		http_reply_problem(
			r, 400, "invalid_args",
			"\"proxy_token\" must be a string of 1 to %d letters, digits, '.', '_' or '-'",
			SBX_PROXY_TOKEN_MAX);
		json_decref(body);
		return;
	}
	args = json_object_get(body, "args");
	if (!args)
	{
		json_object_set_new(body, "args", json_object());
		args = json_object_get(body, "args");
	}
	if (accepts_ndjson(r))
		tools_call_streamed(r, sb, name, args, token ? json_string_value(token) : NULL);
	else
		tools_call(r, sb, name, args, token ? json_string_value(token) : NULL);
	json_decref(body);
}

static void
files(struct http_req *r, struct sbx_sandbox *sb)
{
	const char			 *path = http_query(r, "path");
	_cleanup_(closep) int ws = -1;
	char				  norm[4096];
	int					  k;

	if (!path)
	{
		http_reply_problem(r, 400, "invalid_args", "the \"path\" query parameter is required");
		return;
	}
	k = fs_normalize(path, norm, sizeof norm);
	if (k < 0)
	{
		http_reply_errno(r, k, path);
		return;
	}
	ws = fs_open_workspace(sb->id);
	if (ws < 0)
	{
		http_reply_errno(r, ws, "workspace");
		return;
	}
	if (is(r, "GET"))
	{
		struct stat st;
		json_t	   *entries;
		bool		truncated;
		int			fd;

		if (fs_is_dir(ws, norm))
		{
			k = fs_list(ws, norm, false, 10000, &entries, &truncated);
			if (k < 0)
				http_reply_errno(r, k, norm);
			else
				http_reply_json(r, 200,
								json_pack("{s:s, s:o, s:b}", "path", norm, "entries", entries,
										  "truncated", truncated));
			return;
		}
		fd = fs_open_read(ws, norm, &st);
		if (fd < 0)
			http_reply_errno(r, fd, norm);
		else
			http_reply_fd(r, fd, (uint64_t) st.st_size);
	}
	else if (is(r, "PUT"))
	{
		size_t		len;
		const char *data = http_body(r, &len);
		bool		created;

		k = fs_write(ws, norm, data, len, true, &created);
		if (k < 0)
			http_reply_errno(r, k, norm);
		else
			http_reply_json(r, created ? 201 : 200,
							json_pack("{s:s, s:I, s:b}", "path", norm, "bytes", (json_int_t) len,
									  "created", created));
	}
	else
		method_not_allowed(r, "GET, PUT");
}

static bool
snapshot_room(struct http_req *r, struct sbx_sandbox *sb)
{
	char **names = store_snapshot_list(sb->id);
	size_t n = 0;

	while (names && names[n])
		n++;
	store_strv_free(names);
	if (n < SBX_MAX_SNAPSHOTS)
		return true;
	http_reply_problem(r, 409, "snapshot_limit", "sandbox %s already has %d snapshots", sb->id,
					   SBX_MAX_SNAPSHOTS);
	return false;
}

static void
snapshots(struct http_req *r, struct sbx_sandbox *sb)
{
	if (is(r, "GET"))
	{
		json_t *j = sandbox_json(sb);
		http_reply_json(r, 200,
						json_pack("{s:s, s:O}", "sandbox_id", sb->id, "snapshots",
								  json_object_get(j, "snapshots")));
		json_decref(j);
	}
	else if (is(r, "POST"))
	{
		json_t	   *body = http_body_json(r);
		const char *name;
		char		gen[72], created[32];
		int			k;

		if (!body)
			return;
		name = json_string_value(json_object_get(body, "name"));
		if (json_object_get(body, "name") && (!name || !id_valid(name, 64)))
		{
			http_reply_problem(
				r, 400, "invalid_args",
				"\"name\" must be 1 to 64 letters, digits, '.', '_' or '-' (no leading '.')");
			json_decref(body);
			return;
		}
		if (!snapshot_room(r, sb))
		{
			json_decref(body);
			return;
		}
		if (!name)
		{
			char rnd[9];
			random_hex(rnd, 4);
			snprintf(gen, sizeof gen, "snap-%lld-%s", (long long) time(NULL), rnd);
			name = gen;
		}
		k = store_snapshot_create(sb->id, name);
		if (k == -EEXIST)
			http_reply_problem(r, 409, "snapshot_exists",
							   "sandbox %s already has a snapshot \"%s\"", sb->id, name);
		else if (k < 0)
			http_reply_errno(r, k, "snapshot");
		else
		{
			iso8601(time(NULL), created);
			http_reply_json(r, 201,
							json_pack("{s:s, s:s, s:s}", "sandbox_id", sb->id, "snapshot", name,
									  "created_at", created));
		}
		json_decref(body);
	}
	else
		method_not_allowed(r, "GET, POST");
}

static void export(struct http_req *r, struct sbx_sandbox *sb)
{
	json_t *body = http_body_json(r);
	json_t *snap;

	if (!body)
		return;
	snap = json_object_get(body, "snapshot");
	if (snap && !json_is_string(snap))
		http_reply_problem(r, 400, "invalid_args", "\"snapshot\" must be a string");
	else if (!snap && !snapshot_room(r, sb))
		; /* answered */
	else
		export_snapshot(r, sb, snap ? json_string_value(snap) : NULL);
	json_decref(body);
}

/* GET .../snapshots/NAME/stream: the operator, or a fork's token naming this snapshot here. */
static bool
stream_allowed(struct http_req *r, const struct sbx_sandbox *sb, const char *name)
{
	const struct access_principal *who = http_principal(r);

	if (!ws_snapshot_name_valid(name))
	{
		http_reply_problem(r, 400, "invalid_args", "\"%.64s\" is not a snapshot name", name);
		return false;
	}
	if (is_operator(r))
		return true;
	if (who->kind == ACCESS_SESSION && who->fork && strcmp(who->fork_host, cfg.host_id) == 0 &&
		strcmp(who->fork_sandbox, sb->id) == 0 && strcmp(who->fork_snapshot, name) == 0 &&
		sb->tenant[0] && strcmp(sb->tenant, who->tenant) == 0)
		return true;
	http_reply_problem(r, 403, "forbidden",
					   "a session token reaches a snapshot's stream only with a \"fork\" claim "
					   "naming it on this host");
	return false;
}

/* Split path into at most n segments after the prefix; returns the count. */
static size_t
segments(char *path, char **seg, size_t n)
{
	size_t k = 0;

	for (char *save, *t = strtok_r(path, "/", &save); t; t = strtok_r(NULL, "/", &save))
	{
		if (k == n)
			return n + 1;
		seg[k++] = t;
	}
	return k;
}

void
api_dispatch(struct http_req *r)
{
	_cleanup_(freep) char *path = strdup(http_path(r));
	struct sbx_sandbox	  *sb;
	char				  *seg[6];
	size_t				   n;

	if (!path)
	{
		http_reply_problem(r, 500, "internal", "out of memory");
		return;
	}
	if (strcmp(path, "/healthz") == 0)
	{
		is(r, "GET") ? healthz(r) : method_not_allowed(r, "GET");
		return;
	}
	if (strcmp(path, "/metrics") == 0)
	{
		is(r, "GET") ? metrics(r) : method_not_allowed(r, "GET");
		return;
	}
	n = segments(path, seg, ARRAY_SIZE(seg));
	if (n < 2 || strcmp(seg[0], "v1") != 0)
		goto not_found;
	if (n == 2 && strcmp(seg[1], "tools") == 0)
	{
		is(r, "GET")
			? http_reply_json(r, 200,
							  json_pack("{s:o, s:I}", "tools", tools_list_json(),
										"start_timeout_ms", (json_int_t) cfg.start_timeout_ms))
			: method_not_allowed(r, "GET");
		return;
	}
	if (n == 2 && strcmp(seg[1], "objects") == 0)
	{
		if (!operator_only(r, "the object store"))
			return;
		is(r, "GET") ? http_reply_json(r, 200, json_pack("{s:o}", "objects", objects_json()))
					 : method_not_allowed(r, "GET");
		return;
	}
	if (strcmp(seg[1], "sandboxes") != 0)
		goto not_found;
	if (n == 2)
	{
		if (is(r, "GET") && !own_session_list(r) && !operator_only(r, "the list of sandboxes"))
			return;
		if (is(r, "GET"))
			list_sandboxes(r);
		else if (is(r, "POST"))
			create_sandbox(r);
		else
			method_not_allowed(r, "GET, POST");
		return;
	}
	if (n == 3 && strcmp(seg[2], "restore") == 0)
	{
		if (operator_only(r, "restores"))
			is(r, "POST") ? restore(r) : method_not_allowed(r, "POST");
		return;
	}
	/* A warm pool entry is no one's sandbox yet: not reachable by id. */
	if (!id_valid(seg[2], SBX_ID_LEN) || !(sb = sandbox_find(seg[2])) || sb->pooled)
	{
		http_reply_problem(r, 404, "sandbox_not_found", "no sandbox with id \"%.64s\"", seg[2]);
		return;
	}
	if (n == 6 && strcmp(seg[3], "snapshots") == 0 && strcmp(seg[5], "stream") == 0)
	{
		/* Another host pulls it for a fork: the fork's token names this very snapshot. */
		if (stream_allowed(r, sb, seg[4]))
			is(r, "GET") ? ws_stream(r, sb, seg[4]) : method_not_allowed(r, "GET");
		return;
	}
	if (!is_operator(r) && strcmp(sb->session_id, http_principal(r)->sid) != 0)
	{
		http_reply_problem(r, 403, "forbidden", "sandbox %s belongs to another session", sb->id);
		return;
	}
	if (n == 3)
	{
		if (is(r, "DELETE") && !operator_only(r, "deleting a sandbox"))
			return;
		if (is(r, "GET"))
			http_reply_json(r, 200, sandbox_json(sb));
		else if (is(r, "DELETE"))
			delete_sandbox(r, sb);
		else
			method_not_allowed(r, "GET, DELETE");
		return;
	}
	if (sb->destroying)
	{
		http_reply_problem(r, 409, "sandbox_destroying", "sandbox %s is being destroyed", sb->id);
		return;
	}
	if (sb->restore_req)
	{
		http_reply_problem(r, 409, "sandbox_busy", "sandbox %s is being restored", sb->id);
		return;
	}
	if (n == 4 && strcmp(seg[3], "restore") == 0)
	{
		/* A rollback: the operator, or the session's own token (not a file route's). */
		if (http_principal(r)->files_only)
			http_reply_problem(r, 403, "forbidden",
							   "a token of the file routes cannot restore a sandbox; that needs "
							   "the session's own token");
		else
			is(r, "POST") ? ws_restore(r, sb) : method_not_allowed(r, "POST");
		return;
	}
	if (n == 5 && strcmp(seg[3], "tools") == 0)
	{
		if (http_principal(r)->files_only)
			http_reply_problem(r, 403, "forbidden",
							   "a token of the file routes reaches no tool; that needs the "
							   "session's own token");
		else if (!tool_name_valid(seg[4]))
			http_reply_problem(r, 422, "invalid_tool_name",
							   "a tool name is 1 to 64 lower-case letters, digits and '_', "
							   "starting with a letter");
		else
			is(r, "POST") ? tool(r, sb, seg[4]) : method_not_allowed(r, "POST");
		return;
	}
	if (n == 4 && strcmp(seg[3], "files") == 0)
	{
		files(r, sb);
		return;
	}
	if (http_principal(r)->files_only)
	{
		forbidden(r, "this route with a token of the file routes");
		return;
	}
	if (n == 4 && strcmp(seg[3], "snapshots") == 0)
	{
		if (operator_only(r, "snapshots"))
			snapshots(r, sb);
		return;
	}
	if (n == 4 && strcmp(seg[3], "export") == 0)
	{
		if (operator_only(r, "exports"))
			is(r, "POST") ? export(r, sb) : method_not_allowed(r, "POST");
		return;
	}
	if (n == 4 && strcmp(seg[3], "stop") == 0)
	{
		if (!operator_only(r, "stopping a sandbox"))
			return;
		if (!is(r, "POST"))
		{
			method_not_allowed(r, "POST");
			return;
		}
		run_stop(sb, false, "requested");
		http_reply_json(r, 202, sandbox_json(sb));
		return;
	}
not_found:
	http_reply_problem(r, 404, "not_found", "no such endpoint: %s %s", http_method(r),
					   http_path(r));
}
