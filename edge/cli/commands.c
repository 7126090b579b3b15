/*
 * commands.c — nadi's commands over the edge's /v1 API: sessions
 * (ls, create, show, rm), send and tool (with --wait: follow the session's
 * events until the command is final, progress on a terminal's stderr, the
 * result on stdout, the exit code from its final status), tail, approve,
 * deny, cancel and commands.  Every id and name is checked before a URL is
 * made; bodies are built with jansson.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "daemonlib/util.h"

static const char *
str(json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

/*
 * JSON for machines, often read on a terminal: every character beyond ASCII
 * (C1 controls included) as a \u escape, so a model's text cannot reach the
 * terminal as an escape sequence; a JSON reader sees the same strings.
 */
static void
print_json(json_t *v, bool pretty)
{
	char *s = json_dumps(v, (pretty ? JSON_INDENT(2) : JSON_COMPACT) | JSON_ENCODE_ANY |
								JSON_ENSURE_ASCII);

	if (s)
		puts(s);
	free(s);
}

/* one row of a table: columns padded to their widths (0: the last), control characters as '?' */
static void
row_put(const char *const *cols, const int *width, size_t n)
{
	for (size_t i = 0; i < n; i++)
	{
		size_t len = strlen(cols[i]);

		term_put(stdout, cols[i], false);
		if (i + 1 < n)
			printf("%*s", (int) (len < (size_t) width[i] ? (size_t) width[i] - len : 0) + 2, "");
	}
	putchar('\n');
}

static int
check_sid(const char *s)
{
	return uuid_text_valid(s) ? 0 : cli_err(EXIT_USAGE, "not a session id (a UUID): %.64s", s);
}

static int
check_cid(const char *s)
{
	return command_id_valid(s)
			   ? 0
			   : cli_err(EXIT_USAGE, "not a command id (a positive integer): %.64s", s);
}

/* ---- sessions ----------------------------------------------------------- */

/*
 * A list: its options (--FILTER NAME, --limit N, --json, --help), operands
 * (the session id when the list is a session's), the GET, then each row
 * printed by row() under head, or the answer as JSON.
 */
typedef struct List
{
	const char *cmd;	/* "sessions", "commands" */
	const char *filter; /* the filter's option and query parameter */
	const char *key;	/* the answer's array */
	bool		of_session;
	const char *head;
	void (*row)(json_t *v);
} List;

static int
list_run(const List *l, int argc, char **argv)
{
	const struct option	   opts[] = {{l->filter, required_argument, NULL, 'f'},
									 {"limit", required_argument, NULL, 'l'},
									 {"json", no_argument, NULL, 'j'},
									 {"help", no_argument, NULL, 'h'},
									 {NULL, 0, NULL, 0}};
	_cleanup_(freep) char *s = NULL;
	_cleanup_(freep) char *path = NULL;
	const char			  *filter = NULL;
	uint64_t			   limit = 100;
	bool				   json = false;
	Answer				   a;
	json_t				  *v;
	size_t				   i;
	int					   o, r;

	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1)
		switch (o)
		{
			case 'f':
				if (!state_name_valid(optarg))
					return cli_err(EXIT_USAGE, "--%s: not a %s name", l->filter, l->filter);
				filter = optarg;
				break;
			case 'l':
				if (parse_count(optarg, &limit) < 0 || limit < 1 || limit > 1000)
					return cli_err(EXIT_USAGE, "--limit: 1 to 1000");
				break;
			case 'j':
				json = true;
				break;
			case 'h':
				return usage(l->cmd, true);
			default:
				return usage(l->cmd, false);
		}
	if (optind != argc - (l->of_session ? 1 : 0))
		return usage(l->cmd, false);
	if (l->of_session && (r = check_sid(argv[optind])) != 0)
		return r;
	if (l->of_session)
		s = seg(argv[optind]);
	if (l->of_session)
		path = xasprintf("/v1/sessions/%s/commands?limit=%llu", s, (unsigned long long) limit);
	else
		path = xasprintf("/v1/sessions?limit=%llu", (unsigned long long) limit);
	if (filter)
	{
		char *p = xasprintf("%s&%s=%s", path, l->filter, filter);

		free(path);
		path = p;
	}
	if ((r = api_call("GET", path, NULL, NULL, &a)) != EXIT_OK)
		return r;
	if (json)
		print_json(a.json, false);
	else
	{
		puts(l->head);
		json_array_foreach(json_object_get(a.json, l->key), i, v) l->row(v);
	}
	answer_free(&a);
	return EXIT_OK;
}

