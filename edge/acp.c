/*
 * acp.c — the Agent Client Protocol (JSON-RPC 2.0, protocol version 1), the
 * agent side, independent of the transport (acp_http.c, ws.c): connections,
 * their database calls, and the methods — initialize, authenticate,
 * session/new, session/load, session/prompt, session/cancel, session/fork
 * (unstable) — and the client's answers to session/request_permission.
 * acp_session.c turns a session's events into session/update notifications.
 *
 * An ACP session is a Nadi session.  session/new creates one (policy and
 * labels may come in _meta.nadi), session/load replays one from its event
 * log, session/prompt enqueues a `message` command and is answered when the
 * command ends.  The answer to session/request_permission becomes an
 * approve or deny command; several connections may watch one session and
 * each asks its client: the first answer wins, later ones change nothing.
 *
 * Connections are freed on the next loop iteration (acp_conn_free defers),
 * since a close can start inside a feed callback.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "edge.h"
#include "jwt.h"
#include "nadi_errcodes.h"
#include "acp_int.h"

static AcpConn *conns;
static int		nconns;

int
acp_active(void)
{
	return nconns;
}

void *
acp_conn_tdata(AcpConn *c)
{
	return c->tdata;
}

const char *
acp_conn_id(AcpConn *c)
{
	return c->id;
}

const EdgeAuth *
acp_conn_auth(AcpConn *c)
{
	return &c->auth;
}

/* A fresher token of the same principal (HTTP clients send one each time). */
int
acp_conn_set_auth(AcpConn *c, const EdgeAuth *auth)
{
	if (auth->token == NULL || (c->auth.token && strcmp(c->auth.token, auth->token) == 0))
		return 0;
	return auth_copy(&c->auth, auth);
}

AcpConn *
acp_conn_new(const AcpTransport *t, void *tdata, const EdgeAuth *auth, EdgeProblem *p)
{
	AcpConn		 *c;
	EdgeQuota	 *quota;
	unsigned char rnd[16];

	if ((quota = quota_take(QUOTA_ACP, auth, p)) == NULL)
		return NULL;
	c = calloc(1, sizeof(*c));
	if (c == NULL || RAND_bytes(rnd, sizeof(rnd)) != 1 || (auth && auth_copy(&c->auth, auth) < 0))
	{
		free(c);
		quota_give(quota, QUOTA_ACP);
		problem_set(p, 503, "unavailable", "Out of memory.");
		return NULL;
	}
	c->quota = quota;
	for (int i = 0; i < 16; i++)
		snprintf(c->id + 2 * i, 3, "%02x", rnd[i]);
	c->t = t;
	c->tdata = tdata;
	c->next_rpc_id = 1;
	c->next = conns;
	if (conns)
		conns->prev = c;
	conns = c;
	nconns++;
	return c;
}

static void
conn_reap_fn(EvTimer *t)
{
	AcpConn *c = t->data;

	ev_timer_cancel(&c->dead_timer);
	acp_free_dead(c);
	auth_clear(&c->auth);
	free(c);
}

/*
 * Forget the connection: stop its subscriptions and database calls now,
 * free the memory on the next loop iteration.  The transport must not use
 * c afterwards.
 */
void
acp_conn_free(AcpConn *c)
{
	if (c == NULL || c->closing)
		return;
	c->closing = true;
	while (c->sessions)
		acp_session_detach(c->sessions);
	while (c->ops)
	{
		AcpOp *op = c->ops;

		c->ops = op->next;
		db_cancel(op->job);
		json_decref(op->rpc_id);
		free(op);
	}
	while (c->perms)
	{
		AcpPerm *p = c->perms;

		c->perms = p->next;
		free(p);
	}
	if (c->prev)
		c->prev->next = c->next;
	else
		conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	nconns--;
	quota_give(c->quota, QUOTA_ACP);
	c->quota = NULL;
	ev_timer_arm(&c->reap, 0, conn_reap_fn, c);
}

/* ------------------------------------------------------------------------
 * Sending
 * ------------------------------------------------------------------------ */

void
acp_send(AcpConn *c, json_t *msg, const char *session, json_t *response_id)
{
	char *text;

	if (c->closing)
	{
		json_decref(msg);
		return;
	}
	json_object_set_new(msg, "jsonrpc", json_string("2.0"));
	text = json_compact(msg);
	json_decref(msg);
	if (text == NULL)
		return;
	edge_metrics.acp_messages_out++;
	if (c->t->send(c, text, strlen(text), session, response_id) < 0)
		c->t->close(c, 1008, "output buffer full");
	free(text);
}

