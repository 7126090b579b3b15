/*
 * clock.c — the one clock every expiry decision in nadi reads.  It is the
 * transaction's start time, so a transaction sees one consistent "now";
 * nadi.clock_offset shifts it so tests can expire leases without sleeping.
 */
#include "postgres.h"

#include "access/xact.h"

#include "nadi.h"

TimestampTz
nadi_now(void)
{
	return GetCurrentTransactionStartTimestamp() +
		(TimestampTz) nadi_clock_offset_ms * 1000;
}

PG_FUNCTION_INFO_V1(nadi_now_sql);
Datum
nadi_now_sql(PG_FUNCTION_ARGS)
{
	PG_RETURN_TIMESTAMPTZ(nadi_now());
}
