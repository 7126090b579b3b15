/*
 * cellhost.c — a cell host's work (cellhost.h): the sessions it holds, its
 * rounds, and the non-blocking driver that keeps every session's need in
 * flight at once.  No PostgreSQL header: the embedded cell (cell.c) and
 * nadi-celld (celld/) run this same file over their own store.
 *
 * A run (cellhost_run) does, in this order:
 *
 *   calls     curl's sockets and timeouts; every finished call goes back to
 *             its session's runtime (runtime_on_model_reply/_tool_result);
 *             a tool call's output lines, as its answer streams in, go to
 *             the runtime as they come (runtime_tool_output)
 *   output    the tool.output events that are due, of every session with a
 *             call out (one transaction, a group each), while the calls go on
 *   timers    due timers (runtime_on_timer)
 *   round     when woken or due: heartbeat, list this cell's sessions, take
 *             placed ones, release terminating and idle ones, claim the next
 *             command of every session with work that the limits allow (one
 *             transaction, a group per session) and start each
 *   settle    until no session needs the store: the store needs of every
 *             session that has one run together (one transaction, a group
 *             each); then the commits of every finished command, each with
 *             its session's next claim (one transaction: a session that
 *             finished a command starts its next one without a round)
 *   renew     leases with less than two thirds of their TTL left (one
 *             transaction, a group each); sessions no longer ours go
 *
 * HTTP needs go to curl multi and never wait; a timer need is a deadline.
 * So a cell runs as many commands at once as its limits allow
 * (max_in_flight, max_in_flight_tenant), not one.  Per session, the runtime
 * has one need at a time and a session's commands run one after the other.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <curl/curl.h>

#include "cellhost.h"

#define MS	INT64_C(1000)			/* µs per ms */

/* A session this cell holds the lease of. */
typedef struct Sess
{
	RtSession	rt;				/* what the runtime keeps (id as text, epoch, conversation) */
	char	   *tenant;
	int64_t		lease_expires;	/* monotonic µs */
	int64_t		lease_ttl;		/* µs, as last granted */
	int64_t		last_active;
	int64_t		timer_at;		/* a timer need's deadline, or 0 */
	HttpCall   *call;			/* the call in flight, or NULL */
	bool		busy;			/* a command is under way (or a claim is asked for) */
	bool		started;		/* while claims are handed out: this one's started */
	bool		listed;			/* seen in this round's listing */
	bool		has_work;		/* this round's listing: a command is due */
	bool		out_listed;		/* in CellHost.outputs */
	struct CellHost *ch;
	struct Sess *hnext;			/* hash chain */
} Sess;

/* A growable array of sessions (a work list). */
typedef struct SessList
{
	Sess	  **items;
	int			n;
	int			cap;
} SessList;

/* The strings of a configuration, owned. */
typedef struct OwnedConfig
{
	CellHostConfig cell;
	RuntimeConfig rt;
	char	   *strs[7];		/* what the two configurations point at */
} OwnedConfig;

struct CellHost
{
	const CellStore *store;
	OwnedConfig conf;
	Runtime		runtime;

	Sess	  **buckets;
	size_t		nbuckets;
	size_t		nsessions;

	CURLM	   *multi;
	int			epfd;			/* curl's sockets */
	int64_t		curl_deadline;	/* curl wants a timeout call then, or 0 */

	SessList	stores;			/* sessions whose need is the store */
	SessList	finished;		/* commands over: commit their writes */
	SessList	timers;			/* sessions waiting on a timer */
	SessList	outputs;		/* sessions with tool.output events kept */

	json_t	   *tenants;		/* tenant → commands under way */
	bool		woken;
	bool		claiming;
	bool		deferred;		/* a claim was put off for a limit since the last round */
	bool		contended;		/* the last round put claims off: only rounds claim (fairly) */
	int64_t		last_sweep;
	int64_t		next_sweep;
	int64_t		next_renew;
	int64_t		last_heartbeat;
	CellHostStats stats;
};

static void advance(CellHost *ch, Sess *s, RtNeed *need);
static void chlog(CellHost *ch, RtLogLevel level, const char *fmt,...) __attribute__((format(printf, 3, 4)));
static void forget(CellHost *ch, Sess *s);

