/*
 * fuzz_target.c — libFuzzer target for what a client controls before
 * anything is authorized: the request target (target_parse) and the token
 * headers (token_extract).  Whatever the input, an accepted target names a
 * configured upstream and a path that starts with "/" and has no "." or
 * ".." segment; an extracted token is printable ASCII without spaces.
 */
#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "../credproxy.h"
#include "../target.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
setup(void)
{
	static const char *const specs[] = {
		"api url=http://127.0.0.1:9/base secret_env=X",
		"other url=https://api.example.com header=X-Key format=\"k %s\" secret_env=X",
		"v6 url=http://[::1]:8080/ secret_env=X",
	};
	char err[512];

	cfg.upstreams = calloc(ARRAY_SIZE(specs), sizeof *cfg.upstreams);
	for (size_t i = 0; i < ARRAY_SIZE(specs); i++)
	{
		int r = upstream_parse(specs[i], &cfg.upstreams[i], err, sizeof err);
		assert(r == 0);
	}
	cfg.n_upstreams = ARRAY_SIZE(specs);
}

static void
check_path(const char *p)
{
	assert(p[0] == '/');
	for (const char *s = p; *s; s++)
	{
		assert((unsigned char) *s > 0x20 && *s != 0x7f && *s != '#' && *s != '\\' && *s != '?');
		if (*s == '/')
		{
			size_t n = strcspn(s + 1, "/");
			assert(!(n == 1 && s[1] == '.') && !(n == 2 && s[1] == '.' && s[2] == '.'));
		}
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool ready;
	char		in[16384];

	if (!ready)
	{
		setup();
		ready = true;
	}
	if (size == 0 || size >= sizeof in)
		return 0;
	memcpy(in, data + 1, size - 1);
	in[size - 1] = '\0';
	if (data[0] & 1)
	{
		struct target  t;
		struct problem p;
		if (target_parse(in, &t, &p) == 0)
		{
			char *url = target_url(&t);
			assert(t.up && t.path && url);
			check_path(t.path);
			free(url);
			target_clear(&t);
		}
		else
		{
			assert(p.status >= 400 && p.status < 600 && p.code);
		}
	}
	else
	{
		char	   *nl = strchr(in, '\n'), tok[CP_TOKEN_MAX + 1];
		const char *why;
		if (nl)
			*nl = '\0';
		if (token_extract(in[0] ? in : NULL, nl ? nl + 1 : NULL, tok, sizeof tok, &why) !=
			TOKEN_NONE)
		{
			assert(tok[0]);
			for (const char *s = tok; *s; s++)
				assert((unsigned char) *s > 0x20 && (unsigned char) *s < 0x7f);
		}
	}
	return 0;
}
