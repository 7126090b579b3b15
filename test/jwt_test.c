/*
 * jwt_test.c — unit tests for src/jwt.c, without PostgreSQL.
 *
 *   cc -Wall -Wextra -o jwt_test test/jwt_test.c src/jwt.c -lcrypto
 *   ./jwt_test
 *
 * Prints one line per failure and a final "N passed, M failed"; exits
 * non-zero when anything failed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/jwt.h"

static int	passed,
			failed;

#define CHECK(cond) check((cond), #cond, __FILE__, __LINE__)
#define CHECK_RC(expr, want) check_rc((expr), (want), #expr, __FILE__, __LINE__)

static void
check(int ok, const char *what, const char *file, int line)
{
	if (ok)
		passed++;
	else
	{
		failed++;
		printf("FAIL %s:%d: %s\n", file, line, what);
	}
}

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

static void
test_json(void)
{
	char		out[64];
	size_t		n;

	CHECK_RC(nadi_jwt_json_check_object("{}", strlen("{}")), NADI_JWT_OK);
	CHECK_RC(nadi_jwt_json_check_object(" {\"a\" : [1, -2.5e+3, true, false, null, {\"b\": {}}]}\r\n", strlen(" {\"a\" : [1, -2.5e+3, true, false, null, {\"b\": {}}]}\r\n")),
			 NADI_JWT_OK);
	CHECK_RC(nadi_jwt_json_check_object("[]", strlen("[]")), NADI_JWT_EJSON);
	CHECK_RC(nadi_jwt_json_check_object("\"x\"", strlen("\"x\"")), NADI_JWT_EJSON);
	CHECK_RC(nadi_jwt_json_check_object("{", strlen("{")), NADI_JWT_EJSON);
	CHECK_RC(nadi_jwt_json_check_object("{}{}", strlen("{}{}")), NADI_JWT_EJSON);
	CHECK_RC(nadi_jwt_json_check_object("{\"a\":1,}", strlen("{\"a\":1,}")), NADI_JWT_EJSON);
	CHECK_RC(nadi_jwt_json_check_object("{'a':1}", strlen("{'a':1}")), NADI_JWT_EJSON);
	CHECK_RC(nadi_jwt_json_check_object("{\"a\":01}", strlen("{\"a\":01}")), NADI_JWT_EJSON);
	CHECK_RC(nadi_jwt_json_check_object("{\"a\":1.}", strlen("{\"a\":1.}")), NADI_JWT_EJSON);
	CHECK_RC(nadi_jwt_json_check_object("{\"a\":tru}", strlen("{\"a\":tru}")), NADI_JWT_EJSON);
	CHECK_RC(nadi_jwt_json_check_object("{\"a\":\"\x01\"}", strlen("{\"a\":\"\x01\"}")), NADI_JWT_EJSON);
	CHECK_RC(nadi_jwt_json_check_object("{\"a\":\"\\u0000\"}", strlen("{\"a\":\"\\u0000\"}")), NADI_JWT_EJSON);
	CHECK_RC(nadi_jwt_json_check_object("{\"a\":\"\\ud800\"}", strlen("{\"a\":\"\\ud800\"}")), NADI_JWT_EJSON);
	CHECK_RC(nadi_jwt_json_check_object("{\"a\":\"\\x\"}", strlen("{\"a\":\"\\x\"}")), NADI_JWT_EJSON);
	CHECK_RC(nadi_jwt_json_check_object("{\"a\":\"\xc3\xa9\"}", strlen("{\"a\":\"\xc3\xa9\"}")), NADI_JWT_OK);
	CHECK_RC(nadi_jwt_json_check_object("{\"a\":\"\xc3\"}", strlen("{\"a\":\"\xc3\"}")), NADI_JWT_EJSON);	/* truncated */
	CHECK_RC(nadi_jwt_json_check_object("{\"a\":\"\xc0\xaf\"}", strlen("{\"a\":\"\xc0\xaf\"}")), NADI_JWT_EJSON);	/* overlong */
	CHECK_RC(nadi_jwt_json_check_object("{\"a\":\"\xed\xa0\x80\"}", strlen("{\"a\":\"\xed\xa0\x80\"}")), NADI_JWT_EJSON);	/* surrogate */
	{
		char		deep[200];
		char		obj[220];
		size_t		i;

		/* nesting beyond the limit is refused rather than recursed into */
		for (i = 0; i < 90; i++)
			deep[i] = '[';
		for (; i < 180; i++)
			deep[i] = ']';
		deep[i] = '\0';

		snprintf(obj, sizeof(obj), "{\"a\":%s}", deep);
		CHECK_RC(nadi_jwt_json_check_object(obj, strlen(obj)), NADI_JWT_EJSON);
	}

	CHECK_RC(nadi_jwt_json_string("{\"alg\":\"EdDSA\",\"kid\":\"k1\"}", strlen("{\"alg\":\"EdDSA\",\"kid\":\"k1\"}"), "kid", out, sizeof(out), &n),
			 NADI_JWT_OK);
	CHECK(strcmp(out, "k1") == 0 && n == 2);
	CHECK_RC(nadi_jwt_json_string("{\"x\":{\"kid\":\"inner\"},\"kid\":\"outer\"}", strlen("{\"x\":{\"kid\":\"inner\"},\"kid\":\"outer\"}"), "kid", out, sizeof(out), &n),
			 NADI_JWT_OK);
	CHECK(strcmp(out, "outer") == 0);
	CHECK_RC(nadi_jwt_json_string("{\"x\":{\"kid\":\"inner\"}}", strlen("{\"x\":{\"kid\":\"inner\"}}"), "kid", out, sizeof(out), &n),
			 NADI_JWT_ENOTFOUND);
	/* escapes, in keys too */
	CHECK_RC(nadi_jwt_json_string("{\"k\\u0069d\":\"a\\\"b\\\\c\\/\\u00e9\\ud83d\\ude00\"}", strlen("{\"k\\u0069d\":\"a\\\"b\\\\c\\/\\u00e9\\ud83d\\ude00\"}"), "kid",
								  out, sizeof(out), &n), NADI_JWT_OK);
	CHECK(strcmp(out, "a\"b\\c/\xc3\xa9\xf0\x9f\x98\x80") == 0);
	/* duplicates are ambiguous: refused */
	CHECK_RC(nadi_jwt_json_string("{\"kid\":\"a\",\"kid\":\"b\"}", strlen("{\"kid\":\"a\",\"kid\":\"b\"}"), "kid", out, sizeof(out), &n),
			 NADI_JWT_EJSON);
	CHECK_RC(nadi_jwt_json_string("{\"kid\":1}", strlen("{\"kid\":1}"), "kid", out, sizeof(out), &n), NADI_JWT_EJSON);
	CHECK_RC(nadi_jwt_json_string("{\"kid\":1}", strlen("{\"kid\":1}"), "kid", NULL, 0, NULL), NADI_JWT_OK);
	CHECK_RC(nadi_jwt_json_string("{\"kid\":\"abcdef\"}", strlen("{\"kid\":\"abcdef\"}"), "kid", out, 4, &n), NADI_JWT_ETOOLONG);
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
	printf("%d passed, %d failed\n", passed, failed);
	return failed == 0 ? 0 : 1;
}
