/*
 * workspace.c — the workspace's history (see workspace.h).
 *
 * After every tool call answered with a result the sandbox's call counter
 * goes up; after a call of a tool that may change the sandbox (the
 * side_effects of GET /v1/tools) the daemon asks BTRFS whether the
 * sandbox's subvolume holds anything written after the transaction of its
 * last snapshot (store_sandbox_changed_since: a tree search, no commit) and,
 * if so, takes the read-only snapshot snapshots/ID/ws-N.  A read-only call
 * never snapshots.  Every sandbox gets ws-0 when it is made.
 *
 * Retention, at each new ws snapshot: at most workspace_snapshots of them
 * (oldest removed first), none older than workspace_snapshot_age, and, with
 * disk_max, their exclusive data plus the sandbox's within disk_max (oldest
 * first again); the newest is always kept.  They go with the sandbox.
 *
 * Forks: a sandbox made "from" a snapshot is a writable snapshot of it when
 * the snapshot is here; when it is on another host, this daemon pulls the
 * snapshot's send stream from that host's daemon (its address from
 * nadi.sandbox_hosts, by host id, through pg.c; never from the client),
 * forwarding the caller's bearer token, and receives it.
 */
#include <btrfsutil.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "child.h"
#include "http.h"
#include "pg.h"
#include "pool.h"
#include "sandbox.h"
#include "btrfs_store.h"
#include "workspace.h"

static bool
is_subvolume(const char *p)
{
	return btrfs_util_is_subvolume(p) == BTRFS_UTIL_OK;
}

static struct ws_stats stats;

const struct ws_stats *
ws_get_stats(void)
{
	return &stats;
}

void
ws_reply_no_snapshot(struct http_req *r, const char *id, const char *name)
{
	http_reply_problem(r, 404, "snapshot_not_found", "sandbox %s has no snapshot \"%s\"", id, name);
}

bool
ws_snapshot_name_valid(const char *s)
{
	return s && s[0] != '_' && id_valid(s, 64);
}

const char *
ws_host_id(void)
{
	return cfg.pg_conninfo && *cfg.pg_conninfo ? cfg.host_id : NULL;
}

/* N of "ws-N" (decimal, no leading zero, at most 18 digits); false for any other name. */
static bool
ws_number(const char *name, uint64_t *n)
{
	const char *d = name + strlen(WS_PREFIX);
	size_t		len;

	if (strncmp(name, WS_PREFIX, strlen(WS_PREFIX)) != 0)
		return false;
	len = strspn(d, "0123456789");
	if (len == 0 || len > 18 || d[len] || (d[0] == '0' && len > 1))
		return false;
	*n = strtoull(d, NULL, 10);
	return true;
}

struct ws_snap
{
	uint64_t n;
	char	 name[32];
};

static int
cmp_snap(const void *a, const void *b)
{
	const struct ws_snap *x = a, *y = b;

	return x->n < y->n ? -1 : x->n > y->n;
}

/* The sandbox's ws-* snapshots, oldest first; *count of them.  NULL when none or no memory. */
static struct ws_snap *
ws_list(const char *id, size_t *count)
{
	char		  **names = store_snapshot_list(id);
	struct ws_snap *v = NULL;
	size_t			n = 0, cap = 0;

	for (char **s = names; s && *s; s++)
	{
		uint64_t k;
		if (!ws_number(*s, &k))
			continue;
		if (n == cap)
		{
			struct ws_snap *nv = realloc(v, (cap = cap ? cap * 2 : 16) * sizeof *v);
			if (!nv)
				break;
			v = nv;
		}
		v[n].n = k;
		snprintf(v[n].name, sizeof v[n].name, "%s", *s);
		n++;
	}
	store_strv_free(names);
	if (v)
		qsort(v, n, sizeof *v, cmp_snap);
	*count = n;
	return v;
}

/* The transaction of snapshot name of sandbox id (0: unknown). */
static uint64_t
snap_transid(const char *id, const char *name, time_t *otime)
{
	_cleanup_(freep) char *p = store_snapshot_path(id, name);
	uint64_t			   t = 0;

	if (!p || store_subvolume_times(p, &t, otime) < 0)
		return 0;
	return t;
}

