-- nadi.session_fork: a new session from any event of another.  Its replayed
-- conversation equals the parent's at the fork point (at_seq = 1, inside a
-- running command, the last event), its workspace is the latest snapshot at
-- or before that point, and the sandboxd token of the fork names it.
\pset null '(null)'
SELECT nadi.key_create() IS NOT NULL AS key;
SELECT nadi.cell_host_register('fork-cell', 'local', 10, '{"pool": "fork"}') IS NOT NULL AS registered;
SELECT session_id AS p FROM nadi.session_create('fork-acme', '{"k": "v"}', '{"pool": "fork"}',
                                                '{"approval": {"exec": "ask"}}') \gset
SELECT cell_host_id FROM nadi.place(:'p');
SELECT epoch AS e FROM nadi.lease_acquire(:'p', 'fork-cell') \gset

-- the first command: a tool call that changed the workspace (snapshot ws-1)
SELECT command_id AS c1 FROM nadi.command_enqueue(:'p', 'message', '{"text": "write a file"}') \gset
SELECT status FROM nadi.command_claim(:'p', :e);
SELECT seq FROM nadi.event_append(:'p', :e, 'model.reply',
    '{"text": "Writing.", "tool_calls": [{"id": "t1", "name": "exec", "args": {"argv": ["touch", "a"]}}]}', :c1);
SELECT seq FROM nadi.event_append(:'p', :e, 'tool.result',
    '{"name": "exec", "result": "ok", "workspace": {"host_id": "sbx-a", "sandbox_id": "sb1", "snapshot": "ws-1"}}', :c1);
SELECT seq FROM nadi.event_append(:'p', :e, 'model.reply', '{"text": "Done."}', :c1);
SELECT status FROM nadi.command_complete(:'p', :c1, :e, '{"text": "Done."}');
SELECT last_seq AS done1 FROM nadi.sessions WHERE session_id = :'p' \gset
-- the second command, still running, has taken snapshot ws-2
SELECT command_id AS c2 FROM nadi.command_enqueue(:'p', 'message', '{"text": "write another"}') \gset
SELECT status FROM nadi.command_claim(:'p', :e);
SELECT seq AS started2 FROM nadi.events WHERE session_id = :'p' AND kind = 'command.started'
    AND command_id = :c2 \gset
SELECT seq FROM nadi.event_append(:'p', :e, 'model.reply',
    '{"text": "Again.", "tool_calls": [{"id": "t2", "name": "exec", "args": {"argv": ["touch", "b"]}}]}', :c2);
SELECT seq AS mid2 FROM nadi.event_append(:'p', :e, 'tool.result',
    '{"name": "exec", "result": "ok", "workspace": {"host_id": "sbx-a", "sandbox_id": "sb1", "snapshot": "ws-2"}}', :c2) \gset
SELECT seq, kind, command_id IS NOT NULL AS of_command FROM nadi.events WHERE session_id = :'p' ORDER BY seq;

-- a fork, checked against its parent: the seq used, the workspace, the
-- first event, the copied columns, and replay equality of the conversation
CREATE FUNCTION fork_check(parent uuid, at bigint) RETURNS TABLE (
    at_seq bigint, seq bigint, workspace jsonb, first_event text, nmessages int,
    same_messages boolean, fork_in_replay boolean, copied boolean, state text, parent_untouched boolean)
LANGUAGE plpgsql AS $$
DECLARE
    f nadi.session_forks;
    before jsonb := nadi.session_replay(parent);
