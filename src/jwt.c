/*
 * jwt.c — compact JWS/JWT on libcrypto (OpenSSL 3): base64url, Ed25519
 * ("EdDSA") and HS256 signatures, token building and parsing.  JSON is
 * jansson's, read strictly (nadi_jwt_json_object).  No PostgreSQL includes:
 * the HTTP daemons build this same file.  See jwt.h for the contract.
 *
 * In the extension this runs in a backend: every json_t made here is freed
 * before the function that made it returns, and nothing here can ereport.
 *
 * Every failure path clears libcrypto's per-thread error queue, so errors
 * from here never surface later in an unrelated TLS connection.
 */
#include "jwt.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <jansson.h>

const char *
nadi_jwt_strerror(int err)
{
	switch (err)
	{
		case NADI_JWT_OK:
			return "success";
		case NADI_JWT_EINVAL:
			return "invalid argument";
		case NADI_JWT_ETOOLONG:
			return "too long";
		case NADI_JWT_EFORMAT:
			return "not a compact JWS (header.payload.signature)";
		case NADI_JWT_EBASE64:
			return "a segment is not valid base64url";
		case NADI_JWT_EJSON:
			return "header or payload is not a valid JSON object";
		case NADI_JWT_EHEADER:
			return "header is invalid (missing alg, bad kid, or unsupported crit)";
		case NADI_JWT_EALG_NONE:
			return "unsecured token (alg \"none\")";
		case NADI_JWT_EALG:
			return "unsupported algorithm";
		case NADI_JWT_EALG_MISMATCH:
			return "algorithm does not match the key";
		case NADI_JWT_ESIG:
			return "signature does not verify";
		case NADI_JWT_EKEY:
			return "unusable key";
		case NADI_JWT_ECRYPTO:
			return "cryptographic library failure";
	}
	return "unknown error";
}

const char *
nadi_jwt_alg_name(nadi_jwt_alg alg)
{
	switch (alg)
	{
		case NADI_JWT_ALG_EDDSA:
			return "EdDSA";
		case NADI_JWT_ALG_HS256:
			return "HS256";
		case NADI_JWT_ALG_INVALID:
			break;
	}
	return NULL;
}

/* Algorithm names are case-sensitive (RFC 7515 section 4.1.1). */
nadi_jwt_alg
nadi_jwt_alg_from_name(const char *name)
{
	if (name == NULL)
		return NADI_JWT_ALG_INVALID;
	if (strcmp(name, "EdDSA") == 0)
		return NADI_JWT_ALG_EDDSA;
	if (strcmp(name, "HS256") == 0)
		return NADI_JWT_ALG_HS256;
	return NADI_JWT_ALG_INVALID;
}

/* ------------------------------------------------------------------------
 * base64url
 * ------------------------------------------------------------------------ */

static const char b64url_alphabet[] =
"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int
b64url_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

size_t
nadi_jwt_b64url_encoded_len(size_t n)
{
	return (n / 3) * 4 + ((n % 3) ? (n % 3) + 1 : 0);
}

size_t
nadi_jwt_b64url_decoded_max(size_t n)
{
	return (n / 4) * 3 + ((n % 4) ? (n % 4) - 1 : 0);
}

