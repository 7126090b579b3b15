/*
 * config.c — where nadi finds its edge and its token: the file nadi login
 * writes ($XDG_CONFIG_HOME/nadi/config, else ~/.config/nadi/config; lines
 * "url = ..." and "token = ..."), mode 0600 in a 0700 directory, refused
 * when others may read it; NADI_URL and NADI_TOKEN override it.  The token
 * is read from stdin or a prompt that does not echo, never from argv.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "cli.h"
#include "daemonlib/util.h"

#define DEFAULT_URL "http://127.0.0.1:8080"
#define TOKEN_MAX 16384

CliConfig cli_cfg;

static char *
config_dir(void)
{
	const char *x = getenv("XDG_CONFIG_HOME");
	const char *home = getenv("HOME");

	if (x && x[0] == '/')
		return xasprintf("%s/nadi", x);
	if (home && home[0] == '/')
		return xasprintf("%s/.config/nadi", home);
	return NULL;
}

char *
config_path(void)
{
	_cleanup_(freep) char *d = config_dir();

	return d ? xasprintf("%s/config", d) : NULL;
}

static char *
trim(char *s)
{
	char *e;

	s += strspn(s, " \t");
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
		*--e = '\0';
	return s;
}

/* http:// or https://, printable, without a trailing '/': a new string */
static char *
url_clean(const char *u)
{
	char  *r;
	size_t n;

	if (strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0)
		return NULL;
	for (const char *p = u; *p; p++)
		if (*p <= 0x20 || *p >= 0x7f || *p == '?' || *p == '#')
			return NULL;
	r = strdup(u);
	n = strlen(r);
	while (n > 8 && r[n - 1] == '/')
		r[--n] = '\0';
	return r;
}

static int
config_read(const char *path)
{
	_cleanup_(closep) int  fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	_cleanup_(freep) char *text = NULL;
	struct stat			   st;
	size_t				   len;
	int					   lineno = 0;
	int					   r;

	if (fd < 0)
		return errno == ENOENT ? 0 : cli_err(EXIT_ERROR, "%s: %m", path);
	if (fstat(fd, &st) < 0)
		return cli_err(EXIT_ERROR, "%s: %m", path);
	if (!S_ISREG(st.st_mode))
		return cli_err(EXIT_ERROR, "%s: not a regular file", path);
	if (st.st_mode & 077)
		return cli_err(EXIT_ERROR,
					   "%s: others may read it (mode %03o); it holds a token: chmod 600 it", path,
					   st.st_mode & 0777);
	if (st.st_uid != geteuid())
		return cli_err(EXIT_ERROR, "%s: owned by another user", path);
	if (st.st_size > 1024 * 1024)
		return cli_err(EXIT_ERROR, "%s: too large", path);
	text = calloc(1, (size_t) st.st_size + 1);
	for (len = 0; text && len < (size_t) st.st_size; len += (size_t) r)
		if ((r = (int) read(fd, text + len, (size_t) st.st_size - len)) <= 0)
			return cli_err(EXIT_ERROR, "%s: could not read it", path);
	for (char *line = text, *next; line && *line; line = next)
	{
		char *eq;
		char *k, *v;

		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		lineno++;
		k = trim(line);
		if (*k == '\0' || *k == '#')
			continue;
		if ((eq = strchr(k, '=')) == NULL)
			return cli_err(EXIT_ERROR, "%s:%d: not \"key = value\"", path, lineno);
		*eq = '\0';
		k = trim(k);
		v = trim(eq + 1);
		if (strcmp(k, "url") == 0)
		{
			free(cli_cfg.url);
			if ((cli_cfg.url = url_clean(v)) == NULL)
				return cli_err(EXIT_ERROR, "%s:%d: url must be http:// or https://", path, lineno);
		}
		else if (strcmp(k, "token") == 0)
		{
			free(cli_cfg.token);
			cli_cfg.token = strdup(v);
		}
		else
			return cli_err(EXIT_ERROR, "%s:%d: unknown key %s", path, lineno, k);
	}
	if (text)
		explicit_bzero(text, strlen(text));
	return 0;
}

int
config_load(void)
{
	_cleanup_(freep) char *path = config_path();
	const char			  *u = getenv("NADI_URL");
	const char			  *t = getenv("NADI_TOKEN");
	int					   r;

	if (path && (r = config_read(path)) != 0)
		return r;
	if (u && *u)
	{
		free(cli_cfg.url);
		if ((cli_cfg.url = url_clean(u)) == NULL)
			return cli_err(EXIT_USAGE, "NADI_URL must be an http:// or https:// URL");
	}
	if (t && *t)
	{
		free(cli_cfg.token);
		cli_cfg.token = strdup(t);
	}
	if (cli_cfg.url == NULL)
		cli_cfg.url = strdup(DEFAULT_URL);
	return 0;
}

