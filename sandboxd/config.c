/*
 * config.c — configuration from command-line flags and an optional file of
 * "key = value" lines.  Every key can be given either way ("--memory-max=64M"
 * or "memory_max = 64M"); flags win over the file.  Defaults are safe for a
 * host that runs nothing else: loopback only, tight limits, no network.
 */
#include <ctype.h>
#include <fcntl.h>
#include <getopt.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

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
	.fsize_max = 1ULL << 30,
	.tmp_size = 64ULL << 20,
	.max_request_bytes = 4 << 20,
	.max_file_bytes = 64 << 20,
	.max_sandboxes = 256,
	.max_running = 32,
	.max_queue = 16,
	.idle_timeout_ms = 300000,
	.start_timeout_ms = 20000,
	.heartbeat_ms = 10000,
	.limits = SBX_LIMITS_AUTO,
	.read_only_root = true,
};

enum kind { K_STR, K_SIZE, K_MS, K_COUNT, K_BOOL, K_LIMITS, K_USER, K_LOGLEVEL };

struct key {
	const char *name;
	enum kind kind;
	size_t off;
	const char *help;
};

#define S(f) offsetof(struct sbx_config, f)
static const struct key keys[] = {
	{"state_dir", K_STR, S(state_dir), "directory for sandboxes and metadata (required)"},
	{"image_dir", K_STR, S(image_dir), "directory with one base image tree per subdirectory"},
	{"object_dir", K_STR, S(object_dir), "object-store directory for exports (default STATE/objects)"},
	{"token_file", K_STR, S(token_file), "file holding the bearer token callers must present"},
	{"listen_unix", K_STR, S(listen_unix), "unix socket path to listen on"},
	{"listen_tcp", K_STR, S(listen_tcp), "PORT or 127.0.0.1:PORT to listen on"},
	{"agent_path", K_STR, S(agent_path), "in-container init (default: nadi-sbx-init next to the daemon)"},
	{"nspawn_path", K_STR, S(nspawn_path), "systemd-nspawn binary"},
	{"btrfs_path", K_STR, S(btrfs_path), "btrfs binary (send/receive)"},
	{"pg_conninfo", K_STR, S(pg_conninfo), "libpq conninfo for registration (optional)"},
	{"host_id", K_STR, S(host_id), "host id in nadi.sandbox_hosts (default: hostname)"},
	{"advertise", K_STR, S(advertise), "address cells use to reach this daemon"},
	{"labels", K_STR, S(labels), "JSON object of host labels"},
	{"git_mirror_dir", K_STR, S(git_mirror_dir), "nadi-gitd's mirror directory, read-only at /srv/nadi-git (git_clone)"},
	{"proxy_dir", K_STR, S(proxy_dir), "per-sandbox credentials-proxy socket directories, bound at /.nadi/proxy"},
	{"loop_size", K_SIZE, S(loop_size), "size of the BTRFS image made when STATE is not BTRFS"},
	{"run_user", K_USER, 0, "UID[:GID] or user name tools run as inside the sandbox"},
	{"memory_max", K_SIZE, S(memory_max), "memory limit per sandbox"},
	{"pids_max", K_COUNT, S(pids_max), "process limit per sandbox"},
	{"call_timeout", K_MS, S(call_timeout_ms), "default wall-time limit of a tool call"},
	{"call_timeout_max", K_MS, S(call_timeout_max_ms), "largest timeout a caller may ask for"},
	{"output_limit", K_SIZE, S(output_limit), "bytes kept of stdout and of stderr per call"},
	{"fsize_max", K_SIZE, S(fsize_max), "largest file a tool may write (RLIMIT_FSIZE)"},
	{"tmp_size", K_SIZE, S(tmp_size), "size of the private /tmp and /dev/shm"},
	{"disk_max", K_SIZE, S(disk_max), "disk space a sandbox may add to its image (BTRFS qgroup; 0: no quota)"},
	{"max_request_bytes", K_SIZE, S(max_request_bytes), "largest JSON request body"},
	{"max_file_bytes", K_SIZE, S(max_file_bytes), "largest file body (PUT) or file read"},
	{"max_sandboxes", K_COUNT, S(max_sandboxes), "sandboxes this host holds (its capacity)"},
	{"max_running", K_COUNT, S(max_running), "containers running at once"},
	{"max_queue", K_COUNT, S(max_queue), "calls waiting per sandbox"},
	{"idle_timeout", K_MS, S(idle_timeout_ms), "stop a warm container after this idle time (0: after each call)"},
	{"start_timeout", K_MS, S(start_timeout_ms), "give up on a container that does not start"},
	{"heartbeat", K_MS, S(heartbeat_ms), "interval of registration heartbeats"},
	{"limits", K_LIMITS, S(limits), "auto, unit, cgroup2, cgroup1 or rlimit"},
	{"read_only_root", K_BOOL, S(read_only_root), "mount the sandbox root read-only (workspace stays writable)"},
	{"log_level", K_LOGLEVEL, 0, "error, warning, notice, info or debug"},
};
#undef S

