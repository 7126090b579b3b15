/*
 * acp_http.c — ACP over HTTP at /acp, as the protocol's remote-transport
 * proposal and the official SDK's experimental HTTP client and server do it:
 *
 *   POST   /acp  initialize (no Acp-Connection-Id): 200 with the JSON-RPC
 *                response and a new Acp-Connection-Id header
 *   POST   /acp  any other message, with Acp-Connection-Id (and
 *                Acp-Session-Id for session-scoped methods): 202, empty
 *   GET    /acp  Accept: text/event-stream: the connection's stream, or with
 *                Acp-Session-Id that session's stream (one receiver each)
 *   DELETE /acp  close the connection
 *
 * The agent's messages are SSE events ("data: <json>\n\n").  A response
 * goes to the stream of the session its request was posted with (requests
 * without a session: the connection stream); notifications and requests
 * naming a sessionId go to that session's stream.  session/load's answer
 * too, unlike the SDK's reference server, which sends it on the connection
 * stream: ACP wants the whole history as session/update notifications
 * before the answer, and only one stream keeps that order (the SDK's client
 * takes a response on any stream).  A stream with no receiver buffers up to
 * --stream-buffer bytes; beyond that the connection is closed.
 *
 * Every request must carry a token of the principal that opened the
 * connection; another principal gets 404, as for an unknown id.  A
 * connection without a receiver for --acp-idle seconds is closed.  The
 * connection is transport state on this edge: after losing it a client
 * initializes again and uses session/load, which replays from the log.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <microhttpd.h>

#include "edge.h"
#include "acp_id.h"

#define ACP_MAX_SLOTS 256
#define ACP_MAX_ROUTES 1024

typedef struct AcpSlot
{
	char			sid[37]; /* "" for the connection stream */
	EdgeStream	   *st;
	EdgeQuota	   *quota; /* st's share of the stream limits */
	EdgeBuf			pending;
	struct AcpHttp *h;
	struct AcpSlot *next;
} AcpSlot;

typedef struct AcpRoute
{
	char			 key[96];
	char			 sid[37];
	struct AcpRoute *next;
} AcpRoute;

typedef struct AcpHttp
{
	AcpConn		   *acp;
	AcpSlot		   *slots;
	int				nslots;
	AcpRoute	   *routes;
	int				nroutes;
	uint64_t		last_active_ms;
	uint64_t		last_ping_ms;
	bool			closed;
	EvTimer			reap;
	struct AcpHttp *prev, *next;
} AcpHttp;

static AcpHttp *list;
static int		nlist;

static const char *const session_methods[] = {"session/cancel",
											  "session/close",
											  "session/delete",
											  "session/fork",
											  "session/load",
											  "session/prompt",
											  "session/resume",
											  "session/set_config_option",
											  "session/set_mode",
											  "session/set_model",
											  NULL};

static AcpSlot *
slot_get(AcpHttp *h, const char *sid, bool create)
{
	AcpSlot *s;

	for (s = h->slots; s; s = s->next)
		if (strcmp(s->sid, sid) == 0)
			return s;
	if (!create || h->nslots >= ACP_MAX_SLOTS || (s = calloc(1, sizeof(*s))) == NULL)
		return NULL;
	snprintf(s->sid, sizeof(s->sid), "%s", sid);
	s->h = h;
	s->next = h->slots;
	h->slots = s;
	h->nslots++;
	return s;
}

static void
reap_fn(EvTimer *t)
{
	free(t->data);
}

/* Close: end the streams, forget the ACP state; memory goes next iteration. */
static void
http_close(AcpHttp *h)
{
	if (h->closed)
		return;
	h->closed = true;
	while (h->slots)
	{
		AcpSlot *s = h->slots;

		h->slots = s->next;
		if (s->st)
		{
			stream_detach(s->st);
			quota_give(s->quota, QUOTA_STREAM);
		}
		buf_free(&s->pending);
		free(s);
	}
	while (h->routes)
	{
		AcpRoute *r = h->routes;

		h->routes = r->next;
		free(r);
	}
	acp_conn_free(h->acp);
	h->acp = NULL;
	if (h->prev)
		h->prev->next = h->next;
	else
		list = h->next;
	if (h->next)
		h->next->prev = h->prev;
	nlist--;
	ev_timer_arm(&h->reap, 0, reap_fn, h);
}

