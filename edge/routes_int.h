/*
 * routes_int.h — what the REST route files share: the per-request context,
 * the input checks and the answers built from the database's rows.  Not
 * for other files.
 */
#ifndef ROUTES_INT_H
#define ROUTES_INT_H

#include "edge.h"

#define MAX_SEGS 6
#define LIST_MAX 1000

typedef struct Path
{
	char		buf[512];
	const char *seg[MAX_SEGS];
	int			n;
} Path;

/* What a route needs after authentication. */
typedef struct RouteCtx
{
	Path	path;
	json_t *body;
	int64_t num; /* command id, limit, after, ... */
	int		limit;
	char	key[256]; /* Idempotency-Key */
} RouteCtx;

void respond_problem(EdgeReq *req, int status, const char *code, const char *fmt, const char *arg);
void method_not_allowed(EdgeReq *req, const char *allow);
bool is_method(EdgeReq *req, const char *m);
void db_failed(EdgeReq *req, EdgeDbResult *r);
void route_db(EdgeReq *req, EdgeStmt stmt, int n, const char *const *params, EdgeDbDone done);
json_t *body_json(EdgeReq *req, bool empty_ok);
bool	query_only(EdgeReq *req, const char *const *allowed);
bool
query_int(EdgeReq *req, const char *name, int64_t min, int64_t max, int64_t dflt, int64_t *out);
void single_row(EdgeReq *req, EdgeDbResult *r, int status);
void done_row200(void *arg, EdgeDbResult *r);
void list_rows(EdgeReq *req, EdgeDbResult *r, const char *name, int limit, bool quote_cursor);
void done_session_created(void *arg, EdgeDbResult *r);

/* routes_commands.c */
void command_create(EdgeReq *req);
void commands_batch(EdgeReq *req);
void command_decide(EdgeReq *req);
void command_get(EdgeReq *req);
void command_cancel(EdgeReq *req);
void command_list(EdgeReq *req);
void events_get(EdgeReq *req);

/* routes_fork.c */
void session_fork(EdgeReq *req);

#endif /* ROUTES_INT_H */
