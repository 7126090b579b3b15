/*
 * fuzz_acp.c — libFuzzer target for ACP's JSON-RPC (acp.c, acp_session.c):
 * any messages a client may send on one connection, read as the
 * transports read them (json_parse_strict), with the database's answers
 * (fuzz/fake_db.h), its failures and the session's events (event JSON as
 * the log would hold it) interleaved as the input says.  The real feeds
 * (feed.c) and limits (quota.c) run underneath.
 *
 * Input: lines.  "!" answers the oldest database job, "?STATE" fails it
 * with that SQLSTATE, "@JSON" appends an event to the log (and wakes the
 * feeds), "~" takes the transport's room away or gives it back; any other
 * line is a message from the client.  Checked on every step: every message
 * the agent sends is a JSON-RPC 2.0 object, and the connection never holds
 * more sessions than --max-acp-sessions (nor loses count of them).
 *
 *   make -C edge fuzz && edge/fuzz/fuzz_acp -max_total_time=60
 */
#include "../acp.c"
#include "../acp_session.c"
#include "fake_db.h"

EdgeConfig edge_cfg = {
	.body_limit = 1 << 20,
	.json_depth = 64,
	.stream_buffer = 1 << 18,
	.max_streams = 100,
	.max_acp = 10,
	.max_streams_per_tenant = 10,
	.max_acp_per_tenant = 10,
	.max_acp_sessions = 4,
};
EdgeMetrics	  edge_metrics;
volatile bool edge_draining;

#define MAX_TIMERS 4096
#define MAX_EVENTS 256
#define MAX_STEPS 10000

static EvTimer *timers[MAX_TIMERS];
static int		ntimers;
static char	   *events[MAX_EVENTS]; /* the log: events[i] has seq i + 1 */
static int		nevents;
static bool		room;
static bool		closed;
static int		next_id;

void
log_at(int level, const char *fmt, ...)
{
}

int
auth_copy(EdgeAuth *dst, const EdgeAuth *src)
{
	*dst = *src;
	dst->token = src->token ? strdup(src->token) : NULL;
	return 0;
}

void
auth_clear(EdgeAuth *a)
{
	free(a->token);
	a->token = NULL;
}

bool
auth_expired(const EdgeAuth *a)
{
	return false;
}

void
ev_timer_cancel(EvTimer *t)
{
	for (int i = 0; i < ntimers; i++)
		if (timers[i] == t)
		{
			timers[i] = timers[--ntimers];
			break;
		}
	t->armed = false;
}

void
ev_timer_arm(EvTimer *t, uint64_t delay_ms, EvTimerFn fn, void *data)
{
	ev_timer_cancel(t);
	if (ntimers == MAX_TIMERS)
		abort();
	t->fn = fn;
	t->data = data;
	t->armed = true;
	timers[ntimers++] = t;
}

static void
run_timers(void)
{
	while (ntimers > 0)
	{
		EvTimer *t = timers[--ntimers];

		t->armed = false;
		t->fn(t);
	}
}

static int
t_send(AcpConn *c, const char *json, size_t len, const char *session, json_t *response_id)
{
	json_t	   *m = json_loadb(json, len, 0, NULL);
	const char *v = json_string_value(json_object_get(m, "jsonrpc"));

	if (!json_is_object(m) || v == NULL || strcmp(v, "2.0") != 0)
		abort(); /* the agent must speak JSON-RPC 2.0 */
	json_decref(m);
	return 0;
}

static size_t
t_room(AcpConn *c, const char *session)
{
	return room ? (size_t) 1 << 24 : 0;
}

static void
t_close(AcpConn *c, int code, const char *why)
{
	closed = true;
	acp_conn_free(c);
}

static const AcpTransport transport = {.send = t_send, .room = t_room, .close = t_close};

static void
check_sessions(AcpConn *c)
{
	int n = 0;

	for (AcpSession *s = c->sessions; s; s = s->next)
		n++;
	if (n != c->nsessions || n > edge_cfg.max_acp_sessions)
		abort(); /* the session limit does not hold */
}

