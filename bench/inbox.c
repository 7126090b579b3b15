/*
 * inbox.c — load generator for the nadi command inbox (bench/inbox runs it).
 *
 * For C sessions it starts C producer threads and C cell threads, each with
 * a connection of its own:
 *
 *   producer i  enqueues into session i, one command per transaction
 *               (nadi.command_enqueue), and notes the time the commit came
 *               back.  It keeps at most WINDOW commands of its session open.
 *   cell i      holds the lease of session i and LISTENs on nadi_events.  In
 *               one transaction it completes the command it ran last and
 *               claims the next (nadi.command_complete + nadi.command_claim,
 *               sent as one pipeline closed by one Sync: one round trip, one
 *               commit).  With nothing to claim it sleeps on its socket until
 *               a notification from another backend names its session (with
 *               -n: no LISTEN, it polls every millisecond, for servers run
 *               with nadi.notify off).
 *
 * It prints one line of key=value pairs: commands completed per second
 * after the warm-up, and the enqueue→claim latency (claim commit returned
 * minus enqueue commit returned, both CLOCK_MONOTONIC in this process).
 *
 * With -W the server's own workers do the cell's part (bench/inbox
 * --workers): the broker places the sessions, the embedded cell ("nadi
 * cell" background workers) takes their leases, claims and completes.  The
 * process then has only producers, which enqueue `message` commands (the
 * builtin model answers "You said: x", no tool call), and one watcher
 * connection that LISTENs on nadi_events and reads, per session, the oldest
 * open command, so each producer knows how many of its commands are still
 * open.  Rates and latencies come from the server's own records: the
 * command.completed events, and each command.started event's created_at
 * minus its command's created_at.
 *
 * With -K the process measures recovery from a kill -9 of a `nadi cell`
 * worker: a steady trickle of commands into fresh sessions, the kill, and
 * the time until every session completes commands again (see kill_main).
 *
 * usage: inbox -d CONNINFO -c CLIENTS [-t SECONDS] [-w WARMUP] [-q WINDOW] [-n] [-s]
 *        inbox -W -d CONNINFO -c CLIENTS [-t SECONDS] [-w WARMUP] [-q WINDOW] [-s]
 *        inbox -K -d CONNINFO -c SESSIONS [-t TIMEOUT] [-w BEFORE] [-r INTERVAL_MS]
 */
#define _DEFAULT_SOURCE
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#define CELL_HOST "bench-cell"
#define TENANT "bench"
#define MAX_WAITS 64

static const char *const SQL_ENQUEUE =
	"SELECT command_id FROM nadi.command_enqueue($1::uuid, 'tool', '{\"name\":\"noop\"}')";
static const char *const SQL_COMPLETE =
	"SELECT command_id FROM nadi.command_complete($1::uuid, $2::bigint, $3::bigint, '{}')";
static const char *const SQL_ENQUEUE_MESSAGE =
	"SELECT command_id FROM nadi.command_enqueue($1::uuid, 'message', '{\"text\":\"x\"}')";
static const char *const SQL_CLAIM =
	"SELECT command_id FROM nadi.command_claim($1::uuid, $2::bigint)";

/* ---------------------------------------------------------------------------
 * Small helpers
 * ------------------------------------------------------------------------- */

