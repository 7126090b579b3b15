-- Host bindings, with real logins (SET SESSION AUTHORIZATION): a host's
-- login acts only for the host ids an administrator bound to it.  Host A's
-- login cannot register, heartbeat or re-point host B, cannot declare the
-- placement label "tenant", cannot take B's sessions, cannot write as B's
-- lease even with the right epoch (every cell login can read it), and
-- cannot mint tokens for B's sessions; B's login and an administrator can.
BEGIN;
SELECT plan(72);

CREATE ROLE hosts_cell_a LOGIN IN ROLE nadi_cell;
CREATE ROLE hosts_cell_b LOGIN IN ROLE nadi_cell;
CREATE ROLE hosts_group NOLOGIN;
CREATE ROLE hosts_cell_c LOGIN IN ROLE nadi_cell, hosts_group;
CREATE ROLE hosts_sbx_a LOGIN IN ROLE nadi_sandbox_host;
CREATE ROLE hosts_sbx_b LOGIN IN ROLE nadi_sandbox_host;
CREATE ROLE hosts_admin LOGIN IN ROLE nadi_admin;


---------------------------------------------------------------------------
-- Fixture, as superuser
---------------------------------------------------------------------------
SELECT nadi.key_create() IS NOT NULL AS fixture_key \gset
SELECT is(
    (SELECT count(*)::int FROM (
        SELECT nadi.host_bind('cell', 'hcell-a', 'hosts_cell_a')
        UNION ALL SELECT nadi.host_bind('cell', 'hcell-b', 'hosts_cell_b')
        UNION ALL SELECT nadi.host_bind('cell', 'hcell-c', 'hosts_group')
        UNION ALL SELECT nadi.host_bind('sandbox', 'hsbx-a', 'hosts_sbx_a')
        UNION ALL SELECT nadi.host_bind('sandbox', 'hsbx-b', 'hosts_sbx_b')) b),
    5, 'the administrator binds five host ids');
SELECT host_id FROM nadi.cell_host_register('hcell-b', 'http://cell-b', 10, '{"hosts": "b"}') \gset
SELECT host_id FROM nadi.sandbox_host_register('hsbx-b', 'http://sbx-b', 10, '{"hosts": "b"}') \gset
SELECT session_id AS s FROM nadi.session_create('acme', labels => '{"hosts": "b"}') \gset
SELECT cell_host_id AS placed_on FROM nadi.place(:'s') \gset
SELECT is(:'placed_on'::text, 'hcell-b', 'fixture: the session is placed on cell host hcell-b');
SELECT session_id AS s_idle FROM nadi.session_create('acme') \gset

---------------------------------------------------------------------------
-- Sandbox hosts
---------------------------------------------------------------------------
SET SESSION AUTHORIZATION hosts_sbx_b;
SELECT lives_ok($$SELECT nadi.sandbox_host_register('hsbx-b', 'http://sbx-b', 10, '{"hosts": "b"}')$$,
                'B''s login registers B');
SELECT lives_ok($$SELECT nadi.sandbox_host_heartbeat('hsbx-b')$$, 'B''s login heartbeats B');
-- cells send requests with a bearer token to a sandbox host's address: a base URL only
SELECT throws_ok($$SELECT nadi.sandbox_host_register('hsbx-b', 'unix:/run/docker.sock', 10, '{"hosts": "b"}')$$,
                 '22023', 'invalid host address "unix:/run/docker.sock"',
                 'B''s login cannot point cells at a local socket');
SELECT throws_ok($$SELECT nadi.sandbox_host_register('hsbx-b', 'http://10.0.0.5/admin?x=', 10, '{"hosts": "b"}')$$,
                 '22023', NULL, 'nor at a path and query its own path would be appended to');
SELECT throws_ok($$SELECT nadi.sandbox_host_register('hsbx-b', 'http://user:pw@sbx-b', 10, '{"hosts": "b"}')$$,
                 '22023', NULL, 'nor give user info');

SET SESSION AUTHORIZATION hosts_sbx_a;
SELECT throws_ok($$SELECT nadi.sandbox_host_register('hsbx-b', 'http://attacker', 10)$$, '42501',
                 'role "hosts_sbx_a" may not register sandbox host "hsbx-b"',
                 'A''s login cannot re-point B');
SELECT throws_ok($$SELECT nadi.sandbox_host_heartbeat('hsbx-b')$$, '42501', NULL,
                 'A''s login cannot heartbeat B');
SELECT throws_ok($$SELECT nadi.sandbox_host_register('hsbx-new', 'http://attacker')$$, '42501', NULL,
                 'A''s login cannot register a host nobody bound');
