/*
 * jwt_test.c — unit tests for src/jwt.c (form, signatures, the JOSE header),
 * src/jwt_claims.c (the claims validator of the extension and the daemons)
 * and daemonlib/jwks.c (the daemons' key cache), without PostgreSQL.
 *
 *   cc -Wall -Wextra -Isrc -o jwt_test test/jwt_test.c src/jwt.c src/jwt_claims.c \
 *      daemonlib/jwks.c -lcrypto -ljansson
 *   ./jwt_test
 *
 * Prints one line per failure and a final "N passed, M failed"; exits
 * non-zero when anything failed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/jwt.h"
#include "../src/jwt_claims.h"
#include "../daemonlib/jwks.h"

#include "check.h"

#define CHECK_RC(expr, want) check_rc((expr), (want), #expr, __FILE__, __LINE__)

static void
check_rc(int got, int want, const char *what, const char *file, int line)
{
	if (got == want)
		passed++;
	else
	{
		failed++;
		printf("FAIL %s:%d: %s returned %d (%s), expected %d (%s)\n", file, line, what,
			   got, nadi_jwt_strerror(got), want, nadi_jwt_strerror(want));
	}
}

/* base64url of a C string (test helper). */
static const char *
b64(const char *s)
{
	static char buf[4][NADI_JWT_MAX_TOKEN + 1];
	static int	next;
	char	   *out = buf[next++ % 4];

	if (nadi_jwt_b64url_encode((const unsigned char *) s, strlen(s), out,
							   sizeof(buf[0]), NULL) != NADI_JWT_OK)
		abort();
	return out;
}

static void
test_base64url(void)
{
	/* RFC 4648 section 10 vectors, unpadded and URL-safe */
	static const struct
	{
		const char *plain;
		const char *enc;
	}			v[] = {
		{"", ""},
		{"f", "Zg"},
		{"fo", "Zm8"},
		{"foo", "Zm9v"},
		{"foob", "Zm9vYg"},
		{"fooba", "Zm9vYmE"},
		{"foobar", "Zm9vYmFy"},
	};
	char		enc[64];
	unsigned char dec[64];
	size_t		n;
	static const unsigned char bin[] = {0xfb, 0xff, 0xbf, 0xfe};

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
	{
		CHECK_RC(nadi_jwt_b64url_encode((const unsigned char *) v[i].plain, strlen(v[i].plain),
										enc, sizeof(enc), &n), NADI_JWT_OK);
		CHECK(n == strlen(v[i].enc) && strcmp(enc, v[i].enc) == 0);
		CHECK(nadi_jwt_b64url_encoded_len(strlen(v[i].plain)) == strlen(v[i].enc));
		CHECK_RC(nadi_jwt_b64url_decode(v[i].enc, strlen(v[i].enc), dec, sizeof(dec), &n),
				 NADI_JWT_OK);
		CHECK(n == strlen(v[i].plain) && memcmp(dec, v[i].plain, n) == 0);
	}

	/* the URL-safe alphabet: '-' and '_' where standard base64 has '+' and '/' */
	CHECK_RC(nadi_jwt_b64url_encode(bin, sizeof(bin), enc, sizeof(enc), &n), NADI_JWT_OK);
	CHECK(strcmp(enc, "-_-__g") == 0);
	CHECK_RC(nadi_jwt_b64url_decode("-_-__g", 6, dec, sizeof(dec), &n), NADI_JWT_OK);
	CHECK(n == 4 && memcmp(dec, bin, 4) == 0);

	/* strictness */
	CHECK_RC(nadi_jwt_b64url_decode("Zg==", 4, dec, sizeof(dec), &n), NADI_JWT_EBASE64);
	CHECK_RC(nadi_jwt_b64url_decode("Zm+v", 4, dec, sizeof(dec), &n), NADI_JWT_EBASE64);
	CHECK_RC(nadi_jwt_b64url_decode("Zm/v", 4, dec, sizeof(dec), &n), NADI_JWT_EBASE64);
	CHECK_RC(nadi_jwt_b64url_decode("Zm9 v", 5, dec, sizeof(dec), &n), NADI_JWT_EBASE64);
	CHECK_RC(nadi_jwt_b64url_decode("Z", 1, dec, sizeof(dec), &n), NADI_JWT_EBASE64);
	CHECK_RC(nadi_jwt_b64url_decode("Zm9vY", 5, dec, sizeof(dec), &n), NADI_JWT_EBASE64);
	/* non-canonical: spare bits set ("Zh" and "Zm9" decode to the same as "Zg"/"Zm8") */
	CHECK_RC(nadi_jwt_b64url_decode("Zh", 2, dec, sizeof(dec), &n), NADI_JWT_EBASE64);
	CHECK_RC(nadi_jwt_b64url_decode("Zm9", 3, dec, sizeof(dec), &n), NADI_JWT_EBASE64);
	/* buffers */
	CHECK_RC(nadi_jwt_b64url_decode("Zm9vYmFy", 8, dec, 5, &n), NADI_JWT_ETOOLONG);
	CHECK_RC(nadi_jwt_b64url_encode((const unsigned char *) "foobar", 6, enc, 8, &n),
			 NADI_JWT_ETOOLONG);
	CHECK_RC(nadi_jwt_b64url_encode((const unsigned char *) "foobar", 6, enc, 9, &n),
			 NADI_JWT_OK);
}

#define OBJ(s, want) CHECK_RC(nadi_jwt_json_check_object((s), strlen(s)), (want))

/* nadi_jwt_json_check_object of {"a":[[...]]}: depth levels in all */
static int
nested(int depth)
{
	char		obj[300];
	size_t		o = 0;

	o += snprintf(obj, sizeof(obj), "{\"a\":");
	for (int i = 1; i < depth; i++)
		obj[o++] = '[';
	for (int i = 1; i < depth; i++)
		obj[o++] = ']';
	obj[o++] = '}';
	obj[o] = '\0';
	return nadi_jwt_json_check_object(obj, o);
}

