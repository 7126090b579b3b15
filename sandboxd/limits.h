/*
 * limits.h — memory and process limits per sandbox.  The backend is chosen
 * once at start, in this order unless configured: a systemd transient scope
 * (systemd is PID 1), a cgroup v2 group below the daemon's own cgroup, cgroup
 * v1 memory + pids groups, and finally per-process rlimits.  The choice is
 * logged and exported in /metrics.
 */
#ifndef SBX_LIMITS_H
#define SBX_LIMITS_H

#include <stdint.h>
#include <sys/types.h>

#include "sbx.h"

int					limits_init(void);
enum sbx_limit_mode limits_mode(void);

/* Create the sandbox's group with its limits (no-op for rlimit and unit). */
int limits_prepare(const char *id);
/* Parent, before fork: open what the child writes to join the group. */
int limits_open_attach(const char *id, int fds[2]);
/* Child, after fork: join (async-signal-safe). */
int limits_child_attach(const int fds[2]);
/* Number of OOM kills in the sandbox's group so far (0 when unknown). */
uint64_t limits_oom_kills(const char *id);
/* SIGKILL every process of the sandbox's group. */
void limits_kill(const char *id);
/* Remove the group once the container is gone. */
void limits_release(const char *id);
/* Per-call rlimits the container init applies (0: none). */
void limits_call_rlimits(uint64_t *as, uint64_t *nproc);
/* Directory of process pid (0: this one) in the hierarchy of controller (NULL: cgroup v2). */
char *limits_cgroup_dir(pid_t pid, const char *controller);
/* Kill and remove groups a previous daemon left behind. */
void limits_cleanup_leftovers(void);
/* At exit: remove the daemon's (empty) parent groups. */
void limits_done(void);

#endif
