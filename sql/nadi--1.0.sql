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

-- An exchange through the credentials proxy is finished once (proxy_finish).
CREATE UNIQUE INDEX audit_log_proxy_exchange_idx ON nadi.audit_log (((detail->>'exchange_id')::bigint))
    WHERE action = 'proxy.response';

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

-- token_mint without its administrator check, for the SECURITY DEFINER
-- functions below that mint narrow tokens; only the owner may execute it.
CREATE FUNCTION nadi._token_mint_internal(tenant_id text, subject text, scope text,
                                          ttl interval, session_id uuid, audience text)
RETURNS text
AS 'MODULE_PATHNAME', 'nadi_token_mint_internal' LANGUAGE C VOLATILE SECURITY DEFINER
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
-- Egress: the credentials proxy
---------------------------------------------------------------------------
--
-- Sandboxes and cells reach upstream APIs only through nadi-credproxy, which
-- holds the real credentials.  What they present is a short-lived token of
-- audience 'nadi-proxy': a sandbox token (scope 'sandbox', subject
-- 'sandbox:<id>') handed to the tools of one sandbox, or a model token (scope
-- 'session', subject 'model') a cell sends with its model calls.  The proxy
-- asks nadi.proxy_authorize() before every exchange and reports its end to
-- nadi.proxy_finish(); both write nadi.audit_log rows.

-- Which upstreams (names from the proxy's configuration) a tenant may reach;
-- tenant_id '*' is every tenant.
CREATE TABLE nadi.egress_rules (
    tenant_id   text NOT NULL CHECK (tenant_id <> '' AND length(tenant_id) <= 256),
    upstream    text NOT NULL CHECK (upstream ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
    methods     text[] NOT NULL DEFAULT '{GET,HEAD,POST,PUT,PATCH,DELETE}'
                CHECK (cardinality(methods) BETWEEN 1 AND 16
                       AND array_position(methods, NULL) IS NULL),
    path_prefix text NOT NULL DEFAULT '/'
                CHECK (path_prefix ~ '^/' AND length(path_prefix) <= 1024),
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, upstream)
);

SELECT pg_catalog.pg_extension_config_dump('nadi.egress_rules', '');
REVOKE ALL ON nadi.egress_rules FROM PUBLIC;
GRANT SELECT ON nadi.egress_rules TO nadi_admin;

-- Allow (or change the rule for) a tenant's requests to an upstream.
CREATE FUNCTION nadi.egress_allow(tenant_id text, upstream text,
                                  methods text[] DEFAULT NULL,
                                  path_prefix text DEFAULT '/')
RETURNS nadi.egress_rules
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r nadi.egress_rules;
    m text;
BEGIN
    IF tenant_id IS NULL OR tenant_id = '' OR length(tenant_id) > 256 THEN
        RAISE EXCEPTION 'invalid tenant_id'
            USING ERRCODE = '22023',
                  DETAIL = 'A tenant_id is 1 to 256 characters, or ''*'' for every tenant.';
    END IF;
    IF upstream IS NULL OR upstream !~ '^[a-z0-9][a-z0-9_.-]{0,62}$' THEN
        RAISE EXCEPTION 'invalid upstream name %', coalesce(quote_literal(upstream), 'NULL')
            USING ERRCODE = '22023',
                  DETAIL = 'Upstream names are lower-case letters, digits, ".", "_" and "-", at most 63 characters.',
                  HINT = 'Use the name of an upstream in nadi-credproxy''s configuration.';
    END IF;
    IF methods IS NOT NULL THEN
        IF cardinality(methods) NOT BETWEEN 1 AND 16 THEN
            RAISE EXCEPTION 'methods must list 1 to 16 HTTP methods' USING ERRCODE = '22023';
        END IF;
        FOREACH m IN ARRAY methods LOOP
            IF m IS NULL OR m !~ '^[A-Z]{1,16}$' OR m = 'CONNECT' THEN
                RAISE EXCEPTION 'invalid HTTP method %', coalesce(quote_literal(m), 'NULL')
                    USING ERRCODE = '22023',
                          DETAIL = 'Methods are upper-case tokens such as GET or POST; CONNECT is never forwarded.';
            END IF;
        END LOOP;
    END IF;
    IF path_prefix IS NULL OR path_prefix !~ '^/' OR length(path_prefix) > 1024 THEN
        RAISE EXCEPTION 'invalid path_prefix'
            USING ERRCODE = '22023', DETAIL = 'A path prefix starts with "/" and has at most 1024 characters.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM nadi.egress_rules e
                   WHERE e.tenant_id = egress_allow.tenant_id AND e.upstream = egress_allow.upstream)
       AND (SELECT count(*) FROM nadi.egress_rules e WHERE e.tenant_id = egress_allow.tenant_id) >= 1000 THEN
        RAISE EXCEPTION 'tenant % has too many egress rules', quote_literal(tenant_id)
            USING ERRCODE = 'NA012', DETAIL = 'A tenant has at most 1000 egress rules.',
                  HINT = 'Remove rules with nadi.egress_revoke().';
    END IF;
    INSERT INTO nadi.egress_rules AS e (tenant_id, upstream, methods, path_prefix, created_at)
    VALUES (tenant_id, upstream,
            coalesce(methods, '{GET,HEAD,POST,PUT,PATCH,DELETE}'), path_prefix, nadi.now())
    ON CONFLICT ON CONSTRAINT egress_rules_pkey
    DO UPDATE SET methods = EXCLUDED.methods, path_prefix = EXCLUDED.path_prefix
    RETURNING * INTO r;
    INSERT INTO nadi.audit_log (at, actor, tenant_id, action, detail)
    VALUES (nadi.now(), session_user, NULLIF(r.tenant_id, '*'), 'egress.allow',
            jsonb_build_object('tenant_id', r.tenant_id, 'upstream', r.upstream,
                               'methods', to_jsonb(r.methods), 'path_prefix', r.path_prefix));
    RETURN r;
