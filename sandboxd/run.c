/*
 * run.c — containers: start systemd-nspawn on a sandbox's snapshot with
 * nadi-sbx-init as PID 1, feed it calls one at a time over its stdin/stdout,
 * keep it warm until it has been idle for idle_timeout, stop it gracefully
 * (close its stdin) or by force (kill its control group and nspawn).  The
 * container's stderr (nspawn's and the init's messages, never a tool's
 * output) goes to the daemon log.  See sandbox.h for the state machine.
 */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/pidfd.h>
#include <sys/wait.h>

#include "child.h"
#include "limits.h"
#include "metrics.h"
#include "pool.h"
#include "sandbox.h"
#include "btrfs_store.h"
#include "unit.h"

#define STOP_GRACE_MS 3000 /* graceful stop → forced */
#define BACKSTOP_MS 5000   /* a call's timeout + this → the container is killed */
#define LOG_BUDGET 16384   /* container log bytes forwarded per start */

extern bool sbx_draining;
void		main_kick(void);

static unsigned n_running;

unsigned
run_count(void)
{
	return n_running;
}

unsigned
run_busy(void)
{
	unsigned n = 0;

	for (struct sbx_sandbox *sb = sandboxes; sb; sb = sb->next)
		n += (unsigned) sb->q_len + (sb->current ? 1 : 0);
	return n;
}

void
run_result_free(struct sbx_result *r)
{
	free(r->out);
	free(r->err);
	free(r->error);
	memset(r, 0, sizeof *r);
}

static void kick(struct sbx_sandbox *sb);
static void force_stop(struct sbx_sandbox *sb, const char *reason);

static void
call_finish(struct sbx_call *c, int err)
{
	pbuf_free(&c->frame);
	c->done(c, err);
}

static void
fail_queue(struct sbx_sandbox *sb, int err, const char *msg)
{
	while (sb->q_head)
	{
		struct sbx_call *c = sb->q_head;
		sb->q_head = c->next;
		sb->q_len--;
		snprintf(c->errmsg, sizeof c->errmsg, "%s", msg);
		call_finish(c, err);
	}
	sb->q_tail = NULL;
}

/* ---- container output ---------------------------------------------------- */

static void
log_container(struct sbx_sandbox *sb, const char *line)
{
	struct sbx_container *ct = &sb->ct;

	snprintf(ct->last_log, sizeof ct->last_log, "%s", line);
	if (ct->logged > LOG_BUDGET)
		return;
	ct->logged += strlen(line);
	/* nspawn's exit chatter is noise once we asked the container to go. */
	log_at(ct->state == CT_STOPPING ? LOG_LEVEL_DEBUG : LOG_LEVEL_INFO, "sandbox %s: %s", sb->id,
		   line);
	if (ct->logged > LOG_BUDGET)
		log_warning("sandbox %s: container log budget exhausted; further lines dropped", sb->id);
}

static void
on_log(EvIo *io, uint32_t revents)
{
	struct sbx_sandbox	 *sb = io->data;
	struct sbx_container *ct = &sb->ct;
	char				  buf[4096];
	(void) revents;

	while (ct->log_r >= 0 && ct->log_io.added)
	{
		ssize_t n = read(ct->log_r, buf, sizeof buf);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0)
		{
			if (ct->line_len)
			{
				ct->line[ct->line_len] = '\0';
				log_container(sb, ct->line);
				ct->line_len = 0;
			}
			ev_io_stop(&ct->log_io);
			return;
		}
		for (ssize_t i = 0; i < n; i++)
		{
			if (buf[i] == '\n' || ct->line_len == sizeof ct->line - 1)
			{
				ct->line[ct->line_len] = '\0';
				if (ct->line_len)
					log_container(sb, ct->line);
				ct->line_len = 0;
				if (buf[i] == '\n')
					continue;
			}
			ct->line[ct->line_len++] = buf[i] >= 0x20 || buf[i] == '\t' ? buf[i] : '?';
		}
	}
}

