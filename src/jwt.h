/*
 * jwt.h — a small JSON Web Token (compact JWS) implementation on OpenSSL 3's
 * libcrypto.  It has no PostgreSQL dependency: the extension (token.c) and
 * the HTTP daemons compile the same jwt.c.
 *
 * Algorithms: EdDSA with Ed25519 keys (RFC 8037), and HS256 (RFC 7518) as a
 * development option.  "none" is never accepted.
 *
 * Nothing here allocates memory that the caller must free, and nothing exits
 * or aborts: every function returns NADI_JWT_OK (0) or a negative
 * nadi_jwt_err code.  Outputs go to caller-supplied buffers.
 *
 * JSON is read with jansson, strictly (see nadi_jwt_json_object); no json_t
 * outlives the call that made it, so the extension may ereport right after.
 * Claims are not interpreted here: nadi_jwt_parse() checks that header and
 * payload are JSON objects and reads "alg", "kid", "typ" and "crit" from the
 * header; the payload is handed back as text for the claims validator
 * (jwt_claims.h).
 */
#ifndef NADI_JWT_H
#define NADI_JWT_H

#include <stddef.h>
#include <stdint.h>

/* Longest compact token accepted or produced, in bytes. */
#define NADI_JWT_MAX_TOKEN		8192
/* Longest decoded header or payload: 3/4 of the token, plus a terminator. */
#define NADI_JWT_MAX_JSON		(NADI_JWT_MAX_TOKEN / 4 * 3 + 1)
/* Longest "kid" header value, in bytes. */
#define NADI_JWT_MAX_KID		128
/* Largest signature of any supported algorithm. */
#define NADI_JWT_MAX_SIG		64

#define NADI_JWT_ED25519_KEY_LEN	32	/* raw private seed and raw public key */
#define NADI_JWT_ED25519_SIG_LEN	64
#define NADI_JWT_HS256_SIG_LEN		32
#define NADI_JWT_HS256_MIN_KEY		32	/* RFC 7518 3.2: at least the hash size */
#define NADI_JWT_HS256_KEY_LEN		32	/* what nadi_jwt_keygen makes */

typedef enum nadi_jwt_alg
{
	NADI_JWT_ALG_INVALID = 0,	/* unknown, unsupported or "none" */
	NADI_JWT_ALG_EDDSA,
	NADI_JWT_ALG_HS256
} nadi_jwt_alg;

typedef enum nadi_jwt_err
{
	NADI_JWT_OK = 0,
	NADI_JWT_EINVAL = -1,		/* bad argument (NULL pointer, bad length) */
	NADI_JWT_ETOOLONG = -2,		/* input over a limit, or output buffer too small */
	NADI_JWT_EFORMAT = -3,		/* not three non-empty dot-separated segments */
	NADI_JWT_EBASE64 = -4,		/* a segment is not canonical unpadded base64url */
	NADI_JWT_EJSON = -5,		/* header or payload is not a JSON object */
	NADI_JWT_EHEADER = -6,		/* header lacks "alg", has a bad "kid" or "typ", a member
								 * twice, or "crit" */
	NADI_JWT_EALG_NONE = -7,	/* "alg": "none" (unsecured JWS) */
	NADI_JWT_EALG = -8,			/* an algorithm this library does not support */
	NADI_JWT_EALG_MISMATCH = -9,	/* token's algorithm differs from the key's */
	NADI_JWT_ESIG = -10,		/* signature does not verify */
	NADI_JWT_EKEY = -11,		/* key of the wrong size or unusable */
	NADI_JWT_ECRYPTO = -12		/* libcrypto failed (out of memory, ...) */
} nadi_jwt_err;

/* Deepest nesting of arrays and objects accepted (the top object is 1). */
#define NADI_JWT_JSON_MAX_DEPTH	64

/* A parsed compact token.  Large (about 12 KiB): fine on a stack. */
typedef struct nadi_jwt_parsed
{
	nadi_jwt_alg alg;
	int			has_kid;
	char		kid[NADI_JWT_MAX_KID + 1];
	char		header[NADI_JWT_MAX_JSON];	/* decoded JSON text, NUL-terminated */
	size_t		header_len;
	char		payload[NADI_JWT_MAX_JSON]; /* decoded JSON text, NUL-terminated */
	size_t		payload_len;
	const char *signing_input;	/* points into the caller's token */
	size_t		signing_input_len;
	unsigned char sig[NADI_JWT_MAX_SIG];
	size_t		sig_len;
} nadi_jwt_parsed;

/* A token's three segments, as offsets into it (nadi_jwt_split). */
typedef struct nadi_jwt_segments
{
	size_t		header_off, header_len;
	size_t		payload_off, payload_len;
	size_t		sig_off, sig_len;
} nadi_jwt_segments;

