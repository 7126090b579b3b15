/*
 * util.c — small pieces every nadi C file uses: SPI plan caching, argument
 * checks, returning table rows from SPI results, uuids, JSON building and the
 * audit log.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/tupconvert.h"
#include "catalog/pg_type.h"
#include "common/pg_prng.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "port/pg_bswap.h"
#include "utils/builtins.h"
#include "utils/json.h"

#include "nadi.h"

void
nadi_connect(void)
{
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
}

void
nadi_finish(void)
{
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
}

/*
 * Prepare a statement once per backend and keep it.  Call with SPI
 * connected.  Plans are revalidated by the plan cache when the tables they
 * use change, so DROP/CREATE EXTENSION in a live backend is safe.
 */
SPIPlanPtr
nadi_plan(SPIPlanPtr *cache, const char *sql, int nargs, Oid *argtypes)
{
	if (*cache == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed for \"%s\": %s", sql,
				 SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "SPI_keepplan failed");
		*cache = plan;
	}
	return *cache;
}

/* Run a kept plan; raise if it did not do what it was for. */
int
nadi_exec(SPIPlanPtr plan, Datum *values, const char *nulls, bool read_only, long count)
{
	int			rc = SPI_execute_plan(plan, values, nulls, read_only, count);

	if (rc < 0)
		elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(rc));
	return rc;
}

/* Refuse payloads over nadi.max_payload_size. */
void
nadi_check_payload(Jsonb *payload, const char *what)
{
	if (payload != NULL && VARSIZE(payload) > (Size) nadi_max_payload_bytes)
		ereport(ERROR,
				(errcode(ERRCODE_NADI_PAYLOAD_TOO_LARGE),
				 errmsg("%s is too large", what),
				 errdetail("It takes %zu bytes; the limit is %d bytes.",
						   (Size) VARSIZE(payload), nadi_max_payload_bytes),
				 errhint("Raise nadi.max_payload_size, or store large data elsewhere and pass a reference.")));
}

/*
 * Tool names are identifiers: ^[a-z][a-z0-9_]{0,63}$.  They become a path
 * segment of sandboxd's URLs and the key approval policies match, so
 * anything else ("x/../exec", "%2e%2e", "EXEC") is refused before it is
 * stored.  The cell checks again with the same rule before any policy check.
 */
bool
nadi_tool_name_ok(const char *name, size_t len)
{
	if (name == NULL || len < 1 || len > 64 || name[0] < 'a' || name[0] > 'z')
		return false;
	for (size_t i = 1; i < len; i++)
	{
		char		c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
			return false;
	}
	return true;
}

/*
 * A value from a client as an error shows it: JSON-quoted and escaped, cut
 * at 64 characters, with its length in bytes after it when cut.  Errors
 * echo hostile input into the client's answer and the server log, so no
 * value of any length goes there whole.
 */
char *
nadi_shown(const char *s, int len)
{
	StringInfoData shown;
	int			n = pg_mbcliplen(s, len, NADI_SHOWN_CHARS);

	initStringInfo(&shown);
	escape_json(&shown, pnstrdup(s, n));
	if (n < len)
		appendStringInfo(&shown, " (%d bytes)", len);
	return shown.data;
}

/* Raise NA013 unless v is a string that is a tool name; where says whose. */
void
nadi_check_tool_name(const JsonbValue *v, const char *where)
{
	if (v != NULL && v->type == jbvString &&
		nadi_tool_name_ok(v->val.string.val, v->val.string.len))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_NADI_INVALID_TOOL_NAME),
			 errmsg("invalid tool name %s in %s",
					v == NULL || v->type != jbvString ? "(not a string)" :
					nadi_shown(v->val.string.val, v->val.string.len), where),
			 errdetail("A tool name is a string of 1 to 64 characters: a lower-case letter, then lower-case letters, digits or \"_\"."),
			 errhint("Use the name of a tool the sandbox host lists (GET /v1/tools), such as \"exec\".")));
}

/*
 * A session policy's "require_approval", when present, is an array of tool
 * names or "*": a name the cell could never call would approve nothing, and
 * one that is not canonical would never match.
 */
void
nadi_check_approval_policy(Jsonb *policy)
{
	JsonbValue *list;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;

	list = nadi_jsonb_member(policy, "require_approval");
	if (list == NULL)
		return;
	if (list->type != jbvBinary || !JsonContainerIsArray(list->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("policy.require_approval must be a JSON array"),
				 errdetail("It lists the tool names that need a client's approval, or \"*\" for every tool."),
				 errhint("For example {\"require_approval\": [\"exec\", \"write_file\"]}.")));
	it = JsonbIteratorInit(list->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok != WJB_ELEM)
			continue;
		if (v.type == jbvString && v.val.string.len == 1 && v.val.string.val[0] == '*')
			continue;
		nadi_check_tool_name(&v, "policy.require_approval");
	}
}

