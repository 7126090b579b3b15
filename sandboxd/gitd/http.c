/*
 * http.c — the libmicrohttpd adapter (see http.h): listeners on a unix
 * socket and/or TCP, request bodies with a size limit, bearer-token
 * authentication compared in constant time, and RFC 9457 problem+json
 * errors carrying a stable "code".
 */
#include <arpa/inet.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "gitd.h"
#include "http.h"

#define MAX_HEADERS 4
#define DISCARD_MAX (1u << 20) /* bytes of an oversized body read before hanging up */

struct listener {
	struct MHD_Daemon *d;
	char *unix_path;
	bool quiesced;
};

struct http_req {
	const char *method;
	char *path;
	char *body;
	size_t body_len;
	uint64_t seen;
	bool too_large;
	unsigned status;
	struct MHD_Response *resp;
	const char *hdr_name[MAX_HEADERS];
	char *hdr_value[MAX_HEADERS];
	int n_hdr;
};

static struct listener listeners[2];
static size_t n_listeners;

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

static void
deliver(struct http_req *r, unsigned status, struct MHD_Response *resp)
{
	if (!resp) {
		log_error("cannot allocate an HTTP response");
		return;
	}
	if (r->resp) {
		log_error("request %s %s answered twice", r->method, r->path);
		MHD_destroy_response(resp);
		return;
	}
	for (int i = 0; i < r->n_hdr; i++)
		MHD_add_response_header(resp, r->hdr_name[i], r->hdr_value[i]);
	r->status = status;
	r->resp = resp;
	log_debug("%s %s -> %u", r->method, r->path, status);
}

/* Send text (taking it) with a trailing newline: curl output and logs read well. */
static void
reply_text(struct http_req *r, unsigned status, const char *content_type, char *text)
{
	size_t len = strlen(text);
	char *nl = realloc(text, len + 2);
	struct MHD_Response *resp;

	if (nl) {
		text = nl;
		text[len++] = '\n';
		text[len] = '\0';
	}
	resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(text);
		return;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
	deliver(r, status, resp);
}

void
http_reply_json(struct http_req *r, unsigned status, json_t *body)
{
	char *text = body ? json_dumps(body, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;

	json_decref(body);
	if (!text) {
		http_reply_problem(r, 500, "internal", "cannot encode the answer");
		return;
	}
	reply_text(r, status, "application/json", text);
}

void
http_reply_problem(struct http_req *r, unsigned status, const char *code, const char *fmt, ...)
{
	char detail[GITD_ERR_MAX + 512];
	va_list ap;
	json_t *j;
	char *text;

	va_start(ap, fmt);
	vsnprintf(detail, sizeof detail, fmt, ap);
	va_end(ap);
	j = json_pack("{s:s, s:s, s:i, s:s, s:s}", "type", "about:blank", "title", reason(status), "status",
		      (int)status, "code", code, "detail", detail);
	if (!j) /* a detail cut inside a UTF-8 sequence: say less rather than nothing */
		j = json_pack("{s:s, s:s, s:i, s:s}", "type", "about:blank", "title", reason(status), "status",
			      (int)status, "code", code);
	text = j ? json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
	json_decref(j);
	if (status >= 500)
		log_warning("%s %s -> %u %s: %s", r->method, r->path, status, code, detail);
	if (text)
		reply_text(r, status, "application/problem+json", text);
}

void
http_reply_empty(struct http_req *r, unsigned status)
{
	deliver(r, status, MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT));
}

json_t *
http_body_json(struct http_req *r)
{
	json_error_t err;
	json_t *j;

	if (r->body_len == 0) {
		http_reply_problem(r, 400, "invalid_json", "the request needs a JSON object as its body");
		return NULL;
	}
	j = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &err);
	if (!j) {
		http_reply_problem(r, 400, "invalid_json", "the request body is not valid JSON: %s (line %d, column %d)",
				   err.text, err.line, err.column);
		return NULL;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		http_reply_problem(r, 400, "invalid_json", "the request body must be a JSON object");
		return NULL;
	}
	return j;
}

static bool
authorized(struct MHD_Connection *conn)
{
	const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);

	if (h && strncasecmp(h, "Bearer ", 7) == 0) {
		h += 7;
		while (*h == ' ')
			h++;
	} else
		h = NULL;
	return config_token_matches(h);
}

static enum MHD_Result
queue(struct MHD_Connection *conn, struct http_req *r)
{
	enum MHD_Result ret;

	if (!r->resp)
		return MHD_NO;
	ret = MHD_queue_response(conn, r->status, r->resp);
	MHD_destroy_response(r->resp);
	r->resp = NULL;
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
		r->method = method;
		*con_cls = r;
		/* Refuse early, before reading a body that would be thrown away. */
		if (strcmp(url, "/healthz") != 0 && !authorized(conn)) {
			http_add_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
			http_reply_problem(r, 401, "unauthorized", "a valid bearer token is required");
		} else if ((cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH)) &&
			   strtoull(cl, NULL, 10) > GITD_BODY_MAX)
			http_reply_problem(r, 413, "request_too_large", "the request body exceeds %u bytes",
					   GITD_BODY_MAX);
		return r->resp ? queue(conn, r) : MHD_YES;
	}
	if (*upload_data_size) {
		r->seen += *upload_data_size;
		if (!r->too_large && r->body_len + *upload_data_size > GITD_BODY_MAX) {
			r->too_large = true;
			free(r->body);
			r->body = NULL;
			r->body_len = 0;
		}
		if (r->too_large) {
			/* Read and drop the rest so the client gets its 413, but not without end. */
			*upload_data_size = 0;
			return r->seen > GITD_BODY_MAX + DISCARD_MAX ? MHD_NO : MHD_YES;
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
	if (r->too_large)
		http_reply_problem(r, 413, "request_too_large", "the request body exceeds %u bytes", GITD_BODY_MAX);
	else if (gitd_stopping)
		http_reply_problem(r, 503, "shutting_down", "the mirror daemon is stopping");
	else
		api_dispatch(r);
	if (!r->resp)
		http_reply_problem(r, 500, "internal", "no answer was produced");
	return queue(conn, r);
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
	if (r->resp)
		MHD_destroy_response(r->resp);
	for (int i = 0; i < r->n_hdr; i++)
		free(r->hdr_value[i]);
	free(r->body);
	free(r->path);
	free(r);
	*con_cls = NULL;
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
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL |
			 MHD_USE_ITC | MHD_USE_ERROR_LOG;
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
					(unsigned)60, MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg.max_connections,
					MHD_OPTION_END);
	} else
		l->d = MHD_start_daemon(flags, ntohs(sin->sin_port), NULL, NULL, on_request, NULL, MHD_OPTION_SOCK_ADDR,
					sin, MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
					MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60, MHD_OPTION_CONNECTION_LIMIT,
					(unsigned)cfg.max_connections, MHD_OPTION_END);
	if (!l->d) {
		log_error("cannot start the HTTP server on %s", unix_path ? unix_path : cfg.listen_tcp);
		if (fd >= 0)
			close(fd);
		return -EADDRINUSE;
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

/* Stop accepting connections; those open are served to the end. */
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
	for (size_t i = 0; i < n_listeners; i++) {
		MHD_stop_daemon(listeners[i].d);
		if (listeners[i].unix_path && !listeners[i].quiesced)
			unlink(listeners[i].unix_path);
		free(listeners[i].unix_path);
	}
	n_listeners = 0;
}
