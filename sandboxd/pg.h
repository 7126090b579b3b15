/*
 * pg.h — registration of this host in Postgres: nadi.sandbox_host_register
 * once connected, nadi.sandbox_host_heartbeat on a timer, over a
 * non-blocking libpq connection driven by the event loop.  Optional: with no
 * pg_conninfo the daemon runs unregistered.
 */
#ifndef SBX_PG_H
#define SBX_PG_H

#include <stdbool.h>

int pg_init(void);
void pg_done(void);
bool pg_registered(void);

#endif
