/*
 * config.c — the keys of daemonlib/conf.h: every key is a flag
 * ("--memory-max=64M"), a variable (NADI_SANDBOXD_MEMORY_MAX) and a line of
 * the optional file ("memory_max = 64M"); flag > environment > file.  Defaults are safe for a
 * host that runs nothing else: loopback only, tight limits, no network.
 */
#include <ctype.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "daemonlib/conf.h"
#include "sandbox.h"
#include "sbx.h"

struct sbx_config cfg = {
	.loop_size = 8ULL << 30,
	.run_uid = 61000,
	.run_gid = 61000,
	.memory_max = 512ULL << 20,
	.pids_max = 128,
	.call_timeout_ms = 30000,
	.call_timeout_max_ms = 600000,
	.output_limit = 1 << 20,
	.stream_interval_ms = 250,
	.stream_max = 64 << 10,
	.fsize_max = 1ULL << 30,
	.tmp_size = 64ULL << 20,
	.disk_max = 1ULL << 30,
	.ws_snapshots = 32,
	.ws_snapshot_age_ms = 7ULL * 24 * 3600 * 1000,
	.private_users = true,
	.private_users_base = 0x70000000u,
	.max_request_bytes = 4 << 20,
	.max_file_bytes = 64 << 20,
	.max_sandboxes = 256,
	.max_running = 32,
	.max_queue = 16,
	.idle_timeout_ms = 300000,
	.start_timeout_ms = 20000,
	.heartbeat_ms = 10000,
	.jwks_refresh_ms = 60000,
	.reap_interval_ms = 30000,
	.reap_grace_ms = 60000,
	.limits = SBX_LIMITS_AUTO,
	.read_only_root = true,
	.pool_min_available = 256ULL << 20,
	.pool_max_pressure = 20,
	.pool_interval_ms = 1000,
};

const char *
limit_mode_name(enum sbx_limit_mode m)
{
	switch (m)
	{
		case SBX_LIMITS_AUTO:
			return "auto";
		case SBX_LIMITS_UNIT:
			return "unit";
		case SBX_LIMITS_CGROUP2:
			return "cgroup2";
		case SBX_LIMITS_CGROUP1:
			return "cgroup1";
		case SBX_LIMITS_RLIMIT:
			return "rlimit";
	}
	return "?";
}

/* UID[:GID] or a user name (then its primary group); -errno. */
static int
user_ids(const char *v, uid_t *uid, gid_t *gid)
{
	unsigned long u, g;
	char		 *end;

	if (isdigit((unsigned char) v[0]))
	{
		u = strtoul(v, &end, 10);
		g = u;
		if (*end == ':')
			g = strtoul(end + 1, &end, 10);
		if (*end || u > 0xfffffffe || g > 0xfffffffe)
			return -EINVAL;
	}
	else
	{
		struct passwd *pw = getpwnam(v);
		if (!pw)
			return -ESRCH;
		u = pw->pw_uid;
		g = pw->pw_gid;
	}
	*uid = (uid_t) u;
	*gid = (gid_t) g;
	return 0;
}

static int
parse_user(const char *v, bool from_flag)
{
	(void) from_flag;
	return user_ids(v, &cfg.run_uid, &cfg.run_gid);
}

static int
parse_proxy_user(const char *v, bool from_flag)
{
	(void) from_flag;
	return user_ids(v, &cfg.proxy_uid, &cfg.proxy_gid);
}

static int
parse_limits(const char *v, bool from_flag)
{
	static const char *names[] = {"auto", "unit", "cgroup2", "cgroup1", "rlimit"};
	(void) from_flag;

	for (size_t i = 0; i < ARRAY_SIZE(names); i++)
		if (strcmp(v, names[i]) == 0)
		{
			cfg.limits = (enum sbx_limit_mode) i;
			return 0;
		}
	return -EINVAL;
}

