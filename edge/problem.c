/*
 * problem.c — the edge's answer to a database error.  The mapping of
 * SQLSTATEs to HTTP statuses and codes is the one list src/errcodes.txt
 * (daemonlib/errcodes.c); problems are rendered by daemonlib/problem.c.
 * Internal errors never leak their text: it goes to the log.
 */
#include "edge.h"

void
problem_from_db(EdgeProblem *p, const char *sqlstate, const char *msg, const char *detail,
				const char *hint)
{
	if (!problem_from_sqlstate(p, sqlstate, msg, detail, hint))
		log_error("database error %s: %s%s%s", sqlstate ? sqlstate : "?", msg ? msg : "",
				  detail ? " — " : "", detail ? detail : "");
}
