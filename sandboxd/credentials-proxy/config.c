/*
 * config.c — the keys of daemonlib/conf.h (flags, NADI_CREDPROXY_* variables
 * and an optional file of "key = value" lines; flag > environment > file).  The
 * upstreams are the one repeatable key: "upstream NAME url=... header=...
 * format=\"Bearer %s\" secret_file=PATH" lines in the file and/or
 * --upstream="NAME ..." flags.  Secrets are read at start and on SIGHUP,
 * never logged, and a secret file others may read stops the start.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <openssl/crypto.h>

#include "daemonlib/conf.h"
#include "credproxy.h"

struct cp_config cfg = {
	.pg_pool = 4,
	.pg_timeout_ms = 5000,
	.max_request_bytes = 8ULL << 20,
	.max_response_bytes = 64ULL << 20,
	.upstream_timeout_ms = 120000,
	.connect_timeout_ms = 10000,
	.low_speed_time_ms = 30000,
	.max_connections = 256,
	.max_sandbox_connections = 16,
	.max_sandboxes = 1024,
	.idle_timeout_ms = 60000,
	.drain_timeout_ms = 30000,
};

pthread_rwlock_t cp_secret_lock = PTHREAD_RWLOCK_INITIALIZER;

/* ---- upstreams ------------------------------------------------------------ */

void
upstream_clear(struct upstream *up)
{
	char **fields[] = {&up->name,
					   &up->url,
					   &up->scheme,
					   &up->host,
					   &up->origin,
					   &up->base,
					   &up->header,
					   &up->format,
					   &up->secret_file,
					   &up->secret_env,
					   &up->secret_credential,
					   &up->resolve,
					   &up->ca_file};

	for (size_t i = 0; i < ARRAY_SIZE(fields); i++)
	{
		free(*fields[i]);
		*fields[i] = NULL;
	}
	if (up->secret)
	{
		OPENSSL_cleanse(up->secret, strlen(up->secret));
		free(up->secret);
		up->secret = NULL;
	}
}

/* RFC 9110 token characters: what a header name may consist of. */
static bool
header_name_valid(const char *s)
{
	if (!*s || strlen(s) > 64)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char) *s) && !strchr("!#$%&'*+-.^_`|~", *s))
			return false;
	return true;
}

/* One "%s" and no other conversion; the value may not break the header. */
static bool
format_valid(const char *f)
{
	unsigned n = 0;

	if (strlen(f) > 256)
		return false;
	for (const char *p = f; *p; p++)
	{
		if ((unsigned char) *p < 0x20 || *p == 0x7f)
			return false;
		if (*p == '%')
		{
			if (p[1] != 's')
				return false;
			n++;
			p++;
		}
	}
	return n == 1;
}

/* Split off the next word of a spec; "double quoted" words may hold spaces. */
static int
next_word(const char **sp, char *out, size_t outsz)
{
	const char *s = *sp;
	size_t		n = 0;
	bool		quoted = false;

	while (isspace((unsigned char) *s))
		s++;
	if (!*s)
		return 0;
	for (; *s && (quoted || !isspace((unsigned char) *s)); s++)
	{
		char c = *s;
		if (c == '"')
		{
			quoted = !quoted;
			continue;
		}
		if (c == '\\' && quoted && (s[1] == '"' || s[1] == '\\'))
			c = *++s;
		if (n + 1 >= outsz)
			return -E2BIG;
		out[n++] = c;
	}
	if (quoted)
		return -EINVAL;
	out[n] = '\0';
	*sp = s;
	return 1;
}

