/*
 * http.c — the libmicrohttpd adapter (see http.h): listeners, request
 * bodies with a size limit, bearer-token authentication compared in
 * constant time, suspend/resume for answers that come later, and
 * RFC 9457 problem+json errors carrying a stable "code".
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "http.h"
#include "metrics.h"
#include "sbx.h"

extern bool sbx_draining;
void api_dispatch(struct http_req *r);

#define MAX_HEADERS 4
#define DISCARD_MAX (8u << 20) /* bytes of an oversized body read before hanging up */

struct listener {
	struct MHD_Daemon *d;
	struct ev_io io;
	char *unix_path;
	bool quiesced;
};

struct http_req {
	struct MHD_Connection *conn;
	const char *method;
	char *path;
	char *body;
	size_t body_len, body_limit;
	uint64_t seen;
	bool too_large, in_handler, dispatched, suspended;
	unsigned status;
	struct MHD_Response *resp;
	uint64_t t0;
	const char *hdr_name[MAX_HEADERS];
	char *hdr_value[MAX_HEADERS];
	int n_hdr;
	struct http_req *next;
};

static struct listener listeners[2];
static size_t n_listeners;
static struct http_req *requests;   /* every live request */

unsigned
http_pending(void)
{
	unsigned n = 0;

	for (struct http_req *r = requests; r; r = r->next)
		n += r->suspended ? 1 : 0;
	return n;
}

const char *
http_method(const struct http_req *r)
{
	return r->method;
}

const char *
http_path(const struct http_req *r)
{
	return r->path;
}

const char *
http_query(const struct http_req *r, const char *key)
{
	return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, key);
}

const char *
http_body(const struct http_req *r, size_t *len)
{
	*len = r->body_len;
	return r->body ? r->body : "";
}

void
http_add_header(struct http_req *r, const char *name, const char *value)
{
	if (r->n_hdr < MAX_HEADERS && (r->hdr_value[r->n_hdr] = strdup(value)))
		r->hdr_name[r->n_hdr++] = name;
}

static const char *
reason(unsigned status)
{
	const char *s = MHD_get_reason_phrase_for(status);
	return s && *s ? s : "Error";
}

/*
 * Hand a response to MHD now (inside the access handler) or store it and
 * resume the suspended connection, whose handler then queues it.
 */
static void
deliver(struct http_req *r, unsigned status, struct MHD_Response *resp)
{
	if (!resp) {
		log_error("cannot allocate an HTTP response");
		resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
		status = MHD_HTTP_INTERNAL_SERVER_ERROR;
		if (!resp)
			return;
	}
	if (r->resp) {
		/* A second answer to one request is a bug; keep the first. */
		log_error("request %s %s answered twice", r->method, r->path);
		MHD_destroy_response(resp);
		return;
	}
	for (int i = 0; i < r->n_hdr; i++)
		MHD_add_response_header(resp, r->hdr_name[i], r->hdr_value[i]);
	if (sbx_draining)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
	r->status = status;
	r->resp = resp;
	metrics_http(status);
	log_debug("%s %s -> %u (%llu us)", r->method, r->path, status, (unsigned long long)(now_us() - r->t0));
	if (r->suspended) {
		r->suspended = false;
		MHD_resume_connection(r->conn);
	}
}

void
http_reply_text(struct http_req *r, unsigned status, const char *content_type, char *text, size_t len)
{
	struct MHD_Response *resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);

	if (!resp)
		free(text);
	else if (content_type)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
	deliver(r, status, resp);
}

/* Send encoded JSON (taking text), with a trailing newline: curl output and logs read well. */
static void
reply_json_text(struct http_req *r, unsigned status, const char *content_type, char *text)
{
	size_t len = strlen(text);
	char *nl = realloc(text, len + 2);

	if (nl) {
		text = nl;
		text[len++] = '\n';
		text[len] = '\0';
	}
	http_reply_text(r, status, content_type, text, len);
}

void
http_reply_json(struct http_req *r, unsigned status, json_t *body)
{
	char *text = body ? json_dumps(body, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_REAL_PRECISION(10)) : NULL;

	json_decref(body);
	if (!text) {
		http_reply_problem(r, 500, "internal", "cannot encode the answer");
		return;
	}
	reply_json_text(r, status, "application/json", text);
}