static void
session_row(json_t *v)
{
	const char *cols[] = {str(v, "id") ?: "?", str(v, "state") ?: "?", str(v, "tenant_id") ?: "?",
						  str(v, "updated_at") ?: ""};
	const int width[] = {36, 12, 10, 0};

	row_put(cols, width, ARRAY_SIZE(cols));
}

static int
sessions_ls(int argc, char **argv)
{
	static const List l = {
		"sessions",
		"state",
		"sessions",
		false,
		"ID                                    STATE         TENANT      UPDATED",
		session_row};

	return list_run(&l, argc, argv);
}

static int
sessions_create(int argc, char **argv)
{
	static const struct option opts[] = {{"policy", required_argument, NULL, 'p'},
										 {"labels", required_argument, NULL, 'l'},
										 {"metadata", required_argument, NULL, 'm'},
										 {"tenant", required_argument, NULL, 't'},
										 {"require-approval", required_argument, NULL, 'r'},
										 {"json", no_argument, NULL, 'j'},
										 {"help", no_argument, NULL, 'h'},
										 {NULL, 0, NULL, 0}};
	json_t					  *body = json_object();
	json_t					  *approval = NULL;
	bool					   json = false;
	Answer					   a;
	int						   o, r = EXIT_OK;

	while (r == EXIT_OK && (o = getopt_long(argc, argv, "h", opts, NULL)) != -1)
	{
		json_t *v = NULL;

		switch (o)
		{
			case 'p':
			case 'l':
			case 'm':
				v = json_arg(o == 'p'	? "--policy"
							 : o == 'l' ? "--labels"
										: "--metadata",
							 optarg, true);
				if (v == NULL)
					r = EXIT_USAGE;
				else
					json_object_set_new(body,
										o == 'p'   ? "policy"
										: o == 'l' ? "labels"
												   : "metadata",
										v);
				break;
			case 't':
				json_object_set_new(body, "tenant_id", json_string(optarg));
				break;
			case 'r':
				if (!tool_name_valid(optarg))
					r = cli_err(EXIT_USAGE, "--require-approval: not a tool name: %.64s", optarg);
				else
				{
					if (approval == NULL)
						approval = json_array();
					json_array_append_new(approval, json_string(optarg));
				}
				break;
			case 'j':
				json = true;
				break;
			case 'h':
				r = usage("sessions", true);
				break;
			default:
				r = usage("sessions", false);
		}
	}
	if (r == EXIT_OK && optind != argc)
		r = usage("sessions", false);
	if (r == EXIT_OK && approval)
	{
		json_t *pol = json_object_get(body, "policy");

		if (pol == NULL)
			json_object_set_new(body, "policy", pol = json_object());
		json_object_set(pol, "require_approval", approval);
	}
	json_decref(approval);
	if (r == EXIT_OK && (r = api_call("POST", "/v1/sessions", body, NULL, &a)) == EXIT_OK)
	{
		if (json)
			print_json(a.json, false);
		else
			puts(str(a.json, "id") ?: "");
		answer_free(&a);
	}
	json_decref(body);
	return r;
}

