/*
 * caller.c — who is calling, and what the caller may see and do.
 * nadi.authenticate(token) (token.c) verifies a JWT and stores its claims
 * here, for the transaction or the connection; every session function and
 * every row-level security policy asks this file whether a tenant's row is
 * visible to the caller, and the functions for administrators and hosts ask
 * it whether the caller may act.  Without a token, the caller's database
 * role decides: nadi_admin and nadi_cell see every tenant, anyone else sees
 * nothing.  Also the audit actor (nadi_actor) every audit row records.
 */
#include "postgres.h"

#include "access/xact.h"
#include "nodes/parsenodes.h"
#include "tcop/utility.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "fmgr.h"

#include "jwt_claims.h"
#include "nadi.h"

typedef struct NadiAuth
{
	NadiScope	scope;
	bool		txn_local;
	int			nest_level;		/* subtransaction level it was set in */
	bool		has_sid;
	pg_uuid_t	sid;
	char	   *tenant;			/* in TopMemoryContext */
	char	   *subject;
	Jsonb	   *claims;
} NadiAuth;

static NadiAuth auth;
static bool xact_callback_registered = false;
static ProcessUtility_hook_type prev_process_utility = NULL;

/* The scope names are the claims validator's (src/jwt_claims.c): one table. */
StaticAssertDecl((int) NADI_SCOPE_ADMIN == (int) NADI_JWT_SCOPE_ADMIN &&
				 (int) NADI_SCOPE_TENANT == (int) NADI_JWT_SCOPE_TENANT &&
				 (int) NADI_SCOPE_SESSION == (int) NADI_JWT_SCOPE_SESSION &&
				 (int) NADI_SCOPE_SANDBOX == (int) NADI_JWT_SCOPE_SANDBOX,
				 "NadiScope and NadiJwtScope must agree");

NadiScope
nadi_scope_from_string(const char *s)
{
	return (NadiScope) nadi_jwt_scope_from_name(s);
}

const char *
nadi_scope_name(NadiScope scope)
{
	const char *name = nadi_jwt_scope_name((NadiJwtScope) scope);

	return name ? name : "none";
}

void
nadi_auth_reset(void)
{
	if (auth.tenant)
		pfree(auth.tenant);
	if (auth.subject)
		pfree(auth.subject);
	if (auth.claims)
		pfree(auth.claims);
	memset(&auth, 0, sizeof(auth));
}

/* A transaction-local context ends with its transaction, committed or not. */
static void
auth_xact_callback(XactEvent event, void *arg)
{
	if (!auth.txn_local || auth.scope == NADI_SCOPE_NONE)
		return;
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
		nadi_auth_reset();
}

/*
 * A token set inside a subtransaction that rolls back goes with it, as any
 * other change made there would.
 */
static void
auth_subxact_callback(SubXactEvent event, SubTransactionId my, SubTransactionId parent, void *arg)
{
	if (auth.scope == NADI_SCOPE_NONE || auth.nest_level < GetCurrentTransactionNestLevel())
		return;
	if (event == SUBXACT_EVENT_ABORT_SUB)
		nadi_auth_reset();
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
		auth.nest_level = GetCurrentTransactionNestLevel() - 1;	/* now the parent's */
}

/*
 * What a connection pooler runs between clients (DISCARD ALL, RESET ALL,
 * SET/RESET SESSION AUTHORIZATION) also clears a connection-wide token, so
 * the next client never inherits the previous one's tenant.
 */
static void
auth_process_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
					 ProcessUtilityContext context, ParamListInfo params,
					 QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *stmt = pstmt->utilityStmt;

	if (IsA(stmt, DiscardStmt) && ((DiscardStmt *) stmt)->target == DISCARD_ALL)
		nadi_auth_reset();
	else if (IsA(stmt, VariableSetStmt))
	{
		VariableSetStmt *v = (VariableSetStmt *) stmt;

		if (v->kind == VAR_RESET_ALL ||
			(v->name && strcmp(v->name, "session_authorization") == 0))
			nadi_auth_reset();
	}
	if (prev_process_utility)
		prev_process_utility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
}

void
nadi_auth_init(void)
{
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = auth_process_utility;
}

/*
 * Install verified claims.  The caller (token verification) has checked the
 * signature, expiry and audience; this only stores them.
 */
