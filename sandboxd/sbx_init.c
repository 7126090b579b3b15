/*
 * sbx_init.c — nadi-sbx-init, PID 1 inside every sandbox container.  It is
 * started by systemd-nspawn (so it lives under nspawn's namespaces, dropped
 * capabilities and seccomp filter), reads one request at a time from stdin,
 * runs the command with the call's limits as the sandbox user, and writes the
 * result to stdout.  Being PID 1 of the container's PID namespace it reaps
 * every orphan, and after each call it kills whatever the call left behind,
 * so no process outlives the call that started it.  EOF on stdin means the
 * daemon wants the container gone (or died): kill everything and exit.
 * Where no memory cgroup holds the container (rlimit mode, the request
 * carries a memory limit), it also watches a call's resident memory and
 * kills the call past the limit (PF_OOM_KILLED).
 *
 * With --proxy-relay it also runs the sandbox's one way out: a thread that
 * listens on 127.0.0.1:3128 and relays each connection to the credentials
 * proxy's unix socket bound at /.nadi/proxy.  A thread of PID 1, not a
 * child, so that kill(-1) after each call spares it, no tool process can
 * signal or trace it, and it dies with the container.
 *
 * Built statically so that it runs in any image, busybox included.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/resource.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "proto.h"

#define GRACE_MS 100   /* after the command exits, wait this long for its output */
#define MEMWATCH_MS 10 /* rlimit mode: how often the call's memory is looked at */

struct request
{
	char	  **argv;
	size_t		argc;
	char	  **env;
	size_t		envc;
	const char *in;
	size_t		in_len;
	char	   *cwd;
	uint64_t	timeout_ms, out_limit, fsize, as, nproc, uid, gid;
	uint64_t	stream_ms, stream_max; /* partial frames (proto.h); 0: none */
};

struct stream
{
	int	   fd;
	char  *buf;
	size_t len;
	int	   truncated;
	size_t sent; /* bytes of buf already sent in partial frames */
};

/* Partial output while the command runs (PT_STREAM_MS): when it was last sent, how much. */
struct partial
{
	uint64_t last_ms, bytes;
	int		 cut; /* PT_STREAM_MAX reached: nothing more is sent */
};

enum
{
	STAGE_CHDIR = 1,
	STAGE_LIMITS,
	STAGE_USER,
	STAGE_EXEC
};
struct exec_report
{
	int stage;
	int err;
};

static int	sigfd = -1;
static long peak_rss_kb; /* largest ru_maxrss of the call's processes reaped so far */

static uint64_t
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

static uint64_t
mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}

/* 1: got n bytes; 0: clean EOF before the first byte; -1: error or short read. */
static int
read_full(int fd, void *buf, size_t n)
{
	size_t got = 0;

	while (got < n)
	{
		ssize_t k = read(fd, (char *) buf + got, n - got);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return (k == 0 && got == 0) ? 0 : -1;
		got += (size_t) k;
	}
	return 1;
}

