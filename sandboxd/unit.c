/*
 * unit.c — transient scope units over sd-bus, used when systemd is PID 1
 * (sd_booted()).  The daemon forks the container's nspawn process, which
 * waits until this module has asked systemd to wrap it in a scope and the
 * scope's start job finished; limits are then systemd's (MemoryMax=,
 * TasksMax=) and the scope is collected when the container exits.  The bus
 * connection is driven by the daemon's event loop, never blocking it.
 */
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-daemon.h>

#include "limits.h"
#include "sbx.h"
#include "unit.h"

#define SLICE "nadi.slice"

struct pending
{
	char			unit[128];
	pid_t			pid;
	unit_started_cb cb;
	void		   *ud;
	bool			replied, job_done;
	int				result;
	struct pending *next;
};

/* The current scope of each sandbox: a fresh name per container start, so a
 * restart never races the collection of the previous, now empty, scope. */
struct scope
{
	char		  id[64];
	char		  name[128];
	char		 *cg2, *mem1; /* its cgroup: unified, and v1 memory (NULL: none) */
	struct scope *next;
};

static sd_bus		  *bus;
static EvIo			   bus_io;
static EvTimer		   bus_timer;
static struct pending *pendings;
static struct scope	  *scopes;
static unsigned long   scope_seq;

const char *
unit_scope_name(const char *id)
{
	for (struct scope *s = scopes; s; s = s->next)
		if (strcmp(s->id, id) == 0)
			return s->name;
	return NULL;
}

void
unit_forget(const char *id)
{
	for (struct scope **pp = &scopes; *pp; pp = &(*pp)->next)
		if (strcmp((*pp)->id, id) == 0)
		{
			struct scope *s = *pp;
			*pp = s->next;
			free(s->cg2);
			free(s->mem1);
			free(s);
			return;
		}
}

static const char *
scope_new(const char *id)
{
	struct scope *s;

	unit_forget(id);
	s = calloc(1, sizeof *s);
	if (!s)
		return NULL;
	snprintf(s->id, sizeof s->id, "%s", id);
	snprintf(s->name, sizeof s->name, "nadi-sbx-%s-%lu.scope", id, ++scope_seq);
	s->next = scopes;
	scopes = s;
	return s->name;
}

bool
unit_available(void)
{
	return sd_booted() > 0;
}

static void bus_arm(void);

static void
bus_process(void)
{
	int r;

	do
	{
		r = sd_bus_process(bus, NULL);
	} while (r > 0);
	if (r < 0)
		log_error("sd-bus: %s", strerror(-r));
	bus_arm();
}

static void
on_bus_io(EvIo *io, uint32_t revents)
{
	(void) io;
	(void) revents;
	bus_process();
}

static void
on_bus_timer(EvTimer *t)
{
	(void) t;
	bus_process();
}

/* Keep epoll interest and the timeout in step with what sd-bus waits for. */
static void
bus_arm(void)
{
	uint64_t usec;
	int		 ev = sd_bus_get_events(bus);
	uint32_t want = 0;

	if (ev > 0)
	{
		if (ev & POLLIN)
			want |= EPOLLIN;
		if (ev & POLLOUT)
			want |= EPOLLOUT;
	}
	ev_io_modify(&bus_io, want ? want : EPOLLIN);
	if (sd_bus_get_timeout(bus, &usec) >= 0 && usec != UINT64_MAX)
	{
		uint64_t now = now_us();
		ev_timer_arm(&bus_timer, usec > now ? (usec - now + 999) / 1000 : 0, on_bus_timer, NULL);
	}
	else
		ev_timer_cancel(&bus_timer);
}

const char *
unit_scope_cgroup(const char *id, bool memory_v1)
{
	for (struct scope *s = scopes; s; s = s->next)
		if (strcmp(s->id, id) == 0)
			return memory_v1 ? s->mem1 : s->cg2;
	return NULL;
}

/*
 * Where systemd put the scope: the cgroups of its process, read before that
 * process runs nspawn (which moves itself further down).  Relative to this
 * daemon's cgroup namespace, whatever systemd's own root is.
 */
static void
scope_learn_cgroups(const char *name, pid_t pid)
{
	/* by name: a start cancelled meanwhile may share its id with a newer scope */
	for (struct scope *s = scopes; s; s = s->next)
		if (strcmp(s->name, name) == 0)
		{
			free(s->cg2);
			free(s->mem1);
			s->cg2 = limits_cgroup_dir(pid, NULL);
			s->mem1 = limits_cgroup_dir(pid, "memory");
			log_debug("sandbox %s: scope %s, cgroup %s", s->id, name, s->cg2 ? s->cg2 : "?");
			return;
		}
}

static void
pending_finish(struct pending *p)
{
	for (struct pending **pp = &pendings; *pp; pp = &(*pp)->next)
		if (*pp == p)
		{
			*pp = p->next;
			break;
		}
	if (p->result == 0)
		scope_learn_cgroups(p->unit, p->pid);
	if (p->cb)
		p->cb(p->ud, p->result);
	free(p);
}

