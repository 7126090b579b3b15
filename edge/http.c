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
 *
 * The request layer the daemons share is daemonlib/http.c: request ids
 * (X-Request-Id, "request_id" in problem bodies), the access-log line,
 * the body read up to its limit and the 413 beyond it, the connections'
 * deadlines and their sweep; the listening socket is
 * daemonlib/listener.c's.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <microhttpd.h>

#include "daemonlib/listener.h"
#include "edge.h"

static struct MHD_Daemon *mhd;
static EvIo				  mhd_watch;
static HttpSlow			  slow;		  /* --header-timeout, --body-timeout */
static EdgeReq			 *in_handler; /* the request whose handler is running */
static int				  nreqs;	  /* requests not yet completed */

static void
mhd_logger(void *cls EDGE_UNUSED, const char *fmt, va_list ap)
{
	char   line[512];
	size_t n;

	vsnprintf(line, sizeof(line), fmt, ap);
	n = strlen(line);
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		line[--n] = '\0';
	log_debug("http: %s", line);
}

/* Shut down connections that are too slow to send a request. */
void
http_tick(void)
{
	edge_metrics.slowloris_cut += http_slow_sweep(&slow);
}

static void
request_completed(void *cls EDGE_UNUSED, struct MHD_Connection *conn, void **con_cls,
				  enum MHD_RequestTerminationCode toe)
{
	EdgeReq *req = *con_cls;

	if (req == NULL)
		return;
	*con_cls = NULL;
	if (req->conn == NULL) /* ended before its handler ran (uri_log made it) */
	{
		free(req->raw_url);
		free(req);
		return;
	}
	http_access_end(&req->access, conn, toe);
	nreqs--;
	http_conn_deadline(req->ci, (uint64_t) edge_cfg.idle_timeout_s * 1000);
	if (req->status)
		metrics_observe_request(req->status, ev_now_ms() - req->started_ms);
	auth_wait_cancel(req);
	db_cancel(req->job);
	if (req->state_free)
		req->state_free(req);
	if (req->ext_free)
		req->ext_free(req);
	if (req->ready)
		MHD_destroy_response(req->ready);
	auth_clear(&req->auth);
	req_body_free(&req->body);
	free(req->raw_url);
	free(req);
}

/* MHD_OPTION_URI_LOG_CALLBACK: the request begins; keep its target as received. */
static void *
uri_log(void *cls EDGE_UNUSED, const char *uri, struct MHD_Connection *conn EDGE_UNUSED)
{
	EdgeReq *req = calloc(1, sizeof(*req));

	if (req && (req->raw_url = strdup(uri)) == NULL)
	{
		free(req);
		req = NULL;
	}
	return req;
}

/* A file PUT goes to its route at once: its body streams through (files.c). */
static bool
upload_streamed(EdgeReq *req)
{
	return strcmp(req->method, "PUT") == 0 && req->raw_url && files_is_route(req->raw_url);
}