static int
write_full(int fd, const void *buf, size_t n)
{
	const char *p = buf;

	while (n > 0)
	{
		ssize_t k = write(fd, p, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -1;
		p += k;
		n -= (size_t) k;
	}
	return 0;
}

/* waitpid(-1) that remembers the largest peak RSS of what it reaps. */
static pid_t
reap_one(int *status, int options)
{
	struct rusage ru;
	pid_t		  p = wait4(-1, status, options, &ru);

	if (p > 0 && ru.ru_maxrss > peak_rss_kb)
		peak_rss_kb = ru.ru_maxrss;
	return p;
}

/*
 * Resident memory of every process of the container but this init, in
 * bytes (/proc lists the container's PID namespace only).
 */
static uint64_t
rss_total(void)
{
	static long	   page;
	uint64_t	   sum = 0;
	DIR			  *d = opendir("/proc");
	struct dirent *de;

	if (!page)
		page = sysconf(_SC_PAGESIZE);
	if (!d)
		return 0;
	while ((de = readdir(d)))
	{
		char		  path[64], buf[128];
		unsigned long size, resident;
		long		  pid = strtol(de->d_name, NULL, 10);
		int			  fd;
		ssize_t		  n;

		if (pid <= 1)
			continue;
		snprintf(path, sizeof path, "/proc/%ld/statm", pid);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		n = read(fd, buf, sizeof buf - 1);
		close(fd);
		if (n <= 0)
			continue;
		buf[n] = '\0';
		if (sscanf(buf, "%lu %lu", &size, &resident) == 2)
			sum += (uint64_t) resident * (uint64_t) page;
	}
	closedir(d);
	return sum;
}

/*
 * Kill every process in the container except ourselves and reap them all.
 * kill(-1) from PID 1 reaches the whole PID namespace; it is repeated until
 * nothing is left so that processes forked while we were killing die too.
 */
static void
kill_all(pid_t main_pid, int *status, int *exited)
{
	for (;;)
	{
		pid_t p;
		int	  st;

		kill(-1, SIGKILL);
		p = reap_one(&st, 0);
		if (p < 0)
		{
			if (errno == EINTR)
				continue;
			break; /* ECHILD: the namespace is empty */
		}
		if (p == main_pid && !*exited)
		{
			*status = st;
			*exited = 1;
		}
	}
}

static void
reap(pid_t main_pid, int *status, int *exited)
{
	struct signalfd_siginfo si;
	pid_t					p;
	int						st;

	while (read(sigfd, &si, sizeof si) == sizeof si)
		;
	while ((p = reap_one(&st, WNOHANG)) > 0)
		if (p == main_pid && !*exited)
		{
			*status = st;
			*exited = 1;
		}
}

static _Noreturn void
child_fail(int fd, int stage)
{
	struct exec_report r = {stage, errno};

	(void) !write(fd, &r, sizeof r);
	_exit(127);
}

/* Capabilities root keeps inside the sandbox: file ownership and identity, nothing that reaches the kernel. */
#define KEEP_CAPS \
	((1u << 0) /* CHOWN */ | (1u << 1) /* DAC_OVERRIDE */ | (1u << 2) /* DAC_READ_SEARCH */ | \
	 (1u << 3) /* FOWNER */ | (1u << 4) /* FSETID */ | (1u << 5) /* KILL */ | \
	 (1u << 6) /* SETGID */ | (1u << 7) /* SETUID */ | (1u << 10) /* NET_BIND_SERVICE */)

static void
drop_bounding_caps(uint32_t keep)
{
	for (int c = 0; c <= 63; c++)
		if (c >= 32 || !(keep & (1u << c)))
			prctl(PR_CAPBSET_DROP, c, 0, 0, 0);
}

/*
 * Once set up, the init itself keeps only what it needs to run commands
 * (switch user, kill, drop the bounding set of root commands).
 */
static int
drop_own_caps(void)
{
	struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct	d[2];
	uint32_t						keep = KEEP_CAPS | (1u << 8) /* SETPCAP */;

	drop_bounding_caps(keep);
	if (syscall(SYS_capget, &h, d) < 0)
		return -1;
	d[0].effective &= keep;
	d[0].permitted &= keep;
	d[0].inheritable = 0;
	d[1].effective = d[1].permitted = d[1].inheritable = 0;
	return (int) syscall(SYS_capset, &h, d);
}

static _Noreturn void
child(const struct request *q, int in_fd, int out_fd, int err_fd, int report_fd)
{
	sigset_t	  none;
	struct rlimit rl;
	int			  fd;

	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	setsid();
	if (dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0)
		child_fail(report_fd, STAGE_EXEC);
	umask(022);

	/* The command, not this init, is what the OOM killer should pick. */
	fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
	if (fd >= 0)
	{
		(void) !write(fd, "1000", 4);
		close(fd);
	}
	rl.rlim_cur = rl.rlim_max = q->fsize ? q->fsize : RLIM_INFINITY;
	if (setrlimit(RLIMIT_FSIZE, &rl) < 0)
		child_fail(report_fd, STAGE_LIMITS);
	rl.rlim_cur = rl.rlim_max = 0;
	setrlimit(RLIMIT_CORE, &rl);
	if (q->as)
	{
		/*
		 * rlimit mode: the call's memory_max is enforced by run()'s watch
		 * on its total RSS; RLIMIT_AS at twice that is the backstop per
		 * process (an allocation past it is refused, not killed).
		 */
		rl.rlim_cur = rl.rlim_max = q->as > UINT64_MAX / 2 ? RLIM_INFINITY : 2 * q->as;
		if (setrlimit(RLIMIT_AS, &rl) < 0)
			child_fail(report_fd, STAGE_LIMITS);
	}
	if (q->nproc)
	{
		rl.rlim_cur = rl.rlim_max = q->nproc;
		if (setrlimit(RLIMIT_NPROC, &rl) < 0)
			child_fail(report_fd, STAGE_LIMITS);
	}

	if (q->uid != 0 || q->gid != 0)
	{
		if (setgroups(0, NULL) < 0 ||
			setresgid((gid_t) q->gid, (gid_t) q->gid, (gid_t) q->gid) < 0 ||
			setresuid((uid_t) q->uid, (uid_t) q->uid, (uid_t) q->uid) < 0)
			child_fail(report_fd, STAGE_USER);
	}
	else
		drop_bounding_caps(KEEP_CAPS);
	prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	/* As the sandbox user, so that its permissions apply. */
	if (chdir(q->cwd) < 0)
		child_fail(report_fd, STAGE_CHDIR);

	clearenv();
	for (size_t i = 0; i < q->envc; i++)
		putenv(q->env[i]);
	execvp(q->argv[0], q->argv);
	child_fail(report_fd, STAGE_EXEC);
}

static void
stream_read(struct stream *s, uint64_t limit)
{
	char tmp[65536];

	for (;;)
	{
		ssize_t n = read(s->fd, tmp, sizeof tmp);
		if (n < 0)
		{
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return;
			n = 0;
		}
		if (n == 0)
		{
			close(s->fd);
			s->fd = -1;
			return;
		}
		size_t room = limit > s->len ? (size_t) (limit - s->len) : 0;
		size_t take = (size_t) n < room ? (size_t) n : room;
		if (take)
		{
			char *nb = realloc(s->buf, s->len + take);
			if (!nb)
				take = 0;
			else
			{
				s->buf = nb;
				memcpy(s->buf + s->len, tmp, take);
				s->len += take;
			}
		}
		if (take < (size_t) n)
		{
			/* Over the limit: stop reading, the writer gets EPIPE/SIGPIPE. */
			s->truncated = 1;
			close(s->fd);
			s->fd = -1;
			return;
		}
	}
}

/* Bytes of p[0..n) that end on a UTF-8 character boundary (an incomplete tail waits). */
static size_t
utf8_whole(const char *p, size_t n)
{
	for (size_t back = 1; back <= 3 && back <= n; back++)
	{
		unsigned char c = (unsigned char) p[n - back];
		size_t		  need = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 0;

		if ((c & 0xc0) == 0x80)
			continue; /* a continuation byte: look further back */
		return need > back ? n - back : n;
	}
	return n;
}

/* Add s's unsent bytes, as far as the budget goes, to a partial frame. */
static void
partial_add(struct pbuf *b, struct partial *pt, const struct request *q, struct stream *s,
			uint16_t tag, uint16_t off_tag)
{
	size_t avail = s->len - s->sent, take;

	if (avail == 0 || pt->cut)
		return;
	take = s->fd >= 0 ? utf8_whole(s->buf + s->sent, avail) : avail;
	if (pt->bytes + take > q->stream_max)
	{
		take = utf8_whole(s->buf + s->sent, (size_t) (q->stream_max - pt->bytes));
		pt->cut = 1;
	}
	if (take == 0)
		return;
	pbuf_add(b, tag, s->buf + s->sent, take);
	pbuf_add_u64(b, off_tag, s->sent);
	s->sent += take;
	pt->bytes += take;
}

/* Send the new output as one partial frame (see proto.h). */
static void
partial_send(const struct request *q, struct partial *pt, struct stream *so, struct stream *se)
{
	struct pbuf b = {0};

	pt->last_ms = mono_ms();
	pbuf_begin(&b);
	pbuf_add_u64(&b, PT_PARTIAL, 0);
	partial_add(&b, pt, q, so, PT_STDOUT, PT_STDOUT_OFFSET);
	partial_add(&b, pt, q, se, PT_STDERR, PT_STDERR_OFFSET);
	if (pt->cut)
		pbuf_add_u64(&b, PT_FLAGS, PF_STREAM_CUT);
	if (pbuf_finish(&b) == 0)
		(void) write_full(1, b.data, b.len);
	pbuf_free(&b);
}

/*
 * Is a partial frame due now?  With unsent output and none sent for
 * stream_ms; otherwise *until is brought forward to when one may be.
 */
static int
partial_due(const struct request *q, const struct partial *pt, const struct stream *so,
			const struct stream *se, uint64_t now, uint64_t *until)
{
	uint64_t at;

	if (!q->stream_ms || pt->cut || (so->len == so->sent && se->len == se->sent))
		return 0;
	at = pt->last_ms + q->stream_ms;
	if (now >= at)
		return 1;
	if (at < *until)
		*until = at;
	return 0;
}

static void
run(const struct request *q, struct pbuf *out)
{
	int				   in[2] = {-1, -1}, o[2] = {-1, -1}, e[2] = {-1, -1}, rp[2] = {-1, -1};
	struct stream	   so = {-1, NULL, 0, 0, 0}, se = {-1, NULL, 0, 0, 0};
	struct partial	   part = {0, 0, 0};
	struct exec_report report = {0, 0};
	uint64_t		   t0 = mono_us(), deadline, grace = 0, flags = 0, next_watch = 0;
	size_t			   in_off = 0;
	int				   status = 0, exited = 0, timed_out = 0, oom = 0, rp_fd;
	pid_t			   pid;

	reap(0, &status, &exited); /* drain stale SIGCHLD notifications */
	exited = 0;
	peak_rss_kb = 0;
	if (pipe2(in, O_CLOEXEC) < 0 || pipe2(o, O_CLOEXEC) < 0 || pipe2(e, O_CLOEXEC) < 0 ||
		pipe2(rp, O_CLOEXEC) < 0)
	{
		pbuf_add_str(out, PT_ERROR, "cannot create pipes");
		pbuf_add_u64(out, PT_FLAGS, PF_EXEC_FAILED);
		goto close_all;
	}
	pid = fork();
	if (pid < 0)
	{
		pbuf_add_str(out, PT_ERROR, "cannot fork");
		pbuf_add_u64(out, PT_FLAGS, PF_EXEC_FAILED);
		goto close_all;
	}
	if (pid == 0)
		child(q, in[0], o[1], e[1], rp[1]);

	close(in[0]);
	close(o[1]);
	close(e[1]);
	close(rp[1]);
	in[0] = o[1] = e[1] = rp[1] = -1;
	so.fd = o[0];
	se.fd = e[0];
	o[0] = e[0] = -1;
	rp_fd = rp[0];
	rp[0] = -1;
	fcntl(in[1], F_SETFL, O_NONBLOCK);
	fcntl(so.fd, F_SETFL, O_NONBLOCK);
	fcntl(se.fd, F_SETFL, O_NONBLOCK);
	if (q->in_len == 0)
	{
		close(in[1]);
		in[1] = -1;
	}
	deadline = t0 / 1000 + q->timeout_ms;

	for (;;)
	{
		struct pollfd pf[6];
		int			  n = 0, i_sig, i_ctl, i_in = -1, i_out = -1, i_err = -1, i_rp = -1;
		uint64_t	  now = mono_ms(), until;

		if (exited && so.fd < 0 && se.fd < 0 && rp_fd < 0)
			break;
		if (!exited && now >= deadline)
		{
			timed_out = 1;
			break;
		}
		if (exited && now >= grace)
			break;
		/* rlimit mode: no memory cgroup; watch the call's resident memory instead. */
		if (q->as && now >= next_watch)
		{
			next_watch = now + MEMWATCH_MS;
			if (rss_total() > q->as)
			{
				oom = 1;
				break;
			}
		}
		until = exited ? grace : deadline;
		if (q->as && until > next_watch)
			until = next_watch;
		if (partial_due(q, &part, &so, &se, now, &until))
		{
			partial_send(q, &part, &so, &se);
			continue;
		}

		pf[i_sig = n++] = (struct pollfd){sigfd, POLLIN, 0};
		pf[i_ctl = n++] = (struct pollfd){0, 0, 0}; /* POLLHUP: the daemon went away */
		if (in[1] >= 0)
			pf[i_in = n++] = (struct pollfd){in[1], POLLOUT, 0};
		if (so.fd >= 0)
			pf[i_out = n++] = (struct pollfd){so.fd, POLLIN, 0};
		if (se.fd >= 0)
			pf[i_err = n++] = (struct pollfd){se.fd, POLLIN, 0};
		if (rp_fd >= 0)
			pf[i_rp = n++] = (struct pollfd){rp_fd, POLLIN, 0};
		if (poll(pf, (nfds_t) n, (int) (until - now)) < 0)
		{
			if (errno == EINTR)
				continue;
			break;
		}
		if (pf[i_ctl].revents & (POLLHUP | POLLERR))
		{
			kill_all(pid, &status, &exited);
			_exit(0);
		}
		if (pf[i_sig].revents)
			reap(pid, &status, &exited);
		if (exited && grace == 0)
			grace = mono_ms() + GRACE_MS;
		if (i_in >= 0 && pf[i_in].revents)
		{
			ssize_t k = write(in[1], q->in + in_off, q->in_len - in_off);
			if (k > 0)
				in_off += (size_t) k;
			if ((k < 0 && errno != EAGAIN && errno != EINTR) || in_off == q->in_len)
			{
				close(in[1]);
				in[1] = -1;
			}
		}
		if (i_out >= 0 && pf[i_out].revents)
			stream_read(&so, q->out_limit);
		if (i_err >= 0 && pf[i_err].revents)
			stream_read(&se, q->out_limit);
		if (i_rp >= 0 && pf[i_rp].revents)
		{
			ssize_t k = read(rp_fd, &report, sizeof report);
			if (k != sizeof report)
				report.stage = 0;
			close(rp_fd);
			rp_fd = -1;
		}
	}

	kill_all(pid, &status, &exited);
	/* Whatever the killed processes wrote before dying is still in the pipes. */
	if (so.fd >= 0)
		stream_read(&so, q->out_limit);
	if (se.fd >= 0)
		stream_read(&se, q->out_limit);
	/* The rest of the partial output, so that the partial frames add up to the output. */
	if (q->stream_ms && !part.cut && (so.len > so.sent || se.len > se.sent))
	{
		/* Every writer is gone: the tails are complete, an incomplete character included. */
		for (struct stream *s = &so; s; s = s == &so ? &se : NULL)
			if (s->fd >= 0)
			{
				close(s->fd);
				s->fd = -1;
			}
		partial_send(q, &part, &so, &se);
	}
	if (rp_fd >= 0)
	{
		if (read(rp_fd, &report, sizeof report) != sizeof report)
			report.stage = 0;
		close(rp_fd);
	}

	if (report.stage)
	{
		static const char *what[] = {"", "chdir to", "set limits for", "switch user for",
									 "execute"};
		char			   msg[512];
		snprintf(msg, sizeof msg, "cannot %s %s: %s", what[report.stage],
				 report.stage == STAGE_CHDIR ? q->cwd : q->argv[0], strerror(report.err));
		pbuf_add_str(out, PT_ERROR, msg);
		flags |= PF_EXEC_FAILED;
	}
	if (timed_out)
		flags |= PF_TIMED_OUT;
	/* Killed by the watch, or a process that went past memory_max before its allocation failed. */
	if (q->as && (oom || (uint64_t) peak_rss_kb * 1024 > q->as))
		flags |= PF_OOM_KILLED;
	if (so.truncated)
		flags |= PF_STDOUT_TRUNCATED;
	if (se.truncated)
		flags |= PF_STDERR_TRUNCATED;
	if (exited && WIFEXITED(status))
		pbuf_add_u64(out, PT_EXIT, (uint64_t) WEXITSTATUS(status));
	else if (exited && WIFSIGNALED(status))
		pbuf_add_u64(out, PT_SIGNAL, (uint64_t) WTERMSIG(status));
	pbuf_add(out, PT_STDOUT, so.buf, so.len);
	pbuf_add(out, PT_STDERR, se.buf, se.len);
	pbuf_add_u64(out, PT_FLAGS, flags);
	pbuf_add_u64(out, PT_DURATION_US, mono_us() - t0);

close_all:
{
	int *fds[] = {&in[0], &in[1], &o[0], &o[1], &e[0], &e[1], &rp[0], &rp[1], &so.fd, &se.fd};
	for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
		if (*fds[i] >= 0)
		{
			close(*fds[i]);
			*fds[i] = -1;
		}
}
	free(so.buf);
	free(se.buf);
}

/* ---- the egress relay ------------------------------------------------------ */

#define RELAY_BUF 16384

/* Bytes read from fd[i], waiting to be written to fd[1 - i]. */
struct relay_half
{
	size_t off, len;
	int	   eof;	 /* fd[i] said EOF */
	int	   shut; /* ... and fd[1 - i] got shutdown(SHUT_WR) */
	char   buf[RELAY_BUF];
};

struct relay_conn
{
	int				  fd[2]; /* 0: the client in the container, 1: the proxy's socket */
	struct relay_half h[2];
};

static void
relay_close(struct relay_conn **slot)
{
	close((*slot)->fd[0]);
	close((*slot)->fd[1]);
	free(*slot);
	*slot = NULL;
}

/* A new client: connect it to the proxy's socket, or hang up at once. */
static void
relay_accept(int lfd, struct relay_conn **conns)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct relay_conn *c;
	size_t			   i;
	int				   cfd, ufd;

	cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (cfd < 0)
		return;
	for (i = 0; i < SBX_PROXY_MAX_CONNS && conns[i]; i++)
		;
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s/%s", SBX_PROXY_MOUNT, SBX_PROXY_SOCKET);
	ufd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	/* No socket (no proxy running), a refusal or a full backlog: the client sees a closed connection. */
	if (i == SBX_PROXY_MAX_CONNS || ufd < 0 ||
		connect(ufd, (struct sockaddr *) &sa, sizeof sa) < 0 || !(c = calloc(1, sizeof *c)))
	{
		if (ufd >= 0)
			close(ufd);
		close(cfd);
		return;
	}
	c->fd[0] = cfd;
	c->fd[1] = ufd;
	conns[i] = c;
}

