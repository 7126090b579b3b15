/*
 * bridge.c — nadi-acp, the stdio bridge an editor launches as its ACP agent.
 *
 * ACP's standard transport is newline-delimited JSON-RPC on stdin/stdout.
 * nadi-acp relays it to a nadi-edge's /acp endpoint over the HTTP transport
 * (acp_http.c): each line from stdin is POSTed (in order, one at a time),
 * and every event of the connection's SSE stream and of each session's SSE
 * stream is written to stdout as one line.  The first message must be
 * initialize; its response carries the Acp-Connection-Id.  A session's
 * stream is opened before the first message about it is posted, and when a
 * response announces a new sessionId.  Answers to the agent's requests go
 * back with the session header of the stream the request came on.
 *
 * session/load's answer comes on the session's stream after the replay
 * (acp_http.c sends it there), so the editor sees the whole history as
 * session/update notifications before the answer, as ACP requires; one
 * stream keeps its order, two would not.
 *
 * Configuration: --url / NADI_ACP_URL, the edge's /acp endpoint or its base
 * URL (http://127.0.0.1:8080, to which /acp is added), and --token /
 * NADI_TOKEN (or --token-file / NADI_TOKEN_FILE).  Exit status 0
 * when stdin ends, 1 when the edge refuses the connection or goes away (the
 * editor starts a new bridge and reloads its session from the log).
 *
 * All HTTP is libcurl's (multi interface, one poll loop with stdin).
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "acp_id.h"

#define MAX_LINE (32 * 1024 * 1024)

typedef struct Text
{
	char  *p;
	size_t n, cap;
} Text;

typedef enum XferKind
{
	X_POST,
	X_STREAM
} XferKind;

typedef struct Xfer
{
	XferKind		   kind;
	CURL			  *easy;
	struct curl_slist *hdrs;
	char			   sid[37]; /* stream: "" for the connection stream */
	char			  *body;	/* POST: the message text */
	json_t			  *msg;		/* POST: the message */
	Text			   in;		/* POST: response body; stream: unparsed bytes */
	Text			   data;	/* stream: data lines of the current event */
	bool			   has_data;
	struct Xfer		  *next; /* streams */
} Xfer;

typedef struct Route
{
	char		  key[96];
	char		  sid[37];
	struct Route *next;
} Route;

static const char *url = "http://127.0.0.1:8080/acp";
static char		  *auth_header;
static char		   conn_id[128];
static CURLM	  *multi;
static Xfer		  *streams;
static Xfer		  *post;  /* the POST in flight */
static json_t	  *queue; /* messages waiting to be posted */
static Route	  *routes;
static bool		   stdin_eof;
static int		   exit_code = -1;
static json_t	  *to_open; /* sessions announced inside a callback */

static void
die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("nadi-acp: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit_code = 1;
}

static int
text_add(Text *t, const void *p, size_t n)
{
	if (t->n + n + 1 > t->cap)
	{
		size_t cap = t->cap ? t->cap : 1024;
		char  *q;

		while (cap < t->n + n + 1)
			cap *= 2;
		if ((q = realloc(t->p, cap)) == NULL)
			return -ENOMEM;
		t->p = q;
		t->cap = cap;
	}
	memcpy(t->p + t->n, p, n);
	t->n += n;
	t->p[t->n] = '\0';
	return 0;
}

static void
text_free(Text *t)
{
	free(t->p);
	memset(t, 0, sizeof(*t));
}

/* One JSON-RPC message to the editor. */
static void
emit(const char *json, size_t len)
{
	if (fwrite(json, 1, len, stdout) != len || fputc('\n', stdout) == EOF || fflush(stdout) != 0)
	{
		if (errno == EPIPE)
			exit_code = 0; /* the editor went away */
		else
			die("stdout: %s", strerror(errno));
	}
}

static void
emit_json(json_t *msg)
{
	char *t = json_dumps(msg, JSON_COMPACT);

	if (t)
		emit(t, strlen(t));
	free(t);
}

