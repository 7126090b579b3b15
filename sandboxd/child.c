/*
 * child.c — helper processes run from the event loop (see child.h).  No
 * daemon descriptor (listening sockets, the Postgres connection, container
 * pipes) and no daemon environment variable reaches a helper.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/pidfd.h>
#include <sys/wait.h>

#include "child.h"
#include "sbx.h"

char *const child_env[] = {
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"LANG=C.UTF-8",
	"SYSTEMD_LOG_LEVEL=warning",
	NULL,
};

struct child
{
	pid_t		  pid;
	int			  pidfd, errfd;
	EvIo		  pid_io, err_io;
	char		  err[4096];
	size_t		  err_len;
	child_done_cb cb;
	void		 *ud;
	struct child *next;
};

static struct child *children;

unsigned
child_count(void)
{
	unsigned n = 0;

	for (struct child *c = children; c; c = c->next)
		n++;
	return n;
}

static _Noreturn void
exec_child(const char *const argv[], int out_fd, int err_fd)
{
	sigset_t none;
	int		 null = open("/dev/null", O_RDWR | O_CLOEXEC);

	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_DFL);
	setsid();
	if (null < 0 || dup2(null, 0) < 0 || dup2(out_fd >= 0 ? out_fd : null, 1) < 0 ||
		dup2(err_fd, 2) < 0)
		_exit(126);
	close_range(3, ~0U, 0);
	execve(argv[0], (char *const *) argv, child_env);
	dprintf(2, "cannot execute %s: %m\n", argv[0]);
	_exit(127);
}

static void
read_err(struct child *c)
{
	for (;;)
	{
		char	tmp[1024];
		ssize_t n = read(c->errfd, tmp, sizeof tmp);
		if (n <= 0)
			return;
		size_t room = sizeof c->err - 1 - c->err_len;
		size_t take = MIN((size_t) n, room);
		memcpy(c->err + c->err_len, tmp, take);
		c->err_len += take;
		c->err[c->err_len] = '\0';
	}
}

static void
on_err(EvIo *io, uint32_t revents)
{
	struct child *c = io->data;

	read_err(c);
	if (revents & (EPOLLHUP | EPOLLERR))
		ev_io_stop(&c->err_io);
}

static void
on_exit_(EvIo *io, uint32_t revents)
{
	struct child *c = io->data;
	siginfo_t	  si = {0};
	int			  status = 0;
	(void) revents;

	if (waitid(P_PIDFD, (id_t) c->pidfd, &si, WEXITED | WNOHANG) < 0 || si.si_pid == 0)
		return;
	if (si.si_code == CLD_EXITED)
		status = W_EXITCODE(si.si_status, 0);
	else
		status = si.si_status & 0x7f;
	read_err(c);
	ev_io_stop(&c->pid_io);
	ev_io_stop(&c->err_io);
	close(c->pidfd);
	close(c->errfd);
	for (struct child **pp = &children; *pp; pp = &(*pp)->next)
		if (*pp == c)
		{
			*pp = c->next;
			break;
		}
	/* Trim the trailing newline so the text reads well in a log line or problem. */
	while (c->err_len > 0 && (c->err[c->err_len - 1] == '\n' || c->err[c->err_len - 1] == ' '))
		c->err[--c->err_len] = '\0';
	c->cb(c->ud, status, c->err);
	free(c);
}

int
child_spawn(const char *const argv[], int out_fd, child_done_cb cb, void *ud)
{
	struct child *c = calloc(1, sizeof *c);
	int			  p[2];
	int			  r;

	if (!c)
		return -ENOMEM;
	if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0)
	{
		r = -errno;
		free(c);
		return r;
	}
	c->pid = fork();
	if (c->pid < 0)
	{
		r = -errno;
		close(p[0]);
		close(p[1]);
		free(c);
		return r;
	}
	if (c->pid == 0)
	{
		fcntl(p[1], F_SETFL, 0);
		exec_child(argv, out_fd, p[1]);
	}
	close(p[1]);
	c->errfd = p[0];
	c->pidfd = pidfd_open(c->pid, 0);
	if (c->pidfd < 0)
	{
		r = -errno;
		kill(c->pid, SIGKILL);
		waitpid(c->pid, NULL, 0);
		close(c->errfd);
		free(c);
		return r;
	}
	fcntl(c->pidfd, F_SETFD, FD_CLOEXEC);
	c->cb = cb;
	c->ud = ud;
	ev_io_start(&c->err_io, c->errfd, EPOLLIN, on_err, c);
	ev_io_start(&c->pid_io, c->pidfd, EPOLLIN, on_exit_, c);
	c->next = children;
	children = c;
	log_debug("started %s (pid %d)", argv[0], (int) c->pid);
	return 0;
}

int
child_run_sync(const char *const argv[], char *err, size_t errlen)
{
	int	   p[2], status;
	size_t len = 0;
	pid_t  pid;

	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0)
	{
		int r = -errno;
		close(p[0]);
		close(p[1]);
		return r;
	}
	if (pid == 0)
		exec_child(argv, -1, p[1]);
	close(p[1]);
	for (;;)
	{
		char	tmp[512];
		ssize_t n = read(p[0], tmp, sizeof tmp);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (err && errlen > 1)
		{
			size_t take = MIN((size_t) n, errlen - 1 - len);
			memcpy(err + len, tmp, take);
			len += take;
		}
	}
	close(p[0]);
	if (err && errlen)
		err[len] = '\0';
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return status;
}

void
child_kill_all(void)
{
	for (struct child *c = children; c; c = c->next)
		kill(c->pid, SIGKILL);
}
