/*
 * routes.c — the REST API.  Canonical paths are under /v1; the prototype's
 * paths (/sessions, /sessions/{id}/commands, ...) are the same routes
 * without the prefix.  Every handler checks its input completely (unknown
 * fields, wrong types, malformed ids) before anything reaches the
 * database, then runs one job (db.c) under the caller's token and turns
 * the row or the SQLSTATE into the answer.  This file has the shared
 * helpers, health, sessions and the dispatch; routes_commands.c has
 * commands and events.  docs/HTTP_API.md describes each route;
 * docs/openapi.yaml is the same in OpenAPI 3.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <microhttpd.h>

#include "edge.h"
#include "jwt.h"
#include "routes_int.h"

static void
ctx_free(EdgeReq *req)
{
	RouteCtx *c = req->state;

	if (c)
		json_decref(c->body);
	free(c);
	req->state = NULL;
}

void
respond_problem(EdgeReq *req, int status, const char *code, const char *fmt, const char *arg)
{
	EdgeProblem p;

	problem_set(&p, status, code, fmt, arg);
	http_respond_problem(req, &p);
}

void
method_not_allowed(EdgeReq *req, const char *allow)
{
	EdgeProblem p;
	char	   *body;
	const char *headers[] = {MHD_HTTP_HEADER_ALLOW, allow, NULL};

	problem_set(&p, 405, "method_not_allowed", "%s is not allowed here; allowed: %s.", req->method,
				allow);
	body = problem_json(&p, req->url);
	http_respond(req, 405, "application/problem+json", body ? body : "{}", body ? strlen(body) : 2,
				 headers);
	free(body);
}

bool
is_method(EdgeReq *req, const char *m)
{
	return strcmp(req->method, m) == 0 ||
		   (strcmp(m, "GET") == 0 && strcmp(req->method, "HEAD") == 0);
}

/* ------------------------------------------------------------------------
 * Authentication, then the route
 * ------------------------------------------------------------------------ */

static void auth_retry(void *arg);

int
route_authenticate(EdgeReq *req, void (*cont)(EdgeReq *req))
{
	EdgeProblem p;

	switch (auth_check(http_header(req, "Authorization"), &req->auth, &p))
	{
		case AUTH_OK:
			req->has_auth = true;
			cont(req);
			return 0;
		case AUTH_NO_TOKEN:
			cont(req);
			return 0;
		case AUTH_RETRY:
			if (!req->auth_retried)
			{
				req->auth_retried = true;
				req->auth_cont = cont;
				http_suspend(req);
				if (auth_wait_refresh(auth_retry, req))
					return 0;
			}
			edge_metrics.auth_failures++;
			break;
		case AUTH_FAIL:
			break;
	}
	http_respond_problem(req, &p);
	return -1;
}

static void
auth_retry(void *arg)
{
	EdgeReq *req = arg;

	route_authenticate(req, req->auth_cont);
}

void
db_failed(EdgeReq *req, EdgeDbResult *r)
{
	EdgeProblem p;

	problem_from_db(&p, r->sqlstate, r->message, r->detail, r->hint);
	http_respond_problem(req, &p);
}

/* Run a statement for the request; the answer comes to done(). */
void
route_db(EdgeReq *req, EdgeStmt stmt, int n, const char *const *params, EdgeDbDone done)
{
	EdgeProblem p;

	req->job = db_submit(stmt, req->has_auth ? &req->auth : NULL, n, params, done, req);
	if (req->job == NULL)
	{
		problem_set(&p, 503, "overloaded", "Too many requests are waiting for the database.");
		p.retry_after = 1;
		http_respond_problem(req, &p);
		return;
	}
	http_suspend(req);
}

