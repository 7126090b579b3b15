/*
 * reap.h — the reaper: destroys the sandboxes whose session ended.  pg.c
 * asks the database (nadi.sessions_ended) on its one connection when
 * reap_next_ms() is due, with the ids reap_question() gives, and hands each
 * id of the answer to reap_ended(), then reap_answered().  Without a
 * database (no pg_conninfo) or with reap_interval 0 nothing is reaped.
 */
#ifndef SBX_REAP_H
#define SBX_REAP_H

#include <stdbool.h>
#include <stdint.h>

/* Session ids a question takes at most (nadi.sessions_ended takes 1000). */
#define REAP_BATCH 500

struct reap_stats
{
	uint64_t reaped;		  /* sandboxes destroyed because their session ended */
	uint64_t query_failures;  /* questions that failed or were cut off */
	uint64_t delete_failures; /* reaped sandboxes whose subvolumes could not be deleted */
	uint64_t rounds;		  /* rounds that asked about every candidate */
};

/* When the next question is due (now_ms() clock); UINT64_MAX: never (disabled). */
uint64_t reap_next_ms(void);
/*
 * The next question: a uuid[] literal of up to REAP_BATCH session ids (the
 * caller frees it), or NULL when there is nothing to ask (the next round is
 * then scheduled one reap_interval on).
 */
char *reap_question(void);
/* One id of the answer: destroy the sandboxes of that session. */
void reap_ended(const char *session_id);
/* The question was answered (ok) or failed (why says how). */
void reap_answered(bool ok, const char *why);
void reap_get_stats(struct reap_stats *s);

#endif
