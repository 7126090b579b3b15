/*
 * token.c — signing keys and tokens: nadi.key_create, nadi.key_rotate,
 * nadi.token_mint, nadi.token_verify, nadi.authenticate, nadi.jwks,
 * nadi.current_claims and nadi.current_tenant.
 *
 * Tokens are compact JWTs (jwt.c), signed with Ed25519 ("EdDSA") keys, or
 * with HS256 shared secrets when nadi.allow_hs256 is on (development only).
 * Public keys are in nadi.signing_keys; private keys and secrets in
 * nadi.signing_key_secrets, which only the extension's owner can read, so
 * every function here that touches keys is SECURITY DEFINER.
 *
 * A key mints until its retire_at and verifies until its expires_at;
 * nadi.key_rotate() sets both on every older key, so tokens already issued
 * keep working for an overlap period.  All times come from nadi_now(), the
 * injectable clock.  Tokens never appear in error messages or the audit log.
 */
#include "postgres.h"


#include "catalog/pg_type.h"
#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "nadi.h"
#include "jwt.h"
#include "jwt_claims.h"

/* The longest a token may live, whatever the caller asks for. */
#define TOKEN_MAX_TTL_SECS		(30 * SECS_PER_DAY)

#define INVALID_TOKEN(...) \
	ereport(ERROR, \
			(errcode(ERRCODE_NADI_INVALID_TOKEN), \
			 errmsg("invalid token"), \
			 errdetail(__VA_ARGS__)))

/* What verification yields. */
typedef struct VerifiedToken
{
	Jsonb	   *claims;
	char	   *tenant;
	char	   *subject;
	NadiScope	scope;
	bool		has_sid;
	pg_uuid_t	sid;
} VerifiedToken;

/* ------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------ */

/* nbytes random bytes as lowercase hex, in the current memory context. */
static char *
random_hex(int nbytes)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char buf[32];
	char	   *out;

	Assert(nbytes <= (int) sizeof(buf));
	if (!pg_strong_random(buf, nbytes))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random bytes")));
	out = palloc(nbytes * 2 + 1);
	for (int i = 0; i < nbytes; i++)
	{
		out[2 * i] = hex[buf[i] >> 4];
		out[2 * i + 1] = hex[buf[i] & 15];
	}
	out[nbytes * 2] = '\0';
	return out;
}

/* Seconds since the Unix epoch (rounded down), as JWT "NumericDate"s are. */
static int64
ts_to_unix(TimestampTz ts)
{
	int64		us = ts + (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY;

	if (us >= 0)
		return us / USECS_PER_SEC;
	return -((-us + USECS_PER_SEC - 1) / USECS_PER_SEC);
}

static TimestampTz
unix_to_ts(int64 secs)
{
	return (secs - (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY) *
		USECS_PER_SEC;
}

static bytea *
make_bytea(const unsigned char *data, size_t len)
{
	bytea	   *b = palloc(VARHDRSZ + len);

	SET_VARSIZE(b, VARHDRSZ + len);
	memcpy(VARDATA(b), data, len);
	return b;
}

/* A required text argument: not null, not empty, at most 255 bytes. */
static char *
name_arg(FunctionCallInfo fcinfo, int n, const char *name)
{
	char	   *s;
	size_t		len;

	NADI_ARG_NOT_NULL(n, name);
	s = text_to_cstring(PG_GETARG_TEXT_PP(n));
	len = strlen(s);
	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be empty", name)));
	if (len > NADI_JWT_MAX_NAME)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s is too long", name),
				 errdetail("It has %zu bytes; the limit is %d bytes.", len, NADI_JWT_MAX_NAME)));
	return s;
}

/* ------------------------------------------------------------------------
 * Keys
 * ------------------------------------------------------------------------ */

