/*
 * util.c — the helpers of util.h, shared by the daemons of a sandbox host.
 * Functions return a negative errno on failure and log nothing: the caller
 * knows what the file or value was for.
 */
#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "util.h"

void
freep(void *p)
{
	free(*(void **) p);
}

void
closep(int *fd)
{
	if (*fd >= 0)
	{
		int saved = errno;
		close(*fd);
		errno = saved;
	}
	*fd = -1;
}

/* The unsigned number s starts with; *end points past it. */
static int
leading_number(const char *s, unsigned long long *v, char **end)
{
	if (!s || !*s || *s == '-')
		return -EINVAL;
	errno = 0;
	*v = strtoull(s, end, 10);
	return errno || *end == s ? -EINVAL : 0;
}

static int
scaled(unsigned long long v, uint64_t mul, uint64_t *ret)
{
	if (v > UINT64_MAX / mul)
		return -ERANGE;
	*ret = v * mul;
	return 0;
}

int
parse_size(const char *s, uint64_t *ret)
{
	char			  *end;
	unsigned long long v;
	uint64_t		   mul = 1;

	if (leading_number(s, &v, &end) < 0)
		return -EINVAL;
	if (*end)
	{
		switch (*end)
		{
			case 'k':
			case 'K':
				mul = 1ULL << 10;
				break;
			case 'm':
			case 'M':
				mul = 1ULL << 20;
				break;
			case 'g':
			case 'G':
				mul = 1ULL << 30;
				break;
			case 't':
			case 'T':
				mul = 1ULL << 40;
				break;
			default:
				return -EINVAL;
		}
		end++;
		if (*end == 'i')
			end++;
		if (*end == 'B')
			end++;
		if (*end)
			return -EINVAL;
	}
	return scaled(v, mul, ret);
}

int
parse_duration_ms(const char *s, uint64_t *ret)
{
	char			  *end;
	unsigned long long v;
	uint64_t		   mul;

	if (leading_number(s, &v, &end) < 0)
		return -EINVAL;
	if (strcmp(end, "ms") == 0)
		mul = 1;
	else if (strcmp(end, "s") == 0 || *end == '\0')
		mul = 1000;
	else if (strcmp(end, "m") == 0 || strcmp(end, "min") == 0)
		mul = 60000;
	else if (strcmp(end, "h") == 0)
		mul = 3600000;
	else
		return -EINVAL;
	return scaled(v, mul, ret);
}

int
parse_count(const char *s, uint64_t *ret)
{
	char			  *end;
	unsigned long long n;

	if (leading_number(s, &n, &end) < 0 || *end)
		return -EINVAL;
	*ret = n;
	return 0;
}

int
parse_bool(const char *s, bool *ret)
{
	static const char *yes[] = {"1", "yes", "true", "on"}, *no[] = {"0", "no", "false", "off"};

	for (size_t i = 0; i < ARRAY_SIZE(yes); i++)
	{
		if (strcasecmp(s, yes[i]) == 0)
		{
			*ret = true;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0)
		{
			*ret = false;
			return 0;
		}
	}
	return -EINVAL;
}

/* Reads to EOF rather than trusting st_size: /proc and cgroupfs report 0. */
int
read_full_file(int dirfd, const char *path, char **ret, size_t *ret_len, size_t max)
{
	_cleanup_(closep) int fd = -1;
	struct stat			  st;
	char				 *buf = NULL;
	size_t				  len = 0, cap = 0;

	fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EBADFD;
	if ((uint64_t) st.st_size > max)
		return -EFBIG;
	for (;;)
	{
		if (cap - len < 4096 || len == cap)
		{
			size_t want = cap ? cap * 2 : MAX((size_t) st.st_size + 1, (size_t) 4096);
			char  *n;
			if (want > max + 1)
				want = max + 1;
			if (want <= len)
			{
				free(buf);
				return -EFBIG;
			}
			n = realloc(buf, want + 1);
			if (!n)
			{
				free(buf);
				return -ENOMEM;
			}
			buf = n;
			cap = want;
		}
		ssize_t n = read(fd, buf + len, cap - len);
		if (n < 0)
		{
			if (errno == EINTR)
				continue;
			int r = -errno;
			free(buf);
			return r;
		}
		if (n == 0)
			break;
		len += (size_t) n;
		if (len > max)
		{
			free(buf);
			return -EFBIG;
		}
	}
	buf[len] = '\0';
	*ret = buf;
	if (ret_len)
		*ret_len = len;
	return 0;
}

