/*
 * fwd.c — one upstream exchange over libcurl (see fwd.h).  An easy handle
 * in a private multi handle: the calling thread runs curl_multi_perform and
 * curl_multi_poll until what it waits for (the headers, the next body
 * bytes) is there.  The body goes into a bounded buffer; when it is full the
 * write callback pauses the transfer, and reading from the buffer resumes
 * it, so a slow client slows the upstream down instead of growing memory.
 * Redirects are passed on, never followed; no proxy from the environment
 * is used; only http and https are spoken.
 *
 * Upstream connections are kept alive and reused.  libcurl keeps them in
 * the multi handle's connection cache, and a multi handle is used by one
 * thread at a time (libcurl does not support sharing a connection cache
 * between concurrent threads), so idle multi handles wait in a pool,
 * each tagged with the one upstream it has ever spoken to: an exchange
 * takes one of its upstream's (or a new one) and gives it back at its end,
 * so connections pass between client connections but never between
 * upstreams.  The easy handle is new for every exchange (no option, header
 * or credential of one exchange reaches the next).  A transfer removed
 * before its end (client gone, limit, error) has its connection closed by
 * libcurl, not cached.  Bounds: POOL_MAX idle handles of at most one idle
 * connection each, none kept idle longer than IDLE_MS.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "fwd.h"

#define MAX_HEADERS 200
#define MAX_HEADER_BYTES (64u << 10)
#define POLL_MS 250	  /* how often a waiting exchange looks at cp_stopping */
#define POOL_MAX 64	  /* idle multi handles kept, so idle upstream connections */
#define IDLE_MS 60000 /* how long an idle upstream connection is kept */

struct pooled
{
	CURLM				  *multi;
	const struct upstream *up;	  /* the only upstream it has spoken to */
	uint64_t			   since; /* now_ms() when it became idle */
};

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static struct pooled   pool[POOL_MAX]; /* oldest first */
static size_t		   pool_n;

struct fwd
{
	const struct upstream *up;
	CURL				  *easy;
	CURLM				  *multi;
	bool				   multi_broken; /* curl_multi_perform failed: not pooled again */
	struct curl_slist	  *resolve;
	/* answer */
	unsigned status;
	bool	 headers_done;
	char   **hdr_name, **hdr_value;
	size_t	 n_hdrs, hdr_bytes;
	bool	 hdr_overflow;
	int64_t	 content_length;
	/* body buffer: bytes [off, len) are unread */
	char  *buf;
	size_t off, len, cap;
	bool   paused;
	/* end */
	bool	 done;
	CURLcode result;
	char	 errbuf[CURL_ERROR_SIZE];
};

int
fwd_global_init(void)
{
	return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -EIO;
}

void
fwd_global_done(void)
{
	pthread_mutex_lock(&pool_lock);
	for (size_t i = 0; i < pool_n; i++)
		curl_multi_cleanup(pool[i].multi);
	pool_n = 0;
	pthread_mutex_unlock(&pool_lock);
	curl_global_cleanup();
}

/* Drop pool[i]; the caller holds pool_lock.  Returns the handle to clean up. */
static CURLM *
pool_remove(size_t i)
{
	CURLM *m = pool[i].multi;

	memmove(pool + i, pool + i + 1, (pool_n - i - 1) * sizeof *pool);
	pool_n--;
	return m;
}

/*
 * Take out the handles idle longer than IDLE_MS, and the most recently
 * idle one of up (when up is not NULL).  They are cleaned up outside the
 * lock: closing connections may take a moment (TLS close_notify).
 */
static CURLM *
pool_sweep_take(const struct upstream *up)
{
	CURLM	*found = NULL, *expired[POOL_MAX];
	size_t	 n_expired = 0;
	uint64_t now = now_ms();

	pthread_mutex_lock(&pool_lock);
	while (pool_n > 0 && now - pool[0].since > IDLE_MS)
		expired[n_expired++] = pool_remove(0);
	for (size_t i = pool_n; up && i-- > 0;)
		if (pool[i].up == up)
		{
			found = pool_remove(i);
			break;
		}
	pthread_mutex_unlock(&pool_lock);
	for (size_t i = 0; i < n_expired; i++)
		curl_multi_cleanup(expired[i]);
	return found;
}

