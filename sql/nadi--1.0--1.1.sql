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
-- The token of a fork whose origin had a workspace snapshot also carries
-- the claim "fork": {"host", "sandbox", "snapshot"} naming that snapshot:
-- what lets the fork's cell create its sandbox from it at nadi-sandboxd.
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
    RETURN nadi._token_mint_claims(
        s.tenant_id, nadi._session_token_subject(s.session_id), 'sandbox', ttl, s.session_id,
        'nadi-sandboxd', nadi._fork_claims(s.session_id));
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
-- Operator statistics
---------------------------------------------------------------------------
--
-- Views in the style of pg_stat_*, named nadi.stat_*, for the operator's
-- numbers: sessions by tenant and state, the queue, dead letters, hosts
-- with their load and leases, takeovers and crashes, tool and model calls,
-- tokens.  They are read by members of nadi_monitor (granted to
-- nadi_admin; grant it to the login of an edge that exports them, or of a
-- dashboard).  A tenant token in force narrows every view to its tenant
-- and hides the hosts; an admin token, or no token, shows everything.
--
-- What they cost: the queue and dead letters are read through the partial
-- indexes of open and dead commands, hosts' load and leases through the
-- partial indexes of placed sessions and held leases, crashes through a
-- partial index of the sessions with crash_count > 0; sessions by state
-- scan nadi.sessions (not events).  Calls, tokens and takeovers are never
-- counted from nadi.events: the extension's C code that writes an event of
-- the few kinds that carry them appends one row to nadi.call_count_deltas
-- (no index, no row lock, so writers never wait on each other; no trigger,
-- so the other kinds pay nothing), the broker folds those rows into
-- nadi.call_counts (one row per tenant, kind and name) every cycle, and the
-- views add both.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'nadi_monitor') THEN
        CREATE ROLE nadi_monitor NOLOGIN;
    END IF;
END
$roles$;
GRANT nadi_monitor TO nadi_admin;

-- The tenant whose numbers the caller may see: NULL for all of them (no
-- token: the caller is a member of nadi_monitor; or an admin token), the
-- token's tenant under a tenant token; 42501 under a session or sandbox
-- token.
CREATE FUNCTION nadi._stat_tenant()
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    claims jsonb := nadi.current_claims();
BEGIN
    IF claims IS NULL OR claims->>'scope' = 'admin' THEN
        RETURN NULL;
    ELSIF claims->>'scope' = 'tenant' THEN
        RETURN claims->>'tenant';
    END IF;
    RAISE EXCEPTION 'operator statistics are not for % tokens', claims->>'scope'
        USING ERRCODE = '42501', HINT = 'Use a tenant or an admin token.';
END
$fn$;

-- Counted calls, leases taken from a holder, tokens: one row per tenant,
-- kind and name, written only by the fold below.  latency_sum is seconds
-- over the latency_count calls whose duration is known.
CREATE TABLE nadi.call_counts (
    tenant_id     text NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('tool', 'model', 'lease')),
    name          text NOT NULL,
    calls         bigint NOT NULL DEFAULT 0,
    errors        bigint NOT NULL DEFAULT 0,
    latency_count bigint NOT NULL DEFAULT 0,
    latency_sum   double precision NOT NULL DEFAULT 0,
    input_tokens  bigint NOT NULL DEFAULT 0,
    output_tokens bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, kind, name)
);

-- What the event writer appends, one row per counted event, until folded.
CREATE TABLE nadi.call_count_deltas (
    tenant_id     text NOT NULL,
    kind          text NOT NULL,
    name          text NOT NULL,
    calls         bigint NOT NULL,
    errors        bigint NOT NULL,
    latency_count bigint NOT NULL,
    latency_sum   double precision NOT NULL,
    input_tokens  bigint NOT NULL,
    output_tokens bigint NOT NULL
);

-- The counts are made when the events are written, not from nadi.events:
-- a restore loads the events without counting them, so the two tables are
-- registered for pg_dump and a restore brings back the counts as they
-- were, folded or not (docs/OPERATIONS.md).  What counts: the comment of
-- event_count in src/session_core.c.
REVOKE ALL ON nadi.call_counts, nadi.call_count_deltas FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('nadi.call_counts', '');
SELECT pg_catalog.pg_extension_config_dump('nadi.call_count_deltas', '');

