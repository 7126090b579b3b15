/*
 * config.c — configuration from command-line flags and an optional file of
 * "key = value" lines (--config FILE).  Every key can be given either way
 * ("--fetch-interval=5m" or "fetch_interval = 5m"); flags win over the file.
 * "repo = NAME=URL" may repeat; a flag for a name replaces the file's line.
 * Also the bearer token, which SIGHUP re-reads while requests check it.
 */
#include <ctype.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "gitd.h"

struct gitd_config cfg = {
	.fetch_interval_ms = 5 * 60 * 1000,
	.fetch_timeout_ms = 10 * 60 * 1000,
	.max_repos = 1000,
	.max_parallel_fetches = 4,
	.max_connections = 64,
};

static pthread_mutex_t token_lock = PTHREAD_MUTEX_INITIALIZER;
static char *token;
static size_t token_len;

enum kind { K_STR, K_MS, K_COUNT, K_REPO, K_LOGLEVEL };

struct key {
	const char *name;
	enum kind kind;
	size_t off;
	const char *help;
};

#define S(f) offsetof(struct gitd_config, f)
static const struct key keys[] = {
	{"mirror_dir", K_STR, S(mirror_dir), "directory of the bare mirrors NAME.git (required)"},
	{"listen_unix", K_STR, S(listen_unix), "unix socket path to listen on"},
	{"listen_tcp", K_STR, S(listen_tcp), "PORT or IPV4:PORT to listen on"},
	{"token_file", K_STR, S(token_file), "file holding the bearer token callers must present"},
	{"repo", K_REPO, 0, "NAME=URL: a repository to mirror (repeatable)"},
	{"fetch_interval", K_MS, S(fetch_interval_ms), "refresh every mirror this often (0: only on demand)"},
	{"fetch_timeout", K_MS, S(fetch_timeout_ms), "wall-time limit of one clone or fetch"},
	{"max_repos", K_COUNT, S(max_repos), "repositories the daemon mirrors at most"},
	{"max_parallel_fetches", K_COUNT, S(max_parallel_fetches), "clones and fetches running at once"},
	{"max_connections", K_COUNT, S(max_connections), "HTTP connections at once (one thread each)"},
	{"git_path", K_STR, S(git_path), "git binary (default: git, searched in PATH)"},
	{"log_level", K_LOGLEVEL, 0, "error, warning, notice, info or debug"},
};
#undef S

