-- Egress through the credentials proxy: egress_allow / egress_revoke,
-- sandbox_token / model_token, proxy_authorize / proxy_finish.  Ids, tokens
-- and times are never printed; refusals are answers with a status and code.
\pset null '(null)'

SELECT nadi.key_create() IS NOT NULL AS key;
SELECT session_id AS s FROM nadi.session_create('egress-a') \gset
SELECT session_id AS s2 FROM nadi.session_create('egress-b') \gset

-- the parts of an answer that do not change from run to run
CREATE FUNCTION verdict(r jsonb) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN (r->>'allowed')::boolean
                THEN 'allowed ' || (r->>'scope') || ' tenant=' || (r->>'tenant_id')
                ELSE (r->>'status') || ' ' || (r->>'code') END
$$;

-- tokens: audience nadi-proxy, sandbox subject, bounded ttl
SELECT nadi.sandbox_token(:'s', 'sbx-a') AS ta \gset
SELECT nadi.sandbox_token(:'s2', 'sbx-b') AS tb \gset
SELECT nadi.model_token(:'s') AS ma \gset
SELECT c->>'aud' AS aud, c->>'scope' AS scope, c->>'sub' AS sub, c->>'tenant' AS tenant,
       (c->>'sid')::uuid = :'s' AS own_session, (c->>'exp')::bigint - (c->>'iat')::bigint AS ttl
FROM nadi.token_verify(:'ta', 'nadi-proxy') c;
SELECT c->>'scope' AS scope, c->>'sub' AS sub, (c->>'exp')::bigint - (c->>'iat')::bigint AS ttl
FROM nadi.token_verify(nadi.model_token(:'s', '1 minute'), 'nadi-proxy') c;

-- a proxy token opens no API: authenticate wants audience nadi
SELECT try(format('SELECT nadi.authenticate(%L)', :'ta')) AS authenticate_with_sandbox_token;
SELECT try(format('SELECT nadi.authenticate(%L)', :'ma')) AS authenticate_with_model_token;

-- bad input: clear errors
SELECT nadi.sandbox_token(:'s', 'no spaces');
SELECT nadi.sandbox_token(:'s', NULL);
SELECT nadi.sandbox_token(:'s', 'x', '2 hours');
SELECT nadi.model_token(:'s', '0 seconds');
SELECT nadi.model_token('00000000-0000-0000-0000-000000000000');
SELECT nadi.egress_allow('egress-a', 'Bad Name');
SELECT nadi.egress_allow('egress-a', 'api', '{GET,CONNECT}');
SELECT nadi.egress_allow('egress-a', 'api', '{}');
SELECT nadi.egress_allow('egress-a', 'api', NULL, 'v1');
SELECT nadi.egress_allow('', 'api');
SELECT nadi.egress_allow(NULL, 'api');
SELECT nadi.egress_allow('egress-a', NULL);
SELECT nadi.egress_allow('egress-a', 'api', '{GET,NULL}');
SELECT nadi.egress_allow('egress-a', 'api', NULL, NULL);
SELECT nadi.egress_revoke('egress-a', NULL);
SELECT count(*) AS rules_after_bad_input FROM nadi.egress_rules;

-- nothing is allowed until a rule says so
SELECT verdict(nadi.proxy_authorize(:'ta', 'sbx-a', 'api', 'GET', '/v1/x', 'proxy-1'));
SELECT tenant_id, upstream, methods, path_prefix
FROM nadi.egress_allow('egress-a', 'api', '{GET,POST}', '/v1/');
SELECT verdict(nadi.proxy_authorize(:'ta', 'sbx-a', 'api', 'GET', '/v1/x', 'proxy-1'));
SELECT verdict(nadi.proxy_authorize(:'ta', 'sbx-a', 'api', 'DELETE', '/v1/x', 'proxy-1'));
SELECT verdict(nadi.proxy_authorize(:'ta', 'sbx-a', 'api', 'GET', '/v2/x', 'proxy-1'));
SELECT verdict(nadi.proxy_authorize(:'ta', 'sbx-a', 'other', 'GET', '/v1/x', 'proxy-1'));
-- tenant b has no rule; a rule for every tenant ('*') opens it
SELECT verdict(nadi.proxy_authorize(:'tb', 'sbx-b', 'api', 'GET', '/v1/x', 'proxy-1'));
SELECT upstream FROM nadi.egress_allow('*', 'api', '{GET}');
SELECT verdict(nadi.proxy_authorize(:'tb', 'sbx-b', 'api', 'GET', '/v1/x', 'proxy-1'));
SELECT nadi.egress_revoke('*', 'api') AS revoked, nadi.egress_revoke('*', 'api') AS again;
-- changing a rule replaces it
SELECT methods FROM nadi.egress_allow('egress-a', 'api', '{GET,POST}', '/');
SELECT verdict(nadi.proxy_authorize(:'ta', 'sbx-a', 'api', 'GET', '/v2/x', 'proxy-1'));