BEGIN
    f := nadi.session_fork(parent, at);
    RETURN QUERY SELECT f.at_seq, f.seq, f.workspace,
        (SELECT ev.kind FROM nadi.events ev WHERE ev.session_id = f.session_id AND ev.seq = 1),
        jsonb_array_length(nadi.session_replay(f.session_id)->'messages'),
        nadi.session_replay(f.session_id)->'messages' = nadi.session_replay(parent, f.seq)->'messages',
        nadi.session_replay(f.session_id)->'fork'
            = jsonb_build_object('parent_session_id', parent, 'at_seq', f.at_seq, 'seq', f.seq,
                                 'workspace', f.workspace),
        (SELECT c.tenant_id = s.tenant_id AND c.metadata = s.metadata AND c.labels = s.labels
                AND c.policy = s.policy AND c.session_id <> s.session_id
         FROM nadi.sessions c, nadi.sessions s WHERE c.session_id = f.session_id AND s.session_id = parent),
        (SELECT c.state::text FROM nadi.sessions c WHERE c.session_id = f.session_id),
        nadi.session_replay(parent) = before;
END $$;

-- at the first event: nothing said yet, no workspace
SELECT * FROM fork_check(:'p', 1);
-- at the end of the first command: its conversation and snapshot ws-1
SELECT * FROM fork_check(:'p', :done1);
-- one event before the second command started: the same point
SELECT * FROM fork_check(:'p', :started2 - 1);
-- inside the running command (its start, its tool result, the latest
-- event): moved back to before it started; never ws-2
SELECT :started2 - 1 AS expected_seq;
SELECT * FROM fork_check(:'p', :started2);
SELECT * FROM fork_check(:'p', :mid2);
SELECT * FROM fork_check(:'p', NULL);
-- once it completed, the last event is a complete point: ws-2
SELECT status FROM nadi.command_complete(:'p', :c2, :e, '{}');
SELECT last_seq AS done2 FROM nadi.sessions WHERE session_id = :'p' \gset
SELECT * FROM fork_check(:'p', :done2);
SELECT * FROM fork_check(:'p', NULL);
-- a command waiting for permission is still under way: moved back too
SELECT command_id AS c3 FROM nadi.command_enqueue(:'p', 'message', '{"text": "ask first"}') \gset
SELECT status FROM nadi.command_claim(:'p', :e);
SELECT seq AS started3 FROM nadi.events WHERE session_id = :'p' AND kind = 'command.started'
    AND command_id = :c3 \gset
SELECT seq FROM nadi.event_append(:'p', :e, 'model.reply',
    '{"text": "May I?", "tool_calls": [{"id": "t3", "name": "exec", "args": {}}]}', :c3);
SELECT status FROM nadi.command_await_permission(:'p', :c3, :e, '{"tool": "exec", "args": {}}');
SELECT :started3 - 1 AS expected_seq;
SELECT * FROM fork_check(:'p', NULL);
SELECT last_seq AS done2 FROM nadi.sessions WHERE session_id = :'p' \gset

-- the fork's first event, in full
SELECT session_id AS f1 FROM nadi.session_fork(:'p', :done1) \gset
SELECT seq, kind, command_id, epoch,
       jsonb_pretty(payload - 'parent_session_id' - 'messages') AS payload,
       payload->>'parent_session_id' = :'p' AS names_parent
FROM nadi.events WHERE session_id = :'f1';
SELECT m->>'role' AS role, m->'content' AS content, m->'tool_calls' AS tool_calls,
       (m->>'command_id')::bigint IN (:c1, :c2) AS command_id
FROM nadi.events, jsonb_array_elements(payload->'messages') AS m
WHERE session_id = :'f1' AND seq = 1;
SELECT tenant_id, parent_session_id = :'p' AS parent, at_seq, seq, workspace
FROM nadi.session_forks WHERE session_id = :'f1';
SELECT actor = session_user AS actor, tenant_id, action, detail - 'parent_session_id' AS detail
FROM nadi.audit_log WHERE session_id = :'f1' AND action = 'session.fork';
-- other sessions replay with "fork": null
SELECT nadi.session_replay(:'p')->'fork' AS parent_fork, nadi.session_replay(:'p') ? 'fork' AS has_key;

