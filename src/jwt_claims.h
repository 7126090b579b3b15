/*
 * jwt_claims.h — the one claims validator of Nadi's tokens.  The extension
 * (token.c: nadi.token_verify, nadi.authenticate), nadi-edge (bearer.c) and
 * nadi-sandboxd (access.c) all call nadi_claims_check() on the payload of a
 * token whose form and signature jwt.c has checked, so one set of rules
 * decides everywhere: issuer, audience, exp, nbf and iat (with one leeway),
 * subject, tenant, scope and the shape of "sid".
 *
 * No PostgreSQL includes and no allocation the caller must free: the claims
 * are read with jansson and copied out into NadiClaims, and the json_t is
 * freed before nadi_claims_check() returns (so the extension may ereport on
 * the result).  What a caller adds on top (a scope it requires, a scope it
 * refuses) stays with that caller.
 */
#ifndef NADI_JWT_CLAIMS_H
#define NADI_JWT_CLAIMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The issuer of every token ("iss"). */
#define NADI_JWT_ISSUER			"nadi"
/* Audiences ("aud"): the API (edge, nadi.authenticate), sandbox hosts. */
#define NADI_JWT_AUD_API		"nadi"
#define NADI_JWT_AUD_SANDBOXD	"nadi-sandboxd"
/* Clock skew tolerated for "nbf" and "iat" (the issuer may be another host). */
#define NADI_JWT_LEEWAY_S		60
/* Longest tenant, subject or audience, in bytes (as nadi.token_mint takes them). */
#define NADI_JWT_MAX_NAME		255
/* Largest NumericDate: 12 digits, so it converts to a timestamp without overflow. */
#define NADI_JWT_MAX_TIME		INT64_C(999999999999)
/* Length of a uuid in text (the "sid" claim). */
#define NADI_JWT_UUID_LEN		36

/* The scopes of a token, in the order of the extension's NadiScope. */
typedef enum NadiJwtScope
{
	NADI_JWT_SCOPE_NONE = 0,
	NADI_JWT_SCOPE_ADMIN,		/* every tenant */
	NADI_JWT_SCOPE_TENANT,		/* every session of one tenant */
	NADI_JWT_SCOPE_SESSION,		/* one session ("sid") of one tenant */
	NADI_JWT_SCOPE_SANDBOX		/* one sandbox of one session ("sid") */
} NadiJwtScope;

typedef enum NadiClaimsResult
{
	NADI_CLAIMS_OK = 0,
	NADI_CLAIMS_INVALID,		/* malformed, missing, or not for us: why says which */
	NADI_CLAIMS_EXPIRED,		/* now >= exp */
	NADI_CLAIMS_NOT_YET			/* nbf (or iat) later than now + leeway */
} NadiClaimsResult;

/* What a valid token says. */
typedef struct NadiClaims
{
	char		subject[NADI_JWT_MAX_NAME + 1];
	char		tenant[NADI_JWT_MAX_NAME + 1];
	NadiJwtScope scope;
	const char *scope_name;		/* "admin", "tenant", "session" or "sandbox" */
	bool		has_sid;
	char		sid[NADI_JWT_UUID_LEN + 1];
	int64_t		exp;			/* Unix seconds */
	bool		has_nbf;
	int64_t		nbf;
	bool		has_iat;
	int64_t		iat;
} NadiClaims;

/*
 * Check the claims json[0..len) of a token for audience at time now (Unix
 * seconds).  NADI_CLAIMS_OK fills *out; anything else writes a sentence
 * saying why into why[0..whylen) (never the token) and leaves *out
 * unspecified (exp, or nbf, is set for NADI_CLAIMS_EXPIRED and _NOT_YET).
 *
 * The rules, in the order they are checked:
 *   the payload is one JSON object (jwt.c's strict reading: no member twice);
 *   "iss" is NADI_JWT_ISSUER;
 *   "sub" and "tenant" are non-empty strings of at most NADI_JWT_MAX_NAME bytes;
 *   "scope" is one of the four scopes;
 *   "sid", when present, is a uuid in text; session and sandbox scopes need it;
 *   "aud" is a string or an array of strings, and names audience;
 *   "exp" is a NumericDate (a number from 0 to NADI_JWT_MAX_TIME; fractions
 *   are dropped) and now < exp;
 *   "nbf", when present, is a NumericDate and nbf <= now + NADI_JWT_LEEWAY_S;
 *   "iat", when present, is a NumericDate and iat <= now + NADI_JWT_LEEWAY_S.
 */
extern NadiClaimsResult nadi_claims_check(const char *json, size_t len, const char *audience,
										  int64_t now, NadiClaims *out,
										  char *why, size_t whylen);

/* The scope named s, or NADI_JWT_SCOPE_NONE; and the name of a scope. */
extern NadiJwtScope nadi_jwt_scope_from_name(const char *s);
extern const char *nadi_jwt_scope_name(NadiJwtScope scope);

#endif							/* NADI_JWT_CLAIMS_H */