static int
t_send(AcpConn *c, const char *json, size_t len, const char *session, json_t *response_id)
{
	AcpHttp	   *h = acp_conn_tdata(c);
	const char *sid = "";
	AcpSlot	   *slot;
	EdgeBuf		frame = {0};
	int			r;

	if (h->closed)
		return 0;
	if (response_id)
	{
		char key[96];

		acp_id_key(response_id, key, sizeof(key));
		for (AcpRoute **pp = &h->routes; *pp; pp = &(*pp)->next)
			if (strcmp((*pp)->key, key) == 0)
			{
				AcpRoute *rt = *pp;

				*pp = rt->next;
				h->nroutes--;
				slot = slot_get(h, rt->sid, true);
				free(rt);
				sid = slot ? slot->sid : "";
				break;
			}
	}
	else if (session)
		sid = session;
	slot = slot_get(h, sid, true);
	if (slot == NULL)
		return -ENOBUFS;
	buf_puts(&frame, "data: ");
	buf_append(&frame, json, len);
	buf_puts(&frame, "\n\n");
	if (frame.data == NULL)
		return -ENOMEM;
	if (slot->st)
		r = stream_write(slot->st, buf_head(&frame), buf_pending(&frame));
	else if (buf_pending(&slot->pending) > 0 &&
			 buf_pending(&slot->pending) + buf_pending(&frame) > acp_buffer_limit())
		r = -ENOBUFS;
	else
		r = buf_append(&slot->pending, buf_head(&frame), buf_pending(&frame));
	buf_free(&frame);
	return r;
}

static size_t
t_room(AcpConn *c, const char *session)
{
	AcpHttp *h = acp_conn_tdata(c);
	AcpSlot *s = slot_get(h, session ? session : "", false);
	size_t	 used;

	if (h->closed)
		return 0;
	if (s == NULL)
		return acp_buffer_limit();
	if (s->st)
		return stream_room(s->st);
	used = buf_pending(&s->pending);
	return used >= acp_buffer_limit() ? 0 : acp_buffer_limit() - used;
}

static void
t_close(AcpConn *c, int code, const char *why)
{
	AcpHttp *h = acp_conn_tdata(c);

	log_info("ACP connection %s closed: %s", acp_conn_id(c), why);
	http_close(h);
}

static const AcpTransport http_transport = {.send = t_send, .room = t_room, .close = t_close};

static AcpHttp *
conn_lookup(EdgeReq *req, bool *missing)
{
	const char *id = http_header(req, "Acp-Connection-Id");

	*missing = id == NULL;
	if (id == NULL)
		return NULL;
	for (AcpHttp *h = list; h; h = h->next)
		if (!h->closed && strcmp(acp_conn_id(h->acp), id) == 0)
		{
			/* another principal's connection is as unknown as a bad id */
			if (req->has_auth && !auth_same_principal(&req->auth, acp_conn_auth(h->acp)))
				return NULL;
			if (!req->has_auth && acp_conn_auth(h->acp)->token)
				return NULL;
			return h;
		}
	return NULL;
}

static void
text_error(EdgeReq *req, int status, const char *code, const char *msg)
{
	EdgeProblem p;

	problem_set(&p, status, code, "%s", msg);
	http_respond_problem(req, &p);
}

static bool
lookup_or_answer(EdgeReq *req, AcpHttp **out)
{
	bool missing;

	*out = conn_lookup(req, &missing);
	if (*out)
		return true;
	if (missing)
		text_error(req, 400, "missing_connection_id",
				   "Send the Acp-Connection-Id from initialize.");
	else
		text_error(req, 404, "unknown_connection", "Unknown Acp-Connection-Id.");
	return false;
}

/* ------------------------------------------------------------------------
 * POST
 * ------------------------------------------------------------------------ */

static bool
is_session_method(const char *m)
{
	for (const char *const *p = session_methods; *p; p++)
		if (strcmp(m, *p) == 0)
			return true;
	return false;
}