static void
test_json(void)
{
	OBJ("{}", NADI_JWT_OK);
	OBJ(" {\"a\" : [1, -2.5e+3, true, false, null, {\"b\": {}}]}\r\n", NADI_JWT_OK);
	OBJ("[]", NADI_JWT_EJSON);
	OBJ("\"x\"", NADI_JWT_EJSON);
	OBJ("{", NADI_JWT_EJSON);
	OBJ("{}{}", NADI_JWT_EJSON);
	OBJ("{\"a\":1,}", NADI_JWT_EJSON);
	OBJ("{'a':1}", NADI_JWT_EJSON);
	OBJ("{\"a\":01}", NADI_JWT_EJSON);
	OBJ("{\"a\":1.}", NADI_JWT_EJSON);
	OBJ("{\"a\":tru}", NADI_JWT_EJSON);
	OBJ("{\"a\":\"\x01\"}", NADI_JWT_EJSON);
	OBJ("{\"a\":\"\\u0000\"}", NADI_JWT_EJSON);
	OBJ("{\"a\":\"\\ud800\"}", NADI_JWT_EJSON);
	OBJ("{\"a\":\"\\x\"}", NADI_JWT_EJSON);
	OBJ("{\"a\":\"\xc3\xa9\"}", NADI_JWT_OK);
	OBJ("{\"a\":\"\xc3\"}", NADI_JWT_EJSON);	/* truncated */
	OBJ("{\"a\":\"\xc0\xaf\"}", NADI_JWT_EJSON);	/* overlong */
	OBJ("{\"a\":\"\xed\xa0\x80\"}", NADI_JWT_EJSON);	/* surrogate */
	/* nesting: exactly the limit passes, beyond it is refused rather than recursed into */
	CHECK_RC(nested(NADI_JWT_JSON_MAX_DEPTH), NADI_JWT_OK);
	CHECK_RC(nested(NADI_JWT_JSON_MAX_DEPTH + 1), NADI_JWT_EJSON);
	CHECK_RC(nested(90), NADI_JWT_EJSON);

	/* what the old hand-written scanner let through: duplicates, also nested */
	OBJ("{\"a\":1,\"a\":2}", NADI_JWT_EJSON);
	OBJ("{\"a\":{\"b\":1,\"b\":1}}", NADI_JWT_EJSON);
	/* a NUL byte: the text ends there for no one */
	CHECK_RC(nadi_jwt_json_check_object("{}\0{}", 5), NADI_JWT_EJSON);
	CHECK_RC(nadi_jwt_json_check_object("{\"a\":\"x\0y\"}", 11), NADI_JWT_EJSON);
	/* numbers beyond any integer or double */
	OBJ("{\"a\":123456789012345678901234567890}", NADI_JWT_EJSON);
	OBJ("{\"a\":1e999}", NADI_JWT_EJSON);
	OBJ("{\"a\":NaN}", NADI_JWT_EJSON);
	OBJ("{\"a\":-}", NADI_JWT_EJSON);
	OBJ("{\"a\":[1,2,]}", NADI_JWT_EJSON);
	OBJ("{\"a\":1}/*x*/", NADI_JWT_EJSON);
	OBJ("\xef\xbb\xbf{}", NADI_JWT_EJSON);	/* BOM */
	{
		int			dup;
		struct json_t *v;

		v = nadi_jwt_json_object("{\"k\":1,\"k\":1}", strlen("{\"k\":1,\"k\":1}"), &dup);
		CHECK(v == NULL && dup);
		v = nadi_jwt_json_object("{\"k\":1", strlen("{\"k\":1"), &dup);
		CHECK(v == NULL && !dup);
	}
}

static void
test_rfc8037(void)
{
	/* RFC 8037 appendix A.1 (key) and A.4 (signature) */
	const char *d = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
	const char *x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
	const char *jws = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc."
		"hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";
	const char *payload = "Example of Ed25519 signing";
	unsigned char priv[32],
				pub[32],
				derived[32];
	char		token[512];
	char		xenc[64];
	size_t		n;
	nadi_jwt_parsed *p = malloc(sizeof(*p));
	nadi_jwt_segments seg;

	CHECK_RC(nadi_jwt_b64url_decode(d, strlen(d), priv, sizeof(priv), &n), NADI_JWT_OK);
	CHECK(n == 32);
	CHECK_RC(nadi_jwt_b64url_decode(x, strlen(x), pub, sizeof(pub), &n), NADI_JWT_OK);
	CHECK(n == 32);
	CHECK_RC(nadi_jwt_ed25519_public(priv, derived), NADI_JWT_OK);
	CHECK(memcmp(derived, pub, 32) == 0);
	CHECK_RC(nadi_jwt_b64url_encode(derived, 32, xenc, sizeof(xenc), &n), NADI_JWT_OK);
	CHECK(strcmp(xenc, x) == 0);

	/* Ed25519 is deterministic: the exact JWS of the RFC */
	CHECK_RC(nadi_jwt_sign_parts(NADI_JWT_ALG_EDDSA, priv, 32, "{\"alg\":\"EdDSA\"}",
								 payload, strlen(payload), token, sizeof(token), &n), NADI_JWT_OK);
	CHECK(strcmp(token, jws) == 0);
	CHECK(n == strlen(jws));

	/* and it verifies; the payload is not JSON, so only split + verify_sig apply */
	CHECK_RC(nadi_jwt_split(jws, strlen(jws), &seg), NADI_JWT_OK);
	{
		unsigned char sig[64];

		CHECK_RC(nadi_jwt_b64url_decode(jws + seg.sig_off, seg.sig_len, sig, sizeof(sig), &n),
				 NADI_JWT_OK);
		CHECK(n == 64);
		CHECK_RC(nadi_jwt_verify_sig(NADI_JWT_ALG_EDDSA, pub, 32, jws, seg.sig_off - 1, sig, n),
				 NADI_JWT_OK);
		sig[10] ^= 1;
		CHECK_RC(nadi_jwt_verify_sig(NADI_JWT_ALG_EDDSA, pub, 32, jws, seg.sig_off - 1, sig, n),
				 NADI_JWT_ESIG);
	}
	/* parse refuses it: the payload is not a JSON object */
	CHECK_RC(nadi_jwt_parse(jws, strlen(jws), p), NADI_JWT_EJSON);
	free(p);
}

static void
test_rfc7515_hs256(void)
{
	/* RFC 7515 appendix A.1: HS256, with CR LF inside the JSON */
	const char *k = "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
	const char *jws = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9."
		"eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ."
		"dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
	unsigned char key[64];
	size_t		n;
	nadi_jwt_parsed *p = malloc(sizeof(*p));

	CHECK_RC(nadi_jwt_b64url_decode(k, strlen(k), key, sizeof(key), &n), NADI_JWT_OK);
	CHECK(n == 64);
	CHECK_RC(nadi_jwt_parse(jws, strlen(jws), p), NADI_JWT_OK);
	CHECK(p->alg == NADI_JWT_ALG_HS256);
	CHECK(!p->has_kid);
	CHECK(strcmp(p->header, "{\"typ\":\"JWT\",\r\n \"alg\":\"HS256\"}") == 0);
	CHECK(strstr(p->payload, "\"iss\":\"joe\"") != NULL);
	CHECK(p->sig_len == 32);
	CHECK_RC(nadi_jwt_verify(p, NADI_JWT_ALG_HS256, key, 64), NADI_JWT_OK);
	CHECK_RC(nadi_jwt_verify(p, NADI_JWT_ALG_EDDSA, key, 32), NADI_JWT_EALG_MISMATCH);
	key[0] ^= 1;
	CHECK_RC(nadi_jwt_verify(p, NADI_JWT_ALG_HS256, key, 64), NADI_JWT_ESIG);
	/* keys shorter than the hash are refused outright */
	CHECK_RC(nadi_jwt_verify(p, NADI_JWT_ALG_HS256, key, 16), NADI_JWT_EKEY);
	free(p);
}

