-- Privileges: what each nadi role may EXECUTE and SELECT, checked twice:
-- in the catalog (has_*_privilege), and by calling every function and
-- touching every table as a member of the role (SET ROLE).  The functions
-- are SECURITY DEFINER, so the EXECUTE grant is the only gate; with no token
-- in force, nadi_admin and nadi_cell act for every tenant and the others
-- for none.  Schema nadi is usable by PUBLIC (authenticate is public), so a
-- role outside the nadi roles is stopped by the grants alone.
BEGIN;
SELECT plan(1183);

---------------------------------------------------------------------------
-- Test roles: one member of each nadi role, and one of none
---------------------------------------------------------------------------
CREATE ROLE priv_edge NOLOGIN IN ROLE nadi_edge;
CREATE ROLE priv_cell NOLOGIN IN ROLE nadi_cell;
CREATE ROLE priv_sandbox NOLOGIN IN ROLE nadi_sandbox_host;
CREATE ROLE priv_admin NOLOGIN IN ROLE nadi_admin;
CREATE ROLE priv_nobody NOLOGIN;

-- The host logins act for the hosts an administrator bound to them.
SELECT nadi.host_bind('cell', h, 'priv_cell') FROM unnest(ARRAY['priv-cell-1', 'priv-cell-2']) AS h;
SELECT nadi.host_bind('sandbox', h, 'priv_sandbox') FROM unnest(ARRAY['priv-sbx-1', 'priv-sbx-2']) AS h;

