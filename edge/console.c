/*
 * console.c — the web console at /console, and CORS for the API.
 *
 * The console's files (edge/console/) are compiled into the binary
 * (console_assets.inc, generated at build time by scripts/gen-console.pl:
 * name, content type, strong ETag, bytes), so nothing depends on an
 * install path and no request ever touches the file system.  GET and HEAD
 * of /console and /console/NAME serve them; the console's own routes
 * (/console/sessions, /console/sessions/<uuid>, /console/operator) are
 * index.html, whose script routes on the client; anything else is 404.
 * Every answer under /console, its 404 and 405 too, carries a
 * Content-Security-Policy without inline scripts or styles, nosniff,
 * no-referrer and frame denial.  docs/CONSOLE.md.
 *
 * CORS: only the exact origins of `cors_origins` (none by default) get
 * Access-Control-Allow-Origin on the API's answers and an answer to a
 * preflight OPTIONS; never a wildcard, never credentials (tokens travel in
 * the Authorization header, not cookies).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <microhttpd.h>

#include "edge.h"
#include "jwt.h"

typedef struct ConsoleAsset
{
	const char			*name;
	const char			*ctype;
	const char			*etag;
	const unsigned char *data;
	size_t				 len;
} ConsoleAsset;

#include "console_assets.inc"

#define CONSOLE_CSP \
	"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " \
	"img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
#define CONSOLE_NAME_MAX 64
#define CORS_MAX 32

static char *cors_origins[CORS_MAX];
static int	 n_cors;

/* ------------------------------------------------------------------------
 * The console's files
 * ------------------------------------------------------------------------ */

static const ConsoleAsset *
asset_named(const char *name)
{
	for (size_t i = 0; i < sizeof(console_assets) / sizeof(console_assets[0]); i++)
		if (strcmp(console_assets[i].name, name) == 0)
			return &console_assets[i];
	return NULL;
}

/* A file name as gen-console.pl accepts them: [a-z0-9][a-z0-9-]*.[a-z0-9]+ */
static bool
asset_name_ok(const char *s)
{
	size_t n = strlen(s);
	int	   dots = 0;

	if (n == 0 || n > CONSOLE_NAME_MAX || s[0] == '-' || s[0] == '.')
		return false;
	for (const char *c = s; *c; c++)
	{
		if (*c == '.')
			dots++;
		else if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-'))
			return false;
	}
	return dots == 1 && s[n - 1] != '.';
}

/*
 * What rest (the path after "/console") names: an asset, index.html for
 * the console's own routes, or NULL.
 */
static const ConsoleAsset *
console_lookup(const char *rest)
{
	if (rest[0] == '\0' || strcmp(rest, "/") == 0)
		return asset_named("index.html");
	if (rest[0] != '/')
		return NULL;
	rest++;
	if (strcmp(rest, "sessions") == 0 || strcmp(rest, "operator") == 0)
		return asset_named("index.html");
	if (strncmp(rest, "sessions/", 9) == 0 && nadi_jwt_uuid_text(rest + 9))
		return asset_named("index.html");
	if (asset_name_ok(rest))
		return asset_named(rest);
	return NULL;
}

/*
 * On every answer under /console, problems (404, 405, 413, 503) included:
 * added by console_cors_headers(), which http.c calls for every answer.
 */
static void
console_headers(struct MHD_Response *r)
{
	MHD_add_response_header(r, "Content-Security-Policy", CONSOLE_CSP);
	MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
	MHD_add_response_header(r, "X-Frame-Options", "DENY");
	MHD_add_response_header(r, "Cross-Origin-Opener-Policy", "same-origin");
}

bool
console_is_path(const char *url)
{
	return strncmp(url, "/console", 8) == 0 && (url[8] == '\0' || url[8] == '/');
}

/* Answer a request whose path console_is_path() accepted. */
void
console_handle(EdgeReq *req)
{
	const ConsoleAsset	*a;
	const char			*inm;
	struct MHD_Response *r;
	int					 status = 200;

	if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0)
	{
		EdgeProblem p;

		problem_set(&p, 405, "method_not_allowed", "%s is not allowed here; allowed: %s.",
					req->method, "GET, HEAD");
		http_respond_problem(req, &p);
		return;
	}
	a = console_lookup(req->url + 8);
	if (a == NULL)
	{
		EdgeProblem p;

		problem_set(&p, 404, "not_found", "There is no console file %.200s.", req->url);
		http_respond_problem(req, &p);
		return;
	}
	inm = http_header(req, MHD_HTTP_HEADER_IF_NONE_MATCH);
	/* "*" matches any current representation (RFC 9110, 13.1.2) */
	if (inm && (strcmp(inm, "*") == 0 || strstr(inm, a->etag) != NULL))
	{
		status = 304;
		r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
	}
	else
		r = MHD_create_response_from_buffer(a->len, (void *) a->data, MHD_RESPMEM_PERSISTENT);
	if (r == NULL)
	{
		EdgeProblem p;

		problem_set(&p, 503, "unavailable", "%s", "Out of memory.");
		http_respond_problem(req, &p);
		return;
	}
	if (status == 200)
		MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, a->ctype);
	MHD_add_response_header(r, MHD_HTTP_HEADER_ETAG, a->etag);
	/* revalidated each time (the ETag makes that a 304), never stale */
	MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
	http_respond_response(req, status, r);
}