#define S(f) offsetof(struct sbx_config, f)
static const struct conf_key keys[] = {
	{"state_dir", CONF_STR, S(state_dir), "directory for sandboxes and metadata (required)", 0,
	 NULL},
	{"image_dir", CONF_STR, S(image_dir), "directory with one base image tree per subdirectory", 0,
	 NULL},
	{"object_dir", CONF_STR, S(object_dir),
	 "object-store directory for exports (default STATE/objects)", 0, NULL},
	{"token_file", CONF_STR, S(token_file), "file holding the bearer token callers must present", 0,
	 NULL},
	{"listen_unix", CONF_STR, S(listen_unix), "unix socket path to listen on", 0, NULL},
	{"listen_tcp", CONF_STR, S(listen_tcp),
	 "PORT or 127.0.0.1:PORT to listen on (port 0: any free one)", 0, NULL},
	{"ready_file", CONF_STR, S(ready_file), "file that gets the TCP port once the daemon serves", 0,
	 NULL},
	{"agent_path", CONF_STR, S(agent_path),
	 "in-container init (default: nadi-sbx-init next to the daemon)", 0, NULL},
	{"nspawn_path", CONF_STR, S(nspawn_path), "systemd-nspawn binary", 0, NULL},
	{"btrfs_path", CONF_STR, S(btrfs_path), "btrfs binary (send/receive)", 0, NULL},
	{"curl_path", CONF_STR, S(curl_path),
	 "curl binary (fetches a snapshot from another sandbox host for a fork)", 0, NULL},
	{"pg_conninfo", CONF_STR, S(pg_conninfo), "libpq conninfo for registration (optional)", 0,
	 NULL},
	{"host_id", CONF_STR, S(host_id), "host id in nadi.sandbox_hosts (default: hostname)", 0, NULL},
	{"advertise", CONF_STR, S(advertise),
	 "address cells use to reach this daemon (a port 0 in it: the bound one)", 0, NULL},
	{"labels", CONF_STR, S(labels), "JSON object of host labels", 0, NULL},
	{"git_mirror_dir", CONF_STR, S(git_mirror_dir),
	 "nadi-gitd's mirror directory, read-only at /srv/nadi-git (git_clone)", 0, NULL},
	{"proxy_dir", CONF_STR, S(proxy_dir),
	 "per-sandbox credentials-proxy socket directories, bound at /.nadi/proxy (with a proxy_user "
	 "other than root: it and the directories above it root's, written by root only)",
	 0, NULL},
	{"proxy_user", CONF_FUNC, 0,
	 "UID[:GID] or user name of nadi-credproxy: it owns each sandbox's proxy directory (default "
	 "root)",
	 0, parse_proxy_user},
	{"loop_size", CONF_SIZE, S(loop_size), "size of the BTRFS image made when STATE is not BTRFS",
	 0, NULL},
	{"run_user", CONF_FUNC, 0, "UID[:GID] or user name tools run as inside the sandbox", 0,
	 parse_user},
	{"memory_max", CONF_SIZE, S(memory_max), "memory limit per sandbox", 0, NULL},
	{"pids_max", CONF_COUNT, S(pids_max), "process limit per sandbox", 0, NULL},
	{"call_timeout", CONF_MS, S(call_timeout_ms), "default wall-time limit of a tool call", 0,
	 NULL},
	{"call_timeout_max", CONF_MS, S(call_timeout_max_ms), "largest timeout a caller may ask for", 0,
	 NULL},
	{"output_limit", CONF_SIZE, S(output_limit), "bytes kept of stdout and of stderr per call", 0,
	 NULL},
	{"stream_interval", CONF_MS, S(stream_interval_ms),
	 "a streamed exec sends its new output at most this often", 0, NULL},
	{"stream_max", CONF_SIZE, S(stream_max),
	 "bytes of output a streamed exec sends while it runs (its result still has it all)", 0, NULL},
	{"fsize_max", CONF_SIZE, S(fsize_max), "largest file a tool may write (RLIMIT_FSIZE)", 0, NULL},
	{"tmp_size", CONF_SIZE, S(tmp_size), "size of the private /tmp and /dev/shm", 0, NULL},
	{"disk_max", CONF_SIZE, S(disk_max),
	 "disk space a sandbox may add to its image (BTRFS qgroup; 0: no quota)", 0, NULL},
	{"workspace_snapshots", CONF_COUNT, S(ws_snapshots),
	 "workspace snapshots (ws-N) kept per sandbox, oldest removed first (0: none taken)", 0, NULL},
	{"workspace_snapshot_age", CONF_MS, S(ws_snapshot_age_ms),
	 "workspace snapshots older than this are removed (the newest stays; 0: no limit)", 0, NULL},
	{"private_users", CONF_BOOL, S(private_users),
	 "a user namespace and a uid range of its own per sandbox", 0, NULL},
	{"private_users_base", CONF_COUNT, S(private_users_base),
	 "first host uid of the sandboxes' ranges (65536 each)", 0, NULL},
	{"max_request_bytes", CONF_SIZE, S(max_request_bytes), "largest JSON request body", 0, NULL},
	{"max_file_bytes", CONF_SIZE, S(max_file_bytes), "largest file body (PUT) or file read", 0,
	 NULL},
	{"max_sandboxes", CONF_COUNT, S(max_sandboxes), "sandboxes this host holds (its capacity)", 0,
	 NULL},
	{"max_running", CONF_COUNT, S(max_running), "containers running at once", 0, NULL},
	{"max_queue", CONF_COUNT, S(max_queue), "calls waiting per sandbox", 0, NULL},
	{"idle_timeout", CONF_MS, S(idle_timeout_ms),
	 "stop a warm container after this idle time (0: after each call)", 0, NULL},
	{"start_timeout", CONF_MS, S(start_timeout_ms), "give up on a container that does not start", 0,
	 NULL},
	{"heartbeat", CONF_MS, S(heartbeat_ms), "interval of registration heartbeats", 0, NULL},
	{"jwks_refresh", CONF_MS, S(jwks_refresh_ms),
	 "interval of signing-key refreshes (session tokens)", 0, NULL},
	{"reap_interval", CONF_MS, S(reap_interval_ms),
	 "destroy the sandboxes of ended sessions this often (needs pg_conninfo; 0: never)", 0, NULL},
	{"reap_grace", CONF_MS, S(reap_grace_ms),
	 "how long a session has ended (or a sandbox existed) before the reaper destroys it", 0, NULL},
	{"limits", CONF_FUNC, 0, "auto, unit, cgroup2, cgroup1 or rlimit", 0, parse_limits},
	{"read_only_root", CONF_BOOL, S(read_only_root),
	 "mount the sandbox root read-only (workspace stays writable)", 0, NULL},
	{"pool_size", CONF_COUNT, S(pool_size),
	 "warm containers kept per base image, for new sessions' first calls (0: no pool)", 0, NULL},
	{"pool_images", CONF_STR, S(pool_images),
	 "NAME[=N],...: images kept warm and their own pool sizes (a NAME alone: pool_size)", 0, NULL},
	{"pool_min_available", CONF_SIZE, S(pool_min_available),
	 "the pool shrinks while MemAvailable is below this (0: not checked)", 0, NULL},
	{"pool_max_pressure", CONF_COUNT, S(pool_max_pressure),
	 "the pool shrinks while memory PSI some avg10 is at or above this percentage (0: off)", 0,
	 NULL},
	{"pool_pressure_file", CONF_STR, S(pool_pressure_file),
	 "PSI file of pool_max_pressure (default /proc/pressure/memory)", 0, NULL},
	{"pool_interval", CONF_MS, S(pool_interval_ms), "how often the pool checks memory and refills",
	 0, NULL},
	CONF_KEY_LOG_LEVEL,
};
#undef S