static void
drop_snapshot(struct sbx_sandbox *sb, const char *name, const char *why)
{
	int k = store_snapshot_delete(sb->id, name);

	if (k < 0)
	{
		errno = -k;
		log_warning("sandbox %s: cannot remove snapshot %s (%s): %m", sb->id, name, why);
	}
	else
	{
		stats.removed++;
		log_debug("sandbox %s: removed snapshot %s (%s)", sb->id, name, why);
	}
}

/* Retention (see the head of the file); the newest ws snapshot stays. */
static void
ws_retain(struct sbx_sandbox *sb)
{
	_cleanup_(freep) struct ws_snap *v = NULL;
	size_t							 n = 0, first = 0;
	time_t							 now = time(NULL);

	v = ws_list(sb->id, &n);
	if (!v || n < 2)
		return;
	while (n - first > cfg.ws_snapshots && first < n - 1)
		drop_snapshot(sb, v[first++].name, "over workspace_snapshots");
	while (cfg.ws_snapshot_age_ms && first < n - 1)
	{
		time_t otime = 0;
		snap_transid(sb->id, v[first].name, &otime);
		if (!otime || (uint64_t) (now - otime) * 1000 <= cfg.ws_snapshot_age_ms)
			break;
		drop_snapshot(sb, v[first++].name, "older than workspace_snapshot_age");
	}
	if (cfg.disk_max && first < n - 1)
	{
		/* What the snapshots hold that nothing else does, and the sandbox's own. */
		_cleanup_(freep) char *p = store_sandbox_path(sb->id);
		uint64_t			   total = 0, rfer, excl;
		uint64_t			  *own = calloc(n, sizeof *own);

		if (!own)
			return;
		if (p && store_qgroup_usage(p, &rfer, &excl) == 0)
			total += excl;
		for (size_t i = first; i < n; i++)
		{
			_cleanup_(freep) char *s = store_snapshot_path(sb->id, v[i].name);
			if (s && store_qgroup_usage(s, &rfer, &excl) == 0)
				total += own[i] = excl;
		}
		while (total > cfg.disk_max && first < n - 1)
		{
			total -= own[first];
			drop_snapshot(sb, v[first++].name, "snapshots over disk_max");
		}
		free(own);
	}
}

static json_t *
ws_object(const struct sbx_sandbox *sb, const char *name)
{
	const char *host = ws_host_id();

	return json_pack("{s:o, s:s, s:s}", "host_id", host ? json_string(host) : json_null(),
					 "sandbox_id", sb->id, "snapshot", name);
}

/* Take ws-N (N the counter, or the next free number) into name; false if it failed. */
static bool
ws_take(struct sbx_sandbox *sb, char name[32])
{
	int k;

	for (;;)
	{
		snprintf(name, 32, WS_PREFIX "%llu", (unsigned long long) sb->ws_calls);
		k = store_snapshot_create(sb->id, name);
		if (k != -EEXIST)
			break;
		sb->ws_calls++; /* a number used before a restart lost the count */
	}
	if (k < 0)
	{
		errno = -k;
		log_error("sandbox %s: cannot take workspace snapshot %s: %m", sb->id, name);
		return false;
	}
	sb->ws_base = snap_transid(sb->id, name, NULL);
	return true;
}

void
ws_created(struct sbx_sandbox *sb)
{
	char name[32];

	sb->ws_calls = 0;
	sb->ws_base = 0;
	if (cfg.ws_snapshots)
		ws_take(sb, name);
}

void
ws_adopted(struct sbx_sandbox *sb)
{
	_cleanup_(freep) struct ws_snap *v = NULL;
	size_t							 n = 0;

	v = ws_list(sb->id, &n);
	sb->ws_calls = n ? v[n - 1].n : 0;
	sb->ws_base = n ? snap_transid(sb->id, v[n - 1].name, NULL) : 0;
}

json_t *
ws_after_call(struct sbx_sandbox *sb, bool side_effects)
{
	char name[32];
	int	 changed;

	sb->ws_calls++;
	if (!cfg.ws_snapshots || !side_effects || sb->destroying)
		return NULL;
	changed = sb->ws_base ? store_sandbox_changed_since(sb->id, sb->ws_base) : 1;
	if (changed < 0)
	{
		errno = -changed;
		log_warning("sandbox %s: cannot tell whether its files changed (%m); snapshotting", sb->id);
	}
	if (changed == 0)
	{
		stats.unchanged++;
		return NULL;
	}
	if (!ws_take(sb, name))
	{
		stats.failed++;
		return NULL;
	}
	stats.taken++;
	ws_retain(sb);
	return ws_object(sb, name);
}

