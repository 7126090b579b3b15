-- Operator statistics: the nadi.stat_* views, the call counts the event
-- writer keeps and the broker folds, and who may read them.
\pset null '(null)'
SET nadi.clock_offset = '0';
SELECT nadi.cell_host_register('stat-cell', 'local', 7, '{"pool": "stat"}') IS NOT NULL AS cell;
SELECT nadi.sandbox_host_register('stat-sbx', 'local', 3) IS NOT NULL AS sbx;
SELECT session_id AS s1 FROM nadi.session_create('stat-a', labels => '{"pool": "stat"}') \gset
SELECT session_id AS s2 FROM nadi.session_create('stat-b', labels => '{"pool": "stat"}') \gset
SELECT session_id AS s3 FROM nadi.session_create('stat-b', labels => '{"pool": "stat"}') \gset
SELECT cell_host_id FROM nadi.place(:'s1');
SELECT cell_host_id FROM nadi.place(:'s2');
SELECT epoch FROM nadi.lease_acquire(:'s1', 'stat-cell');
SELECT epoch FROM nadi.lease_acquire(:'s2', 'stat-cell');

-- sessions by tenant and state
SELECT tenant_id, state, sessions, last_activity IS NOT NULL AS has_activity
FROM nadi.stat_sessions WHERE tenant_id LIKE 'stat-%' ORDER BY 1, 2;

-- a tool call with its result, a model reply with latency and usage, a
-- model error, a dead letter
SELECT command_id AS c1 FROM nadi.command_enqueue(:'s1', 'tool', '{"name": "exec"}') \gset
SELECT command_id AS c2 FROM nadi.command_enqueue(:'s1', 'message', '{"text": "hi"}') \gset
SELECT command_id AS c3 FROM nadi.command_enqueue(:'s2', 'message', '{"text": "hi"}') \gset
SELECT command_id AS c4 FROM nadi.command_enqueue(:'s2', 'message', '{"text": "again"}') \gset
SELECT tenant_id, queued, running, waiting, dead, oldest_queued_at IS NOT NULL AS has_oldest,
       oldest_queued_age_seconds >= 0 AS age_ok
FROM nadi.stat_queue WHERE tenant_id LIKE 'stat-%' ORDER BY 1;
SELECT queued >= 4 AS overall_counts_all, oldest_queued_at IS NOT NULL AS has_oldest
FROM nadi.stat_queue WHERE tenant_id IS NULL;
SELECT attempts FROM nadi.command_claim(:'s1', 1);
SELECT seq > 0 AS appended FROM nadi.event_append(:'s1', 1, 'tool.call', '{"name": "exec", "args": {}}', :c1);
SELECT status FROM nadi.command_complete(:'s1', :c1, 1, '{}',
    '[{"kind": "tool.result", "payload": {"name": "exec", "ok": true, "exit_status": 0}}]');
SELECT attempts FROM nadi.command_claim(:'s1', 1);
SELECT status FROM nadi.command_complete(:'s1', :c2, 1, '{}',
    '[{"kind": "model.reply", "payload": {"text": "x", "model": "gpt-test", "latency_ms": 250, "usage": {"input_tokens": 12, "output_tokens": 5}}},
      {"kind": "tool.result", "payload": {"name": "../bad", "ok": false}}]');
SELECT attempts FROM nadi.command_claim(:'s2', 1);
SELECT status FROM nadi.command_fail(:'s2', :c3, 1, '{"code": "model_error", "message": "HTTP 500"}', false);
SELECT tenant_id, kind, name, calls, errors, latency_count, latency_sum_seconds >= 0 AS lat_ok,
       CASE WHEN kind = 'model' THEN latency_avg_seconds END AS model_avg, input_tokens, output_tokens
FROM nadi.stat_calls WHERE tenant_id LIKE 'stat-%' ORDER BY 1, 2, 3;
SELECT * FROM nadi.stat_tokens WHERE tenant_id LIKE 'stat-%' ORDER BY 1;
SELECT tenant_id, type, attempts, last_error->>'code' AS code, finished_at IS NOT NULL AS finished
FROM nadi.stat_dead_letters WHERE tenant_id LIKE 'stat-%' ORDER BY finished_at DESC;
SELECT tenant_id, queued, running, dead FROM nadi.stat_queue WHERE tenant_id LIKE 'stat-%' ORDER BY 1;

