/*
 * session.h — the SQL API of sessions, leases, the inbox, events and
 * placement, built on the session core (session_core.h).  These files call
 * the core and one another; the core never calls them.
 */
#ifndef NADI_SESSION_H
#define NADI_SESSION_H

#include "session_core.h"

/* session.c */
extern Datum session_row(FunctionCallInfo fcinfo, const pg_uuid_t *id, MemoryContext outer);
extern void session_finish_termination(SessionTx *tx, const char *cause);
extern void session_insert(const pg_uuid_t *id, const char *tenant, Jsonb *metadata,
						   Jsonb *labels, Jsonb *policy);

/* lease.c */
extern void lease_drop(SessionTx *tx, const char *reason);

/* placement.c */
extern void placement_require_fit(const SessionTx *tx, const char *host);

/* replay.c */
typedef struct ReplayFork
{
	int64		seq;			/* the fork point used (at most the one asked) */
	char	   *messages;		/* the conversation at seq: a JSON array */
	char	   *workspace;		/* the files at seq: a snapshot (JSON text), or NULL */
} ReplayFork;
extern ReplayFork replay_fork_point(const pg_uuid_t *id, int64 at_seq);
extern char *replay_workspace_at(const pg_uuid_t *id, int64 upto);

/* events.c */
extern void events_append_array(SessionTx *tx, Jsonb *events, int64 command_id, int64 epoch,
								EventBatch *batch);
extern void events_check_array(Jsonb *events);

/* inbox.c */
extern int	inbox_cancel_open(SessionTx *tx, const char *reason);
extern void inbox_cancel_command(SessionTx *tx, int64 command_id, const char *reason);
extern void inbox_stop_at_cell(SessionTx *tx, int64 command_id, const char *reason);
extern void inbox_check_key(text *key);
extern void inbox_check_command(const char *type, Jsonb *payload);
extern HeapTuple inbox_enqueue_locked(SessionTx *tx, const char *type, Jsonb *payload, text *key,
									  int64 *open, TupleDesc *desc);
extern SPITupleTable *inbox_claim_head(SessionTx *tx, int64 epoch);
extern SPITupleTable *inbox_complete_locked(SessionTx *tx, int64 command_id, int64 epoch,
											Jsonb *result, Jsonb *events, EventBatch *batch,
											const char **refused);

/* busy.c */
extern void busy_check_policy(Jsonb *j, const char *where);
extern bool busy_apply(SessionTx *tx, Jsonb *payload);

#endif							/* NADI_SESSION_H */