static const struct conf_spec spec =
	CONF_SPEC("nadi-sandboxd", "Runs tool calls in systemd-nspawn containers on BTRFS snapshots.\n",
			  cfg, keys);

int
config_parse_args(int argc, char **argv)
{
	return conf_parse_args(&spec, argc, argv);
}

static int
load_token(void)
{
	if (!cfg.token_file)
	{
		log_warning("no token_file configured: the API accepts every caller on its sockets");
		return 0;
	}
	return token_file_load(cfg.token_file, &cfg.token, &cfg.token_len);
}

/*
 * The proxy directories are handed to proxy_user and bound into containers
 * by path: nobody but root may rename or replace a name on that path, or
 * the proxy's user (or anyone else) could point a bind mount (or a chmod)
 * at any directory of the host.  So PATH and every directory above it must
 * be root's and not writable by group or others (a sticky directory above
 * PATH aside: below it only the owner renames).  MISSING_OK: the parts that
 * do not exist yet are skipped (checked before mkdir_p makes them).  0, or
 * -errno after logging why.
 */
static int
root_only_path(const char *key, const char *path, bool missing_ok)
{
	char		buf[4096];
	struct stat st;
	size_t		len = strlen(path);

	if (len >= sizeof buf)
		return conf_invalid("%s is too long", key);
	memcpy(buf, path, len + 1);
	for (;;)
	{
		if (lstat(buf, &st) < 0)
		{
			if (!missing_ok || errno != ENOENT)
			{
				log_error("%s: cannot stat %s: %m", key, buf);
				return -errno;
			}
		}
		else if (!S_ISDIR(st.st_mode) || st.st_uid != 0 ||
				 ((st.st_mode & (S_IWGRP | S_IWOTH)) &&
				  !((st.st_mode & S_ISVTX) && strlen(buf) < len)))
		{
			log_error("%s %s: %s is %s (owner uid %u, mode %04o): it and every directory above it "
					  "must be root's directories that only root writes, so that no other user can "
					  "replace what is bound into the sandboxes",
					  key, path, buf, S_ISDIR(st.st_mode) ? "not safe" : "not a directory",
					  (unsigned) st.st_uid, (unsigned) (st.st_mode & 07777));
			return -EPERM;
		}
		else
			missing_ok = false; /* what is above an existing part exists */
		if (strcmp(buf, "/") == 0)
			return 0;
		char *slash = strrchr(buf, '/');
		if (slash == buf)
			slash[1] = '\0';
		else
			*slash = '\0';
	}
}

