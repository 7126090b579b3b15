-- Hosts and placement: registration, heartbeats, capacity, labels, tenant
-- affinity, dead hosts, sandbox host stickiness.
\pset null '(null)'
SELECT host_id, address, capacity, labels, state FROM nadi.cell_host_register('p-small', '10.0.0.1:7000', 1, '{"pool": "p"}');
SELECT host_id, capacity, state FROM nadi.cell_host_register('p-big', '10.0.0.2:7000', 3, '{"pool": "p"}');
SELECT host_id, state FROM nadi.cell_host_register('p-acme', NULL, 5, '{"pool": "p", "tenant": "acme"}');
SELECT host_id, state FROM nadi.sandbox_host_register('p-sbx-1', '10.0.1.1:7100', 10, '{"pool": "p"}');
SELECT host_id, state FROM nadi.sandbox_host_register('p-sbx-2', '10.0.1.2:7100', 10, '{"pool": "p"}');
-- registering again updates in place
SELECT host_id, capacity FROM nadi.cell_host_register('p-small', '10.0.0.1:7000', 1, '{"pool": "p"}');

-- tenant affinity: acme prefers its own host; others never land there
SELECT session_id AS a1 FROM nadi.session_create('acme', labels => '{"pool": "p"}') \gset
SELECT cell_host_id, sandbox_host_id FROM nadi.place(:'a1');
SELECT session_id AS g1 FROM nadi.session_create('globex', labels => '{"pool": "p"}') \gset
SELECT session_id AS g2 FROM nadi.session_create('globex', labels => '{"pool": "p"}') \gset
SELECT session_id AS g3 FROM nadi.session_create('globex', labels => '{"pool": "p"}') \gset
SELECT session_id AS g4 FROM nadi.session_create('globex', labels => '{"pool": "p"}') \gset
SELECT session_id AS g5 FROM nadi.session_create('globex', labels => '{"pool": "p"}') \gset
-- least loaded first, within capacity: p-small holds 1, p-big 3
SELECT cell_host_id, sandbox_host_id FROM nadi.place(:'g1');
SELECT cell_host_id, sandbox_host_id FROM nadi.place(:'g2');
SELECT cell_host_id FROM nadi.place(:'g3');
SELECT cell_host_id FROM nadi.place(:'g4');
SELECT try(format('SELECT nadi.place(%L)', :'g5'));
SELECT state FROM nadi.session_get(:'g5');
-- labels nobody has
SELECT session_id AS x FROM nadi.session_create('globex', labels => '{"pool": "p", "gpu": "h100"}') \gset
SELECT try(format('SELECT nadi.place(%L)', :'x'));
-- only pending sessions are placed
SELECT try(format('SELECT nadi.place(%L)', :'g1'));

-- the batch placer skips what cannot be placed and reports what it placed
SELECT nadi.cell_host_register('p-big', '10.0.0.2:7000', 4, '{"pool": "p"}') IS NOT NULL AS grown;
SELECT nadi.place_pending(100) AS placed;
SELECT cell_host_id FROM nadi.session_get(:'g5');
SELECT state FROM nadi.session_get(:'x');
SELECT count(*) FROM nadi.cell_sessions('p-big');

-- a host that stops heartbeating dies; sessions placed (not leased) there go back to pending
SET nadi.clock_offset = '20s';
SELECT count(*) FROM (SELECT nadi.cell_host_heartbeat(h) FROM unnest(ARRAY['p-small', 'p-acme']) h) x;
SELECT count(*) FROM (SELECT nadi.sandbox_host_heartbeat(h) FROM unnest(ARRAY['p-sbx-1', 'p-sbx-2']) h) x;
SELECT hosts_dead > 0 AS some_dead, sessions_replaced FROM nadi.reap();
SELECT host_id, state FROM nadi.cell_hosts WHERE host_id LIKE 'p-%' ORDER BY host_id;
SELECT count(*) FILTER (WHERE state = 'pending') AS pending FROM nadi.sessions WHERE tenant_id = 'globex' AND labels = '{"pool": "p"}';
-- re-placement keeps the sandbox host (the session's files live there)
SELECT sandbox_host_id AS g1_sbx FROM nadi.sessions WHERE session_id = :'g1' \gset
SELECT state, cell_host_id, sandbox_host_id = :'g1_sbx' AS same_sandbox FROM nadi.session_get(:'g1');
SELECT nadi.cell_host_register('p-big', '10.0.0.2:7000', 4, '{"pool": "p"}') IS NOT NULL AS back;
SELECT cell_host_id, sandbox_host_id = :'g1_sbx' AS same_sandbox FROM nadi.place(:'g1');
-- a heartbeat brings a dead host back
SELECT nadi.cell_host_set_state('p-small', 'dead') IS NOT NULL;
SELECT state FROM nadi.cell_host_heartbeat('p-small');
-- draining: no new placements
SELECT state FROM nadi.cell_host_set_state('p-acme', 'draining');
SELECT session_id AS a2 FROM nadi.session_create('acme', labels => '{"pool": "p"}') \gset
SELECT cell_host_id FROM nadi.place(:'a2');

-- a host that has not heartbeated for half a lease TTL comes after one that
-- has, though it is live and less loaded (a host that just died would get
-- its sessions back until marked dead)
SELECT current_setting('nadi.clock_offset') AS prev_offset \gset
SET nadi.clock_offset = '-7s';
SELECT host_id AS stale_registered FROM nadi.cell_host_register('q-a-stale', NULL, 4, '{"pool": "q"}');
SET nadi.clock_offset = '0';
SELECT host_id AS fresh_registered FROM nadi.cell_host_register('q-b-fresh', NULL, 4, '{"pool": "q"}');
SELECT session_id AS q1 FROM nadi.session_create('acme', labels => '{"pool": "q"}') \gset
SELECT cell_host_id FROM nadi.place(:'q1');
SELECT count(*) AS q1_gone FROM nadi.session_terminate(:'q1');
SELECT count(nadi.cell_host_set_state(h, 'dead')) AS q_hosts_gone FROM unnest(ARRAY['q-a-stale', 'q-b-fresh']) h;
SET nadi.clock_offset = :'prev_offset';

-- bad input
SELECT try($$SELECT nadi.cell_host_register(NULL)$$);
SELECT try($$SELECT nadi.cell_host_register('bad host!')$$);
SELECT try($$SELECT nadi.cell_host_register('-leading-dash')$$);
SELECT try(format('SELECT nadi.cell_host_register(%L)', repeat('h', 64)));
SELECT try($$SELECT nadi.cell_host_register('ok', NULL, -1)$$);
SELECT try($$SELECT nadi.cell_host_register('ok', NULL, 1, '[]')$$);
SELECT try($$SELECT nadi.cell_host_heartbeat('never-registered')$$);
SELECT try($$SELECT nadi.sandbox_host_heartbeat('never-registered')$$);
SELECT try($$SELECT nadi.cell_host_set_state('never-registered', 'dead')$$);
SELECT try($$SELECT nadi.cell_host_set_state('p-big', 'sleeping')$$);
SELECT try($$SELECT nadi.place_pending(0)$$);
SELECT count(*) AS no_host_ok FROM nadi.cell_hosts WHERE host_id = 'ok';

-- clean up for the tests that follow
SELECT count(*) FROM (SELECT nadi.session_terminate(session_id) FROM nadi.sessions
                      WHERE labels @> '{"pool": "p"}' AND state NOT IN ('terminated', 'failed')) t;
RESET nadi.clock_offset;
