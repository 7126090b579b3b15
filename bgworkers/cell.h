/*
 * cell.h — the embedded cell host: worker processes that hold session
 * leases and run the agent loop (cell.c: leases, sessions, the main loop;
 * agent.c: one command; store.c: the SQL steps, each its own transaction).
 */
#ifndef NADI_CELL_H
#define NADI_CELL_H

#include "postgres.h"

#include <jansson.h>

#include "datatype/timestamp.h"
#include "utils/uuid.h"

#include "model.h"

extern char *nadi_cell_host_id;
extern int	nadi_cell_capacity;
extern int	nadi_heartbeat_interval_ms;
extern int	nadi_idle_suspend_ms;
extern char *nadi_sandboxd_url;
extern char *nadi_sandboxd_token;
extern char *nadi_sandbox_image;
extern int	nadi_tool_timeout_ms;
extern char *nadi_model_provider;
extern char *nadi_model_url;
extern char *nadi_model_name;
extern int	nadi_model_max_steps;
extern bool nadi_proxy_tokens;

extern void cell_define_gucs(void);

/*
 * A token minted in Postgres: for the credentials proxy (nadi.model_token,
 * nadi.sandbox_token) or for the sandbox host (nadi.sandboxd_token), kept
 * until half its life is gone.  Tokens are at most a few hundred bytes;
 * longer ones are not cached.
 */
typedef struct ProxyToken
{
	char		token[1024];
	char		sandbox_id[128];	/* the sandbox a sandbox token is for */
	TimestampTz renew_at;		/* with a token: mint a new one from then on */
	char		error[256];		/* without: why minting failed, retried after renew_at */
} ProxyToken;

/* A session this worker holds the lease of. */
typedef struct CellSession
{
	pg_uuid_t	id;				/* hash key */
	char		id_text[UUID_LEN * 2 + 5];
	int64		epoch;
	TimestampTz lease_expires;
	TimestampTz last_active;
	char		sandbox_url[256];	/* the session's sandbox host, or "" */
	char		sandbox_id[128];	/* created on first tool call */
	json_t	   *messages;		/* the conversation: the cell's state */
	json_t	   *policy;
	json_t	   *pending;		/* writes not yet committed: [[sql, [args]], ...] */
	bool		batched;		/* defer writes to the round's group commit */
	bool		listed;			/* seen in this round's listing */
	ProxyToken	model_token;	/* sent with model calls */
	ProxyToken	sandbox_token;	/* passed with tool calls, for the tools' egress */
	ProxyToken	sandboxd_token; /* the session's credential at its sandbox host */
} CellSession;

/* store.c: each call runs in a transaction of its own */
typedef struct StoreResult
{
	int			sqlerrcode;		/* 0 on success */
	char		message[512];
	json_t	   *rows;			/* array of objects (column → value) */
} StoreResult;

extern StoreResult store_exec(const char *sql, int nargs, const char *const *args);

/* A group of statements that commit or roll back together (store_exec_groups). */
typedef struct StoreGroup
{
	json_t	   *stmts;			/* [[sql, [text args]], ...] */
	int			sqlerrcode;		/* 0 when the group committed */
	char		message[256];
	json_t	   *results;		/* one row array per statement */
} StoreGroup;

extern void store_exec_groups(StoreGroup *groups, int ngroups);
extern void store_group_free(StoreGroup *g);
extern void store_result_free(StoreResult *r);
extern bool store_is(const StoreResult *r, const char *sqlstate);

/* cell.c */
extern void cell_keepalive(bool forget);

/* agent.c */
extern bool agent_run_one(CellSession *s);
extern void agent_run_claimed(CellSession *s, json_t *row);
extern void agent_flush(CellSession *s);
extern json_t *agent_stmt(const char *sql, int nargs, const char *const *args);
extern ModelConfig agent_model_config(void);

#endif							/* NADI_CELL_H */