SELECT throws_ok($$SELECT nadi.sandbox_host_register('hsbx-a', 'http://sbx-a', 10, '{"tenant": "acme"}')$$,
                 '42501', 'only an administrator may set the label "tenant" of a sandbox host',
                 'A''s login cannot declare itself a tenant''s host');
SELECT throws_ok($$SELECT nadi.host_set_labels('sandbox', 'hsbx-a', '{"tenant": "acme"}')$$, '42501', NULL,
                 'A''s login cannot set labels through host_set_labels');
SELECT throws_ok($$SELECT nadi.host_bind('sandbox', 'hsbx-b', 'hosts_sbx_a')$$, '42501', NULL,
                 'A''s login cannot bind itself to B');
SELECT lives_ok($$SELECT nadi.sandbox_host_register('hsbx-a', 'http://sbx-a', 10, '{"pool": "x"}')$$,
                'A''s login registers its own host A');

RESET SESSION AUTHORIZATION;
SELECT is((SELECT address FROM nadi.sandbox_hosts WHERE host_id = 'hsbx-b'), 'http://sbx-b',
          'B still points where B said');
SELECT is((SELECT count(*)::int FROM nadi.sandbox_hosts WHERE host_id = 'hsbx-new'), 0,
          'no unbound host was registered');
SELECT is((SELECT labels FROM nadi.sandbox_hosts WHERE host_id = 'hsbx-a'), '{"pool": "x"}'::jsonb,
          'A carries only the labels it may declare');

-- the tenant label is the administrator's, and survives the host's own re-registration
SET SESSION AUTHORIZATION hosts_admin;
SELECT is(nadi.host_set_labels('sandbox', 'hsbx-a', '{"pool": "x", "tenant": "acme"}'),
          '{"pool": "x", "tenant": "acme"}'::jsonb, 'an administrator sets A''s tenant label');
SELECT throws_ok($$SELECT nadi.host_set_labels('sandbox', 'hsbx-nope', '{}')$$, 'NA009', NULL,
                 'labels of an unregistered host are refused');
SELECT throws_ok($$SELECT nadi.host_set_labels('disk', 'hsbx-a', '{}')$$, '22023', NULL,
                 'an unknown host kind is refused');
SELECT throws_ok($$SELECT nadi.host_bind('cell', 'bad/id', 'hosts_cell_a')$$, '22023', NULL,
                 'an invalid host id cannot be bound');
SELECT throws_ok($$SELECT nadi.host_bind('cell', 'hcell-x', 'hosts_no_such_role')$$, '42704', NULL,
                 'a host cannot be bound to a role that does not exist');
SET SESSION AUTHORIZATION hosts_sbx_a;
SELECT lives_ok($$SELECT nadi.sandbox_host_register('hsbx-a', 'http://sbx-a', 10, '{"pool": "y"}')$$,
                'A re-registers with new labels of its own');
RESET SESSION AUTHORIZATION;
SELECT is((SELECT labels FROM nadi.sandbox_hosts WHERE host_id = 'hsbx-a'),
          '{"pool": "y", "tenant": "acme"}'::jsonb,
          'the administrator''s tenant label survives the host''s re-registration');

---------------------------------------------------------------------------
-- Cell hosts: registration, leases, fenced writes, tokens
---------------------------------------------------------------------------
SET SESSION AUTHORIZATION hosts_cell_a;
SELECT lives_ok($$SELECT nadi.cell_host_register('hcell-a', 'http://cell-a', 10)$$,
                'A''s cell login registers A');
SELECT throws_ok($$SELECT nadi.cell_host_register('hcell-b', 'http://attacker', 10)$$, '42501',
                 'role "hosts_cell_a" may not register cell host "hcell-b"',
                 'A''s cell login cannot re-point B');
SELECT throws_ok($$SELECT nadi.cell_host_heartbeat('hcell-b')$$, '42501', NULL,
                 'A''s cell login cannot heartbeat B');
SELECT throws_ok($$SELECT nadi.cell_host_register('hcell-a', 'http://cell-a', 10, '{"tenant": "acme"}')$$,
                 '42501', NULL, 'A''s cell login cannot declare a tenant label');
SELECT throws_ok(format($$SELECT nadi.lease_acquire(%L, 'hcell-b')$$, :'s'), '42501',
                 'role "hosts_cell_a" may not acquire leases for cell host "hcell-b"',
                 'A''s cell login cannot take the session placed on B');

SET SESSION AUTHORIZATION hosts_cell_b;
SELECT lives_ok($$SELECT nadi.cell_host_heartbeat('hcell-b')$$, 'B''s cell login heartbeats B');
SELECT epoch AS e FROM nadi.lease_acquire(:'s', 'hcell-b') \gset
SELECT is(:e::bigint, 1::bigint, 'B''s cell login takes the session placed on B (epoch 1)');
SELECT lives_ok(format($$SELECT nadi.event_append(%L, %s, 'agent.note', '{"by": "b"}')$$, :'s', :e),
                'B writes as its own lease');
