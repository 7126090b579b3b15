/*
 * runtime.h — the agent runtime: one command of one session (a direct tool
 * call, or a message: model steps, tool calls, permission, resumption) as a
 * state machine that never waits.  It returns what it needs next (an
 * RtNeed: statements for the store, a model request, a tool request or a
 * timer); its driver meets the need, blocking or not, and hands the outcome
 * back (runtime_on_store, runtime_on_model_reply, runtime_on_tool_result,
 * runtime_on_timer), until the need is RT_NEED_NONE: the command is over,
 * and what it wrote last waits in RtSession.pending for the host to commit.
 * One need per session at a time; sessions are independent.
 *
 * No PostgreSQL headers: the same runtime runs in the embedded cell
 * (bgworkers/cell.c, SPI) and outside Postgres (libpq).  It allocates with
 * malloc (jansson), is configured by RuntimeConfig and logs through its
 * callback.  bgworkers/README.md has the call sequence.
 */
#ifndef NADI_RUNTIME_H
#define NADI_RUNTIME_H

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>

#include "http_client.h"
#include "model_client.h"
#include "cell_store.h"

typedef enum RtLogLevel
{
	RT_LOG_DEBUG,
	RT_LOG_INFO,				/* the server log's LOG */
	RT_LOG_WARNING
} RtLogLevel;

/* Where the runtime's messages go; msg is complete (no newline). */
typedef void (*RtLogFn) (void *arg, RtLogLevel level, const char *msg);

/*
 * Everything the runtime is told.  The strings are the host's and must
 * stay valid during each call into the runtime; the runtime keeps no
 * pointer into them between calls (a request copies its URL, a command its
 * sandbox host), so the cell host may replace them between two needs.
 */
typedef struct RuntimeConfig
{
	const char *sandboxd_url;	/* sandbox host of sessions whose host has no address */
	const char *sandbox_image;	/* image of new sandboxes */
	long		tool_timeout_ms;	/* model calls, sandbox host requests; tool calls at least */
	ModelConfig model;
	int			model_max_steps;	/* model steps per message command */
	bool		proxy_tokens;	/* mint tokens for the credentials proxy */
	RtLogFn		log;
	void	   *log_arg;
} RuntimeConfig;

/* The tools one sandbox host lists (GET /v1/tools), runtime_tools.c. */
typedef struct ToolsCache
{
	char		url[256];
	json_t	   *tools;			/* name → entry, or NULL before the first list */
	int64_t		fetched_at;		/* the list's age (rt_now_us) */
	int64_t		tried_at;		/* the last attempt, good or bad */
	char		error[512];		/* why the last attempt failed (as RtCommand.err) */
} ToolsCache;

#define TOOLS_CACHE_SLOTS	8

/* A runtime: its configuration and what it caches across sessions. */
typedef struct Runtime
{
	RuntimeConfig cfg;
	ToolsCache	tools[TOOLS_CACHE_SLOTS];
} Runtime;

typedef enum RtTokenKind
{
	RT_TOKEN_MODEL,				/* nadi.model_token: model calls, via the proxy */
	RT_TOKEN_SANDBOX,			/* nadi.sandbox_token: the tools' egress, via the proxy */
	RT_TOKEN_SANDBOXD,			/* nadi.sandboxd_token: every call to the sandbox host */
	RT_TOKEN_KINDS
} RtTokenKind;

/*
 * A token minted in Postgres, kept until half its life is gone.  Tokens are
 * at most a few hundred bytes; longer ones are not cached.
 */
typedef struct RtToken
{
	char		token[1024];
	char		sandbox_id[128];	/* the sandbox a sandbox token is for */
	int64_t		renew_at;		/* with a token: mint a new one from then on */
	char		error[256];		/* without: why minting failed, retried after renew_at */
} RtToken;

typedef enum RtNeedKind
{
	RT_NEED_NONE,				/* the command is over */
	RT_NEED_STORE,				/* run need.groups (cell_store.h), then runtime_on_store */
	RT_NEED_MODEL,				/* perform need.http, then runtime_on_model_reply */
	RT_NEED_TOOL,				/* perform need.http, then runtime_on_tool_result */
	RT_NEED_TIMER				/* wait need.timer_ms, then runtime_on_timer */
} RtNeedKind;

#define RT_MAX_GROUPS 2

typedef struct RtNeed
{
	RtNeedKind	kind;
	StoreGroup	groups[RT_MAX_GROUPS];	/* the driver fills in the outcome */
	int			ngroups;
	int			flush;			/* the group of pending writes, or -1 */
	int			read;			/* the group the runtime reads, or -1 */
	HttpRequest http;
	long		timer_ms;
} RtNeed;

