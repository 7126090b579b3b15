/*
 * fuzz_feed.c — libFuzzer target for SSE cursors (Last-Event-ID, ?after=)
 * and what the shared per-session feed (feed.c) does with them.  The input
 * is a script: subscribers join with a cursor parsed the way the routes
 * parse it (edge_parse_int64), the session's log grows, notifications come,
 * the fake database answers reads truthfully, fails them, or a subscriber
 * leaves or stalls.  It checks that no subscriber ever gets an event twice,
 * out of order, with a gap or beyond the log; that a reader's cursor never
 * moves the shared feed past the log; and, once everything is drained,
 * that every live subscriber has caught up, in a bounded number of reads.
 *
 *   make -C edge fuzz && edge/fuzz/fuzz_feed -max_total_time=60
 */
#include <assert.h>

#include "../feed.c"

EdgeConfig	edge_cfg = {.body_limit = 1 << 20, .json_depth = 64};
EdgeMetrics edge_metrics;

void
edge_log(int level, const char *fmt,...)
{
}

/* ---- a fake database holding one session's log of log_last events ---- */

#define SID "01890000-0000-7000-8000-000000000001"
#define MAX_JOBS 64
#define MAX_SUBS 8

struct EdgeJob
{
	EdgeStmt	stmt;
	int64_t		after;
	long		limit;
	EdgeDbDone	done;
	void	   *arg;
	bool		live;
};

typedef struct FakeRows
{
	int			n;
	int			cols;
	char		cell[FEED_PAGE][3][32];
	bool		null[FEED_PAGE][3];
} FakeRows;

static EdgeJob jobs[MAX_JOBS];
static int64_t log_last;
static long reads;
static bool refuse_submit;

EdgeJob *
db_submit_ex(EdgeStmt stmt, const EdgeAuth *auth, int nparams, const char *const *params,
			 EdgeDbDone done, void *arg, bool urgent)
{
	assert(nparams == 3 && strcmp(params[0], SID) == 0);
	if (refuse_submit)
		return NULL;
	for (int i = 0; i < MAX_JOBS; i++)
		if (!jobs[i].live)
		{
			jobs[i] = (EdgeJob) {stmt, strtoll(params[1], NULL, 10), strtol(params[2], NULL, 10), done, arg, true};
			/* the statements refuse a negative cursor: the edge must never send one */
			assert(jobs[i].after >= 0);
			return &jobs[i];
		}
	return NULL;
}

EdgeJob *
db_submit(EdgeStmt stmt, const EdgeAuth *auth, int nparams, const char *const *params,
		  EdgeDbDone done, void *arg)
{
	return db_submit_ex(stmt, auth, nparams, params, done, arg, false);
}

void
db_cancel(EdgeJob *job)
{
	if (job)
		job->live = false;
}

int
db_rows(EdgeDbResult *r)
{
	return ((FakeRows *) r->res)->n;
}

const char *
db_value(EdgeDbResult *r, int row, int col)
{
	FakeRows   *f = r->res;

	assert(row >= 0 && row < f->n && col >= 0 && col < f->cols);
	return f->null[row][col] ? "" : f->cell[row][col];
}

bool
db_isnull(EdgeDbResult *r, int row, int col)
{
	FakeRows   *f = r->res;

	assert(row >= 0 && row < f->n && col >= 0 && col < f->cols);
	return f->null[row][col];
}

bool
auth_expired(const EdgeAuth *a)
{
	return false;
}

static EdgeTimer *timers[16];

void
loop_timer_arm(EdgeTimer *t, uint64_t delay_ms, EdgeTimerFn fn, void *data)
{
	t->fn = fn;
	t->data = data;
	if (!t->armed)
		for (int i = 0; i < 16; i++)
			if (timers[i] == NULL)
			{
				timers[i] = t;
				t->armed = true;
				break;
			}
}

void
loop_timer_cancel(EdgeTimer *t)
{
	for (int i = 0; i < 16; i++)
		if (timers[i] == t)
			timers[i] = NULL;
	t->armed = false;
}

