/*
 * persist.c — MIRROR_DIR/.repos.json, the repositories added through the
 * API, so that they survive a restart:
 * {"version":2,"repos":[{name,owner,url}]} (version 1 had no owner: shared).
 * Written whole to a temporary file, fsynced and renamed, so a crash
 * leaves the old list or the new one.  Mode 0600: URLs name upstreams.
 */
#include <fcntl.h>
#include <string.h>

#include "gitd.h"

/* *ret gets the array of entries (empty when there is no file yet). */
int
persist_load(json_t **ret)
{
	_cleanup_(freep) char *text = NULL;
	json_error_t		   err;
	json_t				  *doc, *list;
	size_t				   len;
	int					   r;

	r = read_full_file(mirror_dirfd(), GITD_REGISTRY, &text, &len, 64u << 20);
	if (r == -ENOENT)
	{
		*ret = json_array();
		return *ret ? 0 : -ENOMEM;
	}
	if (r < 0)
	{
		errno = -r;
		log_error("cannot read %s/%s: %m", cfg.mirror_dir, GITD_REGISTRY);
		return r;
	}
	doc = json_loadb(text, len, 0, &err);
	list = json_object_get(doc, "repos");
	if (!json_is_array(list))
	{
		/* Starting anyway would forget every repository in it at the next write. */
		log_error("%s/%s is not a repository list (%s); fix or remove it", cfg.mirror_dir,
				  GITD_REGISTRY, doc ? "no \"repos\" array" : err.text);
		json_decref(doc);
		return -EINVAL;
	}
	*ret = json_incref(list);
	json_decref(doc);
	return 0;
}

int
persist_save(json_t *list)
{
	json_t *doc = json_pack("{s:i, s:O}", "version", 2, "repos", list);
	char   *text = doc ? json_dumps(doc, JSON_INDENT(1) | JSON_ENSURE_ASCII) : NULL;
	int		r;

	json_decref(doc);
	if (!text)
		return -ENOMEM;
	size_t len = strlen(text);
	char  *nl = realloc(text, len + 2);
	if (nl)
	{
		text = nl;
		text[len++] = '\n';
	}
	r = write_file_atomic(mirror_dirfd(), GITD_REGISTRY, text, len, 0600);
	if (r == 0)
		(void) fsync(mirror_dirfd()); /* the rename, too, survives a crash */
	if (r < 0)
	{
		errno = -r;
		log_error("cannot write %s/%s: %m", cfg.mirror_dir, GITD_REGISTRY);
	}
	free(text);
	return r;
}
