/*
 * session.c — the SQL functions to create, read, list, terminate and move
 * sessions.  The state machine, the per-session lock and event sequencing
 * they use are the session core's (session_core.c).
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"

#include "nadi.h"
#include "session.h"
#include "wake.h"

/* The session's row as the function's result, in the outer context. */
Datum
session_row(FunctionCallInfo fcinfo, const pg_uuid_t *id, MemoryContext outer)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[1] = {UUIDOID};
	Datum		values[1];

	values[0] = UUIDPGetDatum(id);
	nadi_exec(nadi_plan(&plan, "SELECT * FROM nadi.sessions WHERE session_id = $1", 1, types),
			  values, NULL, false, 1);
	if (SPI_processed != 1)
		elog(ERROR, "session %s vanished", nadi_uuid_out(id));
	return nadi_spi_row(fcinfo, outer);
}

/*
 * A terminating session that no cell holds any more is terminated: its open
 * commands are cancelled and the lease is left released.
 */
void
session_finish_termination(SessionTx *tx, const char *cause)
{
	inbox_cancel_open(tx, "session terminated");
	session_set_state(tx, SS_TERMINATED, cause);
}

static Jsonb *
arg_object(FunctionCallInfo fcinfo, int n, const char *name)
{
	Jsonb	   *j;

	if (PG_ARGISNULL(n))
		return nadi_jsonb("{}");
	j = PG_GETARG_JSONB_P(n);
	nadi_check_object(j, name);
	nadi_check_payload(j, name);
	return j;
}

/*
 * Insert a new pending session with its lease row, under the per-tenant
 * limit on live sessions (serialized per tenant).  Its first event is the
 * caller's to write.  Call with SPI connected.
 */
void
session_insert(const pg_uuid_t *id, const char *tenant, Jsonb *metadata, Jsonb *labels,
			   Jsonb *policy)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr lease_plan = NULL;
	static SPIPlanPtr count_plan = NULL;
	Oid			types[6] = {UUIDOID, TEXTOID, JSONBOID, JSONBOID, JSONBOID, TIMESTAMPTZOID};
	Datum		values[6];
	int64		live;
	bool		isnull;

	values[0] = CStringGetTextDatum(tenant);
	nadi_exec(nadi_plan(&count_plan,
						"SELECT pg_advisory_xact_lock(1851878505, hashtext($1)), "
						"(SELECT count(*) FROM nadi.sessions WHERE tenant_id = $1 "
						" AND state NOT IN ('terminated', 'failed'))",
						1, (Oid[]) {TEXTOID}),
			  values, NULL, false, 1);
	live = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	if (live >= nadi_max_live_sessions)
		ereport(ERROR,
				(errcode(ERRCODE_NADI_LIMIT_EXCEEDED),
				 errmsg("tenant \"%s\" has too many live sessions", tenant),
				 errdetail_plural("The tenant has " INT64_FORMAT " live session; the limit is %d.",
								  "The tenant has " INT64_FORMAT " live sessions; the limit is %d.",
								  live, live, nadi_max_live_sessions),
				 errhint("Terminate sessions that are no longer needed, or raise nadi.max_live_sessions.")));

	values[0] = UUIDPGetDatum(id);
	values[1] = CStringGetTextDatum(tenant);
	values[2] = JsonbPGetDatum(metadata);
	values[3] = JsonbPGetDatum(labels);
	values[4] = JsonbPGetDatum(policy);
	values[5] = TimestampTzGetDatum(nadi_now());
	nadi_exec(nadi_plan(&plan,
						"INSERT INTO nadi.sessions (session_id, tenant_id, metadata, labels, policy, "
						"created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
						6, types),
			  values, NULL, false, 0);
	nadi_exec(nadi_plan(&lease_plan,
						"INSERT INTO nadi.session_leases (session_id) VALUES ($1)", 1, types),
			  values, NULL, false, 0);
}

/*
 * nadi.session_create(tenant_id, metadata, labels, policy) → sessions
 * The tenant comes from the token in force when there is one.
 */
PG_FUNCTION_INFO_V1(nadi_session_create);
Datum
nadi_session_create(PG_FUNCTION_ARGS)
{
	MemoryContext outer = CurrentMemoryContext;
	const char *tenant;
	Jsonb	   *metadata = arg_object(fcinfo, 1, "metadata");
	Jsonb	   *labels = arg_object(fcinfo, 2, "labels");
	Jsonb	   *policy = arg_object(fcinfo, 3, "policy");
	pg_uuid_t  *id = palloc(sizeof(pg_uuid_t));
	SessionTx  *tx;
	StringInfoData buf;
	Datum		result;

	nadi_check_approval_policy(policy);
	busy_check_policy(policy, "policy");
	tenant = nadi_caller_tenant_for_create(PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0)));
	if (tenant[0] == '\0' || strlen(tenant) > 255)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("tenant_id must be 1 to 255 bytes long")));
	nadi_uuid_v7(id);

	nadi_connect();
	session_insert(id, tenant, metadata, labels, policy);

	tx = session_lock(id);
	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	nadi_json_str(&buf, "tenant_id", tenant);
	nadi_json_raw(&buf, "metadata", nadi_jsonb_text(metadata));
	appendStringInfoChar(&buf, '}');
	session_event(tx, "session.created", nadi_jsonb(buf.data), 0, -1);
	session_save(tx);
	nadi_wake_broker_at_commit();
	nadi_audit("session.create", id, tenant, NULL);

	result = session_row(fcinfo, id, outer);
	nadi_finish();
	PG_RETURN_DATUM(result);
}

