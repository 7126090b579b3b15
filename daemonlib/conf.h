/*
 * conf.h — the configuration of every Nadi daemon, from one table of keys:
 * command-line flags ("--memory-max=64M", "--memory-max 64M"), environment
 * variables (NADI_<DAEMON>_<KEY>, e.g. NADI_SANDBOXD_MEMORY_MAX) and an
 * optional file of "key = value" lines (--config FILE, -c FILE or
 * NADI_<DAEMON>_CONFIG).  One precedence rule for all daemons:
 *
 *     flag > environment > file > default
 *
 * A CONF_LIST key adds up instead: flags, then the environment, then file
 * lines, each handed to the key's callback (which decides about repeats).
 * --help is generated from the table: flag, environment variable and help
 * of each key.
 */
#ifndef NADI_DAEMONLIB_CONF_H
#define NADI_DAEMONLIB_CONF_H

#include <errno.h>

#include "log.h"
#include "util.h"

enum conf_kind
{
	CONF_STR,	   /* char *, strdup'ed */
	CONF_SIZE,	   /* uint64_t bytes, parse_size */
	CONF_MS,	   /* uint64_t milliseconds, parse_duration_ms */
	CONF_COUNT,	   /* uint64_t, parse_count */
	CONF_INT,	   /* int, a decimal number from min to max */
	CONF_BOOL,	   /* bool, parse_bool; "--key" alone means true */
	CONF_LOGLEVEL, /* log_max_level */
	CONF_FUNC,	   /* key->set(value, from_flag) */
};

enum
{
	CONF_LIST = 1 << 0,	  /* repeatable: each value handed to set(), flags first */
	CONF_SECRET = 1 << 1, /* never echo a flag's or variable's value in a message */
	CONF_BARE = 1 << 2,	  /* "KEY VALUE" lines in the file as well as "KEY = VALUE" */
	CONF_SWITCH = 1 << 3, /* a CONF_FUNC key whose flag may stand alone ("true") */
};

struct conf_key
{
	const char
		*name; /* snake_case; the flag is --kebab-case, the variable NADI_<DAEMON>_UPPER_CASE */
	enum conf_kind kind;
	size_t		   off; /* into conf_spec.base */
	const char	  *help;
	unsigned	   flags;
	int (*set)(const char *value, bool from_flag); /* CONF_FUNC */
	int64_t min, max; /* CONF_INT always; CONF_SIZE, CONF_MS, CONF_COUNT when max > 0 */
};

struct conf_spec
{
	const char			  *program; /* "nadi-NAME": --version, --help, and the NADI_NAME_ prefix */
	const char			  *about;	/* --help, between the usage line and the keys */
	void				  *base;	/* the configuration structure */
	char				 **config_file; /* where --config goes */
	const struct conf_key *keys;
	size_t				   n_keys;
	bool				   file_hides_values; /* file lines' values are never echoed either */
};

/* The key every daemon has. */
#define CONF_KEY_LOG_LEVEL \
	{ \
		"log_level", CONF_LOGLEVEL, 0, "error, warning, notice, info or debug", 0, NULL, 0, 0 \
	}
/* The fields of a conf_spec for a configuration structure with a config_file member. */
#define CONF_SPEC_TABLE(config, table) \
	.base = &(config), .config_file = &(config).config_file, .keys = (table), \
	.n_keys = ARRAY_SIZE(table)
/* A whole conf_spec: CONF_SPEC("nadi-gitd", "Keeps ...\n", cfg, keys). */
#define CONF_SPEC(prog, text, config, table) \
	{ \
		.program = (prog), .about = (text), CONF_SPEC_TABLE(config, table) \
	}

/*
 * The whole configuration by the rule above.  --help and --version (-h,
 * -V) print and exit(0).  Logs what is wrong and returns -EINVAL.
 */
int conf_parse_args(const struct conf_spec *spec, int argc, char **argv);

/* The environment variable of a key: "NADI_EDGE_MAX_STREAMS" for nadi-edge's max_streams. */
void conf_env_name(const struct conf_spec *spec, const char *key, char *buf, size_t size);

/*
 * A configuration check that failed: logs the message as an error and is
 * -EINVAL, for "if (...) return conf_invalid("x must be positive");".
 */
#define conf_invalid(...) (log_error(__VA_ARGS__), -EINVAL)

/*
 * The default of a host or proxy id: this machine's host name, or fallback
 * when it has none; malloc'ed (NULL when out of memory).
 */
extern char *conf_hostname(const char *fallback);

/*
 * A bearer token from a file: warns when others may read it, at most 4096
 * bytes, trailing white space removed, at least 16 bytes.  Logs errors.
 */
int token_file_load(const char *path, char **ret, size_t *ret_len);

#endif
