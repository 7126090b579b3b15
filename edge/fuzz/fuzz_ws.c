/*
 * fuzz_ws.c — libFuzzer target for the WebSocket frame parser (ws.c): any
 * bytes a client may send after the upgrade.  ws.c is included whole so
 * its static parser can be reached; the ACP layer above it is replaced by
 * stubs that count messages.  Output frames go to a socketpair nobody
 * reads (the parser's answers: pongs, closes, JSON-RPC parse errors).
 *
 *   make -C edge fuzz && edge/fuzz/fuzz_ws -max_total_time=60
 */
#include "../ws.c"

#include <sys/socket.h>

EdgeConfig	  edge_cfg = {.body_limit = 1 << 20, .json_depth = 64, .stream_buffer = 1 << 18};
volatile bool edge_draining;
EdgeMetrics	  edge_metrics;
static int	  messages;

void
log_at(int level, const char *fmt, ...)
{
}

AcpConn *
acp_conn_new(const AcpTransport *t, void *tdata, const EdgeAuth *auth, EdgeProblem *p)
{
	problem_set(p, 503, "unavailable", "fuzzing");
	return NULL;
}
void
acp_conn_free(AcpConn *c)
{
}
void *
acp_conn_tdata(AcpConn *c)
{
	return NULL;
}
const char *
acp_conn_id(AcpConn *c)
{
	return "fuzz";
}
void
acp_handle(AcpConn *c, json_t *msg)
{
	messages++;
}
void
acp_tick(AcpConn *c)
{
}
void
acp_conn_writable(AcpConn *c)
{
}
size_t
acp_buffer_limit(void)
{
	return 1 << 20;
}
const char *
http_header(EdgeReq *req, const char *name)
{
	return NULL;
}
int
http_respond(EdgeReq *req, int status, const char *ctype, const char *body, size_t len,
			 const char *const *headers)
{
	return 0;
}
int
http_respond_problem(EdgeReq *req, const EdgeProblem *p)
{
	return 0;
}
int
http_respond_response(EdgeReq *req, int status, struct MHD_Response *r)
{
	return 0;
}
int
route_authenticate(EdgeReq *req, void (*cont)(EdgeReq *req))
{
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool init;
	int			sv[2];
	WsConn	   *w;

	if (!init)
	{
		ev_init();
		init = true;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) < 0)
		return 0;
	w = calloc(1, sizeof(*w));
	w->fd = sv[0];
	w->acp = (AcpConn *) w; /* non-NULL: messages are handed on */
	w->next = wsl;
	if (wsl)
		wsl->prev = w;
	wsl = w;
	nws++;
	/* feed it in two parts, as the network might */
	buf_append(&w->in, data, size / 2);
	if (ws_parse(w))
	{
		buf_append(&w->in, data + size / 2, size - size / 2);
		ws_parse(w);
	}
	w->acp = NULL;
	ws_destroy(w);
	ev_run_once(0); /* runs the reap timer */
	close(sv[0]);
	close(sv[1]);
	return 0;
}
