/*
 * celld.h — what the files of nadi-celld share: its configuration
 * (conf.c), the metrics and health endpoint (http.c) and the wake-up
 * listener (listen.c); main.c owns the loop, the cell and its store.
 */
#ifndef NADI_CELLD_H
#define NADI_CELLD_H

#include <stdbool.h>
#include <stdint.h>

#include "bgworkers/cellhost.h"
#include "daemonlib/pq.h"
#include "nadi_version.h"
#include "store_pq.h"

#define CELLD_PROGRAM "nadi-celld"
#define CELLD_CHANNEL "nadi_cell" /* NOTIFY nadi_cell, '<host id>': a command for that host */

typedef struct CelldConfig
{
	char	*config_file;
	char	*conninfo;
	char	*host_id;
	char	*address;
	int		 capacity;
	uint64_t heartbeat_ms;
	uint64_t idle_suspend_ms;
	int		 max_in_flight;
	int		 max_in_flight_tenant;
	char	*sandboxd_url;
	char	*sandbox_image;
	char	*model;
	char	*model_url;
	char	*model_name;
	uint64_t tool_timeout_ms;
	int		 model_max_steps;
	bool	 proxy_tokens;
	uint64_t statement_timeout_ms;
	char	*listen;
	uint64_t drain_timeout_ms;
	char	*ready_file;
} CelldConfig;

extern CelldConfig celld_cfg;

/* conf.c: parse (flags > environment > file > defaults) and check; -EINVAL, logged. */
int	 celld_conf_load(CelldConfig *cfg, int argc, char **argv);
void celld_conf_free(CelldConfig *cfg);
/* The cell host's and the runtime's view of cfg (strings borrowed). */
void celld_conf_cell(const CelldConfig *cfg, CellHostConfig *ch, RuntimeConfig *rt);
/* The libpq parameters of both connections (the store's and LISTEN's). */
void celld_conf_pq(const CelldConfig *cfg, PqConnParams *p, char *options, size_t size);

/* http.c: GET /metrics and /healthz on cfg.listen, in the event loop. */
typedef struct CelldHealth
{
	CellHost *cell;
	StorePq	 *store;
	bool	  draining;
} CelldHealth;
int		 celld_http_start(const char *listen, CelldHealth *h, uint16_t *port);
void	 celld_http_stop(void);
uint64_t celld_http_timeout_ms(void);
void	 celld_http_run(void);

/* listen.c: LISTEN nadi_cell; on_wake when the payload is our host id (or the listener came back). */
void	 celld_listen_start(const PqConnParams *p, const char *host_id, void (*on_wake)(void));
void	 celld_listen_set_host(const char *host_id);
bool	 celld_listen_up(void);
uint64_t celld_listen_wakeups(void);
void	 celld_listen_stop(void);

#endif /* NADI_CELLD_H */
