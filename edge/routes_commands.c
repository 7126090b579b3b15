/*
 * routes_commands.c — the REST routes of a session's commands (send, list,
 * get, cancel, approve, deny), of a batch of commands across sessions, and
 * of a session's events (a JSON page, or a Server-Sent Events stream handed
 * to sse.c).  routes.c dispatches here.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <microhttpd.h>

#include "edge.h"
#include "routes_int.h"

/* ------------------------------------------------------------------------
 * Commands
 * ------------------------------------------------------------------------ */

static void
done_command_enqueued(void *arg, EdgeDbResult *r)
{
	EdgeReq	   *req = arg;
	RouteCtx   *c = req->state;
	char		loc[128];
	const char *headers[] = {MHD_HTTP_HEADER_LOCATION, loc, NULL, NULL, NULL};

	req->job = NULL;
	if (!r->ok || db_rows(r) != 1)
	{
		single_row(req, r, 202);
		return;
	}
	snprintf(loc, sizeof(loc), "/v1/sessions/%s/commands/%s", c->path.seg[1], db_value(r, 0, 1));
	if (strcmp(db_value(r, 0, 2), "t") == 0)
	{
		headers[2] = "Idempotency-Replayed";
		headers[3] = "true";
	}
	http_respond_json(req, 202, db_value(r, 0, 0), headers);
}

/* The Idempotency-Key header, if any: 1 to 255 printable ASCII characters. */
static bool
idempotency_key(EdgeReq *req, RouteCtx *c)
{
	const char *k = http_header(req, "Idempotency-Key");
	size_t		n;

	c->key[0] = '\0';
	if (k == NULL)
		return true;
	n = strlen(k);
	for (size_t i = 0; i < n; i++)
		if (k[i] < 0x21 || k[i] > 0x7e)
			n = 0;
	if (n == 0 || n > 255)
	{
		respond_problem(req, 400, "invalid_idempotency_key", "%s",
						"Idempotency-Key must be 1 to 255 printable ASCII characters.");
		return false;
	}
	memcpy(c->key, k, n + 1);
	return true;
}

static void
enqueue(EdgeReq *req, const char *type, json_t *payload)
{
	RouteCtx   *c = req->state;
	char	   *text = json_compact(payload);
	const char *params[4] = {c->path.seg[1], type, text, c->key[0] ? c->key : NULL};

	route_db(req, STMT_COMMAND_ENQUEUE, 4, params, done_command_enqueued);
	free(text);
}

void
command_create(EdgeReq *req)
{
	static const char *const fields[] = {"type", "payload", NULL};
	RouteCtx				*c = req->state;
	json_t					*body;
	json_t					*type;
	json_t					*payload;
	EdgeProblem				 p;

	if (!idempotency_key(req, c) || (body = body_json(req, false)) == NULL)
		return;
	c->body = body;
	if (json_only_fields(body, fields, &p) < 0)
	{
		http_respond_problem(req, &p);
		return;
	}
	type = json_object_get(body, "type");
	payload = json_object_get(body, "payload");
	if (!json_is_string(type))
	{
		respond_problem(req, 400, "invalid_field", "%s",
						"\"type\" must be a string "
						"(message, tool, cancel, approve or deny).");
		return;
	}
	if (payload && !json_is_object(payload))
	{
		respond_problem(req, 400, "invalid_field", "%s", "\"payload\" must be a JSON object.");
		return;
	}
	if (payload == NULL)
		json_object_set_new(body, "payload", payload = json_object());
	enqueue(req, json_string_value(type), payload);
}

static void
done_commands_batch(void *arg, EdgeDbResult *r)
{
	EdgeReq	   *req = arg;
	EdgeBuf		b = {0};
	const char *replayed[] = {"Idempotency-Replayed", "true", NULL};

	req->job = NULL;
	if (!r->ok || db_rows(r) != 1)
	{
		single_row(req, r, 202);
		return;
	}
	buf_printf(&b, "{\"commands\":%s}", db_value(r, 0, 0));
	http_respond_json(req, 202, buf_cstr(&b),
					  strcmp(db_value(r, 0, 1), "t") == 0 ? replayed : NULL);
	buf_free(&b);
}

/*
 * POST /v1/commands/batch {"commands": [{session_id, type, payload,
 * idempotency_key}, ...]}: one call of nadi.command_enqueue_many under the
 * request's token, which checks every element (and names the one it
 * refuses); all of the batch is enqueued, or none of it.
 */
void
commands_batch(EdgeReq *req)
{
	static const char *const fields[] = {"commands", NULL};
	RouteCtx				*c = req->state;
	json_t					*body;
	json_t					*commands;
	EdgeProblem				 p;
	char					*text;
	const char				*params[1];

	if (http_header(req, "Idempotency-Key") != NULL)
	{
		respond_problem(req, 400, "invalid_idempotency_key", "%s",
						"A batch takes no Idempotency-Key header: give each command its own "
						"\"idempotency_key\".");
		return;
	}
	if ((body = body_json(req, false)) == NULL)
		return;
	c->body = body;
	if (json_only_fields(body, fields, &p) < 0)
	{
		http_respond_problem(req, &p);
		return;
	}
	commands = json_object_get(body, "commands");
	if (!json_is_array(commands))
	{
		respond_problem(req, 400, "invalid_field", "%s",
						"\"commands\" must be a JSON array of {session_id, type, payload, "
						"idempotency_key}.");
		return;
	}
	text = json_compact(commands);
	params[0] = text;
	route_db(req, STMT_COMMAND_ENQUEUE_MANY, 1, params, done_commands_batch);
	free(text);
}