-- the fork goes on by itself: its own commands extend the inherited
-- conversation; the parent does not see them
SELECT cell_host_id FROM nadi.place(:'f1');
SELECT epoch AS fe FROM nadi.lease_acquire(:'f1', 'fork-cell') \gset
SELECT command_id AS fc FROM nadi.command_enqueue(:'f1', 'message', '{"text": "branch B"}') \gset
SELECT status FROM nadi.command_claim(:'f1', :fe);
SELECT seq FROM nadi.event_append(:'f1', :fe, 'model.reply', '{"text": "On branch B."}', :fc);
SELECT status FROM nadi.command_complete(:'f1', :fc, :fe, '{}');
SELECT m->>'role' AS role, m->'content' AS content
FROM jsonb_array_elements(nadi.session_replay(:'f1')->'messages') AS m;
SELECT nadi.session_replay(:'f1', 1)->'messages' = nadi.session_replay(:'p', :done1)->'messages'
    AS inherited_at_1,
       NOT EXISTS (SELECT 1 FROM nadi.events WHERE session_id = :'p' AND payload::text LIKE '%branch B%')
    AS parent_untouched;
-- a fork of a fork at its first event: the same conversation and workspace
SELECT * FROM fork_check(:'f1', 1);

-- the sandboxd token of a fork carries the snapshot it starts from
SELECT c->'fork' AS fork_claim, c->>'sid' = :'f1' AS sid
FROM nadi.token_verify(nadi.sandboxd_token(:'f1'), 'nadi-sandboxd') AS c;
SELECT session_id AS f0 FROM nadi.session_fork(:'p', 1) \gset
SELECT c ? 'fork' AS fork_claim
FROM nadi.token_verify(nadi.sandboxd_token(:'f0'), 'nadi-sandboxd') AS c;
SELECT c ? 'fork' AS fork_claim
FROM nadi.token_verify(nadi.sandboxd_token(:'p'), 'nadi-sandboxd') AS c;
SELECT detail->'fork' AS audited FROM nadi.audit_log
WHERE session_id = :'f1' AND action = 'token.mint' ORDER BY audit_id DESC LIMIT 1;
-- the minter's own claims cannot be replaced, and only the owner mints so
SELECT try(format($$SELECT nadi._token_mint_claims('fork-acme', 'x', 'sandbox', '1 minute', %L,
    'nadi-sandboxd', '{"sub": "admin"}')$$, :'f1'));
SELECT try(format($$SELECT nadi._token_mint_claims('fork-acme', 'x', 'sandbox', '1 minute', %L,
    'nadi-sandboxd', '[1]')$$, :'f1'));
SET ROLE nadi_cell;
SELECT try(format($$SELECT nadi._token_mint_claims('fork-acme', 'x', 'sandbox', '1 minute', %L,
    'nadi-sandboxd', '{}')$$, :'f1'));
RESET ROLE;

-- bad input: refused with nothing written
SELECT count(*) AS sessions_before FROM nadi.sessions \gset
SELECT try($$SELECT nadi.session_fork(NULL)$$);
SELECT try($$SELECT nadi.session_fork('00000000-0000-0000-0000-000000000000')$$);
SELECT try(format($$SELECT nadi.session_fork(%L, 0)$$, :'p'));
SELECT try(format($$SELECT nadi.session_fork(%L, -1)$$, :'p'));
SELECT try(format($$SELECT nadi.session_fork(%L, %s)$$, :'p', :done2 + 1));
SELECT try(format($$SELECT nadi.session_fork(%L, %s)$$, :'p', 9223372036854775807));
SELECT count(*) = :sessions_before AS nothing_written FROM nadi.sessions;

-- the per-tenant limit on live sessions holds for forks
SELECT count(*) AS live FROM nadi.sessions WHERE tenant_id = 'fork-acme'
    AND state NOT IN ('terminated', 'failed') \gset
SET nadi.max_live_sessions = :live;
SELECT try(format($$SELECT nadi.session_fork(%L)$$, :'p'));
RESET nadi.max_live_sessions;