void
acp_reply(AcpConn *c, json_t *id, json_t *result)
{
	acp_send(c, json_pack("{s:O, s:o}", "id", id, "result", result), NULL, id);
}

void
acp_reply_error(AcpConn *c, json_t *id, int code, const char *message, json_t *data)
{
	json_t *err = json_pack("{s:i, s:s}", "code", code, "message", message);

	if (data)
		json_object_set_new(err, "data", data);
	acp_send(c, json_pack("{s:O, s:o}", "id", id ? id : json_null(), "error", err), NULL, id);
}

/* A database problem as a JSON-RPC error. */
void
acp_reply_problem(AcpConn *c, json_t *id, const EdgeProblem *p)
{
	int code = p->status == 404											  ? ACP_NOT_FOUND
			   : (p->status == 401 || p->status == 403)					  ? ACP_AUTH_REQUIRED
			   : p->status == 400 || p->status == 413 || p->status == 422 ? RPC_INVALID_PARAMS
																		  : RPC_INTERNAL_ERROR;

	acp_reply_error(c, id, code, p->title ? p->title : "Error",
					json_pack("{s:i, s:s, s:s}", "status", p->status, "code",
							  p->code ? p->code : "error", "detail", p->detail));
}

void
acp_notify_update(AcpSession *s, json_t *update)
{
	if (s->seq <= s->quiet_through)
	{
		json_decref(update);
		return;
	}
	acp_send(s->conn,
			 json_pack("{s:s, s:{s:s, s:o, s:{s:{s:I}}}}", "method", "session/update", "params",
					   "sessionId", s->sid, "update", update, "_meta", "nadi", "seq",
					   (json_int_t) s->seq),
			 s->sid, NULL);
}

json_t *
acp_text_block(const char *text)
{
	return json_pack("{s:s, s:s}", "type", "text", "text", text ? text : "");
}

/* ------------------------------------------------------------------------
 * Database calls for the connection
 * ------------------------------------------------------------------------ */

AcpOp *
acp_op_new(AcpConn *c, json_t *rpc_id, const char *sid, int64_t cmd)
{
	AcpOp *op = calloc(1, sizeof(*op));

	if (op == NULL)
		return NULL;
	op->conn = c;
	op->rpc_id = json_incref(rpc_id);
	if (sid)
		snprintf(op->sid, sizeof(op->sid), "%s", sid);
	op->cmd = cmd;
	op->next = c->ops;
	if (c->ops)
		c->ops->prev = op;
	c->ops = op;
	return op;
}

void
acp_op_done(AcpOp *op)
{
	AcpConn *c = op->conn;

	if (op->prev)
		op->prev->next = op->next;
	else
		c->ops = op->next;
	if (op->next)
		op->next->prev = op->prev;
	json_decref(op->rpc_id);
	free(op);
}

/* Submit for op; false (and op freed, error sent) when the queue is full. */
bool
acp_op_submit(AcpOp *op, EdgeStmt stmt, int n, const char *const *params, EdgeDbDone done)
{
	op->job = db_submit(stmt, &op->conn->auth, n, params, done, op);
	if (op->job)
		return true;
	if (op->rpc_id)
		acp_reply_error(op->conn, op->rpc_id, RPC_INTERNAL_ERROR,
						"The service is overloaded; retry.", NULL);
	acp_op_done(op);
	return false;
}

void
acp_enqueue(AcpOp *op, const char *sid, const char *type, json_t *payload, EdgeDbDone done)
{
	char	   *text = json_compact(payload);
	const char *params[4] = {sid, type, text, NULL};

	acp_op_submit(op, STMT_COMMAND_ENQUEUE, 4, params, done);
	free(text);
}

/* ------------------------------------------------------------------------
 * Methods
 * ------------------------------------------------------------------------ */

/*
 * Room for one more session on c (those loaded and those being created
 * count)?  If not, the request is answered with an error naming the limit.
 */
