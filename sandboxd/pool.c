/*
 * pool.c — the warm pool (pool.h).  An entry is a sandbox like any other
 * (a snapshot of its image, metadata, a user namespace slot, a proxy
 * directory) whose session_id is empty, whose metadata says "pool" and
 * whose container runs, idle, with nothing of a tenant or session in it.
 *
 * Making one never blocks the event loop: the BTRFS snapshot is taken by a
 * forked helper (one at a time), the container starts as every container
 * does.  Taking one is a single atomic rename of its metadata ("pool" →
 * "active" with the session and tenant in it): a restart removes every
 * entry still marked "pool" (its container died with the daemon) and adopts
 * the ones that were taken.  Before that rename, the tenant's git mirrors
 * are mounted into the running container's mount namespace (open_tree,
 * then setns and move_mount in a short-lived child): the only mount that
 * depends on who uses the sandbox.  The proxy directory is per sandbox id,
 * which the entry keeps.
 *
 * Pool entries count against max_running and are the first containers
 * stopped when a session needs a slot; the pool fills only while no
 * session waits for one and the host is not under memory pressure
 * (MemAvailable below pool_min_available, or the PSI "some avg10" of
 * pool_pressure_file at or above pool_max_pressure); under pressure it
 * gives its entries back, one per round.
 */
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mount.h>
#include <sys/pidfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <linux/mount.h>

#include "daemonlib/metrics.h"
#include "btrfs_store.h"
#include "pool.h"

#define ATTACH_TIMEOUT_MS 2000
#define BACKOFF_MAX_MS 60000

extern bool sbx_draining;

/* An image the pool keeps warm, from pool_images or (pool_size) the store. */
struct pool_image
{
	char	 name[SBX_IMAGE_MAX + 1];
	uint64_t size;
	bool	 listed; /* named in pool_images */
	uint64_t hits, misses;
};

static struct pool_image *images;
static size_t			  n_images;
static EvTimer			  tick;
static bool				  started;

/* The one helper making an entry's snapshot. */
static struct
{
	struct sbx_sandbox *sb;
	pid_t				pid;
	int					pidfd;
	EvIo				io;
} fill = {.pidfd = -1};

static uint64_t made, failed, shrunk, attach_failures;
static unsigned fail_streak;
static uint64_t not_before_ms;
static bool		pressure;

/* ---- configuration -------------------------------------------------------- */

static struct pool_image *
image_find(const char *name)
{
	for (size_t i = 0; i < n_images; i++)
		if (strcmp(images[i].name, name) == 0)
			return &images[i];
	return NULL;
}

static struct pool_image *
image_add(const char *name, uint64_t size, bool listed)
{
	struct pool_image *im = image_find(name), *n;

	if (im)
		return im;
	n = realloc(images, (n_images + 1) * sizeof *images);
	if (!n)
		return NULL;
	images = n;
	im = &images[n_images++];
	memset(im, 0, sizeof *im);
	snprintf(im->name, sizeof im->name, "%s", name);
	im->size = size;
	im->listed = listed;
	return im;
}

/* pool_images: "NAME[=N],NAME[=N]..."; a NAME alone gets pool_size. */
static int
parse_images(void)
{
	_cleanup_(freep) char *copy = cfg.pool_images ? strdup(cfg.pool_images) : NULL;

	if (!cfg.pool_images)
		return 0;
	if (!copy)
		return -ENOMEM;
	for (char *save, *t = strtok_r(copy, ", ", &save); t; t = strtok_r(NULL, ", ", &save))
	{
		char	*eq = strchr(t, '=');
		uint64_t size = cfg.pool_size;

		if (eq)
		{
			char *end;
			*eq = '\0';
			errno = 0;
			size = strtoull(eq + 1, &end, 10);
			if (errno || end == eq + 1 || *end || size > cfg.max_running)
			{
				log_error("pool_images: \"%s=%s\": the size must be a number from 0 to "
						  "max_running (%llu)",
						  t, eq + 1, (unsigned long long) cfg.max_running);
				return -EINVAL;
			}
		}
		if (!id_valid(t, SBX_IMAGE_MAX))
		{
			log_error("pool_images: \"%s\" is no image name", t);
			return -EINVAL;
		}
		if (!image_add(t, size, true))
			return -ENOMEM;
	}
	return 0;
}

