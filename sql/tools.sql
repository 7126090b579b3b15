-- Tool names are identifiers (^[a-z][a-z0-9_]{0,63}$): a name that could
-- reach another URL of the sandbox host, or slip past an approval policy, is
-- refused at enqueue with SQLSTATE NA013 and changes nothing.
\pset null '(null)'

SELECT session_id AS s FROM nadi.session_create('tools', policy => '{"require_approval": ["exec"]}') \gset
SELECT count(*) AS commands_before FROM nadi.command_inbox WHERE session_id = :'s' \gset
SELECT last_seq AS seq_before FROM nadi.sessions WHERE session_id = :'s' \gset

-- path traversal, encoded dots, another sandbox, case, length, empty, not a string
SELECT name, try(format($$SELECT nadi.command_enqueue(%L, 'tool', %L)$$, :'s',
                        jsonb_build_object('name', name, 'args', '{}'::jsonb)))
FROM unnest(ARRAY['x/../exec', '../export', '../snapshots', '../../other/tools/exec',
                  '%2e%2e', '%2E%2E/export', 'exec/', '/exec', 'exec?x=1', 'exec#', 'ex ec',
                  E'exec\n', 'Exec', 'EXEC', '_exec', '1exec', 'exéc', '',
                  'a' || repeat('b', 64)]) AS name;
SELECT try(format($$SELECT nadi.command_enqueue(%L, 'tool', '{"name": 7}')$$, :'s'));
SELECT try(format($$SELECT nadi.command_enqueue(%L, 'tool', '{"name": null}')$$, :'s'));
SELECT try(format($$SELECT nadi.command_enqueue(%L, 'tool', '{"name": ["exec"]}')$$, :'s'));
SELECT try(format($$SELECT nadi.command_enqueue(%L, 'tool', '{"name": {"n": "exec"}}')$$, :'s'));
-- a long hostile name is shown cut short, escaped
SELECT try(format($$SELECT nadi.command_enqueue(%L, 'tool', %L)$$, :'s',
                  jsonb_build_object('name', '"' || repeat('é', 100))));

-- nothing changed: no command, no event
SELECT count(*) - :commands_before AS new_commands FROM nadi.command_inbox WHERE session_id = :'s';
SELECT last_seq - :seq_before AS new_events FROM nadi.sessions WHERE session_id = :'s';

-- the longest and the shortest names that are identifiers are accepted
SELECT length(payload->>'name') AS len, status
FROM nadi.command_enqueue(:'s', 'tool', jsonb_build_object('name', 'a' || repeat('b', 63)));
SELECT payload->>'name' AS name, status FROM nadi.command_enqueue(:'s', 'tool', '{"name": "x"}');
SELECT payload->>'name' AS name, status FROM nadi.command_enqueue(:'s', 'tool', '{"name": "git_clone2"}');

-- approval policies name tools the same way, or "*"
SELECT policy FROM nadi.session_create('tools', policy => '{"require_approval": ["exec", "write_file", "*"]}');
SELECT policy FROM nadi.session_create('tools', policy => '{"require_approval": []}');
SELECT count(*) AS sessions_before FROM nadi.sessions WHERE tenant_id = 'tools' \gset
SELECT try($$SELECT nadi.session_create('tools', policy => '{"require_approval": ["x/../exec"]}')$$);
SELECT try($$SELECT nadi.session_create('tools', policy => '{"require_approval": ["Exec"]}')$$);
SELECT try($$SELECT nadi.session_create('tools', policy => '{"require_approval": ["exec", 5]}')$$);
SELECT try($$SELECT nadi.session_create('tools', policy => '{"require_approval": [""]}')$$);
SELECT try($$SELECT nadi.session_create('tools', policy => '{"require_approval": ["**"]}')$$);
SELECT try($$SELECT nadi.session_create('tools', policy => '{"require_approval": "exec"}')$$);
SELECT try($$SELECT nadi.session_create('tools', policy => '{"require_approval": {"exec": true}}')$$);
SELECT count(*) - :sessions_before AS new_sessions FROM nadi.sessions WHERE tenant_id = 'tools';
