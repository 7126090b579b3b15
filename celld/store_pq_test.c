/*
 * store_pq_test.c — the libpq store against a real server (test/suites/45-celld):
 *
 *     store_pq_test CONNINFO
 *
 * CONNINFO names a superuser's connection to a scratch database (it makes
 * a table, a function and a deferred trigger there).  Checks rows as JSON
 * (numbers as numbers, NULL as null), text parameters, a failed statement,
 * groups that commit together while a failed one rolls back alone, a
 * connection lost inside a batch (08006: nothing committed) and during
 * its COMMIT (08007), and the reconnect after the back-off.  Prints TAP
 * lines; exits 1 if any check failed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemonlib/log.h"
#include "store_pq.h"

static int n_checks, n_failed;

static void
check(bool ok, const char *what)
{
	n_checks++;
	if (!ok)
		n_failed++;
	printf("%sok %d - %s\n", ok ? "" : "not ", n_checks, what);
}

static char *
dump(json_t *j)
{
	static char buf[4096];
	char	   *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);

	snprintf(buf, sizeof(buf), "%s", s ? s : "(null)");
	free(s);
	return buf;
}

/* Setup statements on a connection of the test's own. */
static bool
setup(const char *conninfo)
{
	PGconn	   *pg = PQconnectdb(conninfo);
	const char *sql =
		"DROP TABLE IF EXISTS store_test, store_boom CASCADE;"
		"CREATE TABLE store_test (k integer PRIMARY KEY);"
		"CREATE TABLE store_boom (x integer);"
		"CREATE OR REPLACE FUNCTION store_put(k integer) RETURNS integer LANGUAGE sql AS "
		"  'INSERT INTO store_test VALUES (k) RETURNING k';"
		"CREATE OR REPLACE FUNCTION store_boom_put(x integer) RETURNS integer LANGUAGE sql AS "
		"  'INSERT INTO store_boom VALUES (x) RETURNING x';"
		"CREATE OR REPLACE FUNCTION store_boom_fire() RETURNS trigger LANGUAGE plpgsql AS "
		"  $$BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); PERFORM pg_sleep(5); "
		"  RETURN NULL; END$$;"
		"CREATE CONSTRAINT TRIGGER store_boom_at_commit AFTER INSERT ON store_boom "
		"  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION store_boom_fire();";
	PGresult *r;
	bool	  ok;

	if (PQstatus(pg) != CONNECTION_OK)
	{
		fprintf(stderr, "setup: %s", PQerrorMessage(pg));
		PQfinish(pg);
		return false;
	}
	r = PQexec(pg, sql);
	ok = PQresultStatus(r) == PGRES_COMMAND_OK;
	if (!ok)
		fprintf(stderr, "setup: %s", PQresultErrorMessage(r));
	PQclear(r);
	PQfinish(pg);
	return ok;
}

static StoreGroup
group(int n, const char *const *sqls, const char *const *args)
{
	StoreGroup g = {0};

	g.stmts = json_array();
	for (int i = 0; i < n; i++)
		json_array_append_new(g.stmts, store_stmt(sqls[i], args[i] ? 1 : 0, &args[i]));
	return g;
}

static void
free_groups(StoreGroup *g, int n)
{
	for (int i = 0; i < n; i++)
		store_group_free(&g[i]);
}

