/*
 * sandbox.c — the registry of sandboxes and their lifecycle: create (a
 * snapshot plus a metadata file), destroy (stop the container, delete the
 * subvolumes, then the metadata), and recovery at start, which adopts every
 * sandbox whose metadata and subvolume survived a crash and removes what a
 * crash left half made.  Metadata is written before the snapshot and marked
 * "active" after it, so a crash at any point leaves something recognisable.
 *
 * Egress: with proxy_dir set, every live sandbox has a directory
 * PROXY_DIR/<id>/ (root, 0755) in which nadi-credproxy binds its socket;
 * it is made at create and adoption and removed with the sandbox.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "limits.h"
#include "sandbox.h"
#include "btrfs_store.h"
#include "workspace.h"

struct sbx_sandbox *sandboxes;
void				main_kick(void);

const char *
ct_state_name(enum ct_state s)
{
	switch (s)
	{
		case CT_STOPPED:
			return "stopped";
		case CT_STARTING:
			return "starting";
		case CT_IDLE:
			return "idle";
		case CT_BUSY:
			return "busy";
		case CT_STOPPING:
			return "stopping";
	}
	return "?";
}

struct sbx_sandbox *
sandbox_find(const char *id)
{
	for (struct sbx_sandbox *sb = sandboxes; sb; sb = sb->next)
		if (strcmp(sb->id, id) == 0)
			return sb;
	return NULL;
}

struct sbx_sandbox *
sandbox_find_session(const char *session_id)
{
	for (struct sbx_sandbox *sb = sandboxes; sb; sb = sb->next)
		if (strcmp(sb->session_id, session_id) == 0 && !sb->destroying)
			return sb;
	return NULL;
}

size_t
sandbox_count(void)
{
	size_t n = 0;

	for (struct sbx_sandbox *sb = sandboxes; sb; sb = sb->next)
		n++;
	return n;
}

json_t *
sandbox_json(const struct sbx_sandbox *sb)
{
	char	created[32];
	char  **snaps = store_snapshot_list(sb->id);
	json_t *js = json_array();

	for (char **s = snaps; s && *s; s++)
		json_array_append_new(js, json_string(*s));
	store_strv_free(snaps);
	iso8601(sb->created_at, created);
	return json_pack("{s:s, s:s, s:o, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:o, s:s, s:b, s:b}", "id",
					 sb->id, "session_id", sb->session_id, "tenant",
					 sb->tenant[0] ? json_string(sb->tenant) : json_null(), "image", sb->image,
					 "state", sb->destroying ? "destroying" : "active", "container",
					 ct_state_name(sb->ct.state), "created_at", created, "calls",
					 (json_int_t) sb->calls, "cold_starts", (json_int_t) sb->cold_starts, "queued",
					 (json_int_t) (sb->q_len + (sb->current ? 1 : 0)), "snapshots", js, "workspace",
					 "/" SBX_WORKSPACE, "proxy", cfg.proxy_dir != NULL, "git_mirrors",
					 cfg.git_mirror_dir != NULL);
}

/* ---- egress ------------------------------------------------------------------ */

/*
 * Make PROXY_DIR/<id>/ a real directory owned by proxy_user, mode 0755,
 * whatever was there.  PROXY_DIR and the directories above it are root's
 * and written by root only (checked at start, PROXY_DIR again here), so no
 * other user can swap a name under us; still, every step goes through
 * descriptors and never follows a symbolic link.
 */
/*
 * PROXY_DIR opened without following a link, still root's and written by
 * root only (as checked at start); a descriptor, or -errno.
 */
