/*
 * placement.c — cell hosts and sandbox hosts (registration, heartbeats,
 * draining) and placement: a pending session goes to the least-loaded live
 * cell host with room that carries the labels it asks for, preferring hosts
 * labelled for its tenant and refusing hosts labelled for another tenant.
 * Its sandbox host is kept across re-placements while it lives (that is
 * where the session's files are).
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"

#include "nadi.h"
#include "session.h"
#include "wake.h"

typedef struct HostKind
{
	const char *table;			/* nadi.cell_hosts or nadi.sandbox_hosts */
	const char *noun;			/* for audit actions */
	const char *display;		/* for messages */
	const char *bind_kind;		/* nadi.host_bindings.kind */
	SPIPlanPtr	register_plan;
	SPIPlanPtr	heartbeat_plan;
	SPIPlanPtr	state_plan;
} HostKind;

static HostKind cell_kind = {"nadi.cell_hosts", "cell_host", "cell host", "cell"};
static HostKind sandbox_kind = {"nadi.sandbox_hosts", "sandbox_host", "sandbox host", "sandbox"};

/*
 * The label "tenant" steers placement (a host labelled for a tenant is
 * preferred for its sessions and refused for others'), so only an
 * administrator may set it (nadi.host_set_labels or an admin's registration).
 */
static void
host_labels_check(HostKind *kind, const char *host_id, Jsonb *labels)
{
	if (nadi_caller_is_host_admin())
		return;
	if (nadi_jsonb_member(labels, "tenant") != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("only an administrator may set the label \"tenant\" of a %s", kind->display),
				 errdetail("The label \"tenant\" steers placement; a host cannot declare itself a tenant's."),
				 errhint("An administrator sets it with nadi.host_set_labels('%s', '%s', labels).",
						 kind->bind_kind, host_id)));
}

static void
host_id_validate(const char *host_id)
{
	size_t		len = strlen(host_id);
	bool		ok = len >= 1 && len <= 63 && isalnum((unsigned char) host_id[0]);

	for (size_t i = 1; ok && i < len; i++)
		ok = isalnum((unsigned char) host_id[i]) || strchr("._:-", host_id[i]) != NULL;
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid host id \"%s\"", host_id),
				 errdetail("Host ids are 1 to 63 letters, digits, '.', '_', ':' or '-', starting with a letter or digit.")));
}

static Jsonb *
host_detail(const char *host_id, int32 capacity)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	nadi_json_str(&buf, "host_id", host_id);
	if (capacity >= 0)
		nadi_json_int(&buf, "capacity", capacity);
	appendStringInfoChar(&buf, '}');
	return nadi_jsonb(buf.data);
}

/*
 * A sandbox host's address is where cells send requests with a bearer
 * token, so a host may give only a base URL: [http(s)://]HOST[:PORT][/], HOST a DNS name,
 * an IPv4 address or a bracketed IPv6 one; no path, query, fragment or user
 * info a cell's path could be appended to.  Administrators may also give
 * "unix:/PATH" (a local socket).  Raises 22023.
 */
static void
host_address_validate(const char *addr)
{
	const char *p = addr;
	size_t		n;
	bool		ok;

	if (strncmp(p, "unix:/", 6) == 0 && nadi_caller_is_host_admin())
		ok = strspn(p + 5, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/._-") == strlen(p + 5);
	else
	{
		if (strncmp(p, "http://", 7) == 0)
			p += 7;
		else if (strncmp(p, "https://", 8) == 0)
			p += 8;
		/* else HOST[:PORT], which cells reach over http */
		if (*p == '[')
		{
			n = strspn(p + 1, "0123456789abcdefABCDEF:.");
			ok = n > 0 && p[1 + n] == ']';
			p += ok ? n + 2 : 0;
		}
		else
		{
			n = strspn(p, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-");
			ok = n > 0 && n <= 253;
			p += n;
		}
		if (ok && *p == ':')
		{
			n = strspn(p + 1, "0123456789");
			ok = n >= 1 && n <= 5;
			p += n + 1;
		}
		if (ok && *p == '/')
			p++;
		ok = ok && *p == '\0';
	}
	if (!ok || strlen(addr) > 1024)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid host address \"%s\"", addr),
				 errdetail("A sandbox host's address is a base URL, [http(s)://]HOST[:PORT], with no path, query or user info: cells append their own paths to it."),
				 errhint("Give the address the host listens on, for example http://10.0.0.5:7100; only an administrator may register a unix socket.")));
}