static int
parse_url(struct upstream *up, char *err, size_t errlen)
{
	CURLU *u = curl_url();
	char  *scheme = NULL, *host = NULL, *port = NULL, *path = NULL, *query = NULL, *user = NULL;
	int	   r = -EINVAL;

	if (!u)
		return -ENOMEM;
	if (curl_url_set(u, CURLUPART_URL, up->url, 0) != CURLUE_OK)
	{
		snprintf(err, errlen, "upstream %s: url is not a valid URL", up->name);
		goto out;
	}
	curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
	curl_url_get(u, CURLUPART_HOST, &host, 0);
	curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT);
	curl_url_get(u, CURLUPART_PATH, &path, 0);
	curl_url_get(u, CURLUPART_QUERY, &query, 0);
	curl_url_get(u, CURLUPART_USER, &user, 0);
	if (!scheme || (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0))
	{
		snprintf(err, errlen, "upstream %s: url: only http and https upstreams are supported",
				 up->name);
		goto out;
	}
	if (!host || !*host || !port || user || query || strchr(up->url, '#'))
	{
		snprintf(err, errlen, "upstream %s: url needs a host and no user, query or fragment",
				 up->name);
		goto out;
	}
	up->scheme = strdup(strcasecmp(scheme, "https") == 0 ? "https" : "http");
	up->port = (unsigned) strtoul(port, NULL, 10);
	/* curl gives an IPv6 host in brackets; keep it bare, compare without case. */
	if (host[0] == '[')
	{
		size_t n = strlen(host);
		memmove(host, host + 1, n - 1);
		host[n - 2] = '\0';
	}
	for (char *p = host; *p; p++)
		*p = (char) tolower((unsigned char) *p);
	up->host = strdup(host);
	up->origin =
		xasprintf(strchr(host, ':') ? "%s://[%s]:%u" : "%s://%s:%u", up->scheme, host, up->port);
	if (path)
	{
		size_t n = strlen(path);
		while (n > 0 && path[n - 1] == '/')
			path[--n] = '\0';
	}
	up->base = strdup(path ? path : "");
	r = up->scheme && up->host && up->origin && up->base ? 0 : -ENOMEM;
out:
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_free(path);
	curl_free(query);
	curl_free(user);
	curl_url_cleanup(u);
	return r;
}

