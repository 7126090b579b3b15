/*
 * files_path.c — the path of PUT/GET /v1/sessions/{id}/files/{path}
 * (files.c): which request targets are that route, and the path's checks
 * (percent-decoded once from the target as received: no empty, "." or ".."
 * segment, no control character, backslash, '?', '#' or '%' after decoding,
 * at most 4096 bytes and 255 per name).  Apart from files.c so that
 * fuzz/fuzz_files_path.c can take it alone.
 */
#include <stdlib.h>
#include <string.h>

#include "daemonlib/util.h"
#include "edge.h"

#define FILES_PATH_MAX 4096
#define FILES_NAME_MAX 255

char *
files_path_decode(const char *raw, size_t n, const char **why)
{
	char  *out = malloc(n + 1);
	size_t len = 0, seg = 0;

	if (out == NULL)
	{
		*why = "out of memory";
		return NULL;
	}
	for (size_t i = 0; i < n; i++)
	{
		unsigned char c = (unsigned char) raw[i];

		if (c == '%')
		{
			int hi = i + 2 < n ? hexval(raw[i + 1]) : -1;
			int lo = i + 2 < n ? hexval(raw[i + 2]) : -1;

			if (hi < 0 || lo < 0)
			{
				*why = "a '%' that is not followed by two hex digits";
				goto bad;
			}
			c = (unsigned char) (hi * 16 + lo);
			i += 2;
			if (c == '%')
			{
				*why = "an encoded '%' (the path is decoded once)";
				goto bad;
			}
		}
		if (c < 0x20 || c == 0x7f)
		{
			*why = "a control character (NUL included)";
			goto bad;
		}
		if (c == '\\')
		{
			*why = "a backslash";
			goto bad;
		}
		if (c == '?' || c == '#')
		{
			*why = "'?' or '#'";
			goto bad;
		}
		out[len++] = (char) c;
	}
	out[len] = '\0';
	if (len == 0)
	{
		*why = "no path (name a file: PUT or GET .../files/NAME)";
		goto bad;
	}
	if (len > FILES_PATH_MAX)
	{
		*why = "more than 4096 bytes";
		goto bad;
	}
	for (size_t i = 0; i <= len; i++)
	{
		if (i < len && out[i] != '/')
			continue;
		if (i == seg)
		{
			*why = seg == 0 ? "a leading '/' (paths are relative to the workspace)"
							: "an empty segment ('//' or a trailing '/')";
			goto bad;
		}
		if ((i - seg == 1 && out[seg] == '.') ||
			(i - seg == 2 && out[seg] == '.' && out[seg + 1] == '.'))
		{
			*why = "a '.' or '..' segment";
			goto bad;
		}
		if (i - seg > FILES_NAME_MAX)
		{
			*why = "a name longer than 255 bytes";
			goto bad;
		}
		seg = i + 1;
	}
	return out;
bad:
	free(out);
	return NULL;
}

/* /v1/sessions/<segment>/files/... (or /files alone) */
bool
files_is_route(const char *raw_url)
{
	static const char pre[] = "/v1/sessions/";
	const char		 *s;

	if (strncmp(raw_url, pre, sizeof(pre) - 1) != 0)
		return false;
	s = raw_url + sizeof(pre) - 1;
	s += strcspn(s, "/?");
	if (*s != '/')
		return false;
	return strncmp(s, "/files/", 7) == 0 || strcmp(s, "/files") == 0 ||
		   strncmp(s, "/files?", 7) == 0;
}
