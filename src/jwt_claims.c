/*
 * jwt_claims.c — the claims validator of every Nadi token (see jwt_claims.h).
 * Built into the extension and into nadi-edge and nadi-sandboxd.  The JSON is
 * read with jwt.c's strict jansson reader and freed before returning.
 */
#include "jwt_claims.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "jwt.h"

static const char *const scope_names[] = {
	[NADI_JWT_SCOPE_ADMIN] = "admin",
	[NADI_JWT_SCOPE_TENANT] = "tenant",
	[NADI_JWT_SCOPE_SESSION] = "session",
	[NADI_JWT_SCOPE_SANDBOX] = "sandbox",
};

NadiJwtScope
nadi_jwt_scope_from_name(const char *s)
{
	if (s == NULL)
		return NADI_JWT_SCOPE_NONE;
	for (int i = NADI_JWT_SCOPE_ADMIN; i <= NADI_JWT_SCOPE_SANDBOX; i++)
		if (strcmp(s, scope_names[i]) == 0)
			return (NadiJwtScope) i;
	return NADI_JWT_SCOPE_NONE;
}

const char *
nadi_jwt_scope_name(NadiJwtScope scope)
{
	if (scope < NADI_JWT_SCOPE_ADMIN || scope > NADI_JWT_SCOPE_SANDBOX)
		return NULL;
	return scope_names[scope];
}

static void say(char *why, size_t whylen, const char *fmt,...)
			__attribute__((format(printf, 3, 4)));