static void
chlog(CellHost *ch, RtLogLevel level, const char *fmt,...)
{
	char		msg[768];
	va_list		ap;

	if (ch->conf.rt.log == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	ch->conf.rt.log(ch->conf.rt.log_arg, level, msg);
}

/* ---- lists ---- */

static void
list_push(SessList *l, Sess *s)
{
	if (l->n == l->cap)
	{
		int			cap = l->cap ? l->cap * 2 : 64;
		Sess	  **grown = realloc(l->items, sizeof(Sess *) * cap);

		if (grown == NULL)
			abort();			/* as jansson: out of memory is not survivable here */
		l->items = grown;
		l->cap = cap;
	}
	l->items[l->n++] = s;
}

static void
list_remove(SessList *l, Sess *s)
{
	for (int i = 0; i < l->n; i++)
		if (l->items[i] == s)
			l->items[i--] = l->items[--l->n];
}

/* ---- the session table (by id text) ---- */

static size_t
id_hash(const char *id)
{
	size_t		h = 5381;

	for (; *id; id++)
		h = h * 33 + (unsigned char) *id;
	return h;
}

static Sess *
sess_find(CellHost *ch, const char *id)
{
	if (id == NULL)
		return NULL;
	for (Sess *s = ch->buckets[id_hash(id) % ch->nbuckets]; s; s = s->hnext)
		if (strcmp(s->rt.id, id) == 0)
			return s;
	return NULL;
}

static void
table_grow(CellHost *ch)
{
	size_t		n = ch->nbuckets * 4;
	Sess	  **b = calloc(n, sizeof(Sess *));

	if (b == NULL)
		return;					/* longer chains, still correct */
	for (size_t i = 0; i < ch->nbuckets; i++)
		for (Sess *s = ch->buckets[i], *next; s; s = next)
		{
			next = s->hnext;
			s->hnext = b[id_hash(s->rt.id) % n];
			b[id_hash(s->rt.id) % n] = s;
		}
	free(ch->buckets);
	ch->buckets = b;
	ch->nbuckets = n;
}

static Sess *
sess_add(CellHost *ch, const char *id)
{
	Sess	   *s = calloc(1, sizeof(Sess));
	size_t		b;

	if (s == NULL)
		abort();
	if (ch->nsessions >= ch->nbuckets)
		table_grow(ch);
	strncpy(s->rt.id, id, sizeof(s->rt.id) - 1);
	s->ch = ch;
	b = id_hash(id) % ch->nbuckets;
	s->hnext = ch->buckets[b];
	ch->buckets[b] = s;
	ch->nsessions++;
	return s;
}

/* Every session, collected (the table may change while the caller goes through them). */
static Sess **
sess_all(CellHost *ch, size_t *n)
{
	Sess	  **all = malloc(sizeof(Sess *) * (ch->nsessions + 1));
	size_t		m = 0;

	if (all == NULL)
		abort();
	for (size_t i = 0; i < ch->nbuckets; i++)
		for (Sess *s = ch->buckets[i]; s; s = s->hnext)
			all[m++] = s;
	*n = m;
	return all;
}

/* ---- commands under way, per tenant ---- */

static long
tenant_count(CellHost *ch, const char *tenant)
{
	return json_integer_value(json_object_get(ch->tenants, tenant ? tenant : ""));
}

static void
tenant_add(CellHost *ch, const char *tenant, int d)
{
	const char *t = tenant ? tenant : "";
	long		n = tenant_count(ch, t) + d;

	if (n > 0)
		json_object_set_new(ch->tenants, t, json_integer(n));
	else
		json_object_del(ch->tenants, t);
}

/*
 * A command slot: taken when a claim is asked for (so that one batch of
 * claims cannot go past a limit), given back when the command is over or
 * the claim gave nothing.
 */
static void
slot_take(CellHost *ch, Sess *s)
{
	s->busy = true;
	tenant_add(ch, s->tenant, 1);
	ch->stats.in_flight++;
}

static void
slot_give(CellHost *ch, Sess *s)
{
	if (!s->busy)
		return;
	s->busy = false;
	tenant_add(ch, s->tenant, -1);
	ch->stats.in_flight--;
}

static void
command_end(CellHost *ch, Sess *s)
{
	if (!s->busy)
		return;
	ch->stats.commands_finished++;
	slot_give(ch, s);
	if (ch->deferred)
	{
		/* a claim was put off for a limit: a round looks again now a slot is free */
		ch->deferred = false;
		ch->woken = true;
	}
}

/*
 * May one more command of s's tenant start?  If so its slot is taken (the
 * claim's outcome gives it back or starts the command); counts what it
 * puts off.
 */
static bool
may_start(CellHost *ch, Sess *s)
{
	const CellHostConfig *c = &ch->conf.cell;

	if (!ch->claiming || s->busy || s->rt.epoch < 0)
		return false;
	if (c->max_in_flight > 0 && ch->stats.in_flight >= c->max_in_flight)
	{
		ch->stats.deferred_cell++;
		ch->deferred = ch->contended = true;
		return false;
	}
	if (c->max_in_flight_tenant > 0 && tenant_count(ch, s->tenant) >= c->max_in_flight_tenant)
	{
		ch->stats.deferred_tenant++;
		ch->deferred = ch->contended = true;
		return false;
	}
	slot_take(ch, s);
	return true;
}

/* ---- the store ---- */

static StoreResult
exec1(CellHost *ch, const char *sql, int nargs, const char *const *args)
{
	StoreResult r;

	ch->store->exec(ch->store->ctx, sql, nargs, args, &r);
	return r;
}

static void
lease_from_row(Sess *s, json_t *row, int64_t now)
{
	json_t	   *in = json_object_get(row, "expires_in_ms");

	if (json_is_number(in))
	{
		s->lease_ttl = (int64_t) json_number_value(in) * MS;
		s->lease_expires = now + s->lease_ttl;
	}
}

/*
 * "{a,b,c}": an array literal of the sessions' ids, or of their epochs
 * (uuids and integers need no quoting); malloc'd.
 */
static char *
array_literal(Sess **of, int n, bool epochs)
{
	size_t		cap = (size_t) n * 40 + 3;
	char	   *a = malloc(cap);
	size_t		len = 0;

	if (a == NULL)
		abort();
	a[len++] = '{';
	for (int i = 0; i < n; i++)
	{
		if (epochs)
			len += snprintf(a + len, cap - len, "%s%lld", i ? "," : "", (long long) of[i]->rt.epoch);
		else
			len += snprintf(a + len, cap - len, "%s%s", i ? "," : "", of[i]->rt.id);
	}
	snprintf(a + len, cap - len, "}");
	return a;
}

#define CLAIM_MAX 1000			/* command_claim_many's max_n */
#define SWEEP_MIN_MS 1000		/* a round finding sessions it does not hold sweeps, at most so often */
#define SETTLE_MS 50			/* how long a run's commits go on claiming */
#define SQL_CLAIM_MANY \
	"SELECT session_id, status, command_id, type, payload " \
	"FROM nadi.command_claim_many($1, $2::uuid[], $3::bigint[], $4::integer)"

/*
 * One statement that claims the next command of each session in of[]
 * (their slots taken by may_start, at most CLAIM_MAX): for a group of the
 * caller's transaction.
 */
static json_t *
claim_many_stmt(CellHost *ch, Sess **of, int n)
{
	char	   *ids = array_literal(of, n, false);
	char	   *epochs = array_literal(of, n, true);
	char		max[16];
	const char *args[4] = {ch->conf.cell.host_id, ids, epochs, max};
	json_t	   *stmt;

	snprintf(max, sizeof(max), "%d", n);
	stmt = store_stmt(SQL_CLAIM_MANY, 4, args);
	free(ids);
	free(epochs);
	return stmt;
}

/*
 * The claims came back (rows of command_claim_many, or a failed group):
 * start each command claimed, drop each session fenced, give the other
 * slots back.
 */
static void
claimed(CellHost *ch, Sess **of, int n, const StoreGroup *g)
{
	json_t	   *rows = g->sqlstate[0] == '\0' ? store_group_rows(g, 0) : NULL;
	json_t	   *row;
	size_t		k;

	if (g->sqlstate[0] != '\0')
		chlog(ch, RT_LOG_WARNING, "nadi cell: could not claim commands: %s", g->message);
	json_array_foreach(rows, k, row)
	{
		Sess	   *s = sess_find(ch, json_string_value(json_object_get(row, "session_id")));
		const char *status = json_string_value(json_object_get(row, "status"));

		if (s == NULL || !s->busy || status == NULL)
			continue;
		if (s->rt.epoch < 0)
			continue;			/* its last commit was refused: it goes (the claim runs again elsewhere) */
		if (strcmp(status, "fenced") == 0)
		{
			slot_give(ch, s);
			s->rt.epoch = -1;	/* the lease moved on: dropped at the next renewal */
		}
		else if (strcmp(status, "claimed") == 0 && s->rt.need.kind == RT_NEED_NONE && !s->started)
		{
			s->started = true;
			s->last_active = rt_now_us();
			ch->stats.commands_started++;
			advance(ch, s, runtime_start(&ch->runtime, &s->rt, row));
		}
	}
	/* the rest had nothing to claim */
	for (int i = 0; i < n; i++)
	{
		if (of[i]->busy && !of[i]->started)
			slot_give(ch, of[i]);
		of[i]->started = false;
	}
}

/* ---- the driver ---- */

static void
call_abort(CellHost *ch, Sess *s)
{
	HttpReply	reply;

	if (s->call == NULL)
		return;
	curl_multi_remove_handle(ch->multi, http_call_handle(s->call));
	http_call_finish(s->call, CURLE_ABORTED_BY_CALLBACK, &reply);
	http_reply_clear(&reply);
	s->call = NULL;
	ch->stats.waiting_http--;
}

/* An output line of a tool call's streamed answer (from curl's write callback). */
static void
on_tool_output(void *arg, json_t *output)
{
	Sess	   *s = arg;

	runtime_tool_output(&s->ch->runtime, &s->rt, output);
	if (!s->out_listed && runtime_output_due(&s->rt) > 0)
	{
		s->out_listed = true;
		list_push(&s->ch->outputs, s);
	}
}

/*
 * The tool.output events that are due, of every session with a call out:
 * one transaction, a group per session (fenced: a refused group means the
 * lease moved on).  Returns when the next ones are due (µs), or 0.
 */
static int64_t
outputs_flush(CellHost *ch)
{
	int64_t		now = rt_now_us();
	int64_t		next = 0;
	StoreGroup *groups;
	Sess	  **of;
	int			n = 0;

	if (ch->outputs.n == 0)
		return 0;
	groups = calloc(ch->outputs.n + 1, sizeof(StoreGroup));
	of = malloc(sizeof(Sess *) * (ch->outputs.n + 1));
	if (groups == NULL || of == NULL)
		abort();
	for (int i = 0; i < ch->outputs.n; i++)
	{
		Sess	   *s = ch->outputs.items[i];
		int64_t		due = runtime_output_due(&s->rt);

		if (due == 0 || s->rt.epoch < 0)
		{
			s->out_listed = false;
			ch->outputs.items[i--] = ch->outputs.items[--ch->outputs.n];
			continue;
		}
		if (due > now)
		{
			next = next == 0 || due < next ? due : next;
			continue;
		}
		of[n] = s;
		groups[n++].stmts = runtime_output_take(&s->rt);
		s->out_listed = false;
		ch->outputs.items[i--] = ch->outputs.items[--ch->outputs.n];
	}
	if (n > 0)
		ch->store->exec_groups(ch->store->ctx, groups, n);
	for (int g = 0; g < n; g++)
	{
		if (groups[g].sqlstate[0] != '\0')
		{
			chlog(ch, RT_LOG_DEBUG, "nadi cell: session %s: tool.output refused (%s): %s",
				  of[g]->rt.id, groups[g].sqlstate, groups[g].message);
			of[g]->rt.epoch = -1;
		}
		store_group_free(&groups[g]);
	}
	free(groups);
	free(of);
	return next;
}

/*
 * Meet need as far as can be done without waiting: an HTTP need becomes a
 * call in flight, a timer a deadline, a store need waits for the next
 * batch, and a finished command waits for its commit.
 */
static void
advance(CellHost *ch, Sess *s, RtNeed *need)
{
	for (;;)
	{
		HttpReply	reply;
		HttpCall   *call;

		switch (need->kind)
		{
			case RT_NEED_NONE:
				command_end(ch, s);
				s->last_active = rt_now_us();
				list_push(&ch->finished, s);
				return;
			case RT_NEED_STORE:
				list_push(&ch->stores, s);
				return;
			case RT_NEED_TIMER:
				s->timer_at = rt_now_us() + (int64_t) need->timer_ms * MS;
				list_push(&ch->timers, s);
				ch->stats.waiting_timer++;
				return;
			case RT_NEED_MODEL:
			case RT_NEED_TOOL:
				if (http_call_new(&need->http, &call, &reply) == 0)
				{
					http_call_set_owner(call, s);
					if (need->kind == RT_NEED_TOOL)
						http_call_set_line_fn(call, on_tool_output, s);
					if (curl_multi_add_handle(ch->multi, http_call_handle(call)) == CURLM_OK)
					{
						s->call = call;
						ch->stats.waiting_http++;
						return;
					}
					http_call_finish(call, CURLE_FAILED_INIT, &reply);
				}
				need = need->kind == RT_NEED_MODEL
					? runtime_on_model_reply(&ch->runtime, &s->rt, &reply)
					: runtime_on_tool_result(&ch->runtime, &s->rt, &reply);
				http_reply_clear(&reply);
				break;
		}
	}
}

/* Calls curl has finished: back to their sessions. */
static void
calls_finished(CellHost *ch)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(ch->multi, &left)) != NULL)
	{
		HttpCall   *call;
		Sess	   *s;
		HttpReply	reply;
		RtNeed	   *need;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &call);
		s = http_call_owner(call);
		curl_multi_remove_handle(ch->multi, msg->easy_handle);
		http_call_finish(call, msg->data.result, &reply);
		s->call = NULL;
		ch->stats.waiting_http--;
		need = s->rt.need.kind == RT_NEED_MODEL
			? runtime_on_model_reply(&ch->runtime, &s->rt, &reply)
			: runtime_on_tool_result(&ch->runtime, &s->rt, &reply);
		http_reply_clear(&reply);
		advance(ch, s, need);
	}
}

