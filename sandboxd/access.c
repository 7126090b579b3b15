/*
 * access.c — the credentials of a request (see access.h).  Session tokens
 * are checked as the edge checks its tokens (edge/auth.c) and as the
 * extension's token_verify does: an EdDSA signature by a key of
 * nadi.jwks(), issuer "nadi", audience "nadi-sandboxd", scope "sandbox",
 * a uuid "sid", a tenant, exp, and nbf with 60 s leeway.  The code doing
 * the parsing, the signature and the claims is the extension's own
 * (src/jwt.c, src/jwt_claims.h), shared with the edge.
 *
 * The key set is cached and refreshed every jwks_refresh, and early when a
 * token names a key the cache does not know (rotation); such a request
 * waits for that one refresh.  Refreshes are at least a second apart, so
 * tokens naming unknown keys cannot make the daemon hammer the database.
 */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "access.h"
#include "jwt.h"
#include "jwt_claims.h"
#include "pg.h"
#include "sbx.h"

#define MAX_KEYS 64
#define MIN_REFRESH_MS 1000
#define WAIT_MAX_MS 5000   /* a request waits this long for a refresh at most */
#define AUDIENCE "nadi-sandboxd"

struct waiter {
	void (*fn)(void *arg);
	void *arg;
	struct waiter *next;
};

static NadiJwk keys[MAX_KEYS];
static size_t nkeys;
static bool loaded, in_flight;
static uint64_t last_attempt_ms;
static struct waiter *waiters;
static struct ev_timer periodic, retry, give_up;

static void refresh(void);

static const NadiJwk *
key_find(const char *kid)
{
	for (size_t i = 0; i < nkeys; i++)
		if (strcmp(keys[i].kid, kid) == 0)
			return &keys[i];
	return NULL;
}

/* Replace the cache with the Ed25519 keys of a JWKS ({"keys": [...]}). */
static int
keys_load(const char *text)
{
	NadiJwk fresh[MAX_KEYS];
	int n = nadi_jwks_parse(text, fresh, MAX_KEYS);

	if (n < 0)
		return -EINVAL;
	memcpy(keys, fresh, sizeof(NadiJwk) * (size_t)n);
	nkeys = (size_t)n;
	return 0;
}

/* Every waiter re-checks once, whatever the outcome. */
static void
wake_waiters(void)
{
	struct waiter *w = waiters;

	waiters = NULL;
	ev_timer_cancel(&give_up);
	while (w) {
		struct waiter *next = w->next;
		w->fn(w->arg);
		free(w);
		w = next;
	}
}

void
access_keys_loaded(const char *jwks)
{
	in_flight = false;
	if (keys_load(jwks) < 0)
		log_warning("nadi.jwks() returned no key set; keeping the %zu key(s) known", nkeys);
	else {
		if (!loaded)
			log_info("loaded %zu signing key(s) from nadi.jwks()", nkeys);
		loaded = true;
	}
	wake_waiters();
}

void
access_keys_failed(const char *why)
{
	if (!in_flight && !waiters)
		return;
	in_flight = false;
	log_warning("could not refresh the signing keys: %s", why);
	wake_waiters();
}

static void
on_retry(struct ev_timer *t)
{
	(void)t;
	refresh();
}

static void
on_periodic(struct ev_timer *t)
{
	(void)t;
	refresh();
	ev_timer_arm(&periodic, cfg.jwks_refresh_ms, on_periodic, NULL);
}

static void
on_give_up(struct ev_timer *t)
{
	(void)t;
	log_warning("no answer from nadi.jwks() within %d s; refusing the tokens that wait for it", WAIT_MAX_MS / 1000);
	wake_waiters();
}

/* Ask pg.c for the keys now, or as soon as the rate limit allows. */
static void
refresh(void)
{
	uint64_t now = now_ms();

	if (in_flight)
		return;
	if (last_attempt_ms && now < last_attempt_ms + MIN_REFRESH_MS) {
		if (!retry.armed)
			ev_timer_arm(&retry, last_attempt_ms + MIN_REFRESH_MS - now, on_retry, NULL);
		return;
	}
	last_attempt_ms = now;
	if (pg_jwks_request())
		in_flight = true;
	else if (waiters)
		wake_waiters(); /* no connection now: nothing to wait for */
}

bool
access_wait_keys(void (*fn)(void *arg), void *arg)
{
	struct waiter *w;

	if (!pg_connected())
		return false;
	w = calloc(1, sizeof *w);
	if (!w)
		return false;
	w->fn = fn;
	w->arg = arg;
	w->next = waiters;
	waiters = w;
	if (!give_up.armed)
		ev_timer_arm(&give_up, WAIT_MAX_MS, on_give_up, NULL);
	refresh();
	return true;
}

