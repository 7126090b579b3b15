/*
 * feed.c — session event feeds: the fan-out between the one LISTEN
 * connection and every stream of this edge.
 *
 * A feed exists while a session has subscribers here (SSE streams, ACP
 * sessions).  A subscriber starts in CATCHUP: it pages through the log with
 * its own reads (nadi.events_read under its own token, so row-level
 * security decides what it may see) from the cursor its client gave, for
 * as long as it has room, and becomes LIVE when a read comes back short.
 * A LIVE subscriber is fed by the feed: on NOTIFY nadi_events for the
 * session, the feed makes one read after the last sequence number it knows
 * (under the token of one of its LIVE subscribers) and hands each event to
 * every LIVE subscriber whose cursor is exactly one behind it.
 *
 * A client's cursor is never trusted: each catch-up read also returns the
 * session's last sequence number (same snapshot), a cursor beyond it is
 * clamped to it (the client gets the events that come next), and only that
 * number from the database moves the feed's position — a cursor far ahead
 * must not make the feed skip what its other subscribers wait for.
 *
 * No gap and no duplicate: a subscriber only ever takes seq = cursor + 1
 * (catch-up reads also skip seq <= cursor); when a feed event is further
 * ahead than that, the subscriber drops back to CATCHUP and reads the
 * missing range itself.  Events commit in sequence order under the session
 * lock, so every read sees a prefix of the log.  A notification that
 * arrives while a read is in flight marks the feed dirty and causes one
 * more read; when the LISTEN connection comes back after a loss, every
 * feed reads again, since notifications may have been missed.
 *
 * Callbacks (EdgeSubOps) may unsubscribe, but the subscriber's memory must
 * stay valid until the callback returns: owners defer freeing it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edge.h"

#define FEED_BUCKETS 4096
#define FEED_PAGE 500
#define FEED_PAGE_TEXT "500"
#define FEED_RETRY_MS 1000

struct EdgeFeed
{
	char	  sid[37];
	int64_t	  last_seq; /* -1: not known yet */
	EdgeSub	 *subs;
	int		  nsubs;
	EdgeJob	 *job;
	EdgeSub	 *job_sub;	 /* whose token the read in flight uses */
	EdgeSub	 *iter_next; /* delivery loop's next subscriber */
	bool	  dirty;
	int		  busy; /* inside a delivery: do not free */
	EvTimer	  retry;
	EdgeFeed *hnext;
};

static EdgeFeed *buckets[FEED_BUCKETS];
static int		 nfeeds;

static void feed_fetch(EdgeFeed *f);
static void sub_fetch(EdgeSub *s);

static unsigned
sid_hash(const char *sid)
{
	return edge_str_hash(sid) % FEED_BUCKETS;
}

static EdgeFeed *
feed_find(const char *sid)
{
	for (EdgeFeed *f = buckets[sid_hash(sid)]; f; f = f->hnext)
		if (strcmp(f->sid, sid) == 0)
			return f;
	return NULL;
}

int
feed_count(void)
{
	return nfeeds;
}

/* Free a feed nobody uses any more (not while its read is in flight). */
static void
feed_maybe_free(EdgeFeed *f)
{
	EdgeFeed **pp;

	if (f->nsubs > 0 || f->job || f->busy)
		return;
	for (pp = &buckets[sid_hash(f->sid)]; *pp; pp = &(*pp)->hnext)
		if (*pp == f)
		{
			*pp = f->hnext;
			break;
		}
	ev_timer_cancel(&f->retry);
	nfeeds--;
	free(f);
}

static bool
feed_has(EdgeFeed *f, EdgeSub *s)
{
	for (EdgeSub *x = f->subs; x; x = x->next)
		if (x == s)
			return true;
	return false;
}

/* ------------------------------------------------------------------------
 * A subscriber's own reads (catch-up)
 * ------------------------------------------------------------------------ */

static void
sub_fail(EdgeSub *s, const EdgeProblem *p)
{
	if (!s->started)
	{
		s->started = true;
		s->ops->started(s, p);
	}
	else
		s->ops->failed(s, p);
}

/*
 * The feed's position moved past its LIVE subscribers (a catch-up read saw
 * events before the feed's own read did, which will now skip them): they
 * read the rest themselves.
 */
static void
feed_behind(EdgeFeed *f, EdgeSub *except)
{
	f->busy++;
	for (EdgeSub *x = f->subs; x; x = f->iter_next)
	{
		f->iter_next = x->next;
		if (x != except && x->state == SUB_LIVE && x->cursor < f->last_seq)
			sub_fetch(x);
	}
	f->iter_next = NULL;
	f->busy--;
	feed_maybe_free(f);
}