static int
on_job_removed(sd_bus_message *m, void *userdata, sd_bus_error *err)
{
	const char *path, *unit, *result;
	uint32_t	id;
	(void) userdata;
	(void) err;

	if (sd_bus_message_read(m, "uoss", &id, &path, &unit, &result) < 0)
		return 0;
	for (struct pending *p = pendings; p; p = p->next)
	{
		if (strcmp(p->unit, unit) != 0 || p->job_done)
			continue;
		p->job_done = true;
		if (strcmp(result, "done") != 0)
		{
			log_error("start job of %s finished with \"%s\"", unit, result);
			p->result = -EIO;
		}
		if (p->replied)
			pending_finish(p);
		break;
	}
	return 0;
}

int
unit_init(void)
{
	int r;

	r = sd_bus_open_system(&bus);
	if (r < 0)
		return r;
	r = sd_bus_match_signal_async(bus, NULL, "org.freedesktop.systemd1",
								  "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager",
								  "JobRemoved", on_job_removed, NULL, NULL);
	if (r < 0)
		goto fail;
	/* Job signals are only sent to subscribed clients. */
	r = sd_bus_call_method_async(bus, NULL, "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
								 "org.freedesktop.systemd1.Manager", "Subscribe", NULL, NULL, "");
	if (r < 0)
		goto fail;
	r = ev_io_start(&bus_io, sd_bus_get_fd(bus), EPOLLIN, on_bus_io, NULL);
	if (r < 0)
		goto fail;
	bus_arm();
	return 0;
fail:
	bus = sd_bus_flush_close_unref(bus);
	return r;
}

void
unit_done(void)
{
	if (!bus)
		return;
	ev_io_stop(&bus_io);
	ev_timer_cancel(&bus_timer);
	bus = sd_bus_flush_close_unref(bus);
	while (scopes)
		unit_forget(scopes->id);
}

static int
on_start_reply(sd_bus_message *m, void *userdata, sd_bus_error *err)
{
	struct pending	   *p = userdata;
	const sd_bus_error *e = sd_bus_message_get_error(m);
	(void) err;

	p->replied = true;
	if (e)
	{
		log_error("StartTransientUnit(%s): %s", p->unit, e->message ? e->message : e->name);
		p->result = -sd_bus_error_get_errno(e);
		if (p->result == 0)
			p->result = -EIO;
		pending_finish(p);
	}
	else if (p->job_done)
		pending_finish(p);
	return 0;
}

int
unit_start_scope(const char *id, pid_t pid, unit_started_cb cb, void *ud)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	struct pending									*p;
	const char										*name;
	char											 desc[160];
	int												 r;

	if (!bus)
		return -ENOTCONN;
	name = scope_new(id);
	p = name ? calloc(1, sizeof *p) : NULL;
	if (!p)
		return -ENOMEM;
	snprintf(p->unit, sizeof p->unit, "%s", name);
	p->pid = pid;
	snprintf(desc, sizeof desc, "nadi sandbox %s", id);
	p->cb = cb;
	p->ud = ud;

	r = sd_bus_message_new_method_call(bus, &m, "org.freedesktop.systemd1",
									   "/org/freedesktop/systemd1",
									   "org.freedesktop.systemd1.Manager", "StartTransientUnit");
	if (r < 0)
		goto fail;
	r = sd_bus_message_append(m, "ss", p->unit, "fail");
	if (r < 0)
		goto fail;
	r = sd_bus_message_open_container(m, 'a', "(sv)");
	if (r < 0)
		goto fail;
	r = sd_bus_message_append(m, "(sv)(sv)(sv)(sv)(sv)(sv)(sv)(sv)", "Description", "s", desc,
							  "Slice", "s", SLICE, "PIDs", "au", 1, (uint32_t) pid, "MemoryMax",
							  "t", cfg.memory_max, "MemorySwapMax", "t", (uint64_t) 0, "TasksMax",
							  "t", cfg.pids_max, "Delegate", "b", 1, "CollectMode", "s",
							  "inactive-or-failed");
	if (r < 0)
		goto fail;
	r = sd_bus_message_close_container(m);
	if (r < 0)
		goto fail;
	r = sd_bus_message_append(m, "a(sa(sv))", 0);
	if (r < 0)
		goto fail;
	r = sd_bus_call_async(bus, NULL, m, on_start_reply, p, 0);
	if (r < 0)
		goto fail;
	p->next = pendings;
	pendings = p;
	bus_arm();
	return 0;
fail:
	free(p);
	return r;
}

void
unit_cancel(void *ud)
{
	for (struct pending *p = pendings; p; p = p->next)
		if (p->ud == ud)
			p->cb = NULL;
}

void
unit_kill(const char *id)
{
	const char *name = unit_scope_name(id);

	if (!bus || !name)
		return;
	sd_bus_call_method_async(bus, NULL, "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
							 "org.freedesktop.systemd1.Manager", "KillUnit", NULL, NULL, "ssi",
							 name, "all", (int32_t) SIGKILL);
	bus_arm();
}
