/*
 * http_client.c — JSON over HTTP with libcurl, bounded in time and size, and
 * abortable (a worker asked to stop gives up the call at once).  The
 * blocking driver (runtime_driver.c) performs the runtime's requests here,
 * one at a time, with curl's easy interface.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
on_data(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	Buffer	   *b = userdata;
	size_t		n = size * nmemb;
	char	   *grown;

	if (b->len + n > b->max)
	{
		b->overflow = true;
		return 0;				/* makes curl fail with CURLE_WRITE_ERROR */
	}
	grown = realloc(b->data, b->len + n + 1);
	if (grown == NULL)
		return 0;
	b->data = grown;
	memcpy(b->data + b->len, ptr, n);
	b->len += n;
	b->data[b->len] = '\0';
	return n;
}

typedef struct Abort
{
	HttpAbortFn fn;
	void	   *arg;
} Abort;

static int
on_progress(void *clientp, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
	Abort	   *a = clientp;

	return a->fn && a->fn(a->arg) ? 1 : 0;
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

void
http_perform(const HttpRequest *req, HttpAbortFn abort_fn, void *abort_arg, HttpReply *reply)
{
	const char *method = req->method;
	const char *url = req->url;
	const char *bearer = req->bearer;
	json_t	   *body = req->body;
	long		timeout_ms = req->timeout_ms;
	size_t		max_bytes = req->max_bytes;
	char	   *err = reply->error;
	size_t		errlen = sizeof(reply->error);
	long	   *status = &reply->status;
	json_t	  **response = &reply->body;
	Abort		abort_cb = {abort_fn, abort_arg};
	CURL	   *curl = curl_easy_init();
	struct curl_slist *headers = NULL;
	Buffer		buf = {NULL, 0, max_bytes, false};
	char	   *payload = NULL;
	char		auth[1024];
	char		unix_url[2048];
	CURLcode	rc;
	int			r = 0;
	json_error_t jerr;

	memset(reply, 0, sizeof(*reply));
	if (curl == NULL)
	{
		snprintf(err, errlen, "could not initialize libcurl");
		reply->rc = -ENOMEM;
		return;
	}
	headers = curl_slist_append(headers, "Accept: application/json");
	if (body)
	{
		payload = json_dumps(body, JSON_COMPACT);
		headers = curl_slist_append(headers, "Content-Type: application/json");
		curl_easy_setopt(curl, CURLOPT_POSTFIELDS, payload);
	}
	if (bearer && bearer[0])
	{
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", bearer);
		headers = curl_slist_append(headers, auth);
	}
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms < 5000 ? timeout_ms : 5000);
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, &buf);
	curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &abort_cb);
	curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
	/* the path goes out as built: no dot segment is resolved on our side */
	curl_easy_setopt(curl, CURLOPT_PATH_AS_IS, 1L);
	if (strncmp(url, "unix:", 5) == 0)
	{
		/* unix:/path/to.sock:/http/path */
		char		sock[512];
		const char *sep = strstr(url + 5, ":/");

		if (sep == NULL || (size_t) (sep - url - 5) >= sizeof(sock))
		{
			snprintf(err, errlen, "bad unix socket URL \"%s\"", url);
			r = -EINVAL;
			goto done;
		}
		memcpy(sock, url + 5, sep - url - 5);
		sock[sep - url - 5] = '\0';
		curl_easy_setopt(curl, CURLOPT_UNIX_SOCKET_PATH, sock);
		snprintf(unix_url, sizeof(unix_url), "http://localhost%s", sep + 1);
		curl_easy_setopt(curl, CURLOPT_URL, unix_url);
	}

	rc = curl_easy_perform(curl);
	if (rc != CURLE_OK)
	{
		long		sent = 0;

		/* bytes of the request that went out: none means the server saw nothing */
		curl_easy_getinfo(curl, CURLINFO_REQUEST_SIZE, &sent);
		snprintf(err, errlen, "%s %s: %s", method, url, curl_easy_strerror(rc));
		if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
			(rc == CURLE_OPERATION_TIMEDOUT && sent == 0))
			r = -ECONNREFUSED;
		else if (rc == CURLE_OPERATION_TIMEDOUT)
			r = -ETIMEDOUT;
		else if (rc == CURLE_ABORTED_BY_CALLBACK)
			r = -EINTR;
		else if (buf.overflow)
		{
			snprintf(err, errlen, "%s %s: response larger than %zu bytes", method, url, max_bytes);
			r = -EMSGSIZE;
		}
		else
			r = -EIO;
		goto done;
	}
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, status);
	if (buf.len > 0)
		*response = json_loadb(buf.data, buf.len, 0, &jerr);

done:
	free(buf.data);
	free(payload);
	curl_slist_free_all(headers);
	curl_easy_cleanup(curl);
	reply->rc = r;
}

char *
http_escape(const char *s)
{
	char	   *e = curl_easy_escape(NULL, s, 0);
	char	   *copy = e ? strdup(e) : NULL;

	curl_free(e);
	return copy;
}