-- Fold the deltas into the counts (the broker, every cycle).  One folder at
-- a time; another caller meanwhile returns at once.  Returns the rows folded.
-- It holds the bound of 100 names per tenant and kind for the names the
-- event writer let through between two folds (the most called first; the others
-- go to "(other)").
--
-- Why two tables: the counting runs in the transactions of the cells that
-- append events; if it updated the one nadi.call_counts row of (tenant,
-- kind, name), every cell completing a call of the same tool would queue
-- on that row's lock until the others commit.  Appending never waits.
-- Why nothing is lost or counted twice: the DELETE takes only the delta
-- rows its snapshot sees, and the upsert adds exactly those, in the same
-- transaction; deltas committed meanwhile stay for the next fold.  The
-- stat views add nadi.call_counts and the remaining deltas in one
-- snapshot, so a reader sees each counted event once, folded or not.
CREATE FUNCTION nadi._call_counts_fold()
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    n bigint;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('nadi.call_counts_fold')) THEN
        RETURN 0;
    END IF;
    -- (the CTEs' names are quoted: an unquoted name there would read as a
    -- table's, and this extension's functions name tables with their schema)
    WITH "deleted" AS (DELETE FROM nadi.call_count_deltas RETURNING *),
    "grouped" AS (SELECT d.tenant_id, d.kind, d.name, sum(d.calls) AS calls,
                         sum(d.errors) AS errors, sum(d.latency_count) AS latency_count,
                         sum(d.latency_sum) AS latency_sum, sum(d.input_tokens) AS input_tokens,
                         sum(d.output_tokens) AS output_tokens, count(*) AS n,
                         d.kind = 'lease' OR EXISTS (
                             SELECT 1 FROM nadi.call_counts c
                             WHERE c.tenant_id = d.tenant_id AND c.kind = d.kind
                               AND c.name = d.name) AS known
                  FROM "deleted" d GROUP BY d.tenant_id, d.kind, d.name),
    "ranked" AS (SELECT g.*,
                        CASE WHEN g.known OR row_number() OVER (
                                 PARTITION BY g.tenant_id, g.kind, g.known
                                 ORDER BY g.calls DESC, g.name) + (
                                 SELECT count(*) FROM nadi.call_counts c
                                 WHERE c.tenant_id = g.tenant_id AND c.kind = g.kind) <= 100
                             THEN g.name ELSE '(other)' END AS kept
                 FROM "grouped" g),
    "summed" AS (SELECT r.tenant_id, r.kind, r.kept AS name, sum(r.calls) AS calls,
                        sum(r.errors) AS errors, sum(r.latency_count) AS latency_count,
                        sum(r.latency_sum) AS latency_sum, sum(r.input_tokens) AS input_tokens,
                        sum(r.output_tokens) AS output_tokens, sum(r.n) AS n
                 FROM "ranked" r GROUP BY r.tenant_id, r.kind, r.kept),
    u AS (INSERT INTO nadi.call_counts AS c
              (tenant_id, kind, name, calls, errors, latency_count, latency_sum, input_tokens,
               output_tokens)
          SELECT tenant_id, kind, name, calls, errors, latency_count, latency_sum, input_tokens,
                 output_tokens
          FROM "summed" ORDER BY tenant_id, kind, name
          ON CONFLICT (tenant_id, kind, name) DO UPDATE
          SET calls = c.calls + EXCLUDED.calls, errors = c.errors + EXCLUDED.errors,
              latency_count = c.latency_count + EXCLUDED.latency_count,
              latency_sum = c.latency_sum + EXCLUDED.latency_sum,
              input_tokens = c.input_tokens + EXCLUDED.input_tokens,
              output_tokens = c.output_tokens + EXCLUDED.output_tokens)
    SELECT coalesce(sum(x.n), 0) INTO n FROM "summed" x;
    RETURN n;
END
$fn$;

-- The crashed sessions, few of them: an index of their own.
CREATE INDEX sessions_crashed_idx ON nadi.sessions (tenant_id) WHERE crash_count > 0;

-- Sessions by tenant and state; last_activity is the newest updated_at.
CREATE VIEW nadi.stat_sessions AS
WITH v AS MATERIALIZED (SELECT nadi._stat_tenant() AS only)
SELECT s.tenant_id, s.state, count(*) AS sessions, max(s.updated_at) AS last_activity
FROM nadi.sessions s, v
WHERE v.only IS NULL OR s.tenant_id = v.only
GROUP BY s.tenant_id, s.state;

-- Open and dead commands per tenant, and overall (tenant_id NULL, always
-- there): the oldest queued command's created_at and its age in seconds
-- (by nadi.now()).
CREATE VIEW nadi.stat_queue AS
WITH v AS MATERIALIZED (SELECT nadi._stat_tenant() AS only),
c AS (SELECT c.tenant_id, c.status, c.created_at
      FROM nadi.command_inbox c, v
      WHERE c.status IN ('queued', 'running', 'waiting') AND (v.only IS NULL OR c.tenant_id = v.only)
      UNION ALL
      SELECT c.tenant_id, c.status, c.created_at
      FROM nadi.command_inbox c, v
      WHERE c.status = 'dead' AND (v.only IS NULL OR c.tenant_id = v.only))