/*
 * An egress directory (git_mirror_dir, proxy_dir): empty means none; else
 * an absolute directory without ':' (nspawn's --bind separator).  A missing
 * proxy_dir is created (mode 0755); the mirror directory belongs to
 * nadi-gitd and must exist.
 */
static int
egress_dir(const char *key, char **dir, bool create)
{
	struct stat st;
	int			r;

	if (!*dir)
		return 0;
	if (!**dir)
	{
		free(*dir);
		*dir = NULL;
		return 0;
	}
	if ((*dir)[0] != '/' || strchr(*dir, ':'))
		return conf_invalid("%s must be an absolute path without ':' (got \"%s\")", key, *dir);
	/* one spelling of the path: no trailing '/', no empty, '.' or '..' part */
	for (size_t n = strlen(*dir); n > 1 && (*dir)[n - 1] == '/'; n--)
		(*dir)[n - 1] = '\0';
	if (strstr(*dir, "//") || strstr(*dir, "/./") || strstr(*dir, "/../") ||
		(strlen(*dir) >= 2 && strcmp(*dir + strlen(*dir) - 2, "/.") == 0) ||
		(strlen(*dir) >= 3 && strcmp(*dir + strlen(*dir) - 3, "/..") == 0))
		return conf_invalid("%s must not have empty, '.' or '..' parts (got \"%s\")", key, *dir);
	/* the directories that exist already are checked before any is made */
	if (create && (r = root_only_path(key, *dir, true)) < 0)
		return r;
	if (create && (r = mkdir_p(*dir, 0755)) < 0)
	{
		errno = -r;
		log_error("cannot create %s %s: %m", key, *dir);
		return r;
	}
	if (stat(*dir, &st) < 0 || !S_ISDIR(st.st_mode))
	{
		log_error("%s %s is not a directory%s", key, *dir,
				  create ? "" : " (start nadi-gitd first, or create it)");
		return -ENOTDIR;
	}
	return 0;
}

