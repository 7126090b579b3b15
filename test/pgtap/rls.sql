-- Tenant isolation: the rows a member of nadi_edge sees, through raw SELECT
-- (row-level security) and through the SQL API, with no token, a tenant
-- token, a session token, an admin token and another tenant's token; and
-- that a transaction-only token context ends with its transaction.

-- Two short transactions first, which leave nothing behind: a token put in
-- force for one transaction must be gone once it rolls back, or commits.
BEGIN;
SELECT count(*) AS pre_keys FROM nadi.key_create() \gset
SELECT count(*) AS pre_auth FROM nadi.authenticate(nadi.token_mint('acme', 'pre-rollback', 'tenant', '1 hour')) \gset
SELECT coalesce(nadi.current_tenant(), '<none>') AS before_rollback \gset
ROLLBACK;
SELECT coalesce(nadi.current_tenant(), '<none>') AS after_rollback \gset

-- (the key and the token are made in a savepoint that is rolled back, so
-- the COMMIT below writes nothing)
BEGIN;
SAVEPOINT make_token;
SELECT count(*) AS pre_keys FROM nadi.key_create() \gset
SELECT count(*) AS pre_auth FROM nadi.authenticate(nadi.token_mint('acme', 'pre-commit', 'tenant', '1 hour')) \gset
ROLLBACK TO SAVEPOINT make_token;
SELECT coalesce(nadi.current_tenant(), '<none>') AS before_commit \gset
COMMIT;

BEGIN;
SELECT plan(105);

SELECT is(:'before_rollback'::text, 'acme', 'a transaction-only token is in force in its transaction');
SELECT is(:'after_rollback'::text, '<none>', 'a transaction-only token ends at ROLLBACK');
-- (ROLLBACK TO SAVEPOINT does not end a token: it was still in force when
-- the COMMIT ran, so it is the COMMIT that ended it)
SELECT diag('tenant in force just before that COMMIT: ' || :'before_commit');
SELECT is(nadi.current_tenant(), NULL, 'a transaction-only token ends at COMMIT (no tenant in force now)');
SELECT is(nadi.current_claims(), NULL, 'no claims are in force at the start');

---------------------------------------------------------------------------
-- Fixture, as superuser with no token: two tenants' sessions, commands and
-- events, and the tokens the tests use
---------------------------------------------------------------------------
CREATE ROLE rls_edge NOLOGIN IN ROLE nadi_edge;
CREATE ROLE rls_cell NOLOGIN IN ROLE nadi_cell;
CREATE ROLE rls_admin NOLOGIN IN ROLE nadi_admin;

SELECT count(*) AS keys FROM nadi.key_create() \gset

SELECT session_id AS a1 FROM nadi.session_create('acme', '{"title": "acme one"}') \gset
SELECT session_id AS a2 FROM nadi.session_create('acme', '{"title": "acme two"}') \gset
SELECT session_id AS g1 FROM nadi.session_create('globex', '{"title": "globex secret"}') \gset
SELECT command_id AS ca1 FROM nadi.command_enqueue(:'a1', 'message', '{"text": "hello from acme"}') \gset
SELECT command_id AS ca1b FROM nadi.command_enqueue(:'a1', 'tool', '{"name": "echo"}') \gset
SELECT command_id AS ca2 FROM nadi.command_enqueue(:'a2', 'message', '{"text": "acme again"}') \gset
SELECT command_id AS cg1 FROM nadi.command_enqueue(:'g1', 'message', '{"text": "globex only"}') \gset

SELECT nadi.token_mint('acme', 'alice', 'tenant', '1 hour') AS tok_acme \gset
SELECT nadi.token_mint('globex', 'gina', 'tenant', '1 hour') AS tok_globex \gset
SELECT nadi.token_mint('acme', 'alice', 'session', '1 hour', :'a1') AS tok_a1 \gset
SELECT nadi.token_mint('acme', 'root', 'admin', '1 hour') AS tok_admin \gset
SELECT nadi.token_mint('globex', 'gina', 'tenant', '1 second') AS tok_short \gset
SELECT nadi.token_mint('acme', 'box-1', 'sandbox', '1 hour', :'a2') AS tok_sbx_a2 \gset

SELECT count(*) AS acme_events FROM nadi.events WHERE tenant_id = 'acme' \gset

