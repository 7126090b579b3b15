/*
 * btrfs_store.c — the sandbox store on BTRFS, through libbtrfsutil (see
 * btrfs_store.h for the layout).  When the state directory is not on BTRFS,
 * the store lives in a sparse image file under it, formatted once with
 * mkfs.btrfs and loop-mounted by the daemon itself (LOOP_CONFIGURE with
 * autoclear, so unmounting frees the device).  A mount left by a daemon that
 * crashed is found and used again.
 */
#include <btrfsutil.h>
#include <endian.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/btrfs.h>
#include <linux/btrfs_tree.h>
#include <linux/loop.h>
#include <linux/magic.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>

#include "child.h"
#include "sbx.h"
#include "btrfs_store.h"

static char *root; /* store root: the state dir, or the loop mount in it */
static int	 root_fd = -1;
static bool	 mounted_loop; /* we (or a crashed predecessor) loop-mounted root */

const char *
store_root(void)
{
	return root;
}

int
store_root_fd(void)
{
	return root_fd;
}

bool
store_is_loop(void)
{
	return mounted_loop;
}

/* mkdir -p, private to the daemon; logs a failure as "cannot create WHAT PATH". */
static int
make_dir(const char *what, const char *path)
{
	int r = mkdir_p(path, 0700);

	if (r < 0)
	{
		errno = -r;
		log_error("cannot create %s %s: %m", what, path);
	}
	return r;
}

static int
btrfs_errno(enum btrfs_util_error e, const char *what, const char *path)
{
	int r = errno ? -errno : -EIO;

	log_error("%s %s: %s (%s)", what, path, btrfs_util_strerror(e), strerror(-r));
	return r;
}

/*
 * Per-sandbox disk quota (disk_max): a BTRFS qgroup limit on the data a
 * sandbox holds exclusively, i.e. what it wrote beyond the shared image.
 */