/* one line from stdin, without echo when it is a terminal */
static char *
read_token(void)
{
	struct termios old, quiet;
	bool		   tty = isatty(STDIN_FILENO);
	char		  *line = NULL;
	size_t		   cap = 0;
	ssize_t		   n;

	if (tty)
	{
		fputs("token: ", stderr);
		fflush(stderr);
		if (tcgetattr(STDIN_FILENO, &old) == 0)
		{
			quiet = old;
			quiet.c_lflag &= ~(tcflag_t) ECHO;
			tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
		}
		else
			tty = false;
	}
	n = getline(&line, &cap, stdin);
	if (tty)
	{
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
		fputc('\n', stderr);
	}
	if (n <= 0 || n > TOKEN_MAX)
	{
		free(line);
		return NULL;
	}
	return line;
}

int
cmd_login(int argc, char **argv)
{
	static const struct option opts[] = {{"url", required_argument, NULL, 'u'},
										 {"no-check", no_argument, NULL, 'n'},
										 {"help", no_argument, NULL, 'h'},
										 {NULL, 0, NULL, 0}};
	_cleanup_(freep) char	  *dir = config_dir();
	_cleanup_(freep) char	  *path = config_path();
	_cleanup_(freep) char	  *line = NULL;
	_cleanup_(freep) char	  *text = NULL;
	char					  *url = NULL;
	bool					   check = true;
	struct stat				   st;
	_cleanup_(closep) int	   dfd = -1;
	Answer					   a;
	int						   o, r;

	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1)
		switch (o)
		{
			case 'u':
				free(url);
				if ((url = url_clean(optarg)) == NULL)
					return cli_err(EXIT_USAGE, "--url must be an http:// or https:// URL");
				break;
			case 'n':
				check = false;
				break;
			case 'h':
				return usage("login", true);
			default:
				return usage("login", false);
		}
	if (optind != argc)
		return usage("login", false);
	if (path == NULL)
		return cli_err(EXIT_ERROR, "neither XDG_CONFIG_HOME nor HOME is an absolute path");
	if (url)
	{
		free(cli_cfg.url);
		cli_cfg.url = url;
	}
	if ((line = read_token()) == NULL)
		return cli_err(EXIT_USAGE, "no token on standard input");
	free(cli_cfg.token);
	cli_cfg.token = strdup(trim(line));
	explicit_bzero(line, strlen(line));
	if (cli_cfg.token[0] == '\0')
		return cli_err(EXIT_USAGE, "empty token");
	if (check && (r = api_call("GET", "/v1/sessions?limit=1", NULL, NULL, &a)) != EXIT_OK)
		return r;
	if (check)
		answer_free(&a);
	if (mkdir(dir, 0700) < 0 && errno == ENOENT)
	{
		_cleanup_(freep) char *parent = strdup(dir);

		*strrchr(parent, '/') = '\0';
		if (mkdir(parent, 0700) < 0 && errno != EEXIST)
			return cli_err(EXIT_ERROR, "%s: %m", parent);
		if (mkdir(dir, 0700) < 0 && errno != EEXIST)
			return cli_err(EXIT_ERROR, "%s: %m", dir);
	}
	/*
	 * The file is written beside itself under a name others can guess: in
	 * a directory another user may write to, they could create that name
	 * first and read the token as it is written.  The directory checked is
	 * the one written to (by its descriptor), even if it is renamed.
	 */
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || fstat(dfd, &st) < 0)
		return cli_err(EXIT_ERROR, "%s: %m", dir);
	if (st.st_uid != geteuid() || (st.st_mode & 022))
		return cli_err(EXIT_ERROR,
					   "%s: not a directory of yours that only you may write to (mode %03o); "
					   "the token is not stored there",
					   dir, st.st_mode & 0777);
	text = xasprintf("# nadi login\nurl = %s\ntoken = %s\n", cli_cfg.url, cli_cfg.token);
	r = write_file_atomic(dfd, "config", text, strlen(text), 0600);
	explicit_bzero(text, strlen(text));
	if (r < 0)
		return cli_err(EXIT_ERROR, "%s: %s", path, strerror(-r));
	fprintf(stderr, "%s: logged in to %s (%s)\n", cli_prog, cli_cfg.url, path);
	return EXIT_OK;
}

int
cmd_logout(int argc, char **argv)
{
	_cleanup_(freep) char *path = config_path();

	if (wants_help(argc, argv))
		return usage("logout", true);
	if (argc != 1)
		return usage("logout", false);
	if (path && unlink(path) < 0 && errno != ENOENT)
		return cli_err(EXIT_ERROR, "%s: %m", path);
	return EXIT_OK;
}