/* ---- rollback -------------------------------------------------------------------- */

static void
restore_reply(struct sbx_sandbox *sb, int k)
{
	struct http_req *r = sb->restore_req;

	sb->restore_req = NULL;
	sb->ops--;
	if (k < 0)
		http_reply_errno(r, k, "restore the workspace");
	else
	{
		json_t *j = sandbox_json(sb);
		json_object_set_new(j, "restored_from", json_string(sb->restore_snap));
		http_reply_json(r, 200, j);
	}
}

/* The container is stopped: swap the sandbox's subvolume for a writable snapshot of its own. */
static void
restore_swap(struct sbx_sandbox *sb)
{
	_cleanup_(freep) char *cur = store_sandbox_path(sb->id);
	_cleanup_(freep) char *snap = store_snapshot_path(sb->id, sb->restore_snap);
	_cleanup_(freep) char *old = NULL;
	char				   tmp[17];
	int					   k;

	random_hex(tmp, 8);
	old = xasprintf("%s/incoming/%s", store_root(), tmp);
	if (!cur || !snap || !old)
	{
		restore_reply(sb, -ENOMEM);
		return;
	}
	if (mkdir(old, 0700) < 0)
	{
		restore_reply(sb, -errno);
		return;
	}
	/* incoming/TMP/ID: removed at the next start if we die before deleting it. */
	free(old);
	old = xasprintf("%s/incoming/%s/%s", store_root(), tmp, sb->id);
	if (!old || rename(cur, old) < 0)
	{
		restore_reply(sb, old ? -errno : -ENOMEM);
		return;
	}
	k = store_sandbox_from_subvolume(sb->id, snap, sb->image);
	if (k < 0)
	{
		if (rename(old, cur) < 0)
			log_error("sandbox %s: cannot put its workspace back from %s: %m", sb->id, old);
		restore_reply(sb, k);
		return;
	}
	*strrchr(old, '/') = '\0';
	store_remove_dir(old);
	{
		uint64_t t = 0;
		if (store_subvolume_times(cur, &t, NULL) == 0)
			sb->ws_base = t; /* changes from here on are new */
	}
	stats.restores++;
	log_info("sandbox %s: workspace restored from snapshot %s", sb->id, sb->restore_snap);
	restore_reply(sb, 0);
}

void
ws_on_stopped(struct sbx_sandbox *sb)
{
	if (sb->restore_req)
		restore_swap(sb);
}

void
ws_restore(struct http_req *r, struct sbx_sandbox *sb)
{
	json_t				  *body = http_body_json(r);
	const char			  *name, *key;
	_cleanup_(freep) char *p = NULL;
	json_t				  *v;

	if (!body)
		return;
	json_object_foreach(body, key, v)
	{
		if (strcmp(key, "snapshot") != 0)
		{
			http_reply_problem(r, 400, "invalid_args", "unknown field \"%s\"", key);
			goto out;
		}
	}
	name = json_string_value(json_object_get(body, "snapshot"));
	if (!ws_snapshot_name_valid(name))
	{
		http_reply_problem(r, 400, "invalid_args",
						   "\"snapshot\" must be a snapshot name: 1 to 64 letters, digits, '.', "
						   "'_' or '-', not starting with '.', '-' or '_', no \"..\"");
		goto out;
	}
	p = store_snapshot_path(sb->id, name);
	if (!p || !is_subvolume(p))
	{
		ws_reply_no_snapshot(r, sb->id, name);
		goto out;
	}
	if (sb->ops > 0 || sb->current || sb->q_len > 0)
	{
		http_reply_problem(r, 409, "sandbox_busy",
						   "sandbox %s is running a call, an export or a restore; retry when it "
						   "is done",
						   sb->id);
		goto out;
	}
	sb->ops++;
	sb->restore_req = r;
	snprintf(sb->restore_snap, sizeof sb->restore_snap, "%s", name);
	if (sb->ct.state == CT_STOPPED)
		restore_swap(sb);
	else
		run_stop(sb, true, "workspace restore");
out:
	json_decref(body);
}

/* ---- the send stream another host pulls ---------------------------------------- */

struct stream_ctx
{
	struct http_req	   *req;
	struct sbx_sandbox *sb;
	int					fd;
	char				name[72];
};