/* Generate and store a key under kid.  SPI must be connected. */
static void
store_new_key(nadi_jwt_alg alg, const char *kid, TimestampTz now)
{
	static SPIPlanPtr key_plan = NULL;
	static SPIPlanPtr secret_plan = NULL;
	Oid			key_types[4] = {TEXTOID, TEXTOID, BYTEAOID, TIMESTAMPTZOID};
	Oid			secret_types[2] = {TEXTOID, BYTEAOID};
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	unsigned char priv[64],
				pub[64];
	size_t		privlen,
				publen;
	bytea	   *secret;
	int			rc;

	rc = nadi_jwt_keygen(alg, priv, sizeof(priv), &privlen, pub, sizeof(pub), &publen);
	if (rc != NADI_JWT_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate a signing key"),
				 errdetail("The cryptographic library reported: %s.", nadi_jwt_strerror(rc))));

	values[0] = CStringGetTextDatum(kid);
	values[1] = CStringGetTextDatum(nadi_jwt_alg_name(alg));
	if (publen > 0)
		values[2] = PointerGetDatum(make_bytea(pub, publen));
	else
		nulls[2] = 'n';
	values[3] = TimestampTzGetDatum(now);
	nadi_exec(nadi_plan(&key_plan,
					  "INSERT INTO nadi.signing_keys (kid, alg, public_key, created_at) "
					  "VALUES ($1, $2, $3, $4)", 4, key_types),
			 values, nulls, false, 0);

	secret = make_bytea(priv, privlen);
	explicit_bzero(priv, sizeof(priv));
	values[1] = PointerGetDatum(secret);
	nadi_exec(nadi_plan(&secret_plan,
					  "INSERT INTO nadi.signing_key_secrets (kid, secret) VALUES ($1, $2)",
					  2, secret_types),
			 values, NULL, false, 0);
	explicit_bzero(VARDATA(secret), privlen);
}

static Jsonb *
key_audit_detail(const char *kid, const char *alg)
{
	return nadi_json_strings("kid", kid, "alg", alg, NULL);
}

/* nadi.key_create(alg text DEFAULT 'EdDSA') RETURNS text: the new key's kid */
PG_FUNCTION_INFO_V1(nadi_key_create);
Datum
nadi_key_create(PG_FUNCTION_ARGS)
{
	char	   *alg_name;
	nadi_jwt_alg alg;
	char	   *kid;

	NADI_ARG_NOT_NULL(0, "alg");
	nadi_require_admin();
	alg_name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	alg = nadi_jwt_alg_from_name(alg_name);
	if (alg == NADI_JWT_ALG_INVALID)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unsupported signing algorithm \"%s\"", alg_name),
				 errdetail("The supported algorithms are EdDSA and HS256.")));
	if (alg == NADI_JWT_ALG_HS256 && !nadi_allow_hs256)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("HS256 signing keys are disabled"),
				 errdetail("HS256 uses a shared secret: anything that can verify a token could also mint one."),
				 errhint("Use EdDSA; for development only, set nadi.allow_hs256 = on.")));

	kid = random_hex(8);
	nadi_connect();
	store_new_key(alg, kid, nadi_now());
	nadi_finish();
	nadi_audit("key.create", NULL, NULL, key_audit_detail(kid, nadi_jwt_alg_name(alg)));
	PG_RETURN_TEXT_P(cstring_to_text(kid));
}

/*
 * nadi.key_rotate(overlap interval DEFAULT '1 day') RETURNS text
 *
 * A new EdDSA key mints from now on.  Every other key still in force stops
 * minting now and stops verifying after the overlap (never later than it
 * already would): tokens issued before the rotation keep working that long.
 * An overlap of zero revokes every token signed with an older key at once.
 */
