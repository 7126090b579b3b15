/*
 * nadi 1.0 — install script.  Frozen once released: changes ship as
 * nadi--1.0--X.Y.sql upgrade scripts.
 *
 * Every per-session table is keyed by session_id first, so the schema can be
 * distributed by session_id (docs/ARCHITECTURE.md, "Sharding").
 */
\echo Use "CREATE EXTENSION nadi" to load this file. \quit

-- Roles.  Cluster-wide objects: created when missing, never dropped by
-- DROP EXTENSION.  Grant them to login roles; each can do only its part.
DO $roles$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['nadi_admin', 'nadi_edge', 'nadi_cell', 'nadi_sandbox_host'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END
$roles$;

-- USAGE for everyone: nadi.authenticate() is public; every other function and
-- table grants its own privileges below.
GRANT USAGE ON SCHEMA nadi TO PUBLIC;

CREATE TYPE nadi.session_state AS ENUM (
    'pending', 'placed', 'active', 'suspended', 'terminating', 'terminated', 'failed'
);

CREATE TYPE nadi.command_status AS ENUM (
    'queued', 'running', 'waiting', 'completed', 'dead', 'cancelled'
);

CREATE TYPE nadi.host_state AS ENUM ('live', 'draining', 'dead');

CREATE TABLE nadi.cell_hosts (
    host_id       text PRIMARY KEY
                  CHECK (host_id ~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,62}$'),
    address       text CHECK (length(address) <= 255),
    capacity      integer NOT NULL CHECK (capacity BETWEEN 0 AND 1000000),
    labels        jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(labels) = 'object'),
    state         nadi.host_state NOT NULL DEFAULT 'live',
    registered_at timestamptz NOT NULL,
    heartbeat_at  timestamptz NOT NULL
);

CREATE TABLE nadi.sandbox_hosts (
    host_id       text PRIMARY KEY
                  CHECK (host_id ~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,62}$'),
    address       text CHECK (length(address) <= 255),
    capacity      integer NOT NULL CHECK (capacity BETWEEN 0 AND 1000000),
    labels        jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(labels) = 'object'),
    state         nadi.host_state NOT NULL DEFAULT 'live',
    registered_at timestamptz NOT NULL,
    heartbeat_at  timestamptz NOT NULL
);

-- The session row is also the per-session mutex: every change to a session,
-- its lease, its commands or its events starts by locking it (session.c).
CREATE TABLE nadi.sessions (
    session_id      uuid PRIMARY KEY,
    tenant_id       text NOT NULL CHECK (tenant_id <> '' AND length(tenant_id) <= 255),
    state           nadi.session_state NOT NULL DEFAULT 'pending',
    metadata        jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    labels          jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(labels) = 'object'),
    policy          jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(policy) = 'object'),
    cell_host_id    text REFERENCES nadi.cell_hosts ON DELETE SET NULL,
    sandbox_host_id text REFERENCES nadi.sandbox_hosts ON DELETE SET NULL,
    last_seq        bigint NOT NULL DEFAULT 0,
    crash_count     integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
) WITH (fillfactor = 70);

CREATE INDEX sessions_tenant_idx ON nadi.sessions (tenant_id, session_id);
CREATE INDEX sessions_live_tenant_idx ON nadi.sessions (tenant_id)
    WHERE state NOT IN ('terminated', 'failed');
CREATE INDEX sessions_pending_idx ON nadi.sessions (session_id) WHERE state = 'pending';
CREATE INDEX sessions_cell_host_idx ON nadi.sessions (cell_host_id, session_id)
    WHERE state IN ('placed', 'active', 'terminating');

-- One row per session for its whole life: the epoch only ever grows.
CREATE TABLE nadi.session_leases (
    session_id   uuid PRIMARY KEY REFERENCES nadi.sessions ON DELETE CASCADE,
    cell_host_id text,
    epoch        bigint NOT NULL DEFAULT 0,
    acquired_at  timestamptz,
    renewed_at   timestamptz,
    expires_at   timestamptz
) WITH (fillfactor = 70);

CREATE INDEX session_leases_expiry_idx ON nadi.session_leases (expires_at)
    WHERE cell_host_id IS NOT NULL;