void
nadi_auth_set(const char *tenant, const char *subject, NadiScope scope,
			  const pg_uuid_t *sid, Jsonb *claims, bool txn_local)
{
	MemoryContext old;

	if (!xact_callback_registered)
	{
		RegisterXactCallback(auth_xact_callback, NULL);
		RegisterSubXactCallback(auth_subxact_callback, NULL);
		xact_callback_registered = true;
	}
	nadi_auth_reset();
	old = MemoryContextSwitchTo(TopMemoryContext);
	auth.scope = scope;
	auth.txn_local = txn_local;
	auth.nest_level = IsTransactionState() ? GetCurrentTransactionNestLevel() : 0;
	auth.tenant = tenant ? pstrdup(tenant) : NULL;
	auth.subject = subject ? pstrdup(subject) : NULL;
	if (sid)
	{
		auth.has_sid = true;
		auth.sid = *sid;
	}
	if (claims)
	{
		auth.claims = palloc(VARSIZE(claims));
		memcpy(auth.claims, claims, VARSIZE(claims));
	}
	MemoryContextSwitchTo(old);
}

NadiScope
nadi_auth_scope(void)
{
	return auth.scope;
}

const char *
nadi_auth_tenant(void)
{
	return auth.scope == NADI_SCOPE_NONE ? NULL : auth.tenant;
}

static bool
outer_user_has_role(const char *rolname)
{
	Oid			role = get_role_oid(rolname, true);

	return OidIsValid(role) && has_privs_of_role(GetOuterUserId(), role);
}

/*
 * True when no token is in force and the calling role (outside any SECURITY
 * DEFINER function) is nadi_admin or nadi_cell, or a superuser.
 */
bool
nadi_caller_is_privileged(void)
{
	if (auth.scope != NADI_SCOPE_NONE)
		return false;
	return outer_user_has_role("nadi_admin") || outer_user_has_role("nadi_cell");
}

const char *
nadi_actor(void)
{
	if (auth.scope != NADI_SCOPE_NONE)
		return psprintf("token:%s", auth.subject ? auth.subject : "");
	return GetUserNameFromId(GetOuterUserId(), false);
}

/*
 * Is a row of this tenant (and, for per-session rows, this session) visible
 * to the caller?  The same rule serves the SQL functions and the row-level
 * security policies, so the two can never disagree.
 */
bool
nadi_tenant_visible(const char *tenant, const pg_uuid_t *sid)
{
	switch (auth.scope)
	{
		case NADI_SCOPE_NONE:
			return nadi_caller_is_privileged();
		case NADI_SCOPE_ADMIN:
			return true;
		case NADI_SCOPE_TENANT:
			return tenant && strcmp(tenant, auth.tenant) == 0;
		case NADI_SCOPE_SESSION:
		case NADI_SCOPE_SANDBOX:
			return tenant && strcmp(tenant, auth.tenant) == 0 &&
				sid && auth.has_sid &&
				memcmp(sid->data, auth.sid.data, UUID_LEN) == 0;
	}
	return false;
}

/*
 * The tenant a new session belongs to.  A token's tenant wins; a request that
 * names another tenant is refused rather than silently rewritten.
 */
const char *
nadi_caller_tenant_for_create(const char *requested)
{
	switch (auth.scope)
	{
		case NADI_SCOPE_NONE:
			if (!nadi_caller_is_privileged())
				ereport(ERROR,
						(errcode(ERRCODE_NADI_NOT_AUTHENTICATED),
						 errmsg("not authenticated"),
						 errdetail("The calling role has no nadi token in force and is not nadi_admin."),
						 errhint("Call nadi.authenticate(token) first.")));
			if (requested == NULL)
				ereport(ERROR,
						(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						 errmsg("tenant_id must not be null"),
						 errhint("Without a token, name the tenant explicitly.")));
			return requested;
		case NADI_SCOPE_ADMIN:
			if (requested == NULL)
				ereport(ERROR,
						(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						 errmsg("tenant_id must not be null"),
						 errhint("An admin token spans tenants; name the tenant explicitly.")));
			return requested;
		case NADI_SCOPE_TENANT:
			if (requested && strcmp(requested, auth.tenant) != 0)
				ereport(ERROR,
						(errcode(ERRCODE_NADI_FORBIDDEN),
						 errmsg("tenant \"%s\" does not match the token's tenant", requested),
						 errdetail("The token in force belongs to tenant \"%s\".", auth.tenant)));
			return auth.tenant;
		case NADI_SCOPE_SESSION:
		case NADI_SCOPE_SANDBOX:
			ereport(ERROR,
					(errcode(ERRCODE_NADI_FORBIDDEN),
					 errmsg("a %s-scoped token cannot create sessions", nadi_scope_name(auth.scope)),
					 errhint("Use a tenant-scoped token.")));
	}
	return NULL;				/* keep compiler quiet */
}

/*
 * Hosts are the administrators' to manage: true for a superuser (the
 * embedded cells), a member of nadi_admin, or an admin-scoped token.  Any
 * other login acts only for the host ids bound to it (nadi.host_bind).
 */
