/*
 * ws.c — ACP over WebSocket (RFC 6455) on GET /acp with "Upgrade:
 * websocket": one JSON-RPC message per text frame, both ways, as the
 * official SDK's experimental WebSocket transport speaks it.
 *
 * The handshake is an ordinary request (token checked like any other; the
 * 101 carries Sec-WebSocket-Accept, computed with OpenSSL's SHA-1, and
 * Acp-Connection-Id).  After it libmicrohttpd hands over the socket, which
 * joins the event loop.  Frames from the client must be masked; fragmented
 * messages are reassembled up to --body-limit; binary frames, reserved bits
 * and oversized control frames close the connection with the matching
 * status code.  Pings go out every --heartbeat seconds and a peer silent for
 * three intervals is dropped; output beyond the connection's buffer closes
 * it as a slow client (it reconnects and uses session/load).
 *
 * Malformed JSON is answered with a JSON-RPC parse error (-32700) and a
 * batch with -32600, as the SDK's server does; the connection stays open.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "edge.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define WS_OP_CONT 0x0
#define WS_OP_TEXT 0x1
#define WS_OP_BINARY 0x2
#define WS_OP_CLOSE 0x8
#define WS_OP_PING 0x9
#define WS_OP_PONG 0xA

typedef struct WsConn
{
	AcpConn							 *acp;
	int								  fd;
	struct MHD_UpgradeResponseHandle *urh;
	EvIo							  watch;
	EdgeBuf							  in;
	EdgeBuf							  out;
	EdgeBuf							  msg;
	int								  msg_op;
	bool							  in_msg;
	bool							  upgraded;
	bool							  close_sent;
	bool							  dead;
	uint64_t						  last_seen_ms;
	uint64_t						  last_ping_ms;
	uint64_t						  close_deadline_ms;
	EvTimer							  reap;
	struct WsConn					 *prev, *next;
} WsConn;

static WsConn *wsl;
static int	   nws;

int
ws_count(void)
{
	return nws;
}

/* Sec-WebSocket-Accept for a client's Sec-WebSocket-Key. */
int
ws_accept_key(const char *key, char *out, size_t outlen)
{
	unsigned char sha[SHA_DIGEST_LENGTH];
	char		  buf[128];
	int			  n = snprintf(buf, sizeof(buf), "%s%s", key, WS_GUID);

	if (n <= 0 || (size_t) n >= sizeof(buf) || outlen < 29)
		return -EINVAL;
	SHA1((const unsigned char *) buf, (size_t) n, sha);
	EVP_EncodeBlock((unsigned char *) out, sha, SHA_DIGEST_LENGTH);
	return 0;
}

/* ------------------------------------------------------------------------
 * Output
 * ------------------------------------------------------------------------ */

static void ws_io(EvIo *w, uint32_t events);
static void ws_destroy(WsConn *w);

static void
ws_flush(WsConn *w)
{
	bool was_full = buf_pending(&w->out) >= acp_buffer_limit() / 2;

	while (buf_pending(&w->out) > 0)
	{
		ssize_t n = send(w->fd, buf_head(&w->out), buf_pending(&w->out), MSG_NOSIGNAL);

		if (n < 0)
		{
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			if (errno == EINTR)
				continue;
			ws_destroy(w);
			return;
		}
		buf_consume(&w->out, (size_t) n);
	}
	ev_io_start(&w->watch, w->fd, EPOLLIN | (buf_pending(&w->out) ? EPOLLOUT : 0), ws_io, w);
	if (w->close_sent && buf_pending(&w->out) == 0)
		shutdown(w->fd, SHUT_WR);
	if ((was_full || buf_pending(&w->out) == 0) && buf_pending(&w->out) < acp_buffer_limit() / 2 &&
		w->acp && !w->close_sent)
		acp_conn_writable(w->acp);
}

static int
ws_frame(WsConn *w, int op, const void *data, size_t len)
{
	unsigned char hdr[10];
	size_t		  h = 2;

	if (w->dead || w->close_sent)
		return 0;
	if (buf_pending(&w->out) > 0 && buf_pending(&w->out) + len + 10 > acp_buffer_limit() &&
		op != WS_OP_CLOSE)
		return -ENOBUFS;
	hdr[0] = (unsigned char) (0x80 | op);
	if (len < 126)
		hdr[1] = (unsigned char) len;
	else if (len < 65536)
	{
		hdr[1] = 126;
		hdr[2] = (unsigned char) (len >> 8);
		hdr[3] = (unsigned char) len;
		h = 4;
	}
	else
	{
		hdr[1] = 127;
		for (int i = 0; i < 8; i++)
			hdr[2 + i] = (unsigned char) ((uint64_t) len >> (56 - 8 * i));
		h = 10;
	}
	if (buf_append(&w->out, hdr, h) < 0 || buf_append(&w->out, data, len) < 0)
		return -ENOMEM;
	if (op == WS_OP_CLOSE)
		w->close_sent = true;
	ws_flush(w);
	return 0;
}