static bool
session_room(AcpConn *c, json_t *id)
{
	if (c->nsessions + c->opening < edge_cfg.max_acp_sessions)
		return true;
	acp_reply_error(
		c, id, ACP_LIMIT_EXCEEDED,
		"Too many sessions on this ACP connection: it has as many loaded as the edge "
		"allows one connection; open another connection for more.",
		json_pack("{s:s, s:i}", "code", "acp_session_limit", "limit", edge_cfg.max_acp_sessions));
	return false;
}

static json_t *
initialize_result(void)
{
	/* sessionCapabilities.fork: the unstable session/fork */
	return json_pack(
		"{s:i, s:{s:b, s:{s:b, s:b, s:b}, s:{s:b, s:b}, s:{s:{}}}, s:[], s:{s:s, s:s, s:s}}",
		"protocolVersion", 1, "agentCapabilities", "loadSession", 1, "promptCapabilities", "image",
		0, "audio", 0, "embeddedContext", 1, "mcpCapabilities", "http", 0, "sse", 0,
		"sessionCapabilities", "fork", "authMethods", "agentInfo", "name", "nadi-edge", "title",
		"Nadi", "version", NADI_VERSION);
}

char *
acp_initialize_response(AcpConn *c, json_t *msg)
{
	json_t *r = json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", json_object_get(msg, "id"),
						  "result", initialize_result());
	char   *text = json_compact(r);

	json_decref(r);
	c->initialized = true;
	edge_metrics.acp_messages_in++;
	edge_metrics.acp_messages_out++;
	return text;
}

/*
 * The answer to a statement that opens a session on the connection
 * (session/new, session/fork): false, and the request answered with the
 * problem, when it made none.
 */
static bool
session_opened(AcpOp *op, EdgeDbResult *r)
{
	EdgeProblem p;

	op->job = NULL;
	op->conn->opening--;
	if (r->ok && db_rows(r) == 1)
		return true;
	problem_from_db(&p, r->ok ? SQLSTATE_NADI_SESSION_NOT_FOUND : r->sqlstate, r->message,
					r->detail, r->hint);
	acp_reply_problem(op->conn, op->rpc_id, &p);
	return false;
}

static void
done_session_new(void *arg, EdgeDbResult *r)
{
	AcpOp *op = arg;

	if (session_opened(op, r))
		acp_session_attach(op->conn, db_value(r, 0, 1), strtoll(db_value(r, 0, 2), NULL, 10),
						   op->rpc_id, false, 0);
	acp_op_done(op);
}

static void
method_session_new(AcpConn *c, json_t *id, json_t *params)
{
	json_t	   *cwd = json_object_get(params, "cwd");
	json_t	   *nadi = json_object_get(json_object_get(params, "_meta"), "nadi");
	json_t	   *policy = json_object_get(nadi, "policy");
	json_t	   *labels = json_object_get(nadi, "labels");
	json_t	   *meta;
	char	   *t[3];
	const char *p[4];
	AcpOp	   *op;

	if ((cwd && !json_is_string(cwd)) || (policy && !json_is_object(policy)) ||
		(labels && !json_is_object(labels)))
	{
		acp_reply_error(c, id, RPC_INVALID_PARAMS,
						"Invalid params: cwd must be a string; "
						"_meta.nadi.policy and _meta.nadi.labels must be objects.",
						NULL);
		return;
	}
	if (!session_room(c, id) || (op = acp_op_new(c, id, NULL, 0)) == NULL)
		return;
	meta = json_pack("{s:{s:O}}", "acp", "cwd", cwd ? cwd : json_null());
	p[0] = NULL;
	p[1] = t[0] = json_compact(meta);
	p[2] = t[1] = labels ? json_compact(labels) : NULL;
	p[3] = t[2] = policy ? json_compact(policy) : NULL;
	if (acp_op_submit(op, STMT_SESSION_CREATE, 4, p, done_session_new))
		c->opening++;
	json_decref(meta);
	for (int i = 0; i < 3; i++)
		free(t[i]);
}

/*
 * session/fork (unstable): a new Nadi session from the source session at
 * its latest completed point, or at _meta.nadi.at_seq (nadi.session_fork
 * moves a point inside a running command back to before that command).
 * The fork is attached to the connection from its first event on, as
 * session/new does (the client has the conversation it forked); the answer
 * says in _meta.nadi where the fork came from and which seq was used.
 * cwd and mcpServers are the source's: a fork keeps its workspace.
 */