void
http_reply_problem(struct http_req *r, unsigned status, const char *code, const char *fmt, ...)
{
	char detail[1024];
	va_list ap;
	json_t *j;
	char *text;

	va_start(ap, fmt);
	vsnprintf(detail, sizeof detail, fmt, ap);
	va_end(ap);
	j = json_pack("{s:s, s:s, s:i, s:s, s:s}", "type", "about:blank", "title", reason(status), "status",
		      (int)status, "code", code, "detail", detail);
	if (!j) {
		/* Invalid UTF-8 in the detail: say less rather than nothing. */
		j = json_pack("{s:s, s:s, s:i, s:s}", "type", "about:blank", "title", reason(status), "status",
			      (int)status, "code", code);
	}
	text = j ? json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
	json_decref(j);
	if (status >= 500)
		log_warning("%s %s -> %u %s: %s", r->method, r->path, status, code, detail);
	if (!text) {
		deliver(r, 500, NULL);
		return;
	}
	reply_json_text(r, status, "application/problem+json", text);
}

void
http_reply_fd(struct http_req *r, int fd, uint64_t size)
{
	struct MHD_Response *resp = MHD_create_response_from_fd64(size, fd);

	if (!resp)
		close(fd);
	else
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/octet-stream");
	deliver(r, 200, resp);
}

void
http_reply_empty(struct http_req *r, unsigned status)
{
	deliver(r, status, MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT));
}

void
http_reply_errno(struct http_req *r, int err, const char *what)
{
	switch (-err) {
	case EXDEV:
		http_reply_problem(r, 403, "path_outside_sandbox",
				   "%s: the path leads outside the workspace (\"..\", an absolute path elsewhere, "
				   "or a symlink pointing out)", what);
		break;
	case ENOENT:
		http_reply_problem(r, 404, "file_not_found", "%s: no such file or directory", what);
		break;
	case EISDIR:
		http_reply_problem(r, 400, "is_a_directory", "%s: is a directory", what);
		break;
	case ENOTDIR:
		http_reply_problem(r, 400, "not_a_directory", "%s: a component of the path is not a directory", what);
		break;
	case EBADFD:
	case ENXIO:
		http_reply_problem(r, 400, "not_a_regular_file", "%s: not a regular file", what);
		break;
	case ELOOP:
		http_reply_problem(r, 400, "symlink_loop", "%s: too many levels of symbolic links", what);
		break;
	case ENAMETOOLONG:
		http_reply_problem(r, 400, "path_too_long", "%s: the path is too long", what);
		break;
	case EFBIG:
		http_reply_problem(r, 413, "file_too_large", "%s: the file exceeds the %llu byte limit", what,
				   (unsigned long long)cfg.max_file_bytes);
		break;
	case ENOSPC:
	case EDQUOT:
		http_reply_problem(r, 507, "no_space", "%s: the sandbox store is full", what);
		break;
	case EACCES:
	case EPERM:
		http_reply_problem(r, 403, "permission_denied", "%s: permission denied", what);
		break;
	default:
		http_reply_problem(r, 500, "internal", "%s: %s", what, strerror(-err));
		break;
	}
}

json_t *
http_body_json(struct http_req *r)
{
	json_error_t err;
	json_t *j;

	if (r->body_len == 0)
		return json_object();
	j = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &err);
	if (!j) {
		http_reply_problem(r, 400, "malformed_json", "the request body is not valid JSON: %s (line %d, column %d)",
				   err.text, err.line, err.column);
		return NULL;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		http_reply_problem(r, 400, "malformed_json", "the request body must be a JSON object");
		return NULL;
	}
	return j;
}

static bool
authorized(struct http_req *r)
{
	const char *h;

	if (!cfg.token)
		return true;
	h = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
	if (!h || strncasecmp(h, "Bearer ", 7) != 0)
		return false;
	h += 7;
	while (*h == ' ')
		h++;
	return ct_equal(h, strlen(h), cfg.token, cfg.token_len);
}

static bool
is_public(const char *path)
{
	return strcmp(path, "/healthz") == 0 || strcmp(path, "/metrics") == 0;
}

static bool
is_file_upload(const char *method, const char *path)
{
	size_t n = strlen(path);
	return strcmp(method, "PUT") == 0 && n > 6 && strcmp(path + n - 6, "/files") == 0;
}