static struct curl_slist *
base_headers(const char *sid, const char *content_type, const char *accept)
{
	struct curl_slist *h = NULL;
	char			   line[256];

	if (auth_header)
		h = curl_slist_append(h, auth_header);
	if (conn_id[0])
	{
		snprintf(line, sizeof(line), "Acp-Connection-Id: %s", conn_id);
		h = curl_slist_append(h, line);
	}
	if (sid && sid[0])
	{
		snprintf(line, sizeof(line), "Acp-Session-Id: %s", sid);
		h = curl_slist_append(h, line);
	}
	if (content_type)
	{
		snprintf(line, sizeof(line), "Content-Type: %s", content_type);
		h = curl_slist_append(h, line);
	}
	if (accept)
	{
		snprintf(line, sizeof(line), "Accept: %s", accept);
		h = curl_slist_append(h, line);
	}
	return curl_slist_append(h, "Expect:");
}

static void
xfer_free(Xfer *x)
{
	if (x->easy)
	{
		curl_multi_remove_handle(multi, x->easy);
		curl_easy_cleanup(x->easy);
	}
	curl_slist_free_all(x->hdrs);
	free(x->body);
	json_decref(x->msg);
	text_free(&x->in);
	text_free(&x->data);
	free(x);
}

/* ------------------------------------------------------------------------
 * SSE streams
 * ------------------------------------------------------------------------ */

static void stream_open(const char *sid);

/* A complete SSE event from stream x. */
static void
stream_event(Xfer *x)
{
	json_t *msg = json_loadb(x->data.p, x->data.n, 0, NULL);
	json_t *id;
	json_t *sid;

	if (msg == NULL)
	{
		fprintf(stderr, "nadi-acp: skipping an event that is not JSON\n");
		return;
	}
	id = json_object_get(msg, "id");
	if (x->sid[0] && json_object_get(msg, "method") && id)
	{
		/* the agent asks: our answer goes back with this session's header */
		Route *r = calloc(1, sizeof(*r));

		if (r)
		{
			acp_id_key(id, r->key, sizeof(r->key));
			snprintf(r->sid, sizeof(r->sid), "%s", x->sid);
			r->next = routes;
			routes = r;
		}
	}
	/* libcurl does not take new transfers from inside its callbacks */
	sid = json_object_get(json_object_get(msg, "result"), "sessionId");
	if (json_is_string(sid))
		json_array_append(to_open, sid);
	emit(x->data.p, x->data.n);
	json_decref(msg);
}

static size_t
stream_write_cb(char *ptr, size_t size, size_t nmemb, void *ud)
{
	Xfer  *x = ud;
	size_t n = size * nmemb;
	char  *line;
	char  *nl;

	if (text_add(&x->in, ptr, n) < 0)
		return 0;
	line = x->in.p;
	while ((nl = memchr(line, '\n', x->in.n - (size_t) (line - x->in.p))) != NULL)
	{
		size_t len = (size_t) (nl - line);

		if (len > 0 && line[len - 1] == '\r')
			len--;
		if (len == 0)
		{
			if (x->has_data)
				stream_event(x);
			x->data.n = 0;
			x->has_data = false;
		}
		else if (len >= 5 && strncmp(line, "data:", 5) == 0)
		{
			size_t skip = len > 5 && line[5] == ' ' ? 6 : 5;

			if (x->has_data)
				text_add(&x->data, "\n", 1);
			if (x->data.n + len > MAX_LINE)
				return 0;
			text_add(&x->data, line + skip, len - skip);
			x->has_data = true;
		}
		line = nl + 1;
	}
	memmove(x->in.p, line, x->in.n - (size_t) (line - x->in.p));
	x->in.n -= (size_t) (line - x->in.p);
	return n;
}

