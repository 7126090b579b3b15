/*
 * util.c — small helpers of the daemon's own: names that must match a
 * fixed pattern, base64.  The helpers it shares with the other daemons of
 * a sandbox host (sizes, durations, counts, clocks) are in daemonlib/util.c.
 */
#include <string.h>
#include <openssl/evp.h>

#include "credproxy.h"

/* ^[a-z0-9][a-z0-9_.-]{0,62}$, the names nadi.egress_rules accepts */
bool
upstream_name_valid(const char *s, size_t len)
{
	if (len == 0 || len > 63)
		return false;
	for (size_t i = 0; i < len; i++)
	{
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
	for (size_t i = 0; i < len; i++)
	{
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			  c == '_' || c == '-'))
			return false;
	}
	return true;
}

int
base64_decode(const char *in, size_t inlen, char *out, size_t outsz, size_t *outlen)
{
	size_t pad = 0;
	int	   n;

	if (inlen == 0 || inlen % 4 != 0 || inlen > 4 * ((outsz - 1) / 3) || inlen > INT32_MAX)
		return -EINVAL;
	for (size_t i = 0; i < inlen; i++)
	{
		char c = in[i];
		bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
				  c == '+' || c == '/' || (c == '=' && i >= inlen - 2);
		if (!ok)
			return -EINVAL;
	}
	if (in[inlen - 1] == '=')
		pad = in[inlen - 2] == '=' ? 2 : 1;
	if (in[inlen - 2] == '=' && in[inlen - 1] != '=')
		return -EINVAL;
	/* EVP_DecodeBlock counts padding as zero bytes: take them off. */
	n = EVP_DecodeBlock((unsigned char *) out, (const unsigned char *) in, (int) inlen);
	if (n < 0 || (size_t) n < pad)
		return -EINVAL;
	*outlen = (size_t) n - pad;
	out[*outlen] = '\0';
	return 0;
}
