-- Data lifecycle: nadi.purge / purge_batch remove ended sessions in batches,
-- legal holds keep them, nadi.purge_audit / purge_audit_batch age out audit
-- rows and tombstones, a purged session answers NA014, and every argument
-- and privilege is checked.
\pset null '(null)'
SELECT nadi.cell_host_register('ret-cell', 'local', 10, '{"pool": "ret"}') IS NOT NULL AS registered;

-- ended long ago: a terminated session with a history, and a failed one
SELECT session_id AS a FROM nadi.session_create('ret-acme', labels => '{"pool": "ret"}') \gset
SELECT cell_host_id FROM nadi.place(:'a');
SELECT epoch AS ae FROM nadi.lease_acquire(:'a', 'ret-cell') \gset
SELECT command_id AS ac FROM nadi.command_enqueue(:'a', 'message', '{"text": "hi"}') \gset
SELECT status FROM nadi.command_claim(:'a', :ae);
SELECT status FROM nadi.command_complete(:'a', :ac, :ae, '{}');
SELECT state FROM nadi.session_transition(:'a', 'terminating');
SELECT state FROM nadi.session_get(:'a');
SELECT cell_host_id FROM nadi.lease_release(:'a', :ae);
SELECT state FROM nadi.session_get(:'a');
SELECT session_id AS f FROM nadi.session_create('ret-acme') \gset
SELECT state FROM nadi.session_transition(:'f', 'failed', 'test');
-- held: one session, and every session of a tenant
SELECT session_id AS h FROM nadi.session_create('ret-acme') \gset
SELECT state FROM nadi.session_terminate(:'h');
SELECT session_id AS t FROM nadi.session_create('ret-held-co') \gset
SELECT state FROM nadi.session_terminate(:'t');
-- live, with a queued command
SELECT session_id AS l FROM nadi.session_create('ret-acme') \gset
SELECT type FROM nadi.command_enqueue(:'l', 'message', '{"text": "keep"}');

-- holds: checked, audited, set again changes the reason
SELECT try($$SELECT nadi.hold_set(NULL, NULL, 'x')$$);
SELECT try($$SELECT nadi.hold_set('', NULL, 'x')$$);
SELECT try($$SELECT nadi.hold_set('ret-acme', NULL, NULL)$$);
SELECT try($$SELECT nadi.hold_set('ret-acme', NULL, '   ')$$);
SELECT try($$SELECT nadi.hold_set('ret-acme', NULL, repeat('x', 1025))$$);
SELECT try($$SELECT nadi.hold_set('ret-acme', '00000000-0000-0000-0000-000000000001', 'x')$$);
SELECT try(format($$SELECT nadi.hold_set('ret-other', %L, 'x')$$, :'h'));
SELECT tenant_id, session_id = :'h' AS on_session, reason FROM nadi.hold_set('ret-acme', :'h', 'matter 1');
SELECT tenant_id, session_id = :'h' AS on_session, reason FROM nadi.hold_set('ret-acme', :'h', 'matter 2');
SELECT tenant_id, session_id, reason FROM nadi.hold_set('ret-held-co', NULL, 'matter 3');
SELECT tenant_id, session_id IS NULL AS whole_tenant, reason FROM nadi.legal_holds ORDER BY hold_id;
SELECT try($$SELECT nadi.hold_release(NULL, NULL)$$);
SELECT nadi.hold_release('ret-acme', NULL) AS released_nothing;

-- arguments
SELECT try($$SELECT nadi.purge_batch(NULL)$$);
SELECT try($$SELECT nadi.purge_batch('-1 second')$$);
SELECT try($$SELECT nadi.purge_batch('1 day', 0)$$);
SELECT try($$SELECT nadi.purge_batch('1 day', 10001)$$);
SELECT try($$SELECT nadi.purge_batch('1 day', NULL)$$);
SELECT try($$CALL nadi.purge('1 day', max_batches => 0)$$);
SELECT try($$CALL nadi.purge('1 day', time_budget => '0')$$);
SELECT try($$CALL nadi.purge('1 day', pause => '-1 second')$$);
SELECT try($$CALL nadi.purge_audit('1 day', pause => '2 minutes')$$);
SELECT try($$SELECT nadi.purge_audit_batch('-1 day')$$);
SELECT try($$CALL nadi.purge_audit('1 day', batch_size => 0)$$);
-- CALL commits between batches: not inside a transaction block
BEGIN;
SELECT try($$CALL nadi.purge('1 day')$$);
ROLLBACK;

-- privileges: administrators only
SET ROLE nadi_edge;
SELECT try($$SELECT nadi.purge_batch('1 day')$$);
SELECT try($$CALL nadi.purge('1 day')$$);
SELECT try($$SELECT nadi.purge_audit_batch('1 day')$$);
SELECT try($$SELECT nadi.hold_set('ret-acme', NULL, 'x')$$);
SELECT try($$SELECT nadi.hold_release('ret-acme', NULL)$$);
SELECT try($$SELECT * FROM nadi.legal_holds$$);
RESET ROLE;
SET ROLE nadi_cell;
SELECT try($$SELECT nadi.purge_batch('1 day')$$);
RESET ROLE;

