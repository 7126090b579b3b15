/*
 * acp_int.h — what acp.c and acp_session.c share: the state of an ACP
 * connection and of its sessions, and the helpers that send messages and
 * run database calls for a connection.  Not for other files (edge.h has the
 * public ACP interface).
 */
#ifndef ACP_INT_H
#define ACP_INT_H

#include "edge.h"

#define ACP_MAX_CMDS 256
#define ACP_TEXT_MAX (64 * 1024)
#define ACP_OUTPUT_TAIL (8 * 1024) /* output shown while a tool call runs */
/* Room one event's messages may need: tool text and raw output are capped. */
#define ACP_RESERVE (192 * 1024)

/* JSON-RPC and ACP error codes */
#define RPC_PARSE_ERROR -32700
#define RPC_INVALID_REQUEST -32600
#define RPC_METHOD_NOT_FOUND -32601
#define RPC_INVALID_PARAMS -32602
#define RPC_INTERNAL_ERROR -32603
#define ACP_AUTH_REQUIRED -32000
#define ACP_NOT_FOUND -32002
/* a limit of the edge (sessions per connection); data.code names it */
#define ACP_LIMIT_EXCEEDED -32029

typedef struct AcpCmd
{
	int64_t		   id;
	char		   call_id[48];
	char		   call_name[128];
	json_t		  *call_args;
	char		  *out; /* the tail of the call's tool.output, ACP_OUTPUT_TAIL bytes at most */
	size_t		   out_len;
	bool		   perm_pending;
	bool		   perm_asked;
	bool		   cancel_requested;
	bool		   finished;
	const char	  *stop;
	json_t		  *stop_meta;
	json_t		  *prompt_id; /* the session/prompt waiting for this command */
	struct AcpCmd *next;
} AcpCmd;

typedef struct AcpSession
{
	AcpConn			  *conn;
	char			   sid[37];
	EdgeSub			   sub;
	json_t			  *open_id;	  /* session/new or session/load waiting */
	json_t			  *open_meta; /* the answer's _meta (session/fork), or NULL */
	bool			   is_load;
	bool			   replaying;
	int64_t			   seq;			  /* the event being turned into updates */
	int64_t			   quiet_through; /* no updates for events up to this seq */
	AcpCmd			  *cmds;
	int				   ncmds;
	struct AcpSession *next;
} AcpSession;

/* A database call made for a connection, dropped if the connection goes. */
typedef struct AcpOp
{
	AcpConn		 *conn;
	EdgeJob		 *job;
	json_t		 *rpc_id;
	char		  sid[37];
	int64_t		  cmd;
	struct AcpOp *prev, *next;
} AcpOp;

/* A session/request_permission we sent and await an answer to. */
typedef struct AcpPerm
{
	int64_t			rpc_id;
	char			sid[37];
	int64_t			cmd;
	struct AcpPerm *next;
} AcpPerm;

struct AcpConn
{
	char				id[33];
	const AcpTransport *t;
	void			   *tdata;
	EdgeAuth			auth;
	bool				initialized;
	bool				closing;
	EdgeQuota		   *quota; /* the connection's share of the limits */
	AcpSession		   *sessions;
	int					nsessions; /* attached */
	int					opening;   /* session/new in flight */
	AcpSession		   *dead;	   /* detached; freed on the next iteration */
	EvTimer				dead_timer;
	AcpOp			   *ops;
	AcpPerm			   *perms;
	int64_t				next_rpc_id;
	EvTimer				reap;
	AcpConn			   *prev, *next;
};

/* acp.c */
void	acp_send(AcpConn *c, json_t *msg, const char *session, json_t *response_id);
void	acp_reply(AcpConn *c, json_t *id, json_t *result);
void	acp_reply_error(AcpConn *c, json_t *id, int code, const char *message, json_t *data);
void	acp_reply_problem(AcpConn *c, json_t *id, const EdgeProblem *p);
void	acp_notify_update(AcpSession *s, json_t *update);
json_t *acp_text_block(const char *text);
AcpOp  *acp_op_new(AcpConn *c, json_t *rpc_id, const char *sid, int64_t cmd);
void	acp_op_done(AcpOp *op);
bool	acp_op_submit(AcpOp *op, EdgeStmt stmt, int n, const char *const *params, EdgeDbDone done);
void	acp_enqueue(AcpOp *op, const char *sid, const char *type, json_t *payload, EdgeDbDone done);

/* acp_session.c */
AcpSession *acp_session_find(AcpConn *c, const char *sid);
void acp_session_attach(AcpConn *c, const char *sid, int64_t after, json_t *open_id, bool is_load,
						int64_t quiet_through);
void acp_session_detach(AcpSession *s);
void acp_free_dead(AcpConn *c);
AcpCmd *acp_cmd_get(AcpSession *s, int64_t id);
void	acp_cmd_answer(AcpSession *s, AcpCmd *m);

#endif /* ACP_INT_H */
