/*
 * jwt.c — compact JWS/JWT on libcrypto (OpenSSL 3): base64url, Ed25519
 * ("EdDSA") and HS256 signatures, token building and parsing, and just enough
 * JSON to read "alg" and "kid" from a header.  No PostgreSQL includes: the
 * HTTP daemons build this same file.  See jwt.h for the contract.
 *
 * Every failure path clears libcrypto's per-thread error queue, so errors
 * from here never surface later in an unrelated TLS connection.
 */
#include "jwt.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#define JSON_MAX_DEPTH 64

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
		case NADI_JWT_ENOTFOUND:
			return "not found";
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
 * JSON: a strict RFC 8259 scanner, enough to validate an object and read a
 * top-level string member.  Rejects invalid UTF-8 and \u0000 (so values are
 * safe C strings), and nesting deeper than JSON_MAX_DEPTH.
 * ------------------------------------------------------------------------ */

typedef struct jscan
{
	const unsigned char *p;
	const unsigned char *end;
	int			depth;
} jscan;

static void
js_ws(jscan *s)
{
	while (s->p < s->end &&
		   (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
		s->p++;
}

static int
js_hex4(const unsigned char *p, unsigned int *v)
{
	unsigned int r = 0;

	for (int i = 0; i < 4; i++)
	{
		unsigned char c = p[i];

		r <<= 4;
		if (c >= '0' && c <= '9')
			r |= c - '0';
		else if (c >= 'a' && c <= 'f')
			r |= c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			r |= c - 'A' + 10;
		else
			return -1;
	}
	*v = r;
	return 0;
}

/* Length of the valid UTF-8 sequence at p (first byte >= 0x80), or 0. */
static size_t
utf8_seq(const unsigned char *p, const unsigned char *end)
{
	unsigned char c = p[0];
	size_t		n;
	unsigned char lo = 0x80,
				hi = 0xBF;

	if (c >= 0xC2 && c <= 0xDF)
		n = 2;
	else if (c >= 0xE0 && c <= 0xEF)
	{
		n = 3;
		if (c == 0xE0)
			lo = 0xA0;			/* no overlong forms */
		else if (c == 0xED)
			hi = 0x9F;			/* no surrogates */
	}
	else if (c >= 0xF0 && c <= 0xF4)
	{
		n = 4;
		if (c == 0xF0)
			lo = 0x90;
		else if (c == 0xF4)
			hi = 0x8F;			/* nothing above U+10FFFF */
	}
	else
		return 0;
	if ((size_t) (end - p) < n)
		return 0;
	if (p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if (p[i] < 0x80 || p[i] > 0xBF)
			return 0;
	return n;
}

/* Append bytes to an optional output buffer, noting overflow. */
static void
js_put(char *out, size_t outsize, size_t *o, int *overflow,
	   const unsigned char *bytes, size_t n)
{
	if (out == NULL)
		return;
	if (*o + n + 1 > outsize)
	{
		*overflow = 1;
		return;
	}
	memcpy(out + *o, bytes, n);
	*o += n;
}

/*
 * Scan a string starting at the opening quote.  With out, the unescaped
 * value is written there (NUL-terminated) unless it does not fit, in which
 * case *overflow is set and scanning still completes.
 */
static int
js_string(jscan *s, char *out, size_t outsize, size_t *outlen, int *overflow)
{
	size_t		o = 0;

	*overflow = 0;
	if (s->p >= s->end || *s->p != '"')
		return -1;
	s->p++;
	for (;;)
	{
		unsigned char c;

		if (s->p >= s->end)
			return -1;
		c = *s->p;
		if (c == '"')
		{
			s->p++;
			break;
		}
		if (c < 0x20)
			return -1;
		if (c == '\\')
		{
			unsigned char e;
			unsigned char buf[4];
			size_t		n = 1;

			if (s->end - s->p < 2)
				return -1;
			e = s->p[1];
			s->p += 2;
			switch (e)
			{
				case '"':
				case '\\':
				case '/':
					buf[0] = e;
					break;
				case 'b':
					buf[0] = '\b';
					break;
				case 'f':
					buf[0] = '\f';
					break;
				case 'n':
					buf[0] = '\n';
					break;
				case 'r':
					buf[0] = '\r';
					break;
				case 't':
					buf[0] = '\t';
					break;
				case 'u':
					{
						unsigned int cp,
									lo;

						if (s->end - s->p < 4 || js_hex4(s->p, &cp) < 0)
							return -1;
						s->p += 4;
						if (cp >= 0xDC00 && cp <= 0xDFFF)
							return -1;	/* lone low surrogate */
						if (cp >= 0xD800 && cp <= 0xDBFF)
						{
							if (s->end - s->p < 6 || s->p[0] != '\\' || s->p[1] != 'u' ||
								js_hex4(s->p + 2, &lo) < 0 || lo < 0xDC00 || lo > 0xDFFF)
								return -1;
							s->p += 6;
							cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
						}
						if (cp == 0)
							return -1;
						if (cp < 0x80)
							buf[0] = (unsigned char) cp;
						else if (cp < 0x800)
						{
							buf[0] = (unsigned char) (0xC0 | (cp >> 6));
							buf[1] = (unsigned char) (0x80 | (cp & 0x3F));
							n = 2;
						}
						else if (cp < 0x10000)
						{
							buf[0] = (unsigned char) (0xE0 | (cp >> 12));
							buf[1] = (unsigned char) (0x80 | ((cp >> 6) & 0x3F));
							buf[2] = (unsigned char) (0x80 | (cp & 0x3F));
							n = 3;
						}
						else
						{
							buf[0] = (unsigned char) (0xF0 | (cp >> 18));
							buf[1] = (unsigned char) (0x80 | ((cp >> 12) & 0x3F));
							buf[2] = (unsigned char) (0x80 | ((cp >> 6) & 0x3F));
							buf[3] = (unsigned char) (0x80 | (cp & 0x3F));
							n = 4;
						}
						break;
					}
				default:
					return -1;
			}
			js_put(out, outsize, &o, overflow, buf, n);
		}
		else if (c < 0x80)
		{
			js_put(out, outsize, &o, overflow, s->p, 1);
			s->p++;
		}
		else
		{
			size_t		n = utf8_seq(s->p, s->end);

			if (n == 0)
				return -1;
			js_put(out, outsize, &o, overflow, s->p, n);
			s->p += n;
		}
	}
	if (out != NULL && !*overflow)
	{
		out[o] = '\0';
		if (outlen)
			*outlen = o;
	}
	return 0;
}

static int
js_digits(jscan *s)
{
	const unsigned char *start = s->p;

	while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
		s->p++;
	return s->p > start ? 0 : -1;
}

static int
js_number(jscan *s)
{
	if (s->p < s->end && *s->p == '-')
		s->p++;
	if (s->p >= s->end)
		return -1;
	if (*s->p == '0')
		s->p++;
	else if (js_digits(s) < 0)
		return -1;
	if (s->p < s->end && *s->p == '.')
	{
		s->p++;
		if (js_digits(s) < 0)
			return -1;
	}
	if (s->p < s->end && (*s->p == 'e' || *s->p == 'E'))
	{
		s->p++;
		if (s->p < s->end && (*s->p == '+' || *s->p == '-'))
			s->p++;
		if (js_digits(s) < 0)
			return -1;
	}
	return 0;
}

static int
js_literal(jscan *s, const char *lit)
{
	size_t		n = strlen(lit);

	if ((size_t) (s->end - s->p) < n || memcmp(s->p, lit, n) != 0)
		return -1;
	s->p += n;
	return 0;
}

static int	js_value(jscan *s);

static int
js_container(jscan *s, unsigned char close)
{
	int			overflow;

	if (++s->depth > JSON_MAX_DEPTH)
		return -1;
	s->p++;						/* the opening bracket */
	js_ws(s);
	if (s->p < s->end && *s->p == close)
	{
		s->p++;
		s->depth--;
		return 0;
	}
	for (;;)
	{
		if (close == '}')
		{
			if (js_string(s, NULL, 0, NULL, &overflow) < 0)
				return -1;
			js_ws(s);
			if (s->p >= s->end || *s->p != ':')
				return -1;
			s->p++;
			js_ws(s);
		}
		if (js_value(s) < 0)
			return -1;
		js_ws(s);
		if (s->p >= s->end)
			return -1;
		if (*s->p == ',')
		{
			s->p++;
			js_ws(s);
			continue;
		}
		if (*s->p != close)
			return -1;
		s->p++;
		s->depth--;
		return 0;
	}
}

static int
js_value(jscan *s)
{
	int			overflow;

	if (s->p >= s->end)
		return -1;
	switch (*s->p)
	{
		case '{':
			return js_container(s, '}');
		case '[':
			return js_container(s, ']');
		case '"':
			return js_string(s, NULL, 0, NULL, &overflow);
		case 't':
			return js_literal(s, "true");
		case 'f':
			return js_literal(s, "false");
		case 'n':
			return js_literal(s, "null");
		default:
			return js_number(s);
	}
}

/*
 * Walk a top-level object; find member `key` (if key is not NULL).  Sets
 * *vstart to its value's first byte, or NULL when absent.  Returns -1 on
 * invalid JSON, anything but an object, or a duplicate of `key`.
 */
static int
js_object_find(const char *json, size_t len, const char *key, const unsigned char **vstart)
{
	jscan		s;
	char		name[NADI_JWT_MAX_KID + 1];
	size_t		namelen = 0;
	size_t		keylen = key ? strlen(key) : 0;
	int			overflow;

	*vstart = NULL;
	if (json == NULL)
		return -1;
	s.p = (const unsigned char *) json;
	s.end = s.p + len;
	s.depth = 1;
	js_ws(&s);
	if (s.p >= s.end || *s.p != '{')
		return -1;
	s.p++;
	js_ws(&s);
	if (s.p < s.end && *s.p == '}')
		s.p++;
	else
	{
		for (;;)
		{
			const unsigned char *v;

			if (js_string(&s, name, sizeof(name), &namelen, &overflow) < 0)
				return -1;
			js_ws(&s);
			if (s.p >= s.end || *s.p != ':')
				return -1;
			s.p++;
			js_ws(&s);
			v = s.p;
			if (js_value(&s) < 0)
				return -1;
			if (key && !overflow && namelen == keylen && memcmp(name, key, keylen) == 0)
			{
				if (*vstart != NULL)
					return -1;	/* ambiguous: the same member twice */
				*vstart = v;
			}
			js_ws(&s);
			if (s.p >= s.end)
				return -1;
			if (*s.p == ',')
			{
				s.p++;
				js_ws(&s);
				continue;
			}
			if (*s.p != '}')
				return -1;
			s.p++;
			break;
		}
	}
	js_ws(&s);
	return s.p == s.end ? 0 : -1;
}

int
nadi_jwt_json_check_object(const char *json, size_t len)
{
	const unsigned char *v;

	return js_object_find(json, len, NULL, &v) == 0 ? NADI_JWT_OK : NADI_JWT_EJSON;
}

int
nadi_jwt_json_string(const char *json, size_t len, const char *key,
					 char *out, size_t outsize, size_t *outlen)
{
	const unsigned char *v;
	jscan		s;
	int			overflow;
	size_t		n = 0;

	if (key == NULL || (out != NULL && outsize == 0))
		return NADI_JWT_EINVAL;
	if (js_object_find(json, len, key, &v) < 0)
		return NADI_JWT_EJSON;
	if (v == NULL)
		return NADI_JWT_ENOTFOUND;
	if (out == NULL)
		return NADI_JWT_OK;
	if (*v != '"')
		return NADI_JWT_EJSON;
	s.p = v;
	s.end = (const unsigned char *) json + len;
	s.depth = 0;
	if (js_string(&s, out, outsize, &n, &overflow) < 0)
		return NADI_JWT_EJSON;
	if (overflow)
		return NADI_JWT_ETOOLONG;
	if (outlen)
		*outlen = n;
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

/* Append a JSON string literal; kid must be valid UTF-8. */
static int
json_quote(char *buf, size_t bufsize, size_t *o, const char *str)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *) str;
	const unsigned char *end = p + strlen(str);

#define PUT(c) do { if (*o + 1 >= bufsize) return NADI_JWT_ETOOLONG; buf[(*o)++] = (c); } while (0)
	PUT('"');
	while (p < end)
	{
		unsigned char c = *p;

		if (c == '"' || c == '\\')
		{
			PUT('\\');
			PUT((char) c);
			p++;
		}
		else if (c < 0x20)
		{
			PUT('\\');
			PUT('u');
			PUT('0');
			PUT('0');
			PUT(hex[c >> 4]);
			PUT(hex[c & 15]);
			p++;
		}
		else if (c < 0x80)
		{
			PUT((char) c);
			p++;
		}
		else
		{
			size_t		n = utf8_seq(p, end);

			if (n == 0)
				return NADI_JWT_EINVAL;
			while (n-- > 0)
				PUT((char) *p++);
		}
	}
	PUT('"');
	buf[*o] = '\0';
#undef PUT
	return NADI_JWT_OK;
}

int
nadi_jwt_sign(nadi_jwt_alg alg, const char *kid,
			  const unsigned char *key, size_t keylen,
			  const char *payload_json,
			  char *out, size_t outsize, size_t *outlen)
{
	char		header[64 + 6 * NADI_JWT_MAX_KID];
	size_t		o;
	const char *name = nadi_jwt_alg_name(alg);
	int			rc;

	if (payload_json == NULL || out == NULL)
		return NADI_JWT_EINVAL;
	if (name == NULL)
		return NADI_JWT_EALG;
	if (kid != NULL && (kid[0] == '\0' || strlen(kid) > NADI_JWT_MAX_KID))
		return NADI_JWT_EINVAL;
	if (nadi_jwt_json_check_object(payload_json, strlen(payload_json)) != NADI_JWT_OK)
		return NADI_JWT_EJSON;

	o = (size_t) snprintf(header, sizeof(header), "{\"alg\":\"%s\",\"typ\":\"JWT\"", name);
	if (kid != NULL)
	{
		memcpy(header + o, ",\"kid\":", 7);
		o += 7;
		if ((rc = json_quote(header, sizeof(header), &o, kid)) != NADI_JWT_OK)
			return rc;
	}
	if (o + 2 > sizeof(header))
		return NADI_JWT_ETOOLONG;
	header[o++] = '}';
	header[o] = '\0';
	return nadi_jwt_sign_parts(alg, key, keylen, header,
							   payload_json, strlen(payload_json),
							   out, outsize, outlen);
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

/* Decode a segment that must be a JSON object into a NUL-terminated buffer. */
static int
decode_json_segment(const char *seg, size_t seglen, char *buf, size_t bufsize, size_t *outlen)
{
	size_t		n;
	int			rc;

	rc = nadi_jwt_b64url_decode(seg, seglen, (unsigned char *) buf, bufsize - 1, &n);
	if (rc != NADI_JWT_OK)
		return rc;
	buf[n] = '\0';
	if (memchr(buf, '\0', n) != NULL)
		return NADI_JWT_EJSON;
	if (nadi_jwt_json_check_object(buf, n) != NADI_JWT_OK)
		return NADI_JWT_EJSON;
	*outlen = n;
	return NADI_JWT_OK;
}

int
nadi_jwt_parse(const char *token, size_t len, nadi_jwt_parsed *out)
{
	nadi_jwt_segments seg;
	char		alg[32];
	size_t		n;
	int			rc;

	if (token == NULL || out == NULL)
		return NADI_JWT_EINVAL;
	memset(out, 0, sizeof(*out));
	if ((rc = nadi_jwt_split(token, len, &seg)) != NADI_JWT_OK)
		return rc;

	/* header */
	rc = decode_json_segment(token + seg.header_off, seg.header_len,
							 out->header, sizeof(out->header), &out->header_len);
	if (rc != NADI_JWT_OK)
		return rc;
	rc = nadi_jwt_json_string(out->header, out->header_len, "alg", alg, sizeof(alg), NULL);
	if (rc == NADI_JWT_ETOOLONG)
		return NADI_JWT_EALG;
	if (rc != NADI_JWT_OK)
		return NADI_JWT_EHEADER;
	if ((alg[0] == 'n' || alg[0] == 'N') && (alg[1] == 'o' || alg[1] == 'O') &&
		(alg[2] == 'n' || alg[2] == 'N') && (alg[3] == 'e' || alg[3] == 'E') && alg[4] == '\0')
		return NADI_JWT_EALG_NONE;
	out->alg = nadi_jwt_alg_from_name(alg);
	if (out->alg == NADI_JWT_ALG_INVALID)
		return NADI_JWT_EALG;
	rc = nadi_jwt_json_string(out->header, out->header_len, "kid",
							  out->kid, sizeof(out->kid), NULL);
	if (rc == NADI_JWT_OK)
		out->has_kid = out->kid[0] != '\0';
	else if (rc != NADI_JWT_ENOTFOUND)
		return NADI_JWT_EHEADER;
	if (!out->has_kid)
		out->kid[0] = '\0';
	/* critical extensions: none are understood, so any must be refused */
	rc = nadi_jwt_json_string(out->header, out->header_len, "crit", NULL, 0, NULL);
	if (rc != NADI_JWT_ENOTFOUND)
		return NADI_JWT_EHEADER;

	/* payload */
	rc = decode_json_segment(token + seg.payload_off, seg.payload_len,
							 out->payload, sizeof(out->payload), &out->payload_len);
	if (rc != NADI_JWT_OK)
		return rc;

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