void
access_wait_cancel(void *arg)
{
	for (struct waiter **pp = &waiters; *pp;) {
		if ((*pp)->arg == arg) {
			struct waiter *w = *pp;
			*pp = w->next;
			free(w);
		} else
			pp = &(*pp)->next;
	}
}

/* ---- session tokens ------------------------------------------------------- */

#define DENY(...)                                          \
	do {                                               \
		snprintf(why, whylen, __VA_ARGS__);        \
		res = ACCESS_DENIED;                       \
		goto out;                                  \
	} while (0)

static enum access_result
session_token(const char *tok, struct access_principal *out, char *why, size_t whylen)
{
	_cleanup_(freep) nadi_jwt_parsed *jp = NULL;
	enum access_result res = ACCESS_OK;
	json_t *claims = NULL;
	const NadiJwk *key;
	const char *s;
	int64_t exp, nbf, now = (int64_t)time(NULL);
	int rc;

	if (strlen(tok) > NADI_JWT_MAX_TOKEN)
		DENY("the bearer token is too long");
	jp = malloc(sizeof *jp);
	if (!jp)
		DENY("out of memory");
	rc = nadi_jwt_parse(tok, strlen(tok), jp);
	if (rc != 0)
		DENY("the bearer token is neither the operator token nor a valid session token (%s)", nadi_jwt_strerror(rc));
	if (jp->alg != NADI_JWT_ALG_EDDSA || !jp->has_kid)
		DENY("session tokens are EdDSA tokens that name their key (\"kid\")");
	key = key_find(jp->kid);
	if (!key) {
		snprintf(why, whylen, "the key that signed the token is unknown");
		return ACCESS_RETRY;
	}
	if (nadi_jwt_verify(jp, NADI_JWT_ALG_EDDSA, key->pub, sizeof key->pub) != 0)
		DENY("the token's signature does not verify");
	claims = json_loadb(jp->payload, jp->payload_len, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(claims))
		DENY("the token's claims are not a JSON object");
	s = json_string_value(json_object_get(claims, "iss"));
	if (!s || strcmp(s, "nadi") != 0)
		DENY("the token was not issued by nadi");
	if (!nadi_claim_audience(claims, AUDIENCE))
		DENY("the token is not meant for audience \"" AUDIENCE "\"");
	s = json_string_value(json_object_get(claims, "scope"));
	if (!s || strcmp(s, "sandbox") != 0)
		DENY("the token's scope is not \"sandbox\"");
	if (!nadi_claim_copy(claims, "sid", out->sid, sizeof out->sid) || !nadi_jwt_uuid_text(out->sid))
		DENY("the token's \"sid\" claim is not a session id (uuid)");
	if (!nadi_claim_copy(claims, "tenant", out->tenant, sizeof out->tenant) || !out->tenant[0])
		DENY("the token lacks a valid \"tenant\" claim");
	if (!nadi_claim_copy(claims, "sub", out->subject, sizeof out->subject))
		DENY("the token lacks a valid \"sub\" claim");
	if (!nadi_claim_time(claims, "exp", &exp))
		DENY("the token lacks a valid \"exp\" claim");
	if (now >= exp)
		DENY("the token has expired");
	if (json_object_get(claims, "nbf") && (!nadi_claim_time(claims, "nbf", &nbf) || nbf > now + NADI_JWT_NBF_LEEWAY_S))
		DENY("the token is not valid yet");
	out->kind = ACCESS_SESSION;
out:
	json_decref(claims);
	return res;
}

enum access_result
access_authenticate(const char *bearer, struct access_principal *out, char *why, size_t whylen)
{
	enum access_result r;

	memset(out, 0, sizeof *out);
	if (!cfg.token) {
		out->kind = ACCESS_OPERATOR;
		return ACCESS_OK;
	}
	if (!bearer || !*bearer) {
		snprintf(why, whylen, "a valid bearer token is required");
		return ACCESS_DENIED;
	}
	if (ct_equal(bearer, strlen(bearer), cfg.token, cfg.token_len)) {
		out->kind = ACCESS_OPERATOR;
		return ACCESS_OK;
	}
	if (!cfg.pg_conninfo || !*cfg.pg_conninfo) {
		snprintf(why, whylen, "the bearer token is not the operator token (this host has no database to "
				      "verify session tokens with)");
		return ACCESS_DENIED;
	}
	r = session_token(bearer, out, why, whylen);
	if (r != ACCESS_OK)
		memset(out, 0, sizeof *out);
	return r;
}

int
access_init(void)
{
	if (cfg.pg_conninfo && *cfg.pg_conninfo && cfg.token)
		ev_timer_arm(&periodic, cfg.jwks_refresh_ms, on_periodic, NULL);
	return 0;
}

void
access_done(void)
{
	ev_timer_cancel(&periodic);
	ev_timer_cancel(&retry);
	ev_timer_cancel(&give_up);
	while (waiters) {
		struct waiter *w = waiters;
		waiters = w->next;
		free(w);
	}
}
