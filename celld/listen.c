/*
 * listen.c — wake-ups without polling: one non-blocking connection
 * (daemonlib/pq) in the event loop that LISTENs on nadi_cell.  A commit
 * that enqueues a command for a host with no embedded cell attached
 * notifies that channel with the host id as its payload (src/wake.c); a
 * payload equal to ours wakes the cell, others are ignored.  When the
 * connection comes (back) up the cell is woken too: notifications sent
 * while it was down are lost, so the cell looks for itself.  The cell's
 * heartbeat rounds are the safety net, not the mechanism.
 */
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>

#include "celld.h"
#include "daemonlib/evloop.h"
#include "daemonlib/log.h"

typedef enum
{
	L_DOWN,
	L_CONNECTING,
	L_LISTENING, /* LISTEN sent */
	L_UP
} ListenState;

static struct
{
	PqConn		 pq;
	PqConnParams params;
	ListenState	 state;
	EvIo		 io;
	EvTimer		 retry;
	char		 host_id[64];
	void (*on_wake)(void);
	uint64_t wakeups;
	bool	 stopped;
} L;

static void listen_connect(void);

static void
retry_fn(EvTimer *t)
{
	listen_connect();
}

static void
listen_lost(const char *why)
{
	uint64_t delay = pq_backoff_next(&L.pq.backoff);

	if (L.state == L_UP)
		log_warning("LISTEN %s: connection lost: %s (again in %llu ms)", CELLD_CHANNEL, why,
					(unsigned long long) delay);
	else
		log_info("LISTEN %s: cannot connect: %s (again in %llu ms)", CELLD_CHANNEL, why,
				 (unsigned long long) delay);
	ev_io_stop(&L.io);
	pq_conn_close(&L.pq);
	L.state = L_DOWN;
	if (!L.stopped)
		ev_timer_arm(&L.retry, delay, retry_fn, NULL);
}

static void listen_io(EvIo *io, uint32_t events);

static void
listen_watch(void)
{
	if (L.pq.fd < 0 || ev_io_start(&L.io, L.pq.fd, L.pq.events, listen_io, NULL) < 0)
		listen_lost("no socket");
}

static void
listen_results(void)
{
	PGresult *r;
	PGnotify *n;
	char	  line[PQ_ERROR_MAX];

	while (!PQisBusy(L.pq.pg) && (r = PQgetResult(L.pq.pg)) != NULL)
	{
		if (PQresultStatus(r) != PGRES_COMMAND_OK)
		{
			pq_error_line(L.pq.pg, r, line, sizeof(line));
			PQclear(r);
			listen_lost(line);
			return;
		}
		PQclear(r);
		if (L.state == L_LISTENING)
		{
			L.state = L_UP;
			log_info("listening on %s for host %s", CELLD_CHANNEL, L.host_id);
			L.on_wake(); /* what was notified while we were away */
		}
	}
	while ((n = PQnotifies(L.pq.pg)) != NULL)
	{
		if (n->extra && strcmp(n->extra, L.host_id) == 0)
		{
			L.wakeups++;
			L.on_wake();
		}
		PQfreemem(n);
	}
}

static void
listen_io(EvIo *io, uint32_t events)
{
	if (L.state == L_CONNECTING)
	{
		PqStep st = pq_conn_step(&L.pq);

		ev_io_stop(&L.io); /* the socket may have changed */
		if (st == PQ_STEP_WAIT)
			listen_watch();
		else if (st == PQ_STEP_FAILED)
			listen_lost(pq_conn_error(&L.pq));
		else if (!PQsendQuery(L.pq.pg, "LISTEN " CELLD_CHANNEL) || !pq_conn_flush(&L.pq))
			listen_lost(pq_conn_error(&L.pq));
		else
		{
			L.state = L_LISTENING;
			listen_watch();
		}
		return;
	}
	if (!pq_conn_io(&L.pq, events))
	{
		listen_lost(pq_conn_error(&L.pq));
		return;
	}
	if (events & EPOLLOUT)
		ev_io_modify(&L.io, L.pq.events);
	listen_results();
	if (L.state != L_DOWN && pq_conn_broken(&L.pq))
		listen_lost(pq_conn_error(&L.pq));
}

static void
listen_connect(void)
{
	if (pq_conn_start(&L.pq, &L.params) != PQ_STEP_WAIT)
	{
		listen_lost(pq_conn_error(&L.pq));
		return;
	}
	L.state = L_CONNECTING;
	listen_watch();
}

void
celld_listen_start(const PqConnParams *p, const char *host_id, void (*on_wake)(void))
{
	pq_conn_init(&L.pq);
	L.params = *p;
	L.on_wake = on_wake;
	L.stopped = false;
	celld_listen_set_host(host_id);
	listen_connect();
}

void
celld_listen_set_host(const char *host_id)
{
	snprintf(L.host_id, sizeof(L.host_id), "%s", host_id);
}

bool
celld_listen_up(void)
{
	return L.state == L_UP;
}

uint64_t
celld_listen_wakeups(void)
{
	return L.wakeups;
}

void
celld_listen_stop(void)
{
	L.stopped = true;
	ev_timer_cancel(&L.retry);
	ev_io_stop(&L.io);
	pq_conn_close(&L.pq);
	L.state = L_DOWN;
}