static int
proxy_dir_open(void)
{
	struct stat st;
	int			dfd = open(cfg.proxy_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

	if (dfd < 0)
		return -errno;
	if (fstat(dfd, &st) < 0 || st.st_uid != 0 || (st.st_mode & (S_IWGRP | S_IWOTH)))
	{
		close(dfd);
		log_error("%s is no longer a directory of root's that only root writes: leaving it alone",
				  cfg.proxy_dir);
		return -EPERM;
	}
	return dfd;
}

int
sandbox_proxy_prepare(const char *id)
{
	_cleanup_(closep) int dfd = -1;
	_cleanup_(closep) int fd = -1;
	struct stat			  st;
	char				  tmp[NAME_MAX + 1];
	int					  r;

	if (!cfg.proxy_dir)
		return 0;
	if ((dfd = proxy_dir_open()) < 0)
		return dfd;
	fd = openat(dfd, id, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd >= 0 && fstat(fd, &st) == 0 && st.st_uid == cfg.proxy_uid)
		/* Against a directory left with other modes. */
		return fchmod(fd, 0755) < 0 ? -errno : 0;
	if (fd >= 0 || errno != ENOENT)
	{
		log_warning("sandbox %s: replacing %s/%s, which is not a directory of the proxy user", id,
					cfg.proxy_dir, id);
		rm_rf_at(dfd, id);
	}
	closep(&fd);
	/*
	 * Made under a name that is no sandbox id, handed over, then renamed:
	 * the proxy, watching proxy_dir, sees it only once it may write there.
	 */
	snprintf(tmp, sizeof tmp, ".tmp-%s", id);
	rm_rf_at(dfd, tmp);
	if (mkdirat(dfd, tmp, 0700) < 0)
		return -errno;
	fd = openat(dfd, tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 || fchown(fd, cfg.proxy_uid, cfg.proxy_gid) < 0 ||
		fchmod(fd, 0755) < 0 || /* against the umask */
		renameat(dfd, tmp, dfd, id) < 0)
	{
		r = -errno;
		rm_rf_at(dfd, tmp);
		return r;
	}
	return 0;
}

/* Remove PROXY_DIR/<id>/ and the socket in it; a missing one is fine. */
static void
proxy_remove(const char *id)
{
	_cleanup_(closep) int dfd = -1;
	int					  r;

	if (!cfg.proxy_dir)
		return;
	dfd = proxy_dir_open();
	r = dfd < 0 ? dfd : rm_rf_at(dfd, id);
	if (r < 0)
	{
		errno = -r;
		log_warning("sandbox %s: cannot remove %s/%s: %m", id, cfg.proxy_dir, id);
	}
}

/* At start: remove proxy directories of sandboxes that no longer exist. */
static void
proxy_sweep(void)
{
	int			   dfd = cfg.proxy_dir ? proxy_dir_open() : -1;
	DIR			  *d = dfd >= 0 ? fdopendir(dfd) : NULL;
	struct dirent *de;

	if (!d)
	{
		if (dfd >= 0)
			close(dfd);
		return;
	}
	while ((de = readdir(d)))
	{
		size_t n = strspn(de->d_name, "0123456789abcdef");
		if (strncmp(de->d_name, ".tmp-", 5) == 0) /* a prepare cut short */
		{
			rm_rf_at(dirfd(d), de->d_name);
			continue;
		}
		if (n != SBX_ID_LEN || de->d_name[n] || sandbox_find(de->d_name))
			continue;
		log_notice("removing proxy directory %s/%s of a sandbox that is gone", cfg.proxy_dir,
				   de->d_name);
		rm_rf_at(dirfd(d), de->d_name);
	}
	closedir(d);
}

/*
 * git 2.39 honours safe.directory only from system or global configuration;
 * git_clone points GIT_CONFIG_GLOBAL at this file (bound read-only at
 * SBX_GITCONFIG) so that the sandbox user may clone the mirrors, which
 * belong to nadi-gitd's user.
 */
static int
gitconfig_write(void)
{
	static const char text[] = "# written by nadi-sandboxd for the git_clone tool\n"
							   "[safe]\n\tdirectory = *\n[protocol \"file\"]\n\tallow = always\n";
	int				  r;

	if (!cfg.git_mirror_dir)
		return 0;
	r = write_file_atomic(store_root_fd(), SBX_GITCONFIG_HOST, text, sizeof text - 1, 0600);
	if (r == 0 && fchmodat(store_root_fd(), SBX_GITCONFIG_HOST, 0644, 0) < 0)
		r = -errno;
	if (r < 0)
	{
		errno = -r;
		log_error("cannot write %s/%s: %m", store_root(), SBX_GITCONFIG_HOST);
	}
	return r;
}

static int
meta_write(const struct sbx_sandbox *sb, const char *state)
{
	_cleanup_(freep) char *rel = xasprintf("meta/%s.json", sb->id);
	_cleanup_(freep) char *text = NULL;
	json_t				  *j;
	int					   r;

	if (!rel)
		return -ENOMEM;
	j = json_pack("{s:s, s:s, s:s, s:s, s:I, s:s}", "id", sb->id, "session_id", sb->session_id,
				  "tenant", sb->tenant, "image", sb->image, "created_at",
				  (json_int_t) sb->created_at, "state", state);
	if (!j)
		return -ENOMEM;
	text = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	if (!text)
		return -ENOMEM;
	r = write_file_atomic(store_root_fd(), rel, text, strlen(text), 0600);
	if (r < 0)
	{
		errno = -r;
		log_error("cannot write metadata of sandbox %s: %m", sb->id);
	}
	return r;
}

static void
meta_remove(const char *id)
{
	_cleanup_(freep) char *rel = xasprintf("meta/%s.json", id);

	if (rel && unlinkat(store_root_fd(), rel, 0) < 0 && errno != ENOENT)
		log_warning("cannot remove metadata of sandbox %s: %m", id);
}

static struct sbx_sandbox *
sandbox_new(const char *id, const char *session_id, const char *tenant, const char *image,
			time_t created)
{
	struct sbx_sandbox *sb = calloc(1, sizeof *sb);

	if (!sb)
		return NULL;
	snprintf(sb->id, sizeof sb->id, "%s", id);
	snprintf(sb->session_id, sizeof sb->session_id, "%s", session_id);
	snprintf(sb->tenant, sizeof sb->tenant, "%s", tenant ? tenant : "");
	snprintf(sb->image, sizeof sb->image, "%s", image);
	sb->created_at = created;
	sb->ct.state = CT_STOPPED;
	sb->ct.pidfd = sb->ct.ctl_r = sb->ct.ctl_w = sb->ct.log_r = sb->ct.go_w = -1;
	return sb;
}

static void
link_sandbox(struct sbx_sandbox *sb)
{
	struct sbx_sandbox **pp = &sandboxes;

	while (*pp)
		pp = &(*pp)->next;
	*pp = sb;
}

static void
unlink_sandbox(struct sbx_sandbox *sb)
{
	for (struct sbx_sandbox **pp = &sandboxes; *pp; pp = &(*pp)->next)
		if (*pp == sb)
		{
			*pp = sb->next;
			return;
		}
}

static int
create_common(const char *session_id, const char *tenant, const char *image, const char *src,
			  struct sbx_sandbox **ret)
{
	char				id[SBX_ID_LEN + 1];
	struct sbx_sandbox *sb;
	uint64_t			t0 = now_us();
	int					r;

	r = random_hex(id, SBX_ID_LEN / 2);
	if (r < 0)
		return r;
	sb = sandbox_new(id, session_id, tenant, image, time(NULL));
	if (!sb)
		return -ENOMEM;
	r = meta_write(sb, "creating");
	if (r < 0)
		goto fail;
	r = src ? store_sandbox_from_subvolume(id, src, image) : store_sandbox_create(id, image);
	if (r < 0)
	{
		meta_remove(id);
		goto fail;
	}
	r = meta_write(sb, "active");
	if (r < 0)
	{
		store_sandbox_delete(id);
		meta_remove(id);
		goto fail;
	}
	link_sandbox(sb);
	ws_created(sb);
	r = sandbox_proxy_prepare(id);
	if (r < 0)
	{
		/* The container start tries again, and fails the call if it cannot. */
		errno = -r;
		log_error("sandbox %s: cannot make its proxy directory in %s: %m", id, cfg.proxy_dir);
	}
	log_info("sandbox %s created for session %s from %s%s in %llu us", id, session_id,
			 src ? "snapshot " : "image ", src ? src : image, (unsigned long long) (now_us() - t0));
	*ret = sb;
	return 0;
fail:
	free(sb);
	return r;
}

/* ---- warm pool entries (pool.c) ---------------------------------------------- */

struct sbx_sandbox *
sandbox_pool_begin(const char *image)
{
	char				id[SBX_ID_LEN + 1];
	struct sbx_sandbox *sb;

	if (random_hex(id, SBX_ID_LEN / 2) < 0 || !(sb = sandbox_new(id, "", NULL, image, time(NULL))))
		return NULL;
	sb->pooled = true;
	if (meta_write(sb, "creating") < 0)
	{
		free(sb);
		return NULL;
	}
	return sb;
}

int
sandbox_pool_commit(struct sbx_sandbox *sb)
{
	int r = meta_write(sb, "pool");

	if (r < 0)
	{
		sandbox_pool_abort(sb);
		return r;
	}
	link_sandbox(sb);
	/*
	 * ws-0 now, off a session's path: an entry's files do not change while
	 * it waits (its container only idles), so this is its workspace when a
	 * session takes it.
	 */
	ws_created(sb);
	r = sandbox_proxy_prepare(sb->id);
	if (r < 0)
	{
		/* The container start tries again, and fails if it cannot. */
		errno = -r;
		log_error("sandbox %s: cannot make its proxy directory in %s: %m", sb->id, cfg.proxy_dir);
	}
	log_info("sandbox %s made for the warm pool of image %s", sb->id, sb->image);
	return 0;
}

void
sandbox_pool_abort(struct sbx_sandbox *sb)
{
	store_sandbox_delete(sb->id);
	meta_remove(sb->id);
	free(sb);
}

int
sandbox_pool_assign(struct sbx_sandbox *sb, const char *session_id, const char *tenant)
{
	time_t created = sb->created_at;
	int	   r;

	snprintf(sb->session_id, sizeof sb->session_id, "%s", session_id);
	snprintf(sb->tenant, sizeof sb->tenant, "%s", tenant ? tenant : "");
	sb->created_at = time(NULL);
	/* The one step that makes it the session's: a restart before it removes the entry. */
	r = meta_write(sb, "active");
	if (r < 0)
	{
		sb->session_id[0] = sb->tenant[0] = '\0';
		sb->created_at = created;
		return r;
	}
	sb->pooled = false;
	/*
	 * Whatever create_common does for a new session's sandbox beyond the
	 * snapshot and its metadata belongs here too: an entry becomes a
	 * session's sandbox here, not there (its ws-0 was taken when it was
	 * made, sandbox_pool_commit).
	 */
	return 0;
}

/* A tenant is what a mirror may be owned by. */
_Static_assert(SBX_TENANT_MAX == MIRROR_OWNER_MAX, "a tenant is a mirror owner");
bool
tenant_valid(const char *s)
{
	return mirror_owner_valid(s);
}

int
sandbox_set_tenant(struct sbx_sandbox *sb, const char *tenant)
{
	char old[sizeof sb->tenant];
	int	 r;

	snprintf(old, sizeof old, "%s", sb->tenant);
	snprintf(sb->tenant, sizeof sb->tenant, "%s", tenant);
	r = meta_write(sb, "active");
	if (r < 0)
		snprintf(sb->tenant, sizeof sb->tenant, "%s", old);
	return r;
}

int
sandbox_create(const char *session_id, const char *tenant, const char *image,
			   struct sbx_sandbox **ret)
{
	int r = store_image_exists(image);

	if (r < 0)
		return r;
	if (r == 0)
		return -ENOENT;
	return create_common(session_id, tenant, image, NULL, ret);
}

int
sandbox_create_from(const char *session_id, const char *tenant, const char *image, const char *src,
					struct sbx_sandbox **ret)
{
	return create_common(session_id, tenant, image, src, ret);
}

static void
finish_destroy(struct sbx_sandbox *sb)
{
	sandbox_destroy_cb cb = sb->destroy_cb;
	void			  *ud = sb->destroy_ud;
	int				   r;

	proxy_remove(sb->id); /* no way out for a sandbox being deleted, whatever happens next */
	r = store_sandbox_delete(sb->id);
	if (r < 0)
	{
		/* Keep the metadata ("destroying"): the next start tries again. */
		errno = -r;
		log_error("sandbox %s: cannot delete its subvolumes: %m", sb->id);
	}
	else
	{
		meta_remove(sb->id);
		limits_release(sb->id);
		log_info("sandbox %s destroyed", sb->id);
	}
	unlink_sandbox(sb);
	free(sb);
	if (cb)
		cb(ud, r);
	main_kick();
}

int
sandbox_destroy(struct sbx_sandbox *sb, sandbox_destroy_cb cb, void *ud)
{
	if (sb->destroying)
		return -EALREADY;
	if (sb->ops > 0)
		return -EBUSY;
	sb->destroying = true;
	sb->destroy_cb = cb;
	sb->destroy_ud = ud;
	meta_write(sb, "destroying");
	run_cancel_queue(sb);
	if (sb->ct.state == CT_STOPPED)
	{
		finish_destroy(sb);
		return 0;
	}
	run_stop(sb, true, "sandbox destroyed");
	return 0;
}

void
sandbox_on_stopped(struct sbx_sandbox *sb)
{
	if (sb->destroying)
		finish_destroy(sb);
	else if (sb->pooled) /* an entry is warm or nothing: the pool makes another */
		sandbox_destroy(sb, NULL, NULL);
	else
		ws_on_stopped(sb);
}

/* ---- recovery -------------------------------------------------------------- */

static void
adopt(const char *file)
{
	_cleanup_(freep) char *text = NULL;
	const char			  *id, *session, *image, *state, *tenant = "";
	json_int_t			   created = 0;
	json_error_t		   err;
	json_t				  *j;

	if (read_full_file(store_root_fd(), file, &text, NULL, 65536) < 0)
		return;
	j = json_loads(text, 0, &err);
	if (!j ||
		json_unpack(j, "{s:s, s:s, s?s, s:s, s?I, s:s}", "id", &id, "session_id", &session,
					"tenant", &tenant, "image", &image, "created_at", &created, "state",
					&state) < 0 ||
		!id_valid(id, SBX_ID_LEN) || strlen(session) > SBX_SESSION_MAX ||
		strlen(image) > SBX_IMAGE_MAX || (tenant[0] && !tenant_valid(tenant)))
	{
		log_warning("ignoring unreadable sandbox metadata %s/%s", store_root(), file);
		json_decref(j);
		return;
	}
	if (strcmp(state, "active") != 0)
	{
		if (strcmp(state, "pool") == 0) /* never taken: its container died with the daemon */
			log_notice("removing warm pool entry %s of the previous run", id);
		else
			log_notice("sandbox %s was %s when the daemon stopped; removing it", id, state);
		store_sandbox_delete(id);
		meta_remove(id);
	}
	else if (!store_sandbox_exists(id))
	{
		log_warning("sandbox %s has metadata but no subvolume; forgetting it", id);
		meta_remove(id);
	}
	else if (sandbox_find(id))
	{
		/* duplicate: cannot happen with random ids */
	}
	else
	{
		struct sbx_sandbox *sb = sandbox_new(id, session, tenant, image, (time_t) created);
		int					k = store_sandbox_quota(id, image);
		if (k < 0)
		{
			errno = -k;
			log_warning("sandbox %s: cannot set its disk quota: %m", id);
		}
		if (sb)
		{
			link_sandbox(sb);
			ws_adopted(sb);
			log_info("adopted sandbox %s (session %s)", id, session);
			if ((k = sandbox_proxy_prepare(id)) < 0)
			{
				errno = -k;
				log_error("sandbox %s: cannot make its proxy directory in %s: %m", id,
						  cfg.proxy_dir);
			}
		}
	}
	json_decref(j);
}

/* Remove every entry of dir below the store root (subvolumes included). */
static void
clear_dir(const char *rel)
{
	_cleanup_(freep) char *path = xasprintf("%s/%s", store_root(), rel);
	DIR					  *d = path ? opendir(path) : NULL;
	struct dirent		  *de;

	if (!d)
		return;
	while ((de = readdir(d)))
	{
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		_cleanup_(freep) char *p = xasprintf("%s/%s", path, de->d_name);
		if (!p)
			continue;
		log_notice("removing %s left by a previous run", p);
		/* A restore target holds one received subvolume per directory. */
		store_remove_dir(p);
	}
	closedir(d);
}

static void
remove_partial_objects(void)
{
	DIR			  *d = opendir(cfg.object_dir);
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d)))
	{
		size_t n = strlen(de->d_name);
		if (n > 5 && strcmp(de->d_name + n - 5, ".part") == 0)
		{
			log_notice("removing partial export %s/%s", cfg.object_dir, de->d_name);
			unlinkat(dirfd(d), de->d_name, 0);
		}
	}
	closedir(d);
}