-- tokens: the parent's tenant may fork; another tenant sees no session;
-- a session token cannot create one
SELECT nadi.token_mint('fork-acme', 'alice') AS tok_acme \gset
SELECT nadi.token_mint('fork-other', 'mallory') AS tok_other \gset
SELECT nadi.token_mint('fork-acme', 'cell', 'session', '1 hour', :'p') AS tok_session \gset
SET ROLE nadi_edge;
BEGIN;
SELECT nadi.authenticate(:'tok_acme')->>'tenant' AS tenant;
SELECT tenant_id, seq FROM nadi.session_fork(:'p', 1);
COMMIT;
BEGIN;
SELECT nadi.authenticate(:'tok_other') IS NOT NULL AS authenticated;
SELECT try(format($$SELECT nadi.session_fork(%L, 1)$$, :'p'));
SELECT count(*) AS visible_forks FROM nadi.session_forks;
COMMIT;
BEGIN;
SELECT nadi.authenticate(:'tok_session') IS NOT NULL AS authenticated;
SELECT try(format($$SELECT nadi.session_fork(%L, 1)$$, :'p'));
COMMIT;
RESET ROLE;
SET ROLE nadi_cell;
SELECT try(format($$SELECT nadi.session_fork(%L, 1)$$, :'p'));
RESET ROLE;

-- an ended parent can still be forked (its log is whole); a purged one
-- answers NA014, and its forks live on without it
SELECT state FROM nadi.session_transition(:'p', 'failed', 'test');
SELECT seq, workspace->>'snapshot' AS snapshot FROM nadi.session_fork(:'p', :done1);
UPDATE nadi.sessions SET updated_at = updated_at - interval '10 days' WHERE session_id = :'p';
SELECT sessions, events FROM nadi.purge_batch('9 days');
SELECT try(format($$SELECT nadi.session_fork(%L)$$, :'p'));
SELECT jsonb_array_length(nadi.session_replay(:'f1')->'messages') AS fork_messages,
       (nadi.session_replay(:'f1')->'fork'->>'seq')::bigint = :done1 AS fork_seq;
-- purging a fork removes its row
SELECT state FROM nadi.session_terminate(:'f0');
UPDATE nadi.sessions SET updated_at = updated_at - interval '10 days' WHERE session_id = :'f0';
SELECT sessions FROM nadi.purge_batch('9 days');
SELECT count(*) AS fork_rows FROM nadi.session_forks WHERE session_id = :'f0';

-- the reaper keeps the purged parent's sandbox while a live fork still has
-- to make its own from the parent's snapshot, and lets it go after
SELECT count(*) AS parent_ended_while_forks_need_it FROM nadi.sessions_ended(ARRAY[:'p']::uuid[], '0');
-- (a fork of a fork below it keeps it too, as long as it lives)
SELECT count(*) AS children_ended FROM nadi.session_forks f, LATERAL nadi.session_transition(f.session_id, 'failed', 'test') t
    WHERE f.parent_session_id = :'p'
      AND (SELECT state FROM nadi.sessions s WHERE s.session_id = f.session_id) NOT IN ('terminated', 'failed');
SELECT count(*) AS parent_ended_with_a_grandchild_live FROM nadi.sessions_ended(ARRAY[:'p']::uuid[], '0');
SELECT count(*) AS grandchildren_ended FROM nadi.session_forks f, LATERAL nadi.session_transition(f.session_id, 'failed', 'test') t
    WHERE f.parent_session_id IN (SELECT session_id FROM nadi.session_forks WHERE parent_session_id = :'p')
      AND (SELECT state FROM nadi.sessions s WHERE s.session_id = f.session_id) NOT IN ('terminated', 'failed');
SELECT count(*) AS parent_ended_after FROM nadi.sessions_ended(ARRAY[:'p']::uuid[], '0');
