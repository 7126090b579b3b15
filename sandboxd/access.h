/*
 * access.h — who may call nadi-sandboxd.  Two credentials: the operator
 * token (token_file), which reaches every route, and session tokens (JWTs
 * of audience "nadi-sandboxd" and scope "sandbox" that nadi.sandboxd_token
 * mints for one session), verified here with the extension's own jwt.c
 * against the keys of nadi.jwks(), which pg.c fetches over its connection.
 * Which routes a session token reaches is decided in api.c.
 */
#ifndef SBX_ACCESS_H
#define SBX_ACCESS_H

#include <stdbool.h>
#include <stddef.h>

#define SBX_TENANT_MAX 255 /* as nadi.sessions.tenant_id and MIRROR_OWNER_MAX */
#define SBX_SUBJECT_MAX 256

enum access_kind
{
	ACCESS_NONE,
	ACCESS_OPERATOR,
	ACCESS_SESSION
};

struct access_principal
{
	enum access_kind kind;
	char			 sid[37];					   /* ACCESS_SESSION: the session (uuid text) */
	char			 tenant[SBX_TENANT_MAX + 1];   /* ACCESS_SESSION: the session's tenant */
	char			 subject[SBX_SUBJECT_MAX + 1]; /* ACCESS_SESSION: "cell:<host>" or "admin" */
	bool			 files_only; /* ACCESS_SESSION: subject "files:..." (the edge's file routes) */
	/*
	 * ACCESS_SESSION with a "fork" claim {host, sandbox, snapshot}: the one
	 * snapshot this token may make its session's sandbox from (and pull
	 * from the host that has it).  fork_host "" stands for null.
	 */
	bool fork;
	char fork_host[64];
	char fork_sandbox[32];
	char fork_snapshot[72];
};

/* A session token whose subject starts with this reaches its session's files only. */
#define ACCESS_FILES_PREFIX "files:"

enum access_result
{
	ACCESS_OK,	   /* *out filled in */
	ACCESS_DENIED, /* no, or no valid, credential: why says which */
	ACCESS_RETRY,  /* a session token signed by a key not (yet) known: wait for a refresh */
};

/*
 * The principal of a request from its bearer token (NULL: none).  Without a
 * token_file every caller is the operator.
 */
enum access_result
access_authenticate(const char *bearer, struct access_principal *out, char *why, size_t whylen);

/*
 * Refresh the keys (at most once a second) and call fn(arg) when the
 * refresh is over, whatever its outcome, from the event loop.  false, and
 * no call, when there is no database to ask.
 */
bool access_wait_keys(void (*fn)(void *arg), void *arg);
void access_wait_cancel(void *arg);

/* From pg.c: the text of nadi.jwks(), or a failed (or lost) query. */
void access_keys_loaded(const char *jwks);
void access_keys_failed(const char *why);

/* A host id as nadi.sandbox_hosts takes it: ^[A-Za-z0-9][A-Za-z0-9._:-]{0,62}$. */
bool access_host_id_valid(const char *s);

int	 access_init(void);
void access_done(void);

#endif