PG_FUNCTION_INFO_V1(nadi_key_rotate);
Datum
nadi_key_rotate(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr retire_plan = NULL;
	Oid			types[3] = {TIMESTAMPTZOID, TIMESTAMPTZOID, TEXTOID};
	Datum		values[3];
	TimestampTz now = nadi_now();
	TimestampTz until;
	char	   *kid;
	uint64		retired;
	StringInfoData buf;

	NADI_ARG_NOT_NULL(0, "overlap");
	nadi_require_admin();
	until = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
													TimestampTzGetDatum(now),
													PG_GETARG_DATUM(0)));
	if (until < now)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("overlap must not be negative")));

	kid = random_hex(8);
	nadi_connect();
	/* one rotation at a time, so two concurrent ones cannot both survive */
	if (SPI_execute("LOCK TABLE nadi.signing_keys IN SHARE ROW EXCLUSIVE MODE", false, 0) < 0)
		elog(ERROR, "could not lock nadi.signing_keys");
	store_new_key(NADI_JWT_ALG_EDDSA, kid, now);
	values[0] = TimestampTzGetDatum(now);
	values[1] = TimestampTzGetDatum(until);
	values[2] = CStringGetTextDatum(kid);
	nadi_exec(nadi_plan(&retire_plan,
					  "WITH old AS ("
					  " SELECT kid, retire_at IS NULL OR retire_at > $1 AS minting"
					  " FROM nadi.signing_keys"
					  " WHERE kid <> $3 AND (expires_at IS NULL OR expires_at > $1)) "
					  "UPDATE nadi.signing_keys k "
					  "SET retire_at = LEAST(k.retire_at, $1), expires_at = LEAST(k.expires_at, $2) "
					  "FROM old WHERE k.kid = old.kid "
					  "RETURNING old.minting",
					  3, types),
			 values, NULL, false, 0);
	retired = 0;
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;

		if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull)))
			retired++;
	}
	nadi_finish();

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	nadi_json_str(&buf, "kid", kid);
	nadi_json_str(&buf, "alg", "EdDSA");
	nadi_json_int(&buf, "retired", (int64) retired);
	nadi_json_str(&buf, "retired_expire_at", nadi_timestamptz_iso(until));
	appendStringInfoChar(&buf, '}');
	nadi_audit("key.rotate", NULL, NULL, nadi_jsonb(buf.data));
	PG_RETURN_TEXT_P(cstring_to_text(kid));
}

/* ------------------------------------------------------------------------
 * Minting
 * ------------------------------------------------------------------------ */

/*
 * nadi.token_mint(tenant_id text, subject text, scope text DEFAULT 'tenant',
 *                 ttl interval DEFAULT '1 hour', session_id uuid DEFAULT NULL,
 *                 audience text DEFAULT 'nadi') RETURNS text
 */
static Datum token_mint(FunctionCallInfo fcinfo);

PG_FUNCTION_INFO_V1(nadi_token_mint);
Datum
nadi_token_mint(PG_FUNCTION_ARGS)
{
	nadi_require_admin();
	return token_mint(fcinfo);
}

/*
 * nadi._token_mint_internal(): the same without the administrator check, for
 * the SECURITY DEFINER functions that mint narrow tokens for other roles
 * (nadi.sandbox_token, nadi.model_token).  Only the extension's owner may
 * execute it.
 */
PG_FUNCTION_INFO_V1(nadi_token_mint_internal);
Datum
nadi_token_mint_internal(PG_FUNCTION_ARGS)
{
	return token_mint(fcinfo);
}

/*
 * nadi._token_mint_claims(): _token_mint_internal with claims of the
 * caller's added (argument 7, a JSON object, or NULL), for the narrow tokens
 * that carry more than who may do what (nadi.sandboxd_token's "fork").  The
 * claims the minter sets itself cannot be among them.  Only the extension's
 * owner may execute it.
 */
PG_FUNCTION_INFO_V1(nadi_token_mint_claims);
Datum
nadi_token_mint_claims(PG_FUNCTION_ARGS)
{
	return token_mint(fcinfo);
}

