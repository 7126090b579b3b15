/*
 * btrfs_store.h — sandbox storage on BTRFS through libbtrfsutil: base images
 * as read-only subvolumes, one writable snapshot per sandbox, read-only
 * snapshots of sandboxes.  Layout below the store root:
 *
 *   images/NAME           read-only subvolume, imported from image_dir
 *   sandboxes/ID          the sandbox's root file system (writable snapshot)
 *   snapshots/ID/NAME     read-only snapshots of sandbox ID
 *   incoming/TMP/         target of btrfs receive during a restore
 *   meta/ID.json          sandbox metadata; meta/images/NAME.stamp
 *   meta/userns/ID        the sandbox's user namespace slot (private_users)
 */
#ifndef SBX_BTRFS_STORE_H
#define SBX_BTRFS_STORE_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "daemonlib/util.h"

#define SBX_WORKSPACE "workspace"		  /* below the sandbox root; /workspace inside */
#define SBX_AGENT_DIR ".nadi"			  /* mount point of the container init */
#define SBX_GIT_MOUNT MIRROR_MOUNT_SHARED /* git_mirror_dir/shared, read-only, inside containers */
#define SBX_GITCONFIG "/.nadi/gitconfig"  /* git_clone's GIT_CONFIG_GLOBAL inside */
#define SBX_GITCONFIG_HOST "meta/sandbox.gitconfig" /* ... and its source below the store root */

int			store_init(void);
void		store_done(bool unmount);
const char *store_root(void);
int			store_root_fd(void);
bool		store_is_loop(void);

int	 store_image_exists(const char *image);
void store_strv_free(char **v);

char *store_sandbox_path(const char *id);
int	  store_sandbox_create(const char *id, const char *image);
/* The disk quota counts from image when this host has it, else from src. */
int	 store_sandbox_from_subvolume(const char *id, const char *src, const char *image);
int	 store_sandbox_delete(const char *id);
bool store_sandbox_exists(const char *id);
/* (Re)apply disk_max to an existing sandbox (adoption after a restart). */
int	   store_sandbox_quota(const char *id, const char *image);
char **store_sandbox_list(void);
/* First host uid of the sandbox's 65536 (allocated and recorded on first use); -errno. */
int store_userns_base(const char *id, uint64_t *base);

int	   store_snapshot_create(const char *id, const char *name);
char  *store_snapshot_path(const char *id, const char *name);
char **store_snapshot_list(const char *id);
int	   store_snapshot_delete(const char *id, const char *name);
int	   store_delete_subvolume(const char *path);
/* Remove dir and what it holds, received subvolumes included (incoming/TMP). */
void store_remove_dir(const char *dir);
/* The transaction that made path, and when; -errno. */
int store_subvolume_times(const char *path, uint64_t *otransid, time_t *otime);
/* 1 when sandbox id's files changed in a transaction after gen, 0 if not, -errno. */
int store_sandbox_changed_since(const char *id, uint64_t gen);
/* Committed qgroup numbers of a subvolume (referenced, exclusive); -errno. */
int		 store_qgroup_usage(const char *path, uint64_t *rfer, uint64_t *excl);
uint64_t store_free_bytes(void);

#endif