/* Move what can be moved; returns -1 when the connection is finished or broken. */
static int
relay_pump(struct relay_conn *c)
{
	for (int i = 0; i < 2; i++)
	{
		struct relay_half *h = &c->h[i];
		int				   to = c->fd[1 - i];

		for (;;)
		{
			if (h->off < h->len)
			{
				ssize_t k = send(to, h->buf + h->off, h->len - h->off, MSG_NOSIGNAL | MSG_DONTWAIT);
				if (k < 0 && errno == EINTR)
					continue;
				if (k < 0 && errno == EAGAIN)
					break;
				if (k < 0)
					return -1;
				h->off += (size_t) k;
				continue;
			}
			h->off = h->len = 0;
			if (h->eof)
				break;
			ssize_t n = recv(c->fd[i], h->buf, sizeof h->buf, MSG_DONTWAIT);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && errno == EAGAIN)
				break;
			if (n < 0)
				return -1;
			if (n == 0)
			{
				h->eof = 1;
				break;
			}
			h->len = (size_t) n;
		}
		/* Half-close: pass the EOF on once everything before it is written. */
		if (h->eof && h->off == h->len && !h->shut)
		{
			shutdown(to, SHUT_WR);
			h->shut = 1;
		}
	}
	return c->h[0].shut && c->h[1].shut ? -1 : 0;
}