-- Runs a statement; 'ok' or the SQLSTATE it raised.
CREATE FUNCTION pg_temp.sqlstate_of(stmt text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE stmt;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END $$;

---------------------------------------------------------------------------
-- Fixture, as superuser: hosts, a session held by a cell, spare sessions
---------------------------------------------------------------------------
SELECT nadi.key_create() IS NOT NULL AS fixture_key \gset
SELECT host_id AS cell_host FROM nadi.cell_host_register('priv-cell-1', labels => '{"pgtap": "priv"}') \gset
SELECT host_id AS sbx_host FROM nadi.sandbox_host_register('priv-sbx-1', labels => '{"pgtap": "priv"}') \gset
-- s_held (the cell's) and s_adm (the admin's): placed on priv-cell-1 and
-- leased at epoch 1, each with one queued command
SELECT session_id AS s_held FROM nadi.session_create('acme', labels => '{"pgtap": "priv"}') \gset
SELECT state AS placed FROM nadi.place(:'s_held') \gset
SELECT epoch AS epoch FROM nadi.lease_acquire(:'s_held', 'priv-cell-1') \gset
SELECT command_id AS c_held FROM nadi.command_enqueue(:'s_held', 'message', '{"text": "hello"}') \gset
SELECT session_id AS s_adm FROM nadi.session_create('globex', labels => '{"pgtap": "priv"}') \gset
SELECT state AS adm_placed FROM nadi.place(:'s_adm') \gset
SELECT epoch AS adm_epoch FROM nadi.lease_acquire(:'s_adm', 'priv-cell-1') \gset
SELECT command_id AS c_adm FROM nadi.command_enqueue(:'s_adm', 'message', '{"text": "hello"}') \gset
-- s_spare: pending, with a queued command to cancel; s_term, s_fail, s_place: for the admin's calls
SELECT session_id AS s_spare FROM nadi.session_create('acme', labels => '{"pgtap": "priv"}') \gset
SELECT command_id AS c_spare FROM nadi.command_enqueue(:'s_spare', 'message', '{"text": "spare"}') \gset
SELECT session_id AS s_term FROM nadi.session_create('globex', labels => '{"pgtap": "priv"}') \gset
SELECT session_id AS s_fail FROM nadi.session_create('globex', labels => '{"pgtap": "priv"}') \gset
SELECT session_id AS s_place FROM nadi.session_create('globex', labels => '{"pgtap": "priv"}') \gset

SELECT is(ARRAY[:'placed', :'adm_placed'], ARRAY['placed', 'placed'], 'fixture: s_held and s_adm are placed');
SELECT is(ARRAY[:'epoch'::bigint, :'adm_epoch'::bigint], ARRAY[1, 1]::bigint[],
          'fixture: s_held and s_adm are leased at epoch 1');

-- Whose session a role's calls use: {S} and {C} in a statement stand for
-- the session and its command.  The cell works on s_held, the admin on
-- s_adm; the others are refused before it matters.
CREATE TEMP TABLE ctx (role name PRIMARY KEY, s uuid, c bigint);
GRANT SELECT ON ctx TO PUBLIC;
INSERT INTO ctx VALUES ('priv_nobody', :'s_held', :c_held), ('priv_sandbox', :'s_held', :c_held),
                       ('priv_edge', :'s_held', :c_held), ('priv_cell', :'s_held', :c_held),
                       ('priv_admin', :'s_adm', :c_adm);

---------------------------------------------------------------------------
-- Every function, how to call it, and the outcome expected for each role:
-- '42501' = refused for want of EXECUTE (or of USAGE on the schema),
-- 'ok'    = runs, or an SQLSTATE the function itself raises past the grant.
---------------------------------------------------------------------------
CREATE TEMP TABLE calls (
    ord     int PRIMARY KEY,
    fname   text NOT NULL,
    sig     text NOT NULL,
    stmt    text NOT NULL,
    edge    text NOT NULL,
    cell    text NOT NULL,
    sandbox text NOT NULL,
    admin   text NOT NULL,
    nobody  text NOT NULL DEFAULT '42501'
);
GRANT SELECT ON calls TO PUBLIC;

INSERT INTO calls (ord, fname, sig, stmt, edge, cell, sandbox, admin) VALUES
 ( 1, 'tenant_visible', 'nadi.tenant_visible(text, uuid)',
      $$SELECT nadi.tenant_visible('acme')$$, 'ok', 'ok', 'ok', 'ok'),
 ( 2, 'now', 'nadi.now()',
      $$SELECT nadi.now()$$, 'ok', 'ok', 'ok', 'ok'),
 ( 3, 'session_transitions', 'nadi.session_transitions()',
      $$SELECT count(*) FROM nadi.session_transitions()$$, 'ok', 'ok', 'ok', 'ok'),
 ( 4, 'current_tenant', 'nadi.current_tenant()',
      $$SELECT nadi.current_tenant()$$, 'ok', 'ok', 'ok', 'ok'),
 ( 5, 'current_claims', 'nadi.current_claims()',
      $$SELECT nadi.current_claims()$$, 'ok', 'ok', 'ok', 'ok'),
 -- a token that is not one: refused by verification, after the grant
 ( 7, 'authenticate', 'nadi.authenticate(text, boolean)',
      $$SELECT nadi.authenticate('not.a.token')$$, 'NA020', 'NA020', 'NA020', 'NA020'),
 -- verifying without authenticating, and the public keys: for those that
 -- take tokens from outside (edge, sandbox hosts' credentials proxy)
 ( 8, 'token_verify', 'nadi.token_verify(text, text)',
      $$SELECT nadi.token_verify('not.a.token')$$, 'NA020', '42501', 'NA020', 'NA020'),
 ( 9, 'jwks', 'nadi.jwks()',
      $$SELECT nadi.jwks()$$, 'ok', '42501', 'ok', 'ok'),
 -- sessions (without a token the edge sees no session: NA030 or NA002)
 (10, 'session_create', 'nadi.session_create(text, jsonb, jsonb, jsonb)',
      $$SELECT nadi.session_create('acme')$$, 'NA030', '42501', '42501', 'ok'),
 (11, 'session_get', 'nadi.session_get(uuid)',
      $$SELECT nadi.session_get('{S}')$$, 'NA002', 'ok', '42501', 'ok'),
 (12, 'session_list', 'nadi.session_list(nadi.session_state, uuid, integer, text)',
      $$SELECT count(*) FROM nadi.session_list()$$, 'NA030', '42501', '42501', 'ok'),
 (13, 'session_terminate', 'nadi.session_terminate(uuid, text)',
      format($$SELECT nadi.session_terminate(%L)$$, :'s_term'), 'NA002', '42501', '42501', 'ok'),
 (14, 'session_transition', 'nadi.session_transition(uuid, nadi.session_state, text)',
      format($$SELECT nadi.session_transition(%L, 'failed')$$, :'s_fail'), '42501', '42501', '42501', 'ok'),
 (15, 'session_replay', 'nadi.session_replay(uuid, bigint)',
      $$SELECT nadi.session_replay('{S}')$$, 'NA002', 'ok', '42501', 'ok'),
 -- the command inbox, client side
 (20, 'command_enqueue', 'nadi.command_enqueue(uuid, text, jsonb, text)',
      format($$SELECT nadi.command_enqueue(%L, 'message', '{"text": "more"}')$$, :'s_spare'),
      'NA002', '42501', '42501', 'ok'),
 (25, 'command_enqueue_many', 'nadi.command_enqueue_many(jsonb)',
      format($$SELECT count(*) FROM nadi.command_enqueue_many(jsonb_build_array(jsonb_build_object(
                 'session_id', %L, 'type', 'message', 'payload', '{"text": "batch"}'::jsonb)))$$, :'s_spare'),
      'NA002', '42501', '42501', 'ok'),
 (21, 'command_get', 'nadi.command_get(uuid, bigint)',
      $$SELECT nadi.command_get('{S}', {C})$$, 'NA002', 'ok', '42501', 'ok'),
 (22, 'command_list', 'nadi.command_list(uuid, nadi.command_status, bigint, integer)',
      $$SELECT count(*) FROM nadi.command_list('{S}')$$, 'NA002', 'ok', '42501', 'ok'),
 (23, 'command_cancel', 'nadi.command_cancel(uuid, bigint)',
      format($$SELECT nadi.command_cancel(%L, %s)$$, :'s_spare', :c_spare), 'NA002', '42501', '42501', 'ok'),
 (24, 'events_read', 'nadi.events_read(uuid, bigint, integer)',
      $$SELECT count(*) FROM nadi.events_read('{S}')$$, 'NA002', 'ok', '42501', 'ok'),
 -- the cell's side: claim, write an event, ask for permission (the command
 -- parks as waiting), claim again (nothing: it waits), fail and complete it
 -- (refused: it is not running)
 (30, 'command_claim', 'nadi.command_claim(uuid, bigint)',
      $$SELECT 1 / count(*)::int FROM nadi.command_claim('{S}', 1)$$, '42501', 'ok', '42501', 'ok'),
 (31, 'event_append', 'nadi.event_append(uuid, bigint, text, jsonb, bigint)',
      $$SELECT nadi.event_append('{S}', 1, 'model.reply', '{"text": "hi"}', {C})$$, '42501', 'ok', '42501', 'ok'),
 (32, 'command_await_permission', 'nadi.command_await_permission(uuid, bigint, bigint, jsonb)',
      $$SELECT nadi.command_await_permission('{S}', {C}, 1, '{"tool": "rm"}')$$, '42501', 'ok', '42501', 'ok'),
 (33, 'command_claim (while waiting)', 'nadi.command_claim(uuid, bigint)',
      $$SELECT 1 / (1 - count(*))::int FROM nadi.command_claim('{S}', 1)$$, '42501', 'ok', '42501', 'ok'),
 -- the batch claim names the session held at epoch 1 (its command waits:
 -- nothing to claim, and not fenced); the cell's batch calls are for the
 -- host bound to it, and only nadi_cell may make them
 (36, 'command_claim_many', 'nadi.command_claim_many(text, uuid[], bigint[], integer)',
      $$SELECT 1 / (1 - count(*))::int FROM nadi.command_claim_many('priv-cell-1', ARRAY['{S}']::uuid[], ARRAY[1]::bigint[])$$,
      '42501', 'ok', '42501', '42501'),
 -- the batch completion: the command waits, so it is reported not running
 (37, 'command_complete_many', 'nadi.command_complete_many(text, uuid[], bigint[], bigint[], jsonb[], jsonb[])',
      $$SELECT 1 / count(*) FILTER (WHERE status = 'not_running')::int
        FROM nadi.command_complete_many('priv-cell-1', ARRAY['{S}']::uuid[], ARRAY[1]::bigint[], ARRAY[{C}]::bigint[])$$,
      '42501', 'ok', '42501', '42501'),
 (34, 'command_fail', 'nadi.command_fail(uuid, bigint, bigint, jsonb, boolean)',
      $$SELECT nadi.command_fail('{S}', {C}, 1, '{"error": "x"}')$$, '42501', 'NA006', '42501', 'NA006'),
 (35, 'command_complete', 'nadi.command_complete(uuid, bigint, bigint, jsonb, jsonb)',
      $$SELECT nadi.command_complete('{S}', {C}, 1, '{}')$$, '42501', 'NA006', '42501', 'NA006'),
 -- leases (the session is held: a second acquire is refused)
 (40, 'lease_acquire', 'nadi.lease_acquire(uuid, text)',
      $$SELECT nadi.lease_acquire('{S}', 'priv-cell-1')$$, '42501', 'NA004', '42501', 'NA004'),
 (41, 'lease_renew', 'nadi.lease_renew(uuid, bigint)',
      $$SELECT nadi.lease_renew('{S}', 1)$$, '42501', 'ok', '42501', 'ok'),
 (43, 'lease_renew_many', 'nadi.lease_renew_many(text, uuid[], bigint[])',
      $$SELECT 1 / count(*) FILTER (WHERE ok)::int FROM nadi.lease_renew_many('priv-cell-1', ARRAY['{S}']::uuid[], ARRAY[1]::bigint[])$$,
      '42501', 'ok', '42501', '42501'),
 (42, 'reap', 'nadi.reap()',
      $$SELECT nadi.reap()$$, '42501', '42501', '42501', 'ok'),
 -- hosts and placement
 (50, 'cell_host_register', 'nadi.cell_host_register(text, text, integer, jsonb)',
      $$SELECT nadi.cell_host_register('priv-cell-2')$$, '42501', 'ok', '42501', 'ok'),
 (51, 'cell_host_heartbeat', 'nadi.cell_host_heartbeat(text)',
      $$SELECT nadi.cell_host_heartbeat('priv-cell-1')$$, '42501', 'ok', '42501', 'ok'),
 (52, 'cell_host_set_state', 'nadi.cell_host_set_state(text, nadi.host_state)',
      $$SELECT nadi.cell_host_set_state('priv-cell-2', 'draining')$$, '42501', '42501', '42501', 'ok'),
 (53, 'cell_sessions', 'nadi.cell_sessions(text)',
      $$SELECT count(*) FROM nadi.cell_sessions('priv-cell-1')$$, '42501', 'ok', '42501', 'ok'),
 (54, 'sandbox_host_register', 'nadi.sandbox_host_register(text, text, integer, jsonb)',
      $$SELECT nadi.sandbox_host_register('priv-sbx-2')$$, '42501', '42501', 'ok', 'ok'),
 (55, 'sandbox_host_heartbeat', 'nadi.sandbox_host_heartbeat(text)',
      $$SELECT nadi.sandbox_host_heartbeat('priv-sbx-1')$$, '42501', '42501', 'ok', 'ok'),
 (56, 'sandbox_host_set_state', 'nadi.sandbox_host_set_state(text, nadi.host_state)',
      $$SELECT nadi.sandbox_host_set_state('priv-sbx-2', 'draining')$$, '42501', '42501', '42501', 'ok'),
 (57, 'place', 'nadi.place(uuid)',
      format($$SELECT nadi.place(%L)$$, :'s_place'), '42501', '42501', '42501', 'ok'),
 (58, 'place_pending', 'nadi.place_pending(integer)',
      $$SELECT nadi.place_pending(1)$$, '42501', '42501', '42501', 'ok'),
 (59, 'wakeup_stats', 'nadi.wakeup_stats()',
      $$SELECT nadi.wakeup_stats()$$, '42501', '42501', '42501', 'ok'),
 -- tokens: keys and minting are the administrator's alone
 (60, 'key_create', 'nadi.key_create(text)',
      $$SELECT nadi.key_create()$$, '42501', '42501', '42501', 'ok'),
 (61, 'token_mint', 'nadi.token_mint(text, text, text, interval, uuid, text)',
      $$SELECT nadi.token_mint('acme', 'mallory', 'admin', '1 hour')$$, '42501', '42501', '42501', 'ok'),
 (62, 'key_rotate', 'nadi.key_rotate(interval)',
      $$SELECT nadi.key_rotate()$$, '42501', '42501', '42501', 'ok'),
 -- egress: rules are the administrator's; the sandbox host's proxy
 -- authorizes; cells mint the sandbox and model tokens
 (63, 'egress_allow', 'nadi.egress_allow(text, text, text[], text)',
      $$SELECT nadi.egress_allow('acme', 'priv-api')$$, '42501', '42501', '42501', 'ok'),
 (64, 'egress_revoke', 'nadi.egress_revoke(text, text)',
      $$SELECT nadi.egress_revoke('acme', 'priv-api')$$, '42501', '42501', '42501', 'ok'),
 (65, 'sandbox_token', 'nadi.sandbox_token(uuid, text, interval)',
      $$SELECT nadi.sandbox_token('{S}', 'priv-sbx')$$, '42501', 'ok', '42501', 'ok'),
 (66, 'model_token', 'nadi.model_token(uuid, interval)',
      $$SELECT nadi.model_token('{S}')$$, '42501', 'ok', '42501', 'ok'),
 (73, 'sandboxd_token', 'nadi.sandboxd_token(uuid, interval)',
      $$SELECT nadi.sandboxd_token('{S}')$$, '42501', 'ok', '42501', 'ok'),
 (67, 'proxy_authorize', 'nadi.proxy_authorize(text, text, text, text, text, text)',
      $$SELECT nadi.proxy_authorize('garbage', NULL, 'priv-api', 'GET', '/', 'priv')$$,
      '42501', '42501', 'ok', 'ok'),
 (68, 'proxy_finish', 'nadi.proxy_finish(bigint, integer, bigint, bigint, double precision, text)',
      $$SELECT nadi.proxy_finish(0, 200, 0, 0, 0)$$, '42501', '42501', '22023', '22023'),
 -- internal: the owner's alone
 (69, '_token_mint_internal', 'nadi._token_mint_internal(text, text, text, interval, uuid, text)',
      $$SELECT nadi._token_mint_internal('acme', 'x', 'admin', '1 hour', NULL, 'nadi')$$,
      '42501', '42501', '42501', '42501'),
 (70, '_proxy_token_session', 'nadi._proxy_token_session(uuid, interval)',
      $$SELECT nadi._proxy_token_session('{S}', '1 minute')$$, '42501', '42501', '42501', '42501'),
 (71, '_session_token_subject', 'nadi._session_token_subject(uuid)',
      $$SELECT nadi._session_token_subject('{S}')$$, '42501', '42501', '42501', '42501'),
 (72, '_host_ref_check', 'nadi._host_ref_check(text, text)',
      $$SELECT nadi._host_ref_check('cell', 'priv-cell-3')$$, '42501', '42501', '42501', '42501'),
 (78, '_require_admin', 'nadi._require_admin()',
      $$SELECT nadi._require_admin()$$, '42501', '42501', '42501', '42501'),
 (74, '_actor', 'nadi._actor()',
      $$SELECT nadi._actor()$$, '42501', '42501', '42501', '42501'),
 -- host bindings and labels: the administrator's
 (75, 'host_bind', 'nadi.host_bind(text, text, name)',
      $$SELECT nadi.host_bind('cell', 'priv-cell-3', 'priv_cell')$$, '42501', '42501', '42501', 'ok'),
 (76, 'host_set_labels', 'nadi.host_set_labels(text, text, jsonb)',
      $$SELECT nadi.host_set_labels('sandbox', 'priv-sbx-1', '{"pgtap": "priv", "tenant": "acme"}')$$,
      '42501', '42501', '42501', 'ok'),
 (77, 'host_unbind', 'nadi.host_unbind(text, text)',
      $$SELECT nadi.host_unbind('cell', 'priv-cell-3')$$, '42501', '42501', '42501', 'ok'),
 -- operator statistics (1.1): the views' tenant, nadi_monitor's (nadi_admin
 -- is a member); the broker's fold, the owner's alone
 (79, '_stat_tenant', 'nadi._stat_tenant()',
      $$SELECT nadi._stat_tenant()$$, '42501', '42501', '42501', 'ok'),
 (81, '_call_counts_fold', 'nadi._call_counts_fold()',
      $$SELECT nadi._call_counts_fold()$$, '42501', '42501', '42501', '42501'),
 -- data lifecycle (1.1): the administrator's.  A purge inside a transaction
 -- block (as here) cannot commit between its batches: 2D000 from the
 -- procedure itself, after the grant.
 (82, '_held', 'nadi._held(text, uuid)',
      $$SELECT nadi._held('acme', NULL)$$, '42501', '42501', '42501', '42501'),
 (83, '_retention_check', 'nadi._retention_check(interval, integer)',
      $$SELECT nadi._retention_check('1 day', 10)$$, '42501', '42501', '42501', 'ok'),
 (84, '_retention_loop_check', 'nadi._retention_loop_check(integer, interval, interval)',
      $$SELECT nadi._retention_loop_check(10, '1 minute', NULL)$$, '42501', '42501', '42501', 'ok'),
 (85, 'purge_batch', 'nadi.purge_batch(interval, integer)',
      $$SELECT nadi.purge_batch('100 years')$$, '42501', '42501', '42501', 'ok'),
 (86, 'purge', 'nadi.purge(interval, integer, integer, interval, interval, bigint, bigint, bigint, bigint, integer)',
      $$CALL nadi.purge('100 years')$$, '42501', '42501', '42501', '2D000'),
 (87, 'purge_audit_batch', 'nadi.purge_audit_batch(interval, integer)',
      $$SELECT nadi.purge_audit_batch('100 years')$$, '42501', '42501', '42501', 'ok'),
 (88, 'purge_audit', 'nadi.purge_audit(interval, integer, integer, interval, interval, bigint, bigint, integer)',
      $$CALL nadi.purge_audit('100 years')$$, '42501', '42501', '42501', '2D000'),
 (89, 'hold_set', 'nadi.hold_set(text, uuid, text)',
      $$SELECT nadi.hold_set('acme', NULL, 'pgtap')$$, '42501', '42501', '42501', 'ok'),
 (90, 'hold_release', 'nadi.hold_release(text, uuid, text)',
      $$SELECT nadi.hold_release('acme', NULL)$$, '42501', '42501', '42501', 'ok'),
 -- sandbox reaping (1.1): the sandbox hosts' (and the administrator's)
 (91, 'sessions_ended', 'nadi.sessions_ended(uuid[], interval)',
      $$SELECT count(*) FROM nadi.sessions_ended(ARRAY['{S}']::uuid[], '1 minute')$$,
      '42501', '42501', 'ok', 'ok'),
 -- purges and holds at READ COMMITTED only (1.1): the statement
 -- triggers' function, the owner's
 (92, '_read_committed_only', 'nadi._read_committed_only()',
      $$SELECT nadi._read_committed_only()$$, '42501', '42501', '42501', '42501'),
 -- files in and out through the edge (1.1): the edge's (and the
 -- administrator's); without a token the edge sees no session
 (93, 'session_files_begin', 'nadi.session_files_begin(uuid, text, text, interval)',
      $$SELECT count(*) FROM nadi.session_files_begin('{S}', 'in', 'x')$$, 'NA002', '42501', '42501', 'ok'),
 (94, 'session_files_end', 'nadi.session_files_end(bigint, bigint, integer, text)',
      $$SELECT nadi.session_files_end(0, 0, 200)$$, '22023', '42501', '42501', '22023'),
 -- session forks (1.1): the edge's (and the administrator's); without a
 -- token the edge sees no session; the claims mint is the owner's alone
 (95, 'session_fork', 'nadi.session_fork(uuid, bigint)',
      $$SELECT count(*) FROM nadi.session_fork('{S}', 1)$$, 'NA002', '42501', '42501', 'ok'),
 (96, '_token_mint_claims', 'nadi._token_mint_claims(text, text, text, interval, uuid, text, jsonb)',
      $$SELECT nadi._token_mint_claims('acme', 'x', 'admin', '1 hour', NULL, 'nadi', '{}')$$,
      '42501', '42501', '42501', '42501'),
 (97, '_fork_claims', 'nadi._fork_claims(uuid)',
      $$SELECT nadi._fork_claims('{S}')$$, '42501', '42501', '42501', '42501'),
 -- last: the cell lets go of its session
 (99, 'lease_release', 'nadi.lease_release(uuid, bigint)',
      $$SELECT nadi.lease_release('{S}', 1)$$, '42501', 'ok', '42501', 'ok');