/* Images of the store not named in pool_images get pool_size (0: none). */
static void
scan_store_images(void)
{
	_cleanup_(freep) char *path = xasprintf("%s/images", store_root());
	DIR					  *d;
	struct dirent		  *de;

	if (cfg.pool_size == 0 || !path || !(d = opendir(path)))
		return;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.' && id_valid(de->d_name, SBX_IMAGE_MAX))
			image_add(de->d_name, cfg.pool_size, false);
	closedir(d);
}

/* ---- counting -------------------------------------------------------------- */

size_t
pool_count(void)
{
	size_t n = 0;

	for (struct sbx_sandbox *sb = sandboxes; sb; sb = sb->next)
		n += sb->pooled;
	return n;
}

/* No room for another session's sandbox: warm pool entries hold no place a session could have. */
bool
sandbox_host_full(void)
{
	return sandbox_count() - pool_count() >= cfg.max_sandboxes;
}

/* Entries of im (made or being made), and how many of them are ready. */
static size_t
entries_of(const struct pool_image *im, size_t *ready)
{
	size_t n = 0, r = 0;

	for (struct sbx_sandbox *sb = sandboxes; sb; sb = sb->next)
		if (sb->pooled && !sb->destroying && strcmp(sb->image, im->name) == 0)
		{
			n++;
			r += sb->ct.state == CT_IDLE;
		}
	if (fill.sb && strcmp(fill.sb->image, im->name) == 0)
		n++;
	if (ready)
		*ready = r;
	return n;
}

/* Whether a new entry may take a container slot and a sandbox place now. */
static bool
room_for_entry(void)
{
	if (run_count() >= cfg.max_running || sandbox_count() >= cfg.max_sandboxes)
		return false;
	/* A session's call waiting for a slot comes first. */
	for (struct sbx_sandbox *sb = sandboxes; sb; sb = sb->next)
		if (sb->ct.state == CT_STOPPED && sb->q_head)
			return false;
	return true;
}

/* ---- memory pressure ----------------------------------------------------------- */

/* A "Key:  N kB" line of /proc/meminfo in bytes; false when it cannot be read. */
static bool
mem_available(uint64_t *bytes)
{
	_cleanup_(freep) char *buf = NULL;
	const char			  *p;

	if (read_full_file(AT_FDCWD, "/proc/meminfo", &buf, NULL, 65536) < 0 ||
		!(p = strstr(buf, "MemAvailable:")))
		return false;
	*bytes = strtoull(p + strlen("MemAvailable:"), NULL, 10) * 1024;
	return true;
}

/* The "some avg10=" figure of a PSI file, in hundredths of a percent; false if none. */
static bool
psi_some_avg10(const char *file, uint64_t *centi)
{
	_cleanup_(freep) char *buf = NULL;
	const char			  *p;
	char				  *end;
	double				   v;

	if (read_full_file(AT_FDCWD, file, &buf, NULL, 4096) < 0 || strncmp(buf, "some ", 5) != 0 ||
		!(p = strstr(buf, "avg10=")))
		return false;
	v = strtod(p + 6, &end);
	if (end == p + 6 || v < 0)
		return false;
	*centi = (uint64_t) (v * 100 + 0.5);
	return true;
}

