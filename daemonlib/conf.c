/*
 * conf.c — see conf.h.  The parser only knows the table it is given; each
 * daemon's config.c (edge: main.c) holds its keys, defaults, repeatable
 * keys and the checks of the whole configuration.  Precedence falls out of
 * the order: the file, then the environment, then the flags, each
 * overwriting what came before.
 */
#include <ctype.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf.h"
#include "nadi_version.h"
#include "log.h"

static const struct conf_key *
find_key(const struct conf_spec *spec, const char *name, size_t len)
{
	char norm[64];

	if (len >= sizeof norm)
		return NULL;
	for (size_t i = 0; i < len; i++)
		norm[i] = name[i] == '-' ? '_' : name[i];
	norm[len] = '\0';
	for (size_t i = 0; i < spec->n_keys; i++)
		if (strcmp(spec->keys[i].name, norm) == 0)
			return &spec->keys[i];
	return NULL;
}

static int
set_int(const struct conf_key *k, const char *v, int *field)
{
	char	 *end;
	long long n;

	errno = 0;
	n = strtoll(v, &end, 10);
	if (errno || end == v || *end || n < k->min || n > k->max)
		return -ERANGE;
	*field = (int) n;
	return 0;
}

/* A uint64_t key inside [min, max] when the key has a range. */
static int
in_range(const struct conf_key *k, int r, const uint64_t *field)
{
	if (r < 0 || k->max <= 0)
		return r;
	return *field < (uint64_t) k->min || *field > (uint64_t) k->max ? -ERANGE : 0;
}

static int
set_key(const struct conf_spec *spec, const struct conf_key *k, const char *v, bool from_flag)
{
	char *field = (char *) spec->base + k->off;

	switch (k->kind)
	{
		case CONF_STR:
		{
			char **p = (char **) field;
			free(*p);
			*p = strdup(v);
			return *p ? 0 : -ENOMEM;
		}
		case CONF_SIZE:
			return in_range(k, parse_size(v, (uint64_t *) field), (uint64_t *) field);
		case CONF_MS:
			return in_range(k, parse_duration_ms(v, (uint64_t *) field), (uint64_t *) field);
		case CONF_COUNT:
			return in_range(k, parse_count(v, (uint64_t *) field), (uint64_t *) field);
		case CONF_INT:
			return set_int(k, v, (int *) field);
		case CONF_BOOL:
			return parse_bool(v, (bool *) field);
		case CONF_LOGLEVEL:
			return log_level_parse(v);
		case CONF_FUNC:
			return k->set(v, from_flag);
	}
	return -EINVAL;
}

/* " (from MIN to MAX)" for a key with a range, else "". */
static const char *
range_text(const struct conf_key *k, char *buf, size_t size)
{
	if (k->kind != CONF_INT && k->max <= 0)
		return "";
	snprintf(buf, size, " (from %lld to %lld)", (long long) k->min, (long long) k->max);
	return buf;
}

static char *
trim(char *s)
{
	char *e;

	while (isspace((unsigned char) *s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char) e[-1]))
		*--e = '\0';
	return s;
}

/* A "KEY VALUE" line of a CONF_BARE key: the key, *value set; else NULL. */
static const struct conf_key *
bare_line(const struct conf_spec *spec, char *s, char **value)
{
	for (size_t i = 0; i < spec->n_keys; i++)
	{
		const struct conf_key *k = &spec->keys[i];
		size_t				   n = strlen(k->name);

		if (!(k->flags & CONF_BARE) || strncmp(s, k->name, n) != 0 ||
			!isspace((unsigned char) s[n]))
			continue;
		*value = trim(s + n);
		if (**value != '=')
			return k;
	}
	return NULL;
}

