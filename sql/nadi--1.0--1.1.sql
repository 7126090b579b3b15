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
