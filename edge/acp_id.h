/*
 * acp_id.h — the key of a JSON-RPC request id, shared by the edge's ACP
 * endpoint (acp_http.c) and the stdio bridge (bridge.c): "n:42", "s:abc"
 * (strings cut at 80 bytes), or "null".  Header-only: the bridge links no
 * other edge object.
 */
#ifndef NADI_ACP_ID_H
#define NADI_ACP_ID_H

#include <stdio.h>
#include <jansson.h>

static inline void
acp_id_key(json_t *id, char *out, size_t n)
{
	if (json_is_integer(id))
		snprintf(out, n, "n:%lld", (long long) json_integer_value(id));
	else if (json_is_string(id))
		snprintf(out, n, "s:%.80s", json_string_value(id));
	else
		snprintf(out, n, "null");
}

#endif /* NADI_ACP_ID_H */