static pg_uuid_t *
arg_uuid(FunctionCallInfo fcinfo, int n, const char *name)
{
	NADI_ARG_NOT_NULL(n, name);
	return PG_GETARG_UUID_P(n);
}

/* nadi.session_get(session_id) → sessions */
PG_FUNCTION_INFO_V1(nadi_session_get);
Datum
nadi_session_get(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	pg_uuid_t  *id = arg_uuid(fcinfo, 0, "session_id");
	MemoryContext outer = CurrentMemoryContext;
	Datum		values[1] = {UUIDPGetDatum(id)};
	Datum		result;
	char	   *tenant;

	nadi_connect();
	nadi_exec(nadi_plan(&plan, "SELECT * FROM nadi.sessions WHERE session_id = $1",
						1, (Oid[]) {UUIDOID}),
			  values, NULL, true, 1);
	tenant = SPI_processed == 1 ? SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2) : NULL;
	if (tenant == NULL || !nadi_tenant_visible(tenant, id))
		session_not_found(id);
	result = nadi_spi_row(fcinfo, outer);
	nadi_finish();
	PG_RETURN_DATUM(result);
}

/*
 * nadi.session_list(state, after, limit, tenant_id) → setof sessions
 * Pages by session id (uuid v7: creation order).  A tenant token lists its
 * own tenant; asking for another tenant is refused.
 */
PG_FUNCTION_INFO_V1(nadi_session_list);
Datum
nadi_session_list(PG_FUNCTION_ARGS)
{
	Oid			types[5] = {TEXTOID, TEXTOID, UUIDOID, INT4OID, UUIDOID};
	Datum		values[5];
	char		nulls[5] = {'n', 'n', 'n', ' ', 'n'};
	const char *tenant = PG_ARGISNULL(3) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(3));
	int32		limit = PG_ARGISNULL(2) ? 100 : PG_GETARG_INT32(2);
	NadiScope	scope = nadi_auth_scope();

	nadi_check_limit(limit, 10000);
	if (scope == NADI_SCOPE_NONE && !nadi_caller_is_privileged())
		ereport(ERROR,
				(errcode(ERRCODE_NADI_NOT_AUTHENTICATED),
				 errmsg("not authenticated"),
				 errhint("Call nadi.authenticate(token) first.")));
	if (scope != NADI_SCOPE_NONE && scope != NADI_SCOPE_ADMIN)
	{
		if (tenant && strcmp(tenant, nadi_auth_tenant()) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_NADI_FORBIDDEN),
					 errmsg("tenant \"%s\" does not match the token's tenant", tenant)));
		tenant = nadi_auth_tenant();
	}

	InitMaterializedSRF(fcinfo, 0);
	if (tenant)
	{
		values[0] = CStringGetTextDatum(tenant);
		nulls[0] = ' ';
	}
	if (!PG_ARGISNULL(0))
	{
		values[1] = DirectFunctionCall1(enum_out, PG_GETARG_DATUM(0));
		values[1] = CStringGetTextDatum(DatumGetCString(values[1]));
		nulls[1] = ' ';
	}
	if (!PG_ARGISNULL(1))
	{
		values[2] = PG_GETARG_DATUM(1);
		nulls[2] = ' ';
	}
	values[3] = Int32GetDatum(limit);
	if (scope == NADI_SCOPE_SESSION || scope == NADI_SCOPE_SANDBOX)
	{
		/* a session token sees its own session only */
		values[4] = UUIDPGetDatum(nadi_auth_sid());
		nulls[4] = ' ';
	}

	nadi_connect();
	if (SPI_execute_with_args("SELECT * FROM nadi.sessions "
							  "WHERE ($1::text IS NULL OR tenant_id = $1) "
							  "AND ($2::text IS NULL OR state = $2::nadi.session_state) "
							  "AND ($3::uuid IS NULL OR session_id > $3) "
							  "AND ($5::uuid IS NULL OR session_id = $5) "
							  "ORDER BY session_id LIMIT $4",
							  5, types, values, nulls, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "session list query failed");
	nadi_rows_to_srf(fcinfo);
	nadi_finish();
	return (Datum) 0;
}

