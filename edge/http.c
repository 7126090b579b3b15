/*
 * http.c — the edge's adapter to libmicrohttpd.
 *
 * MHD runs in "external epoll" mode: its epoll fd sits in the edge's event
 * loop and MHD_run() is called from there, so HTTP shares the one thread
 * with libpq and the WebSockets.  A request whose answer needs the database
 * is suspended (MHD_suspend_connection) and resumed when the job is done;
 * SSE bodies suspend in their content reader when they have nothing to
 * send (sse.c).
 *
 * Limits: total connections and connections per IP (MHD refuses the rest
 * at accept), the request body (--body-limit, answered 413 before reading
 * it when Content-Length says so, else after discarding the rest of it),
 * idle connections (--idle-timeout, MHD),
 * and — which MHD has no option for — the time a client may take to send
 * its headers and its body (--header-timeout, --body-timeout): a periodic
 * sweep shuts down the socket of a connection past its deadline, which
 * defeats slowloris clients that trickle a byte at a time.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "edge.h"

typedef struct EdgeConnInfo
{
	struct MHD_Connection *conn;
	int			fd;
	uint64_t	deadline_ms;	/* 0: none */
	struct EdgeConnInfo *prev, *next;
} EdgeConnInfo;

static struct MHD_Daemon *mhd;
static EdgeWatch mhd_watch;
static EdgeConnInfo *conns;
static EdgeReq *in_handler;		/* the request whose handler is running */
static int	nreqs;				/* requests not yet completed */

static void
mhd_logger(void *cls EDGE_UNUSED, const char *fmt, va_list ap)
{
	char		line[512];
	size_t		n;

	vsnprintf(line, sizeof(line), fmt, ap);
	n = strlen(line);
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		line[--n] = '\0';
	log_debug("http: %s", line);
}

static void
notify_connection(void *cls EDGE_UNUSED, struct MHD_Connection *conn,
				  void **socket_context, enum MHD_ConnectionNotificationCode toe)
{
	EdgeConnInfo *ci = *socket_context;

	if (toe == MHD_CONNECTION_NOTIFY_STARTED)
	{
		const union MHD_ConnectionInfo *info =
			MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);

		ci = calloc(1, sizeof(*ci));
		if (ci == NULL)
			return;
		ci->conn = conn;
		ci->fd = info ? info->connect_fd : -1;
		ci->deadline_ms = loop_now_ms() + (uint64_t) edge_cfg.header_timeout_s * 1000;
		ci->next = conns;
		if (conns)
			conns->prev = ci;
		conns = ci;
		*socket_context = ci;
	}
	else if (ci)
	{
		if (ci->prev)
			ci->prev->next = ci->next;
		else
			conns = ci->next;
		if (ci->next)
			ci->next->prev = ci->prev;
		free(ci);
		*socket_context = NULL;
	}
}

/* Shut down connections that are too slow to send a request. */
void
http_tick(void)
{
	uint64_t	now = loop_now_ms();

	for (EdgeConnInfo *ci = conns; ci; ci = ci->next)
		if (ci->deadline_ms && now >= ci->deadline_ms && ci->fd >= 0)
		{
			log_debug("closing a connection that did not send its request in time");
			shutdown(ci->fd, SHUT_RDWR);
			ci->deadline_ms = 0;
			edge_metrics.slowloris_cut++;
		}
}

static void
request_completed(void *cls EDGE_UNUSED, struct MHD_Connection *conn EDGE_UNUSED,
				  void **con_cls, enum MHD_RequestTerminationCode toe EDGE_UNUSED)
{
	EdgeReq    *req = *con_cls;

	if (req == NULL)
		return;
	*con_cls = NULL;
	nreqs--;
	if (req->ci)
		req->ci->deadline_ms = loop_now_ms() + (uint64_t) edge_cfg.idle_timeout_s * 1000;
	if (req->status)
		metrics_observe_request(req->status, loop_now_ms() - req->started_ms);
	auth_wait_cancel(req);
	db_cancel(req->job);
	if (req->state_free)
		req->state_free(req);
	if (req->ext_free)
		req->ext_free(req);
	if (req->ready)
		MHD_destroy_response(req->ready);
	auth_clear(&req->auth);
	buf_free(&req->body);
	free(req);
}

