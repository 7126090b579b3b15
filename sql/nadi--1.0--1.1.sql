/*
 * nadi 1.0 → 1.1 — upgrade script.  A fresh CREATE EXTENSION nadi runs
 * nadi--1.0.sql and then this file (there is no nadi--1.1.sql), so an
 * upgraded database and a new one are built by the same statements.
 *
 * 1.1: tool names are identifiers (SQLSTATE NA013), host logins are bound
 * to the host ids an administrator names (nadi.host_bindings), placement
 * labels are set by administrators, sandboxd tokens are per session, and
 * every audit row names the same actor (nadi._actor(), as the C functions
 * record it): the egress functions move to C.
 */
\echo Use "ALTER EXTENSION nadi UPDATE TO '1.1'" to load this file. \quit

---------------------------------------------------------------------------
-- The audit actor
---------------------------------------------------------------------------
--
-- Who an audit row names: the calling role (as SET ROLE left it, outside
-- any SECURITY DEFINER function), or "token:<subject>" under a token.  The
-- C functions record it themselves; the PL/pgSQL ones call this.
CREATE FUNCTION nadi._actor()
RETURNS text
AS 'MODULE_PATHNAME', 'nadi_actor_sql' LANGUAGE C STABLE PARALLEL RESTRICTED;

-- The actor is who the caller says it acts as (a role it SET, a token's
-- subject); the login is who it is.  Every audit row records the login too,
-- whatever function writes it: session_user is the login also inside
-- SECURITY DEFINER functions and after SET ROLE, and no caller can change it.
-- Rows written before 1.1 have none (NULL).
ALTER TABLE nadi.audit_log ADD COLUMN login text;
ALTER TABLE nadi.audit_log ALTER COLUMN login SET DEFAULT session_user;

-- Refuse unless the caller is an administrator: a member of nadi_admin with
-- no token in force, or an admin-scoped token (nadi_require_admin in C).
CREATE FUNCTION nadi._require_admin()
RETURNS void
AS 'MODULE_PATHNAME', 'nadi_require_admin_sql' LANGUAGE C STABLE PARALLEL RESTRICTED;

---------------------------------------------------------------------------
-- Host bindings: which login may act for which host
---------------------------------------------------------------------------
--
-- A login that is neither superuser nor nadi_admin may register, heartbeat,
-- take leases for and write as (fenced writes) only the host ids bound here
-- to a role it is a member of.  Bindings exist before the host registers:
-- an administrator binds, then the host comes up.
CREATE TABLE nadi.host_bindings (
    kind      text NOT NULL CHECK (kind IN ('cell', 'sandbox')),
    host_id   text NOT NULL CHECK (host_id ~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,62}$'),
    role_name name NOT NULL,
    PRIMARY KEY (kind, host_id)
);

SELECT pg_catalog.pg_extension_config_dump('nadi.host_bindings', '');
REVOKE ALL ON nadi.host_bindings FROM PUBLIC;
GRANT SELECT ON nadi.host_bindings TO nadi_admin;

-- The kind and host id of a binding or a label change, checked.
CREATE FUNCTION nadi._host_ref_check(kind text, host_id text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF kind IS NULL OR kind NOT IN ('cell', 'sandbox') THEN
        RAISE EXCEPTION 'invalid host kind %', coalesce(quote_literal(kind), 'NULL')
            USING ERRCODE = '22023', DETAIL = 'A host is of kind ''cell'' or ''sandbox''.';
    END IF;
    IF host_id IS NULL OR host_id !~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,62}$' THEN
        RAISE EXCEPTION 'invalid host id %', coalesce(quote_literal(host_id), 'NULL')
            USING ERRCODE = '22023',
                  DETAIL = 'Host ids are 1 to 63 letters, digits, ''.'', ''_'', '':'' or ''-'', starting with a letter or digit.';
    END IF;
END
$fn$;

-- Bind a host id to the role whose members may act for it (replacing an
-- earlier binding of the same host).
CREATE FUNCTION nadi.host_bind(kind text, host_id text, role name)
RETURNS nadi.host_bindings
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    b nadi.host_bindings;
BEGIN
    PERFORM nadi._require_admin();
    PERFORM nadi._host_ref_check(kind, host_id);
    IF role IS NULL OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = host_bind.role) THEN
        RAISE EXCEPTION 'role % does not exist', coalesce(quote_ident(role), 'NULL')
            USING ERRCODE = '42704', HINT = 'Create the host''s login role first.';
    END IF;
    INSERT INTO nadi.host_bindings AS h (kind, host_id, role_name)
    VALUES (kind, host_id, role)
    ON CONFLICT ON CONSTRAINT host_bindings_pkey DO UPDATE SET role_name = EXCLUDED.role_name
    RETURNING * INTO b;
    INSERT INTO nadi.audit_log (at, actor, action, detail)
    VALUES (nadi.now(), nadi._actor(), 'host.bind',
            jsonb_build_object('kind', b.kind, 'host_id', b.host_id, 'role', b.role_name));
    RETURN b;