-- What globex has, to check nothing of it changes.
CREATE TEMP TABLE globex_before AS
SELECT (SELECT row(state, last_seq, updated_at)::text FROM nadi.sessions WHERE session_id = :'g1') AS session,
       (SELECT count(*) FROM nadi.events WHERE session_id = :'g1') AS events,
       (SELECT string_agg(row(command_id, status, attempts)::text, ',' ORDER BY command_id)
          FROM nadi.command_inbox WHERE session_id = :'g1') AS commands;

-- The superuser (no token) sees both tenants.
SELECT set_eq($$SELECT DISTINCT tenant_id FROM nadi.sessions WHERE session_id IN (SELECT session_id FROM nadi.events)$$,
              ARRAY['acme', 'globex'], 'fixture: both tenants have sessions and events');

---------------------------------------------------------------------------
-- No token: a member of nadi_edge sees nothing and can do nothing
---------------------------------------------------------------------------
SET ROLE rls_edge;

SELECT is_empty('SELECT * FROM nadi.sessions', 'no token: no row of nadi.sessions');
SELECT is_empty('SELECT * FROM nadi.events', 'no token: no row of nadi.events');
SELECT is_empty('SELECT * FROM nadi.command_inbox', 'no token: no row of nadi.command_inbox');
SELECT is_empty(format('SELECT * FROM nadi.sessions WHERE session_id = %L', :'a1'),
                'no token: not even a session asked for by id');
SELECT throws_ok($$SELECT nadi.session_create('acme')$$, 'NA030', NULL,
                 'no token: session_create raises NA030 (not authenticated)');
SELECT throws_ok($$SELECT nadi.session_create()$$, 'NA030', NULL,
                 'no token: session_create without a tenant raises NA030');
SELECT throws_ok($$SELECT * FROM nadi.session_list()$$, 'NA030', NULL,
                 'no token: session_list raises NA030');
SELECT throws_ok(format($$SELECT nadi.session_get(%L)$$, :'a1'), 'NA002', NULL,
                 'no token: session_get raises NA002');
SELECT throws_ok(format($$SELECT * FROM nadi.events_read(%L)$$, :'a1'), 'NA002', NULL,
                 'no token: events_read raises NA002');
SELECT throws_ok(format($$SELECT nadi.command_enqueue(%L, 'message', '{"text": "x"}')$$, :'a1'), 'NA002', NULL,
                 'no token: command_enqueue raises NA002');
SELECT is(nadi.tenant_visible('acme'), false, 'no token: tenant_visible(acme) is false');

---------------------------------------------------------------------------
-- acme's tenant token: acme's rows only
---------------------------------------------------------------------------
SELECT lives_ok(format('SELECT nadi.authenticate(%L)', :'tok_acme'), 'acme''s token authenticates');
SELECT is(nadi.current_tenant(), 'acme', 'current_tenant() is acme');
SELECT is(nadi.current_claims()->>'sub', 'alice', 'current_claims() carries the subject');

SELECT set_eq('SELECT session_id FROM nadi.sessions', ARRAY[:'a1', :'a2']::uuid[],
              'acme token: nadi.sessions shows acme''s two sessions');
SELECT set_eq('SELECT DISTINCT session_id FROM nadi.events', ARRAY[:'a1', :'a2']::uuid[],
              'acme token: nadi.events shows events of acme''s sessions only');
SELECT is((SELECT count(*) FROM nadi.events), :acme_events::bigint,
          'acme token: every acme event is visible');
SELECT set_eq('SELECT command_id FROM nadi.command_inbox', ARRAY[:ca1, :ca1b, :ca2]::bigint[],
              'acme token: nadi.command_inbox shows acme''s three commands');
SELECT is_empty($$SELECT * FROM nadi.sessions WHERE tenant_id <> 'acme'$$,
                'acme token: asking for other tenants'' sessions finds none');
SELECT is_empty(format('SELECT * FROM nadi.sessions WHERE session_id = %L', :'g1'),
                'acme token: globex''s session is invisible even by id');
SELECT is_empty(format('SELECT * FROM nadi.events WHERE session_id = %L', :'g1'),
                'acme token: globex''s events are invisible even by id');