static Datum
host_register(FunctionCallInfo fcinfo, HostKind *kind)
{
	MemoryContext outer = CurrentMemoryContext;
	char	   *host_id;
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	int32		capacity = PG_ARGISNULL(2) ? 100 : PG_GETARG_INT32(2);
	Jsonb	   *labels = PG_ARGISNULL(3) ? nadi_jsonb("{}") : PG_GETARG_JSONB_P(3);
	Datum		result;

	NADI_ARG_NOT_NULL(0, "host_id");
	host_id = text_to_cstring(PG_GETARG_TEXT_PP(0));
	host_id_validate(host_id);
	if (capacity < 0 || capacity > 1000000)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("capacity must be between 0 and 1000000")));
	nadi_check_object(labels, "labels");
	nadi_check_payload(labels, "labels");

	values[0] = CStringGetTextDatum(host_id);
	if (PG_ARGISNULL(1))
		nulls[1] = 'n';
	else
		values[1] = PG_GETARG_DATUM(1);
	values[2] = Int32GetDatum(capacity);
	values[3] = JsonbPGetDatum(labels);
	values[4] = TimestampTzGetDatum(nadi_now());

	nadi_connect();
	nadi_require_host_binding(kind->bind_kind, host_id, "register");
	/* cells send requests to sandbox hosts' addresses (a cell host's is a label) */
	if (kind == &sandbox_kind && !PG_ARGISNULL(1))
		host_address_validate(text_to_cstring(PG_GETARG_TEXT_PP(1)));
	host_labels_check(kind, host_id, labels);
	/* a registration without a "tenant" label keeps the one an administrator set */
	nadi_exec(nadi_plan(&kind->register_plan,
						psprintf("INSERT INTO %s AS h (host_id, address, capacity, labels, state, "
								 "registered_at, heartbeat_at) VALUES ($1, $2, $3, $4, 'live', $5, $5) "
								 "ON CONFLICT (host_id) DO UPDATE SET address = EXCLUDED.address, "
								 "capacity = EXCLUDED.capacity, "
								 "labels = CASE WHEN EXCLUDED.labels ? 'tenant' OR NOT h.labels ? 'tenant' "
								 "  THEN EXCLUDED.labels "
								 "  ELSE EXCLUDED.labels || jsonb_build_object('tenant', h.labels->'tenant') END, "
								 "state = 'live', "
								 "heartbeat_at = EXCLUDED.heartbeat_at RETURNING *", kind->table),
						5, (Oid[]) {TEXTOID, TEXTOID, INT4OID, JSONBOID, TIMESTAMPTZOID}),
			  values, nulls, false, 0);
	result = nadi_spi_row(fcinfo, outer);
	nadi_audit(psprintf("%s.register", kind->noun), NULL, NULL, host_detail(host_id, capacity));
	nadi_finish();
	nadi_wake_broker_at_commit();
	PG_RETURN_DATUM(result);
}

static Datum
host_heartbeat(FunctionCallInfo fcinfo, HostKind *kind)
{
	MemoryContext outer = CurrentMemoryContext;
	Datum		values[2];
	Datum		result;
	bool		revived;
	bool		isnull;

	NADI_ARG_NOT_NULL(0, "host_id");
	values[0] = PG_GETARG_DATUM(0);
	values[1] = TimestampTzGetDatum(nadi_now());
	nadi_connect();
	nadi_require_host_binding(kind->bind_kind, text_to_cstring(PG_GETARG_TEXT_PP(0)),
							  "send heartbeats for");
	nadi_exec(nadi_plan(&kind->heartbeat_plan,
						psprintf("UPDATE %s h SET heartbeat_at = $2, "
								 "state = CASE WHEN h.state = 'dead' THEN 'live' ELSE h.state END "
								 "FROM (SELECT host_id, state = 'dead' AS was_dead FROM %s "
								 "      WHERE host_id = $1 FOR NO KEY UPDATE) o "
								 "WHERE h.host_id = o.host_id RETURNING h.*, o.was_dead",
								 kind->table, kind->table),
						2, (Oid[]) {TEXTOID, TIMESTAMPTZOID}),
			  values, NULL, false, 0);
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_NADI_HOST_NOT_FOUND),
				 errmsg("%s \"%s\" is not registered", kind->display, text_to_cstring(PG_GETARG_TEXT_PP(0))),
				 errhint("Register the host before sending heartbeats.")));
	revived = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
										 SPI_tuptable->tupdesc->natts, &isnull));
	{
		/* drop the trailing was_dead column */
		TupleDesc	desc = CreateTupleDescCopy(SPI_tuptable->tupdesc);

		desc->natts--;
		result = nadi_row_datum(fcinfo, SPI_tuptable->vals[0], desc, outer);
	}
	nadi_finish();
	if (revived)
		nadi_wake_broker_at_commit();
	PG_RETURN_DATUM(result);
}

