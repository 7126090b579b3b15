/*
 * target.h — parsing of what a client sends that decides where a request
 * goes and who it is: the request target (path-style "/u/NAME/rest" or an
 * HTTP proxy's absolute form "http://HOST[:PORT]/rest"), the token headers,
 * and which request and response headers cross the proxy.  Pure functions
 * over untrusted input (see fuzz/fuzz_target.c).
 */
#ifndef CP_TARGET_H
#define CP_TARGET_H

#include <stdbool.h>
#include <stddef.h>

#include "credproxy.h"
#include "daemonlib/problem.h" /* struct problem: status, code, detail */

struct target
{
	const struct upstream *up;
	bool				   absolute; /* absolute form: the client uses us as its HTTP proxy */
	char				  *path;	 /* below the upstream's base path; starts with "/", no query */
	char				  *query;	 /* the raw query after "?", or NULL */
};

/* 0, or -EINVAL with *p filled in (400 or 404). */
int	 target_parse(const char *uri, struct target *t, struct problem *p);
void target_clear(struct target *t);
/* The URL the exchange goes to: origin + base + path [+ "?" query]. */
char *target_url(const struct target *t);

enum token_source
{
	TOKEN_NONE,
	TOKEN_PROXY_AUTHORIZATION,
	TOKEN_AUTHORIZATION
};

/*
 * The token of a request from its Proxy-Authorization ("Bearer T", or
 * "Basic base64(user:T)") or, only without one, its Authorization ("Bearer
 * T") header.  Returns the source; TOKEN_NONE with *why set when there is
 * no usable token.
 */
enum token_source token_extract(const char *proxy_authorization, const char *authorization,
								char *out, size_t outsz, const char **why);

/* Hop-by-hop headers and the Proxy-* family: never forwarded either way. */
bool header_is_hop_by_hop(const char *name);
/* Whether a comma-separated header value (Connection) lists name. */
bool header_list_has(const char *list, const char *name);

#endif
