/*
 * sbx.h — shared declarations of nadi-sandboxd: configuration, logging, the
 * event loop, and small helpers.  Each subsystem (store, cgroup, run, tools,
 * http, pg, ...) has its own header; this one holds what all of them use.
 */
#ifndef SBX_H
#define SBX_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "nadi_version.h"

/*
 * User namespaces: sandbox N (a slot, persisted per sandbox) maps its uids
 * 0..65535 to PRIVATE_USERS_BASE + N * 65536 and up on the host.  The
 * ranges end below 0x7FFE0000 (systemd's "foreign" range and the top of
 * the signed 32-bit space).
 */
#define SBX_USERNS_SIZE 65536u
#define SBX_USERNS_END 0x7FFE0000u

/* Logging, parsing and file helpers shared with nadi-gitd and nadi-credproxy. */
#include "daemonlib/evloop.h"
#include "daemonlib/log.h"
#include "daemonlib/util.h"

/* ---- configuration (config.c) ------------------------------------------ */

enum sbx_limit_mode
{
	SBX_LIMITS_AUTO = 0,
	SBX_LIMITS_UNIT,	/* systemd transient scope over sd-bus */
	SBX_LIMITS_CGROUP2, /* cgroup v2 below the daemon's own cgroup */
	SBX_LIMITS_CGROUP1, /* cgroup v1 memory + pids hierarchies */
	SBX_LIMITS_RLIMIT,	/* per-process rlimits only */
};

struct sbx_config
{
	char	*config_file;
	char	*state_dir;
	char	*image_dir;
	char	*object_dir;
	char	*token_file;
	char	*listen_unix;
	char	*listen_tcp; /* "PORT" or "127.0.0.1:PORT" (port 0: the kernel picks) */
	char	*ready_file; /* gets the bound TCP port once serving */
	char	*agent_path;
	char	*nspawn_path;
	char	*btrfs_path;
	char	*curl_path; /* pulls a snapshot's stream from another host (forks) */
	char	*pg_conninfo;
	char	*host_id;
	char	*advertise;
	char	*labels;		 /* JSON object text */
	char	*git_mirror_dir; /* nadi-gitd's mirrors, bound read-only at /srv/nadi-git; NULL: none */
	char	*proxy_dir;		 /* PROXY_DIR/<id>/ bound at /.nadi/proxy; NULL: no way out */
	uid_t	 proxy_uid;		 /* owner of PROXY_DIR/<id>/ (nadi-credproxy's user; 0) */
	gid_t	 proxy_gid;
	uint64_t loop_size;
	uid_t	 run_uid;
	gid_t	 run_gid;
	uint64_t memory_max;
	uint64_t pids_max;
	uint64_t call_timeout_ms;
	uint64_t call_timeout_max_ms;
	uint64_t output_limit;
	uint64_t stream_interval_ms; /* a streamed exec: partial output at most this often */
	uint64_t stream_max;		 /* bytes of partial output per streamed call */
	uint64_t fsize_max;
	uint64_t tmp_size;
	uint64_t disk_max;
	uint64_t ws_snapshots;		 /* workspace snapshots kept per sandbox (0: none) */
	uint64_t ws_snapshot_age_ms; /* ... and for how long at most (0: no limit) */
	bool	 private_users;		 /* a user namespace and uid range of its own per sandbox */
	uint64_t private_users_base; /* first host uid of the ranges (65536 per sandbox) */
	uint64_t max_request_bytes;
	uint64_t max_file_bytes;
	uint64_t max_sandboxes;
	uint64_t max_running;
	uint64_t max_queue;
	uint64_t idle_timeout_ms;
	uint64_t start_timeout_ms;
	uint64_t heartbeat_ms;
	uint64_t jwks_refresh_ms;  /* signing keys for session tokens (access.c) */
	uint64_t reap_interval_ms; /* the reaper's rounds (reap.c); 0: no reaping */
	uint64_t reap_grace_ms;	   /* how long a session has ended before its sandbox goes */
	enum sbx_limit_mode limits;
	bool				read_only_root;
	/* the warm pool (pool.c) */
	uint64_t pool_size;			 /* entries per base image of the store; 0: none */
	char	*pool_images;		 /* "NAME[=N],...": images kept warm, with their own sizes */
	uint64_t pool_min_available; /* MemAvailable below this: the pool shrinks; 0: not checked */
	uint64_t pool_max_pressure;	 /* PSI some avg10 (percent) at or above this: shrinks; 0: off */
	char	*pool_pressure_file; /* the PSI file read (a cgroup's memory.pressure works) */
	uint64_t pool_interval_ms;	 /* how often the pool looks at itself and the memory */
	char	*token;				 /* loaded from token_file */
	size_t	 token_len;
};

extern struct sbx_config cfg;

int			config_parse_args(int argc, char **argv);
int			config_finish(void);
const char *limit_mode_name(enum sbx_limit_mode m);

/* ---- helpers of its own (util.c; the shared ones are in daemonlib/util.h) --- */

int	 write_string_file(const char *path, const char *s);
int	 mkdir_p(const char *path, mode_t mode);
bool id_valid(const char *s, size_t maxlen);
int	 random_hex(char *buf, size_t nbytes);

#endif
