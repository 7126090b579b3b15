/*
 * export.c — moving a sandbox's workspace between hosts: export writes a
 * read-only snapshot as a `btrfs send` stream into the object-store
 * directory (NAME.btrfs plus NAME.json describing it); restore runs
 * `btrfs receive --chroot` into a scratch directory and makes a new sandbox
 * from the received subvolume.  Both run as helper processes off the event
 * loop; a stream is only visible under its final name once complete.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "child.h"
#include "export.h"
#include "http.h"
#include "sandbox.h"
#include "btrfs_store.h"
#include "workspace.h"

struct export_ctx
{
	struct http_req	   *req;
	struct sbx_sandbox *sb;
	char				object[SBX_ID_LEN + 80];
	char				snapshot[72];
	char			   *part, *final, *meta;
};

struct restore_ctx
{
	struct http_req *req;
	char			 object[SBX_ID_LEN + 80];
	char			 session_id[SBX_SESSION_MAX + 1];
	char			 tenant[SBX_TENANT_MAX + 1];
	char			 image[SBX_IMAGE_MAX + 1];
	char			*dir; /* incoming/TMP */
};

static void
export_free(struct export_ctx *x)
{
	free(x->part);
	free(x->final);
	free(x->meta);
	free(x);
}

static void
export_done(void *ud, int status, const char *err)
{
	struct export_ctx *x = ud;
	struct stat		   st;
	char			   created[32];
	json_t			  *meta;
	char			  *text;
	int				   fd;

	x->sb->ops--;
	if (status != 0)
	{
		unlink(x->part);
		http_reply_problem(x->req, 500, "export_failed", "btrfs send of %s failed: %s", x->snapshot,
						   *err ? err : "unknown error");
		export_free(x);
		return;
	}
	fd = open(x->part, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) < 0 || fstat(fd, &st) < 0 || rename(x->part, x->final) < 0)
	{
		int e = errno;
		if (fd >= 0)
			close(fd);
		unlink(x->part);
		http_reply_problem(x->req, 500, "export_failed", "cannot store %s: %s", x->final,
						   strerror(e));
		export_free(x);
		return;
	}
	close(fd);
	iso8601(time(NULL), created);
	meta = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:s, s:s}", "object", x->object,
					 "sandbox_id", x->sb->id, "session_id", x->sb->session_id, "tenant",
					 x->sb->tenant, "image", x->sb->image, "snapshot", x->snapshot, "bytes",
					 (json_int_t) st.st_size, "created_at", created, "host_id", cfg.host_id);
	text = meta ? json_dumps(meta, JSON_COMPACT) : NULL;
	if (!text || write_file_atomic(AT_FDCWD, x->meta, text, strlen(text), 0600) < 0)
		log_warning("cannot write %s", x->meta);
	free(text);
	log_info("sandbox %s: exported snapshot %s as %s (%lld bytes)", x->sb->id, x->snapshot,
			 x->object, (long long) st.st_size);
	http_reply_json(x->req, 201, meta);
	export_free(x);
}

