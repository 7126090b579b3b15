-- Leases with fencing epochs: acquire, renew, release, expiry, takeover, reaper.
\pset null '(null)'
SELECT nadi.cell_host_register('lease-a', 'local', 100, '{"pool": "lease"}') IS NOT NULL AS a;
SELECT nadi.cell_host_register('lease-b', 'local', 100, '{"pool": "lease", "zone": "b"}') IS NOT NULL AS b;
SELECT session_id AS s FROM nadi.session_create('acme', labels => '{"pool": "lease"}') \gset

-- a pending session cannot be leased; a placed one only by its host
SELECT try(format($$SELECT nadi.lease_acquire(%L, 'lease-a')$$, :'s'));
SELECT cell_host_id FROM nadi.place(:'s');
SELECT try(format($$SELECT nadi.lease_acquire(%L, 'lease-b')$$, :'s'));
SELECT try(format($$SELECT nadi.lease_acquire(%L, 'nowhere')$$, :'s'));
SELECT cell_host_id, epoch, expires_at - acquired_at AS ttl FROM nadi.lease_acquire(:'s', 'lease-a');
SELECT state FROM nadi.session_get(:'s');
-- held and unexpired: nobody else gets it
SELECT try(format($$SELECT nadi.lease_acquire(%L, 'lease-b')$$, :'s'));
SELECT epoch, expires_at > renewed_at AS live FROM nadi.lease_renew(:'s', 1);
SELECT try(format($$SELECT nadi.lease_renew(%L, 7)$$, :'s'));

-- a command in flight when the lease expires
SELECT command_id AS c FROM nadi.command_enqueue(:'s', 'tool', '{"name": "echo"}') \gset
SELECT attempts FROM nadi.command_claim(:'s', 1);
SET nadi.clock_offset = '11s';
SELECT try(format($$SELECT nadi.command_complete(%L, %s, 1, '{}')$$, :'s', :c));
SELECT try(format($$SELECT nadi.event_append(%L, 1, 'model.reply', '{"text": "late"}')$$, :'s'));
SELECT * FROM nadi.reap();
SELECT state, cell_host_id, crash_count FROM nadi.session_get(:'s');
SELECT status, attempts, last_error->>'code' AS why FROM nadi.command_get(:'s', :c);
SELECT cell_host_id, epoch FROM nadi.session_leases WHERE session_id = :'s';
-- the dead epoch stays dead, also after someone else takes the session
SELECT cell_host_id FROM nadi.place(:'s');
SELECT epoch FROM nadi.lease_acquire(:'s', (SELECT cell_host_id FROM nadi.sessions WHERE session_id = :'s'));
SELECT try(format($$SELECT nadi.command_complete(%L, %s, 1, '{}')$$, :'s', :c));
SELECT attempts FROM nadi.command_claim(:'s', 3);
SELECT status FROM nadi.command_complete(:'s', :c, 3, '{"once": true}');
SELECT count(*) AS completions FROM nadi.events WHERE session_id = :'s' AND kind = 'command.completed';

-- takeover of an expired lease that the reaper has not seen yet
SELECT command_id AS c2 FROM nadi.command_enqueue(:'s', 'tool', '{"name": "echo"}') \gset
SELECT attempts FROM nadi.command_claim(:'s', 3);
SET nadi.clock_offset = '22s';
SELECT count(*) FROM (SELECT nadi.cell_host_heartbeat(h) FROM unnest(ARRAY['lease-a', 'lease-b']) h) x;
SELECT cell_host_id, epoch FROM nadi.lease_acquire(:'s', 'lease-b');
SELECT status, attempts FROM nadi.command_get(:'s', :c2);
SELECT try(format($$SELECT nadi.command_fail(%L, %s, 3, '{}')$$, :'s', :c2));

-- release: idle → suspended; a new command brings it back to pending
SELECT attempts FROM nadi.command_claim(:'s', 4);
SELECT cell_host_id, epoch FROM nadi.lease_release(:'s', 4);
SELECT state FROM nadi.session_get(:'s');
SELECT status, attempts FROM nadi.command_get(:'s', :c2);
SELECT cell_host_id FROM nadi.place(:'s');
SELECT epoch FROM nadi.lease_acquire(:'s', 'lease-a');
SELECT attempts FROM nadi.command_claim(:'s', 5);
SELECT status FROM nadi.command_complete(:'s', :c2, 5, '{}');
SELECT cell_host_id, epoch FROM nadi.lease_release(:'s', 5);
SELECT state FROM nadi.session_get(:'s');
SELECT status FROM nadi.command_enqueue(:'s', 'message', '{"text": "wake up"}');
SELECT state FROM nadi.session_get(:'s');

-- terminating a held session waits for its cell
SELECT cell_host_id FROM nadi.place(:'s');
SELECT epoch FROM nadi.lease_acquire(:'s', 'lease-a');
SELECT state FROM nadi.session_terminate(:'s');
SELECT status FROM nadi.command_list(:'s') ORDER BY command_id DESC LIMIT 1;
SELECT cell_host_id FROM nadi.lease_release(:'s', 6);
SELECT state FROM nadi.session_get(:'s');