static void
stream_done(void *ud, int status, const char *err)
{
	struct stream_ctx *x = ud;
	struct stat		   st;

	x->sb->ops--;
	if (status != 0 || fstat(x->fd, &st) < 0 || lseek(x->fd, 0, SEEK_SET) < 0)
	{
		http_reply_problem(x->req, 500, "export_failed", "btrfs send of %s failed: %s", x->name,
						   status != 0 && *err ? err : "unknown error");
		close(x->fd);
	}
	else
	{
		log_info("sandbox %s: sending snapshot %s (%lld bytes)", x->sb->id, x->name,
				 (long long) st.st_size);
		http_reply_fd(x->req, x->fd, (uint64_t) st.st_size); /* takes the fd */
	}
	free(x);
}

void
ws_stream(struct http_req *r, struct sbx_sandbox *sb, const char *name)
{
	_cleanup_(freep) char *p = store_snapshot_path(sb->id, name);
	_cleanup_(freep) char *dir = xasprintf("%s/incoming", store_root());
	struct stream_ctx	  *x;
	int					   k;

	/* A sandbox on its way out is freed once its container stops: no send may hold it. */
	if (sb->destroying)
	{
		http_reply_problem(r, 409, "sandbox_destroying", "sandbox %s is being destroyed", sb->id);
		return;
	}
	if (!p || !dir || !is_subvolume(p))
	{
		ws_reply_no_snapshot(r, sb->id, name);
		return;
	}
	x = http_calloc(r, sizeof *x);
	if (!x)
		return;
	x->req = r;
	x->sb = sb;
	snprintf(x->name, sizeof x->name, "%s", name);
	/* An unnamed file: nothing to clean up whatever happens. */
	x->fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (x->fd < 0)
	{
		http_reply_problem(r, 500, "export_failed", "cannot make a scratch file in %s: %m", dir);
		free(x);
		return;
	}
	k = child_spawn((const char *[]){cfg.btrfs_path, "send", "-q", p, NULL}, x->fd, stream_done, x);
	if (k < 0)
	{
		http_reply_problem(r, 500, "export_failed", "cannot run %s: %s", cfg.btrfs_path,
						   strerror(-k));
		close(x->fd);
		free(x);
		return;
	}
	sb->ops++;
}

/* ---- sandboxes made from a snapshot ----------------------------------------------- */

struct pull_ctx
{
	struct http_req *req;
	char			 session[SBX_SESSION_MAX + 1];
	char			 tenant[SBX_TENANT_MAX + 1];
	char			 image[SBX_IMAGE_MAX + 1];
	char			 host_id[72];
	char			 src_id[SBX_ID_LEN + 1];
	char			 name[72];
	char			*bearer;
	char			*dir;  /* incoming/TMP/ */
	char			*file; /* incoming/TMP/stream */
	char			*hdr;  /* incoming/TMP/header: the forwarded credential */
	uint64_t		 t0;
};

static void
pull_free(struct pull_ctx *x)
{
	if (x->bearer)
	{
		explicit_bzero(x->bearer, strlen(x->bearer));
		free(x->bearer);
	}
	if (x->dir)
		store_remove_dir(x->dir);
	free(x->dir);
	free(x->file);
	free(x->hdr);
	free(x);
}

static void
reply_created(struct http_req *r, const char *session, const char *tenant, const char *image,
			  const char *src, const char *from, bool remote)
{
	struct sbx_sandbox *sb;
	int					k;

	if (sandbox_find_session(session))
	{
		http_reply_problem(r, 409, "session_has_sandbox", "session %s already has a sandbox here",
						   session);
		return;
	}
	if (sandbox_host_full())
	{
		http_add_header(r, "Retry-After", "5");
		http_reply_problem(r, 503, "no_capacity", "this host holds its maximum of %llu sandboxes",
						   (unsigned long long) cfg.max_sandboxes);
		return;
	}
	k = sandbox_create_from(session, tenant, image, src, &sb);
	if (k < 0)
	{
		http_reply_errno(r, k, "create the sandbox");
		return;
	}
	if (remote)
		stats.forks_remote++;
	else
		stats.forks_local++;
	{
		json_t *j = sandbox_json(sb);
		json_object_set_new(j, "from", json_string(from));
		http_reply_json(r, 201, j);
	}
}

