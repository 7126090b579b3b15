/*
 * conf.c — nadi-celld's keys (daemonlib/conf.h: flag > NADI_CELLD_*
 * variable > config file > default), their checks, and what the cell host
 * and the agent runtime are told.  A reload (SIGHUP) parses everything
 * again into a fresh configuration; a key gone from the file goes back to
 * its default.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "celld.h"
#include "daemonlib/conf.h"

CelldConfig celld_cfg;

/* The numbers' defaults; strings are NULL until celld_conf_defaults (conf.c frees them). */
static const CelldConfig defaults = {
	.capacity = 1000,
	.heartbeat_ms = 2000,
	.idle_suspend_ms = 60000,
	.max_in_flight = 1000,
	.max_in_flight_tenant = 100,
	.tool_timeout_ms = 30000,
	.model_max_steps = 8,
	.proxy_tokens = true,
	.statement_timeout_ms = 10000,
	.drain_timeout_ms = 30000,
};

#define C(f) offsetof(CelldConfig, f)
static const struct conf_key keys[] = {
	{"conninfo", CONF_STR, C(conninfo),
	 "libpq connection string of a login that is a member of nadi_cell only (PG* variables apply "
	 "too)"},
	{"host_id", CONF_STR, C(host_id),
	 "this cell host's id, bound to the login with nadi.host_bind('cell', id, role) (default: the "
	 "host name)"},
	{"address", CONF_STR, C(address),
	 "what the host's registration records as its address (default: nadi-celld:HOST_ID)"},
	{"capacity", CONF_INT, C(capacity), "sessions offered to the placer (default 1000)", 0, NULL, 0,
	 1000000},
	{"heartbeat", CONF_MS, C(heartbeat_ms),
	 "heartbeat of the host, and the longest a round is put off (default 2s)", 0, NULL, 10,
	 3600000},
	{"idle_suspend", CONF_MS, C(idle_suspend_ms),
	 "a session with nothing open this long is released (default 60s)", 0, NULL, 10,
	 INT64_C(30) * 86400000},
	{"max_in_flight", CONF_INT, C(max_in_flight),
	 "commands under way at once, of every tenant (default 1000; 0: no limit)", 0, NULL, 0,
	 1000000},
	{"max_in_flight_tenant", CONF_INT, C(max_in_flight_tenant),
	 "commands of one tenant under way at once (default 100; 0: no limit)", 0, NULL, 0, 1000000},
	{"sandboxd_url", CONF_STR, C(sandboxd_url),
	 "sandbox host of sessions whose sandbox host has no address (default http://127.0.0.1:7100)"},
	{"sandbox_image", CONF_STR, C(sandbox_image),
	 "image new sandboxes are made from (default busybox)"},
	{"model", CONF_STR, C(model), "model provider: builtin or openai (default builtin)"},
	{"model_url", CONF_STR, C(model_url),
	 "base URL of the chat-completions API (the credentials proxy, which holds the key)"},
	{"model_name", CONF_STR, C(model_name), "model name sent to the API (default \"default\")"},
	{"tool_timeout", CONF_MS, C(tool_timeout_ms),
	 "longest a model call or a sandbox host request may take; tool calls at least this (default "
	 "30s)",
	 0, NULL, 100, 3600000},
	{"model_max_steps", CONF_INT, C(model_max_steps),
	 "model steps one message command may take (default 8)", 0, NULL, 1, 100},
	{"proxy_tokens", CONF_BOOL, C(proxy_tokens),
	 "mint short-lived tokens for the credentials proxy (default true)"},
	{"statement_timeout", CONF_MS, C(statement_timeout_ms),
	 "longest one statement may run; an answer is waited for 5 s longer (default 10s)", 0, NULL,
	 100, 3600000},
	{"listen", CONF_STR, C(listen),
	 "PORT or IPV4:PORT of /metrics and /healthz (default 127.0.0.1:7300; \"off\": none)"},
	{"drain_timeout", CONF_MS, C(drain_timeout_ms),
	 "on SIGTERM, how long commands under way may finish before leases are released (default "
	 "30s)",
	 0, NULL, 0, 3600000},
	{"ready_file", CONF_STR, C(ready_file), "once serving, write the bound metrics port here"},
	CONF_KEY_LOG_LEVEL,
};

