/*
 * limits.c — per-sandbox memory and process limits (see limits.h).  Control
 * groups contain a whole container (nspawn, its init and every tool process)
 * and survive fork bombs; rlimits are the fallback where no cgroup is
 * writable: RLIMIT_NPROC counts per user namespace, so it is per sandbox
 * with private_users (each sandbox has a host uid range of its own).
 */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "limits.h"
#include "sbx.h"
#include "unit.h"

static enum sbx_limit_mode mode = SBX_LIMITS_RLIMIT;
static char				  *v2_parent;		 /* cgroup2: sandboxes are v2_parent/sbx-ID */
static bool				   v2_parent_ours;	 /* v2_parent was made by us (remove at exit) */
static char				  *v1_mem, *v1_pids; /* cgroup1: parents in both hierarchies */
/* unit: systemd cannot enforce MemoryMax=/TasksMax= here; the rlimits do */
static bool unit_rlimits;

enum sbx_limit_mode
limits_mode(void)
{
	return mode;
}

/* Mount point of the first file system of type fstype whose options contain opt. */
static char *
find_mount(const char *fstype, const char *opt)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char  line[4096];
	char *ret = NULL;

	if (!f)
		return NULL;
	while (!ret && fgets(line, sizeof line, f))
	{
		char  mnt[1024], type[64], super[1024];
		char *dash = strstr(line, " - ");
		if (!dash || sscanf(line, "%*s %*s %*s %*s %1023s", mnt) != 1 ||
			sscanf(dash + 3, "%63s %*s %1023s", type, super) != 2)
			continue;
		if (strcmp(type, fstype) != 0)
			continue;
		if (opt)
		{
			bool found = false;
			for (char *save, *t = strtok_r(super, ",", &save); t; t = strtok_r(NULL, ",", &save))
				found |= strcmp(t, opt) == 0;
			if (!found)
				continue;
		}
		ret = strdup(mnt);
	}
	fclose(f);
	return ret;
}

/* Path of process pid (0: this one) in the hierarchy holding controller (NULL: the v2 one). */
static char *
own_path_of(pid_t pid, const char *controller)
{
	char  fn[64];
	FILE *f;
	char  line[4096];
	char *ret = NULL;

	if (pid > 0)
		snprintf(fn, sizeof fn, "/proc/%d/cgroup", (int) pid);
	else
		snprintf(fn, sizeof fn, "/proc/self/cgroup");
	f = fopen(fn, "re");
	if (!f)
		return NULL;
	while (!ret && fgets(line, sizeof line, f))
	{
		/* "ID:CONTROLLERS:PATH" */
		char *ctrls = strchr(line, ':'), *path;
		if (!ctrls)
			continue;
		*ctrls++ = '\0';
		path = strchr(ctrls, ':');
		if (!path)
			continue;
		*path++ = '\0';
		path[strcspn(path, "\n")] = '\0';
		if (!controller)
		{
			if (strcmp(line, "0") == 0 && *ctrls == '\0')
				ret = strdup(path);
			continue;
		}
		for (char *save, *t = strtok_r(ctrls, ",", &save); t; t = strtok_r(NULL, ",", &save))
			if (strcmp(t, controller) == 0)
			{
				ret = strdup(path);
				break;
			}
	}
	fclose(f);
	return ret;
}

static char *
own_path(const char *controller)
{
	return own_path_of(0, controller);
}

char *
limits_cgroup_dir(pid_t pid, const char *controller)
{
	_cleanup_(freep) char *mnt =
		controller ? find_mount("cgroup", controller) : find_mount("cgroup2", NULL);
	_cleanup_(freep) char *path = own_path_of(pid, controller);

	if (!mnt || !path)
		return NULL;
	return xasprintf("%s%s", mnt, strcmp(path, "/") == 0 ? "" : path);
}

/*
 * Name of the daemon's group of groups: per state directory, so that two
 * daemons sharing a cgroup (tests beside a production daemon, say) never
 * take each other's containers for leftovers.
 */
static const char *
parent_name(void)
{
	static char name[32];
	uint32_t	h = 2166136261u;

	if (!name[0])
	{
		for (const char *p = cfg.state_dir; *p; p++)
			h = (h ^ (unsigned char) *p) * 16777619u;
		snprintf(name, sizeof name, "nadi-sandboxd-%08x", h);
	}
	return name;
}

