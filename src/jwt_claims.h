/*
 * jwt_claims.h — what the HTTP daemons (nadi-edge, nadi-sandboxd) do with a
 * token once jwt.c has checked its form and signature: read the public keys
 * of nadi.jwks() and check the claims, on jansson.  The extension makes the
 * same checks on jsonb (token.c).  Header-only, because every C file in src/ is
 * part of the extension, which does not link jansson.
 */
#ifndef NADI_JWT_CLAIMS_H
#define NADI_JWT_CLAIMS_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include <jansson.h>

#include "jwt.h"

/* Clock skew tolerated for "nbf", as the extension's token_verify. */
#define NADI_JWT_NBF_LEEWAY_S	60

/* A public key of nadi.jwks(). */
typedef struct NadiJwk
{
	char		kid[NADI_JWT_MAX_KID + 1];
	unsigned char pub[NADI_JWT_ED25519_KEY_LEN];
} NadiJwk;

/*
 * The Ed25519 keys of a JSON Web Key Set ({"keys": [...]}) into keys[0..max):
 * returns how many, or -1 when text is not a key set.  Keys of another kind,
 * or malformed, are skipped.
 */
static inline int
nadi_jwks_parse(const char *text, NadiJwk *keys, int max)
{
	json_t	   *doc = json_loads(text, 0, NULL);
	json_t	   *arr = json_object_get(doc, "keys");
	json_t	   *k;
	size_t		i;
	int			n = 0;

	if (!json_is_array(arr))
	{
		json_decref(doc);
		return -1;
	}
	json_array_foreach(arr, i, k)
	{
		const char *kid = json_string_value(json_object_get(k, "kid"));
		const char *x = json_string_value(json_object_get(k, "x"));
		const char *crv = json_string_value(json_object_get(k, "crv"));
		size_t		len = 0;

		if (n == max || kid == NULL || x == NULL || crv == NULL ||
			strcmp(crv, "Ed25519") != 0 || strlen(kid) > NADI_JWT_MAX_KID)
			continue;
		if (nadi_jwt_b64url_decode(x, strlen(x), keys[n].pub, sizeof(keys[n].pub), &len) != 0 ||
			len != NADI_JWT_ED25519_KEY_LEN)
			continue;
		strcpy(keys[n].kid, kid);
		n++;
	}
	json_decref(doc);
	return n;
}

/* Does the "aud" claim (a string or an array of strings) name audience? */
static inline bool
nadi_claim_audience(json_t *claims, const char *audience)
{
	json_t	   *aud = json_object_get(claims, "aud");
	json_t	   *v;
	size_t		i;

	if (json_is_string(aud))
		return strcmp(json_string_value(aud), audience) == 0;
	json_array_foreach(aud, i, v)
		if (json_is_string(v) && strcmp(json_string_value(v), audience) == 0)
		return true;
	return false;
}

/* A NumericDate claim: a non-negative number of seconds. */
static inline bool
nadi_claim_time(json_t *claims, const char *name, int64_t *out)
{
	json_t	   *v = json_object_get(claims, name);

	if (json_is_integer(v) && json_integer_value(v) >= 0)
		*out = json_integer_value(v);
	else if (json_is_real(v) && json_real_value(v) >= 0 && json_real_value(v) < 1e12)
		*out = (int64_t) json_real_value(v);
	else
		return false;
	return true;
}

/* Copy a string claim that fits in size bytes (with its terminator). */
static inline bool
nadi_claim_copy(json_t *claims, const char *name, char *out, size_t size)
{
	const char *s = json_string_value(json_object_get(claims, name));

	if (s == NULL || strlen(s) >= size)
		return false;
	strcpy(out, s);
	return true;
}

#endif							/* NADI_JWT_CLAIMS_H */