/* approve / deny of one waiting tool call: {"reason": "..."} optional */
void
command_decide(EdgeReq *req)
{
	static const char *const fields[] = {"reason", NULL};
	RouteCtx				*c = req->state;
	json_t					*body;
	json_t					*payload;
	json_t					*reason;
	EdgeProblem				 p;

	if (!idempotency_key(req, c) || (body = body_json(req, true)) == NULL)
		return;
	c->body = body;
	if (json_only_fields(body, fields, &p) < 0)
	{
		http_respond_problem(req, &p);
		return;
	}
	reason = json_object_get(body, "reason");
	if (reason && !json_is_string(reason))
	{
		respond_problem(req, 400, "invalid_field", "%s", "\"reason\" must be a string.");
		return;
	}
	payload = json_pack("{s:I}", "command_id", (json_int_t) c->num);
	if (reason)
		json_object_set(payload, "reason", reason);
	enqueue(req, c->path.seg[4], payload);
	json_decref(payload);
}

void
command_get(EdgeReq *req)
{
	RouteCtx   *c = req->state;
	const char *params[2] = {c->path.seg[1], c->path.seg[3]};

	route_db(req, STMT_COMMAND_GET, 2, params, done_row200);
}

void
command_cancel(EdgeReq *req)
{
	RouteCtx   *c = req->state;
	const char *params[2] = {c->path.seg[1], c->path.seg[3]};

	route_db(req, STMT_COMMAND_CANCEL, 2, params, done_row200);
}

static void
done_command_list(void *arg, EdgeDbResult *r)
{
	EdgeReq *req = arg;

	req->job = NULL;
	list_rows(req, r, "commands", ((RouteCtx *) req->state)->limit, false);
}

void
command_list(EdgeReq *req)
{
	static const char *const q[] = {"status", "after", "limit", NULL};
	RouteCtx				*c = req->state;
	int64_t					 after;
	int64_t					 limit;
	char					 a[24];
	char					 lim[16];
	const char				*params[4];

	if (!query_only(req, q) || !query_int(req, "after", 0, INT64_MAX, 0, &after) ||
		!query_int(req, "limit", 1, LIST_MAX, 100, &limit))
		return;
	c->limit = (int) limit;
	snprintf(a, sizeof(a), "%lld", (long long) after);
	snprintf(lim, sizeof(lim), "%d", c->limit + 1);
	params[0] = c->path.seg[1];
	params[1] = http_query(req, "status");
	params[2] = a;
	params[3] = lim;
	route_db(req, STMT_COMMAND_LIST, 4, params, done_command_list);
}

/* ------------------------------------------------------------------------
 * Events: a JSON page, or a Server-Sent Events stream
 * ------------------------------------------------------------------------ */

static void
done_events(void *arg, EdgeDbResult *r)
{
	EdgeReq	 *req = arg;
	RouteCtx *c = req->state;
	EdgeBuf	  b = {0};
	int		  n;

	req->job = NULL;
	if (!r->ok)
	{
		db_failed(req, r);
		return;
	}
	n = db_rows(r);
	buf_puts(&b, "{\"events\":[");
	for (int i = 0; i < n; i++)
	{
		if (i)
			buf_puts(&b, ",");
		buf_puts(&b, db_value(r, i, 1));
	}
	/* with nothing new, the cursor stays where the client put it */
	if (n)
		buf_printf(&b, "],\"next_after\":%s}", db_value(r, n - 1, 0));
	else
		buf_printf(&b, "],\"next_after\":%lld}", (long long) c->num);
	http_respond_json(req, 200, buf_cstr(&b), NULL);
	buf_free(&b);
}

static bool
wants_sse(EdgeReq *req)
{
	const char *accept = http_header(req, "Accept");

	return accept && strstr(accept, "text/event-stream") != NULL;
}

/*
 * ?event_names=: "1" or "true" names each SSE event by its kind ("event:"
 * lines, for EventSource listeners by kind); "0", "false" or absent keeps
 * unnamed events (onmessage).  Anything else is a 400.
 */
static bool
query_event_names(EdgeReq *req, bool *out)
{
	const char *v = http_query(req, "event_names");

	*out = false;
	if (v == NULL || strcmp(v, "0") == 0 || strcmp(v, "false") == 0)
		return true;
	if (strcmp(v, "1") == 0 || strcmp(v, "true") == 0)
	{
		*out = true;
		return true;
	}
	respond_problem(req, 400, "invalid_parameter", "%s",
					"\"event_names\" must be 1, true, 0 or false.");
	return false;
}

void
events_get(EdgeReq *req)
{
	static const char *const q[] = {"after", "limit", "event_names", NULL};
	RouteCtx				*c = req->state;
	const char				*last = http_header(req, "Last-Event-ID");
	int64_t					 after;
	int64_t					 limit;
	bool					 event_names;
	char					 a[24];
	char					 lim[16];
	const char				*params[3];

	if (!query_only(req, q) || !query_int(req, "after", 0, INT64_MAX, 0, &after) ||
		!query_event_names(req, &event_names))
		return;
	if (wants_sse(req))
	{
		if (last && !edge_parse_int64(last, 0, INT64_MAX, &after))
		{
			respond_problem(req, 400, "invalid_last_event_id", "%s",
							"Last-Event-ID must be the id of an event (a non-negative integer).");
			return;
		}
		sse_open(req, c->path.seg[1], after, event_names);
		return;
	}
	if (!query_int(req, "limit", 1, LIST_MAX, 100, &limit))
		return;
	c->num = after;
	snprintf(a, sizeof(a), "%lld", (long long) after);
	snprintf(lim, sizeof(lim), "%d", (int) limit);
	params[0] = c->path.seg[1];
	params[1] = a;
	params[2] = lim;
	route_db(req, STMT_EVENTS_READ, 3, params, done_events);
}