static void
stream_open(const char *sid)
{
	Xfer *x;

	for (x = streams; x; x = x->next)
		if (strcmp(x->sid, sid) == 0)
			return;
	x = calloc(1, sizeof(*x));
	if (x == NULL || (x->easy = curl_easy_init()) == NULL)
	{
		free(x);
		die("out of memory");
		return;
	}
	x->kind = X_STREAM;
	snprintf(x->sid, sizeof(x->sid), "%s", sid);
	x->hdrs = base_headers(sid, NULL, "text/event-stream");
	curl_easy_setopt(x->easy, CURLOPT_URL, url);
	curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, x->hdrs);
	curl_easy_setopt(x->easy, CURLOPT_WRITEFUNCTION, stream_write_cb);
	curl_easy_setopt(x->easy, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(x->easy, CURLOPT_PRIVATE, x);
	curl_easy_setopt(x->easy, CURLOPT_CONNECTTIMEOUT, 10L);
	/* the edge pings every 15 s by default: silence means it is gone */
	curl_easy_setopt(x->easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(x->easy, CURLOPT_LOW_SPEED_TIME, 90L);
	curl_easy_setopt(x->easy, CURLOPT_FAILONERROR, 1L);
	x->next = streams;
	streams = x;
	curl_multi_add_handle(multi, x->easy);
}

/* ------------------------------------------------------------------------
 * POSTs
 * ------------------------------------------------------------------------ */

static size_t
post_write_cb(char *ptr, size_t size, size_t nmemb, void *ud)
{
	Xfer *x = ud;

	return text_add(&x->in, ptr, size * nmemb) == 0 ? size * nmemb : 0;
}

static size_t
post_header_cb(char *buf, size_t size, size_t nitems, void *ud)
{
	size_t			  n = size * nitems;
	static const char name[] = "acp-connection-id:";

	if (n > sizeof(name) && strncasecmp(buf, name, sizeof(name) - 1) == 0 && !conn_id[0])
	{
		const char *v = buf + sizeof(name) - 1;
		size_t		len;

		while (*v == ' ')
			v++;
		len = strcspn(v, "\r\n");
		if (len < sizeof(conn_id))
		{
			memcpy(conn_id, v, len);
			conn_id[len] = '\0';
		}
	}
	return n;
}

/* The session a message to the agent belongs to, if any. */
static const char *
message_session(json_t *msg)
{
	const char *sid =
		json_string_value(json_object_get(json_object_get(msg, "params"), "sessionId"));
	char key[96];

	if (sid || json_object_get(msg, "method") || !json_object_get(msg, "id"))
		return sid;
	acp_id_key(json_object_get(msg, "id"), key, sizeof(key));
	for (Route **pp = &routes; *pp; pp = &(*pp)->next)
		if (strcmp((*pp)->key, key) == 0)
		{
			static char found[37];
			Route	   *r = *pp;

			snprintf(found, sizeof(found), "%s", r->sid);
			*pp = r->next;
			free(r);
			return found;
		}
	return NULL;
}

static void
post_next(void)
{
	json_t	   *msg;
	const char *sid;
	Xfer	   *x;

	if (post || json_array_size(queue) == 0 || exit_code >= 0)
		return;
	msg = json_incref(json_array_get(queue, 0));
	json_array_remove(queue, 0);
	if (!conn_id[0])
	{
		const char *m = json_string_value(json_object_get(msg, "method"));

		if (m == NULL || strcmp(m, "initialize") != 0)
		{
			json_t *id = json_object_get(msg, "id");

			if (id)
				emit_json(json_pack("{s:s, s:O, s:{s:i, s:s}}", "jsonrpc", "2.0", "id", id, "error",
									"code", -32600, "message", "Call initialize first."));
			json_decref(msg);
			return;
		}
	}
	sid = conn_id[0] ? message_session(msg) : NULL;
	if (sid)
		stream_open(sid);
	x = calloc(1, sizeof(*x));
	if (x == NULL || (x->easy = curl_easy_init()) == NULL ||
		(x->body = json_dumps(msg, JSON_COMPACT)) == NULL)
	{
		json_decref(msg);
		die("out of memory");
		return;
	}
	x->kind = X_POST;
	x->msg = msg;
	x->hdrs = base_headers(sid, "application/json", NULL);
	curl_easy_setopt(x->easy, CURLOPT_URL, url);
	curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, x->hdrs);
	curl_easy_setopt(x->easy, CURLOPT_POSTFIELDS, x->body);
	curl_easy_setopt(x->easy, CURLOPT_WRITEFUNCTION, post_write_cb);
	curl_easy_setopt(x->easy, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(x->easy, CURLOPT_HEADERFUNCTION, post_header_cb);
	curl_easy_setopt(x->easy, CURLOPT_PRIVATE, x);
	curl_easy_setopt(x->easy, CURLOPT_CONNECTTIMEOUT, 10L);
	curl_easy_setopt(x->easy, CURLOPT_TIMEOUT, 120L);
	post = x;
	curl_multi_add_handle(multi, x->easy);
}

static void
post_done(Xfer *x, CURLcode rc)
{
	long		status = 0;
	json_t	   *id = json_object_get(x->msg, "id");
	const char *method = json_string_value(json_object_get(x->msg, "method"));
	bool		init = method && strcmp(method, "initialize") == 0 && !streams;

	curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
	if (rc != CURLE_OK)
	{
		die("POST %s: %s", url, curl_easy_strerror(rc));
		return;
	}
	if (init)
	{
		if (status != 200 || !conn_id[0] || x->in.n == 0)
		{
			die("initialize failed: HTTP %ld %s", status, x->in.p ? x->in.p : "");
			return;
		}
		emit(x->in.p, x->in.n);
		stream_open("");
		return;
	}
	if (status >= 200 && status < 300)
		return;
	if (status == 401 || status == 403 || status == 404 || status == 410)
	{
		die("the edge refused the connection: HTTP %ld %s", status, x->in.p ? x->in.p : "");
		return;
	}
	if (method && id)
	{
		json_t *body = x->in.p ? json_loads(x->in.p, 0, NULL) : NULL;

		emit_json(json_pack("{s:s, s:O, s:{s:i, s:s, s:{s:i, s:o}}}", "jsonrpc", "2.0", "id", id,
							"error", "code", -32603, "message", "the edge refused the message",
							"data", "status", (int) status, "body", body ? body : json_null()));
	}
}

/* ------------------------------------------------------------------------
 * Main loop
 * ------------------------------------------------------------------------ */

static void
read_stdin(Text *line)
{
	char	buf[65536];
	ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
	char   *start;
	char   *nl;

	if (n <= 0)
	{
		if (n == 0 || (errno != EAGAIN && errno != EINTR))
			stdin_eof = true;
		return;
	}
	if (text_add(line, buf, (size_t) n) < 0 || line->n > MAX_LINE)
	{
		die("a message from the editor is too long");
		return;
	}
	start = line->p;
	while ((nl = memchr(start, '\n', line->n - (size_t) (start - line->p))) != NULL)
	{
		json_error_t err;
		json_t		*msg;

		*nl = '\0';
		if (strspn(start, " \t\r") != strlen(start))
		{
			msg = json_loads(start, 0, &err);
			if (msg == NULL || !json_is_object(msg))
				emit_json(json_pack("{s:s, s:n, s:{s:i, s:s}}", "jsonrpc", "2.0", "id", "error",
									"code", -32700, "message", "Parse error"));
			else
				json_array_append(queue, msg);
			json_decref(msg);
		}
		start = nl + 1;
	}
	memmove(line->p, start, line->n - (size_t) (start - line->p));
	line->n -= (size_t) (start - line->p);
}

static void
close_connection(void)
{
	CURL			  *e;
	struct curl_slist *h;

	if (!conn_id[0] || (e = curl_easy_init()) == NULL)
		return;
	h = base_headers(NULL, NULL, NULL);
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "DELETE");
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(e, CURLOPT_TIMEOUT, 5L);
	curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
	(void) curl_easy_perform(e);
	curl_slist_free_all(h);
	curl_easy_cleanup(e);
}

