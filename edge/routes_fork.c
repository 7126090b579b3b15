/*
 * routes_fork.c — POST /v1/sessions/{id}/fork {"at_seq": N}: a new session
 * that starts where this one was at event N (nadi.session_fork; the latest
 * when at_seq is absent or null).  201 with the new session, its "fork"
 * member saying which seq was used (a point inside a running command moves
 * back to before that command), and a Location header.  routes.c
 * dispatches here.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edge.h"
#include "routes_int.h"

void
session_fork(EdgeReq *req)
{
	static const char *const fields[] = {"at_seq", NULL};
	RouteCtx				*c = req->state;
	json_t					*body = body_json(req, true);
	json_t					*at;
	char					 num[24];
	const char				*params[2] = {c->path.seg[1], NULL};
	EdgeProblem				 p;

	if (body == NULL)
		return;
	if (json_only_fields(body, fields, &p) < 0)
	{
		json_decref(body);
		http_respond_problem(req, &p);
		return;
	}
	at = json_object_get(body, "at_seq");
	if (at && !json_is_null(at))
	{
		if (!json_is_integer(at) || json_integer_value(at) < 1)
		{
			json_decref(body);
			respond_problem(req, 400, "invalid_field", "%s",
							"\"at_seq\" must be a positive integer: the seq of an event of the "
							"session (or null for its latest).");
			return;
		}
		snprintf(num, sizeof(num), "%lld", (long long) json_integer_value(at));
		params[1] = num;
	}
	route_db(req, STMT_SESSION_FORK, 2, params, done_session_created);
	json_decref(body);
}
