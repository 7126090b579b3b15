/*
 * access.c — the credentials of a request (see access.h).  Session tokens
 * are checked by the extension's own code, as the edge checks its tokens
 * (edge/bearer.c) and as nadi.token_verify does: src/jwt.c for the form and
 * the EdDSA signature by a key of nadi.jwks(), src/jwt_claims.c for the
 * claims (issuer "nadi", audience "nadi-sandboxd", exp, nbf and iat with
 * one leeway, a tenant, a subject, a uuid "sid"); the scope must be
 * "sandbox".
 *
 * The keys are daemonlib's cache (jwks.c), refreshed every jwks_refresh, and
 * early when a token names a key the cache does not know (rotation); such a
 * request waits for that one refresh, WAIT_MAX_MS at most.  pg.c fetches
 * them over its connection.
 */
#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "access.h"
#include "jwt.h"
#include "jwt_claims.h"
#include "pg.h"
#include "sandbox.h"
#include "sbx.h"
#include "workspace.h"
#include "daemonlib/jwks.h"

#define WAIT_MAX_MS 5000 /* a request waits this long for a refresh at most */

_Static_assert(sizeof(((struct access_principal *) 0)->tenant) >= NADI_JWT_MAX_NAME + 1 &&
				   sizeof(((struct access_principal *) 0)->subject) >= NADI_JWT_MAX_NAME + 1 &&
				   sizeof(((struct access_principal *) 0)->sid) == NADI_JWT_UUID_LEN + 1,
			   "a principal holds what NadiClaims does");

static JwksCache keys;
static EvTimer	 periodic, retry, give_up;

/* A request's wait ends with the refresh: so does its deadline. */
static void
settle(void)
{
	if (!jwks_waiting(&keys))
		ev_timer_cancel(&give_up);
}

void
access_keys_loaded(const char *jwks)
{
	bool first = !keys.loaded;
	int	 n = jwks_loaded(&keys, jwks);

	if (n < 0)
		log_warning("nadi.jwks() returned no key set; keeping the %d key(s) known",
					jwks_count(&keys));
	else if (first)
		log_info("loaded %d signing key(s) from nadi.jwks()", n);
	settle();
}

void
access_keys_failed(const char *why)
{
	if (!keys.in_flight && !jwks_waiting(&keys))
		return;
	log_warning("could not refresh the signing keys: %s", why);
	jwks_failed(&keys);
	settle();
}

static void
on_retry(EvTimer *t)
{
	(void) t;
	jwks_refresh(&keys);
	settle();
}

static void
on_periodic(EvTimer *t)
{
	(void) t;
	jwks_refresh(&keys);
	settle();
	ev_timer_arm(&periodic, cfg.jwks_refresh_ms, on_periodic, NULL);
}

static void
on_give_up(EvTimer *t)
{
	(void) t;
	if (!jwks_waiting(&keys))
		return;
	log_warning("no answer from nadi.jwks() within %d s; refusing the tokens that wait for it",
				WAIT_MAX_MS / 1000);
	jwks_wake(&keys);
}

/* Ask pg.c for the keys; without a connection nobody waits for them. */
static JwksFetch
keys_fetch(void *arg)
{
	(void) arg;
	return pg_jwks_request() ? JWKS_FETCH_STARTED : JWKS_FETCH_NONE;
}

static void
keys_defer(void *arg, uint64_t delay_ms)
{
	(void) arg;
	if (!retry.armed)
		ev_timer_arm(&retry, delay_ms, on_retry, NULL);
}

static const JwksOps keys_ops = {
	.fetch = keys_fetch,
	.defer = keys_defer,
	.now_ms = now_ms,
};

bool
access_wait_keys(void (*fn)(void *arg), void *arg)
{
	if (!pg_connected())
		return false;
	if (!give_up.armed)
		ev_timer_arm(&give_up, WAIT_MAX_MS, on_give_up, NULL);
	if (!jwks_wait(&keys, fn, arg))
	{
		settle();
		return false;
	}
	settle();
	return true;
}

void
access_wait_cancel(void *arg)
{
	jwks_wait_cancel(&keys, arg);
	settle();
}

/* ---- session tokens ------------------------------------------------------- */

#define DENY(...) \
	do \
	{ \
		snprintf(why, whylen, __VA_ARGS__); \
		res = ACCESS_DENIED; \
		goto out; \
	} while (0)

bool
access_host_id_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 63 || !isalnum((unsigned char) s[0]))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char) s[i]) && !strchr("._:-", s[i]))
			return false;
	return true;
}

