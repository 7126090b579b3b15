/*
 * edge.h — declarations shared by the files of nadi-edge, the stateless
 * HTTP front of Nadi.  One thread runs one event loop (daemonlib/evloop.c); every other
 * file registers its file descriptors and timers there and never blocks.
 * Functions return 0 or a negative errno unless they say otherwise.
 */
#ifndef EDGE_H
#define EDGE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "daemonlib/evloop.h"
#include "daemonlib/http.h"
#include "nadi_version.h"
#include "daemonlib/problem.h"

#define EDGE_UNUSED __attribute__((unused))
#define EDGE_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* ------------------------------------------------------------------------
 * Configuration (main.c: the keys of daemonlib/conf.h)
 * ------------------------------------------------------------------------ */
typedef struct EdgeConfig
{
	char	*config_file; /* --config: key = value lines */
	char	*listen_addr;
	int		 port;		 /* 0: any free one; the bound one once listening */
	char	*ready_file; /* gets the bound port once serving */
	char	*conninfo;
	int		 pool_size;		  /* libpq connections for requests */
	int		 queue_max;		  /* jobs waiting for a connection */
	int		 queue_timeout_s; /* a job waits at most this long */
	int		 max_conns;		  /* HTTP connections in total */
	int		 max_conns_per_ip;
	int		 max_streams;			 /* SSE streams, REST and ACP together */
	int		 max_acp;				 /* ACP connections */
	int		 max_streams_per_tenant; /* of max_streams, for one tenant */
	int		 max_acp_per_tenant;	 /* of max_acp, for one tenant */
	int		 max_acp_sessions;		 /* sessions loaded on one ACP connection */
	uint64_t body_limit;
	int		 json_depth;
	int		 header_timeout_s; /* request line and headers */
	int		 body_timeout_s;   /* request body */
	int		 idle_timeout_s;   /* no bytes either way */
	int		 heartbeat_s;	   /* SSE ": ping" and WebSocket ping */
	uint64_t stream_buffer;	   /* per SSE stream / ACP connection */
	int		 jwks_refresh_s;
	int		 drain_timeout_s;
	int		 acp_idle_s; /* HTTP ACP connection with no stream */
	bool	 dev_no_auth;
	int		 verbose;
	bool	 export_db_metrics;		/* this edge exports the nadi_db_* numbers (operator.c) */
	int		 db_metrics_interval_s; /* and reads them this often */
	uint64_t files_max_bytes;		/* largest file PUT through the edge (files.c) */
	uint64_t files_buffer;			/* bytes buffered per transfer, each way */
	int		 max_transfers;			/* file transfers at once */
	int		 max_transfers_per_tenant;
	char	*files_image; /* image of a sandbox a PUT makes; NULL: the database's */
} EdgeConfig;

extern EdgeConfig	 edge_cfg;
extern volatile bool edge_draining;

/* ------------------------------------------------------------------------
 * Logging: daemonlib/log.h (log_error, log_warning, log_info, log_debug)
 * ------------------------------------------------------------------------ */
#include "daemonlib/log.h"

/* ------------------------------------------------------------------------
 * Byte buffers (buf.c)
 * ------------------------------------------------------------------------ */
typedef struct EdgeBuf
{
	char  *data;
	size_t off; /* consumed bytes at the front */
	size_t len; /* bytes written, including consumed */
	size_t cap;
} EdgeBuf;

int	  buf_append(EdgeBuf *b, const void *p, size_t n);
int	  buf_puts(EdgeBuf *b, const char *s);
int	  buf_printf(EdgeBuf *b, const char *fmt, ...) EDGE_PRINTF(2, 3);
void  buf_consume(EdgeBuf *b, size_t n);
void  buf_reset(EdgeBuf *b);
void  buf_free(EdgeBuf *b);
char *buf_cstr(EdgeBuf *b); /* NUL-terminated view; NULL on ENOMEM */

/* FNV-1a of a string, for the small hash tables (feeds, tenants). */
static inline unsigned
edge_str_hash(const char *s)
{
	unsigned h = 2166136261u;

	for (const char *p = s; *p; p++)
		h = (h ^ (unsigned char) *p) * 16777619u;
	return h;
}

