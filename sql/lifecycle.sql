-- Lifecycle corners: an approval brings a suspended session back, operator
-- termination, the token context and what clears it.
\pset null '(null)'
SELECT nadi.cell_host_register('life-cell', 'local', 10, '{"pool": "life"}') IS NOT NULL AS registered;

-- a tool call waiting for permission survives suspension; the approval brings
-- the session back to pending so the broker places it again
SELECT session_id AS s FROM nadi.session_create('acme', labels => '{"pool": "life"}') \gset
SELECT cell_host_id FROM nadi.place(:'s');
SELECT epoch AS e FROM nadi.lease_acquire(:'s', 'life-cell') \gset
SELECT command_id AS c FROM nadi.command_enqueue(:'s', 'tool', '{"name": "rm"}') \gset
SELECT status FROM nadi.command_claim(:'s', :e);
SELECT status FROM nadi.command_await_permission(:'s', :c, :e, '{"tool": "rm"}');
SELECT cell_host_id FROM nadi.lease_release(:'s', :e);
SELECT state FROM nadi.session_get(:'s');
SELECT type, status FROM nadi.command_enqueue(:'s', 'approve', '{}');
SELECT state FROM nadi.session_get(:'s');
SELECT status FROM nadi.command_get(:'s', :c);
-- a cancel of nothing new does not wake a suspended session
SELECT cell_host_id FROM nadi.place(:'s');
SELECT epoch AS e FROM nadi.lease_acquire(:'s', 'life-cell') \gset
SELECT status FROM nadi.command_claim(:'s', :e);
SELECT status FROM nadi.command_complete(:'s', :c, :e, '{}');
SELECT cell_host_id FROM nadi.lease_release(:'s', :e);
SELECT state FROM nadi.session_get(:'s');
SELECT try(format($$SELECT nadi.command_enqueue(%L, 'cancel', '{}')$$, :'s'));
SELECT state FROM nadi.session_get(:'s');

-- operator termination behaves as nadi.session_terminate: a session no cell
-- holds ends at once, its queued commands cancelled
SELECT command_id AS q FROM nadi.command_enqueue(:'s', 'message', '{"text": "never run"}') \gset
SELECT state FROM nadi.session_transition(:'s', 'terminating', 'operator');
SELECT status FROM nadi.command_get(:'s', :q);
-- a held session waits for its cell, and its cell can claim nothing more
SELECT session_id AS h FROM nadi.session_create('acme', labels => '{"pool": "life"}') \gset
SELECT cell_host_id FROM nadi.place(:'h');
SELECT epoch AS he FROM nadi.lease_acquire(:'h', 'life-cell') \gset
SELECT command_id AS hq FROM nadi.command_enqueue(:'h', 'message', '{"text": "x"}') \gset
SELECT state FROM nadi.session_transition(:'h', 'terminating');
SELECT count(*) AS claimable FROM nadi.command_claim(:'h', :he);
SELECT cell_host_id FROM nadi.lease_release(:'h', :he);
SELECT state FROM nadi.session_get(:'h');

-- the token context: transaction-scoped by default, gone with a rolled-back
-- savepoint, and connection-scoped ones cleared by what poolers run
SELECT nadi.key_create() IS NOT NULL AS key;
SELECT nadi.token_mint('acme', 'alice', 'tenant', '1 hour') AS tok \gset
BEGIN;
SAVEPOINT a;
SELECT nadi.authenticate(:'tok')->>'tenant' AS tenant;
ROLLBACK TO a;
SELECT nadi.current_tenant() AS after_rollback_to_savepoint;
-- set in a savepoint that is released, it belongs to the transaction and
-- survives a later savepoint's rollback
SAVEPOINT b;
SELECT nadi.authenticate(:'tok')->>'tenant' AS tenant;
RELEASE b;
SAVEPOINT c;
SELECT 1 / 0;
ROLLBACK TO c;
SELECT nadi.current_tenant() AS after_release_then_rollback;
COMMIT;
SELECT nadi.authenticate(:'tok', false)->>'tenant' AS tenant;
SELECT nadi.current_tenant() AS connection_scoped;
DISCARD ALL;
SELECT nadi.current_tenant() AS after_discard_all;
SELECT nadi.authenticate(:'tok', false)->>'tenant' AS tenant;
RESET SESSION AUTHORIZATION;
SELECT nadi.current_tenant() AS after_reset_session_authorization;

-- administrators see audit rows that belong to no tenant (hosts, keys)
CREATE ROLE life_admin NOLOGIN IN ROLE nadi_admin;
SET ROLE life_admin;
SELECT count(*) > 0 AS host_audit_visible FROM nadi.audit_log WHERE tenant_id IS NULL;
RESET ROLE;
DROP ROLE life_admin;

-- a completion can carry the cell's last events: appended in order, fenced,
-- under the same lock; bad ones refuse the whole call
SELECT session_id AS r FROM nadi.session_create('acme', labels => '{"pool": "life"}') \gset
SELECT cell_host_id FROM nadi.place(:'r');
SELECT epoch AS re FROM nadi.lease_acquire(:'r', 'life-cell') \gset
SELECT command_id AS rc FROM nadi.command_enqueue(:'r', 'message', '{"text": "hi"}') \gset
SELECT status FROM nadi.command_claim(:'r', :re);
SELECT try(format($$SELECT nadi.command_complete(%L, %s, %s, '{}', '{"kind": "model.reply"}')$$, :'r', :rc, :re));
SELECT try(format($$SELECT nadi.command_complete(%L, %s, %s, '{}', '[{"kind": "command.completed"}]')$$, :'r', :rc, :re));
SELECT try(format($$SELECT nadi.command_complete(%L, %s, %s, '{}', '[{"payload": {}}]')$$, :'r', :rc, :re));
SELECT status FROM nadi.command_get(:'r', :rc);
SELECT status FROM nadi.command_complete(:'r', :rc, :re, '{"text": "You said: hi"}',
    '[{"kind": "model.reply", "payload": {"text": "You said: hi"}}, {"kind": "cell.note"}]');
SELECT seq, kind, command_id = :rc AS cmd, epoch = :re AS fenced, payload FROM nadi.events
WHERE session_id = :'r' AND seq > 6 ORDER BY seq;
SELECT nadi.session_replay(:'r')->'messages' AS conversation;
