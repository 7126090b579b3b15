/*
 * conf.c — see conf.h.  The parser only knows the table it is given; each
 * daemon's config.c holds its keys, defaults, repeatable keys and the
 * checks of the whole configuration.
 */
#include <ctype.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

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
set_key(const struct conf_spec *spec, const struct conf_key *k, const char *v, bool from_flag)
{
	char *field = (char *)spec->base + k->off;

	switch (k->kind) {
	case CONF_STR: {
		char **p = (char **)field;
		free(*p);
		*p = strdup(v);
		return *p ? 0 : -ENOMEM;
	}
	case CONF_SIZE:
		return parse_size(v, (uint64_t *)field);
	case CONF_MS:
		return parse_duration_ms(v, (uint64_t *)field);
	case CONF_COUNT:
		return parse_count(v, (uint64_t *)field);
	case CONF_BOOL:
		return parse_bool(v, (bool *)field);
	case CONF_LOGLEVEL:
		return log_level_parse(v);
	case CONF_FUNC:
		return k->set(v, from_flag);
	}
	return -EINVAL;
}

static bool
str_is_set(const struct conf_spec *spec, const struct conf_key *k)
{
	return k->kind == CONF_STR && *(char **)((char *)spec->base + k->off);
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

/* A "KEY VALUE" line of a CONF_BARE key: the key, *value set; else NULL. */
static const struct conf_key *
bare_line(const struct conf_spec *spec, char *s, char **value)
{
	for (size_t i = 0; i < spec->n_keys; i++) {
		const struct conf_key *k = &spec->keys[i];
		size_t n = strlen(k->name);

		if (!(k->flags & CONF_BARE) || strncmp(s, k->name, n) != 0 || !isspace((unsigned char)s[n]))
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
		const struct conf_key *key;

		lineno++;
		if (!*s || *s == '#' || *s == ';')
			continue;
		if ((key = bare_line(spec, s, &v))) {
			if (set_key(spec, key, v, false) < 0) {
				log_error("%s:%u: invalid %s", path, lineno, key->name);
				r = -EINVAL;
				break;
			}
			continue;
		}
		eq = strchr(s, '=');
		if (!eq) {
			log_error("%s:%u: expected key = value", path, lineno);
			r = -EINVAL;
			break;
		}
		*eq = '\0';
		k = trim(s);
		v = trim(eq + 1);
		key = find_key(spec, k, strlen(k));
		if (!key) {
			log_error("%s:%u: unknown key \"%s\"", path, lineno, k);
			r = -EINVAL;
			break;
		}
		if (str_is_set(spec, key))
			continue; /* set by a flag */
		if (set_key(spec, key, v, false) < 0) {
			if (spec->file_hides_values || (key->flags & CONF_SECRET))
				log_error("%s:%u: invalid value for %s", path, lineno, k);
			else
				log_error("%s:%u: invalid value for %s: \"%s\"", path, lineno, k, v);
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

static void
usage(const struct conf_spec *spec)
{
	printf("usage: %s [--config FILE] [--KEY=VALUE ...]\n\n%s"
	       "Every KEY can also be set in the config file as \"KEY = VALUE\".\n\n",
	       spec->program, spec->about);
	for (size_t i = 0; i < spec->n_keys; i++) {
		char flag[64];
		flag_name(spec->keys[i].name, flag, sizeof flag);
		printf("  --%-*s %s\n", spec->help_width, flag, spec->keys[i].help);
	}
}

int
conf_parse_args(const struct conf_spec *spec, int argc, char **argv)
{
	int r;

	for (int pass = 0; pass < 2; pass++) {
		for (int i = 1; i < argc; i++) {
			const char *a = argv[i], *v;
			const struct conf_key *k;
			size_t nlen;

			if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
				usage(spec);
				exit(0);
			}
			if (strcmp(a, "--version") == 0) {
				printf("%s %s (extension nadi %s)\n", spec->program, NADI_VERSION, NADI_EXT_VERSION);
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
					free(*spec->config_file);
					*spec->config_file = strdup(v);
				}
				continue;
			}
			k = find_key(spec, a, nlen);
			if (!k) {
				log_error("unknown flag --%.*s (see --help)", (int)nlen, a);
				return -EINVAL;
			}
			if (pass == 1 && (k->flags & CONF_LIST))
				continue;
			if (set_key(spec, k, v, true) < 0) {
				if (k->flags & CONF_SECRET) {
					char flag[64];
					flag_name(k->name, flag, sizeof flag);
					log_error("invalid --%s", flag);
				} else
					log_error("invalid value for --%.*s: \"%s\"", (int)nlen, a, v);
				return -EINVAL;
			}
		}
		if (pass == 1 || !*spec->config_file)
			break;
		r = load_file(spec, *spec->config_file);
		if (r < 0)
			return r;
	}
	return 0;
}

int
token_file_load(const char *path, char **ret, size_t *ret_len)
{
	char *buf = NULL;
	size_t len;
	struct stat st;
	int r;

	if (stat(path, &st) == 0 && (st.st_mode & 0077))
		log_warning("token file %s is readable by group or others", path);
	r = read_full_file(AT_FDCWD, path, &buf, &len, 4096);
	if (r < 0) {
		errno = -r;
		log_error("cannot read token file %s: %m", path);
		return r;
	}
	while (len > 0 && isspace((unsigned char)buf[len - 1]))
		buf[--len] = '\0';
	if (len < 16) {
		log_error("token in %s is shorter than 16 bytes", path);
		free(buf);
		return -EINVAL;
	}
	*ret = buf;
	*ret_len = len;
	return 0;
}