static const char about[] =
	"A Nadi cell host outside PostgreSQL: takes the leases of the sessions placed on its host id,\n"
	"runs their commands (model and tool calls overlapped, non-blocking) and renews and releases\n"
	"the leases, over libpq as a login in nadi_cell.  SIGTERM drains, SIGHUP reloads.\n";

static int
set_default(char **field, const char *value)
{
	if (*field)
		return 0;
	*field = strdup(value);
	return *field ? 0 : -ENOMEM;
}

void
celld_conf_free(CelldConfig *cfg)
{
	char **strs[] = {&cfg->config_file,	 &cfg->conninfo,	  &cfg->host_id,   &cfg->address,
					 &cfg->sandboxd_url, &cfg->sandbox_image, &cfg->model,	   &cfg->model_url,
					 &cfg->model_name,	 &cfg->listen,		  &cfg->ready_file};

	for (size_t i = 0; i < ARRAY_SIZE(strs); i++)
	{
		free(*strs[i]);
		*strs[i] = NULL;
	}
}

int
celld_conf_load(CelldConfig *cfg, int argc, char **argv)
{
	struct conf_spec spec = CONF_SPEC(CELLD_PROGRAM, about, *cfg, keys);
	char			 addr[128];
	int				 r;

	*cfg = defaults;
	if ((r = conf_parse_args(&spec, argc, argv)) < 0)
		return r;
	if (!cfg->host_id && !(cfg->host_id = conf_hostname("localhost")))
		return -ENOMEM;
	snprintf(addr, sizeof(addr), "nadi-celld:%s", cfg->host_id);
	if (set_default(&cfg->conninfo, "") < 0 || set_default(&cfg->address, addr) < 0 ||
		set_default(&cfg->sandboxd_url, "http://127.0.0.1:7100") < 0 ||
		set_default(&cfg->sandbox_image, "busybox") < 0 ||
		set_default(&cfg->model, "builtin") < 0 || set_default(&cfg->model_url, "") < 0 ||
		set_default(&cfg->model_name, "default") < 0 ||
		set_default(&cfg->listen, "127.0.0.1:7300") < 0)
		return -ENOMEM;
	if (strlen(cfg->host_id) < 1 || strlen(cfg->host_id) > 63)
		return conf_invalid("host_id must have 1 to 63 characters");
	if (strcmp(cfg->model, "builtin") != 0 && strcmp(cfg->model, "openai") != 0)
		return conf_invalid("model must be builtin or openai, not \"%s\"", cfg->model);
	if (strcmp(cfg->model, "openai") == 0 && !cfg->model_url[0])
		return conf_invalid("model openai needs a model_url");
	return 0;
}

void
celld_conf_cell(const CelldConfig *cfg, CellHostConfig *ch, RuntimeConfig *rt)
{
	*ch = (CellHostConfig){
		.host_id = cfg->host_id,
		.address = cfg->address,
		.capacity = cfg->capacity,
		.workers = 1,
		.index = 0,
		.heartbeat_ms = (long) cfg->heartbeat_ms,
		.idle_suspend_ms = (long) cfg->idle_suspend_ms,
		.max_in_flight = cfg->max_in_flight,
		.max_in_flight_tenant = cfg->max_in_flight_tenant,
	};
	*rt = (RuntimeConfig){
		.sandboxd_url = cfg->sandboxd_url,
		.sandbox_image = cfg->sandbox_image,
		.tool_timeout_ms = (long) cfg->tool_timeout_ms,
		.model = {cfg->model, cfg->model_url, cfg->model_name, (long) cfg->tool_timeout_ms},
		.model_max_steps = cfg->model_max_steps,
		.proxy_tokens = cfg->proxy_tokens,
	};
}

void
celld_conf_pq(const CelldConfig *cfg, PqConnParams *p, char *options, size_t size)
{
	/* a transaction left open by a cell cut off mid-batch must not hold its locks for long */
	snprintf(options, size, "-c statement_timeout=%llu -c idle_in_transaction_session_timeout=%llu",
			 (unsigned long long) cfg->statement_timeout_ms,
			 (unsigned long long) cfg->statement_timeout_ms + 5000);
	*p = (PqConnParams){
		.conninfo = cfg->conninfo,
		.program = CELLD_PROGRAM,
		.options = options,
		.connect_timeout_s = 5,
	};
}
