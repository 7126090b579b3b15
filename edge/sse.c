/*
 * sse.c — Server-Sent Events.
 *
 * EdgeStream is a push body for libmicrohttpd: a bounded buffer drained by
 * MHD's content reader.  With nothing buffered the reader suspends the
 * connection and returns 0; a write resumes it.  A stream whose buffer
 * would overflow refuses the write (-ENOBUFS), and its owner decides: a
 * catch-up read pauses until the client has read half of it, a live event
 * cuts the client off (it resumes from its last event id).  ACP's HTTP
 * transport uses the same streams (acp_http.c).
 *
 * Session event streams (GET /v1/sessions/{id}/events with Accept:
 * text/event-stream) subscribe to the session's feed (feed.c) from
 * Last-Event-ID or ?after=.  Each event is "id: <seq>\ndata: <json>\n\n",
 * or with ?event_names=1 "id: <seq>\nevent: <kind>\ndata: <json>\n\n";
 * ": ping" comments every --heartbeat seconds keep proxies from timing the
 * stream out and find clients that went away uncleanly; a clean hang-up is
 * seen at once (the edge watches the socket of a suspended stream for it).
 * A stream ends when its token expires; the client reconnects with a fresh
 * token and its last id.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/epoll.h>

#include <jansson.h>
#include <microhttpd.h>

#include "edge.h"

struct EdgeStream
{
	EdgeBuf				   out;
	size_t				   limit;
	struct MHD_Connection *conn;
	EvIo				   hup; /* the socket, while suspended: client gone? */
	bool				   suspended;
	bool				   gone; /* the client hung up */
	bool				   ended;
	bool				   detached;
	bool				   has_response;
	StreamClosedFn		   closed;
	StreamRoomFn		   room;
	void				  *owner;
};

typedef struct SseStream
{
	EdgeSub			  sub;
	EdgeStream		 *st;
	EdgeAuth		  auth;
	EdgeReq			 *req; /* until the response is queued */
	uint64_t		  last_ping_ms;
	bool			  event_names; /* "event: <kind>" lines (?event_names=1) */
	EvTimer			  reap;		   /* frees a stream that never started */
	EdgeQuota		 *quota;	   /* the stream's share of the limits */
	struct SseStream *prev, *next;
} SseStream;

static SseStream *streams;
static int		  nstreams;

int
sse_active(void)
{
	return nstreams;
}

/* ------------------------------------------------------------------------
 * EdgeStream
 * ------------------------------------------------------------------------ */

EdgeStream *
stream_new(size_t limit, StreamClosedFn closed, StreamRoomFn room, void *owner)
{
	EdgeStream *st = calloc(1, sizeof(*st));

	if (st == NULL)
		return NULL;
	st->limit = limit;
	st->closed = closed;
	st->room = room;
	st->owner = owner;
	return st;
}

void
stream_free(EdgeStream *st)
{
	if (st == NULL)
		return;
	ev_io_stop(&st->hup);
	buf_free(&st->out);
	free(st);
}

static void
stream_wake(EdgeStream *st)
{
	if (st->suspended)
	{
		st->suspended = false;
		ev_io_stop(&st->hup);
		http_resume_conn(st->conn);
	}
}

/* The client hung up while the stream waited: the body ends in error. */
static void
stream_hup(EvIo *w, uint32_t events EDGE_UNUSED)
{
	EdgeStream *st = w->data;

	st->gone = true;
	stream_wake(st);
}

/*
 * MHD notices nothing on a suspended connection, so a client that leaves
 * would hold its stream slot until the next heartbeat; the edge watches the
 * socket for the hang-up itself (MHD owns it; it stays open while
 * suspended, and the watch ends before MHD sees the connection again).
 */
static void
stream_suspend(EdgeStream *st)
{
	const union MHD_ConnectionInfo *info =
		MHD_get_connection_info(st->conn, MHD_CONNECTION_INFO_CONNECTION_FD);

	MHD_suspend_connection(st->conn);
	st->suspended = true;
	if (info)
		ev_io_start(&st->hup, info->connect_fd, EPOLLRDHUP, stream_hup, st);
}

