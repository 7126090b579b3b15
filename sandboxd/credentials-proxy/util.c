/*
 * util.c — small helpers shared by the daemon's modules: parsing of sizes,
 * durations and counts, names that must match a fixed pattern, base64.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <openssl/evp.h>

#include "credproxy.h"

void
freep(void *p)
{
	free(*(void **)p);
}

void
closep(int *fd)
{
	if (*fd >= 0) {
		int saved = errno;
		close(*fd);
		errno = saved;
	}
	*fd = -1;
}

/* "64M", "1G", "4096" → bytes (binary multiples). */
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

int
parse_size(const char *s, uint64_t *ret)
{
	char *end;
	unsigned long long v;
	uint64_t mul = 1;

	if (leading_number(s, &v, &end) < 0)
		return -EINVAL;
	if (*end) {
		switch (*end) {
		case 'k': case 'K': mul = 1ULL << 10; break;
		case 'm': case 'M': mul = 1ULL << 20; break;
		case 'g': case 'G': mul = 1ULL << 30; break;
		default: return -EINVAL;
		}
		end++;
		if (*end == 'i')
			end++;
		if (*end == 'B')
			end++;
		if (*end)
			return -EINVAL;
	}
	if (v > UINT64_MAX / mul)
		return -ERANGE;
	*ret = v * mul;
	return 0;
}

/* "250ms", "30s", "5m", "1h", bare number = seconds → milliseconds. */
int
parse_duration_ms(const char *s, uint64_t *ret)
{
	char *end;
	unsigned long long v;
	uint64_t mul;

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
	if (v > UINT64_MAX / mul)
		return -ERANGE;
	*ret = v * mul;
	return 0;
}

int
parse_count(const char *s, uint64_t *ret)
{
	char *end;
	unsigned long long n;

	if (leading_number(s, &n, &end) < 0 || *end)
		return -EINVAL;
	*ret = n;
	return 0;
}

char *
xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;
	int r;

	va_start(ap, fmt);
	r = vasprintf(&s, fmt, ap);
	va_end(ap);
	return r < 0 ? NULL : s;
}

uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* ^[a-z0-9][a-z0-9_.-]{0,62}$, the names nadi.egress_rules accepts */
bool
upstream_name_valid(const char *s, size_t len)
{
	if (len == 0 || len > 63)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
			  (i > 0 && (c == '_' || c == '.' || c == '-'));
		if (!ok)
			return false;
	}
	return true;
}

/* ^[A-Za-z0-9_-]{1,64}$, the sandbox ids nadi-sandboxd assigns */
bool
sandbox_id_valid(const char *s, size_t len)
{
	if (len == 0 || len > CP_SANDBOX_ID_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
		      c == '-'))
			return false;
	}
	return true;
}

int
base64_decode(const char *in, size_t inlen, char *out, size_t outsz, size_t *outlen)
{
	size_t pad = 0;
	int n;

	if (inlen == 0 || inlen % 4 != 0 || inlen > 4 * ((outsz - 1) / 3) || inlen > INT32_MAX)
		return -EINVAL;
	for (size_t i = 0; i < inlen; i++) {
		char c = in[i];
		bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
			  c == '/' || (c == '=' && i >= inlen - 2);
		if (!ok)
			return -EINVAL;
	}
	if (in[inlen - 1] == '=')
		pad = in[inlen - 2] == '=' ? 2 : 1;
	if (in[inlen - 2] == '=' && in[inlen - 1] != '=')
		return -EINVAL;
	/* EVP_DecodeBlock counts padding as zero bytes: take them off. */
	n = EVP_DecodeBlock((unsigned char *)out, (const unsigned char *)in, (int)inlen);
	if (n < 0 || (size_t)n < pad)
		return -EINVAL;
	*outlen = (size_t)n - pad;
	out[*outlen] = '\0';
	return 0;
}