/* Start the closing handshake; the socket goes when the peer answers. */
static void
ws_close(WsConn *w, int code, const char *why)
{
	unsigned char p[125];
	size_t		  n = strlen(why);

	if (w->close_sent || w->dead)
		return;
	if (n > sizeof(p) - 2)
		n = sizeof(p) - 2;
	p[0] = (unsigned char) (code >> 8);
	p[1] = (unsigned char) code;
	memcpy(p + 2, why, n);
	if (w->acp)
	{
		acp_conn_free(w->acp);
		w->acp = NULL;
	}
	ws_frame(w, WS_OP_CLOSE, p, n + 2);
	w->close_deadline_ms = ev_now_ms() + 5000;
}

static void
reap_fn(EvTimer *t)
{
	WsConn *w = t->data;

	buf_free(&w->in);
	buf_free(&w->out);
	buf_free(&w->msg);
	free(w);
}

/* Drop the socket now (memory goes on the next loop iteration). */
static void
ws_destroy(WsConn *w)
{
	if (w->dead)
		return;
	w->dead = true;
	if (w->acp)
		acp_conn_free(w->acp);
	w->acp = NULL;
	ev_io_stop(&w->watch);
	if (w->urh)
		MHD_upgrade_action(w->urh, MHD_UPGRADE_ACTION_CLOSE);
	w->urh = NULL;
	if (w->prev)
		w->prev->next = w->next;
	else
		wsl = w->next;
	if (w->next)
		w->next->prev = w->prev;
	nws--;
	ev_timer_arm(&w->reap, 0, reap_fn, w);
}

/* ------------------------------------------------------------------------
 * The ACP transport
 * ------------------------------------------------------------------------ */

static int
t_send(AcpConn *c, const char *json, size_t len, const char *session EDGE_UNUSED,
	   json_t *response_id EDGE_UNUSED)
{
	return ws_frame(acp_conn_tdata(c), WS_OP_TEXT, json, len);
}

static size_t
t_room(AcpConn *c, const char *session EDGE_UNUSED)
{
	WsConn *w = acp_conn_tdata(c);
	size_t	used = buf_pending(&w->out);

	return w->dead || w->close_sent || used >= acp_buffer_limit() ? 0 : acp_buffer_limit() - used;
}

static void
t_close(AcpConn *c, int code, const char *why)
{
	WsConn *w = acp_conn_tdata(c);

	log_info("ACP WebSocket %s closed: %s", acp_conn_id(c), why);
	ws_close(w, code == 1008 ? 1008 : 1011, why);
}

static const AcpTransport ws_transport = {.send = t_send, .room = t_room, .close = t_close};

/* ------------------------------------------------------------------------
 * Input
 * ------------------------------------------------------------------------ */

static void
ws_message(WsConn *w, const char *text, size_t len)
{
	EdgeProblem		  p;
	json_t			 *msg;
	static const char parse_error[] =
		"{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32700,\"message\":\"Parse error\"}}";
	static const char batch_error[] = "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32600,"
									  "\"message\":\"JSON-RPC batches are not supported\"}}";

	if (w->acp == NULL)
		return;
	if (len > 0 && text[0] == '[')
	{
		ws_frame(w, WS_OP_TEXT, batch_error, sizeof(batch_error) - 1);
		return;
	}
	msg = json_parse_strict(text, len, &p);
	if (msg == NULL)
	{
		ws_frame(w, WS_OP_TEXT, parse_error, sizeof(parse_error) - 1);
		return;
	}
	acp_handle(w->acp, msg);
	json_decref(msg);
}