/* The extra claims of nadi._token_mint_claims as members to append, or NULL. */
static char *
extra_claims(FunctionCallInfo fcinfo)
{
	static const char *const own[] = {"iss", "sub", "aud", "tenant", "scope", "sid", "iat", "nbf",
	"exp", "jti"};
	Jsonb	   *extra;
	char	   *text;
	size_t		len;

	if (PG_NARGS() < 7 || PG_ARGISNULL(6))
		return NULL;
	extra = PG_GETARG_JSONB_P(6);
	nadi_check_object(extra, "claims");
	for (int i = 0; i < lengthof(own); i++)
		if (nadi_jsonb_member(extra, own[i]) != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("claim \"%s\" is set by the minter", own[i]),
					 errdetail("Extra claims may not replace iss, sub, aud, tenant, scope, sid, iat, nbf, exp or jti.")));
	if (JB_ROOT_COUNT(extra) == 0)
		return NULL;
	/* the object's members without its braces */
	text = nadi_jsonb_text(extra);
	len = strlen(text);
	Assert(len >= 2 && text[0] == '{' && text[len - 1] == '}');
	return pnstrdup(text + 1, len - 2);
}

static Datum
token_mint(FunctionCallInfo fcinfo)
{
	static SPIPlanPtr session_plan = NULL;
	static SPIPlanPtr key_plan = NULL;
	Oid			session_types[1] = {UUIDOID};
	Oid			key_types[2] = {TIMESTAMPTZOID, BOOLOID};
	MemoryContext outer = CurrentMemoryContext;
	char	   *tenant,
			   *subject,
			   *scope_name,
			   *audience;
	NadiScope	scope;
	pg_uuid_t  *sid = NULL;
	char	   *sid_text = NULL;
	TimestampTz now = nadi_now();
	TimestampTz exp_ts;
	int64		iat,
				exp;
	char	   *kid;
	nadi_jwt_alg alg;
	bytea	   *secret;
	char	   *jti;
	StringInfoData payload;
	StringInfoData detail;
	char	   *extra;
	char	   *token;
	size_t		token_len;
	int			rc;

	tenant = name_arg(fcinfo, 0, "tenant_id");
	subject = name_arg(fcinfo, 1, "subject");
	NADI_ARG_NOT_NULL(2, "scope");
	NADI_ARG_NOT_NULL(3, "ttl");
	audience = name_arg(fcinfo, 5, "audience");
	extra = extra_claims(fcinfo);

	scope_name = text_to_cstring(PG_GETARG_TEXT_PP(2));
	scope = nadi_scope_from_string(scope_name);
	if (scope == NADI_SCOPE_NONE)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid scope \"%s\"", scope_name),
				 errdetail("A token's scope is admin, tenant, session or sandbox.")));
	if (!PG_ARGISNULL(4))
	{
		sid = PG_GETARG_UUID_P(4);
		sid_text = nadi_uuid_out(sid);
	}
	else if (scope == NADI_SCOPE_SESSION || scope == NADI_SCOPE_SANDBOX)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("a %s-scoped token needs a session_id", nadi_scope_name(scope)),
				 errdetail("Session and sandbox tokens are bound to one session.")));

	exp_ts = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
													 TimestampTzGetDatum(now),
													 PG_GETARG_DATUM(3)));
	if (exp_ts <= now)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("ttl must be positive")));
	if (exp_ts - now > (int64) TOKEN_MAX_TTL_SECS * USECS_PER_SEC)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("ttl must be at most 30 days"),
				 errhint("Mint a new token before the old one expires.")));
	iat = ts_to_unix(now);
	exp = ts_to_unix(exp_ts);

	nadi_connect();
	if (sid != NULL)
	{
		Datum		v[1];
		bool		isnull;
		char	   *owner;

		v[0] = UUIDPGetDatum(sid);
		nadi_exec(nadi_plan(&session_plan,
						  "SELECT tenant_id FROM nadi.sessions WHERE session_id = $1",
						  1, session_types),
				 v, NULL, true, 1);
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_NADI_SESSION_NOT_FOUND),
					 errmsg("session %s not found", sid_text)));
		owner = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0],
												  SPI_tuptable->tupdesc, 1, &isnull));
		if (strcmp(owner, tenant) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("session %s does not belong to tenant \"%s\"", sid_text, tenant)));
	}

	/* the newest key still minting; EdDSA before HS256 */
	{
		Datum		v[2];
		bool		isnull;
		HeapTuple	tup;
		TupleDesc	desc;
		bytea	   *s;

		v[0] = TimestampTzGetDatum(now);
		v[1] = BoolGetDatum(nadi_allow_hs256);
		nadi_exec(nadi_plan(&key_plan,
						  "SELECT k.kid, k.alg, s.secret "
						  "FROM nadi.signing_keys k JOIN nadi.signing_key_secrets s ON s.kid = k.kid "
						  "WHERE (k.retire_at IS NULL OR k.retire_at > $1) "
						  "AND (k.expires_at IS NULL OR k.expires_at > $1) "
						  "AND (k.alg = 'EdDSA' OR $2) "
						  "ORDER BY k.alg = 'EdDSA' DESC, k.created_at DESC, k.kid DESC LIMIT 1",
						  2, key_types),
				 v, NULL, true, 1);
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_NADI_NO_SIGNING_KEY),
					 errmsg("no signing key available"),
					 errdetail("No key is in force that may mint tokens."),
					 errhint("Create one with nadi.key_create().")));
		tup = SPI_tuptable->vals[0];
		desc = SPI_tuptable->tupdesc;
		kid = MemoryContextStrdup(outer, TextDatumGetCString(SPI_getbinval(tup, desc, 1, &isnull)));
		alg = nadi_jwt_alg_from_name(TextDatumGetCString(SPI_getbinval(tup, desc, 2, &isnull)));
		s = DatumGetByteaPP(SPI_getbinval(tup, desc, 3, &isnull));
		secret = MemoryContextAlloc(outer, VARSIZE_ANY(s));
		memcpy(secret, s, VARSIZE_ANY(s));
	}
	nadi_finish();

	jti = random_hex(16);
	initStringInfo(&payload);
	appendStringInfoChar(&payload, '{');
	nadi_json_str(&payload, "iss", NADI_JWT_ISSUER);
	nadi_json_str(&payload, "sub", subject);
	nadi_json_str(&payload, "aud", audience);
	nadi_json_str(&payload, "tenant", tenant);
	nadi_json_str(&payload, "scope", nadi_scope_name(scope));
	if (sid_text)
		nadi_json_str(&payload, "sid", sid_text);
	nadi_json_int(&payload, "iat", iat);
	nadi_json_int(&payload, "nbf", iat);
	nadi_json_int(&payload, "exp", exp);
	nadi_json_str(&payload, "jti", jti);
	if (extra)
		appendStringInfo(&payload, ",%s", extra);
	appendStringInfoChar(&payload, '}');

	token = palloc(NADI_JWT_MAX_TOKEN + 1);
	rc = nadi_jwt_sign(alg, kid, (const unsigned char *) VARDATA_ANY(secret),
					   VARSIZE_ANY_EXHDR(secret), payload.data,
					   token, NADI_JWT_MAX_TOKEN + 1, &token_len);
	explicit_bzero(VARDATA_ANY(secret), VARSIZE_ANY_EXHDR(secret));
	if (rc == NADI_JWT_ETOOLONG)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("token would be too long"),
				 errdetail("Tokens are limited to %d bytes.", NADI_JWT_MAX_TOKEN)));
	if (rc != NADI_JWT_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not sign token"),
				 errdetail("Signing reported: %s.", nadi_jwt_strerror(rc))));

	initStringInfo(&detail);
	appendStringInfoChar(&detail, '{');
	nadi_json_str(&detail, "kid", kid);
	nadi_json_str(&detail, "sub", subject);
	nadi_json_str(&detail, "scope", nadi_scope_name(scope));
	nadi_json_str(&detail, "aud", audience);
	nadi_json_str(&detail, "exp", nadi_timestamptz_iso(exp_ts));
	nadi_json_str(&detail, "jti", jti);
	if (extra)
		appendStringInfo(&detail, ",%s", extra);
	appendStringInfoChar(&detail, '}');
	nadi_audit("token.mint", sid, tenant, nadi_jsonb(detail.data));

	PG_RETURN_TEXT_P(cstring_to_text_with_len(token, (int) token_len));
}