SELECT c.tenant_id,
       count(*) FILTER (WHERE c.status = 'queued') AS queued,
       count(*) FILTER (WHERE c.status = 'running') AS running,
       count(*) FILTER (WHERE c.status = 'waiting') AS waiting,
       count(*) FILTER (WHERE c.status = 'dead') AS dead,
       min(c.created_at) FILTER (WHERE c.status = 'queued') AS oldest_queued_at,
       extract(epoch FROM nadi.now() - min(c.created_at) FILTER (WHERE c.status = 'queued'))::double precision
           AS oldest_queued_age_seconds
FROM c
GROUP BY GROUPING SETS ((c.tenant_id), ());

-- Dead commands (dead letters) with their last error; newest first is
-- ORDER BY finished_at DESC.
CREATE VIEW nadi.stat_dead_letters AS
WITH v AS MATERIALIZED (SELECT nadi._stat_tenant() AS only)
SELECT c.session_id, c.tenant_id, c.command_id, c.type, c.attempts, c.max_attempts,
       c.last_error, c.created_at, c.finished_at
FROM nadi.command_inbox c, v
WHERE c.status = 'dead' AND (v.only IS NULL OR c.tenant_id = v.only);

-- Cell and sandbox hosts (administrators only: none under a tenant token):
-- load is the sessions placed on the host (placed, active or terminating
-- for a cell; not yet over for a sandbox host), leases the unexpired
-- leases a cell holds.
CREATE VIEW nadi.stat_hosts AS
WITH v AS MATERIALIZED (SELECT nadi._stat_tenant() AS only),
cl AS (SELECT s.cell_host_id AS host_id, count(*) AS n FROM nadi.sessions s
       WHERE s.state IN ('placed', 'active', 'terminating') GROUP BY s.cell_host_id),
sl AS (SELECT s.sandbox_host_id AS host_id, count(*) AS n FROM nadi.sessions s
       WHERE s.state NOT IN ('terminated', 'failed') AND s.sandbox_host_id IS NOT NULL
       GROUP BY s.sandbox_host_id),
ll AS (SELECT l.cell_host_id AS host_id, count(*) AS n FROM nadi.session_leases l
       WHERE l.cell_host_id IS NOT NULL AND l.expires_at > nadi.now() GROUP BY l.cell_host_id)
SELECT 'cell'::text AS kind, h.host_id, h.state, h.address, h.capacity, h.labels,
       coalesce(cl.n, 0) AS load, coalesce(ll.n, 0) AS leases, h.heartbeat_at,
       extract(epoch FROM nadi.now() - h.heartbeat_at)::double precision AS heartbeat_age_seconds
FROM nadi.cell_hosts h CROSS JOIN v
LEFT JOIN cl ON cl.host_id = h.host_id LEFT JOIN ll ON ll.host_id = h.host_id
WHERE v.only IS NULL
UNION ALL
SELECT 'sandbox', h.host_id, h.state, h.address, h.capacity, h.labels,
       coalesce(sl.n, 0), 0, h.heartbeat_at,
       extract(epoch FROM nadi.now() - h.heartbeat_at)::double precision
FROM nadi.sandbox_hosts h CROSS JOIN v
LEFT JOIN sl ON sl.host_id = h.host_id
WHERE v.only IS NULL;

-- Sessions whose crash budget is in use (crash_count > 0: cells lost while
-- a command ran, since its last completed command), with their lease epoch.
CREATE VIEW nadi.stat_crashes AS
WITH v AS MATERIALIZED (SELECT nadi._stat_tenant() AS only)
SELECT s.session_id, s.tenant_id, s.state, s.crash_count, l.epoch, s.updated_at
FROM nadi.sessions s CROSS JOIN v
LEFT JOIN nadi.session_leases l ON l.session_id = s.session_id
WHERE s.crash_count > 0 AND (v.only IS NULL OR s.tenant_id = v.only);

-- The counts, folded or not yet.
CREATE VIEW nadi.stat_calls AS
WITH v AS MATERIALIZED (SELECT nadi._stat_tenant() AS only),
a AS (SELECT tenant_id, kind, name, calls, errors, latency_count, latency_sum, input_tokens,
             output_tokens FROM nadi.call_counts
      UNION ALL
      SELECT tenant_id, kind, name, calls, errors, latency_count, latency_sum, input_tokens,
             output_tokens FROM nadi.call_count_deltas)
