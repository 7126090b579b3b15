/*
 * http_client.c — JSON over HTTP with libcurl, bounded in time and size.
 * The cell host (cellhost.c) adds each call's easy handle to its curl multi
 * handle and finishes it when curl says it is done, or takes it back when
 * the session goes (-EINTR); http_perform makes one call blocking.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "http_client.h"

typedef struct Buffer
{
	char	   *data;
	size_t		len;
	size_t		max;
	bool		overflow;
} Buffer;

static size_t
buffer_add(Buffer *b, const char *ptr, size_t n)
{
	char	   *grown;

	if (b->len + n > b->max)
	{
		b->overflow = true;
		return 0;				/* makes curl fail with CURLE_WRITE_ERROR */
	}
	if (n == 0)
		return 0;
	grown = realloc(b->data, b->len + n + 1);
	if (grown == NULL)
		return 0;
	b->data = grown;
	memcpy(b->data + b->len, ptr, n);
	b->len += n;
	b->data[b->len] = '\0';
	return n;
}

int
http_request_set(HttpRequest *req, const char *method, const char *url, const char *bearer,
				 json_t *body, long timeout_ms, size_t max_bytes)
{
	http_request_clear(req);
	req->method = method;
	req->url = strdup(url);
	req->bearer = bearer ? strdup(bearer) : NULL;
	req->body = body;
	req->timeout_ms = timeout_ms;
	req->max_bytes = max_bytes;
	if (req->url == NULL || (bearer && req->bearer == NULL))
	{
		http_request_clear(req);
		return -ENOMEM;
	}
	return 0;
}

void
http_request_clear(HttpRequest *req)
{
	free(req->url);
	free(req->bearer);
	json_decref(req->body);
	memset(req, 0, sizeof(*req));
}

void
http_reply_clear(HttpReply *reply)
{
	json_decref(reply->body);
	memset(reply, 0, sizeof(*reply));
}

/* One request in flight: its easy handle and what must live as long. */
struct HttpCall
{
	CURL	   *curl;
	struct curl_slist *headers;
	char	   *payload;		/* CURLOPT_POSTFIELDS is not copied */
	Buffer		buf;
	const HttpRequest *req;
	void	   *owner;			/* the driver's (http_call_set_owner) */
	int			streamed;		/* 0: not known yet; 1: NDJSON lines; -1: read whole */
	json_t	   *result;			/* a streamed answer's {"result": X} */
	bool		bad_line;		/* a streamed line that was not JSON, or came after the result */
	HttpLineFn	line_fn;
	void	   *line_arg;
};

/* One line of a streamed answer. */
static void
stream_line(HttpCall *call, const char *line, size_t len)
{
	json_t	   *j = json_loadb(line, len, 0, NULL);
	json_t	   *v;

	if (len == 0)
	{
		json_decref(j);
		return;
	}
	if (j == NULL || call->result != NULL)
		call->bad_line = true;
	else if ((v = json_object_get(j, "output")) != NULL && json_is_object(v))
	{
		if (call->line_fn)
			call->line_fn(call->line_arg, v);
	}
	else if ((v = json_object_get(j, "result")) != NULL)
		call->result = json_incref(v);
	else
		call->bad_line = true;
	json_decref(j);
}

static size_t
on_data(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	HttpCall   *call = userdata;
	size_t		n = size * nmemb;
	size_t		start = 0;
	char	   *nl;

	if (call->streamed == 0)
	{
		const char *type = NULL;

		curl_easy_getinfo(call->curl, CURLINFO_CONTENT_TYPE, &type);
		call->streamed = call->req->stream && type &&
			strncasecmp(type, "application/x-ndjson", 20) == 0 ? 1 : -1;
	}
	if (call->streamed < 0)
		return buffer_add(&call->buf, ptr, n);
	/* lines: what is before each newline completes the buffered line */
	while ((nl = memchr(ptr + start, '\n', n - start)) != NULL)
	{
		size_t		k = nl - (ptr + start);

		if (call->buf.len > 0)
		{
			if (buffer_add(&call->buf, ptr + start, k) != k)
				return 0;
			stream_line(call, call->buf.data, call->buf.len);
			call->buf.len = 0;
		}
		else
			stream_line(call, ptr + start, k);
		start += k + 1;
	}
	if (start < n && buffer_add(&call->buf, ptr + start, n - start) != n - start)
		return 0;
	return n;
}

static void
http_call_free(HttpCall *call)
{
	free(call->buf.data);
	json_decref(call->result);
	free(call->payload);
	curl_slist_free_all(call->headers);
	if (call->curl)
		curl_easy_cleanup(call->curl);
	free(call);
}