int
nadi_jwt_b64url_encode(const unsigned char *in, size_t inlen,
					   char *out, size_t outsize, size_t *outlen)
{
	size_t		need;
	size_t		i,
				o = 0;

	if ((in == NULL && inlen > 0) || out == NULL)
		return NADI_JWT_EINVAL;
	if (inlen > ((size_t) -1) / 2)
		return NADI_JWT_ETOOLONG;
	need = nadi_jwt_b64url_encoded_len(inlen);
	if (need + 1 > outsize)
		return NADI_JWT_ETOOLONG;

	for (i = 0; i + 3 <= inlen; i += 3)
	{
		uint32_t	v = ((uint32_t) in[i] << 16) | ((uint32_t) in[i + 1] << 8) | in[i + 2];

		out[o++] = b64url_alphabet[(v >> 18) & 63];
		out[o++] = b64url_alphabet[(v >> 12) & 63];
		out[o++] = b64url_alphabet[(v >> 6) & 63];
		out[o++] = b64url_alphabet[v & 63];
	}
	if (inlen - i == 1)
	{
		uint32_t	v = (uint32_t) in[i] << 16;

		out[o++] = b64url_alphabet[(v >> 18) & 63];
		out[o++] = b64url_alphabet[(v >> 12) & 63];
	}
	else if (inlen - i == 2)
	{
		uint32_t	v = ((uint32_t) in[i] << 16) | ((uint32_t) in[i + 1] << 8);

		out[o++] = b64url_alphabet[(v >> 18) & 63];
		out[o++] = b64url_alphabet[(v >> 12) & 63];
		out[o++] = b64url_alphabet[(v >> 6) & 63];
	}
	out[o] = '\0';
	if (outlen)
		*outlen = o;
	return NADI_JWT_OK;
}

int
nadi_jwt_b64url_decode(const char *in, size_t inlen,
					   unsigned char *out, size_t outsize, size_t *outlen)
{
	size_t		i,
				o = 0;
	size_t		rem = inlen % 4;
	int			vals[4];

	if ((in == NULL && inlen > 0) || (out == NULL && outsize > 0))
		return NADI_JWT_EINVAL;
	if (rem == 1)
		return NADI_JWT_EBASE64;
	if (nadi_jwt_b64url_decoded_max(inlen) > outsize)
	{
		/* check the alphabet first, so garbage is reported as such */
		for (i = 0; i < inlen; i++)
			if (b64url_value((unsigned char) in[i]) < 0)
				return NADI_JWT_EBASE64;
		return NADI_JWT_ETOOLONG;
	}

	for (i = 0; i + 4 <= inlen; i += 4)
	{
		for (int k = 0; k < 4; k++)
			if ((vals[k] = b64url_value((unsigned char) in[i + k])) < 0)
				return NADI_JWT_EBASE64;
		out[o++] = (unsigned char) ((vals[0] << 2) | (vals[1] >> 4));
		out[o++] = (unsigned char) (((vals[1] & 15) << 4) | (vals[2] >> 2));
		out[o++] = (unsigned char) (((vals[2] & 3) << 6) | vals[3]);
	}
	if (rem > 0)
	{
		for (size_t k = 0; k < rem; k++)
			if ((vals[k] = b64url_value((unsigned char) in[i + k])) < 0)
				return NADI_JWT_EBASE64;
		out[o++] = (unsigned char) ((vals[0] << 2) | (vals[1] >> 4));
		if (rem == 2)
		{
			/* the spare low 4 bits must be zero: one encoding per value */
			if (vals[1] & 15)
				return NADI_JWT_EBASE64;
		}
		else
		{
			out[o++] = (unsigned char) (((vals[1] & 15) << 4) | (vals[2] >> 2));
			if (vals[2] & 3)
				return NADI_JWT_EBASE64;
		}
	}
	if (outlen)
		*outlen = o;
	return NADI_JWT_OK;
}

/* ------------------------------------------------------------------------
 * JSON, on jansson
 * ------------------------------------------------------------------------ */

/* Is every array and object inside v (itself at depth) within the limit? */
static int
json_depth_ok(json_t *v, int depth)
{
	const char *k;
	json_t	   *m;
	size_t		i;

	if (depth > NADI_JWT_JSON_MAX_DEPTH)
		return 0;
	if (json_is_object(v))
	{
		json_object_foreach(v, k, m)
			if ((json_is_object(m) || json_is_array(m)) && !json_depth_ok(m, depth + 1))
			return 0;
	}
	else if (json_is_array(v))
	{
		json_array_foreach(v, i, m)
			if ((json_is_object(m) || json_is_array(m)) && !json_depth_ok(m, depth + 1))
			return 0;
	}
	return 1;
}

