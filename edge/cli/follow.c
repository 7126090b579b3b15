/*
 * follow.c — a session's event stream for nadi tail and --wait: the SSE
 * stream of GET /v1/sessions/{id}/events, resumed after every break with
 * Last-Event-ID (the last sequence number seen), so that each event is seen
 * once and in order across edge restarts; an event at or below the last
 * seq (there should be none) is dropped, a gap is reported.  Also the
 * readable rendering of an event.
 *
 * A break is retried after the server's retry: delay (1 s) doubling up to
 * 5 s, until give_up_s pass without a connection; an answer that is not a
 * stream (401, 404, ...) ends at once with its exit code.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "cli.h"
#include "daemonlib/util.h"

#define LINE_MAX_BYTES (32 * 1024 * 1024)
/* the edge's default heartbeat is 15 s */
#define STREAM_IDLE_S 60

typedef struct Conn
{
	Follow *f;
	CURL   *easy;
	bool	checked; /* the status was looked at */
	bool	stream;	 /* a 200 text/event-stream */
	char   *buf;	 /* a partial line; or the error body */
	size_t	len, cap;
	char   *data; /* the data lines of the event being read */
	size_t	dlen;
	bool	has_data;
	int		result;	   /* nonzero: stop (an exit code, -1 for EXIT_OK) */
	long	retry_ms;  /* the server's retry: */
	int64_t events;	   /* events delivered on this connection */
	time_t	last_tick; /* on_tick */
	time_t	last_data; /* the last bytes from the edge (it pings every 15 s) */
} Conn;

static int
grow(char **p, size_t *cap, size_t need)
{
	char  *q;
	size_t c = *cap ? *cap : 4096;

	if (need <= *cap)
		return 0;
	if (need > LINE_MAX_BYTES)
		return -EFBIG;
	while (c < need)
		c *= 2;
	if ((q = realloc(*p, c)) == NULL)
		return -ENOMEM;
	*p = q;
	*cap = c;
	return 0;
}

/* An event to its reader: dropped when seen already; nonzero ends (as on_event). */
static int
deliver(Follow *f, json_t *ev)
{
	json_t *seqv = json_object_get(ev, "seq");
	int64_t seq;
	int		r = 0;

	if (!json_is_integer(seqv))
	{
		fprintf(stderr, "%s: an event that is not one (ignored)\n", cli_prog);
		return 0;
	}
	seq = json_integer_value(seqv);
	if (seq <= f->after)
		return 0; /* seen already: once is enough */
	if (f->after > 0 && seq != f->after + 1)
		fprintf(stderr, "%s: events %lld to %lld are missing from the stream\n", cli_prog,
				(long long) f->after + 1, (long long) seq - 1);
	f->after = seq;
	if (f->on_event)
		r = f->on_event(f, ev);
	if (!f->quiet)
	{
		if (f->json)
		{
			/* as print_json: beyond ASCII as \u escapes, terminal-safe */
			char *s = json_dumps(ev, JSON_COMPACT | JSON_ENSURE_ASCII);

			if (s)
				puts(s);
			free(s);
		}
		else
			event_render(stdout, ev);
		fflush(stdout);
	}
	return r;
}

static void
dispatch(Conn *c)
{
	json_t *ev;
	int		r;

	if (!c->has_data)
		return;
	c->has_data = false;
	ev = json_loadb(c->data ? c->data : "", c->dlen, 0, NULL);
	c->dlen = 0;
	c->events++;
	r = deliver(c->f, ev);
	json_decref(ev);
	if (r)
		c->result = r;
}

int
follow_drain(Follow *f)
{
	_cleanup_(freep) char *s = seg(f->sid);

	for (;;)
	{
		_cleanup_(freep) char *path =
			xasprintf("/v1/sessions/%s/events?after=%lld&limit=1000", s, (long long) f->after);
		Answer	a;
		json_t *ev;
		size_t	i;
		int		r = 0;

		if ((r = api_call("GET", path, NULL, NULL, &a)) != EXIT_OK)
			return r;
		if (json_array_size(json_object_get(a.json, "events")) == 0)
		{
			answer_free(&a);
			return 0;
		}
		json_array_foreach(json_object_get(a.json, "events"), i, ev)
		{
			if ((r = deliver(f, ev)) != 0)
				break;
		}
		answer_free(&a);
		if (r)
			return r;
	}
}

static void
field(Conn *c, char *line)
{
	char *v = strchr(line, ':');

	if (line[0] == ':') /* a comment: ": ping" */
		return;
	if (v)
	{
		*v++ = '\0';
		if (*v == ' ')
			v++;
	}
	else
		v = line + strlen(line);
	if (strcmp(line, "data") == 0)
	{
		size_t n = strlen(v);
		char  *q;

		if (c->dlen + n + 2 > LINE_MAX_BYTES || (q = realloc(c->data, c->dlen + n + 2)) == NULL)
			return;
		c->data = q;
		if (c->has_data)
			c->data[c->dlen++] = '\n';
		memcpy(c->data + c->dlen, v, n);
		c->dlen += n;
		c->data[c->dlen] = '\0';
		c->has_data = true;
	}
	else if (strcmp(line, "retry") == 0)
	{
		long ms = strtol(v, NULL, 10);

		if (ms > 0 && ms < 60000)
			c->retry_ms = ms;
	}
	/* id: the seq of the data's own "seq"; event: not used */
}

