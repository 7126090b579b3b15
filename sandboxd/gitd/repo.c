/*
 * repo.c — the registry of mirrored repositories and the coordination of
 * their fetches.  One mutex guards the list and every field of every repo;
 * git runs with it released.  A repo has at most one fetch (or first clone)
 * in flight: whoever asks for a fetch while one runs waits on the repo's
 * condition variable and shares that fetch's result.  Repos are reference
 * counted, so a request or a queued job can hold one while it is deleted.
 *
 * States (see README.md): new → fetching → ready, or → failed when the first
 * clone fails; a repo with a good mirror stays ready whatever later fetches
 * do (last_error tells).  A repo added through the API is "provisional"
 * until its first clone succeeded; if that fails it is dropped again.
 *
 * A repo is named by its owner ("*": every tenant; else one tenant) and its
 * name: two tenants may each mirror a "tools" of their own.
 */
#include <stdio.h>
#include <string.h>

#include "daemonlib/metrics.h"
#include "gitd.h"

struct repo
{
	char		  *name;
	char		  *owner; /* "*" or a tenant */
	char		  *dir;	  /* mirror_owner_dir(owner) */
	char		  *url;
	unsigned	   refcount;
	bool		   linked;		/* in the list */
	bool		   configured;	/* from the configuration, not persisted */
	bool		   provisional; /* added through the API, first clone not done yet */
	bool		   deleted;
	bool		   has_mirror; /* NAME.git is a good mirror */
	bool		   fetching;
	bool		   failed;		/* the latest fetch failed */
	bool		   queued;		/* waits in the scheduler's queue */
	bool		   inspected;	/* head and refs are known */
	int			   last_result; /* of the latest fetch, for those who joined it */
	uint64_t	   fetches;
	time_t		   last_fetch_at, last_success_at;
	char		  *last_error;
	char		   head[65];
	uint64_t	   nrefs;
	uint64_t	   next_due; /* CLOCK_MONOTONIC ms */
	pthread_cond_t done;
	struct repo	  *next;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct repo	  *repos;
static size_t		   n_repos, n_fetching;
static uint64_t		   n_runs[2], n_failures[2]; /* [0] clones, [1] fetches (for /metrics) */

static struct repo *
find(const char *owner, const char *name)
{
	for (struct repo *r = repos; r; r = r->next)
		if (strcmp(r->name, name) == 0 && strcmp(r->owner, owner) == 0)
			return r;
	return NULL;
}

/* Listing order: by name, then by owner ("*" first). */
static int
cmp(const struct repo *a, const char *owner, const char *name)
{
	int c = strcmp(a->name, name);

	return c ? c : strcmp(a->owner, owner);
}

static void
repo_free(struct repo *r)
{
	free(r->name);
	free(r->owner);
	free(r->dir);
	free(r->url);
	free(r->last_error);
	free(r);
}

static struct repo *
repo_new(const char *owner, const char *name, const char *url)
{
	struct repo *r = calloc(1, sizeof *r);

	if (!r)
		return NULL;
	r->name = strdup(name);
	r->owner = strdup(owner);
	r->dir = mirror_owner_dir(owner);
	r->url = strdup(url);
	if (!r->name || !r->owner || !r->dir || !r->url)
	{
		repo_free(r);
		return NULL;
	}
	r->refcount = 1;
	pthread_cond_init(&r->done, NULL);
	return r;
}

/* Called with the lock held.  The list is kept sorted by name: listings and the file are. */
static void
link_repo(struct repo *r)
{
	struct repo **pp = &repos;

	while (*pp && cmp(*pp, r->owner, r->name) < 0)
		pp = &(*pp)->next;
	r->next = *pp;
	*pp = r;
	r->linked = true;
	n_repos++;
}

/* Called with the lock held; the list's reference goes to the caller. */
static void
unlink_repo(struct repo *r)
{
	for (struct repo **pp = &repos; *pp; pp = &(*pp)->next)
		if (*pp == r)
		{
			*pp = r->next;
			break;
		}
	r->linked = false;
	n_repos--;
}

void
repo_unref(struct repo *r)
{
	bool last;

	if (!r)
		return;
	pthread_mutex_lock(&lock);
	last = --r->refcount == 0;
	pthread_mutex_unlock(&lock);
	if (!last)
		return;
	pthread_cond_destroy(&r->done);
	repo_free(r);
}

struct repo *
repo_get(const char *owner, const char *name)
{
	struct repo *r;

	pthread_mutex_lock(&lock);
	r = find(owner, name);
	if (r && r->deleted)
		r = NULL;
	if (r)
		r->refcount++;
	pthread_mutex_unlock(&lock);
	return r;
}

size_t
repo_count(void)
{
	size_t n;

	pthread_mutex_lock(&lock);
	n = n_repos;
	pthread_mutex_unlock(&lock);
	return n;
}

size_t
repo_fetching_count(void)
{
	size_t n;

	pthread_mutex_lock(&lock);
	n = n_fetching;
	pthread_mutex_unlock(&lock);
	return n;
}

/* ---- JSON ------------------------------------------------------------------- */

static json_t *
time_json(time_t t)
{
	char buf[32];

	if (!t)
		return json_null();
	iso8601(t, buf);
	return json_string(buf);
}

/* Called with the lock held. */
static const char *
repo_state_name(const struct repo *r)
{
	return r->has_mirror ? "ready" : r->fetching ? "fetching" : r->failed ? "failed" : "new";
}

/* Called with the lock held. */
static json_t *
to_json(const struct repo *r)
{
	const char *state = repo_state_name(r);
	bool		shared = strcmp(r->owner, MIRROR_OWNER_SHARED) == 0;
	char	   *path = mirror_path(r->dir, r->name);
	char	   *inside =
		xasprintf("%s/%s.git", shared ? MIRROR_MOUNT_SHARED : MIRROR_MOUNT_TENANT, r->name);
	json_t *j = json_pack(
		"{s:s, s:s, s:s, s:s?, s:s?, s:s, s:b, s:I, s:o, s:o, s:o, s:o, s:I}", "name", r->name,
		"owner", r->owner, "url", r->url, "path", path, "mirror_path", inside, "state", state,
		"fetching", r->fetching, "fetches", (json_int_t) r->fetches, "last_fetch_at",
		time_json(r->last_fetch_at), "last_success_at", time_json(r->last_success_at), "last_error",
		r->last_error ? json_string(r->last_error) : json_null(), "head",
		r->head[0] ? json_string(r->head) : json_null(), "refs", (json_int_t) r->nrefs);

	free(path);
	free(inside);
	return j;
}

json_t *
repo_json(struct repo *r)
{
	json_t *j;

	pthread_mutex_lock(&lock);
	j = to_json(r);
	pthread_mutex_unlock(&lock);
	return j;
}

json_t *
repo_list_json(const char *owner)
{
	json_t *list = json_array();

	if (!list)
		return NULL;
	pthread_mutex_lock(&lock);
	for (struct repo *r = repos; r; r = r->next)
		if (!r->deleted && (!owner || strcmp(owner, r->owner) == 0) &&
			json_array_append_new(list, to_json(r)) < 0)
		{
			json_decref(list);
			list = NULL;
			break;
		}
	pthread_mutex_unlock(&lock);
	return list;
}

/* Write the API-added repositories to .repos.json (a snapshot taken now). */
static void
persist(void)
{
	static pthread_mutex_t persist_lock = PTHREAD_MUTEX_INITIALIZER;
	json_t				  *list;

	pthread_mutex_lock(&persist_lock);
	list = json_array();
	pthread_mutex_lock(&lock);
	for (struct repo *r = repos; r && list; r = r->next)
		if (!r->configured && !r->provisional && !r->deleted)
			json_array_append_new(list, json_pack("{s:s, s:s, s:s}", "name", r->name, "owner",
												  r->owner, "url", r->url));
	pthread_mutex_unlock(&lock);
	if (!list || persist_save(list) < 0)
		log_error("cannot record the repository list in %s/%s; API-added repositories may be "
				  "forgotten at the next start",
				  cfg.mirror_dir, GITD_REGISTRY);
	json_decref(list);
	pthread_mutex_unlock(&persist_lock);
}

/* ---- fetches ------------------------------------------------------------------ */

int
repo_fetch(struct repo *r, char **err)
{
	struct mirror_info info = {.refs = UINT64_MAX};
	char			  *name, *owner, *dir, *url, *e = NULL;
	bool			   clone;
	int				   rc;

	*err = NULL;
	pthread_mutex_lock(&lock);
	if (r->deleted)
	{
		pthread_mutex_unlock(&lock);
		return -ENOENT;
	}
	if (r->fetching)
	{
		uint64_t seq = r->fetches;
		while (r->fetching && r->fetches == seq)
			pthread_cond_wait(&r->done, &lock);
		rc = r->last_result;
		if (rc < 0)
			*err = strdup(r->last_error ? r->last_error : "the fetch failed");
		pthread_mutex_unlock(&lock);
		return rc;
	}
	r->fetching = true;
	r->fetches++;
	n_fetching++;
	clone = !r->has_mirror;
	name = strdup(r->name);
	owner = strdup(r->owner);
	dir = strdup(r->dir);
	url = strdup(r->url);
	pthread_mutex_unlock(&lock);

	if (!name || !owner || !dir || !url)
		rc = -ENOMEM;
	else
		rc = slot_acquire();
	if (rc == 0)
	{
		log_info("%s (owner %s): %s %s", name, owner, clone ? "cloning" : "fetching", url);
		rc = clone ? mirror_clone(owner, dir, name, url, &e) : mirror_fetch(dir, name, url, &e);
		if (rc == 0 && mirror_inspect(dir, name, &info) < 0)
			info.refs = UINT64_MAX; /* keep what we knew */
		slot_release();
		pthread_mutex_lock(&lock);
		n_runs[clone ? 0 : 1]++;
		if (rc < 0)
			n_failures[clone ? 0 : 1]++;
		pthread_mutex_unlock(&lock);
	}
	if (rc == -ECANCELED && !e)
		e = strdup("the daemon is stopping");
	else if (rc < 0 && !e)
		e = xasprintf("%s", strerror(-rc));
	if (rc < 0)
		log_warning("%s: %s failed: %s", name ? name : "?", clone ? "clone" : "fetch", e ? e : "?");
	else
		log_info("%s: %s done", name, clone ? "clone" : "fetch");

	pthread_mutex_lock(&lock);
	r->last_fetch_at = time(NULL);
	free(r->last_error);
	r->last_error = NULL;
	if (rc == 0)
	{
		r->has_mirror = true;
		r->failed = false;
		r->last_success_at = r->last_fetch_at;
		if (info.refs != UINT64_MAX)
		{
			memcpy(r->head, info.head, sizeof r->head);
			r->nrefs = info.refs;
			r->inspected = true;
		}
	}
	else
	{
		r->failed = true;
		r->last_error = e ? strdup(e) : NULL;
		if (rc != -ECANCELED)
			rc = -EIO;
	}
	r->last_result = rc;
	r->fetching = false;
	r->next_due = now_ms() + cfg.fetch_interval_ms;
	n_fetching--;
	pthread_cond_broadcast(&r->done);
	pthread_mutex_unlock(&lock);

	if (rc < 0)
		*err = e;
	else
		free(e);
	free(name);
	free(owner);
	free(dir);
	free(url);
	return rc;
}

enum repo_add_result
repo_add(const char *owner, const char *name, const char *url, struct repo **ret, char **err)
{
	struct repo *r;
	bool		 ready;
	int			 rc;

	*ret = NULL;
	*err = NULL;
	pthread_mutex_lock(&lock);
	r = find(owner, name);
	if (r)
	{
		if (r->deleted)
		{
			pthread_mutex_unlock(&lock);
			return REPO_DELETING;
		}
		if (strcmp(r->url, url) != 0)
		{
			*err = strdup(r->url);
			pthread_mutex_unlock(&lock);
			return REPO_CONFLICT;
		}
		r->refcount++;
		ready = r->has_mirror;
		pthread_mutex_unlock(&lock);
		/* The same request again: answer once a mirror exists (joining a clone in flight). */
		rc = ready ? 0 : repo_fetch(r, err);
		if (rc == 0)
		{
			*ret = r;
			return REPO_ALREADY;
		}
		repo_unref(r);
		return rc == -ECANCELED ? REPO_CANCELLED : rc == -ENOENT ? REPO_GONE : REPO_ADD_FAILED;
	}
	if (n_repos >= cfg.max_repos)
	{
		pthread_mutex_unlock(&lock);
		return REPO_FULL;
	}
	r = repo_new(owner, name, url);
	if (!r)
	{
		pthread_mutex_unlock(&lock);
		*err = strdup("out of memory");
		return REPO_ADD_FAILED;
	}
	r->provisional = true;
	r->refcount++; /* ours; the list holds the first */
	link_repo(r);
	pthread_mutex_unlock(&lock);

	rc = repo_fetch(r, err);

	pthread_mutex_lock(&lock);
	if (rc == 0 && !r->deleted)
	{
		r->provisional = false;
		pthread_mutex_unlock(&lock);
		persist();
		*ret = r;
		return REPO_ADDED;
	}
	bool drop = r->linked && !r->deleted;
	if (drop)
		unlink_repo(r); /* nothing on disk: a failed first clone leaves no directory */
	pthread_mutex_unlock(&lock);
	if (drop)
		repo_unref(r);
	repo_unref(r);
	if (rc == 0 || rc == -ENOENT)
		return REPO_GONE;
	return rc == -ECANCELED ? REPO_CANCELLED : REPO_ADD_FAILED;
}

int
repo_delete(const char *owner, const char *name)
{
	struct repo *r;
	char		*aside = NULL;
	bool		 was_api;

	pthread_mutex_lock(&lock);
	r = find(owner, name);
	if (!r || r->deleted)
	{
		pthread_mutex_unlock(&lock);
		return -ENOENT;
	}
	r->deleted = true; /* no new fetch starts; GET answers 404 from now on */
	while (r->fetching)
		pthread_cond_wait(&r->done, &lock);
	was_api = !r->configured && !r->provisional;
	if (r->linked)
		unlink_repo(r);
	/* Renamed under the lock, so that a new repo of this name never meets the old directory. */
	aside = mirror_detach(r->dir, name);
	if (!aside && errno != ENOENT)
		log_error("%s: cannot move the mirror aside: %m", name);
	pthread_mutex_unlock(&lock);

	if (aside && mirror_purge(aside) < 0)
		log_error("%s: cannot remove %s/%s completely: %m", name, cfg.mirror_dir, aside);
	free(aside);
	if (was_api)
		persist();
	log_notice("%s: deleted", name);
	repo_unref(r);
	return 0;
}

/* ---- the scheduler's side ------------------------------------------------------ */

void
repo_inspect_adopted(void)
{
	for (;;)
	{
		struct repo		  *r = NULL;
		struct mirror_info info;

		pthread_mutex_lock(&lock);
		for (struct repo *x = repos; x; x = x->next)
			if (x->has_mirror && !x->inspected && !x->fetching && !x->deleted)
			{
				r = x;
				r->refcount++;
				break;
			}
		pthread_mutex_unlock(&lock);
		if (!r || gitd_stopping)
		{
			repo_unref(r);
			return;
		}
		int rc = mirror_inspect(r->dir, r->name, &info);
		pthread_mutex_lock(&lock);
		if (rc == 0 && !r->inspected)
		{
			memcpy(r->head, info.head, sizeof r->head);
			r->nrefs = info.refs;
		}
		r->inspected = true; /* even on failure: the next fetch tries again */
		pthread_mutex_unlock(&lock);
		repo_unref(r);
	}
}

uint64_t
repo_queue_due(uint64_t now)
{
	uint64_t wait = UINT64_MAX;

	pthread_mutex_lock(&lock);
	for (struct repo *r = repos; r; r = r->next)
	{
		uint64_t due;
		if (r->provisional || r->deleted || r->fetching || r->queued)
			continue;
		if (!r->has_mirror && r->fetches == 0)
			due = 0; /* a configured repo without a mirror: clone at once */
		else if (cfg.fetch_interval_ms == 0)
			continue;
		else
			due = r->next_due;
		if (due <= now)
		{
			r->refcount++;
			if (sched_enqueue(r) == 0)
				r->queued = true;
			else
				r->refcount--; /* out of memory: the next round tries again */
		}
		else if (due - now < wait)
			wait = due - now;
	}
	pthread_mutex_unlock(&lock);
	return wait;
}

void
repo_run_queued(struct repo *r)
{
	char *err = NULL;

	pthread_mutex_lock(&lock);
	r->queued = false;
	pthread_mutex_unlock(&lock);
	if (!gitd_stopping)
		repo_fetch(r, &err);
	free(err);
	repo_unref(r);
}

/* ---- start-up ------------------------------------------------------------------- */

/* Add a repo found in the file or the configuration; the lock is not needed yet. */
static int
adopt(const char *owner, const char *name, const char *url, bool configured)
{
	struct repo *r = find(owner, name);
	time_t		 mtime;

	if (r)
	{
		if (strcmp(r->url, url) != 0)
		{
			log_notice("%s: the configuration says %s (was %s)", name, url, r->url);
			char *u = strdup(url);
			if (!u)
				return -ENOMEM;
			free(r->url);
			r->url = u;
		}
		r->configured = r->configured || configured;
		return 0;
	}
	r = repo_new(owner, name, url);
	if (!r)
		return -ENOMEM;
	r->configured = configured;
	if (mirror_exists(r->dir, name, &mtime))
	{
		uint64_t age = (uint64_t) MAX(0, (long long) (time(NULL) - mtime)) * 1000;
		r->has_mirror = true;
		r->last_success_at = mtime;
		r->next_due = now_ms() + (age < cfg.fetch_interval_ms ? cfg.fetch_interval_ms - age : 0);
		log_info("%s: adopted the mirror on disk", name);
	}
	else
		log_info("%s: no mirror yet; cloning %s in the background", name, url);
	link_repo(r);
	return 0;
}

int
repo_init(void)
{
	json_t *list = NULL, *e;
	size_t	i;
	int		r;

	r = mirror_init();
	if (r < 0)
		return r;
	r = persist_load(&list);
	if (r < 0)
		return r;
	json_array_foreach(list, i, e)
	{
		const char *name = json_string_value(json_object_get(e, "name"));
		const char *url = json_string_value(json_object_get(e, "url"));
		json_t *o = json_object_get(e, "owner"); /* absent in files of the flat layout: shared */
		const char *owner = o ? json_string_value(o) : MIRROR_OWNER_SHARED;
		if (!repo_name_valid(name) || repo_url_problem(url) || !mirror_owner_valid(owner))
		{
			log_warning("%s/%s: skipping entry %zu (invalid name, owner or url)", cfg.mirror_dir,
						GITD_REGISTRY, i);
			continue;
		}
		r = adopt(owner, name, url, false);
		if (r < 0)
			break;
	}
	json_decref(list);
	for (i = 0; r >= 0 && i < cfg.n_repos; i++)
		r = adopt(MIRROR_OWNER_SHARED, cfg.repos[i].name, cfg.repos[i].url, true);
	if (r < 0)
		return r;
	if (n_repos > cfg.max_repos)
		log_warning("%zu repositories configured and recorded, more than max_repos (%llu): "
					"no more can be added",
					n_repos, (unsigned long long) cfg.max_repos);
	persist(); /* configured repos named like recorded ones leave the file */
	return 0;
}

void
repo_done(void)
{
	pthread_mutex_lock(&lock);
	while (repos)
	{
		struct repo *r = repos;
		unlink_repo(r);
		pthread_mutex_unlock(&lock);
		repo_unref(r);
		pthread_mutex_lock(&lock);
	}
	pthread_mutex_unlock(&lock);
}

/* The registry's part of GET /metrics (Prometheus text format). */
void
repo_metrics(struct metrics_out *o)
{
	static const char *const states[] = {"new", "fetching", "ready", "failed"};
	size_t					 by_state[ARRAY_SIZE(states)] = {0}, shared = 0, tenant = 0;
	uint64_t				 runs[2], failures[2], fetching;

	pthread_mutex_lock(&lock);
	for (struct repo *r = repos; r; r = r->next)
	{
		if (r->deleted)
			continue;
		for (size_t i = 0; i < ARRAY_SIZE(states); i++)
			if (strcmp(states[i], repo_state_name(r)) == 0)
				by_state[i]++;
		if (strcmp(r->owner, MIRROR_OWNER_SHARED) == 0)
			shared++;
		else
			tenant++;
	}
	memcpy(runs, n_runs, sizeof runs);
	memcpy(failures, n_failures, sizeof failures);
	fetching = n_fetching;
	pthread_mutex_unlock(&lock);

	for (size_t i = 0; i < ARRAY_SIZE(states); i++)
		metrics_gauge(o, "nadi_gitd_repos", "Repositories mirrored, by state.",
					  METRICS_LABELS("state", states[i]), (double) by_state[i]);
	metrics_gauge(o, "nadi_gitd_repos_by_owner",
				  "Repositories mirrored, shared with every tenant or owned by one.",
				  METRICS_LABELS("owner", "shared"), (double) shared);
	metrics_gauge(o, "nadi_gitd_repos_by_owner",
				  "Repositories mirrored, shared with every tenant or owned by one.",
				  METRICS_LABELS("owner", "tenant"), (double) tenant);
	metrics_gauge(o, "nadi_gitd_fetching", "Clones and fetches running now.", NULL,
				  (double) fetching);
	for (int k = 0; k < 2; k++)
		metrics_counter(o, "nadi_gitd_fetches_total",
						"git runs (first clones and fetches) since start.",
						METRICS_LABELS("kind", k ? "fetch" : "clone"), runs[k]);
	for (int k = 0; k < 2; k++)
		metrics_counter(o, "nadi_gitd_fetch_failures_total",
						"git runs that failed (the mirror stayed as it was).",
						METRICS_LABELS("kind", k ? "fetch" : "clone"), failures[k]);
}