struct json_t *
nadi_jwt_json_object(const char *json, size_t len, int *dup)
{
	json_error_t err;
	json_t	   *v;

	if (dup)
		*dup = 0;
	if (json == NULL)
		return NULL;
	/*
	 * Without JSON_ALLOW_NUL jansson refuses \u0000; without
	 * JSON_DECODE_ANY the text must be an object or an array; trailing
	 * whitespace only.
	 */
	v = json_loadb(json, len, JSON_REJECT_DUPLICATES, &err);
	if (v == NULL)
	{
		if (dup && json_error_code(&err) == json_error_duplicate_key)
			*dup = 1;
		return NULL;
	}
	if (!json_is_object(v) || !json_depth_ok(v, 1))
	{
		json_decref(v);
		return NULL;
	}
	return v;
}

int
nadi_jwt_json_check_object(const char *json, size_t len)
{
	json_t	   *v = nadi_jwt_json_object(json, len, NULL);

	if (v == NULL)
		return NADI_JWT_EJSON;
	json_decref(v);
	return NADI_JWT_OK;
}

/* ------------------------------------------------------------------------
 * Keys and signatures
 * ------------------------------------------------------------------------ */

static int
crypto_fail(void)
{
	ERR_clear_error();
	return NADI_JWT_ECRYPTO;
}

int
nadi_jwt_ed25519_public(const unsigned char priv[NADI_JWT_ED25519_KEY_LEN],
						unsigned char pub[NADI_JWT_ED25519_KEY_LEN])
{
	EVP_PKEY   *pk;
	size_t		len = NADI_JWT_ED25519_KEY_LEN;
	int			ok;

	if (priv == NULL || pub == NULL)
		return NADI_JWT_EINVAL;
	pk = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, priv, NADI_JWT_ED25519_KEY_LEN);
	if (pk == NULL)
		return crypto_fail();
	ok = EVP_PKEY_get_raw_public_key(pk, pub, &len) == 1 && len == NADI_JWT_ED25519_KEY_LEN;
	EVP_PKEY_free(pk);
	return ok ? NADI_JWT_OK : crypto_fail();
}

int
nadi_jwt_keygen(nadi_jwt_alg alg,
				unsigned char *priv, size_t privsize, size_t *privlen,
				unsigned char *pub, size_t pubsize, size_t *publen)
{
	if (priv == NULL || privlen == NULL || publen == NULL)
		return NADI_JWT_EINVAL;
	*privlen = 0;
	*publen = 0;

	if (alg == NADI_JWT_ALG_EDDSA)
	{
		EVP_PKEY_CTX *ctx;
		EVP_PKEY   *pk = NULL;
		size_t		plen = NADI_JWT_ED25519_KEY_LEN,
					qlen = NADI_JWT_ED25519_KEY_LEN;
		int			ok;

		if (pub == NULL || privsize < NADI_JWT_ED25519_KEY_LEN ||
			pubsize < NADI_JWT_ED25519_KEY_LEN)
			return NADI_JWT_EINVAL;
		ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, NULL);
		if (ctx == NULL)
			return crypto_fail();
		ok = EVP_PKEY_keygen_init(ctx) == 1 && EVP_PKEY_keygen(ctx, &pk) == 1;
		EVP_PKEY_CTX_free(ctx);
		if (!ok)
		{
			EVP_PKEY_free(pk);
			return crypto_fail();
		}
		ok = EVP_PKEY_get_raw_private_key(pk, priv, &plen) == 1 &&
			EVP_PKEY_get_raw_public_key(pk, pub, &qlen) == 1 &&
			plen == NADI_JWT_ED25519_KEY_LEN && qlen == NADI_JWT_ED25519_KEY_LEN;
		EVP_PKEY_free(pk);
		if (!ok)
		{
			OPENSSL_cleanse(priv, privsize);
			return crypto_fail();
		}
		*privlen = plen;
		*publen = qlen;
		return NADI_JWT_OK;
	}
	if (alg == NADI_JWT_ALG_HS256)
	{
		if (privsize < NADI_JWT_HS256_KEY_LEN)
			return NADI_JWT_EINVAL;
		if (RAND_priv_bytes(priv, NADI_JWT_HS256_KEY_LEN) != 1)
			return crypto_fail();
		*privlen = NADI_JWT_HS256_KEY_LEN;
		return NADI_JWT_OK;
	}
	return NADI_JWT_EALG;
}

