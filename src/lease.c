/*
 * lease.c — session leases with fencing epochs.  A cell owns a session while
 * it holds an unexpired lease; every acquisition (and every expiry) bumps the
 * epoch, and every write a cell makes carries the epoch it holds, checked
 * under the session lock by the fence of the session core (lease_check in
 * session_core.c).  A cell whose lease moved on cannot change the session,
 * even if it is still running.  This file moves leases (acquire, renew,
 * release, takeover, revocation) and holds the reaper, which expires leases
 * and marks silent hosts dead.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"

#include "nadi.h"
#include "session.h"
#include "wake.h"

/* Point the lease at a holder (NULL: nobody) and an epoch, starting its TTL. */
static void
lease_write(SessionTx *tx, const char *cell_host_id, int64 epoch, bool acquired)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[6] = {UUIDOID, TEXTOID, INT8OID, TIMESTAMPTZOID, BOOLOID, TIMESTAMPTZOID};
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};

	values[0] = UUIDPGetDatum(&tx->id);
	values[5] = TimestampTzGetDatum(nadi_now() + (TimestampTz) nadi_lease_ttl_ms * 1000);
	if (cell_host_id)
		values[1] = CStringGetTextDatum(cell_host_id);
	else
		nulls[1] = 'n';
	values[2] = Int64GetDatum(epoch);
	values[3] = TimestampTzGetDatum(nadi_now());
	values[4] = BoolGetDatum(acquired);
	nadi_exec(nadi_plan(&plan,
						"UPDATE nadi.session_leases SET cell_host_id = $2, epoch = $3, "
						"acquired_at = CASE WHEN $5 THEN $4 ELSE acquired_at END, "
						"renewed_at = CASE WHEN $2 IS NULL THEN renewed_at ELSE $4 END, "
						"expires_at = CASE WHEN $2 IS NULL THEN NULL ELSE $6 END "
						"WHERE session_id = $1",
						6, types),
			  values, nulls, false, 0);
}

static void
lease_event(SessionTx *tx, const char *what, const char *cell_host_id, int64 epoch,
			const char *reason)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	nadi_json_str(&buf, "event", what);
	nadi_json_int(&buf, "epoch", epoch);
	nadi_json_str(&buf, "cell_host_id", cell_host_id);
	if (reason)
		nadi_json_str(&buf, "reason", reason);
	appendStringInfoChar(&buf, '}');
	session_event(tx, "session.lease", nadi_jsonb(buf.data), 0, -1);
	nadi_audit(psprintf("lease.%s", what), &tx->id, tx->tenant, nadi_jsonb(buf.data));
}

/*
 * Put a locked session's in-flight command back in the queue.  When
 * count_attempt is false the attempt it was on does not count against its
 * max_attempts (the cell let go cleanly); when true, a command that has used
 * all its attempts is dead-lettered instead.  Returns how many commands went
 * back to the queue.
 */