static enum MHD_Result
access_handler(void *cls EDGE_UNUSED, struct MHD_Connection *conn, const char *url,
			   const char *method, const char *version EDGE_UNUSED,
			   const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	EdgeReq    *req = *con_cls;
	enum MHD_Result ret;

	if (req == NULL)
	{
		const union MHD_ConnectionInfo *info =
			MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
		const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
		int64_t		len;

		req = calloc(1, sizeof(*req));
		if (req == NULL)
			return MHD_NO;
		nreqs++;
		req->conn = conn;
		req->method = method;
		req->url = url;
		req->started_ms = loop_now_ms();
		req->ci = info ? info->socket_context : NULL;
		if (req->ci)
			req->ci->deadline_ms = loop_now_ms() + (uint64_t) edge_cfg.body_timeout_s * 1000;
		*con_cls = req;
		if (cl && edge_parse_int64(cl, 0, INT64_MAX, &len) && (uint64_t) len > edge_cfg.body_limit)
		{
			EdgeProblem p;

			req->dispatched = true;
			problem_set(&p, 413, "body_too_large", "The request body is larger than %zu bytes.",
						edge_cfg.body_limit);
			in_handler = req;
			http_respond_problem(req, &p);
			in_handler = NULL;
		}
		return MHD_YES;
	}
	if (req->ready)
	{
		req->status = req->ready_status;
		ret = MHD_queue_response(conn, (unsigned int) req->ready_status, req->ready);
		MHD_destroy_response(req->ready);
		req->ready = NULL;
		return ret;
	}
	if (*upload_data_size)
	{
		if (!req->body_too_large && !req->dispatched)
		{
			if (req->body.len + *upload_data_size > edge_cfg.body_limit)
			{
				/*
				 * A body of unknown length that grows too large: discard the
				 * rest (--body-timeout bounds it) and answer at its end, so the
				 * client, still sending, reads the answer instead of a reset.
				 */
				req->body_too_large = true;
				buf_free(&req->body);
			}
			else if (buf_append(&req->body, upload_data, *upload_data_size) < 0)
				return MHD_NO;
		}
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (req->dispatched)
		return MHD_YES;
	req->dispatched = true;
	if (req->ci)
		req->ci->deadline_ms = 0;
	in_handler = req;
	if (req->body_too_large)
	{
		EdgeProblem p;

		problem_set(&p, 413, "body_too_large", "The request body is larger than %zu bytes.",
					edge_cfg.body_limit);
		http_respond_problem(req, &p);
	}
	else if (edge_draining && strcmp(url, "/healthz") != 0)
	{
		EdgeProblem p;

		problem_set(&p, 503, "draining", "This edge is shutting down; retry on another.");
		p.retry_after = 1;
		http_respond_problem(req, &p);
	}
	else
		routes_dispatch(req);
	in_handler = NULL;
	return MHD_YES;
}

static void
mhd_io(EdgeWatch *w EDGE_UNUSED, uint32_t events EDGE_UNUSED)
{
	/* MHD_run() follows every loop iteration (http_run) */
}

int
http_active(void)
{
	return nreqs;
}

int
http_run(void)
{
	MHD_UNSIGNED_LONG_LONG t = 0;

	if (mhd == NULL)
		return 1000;
	MHD_run(mhd);
	if (MHD_get_timeout(mhd, &t) == MHD_YES)
		return t > 1000 ? 1000 : (int) t;
	return 1000;
}

int
http_start(void)
{
	struct sockaddr_storage ss = {0};
	struct sockaddr_in *sin = (struct sockaddr_in *) &ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *) &ss;
	unsigned int flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_ALLOW_UPGRADE |
		MHD_USE_ERROR_LOG;
	const union MHD_DaemonInfo *info;

	if (inet_pton(AF_INET, edge_cfg.listen_addr, &sin->sin_addr) == 1)
	{
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t) edge_cfg.port);
	}
	else if (inet_pton(AF_INET6, edge_cfg.listen_addr, &sin6->sin6_addr) == 1)
	{
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t) edge_cfg.port);
		flags |= MHD_USE_IPv6;
	}
	else
	{
		log_error("listen address \"%s\" is not an IPv4 or IPv6 address", edge_cfg.listen_addr);
		return -EINVAL;
	}
	mhd = MHD_start_daemon(flags, (uint16_t) edge_cfg.port, NULL, NULL, access_handler, NULL,
						   MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, NULL,
						   MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &ss,
						   MHD_OPTION_CONNECTION_LIMIT, (unsigned int) edge_cfg.max_conns,
						   MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned int) edge_cfg.max_conns_per_ip,
						   MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) edge_cfg.idle_timeout_s,
						   MHD_OPTION_NOTIFY_COMPLETED, request_completed, NULL,
						   MHD_OPTION_NOTIFY_CONNECTION, notify_connection, NULL,
						   MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u,
						   MHD_OPTION_END);
	if (mhd == NULL)
	{
		log_error("could not listen on %s port %d", edge_cfg.listen_addr, edge_cfg.port);
		return -EADDRINUSE;
	}
	info = MHD_get_daemon_info(mhd, MHD_DAEMON_INFO_EPOLL_FD);
	if (info == NULL || loop_watch(&mhd_watch, info->epoll_fd, EPOLLIN, mhd_io, NULL) < 0)
	{
		MHD_stop_daemon(mhd);
		mhd = NULL;
		return -EIO;
	}
	info = MHD_get_daemon_info(mhd, MHD_DAEMON_INFO_BIND_PORT);
	if (info != NULL && info->port != 0)
		edge_cfg.port = info->port;
	log_info("listening on %s port %d", edge_cfg.listen_addr, edge_cfg.port);
	return 0;
}

