/*
 * http.c — the libmicrohttpd adapter (see http.h): listeners, request
 * paths refused when a segment is "." or ".." (also percent-encoded),
 * before anything else; request bodies with a size limit; the caller's
 * credential (access.c), with requests whose token names a key not yet
 * known waiting for one key refresh; suspend/resume for answers that come
 * later; and RFC 9457 problem+json errors carrying a stable "code".  The
 * request layer (request ids, the access log, bodies, bearer tokens) is
 * daemonlib/http.c; listeners are daemonlib/listener.c.
 */
#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>

#include "access.h"
#include "daemonlib/http.h"
#include "daemonlib/listener.h"
#include "http.h"
#include "metrics.h"
#include "sbx.h"

extern bool sbx_draining;
void		api_dispatch(struct http_req *r);

#define DISCARD_MAX (8u << 20) /* bytes of an oversized body read before hanging up */

struct http_req
{
	struct mhd_req			m; /* method, path, body, the answer */
	struct MHD_Connection  *conn;
	char				   *raw_path; /* the path as received, before MHD decoded it */
	struct access_principal who;
	bool					started;	  /* on_request has seen it */
	bool					key_unknown;  /* its token names a key the cache does not know (yet) */
	bool					waiting_keys; /* suspended until a key refresh is over */
	bool					in_handler, dispatched, suspended;
	struct http_req		   *next;
};

/* A streamed answer (http_stream_start): a buffer MHD's content reader drains. */
struct http_stream
{
	struct MHD_Connection *conn;
	char				  *buf;
	size_t				   len, off, cap;
	bool				   suspended; /* the reader found nothing: the connection waits */
	bool				   ended;	  /* no more writes: the body ends when drained */
	bool				   owner_done, mhd_done;
	struct http_stream	  *prev, *next;
};

static struct http_stream  *streams; /* live streams, for http_done */
static struct mhd_listeners listeners;
static EvIo					listener_io[ARRAY_SIZE(listeners.l)];
static struct http_req	   *requests; /* every live request */

unsigned
http_pending(void)
{
	unsigned n = 0;

	for (struct http_req *r = requests; r; r = r->next)
		n += r->suspended ? 1 : 0;
	/* A streamed answer is pending until MHD has sent all of it (a drain waits for it). */
	for (struct http_stream *s = streams; s; s = s->next)
		n += s->mhd_done ? 0 : 1;
	return n;
}

const struct access_principal *
http_principal(const struct http_req *r)
{
	return &r->who;
}

void *
http_calloc(struct http_req *r, size_t size)
{
	void *x = calloc(1, size);

	if (!x)
		http_reply_problem(r, 500, "internal", "out of memory");
	return x;
}

const char *
http_req_bearer(const struct http_req *r)
{
	return bearer_token(r->conn);
}

const char *
http_query(const struct http_req *r, const char *key)
{
	return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, key);
}

const char *
http_body(const struct http_req *r, size_t *len)
{
	*len = r->m.body.len;
	return r->m.body.data ? r->m.body.data : "";
}

/*
 * Hand a response to MHD now (inside the access handler) or store it and
 * resume the suspended connection, whose handler then queues it.
 */
static void
deliver(struct http_req *r, unsigned status, struct MHD_Response *resp, int64_t bytes)
{
	if (!mhd_req_answer(&r->m, status, resp, bytes))
		return;
	if (sbx_draining)
		MHD_add_response_header(r->m.resp, MHD_HTTP_HEADER_CONNECTION, "close");
	status = r->m.status;
	metrics_http(status);
	if (r->suspended)
	{
		r->suspended = false;
		MHD_resume_connection(r->conn);
	}
}

void
http_reply_text(struct http_req *r, unsigned status, const char *content_type, char *text,
				size_t len)
{
	struct MHD_Response *resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);

	if (!resp)
		free(text);
	else if (content_type)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
	deliver(r, status, resp, (int64_t) len);
}

void
http_reply_json(struct http_req *r, unsigned status, json_t *body)
{
	char *text =
		body ? json_dumps(body, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_REAL_PRECISION(10)) : NULL;

	json_decref(body);
	if (!text)
	{
		http_reply_problem(r, 500, "internal", "cannot encode the answer");
		return;
	}
	int64_t				 len = 0;
	struct MHD_Response *resp = text_response(text, "application/json", &len);

	deliver(r, status, resp, len);
}