int
write_file_atomic(int dirfd, const char *path, const void *data, size_t len, mode_t mode)
{
	const char			  *slash = strrchr(path, '/');
	int					   dirlen = slash ? (int) (slash - path + 1) : 0;
	_cleanup_(freep) char *tmp =
		xasprintf("%.*s.%s.tmp%d", dirlen, path, path + dirlen, (int) getpid());
	_cleanup_(closep) int fd = -1;
	const char			 *p = data;
	int					  r;

	if (!tmp)
		return -ENOMEM;
	/*
	 * A file of that name left by a crash is removed, and the new one must
	 * be ours (O_EXCL): in a directory someone else may write to, nobody can
	 * have it opened beforehand to read what is written.
	 */
	if (unlinkat(dirfd, tmp, 0) < 0 && errno != ENOENT)
		return -errno;
	fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
	if (fd < 0)
		return -errno;
	while (len > 0)
	{
		ssize_t n = write(fd, p, len);
		if (n < 0)
		{
			if (errno == EINTR)
				continue;
			r = -errno;
			goto fail;
		}
		p += n;
		len -= (size_t) n;
	}
	if (fchmod(fd, mode) < 0 || fsync(fd) < 0 || renameat(dirfd, tmp, dirfd, path) < 0)
	{
		r = -errno;
		goto fail;
	}
	return 0;
fail:
	unlinkat(dirfd, tmp, 0);
	return r;
}

int
rm_rf_at(int dfd, const char *name)
{
	_cleanup_(closep) int fd = -1;
	DIR					 *d;
	struct dirent		 *de;
	int					  r = 0;

	if (unlinkat(dfd, name, 0) == 0 || errno == ENOENT)
		return 0;
	if (errno != EISDIR && errno != EPERM)
		return -errno;
	fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d)
		return -errno;
	fd = -1; /* owned by d now */
	while ((de = readdir(d)))
	{
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		int k = rm_rf_at(dirfd(d), de->d_name);
		if (k < 0 && r == 0)
			r = k;
	}
	closedir(d);
	if (unlinkat(dfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT && r == 0)
		r = -errno;
	return r;
}

char *
xasprintf(const char *fmt, ...)
{
	va_list ap;
	char   *s;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	return s;
}

/* Both are hashed first, then the digests compared in constant time. */
bool
ct_equal(const void *a, size_t alen, const void *b, size_t blen)
{
	unsigned char da[SHA256_DIGEST_LENGTH], db[SHA256_DIGEST_LENGTH];

	SHA256(a, alen, da);
	SHA256(b, blen, db);
	return CRYPTO_memcmp(da, db, sizeof da) == 0 && alen == blen;
}

void
iso8601(time_t t, char buf[32])
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

uint64_t
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}

/*
 * Names become directory names (NAME.git) and URL path segments, in
 * nadi-gitd and in sandboxd's git_clone tool alike.
 */
bool
repo_name_valid(const char *s)
{
	size_t n;

	if (!s)
		return false;
	n = strlen(s);
	if (n == 0 || n > REPO_NAME_MAX || strstr(s, ".."))
		return false;
	if (n >= 4 && strcmp(s + n - 4, ".git") == 0)
		return false;
	for (size_t i = 0; i < n; i++)
	{
		char c = s[i];
		bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
		if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
			return false;
	}
	return true;
}

