/*
 * http.c — see http.h.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>

#include "http.h"
#include "log.h"

/* ----------------------------------------------------------------------
 * Request ids and the access log
 * ---------------------------------------------------------------------- */

bool
http_request_id_valid(const char *s)
{
	size_t n = 0;

	if (s == NULL)
		return false;
	for (; s[n]; n++)
	{
		char c = s[n];

		if (n >= HTTP_REQUEST_ID_MAX)
			return false;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			  strchr("._:+=/@-", c) != NULL))
			return false;
	}
	return n > 0;
}

/* 24 hex digits: 12 random bytes, or the time and a counter without entropy. */
static void
request_id_make(char *buf)
{
	static atomic_uint_fast64_t counter;
	unsigned char				raw[12];

	if (getrandom(raw, sizeof(raw), GRND_NONBLOCK) != (ssize_t) sizeof(raw))
	{
		uint64_t n = atomic_fetch_add(&counter, 1);
		uint32_t t = (uint32_t) time(NULL);

		memcpy(raw, &n, 8);
		memcpy(raw + 8, &t, 4);
	}
	for (size_t i = 0; i < sizeof(raw); i++)
		snprintf(buf + 2 * i, 3, "%02x", raw[i]);
}

/*
 * The path as the log shows it: up to the query, at most 512 bytes, with
 * every byte outside printable ASCII, the space, '"' and '%' written as
 * %XX, so that a request cannot forge a line or a field.
 */
static char *
path_printable(const char *path)
{
	size_t n = strcspn(path, "?");
	size_t cut = n > 512 ? 512 : n;
	char  *out = malloc(cut * 3 + 4);
	char  *o = out;

	if (out == NULL)
		return NULL;
	for (size_t i = 0; i < cut; i++)
	{
		unsigned char c = (unsigned char) path[i];

		if (c <= ' ' || c >= 0x7f || c == '"' || c == '%')
		{
			snprintf(o, 4, "%%%02X", c);
			o += 3;
		}
		else
			*o++ = (char) c;
	}
	if (cut < n)
	{
		memcpy(o, "...", 3);
		o += 3;
	}
	*o = '\0';
	return out;
}

void
http_access_start(HttpAccess *a, struct MHD_Connection *conn, const char *method, const char *path)
{
	const char *id =
		conn ? MHD_lookup_connection_value(conn, MHD_HEADER_KIND, HTTP_REQUEST_ID_HEADER) : NULL;

	memset(a, 0, sizeof(*a));
	if (http_request_id_valid(id))
		strcpy(a->request_id, id);
	else
		request_id_make(a->request_id);
	snprintf(a->method, sizeof(a->method), "%s", method ? method : "-");
	for (char *m = a->method; *m; m++)
		if (*m <= ' ' || *m >= 0x7f || *m == '"')
			*m = '?';
	a->path = path_printable(path ? path : "-");
	a->start_us = now_us();
	a->bytes = -1;
	a->started = true;
}

void
http_access_answer(HttpAccess *a, struct MHD_Response *resp, unsigned status, int64_t bytes)
{
	if (!a->started)
		http_access_start(a, NULL, NULL, NULL);
	a->status = status;
	a->bytes = bytes;
	if (resp)
		MHD_add_response_header(resp, HTTP_REQUEST_ID_HEADER, a->request_id);
}

static const char *
end_reason(enum MHD_RequestTerminationCode toe)
{
	switch (toe)
	{
		case MHD_REQUEST_TERMINATED_COMPLETED_OK:
			return NULL;
		case MHD_REQUEST_TERMINATED_WITH_ERROR:
			return "error";
		case MHD_REQUEST_TERMINATED_TIMEOUT_REACHED:
			return "timeout";
		case MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN:
			return "shutdown";
		case MHD_REQUEST_TERMINATED_READ_ERROR:
			return "read_error";
		case MHD_REQUEST_TERMINATED_CLIENT_ABORT:
			return "client_gone";
	}
	return "unknown";
}