SELECT is_empty(format('SELECT * FROM nadi.command_inbox WHERE session_id = %L', :'g1'),
                'acme token: globex''s commands are invisible even by id');
SELECT is((SELECT count(*) FROM nadi.sessions s JOIN nadi.events e USING (session_id)
           WHERE e.tenant_id <> s.tenant_id), 0::bigint,
          'acme token: no visible event belongs to another tenant''s session');

-- A cheap, leaky function of the caller's in the WHERE clause only ever
-- sees rows the policy lets through (the policy is applied first).
CREATE TEMP TABLE seen (v text);
CREATE FUNCTION pg_temp.peek(v text) RETURNS boolean LANGUAGE plpgsql COST 0.0001 AS $$
BEGIN
    INSERT INTO seen VALUES (v);
    RETURN true;
END $$;
SELECT lives_ok('SELECT count(*) FROM nadi.sessions WHERE pg_temp.peek(tenant_id)',
                'acme token: a query with a leaky function in its WHERE clause runs');
SELECT lives_ok('SELECT count(*) FROM nadi.events WHERE pg_temp.peek(tenant_id || '' '' || payload::text)',
                'acme token: the same over nadi.events runs');
SELECT lives_ok('SELECT count(*) FROM nadi.command_inbox WHERE pg_temp.peek(tenant_id || '' '' || payload::text)',
                'acme token: the same over nadi.command_inbox runs');
SELECT is_empty($$SELECT v FROM seen WHERE v NOT LIKE 'acme%'$$,
                'acme token: the leaky function was never handed another tenant''s row');
SELECT ok((SELECT count(*) FROM seen) > 0, 'acme token: the leaky function did see acme''s rows');

-- The token lives in this backend: a parallel worker must not evaluate the
-- policy (it would see no token, or a stale one).  Forced parallelism, with
-- the leader not scanning, still gives the same rows.
-- (force_parallel_mode is debug_parallel_query since PostgreSQL 16)
SELECT set_config(CASE WHEN current_setting('server_version_num')::int >= 160000
                       THEN 'debug_parallel_query' ELSE 'force_parallel_mode' END,
                  'on', true) AS forced_parallel \gset
SET LOCAL parallel_setup_cost = 0;
SET LOCAL parallel_tuple_cost = 0;
SET LOCAL min_parallel_table_scan_size = 0;
SET LOCAL parallel_leader_participation = off;
SELECT set_eq('SELECT session_id FROM nadi.sessions', ARRAY[:'a1', :'a2']::uuid[],
              'acme token, forced parallel query: nadi.sessions still shows acme''s two sessions');
SELECT set_eq('SELECT tenant_id, count(*) FROM nadi.events GROUP BY tenant_id',
              format($$VALUES ('acme', %s::bigint)$$, :acme_events),
              'acme token, forced parallel query: every acme event and no other');
SELECT set_config(CASE WHEN current_setting('server_version_num')::int >= 160000
                       THEN 'debug_parallel_query' ELSE 'force_parallel_mode' END,
                  'off', true) AS forced_parallel \gset
RESET parallel_setup_cost;
RESET parallel_tuple_cost;
RESET min_parallel_table_scan_size;
RESET parallel_leader_participation;

-- globex's session through the API: "not found", exactly as for an id that
-- does not exist, and nothing changes
SELECT throws_ok(format($$SELECT nadi.session_get(%L)$$, :'g1'), 'NA002',
                 format('session %s not found', :'g1'),
                 'acme token: session_get(globex) raises NA002 session not found');
SELECT throws_ok($$SELECT nadi.session_get('00000000-0000-7000-8000-000000000000')$$, 'NA002',
                 'session 00000000-0000-7000-8000-000000000000 not found',
                 'acme token: session_get of a missing id raises the same NA002');
SELECT throws_ok(format($$SELECT * FROM nadi.events_read(%L)$$, :'g1'), 'NA002', NULL,
                 'acme token: events_read(globex) raises NA002');
SELECT throws_ok(format($$SELECT nadi.session_replay(%L)$$, :'g1'), 'NA002', NULL,
                 'acme token: session_replay(globex) raises NA002');
SELECT throws_ok(format($$SELECT nadi.command_enqueue(%L, 'message', '{"text": "intrusion"}')$$, :'g1'), 'NA002', NULL,
                 'acme token: command_enqueue(globex) raises NA002');
