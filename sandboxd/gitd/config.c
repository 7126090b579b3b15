/*
 * config.c — the keys of daemonlib/conf.h: every key is a flag
 * ("--fetch-interval=5m"), a variable (NADI_GITD_FETCH_INTERVAL) and a line
 * of the optional file ("fetch_interval = 5m"); flag > environment > file.
 * "repo = NAME=URL" may repeat; a flag for a name replaces the others' value.
 * Also the bearer token, which SIGHUP re-reads while requests check it.
 */
#include <stdio.h>
#include <string.h>

#include "daemonlib/conf.h"
#include "gitd.h"

struct gitd_config cfg = {
	.fetch_interval_ms = 5 * 60 * 1000,
	.fetch_timeout_ms = 10 * 60 * 1000,
	.max_repos = 1000,
	.max_parallel_fetches = 4,
	.max_connections = 64,
};

static pthread_mutex_t token_lock = PTHREAD_MUTEX_INITIALIZER;
static char			  *token;
static size_t		   token_len;

/* Add NAME=URL; a flag replaces a spec of the same name, a file line does not. */
static int
add_repo_spec(const char *v, bool replace)
{
	const char *eq = strchr(v, '=');
	char	   *name, *url;

	if (!eq || eq == v || !eq[1])
		return -EINVAL;
	name = strndup(v, (size_t) (eq - v));
	url = strdup(eq + 1);
	if (!name || !url)
	{
		free(name);
		free(url);
		return -ENOMEM;
	}
	for (size_t i = 0; i < cfg.n_repos; i++)
	{
		if (strcmp(cfg.repos[i].name, name) != 0)
			continue;
		if (replace)
		{
			free(cfg.repos[i].url);
			cfg.repos[i].url = url;
		}
		else
			free(url);
		free(name);
		return 0;
	}
	struct repo_spec *n = realloc(cfg.repos, (cfg.n_repos + 1) * sizeof *n);
	if (!n)
	{
		free(name);
		free(url);
		return -ENOMEM;
	}
	cfg.repos = n;
	cfg.repos[cfg.n_repos++] = (struct repo_spec){name, url};
	return 0;
}

#define S(f) offsetof(struct gitd_config, f)
static const struct conf_key keys[] = {
	{"mirror_dir", CONF_STR, S(mirror_dir), "directory of the bare mirrors NAME.git (required)", 0,
	 NULL},
	{"listen_unix", CONF_STR, S(listen_unix), "unix socket path to listen on", 0, NULL},
	{"listen_tcp", CONF_STR, S(listen_tcp), "PORT or IPV4:PORT to listen on (port 0: any free one)",
	 0, NULL},
	{"ready_file", CONF_STR, S(ready_file), "file that gets the TCP port once the daemon serves", 0,
	 NULL},
	{"token_file", CONF_STR, S(token_file), "file holding the bearer token callers must present", 0,
	 NULL},
	{"repo", CONF_FUNC, 0, "NAME=URL: a repository to mirror (repeatable)", CONF_LIST,
	 add_repo_spec},
	{"fetch_interval", CONF_MS, S(fetch_interval_ms),
	 "refresh every mirror this often (0: only on demand)", 0, NULL},
	{"fetch_timeout", CONF_MS, S(fetch_timeout_ms), "wall-time limit of one clone or fetch", 0,
	 NULL},
	{"max_repos", CONF_COUNT, S(max_repos), "repositories the daemon mirrors at most", 0, NULL},
	{"max_parallel_fetches", CONF_COUNT, S(max_parallel_fetches),
	 "clones and fetches running at once", 0, NULL},
	{"max_connections", CONF_COUNT, S(max_connections),
	 "HTTP connections at once (one thread each)", 0, NULL},
	{"git_path", CONF_STR, S(git_path), "git binary (default: git, searched in PATH)", 0, NULL},
	CONF_KEY_LOG_LEVEL,
};
#undef S

static const struct conf_spec spec = CONF_SPEC(
	"nadi-gitd", "Keeps bare mirrors of git repositories for the sandboxes of this host.\n", cfg,
	keys);

/*
 * A --repo flag is applied before the variable and the file: their value
 * for the same name does not replace it.
 */
int
config_parse_args(int argc, char **argv)
{
	return conf_parse_args(&spec, argc, argv);
}

/* Read the token file into the shared token; the old one stays on error. */
int
config_reload_token(void)
{
	char  *buf = NULL;
	size_t len;
	int	   r;

	if (!cfg.token_file)
		return 0;
	r = token_file_load(cfg.token_file, &buf, &len);
	if (r < 0)
		return r;
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
	if (!cfg.mirror_dir)
		return conf_invalid("mirror_dir is required (--mirror-dir=DIR)");
	if (cfg.mirror_dir[0] != '/')
	{
		char  cwd[4096];
		char *abs;
		if (!getcwd(cwd, sizeof cwd) || !(abs = xasprintf("%s/%s", cwd, cfg.mirror_dir)))
			return -ENOMEM;
		free(cfg.mirror_dir);
		cfg.mirror_dir = abs;
	}
	for (size_t n = strlen(cfg.mirror_dir); n > 1 && cfg.mirror_dir[n - 1] == '/'; n--)
		cfg.mirror_dir[n - 1] = '\0';
	if (!cfg.listen_unix && !cfg.listen_tcp)
		return conf_invalid("nothing to listen on: set listen_unix and/or listen_tcp");
	if (!cfg.git_path && !(cfg.git_path = strdup("git")))
		return -ENOMEM;
	if (cfg.fetch_timeout_ms == 0)
		return conf_invalid("fetch_timeout must be positive");
	if (cfg.max_repos == 0 || cfg.max_parallel_fetches == 0 || cfg.max_parallel_fetches > 64 ||
		cfg.max_connections == 0 || cfg.max_connections > 4096)
		return conf_invalid(
			"max_repos must be positive, max_parallel_fetches 1..64, max_connections 1..4096");
	for (size_t i = 0; i < cfg.n_repos; i++)
	{
		const char *why = repo_url_problem(cfg.repos[i].url);
		if (!repo_name_valid(cfg.repos[i].name))
			return conf_invalid(
				"repo %s: invalid name (letters, digits, '.', '_', '-'; at most %d; "
				"not ending in .git)",
				cfg.repos[i].name, GITD_NAME_MAX);
		if (why)
			return conf_invalid("repo %s: invalid url: %s", cfg.repos[i].name, why);
	}
	if (!cfg.token_file)
		log_warning("no token_file configured: the API accepts every caller on its sockets");
	return config_reload_token();
}
