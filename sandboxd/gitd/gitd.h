/*
 * gitd.h — shared declarations of nadi-gitd, the git mirror of a sandbox
 * host: configuration, logging, small helpers, the git runner, the mirror
 * registry and the scheduler.  Each concern lives in its own .c file; this
 * header is the one place their interfaces meet.
 */
#ifndef GITD_H
#define GITD_H

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/* Logging, parsing and file helpers shared with nadi-sandboxd and nadi-credproxy. */
#include "daemonlib/log.h"
#include "daemonlib/util.h"

#include "nadi_version.h"
#define GITD_REGISTRY ".repos.json" /* repositories added through the API */
#define GITD_NAME_MAX REPO_NAME_MAX /* repo_name_valid(), daemonlib/util.c */
#define GITD_URL_MAX 4096
#define GITD_BODY_MAX (64u << 10) /* request bodies */
#define GITD_ERR_MAX 4096		  /* bytes of git's stderr kept */

/* ---- configuration (config.c) ------------------------------------------ */

struct repo_spec
{
	char *name;
	char *url;
};

struct gitd_config
{
	char			 *config_file;
	char			 *mirror_dir; /* absolute */
	char			 *listen_unix;
	char			 *listen_tcp; /* "PORT" or "IPV4:PORT" (port 0: the kernel picks) */
	char			 *ready_file; /* gets the bound TCP port once serving */
	char			 *token_file;
	char			 *git_path;			 /* "git": searched in PATH */
	uint64_t		  fetch_interval_ms; /* 0: no periodic fetches */
	uint64_t		  fetch_timeout_ms;
	uint64_t		  max_repos;
	uint64_t		  max_parallel_fetches;
	uint64_t		  max_connections;
	struct repo_spec *repos; /* configured repositories */
	size_t			  n_repos;
};

extern struct gitd_config cfg;

int config_parse_args(int argc, char **argv);
int config_finish(void);
/* The bearer token (SIGHUP re-reads it); true when none is configured. */
bool config_token_matches(const char *presented);
int	 config_reload_token(void);

/* ---- helpers of its own (util.c; the shared ones are in daemonlib/util.h) --- */

/* Valid UTF-8 without control characters (but \n, \t), trimmed; a new string. */
char *text_clean(const char *s, size_t len);

/* ---- git subprocesses (git.c) ------------------------------------------- */

struct git_result
{
	int	   exit_status; /* exit code, or -1 when killed by a signal */
	int	   signal;
	bool   timed_out;
	bool   cancelled; /* the daemon is stopping */
	char  *out;		  /* stdout, at most out_max bytes kept */
	size_t out_len;
	size_t out_lines; /* newlines in all of stdout, kept or not */
	char  *err;		  /* stderr, cleaned and trimmed (last GITD_ERR_MAX bytes) */
};

/*
 * Run `git ARGS...` (cfg.git_path, a sanitised environment, no terminal,
 * its own process group) and wait at most timeout_ms.  0 when it ran (see
 * res->exit_status), negative errno when it could not be started.
 */
int	 git_run(const char *const *args, uint64_t timeout_ms, size_t out_max, struct git_result *res);
void git_result_done(struct git_result *res);
/* Shutdown: no new git processes; signal the running ones. */
void git_stop_all(int sig);

/* ---- mirrors on disk (mirror.c) ----------------------------------------- */

struct mirror_info
{
	char	 head[65]; /* "" when HEAD does not resolve */
	uint64_t refs;
};

/*
 * OWNER_DIR is mirror_owner_dir(owner) (daemonlib/util.h): "shared" or
 * "tenants/HEX", below MIRROR_DIR.
 */
int	 mirror_init(void); /* open MIRROR_DIR, remove leftovers of a crash, move the flat layout */
bool mirror_exists(const char *owner_dir, const char *name, time_t *mtime);
/* Clone url into a temporary directory and rename it to OWNER_DIR/NAME.git. */
int mirror_clone(const char *owner, const char *owner_dir, const char *name, const char *url,
				 char **err);
/* git fetch --prune in OWNER_DIR/NAME.git; the mirror stays as it was on failure. */
int mirror_fetch(const char *owner_dir, const char *name, const char *url, char **err);
int mirror_inspect(const char *owner_dir, const char *name, struct mirror_info *info);
/*
 * Deletion in two steps: detach renames OWNER_DIR/NAME.git to a ".del-"
 * name (the name is free at once; NULL with errno ENOENT when there was no
 * mirror), purge removes that directory (slow for a large mirror).
 */
char *mirror_detach(const char *owner_dir, const char *name);
int	  mirror_purge(const char *aside);
int	  mirror_dirfd(void);
char *mirror_path(const char *owner_dir, const char *name);

/* ---- the registry (repo.c) ---------------------------------------------- */

enum repo_state
{
	REPO_NEW,
	REPO_FETCHING,
	REPO_READY,
	REPO_FAILED
};

struct repo;

/* NULL when url may be mirrored, else why not (a static string). */
const char *repo_url_problem(const char *url);

int	   repo_init(void); /* registry file + configured repos + mirrors on disk */
void   repo_done(void);
size_t repo_count(void);
size_t repo_fetching_count(void);

/* Repos are named by owner ("*" or a tenant) and name. */
struct repo *repo_get(const char *owner, const char *name); /* a new reference, NULL if unknown */
void		 repo_unref(struct repo *r);
json_t		*repo_json(struct repo *r);
json_t		*repo_list_json(const char *owner); /* NULL: every owner's */
/* The registry's part of GET /metrics. */
struct metrics_out;
void repo_metrics(struct metrics_out *o);

enum repo_add_result
{
	REPO_ADDED,
	REPO_ALREADY,
	REPO_CONFLICT,
	REPO_DELETING,
	REPO_FULL,
	REPO_ADD_FAILED,
	REPO_GONE,
	REPO_CANCELLED
};
/* Add and clone (synchronously); *ret gets a reference on ADDED/ALREADY. */
enum repo_add_result
repo_add(const char *owner, const char *name, const char *url, struct repo **ret, char **err);
/*
 * Fetch now, or wait for the fetch in flight and share its result.  0 on
 * success, -EIO with *err set when git failed, -ENOENT when the repository
 * was deleted, -ECANCELED when the daemon is stopping.
 */
int repo_fetch(struct repo *r, char **err);
int repo_delete(const char *owner, const char *name);
/* Scheduler hooks: run the first inspections, queue what is due. */
void	 repo_inspect_adopted(void);
uint64_t repo_queue_due(uint64_t now);	  /* returns ms until the next is due */
void	 repo_run_queued(struct repo *r); /* a worker's job; drops the queue's reference */

/* ---- .repos.json (persist.c) ------------------------------------------- */

int persist_load(json_t **ret); /* the array of {name, owner, url} */
int persist_save(json_t *list);

/* ---- scheduler and fetch slots (sched.c) -------------------------------- */

int				   sched_start(void);
void			   sched_stop(void);
int				   sched_enqueue(struct repo *r); /* takes the reference on success */
int				   slot_acquire(void);			  /* -ECANCELED when stopping */
void			   slot_release(void);
extern atomic_bool gitd_stopping; /* set once, on SIGTERM */

/* ---- HTTP (http.c, api.c) ----------------------------------------------- */

int	 http_init(void);
void http_quiesce(void);
void http_done(void);

#endif
