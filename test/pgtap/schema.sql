-- Schema: tables, keys, types, the SQL API's signatures, who may EXECUTE
-- what by default, and row-level security being switched on.
BEGIN;
SELECT plan(181);

---------------------------------------------------------------------------
-- Schema and tables
---------------------------------------------------------------------------
SELECT has_schema('nadi');
SELECT has_extension('nadi');

SELECT has_table('nadi', t, format('table nadi.%s exists', t))
FROM unnest(ARRAY['sessions', 'events', 'command_inbox', 'cell_hosts', 'session_leases',
                  'sandbox_hosts', 'audit_log', 'signing_keys', 'signing_key_secrets', 'egress_rules',
                  'host_bindings', 'legal_holds', 'purged_sessions', 'session_forks']) AS t;

SELECT has_sequence('nadi', 'command_id_seq', 'sequence nadi.command_id_seq exists');

-- Every table the extension owns is one this file knows about.
SELECT set_eq(
    $$SELECT c.relname::text FROM pg_class c
      WHERE c.relnamespace = 'nadi'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f')$$,
    ARRAY['sessions', 'events', 'command_inbox', 'cell_hosts', 'session_leases',
          'sandbox_hosts', 'audit_log', 'signing_keys', 'signing_key_secrets', 'egress_rules',
          'host_bindings',
          -- operator statistics (1.1): the call counts and the nadi.stat_* views
          'call_counts', 'call_count_deltas', 'stat_sessions', 'stat_queue', 'stat_dead_letters',
          'stat_hosts', 'stat_crashes', 'stat_calls', 'stat_takeovers', 'stat_tokens', 'legal_holds', 'purged_sessions',
          -- session forks (1.1)
          'session_forks'],
    'nadi has exactly the expected tables');

---------------------------------------------------------------------------
-- Keys: every per-session table is keyed by session_id first
---------------------------------------------------------------------------
SELECT col_is_pk('nadi', 'sessions', 'session_id', 'sessions is keyed by session_id');
SELECT col_is_pk('nadi', 'session_leases', 'session_id', 'session_leases is keyed by session_id');
SELECT col_is_pk('nadi', 'command_inbox', ARRAY['session_id', 'command_id'],
                 'command_inbox is keyed by (session_id, command_id)');
SELECT col_is_pk('nadi', 'events', ARRAY['session_id', 'seq'],
                 'events is keyed by (session_id, seq)');
SELECT col_is_pk('nadi', 'cell_hosts', 'host_id', 'cell_hosts is keyed by host_id');
SELECT col_is_pk('nadi', 'sandbox_hosts', 'host_id', 'sandbox_hosts is keyed by host_id');
SELECT col_is_pk('nadi', 'audit_log', 'audit_id', 'audit_log is keyed by audit_id');
SELECT col_is_pk('nadi', 'signing_keys', 'kid', 'signing_keys is keyed by kid');
SELECT col_is_pk('nadi', 'signing_key_secrets', 'kid', 'signing_key_secrets is keyed by kid');
SELECT col_is_pk('nadi', 'host_bindings', ARRAY['kind', 'host_id'], 'host_bindings is keyed by (kind, host_id)');
SELECT col_is_pk('nadi', 'purged_sessions', 'session_id', 'purged_sessions is keyed by session_id');
SELECT col_is_pk('nadi', 'session_forks', 'session_id', 'session_forks is keyed by session_id');
SELECT col_is_pk('nadi', 'legal_holds', 'hold_id', 'legal_holds is keyed by hold_id');

-- The per-session tables are the ones with a NOT NULL session_id.
SELECT set_eq(
    $$SELECT c.relname::text FROM pg_class c
      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'session_id'
                         AND a.attnotnull AND NOT a.attisdropped
      WHERE c.relnamespace = 'nadi'::regnamespace AND c.relkind = 'r'$$,
    ARRAY['sessions', 'session_leases', 'command_inbox', 'events', 'purged_sessions', 'session_forks'],
    'the per-session tables are sessions, session_leases, command_inbox, events, purged_sessions and session_forks (1.1)');

