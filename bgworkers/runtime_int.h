/*
 * runtime_int.h — what the files of the agent runtime share (runtime.c:
 * the commands; runtime_store.c: writes, store needs and tokens;
 * runtime_tools.c: the tool-call client).  Not for hosts: they use
 * runtime.h.  No PostgreSQL headers.
 */
#ifndef NADI_RUNTIME_INT_H
#define NADI_RUNTIME_INT_H

#include "runtime.h"

#define USECS_PER_SEC		INT64_C(1000000)

/* Where a command goes on (RtCommand.state).  "(store)" states read need.groups, "(http)" a reply. */
typedef enum RtState
{
	ST_DONE,
	/* a message command */
	ST_MSG_DECISION,			/* (store) the permission decision of a resumed command */
	ST_LOOP,					/* the next model step or tool call */
	ST_MODEL,
	ST_MODEL_CANCEL,			/* (store) a cancel before a slow step */
	ST_MODEL_DELAY,
	ST_MODEL_TOKEN,
	ST_MODEL_CALL,
	ST_MODEL_ANSWER,			/* (http) */
	ST_MODEL_GOT,
	ST_MODEL_CANCEL_AFTER,		/* (store) a cancel during a slow step */
	ST_MODEL_REPLY,
	ST_CONVERSE_TOOL,
	ST_CONVERSE_CHECKED,
	ST_CONVERSE_CALLED,
	ST_CONVERSE_CANCEL,			/* (store) */
	/* a tool command */
	ST_TOOLCMD_CHECKED,
	ST_TOOLCMD_CALLED,
	/* sub-step: a tool name, checked (then cmd.ret, with cmd.check) */
	ST_CHECK,
	ST_CHECK_SEND,
	ST_CHECK_FLUSHED,			/* (store) */
	ST_CHECK_LISTED,			/* (http) */
	ST_CHECK_END,
	/* sub-step: a tool call, made and recorded (then cmd.ret, with cmd.rc) */
	ST_CALL,
	ST_CALL_CUT,				/* (store) */
	ST_CALL_RECORD,
	ST_CALL_CANCEL,				/* (store) */
	ST_CALL_SANDBOX,
	ST_CALL_SANDBOX_MADE,		/* (http) */
	ST_CALL_PROXY_TOKEN,
	ST_CALL_POST,
	ST_CALL_ANSWERED,			/* (http) */
	ST_CALL_END,
	/* sub-step: a token minted (then cmd.token_next) */
	ST_TOKEN_MINTED,			/* (store) */
	/* a message rolled back by a newer one: its workspace restored, then it stops */
	ST_MSG_CANCEL,				/* (store) a resumed message asked to stop while it waited */
	ST_ROLLBACK,
	ST_ROLLBACK_SEND,
	ST_ROLLBACK_SENT			/* (http) */
} RtState;

typedef enum ToolCheck
{
	TOOL_OFFERED,				/* go on: cmd.info is the host's entry */
	TOOL_REJECTED,				/* not a name, or not a tool the host offers */
	TOOL_UNKNOWABLE,			/* the host's list could not be had: retry */
	TOOL_LOST					/* the lease is gone */
} ToolCheck;

/* runtime.c */
extern void rt_log(Runtime *rt, RtLogLevel level, const char *fmt,...) __attribute__((format(printf, 3, 4)));

/* runtime_store.c: needs */
extern void need_clear(RtNeed *n);
extern RtNeed *need_store(RtSession *s, bool flush, const char *sql, int nargs, const char *const *args);
extern RtNeed *need_command_store(RtSession *s, bool flush, const char *sql);
extern json_t *took_store(RtSession *s);
extern RtNeed *need_cancel_check(RtSession *s);
extern bool took_cancel(RtSession *s);
extern RtNeed *need_http(RtSession *s, RtNeedKind kind, int next);
extern RtNeed *need_timer(RtSession *s, long ms, int next);