int
main(int argc, char **argv)
{
	PqConnParams	 p = {.program = "store_pq_test", .connect_timeout_s = 5};
	StorePq			*s;
	const CellStore *st;
	StoreResult		 r;
	StorePqStats	 stats;

	log_ident = "store_pq_test";
	if (argc != 2)
	{
		fprintf(stderr, "usage: store_pq_test CONNINFO\n");
		return 2;
	}
	if (!setup(argv[1]))
		return 1;
	p.conninfo = argv[1];
	s = store_pq_new(&p, 10000, NULL, NULL);
	st = store_pq_store(s);

	/* rows as JSON */
	st->exec(st->ctx, "SELECT 1 AS a, 'x' AS b, NULL::text AS c, 1.5 AS d, true AS e", 0, NULL, &r);
	check(r.sqlstate[0] == '\0' &&
			  strcmp(dump(r.rows), "[{\"a\":1,\"b\":\"x\",\"c\":null,\"d\":1.5,\"e\":true}]") == 0,
		  "exec: one row as a JSON object, numbers as numbers, NULL as null");
	check(json_is_integer(json_object_get(json_array_get(r.rows, 0), "a")),
		  "exec: an integer is a JSON integer");
	store_result_free(&r);
	st->exec(st->ctx, "SELECT 1 AS a WHERE false", 0, NULL, &r);
	check(r.sqlstate[0] == '\0' && json_array_size(r.rows) == 0, "exec: no rows is []");
	store_result_free(&r);
	for (int i = 0; i < 2; i++)
	{
		const char *args[2] = {"41", NULL};

		st->exec(st->ctx, "SELECT $1::integer + 1 AS n, $2 IS NULL AS null_arg", 2, args, &r);
		check(strcmp(dump(r.rows), "[{\"n\":42,\"null_arg\":true}]") == 0,
			  i == 0 ? "exec: text parameters, NULL as SQL NULL"
					 : "exec: the same text again (prepared)");
		store_result_free(&r);
	}
	{
		const char *args[1] = {"abc"};

		st->exec(st->ctx, "SELECT length($1) AS n", 1, args, &r);
		check(strcmp(dump(r.rows), "[{\"n\":3}]") == 0, "exec: parameters are text (length(text))");
		store_result_free(&r);
	}
	st->exec(st->ctx, "SELECT 1 / 0 AS x", 0, NULL, &r);
	check(strcmp(r.sqlstate, "22012") == 0 && json_array_size(r.rows) == 0 && r.message[0],
		  "exec: a failed statement has its SQLSTATE and message, and no rows");
	store_result_free(&r);
	st->exec(st->ctx, "SELECT 2 AS two", 0, NULL, &r);
	check(r.sqlstate[0] == '\0' && strcmp(dump(r.rows), "[{\"two\":2}]") == 0,
		  "exec: the connection goes on after a failure");
	store_result_free(&r);

	/* groups: one transaction, a savepoint each */
	{
		const char *put = "SELECT k FROM store_put($1::integer) AS k";
		const char *s0[] = {put, put}, *a0[] = {"1", "2"};
		const char *s1[] = {put, put}, *a1[] = {"3", "3"};
		const char *s2[] = {put}, *a2[] = {"4"};
		StoreGroup	g[3] = {group(2, s0, a0), group(2, s1, a1), group(1, s2, a2)};

		st->exec_groups(st->ctx, g, 3);
		check(g[0].sqlstate[0] == '\0' &&
				  strcmp(dump(g[0].results), "[[{\"k\":1}],[{\"k\":2}]]") == 0,
			  "groups: a group's results, one row array per statement");
		check(strcmp(g[1].sqlstate, "23505") == 0, "groups: a failing group has its SQLSTATE");
		check(g[2].sqlstate[0] == '\0', "groups: the group after a failed one commits");
		free_groups(g, 3);
		st->exec(st->ctx, "SELECT array_agg(k ORDER BY k)::text AS ks FROM store_test", 0, NULL,
				 &r);
		check(strcmp(dump(r.rows), "[{\"ks\":\"{1,2,4}\"}]") == 0,
			  "groups: the failed group rolled back alone (its first insert too)");
		store_result_free(&r);
	}

	/* a batch longer than one pipeline stretch, with failures here and there */
	{
		enum
		{
			N = 150
		};
		const char *put = "SELECT k FROM store_put($1::integer) AS k";
		StoreGroup	g[N];
		char		keys[N][2][16];
		bool		ok = true, rows_ok = true;

		for (int i = 0; i < N; i++)
		{
			const char *sqls[2] = {put, put}, *args[2] = {keys[i][0], keys[i][1]};
			bool		fail = i == 10 || i == 63 || i == 64 || i == 65 || i == 149;

			snprintf(keys[i][0], 16, "%d", 1000 + 2 * i);
			/* a failing group: its second insert repeats the first */
			snprintf(keys[i][1], 16, "%d", fail ? 1000 + 2 * i : 1001 + 2 * i);
			g[i] = group(2, sqls, args);
		}
		st->exec_groups(st->ctx, g, N);
		for (int i = 0; i < N; i++)
		{
			bool fail = i == 10 || i == 63 || i == 64 || i == 65 || i == 149;

			if (fail != (strcmp(g[i].sqlstate, "23505") == 0) || (!fail && g[i].sqlstate[0]))
				ok = false;
			if (!fail &&
				json_integer_value(json_object_get(
					json_array_get(json_array_get(g[i].results, 1), 0), "k")) != 1001 + 2 * i)
				rows_ok = false;
		}
		check(ok,
			  "a batch of 150 groups (three pipeline stretches): exactly the 5 failing ones fail");
		check(rows_ok, "and every other group has its rows");
		free_groups(g, N);
		st->exec(
			st->ctx,
			"SELECT count(*) AS n, count(*) FILTER (WHERE k IN (1020, 1126, 1128, 1130, 1298)) AS "
			"failed FROM store_test WHERE k >= 1000",
			0, NULL, &r);
		check(strcmp(dump(r.rows), "[{\"failed\":0,\"n\":290}]") == 0,
			  "the 145 good groups committed both rows, the 5 failed ones nothing");
		store_result_free(&r);
	}

	/* the connection breaks inside the batch: nothing committed, 08006 */
	{
		const char *put = "SELECT k FROM store_put($1::integer) AS k";
		const char *kill = "SELECT pg_terminate_backend(pg_backend_pid()) AS t, pg_sleep(5) AS s";
		const char *s0[] = {put}, *a0[] = {"5"};
		const char *s1[] = {kill}, *a1[] = {NULL};
		StoreGroup	g[2] = {group(1, s0, a0), group(1, s1, a1)};

		st->exec_groups(st->ctx, g, 2);
		check(strcmp(g[0].sqlstate, "08006") == 0 && strcmp(g[1].sqlstate, "08006") == 0,
			  "lost inside a batch: every group fails with 08006");
		free_groups(g, 2);
		st->exec(st->ctx, "SELECT 1 AS one", 0, NULL, &r);
		check(strcmp(r.sqlstate, "08006") == 0 && !store_pq_up(s),
			  "right after: calls fail at once while the back-off runs");
		store_result_free(&r);
		usleep(400 * 1000);
		st->exec(st->ctx, "SELECT count(*) AS n FROM store_test WHERE k = 5", 0, NULL, &r);
		check(r.sqlstate[0] == '\0' && strcmp(dump(r.rows), "[{\"n\":0}]") == 0,
			  "after the back-off: connected again; the batch committed nothing");
		store_result_free(&r);
	}

	/* the connection breaks while COMMIT waits: the outcome is unknown, 08007 */
	{
		const char *boom = "SELECT x FROM store_boom_put($1::integer) AS x";
		const char *put = "SELECT k FROM store_put($1::integer) AS k";
		const char *s0[] = {put}, *a0[] = {"6"};
		const char *s1[] = {boom}, *a1[] = {"1"};
		StoreGroup	g[2] = {group(1, s0, a0), group(1, s1, a1)};

		st->exec_groups(st->ctx, g, 2);
		check(strcmp(g[0].sqlstate, "08007") == 0 && strcmp(g[1].sqlstate, "08007") == 0,
			  "lost during COMMIT: every group fails with 08007 (outcome unknown)");
		free_groups(g, 2);
		usleep(400 * 1000);
		st->exec(st->ctx, "SELECT 1 AS one", 0, NULL, &r);
		check(r.sqlstate[0] == '\0', "and connected again after the back-off");
		store_result_free(&r);
	}
	store_pq_stats(s, &stats);
	check(stats.connects == 3 && stats.lost == 2, "stats: 3 connections made, 2 lost");
	store_pq_free(s);
	printf("1..%d\n", n_checks);
	return n_failed ? 1 : 0;
}