/* A systemd credential's name: a file name, not "." or "..". */
static bool
credential_name_valid(const char *s)
{
	size_t n = strlen(s);

	return n > 0 && n <= 255 && !strchr(s, '/') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

/*
 * "NAME url=URL [header=NAME] [format=F]
 * secret_file=PATH|secret_env=VAR|secret_credential=NAME [resolve=ADDR]
 * [ca_file=PATH]" → *up (cleared on error, err says why).
 */
int
upstream_parse(const char *spec, struct upstream *up, char *err, size_t errlen)
{
	char word[4096];
	int	 r;

	memset(up, 0, sizeof *up);
	r = next_word(&spec, word, sizeof word);
	if (r <= 0 || !upstream_name_valid(word, strlen(word)))
	{
		snprintf(err, errlen,
				 "an upstream starts with its name: lower-case letters, digits, \".\", \"_\" and "
				 "\"-\", at most 63 characters");
		return -EINVAL;
	}
	up->name = strdup(word);
	while ((r = next_word(&spec, word, sizeof word)) > 0)
	{
		char	   *eq = strchr(word, '='), **field = NULL;
		const char *k = word, *v;

		if (!eq)
		{
			snprintf(err, errlen,
					 "upstream %s: expected key=value words (the value is not repeated here: it "
					 "may be a secret)",
					 up->name);
			goto fail;
		}
		*eq = '\0';
		v = eq + 1;
		if (strcmp(k, "url") == 0)
			field = &up->url;
		else if (strcmp(k, "header") == 0)
			field = &up->header;
		else if (strcmp(k, "format") == 0)
			field = &up->format;
		else if (strcmp(k, "secret_file") == 0)
			field = &up->secret_file;
		else if (strcmp(k, "secret_env") == 0)
			field = &up->secret_env;
		else if (strcmp(k, "secret_credential") == 0)
			field = &up->secret_credential;
		else if (strcmp(k, "resolve") == 0)
			field = &up->resolve;
		else if (strcmp(k, "ca_file") == 0)
			field = &up->ca_file;
		if (!field)
		{
			snprintf(err, errlen,
					 "upstream %s: unknown key \"%s\" (url, header, format, secret_file, "
					 "secret_env, secret_credential, resolve, ca_file)",
					 up->name, k);
			goto fail;
		}
		if (*field)
		{
			snprintf(err, errlen, "upstream %s: %s given twice", up->name, k);
			goto fail;
		}
		*field = strdup(v);
	}
	if (r < 0)
	{
		snprintf(err, errlen, "upstream %s: unbalanced quotes or a value longer than %zu bytes",
				 up->name, sizeof word - 1);
		goto fail;
	}
	if (!up->url)
	{
		snprintf(err, errlen, "upstream %s: url=... is required", up->name);
		goto fail;
	}
	if (!up->header)
		up->header = strdup("Authorization");
	if (!up->format)
		up->format = strdup("Bearer %s");
	if (!header_name_valid(up->header) || strcasecmp(up->header, "Host") == 0 ||
		strcasecmp(up->header, "Content-Length") == 0 ||
		strcasecmp(up->header, "Transfer-Encoding") == 0 ||
		strcasecmp(up->header, "Connection") == 0 || strncasecmp(up->header, "Proxy-", 6) == 0)
	{
		snprintf(err, errlen, "upstream %s: header \"%s\" cannot carry a credential", up->name,
				 up->header);
		goto fail;
	}
	if (!format_valid(up->format))
	{
		snprintf(err, errlen,
				 "upstream %s: format needs exactly one %%s and no other %% or control character",
				 up->name);
		goto fail;
	}
	if (!!up->secret_file + !!up->secret_env + !!up->secret_credential != 1)
	{
		snprintf(err, errlen,
				 "upstream %s: give exactly one of secret_file=PATH, secret_env=VAR and "
				 "secret_credential=NAME",
				 up->name);
		goto fail;
	}
	if (up->secret_credential && !credential_name_valid(up->secret_credential))
	{
		snprintf(err, errlen,
				 "upstream %s: secret_credential is a credential's name (LoadCredential=NAME:...), "
				 "not a path",
				 up->name);
		goto fail;
	}
	if (up->resolve)
	{
		unsigned char buf[16];
		if (inet_pton(AF_INET, up->resolve, buf) != 1 && inet_pton(AF_INET6, up->resolve, buf) != 1)
		{
			snprintf(err, errlen, "upstream %s: resolve=%s is not an IP address", up->name,
					 up->resolve);
			goto fail;
		}
	}
	if (parse_url(up, err, errlen) < 0)
		goto fail;
	return 0;
fail:
	upstream_clear(up);
	return -EINVAL;
}

/* A "upstream" flag or line; a name may be defined only once. */
static int
add_upstream(const char *spec, bool from_flag)
{
	struct upstream up, *n;
	char			err[512];
	(void) from_flag;

	if (upstream_parse(spec, &up, err, sizeof err) < 0)
		return conf_invalid("%s", err);
	for (size_t i = 0; i < cfg.n_upstreams; i++)
		if (strcmp(cfg.upstreams[i].name, up.name) == 0)
		{
			log_error("upstream %s is defined twice", up.name);
			upstream_clear(&up);
			return -EINVAL;
		}
	n = realloc(cfg.upstreams, (cfg.n_upstreams + 1) * sizeof *n);
	if (!n)
	{
		upstream_clear(&up);
		return -ENOMEM;
	}
	cfg.upstreams = n;
	cfg.upstreams[cfg.n_upstreams++] = up;
	return 0;
}

const struct upstream *
upstream_by_name(const char *name)
{
	for (size_t i = 0; i < cfg.n_upstreams; i++)
		if (strcmp(cfg.upstreams[i].name, name) == 0)
			return &cfg.upstreams[i];
	return NULL;
}

/* ---- secrets ---------------------------------------------------------------- */

static int
read_secret_file(const char *path, char **ret)
{
	_cleanup_(closep) int fd = -1;
	char				  buf[CP_SECRET_MAX + 2];
	struct stat			  st;
	size_t				  len = 0;
	ssize_t				  n;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0 || fstat(fd, &st) < 0)
	{
		log_error("cannot read secret file %s: %m", path);
		return -errno;
	}
	if (!S_ISREG(st.st_mode))
		return conf_invalid("secret file %s is not a regular file", path);
	if (st.st_mode & S_IROTH)
	{
		log_error("secret file %s is readable by every user (mode %04o): refusing to use it; "
				  "run chmod o-rwx %s",
				  path, (unsigned) (st.st_mode & 07777), path);
		return -EPERM;
	}
	while ((n = read(fd, buf + len, sizeof buf - 1 - len)) > 0)
		len += (size_t) n;
	if (n < 0)
	{
		log_error("cannot read secret file %s: %m", path);
		return -errno;
	}
	if (len > CP_SECRET_MAX)
	{
		log_error("secret file %s holds more than %d bytes", path, CP_SECRET_MAX);
		OPENSSL_cleanse(buf, sizeof buf);
		return -EFBIG;
	}
	buf[len] = '\0';
	*ret = strdup(buf);
	OPENSSL_cleanse(buf, sizeof buf);
	return *ret ? 0 : -ENOMEM;
}