static void
test_roundtrip(nadi_jwt_alg alg)
{
	unsigned char priv[64],
				pub[64],
				other_priv[64],
				other_pub[64];
	size_t		privlen,
				publen,
				olen,
				opublen,
				n;
	char		token[NADI_JWT_MAX_TOKEN + 1];
	char		bad[NADI_JWT_MAX_TOKEN + 64];
	const char *payload = "{\"sub\":\"alice\",\"tenant\":\"acme\",\"exp\":2000000000}";
	nadi_jwt_parsed *p = malloc(sizeof(*p));
	const unsigned char *vkey;
	size_t		vkeylen;
	char	   *dot;

	CHECK_RC(nadi_jwt_keygen(alg, priv, sizeof(priv), &privlen, pub, sizeof(pub), &publen),
			 NADI_JWT_OK);
	CHECK_RC(nadi_jwt_keygen(alg, other_priv, sizeof(other_priv), &olen,
							 other_pub, sizeof(other_pub), &opublen), NADI_JWT_OK);
	if (alg == NADI_JWT_ALG_EDDSA)
	{
		unsigned char derived[32];

		CHECK(privlen == 32 && publen == 32);
		CHECK_RC(nadi_jwt_ed25519_public(priv, derived), NADI_JWT_OK);
		CHECK(memcmp(derived, pub, 32) == 0);
		vkey = pub;
		vkeylen = publen;
	}
	else
	{
		CHECK(privlen == 32 && publen == 0);
		vkey = priv;
		vkeylen = privlen;
	}
	CHECK(memcmp(priv, other_priv, privlen) != 0);

	CHECK_RC(nadi_jwt_sign(alg, "k-1", priv, privlen, payload, token, sizeof(token), &n),
			 NADI_JWT_OK);
	CHECK(n == strlen(token));
	CHECK_RC(nadi_jwt_parse(token, n, p), NADI_JWT_OK);
	CHECK(p->alg == alg);
	CHECK(p->has_kid && strcmp(p->kid, "k-1") == 0);
	CHECK(strcmp(p->payload, payload) == 0 && p->payload_len == strlen(payload));
	CHECK(alg == NADI_JWT_ALG_EDDSA ?
		  strcmp(p->header, "{\"alg\":\"EdDSA\",\"typ\":\"JWT\",\"kid\":\"k-1\"}") == 0 :
		  strcmp(p->header, "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"k-1\"}") == 0);
	CHECK(p->signing_input == token && p->signing_input[p->signing_input_len] == '.');
	CHECK_RC(nadi_jwt_verify(p, alg, vkey, vkeylen), NADI_JWT_OK);
	/* another key of the same kind does not verify it */
	CHECK_RC(nadi_jwt_verify(p, alg, alg == NADI_JWT_ALG_EDDSA ? other_pub : other_priv,
							 alg == NADI_JWT_ALG_EDDSA ? opublen : olen), NADI_JWT_ESIG);
	/* nor does a key of the other algorithm, whatever its bytes */
	CHECK_RC(nadi_jwt_verify(p, alg == NADI_JWT_ALG_EDDSA ? NADI_JWT_ALG_HS256 : NADI_JWT_ALG_EDDSA,
							 vkey, vkeylen), NADI_JWT_EALG_MISMATCH);

	/* tamper with the payload: the signature no longer matches */
	strcpy(bad, token);
	dot = strchr(bad, '.');
	{
		char		tampered[NADI_JWT_MAX_TOKEN];

		snprintf(tampered, sizeof(tampered), "%s.%s",
				 b64("{\"sub\":\"alice\",\"tenant\":\"evil\",\"exp\":2000000000}"),
				 strchr(dot + 1, '.') + 1);
		memmove(dot + 1, tampered, strlen(tampered) + 1);
	}
	CHECK_RC(nadi_jwt_parse(bad, strlen(bad), p), NADI_JWT_OK);
	CHECK_RC(nadi_jwt_verify(p, alg, vkey, vkeylen), NADI_JWT_ESIG);

	/* tamper with the signature's first character */
	strcpy(bad, token);
	dot = strrchr(bad, '.');
	dot[1] = dot[1] == 'A' ? 'B' : 'A';
	CHECK_RC(nadi_jwt_parse(bad, strlen(bad), p), NADI_JWT_OK);
	CHECK_RC(nadi_jwt_verify(p, alg, vkey, vkeylen), NADI_JWT_ESIG);

	/* truncated or extended signature */
	strcpy(bad, token);
	dot = strrchr(bad, '.');
	dot[1 + (strlen(dot + 1) / 4 - 1) * 4] = '\0';	/* whole quads: still canonical */
	CHECK_RC(nadi_jwt_parse(bad, strlen(bad), p), NADI_JWT_OK);
	CHECK_RC(nadi_jwt_verify(p, alg, vkey, vkeylen), NADI_JWT_ESIG);
	snprintf(bad, sizeof(bad), "%sAAAA", token);
	{
		int			rc = nadi_jwt_parse(bad, strlen(bad), p);

		if (alg == NADI_JWT_ALG_EDDSA)
			CHECK_RC(rc, NADI_JWT_ESIG);	/* more than any signature */
		else
		{
			CHECK_RC(rc, NADI_JWT_OK);
			CHECK_RC(nadi_jwt_verify(p, alg, vkey, vkeylen), NADI_JWT_ESIG);
		}
	}

	/* swap in a header naming the other algorithm */
	{
		const char *h = alg == NADI_JWT_ALG_EDDSA ?
			"{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"k-1\"}" :
			"{\"alg\":\"EdDSA\",\"typ\":\"JWT\",\"kid\":\"k-1\"}";

		snprintf(bad, sizeof(bad), "%s%s", b64(h), strchr(token, '.'));
		CHECK_RC(nadi_jwt_parse(bad, strlen(bad), p), NADI_JWT_OK);
		CHECK_RC(nadi_jwt_verify(p, alg, vkey, vkeylen), NADI_JWT_EALG_MISMATCH);
	}

	/* sign without kid */
	CHECK_RC(nadi_jwt_sign(alg, NULL, priv, privlen, "{}", token, sizeof(token), &n), NADI_JWT_OK);
	CHECK_RC(nadi_jwt_parse(token, n, p), NADI_JWT_OK);
	CHECK(!p->has_kid && p->kid[0] == '\0');
	CHECK_RC(nadi_jwt_verify(p, alg, vkey, vkeylen), NADI_JWT_OK);

	/* a kid that needs escaping survives the round trip */
	CHECK_RC(nadi_jwt_sign(alg, "a\"b\\c\n", priv, privlen, "{}", token, sizeof(token), &n),
			 NADI_JWT_OK);
	CHECK_RC(nadi_jwt_parse(token, n, p), NADI_JWT_OK);
	CHECK(strcmp(p->kid, "a\"b\\c\n") == 0);

	/* signing refuses what could not be verified */
	CHECK_RC(nadi_jwt_sign(alg, "k", priv, privlen, "[1]", token, sizeof(token), &n),
			 NADI_JWT_EJSON);
	CHECK_RC(nadi_jwt_sign(alg, "k", priv, privlen, "{}", token, 20, &n), NADI_JWT_ETOOLONG);
	CHECK_RC(nadi_jwt_sign(alg, "", priv, privlen, "{}", token, sizeof(token), &n), NADI_JWT_EINVAL);
	CHECK_RC(nadi_jwt_sign(alg, "k\xff", priv, privlen, "{}", token, sizeof(token), &n),
			 NADI_JWT_EINVAL);
	CHECK_RC(nadi_jwt_sign(NADI_JWT_ALG_INVALID, "k", priv, privlen, "{}", token, sizeof(token), &n),
			 NADI_JWT_EALG);
	CHECK_RC(nadi_jwt_sign(alg, "k", priv, alg == NADI_JWT_ALG_EDDSA ? 31 : 16, "{}",
						   token, sizeof(token), &n), NADI_JWT_EKEY);
	{
		/* a payload that would make the token exceed the maximum */
		char	   *big = malloc(NADI_JWT_MAX_TOKEN);

		memset(big, ' ', NADI_JWT_MAX_TOKEN - 1);
		big[0] = '{';
		big[NADI_JWT_MAX_TOKEN - 2] = '}';
		big[NADI_JWT_MAX_TOKEN - 1] = '\0';
		CHECK_RC(nadi_jwt_sign(alg, "k", priv, privlen, big, token, sizeof(token), &n),
				 NADI_JWT_ETOOLONG);
		free(big);
	}
	free(p);
}

