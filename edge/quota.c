/*
 * quota.c — the edge's long-lived holdings, counted edge-wide and per
 * tenant: streams (SSE event streams and ACP's HTTP streams) and ACP
 * connections (HTTP and WebSocket).  The edge-wide limits (--max-streams,
 * --max-acp) protect the edge; the per-tenant ones
 * (--max-streams-per-tenant, --max-acp-per-tenant) keep one tenant from
 * taking what every tenant shares.  A holder keeps the EdgeQuota it took
 * and gives it back exactly once; a tenant's entry goes when it holds
 * nothing.  The tenant is the token's (every principal without a token, in
 * --dev-no-auth, shares one entry).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edge.h"

#define QUOTA_BUCKETS 1024

struct EdgeQuota
{
	char	   tenant[256];
	int		   held[QUOTA__KINDS];
	EdgeQuota *hnext;
};

static EdgeQuota *buckets[QUOTA_BUCKETS];
static int		  total[QUOTA__KINDS];
static int		  ntenants;

static unsigned
tenant_hash(const char *t)
{
	return edge_str_hash(t) % QUOTA_BUCKETS;
}

static int
edge_limit(QuotaKind kind)
{
	if (kind == QUOTA_FILES)
		return edge_cfg.max_transfers;
	return kind == QUOTA_STREAM ? edge_cfg.max_streams : edge_cfg.max_acp;
}

static int
tenant_limit(QuotaKind kind)
{
	if (kind == QUOTA_FILES)
		return edge_cfg.max_transfers_per_tenant;
	return kind == QUOTA_STREAM ? edge_cfg.max_streams_per_tenant : edge_cfg.max_acp_per_tenant;
}

/* The problems of a limit reached, per kind: edge-wide code and text, the tenant's code and what. */
static const struct
{
	const char *edge_code, *edge_text, *tenant_code, *what;
} quota_words[QUOTA__KINDS] = {
	[QUOTA_STREAM] = {"too_many_streams", "This edge holds as many streams as it may.",
					  "tenant_stream_limit", "streams"},
	[QUOTA_ACP] = {"too_many_connections", "This edge holds as many ACP connections as it may.",
				   "tenant_connection_limit", "ACP connections"},
	[QUOTA_FILES] = {"too_many_transfers", "This edge runs as many file transfers as it may.",
					 "tenant_transfer_limit", "file transfers"},
};

/*
 * Take one of kind for auth's tenant.  NULL when a limit is reached, with p
 * filled in: 503 (too_many_streams, too_many_connections) at the edge-wide
 * limit, 429 (tenant_stream_limit, tenant_connection_limit) at the tenant's.
 */
EdgeQuota *
quota_take(QuotaKind kind, const EdgeAuth *auth, EdgeProblem *p)
{
	const char *tenant = auth ? auth->tenant : "";
	unsigned	h = tenant_hash(tenant);
	EdgeQuota  *q;

	if (total[kind] >= edge_limit(kind))
	{
		problem_set(p, 503, quota_words[kind].edge_code, "%s", quota_words[kind].edge_text);
		p->retry_after = 2;
		return NULL;
	}
	for (q = buckets[h]; q; q = q->hnext)
		if (strcmp(q->tenant, tenant) == 0)
			break;
	if (q && q->held[kind] >= tenant_limit(kind))
	{
		edge_metrics.tenant_limited++;
		problem_set(p, 429, quota_words[kind].tenant_code,
					"The tenant holds %d %s on this edge, as many as one tenant may; "
					"close one first.",
					q->held[kind], quota_words[kind].what);
		p->retry_after = 2;
		return NULL;
	}
	if (q == NULL && tenant_limit(kind) > 0)
	{
		q = calloc(1, sizeof(*q));
		if (q == NULL)
		{
			problem_set(p, 503, "unavailable", "Out of memory.");
			return NULL;
		}
		snprintf(q->tenant, sizeof(q->tenant), "%s", tenant);
		q->hnext = buckets[h];
		buckets[h] = q;
		ntenants++;
	}
	else if (q == NULL)
	{
		edge_metrics.tenant_limited++;
		problem_set(p, 429, quota_words[kind].tenant_code, "This edge allows a tenant no %s.",
					quota_words[kind].what);
		return NULL;
	}
	q->held[kind]++;
	total[kind]++;
	return q;
}

/* Give back one of kind (q from quota_take; NULL: nothing). */
void
quota_give(EdgeQuota *q, QuotaKind kind)
{
	EdgeQuota **pp;

	if (q == NULL)
		return;
	q->held[kind]--;
	total[kind]--;
	for (int k = 0; k < QUOTA__KINDS; k++)
		if (q->held[k] > 0)
			return;
	for (pp = &buckets[tenant_hash(q->tenant)]; *pp; pp = &(*pp)->hnext)
		if (*pp == q)
		{
			*pp = q->hnext;
			break;
		}
	ntenants--;
	free(q);
}

/* Tenants holding something on this edge (for /metrics). */
int
quota_tenants(void)
{
	return ntenants;
}
