-- What the checker needs from the database after a chaos run, as one JSON
-- document.  Read as the superuser (every tenant, no row-level security).
SELECT json_build_object(
  'sessions', (SELECT coalesce(json_agg(s ORDER BY s.session_id), '[]')
               FROM (SELECT session_id, tenant_id, state, last_seq, policy, cell_host_id, crash_count
                     FROM nadi.sessions) s),
  'commands', (SELECT coalesce(json_agg(c ORDER BY c.session_id, c.command_id), '[]')
               FROM (SELECT session_id, command_id, type, status, idempotency_key, attempts,
                            payload->>'name' AS tool, payload->>'command_id' AS of
                     FROM nadi.command_inbox) c),
  'events', (SELECT coalesce(json_agg(e ORDER BY e.session_id, e.seq), '[]')
             FROM (SELECT session_id, seq, kind, command_id, epoch,
                          CASE WHEN kind IN ('tool.call', 'tool.result') THEN payload->>'name' END AS name,
                          CASE WHEN kind IN ('session.lease', 'permission.requested', 'permission.resolved',
                                             'command.failed', 'session.state')
                               THEN payload END AS payload
                   FROM nadi.events) e),
  'leases', (SELECT coalesce(json_agg(l), '[]')
             FROM (SELECT session_id, cell_host_id, epoch, expires_at > nadi.now() AS unexpired
                   FROM nadi.session_leases) l),
  'hosts', (SELECT coalesce(json_agg(h), '[]')
            FROM (SELECT host_id, state, heartbeat_at > nadi.now() - current_setting('nadi.host_ttl')::interval
                                             AS heartbeating
                  FROM nadi.cell_hosts) h),
  -- the replayed state (without its conversation) of every session
  'replays', (SELECT coalesce(json_agg(r), '[]')
              FROM (SELECT session_id, nadi.session_replay(session_id) - 'messages' AS replay
                    FROM nadi.sessions) r),
  -- each checkpoint a cell wrote beside the replay of the log before it
  'checkpoints', (SELECT coalesce(json_agg(k), '[]')
                  FROM (SELECT session_id, seq, equal,
                               CASE WHEN NOT equal THEN held END AS held,
                               CASE WHEN NOT equal THEN replayed END AS replayed
                        FROM (SELECT session_id, seq, payload->'messages' AS held,
                                     nadi.session_replay(session_id, seq - 1)->'messages' AS replayed
                              FROM nadi.events WHERE kind = 'cell.checkpoint') c,
                             LATERAL (SELECT held = replayed AS equal) q) k)
);
