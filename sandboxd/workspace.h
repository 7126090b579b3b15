/*
 * workspace.h — the workspace's history: a read-only snapshot ws-N after
 * each tool call that changed the workspace (N the sandbox's call counter),
 * ws-0 at creation, their retention, a sandbox made from one of them (a
 * fork, here or on another host), a rollback of a sandbox to one of its
 * own, and the send stream another host pulls.
 */
#ifndef SBX_WORKSPACE_H
#define SBX_WORKSPACE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

struct http_req;
struct sbx_sandbox;

#define WS_PREFIX "ws-"

/* A snapshot name as routes and bodies take it: ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$, no "..". */
bool ws_snapshot_name_valid(const char *s);
/* 404 snapshot_not_found: sandbox id has no snapshot name. */
void ws_reply_no_snapshot(struct http_req *r, const char *id, const char *name);
/* This host's id as workspace objects carry it: NULL when it is not registered anywhere. */
const char *ws_host_id(void);

/* Counted since start, for /metrics. */
struct ws_stats
{
	uint64_t taken, unchanged, failed; /* after calls with side effects */
	uint64_t removed;				   /* by retention */
	uint64_t forks_local, forks_remote, fork_failures, restores;
};
const struct ws_stats *ws_get_stats(void);

/* ws-0 of a new sandbox; the counter and baseline of an adopted one. */
void ws_created(struct sbx_sandbox *sb);
void ws_adopted(struct sbx_sandbox *sb);
/*
 * After a tool call answered with a result: count it and, when the tool may
 * change the sandbox and its files did change, snapshot them as ws-N.  The
 * "workspace" object of the result, or NULL when no snapshot was taken.
 */
json_t *ws_after_call(struct sbx_sandbox *sb, bool side_effects);

/* POST /v1/sandboxes/{id}/restore {snapshot}. */
void ws_restore(struct http_req *r, struct sbx_sandbox *sb);
/* From sandbox_on_stopped: a restore waiting for the container to stop goes on. */
void ws_on_stopped(struct sbx_sandbox *sb);
/* GET /v1/sandboxes/{id}/snapshots/{name}/stream: a btrfs send stream. */
void ws_stream(struct http_req *r, struct sbx_sandbox *sb, const char *name);
/*
 * POST /v1/sandboxes with "from" (checked by api.c): a sandbox for session
 * made from snapshot name of sandbox src_id, here or on host_id.
 */
void ws_create_from(struct http_req *r, const char *session, const char *tenant, const char *image,
					const char *host_id, const char *src_id, const char *name);

#endif
