/*
 * fake_db.h — a stand-in for db.c in the fuzz targets that drive code
 * above the database (fuzz_feed.c, fuzz_acp.c): jobs are queued, and the
 * target answers them when its input says so, with rows it builds in
 * fake_cell.  Include it once, after edge.h.
 */
#ifndef FAKE_DB_H
#define FAKE_DB_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAKE_JOBS 64
#define FAKE_ROWS 600
#define FAKE_COLS 4

struct EdgeJob
{
	EdgeStmt   stmt;
	int		   nparams;
	char	  *params[6];
	EdgeDbDone done;
	void	  *arg;
	bool	   live;
};

static EdgeJob fake_jobs[FAKE_JOBS];
static char	  *fake_cell[FAKE_ROWS][FAKE_COLS]; /* NULL: SQL NULL */
static int	   fake_nrows;

static EdgeJob *
fake_submit(EdgeStmt stmt, int nparams, const char *const *params, EdgeDbDone done, void *arg)
{
	for (int i = 0; i < FAKE_JOBS; i++)
		if (!fake_jobs[i].live)
		{
			EdgeJob *j = &fake_jobs[i];

			*j =
				(EdgeJob){.stmt = stmt, .nparams = nparams, .done = done, .arg = arg, .live = true};
			for (int k = 0; k < nparams && k < 6; k++)
				j->params[k] = params[k] ? strdup(params[k]) : NULL;
			return j;
		}
	return NULL; /* the queue is full: callers cope */
}

EdgeJob *
db_submit(EdgeStmt stmt, const EdgeAuth *auth, int nparams, const char *const *params,
		  EdgeDbDone done, void *arg)
{
	return fake_submit(stmt, nparams, params, done, arg);
}

EdgeJob *
db_submit_ex(EdgeStmt stmt, const EdgeAuth *auth, int nparams, const char *const *params,
			 EdgeDbDone done, void *arg, bool urgent)
{
	return fake_submit(stmt, nparams, params, done, arg);
}

static void
fake_forget(EdgeJob *j)
{
	for (int k = 0; k < j->nparams && k < 6; k++)
		free(j->params[k]);
	j->live = false;
}

void
db_cancel(EdgeJob *job)
{
	if (job && job->live)
		fake_forget(job);
}

int
db_rows(EdgeDbResult *r)
{
	return fake_nrows;
}

bool
db_isnull(EdgeDbResult *r, int row, int col)
{
	return fake_cell[row][col] == NULL;
}

const char *
db_value(EdgeDbResult *r, int row, int col)
{
	return fake_cell[row][col] ? fake_cell[row][col] : "";
}

/* Set one cell of the next answer (v NULL: SQL NULL); rows grow to fit. */
static void
fake_set(int row, int col, const char *v)
{
	if (row >= FAKE_ROWS || col >= FAKE_COLS)
		abort();
	free(fake_cell[row][col]);
	fake_cell[row][col] = v ? strdup(v) : NULL;
	if (row >= fake_nrows)
		fake_nrows = row + 1;
}

static void
fake_clear(void)
{
	for (int i = 0; i < fake_nrows; i++)
		for (int k = 0; k < FAKE_COLS; k++)
		{
			free(fake_cell[i][k]);
			fake_cell[i][k] = NULL;
		}
	fake_nrows = 0;
}

/*
 * Answer job j: ok with the rows set since the last answer, or failed with
 * sqlstate.  The job is free again before its callback runs (which may
 * submit more).
 */
static void
fake_answer(EdgeJob *j, const char *sqlstate)
{
	EdgeDbDone	 done = j->done;
	void		*arg = j->arg;
	EdgeDbResult r = {.ok = sqlstate == NULL};

	if (sqlstate)
	{
		snprintf(r.sqlstate, sizeof(r.sqlstate), "%s", sqlstate);
		r.message = "fake failure";
	}
	fake_forget(j);
	done(arg, &r);
	fake_clear();
}

/*
 * The rows job j (STMT_EVENTS_READ or STMT_EVENTS_FOLLOW) gets from a log
 * of `last` events, event(seq) giving each one's JSON: (seq, json) for a
 * read; (last, seq, json) for a subscriber's read, which starts at
 * least(after, last) and is one row (last, NULL, NULL) past the end.
 */
static void
fake_events(EdgeJob *j, int64_t last, const char *(*event)(int64_t seq))
{
	bool	follow = j->stmt == STMT_EVENTS_FOLLOW;
	int64_t from = strtoll(j->params[1], NULL, 10);
	int		limit = atoi(j->params[2]);
	char	num[24];
	char	lastnum[24];
	int		n = 0;

	snprintf(lastnum, sizeof(lastnum), "%lld", (long long) last);
	if (follow && from > last)
		from = last;
	for (int64_t seq = from + 1; seq <= last && n < limit; seq++, n++)
	{
		snprintf(num, sizeof(num), "%lld", (long long) seq);
		if (follow)
			fake_set(n, 0, lastnum);
		fake_set(n, follow ? 1 : 0, num);
		fake_set(n, follow ? 2 : 1, event(seq));
	}
	if (follow && n == 0)
	{
		fake_set(0, 0, lastnum);
		fake_set(0, 1, NULL);
		fake_set(0, 2, NULL);
	}
}

static int
fake_pending(void)
{
	int n = 0;

	for (int i = 0; i < FAKE_JOBS; i++)
		n += fake_jobs[i].live;
	return n;
}

#endif /* FAKE_DB_H */