/*
 * Start terminating a locked session: one no cell holds is terminated at
 * once; one a cell holds becomes terminating (its open commands cancelled),
 * and the cell finishes it when it lets go, or the lease runs out.
 */
static void
session_begin_termination(SessionTx *tx, const char *reason)
{
	bool		held_by_cell = (tx->state == SS_ACTIVE);

	session_set_state(tx, SS_TERMINATING, reason);
	if (held_by_cell)
		inbox_cancel_open(tx, "session terminating");
	else
		session_finish_termination(tx, reason);
}

/*
 * Move a session to another state for an operator or a client, and return
 * its row.  Terminating goes through session_begin_termination; a session
 * already terminating is left alone when again_ok (nadi.session_terminate),
 * refused otherwise (the table has no edge).  Leaving a state that a cell
 * holds revokes the lease, bumping the epoch so the cell is fenced off.
 */
static Datum
session_move(FunctionCallInfo fcinfo, const pg_uuid_t *id, SessionState to,
			 const char *reason, bool again_ok)
{
	MemoryContext outer = CurrentMemoryContext;
	SessionTx  *tx;
	Datum		result;

	nadi_connect();
	tx = session_lock(id);
	if (to == SS_TERMINATING)
	{
		if (!(again_ok && tx->state == SS_TERMINATING))
			session_begin_termination(tx, reason);
	}
	else
	{
		if ((tx->state == SS_ACTIVE || tx->state == SS_TERMINATING) && lease_read(tx).held)
			lease_drop(tx, reason);
		session_set_state(tx, to, reason);
		if (to == SS_PENDING)	/* the sandbox host keeps the session's files */
			session_set_hosts(tx, NULL, tx->sandbox_host_id);
		if (to == SS_FAILED || to == SS_TERMINATED)
			inbox_cancel_open(tx, reason);
	}
	session_save(tx);
	result = session_row(fcinfo, id, outer);
	nadi_finish();
	return result;
}

/*
 * nadi.session_terminate(session_id, reason) → sessions
 * A session no cell holds is terminated at once; one a cell holds becomes
 * terminating, and the cell finishes it when it lets go (or its lease ends).
 * Terminating a session that is already over is refused.
 */
PG_FUNCTION_INFO_V1(nadi_session_terminate);
Datum
nadi_session_terminate(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *id = arg_uuid(fcinfo, 0, "session_id");
	const char *reason = PG_ARGISNULL(1) ? "terminate" : text_to_cstring(PG_GETARG_TEXT_PP(1));

	PG_RETURN_DATUM(session_move(fcinfo, id, SS_TERMINATING, reason, true));
}

/*
 * nadi.session_transition(session_id, to_state, reason) → sessions
 * An operator's lever: any transition the table allows.  Leaving a state that
 * a cell holds revokes the lease (bumping the epoch, so the cell is fenced
 * off at once); terminating behaves as nadi.session_terminate().
 */
PG_FUNCTION_INFO_V1(nadi_session_transition);
Datum
nadi_session_transition(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *id = arg_uuid(fcinfo, 0, "session_id");
	const char *reason = PG_ARGISNULL(2) ? "operator" : text_to_cstring(PG_GETARG_TEXT_PP(2));
	SessionState to;

	NADI_ARG_NOT_NULL(1, "to_state");
	nadi_require_admin();
	to = session_state_from_name(DatumGetCString(DirectFunctionCall1(enum_out, PG_GETARG_DATUM(1))));
	if (to == SS_ACTIVE || to == SS_PLACED)
		ereport(ERROR,
				(errcode(ERRCODE_NADI_INVALID_TRANSITION),
				 errmsg("a session becomes %s only through %s", session_state_name(to),
						to == SS_ACTIVE ? "nadi.lease_acquire()" : "nadi.place()"),
				 errhint("nadi.session_transition() moves sessions to pending, suspended, terminating, terminated or failed.")));
	PG_RETURN_DATUM(session_move(fcinfo, id, to, reason, false));
}

/* nadi.session_transitions() → setof (from_state, to_state, cause) */
PG_FUNCTION_INFO_V1(nadi_session_transitions);
Datum
nadi_session_transitions(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo;
	Oid			enum_type;
	int			n;
	const SessionTransition *transitions = session_transitions(&n);

	InitMaterializedSRF(fcinfo, 0);
	rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	enum_type = TupleDescAttr(rsinfo->setDesc, 0)->atttypid;
	for (int i = 0; i < n; i++)
	{
		Datum		values[3];
		bool		nulls[3] = {false, false, false};

		values[0] = OidFunctionCall2(F_ENUM_IN, CStringGetDatum(session_state_name(transitions[i].from)),
									 ObjectIdGetDatum(enum_type));
		values[1] = OidFunctionCall2(F_ENUM_IN, CStringGetDatum(session_state_name(transitions[i].to)),
									 ObjectIdGetDatum(enum_type));
		values[2] = CStringGetTextDatum(transitions[i].cause);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
