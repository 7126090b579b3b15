-- A message while another runs: the session policy "on_message_while_running"
-- (enqueue, reject, interrupt, rollback), checked at session_create and in a
-- message's payload; reject through both enqueue functions; interrupt and
-- rollback cancel the open message; replay after a rollback leaves the
-- rolled-back command out of the conversation while the log keeps it.
\pset null '(null)'
SELECT nadi.cell_host_register('busy-cell', 'local', 100, '{"pool": "busy"}') IS NOT NULL AS registered;

-- try(), with command ids masked
CREATE FUNCTION busy_try(q text) RETURNS text LANGUAGE sql AS $$
    SELECT regexp_replace(try(q), 'Message \d+', 'Message <id>')
$$;

-- validation
SELECT busy_try($$SELECT nadi.session_create('acme', policy => '{"on_message_while_running": "nope"}')$$);
SELECT busy_try($$SELECT nadi.session_create('acme', policy => '{"on_message_while_running": 1}')$$);
SELECT policy FROM nadi.session_create('acme', policy => '{"on_message_while_running": "enqueue"}');
CREATE FUNCTION busy_session(strategy text) RETURNS uuid LANGUAGE sql AS $$
    SELECT session_id FROM nadi.session_create('acme', labels => '{"pool": "busy"}',
        policy => jsonb_build_object('on_message_while_running', strategy, 'require_approval', '["exec"]'::jsonb))
$$;
CREATE FUNCTION busy_lease(s uuid) RETURNS bigint LANGUAGE sql AS $$
    SELECT nadi.place(s) IS NULL; SELECT epoch FROM nadi.lease_acquire(s, 'busy-cell')
$$;

-- reject: a message while one is open (queued or running) fails with NA015
SELECT busy_session('reject') AS s \gset
SELECT busy_lease(:'s') AS e \gset
SELECT busy_try(format($$SELECT nadi.command_enqueue(%L, 'message', '{"text": "x", "on_message_while_running": "later"}')$$, :'s'));
SELECT command_id AS m1 FROM nadi.command_enqueue(:'s', 'message', '{"text": "first"}') \gset
SELECT busy_try(format($$SELECT nadi.command_enqueue(%L, 'message', '{"text": "second"}')$$, :'s'));
SELECT command_id = :m1 AS claimed FROM nadi.command_claim(:'s', :e);
SELECT busy_try(format($$SELECT nadi.command_enqueue(%L, 'message', '{"text": "second"}')$$, :'s'));
SELECT busy_try(format($$SELECT nadi.command_enqueue_many(jsonb_build_array(jsonb_build_object(
    'session_id', %L, 'type', 'message', 'payload', '{"text": "batched"}'::jsonb)))$$, :'s'));
-- a tool command is not a message: it queues; a message may ask to queue anyway
SELECT type, status FROM nadi.command_enqueue(:'s', 'tool', '{"name": "echo"}');
SELECT type, status, payload->>'on_message_while_running' AS own
FROM nadi.command_enqueue(:'s', 'message', '{"text": "queue me", "on_message_while_running": "enqueue"}');
SELECT status FROM nadi.command_complete(:'s', :m1, :e, '{"text": "done"}');
-- idle again (only an open tool command and the queued message): still busy
-- with that message; once every message is over, a message is accepted
SELECT count(*) FROM (SELECT nadi.command_cancel(:'s', command_id) FROM nadi.command_inbox
    WHERE session_id = :'s' AND status = 'queued' AND type = 'message') c;
SELECT type, status FROM nadi.command_enqueue(:'s', 'message', '{"text": "now"}');

-- interrupt: the running message is asked to stop; the new one waits its turn
SELECT busy_session('interrupt') AS s \gset
SELECT busy_lease(:'s') AS e \gset
SELECT command_id AS m1 FROM nadi.command_enqueue(:'s', 'message', '{"text": "long"}') \gset
SELECT command_id = :m1 AS claimed FROM nadi.command_claim(:'s', :e);
SELECT command_id AS m2, status FROM nadi.command_enqueue(:'s', 'message', '{"text": "instead"}') \gset
SELECT :'status' AS m2_status;
SELECT status, cancel_requested FROM nadi.command_get(:'s', :m1);
SELECT kind, command_id = :m1 AS m1, payload FROM nadi.events
WHERE session_id = :'s' AND kind LIKE 'command.cancel%';
-- the cell stops at its next step; then the new message is claimed
SELECT status FROM nadi.command_fail(:'s', :m1, :e, '{"code": "cancelled"}', false);
SELECT command_id = :m2 AS next FROM nadi.command_claim(:'s', :e);
-- queued messages are cancelled at once
SELECT command_id AS m3 FROM nadi.command_enqueue(:'s', 'message', '{"text": "queued", "on_message_while_running": "enqueue"}') \gset
SELECT status FROM nadi.command_enqueue(:'s', 'message', '{"text": "last"}');
SELECT status FROM nadi.command_get(:'s', :m3);

