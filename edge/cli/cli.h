/*
 * cli.h — nadi, the command-line client of nadi-edge's HTTP API: what its
 * files share.  main.c parses the command line and dispatches, config.c
 * keeps the edge's URL and token (nadi login), api.c makes the requests
 * (libcurl, jansson) and turns answers into exit codes, follow.c reads a
 * session's event stream (SSE, resumed with Last-Event-ID) and renders it,
 * commands.c is the commands themselves.
 */
#ifndef NADI_CLI_H
#define NADI_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

/* Exit codes (docs/CLI.md, nadi.1): scripts may rely on them. */
enum
{
	EXIT_OK = 0,
	EXIT_ERROR = 1,		  /* anything else: bad config, unexpected answer */
	EXIT_USAGE = 2,		  /* bad arguments, refused before any request */
	EXIT_AUTH = 3,		  /* 401, 403: no token, a bad or expired one, not allowed */
	EXIT_NOT_FOUND = 4,	  /* 404: no such session or command (or another tenant's) */
	EXIT_REFUSED = 5,	  /* 400, 409, 413, 415, 422: the edge refused the request */
	EXIT_UNAVAILABLE = 6, /* no answer, 429, 5xx: try again later */
	EXIT_CMD_FAILED = 7	  /* --wait: the command ended dead or cancelled */
};

/* The edge's default body limit: bigger requests are refused here first. */
#define CLI_BODY_MAX (1024 * 1024)
/* The edge's default --json-depth. */
#define CLI_JSON_DEPTH 64

typedef struct CliConfig
{
	char *url;	 /* without a trailing '/' */
	char *token; /* NULL: none */
} CliConfig;

extern CliConfig   cli_cfg;
extern const char *cli_prog; /* argv[0]'s base name, for messages */

/* "nadi: ..." on stderr; returns code. */
int cli_err(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* config.c */
char *config_path(void);
/* Load the file (when there is one), then NADI_URL / NADI_TOKEN over it. */
int config_load(void);
int cmd_login(int argc, char **argv);
int cmd_logout(int argc, char **argv);

/* api.c */
typedef struct Answer
{
	long	status; /* 0: no answer */
	char   *body;
	size_t	len;
	json_t *json;	  /* the body, when it is JSON */
	bool	replayed; /* Idempotency-Replayed: true */
} Answer;

bool command_id_valid(const char *s);
bool tool_name_valid(const char *s);
bool state_name_valid(const char *s);
bool idem_key_valid(const char *s);
/* A JSON value no deeper than CLI_JSON_DEPTH; NULL (with a message) otherwise. */
json_t *json_arg(const char *what, const char *text, bool object);
/* The exit code of an HTTP status. */
int status_exit(long status);
/*
 * METHOD url/PATH (path segments already escaped) with body (may be NULL),
 * an Idempotency-Key (may be NULL).  EXIT_OK with *a filled for a 2xx;
 * otherwise the problem is printed on stderr and its exit code returned.
 */
int	 api_call(const char *method, const char *path, json_t *body, const char *idem_key, Answer *a);
void answer_free(Answer *a);
/* A libcurl write callback that appends to the Answer arg's body (64 MB at most). */
size_t answer_append(char *p, size_t size, size_t n, void *arg);
/* path segment escaped (a new string) */
char *seg(const char *s);
/* A curl_slist with Authorization and more (token checked for header safety). */
struct curl_slist *api_headers(struct curl_slist *h);
/* The problem of an answer on stderr; its exit code. */
int problem_print(long status, const char *body, size_t len);
/*
 * Text from the edge for a terminal: control characters (C0 but, with
 * lines, newline and tab; DEL; C1) as '?', so that text a model wrote
 * cannot move the cursor, retitle the window or write to the clipboard.
 */
size_t term_control(const char *s);
void   term_put(FILE *out, const char *s, bool lines);

/* follow.c */
typedef struct Follow
{
	const char *sid;
	int64_t		after; /* the last seq seen: resume after it */
	bool		json;  /* print one JSON object a line */
	bool		quiet; /* print nothing (--wait follows for itself) */
	/* called on every event before it is printed; nonzero ends (that exit code, -1: EXIT_OK) */
	int (*on_event)(struct Follow *f, json_t *ev);
	/* called after each (re)connection; same return */
	int (*on_connect)(struct Follow *f);
	/* about once a second while connected (progress) */
	void (*on_tick)(struct Follow *f);
	void *ctx;
	int	  give_up_s; /* stop trying after this long without a connection */
} Follow;

int follow_run(Follow *f);
/* The events after f->after up to now, by the list route (no stream); 0 or as on_event. */
int follow_drain(Follow *f);
/* A readable line (or lines) for an event, on out. */
void event_render(FILE *out, json_t *ev);

/* commands.c */
int cmd_sessions(int argc, char **argv);
int cmd_send(int argc, char **argv);
int cmd_tool(int argc, char **argv);
int cmd_tail(int argc, char **argv);
int cmd_decide(int argc, char **argv); /* approve, deny */
int cmd_cancel(int argc, char **argv);
int cmd_commands(int argc, char **argv);

/* files.c */
int cmd_files(int argc, char **argv); /* files put|get */

/* main.c */
/* --help of a command (on stdout), or its usage line on stderr with EXIT_USAGE. */
int usage(const char *cmd, bool help);
/* true when argv holds -h/--help (anywhere before "--") */
bool wants_help(int argc, char **argv);

#endif