static int
lease_requeue_running(SessionTx *tx, bool count_attempt, const char *reason, int *dead_out)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[4] = {UUIDOID, BOOLOID, TIMESTAMPTZOID, TEXTOID};
	Datum		values[4];
	int			requeued = 0;
	int			dead_count = 0;
	uint64		n;
	SPITupleTable *tt;

	values[0] = UUIDPGetDatum(&tx->id);
	values[1] = BoolGetDatum(count_attempt);
	values[2] = TimestampTzGetDatum(nadi_now());
	values[3] = CStringGetTextDatum(reason);
	nadi_exec(nadi_plan(&plan,
						"UPDATE nadi.command_inbox SET "
						"status = CASE WHEN $2 AND attempts >= max_attempts "
						"  THEN 'dead'::nadi.command_status ELSE 'queued' END, "
						"attempts = CASE WHEN $2 THEN attempts ELSE attempts - 1 END, "
						"claimed_epoch = NULL, claimed_at = NULL, available_at = $3, "
						"finished_at = CASE WHEN $2 AND attempts >= max_attempts THEN $3 END, "
						"last_error = CASE WHEN $2 THEN jsonb_build_object('code', 'cell_lost', "
						"  'message', $4) ELSE last_error END "
						"WHERE session_id = $1 AND status = 'running' "
						"RETURNING command_id, status::text, attempts",
						4, types),
			  values, NULL, false, 0);
	n = SPI_processed;
	tt = SPI_tuptable;
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;
		int64		cmd = DatumGetInt64(SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull));
		bool		dead = strcmp(SPI_getvalue(tt->vals[i], tt->tupdesc, 2), "dead") == 0;
		int32		attempts = DatumGetInt32(SPI_getbinval(tt->vals[i], tt->tupdesc, 3, &isnull));
		StringInfoData buf;

		initStringInfo(&buf);
		appendStringInfoChar(&buf, '{');
		nadi_json_str(&buf, "reason", reason);
		nadi_json_int(&buf, "attempts", attempts);
		appendStringInfoChar(&buf, '}');
		session_event(tx, dead ? "command.dead" : "command.requeued", nadi_jsonb(buf.data), cmd, -1);
		if (dead)
			dead_count++;
		else
			requeued++;
	}
	if (dead_out)
		*dead_out = dead_count;
	return requeued;
}

/*
 * Take the lease away from whoever holds it, bumping the epoch so that the
 * holder's writes are refused from now on.
 */
void
lease_drop(SessionTx *tx, const char *reason)
{
	LeaseInfo	l = lease_read(tx);

	lease_requeue_running(tx, true, reason, NULL);
	lease_write(tx, NULL, l.epoch + 1, false);
	lease_event(tx, "revoked", l.cell_host_id, l.epoch + 1, reason);
}

/*
 * Expire a lease whose time is up (called by the reaper under the session
 * lock).  Returns the number of commands requeued; sets *failed when the
 * session used up its crash budget.
 */
static int
lease_expire(SessionTx *tx, int *dead, bool *failed)
{
	LeaseInfo	l = lease_read(tx);
	int			requeued;

	*failed = false;
	requeued = lease_requeue_running(tx, true, "lease expired", dead);
	lease_write(tx, NULL, l.epoch + 1, false);
	lease_event(tx, "expired", l.cell_host_id, l.epoch + 1, "lease expired");

	/* A cell that died mid-command may have been killed by that command. */
	if (requeued + *dead > 0)
		tx->crash_count++;

	if (tx->state == SS_TERMINATING)
		session_finish_termination(tx, "lease expired while terminating");
	else if (tx->crash_count > nadi_crash_budget)
	{
		session_set_state(tx, SS_FAILED, "crash budget exhausted");
		inbox_cancel_open(tx, "session failed");
		*failed = true;
	}
	else
	{
		session_set_state(tx, SS_PENDING, "lease expired");
		session_set_hosts(tx, NULL, tx->sandbox_host_id);
	}
	return requeued;
}

static Datum
lease_row(FunctionCallInfo fcinfo, const pg_uuid_t *id, MemoryContext outer)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[1] = {UUIDPGetDatum(id)};

	nadi_exec(nadi_plan(&plan, "SELECT * FROM nadi.session_leases WHERE session_id = $1",
						1, (Oid[]) {UUIDOID}),
			  values, NULL, false, 1);
	return nadi_spi_row(fcinfo, outer);
}

static void
require_live_cell_host(const char *host_id)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[1] = {CStringGetTextDatum(host_id)};

	nadi_exec(nadi_plan(&plan,
						"SELECT state::text FROM nadi.cell_hosts WHERE host_id = $1",
						1, (Oid[]) {TEXTOID}),
			  values, NULL, false, 1);
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_NADI_HOST_NOT_FOUND),
				 errmsg("cell host \"%s\" is not registered", host_id),
				 errhint("Register it with nadi.cell_host_register() first.")));
	if (strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), "dead") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NADI_HOST_NOT_FOUND),
				 errmsg("cell host \"%s\" is marked dead", host_id),
				 errhint("A dead host comes back with a heartbeat.")));
}