/* ------------------------------------------------------------------------
 * Verification
 * ------------------------------------------------------------------------ */

/*
 * Verify a token: shape, key, algorithm, signature, key expiry, then the
 * claims, by the validator the daemons share (jwt_claims.c).  Raises
 * NADI_INVALID_TOKEN or NADI_TOKEN_EXPIRED; never puts the token in a message.
 */
static void
verify_token(text *token, const char *audience, VerifiedToken *out)
{
	static SPIPlanPtr key_plan = NULL;
	Oid			key_types[2] = {TEXTOID, TIMESTAMPTZOID};
	MemoryContext outer = CurrentMemoryContext;
	const char *data = VARDATA_ANY(token);
	size_t		len = VARSIZE_ANY_EXHDR(token);
	nadi_jwt_parsed *p = palloc(sizeof(nadi_jwt_parsed));
	nadi_jwt_alg key_alg;
	bytea	   *key;
	bool		key_expired;
	TimestampTz now = nadi_now();
	int64		now_s = ts_to_unix(now);
	NadiClaims	c;
	NadiClaimsResult cr;
	char		why[512];
	JsonLexContext *lex;
	int			rc;

	rc = nadi_jwt_parse(data, len, p);
	switch (rc)
	{
		case NADI_JWT_OK:
			break;
		case NADI_JWT_ETOOLONG:
			INVALID_TOKEN("Tokens are limited to %d bytes.", NADI_JWT_MAX_TOKEN);
			break;
		case NADI_JWT_EALG_NONE:
			INVALID_TOKEN("Unsigned tokens (\"alg\": \"none\") are not accepted.");
			break;
		case NADI_JWT_EALG:
			INVALID_TOKEN("The token's signing algorithm is not supported.");
			break;
		case NADI_JWT_ESIG:		/* a signature of no algorithm's length */
			INVALID_TOKEN("The token's signature does not verify.");
			break;
		default:
			INVALID_TOKEN("The token is malformed: %s.", nadi_jwt_strerror(rc));
			break;
	}
	if (!p->has_kid)
		INVALID_TOKEN("The token does not name its signing key (\"kid\").");

	/* the key: copied out of SPI's memory before SPI_finish */
	nadi_connect();
	{
		Datum		v[2];
		bool		isnull;
		HeapTuple	tup;
		TupleDesc	desc;
		Datum		d;

		v[0] = CStringGetTextDatum(p->kid);
		v[1] = TimestampTzGetDatum(now);
		nadi_exec(nadi_plan(&key_plan,
						  "SELECT k.alg, "
						  "CASE WHEN k.alg = 'HS256' THEN s.secret ELSE k.public_key END, "
						  "k.expires_at IS NOT NULL AND k.expires_at <= $2 "
						  "FROM nadi.signing_keys k "
						  "LEFT JOIN nadi.signing_key_secrets s ON s.kid = k.kid "
						  "WHERE k.kid = $1",
						  2, key_types),
				 v, NULL, true, 1);
		if (SPI_processed == 0)
			INVALID_TOKEN("The key that signed the token is unknown.");
		tup = SPI_tuptable->vals[0];
		desc = SPI_tuptable->tupdesc;
		key_alg = nadi_jwt_alg_from_name(TextDatumGetCString(SPI_getbinval(tup, desc, 1, &isnull)));
		d = SPI_getbinval(tup, desc, 2, &isnull);
		if (isnull)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("signing key has no key material")));
		{
			bytea	   *b = DatumGetByteaPP(d);

			key = MemoryContextAlloc(outer, VARSIZE_ANY(b));
			memcpy(key, b, VARSIZE_ANY(b));
		}
		key_expired = DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull));
	}
	nadi_finish();

	if (p->alg != key_alg)
		INVALID_TOKEN("The token's algorithm does not match its signing key.");
	if (key_alg == NADI_JWT_ALG_HS256 && !nadi_allow_hs256)
		INVALID_TOKEN("HS256 tokens are accepted only while nadi.allow_hs256 is on.");
	rc = nadi_jwt_verify(p, key_alg, (const unsigned char *) VARDATA_ANY(key),
						 VARSIZE_ANY_EXHDR(key));
	if (key_alg == NADI_JWT_ALG_HS256)
		explicit_bzero(VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key));
	if (rc == NADI_JWT_ESIG)
		INVALID_TOKEN("The token's signature does not verify.");
	if (rc != NADI_JWT_OK)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("signing key is unusable"),
				 errdetail("Verification reported: %s.", nadi_jwt_strerror(rc))));
	if (key_expired)
		ereport(ERROR,
				(errcode(ERRCODE_NADI_TOKEN_EXPIRED),
				 errmsg("token has expired"),
				 errdetail("The key that signed the token was rotated out and its overlap period has ended.")));

	/* claims: signed by us, but checked as if they were not */
	cr = nadi_claims_check(p->payload, p->payload_len, audience, now_s, &c, why, sizeof(why));
	if (cr == NADI_CLAIMS_EXPIRED)
		ereport(ERROR,
				(errcode(ERRCODE_NADI_TOKEN_EXPIRED),
				 errmsg("token has expired"),
				 errdetail("The token expired at %s.", nadi_timestamptz_iso(unix_to_ts(c.exp)))));
	if (cr == NADI_CLAIMS_NOT_YET && c.has_nbf && c.nbf > now_s + NADI_JWT_LEEWAY_S)
		INVALID_TOKEN("The token is not valid before %s.", nadi_timestamptz_iso(unix_to_ts(c.nbf)));
	if (cr != NADI_CLAIMS_OK)
		INVALID_TOKEN("%s", why);

	/* the claims as jsonb, for the caller and nadi.current_claims() */
	if (!pg_verifymbstr(p->payload, (int) p->payload_len, true))
		INVALID_TOKEN("The token's claims are not valid text in the database encoding.");
	/*
	 * PostgreSQL 17 gave makeJsonLexContextCstringLen the lexer to fill as
	 * its first argument (NULL: allocate one, as before) and a size_t length.
	 */