static inline size_t
buf_pending(const EdgeBuf *b)
{
	return b->len - b->off;
}

static inline const char *
buf_head(const EdgeBuf *b)
{
	return b->data + b->off;
}

/* ------------------------------------------------------------------------
 * Problems (problem.c): RFC 9457 application/problem+json
 * ------------------------------------------------------------------------ */
typedef struct problem EdgeProblem; /* daemonlib/problem.h */

void problem_from_db(EdgeProblem *p, const char *sqlstate, const char *msg, const char *detail,
					 const char *hint);

/* ------------------------------------------------------------------------
 * JSON input (json.c)
 * ------------------------------------------------------------------------ */
json_t *json_parse_strict(const char *s, size_t n, EdgeProblem *p);
int		json_only_fields(json_t *obj, const char *const *allowed, EdgeProblem *p);
bool	edge_parse_int64(const char *s, int64_t min, int64_t max, int64_t *out);
char   *json_compact(json_t *j); /* malloc'd text, never NULL-safe-free */

/* ------------------------------------------------------------------------
 * Authentication (bearer.c): bearer tokens verified locally against the
 * public keys of nadi.jwks(); the database verifies them again.
 * ------------------------------------------------------------------------ */
typedef enum EdgeScope
{
	SCOPE_NONE = 0,
	SCOPE_ADMIN,
	SCOPE_TENANT,
	SCOPE_SESSION,
	SCOPE_SANDBOX
} EdgeScope;

typedef struct EdgeAuth
{
	char	 *token; /* malloc'd compact JWT; NULL in dev-no-auth */
	char	  tenant[256];
	char	  subject[256];
	EdgeScope scope;
	bool	  has_sid;
	char	  sid[37];
	int64_t	  exp; /* Unix seconds; 0 without a token */
} EdgeAuth;

typedef enum AuthResult
{
	AUTH_OK = 0,
	AUTH_NO_TOKEN, /* and --dev-no-auth: run as the edge's role */
	AUTH_RETRY,	   /* unknown key: refresh the key set, then retry */
	AUTH_FAIL	   /* problem filled in */
} AuthResult;

typedef void (*AuthWaitFn)(void *arg);

int		   auth_init(void);
AuthResult auth_check(const char *authorization, EdgeAuth *out, EdgeProblem *p);
bool	   auth_wait_refresh(AuthWaitFn fn, void *arg); /* false: refresh not possible now */
void	   auth_wait_cancel(void *arg);
void	   auth_tick(void);
void	   auth_reload(void);
void	   auth_clear(EdgeAuth *a);
int		   auth_copy(EdgeAuth *dst, const EdgeAuth *src);
bool	   auth_same_principal(const EdgeAuth *a, const EdgeAuth *b);
bool	   auth_expired(const EdgeAuth *a);
int		   auth_key_count(void);

/* ------------------------------------------------------------------------
 * Database (db.c): a small pool of non-blocking libpq connections running
 * one pipelined transaction per job, and one LISTEN connection.
 * ------------------------------------------------------------------------ */
typedef enum EdgeStmt
{
	STMT_PING = 0,
	STMT_JWKS,
	STMT_SESSION_CREATE,
	STMT_SESSION_GET,
	STMT_SESSION_LIST,
	STMT_SESSION_TERMINATE,
	STMT_COMMAND_ENQUEUE,
	STMT_COMMAND_ENQUEUE_MANY,
	STMT_COMMAND_GET,
	STMT_COMMAND_LIST,
	STMT_COMMAND_CANCEL,
	STMT_EVENTS_READ,
	STMT_EVENTS_FOLLOW, /* a subscriber's read: also the session's last seq */
	STMT_OPERATOR,		/* the operator's numbers, one JSON object (operator.c) */
	STMT_SESSION_FORK,	/* the fork as a session, its id, last seq, where it came from */
	STMT_FILES_BEGIN,	/* a file transfer: its audit row, the sandbox host, a token (files.c) */
	STMT_FILES_END,		/* and its outcome */
	STMT__COUNT
} EdgeStmt;

