/*
 * runtime_driver.c — the blocking driver of the agent runtime: it meets a
 * command's needs one after the other, in the calling thread: store needs
 * with the host's store, model and tool requests with http_perform, timers
 * with the host's wait.  The embedded cell runs its sessions' commands
 * through it, one at a time.  A non-blocking driver (many sessions' needs
 * in flight, curl multi) makes the same calls in a different order
 * (bgworkers/README.md).
 */
#include "runtime.h"

void
runtime_run(Runtime *rt, RtSession *s, json_t *row, const RtHost *host)
{
	RtNeed *need = runtime_start(rt, s, row);

	while (need->kind != RT_NEED_NONE)
	{
		HttpReply	reply = {0};

		switch (need->kind)
		{
			case RT_NEED_STORE:
				host->store->exec_groups(host->store->ctx, need->groups, need->ngroups);
				need = runtime_on_store(rt, s);
				break;
			case RT_NEED_MODEL:
				http_perform(&need->http, host->abort, host->arg, &reply);
				need = runtime_on_model_reply(rt, s, &reply);
				break;
			case RT_NEED_TOOL:
				http_perform(&need->http, host->abort, host->arg, &reply);
				need = runtime_on_tool_result(rt, s, &reply);
				break;
			case RT_NEED_TIMER:
				host->wait(host->arg, need->timer_ms);
				need = runtime_on_timer(rt, s);
				break;
			case RT_NEED_NONE:
				break;
		}
		http_reply_clear(&reply);
	}
}