static void
curl_io(CellHost *ch)
{
	struct epoll_event ev[64];
	int			n,
				running;

	while ((n = epoll_wait(ch->epfd, ev, 64, 0)) > 0)
	{
		for (int i = 0; i < n; i++)
		{
			int			mask = 0;

			if (ev[i].events & EPOLLIN)
				mask |= CURL_CSELECT_IN;
			if (ev[i].events & EPOLLOUT)
				mask |= CURL_CSELECT_OUT;
			if (ev[i].events & (EPOLLERR | EPOLLHUP))
				mask |= CURL_CSELECT_ERR;
			curl_multi_socket_action(ch->multi, ev[i].data.fd, mask, &running);
		}
		if (n < 64)
			break;
	}
	if (ch->curl_deadline && rt_now_us() >= ch->curl_deadline)
	{
		ch->curl_deadline = 0;
		curl_multi_socket_action(ch->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	}
	calls_finished(ch);
}

static int
on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	CellHost   *ch = userp;
	struct epoll_event ev = {0};

	ev.data.fd = fd;
	if (what == CURL_POLL_REMOVE)
	{
		epoll_ctl(ch->epfd, EPOLL_CTL_DEL, fd, &ev);
		return 0;
	}
	ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
	if (epoll_ctl(ch->epfd, EPOLL_CTL_MOD, fd, &ev) != 0 && errno == ENOENT)
		epoll_ctl(ch->epfd, EPOLL_CTL_ADD, fd, &ev);
	return 0;
}