static const char *
log_event(int64_t seq)
{
	return events[seq - 1];
}

/* Answer the oldest job: rows as the statement would return them. */
static void
answer(const char *fail)
{
	EdgeJob *j = NULL;
	char	 num[24];
	char	 last[24];

	for (int i = 0; i < FAKE_JOBS && j == NULL; i++)
		if (fake_jobs[i].live)
			j = &fake_jobs[i];
	if (j == NULL)
		return;
	if (fail)
	{
		fake_answer(j, fail);
		return;
	}
	snprintf(last, sizeof(last), "%d", nevents);
	if (j->stmt == STMT_SESSION_CREATE)
	{
		snprintf(num, sizeof(num), "00000000-0000-4000-8000-%012d", next_id++);
		fake_set(0, 0, "{}");
		fake_set(0, 1, num);
		fake_set(0, 2, last);
	}
	else if (j->stmt == STMT_COMMAND_ENQUEUE)
	{
		snprintf(num, sizeof(num), "%d", next_id++);
		fake_set(0, 0, "{}");
		fake_set(0, 1, num);
		fake_set(0, 2, "f");
	}
	else if (j->stmt == STMT_EVENTS_FOLLOW || j->stmt == STMT_EVENTS_READ)
		fake_events(j, nevents, log_event);
	fake_answer(j, NULL);
}

static void
one_line(AcpConn *c, const char *line, size_t len)
{
	EdgeProblem p;
	json_t	   *msg;
	char		state[6];

	if (len > 0 && line[0] == '!')
		answer(NULL);
	else if (len > 0 && line[0] == '?')
	{
		snprintf(state, sizeof(state), "%.*s", (int) (len - 1 < 5 ? len - 1 : 5), line + 1);
		answer(strlen(state) == 5 ? state : "NA002");
	}
	else if (len > 0 && line[0] == '@')
	{
		if (nevents < MAX_EVENTS)
			events[nevents++] = strndup(line + 1, len - 1);
		feed_on_listen_up();
	}
	else if (len > 0 && line[0] == '~')
	{
		room = !room;
		if (room)
			acp_conn_writable(c);
	}
	else if ((msg = json_parse_strict(line, len, &p)) != NULL)
	{
		acp_handle(c, msg);
		json_decref(msg);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const EdgeAuth auth = {.tenant = "t", .subject = "u", .scope = SCOPE_TENANT};
	const char	  *p = (const char *) data;
	const char	  *end = p + size;
	EdgeProblem	   prob;
	AcpConn		  *c;
	json_t		  *init = json_object();
	int			   steps = 0;

	room = true;
	closed = false;
	c = acp_conn_new(&transport, NULL, &auth, &prob);
	if (c == NULL)
		abort();
	/* as the HTTP transport does: initialize is answered before the rest */
	free(acp_initialize_response(c, init));
	json_decref(init);
	while (p < end && !closed)
	{
		const char *nl = memchr(p, '\n', (size_t) (end - p));
		size_t		len = nl ? (size_t) (nl - p) : (size_t) (end - p);

		one_line(c, p, len);
		if (!closed)
			check_sessions(c);
		run_timers();
		p += len + (nl ? 1 : 0);
	}
	/* everything answered, with room: nothing is left hanging */
	room = true;
	if (!closed)
		acp_conn_writable(c);
	while (!closed && fake_pending() > 0)
	{
		if (++steps > MAX_STEPS)
			abort(); /* reads without end */
		answer(NULL);
		if (!closed)
			check_sessions(c);
		run_timers();
	}
	if (!closed)
		acp_conn_free(c);
	while (fake_pending() > 0)
		answer(NULL); /* a feed's read outlives its subscribers */
	run_timers();
	for (int i = 0; i < nevents; i++)
		free(events[i]);
	nevents = 0;
	return 0;
}
