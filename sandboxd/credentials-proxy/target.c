/*
 * target.c — where a request goes and which token it carries (see
 * target.h).  The path checked against a tenant's allow-list is the one the
 * upstream receives, so paths with dot segments (also percent-encoded) are
 * refused rather than normalised: "/allowed/../secret" would otherwise pass
 * a "/allowed/" rule.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "target.h"

#define PATH_MAX_BYTES 8192

static int
fail(struct problem *p, unsigned status, const char *code, const char *fmt, ...) _printf_(4, 5);

static int
fail(struct problem *p, unsigned status, const char *code, const char *fmt, ...)
{
	va_list ap;

	p->status = status;
	p->code = code;
	va_start(ap, fmt);
	vsnprintf(p->detail, sizeof p->detail, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

void
target_clear(struct target *t)
{
	free(t->path);
	free(t->query);
	t->path = t->query = NULL;
	t->up = NULL;
}

/* Split "PATH[?QUERY]" (PATH may be empty: "/") into t, checking both. */
static int
split_path(const char *s, struct target *t, struct problem *p)
{
	const char *q = strchr(s, '?');
	size_t		plen = q ? (size_t) (q - s) : strlen(s);

	if (plen > PATH_MAX_BYTES)
		return fail(p, 414, "path_too_long", "the path is longer than %d bytes", PATH_MAX_BYTES);
	if (plen > 0 && s[0] != '/')
		return fail(p, 400, "invalid_target", "the path must start with \"/\"");
	if (!url_path_safe(s, plen))
		return fail(
			p, 400, "invalid_path",
			"the path has a \".\" or \"..\" segment, a fragment, a backslash, a control character "
			"or a malformed %%-escape");
	if (q)
	{
		for (const char *c = q + 1; *c; c++)
			if ((unsigned char) *c <= 0x20 || *c == 0x7f || *c == '#')
				return fail(p, 400, "invalid_target",
							"the query has a fragment or a control character");
		t->query = strdup(q + 1);
	}
	t->path = plen ? strndup(s, plen) : strdup("/");
	return t->path && (!q || t->query) ? 0 : fail(p, 500, "internal", "out of memory");
}

static int
parse_origin_form(const char *uri, struct target *t, struct problem *p)
{
	const char *name = uri + 3, *end;
	char		buf[64];
	size_t		n;

	if (strncmp(uri, "/u/", 3) != 0)
		return fail(
			p, 404, "unknown_upstream",
			"requests name their upstream as /u/UPSTREAM/PATH, or use this proxy as an HTTP proxy "
			"(http://HOST/PATH)");
	end = name + strcspn(name, "/?");
	n = (size_t) (end - name);
	if (!upstream_name_valid(name, n))
		return fail(p, 404, "unknown_upstream", "\"%.*s\" is not an upstream name",
					(int) MIN(n, 64), name);
	memcpy(buf, name, n);
	buf[n] = '\0';
	t->up = upstream_by_name(buf);
	if (!t->up)
		return fail(p, 404, "unknown_upstream", "no upstream \"%s\" is configured on this proxy",
					buf);
	return split_path(end, t, p);
}

/* Whether path lies below base ("" is every path); the rest goes to *rest. */
static bool
below_base(const char *path, const char *base, const char **rest)
{
	size_t n = strlen(base);

	if (strncmp(path, base, n) != 0 || (path[n] && path[n] != '/' && path[n] != '?'))
		return false;
	*rest = path + n;
	return true;
}

static int
parse_absolute_form(const char *uri, struct target *t, struct problem *p)
{
	bool		  https = strncasecmp(uri, "https://", 8) == 0;
	const char	 *auth = uri + (https ? 8 : 7), *auth_end, *path, *host_end, *rest = NULL;
	char		  host[256];
	unsigned long port = 0;
	size_t		  hlen, best = 0;
	bool		  host_known = false;

	auth_end = auth + strcspn(auth, "/?");
	path = auth_end;
	if (memchr(auth, '@', (size_t) (auth_end - auth)))
		return fail(p, 400, "invalid_target", "the request target may not carry user information");
	if (*auth == '[')
	{
		host_end = memchr(auth, ']', (size_t) (auth_end - auth));
		if (!host_end)
			return fail(p, 400, "invalid_target",
						"unterminated IPv6 address in the request target");
		auth++;
		hlen = (size_t) (host_end - auth);
		host_end++;
	}
	else
	{
		host_end = memchr(auth, ':', (size_t) (auth_end - auth));
		if (!host_end)
			host_end = auth_end;
		hlen = (size_t) (host_end - auth);
	}
	if (hlen == 0 || hlen >= sizeof host)
		return fail(p, 400, "invalid_target", "the request target has no valid host");
	for (size_t i = 0; i < hlen; i++)
	{
		char c = auth[i];
		if (!isalnum((unsigned char) c) && !strchr("-._:", c))
			return fail(p, 400, "invalid_target", "the request target has no valid host");
		host[i] = (char) tolower((unsigned char) c);
	}
	host[hlen] = '\0';
	if (host_end < auth_end)
	{
		char *e;
		if (*host_end != ':' || host_end + 1 == auth_end)
			return fail(p, 400, "invalid_target", "the request target has an invalid port");
		port = strtoul(host_end + 1, &e, 10);
		if (e != auth_end || port == 0 || port > 65535)
			return fail(p, 400, "invalid_target", "the request target has an invalid port");
		if (port == (https ? 443u : 80u))
			port = 0; /* the scheme's own port: as if none were given */
	}
	/* The upstream of that host (and port) whose base path covers the path, longest base first. */
	for (size_t i = 0; i < cfg.n_upstreams; i++)
	{
		const struct upstream *up = &cfg.upstreams[i];
		const char			  *r;
		if (strcmp(up->host, host) != 0 || (port && up->port != port))
			continue;
		host_known = true;
		if (below_base(*path ? path : "/", up->base, &r) && (!t->up || strlen(up->base) > best))
		{
			t->up = up;
			best = strlen(up->base);
			rest = r;
		}
	}
	/*
	 * http://NAME/PATH names an upstream by its name, and a path-style target
	 * behind any host (http://127.0.0.1:3128/u/NAME/PATH, what clients that
	 * ignore no_proxy send for the relay itself) is taken as path-style.
	 */
	if (!t->up && !host_known && !port && (t->up = upstream_by_name(host)) != NULL)
		rest = *path ? path : "/";
	else if (!t->up && !host_known && strncmp(path, "/u/", 3) == 0)
		return parse_origin_form(path, t, p);
	if (!t->up)
		return fail(p, 404, "unknown_upstream",
					host_known ? "the path is outside every upstream configured for host %s"
							   : "no upstream is configured for host %s",
					host);
	t->absolute = true;
	return split_path(rest, t, p);
}

