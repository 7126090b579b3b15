/*
 * mirror.c — the on-disk side: DIR/NAME.git, where DIR is the owner's
 * directory below MIRROR_DIR ("shared" for "*", "tenants/<sha256 hex>" for
 * a tenant: daemonlib/util.h), is a complete bare mirror or absent, never
 * half-written.  A first clone goes into a temporary ".tmp-NAME-XXXXXX" in
 * MIRROR_DIR itself (which no sandbox sees) and is renamed into place only
 * on success; a fetch updates refs in one transaction (git fetch --atomic),
 * so a failing upstream leaves the last good mirror as it was.  Deletion
 * moves the mirror aside to MIRROR_DIR/.del-... first, so the name is free
 * at once.  Names starting with "." are never repositories.
 *
 * The layout before owners existed, MIRROR_DIR/NAME.git, is moved to
 * shared/ at start (those mirrors were visible to every sandbox).
 *
 * Mirrors are shared by clones in sandboxes through objects/info/alternates,
 * so nothing here ever prunes objects: gc is off in every mirror.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "gitd.h"

static int		   mirror_fd = -1;
static atomic_uint aside_counter;

/* What every git command that writes into a mirror gets: no gc, no maintenance. */
#define NO_GC "-c", "gc.auto=0", "-c", "gc.pruneExpire=never", "-c", "maintenance.auto=false"

char *
mirror_path(const char *dir, const char *name)
{
	return xasprintf("%s/%s/%s.git", cfg.mirror_dir, dir, name);
}

/* Move MIRROR_DIR/NAME.git of the flat layout to shared/NAME.git. */
static void
migrate_flat(const char *entry)
{
	size_t				   n = strlen(entry);
	_cleanup_(freep) char *name = n > 4 ? strndup(entry, n - 4) : NULL;
	_cleanup_(freep) char *to = NULL;
	struct stat			   st;

	if (n <= 4 || strcmp(entry + n - 4, ".git") != 0 ||
		fstatat(mirror_fd, entry, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode))
		return;
	if (!name || !repo_name_valid(name) || !(to = xasprintf("%s/%s", MIRROR_SHARED, entry)))
	{
		log_warning("%s/%s: not a mirror name; left where it is", cfg.mirror_dir, entry);
		return;
	}
	if (fstatat(mirror_fd, to, &st, AT_SYMLINK_NOFOLLOW) == 0)
	{
		log_warning(
			"%s/%s: %s/%s exists already; the old mirror is left where it is (no sandbox sees it)",
			cfg.mirror_dir, entry, cfg.mirror_dir, to);
		return;
	}
	if (renameat(mirror_fd, entry, mirror_fd, to) < 0)
		log_error("cannot move %s/%s to %s/%s: %m", cfg.mirror_dir, entry, cfg.mirror_dir, to);
	else
		log_notice("moved %s/%s to %s/%s (shared with every tenant, as before)", cfg.mirror_dir,
				   entry, cfg.mirror_dir, to);
}

static bool
is_leftover(const char *n)
{
	return strncmp(n, ".tmp-", 5) == 0 || strncmp(n, ".del-", 5) == 0 ||
		   strncmp(n, "." GITD_REGISTRY ".tmp", strlen(GITD_REGISTRY) + 5) == 0;
}

int
mirror_init(void)
{
	struct stat	   st;
	DIR			  *d;
	struct dirent *de;
	int			   fd, r;

	if (mkdir(cfg.mirror_dir, 0755) < 0 && errno != EEXIST)
	{
		log_error("cannot create %s: %m", cfg.mirror_dir);
		return -errno;
	}
	mirror_fd = open(cfg.mirror_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (mirror_fd < 0)
	{
		log_error("cannot open %s: %m", cfg.mirror_dir);
		return -errno;
	}
	r = mirror_owner_dir_ensure(mirror_fd, MIRROR_OWNER_SHARED);
	if (r < 0)
	{
		errno = -r;
		log_error("cannot create %s/%s: %m", cfg.mirror_dir, MIRROR_SHARED);
		return r;
	}
	if (fstatat(mirror_fd, MIRROR_SHARED, &st, 0) == 0 && (st.st_mode & 0005) != 0005)
		log_warning(
			"%s/%s is not readable and searchable by others (mode %03o): sandboxes will not "
			"be able to clone from it",
			cfg.mirror_dir, MIRROR_SHARED, (unsigned) (st.st_mode & 0777));
	/* A crash may leave a temporary clone or a half-deleted mirror: both go. */
	fd = dup(mirror_fd);
	d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d)
	{
		if (fd >= 0)
			close(fd);
		return -errno;
	}
	while ((de = readdir(d)))
		if (is_leftover(de->d_name))
		{
			log_notice("removing leftover %s/%s", cfg.mirror_dir, de->d_name);
			rm_rf_at(mirror_fd, de->d_name);
		}
		else if (de->d_name[0] != '.')
			migrate_flat(de->d_name);
	closedir(d);
	return 0;
}