static void
test_malformed(void)
{
	nadi_jwt_parsed *p = malloc(sizeof(*p));
	char		tok[NADI_JWT_MAX_TOKEN + 16];
	const char *sig = "c2ln";		/* any base64url */
	char	   *big;

#define PARSE(s, want) CHECK_RC(nadi_jwt_parse((s), strlen(s), p), (want))
	PARSE("", NADI_JWT_EFORMAT);
	PARSE("abc", NADI_JWT_EFORMAT);
	PARSE("a.b", NADI_JWT_EFORMAT);
	PARSE("a.b.c.d", NADI_JWT_EFORMAT);
	PARSE("a.b.c.d.e", NADI_JWT_EFORMAT);
	PARSE("..", NADI_JWT_EFORMAT);
	PARSE(".e30.c2ln", NADI_JWT_EFORMAT);
	PARSE("e30..c2ln", NADI_JWT_EFORMAT);
	PARSE("e30=.e30.c2ln", NADI_JWT_EBASE64);
	PARSE("e3 0.e30.c2ln", NADI_JWT_EBASE64);
	PARSE("e30.e30.c2ln", NADI_JWT_EHEADER);	/* {} has no alg */

	/* alg "none", in any case, with or without a signature */
	snprintf(tok, sizeof(tok), "%s.%s.", b64("{\"alg\":\"none\",\"typ\":\"JWT\"}"), b64("{}"));
	PARSE(tok, NADI_JWT_EALG_NONE);
	snprintf(tok, sizeof(tok), "%s.%s.%s", b64("{\"alg\":\"None\"}"), b64("{}"), sig);
	PARSE(tok, NADI_JWT_EALG_NONE);
	snprintf(tok, sizeof(tok), "%s.%s.%s", b64("{\"alg\":\"RS256\",\"kid\":\"k\"}"), b64("{}"), sig);
	PARSE(tok, NADI_JWT_EALG);
	snprintf(tok, sizeof(tok), "%s.%s.%s", b64("{\"alg\":\"eddsa\"}"), b64("{}"), sig);
	PARSE(tok, NADI_JWT_EALG);
	snprintf(tok, sizeof(tok), "%s.%s.%s", b64("{\"alg\":[\"EdDSA\"]}"), b64("{}"), sig);
	PARSE(tok, NADI_JWT_EHEADER);
	snprintf(tok, sizeof(tok), "%s.%s.%s", b64("{\"alg\":\"HS256\",\"alg\":\"EdDSA\"}"), b64("{}"), sig);
	PARSE(tok, NADI_JWT_EHEADER);
	/* well-formed but unsigned: empty signature */
	snprintf(tok, sizeof(tok), "%s.%s.", b64("{\"alg\":\"EdDSA\"}"), b64("{}"));
	PARSE(tok, NADI_JWT_EFORMAT);
	/* kid must be a string and not too long */
	snprintf(tok, sizeof(tok), "%s.%s.%s", b64("{\"alg\":\"EdDSA\",\"kid\":7}"), b64("{}"), sig);
	PARSE(tok, NADI_JWT_EHEADER);
	{
		char		h[400];

		snprintf(h, sizeof(h), "{\"alg\":\"EdDSA\",\"kid\":\"%0200d\"}", 0);
		snprintf(tok, sizeof(tok), "%s.%s.%s", b64(h), b64("{}"), sig);
		PARSE(tok, NADI_JWT_EHEADER);
	}
	/* critical extensions are not understood */
	snprintf(tok, sizeof(tok), "%s.%s.%s",
			 b64("{\"alg\":\"EdDSA\",\"crit\":[\"b64\"],\"b64\":false}"), b64("{}"), sig);
	PARSE(tok, NADI_JWT_EHEADER);
	/* header or payload that are not JSON objects */
	snprintf(tok, sizeof(tok), "%s.%s.%s", b64("not json"), b64("{}"), sig);
	PARSE(tok, NADI_JWT_EJSON);
	snprintf(tok, sizeof(tok), "%s.%s.%s", b64("{\"alg\":\"EdDSA\"}"), b64("[1,2]"), sig);
	PARSE(tok, NADI_JWT_EJSON);
	snprintf(tok, sizeof(tok), "%s.%s.%s", b64("{\"alg\":\"EdDSA\"}"), b64("{\"a\":1} x"), sig);
	PARSE(tok, NADI_JWT_EJSON);
	{
		/* a NUL byte inside the payload */
		char		enc[32];
		static const unsigned char nul[] = {'{', '}', 0};

		nadi_jwt_b64url_encode(nul, 3, enc, sizeof(enc), NULL);
		snprintf(tok, sizeof(tok), "%s.%s.%s", b64("{\"alg\":\"EdDSA\"}"), enc, sig);
		PARSE(tok, NADI_JWT_EJSON);
	}
	/* the header is read as JSON, escapes in names and values included */
	snprintf(tok, sizeof(tok), "%s.%s.%s",
			 b64("{\"alg\":\"EdDSA\",\"k\\u0069d\":\"a\\\"b\\\\c\\/\\u00e9\\ud83d\\ude00\"}"), b64("{}"), sig);
	PARSE(tok, NADI_JWT_OK);
	CHECK(p->has_kid && strcmp(p->kid, "a\"b\\c/\xc3\xa9\xf0\x9f\x98\x80") == 0);
	snprintf(tok, sizeof(tok), "%s.%s.%s", b64("{\"alg\":\"Ed\\u0044SA\"}"), b64("{}"), sig);
	PARSE(tok, NADI_JWT_OK);
	CHECK(p->alg == NADI_JWT_ALG_EDDSA && !p->has_kid);
	/* a "kid" inside another member is not the header's */
	snprintf(tok, sizeof(tok), "%s.%s.%s", b64("{\"alg\":\"EdDSA\",\"x\":{\"kid\":\"inner\"}}"), b64("{}"), sig);
	PARSE(tok, NADI_JWT_OK);
	CHECK(!p->has_kid);
	/* any member twice makes the header ambiguous */
	snprintf(tok, sizeof(tok), "%s.%s.%s", b64("{\"alg\":\"EdDSA\",\"kid\":\"a\",\"kid\":\"b\"}"), b64("{}"), sig);
	PARSE(tok, NADI_JWT_EHEADER);
	snprintf(tok, sizeof(tok), "%s.%s.%s", b64("{\"alg\":\"EdDSA\",\"x\":1,\"x\":1}"), b64("{}"), sig);
	PARSE(tok, NADI_JWT_EHEADER);
	snprintf(tok, sizeof(tok), "%s.%s.%s", b64("{\"alg\":\"EdDSA\",\"k\\u0069d\":\"a\",\"kid\":\"b\"}"), b64("{}"), sig);
	PARSE(tok, NADI_JWT_EHEADER);
	/* "typ": "JWT" in any case, or nothing */
	snprintf(tok, sizeof(tok), "%s.%s.%s", b64("{\"alg\":\"EdDSA\",\"typ\":\"jwt\"}"), b64("{}"), sig);
	PARSE(tok, NADI_JWT_OK);
	snprintf(tok, sizeof(tok), "%s.%s.%s", b64("{\"alg\":\"EdDSA\",\"typ\":\"at+jwt\"}"), b64("{}"), sig);
	PARSE(tok, NADI_JWT_EHEADER);
	snprintf(tok, sizeof(tok), "%s.%s.%s", b64("{\"alg\":\"EdDSA\",\"typ\":1}"), b64("{}"), sig);
	PARSE(tok, NADI_JWT_EHEADER);
	/* "crit" of any type */
	snprintf(tok, sizeof(tok), "%s.%s.%s", b64("{\"alg\":\"EdDSA\",\"crit\":null}"), b64("{}"), sig);
	PARSE(tok, NADI_JWT_EHEADER);
	/* an empty kid is no kid; a kid of exactly the limit is one */
	snprintf(tok, sizeof(tok), "%s.%s.%s", b64("{\"alg\":\"EdDSA\",\"kid\":\"\"}"), b64("{}"), sig);
	PARSE(tok, NADI_JWT_OK);
	CHECK(!p->has_kid);
	{
		char		h[400];

		snprintf(h, sizeof(h), "{\"alg\":\"EdDSA\",\"kid\":\"%0*d\"}", NADI_JWT_MAX_KID, 0);
		snprintf(tok, sizeof(tok), "%s.%s.%s", b64(h), b64("{}"), sig);
		PARSE(tok, NADI_JWT_OK);
		CHECK(p->has_kid && strlen(p->kid) == NADI_JWT_MAX_KID);
	}
	/* the payload: duplicates, nested junk, NUL, huge numbers */
	snprintf(tok, sizeof(tok), "%s.%s.%s", b64("{\"alg\":\"EdDSA\"}"), b64("{\"exp\":1,\"exp\":2}"), sig);
	PARSE(tok, NADI_JWT_EJSON);
	snprintf(tok, sizeof(tok), "%s.%s.%s", b64("{\"alg\":\"EdDSA\"}"), b64("{\"a\":{\"t\":1,\"t\":2}}"), sig);
	PARSE(tok, NADI_JWT_EJSON);
	snprintf(tok, sizeof(tok), "%s.%s.%s", b64("{\"alg\":\"EdDSA\"}"), b64("{\"sub\":\"a\\u0000b\"}"), sig);
	PARSE(tok, NADI_JWT_EJSON);
	snprintf(tok, sizeof(tok), "%s.%s.%s", b64("{\"alg\":\"EdDSA\"}"), b64("{\"exp\":99999999999999999999999}"), sig);
	PARSE(tok, NADI_JWT_EJSON);
	snprintf(tok, sizeof(tok), "%s.%s.%s", b64("{\"alg\":\"EdDSA\"}"), b64("{\"a\":[{\"b\":[}]}"), sig);
	PARSE(tok, NADI_JWT_EJSON);
	snprintf(tok, sizeof(tok), "%s.%s.%s", b64("{\"alg\":\"EdDSA\"}"), b64("{\"a\":\"\xff\"}"), sig);
	PARSE(tok, NADI_JWT_EJSON);
	/* bad base64url in the signature */
	snprintf(tok, sizeof(tok), "%s.%s.%s", b64("{\"alg\":\"EdDSA\"}"), b64("{}"), "c2l+");
	PARSE(tok, NADI_JWT_EBASE64);
	/* a valid token parses */
	snprintf(tok, sizeof(tok), "%s.%s.%s", b64("{\"alg\":\"EdDSA\",\"kid\":\"k\"}"), b64("{}"), sig);
	PARSE(tok, NADI_JWT_OK);
	CHECK(p->sig_len == 3 && memcmp(p->sig, "sig", 3) == 0);

	/* over the maximum length, before anything else is looked at */
	big = malloc(NADI_JWT_MAX_TOKEN + 2);
	memset(big, 'a', NADI_JWT_MAX_TOKEN + 1);
	big[NADI_JWT_MAX_TOKEN + 1] = '\0';
	PARSE(big, NADI_JWT_ETOOLONG);
	free(big);
#undef PARSE

	CHECK_RC(nadi_jwt_parse(NULL, 0, p), NADI_JWT_EINVAL);
	CHECK(nadi_jwt_alg_from_name("none") == NADI_JWT_ALG_INVALID);
	CHECK(nadi_jwt_alg_from_name(NULL) == NADI_JWT_ALG_INVALID);
	CHECK(strcmp(nadi_jwt_alg_name(NADI_JWT_ALG_EDDSA), "EdDSA") == 0);
	CHECK(nadi_jwt_alg_name(NADI_JWT_ALG_INVALID) == NULL);
	CHECK_RC(nadi_jwt_verify_sig(NADI_JWT_ALG_INVALID, (const unsigned char *) "k", 1, "x", 1,
								 (const unsigned char *) "s", 1), NADI_JWT_EALG);
	free(p);
}

