/*
 * reap.c — the reaper (see reap.h).  A round starts every reap_interval: it
 * lists the candidates, the sandboxes whose session id is a uuid and that
 * are at least reap_grace old (a sandbox the operator named otherwise is
 * never asked about), and asks about them REAP_BATCH at a time, one
 * question after the other on pg.c's connection.  The database answers
 * with those whose session ended reap_grace ago or more or was purged (an
 * id it never knew is not ended); each of those sandboxes is destroyed as
 * the operator's DELETE destroys it (sandbox_destroy: cancel the queue, stop
 * the container, delete the subvolumes and the metadata).  A question that
 * fails ends the round; the next round asks again.  Nothing is reaped
 * while the daemon drains.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "reap.h"
#include "sandbox.h"

extern bool sbx_draining;

static char			   **cand; /* this round's session ids; NULL between rounds */
static size_t			 n_cand, pos, pending;
static uint64_t			 next_round_ms;
static bool				 started, warned;
static struct reap_stats stats;

static bool
candidate(const struct sbx_sandbox *sb, time_t now)
{
	return !sb->destroying && uuid_text_valid(sb->session_id) && now >= sb->created_at &&
		   (uint64_t) (now - sb->created_at) * 1000 >= cfg.reap_grace_ms;
}

static void
end_round(void)
{
	for (size_t i = 0; i < n_cand; i++)
		free(cand[i]);
	free(cand);
	cand = NULL;
	n_cand = pos = pending = 0;
	next_round_ms = now_ms() + cfg.reap_interval_ms;
}

uint64_t
reap_next_ms(void)
{
	if (cfg.reap_interval_ms == 0 || !cfg.pg_conninfo || !*cfg.pg_conninfo)
		return UINT64_MAX;
	if (!started)
	{
		/* the first round one interval after start-up, as every later one */
		started = true;
		next_round_ms = now_ms() + cfg.reap_interval_ms;
	}
	return cand ? 0 : next_round_ms;
}

/* A new round's candidates; false when there are none (or no memory). */
static bool
start_round(void)
{
	time_t now = time(NULL);
	size_t n = 0;

	for (struct sbx_sandbox *sb = sandboxes; sb; sb = sb->next)
		n += candidate(sb, now);
	if (n == 0 || sbx_draining || !(cand = calloc(n, sizeof *cand)))
		return false;
	for (struct sbx_sandbox *sb = sandboxes; sb && n_cand < n; sb = sb->next)
		if (candidate(sb, now) && (cand[n_cand] = strdup(sb->session_id)))
			n_cand++;
	return n_cand > 0;
}

char *
reap_question(void)
{
	char  *q;
	size_t len;

	if (!cand && !start_round())
	{
		end_round();
		stats.rounds++;
		return NULL;
	}
	pending = n_cand - pos < REAP_BATCH ? n_cand - pos : REAP_BATCH;
	q = malloc(2 + pending * 37);
	if (!q)
	{
		end_round();
		return NULL;
	}
	len = 0;
	q[len++] = '{';
	for (size_t i = 0; i < pending; i++)
		len += (size_t) sprintf(q + len, "%s%s", i ? "," : "", cand[pos + i]);
	q[len++] = '}';
	q[len] = '\0';
	return q;
}

struct reaping
{
	char id[SBX_ID_LEN + 1];
	char session_id[SBX_SESSION_MAX + 1];
};

static void
reaped(void *ud, int r)
{
	struct reaping *rp = ud;

	if (r < 0)
	{
		errno = -r;
		stats.delete_failures++;
		log_error("reaper: sandbox %s of ended session %s: cannot delete it: %m (the next start "
				  "tries again)",
				  rp->id, rp->session_id);
	}
	else
	{
		stats.reaped++;
		log_notice("reaper: sandbox %s of ended session %s destroyed", rp->id, rp->session_id);
	}
	free(rp);
}

void
reap_ended(const char *session_id)
{
	time_t				now = time(NULL);
	struct sbx_sandbox *sb, *next;

	for (sb = sandboxes; sb; sb = next)
	{
		struct reaping *rp;
		int				r;

		next = sb->next; /* a stopped sandbox is freed at once */
		if (strcasecmp(sb->session_id, session_id) != 0 || !candidate(sb, now))
			continue;
		rp = calloc(1, sizeof *rp);
		if (!rp)
			return;
		memcpy(rp->id, sb->id, sizeof rp->id);
		memcpy(rp->session_id, sb->session_id, sizeof rp->session_id);
		log_notice("reaper: session %s ended; destroying its sandbox %s (container %s)",
				   rp->session_id, rp->id, ct_state_name(sb->ct.state));
		r = sandbox_destroy(sb, reaped, rp);
		if (r < 0)
		{
			if (r == -EBUSY)
				log_info("reaper: sandbox %s: an export is running; reaping it later", rp->id);
			free(rp);
		}
	}
}

void
reap_answered(bool ok, const char *why)
{
	if (!cand)
		return;
	if (!ok)
	{
		stats.query_failures++;
		if (!warned)
			log_warning("reaper: nadi.sessions_ended failed: %s; asking again in %llu ms",
						why ? why : "unknown error", (unsigned long long) cfg.reap_interval_ms);
		warned = true;
		end_round();
		return;
	}
	warned = false;
	pos += pending;
	pending = 0;
	if (pos >= n_cand)
	{
		log_debug("reaper: asked about %zu sessions", n_cand);
		end_round();
		stats.rounds++;
	}
}

void
reap_get_stats(struct reap_stats *s)
{
	*s = stats;
}
