/*
 * fuzz_json.c — libFuzzer target for request bodies (json.c): the nesting
 * scan, strict parsing and the field check every route runs, and the
 * problem+json rendering of whatever error comes out.
 *
 *   make -C edge fuzz && edge/fuzz/fuzz_json -max_total_time=60
 */
#include <stdlib.h>

#include "../edge.h"

EdgeConfig edge_cfg = {.body_limit = 1 << 20, .json_depth = 64};

void
log_at(int level, const char *fmt, ...)
{
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const fields[] = {"tenant_id", "metadata", "labels", "policy", NULL};
	EdgeProblem				 p;
	json_t					*j = json_parse_strict((const char *) data, size, &p);
	char					*text;

	if (j && json_only_fields(j, fields, &p) == 0)
	{
		text = json_compact(j);
		free(text);
	}
	else
	{
		text = problem_json(&p, "/v1/sessions");
		free(text);
	}
	json_decref(j);
	return 0;
}