static int
hs256(const unsigned char *key, size_t keylen, const void *data, size_t len,
	  unsigned char mac[NADI_JWT_HS256_SIG_LEN])
{
	unsigned int maclen = 0;

	if (keylen < NADI_JWT_HS256_MIN_KEY || keylen > 4096)
		return NADI_JWT_EKEY;
	if (HMAC(EVP_sha256(), key, (int) keylen, data, len, mac, &maclen) == NULL ||
		maclen != NADI_JWT_HS256_SIG_LEN)
		return crypto_fail();
	return NADI_JWT_OK;
}

int
nadi_jwt_sign_bytes(nadi_jwt_alg alg, const unsigned char *key, size_t keylen,
					const void *data, size_t len,
					unsigned char *sig, size_t sigsize, size_t *siglen)
{
	if (key == NULL || (data == NULL && len > 0) || sig == NULL || siglen == NULL)
		return NADI_JWT_EINVAL;
	*siglen = 0;

	if (alg == NADI_JWT_ALG_EDDSA)
	{
		EVP_PKEY   *pk;
		EVP_MD_CTX *md;
		size_t		n = NADI_JWT_ED25519_SIG_LEN;
		int			ok;

		if (keylen != NADI_JWT_ED25519_KEY_LEN)
			return NADI_JWT_EKEY;
		if (sigsize < NADI_JWT_ED25519_SIG_LEN)
			return NADI_JWT_ETOOLONG;
		pk = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, key, keylen);
		if (pk == NULL)
			return crypto_fail();
		md = EVP_MD_CTX_new();
		ok = md != NULL &&
			EVP_DigestSignInit(md, NULL, NULL, NULL, pk) == 1 &&
			EVP_DigestSign(md, sig, &n, data, len) == 1 &&
			n == NADI_JWT_ED25519_SIG_LEN;
		EVP_MD_CTX_free(md);
		EVP_PKEY_free(pk);
		if (!ok)
			return crypto_fail();
		*siglen = n;
		return NADI_JWT_OK;
	}
	if (alg == NADI_JWT_ALG_HS256)
	{
		int			rc;

		if (sigsize < NADI_JWT_HS256_SIG_LEN)
			return NADI_JWT_ETOOLONG;
		if ((rc = hs256(key, keylen, data, len, sig)) != NADI_JWT_OK)
			return rc;
		*siglen = NADI_JWT_HS256_SIG_LEN;
		return NADI_JWT_OK;
	}
	return NADI_JWT_EALG;
}