static void
say(char *why, size_t whylen, const char *fmt,...)
{
	va_list		ap;

	if (why == NULL || whylen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(why, whylen, fmt, ap);
	va_end(ap);
}

/* The claim name, or NULL; false (why says so) when a required one is absent. */
static bool
claim_get(json_t *claims, const char *name, bool required, json_t **v,
		  char *why, size_t whylen)
{
	*v = json_object_get(claims, name);
	if (*v == NULL && required)
	{
		say(why, whylen, "The token lacks the \"%s\" claim.", name);
		return false;
	}
	return true;
}

/* false, and why: "The token's "name" claim <fault>." */
static bool
bad_claim(const char *name, const char *fault, char *why, size_t whylen)
{
	say(why, whylen, "The token's \"%s\" claim %s.", name, fault);
	return false;
}

/*
 * A required (or optional: absent is NULL) string claim: a string without
 * U+0000 (the JSON reader refuses it), non-empty and at most max bytes.
 */
static bool
claim_string(json_t *claims, const char *name, bool required, size_t max,
			 const char **out, char *why, size_t whylen)
{
	json_t	   *v;

	*out = NULL;
	if (!claim_get(claims, name, required, &v, why, whylen))
		return false;
	if (v == NULL)
		return true;
	if (!json_is_string(v))
		return bad_claim(name, "is not a string", why, whylen);
	if (json_string_length(v) == 0)
		return bad_claim(name, "is empty", why, whylen);
	if (json_string_length(v) > max)
		return bad_claim(name, "is too long", why, whylen);
	*out = json_string_value(v);
	return true;
}

/*
 * A NumericDate claim (RFC 7519 section 2): seconds since the epoch, from 0
 * to NADI_JWT_MAX_TIME; fractions are dropped.  Absent: *present = false.
 */
static bool
claim_time(json_t *claims, const char *name, bool required, bool *present, int64_t *out,
		   char *why, size_t whylen)
{
	json_t	   *v;
	double		d;

	if (!claim_get(claims, name, required, &v, why, whylen))
		return false;
	*present = v != NULL;
	if (v == NULL)
		return true;
	if (json_is_integer(v))
	{
		if (json_integer_value(v) < 0)
			return bad_claim(name, "is before 1970", why, whylen);
		if (json_integer_value(v) > NADI_JWT_MAX_TIME)
			return bad_claim(name, "is out of range", why, whylen);
		*out = (int64_t) json_integer_value(v);
		return true;
	}
	if (!json_is_real(v))
		return bad_claim(name, "is not a number", why, whylen);
	d = json_real_value(v);
	if (d < 0)
		return bad_claim(name, "is before 1970", why, whylen);
	if (d >= (double) NADI_JWT_MAX_TIME + 1.0)
		return bad_claim(name, "is out of range", why, whylen);
	*out = (int64_t) d;
	return true;
}

/*
 * "aud": one string, or an array of strings (RFC 7519 section 4.1.3);
 * anything else is malformed, even when it also names audience.
 */
static bool
audience_ok(json_t *claims, const char *audience, char *why, size_t whylen)
{
	json_t	   *aud = json_object_get(claims, "aud");
	json_t	   *v;
	size_t		i;
	bool		found = false;

	if (aud == NULL)
	{
		say(why, whylen, "The token is not meant for audience \"%s\".", audience);
		return false;
	}
	if (json_is_string(aud))
		found = strcmp(json_string_value(aud), audience) == 0;
	else if (json_is_array(aud))
	{
		json_array_foreach(aud, i, v)
		{
			if (!json_is_string(v))
			{
				say(why, whylen, "The token's \"aud\" claim is not a string or an array of strings.");
				return false;
			}
			if (strcmp(json_string_value(v), audience) == 0)
				found = true;
		}
	}
	else
	{
		say(why, whylen, "The token's \"aud\" claim is not a string or an array of strings.");
		return false;
	}
	if (!found)
		say(why, whylen, "The token is not meant for audience \"%s\".", audience);
	return found;
}

/* The checks, on the parsed object; the caller frees it. */
static NadiClaimsResult
check(json_t *claims, const char *audience, int64_t now, NadiClaims *out,
	  char *why, size_t whylen)
{
	const char *s;
	bool		present;

	if (!claim_string(claims, "iss", true, NADI_JWT_MAX_NAME, &s, why, whylen))
		return NADI_CLAIMS_INVALID;
	if (strcmp(s, NADI_JWT_ISSUER) != 0)
	{
		say(why, whylen, "The token was not issued by nadi.");
		return NADI_CLAIMS_INVALID;
	}
	if (!claim_string(claims, "sub", true, NADI_JWT_MAX_NAME, &s, why, whylen))
		return NADI_CLAIMS_INVALID;
	strcpy(out->subject, s);
	if (!claim_string(claims, "tenant", true, NADI_JWT_MAX_NAME, &s, why, whylen))
		return NADI_CLAIMS_INVALID;
	strcpy(out->tenant, s);
	if (!claim_string(claims, "scope", true, NADI_JWT_MAX_NAME, &s, why, whylen))
		return NADI_CLAIMS_INVALID;
	out->scope = nadi_jwt_scope_from_name(s);
	if (out->scope == NADI_JWT_SCOPE_NONE)
	{
		say(why, whylen, "The token's \"scope\" claim is not a known scope.");
		return NADI_CLAIMS_INVALID;
	}
	out->scope_name = nadi_jwt_scope_name(out->scope);
	if (!claim_string(claims, "sid", false, NADI_JWT_UUID_LEN, &s, why, whylen))
	{
		if (json_is_string(json_object_get(claims, "sid")))
			say(why, whylen, "The token's \"sid\" claim is not a uuid.");
		return NADI_CLAIMS_INVALID;
	}
	if (s != NULL)
	{
		if (!nadi_jwt_uuid_text(s))
		{
			say(why, whylen, "The token's \"sid\" claim is not a uuid.");
			return NADI_CLAIMS_INVALID;
		}
		strcpy(out->sid, s);
		out->has_sid = true;
	}
	else if (out->scope == NADI_JWT_SCOPE_SESSION || out->scope == NADI_JWT_SCOPE_SANDBOX)
	{
		say(why, whylen, "A %s-scoped token must carry a \"sid\" claim.", out->scope_name);
		return NADI_CLAIMS_INVALID;
	}

	if (!audience_ok(claims, audience, why, whylen))
		return NADI_CLAIMS_INVALID;

	if (!claim_time(claims, "exp", true, &present, &out->exp, why, whylen))
		return NADI_CLAIMS_INVALID;
	if (now >= out->exp)
	{
		say(why, whylen, "The token has expired.");
		return NADI_CLAIMS_EXPIRED;
	}
	if (!claim_time(claims, "nbf", false, &out->has_nbf, &out->nbf, why, whylen))
		return NADI_CLAIMS_INVALID;
	if (out->has_nbf && out->nbf > now + NADI_JWT_LEEWAY_S)
	{
		say(why, whylen, "The token is not valid yet.");
		return NADI_CLAIMS_NOT_YET;
	}
	if (!claim_time(claims, "iat", false, &out->has_iat, &out->iat, why, whylen))
		return NADI_CLAIMS_INVALID;
	if (out->has_iat && out->iat > now + NADI_JWT_LEEWAY_S)
	{
		say(why, whylen, "The token was issued in the future.");
		return NADI_CLAIMS_NOT_YET;
	}
	return NADI_CLAIMS_OK;
}

NadiClaimsResult
nadi_claims_check(const char *json, size_t len, const char *audience, int64_t now,
				  NadiClaims *out, char *why, size_t whylen)
{
	json_t	   *claims;
	NadiClaimsResult r;

	memset(out, 0, sizeof(*out));
	if (why != NULL && whylen > 0)
		why[0] = '\0';
	if (audience == NULL)
	{
		say(why, whylen, "No audience was given to check the token against.");
		return NADI_CLAIMS_INVALID;
	}
	claims = nadi_jwt_json_object(json, len, NULL);
	if (claims == NULL)
	{
		say(why, whylen, "The token's claims are not a JSON object.");
		return NADI_CLAIMS_INVALID;
	}
	r = check(claims, audience, now, out, why, whylen);
	json_decref(claims);
	return r;
}