static void
die(const char *fmt, ...)
{
	va_list		ap;

	fputs("inbox: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static void *
xcalloc(size_t n, size_t size)
{
	void	   *p = calloc(n ? n : 1, size);

	if (p == NULL)
		die("out of memory");
	return p;
}

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* A growable array of (command id, monotonic time) pairs. */
typedef struct Samples
{
	long long  *ids;
	double	   *at;
	size_t		n;
	size_t		cap;
} Samples;

static void
samples_add(Samples *s, long long id, double at)
{
	if (s->n == s->cap)
	{
		size_t		cap = s->cap ? s->cap * 2 : 1024;
		long long  *ids = realloc(s->ids, cap * sizeof(*ids));
		double	   *times;

		if (ids == NULL)
			die("out of memory");
		s->ids = ids;
		times = realloc(s->at, cap * sizeof(*times));
		if (times == NULL)
			die("out of memory");
		s->at = times;
		s->cap = cap;
	}
	s->ids[s->n] = id;
	s->at[s->n] = at;
	s->n++;
}

static void
samples_free(Samples *s)
{
	free(s->ids);
	free(s->at);
	memset(s, 0, sizeof(*s));
}

/* ---------------------------------------------------------------------------
 * The libpq adapter: every call either succeeds or exits with the server's
 * message and what we were doing.
 * ------------------------------------------------------------------------- */

static void
quiet_notices(void *arg, const char *message)
{
	(void) arg;
	(void) message;
}

/* A connection (maybe a failed one) that does not print server notices. */
static PGconn *
connect_quiet(const char *conninfo)
{
	PGconn	   *conn = PQconnectdb(conninfo);

	PQsetNoticeProcessor(conn, quiet_notices, NULL);
	return conn;
}

static PGconn *
db_connect(const char *conninfo, const char *who)
{
	PGconn	   *conn = PQconnectdb(conninfo);

	if (PQstatus(conn) != CONNECTION_OK)
		die("%s: cannot connect: %s", who, PQerrorMessage(conn));
	/* -K: "terminating connection because of crash of another server process" is expected */
	PQsetNoticeProcessor(conn, quiet_notices, NULL);
	return conn;
}

static void
db_check(PGconn *conn, PGresult *res, ExecStatusType want, const char *what)
{
	if (res == NULL)
		die("%s: %s", what, PQerrorMessage(conn));
	if (PQresultStatus(res) != want)
	{
		const char *msg = PQresultErrorMessage(res);

		die("%s: %s", what, msg && *msg ? msg : PQresStatus(PQresultStatus(res)));
	}
}

/* Run a statement (parameters as text) and return its result; exits on error. */
static PGresult *
db_exec(PGconn *conn, const char *sql, int nparams, const char *const *params,
		ExecStatusType want)
{
	PGresult   *res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);

	db_check(conn, res, want, sql);
	return res;
}

/* Run a statement that must return exactly one value; copy it into out. */
static void
db_value(PGconn *conn, const char *sql, int nparams, const char *const *params,
		 char *out, size_t outlen)
{
	PGresult   *res = db_exec(conn, sql, nparams, params, PGRES_TUPLES_OK);

	if (PQntuples(res) != 1 || PQnfields(res) < 1)
		die("%s: expected one row, got %d", sql, PQntuples(res));
	snprintf(out, outlen, "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
}

static void
db_prepare(PGconn *conn, const char *name, const char *sql, int nparams)
{
	PGresult   *res = PQprepare(conn, name, sql, nparams, NULL);

	db_check(conn, res, PGRES_COMMAND_OK, sql);
	PQclear(res);
}

/* Next result of a pipeline, which must have the given status. */
static PGresult *
db_pipeline_result(PGconn *conn, ExecStatusType want, const char *what)
{
	PGresult   *res = PQgetResult(conn);

	db_check(conn, res, want, what);
	return res;
}

/* Read past the NULL that ends each query's results in pipeline mode. */
static void
db_pipeline_end_query(PGconn *conn, const char *what)
{
	PGresult   *res = PQgetResult(conn);

	if (res != NULL)
		die("%s: more results than expected", what);
}

/* ---------------------------------------------------------------------------
 * The run
 * ------------------------------------------------------------------------- */

typedef struct Session
{
	int			index;
	char		id[40];
	char		epoch[24];

	/* producer ↔ cell: how many commands are open (enqueued, not completed) */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	long		open;

	Samples		enqueued;		/* producer: id, enqueue commit returned (-W: under mu) */
	size_t		done;			/* -W, under mu: the first `done` enqueued are completed */
	Samples		claimed;		/* cell only: id, claim commit returned */
	long		completed_in_window;	/* cell only */
	long		completed;		/* cell only */
	long		wakeups;		/* cell only: waits that ended in a notification */
	long		empty_claims;	/* cell only: claims that found nothing */
} Session;

typedef struct WaitCount
{
	char		name[96];
	long		count;
} WaitCount;

static const char *conninfo;
static int	window = 64;
static bool listen_notify = true;
static bool workers_mode = false;
static Session *all_sessions;
static int	nsessions;
static double warm_end;
static double run_end;
static atomic_int stop;

static void
session_wait_for_room(Session *s)
{
	pthread_mutex_lock(&s->mu);
	if (workers_mode)
		while ((long) (s->enqueued.n - s->done) >= window && !atomic_load(&stop))
			pthread_cond_wait(&s->cv, &s->mu);
	else
		while (s->open >= window && !atomic_load(&stop))
			pthread_cond_wait(&s->cv, &s->mu);
	pthread_mutex_unlock(&s->mu);
}

static void *
producer_main(void *arg)
{
	Session    *s = arg;
	char		who[32];
	PGconn	   *conn;
	const char *params[1] = {s->id};

	snprintf(who, sizeof(who), "producer %d", s->index);
	conn = db_connect(conninfo, who);
	db_prepare(conn, "enqueue", workers_mode ? SQL_ENQUEUE_MESSAGE : SQL_ENQUEUE, 1);
	while (!atomic_load(&stop))
	{
		PGresult   *res;
		double		t;

		session_wait_for_room(s);
		if (atomic_load(&stop))
			break;
		res = PQexecPrepared(conn, "enqueue", 1, params, NULL, NULL, 0);
		t = now_s();
		db_check(conn, res, PGRES_TUPLES_OK, "nadi.command_enqueue");
		pthread_mutex_lock(&s->mu);
		samples_add(&s->enqueued, atoll(PQgetvalue(res, 0, 0)), t);
		s->open++;
		pthread_mutex_unlock(&s->mu);
		PQclear(res);
	}
	PQfinish(conn);
	return NULL;
}

/*
 * One cell transaction: complete `prev` (if any) and claim the next command.
 * Returns the claimed command id, or 0 when there was nothing to claim.
 */
static long long
cell_step(PGconn *conn, Session *s, const char *prev)
{
	const char *complete_params[3] = {s->id, prev, s->epoch};
	const char *claim_params[2] = {s->id, s->epoch};
	long long	claimed = 0;
	PGresult   *res;

	if (prev && !PQsendQueryPrepared(conn, "complete", 3, complete_params, NULL, NULL, 0))
		die("cell %d: nadi.command_complete: %s", s->index, PQerrorMessage(conn));
	if (!PQsendQueryPrepared(conn, "claim", 2, claim_params, NULL, NULL, 0))
		die("cell %d: nadi.command_claim: %s", s->index, PQerrorMessage(conn));
	if (!PQpipelineSync(conn))
		die("cell %d: sync: %s", s->index, PQerrorMessage(conn));

	if (prev)
	{
		res = db_pipeline_result(conn, PGRES_TUPLES_OK, "nadi.command_complete");
		PQclear(res);
		db_pipeline_end_query(conn, "nadi.command_complete");
	}
	res = db_pipeline_result(conn, PGRES_TUPLES_OK, "nadi.command_claim");
	if (PQntuples(res) == 1)
		claimed = atoll(PQgetvalue(res, 0, 0));
	PQclear(res);
	db_pipeline_end_query(conn, "nadi.command_claim");
	res = db_pipeline_result(conn, PGRES_PIPELINE_SYNC, "commit");
	PQclear(res);
	return claimed;
}

/*
 * Take the notifications read so far; true if one names this session and
 * came from another backend (our own commits notify us too: skip those).
 */
static bool
cell_take_notifies(PGconn *conn, const Session *s)
{
	PGnotify   *n;
	bool		mine = false;

	while ((n = PQnotifies(conn)) != NULL)
	{
		if (n->be_pid != PQbackendPID(conn) && strcmp(n->extra, s->id) == 0)
			mine = true;
		PQfreemem(n);
	}
	return mine;
}

/* Sleep on the socket until a notification names this session, or stop. */
static void
cell_wait(PGconn *conn, Session *s)
{
	if (!listen_notify)
	{
		struct timespec pause = {.tv_sec = 0, .tv_nsec = 1000 * 1000};

		nanosleep(&pause, NULL);
		return;
	}
	while (!atomic_load(&stop))
	{
		struct pollfd pfd = {.fd = PQsocket(conn), .events = POLLIN};
		int			rc;

		if (!PQconsumeInput(conn))
			die("cell %d: reading notifications: %s", s->index, PQerrorMessage(conn));
		if (cell_take_notifies(conn, s))
		{
			s->wakeups++;
			return;
		}
		rc = poll(&pfd, 1, 50);
		if (rc < 0 && errno != EINTR)
			die("cell %d: poll: %s", s->index, strerror(errno));
	}
}

static void *
cell_main(void *arg)
{
	Session    *s = arg;
	char		who[32];
	char		prev[24] = "";
	PGconn	   *conn;
	PGresult   *res;

	snprintf(who, sizeof(who), "cell %d", s->index);
	conn = db_connect(conninfo, who);
	if (listen_notify)
	{
		res = db_exec(conn, "LISTEN nadi_events", 0, NULL, PGRES_COMMAND_OK);
		PQclear(res);
	}
	db_prepare(conn, "complete", SQL_COMPLETE, 3);
	db_prepare(conn, "claim", SQL_CLAIM, 2);
	if (!PQenterPipelineMode(conn))
		die("cell %d: cannot enter pipeline mode: %s", s->index, PQerrorMessage(conn));

	while (!atomic_load(&stop))
	{
		long long	claimed;
		double		t;

		/* notifications read before this step are covered by it */
		cell_take_notifies(conn, s);
		claimed = cell_step(conn, s, prev[0] ? prev : NULL);
		t = now_s();
		if (prev[0])
		{
			s->completed++;
			if (t >= warm_end && t < run_end)
				s->completed_in_window++;
			pthread_mutex_lock(&s->mu);
			s->open--;
			pthread_cond_signal(&s->cv);
			pthread_mutex_unlock(&s->mu);
			prev[0] = '\0';
		}
		if (claimed)
		{
			samples_add(&s->claimed, claimed, t);
			snprintf(prev, sizeof(prev), "%lld", claimed);
		}
		else
		{
			s->empty_claims++;
			if (!cell_take_notifies(conn, s))
				cell_wait(conn, s);
		}
	}
	if (!PQexitPipelineMode(conn))
		die("cell %d: cannot leave pipeline mode: %s", s->index, PQerrorMessage(conn));
	PQfinish(conn);
	return NULL;
}

/*
 * Optional (-s): sample what the server's client backends wait on, every
 * 10 ms through the measured window, to see where the time goes.
 */
typedef struct Sampler
{
	WaitCount	waits[MAX_WAITS];
	int			nwaits;
	long		samples;
} Sampler;

static void *
sampler_main(void *arg)
{
	Sampler    *sm = arg;
	PGconn	   *conn = db_connect(conninfo, "sampler");
	const char *sql =
		"SELECT backend_type || ' ' || coalesce(wait_event_type || ':' || wait_event, 'CPU'), count(*) "
		"FROM pg_stat_activity WHERE (backend_type IN ('client backend', 'nadi notifier', 'nadi broker') "
		"AND state = 'active' OR backend_type = 'nadi cell' AND state IS DISTINCT FROM 'idle') "
		"AND pid <> pg_backend_pid() GROUP BY 1";

	while (!atomic_load(&stop))
	{
		struct timespec pause = {.tv_sec = 0, .tv_nsec = 10 * 1000 * 1000};
		double		t = now_s();

		if (t >= warm_end && t < run_end)
		{
			PGresult   *res = db_exec(conn, sql, 0, NULL, PGRES_TUPLES_OK);

			for (int r = 0; r < PQntuples(res); r++)
			{
				const char *name = PQgetvalue(res, r, 0);
				int			i;

				for (i = 0; i < sm->nwaits && strcmp(sm->waits[i].name, name) != 0; i++)
					;
				if (i == sm->nwaits)
				{
					if (sm->nwaits == MAX_WAITS)
						continue;
					snprintf(sm->waits[i].name, sizeof(sm->waits[i].name), "%s", name);
					sm->nwaits++;
				}
				sm->waits[i].count += atol(PQgetvalue(res, r, 1));
			}
			PQclear(res);
			sm->samples++;
		}
		nanosleep(&pause, NULL);
	}
	PQfinish(conn);
	return NULL;
}

static int
cmp_double(const void *a, const void *b)
{
	double		x = *(const double *) a;
	double		y = *(const double *) b;

	return (x > y) - (x < y);
}

static int
cmp_wait(const void *a, const void *b)
{
	const WaitCount *x = a;
	const WaitCount *y = b;

	return (y->count > x->count) - (y->count < x->count);
}

/* Nearest-rank percentile of a sorted array. */
static double
percentile(const double *v, size_t n, double p)
{
	size_t		rank;

	if (n == 0)
		return 0;
	rank = (size_t) (p * (double) n + 0.999999);
	if (rank < 1)
		rank = 1;
	return v[rank - 1];
}

/*
 * Latencies (ms) of the commands claimed in the window: claims and enqueues
 * of a session both come in command id order, so merge them.
 */
static double *
latencies(Session *sessions, int n, size_t *count)
{
	size_t		total = 0;
	size_t		k = 0;
	double	   *out;

	for (int i = 0; i < n; i++)
		total += sessions[i].claimed.n;
	out = xcalloc(total, sizeof(double));
	for (int i = 0; i < n; i++)
	{
		Samples    *e = &sessions[i].enqueued;
		Samples    *c = &sessions[i].claimed;
		size_t		j = 0;

		for (size_t m = 0; m < c->n; m++)
		{
			while (j < e->n && e->ids[j] < c->ids[m])
				j++;
			if (j == e->n || e->ids[j] != c->ids[m])
				die("session %s: command %lld was claimed but not enqueued by this run",
					sessions[i].id, c->ids[m]);
			if (c->at[m] >= warm_end && c->at[m] < run_end)
				out[k++] = (c->at[m] - e->at[j]) * 1000.0;
		}
	}
	*count = k;
	return out;
}

/* Register the cell host and make `n` sessions this process holds the leases of. */
static void
setup_sessions(Session *sessions, int n)
{
	PGconn	   *conn = db_connect(conninfo, "setup");
	PGresult   *res;

	res = db_exec(conn, "SELECT nadi.cell_host_register('" CELL_HOST "', 'local', 100000)",
				  0, NULL, PGRES_TUPLES_OK);
	PQclear(res);
	for (int i = 0; i < n; i++)
	{
		Session    *s = &sessions[i];
		const char *params[1] = {s->id};

		s->index = i;
		pthread_mutex_init(&s->mu, NULL);
		pthread_cond_init(&s->cv, NULL);
		db_value(conn, "SELECT session_id FROM nadi.session_create('" TENANT "')", 0, NULL,
				 s->id, sizeof(s->id));
		res = db_exec(conn, "SELECT state FROM nadi.place($1::uuid)", 1, params, PGRES_TUPLES_OK);
		PQclear(res);
		db_value(conn, "SELECT epoch FROM nadi.lease_acquire($1::uuid, '" CELL_HOST "')",
				 1, params, s->epoch, sizeof(s->epoch));
	}
	PQfinish(conn);
}

/* ---------------------------------------------------------------------------
 * -W: the server's workers are the cell
 * ------------------------------------------------------------------------- */

/* '{id,id,...}': the sessions as a uuid[] literal. */
static char *
session_array(Session *sessions, int n)
{
	char	   *out = xcalloc((size_t) n + 1, 40);
	size_t		len = 0;

	out[len++] = '{';
	for (int i = 0; i < n; i++)
		len += (size_t) sprintf(out + len, "%s%s", i ? "," : "", sessions[i].id);
	out[len++] = '}';
	out[len] = '\0';
	return out;
}

/*
 * The watcher: one connection LISTENs on nadi_events (the notifier names
 * each session with new events) and, after every batch of notifications or
 * 20 ms without one, reads the oldest open command of every session.  A
 * session runs its commands in order, so every command this process
 * enqueued before that one is completed.
 */
static void *
watcher_main(void *arg)
{
	PGconn	   *conn = db_connect(conninfo, "watcher");
	char	   *ids = session_array(all_sessions, nsessions);
	const char *params[1] = {ids};
	size_t	   *before = xcalloc((size_t) nsessions, sizeof(size_t));
	PGresult   *res;

	(void) arg;
	res = db_exec(conn, "LISTEN nadi_events", 0, NULL, PGRES_COMMAND_OK);
	PQclear(res);
	db_prepare(conn, "oldest_open",
			   "SELECT session_id::text, min(command_id) FROM nadi.command_inbox "
			   "WHERE session_id = ANY($1::uuid[]) AND status IN ('queued', 'running', 'waiting') "
			   "GROUP BY 1", 1);
	while (!atomic_load(&stop))
	{
		struct pollfd pfd = {.fd = PQsocket(conn), .events = POLLIN};
		PGnotify   *n;

		for (int i = 0; i < nsessions; i++)
		{
			pthread_mutex_lock(&all_sessions[i].mu);
			before[i] = all_sessions[i].enqueued.n;
			pthread_mutex_unlock(&all_sessions[i].mu);
		}
		res = PQexecPrepared(conn, "oldest_open", 1, params, NULL, NULL, 0);
		db_check(conn, res, PGRES_TUPLES_OK, "watcher: oldest open commands");
		for (int i = 0; i < nsessions; i++)
		{
			Session    *s = &all_sessions[i];
			long long	oldest = -1;
			size_t		done;

			for (int r = 0; r < PQntuples(res); r++)
				if (strcmp(PQgetvalue(res, r, 0), s->id) == 0)
					oldest = atoll(PQgetvalue(res, r, 1));
			pthread_mutex_lock(&s->mu);
			if (oldest < 0)
				done = before[i];	/* nothing open that the snapshot could see */
			else
				for (done = s->done; done < s->enqueued.n && s->enqueued.ids[done] < oldest; done++)
					;
			if (done > s->done)
			{
				s->done = done;
				pthread_cond_signal(&s->cv);
			}
			pthread_mutex_unlock(&s->mu);
		}
		PQclear(res);

		/* wait for the next notification (or 20 ms), then take them all */
		if (poll(&pfd, 1, 20) < 0 && errno != EINTR)
			die("watcher: poll: %s", strerror(errno));
		if (!PQconsumeInput(conn))
			die("watcher: reading notifications: %s", PQerrorMessage(conn));
		while ((n = PQnotifies(conn)) != NULL)
			PQfreemem(n);
	}
	free(before);
	free(ids);
	PQfinish(conn);
	return NULL;
}

/*
 * Create `n` sessions and let the server's broker place them and its cell
 * take them: wait until every one is active under a lease of CELL_HOST.
 */
static void
setup_worker_sessions(PGconn *conn, Session *sessions, int n, double timeout_s)
{
	char	   *ids;
	const char *params[1];
	char		count[16];
	double		deadline = now_s() + timeout_s;

	for (int i = 0; i < n; i++)
	{
		Session    *s = &sessions[i];

		s->index = i;
		pthread_mutex_init(&s->mu, NULL);
		pthread_cond_init(&s->cv, NULL);
		db_value(conn, "SELECT session_id FROM nadi.session_create('" TENANT "')", 0, NULL,
				 s->id, sizeof(s->id));
	}
	ids = session_array(sessions, n);
	params[0] = ids;
	for (;;)
	{
		struct timespec pause = {.tv_sec = 0, .tv_nsec = 20 * 1000 * 1000};

		db_value(conn, "SELECT count(*) FROM nadi.sessions s JOIN nadi.session_leases l USING (session_id) "
				 "WHERE s.session_id = ANY($1::uuid[]) AND s.state = 'active' "
				 "AND l.cell_host_id = '" CELL_HOST "'", 1, params, count, sizeof(count));
		if (atoi(count) == n)
			break;
		if (now_s() > deadline)
			die("only %s of %d sessions became active on cell host " CELL_HOST " within %.0f s: "
				"are the broker and the cell workers running (nadi.cell_host_id = '" CELL_HOST "')?",
				count, n, timeout_s);
		nanosleep(&pause, NULL);
	}
	free(ids);
}

/*
 * The server-side figures of a -W run, over [t0, t1) of the server's clock:
 * command.completed events per second (and per commit: the cell batches
 * sessions: the events of one commit share its transaction's start time),
 * and enqueue→start latency: the command.started event's created_at minus
 * the command's created_at (both the start times of their transactions;
 * command_inbox.claimed_at is the same instant, but completion clears it).
 */
static void
workers_report(PGconn *conn, int clients, const char *t0, const char *t1, double duration,
			   long enqueued)
{
	char	   *ids = session_array(all_sessions, nsessions);
	const char *params[3] = {ids, t0, t1};
	PGresult   *res;
	long		completed;
	long		commits;

	res = db_exec(conn,
				  "SELECT count(*), count(DISTINCT created_at) FROM nadi.events "
				  "WHERE session_id = ANY($1::uuid[]) AND kind = 'command.completed' "
				  "AND created_at >= $2::timestamptz AND created_at < $3::timestamptz",
				  3, params, PGRES_TUPLES_OK);
	completed = atol(PQgetvalue(res, 0, 0));
	commits = atol(PQgetvalue(res, 0, 1));
	PQclear(res);
	res = db_exec(conn,
				  "SELECT count(*), "
				  "coalesce(round((percentile_disc(0.5) WITHIN GROUP (ORDER BY lat))::numeric, 2), 0), "
				  "coalesce(round((percentile_disc(0.99) WITHIN GROUP (ORDER BY lat))::numeric, 2), 0), "
				  "coalesce(round(max(lat)::numeric, 2), 0) "
				  "FROM (SELECT extract(epoch FROM e.created_at - c.created_at) * 1000 AS lat "
				  "      FROM nadi.events e JOIN nadi.command_inbox c USING (session_id, command_id) "
				  "      WHERE e.session_id = ANY($1::uuid[]) AND e.kind = 'command.started' "
				  "      AND e.created_at >= $2::timestamptz AND e.created_at < $3::timestamptz) l",
				  3, params, PGRES_TUPLES_OK);
	printf("clients=%d seconds=%.3f completed=%ld commands_per_s=%.1f commits=%ld "
		   "commands_per_commit=%.2f enqueued_total=%ld latency_samples=%s p50_ms=%s p99_ms=%s max_ms=%s\n",
		   clients, duration, completed, (double) completed / duration, commits,
		   commits ? (double) completed / (double) commits : 0.0, enqueued,
		   PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2), PQgetvalue(res, 0, 3));
	PQclear(res);
	free(ids);
}

/* ---------------------------------------------------------------------------
 * -K: recovery from kill -9 of a cell worker
 * ------------------------------------------------------------------------- */

static double
real_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

typedef struct Trickle
{
	double		interval_s;
	long		ok;
	long		failed;
	double		first_failure;	/* CLOCK_REALTIME; 0: none */
	double		back_at;		/* first success after the first failure */
} Trickle;

/*
 * One command into the next session every interval, over one connection
 * that is opened again whenever the server drops it (kill -9 of any backend
 * makes the postmaster end them all and recover).
 */
static void *
trickle_main(void *arg)
{
	Trickle    *t = arg;
	PGconn	   *conn = NULL;
	long		k = 0;

	while (!atomic_load(&stop))
	{
		struct timespec pause = {.tv_sec = 0, .tv_nsec = (long) (t->interval_s * 1e9)};
		bool		ok = false;

		if (conn == NULL || PQstatus(conn) != CONNECTION_OK)
		{
			if (conn)
				PQfinish(conn);
			conn = connect_quiet(conninfo);
		}
		if (PQstatus(conn) == CONNECTION_OK)
		{
			const char *params[1] = {all_sessions[k % nsessions].id};
			PGresult   *res = PQexecParams(conn, SQL_ENQUEUE_MESSAGE, 1, NULL, params, NULL, NULL, 0);

			ok = PQresultStatus(res) == PGRES_TUPLES_OK;
			PQclear(res);
		}
		if (ok)
		{
			t->ok++;
			k++;
			if (t->first_failure > 0 && t->back_at == 0)
				t->back_at = real_s();
		}
		else
		{
			t->failed++;
			if (t->first_failure == 0)
				t->first_failure = real_s();
			pause.tv_nsec = 10 * 1000 * 1000;
		}
		nanosleep(&pause, NULL);
	}
	if (conn)
		PQfinish(conn);
	return NULL;
}

/* Connect, retrying while the server recovers from a crash. */
static PGconn *
db_connect_retry(const char *who, double timeout_s)
{
	double		deadline = now_s() + timeout_s;

	for (;;)
	{
		PGconn	   *conn = connect_quiet(conninfo);
		struct timespec pause = {.tv_sec = 0, .tv_nsec = 20 * 1000 * 1000};

		if (PQstatus(conn) == CONNECTION_OK)
			return conn;
		if (now_s() > deadline)
			die("%s: cannot connect: %s", who, PQerrorMessage(conn));
		PQfinish(conn);
		nanosleep(&pause, NULL);
	}
}

/*
 * Fresh sessions, active on the server's cell; a trickle of commands into
 * them; after `before` seconds kill -9 the first `nadi cell` worker.  The
 * postmaster then ends every backend and recovers; the cells that come back
 * find the sessions leased to epochs no process holds any more, so they run
 * again once the broker has reaped the expired leases and the cell has
 * taken them with the next epoch.  Reports, on the server's clock, the time
 * from the kill to the first command.completed of any of the sessions and
 * to the first of every one of them, and checks that no command in the
 * whole database completed twice.
 */
static int
kill_main(int n, double before, double timeout_s, double interval_ms)
{
	PGconn	   *conn = db_connect(conninfo, "setup");
	Trickle		trickle = {.interval_s = interval_ms / 1000.0};
	pthread_t	trickle_thread;
	char		pid[16];
	char		kill_at[32];
	char		count[16];
	char	   *ids;
	const char *params[2];
	PGresult   *res;
	double		deadline;
	struct timespec pause = {.tv_sec = 0, .tv_nsec = 50 * 1000 * 1000};
	int			back = 0;

	nsessions = n;
	all_sessions = xcalloc((size_t) n, sizeof(Session));
	setup_worker_sessions(conn, all_sessions, n, 60);
	ids = session_array(all_sessions, n);
	if (pthread_create(&trickle_thread, NULL, trickle_main, &trickle) != 0)
		die("cannot start the trickle thread");
	{
		struct timespec ts = {.tv_sec = (time_t) before,
		.tv_nsec = (long) ((before - (double) (time_t) before) * 1e9)};

		nanosleep(&ts, NULL);
	}
	db_value(conn, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'nadi cell' ORDER BY pid LIMIT 1",
			 0, NULL, pid, sizeof(pid));
	snprintf(kill_at, sizeof(kill_at), "%.6f", real_s());
	if (kill((pid_t) atoi(pid), SIGKILL) != 0)
		die("kill -9 %s: %s", pid, strerror(errno));
	PQfinish(conn);

	/* until every session has completed a command after the kill */
	params[0] = ids;
	params[1] = kill_at;
	deadline = now_s() + timeout_s;
	conn = NULL;
	while (now_s() < deadline)
	{
		if (conn == NULL || PQstatus(conn) != CONNECTION_OK)
		{
			if (conn)
				PQfinish(conn);
			conn = connect_quiet(conninfo);
		}
		if (PQstatus(conn) == CONNECTION_OK)
		{
			res = PQexecParams(conn, "SELECT count(DISTINCT session_id) FROM nadi.events "
							   "WHERE session_id = ANY($1::uuid[]) AND kind = 'command.completed' "
							   "AND created_at > to_timestamp($2::float8)", 2, NULL, params, NULL, NULL, 0);
			if (PQresultStatus(res) == PGRES_TUPLES_OK)
				back = atoi(PQgetvalue(res, 0, 0));
			PQclear(res);
			if (back == n)
				break;
		}
		nanosleep(&pause, NULL);
	}
	/* a little more trickle after recovery: ordinary running again */
	pause.tv_sec = 1;
	pause.tv_nsec = 0;
	nanosleep(&pause, NULL);
	atomic_store(&stop, 1);
	pthread_join(trickle_thread, NULL);
	if (conn)
		PQfinish(conn);
	conn = db_connect_retry("report", 30);

	/* let what was enqueued drain (bounded), then look */
	deadline = now_s() + 10;
	do
	{
		db_value(conn, "SELECT count(*) FROM nadi.command_inbox WHERE session_id = ANY($1::uuid[]) "
				 "AND status IN ('queued', 'running', 'waiting')", 1, params, count, sizeof(count));
		if (atoi(count) == 0)
			break;
		nanosleep(&pause, NULL);
	} while (now_s() < deadline);

	res = db_exec(conn,
				  "WITH after AS ("
				  "  SELECT session_id, min(created_at) AS first FROM nadi.events "
				  "  WHERE session_id = ANY($1::uuid[]) AND kind = 'command.completed' "
				  "  AND created_at > to_timestamp($2::float8) GROUP BY session_id) "
				  "SELECT (SELECT count(*) FROM after), "
				  "  coalesce(round(extract(epoch FROM min(first) - to_timestamp($2::float8))::numeric, 3)::text, '-'), "
				  "  coalesce(round(extract(epoch FROM max(first) - to_timestamp($2::float8))::numeric, 3)::text, '-'), "
				  "  (SELECT count(*) FROM (SELECT 1 FROM nadi.events WHERE kind = 'command.completed' "
				  "     GROUP BY session_id, command_id HAVING count(*) > 1) d), "
				  "  (SELECT count(*) FROM nadi.command_inbox WHERE session_id = ANY($1::uuid[]) AND attempts > 1), "
				  "  (SELECT count(*) FROM nadi.command_inbox WHERE session_id = ANY($1::uuid[])), "
				  "  (SELECT min(epoch) FROM nadi.session_leases WHERE session_id = ANY($1::uuid[])), "
				  "  current_setting('nadi.lease_ttl') "
				  "FROM after",
				  2, params, PGRES_TUPLES_OK);
	printf("sessions=%d killed_pid=%s lease_ttl=%s sessions_back=%s first_completed_s=%s "
		   "all_sessions_completed_s=%s enqueue_outage_s=%.3f enqueued=%ld "
		   "commands=%s open_left=%s requeued=%s min_epoch=%s completed_twice=%s\n",
		   n, pid, PQgetvalue(res, 0, 7), PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1),
		   PQgetvalue(res, 0, 2),
		   trickle.back_at > 0 ? trickle.back_at - trickle.first_failure : 0.0, trickle.ok,
		   PQgetvalue(res, 0, 5), count, PQgetvalue(res, 0, 4), PQgetvalue(res, 0, 6),
		   PQgetvalue(res, 0, 3));
	PQclear(res);
	PQfinish(conn);
	free(ids);
	return back == n ? 0 : 3;
}