END
$fn$;

-- Remove a binding; false when there was none.  The host's login can no
-- longer act for it from its next call on.
CREATE FUNCTION nadi.host_unbind(kind text, host_id text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    gone name;
BEGIN
    PERFORM nadi._require_admin();
    PERFORM nadi._host_ref_check(kind, host_id);
    DELETE FROM nadi.host_bindings h
    WHERE h.kind = host_unbind.kind AND h.host_id = host_unbind.host_id
    RETURNING h.role_name INTO gone;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO nadi.audit_log (at, actor, action, detail)
    VALUES (nadi.now(), nadi._actor(), 'host.unbind',
            jsonb_build_object('kind', kind, 'host_id', host_id, 'role', gone));
    RETURN true;
END
$fn$;

-- Set a registered host's labels (all of them), including the "tenant"
-- label only administrators may set.  Returns the new labels.
CREATE FUNCTION nadi.host_set_labels(kind text, host_id text, labels jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    result jsonb;
BEGIN
    PERFORM nadi._require_admin();
    PERFORM nadi._host_ref_check(kind, host_id);
    IF labels IS NULL OR jsonb_typeof(labels) <> 'object' THEN
        RAISE EXCEPTION 'labels must be a JSON object' USING ERRCODE = '22023';
    END IF;
    IF labels ? 'tenant' AND (jsonb_typeof(labels->'tenant') <> 'string' OR labels->>'tenant' = '') THEN
        RAISE EXCEPTION 'the label "tenant" must be a tenant id'
            USING ERRCODE = '22023', DETAIL = 'A tenant label is a non-empty string.';
    END IF;
    IF length(labels::text) > 65536 THEN
        RAISE EXCEPTION 'labels are too large' USING ERRCODE = 'NA011',
            DETAIL = 'Labels take at most 64 kB as JSON text.';
    END IF;
    IF kind = 'cell' THEN
        UPDATE nadi.cell_hosts h SET labels = host_set_labels.labels
        WHERE h.host_id = host_set_labels.host_id RETURNING h.labels INTO result;
    ELSE
        UPDATE nadi.sandbox_hosts h SET labels = host_set_labels.labels
        WHERE h.host_id = host_set_labels.host_id RETURNING h.labels INTO result;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION '% host % is not registered', kind, quote_literal(host_id)
            USING ERRCODE = 'NA009', HINT = 'The host registers itself first; then set its labels.';
    END IF;
    INSERT INTO nadi.audit_log (at, actor, action, detail)
    VALUES (nadi.now(), nadi._actor(), kind || '_host.labels',
            jsonb_build_object('host_id', host_id, 'labels', result));
    RETURN result;
END
$fn$;

---------------------------------------------------------------------------
-- Tokens for a session: only for the cell host that holds its lease
---------------------------------------------------------------------------

-- "cell:<host>" when a cell host holds the session's lease and the caller
-- may act for it, "admin" for an administrator when no cell holds it;
-- 42501 otherwise.
CREATE FUNCTION nadi._session_token_subject(session_id uuid)
RETURNS text
AS 'MODULE_PATHNAME', 'nadi_session_token_subject' LANGUAGE C STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

-- A token the tools of one sandbox present to the proxy (1.1: minted only
-- by the cell holding the session, or an administrator).
CREATE OR REPLACE FUNCTION nadi.sandbox_token(session_id uuid, sandbox_id text,
                                              ttl interval DEFAULT '15 minutes')
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s nadi.sessions;
BEGIN
    IF sandbox_id IS NULL OR sandbox_id !~ '^[A-Za-z0-9_-]{1,64}$' THEN
        RAISE EXCEPTION 'invalid sandbox_id %', coalesce(quote_literal(sandbox_id), 'NULL')
            USING ERRCODE = '22023',
                  DETAIL = 'Sandbox ids are 1 to 64 letters, digits, "_" and "-", as nadi-sandboxd assigns them.';
    END IF;
    s := nadi._proxy_token_session(session_id, ttl);
    PERFORM nadi._session_token_subject(s.session_id);
    RETURN nadi._token_mint_internal(s.tenant_id, 'sandbox:' || sandbox_id, 'sandbox', ttl,
                           s.session_id, 'nadi-proxy');
END
$fn$;

-- A token a cell sends with the model calls of one session (1.1: minted
-- only by the cell holding the session, or an administrator).
CREATE OR REPLACE FUNCTION nadi.model_token(session_id uuid, ttl interval DEFAULT '15 minutes')
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s nadi.sessions;
BEGIN
    s := nadi._proxy_token_session(session_id, ttl);
    PERFORM nadi._session_token_subject(s.session_id);
    RETURN nadi._token_mint_internal(s.tenant_id, 'model', 'session', ttl, s.session_id, 'nadi-proxy');
END
$fn$;

---------------------------------------------------------------------------
-- Privileges of the 1.1 functions (new functions start executable by PUBLIC)
---------------------------------------------------------------------------

REVOKE ALL ON FUNCTION
    nadi._actor(),
    nadi._require_admin(),
    nadi._host_ref_check(text, text),
    nadi.host_bind(text, text, name),
    nadi.host_unbind(text, text),
    nadi.host_set_labels(text, text, jsonb),
    nadi._session_token_subject(uuid)
FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
    nadi.host_bind(text, text, name),
    nadi.host_unbind(text, text),
    nadi.host_set_labels(text, text, jsonb)
TO nadi_admin;

---------------------------------------------------------------------------
-- Sandbox host tokens: a cell's credential at nadi-sandboxd, for one session
---------------------------------------------------------------------------
--
-- Audience "nadi-sandboxd", scope "sandbox", sid the session, tenant its
-- tenant, sub "cell:<host holding the lease>" (or "admin").  nadi-sandboxd
-- verifies it against nadi.jwks() and lets it reach only the sandboxes of
-- that session; its operator routes take the operator token alone.
CREATE FUNCTION nadi.sandboxd_token(session_id uuid, ttl interval DEFAULT '15 minutes')
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s nadi.sessions;
BEGIN
    IF session_id IS NULL THEN
        RAISE EXCEPTION 'session_id must not be null' USING ERRCODE = '22004';
    END IF;
    IF ttl IS NULL OR ttl < interval '1 second' OR ttl > interval '1 hour' THEN
        RAISE EXCEPTION 'invalid ttl'
            USING ERRCODE = '22023',
                  DETAIL = 'Sandbox host tokens live from 1 second to 1 hour.',
                  HINT = 'Mint a new token before the old one expires.';
    END IF;
    SELECT * INTO s FROM nadi.sessions x WHERE x.session_id = sandboxd_token.session_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'session % does not exist', session_id USING ERRCODE = 'NA002';
    END IF;
    IF s.state IN ('terminated', 'failed') THEN
        RAISE EXCEPTION 'session % is %', session_id, s.state
            USING ERRCODE = 'NA010', DETAIL = 'Sandbox host tokens are minted only for live sessions.';
    END IF;
    RETURN nadi._token_mint_internal(s.tenant_id, nadi._session_token_subject(s.session_id),
                                     'sandbox', ttl, s.session_id, 'nadi-sandboxd');
END
$fn$;

REVOKE ALL ON FUNCTION nadi.sandboxd_token(uuid, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION nadi.sandboxd_token(uuid, interval) TO nadi_cell, nadi_admin;

---------------------------------------------------------------------------
-- Egress rules in C: the same actor, checks and errors as every function
---------------------------------------------------------------------------
--
-- nadi.egress_allow and nadi.egress_revoke were PL/pgSQL that recorded
-- session_user; now they are C (src/egress.c): the audit row names
-- nadi_actor() like every other, the caller must be an administrator (role
-- or admin token, as nadi.reap), and a NULL argument is 22004.  Their
-- grants (nadi_admin) stay as they were.
CREATE OR REPLACE FUNCTION nadi.egress_allow(tenant_id text, upstream text,
                                             methods text[] DEFAULT NULL,
                                             path_prefix text DEFAULT '/')
RETURNS nadi.egress_rules
AS 'MODULE_PATHNAME', 'nadi_egress_allow' LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE OR REPLACE FUNCTION nadi.egress_revoke(tenant_id text, upstream text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'nadi_egress_revoke' LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

---------------------------------------------------------------------------
-- The set-based calls of a cell host
---------------------------------------------------------------------------
--
-- One statement claims the next command of many sessions, one renews many
-- leases, one completes many commands with their events (src/batch.c).  The caller names each session with the epoch it
-- holds it at; every claim and renewal is fenced by that epoch, and a session
-- whose lease moved on is reported (status 'fenced', ok = false) instead of
-- raising NA005, so one lost session does not abort the others' work.
CREATE FUNCTION nadi.command_claim_many(host_id text, session_ids uuid[], epochs bigint[],
                                        max_n integer DEFAULT 100)
RETURNS TABLE (session_id uuid, epoch bigint, status text, command_id bigint, type text,
               payload jsonb, attempts integer)
AS 'MODULE_PATHNAME', 'nadi_command_claim_many' LANGUAGE C VOLATILE SECURITY DEFINER ROWS 10
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION nadi.lease_renew_many(host_id text, session_ids uuid[], epochs bigint[])
RETURNS TABLE (session_id uuid, ok boolean, expires_in_ms bigint)
AS 'MODULE_PATHNAME', 'nadi_lease_renew_many' LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

-- One running command per named session completed, with the cell's events
-- (a JSON array of {"kind", "payload"} per session, or NULL) appended
-- before its command.completed; all events inserted by one statement.
CREATE FUNCTION nadi.command_complete_many(host_id text, session_ids uuid[], epochs bigint[],
                                           command_ids bigint[], results jsonb[] DEFAULT NULL,
                                           events jsonb[] DEFAULT NULL)
RETURNS TABLE (session_id uuid, command_id bigint, status text)
AS 'MODULE_PATHNAME', 'nadi_command_complete_many' LANGUAGE C VOLATILE SECURITY DEFINER ROWS 10
SET search_path = pg_catalog, pg_temp;

REVOKE ALL ON FUNCTION
    nadi.command_claim_many(text, uuid[], bigint[], integer),
    nadi.lease_renew_many(text, uuid[], bigint[]),
    nadi.command_complete_many(text, uuid[], bigint[], bigint[], jsonb[], jsonb[])
FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
    nadi.command_claim_many(text, uuid[], bigint[], integer),
    nadi.lease_renew_many(text, uuid[], bigint[]),
    nadi.command_complete_many(text, uuid[], bigint[], bigint[], jsonb[], jsonb[])
TO nadi_cell;
-- Cells find what a wake-up is about without listing every session they hold
---------------------------------------------------------------------------
--
-- A cell woken by a commit looks for its sessions that were placed or are
-- terminating (this index: the few in transit, not the many active ones)
-- and for its sessions with a command due (command_inbox_open_idx), so its
-- round costs the same however many idle sessions it holds
-- (bgworkers/cellhost.c).
CREATE INDEX sessions_cell_host_transit_idx ON nadi.sessions (cell_host_id)
    WHERE state IN ('placed', 'terminating');

---------------------------------------------------------------------------
-- Set-based enqueue: many commands, across sessions, in one statement
---------------------------------------------------------------------------
--
-- commands is a JSON array of {session_id, type, payload, idempotency_key}
-- (payload defaults to {}, idempotency_key to none).  One row per element
-- comes back in the array's order, each as nadi.command_enqueue would have
-- returned it, with its checks, errors and events; the sessions are locked
-- in the order of their ids.  A refused element refuses the whole batch,
-- naming the element (counting from 1) in the error's detail.  A batch holds
-- at most 1,000 commands and 16 MB of them (inbox_batch.c).
CREATE FUNCTION nadi.command_enqueue_many(commands jsonb)
RETURNS SETOF nadi.command_inbox
AS 'MODULE_PATHNAME', 'nadi_command_enqueue_many' LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

REVOKE ALL ON FUNCTION nadi.command_enqueue_many(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION nadi.command_enqueue_many(jsonb) TO nadi_edge, nadi_admin;

---------------------------------------------------------------------------
-- Data lifecycle: retention, legal holds, audit retention
---------------------------------------------------------------------------
--
-- nadi.purge() removes the sessions that ended (terminated or failed) longer
-- ago than a retention interval, with their events, commands and lease, in
-- bounded batches; each batch is one call of nadi.purge_batch(), its own
-- short transaction when nadi.purge() runs them (COMMIT between batches).
-- A batch locks the sessions it removes FOR UPDATE SKIP LOCKED, in
-- session_id order and before any of their rows (the order every writer
-- takes), so it never waits for a session lock and never touches a live
-- session: only ended sessions are candidates, and an ended session never
-- becomes live again.  What is left of a removed session is a tombstone in
-- nadi.purged_sessions: asking for it answers NA014 (HTTP 410) instead of
-- "not found".
--
-- A legal hold (nadi.hold_set) on a session or on a whole tenant keeps its
-- sessions and its audit rows from every purge until it is released.  Holds
-- and purges exclude each other through a table lock on nadi.legal_holds
-- (purges SHARE, hold changes SHARE ROW EXCLUSIVE): a hold set while a batch
-- runs waits for the batch, and a batch sees every hold committed before it.
--
-- Audit rows (and tombstones) have their own retention: nadi.purge_audit().
-- Everything here is for administrators only.

CREATE TABLE nadi.legal_holds (
    hold_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id  text NOT NULL CHECK (tenant_id <> '' AND length(tenant_id) <= 255),
    session_id uuid,                -- NULL: every session of the tenant
    reason     text NOT NULL CHECK (reason <> '' AND length(reason) <= 1024),
    set_at     timestamptz NOT NULL,
    set_by     text NOT NULL,
    CONSTRAINT legal_holds_target UNIQUE NULLS NOT DISTINCT (tenant_id, session_id)
);

CREATE INDEX legal_holds_session_idx ON nadi.legal_holds (session_id)
    WHERE session_id IS NOT NULL;

-- What is left of a purged session: enough to answer "it was purged".
CREATE TABLE nadi.purged_sessions (
    session_id uuid PRIMARY KEY,
    tenant_id  text NOT NULL,
    state      nadi.session_state NOT NULL,
    last_seq   bigint NOT NULL,
    created_at timestamptz NOT NULL,
    ended_at   timestamptz NOT NULL,
    purged_at  timestamptz NOT NULL
);

CREATE INDEX purged_sessions_purged_at_idx ON nadi.purged_sessions (purged_at);

-- The ended sessions in the order a purge visits them.  The columns are
-- ones no update changes on a live session's hot path (state already has an
-- index), so session updates stay HOT.
CREATE INDEX sessions_ended_idx ON nadi.sessions (session_id)
    WHERE state IN ('terminated', 'failed');

CREATE INDEX audit_log_at_idx ON nadi.audit_log (at);

SELECT pg_catalog.pg_extension_config_dump('nadi.legal_holds', '');
SELECT pg_catalog.pg_extension_config_dump('nadi.purged_sessions', '');

ALTER TABLE nadi.purged_sessions ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON nadi.purged_sessions
    USING (nadi.tenant_visible(tenant_id, session_id));

REVOKE ALL ON nadi.legal_holds, nadi.purged_sessions FROM PUBLIC;
GRANT SELECT ON nadi.legal_holds TO nadi_admin;
GRANT SELECT ON nadi.purged_sessions TO nadi_edge, nadi_admin;

-- The arguments every purge takes, checked.
CREATE FUNCTION nadi._retention_check(older_than interval, batch_size integer)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF older_than IS NULL THEN
        RAISE EXCEPTION 'older_than must not be null' USING ERRCODE = '22004',
            HINT = 'Pass the retention interval, for example ''30 days''.';
    END IF;
    IF older_than < interval '0' THEN
        RAISE EXCEPTION 'older_than must not be negative'
            USING ERRCODE = '22023',
                  DETAIL = format('older_than was %s.', older_than),
                  HINT = 'Rows older than older_than are removed: ''0'' removes every one that qualifies.';
    END IF;
    IF batch_size IS NULL OR batch_size NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'batch_size must be between 1 and 10000'
            USING ERRCODE = '22023',
                  DETAIL = format('batch_size was %s.', coalesce(batch_size::text, 'NULL')),
                  HINT = 'A batch is one short transaction: keep it small under load.';
    END IF;
END
$fn$;

-- The loop arguments of nadi.purge and nadi.purge_audit, checked.
CREATE FUNCTION nadi._retention_loop_check(max_batches integer, time_budget interval)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF max_batches IS NULL OR max_batches NOT BETWEEN 1 AND 1000000 THEN
        RAISE EXCEPTION 'max_batches must be between 1 and 1000000'
            USING ERRCODE = '22023',
                  DETAIL = format('max_batches was %s.', coalesce(max_batches::text, 'NULL'));
    END IF;
    IF time_budget IS NOT NULL AND time_budget <= interval '0' THEN
        RAISE EXCEPTION 'time_budget must be positive'
            USING ERRCODE = '22023',
                  DETAIL = format('time_budget was %s.', time_budget),
                  HINT = 'Pass NULL for no time limit.';
    END IF;
END
$fn$;

-- True when a legal hold keeps the rows of this session (or, session_id
-- NULL, these rows of the tenant): a hold on the session, or on its tenant.
-- The one rule every purge applies.
CREATE FUNCTION nadi._held(tenant_id text, session_id uuid)
RETURNS boolean
LANGUAGE sql STABLE
AS $fn$
    SELECT EXISTS (SELECT 1 FROM nadi.legal_holds h
                   WHERE h.session_id = _held.session_id
                      OR (h.session_id IS NULL AND h.tenant_id = _held.tenant_id))
$fn$;

-- One batch: up to batch_size ended sessions, not held, whose end is older
-- than older_than, removed with everything they own.  Audit rows stay.
CREATE FUNCTION nadi.purge_batch(older_than interval, batch_size integer DEFAULT 100,
                                 OUT sessions integer, OUT events bigint,
                                 OUT commands bigint, OUT leases integer)
RETURNS record
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    ids uuid[];
BEGIN
    PERFORM nadi._require_admin();
    PERFORM nadi._retention_check(older_than, batch_size);
    sessions := 0; events := 0; commands := 0; leases := 0;
    -- no hold can be set or released until this batch ends; the statements
    -- below (each with a snapshot of its own) see every hold committed
    LOCK TABLE nadi.legal_holds IN SHARE MODE;
    SELECT array_agg(c.session_id ORDER BY c.session_id) INTO ids
    FROM (SELECT s.session_id FROM nadi.sessions s
          WHERE s.state IN ('terminated', 'failed')
            AND s.updated_at < nadi.now() - older_than
            AND NOT nadi._held(s.tenant_id, s.session_id)
          ORDER BY s.session_id
          LIMIT batch_size
          FOR UPDATE SKIP LOCKED) c;
    IF ids IS NULL THEN
        RETURN;
    END IF;
    INSERT INTO nadi.purged_sessions (session_id, tenant_id, state, last_seq, created_at,
                                      ended_at, purged_at)
    SELECT s.session_id, s.tenant_id, s.state, s.last_seq, s.created_at, s.updated_at, nadi.now()
    FROM nadi.sessions s WHERE s.session_id = ANY (ids);
    DELETE FROM nadi.events e WHERE e.session_id = ANY (ids);
    GET DIAGNOSTICS events = ROW_COUNT;
    DELETE FROM nadi.command_inbox c WHERE c.session_id = ANY (ids);
    GET DIAGNOSTICS commands = ROW_COUNT;
    DELETE FROM nadi.session_leases l WHERE l.session_id = ANY (ids);
    GET DIAGNOSTICS leases = ROW_COUNT;
    DELETE FROM nadi.sessions s WHERE s.session_id = ANY (ids);
    GET DIAGNOSTICS sessions = ROW_COUNT;
    INSERT INTO nadi.audit_log (at, actor, action, detail)
    VALUES (nadi.now(), nadi._actor(), 'retention.purge',
            jsonb_build_object('older_than', older_than::text, 'sessions', sessions,
                               'events', events, 'commands', commands, 'leases', leases));
END
$fn$;

-- Batches of nadi.purge_batch, each committed before the next, until none
-- is left, max_batches ran or time_budget passed (NULL: no limit).  CALL it
-- outside a transaction block (it commits); inside one, call
-- nadi.purge_batch() instead.
CREATE PROCEDURE nadi.purge(older_than interval, batch_size integer DEFAULT 100,
                            max_batches integer DEFAULT 1000,
                            time_budget interval DEFAULT '1 minute',
                            INOUT sessions bigint DEFAULT NULL, INOUT events bigint DEFAULT NULL,
                            INOUT commands bigint DEFAULT NULL, INOUT leases bigint DEFAULT NULL,
                            INOUT batches integer DEFAULT NULL)
LANGUAGE plpgsql
AS $fn$
DECLARE
    started timestamptz := pg_catalog.clock_timestamp();
    r record;
BEGIN
    PERFORM nadi._retention_check(older_than, batch_size);
    PERFORM nadi._retention_loop_check(max_batches, time_budget);
    sessions := 0; events := 0; commands := 0; leases := 0; batches := 0;
    LOOP
        r := nadi.purge_batch(older_than, batch_size);
        batches := batches + 1;
        sessions := sessions + r.sessions;
        events := events + r.events;
        commands := commands + r.commands;
        leases := leases + r.leases;
        COMMIT;
        EXIT WHEN r.sessions < batch_size OR batches >= max_batches
                  OR (time_budget IS NOT NULL
                      AND pg_catalog.clock_timestamp() - started >= time_budget);
    END LOOP;
END
$fn$;

-- One batch of audit retention: up to batch_size audit rows older than
-- older_than, and tombstones purged longer ago than that, none of a held
-- session or tenant.
CREATE FUNCTION nadi.purge_audit_batch(older_than interval, batch_size integer DEFAULT 1000,
                                       OUT audit_rows integer, OUT tombstones integer)
RETURNS record
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM nadi._require_admin();
    PERFORM nadi._retention_check(older_than, batch_size);
    LOCK TABLE nadi.legal_holds IN SHARE MODE;
    DELETE FROM nadi.audit_log a
    WHERE a.audit_id IN (
        SELECT x.audit_id FROM nadi.audit_log x
        WHERE x.at < nadi.now() - older_than
          AND NOT nadi._held(x.tenant_id, x.session_id)
        ORDER BY x.at, x.audit_id
        LIMIT batch_size
        FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS audit_rows = ROW_COUNT;
    DELETE FROM nadi.purged_sessions p
    WHERE p.session_id IN (
        SELECT x.session_id FROM nadi.purged_sessions x
        WHERE x.purged_at < nadi.now() - older_than
          AND NOT nadi._held(x.tenant_id, x.session_id)
        ORDER BY x.purged_at, x.session_id
        LIMIT batch_size
        FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS tombstones = ROW_COUNT;
    IF audit_rows > 0 OR tombstones > 0 THEN
        INSERT INTO nadi.audit_log (at, actor, action, detail)
        VALUES (nadi.now(), nadi._actor(), 'retention.purge_audit',
                jsonb_build_object('older_than', older_than::text, 'audit_rows', audit_rows,
                                   'tombstones', tombstones));
    END IF;
END
$fn$;

-- Batches of nadi.purge_audit_batch, as nadi.purge runs nadi.purge_batch.
CREATE PROCEDURE nadi.purge_audit(older_than interval, batch_size integer DEFAULT 1000,
                                  max_batches integer DEFAULT 1000,
                                  time_budget interval DEFAULT '1 minute',
                                  INOUT audit_rows bigint DEFAULT NULL,
                                  INOUT tombstones bigint DEFAULT NULL,
                                  INOUT batches integer DEFAULT NULL)
LANGUAGE plpgsql
AS $fn$
DECLARE
    started timestamptz := pg_catalog.clock_timestamp();
    r record;
BEGIN
    PERFORM nadi._retention_check(older_than, batch_size);
    PERFORM nadi._retention_loop_check(max_batches, time_budget);
    audit_rows := 0; tombstones := 0; batches := 0;
    LOOP
        r := nadi.purge_audit_batch(older_than, batch_size);
        batches := batches + 1;
        audit_rows := audit_rows + r.audit_rows;
        tombstones := tombstones + r.tombstones;
        COMMIT;
        EXIT WHEN (r.audit_rows < batch_size AND r.tombstones < batch_size)
                  OR batches >= max_batches
                  OR (time_budget IS NOT NULL
                      AND pg_catalog.clock_timestamp() - started >= time_budget);
    END LOOP;
END
$fn$;

-- Put a session (session_id given) or a whole tenant (session_id NULL) on
-- legal hold, or change the reason of the hold in force.
CREATE FUNCTION nadi.hold_set(tenant_id text, session_id uuid, reason text)
RETURNS nadi.legal_holds
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    owner text;
    h nadi.legal_holds;
BEGIN
    PERFORM nadi._require_admin();
    IF tenant_id IS NULL OR tenant_id = '' OR length(tenant_id) > 255 THEN
        RAISE EXCEPTION 'invalid tenant_id' USING ERRCODE = '22023',
            DETAIL = 'A tenant_id is 1 to 255 characters.';
    END IF;
    IF reason IS NULL OR btrim(reason) = '' OR length(reason) > 1024 THEN
        RAISE EXCEPTION 'a legal hold needs a reason' USING ERRCODE = '22023',
            DETAIL = 'The reason is 1 to 1024 characters, not blank.',
            HINT = 'Name the matter or request the hold is for.';
    END IF;
    -- waits for a purge batch under way; holds are set one at a time
    LOCK TABLE nadi.legal_holds IN SHARE ROW EXCLUSIVE MODE;
    IF session_id IS NOT NULL THEN
        SELECT s.tenant_id INTO owner FROM nadi.sessions s WHERE s.session_id = hold_set.session_id;
        IF NOT FOUND THEN
            IF EXISTS (SELECT 1 FROM nadi.purged_sessions p WHERE p.session_id = hold_set.session_id) THEN
                RAISE EXCEPTION 'session % was purged', session_id USING ERRCODE = 'NA014',
                    DETAIL = 'Its events and commands are gone; there is nothing left to hold.';
            END IF;
            RAISE EXCEPTION 'session % not found', session_id USING ERRCODE = 'NA002';
        END IF;
        IF owner <> tenant_id THEN
            RAISE EXCEPTION 'session % is not of tenant %', session_id, quote_literal(tenant_id)
                USING ERRCODE = '22023', HINT = 'Pass the session''s own tenant_id.';
        END IF;
    END IF;
    INSERT INTO nadi.legal_holds AS l (tenant_id, session_id, reason, set_at, set_by)
    VALUES (tenant_id, session_id, reason, nadi.now(), nadi._actor())
    ON CONFLICT ON CONSTRAINT legal_holds_target
    DO UPDATE SET reason = EXCLUDED.reason, set_at = EXCLUDED.set_at, set_by = EXCLUDED.set_by
    RETURNING * INTO h;
    INSERT INTO nadi.audit_log (at, actor, tenant_id, session_id, action, detail)
    VALUES (nadi.now(), nadi._actor(), h.tenant_id, h.session_id, 'hold.set',
            jsonb_build_object('hold_id', h.hold_id, 'reason', h.reason));
    RETURN h;
END
$fn$;

-- Release a hold; false when there was none.  The rows it kept are purged
-- by the next purge that finds them old enough.
CREATE FUNCTION nadi.hold_release(tenant_id text, session_id uuid, reason text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    h nadi.legal_holds;
BEGIN
    PERFORM nadi._require_admin();
    IF tenant_id IS NULL THEN
        RAISE EXCEPTION 'tenant_id must not be null' USING ERRCODE = '22004';
    END IF;
    IF length(reason) > 1024 THEN
        RAISE EXCEPTION 'reason is too long' USING ERRCODE = '22023',
            DETAIL = 'The reason is at most 1024 characters.';
    END IF;
    LOCK TABLE nadi.legal_holds IN SHARE ROW EXCLUSIVE MODE;
    DELETE FROM nadi.legal_holds l
    WHERE l.tenant_id = hold_release.tenant_id
      AND l.session_id IS NOT DISTINCT FROM hold_release.session_id
    RETURNING * INTO h;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO nadi.audit_log (at, actor, tenant_id, session_id, action, detail)
    VALUES (nadi.now(), nadi._actor(), h.tenant_id, h.session_id, 'hold.release',
            jsonb_strip_nulls(jsonb_build_object('hold_id', h.hold_id, 'held_for', h.reason,
                                                 'reason', reason)));
    RETURN true;
END
$fn$;

REVOKE ALL ON FUNCTION
    nadi._held(text, uuid),
    nadi._retention_check(interval, integer),
    nadi._retention_loop_check(integer, interval),
    nadi.purge_batch(interval, integer),
    nadi.purge_audit_batch(interval, integer),
    nadi.hold_set(text, uuid, text),
    nadi.hold_release(text, uuid, text)
FROM PUBLIC;
REVOKE ALL ON PROCEDURE
    nadi.purge(interval, integer, integer, interval, bigint, bigint, bigint, bigint, integer),
    nadi.purge_audit(interval, integer, integer, interval, bigint, bigint, integer)
FROM PUBLIC;

-- The procedures run as their caller and check their arguments with
-- _retention_check and _retention_loop_check; the batches check that the
-- caller is an administrator.
GRANT EXECUTE ON FUNCTION
    nadi._retention_check(interval, integer),
    nadi._retention_loop_check(integer, interval),
    nadi.purge_batch(interval, integer),
    nadi.purge_audit_batch(interval, integer),
    nadi.hold_set(text, uuid, text),
    nadi.hold_release(text, uuid, text)
TO nadi_admin;
GRANT EXECUTE ON PROCEDURE
    nadi.purge(interval, integer, integer, interval, bigint, bigint, bigint, bigint, integer),
    nadi.purge_audit(interval, integer, integer, interval, bigint, bigint, integer)
TO nadi_admin;
