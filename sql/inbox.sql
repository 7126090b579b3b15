-- Command inbox: enqueue (idempotent), claim (FIFO, one in flight), complete,
-- fail with backoff and dead-lettering, cancel, control commands, permission.
\pset null '(null)'
SELECT nadi.cell_host_register('inbox-cell', 'local', 100, '{"pool": "inbox"}') IS NOT NULL AS registered;
SELECT session_id AS s FROM nadi.session_create('acme', labels => '{"pool": "inbox"}') \gset
SELECT state, cell_host_id FROM nadi.place(:'s');
SELECT epoch AS e FROM nadi.lease_acquire(:'s', 'inbox-cell') \gset
SELECT :e AS epoch;
SET nadi.max_attempts = 2;
SET nadi.retry_backoff_base = '1s';

-- enqueue; the same idempotency key gives the same command and nothing new
SELECT command_id AS c1, status FROM nadi.command_enqueue(:'s', 'tool',
    '{"name": "uppercase", "args": {"text": "nadi"}}', 'key-1') \gset
SELECT command_id = :c1 AS same, status FROM nadi.command_enqueue(:'s', 'tool',
    '{"name": "uppercase", "args": {"text": "nadi"}}', 'key-1');
SELECT try(format($$SELECT nadi.command_enqueue(%L, 'tool', '{"name": "echo"}', 'key-1')$$, :'s'));
SELECT command_id AS c2 FROM nadi.command_enqueue(:'s', 'message', '{"text": "hello"}') \gset
SELECT command_id AS c3 FROM nadi.command_enqueue(:'s', 'tool', '{"name": "echo", "args": {"text": "x"}}') \gset
SELECT :c1 < :c2 AND :c2 < :c3 AS ids_in_order;
SELECT count(*) FROM nadi.command_list(:'s');

-- claim: the head, and only one at a time
SELECT command_id = :c1 AS head, status, attempts, claimed_epoch = :e AS fenced
FROM nadi.command_claim(:'s', :e);
SELECT count(*) AS second_claim FROM nadi.command_claim(:'s', :e);
SELECT try(format('SELECT * FROM nadi.command_claim(%L, %s)', :'s', :e + 1));

-- complete under the epoch; twice is refused
SELECT status, result FROM nadi.command_complete(:'s', :c1, :e, '{"text": "NADI"}');
SELECT try(format($$SELECT nadi.command_complete(%L, %s, %s, '{}')$$, :'s', :c1, :e));
SELECT try(format($$SELECT nadi.command_complete(%L, %s, %s, '{}')$$, :'s', :c2, :e));

-- fail: retry with exponential backoff, then dead-letter
SELECT command_id = :c2 AS head, attempts FROM nadi.command_claim(:'s', :e);
SELECT status, attempts, last_error FROM nadi.command_fail(:'s', :c2, :e, '{"code": "boom"}');
SELECT count(*) AS claimable_during_backoff FROM nadi.command_claim(:'s', :e);
SET nadi.clock_offset = '2s';
SELECT command_id = :c2 AS head, attempts FROM nadi.command_claim(:'s', :e);
-- renew the lease on the shifted clock so it is current there
SELECT epoch = :e AS same_epoch FROM nadi.lease_renew(:'s', :e);
SELECT status, attempts FROM nadi.command_fail(:'s', :c2, :e, '{"code": "boom"}');
SELECT command_id = :c2 AS dead_letter FROM nadi.command_list(:'s', 'dead');
-- the session goes on with the next command
SELECT command_id = :c3 AS next FROM nadi.command_claim(:'s', :e);
-- a non-retryable failure is dead at once
SELECT status, attempts FROM nadi.command_fail(:'s', :c3, :e, '{"code": "bad"}', retryable => false);

-- cancel: a queued command at once, a running one by request
SELECT command_id AS c4 FROM nadi.command_enqueue(:'s', 'message', '{"text": "one"}') \gset
SELECT command_id AS c5 FROM nadi.command_enqueue(:'s', 'message', '{"text": "two"}') \gset
SELECT status FROM nadi.command_cancel(:'s', :c5);
SELECT command_id = :c4 AS running FROM nadi.command_claim(:'s', :e);
SELECT status, cancel_requested FROM nadi.command_cancel(:'s', :c4);
SELECT status FROM nadi.command_fail(:'s', :c4, :e, '{"code": "cancelled"}', false);
SELECT try(format('SELECT nadi.command_cancel(%L, %s)', :'s', :c4));
SELECT try(format('SELECT nadi.command_cancel(%L, 999999)', :'s'));