static ssize_t
stream_reader(void *cls, uint64_t pos EDGE_UNUSED, char *buf, size_t max)
{
	EdgeStream *st = cls;
	size_t		n = buf_pending(&st->out);

	/* MHD would suspend again before reading the hang-up: close instead */
	if (st->gone)
		return MHD_CONTENT_READER_END_WITH_ERROR;
	if (n > 0)
	{
		bool was_full = n >= st->limit / 2;

		if (n > max)
			n = max;
		memcpy(buf, buf_head(&st->out), n);
		buf_consume(&st->out, n);
		/* below half from above it, or empty: a paused read can go on */
		if ((buf_pending(&st->out) == 0 || (was_full && buf_pending(&st->out) < st->limit / 2)) &&
			st->room && !st->detached)
			st->room(st, st->owner);
		return (ssize_t) n;
	}
	if (st->ended)
		return MHD_CONTENT_READER_END_OF_STREAM;
	stream_suspend(st);
	return 0;
}

/* MHD is done with the response: the connection closed or the body ended. */
static void
stream_reader_free(void *cls)
{
	EdgeStream *st = cls;

	if (!st->detached && st->closed)
		st->closed(st, st->owner);
	stream_free(st);
}

/*
 * The response that streams st on conn (the request's connection); the
 * caller queues it there (http_respond_response).  From then on MHD owns
 * st and frees it when the connection closes.
 */
struct MHD_Response *
stream_response_as(EdgeStream *st, struct MHD_Connection *conn, const char *ctype, uint64_t size)
{
	struct MHD_Response *r =
		MHD_create_response_from_callback(size, 16 * 1024, stream_reader, st, stream_reader_free);

	if (r == NULL)
		return NULL;
	st->conn = conn;
	st->has_response = true;
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
	MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	MHD_add_response_header(r, "X-Accel-Buffering", "no");
	return r;
}

struct MHD_Response *
stream_response(EdgeStream *st, struct MHD_Connection *conn)
{
	return stream_response_as(st, conn, "text/event-stream", MHD_SIZE_UNKNOWN);
}

int
stream_write(EdgeStream *st, const char *data, size_t len)
{
	if (st->ended)
		return -EPIPE;
	/* one event larger than the whole buffer still goes, alone */
	if (buf_pending(&st->out) > 0 && buf_pending(&st->out) + len > st->limit)
		return -ENOBUFS;
	if (buf_append(&st->out, data, len) < 0)
		return -ENOMEM;
	stream_wake(st);
	return 0;
}

size_t
stream_room(const EdgeStream *st)
{
	size_t n = buf_pending(&st->out);

	return n >= st->limit ? 0 : st->limit - n;
}

void
stream_end(EdgeStream *st)
{
	st->ended = true;
	stream_wake(st);
}

void
stream_detach(EdgeStream *st)
{
	st->detached = true;
	st->ended = true;
	stream_wake(st);
}

void
stream_ping(EdgeStream *st)
{
	if (!st->ended && buf_pending(&st->out) == 0)
		stream_write(st, ": ping\n\n", 8);
}

/* ------------------------------------------------------------------------
 * Session event streams
 * ------------------------------------------------------------------------ */

static void
sse_forget(SseStream *ss)
{
	feed_unsubscribe(&ss->sub);
	auth_clear(&ss->auth);
	if (ss->prev)
		ss->prev->next = ss->next;
	else
		streams = ss->next;
	if (ss->next)
		ss->next->prev = ss->prev;
	nstreams--;
	quota_give(ss->quota, QUOTA_STREAM);
	free(ss);
}

/* The stream's connection is gone (or its body ended). */
static void
sse_closed(EdgeStream *st EDGE_UNUSED, void *owner)
{
	sse_forget(owner);
}

