/*
 * pg.h — registration of this host in Postgres: nadi.sandbox_host_register
 * once connected, nadi.sandbox_host_heartbeat on a timer, over a
 * non-blocking libpq connection driven by the event loop, which also
 * fetches the signing keys of nadi.jwks() for access.c.  Optional: with no
 * pg_conninfo the daemon runs unregistered and accepts only its operator
 * token.
 */
#ifndef SBX_PG_H
#define SBX_PG_H

#include <stdbool.h>

int	 pg_init(void);
void pg_done(void);
bool pg_registered(void);
/* Whether there is a connection (or an attempt) to send a query on. */
bool pg_connected(void);
/*
 * Fetch nadi.jwks() for access.c (access_keys_loaded or _failed follows):
 * now when idle, else after the query in flight.  false without a
 * connection.
 */
bool pg_jwks_request(void);
/*
 * The address nadi.sandbox_hosts has for host_id: cb(ud, address, NULL),
 * or cb(ud, NULL, why) when it has none or the query failed.  false (and no
 * call) without a connection.
 */
typedef void (*pg_host_cb)(void *ud, const char *address, const char *why);
bool pg_host_address(const char *host_id, pg_host_cb cb, void *ud);

#endif
