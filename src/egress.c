/*
 * egress.c — the egress rules of the credentials proxy: which upstreams
 * (names from nadi-credproxy's configuration) a tenant's sandboxes and model
 * calls may reach, with which methods and below which path.  The proxy reads
 * the rules in nadi.proxy_authorize(); administrators change them here, and
 * every change is an audit row with the same actor as every other
 * (nadi_actor: the role, or the token's subject).
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/json.h"

#include "nadi.h"

#define EGRESS_MAX_RULES 1000

/* ^[a-z0-9][a-z0-9_.-]{0,62}$: the names nadi-credproxy's configuration uses */
static bool
upstream_ok(const char *s)
{
	size_t		len = strlen(s);

	if (len < 1 || len > 63 || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= '0' && s[0] <= '9')))
		return false;
	for (size_t i = 1; i < len; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || strchr("_.-", s[i])))
			return false;
	return true;
}

/* ^[A-Z]{1,16}$ and not CONNECT, which the proxy never forwards */
static bool
method_ok(const char *s)
{
	size_t		len = strlen(s);

	if (len < 1 || len > 16 || strcmp(s, "CONNECT") == 0)
		return false;
	for (size_t i = 0; i < len; i++)
		if (s[i] < 'A' || s[i] > 'Z')
			return false;
	return true;
}

static void
tenant_check(const char *tenant)
{
	int			chars = pg_mbstrlen(tenant);

	if (chars < 1 || chars > 256)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid tenant_id"),
				 errdetail("A tenant_id is 1 to 256 characters, or '*' for every tenant.")));
}

static void
upstream_check(const char *upstream)
{
	if (!upstream_ok(upstream))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid upstream name %s", quote_literal_cstr(upstream)),
				 errdetail("Upstream names are lower-case letters, digits, \".\", \"_\" and \"-\", at most 63 characters."),
				 errhint("Use the name of an upstream in nadi-credproxy's configuration.")));
}

static void
methods_check(ArrayType *methods)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	deconstruct_array(methods, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	if (n < 1 || n > 16)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("methods must list 1 to 16 HTTP methods")));
	for (int i = 0; i < n; i++)
	{
		char	   *m = nulls[i] ? NULL : TextDatumGetCString(elems[i]);

		if (m == NULL || !method_ok(m))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid HTTP method %s", m ? quote_literal_cstr(m) : "NULL"),
					 errdetail("Methods are upper-case tokens such as GET or POST; CONNECT is never forwarded.")));
	}
}

static void
path_prefix_check(const char *prefix)
{
	if (prefix[0] != '/' || pg_mbstrlen(prefix) > 1024)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid path_prefix"),
				 errdetail("A path prefix starts with \"/\" and has at most 1024 characters.")));
}

/* The methods of a stored rule as a JSON array, for its audit row. */
static char *
methods_json(Datum methods)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	StringInfoData buf;

	deconstruct_array(DatumGetArrayTypeP(methods), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &n);
	initStringInfo(&buf);
	appendStringInfoChar(&buf, '[');
	for (int i = 0; i < n; i++)
	{
		if (i > 0)
			appendStringInfoChar(&buf, ',');
		escape_json(&buf, TextDatumGetCString(elems[i]));
	}
	appendStringInfoChar(&buf, ']');
	return buf.data;
}

/* Audit rows of a rule name no tenant when the rule is for every tenant. */
static const char *
audit_tenant(const char *tenant)
{
	return strcmp(tenant, "*") == 0 ? NULL : tenant;
}

/*
 * The first two arguments of both functions, after the administrator check:
 * a rule is named by (tenant_id, upstream).
 */
static void
egress_rule_args(FunctionCallInfo fcinfo, char **tenant, char **upstream)
{
	nadi_require_admin();
	NADI_ARG_NOT_NULL(0, "tenant_id");
	NADI_ARG_NOT_NULL(1, "upstream");
	*tenant = text_to_cstring(PG_GETARG_TEXT_PP(0));
	*upstream = text_to_cstring(PG_GETARG_TEXT_PP(1));
}

/*
 * nadi.egress_allow(tenant_id, upstream, methods, path_prefix) → egress_rules
 * Allows (or changes the rule for) a tenant's requests to an upstream;
 * tenant_id '*' is every tenant.  methods NULL means the usual six.
 */
