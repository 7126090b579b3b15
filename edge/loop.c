/*
 * loop.c — the one event loop of nadi-edge: an epoll set holding the HTTP
 * server's epoll fd, the libpq sockets, the signalfd and every upgraded
 * WebSocket, plus a sorted list of one-shot timers.  Callbacks run on this
 * thread only; none of them may block.
 */
#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "edge.h"

#define LOOP_MAX_EVENTS 256

static int	epfd = -1;
static uint64_t now_ms;
static int64_t wall_s;
static EdgeTimer *timers;		/* sorted by due_ms */
static struct epoll_event batch[LOOP_MAX_EVENTS];
static int	batch_n;
static int	batch_i;
static bool wake_soon;

static void
loop_clock(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	now_ms = (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
	clock_gettime(CLOCK_REALTIME, &ts);
	wall_s = ts.tv_sec;
}

int
loop_init(void)
{
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0)
		return -errno;
	loop_clock();
	return 0;
}

uint64_t
loop_now_ms(void)
{
	return now_ms;
}

int64_t
loop_wall_s(void)
{
	return wall_s;
}

void
loop_wake_soon(void)
{
	wake_soon = true;
}

/* Add a descriptor, or change what it waits for. */
int
loop_watch(EdgeWatch *w, int fd, uint32_t events, EdgeWatchFn fn, void *data)
{
	struct epoll_event ev = {.events = events, .data.ptr = w};
	int			op;

	if (w->added && w->fd != fd)
		loop_unwatch(w);
	op = w->added ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
	if (w->added && w->events == events)
	{
		w->fn = fn;
		w->data = data;
		return 0;
	}
	/*
	 * A descriptor closed behind our back (libpq reconnecting inside
	 * PQconnectPoll) left the set; its number may be back as a new socket.
	 */
	if (epoll_ctl(epfd, op, fd, &ev) < 0 &&
		(op != EPOLL_CTL_MOD || errno != ENOENT || epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0))
		return -errno;
	w->fd = fd;
	w->events = events;
	w->fn = fn;
	w->data = data;
	w->added = true;
	return 0;
}

/*
 * Remove a descriptor.  Events already fetched for it in this iteration are
 * dropped, so its owner may free it right after.
 */
void
loop_unwatch(EdgeWatch *w)
{
	if (!w->added)
		return;
	/* the fd may already be closed by libpq; ignore EBADF/ENOENT */
	(void) epoll_ctl(epfd, EPOLL_CTL_DEL, w->fd, NULL);
	w->added = false;
	for (int i = batch_i + 1; i < batch_n; i++)
		if (batch[i].data.ptr == w)
			batch[i].data.ptr = NULL;
}

void
loop_timer_cancel(EdgeTimer *t)
{
	EdgeTimer **pp;

	if (!t->armed)
		return;
	for (pp = &timers; *pp; pp = &(*pp)->next)
		if (*pp == t)
		{
			*pp = t->next;
			break;
		}
	t->armed = false;
	t->next = NULL;
}

void
loop_timer_arm(EdgeTimer *t, uint64_t delay_ms, EdgeTimerFn fn, void *data)
{
	EdgeTimer **pp;

	loop_timer_cancel(t);
	t->due_ms = now_ms + delay_ms;
	t->fn = fn;
	t->data = data;
	for (pp = &timers; *pp && (*pp)->due_ms <= t->due_ms; pp = &(*pp)->next)
		;
	t->next = *pp;
	*pp = t;
	t->armed = true;
}

static void
loop_run_timers(void)
{
	while (timers && timers->due_ms <= now_ms)
	{
		EdgeTimer  *t = timers;

		timers = t->next;
		t->next = NULL;
		t->armed = false;
		t->fn(t);
	}
}

/*
 * Wait for at most max_wait_ms (less if a timer is due sooner), then run
 * the callbacks of what is ready and the timers that are due.
 */
int
loop_run_once(int max_wait_ms)
{
	int			wait = max_wait_ms;

	if (timers)
	{
		int64_t		d = (int64_t) timers->due_ms - (int64_t) now_ms;

		if (d < 0)
			d = 0;
		if (wait < 0 || d < wait)
			wait = (int) d;
	}
	if (wake_soon)
		wait = 0;
	wake_soon = false;

	batch_n = epoll_wait(epfd, batch, LOOP_MAX_EVENTS, wait);
	if (batch_n < 0)
	{
		batch_n = 0;
		if (errno != EINTR)
			return -errno;
	}
	loop_clock();
	for (batch_i = 0; batch_i < batch_n; batch_i++)
	{
		EdgeWatch  *w = batch[batch_i].data.ptr;

		if (w && w->added)
			w->fn(w, batch[batch_i].events);
	}
	batch_n = 0;
	batch_i = 0;
	loop_run_timers();
	return 0;
}