/* Parse every complete frame in w->in.  false: the connection is closing. */
static bool
ws_parse(WsConn *w)
{
	while (buf_pending(&w->in) >= 2 && !w->dead)
	{
		unsigned char *b = (unsigned char *) buf_head(&w->in);
		size_t		   avail = buf_pending(&w->in);
		bool		   fin = b[0] & 0x80;
		int			   op = b[0] & 0x0f;
		uint64_t	   len = b[1] & 0x7f;
		size_t		   h = 2;
		unsigned char *mask;
		unsigned char *payload;

		if (b[0] & 0x70)
			return ws_close(w, 1002, "reserved bits set"), false;
		if (!(b[1] & 0x80))
			return ws_close(w, 1002, "client frames must be masked"), false;
		if (len == 126)
		{
			if (avail < 4)
				break;
			len = ((uint64_t) b[2] << 8) | b[3];
			h = 4;
		}
		else if (len == 127)
		{
			if (avail < 10)
				break;
			len = 0;
			for (int i = 0; i < 8; i++)
				len = (len << 8) | b[2 + i];
			h = 10;
		}
		if ((op & 0x8) && (!fin || len > 125))
			return ws_close(w, 1002, "bad control frame"), false;
		if (len > edge_cfg.body_limit || buf_pending(&w->msg) + len > edge_cfg.body_limit)
			return ws_close(w, 1009, "message too big"), false;
		if (avail < h + 4 + len)
			break;
		mask = b + h;
		payload = mask + 4;
		for (uint64_t i = 0; i < len; i++)
			payload[i] ^= mask[i & 3];
		w->last_seen_ms = ev_now_ms();

		switch (op)
		{
			case WS_OP_CLOSE:
				if (!w->close_sent)
				{
					if (w->acp)
						acp_conn_free(w->acp);
					w->acp = NULL;
					/* echo the status code, as RFC 6455 asks */
					ws_frame(w, WS_OP_CLOSE, payload, len >= 2 ? 2 : 0);
				}
				ws_destroy(w);
				return false;
			case WS_OP_PING:
				ws_frame(w, WS_OP_PONG, payload, (size_t) len);
				break;
			case WS_OP_PONG:
				break;
			case WS_OP_TEXT:
			case WS_OP_BINARY:
			case WS_OP_CONT:
				if ((op == WS_OP_CONT) != w->in_msg)
					return ws_close(w, 1002, "unexpected continuation"), false;
				if (op != WS_OP_CONT)
				{
					w->in_msg = true;
					w->msg_op = op;
					buf_reset(&w->msg);
				}
				if (buf_append(&w->msg, payload, (size_t) len) < 0)
					return ws_close(w, 1011, "out of memory"), false;
				if (fin)
				{
					w->in_msg = false;
					if (w->msg_op == WS_OP_BINARY)
						return ws_close(w, 1003, "only text frames carry ACP messages"), false;
					ws_message(w, buf_head(&w->msg), buf_pending(&w->msg));
					buf_reset(&w->msg);
				}
				break;
			default:
				return ws_close(w, 1002, "unknown opcode"), false;
		}
		buf_consume(&w->in, h + 4 + (size_t) len);
	}
	return !w->dead;
}

static void
ws_io(EvIo *watch, uint32_t events)
{
	WsConn *w = watch->data;
	char	chunk[16384];

	if (events & EPOLLOUT)
	{
		ws_flush(w);
		if (w->dead)
			return;
	}
	if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		return;
	for (;;)
	{
		ssize_t n = recv(w->fd, chunk, sizeof(chunk), 0);

		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
		{
			ws_destroy(w);
			return;
		}
		if (n < 0)
			break;
		if (w->close_sent)
			continue; /* draining what the peer sends before its close */
		if (buf_append(&w->in, chunk, (size_t) n) < 0 || !ws_parse(w))
			return;
	}
}

/* ------------------------------------------------------------------------
 * The handshake
 * ------------------------------------------------------------------------ */

static void
upgraded(void *cls, struct MHD_Connection *conn EDGE_UNUSED, void *con_cls, const char *extra_in,
		 size_t extra_in_size, MHD_socket sock, struct MHD_UpgradeResponseHandle *urh)
{
	WsConn	*w = cls;
	EdgeReq *req = con_cls;
	int		 fl;

	if (req && req->ext == w)
	{
		req->ext = NULL;
		req->ext_free = NULL;
	}
	w->fd = sock;
	w->urh = urh;
	w->upgraded = true;
	w->last_seen_ms = w->last_ping_ms = ev_now_ms();
	fl = fcntl(sock, F_GETFL);
	if (fl >= 0)
		fcntl(sock, F_SETFL, fl | O_NONBLOCK);
	w->next = wsl;
	if (wsl)
		wsl->prev = w;
	wsl = w;
	nws++;
	edge_metrics.ws_opened++;
	if (ev_io_start(&w->watch, sock, EPOLLIN, ws_io, w) < 0)
	{
		ws_destroy(w);
		return;
	}
	if (extra_in_size > 0 && buf_append(&w->in, extra_in, extra_in_size) == 0)
		ws_parse(w);
}

