/*
 * evloop.c — see evloop.h.
 *
 * The timers are kept sorted by due time, so finding the next deadline and
 * running the due ones costs nothing per idle timer.  Each timer carries
 * the sequence number of its arming: a round runs only the timers armed
 * before it began, so a callback that re-arms itself with no delay runs
 * again next round, not forever in this one.
 */
#include <errno.h>
#include <stddef.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "evloop.h"
#include "util.h"

#define EV_MAX_EVENTS 256

static int				  epfd = -1;
static uint64_t			  now_ms_cached;
static int64_t			  wall_s_cached;
static EvTimer			 *timers; /* sorted by due_ms, ties in arming order */
static uint64_t			  timer_seq;
static struct epoll_event batch[EV_MAX_EVENTS];
static int				  batch_n; /* events fetched this round */
static int				  batch_i; /* the one being dispatched */
static bool				  wake_soon;

static void
clock_refresh(void)
{
	now_ms_cached = now_ms();
	wall_s_cached = (int64_t) time(NULL);
}

int
ev_init(void)
{
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0)
		return -errno;
	clock_refresh();
	return 0;
}

void
ev_done(void)
{
	if (epfd >= 0)
		close(epfd);
	epfd = -1;
	timers = NULL;
}

uint64_t
ev_now_ms(void)
{
	return now_ms_cached;
}

int64_t
ev_wall_s(void)
{
	return wall_s_cached;
}

void
ev_wake_soon(void)
{
	wake_soon = true;
}

int
ev_io_start(EvIo *io, int fd, uint32_t events, EvIoFn fn, void *data)
{
	struct epoll_event ee = {.events = events, .data.ptr = io};
	int				   op;

	if (io->added && io->fd != fd)
		ev_io_stop(io);
	io->fn = fn;
	io->data = data;
	if (io->added && io->events == events)
		return 0;
	op = io->added ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;

	/*
	 * A descriptor closed behind our back (libpq reconnecting inside
	 * PQconnectPoll) left the set; its number may be back as a new socket.
	 */
	if (epoll_ctl(epfd, op, fd, &ee) < 0 &&
		(op != EPOLL_CTL_MOD || errno != ENOENT || epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ee) < 0))
		return -errno;
	io->fd = fd;
	io->events = events;
	io->added = true;
	return 0;
}

int
ev_io_modify(EvIo *io, uint32_t events)
{
	if (!io->added)
		return -EINVAL;
	return ev_io_start(io, io->fd, events, io->fn, io->data);
}

void
ev_io_stop(EvIo *io)
{
	if (!io->added)
		return;
	/* the descriptor may be closed already (libpq): EBADF, ENOENT are fine */
	(void) epoll_ctl(epfd, EPOLL_CTL_DEL, io->fd, NULL);
	io->added = false;
	for (int i = batch_i + 1; i < batch_n; i++)
		if (batch[i].data.ptr == io)
			batch[i].data.ptr = NULL;
}

void
ev_timer_cancel(EvTimer *t)
{
	if (!t->armed)
		return;
	for (EvTimer **pp = &timers; *pp; pp = &(*pp)->next)
		if (*pp == t)
		{
			*pp = t->next;
			break;
		}
	t->armed = false;
	t->next = NULL;
}

void
ev_timer_arm(EvTimer *t, uint64_t after_ms, EvTimerFn fn, void *data)
{
	EvTimer **pp;

	ev_timer_cancel(t);
	/* not the cached clock: setup work before the first round may be long */
	t->due_ms = now_ms() + after_ms;
	t->seq = timer_seq++;
	t->fn = fn;
	t->data = data;
	for (pp = &timers; *pp && (*pp)->due_ms <= t->due_ms; pp = &(*pp)->next)
		;
	t->next = *pp;
	*pp = t;
	t->armed = true;
}

/*
 * Run the timers that are due and were armed before this round.  A timer
 * armed during it is due no sooner than any older one still due, so it
 * sorts behind them: stopping at the first such timer skips none.
 */
static void
run_timers(void)
{
	uint64_t round = timer_seq;

	while (timers && timers->due_ms <= now_ms_cached && timers->seq < round)
	{
		EvTimer *t = timers;

		timers = t->next;
		t->next = NULL;
		t->armed = false;
		t->fn(t);
	}
}

int
ev_run_once(int64_t max_wait_ms)
{
	int64_t wait = max_wait_ms;

	if (timers)
	{
		uint64_t now = now_ms();
		int64_t	 d = timers->due_ms > now ? (int64_t) (timers->due_ms - now) : 0;

		if (wait < 0 || d < wait)
			wait = d;
	}
	if (wake_soon)
		wait = 0;
	wake_soon = false;
	if (wait > INT32_MAX)
		wait = INT32_MAX;

	batch_n = epoll_wait(epfd, batch, EV_MAX_EVENTS, (int) wait);
	if (batch_n < 0)
	{
		int err = errno;

		batch_n = 0;
		if (err != EINTR)
			return -err;
	}
	clock_refresh();
	for (batch_i = 0; batch_i < batch_n; batch_i++)
	{
		EvIo *io = batch[batch_i].data.ptr;

		if (io && io->added)
			io->fn(io, batch[batch_i].events);
	}
	batch_n = 0;
	batch_i = 0;
	now_ms_cached = now_ms();
	run_timers();
	return 0;
}