/*
 * nadi.lease_acquire(session_id, cell_host_id) → session_leases
 * A placed session is taken by the host it was placed on; an active session
 * whose lease expired can be taken over by any live cell host.  Either way
 * the epoch goes up by one.
 */
PG_FUNCTION_INFO_V1(nadi_lease_acquire);
Datum
nadi_lease_acquire(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *id;
	char	   *host;
	MemoryContext outer = CurrentMemoryContext;
	SessionTx  *tx;
	LeaseInfo	l;
	Datum		result;
	int			dead = 0;

	NADI_ARG_NOT_NULL(0, "session_id");
	NADI_ARG_NOT_NULL(1, "cell_host_id");
	id = PG_GETARG_UUID_P(0);
	host = text_to_cstring(PG_GETARG_TEXT_PP(1));

	nadi_connect();
	require_live_cell_host(host);
	nadi_require_host_binding("cell", host, "acquire leases for");
	tx = session_lock(id);
	l = lease_read(tx);

	if (tx->state == SS_PLACED)
	{
		if (tx->cell_host_id == NULL || strcmp(tx->cell_host_id, host) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_NADI_LEASE_HELD),
					 errmsg("session %s is placed on cell host \"%s\", not \"%s\"",
							tx->id_text, tx->cell_host_id ? tx->cell_host_id : "", host)));
		session_set_state(tx, SS_ACTIVE, NULL);
		lease_write(tx, host, l.epoch + 1, true);
		lease_event(tx, "acquired", host, l.epoch + 1, NULL);
	}
	else if (tx->state == SS_ACTIVE)
	{
		if (l.held && l.expires_at > nadi_now())
			ereport(ERROR,
					(errcode(ERRCODE_NADI_LEASE_HELD),
					 errmsg("session %s is leased to cell host \"%s\"", tx->id_text, l.cell_host_id),
					 errdetail("The lease at epoch " INT64_FORMAT " expires at %s.",
							   l.epoch, nadi_timestamptz_iso(l.expires_at)),
					 errhint("An expired lease can be taken over; wait for it or for the reaper.")));
		/* another host may take over only if placement could have chosen it */
		if (l.cell_host_id == NULL || strcmp(l.cell_host_id, host) != 0)
			placement_require_fit(tx, host);

		/*
		 * Takeover: whatever the old holder was doing goes back to the queue,
		 * and counts against the crash budget exactly as if the reaper had
		 * found the lease first.
		 */
		if (lease_requeue_running(tx, true, "lease taken over", &dead) + dead > 0)
			tx->crash_count++;
		if (tx->crash_count > nadi_crash_budget)
		{
			lease_write(tx, NULL, l.epoch + 1, false);
			lease_event(tx, "expired", l.cell_host_id, l.epoch + 1, "lease expired");
			session_set_state(tx, SS_FAILED, "crash budget exhausted");
			inbox_cancel_open(tx, "session failed");
		}
		else
		{
			lease_write(tx, host, l.epoch + 1, true);
			lease_event(tx, "taken_over", host, l.epoch + 1, NULL);
			session_set_hosts(tx, host, tx->sandbox_host_id);
		}
	}
	else
		session_set_state(tx, SS_ACTIVE, NULL);	/* raises: no such edge */

	session_save(tx);
	result = lease_row(fcinfo, id, outer);
	nadi_finish();
	PG_RETURN_DATUM(result);
}

/*
 * The start of nadi.lease_renew and nadi.lease_release (session_id, epoch):
 * connects SPI, locks the session and checks the epoch.
 */
static SessionTx *
lease_fenced_call(FunctionCallInfo fcinfo, LeaseInfo *lease)
{
	NADI_ARG_NOT_NULL(0, "session_id");
	NADI_ARG_NOT_NULL(1, "epoch");
	nadi_connect();
	return session_lock_fenced(PG_GETARG_UUID_P(0), PG_GETARG_INT64(1), lease);
}