/* The upgrade never happened: the connection went away first. */
static void
pending_free(EdgeReq *req)
{
	WsConn *w = req->ext;

	req->ext = NULL;
	if (w == NULL)
		return;
	acp_conn_free(w->acp);
	free(w);
}

static void
upgrade_cont(EdgeReq *req)
{
	const char			*key = http_header(req, "Sec-WebSocket-Key");
	char				 accept[64];
	WsConn				*w;
	struct MHD_Response *r;
	EdgeProblem			 p;

	w = edge_draining ? NULL : calloc(1, sizeof(*w));
	if (w == NULL)
	{
		problem_set(&p, 503, "too_many_connections", "This edge takes no ACP connections now.");
		p.retry_after = 2;
	}
	if (w == NULL || (w->acp = acp_conn_new(&ws_transport, w, &req->auth, &p)) == NULL)
	{
		free(w);
		http_respond_problem(req, &p);
		return;
	}
	w->fd = -1;
	req->ext = w;
	req->ext_free = pending_free;
	ws_accept_key(key, accept, sizeof(accept));
	r = MHD_create_response_for_upgrade(upgraded, w);
	if (r == NULL)
	{
		problem_set(&p, 503, "unavailable", "Out of memory.");
		http_respond_problem(req, &p);
		return;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_UPGRADE, "websocket");
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "Upgrade");
	MHD_add_response_header(r, "Sec-WebSocket-Accept", accept);
	MHD_add_response_header(r, "Acp-Connection-Id", acp_conn_id(w->acp));
	http_respond_response(req, MHD_HTTP_SWITCHING_PROTOCOLS, r);
}

static bool
header_has_token(const char *value, const char *token)
{
	size_t n = strlen(token);

	for (const char *p = value; p && *p;)
	{
		while (*p == ' ' || *p == ',' || *p == '\t')
			p++;
		if (strncasecmp(p, token, n) == 0 && (p[n] == '\0' || p[n] == ',' || p[n] == ' '))
			return true;
		p = strchr(p, ',');
	}
	return false;
}

void
ws_upgrade(EdgeReq *req)
{
	const char	 *conn = http_header(req, "Connection");
	const char	 *version = http_header(req, "Sec-WebSocket-Version");
	const char	 *key = http_header(req, "Sec-WebSocket-Key");
	unsigned char raw[32];
	EdgeProblem	  p;

	if (strcmp(req->method, "GET") != 0 || conn == NULL || !header_has_token(conn, "upgrade"))
	{
		problem_set(&p, 400, "bad_upgrade",
					"A WebSocket upgrade is a GET with \"Connection: Upgrade\".");
		http_respond_problem(req, &p);
		return;
	}
	if (version == NULL || strcmp(version, "13") != 0)
	{
		const char *headers[] = {"Sec-WebSocket-Version", "13", NULL};
		char	   *body;

		problem_set(&p, 426, "unsupported_websocket_version",
					"Only WebSocket version 13 is spoken here.");
		body = problem_json(&p, req->url);
		http_respond(req, 426, "application/problem+json", body ? body : "{}",
					 body ? strlen(body) : 2, headers);
		free(body);
		return;
	}
	if (key == NULL || strlen(key) != 24 ||
		EVP_DecodeBlock(raw, (const unsigned char *) key, 24) != 18)
	{
		problem_set(&p, 400, "bad_upgrade", "Sec-WebSocket-Key must be 16 bytes in base64.");
		http_respond_problem(req, &p);
		return;
	}
	route_authenticate(req, upgrade_cont);
}

/* Once a second: pings, silent peers, unanswered closes, expired tokens. */
void
ws_tick(void)
{
	uint64_t now = ev_now_ms();
	uint64_t beat = (uint64_t) edge_cfg.heartbeat_s * 1000;
	WsConn	*next;

	for (WsConn *w = wsl; w; w = next)
	{
		next = w->next;
		if (w->close_sent)
		{
			if (now >= w->close_deadline_ms)
				ws_destroy(w);
			continue;
		}
		if (now - w->last_seen_ms >= 3 * beat)
		{
			ws_close(w, 1001, "no answer to pings");
			continue;
		}
		if (w->acp)
			acp_tick(w->acp);
		if (!w->close_sent && now - w->last_ping_ms >= beat)
		{
			w->last_ping_ms = now;
			ws_frame(w, WS_OP_PING, "", 0);
		}
	}
}

void
ws_drain(void)
{
	WsConn *next;

	for (WsConn *w = wsl; w; w = next)
	{
		next = w->next;
		ws_close(w, 1001, "edge shutting down");
	}
}
