/*
 * credproxy.h — shared declarations of nadi-credproxy, the credentials proxy
 * of a sandbox host: configuration and upstreams, logging, small helpers.
 * Each concern has its own .c file and header (listen, pg, target, fwd,
 * proxy); this header holds what all of them use.
 */
#ifndef CREDPROXY_H
#define CREDPROXY_H

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>

/* Logging, parsing and file helpers shared with nadi-sandboxd and nadi-gitd. */
#include "daemonlib/log.h"
#include "daemonlib/util.h"

#include "nadi_version.h"
#define CP_TOKEN_MAX 8192 /* bytes of a presented token */
#define CP_SANDBOX_ID_MAX 64
#define CP_SECRET_MAX 8192 /* bytes of an upstream secret */

/* ---- configuration (config.c) ------------------------------------------ */

/*
 * An upstream API.  Everything but the secret is fixed at start-up; the
 * secret is re-read on SIGHUP and read by connection threads under
 * cp_secret_lock.
 */
struct upstream
{
	char	*name;
	char	*url;	 /* as configured */
	char	*scheme; /* "http" or "https" */
	char	*host;	 /* lower case; an IPv6 address without brackets */
	unsigned port;	 /* explicit or the scheme's default */
	char	*origin; /* scheme://host[:port], for building URLs */
	char	*base;	 /* path prefix without a trailing "/"; "" for none */
	char	*header; /* the credential header, e.g. Authorization */
	char	*format; /* its value, one "%s" standing for the secret */
	char	*secret_file;
	char	*secret_env;
	char	*secret_credential; /* a name in $CREDENTIALS_DIRECTORY (LoadCredential=) */
	char	*resolve;			/* connect to this address instead of resolving host */
	char	*ca_file;			/* CA bundle for this upstream's TLS */
	char	*secret;			/* under cp_secret_lock */
};

struct cp_config
{
	char			*config_file;
	char			*sandbox_dir;
	char			*listen_tcp; /* "PORT" or "IPV4:PORT" (port 0: the kernel picks) */
	char			*ready_file; /* gets the bound TCP port once serving */
	char			*listen_unix;
	char			*pg_conninfo;
	char			*proxy_id;
	uint64_t		 pg_pool;
	uint64_t		 pg_timeout_ms;
	uint64_t		 max_request_bytes;
	uint64_t		 max_response_bytes;
	uint64_t		 upstream_timeout_ms;
	uint64_t		 connect_timeout_ms;
	uint64_t		 low_speed_time_ms;
	uint64_t		 max_connections;
	uint64_t		 max_sandbox_connections;
	uint64_t		 max_sandboxes;
	uint64_t		 idle_timeout_ms;
	uint64_t		 drain_timeout_ms;
	struct upstream *upstreams;
	size_t			 n_upstreams;
};

extern struct cp_config cfg;
extern pthread_rwlock_t cp_secret_lock;
extern atomic_bool		cp_draining; /* SIGTERM: finish what runs, take nothing new */
extern atomic_bool		cp_stopping; /* give up on running exchanges too */

int config_parse_args(int argc, char **argv);
int config_finish(void);
/* Re-read every upstream's secret; keeps the old one of an upstream that fails. */
int					   config_reload_secrets(void);
const struct upstream *upstream_by_name(const char *name);
/* Parse one upstream definition ("NAME key=value ..."); for tests and config. */
int	 upstream_parse(const char *spec, struct upstream *up, char *err, size_t errlen);
void upstream_clear(struct upstream *up);

/* ---- helpers of its own (util.c; the shared ones are in daemonlib/util.h) --- */

bool upstream_name_valid(const char *s, size_t len);
bool sandbox_id_valid(const char *s, size_t len);
/* Decode standard base64 into out (NUL-terminated); -EINVAL when malformed. */
int base64_decode(const char *in, size_t inlen, char *out, size_t outsz, size_t *outlen);

#endif