-- PUBLIC may call these (authenticate refuses the garbage token itself).
UPDATE calls SET nobody = CASE fname WHEN 'authenticate' THEN 'NA020' ELSE 'ok' END
WHERE fname IN ('tenant_visible', 'now', 'session_transitions', 'current_tenant', 'current_claims',
                'authenticate');

-- A role's statement, with its session and command filled in.
CREATE FUNCTION pg_temp.stmt_for(role name, stmt text) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT replace(replace(stmt, '{S}', c.s::text), '{C}', c.c::text) FROM ctx c WHERE c.role = stmt_for.role
$$;

-- The list above covers the whole API.
SELECT set_eq(
    $$SELECT oid::regprocedure::text FROM pg_proc WHERE pronamespace = 'nadi'::regnamespace$$,
    $$SELECT sig::regprocedure::text FROM calls$$,
    'every function in schema nadi is exercised below');

---------------------------------------------------------------------------
-- The catalog's view: EXECUTE per role (membership is inherited)
---------------------------------------------------------------------------
SELECT is(has_function_privilege(r.role, c.sig, 'EXECUTE'), r.expect <> '42501',
          format('%s %s EXECUTE %s', r.role,
                 CASE WHEN r.expect <> '42501' THEN 'has' ELSE 'lacks' END, c.sig))
