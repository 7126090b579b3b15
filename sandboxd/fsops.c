/*
 * fsops.c — workspace file operations from the host (see fsops.h).  Every
 * lookup goes through openat2() relative to the workspace directory with
 * RESOLVE_BENEATH, so neither "..", an absolute symlink nor a symlink
 * swapped in by a tool between two calls can lead outside it.  Files are
 * opened non-blocking and checked to be regular before any I/O, so a FIFO
 * or device planted in the workspace cannot stall the daemon.
 */
#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>

#include "fsops.h"
#include "sbx.h"
#include "btrfs_store.h"

#define RESOLVE_FLAGS (RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)

static int
open_beneath(int dirfd, const char *path, uint64_t flags, uint64_t mode)
{
	/* openat2 is strict: O_PATH takes no other flags than these. */
	uint64_t		extra = (flags & O_PATH) ? O_CLOEXEC : O_CLOEXEC | O_NOCTTY;
	struct open_how how = {.flags = flags | extra, .mode = mode, .resolve = RESOLVE_FLAGS};
	long			fd;

	do
		fd = syscall(SYS_openat2, dirfd, path, &how, sizeof how);
	while (fd < 0 && errno == EAGAIN); /* RESOLVE_BENEATH retries on concurrent renames */
	return fd < 0 ? -errno : (int) fd;
}

