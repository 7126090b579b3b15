/*
 * fork.c — nadi.session_fork: a new session that starts where another one
 * was at one event of its log.  The fork's first event, session.forked,
 * carries the parent's conversation at the fork point (replay.c seeds the
 * fork's replayed state with it) and the workspace snapshot the parent's
 * files were at by then (as the replay folds them: the latest call's
 * snapshot, a rolled-back command's undone), which
 * nadi.sandboxd_token hands to the fork's cell as its "fork" claim.  The
 * fork keeps everything it needs: the parent may end or be purged later.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "nadi.h"
#include "session.h"
#include "wake.h"

/*
 * The parent's tenant, metadata, labels, policy and last seq, its row
 * locked FOR KEY SHARE: appends to the parent go on (they lock it FOR NO KEY
 * UPDATE), a purge skips it until the fork commits.  Raises as the other
 * session functions do when the caller may not see it (NA002) or it was
 * purged (NA014).
 */
typedef struct ForkParent
{
	char	   *tenant;
	Jsonb	   *metadata;
	Jsonb	   *labels;
	Jsonb	   *policy;
	int64		last_seq;
} ForkParent;

static ForkParent
fork_parent(const pg_uuid_t *id)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[1] = {UUIDPGetDatum(id)};
	ForkParent	p;
	HeapTuple	row;
	TupleDesc	desc;
	bool		isnull;

	session_require_visible(id);
	nadi_exec(nadi_plan(&plan,
						"SELECT tenant_id, metadata, labels, policy, last_seq FROM nadi.sessions "
						"WHERE session_id = $1 FOR KEY SHARE",
						1, (Oid[]) {UUIDOID}),
			  values, NULL, false, 1);
	if (SPI_processed != 1)
		session_not_found(id);	/* purged while we waited */
	row = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	p.tenant = SPI_getvalue(row, desc, 1);
	p.metadata = DatumGetJsonbPCopy(SPI_getbinval(row, desc, 2, &isnull));
	p.labels = DatumGetJsonbPCopy(SPI_getbinval(row, desc, 3, &isnull));
	p.policy = DatumGetJsonbPCopy(SPI_getbinval(row, desc, 4, &isnull));
	p.last_seq = DatumGetInt64(SPI_getbinval(row, desc, 5, &isnull));
	return p;
}

/* Opens a JSON object with where a fork comes from (the event, the audit row). */
static void
fork_origin(StringInfo buf, const pg_uuid_t *parent_id, int64 at_seq, int64 seq,
			const char *workspace)
{
	appendStringInfoChar(buf, '{');
	nadi_json_str(buf, "parent_session_id", nadi_uuid_out(parent_id));
	nadi_json_int(buf, "at_seq", at_seq);
	nadi_json_int(buf, "seq", seq);
	nadi_json_raw(buf, "workspace", workspace);
}

/*
 * nadi.session_fork(session_id, at_seq) → session_forks
 * A new session of the parent's tenant, with its metadata, labels and
 * policy, whose first event is session.forked.  at_seq NULL: the latest
 * event.  A point inside a command under way moves back to just before that
 * command started; the row returned says which seq was used.
 */
PG_FUNCTION_INFO_V1(nadi_session_fork);
Datum
nadi_session_fork(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr insert_plan = NULL;
	static SPIPlanPtr row_plan = NULL;
	MemoryContext outer = CurrentMemoryContext;
	pg_uuid_t  *parent_id;
	pg_uuid_t  *id = palloc(sizeof(pg_uuid_t));
	ForkParent	parent;
	const char *tenant;
	int64		at_seq;
	ReplayFork	point;
	char	   *workspace;
	StringInfoData buf;
	Jsonb	   *payload;
	SessionTx  *tx;
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	Datum		result;

	NADI_ARG_NOT_NULL(0, "session_id");
	parent_id = PG_GETARG_UUID_P(0);

	nadi_connect();
	parent = fork_parent(parent_id);
	tenant = nadi_caller_tenant_for_create(parent.tenant);
	at_seq = PG_ARGISNULL(1) ? parent.last_seq : PG_GETARG_INT64(1);
	if (at_seq < 1 || at_seq > parent.last_seq)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("at_seq " INT64_FORMAT " is outside the log of session %s",
						at_seq, nadi_uuid_out(parent_id)),
				 errdetail("The session's events are numbered 1 to " INT64_FORMAT ".",
						   parent.last_seq),
				 errhint("Pass the seq of an event of the session, or NULL for its latest.")));

	/* the fork is a new session: the tenant's limit first, before any replay */
	nadi_uuid_v7(id);
	session_insert(id, tenant, parent.metadata, parent.labels, parent.policy);

	point = replay_fork_point(parent_id, at_seq);
	workspace = point.workspace;

	initStringInfo(&buf);
	fork_origin(&buf, parent_id, at_seq, point.seq, workspace);
	nadi_json_str(&buf, "tenant_id", tenant);
	nadi_json_raw(&buf, "metadata", nadi_jsonb_text(parent.metadata));
	nadi_json_raw(&buf, "messages", point.messages);
	appendStringInfoChar(&buf, '}');
	payload = nadi_jsonb(buf.data);
	nadi_check_payload(payload, "the conversation to fork");

	tx = session_lock(id);
	session_event(tx, "session.forked", payload, 0, -1);
	session_save(tx);

	values[0] = UUIDPGetDatum(id);
	values[1] = CStringGetTextDatum(tenant);
	values[2] = UUIDPGetDatum(parent_id);
	values[3] = Int64GetDatum(at_seq);
	values[4] = Int64GetDatum(point.seq);
	if (workspace)
		values[5] = JsonbPGetDatum(nadi_jsonb(workspace));
	else
		nulls[5] = 'n';

	/*
	 * workspace_session_id: the session whose sandbox holds that snapshot
	 * (the parent's own, or, for a snapshot the parent inherited as a fork
	 * and never replaced, whoever held it for the parent), which the reaper
	 * keeps until this fork has made a sandbox of its own.
	 */
	nadi_exec(nadi_plan(&insert_plan,
						"INSERT INTO nadi.session_forks (session_id, tenant_id, parent_session_id, "
						"at_seq, seq, workspace, workspace_session_id, created_at) "
						"SELECT $1, $2, $3, $4, $5, $6, "
						"  CASE WHEN $6 IS NULL THEN NULL "
						"       WHEN p.workspace->'sandbox_id' = $6->'sandbox_id' THEN p.workspace_session_id "
						"       ELSE $3 END, nadi.now() "
						"FROM (SELECT NULL) x LEFT JOIN nadi.session_forks p ON p.session_id = $3",
						6, (Oid[]) {UUIDOID, TEXTOID, UUIDOID, INT8OID, INT8OID, JSONBOID}),
			  values, nulls, false, 0);
	nadi_wake_broker_at_commit();

	resetStringInfo(&buf);
	fork_origin(&buf, parent_id, at_seq, point.seq, workspace);
	appendStringInfoChar(&buf, '}');
	nadi_audit("session.fork", id, tenant, nadi_jsonb(buf.data));

	nadi_exec(nadi_plan(&row_plan, "SELECT * FROM nadi.session_forks WHERE session_id = $1",
						1, (Oid[]) {UUIDOID}),
			  values, NULL, false, 1);
	result = nadi_spi_row(fcinfo, outer);
	nadi_finish();
	PG_RETURN_DATUM(result);
}