typedef struct EdgeDbResult
{
	bool		ok;
	char		sqlstate[6];
	const char *message;
	const char *detail;
	const char *hint;
	void	   *res; /* PGresult of the API statement when ok */
} EdgeDbResult;

typedef void (*EdgeDbDone)(void *arg, EdgeDbResult *r);
typedef struct EdgeJob EdgeJob;

int		 db_init(void);
EdgeJob *db_submit(EdgeStmt stmt, const EdgeAuth *auth, int nparams, const char *const *params,
				   EdgeDbDone done, void *arg);
EdgeJob *db_submit_ex(EdgeStmt stmt, const EdgeAuth *auth, int nparams, const char *const *params,
					  EdgeDbDone done, void *arg, bool urgent);
void	 db_cancel(EdgeJob *job);
void	 db_tick(void);
void	 db_shutdown(void);
int		 db_rows(EdgeDbResult *r);
const char *db_value(EdgeDbResult *r, int row, int col);
bool		db_isnull(EdgeDbResult *r, int row, int col);

typedef void (*DbNotifyFn)(const char *payload);
typedef void (*DbListenUpFn)(void);
void db_listen_handlers(DbNotifyFn on_notify, DbListenUpFn on_up);

typedef struct EdgeDbStats
{
	int		 pool_size;
	int		 pool_up;
	int		 pool_busy;
	int		 queued;
	uint64_t jobs;
	uint64_t errors;
	uint64_t rejected;
	uint64_t notifications;
	bool	 listen_up;
} EdgeDbStats;
void db_stats(EdgeDbStats *s);

/* ------------------------------------------------------------------------
 * HTTP (http.c): libmicrohttpd in external epoll mode
 * ------------------------------------------------------------------------ */
struct MHD_Connection;
struct MHD_Response;
typedef struct EdgeReq EdgeReq;

typedef void (*EdgeReqFree)(EdgeReq *req);

struct EdgeReq
{
	struct MHD_Connection *conn;
	const char			  *method;
	const char			  *url;
	struct req_body		   body;   /* daemonlib/http.h: up to --body-limit */
	HttpAccess			   access; /* request id, the access-log line */
	bool				   dispatched;
	bool				   suspended;
	struct MHD_Response	  *ready; /* response waiting for the connection to resume */
	int					   ready_status;
	EdgeAuth			   auth;
	bool				   has_auth;
	bool				   auth_retried;
	void (*auth_cont)(EdgeReq *req);
	uint64_t	started_ms;
	int			status; /* for metrics */
	const char *route;	/* for metrics */
	void	   *state;	/* owned by the route */
	EdgeReqFree state_free;
	EdgeJob	   *job;
	void	   *ext; /* owned by acp_http.c / ws.c */
	EdgeReqFree ext_free;
	HttpConn   *ci;		 /* its connection's deadlines (daemonlib/http.h) */
	char	   *raw_url; /* the request target as received, before MHD decoded it */
	/* a body streamed to its route as it comes (files.c); data NULL: its end */
	int (*upload)(EdgeReq *req, const char *data, size_t *size);
};

int			http_start(void);
void		http_quiesce(void);
void		http_stop(void);
void		http_tick(void);
int			http_run(void);
int			http_active(void);
const char *http_header(EdgeReq *req, const char *name);
const char *http_query(EdgeReq *req, const char *name);
int			http_respond(EdgeReq *req, int status, const char *ctype, const char *body, size_t len,
						 const char *const *headers);
int	 http_respond_json(EdgeReq *req, int status, const char *json, const char *const *headers);
int	 http_respond_problem(EdgeReq *req, const EdgeProblem *p);
int	 http_respond_response(EdgeReq *req, int status, struct MHD_Response *r);
void http_suspend(EdgeReq *req);
void http_resume(EdgeReq *req); /* undo http_suspend without an answer */
void http_resume_conn(struct MHD_Connection *conn);

/* ------------------------------------------------------------------------
 * Routes (routes.c)
 * ------------------------------------------------------------------------ */
void routes_dispatch(EdgeReq *req);
int	 route_authenticate(EdgeReq *req, void (*cont)(EdgeReq *req));

