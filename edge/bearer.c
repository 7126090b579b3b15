/*
 * bearer.c — the bearer token of a request.  The edge verifies each token
 * itself, against the public keys of nadi.jwks(), with the extension's own
 * code: jwt.c for the form and the EdDSA signature, jwt_claims.c for the
 * claims (the one validator nadi.token_verify uses too: issuer, audience
 * "nadi", exp, nbf and iat with one leeway, subject, tenant, scope, sid), so
 * a bad token costs no database round trip.  The database verifies the
 * token again inside every request's transaction (nadi.authenticate), which
 * is what row-level security keys on.
 *
 * The key set is daemonlib's cache (jwks.c), refreshed every --jwks-refresh
 * seconds, and early when a token names a key the cache does not know
 * (rotation); such a request waits for that one refresh.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "edge.h"
#include "jwt.h"
#include "jwt_claims.h"
#include "daemonlib/http.h"
#include "daemonlib/jwks.h"

_Static_assert((int) SCOPE_ADMIN == (int) NADI_JWT_SCOPE_ADMIN &&
				   (int) SCOPE_TENANT == (int) NADI_JWT_SCOPE_TENANT &&
				   (int) SCOPE_SESSION == (int) NADI_JWT_SCOPE_SESSION &&
				   (int) SCOPE_SANDBOX == (int) NADI_JWT_SCOPE_SANDBOX,
			   "EdgeScope follows NadiJwtScope");
_Static_assert(sizeof(((EdgeAuth *) 0)->subject) == NADI_JWT_MAX_NAME + 1 &&
				   sizeof(((EdgeAuth *) 0)->tenant) == NADI_JWT_MAX_NAME + 1 &&
				   sizeof(((EdgeAuth *) 0)->sid) == NADI_JWT_UUID_LEN + 1,
			   "EdgeAuth holds what NadiClaims does");

static JwksCache signing_keys;
static EvTimer	 refresh_timer;

static void
refresh_done(void *arg EDGE_UNUSED, EdgeDbResult *r)
{
	bool first = !signing_keys.loaded;

	if (r->ok && db_rows(r) == 1 && !db_isnull(r, 0, 0))
	{
		if (jwks_loaded(&signing_keys, db_value(r, 0, 0)) >= 0)
		{
			if (first || edge_cfg.verbose)
				log_info("loaded %d signing key(s) from nadi.jwks()", jwks_count(&signing_keys));
			edge_metrics.jwks_refreshes++;
		}
		else
			log_warning("could not refresh the signing keys: bad key set");
		return;
	}
	log_warning("could not refresh the signing keys: %s",
				r->ok ? "bad key set" : (r->message ? r->message : "database error"));
	jwks_failed(&signing_keys);
}

static JwksFetch
keys_fetch(void *arg EDGE_UNUSED)
{
	if (db_submit(STMT_JWKS, NULL, 0, NULL, refresh_done, NULL) == NULL)
		return JWKS_FETCH_LATER;
	return JWKS_FETCH_STARTED;
}

static void
refresh_timer_fn(EvTimer *t EDGE_UNUSED)
{
	jwks_refresh(&signing_keys);
}

static void
keys_defer(void *arg EDGE_UNUSED, uint64_t delay_ms)
{
	if (!refresh_timer.armed)
		ev_timer_arm(&refresh_timer, delay_ms, refresh_timer_fn, NULL);
}

static const JwksOps keys_ops = {
	.fetch = keys_fetch,
	.defer = keys_defer,
	.now_ms = ev_now_ms,
};

int
auth_init(void)
{
	jwks_init(&signing_keys, &keys_ops);
	jwks_refresh(&signing_keys);
	return 0;
}

void
auth_tick(void)
{
	if (jwks_stale(&signing_keys, (uint64_t) edge_cfg.jwks_refresh_s * 1000))
		jwks_refresh(&signing_keys);
}

void
auth_reload(void)
{
	jwks_refresh(&signing_keys);
}

int
auth_key_count(void)
{
	return jwks_count(&signing_keys);
}

bool
auth_wait_refresh(AuthWaitFn fn, void *arg)
{
	return jwks_wait(&signing_keys, fn, arg);
}

void
auth_wait_cancel(void *arg)
{
	jwks_wait_cancel(&signing_keys, arg);
}

void
auth_clear(EdgeAuth *a)
{
	if (a->token)
	{
		explicit_bzero(a->token, strlen(a->token));
		free(a->token);
	}
	memset(a, 0, sizeof(*a));
}

int
auth_copy(EdgeAuth *dst, const EdgeAuth *src)
{
	char *t = src->token ? strdup(src->token) : NULL;

	if (src->token && t == NULL)
		return -ENOMEM;
	auth_clear(dst);
	*dst = *src;
	dst->token = t;
	return 0;
}

bool
auth_same_principal(const EdgeAuth *a, const EdgeAuth *b)
{
	return a->scope == b->scope && strcmp(a->tenant, b->tenant) == 0 &&
		   strcmp(a->subject, b->subject) == 0 && a->has_sid == b->has_sid &&
		   (!a->has_sid || strcmp(a->sid, b->sid) == 0);
}

bool
auth_expired(const EdgeAuth *a)
{
	return a->token && ev_wall_s() >= a->exp;
}

#define FAIL(status, code, ...) \
	do \
	{ \
		problem_set(p, status, code, __VA_ARGS__); \
		goto fail; \
	} while (0)

/*
 * Check an Authorization header.  AUTH_OK fills *out (the caller clears it
 * with auth_clear); AUTH_RETRY means the signing key is unknown and the key
 * set should be refreshed first; AUTH_FAIL fills *p with a 401 or 403.
 */