FROM (SELECT DISTINCT ON (sig) * FROM calls ORDER BY sig, ord) c,
     LATERAL (VALUES (1, 'priv_edge', c.edge), (2, 'priv_cell', c.cell),
                     (3, 'priv_sandbox', c.sandbox), (4, 'priv_admin', c.admin),
                     (5, 'priv_nobody', c.nobody)) AS r(n, role, expect)
ORDER BY c.sig, r.n;

-- A role in none of the nadi roles reaches the schema (PUBLIC has USAGE),
-- but cannot create anything in it.
SELECT ok(NOT has_schema_privilege('priv_nobody', 'nadi', 'CREATE'),
          'a role outside the nadi roles cannot create objects in schema nadi');

---------------------------------------------------------------------------
-- Tables: SELECT where granted, never a write (writes go through functions)
---------------------------------------------------------------------------
CREATE TEMP TABLE tables (tname text, edge boolean, cell boolean, sandbox boolean, admin boolean);
GRANT SELECT ON tables TO PUBLIC;
INSERT INTO tables VALUES
    ('sessions',       true,  true,  false, true),
    ('command_inbox',  true,  true,  false, true),
    ('events',         true,  true,  false, true),
    ('session_leases', false, true,  false, true),
    ('cell_hosts',     false, true,  false, true),
    ('sandbox_hosts',  false, true,  false, true),
    ('audit_log',      false, false, false, true),
    ('signing_keys',   false, false, false, true),
    ('egress_rules',   false, false, false, true),
    ('host_bindings',  false, false, false, true),
    ('call_counts',    false, false, false, false),
    ('call_count_deltas', false, false, false, false),
    ('legal_holds',    false, false, false, true),
    ('purged_sessions', true, false, false, true),
    ('session_forks',  true,  true,  false, true),
    ('signing_key_secrets', false, false, false, false);