static int
sessions_one(const char *method, int argc, char **argv)
{
	static const struct option opts[] = {
		{"json", no_argument, NULL, 'j'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
	_cleanup_(freep) char *s = NULL;
	_cleanup_(freep) char *path = NULL;
	bool				   json = false;
	Answer				   a;
	int					   o, r;

	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1)
		switch (o)
		{
			case 'j':
				json = true;
				break;
			case 'h':
				return usage("sessions", true);
			default:
				return usage("sessions", false);
		}
	if (optind != argc - 1)
		return usage("sessions", false);
	if ((r = check_sid(argv[optind])) != 0)
		return r;
	s = seg(argv[optind]);
	path = xasprintf("/v1/sessions/%s", s);
	if ((r = api_call(method, path, NULL, NULL, &a)) != EXIT_OK)
		return r;
	if (json || strcmp(method, "GET") == 0)
		print_json(a.json, !json);
	else
		printf("%s %s\n", str(a.json, "id") ?: "?", str(a.json, "state") ?: "?");
	answer_free(&a);
	return EXIT_OK;
}

int
cmd_sessions(int argc, char **argv)
{
	const char *sub = argc > 1 && argv[1][0] != '-' ? argv[1] : "ls";

	if (argc > 1 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0))
		return usage("sessions", true);
	if (argc > 1 && argv[1][0] != '-')
	{
		argc--;
		argv++;
	}
	if (strcmp(sub, "ls") == 0 || strcmp(sub, "list") == 0)
		return sessions_ls(argc, argv);
	if (strcmp(sub, "create") == 0 || strcmp(sub, "new") == 0)
		return sessions_create(argc, argv);
	if (strcmp(sub, "show") == 0)
		return sessions_one("GET", argc, argv);
	if (strcmp(sub, "rm") == 0)
		return sessions_one("DELETE", argc, argv);
	return cli_err(EXIT_USAGE, "sessions: unknown subcommand %.64s (ls, create, show, rm)", sub);
}

/* ---- waiting for a command ---------------------------------------------- */

typedef struct Wait
{
	const char *sid;
	char		cid[24];
	json_t	   *cmd;	   /* the command once final */
	const char *status;	   /* its last known status */
	const char *tool;	   /* the tool it runs, when one */
	bool		tty;	   /* progress on stderr */
	bool		told_wait; /* said it waits for approval */
	time_t		started;
	int			spin;
} Wait;

static bool
final_status(const char *s)
{
	return s &&
		   (strcmp(s, "completed") == 0 || strcmp(s, "dead") == 0 || strcmp(s, "cancelled") == 0);
}

static void
progress_clear(Wait *w)
{
	if (w->tty)
		fputs("\r\033[K", stderr);
}

/* GET the command: 0 while it runs, -1 once final (w->cmd), else an exit code */
static int
wait_check(Wait *w)
{
	_cleanup_(freep) char *s = seg(w->sid);
	_cleanup_(freep) char *path = xasprintf("/v1/sessions/%s/commands/%s", s, w->cid);
	Answer				   a;
	int					   r;

	if ((r = api_call("GET", path, NULL, NULL, &a)) != EXIT_OK)
		return r;
	if (final_status(str(a.json, "status")))
	{
		w->cmd = json_incref(a.json);
		answer_free(&a);
		return -1;
	}
	answer_free(&a);
	return 0;
}

static int
wait_connect(Follow *f)
{
	return wait_check(f->ctx);
}

static int
wait_event(Follow *f, json_t *ev)
{
	Wait	   *w = f->ctx;
	const char *kind = str(ev, "kind") ?: "";
	json_t	   *p = json_object_get(ev, "payload");
	char		cid[24];

	snprintf(cid, sizeof(cid), "%lld",
			 (long long) json_integer_value(json_object_get(ev, "command_id")));
	if (strcmp(cid, w->cid) != 0)
		return 0;
	if (strcmp(kind, "command.started") == 0)
		w->status = "running";
	else if (strcmp(kind, "tool.call") == 0)
		w->tool = str(p, "name") ? str(p, "name") : w->tool;
	else if (strcmp(kind, "permission.requested") == 0)
	{
		w->status = "waiting";
		progress_clear(w);
		fprintf(stderr, "%s: command %s waits for approval: nadi approve %s %s (or deny)\n",
				cli_prog, w->cid, w->sid, w->cid);
		w->told_wait = true;
	}
	else if (strcmp(kind, "permission.resolved") == 0)
		w->status = "queued";
	else if (strcmp(kind, "command.completed") == 0 || strcmp(kind, "command.dead") == 0 ||
			 strcmp(kind, "command.cancelled") == 0)
		return wait_check(w);
	return 0;
}

