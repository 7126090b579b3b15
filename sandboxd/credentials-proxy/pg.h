/*
 * pg.h — the libpq adapter: a small pool of connections (as a role in
 * nadi_sandbox_host) shared by the connection threads, and the two calls
 * the proxy makes: nadi.proxy_authorize() before an exchange and
 * nadi.proxy_finish() after it.
 */
#ifndef CP_PG_H
#define CP_PG_H

#include <jansson.h>
#include <stdint.h>

int	 pg_init(void);
void pg_done(void);

/*
 * Ask whether the exchange may happen.  0 with *answer (the function's
 * jsonb; caller decrefs); -EIO when the database cannot be reached or
 * answered with an error (*errcode gets its SQLSTATE, "" when there is
 * none), -EBUSY when no pooled connection became free in time.
 */
int pg_authorize(const char *token, const char *sandbox_id, const char *upstream,
				 const char *method, const char *path, json_t **answer, char errcode[6]);

/* Record the end of an allowed exchange; status 0 and error NULL stand for SQL NULL. */
int pg_finish(int64_t exchange_id, unsigned status, uint64_t bytes_up, uint64_t bytes_down,
			  double duration_ms, const char *error);

#endif