RESET SESSION AUTHORIZATION;
SELECT command_id AS c FROM nadi.command_enqueue(:'s', 'tool', '{"name": "echo"}') \gset
SELECT last_seq AS seq_before FROM nadi.sessions WHERE session_id = :'s' \gset

SET SESSION AUTHORIZATION hosts_cell_a;
-- every cell login can read the current epoch ...
SELECT is((SELECT epoch FROM nadi.session_leases WHERE session_id = :'s'), :e::bigint,
          'A''s cell login can read B''s epoch');
-- ... but writing as B with it is refused
SELECT throws_ok(format($$SELECT nadi.event_append(%L, %s, 'agent.note', '{"by": "a"}')$$, :'s', :e),
                 '42501', 'role "hosts_cell_a" may not write as cell host "hcell-b"',
                 'A cannot append an event as B''s lease, with the right epoch');
SELECT throws_ok(format($$SELECT nadi.command_claim(%L, %s)$$, :'s', :e), '42501', NULL,
                 'A cannot claim B''s command');
SELECT throws_ok(format($$SELECT nadi.lease_renew(%L, %s)$$, :'s', :e), '42501', NULL,
                 'A cannot renew B''s lease');
SELECT throws_ok(format($$SELECT nadi.lease_release(%L, %s)$$, :'s', :e), '42501', NULL,
                 'A cannot release B''s lease');
SELECT throws_ok(format($$SELECT * FROM nadi.command_claim_many('hcell-b', ARRAY[%L]::uuid[], ARRAY[%s]::bigint[])$$,
                        :'s', :e), '42501', NULL, 'A cannot claim a batch as B');
SELECT throws_ok(format($$SELECT * FROM nadi.lease_renew_many('hcell-b', ARRAY[%L]::uuid[], ARRAY[%s]::bigint[])$$,
                        :'s', :e), '42501', NULL, 'A cannot renew a batch as B');
SELECT throws_ok(format($$SELECT * FROM nadi.command_complete_many('hcell-b', ARRAY[%L]::uuid[], ARRAY[%s]::bigint[], ARRAY[%s]::bigint[])$$,
                        :'s', :e, :c), '42501', NULL, 'A cannot complete a batch as B');
SELECT is((SELECT status FROM nadi.command_claim_many('hcell-a', ARRAY[:'s']::uuid[], ARRAY[:e]::bigint[])),
          'fenced', 'A naming B''s session and epoch under its own host id is told it is fenced');
SELECT is((SELECT ok FROM nadi.lease_renew_many('hcell-a', ARRAY[:'s']::uuid[], ARRAY[:e]::bigint[])),
          false, 'and does not renew B''s lease');
SELECT throws_ok(format($$SELECT nadi.sandbox_token(%L, 'sbx1')$$, :'s'), '42501',
                 'role "hosts_cell_a" may not mint tokens as cell host "hcell-b"',
                 'A cannot mint a sandbox token for B''s session');
SELECT throws_ok(format($$SELECT nadi.model_token(%L)$$, :'s'), '42501', NULL,
                 'A cannot mint a model token for B''s session');
SELECT throws_ok(format($$SELECT nadi.model_token(%L)$$, :'s_idle'), '42501',
                 format('role "hosts_cell_a" may not mint tokens for session %s', :'s_idle'),
                 'a cell login cannot mint tokens for a session no cell holds');

RESET SESSION AUTHORIZATION;
SELECT is((SELECT last_seq FROM nadi.sessions WHERE session_id = :'s'), :seq_before::bigint,
          'A''s attempts wrote no event');
SELECT is((SELECT cell_host_id || ' ' || epoch FROM nadi.session_leases WHERE session_id = :'s'),
          'hcell-b ' || :e, 'the lease is still B''s, at the same epoch');
SELECT is((SELECT status::text FROM nadi.command_inbox WHERE session_id = :'s' AND command_id = :c),
          'queued', 'B''s command is still queued');
SELECT is((SELECT address FROM nadi.cell_hosts WHERE host_id = 'hcell-b'), 'http://cell-b',
          'B''s address is unchanged');

-- B itself, through its lease
SET SESSION AUTHORIZATION hosts_cell_b;
SELECT is((SELECT command_id FROM nadi.command_claim(:'s', :e)), :c::bigint, 'B claims its command');
SELECT is((SELECT status::text FROM nadi.command_complete(:'s', :c, :e, '{}')), 'completed',
          'B completes it');
SELECT ok(nadi.sandbox_token(:'s', 'sbx1') IS NOT NULL, 'B mints a sandbox token for its session');
SELECT ok(nadi.model_token(:'s') IS NOT NULL, 'B mints a model token for its session');