static void
wait_tick(Follow *f)
{
	static const char spin[] = "|/-\\";
	Wait			 *w = f->ctx;

	if (!w->tty)
		return;
	fprintf(stderr, "\r\033[K%c command %s ", spin[w->spin++ % 4], w->cid);
	term_put(stderr, w->status ?: "queued", false);
	if (w->tool)
	{
		fputs(": ", stderr);
		term_put(stderr, w->tool, false);
	}
	fprintf(stderr, " %llds", (long long) (time(NULL) - w->started));
	fflush(stderr);
}

/* The command's result on stdout; the exit code of its final status. */
static int
wait_report(Wait *w, bool json)
{
	const char *status = str(w->cmd, "status") ?: "?";
	json_t	   *result = json_object_get(w->cmd, "result");

	progress_clear(w);
	if (json)
		print_json(w->cmd, false);
	else if (strcmp(status, "completed") == 0)
	{
		const char *text = str(result, "text");

		/* a reply read on a terminal is a model's text: no control characters */
		if (text && isatty(STDOUT_FILENO))
			term_put(stdout, text, true);
		else if (text)
			fputs(text, stdout);
		if (text && (!*text || text[strlen(text) - 1] != '\n'))
			putchar('\n');
		else
			print_json(result, true);
	}
	if (strcmp(status, "completed") == 0)
		return EXIT_OK;
	if (!json)
	{
		fprintf(stderr, "%s: command %s ended %s", cli_prog, w->cid, status);
		if (json_object_get(w->cmd, "error") && !json_is_null(json_object_get(w->cmd, "error")))
		{
			char *e = json_dumps(json_object_get(w->cmd, "error"), JSON_COMPACT | JSON_ENCODE_ANY);

			fputs(": ", stderr);
			term_put(stderr, e, false);
			free(e);
		}
		fputc('\n', stderr);
	}
	return EXIT_CMD_FAILED;
}

/* ---- send, tool ----------------------------------------------------------- */

typedef struct EnqueueOpts
{
	bool		wait;
	bool		json;
	const char *key;
	int			give_up_s;
} EnqueueOpts;

static int
enqueue(const char *sid, json_t *body, const EnqueueOpts *o)
{
	_cleanup_(freep) char *s = seg(sid);
	_cleanup_(freep) char *path = xasprintf("/v1/sessions/%s/commands", s);
	_cleanup_(freep) char *spath = xasprintf("/v1/sessions/%s", s);
	Wait				   w = {.sid = sid, .tty = isatty(STDERR_FILENO), .started = time(NULL)};
	Follow				   f = {.sid = sid,
								.quiet = true,
								.on_event = wait_event,
								.on_connect = wait_connect,
								.on_tick = wait_tick,
								.ctx = &w,
								.give_up_s = o->give_up_s};
	Answer				   a;
	int					   r;

	if (o->wait)
	{
		/* the cursor before the command: none of its events can be missed */
		if ((r = api_call("GET", spath, NULL, NULL, &a)) != EXIT_OK)
			return r;
		f.after = json_integer_value(json_object_get(a.json, "last_seq"));
		answer_free(&a);
	}
	if ((r = api_call("POST", path, body, o->key, &a)) != EXIT_OK)
		return r;
	snprintf(w.cid, sizeof(w.cid), "%lld",
			 (long long) json_integer_value(json_object_get(a.json, "id")));
	if (!o->wait)
	{
		if (o->json)
			print_json(a.json, false);
		else
			puts(w.cid);
		answer_free(&a);
		return EXIT_OK;
	}
	if (a.replayed)
		fprintf(stderr, "%s: the Idempotency-Key was used before: command %s\n", cli_prog, w.cid);
	if (final_status(str(a.json, "status")))
		w.cmd = json_incref(a.json);
	answer_free(&a);
	if (w.cmd == NULL)
	{
		r = follow_run(&f);
		if (w.cmd == NULL)
		{
			progress_clear(&w);
			return r ? r : cli_err(EXIT_ERROR, "the stream ended before command %s did", w.cid);
		}
	}
	r = wait_report(&w, o->json);
	json_decref(w.cmd);
	return r;
}

