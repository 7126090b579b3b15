/*
 * fuzz_acp.c — libFuzzer target for ACP JSON-RPC message handling (acp.c,
 * acp_session.c over feed.c and quota.c): any sequence of messages a client
 * may send on one connection, with the database answering each request
 * successfully or with an error, as the input says.  The database is a
 * fake that answers in the shape of the real statements.  It checks that
 * everything the edge sends back is one JSON-RPC 2.0 message, that the
 * connection frees everything it took (LeakSanitizer), and that a
 * connection never holds more sessions than its limit.
 *
 * Input: lines.  A line "!N" makes the database answer every pending call
 * (N = 0: successfully; 1: 42501; 2: 40001; 3: NA002), "!t" ticks the
 * connection; any other line is one message as the transports pass it on
 * (parsed by json_parse_strict).
 *
 *   make -C edge fuzz && edge/fuzz/fuzz_acp -max_total_time=60
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "../acp_int.h"

EdgeConfig	edge_cfg = {
	.body_limit = 1 << 20, .json_depth = 64, .stream_buffer = 1 << 20, .dev_no_auth = true,
	.max_acp = 4, .max_acp_per_tenant = 4, .max_acp_sessions = 3, .max_streams = 8,
	.max_streams_per_tenant = 8,
};
EdgeMetrics edge_metrics;

void
edge_log(int level, const char *fmt,...)
{
}

/* ---- auth (the connection copies the caller's) ---- */

bool
auth_expired(const EdgeAuth *a)
{
	return false;
}

int
auth_copy(EdgeAuth *dst, const EdgeAuth *src)
{
	*dst = *src;
	if (src->token && (dst->token = strdup(src->token)) == NULL)
		return -1;
	return 0;
}

void
auth_clear(EdgeAuth *a)
{
	free(a->token);
	memset(a, 0, sizeof(*a));
}

/* ---- a fake database ---- */

#define MAX_JOBS 64

struct EdgeJob
{
	EdgeStmt	stmt;
	EdgeDbDone	done;
	void	   *arg;
	bool		live;
};

typedef struct FakeRows
{
	int			n;
	char		cell[3][64];
	bool		null[3];
} FakeRows;

static EdgeJob jobs[MAX_JOBS];
static long next_cmd;

EdgeJob *
db_submit_ex(EdgeStmt stmt, const EdgeAuth *auth, int nparams, const char *const *params,
			 EdgeDbDone done, void *arg, bool urgent)
{
	assert(stmt > STMT_PING && stmt < STMT__COUNT);
	for (int i = 0; i < nparams; i++)
		assert(params[i] == NULL || strlen(params[i]) < (1 << 21));
	for (int i = 0; i < MAX_JOBS; i++)
		if (!jobs[i].live)
		{
			jobs[i] = (EdgeJob) {stmt, done, arg, true};
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

	assert(row >= 0 && row < f->n && col >= 0 && col < 3);
	return f->null[col] ? "" : f->cell[col];
}

bool
db_isnull(EdgeDbResult *r, int row, int col)
{
	FakeRows   *f = r->res;

	assert(row >= 0 && row < f->n && col >= 0 && col < 3);
	return f->null[col];
}

static void
answer_all(const char *sqlstate)
{
	for (int round = 0; round < 100; round++)
	{
		bool		any = false;

		for (int i = 0; i < MAX_JOBS; i++)
		{
			FakeRows	rows = {0};
			EdgeDbResult r = {.ok = sqlstate == NULL, .res = &rows};
			EdgeJob		j = jobs[i];

			if (!j.live)
				continue;
			jobs[i].live = false;
			any = true;
			if (sqlstate)
			{
				snprintf(r.sqlstate, sizeof(r.sqlstate), "%s", sqlstate);
				r.message = "fake failure";
			}
			else if (j.stmt == STMT_SESSION_CREATE)
			{
				rows.n = 1;
				snprintf(rows.cell[0], 64, "fuzz");
				snprintf(rows.cell[1], 64, "01890000-0000-7000-8000-%012ld", ++next_cmd);
				snprintf(rows.cell[2], 64, "0");
			}
			else if (j.stmt == STMT_COMMAND_ENQUEUE)
			{
				rows.n = 1;
				snprintf(rows.cell[0], 64, "queued");
				snprintf(rows.cell[1], 64, "%ld", ++next_cmd);
			}
			else if (j.stmt == STMT_EVENTS_FOLLOW)
			{
				/* an empty log: one row of NULLs after last seq 0 */
				rows.n = 1;
				snprintf(rows.cell[0], 64, "0");
				rows.null[1] = rows.null[2] = true;
			}
			j.done(j.arg, &r);
		}
		if (!any)
			return;
	}
}

/* ---- the transport: every message out must be JSON-RPC 2.0 ---- */

static bool closed;

static int
t_send(AcpConn *c, const char *json, size_t len, const char *session, json_t *response_id)
{
	json_error_t e;
	json_t	   *m = json_loadb(json, len, 0, &e);

	assert(m && json_is_object(m));
	assert(json_is_string(json_object_get(m, "jsonrpc")) &&
		   strcmp(json_string_value(json_object_get(m, "jsonrpc")), "2.0") == 0);
	assert(json_object_get(m, "method") || json_object_get(m, "result") || json_object_get(m, "error"));
	json_decref(m);
	return 0;
}

static size_t
t_room(AcpConn *c, const char *session)
{
	return 1 << 20;
}

static void
t_close(AcpConn *c, int code, const char *why)
{
	closed = true;
}

static const AcpTransport transport = {t_send, t_room, t_close};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool init;
	EdgeAuth	auth = {.scope = SCOPE_TENANT, .tenant = "fuzz", .subject = "fuzzer"};
	EdgeProblem p;
	AcpConn    *c;
	size_t		i = 0;

	if (!init)
	{
		loop_init();
		init = true;
	}
	memset(jobs, 0, sizeof(jobs));
	closed = false;
	c = acp_conn_new(&transport, NULL, &auth, &p);
	assert(c);
	while (i < size && !closed)
	{
		const uint8_t *nl = memchr(data + i, '\n', size - i);
		size_t		n = nl ? (size_t) (nl - (data + i)) : size - i;
		const char *line = (const char *) data + i;

		i += n + (nl ? 1 : 0);
		if (n == 2 && line[0] == '!')
		{
			switch (line[1])
			{
				case '0': answer_all(NULL); break;
				case '1': answer_all("42501"); break;
				case '2': answer_all("40001"); break;
				case '3': answer_all("NA002"); break;
				case 't': acp_tick(c); break;
				default: break;
			}
		}
		else
		{
			EdgeProblem pp;
			json_t	   *msg = json_parse_strict(line, n, &pp);

			if (msg)
			{
				acp_handle(c, msg);
				json_decref(msg);
			}
		}
		assert(acp_session_count() <= edge_cfg.max_acp_sessions);
	}
	answer_all(NULL);
	acp_tick(c);
	acp_conn_free(c);
	/* what the connection left to the loop: its dead sessions' timer */
	loop_run_once(0);
	assert(acp_active() == 0);
	return 0;
}