/* Parse the body as one JSON object (an empty body is {} when allowed). */
json_t *
body_json(EdgeReq *req, bool empty_ok)
{
	const char *ct = http_header(req, "Content-Type");
	EdgeProblem p;
	json_t	   *j;

	/* curl -d sends form encoding: the prototype's examples do, so accept it */
	if (ct && strncasecmp(ct, "application/json", 16) != 0 &&
		strncasecmp(ct, "application/x-www-form-urlencoded", 33) != 0)
	{
		respond_problem(req, 415, "unsupported_media_type", "Send the body as %s.",
						"application/json");
		return NULL;
	}
	if (req->body.len == 0)
	{
		if (empty_ok)
			return json_object();
		respond_problem(req, 400, "invalid_json", "This request needs a JSON %s body.", "object");
		return NULL;
	}
	j = json_parse_strict(req->body.data, req->body.len, &p);
	if (j == NULL)
		http_respond_problem(req, &p);
	return j;
}

/* Only the named query parameters may appear. */
static enum MHD_Result
query_check(void *cls, enum MHD_ValueKind kind EDGE_UNUSED, const char *key,
			const char *value EDGE_UNUSED)
{
	const char *const *allowed = ((const char *const **) cls)[0];

	for (const char *const *a = allowed; *a; a++)
		if (strcmp(key, *a) == 0)
			return MHD_YES;
	((const char **) cls)[1] = key;
	return MHD_NO;
}

bool
query_only(EdgeReq *req, const char *const *allowed)
{
	const void *cls[2] = {allowed, NULL};

	MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, query_check, cls);
	if (cls[1])
	{
		respond_problem(req, 400, "unknown_parameter", "Unknown query parameter \"%.100s\".",
						cls[1]);
		return false;
	}
	return true;
}

bool
query_int(EdgeReq *req, const char *name, int64_t min, int64_t max, int64_t dflt, int64_t *out)
{
	const char *v = http_query(req, name);
	char		msg[160];

	if (v == NULL)
	{
		*out = dflt;
		return true;
	}
	if (edge_parse_int64(v, min, max, out))
		return true;
	snprintf(msg, sizeof(msg), "\"%s\" must be an integer from %lld to %lld.", name,
			 (long long) min, (long long) max);
	respond_problem(req, 400, "invalid_parameter", "%s", msg);
	return false;
}

/* ------------------------------------------------------------------------
 * Answers assembled from the JSON text the database built
 * ------------------------------------------------------------------------ */

void
single_row(EdgeReq *req, EdgeDbResult *r, int status)
{
	if (!r->ok)
		db_failed(req, r);
	else if (db_rows(r) != 1)
		respond_problem(req, 404, "not_found", "%s", "Nothing was found.");
	else
		http_respond_json(req, status, db_value(r, 0, 0), NULL);
}

void
done_row200(void *arg, EdgeDbResult *r)
{
	EdgeReq *req = arg;

	req->job = NULL;
	single_row(req, r, 200);
}

/* {"<name>": [rows...], "next_cursor": ...}; a limit+1th row means more. */
void
list_rows(EdgeReq *req, EdgeDbResult *r, const char *name, int limit, bool quote_cursor)
{
	EdgeBuf b = {0};
	int		n;

	if (!r->ok)
	{
		db_failed(req, r);
		return;
	}
	n = db_rows(r);
	buf_printf(&b, "{\"%s\":[", name);
	for (int i = 0; i < n && i < limit; i++)
	{
		if (i)
			buf_puts(&b, ",");
		buf_puts(&b, db_value(r, i, 0));
	}
	buf_puts(&b, "],\"next_cursor\":");
	if (n > limit)
		buf_printf(&b, quote_cursor ? "\"%s\"}" : "%s}", db_value(r, limit - 1, 1));
	else
		buf_puts(&b, "null}");
	http_respond_json(req, 200, buf_cstr(&b), NULL);
	buf_free(&b);
}

/* ------------------------------------------------------------------------
 * Health, readiness, metrics
 * ------------------------------------------------------------------------ */