static void *
relay_main(void *arg)
{
	static struct relay_conn *conns[SBX_PROXY_MAX_CONNS];
	int						  lfd = (int) (intptr_t) arg;

	for (;;)
	{
		struct pollfd pf[1 + 2 * SBX_PROXY_MAX_CONNS];
		size_t		  n = 0, used = 0;

		for (size_t i = 0; i < SBX_PROXY_MAX_CONNS; i++)
		{
			struct relay_conn *c = conns[i];
			for (int k = 0; k < 2; k++)
			{
				short ev = 0;
				if (c && !c->h[k].eof && c->h[k].len == 0)
					ev |= POLLIN;
				if (c && c->h[1 - k].off < c->h[1 - k].len)
					ev |= POLLOUT;
				/* A negative fd is skipped: no POLLHUP spinning on a side we do not wait for. */
				pf[1 + 2 * i + (size_t) k] = (struct pollfd){ev ? c->fd[k] : -1, ev, 0};
			}
			used += c != NULL;
		}
		/* At the limit, further clients wait in the listen backlog. */
		pf[0] = (struct pollfd){used < SBX_PROXY_MAX_CONNS ? lfd : -1, POLLIN, 0};
		n = 1 + 2 * SBX_PROXY_MAX_CONNS;
		if (poll(pf, (nfds_t) n, -1) < 0)
		{
			if (errno == EINTR)
				continue;
			perror("nadi-sbx-init: relay: poll");
			return NULL;
		}
		for (size_t i = 0; i < SBX_PROXY_MAX_CONNS; i++)
			if (conns[i] && (pf[1 + 2 * i].revents || pf[2 + 2 * i].revents) &&
				relay_pump(conns[i]) < 0)
				relay_close(&conns[i]);
		if (pf[0].revents & POLLIN)
			relay_accept(lfd, conns);
	}
}

