/*
 * main.c — nadi, the command-line client of nadi-edge: the command table,
 * --help of each command, --version, and the two commands that run another
 * program: `nadi acp` (the stdio ACP bridge nadi-acp, beside this binary)
 * and `nadi local` (scripts/nadi-local of the checkout this binary was
 * built in, or NADI_LOCAL).  Exit codes: cli.h, docs/CLI.md.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "cli.h"
#include "daemonlib/util.h"
#include "nadi_version.h"

const char *cli_prog = "nadi";

typedef struct Cmd
{
	const char *name;
	int (*run)(int argc, char **argv);
	bool		config; /* needs the URL and token */
	const char *synopsis;
	const char *help;
} Cmd;

static int cmd_acp(int argc, char **argv);
static int cmd_local(int argc, char **argv);
static int cmd_help(int argc, char **argv);

static const Cmd cmds[] = {
	{"login", cmd_login, true, "login [--url URL] [--no-check] < TOKEN-FILE",
	 "Store the edge's URL and a token in the configuration file\n"
	 "($XDG_CONFIG_HOME/nadi/config, else ~/.config/nadi/config; mode 0600).\n"
	 "The token is read from standard input (a prompt without echo on a\n"
	 "terminal), never from the command line.  It is checked with one request\n"
	 "first (--no-check: not).  NADI_URL and NADI_TOKEN override the file.\n"},
	{"logout", cmd_logout, false, "logout", "Remove the configuration file.\n"},
	{"sessions", cmd_sessions, true,
	 "sessions [ls] [--state STATE] [--limit N] [--json]\n"
	 "       nadi sessions create [--require-approval TOOL]... [--policy JSON] [--labels JSON]\n"
	 "                            [--metadata JSON] [--tenant TENANT] [--json]\n"
	 "       nadi sessions show SESSION [--json]\n"
	 "       nadi sessions rm SESSION [--json]",
	 "ls lists the token's sessions; create makes one and prints its id; show\n"
	 "prints one; rm terminates one (its open commands are cancelled).\n"},
	{"send", cmd_send, true,
	 "send SESSION TEXT [--wait] [--idempotency-key KEY] [--json] [--give-up SECONDS]",
	 "Send a message; print the command's id.  With --wait, follow the session\n"
	 "until the command is final (progress on stderr when it is a terminal), print\n"
	 "its result (the reply's text) and exit 0 if it completed, 7 if it ended dead\n"
	 "or cancelled.  A command that waits for approval is announced on stderr.\n"},
	{"tool", cmd_tool, true,
	 "tool SESSION NAME [JSON] [--wait] [--idempotency-key KEY] [--json] [--give-up SECONDS]",
	 "Call a tool with arguments JSON (an object, default {}; - reads it from stdin);\n"
	 "as send.\n"
	 "NAME is [a-z][a-z0-9_]*, at most 64 characters.\n"},
	{"tail", cmd_tail, true,
	 "tail SESSION [--json] [--after SEQ] [--until-idle] [--give-up SECONDS]",
	 "Follow the session's events (from the start, or after SEQ), one readable\n"
	 "line each, or with --json each event as one JSON object a line.  A broken\n"
	 "stream is resumed where it stopped (Last-Event-ID): no event twice, none\n"
	 "lost.  Ends when the session terminates, with --until-idle also when no\n"
	 "command is queued, running or waiting, and after --give-up seconds (60;\n"
	 "0: never) without reaching the edge.\n"},
	{"approve", cmd_decide, true,
	 "approve SESSION COMMAND [--reason TEXT] [--idempotency-key KEY] [--json]",
	 "Approve a tool call that waits for permission.\n"},
	{"deny", cmd_decide, true,
	 "deny SESSION COMMAND [--reason TEXT] [--idempotency-key KEY] [--json]",
	 "Deny a tool call that waits for permission.\n"},
	{"cancel", cmd_cancel, true, "cancel SESSION COMMAND [--json]",
	 "Cancel a command: a queued or waiting one at once, a running one is\n"
	 "stopped by its cell.\n"},
	{"commands", cmd_commands, true, "commands SESSION [--status STATUS] [--limit N] [--json]",
	 "List the session's commands with their status and attempts.\n"},
	{"files", cmd_files, true,
	 "files put SESSION PATH [FILE] [--json]\n"
	 "       nadi files get SESSION PATH [FILE]",
	 "put sends FILE (- or none: stdin) to PATH in the session's sandbox (made\n"
	 "when the session has none yet); get writes the file at PATH to FILE (- or\n"
	 "none: stdout; an existing FILE is not overwritten), or a directory's listing\n"
	 "(JSON).  PATH is relative to the sandbox's workspace.  Both stream.\n"},
	{"acp", cmd_acp, true, "acp [NADI-ACP OPTIONS]",
	 "Run the stdio ACP bridge (nadi-acp) for an editor, with this\n"
	 "configuration's URL and token (NADI_ACP_URL and NADI_TOKEN win).\n"},
	{"local", cmd_local, false, "local start|stop|status|logs|psql|token|demo [ARGS]",
	 "Manage the local development stack: runs scripts/nadi-local of the\n"
	 "checkout this nadi was built in (NADI_LOCAL names another).\n"},
	{"help", cmd_help, false, "help [COMMAND]", "Help on a command.\n"},
};

static const char exit_codes[] = "Exit codes:\n"
								 "  0  ok\n"
								 "  1  error (configuration, an unexpected answer)\n"
								 "  2  usage: bad arguments, refused before any request\n"
								 "  3  not authenticated or not allowed (401, 403)\n"
								 "  4  not found (404), or purged (410)\n"
								 "  5  refused by the edge (400, 409, 413, 415, 422)\n"
								 "  6  unavailable: no answer, 429, 5xx\n"
								 "  7  --wait: the command ended dead or cancelled\n";

