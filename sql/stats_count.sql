-- The call counts are made where the events are written (src/session_core.c,
-- event_count), one delta row per counted event, in the single path
-- (nadi.event_append) and the batched one (events of a completed command).
\pset null '(null)'
SELECT nadi.cell_host_register('count-cell', 'local', 4) IS NOT NULL AS cell;
SELECT session_id AS s FROM nadi.session_create('count-a') \gset
SELECT cell_host_id FROM nadi.place(:'s');
SELECT epoch AS ep FROM nadi.lease_acquire(:'s', 'count-cell') \gset
-- a tool.result written in the same batch as its tool.call has a duration
SELECT command_id AS c FROM nadi.command_enqueue(:'s', 'message', '{"text": "x"}') \gset
SELECT count(*) FROM nadi.command_claim(:'s', :ep);
SELECT status FROM nadi.command_complete(:'s', :c, :ep, '{}',
    '[{"kind": "tool.call", "payload": {"name": "ls"}},
      {"kind": "tool.result", "payload": {"name": "ls", "ok": false}},
      {"kind": "tool.result", "payload": {"name": "cat"}},
      {"kind": "model.reply", "payload": {"model": "m", "latency_ms": 2.5}}]');
-- names as ->> reads them; uncounted kinds write nothing
SELECT count(nadi.event_append(:'s', :ep, k, p::jsonb)) FROM (VALUES
    ('tool.result', '{"name": true}'),
    ('tool.result', '{"name": 7}'),
    ('tool.result', '{"name": {"x": 1}}'),
    ('tool.result', '[1]'),
    ('tool.error', '{}'),
    ('model.reply', '{"model": 123}'),
    ('model.reply', '{"model": null}'),
    ('model.reply', '{"model": ["m"]}'),
    ('model.reply', '{"model": "m", "latency_ms": 1e400, "usage": {"input_tokens": 1e30, "output_tokens": -4}}'),
    ('model.reply', '{"model": "m", "latency_ms": "9", "usage": {"input_tokens": 2.5, "output_tokens": "3"}}'),
    ('tool.call', '{"name": "ls"}'),
    ('model.request', '{"model": "m"}')) v(k, p);
SELECT kind, name, calls, errors, latency_count, latency_sum, input_tokens, output_tokens
FROM nadi.call_count_deltas WHERE tenant_id = 'count-a'
ORDER BY kind, name, errors, latency_count, latency_sum, input_tokens;

-- nadi.count_calls = off: events are written, nothing is counted
SELECT count(*) AS deltas_before FROM nadi.call_count_deltas WHERE tenant_id = 'count-a' \gset
SET nadi.count_calls = off;
SELECT count(nadi.event_append(:'s', :ep, 'tool.result', '{"name": "ls", "ok": true}'));
RESET nadi.count_calls;
SELECT count(*) - :deltas_before AS counted_while_off
FROM nadi.call_count_deltas WHERE tenant_id = 'count-a';
SELECT count(nadi.event_append(:'s', :ep, 'tool.result', '{"name": "ls", "ok": true}'));
SELECT count(*) - :deltas_before AS counted_after
FROM nadi.call_count_deltas WHERE tenant_id = 'count-a';