static Datum
host_set_state(FunctionCallInfo fcinfo, HostKind *kind)
{
	MemoryContext outer = CurrentMemoryContext;
	Datum		values[2];
	Datum		result;

	NADI_ARG_NOT_NULL(0, "host_id");
	NADI_ARG_NOT_NULL(1, "state");
	nadi_require_admin();
	values[0] = PG_GETARG_DATUM(0);
	values[1] = CStringGetTextDatum(DatumGetCString(DirectFunctionCall1(enum_out, PG_GETARG_DATUM(1))));
	nadi_connect();
	nadi_exec(nadi_plan(&kind->state_plan,
						psprintf("UPDATE %s SET state = $2::nadi.host_state WHERE host_id = $1 "
								 "RETURNING *", kind->table),
						2, (Oid[]) {TEXTOID, TEXTOID}),
			  values, NULL, false, 0);
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_NADI_HOST_NOT_FOUND),
				 errmsg("%s \"%s\" is not registered", kind->display, text_to_cstring(PG_GETARG_TEXT_PP(0)))));
	result = nadi_spi_row(fcinfo, outer);
	nadi_audit(psprintf("%s.%s", kind->noun, TextDatumGetCString(values[1])),
			   NULL, NULL, host_detail(text_to_cstring(PG_GETARG_TEXT_PP(0)), -1));
	nadi_finish();
	nadi_wake_broker_at_commit();
	PG_RETURN_DATUM(result);
}

/* The SQL functions of each kind of host: nadi.cell_host_register(), ... */
#define HOST_SQL_FUNCTION(sqlname, impl, kind) \
	PG_FUNCTION_INFO_V1(sqlname); \
	Datum sqlname(PG_FUNCTION_ARGS) { return impl(fcinfo, &(kind)); }

HOST_SQL_FUNCTION(nadi_cell_host_register, host_register, cell_kind)
HOST_SQL_FUNCTION(nadi_cell_host_heartbeat, host_heartbeat, cell_kind)
HOST_SQL_FUNCTION(nadi_cell_host_set_state, host_set_state, cell_kind)
HOST_SQL_FUNCTION(nadi_sandbox_host_register, host_register, sandbox_kind)
HOST_SQL_FUNCTION(nadi_sandbox_host_heartbeat, host_heartbeat, sandbox_kind)
HOST_SQL_FUNCTION(nadi_sandbox_host_set_state, host_set_state, sandbox_kind)

/*
 * Choose hosts for a locked pending session and place it.  Returns false
 * (changing nothing) when no live cell host has room for it.
 */
/*
 * Refuse (NA008) a takeover of the session by cell host `host` unless the
 * host could have been chosen for it: it carries the session's labels and
 * is not reserved ("tenant" label) for another tenant.  An expired lease
 * must not let any cell host pull a session off the hosts placement keeps
 * it to.  SPI must be connected.
 */
void
placement_require_fit(const SessionTx *tx, const char *host)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[3];

	values[0] = UUIDPGetDatum(&tx->id);
	values[1] = CStringGetTextDatum(tx->tenant);
	values[2] = CStringGetTextDatum(host);
	nadi_exec(nadi_plan(&plan,
						"SELECT 1 FROM nadi.cell_hosts h, nadi.sessions s "
						"WHERE s.session_id = $1 AND h.host_id = $3 AND h.labels @> s.labels "
						"AND coalesce(h.labels->>'tenant', $2) = $2",
						3, (Oid[]) {UUIDOID, TEXTOID, TEXTOID}),
			  values, NULL, true, 1);
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_NADI_NO_CAPACITY),
				 errmsg("cell host \"%s\" may not take over session %s", host, tx->id_text),
				 errdetail("The host is not registered, lacks the session's labels, or is reserved for another tenant."),
				 errhint("Let the reaper return the session to pending; the broker places it on a host that fits.")));
}

