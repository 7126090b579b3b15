/*
 * auth.c — bearer tokens.  The edge verifies each token itself, with the
 * shared jwt.c, against the public keys of nadi.jwks() — the same checks as
 * the extension's token_verify (EdDSA signature by a known key, issuer
 * "nadi", audience "nadi", exp, nbf with 60 s leeway, the required claims) —
 * so a bad token costs no database round trip.  The database verifies the
 * token again inside every request's transaction (nadi.authenticate), which
 * is what row-level security keys on.
 *
 * The key set is cached and refreshed every --jwks-refresh seconds, and
 * early when a token names a key the cache does not know (rotation); such a
 * request waits for that one refresh.  Refreshes are at least a second
 * apart, so unknown kids cannot make the edge hammer the database.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "edge.h"
#include "jwt.h"
#include "jwt_claims.h"

#define AUTH_MAX_KEYS 64
#define AUTH_MIN_REFRESH_MS 1000

typedef NadiJwk AuthKey;

typedef struct AuthWaiter
{
	AuthWaitFn	fn;
	void	   *arg;
	struct AuthWaiter *next;
} AuthWaiter;

static AuthKey keys[AUTH_MAX_KEYS];
static int	nkeys;
static bool loaded;
static uint64_t loaded_ms;
static uint64_t last_attempt_ms;
static EdgeJob *refresh_job;
static AuthWaiter *waiters;
static EvTimer refresh_timer;

static void auth_refresh(void);

static const AuthKey *
key_find(const char *kid)
{
	for (int i = 0; i < nkeys; i++)
		if (strcmp(keys[i].kid, kid) == 0)
			return &keys[i];
	return NULL;
}

/* Replace the cache with the key set in json ({"keys": [...]}). */
static int
jwks_load(const char *text)
{
	AuthKey		fresh[AUTH_MAX_KEYS];
	int			n = nadi_jwks_parse(text, fresh, AUTH_MAX_KEYS);

	if (n < 0)
		return -EINVAL;
	memcpy(keys, fresh, sizeof(AuthKey) * n);
	nkeys = n;
	return 0;
}

static void
refresh_done(void *arg EDGE_UNUSED, EdgeDbResult *r)
{
	AuthWaiter *w;

	refresh_job = NULL;
	if (r->ok && db_rows(r) == 1 && !db_isnull(r, 0, 0) && jwks_load(db_value(r, 0, 0)) == 0)
	{
		if (!loaded || edge_cfg.verbose)
			log_info("loaded %d signing key(s) from nadi.jwks()", nkeys);
		loaded = true;
		loaded_ms = ev_now_ms();
		edge_metrics.jwks_refreshes++;
	}
	else
		log_warning("could not refresh the signing keys: %s",
				 r->ok ? "bad key set" : (r->message ? r->message : "database error"));
	/* waiters re-check once, whatever the outcome */
	w = waiters;
	waiters = NULL;
	while (w)
	{
		AuthWaiter *next = w->next;

		w->fn(w->arg);
		free(w);
		w = next;
	}
}

static void
refresh_timer_fn(EvTimer *t EDGE_UNUSED)
{
	auth_refresh();
}

/* Start a refresh now, or as soon as the rate limit allows. */
static void
auth_refresh(void)
{
	uint64_t	now = ev_now_ms();

	if (refresh_job)
		return;
	if (last_attempt_ms && now < last_attempt_ms + AUTH_MIN_REFRESH_MS)
	{
		if (!refresh_timer.armed)
			ev_timer_arm(&refresh_timer, last_attempt_ms + AUTH_MIN_REFRESH_MS - now,
						   refresh_timer_fn, NULL);
		return;
	}
	last_attempt_ms = now;
	refresh_job = db_submit(STMT_JWKS, NULL, 0, NULL, refresh_done, NULL);
	if (refresh_job == NULL)
		ev_timer_arm(&refresh_timer, AUTH_MIN_REFRESH_MS, refresh_timer_fn, NULL);
}

int
auth_init(void)
{
	auth_refresh();
	return 0;
}

void
auth_tick(void)
{
	if (!loaded || ev_now_ms() >= loaded_ms + (uint64_t) edge_cfg.jwks_refresh_s * 1000)
		auth_refresh();
}

void
auth_reload(void)
{
	auth_refresh();
}

int
auth_key_count(void)
{
	return nkeys;
}

bool
auth_wait_refresh(AuthWaitFn fn, void *arg)
{
	AuthWaiter *w = calloc(1, sizeof(*w));

	if (w == NULL)
		return false;
	w->fn = fn;
	w->arg = arg;
	w->next = waiters;
	waiters = w;
	auth_refresh();
	return true;
}