AuthResult
auth_check(const char *authorization, EdgeAuth *out, EdgeProblem *p)
{
	nadi_jwt_parsed *jp = NULL;
	const JwksKey	*key;
	const char		*tok;
	NadiClaims		 c;
	char			 why[512];
	int				 rc;

	memset(out, 0, sizeof(*out));
	switch (http_bearer_parse(authorization, &tok))
	{
		case HTTP_BEARER_NONE:
			if (edge_cfg.dev_no_auth)
				return AUTH_NO_TOKEN;
			FAIL(401, "not_authenticated",
				 "This endpoint needs a token: send \"Authorization: Bearer <token>\".");
		case HTTP_BEARER_OTHER:
			FAIL(401, "invalid_token", "Only the Bearer authorization scheme is accepted.");
		case HTTP_BEARER_EMPTY:
		case HTTP_BEARER_TOKEN:
			break;
	}
	if (tok == NULL || strlen(tok) > NADI_JWT_MAX_TOKEN)
		FAIL(401, "invalid_token", "The bearer token is empty or too long.");

	jp = malloc(sizeof(*jp));
	if (jp == NULL)
		FAIL(503, "unavailable", "Out of memory.");
	rc = nadi_jwt_parse(tok, strlen(tok), jp);
	if (rc == NADI_JWT_EALG_NONE)
		FAIL(401, "invalid_token", "Unsigned tokens (\"alg\": \"none\") are not accepted.");
	if (rc != 0)
		FAIL(401, "invalid_token", "The token is malformed: %s.", nadi_jwt_strerror(rc));
	if (jp->alg != NADI_JWT_ALG_EDDSA)
		FAIL(401, "invalid_token", "The edge accepts EdDSA tokens only.");
	if (!jp->has_kid)
		FAIL(401, "invalid_token", "The token does not name its signing key (\"kid\").");
	key = jwks_find(&signing_keys, jp->kid);
	if (key == NULL)
	{
		free(jp);
		/* counted as a failure only once the refreshed keys lack it too (routes.c) */
		problem_set(p, 401, "invalid_token", "The key that signed the token is unknown.");
		return AUTH_RETRY;
	}
	if (nadi_jwt_verify(jp, NADI_JWT_ALG_EDDSA, key->pub, sizeof(key->pub)) != 0)
		FAIL(401, "invalid_token", "The token's signature does not verify.");

	switch (nadi_claims_check(jp->payload, jp->payload_len, NADI_JWT_AUD_API, ev_wall_s(), &c, why,
							  sizeof(why)))
	{
		case NADI_CLAIMS_OK:
			break;
		case NADI_CLAIMS_EXPIRED:
			FAIL(401, "token_expired", "%s", why);
		default:
			FAIL(401, "invalid_token", "%s", why);
	}
	if (c.scope == NADI_JWT_SCOPE_SANDBOX)
		FAIL(403, "forbidden", "Sandbox tokens are for the credentials proxy, not the API.");
	memcpy(out->subject, c.subject, sizeof(c.subject));
	memcpy(out->tenant, c.tenant, sizeof(c.tenant));
	out->scope = (EdgeScope) c.scope;
	out->has_sid = c.has_sid;
	memcpy(out->sid, c.sid, sizeof(out->sid));
	out->exp = c.exp;
	out->token = strdup(tok);
	if (out->token == NULL)
		FAIL(503, "unavailable", "Out of memory.");
	free(jp);
	return AUTH_OK;

fail:
	edge_metrics.auth_failures++;
	free(jp);
	auth_clear(out);
	return AUTH_FAIL;
}
