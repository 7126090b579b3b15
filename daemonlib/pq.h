/*
 * pq.h — what every Nadi daemon does the same with libpq.
 *
 * Connecting: the operator's conninfo (key=value, a URI or a bare database
 * name) over the daemon's defaults: application_name
 * "PROGRAM/NADI_VERSION", its connect_timeout and its "-c" options; what
 * the conninfo says wins, and its options come after the daemon's (a later
 * "-c" wins in the server).  Notices go to the log (daemonlib/log.h),
 * one line each, at their severity.
 *
 * A PqConn connects without blocking and is tied to no event loop: it says
 * which socket to watch (fd) and for what (events: EPOLLIN, EPOLLOUT); the
 * caller watches them and calls back here when they are ready.  The
 * socket may change while connecting (libpq tries the next host), so the
 * caller watches fd anew after every step.
 *
 *		PQ_DOWN --pq_conn_start--> PQ_CONNECTING --pq_conn_step--> PQ_UP
 *		   ^                            |                             |
 *		   +------ pq_conn_close <-------+-----------------------------+
 *
 * Once up, the connection is non-blocking; the caller sends its queries,
 * then pq_conn_flush(), and on readiness pq_conn_io().  After a failure
 * the caller closes the connection and waits pq_backoff_next() before it
 * starts again (doubling from PQ_BACKOFF_MIN_MS to PQ_BACKOFF_MAX_MS, with
 * jitter; reset once connected).
 *
 * Threaded daemons use the blocking pair instead: pq_connect_wait() and
 * pq_exec_wait() (one statement, text parameters, a time limit, the
 * SQLSTATE of a failure).
 */
#ifndef NADI_DAEMONLIB_PQ_H
#define NADI_DAEMONLIB_PQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#define PQ_BACKOFF_MIN_MS 100
#define PQ_BACKOFF_MAX_MS 5000
#define PQ_ERROR_MAX 512 /* bytes of one error line */

/* How a daemon connects; conninfo is the operator's, the rest its own. */
typedef struct PqConnParams
{
	const char *conninfo;		   /* NULL or "": libpq's defaults (PG* variables) */
	const char *program;		   /* "nadi-edge": application_name "nadi-edge/1.1.0" */
	const char *options;		   /* "-c name=value ...", or NULL */
	int			connect_timeout_s; /* 0: libpq's default (none) */
} PqConnParams;

/* Reconnect delays: exponential, capped, with jitter. */
typedef struct PqBackoff
{
	uint64_t cur_ms; /* 0 until the first failure */
} PqBackoff;

uint64_t pq_backoff_next(PqBackoff *b);
void	 pq_backoff_reset(PqBackoff *b);

typedef enum PqConnStatus
{
	PQ_DOWN = 0,
	PQ_CONNECTING,
	PQ_UP
} PqConnStatus;

typedef enum PqStep
{
	PQ_STEP_WAIT,  /* watch fd for events, then pq_conn_step() */
	PQ_STEP_UP,	   /* connected (and non-blocking) */
	PQ_STEP_FAILED /* pq_conn_error() says why */
} PqStep;

typedef struct PqConn
{
	PGconn		*pg;
	PqConnStatus status;
	int			 fd;	 /* the socket to watch; -1 without one */
	uint32_t	 events; /* EPOLLIN and/or EPOLLOUT */
	PqBackoff	 backoff;
	char		 error[PQ_ERROR_MAX];
} PqConn;

/* A PqConn that is down, with no socket (for static and calloc'd ones too). */
void   pq_conn_init(PqConn *c);
PqStep pq_conn_start(PqConn *c, const PqConnParams *p);
PqStep pq_conn_step(PqConn *c);
void   pq_conn_close(PqConn *c);

/*
 * Once up: send what libpq holds (after queueing queries) and set events
 * to EPOLLIN, plus EPOLLOUT while output remains.  false when the
 * connection broke.
 */
bool pq_conn_flush(PqConn *c);

/*
 * Readiness of fd while up: flushes on EPOLLOUT (events follow), reads on
 * EPOLLIN, EPOLLHUP or EPOLLERR.  false when the connection broke; the
 * caller then reads results and notifications as libpq has them.
 */
bool pq_conn_io(PqConn *c, uint32_t revents);

/* Whether libpq has given up on the connection. */
bool pq_conn_broken(const PqConn *c);

/* The connection's last error as one line (in c->error). */
const char *pq_conn_error(PqConn *c);

/*
 * Errors.  pq_one_line() folds libpq's multi-line messages into one
 * (whitespace runs become one space).  pq_error_line() describes a failed
 * result, "message (SQLSTATE XXXXX)", or the connection's error when res
 * is NULL or carries no message.  pq_result_sqlstate() copies the
 * SQLSTATE of res, or fallback when it has none.
 */
const char *pq_one_line(const char *msg, char *buf, size_t size);
const char *pq_error_line(PGconn *pg, const PGresult *res, char *buf, size_t size);
char	   *pq_result_sqlstate(const PGresult *res, char sqlstate[6], const char *fallback);

/*
 * Blocking use, for daemons that serve from threads.  pq_connect_wait()
 * returns a connection in CONNECTION_OK, or NULL with err set.
 *
 * pq_exec_wait() runs sql with text parameters (NULL entries are SQL
 * NULL) and waits at most timeout_ms for its answer:
 *	 0				*res is its PGRES_TUPLES_OK or PGRES_COMMAND_OK result
 *	 -EIO			the statement failed: sqlstate is its SQLSTATE ("" if none)
 *	 -ECONNRESET	the connection broke (sqlstate "08006"); close it
 *	 -ETIMEDOUT		no answer in time; the connection is unusable: close it
 * err gets one line on every failure.
 */
PGconn *pq_connect_wait(const PqConnParams *p, char *err, size_t errsize);
int		pq_exec_wait(PGconn *pg, const char *sql, int nparams, const char *const *params,
					 uint64_t timeout_ms, PGresult **res, char sqlstate[6], char *err, size_t errsize);

/*
 * The results of what was sent on a blocking connection, waited for (poll)
 * at most until deadline_ms (CLOCK_MONOTONIC ms): *res is the first error,
 * else the last result (NULL if none came).  false when the connection
 * broke or the deadline passed (*timed_out set); *res may still hold what
 * came before.  pq_exec_wait's wait, for callers that send their own
 * queries (nadi-celld's store: prepared statements, BEGIN ... COMMIT).
 */
bool pq_collect(PGconn *pg, uint64_t deadline_ms, PGresult **res, bool *timed_out);

#endif
