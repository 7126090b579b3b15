/*
 * metrics.h — the Prometheus text exposition (format 0.0.4) every Nadi
 * daemon serves at GET /metrics.  A daemon keeps its own counters (plain
 * integers on an event loop, atomics across threads) and renders them at
 * scrape time through a metrics_out: each family gets its HELP and TYPE
 * once, label values are escaped, names are checked, and every exposition
 * starts with
 *
 *     nadi_build_info{daemon="nadi-edge",version="1.1.0",extension_version="1.1"} 1
 *
 * The samples of one family must be written one after the other (as the
 * format requires); a family written again later, or an invalid name, makes
 * metrics_end() fail (a bug, logged).  HTTP answers are counted by status
 * class under the label "code" ("1xx" ... "5xx", "other").
 */
#ifndef NADI_DAEMONLIB_METRICS_H
#define NADI_DAEMONLIB_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
#define METRICS_BUCKETS_MAX 16

/* NULL-terminated label name/value pairs: METRICS_LABELS("tool", "exec", "outcome", "ok"). */
#define METRICS_LABELS(...) ((const char *const[]){__VA_ARGS__, NULL})

struct metrics_out;

/*
 * A histogram: le holds n_le ascending upper bounds (at most
 * METRICS_BUCKETS_MAX); counts are per bucket, not cumulative, counts[n_le]
 * the observations above the last bound.  Callers lock if threads share it.
 */
struct metrics_histogram
{
	const double *le;
	size_t		  n_le;
	uint64_t	  counts[METRICS_BUCKETS_MAX + 1];
	uint64_t	  count;
	double		  sum;
};

#define METRICS_HISTOGRAM_INIT(bounds) \
	{ \
		.le = (bounds), .n_le = sizeof(bounds) / sizeof((bounds)[0]) \
	}

void metrics_histogram_observe(struct metrics_histogram *h, double value);

/* Status classes of HTTP answers: the index into a counts[METRICS_HTTP_CLASSES] array. */
#define METRICS_HTTP_CLASSES 6
unsigned metrics_http_class(unsigned status); /* 1..5 for 1xx..5xx, 0 otherwise */

/* A new exposition, with nadi_build_info of daemon ("nadi-edge"); NULL when out of memory. */
struct metrics_out *metrics_begin(const char *daemon);
void				metrics_counter(struct metrics_out *o, const char *name, const char *help,
									const char *const *labels, uint64_t value);
void				metrics_gauge(struct metrics_out *o, const char *name, const char *help,
								  const char *const *labels, double value);
void				metrics_histogram(struct metrics_out *o, const char *name, const char *help,
									  const char *const *labels, const struct metrics_histogram *h);
/* A counter whose value is not a whole number (seconds spent, ...). */
void metrics_counter_f(struct metrics_out *o, const char *name, const char *help,
					   const char *const *labels, double value);
/* NAME{code="1xx"} ... NAME{code="5xx"}, NAME{code="other"}: counts indexed by metrics_http_class(). */
void metrics_http_codes(struct metrics_out *o, const char *name, const char *help,
						const uint64_t counts[METRICS_HTTP_CLASSES]);

/*
 * The text (malloc'd, NUL-terminated, ending in a newline) and its length;
 * NULL when out of memory or on a misuse.  Frees o either way.
 */
char *metrics_end(struct metrics_out *o, size_t *len);

#endif