-- folding moves the deltas into the counts and changes no number
CREATE TEMP TABLE before_fold AS SELECT * FROM nadi.stat_calls WHERE tenant_id LIKE 'stat-%';
SELECT nadi._call_counts_fold() >= 4 AS folded;
SELECT count(*) AS deltas_left FROM nadi.call_count_deltas;
SELECT count(*) AS changed FROM (
    (SELECT * FROM nadi.stat_calls WHERE tenant_id LIKE 'stat-%' EXCEPT SELECT * FROM before_fold)
    UNION ALL
    (SELECT * FROM before_fold EXCEPT SELECT * FROM nadi.stat_calls WHERE tenant_id LIKE 'stat-%')) d;

-- hosts: load, leases, heartbeat
SELECT kind, host_id, state, capacity, load, leases, heartbeat_age_seconds >= 0 AS hb_ok
FROM nadi.stat_hosts WHERE host_id LIKE 'stat-%' ORDER BY 1, 2;

-- a lease that expires while a command runs: a takeover, and a crash
SELECT attempts FROM nadi.command_claim(:'s2', 1);
SET nadi.clock_offset = '1h';
SELECT leases_expired >= 1 AS reaped FROM nadi.reap();
SELECT tenant_id, takeovers, leases_expired, leases_taken_over, sessions_with_crashes, crash_count_total
FROM nadi.stat_takeovers WHERE tenant_id LIKE 'stat-%' ORDER BY 1;
SELECT tenant_id, state, crash_count, epoch FROM nadi.stat_crashes WHERE tenant_id LIKE 'stat-%';
SELECT kind, host_id, load, leases FROM nadi.stat_hosts WHERE host_id LIKE 'stat-%' ORDER BY 1, 2;
RESET nadi.clock_offset;

-- who may read them: nadi_monitor (and nadi_admin, its member); a tenant
-- token narrows every view to its tenant and hides the hosts
CREATE ROLE stat_mon NOLOGIN IN ROLE nadi_monitor;
CREATE ROLE stat_edge NOLOGIN IN ROLE nadi_edge;
SELECT pg_has_role('nadi_admin', 'nadi_monitor', 'USAGE') AS admin_is_monitor;
SET ROLE stat_edge;
SELECT try('SELECT count(*) FROM nadi.stat_sessions');
SELECT try('SELECT count(*) FROM nadi.stat_calls');
SELECT try('SELECT count(*) FROM nadi.call_counts');
RESET ROLE;
SELECT nadi.token_mint('stat-a', 'alice') AS tok_a, nadi.token_mint('nadi', 'root', 'admin') AS tok_admin,
       nadi.token_mint('stat-a', 'agent', 'session', session_id => :'s1') AS tok_sess \gset
SET ROLE stat_mon;
SELECT count(DISTINCT tenant_id) > 1 AS sees_all FROM nadi.stat_sessions;
BEGIN;
SELECT nadi.authenticate(:'tok_a') IS NOT NULL AS authenticated;
SELECT DISTINCT tenant_id FROM nadi.stat_sessions;
SELECT tenant_id, queued, dead FROM nadi.stat_queue ORDER BY tenant_id NULLS FIRST;
SELECT DISTINCT tenant_id FROM nadi.stat_calls;
SELECT DISTINCT tenant_id FROM nadi.stat_dead_letters;
SELECT DISTINCT tenant_id FROM nadi.stat_takeovers;
SELECT count(*) AS hosts FROM nadi.stat_hosts;
COMMIT;
BEGIN;
SELECT nadi.authenticate(:'tok_admin') IS NOT NULL AS authenticated;
SELECT count(DISTINCT tenant_id) > 1 AS sees_all FROM nadi.stat_sessions;
SELECT count(*) >= 2 AS hosts FROM nadi.stat_hosts;
COMMIT;
BEGIN;
SELECT nadi.authenticate(:'tok_sess') IS NOT NULL AS authenticated;
SELECT try('SELECT count(*) FROM nadi.stat_sessions');
COMMIT;
SELECT try('SELECT nadi._call_counts_fold()');
RESET ROLE;
DROP ROLE stat_mon;
DROP ROLE stat_edge;

-- no payload makes the count (and with it the event) fail
SELECT state FROM nadi.cell_host_heartbeat('stat-cell');
SELECT cell_host_id FROM nadi.place(:'s3');
SELECT epoch AS e3 FROM nadi.lease_acquire(:'s3', 'stat-cell') \gset
SELECT count(*) AS appended FROM (
    SELECT nadi.event_append(:'s3', :e3, k, p::jsonb)
    FROM (VALUES ('tool.result', '{}'), ('tool.error', '{"name": 7}'),
                 ('model.reply', '{"latency_ms": 1e300, "usage": {"input_tokens": 1e300, "output_tokens": -4}}'),
                 ('model.reply', '{"model": "a b", "latency_ms": "x", "usage": []}')) AS v(k, p)) x;
