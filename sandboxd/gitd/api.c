/*
 * api.c — the HTTP API: routes, request validation, and the mapping of
 * registry results onto status codes and problem codes (README.md has the
 * table).  Handlers run on the connection's own thread and may block until
 * a clone or fetch is done (bounded by fetch_timeout).
 */
#include <stdio.h>
#include <string.h>

#include "daemonlib/metrics.h"
#include "gitd.h"
#include "http.h"

#define URL_SAFE "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"

static bool
is(const struct http_req *r, const char *m)
{
	return strcmp(http_method(r), m) == 0;
}

static void
method_not_allowed(struct http_req *r, const char *allow)
{
	http_add_header(r, "Allow", allow);
	http_reply_problem(r, 405, "method_not_allowed", "%s is not allowed here; use %s",
					   http_method(r), allow);
}

static void
invalid_name(struct http_req *r)
{
	http_reply_problem(
		r, 400, "invalid_name",
		"a repository name is 1 to %d letters, digits, '.', '_' or '-', starts with a letter or "
		"digit, has no \"..\" and does not end in \".git\"",
		GITD_NAME_MAX);
}

static void
invalid_owner(struct http_req *r)
{
	http_reply_problem(
		r, 400, "invalid_owner",
		"an owner is \"*\" (every tenant's sandboxes see the mirror) or a tenant: 1 to %d bytes, "
		"no control characters",
		MIRROR_OWNER_MAX);
}

/* ?owner=: the repository's owner, "*" when absent; NULL (answered 400) when invalid. */
static const char *
query_owner(struct http_req *r, bool absent_is_shared)
{
	const char *owner = http_query(r, "owner");

	if (!owner)
		return absent_is_shared ? MIRROR_OWNER_SHARED : NULL;
	if (!mirror_owner_valid(owner))
	{
		invalid_owner(r);
		return NULL;
	}
	return owner;
}

static void
metrics(struct http_req *r)
{
	struct metrics_out *o = metrics_begin("nadi-gitd");
	char			   *text;
	size_t				len = 0;

	if (o)
	{
		metrics_gauge(o, "nadi_gitd_info", "Version of this daemon.",
					  METRICS_LABELS("version", NADI_VERSION), 1);
		http_metrics(o);
		repo_metrics(o);
	}
	text = o ? metrics_end(o, &len) : NULL;
	if (!text)
	{
		http_reply_problem(r, 500, "internal", "out of memory");
		return;
	}
	if (len > 0 && text[len - 1] == '\n')
		text[len - 1] = '\0'; /* http_reply_text ends it with one */
	http_reply_text(r, 200, text, METRICS_CONTENT_TYPE);
}

static void
healthz(struct http_req *r)
{
	http_reply_json(r, 200,
					json_pack("{s:s, s:s, s:I, s:I}", "status", "ok", "version", NADI_VERSION,
							  "repos", (json_int_t) repo_count(), "fetching",
							  (json_int_t) repo_fetching_count()));
}

static void
list_repos(struct http_req *r)
{
	const char *owner = query_owner(r, false);
	json_t	   *list;

	if (!owner && http_query(r, "owner"))
		return;
	list = repo_list_json(owner);

	http_reply_json(r, 200, list ? json_pack("{s:o}", "repos", list) : NULL);
}