static bool place_locked_try(SessionTx *tx, int attempt);

static bool
place_locked(SessionTx *tx)
{
	return place_locked_try(tx, 0);
}

static bool
place_locked_try(SessionTx *tx, int attempt)
{
	static SPIPlanPtr lock_plan = NULL;
	static SPIPlanPtr recount_plan = NULL;
	static SPIPlanPtr cell_plan = NULL;
	static SPIPlanPtr sandbox_plan = NULL;
	static SPIPlanPtr labels_plan = NULL;
	Datum		values[4];
	char	   *cell;
	char	   *sandbox = NULL;

	values[0] = UUIDPGetDatum(&tx->id);
	nadi_exec(nadi_plan(&labels_plan, "SELECT labels FROM nadi.sessions WHERE session_id = $1",
						1, (Oid[]) {UUIDOID}),
			  values, NULL, false, 1);
	values[0] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &(bool) {false});
	values[1] = CStringGetTextDatum(tx->tenant);
	values[2] = TimestampTzGetDatum(nadi_now() - (TimestampTz) nadi_host_ttl_ms * 1000);
	values[3] = TimestampTzGetDatum(nadi_now() - (TimestampTz) nadi_lease_ttl_ms * 1000 / 2);

	/*
	 * Load counts the sessions a host has taken on and not let go; a host
	 * labelled "tenant" serves that tenant only, and is preferred by it.  A
	 * host that has not heartbeated for half a lease TTL comes after those
	 * that have: a host that just died is still live (host_ttl), has the
	 * least load (its sessions were just taken from it) and would otherwise
	 * get them back, until it is marked dead.
	 */
	nadi_exec(nadi_plan(&cell_plan,
						"SELECT h.host_id FROM nadi.cell_hosts h, LATERAL ("
						"  SELECT count(*) AS load FROM nadi.sessions s WHERE s.cell_host_id = h.host_id "
						"  AND s.state IN ('placed', 'active', 'terminating')) l "
						"WHERE h.state = 'live' AND h.heartbeat_at > $3 AND h.labels @> $1 "
						"AND coalesce(h.labels->>'tenant', $2) = $2 AND l.load < h.capacity "
						"ORDER BY (h.labels ? 'tenant') DESC, (h.heartbeat_at > $4) DESC, "
						"l.load::float8 / h.capacity, h.host_id "
						"LIMIT 1",
						4, (Oid[]) {JSONBOID, TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID}),
			  values, NULL, false, 1);
	if (SPI_processed != 1)
		return false;
	cell = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

	/*
	 * Two placers may pick the same host at once.  Lock it (until commit, so
	 * placements on one host are serialized) and count again: the count now
	 * sees every placement committed before us.  If it is full after all,
	 * choose again.
	 */
	values[3] = CStringGetTextDatum(cell);
	nadi_exec(nadi_plan(&lock_plan,
						"SELECT 1 FROM nadi.cell_hosts WHERE host_id = $1 FOR NO KEY UPDATE",
						1, (Oid[]) {TEXTOID}),
			  &values[3], NULL, false, 1);
	/* a new statement, so a new snapshot: it sees what committed while we waited */
	nadi_exec(nadi_plan(&recount_plan,
						"SELECT (SELECT count(*) FROM nadi.sessions s WHERE s.cell_host_id = h.host_id "
						"  AND s.state IN ('placed', 'active', 'terminating')) < h.capacity "
						"FROM nadi.cell_hosts h WHERE h.host_id = $1",
						1, (Oid[]) {TEXTOID}),
			  &values[3], NULL, false, 1);
	if (SPI_processed != 1 ||
		!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &(bool) {false})))
		return ++attempt < 3 ? place_locked_try(tx, attempt) : false;

	/* keep a live sandbox host; otherwise pick the least loaded live one */
	values[3] = tx->sandbox_host_id ? CStringGetTextDatum(tx->sandbox_host_id) : (Datum) 0;
	nadi_exec(nadi_plan(&sandbox_plan,
						"SELECT h.host_id FROM nadi.sandbox_hosts h, LATERAL ("
						"  SELECT count(*) AS load FROM nadi.sessions s WHERE s.sandbox_host_id = h.host_id "
						"  AND s.state NOT IN ('terminated', 'failed')) l "
						"WHERE h.state = 'live' AND h.heartbeat_at > $3 AND h.labels @> $1 "
						"AND coalesce(h.labels->>'tenant', $2) = $2 "
						"AND (h.host_id = $4 OR l.load < h.capacity) "
						"ORDER BY h.host_id = $4 DESC NULLS LAST, (h.labels ? 'tenant') DESC, "
						"l.load::float8 / greatest(h.capacity, 1), h.host_id LIMIT 1",
						4, (Oid[]) {JSONBOID, TEXTOID, TIMESTAMPTZOID, TEXTOID}),
			  values, tx->sandbox_host_id ? "    " : "   n", false, 1);
	if (SPI_processed == 1)
		sandbox = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

	session_set_hosts(tx, cell, sandbox);
	session_set_state(tx, SS_PLACED, psprintf("placed on cell host %s", cell));
	session_save(tx);
	return true;
}

