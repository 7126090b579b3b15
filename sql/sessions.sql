-- Sessions: create, get, list, terminate; the state machine.
\pset null '(null)'

SELECT from_state, to_state, cause FROM nadi.session_transitions() ORDER BY 1, 2;

SELECT session_id AS s1 FROM nadi.session_create('acme', '{"title": "first"}') \gset
SELECT tenant_id, state, metadata, labels, policy, cell_host_id, last_seq, crash_count
FROM nadi.session_get(:'s1');
-- ids are uuid v7: version nibble 7, variant 10xx, and they sort by creation
SELECT substr(:'s1', 15, 1) AS version, substr(:'s1', 20, 1) IN ('8', '9', 'a', 'b') AS variant;
SELECT session_id AS s2 FROM nadi.session_create('acme') \gset
SELECT session_id AS s3 FROM nadi.session_create('globex', labels => '{"gpu": "yes"}') \gset
SELECT :'s1' < :'s2' AS ordered;
SELECT * FROM evlog(:'s1');

-- list: by tenant, by state, paging by id
SELECT count(*) FROM nadi.session_list();
SELECT count(*) FROM nadi.session_list(tenant_id => 'acme');
SELECT session_id = :'s2' AS second_page FROM nadi.session_list(tenant_id => 'acme', after => :'s1');
SELECT count(*) FROM nadi.session_list(state => 'terminated');
SELECT count(*) FROM nadi.session_list("limit" => 1);

-- terminate: a session no cell holds ends at once
SELECT state FROM nadi.session_terminate(:'s2', 'done');
SELECT * FROM evlog(:'s2');
SELECT try(format('SELECT nadi.session_terminate(%L)', :'s2'));
SELECT try(format($$SELECT nadi.command_enqueue(%L, 'message', '{"text": "hi"}')$$, :'s2'));

-- operator transitions: the table decides
SELECT state FROM nadi.session_transition(:'s3', 'failed', 'operator test');
SELECT try(format($$SELECT nadi.session_transition(%L, 'pending')$$, :'s3'));
SELECT try(format($$SELECT nadi.session_transition(%L, 'active')$$, :'s1'));
SELECT try(format($$SELECT nadi.session_transition(%L, 'suspended')$$, :'s1'));

-- bad input: each a clear error, nothing changed
SELECT count(*) AS sessions_before FROM nadi.sessions \gset
SELECT try($$SELECT nadi.session_create(NULL)$$);
SELECT try($$SELECT nadi.session_create('')$$);
SELECT try(format('SELECT nadi.session_create(%L)', repeat('x', 256)));
SELECT try($$SELECT nadi.session_create('acme', '[1, 2]')$$);
SELECT try($$SELECT nadi.session_create('acme', '{"a": 1')$$);
SELECT try($$SELECT nadi.session_create('acme', policy => '"x"')$$);
SELECT try($$SELECT nadi.session_get(NULL)$$);
SELECT try($$SELECT nadi.session_get('00000000-0000-0000-0000-000000000000')$$);
SELECT try($$SELECT nadi.session_get('not-a-uuid')$$);
SELECT try($$SELECT * FROM nadi.session_list("limit" => -1)$$);
SELECT try($$SELECT * FROM nadi.session_list("limit" => 0)$$);
SELECT try($$SELECT * FROM nadi.session_list(state => 'sleeping')$$);
SET nadi.max_payload_size = '1kB';
SELECT try(format($$SELECT nadi.session_create('acme', jsonb_build_object('blob', %L))$$, repeat('x', 2000)));
RESET nadi.max_payload_size;
SET nadi.max_live_sessions = 1;
SELECT try($$SELECT nadi.session_create('acme')$$);
RESET nadi.max_live_sessions;
SELECT count(*) = :sessions_before AS nothing_changed FROM nadi.sessions;
