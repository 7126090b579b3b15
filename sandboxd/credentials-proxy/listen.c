/*
 * listen.c — listening sockets and connection accounting (see listen.h).
 *
 * The sandbox directory is watched with inotify (IN_CREATE, IN_MOVED_TO,
 * IN_DELETE, IN_MOVED_FROM on directories) and scanned at start-up and
 * after an event-queue overflow.  Everything here that touches listeners
 * runs on the main thread; the counters and the sandboxes' reference counts
 * are shared with the connection threads under `lock`.
 *
 * How an accepted socket keeps its sandbox: the client record is put in a
 * list keyed by the socket's fd before MHD_add_connection; MHD's "started"
 * notification (run before the connection's thread reads anything) takes
 * it out into the connection's socket context.  The fd stays open from
 * accept until MHD closes it, so no other connection can have the same fd
 * while the record waits.
 */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "daemonlib/listener.h"
#include "credproxy.h"
#include "http.h"
#include "listen.h"

#define ACCEPT_BATCH 64

struct sandbox
{
	char			id[CP_SANDBOX_ID_MAX + 1];
	char		   *sock_path;
	struct watch	w; /* the listening socket */
	bool			open;
	unsigned		conns; /* under lock */
	unsigned		refs;  /* under lock: the open listener and each client */
	struct sandbox *next;  /* main thread only */
};

struct main_listener
{
	struct watch w;
	char		*unix_path;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct client  *pending;	  /* accepted, not yet started */
static unsigned		   n_clients; /* under lock */
static atomic_uint	   n_open_sandboxes;

static int					epfd = -1;
static struct sandbox	   *sandboxes;
static struct main_listener mains[2];
static size_t				n_mains;
static struct watch			inotify_w = {.fd = -1, .late = true};
static int					dir_wd = -1;

const char *
sandbox_id(const struct sandbox *s)
{
	return s->id;
}

unsigned
listen_sandbox_count(void)
{
	return atomic_load(&n_open_sandboxes);
}

unsigned
listen_client_count(void)
{
	unsigned n;

	pthread_mutex_lock(&lock);
	n = n_clients;
	pthread_mutex_unlock(&lock);
	return n;
}

/* Under lock. */
static void
sandbox_unref_locked(struct sandbox *s)
{
	if (--s->refs == 0)
	{
		free(s->sock_path);
		free(s);
	}
}

/* ---- clients ------------------------------------------------------------------ */

struct client *
client_started(int fd)
{
	struct client *c = NULL;

	pthread_mutex_lock(&lock);
	for (struct client **pp = &pending; *pp; pp = &(*pp)->next)
		if ((*pp)->fd == fd)
		{
			c = *pp;
			*pp = c->next;
			break;
		}
	if (!c)
		c = calloc(1, sizeof *c); /* cannot happen: treat as a main-listener client */
	if (c)
	{
		n_clients++;
		if (c->sbx)
			c->sbx->conns++;
		c->over_limit = n_clients > cfg.max_connections ||
						(c->sbx && c->sbx->conns > cfg.max_sandbox_connections);
		c->next = NULL;
	}
	pthread_mutex_unlock(&lock);
	return c;
}

void
client_closed(struct client *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&lock);
	n_clients--;
	if (c->sbx)
	{
		c->sbx->conns--;
		sandbox_unref_locked(c->sbx);
	}
	pthread_mutex_unlock(&lock);
	free(c->access.path); /* a request cut short without its end (none expected) */
	free(c);
}

static void
accept_on(int lfd, struct sandbox *s)
{
	for (int i = 0; i < ACCEPT_BATCH; i++)
	{
		struct sockaddr_storage sa;
		socklen_t				len = sizeof sa;
		struct client		   *c;
		int fd = accept4(lfd, (struct sockaddr *) &sa, &len, SOCK_CLOEXEC | SOCK_NONBLOCK);

		if (fd < 0)
		{
			if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				log_warning("accept on %s: %m", s ? s->id : "the main listener");
			return;
		}
		c = calloc(1, sizeof *c);
		if (!c)
		{
			close(fd);
			continue;
		}
		c->fd = fd;
		c->sbx = s;
		pthread_mutex_lock(&lock);
		if (s)
			s->refs++;
		/* A record left by a socket MHD closed without "started" has this fd no more. */
		for (struct client **pp = &pending; *pp; pp = &(*pp)->next)
			if ((*pp)->fd == fd)
			{
				struct client *old = *pp;
				*pp = old->next;
				if (old->sbx)
					sandbox_unref_locked(old->sbx);
				free(old);
				break;
			}
		c->next = pending;
		pending = c;
		pthread_mutex_unlock(&lock);
		if (len < sizeof(sa_family_t))
		{
			sa.ss_family = AF_UNIX;
			len = sizeof(sa_family_t);
		}
		if (http_add_connection(fd, (struct sockaddr *) &sa, len) < 0)
		{
			/* MHD closed the fd; drop the record unless "started" took it. */
			pthread_mutex_lock(&lock);
			for (struct client **pp = &pending; *pp; pp = &(*pp)->next)
				if (*pp == c)
				{
					*pp = c->next;
					if (c->sbx)
						sandbox_unref_locked(c->sbx);
					free(c);
					break;
				}
			pthread_mutex_unlock(&lock);
		}
	}
}

