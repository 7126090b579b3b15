/*
 * files.c — files in and out of a session's sandbox:
 *
 *     PUT /v1/sessions/{id}/files/{path}    the body becomes the file
 *     GET /v1/sessions/{id}/files/{path}    the file (or a directory's listing)
 *
 * The path is checked here first (percent-decoded once from the request
 * target as received: no empty, "." or ".." segment, no control character,
 * backslash or '%' after decoding, at most 4096 bytes and 255 per segment)
 * and again by nadi-sandboxd, which confines every file operation to the
 * workspace with openat2(RESOLVE_BENEATH) (a symlink that leads out is
 * refused there).
 *
 * A transfer: the client's token in one job (nadi.session_files_begin: the
 * session must be the caller's — another tenant's is a 404 — and live; it
 * writes the transfer's audit row and mints a token for that session's
 * files only), then HTTP to the session's sandbox host with that token:
 * find the session's sandbox (a PUT makes one when there is none), then
 * the bytes, then nadi.session_files_end records the outcome (bytes, the
 * status the client got) in a second audit row.  The edge holds no
 * sandboxd credential of its own.
 *
 * Both directions stream through a bounded buffer (--files-buffer): a PUT's
 * body is taken from libmicrohttpd only while there is room (the
 * connection is suspended otherwise) and handed to libcurl's read callback
 * (paused while the buffer is empty); a GET's body goes from libcurl's
 * write callback (paused while the buffer is full) to an EdgeStream (sse.c)
 * that libmicrohttpd drains.  libcurl runs in the edge's one event loop
 * (curl_multi_socket_action).  A PUT larger than --files-max-bytes is 413
 * (before any byte when Content-Length says so, else when it grows past
 * it); transfers are counted edge-wide and per tenant (quota.c).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>

#include <curl/curl.h>
#include <microhttpd.h>

#include "edge.h"
#include "jwt.h"
#include "routes_int.h"

#define FILES_PATH_MAX 4096
#define SMALL_MAX (8u << 20) /* a sandbox host's JSON answer (a listing at most) */
#define CONNECT_TIMEOUT_MS 5000L
#define SMALL_TIMEOUT_MS 30000L

typedef enum FxStep
{
	FX_BEGIN,	 /* nadi.session_files_begin */
	FX_FIND,	 /* GET /v1/sandboxes?session_id= */
	FX_CREATE,	 /* POST /v1/sandboxes (a PUT to a session without one) */
	FX_TRANSFER, /* the bytes */
	FX_END,		 /* nadi.session_files_end, then the answer */
} FxStep;

typedef struct Fx
{
	int				   refs; /* the request, the stream, the end job */
	EdgeReq			  *req;	 /* NULL once the request is gone */
	EdgeAuth		   auth; /* for the end job, which may outlive the request */
	bool			   has_auth;
	bool			   put;
	FxStep			   step;
	char			   sid[37];
	char			  *path; /* decoded and checked */
	EdgeQuota		  *quota;
	char			   transfer_id[24];
	char			  *base; /* the sandbox host's base URL */
	char			  *token;
	char			  *image;
	char			  *from; /* a fork's origin snapshot for the create (JSON text), or NULL */
	char			   sandbox_id[65];
	CURL			  *easy;
	struct curl_slist *hdrs;
	char			  *post;  /* POST body */
	EdgeBuf			   small; /* a JSON answer of the sandbox host */
	bool			   small_over;
	char			   ctype[128];
	/* PUT */
	EdgeBuf	 in;
	bool	 in_eof;
	bool	 in_paused; /* libcurl's read waits for bytes */
	bool	 mhd_wait;	/* the client's connection waits for room */
	uint64_t received;	/* from the client */
	/* GET */
	EdgeStream *st;
	bool		streaming;
	bool		out_paused; /* libcurl's write waits for room */
	bool		curl_failed;
	int64_t		expect; /* the file's length, when the sandbox host said it */
	uint64_t	bytes;	/* to the sandbox host (PUT) or to the client (GET) */
	/* the answer */
	bool		answered;
	bool		finished;
	int			status;
	char	   *body;
	size_t		body_len;
	const char *body_type;
	int			retry_after;
} Fx;

static CURLM  *multi;
static EvTimer curl_timer;
static int	   nactive;

int
files_active(void)
{
	return nactive;
}

/* ------------------------------------------------------------------------
 * libcurl in the event loop
 * ------------------------------------------------------------------------ */