static void
test_uuid_text(void)
{
	CHECK(nadi_jwt_uuid_text("01a20ef0-40ea-73c0-8101-8b8d72711057"));
	CHECK(nadi_jwt_uuid_text("01A20EF0-40EA-73C0-8101-8B8D72711057"));
	CHECK(!nadi_jwt_uuid_text(NULL));
	CHECK(!nadi_jwt_uuid_text(""));
	CHECK(!nadi_jwt_uuid_text("01a20ef0-40ea-73c0-8101-8b8d7271105"));	/* short */
	CHECK(!nadi_jwt_uuid_text("01a20ef0-40ea-73c0-8101-8b8d727110577"));	/* long */
	CHECK(!nadi_jwt_uuid_text("01a20ef0x40ea-73c0-8101-8b8d72711057"));	/* dash */
	CHECK(!nadi_jwt_uuid_text("01a20ef0-40ea-73c0-8101-8b8d7271105g"));	/* hex */
	CHECK(!nadi_jwt_uuid_text("{1a20ef0-40ea-73c0-8101-8b8d72711057"));
}


/* ------------------------------------------------------------------------
 * The claims validator
 * ------------------------------------------------------------------------ */

#define NOW 1500

/* Check claims text j for audience "nadi" at NOW. */
static NadiClaimsResult
claims(const char *j, NadiClaims *c, char *why, size_t whylen)
{
	return nadi_claims_check(j, strlen(j), NADI_JWT_AUD_API, NOW, c, why, whylen);
}

/* The claims nadi.token_mint makes, with one member replaced or added (or removed: value NULL). */
static const char *
with(const char *name, const char *value)
{
	static const char *const names[] = {"iss", "sub", "aud", "tenant", "scope", "iat", "nbf", "exp", "jti"};
	static const char *const values[] = {"\"nadi\"", "\"alice\"", "\"nadi\"", "\"acme\"", "\"tenant\"",
	"1000", "1000", "2000", "\"j1\""};
	static char buf[4096];
	size_t		o = 0;
	bool		done = false;

	buf[o++] = '{';
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
	{
		const char *v = values[i];

		if (name && strcmp(name, names[i]) == 0)
		{
			v = value;
			done = true;
		}
		if (v == NULL)
			continue;
		o += snprintf(buf + o, sizeof(buf) - o, "%s\"%s\":%s", o > 1 ? "," : "", names[i], v);
	}
	if (name && !done && value)
		o += snprintf(buf + o, sizeof(buf) - o, "%s\"%s\":%s", o > 1 ? "," : "", name, value);
	snprintf(buf + o, sizeof(buf) - o, "}");
	return buf;
}

#define CLAIMS(j, want) CHECK_CLAIMS((j), (want), NULL)
#define CHECK_CLAIMS(j, want, why_has) check_claims((j), (want), (why_has), __LINE__)

static void
check_claims(const char *j, NadiClaimsResult want, const char *why_has, int line)
{
	NadiClaims	c;
	char		why[512];
	NadiClaimsResult got = claims(j, &c, why, sizeof(why));

	if (got == want && (why_has == NULL || strstr(why, why_has) != NULL) &&
		(got == NADI_CLAIMS_OK) == (why[0] == '\0'))
		passed++;
	else
	{
		failed++;
		printf("FAIL %s:%d: claims %s gave %d (%s), expected %d%s%s\n", __FILE__, line, j, got, why,
			   want, why_has ? " saying " : "", why_has ? why_has : "");
	}
}