static int
load_file(const struct conf_spec *spec, const char *path)
{
	FILE	*f = fopen(path, "re");
	char	 line[8192];
	unsigned lineno = 0;
	int		 r = 0;

	if (!f)
	{
		log_error("cannot open config file %s: %m", path);
		return -errno;
	}
	while (fgets(line, sizeof line, f))
	{
		char				  *s = trim(line), *eq, *k, *v;
		const struct conf_key *key;

		lineno++;
		if (!*s || *s == '#' || *s == ';')
			continue;
		if ((key = bare_line(spec, s, &v)))
		{
			if (set_key(spec, key, v, false) < 0)
			{
				log_error("%s:%u: invalid %s", path, lineno, key->name);
				r = -EINVAL;
				break;
			}
			continue;
		}
		eq = strchr(s, '=');
		if (!eq)
		{
			log_error("%s:%u: expected key = value", path, lineno);
			r = -EINVAL;
			break;
		}
		*eq = '\0';
		k = trim(s);
		v = trim(eq + 1);
		key = find_key(spec, k, strlen(k));
		if (!key)
		{
			log_error("%s:%u: unknown key \"%s\"", path, lineno, k);
			r = -EINVAL;
			break;
		}
		if (set_key(spec, key, v, false) < 0)
		{
			char range[64];

			if (spec->file_hides_values || (key->flags & CONF_SECRET))
				log_error("%s:%u: invalid value for %s%s", path, lineno, k,
						  range_text(key, range, sizeof range));
			else
				log_error("%s:%u: invalid value for %s: \"%s\"%s", path, lineno, k, v,
						  range_text(key, range, sizeof range));
			r = -EINVAL;
			break;
		}
	}
	fclose(f);
	return r;
}

static void
flag_name(const char *key, char *flag, size_t size)
{
	size_t j;

	for (j = 0; key[j] && j + 1 < size; j++)
		flag[j] = key[j] == '_' ? '-' : key[j];
	flag[j] = '\0';
}

void
conf_env_name(const struct conf_spec *spec, const char *key, char *buf, size_t size)
{
	const char *daemon = spec->program;
	size_t		j;

	if (strncmp(daemon, "nadi-", 5) == 0)
		daemon += 5;
	snprintf(buf, size, "NADI_%s_%s", daemon, key);
	for (j = 0; buf[j]; j++)
		buf[j] = buf[j] == '-' ? '_' : (char) toupper((unsigned char) buf[j]);
}

static void
usage(const struct conf_spec *spec)
{
	int	 fw = 0, ew = 0;
	char flag[64], env[96];

	for (size_t i = 0; i < spec->n_keys; i++)
	{
		flag_name(spec->keys[i].name, flag, sizeof flag);
		conf_env_name(spec, spec->keys[i].name, env, sizeof env);
		fw = MAX(fw, (int) strlen(flag) + 2);
		ew = MAX(ew, (int) strlen(env));
	}
	conf_env_name(spec, "config", env, sizeof env);
	printf("usage: %s [--config FILE] [--KEY=VALUE ...]\n\n%s"
		   "Each KEY is a flag, an environment variable and a line \"key = value\" of\n"
		   "the config file (--config FILE, or %s): a flag wins over the\n"
		   "environment, the environment over the file, the file over the default.\n\n",
		   spec->program, spec->about, env);
	for (size_t i = 0; i < spec->n_keys; i++)
	{
		const struct conf_key *k = &spec->keys[i];
		char				   range[64];

		flag[0] = flag[1] = '-';
		flag_name(k->name, flag + 2, sizeof flag - 2);
		conf_env_name(spec, k->name, env, sizeof env);
		printf("  %-*s  %-*s  %s%s\n", fw, flag, ew, env, k->help,
			   range_text(k, range, sizeof range));
	}
}

/* The message of a value set() refused; where is "--flag" or "VARIABLE". */
static void
invalid(const struct conf_key *k, const char *where, const char *v)
{
	char range[64];

	if (k->flags & CONF_SECRET)
		log_error("invalid %s", where);
	else
		log_error("invalid value for %s: \"%s\"%s", where, v, range_text(k, range, sizeof range));
}

static bool
is_switch(const struct conf_key *k)
{
	return k->kind == CONF_BOOL || (k->flags & CONF_SWITCH);
}

/*
 * One walk over the flags: the CONF_LIST keys and --config when lists,
 * the other keys when not.  The walk with lists comes first and checks
 * every flag (unknown ones, missing values), --help and --version.  A
 * switch alone means "true"; it takes the next argument only when that is
 * a boolean word ("--private-users no").
 */
