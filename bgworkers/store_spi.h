/*
 * store_spi.h — the embedded cell's store: cell_store.h's interface over SPI,
 * for code running in a PostgreSQL background worker (outside any
 * transaction: each call starts and ends its own).
 */
#ifndef NADI_STORE_SPI_H
#define NADI_STORE_SPI_H

#include "cell_store.h"

extern const CellStore store_spi;

#endif							/* NADI_STORE_SPI_H */