static void
done_ready(void *arg, EdgeDbResult *r)
{
	EdgeReq	   *req = arg;
	EdgeDbStats s;
	char		body[256];

	req->job = NULL;
	db_stats(&s);
	if (!r->ok || !s.listen_up)
	{
		EdgeProblem p;

		problem_set(&p, 503, "not_ready", "%s",
					!r->ok ? "The database is not reachable."
						   : "The LISTEN connection is not up yet.");
		p.retry_after = 1;
		http_respond_problem(req, &p);
		return;
	}
	snprintf(body, sizeof(body),
			 "{\"status\":\"ready\",\"database\":\"ok\",\"pool\":%d,\"listen\":true,\"keys\":%d}",
			 s.pool_up, auth_key_count());
	http_respond_json(req, 200, body, NULL);
}

/*
 * The edge's own numbers for anyone who reaches /metrics; the database's
 * nadi_db_* (every tenant's sessions, calls and tokens, the hosts) only
 * with an admin token, like GET /v1/operator.
 */
static void
route_metrics(EdgeReq *req)
{
	char *text = metrics_render(req->has_auth && req->auth.scope == SCOPE_ADMIN);

	if (text == NULL)
		respond_problem(req, 503, "unavailable", "%s", "Out of memory.");
	else
		http_respond(req, 200, "text/plain; version=0.0.4", text, strlen(text), NULL);
	free(text);
}

/* ------------------------------------------------------------------------
 * Sessions
 * ------------------------------------------------------------------------ */

/* 201 with the row and Location: /v1/sessions/<column 1> (also for a fork). */
void
done_session_created(void *arg, EdgeDbResult *r)
{
	EdgeReq	   *req = arg;
	char		loc[64];
	const char *headers[] = {MHD_HTTP_HEADER_LOCATION, loc, NULL};

	req->job = NULL;
	if (!r->ok || db_rows(r) != 1)
	{
		single_row(req, r, 201);
		return;
	}
	snprintf(loc, sizeof(loc), "/v1/sessions/%s", db_value(r, 0, 1));
	http_respond_json(req, 201, db_value(r, 0, 0), headers);
}

static void
session_create(EdgeReq *req)
{
	static const char *const fields[] = {"tenant_id", "metadata", "labels", "policy", NULL};
	static const char *const objs[] = {"metadata", "labels", "policy"};
	json_t					*body = body_json(req, true);
	json_t					*tenant;
	char					*text[3] = {NULL, NULL, NULL};
	const char				*params[4];
	EdgeProblem				 p;

	if (body == NULL)
		return;
	if (json_only_fields(body, fields, &p) < 0)
		goto bad;
	tenant = json_object_get(body, "tenant_id");
	if (tenant && !json_is_string(tenant) && !json_is_null(tenant))
	{
		problem_set(&p, 400, "invalid_field", "\"tenant_id\" must be a string.");
		goto bad;
	}
	params[0] = json_string_value(tenant);
	for (int i = 0; i < 3; i++)
	{
		json_t *v = json_object_get(body, objs[i]);

		if (v && !json_is_object(v) && !json_is_null(v))
		{
			problem_set(&p, 400, "invalid_field", "\"%s\" must be a JSON object.", objs[i]);
			goto bad;
		}
		params[i + 1] = text[i] = json_is_object(v) ? json_compact(v) : NULL;
	}
	route_db(req, STMT_SESSION_CREATE, 4, params, done_session_created);
	for (int i = 0; i < 3; i++)
		free(text[i]);
	json_decref(body);
	return;
bad:
	json_decref(body);
	http_respond_problem(req, &p);
}

static void
done_session_list(void *arg, EdgeDbResult *r)
{
	EdgeReq *req = arg;

	req->job = NULL;
	list_rows(req, r, "sessions", ((RouteCtx *) req->state)->limit, true);
}

static void
session_list(EdgeReq *req)
{
	static const char *const q[] = {"state", "after", "limit", "tenant_id", NULL};
	RouteCtx				*c = req->state;
	const char				*after = http_query(req, "after");
	char					 lim[16];
	int64_t					 limit;
	const char				*params[4];

	if (!query_only(req, q) || !query_int(req, "limit", 1, LIST_MAX, 100, &limit))
		return;
	if (after && !nadi_jwt_uuid_text(after))
	{
		respond_problem(req, 400, "invalid_parameter", "\"after\" must be a %s.",
						"session id (uuid)");
		return;
	}
	c->limit = (int) limit;
	snprintf(lim, sizeof(lim), "%d", c->limit + 1);
	params[0] = http_query(req, "state");
	params[1] = after;
	params[2] = lim;
	params[3] = http_query(req, "tenant_id");
	route_db(req, STMT_SESSION_LIST, 4, params, done_session_list);
}