SELECT throws_ok(format($$SELECT nadi.command_enqueue(%L, 'cancel', '{}')$$, :'g1'), 'NA002', NULL,
                 'acme token: a cancel control command to globex raises NA002');
SELECT throws_ok(format($$SELECT nadi.command_get(%L, %s)$$, :'g1', :cg1), 'NA002', NULL,
                 'acme token: command_get(globex) raises NA002');
SELECT throws_ok(format($$SELECT * FROM nadi.command_list(%L)$$, :'g1'), 'NA002', NULL,
                 'acme token: command_list(globex) raises NA002');
SELECT throws_ok(format($$SELECT nadi.command_cancel(%L, %s)$$, :'g1', :cg1), 'NA002', NULL,
                 'acme token: command_cancel(globex) raises NA002');
SELECT throws_ok(format($$SELECT nadi.session_terminate(%L)$$, :'g1'), 'NA002', NULL,
                 'acme token: session_terminate(globex) raises NA002');
-- a globex command id under an acme session: not found either
SELECT throws_ok(format($$SELECT nadi.command_get(%L, %s)$$, :'a1', :cg1), 'NA003', NULL,
                 'acme token: globex''s command id under acme''s session is not found (NA003)');

SELECT throws_ok($$SELECT nadi.session_create('globex')$$, 'NA031', NULL,
                 'acme token: creating a session for globex raises NA031');
SELECT is((SELECT tenant_id FROM nadi.session_create()), 'acme',
          'acme token: session_create() makes an acme session');
SELECT is((SELECT tenant_id FROM nadi.session_create('acme')), 'acme',
          'acme token: session_create(''acme'') makes an acme session');
SELECT set_eq('SELECT DISTINCT tenant_id FROM nadi.session_list()', ARRAY['acme'],
              'acme token: session_list lists acme''s sessions only');
SELECT is((SELECT count(*) FROM nadi.session_list()), 4::bigint,
          'acme token: session_list lists all four acme sessions');
SELECT throws_ok($$SELECT * FROM nadi.session_list(tenant_id => 'globex')$$, 'NA031', NULL,
                 'acme token: session_list(tenant_id => globex) raises NA031');
SELECT is((SELECT tenant_id FROM nadi.session_get(:'a1')), 'acme', 'acme token: session_get(acme) works');
SELECT ok((SELECT count(*) FROM nadi.events_read(:'a1')) >= 3, 'acme token: events_read(acme) works');
SELECT is((SELECT status::text FROM nadi.command_enqueue(:'a1', 'message', '{"text": "more"}')), 'queued',
          'acme token: command_enqueue(acme) works');
SELECT is(nadi.tenant_visible('globex'), false, 'acme token: tenant_visible(globex) is false');
SELECT is(nadi.tenant_visible('acme'), true, 'acme token: tenant_visible(acme) is true');

RESET ROLE;
SELECT results_eq(
    $$SELECT (SELECT row(state, last_seq, updated_at)::text FROM nadi.sessions WHERE session_id = g.sid),
             (SELECT count(*) FROM nadi.events WHERE session_id = g.sid),
             (SELECT string_agg(row(command_id, status, attempts)::text, ',' ORDER BY command_id)
                FROM nadi.command_inbox WHERE session_id = g.sid)
      FROM (SELECT session_id AS sid FROM nadi.sessions WHERE tenant_id = 'globex') g$$,
    'SELECT session, events, commands FROM globex_before',
    'globex''s session, events and commands are exactly as before acme''s attempts');
SELECT is((SELECT count(*) FROM nadi.sessions WHERE tenant_id = 'globex'), 1::bigint,
          'no session was created for globex');

---------------------------------------------------------------------------
-- Tokens that must not work: forged, unsigned, expired, garbage.  A failed
-- authenticate drops whatever token was in force: the caller is left with
-- none, not with the old tenant.
---------------------------------------------------------------------------
-- (expired: minted for a second, then the clock moves on an hour)
SET LOCAL nadi.clock_offset = '1h';
SET ROLE rls_edge;
SELECT throws_ok(format('SELECT nadi.authenticate(%L)', :'tok_short'), 'NA021', NULL,
                 'an expired token is refused (NA021)');