/* ------------------------------------------------------------------------
 * Files in and out of a session's sandbox (files.c)
 * ------------------------------------------------------------------------ */
bool files_is_route(const char *raw_url);
void files_route(EdgeReq *req);
int	 files_init(void);
void files_shutdown(void);
int	 files_active(void);
/* The file path of raw[0..n) (percent-encoded), checked; NULL with *why set. */
char *files_path_decode(const char *raw, size_t n, const char **why);

/* ------------------------------------------------------------------------
 * Session event feeds (feed.c): one fetch per session per notification,
 * fanned out to every subscriber of the session on this edge.
 * ------------------------------------------------------------------------ */
typedef struct EdgeFeed EdgeFeed;
typedef struct EdgeSub	EdgeSub;

typedef enum SubState
{
	SUB_CATCHUP = 0, /* reading history with its own queries */
	SUB_LIVE,		 /* fed by the session's feed */
	SUB_CLOSED
} SubState;

typedef struct EdgeSubOps
{
	/* Take one event (seq = cursor + 1).  false: no room (do not advance). */
	bool (*deliver)(EdgeSub *s, int64_t seq, const char *json, size_t len);
	/* Room for another page of history? */
	bool (*has_room)(EdgeSub *s);
	/* First read done (ok) or failed (problem); called once. */
	void (*started)(EdgeSub *s, const EdgeProblem *p);
	/* Caught up with the log (after a catch-up read). */
	void (*caught_up)(EdgeSub *s);
	/* The subscription cannot go on (token expired, no room when live, ...). */
	void (*failed)(EdgeSub *s, const EdgeProblem *p);
} EdgeSubOps;

struct EdgeSub
{
	EdgeFeed		 *feed;
	const EdgeSubOps *ops;
	void			 *owner;
	const EdgeAuth	 *auth;
	int64_t			  cursor; /* last seq delivered */
	SubState		  state;
	bool			  started;
	bool			  paused; /* catch-up waits for room */
	EdgeJob			 *job;
	EdgeSub			 *prev, *next;
};

int	 feed_subscribe(EdgeSub *s, const char *sid, int64_t after, const EdgeAuth *auth,
					const EdgeSubOps *ops, void *owner);
void feed_unsubscribe(EdgeSub *s);
void feed_sub_room(EdgeSub *s); /* room again after a pause */
void feed_on_notify(const char *sid);
void feed_on_listen_up(void);
int	 feed_count(void);

/* ------------------------------------------------------------------------
 * SSE streams of session events (sse.c)
 * ------------------------------------------------------------------------ */
void sse_open(EdgeReq *req, const char *sid, int64_t after, bool event_names);
void sse_tick(void);
void sse_drain(void);
int	 sse_active(void);

/* ------------------------------------------------------------------------
 * Streams and ACP connections, counted edge-wide and per tenant (quota.c)
 * ------------------------------------------------------------------------ */
typedef enum QuotaKind
{
	QUOTA_STREAM = 0, /* an SSE stream (events or ACP over HTTP) */
	QUOTA_ACP,		  /* an ACP connection (HTTP or WebSocket) */
	QUOTA_FILES,	  /* a file transfer to or from a sandbox (files.c) */
	QUOTA__KINDS
} QuotaKind;

typedef struct EdgeQuota EdgeQuota;
EdgeQuota				*quota_take(QuotaKind kind, const EdgeAuth *auth, EdgeProblem *p);
void					 quota_give(EdgeQuota *q, QuotaKind kind);
int						 quota_tenants(void);

/* A generic push stream: an SSE body fed from a bounded buffer. */
typedef struct EdgeStream EdgeStream;
typedef void (*StreamClosedFn)(EdgeStream *st, void *owner);
typedef void (*StreamRoomFn)(EdgeStream *st, void *owner);
EdgeStream *stream_new(size_t limit, StreamClosedFn closed, StreamRoomFn room, void *owner);
/* A body of ctype, size bytes (MHD_SIZE_UNKNOWN: chunked), from st (files.c). */
struct MHD_Response *
stream_response_as(EdgeStream *st, struct MHD_Connection *conn, const char *ctype, uint64_t size);
void				 stream_free(EdgeStream *st); /* only before stream_response */
struct MHD_Response *stream_response(EdgeStream *st, struct MHD_Connection *conn);
int	   stream_write(EdgeStream *st, const char *data, size_t len); /* -ENOBUFS if full */
size_t stream_room(const EdgeStream *st);
void   stream_end(EdgeStream *st);	  /* finish after what is buffered */
void   stream_detach(EdgeStream *st); /* owner goes away */
void   stream_ping(EdgeStream *st);