/* Fill derived defaults and check the whole configuration. */
int
config_finish(void)
{
	int r;

	if (!cfg.state_dir)
		return conf_invalid("state_dir is required (--state-dir=DIR)");
	if (!cfg.listen_unix && !cfg.listen_tcp)
		return conf_invalid("nothing to listen on: set listen_unix and/or listen_tcp");
	if (!cfg.image_dir)
		cfg.image_dir = xasprintf("%s/images-src", cfg.state_dir);
	if (!cfg.object_dir)
		cfg.object_dir = xasprintf("%s/objects", cfg.state_dir);
	if (!cfg.nspawn_path)
		cfg.nspawn_path = strdup("/usr/bin/systemd-nspawn");
	if (!cfg.btrfs_path)
		cfg.btrfs_path = strdup("/usr/bin/btrfs");
	if (!cfg.curl_path)
		cfg.curl_path = strdup("/usr/bin/curl");
	if (!cfg.agent_path)
	{
		char	exe[4096];
		ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
		if (n > 0)
		{
			exe[n] = '\0';
			char *slash = strrchr(exe, '/');
			if (slash)
				*slash = '\0';
			cfg.agent_path = xasprintf("%s/nadi-sbx-init", exe);
		}
	}
	if (!cfg.host_id)
		cfg.host_id = conf_hostname("sandbox-host");
	if (!cfg.labels)
		cfg.labels = strdup("{}");
	if (!cfg.pool_pressure_file)
		cfg.pool_pressure_file = strdup("/proc/pressure/memory");
	if (cfg.pool_interval_ms < 10)
		return conf_invalid("pool_interval must be at least 10ms");
	if (cfg.pool_size > cfg.max_running)
		return conf_invalid("pool_size must not exceed max_running");
	if (!cfg.image_dir || !cfg.object_dir || !cfg.nspawn_path || !cfg.btrfs_path ||
		!cfg.curl_path || !cfg.agent_path || !cfg.host_id || !cfg.labels)
		return -ENOMEM;
	if (cfg.call_timeout_ms == 0 || cfg.call_timeout_ms > cfg.call_timeout_max_ms)
		return conf_invalid("call_timeout must be between 1ms and call_timeout_max");
	if (cfg.pids_max < 4 || cfg.memory_max < (16 << 20))
		return conf_invalid("pids_max must be at least 4 and memory_max at least 16M");
	if (cfg.max_running == 0 || cfg.max_sandboxes == 0 || cfg.max_queue == 0)
		return conf_invalid("max_running, max_sandboxes and max_queue must be positive");
	if (cfg.ws_snapshots > SBX_MAX_SNAPSHOTS / 2)
		return conf_invalid("workspace_snapshots must be at most %d (half of the %d snapshots a "
							"sandbox may hold)",
							SBX_MAX_SNAPSHOTS / 2, SBX_MAX_SNAPSHOTS);
	if (cfg.jwks_refresh_ms < 1000)
		return conf_invalid("jwks_refresh must be at least 1s");
	if (cfg.reap_interval_ms != 0 && cfg.reap_interval_ms < 100)
		return conf_invalid("reap_interval must be 0 (no reaping) or at least 100ms");
	if (cfg.output_limit == 0 || cfg.output_limit > (64 << 20))
		return conf_invalid("output_limit must be between 1 byte and 64M");
	if (cfg.stream_interval_ms < 10 || cfg.stream_interval_ms > 60000)
		return conf_invalid("stream_interval must be between 10ms and 60s");
	if (cfg.stream_max == 0 || cfg.stream_max > (64 << 20))
		return conf_invalid("stream_max must be between 1 byte and 64M");
	if (cfg.private_users && (cfg.private_users_base % SBX_USERNS_SIZE != 0 ||
							  cfg.private_users_base < SBX_USERNS_SIZE ||
							  cfg.private_users_base + SBX_USERNS_SIZE > SBX_USERNS_END))
		return conf_invalid("private_users_base must be a multiple of 65536 between 65536 and %u",
							SBX_USERNS_END - SBX_USERNS_SIZE);
	if (cfg.private_users && (cfg.run_uid >= SBX_USERNS_SIZE || cfg.run_gid >= SBX_USERNS_SIZE))
		return conf_invalid(
			"with private_users, run_user must be a uid and gid below 65536 (the range each "
			"sandbox maps)");
	if (cfg.proxy_uid != 0 && (cfg.proxy_uid == cfg.run_uid || cfg.proxy_uid == 65534))
		return conf_invalid("proxy_user must be a user of its own (not run_user, not nobody): "
							"whoever shares its uid could take over the sandboxes' proxy sockets");
	if ((r = egress_dir("git_mirror_dir", &cfg.git_mirror_dir, false)) < 0 ||
		(r = egress_dir("proxy_dir", &cfg.proxy_dir, true)) < 0 ||
		(cfg.proxy_dir && (r = root_only_path("proxy_dir", cfg.proxy_dir, false)) < 0))
		return r;
	if (access(cfg.agent_path, X_OK) < 0)
	{
		log_error("in-container init %s is not executable: %m", cfg.agent_path);
		return -errno;
	}
	return load_token();
}