static void
done_session_fork(void *arg, EdgeDbResult *r)
{
	AcpOp	*op = arg;
	AcpConn *c = op->conn;

	if (session_opened(op, r))
	{
		const char *sid = db_value(r, 0, 1);
		json_t	   *fork = json_loads(db_value(r, 0, 3), 0, NULL);
		AcpSession *s;

		acp_session_attach(c, sid, strtoll(db_value(r, 0, 2), NULL, 10), op->rpc_id, false, 0);
		if ((s = acp_session_find(c, sid)) != NULL && fork)
			s->open_meta = json_pack("{s:o}", "nadi", fork);
		else
			json_decref(fork);
	}
	acp_op_done(op);
}

static void
method_session_fork(AcpConn *c, json_t *id, json_t *params)
{
	const char *sid = json_string_value(json_object_get(params, "sessionId"));
	json_t	   *cwd = json_object_get(params, "cwd");
	json_t	   *meta = json_object_get(params, "_meta");
	json_t	   *nadi = json_object_get(meta, "nadi");
	json_t	   *at = json_object_get(nadi, "at_seq");
	char		num[24];
	const char *p[2] = {sid, NULL};
	AcpOp	   *op;

	if (!nadi_jwt_uuid_text(sid))
	{
		acp_reply_error(c, id, ACP_NOT_FOUND, "Resource not found: no such session.", NULL);
		return;
	}
	if ((cwd && !json_is_string(cwd)) || (meta && !json_is_object(meta)) ||
		(nadi && !json_is_object(nadi)) ||
		(at && !json_is_null(at) && (!json_is_integer(at) || json_integer_value(at) < 1)))
	{
		acp_reply_error(c, id, RPC_INVALID_PARAMS,
						"Invalid params: cwd must be a string, _meta and _meta.nadi objects, and "
						"_meta.nadi.at_seq a positive integer (the seq of an event of the "
						"session to fork at).",
						NULL);
		return;
	}
	if (!session_room(c, id) || (op = acp_op_new(c, id, NULL, 0)) == NULL)
		return;
	if (at && json_is_integer(at))
	{
		snprintf(num, sizeof(num), "%lld", (long long) json_integer_value(at));
		p[1] = num;
	}
	if (acp_op_submit(op, STMT_SESSION_FORK, 2, p, done_session_fork))
		c->opening++;
}

static void
done_prompt(void *arg, EdgeDbResult *r)
{
	AcpOp	   *op = arg;
	AcpConn	   *c = op->conn;
	AcpSession *s = acp_session_find(c, op->sid);

	op->job = NULL;
	if (!r->ok)
	{
		EdgeProblem p;

		problem_from_db(&p, r->sqlstate, r->message, r->detail, r->hint);
		acp_reply_problem(c, op->rpc_id, &p);
	}
	else if (s == NULL)
		acp_reply_error(c, op->rpc_id, ACP_NOT_FOUND, "The session is no longer loaded.", NULL);
	else
	{
		AcpCmd *m = acp_cmd_get(s, strtoll(db_value(r, 0, 1), NULL, 10));

		if (m == NULL)
			acp_reply_error(c, op->rpc_id, RPC_INTERNAL_ERROR, "Out of memory.", NULL);
		else
		{
			m->prompt_id = json_incref(op->rpc_id);
			/* its events may have come first */
			acp_cmd_answer(s, m);
		}
	}
	acp_op_done(op);
}

/* The string member key of o, or dflt when o has none. */
static const char *
str_or(const json_t *o, const char *key, const char *dflt)
{
	const char *v = json_string_value(json_object_get(o, key));

	return v ? v : dflt;
}