static void
test_claims(void)
{
	NadiClaims	c;
	char		why[512];
	char		big[400];

	/* what nadi.token_mint makes */
	CHECK(claims(with(NULL, NULL), &c, why, sizeof(why)) == NADI_CLAIMS_OK);
	CHECK(strcmp(c.subject, "alice") == 0 && strcmp(c.tenant, "acme") == 0);
	CHECK(c.scope == NADI_JWT_SCOPE_TENANT && strcmp(c.scope_name, "tenant") == 0);
	CHECK(!c.has_sid && c.exp == 2000 && c.has_nbf && c.nbf == 1000 && c.has_iat && c.iat == 1000);
	CHECK(nadi_jwt_scope_from_name("admin") == NADI_JWT_SCOPE_ADMIN);
	CHECK(nadi_jwt_scope_from_name("Admin") == NADI_JWT_SCOPE_NONE);
	CHECK(nadi_jwt_scope_from_name(NULL) == NADI_JWT_SCOPE_NONE);
	CHECK(strcmp(nadi_jwt_scope_name(NADI_JWT_SCOPE_SANDBOX), "sandbox") == 0);
	CHECK(nadi_jwt_scope_name(NADI_JWT_SCOPE_NONE) == NULL);

	/* not an object, or not one strictly */
	CHECK_CLAIMS("[1]", NADI_CLAIMS_INVALID, "not a JSON object");
	CHECK_CLAIMS("{\"iss\":\"nadi\",\"iss\":\"nadi\"}", NADI_CLAIMS_INVALID, "not a JSON object");
	CHECK_CLAIMS("", NADI_CLAIMS_INVALID, "not a JSON object");
	CHECK(nadi_claims_check(with(NULL, NULL), strlen(with(NULL, NULL)), NULL, NOW, &c, why, sizeof(why)) ==
		  NADI_CLAIMS_INVALID);

	/* issuer */
	CHECK_CLAIMS(with("iss", NULL), NADI_CLAIMS_INVALID, "lacks the \"iss\" claim");
	CHECK_CLAIMS(with("iss", "\"evil\""), NADI_CLAIMS_INVALID, "not issued by nadi");
	CHECK_CLAIMS(with("iss", "\"Nadi\""), NADI_CLAIMS_INVALID, "not issued by nadi");
	CHECK_CLAIMS(with("iss", "[\"nadi\"]"), NADI_CLAIMS_INVALID, "not a string");

	/* subject and tenant: non-empty strings of at most 255 bytes */
	CHECK_CLAIMS(with("sub", NULL), NADI_CLAIMS_INVALID, "lacks the \"sub\" claim");
	CHECK_CLAIMS(with("sub", "\"\""), NADI_CLAIMS_INVALID, "\"sub\" claim is empty");
	CHECK_CLAIMS(with("sub", "7"), NADI_CLAIMS_INVALID, "\"sub\" claim is not a string");
	CHECK_CLAIMS(with("sub", "null"), NADI_CLAIMS_INVALID, "\"sub\" claim is not a string");
	snprintf(big, sizeof(big), "\"%0255d\"", 0);
	CLAIMS(with("sub", big), NADI_CLAIMS_OK);
	snprintf(big, sizeof(big), "\"%0256d\"", 0);
	CHECK_CLAIMS(with("sub", big), NADI_CLAIMS_INVALID, "too long");
	CHECK_CLAIMS(with("tenant", big), NADI_CLAIMS_INVALID, "too long");
	CHECK_CLAIMS(with("tenant", NULL), NADI_CLAIMS_INVALID, "lacks the \"tenant\" claim");
	CHECK_CLAIMS(with("tenant", "\"\""), NADI_CLAIMS_INVALID, "\"tenant\" claim is empty");
	CHECK_CLAIMS(with("tenant", "{\"a\":1}"), NADI_CLAIMS_INVALID, "not a string");
	/* names are taken as given, escapes undone */
	CHECK(claims(with("tenant", "\"tok-\\\"q\\\"\\\\\""), &c, why, sizeof(why)) == NADI_CLAIMS_OK &&
		  strcmp(c.tenant, "tok-\"q\"\\") == 0);

	/* scope */
	CHECK_CLAIMS(with("scope", NULL), NADI_CLAIMS_INVALID, "lacks the \"scope\" claim");
	CHECK_CLAIMS(with("scope", "\"root\""), NADI_CLAIMS_INVALID, "not a known scope");
	CHECK_CLAIMS(with("scope", "\"Tenant\""), NADI_CLAIMS_INVALID, "not a known scope");
	CHECK_CLAIMS(with("scope", "\"none\""), NADI_CLAIMS_INVALID, "not a known scope");
	CHECK_CLAIMS(with("scope", "1"), NADI_CLAIMS_INVALID, "not a string");
	CLAIMS(with("scope", "\"admin\""), NADI_CLAIMS_OK);

	/* sid: a uuid; session and sandbox scopes need one */
	CHECK_CLAIMS(with("scope", "\"session\""), NADI_CLAIMS_INVALID, "must carry a \"sid\" claim");
	CHECK_CLAIMS(with("scope", "\"sandbox\""), NADI_CLAIMS_INVALID, "must carry a \"sid\" claim");
	CHECK(claims("{\"iss\":\"nadi\",\"sub\":\"a\",\"aud\":\"nadi\",\"tenant\":\"t\",\"scope\":\"session\","
				 "\"sid\":\"01A20EF0-40ea-73c0-8101-8b8d72711057\",\"exp\":2000}", &c, why, sizeof(why)) == NADI_CLAIMS_OK &&
		  c.scope == NADI_JWT_SCOPE_SESSION && c.has_sid &&
		  strcmp(c.sid, "01A20EF0-40ea-73c0-8101-8b8d72711057") == 0 && !c.has_nbf && !c.has_iat);
	CHECK_CLAIMS(with("sid", "\"01a20ef0-40ea-73c0-8101-8b8d7271105\""), NADI_CLAIMS_INVALID, "not a uuid");
	CHECK_CLAIMS(with("sid", "\"01a20ef0-40ea-73c0-8101-8b8d727110577\""), NADI_CLAIMS_INVALID, "not a uuid");
	CHECK_CLAIMS(with("sid", "\"\""), NADI_CLAIMS_INVALID, "not a uuid");
	CHECK_CLAIMS(with("sid", "\"{1a20ef0-40ea-73c0-8101-8b8d72711057\""), NADI_CLAIMS_INVALID, "not a uuid");
	CHECK_CLAIMS(with("sid", "null"), NADI_CLAIMS_INVALID, "not a string");
	CHECK_CLAIMS(with("sid", "12"), NADI_CLAIMS_INVALID, "not a string");
	/* a tenant token may carry a sid: it is checked all the same */
	CLAIMS(with("sid", "\"01a20ef0-40ea-73c0-8101-8b8d72711057\""), NADI_CLAIMS_OK);

	/* audience: a string or an array of strings that names it */
	CHECK_CLAIMS(with("aud", NULL), NADI_CLAIMS_INVALID, "not meant for audience \"nadi\"");
	CHECK_CLAIMS(with("aud", "\"edge\""), NADI_CLAIMS_INVALID, "not meant for audience \"nadi\"");
	CHECK_CLAIMS(with("aud", "\"NADI\""), NADI_CLAIMS_INVALID, "not meant for audience");
	CLAIMS(with("aud", "[\"edge\",\"nadi\"]"), NADI_CLAIMS_OK);
	CHECK_CLAIMS(with("aud", "[\"edge\"]"), NADI_CLAIMS_INVALID, "not meant for audience");
	CHECK_CLAIMS(with("aud", "[]"), NADI_CLAIMS_INVALID, "not meant for audience");
	CHECK_CLAIMS(with("aud", "5"), NADI_CLAIMS_INVALID, "not a string or an array of strings");
	CHECK_CLAIMS(with("aud", "{\"nadi\":true}"), NADI_CLAIMS_INVALID, "not a string or an array of strings");
	CHECK_CLAIMS(with("aud", "[\"nadi\",5]"), NADI_CLAIMS_INVALID, "not a string or an array of strings");
	CHECK_CLAIMS(with("aud", "[[\"nadi\"]]"), NADI_CLAIMS_INVALID, "not a string or an array of strings");
	CHECK(nadi_claims_check(with("aud", "\"nadi-sandboxd\""), strlen(with("aud", "\"nadi-sandboxd\"")),
							NADI_JWT_AUD_SANDBOXD, NOW, &c, why, sizeof(why)) == NADI_CLAIMS_OK);

	/* exp: a NumericDate, in the future */
	CHECK_CLAIMS(with("exp", NULL), NADI_CLAIMS_INVALID, "lacks the \"exp\" claim");
	CHECK_CLAIMS(with("exp", "\"2000\""), NADI_CLAIMS_INVALID, "\"exp\" claim is not a number");
	CHECK_CLAIMS(with("exp", "true"), NADI_CLAIMS_INVALID, "\"exp\" claim is not a number");
	CHECK_CLAIMS(with("exp", "null"), NADI_CLAIMS_INVALID, "\"exp\" claim is not a number");
	CHECK_CLAIMS(with("exp", "[2000]"), NADI_CLAIMS_INVALID, "\"exp\" claim is not a number");
	CHECK_CLAIMS(with("exp", "-1"), NADI_CLAIMS_INVALID, "before 1970");
	CHECK_CLAIMS(with("exp", "-0.5"), NADI_CLAIMS_INVALID, "before 1970");
	CHECK_CLAIMS(with("exp", "1000000000000"), NADI_CLAIMS_INVALID, "out of range");
	CHECK_CLAIMS(with("exp", "1e12"), NADI_CLAIMS_INVALID, "out of range");
	CHECK_CLAIMS(with("exp", "1e300"), NADI_CLAIMS_INVALID, "out of range");
	CHECK_CLAIMS(with("exp", "9223372036854775807"), NADI_CLAIMS_INVALID, "out of range");
	CHECK(claims(with("exp", "999999999999"), &c, why, sizeof(why)) == NADI_CLAIMS_OK && c.exp == INT64_C(999999999999));
	CHECK(claims(with("exp", "999999999999.9"), &c, why, sizeof(why)) == NADI_CLAIMS_OK && c.exp == INT64_C(999999999999));
	CHECK(claims(with("exp", "1500.9"), &c, why, sizeof(why)) == NADI_CLAIMS_EXPIRED && c.exp == 1500);
	CHECK(claims(with("exp", "1.501e3"), &c, why, sizeof(why)) == NADI_CLAIMS_OK && c.exp == 1501);
	CHECK_CLAIMS(with("exp", "1500"), NADI_CLAIMS_EXPIRED, "expired");
	CHECK_CLAIMS(with("exp", "0"), NADI_CLAIMS_EXPIRED, "expired");
	CLAIMS(with("exp", "1501"), NADI_CLAIMS_OK);

	/* nbf and iat: NumericDates, not later than now plus the leeway */
	CLAIMS(with("nbf", NULL), NADI_CLAIMS_OK);
	CLAIMS(with("nbf", "1560"), NADI_CLAIMS_OK);
	CHECK(claims(with("nbf", "1561"), &c, why, sizeof(why)) == NADI_CLAIMS_NOT_YET && c.has_nbf && c.nbf == 1561);
	CHECK_CLAIMS(with("nbf", "\"1000\""), NADI_CLAIMS_INVALID, "\"nbf\" claim is not a number");
	CHECK_CLAIMS(with("nbf", "-5"), NADI_CLAIMS_INVALID, "before 1970");
	CLAIMS(with("iat", NULL), NADI_CLAIMS_OK);
	CLAIMS(with("iat", "1560"), NADI_CLAIMS_OK);
	CHECK_CLAIMS(with("iat", "1561"), NADI_CLAIMS_NOT_YET, "issued in the future");
	CHECK_CLAIMS(with("iat", "\"now\""), NADI_CLAIMS_INVALID, "\"iat\" claim is not a number");
	CHECK_CLAIMS(with("iat", "1e13"), NADI_CLAIMS_INVALID, "out of range");
	/* an expired token is expired, whatever else: exp is checked before nbf */
	CHECK_CLAIMS("{\"iss\":\"nadi\",\"sub\":\"a\",\"aud\":\"nadi\",\"tenant\":\"t\",\"scope\":\"admin\",\"exp\":1,\"nbf\":99999}",
				 NADI_CLAIMS_EXPIRED, "expired");

	/* members nobody reads are allowed, whatever their type */
	CLAIMS(with("x", "{\"y\":[1,2,{\"z\":null}]}"), NADI_CLAIMS_OK);
	CLAIMS(with("jti", "7"), NADI_CLAIMS_OK);
}