static void
session_get(EdgeReq *req)
{
	RouteCtx   *c = req->state;
	const char *params[1] = {c->path.seg[1]};

	route_db(req, STMT_SESSION_GET, 1, params, done_row200);
}

static void
session_terminate(EdgeReq *req)
{
	static const char *const fields[] = {"reason", NULL};
	RouteCtx				*c = req->state;
	const char				*params[2] = {c->path.seg[1], NULL};
	json_t					*body = NULL;
	EdgeProblem				 p;

	if (strcmp(req->method, "POST") == 0)
	{
		if ((body = body_json(req, true)) == NULL)
			return;
		if (json_only_fields(body, fields, &p) < 0)
		{
			json_decref(body);
			http_respond_problem(req, &p);
			return;
		}
		if (json_object_get(body, "reason") && !json_is_string(json_object_get(body, "reason")))
		{
			json_decref(body);
			respond_problem(req, 400, "invalid_field", "%s", "\"reason\" must be a string.");
			return;
		}
		params[1] = json_string_value(json_object_get(body, "reason"));
	}
	route_db(req, STMT_SESSION_TERMINATE, 2, params, done_row200);
	json_decref(body);
}

/* ------------------------------------------------------------------------
 * Dispatch
 * ------------------------------------------------------------------------ */

static bool
path_split(const char *url, Path *p)
{
	char *s;

	if (strncmp(url, "/v1/", 4) == 0)
		url += 3;
	if (strlen(url) >= sizeof(p->buf) || url[0] != '/')
		return false;
	strcpy(p->buf, url + 1);
	p->n = 0;
	s = p->buf;
	if (*s == '\0')
		return true;
	while (s)
	{
		char *slash = strchr(s, '/');

		if (slash)
			*slash = '\0';
		if (*s == '\0' && !(slash == NULL && p->n > 0))
			return false; /* an empty segment in the middle */
		if (*s != '\0')
		{
			if (p->n == MAX_SEGS)
				return false;
			p->seg[p->n++] = s;
		}
		s = slash ? slash + 1 : NULL;
	}
	return true;
}

static void
not_found(EdgeReq *req)
{
	respond_problem(req, 404, "not_found", "There is no route %.200s.", req->url);
}

/* Route a request on a session: /sessions/{id}/... */
static void
dispatch_session(EdgeReq *req, RouteCtx *c)
{
	Path *p = &c->path;

	if (!nadi_jwt_uuid_text(p->seg[1]))
	{
		respond_problem(req, 400, "invalid_session_id", "\"%.64s\" is not a session id (uuid).",
						p->seg[1]);
		return;
	}
	if (p->n == 2)
	{
		if (is_method(req, "GET"))
			route_authenticate(req, session_get);
		else if (strcmp(req->method, "DELETE") == 0)
			route_authenticate(req, session_terminate);
		else
			method_not_allowed(req, "GET, DELETE");
		return;
	}
	if (p->n == 3 && strcmp(p->seg[2], "terminate") == 0)
	{
		if (strcmp(req->method, "POST") == 0)
			route_authenticate(req, session_terminate);
		else
			method_not_allowed(req, "POST");
		return;
	}
	if (p->n == 3 && strcmp(p->seg[2], "fork") == 0)
	{
		if (strcmp(req->method, "POST") == 0)
			route_authenticate(req, session_fork);
		else
			method_not_allowed(req, "POST");
		return;
	}
	if (p->n == 3 && strcmp(p->seg[2], "events") == 0)
	{
		if (is_method(req, "GET"))
			route_authenticate(req, events_get);
		else
			method_not_allowed(req, "GET");
		return;
	}
	if (p->n >= 3 && strcmp(p->seg[2], "commands") == 0)
	{
		if (p->n == 3)
		{
			if (strcmp(req->method, "POST") == 0)
				route_authenticate(req, command_create);
			else if (is_method(req, "GET"))
				route_authenticate(req, command_list);
			else
				method_not_allowed(req, "GET, POST");
			return;
		}
		if (!edge_parse_int64(p->seg[3], 1, INT64_MAX, &c->num))
		{
			respond_problem(req, 400, "invalid_command_id", "\"%.64s\" is not a command id.",
							p->seg[3]);
			return;
		}
		if (p->n == 4)
		{
			if (is_method(req, "GET"))
				route_authenticate(req, command_get);
			else
				method_not_allowed(req, "GET");
			return;
		}
		if (p->n == 5 && (strcmp(p->seg[4], "cancel") == 0 || strcmp(p->seg[4], "approve") == 0 ||
						  strcmp(p->seg[4], "deny") == 0))
		{
			if (strcmp(req->method, "POST") != 0)
				method_not_allowed(req, "POST");
			else if (strcmp(p->seg[4], "cancel") == 0)
				route_authenticate(req, command_cancel);
			else
				route_authenticate(req, command_decide);
			return;
		}
	}
	not_found(req);
}