int
nadi_jwt_verify_sig(nadi_jwt_alg alg, const unsigned char *key, size_t keylen,
					const void *signing_input, size_t len,
					const unsigned char *sig, size_t siglen)
{
	if (key == NULL || (signing_input == NULL && len > 0) || (sig == NULL && siglen > 0))
		return NADI_JWT_EINVAL;

	if (alg == NADI_JWT_ALG_EDDSA)
	{
		EVP_PKEY   *pk;
		EVP_MD_CTX *md;
		int			rc;

		if (keylen != NADI_JWT_ED25519_KEY_LEN)
			return NADI_JWT_EKEY;
		if (siglen != NADI_JWT_ED25519_SIG_LEN)
			return NADI_JWT_ESIG;
		pk = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, key, keylen);
		if (pk == NULL)
		{
			ERR_clear_error();
			return NADI_JWT_EKEY;
		}
		md = EVP_MD_CTX_new();
		if (md == NULL || EVP_DigestVerifyInit(md, NULL, NULL, NULL, pk) != 1)
		{
			EVP_MD_CTX_free(md);
			EVP_PKEY_free(pk);
			return crypto_fail();
		}
		rc = EVP_DigestVerify(md, sig, siglen, signing_input, len);
		EVP_MD_CTX_free(md);
		EVP_PKEY_free(pk);
		if (rc == 1)
			return NADI_JWT_OK;
		ERR_clear_error();
		return NADI_JWT_ESIG;
	}
	if (alg == NADI_JWT_ALG_HS256)
	{
		unsigned char mac[NADI_JWT_HS256_SIG_LEN];
		int			rc;

		if ((rc = hs256(key, keylen, signing_input, len, mac)) != NADI_JWT_OK)
			return rc;
		if (siglen != NADI_JWT_HS256_SIG_LEN ||
			CRYPTO_memcmp(mac, sig, NADI_JWT_HS256_SIG_LEN) != 0)
			return NADI_JWT_ESIG;
		return NADI_JWT_OK;
	}
	return NADI_JWT_EALG;
}

/* ------------------------------------------------------------------------
 * Tokens
 * ------------------------------------------------------------------------ */

int
nadi_jwt_sign_parts(nadi_jwt_alg alg, const unsigned char *key, size_t keylen,
					const char *header_json,
					const void *payload, size_t payload_len,
					char *out, size_t outsize, size_t *outlen)
{
	size_t		hlen,
				n,
				k,
				siglen;
	unsigned char sig[NADI_JWT_MAX_SIG];
	int			rc;

	if (header_json == NULL || (payload == NULL && payload_len > 0) || out == NULL)
		return NADI_JWT_EINVAL;
	if (nadi_jwt_alg_name(alg) == NULL)
		return NADI_JWT_EALG;
	hlen = strlen(header_json);
	if (hlen > NADI_JWT_MAX_TOKEN || payload_len > NADI_JWT_MAX_TOKEN)
		return NADI_JWT_ETOOLONG;
	n = nadi_jwt_b64url_encoded_len(hlen) + 1 + nadi_jwt_b64url_encoded_len(payload_len) +
		1 + nadi_jwt_b64url_encoded_len(alg == NADI_JWT_ALG_EDDSA ?
										NADI_JWT_ED25519_SIG_LEN : NADI_JWT_HS256_SIG_LEN);
	if (n > NADI_JWT_MAX_TOKEN || n + 1 > outsize)
		return NADI_JWT_ETOOLONG;

	if ((rc = nadi_jwt_b64url_encode((const unsigned char *) header_json, hlen,
									 out, outsize, &k)) != NADI_JWT_OK)
		return rc;
	n = k;
	out[n++] = '.';
	if ((rc = nadi_jwt_b64url_encode(payload, payload_len,
									 out + n, outsize - n, &k)) != NADI_JWT_OK)
		return rc;
	n += k;
	if ((rc = nadi_jwt_sign_bytes(alg, key, keylen, out, n,
								  sig, sizeof(sig), &siglen)) != NADI_JWT_OK)
	{
		out[0] = '\0';
		return rc;
	}
	out[n++] = '.';
	if ((rc = nadi_jwt_b64url_encode(sig, siglen, out + n, outsize - n, &k)) != NADI_JWT_OK)
	{
		out[0] = '\0';
		return rc;
	}
	n += k;
	if (outlen)
		*outlen = n;
	return NADI_JWT_OK;
}