SELECT is_empty(
    $$SELECT c.relname FROM pg_class c
      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'session_id'
                         AND a.attnotnull AND NOT a.attisdropped
      WHERE c.relnamespace = 'nadi'::regnamespace AND c.relkind = 'r'
        AND NOT EXISTS (SELECT 1 FROM pg_index i
                        WHERE i.indrelid = c.oid AND i.indisprimary
                          AND i.indkey[0] = a.attnum)$$,
    'every per-session table has a primary key whose first column is session_id');

-- Unique constraints too (a distributed table can only enforce those that
-- include the distribution column first).
SELECT is_empty(
    $$SELECT i.indexrelid::regclass FROM pg_class c
      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'session_id'
                         AND a.attnotnull AND NOT a.attisdropped
      JOIN pg_index i ON i.indrelid = c.oid AND i.indisunique
      WHERE c.relnamespace = 'nadi'::regnamespace AND c.relkind = 'r'
        AND i.indkey[0] <> a.attnum$$,
    'every unique index of a per-session table starts with session_id');

SELECT fk_ok('nadi', 'session_leases', 'session_id', 'nadi', 'sessions', 'session_id');
SELECT fk_ok('nadi', 'command_inbox', 'session_id', 'nadi', 'sessions', 'session_id');
SELECT fk_ok('nadi', 'events', 'session_id', 'nadi', 'sessions', 'session_id');

-- Rows of other tenants are told apart by a tenant_id on every row.
SELECT col_not_null('nadi', t, 'tenant_id', format('nadi.%s.tenant_id is NOT NULL', t))
FROM unnest(ARRAY['sessions', 'command_inbox', 'events']) AS t;

---------------------------------------------------------------------------
-- Types
---------------------------------------------------------------------------
SELECT has_enum('nadi', 'session_state', 'enum nadi.session_state exists');
SELECT enum_has_labels('nadi', 'session_state',
    ARRAY['pending', 'placed', 'active', 'suspended', 'terminating', 'terminated', 'failed'],
    'session_state has its seven states, in order');
SELECT has_enum('nadi', 'command_status', 'enum nadi.command_status exists');
SELECT enum_has_labels('nadi', 'command_status',
    ARRAY['queued', 'running', 'waiting', 'completed', 'dead', 'cancelled'],
    'command_status has its six statuses, in order');
SELECT has_enum('nadi', 'host_state', 'enum nadi.host_state exists');
SELECT enum_has_labels('nadi', 'host_state', ARRAY['live', 'draining', 'dead'],
    'host_state is live, draining or dead');

SELECT col_type_is('nadi', 'sessions', 'state', 'nadi.session_state', 'sessions.state is a session_state');
SELECT col_type_is('nadi', 'command_inbox', 'status', 'nadi.command_status', 'command_inbox.status is a command_status');
SELECT col_type_is('nadi', 'cell_hosts', 'state', 'nadi.host_state', 'cell_hosts.state is a host_state');