/* lo is up under nspawn --private-network; say so plainly if it is not. */
static void
loopback_up(void)
{
	struct ifreq ifr = {0};
	int			 fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return;
	snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "lo");
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) == 0 && !(ifr.ifr_flags & IFF_UP))
	{
		ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
		if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0)
			perror("nadi-sbx-init: relay: the loopback interface is down and cannot be brought up "
				   "(needs CAP_NET_ADMIN)");
	}
	close(fd);
}

/* Listen on 127.0.0.1:SBX_PROXY_PORT and start the relay thread (signals stay blocked in it). */
static void
relay_start(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET,
							 .sin_port = htons(SBX_PROXY_PORT),
							 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct stat		   st;
	pthread_t		   t;
	int				   one = 1, fd;

	if (stat(SBX_PROXY_MOUNT, &st) < 0 || !S_ISDIR(st.st_mode))
	{
		fprintf(stderr, "nadi-sbx-init: relay: %s is not mounted; no way out of this sandbox\n",
				SBX_PROXY_MOUNT);
		return;
	}
	loopback_up();
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
		bind(fd, (struct sockaddr *) &sa, sizeof sa) < 0 || listen(fd, 128) < 0)
	{
		fprintf(stderr, "nadi-sbx-init: relay: cannot listen on 127.0.0.1:%d: %s\n", SBX_PROXY_PORT,
				strerror(errno));
		if (fd >= 0)
			close(fd);
		return;
	}
	if (pthread_create(&t, NULL, relay_main, (void *) (intptr_t) fd) != 0)
	{
		fprintf(stderr, "nadi-sbx-init: relay: cannot start its thread\n");
		close(fd);
		return;
	}
	pthread_detach(t);
}

