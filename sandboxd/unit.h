/*
 * unit.h — the sd-bus adapter: on hosts where systemd is PID 1 each
 * container runs in a transient scope unit (nadi-sbx-ID-N.scope in
 * nadi.slice, N counting starts) carrying MemoryMax=, TasksMax= and Delegate=yes.
 */
#ifndef SBX_UNIT_H
#define SBX_UNIT_H

#include <stdbool.h>
#include <sys/types.h>

typedef void (*unit_started_cb)(void *ud, int r);

bool unit_available(void);
int	 unit_init(void);
void unit_done(void);
/* Put pid into a new scope; cb(ud, 0) once the scope is running. */
int unit_start_scope(const char *id, pid_t pid, unit_started_cb cb, void *ud);
/* Forget a pending start (the container was torn down first). */
void unit_cancel(void *ud);
void unit_kill(const char *id);
/* Name of the sandbox's current scope (NULL when none); forget it once gone. */
const char *unit_scope_name(const char *id);
/* The current scope's cgroup directory once it runs: unified (cgroup.kill,
 * memory.events) or, memory_v1, in the v1 memory hierarchy; NULL: none. */
const char *unit_scope_cgroup(const char *id, bool memory_v1);
void		unit_forget(const char *id);

#endif
