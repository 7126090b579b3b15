/*
 * conf.h — configuration from command-line flags and an optional file of
 * "key = value" lines (--config FILE or -c FILE), driven by a table of
 * keys.  Every key can be given either way ("--memory-max=64M" or
 * "memory_max = 64M"); flags win over the file: string keys a flag set are
 * skipped in the file, and the other flags are applied again after it.
 * A CONF_LIST key adds up instead (flags, then file lines).
 */
#ifndef NADI_COMMON_CONF_H
#define NADI_COMMON_CONF_H

#include "util.h"

enum conf_kind {
	CONF_STR,       /* char *, strdup'ed */
	CONF_SIZE,      /* uint64_t bytes, parse_size */
	CONF_MS,        /* uint64_t milliseconds, parse_duration_ms */
	CONF_COUNT,     /* uint64_t, parse_count */
	CONF_BOOL,      /* bool, parse_bool */
	CONF_LOGLEVEL,  /* log_max_level */
	CONF_FUNC,      /* key->set(value, from_flag) */
};

enum {
	CONF_LIST = 1 << 0,    /* repeatable: each flag applied once, before the file */
	CONF_SECRET = 1 << 1,  /* never echo a flag's value in a message */
	CONF_BARE = 1 << 2,    /* "KEY VALUE" lines in the file as well as "KEY = VALUE" */
};

struct conf_key {
	const char *name;     /* snake_case; the flag is --kebab-case */
	enum conf_kind kind;
	size_t off;           /* into conf_spec.base */
	const char *help;
	unsigned flags;
	int (*set)(const char *value, bool from_flag);   /* CONF_FUNC */
};

struct conf_spec {
	const char *program;    /* --version and --help */
	const char *about;      /* --help, between the usage line and the keys */
	int help_width;         /* of the flag column */
	void *base;             /* the configuration structure */
	char **config_file;     /* where --config goes */
	const struct conf_key *keys;
	size_t n_keys;
	bool file_hides_values; /* file lines' values are never echoed either */
};

/* The key every daemon has. */
#define CONF_KEY_LOG_LEVEL {"log_level", CONF_LOGLEVEL, 0, "error, warning, notice, info or debug", 0, NULL}
/* The fields of a conf_spec for a configuration structure with a config_file member. */
#define CONF_SPEC_TABLE(config, table) \
	.base = &(config), .config_file = &(config).config_file, .keys = (table), .n_keys = ARRAY_SIZE(table)

/*
 * Flags first (so that --config may appear anywhere), then the file, then
 * the flags again.  --help and --version print and exit(0).  Logs what is
 * wrong and returns -EINVAL.
 */
int conf_parse_args(const struct conf_spec *spec, int argc, char **argv);

/*
 * A bearer token from a file: warns when others may read it, at most 4096
 * bytes, trailing white space removed, at least 16 bytes.  Logs errors.
 */
int token_file_load(const char *path, char **ret, size_t *ret_len);

#endif