/* runtime_store.c: tokens */
extern const char *token_get(RtSession *s, RtTokenKind kind, char *err, size_t errlen);
extern RtNeed *need_token(RtSession *s, RtTokenKind kind, int next);
extern void took_token(Runtime *rt, RtSession *s);

/* runtime_store.c: fenced writes, queued in RtSession.pending */
extern bool rt_write(RtSession *s, const char *sql, int nargs, const char *const *args);
extern bool rt_event(RtSession *s, const char *kind, json_t *payload);
extern bool rt_complete_with(RtSession *s, json_t *result, const char *kind, json_t *payload);
extern void rt_fail_with(RtSession *s, json_t *error, bool retryable);
extern void rt_fail(RtSession *s, const char *code, const char *message, bool retryable);
extern bool rt_tool_error(RtSession *s, json_t *name_j, const char *code, const char *message);
extern void rt_park(RtSession *s, json_t *call);

/* runtime_tools.c: one step of a name check or a call (ST_CHECK … ST_CALL_END) */
extern RtNeed *tool_advance(Runtime *rt, RtSession *s, const HttpReply *reply);

/* runtime_tools.c: a rolled-back command's end (ST_ROLLBACK … ST_ROLLBACK_SENT) */
extern RtNeed *rollback_advance(Runtime *rt, RtSession *s, const HttpReply *reply);

/* ^[a-z][a-z0-9_]{0,63}$, as at enqueue */
extern bool tool_name_valid(const char *name);

/* The cache slot of a sandbox host (base URL shorter than ToolsCache.url). */
extern ToolsCache *tools_slot(Runtime *rt, const char *base);

/* Should the host be asked for its list now, for a call to name? */
extern bool tools_due(const ToolsCache *c, const char *name, int64_t now);

/* GET <base>/v1/tools, and its answer taken into c: 0, or -EAGAIN (err). */
extern int	tools_list_request(HttpRequest *req, const char *base, const char *token,
							   long timeout_ms);
extern int	tools_list_take(ToolsCache *c, const HttpReply *reply, bool *unauthorized,
							char *err, size_t errlen);

/* POST <base>/v1/sandboxes, and the id it answers (0, -EAGAIN, -EPROTO, -EINTR). */
extern int	tool_sandbox_request(HttpRequest *req, const char *base, const char *token,
								 const char *session_id, const char *image, long timeout_ms);
/* The same with "from" (a fork's workspace snapshot; NULL: none). */
extern int	tool_sandbox_request_from(HttpRequest *req, const char *base, const char *token,
									  const char *session_id, const char *image, json_t *from,
									  long timeout_ms);
extern int	tool_sandbox_take(const HttpReply *reply, char *id, size_t idlen,
							  char *err, size_t errlen);

/*
 * POST <base>/v1/sandboxes/<id>/tools/<name>, and its answer: 0 and
 * *result ({ok, result, ...}); -EAGAIN when the call did not reach the
 * host (or it could not take it: retry); -ETIMEDOUT when it was sent and no
 * usable answer came (it may have run); -EINTR when the driver stopped it;
 * another negative errno for a call the sandbox refused (err says why).
 */
extern int	tool_call_request(HttpRequest *req, const char *base, const char *sandbox_id,
							  const char *name, const char *token, json_t *args,
							  const char *proxy_token, long wait_ms, char *err, size_t errlen);
extern int	tool_call_take(const HttpReply *reply, json_t **result, bool *sandbox_lost,
						   bool *unauthorized, char *err, size_t errlen);

extern long tool_wait_ms(json_t *info, json_t *args, long tool_timeout_ms);

/* runtime_output.c: a new call's output starts; the rest of the call's output goes to s->pending. */
extern void rt_output_reset(RtCommand *c);
extern void rt_output_flush(RtSession *s);
extern bool tool_has_side_effects(json_t *info);
extern json_t *tool_content(json_t *result);
extern json_t *tool_failure(json_t *result);

#endif							/* NADI_RUNTIME_INT_H */