SELECT table_privs_are('nadi', t.tname, r.role, CASE WHEN r.can THEN ARRAY['SELECT'] ELSE '{}'::text[] END,
                       format('%s may %s nadi.%s', r.role, CASE WHEN r.can THEN 'only SELECT' ELSE 'not touch' END, t.tname))
FROM tables t,
     LATERAL (VALUES (1, 'priv_edge', t.edge), (2, 'priv_cell', t.cell),
                     (3, 'priv_sandbox', t.sandbox), (4, 'priv_admin', t.admin),
                     (5, 'priv_nobody', false)) AS r(n, role, can)
ORDER BY t.tname, r.n;

SELECT sequence_privs_are('nadi', 'command_id_seq', r, '{}'::text[],
                          format('%s has no privilege on nadi.command_id_seq', r))
FROM unnest(ARRAY['priv_edge', 'priv_cell', 'priv_sandbox', 'priv_admin']) AS r;

---------------------------------------------------------------------------
-- Now as each role.  The order matters: the cell claims and completes the
-- command before the administrator tries the same calls.
---------------------------------------------------------------------------
CREATE TEMP TABLE writes (verb text, stmt text);
GRANT SELECT ON writes TO PUBLIC;
INSERT INTO writes VALUES
    ('INSERT into',  'INSERT INTO nadi.%I DEFAULT VALUES'),
    ('UPDATE',       'UPDATE nadi.%I SET %I = %I'),
    ('DELETE from',  'DELETE FROM nadi.%I'),
    ('TRUNCATE',     'TRUNCATE nadi.%I');