static void
post_initialize(EdgeReq *req, json_t *msg)
{
	AcpHttp	   *h;
	char	   *text;
	const char *headers[3] = {"Acp-Connection-Id", NULL, NULL};
	EdgeProblem p;

	if (json_object_get(msg, "id") == NULL || json_is_null(json_object_get(msg, "id")))
	{
		text_error(req, 400, "invalid_request", "initialize must carry an id.");
		return;
	}
	h = calloc(1, sizeof(*h));
	if (h == NULL)
		problem_set(&p, 503, "unavailable", "Out of memory.");
	if (h == NULL || (h->acp = acp_conn_new(&http_transport, h, &req->auth, &p)) == NULL)
	{
		free(h);
		http_respond_problem(req, &p);
		return;
	}
	h->last_active_ms = ev_now_ms();
	h->next = list;
	if (list)
		list->prev = h;
	list = h;
	nlist++;
	text = acp_initialize_response(h->acp, msg);
	headers[1] = acp_conn_id(h->acp);
	http_respond_json(req, 200, text ? text : "{}", headers);
	free(text);
}

static void
post_cont(EdgeReq *req)
{
	EdgeProblem p;
	json_t	   *msg;
	json_t	   *id;
	const char *method;
	const char *hsid = http_header(req, "Acp-Session-Id");
	const char *psid;
	AcpHttp	   *h;

	if (req->body.len > 0 && req->body.data[0] == '[')
	{
		http_respond_json(req, 400,
						  "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32600,"
						  "\"message\":\"JSON-RPC batches are not supported\"}}",
						  NULL);
		return;
	}
	msg = json_parse_strict(req->body.data, req->body.len, &p);
	if (msg == NULL)
	{
		http_respond_problem(req, &p);
		return;
	}
	id = json_object_get(msg, "id");
	method = json_string_value(json_object_get(msg, "method"));
	if (method && strcmp(method, "initialize") == 0 && id)
	{
		if (http_header(req, "Acp-Connection-Id"))
			text_error(req, 400, "invalid_request",
					   "initialize is not allowed on an existing connection.");
		else
			post_initialize(req, msg);
		json_decref(msg);
		return;
	}
	if (!lookup_or_answer(req, &h))
	{
		json_decref(msg);
		return;
	}
	psid = json_string_value(json_object_get(json_object_get(msg, "params"), "sessionId"));
	if (method && (is_session_method(method) || psid) && hsid == NULL)
	{
		json_decref(msg);
		text_error(req, 400, "missing_session_id", "Missing Acp-Session-Id.");
		return;
	}
	if (method && hsid && psid && strcmp(hsid, psid) != 0)
	{
		json_decref(msg);
		text_error(req, 400, "session_id_mismatch",
				   "Acp-Session-Id does not match params.sessionId.");
		return;
	}
	if (method && id && hsid && h->nroutes < ACP_MAX_ROUTES)
	{
		AcpRoute *rt = calloc(1, sizeof(*rt));

		if (rt)
		{
			acp_id_key(id, rt->key, sizeof(rt->key));
			snprintf(rt->sid, sizeof(rt->sid), "%s", hsid);
			rt->next = h->routes;
			h->routes = rt;
			h->nroutes++;
		}
	}
	if (req->has_auth)
		acp_conn_set_auth(h->acp, &req->auth);
	h->last_active_ms = ev_now_ms();
	acp_handle(h->acp, msg);
	json_decref(msg);
	http_respond(req, 202, NULL, "", 0, NULL);
}

/* ------------------------------------------------------------------------
 * GET (a stream) and DELETE
 * ------------------------------------------------------------------------ */

static void
slot_stream_closed(EdgeStream *st, void *owner)
{
	AcpSlot *s = owner;

	s->st = NULL;
	quota_give(s->quota, QUOTA_STREAM);
	s->quota = NULL;
	s->h->last_active_ms = ev_now_ms();
}

static void
slot_stream_room(EdgeStream *st, void *owner)
{
	AcpSlot *s = owner;

	if (!s->h->closed)
		acp_conn_writable(s->h->acp);
}