void
fwd_sweep(void)
{
	pool_sweep_take(NULL);
}

/* A multi handle for an exchange with up: the most recently idle of up's, or a new one. */
static CURLM *
pool_take(const struct upstream *up)
{
	CURLM *found = pool_sweep_take(up);

	if (!found && (found = curl_multi_init()))
		curl_multi_setopt(found, CURLMOPT_MAXCONNECTS, 1L);
	return found;
}

/* Give back an idle multi handle (no easy handle in it) of up; the oldest goes when the pool is full. */
static void
pool_put(CURLM *m, const struct upstream *up)
{
	CURLM *evicted = NULL;

	pthread_mutex_lock(&pool_lock);
	if (pool_n == POOL_MAX)
		evicted = pool_remove(0);
	pool[pool_n++] = (struct pooled){.multi = m, .up = up, .since = now_ms()};
	pthread_mutex_unlock(&pool_lock);
	if (evicted)
		curl_multi_cleanup(evicted);
}

static void
clear_headers(struct fwd *f)
{
	for (size_t i = 0; i < f->n_hdrs; i++)
	{
		free(f->hdr_name[i]);
		free(f->hdr_value[i]);
	}
	f->n_hdrs = 0;
	f->hdr_bytes = 0;
	f->content_length = -1;
}

/*
 * One line of the answer's head: the status line (again after a 1xx
 * interim answer, which is dropped), a header, or the empty line ending it.
 */
static size_t
on_header(char *line, size_t size, size_t nitems, void *userdata)
{
	struct fwd *f = userdata;
	size_t		n = size * nitems, len = n;
	const char *colon;

	while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		len--;
	if (len >= 5 && strncmp(line, "HTTP/", 5) == 0)
	{
		const char *sp = memchr(line, ' ', len);
		clear_headers(f);
		f->status = sp ? (unsigned) strtoul(sp + 1, NULL, 10) : 0;
		return n;
	}
	if (len == 0)
	{
		if (f->status >= 200)
			f->headers_done = true;
		return n;
	}
	if (line[0] == ' ' || line[0] == '\t' || !(colon = memchr(line, ':', len)) || colon == line)
		return n; /* obsolete line folding or garbage: dropped */
	f->hdr_bytes += len;
	if (f->n_hdrs >= MAX_HEADERS || f->hdr_bytes > MAX_HEADER_BYTES)
	{
		f->hdr_overflow = true;
		return 0; /* aborts the transfer */
	}
	if (f->n_hdrs % 16 == 0)
	{
		char **a = realloc(f->hdr_name, (f->n_hdrs + 16) * sizeof *a);
		char **b = a ? realloc(f->hdr_value, (f->n_hdrs + 16) * sizeof *b) : NULL;
		if (a)
			f->hdr_name = a;
		if (!b)
			return 0;
		f->hdr_value = b;
	}
	{
		const char *v = colon + 1, *end = line + len;
		char	   *name = strndup(line, (size_t) (colon - line)), *value;
		while (v < end && (*v == ' ' || *v == '\t'))
			v++;
		value = strndup(v, (size_t) (end - v));
		if (!name || !value)
		{
			free(name);
			free(value);
			return 0;
		}
		if (strcasecmp(name, "Content-Length") == 0)
		{
			char			  *e;
			unsigned long long cl = strtoull(value, &e, 10);
			if (*e == '\0' && e != value)
				f->content_length = (int64_t) MIN(cl, (unsigned long long) INT64_MAX);
		}
		f->hdr_name[f->n_hdrs] = name;
		f->hdr_value[f->n_hdrs++] = value;
	}
	return n;
}