/* the options of send and tool; *optind_out the first operand */
static int
enqueue_opts(const char *cmd, int argc, char **argv, EnqueueOpts *o)
{
	static const struct option opts[] = {{"wait", no_argument, NULL, 'w'},
										 {"json", no_argument, NULL, 'j'},
										 {"idempotency-key", required_argument, NULL, 'k'},
										 {"give-up", required_argument, NULL, 'g'},
										 {"help", no_argument, NULL, 'h'},
										 {NULL, 0, NULL, 0}};
	uint64_t				   n;
	int						   c;

	*o = (EnqueueOpts){.give_up_s = 60};
	while ((c = getopt_long(argc, argv, "hw", opts, NULL)) != -1)
		switch (c)
		{
			case 'w':
				o->wait = true;
				break;
			case 'j':
				o->json = true;
				break;
			case 'k':
				if (!idem_key_valid(optarg))
					return cli_err(EXIT_USAGE,
								   "--idempotency-key: 1 to 255 printable ASCII characters");
				o->key = optarg;
				break;
			case 'g':
				if (parse_count(optarg, &n) < 0 || n > 86400)
					return cli_err(EXIT_USAGE, "--give-up: seconds, 0 to 86400");
				o->give_up_s = (int) n;
				break;
			case 'h':
				return usage(cmd, true);
			default:
				return usage(cmd, false);
		}
	return 0;
}

int
cmd_send(int argc, char **argv)
{
	EnqueueOpts o;
	json_t	   *body;
	int			r;

	if ((r = enqueue_opts("send", argc, argv, &o)) != 0)
		return r;
	if (optind != argc - 2)
		return usage("send", false);
	if ((r = check_sid(argv[optind])) != 0)
		return r;
	if (strlen(argv[optind + 1]) > CLI_BODY_MAX)
		return cli_err(EXIT_USAGE, "the text is larger than the edge takes (%d bytes)",
					   CLI_BODY_MAX);
	body = json_pack("{s:s, s:{s:s}}", "type", "message", "payload", "text", argv[optind + 1]);
	if (body == NULL)
		return cli_err(EXIT_USAGE, "the text is not valid UTF-8");
	r = enqueue(argv[optind], body, &o);
	json_decref(body);
	return r;
}

int
cmd_tool(int argc, char **argv)
{
	EnqueueOpts o;
	json_t	   *args, *body;
	int			r;

	if ((r = enqueue_opts("tool", argc, argv, &o)) != 0)
		return r;
	if (optind != argc - 3 && optind != argc - 2)
		return usage("tool", false);
	if ((r = check_sid(argv[optind])) != 0)
		return r;
	if (!tool_name_valid(argv[optind + 1]))
		return cli_err(EXIT_USAGE, "not a tool name ([a-z][a-z0-9_]*, at most 64): %.64s",
					   argv[optind + 1]);
	if (optind + 2 < argc && strcmp(argv[optind + 2], "-") == 0)
	{
		/* the arguments from stdin: argv holds at most 128 KiB an argument */
		_cleanup_(freep) char *text = malloc(CLI_BODY_MAX + 2);
		size_t				   n = text ? fread(text, 1, CLI_BODY_MAX + 1, stdin) : 0;

		if (text == NULL)
			return cli_err(EXIT_ERROR, "out of memory");
		if (n > CLI_BODY_MAX)
			return cli_err(EXIT_USAGE, "the arguments: larger than the edge takes (%d bytes)",
						   CLI_BODY_MAX);
		text[n] = '\0';
		args = json_arg("the arguments", text, true);
	}
	else
		args = json_arg("the arguments", optind + 2 < argc ? argv[optind + 2] : "{}", true);
	if (args == NULL)
		return EXIT_USAGE;
	body = json_pack("{s:s, s:{s:s, s:o}}", "type", "tool", "payload", "name", argv[optind + 1],
					 "args", args);
	r = enqueue(argv[optind], body, &o);
	json_decref(body);
	return r;
}

