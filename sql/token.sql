-- Signing keys and tokens: key_create, key_rotate, token_mint, token_verify,
-- authenticate, current_claims, current_tenant, jwks.  Tokens, kids and
-- times are never printed: only what they decode to, and comparisons.
\pset null '(null)'

-- base64url and token surgery, for forging tokens below
CREATE FUNCTION b64url(t text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT rtrim(translate(encode(convert_to(t, 'UTF8'), 'base64'), E'+/\n', '-_'), '=')
$$;
CREATE FUNCTION b64url_bytes(s text) RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
    SELECT decode(rpad(translate(s, '-_', '+/'), (length(s) + 3) / 4 * 4, '='), 'base64')
$$;
CREATE FUNCTION jwt_header(tok text) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT convert_from(b64url_bytes(split_part(tok, '.', 1)), 'UTF8')::jsonb
$$;
CREATE FUNCTION jwt_payload(tok text) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT convert_from(b64url_bytes(split_part(tok, '.', 2)), 'UTF8')::jsonb
$$;
-- the token with its header and/or payload replaced, signature kept
CREATE FUNCTION jwt_with(tok text, header jsonb DEFAULT NULL, payload jsonb DEFAULT NULL,
                         sig text DEFAULT NULL)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(b64url(header::text), split_part(tok, '.', 1)) || '.' ||
           coalesce(b64url(payload::text), split_part(tok, '.', 2)) || '.' ||
           coalesce(sig, split_part(tok, '.', 3))
$$;
-- claims without the parts that change from run to run
CREATE FUNCTION stable_claims(c jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT mask((c - '{iat,nbf,exp,jti}'::text[])::text)::jsonb
$$;
CREATE FUNCTION verify(tok text, aud text DEFAULT 'nadi') RETURNS text LANGUAGE sql AS $$
    SELECT try(format('SELECT nadi.token_verify(%L, %L)', tok, aud))
$$;

-- no key yet: nothing to mint with
SELECT try($$SELECT nadi.token_mint('tok-acme', 'alice')$$);
SELECT nadi.jwks();

-- HS256 is a development option, off by default
SHOW nadi.allow_hs256;
SELECT try($$SELECT nadi.key_create('HS256')$$);
SELECT try($$SELECT nadi.key_create('RS256')$$);
SELECT try($$SELECT nadi.key_create('none')$$);
SELECT try($$SELECT nadi.key_create(NULL)$$);
SELECT count(*) AS keys FROM nadi.signing_keys;
SET nadi.allow_hs256 = on;
SELECT nadi.key_create('HS256') AS hkid \gset
SELECT alg, public_key IS NULL AS no_public_key,
       (SELECT length(secret) FROM nadi.signing_key_secrets s WHERE s.kid = k.kid) AS secret_bytes
FROM nadi.signing_keys k WHERE kid = :'hkid';
SELECT nadi.token_mint('tok-acme', 'alice') AS htok \gset
SELECT jwt_header(:'htok') - 'kid' AS header, jwt_header(:'htok') ->> 'kid' = :'hkid' AS kid_matches;
SELECT stable_claims(nadi.token_verify(:'htok'));
-- secrets are never published
SELECT nadi.jwks();
RESET nadi.allow_hs256;
-- switched off: HS256 tokens no longer verify and HS256 keys no longer mint
SELECT verify(:'htok');
SELECT try($$SELECT nadi.token_mint('tok-acme', 'alice')$$);

-- EdDSA keys
SELECT nadi.key_create() AS kid1 \gset
SELECT :'kid1' ~ '^[0-9a-f]{16}$' AS kid_is_16_hex;
SELECT alg, length(public_key) AS public_key_bytes, retire_at, expires_at,
       (SELECT length(secret) FROM nadi.signing_key_secrets s WHERE s.kid = k.kid) AS secret_bytes
FROM nadi.signing_keys k WHERE kid = :'kid1';
-- the EdDSA key is preferred to the HS256 one even with HS256 allowed
SET nadi.allow_hs256 = on;
SELECT jwt_header(nadi.token_mint('tok-acme', 'alice')) ->> 'kid' = :'kid1' AS eddsa_preferred;
RESET nadi.allow_hs256;

-- mint and verify
SELECT nadi.token_mint('tok-acme', 'alice') AS tok \gset
SELECT jwt_header(:'tok') - 'kid' AS header, jwt_header(:'tok') ->> 'kid' = :'kid1' AS kid_matches;
SELECT nadi.token_verify(:'tok') AS claims \gset
SELECT stable_claims(:'claims');
SELECT (c ->> 'exp')::bigint - (c ->> 'iat')::bigint AS lifetime_secs,
       c -> 'nbf' = c -> 'iat' AS nbf_is_iat,
       abs((c ->> 'iat')::bigint - extract(epoch FROM nadi.now())::bigint) <= 1 AS iat_is_now,
       c ->> 'jti' ~ '^[0-9a-f]{32}$' AS jti_is_random_hex,
       c = jwt_payload(:'tok') AS claims_are_payload
FROM (SELECT :'claims'::jsonb AS c) s;
SELECT nadi.token_verify(nadi.token_mint('tok-acme', 'alice')) ->> 'jti' <> :'claims'::jsonb ->> 'jti'
    AS each_token_its_own_jti;

-- jwks: the Ed25519 public key, x is the stored raw key
SELECT jsonb_array_length(nadi.jwks() -> 'keys') AS keys;
SELECT k - '{x,kid}'::text[] AS jwk, k ->> 'kid' = :'kid1' AS kid_matches,
       length(b64url_bytes(k ->> 'x')) AS x_bytes,
       b64url_bytes(k ->> 'x') = (SELECT public_key FROM nadi.signing_keys WHERE kid = :'kid1') AS x_matches
FROM jsonb_array_elements(nadi.jwks() -> 'keys') k;

-- scopes, sessions, lifetimes, audiences
SELECT session_id AS sid FROM nadi.session_create('tok-acme') \gset
SELECT session_id AS other_sid FROM nadi.session_create('tok-globex') \gset
SELECT stable_claims(nadi.token_verify(nadi.token_mint('tok-acme', 'agent-1', 'session', '10 minutes', :'sid')));
SELECT stable_claims(nadi.token_verify(nadi.token_mint('tok-acme', 'box-1', 'sandbox', session_id => :'sid')));
SELECT stable_claims(nadi.token_verify(nadi.token_mint('tok-acme', 'ops', 'admin')));
SELECT (c ->> 'exp')::bigint - (c ->> 'iat')::bigint AS lifetime_secs
FROM nadi.token_verify(nadi.token_mint('tok-acme', 'alice', ttl => '30 days')) c;
SELECT (c ->> 'exp')::bigint - (c ->> 'iat')::bigint AS lifetime_secs
FROM nadi.token_verify(nadi.token_mint('tok-acme', 'alice', ttl => '1 second')) c;
SELECT nadi.token_mint('tok-acme', 'alice', audience => 'edge') AS etok \gset
SELECT verify(:'etok');
SELECT nadi.token_verify(:'etok', 'edge') ->> 'aud' AS aud;
SELECT verify(:'tok', 'edge');
-- names are taken as given, JSON-escaped in the token
SELECT c -> 'tenant' AS tenant, c -> 'sub' AS sub, c ->> 'sub' = E'a\tb</' AS sub_matches
FROM nadi.token_verify(nadi.token_mint(E'tok-"q"\\', E'a\tb</')) c;

-- minting refuses bad input
SELECT try($$SELECT nadi.token_mint(NULL, 'alice')$$);
SELECT try($$SELECT nadi.token_mint('tok-acme', NULL)$$);
SELECT try($$SELECT nadi.token_mint('tok-acme', 'alice', NULL)$$);
SELECT try($$SELECT nadi.token_mint('tok-acme', 'alice', ttl => NULL)$$);
SELECT try($$SELECT nadi.token_mint('tok-acme', 'alice', audience => NULL)$$);
SELECT try($$SELECT nadi.token_mint('', 'alice')$$);
SELECT try($$SELECT nadi.token_mint('tok-acme', '')$$);
SELECT try($$SELECT nadi.token_mint('tok-acme', 'alice', audience => '')$$);
SELECT try(format('SELECT nadi.token_mint(%L, %L)', repeat('x', 256), 'alice'));
SELECT try(format('SELECT nadi.token_mint(%L, %L)', 'tok-acme', repeat('x', 256)));
SELECT try($$SELECT nadi.token_mint('tok-acme', 'alice', 'root')$$);
SELECT try($$SELECT nadi.token_mint('tok-acme', 'alice', 'none')$$);
SELECT try($$SELECT nadi.token_mint('tok-acme', 'alice', 'Tenant')$$);
SELECT try($$SELECT nadi.token_mint('tok-acme', 'alice', 'session')$$);
SELECT try($$SELECT nadi.token_mint('tok-acme', 'alice', 'sandbox')$$);
SELECT try($$SELECT nadi.token_mint('tok-acme', 'alice', 'session', session_id => '00000000-0000-0000-0000-000000000000')$$);
SELECT try(format($$SELECT nadi.token_mint('tok-acme', 'alice', 'session', session_id => %L)$$, :'other_sid'));
SELECT try($$SELECT nadi.token_mint('tok-acme', 'alice', ttl => '0')$$);
SELECT try($$SELECT nadi.token_mint('tok-acme', 'alice', ttl => '-1 hour')$$);
SELECT try($$SELECT nadi.token_mint('tok-acme', 'alice', ttl => '30 days 1 second')$$);
SELECT try($$SELECT nadi.token_mint('tok-acme', 'alice', ttl => '1 year')$$);

-- verification refuses anything not exactly as minted
-- a tampered signature, and claims changed under the original signature
SELECT verify(jwt_with(:'tok', sig => CASE WHEN left(split_part(:'tok', '.', 3), 1) = 'A' THEN 'B' ELSE 'A' END
                                      || substr(split_part(:'tok', '.', 3), 2)));
SELECT verify(jwt_with(:'tok', payload => jwt_payload(:'tok') || '{"tenant": "tok-globex"}'));
SELECT verify(jwt_with(:'tok', payload => jwt_payload(:'tok') || '{"scope": "admin"}'));
SELECT verify(jwt_with(:'tok', sig => ''));
SELECT verify(jwt_with(:'tok', sig => split_part(:'tok', '.', 3) || 'AAAA'));
SELECT verify(jwt_with(:'tok', sig => left(split_part(:'tok', '.', 3), 40)));
SELECT verify(jwt_with(:'tok', sig => translate(split_part(:'tok', '.', 3), '-_', '+/') || '='));
-- the header: unknown kid, no kid, another algorithm, "none", crit
SELECT verify(jwt_with(:'tok', header => jwt_header(:'tok') || '{"kid": "0123456789abcdef"}'));
SELECT verify(jwt_with(:'tok', header => jwt_header(:'tok') - 'kid'));
SELECT verify(jwt_with(:'tok', header => jwt_header(:'tok') || '{"kid": 7}'));
SELECT verify(jwt_with(:'tok', header => jwt_header(:'tok') || '{"alg": "HS256"}'));
SELECT verify(jwt_with(:'tok', header => jwt_header(:'tok') || '{"alg": "RS256"}'));
SELECT verify(jwt_with(:'tok', header => jwt_header(:'tok') || '{"alg": "none"}', sig => ''));
SELECT verify(jwt_with(:'tok', header => jwt_header(:'tok') || '{"alg": "none"}'));
SELECT verify(jwt_with(:'tok', header => jwt_header(:'tok') || '{"alg": "NONE"}', sig => ''));
SELECT verify(jwt_with(:'tok', header => '{"alg": "none", "typ": "JWT"}', sig => ''));
SELECT verify(jwt_with(:'tok', header => jwt_header(:'tok') || '{"crit": ["exp"]}'));
SELECT verify(b64url('{"alg":"EdDSA","alg":"none"}') || '.' || split_part(:'tok', '.', 2) || '.' || split_part(:'tok', '.', 3));
-- garbage
SELECT verify('');
SELECT verify('abc');
SELECT verify('a.b');
SELECT verify('a.b.c.d');
SELECT verify('a.b.c.d.e');
SELECT verify('..');
SELECT verify('not.a.token');
SELECT verify('eyJhbGciOiJFZERTQSJ9.e30.');
SELECT verify(b64url('[1]') || '.e30.c2ln');
SELECT verify(b64url('{"alg": "EdDSA", "kid": "x"}') || '.' || b64url('not json') || '.c2ln');
SELECT verify(:'tok' || ' ');
SELECT verify(' ' || :'tok');
SELECT verify(repeat('a', 9000));
SELECT verify(repeat('a', 3000) || '.' || repeat('b', 3000) || '.' || repeat('c', 3000));
-- NULLs
SELECT try($$SELECT nadi.token_verify(NULL)$$);
SELECT try(format('SELECT nadi.token_verify(%L, NULL)', :'tok'));
SELECT try(format('SELECT nadi.token_verify(%L, %L)', :'tok', ''));
-- the token itself never appears in a message
SELECT position(split_part(:'tok', '.', 2) IN verify(jwt_with(:'tok', sig => ''))) = 0 AS token_not_echoed;

-- expiry and not-before, against nadi.now()
SET nadi.clock_offset = '59min';
SELECT nadi.token_verify(:'tok') ->> 'sub' AS sub_at_59min;
SET nadi.clock_offset = '1h';
SELECT verify(:'tok');
SET nadi.clock_offset = '2d';
SELECT verify(:'tok');
SET nadi.clock_offset = '-30s';
SELECT nadi.token_verify(:'tok') ->> 'sub' AS sub_30s_early;
SET nadi.clock_offset = '-10min';
SELECT verify(:'tok');
RESET nadi.clock_offset;

-- authenticate: for the transaction by default
SELECT nadi.current_tenant() AS tenant, nadi.current_claims() AS claims;
BEGIN;
SELECT nadi.authenticate(:'tok') ->> 'tenant' AS authenticated;
SELECT nadi.current_tenant() AS tenant, stable_claims(nadi.current_claims()) AS claims;
SELECT count(*) > 0 AS sees_own, bool_and(tenant_id = 'tok-acme') AS only_own FROM nadi.session_list();
-- a tenant token does not make its holder an administrator
SELECT try($$SELECT nadi.token_mint('tok-acme', 'mallory', 'admin')$$);
COMMIT;
SELECT nadi.current_tenant() AS tenant_after_commit, nadi.current_claims() AS claims_after_commit;
BEGIN;
SELECT nadi.authenticate(:'tok') IS NOT NULL AS authenticated;
ROLLBACK;
SELECT nadi.current_tenant() AS tenant_after_rollback;
-- for the connection
SELECT nadi.authenticate(nadi.token_mint('tok-acme', 'agent-1', 'session', session_id => :'sid'), false) ->> 'scope' AS scope;
SELECT nadi.current_tenant() AS tenant, nadi.current_claims() ->> 'sid' = :'sid' AS sid_matches;
SELECT count(*) AS sessions_visible, bool_and(session_id = :'sid') AS only_its_session FROM nadi.session_list();
BEGIN;
COMMIT;
SELECT nadi.current_tenant() AS tenant_still;
-- a failed authenticate leaves no identity behind
SELECT try($$SELECT nadi.authenticate('garbage', false)$$);
SELECT nadi.current_tenant() AS tenant_after_failure;
SELECT nadi.authenticate(:'tok', false) IS NOT NULL AS authenticated;
SELECT try($$SELECT nadi.authenticate(NULL)$$);
SELECT nadi.current_tenant() AS tenant_after_null;
SELECT try(format('SELECT nadi.authenticate(%L, NULL)', :'tok'));
SELECT try(format('SELECT nadi.authenticate(%L)', :'etok'));
-- an admin token may mint
SELECT nadi.authenticate(nadi.token_mint('tok-acme', 'ops', 'admin'), false) ->> 'scope' AS scope;
SELECT nadi.token_verify(nadi.token_mint('tok-globex', 'bob')) ->> 'tenant' AS minted_by_admin_token;
SELECT nadi.authenticate(:'tok', true) IS NOT NULL AS back_to_transaction_only;
SELECT nadi.current_tenant() AS tenant_after_statement;

-- rotation: new tokens use the new key; old ones verify through the overlap
SELECT nadi.token_mint('tok-acme', 'alice', ttl => '1 day') AS old_tok \gset
SELECT nadi.key_rotate('1 hour') AS kid2 \gset
SELECT :'kid2' <> :'kid1' AS new_kid, :'kid2' ~ '^[0-9a-f]{16}$' AS kid_is_16_hex;
SELECT alg, kid = :'kid2' AS newest, retire_at IS NOT NULL AS retired, extract(epoch FROM expires_at - retire_at)::int AS overlap_secs
FROM nadi.signing_keys ORDER BY created_at;
SELECT nadi.token_mint('tok-acme', 'alice', ttl => '1 day') AS new_tok \gset
SELECT jwt_header(:'new_tok') ->> 'kid' = :'kid2' AS minted_with_new_key;
SELECT array_agg(k ->> 'kid' = :'kid2' ORDER BY k ->> 'kid' = :'kid2' DESC) AS jwks_kids_new
FROM jsonb_array_elements(nadi.jwks() -> 'keys') k;
SELECT nadi.token_verify(:'old_tok') ->> 'sub' AS old_token_verifies;
SELECT nadi.token_verify(:'new_tok') ->> 'sub' AS new_token_verifies;
SET nadi.clock_offset = '59min';
SELECT nadi.token_verify(:'old_tok') ->> 'sub' AS old_token_at_59min;
SET nadi.clock_offset = '61min';
SELECT verify(:'old_tok');
SELECT nadi.token_verify(:'new_tok') ->> 'sub' AS new_token_at_61min;
SELECT array_agg(k ->> 'kid' = :'kid2') AS jwks_kids_new FROM jsonb_array_elements(nadi.jwks() -> 'keys') k;
RESET nadi.clock_offset;
-- a second rotation never extends an older key's overlap
SELECT nadi.key_rotate('1 week') AS kid3 \gset
SELECT alg, kid = :'kid3' AS newest, extract(epoch FROM expires_at - retire_at)::int AS overlap_secs
FROM nadi.signing_keys ORDER BY created_at;
-- an overlap of zero revokes every older key at once
SELECT nadi.key_rotate('0') AS kid4 \gset
SELECT verify(:'new_tok');
SELECT array_agg(k ->> 'kid' = :'kid4') AS jwks_kids_new FROM jsonb_array_elements(nadi.jwks() -> 'keys') k;
SELECT jwt_header(nadi.token_mint('tok-acme', 'alice')) ->> 'kid' = :'kid4' AS minted_with_newest;
SELECT try($$SELECT nadi.key_rotate('-1 hour')$$);
SELECT try($$SELECT nadi.key_rotate(NULL)$$);

-- the audit log: keys and mints, never a token
SELECT action, count(*) FROM nadi.audit_log
WHERE action IN ('key.create', 'key.rotate', 'token.mint') GROUP BY action ORDER BY action;
SELECT bool_and(detail ?& '{kid,sub,scope,aud,exp,jti}') AS detail_complete,
       bool_and(detail::text !~ 'eyJ') AS no_tokens
FROM nadi.audit_log WHERE action = 'token.mint';
SELECT tenant_id, detail ->> 'sub' AS sub, detail ->> 'scope' AS scope
FROM nadi.audit_log WHERE action = 'token.mint' AND session_id = :'sid' ORDER BY audit_id;
SELECT actor = current_user AS actor_is_caller, detail - '{kid,retired_expire_at}'::text[] AS detail
FROM nadi.audit_log
WHERE action = 'key.rotate' ORDER BY audit_id;

-- privileges: edge services verify and authenticate, only admins mint
SELECT nadi.token_mint('tok-acme', 'alice') AS tok \gset
CREATE ROLE regress_tok_edge IN ROLE nadi_edge;
SET ROLE regress_tok_edge;
SELECT try($$SELECT nadi.token_mint('tok-acme', 'alice')$$);
SELECT try($$SELECT nadi.key_create()$$);
SELECT try($$SELECT nadi.key_rotate()$$);
SELECT try($$SELECT * FROM nadi.signing_key_secrets$$);
SELECT try($$SELECT * FROM nadi.signing_keys$$);
SELECT jsonb_array_length(nadi.jwks() -> 'keys') AS keys;
SELECT nadi.token_verify(:'tok') ->> 'sub' AS verified;
BEGIN;
SELECT nadi.authenticate(:'tok') ->> 'tenant' AS authenticated;
SELECT nadi.current_tenant() AS tenant;
COMMIT;
RESET ROLE;
DROP ROLE regress_tok_edge;