-- an administrator may act for any host
SET SESSION AUTHORIZATION hosts_admin;
SELECT lives_ok(format($$SELECT nadi.event_append(%L, %s, 'agent.note', '{"by": "admin"}')$$, :'s', :e),
                'an administrator may write as B''s lease');
SELECT ok(nadi.model_token(:'s') IS NOT NULL, 'an administrator mints a model token for B''s session');
SELECT ok(nadi.model_token(:'s_idle') IS NOT NULL, 'and for a session no cell holds');
SELECT lives_ok($$SELECT nadi.cell_host_heartbeat('hcell-b')$$, 'an administrator may heartbeat B');

-- a binding to a group role binds its members
SET SESSION AUTHORIZATION hosts_cell_c;
SELECT lives_ok($$SELECT nadi.cell_host_register('hcell-c', 'http://cell-c', 10)$$,
                'a member of the bound group role registers its host');
SELECT throws_ok($$SELECT nadi.cell_host_register('hcell-a', 'http://attacker', 10)$$, '42501', NULL,
                 'but not another');

-- unbinding takes effect at the next call
SET SESSION AUTHORIZATION hosts_admin;
SELECT ok(nadi.host_unbind('cell', 'hcell-b'), 'an administrator unbinds B');
SELECT ok(NOT nadi.host_unbind('cell', 'hcell-b'), 'unbinding twice finds nothing');
SET SESSION AUTHORIZATION hosts_cell_b;
SELECT throws_ok($$SELECT nadi.cell_host_heartbeat('hcell-b')$$, '42501',
                 'role "hosts_cell_b" may not send heartbeats for cell host "hcell-b"',
                 'an unbound login can no longer heartbeat');
SELECT throws_ok(format($$SELECT nadi.lease_renew(%L, %s)$$, :'s', :e), '42501', NULL,
                 'nor renew its lease');
-- rebinding to another login moves the host
SET SESSION AUTHORIZATION hosts_admin;
SELECT is((nadi.host_bind('cell', 'hcell-b', 'hosts_cell_a')).role_name, 'hosts_cell_a'::name,
          'an administrator binds B to A''s login');
SET SESSION AUTHORIZATION hosts_cell_a;
SELECT lives_ok(format($$SELECT nadi.lease_renew(%L, %s)$$, :'s', :e),
                'now A''s login may renew B''s lease');
RESET SESSION AUTHORIZATION;

-- an expired lease is no way around placement: a takeover by another host
-- needs a host placement could have chosen (the session's labels, no other
-- tenant's reservation)
SET nadi.clock_offset = '2h';
SET SESSION AUTHORIZATION hosts_cell_c;
SELECT throws_ok(format($$SELECT nadi.lease_acquire(%L, 'hcell-c')$$, :'s'), 'NA008',
                 format('cell host "hcell-c" may not take over session %s', :'s'),
                 'a bound host without the session''s labels cannot take over its expired lease');
SET SESSION AUTHORIZATION hosts_cell_a;
SELECT is((SELECT cell_host_id FROM nadi.lease_acquire(:'s', 'hcell-b')), 'hcell-b',
          'the host that held it takes it back');
RESET SESSION AUTHORIZATION;
RESET nadi.clock_offset;

---------------------------------------------------------------------------
-- Who can see the bindings, and the audit trail
---------------------------------------------------------------------------
SET SESSION AUTHORIZATION hosts_cell_a;
SELECT throws_ok($$SELECT * FROM nadi.host_bindings$$, '42501', NULL, 'a cell login cannot read the bindings');
SET SESSION AUTHORIZATION hosts_admin;
SELECT is((SELECT count(*)::int FROM nadi.host_bindings WHERE host_id LIKE 'h%'), 5,
          'an administrator reads the bindings');
SELECT is((SELECT count(*)::int FROM nadi.audit_log WHERE action = 'host.bind'
           AND detail->>'host_id' LIKE 'h%'), 6, 'every bind is audited');
SELECT is((SELECT detail FROM nadi.audit_log WHERE action = 'host.unbind' ORDER BY audit_id DESC LIMIT 1),
          '{"kind": "cell", "role": "hosts_cell_b", "host_id": "hcell-b"}'::jsonb,
          'the unbind is audited with the role it removed');
SELECT is((SELECT actor || ' ' || (detail->'labels'->>'tenant') FROM nadi.audit_log
           WHERE action = 'sandbox_host.labels' ORDER BY audit_id DESC LIMIT 1),
          'hosts_admin acme', 'the label change is audited with its actor');
RESET SESSION AUTHORIZATION;

SELECT * FROM finish();
ROLLBACK;