static int
parse_result(const unsigned char *p, size_t len, struct sbx_result *res)
{
	struct preader r;
	uint16_t	   tag;
	const char	  *val;
	uint32_t	   vlen;
	uint64_t	   v, flags = 0;
	int			   k;

	preader_init(&r, p, len);
	while ((k = preader_next(&r, &tag, &val, &vlen)) > 0)
	{
		switch (tag)
		{
			case PT_EXIT:
				if (proto_u64(val, vlen, &v) < 0 || v > 255)
					return -EBADMSG;
				res->exited = true;
				res->exit_status = (int) v;
				break;
			case PT_SIGNAL:
				if (proto_u64(val, vlen, &v) < 0 || v > 64)
					return -EBADMSG;
				res->signal = (int) v;
				break;
			case PT_STDOUT:
			case PT_STDERR:
			{
				char  **dst = tag == PT_STDOUT ? &res->out : &res->err;
				size_t *dlen = tag == PT_STDOUT ? &res->out_len : &res->err_len;
				if (*dst || vlen > cfg.output_limit)
					return -EBADMSG;
				*dst = malloc(vlen + 1);
				if (!*dst)
					return -ENOMEM;
				memcpy(*dst, val, vlen);
				(*dst)[vlen] = '\0';
				*dlen = vlen;
				break;
			}
			case PT_FLAGS:
				if (proto_u64(val, vlen, &flags) < 0)
					return -EBADMSG;
				break;
			case PT_DURATION_US:
				if (proto_u64(val, vlen, &res->exec_us) < 0)
					return -EBADMSG;
				break;
			case PT_ERROR:
				if (res->error || vlen > 4096)
					return -EBADMSG;
				res->error = strndup(val, vlen);
				break;
			default:
				break;
		}
	}
	if (k < 0)
		return k;
	res->out_truncated = flags & PF_STDOUT_TRUNCATED;
	res->err_truncated = flags & PF_STDERR_TRUNCATED;
	res->timed_out = flags & PF_TIMED_OUT;
	res->exec_failed = flags & PF_EXEC_FAILED;
	res->oom_killed = flags & PF_OOM_KILLED;
	return 0;
}

/*
 * A partial frame (proto.h): the new output of the running call.  0, or
 * -EBADMSG when it breaks the protocol (a stream twice, data beyond the
 * output limit).
 */
static int
parse_partial(const unsigned char *p, size_t len, struct sbx_partial *part)
{
	struct preader r;
	uint16_t	   tag;
	const char	  *val;
	uint32_t	   vlen;
	uint64_t	   v;
	int			   k;

	memset(part, 0, sizeof *part);
	preader_init(&r, p, len);
	while ((k = preader_next(&r, &tag, &val, &vlen)) > 0)
	{
		int i = tag == PT_STDOUT || tag == PT_STDOUT_OFFSET ? 0 : 1;

		switch (tag)
		{
			case PT_STDOUT:
			case PT_STDERR:
				if (part->data[i] || vlen > cfg.output_limit)
					return -EBADMSG;
				part->data[i] = val;
				part->len[i] = vlen;
				break;
			case PT_STDOUT_OFFSET:
			case PT_STDERR_OFFSET:
				if (proto_u64(val, vlen, &part->offset[i]) < 0 ||
					part->offset[i] > cfg.output_limit)
					return -EBADMSG;
				break;
			case PT_FLAGS:
				if (proto_u64(val, vlen, &v) < 0)
					return -EBADMSG;
				part->cut = v & PF_STREAM_CUT;
				break;
			default:
				break;
		}
	}
	return k;
}

/* A partial frame for the running call: to its output callback (ignored for a call that asked for none). */
static void
handle_partial(struct sbx_sandbox *sb, struct sbx_call *c, const unsigned char *payload, size_t len)
{
	struct sbx_partial part;

	if (parse_partial(payload, len, &part) < 0)
	{
		force_stop(sb, "malformed partial output from the container");
		return;
	}
	if (c->output && (part.data[0] || part.data[1] || part.cut))
		c->output(c, &part);
}

static bool
is_partial(const unsigned char *payload, size_t len)
{
	struct preader r;
	uint16_t	   tag;
	const char	  *val;
	uint32_t	   vlen;

	preader_init(&r, payload, len);
	return preader_next(&r, &tag, &val, &vlen) == 1 && tag == PT_PARTIAL;
}