static size_t
on_data(char *p, size_t size, size_t n, void *arg)
{
	Conn  *c = arg;
	size_t add = size * n;
	size_t start = 0;

	c->last_data = time(NULL);
	if (!c->checked)
	{
		long		status = 0;
		const char *ct = NULL;

		c->checked = true;
		curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
		curl_easy_getinfo(c->easy, CURLINFO_CONTENT_TYPE, &ct);
		c->stream = status == 200 && ct && strncmp(ct, "text/event-stream", 17) == 0;
	}
	if (grow(&c->buf, &c->cap, c->len + add + 1) < 0)
	{
		/* resuming would ask for the same line again, for ever: stop */
		if (c->stream)
			c->result =
				cli_err(EXIT_ERROR, "the stream sent a line longer than %d MiB after seq %lld",
						LINE_MAX_BYTES >> 20, (long long) c->f->after);
		return 0;
	}
	memcpy(c->buf + c->len, p, add);
	c->len += add;
	c->buf[c->len] = '\0';
	if (!c->stream)
		return add;
	for (size_t i = 0; i < c->len; i++)
	{
		if (c->buf[i] != '\n')
			continue;
		c->buf[i] = '\0';
		if (i > start && c->buf[i - 1] == '\r')
			c->buf[i - 1] = '\0';
		if (c->buf[start] == '\0')
			dispatch(c);
		else
			field(c, c->buf + start);
		start = i + 1;
		if (c->result)
			return 0; /* done: abort the transfer */
	}
	memmove(c->buf, c->buf + start, c->len - start);
	c->len -= start;
	return add;
}

static int
on_progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
	Conn  *c = arg;
	time_t now = time(NULL);

	if (c->result)
		return 1;
	/* a stream silent for four heartbeats is dead: end it, and resume */
	if (c->last_data && now - c->last_data > STREAM_IDLE_S)
		return 1;
	if (c->f->on_tick && c->stream && now != c->last_tick)
	{
		c->last_tick = now;
		c->f->on_tick(c->f);
	}
	return 0;
}