/* ---- tail ----------------------------------------------------------------- */

typedef struct Tail
{
	bool until_idle;
	bool draining; /* idle: printing what is there, then done */
} Tail;

/* the number of the session's commands that are not final */
static int
open_commands(const char *sid, int64_t *n)
{
	static const char *const states[] = {"queued", "running", "waiting"};
	_cleanup_(freep) char	*s = seg(sid);

	*n = 0;
	for (size_t i = 0; i < ARRAY_SIZE(states); i++)
	{
		_cleanup_(freep) char *path =
			xasprintf("/v1/sessions/%s/commands?status=%s&limit=1", s, states[i]);
		Answer a;
		int	   r;

		if ((r = api_call("GET", path, NULL, NULL, &a)) != EXIT_OK)
			return r;
		*n += (int64_t) json_array_size(json_object_get(a.json, "commands"));
		answer_free(&a);
	}
	return 0;
}

static int
tail_connect(Follow *f)
{
	Tail   *t = f->ctx;
	int64_t n;
	int		r;

	if (!t->until_idle)
		return 0;
	if ((r = open_commands(f->sid, &n)) != 0)
		return r;
	if (n > 0)
		return 0;
	/* idle already: the events so far, then the end */
	t->draining = true;
	r = follow_drain(f);
	return r ? r : -1;
}

static int
tail_event(Follow *f, json_t *ev)
{
	Tail	   *t = f->ctx;
	const char *kind = str(ev, "kind") ?: "";
	json_t	   *p = json_object_get(ev, "payload");
	int64_t		n;
	int			r;

	/* terminated or failed: the session is over, nothing more comes */
	if (strcmp(kind, "session.state") == 0 && str(p, "to") &&
		(strcmp(str(p, "to"), "terminated") == 0 || strcmp(str(p, "to"), "failed") == 0))
		return -1;
	if (t->until_idle && !t->draining &&
		(strcmp(kind, "command.completed") == 0 || strcmp(kind, "command.dead") == 0 ||
		 strcmp(kind, "command.cancelled") == 0))
	{
		if ((r = open_commands(f->sid, &n)) != 0)
			return r;
		return n == 0 ? -1 : 0;
	}
	return 0;
}

int
cmd_tail(int argc, char **argv)
{
	static const struct option opts[] = {
		{"json", no_argument, NULL, 'j'},		{"after", required_argument, NULL, 'a'},
		{"until-idle", no_argument, NULL, 'i'}, {"give-up", required_argument, NULL, 'g'},
		{"help", no_argument, NULL, 'h'},		{NULL, 0, NULL, 0}};
	Tail	 t = {0};
	Follow	 f = {.on_event = tail_event, .on_connect = tail_connect, .ctx = &t, .give_up_s = 60};
	uint64_t n;
	int		 o, r;

	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1)
		switch (o)
		{
			case 'j':
				f.json = true;
				break;
			case 'a':
				if (parse_count(optarg, &n) < 0 || n > INT64_MAX)
					return cli_err(EXIT_USAGE, "--after: a sequence number (0 or more)");
				f.after = (int64_t) n;
				break;
			case 'i':
				t.until_idle = true;
				break;
			case 'g':
				if (parse_count(optarg, &n) < 0 || n > 86400)
					return cli_err(EXIT_USAGE, "--give-up: seconds, 0 to 86400");
				f.give_up_s = (int) n;
				break;
			case 'h':
				return usage("tail", true);
			default:
				return usage("tail", false);
		}
	if (optind != argc - 1)
		return usage("tail", false);
	if ((r = check_sid(argv[optind])) != 0)
		return r;
	f.sid = argv[optind];
	return follow_run(&f);
}