void
http_reply_problem(struct http_req *r, unsigned status, const char *code, const char *fmt, ...)
{
	struct MHD_Response *resp;
	int64_t				 bytes;
	va_list				 ap;

	va_start(ap, fmt);
	resp = mhd_req_problem(&r->m, status, code, 1024, &bytes, fmt, ap);
	va_end(ap);
	deliver(r, status, resp, bytes);
}

void
http_reply_fd(struct http_req *r, int fd, uint64_t size)
{
	struct MHD_Response *resp = MHD_create_response_from_fd64(size, fd);

	if (!resp)
		close(fd);
	else
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/octet-stream");
	deliver(r, 200, resp, (int64_t) size);
}

void
http_reply_empty(struct http_req *r, unsigned status)
{
	deliver(r, status, MHD_create_response_from_buffer(0, (void *) "", MHD_RESPMEM_PERSISTENT), 0);
}

void
http_reply_errno(struct http_req *r, int err, const char *what)
{
	switch (-err)
	{
		case EXDEV:
			http_reply_problem(
				r, 403, "path_outside_sandbox",
				"%s: the path leads outside the workspace (\"..\", an absolute path elsewhere, "
				"or a symlink pointing out)",
				what);
			break;
		case ENOENT:
			http_reply_problem(r, 404, "file_not_found", "%s: no such file or directory", what);
			break;
		case EISDIR:
			http_reply_problem(r, 400, "is_a_directory", "%s: is a directory", what);
			break;
		case ENOTDIR:
			http_reply_problem(r, 400, "not_a_directory",
							   "%s: a component of the path is not a directory", what);
			break;
		case EBADFD:
		case ENXIO:
			http_reply_problem(r, 400, "not_a_regular_file", "%s: not a regular file", what);
			break;
		case ELOOP:
			http_reply_problem(r, 400, "symlink_loop", "%s: too many levels of symbolic links",
							   what);
			break;
		case ENAMETOOLONG:
			http_reply_problem(r, 400, "path_too_long", "%s: the path is too long", what);
			break;
		case EFBIG:
			http_reply_problem(r, 413, "file_too_large", "%s: the file exceeds the %llu byte limit",
							   what, (unsigned long long) cfg.max_file_bytes);
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

const char *
http_header(const struct http_req *r, const char *name)
{
	return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

/* ---- streamed answers ---------------------------------------------------- */

static void
stream_release(struct http_stream *s)
{
	if (!s->owner_done || !s->mhd_done)
		return;
	if (s->prev)
		s->prev->next = s->next;
	else
		streams = s->next;
	if (s->next)
		s->next->prev = s->prev;
	free(s->buf);
	free(s);
}

static void
stream_wake(struct http_stream *s)
{
	if (s->suspended)
	{
		s->suspended = false;
		MHD_resume_connection(s->conn);
	}
}

static ssize_t
stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct http_stream *s = cls;
	size_t				n = s->len - s->off;
	(void) pos;

	if (n > 0)
	{
		if (n > max)
			n = max;
		memcpy(buf, s->buf + s->off, n);
		s->off += n;
		if (s->off == s->len)
			s->off = s->len = 0;
		return (ssize_t) n;
	}
	if (s->ended)
		return MHD_CONTENT_READER_END_OF_STREAM;
	/* Nothing yet: the connection waits until the next write (as the edge's event streams). */
	s->suspended = true;
	MHD_suspend_connection(s->conn);
	return 0;
}

static void
stream_reader_free(void *cls)
{
	struct http_stream *s = cls;

	s->mhd_done = true;
	s->ended = true;
	stream_release(s);
}

struct http_stream *
http_stream_start(struct http_req *r, unsigned status, const char *content_type)
{
	struct http_stream	*s = calloc(1, sizeof *s);
	struct MHD_Response *resp = NULL;

	if (s)
		resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_reader, s,
												 stream_reader_free);
	if (!resp)
	{
		free(s);
		http_reply_problem(r, 500, "internal", "out of memory");
		return NULL;
	}
	s->conn = r->conn;
	s->next = streams;
	if (streams)
		streams->prev = s;
	streams = s;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	deliver(r, status, resp, -1);
	return s;
}

int
http_stream_write(struct http_stream *s, const char *data, size_t len)
{
	if (!s || s->ended)
		return -EPIPE;
	if (s->len + len > s->cap)
	{
		size_t cap = s->cap ? s->cap : 4096;
		char  *n;

		while (cap < s->len + len)
			cap *= 2;
		n = realloc(s->buf, cap);
		if (!n)
			return -ENOMEM;
		s->buf = n;
		s->cap = cap;
	}
	memcpy(s->buf + s->len, data, len);
	s->len += len;
	stream_wake(s);
	return 0;
}

void
http_stream_end(struct http_stream *s)
{
	if (!s)
		return;
	s->ended = true;
	s->owner_done = true;
	stream_wake(s);
	stream_release(s);
}

json_t *
http_body_json(struct http_req *r)
{
	char	why[512];
	json_t *j;

	if (r->m.body.len == 0)
		return json_object();
	j = json_object_parse(r->m.body.data, r->m.body.len, why, sizeof why);
	if (!j)
		http_reply_problem(r, 400, "invalid_json", "%s", why);
	return j;
}

/*
 * A request path sandboxd serves: no "." or ".." segment and no encoded
 * slash or backslash, in the form received and in the form MHD decoded
 * (so a double encoding does not slip through either).  Every route is made
 * of identifiers: nothing legitimate needs any of these.
 */
static bool
path_ok(const char *raw, const char *decoded)
{
	size_t n = strcspn(raw, "?");

	if (!url_path_safe(raw, n) || !url_path_safe(decoded, strlen(decoded)))
		return false;
	for (size_t i = 0; i + 2 < n; i++)
		if (raw[i] == '%' && ((raw[i + 1] == '2' && (raw[i + 2] == 'f' || raw[i + 2] == 'F')) ||
							  (raw[i + 1] == '5' && (raw[i + 2] == 'c' || raw[i + 2] == 'C'))))
			return false;
	return true;
}

static void
unauthorized(struct http_req *r, const char *why)
{
	http_add_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
	http_reply_problem(r, 401, "not_authenticated", "%s", why);
}

/* Who sends r: fills r->who, answers 401, or marks the request to wait for keys. */
static void
authenticate(struct http_req *r, bool may_wait)
{
	char why[256];

	switch (access_authenticate(bearer_token(r->conn), &r->who, why, sizeof why))
	{
		case ACCESS_OK:
			r->key_unknown = false;
			break;
		case ACCESS_RETRY:
			if (may_wait)
			{
				r->key_unknown = true;
				break;
			}
			/* fall through */
		case ACCESS_DENIED:
			r->key_unknown = false;
			unauthorized(r, why);
			break;
	}
}

/* The key refresh r waited for is over: check its token again, then serve it. */
static void
keys_refreshed(void *arg)
{
	struct http_req *r = arg;

	r->waiting_keys = false;
	authenticate(r, false);
	if (!r->m.resp)
		api_dispatch(r);
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
	r->dispatched = true;
	return mhd_req_queue(&r->m, r->conn);
}

/* MHD_OPTION_URI_LOG_CALLBACK: the request begins; keep its target as received. */
static void *
on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
	struct http_req *r = calloc(1, sizeof *r);
	(void) cls;
	(void) conn;

	if (r && !(r->raw_path = strdup(uri)))
	{
		free(r);
		r = NULL;
	}
	return r;
}