/* Stop accepting; connections in progress go on. */
void
http_quiesce(void)
{
	MHD_socket s;

	if (mhd == NULL)
		return;
	s = MHD_quiesce_daemon(mhd);
	if (s != MHD_INVALID_SOCKET)
		close(s);
}

void
http_stop(void)
{
	if (mhd == NULL)
		return;
	loop_unwatch(&mhd_watch);
	MHD_stop_daemon(mhd);
	mhd = NULL;
}

const char *
http_header(EdgeReq *req, const char *name)
{
	return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *
http_query(EdgeReq *req, const char *name)
{
	return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}


void
http_suspend(EdgeReq *req)
{
	if (req->suspended)
		return;
	MHD_suspend_connection(req->conn);
	req->suspended = true;
}

void
http_resume_conn(struct MHD_Connection *conn)
{
	MHD_resume_connection(conn);
	loop_wake_soon();
}

/*
 * Queue a response: at once while the request's handler runs, or else by
 * resuming the suspended connection, whose handler then queues it.  Takes
 * ownership of r.
 */
int
http_respond_response(EdgeReq *req, int status, struct MHD_Response *r)
{
	if (r == NULL)
		return -ENOMEM;
	if (edge_draining)
		MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
	if (req == in_handler && !req->suspended)
	{
		enum MHD_Result ok = MHD_queue_response(req->conn, (unsigned int) status, r);

		MHD_destroy_response(r);
		req->status = status;
		return ok == MHD_YES ? 0 : -EIO;
	}
	if (req->ready)
		MHD_destroy_response(req->ready);
	req->ready = r;
	req->ready_status = status;
	if (req->suspended)
	{
		req->suspended = false;
		http_resume_conn(req->conn);
	}
	return 0;
}

/* headers: NULL-terminated name, value pairs */
int
http_respond(EdgeReq *req, int status, const char *ctype, const char *body, size_t len,
			 const char *const *headers)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *) body,
															 MHD_RESPMEM_MUST_COPY);

	if (r == NULL)
		return -ENOMEM;
	if (ctype)
		MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
	MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	for (const char *const *h = headers; h && h[0]; h += 2)
		MHD_add_response_header(r, h[0], h[1]);
	return http_respond_response(req, status, r);
}

int
http_respond_json(EdgeReq *req, int status, const char *json, const char *const *headers)
{
	return http_respond(req, status, "application/json", json, strlen(json), headers);
}

int
http_respond_problem(EdgeReq *req, const EdgeProblem *p)
{
	char	   *body = problem_json(p, req->url);
	char		retry[16];
	const char *headers[7] = {NULL};
	int			n = 0;
	int			r;

	if (p->status == 401)
	{
		headers[n++] = MHD_HTTP_HEADER_WWW_AUTHENTICATE;
		headers[n++] = strcmp(p->code, "not_authenticated") == 0 ? "Bearer realm=\"nadi\"" :
			"Bearer realm=\"nadi\", error=\"invalid_token\"";
	}
	if (p->retry_after > 0)
	{
		snprintf(retry, sizeof(retry), "%d", p->retry_after);
		headers[n++] = MHD_HTTP_HEADER_RETRY_AFTER;
		headers[n++] = retry;
	}
	if (p->status >= 500 && p->status != 503)
		log_warning("%s %s: %d %s", req->method, req->url, p->status, p->detail);
	r = http_respond(req, p->status, "application/problem+json", body ? body : "{}",
					 body ? strlen(body) : 2, headers);
	free(body);
	return r;
}