static size_t
on_body(char *data, size_t size, size_t nmemb, void *userdata)
{
	struct fwd *f = userdata;
	size_t		n = size * nmemb;

	if (f->off > 0 && f->len + n > f->cap)
	{
		memmove(f->buf, f->buf + f->off, f->len - f->off);
		f->len -= f->off;
		f->off = 0;
	}
	if (f->len + n > f->cap)
	{
		if (f->len > 0)
		{
			f->paused = true;
			return CURL_WRITEFUNC_PAUSE; /* curl keeps the data and offers it again */
		}
		/* Empty and still too small: what curl held while paused. Take it whole. */
		char *nb = realloc(f->buf, n);
		if (!nb)
			return 0;
		f->buf = nb;
		f->cap = n;
	}
	memcpy(f->buf + f->len, data, n);
	f->len += n;
	return n;
}

static int
result_errno(const struct fwd *f)
{
	if (f->hdr_overflow)
		return -EIO;
	switch (f->result)
	{
		case CURLE_OK:
			return 0;
		case CURLE_OPERATION_TIMEDOUT:
			return -ETIMEDOUT;
		case CURLE_COULDNT_CONNECT:
		case CURLE_COULDNT_RESOLVE_HOST:
			return -ECONNREFUSED;
		case CURLE_ABORTED_BY_CALLBACK:
			return -ECANCELED;
		default:
			return -EIO;
	}
}

/* Drive the transfer until ready(f) or its end; a negative errno when it stops for good. */
static int
pump(struct fwd *f, bool (*ready)(const struct fwd *))
{
	while (!f->done && !ready(f))
	{
		CURLMsg *msg;
		int		 running, left;

		if (atomic_load(&cp_stopping))
		{
			f->done = true;
			f->result = CURLE_ABORTED_BY_CALLBACK;
			break;
		}
		if (curl_multi_perform(f->multi, &running) != CURLM_OK)
		{
			f->multi_broken = true;
			f->done = true;
			f->result = CURLE_FAILED_INIT;
			break;
		}
		while ((msg = curl_multi_info_read(f->multi, &left)))
			if (msg->msg == CURLMSG_DONE)
			{
				f->done = true;
				f->result = msg->data.result;
			}
		if (f->done || ready(f))
			break;
		curl_multi_poll(f->multi, NULL, 0, POLL_MS, NULL);
	}
	return f->done && !ready(f) ? (result_errno(f) ? result_errno(f) : 0) : 0;
}

static bool
have_headers(const struct fwd *f)
{
	return f->headers_done;
}

static bool
have_body(const struct fwd *f)
{
	return f->len > f->off;
}

int
fwd_start(const struct fwd_request *req, struct fwd **ret)
{
	struct fwd			  *f = calloc(1, sizeof *f);
	const struct upstream *up = req->up;
	CURL				  *e;
	int					   r;

	*ret = f;
	if (!f)
		return -ENOMEM;
	f->content_length = -1;
	f->cap = FWD_BUFFER;
	f->buf = malloc(f->cap);
	f->up = up;
	f->easy = e = curl_easy_init();
	f->multi = pool_take(up);
	if (!f->buf || !e || !f->multi)
		return -ENOMEM;

	curl_easy_setopt(e, CURLOPT_URL, req->url);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_PROXY, ""); /* never an environment proxy */
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L); /* the path as authorized */
	curl_easy_setopt(e, CURLOPT_HTTP_CONTENT_DECODING, 0L);
	curl_easy_setopt(e, CURLOPT_HTTP_TRANSFER_DECODING, 1L);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, req->headers);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long) cfg.connect_timeout_ms);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long) cfg.upstream_timeout_ms);
	curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, (long) MAX(1, cfg.low_speed_time_ms / 1000));
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, f);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, f);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, f->errbuf);
	curl_easy_setopt(e, CURLOPT_MAXAGE_CONN, (long) (IDLE_MS / 1000));
	if (up->ca_file)
		curl_easy_setopt(e, CURLOPT_CAINFO, up->ca_file);
	if (up->resolve)
	{
		char *entry = xasprintf(strchr(up->resolve, ':') ? "%s:%u:[%s]" : "%s:%u:%s", up->host,
								up->port, up->resolve);
		f->resolve = entry ? curl_slist_append(NULL, entry) : NULL;
		free(entry);
		if (!f->resolve)
			return -ENOMEM;
		curl_easy_setopt(e, CURLOPT_RESOLVE, f->resolve);
	}
	if (strcmp(req->method, "GET") == 0 && !req->body_len)
		curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
	else if (strcmp(req->method, "HEAD") == 0)
		curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
	else
	{
		if (req->body)
		{
			curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body);
			curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) req->body_len);
		}
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, req->method);
	}
	if (curl_multi_add_handle(f->multi, e) != CURLM_OK)
	{
		f->multi_broken = true;
		return -ENOMEM;
	}
	r = pump(f, have_headers);
	if (r == 0 && !f->headers_done)
		r = -EIO; /* ended without a complete head */
	return r;
}

