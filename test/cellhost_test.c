/*
 * cellhost_test.c — the cell host (bgworkers/cellhost.c) without
 * PostgreSQL, over a store played by hand: five sessions of three tenants
 * (A: 2, B: 2, C: 1) that always have a command to claim.  Built and run by
 * `make runtime-check`, beside runtime_test.c.
 *
 * It checks properties, never timings:
 *   - under the cell and tenant limits every tenant gets its share of the
 *     claims (two busy tenants cannot starve a third);
 *   - the limits hold at every step;
 *   - a run of instant commands returns (its commits claim for a bounded
 *     time) instead of processing every queued command first;
 *   - "/sleep" is a timer only for the builtin model.
 *
 * Prints one line per failure and "N passed, M failed".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "../bgworkers/cellhost.h"

#define NSESS 5
static const char *ids[NSESS] = {
	"00000000-0000-0000-0000-0000000000a1", "00000000-0000-0000-0000-0000000000a2",
	"00000000-0000-0000-0000-0000000000b1", "00000000-0000-0000-0000-0000000000b2",
	"00000000-0000-0000-0000-0000000000c1"};
static const char *tenants[NSESS] = {"A", "A", "B", "B", "C"};
static int	taken[NSESS];
static long claims[NSESS];
static long claim_cap;			/* claims per session the store hands out (0: no end) */
static long next_cmd = 1;
static const char *command_text = "x";
static const char *command_type = "message";

static int
sess_index(const char *id)
{
	for (int i = 0; i < NSESS; i++)
		if (id && strcmp(ids[i], id) == 0)
			return i;
	return -1;
}

/* Each id of an array literal "{a,b}" in turn. */
#define FOR_EACH_ID(lit, t) \
	for (char *copy_ = strdup(lit), *t = strtok(copy_, "{},"); t || (free(copy_), 0); t = strtok(NULL, "{},"))

/* What the store answers: rows for one statement. */
static json_t *
rows_for(const char *sql, const char *const *args)
{
	json_t	   *rows = json_array();

	if (strstr(sql, "cell_host_heartbeat") || strstr(sql, "cell_host_register"))
		json_array_append_new(rows, json_pack("{s:s}", "state", "live"));
	else if (strstr(sql, "lease_acquire"))
	{
		taken[sess_index(args[0])] = 1;
		json_array_append_new(rows, json_pack("{s:i, s:i}", "epoch", 1, "expires_in_ms", 600000));
	}
	else if (strstr(sql, "session_replay"))
		json_array_append_new(rows, json_pack("{s:{s:[]}}", "state", "messages"));
	else if (strstr(sql, "UNION ALL"))
	{
		/* a round: every session held has work */
		for (int i = 0; i < NSESS; i++)
			if (taken[i])
				json_array_append_new(rows, json_pack("{s:s, s:n, s:s, s:n, s:n, s:n}", "session_id", ids[i],
													  "tenant_id", "state", "work", "epoch", "policy", "sandbox_url"));
	}
	else if (strstr(sql, "has_open"))
	{
		/* a sweep */
		for (int i = 0; i < NSESS; i++)
			json_array_append_new(rows, json_pack("{s:s, s:s, s:s, s:i, s:b, s:b}", "session_id", ids[i],
												  "tenant_id", tenants[i], "state", taken[i] ? "active" : "placed",
												  "epoch", 1, "has_work", 1, "has_open", 1));
	}
	else if (strstr(sql, "lease_renew_many"))
	{
		FOR_EACH_ID(args[1], t)
			json_array_append_new(rows, json_pack("{s:s, s:b, s:i}", "session_id", t, "ok", 1, "expires_in_ms", 600000));
	}
	else if (strstr(sql, "command_claim_many"))
	{
		FOR_EACH_ID(args[1], t)
		{
			int			i = sess_index(t);

			if (i < 0 || (claim_cap > 0 && claims[i] >= claim_cap))
				continue;
			claims[i]++;
			json_array_append_new(rows, json_pack("{s:s, s:s, s:I, s:s, s:{s:s}}", "session_id", t, "status", "claimed",
												  "command_id", (json_int_t) next_cmd++, "type", command_type,
												  "payload", "text", command_text));
		}
	}
	return rows;
}