static void curl_check(void);

static void
on_sock(EvIo *io, uint32_t events)
{
	int flags = 0, running;

	if (events & EPOLLIN)
		flags |= CURL_CSELECT_IN;
	if (events & EPOLLOUT)
		flags |= CURL_CSELECT_OUT;
	if (events & (EPOLLERR | EPOLLHUP))
		flags |= CURL_CSELECT_ERR;
	curl_multi_socket_action(multi, io->fd, flags, &running);
	curl_check();
}

static int
sock_cb(CURL *e EDGE_UNUSED, curl_socket_t s, int what, void *userp EDGE_UNUSED, void *socketp)
{
	EvIo	*io = socketp;
	uint32_t ev = 0;

	if (what == CURL_POLL_REMOVE)
	{
		if (io)
		{
			ev_io_stop(io);
			free(io);
			curl_multi_assign(multi, s, NULL);
		}
		return 0;
	}
	if (what & CURL_POLL_IN)
		ev |= EPOLLIN;
	if (what & CURL_POLL_OUT)
		ev |= EPOLLOUT;
	if (io == NULL)
	{
		if ((io = calloc(1, sizeof(*io))) == NULL)
			return -1;
		curl_multi_assign(multi, s, io);
	}
	return ev_io_start(io, s, ev, on_sock, NULL) < 0 ? -1 : 0;
}

static void
on_timeout(EvTimer *t EDGE_UNUSED)
{
	int running;

	curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
	curl_check();
}

static int
timer_cb(CURLM *m EDGE_UNUSED, long timeout_ms, void *userp EDGE_UNUSED)
{
	if (timeout_ms < 0)
		ev_timer_cancel(&curl_timer);
	else
		ev_timer_arm(&curl_timer, (uint64_t) timeout_ms, on_timeout, NULL);
	return 0;
}

int
files_init(void)
{
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || (multi = curl_multi_init()) == NULL)
	{
		log_error("could not set up libcurl");
		return -ENOMEM;
	}
	curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
	curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	return 0;
}

void
files_shutdown(void)
{
	ev_timer_cancel(&curl_timer);
	if (multi)
		curl_multi_cleanup(multi);
	multi = NULL;
}

/* ------------------------------------------------------------------------
 * A transfer's life
 * ------------------------------------------------------------------------ */

static void
fx_release(Fx *fx)
{
	if (--fx->refs > 0)
		return;
	auth_clear(&fx->auth);
	free(fx->path);
	free(fx->base);
	if (fx->token)
		explicit_bzero(fx->token, strlen(fx->token));
	free(fx->token);
	free(fx->image);
	free(fx->from);
	free(fx->post);
	free(fx->body);
	curl_slist_free_all(fx->hdrs);
	buf_free(&fx->small);
	buf_free(&fx->in);
	quota_give(fx->quota, QUOTA_FILES);
	nactive--;
	free(fx);
}

static void
fx_curl_stop(Fx *fx)
{
	if (fx->easy == NULL)
		return;
	curl_multi_remove_handle(multi, fx->easy);
	curl_easy_cleanup(fx->easy);
	fx->easy = NULL;
	curl_slist_free_all(fx->hdrs);
	fx->hdrs = NULL;
}

/* Send the answer kept in fx, if the client is still there. */
static void
fx_send(Fx *fx)
{
	EdgeReq	   *req = fx->req;
	char		retry[16];
	const char *headers[3] = {NULL};

	if (req == NULL || fx->streaming)
		return;
	if (fx->retry_after > 0)
	{
		snprintf(retry, sizeof(retry), "%d", fx->retry_after);
		headers[0] = MHD_HTTP_HEADER_RETRY_AFTER;
		headers[1] = retry;
	}
	http_respond(req, fx->status, fx->body_type, fx->body ? fx->body : "", fx->body_len, headers);
}

static void
done_end(void *arg, EdgeDbResult *r)
{
	Fx *fx = arg;

	if (!r->ok)
		log_warning("file transfer %s of session %s: its outcome was not recorded: %s",
					fx->transfer_id, fx->sid, r->message ? r->message : r->sqlstate);
	fx_send(fx);
	fx_release(fx);
}

/*
 * The transfer is over: record its outcome (when it began: it has an audit
 * row), then answer.  Once.
 */