/* The secret of one upstream, trimmed and checked, or a negative errno. */
static int
load_secret(const struct upstream *up, char **ret)
{
	char  *s = NULL;
	size_t len;
	int	   r;

	if (up->secret_file)
	{
		r = read_secret_file(up->secret_file, &s);
		if (r < 0)
			return r;
	}
	else if (up->secret_credential)
	{
		/* systemd's LoadCredential=: a private copy, re-read as it stands. */
		const char			  *dir = getenv("CREDENTIALS_DIRECTORY");
		_cleanup_(freep) char *path = NULL;

		if (!dir || dir[0] != '/')
		{
			log_error("upstream %s: secret_credential=%s needs $CREDENTIALS_DIRECTORY (set by "
					  "systemd for LoadCredential=%s:FILE in the unit)",
					  up->name, up->secret_credential, up->secret_credential);
			return -ENOENT;
		}
		path = xasprintf("%s/%s", dir, up->secret_credential);
		if (!path)
			return -ENOMEM;
		r = read_secret_file(path, &s);
		if (r < 0)
			return r;
	}
	else
	{
		const char *e = getenv(up->secret_env);
		if (!e)
		{
			log_error("upstream %s: environment variable %s is not set", up->name, up->secret_env);
			return -ENOENT;
		}
		if (strlen(e) > CP_SECRET_MAX)
		{
			log_error("upstream %s: %s holds more than %d bytes", up->name, up->secret_env,
					  CP_SECRET_MAX);
			return -EFBIG;
		}
		s = strdup(e);
		if (!s)
			return -ENOMEM;
	}
	len = strlen(s);
	while (len > 0 && isspace((unsigned char) s[len - 1]))
		s[--len] = '\0';
	r = len == 0 ? -ENODATA : 0;
	for (size_t i = 0; i < len && r == 0; i++)
		if ((unsigned char) s[i] < 0x20 || s[i] == 0x7f)
			r = -EINVAL;
	if (r < 0)
	{
		log_error("upstream %s: the secret is %s", up->name,
				  r == -ENODATA ? "empty" : "not one line of printable characters");
		OPENSSL_cleanse(s, strlen(s));
		free(s);
		return r;
	}
	*ret = s;
	return 0;
}

int
config_reload_secrets(void)
{
	int r = 0;

	for (size_t i = 0; i < cfg.n_upstreams; i++)
	{
		struct upstream *up = &cfg.upstreams[i];
		char			*s = NULL, *old;
		int				 q = load_secret(up, &s);

		if (q < 0)
		{
			if (up->secret)
				log_warning("upstream %s keeps its previous secret", up->name);
			r = r < 0 ? r : q;
			continue;
		}
		pthread_rwlock_wrlock(&cp_secret_lock);
		old = up->secret;
		up->secret = s;
		pthread_rwlock_unlock(&cp_secret_lock);
		if (old)
		{
			OPENSSL_cleanse(old, strlen(old));
			free(old);
		}
	}
	return r;
}

/* ---- flags and file --------------------------------------------------------- */

#define S(f) offsetof(struct cp_config, f)
static const struct conf_key keys[] = {
	{"upstream", CONF_FUNC, 0,
	 "\"NAME url=URL [header=H] [format=F] secret_file=P|secret_env=V|secret_credential=C\" "
	 "(repeatable)",
	 CONF_LIST | CONF_SECRET | CONF_BARE, add_upstream},
	{"pg_conninfo", CONF_STR, S(pg_conninfo),
	 "libpq conninfo of a role in nadi_sandbox_host (required)", 0, NULL},
	{"sandbox_dir", CONF_STR, S(sandbox_dir),
	 "directory nadi-sandboxd makes a subdirectory in per sandbox", 0, NULL},
	{"listen_tcp", CONF_STR, S(listen_tcp),
	 "PORT or IPV4:PORT of the main listener (cells; port 0: any free one)", 0, NULL},
	{"ready_file", CONF_STR, S(ready_file),
	 "file that gets the main TCP port once the daemon serves", 0, NULL},
	{"listen_unix", CONF_STR, S(listen_unix), "unix socket path of the main listener (cells)", 0,
	 NULL},
	{"proxy_id", CONF_STR, S(proxy_id), "this proxy's name in audit rows (default: hostname)", 0,
	 NULL},
	{"pg_pool", CONF_COUNT, S(pg_pool), "database connections", 0, NULL},
	{"pg_timeout", CONF_MS, S(pg_timeout_ms),
	 "limit of one authorization (wait for a connection + query)", 0, NULL},
	{"max_request_bytes", CONF_SIZE, S(max_request_bytes), "largest request body", 0, NULL},
	{"max_response_bytes", CONF_SIZE, S(max_response_bytes), "largest response body passed on", 0,
	 NULL},
	{"upstream_timeout", CONF_MS, S(upstream_timeout_ms), "total time of one upstream exchange", 0,
	 NULL},
	{"connect_timeout", CONF_MS, S(connect_timeout_ms), "time to connect to an upstream", 0, NULL},
	{"low_speed_time", CONF_MS, S(low_speed_time_ms),
	 "abort an upstream slower than 1 byte/s for this long", 0, NULL},
	{"max_connections", CONF_COUNT, S(max_connections), "client connections at once", 0, NULL},
	{"max_sandbox_connections", CONF_COUNT, S(max_sandbox_connections),
	 "client connections per sandbox", 0, NULL},
	{"max_sandboxes", CONF_COUNT, S(max_sandboxes), "sandbox sockets listened on at once", 0, NULL},
	{"idle_timeout", CONF_MS, S(idle_timeout_ms), "close a client connection idle this long", 0,
	 NULL},
	{"drain_timeout", CONF_MS, S(drain_timeout_ms),
	 "on SIGTERM, wait this long for running exchanges", 0, NULL},
	CONF_KEY_LOG_LEVEL,
};
#undef S