CREATE SEQUENCE nadi.command_id_seq AS bigint;

CREATE TABLE nadi.command_inbox (
    session_id       uuid NOT NULL REFERENCES nadi.sessions ON DELETE CASCADE,
    command_id       bigint NOT NULL DEFAULT nextval('nadi.command_id_seq'),
    tenant_id        text NOT NULL,
    type             text NOT NULL
                     CHECK (type IN ('message', 'tool', 'cancel', 'approve', 'deny')),
    payload          jsonb NOT NULL DEFAULT '{}',
    idempotency_key  text CHECK (idempotency_key <> '' AND length(idempotency_key) <= 255),
    status           nadi.command_status NOT NULL DEFAULT 'queued',
    attempts         integer NOT NULL DEFAULT 0,
    max_attempts     integer NOT NULL CHECK (max_attempts >= 1),
    available_at     timestamptz NOT NULL,
    claimed_epoch    bigint,
    claimed_at       timestamptz,
    cancel_requested boolean NOT NULL DEFAULT false,
    result           jsonb,
    last_error       jsonb,
    created_at       timestamptz NOT NULL,
    finished_at      timestamptz,
    PRIMARY KEY (session_id, command_id)
);

-- Only commands that carry a key are indexed by it.
CREATE UNIQUE INDEX command_inbox_idempotency_idx ON nadi.command_inbox (session_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- The head of a session's queue, and nothing else: stays small however long
-- the history grows.
CREATE INDEX command_inbox_open_idx ON nadi.command_inbox (session_id, command_id)
    WHERE status IN ('queued', 'running', 'waiting');
CREATE INDEX command_inbox_dead_idx ON nadi.command_inbox (session_id, command_id)
    WHERE status = 'dead';

ALTER SEQUENCE nadi.command_id_seq OWNED BY nadi.command_inbox.command_id;

CREATE TABLE nadi.events (
    session_id uuid NOT NULL REFERENCES nadi.sessions ON DELETE CASCADE,
    seq        bigint NOT NULL CHECK (seq > 0),
    tenant_id  text NOT NULL,
    kind       text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$'),
    payload    jsonb NOT NULL DEFAULT '{}',
    command_id bigint,
    epoch      bigint,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (session_id, seq)
);

CREATE TABLE nadi.audit_log (
    audit_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL,
    actor      text NOT NULL,
    tenant_id  text,
    session_id uuid,
    action     text NOT NULL,
    detail     jsonb NOT NULL DEFAULT '{}'
);

CREATE INDEX audit_log_session_idx ON nadi.audit_log (session_id, audit_id)
    WHERE session_id IS NOT NULL;

-- Signing keys.  public_key is the raw 32-byte Ed25519 public key (NULL for
-- HS256); the private half is in nadi.signing_key_secrets, which only the
-- extension's owner can read.  A key mints tokens until retire_at and
-- verifies them until expires_at (NULL: no limit); nadi.key_rotate() sets both.
CREATE TABLE nadi.signing_keys (
    kid        text PRIMARY KEY CHECK (kid ~ '^[A-Za-z0-9._-]{1,64}$'),
    alg        text NOT NULL CHECK (alg IN ('EdDSA', 'HS256')),
    public_key bytea CHECK (public_key IS NULL OR length(public_key) = 32),
    created_at timestamptz NOT NULL,
    retire_at  timestamptz,
    expires_at timestamptz,
    CHECK ((alg = 'EdDSA') = (public_key IS NOT NULL))
);

CREATE TABLE nadi.signing_key_secrets (
    kid    text PRIMARY KEY REFERENCES nadi.signing_keys ON DELETE CASCADE,
    secret bytea NOT NULL CHECK (length(secret) >= 32)
);

REVOKE ALL ON nadi.signing_keys, nadi.signing_key_secrets FROM PUBLIC;

-- Keys are data: a restored database must still verify the tokens it issued.
SELECT pg_catalog.pg_extension_config_dump('nadi.signing_keys', '');
SELECT pg_catalog.pg_extension_config_dump('nadi.signing_key_secrets', '');

-- Catalog state for pg_dump: these tables hold user data.
SELECT pg_catalog.pg_extension_config_dump('nadi.cell_hosts', '');
SELECT pg_catalog.pg_extension_config_dump('nadi.sandbox_hosts', '');
SELECT pg_catalog.pg_extension_config_dump('nadi.sessions', '');
SELECT pg_catalog.pg_extension_config_dump('nadi.session_leases', '');
SELECT pg_catalog.pg_extension_config_dump('nadi.command_inbox', '');
SELECT pg_catalog.pg_extension_config_dump('nadi.command_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('nadi.events', '');
SELECT pg_catalog.pg_extension_config_dump('nadi.audit_log', '');

---------------------------------------------------------------------------
-- Authentication context and row-level security
---------------------------------------------------------------------------

-- True when the caller may see a row of this tenant (and session).  The SQL
-- functions and the policies below share this one rule (auth.c).
CREATE FUNCTION nadi.tenant_visible(tenant_id text, session_id uuid DEFAULT NULL)
RETURNS boolean
AS 'MODULE_PATHNAME', 'nadi_tenant_visible_sql'
LANGUAGE C STABLE PARALLEL RESTRICTED LEAKPROOF;

ALTER TABLE nadi.sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE nadi.command_inbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE nadi.events ENABLE ROW LEVEL SECURITY;
ALTER TABLE nadi.session_leases ENABLE ROW LEVEL SECURITY;
ALTER TABLE nadi.audit_log ENABLE ROW LEVEL SECURITY;

CREATE POLICY tenant_isolation ON nadi.sessions
    USING (nadi.tenant_visible(tenant_id, session_id));
CREATE POLICY tenant_isolation ON nadi.command_inbox
    USING (nadi.tenant_visible(tenant_id, session_id));
CREATE POLICY tenant_isolation ON nadi.events
    USING (nadi.tenant_visible(tenant_id, session_id));
CREATE POLICY tenant_isolation ON nadi.audit_log
    USING (nadi.tenant_visible(tenant_id, session_id));
CREATE POLICY tenant_isolation ON nadi.session_leases
    USING (EXISTS (SELECT 1 FROM nadi.sessions s WHERE s.session_id = session_leases.session_id));

-- Direct table access is read-only for everyone but the owner; all writes go
-- through the functions below, which keep the invariants.
REVOKE ALL ON ALL TABLES IN SCHEMA nadi FROM PUBLIC;
GRANT SELECT ON nadi.sessions, nadi.command_inbox, nadi.events TO nadi_edge, nadi_cell, nadi_admin;
GRANT SELECT ON nadi.session_leases, nadi.cell_hosts, nadi.sandbox_hosts TO nadi_cell, nadi_admin;
GRANT SELECT ON nadi.audit_log TO nadi_admin;

---------------------------------------------------------------------------
-- Clock, limits, state machine
---------------------------------------------------------------------------

-- The clock every expiry decision uses: transaction start time, shifted by
-- nadi.clock_offset (a superuser-only test setting).
CREATE FUNCTION nadi.now() RETURNS timestamptz
AS 'MODULE_PATHNAME', 'nadi_now_sql' LANGUAGE C STABLE PARALLEL SAFE;

-- The transition table, as rows: (from, to, why).
CREATE FUNCTION nadi.session_transitions(
    OUT from_state nadi.session_state, OUT to_state nadi.session_state, OUT cause text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'nadi_session_transitions' LANGUAGE C IMMUTABLE;

---------------------------------------------------------------------------
-- Sessions
---------------------------------------------------------------------------

CREATE FUNCTION nadi.session_create(tenant_id text DEFAULT NULL,
                                    metadata jsonb DEFAULT '{}',
                                    labels jsonb DEFAULT '{}',
                                    policy jsonb DEFAULT '{}')
RETURNS nadi.sessions
AS 'MODULE_PATHNAME', 'nadi_session_create' LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION nadi.session_get(session_id uuid)
RETURNS nadi.sessions
AS 'MODULE_PATHNAME', 'nadi_session_get' LANGUAGE C STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION nadi.session_list(state nadi.session_state DEFAULT NULL,
                                  after uuid DEFAULT NULL,
                                  "limit" integer DEFAULT 100,
                                  tenant_id text DEFAULT NULL)
RETURNS SETOF nadi.sessions
AS 'MODULE_PATHNAME', 'nadi_session_list' LANGUAGE C STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION nadi.session_terminate(session_id uuid, reason text DEFAULT NULL)
RETURNS nadi.sessions
AS 'MODULE_PATHNAME', 'nadi_session_terminate' LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION nadi.session_transition(session_id uuid, to_state nadi.session_state,
                                        reason text DEFAULT NULL)
RETURNS nadi.sessions
AS 'MODULE_PATHNAME', 'nadi_session_transition' LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

---------------------------------------------------------------------------
-- Command inbox
---------------------------------------------------------------------------

CREATE FUNCTION nadi.command_enqueue(session_id uuid, type text,
                                     payload jsonb DEFAULT '{}',
                                     idempotency_key text DEFAULT NULL)
RETURNS nadi.command_inbox
AS 'MODULE_PATHNAME', 'nadi_command_enqueue' LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION nadi.command_get(session_id uuid, command_id bigint)
RETURNS nadi.command_inbox
AS 'MODULE_PATHNAME', 'nadi_command_get' LANGUAGE C STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION nadi.command_list(session_id uuid,
                                  status nadi.command_status DEFAULT NULL,
                                  after bigint DEFAULT 0,
                                  "limit" integer DEFAULT 100)
RETURNS SETOF nadi.command_inbox
AS 'MODULE_PATHNAME', 'nadi_command_list' LANGUAGE C STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION nadi.command_cancel(session_id uuid, command_id bigint)
RETURNS nadi.command_inbox
AS 'MODULE_PATHNAME', 'nadi_command_cancel' LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION nadi.command_claim(session_id uuid, epoch bigint)
RETURNS SETOF nadi.command_inbox
AS 'MODULE_PATHNAME', 'nadi_command_claim' LANGUAGE C VOLATILE SECURITY DEFINER ROWS 1
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION nadi.command_complete(session_id uuid, command_id bigint, epoch bigint,
                                      result jsonb DEFAULT '{}', events jsonb DEFAULT NULL)
RETURNS nadi.command_inbox
AS 'MODULE_PATHNAME', 'nadi_command_complete' LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION nadi.command_fail(session_id uuid, command_id bigint, epoch bigint,
                                  error jsonb, retryable boolean DEFAULT true)
RETURNS nadi.command_inbox
AS 'MODULE_PATHNAME', 'nadi_command_fail' LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION nadi.command_await_permission(session_id uuid, command_id bigint,
                                              epoch bigint, request jsonb)
RETURNS nadi.command_inbox
AS 'MODULE_PATHNAME', 'nadi_command_await_permission' LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

---------------------------------------------------------------------------
-- Leases
---------------------------------------------------------------------------

CREATE FUNCTION nadi.lease_acquire(session_id uuid, cell_host_id text)
RETURNS nadi.session_leases
AS 'MODULE_PATHNAME', 'nadi_lease_acquire' LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION nadi.lease_renew(session_id uuid, epoch bigint)
RETURNS nadi.session_leases
AS 'MODULE_PATHNAME', 'nadi_lease_renew' LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION nadi.lease_release(session_id uuid, epoch bigint)
RETURNS nadi.session_leases
AS 'MODULE_PATHNAME', 'nadi_lease_release' LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION nadi.reap(OUT leases_expired integer, OUT commands_requeued integer,
                          OUT commands_dead integer, OUT sessions_failed integer,
                          OUT hosts_dead integer, OUT sessions_replaced integer)
RETURNS record
AS 'MODULE_PATHNAME', 'nadi_reap' LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

---------------------------------------------------------------------------
-- Hosts and placement
---------------------------------------------------------------------------

CREATE FUNCTION nadi.cell_host_register(host_id text, address text DEFAULT NULL,
                                        capacity integer DEFAULT 100,
                                        labels jsonb DEFAULT '{}')
RETURNS nadi.cell_hosts
AS 'MODULE_PATHNAME', 'nadi_cell_host_register' LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION nadi.cell_host_heartbeat(host_id text)
RETURNS nadi.cell_hosts
AS 'MODULE_PATHNAME', 'nadi_cell_host_heartbeat' LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION nadi.cell_host_set_state(host_id text, state nadi.host_state)
RETURNS nadi.cell_hosts
AS 'MODULE_PATHNAME', 'nadi_cell_host_set_state' LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION nadi.sandbox_host_register(host_id text, address text DEFAULT NULL,
                                           capacity integer DEFAULT 100,
                                           labels jsonb DEFAULT '{}')
RETURNS nadi.sandbox_hosts
AS 'MODULE_PATHNAME', 'nadi_sandbox_host_register' LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION nadi.sandbox_host_heartbeat(host_id text)
RETURNS nadi.sandbox_hosts
AS 'MODULE_PATHNAME', 'nadi_sandbox_host_heartbeat' LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION nadi.sandbox_host_set_state(host_id text, state nadi.host_state)
RETURNS nadi.sandbox_hosts
AS 'MODULE_PATHNAME', 'nadi_sandbox_host_set_state' LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION nadi.place(session_id uuid)
RETURNS nadi.sessions
AS 'MODULE_PATHNAME', 'nadi_place' LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION nadi.place_pending("limit" integer DEFAULT 100)
RETURNS integer
AS 'MODULE_PATHNAME', 'nadi_place_pending' LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION nadi.cell_sessions(cell_host_id text)
RETURNS SETOF nadi.sessions
AS 'MODULE_PATHNAME', 'nadi_cell_sessions' LANGUAGE C STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

---------------------------------------------------------------------------
-- Events
---------------------------------------------------------------------------

CREATE FUNCTION nadi.event_append(session_id uuid, epoch bigint, kind text,
                                  payload jsonb DEFAULT '{}', command_id bigint DEFAULT NULL)
RETURNS nadi.events
AS 'MODULE_PATHNAME', 'nadi_event_append' LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION nadi.events_read(session_id uuid, after bigint DEFAULT 0,
                                 "limit" integer DEFAULT 100)
RETURNS SETOF nadi.events
AS 'MODULE_PATHNAME', 'nadi_events_read' LANGUAGE C STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION nadi.session_replay(session_id uuid, upto bigint DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'nadi_session_replay' LANGUAGE C STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

-- Commit-time wake-ups delivered so far, and workers attached.
CREATE FUNCTION nadi.wakeup_stats(OUT cell_wakeups bigint, OUT broker_wakeups bigint,
                                  OUT workers integer)
RETURNS record
AS 'MODULE_PATHNAME', 'nadi_wakeup_stats' LANGUAGE C VOLATILE;

---------------------------------------------------------------------------
-- Signing keys and tokens
---------------------------------------------------------------------------

-- Every function here that reads keys is SECURITY DEFINER with a fixed
-- search_path, so its queries cannot be redirected by the caller's.

-- A new signing key; returns its kid.  HS256 only with nadi.allow_hs256 = on.
CREATE FUNCTION nadi.key_create(alg text DEFAULT 'EdDSA')
RETURNS text
AS 'MODULE_PATHNAME', 'nadi_key_create' LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

-- A new EdDSA key mints from now on; older keys stop minting now and stop
-- verifying after the overlap.  Returns the new kid.
CREATE FUNCTION nadi.key_rotate(overlap interval DEFAULT '1 day')
RETURNS text
AS 'MODULE_PATHNAME', 'nadi_key_rotate' LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION nadi.token_mint(tenant_id text, subject text,
                                scope text DEFAULT 'tenant',
                                ttl interval DEFAULT '1 hour',
                                session_id uuid DEFAULT NULL,
                                audience text DEFAULT 'nadi')
RETURNS text
AS 'MODULE_PATHNAME', 'nadi_token_mint' LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

-- The claims of a valid token; an error (SQLSTATE NA020 or NA021) otherwise.
CREATE FUNCTION nadi.token_verify(token text, audience text DEFAULT 'nadi')
RETURNS jsonb
AS 'MODULE_PATHNAME', 'nadi_token_verify' LANGUAGE C STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

-- Verify a token and put its tenant, subject, scope and session in force for
-- the transaction (or the connection).  Returns the claims.
CREATE FUNCTION nadi.authenticate(token text, transaction_only boolean DEFAULT true)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'nadi_authenticate' LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

-- The claims and tenant in force (NULL without a token).  The context lives
-- in the backend, so these must not run in parallel workers.
CREATE FUNCTION nadi.current_claims()
RETURNS jsonb
AS 'MODULE_PATHNAME', 'nadi_current_claims' LANGUAGE C STABLE PARALLEL RESTRICTED;

CREATE FUNCTION nadi.current_tenant()
RETURNS text
AS 'MODULE_PATHNAME', 'nadi_current_tenant' LANGUAGE C STABLE PARALLEL RESTRICTED;

-- The public keys that still verify, as a JSON Web Key Set.
CREATE FUNCTION nadi.jwks()
RETURNS jsonb
AS 'MODULE_PATHNAME', 'nadi_jwks' LANGUAGE C STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

---------------------------------------------------------------------------
-- Privileges: each role can EXECUTE only what it needs.
---------------------------------------------------------------------------

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA nadi FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
    nadi.tenant_visible(text, uuid),
    nadi.now(),
    nadi.session_transitions()
TO PUBLIC;

GRANT EXECUTE ON FUNCTION
    nadi.session_create(text, jsonb, jsonb, jsonb),
    nadi.session_get(uuid),
    nadi.session_list(nadi.session_state, uuid, integer, text),
    nadi.session_terminate(uuid, text),
    nadi.command_enqueue(uuid, text, jsonb, text),
    nadi.command_get(uuid, bigint),
    nadi.command_list(uuid, nadi.command_status, bigint, integer),
    nadi.command_cancel(uuid, bigint),
    nadi.events_read(uuid, bigint, integer),
    nadi.session_replay(uuid, bigint)
TO nadi_edge, nadi_admin;

GRANT EXECUTE ON FUNCTION
    nadi.session_get(uuid),
    nadi.command_get(uuid, bigint),
    nadi.command_list(uuid, nadi.command_status, bigint, integer),
    nadi.command_claim(uuid, bigint),
    nadi.command_complete(uuid, bigint, bigint, jsonb, jsonb),
    nadi.command_fail(uuid, bigint, bigint, jsonb, boolean),
    nadi.command_await_permission(uuid, bigint, bigint, jsonb),
    nadi.lease_acquire(uuid, text),
    nadi.lease_renew(uuid, bigint),
    nadi.lease_release(uuid, bigint),
    nadi.cell_host_register(text, text, integer, jsonb),
    nadi.cell_host_heartbeat(text),
    nadi.cell_sessions(text),
    nadi.event_append(uuid, bigint, text, jsonb, bigint),
    nadi.events_read(uuid, bigint, integer),
    nadi.session_replay(uuid, bigint)
TO nadi_cell, nadi_admin;

GRANT EXECUTE ON FUNCTION
    nadi.sandbox_host_register(text, text, integer, jsonb),
    nadi.sandbox_host_heartbeat(text)
TO nadi_sandbox_host, nadi_admin;

GRANT EXECUTE ON FUNCTION
    nadi.session_transition(uuid, nadi.session_state, text),
    nadi.reap(),
    nadi.cell_host_set_state(text, nadi.host_state),
    nadi.sandbox_host_set_state(text, nadi.host_state),
    nadi.place(uuid),
    nadi.place_pending(integer),
    nadi.wakeup_stats()
TO nadi_admin;

REVOKE ALL ON FUNCTION
    nadi.key_create(text),
    nadi.key_rotate(interval),
    nadi.token_mint(text, text, text, interval, uuid, text),
    nadi.token_verify(text, text),
    nadi.authenticate(text, boolean),
    nadi.current_claims(),
    nadi.current_tenant(),
    nadi.jwks()
FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
    nadi.key_create(text),
    nadi.key_rotate(interval),
    nadi.token_mint(text, text, text, interval, uuid, text)
TO nadi_admin;

GRANT EXECUTE ON FUNCTION
    nadi.token_verify(text, text),
    nadi.jwks()
TO nadi_edge, nadi_sandbox_host, nadi_admin;

GRANT EXECUTE ON FUNCTION
    nadi.authenticate(text, boolean),
    nadi.current_claims(),
    nadi.current_tenant()
TO PUBLIC;

-- Administrators may see which keys exist (never the secrets).
GRANT SELECT ON nadi.signing_keys TO nadi_admin;