-- nothing ended a day ago yet
SELECT * FROM nadi.purge_batch('1 day');
-- three days later (the sessions of this file only: others' tests ended
-- now): one batch of one, then the rest; held and live stay
UPDATE nadi.sessions SET updated_at = updated_at - interval '3 days', created_at = created_at - interval '3 days'
WHERE tenant_id LIKE 'ret-%';
SELECT * FROM nadi.purge_batch('2 days', 1);
SET ROLE nadi_admin;
CALL nadi.purge('2 days', batch_size => 1, pause => '1 millisecond');
RESET ROLE;
SELECT * FROM nadi.purge_batch('2 days');
SELECT session_id = :'h' AS h, session_id = :'t' AS t, session_id = :'l' AS l, state
FROM nadi.sessions WHERE tenant_id LIKE 'ret-%' ORDER BY state, tenant_id;
SELECT count(*) AS events_left FROM nadi.events WHERE session_id IN (:'a', :'f');
SELECT count(*) AS commands_left FROM nadi.command_inbox WHERE session_id IN (:'a', :'f');
SELECT count(*) AS leases_left FROM nadi.session_leases WHERE session_id IN (:'a', :'f');
SELECT session_id = :'a' AS a, tenant_id, state, last_seq, ended_at <= purged_at AS ordered
FROM nadi.purged_sessions WHERE tenant_id LIKE 'ret-%' ORDER BY state;
SELECT count(*) AS live_commands FROM nadi.command_inbox WHERE session_id = :'l';
SELECT detail - 'session_ids' AS detail, jsonb_array_length(detail->'session_ids') AS ids
FROM nadi.audit_log WHERE action = 'retention.purge' ORDER BY audit_id;

-- a purged session answers so, wherever it is named
SELECT try(format($$SELECT nadi.session_get(%L)$$, :'a'));
SELECT try(format($$SELECT nadi.events_read(%L)$$, :'a'));
SELECT try(format($$SELECT nadi.command_enqueue(%L, 'message', '{"text": "x"}')$$, :'a'));
SELECT try(format($$SELECT nadi.command_list(%L)$$, :'a'));
SELECT try(format($$SELECT nadi.session_terminate(%L)$$, :'a'));
SELECT try(format($$SELECT nadi.hold_set('ret-acme', %L, 'too late')$$, :'a'));
-- ... but only to its own tenant: another tenant's token sees "not found"
SELECT nadi.key_create() IS NOT NULL AS key;
BEGIN;
SELECT nadi.authenticate(nadi.token_mint('ret-elsewhere', 'eve')) IS NOT NULL AS authenticated;
SELECT try(format($$SELECT nadi.session_get(%L)$$, :'a'));
ROLLBACK;
BEGIN;
SELECT nadi.authenticate(nadi.token_mint('ret-acme', 'alice')) IS NOT NULL AS authenticated;
SELECT try(format($$SELECT nadi.session_get(%L)$$, :'a'));
SELECT count(*) AS own_tombstones FROM nadi.purged_sessions;
ROLLBACK;

-- released holds: the next purge takes what they kept
SELECT nadi.hold_release('ret-acme', :'h', 'matter closed') AS released;
SELECT * FROM nadi.purge_batch('2 days');
SELECT session_id = :'t' AS t FROM nadi.sessions WHERE tenant_id LIKE 'ret-%' AND state = 'terminated';
SELECT action, tenant_id, session_id = :'h' AS h, mask(detail::text) AS detail
FROM nadi.audit_log WHERE action LIKE 'hold.%' OR action LIKE 'retention.%' ORDER BY audit_id;

-- audit retention: rows of a held tenant stay, tombstones go with the rest
-- (this file's rows and tombstones only are made old)
UPDATE nadi.audit_log SET at = at - interval '3 days'
WHERE tenant_id LIKE 'ret-%' OR action LIKE 'retention.%';
UPDATE nadi.purged_sessions SET purged_at = purged_at - interval '3 days'
WHERE tenant_id LIKE 'ret-%';
SELECT tenant_id, action, count(*) FROM nadi.audit_log
WHERE tenant_id LIKE 'ret-%' GROUP BY 1, 2 ORDER BY 1, 2;
SELECT audit_rows > 0 AS removed, tombstones FROM nadi.purge_audit_batch('2 days', 10000);
SELECT tenant_id, action, count(*) FROM nadi.audit_log
WHERE tenant_id LIKE 'ret-%' OR action LIKE 'retention.%' GROUP BY 1, 2 ORDER BY 1, 2;
SELECT count(*) AS tombstones FROM nadi.purged_sessions WHERE tenant_id LIKE 'ret-%';
SET ROLE nadi_admin;
CALL nadi.purge_audit('2 days');
RESET ROLE;
SELECT nadi.hold_release('ret-held-co', NULL) AS released;
SELECT nadi.hold_release('ret-held-co', NULL) AS released_again;
SELECT count(*) AS holds FROM nadi.legal_holds;