-- rollback: m1 completes with a workspace snapshot; m2 runs (a tool call and
-- its snapshot) and is rolled back by m3
SELECT busy_session('rollback') AS s \gset
SELECT busy_lease(:'s') AS e \gset
SELECT command_id AS m1 FROM nadi.command_enqueue(:'s', 'message', '{"text": "write a"}') \gset
SELECT command_id = :m1 AS claimed FROM nadi.command_claim(:'s', :e);
SELECT status FROM nadi.command_complete(:'s', :m1, :e, '{"text": "wrote a"}', '[
  {"kind": "model.reply", "payload": {"text": null, "tool_calls": [{"name": "exec", "args": {}}]}},
  {"kind": "tool.result", "payload": {"name": "exec", "ok": true, "stdout": "a",
     "workspace": {"host_id": null, "sandbox_id": "sbx-1", "snapshot": "ws-1"}}},
  {"kind": "model.reply", "payload": {"text": "wrote a"}}]');
SELECT command_id AS m2 FROM nadi.command_enqueue(:'s', 'message', '{"text": "write b"}') \gset
SELECT command_id = :m2 AS claimed FROM nadi.command_claim(:'s', :e);
SELECT seq AS m2_from FROM nadi.events WHERE session_id = :'s' AND command_id = :m2 AND kind = 'command.started' \gset
SELECT nadi.event_append(:'s', :e, 'model.reply', '{"text": null, "tool_calls": [{"name": "exec", "args": {}}]}', :m2) IS NOT NULL;
SELECT nadi.event_append(:'s', :e, 'tool.result', '{"name": "exec", "ok": true, "stdout": "b",
  "workspace": {"host_id": null, "sandbox_id": "sbx-1", "snapshot": "ws-2"}}', :m2) IS NOT NULL;
SELECT jsonb_array_length(nadi.session_replay(:'s')->'messages') AS messages_before;
SELECT command_id AS m3, status FROM nadi.command_enqueue(:'s', 'message', '{"text": "write c"}') \gset
SELECT kind, command_id = :m2 AS m2, payload->>'from_seq' = :'m2_from' AS from_ok,
       (payload->>'to_seq')::bigint < seq AS to_ok, payload - 'from_seq' - 'to_seq' - 'command_id' AS payload
FROM nadi.events WHERE session_id = :'s' AND kind IN ('command.rolled_back', 'command.cancel_requested')
ORDER BY seq;
-- m2's cell has not stopped yet (a late reply): its turn is still there, as
-- in the cell's conversation, until it stops
SELECT nadi.event_append(:'s', :e, 'model.reply', '{"text": "late"}', :m2) IS NOT NULL;
SELECT count(*) FILTER (WHERE (m->>'command_id')::bigint = :m2) AS m2_messages_while_running
FROM jsonb_array_elements(nadi.session_replay(:'s')->'messages') m;
-- m2 stops at the cancel: the conversation has m1 and no m2
SELECT status FROM nadi.command_fail(:'s', :m2, :e, '{"code": "cancelled"}', false);
SELECT m->>'role' AS role, m->'content' AS content, (m->>'command_id')::bigint = :m1 AS of_m1
FROM jsonb_array_elements(nadi.session_replay(:'s')->'messages') m;
SELECT c->>'status' AS status, c->'rolled_back' AS rolled_back, c->'cancel_requested' AS cancel_requested
FROM jsonb_array_elements(nadi.session_replay(:'s')->'commands') c WHERE (c->>'command_id')::bigint = :m2;
-- the log keeps all of m2's events
SELECT kind FROM nadi.events WHERE session_id = :'s' AND command_id = :m2 ORDER BY seq;
-- replay up to before the rollback still shows m2's turn
SELECT count(*) FILTER (WHERE (m->>'command_id')::bigint = :m2) AS m2_messages_before_rollback
FROM jsonb_array_elements(nadi.session_replay(:'s', :m2_from + 2)->'messages') m;
-- m3 runs next, and its turn joins the conversation
SELECT command_id = :m3 AS next FROM nadi.command_claim(:'s', :e);
SELECT status FROM nadi.command_complete(:'s', :m3, :e, '{"text": "wrote c"}',
  '[{"kind": "model.reply", "payload": {"text": "wrote c"}}]');