static void
fx_finish(Fx *fx)
{
	char		bytes[24], status[16];
	const char *params[4] = {fx->transfer_id, bytes, status,
							 fx->sandbox_id[0] ? fx->sandbox_id : NULL};

	if (fx->finished)
		return;
	fx->finished = true;
	fx->step = FX_END;
	fx_curl_stop(fx);
	if (fx->st)
		stream_end(fx->st);
	if (fx->transfer_id[0] == '\0')
	{
		fx_send(fx);
		return;
	}
	snprintf(bytes, sizeof(bytes), "%llu", (unsigned long long) fx->bytes);
	snprintf(status, sizeof(status), "%d", fx->status);
	fx->refs++;
	if (db_submit(STMT_FILES_END, fx->has_auth ? &fx->auth : NULL, 4, params, done_end, fx) == NULL)
	{
		log_warning("file transfer %s of session %s: its outcome was not recorded (queue full)",
					fx->transfer_id, fx->sid);
		fx_send(fx);
		fx_release(fx);
	}
}

/* Answer (the body is copied) and finish. */
static void
fx_answer(Fx *fx, int status, const char *ctype, const char *body, size_t len)
{
	if (fx->answered)
		return;
	fx->answered = true;
	fx->status = status;
	fx->body_type = ctype;
	fx->body = malloc(len + 1);
	if (fx->body)
	{
		memcpy(fx->body, body, len);
		fx->body[len] = '\0';
		fx->body_len = len;
	}
	fx_finish(fx);
}

static void
fx_problem(Fx *fx, int status, const char *code, const char *detail, int retry_after)
{
	EdgeProblem p;
	char	   *body;

	problem_set(&p, status, code, "%s", detail);
	if (fx->req)
		p.request_id =
			http_request_id_valid(fx->req->access.request_id) ? fx->req->access.request_id : NULL;
	body = problem_json(&p, fx->req ? fx->req->url : NULL);
	fx->retry_after = retry_after;
	fx_answer(fx, status, "application/problem+json", body ? body : "{}", body ? strlen(body) : 2);
	free(body);
}

/* The request is gone (answered, or the client left). */
static void
fx_req_free(EdgeReq *req)
{
	Fx *fx = req->state;

	req->state = NULL;
	req->upload = NULL;
	if (fx == NULL)
		return;
	fx->req = NULL;
	if (!fx->finished && !fx->streaming)
	{
		/* the client left before its answer */
		fx->answered = true;
		fx->status = 499;
		fx_finish(fx);
	}
	fx_release(fx);
}

/* ------------------------------------------------------------------------
 * HTTP to the sandbox host
 * ------------------------------------------------------------------------ */

static size_t
small_write(char *p, size_t sz, size_t nm, void *ud)
{
	Fx	  *fx = ud;
	size_t n = sz * nm;

	if (fx->small.len + n > SMALL_MAX)
	{
		fx->small_over = true;
		return 0;
	}
	return buf_append(&fx->small, p, n) < 0 ? 0 : n;
}

static size_t
header_cb(char *p, size_t sz, size_t nm, void *ud)
{
	Fx	  *fx = ud;
	size_t n = sz * nm;

	if (n > 13 && strncasecmp(p, "Content-Type:", 13) == 0)
	{
		const char *v = p + 13;
		size_t		l;

		v += strspn(v, " \t");
		l = strcspn(v, "\r\n");
		if (l >= sizeof(fx->ctype))
			l = sizeof(fx->ctype) - 1;
		memcpy(fx->ctype, v, l);
		fx->ctype[l] = '\0';
	}
	return n;
}