/* ---- approve, deny, cancel, commands ------------------------------------- */

/* approve/deny/cancel SESSION COMMAND: POST .../commands/CID/ACTION */
static int
command_action(const char *action, int argc, char **argv)
{
	static const struct option opts[] = {{"reason", required_argument, NULL, 'r'},
										 {"idempotency-key", required_argument, NULL, 'k'},
										 {"json", no_argument, NULL, 'j'},
										 {"help", no_argument, NULL, 'h'},
										 {NULL, 0, NULL, 0}};
	_cleanup_(freep) char	  *s = NULL;
	_cleanup_(freep) char	  *path = NULL;
	const char				  *reason = NULL, *key = NULL;
	bool					   json = false;
	json_t					  *body = NULL;
	Answer					   a;
	int						   o, r;

	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1)
		switch (o)
		{
			case 'r':
				reason = optarg;
				break;
			case 'k':
				if (!idem_key_valid(optarg))
					return cli_err(EXIT_USAGE,
								   "--idempotency-key: 1 to 255 printable ASCII characters");
				key = optarg;
				break;
			case 'j':
				json = true;
				break;
			case 'h':
				return usage(action, true);
			default:
				return usage(action, false);
		}
	if (optind != argc - 2)
		return usage(action, false);
	if ((r = check_sid(argv[optind])) != 0 || (r = check_cid(argv[optind + 1])) != 0)
		return r;
	if (reason && strcmp(action, "cancel") == 0)
		return cli_err(EXIT_USAGE, "cancel takes no --reason");
	if (key && strcmp(action, "cancel") == 0)
		return cli_err(EXIT_USAGE, "cancel takes no --idempotency-key");
	if (reason && (body = json_pack("{s:s}", "reason", reason)) == NULL)
		return cli_err(EXIT_USAGE, "--reason: not valid UTF-8");
	s = seg(argv[optind]);
	path = xasprintf("/v1/sessions/%s/commands/%s/%s", s, argv[optind + 1], action);
	r = api_call("POST", path, body, key, &a);
	json_decref(body);
	if (r != EXIT_OK)
		return r;
	if (json)
		print_json(a.json, false);
	else if (strcmp(action, "cancel") == 0)
		printf("command %s %s%s\n", argv[optind + 1], str(a.json, "status") ?: "?",
			   json_is_true(json_object_get(a.json, "cancel_requested")) &&
					   !final_status(str(a.json, "status"))
				   ? " (cancel requested)"
				   : "");
	else
		printf("command %s %s\n", argv[optind + 1],
			   str(json_object_get(a.json, "result"), "decision") ?: action);
	answer_free(&a);
	return EXIT_OK;
}

int
cmd_decide(int argc, char **argv)
{
	return command_action(argv[0], argc, argv);
}

int
cmd_cancel(int argc, char **argv)
{
	return command_action("cancel", argc, argv);
}

static void
command_row(json_t *v)
{
	json_t *p = json_object_get(v, "payload");
	char   *what = json_dumps(p, JSON_COMPACT);

	char		id[24], attempts[24];
	char		shown[61];
	const char *cols[] = {id, str(v, "type") ?: "?", str(v, "status") ?: "?", attempts, shown};
	const int	width[] = {8, 8, 10, 8, 0};

	snprintf(id, sizeof(id), "%lld", (long long) json_integer_value(json_object_get(v, "id")));
	snprintf(attempts, sizeof(attempts), "%lld",
			 (long long) json_integer_value(json_object_get(v, "attempts")));
	snprintf(shown, sizeof(shown), "%s", str(p, "text") ?: str(p, "name") ?: what ?: "");
	row_put(cols, width, ARRAY_SIZE(cols));
	free(what);
}

int
cmd_commands(int argc, char **argv)
{
	static const List l = {
		"commands", "status", "commands", true, "ID        TYPE      STATUS      ATTEMPTS  WHAT",
		command_row};

	return list_run(&l, argc, argv);
}