static bool
under_pressure(char *why, size_t len)
{
	uint64_t v;

	if (cfg.pool_min_available && mem_available(&v) && v < cfg.pool_min_available)
	{
		snprintf(why, len, "MemAvailable %llu MiB is below pool_min_available (%llu MiB)",
				 (unsigned long long) (v >> 20),
				 (unsigned long long) (cfg.pool_min_available >> 20));
		return true;
	}
	if (cfg.pool_max_pressure && cfg.pool_pressure_file &&
		psi_some_avg10(cfg.pool_pressure_file, &v) && v >= cfg.pool_max_pressure * 100)
	{
		snprintf(why, len, "%s: some avg10=%llu.%02llu is at or above pool_max_pressure (%llu)",
				 cfg.pool_pressure_file, (unsigned long long) (v / 100),
				 (unsigned long long) (v % 100), (unsigned long long) cfg.pool_max_pressure);
		return true;
	}
	return false;
}

/* ---- making an entry ------------------------------------------------------------ */

static void
backoff(const char *what)
{
	uint64_t ms = 1000ULL << MIN(fail_streak, 6u);

	fail_streak++;
	failed++;
	if (ms > BACKOFF_MAX_MS)
		ms = BACKOFF_MAX_MS;
	not_before_ms = now_ms() + ms;
	log_warning("pool: %s; trying again in %llu s", what, (unsigned long long) (ms / 1000));
}

static void
on_fill_done(EvIo *io, uint32_t revents)
{
	struct sbx_sandbox *sb = fill.sb;
	siginfo_t			si = {0};
	int					r;
	(void) io;
	(void) revents;

	if (waitid(P_PIDFD, (id_t) fill.pidfd, &si, WEXITED | WNOHANG) < 0 || si.si_pid == 0)
		return;
	ev_io_stop(&fill.io);
	close(fill.pidfd);
	fill.pidfd = -1;
	fill.sb = NULL;
	if (si.si_code != CLD_EXITED || si.si_status != 0)
	{
		sandbox_pool_abort(sb);
		backoff("cannot snapshot an image for a pool entry");
	}
	else if ((r = sandbox_pool_commit(sb)) < 0)
		backoff("cannot record a pool entry");
	else if ((r = run_warm(sb)) < 0)
	{
		sandbox_destroy(sb, NULL, NULL);
		backoff("cannot start the container of a pool entry");
	}
	else
		made++;
	pool_kick();
}

/* Snapshot im for a new entry in a helper; its container starts when that is done. */
static void
fill_start(struct pool_image *im)
{
	struct sbx_sandbox *sb = sandbox_pool_begin(im->name);
	pid_t				pid;

	if (!sb)
	{
		backoff("cannot begin a pool entry");
		return;
	}
	pid = fork();
	if (pid < 0)
	{
		sandbox_pool_abort(sb);
		backoff("cannot fork");
		return;
	}
	if (pid == 0)
	{
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		_exit(store_sandbox_create(sb->id, sb->image) < 0 ? 1 : 0);
	}
	fill.pidfd = pidfd_open(pid, 0);
	if (fill.pidfd < 0)
	{
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		sandbox_pool_abort(sb);
		backoff("pidfd_open failed");
		return;
	}
	fcntl(fill.pidfd, F_SETFD, FD_CLOEXEC);
	fill.sb = sb;
	fill.pid = pid;
	ev_io_start(&fill.io, fill.pidfd, EPOLLIN, on_fill_done, NULL);
}

/* ---- the rounds ---------------------------------------------------------------- */

static struct pool_image *
image_short(void)
{
	struct pool_image *best = NULL;
	size_t			   best_n = 0;

	scan_store_images();
	for (size_t i = 0; i < n_images; i++)
	{
		size_t n = entries_of(&images[i], NULL);
		/* The emptiest pool first, relative to its size. */
		if (n < images[i].size && (!best || n * best->size < best_n * images[i].size))
		{
			best = &images[i];
			best_n = n;
		}
	}
	return best;
}

static void
shrink_one(void)
{
	struct sbx_sandbox *victim = NULL;

	for (struct sbx_sandbox *sb = sandboxes; sb; sb = sb->next)
		if (sb->pooled && !sb->destroying)
			victim = sb;
	if (victim && sandbox_destroy(victim, NULL, NULL) == 0)
		shrunk++;
}