SELECT m->>'role' AS role, m->'content' AS content
FROM jsonb_array_elements(nadi.session_replay(:'s')->'messages') m;

-- a rolled-back message whose cell completes it before it sees the cancel:
-- the rollback did not take, its turn stays (as in its cell's conversation)
SELECT busy_session('rollback') AS s \gset
SELECT busy_lease(:'s') AS e \gset
SELECT command_id AS m1 FROM nadi.command_enqueue(:'s', 'message', '{"text": "quick"}') \gset
SELECT command_id = :m1 AS claimed FROM nadi.command_claim(:'s', :e);
SELECT status FROM nadi.command_enqueue(:'s', 'message', '{"text": "too late"}');
SELECT status FROM nadi.command_complete(:'s', :m1, :e, '{"text": "done"}',
  '[{"kind": "model.reply", "payload": {"text": "done"}}]');
SELECT m->>'role' AS role, m->'content' AS content
FROM jsonb_array_elements(nadi.session_replay(:'s')->'messages') m;

-- the first command rolled back: back to the sandbox's first snapshot (ws-0);
-- a command that never ran a tool leaves no workspace to restore
SELECT busy_session('rollback') AS s \gset
SELECT busy_lease(:'s') AS e \gset
SELECT command_id AS m1 FROM nadi.command_enqueue(:'s', 'message', '{"text": "plain"}') \gset
SELECT command_id = :m1 AS claimed FROM nadi.command_claim(:'s', :e);
SELECT status FROM nadi.command_enqueue(:'s', 'message', '{"text": "again"}');
SELECT payload ? 'workspace' AS has_workspace FROM nadi.events WHERE session_id = :'s' AND kind = 'command.rolled_back';
SELECT busy_session('rollback') AS s \gset
SELECT busy_lease(:'s') AS e \gset
SELECT command_id AS m1 FROM nadi.command_enqueue(:'s', 'message', '{"text": "write"}') \gset
SELECT command_id = :m1 AS claimed FROM nadi.command_claim(:'s', :e);
SELECT nadi.event_append(:'s', :e, 'tool.result', '{"name": "exec", "ok": true,
  "workspace": {"host_id": "sbx-host", "sandbox_id": "sbx-9", "snapshot": "ws-1"}}', :m1) IS NOT NULL;
SELECT status FROM nadi.command_enqueue(:'s', 'message', '{"text": "again"}');
SELECT payload->'workspace' AS workspace FROM nadi.events WHERE session_id = :'s' AND kind = 'command.rolled_back';

-- a rolled-back message waiting for permission goes back to the head of the
-- queue, asked to stop: its cell claims it and stops it at once (restoring
-- its workspace), then the new message runs; until then its turn is there,
-- as in the cell's conversation
SELECT busy_session('rollback') AS s \gset
SELECT busy_lease(:'s') AS e \gset
SELECT command_id AS m1 FROM nadi.command_enqueue(:'s', 'message', '{"text": "ask"}') \gset
SELECT command_id = :m1 AS claimed FROM nadi.command_claim(:'s', :e);
SELECT status FROM nadi.command_await_permission(:'s', :m1, :e, '{"tool": "exec", "args": {}}');
SELECT command_id AS m2, status FROM nadi.command_enqueue(:'s', 'message', '{"text": "never mind"}') \gset
SELECT status, cancel_requested FROM nadi.command_get(:'s', :m1);
SELECT c->>'status' AS replayed_status, c->'cancel_requested' AS replayed_cancel
FROM jsonb_array_elements(nadi.session_replay(:'s')->'commands') c WHERE (c->>'command_id')::bigint = :m1;
SELECT state FROM nadi.session_get(:'s');
SELECT jsonb_array_length(nadi.session_replay(:'s')->'messages') AS messages;
-- a second rollback meanwhile leaves m1 on its way out to its cell (once
-- rolled back), and cancels m2, which never started
SELECT command_id AS m3 FROM nadi.command_enqueue(:'s', 'message', '{"text": "third"}') \gset
SELECT command_id - :m1 AS n, status, cancel_requested FROM nadi.command_inbox
WHERE session_id = :'s' ORDER BY command_id;
SELECT count(*) AS rolled_back FROM nadi.events WHERE session_id = :'s' AND kind = 'command.rolled_back';
SELECT command_id = :m1 AS m1_first FROM nadi.command_claim(:'s', :e);
SELECT status FROM nadi.command_fail(:'s', :m1, :e, '{"code": "cancelled"}', false);
SELECT jsonb_array_length(nadi.session_replay(:'s')->'messages') AS messages;
SELECT command_id = :m3 AS m3_next FROM nadi.command_claim(:'s', :e);

-- where the files are after a rollback: a call the rolled-back command's cell
-- still made (ws-3, a late result) does not count; a fork after it and a
-- second rollback both go back to the files from before it (ws-1)
SELECT busy_session('rollback') AS s \gset
SELECT busy_lease(:'s') AS e \gset
SELECT command_id AS m1 FROM nadi.command_enqueue(:'s', 'message', '{"text": "write a"}') \gset
SELECT command_id = :m1 AS claimed FROM nadi.command_claim(:'s', :e);
SELECT status FROM nadi.command_complete(:'s', :m1, :e, '{"text": "wrote a"}', '[
  {"kind": "tool.result", "payload": {"name": "exec", "ok": true,
     "workspace": {"host_id": null, "sandbox_id": "sbx-5", "snapshot": "ws-1"}}}]');
SELECT command_id AS m2 FROM nadi.command_enqueue(:'s', 'message', '{"text": "write b"}') \gset
SELECT command_id = :m2 AS claimed FROM nadi.command_claim(:'s', :e);
SELECT nadi.event_append(:'s', :e, 'tool.result', '{"name": "exec", "ok": true,
  "workspace": {"host_id": null, "sandbox_id": "sbx-5", "snapshot": "ws-2"}}', :m2) IS NOT NULL;
SELECT command_id AS m3 FROM nadi.command_enqueue(:'s', 'message', '{"text": "write c"}') \gset
SELECT payload->'workspace'->>'snapshot' AS first_rollback_to FROM nadi.events
WHERE session_id = :'s' AND kind = 'command.rolled_back' AND command_id = :m2;
SELECT nadi.event_append(:'s', :e, 'tool.result', '{"name": "exec", "ok": true,
  "workspace": {"host_id": null, "sandbox_id": "sbx-5", "snapshot": "ws-3"}}', :m2) IS NOT NULL;
SELECT workspace->>'snapshot' AS fork_while_rolling_back FROM nadi.session_fork(:'s');
SELECT nadi.event_append(:'s', :e, 'workspace.restore', '{"command_id": 0, "ok": true,
  "workspace": {"host_id": null, "sandbox_id": "sbx-5", "snapshot": "ws-1"}}', :m2) IS NOT NULL;
SELECT status FROM nadi.command_fail(:'s', :m2, :e, '{"code": "cancelled"}', false);
SELECT workspace->>'snapshot' AS fork_after_rollback FROM nadi.session_fork(:'s');
SELECT command_id = :m3 AS claimed FROM nadi.command_claim(:'s', :e);
SELECT nadi.event_append(:'s', :e, 'tool.result', '{"name": "exec", "ok": true,
  "workspace": {"host_id": null, "sandbox_id": "sbx-5", "snapshot": "ws-4"}}', :m3) IS NOT NULL;
SELECT workspace->>'snapshot' AS fork_in_m3_moves_back FROM nadi.session_fork(:'s');
SELECT command_id AS m4 FROM nadi.command_enqueue(:'s', 'message', '{"text": "write d"}') \gset
SELECT payload->'workspace'->>'snapshot' AS second_rollback_to FROM nadi.events
WHERE session_id = :'s' AND kind = 'command.rolled_back' AND command_id = :m3;
-- a fork's own rollback restores its own sandbox (its ws-0), never the parent's
SELECT session_id AS f FROM nadi.session_fork(:'s', (SELECT max(seq) FROM nadi.events
    WHERE session_id = :'s' AND kind = 'command.failed')) \gset
SELECT busy_lease(:'f') AS fe \gset
SELECT command_id AS fm1 FROM nadi.command_enqueue(:'f', 'message', '{"text": "in the fork"}') \gset
SELECT command_id = :fm1 AS claimed FROM nadi.command_claim(:'f', :fe);
SELECT nadi.event_append(:'f', :fe, 'tool.result', '{"name": "exec", "ok": true,
  "workspace": {"host_id": null, "sandbox_id": "sbx-6", "snapshot": "ws-1"}}', :fm1) IS NOT NULL;
SELECT command_id AS fm2 FROM nadi.command_enqueue(:'f', 'message', '{"text": "again"}') \gset
SELECT payload->'workspace' AS fork_rollback_to FROM nadi.events
WHERE session_id = :'f' AND kind = 'command.rolled_back';