/* One connection: 0 when it ended (to be resumed), else an exit code / -1. */
static int
connect_once(Follow *f, Conn *c, bool *connected)
{
	_cleanup_(freep) char *s = seg(f->sid);
	_cleanup_(freep) char *url = xasprintf("%s/v1/sessions/%s/events", cli_cfg.url, s);
	_cleanup_(freep) char *lei = xasprintf("Last-Event-ID: %lld", (long long) f->after);
	struct curl_slist	  *h = NULL;
	char				   errbuf[CURL_ERROR_SIZE] = "";
	CURLcode			   rc;
	long				   status = 0;

	*connected = false;
	h = curl_slist_append(h, "Accept: text/event-stream");
	h = curl_slist_append(h, lei);
	h = api_headers(h);
	c->easy = curl_easy_init();
	curl_easy_setopt(c->easy, CURLOPT_URL, url);
	curl_easy_setopt(c->easy, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c->easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c->easy, CURLOPT_CONNECTTIMEOUT, 10L);
	curl_easy_setopt(c->easy, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(c->easy, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(c->easy, CURLOPT_WRITEDATA, c);
	curl_easy_setopt(c->easy, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(c->easy, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(c->easy, CURLOPT_XFERINFODATA, c);
	c->last_data = time(NULL);
	rc = curl_easy_perform(c->easy);
	curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(c->easy);
	curl_slist_free_all(h);
	c->easy = NULL;
	if (c->result)
		return c->result;
	if (status == 200 && c->stream)
	{
		*connected = true;
		return 0;
	}
	if (status != 0 && status_exit(status) != EXIT_UNAVAILABLE)
		return problem_print(status, c->buf, c->len);
	if (status != 0)
		problem_print(status, c->buf, c->len);
	else
		fprintf(stderr, "%s: %s: %s\n", cli_prog, cli_cfg.url,
				errbuf[0] ? errbuf : curl_easy_strerror(rc));
	return 0;
}

int
follow_run(Follow *f)
{
	uint64_t last_ok = now_ms();
	long	 delay = 0;
	int		 r;

	for (;;)
	{
		Conn c = {.f = f, .retry_ms = 1000};
		bool connected;

		if (f->on_connect && (r = f->on_connect(f)) != 0)
			return r < 0 ? EXIT_OK : r;
		r = connect_once(f, &c, &connected);
		free(c.buf);
		free(c.data);
		if (r)
			return r < 0 ? EXIT_OK : r;
		if (connected)
		{
			last_ok = now_ms();
			delay = c.retry_ms;
		}
		else
		{
			if (f->give_up_s > 0 && now_ms() - last_ok > (uint64_t) f->give_up_s * 1000)
				return cli_err(EXIT_UNAVAILABLE, "no stream for %d s; giving up", f->give_up_s);
			delay = delay ? MIN(delay * 2, 5000) : c.retry_ms;
		}
		if (!f->quiet)
			fprintf(stderr, "%s: the stream ended after seq %lld; resuming\n", cli_prog,
					(long long) f->after);
		usleep((useconds_t) delay * 1000);
	}
}

/* ---- rendering ---------------------------------------------------------- */

static const char *
str(json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

static void
put_text(FILE *out, const char *s, const char *indent)
{
	bool bol = true;

	for (size_t n; s && *s; s += n ? n : 1)
	{
		if (bol)
			fputs(indent, out);
		bol = *s == '\n';
		n = term_control(s);
		fputc(n == 0 || *s == '\n' || *s == '\t' ? *s : '?', out);
	}
	if (!bol)
		fputc('\n', out);
}

/* a string of the event on one line, control characters as '?' */
static void
put_str(FILE *out, const char *s)
{
	term_put(out, s, false);
}

static void
put_json(FILE *out, json_t *v, size_t max)
{
	char *s = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;

	if (s == NULL)
		return;
	if (strlen(s) > max)
		strcpy(s + max - 3, "...");
	put_text(out, s, "");
	free(s);
}

void
event_render(FILE *out, json_t *ev)
{
	const char *kind = str(ev, "kind") ?: "?";
	json_t	   *p = json_object_get(ev, "payload");
	json_int_t	cmd = json_integer_value(json_object_get(ev, "command_id"));
	const char *at = str(ev, "created_at");
	char		head[64] = "";

	/* "2026-12-06T17:10:00.123Z" → "17:10:00" */
	if (at && strlen(at) >= 19)
		snprintf(head, sizeof(head), "%.8s ", at + 11);
	fprintf(out, "%5lld ", (long long) json_integer_value(json_object_get(ev, "seq")));
	put_str(out, head);
	put_str(out, kind);
	fprintf(out, "%*s", strlen(kind) < 22 ? (int) (22 - strlen(kind)) : 0, "");
	if (cmd)
		fprintf(out, " #%lld", (long long) cmd);
	fputc(' ', out);
	if (strcmp(kind, "model.reply") == 0 && str(p, "text"))
		put_text(out, str(p, "text"), "");
	else if (strcmp(kind, "command.received") == 0)
	{
		json_t *inner = json_object_get(p, "payload");

		put_str(out, str(p, "type") ?: "?");
		fputc(' ', out);
		if (str(inner, "text"))
			put_text(out, str(inner, "text"), "");
		else
			put_json(out, inner, 300);
	}
	else if (strcmp(kind, "tool.call") == 0 || strcmp(kind, "permission.requested") == 0)
	{
		put_str(out, str(p, "name") ?: str(p, "tool") ?: "");
		fputc(' ', out);
		put_json(out, json_object_get(p, "args") ?: p, 300);
		if (kind[0] == 'p')
			fprintf(out, "      needs approval: nadi approve|deny SESSION %lld\n", (long long) cmd);
	}
	else if (strcmp(kind, "tool.result") == 0)
	{
		json_t *es = json_object_get(p, "exit_status");

		put_str(out, str(p, "name") ?: "");
		fputs(json_is_false(json_object_get(p, "ok")) ? " failed" : " ok", out);
		if (json_is_integer(es))
			fprintf(out, " (exit %lld)", (long long) json_integer_value(es));
		if (json_is_true(json_object_get(p, "timed_out")))
			fputs(" (timed out)", out);
		fputc('\n', out);
		if (json_object_get(p, "result") && !json_is_null(json_object_get(p, "result")))
		{
			fputs("      result: ", out);
			put_json(out, json_object_get(p, "result"), 1000);
		}
		if (str(p, "stdout") && *str(p, "stdout"))
			put_text(out, str(p, "stdout"), "      | ");
		if (str(p, "stderr") && *str(p, "stderr"))
			put_text(out, str(p, "stderr"), "      ! ");
	}
	else if (strcmp(kind, "tool.error") == 0)
	{
		put_str(out, str(p, "code") ?: "error");
		fputs(": ", out);
		put_str(out, str(p, "message") ?: "");
		fputc('\n', out);
	}
	else if (strcmp(kind, "permission.resolved") == 0)
	{
		put_str(out, str(p, "decision") ?: "");
		fputc('\n', out);
	}
	else if (strcmp(kind, "session.state") == 0)
	{
		put_str(out, str(p, "from") ?: "?");
		fputs(" -> ", out);
		put_str(out, str(p, "to") ?: "?");
		fputc('\n', out);
	}
	else if (strcmp(kind, "command.failed") == 0 || strcmp(kind, "command.dead") == 0)
		put_json(out, json_object_get(p, "error") ?: p, 300);
	else if (strcmp(kind, "command.completed") == 0)
		put_json(out, json_object_get(p, "result") ?: p, 300);
	else if (json_object_size(p) == 0)
		fputc('\n', out);
	else
		put_json(out, p, 300);
}