void
http_access_end(HttpAccess *a, struct MHD_Connection *conn, enum MHD_RequestTerminationCode toe)
{
	const char *why = end_reason(toe);
	unsigned	status = a->status;
	char		st[16] = "-";
	char		by[24] = "-";
	uint64_t	us;

	if (!a->started)
		http_access_start(a, NULL, NULL, NULL);
	if (status == 0 && conn != NULL)
	{
		/* an answer queued without us: libmicrohttpd's own, or a streamed one */
		const union MHD_ConnectionInfo *ci =
			MHD_get_connection_info(conn, MHD_CONNECTION_INFO_HTTP_STATUS);

		if (ci != NULL)
			status = ci->http_status;
	}
	if (status != 0)
		snprintf(st, sizeof(st), "%u", status);
	if (a->bytes >= 0 && status != 0)
		snprintf(by, sizeof(by), "%lld", (long long) a->bytes);
	us = now_us() - a->start_us;
	log_info("access method=%s path=%s status=%s bytes=%s ms=%llu.%03llu request_id=%s%s%s",
			 a->method, a->path ? a->path : "-", st, by, (unsigned long long) (us / 1000),
			 (unsigned long long) (us % 1000), a->request_id, why ? " end=" : "", why ? why : "");
	free(a->path);
	a->path = NULL;
	a->started = false;
}

char *
http_problem_text(unsigned status, const char *code, const char *detail, const char *request_id)
{
	return problem_text(status, code, detail,
						request_id && http_request_id_valid(request_id) ? request_id : NULL);
}

/* ----------------------------------------------------------------------
 * Credentials
 * ---------------------------------------------------------------------- */

HttpBearer
http_bearer(struct MHD_Connection *conn, const char **token)
{
	return http_bearer_parse(
		MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION), token);
}

const char *
bearer_token(struct MHD_Connection *conn)
{
	const char *token;

	return http_bearer(conn, &token) == HTTP_BEARER_TOKEN ? token : NULL;
}

/* ----------------------------------------------------------------------
 * Slow clients
 * ---------------------------------------------------------------------- */

struct HttpConn
{
	int		  fd;
	uint64_t  deadline_ms; /* CLOCK_MONOTONIC; 0: none */
	HttpConn *prev;
	HttpConn *next;
};

void
http_slow_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
				 enum MHD_ConnectionNotificationCode toe)
{
	HttpSlow *s = cls;
	HttpConn *c = *socket_context;

	if (toe == MHD_CONNECTION_NOTIFY_STARTED)
	{
		const union MHD_ConnectionInfo *info =
			MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);

		c = calloc(1, sizeof(*c));
		if (c == NULL)
			return;
		c->fd = info ? info->connect_fd : -1;
		http_conn_deadline(c, s->header_timeout_ms);
		c->next = s->conns;
		if (s->conns)
			s->conns->prev = c;
		s->conns = c;
		*socket_context = c;
	}
	else if (c != NULL)
	{
		if (c->prev)
			c->prev->next = c->next;
		else
			s->conns = c->next;
		if (c->next)
			c->next->prev = c->prev;
		free(c);
		*socket_context = NULL;
	}
}

HttpConn *
http_conn_of(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *info =
		MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

	return info ? info->socket_context : NULL;
}

void
http_conn_deadline(HttpConn *c, uint64_t timeout_ms)
{
	if (c != NULL)
		c->deadline_ms = timeout_ms ? now_ms() + timeout_ms : 0;
}

unsigned
http_slow_sweep(HttpSlow *s)
{
	uint64_t now = now_ms();
	unsigned n = 0;

	for (HttpConn *c = s->conns; c; c = c->next)
		if (c->deadline_ms && now >= c->deadline_ms && c->fd >= 0)
		{
			log_debug("closing a connection that did not send its request in time");
			shutdown(c->fd, SHUT_RDWR);
			c->deadline_ms = 0;
			n++;
		}
	return n;
}

/* ----------------------------------------------------------------------
 * Request bodies
 * ---------------------------------------------------------------------- */

enum MHD_Result
req_body_feed(struct req_body *b, const char *data, size_t *size, uint64_t discard_max)
{
	char *nb;

	b->seen += *size;
	if (!b->too_large && b->len + *size > b->limit)
	{
		b->too_large = true;
		req_body_free(b);
	}
	if (b->too_large)
	{
		*size = 0;
		return b->seen - b->limit > discard_max ? MHD_NO : MHD_YES;
	}
	nb = realloc(b->data, b->len + *size + 1);
	if (nb == NULL)
		return MHD_NO;
	b->data = nb;
	memcpy(b->data + b->len, data, *size);
	b->len += *size;
	b->data[b->len] = '\0';
	*size = 0;
	return MHD_YES;
}