/* ------------------------------------------------------------------------
 * ACP (acp.c: protocol; acp_http.c: HTTP transport; ws.c: WebSocket)
 * ------------------------------------------------------------------------ */
typedef struct AcpConn AcpConn;

typedef struct AcpTransport
{
	/*
	 * Send one JSON-RPC message.  session: a notification or request about
	 * that session; response_id: the id of the request this answers.
	 */
	int (*send)(AcpConn *c, const char *json, size_t len, const char *session, json_t *response_id);
	/* Bytes the transport can still buffer for session's messages. */
	size_t (*room)(AcpConn *c, const char *session);
	void (*close)(AcpConn *c, int code, const char *why);
} AcpTransport;

/* NULL with p filled in at a connection limit (edge-wide or the tenant's). */
AcpConn	   *acp_conn_new(const AcpTransport *t, void *tdata, const EdgeAuth *auth, EdgeProblem *p);
void		acp_conn_free(AcpConn *c);
void	   *acp_conn_tdata(AcpConn *c);
const char *acp_conn_id(AcpConn *c);
const EdgeAuth *acp_conn_auth(AcpConn *c);
int				acp_conn_set_auth(AcpConn *c, const EdgeAuth *auth);
/* Handle one inbound message (parsed). */
void acp_handle(AcpConn *c, json_t *msg);
/* initialize answered synchronously (HTTP); returns the response text. */
char  *acp_initialize_response(AcpConn *c, json_t *msg);
void   acp_tick(AcpConn *c);
int	   acp_active(void);
int	   acp_session_count(void);
void   acp_conn_writable(AcpConn *c); /* the transport drained */
size_t acp_buffer_limit(void);

void acp_http_handle(EdgeReq *req);
void acp_http_tick(void);
void acp_http_drain(void);

void ws_upgrade(EdgeReq *req);
void ws_tick(void);
void ws_drain(void);
int	 ws_count(void);
int	 ws_accept_key(const char *key, char *out, size_t outlen);

/* ------------------------------------------------------------------------
 * Metrics (metrics.c, through daemonlib/metrics.h)
 * ------------------------------------------------------------------------ */
typedef struct EdgeMetrics
{
	uint64_t http_requests[6]; /* by metrics_http_class(): 1xx..5xx, [0] other */
	uint64_t auth_failures;
	uint64_t jwks_refreshes;
	uint64_t slowloris_cut;
	uint64_t sse_opened;
	uint64_t sse_events;
	uint64_t sse_slow_cut;
	uint64_t sse_rejected;
	uint64_t tenant_limited; /* refused at a tenant's limit */
	uint64_t feed_fetches;
	uint64_t acp_messages_in;
	uint64_t acp_messages_out;
	uint64_t ws_opened;
} EdgeMetrics;

extern EdgeMetrics edge_metrics;
void			   metrics_observe_request(int status, uint64_t elapsed_ms);
char			  *metrics_render(bool with_db);

/* ------------------------------------------------------------------------
 * The operator's numbers (operator.c): GET /v1/operator, nadi_db_* metrics
 * ------------------------------------------------------------------------ */
struct metrics_out;
void operator_get(EdgeReq *req);
void operator_tick(void);
void operator_metrics(struct metrics_out *o);
void operator_shutdown(void);

/* ------------------------------------------------------------------------
 * The web console at /console and CORS for the API (console.c)
 * ------------------------------------------------------------------------ */
bool console_is_path(const char *url);
void console_handle(EdgeReq *req);
int	 console_cors_add(const char *value, bool from_flag);
void console_cors_headers(EdgeReq *req, struct MHD_Response *r);
bool console_cors_preflight(EdgeReq *req);

#endif /* EDGE_H */