/* ------------------------------------------------------------------------
 * CORS
 * ------------------------------------------------------------------------ */

/* scheme://host[:port], nothing else: no path, no wildcard, no "null". */
static bool
origin_ok(const char *o)
{
	const char *h;

	if (strncmp(o, "https://", 8) == 0)
		h = o + 8;
	else if (strncmp(o, "http://", 7) == 0)
		h = o + 7;
	else
		return false;
	if (*h == '\0' || strlen(o) > 253)
		return false;
	for (const char *c = h; *c; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
			  *c == '.' || *c == '-' || *c == ':' || *c == '[' || *c == ']'))
			return false;
	return true;
}

/*
 * An origin as a browser sends it: lower case, without the scheme's default
 * port (a listed "https://Console.Example:443" would otherwise never match
 * the "https://console.example" of its pages).
 */
static void
origin_serialize(char *o)
{
	size_t n;

	for (char *c = o; *c; c++)
		if (*c >= 'A' && *c <= 'Z')
			*c = (char) (*c - 'A' + 'a');
	n = strlen(o);
	if (strncmp(o, "https://", 8) == 0 && n > 12 && strcmp(o + n - 4, ":443") == 0)
		o[n - 4] = '\0';
	else if (strncmp(o, "http://", 7) == 0 && n > 10 && strcmp(o + n - 3, ":80") == 0)
		o[n - 3] = '\0';
}

/* cors_origins: origins separated by commas or blanks; repeatable. */
int
console_cors_add(const char *value, bool from_flag EDGE_UNUSED)
{
	char *copy = strdup(value);
	char *save = NULL;
	int	  rc = 0;

	if (copy == NULL)
		return -ENOMEM;
	for (char *o = strtok_r(copy, ", \t", &save); o; o = strtok_r(NULL, ", \t", &save))
	{
		bool seen = false;

		if (!origin_ok(o))
		{
			log_error("cors_origins: \"%.100s\" is not an origin (scheme://host[:port], no "
					  "wildcard)",
					  o);
			rc = -EINVAL;
			break;
		}
		origin_serialize(o);
		for (int i = 0; i < n_cors; i++)
			seen |= strcmp(cors_origins[i], o) == 0;
		if (seen)
			continue;
		if (n_cors == CORS_MAX || (cors_origins[n_cors] = strdup(o)) == NULL)
		{
			log_error("cors_origins: at most %d origins", CORS_MAX);
			rc = -EINVAL;
			break;
		}
		n_cors++;
	}
	free(copy);
	return rc;
}

/* The request's Origin when it is one of cors_origins, else NULL. */
static const char *
cors_match(EdgeReq *req)
{
	const char *o;

	if (n_cors == 0 || (o = http_header(req, "Origin")) == NULL)
		return NULL;
	for (int i = 0; i < n_cors; i++)
		if (strcmp(cors_origins[i], o) == 0)
			return cors_origins[i];
	return NULL;
}

/*
 * Called for every answer (http.c): nosniff on all of them (a problem
 * document repeats the request's path); the console's security headers on
 * the console's; CORS headers on the API's when allowed.
 */
void
console_cors_headers(EdgeReq *req, struct MHD_Response *r)
{
	const char *o;

	MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
	if (console_is_path(req->url))
	{
		console_headers(r);
		return;
	}
	if (n_cors == 0)
		return;
	MHD_add_response_header(r, "Vary", "Origin");
	if ((o = cors_match(req)) == NULL)
		return;
	MHD_add_response_header(r, "Access-Control-Allow-Origin", o);
	MHD_add_response_header(r, "Access-Control-Expose-Headers",
							"Location, Idempotency-Replayed, Retry-After, X-Request-Id");
}

/*
 * A preflight (OPTIONS with Origin and Access-Control-Request-Method) from
 * an allowed origin gets its 204; true when it was answered.  Others go
 * on to the routes, which refuse OPTIONS as before.
 */
bool
console_cors_preflight(EdgeReq *req)
{
	struct MHD_Response *r;

	if (strcmp(req->method, "OPTIONS") != 0 || console_is_path(req->url) ||
		http_header(req, "Access-Control-Request-Method") == NULL || cors_match(req) == NULL)
		return false;
	r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
	if (r == NULL)
		return false;
	MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, HEAD, POST, DELETE");
	MHD_add_response_header(r, "Access-Control-Allow-Headers",
							"Authorization, Content-Type, Idempotency-Key, Last-Event-ID, "
							"X-Request-Id, Accept");
	MHD_add_response_header(r, "Access-Control-Max-Age", "600");
	MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	http_respond_response(req, 204, r);
	return true;
}