int
sandbox_init(void)
{
	_cleanup_(freep) char *meta = xasprintf("%s/meta", store_root());
	DIR					  *d;
	struct dirent		  *de;
	char				 **ids;
	size_t				   n;

	run_kill_orphans();
	limits_cleanup_leftovers();
	clear_dir("incoming");
	remove_partial_objects();

	d = meta ? opendir(meta) : NULL;
	if (!d)
		return -errno;
	while ((de = readdir(d)))
	{
		size_t len = strlen(de->d_name);
		if (len > 5 && strcmp(de->d_name + len - 5, ".json") == 0)
		{
			_cleanup_(freep) char *rel = xasprintf("meta/%s", de->d_name);
			if (rel)
				adopt(rel);
		}
	}
	closedir(d);

	ids = store_sandbox_list();
	for (char **id = ids; id && *id; id++)
		if (!sandbox_find(*id))
		{
			log_notice("removing sandbox subvolume %s without metadata (a crash during create)",
					   *id);
			store_sandbox_delete(*id);
		}
	store_strv_free(ids);
	proxy_sweep();
	if (gitconfig_write() < 0)
		return -EIO;
	n = sandbox_count();
	if (n)
		log_notice("recovered %zu sandbox%s from a previous run", n, n == 1 ? "" : "es");
	return 0;
}

void
sandbox_free_all(void)
{
	while (sandboxes)
	{
		struct sbx_sandbox *sb = sandboxes;
		sandboxes = sb->next;
		free(sb);
	}
}