/* A request to the sandbox host: path (already escaped) under its base URL. */
static int
fx_request(Fx *fx, const char *method, const char *path_and_query, bool small)
{
	char  url[FILES_PATH_MAX * 3 + 512];
	char *auth_header;
	int	  n;

	fx_curl_stop(fx);
	buf_reset(&fx->small);
	fx->small_over = false;
	fx->ctype[0] = '\0';
	n = snprintf(url, sizeof(url), "%s%s%s", strstr(fx->base, "://") ? "" : "http://", fx->base,
				 path_and_query);
	if (n < 0 || (size_t) n >= sizeof(url) || (fx->easy = curl_easy_init()) == NULL)
		return -ENOMEM;
	if (asprintf(&auth_header, "Authorization: Bearer %s", fx->token) < 0)
		return -ENOMEM;
	fx->hdrs = curl_slist_append(NULL, auth_header);
	explicit_bzero(auth_header, strlen(auth_header));
	free(auth_header);
	if (fx->req)
	{
		char rid[128];

		snprintf(rid, sizeof(rid), "X-Request-Id: %s", fx->req->access.request_id);
		fx->hdrs = curl_slist_append(fx->hdrs, rid);
	}
	fx->hdrs = curl_slist_append(fx->hdrs, "Expect:");
	curl_easy_setopt(fx->easy, CURLOPT_URL, url);
	curl_easy_setopt(fx->easy, CURLOPT_PRIVATE, fx);
	curl_easy_setopt(fx->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(fx->easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(fx->easy, CURLOPT_CONNECTTIMEOUT_MS, CONNECT_TIMEOUT_MS);
	curl_easy_setopt(fx->easy, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(fx->easy, CURLOPT_HEADERDATA, fx);
	curl_easy_setopt(fx->easy, CURLOPT_WRITEFUNCTION, small_write);
	curl_easy_setopt(fx->easy, CURLOPT_WRITEDATA, fx);
	if (small)
		curl_easy_setopt(fx->easy, CURLOPT_TIMEOUT_MS, SMALL_TIMEOUT_MS);
	if (strcmp(method, "POST") == 0)
	{
		fx->hdrs = curl_slist_append(fx->hdrs, "Content-Type: application/json");
		curl_easy_setopt(fx->easy, CURLOPT_POSTFIELDS, fx->post);
	}
	curl_easy_setopt(fx->easy, CURLOPT_HTTPHEADER, fx->hdrs);
	return 0;
}

static int
fx_start(Fx *fx)
{
	if (curl_multi_add_handle(multi, fx->easy) != CURLM_OK)
		return -EIO;
	return 0;
}

/* The sandbox host's answer was not a success: the client's answer. */
static void
fx_upstream_error(Fx *fx, long code)
{
	json_t *j =
		fx->small.len ? json_loadb(buf_head(&fx->small), buf_pending(&fx->small), 0, NULL) : NULL;
	const char *pcode = json_string_value(json_object_get(j, "code"));
	const char *detail = json_string_value(json_object_get(j, "detail"));
	char		msg[1024];

	if (code == 401 || (code == 403 && (pcode == NULL || strcmp(pcode, "forbidden") == 0)))
	{
		snprintf(msg, sizeof(msg),
				 "The sandbox host refused this edge's token for the session (%s).",
				 detail ? detail : "no detail");
		fx_problem(fx, 502, "sandbox_host_refused", msg, 0);
	}
	else if (code == 503)
	{
		snprintf(msg, sizeof(msg), "The sandbox host is not available now (%s).",
				 detail ? detail : "no detail");
		fx_problem(fx, 503, "sandbox_host_unavailable", msg, 2);
	}
	else if (code >= 400 && code < 500 && pcode)
		fx_problem(fx, (int) code, pcode, detail ? detail : pcode, 0);
	else
	{
		snprintf(msg, sizeof(msg), "The sandbox host answered HTTP %ld (%s).", code,
				 detail ? detail : "no detail");
		fx_problem(fx, 502, "sandbox_host_error", msg, 0);
	}
	json_decref(j);
}

static void
fx_transport_error(Fx *fx, CURLcode rc)
{
	char msg[512];

	snprintf(msg, sizeof(msg), "The sandbox host at %s could not be reached: %s.", fx->base,
			 curl_easy_strerror(rc));
	if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
		rc == CURLE_OPERATION_TIMEDOUT)
		fx_problem(fx, 503, "sandbox_host_unavailable", msg, 2);
	else
		fx_problem(fx, 502, "sandbox_host_error", msg, 0);
}

static void fx_transfer(Fx *fx);

static void
fx_create(Fx *fx)
{
	json_t *b = json_pack("{s:s, s:s}", "session_id", fx->sid, "image",
						  edge_cfg.files_image ? edge_cfg.files_image : fx->image);

	/* A fork's sandbox starts from its parent's files, whoever makes it first. */
	if (b && fx->from)
		json_object_set_new(b, "from", json_loads(fx->from, 0, NULL));
	free(fx->post);
	fx->post = b ? json_dumps(b, JSON_COMPACT) : NULL;
	json_decref(b);
	fx->step = FX_CREATE;
	if (fx->post == NULL || fx_request(fx, "POST", "/v1/sandboxes", true) < 0 || fx_start(fx) < 0)
		fx_problem(fx, 503, "unavailable", "Out of memory.", 1);
}

/* The sandbox id in a sandbox (or the first of a list); false: none. */
static bool
take_sandbox_id(Fx *fx, json_t *sb)
{
	const char *id = json_string_value(json_object_get(sb, "id"));
	size_t		n = id ? strlen(id) : 0;

	if (n == 0 || n >= sizeof(fx->sandbox_id) ||
		id[strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")] != '\0')
		return false;
	memcpy(fx->sandbox_id, id, n + 1);
	return true;
}

/* A small exchange (find, create) is over. */
static void
fx_small_done(Fx *fx, long code)
{
	json_t *j;
	bool	found;

	if (code != 200 && code != 201)
	{
		fx_upstream_error(fx, code);
		return;
	}
	j = json_loadb(buf_head(&fx->small), buf_pending(&fx->small), 0, NULL);
	if (fx->step == FX_FIND)
		found = take_sandbox_id(fx, json_array_get(json_object_get(j, "sandboxes"), 0));
	else
		found = take_sandbox_id(fx, j);
	json_decref(j);
	if (found)
		fx_transfer(fx);
	else if (fx->step == FX_CREATE)
		fx_problem(fx, 502, "sandbox_host_error",
				   "The sandbox host made a sandbox but named it in a way this edge does not take.",
				   0);
	else if (fx->put)
		fx_create(fx);
	else
		fx_problem(fx, 404, "file_not_found",
				   "The session has no sandbox yet, so no file (a PUT makes its sandbox).", 0);
}

/* ---- PUT: the client's body to the sandbox host ---------------------------- */

static size_t
put_read(char *out, size_t sz, size_t nm, void *ud)
{
	Fx	  *fx = ud;
	size_t n = buf_pending(&fx->in);

	if (n == 0)
	{
		if (fx->in_eof)
			return 0;
		fx->in_paused = true;
		return CURL_READFUNC_PAUSE;
	}
	if (n > sz * nm)
		n = sz * nm;
	memcpy(out, buf_head(&fx->in), n);
	buf_consume(&fx->in, n);
	fx->bytes += n;
	if (fx->mhd_wait && fx->req)
	{
		fx->mhd_wait = false;
		http_resume(fx->req);
	}
	return n;
}

static void
fx_unpause_in(Fx *fx)
{
	if (fx->easy && fx->in_paused)
	{
		fx->in_paused = false;
		curl_easy_pause(fx->easy, CURLPAUSE_CONT);
	}
}

/* http.c: a chunk of the client's body, or (data NULL) its end. */
static int
fx_upload(EdgeReq *req, const char *data, size_t *size)
{
	Fx	  *fx = req->state;
	size_t room, n;

	/* answered already (refused before its body, or by the sandbox host) */
	if (fx == NULL || fx->answered || req->status != 0)
	{
		*size = 0; /* not wanted any more: discarded */
		return 0;
	}
	if (data == NULL)
	{
		const char *cl = http_header(req, MHD_HTTP_HEADER_CONTENT_LENGTH);
		int64_t		len;

		/* not the end while a declared length is still due */
		if (!fx->in_eof &&
			!(cl && edge_parse_int64(cl, 0, INT64_MAX, &len) && fx->received < (uint64_t) len))
		{
			fx->in_eof = true;
			http_conn_deadline(req->ci, 0);
			fx_unpause_in(fx);
		}
		/* until the transfer starts, or the sandbox host answers */
		if (!fx->answered && req->ready == NULL)
			http_suspend(req);
		return 0;
	}
	if (fx->step != FX_TRANSFER)
	{
		fx->mhd_wait = true;
		http_suspend(req);
		return 0;
	}
	if (fx->received + *size > edge_cfg.files_max_bytes)
	{
		char msg[160];

		snprintf(msg, sizeof(msg), "The file is larger than this edge takes (%llu bytes).",
				 (unsigned long long) edge_cfg.files_max_bytes);
		*size = 0;
		fx_problem(fx, 413, "file_too_large", msg, 0);
		return 0;
	}
	room = buf_pending(&fx->in) >= edge_cfg.files_buffer
			   ? 0
			   : edge_cfg.files_buffer - buf_pending(&fx->in);
	n = *size < room ? *size : room;
	if (n > 0)
	{
		if (buf_append(&fx->in, data, n) < 0)
		{
			*size = 0;
			fx_problem(fx, 503, "unavailable", "Out of memory.", 1);
			return 0;
		}
		*size -= n;
		fx->received += n;
		/* a deadline for each stretch of the body, not for all of it */
		http_conn_deadline(req->ci, (uint64_t) edge_cfg.body_timeout_s * 1000);
		fx_unpause_in(fx);
	}
	if (*size > 0 && !fx->answered)
	{
		fx->mhd_wait = true;
		http_suspend(req);
	}
	return 0;
}

/* ---- GET: the sandbox host's body to the client ---------------------------- */

static void
out_closed(EdgeStream *st EDGE_UNUSED, void *owner)
{
	Fx *fx = owner;

	fx->st = NULL;
	/* the client has all of it, or left in the middle */
	if (fx->easy && !(fx->expect >= 0 && fx->bytes == (uint64_t) fx->expect))
		fx->status = 499;
	fx_finish(fx);
	fx_release(fx);
}

static void
out_room(EdgeStream *st EDGE_UNUSED, void *owner)
{
	Fx *fx = owner;

	if (fx->easy && fx->out_paused)
	{
		fx->out_paused = false;
		curl_easy_pause(fx->easy, CURLPAUSE_CONT);
	}
}

static bool
is_octets(const char *ctype)
{
	return strncasecmp(ctype, "application/octet-stream", 24) == 0;
}

static size_t
get_write(char *p, size_t sz, size_t nm, void *ud)
{
	Fx	  *fx = ud;
	size_t n = sz * nm;
	long   code = 0;
	int	   k;

	if (!fx->streaming)
	{
		curl_off_t			 len = -1;
		struct MHD_Response *r;

		curl_easy_getinfo(fx->easy, CURLINFO_RESPONSE_CODE, &code);
		if (code != 200 || !is_octets(fx->ctype) || fx->req == NULL)
			return small_write(p, sz, nm, ud);
		/* the file: its bytes go as they come */
		curl_easy_getinfo(fx->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &len);
		fx->expect = len;
		fx->st = stream_new(edge_cfg.files_buffer, out_closed, out_room, fx);
		if (fx->st == NULL)
			return 0;
		r = stream_response_as(fx->st, fx->req->conn, "application/octet-stream",
							   len >= 0 ? (uint64_t) len : MHD_SIZE_UNKNOWN);
		if (r == NULL)
		{
			stream_free(fx->st);
			fx->st = NULL;
			return 0;
		}
		fx->refs++; /* the stream's */
		fx->streaming = true;
		fx->answered = true;
		fx->status = 200;
		http_respond_response(fx->req, 200, r);
	}
	if (fx->st == NULL)
		return 0;
	k = stream_write(fx->st, p, n);
	if (k == -ENOBUFS)
	{
		fx->out_paused = true;
		return CURL_WRITEFUNC_PAUSE;
	}
	if (k < 0)
		return 0;
	fx->bytes += n;
	return n;
}

/* ---- the bytes ------------------------------------------------------------- */

static void
fx_transfer(Fx *fx)
{
	char  q[64 + FILES_PATH_MAX * 3 + 64];
	char *esc = curl_easy_escape(NULL, fx->path, 0);

	fx->step = FX_TRANSFER;
	if (esc == NULL)
	{
		fx_problem(fx, 503, "unavailable", "Out of memory.", 1);
		return;
	}
	snprintf(q, sizeof(q), "/v1/sandboxes/%s/files?path=%s", fx->sandbox_id, esc);
	curl_free(esc);
	if (fx_request(fx, fx->put ? "PUT" : "GET", q, false) < 0)
	{
		fx_problem(fx, 503, "unavailable", "Out of memory.", 1);
		return;
	}
	if (fx->put)
	{
		const char *cl = fx->req ? http_header(fx->req, MHD_HTTP_HEADER_CONTENT_LENGTH) : NULL;
		int64_t		len;

		curl_easy_setopt(fx->easy, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(fx->easy, CURLOPT_READFUNCTION, put_read);
		curl_easy_setopt(fx->easy, CURLOPT_READDATA, fx);
		fx->hdrs = curl_slist_append(fx->hdrs, "Content-Type: application/octet-stream");
		curl_easy_setopt(fx->easy, CURLOPT_HTTPHEADER, fx->hdrs);
		if (cl && edge_parse_int64(cl, 0, INT64_MAX, &len))
			curl_easy_setopt(fx->easy, CURLOPT_INFILESIZE_LARGE, (curl_off_t) len);
	}
	else
		curl_easy_setopt(fx->easy, CURLOPT_WRITEFUNCTION, get_write);
	if (fx_start(fx) < 0)
	{
		fx_problem(fx, 503, "unavailable", "Out of memory.", 1);
		return;
	}
	/* the client's body may come now */
	if (fx->put && fx->req)
	{
		fx->mhd_wait = false;
		http_resume(fx->req);
	}
}

static void
fx_transfer_done(Fx *fx, long code)
{
	if (fx->streaming)
	{
		/* the stream ends after what it holds; out_closed finishes */
		if (fx->curl_failed)
			fx->status = 502;
		if (fx->st)
			stream_end(fx->st);
		return;
	}
	if (code == 200 || code == 201)
	{
		if (fx->put)
			fx->bytes = fx->received;
		fx_answer(fx, (int) code,
				  fx->put || !is_octets(fx->ctype) ? "application/json"
												   : "application/octet-stream",
				  buf_head(&fx->small), buf_pending(&fx->small));
	}
	else
		fx_upstream_error(fx, code);
}

/* A libcurl transfer is over. */
static void
fx_curl_done(Fx *fx, CURLcode rc)
{
	long code = 0;

	curl_easy_getinfo(fx->easy, CURLINFO_RESPONSE_CODE, &code);
	fx_curl_stop(fx);
	if (fx->answered && !fx->streaming)
		return;
	if (rc != CURLE_OK)
	{
		if (fx->streaming)
		{
			fx->curl_failed = true;
			fx_transfer_done(fx, code);
		}
		else if (fx->small_over)
			fx_problem(fx, 502, "sandbox_host_error",
					   "The sandbox host's answer is larger than this edge takes.", 0);
		else
			fx_transport_error(fx, rc);
		return;
	}
	if (fx->step == FX_FIND || fx->step == FX_CREATE)
		fx_small_done(fx, code);
	else
		fx_transfer_done(fx, code);
}

static void
curl_check(void)
{
	CURLMsg *m;
	int		 left;

	while ((m = curl_multi_info_read(multi, &left)) != NULL)
	{
		Fx *fx = NULL;

		if (m->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **) &fx);
		if (fx && fx->easy == m->easy_handle)
			fx_curl_done(fx, m->data.result);
	}
}

/* ---- the database ---------------------------------------------------------- */

static void respond_problem_oom(EdgeReq *req);

static void
done_begin(void *arg, EdgeDbResult *r)
{
	EdgeReq *req = arg;
	Fx		*fx = req->state;

	req->job = NULL;
	if (!r->ok)
	{
		db_failed(req, r);
		return;
	}
	if (db_rows(r) != 1)
	{
		EdgeProblem p;

		problem_set(&p, 409, "no_sandbox_host",
					"The session has no sandbox host yet: it is placed on one when it is first "
					"placed on a cell (its first command places it). Retry then.");
		p.retry_after = 2;
		http_respond_problem(req, &p);
		return;
	}
	snprintf(fx->transfer_id, sizeof(fx->transfer_id), "%s", db_value(r, 0, 0));
	fx->base = strdup(db_value(r, 0, 1));
	fx->token = strdup(db_value(r, 0, 2));
	fx->image = strdup(db_value(r, 0, 3));
	if (!db_isnull(r, 0, 4))
		fx->from = strdup(db_value(r, 0, 4));
	fx->step = FX_FIND;
	if (fx->base == NULL || fx->token == NULL || fx->image == NULL)
	{
		fx_problem(fx, 503, "unavailable", "Out of memory.", 1);
		return;
	}
	{
		char q[128];

		snprintf(q, sizeof(q), "/v1/sandboxes?session_id=%s", fx->sid);
		if (fx_request(fx, "GET", q, true) < 0 || fx_start(fx) < 0)
			fx_problem(fx, 503, "unavailable", "Out of memory.", 1);
	}
}

static void
files_begin(EdgeReq *req)
{
	Fx		   *fx = req->state;
	const char *params[3] = {fx->sid, fx->put ? "in" : "out", fx->path};
	EdgeProblem p;

	if (req->has_auth)
	{
		if (auth_copy(&fx->auth, &req->auth) < 0)
		{
			respond_problem_oom(req);
			return;
		}
		fx->has_auth = true;
	}
	fx->quota = quota_take(QUOTA_FILES, req->has_auth ? &req->auth : NULL, &p);
	if (fx->quota == NULL)
	{
		http_respond_problem(req, &p);
		return;
	}
	req->job =
		db_submit(STMT_FILES_BEGIN, req->has_auth ? &req->auth : NULL, 3, params, done_begin, req);
	if (req->job == NULL)
	{
		problem_set(&p, 503, "overloaded", "Too many requests are waiting for the database.");
		p.retry_after = 1;
		http_respond_problem(req, &p);
		return;
	}
	/*
	 * A PUT's connection goes on (a "100 Continue" is sent, the body comes,
	 * and waits in fx_upload until the transfer starts): libmicrohttpd calls
	 * a handler resumed before the body again as if the body had ended.
	 */
	if (!fx->put)
		http_suspend(req);
}

/* ------------------------------------------------------------------------
 * The route
 * ------------------------------------------------------------------------ */

static void
refuse(EdgeReq *req, int status, const char *code, const char *fmt, const char *arg)
{
	EdgeProblem p;

	problem_set(&p, status, code, fmt, arg);
	http_respond_problem(req, &p);
}

static void
respond_problem_oom(EdgeReq *req)
{
	refuse(req, 503, "unavailable", "%s", "Out of memory.");
}

void
files_route(EdgeReq *req)
{
	static const char pre[] = "/v1/sessions/";
	const char		 *raw = req->raw_url ? req->raw_url : req->url;
	const char		 *s = raw + sizeof(pre) - 1, *rest, *why = NULL;
	size_t			  idlen, plen;
	Fx				 *fx;
	char			  msg[200];

	req->route = "files";
	if (strcmp(req->method, "PUT") != 0 && strcmp(req->method, "GET") != 0)
	{
		EdgeProblem p;
		char	   *body;
		const char *headers[] = {MHD_HTTP_HEADER_ALLOW, "GET, PUT", NULL};

		problem_set(&p, 405, "method_not_allowed", "%s is not allowed here; allowed: GET, PUT.",
					req->method);
		body = problem_json(&p, req->url);
		http_respond(req, 405, "application/problem+json", body ? body : "{}",
					 body ? strlen(body) : 2, headers);
		free(body);
		return;
	}
	idlen = strcspn(s, "/");
	rest = s + idlen;
	if (idlen != 36)
	{
		refuse(req, 400, "invalid_session_id", "%s", "The session id is not a uuid.");
		return;
	}
	rest += strlen("/files");
	if (*rest == '/')
		rest++;
	plen = strcspn(rest, "?");
	if (rest[plen] == '?')
	{
		refuse(req, 400, "unknown_parameter", "%s", "The files routes take no query parameter.");
		return;
	}
	if (edge_cfg.files_max_bytes && strcmp(req->method, "PUT") == 0)
	{
		const char *cl = http_header(req, MHD_HTTP_HEADER_CONTENT_LENGTH);
		int64_t		len;

		if (cl && edge_parse_int64(cl, 0, INT64_MAX, &len) &&
			(uint64_t) len > edge_cfg.files_max_bytes)
		{
			snprintf(msg, sizeof(msg), "The file is larger than this edge takes (%llu bytes).",
					 (unsigned long long) edge_cfg.files_max_bytes);
			refuse(req, 413, "file_too_large", "%s", msg);
			return;
		}
	}
	fx = calloc(1, sizeof(*fx));
	if (fx == NULL)
	{
		respond_problem_oom(req);
		return;
	}
	nactive++;
	fx->refs = 1;
	fx->expect = -1;
	fx->req = req;
	fx->put = strcmp(req->method, "PUT") == 0;
	for (size_t i = 0; i < 36; i++)
		fx->sid[i] = (char) (s[i] >= 'A' && s[i] <= 'Z' ? s[i] - 'A' + 'a' : s[i]);
	fx->sid[36] = '\0';
	req->state = fx;
	req->state_free = fx_req_free;
	if (fx->put)
		req->upload = fx_upload;
	if (!nadi_jwt_uuid_text(fx->sid))
	{
		refuse(req, 400, "invalid_session_id", "%s", "The session id is not a uuid.");
		return;
	}
	fx->path = files_path_decode(rest, plen, &why);
	if (fx->path == NULL)
	{
		snprintf(msg, sizeof(msg), "The file path is refused: %s.", why);
		refuse(req, 400, "invalid_path", "%s", msg);
		return;
	}
	route_authenticate(req, files_begin);
}