/* ---- sockets ------------------------------------------------------------------ */

static void
on_main(struct watch *w, uint32_t events)
{
	(void) events;
	accept_on(w->fd, NULL);
}

static uint16_t tcp_port;

uint16_t
listen_tcp_port(void)
{
	return tcp_port;
}

static int
tcp_listen(const char *spec)
{
	struct sockaddr_in sin;
	int				   fd;

	if (listen_addr_parse(spec, &sin) < 0)
		return -EINVAL;
	fd = listen_tcp_socket(&sin, &tcp_port);
	if (fd >= 0)
		listen_log_tcp(&sin, tcp_port);
	return fd;
}

static int
watch_add(struct watch *w)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = w};

	return epoll_ctl(epfd, EPOLL_CTL_ADD, w->fd, &ev) < 0 ? -errno : 0;
}

static void
watch_close(struct watch *w)
{
	if (w->fd < 0)
		return;
	epoll_ctl(epfd, EPOLL_CTL_DEL, w->fd, NULL);
	close(w->fd);
	w->fd = -1;
}

static int
add_main(const char *unix_path, const char *tcp)
{
	struct main_listener *m = &mains[n_mains];
	int					  fd = unix_path ? listen_unix_socket(unix_path, 0666) : tcp_listen(tcp);

	if (fd < 0)
	{
		errno = -fd;
		if (tcp && fd == -EINVAL)
			log_error("listen_tcp must be PORT or IPV4:PORT, not \"%s\"", tcp);
		else
			log_error("cannot listen on %s: %m", unix_path ? unix_path : tcp);
		return fd;
	}
	m->w.fd = fd;
	m->w.cb = on_main;
	m->unix_path = unix_path ? strdup(unix_path) : NULL;
	n_mains++;
	if (unix_path)
		log_info("listening on unix:%s", unix_path);
	return watch_add(&m->w);
}

/* ---- sandboxes ---------------------------------------------------------------- */

static void
on_sandbox(struct watch *w, uint32_t events)
{
	struct sandbox *s = (struct sandbox *) ((char *) w - offsetof(struct sandbox, w));
	(void) events;
	accept_on(w->fd, s);
}

static struct sandbox *
sandbox_find(const char *id)
{
	for (struct sandbox *s = sandboxes; s; s = s->next)
		if (strcmp(s->id, id) == 0)
			return s;
	return NULL;
}