static enum MHD_Result
queue(struct http_req *r)
{
	enum MHD_Result ret = MHD_queue_response(r->conn, r->status, r->resp);

	MHD_destroy_response(r->resp);
	r->resp = NULL;
	r->status = 0;
	r->dispatched = true;
	return ret;
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method, const char *version,
	   const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	struct http_req *r = *con_cls;
	(void)cls;
	(void)version;

	if (!r) {
		const char *cl;

		r = calloc(1, sizeof *r);
		if (!r || !(r->path = strdup(url))) {
			free(r);
			return MHD_NO;
		}
		r->conn = conn;
		r->method = method;
		r->t0 = now_us();
		r->body_limit = is_file_upload(method, url) ? cfg.max_file_bytes : cfg.max_request_bytes;
		r->next = requests;
		requests = r;
		*con_cls = r;

		/* Refuse early, before reading a body that would be thrown away. */
		r->in_handler = true;
		if (sbx_draining && strcmp(url, "/healthz") != 0) {
			http_add_header(r, "Retry-After", "1");
			http_reply_problem(r, 503, "draining", "this sandbox host is shutting down");
		} else if (!is_public(url) && !authorized(r)) {
			http_add_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
			http_reply_problem(r, 401, "unauthorized", "a valid bearer token is required");
		} else if ((cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH)) &&
			   strtoull(cl, NULL, 10) > r->body_limit) {
			http_reply_problem(r, 413, "request_too_large", "the request body exceeds the %llu byte limit",
					   (unsigned long long)r->body_limit);
		}
		r->in_handler = false;
		if (r->resp)
			return queue(r);
		return MHD_YES;
	}
	if (r->resp)
		return queue(r);
	if (*upload_data_size) {
		r->seen += *upload_data_size;
		if (!r->too_large && r->body_len + *upload_data_size > r->body_limit) {
			r->too_large = true;
			free(r->body);
			r->body = NULL;
			r->body_len = 0;
		}
		if (r->too_large) {
			/*
			 * Read and drop the rest so the client gets its 413 (closing
			 * now would lose it in a reset), but not without end.
			 */
			*upload_data_size = 0;
			return r->seen > r->body_limit + DISCARD_MAX ? MHD_NO : MHD_YES;
		}
		char *nb = realloc(r->body, r->body_len + *upload_data_size + 1);
		if (!nb)
			return MHD_NO;
		r->body = nb;
		memcpy(r->body + r->body_len, upload_data, *upload_data_size);
		r->body_len += *upload_data_size;
		r->body[r->body_len] = '\0';
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (r->dispatched)
		return MHD_NO; /* resumed without an answer: cannot happen */

	r->in_handler = true;
	if (r->too_large)
		http_reply_problem(r, 413, "request_too_large", "the request body exceeds the %llu byte limit",
				   (unsigned long long)r->body_limit);
	else
		api_dispatch(r);
	r->in_handler = false;
	if (r->resp)
		return queue(r);
	r->dispatched = true;
	r->suspended = true;
	MHD_suspend_connection(conn);
	return MHD_YES;
}

static void
on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
	struct http_req *r = *con_cls;
	(void)cls;
	(void)conn;

	if (!r)
		return;
	if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
		log_debug("%s %s: connection ended early (%d)", r->method, r->path, (int)toe);
	for (struct http_req **pp = &requests; *pp; pp = &(*pp)->next)
		if (*pp == r) {
			*pp = r->next;
			break;
		}
	if (r->resp)
		MHD_destroy_response(r->resp);
	for (int i = 0; i < r->n_hdr; i++)
		free(r->hdr_value[i]);
	free(r->body);
	free(r->path);
	free(r);
	*con_cls = NULL;
}

static void
on_listener(struct ev_io *io, uint32_t revents)
{
	struct listener *l = io->data;
	(void)revents;

	MHD_run(l->d);
}

static int
unix_socket(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd;

	if (strlen(path) >= sizeof sa.sun_path)
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	unlink(path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || chmod(path, 0660) < 0 || listen(fd, 128) < 0) {
		int r = -errno;
		close(fd);
		return r;
	}
	return fd;
}