/* Parse a request payload in place; strings are NUL-terminated copies. */
static int
parse_request(const char *payload, size_t len, struct request *q)
{
	struct preader r;
	uint16_t	   tag;
	const char	  *val;
	uint32_t	   vlen;
	int			   k;

	memset(q, 0, sizeof *q);
	q->timeout_ms = 30000;
	q->out_limit = 1 << 20;
	preader_init(&r, payload, len);
	while ((k = preader_next(&r, &tag, &val, &vlen)) > 0)
	{
		char	 *s = NULL;
		uint64_t *num = NULL;

		switch (tag)
		{
			case PT_ARGV:
			case PT_ENV:
			case PT_CWD:
				if (memchr(val, '\0', vlen))
					return -EINVAL;
				s = strndup(val, vlen);
				if (!s)
					return -ENOMEM;
				break;
			case PT_STDIN:
				q->in = val;
				q->in_len = vlen;
				continue;
			case PT_TIMEOUT_MS:
				num = &q->timeout_ms;
				break;
			case PT_OUT_LIMIT:
				num = &q->out_limit;
				break;
			case PT_FSIZE:
				num = &q->fsize;
				break;
			case PT_AS:
				num = &q->as;
				break;
			case PT_NPROC:
				num = &q->nproc;
				break;
			case PT_UID:
				num = &q->uid;
				break;
			case PT_GID:
				num = &q->gid;
				break;
			case PT_STREAM_MS:
				num = &q->stream_ms;
				break;
			case PT_STREAM_MAX:
				num = &q->stream_max;
				break;
			default:
				continue;
		}
		if (num)
		{
			if (proto_u64(val, vlen, num) < 0)
				return -EBADMSG;
			continue;
		}
		if (tag == PT_CWD)
		{
			free(q->cwd);
			q->cwd = s;
			continue;
		}
		char ***vec = tag == PT_ARGV ? &q->argv : &q->env;
		size_t *cnt = tag == PT_ARGV ? &q->argc : &q->envc;
		if (*cnt >= PROTO_MAX_ARGS)
		{
			free(s);
			return -E2BIG;
		}
		char **nv = realloc(*vec, (*cnt + 2) * sizeof(char *));
		if (!nv)
		{
			free(s);
			return -ENOMEM;
		}
		nv[(*cnt)++] = s;
		nv[*cnt] = NULL;
		*vec = nv;
	}
	if (k < 0)
		return k;
	if (q->argc == 0)
		return -EINVAL;
	if (!q->cwd && !(q->cwd = strdup("/")))
		return -ENOMEM;
	return 0;
}