void
export_snapshot(struct http_req *r, struct sbx_sandbox *sb, const char *snapshot)
{
	struct export_ctx	  *x;
	_cleanup_(freep) char *snap_path = NULL;
	int					   fd, k;

	if (snapshot && !id_valid(snapshot, 64))
	{
		http_reply_problem(r, 400, "invalid_args",
						   "\"snapshot\" must be a name of letters, digits, '.', '_' or '-'");
		return;
	}
	x = http_calloc(r, sizeof *x);
	if (!x)
		return;
	x->req = r;
	x->sb = sb;
	if (snapshot)
		snprintf(x->snapshot, sizeof x->snapshot, "%s", snapshot);
	else
	{
		char rnd[9];
		random_hex(rnd, 4);
		snprintf(x->snapshot, sizeof x->snapshot, "export-%lld-%s", (long long) time(NULL), rnd);
		k = store_snapshot_create(sb->id, x->snapshot);
		if (k < 0)
		{
			http_reply_errno(r, k, "snapshot");
			export_free(x);
			return;
		}
	}
	snap_path = store_snapshot_path(sb->id, x->snapshot);
	if (!snap_path || access(snap_path, F_OK) < 0)
	{
		ws_reply_no_snapshot(r, sb->id, x->snapshot);
		export_free(x);
		return;
	}
	snprintf(x->object, sizeof x->object, "%s-%s", sb->id, x->snapshot);
	x->part = xasprintf("%s/%s.btrfs.part", cfg.object_dir, x->object);
	x->final = xasprintf("%s/%s.btrfs", cfg.object_dir, x->object);
	x->meta = xasprintf("%s/%s.json", cfg.object_dir, x->object);
	if (!x->part || !x->final || !x->meta)
	{
		http_reply_problem(r, 500, "internal", "out of memory");
		export_free(x);
		return;
	}
	if (access(x->final, F_OK) == 0)
	{
		http_reply_problem(r, 409, "object_exists", "object %s already exists", x->object);
		export_free(x);
		return;
	}
	fd = open(x->part, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
	{
		http_reply_problem(r, 500, "export_failed", "cannot create %s: %m", x->part);
		export_free(x);
		return;
	}
	k = child_spawn((const char *[]){cfg.btrfs_path, "send", "-q", snap_path, NULL}, fd,
					export_done, x);
	close(fd);
	if (k < 0)
	{
		unlink(x->part);
		http_reply_problem(r, 500, "export_failed", "cannot run %s: %s", cfg.btrfs_path,
						   strerror(-k));
		export_free(x);
		return;
	}
	sb->ops++;
}

static void
restore_free(struct restore_ctx *x)
{
	if (x->dir)
		store_remove_dir(x->dir);
	free(x->dir);
	free(x);
}

static void
restore_done(void *ud, int status, const char *err)
{
	struct restore_ctx	  *x = ud;
	struct sbx_sandbox	  *sb;
	_cleanup_(freep) char *received = NULL;
	DIR					  *d;
	struct dirent		  *de;
	int					   k;

	if (status != 0)
	{
		http_reply_problem(x->req, 422, "restore_failed", "btrfs receive of %s failed: %s",
						   x->object, *err ? err : "unknown error");
		restore_free(x);
		return;
	}
	d = opendir(x->dir);
	while (d && (de = readdir(d)))
		if (de->d_name[0] != '.' && !received)
			received = xasprintf("%s/%s", x->dir, de->d_name);
	if (d)
		closedir(d);
	if (!received)
	{
		http_reply_problem(x->req, 422, "restore_failed", "the stream %s held no subvolume",
						   x->object);
		restore_free(x);
		return;
	}
	if (sandbox_find_session(x->session_id))
	{
		http_reply_problem(x->req, 409, "session_has_sandbox",
						   "session %s already has a sandbox here", x->session_id);
		restore_free(x);
		return;
	}
	k = sandbox_create_from(x->session_id, x->tenant, x->image, received, &sb);
	if (k < 0)
	{
		http_reply_errno(x->req, k, "restore");
		restore_free(x);
		return;
	}
	log_info("sandbox %s restored from object %s", sb->id, x->object);
	http_reply_json(x->req, 201, sandbox_json(sb));
	restore_free(x);
}

void
restore_object(struct http_req *r, const char *object, const char *session_id)
{
	_cleanup_(freep) char *path = NULL, *meta_path = NULL, *meta_text = NULL;
	struct restore_ctx	  *x;
	json_t				  *meta = NULL;
	char				   tmp[17];
	int					   k;

	if (!id_valid(object, SBX_ID_LEN + 72))
	{
		http_reply_problem(r, 400, "invalid_args", "\"object\" is not a valid object name");
		return;
	}
	path = xasprintf("%s/%s.btrfs", cfg.object_dir, object);
	meta_path = xasprintf("%s/%s.json", cfg.object_dir, object);
	if (!path || !meta_path || access(path, R_OK) < 0)
	{
		http_reply_problem(r, 404, "object_not_found", "no object named %s in the object store",
						   object);
		return;
	}
	x = http_calloc(r, sizeof *x);
	if (!x)
		return;
	x->req = r;
	snprintf(x->object, sizeof x->object, "%s", object);
	snprintf(x->image, sizeof x->image, "restored");
	if (read_full_file(AT_FDCWD, meta_path, &meta_text, NULL, 65536) == 0 &&
		(meta = json_loads(meta_text, 0, NULL)))
	{
		const char *s = json_string_value(json_object_get(meta, "session_id"));
		const char *img = json_string_value(json_object_get(meta, "image"));
		const char *tenant = json_string_value(json_object_get(meta, "tenant"));
		if (tenant && tenant_valid(tenant))
			snprintf(x->tenant, sizeof x->tenant, "%s", tenant);
		if (s)
			snprintf(x->session_id, sizeof x->session_id, "%s", s);
		if (img)
			snprintf(x->image, sizeof x->image, "%s", img);
		json_decref(meta);
	}
	if (session_id)
		snprintf(x->session_id, sizeof x->session_id, "%s", session_id);
	if (!x->session_id[0])
	{
		http_reply_problem(r, 400, "invalid_args",
						   "\"session_id\" is required: the object does not name one");
		restore_free(x);
		return;
	}
	if (sandbox_find_session(x->session_id))
	{
		http_reply_problem(r, 409, "session_has_sandbox", "session %s already has a sandbox here",
						   x->session_id);
		restore_free(x);
		return;
	}
	random_hex(tmp, 8);
	x->dir = xasprintf("%s/incoming/%s", store_root(), tmp);
	if (!x->dir || mkdir(x->dir, 0700) < 0)
	{
		http_reply_problem(r, 500, "restore_failed", "cannot create a receive directory: %m");
		restore_free(x);
		return;
	}
	k = child_spawn(
		(const char *[]){cfg.btrfs_path, "receive", "-q", "--chroot", "-f", path, x->dir, NULL}, -1,
		restore_done, x);
	if (k < 0)
	{
		http_reply_problem(r, 500, "restore_failed", "cannot run %s: %s", cfg.btrfs_path,
						   strerror(-k));
		restore_free(x);
	}
}

json_t *
objects_json(void)
{
	DIR			  *d = opendir(cfg.object_dir);
	struct dirent *de;
	json_t		  *a = json_array();

	while (d && (de = readdir(d)))
	{
		size_t				   n = strlen(de->d_name);
		_cleanup_(freep) char *text = NULL;
		json_t				  *m;

		if (n < 6 || strcmp(de->d_name + n - 5, ".json") != 0)
			continue;
		if (read_full_file(dirfd(d), de->d_name, &text, NULL, 65536) < 0)
			continue;
		m = json_loads(text, 0, NULL);
		if (json_is_object(m))
			json_array_append_new(a, m);
		else
			json_decref(m);
	}
	if (d)
		closedir(d);
	return a;
}
