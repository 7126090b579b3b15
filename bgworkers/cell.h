/*
 * cell.h — the embedded cell host: worker processes that hold session
 * leases and run the agent runtime (cell.c: leases, sessions, the main
 * loop and the runtime's host; runtime*.c: one command; store_spi.c: the
 * store over SPI).
 */
#ifndef NADI_CELL_H
#define NADI_CELL_H

/* register.c: the cells' GUCs (nadi.cell_host_id, nadi.model, ...) */
extern void cell_define_gucs(void);

#endif							/* NADI_CELL_H */