/* Signed tokens end to end: mint (as token.c does), parse, verify, check. */
static void
test_signed_tokens(void)
{
	unsigned char priv[32],
				pub[32],
				other_priv[32],
				other_pub[32];
	size_t		privlen,
				publen;
	char		token[NADI_JWT_MAX_TOKEN + 1];
	char		payload[512];
	size_t		n;
	nadi_jwt_parsed *p = malloc(sizeof(*p));
	NadiClaims	c;
	char		why[512];

	CHECK_RC(nadi_jwt_keygen(NADI_JWT_ALG_EDDSA, priv, sizeof(priv), &privlen, pub, sizeof(pub), &publen), NADI_JWT_OK);
	CHECK_RC(nadi_jwt_keygen(NADI_JWT_ALG_EDDSA, other_priv, sizeof(other_priv), &privlen,
							 other_pub, sizeof(other_pub), &publen), NADI_JWT_OK);
	snprintf(payload, sizeof(payload),
			 "{\"iss\":\"nadi\",\"sub\":\"cell:h1\",\"aud\":\"nadi-sandboxd\",\"tenant\":\"acme\","
			 "\"scope\":\"sandbox\",\"sid\":\"01a20ef0-40ea-73c0-8101-8b8d72711057\","
			 "\"iat\":%d,\"nbf\":%d,\"exp\":%d,\"jti\":\"00ff\"}", NOW, NOW, NOW + 3600);
	CHECK_RC(nadi_jwt_sign(NADI_JWT_ALG_EDDSA, "0123456789abcdef", priv, 32, payload, token, sizeof(token), &n),
			 NADI_JWT_OK);
	CHECK_RC(nadi_jwt_parse(token, n, p), NADI_JWT_OK);
	CHECK(p->has_kid && strcmp(p->kid, "0123456789abcdef") == 0);
	CHECK_RC(nadi_jwt_verify(p, NADI_JWT_ALG_EDDSA, pub, 32), NADI_JWT_OK);
	CHECK_RC(nadi_jwt_verify(p, NADI_JWT_ALG_EDDSA, other_pub, 32), NADI_JWT_ESIG);
	CHECK(nadi_claims_check(p->payload, p->payload_len, NADI_JWT_AUD_SANDBOXD, NOW, &c, why, sizeof(why)) ==
		  NADI_CLAIMS_OK);
	CHECK(c.scope == NADI_JWT_SCOPE_SANDBOX && strcmp(c.sid, "01a20ef0-40ea-73c0-8101-8b8d72711057") == 0 &&
		  strcmp(c.subject, "cell:h1") == 0 && c.exp == NOW + 3600);
	/* the same token for another audience, or an hour later */
	CHECK(nadi_claims_check(p->payload, p->payload_len, NADI_JWT_AUD_API, NOW, &c, why, sizeof(why)) ==
		  NADI_CLAIMS_INVALID);
	CHECK(nadi_claims_check(p->payload, p->payload_len, NADI_JWT_AUD_SANDBOXD, NOW + 3600, &c, why, sizeof(why)) ==
		  NADI_CLAIMS_EXPIRED);
	CHECK(nadi_claims_check(p->payload, p->payload_len, NADI_JWT_AUD_SANDBOXD, NOW - 61, &c, why, sizeof(why)) ==
		  NADI_CLAIMS_NOT_YET);

	/* signed, but not claims anyone can read: refused before the signature matters */
	CHECK_RC(nadi_jwt_sign_parts(NADI_JWT_ALG_EDDSA, priv, 32, "{\"alg\":\"EdDSA\",\"kid\":\"k\"}",
								 "{\"exp\":1,\"exp\":9}", strlen("{\"exp\":1,\"exp\":9}"),
								 token, sizeof(token), &n), NADI_JWT_OK);
	CHECK_RC(nadi_jwt_parse(token, n, p), NADI_JWT_EJSON);
	CHECK_RC(nadi_jwt_sign_parts(NADI_JWT_ALG_EDDSA, priv, 32, "{\"alg\":\"EdDSA\",\"kid\":\"k\",\"kid\":\"k\"}",
								 "{}", 2, token, sizeof(token), &n), NADI_JWT_OK);
	CHECK_RC(nadi_jwt_parse(token, n, p), NADI_JWT_EHEADER);
	/* a signed payload with a NUL after the object */
	CHECK_RC(nadi_jwt_sign_parts(NADI_JWT_ALG_EDDSA, priv, 32, "{\"alg\":\"EdDSA\",\"kid\":\"k\"}",
								 "{}\0{\"scope\":\"admin\"}", 20, token, sizeof(token), &n), NADI_JWT_OK);
	CHECK_RC(nadi_jwt_parse(token, n, p), NADI_JWT_EJSON);
	/* signing refuses a payload with a member twice */
	CHECK_RC(nadi_jwt_sign(NADI_JWT_ALG_EDDSA, "k", priv, 32, "{\"a\":1,\"a\":2}", token, sizeof(token), &n),
			 NADI_JWT_EJSON);
	free(p);
}