static int
on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
	CellHost   *ch = userp;

	ch->curl_deadline = timeout_ms < 0 ? 0 : rt_now_us() + (int64_t) timeout_ms * MS + 1;
	return 0;
}

static void
timers_due(CellHost *ch)
{
	int64_t		now = rt_now_us();

	for (int i = 0; i < ch->timers.n; i++)
	{
		Sess	   *s = ch->timers.items[i];

		if (s->timer_at > now)
			continue;
		ch->timers.items[i--] = ch->timers.items[--ch->timers.n];
		s->timer_at = 0;
		ch->stats.waiting_timer--;
		advance(ch, s, runtime_on_timer(&ch->runtime, &s->rt));
	}
}

/*
 * Until no session needs the store: run every pending store need in one
 * transaction (a group each), hand each outcome back; then commit every
 * finished command's writes, each session's next claim beside them.
 */
static void
settle(CellHost *ch)
{
	int64_t		deadline = rt_now_us() + SETTLE_MS * MS;
	bool		carry;

	while (ch->stores.n > 0 || ch->finished.n > 0)
	{
		SessList	batch = ch->stores;
		StoreGroup *groups;
		int			ngroups = 0;

		if (batch.n > 0)
		{
			memset(&ch->stores, 0, sizeof(ch->stores));
			groups = calloc(batch.n * RT_MAX_GROUPS + 1, sizeof(StoreGroup));
			for (int i = 0; i < batch.n; i++)
				for (int g = 0; g < batch.items[i]->rt.need.ngroups; g++)
					groups[ngroups++] = batch.items[i]->rt.need.groups[g];
			ch->store->exec_groups(ch->store->ctx, groups, ngroups);
			ngroups = 0;
			for (int i = 0; i < batch.n; i++)
			{
				Sess	   *s = batch.items[i];

				for (int g = 0; g < s->rt.need.ngroups; g++)
					s->rt.need.groups[g] = groups[ngroups++];
				advance(ch, s, runtime_on_store(&ch->runtime, &s->rt));
			}
			free(groups);
			free(batch.items);
			continue;
		}

		/*
		 * The finished commands: their last writes (a group per session),
		 * then one claim of the next command of each (a last group).
		 */
		batch = ch->finished;
		memset(&ch->finished, 0, sizeof(ch->finished));
		groups = calloc(batch.n + 2, sizeof(StoreGroup));
		/*
		 * A finished session claims its next command here only while no
		 * one is put off for a limit (else a round shares the slots out)
		 * and for a bounded time (renewals, calls and timers wait for the
		 * run to end).
		 */
		carry = !ch->contended && rt_now_us() < deadline && rt_now_us() < ch->next_renew;
		{
			Sess	  **flushed = malloc(sizeof(Sess *) * (batch.n + 1));
			Sess	  **next = malloc(sizeof(Sess *) * (batch.n + 1));
			int			nnext = 0;

			for (int i = 0; i < batch.n; i++)
			{
				Sess	   *s = batch.items[i];

				if (s->rt.epoch < 0)
					continue;
				if (s->rt.pending && json_array_size(s->rt.pending) > 0)
				{
					flushed[ngroups] = s;
					groups[ngroups++].stmts = s->rt.pending;
					s->rt.pending = NULL;
				}
				if (carry && nnext < CLAIM_MAX && may_start(ch, s))
					next[nnext++] = s;
				else
					ch->woken = true;	/* a round claims for it */
			}
			if (nnext > 0)
				groups[ngroups].stmts = json_pack("[o]", claim_many_stmt(ch, next, nnext));
			ch->store->exec_groups(ch->store->ctx, groups, ngroups + (nnext > 0));
			for (int g = 0; g < ngroups; g++)
			{
				if (groups[g].sqlstate[0] != '\0')
				{
					chlog(ch, RT_LOG_DEBUG, "nadi cell: session %s: commit refused (%s): %s",
						  flushed[g]->rt.id, groups[g].sqlstate, groups[g].message);
					flushed[g]->rt.epoch = -1;
				}
			}
			if (nnext > 0)
				claimed(ch, next, nnext, &groups[ngroups]);
			for (int g = 0; g < ngroups + (nnext > 0); g++)
				store_group_free(&groups[g]);
			free(flushed);
			free(next);
		}
		free(groups);
		free(batch.items);
	}
}

/* ---- sessions: take, release, renew ---- */

