/*
 * jwks.h — the cache of token signing keys every daemon that verifies Nadi
 * tokens keeps (nadi-edge, nadi-sandboxd): the Ed25519 public keys of
 * nadi.jwks(), refreshed periodically, and early when a token names a key
 * the cache does not know (rotation), at most once a JWKS_MIN_REFRESH_MS.
 * Requests that wait for such a refresh are called back once when it is
 * over, whatever its outcome.
 *
 * The cache does no I/O and owns no timer: the daemon's own database code
 * fetches nadi.jwks() (JwksOps.fetch) and reports the answer with
 * jwks_loaded() or jwks_failed(); its event loop calls jwks_refresh() again
 * when asked to (JwksOps.defer).  Single-threaded: call it from the event
 * loop only.
 */
#ifndef NADI_DAEMONLIB_JWKS_H
#define NADI_DAEMONLIB_JWKS_H

#include <stdbool.h>
#include <stdint.h>

#include "jwt.h"

/* Keys kept (nadi.jwks() lists the keys that still verify: a handful). */
#define JWKS_MAX_KEYS 64
/* Fetches are at least this far apart, so unknown kids cannot hammer the database. */
#define JWKS_MIN_REFRESH_MS 1000

/* A public key of nadi.jwks(). */
typedef struct JwksKey
{
	char		  kid[NADI_JWT_MAX_KID + 1];
	unsigned char pub[NADI_JWT_ED25519_KEY_LEN];
} JwksKey;

typedef void (*JwksWaitFn)(void *arg);

typedef struct JwksWaiter
{
	JwksWaitFn		   fn;
	void			  *arg;
	struct JwksWaiter *next;
} JwksWaiter;

/* What JwksOps.fetch did. */
typedef enum JwksFetch
{
	JWKS_FETCH_STARTED, /* jwks_loaded() or jwks_failed() follows */
	JWKS_FETCH_LATER,	/* not now: try again after JWKS_MIN_REFRESH_MS;
								 * waiters keep waiting */
	JWKS_FETCH_NONE		/* nothing to fetch from now (no database):
								 * waiters are called back at once */
} JwksFetch;

typedef struct JwksOps
{
	/* Start fetching nadi.jwks(). */
	JwksFetch (*fetch)(void *arg);
	/* Have jwks_refresh() called in delay_ms, unless that is already arranged. */
	void (*defer)(void *arg, uint64_t delay_ms);
	/* A monotonic clock, in milliseconds. */
	uint64_t (*now_ms)(void);
	void *arg;
} JwksOps;

typedef struct JwksCache
{
	JwksOps		ops;
	JwksKey		keys[JWKS_MAX_KEYS];
	int			nkeys;
	bool		loaded;			 /* a key set was loaded at least once */
	bool		in_flight;		 /* a fetch is under way */
	uint64_t	loaded_ms;		 /* when the last key set was loaded */
	uint64_t	last_attempt_ms; /* when the last fetch started (0: never) */
	JwksWaiter *waiters;
} JwksCache;

extern void jwks_init(JwksCache *c, const JwksOps *ops);
/* Frees the waiters without calling them. */
extern void jwks_done(JwksCache *c);

/* The key named kid, or NULL. */
extern const JwksKey *jwks_find(const JwksCache *c, const char *kid);
extern int			  jwks_count(const JwksCache *c);
/* Has no key set been loaded, or is the last one older than max_age_ms? */
extern bool jwks_stale(const JwksCache *c, uint64_t max_age_ms);

/* Fetch now, or as soon as the rate limit allows; nothing while a fetch runs. */
extern void jwks_refresh(JwksCache *c);

/*
 * The end of a fetch: the text of nadi.jwks(), or a failure.  Either way the
 * waiters are called back.  jwks_loaded returns the number of keys, or -1
 * when text is not a key set (the keys known are kept).  jwks_failed returns
 * false when no fetch was under way and nobody waited (nothing to report).
 */
extern int	jwks_loaded(JwksCache *c, const char *text);
extern bool jwks_failed(JwksCache *c);

/*
 * Call fn(arg) once after the next refresh, which starts now (or as soon as
 * the rate limit allows).  false: out of memory, fn is not called.
 */
extern bool jwks_wait(JwksCache *c, JwksWaitFn fn, void *arg);
/* Forget every wait of arg (its request went away). */
extern void jwks_wait_cancel(JwksCache *c, void *arg);
extern bool jwks_waiting(const JwksCache *c);
/* Call every waiter back now (a daemon's own deadline for a refresh). */
extern void jwks_wake(JwksCache *c);

/*
 * The Ed25519 keys of a JSON Web Key Set ({"keys": [...]}) into keys[0..max):
 * returns how many, or -1 when text is not a key set.  Keys of another kind,
 * or malformed, are skipped.
 */
extern int jwks_parse(const char *text, JwksKey *keys, int max);

#endif /* NADI_DAEMONLIB_JWKS_H */
