-- Set-based enqueue: nadi.command_enqueue_many enqueues an array of
-- commands across sessions in one statement, with the checks, errors and
-- events of nadi.command_enqueue; a refused element refuses the batch.
\pset null '(null)'
SELECT session_id AS s1 FROM nadi.session_create('batch-a') \gset
SELECT session_id AS s2 FROM nadi.session_create('batch-a') \gset
SELECT session_id AS s3 FROM nadi.session_create('batch-a') \gset
SELECT nadi.cell_host_register('batch-cell', 'local', 100, '{"pool": "batch"}') IS NOT NULL AS registered;
SELECT session_id AS sb FROM nadi.session_create('batch-b', labels => '{"pool": "batch"}') \gset

-- which session an output row belongs to, by name
CREATE TABLE batch_names (sid uuid PRIMARY KEY, name text);
INSERT INTO batch_names VALUES (:'s1', 's1'), (:'s2', 's2'), (:'s3', 's3'), (:'sb', 'sb');
CREATE FUNCTION bname(uuid) RETURNS text LANGUAGE sql AS $$
    SELECT name FROM batch_names WHERE sid = $1
$$;
CREATE FUNCTION batch_counts() RETURNS TABLE (commands bigint, events bigint) LANGUAGE sql AS $$
    SELECT (SELECT count(*) FROM nadi.command_inbox c JOIN nadi.sessions s USING (session_id)
            WHERE s.tenant_id LIKE 'batch-%'),
           (SELECT count(*) FROM nadi.events e JOIN nadi.sessions s USING (session_id)
            WHERE s.tenant_id LIKE 'batch-%')
$$;

-- happy path across 3 sessions: rows in input order, ids per session in order
CREATE TEMP TABLE first_run AS
SELECT r.* FROM nadi.command_enqueue_many(jsonb_build_array(
    jsonb_build_object('session_id', :'s2', 'type', 'message', 'payload', '{"text": "a"}'::jsonb, 'idempotency_key', 'k1'),
    jsonb_build_object('session_id', :'s1', 'type', 'message', 'payload', '{"text": "b"}'::jsonb, 'idempotency_key', 'k1'),
    jsonb_build_object('session_id', :'s3', 'type', 'tool', 'payload', '{"name": "echo", "args": {}}'::jsonb),
    jsonb_build_object('session_id', :'s2', 'type', 'message', 'payload', '{"text": "c"}'::jsonb, 'idempotency_key', 'k2'),
    jsonb_build_object('session_id', :'s1', 'type', 'message', 'payload', '{"text": "d"}'::jsonb)
)) WITH ORDINALITY AS r;
SELECT ordinality AS ord, bname(session_id) AS session, type, payload, idempotency_key, status, tenant_id
FROM first_run ORDER BY ordinality;
SELECT bname(session_id) AS session, array_agg(ordinality ORDER BY command_id) AS by_id
FROM first_run GROUP BY 1 ORDER BY 1;
-- one command.received event per command, gapless per session
SELECT bname(session_id) AS session, seq, kind, command_id IN (SELECT command_id FROM first_run) AS ours
FROM nadi.events WHERE session_id IN (:'s1', :'s2', :'s3') ORDER BY 1, seq;
SELECT bname(session_id) AS session, last_seq FROM nadi.sessions
WHERE session_id IN (:'s1', :'s2', :'s3') ORDER BY 1;
SELECT * FROM batch_counts();

