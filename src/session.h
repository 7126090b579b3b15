/*
 * session.h — the session state machine and SessionTx, the per-session lock
 * through which every change to a session, its lease, its commands and its
 * events goes (session.c).
 */
#ifndef NADI_SESSION_H
#define NADI_SESSION_H

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

extern const char *session_state_name(SessionState s);
extern SessionState session_state_from_name(const char *name);
extern bool session_state_is_live(SessionState s);

/* All of these expect SPI to be connected. */
extern SessionTx *session_lock(const pg_uuid_t *id);
extern void session_set_state(SessionTx *tx, SessionState to, const char *cause);
extern void session_set_hosts(SessionTx *tx, const char *cell_host_id, const char *sandbox_host_id);
extern int64 session_event(SessionTx *tx, const char *kind, Jsonb *payload,
						   int64 command_id, int64 epoch);
extern void session_save(SessionTx *tx);
extern Datum session_row(FunctionCallInfo fcinfo, const pg_uuid_t *id, MemoryContext outer);
extern void session_finish_termination(SessionTx *tx, const char *cause);

/* lease.c: the fencing check, under the session lock */
typedef struct LeaseInfo
{
	bool		held;
	char	   *cell_host_id;
	int64		epoch;
	TimestampTz expires_at;
} LeaseInfo;

extern LeaseInfo lease_read(const SessionTx *tx);
extern void lease_check(const SessionTx *tx, int64 epoch);
extern int	lease_requeue_running(SessionTx *tx, bool count_attempt, const char *reason,
								  int *dead_out);
extern void lease_drop(SessionTx *tx, const char *reason);

/* placement.c */
extern void placement_require_fit(const SessionTx *tx, const char *host);

/* events.c */
extern void events_kind_validate(const char *kind);
extern void events_append_array(SessionTx *tx, Jsonb *events, int64 command_id, int64 epoch);

/* inbox.c */
extern int	inbox_cancel_open(SessionTx *tx, const char *reason);
extern void inbox_require_visible_session(const pg_uuid_t *id);

#endif							/* NADI_SESSION_H */