static void
pull_received(void *ud, int status, const char *err)
{
	struct pull_ctx		  *x = ud;
	_cleanup_(freep) char *got = NULL, *from = NULL;
	DIR					  *d;
	struct dirent		  *de;

	if (status != 0)
	{
		stats.fork_failures++;
		http_reply_problem(x->req, 422, "restore_failed", "btrfs receive of %s/%s failed: %s",
						   x->src_id, x->name, *err ? err : "unknown error");
		pull_free(x);
		return;
	}
	unlink(x->file);
	d = opendir(x->dir);
	while (d && (de = readdir(d)))
		if (de->d_name[0] != '.' && strcmp(de->d_name, "header") != 0 && !got)
			got = xasprintf("%s/%s", x->dir, de->d_name);
	if (d)
		closedir(d);
	from = xasprintf("%s:%s/%s", x->host_id, x->src_id, x->name);
	if (!got || !from)
		http_reply_problem(x->req, 422, "restore_failed", "the stream held no subvolume");
	else
	{
		log_info("pulled snapshot %s from host %s in %llu ms", x->name, x->host_id,
				 (unsigned long long) ((now_us() - x->t0) / 1000));
		reply_created(x->req, x->session, x->tenant, x->image, got, from, true);
	}
	pull_free(x);
}

static void
pull_fetched(void *ud, int status, const char *err)
{
	struct pull_ctx *x = ud;
	int				 k;

	unlink(x->hdr);
	if (status != 0)
	{
		/* curl --fail-with-body: the other host's problem is in the file. */
		_cleanup_(freep) char *body = NULL;
		stats.fork_failures++;
		read_full_file(AT_FDCWD, x->file, &body, NULL, 2048);
		http_reply_problem(x->req, 502, "fork_source_failed",
						   "cannot fetch snapshot %s of sandbox %s from host %s: %s%s%.512s",
						   x->name, x->src_id, x->host_id, *err ? err : "error", body ? ": " : "",
						   body ? body : "");
		pull_free(x);
		return;
	}
	k = child_spawn(
		(const char *[]){cfg.btrfs_path, "receive", "-q", "--chroot", "-f", x->file, x->dir, NULL},
		-1, pull_received, x);
	if (k < 0)
	{
		http_reply_problem(x->req, 500, "restore_failed", "cannot run %s: %s", cfg.btrfs_path,
						   strerror(-k));
		pull_free(x);
	}
}