RESET ROLE;
RESET nadi.clock_offset;
SET ROLE rls_edge;
SELECT lives_ok(format('SELECT nadi.authenticate(%L)', :'tok_acme'), 'acme''s token authenticates again');
-- acme's header and signature around globex's claims
SELECT throws_ok(format('SELECT nadi.authenticate(%L)',
                        split_part(:'tok_acme', '.', 1) || '.' || split_part(:'tok_globex', '.', 2) || '.' ||
                        split_part(:'tok_acme', '.', 3)),
                 'NA020', NULL, 'a token whose claims were swapped does not verify (NA020)');
-- "alg": "none" with globex's claims and no signature
SELECT throws_ok(format('SELECT nadi.authenticate(%L)',
                        rtrim(translate(encode(convert_to('{"alg":"none","typ":"JWT"}', 'UTF8'), 'base64'), '+/', '-_'), '=')
                        || '.' || split_part(:'tok_globex', '.', 2) || '.'),
                 'NA020', NULL, 'an unsigned ("alg": "none") token does not verify (NA020)');
SELECT throws_ok($$SELECT nadi.authenticate('')$$, 'NA020', NULL, 'an empty token does not verify (NA020)');
SELECT throws_ok($$SELECT nadi.authenticate('a.b.c')$$, 'NA020', NULL, 'a malformed token does not verify (NA020)');
SELECT is(nadi.current_tenant(), NULL, 'after a failed authenticate no tenant is in force');
SELECT is_empty('SELECT * FROM nadi.sessions', 'after a failed authenticate no session is visible');
SELECT throws_ok($$SELECT nadi.session_create()$$, 'NA030', NULL,
                 'after a failed authenticate session_create raises NA030');

---------------------------------------------------------------------------
-- A session token: its one session
---------------------------------------------------------------------------
SELECT lives_ok(format('SELECT nadi.authenticate(%L)', :'tok_a1'), 'a1''s session token authenticates');
SELECT set_eq('SELECT session_id FROM nadi.sessions', ARRAY[:'a1']::uuid[],
              'session token: nadi.sessions shows its one session');
SELECT set_eq('SELECT DISTINCT session_id FROM nadi.events', ARRAY[:'a1']::uuid[],
              'session token: nadi.events shows its session''s events only');
SELECT set_eq('SELECT DISTINCT session_id FROM nadi.command_inbox', ARRAY[:'a1']::uuid[],
              'session token: nadi.command_inbox shows its session''s commands only');
SELECT set_eq('SELECT session_id FROM nadi.session_list()', ARRAY[:'a1']::uuid[],
              'session token: session_list lists its one session');
SELECT throws_ok(format($$SELECT nadi.session_get(%L)$$, :'a2'), 'NA002', NULL,
                 'session token: another session of the same tenant is not found (NA002)');
SELECT throws_ok(format($$SELECT * FROM nadi.events_read(%L)$$, :'a2'), 'NA002', NULL,
                 'session token: events_read of another acme session raises NA002');
SELECT throws_ok(format($$SELECT nadi.command_enqueue(%L, 'message', '{"text": "x"}')$$, :'a2'), 'NA002', NULL,
                 'session token: command_enqueue to another acme session raises NA002');
SELECT throws_ok($$SELECT nadi.session_create()$$, 'NA031', NULL,
                 'session token: cannot create sessions (NA031)');
SELECT is((SELECT tenant_id FROM nadi.session_get(:'a1')), 'acme', 'session token: session_get of its session works');
SELECT ok((SELECT count(*) FROM nadi.events_read(:'a1')) > 0, 'session token: events_read of its session works');

-- a sandbox token is bound to its session the same way
SELECT lives_ok(format('SELECT nadi.authenticate(%L)', :'tok_sbx_a2'), 'a2''s sandbox token authenticates');
SELECT set_eq('SELECT session_id FROM nadi.sessions', ARRAY[:'a2']::uuid[],
              'sandbox token: nadi.sessions shows its one session');
SELECT set_eq('SELECT DISTINCT session_id FROM nadi.command_inbox', ARRAY[:'a2']::uuid[],
              'sandbox token: nadi.command_inbox shows its session''s commands only');
SELECT throws_ok(format($$SELECT nadi.session_get(%L)$$, :'a1'), 'NA002', NULL,
                 'sandbox token: another session of the same tenant is not found (NA002)');