const char *
limit_mode_name(enum sbx_limit_mode m)
{
	switch (m) {
	case SBX_LIMITS_AUTO: return "auto";
	case SBX_LIMITS_UNIT: return "unit";
	case SBX_LIMITS_CGROUP2: return "cgroup2";
	case SBX_LIMITS_CGROUP1: return "cgroup1";
	case SBX_LIMITS_RLIMIT: return "rlimit";
	}
	return "?";
}

static int
parse_user(const char *v)
{
	unsigned long u, g;
	char *end;

	if (isdigit((unsigned char)v[0])) {
		u = strtoul(v, &end, 10);
		g = u;
		if (*end == ':')
			g = strtoul(end + 1, &end, 10);
		if (*end || u > 0xfffffffe || g > 0xfffffffe)
			return -EINVAL;
	} else {
		struct passwd *pw = getpwnam(v);
		if (!pw)
			return -ESRCH;
		u = pw->pw_uid;
		g = pw->pw_gid;
	}
	cfg.run_uid = (uid_t)u;
	cfg.run_gid = (gid_t)g;
	return 0;
}

static const struct key *
find_key(const char *name, size_t len)
{
	char norm[64];

	if (len >= sizeof norm)
		return NULL;
	for (size_t i = 0; i < len; i++)
		norm[i] = name[i] == '-' ? '_' : name[i];
	norm[len] = '\0';
	for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
		if (strcmp(keys[i].name, norm) == 0)
			return &keys[i];
	return NULL;
}

static int
set_key(const struct key *k, const char *v)
{
	char *base = (char *)&cfg;
	int r = 0;

	switch (k->kind) {
	case K_STR: {
		char **p = (char **)(base + k->off);
		free(*p);
		*p = strdup(v);
		return *p ? 0 : -ENOMEM;
	}
	case K_SIZE:
	case K_COUNT:
		if (k->kind == K_COUNT) {
			char *end;
			errno = 0;
			unsigned long long n = strtoull(v, &end, 10);
			if (errno || end == v || *end || *v == '-')
				return -EINVAL;
			*(uint64_t *)(base + k->off) = n;
			return 0;
		}
		return parse_size(v, (uint64_t *)(base + k->off));
	case K_MS:
		return parse_duration_ms(v, (uint64_t *)(base + k->off));
	case K_BOOL:
		return parse_bool(v, (bool *)(base + k->off));
	case K_USER:
		return parse_user(v);
	case K_LIMITS: {
		static const char *names[] = {"auto", "unit", "cgroup2", "cgroup1", "rlimit"};
		for (size_t i = 0; i < ARRAY_SIZE(names); i++)
			if (strcmp(v, names[i]) == 0) {
				cfg.limits = (enum sbx_limit_mode)i;
				return 0;
			}
		return -EINVAL;
	}
	case K_LOGLEVEL: {
		static const char *names[] = {"error", "warning", "notice", "info", "debug"};
		for (size_t i = 0; i < ARRAY_SIZE(names); i++)
			if (strcmp(v, names[i]) == 0) {
				sbx_log_level = SBX_LOG_ERR + (int)i;
				return 0;
			}
		return -EINVAL;
	}
	}
	return r;
}

static char *
trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