void
nadi_check_limit(int32 limit, int32 max)
{
	if (limit < 1 || limit > max)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("limit must be between 1 and %d", max),
				 errdetail("The limit given was %d.", limit)));
}

void
nadi_uuid_parse(const char *text, pg_uuid_t *u)
{
	memcpy(u, DatumGetUUIDP(DirectFunctionCall1(uuid_in, CStringGetDatum(text))), sizeof(pg_uuid_t));
}

TimestampTz
nadi_timestamptz_parse(const char *text)
{
	return DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in, CStringGetDatum(text),
												   ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1)));
}

char *
nadi_uuid_out(const pg_uuid_t *u)
{
	return DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(u)));
}

/*
 * A version 7 uuid (RFC 9562): 48 bits of Unix milliseconds, then random.
 * Ids sort by creation time, so session lists page by id and the primary key
 * index is appended to rather than written all over.
 */
void
nadi_uuid_v7(pg_uuid_t *u)
{
	uint64		ms = (uint64) ((GetCurrentTimestamp() / 1000) +
							   ((int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * 1000));

	if (!pg_strong_random(u->data, UUID_LEN))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random bytes for a session id")));
	for (int i = 0; i < 6; i++)
		u->data[i] = (unsigned char) (ms >> (40 - 8 * i));
	u->data[6] = (u->data[6] & 0x0f) | 0x70;
	u->data[8] = (u->data[8] & 0x3f) | 0x80;
}

/*
 * A row produced by SPI (a table's "RETURNING *" or "SELECT *") in the shape
 * of out, the function's row type, as a new tuple in the current memory
 * context.  Columns are matched by name: "*" leaves out a table's dropped
 * columns, which its row type still counts (they stay null), so the two
 * need not have the same number of columns.
 */
HeapTuple
nadi_row_convert(HeapTuple tuple, TupleDesc in, TupleDesc out)
{
	TupleConversionMap *map = convert_tuples_by_name(in, out);
	HeapTuple	copy;

	if (map == NULL)
	{
		/* formed anew: the tuple may carry columns past in's (a caller's extra) */
		Datum	   *values = palloc(sizeof(Datum) * out->natts);
		bool	   *nulls = palloc(sizeof(bool) * out->natts);

		heap_deform_tuple(tuple, in, values, nulls);
		copy = heap_form_tuple(out, values, nulls);
		pfree(values);
		pfree(nulls);
		return copy;
	}
	copy = execute_attr_map_tuple(tuple, map);
	free_conversion_map(map);
	return copy;
}

/*
 * Convert a row produced by SPI into a datum of the function's declared row
 * type, allocated in the caller's memory context (which must be the one
 * current before SPI_connect).
 */
Datum
nadi_row_datum(FunctionCallInfo fcinfo, HeapTuple tuple, TupleDesc spi_desc,
			   MemoryContext outer)
{
	TupleDesc	tupdesc;
	MemoryContext old = MemoryContextSwitchTo(outer);
	Datum		result;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	tupdesc = BlessTupleDesc(tupdesc);
	result = heap_copy_tuple_as_datum(nadi_row_convert(tuple, spi_desc, tupdesc), tupdesc);
	MemoryContextSwitchTo(old);
	return result;
}

/* The first row of the last SPI result, as nadi_row_datum returns it. */
Datum
nadi_spi_row(FunctionCallInfo fcinfo, MemoryContext outer)
{
	if (SPI_processed < 1)
		elog(ERROR, "query returned no row");
	return nadi_row_datum(fcinfo, SPI_tuptable->vals[0], SPI_tuptable->tupdesc, outer);
}

/*
 * The first column of every row of the last SPI result, copied out (in the
 * current memory context) before the next query overwrites it: the ids a
 * batch then locks one at a time.
 */
pg_uuid_t *
nadi_spi_uuids(uint64 *n)
{
	pg_uuid_t  *ids = palloc(sizeof(pg_uuid_t) * (SPI_processed + 1));
	bool		isnull;

	for (uint64 i = 0; i < SPI_processed; i++)
		ids[i] = *DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
	*n = SPI_processed;
	return ids;
}

int64 *
nadi_spi_int8s(uint64 *n)
{
	int64	   *ids = palloc(sizeof(int64) * (SPI_processed + 1));
	bool		isnull;

	for (uint64 i = 0; i < SPI_processed; i++)
		ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
	*n = SPI_processed;
	return ids;
}

/*
 * Append the first n rows of an SPI tuple table to a materialized
 * set-returning function's result.  InitMaterializedSRF must have been
 * called before SPI_connect.  A tuple table stays valid until SPI_finish,
 * also after later statements.
 */
void
nadi_tuptable_to_srf(FunctionCallInfo fcinfo, SPITupleTable *tt, uint64 n)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TupleConversionMap *map = convert_tuples_by_name(tt->tupdesc, rsinfo->setDesc);

	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	row = map ? execute_attr_map_tuple(tt->vals[i], map) : tt->vals[i];

		tuplestore_puttuple(rsinfo->setResult, row);
		if (map)
			heap_freetuple(row);
	}
	if (map)
		free_conversion_map(map);
}

