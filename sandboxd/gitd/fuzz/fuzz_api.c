/*
 * fuzz_api.c — libFuzzer target for nadi-gitd's API request handling
 * (api.c with validate.c and the name/owner checks of daemonlib/util.c): any
 * method, path, query and body a client may send.  The HTTP layer and the
 * mirror registry are replaced by fakes (an in-memory table of repos).  It
 * checks that every request is answered exactly once with a valid status,
 * and that nothing the registry is asked about has an invalid name, owner
 * or URL.
 *
 * Input: "METHOD PATH[?QUERY]\nBODY".
 *
 *   make -C sandboxd/gitd fuzz-api && sandboxd/gitd/fuzz/fuzz-api -max_total_time=60
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "daemonlib/metrics.h"
#include "gitd.h"
#include "http.h"

struct gitd_config cfg = {.max_repos = 4};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- the request ---- */

struct http_req
{
	char		method[16];
	char		path[512];
	char		query[512];
	const char *body;
	size_t		body_len;
	int			replies;
	unsigned	status;
};

const char *
http_method(const struct http_req *r)
{
	return r->method;
}

const char *
http_path(const struct http_req *r)
{
	return r->path;
}

/* key=value&...: values as they are (the real adapter decodes them first) */
const char *
http_query(const struct http_req *r, const char *key)
{
	static char val[512];
	size_t		kl = strlen(key);

	for (const char *p = r->query; *p;)
	{
		const char *end = strchr(p, '&');
		size_t		n = end ? (size_t) (end - p) : strlen(p);

		if (n > kl && strncmp(p, key, kl) == 0 && p[kl] == '=')
		{
			snprintf(val, sizeof val, "%.*s", (int) (n - kl - 1), p + kl + 1);
			return val;
		}
		if (!end)
			break;
		p = end + 1;
	}
	return NULL;
}

#include "daemonlib/fuzz_http.h"

json_t *
http_body_json(struct http_req *r)
{
	json_error_t e;
	json_t		*j = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &e);

	if (!j || !json_is_object(j))
	{
		json_decref(j);
		reply(r, 400);
		return NULL;
	}
	return j;
}

void
http_reply_empty(struct http_req *r, unsigned status)
{
	reply(r, status);
}

void
http_reply_text(struct http_req *r, unsigned status, char *text, const char *content_type)
{
	free(text);
	reply(r, status);
}

void
http_metrics(struct metrics_out *o)
{
}

/* ---- a registry of at most cfg.max_repos mirrors, in memory ---- */

struct repo
{
	char owner[300];
	char name[GITD_NAME_MAX + 1];
	char url[1024];
	int	 refs;
	bool used;
};

static struct repo table[8];

static void
check_id(const char *owner, const char *name)
{
	assert(owner && mirror_owner_valid(owner));
	assert(name && repo_name_valid(name));
}

static struct repo *
find(const char *owner, const char *name)
{
	for (size_t i = 0; i < cfg.max_repos; i++)
		if (table[i].used && strcmp(table[i].owner, owner) == 0 && strcmp(table[i].name, name) == 0)
			return &table[i];
	return NULL;
}

size_t
repo_count(void)
{
	size_t n = 0;

	for (size_t i = 0; i < cfg.max_repos; i++)
		n += table[i].used;
	return n;
}

size_t
repo_fetching_count(void)
{
	return 0;
}

struct repo *
repo_get(const char *owner, const char *name)
{
	struct repo *r;

	check_id(owner, name);
	r = find(owner, name);
	if (r)
		r->refs++;
	return r;
}

void
repo_unref(struct repo *r)
{
	if (r)
	{
		assert(r->refs > 0);
		r->refs--;
	}
}

json_t *
repo_json(struct repo *r)
{
	return json_pack("{s:s, s:s, s:s}", "name", r->name, "owner", r->owner, "url", r->url);
}

json_t *
repo_list_json(const char *owner)
{
	json_t *a = json_array();

	assert(!owner || mirror_owner_valid(owner));
	for (size_t i = 0; i < cfg.max_repos; i++)
		if (table[i].used && (!owner || strcmp(owner, table[i].owner) == 0))
			json_array_append_new(a, repo_json(&table[i]));
	return a;
}

void
repo_metrics(struct metrics_out *o)
{
	metrics_gauge(o, "nadi_gitd_repos", "Repositories mirrored.", NULL, (double) repo_count());
}

enum repo_add_result
repo_add(const char *owner, const char *name, const char *url, struct repo **ret, char **err)
{
	struct repo *r;

	check_id(owner, name);
	assert(url && repo_url_problem(url) == NULL);
	r = find(owner, name);
	if (r)
	{
		r->refs++;
		*ret = r;
		if (strcmp(r->url, url) == 0)
			return REPO_ALREADY;
		*err = strdup(r->url);
		return REPO_CONFLICT;
	}
	for (size_t i = 0; i < cfg.max_repos; i++)
		if (!table[i].used)
		{
			r = &table[i];
			snprintf(r->owner, sizeof r->owner, "%s", owner);
			snprintf(r->name, sizeof r->name, "%s", name);
			snprintf(r->url, sizeof r->url, "%s", url);
			r->used = true;
			r->refs = 1;
			*ret = r;
			/* a clone that fails now and then */
			if (strstr(url, "fail"))
			{
				r->used = false;
				r->refs = 0;
				*ret = NULL;
				*err = strdup("fatal: repository not found");
				return REPO_ADD_FAILED;
			}
			return REPO_ADDED;
		}
	return REPO_FULL;
}

int
repo_fetch(struct repo *r, char **err)
{
	assert(r->refs > 0);
	if (strstr(r->url, "fail"))
	{
		*err = strdup("fetch failed");
		return -EIO;
	}
	return 0;
}

int
repo_delete(const char *owner, const char *name)
{
	struct repo *r;

	check_id(owner, name);
	r = find(owner, name);
	if (!r)
		return -ENOENT;
	r->used = false;
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct http_req r = {0};
	const char	   *nl = memchr(data, '\n', size);
	size_t			line = nl ? (size_t) (nl - (const char *) data) : size;
	const char	   *sp = memchr(data, ' ', line);
	size_t			ml, tl;
	char			target[1024];
	char		   *q;

	if (!sp)
		return 0;
	ml = (size_t) (sp - (const char *) data);
	tl = line - ml - 1;
	if (ml == 0 || ml >= sizeof r.method || tl >= sizeof target || memchr(data, '\0', line))
		return 0;
	memcpy(r.method, data, ml);
	memcpy(target, sp + 1, tl);
	target[tl] = '\0';
	q = strchr(target, '?');
	if (q)
	{
		*q = '\0';
		snprintf(r.query, sizeof r.query, "%s", q + 1);
	}
	snprintf(r.path, sizeof r.path, "%s", target);
	r.body = nl ? nl + 1 : "";
	r.body_len = nl ? size - line - 1 : 0;

	memset(table, 0, sizeof table);
	table[0] = (struct repo){"*", "nadi", "https://example.com/nadi.git", 0, true};
	table[1] = (struct repo){"acme", "private", "file:///srv/fail.git", 0, true};

	api_dispatch(&r);
	assert(r.replies == 1);
	for (size_t i = 0; i < cfg.max_repos; i++)
		assert(table[i].refs == 0); /* every reference taken was given back */
	return 0;
}
