/*
 * fsops.h — file operations on a sandbox's workspace from the host side,
 * confined to the workspace whatever the path or the symlinks inside say.
 *
 * Paths are relative to /workspace, or absolute inside it ("/workspace/a").
 * Refused with -EXDEV: ".." components, absolute paths elsewhere, and any
 * symlink that resolves outside the workspace (openat2 RESOLVE_BENEATH).
 */
#ifndef SBX_FSOPS_H
#define SBX_FSOPS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

/* Open the workspace directory of sandbox id (O_PATH); -errno on failure. */
int fs_open_workspace(const char *id);
/* Check and normalise a caller's path into a workspace-relative one. */
int fs_normalize(const char *path, char *out, size_t outlen);

int fs_read(int ws, const char *path, size_t max, char **data, size_t *len, bool *truncated);
/* Open a regular file for streaming (GET files); returns an fd. */
int fs_open_read(int ws, const char *path, struct stat *st);
int fs_write(int ws, const char *path, const void *data, size_t len, bool create_parents,
			 bool *created);
/* Replace old (must occur exactly once unless all) with new; returns count. */
int fs_edit(int ws, const char *path, const char *old, size_t old_len, const char *new_,
			size_t new_len, bool all, size_t max, size_t *count);
/* Entries of a directory as JSON objects {name,type,size}; recursive walks below. */
int	 fs_list(int ws, const char *path, bool recursive, size_t max_entries, json_t **entries,
			 bool *truncated);
bool fs_is_dir(int ws, const char *path);
/* 1: path exists (a symlink counts, unfollowed); 0: it does not; -errno (-EXDEV: outside). */
int fs_exists(int ws, const char *path);

#endif