static void
sse_room(EdgeStream *st EDGE_UNUSED, void *owner)
{
	SseStream *ss = owner;

	feed_sub_room(&ss->sub);
}

/*
 * An event's kind for an "event:" line: the events table's pattern
 * (lower-case words joined by dots) is checked again here, so that nothing
 * but [a-z0-9_.] ever reaches the line: no newline, no colon, no field of
 * its own.  false when the JSON has no such kind (the event goes unnamed).
 */
static bool
sse_event_kind(const char *json, size_t len, char *out, size_t outlen)
{
	json_error_t err;
	json_t		*j = json_loadb(json, len, 0, &err);
	const char	*k = json_string_value(json_object_get(j, "kind"));
	size_t		 n = k ? strlen(k) : 0;
	bool		 ok = n > 0 && n < outlen && k[0] >= 'a' && k[0] <= 'z' && k[n - 1] != '.';

	for (size_t i = 0; ok && i < n; i++)
		ok = (k[i] >= 'a' && k[i] <= 'z') || (k[i] >= '0' && k[i] <= '9') || k[i] == '_' ||
			 (k[i] == '.' && k[i + 1] >= 'a' && k[i + 1] <= 'z');
	if (ok)
		memcpy(out, k, n + 1);
	json_decref(j);
	return ok;
}

/*
 * id: <seq>, event: <kind> when the stream names events, then the JSON as
 * data: lines (it has no newlines, but be safe).
 */
static bool
sse_deliver(EdgeSub *s, int64_t seq, const char *json, size_t len)
{
	SseStream  *ss = s->owner;
	EdgeBuf		b = {0};
	const char *p = json;
	const char *end = json + len;
	char		kind[256];
	int			r;

	buf_printf(&b, "id: %lld\n", (long long) seq);
	if (ss->event_names && sse_event_kind(json, len, kind, sizeof(kind)))
		buf_printf(&b, "event: %s\n", kind);
	while (p < end)
	{
		const char *nl = memchr(p, '\n', (size_t) (end - p));
		size_t		n = nl ? (size_t) (nl - p) : (size_t) (end - p);

		buf_puts(&b, "data: ");
		buf_append(&b, p, n);
		buf_puts(&b, "\n");
		p += n + (nl ? 1 : 0);
	}
	buf_puts(&b, "\n");
	r = b.data ? stream_write(ss->st, buf_head(&b), buf_pending(&b)) : -ENOMEM;
	buf_free(&b);
	if (r == 0)
		edge_metrics.sse_events++;
	return r == 0;
}

static bool
sse_has_room(EdgeSub *s)
{
	SseStream *ss = s->owner;

	return stream_room(ss->st) > ss->st->limit / 2;
}

static void
sse_reap_fn(EvTimer *t)
{
	sse_forget(t->data);
}

/*
 * Undo a stream that never got its response.  Called from feed callbacks,
 * so the memory goes on the next loop iteration.
 */
static void
sse_abandon(SseStream *ss, EdgeReq *req, const EdgeProblem *p)
{
	http_respond_problem(req, p);
	feed_unsubscribe(&ss->sub);
	stream_free(ss->st);
	ss->st = NULL;
	ev_timer_arm(&ss->reap, 0, sse_reap_fn, ss);
}

static void
sse_started(EdgeSub *s, const EdgeProblem *p)
{
	SseStream			*ss = s->owner;
	EdgeReq				*req = ss->req;
	struct MHD_Response *r;

	ss->req = NULL;
	if (p)
	{
		sse_abandon(ss, req, p);
		return;
	}
	r = stream_response(ss->st, req->conn);
	if (r == NULL)
	{
		EdgeProblem oom;

		problem_set(&oom, 503, "unavailable", "Out of memory.");
		sse_abandon(ss, req, &oom);
		return;
	}
	edge_metrics.sse_opened++;
	http_respond_response(req, 200, r);
}

