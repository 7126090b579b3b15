/*
 * child.h — helper processes (btrfs send/receive, mkfs, cp) run from the
 * event loop: spawned with a clean environment and no inherited descriptors,
 * watched through a pidfd, their stderr kept for the log and for errors.
 */
#ifndef SBX_CHILD_H
#define SBX_CHILD_H

#include <sys/types.h>

typedef void (*child_done_cb)(void *ud, int wstatus, const char *err_text);

/* Spawn argv; stdout goes to out_fd (or /dev/null when -1).  cb runs once. */
int child_spawn(const char *const argv[], int out_fd, child_done_cb cb, void *ud);
/* Run argv to completion (startup only); returns the wait status or -errno. */
int child_run_sync(const char *const argv[], char *err, size_t errlen);
/* Minimal environment for every program the daemon starts. */
extern char *const child_env[];
/* Kill every helper still running (shutdown). */
void	 child_kill_all(void);
unsigned child_count(void);

#endif