/* nadi.lease_renew(session_id, epoch) → session_leases */
PG_FUNCTION_INFO_V1(nadi_lease_renew);
Datum
nadi_lease_renew(PG_FUNCTION_ARGS)
{
	MemoryContext outer = CurrentMemoryContext;
	SessionTx  *tx;
	LeaseInfo	l;
	Datum		result;

	tx = lease_fenced_call(fcinfo, &l);
	lease_write(tx, l.cell_host_id, l.epoch, false);
	result = lease_row(fcinfo, &tx->id, outer);
	nadi_finish();
	PG_RETURN_DATUM(result);
}

/*
 * nadi.lease_release(session_id, epoch) → session_leases
 * The cell lets go: an idle session is suspended, one with queued work goes
 * back to pending, a terminating one is terminated.  A command in flight goes
 * back to the queue without counting the attempt.
 */
PG_FUNCTION_INFO_V1(nadi_lease_release);
Datum
nadi_lease_release(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr open_plan = NULL;
	MemoryContext outer = CurrentMemoryContext;
	SessionTx  *tx;
	LeaseInfo	l;
	Datum		result;
	bool		has_work;

	tx = lease_fenced_call(fcinfo, &l);
	lease_requeue_running(tx, false, "lease released", NULL);
	lease_write(tx, NULL, l.epoch, false);
	lease_event(tx, "released", l.cell_host_id, l.epoch, NULL);

	if (tx->state == SS_TERMINATING)
		session_finish_termination(tx, "its cell let go");
	else
	{
		Datum		values[1] = {UUIDPGetDatum(&tx->id)};

		nadi_exec(nadi_plan(&open_plan,
							"SELECT 1 FROM nadi.command_inbox WHERE session_id = $1 "
							"AND status = 'queued' LIMIT 1",
							1, (Oid[]) {UUIDOID}),
				  values, NULL, false, 1);
		has_work = SPI_processed > 0;
		if (has_work)
		{
			session_set_state(tx, SS_PENDING, "released with queued commands");
			session_set_hosts(tx, NULL, tx->sandbox_host_id);
		}
		else
			session_set_state(tx, SS_SUSPENDED, NULL);
	}
	session_save(tx);
	result = lease_row(fcinfo, &tx->id, outer);
	nadi_finish();
	PG_RETURN_DATUM(result);
}

/*
 * nadi.reap() → counts
 * Expires leases past their time, marks hosts that stopped heartbeating dead
 * and sends sessions placed on dead hosts back to pending.  The broker calls
 * it; it is safe to call from anywhere, any number of times at once (each
 * session is handled under its lock, and re-checked once locked).
 */