---------------------------------------------------------------------------
-- The SQL API, with argument types
---------------------------------------------------------------------------
CREATE TEMP TABLE api (fname name, args text[]) ON COMMIT DROP;
INSERT INTO api VALUES
    ('tenant_visible',           ARRAY['text', 'uuid']),
    ('now',                      ARRAY[]::text[]),
    ('session_transitions',      ARRAY[]::text[]),
    ('session_create',           ARRAY['text', 'jsonb', 'jsonb', 'jsonb']),
    ('session_get',              ARRAY['uuid']),
    ('session_list',             ARRAY['nadi.session_state', 'uuid', 'integer', 'text']),
    ('session_terminate',        ARRAY['uuid', 'text']),
    ('session_transition',       ARRAY['uuid', 'nadi.session_state', 'text']),
    ('command_enqueue',          ARRAY['uuid', 'text', 'jsonb', 'text']),
    ('command_enqueue_many',     ARRAY['jsonb']),
    ('command_get',              ARRAY['uuid', 'bigint']),
    ('command_list',             ARRAY['uuid', 'nadi.command_status', 'bigint', 'integer']),
    ('command_cancel',           ARRAY['uuid', 'bigint']),
    ('command_claim',            ARRAY['uuid', 'bigint']),
    ('command_complete',         ARRAY['uuid', 'bigint', 'bigint', 'jsonb', 'jsonb']),
    ('command_fail',             ARRAY['uuid', 'bigint', 'bigint', 'jsonb', 'boolean']),
    ('command_await_permission', ARRAY['uuid', 'bigint', 'bigint', 'jsonb']),
    ('lease_acquire',            ARRAY['uuid', 'text']),
    ('lease_renew',              ARRAY['uuid', 'bigint']),
    ('lease_release',            ARRAY['uuid', 'bigint']),
    ('reap',                     ARRAY[]::text[]),
    ('cell_host_register',       ARRAY['text', 'text', 'integer', 'jsonb']),
    ('cell_host_heartbeat',      ARRAY['text']),
    ('cell_host_set_state',      ARRAY['text', 'nadi.host_state']),
    ('sandbox_host_register',    ARRAY['text', 'text', 'integer', 'jsonb']),
    ('sandbox_host_heartbeat',   ARRAY['text']),
    ('sandbox_host_set_state',   ARRAY['text', 'nadi.host_state']),
    ('place',                    ARRAY['uuid']),
    ('place_pending',            ARRAY['integer']),
    ('cell_sessions',            ARRAY['text']),
    ('event_append',             ARRAY['uuid', 'bigint', 'text', 'jsonb', 'bigint']),
    ('events_read',              ARRAY['uuid', 'bigint', 'integer']),
    ('session_replay',           ARRAY['uuid', 'bigint']),
    ('wakeup_stats',             ARRAY[]::text[]),
    -- tokens
    ('key_create',               ARRAY['text']),
    ('key_rotate',               ARRAY['interval']),
    ('token_mint',               ARRAY['text', 'text', 'text', 'interval', 'uuid', 'text']),
    ('token_verify',             ARRAY['text', 'text']),
    ('authenticate',             ARRAY['text', 'boolean']),
    ('jwks',                     ARRAY[]::text[]),
    ('current_tenant',           ARRAY[]::text[]),
    ('current_claims',           ARRAY[]::text[]),
    -- egress through the credentials proxy
    ('egress_allow',             ARRAY['text', 'text', 'text[]', 'text']),
    ('egress_revoke',            ARRAY['text', 'text']),
    ('sandbox_token',            ARRAY['uuid', 'text', 'interval']),
    ('model_token',              ARRAY['uuid', 'interval']),
    ('sandboxd_token',           ARRAY['uuid', 'interval']),
    ('proxy_authorize',          ARRAY['text', 'text', 'text', 'text', 'text', 'text']),
    ('proxy_finish',             ARRAY['bigint', 'integer', 'bigint', 'bigint', 'double precision', 'text']),
    -- internal (owner only)
    ('_token_mint_internal',     ARRAY['text', 'text', 'text', 'interval', 'uuid', 'text']),
    ('_proxy_token_session',     ARRAY['uuid', 'interval']),
    ('_session_token_subject',   ARRAY['uuid']),
    ('_host_ref_check',          ARRAY['text', 'text']),
    ('_actor',                   ARRAY[]::text[]),
    ('_require_admin',           ARRAY[]::text[]),
    -- host bindings and labels (1.1)
    ('host_bind',                ARRAY['text', 'text', 'name']),
    ('host_unbind',              ARRAY['text', 'text']),
    ('host_set_labels',          ARRAY['text', 'text', 'jsonb']),
    -- the set-based calls of a cell host (1.1)
    ('command_claim_many',       ARRAY['text', 'uuid[]', 'bigint[]', 'integer']),
    ('lease_renew_many',         ARRAY['text', 'uuid[]', 'bigint[]']),
    ('command_complete_many',    ARRAY['text', 'uuid[]', 'bigint[]', 'bigint[]', 'jsonb[]', 'jsonb[]']),
    -- operator statistics (1.1)
    ('_stat_tenant',             ARRAY[]::text[]),
    ('_call_counts_fold',        ARRAY[]::text[]),
    -- data lifecycle (1.1)
    ('purge',                    ARRAY['interval', 'integer', 'integer', 'interval', 'interval', 'bigint', 'bigint', 'bigint', 'bigint', 'integer']),
    ('purge_batch',              ARRAY['interval', 'integer']),
    ('purge_audit',              ARRAY['interval', 'integer', 'integer', 'interval', 'interval', 'bigint', 'bigint', 'integer']),
    ('purge_audit_batch',        ARRAY['interval', 'integer']),
    ('hold_set',                 ARRAY['text', 'uuid', 'text']),
    ('hold_release',             ARRAY['text', 'uuid', 'text']),
    ('_retention_check',         ARRAY['interval', 'integer']),
    ('_held',                    ARRAY['text', 'uuid']),
    ('_retention_loop_check',    ARRAY['integer', 'interval', 'interval']),
    -- sandbox reaping (1.1)
    ('sessions_ended',           ARRAY['uuid[]', 'interval']),
    -- purges and holds at READ COMMITTED only (1.1)
    ('_read_committed_only',     ARRAY[]::text[]),
    -- files in and out through the edge (1.1)
    ('session_files_begin',      ARRAY['uuid', 'text', 'text', 'interval']),
    ('session_files_end',        ARRAY['bigint', 'bigint', 'integer', 'text']),
    -- session forks (1.1)
    ('session_fork',             ARRAY['uuid', 'bigint']),
    ('_token_mint_claims',       ARRAY['text', 'text', 'text', 'interval', 'uuid', 'text', 'jsonb']),
    ('_fork_claims',             ARRAY['uuid']);