int
target_parse(const char *uri, struct target *t, struct problem *p)
{
	int r;

	memset(t, 0, sizeof *t);
	if (!uri || !*uri)
		r = fail(p, 400, "invalid_target", "empty request target");
	else if (uri[0] == '/')
		r = parse_origin_form(uri, t, p);
	else if (strncasecmp(uri, "http://", 7) == 0 || strncasecmp(uri, "https://", 8) == 0)
		r = parse_absolute_form(uri, t, p);
	else
		r = fail(p, 400, "invalid_target",
				 "the request target must be /u/UPSTREAM/PATH or http://HOST/PATH");
	if (r < 0)
		target_clear(t);
	return r;
}

char *
target_url(const struct target *t)
{
	return xasprintf("%s%s%s%s%s", t->up->origin, t->up->base, t->path, t->query ? "?" : "",
					 t->query ? t->query : "");
}

/* A token is printable ASCII without spaces (a JWT is). */
static bool
token_chars_ok(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if ((unsigned char) *s <= 0x20 || (unsigned char) *s >= 0x7f)
			return false;
	return true;
}

/* "SCHEME  VALUE  " → scheme match, value copied trimmed into out. */
static bool
credentials(const char *h, const char *scheme, char *out, size_t outsz)
{
	size_t n = strlen(scheme), len;

	while (*h == ' ' || *h == '\t')
		h++;
	if (strncasecmp(h, scheme, n) != 0 || (h[n] != ' ' && h[n] != '\t'))
		return false;
	h += n;
	while (*h == ' ' || *h == '\t')
		h++;
	len = strlen(h);
	while (len > 0 && (h[len - 1] == ' ' || h[len - 1] == '\t'))
		len--;
	if (len == 0 || len >= outsz)
		return false;
	memcpy(out, h, len);
	out[len] = '\0';
	return true;
}

enum token_source
token_extract(const char *proxy_authorization, const char *authorization, char *out, size_t outsz,
			  const char **why)
{
	*why = "no token: send Proxy-Authorization: Bearer TOKEN (or Basic with the token as "
		   "password), or "
		   "Authorization: Bearer TOKEN";
	out[0] = '\0';
	if (proxy_authorization)
	{
		char  *b64, *dec, *colon;
		size_t len, declen;
		bool   ok = false;

		if (credentials(proxy_authorization, "Bearer", out, outsz))
		{
			if (token_chars_ok(out))
				return TOKEN_PROXY_AUTHORIZATION;
			*why = "the Bearer token has characters a token cannot have";
			return TOKEN_NONE;
		}
		len = strlen(proxy_authorization) + 1;
		b64 = malloc(len);
		dec = malloc(len);
		if (b64 && dec && credentials(proxy_authorization, "Basic", b64, len) &&
			base64_decode(b64, strlen(b64), dec, len, &declen) == 0 && strlen(dec) == declen &&
			(colon = strchr(dec, ':')) && strlen(colon + 1) < outsz && token_chars_ok(colon + 1))
		{
			strcpy(out, colon + 1);
			ok = true;
		}
		if (dec)
		{
			memset(dec, 0, len);
			free(dec);
		}
		free(b64);
		if (ok)
			return TOKEN_PROXY_AUTHORIZATION;
		out[0] = '\0';
		*why = "Proxy-Authorization must be \"Bearer TOKEN\" or \"Basic base64(USER:TOKEN)\"";
		return TOKEN_NONE;
	}
	if (authorization && credentials(authorization, "Bearer", out, outsz))
	{
		if (token_chars_ok(out))
			return TOKEN_AUTHORIZATION;
		*why = "the Bearer token has characters a token cannot have";
		out[0] = '\0';
	}
	return TOKEN_NONE;
}

bool
header_is_hop_by_hop(const char *name)
{
	static const char *const hop[] = {"Connection", "Keep-Alive",		 "TE",	   "Trailer",
									  "Trailers",	"Transfer-Encoding", "Upgrade"};

	if (strncasecmp(name, "Proxy-", 6) == 0)
		return true;
	for (size_t i = 0; i < ARRAY_SIZE(hop); i++)
		if (strcasecmp(name, hop[i]) == 0)
			return true;
	return false;
}

bool
header_list_has(const char *list, const char *name)
{
	size_t n = strlen(name);

	while (list && *list)
	{
		const char *e;
		size_t		len;

		while (*list == ' ' || *list == '\t' || *list == ',')
			list++;
		e = list + strcspn(list, ",");
		len = (size_t) (e - list);
		while (len > 0 && (list[len - 1] == ' ' || list[len - 1] == '\t'))
			len--;
		if (len == n && len > 0 && strncasecmp(list, name, n) == 0)
			return true;
		list = e;
	}
	return false;
}