static void
usage(void)
{
	fprintf(stderr,
			"usage: inbox -d CONNINFO -c CLIENTS [-t SECONDS] [-w WARMUP] [-q WINDOW] [-n] [-s]\n"
			"       inbox -W -d CONNINFO -c CLIENTS [-t SECONDS] [-w WARMUP] [-q WINDOW] [-s]\n"
			"       inbox -K -d CONNINFO -c SESSIONS [-t TIMEOUT] [-w BEFORE] [-r INTERVAL_MS]\n"
			"  -d  libpq connection string (or $NADI_BENCH_DSN)\n"
			"  -c  concurrent sessions: producers = cells = CLIENTS\n"
			"  -t  measured seconds after the warm-up (default 5); -K: longest wait for recovery\n"
			"  -w  warm-up seconds (default 1); -K: seconds of trickle before the kill\n"
			"  -q  most open commands per session before its producer waits (default 64)\n"
			"  -n  no LISTEN: cells poll every 1 ms (for a server with nadi.notify = off)\n"
			"  -s  sample server wait events during the window (to stderr)\n"
			"  -W  the server's nadi cell workers run the commands (message, builtin model)\n"
			"  -K  kill -9 a nadi cell worker under a trickle of commands; time the recovery\n"
			"  -r  -K: milliseconds between two commands of the trickle (default 20)\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	int			clients = 0;
	double		duration = 5;
	double		warmup = 1;
	bool		sample = false;
	bool		kill_mode = false;
	double		interval_ms = 20;
	pthread_t	watcher_thread;
	PGconn	   *setup_conn = NULL;
	char		t0[64] = "";
	char		t1[64] = "";
	int			opt;
	Session    *sessions;
	pthread_t  *producers;
	pthread_t  *cells;
	pthread_t	sampler_thread;
	Sampler		sampler = {0};
	double		start;
	long		completed = 0;
	long		enqueued = 0;
	long		wakeups = 0;
	long		empty_claims = 0;
	double	   *lat;
	size_t		nlat;

	conninfo = getenv("NADI_BENCH_DSN");
	while ((opt = getopt(argc, argv, "d:c:t:w:q:nsWKr:")) != -1)
	{
		switch (opt)
		{
			case 'd':
				conninfo = optarg;
				break;
			case 'c':
				clients = atoi(optarg);
				break;
			case 't':
				duration = atof(optarg);
				break;
			case 'w':
				warmup = atof(optarg);
				break;
			case 'q':
				window = atoi(optarg);
				break;
			case 'n':
				listen_notify = false;
				break;
			case 's':
				sample = true;
				break;
			case 'W':
				workers_mode = true;
				break;
			case 'K':
				kill_mode = true;
				break;
			case 'r':
				interval_ms = atof(optarg);
				break;
			default:
				usage();
		}
	}
	if (conninfo == NULL || clients < 1 || duration <= 0 || warmup < 0 || window < 1)
		usage();
	if (!PQisthreadsafe())
		die("this libpq is not thread-safe");
	if (kill_mode)
		return kill_main(clients, warmup, duration, interval_ms > 0 ? interval_ms : 20);

	sessions = xcalloc((size_t) clients, sizeof(Session));
	producers = xcalloc((size_t) clients, sizeof(pthread_t));
	cells = xcalloc((size_t) clients, sizeof(pthread_t));
	all_sessions = sessions;
	nsessions = clients;
	if (workers_mode)
	{
		char		warm[32];
		char		dur[32];
		const char *params[2] = {warm, dur};
		PGresult   *res;

		setup_conn = db_connect(conninfo, "setup");
		setup_worker_sessions(setup_conn, sessions, clients, 60);
		if (pthread_create(&watcher_thread, NULL, watcher_main, NULL) != 0)
			die("cannot start the watcher thread");
		/* the window on the server's clock, which the events carry */
		snprintf(warm, sizeof(warm), "%.3f", warmup);
		snprintf(dur, sizeof(dur), "%.3f", duration);
		res = db_exec(setup_conn,
					  "SELECT t + make_interval(secs => $1::float8), "
					  "       t + make_interval(secs => $1::float8 + $2::float8) "
					  "FROM (SELECT clock_timestamp() AS t) c", 2, params, PGRES_TUPLES_OK);
		snprintf(t0, sizeof(t0), "%s", PQgetvalue(res, 0, 0));
		snprintf(t1, sizeof(t1), "%s", PQgetvalue(res, 0, 1));
		PQclear(res);
	}
	else
		setup_sessions(sessions, clients);

	start = now_s();
	warm_end = start + warmup;
	run_end = warm_end + duration;
	for (int i = 0; i < clients; i++)
	{
		if ((!workers_mode && pthread_create(&cells[i], NULL, cell_main, &sessions[i]) != 0) ||
			pthread_create(&producers[i], NULL, producer_main, &sessions[i]) != 0)
			die("cannot start threads");
	}
	if (sample && pthread_create(&sampler_thread, NULL, sampler_main, &sampler) != 0)
		die("cannot start the sampler thread");

	/* sleep through warm-up and window, then stop everybody */
	while (now_s() < run_end)
	{
		double		left = run_end - now_s();
		struct timespec ts = {.tv_sec = (time_t) left,
		.tv_nsec = (long) ((left - (double) (time_t) left) * 1e9)};

		nanosleep(&ts, NULL);
	}
	atomic_store(&stop, 1);
	for (int i = 0; i < clients; i++)
	{
		pthread_mutex_lock(&sessions[i].mu);
		pthread_cond_broadcast(&sessions[i].cv);
		pthread_mutex_unlock(&sessions[i].mu);
	}
	for (int i = 0; i < clients; i++)
	{
		pthread_join(producers[i], NULL);
		if (!workers_mode)
			pthread_join(cells[i], NULL);
	}
	if (workers_mode)
		pthread_join(watcher_thread, NULL);
	if (sample)
		pthread_join(sampler_thread, NULL);

	for (int i = 0; i < clients; i++)
	{
		completed += sessions[i].completed_in_window;
		enqueued += (long) sessions[i].enqueued.n;
		wakeups += sessions[i].wakeups;
		empty_claims += sessions[i].empty_claims;
	}
	if (workers_mode)
	{
		workers_report(setup_conn, clients, t0, t1, duration, enqueued);
		PQfinish(setup_conn);
		nlat = 0;
		lat = NULL;
	}
	else
	{
		lat = latencies(sessions, clients, &nlat);
		qsort(lat, nlat, sizeof(double), cmp_double);
		printf("clients=%d seconds=%.3f completed=%ld commands_per_s=%.1f enqueued_total=%ld "
			   "wakeups=%ld empty_claims=%ld latency_samples=%zu p50_ms=%.2f p99_ms=%.2f max_ms=%.2f\n",
			   clients, duration, completed, (double) completed / duration, enqueued, wakeups,
			   empty_claims,
			   nlat, percentile(lat, nlat, 0.50), percentile(lat, nlat, 0.99),
			   nlat ? lat[nlat - 1] : 0.0);
	}
	if (sample && sampler.samples > 0)
	{
		qsort(sampler.waits, (size_t) sampler.nwaits, sizeof(WaitCount), cmp_wait);
		fprintf(stderr, "waits (clients=%d, %ld samples, mean active backends per sample):\n",
				clients, sampler.samples);
		for (int i = 0; i < sampler.nwaits; i++)
			fprintf(stderr, "  %-40s %6.2f\n", sampler.waits[i].name,
					(double) sampler.waits[i].count / (double) sampler.samples);
	}

	free(lat);
	for (int i = 0; i < clients; i++)
	{
		samples_free(&sessions[i].enqueued);
		samples_free(&sessions[i].claimed);
		pthread_mutex_destroy(&sessions[i].mu);
		pthread_cond_destroy(&sessions[i].cv);
	}
	free(sessions);
	free(producers);
	free(cells);
	return 0;
}