static int
scan_flags(const struct conf_spec *spec, int argc, char **argv, bool lists)
{
	for (int i = 1; i < argc; i++)
	{
		const char			  *a = argv[i], *v;
		const struct conf_key *k = NULL;
		char				   where[80];
		size_t				   nlen;
		bool				   config, b;

		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)
		{
			usage(spec);
			exit(0);
		}
		if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0)
		{
			printf("%s %s (extension nadi %s)\n", spec->program, NADI_VERSION, NADI_EXT_VERSION);
			exit(0);
		}
		if (strncmp(a, "--", 2) != 0 && strcmp(a, "-c") != 0 && strncmp(a, "-c=", 3) != 0)
		{
			log_error("unexpected argument \"%s\"", a);
			return -EINVAL;
		}
		a += (a[1] == '-') ? 2 : 1;
		v = strchr(a, '=');
		nlen = v ? (size_t) (v - a) : strlen(a);
		if (v)
			v++;
		config = (nlen == 1 && a[0] == 'c') || (nlen == 6 && strncmp(a, "config", 6) == 0);
		if (!config && !(k = find_key(spec, a, nlen)))
		{
			log_error("unknown flag --%.*s (see --help)", (int) nlen, a);
			return -EINVAL;
		}
		if (!v && k && is_switch(k))
			v = (i + 1 < argc && parse_bool(argv[i + 1], &b) == 0) ? argv[++i] : "true";
		else if (!v && i + 1 < argc)
			v = argv[++i];
		else if (!v)
		{
			log_error("flag --%.*s needs a value", (int) nlen, a);
			return -EINVAL;
		}
		if (config)
		{
			if (lists)
			{
				free(*spec->config_file);
				*spec->config_file = strdup(v);
				if (!*spec->config_file)
					return -ENOMEM;
			}
			continue;
		}
		if (!(k->flags & CONF_LIST) != !lists)
			continue;
		if (set_key(spec, k, v, true) < 0)
		{
			where[0] = where[1] = '-';
			flag_name(k->name, where + 2, sizeof where - 2);
			invalid(k, where, v);
			return -EINVAL;
		}
	}
	return 0;
}

/* The variables of the CONF_LIST keys when lists, else of the others; empty ones are unset. */
static int
apply_env(const struct conf_spec *spec, bool lists)
{
	for (size_t i = 0; i < spec->n_keys; i++)
	{
		const struct conf_key *k = &spec->keys[i];
		char				   env[96];
		const char			  *v;

		if (!(k->flags & CONF_LIST) != !lists)
			continue;
		conf_env_name(spec, k->name, env, sizeof env);
		v = getenv(env);
		if (!v || !*v)
			continue;
		if (set_key(spec, k, v, false) < 0)
		{
			invalid(k, env, v);
			return -EINVAL;
		}
	}
	return 0;
}

int
conf_parse_args(const struct conf_spec *spec, int argc, char **argv)
{
	int r;

	/* Lists first in precedence order (their callbacks see repeats); then scalars, lowest first. */
	r = scan_flags(spec, argc, argv, true);
	if (r < 0)
		return r;
	if (!*spec->config_file)
	{
		char		env[96];
		const char *v;

		conf_env_name(spec, "config", env, sizeof env);
		v = getenv(env);
		if (v && *v && !(*spec->config_file = strdup(v)))
			return -ENOMEM;
	}
	r = apply_env(spec, true);
	if (r >= 0 && *spec->config_file)
		r = load_file(spec, *spec->config_file);
	if (r >= 0)
		r = apply_env(spec, false);
	if (r >= 0)
		r = scan_flags(spec, argc, argv, false);
	return r;
}

char *
conf_hostname(const char *fallback)
{
	char host[256];

	if (gethostname(host, sizeof host) < 0)
		snprintf(host, sizeof host, "%s", fallback);
	host[sizeof host - 1] = '\0';
	return strdup(host);
}

int
token_file_load(const char *path, char **ret, size_t *ret_len)
{
	char	   *buf = NULL;
	size_t		len;
	struct stat st;
	int			r;

	if (stat(path, &st) == 0 && (st.st_mode & 0077))
		log_warning("token file %s is readable by group or others", path);
	r = read_full_file(AT_FDCWD, path, &buf, &len, 4096);
	if (r < 0)
	{
		errno = -r;
		log_error("cannot read token file %s: %m", path);
		return r;
	}
	while (len > 0 && isspace((unsigned char) buf[len - 1]))
		buf[--len] = '\0';
	if (len < 16)
	{
		log_error("token in %s is shorter than 16 bytes", path);
		free(buf);
		return -EINVAL;
	}
	*ret = buf;
	*ret_len = len;
	return 0;
}