static int
load_file(const char *path, bool only_unset)
{
	FILE *f = fopen(path, "re");
	char line[4096];
	unsigned lineno = 0;
	int r = 0;

	if (!f) {
		log_error("cannot open config file %s: %m", path);
		return -errno;
	}
	while (fgets(line, sizeof line, f)) {
		char *s = trim(line), *eq, *k, *v;
		const struct key *key;

		lineno++;
		if (!*s || *s == '#' || *s == ';')
			continue;
		eq = strchr(s, '=');
		if (!eq) {
			log_error("%s:%u: expected key = value", path, lineno);
			r = -EINVAL;
			break;
		}
		*eq = '\0';
		k = trim(s);
		v = trim(eq + 1);
		key = find_key(k, strlen(k));
		if (!key) {
			log_error("%s:%u: unknown key \"%s\"", path, lineno, k);
			r = -EINVAL;
			break;
		}
		if (only_unset && key->kind == K_STR && *(char **)((char *)&cfg + key->off))
			continue;
		if (set_key(key, v) < 0) {
			log_error("%s:%u: invalid value for %s: \"%s\"", path, lineno, k, v);
			r = -EINVAL;
			break;
		}
	}
	fclose(f);
	return r;
}

static void
usage(void)
{
	printf("usage: nadi-sandboxd [--config FILE] [--KEY=VALUE ...]\n\n"
	       "Runs tool calls in systemd-nspawn containers on BTRFS snapshots.\n"
	       "Every KEY can also be set in the config file as \"KEY = VALUE\".\n\n");
	for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
		char flag[64];
		size_t j;
		for (j = 0; keys[i].name[j]; j++)
			flag[j] = keys[i].name[j] == '_' ? '-' : keys[i].name[j];
		flag[j] = '\0';
		printf("  --%-20s %s\n", flag, keys[i].help);
	}
}

/*
 * Flags first (so that --config may appear anywhere), then the file for
 * keys the flags left unset.  Scalars set by flags are re-applied after the
 * file so that flags win for them too.
 */
int
config_parse_args(int argc, char **argv)
{
	int r;

	for (int pass = 0; pass < 2; pass++) {
		for (int i = 1; i < argc; i++) {
			const char *a = argv[i], *v;
			const struct key *k;
			size_t nlen;

			if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
				usage();
				exit(0);
			}
			if (strcmp(a, "--version") == 0) {
				printf("nadi-sandboxd %s\n", SBX_VERSION);
				exit(0);
			}
			if (strncmp(a, "--", 2) != 0 && strcmp(a, "-c") != 0) {
				log_error("unexpected argument \"%s\"", a);
				return -EINVAL;
			}
			a += (a[1] == '-') ? 2 : 1;
			v = strchr(a, '=');
			nlen = v ? (size_t)(v - a) : strlen(a);
			if (v)
				v++;
			else if (i + 1 < argc)
				v = argv[++i];
			else {
				log_error("flag --%s needs a value", a);
				return -EINVAL;
			}
			if ((nlen == 1 && a[0] == 'c') || (nlen == 6 && strncmp(a, "config", 6) == 0)) {
				if (pass == 0) {
					free(cfg.config_file);
					cfg.config_file = strdup(v);
				}
				continue;
			}
			k = find_key(a, nlen);
			if (!k) {
				log_error("unknown flag --%.*s (see --help)", (int)nlen, a);
				return -EINVAL;
			}
			if (set_key(k, v) < 0) {
				log_error("invalid value for --%.*s: \"%s\"", (int)nlen, a, v);
				return -EINVAL;
			}
		}
		if (pass == 0 && cfg.config_file) {
			r = load_file(cfg.config_file, true);
			if (r < 0)
				return r;
		} else
			break;
	}
	return 0;
}

