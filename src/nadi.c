/*
 * nadi.c — the library's entry point.  nadi must be loaded through
 * shared_preload_libraries: it asks for shared memory (commit-time wake-ups)
 * and, from bgworkers/, registers its background workers.
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"

#include "nadi.h"
#include "wake.h"
#include "../bgworkers/worker.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

void
_PG_init(void)
{
	if (IsBinaryUpgrade)
		return;

	if (!process_shared_preload_libraries_in_progress)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("nadi can only be loaded via shared_preload_libraries"),
				 errdetail("nadi needs shared memory for its commit-time wake-ups and starts background workers."),
				 errhint("Add nadi to shared_preload_libraries in postgresql.conf and restart the server.")));

#ifdef NADI_UNSAFE_NO_IDEMPOTENCY
	/* a build for the chaos suite's broken run only (src/inbox.c) */
	ereport(WARNING,
			(errmsg("nadi was built with NADI_UNSAFE_NO_IDEMPOTENCY: idempotency keys are ignored"),
			 errdetail("This build exists to show that the chaos checker catches duplicate commands."),
			 errhint("Install a normal build (make install without COPT).")));
#endif
	nadi_guc_define();
	nadi_workers_define_gucs();
	MarkGUCPrefixReserved("nadi");
	nadi_shmem_startup();
	nadi_auth_init();
	nadi_workers_register();
	nadi_preloaded = true;
}