static void
sub_fetch_done(void *arg, EdgeDbResult *r)
{
	EdgeSub	 *s = arg;
	EdgeFeed *f = s->feed;
	int		  n;
	int64_t	  last;
	bool	  first = !s->started;

	s->job = NULL;
	if (!r->ok)
	{
		EdgeProblem p;

		problem_from_db(&p, r->sqlstate, r->message, r->detail, r->hint);
		sub_fail(s, &p);
		return;
	}
	/* one row per event, or one row of NULLs after the session's last seq */
	n = db_rows(r);
	last = n > 0 ? strtoll(db_value(r, 0, 0), NULL, 10) : 0;
	if (n == 1 && db_isnull(r, 0, 1))
		n = 0;
	/* a cursor beyond the log: the client gets what comes next */
	if (s->cursor > last)
		s->cursor = last;
	for (int i = 0; i < n; i++)
	{
		int64_t		seq = strtoll(db_value(r, i, 1), NULL, 10);
		const char *json = db_value(r, i, 2);

		if (seq <= s->cursor)
			continue;
		if (!s->ops->deliver(s, seq, json, strlen(json)))
		{
			s->paused = true;
			break;
		}
		s->cursor = seq;
		if (s->state == SUB_CLOSED)
			return;
	}
	if (first)
	{
		s->started = true;
		s->ops->started(s, NULL);
		if (s->state == SUB_CLOSED)
			return;
	}
	if (s->paused)
		return;
	if (n == FEED_PAGE)
	{
		if (s->ops->has_room(s))
			sub_fetch(s);
		else
			s->paused = true;
		return;
	}
	/* caught up with this read's snapshot */
	if (f->last_seq >= 0 && f->last_seq > s->cursor)
	{
		/* the feed moved on while we read: read the rest too */
		sub_fetch(s);
		return;
	}
	/* the database's last seq, never the client's cursor, moves the feed */
	if (f->last_seq < last)
	{
		int64_t was = f->last_seq;

		f->last_seq = last;
		if (was >= 0)
			feed_behind(f, s);
	}
	if (s->state == SUB_CLOSED)
		return;
	s->state = SUB_LIVE;
	s->ops->caught_up(s);
	if (s->state == SUB_CLOSED)
		return;
	if (f->dirty && f->job == NULL)
		feed_fetch(f);
}

static void
sub_fetch(EdgeSub *s)
{
	char		after[24];
	const char *params[3] = {s->feed->sid, after, FEED_PAGE_TEXT};
	EdgeProblem p;

	if (s->job)
		return;
	s->state = SUB_CATCHUP;
	s->paused = false;
	snprintf(after, sizeof(after), "%lld", (long long) s->cursor);
	s->job = db_submit(STMT_EVENTS_FOLLOW, s->auth, 3, params, sub_fetch_done, s);
	if (s->job == NULL)
	{
		problem_set(&p, 503, "overloaded", "Too many requests are waiting for the database.");
		p.retry_after = 1;
		sub_fail(s, &p);
	}
}

int
feed_subscribe(EdgeSub *s, const char *sid, int64_t after, const EdgeAuth *auth,
			   const EdgeSubOps *ops, void *owner)
{
	EdgeFeed *f = feed_find(sid);

	if (f == NULL)
	{
		unsigned h = sid_hash(sid);

		f = calloc(1, sizeof(*f));
		if (f == NULL)
			return -ENOMEM;
		snprintf(f->sid, sizeof(f->sid), "%s", sid);
		f->last_seq = -1;
		f->hnext = buckets[h];
		buckets[h] = f;
		nfeeds++;
	}
	memset(s, 0, sizeof(*s));
	s->feed = f;
	s->ops = ops;
	s->owner = owner;
	s->auth = auth;
	s->cursor = after;
	s->next = f->subs;
	if (f->subs)
		f->subs->prev = s;
	f->subs = s;
	f->nsubs++;
	sub_fetch(s);
	return 0;
}

void
feed_unsubscribe(EdgeSub *s)
{
	EdgeFeed *f = s->feed;

	if (f == NULL)
		return;
	db_cancel(s->job);
	s->job = NULL;
	if (f->iter_next == s)
		f->iter_next = s->next;
	if (f->job_sub == s)
		f->job_sub = NULL;
	if (s->prev)
		s->prev->next = s->next;
	else
		f->subs = s->next;
	if (s->next)
		s->next->prev = s->prev;
	f->nsubs--;
	s->feed = NULL;
	s->state = SUB_CLOSED;
	feed_maybe_free(f);
}

void
feed_sub_room(EdgeSub *s)
{
	if (s->feed && s->paused && s->state != SUB_CLOSED && s->job == NULL)
		sub_fetch(s);
}