-- control commands act at enqueue: cancel by command, approve/deny a waiting tool call
SELECT command_id AS c6 FROM nadi.command_enqueue(:'s', 'message', '{"text": "rm -rf please"}') \gset
SELECT command_id = :c6 AS running FROM nadi.command_claim(:'s', :e);
SELECT status, attempts FROM nadi.command_await_permission(:'s', :c6, :e,
    '{"tool": "exec", "args": {"argv": ["rm", "-rf", "/work"]}}');
SELECT count(*) AS nothing_overtakes FROM nadi.command_claim(:'s', :e);
SELECT type, status, result FROM nadi.command_enqueue(:'s', 'deny', '{"reason": "no"}');
SELECT command_id = :c6 AS resumed, attempts FROM nadi.command_claim(:'s', :e);
SELECT status FROM nadi.command_await_permission(:'s', :c6, :e, '{"tool": "exec"}');
SELECT type, status, result FROM nadi.command_enqueue(:'s', 'approve', jsonb_build_object('command_id', :c6));
SELECT try(format($$SELECT nadi.command_enqueue(%L, 'approve', '{}')$$, :'s'));
SELECT command_id = :c6 AS resumed FROM nadi.command_claim(:'s', :e);
SELECT type, status, result->>'outcome' AS outcome FROM nadi.command_enqueue(:'s', 'cancel', '{}');
SELECT status FROM nadi.command_complete(:'s', :c6, :e, '{}');

-- bad input: each a clear error, nothing changed
SELECT count(*) AS commands_before FROM nadi.command_inbox \gset
SELECT max(seq) AS seq_before FROM nadi.events WHERE session_id = :'s' \gset
SELECT try(format($$SELECT nadi.command_enqueue(%L, 'dance', '{}')$$, :'s'));
SELECT try(format($$SELECT nadi.command_enqueue(%L, NULL, '{}')$$, :'s'));
SELECT try(format($$SELECT nadi.command_enqueue(%L, 'message', '[]')$$, :'s'));
SELECT try(format($$SELECT nadi.command_enqueue(%L, 'message', '{"text": 5}')$$, :'s'));
SELECT try(format($$SELECT nadi.command_enqueue(%L, 'tool', '{"args": {}}')$$, :'s'));
SELECT try(format($$SELECT nadi.command_enqueue(%L, 'tool', '{"name": "x", "args": [1]}')$$, :'s'));
SELECT try(format($$SELECT nadi.command_enqueue(%L, 'message', '{"text": "x"}', '')$$, :'s'));
SELECT try(format($$SELECT nadi.command_enqueue(%L, 'cancel', '{"command_id": "x"}')$$, :'s'));
SELECT try($$SELECT nadi.command_enqueue('00000000-0000-0000-0000-000000000000', 'message', '{"text": "x"}')$$);
SELECT try(format($$SELECT nadi.command_enqueue(%L, 'message', '{"text": "x"')$$, :'s'));
SET nadi.max_payload_size = '1kB';
SELECT try(format($$SELECT nadi.command_enqueue(%L, 'message', jsonb_build_object('text', %L))$$, :'s', repeat('x', 2000)));
RESET nadi.max_payload_size;
SELECT count(*) + 1 AS lim FROM nadi.command_inbox
WHERE session_id = :'s' AND status IN ('queued', 'running', 'waiting') \gset
SET nadi.max_queued_commands = :lim;
SELECT command_id AS c7 FROM nadi.command_enqueue(:'s', 'message', '{"text": "fills the queue"}') \gset
SELECT try(format($$SELECT nadi.command_enqueue(%L, 'message', '{"text": "one too many"}')$$, :'s'));
RESET nadi.max_queued_commands;
SELECT try(format($$SELECT * FROM nadi.command_list(%L, "limit" => -5)$$, :'s'));
SELECT try(format($$SELECT * FROM nadi.command_list(%L, after => -1)$$, :'s'));
SELECT try(format($$SELECT nadi.command_complete(%L, %s, NULL, '{}')$$, :'s', :c7));
SELECT try(format($$SELECT nadi.command_fail(%L, %s, %s, NULL)$$, :'s', :c7, :e));
SELECT count(*) = :commands_before + 1 AS only_c7_added FROM nadi.command_inbox;
SELECT max(seq) = :seq_before + 1 AS only_its_event FROM nadi.events WHERE session_id = :'s';

RESET nadi.max_attempts;
RESET nadi.retry_backoff_base;
SELECT * FROM evlog(:'s');
-- leave nothing leased behind for the tests that follow
SELECT cell_host_id FROM nadi.lease_release(:'s', :e);
SELECT state FROM nadi.session_terminate(:'s');
SELECT status FROM nadi.command_get(:'s', :c7);
RESET nadi.clock_offset;