bool
mirror_owner_valid(const char *s)
{
	size_t n;

	if (!s)
		return false;
	n = strlen(s);
	if (n == 0 || n > MIRROR_OWNER_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char) s[i] < 0x20 || s[i] == 0x7f)
			return false;
	return true;
}

char *
mirror_owner_dir(const char *owner)
{
	unsigned char d[SHA256_DIGEST_LENGTH];
	char		  hex[2 * SHA256_DIGEST_LENGTH + 1];

	if (strcmp(owner, MIRROR_OWNER_SHARED) == 0)
		return strdup(MIRROR_SHARED);
	SHA256((const unsigned char *) owner, strlen(owner), d);
	for (size_t i = 0; i < sizeof d; i++)
		snprintf(hex + 2 * i, 3, "%02x", d[i]);
	return xasprintf("%s/%s", MIRROR_TENANTS, hex);
}

static int
mkdir_owned(int rootfd, const char *rel, mode_t mode, const struct stat *root)
{
	struct stat st;

	if (mkdirat(rootfd, rel, mode) == 0)
	{
		/* Owned like the root (when we may chown), with the mode not cut by the umask. */
		if (geteuid() == 0 &&
			fchownat(rootfd, rel, root->st_uid, root->st_gid, AT_SYMLINK_NOFOLLOW) < 0)
			return -errno;
		return fchmodat(rootfd, rel, mode, 0) < 0 ? -errno : 0;
	}
	if (errno != EEXIST)
		return -errno;
	if (fstatat(rootfd, rel, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

int
mirror_owner_dir_ensure(int rootfd, const char *owner)
{
	_cleanup_(freep) char *rel = mirror_owner_dir(owner);
	struct stat			   root;
	int					   r;

	if (!rel)
		return -ENOMEM;
	if (fstat(rootfd, &root) < 0)
		return -errno;
	if (strcmp(owner, MIRROR_OWNER_SHARED) != 0 &&
		(r = mkdir_owned(rootfd, MIRROR_TENANTS, 0711, &root)) < 0)
		return r;
	return mkdir_owned(rootfd, rel, 0755, &root);
}

int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/*
 * Dots and slashes count as such also when percent-encoded, and an encoded
 * backslash as a slash, so that no decoding further on (a client library,
 * a proxy, an upstream) can turn an accepted path into one with a dot
 * segment.
 */
bool
url_path_safe(const char *s, size_t len)
{
	size_t seg = 0, dots = 0;

	for (size_t i = 0; i <= len; i++)
	{
		char c = i < len ? s[i] : '/';

		if (i < len && ((unsigned char) c <= 0x20 || c == 0x7f || c == '#' || c == '\\'))
			return false;
		if (i < len && c == '%')
		{
			int hi = i + 1 < len ? hexval(s[i + 1]) : -1, lo = i + 2 < len ? hexval(s[i + 2]) : -1;
			if (hi < 0 || lo < 0)
				return false;
			c = (char) (hi * 16 + lo);
			i += 2;
			/* an encoded control character is refused like a raw one (%00 would cut the path) */
			if ((unsigned char) c < 0x20 || c == 0x7f)
				return false;
			if (c == '\\')
				c = '/';
		}
		if (c == '/')
		{
			if (seg > 0 && seg == dots && dots <= 2)
				return false;
			seg = dots = 0;
			continue;
		}
		seg++;
		if (c == '.')
			dots++;
	}
	return true;
}

int
signals_block(sigset_t *mask)
{
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(mask);
	sigaddset(mask, SIGTERM);
	sigaddset(mask, SIGINT);
	sigaddset(mask, SIGHUP);
	return -pthread_sigmask(SIG_BLOCK, mask, NULL);
}

bool
uuid_text_valid(const char *s)
{
	if (s == NULL)
		return false;
	for (int i = 0; i < 36; i++)
	{
		if (i == 8 || i == 13 || i == 18 || i == 23)
		{
			if (s[i] != '-')
				return false;
		}
		else if (!isxdigit((unsigned char) s[i]))
			return false;
	}
	return s[36] == '\0';
}