bool
nadi_caller_is_host_admin(void)
{
	return auth.scope == NADI_SCOPE_ADMIN || outer_user_has_role("nadi_admin");
}

/*
 * Refuse (42501) unless the caller may act for this host: an administrator
 * (nadi_caller_is_host_admin), or a login that is a member of the role
 * nadi.host_bindings names for (kind, host_id).  what completes "may not
 * ... cell host X".  SPI must be connected.
 */
void
nadi_require_host_binding(const char *kind, const char *host_id, const char *what)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[2];
	char	   *bound = NULL;
	Oid			caller = GetOuterUserId();

	if (nadi_caller_is_host_admin())
		return;
	if (!OidIsValid(get_relname_relid("host_bindings", get_namespace_oid("nadi", false))))
	{
		/*
		 * The library is newer than the schema: a rolling upgrade between
		 * the restart and ALTER EXTENSION nadi UPDATE.
		 */
		char	   *have = NULL;

		if (SPI_execute("SELECT extversion FROM pg_extension WHERE extname = 'nadi'", true, 1) == SPI_OK_SELECT &&
			SPI_processed == 1)
			have = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the nadi extension in this database is version %s, this nadi library (%s) checks host logins against nadi.host_bindings, new in 1.1",
						have ? have : "(unknown)", NADI_EXT_VERSION),
				 errhint("Run ALTER EXTENSION nadi UPDATE, then bind each host login: nadi.host_bind('%s', host_id, role).",
						 kind)));
	}
	values[0] = CStringGetTextDatum(kind);
	values[1] = CStringGetTextDatum(host_id);
	nadi_exec(nadi_plan(&plan,
						"SELECT role_name::text FROM nadi.host_bindings WHERE kind = $1 AND host_id = $2",
						2, (Oid[]) {TEXTOID, TEXTOID}),
			  values, NULL, true, 1);
	if (SPI_processed == 1)
	{
		Oid			role;

		bound = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		role = get_role_oid(bound, true);
		if (OidIsValid(role) && is_member_of_role(caller, role))
			return;
	}
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("role \"%s\" may not %s %s host \"%s\"",
					GetUserNameFromId(caller, false), what, kind, host_id),
			 bound ?
			 errdetail("The %s host \"%s\" is bound to role \"%s\", and \"%s\" is not a member of it.",
					   kind, host_id, bound, GetUserNameFromId(caller, false)) :
			 errdetail("No role is bound to the %s host \"%s\": only administrators may act for it.",
					   kind, host_id),
			 errhint("An administrator binds a host id to the login that runs the host with nadi.host_bind('%s', '%s', role).",
					 kind, host_id)));
}

/* Refuse unless the caller is an administrator (role or admin token). */
void
nadi_require_admin(void)
{
	if (auth.scope == NADI_SCOPE_ADMIN)
		return;
	if (auth.scope == NADI_SCOPE_NONE && outer_user_has_role("nadi_admin"))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied: nadi administrator required"),
			 errhint("Grant nadi_admin to the calling role, or use an admin-scoped token.")));
}

/* The verified claims in force, or NULL. */
Jsonb *
nadi_auth_claims(void)
{
	return auth.scope == NADI_SCOPE_NONE ? NULL : auth.claims;
}

/* The session id a session- or sandbox-scoped token is bound to. */
const pg_uuid_t *
nadi_auth_sid(void)
{
	return auth.has_sid ? &auth.sid : NULL;
}

/* nadi.tenant_visible(tenant_id, session_id): the row-level security rule. */
PG_FUNCTION_INFO_V1(nadi_tenant_visible_sql);
Datum
nadi_tenant_visible_sql(PG_FUNCTION_ARGS)
{
	char	   *tenant;

	/* rows of no tenant (host and key audit) are for administrators only */
	if (PG_ARGISNULL(0))
		PG_RETURN_BOOL(auth.scope == NADI_SCOPE_ADMIN ||
					   (auth.scope == NADI_SCOPE_NONE && outer_user_has_role("nadi_admin")));
	tenant = text_to_cstring(PG_GETARG_TEXT_PP(0));
	PG_RETURN_BOOL(nadi_tenant_visible(tenant, PG_ARGISNULL(1) ? NULL : PG_GETARG_UUID_P(1)));
}

/*
 * nadi._actor() → text: the audit actor of the caller, as nadi_actor()
 * records it (the role outside any SECURITY DEFINER function, or
 * "token:<subject>" under a token), for the PL/pgSQL functions that write
 * audit rows themselves.
 */
PG_FUNCTION_INFO_V1(nadi_require_admin_sql);
Datum
nadi_require_admin_sql(PG_FUNCTION_ARGS)
{
	nadi_require_admin();
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(nadi_actor_sql);
Datum
nadi_actor_sql(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(nadi_actor()));
}
