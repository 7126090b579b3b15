-- The event log: fenced appends, gapless sequence, paging, NOTIFY, replay.
\pset null '(null)'
SELECT nadi.cell_host_register('events-cell', 'local', 10, '{"pool": "events"}') IS NOT NULL AS registered;
SELECT session_id AS s FROM nadi.session_create('acme', '{"k": "v"}', '{"pool": "events"}') \gset
SELECT cell_host_id FROM nadi.place(:'s');
SELECT epoch AS e FROM nadi.lease_acquire(:'s', 'events-cell') \gset

SELECT command_id AS c FROM nadi.command_enqueue(:'s', 'message', '{"text": "What is 2+2?"}') \gset
SELECT attempts FROM nadi.command_claim(:'s', :e);
SELECT seq, kind, epoch = :e AS fenced FROM nadi.event_append(:'s', :e, 'model.reply',
    '{"text": "Let me compute.", "tool_calls": [{"name": "exec", "args": {"argv": ["expr", "2", "+", "2"]}}]}', :c);
SELECT seq, kind FROM nadi.event_append(:'s', :e, 'tool.call', '{"name": "exec"}', :c);
SELECT seq, kind FROM nadi.event_append(:'s', :e, 'tool.result', '{"name": "exec", "result": "4"}', :c);
SELECT seq, kind FROM nadi.event_append(:'s', :e, 'model.reply', '{"text": "4"}', :c);
SELECT status FROM nadi.command_complete(:'s', :c, :e, '{"text": "4"}');

-- a rolled-back append leaves no gap
BEGIN;
SELECT seq FROM nadi.event_append(:'s', :e, 'model.reply', '{"text": "never"}');
ROLLBACK;
SELECT seq FROM nadi.event_append(:'s', :e, 'cell.note', '{"text": "after rollback"}');
SELECT count(*) = max(seq) AS gapless, min(seq) = 1 AS from_one FROM nadi.events WHERE session_id = :'s';

-- reading with a cursor and a limit
SELECT seq, kind FROM nadi.events_read(:'s', 0, 3);
SELECT seq, kind FROM nadi.events_read(:'s', 3, 3);
SELECT count(*) FROM nadi.events_read(:'s', 1000);

-- replay folds the log into the cell's state
SELECT jsonb_pretty(nadi.session_replay(:'s') - 'session_id');
SELECT nadi.session_replay(:'s', 3)->'commands' AS at_seq_3;
-- the replay agrees with the tables
SELECT (SELECT jsonb_agg(jsonb_build_object('command_id', command_id, 'type', type, 'status', status::text)
        ORDER BY command_id) FROM nadi.command_inbox WHERE session_id = :'s')
     = (nadi.session_replay(:'s')->'commands') AS commands_agree,
       (nadi.session_replay(:'s')->>'last_seq')::bigint
     = (SELECT last_seq FROM nadi.sessions WHERE session_id = :'s') AS seq_agrees,
       (nadi.session_replay(:'s')->>'epoch')::bigint
     = (SELECT epoch FROM nadi.session_leases WHERE session_id = :'s') AS epoch_agrees;

-- bad input: refused, nothing written
SELECT max(seq) AS before FROM nadi.events WHERE session_id = :'s' \gset
SELECT try(format($$SELECT nadi.event_append(%L, %s, 'session.state', '{}')$$, :'s', :e));
SELECT try(format($$SELECT nadi.event_append(%L, %s, 'command.completed', '{}')$$, :'s', :e));
SELECT try(format($$SELECT nadi.event_append(%L, %s, 'Bad Kind', '{}')$$, :'s', :e));
SELECT try(format($$SELECT nadi.event_append(%L, %s, 'nodot', '{}')$$, :'s', :e));
SELECT try(format($$SELECT nadi.event_append(%L, %s, NULL, '{}')$$, :'s', :e));
SELECT try(format($$SELECT nadi.event_append(%L, %s, 'model.reply', '{}', %s)$$, :'s', :e, :c));
SELECT try(format($$SELECT nadi.event_append(%L, %s, 'model.reply', '{}')$$, :'s', :e + 1));
SELECT try(format($$SELECT * FROM nadi.events_read(%L, -1)$$, :'s'));
SELECT try(format($$SELECT * FROM nadi.events_read(%L, 0, 0)$$, :'s'));
SELECT try(format($$SELECT * FROM nadi.events_read(%L, 0, 100000)$$, :'s'));
SELECT try($$SELECT * FROM nadi.events_read('00000000-0000-0000-0000-000000000000')$$);
SELECT try(format($$SELECT nadi.session_replay(%L, -1)$$, :'s'));
SET nadi.max_payload_size = '1kB';
SELECT try(format($$SELECT nadi.event_append(%L, %s, 'model.reply', jsonb_build_object('text', %L))$$, :'s', :e, repeat('x', 2000)));
RESET nadi.max_payload_size;
SELECT max(seq) = :before AS nothing_written FROM nadi.events WHERE session_id = :'s';

-- wake-ups: a commit that enqueues for a held session wakes its cell; a rollback does not
SELECT cell_wakeups AS w0 FROM nadi.wakeup_stats() \gset
BEGIN;
SELECT status FROM nadi.command_enqueue(:'s', 'message', '{"text": "rolled back"}');
ROLLBACK;
SELECT cell_wakeups - :w0 AS after_rollback FROM nadi.wakeup_stats();
SELECT status FROM nadi.command_enqueue(:'s', 'message', '{"text": "committed"}');
SELECT cell_wakeups - :w0 AS after_commit FROM nadi.wakeup_stats();

-- a client's own tool command: its result is the command's, not the
-- conversation's (the model never asked for it), so the replay leaves it out
-- of the messages, as the cell does (a chaos run found the two disagreeing)
SELECT command_id AS m2 FROM nadi.command_claim(:'s', :e) \gset
SELECT status FROM nadi.command_complete(:'s', :m2, :e, '{"text": "ok"}');
SELECT jsonb_array_length(nadi.session_replay(:'s')->'messages') AS n_before \gset
SELECT command_id AS t FROM nadi.command_enqueue(:'s', 'tool', '{"name": "uppercase", "args": {"text": "x"}}') \gset
SELECT attempts FROM nadi.command_claim(:'s', :e);
SELECT kind FROM nadi.event_append(:'s', :e, 'tool.call', '{"name": "uppercase"}', :t);
SELECT kind FROM nadi.event_append(:'s', :e, 'tool.result', '{"name": "uppercase", "ok": true, "result": "X"}', :t);
SELECT status FROM nadi.command_complete(:'s', :t, :e, '{"result": "X"}');
SELECT jsonb_array_length(nadi.session_replay(:'s')->'messages') = :n_before AS not_in_the_conversation,
       nadi.session_replay(:'s')->'commands'->-1 AS the_command;

SELECT cell_host_id FROM nadi.lease_release(:'s', :e);
SELECT state FROM nadi.session_terminate(:'s');