static void
add_repo(struct http_req *r)
{
	json_t		*body = http_body_json(r), *v;
	const char	*name, *url, *owner = MIRROR_OWNER_SHARED, *key, *why;
	struct repo *repo = NULL;
	char		*err = NULL;

	if (!body)
		return;
	json_object_foreach(body, key, v)
	{
		if (strcmp(key, "name") != 0 && strcmp(key, "url") != 0 && strcmp(key, "owner") != 0)
		{
			http_reply_problem(r, 400, "invalid_json",
							   "unknown field \"%s\" (a repository is {name, url, owner})", key);
			goto out;
		}
	}
	if (json_object_get(body, "owner") &&
		!mirror_owner_valid(owner = json_string_value(json_object_get(body, "owner"))))
	{
		invalid_owner(r);
		goto out;
	}
	name = json_string_value(json_object_get(body, "name"));
	url = json_string_value(json_object_get(body, "url"));
	if (!repo_name_valid(name))
	{
		invalid_name(r);
		goto out;
	}
	if (!url)
	{
		http_reply_problem(r, 400, "invalid_url", "\"url\" must be a string");
		goto out;
	}
	why = repo_url_problem(url);
	if (why)
	{
		http_reply_problem(r, 400, "invalid_url", "%s", why);
		goto out;
	}
	switch (repo_add(owner, name, url, &repo, &err))
	{
		case REPO_ADDED:
		{
			char loc[160 + 3 * MIRROR_OWNER_MAX];
			int	 k = snprintf(loc, sizeof loc, "/v1/repos/%s", name);
			if (strcmp(owner, MIRROR_OWNER_SHARED) != 0)
			{
				k += snprintf(loc + k, sizeof loc - (size_t) k, "?owner=");
				for (const unsigned char *c = (const unsigned char *) owner; *c; c++)
					k += snprintf(loc + k, sizeof loc - (size_t) k,
								  strchr(URL_SAFE, *c) ? "%c" : "%%%02X", *c);
			}
			http_add_header(r, "Location", loc);
			http_reply_json(r, 201, repo_json(repo));
			break;
		}
		case REPO_ALREADY:
			http_reply_json(r, 200, repo_json(repo));
			break;
		case REPO_CONFLICT:
			http_reply_problem(r, 409, "repo_exists",
							   "%s already mirrors %s; delete it first to mirror another url", name,
							   err ? err : "another url");
			break;
		case REPO_DELETING:
			http_reply_problem(r, 409, "repo_exists",
							   "%s is being deleted; try again when it is gone", name);
			break;
		case REPO_FULL:
			http_reply_problem(r, 409, "too_many_repos",
							   "this daemon mirrors at most %llu repositories",
							   (unsigned long long) cfg.max_repos);
			break;
		case REPO_GONE:
			http_reply_problem(r, 409, "repo_deleted", "%s was deleted while its first clone ran",
							   name);
			break;
		case REPO_CANCELLED:
			http_reply_problem(r, 503, "shutting_down", "the mirror daemon is stopping");
			break;
		case REPO_ADD_FAILED:
			http_reply_problem(r, 502, "upstream_failed", "cloning %s failed: %s", url,
							   err ? err : "unknown error");
			break;
	}
out:
	free(err);
	repo_unref(repo);
	json_decref(body);
}

static void
fetch_repo(struct http_req *r, struct repo *repo, const char *name)
{
	char *err = NULL;
	int	  rc = repo_fetch(repo, &err);

	if (rc == 0)
		http_reply_json(r, 200, repo_json(repo));
	else if (rc == -ENOENT)
		http_reply_problem(r, 404, "repo_not_found", "%s was deleted", name);
	else if (rc == -ECANCELED)
		http_reply_problem(r, 503, "shutting_down", "the mirror daemon is stopping");
	else
		http_reply_problem(r, 502, "upstream_failed",
						   "fetching %s failed; the mirror is unchanged: %s", name,
						   err ? err : "unknown error");
	free(err);
}

/* /v1/repos/{name} and /v1/repos/{name}/fetch */
static void
one_repo(struct http_req *r, const char *rest)
{
	const char	*slash = strchr(rest, '/');
	size_t		 n = slash ? (size_t) (slash - rest) : strlen(rest);
	char		 name[GITD_NAME_MAX + 1];
	const char	*owner;
	struct repo *repo;

	if (slash && strcmp(slash, "/fetch") != 0)
	{
		http_reply_problem(r, 404, "not_found", "no such resource: %s", http_path(r));
		return;
	}
	if (n > GITD_NAME_MAX)
	{
		invalid_name(r);
		return;
	}
	memcpy(name, rest, n);
	name[n] = '\0';
	if (!repo_name_valid(name))
	{
		invalid_name(r);
		return;
	}
	if (slash ? !is(r, "POST") : !is(r, "GET") && !is(r, "DELETE"))
	{
		method_not_allowed(r, slash ? "POST" : "GET, DELETE");
		return;
	}
	if (!(owner = query_owner(r, true)))
		return;
	if (is(r, "DELETE"))
	{
		if (repo_delete(owner, name) < 0)
			http_reply_problem(r, 404, "repo_not_found", "no repository named %s owned by %s", name,
							   owner);
		else
			http_reply_empty(r, 204);
		return;
	}
	repo = repo_get(owner, name);
	if (!repo)
	{
		http_reply_problem(r, 404, "repo_not_found", "no repository named %s owned by %s", name,
						   owner);
		return;
	}
	if (slash)
		fetch_repo(r, repo, name);
	else
		http_reply_json(r, 200, repo_json(repo));
	repo_unref(repo);
}

void
api_dispatch(struct http_req *r)
{
	const char *p = http_path(r);

	if (strcmp(p, "/healthz") == 0)
	{
		if (is(r, "GET") || is(r, "HEAD"))
			healthz(r);
		else
			method_not_allowed(r, "GET");
	}
	else if (strcmp(p, "/metrics") == 0)
	{
		if (is(r, "GET") || is(r, "HEAD"))
			metrics(r);
		else
			method_not_allowed(r, "GET");
	}
	else if (strcmp(p, "/v1/repos") == 0)
	{
		if (is(r, "GET"))
			list_repos(r);
		else if (is(r, "POST"))
			add_repo(r);
		else
			method_not_allowed(r, "GET, POST");
	}
	else if (strncmp(p, "/v1/repos/", 10) == 0)
		one_repo(r, p + 10);
	else
		http_reply_problem(r, 404, "not_found", "no such resource: %s", p);
}
