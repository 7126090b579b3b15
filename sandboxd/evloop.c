/*
 * evloop.c — the daemon's single event loop: one epoll instance for every
 * file descriptor (HTTP servers, container pipes, child pidfds, the libpq
 * socket, signals) and a short list of millisecond timers.  Nothing in the
 * daemon blocks on I/O outside this loop.
 */
#include <string.h>
#include <sys/epoll.h>
#include <time.h>

#include "sbx.h"

static int epfd = -1;
static struct ev_timer *timers; /* unsorted; there are few of them */

int
ev_init(void)
{
	epfd = epoll_create1(EPOLL_CLOEXEC);
	return epfd < 0 ? -errno : 0;
}

void
ev_done(void)
{
	if (epfd >= 0)
		close(epfd);
	epfd = -1;
}

int
ev_io_start(struct ev_io *io, int fd, uint32_t events, ev_io_cb cb, void *data)
{
	struct epoll_event ee = {.events = events, .data.ptr = io};

	io->fd = fd;
	io->events = events;
	io->cb = cb;
	io->data = data;
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ee) < 0)
		return -errno;
	io->added = true;
	return 0;
}

int
ev_io_modify(struct ev_io *io, uint32_t events)
{
	struct epoll_event ee = {.events = events, .data.ptr = io};

	if (!io->added)
		return -EINVAL;
	if (io->events == events)
		return 0;
	if (epoll_ctl(epfd, EPOLL_CTL_MOD, io->fd, &ee) < 0)
		return -errno;
	io->events = events;
	return 0;
}

/*
 * Stop watching io.  Safe to call on an io that was never started.  Events
 * already fetched for it in the current round are dropped (see ev_run_once).
 */
static struct ev_io *stopped[256];
static size_t n_stopped;

void
ev_io_stop(struct ev_io *io)
{
	if (!io->added)
		return;
	epoll_ctl(epfd, EPOLL_CTL_DEL, io->fd, NULL);
	io->added = false;
	if (n_stopped < ARRAY_SIZE(stopped))
		stopped[n_stopped++] = io;
}

void
ev_timer_arm(struct ev_timer *t, uint64_t after_ms, ev_timer_cb cb, void *data)
{
	if (!t->armed) {
		t->next = timers;
		timers = t;
	}
	t->armed = true;
	t->deadline = now_ms() + after_ms;
	t->cb = cb;
	t->data = data;
}

void
ev_timer_cancel(struct ev_timer *t)
{
	if (!t->armed)
		return;
	for (struct ev_timer **pp = &timers; *pp; pp = &(*pp)->next)
		if (*pp == t) {
			*pp = t->next;
			break;
		}
	t->armed = false;
	t->next = NULL;
}

static void
run_timers(void)
{
	uint64_t now = now_ms();
	bool fired;

	/* A callback may arm or cancel any timer, so restart the scan after each. */
	do {
		fired = false;
		for (struct ev_timer *t = timers; t; t = t->next) {
			if (t->deadline <= now) {
				ev_timer_cancel(t);
				t->cb(t);
				fired = true;
				break;
			}
		}
	} while (fired);
}

int
ev_run_once(int64_t max_ms)
{
	struct epoll_event evs[32];
	uint64_t now = now_ms();
	int64_t timeout = max_ms;
	int n;

	for (struct ev_timer *t = timers; t; t = t->next) {
		int64_t d = t->deadline > now ? (int64_t)(t->deadline - now) : 0;
		if (timeout < 0 || d < timeout)
			timeout = d;
	}
	if (timeout > INT32_MAX)
		timeout = INT32_MAX;

	n = epoll_wait(epfd, evs, ARRAY_SIZE(evs), (int)timeout);
	if (n < 0) {
		if (errno == EINTR)
			return 0;
		return -errno;
	}
	n_stopped = 0;
	for (int i = 0; i < n; i++) {
		struct ev_io *io = evs[i].data.ptr;
		bool gone = false;

		/* Skip events of an io stopped (and maybe freed) earlier in this round. */
		for (size_t j = 0; j < n_stopped; j++)
			if (stopped[j] == io)
				gone = true;
		if (gone || !io->added)
			continue;
		io->cb(io, evs[i].events);
	}
	n_stopped = 0;
	run_timers();
	return 0;
}
