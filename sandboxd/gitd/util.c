/*
 * util.c — text cleaning for git's messages (they end up in JSON, which
 * must be valid UTF-8).  The helpers nadi-gitd shares with the other
 * daemons of a sandbox host are in daemonlib/util.c.
 */
#include <string.h>

#include "gitd.h"

/* Length of the UTF-8 sequence at s (1-4), or 0 when it is not valid. */
static size_t
utf8_len(const unsigned char *s, size_t avail)
{
	size_t	 n;
	uint32_t cp;

	if (s[0] < 0x80)
		return 1;
	if ((s[0] & 0xe0) == 0xc0)
		n = 2, cp = s[0] & 0x1f;
	else if ((s[0] & 0xf0) == 0xe0)
		n = 3, cp = s[0] & 0x0f;
	else if ((s[0] & 0xf8) == 0xf0)
		n = 4, cp = s[0] & 0x07;
	else
		return 0;
	if (n > avail)
		return 0;
	for (size_t i = 1; i < n; i++)
	{
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
		cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

char *
text_clean(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *) s;
	char				*out = malloc(len * 3 + 1), *o = out;

	if (!out)
		return NULL;
	for (size_t i = 0; i < len;)
	{
		size_t n = utf8_len(p + i, len - i);
		if (n == 0)
		{
			memcpy(o, "\xef\xbf\xbd", 3); /* U+FFFD */
			o += 3;
			i++;
		}
		else if (n == 1 && (p[i] < 0x20 || p[i] == 0x7f) && p[i] != '\n' && p[i] != '\t')
		{
			*o++ = p[i] == '\r' ? '\n' : ' ';
			i++;
		}
		else
		{
			memcpy(o, p + i, n);
			o += n;
			i += n;
		}
	}
	*o = '\0';
	/* trim */
	while (o > out && (o[-1] == '\n' || o[-1] == ' ' || o[-1] == '\t'))
		*--o = '\0';
	size_t lead = strspn(out, " \t\n");
	if (lead)
		memmove(out, out + lead, strlen(out + lead) + 1);
	return out;
}
