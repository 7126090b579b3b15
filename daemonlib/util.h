/*
 * util.h — small helpers shared by every Nadi daemon: cleanup attributes, parsing
 * of sizes, durations, counts and booleans, whole-file reads and atomic
 * writes, recursive removal, a constant-time comparison for credentials,
 * clocks, and the mirror-name rule gitd and sandboxd share.
 */
#ifndef NADI_DAEMONLIB_UTIL_H
#define NADI_DAEMONLIB_UTIL_H

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _unused_ __attribute__((unused))
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/* A mirror name: ^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$, no "..", not ending in ".git". */
#define REPO_NAME_MAX 100

void freep(void *p);
void closep(int *fd);

/* "64M", "1G", "4096" → bytes (binary multiples, K to T, optional "iB"/"B"). */
int parse_size(const char *s, uint64_t *ret);
/* "250ms", "30s", "5m", "1h", a bare number = seconds → milliseconds. */
int parse_duration_ms(const char *s, uint64_t *ret);
/* A plain unsigned decimal number. */
int parse_count(const char *s, uint64_t *ret);
/* 1/yes/true/on, 0/no/false/off (any case). */
int parse_bool(const char *s, bool *ret);

/* A whole regular file of at most max bytes, NUL-terminated; -EFBIG beyond. */
int read_full_file(int dirfd, const char *path, char **ret, size_t *ret_len, size_t max);
/*
 * Write data to path (below dirfd) through a hidden temporary file beside
 * it (".NAME.tmpPID"), with mode, fsync and rename.  The directory itself
 * is not synced: callers that need that do it.
 */
int write_file_atomic(int dirfd, const char *path, const void *data, size_t len, mode_t mode);
/* Remove name below dirfd recursively, never following symlinks. */
int rm_rf_at(int dirfd, const char *name);

char *xasprintf(const char *fmt, ...) _printf_(1, 2);
/* Compare two secrets in time independent of their contents and lengths. */
bool	 ct_equal(const void *a, size_t alen, const void *b, size_t blen);
void	 iso8601(time_t t, char buf[32]);
uint64_t now_ms(void); /* CLOCK_MONOTONIC */
uint64_t now_us(void);

bool repo_name_valid(const char *name);

/*
 * The mirror root's layout, shared by nadi-gitd (which writes it) and
 * nadi-sandboxd (which binds parts of it into containers): a mirror owned
 * by "*" (every tenant) is MIRROR_DIR/shared/NAME.git, one owned by a tenant
 * MIRROR_DIR/tenants/<sha256 hex of the tenant>/NAME.git.  A sandbox sees
 * shared/ at /srv/nadi-git and its tenant's directory at /srv/nadi-git-tenant.
 */
#define MIRROR_SHARED "shared"
#define MIRROR_TENANTS "tenants"
#define MIRROR_OWNER_SHARED "*"
#define MIRROR_OWNER_MAX 255
#define MIRROR_MOUNT_SHARED "/srv/nadi-git"
#define MIRROR_MOUNT_TENANT "/srv/nadi-git-tenant"
/* "*" or a tenant: 1 to 255 bytes, no control characters. */
bool mirror_owner_valid(const char *owner);
/* The directory of owner's mirrors below the root: "shared" or "tenants/HEX"; a new string. */
char *mirror_owner_dir(const char *owner);
/*
 * Make owner's directory below rootfd (and tenants/) when missing: mode
 * 0755 (tenants/ 0711: no listing of who has mirrors), owned by the owner
 * of the root, so that nadi-gitd, which may run as another user than the
 * caller, can write into it.  0 or -errno.
 */
int mirror_owner_dir_ensure(int rootfd, const char *owner);

/*
 * A URL path (no query) without a "." or ".." segment, also when its dots
 * or slashes are percent-encoded ("%2e%2e", "..%2F", "%5c"), and without a
 * fragment, a backslash, a control character or a malformed %-escape.
 */
bool url_path_safe(const char *s, size_t len);
/* The value of a hex digit, or -1. */
int hexval(char c);

/* The text of a uuid, 8-4-4-4-12 hex digits (either case), and nothing more. */
bool uuid_text_valid(const char *s);

/*
 * Ignore SIGPIPE and block SIGTERM, SIGINT and SIGHUP in the calling thread
 * (before any other thread exists, so that every thread inherits the mask);
 * *mask gets the set, for sigwaitinfo() or signalfd().
 */
int signals_block(sigset_t *mask);

#endif