#if PG_VERSION_NUM >= 170000
	lex = makeJsonLexContextCstringLen(NULL, p->payload, p->payload_len,
									   GetDatabaseEncoding(), true);
#else
	lex = makeJsonLexContextCstringLen(p->payload, (int) p->payload_len,
									   GetDatabaseEncoding(), true);
#endif
	if (pg_parse_json(lex, &nullSemAction) != JSON_SUCCESS)
		INVALID_TOKEN("The token's claims are not valid JSON.");
	out->claims = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(p->payload)));
	if (!JB_ROOT_IS_OBJECT(out->claims))
		INVALID_TOKEN("The token's claims are not a JSON object.");
	out->subject = pstrdup(c.subject);
	out->tenant = pstrdup(c.tenant);
	out->scope = nadi_scope_from_string(c.scope_name);
	out->has_sid = c.has_sid;
	if (c.has_sid)
		memcpy(&out->sid, DatumGetUUIDP(DirectFunctionCall1(uuid_in, CStringGetDatum(c.sid))),
			   sizeof(pg_uuid_t));
	pfree(p);
}

/* nadi.token_verify(token text, audience text DEFAULT 'nadi') RETURNS jsonb */
PG_FUNCTION_INFO_V1(nadi_token_verify);
Datum
nadi_token_verify(PG_FUNCTION_ARGS)
{
	VerifiedToken v;
	char	   *audience;

	NADI_ARG_NOT_NULL(0, "token");
	audience = name_arg(fcinfo, 1, "audience");
	verify_token(PG_GETARG_TEXT_PP(0), audience, &v);
	PG_RETURN_JSONB_P(v.claims);
}

