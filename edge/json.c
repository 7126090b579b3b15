/*
 * json.c — reading untrusted JSON: a nesting-depth scan before jansson
 * parses anything (so a deep document costs one linear pass and no
 * recursion), strict parsing (one object, no duplicate keys, nothing after
 * it), and the small validators request handlers share.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "edge.h"

/*
 * Deepest nesting of s[0..n), counting only brackets outside strings.
 * Stops early (returning max + 1) once max is exceeded.
 */
static int
json_depth(const char *s, size_t n, int max)
{
	int	 depth = 0;
	int	 deepest = 0;
	bool in_str = false;

	for (size_t i = 0; i < n; i++)
	{
		char c = s[i];

		if (in_str)
		{
			if (c == '\\')
				i++;
			else if (c == '"')
				in_str = false;
			continue;
		}
		if (c == '"')
			in_str = true;
		else if (c == '{' || c == '[')
		{
			if (++depth > deepest)
				deepest = depth;
			if (deepest > max)
				return deepest;
		}
		else if (c == '}' || c == ']')
			depth--;
	}
	return deepest;
}

/*
 * Parse a request body that must be one JSON object.  NULL with a 400
 * problem (invalid_json, json_too_deep, not_an_object) otherwise.
 */
json_t *
json_parse_strict(const char *s, size_t n, EdgeProblem *p)
{
	json_error_t err;
	json_t		*j;
	int			 depth = json_depth(s, n, edge_cfg.json_depth);

	if (depth > edge_cfg.json_depth)
	{
		problem_set(p, 400, "json_too_deep", "The JSON document nests deeper than %d levels.",
					edge_cfg.json_depth);
		return NULL;
	}
	j = json_loadb(s, n, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &err);
	if (j == NULL)
	{
		problem_set(p, 400, "invalid_json", "The body is not valid JSON: %s (line %d, column %d).",
					err.text, err.line, err.column);
		return NULL;
	}
	if (!json_is_object(j))
	{
		json_decref(j);
		problem_set(p, 400, "invalid_json", "The body must be a JSON object.");
		return NULL;
	}
	return j;
}

/* Refuse members not in allowed (NULL-terminated). */
int
json_only_fields(json_t *obj, const char *const *allowed, EdgeProblem *p)
{
	const char *key;
	json_t	   *v;

	json_object_foreach(obj, key, v)
	{
		bool ok = false;

		for (const char *const *a = allowed; *a; a++)
			if (strcmp(key, *a) == 0)
				ok = true;
		if (!ok)
		{
			EdgeBuf names = {0};

			for (const char *const *a = allowed; *a; a++)
				buf_printf(&names, "%s%s", a == allowed ? "" : ", ", *a);
			problem_set(p, 400, "unknown_field", "Unknown field \"%.100s\"; allowed: %s.", key,
						names.data ? buf_cstr(&names) : "none");
			buf_free(&names);
			return -EINVAL;
		}
	}
	return 0;
}

/* A decimal integer in [min, max] and nothing else (no sign for min >= 0). */
bool
edge_parse_int64(const char *s, int64_t min, int64_t max, int64_t *out)
{
	char	 *end;
	long long v;

	if (s == NULL || *s == '\0' || isspace((unsigned char) *s) || strlen(s) > 20)
		return false;
	if (min >= 0 && !isdigit((unsigned char) *s))
		return false;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		return false;
	*out = (int64_t) v;
	return true;
}

char *
json_compact(json_t *j)
{
	return json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
}
