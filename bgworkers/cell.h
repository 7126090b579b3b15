/*
 * cell.h — the embedded cell host: worker processes, each a cell
 * (cellhost.c: sessions, leases, rounds, the runtime's driver) over the
 * SPI store (store_spi.c); cell.c holds the cells' GUCs and the worker's
 * loop.
 */
#ifndef NADI_CELL_H
#define NADI_CELL_H

/* register.c: the cells' GUCs (nadi.cell_host_id, nadi.model, ...) */
extern void cell_define_gucs(void);

#endif							/* NADI_CELL_H */