-- who may present which token where
SELECT verdict(nadi.proxy_authorize(:'tb', 'sbx-a', 'api', 'GET', '/x', 'proxy-1')) AS other_sandbox;
SELECT verdict(nadi.proxy_authorize(:'ta', NULL, 'api', 'GET', '/x', 'proxy-1')) AS sandbox_token_on_main;
SELECT verdict(nadi.proxy_authorize(:'ma', NULL, 'api', 'GET', '/x', 'proxy-1')) AS model_token_on_main;
SELECT verdict(nadi.proxy_authorize(:'ma', 'sbx-a', 'api', 'GET', '/x', 'proxy-1')) AS model_token_in_sandbox;
SELECT verdict(nadi.proxy_authorize(nadi.token_mint('egress-a', 'u', 'tenant'), 'sbx-a', 'api', 'GET', '/x', 'proxy-1'))
    AS api_token;
SELECT verdict(nadi.proxy_authorize('not.a.token', 'sbx-a', 'api', 'GET', '/x', 'proxy-1')) AS garbage;
SELECT verdict(nadi.proxy_authorize(left(:'ta', -4) || 'AAAA', 'sbx-a', 'api', 'GET', '/x', 'proxy-1')) AS forged;
SET nadi.clock_offset = '16min';
SELECT verdict(nadi.proxy_authorize(:'ta', 'sbx-a', 'api', 'GET', '/x', 'proxy-1')) AS expired;
RESET nadi.clock_offset;
SELECT state FROM nadi.session_terminate(:'s2');
SELECT upstream FROM nadi.egress_allow('egress-b', 'api');
SELECT verdict(nadi.proxy_authorize(:'tb', 'sbx-b', 'api', 'GET', '/x', 'proxy-1')) AS session_over;
SELECT try(format('SELECT nadi.sandbox_token(%L, %L)', :'s2', 'sbx-b'));

-- the proxy's own bad input
SELECT nadi.proxy_authorize(:'ta', 'sbx-a', 'api', 'get', '/x', 'proxy-1');
SELECT nadi.proxy_authorize(:'ta', 'sbx-a', 'api', 'GET', 'x', 'proxy-1');
SELECT nadi.proxy_authorize(:'ta', 'sbx a', 'api', 'GET', '/x', 'proxy-1');
SELECT nadi.proxy_authorize(:'ta', 'sbx-a', 'api', 'GET', '/x', NULL);

-- finishing an exchange: once, allowed ones only
SELECT (nadi.proxy_authorize(:'ta', 'sbx-a', 'api', 'POST', '/v1/chat', 'proxy-1')->>'exchange_id')::bigint AS x \gset
SELECT nadi.proxy_finish(:x, 200, 120, 4096, 12.5);
SELECT regexp_replace(try('SELECT nadi.proxy_finish(' || :x || ', 200, 120, 4096, 12.5)'), 'exchange \d+', 'exchange N') AS twice;
SELECT regexp_replace(try('SELECT nadi.proxy_finish(' || :x + 1000000 || ', 200, 0, 0, 0)'), 'exchange \d+', 'exchange N') AS unknown;
SELECT (nadi.proxy_authorize(:'ta', 'sbx-a', 'nope', 'GET', '/x', 'proxy-1')->>'exchange_id')::bigint AS refused \gset
SELECT regexp_replace(try('SELECT nadi.proxy_finish(' || :refused || ', 200, 0, 0, 0)'), 'exchange \d+', 'exchange N') AS refused;
SELECT (nadi.proxy_authorize(:'ta', 'sbx-a', 'api', 'GET', '/v1/big', 'proxy-1')->>'exchange_id')::bigint AS y \gset
SELECT nadi.proxy_finish(:y, 999, 0, 0, 0);
SELECT nadi.proxy_finish(:y, 200, 0, 65536, 80, 'response_too_large');

-- every exchange left audit rows; the token itself never
SELECT action, actor, tenant_id, session_id = :'s' AS own_session,
       detail - '{jti,exchange_id}'::text[] AS detail
FROM nadi.audit_log
WHERE action IN ('proxy.response') OR (action = 'proxy.request' AND detail->>'path' LIKE '/v1/%' AND detail->>'method' = 'POST')
ORDER BY audit_id;
SELECT count(*) AS requests, count(*) FILTER (WHERE (detail->>'allowed')::boolean) AS allowed
FROM nadi.audit_log WHERE action = 'proxy.request';
SELECT count(*) AS rows_with_token FROM nadi.audit_log WHERE detail::text LIKE '%' || :'ta' || '%';
SELECT action, detail FROM nadi.audit_log WHERE action LIKE 'egress.%' ORDER BY audit_id;