static void
usage(FILE *f)
{
	fprintf(f, "Usage: nadi-acp [--url URL] [--token TOKEN | --token-file FILE]\n"
			   "An ACP agent on stdin/stdout that relays to a nadi-edge's /acp endpoint.\n\n"
			   "  --url URL          the edge's ACP endpoint, http(s)://HOST[:PORT]/acp; a URL\n"
			   "                     without a path (http://HOST:PORT) gets /acp added\n"
			   "                     (default http://127.0.0.1:8080/acp)\n"
			   "  --token TOKEN      bearer token of the principal (a tenant or session token)\n"
			   "  --token-file FILE  read the token from FILE (first line)\n\n"
			   "Environment: NADI_ACP_URL, NADI_TOKEN, NADI_TOKEN_FILE.\n");
}

/*
 * The endpoint for a URL given by the user: http(s) only; an empty path or
 * "/" means the edge's base URL, so /acp is added.  NULL (and a message)
 * when the URL cannot be used.
 */
static char *
endpoint_url(const char *given)
{
	CURLU *u = curl_url();
	char  *scheme = NULL;
	char  *path = NULL;
	char  *out = NULL;

	if (u == NULL)
		return NULL;
	if (curl_url_set(u, CURLUPART_URL, given, 0) != CURLUE_OK ||
		curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
		(strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0))
		fprintf(stderr,
				"nadi-acp: --url must be an http:// or https:// URL such as "
				"http://127.0.0.1:8080/acp (got \"%s\")\n",
				given);
	else if (curl_url_get(u, CURLUPART_PATH, &path, 0) == CURLUE_OK &&
			 (strcmp(path, "/") == 0 || path[0] == '\0') &&
			 curl_url_set(u, CURLUPART_PATH, "/acp", 0) != CURLUE_OK)
		fprintf(stderr, "nadi-acp: out of memory\n");
	else if (curl_url_get(u, CURLUPART_URL, &out, 0) != CURLUE_OK)
		fprintf(stderr, "nadi-acp: cannot use the URL \"%s\"\n", given);
	curl_free(scheme);
	curl_free(path);
	curl_url_cleanup(u);
	return out;
}