/* The other host's address: fetch its stream into incoming/TMP/stream. */
static void
pull_resolved(void *ud, const char *address, const char *why)
{
	struct pull_ctx		  *x = ud;
	_cleanup_(freep) char *url = NULL, *hdr = NULL;
	_cleanup_(closep) int  out = -1;
	int					   k;

	if (!address)
	{
		stats.fork_failures++;
		http_reply_problem(x->req, 404, "host_not_found", "sandbox host %s: %s", x->host_id,
						   why ? why : "not registered");
		pull_free(x);
		return;
	}
	if (strncmp(address, "http://", 7) != 0 || strlen(address) > 255 ||
		strcspn(address, " \t\r\n\"'\\") != strlen(address))
	{
		http_reply_problem(x->req, 502, "fork_source_failed",
						   "sandbox host %s advertises no http:// address", x->host_id);
		pull_free(x);
		return;
	}
	url = xasprintf("%s/v1/sandboxes/%s/snapshots/%s/stream", address, x->src_id, x->name);
	hdr = xasprintf("Authorization: Bearer %s\n", x->bearer ? x->bearer : "");
	if (!url || !hdr || write_file_atomic(AT_FDCWD, x->hdr, hdr, strlen(hdr), 0600) < 0)
	{
		http_reply_problem(x->req, 500, "internal", "cannot prepare the transfer");
		pull_free(x);
		return;
	}
	explicit_bzero(hdr, strlen(hdr));
	out = open(x->file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (out < 0)
	{
		http_reply_problem(x->req, 500, "internal", "cannot create %s: %m", x->file);
		pull_free(x);
		return;
	}
	/* The credential from a file, never on a command line. */
	_cleanup_(freep) char *hdr_arg = xasprintf("@%s", x->hdr);
	char				   room[32];
	/* No redirects, http only, and no stream larger than the store's free space. */
	/* curl takes 0 for no limit: a full store (or an unknown free space) takes no stream. */
	if (store_free_bytes() == 0)
	{
		http_reply_problem(x->req, 507, "no_space", "the sandbox store has no free space for %s",
						   x->name);
		pull_free(x);
		return;
	}
	snprintf(room, sizeof room, "%llu", (unsigned long long) store_free_bytes());
	k = hdr_arg ? child_spawn((const char *[]){cfg.curl_path, "-sS", "--fail-with-body",
											   "--max-time", "3600", "--proto", "=http",
											   "--max-filesize", room, "-H", hdr_arg, url, NULL},
							  out, pull_fetched, x)
				: -ENOMEM;
	if (k < 0)
	{
		http_reply_problem(x->req, 500, "internal", "cannot run %s: %s", cfg.curl_path,
						   strerror(-k));
		pull_free(x);
	}
}

void
ws_create_from(struct http_req *r, const char *session, const char *tenant, const char *image,
			   const char *host_id, const char *src_id, const char *name)
{
	struct pull_ctx *x;
	const char		*bearer;
	char			 tmp[17];

	if (!host_id || strcmp(host_id, cfg.host_id) == 0)
	{
		struct sbx_sandbox	  *src = sandbox_find(src_id);
		_cleanup_(freep) char *p = src ? store_snapshot_path(src_id, name) : NULL;
		_cleanup_(freep) char *from = xasprintf("%s/%s", src_id, name);

		if (!src || src->destroying)
			http_reply_problem(r, 404, "sandbox_not_found", "no sandbox with id \"%s\"", src_id);
		else if (http_principal(r)->kind != ACCESS_OPERATOR &&
				 (!tenant || !*tenant || !src->tenant[0] || strcmp(tenant, src->tenant) != 0))
			http_reply_problem(r, 403, "forbidden",
							   "sandbox %s is not of this session's tenant (a session's fork "
							   "starts only from a snapshot of its own tenant's sandbox)",
							   src_id);
		else if (!p || !is_subvolume(p))
			ws_reply_no_snapshot(r, src_id, name);
		else
			reply_created(r, session, tenant && *tenant ? tenant : src->tenant, image, p,
						  from ? from : name, false);
		return;
	}
	/*
	 * The pull presents the caller's token to the other host: only a
	 * session token, whose fork claim names this one snapshot, ever leaves
	 * this host; the operator's never does (without one configured, every
	 * caller is the operator and there is no secret to keep).
	 */
	if (http_principal(r)->kind == ACCESS_OPERATOR && cfg.token)
	{
		http_reply_problem(r, 403, "forbidden",
						   "a sandbox from another host's snapshot is made with the fork's own "
						   "session token (the operator token is never sent to another host)");
		return;
	}
	if (!cfg.pg_conninfo || !*cfg.pg_conninfo)
	{
		http_reply_problem(r, 404, "host_not_found",
						   "sandbox host %s is unknown here: this host has no database", host_id);
		return;
	}
	x = http_calloc(r, sizeof *x);
	if (!x)
		return;
	x->req = r;
	x->t0 = now_us();
	snprintf(x->session, sizeof x->session, "%s", session);
	snprintf(x->tenant, sizeof x->tenant, "%s", tenant ? tenant : "");
	snprintf(x->image, sizeof x->image, "%s", image);
	snprintf(x->host_id, sizeof x->host_id, "%s", host_id);
	snprintf(x->src_id, sizeof x->src_id, "%s", src_id);
	snprintf(x->name, sizeof x->name, "%s", name);
	bearer = http_req_bearer(r);
	x->bearer = bearer ? strdup(bearer) : NULL;
	random_hex(tmp, 8);
	x->dir = xasprintf("%s/incoming/%s", store_root(), tmp);
	x->file = xasprintf("%s/incoming/%s/stream", store_root(), tmp);
	x->hdr = xasprintf("%s/incoming/%s/header", store_root(), tmp);
	if (!x->dir || !x->file || !x->hdr || (bearer && !x->bearer) || mkdir(x->dir, 0700) < 0)
	{
		free(x->dir);
		x->dir = NULL;
		http_reply_problem(r, 500, "internal", "cannot prepare the transfer");
		pull_free(x);
		return;
	}
	if (!pg_host_address(host_id, pull_resolved, x))
	{
		http_reply_problem(r, 503, "no_database", "no connection to the database to find host %s",
						   host_id);
		pull_free(x);
	}
}