/* ------------------------------------------------------------------------
 * The daemons' key cache
 * ------------------------------------------------------------------------ */

static uint64_t fake_now = 10000;
static int	fetches,
			defers;
static uint64_t last_defer;
static JwksFetch fetch_answer = JWKS_FETCH_STARTED;
static int	woken;

static JwksFetch
fake_fetch(void *arg)
{
	(void) arg;
	fetches++;
	return fetch_answer;
}

static void
fake_defer(void *arg, uint64_t delay_ms)
{
	(void) arg;
	defers++;
	last_defer = delay_ms;
}

static uint64_t
fake_clock(void)
{
	return fake_now;
}

static void
wake_me(void *arg)
{
	woken += *(int *) arg;
}

static void
test_jwks(void)
{
	static const JwksOps ops = {.fetch = fake_fetch,.defer = fake_defer,.now_ms = fake_clock};
	JwksKey		k[4];
	JwksCache	c;
	char		set[1024];
	char		x[64];
	unsigned char pub[32];
	int			one = 1,
				ten = 10;

	memset(pub, 7, sizeof(pub));
	nadi_jwt_b64url_encode(pub, 32, x, sizeof(x), NULL);
	snprintf(set, sizeof(set),
			 "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\",\"kid\":\"k1\"},"
			 "{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"%s\",\"kid\":\"k2\"},"
			 "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"AAAA\",\"kid\":\"short\"},"
			 "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\"},"
			 "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\",\"kid\":\"\"},"
			 "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\",\"kid\":\"k3\"}]}", x, x, x, x, x);
	CHECK(jwks_parse(set, k, 4) == 2);
	CHECK(strcmp(k[0].kid, "k1") == 0 && strcmp(k[1].kid, "k3") == 0 && memcmp(k[1].pub, pub, 32) == 0);
	CHECK(jwks_parse(set, k, 1) == 1);
	CHECK(jwks_parse("{\"keys\":[]}", k, 4) == 0);
	CHECK(jwks_parse("{\"keys\":{}}", k, 4) == -1);
	CHECK(jwks_parse("{}", k, 4) == -1);
	CHECK(jwks_parse("[]", k, 4) == -1);
	CHECK(jwks_parse("{\"keys\":[],\"keys\":[]}", k, 4) == -1);
	CHECK(jwks_parse(NULL, k, 4) == -1);

	jwks_init(&c, &ops);
	CHECK(jwks_stale(&c, 60000) && jwks_count(&c) == 0 && jwks_find(&c, "k1") == NULL);
	/* a refresh fetches; another while it runs does not */
	jwks_refresh(&c);
	jwks_refresh(&c);
	CHECK(fetches == 1 && c.in_flight);
	CHECK(jwks_wait(&c, wake_me, &one));
	CHECK(jwks_waiting(&c) && fetches == 1 && woken == 0);
	CHECK(jwks_loaded(&c, set) == 2);
	CHECK(woken == 1 && !jwks_waiting(&c) && !c.in_flight);
	CHECK(jwks_count(&c) == 2 && jwks_find(&c, "k3") != NULL && jwks_find(&c, "k2") == NULL);
	CHECK(!jwks_stale(&c, 60000));
	fake_now += 60000;
	CHECK(jwks_stale(&c, 60000));

	/* at most one fetch a second: sooner is deferred, by what remains */
	jwks_refresh(&c);
	CHECK(fetches == 2);
	CHECK(jwks_failed(&c));
	CHECK(!jwks_failed(&c));	/* nothing under way, nobody waiting: nothing to report */
	fake_now += 300;
	jwks_refresh(&c);
	CHECK(fetches == 2 && defers == 1 && last_defer == 700);
	fake_now += 700;
	jwks_refresh(&c);
	CHECK(fetches == 3);

	/* a bad key set keeps the keys known, and still ends the waits */
	CHECK(jwks_wait(&c, wake_me, &ten));
	CHECK(jwks_loaded(&c, "{\"nokeys\":1}") == -1);
	CHECK(woken == 11 && jwks_count(&c) == 2);

	/* a cancelled wait is not called back */
	fake_now += 1000;
	CHECK(jwks_wait(&c, wake_me, &ten));
	jwks_wait_cancel(&c, &ten);
	CHECK(!jwks_waiting(&c));
	CHECK(jwks_loaded(&c, set) == 2 && woken == 11);

	/* no database: the waits end at once; not now: they go on, retried later */
	fake_now += 1000;
	fetch_answer = JWKS_FETCH_NONE;
	CHECK(jwks_wait(&c, wake_me, &one));
	CHECK(woken == 12 && !jwks_waiting(&c) && !c.in_flight);
	fake_now += 1000;
	fetch_answer = JWKS_FETCH_LATER;
	CHECK(jwks_wait(&c, wake_me, &one));
	CHECK(woken == 12 && jwks_waiting(&c) && !c.in_flight && last_defer == JWKS_MIN_REFRESH_MS);
	jwks_done(&c);
	CHECK(!jwks_waiting(&c) && woken == 12);
	fetch_answer = JWKS_FETCH_STARTED;
}

int
main(void)
{
	test_base64url();
	test_json();
	test_rfc8037();
	test_rfc7515_hs256();
	test_roundtrip(NADI_JWT_ALG_EDDSA);
	test_roundtrip(NADI_JWT_ALG_HS256);
	test_malformed();
	test_uuid_text();
	test_claims();
	test_signed_tokens();
	test_jwks();
	return check_summary();
}