static enum MHD_Result
access_handler(void *cls EDGE_UNUSED, struct MHD_Connection *conn, const char *url,
			   const char *method, const char *version EDGE_UNUSED, const char *upload_data,
			   size_t *upload_data_size, void **con_cls)
{
	EdgeReq		   *req = *con_cls;
	enum MHD_Result ret;

	if (req == NULL || req->conn == NULL)
	{
		if (req == NULL && (req = calloc(1, sizeof(*req))) == NULL)
			return MHD_NO;
		nreqs++;
		req->conn = conn;
		req->method = method;
		req->url = url;
		req->started_ms = ev_now_ms();
		req->body.limit = edge_cfg.body_limit;
		http_access_start(&req->access, conn, method, url);
		req->ci = http_conn_of(conn);
		http_conn_deadline(req->ci, (uint64_t) edge_cfg.body_timeout_s * 1000);
		*con_cls = req;
		if (upload_streamed(req) && !edge_draining)
		{
			req->dispatched = true;
			in_handler = req;
			files_route(req);
			in_handler = NULL;
		}
		else if (req_body_announced_too_large(conn, edge_cfg.body_limit))
		{
			EdgeProblem p;

			req->dispatched = true;
			problem_set(&p, HTTP_BODY_TOO_LARGE_STATUS, HTTP_BODY_TOO_LARGE_CODE,
						HTTP_BODY_TOO_LARGE_DETAIL, (unsigned long long) edge_cfg.body_limit);
			in_handler = req;
			http_respond_problem(req, &p);
			in_handler = NULL;
		}
		return MHD_YES;
	}
	if (req->ready)
	{
		/*
		 * A streamed body whose answer came first: the rest is discarded,
		 * and the answer goes at its end (MHD queues none in between).
		 */
		if (*upload_data_size)
		{
			*upload_data_size = 0;
			return MHD_YES;
		}
		req->status = req->ready_status;
		ret = MHD_queue_response(conn, (unsigned int) req->ready_status, req->ready);
		MHD_destroy_response(req->ready);
		req->ready = NULL;
		return ret;
	}
	if (req->upload)
	{
		/* a streamed body: its chunks, then its end, go to the route */
		const char *data = *upload_data_size ? upload_data : NULL;

		if (data == NULL && req->suspended)
			return MHD_YES;
		in_handler = req;
		ret = req->upload(req, data, upload_data_size) == 0 ? MHD_YES : MHD_NO;
		in_handler = NULL;
		return ret;
	}
	if (*upload_data_size)
	{
		/*
		 * A body of unknown length that grows too large is discarded to its
		 * end (--body-timeout bounds it) and answered then, so the client,
		 * still sending, reads the answer instead of a reset.
		 */
		if (!req->dispatched)
			return req_body_feed(&req->body, upload_data, upload_data_size, UINT64_MAX);
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (req->dispatched)
		return MHD_YES;
	req->dispatched = true;
	http_conn_deadline(req->ci, 0);
	in_handler = req;
	if (req->body.too_large)
	{
		EdgeProblem p;

		problem_set(&p, HTTP_BODY_TOO_LARGE_STATUS, HTTP_BODY_TOO_LARGE_CODE,
					HTTP_BODY_TOO_LARGE_DETAIL, (unsigned long long) edge_cfg.body_limit);
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
mhd_io(EvIo *w EDGE_UNUSED, uint32_t events EDGE_UNUSED)
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
	unsigned int flags =
		MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_ALLOW_UPGRADE | MHD_USE_ERROR_LOG;
	const union MHD_DaemonInfo *info;
	uint16_t					port = 0;
	int							fd;

	fd = listen_inet_socket(edge_cfg.listen_addr, (uint16_t) edge_cfg.port, &port);
	if (fd == -EINVAL)
	{
		log_error("listen address \"%s\" is not an IPv4 or IPv6 address", edge_cfg.listen_addr);
		return -EINVAL;
	}
	if (fd < 0)
	{
		log_error("could not listen on %s port %d: %s", edge_cfg.listen_addr, (int) edge_cfg.port,
				  strerror(-fd));
		return -EADDRINUSE;
	}
	slow.header_timeout_ms = (uint64_t) edge_cfg.header_timeout_s * 1000;
	if (strchr(edge_cfg.listen_addr, ':') != NULL)
		flags |= MHD_USE_IPv6;
	mhd = MHD_start_daemon(flags, 0, NULL, NULL, access_handler, NULL, MHD_OPTION_EXTERNAL_LOGGER,
						   mhd_logger, NULL, MHD_OPTION_LISTEN_SOCKET, fd,
						   MHD_OPTION_CONNECTION_LIMIT, (unsigned int) edge_cfg.max_conns,
						   MHD_OPTION_PER_IP_CONNECTION_LIMIT,
						   (unsigned int) edge_cfg.max_conns_per_ip, MHD_OPTION_CONNECTION_TIMEOUT,
						   (unsigned int) edge_cfg.idle_timeout_s, MHD_OPTION_NOTIFY_COMPLETED,
						   request_completed, NULL, MHD_OPTION_NOTIFY_CONNECTION, http_slow_notify,
						   &slow, MHD_OPTION_URI_LOG_CALLBACK, uri_log, NULL, MHD_OPTION_END);
	if (mhd == NULL)
	{
		log_error("could not start the HTTP server on %s port %u", edge_cfg.listen_addr,
				  (unsigned) port);
		close(fd);
		return -EIO;
	}
	info = MHD_get_daemon_info(mhd, MHD_DAEMON_INFO_EPOLL_FD);
	if (info == NULL || ev_io_start(&mhd_watch, info->epoll_fd, EPOLLIN, mhd_io, NULL) < 0)
	{
		MHD_stop_daemon(mhd);
		mhd = NULL;
		return -EIO;
	}
	edge_cfg.port = port;
	listen_log_port(edge_cfg.listen_addr, port);
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
	ev_io_stop(&mhd_watch);
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
http_resume(EdgeReq *req)
{
	if (!req->suspended)
		return;
	req->suspended = false;
	http_resume_conn(req->conn);
}

void
http_resume_conn(struct MHD_Connection *conn)
{
	MHD_resume_connection(conn);
	ev_wake_soon();
}

/*
 * Queue a response: at once while the request's handler runs, or else by
 * resuming the suspended connection, whose handler then queues it.  Takes
 * ownership of r.
 */
static int
respond(EdgeReq *req, int status, struct MHD_Response *r, int64_t bytes)
{
	if (r == NULL)
		return -ENOMEM;
	http_access_answer(&req->access, r, (unsigned int) status, bytes);
	console_cors_headers(req, r);
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

/* A response of a size not known here (a stream, an upgrade). */
int
http_respond_response(EdgeReq *req, int status, struct MHD_Response *r)
{
	return respond(req, status, r, -1);
}

/* headers: NULL-terminated name, value pairs */
int
http_respond(EdgeReq *req, int status, const char *ctype, const char *body, size_t len,
			 const char *const *headers)
{
	struct MHD_Response *r =
		MHD_create_response_from_buffer(len, (void *) body, MHD_RESPMEM_MUST_COPY);

	if (r == NULL)
		return -ENOMEM;
	if (ctype)
		MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
	MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	for (const char *const *h = headers; h && h[0]; h += 2)
		MHD_add_response_header(r, h[0], h[1]);
	return respond(req, status, r, (int64_t) len);
}

int
http_respond_json(EdgeReq *req, int status, const char *json, const char *const *headers)
{
	return http_respond(req, status, "application/json", json, strlen(json), headers);
}

int
http_respond_problem(EdgeReq *req, const EdgeProblem *p)
{
	struct problem with_id = *p;
	char		  *body;
	char		   retry[16];
	const char	  *headers[7] = {NULL};
	int			   n = 0;
	int			   r;

	/* the request's id in the body too, when it is well formed */
	with_id.request_id =
		http_request_id_valid(req->access.request_id) ? req->access.request_id : NULL;
	body = problem_json(&with_id, req->url);
	if (p->status == 401)
	{
		headers[n++] = MHD_HTTP_HEADER_WWW_AUTHENTICATE;
		headers[n++] = strcmp(p->code, "not_authenticated") == 0
						   ? "Bearer realm=\"nadi\""
						   : "Bearer realm=\"nadi\", error=\"invalid_token\"";
	}
	if (p->retry_after > 0)
	{
		snprintf(retry, sizeof(retry), "%d", p->retry_after);
		headers[n++] = MHD_HTTP_HEADER_RETRY_AFTER;
		headers[n++] = retry;
	}
	if (p->status >= 500 && p->status != 503)
		log_warning("%s %s: %d %s (request %s)", req->method, req->url, p->status, p->detail,
					req->access.request_id);
	r = http_respond(req, p->status, "application/problem+json", body ? body : "{}",
					 body ? strlen(body) : 2, headers);
	free(body);
	return r;
}