SELECT kind, name, calls, errors, latency_count, input_tokens, output_tokens
FROM nadi.stat_calls WHERE tenant_id = 'stat-b' ORDER BY 1, 2;

-- numbers a double cannot hold: the event is still appended
SELECT count(*) AS appended FROM (
    SELECT nadi.event_append(:'s3', :e3, 'model.reply', p::jsonb)
    FROM (VALUES ('{"model": "huge", "latency_ms": 1e400}'),
                 ('{"model": "huge", "latency_ms": 1e-400, "usage": {"input_tokens": 1e-400}}')) AS v(p)) x;
SELECT kind, name, calls, latency_count, latency_sum_seconds FROM nadi.stat_calls
WHERE tenant_id = 'stat-b' AND name = 'huge';

-- tokens no call uses: clamped per call, so ten thousand such replies
-- neither overflow the sums nor stop the fold
SELECT count(*) AS appended FROM (
    SELECT nadi.event_append(:'s3', :e3, 'model.reply',
                             '{"model": "greedy", "usage": {"input_tokens": 1e18, "output_tokens": 9e15}}')
    FROM generate_series(1, 10000)) x;
SELECT nadi._call_counts_fold() >= 10000 AS folded;
SELECT name, calls, input_tokens, output_tokens FROM nadi.stat_calls
WHERE tenant_id = 'stat-b' AND name = 'greedy';
SELECT input_tokens > 0 AS tokens_ok FROM nadi.stat_tokens WHERE tenant_id = 'stat-b';

-- (the appends above may take longer than a lease lasts on a busy machine)
SELECT nadi.lease_renew(:'s3', :e3) IS NOT NULL AS renewed \gset
-- a model that makes up tool names: at most 100 names per tenant and kind
-- are counted, the others as "(other)"; no call is lost
SELECT count(*) AS appended FROM (
    SELECT nadi.event_append(:'s3', :e3, 'tool.result',
                             jsonb_build_object('name', 'made_up_' || i, 'ok', false))
    FROM generate_series(1, 150) i) x;
SELECT nadi._call_counts_fold() >= 150 AS folded;
SELECT count(*) AS names, sum(calls) AS calls, sum(calls) FILTER (WHERE name = '(other)') AS other
FROM nadi.stat_calls WHERE tenant_id = 'stat-b' AND kind = 'tool';
-- (the appends above may take longer than a lease lasts on a busy machine)
SELECT nadi.lease_renew(:'s3', :e3) IS NOT NULL AS renewed \gset
SELECT count(*) AS appended FROM (
    SELECT nadi.event_append(:'s3', :e3, 'tool.result',
                             jsonb_build_object('name', 'later_' || i, 'ok', false))
    FROM generate_series(1, 20) i) x;
SELECT name, count(*) AS deltas FROM nadi.call_count_deltas WHERE tenant_id = 'stat-b'
GROUP BY name ORDER BY name;
SELECT count(*) AS names, sum(calls) AS calls FROM nadi.stat_calls
WHERE tenant_id = 'stat-b' AND kind = 'tool';

-- (the appends above may take longer than a lease lasts on a busy machine)
SELECT nadi.lease_renew(:'s3', :e3) IS NOT NULL AS renewed \gset
-- a result whose transaction started before its call's: no negative
-- duration (the name is stat-b's 102nd: it counts as "(other)")
SELECT command_id AS c5 FROM nadi.command_enqueue(:'s3', 'tool', '{"name": "backwards"}') \gset
SELECT command_id = :c5 AS claimed FROM nadi.command_claim(:'s3', :e3);
SELECT count(*) AS appended FROM (
    SELECT nadi.event_append(:'s3', :e3, 'tool.call', '{"name": "backwards"}', :c5)) x;
SET nadi.clock_offset = '-1h';
SELECT count(*) AS appended FROM (
    SELECT nadi.event_append(:'s3', :e3, 'tool.result', '{"name": "backwards", "ok": true}', :c5)) x;
RESET nadi.clock_offset;
SELECT name, calls, latency_count, latency_sum_seconds FROM nadi.stat_calls
WHERE tenant_id = 'stat-b' AND name = '(other)';