/* ------------------------------------------------------------------------
 * The feed's reads (live)
 * ------------------------------------------------------------------------ */

static void
feed_retry_fn(EvTimer *t)
{
	EdgeFeed *f = t->data;

	if (f->job == NULL)
		feed_fetch(f);
}

/* Hand one event to every LIVE subscriber that is right behind it. */
static void
feed_deliver(EdgeFeed *f, int64_t seq, const char *json, size_t len)
{
	EdgeSub *s = f->subs;

	while (s)
	{
		f->iter_next = s->next;
		if (s->state == SUB_LIVE)
		{
			if (seq == s->cursor + 1)
			{
				if (s->ops->deliver(s, seq, json, len))
					s->cursor = seq;
				else
				{
					EdgeProblem p;

					problem_set(&p, 503, "slow_client",
								"The client did not read its stream fast enough; resume from the "
								"last event id.");
					s->ops->failed(s, &p);
				}
			}
			else if (seq > s->cursor + 1)
				sub_fetch(s);
		}
		s = f->iter_next;
	}
	f->iter_next = NULL;
}

static void feed_fetch_result(EdgeFeed *f, EdgeSub *used, EdgeDbResult *r);

static void
feed_fetch_done(void *arg, EdgeDbResult *r)
{
	EdgeFeed *f = arg;
	EdgeSub	 *used = f->job_sub;

	f->job = NULL;
	f->job_sub = NULL;
	f->busy++;
	feed_fetch_result(f, used, r);
	f->busy--;
	feed_maybe_free(f);
}

static void
feed_fetch_result(EdgeFeed *f, EdgeSub *used, EdgeDbResult *r)
{
	int n;

	if (f->nsubs == 0)
		return;
	if (!r->ok)
	{
		EdgeProblem p;

		problem_from_db(&p, r->sqlstate, r->message, r->detail, r->hint);
		if (p.status == 401 || p.status == 403 || p.status == 404)
		{
			/* that subscriber's token no longer reads the session: drop it */
			if (used && feed_has(f, used))
				used->ops->failed(used, &p);
			f->dirty = true;
			if (f->nsubs > 0 && f->job == NULL)
				feed_fetch(f);
		}
		else
		{
			f->dirty = true;
			ev_timer_arm(&f->retry, FEED_RETRY_MS, feed_retry_fn, f);
		}
		return;
	}
	n = db_rows(r);
	for (int i = 0; i < n; i++)
	{
		int64_t		seq = strtoll(db_value(r, i, 0), NULL, 10);
		const char *json = db_value(r, i, 1);

		if (seq <= f->last_seq)
			continue;
		f->last_seq = seq;
		feed_deliver(f, seq, json, strlen(json));
	}
	if (f->nsubs == 0)
		return;
	if (n == FEED_PAGE || f->dirty)
	{
		f->dirty = false;
		feed_fetch(f);
	}
}

/* Read what is new after last_seq, with a LIVE subscriber's token. */
static void
feed_fetch(EdgeFeed *f)
{
	EdgeSub	   *pick = NULL;
	char		after[24];
	const char *params[3] = {f->sid, after, FEED_PAGE_TEXT};

	if (f->job)
	{
		f->dirty = true;
		return;
	}
	for (EdgeSub *s = f->subs; s; s = s->next)
		if (s->state == SUB_LIVE && !auth_expired(s->auth) &&
			(pick == NULL || s->auth->exp > pick->auth->exp))
			pick = s;
	if (pick == NULL || f->last_seq < 0)
	{
		/* subscribers still catching up will read it themselves */
		f->dirty = true;
		return;
	}
	f->dirty = false;
	snprintf(after, sizeof(after), "%lld", (long long) f->last_seq);
	edge_metrics.feed_fetches++;
	f->job = db_submit_ex(STMT_EVENTS_READ, pick->auth, 3, params, feed_fetch_done, f, true);
	if (f->job == NULL)
	{
		f->dirty = true;
		ev_timer_arm(&f->retry, FEED_RETRY_MS, feed_retry_fn, f);
		return;
	}
	f->job_sub = pick;
}

void
feed_on_notify(const char *sid)
{
	EdgeFeed *f;

	/* "*": the notifier dropped ids (its ring overflowed); re-read every feed */
	if (strcmp(sid, "*") == 0)
	{
		feed_on_listen_up();
		return;
	}
	f = feed_find(sid);
	if (f)
		feed_fetch(f);
}

/* After the LISTEN connection (re)connects: anything may have been missed. */
void
feed_on_listen_up(void)
{
	for (int i = 0; i < FEED_BUCKETS; i++)
		for (EdgeFeed *f = buckets[i]; f; f = f->hnext)
			feed_fetch(f);
}