int
nadi_jwt_sign(nadi_jwt_alg alg, const char *kid,
			  const unsigned char *key, size_t keylen,
			  const char *payload_json,
			  char *out, size_t outsize, size_t *outlen)
{
	const char *name = nadi_jwt_alg_name(alg);
	json_t	   *h;
	char	   *header;
	int			rc;

	if (payload_json == NULL || out == NULL)
		return NADI_JWT_EINVAL;
	if (name == NULL)
		return NADI_JWT_EALG;
	if (kid != NULL && (kid[0] == '\0' || strlen(kid) > NADI_JWT_MAX_KID))
		return NADI_JWT_EINVAL;
	if (nadi_jwt_json_check_object(payload_json, strlen(payload_json)) != NADI_JWT_OK)
		return NADI_JWT_EJSON;

	/*
	 * {"alg":..,"typ":"JWT","kid":..}: jansson keeps the order of insertion.
	 * Not json_object(): in a backend that name is PostgreSQL's own SQL
	 * function, which the dynamic linker would call instead.
	 */
	h = json_pack("{s:s, s:s}", "alg", name, "typ", "JWT");
	if (h == NULL ||
		(kid != NULL && json_object_set_new(h, "kid", json_string(kid)) != 0))
	{
		/* json_string() is NULL for text that is not UTF-8 */
		json_decref(h);
		return NADI_JWT_EINVAL;
	}
	header = json_dumps(h, JSON_COMPACT);
	json_decref(h);
	if (header == NULL)
		return NADI_JWT_EINVAL;
	rc = nadi_jwt_sign_parts(alg, key, keylen, header,
							 payload_json, strlen(payload_json),
							 out, outsize, outlen);
	free(header);
	return rc;
}

int
nadi_jwt_split(const char *token, size_t len, nadi_jwt_segments *seg)
{
	const char *d1,
			   *d2;

	if (token == NULL || seg == NULL)
		return NADI_JWT_EINVAL;
	if (len > NADI_JWT_MAX_TOKEN)
		return NADI_JWT_ETOOLONG;
	d1 = memchr(token, '.', len);
	if (d1 == NULL)
		return NADI_JWT_EFORMAT;
	d2 = memchr(d1 + 1, '.', len - (size_t) (d1 + 1 - token));
	if (d2 == NULL)
		return NADI_JWT_EFORMAT;
	if (memchr(d2 + 1, '.', len - (size_t) (d2 + 1 - token)) != NULL)
		return NADI_JWT_EFORMAT;	/* five segments: JWE, or garbage */
	seg->header_off = 0;
	seg->header_len = (size_t) (d1 - token);
	seg->payload_off = seg->header_len + 1;
	seg->payload_len = (size_t) (d2 - d1 - 1);
	seg->sig_off = (size_t) (d2 + 1 - token);
	seg->sig_len = len - seg->sig_off;
	if (seg->header_len == 0 || seg->payload_len == 0)
		return NADI_JWT_EFORMAT;
	/* an empty signature is left to the caller: it means "alg": "none" */
	return NADI_JWT_OK;
}

/*
 * Decode a segment into a NUL-terminated buffer and parse it as a JSON
 * object: returns a new reference, or NULL with *rc set.
 */
static json_t *
decode_json_segment(const char *seg, size_t seglen, char *buf, size_t bufsize,
					size_t *outlen, int *dup, int *rc)
{
	json_t	   *v;
	size_t		n;

	if (dup)
		*dup = 0;
	*rc = nadi_jwt_b64url_decode(seg, seglen, (unsigned char *) buf, bufsize - 1, &n);
	if (*rc != NADI_JWT_OK)
		return NULL;
	buf[n] = '\0';
	/* a NUL byte outside a string: jansson would stop there */
	if (memchr(buf, '\0', n) != NULL ||
		(v = nadi_jwt_json_object(buf, n, dup)) == NULL)
	{
		*rc = NADI_JWT_EJSON;
		return NULL;
	}
	*outlen = n;
	return v;
}