static void
req_free(struct http_req *r)
{
	free(r->raw_path);
	free(r);
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
		   const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	struct http_req *r = *con_cls;
	(void) cls;
	(void) version;

	if (!r || !r->started)
	{
		if (!r)
			return MHD_NO; /* out of memory in on_uri */
		if (mhd_req_init(&r->m, conn, method, url,
						 is_file_upload(method, url) ? cfg.max_file_bytes : cfg.max_request_bytes) <
			0)
			return MHD_NO;
		r->started = true;
		r->conn = conn;
		r->next = requests;
		requests = r;
		*con_cls = r;

		/* Refuse early, before reading a body that would be thrown away. */
		r->in_handler = true;
		if (sbx_draining && strcmp(url, "/healthz") != 0)
		{
			http_add_header(r, "Retry-After", "1");
			http_reply_problem(r, 503, "draining", "this sandbox host is shutting down");
		}
		else if (!path_ok(r->raw_path, url))
		{
			http_reply_problem(r, 400, "invalid_path",
							   "the path has a \".\" or \"..\" segment (also percent-encoded), an "
							   "encoded slash, a "
							   "backslash, a control character or a malformed %%-escape");
		}
		else
		{
			if (!is_public(url))
				authenticate(r, true);
			if (!r->m.resp && req_body_announced_too_large(conn, r->m.body.limit))
				http_reply_problem(r, HTTP_BODY_TOO_LARGE_STATUS, HTTP_BODY_TOO_LARGE_CODE,
								   HTTP_BODY_TOO_LARGE_DETAIL,
								   (unsigned long long) r->m.body.limit);
		}
		r->in_handler = false;
		if (r->m.resp)
			return queue(r);
		return MHD_YES;
	}
	if (r->m.resp)
		return queue(r);
	if (*upload_data_size)
		return req_body_feed(&r->m.body, upload_data, upload_data_size, DISCARD_MAX);
	if (r->dispatched)
		return MHD_NO; /* resumed without an answer: cannot happen */

	r->in_handler = true;
	if (r->m.body.too_large)
		http_reply_problem(r, HTTP_BODY_TOO_LARGE_STATUS, HTTP_BODY_TOO_LARGE_CODE,
						   HTTP_BODY_TOO_LARGE_DETAIL, (unsigned long long) r->m.body.limit);
	else if (r->key_unknown)
	{
		/* Suspended below, unless answered already; keys_refreshed() carries on. */
		r->key_unknown = false;
		r->waiting_keys = true;
		if (!access_wait_keys(keys_refreshed, r))
		{
			r->waiting_keys = false;
			authenticate(r, false);
			if (!r->m.resp)
				api_dispatch(r);
		}
	}
	else
		api_dispatch(r);
	r->in_handler = false;
	if (r->m.resp)
		return queue(r);
	r->dispatched = true;
	r->suspended = true;
	MHD_suspend_connection(conn);
	return MHD_YES;
}