static void
sandbox_open(const char *id)
{
	char			dir[PATH_MAX];
	struct sandbox *s;
	struct stat		st;
	int				fd;

	if (!sandbox_id_valid(id, strlen(id)) || sandbox_find(id))
		return;
	snprintf(dir, sizeof dir, "%s/%s", cfg.sandbox_dir, id);
	if (lstat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
		return; /* gone again, or not a directory of its own */
	if (listen_sandbox_count() >= cfg.max_sandboxes)
	{
		log_warning("sandbox %s: not listening, already %u sandboxes (max_sandboxes)", id,
					listen_sandbox_count());
		return;
	}
	s = calloc(1, sizeof *s);
	if (!s || !(s->sock_path = xasprintf("%s/proxy.sock", dir)))
	{
		free(s);
		log_error("sandbox %s: out of memory", id);
		return;
	}
	snprintf(s->id, sizeof s->id, "%s", id);
	if (strlen(s->sock_path) < sizeof(((struct sockaddr_un *) 0)->sun_path))
		fd = listen_unix_socket(s->sock_path, 0666);
	else
	{
		/* Too long for sun_path: bind through the directory's fd instead. */
		char short_path[64];
		int	 dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		snprintf(short_path, sizeof short_path, "/proc/self/fd/%d/proxy.sock", dfd);
		fd = dfd < 0 ? -errno : listen_unix_socket(short_path, 0666);
		if (dfd >= 0)
			close(dfd);
	}
	if (fd < 0)
	{
		errno = -fd;
		log_error("sandbox %s: cannot listen on %s: %m", id, s->sock_path);
		free(s->sock_path);
		free(s);
		return;
	}
	s->w.fd = fd;
	s->w.cb = on_sandbox;
	s->open = true;
	s->refs = 1;
	if (watch_add(&s->w) < 0)
	{
		log_error("sandbox %s: epoll: %m", id);
		close(fd);
		unlink(s->sock_path);
		free(s->sock_path);
		free(s);
		return;
	}
	s->next = sandboxes;
	sandboxes = s;
	atomic_fetch_add(&n_open_sandboxes, 1);
	log_info("sandbox %s: listening on %s", id, s->sock_path);
}

static void
sandbox_close(struct sandbox *s, bool remove_socket)
{
	for (struct sandbox **pp = &sandboxes; *pp; pp = &(*pp)->next)
		if (*pp == s)
		{
			*pp = s->next;
			break;
		}
	watch_close(&s->w);
	if (remove_socket)
		unlink(s->sock_path);
	s->open = false;
	atomic_fetch_sub(&n_open_sandboxes, 1);
	log_info("sandbox %s: listener closed", s->id);
	pthread_mutex_lock(&lock);
	sandbox_unref_locked(s);
	pthread_mutex_unlock(&lock);
}

/* Listen for every sandbox directory there is; close those that are gone. */
static void
scan(void)
{
	DIR			   *d = opendir(cfg.sandbox_dir);
	struct dirent  *de;
	struct sandbox *s, *next;

	if (!d)
	{
		log_error("cannot read sandbox directory %s: %m", cfg.sandbox_dir);
		return;
	}
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			sandbox_open(de->d_name);
	closedir(d);
	for (s = sandboxes; s; s = next)
	{
		char		dir[PATH_MAX];
		struct stat st;
		next = s->next;
		snprintf(dir, sizeof dir, "%s/%s", cfg.sandbox_dir, s->id);
		if (lstat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
			sandbox_close(s, false);
	}
}

static void
on_inotify(struct watch *w, uint32_t events)
{
	char	buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
	bool	rescan = false;
	ssize_t n;

	(void) events;
	while ((n = read(w->fd, buf, sizeof buf)) > 0)
	{
		for (char *p = buf; p < buf + n;)
		{
			const struct inotify_event *ev = (const struct inotify_event *) p;
			p += sizeof *ev + ev->len;
			if (ev->mask & IN_Q_OVERFLOW)
			{
				rescan = true;
				continue;
			}
			if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED))
			{
				if (dir_wd < 0)
					continue;
				dir_wd = -1;
				log_error(
					"sandbox directory %s was removed: no new sandbox sockets until a restart",
					cfg.sandbox_dir);
				while (sandboxes)
					sandbox_close(sandboxes, false);
				continue;
			}
			if (!(ev->mask & IN_ISDIR) || ev->len == 0)
				continue;
			if (ev->mask & (IN_CREATE | IN_MOVED_TO))
				sandbox_open(ev->name);
			else if (ev->mask & (IN_DELETE | IN_MOVED_FROM))
			{
				struct sandbox *s = sandbox_find(ev->name);
				if (s)
					sandbox_close(s, false);
			}
		}
	}
	if (rescan)
	{
		log_warning("inotify queue overflow: rescanning %s", cfg.sandbox_dir);
		scan();
	}
}

static int
mkdir_p(const char *path, mode_t mode)
{
	char buf[PATH_MAX];

	if (snprintf(buf, sizeof buf, "%s", path) >= (int) sizeof buf)
		return -ENAMETOOLONG;
	for (char *p = buf + 1; *p; p++)
		if (*p == '/')
		{
			*p = '\0';
			if (mkdir(buf, 0755) < 0 && errno != EEXIST)
				return -errno;
			*p = '/';
		}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int
listen_init(int epoll_fd)
{
	int r;

	epfd = epoll_fd;
	if (cfg.listen_unix && (r = add_main(cfg.listen_unix, NULL)) < 0)
		return r;
	if (cfg.listen_tcp && (r = add_main(NULL, cfg.listen_tcp)) < 0)
		return r;
	if (n_mains == 0)
		log_notice("no main listener (listen_tcp, listen_unix): serving sandboxes only");

	r = mkdir_p(cfg.sandbox_dir, 0755);
	if (r < 0)
	{
		errno = -r;
		log_error("cannot create sandbox directory %s: %m", cfg.sandbox_dir);
		return r;
	}
	inotify_w.fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (inotify_w.fd < 0)
	{
		log_error("inotify: %m");
		return -errno;
	}
	inotify_w.cb = on_inotify;
	/* Watch first, then scan: a directory made in between is seen twice, never missed. */
	dir_wd = inotify_add_watch(inotify_w.fd, cfg.sandbox_dir,
							   IN_CREATE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM |
								   IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR);
	if (dir_wd < 0)
	{
		log_error("cannot watch sandbox directory %s: %m", cfg.sandbox_dir);
		return -errno;
	}
	r = watch_add(&inotify_w);
	if (r < 0)
		return r;
	scan();
	log_info("watching %s for sandboxes (%u listening)", cfg.sandbox_dir, listen_sandbox_count());
	return 0;
}

void
listen_stop(void)
{
	for (size_t i = 0; i < n_mains; i++)
	{
		watch_close(&mains[i].w);
		if (mains[i].unix_path)
			unlink(mains[i].unix_path);
		free(mains[i].unix_path);
		mains[i].unix_path = NULL;
	}
	n_mains = 0;
	while (sandboxes)
		sandbox_close(sandboxes, true);
	watch_close(&inotify_w);
}