-- the same batch again: the keyed commands are the same, the unkeyed new
SELECT r.ordinality AS ord, r.command_id = f.command_id AS same_id
FROM nadi.command_enqueue_many(jsonb_build_array(
    jsonb_build_object('session_id', :'s2', 'type', 'message', 'payload', '{"text": "a"}'::jsonb, 'idempotency_key', 'k1'),
    jsonb_build_object('session_id', :'s1', 'type', 'message', 'payload', '{"text": "b"}'::jsonb, 'idempotency_key', 'k1'),
    jsonb_build_object('session_id', :'s3', 'type', 'tool', 'payload', '{"name": "echo", "args": {}}'::jsonb),
    jsonb_build_object('session_id', :'s2', 'type', 'message', 'payload', '{"text": "c"}'::jsonb, 'idempotency_key', 'k2')
)) WITH ORDINALITY AS r
JOIN first_run f USING (ordinality) ORDER BY r.ordinality;
SELECT * FROM batch_counts();
-- and a single enqueue with a batch's key returns the batch's command
SELECT command_id = (SELECT command_id FROM first_run WHERE ordinality = 4) AS same_as_batch
FROM nadi.command_enqueue(:'s2', 'message', '{"text": "c"}', 'k2');

-- a key twice in one batch: one command, returned twice
SELECT count(DISTINCT command_id) AS commands, count(*) AS rows
FROM nadi.command_enqueue_many(jsonb_build_array(
    jsonb_build_object('session_id', :'s3', 'type', 'message', 'payload', '{"text": "x"}'::jsonb, 'idempotency_key', 'dup'),
    jsonb_build_object('session_id', :'s3', 'type', 'message', 'payload', '{"text": "x"}'::jsonb, 'idempotency_key', 'dup')));
SELECT count(*) AS keyed_dup FROM nadi.command_inbox WHERE session_id = :'s3' AND idempotency_key = 'dup';
-- ... with another payload the second is refused, and nothing of the batch stays
SELECT try(format('SELECT nadi.command_enqueue_many(%L)', jsonb_build_array(
    jsonb_build_object('session_id', :'s3', 'type', 'message', 'payload', '{"text": "y"}'::jsonb, 'idempotency_key', 'dup2'),
    jsonb_build_object('session_id', :'s3', 'type', 'message', 'payload', '{"text": "z"}'::jsonb, 'idempotency_key', 'dup2'))));
SELECT count(*) AS keyed_dup2 FROM nadi.command_inbox WHERE session_id = :'s3' AND idempotency_key = 'dup2';

-- bad elements: each refuses the whole batch, naming the element
SELECT session_id AS s4 FROM nadi.session_create('batch-a') \gset
SELECT state FROM nadi.session_terminate(:'s4');
SELECT * FROM batch_counts() \gset before_
SELECT try(format('SELECT nadi.command_enqueue_many(%L)', jsonb_build_array(
    jsonb_build_object('session_id', :'s1', 'type', 'message', 'payload', '{"text": "ok"}'::jsonb),
    jsonb_build_object('session_id', '00000000-0000-0000-0000-000000000001', 'type', 'message',
                       'payload', '{"text": "nobody"}'::jsonb))));
SELECT try(format('SELECT nadi.command_enqueue_many(%L)', jsonb_build_array(
    jsonb_build_object('session_id', :'s1', 'type', 'message', 'payload', '{"text": "ok"}'::jsonb),
    jsonb_build_object('session_id', :'s2', 'type', 'message', 'payload', '{"text": "ok"}'::jsonb),
    jsonb_build_object('session_id', :'s3', 'type', 'tool', 'payload', '{"name": "../admin"}'::jsonb))));
SELECT try(format('SELECT nadi.command_enqueue_many(%L)', jsonb_build_array(
    jsonb_build_object('session_id', :'s1', 'type', 'launch', 'payload', '{}'::jsonb))));
SELECT try(format('SELECT nadi.command_enqueue_many(%L)', jsonb_build_array(
    jsonb_build_object('session_id', :'s1', 'type', 'message', 'payload', '{"text": "ok"}'::jsonb),
    jsonb_build_object('session_id', 'not-a-uuid', 'type', 'message'))));
SELECT try(format('SELECT nadi.command_enqueue_many(%L)', jsonb_build_array(
    jsonb_build_object('session_id', :'s1', 'type', 'message', 'payload', '{"text": "ok"}'::jsonb, 'idempotency_kye', 'x'))));