static void
fire_timers(void)
{
	for (int i = 0; i < 16; i++)
	{
		EdgeTimer  *t = timers[i];

		if (t)
		{
			timers[i] = NULL;
			t->armed = false;
			t->fn(t);
		}
	}
}

/* Answer a job: events after its cursor, as the real statements would. */
static void
answer(EdgeJob *j, const char *sqlstate)
{
	static FakeRows rows;
	EdgeDbResult r = {.ok = sqlstate == NULL, .res = &rows};
	EdgeJob		copy = *j;

	j->live = false;
	reads++;
	memset(&rows, 0, sizeof(rows));
	if (sqlstate)
	{
		snprintf(r.sqlstate, sizeof(r.sqlstate), "%s", sqlstate);
		r.message = "fake failure";
	}
	else if (copy.stmt == STMT_EVENTS_FOLLOW)
	{
		/* (last_seq, seq, event): one row per event, or one of NULLs */
		rows.cols = 3;
		for (int64_t s = copy.after + 1; s <= log_last && rows.n < copy.limit && rows.n < FEED_PAGE; s++)
		{
			snprintf(rows.cell[rows.n][0], 32, "%lld", (long long) log_last);
			snprintf(rows.cell[rows.n][1], 32, "%lld", (long long) s);
			snprintf(rows.cell[rows.n][2], 32, "{\"seq\":%lld}", (long long) s);
			rows.n++;
		}
		if (rows.n == 0)
		{
			snprintf(rows.cell[0][0], 32, "%lld", (long long) log_last);
			rows.null[0][1] = rows.null[0][2] = true;
			rows.n = 1;
		}
	}
	else
	{
		assert(copy.stmt == STMT_EVENTS_READ);
		rows.cols = 2;
		for (int64_t s = copy.after + 1; s <= log_last && rows.n < copy.limit && rows.n < FEED_PAGE; s++)
		{
			snprintf(rows.cell[rows.n][0], 32, "%lld", (long long) s);
			snprintf(rows.cell[rows.n][1], 32, "{\"seq\":%lld}", (long long) s);
			rows.n++;
		}
	}
	copy.done(copy.arg, &r);
}

/* ---- subscribers that check what they are given ---- */

typedef struct Client
{
	EdgeSub		sub;
	bool		in_use;
	bool		failed;
	bool		stalled;		/* deliver says "no room" */
	int64_t		after;			/* the cursor it asked for */
	int64_t		got;			/* last seq delivered, -1: none yet */
} Client;

static Client clients[MAX_SUBS];
static EdgeAuth the_auth = {.scope = SCOPE_TENANT, .tenant = "fuzz", .exp = 1 << 30};

static bool
c_deliver(EdgeSub *s, int64_t seq, const char *json, size_t len)
{
	Client	   *c = s->owner;
	char		want[32];

	assert(c->in_use && !c->failed);
	if (c->stalled)
		return false;
	/* never beyond the log, never twice, never out of order, no gap */
	assert(seq >= 1 && seq <= log_last);
	if (c->got < 0)
		assert(seq <= c->after + 1 || c->after >= log_last);
	else
		assert(seq == c->got + 1);
	snprintf(want, sizeof(want), "{\"seq\":%lld}", (long long) seq);
	assert(len == strlen(want) && memcmp(json, want, len) == 0);
	c->got = seq;
	return true;
}

static bool
c_has_room(EdgeSub *s)
{
	return !((Client *) s->owner)->stalled;
}

static void
c_started(EdgeSub *s, const EdgeProblem *p)
{
	if (p)
	{
		((Client *) s->owner)->failed = true;
		feed_unsubscribe(s);
	}
}

static void
c_caught_up(EdgeSub *s)
{
}

static void
c_failed(EdgeSub *s, const EdgeProblem *p)
{
	Client	   *c = s->owner;

	c->failed = true;
	feed_unsubscribe(s);
}