---------------------------------------------------------------------------
-- An admin token: every tenant
---------------------------------------------------------------------------
SELECT lives_ok(format('SELECT nadi.authenticate(%L)', :'tok_admin'), 'an admin token authenticates');
SELECT set_eq('SELECT DISTINCT tenant_id FROM nadi.sessions', ARRAY['acme', 'globex'],
              'admin token: nadi.sessions shows both tenants');
SELECT set_eq('SELECT DISTINCT tenant_id FROM nadi.events', ARRAY['acme', 'globex'],
              'admin token: nadi.events shows both tenants');
SELECT set_eq('SELECT DISTINCT tenant_id FROM nadi.command_inbox', ARRAY['acme', 'globex'],
              'admin token: nadi.command_inbox shows both tenants');
SELECT set_eq('SELECT DISTINCT tenant_id FROM nadi.session_list()', ARRAY['acme', 'globex'],
              'admin token: session_list lists both tenants');
SELECT is((SELECT tenant_id FROM nadi.session_get(:'g1')), 'globex', 'admin token: session_get(globex) works');
SELECT throws_ok($$SELECT nadi.session_create()$$, '22004', NULL,
                 'admin token: session_create must name the tenant');

---------------------------------------------------------------------------
-- Another token replaces the one in force: globex now, and acme is gone
---------------------------------------------------------------------------
SELECT lives_ok(format('SELECT nadi.authenticate(%L)', :'tok_globex'), 'globex''s token authenticates');
SELECT set_eq('SELECT session_id FROM nadi.sessions', ARRAY[:'g1']::uuid[],
              'globex token: nadi.sessions shows globex''s session only');
SELECT set_eq('SELECT command_id FROM nadi.command_inbox', ARRAY[:cg1]::bigint[],
              'globex token: nadi.command_inbox shows globex''s command only');
SELECT throws_ok(format($$SELECT nadi.session_get(%L)$$, :'a1'), 'NA002', NULL,
                 'globex token: acme''s session is not found');

---------------------------------------------------------------------------
-- Tokens narrow the privileged roles too
---------------------------------------------------------------------------
SET ROLE rls_cell;
SELECT lives_ok(format('SELECT nadi.authenticate(%L)', :'tok_acme'), 'a cell authenticates with acme''s token');
SELECT set_eq('SELECT DISTINCT tenant_id FROM nadi.sessions', ARRAY['acme'],
              'cell with acme token: nadi.sessions shows acme only');
SELECT set_eq('SELECT session_id FROM nadi.session_leases', 'SELECT session_id FROM nadi.sessions',
              'cell with acme token: nadi.session_leases shows the leases of visible sessions only');
SELECT throws_ok(format($$SELECT nadi.session_get(%L)$$, :'g1'), 'NA002', NULL,
                 'cell with acme token: session_get(globex) raises NA002');
SET ROLE rls_admin;
SELECT lives_ok(format('SELECT nadi.authenticate(%L)', :'tok_acme'), 'an admin role authenticates with acme''s token');
SELECT set_eq('SELECT DISTINCT tenant_id FROM nadi.sessions', ARRAY['acme'],
              'admin role with acme token: nadi.sessions shows acme only');
SELECT set_eq('SELECT DISTINCT tenant_id FROM nadi.audit_log', ARRAY['acme'],
              'admin role with acme token: nadi.audit_log shows acme''s entries only');
SELECT throws_ok('SELECT nadi.reap()', '42501', NULL,
                 'admin role with acme token: administrator-only functions are refused');

---------------------------------------------------------------------------
-- Connection scope
---------------------------------------------------------------------------
SET ROLE rls_edge;
SELECT lives_ok(format('SELECT nadi.authenticate(%L, false)', :'tok_acme'),
                'acme''s token authenticates for the connection');
SELECT set_eq('SELECT session_id FROM nadi.sessions', 'SELECT session_id FROM nadi.session_list()',
              'connection scope: raw SELECT and session_list agree');
SELECT set_eq('SELECT DISTINCT tenant_id FROM nadi.sessions', ARRAY['acme'],
              'connection scope: acme''s sessions only');

RESET ROLE;
SELECT * FROM finish();
ROLLBACK;
