-- The set-based calls of a cell host: nadi.command_claim_many and
-- nadi.lease_renew_many.  Every claim and renewal is fenced by the epoch the
-- caller names; sessions that moved on are reported, not raised.
\pset null '(null)'
-- command ids as if this file ran alone (ids are unique per session anyway)
ALTER SEQUENCE nadi.command_id_seq RESTART WITH 1001;
SELECT nadi.cell_host_register('batch-a', 'local', 100, '{"pool": "batch", "zone": "a"}') IS NOT NULL AS a;
SELECT nadi.cell_host_register('batch-b', 'local', 100, '{"pool": "batch", "zone": "b"}') IS NOT NULL AS b;

-- s1..s5 on batch-a, sb on batch-b, each leased at epoch 1
CREATE TEMP TABLE bs (name text PRIMARY KEY, sid uuid NOT NULL, epoch bigint);
INSERT INTO bs SELECT 's' || i, (nadi.session_create('acme', labels => '{"pool": "batch", "zone": "a"}')).session_id
FROM generate_series(1, 5) i;
INSERT INTO bs SELECT 'sb', (nadi.session_create('acme', labels => '{"pool": "batch", "zone": "b"}')).session_id;
SELECT name, (nadi.place(sid)).cell_host_id FROM bs ORDER BY name;
UPDATE bs SET epoch = (SELECT epoch FROM nadi.lease_acquire(sid, CASE WHEN name = 'sb' THEN 'batch-b' ELSE 'batch-a' END));
SELECT name, epoch FROM bs ORDER BY name;
-- what batch-a believes it holds: all of its own, and sb, which it does not
CREATE TEMP VIEW held AS
    SELECT array_agg(sid ORDER BY name) AS ids, array_agg(epoch ORDER BY name) AS epochs FROM bs;
CREATE FUNCTION nm(id uuid) RETURNS text LANGUAGE sql AS $$ SELECT name FROM bs WHERE sid = id $$;
CREATE FUNCTION bsid(n text) RETURNS uuid LANGUAGE sql AS $$ SELECT sid FROM bs WHERE name = n $$;

-- s1: two messages (FIFO: one at a time); s2: a tool call; s3: nothing;
-- s4: a command in its retry backoff; s5: released (suspended) with nothing queued
SELECT command_id AS c1 FROM nadi.command_enqueue((SELECT sid FROM bs WHERE name = 's1'), 'message', '{"text": "one"}') \gset
SELECT command_id AS c2 FROM nadi.command_enqueue((SELECT sid FROM bs WHERE name = 's1'), 'message', '{"text": "two"}') \gset
SELECT command_id AS c3 FROM nadi.command_enqueue((SELECT sid FROM bs WHERE name = 's2'), 'tool', '{"name": "echo"}') \gset
SELECT command_id AS c4 FROM nadi.command_enqueue((SELECT sid FROM bs WHERE name = 's4'), 'tool', '{"name": "flaky"}') \gset
SELECT command_id FROM nadi.command_claim((SELECT sid FROM bs WHERE name = 's4'), 1);
SELECT status FROM nadi.command_fail((SELECT sid FROM bs WHERE name = 's4'), :c4, 1, '{"code": "x"}', true);
SELECT cell_host_id, epoch FROM nadi.lease_release((SELECT sid FROM bs WHERE name = 's5'), 1);
SELECT command_id AS cb FROM nadi.command_enqueue((SELECT sid FROM bs WHERE name = 'sb'), 'message', '{"text": "b"}') \gset

