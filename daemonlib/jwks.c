/*
 * jwks.c — the signing-key cache of the daemons that verify tokens (see
 * jwks.h).  The key set is read with jwt.c's strict JSON reader.
 */
#include "jwks.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

void
jwks_init(JwksCache *c, const JwksOps *ops)
{
	memset(c, 0, sizeof(*c));
	c->ops = *ops;
}

void
jwks_done(JwksCache *c)
{
	while (c->waiters)
	{
		JwksWaiter *w = c->waiters;

		c->waiters = w->next;
		free(w);
	}
	c->in_flight = false;
}

const JwksKey *
jwks_find(const JwksCache *c, const char *kid)
{
	for (int i = 0; i < c->nkeys; i++)
		if (strcmp(c->keys[i].kid, kid) == 0)
			return &c->keys[i];
	return NULL;
}

int
jwks_count(const JwksCache *c)
{
	return c->nkeys;
}

bool
jwks_stale(const JwksCache *c, uint64_t max_age_ms)
{
	return !c->loaded || c->ops.now_ms() >= c->loaded_ms + max_age_ms;
}

bool
jwks_waiting(const JwksCache *c)
{
	return c->waiters != NULL;
}

void
jwks_wake(JwksCache *c)
{
	JwksWaiter *w = c->waiters;

	/* detached first: a callback may wait again, for the next refresh */
	c->waiters = NULL;
	while (w)
	{
		JwksWaiter *next = w->next;

		w->fn(w->arg);
		free(w);
		w = next;
	}
}

void
jwks_refresh(JwksCache *c)
{
	uint64_t now = c->ops.now_ms();

	if (c->in_flight)
		return;
	if (c->last_attempt_ms && now < c->last_attempt_ms + JWKS_MIN_REFRESH_MS)
	{
		c->ops.defer(c->ops.arg, c->last_attempt_ms + JWKS_MIN_REFRESH_MS - now);
		return;
	}
	c->last_attempt_ms = now;
	switch (c->ops.fetch(c->ops.arg))
	{
		case JWKS_FETCH_STARTED:
			c->in_flight = true;
			break;
		case JWKS_FETCH_LATER:
			c->ops.defer(c->ops.arg, JWKS_MIN_REFRESH_MS);
			break;
		case JWKS_FETCH_NONE:
			jwks_wake(c);
			break;
	}
}

int
jwks_parse(const char *text, JwksKey *keys, int max)
{
	json_t *doc;
	json_t *arr;
	json_t *k;
	size_t	i;
	int		n = 0;

	if (text == NULL)
		return -1;
	doc = nadi_jwt_json_object(text, strlen(text), NULL);
	arr = json_object_get(doc, "keys");
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

		if (n == max || kid == NULL || x == NULL || crv == NULL || strcmp(crv, "Ed25519") != 0 ||
			kid[0] == '\0' || strlen(kid) > NADI_JWT_MAX_KID)
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

int
jwks_loaded(JwksCache *c, const char *text)
{
	JwksKey fresh[JWKS_MAX_KEYS];
	int		n = jwks_parse(text, fresh, JWKS_MAX_KEYS);

	c->in_flight = false;
	if (n >= 0)
	{
		memcpy(c->keys, fresh, sizeof(JwksKey) * n);
		c->nkeys = n;
		c->loaded = true;
		c->loaded_ms = c->ops.now_ms();
	}
	jwks_wake(c);
	return n;
}

bool
jwks_failed(JwksCache *c)
{
	if (!c->in_flight && c->waiters == NULL)
		return false;
	c->in_flight = false;
	jwks_wake(c);
	return true;
}

bool
jwks_wait(JwksCache *c, JwksWaitFn fn, void *arg)
{
	JwksWaiter *w = calloc(1, sizeof(*w));

	if (w == NULL)
		return false;
	w->fn = fn;
	w->arg = arg;
	w->next = c->waiters;
	c->waiters = w;
	jwks_refresh(c);
	return true;
}

void
jwks_wait_cancel(JwksCache *c, void *arg)
{
	JwksWaiter **pp = &c->waiters;

	while (*pp)
	{
		if ((*pp)->arg == arg)
		{
			JwksWaiter *w = *pp;

			*pp = w->next;
			free(w);
		}
		else
			pp = &(*pp)->next;
	}
}