END
$fn$;

-- Remove a rule; false when there was none.
CREATE FUNCTION nadi.egress_revoke(tenant_id text, upstream text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    DELETE FROM nadi.egress_rules e
    WHERE e.tenant_id = egress_revoke.tenant_id AND e.upstream = egress_revoke.upstream;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO nadi.audit_log (at, actor, tenant_id, action, detail)
    VALUES (nadi.now(), session_user, NULLIF(tenant_id, '*'), 'egress.revoke',
            jsonb_build_object('tenant_id', tenant_id, 'upstream', upstream));
    RETURN true;
END
$fn$;

-- The session of a proxy token, checked: it exists and is not over.
CREATE FUNCTION nadi._proxy_token_session(session_id uuid, ttl interval)
RETURNS nadi.sessions
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s nadi.sessions;
BEGIN
    IF ttl IS NULL OR ttl < interval '1 second' OR ttl > interval '1 hour' THEN
        RAISE EXCEPTION 'invalid ttl'
            USING ERRCODE = '22023',
                  DETAIL = 'Proxy tokens live from 1 second to 1 hour.',
                  HINT = 'Mint a new token before the old one expires.';
    END IF;
    SELECT * INTO s FROM nadi.sessions x WHERE x.session_id = _proxy_token_session.session_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'session % does not exist', session_id USING ERRCODE = 'NA002';
    END IF;
    IF s.state IN ('terminated', 'failed') THEN
        RAISE EXCEPTION 'session % is %', session_id, s.state
            USING ERRCODE = 'NA010', DETAIL = 'Proxy tokens are minted only for live sessions.';
    END IF;
    RETURN s;
END
$fn$;

-- A token the tools of one sandbox present to the proxy.
CREATE FUNCTION nadi.sandbox_token(session_id uuid, sandbox_id text,
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
    RETURN nadi._token_mint_internal(s.tenant_id, 'sandbox:' || sandbox_id, 'sandbox', ttl,
                           s.session_id, 'nadi-proxy');
END
$fn$;

-- A token a cell sends with the model calls of one session.
CREATE FUNCTION nadi.model_token(session_id uuid, ttl interval DEFAULT '15 minutes')
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s nadi.sessions;
BEGIN
    s := nadi._proxy_token_session(session_id, ttl);
    RETURN nadi._token_mint_internal(s.tenant_id, 'model', 'session', ttl, s.session_id, 'nadi-proxy');
END
$fn$;

-- The proxy's question before it forwards anything.  A refusal is an answer
-- (allowed false, with an HTTP status and a stable code), not an error, so
-- that its audit row commits.  sandbox_id is the sandbox whose socket the
-- request came in on, NULL on the proxy's main listener (cells).
CREATE FUNCTION nadi.proxy_authorize(token text, sandbox_id text, upstream text,
                                     method text, path text, proxy_id text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    claims  jsonb;
    tenant  text;
    sid     uuid;
    scope   text;
    kind    text;
    code    text;
    status  integer := 403;
    detail  text;
    state   nadi.session_state;
    id      bigint;
BEGIN
    IF proxy_id IS NULL OR proxy_id !~ '^[A-Za-z0-9._:-]{1,128}$' THEN
        RAISE EXCEPTION 'invalid proxy_id' USING ERRCODE = '22023',
            DETAIL = 'A proxy id is 1 to 128 letters, digits, ".", "_", ":" and "-".';
    END IF;
    IF upstream IS NULL OR length(upstream) > 63 OR method IS NULL OR method !~ '^[A-Z]{1,16}$'
       OR path IS NULL OR path !~ '^/' THEN
        RAISE EXCEPTION 'invalid upstream, method or path' USING ERRCODE = '22023',
            DETAIL = 'The upstream is a configured name, the method an upper-case token, the path starts with "/".';
    END IF;
    IF sandbox_id IS NOT NULL AND sandbox_id !~ '^[A-Za-z0-9_-]{1,64}$' THEN
        RAISE EXCEPTION 'invalid sandbox_id' USING ERRCODE = '22023';
    END IF;
    path := left(path, 2048);
    kind := CASE WHEN sandbox_id IS NULL THEN 'model' ELSE 'sandbox' END;

    BEGIN
        claims := nadi.token_verify(token, 'nadi-proxy');
    EXCEPTION
        WHEN SQLSTATE 'NA021' THEN
            code := 'token_expired'; status := 401; detail := 'The token has expired.';
        WHEN SQLSTATE 'NA020' OR SQLSTATE 'NA022' OR SQLSTATE '22023' OR SQLSTATE '22004'
             OR SQLSTATE '39004' THEN
            GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
            code := CASE WHEN detail LIKE '%audience%' THEN 'wrong_audience' ELSE 'token_invalid' END;
            status := 401;
            detail := coalesce(nullif(detail, ''), 'The token is not valid.');
    END;

    IF code IS NULL THEN
        tenant := claims->>'tenant';
        sid := (claims->>'sid')::uuid;
        scope := claims->>'scope';
        IF kind = 'sandbox' AND (scope <> 'sandbox' OR claims->>'sub' <> 'sandbox:' || sandbox_id) THEN
            code := 'sandbox_mismatch';
            detail := 'The token was not minted for the sandbox this request comes from.';
        ELSIF kind = 'model' AND (scope <> 'session' OR claims->>'sub' <> 'model') THEN
            code := 'scope_not_allowed';
            detail := 'Only model tokens (nadi.model_token) are accepted outside a sandbox.';
        ELSE
            SELECT s.state INTO state FROM nadi.sessions s WHERE s.session_id = sid;
            IF state IS NULL OR state IN ('terminated', 'failed') THEN
                code := 'session_terminated';
                detail := 'The token''s session is over.';
            ELSIF NOT EXISTS (SELECT 1 FROM nadi.egress_rules e
                              WHERE e.tenant_id IN (tenant, '*')
                                AND e.upstream = proxy_authorize.upstream
                                AND proxy_authorize.method = ANY (e.methods)
                                AND starts_with(proxy_authorize.path, e.path_prefix)) THEN
                code := 'not_allowed';
                detail := format('Tenant %s may not send %s %s to upstream %s.',
                                 quote_literal(tenant), method, path, quote_literal(upstream));
            END IF;
        END IF;
    END IF;

    INSERT INTO nadi.audit_log (at, actor, tenant_id, session_id, action, detail)
    VALUES (nadi.now(), 'proxy:' || proxy_id, tenant, sid, 'proxy.request',
            jsonb_strip_nulls(jsonb_build_object(
                'upstream', upstream, 'method', method, 'path', path,
                'sandbox_id', sandbox_id, 'kind', kind, 'jti', claims->>'jti',
                'allowed', code IS NULL, 'code', code)))
    RETURNING audit_id INTO id;

    IF code IS NOT NULL THEN
        RETURN jsonb_build_object('allowed', false, 'exchange_id', id, 'status', status,
                                  'code', code, 'detail', detail);
    END IF;
    RETURN jsonb_build_object('allowed', true, 'exchange_id', id, 'tenant_id', tenant,
                              'session_id', sid, 'sandbox_id', sandbox_id, 'scope', kind);
END
$fn$;

-- The end of an allowed exchange: what the upstream answered and how much
-- went each way.  error is NULL when the answer was passed on whole.
CREATE FUNCTION nadi.proxy_finish(exchange_id bigint, status integer, bytes_up bigint,
                                  bytes_down bigint, duration_ms double precision,
                                  error text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    req nadi.audit_log;
BEGIN
    SELECT * INTO req FROM nadi.audit_log a
    WHERE a.audit_id = proxy_finish.exchange_id AND a.action = 'proxy.request';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'exchange % does not exist', exchange_id USING ERRCODE = '22023',
            HINT = 'Pass the exchange_id nadi.proxy_authorize() returned.';
    END IF;
    IF NOT (req.detail->>'allowed')::boolean THEN
        RAISE EXCEPTION 'exchange % was refused', exchange_id USING ERRCODE = '22023';
    END IF;
    IF status IS NOT NULL AND status NOT BETWEEN 100 AND 599 THEN
        RAISE EXCEPTION 'invalid HTTP status %', status USING ERRCODE = '22023';
    END IF;
    BEGIN
        INSERT INTO nadi.audit_log (at, actor, tenant_id, session_id, action, detail)
        VALUES (nadi.now(), req.actor, req.tenant_id, req.session_id, 'proxy.response',
                jsonb_strip_nulls(jsonb_build_object(
                    'exchange_id', req.audit_id, 'upstream', req.detail->'upstream',
                    'status', status, 'bytes_up', greatest(bytes_up, 0),
                    'bytes_down', greatest(bytes_down, 0),
                    'duration_ms', round(greatest(duration_ms, 0)::numeric, 3),
                    'error', left(error, 1024))));
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'exchange % is already finished', exchange_id USING ERRCODE = '22023';
    END;
END
$fn$;

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

GRANT EXECUTE ON FUNCTION
    nadi.egress_allow(text, text, text[], text),
    nadi.egress_revoke(text, text)
TO nadi_admin;

-- Cells mint the tokens; a sandbox host or the proxy cannot make one up.
GRANT EXECUTE ON FUNCTION nadi.sandbox_token(uuid, text, interval)
TO nadi_cell, nadi_admin;

GRANT EXECUTE ON FUNCTION nadi.model_token(uuid, interval)
TO nadi_cell, nadi_admin;

GRANT EXECUTE ON FUNCTION
    nadi.proxy_authorize(text, text, text, text, text, text),
    nadi.proxy_finish(bigint, integer, bigint, bigint, double precision, text)
TO nadi_sandbox_host, nadi_admin;