int
fs_open_workspace(const char *id)
{
	_cleanup_(freep) char *root = store_sandbox_path(id);
	_cleanup_(closep) int  rfd = -1;
	int					   fd;

	if (!root)
		return -ENOMEM;
	rfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (rfd < 0)
		return -errno;
	fd = openat(rfd, SBX_WORKSPACE, O_PATH | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	return fd < 0 ? -errno : fd;
}

int
fs_normalize(const char *path, char *out, size_t outlen)
{
	const char *p = path, *prefix = "/" SBX_WORKSPACE;
	size_t		o = 0, plen = strlen(prefix);

	if (!path || !*path)
	{
		snprintf(out, outlen, ".");
		return 0;
	}
	if (strlen(path) >= 4096 || outlen < 2)
		return -ENAMETOOLONG;
	if (*p == '/')
	{
		if (strncmp(p, prefix, plen) != 0 || (p[plen] != '\0' && p[plen] != '/'))
			return -EXDEV;
		p += plen;
	}
	while (*p)
	{
		size_t n;

		while (*p == '/')
			p++;
		if (!*p)
			break;
		n = strcspn(p, "/");
		if (n == 2 && p[0] == '.' && p[1] == '.')
			return -EXDEV;
		if (!(n == 1 && p[0] == '.'))
		{
			if (n > 255)
				return -ENAMETOOLONG;
			if (o + n + 2 > outlen)
				return -ENAMETOOLONG;
			if (o)
				out[o++] = '/';
			memcpy(out + o, p, n);
			o += n;
		}
		p += n;
	}
	if (o == 0)
		out[o++] = '.';
	out[o] = '\0';
	return 0;
}

static int
open_regular(int ws, const char *path, int flags, struct stat *st)
{
	char rel[4096];
	int	 fd, r;

	r = fs_normalize(path, rel, sizeof rel);
	if (r < 0)
		return r;
	fd = open_beneath(ws, rel, (uint64_t) flags | O_NONBLOCK, 0);
	if (fd < 0)
		return fd;
	if (fstat(fd, st) < 0)
	{
		r = -errno;
		close(fd);
		return r;
	}
	if (!S_ISREG(st->st_mode))
	{
		close(fd);
		return S_ISDIR(st->st_mode) ? -EISDIR : -EBADFD;
	}
	return fd;
}

static int
read_fd(int fd, char *buf, size_t len, size_t *got)
{
	*got = 0;
	while (*got < len)
	{
		ssize_t n = read(fd, buf + *got, len - *got);
		if (n < 0)
		{
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		*got += (size_t) n;
	}
	return 0;
}

static int
write_fd(int fd, const char *buf, size_t len, off_t off)
{
	while (len > 0)
	{
		ssize_t n = pwrite(fd, buf, len, off);
		if (n < 0)
		{
			if (errno == EINTR)
				continue;
			return -errno;
		}
		buf += n;
		len -= (size_t) n;
		off += n;
	}
	return 0;
}

int
fs_read(int ws, const char *path, size_t max, char **data, size_t *len, bool *truncated)
{
	struct stat			  st;
	_cleanup_(closep) int fd = open_regular(ws, path, O_RDONLY, &st);
	size_t				  want;
	char				 *buf;
	int					  r;

	if (fd < 0)
		return fd;
	want = (uint64_t) st.st_size > max ? max : (size_t) st.st_size;
	buf = malloc(want + 1);
	if (!buf)
		return -ENOMEM;
	r = read_fd(fd, buf, want, len);
	if (r < 0)
	{
		free(buf);
		return r;
	}
	buf[*len] = '\0';
	*data = buf;
	*truncated = (uint64_t) st.st_size > max;
	return 0;
}

int
fs_open_read(int ws, const char *path, struct stat *st)
{
	int fd = open_regular(ws, path, O_RDONLY, st);

	if (fd >= 0)
		fcntl(fd, F_SETFL, 0);
	return fd;
}

/* Create the missing directories of rel's parent, each looked up beneath ws. */
static int
make_parents(int ws, const char *rel)
{
	char		prefix[4096];
	const char *slash = rel;

	while ((slash = strchr(slash, '/')))
	{
		size_t				  n = (size_t) (slash - rel);
		const char			 *leaf;
		_cleanup_(closep) int parent = -1;

		memcpy(prefix, rel, n);
		prefix[n] = '\0';
		leaf = strrchr(prefix, '/');
		if (leaf)
		{
			char up[4096];
			memcpy(up, prefix, (size_t) (leaf - prefix));
			up[leaf - prefix] = '\0';
			parent = open_beneath(ws, up, O_PATH | O_DIRECTORY, 0);
			leaf++;
		}
		else
		{
			parent = fcntl(ws, F_DUPFD_CLOEXEC, 3);
			leaf = prefix;
		}
		if (parent < 0)
			return parent;
		if (mkdirat(parent, leaf, 0755) == 0)
		{
			if (fchownat(parent, leaf, cfg.run_uid, cfg.run_gid, AT_SYMLINK_NOFOLLOW) < 0)
				return -errno;
		}
		else if (errno != EEXIST)
			return -errno;
		slash++;
	}
	return 0;
}

int
fs_write(int ws, const char *path, const void *data, size_t len, bool create_parents, bool *created)
{
	char				  rel[4096];
	struct stat			  st;
	_cleanup_(closep) int fd = -1;
	int					  r;

	r = fs_normalize(path, rel, sizeof rel);
	if (r < 0)
		return r;
	if (strcmp(rel, ".") == 0)
		return -EISDIR;
	if (create_parents)
	{
		r = make_parents(ws, rel);
		if (r < 0)
			return r;
	}
	*created = false;
	fd = open_beneath(ws, rel, O_WRONLY | O_CREAT | O_EXCL | O_NONBLOCK, 0644);
	if (fd >= 0)
	{
		*created = true;
		if (fchown(fd, cfg.run_uid, cfg.run_gid) < 0)
			return -errno;
	}
	else if (fd == -EEXIST)
	{
		fd = open_beneath(ws, rel, O_WRONLY | O_NONBLOCK, 0);
		if (fd < 0)
			return fd;
	}
	else
		return fd;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return S_ISDIR(st.st_mode) ? -EISDIR : -EBADFD;
	if (ftruncate(fd, 0) < 0)
		return -errno;
	return write_fd(fd, data, len, 0);
}

int
fs_edit(int ws, const char *path, const char *old, size_t old_len, const char *new_, size_t new_len,
		bool all, size_t max, size_t *count)
{
	struct stat			   st;
	_cleanup_(closep) int  fd = -1;
	_cleanup_(freep) char *buf = NULL, *out = NULL;
	size_t				   len, n = 0, o = 0;
	const char			  *p, *end;
	int					   r;

	if (old_len == 0)
		return -EINVAL;
	fd = open_regular(ws, path, O_RDWR, &st);
	if (fd < 0)
		return fd;
	if ((uint64_t) st.st_size > max)
		return -EFBIG;
	buf = malloc((size_t) st.st_size + 1);
	if (!buf)
		return -ENOMEM;
	r = read_fd(fd, buf, (size_t) st.st_size, &len);
	if (r < 0)
		return r;
	end = buf + len;
	for (p = buf; (p = memmem(p, (size_t) (end - p), old, old_len)); p += old_len)
		n++;
	*count = n;
	if (n == 0)
		return -ENODATA;
	if (n > 1 && !all)
		return -ENOTUNIQ;
	if (new_len > old_len && (new_len - old_len) > (max - len) / n)
		return -EFBIG;
	out = malloc(len - n * old_len + n * new_len + 1);
	if (!out)
		return -ENOMEM;
	for (p = buf;;)
	{
		const char *hit = memmem(p, (size_t) (end - p), old, old_len);
		size_t		keep = hit ? (size_t) (hit - p) : (size_t) (end - p);
		memcpy(out + o, p, keep);
		o += keep;
		if (!hit)
			break;
		memcpy(out + o, new_, new_len);
		o += new_len;
		p = hit + old_len;
	}
	r = write_fd(fd, out, o, 0);
	if (r < 0)
		return r;
	if (ftruncate(fd, (off_t) o) < 0)
		return -errno;
	return 0;
}

bool
fs_is_dir(int ws, const char *path)
{
	char				  rel[4096];
	struct stat			  st;
	_cleanup_(closep) int fd = -1;

	if (fs_normalize(path, rel, sizeof rel) < 0)
		return false;
	fd = open_beneath(ws, rel, O_PATH, 0);
	return fd >= 0 && fstat(fd, &st) == 0 && S_ISDIR(st.st_mode);
}

int
fs_exists(int ws, const char *path)
{
	char rel[4096];
	int	 fd, r;

	r = fs_normalize(path, rel, sizeof rel);
	if (r < 0)
		return r;
	fd = open_beneath(ws, rel, O_PATH | O_NOFOLLOW, 0);
	if (fd == -ENOENT)
		return 0;
	if (fd < 0)
		return fd;
	close(fd);
	return 1;
}

static int
cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

static int
list_into(int dfd, const char *prefix, bool recursive, int depth, size_t max, json_t *arr,
		  bool *truncated)
{
	_cleanup_(closep) int fd = fcntl(dfd, F_DUPFD_CLOEXEC, 3);
	char				**names = NULL;
	size_t				  n = 0, cap = 0;
	struct dirent		 *de;
	DIR					 *d;

	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d)
		return -errno;
	fd = -1;
	rewinddir(d);
	while ((de = readdir(d)))
	{
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (n == cap)
		{
			char **nn = realloc(names, (cap = cap ? cap * 2 : 64) * sizeof(char *));
			if (!nn)
				break;
			names = nn;
		}
		if (!(names[n] = strdup(de->d_name)))
			break;
		n++;
		if (n > max * 2 + 16)
			break; /* enough to fill the answer; the rest would be cut anyway */
	}
	if (n > 0) /* names is NULL in an empty directory */
		qsort(names, n, sizeof(char *), cmp_names);
	for (size_t i = 0; i < n; i++)
	{
		struct stat			   st;
		const char			  *type = "other";
		_cleanup_(freep) char *path =
			prefix[0] ? xasprintf("%s/%s", prefix, names[i]) : strdup(names[i]);

		if (json_array_size(arr) >= max)
		{
			*truncated = true;
			break;
		}
		if (!path || fstatat(dirfd(d), names[i], &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (S_ISREG(st.st_mode))
			type = "file";
		else if (S_ISDIR(st.st_mode))
			type = "dir";
		else if (S_ISLNK(st.st_mode))
			type = "symlink";
		json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:I}", "name", names[i], "path", path,
											 "type", type, "size", (json_int_t) st.st_size));
		if (recursive && S_ISDIR(st.st_mode) && depth < 32)
		{
			_cleanup_(closep) int sub = openat(
				dirfd(d), names[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
			if (sub >= 0)
				list_into(sub, path, true, depth + 1, max, arr, truncated);
		}
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	closedir(d);
	return 0;
}

int
fs_list(int ws, const char *path, bool recursive, size_t max_entries, json_t **entries,
		bool *truncated)
{
	char				  rel[4096];
	_cleanup_(closep) int fd = -1;
	json_t				 *arr;
	int					  r;

	r = fs_normalize(path, rel, sizeof rel);
	if (r < 0)
		return r;
	fd = open_beneath(ws, rel, O_RDONLY | O_DIRECTORY | O_NONBLOCK, 0);
	if (fd < 0)
		return fd;
	arr = json_array();
	if (!arr)
		return -ENOMEM;
	*truncated = false;
	r = list_into(fd, strcmp(rel, ".") == 0 ? "" : rel, recursive, 0, max_entries, arr, truncated);
	if (r < 0)
	{
		json_decref(arr);
		return r;
	}
	*entries = arr;
	return 0;
}