-- nobody ------------------------------------------------------------------
SET ROLE priv_nobody;

SELECT CASE c.nobody
       WHEN '42501' THEN throws_ok(pg_temp.stmt_for('priv_nobody', c.stmt), '42501', NULL, format('priv_nobody cannot call %s', c.fname))
       WHEN 'ok' THEN lives_ok(pg_temp.stmt_for('priv_nobody', c.stmt), format('priv_nobody can call %s', c.fname))
       ELSE is(pg_temp.sqlstate_of(pg_temp.stmt_for('priv_nobody', c.stmt)), c.nobody,
               format('priv_nobody may call %s (refused by it with %s)', c.fname, c.nobody))
       END
FROM (SELECT * FROM calls ORDER BY ord OFFSET 0) c;
SELECT throws_ok(format('SELECT * FROM nadi.%I', t.tname), '42501', NULL,
                 format('priv_nobody cannot read nadi.%s', t.tname))
FROM (SELECT * FROM tables ORDER BY tname OFFSET 0) t;

-- sandbox host ------------------------------------------------------------
SET ROLE priv_sandbox;

SELECT CASE c.sandbox
       WHEN '42501' THEN throws_ok(pg_temp.stmt_for('priv_sandbox', c.stmt), '42501', NULL, format('priv_sandbox cannot call %s', c.fname))
       WHEN 'ok' THEN lives_ok(pg_temp.stmt_for('priv_sandbox', c.stmt), format('priv_sandbox can call %s', c.fname))
       ELSE is(pg_temp.sqlstate_of(pg_temp.stmt_for('priv_sandbox', c.stmt)), c.sandbox,
               format('priv_sandbox may call %s (refused by it with %s)', c.fname, c.sandbox))
       END