static void
on_tick(EvTimer *t)
{
	char			   why[256];
	bool			   was = pressure;
	uint64_t		   next = cfg.pool_interval_ms;
	struct pool_image *im;
	(void) t;

	if (sbx_draining)
		return;
	pressure = under_pressure(why, sizeof why);
	if (pressure != was)
		pressure ? log_notice("pool: memory pressure (%s): giving entries back", why)
				 : log_notice("pool: memory pressure is over: refilling");
	if (pressure)
	{
		shrink_one();
		if (pool_count() > 0)
			next = MIN(next, 100);
	}
	else if (!fill.sb && now_ms() >= not_before_ms && room_for_entry() && (im = image_short()))
		fill_start(im);
	/* An entry that came up ends a run of failures. */
	for (struct sbx_sandbox *sb = sandboxes; sb; sb = sb->next)
		if (sb->pooled && sb->ct.state == CT_IDLE)
			fail_streak = 0;
	ev_timer_arm(&tick, next, on_tick, NULL);
}

void
pool_kick(void)
{
	if (started && !sbx_draining)
		ev_timer_arm(&tick, 0, on_tick, NULL);
}

int
pool_init(void)
{
	int r = parse_images();

	if (r < 0)
		return r;
	if (mkdirat(store_root_fd(), SBX_POOL_EMPTY_HOST, 0555) < 0 && errno != EEXIST)
	{
		log_error("cannot make %s/%s: %m", store_root(), SBX_POOL_EMPTY_HOST);
		return -errno;
	}
	for (size_t i = 0; i < n_images; i++)
		if (images[i].size && store_image_exists(images[i].name) <= 0)
			log_warning("pool: no base image \"%s\" (yet): its pool stays empty until it appears",
						images[i].name);
	scan_store_images();
	/* Without a pool there are no rounds (and no memory checks) at all. */
	started = cfg.pool_size > 0;
	for (size_t i = 0; i < n_images; i++)
		if (images[i].size)
		{
			log_notice("pool: keeping %llu warm container%s of image %s",
					   (unsigned long long) images[i].size, images[i].size == 1 ? "" : "s",
					   images[i].name);
			started = true;
		}
	pool_kick(); /* with pool_size, images imported later are found by the rounds */
	return 0;
}

void
pool_done(void)
{
	started = false;
	ev_timer_cancel(&tick);
	if (fill.sb)
	{
		ev_io_stop(&fill.io);
		kill(fill.pid, SIGKILL);
		waitpid(fill.pid, NULL, 0);
		close(fill.pidfd);
		sandbox_pool_abort(fill.sb);
		fill.sb = NULL;
	}
	free(images);
	images = NULL;
	n_images = 0;
}

/* ---- taking one ------------------------------------------------------------------ */

/*
 * Mount the host directory src read-only at path inside the running
 * container of sb: a detached copy of src made here, then moved into the
 * container's mount namespace by a child that joins it (setns is not for
 * a process that must stay in its own).  It is mounted over the empty
 * read-only directory the entry's container was started with at that path
 * (its mount point).  0 or -errno.
 */