static void
forget(CellHost *ch, Sess *s)
{
	Sess	  **p = &ch->buckets[id_hash(s->rt.id) % ch->nbuckets];

	call_abort(ch, s);
	if (s->timer_at)
	{
		list_remove(&ch->timers, s);
		ch->stats.waiting_timer--;
	}
	command_end(ch, s);
	list_remove(&ch->stores, s);
	list_remove(&ch->finished, s);
	list_remove(&ch->outputs, s);
	while (*p && *p != s)
		p = &(*p)->hnext;
	if (*p)
		*p = s->hnext;
	ch->nsessions--;
	runtime_session_free(&s->rt);
	free(s->tenant);
	free(s);
}

/* Take a placed session: acquire its lease and rebuild its conversation by replay. */
static Sess *
take(CellHost *ch, const char *id, json_t *row)
{
	const char *args[2] = {id, ch->conf.cell.host_id};
	StoreResult r = exec1(ch, "SELECT epoch, (extract(epoch FROM expires_at - nadi.now()) * 1000)::bigint "
						  "AS expires_in_ms FROM nadi.lease_acquire($1::uuid, $2)", 2, args);
	json_t	   *lease = json_array_get(r.rows, 0);
	StoreResult replay;
	Sess	   *s;
	const char *tenant;

	if (r.sqlstate[0] != '\0' || lease == NULL)
	{
		store_result_free(&r);
		return NULL;
	}
	replay = exec1(ch, "SELECT nadi.session_replay($1::uuid) AS state", 1, args);
	if (replay.sqlstate[0] != '\0' || !json_is_object(json_object_get(json_array_get(replay.rows, 0), "state")))
	{
		/* no conversation to go on from: give the lease back (placed again) rather than start empty */
		char		epoch[32];
		const char *rargs[2] = {id, epoch};
		StoreResult rel;

		chlog(ch, RT_LOG_WARNING, "nadi cell: session %s: could not replay its log: %s", id,
			  replay.sqlstate[0] ? replay.message : "no state");
		snprintf(epoch, sizeof(epoch), "%lld", (long long) json_integer_value(json_object_get(lease, "epoch")));
		rel = exec1(ch, "SELECT epoch FROM nadi.lease_release($1::uuid, $2::bigint)", 2, rargs);
		store_result_free(&rel);
		store_result_free(&replay);
		store_result_free(&r);
		return NULL;
	}
	s = sess_add(ch, id);
	runtime_session_init(&s->rt, id, json_integer_value(json_object_get(lease, "epoch")),
						 json_object_get(json_object_get(json_array_get(replay.rows, 0), "state"), "messages"),
						 json_object_get(row, "policy"),
						 json_string_value(json_object_get(row, "sandbox_url")));
	runtime_session_fork(&s->rt, json_object_get(json_array_get(replay.rows, 0), "state"));
	tenant = json_string_value(json_object_get(row, "tenant_id"));
	s->tenant = strdup(tenant ? tenant : "");
	s->last_active = rt_now_us();
	lease_from_row(s, lease, s->last_active);
	store_result_free(&replay);
	store_result_free(&r);
	return s;
}

/*
 * Let go of a session: its cell.checkpoint event (the conversation it
 * holds, which a test compares with the replay), then the lease.
 */
static void
release(CellHost *ch, Sess *s)
{
	json_t	   *cp = json_pack("{s:O}", "messages", s->rt.messages ? s->rt.messages : json_null());
	char	   *p = json_dumps(cp, JSON_COMPACT);
	char		epoch[32];
	const char *args[4] = {s->rt.id, epoch, "cell.checkpoint", p};
	StoreGroup	g = {0};

	snprintf(epoch, sizeof(epoch), "%lld", (long long) s->rt.epoch);
	call_abort(ch, s);
	if (s->rt.epoch >= 0)
	{
		g.stmts = json_pack("[o, o]",
							store_stmt("SELECT seq FROM nadi.event_append($1::uuid, $2::bigint, $3, $4::jsonb)", 4, args),
							store_stmt("SELECT epoch FROM nadi.lease_release($1::uuid, $2::bigint)", 2, args));
		ch->store->exec_groups(ch->store->ctx, &g, 1);
		store_group_free(&g);
	}
	free(p);
	json_decref(cp);
	forget(ch, s);
}

/*
 * Renew the leases with less than two thirds of their TTL left (one
 * statement, lease_renew_many); with drop, forget the sessions that are not
 * ours any more (not listed, or lost).  A lost session's call in flight is
 * taken back at once.
 */
static void
renew(CellHost *ch, bool drop)
{
	size_t		n;
	Sess	  **all = sess_all(ch, &n);
	int			nd = 0;
	int64_t		now = rt_now_us();
	int64_t		ttl_min = 0;

	for (size_t i = 0; i < n; i++)
	{
		Sess	   *s = all[i];

		if (s->rt.epoch < 0 || (drop && !s->listed))
		{
			if (s->rt.epoch < 0)
				ch->stats.leases_lost++;
			forget(ch, s);
			continue;
		}
		if (s->lease_ttl > 0 && (ttl_min == 0 || s->lease_ttl < ttl_min))
			ttl_min = s->lease_ttl;
		if (s->lease_expires - now < s->lease_ttl * 2 / 3)
			all[nd++] = s;		/* due: all[] is reused for them */
	}
	for (int at = 0; at < nd; at += 10000)
	{
		int			m = nd - at < 10000 ? nd - at : 10000;
		char	   *ids = array_literal(all + at, m, false);
		char	   *epochs = array_literal(all + at, m, true);
		const char *args[3] = {ch->conf.cell.host_id, ids, epochs};
		StoreResult r = exec1(ch, "SELECT ok, expires_in_ms FROM nadi.lease_renew_many($1, $2::uuid[], $3::bigint[])",
							  3, args);

		if (r.sqlstate[0] != '\0')
			chlog(ch, RT_LOG_WARNING, "nadi cell: could not renew leases: %s", r.message);
		else
			for (int i = 0; i < m; i++)
			{
				json_t	   *row = json_array_get(r.rows, i);	/* in our order */

				if (json_is_true(json_object_get(row, "ok")))
					lease_from_row(all[at + i], row, now);
				else
				{
					ch->stats.leases_lost++;
					forget(ch, all[at + i]);
				}
			}
		store_result_free(&r);
		free(ids);
		free(epochs);
	}
	ch->next_renew = now + (ttl_min > 0 ? ttl_min / 6 : ch->conf.cell.heartbeat_ms * MS);
	free(all);
}