static int
quota_enable(void)
{
	struct btrfs_ioctl_quota_ctl_args a = {.cmd = BTRFS_QUOTA_CTL_ENABLE};

	if (ioctl(root_fd, BTRFS_IOC_QUOTA_CTL, &a) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/*
 * The committed qgroup numbers of the subvolume at path (its level-0
 * qgroup): referenced and exclusive bytes.  -errno; -ENOENT without quotas.
 */
int
store_qgroup_usage(const char *path, uint64_t *rfer, uint64_t *excl)
{
	struct btrfs_ioctl_search_args			a = {0};
	const struct btrfs_ioctl_search_header *h = (const void *) a.buf;
	const uint64_t						   *item;
	uint64_t								id;
	enum btrfs_util_error					e;

	e = btrfs_util_subvolume_id(path, &id);
	if (e != BTRFS_UTIL_OK)
		return errno ? -errno : -EIO;
	a.key.tree_id = BTRFS_QUOTA_TREE_OBJECTID;
	a.key.min_type = a.key.max_type = BTRFS_QGROUP_INFO_KEY;
	a.key.min_offset = a.key.max_offset = id; /* qgroup 0/id */
	a.key.max_objectid = 0;
	a.key.max_transid = UINT64_MAX;
	a.key.nr_items = 1;
	if (ioctl(root_fd, BTRFS_IOC_TREE_SEARCH, &a) < 0)
		return -errno;
	if (a.key.nr_items < 1 || h->len < 5 * sizeof(uint64_t))
		return -ENOENT;
	/* struct btrfs_qgroup_info_item: generation, rfer, rfer_cmpr, excl, excl_cmpr (LE) */
	item = (const uint64_t *) (h + 1);
	*rfer = le64toh(item[1]);
	*excl = le64toh(item[3]);
	return 0;
}

/*
 * disk_max on a sandbox subvolume, twice: its exclusive data may not exceed
 * it, and neither may what it references beyond base_rfer (what its source
 * referenced when it was made).  The second closes the way around the
 * first that snapshots open: a snapshot shares the sandbox's data, so the
 * sandbox's exclusive bytes fall to nothing at every snapshot, while what
 * it references does not.
 */
static int
quota_limit(const char *path, uint64_t base_rfer)
{
	_cleanup_(closep) int				 fd = -1;
	struct btrfs_ioctl_qgroup_limit_args a = {0};

	if (cfg.disk_max == 0)
		return 0;
	fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	a.qgroupid = 0; /* the subvolume fd refers to */
	a.lim.flags = BTRFS_QGROUP_LIMIT_MAX_EXCL;
	a.lim.max_excl = cfg.disk_max;
	if (base_rfer)
	{
		a.lim.flags |= BTRFS_QGROUP_LIMIT_MAX_RFER;
		a.lim.max_rfer = base_rfer + cfg.disk_max;
	}
	return ioctl(fd, BTRFS_IOC_QGROUP_LIMIT, &a) < 0 ? -errno : 0;
}

/* What src references (the base of a sandbox made from it); 0 when unknown. */
static uint64_t
base_rfer_of(const char *src)
{
	uint64_t rfer = 0, excl;

	if (cfg.disk_max == 0 || store_qgroup_usage(src, &rfer, &excl) < 0)
		return 0;
	return rfer;
}

static bool
is_btrfs(const char *path)
{
	struct statfs sf;

	return statfs(path, &sf) == 0 && (uint64_t) sf.f_type == (uint64_t) BTRFS_SUPER_MAGIC;
}

static const char *
find_mkfs(void)
{
	static const char *cands[] = {"/usr/sbin/mkfs.btrfs", "/sbin/mkfs.btrfs",
								  "/usr/bin/mkfs.btrfs"};

	for (size_t i = 0; i < ARRAY_SIZE(cands); i++)
		if (access(cands[i], X_OK) == 0)
			return cands[i];
	return NULL;
}

/*
 * Attach image to a free loop device with autoclear; returns the device's
 * open fd, which must stay open until the file system is mounted (closing
 * the last reference of an unmounted autoclear device detaches it).
 */
static int
loop_attach(const char *image, char dev[64])
{
	_cleanup_(closep) int ctl = -1, img = -1;

	img = open(image, O_RDWR | O_CLOEXEC);
	if (img < 0)
		return -errno;
	ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	if (ctl < 0)
		return -errno;
	for (int attempt = 0; attempt < 16; attempt++)
	{
		_cleanup_(closep) int lfd = -1;
		struct loop_config	  lc = {0};
		int					  n = ioctl(ctl, LOOP_CTL_GET_FREE);

		if (n < 0)
			return -errno;
		snprintf(dev, 64, "/dev/loop%d", n);
		lfd = open(dev, O_RDWR | O_CLOEXEC);
		if (lfd < 0)
			return -errno;
		lc.fd = (uint32_t) img;
		lc.info.lo_flags = LO_FLAGS_AUTOCLEAR;
		snprintf((char *) lc.info.lo_file_name, sizeof lc.info.lo_file_name, "%s", image);
		if (ioctl(lfd, LOOP_CONFIGURE, &lc) == 0)
		{
			int ret = lfd;
			lfd = -1;
			return ret;
		}
		if (errno != EBUSY)
			return -errno;
		/* Another process took this device between GET_FREE and CONFIGURE. */
	}
	return -EBUSY;
}

/*
 * Make root a BTRFS file system: the state dir itself, or a loop-mounted
 * image file in it.  The mount keeps the loop device alive (autoclear).
 */
static int
setup_root(void)
{
	_cleanup_(freep) char *img = NULL, *mnt = NULL;
	_cleanup_(closep) int  lfd = -1;
	struct stat			   st_state, st_mnt;
	char				   dev[64], err[512];
	int					   r;

	r = make_dir("state dir", cfg.state_dir);
	if (r < 0)
		return r;
	if (is_btrfs(cfg.state_dir))
	{
		root = strdup(cfg.state_dir);
		log_info("state dir %s is on BTRFS; using it directly", cfg.state_dir);
		return root ? 0 : -ENOMEM;
	}

	img = xasprintf("%s/store.img", cfg.state_dir);
	mnt = xasprintf("%s/store", cfg.state_dir);
	if (!img || !mnt)
		return -ENOMEM;
	if (mkdir(mnt, 0700) < 0 && errno != EEXIST)
		return -errno;
	if (stat(cfg.state_dir, &st_state) < 0 || stat(mnt, &st_mnt) < 0)
		return -errno;
	if (st_mnt.st_dev != st_state.st_dev && is_btrfs(mnt))
	{
		log_notice("state dir %s is not on BTRFS; re-using the BTRFS image already mounted at %s",
				   cfg.state_dir, mnt);
		goto done;
	}

	log_notice("state dir %s is not on BTRFS; using a loop-mounted BTRFS image %s (%llu MiB)",
			   cfg.state_dir, img, (unsigned long long) (cfg.loop_size >> 20));
	if (access(img, F_OK) < 0)
	{
		_cleanup_(closep) int fd = open(img, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		const char			 *mkfs = find_mkfs();

		if (fd < 0 || ftruncate(fd, (off_t) cfg.loop_size) < 0)
		{
			log_error("cannot create %s: %m", img);
			unlink(img);
			return -errno;
		}
		if (!mkfs)
		{
			log_error("mkfs.btrfs not found (install btrfs-progs)");
			unlink(img);
			return -ENOENT;
		}
		r = child_run_sync((const char *[]){mkfs, "-q", "-L", "nadi-sandboxd", img, NULL}, err,
						   sizeof err);
		if (r != 0)
		{
			log_error("mkfs.btrfs %s failed: %s", img, err);
			unlink(img);
			return -EIO;
		}
	}
	lfd = loop_attach(img, dev);
	if (lfd < 0)
	{
		errno = -lfd;
		log_error("cannot attach %s to a loop device: %m", img);
		return lfd;
	}
	if (mount(dev, mnt, "btrfs", MS_NOSUID | MS_NODEV | MS_NOATIME, NULL) < 0)
	{
		r = -errno;
		log_error("cannot mount %s (%s) on %s: %m", dev, img, mnt);
		return r; /* closing lfd detaches the device (autoclear) */
	}
	log_info("mounted %s on %s", dev, mnt);
done:
	mounted_loop = true;
	root = mnt;
	mnt = NULL;
	return 0;
}

static int
ensure_dir(int dirfd, const char *name, mode_t mode, uid_t uid, gid_t gid)
{
	struct stat st;

	if (mkdirat(dirfd, name, mode) == 0)
	{
		if (fchownat(dirfd, name, uid, gid, AT_SYMLINK_NOFOLLOW) < 0 ||
			fchmodat(dirfd, name, mode, 0) < 0)
			return -errno;
		return 0;
	}
	if (errno != EEXIST)
		return -errno;
	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

/* Read the stamp an image build leaves (or the tree's mtime) to detect rebuilds. */
static char *
image_stamp(const char *src)
{
	_cleanup_(freep) char *p = xasprintf("%s/.nadi-image", src);
	char				  *buf = NULL;
	size_t				   len;
	struct stat			   st;

	if (p && read_full_file(AT_FDCWD, p, &buf, &len, 4096) == 0)
	{
		while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == ' '))
			buf[--len] = '\0';
		return buf;
	}
	if (stat(src, &st) < 0)
		return NULL;
	return xasprintf("mtime:%lld.%09ld", (long long) st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
}

static int
import_image(const char *name, const char *src)
{
	_cleanup_(freep) char *dst = xasprintf("%s/images/%s", root, name);
	_cleanup_(freep) char *tmp = xasprintf("%s/images/.%s.import", root, name);
	_cleanup_(freep) char *stamp_path = xasprintf("meta/images/%s.stamp", name);
	_cleanup_(freep) char *stamp = image_stamp(src);
	_cleanup_(freep) char *old = NULL;
	_cleanup_(freep) char *srcdot = xasprintf("%s/.", src);
	enum btrfs_util_error  e;
	uint64_t			   t0 = now_ms();
	char				   err[512];
	int					   r;

	if (!dst || !tmp || !stamp_path || !stamp || !srcdot)
		return -ENOMEM;
	if (read_full_file(root_fd, stamp_path, &old, NULL, 4096) == 0 && strcmp(old, stamp) == 0 &&
		btrfs_util_is_subvolume(dst) == BTRFS_UTIL_OK)
		return 0;

	if (btrfs_util_is_subvolume(tmp) == BTRFS_UTIL_OK)
		store_delete_subvolume(tmp);
	if (btrfs_util_is_subvolume(src) == BTRFS_UTIL_OK && is_btrfs(src))
	{
		/* Same file system: an O(1) read-only snapshot. */
		e = btrfs_util_create_snapshot(src, tmp, BTRFS_UTIL_CREATE_SNAPSHOT_READ_ONLY, NULL, NULL);
		if (e == BTRFS_UTIL_OK)
			goto installed;
		log_info("cannot snapshot %s directly (%s); copying it", src, btrfs_util_strerror(e));
	}
	e = btrfs_util_create_subvolume(tmp, 0, NULL, NULL);
	if (e != BTRFS_UTIL_OK)
		return btrfs_errno(e, "cannot create subvolume", tmp);
	r = child_run_sync((const char *[]){"/bin/cp", "-a", "--reflink=auto", srcdot, tmp, NULL}, err,
					   sizeof err);
	if (r != 0)
	{
		log_error("copying image %s into %s failed: %s", src, tmp, err);
		store_delete_subvolume(tmp);
		return -EIO;
	}
	e = btrfs_util_set_subvolume_read_only(tmp, true);
	if (e != BTRFS_UTIL_OK)
	{
		r = btrfs_errno(e, "cannot make read-only", tmp);
		store_delete_subvolume(tmp);
		return r;
	}
installed:
	if (btrfs_util_is_subvolume(dst) == BTRFS_UTIL_OK)
		store_delete_subvolume(dst); /* sandboxes made from it keep their own snapshots */
	if (rename(tmp, dst) < 0)
	{
		r = -errno;
		log_error("cannot rename %s to %s: %m", tmp, dst);
		store_delete_subvolume(tmp);
		return r;
	}
	/*
	 * Write the copied data out now: a snapshot flushes its source's dirty
	 * data first, and the first sandbox of a large image would pay for it.
	 */
	e = btrfs_util_sync(dst);
	if (e != BTRFS_UTIL_OK)
		log_warning("cannot sync %s: %s", dst, btrfs_util_strerror(e));
	r = write_file_atomic(root_fd, stamp_path, stamp, strlen(stamp), 0600);
	if (r < 0)
		log_warning("cannot record stamp of image %s: %s", name, strerror(-r));
	log_info("imported image %s from %s in %llu ms", name, src,
			 (unsigned long long) (now_ms() - t0));
	return 0;
}

static void
import_images(void)
{
	DIR			  *d = opendir(cfg.image_dir);
	struct dirent *de;

	if (!d)
	{
		log_warning("image dir %s: %m; no base images available", cfg.image_dir);
		return;
	}
	while ((de = readdir(d)))
	{
		_cleanup_(freep) char *src = NULL;
		struct stat			   st;

		if (de->d_name[0] == '.' || !id_valid(de->d_name, 64))
			continue;
		src = xasprintf("%s/%s", cfg.image_dir, de->d_name);
		if (!src || stat(src, &st) < 0 || !S_ISDIR(st.st_mode))
			continue;
		if (import_image(de->d_name, src) < 0)
			log_error("image %s is unavailable", de->d_name);
	}
	closedir(d);
}

int
store_init(void)
{
	static const char *dirs[] = {"images", "sandboxes",	  "snapshots",	"incoming",
								 "meta",   "meta/images", "meta/userns"};
	int				   r;

	r = setup_root();
	if (r < 0)
		return r;
	root_fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (root_fd < 0)
		return -errno;
	for (size_t i = 0; i < ARRAY_SIZE(dirs); i++)
	{
		r = ensure_dir(root_fd, dirs[i], 0700, 0, 0);
		if (r < 0)
		{
			errno = -r;
			log_error("cannot create %s/%s: %m", root, dirs[i]);
			return r;
		}
	}
	/* Containers traverse images/ and sandboxes/ only as root; nothing else needs to. */
	r = make_dir("object dir", cfg.object_dir);
	if (r < 0)
		return r;
	if (cfg.disk_max)
	{
		r = quota_enable();
		if (r < 0)
		{
			errno = -r;
			log_error("cannot enable BTRFS quotas on %s (needed for disk_max): %m", root);
			return r;
		}
		log_notice("disk quota: %llu MiB per sandbox (BTRFS qgroup, exclusive data)",
				   (unsigned long long) (cfg.disk_max >> 20));
	}
	import_images();
	return 0;
}

void
store_done(bool unmount)
{
	if (root_fd >= 0)
		close(root_fd);
	root_fd = -1;
	if (unmount && mounted_loop && root)
	{
		if (umount2(root, 0) < 0)
		{
			log_warning("cannot unmount %s (%m); detaching it lazily", root);
			umount2(root, MNT_DETACH);
		}
		else
			log_info("unmounted %s", root);
	}
	free(root);
	root = NULL;
}

int
store_image_exists(const char *image)
{
	_cleanup_(freep) char *p = xasprintf("%s/images/%s", root, image);

	if (!p)
		return -ENOMEM;
	if (btrfs_util_is_subvolume(p) == BTRFS_UTIL_OK)
		return 1;
	/* An image that appeared in image_dir after start is imported on first use. */
	_cleanup_(freep) char *src = xasprintf("%s/%s", cfg.image_dir, image);
	struct stat			   st;
	if (src && stat(src, &st) == 0 && S_ISDIR(st.st_mode) && import_image(image, src) == 0)
		return 1;
	return 0;
}

static char **
list_dir(const char *rel, bool subvolumes_only)
{
	_cleanup_(freep) char *path = xasprintf("%s/%s", root, rel);
	DIR					  *d;
	struct dirent		  *de;
	char				 **v = NULL;
	size_t				   n = 0;

	if (!path || !(d = opendir(path)))
		return calloc(1, sizeof(char *));
	while ((de = readdir(d)))
	{
		if (de->d_name[0] == '.')
			continue;
		if (subvolumes_only)
		{
			_cleanup_(freep) char *p = xasprintf("%s/%s", path, de->d_name);
			if (!p || btrfs_util_is_subvolume(p) != BTRFS_UTIL_OK)
				continue;
		}
		char **nv = realloc(v, (n + 2) * sizeof(char *));
		if (!nv)
			break;
		v = nv;
		v[n] = strdup(de->d_name);
		if (v[n])
			n++;
		v[n] = NULL;
	}
	closedir(d);
	return v ? v : calloc(1, sizeof(char *));
}

char **
store_sandbox_list(void)
{
	return list_dir("sandboxes", false);
}

void
store_strv_free(char **v)
{
	for (char **p = v; p && *p; p++)
		free(*p);
	free(v);
}

char *
store_sandbox_path(const char *id)
{
	return xasprintf("%s/sandboxes/%s", root, id);
}

int
store_sandbox_quota(const char *id, const char *image)
{
	_cleanup_(freep) char *p = store_sandbox_path(id);
	_cleanup_(freep) char *img = image ? xasprintf("%s/images/%s", root, image) : NULL;

	if (!p)
		return -ENOMEM;
	return quota_limit(p, img && btrfs_util_is_subvolume(img) == BTRFS_UTIL_OK ? base_rfer_of(img)
																			   : 0);
}

bool
store_sandbox_exists(const char *id)
{
	_cleanup_(freep) char *p = store_sandbox_path(id);

	return p && btrfs_util_is_subvolume(p) == BTRFS_UTIL_OK;
}

/*
 * User namespace ranges (private_users).  A sandbox's slot N is recorded in
 * meta/userns/ID when its first container starts, so that restarts and
 * adoption keep its range; it is freed with the sandbox.  A new sandbox
 * takes the lowest slot no existing sandbox holds.  With
 * --private-users-ownership=map nothing on disk depends on the range, so
 * the record is about which ranges are in use, never about file ownership.
 */
static void
userns_forget(const char *id)
{
	_cleanup_(freep) char *rel = xasprintf("meta/userns/%s", id);

	if (rel && unlinkat(root_fd, rel, 0) < 0 && errno != ENOENT)
		log_warning("cannot remove %s/%s: %m", root, rel);
}

static uint64_t
userns_slots(void)
{
	return (SBX_USERNS_END - cfg.private_users_base) / SBX_USERNS_SIZE;
}

/* The recorded slot of id, or -errno (-ENOENT: none yet). */
static int64_t
userns_read(const char *id)
{
	_cleanup_(freep) char *rel = xasprintf("meta/userns/%s", id);
	_cleanup_(freep) char *buf = NULL;
	char				  *end;
	unsigned long long	   v;
	int					   r;

	if (!rel)
		return -ENOMEM;
	r = read_full_file(root_fd, rel, &buf, NULL, 64);
	if (r < 0)
		return r;
	errno = 0;
	v = strtoull(buf, &end, 10);
	if (errno || end == buf || (*end && *end != '\n') || v >= userns_slots())
		return -EBADMSG;
	return (int64_t) v;
}

static int64_t
userns_allocate(const char *id)
{
	_cleanup_(freep) bool *used = NULL;
	_cleanup_(freep) char *rel = xasprintf("meta/userns/%s", id);
	uint64_t			   n = userns_slots(), slot;
	int					   dfd = openat(root_fd, "meta/userns", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR					  *d = dfd >= 0 ? fdopendir(dfd) : NULL;
	struct dirent		  *de;
	char				   text[32];
	int					   r;

	used = calloc(n, sizeof *used);
	if (!d || !used || !rel)
	{
		if (d)
			closedir(d);
		else if (dfd >= 0)
			close(dfd);
		return d || dfd < 0 ? -errno : -ENOMEM;
	}
	while ((de = readdir(d)))
	{
		int64_t k;

		if (!id_valid(de->d_name, 64) || strcmp(de->d_name, id) == 0)
			continue;
		if (!store_sandbox_exists(de->d_name))
		{
			userns_forget(de->d_name); /* left by a crash during destroy */
			continue;
		}
		k = userns_read(de->d_name);
		if (k >= 0)
			used[k] = true;
	}
	closedir(d);
	for (slot = 0; slot < n && used[slot]; slot++)
		;
	if (slot == n)
		return -EUSERS;
	snprintf(text, sizeof text, "%llu\n", (unsigned long long) slot);
	r = write_file_atomic(root_fd, rel, text, strlen(text), 0600);
	return r < 0 ? r : (int64_t) slot;
}

int
store_userns_base(const char *id, uint64_t *base)
{
	int64_t slot = userns_read(id);

	if (slot == -ENOENT || slot == -EBADMSG)
		slot = userns_allocate(id);
	if (slot < 0)
		return (int) slot;
	*base = cfg.private_users_base + (uint64_t) slot * SBX_USERNS_SIZE;
	return 0;
}

/*
 * What systemd-nspawn adds to a tree on its first start (its
 * base-filesystem table: /bin, /lib, /sbin and /lib64 as links into /usr
 * where /usr has them, /usr, /var and /root), made here once: otherwise the
 * first container start writes into the sandbox and the call it serves
 * looks as if it had changed the files (a workspace snapshot for nothing).
 */
static void
base_filesystem(int fd)
{
	static const char *const links[][3] = {
		{"bin", "usr/bin", NULL},
		{"lib", "usr/lib", NULL},
		{"sbin", "usr/sbin", NULL},
#if defined(__x86_64__)
		{"lib64", "usr/lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"},
		{"lib64", "usr/lib64", "usr/lib64/ld-linux-x86-64.so.2"},
#endif
	};
	struct stat st;

	for (size_t i = 0; i < ARRAY_SIZE(links); i++)
	{
		const char *check = links[i][2] ? links[i][2] : links[i][1];
		if (fstatat(fd, links[i][0], &st, AT_SYMLINK_NOFOLLOW) == 0 ||
			fstatat(fd, check, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (symlinkat(links[i][1], fd, links[i][0]) < 0)
			log_debug("cannot link %s to %s in a sandbox root: %m", links[i][0], links[i][1]);
	}
	ensure_dir(fd, "usr", 0755, 0, 0);
	ensure_dir(fd, "var", 0755, 0, 0);
	ensure_dir(fd, "root", 0700, 0, 0);
}

/*
 * Give a fresh sandbox root the mount points the container needs: the
 * workspace (owned by the sandbox user), the init's directory and file, and
 * the API file systems' directories, which a read-only root cannot grow.
 */
static int
prepare_root(const char *path)
{
	static const struct
	{
		const char *name;
		mode_t		mode;
	} dirs[] = {{"tmp", 01777}, {"proc", 0555}, {"sys", 0555},		  {"dev", 0755},
				{"run", 0755},	{"etc", 0755},	{SBX_AGENT_DIR, 0755}};
	_cleanup_(closep) int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	_cleanup_(closep) int f = -1;
	int					  r;

	if (fd < 0)
		return -errno;
	for (size_t i = 0; i < ARRAY_SIZE(dirs); i++)
	{
		r = ensure_dir(fd, dirs[i].name, dirs[i].mode, 0, 0);
		if (r < 0)
			return r;
	}
	r = ensure_dir(fd, SBX_WORKSPACE, 0755, cfg.run_uid, cfg.run_gid);
	if (r < 0)
		return r;
	base_filesystem(fd);
	f = openat(fd, SBX_AGENT_DIR "/init", O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0755);
	if (f < 0)
		return -errno;
	/* systemd-nspawn refuses a tree without os-release. */
	if (faccessat(fd, "etc/os-release", F_OK, AT_SYMLINK_NOFOLLOW) < 0 &&
		faccessat(fd, "usr/lib/os-release", F_OK, AT_SYMLINK_NOFOLLOW) < 0)
	{
		_cleanup_(closep) int o =
			openat(fd, "etc/os-release", O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
		if (o >= 0)
			(void) !write(o, "ID=nadi-sandbox\n", 16);
	}
	return 0;
}

int
store_sandbox_from_subvolume(const char *id, const char *src, const char *image)
{
	_cleanup_(freep) char *dst = store_sandbox_path(id);
	_cleanup_(freep) char *base = image ? xasprintf("%s/images/%s", root, image) : NULL;
	enum btrfs_util_error  e;
	int					   r;

	if (!dst)
		return -ENOMEM;
	e = btrfs_util_create_snapshot(src, dst, 0, NULL, NULL);
	if (e != BTRFS_UTIL_OK)
		return btrfs_errno(e, "cannot snapshot into", dst);
	/* The quota counts from the image when this host has it (a fork, a rollback). */
	if (!base || btrfs_util_is_subvolume(base) != BTRFS_UTIL_OK)
	{
		free(base);
		base = NULL;
	}
	r = quota_limit(dst, base_rfer_of(base ? base : src));
	if (r < 0)
	{
		errno = -r;
		log_error("cannot set the disk quota of %s: %m", dst);
		store_delete_subvolume(dst);
		return r;
	}
	r = prepare_root(dst);
	if (r < 0)
	{
		errno = -r;
		log_error("cannot prepare sandbox root %s: %m", dst);
		store_delete_subvolume(dst);
	}
	return r;
}

int
store_sandbox_create(const char *id, const char *image)
{
	_cleanup_(freep) char *src = xasprintf("%s/images/%s", root, image);

	if (!src)
		return -ENOMEM;
	return store_sandbox_from_subvolume(id, src, image);
}

int
store_delete_subvolume(const char *path)
{
	enum btrfs_util_error e;

	errno = 0;
	e = btrfs_util_delete_subvolume(path, BTRFS_UTIL_DELETE_SUBVOLUME_RECURSIVE);
	if (e == BTRFS_UTIL_OK || errno == ENOENT)
		return 0;
	if (e == BTRFS_UTIL_ERROR_NOT_SUBVOLUME)
	{
		/* A plain directory (a half-made restore, say): remove it as such. */
		int r = rm_rf_at(AT_FDCWD, path);
		return r;
	}
	return btrfs_errno(e, "cannot delete subvolume", path);
}

int
store_sandbox_delete(const char *id)
{
	_cleanup_(freep) char *snaps = xasprintf("%s/snapshots/%s", root, id);
	_cleanup_(freep) char *path = store_sandbox_path(id);
	char				 **names;
	int					   r = 0;

	if (!snaps || !path)
		return -ENOMEM;
	names = store_snapshot_list(id);
	for (char **n = names; n && *n; n++)
	{
		_cleanup_(freep) char *p = store_snapshot_path(id, *n);
		int					   k = p ? store_delete_subvolume(p) : -ENOMEM;
		if (k < 0 && r == 0)
			r = k;
	}
	store_strv_free(names);
	if (rmdir(snaps) < 0 && errno != ENOENT && r == 0)
		r = -errno;
	userns_forget(id);
	if (access(path, F_OK) == 0)
	{
		int k = store_delete_subvolume(path);
		if (k < 0 && r == 0)
			r = k;
	}
	return r;
}

void
store_remove_dir(const char *dir)
{
	DIR			  *d = opendir(dir);
	struct dirent *de;

	while (d && (de = readdir(d)))
	{
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		_cleanup_(freep) char *p = xasprintf("%s/%s", dir, de->d_name);
		if (p)
			store_delete_subvolume(p);
	}
	if (d)
		closedir(d);
	/* A subvolume, or not a directory at all, goes as store_delete_subvolume removes it. */
	if (rmdir(dir) < 0 && errno != ENOENT && store_delete_subvolume(dir) < 0)
		log_warning("cannot remove %s: %m", dir);
}

char *
store_snapshot_path(const char *id, const char *name)
{
	return xasprintf("%s/snapshots/%s/%s", root, id, name);
}

char **
store_snapshot_list(const char *id)
{
	_cleanup_(freep) char *rel = xasprintf("snapshots/%s", id);

	return rel ? list_dir(rel, true) : calloc(1, sizeof(char *));
}

int
store_snapshot_create(const char *id, const char *name)
{
	_cleanup_(freep) char *dir = xasprintf("%s/snapshots/%s", root, id);
	_cleanup_(freep) char *src = store_sandbox_path(id);
	_cleanup_(freep) char *dst = store_snapshot_path(id, name);
	enum btrfs_util_error  e;

	if (!dir || !src || !dst)
		return -ENOMEM;
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	if (access(dst, F_OK) == 0)
		return -EEXIST;
	e = btrfs_util_create_snapshot(src, dst, BTRFS_UTIL_CREATE_SNAPSHOT_READ_ONLY, NULL, NULL);
	if (e != BTRFS_UTIL_OK)
		return btrfs_errno(e, "cannot snapshot", src);
	return 0;
}

int
store_snapshot_delete(const char *id, const char *name)
{
	_cleanup_(freep) char *p = store_snapshot_path(id, name);

	return p ? store_delete_subvolume(p) : -ENOMEM;
}

int
store_subvolume_times(const char *path, uint64_t *otransid, time_t *otime)
{
	struct btrfs_util_subvolume_info info;
	enum btrfs_util_error			 e;

	errno = 0;
	e = btrfs_util_subvolume_info(path, 0, &info);
	if (e != BTRFS_UTIL_OK)
		return errno ? -errno : -EIO;
	if (otransid)
		*otransid = info.otransid;
	if (otime)
		*otime = info.otime.tv_sec;
	return 0;
}

/*
 * Whether the sandbox's file tree holds anything written in a transaction
 * after gen: a tree search of its subvolume for items in blocks newer than
 * gen.  It sees the running transaction, so a write that is not committed
 * yet counts (the subvolume's own generation and ctransid do not move until
 * the commit).  1: changed, 0: not, -errno.
 */
int
store_sandbox_changed_since(const char *id, uint64_t gen)
{
	_cleanup_(freep) char		  *p = store_sandbox_path(id);
	_cleanup_(closep) int		   fd = -1;
	struct btrfs_ioctl_search_args a = {0};

	if (!p)
		return -ENOMEM;
	fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	a.key.tree_id = 0; /* the subvolume fd is in */
	a.key.max_objectid = UINT64_MAX;
	a.key.max_type = UINT32_MAX;
	a.key.max_offset = UINT64_MAX;
	a.key.min_transid = gen + 1;
	a.key.max_transid = UINT64_MAX;
	a.key.nr_items = 1;
	if (ioctl(fd, BTRFS_IOC_TREE_SEARCH, &a) < 0)
		return -errno;
	return a.key.nr_items > 0;
}

uint64_t
store_free_bytes(void)
{
	struct statvfs sv;

	if (!root || statvfs(root, &sv) < 0)
		return 0;
	return (uint64_t) sv.f_bavail * sv.f_frsize;
}
