/*
 * util.c — small helpers of nadi-sandboxd's own: short writes to sysfs and
 * cgroupfs files, mkdir -p, identifiers, random names.  The helpers the
 * three daemons of a sandbox host share are in daemonlib/util.c.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>

#include "sbx.h"

int
write_string_file(const char *path, const char *s)
{
	_cleanup_(closep) int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOCTTY);
	size_t				  len = strlen(s);

	if (fd < 0)
		return -errno;
	if (write(fd, s, len) != (ssize_t) len)
		return errno ? -errno : -EIO;
	return 0;
}

int
mkdir_p(const char *path, mode_t mode)
{
	_cleanup_(freep) char *p = strdup(path);

	if (!p)
		return -ENOMEM;
	for (char *s = p + 1; *s; s++)
	{
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, mode) < 0 && errno != EEXIST)
			return -errno;
		*s = '/';
	}
	if (mkdir(p, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* Identifiers used in paths and URLs: [A-Za-z0-9][A-Za-z0-9._-]*, no "..". */
bool
id_valid(const char *s, size_t maxlen)
{
	size_t n;

	if (!s || !*s)
		return false;
	n = strlen(s);
	if (n > maxlen || s[0] == '.' || s[0] == '-' || strstr(s, ".."))
		return false;
	for (size_t i = 0; i < n; i++)
	{
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			  c == '_' || c == '-' || c == '.'))
			return false;
	}
	return true;
}

int
random_hex(char *buf, size_t nbytes)
{
	unsigned char raw[64];

	if (nbytes > sizeof raw)
		return -EINVAL;
	if (getrandom(raw, nbytes, 0) != (ssize_t) nbytes)
		return -errno;
	for (size_t i = 0; i < nbytes; i++)
		sprintf(buf + 2 * i, "%02x", raw[i]);
	return 0;
}
