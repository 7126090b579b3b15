/*
 * session_core.h — the session core: the state machine, SessionTx (the
 * per-session lock every writer takes first), event sequencing and the fence
 * (lease epochs).  It sits on the base layer (nadi.h: util, clock, caller,
 * wake, GUCs) and calls nothing above it: no SQL-callable function and no
 * code of sessions, leases, the inbox, events or placement.  The SQL API
 * (session.h) builds on it.  scripts/check-layers enforces the rule on the
 * objects at build time.
 */
#ifndef NADI_SESSION_CORE_H
#define NADI_SESSION_CORE_H

#include "nadi.h"

typedef enum SessionState
{
	SS_PENDING = 0,
	SS_PLACED,
	SS_ACTIVE,
	SS_SUSPENDED,
	SS_TERMINATING,
	SS_TERMINATED,
	SS_FAILED,
	SS_COUNT
} SessionState;

/* An edge of the state machine, with the cause recorded by default. */
typedef struct SessionTransition
{
	SessionState from;
	SessionState to;
	const char *cause;
} SessionTransition;

/*
 * A locked session.  session_lock() takes the row lock (FOR NO KEY UPDATE)
 * that serializes all writers of one session; the fields are then stable
 * until the transaction ends.  Changes are made to the struct and written
 * back by session_save().  Events get their sequence numbers here, under the
 * lock, so they are gapless: a rollback takes the numbers back with the rows.
 */
typedef struct SessionTx
{
	pg_uuid_t	id;
	char	   *id_text;
	char	   *tenant;
	SessionState state;
	SessionState orig_state;
	char	   *cell_host_id;	/* NULL when not placed */
	char	   *sandbox_host_id;
	int64		last_seq;
	int64		orig_last_seq;
	int32		crash_count;
	Jsonb	   *policy;
	bool		dirty;
	bool		hosts_changed;	/* cell/sandbox host to be written back */
} SessionTx;

/* A session's lease as read under the session lock. */
typedef struct LeaseInfo
{
	bool		held;
	char	   *cell_host_id;
	int64		epoch;
	TimestampTz expires_at;
} LeaseInfo;

extern const char *session_state_name(SessionState s);
extern SessionState session_state_from_name(const char *name);
extern bool session_state_is_live(SessionState s);
extern const SessionTransition *session_transitions(int *count);

/* All of these expect SPI to be connected. */
extern void session_not_found(const pg_uuid_t *id) pg_attribute_noreturn();
extern void session_require_visible(const pg_uuid_t *id);
extern SessionTx *session_lock(const pg_uuid_t *id);
extern void session_set_state(SessionTx *tx, SessionState to, const char *cause);
extern void session_set_hosts(SessionTx *tx, const char *cell_host_id, const char *sandbox_host_id);
extern int64 session_event(SessionTx *tx, const char *kind, Jsonb *payload,
						   int64 command_id, int64 epoch);

/*
 * Events of many sessions inserted by one statement.  session_event_batched
 * numbers an event under its session's lock exactly as session_event does
 * (gapless; a rollback takes the numbers back) but keeps the row;
 * session_events_flush inserts every kept row, in one INSERT, before the
 * function returns.  Lives in the SPI procedure context.
 */
typedef struct EventBatch
{
	int			n;
	int			cap;
	Datum	   *session_ids;
	Datum	   *seqs;
	Datum	   *tenants;
	Datum	   *kinds;
	Datum	   *payloads;
	Datum	   *command_ids;
	bool	   *command_id_nulls;
	Datum	   *epochs;
	bool	   *epoch_nulls;
} EventBatch;

extern int64 session_event_batched(EventBatch *b, SessionTx *tx, const char *kind, Jsonb *payload,
								   int64 command_id, int64 epoch);
extern void session_events_flush(EventBatch *b);
extern void session_save(SessionTx *tx);

/* The fence, under the session lock. */
extern LeaseInfo lease_read(const SessionTx *tx);
extern bool lease_current(const LeaseInfo *l, int64 epoch);
extern LeaseInfo lease_check(const SessionTx *tx, int64 epoch);
extern SessionTx *session_lock_fenced(const pg_uuid_t *id, int64 epoch, LeaseInfo *lease);

#endif							/* NADI_SESSION_CORE_H */
