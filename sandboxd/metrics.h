/*
 * metrics.h — counters and histograms exported at GET /metrics in the
 * Prometheus text format.  Updated from the event loop only (no locking).
 */
#ifndef SBX_METRICS_H
#define SBX_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

void metrics_http(unsigned status);
void metrics_call(const char *tool, const char *outcome, bool cold, uint64_t duration_us);
void metrics_container_started(uint64_t ms);
void metrics_container_failed(void);
/* Render the whole exposition; the caller frees the result. */
char *metrics_render(size_t *len);

#endif