/* The prompt's content blocks as one message text. */
static char *
prompt_text(json_t *prompt, const char **err)
{
	EdgeBuf b = {0};
	size_t	i;
	json_t *blk;

	*err = NULL;
	if (!json_is_array(prompt) || json_array_size(prompt) == 0)
	{
		*err = "prompt must be a non-empty array of content blocks";
		return NULL;
	}
	json_array_foreach(prompt, i, blk)
	{
		const char *type = json_string_value(json_object_get(blk, "type"));
		json_t	   *res = json_object_get(blk, "resource");

		if (i > 0)
			buf_puts(&b, "\n\n");
		if (type && strcmp(type, "text") == 0 && json_is_string(json_object_get(blk, "text")))
			buf_puts(&b, json_string_value(json_object_get(blk, "text")));
		else if (type && strcmp(type, "resource_link") == 0 &&
				 json_is_string(json_object_get(blk, "uri")))
			buf_printf(&b, "[%s](%s)", str_or(blk, "name", "resource"),
					   json_string_value(json_object_get(blk, "uri")));
		else if (type && strcmp(type, "resource") == 0 &&
				 json_is_string(json_object_get(res, "text")))
			buf_printf(&b, "%s:\n%s", str_or(res, "uri", "resource"),
					   json_string_value(json_object_get(res, "text")));
		else
		{
			*err = "only text, resource_link and text resource blocks are supported";
			buf_free(&b);
			return NULL;
		}
	}
	return b.data ? buf_cstr(&b) : strdup("");
}

static void
method_session_prompt(AcpConn *c, json_t *id, json_t *params)
{
	const char *sid = json_string_value(json_object_get(params, "sessionId"));
	const char *err;
	char	   *text;
	json_t	   *payload;
	AcpOp	   *op;

	if (sid == NULL || acp_session_find(c, sid) == NULL)
	{
		acp_reply_error(c, id, ACP_NOT_FOUND,
						"Unknown session: create it with session/new "
						"or load it with session/load on this connection first.",
						NULL);
		return;
	}
	text = prompt_text(json_object_get(params, "prompt"), &err);
	if (text == NULL)
	{
		acp_reply_error(c, id, RPC_INVALID_PARAMS, err ? err : "Out of memory.", NULL);
		return;
	}
	payload = json_pack("{s:s}", "text", text);
	free(text);
	if (payload == NULL)
	{
		acp_reply_error(c, id, RPC_INVALID_PARAMS, "The prompt is not valid UTF-8.", NULL);
		return;
	}
	if ((op = acp_op_new(c, id, sid, 0)) != NULL)
		acp_enqueue(op, sid, "message", payload, done_prompt);
	json_decref(payload);
}

static void
done_quiet(void *arg, EdgeDbResult *r)
{
	AcpOp *op = arg;

	op->job = NULL;
	if (!r->ok && strcmp(r->sqlstate, SQLSTATE_NADI_COMMAND_STATE) != 0)
		log_info("ACP connection %s: command for session %s failed: %s", op->conn->id, op->sid,
				 r->message ? r->message : r->sqlstate);
	acp_op_done(op);
}

static void
method_session_cancel(AcpConn *c, json_t *params)
{
	const char *sid = json_string_value(json_object_get(params, "sessionId"));
	AcpSession *s = sid ? acp_session_find(c, sid) : NULL;

	if (s == NULL)
		return;
	for (AcpCmd *m = s->cmds; m; m = m->next)
	{
		AcpOp  *op;
		json_t *payload;

		if (m->finished || m->prompt_id == NULL || m->cancel_requested)
			continue;
		m->cancel_requested = true;
		if ((op = acp_op_new(c, NULL, sid, m->id)) == NULL)
			continue;
		payload = json_pack("{s:I}", "command_id", (json_int_t) m->id);
		acp_enqueue(op, sid, "cancel", payload, done_quiet);
		json_decref(payload);
	}
}

/* The client answered one of our session/request_permission requests. */
static void
handle_response(AcpConn *c, json_t *msg)
{
	json_t	   *id = json_object_get(msg, "id");
	json_t	   *outcome = json_object_get(json_object_get(msg, "result"), "outcome");
	const char *kind = json_string_value(json_object_get(outcome, "outcome"));
	const char *option = json_string_value(json_object_get(outcome, "optionId"));
	AcpPerm	   *p = NULL;
	AcpOp	   *op;
	json_t	   *payload;

	if (!json_is_integer(id))
		return;
	for (AcpPerm **pp = &c->perms; *pp; pp = &(*pp)->next)
		if ((*pp)->rpc_id == json_integer_value(id))
		{
			p = *pp;
			*pp = p->next;
			break;
		}
	if (p == NULL)
		return;
	/* "cancelled" (or an error): session/cancel takes care of the command */
	if (kind && strcmp(kind, "selected") == 0 && option &&
		(strcmp(option, "allow") == 0 || strcmp(option, "reject") == 0) &&
		(op = acp_op_new(c, NULL, p->sid, p->cmd)) != NULL)
	{
		bool allow = strcmp(option, "allow") == 0;

		payload = json_pack("{s:I}", "command_id", (json_int_t) p->cmd);
		if (!allow)
			json_object_set_new(payload, "reason", json_string("denied by the user"));
		acp_enqueue(op, p->sid, allow ? "approve" : "deny", payload, done_quiet);
		json_decref(payload);
	}
	free(p);
}