int
http_call_new(const HttpRequest *req, HttpCall **out, HttpReply *reply)
{
	HttpCall   *call = calloc(1, sizeof(HttpCall));
	CURL	   *curl;
	char		auth[1200];

	memset(reply, 0, sizeof(*reply));
	*out = NULL;
	if (call == NULL || (call->curl = curl_easy_init()) == NULL)
	{
		if (call)
			http_call_free(call);
		snprintf(reply->error, sizeof(reply->error), "could not initialize libcurl");
		return reply->rc = -ENOMEM;
	}
	curl = call->curl;
	call->req = req;
	call->buf.max = req->max_bytes;
	call->headers = curl_slist_append(call->headers, req->stream
									  ? "Accept: application/x-ndjson, application/json"
									  : "Accept: application/json");
	if (req->body)
	{
		call->payload = json_dumps(req->body, JSON_COMPACT);
		call->headers = curl_slist_append(call->headers, "Content-Type: application/json");
		curl_easy_setopt(curl, CURLOPT_POSTFIELDS, call->payload);
	}
	if (req->bearer && req->bearer[0])
	{
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", req->bearer);
		call->headers = curl_slist_append(call->headers, auth);
	}
	curl_easy_setopt(curl, CURLOPT_URL, req->url);
	curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, req->method);
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, call->headers);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, req->timeout_ms);
	curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, req->timeout_ms < 5000 ? req->timeout_ms : 5000);
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, call);
	curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(curl, CURLOPT_PRIVATE, call);
	/* the path goes out as built: no dot segment is resolved on our side */
	curl_easy_setopt(curl, CURLOPT_PATH_AS_IS, 1L);
	if (strncmp(req->url, "unix:", 5) == 0)
	{
		/* unix:/path/to.sock:/http/path */
		char		sock[512];
		char		unix_url[2048];
		const char *sep = strstr(req->url + 5, ":/");

		if (sep == NULL || (size_t) (sep - req->url - 5) >= sizeof(sock))
		{
			snprintf(reply->error, sizeof(reply->error), "bad unix socket URL \"%s\"", req->url);
			http_call_free(call);
			return reply->rc = -EINVAL;
		}
		memcpy(sock, req->url + 5, sep - req->url - 5);
		sock[sep - req->url - 5] = '\0';
		curl_easy_setopt(curl, CURLOPT_UNIX_SOCKET_PATH, sock);
		snprintf(unix_url, sizeof(unix_url), "http://localhost%s", sep + 1);
		curl_easy_setopt(curl, CURLOPT_URL, unix_url);
	}
	*out = call;
	return 0;
}

void *
http_call_handle(HttpCall *call)
{
	return call->curl;
}

void
http_call_set_owner(HttpCall *call, void *owner)
{
	call->owner = owner;
}

void *
http_call_owner(HttpCall *call)
{
	return call->owner;
}

void
http_call_set_line_fn(HttpCall *call, HttpLineFn fn, void *arg)
{
	call->line_fn = fn;
	call->line_arg = arg;
}

void
http_call_finish(HttpCall *call, int curl_result, HttpReply *reply)
{
	CURLcode	rc = (CURLcode) curl_result;
	const HttpRequest *req = call->req;
	json_error_t jerr;

	memset(reply, 0, sizeof(*reply));
	if (rc != CURLE_OK)
	{
		long		sent = 0;

		/* bytes of the request that went out: none means the server saw nothing */
		curl_easy_getinfo(call->curl, CURLINFO_REQUEST_SIZE, &sent);
		snprintf(reply->error, sizeof(reply->error), "%s %s: %s", req->method, req->url, curl_easy_strerror(rc));
		if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
			(rc == CURLE_OPERATION_TIMEDOUT && sent == 0))
			reply->rc = -ECONNREFUSED;
		else if (rc == CURLE_OPERATION_TIMEDOUT)
			reply->rc = -ETIMEDOUT;
		else if (rc == CURLE_ABORTED_BY_CALLBACK)
			reply->rc = -EINTR;
		else if (call->buf.overflow)
		{
			snprintf(reply->error, sizeof(reply->error), "%s %s: response larger than %zu bytes",
					 req->method, req->url, req->max_bytes);
			reply->rc = -EMSGSIZE;
		}
		else
			reply->rc = -EIO;
	}
	else
	{
		curl_easy_getinfo(call->curl, CURLINFO_RESPONSE_CODE, &reply->status);
		if (call->streamed > 0)
		{
			/* a last line without its newline; no result line: no body (the answer broke off) */
			if (call->buf.len > 0)
				stream_line(call, call->buf.data, call->buf.len);
			reply->body = call->bad_line ? NULL : json_incref(call->result);
		}
		else if (call->buf.len > 0)
			reply->body = json_loadb(call->buf.data, call->buf.len, 0, &jerr);
	}
	http_call_free(call);
}

void
http_perform(const HttpRequest *req, HttpReply *reply)
{
	HttpCall   *call;

	if (http_call_new(req, &call, reply) == 0)
		http_call_finish(call, curl_easy_perform(call->curl), reply);
}

char *
http_escape(const char *s)
{
	char	   *e = curl_easy_escape(NULL, s, 0);
	char	   *copy = e ? strdup(e) : NULL;

	curl_free(e);
	return copy;
}