/* Register the host, or heartbeat it (registering again if it was lost). */
static void
heartbeat(CellHost *ch)
{
	char		cap[16];
	const char *args[3] = {ch->conf.cell.host_id, ch->conf.cell.address, cap};
	StoreResult r = exec1(ch, "SELECT state FROM nadi.cell_host_heartbeat($1)", 1, args);

	if (r.sqlstate[0] != '\0')
	{
		store_result_free(&r);
		snprintf(cap, sizeof(cap), "%d", ch->conf.cell.capacity);
		r = exec1(ch, "SELECT state FROM nadi.cell_host_register($1, $2, $3::integer)", 3, args);
		if (r.sqlstate[0] != '\0')
			chlog(ch, RT_LOG_WARNING, "nadi cell: could not register host \"%s\": %s",
				  ch->conf.cell.host_id, r.message);
	}
	store_result_free(&r);
}

#define SQL_LIST \
	"SELECT s.session_id, s.tenant_id, s.state, l.epoch, s.policy, " \
	"h.address AS sandbox_url, " \
	"EXISTS (SELECT 1 FROM nadi.command_inbox c WHERE c.session_id = s.session_id " \
	"  AND c.status = 'queued' AND c.available_at <= nadi.now()) AS has_work, " \
	"EXISTS (SELECT 1 FROM nadi.command_inbox c WHERE c.session_id = s.session_id " \
	"  AND c.status IN ('queued', 'running', 'waiting')) AS has_open, " \
	"(SELECT ceil(extract(epoch FROM min(c.available_at) - nadi.now()) * 1000) " \
	"  FROM nadi.command_inbox c WHERE c.session_id = s.session_id " \
	"  AND c.status = 'queued') AS next_due_ms " \
	"FROM nadi.sessions s JOIN nadi.session_leases l USING (session_id) " \
	"LEFT JOIN nadi.sandbox_hosts h ON h.host_id = s.sandbox_host_id " \
	"WHERE s.cell_host_id = $1 AND s.state IN ('placed', 'active', 'terminating') " \
	"AND get_byte(uuid_send(s.session_id), 15) % $2::integer = $3::integer"

/*
 * A placed session: take it (again, if the listing is newer than what we
 * hold).  A terminating one: let it go.  Returns the session if it is ours
 * and goes on, else NULL.  epoch is the listing's.
 */
static Sess *
transit(CellHost *ch, json_t *row, const char *id, const char *state, int64_t epoch)
{
	Sess	   *s = sess_find(ch, id);

	if (strcmp(state, "placed") == 0)
	{
		if (s)
			forget(ch, s);
		if ((s = take(ch, id, row)) != NULL)
			epoch = s->rt.epoch;	/* the listing predates our acquire */
	}
	if (s == NULL || s->rt.epoch != epoch)
		return NULL;			/* not ours (or not any more) */
	s->listed = true;
	if (strcmp(state, "terminating") == 0)
	{
		release(ch, s);
		return NULL;
	}
	return s;
}

/* Does tenant a claim before b: fewer commands under way, else its turn this round? */
static bool
tenant_before(CellHost *ch, const char *a, const char *b)
{
	long		na = tenant_count(ch, a),
				nb = tenant_count(ch, b);

	if (na != nb)
		return na < nb;
	return (id_hash(a) ^ ch->stats.rounds) % 1024 < (id_hash(b) ^ ch->stats.rounds) % 1024;
}

/* Candidates by tenant, and within a tenant the longest idle first. */
static int
by_tenant(const void *a, const void *b)
{
	const Sess *x = *(Sess *const *) a;
	const Sess *y = *(Sess *const *) b;
	int			c = strcmp(x->tenant, y->tenant);

	if (c != 0)
		return c;
	return x->last_active < y->last_active ? -1 : x->last_active > y->last_active;
}

/*
 * Claim for the sessions in work the limits let start, fairly: tenants
 * take turns, one session each, those with the fewest commands under way
 * first, until the cell is full (a tenant at its own limit drops out).
 * One statement per CLAIM_MAX claims.
 */
static void
claim_work(CellHost *ch, SessList *work)
{
	int			n = work->n;
	int		   *next = malloc(sizeof(int) * (n + 1));
	int		   *end = malloc(sizeof(int) * (n + 1));
	int			ntenants = 0;
	int			ng = 0;
	Sess	  **chosen = malloc(sizeof(Sess *) * (n + 1));
	bool		progress = true;

	if (next == NULL || end == NULL || chosen == NULL)
		abort();
	ch->contended = false;
	qsort(work->items, n, sizeof(Sess *), by_tenant);
	for (int i = 0; i < n; i++)
	{
		if (i == 0 || strcmp(work->items[i]->tenant, work->items[i - 1]->tenant) != 0)
			next[ntenants++] = i;
		end[ntenants - 1] = i + 1;
	}
	/* tenants with the fewest commands under way go first; ties take turns from round to round */
	for (int i = 1; i < ntenants; i++)
		for (int j = i; j > 0 && tenant_before(ch, work->items[next[j]]->tenant, work->items[next[j - 1]]->tenant); j--)
		{
			int			t = next[j];

			next[j] = next[j - 1], next[j - 1] = t;
			t = end[j], end[j] = end[j - 1], end[j - 1] = t;
		}
	while (progress)
	{
		progress = false;
		for (int t = 0; t < ntenants; t++)
		{
			const CellHostConfig *c = &ch->conf.cell;

			if (next[t] >= end[t])
				continue;
			if (may_start(ch, work->items[next[t]]))
			{
				chosen[ng++] = work->items[next[t]++];
				progress = true;
			}
			else if (c->max_in_flight > 0 && ch->stats.in_flight >= c->max_in_flight)
			{
				progress = false;	/* the cell is full */
				break;
			}
			else if (c->max_in_flight_tenant > 0 &&
					 tenant_count(ch, work->items[next[t]]->tenant) >= c->max_in_flight_tenant)
				next[t] = end[t];	/* the tenant is at its limit */
			else
			{
				next[t]++;		/* not this one (lost, or not claiming) */
				progress = true;
			}
		}
	}
	for (int at = 0; at < ng; at += CLAIM_MAX)
	{
		int			m = ng - at < CLAIM_MAX ? ng - at : CLAIM_MAX;
		StoreGroup	g = {0};

		g.stmts = json_pack("[o]", claim_many_stmt(ch, chosen + at, m));
		ch->store->exec_groups(ch->store->ctx, &g, 1);
		claimed(ch, chosen + at, m, &g);
		store_group_free(&g);
	}
	free(chosen);
	free(next);
	free(end);
	free(work->items);
	memset(work, 0, sizeof(*work));
}