static void
sse_caught_up(EdgeSub *s EDGE_UNUSED)
{
}

/* Cut the stream off after what is buffered; the client resumes later. */
static void
sse_failed(EdgeSub *s, const EdgeProblem *p)
{
	SseStream *ss = s->owner;

	if (strcmp(p->code, "slow_client") == 0)
		edge_metrics.sse_slow_cut++;
	log_debug("ending an event stream: %s", p->detail);
	feed_unsubscribe(&ss->sub);
	stream_end(ss->st);
}

static const EdgeSubOps sse_ops = {
	.deliver = sse_deliver,
	.has_room = sse_has_room,
	.started = sse_started,
	.caught_up = sse_caught_up,
	.failed = sse_failed,
};

/*
 * Open a stream for req (authenticated) on session sid after event after,
 * its events named by kind when event_names.
 * The request stays suspended until the first read: an unknown session,
 * another tenant's session or a bad token is answered as usual, not as an
 * empty stream.
 */
void
sse_open(EdgeReq *req, const char *sid, int64_t after, bool event_names)
{
	SseStream  *ss;
	EdgeQuota  *quota = NULL;
	EdgeProblem p;

	if (edge_draining)
		problem_set(&p, 503, "too_many_streams", "This edge is shutting down.");
	if (edge_draining || (quota = quota_take(QUOTA_STREAM, &req->auth, &p)) == NULL)
	{
		edge_metrics.sse_rejected++;
		p.retry_after = 2;
		http_respond_problem(req, &p);
		return;
	}
	ss = calloc(1, sizeof(*ss));
	if (ss == NULL || auth_copy(&ss->auth, &req->auth) < 0 ||
		(ss->st = stream_new(edge_cfg.stream_buffer, sse_closed, sse_room, ss)) == NULL)
	{
		if (ss)
			auth_clear(&ss->auth);
		free(ss);
		quota_give(quota, QUOTA_STREAM);
		problem_set(&p, 503, "unavailable", "Out of memory.");
		http_respond_problem(req, &p);
		return;
	}
	ss->quota = quota;
	ss->event_names = event_names;
	ss->req = req;
	ss->last_ping_ms = ev_now_ms();
	ss->next = streams;
	if (streams)
		streams->prev = ss;
	streams = ss;
	nstreams++;
	/* tell EventSource clients how soon to come back after a cut */
	stream_write(ss->st, "retry: 1000\n\n", 13);
	http_suspend(req);
	if (feed_subscribe(&ss->sub, sid, after, &ss->auth, &sse_ops, ss) < 0)
	{
		problem_set(&p, 503, "unavailable", "Out of memory.");
		ss->req = NULL;
		http_respond_problem(req, &p);
		stream_free(ss->st);
		sse_forget(ss);
	}
}

/* Once a second: heartbeats, and streams whose token has expired. */
void
sse_tick(void)
{
	uint64_t now = ev_now_ms();

	for (SseStream *ss = streams; ss; ss = ss->next)
	{
		if (ss->req || ss->st == NULL || ss->st->ended)
			continue;
		if (auth_expired(&ss->auth))
		{
			EdgeProblem p;

			problem_set(&p, 401, "token_expired", "The stream's token expired.");
			stream_write(ss->st, ": token expired\n\n", 17);
			sse_failed(&ss->sub, &p);
			continue;
		}
		if (now - ss->last_ping_ms >= (uint64_t) edge_cfg.heartbeat_s * 1000)
		{
			ss->last_ping_ms = now;
			stream_ping(ss->st);
		}
	}
}

/* Shutting down: end every stream; clients resume on another edge. */
void
sse_drain(void)
{
	for (SseStream *ss = streams; ss; ss = ss->next)
	{
		if (ss->req || ss->st == NULL || ss->st->ended)
			continue;
		feed_unsubscribe(&ss->sub);
		stream_write(ss->st, ": edge shutting down; resume from your last event id\n\n", 55);
		stream_end(ss->st);
	}
}