static void
handle_frame(struct sbx_sandbox *sb, const unsigned char *payload, size_t len)
{
	struct sbx_container *ct = &sb->ct;
	struct sbx_call		 *c = sb->current;

	if (ct->state == CT_STARTING)
	{
		struct preader r;
		uint16_t	   tag;
		const char	  *val;
		uint32_t	   vlen;
		uint64_t	   version = 0;

		preader_init(&r, payload, len);
		if (preader_next(&r, &tag, &val, &vlen) != 1 || tag != PT_HELLO ||
			proto_u64(val, vlen, &version) < 0 || version != PROTO_VERSION)
		{
			force_stop(sb, "container init sent no valid hello");
			return;
		}
		ev_timer_cancel(&ct->timer);
		ct->state = CT_IDLE;
		ct->ready = true;
		metrics_container_started(now_ms() - ct->started_ms);
		log_debug("sandbox %s: container up in %llu ms", sb->id,
				  (unsigned long long) (now_ms() - ct->started_ms));
		kick(sb);
		return;
	}
	if (ct->state != CT_BUSY || !c)
	{
		force_stop(sb, "unexpected frame from the container");
		return;
	}
	if (is_partial(payload, len))
	{
		handle_partial(sb, c, payload, len);
		return;
	}
	if (parse_result(payload, len, &c->res) < 0)
	{
		run_result_free(&c->res);
		c->res.error = strdup("malformed result from the container");
		force_stop(sb, "malformed result from the container");
		return; /* finished when the container is gone */
	}
	ev_timer_cancel(&ct->timer);
	c->res.oom_killed |= limits_oom_kills(sb->id) > ct->oom_before;
	if (c->res.oom_killed && !c->res.error)
		c->res.error = xasprintf(
			"the call ran out of memory: the sandbox's memory limit (%llu MiB) was reached "
			"and a process of the call was killed",
			(unsigned long long) (cfg.memory_max >> 20));
	sb->current = NULL;
	ct->state = CT_IDLE;
	sb->last_used_ms = now_ms();
	call_finish(c, 0);
	kick(sb);
}

static void
on_ctl_read(EvIo *io, uint32_t revents)
{
	struct sbx_sandbox	 *sb = io->data;
	struct sbx_container *ct = &sb->ct;
	/* The largest legitimate frame: both streams at the limit plus headers. */
	size_t cap = 2 * cfg.output_limit + 65536;
	(void) revents;

	for (;;)
	{
		if (ct->rx_cap - ct->rx_len < 65536)
		{
			size_t want = ct->rx_cap ? ct->rx_cap * 2 : 65536;
			if (want > cap + 4)
				want = cap + 4;
			if (want <= ct->rx_len)
			{
				force_stop(sb, "oversized frame from the container");
				return;
			}
			unsigned char *n = realloc(ct->rx, want);
			if (!n)
			{
				force_stop(sb, "out of memory reading from the container");
				return;
			}
			ct->rx = n;
			ct->rx_cap = want;
		}
		ssize_t k = read(ct->ctl_r, ct->rx + ct->rx_len, ct->rx_cap - ct->rx_len);
		if (k < 0)
		{
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				break;
			k = 0;
		}
		if (k == 0)
		{
			/* The init exited; the pidfd tells when nspawn is gone. */
			ev_io_stop(&ct->r_io);
			return;
		}
		ct->rx_len += (size_t) k;
		while (ct->rx_len >= 4)
		{
			uint32_t flen = proto_get_u32(ct->rx);
			if (flen > cap)
			{
				force_stop(sb, "oversized frame from the container");
				return;
			}
			if (ct->rx_len < 4 + (size_t) flen)
				break;
			handle_frame(sb, ct->rx + 4, flen);
			if (ct->state == CT_STOPPING || ct->state == CT_STOPPED || !ct->rx)
				return;
			memmove(ct->rx, ct->rx + 4 + flen, ct->rx_len - 4 - flen);
			ct->rx_len -= 4 + (size_t) flen;
		}
	}
}

/* ---- sending calls -------------------------------------------------------- */

static void on_ctl_write(EvIo *io, uint32_t revents);

static void
flush_tx(struct sbx_sandbox *sb)
{
	struct sbx_container *ct = &sb->ct;
	struct sbx_call		 *c = sb->current;

	while (c && ct->tx_off < c->frame.len)
	{
		ssize_t k = write(ct->ctl_w, c->frame.data + ct->tx_off, c->frame.len - ct->tx_off);
		if (k < 0)
		{
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
			{
				if (!ct->w_io.added)
					ev_io_start(&ct->w_io, ct->ctl_w, EPOLLOUT, on_ctl_write, sb);
				return;
			}
			force_stop(sb, "cannot write to the container");
			return;
		}
		ct->tx_off += (size_t) k;
	}
	ev_io_stop(&ct->w_io);
}

static void
on_ctl_write(EvIo *io, uint32_t revents)
{
	(void) revents;
	flush_tx(io->data);
}

static void
on_backstop(EvTimer *t)
{
	struct sbx_sandbox *sb = t->data;

	if (sb->current)
	{
		run_result_free(&sb->current->res);
		sb->current->res.timed_out = true;
		sb->current->res.error =
			strdup("the container did not answer within the time limit and was killed");
	}
	force_stop(sb, "call exceeded its time limit");
}