SELECT a.tenant_id, a.kind, a.name, sum(a.calls)::bigint AS calls, sum(a.errors)::bigint AS errors,
       sum(a.latency_count)::bigint AS latency_count,
       sum(a.latency_sum)::double precision AS latency_sum_seconds,
       (sum(a.latency_sum) / nullif(sum(a.latency_count), 0))::double precision AS latency_avg_seconds,
       sum(a.input_tokens)::bigint AS input_tokens, sum(a.output_tokens)::bigint AS output_tokens
FROM a, v
WHERE v.only IS NULL OR a.tenant_id = v.only
GROUP BY a.tenant_id, a.kind, a.name;

-- Takeovers per tenant: leases a holder lost without giving them back,
-- because they expired (the reaper, or a takeover that used up the crash
-- budget) or another cell took them over once expired.  Counted as they
-- happen (session.lease events), so the number only grows.  With the crash
-- counts of the tenant's sessions now.
CREATE VIEW nadi.stat_takeovers AS
WITH t AS (SELECT c.tenant_id, sum(c.calls)::bigint AS takeovers,
                  coalesce(sum(c.calls) FILTER (WHERE c.name = 'expired'), 0)::bigint AS leases_expired,
                  coalesce(sum(c.calls) FILTER (WHERE c.name = 'taken_over'), 0)::bigint AS leases_taken_over
           FROM nadi.stat_calls c WHERE c.kind = 'lease' GROUP BY c.tenant_id),
s AS (SELECT x.tenant_id, count(*) AS sessions_with_crashes, sum(x.crash_count)::bigint AS crash_count_total
      FROM nadi.stat_crashes x GROUP BY x.tenant_id)
SELECT coalesce(t.tenant_id, s.tenant_id) AS tenant_id, coalesce(t.takeovers, 0) AS takeovers,
       coalesce(t.leases_expired, 0) AS leases_expired,
       coalesce(t.leases_taken_over, 0) AS leases_taken_over,
       coalesce(s.sessions_with_crashes, 0) AS sessions_with_crashes,
       coalesce(s.crash_count_total, 0) AS crash_count_total
FROM t FULL JOIN s ON s.tenant_id = t.tenant_id;

-- Tokens the model providers reported, per tenant.
CREATE VIEW nadi.stat_tokens AS
SELECT c.tenant_id, sum(c.input_tokens)::bigint AS input_tokens,
       sum(c.output_tokens)::bigint AS output_tokens
FROM nadi.stat_calls c WHERE c.kind = 'model'
GROUP BY c.tenant_id;

REVOKE ALL ON FUNCTION nadi._stat_tenant(), nadi._call_counts_fold() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION nadi._stat_tenant() TO nadi_monitor;
REVOKE ALL ON nadi.stat_sessions, nadi.stat_queue, nadi.stat_dead_letters, nadi.stat_hosts,
    nadi.stat_crashes, nadi.stat_calls, nadi.stat_takeovers, nadi.stat_tokens FROM PUBLIC;
GRANT SELECT ON nadi.stat_sessions, nadi.stat_queue, nadi.stat_dead_letters, nadi.stat_hosts,
    nadi.stat_crashes, nadi.stat_calls, nadi.stat_takeovers, nadi.stat_tokens TO nadi_monitor;

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
CREATE FUNCTION nadi._retention_loop_check(max_batches integer, time_budget interval,
                                           pause interval)
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
    IF pause IS NOT NULL AND (pause < interval '0' OR pause > interval '1 minute') THEN
        RAISE EXCEPTION 'pause must be between 0 and 1 minute'
            USING ERRCODE = '22023',
                  DETAIL = format('pause was %s.', pause),
                  HINT = 'The pause is the rest between two batches, so that a live workload keeps its pace; NULL or 0: none.';
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
    -- The rows of the sessions first, one statement a table, although the
    -- foreign keys cascade: a cascade deletes them row by row through its
    -- triggers, and these statements count what they remove.  The session
    -- rows, locked above, are deleted last.
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
                               'events', events, 'commands', commands, 'leases', leases,
                               'session_ids', to_jsonb(ids)));
END
$fn$;