-- privileges: the proxy's role authorizes but cannot mint tokens or change rules
SET ROLE nadi_sandbox_host;
SELECT verdict(nadi.proxy_authorize(:'ta', 'sbx-a', 'api', 'GET', '/x', 'proxy-2')) AS as_sandbox_host;
SELECT nadi.sandbox_token(:'s', 'sbx-c');
SELECT nadi.model_token(:'s');
SELECT nadi.egress_allow('egress-a', 'x');
SELECT count(*) FROM nadi.egress_rules;
RESET ROLE;
SET ROLE nadi_edge;
SELECT nadi.proxy_authorize(:'ta', 'sbx-a', 'api', 'GET', '/x', 'proxy-2');
SELECT nadi.sandbox_token(:'s', 'sbx-c');
RESET ROLE;
SET ROLE nadi_cell;
-- a cell mints only for the sessions its (bound) host holds; this one holds
-- nothing (test/pgtap/hosts.sql has the cell that does)
SELECT try(format('SELECT nadi.model_token(%L)', :'s')) AS cell_without_lease;
SELECT nadi.proxy_finish(:y, 200, 0, 0, 0);
RESET ROLE;
-- the unchecked minter is the owner's alone, administrators included
SET ROLE nadi_admin;
SELECT nadi._token_mint_internal('egress-a', 'x', 'admin', '1 hour', NULL, 'nadi');
RESET ROLE;

-- the audit actor of the egress functions is the one every C function
-- records (nadi_actor): the role SET ROLE chose, not session_user, and a
-- token's subject under a token; like the other administrators' functions
-- they refuse a tenant token
SELECT max(audit_id) AS before_actor FROM nadi.audit_log \gset
CREATE ROLE egress_operator NOLOGIN IN ROLE nadi_admin;
SET ROLE egress_operator;
SELECT upstream FROM nadi.egress_allow('egress-a', 'actor-api', '{GET}');
SELECT nadi.egress_revoke('egress-a', 'actor-api') AS revoked;
SELECT tenant_id FROM nadi.session_create('egress-a');
RESET ROLE;
BEGIN;
SELECT nadi.authenticate(nadi.token_mint('egress-a', 'ops', 'admin')) ->> 'scope' AS scope;
SELECT upstream FROM nadi.egress_allow('*', 'actor-api', '{GET}');
SELECT nadi.egress_revoke('*', 'actor-api') AS revoked;
SELECT tenant_id FROM nadi.session_create('egress-a');
COMMIT;
BEGIN;
SELECT nadi.authenticate(nadi.token_mint('egress-a', 'alice', 'tenant')) ->> 'scope' AS scope;
SELECT nadi.egress_allow('egress-a', 'actor-api');
ROLLBACK;
SELECT action, actor, actor = session_user AS actor_is_session_user, tenant_id
FROM nadi.audit_log
WHERE audit_id > :before_actor AND action IN ('egress.allow', 'egress.revoke', 'session.create')
ORDER BY audit_id;
-- one actor for a C function and an egress function called the same way
SELECT count(DISTINCT actor) AS actors_per_caller
FROM nadi.audit_log
WHERE audit_id > :before_actor AND action IN ('egress.allow', 'egress.revoke', 'session.create')
GROUP BY actor LIKE 'token:%' ORDER BY 1;
-- the actor is who the caller acts as; the login is who it is, on every row
-- (session_user: neither SET ROLE nor a token nor SECURITY DEFINER changes it)
SELECT action, login = session_user AS login_is_session_user, login <> actor AS differs
FROM nadi.audit_log
WHERE audit_id > :before_actor AND action IN ('egress.allow', 'egress.revoke', 'session.create')
ORDER BY audit_id;
-- the host functions are the administrator's too: a member of nadi_admin
-- with a tenant token in force is refused, and nothing is bound
BEGIN;
SELECT nadi.authenticate(nadi.token_mint('egress-a', 'alice', 'tenant')) ->> 'scope' AS scope;
SAVEPOINT s;
SELECT nadi.host_bind('cell', 'egress-cell-1', 'egress_operator');
ROLLBACK TO s;
SELECT nadi.host_set_labels('sandbox', 'egress-sbx-1', '{}');
ROLLBACK;
SELECT count(*) AS bound FROM nadi.host_bindings WHERE host_id = 'egress-cell-1';
DROP ROLE egress_operator;

DROP FUNCTION verdict(jsonb);
SELECT nadi.egress_revoke('egress-a', 'api'), nadi.egress_revoke('egress-b', 'api');