static void
free_request(struct request *q)
{
	for (size_t i = 0; i < q->argc; i++)
		free(q->argv[i]);
	for (size_t i = 0; i < q->envc; i++)
		free(q->env[i]);
	free(q->argv);
	free(q->env);
	free(q->cwd);
}

static int
send_frame(struct pbuf *b)
{
	if (pbuf_finish(b) < 0)
		return -1;
	return write_full(1, b->data, b->len);
}

int
main(int argc, char **argv)
{
	struct pbuf out = {0};
	sigset_t	all;
	int			status = 0, exited = 0, read_only_root = 0, proxy_relay = 0, own_workspace = 0;

	for (int i = 1; i < argc; i++)
	{
		if (strcmp(argv[i], "--read-only-root") == 0)
			read_only_root = 1;
		else if (strcmp(argv[i], "--workspace-mount") == 0)
			own_workspace = 1;
		else if (strcmp(argv[i], "--proxy-relay") == 0)
			proxy_relay = 1;
		else
			fprintf(stderr, "nadi-sbx-init: ignoring unknown argument %s\n", argv[i]);
	}
	/*
	 * --workspace-mount: with a user namespace the daemon cannot bind the
	 * workspace itself (its source lies below the idmapped root, and an
	 * idmapped mount cannot be idmapped again), so it is made a mount of
	 * its own here, a bind of the idmapped root's /workspace that keeps the
	 * mapping, and stays writable when / becomes read-only.
	 */
	if (own_workspace && mount("/workspace", "/workspace", NULL, MS_BIND, NULL) < 0)
	{
		perror("nadi-sbx-init: cannot bind /workspace");
		return 1;
	}
	/*
	 * With --read-only-root the root file system becomes read-only here,
	 * after nspawn set up its mounts: the workspace, /tmp, the proxy
	 * directory and the API file systems are mounts of their own and stay
	 * as they are.
	 */
	if (read_only_root &&
		mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) < 0)
	{
		perror("nadi-sbx-init: cannot make / read-only");
		return 1;
	}
	if (drop_own_caps() < 0)
	{
		perror("nadi-sbx-init: cannot drop capabilities");
		return 1;
	}
	/* Not dumpable: even a root command cannot open /proc/1/fd and forge replies. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	if (getpid() != 1)
		fprintf(stderr, "nadi-sbx-init: not PID 1; leftover processes may survive calls\n");
	sigfillset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	sigemptyset(&all);
	sigaddset(&all, SIGCHLD);
	sigfd = signalfd(-1, &all, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sigfd < 0)
	{
		perror("nadi-sbx-init: signalfd");
		return 1;
	}
	fcntl(0, F_SETFD, FD_CLOEXEC);
	fcntl(1, F_SETFD, FD_CLOEXEC);
	/* After every signal is blocked: the thread inherits the mask, SIGCHLD stays for the signalfd. */
	if (proxy_relay)
		relay_start();

	pbuf_begin(&out);
	pbuf_add_u64(&out, PT_HELLO, PROTO_VERSION);
	if (send_frame(&out) < 0)
		return 1;

	for (;;)
	{
		unsigned char  hdr[4];
		struct request q;
		uint32_t	   len;
		char		  *payload;
		int			   r = read_full(0, hdr, sizeof hdr);

		if (r <= 0)
			break;
		len = proto_get_u32(hdr);
		if (len > PROTO_MAX_FRAME)
		{
			fprintf(stderr, "nadi-sbx-init: frame of %u bytes refused\n", len);
			break;
		}
		payload = malloc(len ? len : 1);
		if (!payload || read_full(0, payload, len) != 1)
		{
			free(payload);
			break;
		}
		pbuf_begin(&out);
		r = parse_request(payload, len, &q);
		if (r < 0)
		{
			pbuf_add_str(&out, PT_ERROR, "malformed request");
			pbuf_add_u64(&out, PT_FLAGS, PF_EXEC_FAILED);
		}
		else
			run(&q, &out);
		free_request(&q);
		free(payload);
		if (send_frame(&out) < 0)
			break;
	}
	kill_all(0, &status, &exited);
	return 0;
}