/*
 * nadi.authenticate(token text, transaction_only boolean DEFAULT true)
 * RETURNS jsonb
 *
 * Verify a token (audience "nadi") and put its tenant, subject, scope and
 * session in force for the transaction, or for the connection.  Whatever was
 * in force before is dropped first, so a failed call leaves none.
 */
PG_FUNCTION_INFO_V1(nadi_authenticate);
Datum
nadi_authenticate(PG_FUNCTION_ARGS)
{
	VerifiedToken v;

	nadi_auth_reset();
	NADI_ARG_NOT_NULL(0, "token");
	NADI_ARG_NOT_NULL(1, "transaction_only");
	verify_token(PG_GETARG_TEXT_PP(0), NADI_JWT_AUD_API, &v);
	nadi_auth_set(v.tenant, v.subject, v.scope, v.has_sid ? &v.sid : NULL, v.claims,
				  PG_GETARG_BOOL(1));
	PG_RETURN_JSONB_P(v.claims);
}

/* nadi.current_claims() RETURNS jsonb: the claims in force, or NULL */
PG_FUNCTION_INFO_V1(nadi_current_claims);
Datum
nadi_current_claims(PG_FUNCTION_ARGS)
{
	Jsonb	   *claims = nadi_auth_claims();
	Jsonb	   *copy;

	if (claims == NULL)
		PG_RETURN_NULL();
	copy = palloc(VARSIZE(claims));
	memcpy(copy, claims, VARSIZE(claims));
	PG_RETURN_JSONB_P(copy);
}