FROM (SELECT * FROM calls ORDER BY ord OFFSET 0) c;

-- edge --------------------------------------------------------------------
SET ROLE priv_edge;

SELECT CASE c.edge
       WHEN '42501' THEN throws_ok(pg_temp.stmt_for('priv_edge', c.stmt), '42501', NULL, format('priv_edge cannot call %s', c.fname))
       WHEN 'ok' THEN lives_ok(pg_temp.stmt_for('priv_edge', c.stmt), format('priv_edge can call %s', c.fname))
       ELSE is(pg_temp.sqlstate_of(pg_temp.stmt_for('priv_edge', c.stmt)), c.edge,
               format('priv_edge may call %s (refused by it with %s)', c.fname, c.edge))
       END
FROM (SELECT * FROM calls ORDER BY ord OFFSET 0) c;

-- cell --------------------------------------------------------------------
SET ROLE priv_cell;

SELECT CASE c.cell
       WHEN '42501' THEN throws_ok(pg_temp.stmt_for('priv_cell', c.stmt), '42501', NULL, format('priv_cell cannot call %s', c.fname))
       WHEN 'ok' THEN lives_ok(pg_temp.stmt_for('priv_cell', c.stmt), format('priv_cell can call %s', c.fname))
       ELSE is(pg_temp.sqlstate_of(pg_temp.stmt_for('priv_cell', c.stmt)), c.cell,
               format('priv_cell may call %s (refused by it with %s)', c.fname, c.cell))
       END
FROM (SELECT * FROM calls ORDER BY ord OFFSET 0) c;

-- what the cell did is what it meant to do
RESET ROLE;
SELECT results_eq(
    format($$SELECT status::text, attempts FROM nadi.command_inbox WHERE session_id = %L AND command_id = %s$$,
           :'s_held', :c_held),
    $$VALUES ('waiting', 0)$$,
    'the cell''s calls took effect: its command waits for permission, the attempt not counted');
SELECT is((SELECT state::text FROM nadi.sessions WHERE session_id = :'s_held'), 'suspended',
          'the cell''s lease_release took effect: the session is suspended');

-- admin -------------------------------------------------------------------
SET ROLE priv_admin;

SELECT CASE c.admin
       WHEN '42501' THEN throws_ok(pg_temp.stmt_for('priv_admin', c.stmt), '42501', NULL, format('priv_admin cannot call %s', c.fname))
       WHEN 'ok' THEN lives_ok(pg_temp.stmt_for('priv_admin', c.stmt), format('priv_admin can call %s', c.fname))
       ELSE is(pg_temp.sqlstate_of(pg_temp.stmt_for('priv_admin', c.stmt)), c.admin,
               format('priv_admin may call %s (refused by it with %s)', c.fname, c.admin))
       END
FROM (SELECT * FROM calls ORDER BY ord OFFSET 0) c;

RESET ROLE;
SELECT is((SELECT state::text FROM nadi.sessions WHERE session_id = :'s_term'), 'terminated',
          'the admin''s session_terminate took effect');
SELECT is((SELECT state::text FROM nadi.sessions WHERE session_id = :'s_fail'), 'failed',
          'the admin''s session_transition took effect');
SELECT is((SELECT state::text FROM nadi.sessions WHERE session_id = :'s_place'), 'placed',
          'the admin''s place took effect');
SELECT is((SELECT state::text FROM nadi.sessions WHERE session_id = :'s_adm'), 'suspended',
          'the admin''s cell calls took effect: its session is suspended');

---------------------------------------------------------------------------
-- Reading and writing tables as each role
---------------------------------------------------------------------------
SET ROLE priv_sandbox;
SELECT throws_ok(format('SELECT * FROM nadi.%I', t.tname), '42501', NULL,
                 format('priv_sandbox cannot read nadi.%s', t.tname))
FROM (SELECT * FROM tables ORDER BY tname OFFSET 0) t;

SET ROLE priv_edge;
SELECT CASE WHEN t.edge
       THEN lives_ok(format('SELECT * FROM nadi.%I', t.tname), format('priv_edge can read nadi.%s', t.tname))
       ELSE throws_ok(format('SELECT * FROM nadi.%I', t.tname), '42501', NULL, format('priv_edge cannot read nadi.%s', t.tname))
       END
FROM (SELECT * FROM tables ORDER BY tname OFFSET 0) t;

SET ROLE priv_cell;
SELECT CASE WHEN t.cell
       THEN lives_ok(format('SELECT * FROM nadi.%I', t.tname), format('priv_cell can read nadi.%s', t.tname))
       ELSE throws_ok(format('SELECT * FROM nadi.%I', t.tname), '42501', NULL, format('priv_cell cannot read nadi.%s', t.tname))
       END
FROM (SELECT * FROM tables ORDER BY tname OFFSET 0) t;

SET ROLE priv_admin;
SELECT CASE WHEN t.admin
       THEN lives_ok(format('SELECT * FROM nadi.%I', t.tname), format('priv_admin can read nadi.%s', t.tname))
       ELSE throws_ok(format('SELECT * FROM nadi.%I', t.tname), '42501', NULL, format('priv_admin cannot read nadi.%s', t.tname))
       END
FROM (SELECT * FROM tables ORDER BY tname OFFSET 0) t;