bool
mirror_exists(const char *owner_dir, const char *name, time_t *mtime)
{
	_cleanup_(freep) char *dir = xasprintf("%s/%s.git", owner_dir, name);
	_cleanup_(freep) char *head = xasprintf("%s/%s.git/HEAD", owner_dir, name);
	_cleanup_(freep) char *objects = xasprintf("%s/%s.git/objects", owner_dir, name);
	struct stat			   st, hs, os;

	if (!dir || !head || !objects)
		return false;
	if (fstatat(mirror_fd, dir, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode) ||
		fstatat(mirror_fd, head, &hs, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(hs.st_mode) ||
		fstatat(mirror_fd, objects, &os, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(os.st_mode))
		return false;
	if (mtime)
		*mtime = st.st_mtime;
	return true;
}

/* Move path (below MIRROR_DIR) out of the way to MIRROR_DIR/.del-NAME-...; returns that name. */
static char *
move_aside(const char *path, const char *name)
{
	char *aside =
		xasprintf(".del-%s-%d-%u", name, (int) getpid(), atomic_fetch_add(&aside_counter, 1));

	if (!aside)
		return NULL;
	if (renameat(mirror_fd, path, mirror_fd, aside) < 0)
	{
		int saved = errno;
		free(aside);
		errno = saved;
		return NULL;
	}
	return aside;
}

/* Turn a failed git run into the message callers see. */
static char *
describe_failure(const char *what, const struct git_result *res)
{
	if (res->cancelled)
		return xasprintf("%s interrupted: the daemon is stopping", what);
	if (res->timed_out)
		return xasprintf("%s timed out after %llu ms and was killed%s%s", what,
						 (unsigned long long) cfg.fetch_timeout_ms, *res->err ? ": " : "",
						 res->err);
	if (*res->err)
		return strdup(res->err);
	if (res->exit_status < 0)
		return xasprintf("%s was killed by signal %d", what, res->signal);
	return xasprintf("%s exited with status %d", what, res->exit_status);
}

/* Run git; 0 when it exited 0, else -EIO with *err describing it. */
static int
run_git(const char *what, const char *const *args, char **err)
{
	struct git_result res;
	int				  r = git_run(args, cfg.fetch_timeout_ms, 0, &res);

	if (r < 0)
	{
		*err = r == -ECANCELED
				   ? xasprintf("%s not started: the daemon is stopping", what)
				   : xasprintf("cannot run %s (%s): %s", what, cfg.git_path, strerror(-r));
		return r == -ECANCELED ? r : -EIO;
	}
	if (res.exit_status == 0 && !res.timed_out && !res.cancelled)
	{
		git_result_done(&res);
		return 0;
	}
	*err = describe_failure(what, &res);
	r = res.cancelled ? -ECANCELED : -EIO;
	git_result_done(&res);
	return r;
}

int
mirror_clone(const char *owner, const char *owner_dir, const char *name, const char *url,
			 char **err)
{
	_cleanup_(freep) char *tmp = xasprintf("%s/.tmp-%s-XXXXXX", cfg.mirror_dir, name);
	_cleanup_(freep) char *final = xasprintf("%s/%s.git", owner_dir, name);
	const char			  *base;
	int					   r;

	*err = NULL;
	if (!tmp || !final)
		return -ENOMEM;
	r = mirror_owner_dir_ensure(mirror_fd, owner);
	if (r < 0)
	{
		*err = xasprintf("cannot create %s/%s: %s", cfg.mirror_dir, owner_dir, strerror(-r));
		return r;
	}
	if (!mkdtemp(tmp))
	{
		r = -errno;
		*err = xasprintf("cannot create a temporary directory in %s: %s", cfg.mirror_dir,
						 strerror(errno));
		return r;
	}
	base = strrchr(tmp, '/') + 1;
	const char *args[] = {"clone",		 "--mirror", "--no-local", "--quiet",
						  "--template=", NO_GC,		 "-c",		   "core.logAllRefUpdates=false",
						  "--",			 url,		 tmp,		   NULL};
	r = run_git("git clone", args, err);
	if (r == 0 && fchmodat(mirror_fd, base, 0755, 0) < 0)
	{
		r = -errno;
		*err = xasprintf("cannot make %s readable: %s", tmp, strerror(errno));
	}
	if (r == 0 && renameat(mirror_fd, base, mirror_fd, final) < 0)
	{
		/* Something that is not a mirror holds the name: it goes. */
		_cleanup_(freep) char *aside =
			(errno == EEXIST || errno == ENOTEMPTY) ? move_aside(final, name) : NULL;
		if (aside)
			rm_rf_at(mirror_fd, aside);
		if (!aside || renameat(mirror_fd, base, mirror_fd, final) < 0)
		{
			r = -errno;
			*err = xasprintf("cannot move the new mirror into place: %s", strerror(errno));
		}
	}
	if (r < 0)
	{
		rm_rf_at(mirror_fd, base);
		return r;
	}
	(void) fsync(mirror_fd);
	return 0;
}

int
mirror_fetch(const char *owner_dir, const char *name, const char *url, char **err)
{
	_cleanup_(freep) char *path = mirror_path(owner_dir, name);
	_cleanup_(freep) char *dir = xasprintf("%s/%s.git", owner_dir, name);
	int					   r;

	*err = NULL;
	if (!path || !dir)
		return -ENOMEM;
	/* The URL given here rather than the mirror's own: the registry says where it comes from. */
	const char *args[] = {"-C",
						  path,
						  NO_GC,
						  "fetch",
						  "--quiet",
						  "--prune",
						  "--atomic",
						  "--no-write-fetch-head",
						  "--no-auto-gc",
						  "--",
						  url,
						  "+refs/*:refs/*",
						  NULL};
	r = run_git("git fetch", args, err);
	if (r == 0)
		utimensat(mirror_fd, dir, NULL, 0); /* the mirror's mtime is its last good fetch */
	return r;
}

int
mirror_inspect(const char *owner_dir, const char *name, struct mirror_info *info)
{
	_cleanup_(freep) char *path = mirror_path(owner_dir, name);
	struct git_result	   res;
	const char			  *args[] = {"-C", path, "show-ref", "--head", NULL};
	int					   r;

	memset(info, 0, sizeof *info);
	if (!path)
		return -ENOMEM;
	r = git_run(args, 60000, 256, &res);
	if (r < 0)
		return r;
	/* Exit status 1 with no output: no refs at all (an empty repository). */
	if (res.exit_status != 0 && !(res.exit_status == 1 && res.out_lines == 0))
	{
		log_warning("%s: git show-ref failed: %s", name, res.err);
		git_result_done(&res);
		return -EIO;
	}
	info->refs = res.out_lines;
	char *sp = strchr(res.out, ' ');
	if (sp && strncmp(sp, " HEAD\n", 6) == 0 && (size_t) (sp - res.out) < sizeof info->head)
	{
		memcpy(info->head, res.out, (size_t) (sp - res.out));
		info->head[sp - res.out] = '\0';
		info->refs--;
	}
	git_result_done(&res);
	return 0;
}

int
mirror_dirfd(void)
{
	return mirror_fd;
}

char *
mirror_detach(const char *owner_dir, const char *name)
{
	_cleanup_(freep) char *dir = xasprintf("%s/%s.git", owner_dir, name);

	if (!dir)
	{
		errno = ENOMEM;
		return NULL;
	}
	return move_aside(dir, name);
}

int
mirror_purge(const char *aside)
{
	return rm_rf_at(mirror_fd, aside);
}