-- Batches of nadi.purge_batch, each committed before the next, until none
-- is left, max_batches ran or time_budget passed (NULL: no limit), resting
-- pause between two batches (NULL: none) so that a live workload beside it
-- keeps its pace.  CALL it outside a transaction block (it commits); inside
-- one, call nadi.purge_batch() instead.
CREATE PROCEDURE nadi.purge(older_than interval, batch_size integer DEFAULT 100,
                            max_batches integer DEFAULT 1000,
                            time_budget interval DEFAULT '1 minute',
                            pause interval DEFAULT NULL,
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
    PERFORM nadi._retention_loop_check(max_batches, time_budget, pause);
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
        IF pause > interval '0' THEN
            PERFORM pg_catalog.pg_sleep(extract(epoch FROM pause)::float8);
        END IF;
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
                                  pause interval DEFAULT NULL,
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
    PERFORM nadi._retention_loop_check(max_batches, time_budget, pause);
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
        IF pause > interval '0' THEN
            PERFORM pg_catalog.pg_sleep(extract(epoch FROM pause)::float8);
        END IF;
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
    nadi._retention_loop_check(integer, interval, interval),
    nadi.purge_batch(interval, integer),
    nadi.purge_audit_batch(interval, integer),
    nadi.hold_set(text, uuid, text),
    nadi.hold_release(text, uuid, text)
FROM PUBLIC;
REVOKE ALL ON PROCEDURE
    nadi.purge(interval, integer, integer, interval, interval, bigint, bigint, bigint, bigint, integer),
    nadi.purge_audit(interval, integer, integer, interval, interval, bigint, bigint, integer)
FROM PUBLIC;

-- The procedures run as their caller and check their arguments with
-- _retention_check and _retention_loop_check; the batches check that the
-- caller is an administrator.
GRANT EXECUTE ON FUNCTION
    nadi._retention_check(interval, integer),
    nadi._retention_loop_check(integer, interval, interval),
    nadi.purge_batch(interval, integer),
    nadi.purge_audit_batch(interval, integer),
    nadi.hold_set(text, uuid, text),
    nadi.hold_release(text, uuid, text)
TO nadi_admin;
GRANT EXECUTE ON PROCEDURE
    nadi.purge(interval, integer, integer, interval, interval, bigint, bigint, bigint, bigint, integer),
    nadi.purge_audit(interval, integer, integer, interval, interval, bigint, bigint, integer)
TO nadi_admin;

---------------------------------------------------------------------------
-- Sandbox reaping: which of a sandbox host's sessions ended
---------------------------------------------------------------------------
--
-- nadi-sandboxd destroys the sandboxes of sessions that ended (its reaper).
-- It asks with the session ids of its own sandboxes; the answer is those of
-- them whose session ended (terminated or failed) grace or longer ago, or
-- was purged (only its tombstone in nadi.purged_sessions is left).  An id
-- this database has never seen is not ended: a sandboxd pointed at the
-- wrong database, a restored backup or a lagging replica must not destroy
-- live sandboxes (a sandbox of no session is the operator's to delete).  A
-- legal hold (nadi.hold_set) on the session or on its tenant keeps its
-- sandbox as it keeps its rows, purged or not: a held session is not ended
-- here until the hold is released.  The answer is a subset of the
-- question, so a sandbox host learns nothing of a session whose id it does
-- not already hold, and of one it holds only "ended or not".  At most 1000
-- ids a call.
--
-- A fork makes its sandbox from a snapshot of another session's sandbox the
-- first time it needs one (session_forks.workspace, held by the sandbox of
-- session_forks.workspace_session_id).  Until it has, that sandbox must
-- stay: nadi.sessions_ended does not report a session while a live fork
-- whose snapshot its sandbox holds has no tool.result of its own that names
-- a workspace snapshot yet (a fork that never changes its files keeps it
-- while it lives).  The link survives the purge of the sessions between
-- them (a fork of a fork of it).
CREATE FUNCTION nadi.sessions_ended(session_ids uuid[], grace interval DEFAULT '1 minute')
RETURNS SETOF uuid
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF session_ids IS NULL THEN
        RAISE EXCEPTION 'session_ids must not be null' USING ERRCODE = '22004',
            HINT = 'Pass the session ids of the sandboxes to check, as a uuid[].';
    END IF;
    IF cardinality(session_ids) > 1000 THEN
        RAISE EXCEPTION 'too many session ids' USING ERRCODE = '54000',
            DETAIL = format('%s ids were passed; a call takes at most 1000.',
                            cardinality(session_ids)),
            HINT = 'Ask in batches of at most 1000 ids.';
    END IF;
    IF grace IS NULL OR grace < interval '0' THEN
        RAISE EXCEPTION 'grace must be an interval of zero or more' USING ERRCODE = '22023',
            DETAIL = format('grace was %s.', coalesce(grace::text, 'NULL')),
            HINT = 'A session counts as ended once it has been terminated or failed for grace or longer.';
    END IF;
    RETURN QUERY
    SELECT DISTINCT i.id
    FROM unnest(session_ids) AS i(id)
    LEFT JOIN nadi.sessions s ON s.session_id = i.id
    LEFT JOIN nadi.purged_sessions p ON p.session_id = i.id
    WHERE i.id IS NOT NULL
      AND ((s.session_id IS NULL AND p.session_id IS NOT NULL
            AND NOT nadi._held(p.tenant_id, p.session_id))
           OR (s.state IN ('terminated', 'failed') AND s.updated_at <= nadi.now() - grace
               AND NOT nadi._held(s.tenant_id, s.session_id)))
      AND NOT EXISTS (
            SELECT 1
            FROM nadi.session_forks f
            JOIN nadi.sessions c ON c.session_id = f.session_id
            WHERE f.workspace_session_id = i.id
              AND c.state NOT IN ('terminated', 'failed')
              AND NOT EXISTS (SELECT 1 FROM nadi.events e
                              WHERE e.session_id = f.session_id AND e.kind = 'tool.result'
                                AND jsonb_typeof(e.payload->'workspace') = 'object'));
END
$fn$;

REVOKE ALL ON FUNCTION nadi.sessions_ended(uuid[], interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION nadi.sessions_ended(uuid[], interval) TO nadi_sandbox_host, nadi_admin;

---------------------------------------------------------------------------
-- Data lifecycle review: purges and holds only at READ COMMITTED
---------------------------------------------------------------------------
--
-- Purges and holds exclude each other through the table lock on
-- nadi.legal_holds, and a batch sees every hold committed before it because
-- each statement after the lock takes a new snapshot.  Under REPEATABLE
-- READ or SERIALIZABLE the snapshot is the transaction's, possibly taken
-- before the lock was granted: a batch would not see a hold committed while
-- it waited (and purge the held session), and nadi.hold_set would hold a
-- session a purge had already removed and report success.  A statement
-- trigger on every table a purge deletes from and on nadi.legal_holds
-- refuses any other isolation level (25000, invalid_transaction_state).

CREATE FUNCTION nadi._read_committed_only()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'purges and legal holds run only at READ COMMITTED' USING ERRCODE = '25000',
            DETAIL = format('%s on nadi.%s in a %s transaction, whose snapshot may predate a legal hold.',
                            TG_OP, TG_TABLE_NAME, upper(current_setting('transaction_isolation'))),
            HINT = 'Call it in a READ COMMITTED transaction (SET TRANSACTION ISOLATION LEVEL READ COMMITTED).';
    END IF;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER read_committed_only
    BEFORE INSERT OR UPDATE OR DELETE ON nadi.legal_holds
    FOR EACH STATEMENT EXECUTE FUNCTION nadi._read_committed_only();
CREATE TRIGGER read_committed_only
    BEFORE DELETE ON nadi.sessions
    FOR EACH STATEMENT EXECUTE FUNCTION nadi._read_committed_only();
CREATE TRIGGER read_committed_only
    BEFORE DELETE ON nadi.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION nadi._read_committed_only();
CREATE TRIGGER read_committed_only
    BEFORE DELETE ON nadi.purged_sessions
    FOR EACH STATEMENT EXECUTE FUNCTION nadi._read_committed_only();

REVOKE ALL ON FUNCTION nadi._read_committed_only() FROM PUBLIC;

-- ==== Session forks: a new session from any event of another ====
--
-- nadi.session_fork(session_id, at_seq) makes a session of the same tenant,
-- with the parent's metadata, labels and policy, whose first event is
-- session.forked {parent_session_id, at_seq, seq, workspace, tenant_id,
-- metadata, messages}: the parent's conversation at seq (nadi.session_replay
-- of the fork starts from it) and the workspace snapshot its sandbox had
-- taken by then.  seq is at_seq unless a command was under way there; then it
-- is the seq just before that command started.  The fork counts against the
-- tenant's live sessions as any new session does.  nadi.session_forks records
-- each fork; a purge removes the row with the fork (the parent may be purged
-- first: the fork holds all it needs).
CREATE TABLE nadi.session_forks (
    session_id        uuid PRIMARY KEY REFERENCES nadi.sessions ON DELETE CASCADE,
    tenant_id         text NOT NULL,
    parent_session_id uuid NOT NULL,   -- no foreign key: the parent may be purged
    at_seq            bigint NOT NULL CHECK (at_seq >= 1),
    seq               bigint NOT NULL CHECK (seq >= 1 AND seq <= at_seq),
    workspace         jsonb CHECK (workspace IS NULL OR jsonb_typeof(workspace) = 'object'),
    -- the session whose sandbox holds that snapshot (no foreign key either)
    workspace_session_id uuid,
    created_at        timestamptz NOT NULL
);

CREATE INDEX session_forks_parent_idx ON nadi.session_forks (parent_session_id);
CREATE INDEX session_forks_workspace_session_idx ON nadi.session_forks (workspace_session_id)
    WHERE workspace_session_id IS NOT NULL;

SELECT pg_catalog.pg_extension_config_dump('nadi.session_forks', '');

ALTER TABLE nadi.session_forks ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON nadi.session_forks
    USING (nadi.tenant_visible(tenant_id, session_id));

REVOKE ALL ON nadi.session_forks FROM PUBLIC;
GRANT SELECT ON nadi.session_forks TO nadi_edge, nadi_cell, nadi_admin;

CREATE FUNCTION nadi.session_fork(session_id uuid, at_seq bigint DEFAULT NULL)
RETURNS nadi.session_forks
AS 'MODULE_PATHNAME', 'nadi_session_fork' LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

-- _token_mint_internal with extra claims (a JSON object; never the ones the
-- minter sets); only the owner may execute it.
CREATE FUNCTION nadi._token_mint_claims(tenant_id text, subject text, scope text,
                                        ttl interval, session_id uuid, audience text,
                                        claims jsonb)
RETURNS text
AS 'MODULE_PATHNAME', 'nadi_token_mint_claims' LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

-- The extra claims of a sandboxd token for a session: for a fork whose
-- origin had a workspace snapshot, "fork": {"host", "sandbox", "snapshot"}
-- naming it; NULL otherwise.  nadi.sandboxd_token and the files token of a
-- PUT (nadi.session_files_begin) carry it.
CREATE FUNCTION nadi._fork_claims(session_id uuid)
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    RETURN (SELECT jsonb_build_object('fork', jsonb_build_object(
                       'host', f.workspace->'host_id', 'sandbox', f.workspace->'sandbox_id',
                       'snapshot', f.workspace->'snapshot'))
            FROM nadi.session_forks f
            WHERE f.session_id = _fork_claims.session_id AND f.workspace IS NOT NULL);
END
$fn$;

REVOKE ALL ON FUNCTION
    nadi.session_fork(uuid, bigint),
    nadi._token_mint_claims(text, text, text, interval, uuid, text, jsonb),
    nadi._fork_claims(uuid)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION nadi.session_fork(uuid, bigint) TO nadi_edge, nadi_admin;


-- ==== Files in and out through the edge ====
--
-- PUT and GET /v1/sessions/{id}/files/{path} on nadi-edge reach the
-- session's sandbox on its sandbox host.  The edge holds no credential of
-- its own there: for each transfer it calls nadi.session_files_begin under
-- the client's token, which checks that the caller may act for the
-- session's tenant (another tenant's session does not exist: NA002), writes
-- the transfer's first audit row and mints a short-lived token for that
-- session's files alone: audience "nadi-sandboxd", scope "sandbox", sid the
-- session, sub "files:<actor>".  nadi-sandboxd lets a token whose subject
-- starts with "files:" create and find its session's sandbox and read and
-- write its files, and nothing else (no tool call).  No row comes back when
-- the session has no sandbox host yet (it is not placed).  For a fork whose
-- origin had a workspace snapshot, "fork" is that snapshot as a create's
-- "from" and the token carries the fork claim naming it (for a PUT only: a
-- GET never makes a sandbox): a PUT that makes the fork's sandbox makes it
-- from its parent's files, as its cell would.
-- nadi.session_files_end records the outcome (bytes, HTTP status) in a
-- second row that repeats who, what and where, so one row tells it all.
CREATE FUNCTION nadi.session_files_begin(session_id uuid, direction text, path text,
                                         ttl interval DEFAULT '5 minutes')
RETURNS TABLE (transfer_id bigint, address text, token text, image text, fork jsonb)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s nadi.sessions;
    addr text;
    id bigint;
    w jsonb;
BEGIN
    IF session_id IS NULL OR direction IS NULL OR path IS NULL THEN
        RAISE EXCEPTION 'session_id, direction and path must not be null' USING ERRCODE = '22004';
    END IF;
    IF direction NOT IN ('in', 'out') THEN
        RAISE EXCEPTION 'direction must be "in" or "out"' USING ERRCODE = '22023';
    END IF;
    IF length(path) NOT BETWEEN 1 AND 4096 THEN
        RAISE EXCEPTION 'a path is 1 to 4096 characters' USING ERRCODE = '22023';
    END IF;
    IF ttl IS NULL OR ttl < interval '1 second' OR ttl > interval '1 hour' THEN
        RAISE EXCEPTION 'invalid ttl' USING ERRCODE = '22023',
            DETAIL = 'Sandbox host tokens live from 1 second to 1 hour.';
    END IF;
    SELECT * INTO s FROM nadi.sessions x WHERE x.session_id = session_files_begin.session_id;
    IF NOT FOUND OR NOT nadi.tenant_visible(s.tenant_id, s.session_id) THEN
        RAISE EXCEPTION 'session % does not exist', session_id USING ERRCODE = 'NA002';
    END IF;
    IF s.state IN ('terminated', 'failed') THEN
        RAISE EXCEPTION 'session % is %', session_id, s.state
            USING ERRCODE = 'NA010', DETAIL = 'The files of a session are reached while it lives.';
    END IF;
    SELECT h.address INTO addr FROM nadi.sandbox_hosts h WHERE h.host_id = s.sandbox_host_id;
    IF addr IS NULL THEN
        RETURN;
    END IF;
    INSERT INTO nadi.audit_log (at, actor, tenant_id, session_id, action, detail)
    VALUES (nadi.now(), nadi._actor(), s.tenant_id, s.session_id,
            CASE direction WHEN 'in' THEN 'files.put' ELSE 'files.get' END,
            jsonb_build_object('direction', direction, 'path', path,
                               'sandbox_host_id', s.sandbox_host_id))
    RETURNING audit_id INTO id;
    IF direction = 'in' THEN
        SELECT f.workspace INTO w FROM nadi.session_forks f WHERE f.session_id = s.session_id;
    END IF;
    RETURN QUERY SELECT id, addr,
        nadi._token_mint_claims(s.tenant_id, left('files:' || nadi._actor(), 255), 'sandbox',
                                ttl, s.session_id, 'nadi-sandboxd',
                                CASE WHEN w IS NOT NULL THEN nadi._fork_claims(s.session_id) END),
        coalesce(nullif(current_setting('nadi.sandbox_image', true), ''), 'busybox'),
        jsonb_strip_nulls(w);  -- {host_id?, sandbox_id, snapshot}: the create's "from"
END
$fn$;

-- One outcome per transfer.
CREATE UNIQUE INDEX audit_log_files_done_idx ON nadi.audit_log (((detail->>'transfer_id')::bigint))
    WHERE action = 'files.done';

CREATE FUNCTION nadi.session_files_end(transfer_id bigint, bytes bigint, status integer,
                                       sandbox_id text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    b nadi.audit_log;
    id bigint;
BEGIN
    IF transfer_id IS NULL OR bytes IS NULL OR status IS NULL THEN
        RAISE EXCEPTION 'transfer_id, bytes and status must not be null' USING ERRCODE = '22004';
    END IF;
    IF bytes < 0 OR status NOT BETWEEN 0 AND 599 OR length(sandbox_id) > 64 THEN
        RAISE EXCEPTION 'invalid bytes, status or sandbox_id' USING ERRCODE = '22023';
    END IF;
    SELECT * INTO b FROM nadi.audit_log a
    WHERE a.audit_id = session_files_end.transfer_id AND a.action IN ('files.put', 'files.get');
    IF NOT FOUND OR NOT nadi.tenant_visible(b.tenant_id, b.session_id) OR b.actor <> nadi._actor() THEN
        RAISE EXCEPTION 'transfer % does not exist', transfer_id USING ERRCODE = '22023';
    END IF;
    BEGIN
        INSERT INTO nadi.audit_log (at, actor, tenant_id, session_id, action, detail)
        VALUES (nadi.now(), b.actor, b.tenant_id, b.session_id, 'files.done',
                b.detail || jsonb_build_object('transfer_id', b.audit_id, 'bytes', bytes,
                                               'status', status, 'sandbox_id', sandbox_id))
        RETURNING audit_id INTO id;
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'transfer % is already finished', transfer_id USING ERRCODE = '22023';
    END;
    RETURN id;
END
$fn$;

REVOKE ALL ON FUNCTION nadi.session_files_begin(uuid, text, text, interval),
                       nadi.session_files_end(bigint, bigint, integer, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION nadi.session_files_begin(uuid, text, text, interval),
                          nadi.session_files_end(bigint, bigint, integer, text) TO nadi_edge, nadi_admin;

-- ==== sandbox hosts find each other: a fork pulls a workspace snapshot from the host that has it ====
-- nadi-sandboxd looks up the address of the host named in a fork's "from"
-- (never an address a client gave): these two columns, nothing else.
GRANT SELECT (host_id, address) ON nadi.sandbox_hosts TO nadi_sandbox_host;