/* The JOSE header's members: "alg", "kid", "typ" and "crit". */
static int
read_header(json_t *h, nadi_jwt_parsed *out)
{
	json_t	   *alg = json_object_get(h, "alg");
	json_t	   *kid = json_object_get(h, "kid");
	json_t	   *typ = json_object_get(h, "typ");
	const char *name;

	if (!json_is_string(alg))
		return NADI_JWT_EHEADER;
	name = json_string_value(alg);
	if (strcasecmp(name, "none") == 0)
		return NADI_JWT_EALG_NONE;
	out->alg = nadi_jwt_alg_from_name(name);
	if (out->alg == NADI_JWT_ALG_INVALID)
		return NADI_JWT_EALG;
	if (kid != NULL)
	{
		if (!json_is_string(kid) || json_string_length(kid) > NADI_JWT_MAX_KID)
			return NADI_JWT_EHEADER;
		memcpy(out->kid, json_string_value(kid), json_string_length(kid) + 1);
		out->has_kid = out->kid[0] != '\0';
	}
	/* RFC 7519 section 5.1: "JWT", compared as a media type (any case) */
	if (typ != NULL && (!json_is_string(typ) || strcasecmp(json_string_value(typ), "JWT") != 0))
		return NADI_JWT_EHEADER;
	/* critical extensions: none are understood, so any must be refused */
	if (json_object_get(h, "crit") != NULL)
		return NADI_JWT_EHEADER;
	return NADI_JWT_OK;
}

int
nadi_jwt_parse(const char *token, size_t len, nadi_jwt_parsed *out)
{
	nadi_jwt_segments seg;
	json_t	   *v;
	size_t		n;
	int			dup;
	int			rc;

	if (token == NULL || out == NULL)
		return NADI_JWT_EINVAL;
	memset(out, 0, sizeof(*out));
	if ((rc = nadi_jwt_split(token, len, &seg)) != NADI_JWT_OK)
		return rc;

	/* header: a member named twice (two "alg"s: which one counts?) is a bad header */
	v = decode_json_segment(token + seg.header_off, seg.header_len,
							out->header, sizeof(out->header), &out->header_len, &dup, &rc);
	if (v == NULL)
		return dup ? NADI_JWT_EHEADER : rc;
	rc = read_header(v, out);
	json_decref(v);
	if (rc != NADI_JWT_OK)
	{
		out->has_kid = 0;
		out->kid[0] = '\0';
		return rc;
	}

	/* payload: only checked here; the claims validator reads it */
	v = decode_json_segment(token + seg.payload_off, seg.payload_len,
							out->payload, sizeof(out->payload), &out->payload_len, NULL, &rc);
	if (v == NULL)
		return rc;
	json_decref(v);

	/* signature */
	if (seg.sig_len == 0)
		return NADI_JWT_EFORMAT;
	rc = nadi_jwt_b64url_decode(token + seg.sig_off, seg.sig_len,
								out->sig, sizeof(out->sig), &n);
	if (rc == NADI_JWT_ETOOLONG)
		return NADI_JWT_ESIG;
	if (rc != NADI_JWT_OK)
		return rc;
	out->sig_len = n;
	out->signing_input = token;
	out->signing_input_len = seg.sig_off - 1;
	return NADI_JWT_OK;
}

int
nadi_jwt_verify(const nadi_jwt_parsed *p, nadi_jwt_alg key_alg,
				const unsigned char *key, size_t keylen)
{
	if (p == NULL || key == NULL || p->signing_input == NULL)
		return NADI_JWT_EINVAL;
	if (p->alg == NADI_JWT_ALG_INVALID || key_alg == NADI_JWT_ALG_INVALID)
		return NADI_JWT_EALG;
	if (p->alg != key_alg)
		return NADI_JWT_EALG_MISMATCH;
	return nadi_jwt_verify_sig(key_alg, key, keylen, p->signing_input, p->signing_input_len,
							   p->sig, p->sig_len);
}

int
nadi_jwt_uuid_text(const char *s)
{
	if (s == NULL || strlen(s) != 36)
		return 0;
	for (int i = 0; i < 36; i++)
	{
		if (i == 8 || i == 13 || i == 18 || i == 23)
		{
			if (s[i] != '-')
				return 0;
		}
		else if (!isxdigit((unsigned char) s[i]))
			return 0;
	}
	return 1;
}
