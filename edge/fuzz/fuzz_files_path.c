/*
 * fuzz_files_path.c — libFuzzer target for the path of the file routes
 * (files_path.c): the request target of PUT/GET
 * /v1/sessions/{id}/files/{path}, percent-decoded and checked.  Whatever
 * the input, a path the check lets through names a place inside the
 * workspace: relative, no empty, "." or ".." segment, no control character,
 * backslash, '%', '?' or '#', at most 4096 bytes and 255 per name.  A
 * path it refuses says why.
 *
 *   make -C edge fuzz && edge/fuzz/fuzz_files_path -max_total_time=60
 */
#include <stdlib.h>
#include <string.h>

#include "../edge.h"

EdgeConfig edge_cfg;

void
log_at(int level, const char *fmt, ...)
{
}

static void
must(int cond)
{
	if (!cond)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *why = NULL;
	char	   *raw = malloc(size + 1);
	char	   *path;
	size_t		n, seg = 0;

	if (raw == NULL)
		return 0;
	memcpy(raw, data, size);
	raw[size] = '\0';
	(void) files_is_route(raw);
	path = files_path_decode(raw, size, &why);
	if (path == NULL)
	{
		must(why != NULL && *why != '\0');
		free(raw);
		return 0;
	}
	n = strlen(path);
	must(n >= 1 && n <= 4096);
	must(path[0] != '/' && path[n - 1] != '/');
	for (size_t i = 0; i < n; i++)
	{
		unsigned char c = (unsigned char) path[i];

		must(c >= 0x20 && c != 0x7f && c != '\\' && c != '%' && c != '?' && c != '#');
		if (c == '/')
		{
			must(i > seg);
			seg = i + 1;
		}
		must(i + 1 - seg <= 255);
	}
	must(strcmp(path, ".") != 0 && strcmp(path, "..") != 0);
	must(strstr(path, "/./") == NULL && strstr(path, "/../") == NULL);
	must(strncmp(path, "./", 2) != 0 && strncmp(path, "../", 3) != 0);
	must(!(n >= 2 && strcmp(path + n - 2, "/.") == 0) &&
		 !(n >= 3 && strcmp(path + n - 3, "/..") == 0));
	free(path);
	free(raw);
	return 0;
}