-- No role writes a table directly, not even the administrator.
RESET ROLE;
CREATE TEMP TABLE write_tests AS
SELECT r.n, r.role, t.tname, w.verb,
       CASE w.verb WHEN 'UPDATE' THEN format(w.stmt, t.tname, k.col, k.col)
                   ELSE format(w.stmt, t.tname) END AS stmt
FROM tables t
JOIN (VALUES ('sessions', 'tenant_id'), ('command_inbox', 'payload'), ('events', 'payload'),
             ('session_leases', 'epoch'), ('cell_hosts', 'capacity'), ('sandbox_hosts', 'capacity'),
             ('audit_log', 'detail'), ('signing_keys', 'kid'), ('signing_key_secrets', 'secret'),
             ('host_bindings', 'role_name'), ('legal_holds', 'reason'),
             ('purged_sessions', 'tenant_id'), ('session_forks', 'workspace'))
          AS k(tname, col) USING (tname),
     writes w,
     (VALUES (1, 'priv_edge'), (2, 'priv_cell'), (3, 'priv_sandbox'), (4, 'priv_admin')) AS r(n, role);
GRANT SELECT ON write_tests TO PUBLIC;

SET ROLE priv_edge;
SELECT throws_ok(w.stmt, '42501', NULL, format('priv_edge cannot %s nadi.%s', w.verb, w.tname))
FROM (SELECT * FROM write_tests WHERE role = 'priv_edge' ORDER BY tname, verb OFFSET 0) w;
SET ROLE priv_cell;
SELECT throws_ok(w.stmt, '42501', NULL, format('priv_cell cannot %s nadi.%s', w.verb, w.tname))
FROM (SELECT * FROM write_tests WHERE role = 'priv_cell' ORDER BY tname, verb OFFSET 0) w;
SET ROLE priv_sandbox;
SELECT throws_ok(w.stmt, '42501', NULL, format('priv_sandbox cannot %s nadi.%s', w.verb, w.tname))
FROM (SELECT * FROM write_tests WHERE role = 'priv_sandbox' ORDER BY tname, verb OFFSET 0) w;
SET ROLE priv_admin;
SELECT throws_ok(w.stmt, '42501', NULL, format('priv_admin cannot %s nadi.%s', w.verb, w.tname))
FROM (SELECT * FROM write_tests WHERE role = 'priv_admin' ORDER BY tname, verb OFFSET 0) w;

-- nor draws command ids itself
SET ROLE priv_edge;
SELECT throws_ok($$SELECT nextval('nadi.command_id_seq')$$, '42501', NULL, 'priv_edge cannot draw from nadi.command_id_seq');
SET ROLE priv_cell;
SELECT throws_ok($$SELECT nextval('nadi.command_id_seq')$$, '42501', NULL, 'priv_cell cannot draw from nadi.command_id_seq');

---------------------------------------------------------------------------
-- Name resolution inside SECURITY DEFINER functions.  Any role may create
-- a temporary domain called "text"; a function that resolved type names
-- through the caller's search_path would run the domain's check as the
-- extension owner (a superuser).  The check below only raises when it runs
-- as a superuser, so it does no harm either way.
---------------------------------------------------------------------------
SET ROLE priv_edge;
CREATE FUNCTION pg_temp.hijack_probe(v pg_catalog.text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        RAISE EXCEPTION 'caller code ran as %', current_user USING ERRCODE = 'P0HJK';
    END IF;
    RETURN true;
END $$;
CREATE DOMAIN pg_temp.text AS pg_catalog.text CHECK (pg_temp.hijack_probe(VALUE));
-- pg_temp still comes first for types; a new search_path makes cached plans
-- be parsed again, as they would be in a new connection.
SET LOCAL search_path = public, pg_catalog;
SELECT is(pg_temp.sqlstate_of(format($$SELECT nadi.session_terminate(%L)$$, :'s_spare')), 'NA002',
          'a pg_temp.text domain does not run inside session_terminate (session_lock)');
SELECT is(pg_temp.sqlstate_of(format($$SELECT nadi.command_enqueue(%L, 'message', '{"text": "x"}')$$, :'s_spare')), 'NA002',
          'a pg_temp.text domain does not run inside command_enqueue (session_lock)');
DROP DOMAIN pg_temp.text;
RESET search_path;

-- The same with an operator, for a caller that owns a schema of its own.
RESET ROLE;
CREATE SCHEMA priv_edge_own AUTHORIZATION priv_edge;
SET ROLE priv_edge;
CREATE FUNCTION priv_edge_own.uuid_eq(a uuid, b uuid) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_temp.hijack_probe('x');
    RETURN pg_catalog.uuid_eq(a, b);
END $$;
CREATE OPERATOR priv_edge_own.= (LEFTARG = uuid, RIGHTARG = uuid, FUNCTION = priv_edge_own.uuid_eq);
SET LOCAL search_path = priv_edge_own, pg_catalog, public;
SELECT is(pg_temp.sqlstate_of(format($$SELECT nadi.session_get(%L)$$, :'s_held')), 'NA002',
          'an = operator in the caller''s schema does not run inside session_get');
SELECT is(pg_temp.sqlstate_of(format($$SELECT count(*) FROM nadi.events_read(%L)$$, :'s_held')), 'NA002',
          'an = operator in the caller''s schema does not run inside events_read');
RESET search_path;
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