/* The partition of the host's sessions this cell takes, as query arguments. */
static void
partition_args(CellHost *ch, char *nw, char *ix, const char **args)
{
	snprintf(nw, 16, "%d", ch->conf.cell.workers > 0 ? ch->conf.cell.workers : 1);
	snprintf(ix, 16, "%d", ch->conf.cell.index);
	args[0] = ch->conf.cell.host_id;
	args[1] = nw;
	args[2] = ix;
}

/*
 * A sweep (every heartbeat, and when a delayed command comes due): list
 * every session of this cell, take placed ones, release terminating and
 * idle ones, forget what is no longer ours, claim for the sessions with
 * work.  Its cost grows with the sessions held, so it runs seldom; a
 * wake-up runs a round (below).  Returns the ms until the next sweep.
 */
static long
sweep(CellHost *ch)
{
	const CellHostConfig *c = &ch->conf.cell;
	char		nw[16],
				ix[16];
	const char *args[3];
	StoreResult list;
	json_t	   *row;
	size_t		k;
	int64_t		now = rt_now_us();
	long		sleep_ms = c->heartbeat_ms;
	SessList	work = {0};

	ch->stats.rounds++;
	if (now - ch->last_heartbeat >= c->heartbeat_ms * MS || ch->last_heartbeat == 0)
	{
		heartbeat(ch);
		ch->last_heartbeat = now;
	}
	partition_args(ch, nw, ix, args);
	list = exec1(ch, SQL_LIST, 3, args);
	if (list.sqlstate[0] != '\0')
	{
		chlog(ch, RT_LOG_WARNING, "nadi cell: could not list sessions: %s", list.message);
		store_result_free(&list);
		return 1000;
	}
	for (size_t i = 0; i < ch->nbuckets; i++)
		for (Sess *s = ch->buckets[i]; s; s = s->hnext)
			s->listed = false;

	json_array_foreach(list.rows, k, row)
	{
		const char *id = json_string_value(json_object_get(row, "session_id"));
		const char *state = json_string_value(json_object_get(row, "state"));
		json_t	   *due = json_object_get(row, "next_due_ms");
		Sess	   *s;

		if (id == NULL || state == NULL ||
			(s = transit(ch, row, id, state, json_integer_value(json_object_get(row, "epoch")))) == NULL)
			continue;
		if (json_is_true(json_object_get(row, "has_work")) && !s->busy)
			list_push(&work, s);
		else if (json_is_number(due))
		{
			long		d = (long) json_number_value(due);

			sleep_ms = d < 1 ? 1 : (d < sleep_ms ? d : sleep_ms);
		}
		if (!s->busy && !json_is_true(json_object_get(row, "has_open")) &&
			now - s->last_active >= c->idle_suspend_ms * MS)
			release(ch, s);
	}
	store_result_free(&list);
	claim_work(ch, &work);
	settle(ch);
	renew(ch, true);
	return sleep_ms;
}

/*
 * What a wake-up asks for: the sessions of this cell that were placed or
 * are terminating, and those with a command due.  Both come from indexes
 * of what changes (sessions in transit, open commands), so a round costs
 * the same however many idle sessions the cell holds.
 */
#define SQL_ROUND \
	"SELECT s.session_id, s.tenant_id, s.state::text AS state, l.epoch, s.policy, " \
	"h.address AS sandbox_url " \
	"FROM nadi.sessions s JOIN nadi.session_leases l USING (session_id) " \
	"LEFT JOIN nadi.sandbox_hosts h ON h.host_id = s.sandbox_host_id " \
	"WHERE s.cell_host_id = $1 AND s.state IN ('placed', 'terminating') " \
	"AND get_byte(uuid_send(s.session_id), 15) % $2::integer = $3::integer " \
	"UNION ALL " \
	"SELECT DISTINCT c.session_id, NULL::text, 'work', NULL::bigint, NULL::jsonb, NULL::text " \
	"FROM nadi.command_inbox c JOIN nadi.sessions s USING (session_id) " \
	"WHERE c.status = 'queued' AND c.available_at <= nadi.now() AND s.cell_host_id = $1 " \
	"AND get_byte(uuid_send(c.session_id), 15) % $2::integer = $3::integer"

static void
round_run(CellHost *ch)
{
	char		nw[16],
				ix[16];
	const char *args[3];
	StoreResult r;
	json_t	   *row;
	size_t		k;
	SessList	work = {0};
	bool		unknown = false;

	ch->stats.rounds++;
	partition_args(ch, nw, ix, args);
	r = exec1(ch, SQL_ROUND, 3, args);
	if (r.sqlstate[0] != '\0')
	{
		chlog(ch, RT_LOG_WARNING, "nadi cell: could not look for work: %s", r.message);
		store_result_free(&r);
		return;
	}
	/* sessions in transit first: a placed session may have its first command due */
	json_array_foreach(r.rows, k, row)
	{
		const char *id = json_string_value(json_object_get(row, "session_id"));
		const char *state = json_string_value(json_object_get(row, "state"));

		if (id && state && strcmp(state, "work") != 0)
			(void) transit(ch, row, id, state, json_integer_value(json_object_get(row, "epoch")));
	}
	json_array_foreach(r.rows, k, row)
	{
		const char *id = json_string_value(json_object_get(row, "session_id"));
		const char *state = json_string_value(json_object_get(row, "state"));
		Sess	   *s;

		if (id == NULL || state == NULL || strcmp(state, "work") != 0)
			continue;
		if ((s = sess_find(ch, id)) == NULL)
			unknown = true;		/* e.g. a lease this host holds from before a restart */
		else if (!s->busy)
			list_push(&work, s);
	}
	store_result_free(&r);
	claim_work(ch, &work);
	if (unknown && ch->next_sweep > ch->last_sweep + SWEEP_MIN_MS * MS)
		ch->next_sweep = ch->last_sweep + SWEEP_MIN_MS * MS;	/* at most so often */
}

