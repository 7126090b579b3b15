/*
 * problem.c — errors as RFC 9457 problem details (application/problem+json)
 * with a stable "code", and the one table that maps the database's
 * SQLSTATEs to HTTP statuses.  Internal errors never leak their text.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edge.h"

typedef struct SqlstateMap
{
	const char *sqlstate;
	int			status;
	const char *code;
	const char *title;
} SqlstateMap;

/* docs/HTTP_API.md lists the same table; keep the two in step. */
static const SqlstateMap sqlstate_map[] = {
	{"22P02", 400, "invalid_input", "Invalid input"},
	{"22023", 400, "invalid_parameter", "Invalid parameter"},
	{"22004", 400, "null_value", "Missing value"},
	{"NA002", 404, "session_not_found", "Session not found"},
	{"NA003", 404, "command_not_found", "Command not found"},
	{"NA001", 409, "invalid_transition", "Invalid session state transition"},
	{"NA006", 409, "command_state", "Command is not in a state that allows this"},
	{"NA010", 409, "session_not_live", "Session is not live"},
	{"NA007", 422, "idempotency_conflict", "Idempotency key already used"},
	{"NA013", 422, "invalid_tool_name", "Invalid tool name"},
	{"NA011", 413, "payload_too_large", "Payload too large"},
	{"NA012", 429, "limit_exceeded", "Limit exceeded"},
	{"NA020", 401, "invalid_token", "Invalid token"},
	{"NA021", 401, "token_expired", "Token expired"},
	{"NA030", 401, "not_authenticated", "Not authenticated"},
	{"NA031", 403, "forbidden", "Forbidden"},
	{"42501", 403, "permission_denied", "Permission denied"},
};

static const char *
status_title(int status)
{
	switch (status)
	{
		case 400:
			return "Bad request";
		case 401:
			return "Unauthorized";
		case 403:
			return "Forbidden";
		case 404:
			return "Not found";
		case 405:
			return "Method not allowed";
		case 406:
			return "Not acceptable";
		case 408:
			return "Request timeout";
		case 409:
			return "Conflict";
		case 413:
			return "Content too large";
		case 415:
			return "Unsupported media type";
		case 422:
			return "Unprocessable content";
		case 426:
			return "Upgrade required";
		case 429:
			return "Too many requests";
		case 503:
			return "Service unavailable";
		default:
			return status >= 500 ? "Internal server error" : "Error";
	}
}

void
problem_set(EdgeProblem *p, int status, const char *code, const char *fmt,...)
{
	va_list		ap;

	memset(p, 0, sizeof(*p));
	p->status = status;
	p->code = code;
	p->title = status_title(status);
	if (fmt)
	{
		va_start(ap, fmt);
		vsnprintf(p->detail, sizeof(p->detail), fmt, ap);
		va_end(ap);
	}
}

/*
 * A database error.  Known SQLSTATEs keep their message (the extension's
 * errmsg and errdetail are written for callers); anything else is a 500
 * whose text goes to the log only.
 */
void
problem_from_db(EdgeProblem *p, const char *sqlstate, const char *msg,
				const char *detail, const char *hint)
{
	for (size_t i = 0; i < sizeof(sqlstate_map) / sizeof(sqlstate_map[0]); i++)
	{
		const SqlstateMap *m = &sqlstate_map[i];

		if (sqlstate && strcmp(sqlstate, m->sqlstate) == 0)
		{
			memset(p, 0, sizeof(*p));
			p->status = m->status;
			p->code = m->code;
			p->title = m->title;
			snprintf(p->sqlstate, sizeof(p->sqlstate), "%s", sqlstate);
			if (msg && detail && *detail)
				snprintf(p->detail, sizeof(p->detail), "%s. %s", msg, detail);
			else if (msg)
				snprintf(p->detail, sizeof(p->detail), "%s", msg);
			if (hint)
				snprintf(p->hint, sizeof(p->hint), "%s", hint);
			return;
		}
	}
	if (sqlstate && (strncmp(sqlstate, "08", 2) == 0 || strcmp(sqlstate, "57P01") == 0 ||
					 strcmp(sqlstate, "57014") == 0 || strcmp(sqlstate, "53300") == 0 ||
					 strcmp(sqlstate, "40001") == 0 || strcmp(sqlstate, "40P01") == 0))
	{
		problem_set(p, 503, "unavailable", "The database could not complete the request; retry.");
		p->retry_after = 1;
	}
	else
		problem_set(p, 500, "internal_error", "The request failed inside the service.");
	log_error("database error %s: %s%s%s", sqlstate ? sqlstate : "?",
			 msg ? msg : "", detail ? " — " : "", detail ? detail : "");
	if (sqlstate)
		snprintf(p->sqlstate, sizeof(p->sqlstate), "%s", sqlstate);
}

/* The problem as JSON text (malloc'd), or NULL when out of memory. */
char *
problem_json(const EdgeProblem *p, const char *instance)
{
	json_t	   *o = json_object();
	char		type[128];
	char	   *text;

	snprintf(type, sizeof(type), "urn:nadi:problem:%s", p->code ? p->code : "error");
	json_object_set_new(o, "type", json_string(type));
	json_object_set_new(o, "title", json_string(p->title ? p->title : status_title(p->status)));
	json_object_set_new(o, "status", json_integer(p->status));
	json_object_set_new(o, "code", json_string(p->code ? p->code : "error"));
	if (p->detail[0])
		json_object_set_new(o, "detail", json_string(p->detail));
	if (p->hint[0])
		json_object_set_new(o, "hint", json_string(p->hint));
	if (p->sqlstate[0] && p->status < 500)
		json_object_set_new(o, "sqlstate", json_string(p->sqlstate));
	if (instance)
		json_object_set_new(o, "instance", json_string(instance));
	text = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return text;
}
