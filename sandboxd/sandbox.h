/*
 * sandbox.h — a sandbox is one session's workspace: a BTRFS snapshot of a
 * base image, its metadata, its queue of tool calls and, while warm, one
 * running container.  sandbox.c owns the registry and the lifecycle
 * (create, adopt after a crash, destroy); run.c owns the container.
 *
 * Container states (struct sbx_container.state):
 *
 *   stopped --call--> starting --init says hello--> idle <--result-- busy
 *      ^                  |                          |  \--call-->--/
 *      |                  | start failed/timeout     | idle timeout, destroy, drain
 *      +---- exited ------+------- stopping <--------+
 *
 * A call that arrives while stopped pays for a cold start; calls to an idle
 * container are warm.  Calls per sandbox run one at a time, in order.
 */
#ifndef SBX_SANDBOX_H
#define SBX_SANDBOX_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "access.h"
#include "proto.h"
#include "sbx.h"

#define SBX_ID_LEN 20 /* hex characters */
#define SBX_SESSION_MAX 128
#define SBX_IMAGE_MAX 64
#define SBX_MAX_SNAPSHOTS 64 /* per sandbox: each one pins its data */

enum ct_state
{
	CT_STOPPED,
	CT_STARTING,
	CT_IDLE,
	CT_BUSY,
	CT_STOPPING
};

struct sbx_result
{
	bool	 exited;
	int		 exit_status;
	int		 signal;
	char	*out, *err;
	size_t	 out_len, err_len;
	bool	 out_truncated, err_truncated, timed_out, exec_failed, oom_killed;
	char	*error;	  /* why the command did not run or did not finish */
	uint64_t exec_us; /* as measured inside the container */
};

struct sbx_call;
/* err < 0: the call never ran (detail in errmsg); otherwise see c->res. */
typedef void (*sbx_call_done)(struct sbx_call *c, int err);

/* Output of a running call (a partial frame, proto.h): new bytes of each stream and where they go. */
struct sbx_partial
{
	const char *data[2]; /* stdout, stderr (NULL: nothing new) */
	size_t		len[2];
	uint64_t	offset[2];
	bool		cut; /* the call's stream_max is reached: nothing more comes */
};
typedef void (*sbx_call_output)(struct sbx_call *c, const struct sbx_partial *p);

struct sbx_call
{
	struct sbx_sandbox *sb;
	struct pbuf			frame;
	uint64_t			timeout_ms;
	uint64_t			submitted_us;
	bool				cold;
	struct sbx_result	res;
	char				errmsg[256];
	sbx_call_done		done;
	sbx_call_output		output; /* set: the frame asks for partial output (PT_STREAM_MS) */
	void			   *ud;
	struct sbx_call	   *next;
};

struct sbx_container
{
	enum ct_state  state;
	pid_t		   pid; /* systemd-nspawn */
	int			   pidfd, ctl_w, ctl_r, log_r, go_w;
	EvIo		   pid_io, w_io, r_io, log_io;
	EvTimer		   timer;
	unsigned char *rx;
	size_t		   rx_len, rx_cap, tx_off;
	uint64_t	   started_ms;
	uint64_t	   oom_before;
	size_t		   logged;
	char		   line[512];
	size_t		   line_len;
	char		   last_log[512];
	bool		   ready; /* the init said hello */
	bool		   stop_when_idle;
	bool		   forced;
	char		   stop_reason[128];
};

typedef void (*sandbox_destroy_cb)(void *ud, int r);