static const EdgeSubOps ops = {c_deliver, c_has_room, c_started, c_caught_up, c_failed};

static void
client_leave(Client *c)
{
	if (!c->failed)
		feed_unsubscribe(&c->sub);
	c->in_use = false;
}

/* Answer every read until none is left; a bounded number of reads. */
static void
drain(void)
{
	for (int round = 0; round < 10000; round++)
	{
		bool		any = false;

		fire_timers();
		for (int i = 0; i < MAX_JOBS; i++)
			if (jobs[i].live)
			{
				answer(&jobs[i], NULL);
				any = true;
			}
		if (!any)
			return;
	}
	assert(!"reads never end: a cursor sends the feed into a loop");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t		i = 0;

	memset(clients, 0, sizeof(clients));
	memset(jobs, 0, sizeof(jobs));
	memset(timers, 0, sizeof(timers));
	log_last = 0;
	reads = 0;
	refuse_submit = false;

	while (i < size)
	{
		uint8_t		op = data[i++];
		Client	   *c = &clients[(op >> 4) % MAX_SUBS];

		switch (op & 0x0f)
		{
			case 0:			/* a client opens a stream: "<cursor>;" */
			case 1:
				{
					char		text[32];
					size_t		n = 0;
					int64_t		after;

					while (i < size && data[i] != ';' && n < sizeof(text) - 1)
						text[n++] = (char) data[i++];
					text[n] = '\0';
					if (i < size && data[i] == ';')
						i++;
					if (c->in_use || !edge_parse_int64(text, 0, INT64_MAX, &after))
						break;	/* the route answers 400 */
					memset(c, 0, sizeof(*c));
					c->in_use = true;
					c->after = after;
					c->got = -1;
					if (feed_subscribe(&c->sub, SID, after, &the_auth, &ops, c) < 0)
						c->in_use = false;
					break;
				}
			case 2:			/* the log grows, and the notification comes */
			case 3:
				if (log_last < 100000)
					log_last += 1 + (op >> 6);
				feed_on_notify(SID);
				break;
			case 4:			/* the oldest read is answered */
			case 5:
				for (int j = 0; j < MAX_JOBS; j++)
					if (jobs[j].live)
					{
						answer(&jobs[j], NULL);
						break;
					}
				break;
			case 6:			/* a read fails */
				for (int j = 0; j < MAX_JOBS; j++)
					if (jobs[j].live)
					{
						answer(&jobs[j], (op & 0x10) ? "42501" : "40001");
						break;
					}
				break;
			case 7:
				if (c->in_use)
					client_leave(c);
				break;
			case 8:			/* a client stops reading, or reads again */
				if (c->in_use && !c->failed)
				{
					c->stalled = !c->stalled;
					if (!c->stalled)
						feed_sub_room(&c->sub);
				}
				break;
			case 9:
				fire_timers();
				break;
			case 10:
				refuse_submit = !refuse_submit;
				break;
			case 11:
				feed_on_listen_up();
				break;
			default:
				break;
		}
	}

	/* settle: every read answered, every stalled client reading again */
	refuse_submit = false;
	drain();
	for (int k = 0; k < MAX_SUBS; k++)
		if (clients[k].in_use && !clients[k].failed && clients[k].stalled)
		{
			clients[k].stalled = false;
			feed_sub_room(&clients[k].sub);
		}
	drain();
	/* one more event: it must reach every live client */
	log_last++;
	feed_on_notify(SID);
	drain();
	for (int k = 0; k < MAX_SUBS; k++)
	{
		Client	   *c = &clients[k];

		if (!c->in_use || c->failed)
			continue;
		assert(c->got == log_last);
		assert(c->sub.cursor == log_last);
	}
	{
		EdgeFeed   *f = feed_find(SID);

		assert(f == NULL || f->last_seq <= log_last);
	}
	for (int k = 0; k < MAX_SUBS; k++)
		if (clients[k].in_use)
			client_leave(&clients[k]);
	assert(feed_count() == 0);
	return 0;
}