static int
load_token(void)
{
	_cleanup_(freep) char *buf = NULL;
	size_t len;
	struct stat st;
	int r;

	if (!cfg.token_file) {
		log_warning("no token_file configured: the API accepts every caller on its sockets");
		return 0;
	}
	if (stat(cfg.token_file, &st) == 0 && (st.st_mode & 0077))
		log_warning("token file %s is readable by group or others", cfg.token_file);
	r = read_full_file(AT_FDCWD, cfg.token_file, &buf, &len, 4096);
	if (r < 0) {
		errno = -r;
		log_error("cannot read token file %s: %m", cfg.token_file);
		return r;
	}
	while (len > 0 && isspace((unsigned char)buf[len - 1]))
		buf[--len] = '\0';
	if (len < 16) {
		log_error("token in %s is shorter than 16 bytes", cfg.token_file);
		return -EINVAL;
	}
	cfg.token = buf;
	cfg.token_len = len;
	buf = NULL;
	return 0;
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
	int r;

	if (!*dir)
		return 0;
	if (!**dir) {
		free(*dir);
		*dir = NULL;
		return 0;
	}
	if ((*dir)[0] != '/' || strchr(*dir, ':')) {
		log_error("%s must be an absolute path without ':' (got \"%s\")", key, *dir);
		return -EINVAL;
	}
	if (create && (r = mkdir_p(*dir, 0755)) < 0) {
		errno = -r;
		log_error("cannot create %s %s: %m", key, *dir);
		return r;
	}
	if (stat(*dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
		log_error("%s %s is not a directory%s", key, *dir, create ? "" : " (start nadi-gitd first, or create it)");
		return -ENOTDIR;
	}
	return 0;
}

/* Fill derived defaults and check the whole configuration. */
int
config_finish(void)
{
	char host[256];
	int r;

	if (!cfg.state_dir) {
		log_error("state_dir is required (--state-dir=DIR)");
		return -EINVAL;
	}
	if (!cfg.listen_unix && !cfg.listen_tcp) {
		log_error("nothing to listen on: set listen_unix and/or listen_tcp");
		return -EINVAL;
	}
	if (!cfg.image_dir)
		cfg.image_dir = xasprintf("%s/images-src", cfg.state_dir);
	if (!cfg.object_dir)
		cfg.object_dir = xasprintf("%s/objects", cfg.state_dir);
	if (!cfg.nspawn_path)
		cfg.nspawn_path = strdup("/usr/bin/systemd-nspawn");
	if (!cfg.btrfs_path)
		cfg.btrfs_path = strdup("/usr/bin/btrfs");
	if (!cfg.agent_path) {
		char exe[4096];
		ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
		if (n > 0) {
			exe[n] = '\0';
			char *slash = strrchr(exe, '/');
			if (slash)
				*slash = '\0';
			cfg.agent_path = xasprintf("%s/nadi-sbx-init", exe);
		}
	}
	if (!cfg.host_id) {
		if (gethostname(host, sizeof host) < 0)
			snprintf(host, sizeof host, "sandbox-host");
		host[sizeof host - 1] = '\0';
		cfg.host_id = strdup(host);
	}
	if (!cfg.labels)
		cfg.labels = strdup("{}");
	if (!cfg.image_dir || !cfg.object_dir || !cfg.nspawn_path || !cfg.btrfs_path || !cfg.agent_path ||
	    !cfg.host_id || !cfg.labels)
		return -ENOMEM;
	if (cfg.call_timeout_ms == 0 || cfg.call_timeout_ms > cfg.call_timeout_max_ms) {
		log_error("call_timeout must be between 1ms and call_timeout_max");
		return -EINVAL;
	}
	if (cfg.pids_max < 4 || cfg.memory_max < (16 << 20)) {
		log_error("pids_max must be at least 4 and memory_max at least 16M");
		return -EINVAL;
	}
	if (cfg.max_running == 0 || cfg.max_sandboxes == 0 || cfg.max_queue == 0) {
		log_error("max_running, max_sandboxes and max_queue must be positive");
		return -EINVAL;
	}
	if (cfg.output_limit == 0 || cfg.output_limit > (64 << 20)) {
		log_error("output_limit must be between 1 byte and 64M");
		return -EINVAL;
	}
	if ((r = egress_dir("git_mirror_dir", &cfg.git_mirror_dir, false)) < 0 ||
	    (r = egress_dir("proxy_dir", &cfg.proxy_dir, true)) < 0)
		return r;
	if (access(cfg.agent_path, X_OK) < 0) {
		log_error("in-container init %s is not executable: %m", cfg.agent_path);
		return -errno;
	}
	return load_token();
}