/* Values in the file are never echoed: a line may be an upstream's. */
static const struct conf_spec spec = {
	.program = "nadi-credproxy",
	.about = "Forwards sandboxes' and cells' HTTP requests to configured upstream APIs,\n"
			 "injecting the upstream's credential after nadi.proxy_authorize() allowed them.\n",
	CONF_SPEC_TABLE(cfg, keys),
	.file_hides_values = true,
};

/*
 * Upstreams add up (flags, NADI_CREDPROXY_UPSTREAM, file lines): both
 * "upstream NAME url=..." and "upstream = NAME url=..." lines work.
 */
int
config_parse_args(int argc, char **argv)
{
	return conf_parse_args(&spec, argc, argv);
}

static bool
proxy_id_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 128)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char) *s) && !strchr("._:-", *s))
			return false;
	return true;
}

/* Fill derived defaults, check the whole configuration, read the secrets. */
int
config_finish(void)
{
	int r;

	if (!cfg.pg_conninfo)
		return conf_invalid(
			"pg_conninfo is required (--pg-conninfo=\"host=... dbname=nadi user=...\")");
	if (cfg.n_upstreams == 0)
		return conf_invalid(
			"no upstream configured: add --upstream=\"NAME url=... secret_file=...\" or an "
			"\"upstream NAME ...\" line to the config file");
	if (!cfg.sandbox_dir)
		cfg.sandbox_dir = strdup("/run/nadi-sandboxd/proxy");
	if (!cfg.proxy_id)
		cfg.proxy_id = conf_hostname("credproxy");
	if (!cfg.sandbox_dir || !cfg.proxy_id)
		return -ENOMEM;
	if (cfg.sandbox_dir[0] != '/')
		return conf_invalid("sandbox_dir must be an absolute path");
	if (!proxy_id_valid(cfg.proxy_id))
		return conf_invalid(
			"proxy_id \"%s\" must be 1 to 128 letters, digits, \".\", \"_\", \":\" and \"-\"",
			cfg.proxy_id);
	if (cfg.pg_pool < 1 || cfg.pg_pool > 64)
		return conf_invalid("pg_pool must be between 1 and 64");
	if (cfg.max_connections < 1 || cfg.max_connections > 65536 || cfg.max_sandbox_connections < 1 ||
		cfg.max_sandboxes < 1)
		return conf_invalid(
			"max_connections (1 to 65536), max_sandbox_connections and max_sandboxes must be "
			"positive");
	if (cfg.upstream_timeout_ms < 100 || cfg.connect_timeout_ms < 100 || cfg.pg_timeout_ms < 100 ||
		cfg.idle_timeout_ms < 1000)
		return conf_invalid(
			"upstream_timeout, connect_timeout and pg_timeout must be at least 100ms, "
			"idle_timeout at least 1s");
	if (cfg.max_request_bytes > (1ULL << 30))
		return conf_invalid("max_request_bytes is at most 1G (request bodies are held in memory)");
	for (size_t i = 0; i < cfg.n_upstreams; i++)
	{
		const struct upstream *up = &cfg.upstreams[i];
		if (up->ca_file && access(up->ca_file, R_OK) < 0)
		{
			log_error("upstream %s: cannot read ca_file %s: %m", up->name, up->ca_file);
			return -errno;
		}
	}
	r = config_reload_secrets();
	if (r < 0)
		log_error("cannot start without every upstream's secret");
	return r;
}