PG_FUNCTION_INFO_V1(nadi_reap);
Datum
nadi_reap(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr expired_plan = NULL;
	static const char *const host_tables[] = {"nadi.cell_hosts", "nadi.sandbox_hosts"};
	static SPIPlanPtr hosts_plans[lengthof(host_tables)];
	static SPIPlanPtr orphan_plan = NULL;
	TupleDesc	tupdesc;
	Datum		out[6];
	bool		outnulls[6] = {false, false, false, false, false, false};
	int			leases = 0,
				requeued = 0,
				dead = 0,
				failed = 0,
				hosts = 0,
				replaced = 0;
	Datum		values[2];
	uint64		n;
	pg_uuid_t  *ids;

	nadi_require_admin();
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	nadi_connect();

	/* 1. leases past their time */
	values[0] = TimestampTzGetDatum(nadi_now());
	nadi_exec(nadi_plan(&expired_plan,
						"SELECT session_id FROM nadi.session_leases "
						"WHERE cell_host_id IS NOT NULL AND expires_at <= $1 "
						"ORDER BY session_id LIMIT 1000",
						1, (Oid[]) {TIMESTAMPTZOID}),
			  values, NULL, false, 0);
	ids = nadi_spi_uuids(&n);
	for (uint64 i = 0; i < n; i++)
	{
		SessionTx  *tx = session_lock(&ids[i]);
		LeaseInfo	l = lease_read(tx);
		int			d = 0;
		bool		f = false;

		if (!l.held || l.expires_at > nadi_now())
			continue;			/* renewed or released while we waited */
		requeued += lease_expire(tx, &d, &f);
		dead += d;
		failed += f ? 1 : 0;
		leases++;
		session_save(tx);
	}

	/* 2. hosts that stopped heartbeating, of both kinds */
	values[0] = TimestampTzGetDatum(nadi_now() - (TimestampTz) nadi_host_ttl_ms * 1000);
	for (int k = 0; k < lengthof(host_tables); k++)
	{
		nadi_exec(nadi_plan(&hosts_plans[k],
							psprintf("UPDATE %s SET state = 'dead' "
									 "WHERE state <> 'dead' AND heartbeat_at <= $1 RETURNING host_id",
									 host_tables[k]),
							1, (Oid[]) {TIMESTAMPTZOID}),
				  values, NULL, false, 0);
		hosts += SPI_processed;
	}

	/* 3. sessions placed on a host that died or drains before taking them */
	nadi_exec(nadi_plan(&orphan_plan,
						"SELECT s.session_id FROM nadi.sessions s JOIN nadi.cell_hosts h "
						"ON h.host_id = s.cell_host_id WHERE s.state = 'placed' "
						"AND h.state <> 'live' ORDER BY s.session_id LIMIT 1000",
						0, NULL),
			  NULL, NULL, false, 0);
	ids = nadi_spi_uuids(&n);
	for (uint64 i = 0; i < n; i++)
	{
		SessionTx  *tx = session_lock(&ids[i]);

		if (tx->state != SS_PLACED)
			continue;
		session_set_state(tx, SS_PENDING, "its cell host is not live");
		session_set_hosts(tx, NULL, tx->sandbox_host_id);
		session_save(tx);
		replaced++;
	}
	nadi_finish();

	out[0] = Int32GetDatum(leases);
	out[1] = Int32GetDatum(requeued);
	out[2] = Int32GetDatum(dead);
	out[3] = Int32GetDatum(failed);
	out[4] = Int32GetDatum(hosts);
	out[5] = Int32GetDatum(replaced);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), out, outnulls)));
}

/*
 * nadi._session_token_subject(session_id) → text
 * Who mints a token for a session: "cell:<host>" when a cell host holds its
 * lease and the caller may act for that host (nadi_require_host_binding),
 * "admin" when no cell holds it and the caller is an administrator.
 * Anything else raises 42501.  For the SECURITY DEFINER token functions
 * (nadi.sandbox_token, nadi.model_token, nadi.sandboxd_token).
 */
PG_FUNCTION_INFO_V1(nadi_session_token_subject);
Datum
nadi_session_token_subject(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	MemoryContext outer = CurrentMemoryContext;
	pg_uuid_t  *id;
	Datum		values[1];
	char	   *holder;
	char	   *subject;
	bool		isnull;
	Datum		d;

	NADI_ARG_NOT_NULL(0, "session_id");
	id = PG_GETARG_UUID_P(0);
	values[0] = UUIDPGetDatum(id);
	nadi_connect();
	nadi_exec(nadi_plan(&plan,
						"SELECT cell_host_id, expires_at FROM nadi.session_leases WHERE session_id = $1",
						1, (Oid[]) {UUIDOID}),
			  values, NULL, true, 1);
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_NADI_SESSION_NOT_FOUND),
				 errmsg("session %s does not exist", nadi_uuid_out(id))));
	holder = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	if (holder != NULL && !isnull && DatumGetTimestampTz(d) > nadi_now())
	{
		nadi_require_host_binding("cell", holder, "mint tokens as");
		subject = MemoryContextStrdup(outer, psprintf("cell:%s", holder));
	}
	else if (nadi_caller_is_host_admin())
		subject = MemoryContextStrdup(outer, "admin");
	else
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" may not mint tokens for session %s",
						GetUserNameFromId(GetOuterUserId(), false), nadi_uuid_out(id)),
				 errdetail("No cell host holds the session's lease."),
				 errhint("A cell mints tokens only for the sessions its host holds.")));
	nadi_finish();
	PG_RETURN_TEXT_P(cstring_to_text(subject));
}
