-- nadi.session_files_begin / _end: the edge's file routes.  The caller must
-- be able to act for the session's tenant; each transfer is audited; the
-- token it mints reaches the session's files only (sub "files:...").
\pset null '(null)'

SELECT nadi.key_create() IS NOT NULL AS key;
SELECT host_id FROM nadi.cell_host_register('sf-cell', capacity => 10, labels => '{"sf": "a"}');
SELECT host_id FROM nadi.sandbox_host_register('sf-sbx', 'http://10.9.9.9:7100', 10, '{"sf": "a"}');
SELECT session_id AS s FROM nadi.session_create('sf-acme', labels => '{"sf": "a"}') \gset
SELECT cell_host_id, sandbox_host_id FROM nadi.place(:'s');
SELECT session_id AS s_new FROM nadi.session_create('sf-acme', labels => '{"sf": "none"}') \gset
SELECT nadi.token_mint('sf-acme', 'alice', 'tenant', '1 hour') AS t_acme \gset
SELECT nadi.token_mint('sf-other', 'mallory', 'tenant', '1 hour') AS t_other \gset

-- the tenant's own token, through the edge's role: a row, a token, an audit row
BEGIN;
SET LOCAL ROLE nadi_edge;
SELECT nadi.authenticate(:'t_acme') IS NOT NULL AS authenticated;
SELECT transfer_id AS x, token AS ftok FROM nadi.session_files_begin(:'s', 'in', 'in/data.bin') \gset
SELECT address, image FROM nadi.session_files_begin(:'s', 'out', 'out/r.txt');
SELECT nadi.session_files_end(:x, 5000000, 201, 'sbx-1') > :x AS recorded;
COMMIT;
SELECT c->>'aud' AS aud, c->>'scope' AS scope, c->>'sub' AS sub, c->>'tenant' AS tenant,
       c->>'sid' = :'s' AS sid_is_session, (c->>'exp')::bigint - (c->>'iat')::bigint AS lifetime_s
FROM nadi.token_verify(:'ftok', 'nadi-sandboxd') AS c;
SELECT action, actor, detail - 'transfer_id' AS detail, (detail->>'transfer_id')::bigint = :x AS same_transfer
FROM nadi.audit_log WHERE session_id = :'s' AND action LIKE 'files.%' ORDER BY audit_id;

-- once per transfer, by the same actor
BEGIN;
SET LOCAL ROLE nadi_edge;
SELECT nadi.authenticate(:'t_acme') IS NOT NULL AS authenticated;
SELECT regexp_replace(try(format('SELECT nadi.session_files_end(%s, 1, 200)', :x)), 'transfer \d+', 'transfer N') AS try;
ROLLBACK;
BEGIN;
SET LOCAL ROLE nadi_edge;
SELECT nadi.authenticate(:'t_other') IS NOT NULL AS authenticated;
SELECT regexp_replace(try(format('SELECT nadi.session_files_end(%s, 1, 200)', :x)), 'transfer \d+', 'transfer N') AS try;
-- another tenant: the session does not exist
SELECT try(format('SELECT * FROM nadi.session_files_begin(%L, %L, %L)', :'s', 'in', 'x'));
ROLLBACK;

-- not placed on a sandbox host yet: no row (the edge answers 409), no audit row
SELECT count(*) AS rows FROM nadi.session_files_begin(:'s_new', 'in', 'x');
SELECT count(*) AS audit_rows FROM nadi.audit_log WHERE session_id = :'s_new' AND action LIKE 'files.%';

-- bad arguments
SELECT try(format('SELECT * FROM nadi.session_files_begin(%L, %L, %L)', :'s', 'sideways', 'x'));
SELECT try(format('SELECT * FROM nadi.session_files_begin(%L, %L, %L)', :'s', 'in', ''));
SELECT try(format('SELECT * FROM nadi.session_files_begin(%L, %L, %L)', :'s', 'in', repeat('a', 4097)));
SELECT try(format('SELECT * FROM nadi.session_files_begin(%L, %L, %L, %L)', :'s', 'in', 'x', '2 hours'));
SELECT try('SELECT * FROM nadi.session_files_begin(NULL, ''in'', ''x'')');
SELECT try($$SELECT * FROM nadi.session_files_begin('00000000-0000-0000-0000-000000000000', 'in', 'x')$$);
SELECT try('SELECT nadi.session_files_end(1, -1, 200)');
SELECT try('SELECT nadi.session_files_end(1, 1, 600)');
SELECT try('SELECT nadi.session_files_end(NULL, 1, 200)');
-- an audit row that is not a transfer's
SELECT regexp_replace(try(format('SELECT nadi.session_files_end(%s, 1, 200)',
                  (SELECT min(audit_id) FROM nadi.audit_log WHERE session_id = :'s'))), 'transfer \d+', 'transfer N') AS try;

-- a fork: the create's "from" and the token's fork claim name its origin's
-- snapshot, so a PUT that makes its sandbox makes it from the parent's files
SELECT epoch AS e FROM nadi.lease_acquire(:'s', 'sf-cell') \gset
SELECT command_id AS c FROM nadi.command_enqueue(:'s', 'message', '{"text": "write"}') \gset
SELECT status FROM nadi.command_claim(:'s', :e);
SELECT status FROM nadi.command_complete(:'s', :c, :e, '{}', '[{"kind": "tool.result", "payload":
    {"name": "exec", "ok": true, "workspace": {"host_id": "sf-sbx", "sandbox_id": "sb-9", "snapshot": "ws-1"}}}]');
SELECT session_id AS f FROM nadi.session_fork(:'s') \gset
SELECT sandbox_host_id FROM nadi.place(:'f');
SELECT fork, token AS fork_tok FROM nadi.session_files_begin(:'f', 'in', 'in/x') \gset
SELECT :'fork' AS from_;
SELECT c->'fork' AS fork_claim, c->>'sub' LIKE 'files:%' AS files_token
FROM nadi.token_verify(:'fork_tok', 'nadi-sandboxd') AS c;
SELECT fork IS NULL AS no_from_for_a_session_that_is_no_fork
FROM nadi.session_files_begin(:'s', 'in', 'in/y');

-- a session that ended
SELECT state FROM nadi.session_transition(:'s', 'failed', 'test');
SELECT try(format('SELECT * FROM nadi.session_files_begin(%L, %L, %L)', :'s', 'in', 'x'));

-- who may call them: the edge and administrators only
SELECT r, has_function_privilege(r, 'nadi.session_files_begin(uuid, text, text, interval)', 'EXECUTE') AS begin_,
       has_function_privilege(r, 'nadi.session_files_end(bigint, bigint, integer, text)', 'EXECUTE') AS end_
FROM unnest(ARRAY['nadi_edge', 'nadi_admin', 'nadi_cell', 'nadi_sandbox_host', 'public']) r;