SELECT has_function('nadi', fname, args,
                    format('function nadi.%s(%s) exists', fname, array_to_string(args, ', ')))
FROM (SELECT * FROM api ORDER BY fname OFFSET 0) a;

-- Every function in the schema is one of the above (a new one must be
-- added here, and to privileges.sql, with the roles that may call it).
SELECT is_empty(
    $$SELECT p.oid::regprocedure FROM pg_proc p
      WHERE p.pronamespace = 'nadi'::regnamespace
        AND NOT EXISTS (SELECT 1 FROM api a WHERE a.fname = p.proname
                        AND array_to_string(a.args, ',') = array_to_string(p.proargtypes::regtype[], ','))$$,
    'every function in schema nadi is part of the known API');

-- Writers run as the extension owner, so they can write the read-only
-- tables; which role may call them is decided by EXECUTE alone.
SELECT is_empty(
    $$SELECT p.oid::regprocedure FROM pg_proc p
      WHERE p.pronamespace = 'nadi'::regnamespace AND p.provolatile = 'v' AND NOT p.prosecdef
        AND p.proname NOT IN ('wakeup_stats', 'purge', 'purge_audit')$$,
    'every volatile API function but wakeup_stats and the purge procedures is SECURITY DEFINER');
-- The purge procedures commit between batches, which a SECURITY DEFINER
-- procedure may not: they run as their caller and only call the batches
-- (SECURITY DEFINER, checking for an administrator) and the argument checks.
SELECT is_empty(
    $$SELECT p.oid::regprocedure FROM pg_proc p
      WHERE p.pronamespace = 'nadi'::regnamespace AND p.prokind = 'p'
        AND (p.prosecdef OR p.prosrc ~* '(from|join|into|update)\s+(?!nadi\.)[a-z_]+\s'
             OR p.prosrc !~ 'nadi\.purge(_audit)?_batch\(')$$,
    'the purge procedures run as their caller, touch no table and call only the batches');

-- A SECURITY DEFINER function that runs queries must not resolve names
-- through the caller's search_path (a caller's pg_temp.text domain, or an
-- operator in a schema it owns, would run as the extension owner).
SELECT is_empty(
    $$SELECT p.oid::regprocedure FROM pg_proc p
      WHERE p.pronamespace = 'nadi'::regnamespace AND p.prosecdef
        AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) c WHERE c = 'search_path=pg_catalog, pg_temp')$$,
    'every SECURITY DEFINER function in nadi runs with search_path = pg_catalog, pg_temp');
