/*
 * evloop.h — the one event loop of the single-threaded daemons (nadi-edge,
 * nadi-sandboxd): an epoll set of descriptors and a sorted list of one-shot
 * millisecond timers, run by one thread.  Callbacks run on that thread
 * only and must not block.
 *
 * An io may be stopped (and its memory freed) from any callback: events
 * already fetched for it in the current round are dropped.  A timer may be
 * armed or cancelled from any callback, its own included; a timer armed
 * while the due ones run waits for the next round.
 */
#ifndef NADI_DAEMONLIB_EVLOOP_H
#define NADI_DAEMONLIB_EVLOOP_H

#include <stdbool.h>
#include <stdint.h>

typedef struct EvIo EvIo;
typedef void (*EvIoFn)(EvIo *io, uint32_t events);

struct EvIo
{
	int		 fd;
	uint32_t events; /* EPOLLIN, EPOLLOUT, ... */
	EvIoFn	 fn;
	void	*data;
	bool	 added; /* in the epoll set */
};

typedef struct EvTimer EvTimer;
typedef void (*EvTimerFn)(EvTimer *t);

struct EvTimer
{
	uint64_t  due_ms; /* CLOCK_MONOTONIC */
	uint64_t  seq;	  /* when it was armed: see ev_run_once */
	EvTimerFn fn;
	void	 *data;
	EvTimer	 *next;
	bool	  armed;
};

/* Create the epoll set; -errno. */
extern int	ev_init(void);
extern void ev_done(void);

/*
 * Watch fd for events, calling fn(io, revents); an io already watched is
 * changed (a new fd replaces the old one).  -errno.
 */
extern int ev_io_start(EvIo *io, int fd, uint32_t events, EvIoFn fn, void *data);
/* Change what a watched io waits for; -EINVAL when it is not watched. */
extern int ev_io_modify(EvIo *io, uint32_t events);
/* Stop watching; safe on an io never started or already stopped. */
extern void ev_io_stop(EvIo *io);

/* Call fn(t) once, after_ms from now; an armed timer is moved. */
extern void ev_timer_arm(EvTimer *t, uint64_t after_ms, EvTimerFn fn, void *data);
extern void ev_timer_cancel(EvTimer *t);

/*
 * Wait at most max_wait_ms (negative: no limit; less when a timer is due
 * sooner or ev_wake_soon was called), then run the callbacks of what is
 * ready and the timers that are due.  0, or -errno when epoll fails.
 */
extern int ev_run_once(int64_t max_wait_ms);
/* Make the next wait return at once (work queued outside the epoll set). */
extern void ev_wake_soon(void);

/* The clocks as of the last wake-up: monotonic ms, and seconds since the epoch. */
extern uint64_t ev_now_ms(void);
extern int64_t	ev_wall_s(void);

#endif /* NADI_DAEMONLIB_EVLOOP_H */