static bool
has_word(const char *text, const char *word)
{
	size_t n = strlen(word);

	for (const char *p = text; (p = strstr(p, word)); p += n)
		if ((p == text || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\n' || p[n] == '\0'))
			return true;
	return false;
}

static int
write_at(const char *dir, const char *file, const char *value)
{
	_cleanup_(freep) char *p = xasprintf("%s/%s", dir, file);

	return p ? write_string_file(p, value) : -ENOMEM;
}

static int
try_cgroup2(void)
{
	_cleanup_(freep) char *mnt = find_mount("cgroup2", NULL), *own = own_path(NULL);
	_cleanup_(freep) char *base = NULL, *ctrl = NULL, *sup = NULL;
	char				   pid[32];
	int					   r;

	if (!mnt || !own)
		return -ENOENT;
	base = xasprintf("%s%s", mnt, strcmp(own, "/") == 0 ? "" : own);
	if (!base)
		return -ENOMEM;
	ctrl = xasprintf("%s/cgroup.controllers", base);
	_cleanup_(freep) char *avail = NULL;
	if (!ctrl || read_full_file(AT_FDCWD, ctrl, &avail, NULL, 4096) < 0)
		return -ENOENT;
	if (!has_word(avail, "memory") || !has_word(avail, "pids"))
	{
		log_info("cgroup v2 at %s lacks the memory or pids controller", base);
		return -EOPNOTSUPP;
	}
	if (strcmp(own, "/") == 0)
	{
		/* The root may hold processes and enable controllers; use a child of it. */
		r = write_at(base, "cgroup.subtree_control", "+memory +pids");
		if (r < 0)
			return r;
		v2_parent = xasprintf("%s/%s", base, parent_name());
		if (!v2_parent)
			return -ENOMEM;
		if (mkdir(v2_parent, 0755) < 0 && errno != EEXIST)
			return -errno;
		v2_parent_ours = true;
		return write_at(v2_parent, "cgroup.subtree_control", "+memory +pids");
	}
	/* "No internal processes": move the daemon into a leaf, then delegate. */
	sup = xasprintf("%s/supervisor", base);
	if (!sup)
		return -ENOMEM;
	if (mkdir(sup, 0755) < 0 && errno != EEXIST)
		return -errno;
	snprintf(pid, sizeof pid, "%d", (int) getpid());
	r = write_at(sup, "cgroup.procs", pid);
	if (r < 0)
		return r;
	r = write_at(base, "cgroup.subtree_control", "+memory +pids");
	if (r < 0)
		return r;
	v2_parent = base;
	base = NULL;
	return 0;
}

static int
try_cgroup1(void)
{
	_cleanup_(freep) char *mm = find_mount("cgroup", "memory"), *pm = find_mount("cgroup", "pids");
	_cleanup_(freep) char *mo = own_path("memory"), *po = own_path("pids");

	if (!mm || !pm || !mo || !po)
		return -ENOENT;
	v1_mem = xasprintf("%s%s/%s", mm, strcmp(mo, "/") == 0 ? "" : mo, parent_name());
	v1_pids = xasprintf("%s%s/%s", pm, strcmp(po, "/") == 0 ? "" : po, parent_name());
	if (!v1_mem || !v1_pids)
		return -ENOMEM;
	if ((mkdir(v1_mem, 0755) < 0 && errno != EEXIST) ||
		(mkdir(v1_pids, 0755) < 0 && errno != EEXIST))
		return -errno;
	return 0;
}

/*
 * Why systemd could not enforce MemoryMax= and TasksMax= on the scopes (NULL
 * when it can): on the unified hierarchy the memory and pids controllers
 * must be available at its root; on a legacy or hybrid one their v1
 * hierarchies must be writable (systemd-nspawn mounts them read-only in a
 * container).  systemd accepts the properties either way and says nothing.
 */
static const char *
unit_lacks_controllers(void)
{
	_cleanup_(freep) char *avail = NULL, *mm = NULL, *pm = NULL;

	if (read_full_file(AT_FDCWD, "/sys/fs/cgroup/cgroup.controllers", &avail, NULL, 4096) >= 0)
		return has_word(avail, "memory") && has_word(avail, "pids")
				   ? NULL
				   : "the unified hierarchy lacks the memory or pids controller (bound to a v1 "
					 "hierarchy of the host?)";
	mm = find_mount("cgroup", "memory");
	pm = find_mount("cgroup", "pids");
	if (!mm || !pm)
		return "no memory or pids hierarchy is mounted";
	if (access(mm, W_OK) < 0 || access(pm, W_OK) < 0)
		return "the memory and pids hierarchies are read-only (a container)";
	return NULL;
}

int
limits_init(void)
{
	enum sbx_limit_mode want = cfg.limits;
	int					r;

	if (want == SBX_LIMITS_AUTO || want == SBX_LIMITS_UNIT)
	{
		if (unit_available())
		{
			r = unit_init();
			if (r == 0)
			{
				const char *why = unit_lacks_controllers();
				mode = SBX_LIMITS_UNIT;
				if (why)
				{
					unit_rlimits = true;
					log_warning("systemd cannot enforce MemoryMax= and TasksMax= here: %s", why);
				}
				goto chosen;
			}
			log_warning("systemd is PID 1 but its bus is unusable (%s)", strerror(-r));
		}
		else if (want == SBX_LIMITS_UNIT)
		{
			log_error("limits = unit needs systemd as PID 1");
			return -EOPNOTSUPP;
		}
	}
	if (want == SBX_LIMITS_AUTO || want == SBX_LIMITS_CGROUP2)
	{
		r = try_cgroup2();
		if (r == 0)
		{
			mode = SBX_LIMITS_CGROUP2;
			goto chosen;
		}
		if (want == SBX_LIMITS_CGROUP2)
		{
			log_error("cgroup v2 is not usable: %s", strerror(-r));
			return r;
		}
		free(v2_parent);
		v2_parent = NULL;
	}
	if (want == SBX_LIMITS_AUTO || want == SBX_LIMITS_CGROUP1)
	{
		r = try_cgroup1();
		if (r == 0)
		{
			mode = SBX_LIMITS_CGROUP1;
			goto chosen;
		}
		if (want == SBX_LIMITS_CGROUP1)
		{
			log_error("cgroup v1 is not usable: %s", strerror(-r));
			return r;
		}
	}
	mode = SBX_LIMITS_RLIMIT;
chosen:
	switch (mode)
	{
		case SBX_LIMITS_UNIT:
			if (unit_rlimits)
				log_notice("limits: systemd transient scopes over sd-bus, with per-process rlimits "
						   "(RLIMIT_AS, RLIMIT_NPROC) and the init's memory watch");
			else
				log_notice("limits: systemd transient scopes (MemoryMax=, TasksMax=) over sd-bus");
			break;
		case SBX_LIMITS_CGROUP2:
			log_notice("limits: cgroup v2 below %s (memory.max, pids.max)", v2_parent);
			break;
		case SBX_LIMITS_CGROUP1:
			log_notice("limits: cgroup v1 below %s and %s (memory.limit_in_bytes, pids.max)",
					   v1_mem, v1_pids);
			break;
		default:
			log_notice(
				"limits: no writable cgroup; per-process rlimits (RLIMIT_AS, RLIMIT_NPROC) and the "
				"init's memory watch");
			if (!cfg.private_users)
				log_warning(
					"private_users is off: RLIMIT_NPROC counts the run user's processes of every "
					"sandbox together, so a fork bomb in one sandbox stops the others from "
					"forking%s",
					cfg.run_uid == 0 ? " (and it does not bind root at all)" : "");
			break;
	}
	return 0;
}

static char *
group_path(const char *parent, const char *id)
{
	return xasprintf("%s/sbx-%s", parent, id);
}

int
limits_prepare(const char *id)
{
	char num[32];
	int	 r;

	if (mode == SBX_LIMITS_CGROUP2)
	{
		_cleanup_(freep) char *g = group_path(v2_parent, id);
		if (!g)
			return -ENOMEM;
		if (mkdir(g, 0755) < 0 && errno != EEXIST)
			return -errno;
		snprintf(num, sizeof num, "%llu", (unsigned long long) cfg.memory_max);
		r = write_at(g, "memory.max", num);
		if (r < 0)
			return r;
		(void) write_at(g, "memory.swap.max", "0");
		snprintf(num, sizeof num, "%llu", (unsigned long long) cfg.pids_max);
		return write_at(g, "pids.max", num);
	}
	if (mode == SBX_LIMITS_CGROUP1)
	{
		_cleanup_(freep) char *m = group_path(v1_mem, id), *p = group_path(v1_pids, id);
		if (!m || !p)
			return -ENOMEM;
		if ((mkdir(m, 0755) < 0 && errno != EEXIST) || (mkdir(p, 0755) < 0 && errno != EEXIST))
			return -errno;
		snprintf(num, sizeof num, "%llu", (unsigned long long) cfg.memory_max);
		r = write_at(m, "memory.limit_in_bytes", num);
		if (r < 0)
			return r;
		(void) write_at(m, "memory.memsw.limit_in_bytes", num);
		snprintf(num, sizeof num, "%llu", (unsigned long long) cfg.pids_max);
		return write_at(p, "pids.max", num);
	}
	return 0;
}

int
limits_open_attach(const char *id, int fds[2])
{
	const char *parents[2] = {NULL, NULL};

	fds[0] = fds[1] = -1;
	if (mode == SBX_LIMITS_CGROUP2)
		parents[0] = v2_parent;
	else if (mode == SBX_LIMITS_CGROUP1)
	{
		parents[0] = v1_mem;
		parents[1] = v1_pids;
	}
	else
		return 0;
	for (int i = 0; i < 2 && parents[i]; i++)
	{
		_cleanup_(freep) char *g = group_path(parents[i], id);
		_cleanup_(freep) char *p = g ? xasprintf("%s/cgroup.procs", g) : NULL;
		if (!p)
			return -ENOMEM;
		fds[i] = open(p, O_WRONLY | O_CLOEXEC);
		if (fds[i] < 0)
		{
			int r = -errno;
			if (i == 1)
				close(fds[0]);
			fds[0] = fds[1] = -1;
			return r;
		}
	}
	return 0;
}

int
limits_child_attach(const int fds[2])
{
	for (int i = 0; i < 2; i++)
		if (fds[i] >= 0 && write(fds[i], "0", 1) != 1)
			return -errno;
	return 0;
}

static uint64_t
read_key(const char *dir, const char *file, const char *key)
{
	_cleanup_(freep) char *p = xasprintf("%s/%s", dir, file);
	_cleanup_(freep) char *buf = NULL;
	size_t				   klen = strlen(key);

	if (!p || read_full_file(AT_FDCWD, p, &buf, NULL, 65536) < 0)
		return 0;
	for (char *l = buf; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
		if (strncmp(l, key, klen) == 0 && l[klen] == ' ')
			return strtoull(l + klen + 1, NULL, 10);
	return 0;
}

uint64_t
limits_oom_kills(const char *id)
{
	if (mode == SBX_LIMITS_UNIT)
	{
		const char *g2 = unit_scope_cgroup(id, false), *g1 = unit_scope_cgroup(id, true);
		uint64_t	n = g2 ? read_key(g2, "memory.events", "oom_kill") : 0;
		return n ? n : g1 ? read_key(g1, "memory.oom_control", "oom_kill") : 0;
	}
	if (mode == SBX_LIMITS_CGROUP2)
	{
		_cleanup_(freep) char *g = v2_parent ? group_path(v2_parent, id) : NULL;
		return g ? read_key(g, "memory.events", "oom_kill") : 0;
	}
	if (mode == SBX_LIMITS_CGROUP1)
	{
		_cleanup_(freep) char *g = group_path(v1_mem, id);
		return g ? read_key(g, "memory.oom_control", "oom_kill") : 0;
	}
	return 0;
}

/* Kill every process listed in dir/cgroup.procs, until the list stays empty. */
static void
kill_procs(const char *dir)
{
	_cleanup_(freep) char *p = xasprintf("%s/cgroup.procs", dir);

	if (!p)
		return;
	for (int round = 0; round < 200; round++)
	{
		_cleanup_(freep) char *buf = NULL;
		bool				   any = false;

		if (read_full_file(AT_FDCWD, p, &buf, NULL, 1 << 20) < 0)
			return;
		for (char *s = buf; *s;)
		{
			char *end;
			long  pid = strtol(s, &end, 10);
			if (end == s)
				break;
			if (pid > 1 && pid != getpid())
			{
				kill((pid_t) pid, SIGKILL);
				any = true;
			}
			s = end;
			while (*s == '\n')
				s++;
		}
		if (!any)
			return;
		usleep(1000);
	}
}

void
limits_kill(const char *id)
{
	if (mode == SBX_LIMITS_UNIT)
	{
		/* systemd's KillUnit, and at once the scope's own cgroup.kill */
		const char *g = unit_scope_cgroup(id, false);
		unit_kill(id);
		if (g && write_at(g, "cgroup.kill", "1") < 0)
			kill_procs(g);
	}
	else if (mode == SBX_LIMITS_CGROUP2 && v2_parent)
	{
		_cleanup_(freep) char *g = group_path(v2_parent, id);
		if (g && write_at(g, "cgroup.kill", "1") < 0)
			kill_procs(g);
	}
	else if (mode == SBX_LIMITS_CGROUP1)
	{
		_cleanup_(freep) char *g = group_path(v1_pids, id);
		if (g)
			kill_procs(g);
	}
}

void
limits_release(const char *id)
{
	if (mode == SBX_LIMITS_UNIT)
	{
		unit_forget(id); /* systemd collects the empty scope */
		return;
	}
	if (mode == SBX_LIMITS_CGROUP2)
	{
		_cleanup_(freep) char *g = group_path(v2_parent, id);
		if (g && rmdir(g) < 0 && errno != ENOENT)
			log_debug("cannot remove %s yet: %m", g);
	}
	else if (mode == SBX_LIMITS_CGROUP1)
	{
		_cleanup_(freep) char *m = group_path(v1_mem, id), *p = group_path(v1_pids, id);
		if (m && rmdir(m) < 0 && errno != ENOENT)
			log_debug("cannot remove %s yet: %m", m);
		if (p && rmdir(p) < 0 && errno != ENOENT)
			log_debug("cannot remove %s yet: %m", p);
	}
}

void
limits_call_rlimits(uint64_t *as, uint64_t *nproc)
{
	*as = *nproc = 0;
	if (mode == SBX_LIMITS_RLIMIT || (mode == SBX_LIMITS_UNIT && unit_rlimits))
	{
		*as = cfg.memory_max;
		*nproc = cfg.pids_max;
	}
}

static void
cleanup_parent(const char *parent)
{
	DIR			  *d = parent ? opendir(parent) : NULL;
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d)))
	{
		if (strncmp(de->d_name, "sbx-", 4) != 0)
			continue;
		_cleanup_(freep) char *g = xasprintf("%s/%s", parent, de->d_name);
		if (!g)
			continue;
		log_notice("removing cgroup %s left by a previous run", g);
		if (mode == SBX_LIMITS_CGROUP2 && write_at(g, "cgroup.kill", "1") == 0)
			usleep(10000);
		else
			kill_procs(g);
		for (int i = 0; i < 50 && rmdir(g) < 0 && errno == EBUSY; i++)
			usleep(10000);
	}
	closedir(d);
}

void
limits_cleanup_leftovers(void)
{
	if (mode == SBX_LIMITS_CGROUP2)
		cleanup_parent(v2_parent);
	else if (mode == SBX_LIMITS_CGROUP1)
	{
		cleanup_parent(v1_pids);
		cleanup_parent(v1_mem);
	}
}

void
limits_done(void)
{
	/* Our parent groups are empty once every container is gone. */
	if (mode == SBX_LIMITS_CGROUP2 && v2_parent_ours && rmdir(v2_parent) < 0 && errno != ENOENT)
		log_debug("cannot remove %s: %m", v2_parent);
	if (mode == SBX_LIMITS_CGROUP1)
	{
		if (rmdir(v1_mem) < 0 && errno != ENOENT)
			log_debug("cannot remove %s: %m", v1_mem);
		if (rmdir(v1_pids) < 0 && errno != ENOENT)
			log_debug("cannot remove %s: %m", v1_pids);
	}
	free(v2_parent);
	free(v1_mem);
	free(v1_pids);
	v2_parent = v1_mem = v1_pids = NULL;
}