static int
attach_mount(struct sbx_sandbox *sb, const char *src, const char *path)
{
	struct mount_attr attr = {.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
							  .propagation = MS_PRIVATE};
	_cleanup_(closep) int tree = -1, root = -1, ns = -1, pidfd = -1, initfd = -1;
	pid_t				  init = run_init_pid(sb), pid;
	char				  p[64];
	int					  status;

	if (init <= 1)
		return -ESRCH;
	tree = open_tree(AT_FDCWD, src, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
	if (tree < 0 || mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) < 0)
		return -errno;
	/*
	 * The init's /proc entries, opened between a pidfd of it and a check
	 * that it still lives: a pid reused by another process meanwhile would
	 * fail the check, so the mount never lands in another container.
	 */
	initfd = pidfd_open(init, 0);
	if (initfd < 0)
		return -errno;
	snprintf(p, sizeof p, "/proc/%d/root", (int) init);
	root = open(p, O_PATH | O_DIRECTORY | O_CLOEXEC);
	snprintf(p, sizeof p, "/proc/%d/ns/mnt", (int) init);
	ns = open(p, O_RDONLY | O_CLOEXEC);
	if (root < 0 || ns < 0)
		return -errno;
	/*
	 * Still nspawn's child (nspawn is ours, reaped by our loop, so its pid is
	 * stable): the pidfd holds the container's init, not a process that took
	 * its pid after it died.
	 */
	if (pidfd_send_signal(initfd, 0, NULL, 0) < 0 || run_init_pid(sb) != init)
		return -ESRCH;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0)
	{
		if (setns(ns, CLONE_NEWNS) < 0 ||
			move_mount(tree, "", root, path + 1, MOVE_MOUNT_F_EMPTY_PATH) < 0)
			_exit(errno & 0xff);
		_exit(0);
	}
	pidfd = pidfd_open(pid, 0);
	if (pidfd >= 0)
	{
		struct pollfd pfd = {.fd = pidfd, .events = POLLIN};
		if (poll(&pfd, 1, ATTACH_TIMEOUT_MS) == 0)
		{
			log_error("sandbox %s: the mount helper did not finish in %d ms; killing it", sb->id,
					  ATTACH_TIMEOUT_MS);
			kill(pid, SIGKILL);
		}
	}
	if (waitpid(pid, &status, 0) < 0)
		return -errno;
	if (WIFEXITED(status))
		return -WEXITSTATUS(status);
	return -ETIMEDOUT;
}

/* The tenant's mirror directory into the entry's container (git_mirror_dir set). */
static int
attach_tenant(struct sbx_sandbox *sb, const char *tenant)
{
	_cleanup_(freep) char *rel = run_git_mirror_dir(tenant);
	_cleanup_(freep) char *src = rel ? xasprintf("%s/%s", cfg.git_mirror_dir, rel) : NULL;

	if (!src)
		return -EIO;
	return attach_mount(sb, src, MIRROR_MOUNT_TENANT);
}

int
pool_take(const char *session_id, const char *tenant, const char *image, struct sbx_sandbox **ret)
{
	struct pool_image  *im = image_find(image);
	struct sbx_sandbox *sb = NULL;
	int					r;

	if (!im || im->size == 0)
		return -ENOENT;
	for (struct sbx_sandbox *s = sandboxes; s && !sb; s = s->next)
		if (s->pooled && !s->destroying && s->ct.state == CT_IDLE && !s->q_head &&
			strcmp(s->image, image) == 0)
			sb = s;
	if (!sb)
	{
		im->misses++;
		pool_kick();
		return -ENOENT;
	}
	if (tenant && tenant[0] && cfg.git_mirror_dir && (r = attach_tenant(sb, tenant)) < 0)
	{
		errno = -r;
		log_error("pool: cannot mount the git mirrors of tenant %s into entry %s: %m; "
				  "making the session's sandbox cold",
				  tenant, sb->id);
		attach_failures++;
		sandbox_destroy(sb, NULL, NULL);
		im->misses++;
		pool_kick();
		return -ENOENT;
	}
	r = sandbox_pool_assign(sb, session_id, tenant);
	if (r < 0)
	{
		sandbox_destroy(sb, NULL, NULL);
		im->misses++;
		pool_kick();
		return -ENOENT;
	}
	im->hits++;
	log_info("pool: entry %s of image %s is now the sandbox of session %s", sb->id, image,
			 session_id);
	run_kick(sb); /* its idle timer starts now */
	/*
	 * No pool_kick(): the next round (pool_interval) refills, so that the
	 * new entry's start does not compete with the session's first call.
	 */
	*ret = sb;
	return 0;
}