-- the crash budget: a session whose cell keeps dying with a command in flight fails
SET nadi.crash_budget = 1;
SELECT session_id AS p FROM nadi.session_create('acme', labels => '{"pool": "lease"}') \gset
SELECT command_id AS pc FROM nadi.command_enqueue(:'p', 'tool', '{"name": "poison"}') \gset
SELECT cell_host_id IS NOT NULL FROM nadi.place(:'p');
SELECT epoch FROM nadi.lease_acquire(:'p', (SELECT cell_host_id FROM nadi.sessions WHERE session_id = :'p'));
SELECT attempts FROM nadi.command_claim(:'p', 1);
SET nadi.clock_offset = '40s';
SELECT count(*) FROM (SELECT nadi.cell_host_heartbeat(h) FROM unnest(ARRAY['lease-a', 'lease-b']) h) x;
SELECT leases_expired, commands_requeued, sessions_failed FROM nadi.reap();
SELECT state, crash_count FROM nadi.session_get(:'p');
SELECT cell_host_id IS NOT NULL FROM nadi.place(:'p');
SELECT epoch FROM nadi.lease_acquire(:'p', (SELECT cell_host_id FROM nadi.sessions WHERE session_id = :'p'));
SELECT attempts FROM nadi.command_claim(:'p', 3);
SET nadi.clock_offset = '60s';
SELECT count(*) FROM (SELECT nadi.cell_host_heartbeat(h) FROM unnest(ARRAY['lease-a', 'lease-b']) h) x;
SELECT leases_expired, commands_requeued, sessions_failed FROM nadi.reap();
SELECT state, crash_count FROM nadi.session_get(:'p');
SELECT status FROM nadi.command_get(:'p', :pc);

-- a completed command resets the count: crashes spread over a session's
-- life are not a poison command (a chaos run of 30 minutes failed every
-- session after its fourth lost cell)
SELECT session_id AS q FROM nadi.session_create('acme', labels => '{"pool": "lease"}') \gset
SELECT command_id AS q1 FROM nadi.command_enqueue(:'q', 'message', '{"text": "one"}') \gset
SELECT command_id AS q2 FROM nadi.command_enqueue(:'q', 'message', '{"text": "two"}') \gset
SELECT cell_host_id IS NOT NULL FROM nadi.place(:'q');
SELECT epoch AS qe FROM nadi.lease_acquire(:'q', (SELECT cell_host_id FROM nadi.sessions WHERE session_id = :'q')) \gset
SELECT command_id = :q1 AS first FROM nadi.command_claim(:'q', :qe);
SET nadi.clock_offset = '80s';
SELECT count(*) FROM (SELECT nadi.cell_host_heartbeat(h) FROM unnest(ARRAY['lease-a', 'lease-b']) h) x;
SELECT sessions_failed FROM nadi.reap();
SELECT state, crash_count FROM nadi.session_get(:'q');
SELECT cell_host_id IS NOT NULL FROM nadi.place(:'q');
SELECT epoch AS qe FROM nadi.lease_acquire(:'q', (SELECT cell_host_id FROM nadi.sessions WHERE session_id = :'q')) \gset
SELECT command_id = :q1 AS first_again FROM nadi.command_claim(:'q', :qe);
SELECT status FROM nadi.command_complete(:'q', :q1, :qe, '{"text": "done"}');
SELECT crash_count FROM nadi.session_get(:'q');
SELECT command_id = :q2 AS second FROM nadi.command_claim(:'q', :qe);
SET nadi.clock_offset = '100s';
SELECT count(*) FROM (SELECT nadi.cell_host_heartbeat(h) FROM unnest(ARRAY['lease-a', 'lease-b']) h) x;
SELECT sessions_failed FROM nadi.reap();
SELECT state, crash_count FROM nadi.session_get(:'q');
SELECT state FROM nadi.session_terminate(:'q');
SET nadi.clock_offset = '60s';
RESET nadi.crash_budget;

-- bad input
SELECT try($$SELECT nadi.lease_acquire(NULL, 'lease-a')$$);
SELECT try(format($$SELECT nadi.lease_acquire(%L, NULL)$$, :'s'));
SELECT try(format($$SELECT nadi.lease_renew(%L, NULL)$$, :'s'));
SELECT try($$SELECT nadi.lease_release('00000000-0000-0000-0000-000000000000', 1)$$);

SELECT * FROM evlog(:'s');
SELECT action, tenant_id, mask(detail::text) FROM nadi.audit_log
WHERE session_id = :'s' ORDER BY audit_id;
RESET nadi.clock_offset;

-- the fence at the very instant of expiry: at expires_at the lease is over
SELECT session_id AS x FROM nadi.session_create('acme', labels => '{"pool": "lease"}') \gset
SELECT cell_host_id IS NOT NULL AS placed FROM nadi.place(:'x');
SELECT epoch AS xe FROM nadi.lease_acquire(:'x', (SELECT cell_host_id FROM nadi.sessions WHERE session_id = :'x')) \gset
BEGIN;
SELECT expires_at - renewed_at AS ttl FROM nadi.lease_renew(:'x', :xe);
SET LOCAL nadi.clock_offset = '10s';
SELECT nadi.now() = expires_at AS at_expiry FROM nadi.session_leases WHERE session_id = :'x';
SELECT try(format($$SELECT nadi.lease_renew(%L, %s)$$, :'x', :xe));
ROLLBACK;
SELECT cell_host_id FROM nadi.lease_release(:'x', :xe);
SELECT state FROM nadi.session_terminate(:'x');
