/*
 * pool.h — the warm pool: per base image, a few sandboxes whose container
 * is already running and which belong to no session yet.  POST
 * /v1/sandboxes takes one (the session's first call is then warm); the
 * pool refills in the background and shrinks under memory pressure.  An
 * entry serves one session only: once taken it is that session's sandbox
 * and is destroyed with it.  See docs/SANDBOXD.md, "Warm pool".
 */
#ifndef SBX_POOL_H
#define SBX_POOL_H

#include <jansson.h>
#include <stddef.h>

#include "sandbox.h"

/* Below the store root: the empty directory an entry's container has where the tenant's mirrors go. */
#define SBX_POOL_EMPTY_HOST "meta/pool-empty"

struct metrics_out;

/* After sandbox_init (which removed the entries of a previous run); -errno. */
int	 pool_init(void);
void pool_done(void);
/*
 * A warm entry of image made the sandbox of session (and tenant: its git
 * mirrors are mounted into the running container first): 0 and *ret, or
 * -ENOENT when the pool has none ready (the caller creates one cold).
 */
int
pool_take(const char *session_id, const char *tenant, const char *image, struct sbx_sandbox **ret);
/* Pool entries (sandboxes of no session), whatever their container's state. */
size_t pool_count(void);
/* No room for another session's sandbox (max_sandboxes, pool entries not counted). */
bool sandbox_host_full(void);
/* Something changed (a container stopped, a slot freed): look at the pool soon. */
void pool_kick(void);
/* An entry whose container may be stopped to make room for a session's; NULL if none. */
struct sbx_sandbox *pool_victim(void);
/* run.c: an entry's container exited before it was ready. */
void	pool_start_failed(struct sbx_sandbox *sb);
json_t *pool_json(void);
void	pool_metrics(struct metrics_out *o);

#endif
