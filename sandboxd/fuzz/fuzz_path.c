/*
 * fuzz_path.c — libFuzzer target for fs_normalize(), which turns a caller's
 * path into one relative to the workspace.  Whatever the input, an accepted
 * path is relative, has no "..", "." or empty component, and fits.
 */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "daemonlib/log.c"
#include "daemonlib/util.c"
#include "../util.c"
#include "../fsops.c"

struct sbx_config cfg;

char *
store_sandbox_path(const char *id)
{
	return xasprintf("/nonexistent/%s", id);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char in[8192], out[4096];

	if (size >= sizeof in)
		return 0;
	memcpy(in, data, size);
	in[size] = '\0';
	if (fs_normalize(in, out, sizeof out) < 0)
		return 0;
	assert(strlen(out) < sizeof out);
	if (strcmp(out, ".") == 0)
		return 0;
	assert(out[0] != '/');
	for (char *save, *c = strtok_r(out, "/", &save); c; c = strtok_r(NULL, "/", &save))
	{
		assert(strcmp(c, "..") != 0);
		assert(strcmp(c, ".") != 0);
	}
	assert(!strstr(in, "/../") && strncmp(in, "../", 3) != 0 && strcmp(in, "..") != 0);
	return 0;
}