void
routes_dispatch(EdgeReq *req)
{
	RouteCtx *c;
	Path	 *p;

	if (req->raw_url && files_is_route(req->raw_url))
	{
		files_route(req);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL)
	{
		respond_problem(req, 503, "unavailable", "%s", "Out of memory.");
		return;
	}
	req->state = c;
	req->state_free = ctx_free;
	if (console_is_path(req->url))
	{
		req->route = "console";
		console_handle(req);
		return;
	}
	if (console_cors_preflight(req))
		return;
	p = &c->path;
	if (!path_split(req->url, p))
	{
		not_found(req);
		return;
	}
	req->route = p->n ? p->seg[0] : "/";
	if (p->n == 1 && (strcmp(p->seg[0], "healthz") == 0 || strcmp(p->seg[0], "readyz") == 0 ||
					  strcmp(p->seg[0], "metrics") == 0))
	{
		if (!is_method(req, "GET"))
			method_not_allowed(req, "GET");
		else if (strcmp(p->seg[0], "healthz") == 0)
			http_respond_json(req, 200, "{\"status\":\"ok\"}", NULL);
		else if (strcmp(p->seg[0], "metrics") != 0)
			route_db(req, STMT_PING, 0, NULL, done_ready);
		/* a token only for the database's numbers: without one, the edge's own */
		else if (http_header(req, "Authorization") == NULL)
			route_metrics(req);
		else
			route_authenticate(req, route_metrics);
		return;
	}
	if (p->n == 1 && strcmp(p->seg[0], "acp") == 0)
	{
		const char *up = http_header(req, "Upgrade");

		if (up && strcasecmp(up, "websocket") == 0)
			ws_upgrade(req);
		else
			acp_http_handle(req);
		return;
	}
	if (p->n == 1 && strcmp(p->seg[0], "operator") == 0)
	{
		if (is_method(req, "GET"))
			route_authenticate(req, operator_get);
		else
			method_not_allowed(req, "GET");
		return;
	}
	if (p->n == 2 && strcmp(p->seg[0], "commands") == 0 && strcmp(p->seg[1], "batch") == 0)
	{
		if (strcmp(req->method, "POST") == 0)
			route_authenticate(req, commands_batch);
		else
			method_not_allowed(req, "POST");
		return;
	}
	if (p->n >= 1 && strcmp(p->seg[0], "sessions") == 0)
	{
		if (p->n == 1)
		{
			if (strcmp(req->method, "POST") == 0)
				route_authenticate(req, session_create);
			else if (is_method(req, "GET"))
				route_authenticate(req, session_list);
			else
				method_not_allowed(req, "GET, POST");
			return;
		}
		dispatch_session(req, c);
		return;
	}
	not_found(req);
}