static int
start_listener(const char *unix_path, const struct sockaddr_in *sin)
{
	struct listener *l = &listeners[n_listeners];
	const union MHD_DaemonInfo *info;
	unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
	int fd = -1;

	if (unix_path) {
		fd = unix_socket(unix_path);
		if (fd < 0) {
			errno = -fd;
			log_error("cannot listen on %s: %m", unix_path);
			return fd;
		}
		l->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, NULL, MHD_OPTION_LISTEN_SOCKET, fd,
					MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_CONNECTION_TIMEOUT,
					(unsigned)60, MHD_OPTION_CONNECTION_LIMIT, (unsigned)512, MHD_OPTION_END);
	} else
		l->d = MHD_start_daemon(flags, ntohs(sin->sin_port), NULL, NULL, on_request, NULL, MHD_OPTION_SOCK_ADDR,
					sin, MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
					MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60, MHD_OPTION_CONNECTION_LIMIT,
					(unsigned)512, MHD_OPTION_END);
	if (!l->d) {
		log_error("cannot start the HTTP server on %s", unix_path ? unix_path : cfg.listen_tcp);
		if (fd >= 0)
			close(fd);
		return -EADDRINUSE;
	}
	info = MHD_get_daemon_info(l->d, MHD_DAEMON_INFO_EPOLL_FD);
	if (!info || ev_io_start(&l->io, info->epoll_fd, EPOLLIN, on_listener, l) < 0) {
		MHD_stop_daemon(l->d);
		return -EIO;
	}
	l->unix_path = unix_path ? strdup(unix_path) : NULL;
	n_listeners++;
	if (unix_path)
		log_info("listening on unix:%s", unix_path);
	else {
		char addr[INET_ADDRSTRLEN] = "?";
		inet_ntop(AF_INET, &sin->sin_addr, addr, sizeof addr);
		log_info("listening on http://%s:%u", addr, (unsigned)ntohs(sin->sin_port));
	}
	return 0;
}

static int
parse_tcp(const char *s, struct sockaddr_in *sin)
{
	const char *colon = strrchr(s, ':');
	char host[64] = "127.0.0.1";
	unsigned long port;
	char *end;

	if (colon) {
		size_t n = (size_t)(colon - s);
		if (n == 0 || n >= sizeof host)
			return -EINVAL;
		memcpy(host, s, n);
		host[n] = '\0';
		s = colon + 1;
	}
	port = strtoul(s, &end, 10);
	if (*end || port == 0 || port > 65535)
		return -EINVAL;
	memset(sin, 0, sizeof *sin);
	sin->sin_family = AF_INET;
	sin->sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
		return -EINVAL;
	if ((ntohl(sin->sin_addr.s_addr) >> 24) != 127)
		log_warning("listening on %s, which is not a loopback address", host);
	return 0;
}

int
http_init(void)
{
	int r;

	if (cfg.listen_unix) {
		r = start_listener(cfg.listen_unix, NULL);
		if (r < 0)
			return r;
	}
	if (cfg.listen_tcp) {
		struct sockaddr_in sin;
		if (parse_tcp(cfg.listen_tcp, &sin) < 0) {
			log_error("listen_tcp must be PORT or IPV4:PORT, not \"%s\"", cfg.listen_tcp);
			return -EINVAL;
		}
		r = start_listener(NULL, &sin);
		if (r < 0)
			return r;
	}
	return 0;
}

void
http_run(void)
{
	for (size_t i = 0; i < n_listeners; i++)
		MHD_run(listeners[i].d);
}

int64_t
http_timeout_ms(void)
{
	int64_t best = -1;

	for (size_t i = 0; i < n_listeners; i++) {
		MHD_UNSIGNED_LONG_LONG t;
		if (MHD_get_timeout(listeners[i].d, &t) == MHD_YES && (best < 0 || (int64_t)t < best))
			best = (int64_t)t;
	}
	return best;
}

void
http_quiesce(void)
{
	for (size_t i = 0; i < n_listeners; i++) {
		struct listener *l = &listeners[i];
		if (l->quiesced)
			continue;
		MHD_socket fd = MHD_quiesce_daemon(l->d);
		if (fd != MHD_INVALID_SOCKET)
			close(fd);
		if (l->unix_path)
			unlink(l->unix_path);
		l->quiesced = true;
	}
}

void
http_done(void)
{
	/* Answer whatever still waits so MHD can let go of suspended connections. */
	for (struct http_req *r = requests; r; r = r->next)
		if (r->suspended)
			http_reply_problem(r, 503, "draining", "this sandbox host is shutting down");
	http_run();
	for (size_t i = 0; i < n_listeners; i++) {
		ev_io_stop(&listeners[i].io);
		MHD_stop_daemon(listeners[i].d);
		if (listeners[i].unix_path && !listeners[i].quiesced)
			unlink(listeners[i].unix_path);
		free(listeners[i].unix_path);
	}
	n_listeners = 0;
}
