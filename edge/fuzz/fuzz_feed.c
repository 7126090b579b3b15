/*
 * fuzz_feed.c — libFuzzer target for client cursors (Last-Event-ID and
 * ?after=, parsed by edge_parse_int64) and what feed.c makes of them.
 * feed.c is included whole and runs against a fake database holding one
 * session whose log grows as the input says; the input also opens
 * subscribers at cursors it spells out, closes them, starves them of room,
 * and completes the reads in flight in the order it picks.
 *
 * Checked on every step: a subscriber is handed seq = its cursor + 1 and
 * nothing beyond the log; the feed's position never passes the log's end;
 * and once every read is answered, every live subscriber with room has
 * caught up with the log — with a bounded number of reads (a cursor far
 * ahead used to make later subscribers re-read without end).
 *
 *   make -C edge fuzz && edge/fuzz/fuzz_feed -max_total_time=60
 */
#include "../feed.c"

EdgeConfig	edge_cfg;
EdgeMetrics edge_metrics;

#include "fake_db.h"

#define MAX_SUBS 6
#define MAX_STEPS 20000

static int64_t log_last; /* the session's last seq */

typedef struct Sub
{
	EdgeSub sub;
	bool	open;
	bool	room;
} Sub;

static Sub			  subs[MAX_SUBS];
static const EdgeAuth fake_auth = {.tenant = "t", .exp = 0};

void
log_at(int level, const char *fmt, ...)
{
}

bool
auth_expired(const EdgeAuth *a)
{
	return false;
}

void
ev_timer_arm(EvTimer *t, uint64_t delay_ms, EvTimerFn fn, void *data)
{
	t->armed = true;
	t->fn = fn;
	t->data = data;
}

void
ev_timer_cancel(EvTimer *t)
{
	t->armed = false;
}

static const char *
any_event(int64_t seq)
{
	return "{}";
}

/* Answer job j as the database would, from the log as it is now. */
static void
complete(EdgeJob *j)
{
	fake_events(j, log_last, any_event);
	fake_answer(j, NULL);
}

static bool
t_deliver(EdgeSub *s, int64_t seq, const char *json, size_t len)
{
	Sub *x = s->owner;

	if (seq != s->cursor + 1 || seq > log_last)
		abort(); /* a gap, a duplicate, or beyond the log */
	return x->room;
}

static bool
t_has_room(EdgeSub *s)
{
	return ((Sub *) s->owner)->room;
}

static void
t_started(EdgeSub *s, const EdgeProblem *p)
{
	if (p)
	{
		feed_unsubscribe(s);
		((Sub *) s->owner)->open = false;
	}
}

static void
t_caught_up(EdgeSub *s)
{
}

static void
t_failed(EdgeSub *s, const EdgeProblem *p)
{
	feed_unsubscribe(s);
	((Sub *) s->owner)->open = false;
}

static const EdgeSubOps ops = {
	.deliver = t_deliver,
	.has_room = t_has_room,
	.started = t_started,
	.caught_up = t_caught_up,
	.failed = t_failed,
};

static void
check_feed(void)
{
	EdgeFeed *f = feed_find("s");

	if (f && f->last_seq > log_last)
		abort(); /* the shared position passed the log */
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t i = 0;
	int	   steps = 0;

	memset(subs, 0, sizeof(subs));
	log_last = size > 0 ? data[i++] % 40 : 0;
	while (i < size)
	{
		uint8_t op = data[i++];
		Sub	   *x = &subs[op % MAX_SUBS];

		switch ((op >> 3) % 6)
		{
			case 0: /* a client opens a stream with a cursor it spells */
			{
				char	cursor[24];
				size_t	n = 0;
				int64_t after;

				while (i < size && data[i] != ';' && n < sizeof(cursor) - 1)
					cursor[n++] = (char) data[i++];
				cursor[n] = '\0';
				if (i < size)
					i++;
				if (x->open || !edge_parse_int64(cursor, 0, INT64_MAX, &after))
					break; /* in use, or a 400 */
				x->open = true;
				x->room = true;
				feed_subscribe(&x->sub, "s", after, &fake_auth, &ops, x);
				break;
			}
			case 1: /* an event commits */
				log_last++;
				feed_on_notify("s");
				break;
			case 2: /* the database answers a read */
				for (int k = 0; k < FAKE_JOBS; k++)
					if (fake_jobs[(op + k) % FAKE_JOBS].live)
					{
						complete(&fake_jobs[(op + k) % FAKE_JOBS]);
						break;
					}
				break;
			case 3: /* the client goes */
				if (x->open)
				{
					feed_unsubscribe(&x->sub);
					x->open = false;
				}
				break;
			case 4: /* room comes and goes */
				x->room = !x->room;
				if (x->open && x->room)
					feed_sub_room(&x->sub);
				break;
			default:
				feed_on_listen_up();
				break;
		}
		check_feed();
	}
	/* every room, every read answered: all live subscribers catch up */
	for (int k = 0; k < MAX_SUBS; k++)
		if (subs[k].open && !subs[k].room)
		{
			subs[k].room = true;
			feed_sub_room(&subs[k].sub);
		}
	feed_on_notify("s");
	while (fake_pending() > 0)
	{
		if (++steps > MAX_STEPS)
			abort(); /* reads without end */
		for (int k = 0; k < FAKE_JOBS; k++)
			if (fake_jobs[k].live)
				complete(&fake_jobs[k]);
		check_feed();
	}
	for (int k = 0; k < MAX_SUBS; k++)
		if (subs[k].open)
		{
			if (subs[k].sub.state == SUB_LIVE && subs[k].sub.cursor != log_last)
				abort(); /* a live subscriber left behind */
			feed_unsubscribe(&subs[k].sub);
		}
	return 0;
}