/* Handle one JSON-RPC message from the client. */
void
acp_handle(AcpConn *c, json_t *msg)
{
	json_t	   *id = json_object_get(msg, "id");
	json_t	   *params = json_object_get(msg, "params");
	const char *method = json_string_value(json_object_get(msg, "method"));
	const char *version = json_string_value(json_object_get(msg, "jsonrpc"));

	if (c->closing)
		return;
	edge_metrics.acp_messages_in++;
	if (version == NULL || strcmp(version, "2.0") != 0 ||
		(id && !json_is_integer(id) && !json_is_string(id) && !json_is_null(id)))
	{
		acp_reply_error(c, id && (json_is_integer(id) || json_is_string(id)) ? id : NULL,
						RPC_INVALID_REQUEST, "Invalid Request: not a JSON-RPC 2.0 message.", NULL);
		return;
	}
	if (method == NULL)
	{
		if (id && (json_object_get(msg, "result") || json_object_get(msg, "error")))
			handle_response(c, msg);
		else
			acp_reply_error(c, id, RPC_INVALID_REQUEST, "Invalid Request: no method.", NULL);
		return;
	}
	if (params && !json_is_object(params))
	{
		if (id)
			acp_reply_error(c, id, RPC_INVALID_PARAMS, "Invalid params: params must be an object.",
							NULL);
		return;
	}
	if (strcmp(method, "session/cancel") == 0)
	{
		method_session_cancel(c, params);
		return;
	}
	if (id == NULL)
		return; /* other notifications: nothing to do */
	if (strcmp(method, "initialize") == 0)
	{
		c->initialized = true;
		acp_reply(c, id, initialize_result());
	}
	else if (!c->initialized)
		acp_reply_error(c, id, RPC_INVALID_REQUEST, "Call initialize first.", NULL);
	else if (strcmp(method, "authenticate") == 0)
	{
		if (c->auth.token || edge_cfg.dev_no_auth)
			acp_reply(c, id, json_object());
		else
			acp_reply_error(c, id, ACP_AUTH_REQUIRED,
							"Authentication required: connect with "
							"\"Authorization: Bearer <token>\".",
							NULL);
	}
	else if (strcmp(method, "session/new") == 0)
		method_session_new(c, id, params);
	else if (strcmp(method, "session/load") == 0)
	{
		const char *sid = json_string_value(json_object_get(params, "sessionId"));
		json_t	   *meta = json_object_get(params, "_meta");
		json_t	   *nadi = json_object_get(meta, "nadi");
		json_t	   *after = json_object_get(nadi, "after");

		if (!nadi_jwt_uuid_text(sid))
			acp_reply_error(c, id, ACP_NOT_FOUND, "Resource not found: no such session.", NULL);
		else if ((meta && !json_is_object(meta)) || (nadi && !json_is_object(nadi)) ||
				 (after && (!json_is_integer(after) || json_integer_value(after) < 0)))
			acp_reply_error(c, id, RPC_INVALID_PARAMS,
							"Invalid params: _meta and _meta.nadi must be objects, and "
							"_meta.nadi.after a non-negative integer "
							"(the seq of the last update the client saw).",
							NULL);
		else if (acp_session_find(c, sid) || session_room(c, id))
			acp_session_attach(c, sid, 0, id, true, after ? json_integer_value(after) : 0);
	}
	else if (strcmp(method, "session/prompt") == 0)
		method_session_prompt(c, id, params);
	else if (strcmp(method, "session/fork") == 0)
		method_session_fork(c, id, params);
	else
		acp_reply_error(c, id, RPC_METHOD_NOT_FOUND, "Method not found.",
						json_pack("{s:s}", "method", method));
}

/* Once a second from the transports: a token that expired ends the connection. */
void
acp_tick(AcpConn *c)
{
	if (!c->closing && auth_expired(&c->auth))
		c->t->close(c, 1008, "token expired");
}
