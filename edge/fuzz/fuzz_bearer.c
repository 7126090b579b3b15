/*
 * fuzz_bearer.c — libFuzzer target for bearer tokens (bearer.c over
 * src/jwt.c, src/jwt_claims.c and daemonlib/jwks.c).
 * The first byte picks what the rest is:
 *   even: a raw Authorization header value ("Bearer " + the bytes), which
 *         exercises the compact-token parser and every early refusal;
 *   odd:  the claims of a token the harness signs with a key the edge
 *         trusts, so the claims validator (issuer, audience, scope, sid,
 *         exp, nbf, iat, types) sees arbitrary JSON behind a valid signature.
 *
 *   make -C edge fuzz && edge/fuzz/fuzz_bearer -max_total_time=60
 */
#include "../bearer.c"

EdgeConfig	edge_cfg = {.jwks_refresh_s = 60};
EdgeMetrics edge_metrics;

void
log_at(int level, const char *fmt, ...)
{
}

EdgeJob *
db_submit(EdgeStmt stmt, const EdgeAuth *auth, int nparams, const char *const *params,
		  EdgeDbDone done, void *arg)
{
	return NULL;
}

static unsigned char priv[NADI_JWT_ED25519_KEY_LEN];

static void
setup(void)
{
	unsigned char pub[NADI_JWT_ED25519_KEY_LEN];
	size_t		  privlen, publen;
	char		  x[64];
	char		  jwks[256];

	ev_init();
	jwks_init(&signing_keys, &keys_ops);
	nadi_jwt_keygen(NADI_JWT_ALG_EDDSA, priv, sizeof(priv), &privlen, pub, sizeof(pub), &publen);
	nadi_jwt_b64url_encode(pub, publen, x, sizeof(x), NULL);
	snprintf(jwks, sizeof(jwks),
			 "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\",\"kid\":\"fuzz\"}]}", x);
	if (jwks_loaded(&signing_keys, jwks) != 1)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool init;
	static char header[NADI_JWT_MAX_TOKEN + 64];
	EdgeAuth	a;
	EdgeProblem p;

	if (!init)
	{
		setup();
		init = true;
	}
	if (size == 0)
		return 0;
	memcpy(header, "Bearer ", 7);
	if ((data[0] & 1) == 0)
	{
		size_t n = size - 1 < NADI_JWT_MAX_TOKEN + 32 ? size - 1 : NADI_JWT_MAX_TOKEN + 32;

		memcpy(header + 7, data + 1, n);
		header[7 + n] = '\0';
	}
	else if (nadi_jwt_sign_parts(NADI_JWT_ALG_EDDSA, priv, sizeof(priv),
								 "{\"alg\":\"EdDSA\",\"typ\":\"JWT\",\"kid\":\"fuzz\"}", data + 1,
								 size - 1, header + 7, sizeof(header) - 7, NULL) != 0)
		return 0;
	if (auth_check(header, &a, &p) == AUTH_OK)
		auth_clear(&a);
	return 0;
}