static void
dispatch(struct sbx_sandbox *sb)
{
	struct sbx_container *ct = &sb->ct;
	struct sbx_call		 *c = sb->q_head;

	sb->q_head = c->next;
	if (!sb->q_head)
		sb->q_tail = NULL;
	sb->q_len--;
	c->next = NULL;
	sb->current = c;
	ct->state = CT_BUSY;
	ct->tx_off = 0;
	ct->oom_before = limits_oom_kills(sb->id);
	sb->calls++;
	ev_timer_arm(&ct->timer, c->timeout_ms + BACKSTOP_MS, on_backstop, sb);
	flush_tx(sb);
}

/* ---- start and stop ------------------------------------------------------- */

static void
on_start_timeout(EvTimer *t)
{
	force_stop(t->data, "container did not start in time");
}

static void
on_idle_timeout(EvTimer *t)
{
	run_stop(t->data, false, "idle");
}

static void
on_stop_timeout(EvTimer *t)
{
	force_stop(t->data, "container did not stop in time");
}

static void
on_unit_started(void *ud, int r)
{
	struct sbx_sandbox	 *sb = ud;
	struct sbx_container *ct = &sb->ct;

	if (ct->go_w < 0)
		return;
	if (r < 0)
	{
		force_stop(sb, "cannot create its scope unit");
		return;
	}
	(void) !write(ct->go_w, "g", 1);
	close(ct->go_w);
	ct->go_w = -1;
}

static void on_exit_(EvIo *io, uint32_t revents);