extern const char *nadi_jwt_strerror(int err);
extern const char *nadi_jwt_alg_name(nadi_jwt_alg alg);	/* "EdDSA", "HS256" or NULL */
extern nadi_jwt_alg nadi_jwt_alg_from_name(const char *name);

/* base64url without padding (RFC 7515 section 2). */
extern size_t nadi_jwt_b64url_encoded_len(size_t n);	/* excluding terminator */
extern size_t nadi_jwt_b64url_decoded_max(size_t n);
extern int	nadi_jwt_b64url_encode(const unsigned char *in, size_t inlen,
								   char *out, size_t outsize, size_t *outlen);
/* Strict: rejects padding, whitespace, other alphabets and non-zero spare bits. */
extern int	nadi_jwt_b64url_decode(const char *in, size_t inlen,
								   unsigned char *out, size_t outsize, size_t *outlen);

/*
 * Make a key.  EdDSA: priv gets the 32-byte seed, pub the 32-byte public key.
 * HS256: priv gets 32 random bytes; pub may be NULL and *publen is set to 0.
 */
extern int	nadi_jwt_keygen(nadi_jwt_alg alg,
							unsigned char *priv, size_t privsize, size_t *privlen,
							unsigned char *pub, size_t pubsize, size_t *publen);
/* The Ed25519 public key of a 32-byte private seed. */
extern int	nadi_jwt_ed25519_public(const unsigned char priv[NADI_JWT_ED25519_KEY_LEN],
									unsigned char pub[NADI_JWT_ED25519_KEY_LEN]);

/*
 * Sign or verify raw bytes.  key: EdDSA signing takes the private seed and
 * verifying the public key; HS256 takes the shared secret for both.
 */
extern int	nadi_jwt_sign_bytes(nadi_jwt_alg alg, const unsigned char *key, size_t keylen,
								const void *data, size_t len,
								unsigned char *sig, size_t sigsize, size_t *siglen);
extern int	nadi_jwt_verify_sig(nadi_jwt_alg alg, const unsigned char *key, size_t keylen,
								const void *signing_input, size_t len,
								const unsigned char *sig, size_t siglen);

/*
 * Build a signed compact token with header {"alg":..,"typ":"JWT","kid":..}
 * (no "kid" when kid is NULL).  payload_json is used as given (callers build
 * it with their JSON library); it must be a JSON object.  out receives the
 * NUL-terminated token; *outlen (may be NULL) its length.
 */
extern int	nadi_jwt_sign(nadi_jwt_alg alg, const char *kid,
						  const unsigned char *key, size_t keylen,
						  const char *payload_json,
						  char *out, size_t outsize, size_t *outlen);
/* The same with a caller-built header and arbitrary payload bytes. */
extern int	nadi_jwt_sign_parts(nadi_jwt_alg alg, const unsigned char *key, size_t keylen,
								const char *header_json,
								const void *payload, size_t payload_len,
								char *out, size_t outsize, size_t *outlen);

/* Find the three segments; checks length and shape only. */
extern int	nadi_jwt_split(const char *token, size_t len, nadi_jwt_segments *seg);

/*
 * Split and decode a token: header and payload must be JSON objects (as
 * nadi_jwt_json_object takes them), the header must name a supported "alg",
 * may carry a string "kid" and a "typ" of "JWT" (any case), but no "crit".
 * Does not verify the signature.
 */
extern int	nadi_jwt_parse(const char *token, size_t len, nadi_jwt_parsed *out);

/* Verify a parsed token's signature with a key of algorithm key_alg. */
extern int	nadi_jwt_verify(const nadi_jwt_parsed *p, nadi_jwt_alg key_alg,
							const unsigned char *key, size_t keylen);

/*
 * json[0..len) as one JSON object, with jansson: RFC 8259, valid UTF-8, no
 * U+0000, no member twice in any object, nesting at most
 * NADI_JWT_JSON_MAX_DEPTH.  Returns a new reference (json_decref it), or NULL;
 * then *dup (may be NULL) tells whether a member named twice was the fault.
 */
struct json_t;
extern struct json_t *nadi_jwt_json_object(const char *json, size_t len, int *dup);

/* Is json[0..len) one JSON object as nadi_jwt_json_object takes it? */
extern int	nadi_jwt_json_check_object(const char *json, size_t len);

/*
 * Is s the text of a uuid (8-4-4-4-12 hex digits, either case)?  The shape
 * of the "sid" claim, and of every session id the edge reads from a request.
 */
extern int	nadi_jwt_uuid_text(const char *s);

#endif							/* NADI_JWT_H */