int
cli_err(int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr, "%s: ", cli_prog);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	return code;
}

static const Cmd *
cmd_find(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(cmds); i++)
		if (strcmp(cmds[i].name, name) == 0)
			return &cmds[i];
	return NULL;
}

static void
overview(FILE *out)
{
	fprintf(out, "usage: nadi [--version] [--help] COMMAND [ARGS]\n\n");
	for (size_t i = 0; i < ARRAY_SIZE(cmds); i++)
	{
		/* a synopsis of several lines is indented for "usage: " */
		fputs("  nadi ", out);
		for (const char *p = cmds[i].synopsis; *p; p++)
			if (p[0] == '\n' && strncmp(p + 1, "       ", 7) == 0)
			{
				fputs("\n  ", out);
				p += 7;
			}
			else
				fputc(*p, out);
		fputc('\n', out);
	}
	fprintf(out, "\nnadi COMMAND --help for more; man nadi.\n\n%s", exit_codes);
}

int
usage(const char *cmd, bool help)
{
	const Cmd *c = cmd_find(cmd);

	if (c == NULL)
		return EXIT_USAGE;
	if (help)
	{
		printf("usage: nadi %s\n\n%s\n%s", c->synopsis, c->help, exit_codes);
		return EXIT_OK;
	}
	fprintf(stderr, "usage: nadi %s\n", c->synopsis);
	return EXIT_USAGE;
}

bool
wants_help(int argc, char **argv)
{
	for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
			return true;
	return false;
}

static int
cmd_help(int argc, char **argv)
{
	if (argc < 2)
	{
		overview(stdout);
		return EXIT_OK;
	}
	if (cmd_find(argv[1]) == NULL)
		return cli_err(EXIT_USAGE, "no command %.64s", argv[1]);
	return usage(argv[1], true);
}

/* the directory of this binary: a new string */
static char *
self_dir(void)
{
	char	buf[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
	char   *slash;

	if (n <= 0)
		return NULL;
	buf[n] = '\0';
	if ((slash = strrchr(buf, '/')) == NULL)
		return NULL;
	*slash = '\0';
	return strdup(buf);
}

/* exec the first of dir/candidates[i] that is executable */
static int
exec_beside(const char *what, const char *const *rel, size_t n, char **argv)
{
	_cleanup_(freep) char *dir = self_dir();

	if (dir == NULL)
		return cli_err(EXIT_ERROR, "cannot find where %s is", cli_prog);
	for (size_t i = 0; i < n; i++)
	{
		_cleanup_(freep) char *p = xasprintf("%s/%s", dir, rel[i]);

		if (access(p, X_OK) == 0)
		{
			argv[0] = p;
			execv(p, argv);
			return cli_err(EXIT_ERROR, "%s: %m", p);
		}
	}
	return cli_err(EXIT_ERROR, "%s is not beside %s (%s): build it with make", what, cli_prog, dir);
}

static int
cmd_acp(int argc, char **argv)
{
	static const char *const rel[] = {"nadi-acp", "../nadi-acp"};
	_cleanup_(freep) char	*acp_url = NULL;

	if (getenv("NADI_ACP_URL") == NULL || *getenv("NADI_ACP_URL") == '\0')
	{
		acp_url = xasprintf("%s/acp", cli_cfg.url);
		setenv("NADI_ACP_URL", acp_url, 1);
	}
	/* the token goes by the environment, never by argv */
	if ((getenv("NADI_TOKEN") == NULL || *getenv("NADI_TOKEN") == '\0') && cli_cfg.token)
		setenv("NADI_TOKEN", cli_cfg.token, 1);
	(void) argc;
	return exec_beside("nadi-acp", rel, ARRAY_SIZE(rel), argv);
}

static int
cmd_local(int argc, char **argv)
{
	static const char *const rel[] = {"../../scripts/nadi-local", "../scripts/nadi-local"};
	const char				*env = getenv("NADI_LOCAL");

	if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)
		return usage("local", argc >= 2);
	if (env && *env)
	{
		if (env[0] != '/')
			return cli_err(EXIT_USAGE, "NADI_LOCAL must be an absolute path");
		argv[0] = (char *) env;
		execv(env, argv);
		return cli_err(EXIT_ERROR, "%s: %m", env);
	}
	return exec_beside("scripts/nadi-local", rel, ARRAY_SIZE(rel), argv);
}

int
main(int argc, char **argv)
{
	const Cmd *c;
	int		   r;

	if (argc < 2)
	{
		overview(stderr);
		return EXIT_USAGE;
	}
	if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0)
	{
		printf("nadi %s (extension nadi %s)\n", NADI_VERSION, NADI_EXT_VERSION);
		return EXIT_OK;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)
	{
		overview(stdout);
		return EXIT_OK;
	}
	if ((c = cmd_find(argv[1])) == NULL)
	{
		cli_err(EXIT_USAGE, "no command %.64s", argv[1]);
		overview(stderr);
		return EXIT_USAGE;
	}
	if (c->run != cmd_local && c->run != cmd_sessions && wants_help(argc - 1, argv + 1))
		return usage(c->name, true);
	if (c->config && (r = config_load()) != 0)
		return r;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0)
		return cli_err(EXIT_ERROR, "curl_global_init failed");
	r = c->run(argc - 1, argv + 1);
	curl_global_cleanup();
	return r;
}