PG_FUNCTION_INFO_V1(nadi_egress_allow);
Datum
nadi_egress_allow(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr count_plan = NULL;
	static SPIPlanPtr plan = NULL;
	MemoryContext outer = CurrentMemoryContext;
	char	   *tenant;
	char	   *upstream;
	char	   *prefix;
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	Datum		result;
	StringInfoData detail;
	bool		isnull;

	egress_rule_args(fcinfo, &tenant, &upstream);
	NADI_ARG_NOT_NULL(3, "path_prefix");
	prefix = text_to_cstring(PG_GETARG_TEXT_PP(3));
	tenant_check(tenant);
	upstream_check(upstream);
	if (!PG_ARGISNULL(2))
		methods_check(PG_GETARG_ARRAYTYPE_P(2));
	path_prefix_check(prefix);

	nadi_connect();
	values[0] = CStringGetTextDatum(tenant);
	values[1] = CStringGetTextDatum(upstream);
	nadi_exec(nadi_plan(&count_plan,
						"SELECT NOT EXISTS (SELECT 1 FROM nadi.egress_rules e "
						"                   WHERE e.tenant_id = $1 AND e.upstream = $2) "
						"   AND (SELECT count(*) FROM nadi.egress_rules e WHERE e.tenant_id = $1) >= $3",
						3, (Oid[]) {TEXTOID, TEXTOID, INT4OID}),
			  (Datum[]) {values[0], values[1], Int32GetDatum(EGRESS_MAX_RULES)}, NULL, false, 1);
	if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
		ereport(ERROR,
				(errcode(ERRCODE_NADI_LIMIT_EXCEEDED),
				 errmsg("tenant %s has too many egress rules", quote_literal_cstr(tenant)),
				 errdetail("A tenant has at most %d egress rules.", EGRESS_MAX_RULES),
				 errhint("Remove rules with nadi.egress_revoke().")));

	values[2] = PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2);
	if (PG_ARGISNULL(2))
		nulls[2] = 'n';
	values[3] = CStringGetTextDatum(prefix);
	values[4] = TimestampTzGetDatum(nadi_now());
	nadi_exec(nadi_plan(&plan,
						"INSERT INTO nadi.egress_rules AS e (tenant_id, upstream, methods, path_prefix, created_at) "
						"VALUES ($1, $2, coalesce($3, '{GET,HEAD,POST,PUT,PATCH,DELETE}'), $4, $5) "
						"ON CONFLICT ON CONSTRAINT egress_rules_pkey "
						"DO UPDATE SET methods = EXCLUDED.methods, path_prefix = EXCLUDED.path_prefix "
						"RETURNING *",
						5, (Oid[]) {TEXTOID, TEXTOID, TEXTARRAYOID, TEXTOID, TIMESTAMPTZOID}),
			  values, nulls, false, 0);
	result = nadi_spi_row(fcinfo, outer);

	initStringInfo(&detail);
	appendStringInfoChar(&detail, '{');
	nadi_json_str(&detail, "tenant_id", tenant);
	nadi_json_str(&detail, "upstream", upstream);
	nadi_json_raw(&detail, "methods",
				  methods_json(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
											 SPI_fnumber(SPI_tuptable->tupdesc, "methods"), &isnull)));
	nadi_json_str(&detail, "path_prefix", prefix);
	appendStringInfoChar(&detail, '}');
	nadi_audit("egress.allow", NULL, audit_tenant(tenant), nadi_jsonb(detail.data));
	nadi_finish();
	PG_RETURN_DATUM(result);
}

/*
 * nadi.egress_revoke(tenant_id, upstream) → boolean
 * Removes a rule; false when there was none.
 */
PG_FUNCTION_INFO_V1(nadi_egress_revoke);
Datum
nadi_egress_revoke(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	char	   *tenant;
	char	   *upstream;
	Datum		values[2];
	bool		found;

	egress_rule_args(fcinfo, &tenant, &upstream);
	nadi_connect();
	values[0] = CStringGetTextDatum(tenant);
	values[1] = CStringGetTextDatum(upstream);
	nadi_exec(nadi_plan(&plan,
						"DELETE FROM nadi.egress_rules WHERE tenant_id = $1 AND upstream = $2",
						2, (Oid[]) {TEXTOID, TEXTOID}),
			  values, NULL, false, 0);
	found = SPI_processed > 0;
	if (found)
		nadi_audit("egress.revoke", NULL, audit_tenant(tenant),
				   nadi_json_strings("tenant_id", tenant, "upstream", upstream, NULL));
	nadi_finish();
	PG_RETURN_BOOL(found);
}