-- They are in C, or in PL/pgSQL (the proxy's and the host bindings') whose bodies name
-- nadi's objects with the schema: with pg_catalog first and pg_temp never
-- searched for functions or operators, no name in them can be redirected.
SELECT is_empty(
    $$SELECT p.oid::regprocedure FROM pg_proc p
      WHERE p.pronamespace = 'nadi'::regnamespace AND p.prosecdef
        AND p.prolang NOT IN (SELECT oid FROM pg_language WHERE lanname IN ('c', 'plpgsql'))$$,
    'every SECURITY DEFINER function in nadi is written in C or PL/pgSQL');
SELECT is_empty(
    $$SELECT p.oid::regprocedure FROM pg_proc p
      WHERE p.pronamespace = 'nadi'::regnamespace AND p.prosecdef
        AND p.prolang = (SELECT oid FROM pg_language WHERE lanname = 'plpgsql')
        AND p.prosrc ~* '(from|join)\s+(?!nadi\.)[a-z_]+\s'$$,
    'the PL/pgSQL ones name every table with its schema');

---------------------------------------------------------------------------
-- EXECUTE: revoked from PUBLIC but for the few meant for everyone
---------------------------------------------------------------------------
SELECT set_eq(
    $$SELECT p.proname::text FROM pg_proc p
      WHERE p.pronamespace = 'nadi'::regnamespace
        AND (p.proacl IS NULL
             OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) x
                        WHERE x.grantee = 0 AND x.privilege_type = 'EXECUTE'))$$,
    ARRAY['tenant_visible', 'now', 'session_transitions',
          'authenticate', 'current_tenant', 'current_claims'],
    'only tenant_visible, now, session_transitions, authenticate, current_tenant and current_claims are executable by PUBLIC');

SELECT ok(NOT has_function_privilege('public', 'nadi.session_create(text, jsonb, jsonb, jsonb)', 'EXECUTE'),
          'PUBLIC cannot execute session_create');
SELECT ok(NOT has_function_privilege('public', 'nadi.token_mint(text, text, text, interval, uuid, text)', 'EXECUTE'),
          'PUBLIC cannot execute token_mint');
SELECT ok(NOT has_function_privilege('public', 'nadi.key_create(text)', 'EXECUTE'),
          'PUBLIC cannot execute key_create');
SELECT ok(NOT has_function_privilege('public', 'nadi.reap()', 'EXECUTE'),
          'PUBLIC cannot execute reap');

-- The schema itself: usable by everyone (authenticate is public; each
-- function and table has its own grants), writable by none.
SELECT ok(has_schema_privilege('public', 'nadi', 'USAGE'), 'PUBLIC has USAGE on schema nadi');
SELECT ok(NOT has_schema_privilege('public', 'nadi', 'CREATE'), 'PUBLIC has no CREATE on schema nadi');
SELECT schema_privs_are('nadi', r, ARRAY['USAGE'], format('%s has USAGE (only) on schema nadi', r))
FROM unnest(ARRAY['nadi_admin', 'nadi_edge', 'nadi_cell', 'nadi_sandbox_host']) AS r;

-- Tables: nobody but the owner holds a table privilege other than SELECT.
SELECT is_empty(
    $$SELECT c.relname, x.grantee::regrole, x.privilege_type
      FROM pg_class c, aclexplode(c.relacl) x
      WHERE c.relnamespace = 'nadi'::regnamespace AND c.relkind IN ('r', 'S')
        AND x.grantee <> c.relowner AND x.privilege_type <> 'SELECT'$$,
    'no role but the owner may write any nadi table or use its sequence');
SELECT is_empty(
    $$SELECT c.relname FROM pg_class c
      WHERE c.relnamespace = 'nadi'::regnamespace AND c.relkind IN ('r', 'S')
        AND EXISTS (SELECT 1 FROM aclexplode(c.relacl) x WHERE x.grantee = 0)$$,
    'PUBLIC holds no privilege on any nadi table or sequence');