/* The "fork" claim, when there is one (absent or null: none); -EINVAL when malformed. */
static int
fork_claim(const char *payload, size_t len, struct access_principal *out)
{
	json_t	   *j = json_loadb(payload, len, 0, NULL), *f, *host, *v;
	const char *key, *sb, *snap;
	int			r = 0;

	f = json_object_get(j, "fork");
	if (!f || json_is_null(f))
		goto out;
	r = -EINVAL;
	if (!json_is_object(f))
		goto out;
	json_object_foreach(f, key, v)
	{
		if (strcmp(key, "host") != 0 && strcmp(key, "sandbox") != 0 && strcmp(key, "snapshot") != 0)
			goto out;
	}
	host = json_object_get(f, "host");
	sb = json_string_value(json_object_get(f, "sandbox"));
	snap = json_string_value(json_object_get(f, "snapshot"));
	if (!host || !(json_is_null(host) ||
				   (json_is_string(host) && access_host_id_valid(json_string_value(host)))))
		goto out;
	if (!sb || strlen(sb) != SBX_ID_LEN || strspn(sb, "0123456789abcdef") != SBX_ID_LEN)
		goto out;
	if (!ws_snapshot_name_valid(snap))
		goto out;
	out->fork = true;
	snprintf(out->fork_host, sizeof out->fork_host, "%s",
			 json_is_string(host) ? json_string_value(host) : "");
	snprintf(out->fork_sandbox, sizeof out->fork_sandbox, "%s", sb);
	snprintf(out->fork_snapshot, sizeof out->fork_snapshot, "%s", snap);
	r = 0;
out:
	json_decref(j);
	return r;
}

static enum access_result
session_token(const char *tok, struct access_principal *out, char *why, size_t whylen)
{
	_cleanup_(freep) nadi_jwt_parsed *jp = NULL;
	enum access_result				  res = ACCESS_OK;
	const JwksKey					 *key;
	NadiClaims						  c;
	int								  rc;

	if (strlen(tok) > NADI_JWT_MAX_TOKEN)
		DENY("the bearer token is too long");
	jp = malloc(sizeof *jp);
	if (!jp)
		DENY("out of memory");
	rc = nadi_jwt_parse(tok, strlen(tok), jp);
	if (rc != 0)
		DENY("the bearer token is neither the operator token nor a valid session token (%s)",
			 nadi_jwt_strerror(rc));
	if (jp->alg != NADI_JWT_ALG_EDDSA || !jp->has_kid)
		DENY("session tokens are EdDSA tokens that name their key (\"kid\")");
	key = jwks_find(&keys, jp->kid);
	if (!key)
	{
		snprintf(why, whylen, "the key that signed the token is unknown");
		return ACCESS_RETRY;
	}
	if (nadi_jwt_verify(jp, NADI_JWT_ALG_EDDSA, key->pub, sizeof key->pub) != 0)
		DENY("the token's signature does not verify");
	if (nadi_claims_check(jp->payload, jp->payload_len, NADI_JWT_AUD_SANDBOXD, (int64_t) time(NULL),
						  &c, why, whylen) != NADI_CLAIMS_OK)
		return ACCESS_DENIED;
	if (c.scope != NADI_JWT_SCOPE_SANDBOX)
		DENY("the token's scope is not \"sandbox\"");
	if (fork_claim(jp->payload, jp->payload_len, out) < 0)
		DENY("the token's \"fork\" claim is not {host: null or a host id, sandbox: a sandbox "
			 "id, snapshot: a snapshot name}");
	/* sandbox-scoped: the validator has made sure of its "sid" */
	memcpy(out->sid, c.sid, sizeof out->sid);
	snprintf(out->tenant, sizeof out->tenant, "%s", c.tenant);
	snprintf(out->subject, sizeof out->subject, "%s", c.subject);
	out->files_only = strncmp(c.subject, ACCESS_FILES_PREFIX, strlen(ACCESS_FILES_PREFIX)) == 0;
	out->kind = ACCESS_SESSION;
out:
	return res;
}

enum access_result
access_authenticate(const char *bearer, struct access_principal *out, char *why, size_t whylen)
{
	enum access_result r;

	memset(out, 0, sizeof *out);
	if (!cfg.token)
	{
		out->kind = ACCESS_OPERATOR;
		return ACCESS_OK;
	}
	if (!bearer || !*bearer)
	{
		snprintf(why, whylen, "a valid bearer token is required");
		return ACCESS_DENIED;
	}
	if (ct_equal(bearer, strlen(bearer), cfg.token, cfg.token_len))
	{
		out->kind = ACCESS_OPERATOR;
		return ACCESS_OK;
	}
	if (!cfg.pg_conninfo || !*cfg.pg_conninfo)
	{
		snprintf(why, whylen,
				 "the bearer token is not the operator token (this host has no database to "
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
	jwks_init(&keys, &keys_ops);
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
	jwks_done(&keys);
}