/* The command a session is running, between two needs (runtime.c). */
typedef struct RtCommand
{
	int64_t		id;
	json_t	   *payload;
	int			state;			/* where it goes on */
	int			ret;			/* where a sub-step returns to */
	int			token_next;		/* where it goes on once a token is there */
	RtTokenKind token_kind;
	int			step;			/* model steps taken */
	bool		approved;		/* the pending call was approved */
	bool		slow;			/* the model step under way is slow */
	int			rc;				/* a sub-step's outcome */
	int			check;			/* the outcome of a tool name check */
	const char *code;			/* and its error code */
	json_t	   *call;			/* the tool call at hand {name, args} */
	json_t	   *info;			/* its host's entry for the tool */
	json_t	   *args;
	json_t	   *result;
	json_t	   *reply;			/* the model's reply */
	json_t	   *rollback;		/* command.rolled_back's payload: the command stops rolled back */
	int64_t		model_sent_us;	/* when the model request went out (rt_now_us) */
	json_t	   *out;			/* the call's tool.output events not yet written */
	int64_t		out_bytes;		/* output taken of the call at hand */
	int64_t		out_at;			/* when its tool.output events were last written */
	bool		out_cut;		/* it reached RT_OUTPUT_MAX */
	char		base[256];		/* the session's sandbox host */
	char		err[512];
} RtCommand;

/* A session the host holds the lease of: what the runtime keeps of it. */
typedef struct RtSession
{
	char		id[40];			/* uuid, as text */
	int64_t		epoch;			/* the lease; < 0 once it is lost */
	char		sandbox_url[256];	/* the session's sandbox host, or "" */
	char		sandbox_id[128];	/* created on first tool call */
	json_t	   *messages;		/* the conversation: the cell's state */
	json_t	   *policy;
	json_t	   *pending;		/* writes not yet committed: [[sql, [args]], ...] */
	RtToken		tokens[RT_TOKEN_KINDS];
	RtCommand	cmd;
	RtNeed		need;
	json_t	   *fork_from;		/* a fork's workspace snapshot: its sandbox is made "from" it */
} RtSession;

extern void runtime_init(Runtime *rt);

/* A session taken over: its conversation (replayed) and policy are kept (new references). */
extern void runtime_session_init(RtSession *s, const char *id, int64_t epoch,
								 json_t *messages, json_t *policy, const char *sandbox_url);
extern void runtime_session_free(RtSession *s);

/*
 * The replayed state of a session (nadi.session_replay()): when it is a fork
 * whose origin had a workspace snapshot ("fork": {"workspace": {host_id,
 * sandbox_id, snapshot}}), its sandbox is made from that snapshot.
 */
extern void runtime_session_fork(RtSession *s, json_t *state);

/*
 * Start a command the host has just claimed for s (row: command_id, type,
 * payload).  Returns the first need.
 */
extern RtNeed *runtime_start(Runtime *rt, RtSession *s, json_t *row);

/* need.groups have run (each with its sqlstate, message, results). */
extern RtNeed *runtime_on_store(Runtime *rt, RtSession *s);

/* need.http was performed (or failed, or was aborted); reply is borrowed. */
extern RtNeed *runtime_on_model_reply(Runtime *rt, RtSession *s, const HttpReply *reply);
extern RtNeed *runtime_on_tool_result(Runtime *rt, RtSession *s, const HttpReply *reply);

/* need.timer_ms have passed. */
extern RtNeed *runtime_on_timer(Runtime *rt, RtSession *s);

/* A monotonic clock, µs. */
extern int64_t rt_now_us(void);

/*
 * tool.output (runtime_output.c): a tool call's output while it runs, as
 * its sandbox host streams it ({stream, data, offset, truncated?}, the
 * output lines of a streamed answer, http_client.h).  The runtime keeps it
 * for the call at hand, one event per stream, up to RT_OUTPUT_MAX bytes a
 * call.  The driver writes what is kept at most every RT_OUTPUT_EVERY_US,
 * while the call is in flight: runtime_output_due says when (0: nothing
 * kept), runtime_output_take gives the statements (fenced event_append,
 * for a group of the driver's transaction).  What is left when the
 * answer comes goes with the tool.result, before it.
 */
#define RT_OUTPUT_MAX		(64 * 1024)
#define RT_OUTPUT_EVERY_US	INT64_C(500000)

extern void runtime_tool_output(Runtime *rt, RtSession *s, json_t *output);
extern int64_t runtime_output_due(const RtSession *s);
extern json_t *runtime_output_take(RtSession *s);

#endif							/* NADI_RUNTIME_H */