void
auth_wait_cancel(void *arg)
{
	for (AuthWaiter **pp = &waiters; *pp;)
	{
		if ((*pp)->arg == arg)
		{
			AuthWaiter *w = *pp;

			*pp = w->next;
			free(w);
		}
		else
			pp = &(*pp)->next;
	}
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
	char	   *t = src->token ? strdup(src->token) : NULL;

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
	do { problem_set(p, status, code, __VA_ARGS__); goto fail; } while (0)

/*
 * Check an Authorization header.  AUTH_OK fills *out (the caller clears it
 * with auth_clear); AUTH_RETRY means the signing key is unknown and the key
 * set should be refreshed first; AUTH_FAIL fills *p with a 401 or 403.
 */
AuthResult
auth_check(const char *authorization, EdgeAuth *out, EdgeProblem *p)
{
	nadi_jwt_parsed *jp = NULL;
	const AuthKey *key;
	const char *tok;
	json_t	   *claims = NULL;
	const char *scope;
	int64_t		nbf;
	int			rc;

	memset(out, 0, sizeof(*out));
	switch (http_bearer_parse(authorization, &tok))
	{
		case HTTP_BEARER_NONE:
			if (edge_cfg.dev_no_auth)
				return AUTH_NO_TOKEN;
			FAIL(401, "not_authenticated", "This endpoint needs a token: send \"Authorization: Bearer <token>\".");
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
	key = key_find(jp->kid);
	if (key == NULL)
	{
		free(jp);
		problem_set(p, 401, "invalid_token", "The key that signed the token is unknown.");
		edge_metrics.auth_failures++;
		return AUTH_RETRY;
	}
	if (nadi_jwt_verify(jp, NADI_JWT_ALG_EDDSA, key->pub, sizeof(key->pub)) != 0)
		FAIL(401, "invalid_token", "The token's signature does not verify.");

	claims = json_loadb(jp->payload, jp->payload_len, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(claims))
		FAIL(401, "invalid_token", "The token's claims are not a JSON object.");
	if (!json_is_string(json_object_get(claims, "iss")) ||
		strcmp(json_string_value(json_object_get(claims, "iss")), "nadi") != 0)
		FAIL(401, "invalid_token", "The token was not issued by nadi.");
	if (!nadi_claim_copy(claims, "sub", out->subject, sizeof(out->subject)))
		FAIL(401, "invalid_token", "The token lacks a valid \"sub\" claim.");
	if (!nadi_claim_copy(claims, "tenant", out->tenant, sizeof(out->tenant)) || out->tenant[0] == '\0')
		FAIL(401, "invalid_token", "The token lacks a valid \"tenant\" claim.");
	scope = json_string_value(json_object_get(claims, "scope"));
	if (scope == NULL)
		FAIL(401, "invalid_token", "The token lacks the \"scope\" claim.");
	if (strcmp(scope, "admin") == 0)
		out->scope = SCOPE_ADMIN;
	else if (strcmp(scope, "tenant") == 0)
		out->scope = SCOPE_TENANT;
	else if (strcmp(scope, "session") == 0)
		out->scope = SCOPE_SESSION;
	else if (strcmp(scope, "sandbox") == 0)
		out->scope = SCOPE_SANDBOX;
	else
		FAIL(401, "invalid_token", "The token's \"scope\" claim is not a known scope.");
	if (json_object_get(claims, "sid"))
	{
		if (!nadi_claim_copy(claims, "sid", out->sid, sizeof(out->sid)) || !nadi_jwt_uuid_text(out->sid))
			FAIL(401, "invalid_token", "The token's \"sid\" claim is not a uuid.");
		out->has_sid = true;
	}
	else if (out->scope == SCOPE_SESSION || out->scope == SCOPE_SANDBOX)
		FAIL(401, "invalid_token", "A %s-scoped token must carry a \"sid\" claim.", scope);
	if (!nadi_claim_audience(claims, "nadi"))
		FAIL(401, "invalid_token", "The token is not meant for audience \"nadi\".");
	if (!nadi_claim_time(claims, "exp", &out->exp))
		FAIL(401, "invalid_token", "The token lacks a valid \"exp\" claim.");
	if (ev_wall_s() >= out->exp)
		FAIL(401, "token_expired", "The token has expired.");
	if (json_object_get(claims, "nbf"))
	{
		if (!nadi_claim_time(claims, "nbf", &nbf))
			FAIL(401, "invalid_token", "The token's \"nbf\" claim is not a number of seconds.");
		if (nbf > ev_wall_s() + NADI_JWT_NBF_LEEWAY_S)
			FAIL(401, "invalid_token", "The token is not valid yet.");
	}
	if (out->scope == SCOPE_SANDBOX)
		FAIL(403, "forbidden", "Sandbox tokens are for the credentials proxy, not the API.");
	out->token = strdup(tok);
	if (out->token == NULL)
		FAIL(503, "unavailable", "Out of memory.");
	json_decref(claims);
	free(jp);
	return AUTH_OK;

fail:
	edge_metrics.auth_failures++;
	json_decref(claims);
	free(jp);
	auth_clear(out);
	return AUTH_FAIL;
}