/* ---- the interface ---- */

static char *
own(OwnedConfig *o, int i, const char *s)
{
	free(o->strs[i]);
	o->strs[i] = s ? strdup(s) : NULL;
	return o->strs[i];
}

void
cellhost_configure(CellHost *ch, const CellHostConfig *cfg, const RuntimeConfig *rcfg)
{
	OwnedConfig *o = &ch->conf;

	o->cell = *cfg;
	o->rt = *rcfg;
	o->cell.host_id = own(o, 0, cfg->host_id);
	o->cell.address = own(o, 1, cfg->address);
	o->rt.sandboxd_url = own(o, 2, rcfg->sandboxd_url);
	o->rt.sandbox_image = own(o, 3, rcfg->sandbox_image);
	o->rt.model.provider = own(o, 4, rcfg->model.provider);
	o->rt.model.url = own(o, 5, rcfg->model.url);
	o->rt.model.model = own(o, 6, rcfg->model.model);
	if (o->cell.heartbeat_ms <= 0)
		o->cell.heartbeat_ms = 2000;
	ch->runtime.cfg = o->rt;
}

CellHost *
cellhost_new(const CellStore *store, const CellHostConfig *cfg, const RuntimeConfig *rcfg)
{
	CellHost   *ch = calloc(1, sizeof(CellHost));

	if (ch == NULL)
		return NULL;
	ch->store = store;
	ch->nbuckets = 1024;
	ch->buckets = calloc(ch->nbuckets, sizeof(Sess *));
	ch->tenants = json_pack("{}");
	ch->epfd = epoll_create1(EPOLL_CLOEXEC);
	ch->multi = curl_multi_init();
	if (ch->buckets == NULL || ch->tenants == NULL || ch->epfd < 0 || ch->multi == NULL)
	{
		if (ch->epfd >= 0)
			close(ch->epfd);
		if (ch->multi)
			curl_multi_cleanup(ch->multi);
		json_decref(ch->tenants);
		free(ch->buckets);
		free(ch);
		return NULL;
	}
	curl_multi_setopt(ch->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
	curl_multi_setopt(ch->multi, CURLMOPT_SOCKETDATA, ch);
	curl_multi_setopt(ch->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
	curl_multi_setopt(ch->multi, CURLMOPT_TIMERDATA, ch);
	/* idle connections kept for reuse: the descriptors belong to calls in flight */
	curl_multi_setopt(ch->multi, CURLMOPT_MAXCONNECTS, 64L);
	runtime_init(&ch->runtime);
	cellhost_configure(ch, cfg, rcfg);
	ch->claiming = true;
	ch->woken = true;
	return ch;
}

int
cellhost_fd(CellHost *ch)
{
	return ch->epfd;
}

void
cellhost_wake(CellHost *ch)
{
	ch->woken = true;
}

long
cellhost_run(CellHost *ch)
{
	int64_t		now,
				next,
				out_next;
	long		ms;

	curl_io(ch);
	out_next = outputs_flush(ch);
	timers_due(ch);
	settle(ch);
	now = rt_now_us();
	if (now >= ch->next_renew)
		renew(ch, false);
	if (now >= ch->next_sweep)
	{
		ch->woken = false;
		ch->last_sweep = now;
		ch->next_sweep = now + (int64_t) sweep(ch) * MS;
	}
	else if (ch->woken)
	{
		ch->woken = false;
		round_run(ch);
		settle(ch);
	}

	now = rt_now_us();
	next = ch->next_sweep < ch->next_renew ? ch->next_sweep : ch->next_renew;
	for (int i = 0; i < ch->timers.n; i++)
		if (ch->timers.items[i]->timer_at < next)
			next = ch->timers.items[i]->timer_at;
	if (ch->curl_deadline && ch->curl_deadline < next)
		next = ch->curl_deadline;
	if (out_next && out_next < next)
		next = out_next;
	if (ch->woken || next <= now)
		return 0;
	ms = (long) ((next - now + MS - 1) / MS);
	return ms;
}

void
cellhost_stop_claiming(CellHost *ch)
{
	ch->claiming = false;
}

/* fn for every session (fn may drop it) */
static void
each_session(CellHost *ch, void (*fn) (CellHost *, Sess *))
{
	size_t		n;
	Sess	  **all = sess_all(ch, &n);

	for (size_t i = 0; i < n; i++)
		fn(ch, all[i]);
	free(all);
}

void
cellhost_release_all(CellHost *ch)
{
	each_session(ch, release);
}

void
cellhost_stats(CellHost *ch, CellHostStats *out)
{
	const char *t;
	json_t	   *v;

	*out = ch->stats;
	out->sessions = (long) ch->nsessions;
	out->tenants_in_flight = (long) json_object_size(ch->tenants);
	out->tenant_max_in_flight = 0;
	json_object_foreach(ch->tenants, t, v)
		if (json_integer_value(v) > out->tenant_max_in_flight)
		out->tenant_max_in_flight = json_integer_value(v);
}

Runtime *
cellhost_runtime(CellHost *ch)
{
	return &ch->runtime;
}

void
cellhost_free(CellHost *ch)
{
	each_session(ch, forget);
	curl_multi_cleanup(ch->multi);
	close(ch->epfd);
	json_decref(ch->tenants);
	for (size_t i = 0; i < sizeof(ch->conf.strs) / sizeof(ch->conf.strs[0]); i++)
		free(ch->conf.strs[i]);
	free(ch->stores.items);
	free(ch->finished.items);
	free(ch->timers.items);
	free(ch->outputs.items);
	free(ch->buckets);
	free(ch);
}
