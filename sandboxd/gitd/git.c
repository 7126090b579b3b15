/*
 * git.c — running git as a subprocess: a sanitised environment (no GIT_*
 * variables from the daemon's own environment, no terminal prompts, the C
 * locale so that messages are stable), its own session and process group
 * (so that a timeout or a shutdown kills git and every helper it started),
 * stdin from /dev/null, stdout kept up to a bound and the tail of stderr
 * kept for error reports.  Any thread may call git_run.
 */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include "gitd.h"

extern char **environ;

#define MAX_ARGS 32
#define KILL_GRACE_MS 3000 /* after SIGTERM on shutdown, before SIGKILL */

static pthread_mutex_t kids_lock = PTHREAD_MUTEX_INITIALIZER;
static pid_t		  *kids;
static size_t		   n_kids, cap_kids;
static bool			   no_more;

static pthread_once_t env_once = PTHREAD_ONCE_INIT;
static char			**git_env;

/* What git may see of the daemon's environment: how to reach the network and where home is. */
static void
build_env(void)
{
	static const char *keep[] = {
		"PATH",			 "HOME",	   "USER",		  "LOGNAME",	   "TMPDIR",	  "TZ",
		"SSH_AUTH_SOCK", "http_proxy", "https_proxy", "no_proxy",	   "all_proxy",	  "HTTP_PROXY",
		"HTTPS_PROXY",	 "NO_PROXY",   "ALL_PROXY",	  "SSL_CERT_FILE", "SSL_CERT_DIR"};
	static const char *set[] = {"LC_ALL=C", "LANG=C", "GIT_TERMINAL_PROMPT=0",
								"GIT_ASKPASS=/bin/false", "SSH_ASKPASS=/bin/false"};
	size_t			   n = 0;

	git_env = calloc(ARRAY_SIZE(keep) + ARRAY_SIZE(set) + 2, sizeof *git_env);
	if (!git_env)
		return;
	for (size_t i = 0; i < ARRAY_SIZE(keep); i++)
	{
		const char *v = getenv(keep[i]);
		if (v)
			git_env[n++] = xasprintf("%s=%s", keep[i], v);
	}
	if (!getenv("PATH"))
		git_env[n++] = strdup("PATH=/usr/local/bin:/usr/bin:/bin");
	for (size_t i = 0; i < ARRAY_SIZE(set); i++)
		git_env[n++] = strdup(set[i]);
	/* a failed strdup leaves a NULL: the list ends early, which is safe */
}

static void
kids_remove(pid_t pid)
{
	pthread_mutex_lock(&kids_lock);
	for (size_t i = 0; i < n_kids; i++)
		if (kids[i] == pid)
		{
			kids[i] = kids[--n_kids];
			break;
		}
	pthread_mutex_unlock(&kids_lock);
}

void
git_stop_all(int sig)
{
	pthread_mutex_lock(&kids_lock);
	no_more = true;
	for (size_t i = 0; i < n_kids; i++)
		kill(-kids[i], sig);
	pthread_mutex_unlock(&kids_lock);
}

/* Start git with stdout/stderr on the given pipe ends; registers the child. */
static int
spawn(char **argv, int out_w, int err_w, pid_t *pid)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t		   at;
	sigset_t				   none, dfl;
	int						   r;

	sigemptyset(&none);
	sigemptyset(&dfl);
	sigaddset(&dfl, SIGPIPE);
	sigaddset(&dfl, SIGTERM);
	sigaddset(&dfl, SIGINT);
	sigaddset(&dfl, SIGHUP);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, out_w, STDOUT_FILENO);
	posix_spawn_file_actions_adddup2(&fa, err_w, STDERR_FILENO);
	posix_spawnattr_init(&at);
	posix_spawnattr_setflags(&at,
							 POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	posix_spawnattr_setsigmask(&at, &none);
	posix_spawnattr_setsigdefault(&at, &dfl);

	pthread_mutex_lock(&kids_lock);
	if (no_more)
		r = ECANCELED;
	else if (n_kids == cap_kids)
	{
		size_t cap = cap_kids ? cap_kids * 2 : 16;
		pid_t *n = realloc(kids, cap * sizeof *n);
		r = n ? 0 : ENOMEM;
		if (n)
		{
			kids = n;
			cap_kids = cap;
		}
	}
	else
		r = 0;
	if (r == 0)
	{
		r = posix_spawnp(pid, argv[0], &fa, &at, argv, git_env);
		if (r == 0)
			kids[n_kids++] = *pid;
	}
	pthread_mutex_unlock(&kids_lock);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&at);
	return -r;
}

/* Append to the stderr buffer, keeping only its last GITD_ERR_MAX bytes. */
static void
keep_tail(char *buf, size_t *len, const char *data, size_t n)
{
	if (n >= GITD_ERR_MAX)
	{
		memcpy(buf, data + n - GITD_ERR_MAX, GITD_ERR_MAX);
		*len = GITD_ERR_MAX;
		return;
	}
	if (*len + n > GITD_ERR_MAX)
	{
		size_t drop = *len + n - GITD_ERR_MAX;
		memmove(buf, buf + drop, *len - drop);
		*len -= drop;
	}
	memcpy(buf + *len, data, n);
	*len += n;
}