static void
get_cont(EdgeReq *req)
{
	const char			*hsid = http_header(req, "Acp-Session-Id");
	AcpHttp				*h;
	AcpSlot				*s;
	EdgeStream			*st;
	EdgeQuota			*quota;
	EdgeProblem			 p;
	struct MHD_Response *r;

	if (!lookup_or_answer(req, &h))
		return;
	if (hsid && strlen(hsid) > 36)
	{
		text_error(req, 400, "invalid_session_id", "Acp-Session-Id is too long.");
		return;
	}
	s = slot_get(h, hsid ? hsid : "", true);
	if (s == NULL)
	{
		text_error(req, 503, "too_many_streams", "This connection has too many session streams.");
		return;
	}
	if (s->st)
	{
		text_error(req, 409, "stream_busy", "Outbound stream already has an active receiver.");
		return;
	}
	if ((quota = quota_take(QUOTA_STREAM, acp_conn_auth(h->acp), &p)) == NULL)
	{
		edge_metrics.sse_rejected++;
		http_respond_problem(req, &p);
		return;
	}
	st = stream_new(acp_buffer_limit(), slot_stream_closed, slot_stream_room, s);
	r = st ? stream_response(st, req->conn) : NULL;
	if (r == NULL)
	{
		stream_free(st);
		quota_give(quota, QUOTA_STREAM);
		text_error(req, 503, "unavailable", "Out of memory.");
		return;
	}
	s->st = st;
	s->quota = quota;
	if (buf_pending(&s->pending))
	{
		stream_write(st, buf_head(&s->pending), buf_pending(&s->pending));
		buf_free(&s->pending);
	}
	if (req->has_auth)
		acp_conn_set_auth(h->acp, &req->auth);
	h->last_active_ms = ev_now_ms();
	http_respond_response(req, 200, r);
	acp_conn_writable(h->acp);
}

static void
delete_cont(EdgeReq *req)
{
	AcpHttp *h;

	if (!lookup_or_answer(req, &h))
		return;
	http_close(h);
	http_respond(req, 202, NULL, "", 0, NULL);
}

void
acp_http_handle(EdgeReq *req)
{
	if (strcmp(req->method, "POST") == 0)
	{
		const char *ct = http_header(req, "Content-Type");

		if (ct == NULL || strncasecmp(ct, "application/json", 16) != 0)
			text_error(req, 415, "unsupported_media_type",
					   "Send JSON-RPC messages as application/json.");
		else if (req->body.len == 0)
			text_error(req, 400, "invalid_json", "The body must be one JSON-RPC message.");
		else
			route_authenticate(req, post_cont);
	}
	else if (strcmp(req->method, "GET") == 0)
	{
		const char *accept = http_header(req, "Accept");

		if (accept == NULL || strstr(accept, "text/event-stream") == NULL)
			text_error(req, 406, "not_acceptable",
					   "GET /acp serves text/event-stream, or a WebSocket upgrade.");
		else
			route_authenticate(req, get_cont);
	}
	else if (strcmp(req->method, "DELETE") == 0)
		route_authenticate(req, delete_cont);
	else
	{
		const char *headers[] = {MHD_HTTP_HEADER_ALLOW, "GET, POST, DELETE", NULL};
		EdgeProblem p;
		char	   *body;

		problem_set(&p, 405, "method_not_allowed", "%s is not allowed on /acp.", req->method);
		body = problem_json(&p, req->url);
		http_respond(req, 405, "application/problem+json", body ? body : "{}",
					 body ? strlen(body) : 2, headers);
		free(body);
	}
}

/* Once a second: token expiry, heartbeats, idle connections. */
void
acp_http_tick(void)
{
	uint64_t now = ev_now_ms();
	AcpHttp *next;

	for (AcpHttp *h = list; h; h = next)
	{
		bool attached = false;

		next = h->next;
		acp_tick(h->acp);
		if (h->closed)
			continue;
		for (AcpSlot *s = h->slots; s; s = s->next)
			attached |= s->st != NULL;
		if (!attached && now - h->last_active_ms >= (uint64_t) edge_cfg.acp_idle_s * 1000)
		{
			log_info("ACP connection %s closed: idle", acp_conn_id(h->acp));
			http_close(h);
			continue;
		}
		if (now - h->last_ping_ms >= (uint64_t) edge_cfg.heartbeat_s * 1000)
		{
			h->last_ping_ms = now;
			for (AcpSlot *s = h->slots; s; s = s->next)
				if (s->st)
					stream_ping(s->st);
		}
	}
}

void
acp_http_drain(void)
{
	while (list)
		http_close(list);
}