struct sbx_sandbox
{
	char				 id[SBX_ID_LEN + 1];
	char				 session_id[SBX_SESSION_MAX + 1];
	char				 tenant[SBX_TENANT_MAX +
				1]; /* the session's tenant; "" when none: it sees the shared git mirrors only */
	char				 image[SBX_IMAGE_MAX + 1];
	time_t				 created_at;
	bool				 destroying;
	bool				 pooled;	  /* a warm pool entry: no session yet (pool.c) */
	unsigned			 ops;		  /* snapshot exports, streams and restores in flight */
	uint64_t			 ws_calls;	  /* the call counter ws-N snapshots are named by */
	uint64_t			 ws_base;	  /* transaction of the last ws snapshot (0: unknown) */
	struct http_req		*restore_req; /* a restore waiting for the container to stop */
	char				 restore_snap[72];
	struct sbx_container ct;
	struct sbx_call		*q_head, *q_tail, *current;
	size_t				 q_len;
	uint64_t			 last_used_ms;
	uint64_t			 calls, cold_starts;
	sandbox_destroy_cb	 destroy_cb;
	void				*destroy_ud;
	struct sbx_sandbox	*next;
};

extern struct sbx_sandbox *sandboxes;

int					sandbox_init(void);
struct sbx_sandbox *sandbox_find(const char *id);
struct sbx_sandbox *sandbox_find_session(const char *session_id);
size_t				sandbox_count(void);
/* tenant may be NULL or "" (unknown: the operator created it without one). */
int sandbox_create(const char *session_id, const char *tenant, const char *image,
				   struct sbx_sandbox **ret);
/* A sandbox whose root is a writable snapshot of src (a restore). */
int sandbox_create_from(const char *session_id, const char *tenant, const char *image,
						const char *src, struct sbx_sandbox **ret);
/* Record the tenant of a sandbox that had none (kept in its metadata). */
int sandbox_set_tenant(struct sbx_sandbox *sb, const char *tenant);
/* A tenant id as sandboxd keeps it: 1 to SBX_TENANT_MAX bytes, no control characters. */
bool tenant_valid(const char *s);
int	 sandbox_destroy(struct sbx_sandbox *sb, sandbox_destroy_cb cb, void *ud);
/*
 * Warm pool entries (pool.c): begin writes metadata "creating" for a new
 * sandbox of image with no session, not yet in the registry; the caller
 * takes the snapshot (store_sandbox_create), then commit (metadata "pool",
 * registered) or abort (removed).  assign makes an entry the sandbox of a
 * session in one atomic metadata write; -errno and unchanged on failure.
 */
struct sbx_sandbox *sandbox_pool_begin(const char *image);
int					sandbox_pool_commit(struct sbx_sandbox *sb);
void				sandbox_pool_abort(struct sbx_sandbox *sb);
int sandbox_pool_assign(struct sbx_sandbox *sb, const char *session_id, const char *tenant);
/* Called by run.c whenever a container has fully stopped. */
void sandbox_on_stopped(struct sbx_sandbox *sb);
/* Make PROXY_DIR/<id>/ (no-op without proxy_dir); -errno. */
int			sandbox_proxy_prepare(const char *id);
json_t	   *sandbox_json(const struct sbx_sandbox *sb);
const char *ct_state_name(enum ct_state s);
void		sandbox_free_all(void);

/* run.c */
int		 run_submit(struct sbx_sandbox *sb, struct sbx_call *c);
void	 run_stop(struct sbx_sandbox *sb, bool force, const char *reason);
void	 run_stop_all(bool force);
void	 run_cancel_queue(struct sbx_sandbox *sb);
unsigned run_count(void); /* containers not stopped */
unsigned run_busy(void);  /* calls queued or running */
void	 run_kill_orphans(void);
void	 run_result_free(struct sbx_result *r);
/* Pool entries (pool.c): start a container with no call waiting; -errno. */
int run_warm(struct sbx_sandbox *sb);
/* Look at a sandbox's queue and container again (an entry just taken). */
void run_kick(struct sbx_sandbox *sb);
/* PID 1 of a running container, as the host sees it; 0 if none. */
pid_t run_init_pid(const struct sbx_sandbox *sb);
/* owner's directory below git_mirror_dir (made when missing), relative; NULL (logged) if not. */
char *run_git_mirror_dir(const char *owner);

#endif