SELECT try(format('SELECT nadi.command_enqueue_many(%L)', jsonb_build_array(
    jsonb_build_object('session_id', :'s1', 'type', 'message', 'payload', '{"text": "ok"}'::jsonb, 'idempotency_key', ''))));
SELECT try(format('SELECT nadi.command_enqueue_many(%L)', jsonb_build_array(
    jsonb_build_object('session_id', :'s1', 'type', 'message', 'payload', '{"text": "ok"}'::jsonb), 42)));
SELECT try(format('SELECT nadi.command_enqueue_many(%L)', jsonb_build_array(
    jsonb_build_object('session_id', :'s1', 'type', 'message', 'payload', '{"text": "ok"}'::jsonb),
    jsonb_build_object('session_id', :'s4', 'type', 'message', 'payload', '{"text": "too late"}'::jsonb))));
-- "payload": null is a payload that is not an object, as for the single enqueue
SELECT try(format('SELECT nadi.command_enqueue_many(%L)', jsonb_build_array(
    jsonb_build_object('session_id', :'s1', 'type', 'cancel', 'payload', 'null'::jsonb))));
SELECT try(format('SELECT nadi.command_enqueue(%L, %L, %L)', :'s1', 'cancel', 'null'));
-- client values in errors are cut at 64 characters, with their length
SELECT try(format('SELECT nadi.command_enqueue_many(%L)', jsonb_build_array(
    jsonb_build_object('session_id', :'s1', 'type', repeat('t', 100000), 'payload', '{}'::jsonb))));
SELECT try(format('SELECT nadi.command_enqueue(%L, %L)', :'s1', repeat('t', 100000)));
SELECT try(format('SELECT nadi.command_enqueue_many(%L)', jsonb_build_array(
    jsonb_build_object('session_id', :'s1', 'type', 'message', repeat('m', 100000), 1))));
SELECT try(format('SELECT nadi.command_enqueue_many(%L)', jsonb_build_array(
    jsonb_build_object('session_id', repeat('0', 100000), 'type', 'message'))));
SELECT try(format('SELECT nadi.command_enqueue_many(%L)', jsonb_build_array(
    jsonb_build_object('session_id', :'s1', 'type', 'tool', 'payload',
                       jsonb_build_object('name', repeat('n', 100000))))));
-- at most 16 MB of commands a batch, refused before anything is parsed
SELECT try(format('SELECT nadi.command_enqueue_many(%L)', (SELECT jsonb_agg(jsonb_build_object(
    'session_id', :'s1', 'type', 'message', 'payload', jsonb_build_object('text', repeat('p', 256 * 1024))))
    FROM generate_series(1, 70))));
SELECT try($$SELECT nadi.command_enqueue_many('{"session_id": "x"}')$$);
SELECT try($$SELECT nadi.command_enqueue_many(NULL)$$);
-- at most 1000 commands a batch
SELECT try(format('SELECT nadi.command_enqueue_many(%L)', (SELECT jsonb_agg(jsonb_build_object(
    'session_id', :'s1', 'type', 'message', 'payload', '{"text": "many"}'::jsonb)) FROM generate_series(1, 1001))));
SELECT count(*) AS empty_batch FROM nadi.command_enqueue_many('[]');
SELECT commands = :before_commands AS no_new_commands, events = :before_events AS no_new_events
FROM batch_counts();

-- under a tenant's token: its own sessions only, another tenant's is unknown
SELECT nadi.key_create() IS NOT NULL AS key;
BEGIN;
SELECT nadi.authenticate(nadi.token_mint('batch-a', 'alice')) ->> 'tenant' AS tenant;
SELECT try(format('SELECT nadi.command_enqueue_many(%L)', jsonb_build_array(
    jsonb_build_object('session_id', :'s1', 'type', 'message', 'payload', '{"text": "mine"}'::jsonb),
    jsonb_build_object('session_id', :'sb', 'type', 'message', 'payload', '{"text": "theirs"}'::jsonb))));