SELECT is_empty(
    $$SELECT c.relname, x.grantee::regrole FROM pg_class c, aclexplode(c.relacl) x
      WHERE c.oid = 'nadi.signing_key_secrets'::regclass AND x.grantee <> c.relowner$$,
    'nobody but the owner may read signing_key_secrets (private key material)');
SELECT is_empty(
    $$SELECT c.relname, x.grantee::regrole FROM pg_class c, aclexplode(c.relacl) x
      WHERE c.oid = 'nadi.signing_keys'::regclass AND x.grantee <> c.relowner
        AND x.grantee <> 'nadi_admin'::regrole$$,
    'nobody but the owner and nadi_admin may read signing_keys');

---------------------------------------------------------------------------
-- Row-level security
---------------------------------------------------------------------------
SELECT ok((SELECT relrowsecurity FROM pg_class WHERE oid = format('nadi.%s', t)::regclass),
          format('row-level security is enabled on nadi.%s', t))
FROM unnest(ARRAY['sessions', 'events', 'command_inbox', 'session_leases', 'audit_log', 'purged_sessions', 'session_forks']) AS t;

SELECT policies_are('nadi', t, ARRAY['tenant_isolation'], format('nadi.%s has the tenant_isolation policy', t))
FROM unnest(ARRAY['sessions', 'events', 'command_inbox', 'session_leases', 'audit_log', 'purged_sessions', 'session_forks']) AS t;

-- The policies apply to every command and every role.
SELECT policy_cmd_is('nadi', t, 'tenant_isolation', 'ALL', format('nadi.%s policy covers every command', t))
FROM unnest(ARRAY['sessions', 'events', 'command_inbox']) AS t;
SELECT is((SELECT polroles FROM pg_policy
           WHERE polrelid = format('nadi.%s', t)::regclass AND polname = 'tenant_isolation'),
          '{0}'::oid[], format('nadi.%s policy applies to every role (PUBLIC)', t))
FROM unnest(ARRAY['sessions', 'events', 'command_inbox']) AS t;
SELECT ok((SELECT polpermissive FROM pg_policy
           WHERE polrelid = format('nadi.%s', t)::regclass AND polname = 'tenant_isolation'),
          format('nadi.%s has one permissive policy, so a row is visible only when it passes', t))
FROM unnest(ARRAY['sessions', 'events', 'command_inbox']) AS t;

-- The policy on each tenant table is the shared rule, on that row's tenant and session.
SELECT is(
    (SELECT pg_get_expr(p.polqual, p.polrelid) FROM pg_policy p
     WHERE p.polrelid = format('nadi.%s', t)::regclass AND p.polname = 'tenant_isolation'),
    'nadi.tenant_visible(tenant_id, session_id)',
    format('nadi.%s policy is tenant_visible(tenant_id, session_id)', t))
FROM unnest(ARRAY['sessions', 'events', 'command_inbox']) AS t;

-- None of the roles that face tenants bypasses row-level security.
SELECT is_empty(
    $$SELECT rolname FROM pg_roles
      WHERE rolname IN ('nadi_admin', 'nadi_edge', 'nadi_cell', 'nadi_sandbox_host')
        AND (rolbypassrls OR rolsuper OR rolcanlogin)$$,
    'the nadi roles are NOLOGIN, not superusers, and do not bypass row-level security');

SELECT volatility_is('nadi', 'tenant_visible', ARRAY['text', 'uuid'], 'stable',
                     'tenant_visible is STABLE (it reads the per-transaction token context)');
SELECT ok((SELECT proleakproof FROM pg_proc WHERE oid = 'nadi.tenant_visible(text, uuid)'::regprocedure),
          'tenant_visible is LEAKPROOF, so policies do not block index use');
-- The token context lives in the backend: what reads it must not run in a
-- parallel worker.
SELECT is((SELECT proparallel FROM pg_proc WHERE oid = format('nadi.%s', f)::regprocedure), 'r',
          format('nadi.%s is PARALLEL RESTRICTED', f))
FROM unnest(ARRAY['tenant_visible(text, uuid)', 'current_tenant()', 'current_claims()']) AS f;

SELECT * FROM finish();
ROLLBACK;