void
req_body_free(struct req_body *b)
{
	free(b->data);
	b->data = NULL;
	b->len = 0;
}

bool
req_body_announced_too_large(struct MHD_Connection *conn, uint64_t limit)
{
	const char *cl =
		MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
	uint64_t n = 0;

	if (cl == NULL || *cl == '\0')
		return false;
	for (const char *p = cl; *p; p++)
	{
		if (*p < '0' || *p > '9')
			return false;
		if (n > (UINT64_MAX - 9) / 10)
			return true;
		n = n * 10 + (uint64_t) (*p - '0');
	}
	return n > limit;
}

/* ----------------------------------------------------------------------
 * The per-request record
 * ---------------------------------------------------------------------- */

int
mhd_req_init(struct mhd_req *r, struct MHD_Connection *conn, const char *method, const char *url,
			 size_t body_limit)
{
	r->method = method;
	r->body.limit = body_limit;
	r->path = strdup(url);
	if (r->path == NULL)
		return -ENOMEM;
	http_access_start(&r->access, conn, method, url);
	return 0;
}

void
mhd_req_add_header(struct mhd_req *r, const char *name, const char *value)
{
	if (r->n_hdr < MHD_REQ_MAX_HEADERS && (r->hdr_value[r->n_hdr] = strdup(value)))
		r->hdr_name[r->n_hdr++] = name;
}

bool
mhd_req_answer(struct mhd_req *r, unsigned status, struct MHD_Response *resp, int64_t bytes)
{
	if (resp == NULL)
	{
		log_error("cannot allocate an HTTP response");
		resp = MHD_create_response_from_buffer(0, (void *) "", MHD_RESPMEM_PERSISTENT);
		status = MHD_HTTP_INTERNAL_SERVER_ERROR;
		bytes = 0;
		if (resp == NULL)
			return false;
	}
	if (r->resp)
	{
		/* A second answer to one request is a bug; keep the first. */
		log_error("request %s %s answered twice", r->method, r->path);
		MHD_destroy_response(resp);
		return false;
	}
	for (int i = 0; i < r->n_hdr; i++)
		MHD_add_response_header(resp, r->hdr_name[i], r->hdr_value[i]);
	http_access_answer(&r->access, resp, status, bytes);
	r->status = status;
	r->resp = resp;
	return true;
}

const char *
http_method(const struct http_req *r)
{
	return ((const struct mhd_req *) r)->method;
}

const char *
http_path(const struct http_req *r)
{
	return ((const struct mhd_req *) r)->path;
}

void
http_add_header(struct http_req *r, const char *name, const char *value)
{
	mhd_req_add_header((struct mhd_req *) r, name, value);
}

struct MHD_Response *
mhd_req_problem(const struct mhd_req *r, unsigned status, const char *code, size_t detail_max,
				int64_t *bytes, const char *fmt, va_list ap)
{
	_cleanup_(freep) char *detail = malloc(detail_max);
	char				  *text;

	*bytes = -1;
	if (detail == NULL)
		return NULL;
	vsnprintf(detail, detail_max, fmt, ap);
	text = http_problem_text(status, code, detail, r->access.request_id);
	if (status >= 500)
		log_warning("%s %s -> %u %s: %s (request %s)", r->method, r->path, status, code, detail,
					r->access.request_id);
	if (text == NULL)
		return NULL;
	return text_response(text, "application/problem+json", bytes);
}

enum MHD_Result
mhd_req_queue(struct mhd_req *r, struct MHD_Connection *conn)
{
	enum MHD_Result ret;

	if (r->resp == NULL)
		return MHD_NO;
	ret = MHD_queue_response(conn, r->status, r->resp);
	MHD_destroy_response(r->resp);
	r->resp = NULL;
	r->status = 0;
	return ret;
}

void
mhd_req_done(struct mhd_req *r, struct MHD_Connection *conn, enum MHD_RequestTerminationCode toe)
{
	http_access_end(&r->access, conn, toe);
	if (r->resp)
		MHD_destroy_response(r->resp);
	r->resp = NULL;
	for (int i = 0; i < r->n_hdr; i++)
		free(r->hdr_value[i]);
	r->n_hdr = 0;
	req_body_free(&r->body);
	free(r->path);
	r->path = NULL;
}