/* Add NAME=URL; replace a spec of the same name only when asked. */
static int
add_repo_spec(const char *v, bool replace)
{
	const char *eq = strchr(v, '=');
	char *name, *url;

	if (!eq || eq == v || !eq[1])
		return -EINVAL;
	name = strndup(v, (size_t)(eq - v));
	url = strdup(eq + 1);
	if (!name || !url) {
		free(name);
		free(url);
		return -ENOMEM;
	}
	for (size_t i = 0; i < cfg.n_repos; i++) {
		if (strcmp(cfg.repos[i].name, name) != 0)
			continue;
		if (replace) {
			free(cfg.repos[i].url);
			cfg.repos[i].url = url;
		} else
			free(url);
		free(name);
		return 0;
	}
	struct repo_spec *n = realloc(cfg.repos, (cfg.n_repos + 1) * sizeof *n);
	if (!n) {
		free(name);
		free(url);
		return -ENOMEM;
	}
	cfg.repos = n;
	cfg.repos[cfg.n_repos++] = (struct repo_spec){name, url};
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
set_key(const struct key *k, const char *v, bool from_flag)
{
	char *base = (char *)&cfg;

	switch (k->kind) {
	case K_STR: {
		char **p = (char **)(base + k->off);
		free(*p);
		*p = strdup(v);
		return *p ? 0 : -ENOMEM;
	}
	case K_COUNT: {
		char *end;
		errno = 0;
		unsigned long long n = strtoull(v, &end, 10);
		if (errno || end == v || *end || *v == '-')
			return -EINVAL;
		*(uint64_t *)(base + k->off) = n;
		return 0;
	}
	case K_MS:
		return parse_duration_ms(v, (uint64_t *)(base + k->off));
	case K_REPO:
		return add_repo_spec(v, from_flag);
	case K_LOGLEVEL: {
		static const char *names[] = {"error", "warning", "notice", "info", "debug"};
		for (size_t i = 0; i < ARRAY_SIZE(names); i++)
			if (strcmp(v, names[i]) == 0) {
				gitd_log_level = GITD_LOG_ERR + (int)i;
				return 0;
			}
		return -EINVAL;
	}
	}
	return -EINVAL;
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
load_file(const char *path)
{
	FILE *f = fopen(path, "re");
	char line[8192];
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
		if (key->kind == K_STR && *(char **)((char *)&cfg + key->off))
			continue; /* set by a flag */
		if (set_key(key, v, false) < 0) {
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
	printf("usage: nadi-gitd [--config FILE] [--KEY=VALUE ...]\n\n"
	       "Keeps bare mirrors of git repositories for the sandboxes of this host.\n"
	       "Every KEY can also be set in the config file as \"KEY = VALUE\".\n\n");
	for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
		char flag[64];
		size_t j;
		for (j = 0; keys[i].name[j]; j++)
			flag[j] = keys[i].name[j] == '_' ? '-' : keys[i].name[j];
		flag[j] = '\0';
		printf("  --%-22s %s\n", flag, keys[i].help);
	}
}

/*
 * Flags first (so that --config may appear anywhere), then the file for
 * what the flags left unset, then the flags again so that they win for
 * scalars too.
 */
int
config_parse_args(int argc, char **argv)
{
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
				printf("nadi-gitd %s\n", GITD_VERSION);
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
			if (set_key(k, v, true) < 0) {
				log_error("invalid value for --%.*s: \"%s\"", (int)nlen, a, v);
				return -EINVAL;
			}
		}
		if (pass == 1 || !cfg.config_file)
			break;
		int r = load_file(cfg.config_file);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Read the token file into the shared token; the old one stays on error. */
int
config_reload_token(void)
{
	char *buf = NULL;
	size_t len;
	struct stat st;
	int r;

	if (!cfg.token_file)
		return 0;
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
		free(buf);
		return -EINVAL;
	}
	pthread_mutex_lock(&token_lock);
	free(token);
	token = buf;
	token_len = len;
	pthread_mutex_unlock(&token_lock);
	return 0;
}

bool
config_token_matches(const char *presented)
{
	bool ok;

	if (!cfg.token_file)
		return true;
	pthread_mutex_lock(&token_lock);
	ok = presented && token && ct_equal(presented, strlen(presented), token, token_len);
	pthread_mutex_unlock(&token_lock);
	return ok;
}

/* Fill derived defaults and check the whole configuration. */
int
config_finish(void)
{
	if (!cfg.mirror_dir) {
		log_error("mirror_dir is required (--mirror-dir=DIR)");
		return -EINVAL;
	}
	if (cfg.mirror_dir[0] != '/') {
		char cwd[4096];
		char *abs;
		if (!getcwd(cwd, sizeof cwd) || !(abs = xasprintf("%s/%s", cwd, cfg.mirror_dir)))
			return -ENOMEM;
		free(cfg.mirror_dir);
		cfg.mirror_dir = abs;
	}
	for (size_t n = strlen(cfg.mirror_dir); n > 1 && cfg.mirror_dir[n - 1] == '/'; n--)
		cfg.mirror_dir[n - 1] = '\0';
	if (!cfg.listen_unix && !cfg.listen_tcp) {
		log_error("nothing to listen on: set listen_unix and/or listen_tcp");
		return -EINVAL;
	}
	if (!cfg.git_path && !(cfg.git_path = strdup("git")))
		return -ENOMEM;
	if (cfg.fetch_timeout_ms == 0) {
		log_error("fetch_timeout must be positive");
		return -EINVAL;
	}
	if (cfg.max_repos == 0 || cfg.max_parallel_fetches == 0 || cfg.max_parallel_fetches > 64 ||
	    cfg.max_connections == 0 || cfg.max_connections > 4096) {
		log_error("max_repos must be positive, max_parallel_fetches 1..64, max_connections 1..4096");
		return -EINVAL;
	}
	for (size_t i = 0; i < cfg.n_repos; i++) {
		const char *why = repo_url_problem(cfg.repos[i].url);
		if (!repo_name_valid(cfg.repos[i].name)) {
			log_error("repo %s: invalid name (letters, digits, '.', '_', '-'; at most %d; "
				  "not ending in .git)", cfg.repos[i].name, GITD_NAME_MAX);
			return -EINVAL;
		}
		if (why) {
			log_error("repo %s: invalid url: %s", cfg.repos[i].name, why);
			return -EINVAL;
		}
	}
	if (!cfg.token_file)
		log_warning("no token_file configured: the API accepts every caller on its sockets");
	return config_reload_token();
}