-- one call: s1 and s2 claim their head; s3 and s4 have nothing due (not
-- returned); s5 (released) and sb (batch-b's) are fenced
SELECT nm(session_id), epoch, status, command_id, type, payload, attempts
FROM nadi.command_claim_many('batch-a', (SELECT ids FROM held), (SELECT epochs FROM held))
ORDER BY status, nm(session_id);
SELECT nm(session_id), command_id, status, attempts, claimed_epoch
FROM nadi.command_inbox WHERE session_id IN (SELECT sid FROM bs) ORDER BY command_id;
SELECT nm(session_id), kind, command_id, epoch, payload
FROM nadi.events WHERE session_id IN (SELECT sid FROM bs) AND kind = 'command.started' ORDER BY nm(session_id), seq;
-- again: both heads are in flight, nothing more is claimed
SELECT nm(session_id), status, command_id
FROM nadi.command_claim_many('batch-a', (SELECT ids FROM held), (SELECT epochs FROM held))
ORDER BY status, nm(session_id);
-- s1 and s2 complete; two seconds later s4's retry (due after one) is due too
SELECT status FROM nadi.command_complete((SELECT sid FROM bs WHERE name = 's1'), :c1, 1, '{}');
SELECT status FROM nadi.command_complete((SELECT sid FROM bs WHERE name = 's2'), :c3, 1, '{}');
SET nadi.clock_offset = '2s';
-- max_n = 1: the oldest due first (s1's second message, queued before s4's
-- retry was due), then the next
SELECT nm(session_id), status, command_id, attempts
FROM nadi.command_claim_many('batch-a', (SELECT ids FROM held), (SELECT epochs FROM held), 1)
WHERE status = 'claimed';
SELECT nm(session_id), status, command_id, attempts
FROM nadi.command_claim_many('batch-a', (SELECT ids FROM held), (SELECT epochs FROM held), 1)
WHERE status = 'claimed';
SELECT count(*) AS more FROM nadi.command_claim_many('batch-a', (SELECT ids FROM held), (SELECT epochs FROM held), 1)
WHERE status = 'claimed';
RESET nadi.clock_offset;

-- lease_renew_many: one row per session, in the caller's order; a renewed
-- lease is good for nadi.lease_ttl from nadi.now(), the others are untouched
BEGIN;
SET LOCAL nadi.clock_offset = '3s';
SELECT nm(session_id), ok, expires_in_ms > 0 AND expires_in_ms <= extract(epoch FROM
                           current_setting('nadi.lease_ttl')::interval) * 1000 AS in_ttl
FROM nadi.lease_renew_many('batch-a', (SELECT ids FROM held), (SELECT epochs FROM held));
SELECT nm(session_id), cell_host_id, expires_at = nadi.now() + current_setting('nadi.lease_ttl')::interval AS renewed
FROM nadi.session_leases WHERE session_id IN (SELECT sid FROM bs) ORDER BY 1;
COMMIT;
-- command_complete_many: s4's and s1's running commands complete with their
-- events; s2 has nothing running, sb is batch-b's, s3 has no such command.
-- One row per item, in the caller's order.
SELECT last_seq AS sb_seq FROM nadi.sessions WHERE session_id = bsid('sb') \gset
SELECT nm(session_id), command_id - 1000 AS c, status FROM nadi.command_complete_many('batch-a',
    ARRAY[bsid('s4'), bsid('s1'), bsid('sb'), bsid('s2'), bsid('s3')], ARRAY[1, 1, 1, 1, 1]::bigint[],
    ARRAY[:c4, :c2, :cb, :c3, 1999]::bigint[],
    ARRAY['{"ok": 4}', NULL, '{}', '{}', '{}']::jsonb[],
    ARRAY['[{"kind": "model.reply", "payload": {"text": "four"}}, {"kind": "tool.result", "payload": {"n": 4}}]',
          '[{"kind": "model.reply", "payload": {"text": "two"}}]', '[{"kind": "model.reply"}]', NULL, NULL]::jsonb[]);
SELECT nm(session_id), command_id - 1000 AS c, status, result FROM nadi.command_inbox
WHERE session_id IN (SELECT sid FROM bs) ORDER BY command_id;
-- gapless, in order, command.completed last; last_seq is the last event
SELECT nm(session_id), seq, kind, command_id - 1000 AS c, epoch, payload FROM nadi.events
WHERE session_id IN (bsid('s1'), bsid('s4')) AND seq > (SELECT max(seq) FROM nadi.events e
    WHERE e.session_id = events.session_id AND e.kind = 'command.started')
ORDER BY nm(session_id), seq;
SELECT nm(s.session_id), s.last_seq = max(e.seq) AS last_seq_ok, count(*) = max(e.seq) AS gapless
FROM nadi.sessions s JOIN nadi.events e USING (session_id)
WHERE s.session_id IN (SELECT sid FROM bs) GROUP BY s.session_id, s.last_seq ORDER BY 1;
SELECT last_seq = :sb_seq AS sb_untouched FROM nadi.sessions WHERE session_id = bsid('sb');
-- completing again: not running any more
SELECT nm(session_id), status FROM nadi.command_complete_many('batch-a', ARRAY[bsid('s1')], ARRAY[1::bigint], ARRAY[:c2::bigint]);

-- a stale epoch and a wrong host are not renewed and not claimed
SELECT nm(session_id), ok, expires_in_ms
FROM nadi.lease_renew_many('batch-a', ARRAY[(SELECT sid FROM bs WHERE name = 's1')], ARRAY[7::bigint]);
SELECT nm(session_id), ok FROM nadi.lease_renew_many('batch-b', (SELECT ids FROM held), (SELECT epochs FROM held));
SELECT nm(session_id), epoch, status FROM nadi.command_claim_many('batch-a',
    ARRAY[(SELECT sid FROM bs WHERE name = 's1')], ARRAY[7::bigint]);
-- unknown sessions are fenced / not ok
SELECT session_id, ok FROM nadi.lease_renew_many('batch-a', ARRAY['00000000-0000-0000-0000-000000000001'::uuid], ARRAY[1::bigint]);
SELECT session_id, status FROM nadi.command_claim_many('batch-a', ARRAY['00000000-0000-0000-0000-000000000001'::uuid], ARRAY[1::bigint]);
-- empty arrays: no rows
SELECT count(*) FROM nadi.command_claim_many('batch-a', '{}', '{}');
SELECT count(*) FROM nadi.lease_renew_many('batch-a', '{}', '{}');

-- expiry: once the TTL has passed nothing is renewed and every session is fenced
SET nadi.clock_offset = '30s';
SELECT ok, count(*) FROM nadi.lease_renew_many('batch-a', (SELECT ids FROM held), (SELECT epochs FROM held)) GROUP BY ok;
SELECT status, count(*) FROM nadi.command_claim_many('batch-a', (SELECT ids FROM held), (SELECT epochs FROM held)) GROUP BY status;
RESET nadi.clock_offset;

-- bad input, checked before anything is read or written
CREATE TEMP TABLE before AS
    SELECT (SELECT count(*) FROM nadi.events WHERE session_id IN (SELECT sid FROM bs)) AS events,
           (SELECT array_agg(expires_at ORDER BY session_id) FROM nadi.session_leases WHERE session_id IN (SELECT sid FROM bs)) AS leases;
SELECT try($$SELECT nadi.command_claim_many('batch-a', (SELECT ids FROM held), (SELECT epochs[1:2] FROM held))$$);
SELECT try($$SELECT nadi.lease_renew_many('batch-a', (SELECT ids[1:2] FROM held), (SELECT epochs FROM held))$$);
SELECT try($$SELECT nadi.command_claim_many(NULL, (SELECT ids FROM held), (SELECT epochs FROM held))$$);
SELECT try($$SELECT nadi.command_claim_many('batch-a', NULL, (SELECT epochs FROM held))$$);
SELECT try($$SELECT nadi.lease_renew_many('batch-a', (SELECT ids FROM held), NULL)$$);
SELECT try($$SELECT nadi.lease_renew_many('batch-a', (SELECT ids FROM held), (SELECT epochs[1:5] || NULL::bigint FROM held))$$);
SELECT try($$SELECT nadi.command_claim_many('batch-a', (SELECT ids[1:5] || NULL::uuid FROM held), (SELECT epochs FROM held))$$);
SELECT try($$SELECT nadi.command_claim_many('batch-a', (SELECT ids[1:5] || ids[1] FROM held), (SELECT epochs FROM held))$$);
SELECT try($$SELECT nadi.command_claim_many('batch-a', (SELECT ids FROM held), (SELECT epochs FROM held), 0)$$);
SELECT try($$SELECT nadi.command_claim_many('batch-a', (SELECT ids FROM held), (SELECT epochs FROM held), 1001)$$);
SELECT try($$SELECT nadi.command_claim_many('batch-a', (SELECT ids FROM held), (SELECT epochs FROM held), NULL)$$);
SELECT try($$SELECT nadi.command_claim_many('batch-a', ARRAY[ARRAY[sid, sid]], ARRAY[ARRAY[1, 1]]::bigint[]) FROM bs WHERE name = 's1'$$);
SELECT try($$SELECT nadi.lease_renew_many('batch-a', array_fill(gen_random_uuid(), ARRAY[100001]), array_fill(1::bigint, ARRAY[100001]))$$);
SELECT try($$SELECT nadi.command_complete_many('batch-a', ARRAY[bsid('s1'), bsid('s2')], ARRAY[1, 1]::bigint[], ARRAY[1]::bigint[])$$);
SELECT try($$SELECT nadi.command_complete_many('batch-a', ARRAY[bsid('s1')], ARRAY[1]::bigint[], NULL)$$);
SELECT try($$SELECT nadi.command_complete_many('batch-a', ARRAY[bsid('s1')], ARRAY[1]::bigint[], ARRAY[1]::bigint[], ARRAY['{}', '{}']::jsonb[])$$);
SELECT try($$SELECT nadi.command_complete_many('batch-a', ARRAY[bsid('s1')], ARRAY[1]::bigint[], ARRAY[1]::bigint[], NULL, ARRAY['{"kind": "x.y"}']::jsonb[])$$);
SELECT try($$SELECT nadi.command_complete_many('batch-a', ARRAY[bsid('s1')], ARRAY[1]::bigint[], ARRAY[1]::bigint[], NULL, ARRAY['[{"kind": "command.completed"}]']::jsonb[])$$);


-- privileges: only nadi_cell (and superuser) may call them, and a cell login
-- only for the hosts bound to it
GRANT SELECT ON held TO nadi_cell;
SET ROLE nadi_edge;
SELECT try($$SELECT nadi.command_claim_many('batch-a', '{}', '{}')$$);
SELECT try($$SELECT nadi.command_complete_many('batch-a', '{}', '{}', '{}')$$);
SELECT try($$SELECT nadi.lease_renew_many('batch-a', '{}', '{}')$$);
RESET ROLE;
SET ROLE nadi_admin;
SELECT try($$SELECT nadi.command_claim_many('batch-a', '{}', '{}')$$);
RESET ROLE;
SET ROLE nadi_cell;
SELECT try($$SELECT nadi.command_claim_many('batch-a', '{}', '{}')$$);
SELECT try($$SELECT nadi.command_complete_many('batch-a', '{}', '{}', '{}')$$);
SELECT try($$SELECT nadi.lease_renew_many('batch-a', '{}', '{}')$$);
RESET ROLE;
-- nothing changed by the refused calls
SELECT (SELECT count(*) FROM nadi.events WHERE session_id IN (SELECT sid FROM bs)) = events AS same_events,
       (SELECT array_agg(expires_at ORDER BY session_id) FROM nadi.session_leases
        WHERE session_id IN (SELECT sid FROM bs)) = leases AS same_leases
FROM before;
-- a bound cell login
SELECT host_id FROM nadi.host_bind('cell', 'batch-a', 'nadi_cell');
SET ROLE nadi_cell;
SELECT ok, count(*) FROM nadi.lease_renew_many('batch-a', (SELECT ids FROM held), (SELECT epochs FROM held)) GROUP BY ok ORDER BY ok;
SELECT try($$SELECT nadi.lease_renew_many('batch-b', '{}', '{}')$$);
RESET ROLE;
SELECT nadi.host_unbind('cell', 'batch-a');

DROP FUNCTION nm(uuid), bsid(text);
DROP VIEW held;
DROP TABLE bs, before;
