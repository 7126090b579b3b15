/*
 * sched.c — background fetches and the limit on parallel ones.  One
 * scheduler thread inspects the mirrors adopted at start, then queues every
 * repository whose refresh is due (and configured ones that have no mirror
 * yet); max_parallel_fetches worker threads take jobs off that queue.  Every
 * clone or fetch, background or on demand, holds one of max_parallel_fetches
 * slots while git runs.
 */
#include <string.h>

#include "gitd.h"

atomic_bool gitd_stopping;

struct job
{
	struct repo *repo;
	struct job	*next;
};

static pthread_mutex_t q_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t  q_cond = PTHREAD_COND_INITIALIZER; /* workers: a job or the stop */
static pthread_cond_t  tick_cond; /* scheduler: the stop (CLOCK_MONOTONIC) */
static pthread_cond_t  slot_cond = PTHREAD_COND_INITIALIZER;
static struct job	  *q_head, *q_tail;
static unsigned		   slots_used;
static pthread_t	   sched_thread, *workers;
static size_t		   n_workers;
static bool			   sched_running;

int
sched_enqueue(struct repo *r)
{
	struct job *j = malloc(sizeof *j);

	if (!j)
		return -ENOMEM;
	j->repo = r;
	j->next = NULL;
	pthread_mutex_lock(&q_lock);
	if (q_tail)
		q_tail->next = j;
	else
		q_head = j;
	q_tail = j;
	pthread_cond_signal(&q_cond);
	pthread_mutex_unlock(&q_lock);
	return 0;
}

static void *
worker_main(void *arg)
{
	(void) arg;
	for (;;)
	{
		struct job *j;

		pthread_mutex_lock(&q_lock);
		while (!q_head && !gitd_stopping)
			pthread_cond_wait(&q_cond, &q_lock);
		if (gitd_stopping)
		{
			pthread_mutex_unlock(&q_lock);
			return NULL;
		}
		j = q_head;
		q_head = j->next;
		if (!q_head)
			q_tail = NULL;
		pthread_mutex_unlock(&q_lock);
		repo_run_queued(j->repo);
		free(j);
	}
}

static void *
sched_main(void *arg)
{
	(void) arg;
	repo_inspect_adopted();
	pthread_mutex_lock(&q_lock);
	while (!gitd_stopping)
	{
		pthread_mutex_unlock(&q_lock);
		uint64_t wait = repo_queue_due(now_ms());
		pthread_mutex_lock(&q_lock);
		/* Wake at least every second: fetches that end move due times. */
		wait = MIN(MAX(wait, (uint64_t) 20), (uint64_t) 1000);
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += (time_t) (wait / 1000);
		ts.tv_nsec += (long) (wait % 1000) * 1000000;
		if (ts.tv_nsec >= 1000000000)
		{
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		while (!gitd_stopping && pthread_cond_timedwait(&tick_cond, &q_lock, &ts) == 0)
			;
	}
	pthread_mutex_unlock(&q_lock);
	return NULL;
}

int
sched_start(void)
{
	pthread_condattr_t ca;
	int				   r;

	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&tick_cond, &ca);
	pthread_condattr_destroy(&ca);

	workers = calloc(cfg.max_parallel_fetches, sizeof *workers);
	if (!workers)
		return -ENOMEM;
	for (n_workers = 0; n_workers < cfg.max_parallel_fetches; n_workers++)
	{
		r = pthread_create(&workers[n_workers], NULL, worker_main, NULL);
		if (r)
			return -r;
	}
	r = pthread_create(&sched_thread, NULL, sched_main, NULL);
	if (r)
		return -r;
	sched_running = true;
	return 0;
}

/* gitd_stopping is set: wake everyone, join the threads, drop the queue. */
void
sched_stop(void)
{
	pthread_mutex_lock(&q_lock);
	pthread_cond_broadcast(&q_cond);
	pthread_cond_broadcast(&tick_cond);
	pthread_mutex_unlock(&q_lock);
	pthread_mutex_lock(&q_lock);
	pthread_cond_broadcast(&slot_cond);
	pthread_mutex_unlock(&q_lock);
	if (sched_running)
		pthread_join(sched_thread, NULL);
	for (size_t i = 0; i < n_workers; i++)
		pthread_join(workers[i], NULL);
	free(workers);
	workers = NULL;
	n_workers = 0;
	while (q_head)
	{
		struct job *j = q_head;
		q_head = j->next;
		repo_run_queued(j->repo); /* stopping: only drops the reference */
		free(j);
	}
	q_tail = NULL;
}

int
slot_acquire(void)
{
	pthread_mutex_lock(&q_lock);
	while (slots_used >= cfg.max_parallel_fetches && !gitd_stopping)
		pthread_cond_wait(&slot_cond, &q_lock);
	if (gitd_stopping)
	{
		pthread_mutex_unlock(&q_lock);
		return -ECANCELED;
	}
	slots_used++;
	pthread_mutex_unlock(&q_lock);
	return 0;
}

void
slot_release(void)
{
	pthread_mutex_lock(&q_lock);
	slots_used--;
	pthread_cond_signal(&slot_cond);
	pthread_mutex_unlock(&q_lock);
}
