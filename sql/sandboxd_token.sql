-- nadi.sandboxd_token: a cell's credential at nadi-sandboxd, bound to one
-- session (audience nadi-sandboxd, scope sandbox, sid, tenant), minted only
-- for the cell host holding the session's lease (or by an administrator).
\pset null '(null)'

SELECT nadi.key_create() IS NOT NULL AS key;
SELECT host_id FROM nadi.cell_host_register('sbt-cell-a', capacity => 10, labels => '{"sbt": "a"}');
SELECT host_id FROM nadi.cell_host_register('sbt-cell-b', capacity => 10, labels => '{"sbt": "b"}');
SELECT session_id AS s FROM nadi.session_create('sbt-acme', labels => '{"sbt": "a"}') \gset
SELECT cell_host_id FROM nadi.place(:'s');
SELECT epoch AS e FROM nadi.lease_acquire(:'s', 'sbt-cell-a') \gset
SELECT session_id AS s_idle FROM nadi.session_create('sbt-acme') \gset

-- the claims: what nadi-sandboxd checks
SELECT nadi.sandboxd_token(:'s') AS tok \gset
SELECT c->>'iss' AS iss, c->>'aud' AS aud, c->>'scope' AS scope, c->>'sub' AS sub,
       c->>'tenant' AS tenant, c->>'sid' = :'s' AS sid_is_session,
       (c->>'exp')::bigint - (c->>'iat')::bigint AS lifetime_s
FROM nadi.token_verify(:'tok', 'nadi-sandboxd') AS c;
-- it opens nothing else: not the database (audience nadi), not the proxy
SELECT try(format('SELECT nadi.token_verify(%L)', :'tok'));
SELECT try(format('SELECT nadi.token_verify(%L, %L)', :'tok', 'nadi-proxy'));
SELECT try(format('SELECT nadi.authenticate(%L)', :'tok'));

-- ttl bounds: 1 second to 1 hour
SELECT (c->>'exp')::bigint - (c->>'iat')::bigint AS lifetime_s
FROM nadi.token_verify(nadi.sandboxd_token(:'s', '1 hour'), 'nadi-sandboxd') AS c;
SELECT (c->>'exp')::bigint - (c->>'iat')::bigint AS lifetime_s
FROM nadi.token_verify(nadi.sandboxd_token(:'s', '1 second'), 'nadi-sandboxd') AS c;
SELECT ttl, try(format('SELECT nadi.sandboxd_token(%L, %L)', :'s', ttl))
FROM unnest(ARRAY['0', '999 milliseconds', '-1 minute', '1 hour 1 second', '1 day', NULL]) AS ttl;

-- no lease held: an administrator (here the superuser) mints as "admin"
SELECT c->>'sub' AS sub, c->>'sid' = :'s_idle' AS sid_is_session
FROM nadi.token_verify(nadi.sandboxd_token(:'s_idle'), 'nadi-sandboxd') AS c;

-- sessions that do not exist or are over
SELECT try($$SELECT nadi.sandboxd_token('00000000-0000-0000-0000-000000000000')$$);
SELECT try('SELECT nadi.sandboxd_token(NULL)');
SELECT session_id AS s_done FROM nadi.session_create('sbt-acme') \gset
SELECT state FROM nadi.session_terminate(:'s_done');
SELECT try(format('SELECT nadi.sandboxd_token(%L)', :'s_done'));
SELECT session_id AS s_failed FROM nadi.session_create('sbt-acme') \gset
SELECT state FROM nadi.session_transition(:'s_failed', 'failed', 'test');
SELECT try(format('SELECT nadi.sandboxd_token(%L)', :'s_failed'));

-- cell logins: only the one bound to the host holding the lease
CREATE ROLE sbt_cell_a LOGIN IN ROLE nadi_cell;
CREATE ROLE sbt_cell_b LOGIN IN ROLE nadi_cell;
SELECT role_name FROM nadi.host_bind('cell', 'sbt-cell-a', 'sbt_cell_a');
SELECT role_name FROM nadi.host_bind('cell', 'sbt-cell-b', 'sbt_cell_b');
SET ROLE sbt_cell_a;
SELECT nadi.sandboxd_token(:'s') AS tok_a \gset
RESET ROLE;
SELECT c->>'sub' AS sub, c->>'tenant' AS tenant, c->>'sid' = :'s' AS sid_is_session
FROM nadi.token_verify(:'tok_a', 'nadi-sandboxd') AS c;
SET ROLE sbt_cell_a;
SELECT try(format('SELECT nadi.sandboxd_token(%L)', :'s_idle'));
SET ROLE sbt_cell_b;
SELECT try(format('SELECT nadi.sandboxd_token(%L)', :'s'));
SELECT try(format('SELECT nadi.sandboxd_token(%L)', :'s_idle'));
RESET ROLE;
-- roles that are not cells cannot mint one at all
SET ROLE nadi_edge;
SELECT try(format('SELECT nadi.sandboxd_token(%L)', :'s'));
SET ROLE nadi_sandbox_host;
SELECT try(format('SELECT nadi.sandboxd_token(%L)', :'s'));
RESET ROLE;

-- once the lease moves on, the old holder's login cannot mint any more
SELECT cell_host_id FROM nadi.lease_release(:'s', :e);
SET ROLE sbt_cell_a;
SELECT try(format('SELECT nadi.sandboxd_token(%L)', :'s'));
RESET ROLE;

SELECT nadi.host_unbind('cell', 'sbt-cell-a'), nadi.host_unbind('cell', 'sbt-cell-b');
DROP ROLE sbt_cell_a;
DROP ROLE sbt_cell_b;