struct sbx_sandbox *
pool_victim(void)
{
	struct sbx_sandbox *starting = NULL;

	for (struct sbx_sandbox *sb = sandboxes; sb; sb = sb->next)
		if (sb->pooled && !sb->destroying && !sb->q_head)
		{
			if (sb->ct.state == CT_IDLE)
				return sb;
			if (sb->ct.state == CT_STARTING)
				starting = sb;
		}
	return starting;
}

void
pool_start_failed(struct sbx_sandbox *sb)
{
	char what[96];

	snprintf(what, sizeof what, "the container of pool entry %s did not come up", sb->id);
	backoff(what);
}

/* ---- reporting ------------------------------------------------------------------- */

json_t *
pool_json(void)
{
	json_t *by = json_object();
	size_t	total = 0, ready_total = 0;

	for (size_t i = 0; i < n_images; i++)
	{
		size_t ready, n = entries_of(&images[i], &ready);
		total += n;
		ready_total += ready;
		json_object_set_new(
			by, images[i].name,
			json_pack("{s:I, s:I, s:I, s:I, s:I}", "size", (json_int_t) images[i].size, "entries",
					  (json_int_t) n, "ready", (json_int_t) ready, "hits",
					  (json_int_t) images[i].hits, "misses", (json_int_t) images[i].misses));
	}
	return json_pack("{s:I, s:I, s:b, s:I, s:I, s:I, s:o}", "entries", (json_int_t) total, "ready",
					 (json_int_t) ready_total, "memory_pressure", pressure, "made",
					 (json_int_t) made, "failed", (json_int_t) failed, "shrunk",
					 (json_int_t) shrunk, "images", by);
}

void
pool_metrics(struct metrics_out *o)
{
	/* The samples of one metric stay together: one loop per name. */
	for (size_t i = 0; i < n_images; i++)
		metrics_gauge(o, "nadi_sandboxd_pool_size", "Warm pool entries wanted, by image.",
					  METRICS_LABELS("image", images[i].name), (double) images[i].size);
	for (size_t i = 0; i < n_images; i++)
		metrics_gauge(
			o, "nadi_sandboxd_pool_entries", "Warm pool entries (made or being made), by image.",
			METRICS_LABELS("image", images[i].name), (double) entries_of(&images[i], NULL));
	for (size_t i = 0; i < n_images; i++)
	{
		size_t ready;
		entries_of(&images[i], &ready);
		metrics_gauge(o, "nadi_sandboxd_pool_ready",
					  "Warm pool entries whose container is up, by image.",
					  METRICS_LABELS("image", images[i].name), (double) ready);
	}
	for (size_t i = 0; i < n_images; i++)
		metrics_counter(o, "nadi_sandboxd_pool_hits_total",
						"New sandboxes that took a warm pool entry, by image.",
						METRICS_LABELS("image", images[i].name), images[i].hits);
	for (size_t i = 0; i < n_images; i++)
		metrics_counter(o, "nadi_sandboxd_pool_misses_total",
						"New sandboxes made cold although the image has a pool, by image.",
						METRICS_LABELS("image", images[i].name), images[i].misses);
	metrics_counter(o, "nadi_sandboxd_pool_made_total", "Warm pool entries made.", NULL, made);
	metrics_counter(o, "nadi_sandboxd_pool_failures_total",
					"Warm pool entries that could not be made or started.", NULL, failed);
	metrics_counter(o, "nadi_sandboxd_pool_shrunk_total",
					"Warm pool entries given back under memory pressure.", NULL, shrunk);
	metrics_counter(o, "nadi_sandboxd_pool_attach_failures_total",
					"Pool entries dropped because a tenant's mirrors could not be mounted.", NULL,
					attach_failures);
	metrics_gauge(o, "nadi_sandboxd_pool_memory_pressure",
				  "Whether the pool sees memory pressure (and shrinks).", NULL, pressure ? 1 : 0);
}