static void
fake_exec(void *ctx, const char *sql, int nargs, const char *const *args, StoreResult *r)
{
	memset(r, 0, sizeof(*r));
	r->rows = rows_for(sql, args);
}

static void
fake_groups(void *ctx, StoreGroup *g, int n)
{
	for (int i = 0; i < n; i++)
	{
		size_t		k;
		json_t	   *st;

		g[i].sqlstate[0] = '\0';
		json_decref(g[i].results);
		g[i].results = json_array();
		json_array_foreach(g[i].stmts, k, st)
		{
			json_t	   *a = json_array_get(st, 1);
			const char *args[16] = {0};

			for (size_t j = 0; j < json_array_size(a) && j < 16; j++)
				args[j] = json_string_value(json_array_get(a, j));
			json_array_append_new(g[i].results, rows_for(json_string_value(json_array_get(st, 0)), args));
		}
	}
}

static const CellStore fake_store = {NULL, fake_exec, fake_groups};

static void
reset(void)
{
	memset(taken, 0, sizeof(taken));
	memset(claims, 0, sizeof(claims));
	claim_cap = 0;
}

static CellHost *
cell(const char *provider, int max_in_flight, int max_tenant)
{
	CellHostConfig c = {.host_id = "h1", .address = "test", .capacity = 10, .workers = 1, .index = 0,
		.heartbeat_ms = 200, .idle_suspend_ms = 600000,
	.max_in_flight = max_in_flight, .max_in_flight_tenant = max_tenant};
	RuntimeConfig rc = {.model = {provider, "http://127.0.0.1:9", "m", 1000}, .model_max_steps = 5,
	.tool_timeout_ms = 1000};

	reset();
	return cellhost_new(&fake_store, &c, &rc);
}

/* Two busy tenants and a third: each gets its share, and the limits hold. */
static void
test_fair_claims(void)
{
	CellHost   *ch = cell("builtin", 4, 2);
	CellHostStats s;
	long		a,
				b,
				c,
				total;
	bool		within = true;

	command_text = "/sleep 5 x";	/* a timer: commands stay under way a moment */
	for (int it = 0; it < 600; it++)
	{
		long		ms = cellhost_run(ch);

		cellhost_stats(ch, &s);
		if (s.in_flight > 4 || s.tenant_max_in_flight > 2)
			within = false;
		usleep((ms > 2 ? 2 : ms) * 1000);
	}
	a = claims[0] + claims[1];
	b = claims[2] + claims[3];
	c = claims[4];
	total = a + b + c;
	CHECK(within);
	CHECK(total > 50);
	/* C has one session, so at most one command under way: a fifth of the slots is its share */
	CHECK(c > total / 10);
	CHECK(a > total / 5 && b > total / 5);
	cellhost_free(ch);
}

/* Instant commands without end: a run returns, and the next one goes on. */
static void
test_run_returns(void)
{
	CellHost   *ch = cell("builtin", 1000, 500);
	CellHostStats s;
	long		before;

	command_text = "x";
	claim_cap = 1000000;		/* far more than one run may take */
	for (int it = 0; it < 3; it++)
		(void) cellhost_run(ch);
	cellhost_stats(ch, &s);
	before = (long) s.commands_finished;
	CHECK(before > 0);
	CHECK(before < 5 * 1000000);
	(void) cellhost_run(ch);
	cellhost_stats(ch, &s);
	CHECK((long) s.commands_finished > before);
	cellhost_free(ch);
}

/* "/sleep" holds a slot on a timer for the builtin model only. */
static void
test_sleep_is_builtin_only(void)
{
	CellHost   *ch = cell("openai", 4, 2);
	CellHostStats s;

	command_text = "/sleep 600000 hold";
	for (int it = 0; it < 5; it++)
		(void) cellhost_run(ch);
	cellhost_stats(ch, &s);
	CHECK(s.waiting_timer == 0);
	cellhost_free(ch);

	ch = cell("builtin", 4, 2);
	for (int it = 0; it < 5; it++)
		(void) cellhost_run(ch);
	cellhost_stats(ch, &s);
	CHECK(s.waiting_timer > 0);
	cellhost_free(ch);
}

int
main(void)
{
	test_fair_claims();
	test_run_returns();
	test_sleep_is_builtin_only();
	return check_summary();
}