static void
on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct http_req *r = *con_cls;
	(void) cls;
	(void) conn;

	if (!r)
		return;
	if (r->waiting_keys)
		access_wait_cancel(r);
	for (struct http_req **pp = &requests; *pp; pp = &(*pp)->next)
		if (*pp == r)
		{
			*pp = r->next;
			break;
		}
	if (r->started)
		mhd_req_done(&r->m, conn, toe);
	else
	{
		/* refused by libmicrohttpd before the handler saw it */
		HttpAccess a;
		http_access_start(&a, NULL, NULL, r->raw_path);
		http_access_end(&a, conn, toe);
	}
	req_free(r);
	*con_cls = NULL;
}

static void
on_listener(EvIo *io, uint32_t revents)
{
	struct MHD_Daemon *d = io->data;
	(void) revents;

	MHD_run(d);
}

int
http_init(void)
{
	int r;

	listeners.uri_log = on_uri;
	r = mhd_listeners_start(&listeners, cfg.listen_unix, cfg.listen_tcp,
							MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG, 512,
							on_request, on_completed);

	if (r < 0)
		return r;
	for (size_t i = 0; i < listeners.n; i++)
	{
		struct MHD_Daemon		   *d = listeners.l[i].d;
		const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_EPOLL_FD);
		if (!info || ev_io_start(&listener_io[i], info->epoll_fd, EPOLLIN, on_listener, d) < 0)
			return -EIO;
	}
	return 0;
}

void
http_run(void)
{
	for (size_t i = 0; i < listeners.n; i++)
		MHD_run(listeners.l[i].d);
}

int64_t
http_timeout_ms(void)
{
	int64_t best = -1;

	for (size_t i = 0; i < listeners.n; i++)
	{
		MHD_UNSIGNED_LONG_LONG t;
		if (MHD_get_timeout(listeners.l[i].d, &t) == MHD_YES && (best < 0 || (int64_t) t < best))
			best = (int64_t) t;
	}
	return best;
}

uint16_t
http_tcp_port(void)
{
	return listeners.tcp_port;
}

void
http_quiesce(void)
{
	mhd_listeners_quiesce(&listeners);
}

void
http_done(void)
{
	/* Answer whatever still waits so MHD can let go of suspended connections. */
	for (struct http_req *r = requests; r; r = r->next)
		if (r->suspended)
			http_reply_problem(r, 503, "draining", "this sandbox host is shutting down");
	for (struct http_stream *s = streams; s; s = s->next)
	{
		s->ended = true;
		stream_wake(s);
	}
	http_run();
	for (size_t i = 0; i < listeners.n; i++)
		ev_io_stop(&listener_io[i]);
	mhd_listeners_stop(&listeners);
}