/*
 * nadi.place(session_id) → sessions
 * Raises ERRCODE_NADI_NO_CAPACITY when no live cell host can take it.
 */
PG_FUNCTION_INFO_V1(nadi_place);
Datum
nadi_place(PG_FUNCTION_ARGS)
{
	MemoryContext outer = CurrentMemoryContext;
	SessionTx  *tx;
	Datum		result;

	NADI_ARG_NOT_NULL(0, "session_id");
	nadi_require_admin();
	nadi_connect();
	tx = session_lock(PG_GETARG_UUID_P(0));
	if (tx->state != SS_PENDING)
		session_set_state(tx, SS_PLACED, NULL);	/* raises for any other state */
	if (!place_locked(tx))
		ereport(ERROR,
				(errcode(ERRCODE_NADI_NO_CAPACITY),
				 errmsg("no live cell host can take session %s", tx->id_text),
				 errdetail("Every live cell host is full, missing the session's labels, or reserved for another tenant."),
				 errhint("Register a cell host, raise a host's capacity, or check the session's labels.")));
	result = session_row(fcinfo, &tx->id, outer);
	nadi_finish();
	PG_RETURN_DATUM(result);
}

/*
 * nadi.place_pending(limit) → number placed
 * The broker's batch: places up to limit pending sessions, oldest first,
 * skipping sessions another placer holds and those no host can take.
 */
PG_FUNCTION_INFO_V1(nadi_place_pending);
Datum
nadi_place_pending(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int32		limit = PG_ARGISNULL(0) ? 100 : PG_GETARG_INT32(0);
	Datum		values[1];
	uint64		n;
	pg_uuid_t  *ids;
	int			placed = 0;

	nadi_require_admin();
	nadi_check_limit(limit, 100000);
	nadi_connect();
	values[0] = Int32GetDatum(limit);
	nadi_exec(nadi_plan(&plan,
						"SELECT session_id FROM nadi.sessions WHERE state = 'pending' "
						"ORDER BY session_id LIMIT $1 FOR NO KEY UPDATE SKIP LOCKED",
						1, (Oid[]) {INT4OID}),
			  values, NULL, false, 0);
	ids = nadi_spi_uuids(&n);
	for (uint64 i = 0; i < n; i++)
	{
		SessionTx  *tx = session_lock(&ids[i]);

		if (tx->state == SS_PENDING && place_locked(tx))
			placed++;
	}
	nadi_finish();
	PG_RETURN_INT32(placed);
}

/*
 * nadi.cell_sessions(cell_host_id) → setof sessions
 * What a cell host should be working on: sessions placed on it, held by it,
 * or terminating there.
 */
PG_FUNCTION_INFO_V1(nadi_cell_sessions);
Datum
nadi_cell_sessions(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[1];

	NADI_ARG_NOT_NULL(0, "cell_host_id");
	InitMaterializedSRF(fcinfo, 0);
	values[0] = PG_GETARG_DATUM(0);
	nadi_connect();
	nadi_exec(nadi_plan(&plan,
						"SELECT * FROM nadi.sessions WHERE cell_host_id = $1 "
						"AND state IN ('placed', 'active', 'terminating') "
						"AND nadi.tenant_visible(tenant_id, session_id) ORDER BY session_id",
						1, (Oid[]) {TEXTOID}),
			  values, NULL, true, 0);
	nadi_rows_to_srf(fcinfo);
	nadi_finish();
	return (Datum) 0;
}