/* nadi.current_tenant() RETURNS text: the tenant in force, or NULL */
PG_FUNCTION_INFO_V1(nadi_current_tenant);
Datum
nadi_current_tenant(PG_FUNCTION_ARGS)
{
	const char *tenant = nadi_auth_tenant();

	if (tenant == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(tenant));
}

/*
 * nadi.jwks() RETURNS jsonb: the public keys that still verify, as a JSON
 * Web Key Set (RFC 7517, OKP keys per RFC 8037).  HS256 secrets never appear.
 */
PG_FUNCTION_INFO_V1(nadi_jwks);
Datum
nadi_jwks(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[1] = {TIMESTAMPTZOID};
	Datum		values[1];
	MemoryContext outer = CurrentMemoryContext;
	StringInfoData buf;
	StringInfoData key;

	initStringInfo(&buf);
	initStringInfo(&key);
	appendStringInfoString(&buf, "{\"keys\":[");
	values[0] = TimestampTzGetDatum(nadi_now());
	nadi_connect();
	nadi_exec(nadi_plan(&plan,
					  "SELECT kid, public_key FROM nadi.signing_keys "
					  "WHERE alg = 'EdDSA' AND public_key IS NOT NULL "
					  "AND (expires_at IS NULL OR expires_at > $1) "
					  "ORDER BY created_at DESC, kid",
					  1, types),
			 values, NULL, true, 0);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		char	   *kid = TextDatumGetCString(SPI_getbinval(tup, desc, 1, &isnull));
		bytea	   *pub = DatumGetByteaPP(SPI_getbinval(tup, desc, 2, &isnull));
		char		x[64];
		MemoryContext old;

		if (nadi_jwt_b64url_encode((const unsigned char *) VARDATA_ANY(pub),
								   VARSIZE_ANY_EXHDR(pub), x, sizeof(x), NULL) != NADI_JWT_OK)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("public key of signing key \"%s\" is malformed", kid)));
		old = MemoryContextSwitchTo(outer);
		resetStringInfo(&key);
		appendStringInfoChar(&key, '{');
		nadi_json_str(&key, "kty", "OKP");
		nadi_json_str(&key, "crv", "Ed25519");
		nadi_json_str(&key, "x", x);
		nadi_json_str(&key, "kid", kid);
		nadi_json_str(&key, "alg", "EdDSA");
		nadi_json_str(&key, "use", "sig");
		appendStringInfoChar(&key, '}');
		if (i > 0)
			appendStringInfoChar(&buf, ',');
		appendBinaryStringInfo(&buf, key.data, key.len);
		MemoryContextSwitchTo(old);
	}
	nadi_finish();
	appendStringInfoString(&buf, "]}");
	PG_RETURN_JSONB_P(nadi_jsonb(buf.data));
}