void
fwd_free(struct fwd *f)
{
	if (!f)
		return;
	if (f->multi && f->easy && !f->done && !f->paused && f->headers_done && !f->multi_broken)
	{
		/*
		 * The reader may stop at the announced length before curl has
		 * seen the transfer end (the last bytes came with an unpause):
		 * one look without waiting lets a finished transfer complete, so
		 * that its connection is kept.  Anything unfinished is cut below.
		 */
		int running;
		if (curl_multi_perform(f->multi, &running) != CURLM_OK)
			f->multi_broken = true;
	}
	if (f->multi && f->easy)
		curl_multi_remove_handle(f->multi,
								 f->easy); /* an unfinished transfer's connection is closed */
	if (f->easy)
		curl_easy_cleanup(f->easy);
	if (f->multi && (f->multi_broken || atomic_load(&cp_stopping)))
		curl_multi_cleanup(f->multi);
	else if (f->multi)
		pool_put(f->multi, f->up);
	curl_slist_free_all(f->resolve);
	clear_headers(f);
	free(f->hdr_name);
	free(f->hdr_value);
	free(f->buf);
	free(f);
}

unsigned
fwd_status(const struct fwd *f)
{
	return f->status;
}

int64_t
fwd_content_length(const struct fwd *f)
{
	return f->content_length;
}

size_t
fwd_header_count(const struct fwd *f)
{
	return f->n_hdrs;
}

void
fwd_header(const struct fwd *f, size_t i, const char **name, const char **value)
{
	*name = f->hdr_name[i];
	*value = f->hdr_value[i];
}

ssize_t
fwd_read(struct fwd *f, char *buf, size_t max)
{
	size_t n;
	int	   r;

	if (!have_body(f))
	{
		if (f->paused)
		{
			f->off = f->len = 0;
			f->paused = false;
			curl_easy_pause(f->easy, CURLPAUSE_CONT); /* may call on_body at once */
		}
		r = pump(f, have_body);
		if (r < 0)
			return r;
		if (!have_body(f))
			return f->done ? result_errno(f) : -EIO;
	}
	n = MIN(max, f->len - f->off);
	memcpy(buf, f->buf + f->off, n);
	f->off += n;
	return (ssize_t) n;
}

const char *
fwd_error(const struct fwd *f)
{
	if (f->hdr_overflow)
		return "the upstream's header is too large";
	return f->errbuf[0] ? f->errbuf : curl_easy_strerror(f->result);
}

uint64_t
fwd_bytes_sent(const struct fwd *f)
{
	curl_off_t n = 0;

	if (f->easy)
		curl_easy_getinfo(f->easy, CURLINFO_SIZE_UPLOAD_T, &n);
	return n > 0 ? (uint64_t) n : 0;
}