static char *
read_token_file(const char *path)
{
	FILE  *f = fopen(path, "r");
	char   buf[8300];
	size_t n;

	if (f == NULL)
		return NULL;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	return strdup(buf);
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {{"url", required_argument, NULL, 'u'},
										 {"token", required_argument, NULL, 't'},
										 {"token-file", required_argument, NULL, 'f'},
										 {"help", no_argument, NULL, 'h'},
										 {NULL, 0, NULL, 0}};
	const char				  *token = getenv("NADI_TOKEN");
	const char				  *token_file = getenv("NADI_TOKEN_FILE");
	Text					   line = {0};
	int						   c;

	if (getenv("NADI_ACP_URL"))
		url = getenv("NADI_ACP_URL");
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1)
	{
		if (c == 'u')
			url = optarg;
		else if (c == 't')
			token = optarg;
		else if (c == 'f')
			token_file = optarg;
		else
		{
			usage(c == 'h' ? stdout : stderr);
			return c == 'h' ? 0 : 2;
		}
	}
	if (token_file && (token = read_token_file(token_file)) == NULL)
	{
		fprintf(stderr, "nadi-acp: cannot read %s: %s\n", token_file, strerror(errno));
		return 2;
	}
	if (token && *token)
	{
		size_t n = strlen(token) + 32;

		auth_header = malloc(n);
		if (auth_header == NULL)
			return 1;
		snprintf(auth_header, n, "Authorization: Bearer %s", token);
	}
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || (multi = curl_multi_init()) == NULL)
		return 1;
	if ((url = endpoint_url(url)) == NULL)
		return 2;
	queue = json_array();
	to_open = json_array();

	while (exit_code < 0)
	{
		struct curl_waitfd extra = {.fd = STDIN_FILENO, .events = CURL_WAIT_POLLIN};
		int				   running;
		int				   left;
		CURLMsg			  *m;

		while (json_array_size(to_open) > 0)
		{
			stream_open(json_string_value(json_array_get(to_open, 0)));
			json_array_remove(to_open, 0);
		}
		post_next();
		if (stdin_eof && post == NULL && json_array_size(queue) == 0)
		{
			close_connection();
			exit_code = 0;
			break;
		}
		curl_multi_poll(multi, &extra, stdin_eof ? 0 : 1, 1000, NULL);
		if (!stdin_eof && (extra.revents & (CURL_WAIT_POLLIN | CURL_WAIT_POLLPRI)))
			read_stdin(&line);
		else if (!stdin_eof && extra.revents)
			stdin_eof = true;
		curl_multi_perform(multi, &running);
		while ((m = curl_multi_info_read(multi, &left)) != NULL)
		{
			Xfer *x = NULL;

			if (m->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **) &x);
			if (x->kind == X_POST)
			{
				post = NULL;
				post_done(x, m->data.result);
			}
			else
			{
				for (Xfer **pp = &streams; *pp; pp = &(*pp)->next)
					if (*pp == x)
					{
						*pp = x->next;
						break;
					}
				if (x->sid[0] == '\0' && exit_code < 0)
					die("the edge closed the connection's stream (%s)",
						curl_easy_strerror(m->data.result));
				else if (x->sid[0] && exit_code < 0)
				{
					long status = 0;

					/* e.g. 429 at the tenant's stream limit: the next message reopens it */
					curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
					fprintf(stderr, "nadi-acp: the stream of session %s ended (HTTP %ld, %s)\n",
							x->sid, status, curl_easy_strerror(m->data.result));
				}
			}
			xfer_free(x);
		}
	}
	while (streams)
	{
		Xfer *x = streams;

		streams = x->next;
		xfer_free(x);
	}
	curl_multi_cleanup(multi);
	curl_global_cleanup();
	return exit_code;
}