/* Every row of the last SPI result, as nadi_tuptable_to_srf(). */
void
nadi_rows_to_srf(FunctionCallInfo fcinfo)
{
	nadi_tuptable_to_srf(fcinfo, SPI_tuptable, SPI_processed);
}

/* A member of a jsonb object, or NULL (also when j is not an object). */
JsonbValue *
nadi_jsonb_member(Jsonb *j, const char *key)
{
	JsonbValue	k;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	return findJsonbValueFromContainer(&j->root, JB_FOBJECT, &k);
}

/* Raise unless an argument's jsonb is an object. */
void
nadi_check_object(Jsonb *j, const char *name)
{
	if (!JB_ROOT_IS_OBJECT(j) || JB_ROOT_IS_SCALAR(j))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a JSON object", name)));
}

/* Parse JSON text built by the caller into jsonb. */
Jsonb *
nadi_jsonb(const char *text)
{
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(text)));
}

/* Start a member of a JSON object being built: a comma if needed, "key": */
static void
json_key(StringInfo buf, const char *key)
{
	if (buf->len > 1)
		appendStringInfoChar(buf, ',');
	escape_json(buf, key);
	appendStringInfoChar(buf, ':');
}

/* Append "key": "value" (JSON-escaped; NULL is null) to a JSON object. */
void
nadi_json_str(StringInfo buf, const char *key, const char *value)
{
	json_key(buf, key);
	if (value)
		escape_json(buf, value);
	else
		appendStringInfoString(buf, "null");
}

void
nadi_json_int(StringInfo buf, const char *key, int64 value)
{
	json_key(buf, key);
	appendStringInfo(buf, INT64_FORMAT, value);
}

void
nadi_json_raw(StringInfo buf, const char *key, const char *json)
{
	json_key(buf, key);
	appendStringInfoString(buf, json ? json : "null");
}

/*
 * A JSON object of string members: nadi_json_strings("k1", v1, "k2", v2,
 * NULL).  A NULL value is null; the list ends at a NULL key.
 */
Jsonb *
nadi_json_strings(const char *key,...)
{
	StringInfoData buf;
	va_list		args;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	va_start(args, key);
	for (; key != NULL; key = va_arg(args, const char *))
		nadi_json_str(&buf, key, va_arg(args, const char *));
	va_end(args);
	appendStringInfoChar(&buf, '}');
	return nadi_jsonb(buf.data);
}

char *
nadi_jsonb_text(Jsonb *j)
{
	return JsonbToCString(NULL, &j->root, VARSIZE(j));
}

/* ISO 8601, whatever the DateStyle: for timestamps inside JSON. */
char *
nadi_timestamptz_iso(TimestampTz ts)
{
	return JsonEncodeDateTime(NULL, TimestampTzGetDatum(ts), TIMESTAMPTZOID, NULL);
}


/*
 * Write an audit_log row in the current transaction.  Connects to SPI itself
 * (nesting is fine), so callers need not be connected.
 */
void
nadi_audit(const char *action, const pg_uuid_t *session_id, const char *tenant,
		   Jsonb *detail)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[6] = {TIMESTAMPTZOID, TEXTOID, TEXTOID, UUIDOID, TEXTOID, JSONBOID};
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};

	nadi_connect();
	values[0] = TimestampTzGetDatum(nadi_now());
	values[1] = CStringGetTextDatum(nadi_actor());
	if (tenant)
		values[2] = CStringGetTextDatum(tenant);
	else
		nulls[2] = 'n';
	if (session_id)
		values[3] = UUIDPGetDatum(session_id);
	else
		nulls[3] = 'n';
	values[4] = CStringGetTextDatum(action);
	values[5] = JsonbPGetDatum(detail ? detail : nadi_jsonb("{}"));
	nadi_exec(nadi_plan(&plan,
						"INSERT INTO nadi.audit_log (at, actor, tenant_id, session_id, action, detail) "
						"VALUES ($1, $2, $3, $4, $5, $6)", 6, types),
			  values, nulls, false, 0);
	nadi_finish();
}