/* owner's directory below git_mirror_dir, made when missing; NULL (logged) when it cannot be. */
char *
run_git_mirror_dir(const char *owner)
{
	_cleanup_(closep) int fd = open(cfg.git_mirror_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int					  r = fd < 0 ? -errno : mirror_owner_dir_ensure(fd, owner);

	if (r < 0)
	{
		errno = -r;
		log_error(
			"cannot make the git mirror directory of %s below %s: %m; sandboxes started now do "
			"not see those mirrors",
			owner, cfg.git_mirror_dir);
		return NULL;
	}
	return mirror_owner_dir(owner);
}

static int
build_argv(const struct sbx_sandbox *sb, uint64_t userns_base, char **argv, char *store[],
		   size_t nstore)
{
	const char *root = store_root();
	size_t		a = 0, s = 0;

#define OWN(...) (s < nstore ? (store[s++] = xasprintf(__VA_ARGS__)) : NULL)
	argv[a++] = cfg.nspawn_path;
	argv[a++] = "--quiet";
	argv[a++] = "--register=no";
	argv[a++] = "--keep-unit";
	argv[a++] = "--console=pipe";
	argv[a++] = OWN("--machine=sbx-%s", sb->id);
	argv[a++] = OWN("--directory=%s/sandboxes/%s", root, sb->id);
	argv[a++] = "--private-network";
	argv[a++] = OWN("--bind-ro=%s:/%s/init", cfg.agent_path, SBX_AGENT_DIR);
	if (cfg.private_users)
	{
		/*
		 * A user namespace per sandbox, with a host uid range of its own:
		 * the run user's processes count against RLIMIT_NPROC per sandbox,
		 * root inside is nobody outside.  Idmapped mounts show the
		 * snapshot's on-disk owners inside unchanged (no chown: a sandbox
		 * stays an O(1) snapshot).
		 */
		argv[a++] =
			OWN("--private-users=%llu:%u", (unsigned long long) userns_base, SBX_USERNS_SIZE);
		argv[a++] = "--private-users-ownership=map";
		/* The workspace is in the root already; the init makes it a mount of its own (see sbx_init.c). */
	}
	else
		argv[a++] =
			OWN("--bind=%s/sandboxes/%s/%s:/%s", root, sb->id, SBX_WORKSPACE, SBX_WORKSPACE);
	if (cfg.git_mirror_dir)
	{
		/*
		 * nadi-gitd's mirrors shared with every tenant, those of the
		 * sandbox's tenant (no other's), and the git config git_clone
		 * points GIT_CONFIG_GLOBAL at.
		 */
		_cleanup_(freep) char *tdir = sb->tenant[0] ? run_git_mirror_dir(sb->tenant) : NULL;
		_cleanup_(freep) char *sdir = run_git_mirror_dir(MIRROR_OWNER_SHARED);
		if (sdir)
			argv[a++] = OWN("--bind-ro=%s/%s:%s", cfg.git_mirror_dir, sdir, SBX_GIT_MOUNT);
		if (tdir)
			argv[a++] = OWN("--bind-ro=%s/%s:%s", cfg.git_mirror_dir, tdir, MIRROR_MOUNT_TENANT);
		else if (sb->pooled)
			/* A warm pool entry: the tenant's mirrors are mounted on this when it is taken. */
			argv[a++] = OWN("--bind-ro=%s/%s:%s", root, SBX_POOL_EMPTY_HOST, MIRROR_MOUNT_TENANT);
		argv[a++] = OWN("--bind-ro=%s/%s:%s", root, SBX_GITCONFIG_HOST, SBX_GITCONFIG);
	}
	if (cfg.proxy_dir)
		/* Read-only is enough to connect to the socket in it; the init relays to it. */
		argv[a++] = OWN("--bind-ro=%s/%s:%s", cfg.proxy_dir, sb->id, SBX_PROXY_MOUNT);
	argv[a++] =
		OWN("--tmpfs=/tmp:mode=1777,nosuid,nodev,size=%llu", (unsigned long long) cfg.tmp_size);
	/* nspawn's own /dev/shm may take a tenth of the host's memory; bound it like /tmp. */
	argv[a++] = OWN("--tmpfs=/dev/shm:mode=1777,nosuid,nodev,noexec,size=%llu",
					(unsigned long long) cfg.tmp_size);
	argv[a++] = "--resolv-conf=off";
	argv[a++] = "--timezone=off";
	argv[a++] = "--link-journal=no";
	argv[a++] = "--no-new-privileges=yes";
	argv[a++] = "--kill-signal=SIGKILL";
	/* CAP_SYS_ADMIN stays for the init to remount / read-only; it drops it itself. */
	argv[a++] =
		"--drop-capability=CAP_SYS_PTRACE,CAP_SYS_BOOT,CAP_SYS_RESOURCE,"
		"CAP_SYS_TTY_CONFIG,CAP_SYS_NICE,CAP_NET_ADMIN,CAP_NET_RAW,CAP_MKNOD,CAP_AUDIT_CONTROL,"
		"CAP_AUDIT_WRITE,CAP_LINUX_IMMUTABLE,CAP_IPC_OWNER,CAP_LEASE,CAP_SETFCAP";
	argv[a++] = OWN("/%s/init", SBX_AGENT_DIR);
	if (cfg.private_users)
		argv[a++] = "--workspace-mount";
	if (cfg.read_only_root)
		argv[a++] = "--read-only-root";
	if (cfg.proxy_dir)
		argv[a++] = "--proxy-relay";
	argv[a] = NULL;
#undef OWN
	for (size_t i = 0; i < a; i++)
		if (!argv[i])
			return -ENOMEM;
	return 0;
}

static int
start(struct sbx_sandbox *sb)
{
	struct sbx_container *ct = &sb->ct;
	int ctl[2] = {-1, -1}, out[2] = {-1, -1}, lg[2] = {-1, -1}, go[2] = {-1, -1}, att[2] = {-1, -1};
	char	*argv[40], *own[16] = {0};
	bool	 unit = limits_mode() == SBX_LIMITS_UNIT;
	uint64_t userns_base = 0;
	pid_t	 pid;
	int		 r;

	r = limits_prepare(sb->id);
	if (r < 0)
	{
		errno = -r;
		log_error("sandbox %s: cannot set up limits: %m", sb->id);
		return r;
	}
	/* Bind sources must exist; the proxy directory may have been removed under us. */
	r = sandbox_proxy_prepare(sb->id);
	if (r < 0)
	{
		errno = -r;
		log_error("sandbox %s: cannot make its proxy directory in %s: %m", sb->id, cfg.proxy_dir);
		goto fail;
	}
	if (cfg.private_users && (r = store_userns_base(sb->id, &userns_base)) < 0)
	{
		errno = -r;
		log_error("sandbox %s: cannot allocate its user namespace range: %m", sb->id);
		goto fail;
	}
	r = build_argv(sb, userns_base, argv, own, ARRAY_SIZE(own));
	if (r < 0)
		goto fail;
	if (pipe2(ctl, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(lg, O_CLOEXEC) < 0 ||
		(unit && pipe2(go, O_CLOEXEC) < 0))
	{
		r = -errno;
		goto fail;
	}
	r = limits_open_attach(sb->id, att);
	if (r < 0)
	{
		errno = -r;
		log_error("sandbox %s: cannot open its control group: %m", sb->id);
		goto fail;
	}

	pid = fork();
	if (pid < 0)
	{
		r = -errno;
		goto fail;
	}
	if (pid == 0)
	{
		sigset_t none;
		char	 b;

		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		signal(SIGPIPE, SIG_DFL);
		if (unit && read(go[0], &b, 1) != 1)
			_exit(1);
		if (limits_child_attach(att) < 0)
			_exit(1);
		if (dup2(ctl[0], 0) < 0 || dup2(out[1], 1) < 0 || dup2(lg[1], 2) < 0)
			_exit(1);
		setsid();
		close_range(3, ~0U, 0);
		execve(argv[0], argv, child_env);
		dprintf(2, "cannot execute %s: %m\n", argv[0]);
		_exit(127);
	}
	for (size_t i = 0; i < ARRAY_SIZE(own); i++)
		free(own[i]);
	for (int i = 0; i < 2; i++)
		if (att[i] >= 0)
			close(att[i]);
	close(ctl[0]);
	close(out[1]);
	close(lg[1]);
	if (unit)
		close(go[0]);

	memset(ct, 0, sizeof *ct);
	ct->pid = pid;
	ct->ctl_w = ctl[1];
	ct->ctl_r = out[0];
	ct->log_r = lg[0];
	ct->go_w = unit ? go[1] : -1;
	ct->pidfd = pidfd_open(pid, 0);
	if (ct->pidfd < 0)
	{
		/* Cannot happen on supported kernels (5.3+); do not leave the child behind. */
		log_error("sandbox %s: pidfd_open: %m", sb->id);
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		close(ct->ctl_w);
		close(ct->ctl_r);
		close(ct->log_r);
		if (ct->go_w >= 0)
			close(ct->go_w);
		ct->state = CT_STOPPED;
		return -EIO;
	}
	fcntl(ct->pidfd, F_SETFD, FD_CLOEXEC);
	fcntl(ct->ctl_w, F_SETFL, O_NONBLOCK);
	fcntl(ct->ctl_r, F_SETFL, O_NONBLOCK);
	fcntl(ct->log_r, F_SETFL, O_NONBLOCK);
	ev_io_start(&ct->pid_io, ct->pidfd, EPOLLIN, on_exit_, sb);
	ev_io_start(&ct->r_io, ct->ctl_r, EPOLLIN, on_ctl_read, sb);
	ev_io_start(&ct->log_io, ct->log_r, EPOLLIN, on_log, sb);
	ct->w_io.data = sb;
	ct->state = CT_STARTING;
	ct->started_ms = now_ms();
	ev_timer_arm(&ct->timer, cfg.start_timeout_ms, on_start_timeout, sb);
	n_running++;
	sb->cold_starts++;
	if (sb->q_head)
		sb->q_head->cold = true;
	log_debug("sandbox %s: starting container (nspawn pid %d)", sb->id, (int) pid);
	if (unit)
	{
		r = unit_start_scope(sb->id, pid, on_unit_started, sb);
		if (r < 0)
		{
			errno = -r;
			log_error("sandbox %s: StartTransientUnit: %m", sb->id);
			force_stop(sb, "cannot create its scope unit");
		}
	}
	return 0;

fail:
	for (size_t i = 0; i < ARRAY_SIZE(own); i++)
		free(own[i]);
	int *fds[] = {&ctl[0], &ctl[1], &out[0], &out[1], &lg[0],
				  &lg[1],  &go[0],	&go[1],	 &att[0], &att[1]};
	for (size_t i = 0; i < ARRAY_SIZE(fds); i++)
		if (*fds[i] >= 0)
			close(*fds[i]);
	limits_release(sb->id);
	return r;
}

/* PID 1 of the container, so that it can be killed even where no cgroup holds it. */
static pid_t
container_init_pid(pid_t nspawn)
{
	char				   path[64];
	_cleanup_(freep) char *buf = NULL;

	snprintf(path, sizeof path, "/proc/%d/task/%d/children", (int) nspawn, (int) nspawn);
	if (read_full_file(AT_FDCWD, path, &buf, NULL, 4096) < 0 && !buf)
		return 0;
	return buf ? (pid_t) strtol(buf, NULL, 10) : 0;
}

static void
force_stop(struct sbx_sandbox *sb, const char *reason)
{
	struct sbx_container *ct = &sb->ct;
	pid_t				  init;

	if (ct->state == CT_STOPPED || ct->forced)
		return;
	log_notice("sandbox %s: killing container: %s", sb->id, reason);
	snprintf(ct->stop_reason, sizeof ct->stop_reason, "%s", reason);
	ct->forced = true;
	ct->state = CT_STOPPING;
	limits_kill(sb->id);
	init = container_init_pid(ct->pid);
	if (init > 1)
		kill(init, SIGKILL);
	pidfd_send_signal(ct->pidfd, SIGKILL, NULL, 0);
	ev_timer_cancel(&ct->timer);
}

void
run_stop(struct sbx_sandbox *sb, bool force, const char *reason)
{
	struct sbx_container *ct = &sb->ct;

	switch (ct->state)
	{
		case CT_STOPPED:
			return;
		case CT_BUSY:
			if (!force)
			{
				ct->stop_when_idle = true;
				return;
			}
			/* fall through */
		case CT_STARTING:
			force_stop(sb, reason);
			return;
		case CT_IDLE:
			if (force)
			{
				force_stop(sb, reason);
				return;
			}
			log_debug("sandbox %s: stopping container (%s)", sb->id, reason);
			snprintf(ct->stop_reason, sizeof ct->stop_reason, "%s", reason);
			ct->state = CT_STOPPING;
			ev_io_stop(&ct->w_io);
			close(ct->ctl_w); /* EOF: the init kills everything and exits */
			ct->ctl_w = -1;
			ev_timer_arm(&ct->timer, STOP_GRACE_MS, on_stop_timeout, sb);
			return;
		case CT_STOPPING:
			if (force)
				force_stop(sb, reason);
			return;
	}
}

void
run_stop_all(bool force)
{
	for (struct sbx_sandbox *sb = sandboxes; sb; sb = sb->next)
	{
		/* A drain lets queued calls run; a forced stop answers them now. */
		if (force)
			fail_queue(sb, -ESHUTDOWN, "this sandbox host is shutting down");
		run_stop(sb, force, force ? "shutdown" : "drain");
	}
}

static void
remove_propagate_dir(const char *id)
{
	char name[64];
	int	 dfd = open("/run/systemd/nspawn/propagate", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (dfd < 0)
		return;
	snprintf(name, sizeof name, "sbx-%s", id);
	rm_rf_at(dfd, name);
	close(dfd);
}

static void
on_exit_(EvIo *io, uint32_t revents)
{
	struct sbx_sandbox	 *sb = io->data;
	struct sbx_container *ct = &sb->ct;
	enum ct_state		  was = ct->state;
	siginfo_t			  si = {0};
	struct sbx_call		 *c = sb->current;
	(void) revents;

	if (waitid(P_PIDFD, (id_t) ct->pidfd, &si, WEXITED | WNOHANG) < 0 || si.si_pid == 0)
		return;
	/* Drain what the container said last. */
	on_log(&ct->log_io, 0);
	if (was != CT_STOPPING || ct->forced)
		log_info("sandbox %s: container exited (%s %d)%s%s", sb->id,
				 si.si_code == CLD_EXITED ? "status" : "signal", si.si_status,
				 ct->stop_reason[0] ? ": " : "", ct->stop_reason);

	ev_timer_cancel(&ct->timer);
	ev_io_stop(&ct->pid_io);
	ev_io_stop(&ct->r_io);
	ev_io_stop(&ct->w_io);
	ev_io_stop(&ct->log_io);
	close(ct->pidfd);
	close(ct->ctl_r);
	close(ct->log_r);
	if (ct->ctl_w >= 0)
		close(ct->ctl_w);
	if (ct->go_w >= 0)
	{
		close(ct->go_w);
		unit_cancel(sb);
	}
	free(ct->rx);
	ct->rx = NULL;
	uint64_t ooms = limits_oom_kills(sb->id);
	bool	 oom = ooms > ct->oom_before;
	limits_kill(sb->id);
	limits_release(sb->id);
	remove_propagate_dir(sb->id);
	n_running--;

	if (c)
	{
		sb->current = NULL;
		if (!c->res.error)
			c->res.error = strdup(oom ? "the sandbox ran out of memory and its container was killed"
									  : "the container exited during the call");
		c->res.oom_killed |= oom;
		if (!c->res.exited && !c->res.signal)
			c->res.signal = SIGKILL;
		call_finish(c, 0);
	}
	if (!ct->ready)
	{
		char msg[256];
		snprintf(msg, sizeof msg, "the container failed to start: %.200s",
				 ct->last_log[0] ? ct->last_log : ct->stop_reason);
		fail_queue(sb, -EIO, msg);
		metrics_container_failed();
		if (sb->pooled && !sb->destroying)
			pool_start_failed(sb);
	}
	memset(ct, 0, sizeof *ct);
	ct->pidfd = ct->ctl_r = ct->ctl_w = ct->log_r = ct->go_w = -1;
	ct->state = CT_STOPPED;

	sandbox_on_stopped(sb); /* may free sb (destroy) */
	pool_kick();
	/* A freed slot may let another sandbox start; queued calls here restart cold. */
	for (struct sbx_sandbox *o = sandboxes; o; o = o->next)
		if (o->ct.state == CT_STOPPED && o->q_head)
			kick(o);
	main_kick();
}

/* Stop the least recently used idle container to make room; false if none. */
static bool
make_room(void)
{
	struct sbx_sandbox *lru = NULL, *entry = pool_victim();

	for (struct sbx_sandbox *sb = sandboxes; sb; sb = sb->next)
	{
		if (sb->ct.state == CT_STOPPING)
			return true; /* a slot is on its way */
		if (sb->ct.state == CT_IDLE && !sb->q_head &&
			(!lru || sb->last_used_ms < lru->last_used_ms))
			lru = sb;
	}
	if (entry) /* warm pool entries go first (one still starting is killed) */
		lru = entry;
	if (!lru)
		return false;
	run_stop(lru, false, "making room");
	return true;
}

static void
kick(struct sbx_sandbox *sb)
{
	struct sbx_container *ct = &sb->ct;
	int					  r;

	if (sb->destroying)
		return;
	switch (ct->state)
	{
		case CT_STOPPED:
			if (!sb->q_head)
				return;
			if (n_running >= cfg.max_running)
			{
				if (!make_room())
					fail_queue(sb, -EAGAIN, "every container slot of this host is busy");
				return;
			}
			r = start(sb);
			if (r < 0)
			{
				char msg[128];
				snprintf(msg, sizeof msg, "cannot start a container: %s", strerror(-r));
				fail_queue(sb, -EIO, msg);
			}
			return;
		case CT_IDLE:
			if (sb->q_head)
			{
				ev_timer_cancel(&ct->timer);
				dispatch(sb);
				return;
			}
			if (ct->stop_when_idle || sbx_draining)
			{
				run_stop(sb, false, "drain");
				return;
			}
			if (sb->pooled) /* warm until taken */
				return;
			if (cfg.idle_timeout_ms == 0)
				run_stop(sb, false, "idle");
			else
				ev_timer_arm(&ct->timer, cfg.idle_timeout_ms, on_idle_timeout, sb);
			return;
		default:
			return;
	}
}

int
run_warm(struct sbx_sandbox *sb)
{
	if (sb->ct.state != CT_STOPPED || sb->destroying)
		return 0;
	if (n_running >= cfg.max_running)
		return -EAGAIN;
	return start(sb);
}

void
run_kick(struct sbx_sandbox *sb)
{
	kick(sb);
}

pid_t
run_init_pid(const struct sbx_sandbox *sb)
{
	if (sb->ct.state != CT_IDLE && sb->ct.state != CT_BUSY)
		return 0;
	return container_init_pid(sb->ct.pid);
}

int
run_submit(struct sbx_sandbox *sb, struct sbx_call *c)
{
	if (sbx_draining)
		return -ESHUTDOWN;
	if (sb->destroying)
		return -ECANCELED;
	if (sb->q_len >= cfg.max_queue)
		return -EBUSY;
	c->sb = sb;
	c->next = NULL;
	c->submitted_us = now_us();
	if (sb->q_tail)
		sb->q_tail->next = c;
	else
		sb->q_head = c;
	sb->q_tail = c;
	sb->q_len++;
	sb->last_used_ms = now_ms();
	kick(sb);
	return 0;
}

/* Cancel the queue of a sandbox being destroyed (run_stop kills the rest). */
void
run_cancel_queue(struct sbx_sandbox *sb)
{
	fail_queue(sb, -ECANCELED, "the sandbox is being destroyed");
}

/*
 * At start: containers of a previous daemon normally die with it (their
 * stdin closes), but one stuck in a kernel wait may linger; find nspawn
 * processes running one of our sandboxes and kill them.
 */
void
run_kill_orphans(void)
{
	_cleanup_(freep) char *needle = xasprintf("--directory=%s/sandboxes/", store_root());
	DIR					  *d = opendir("/proc");
	struct dirent		  *de;

	if (!d || !needle)
	{
		if (d)
			closedir(d);
		return;
	}
	while ((de = readdir(d)))
	{
		char   path[64], *buf = NULL;
		size_t len;
		pid_t  pid = (pid_t) strtol(de->d_name, NULL, 10);
		bool   ours = false;

		if (pid <= 1 || pid == getpid())
			continue;
		snprintf(path, sizeof path, "/proc/%d/cmdline", (int) pid);
		if (read_full_file(AT_FDCWD, path, &buf, &len, 1 << 16) < 0)
			continue;
		for (size_t off = 0; off < len; off += strlen(buf + off) + 1)
			if (strncmp(buf + off, needle, strlen(needle)) == 0)
				ours = true;
		if (ours && strstr(buf, "systemd-nspawn"))
		{
			pid_t init = container_init_pid(pid);
			log_notice("killing container process %d left by a previous run", (int) pid);
			if (init > 1)
				kill(init, SIGKILL);
			kill(pid, SIGKILL);
		}
		free(buf);
	}
	closedir(d);
}