SELECT bname(session_id) AS session, type, tenant_id FROM nadi.command_enqueue_many(jsonb_build_array(
    jsonb_build_object('session_id', :'s1', 'type', 'message', 'payload', '{"text": "mine"}'::jsonb, 'idempotency_key', 'tok')));
ROLLBACK;
SELECT commands = :before_commands AS no_new_commands, events = :before_events AS no_new_events
FROM batch_counts();

-- a suspended session goes back to pending, as with a single enqueue
SELECT state FROM nadi.place(:'sb');
SELECT epoch AS eb FROM nadi.lease_acquire(:'sb', 'batch-cell') \gset
SELECT 1 AS released FROM nadi.lease_release(:'sb', :eb);
SELECT state FROM nadi.sessions WHERE session_id = :'sb';
SELECT count(*) FROM nadi.command_enqueue_many(jsonb_build_array(
    jsonb_build_object('session_id', :'sb', 'type', 'message', 'payload', '{"text": "wake"}'::jsonb),
    jsonb_build_object('session_id', :'sb', 'type', 'message', 'payload', '{"text": "up"}'::jsonb)));
SELECT state FROM nadi.sessions WHERE session_id = :'sb';
SELECT seq, kind FROM nadi.events WHERE session_id = :'sb' ORDER BY seq;

-- privileges: as command_enqueue
SELECT r AS role, has_function_privilege(r, 'nadi.command_enqueue_many(jsonb)', 'EXECUTE') AS batch,
       has_function_privilege(r, 'nadi.command_enqueue(uuid, text, jsonb, text)', 'EXECUTE') AS single
FROM unnest(ARRAY['nadi_edge', 'nadi_cell', 'nadi_admin', 'public']) r;

-- a dropped column in the inbox (as an upgrade may leave one): rows are
-- matched to the function's row type by column name
ALTER TABLE nadi.command_inbox ADD COLUMN batch_dropped int;
ALTER TABLE nadi.command_inbox DROP COLUMN batch_dropped;
SELECT bname(session_id) AS session, type, payload, status FROM nadi.command_enqueue_many(jsonb_build_array(
    jsonb_build_object('session_id', :'s1', 'type', 'message', 'payload', '{"text": "after drop"}'::jsonb),
    jsonb_build_object('session_id', :'s2', 'type', 'message', 'payload', '{"text": "after drop"}'::jsonb,
                       'idempotency_key', 'drop')));
SELECT bname(session_id) AS session, payload, status
FROM nadi.command_enqueue(:'s2', 'message', '{"text": "after drop"}', 'drop');
SELECT state FROM nadi.place(:'sb');
SELECT epoch AS eb2 FROM nadi.lease_acquire(:'sb', 'batch-cell') \gset
SELECT bname(session_id) AS session, payload, status, attempts
FROM nadi.command_claim(:'sb', :eb2);

-- an idempotency key names one command: the same payload under another type
-- is a different command, refused like another payload
SELECT session_id AS k FROM nadi.session_create('acme') \gset
SELECT command_id AS kc FROM nadi.command_enqueue(:'k', 'tool', '{"name": "echo", "text": "hi"}', 'key-2') \gset
SELECT try(format($$SELECT nadi.command_enqueue(%L, 'message', '{"name": "echo", "text": "hi"}', 'key-2')$$, :'k'));
SELECT type, count(*) FROM nadi.command_list(:'k') GROUP BY type;
-- approve and deny decide only a call that waits for permission, named or not
SELECT replace(try(format($$SELECT nadi.command_enqueue(%L, 'approve', '{"command_id": %s}')$$, :'k', :kc)),
               :'kc', '<kc>') AS approve_queued;
SELECT try(format($$SELECT nadi.command_enqueue(%L, 'deny', '{}')$$, :'k'));
SELECT status FROM nadi.command_get(:'k', :kc);
SELECT state FROM nadi.session_terminate(:'k');