int
git_run(const char *const *args, uint64_t timeout_ms, size_t out_max, struct git_result *res)
{
	char	*argv[MAX_ARGS];
	size_t	 argc = 0;
	int		 out[2] = {-1, -1}, errp[2] = {-1, -1};
	char	 errbuf[GITD_ERR_MAX], chunk[8192];
	size_t	 err_len = 0;
	pid_t	 pid;
	int		 status, r;
	uint64_t deadline = now_ms() + timeout_ms, give_up = 0, hard_kill = 0;
	bool	 killed = false;

	memset(res, 0, sizeof *res);
	pthread_once(&env_once, build_env);
	if (!git_env)
		return -ENOMEM;
	argv[argc++] = cfg.git_path;
	/* Never run a command as a transport; local paths and file:// are what tests and operators use. */
	static const char *common[] = {"-c", "protocol.ext.allow=never",
								   "-c", "protocol.file.allow=always",
								   "-c", "core.hooksPath=/dev/null"};
	for (size_t i = 0; i < ARRAY_SIZE(common); i++)
		argv[argc++] = (char *) common[i];
	for (size_t i = 0; args[i]; i++)
	{
		if (argc + 1 >= MAX_ARGS)
			return -E2BIG;
		argv[argc++] = (char *) args[i];
	}
	argv[argc] = NULL;

	res->out = malloc(out_max + 1);
	if (!res->out)
		return -ENOMEM;
	if (pipe2(out, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0)
	{
		r = -errno;
		goto fail;
	}
	r = spawn(argv, out[1], errp[1], &pid);
	close(out[1]);
	close(errp[1]);
	out[1] = errp[1] = -1;
	if (r < 0)
		goto fail;

	struct pollfd pfd[2] = {{.fd = out[0], .events = POLLIN}, {.fd = errp[0], .events = POLLIN}};
	while (pfd[0].fd >= 0 || pfd[1].fd >= 0)
	{
		uint64_t now = now_ms();
		if (!killed && now >= deadline)
		{
			res->timed_out = true;
			killed = true;
			kill(-pid, SIGKILL);
			give_up = now + 2000;
		}
		else if (!killed && gitd_stopping)
		{
			res->cancelled = true;
			killed = true;
			kill(-pid, SIGTERM);
			hard_kill = now + KILL_GRACE_MS;
			give_up = hard_kill + 2000;
		}
		if (hard_kill && now >= hard_kill)
		{
			kill(-pid, SIGKILL);
			hard_kill = 0;
		}
		if (give_up && now >= give_up)
			break; /* a helper escaped the process group and holds the pipe */
		int wait_ms = 200;
		if (!killed && deadline - now < (uint64_t) wait_ms)
			wait_ms = (int) (deadline - now);
		if (poll(pfd, 2, wait_ms) < 0 && errno != EINTR)
		{
			kill(-pid, SIGKILL);
			break;
		}
		for (int i = 0; i < 2; i++)
		{
			if (pfd[i].fd < 0 || !(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			ssize_t n = read(pfd[i].fd, chunk, sizeof chunk);
			if (n < 0 && (errno == EINTR || errno == EAGAIN))
				continue;
			if (n <= 0)
			{
				pfd[i].fd = -1;
				continue;
			}
			if (i == 1)
			{
				keep_tail(errbuf, &err_len, chunk, (size_t) n);
				continue;
			}
			for (const char *c = chunk; (c = memchr(c, '\n', (size_t) (chunk + n - c))); c++)
				res->out_lines++;
			if (res->out_len < out_max)
			{
				size_t k = MIN((size_t) n, out_max - res->out_len);
				memcpy(res->out + res->out_len, chunk, k);
				res->out_len += k;
			}
		}
	}
	close(out[0]);
	close(errp[0]);
	out[0] = errp[0] = -1;
	if (killed)
		kill(-pid, SIGKILL);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	kids_remove(pid);
	res->out[res->out_len] = '\0';
	if (WIFEXITED(status))
		res->exit_status = WEXITSTATUS(status);
	else
	{
		res->exit_status = -1;
		res->signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
	}
	/* Killed by git_stop_all before this loop saw the flag: still a cancellation. */
	if (gitd_stopping && (res->exit_status != 0 || killed))
		res->cancelled = true;
	res->err = text_clean(errbuf, err_len);
	if (!res->err)
		res->err = strdup("");
	return 0;

fail:
	for (int i = 0; i < 2; i++)
	{
		if (out[i] >= 0)
			close(out[i]);
		if (errp[i] >= 0)
			close(errp[i]);
	}
	free(res->out);
	res->out = NULL;
	return r;
}

void
git_result_done(struct git_result *res)
{
	free(res->out);
	free(res->err);
	res->out = res->err = NULL;
}
