/*
 * nadi.h — declarations shared by the nadi extension's C files: SQLSTATEs,
 * GUCs, the caller's authentication context, the injectable clock and the
 * helpers of util.c.  These are the extension's base layer: the session core
 * (session_core.h) builds on them, and the SQL API (session.h) on both.
 */
#ifndef NADI_H
#define NADI_H

#include "postgres.h"

#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

/*
 * nadi's own SQLSTATEs, class "NA" (ERRCODE_NADI_*), generated from
 * src/errcodes.txt, the one list of them; docs/SQL_API.md lists the same.
 */
#include "nadi_errcodes.h"

/* GUCs (guc.c) */
extern int	nadi_lease_ttl_ms;
extern int	nadi_host_ttl_ms;
extern int	nadi_max_payload_bytes;
extern int	nadi_max_attempts;
extern int	nadi_backoff_base_ms;
extern int	nadi_backoff_max_ms;
extern int	nadi_crash_budget;
extern int	nadi_max_queued_per_session;
extern int	nadi_max_live_sessions;
extern int	nadi_clock_offset_ms;
extern bool nadi_notify;
extern bool nadi_count_calls;
extern bool nadi_allow_hs256;

extern void nadi_guc_define(void);

/*
 * A table of settings, one row a GUC, defined by nadi_define_settings().  An
 * integer or boolean setting boots with its variable's initial value, a
 * string one with boot_string.
 */
typedef enum NadiSettingType
{
	NADI_SETTING_INT,
	NADI_SETTING_BOOL,
	NADI_SETTING_STRING
} NadiSettingType;

typedef struct NadiSetting
{
	NadiSettingType type;
	const char *name;
	const char *short_desc;
	const char *long_desc;
	void	   *var;			/* int *, bool * or char ** */
	const char *boot_string;	/* strings only */
	int			min;			/* integers only */
	int			max;
	GucContext	context;
	int			flags;			/* GUC_UNIT_*, GUC_SUPERUSER_ONLY, or 0 */
} NadiSetting;

extern void nadi_define_settings(const NadiSetting *settings, int n);

/* clock.c: the one clock every expiry decision reads */
extern TimestampTz nadi_now(void);

/* caller.c: who is calling, established by nadi.authenticate(token) */
typedef enum NadiScope
{
	NADI_SCOPE_NONE = 0,		/* no token: the caller's database role decides */
	NADI_SCOPE_ADMIN,			/* every tenant */
	NADI_SCOPE_TENANT,			/* every session of one tenant */
	NADI_SCOPE_SESSION,			/* one session of one tenant */
	NADI_SCOPE_SANDBOX			/* one sandbox of one session (credentials proxy) */
} NadiScope;

extern NadiScope nadi_scope_from_string(const char *s);
extern const char *nadi_scope_name(NadiScope scope);
extern void nadi_auth_set(const char *tenant, const char *subject, NadiScope scope,
						  const pg_uuid_t *sid, Jsonb *claims, bool txn_local);
extern void nadi_auth_reset(void);
extern void nadi_auth_init(void);
extern NadiScope nadi_auth_scope(void);
extern const char *nadi_auth_tenant(void);	/* NULL without a token */
extern Jsonb *nadi_auth_claims(void);
extern const pg_uuid_t *nadi_auth_sid(void);
extern const char *nadi_actor(void);	/* role or token subject, for audit */
extern bool nadi_caller_is_privileged(void);	/* admin or cell role, no token */
extern bool nadi_tenant_visible(const char *tenant, const pg_uuid_t *sid);
extern const char *nadi_caller_tenant_for_create(const char *requested);
extern void nadi_require_admin(void);
extern bool nadi_caller_is_host_admin(void);
/* host bindings (kind "cell" or "sandbox"); SPI connected */
extern void nadi_require_host_binding(const char *kind, const char *host_id, const char *what);

/* util.c */
extern void nadi_check_payload(Jsonb *payload, const char *what);
extern void nadi_check_limit(int32 limit, int32 max);
extern bool nadi_tool_name_ok(const char *name, size_t len);
extern void nadi_check_tool_name(const JsonbValue *v, const char *where);
#define NADI_SHOWN_CHARS 64		/* most characters of a client's value an error shows */
extern char *nadi_shown(const char *s, int len);
extern void nadi_check_approval_policy(Jsonb *policy);
extern char *nadi_uuid_out(const pg_uuid_t *u);
extern void nadi_uuid_parse(const char *text, pg_uuid_t *u);
extern TimestampTz nadi_timestamptz_parse(const char *text);
extern void nadi_uuid_v7(pg_uuid_t *u);
extern Datum nadi_row_datum(FunctionCallInfo fcinfo, HeapTuple tuple, TupleDesc spi_desc,
							MemoryContext outer);
extern HeapTuple nadi_row_convert(HeapTuple tuple, TupleDesc in, TupleDesc out);
extern Datum nadi_spi_row(FunctionCallInfo fcinfo, MemoryContext outer);
extern pg_uuid_t *nadi_spi_uuids(uint64 *n);
extern int64 *nadi_spi_int8s(uint64 *n);
extern void nadi_rows_to_srf(FunctionCallInfo fcinfo);
extern void nadi_tuptable_to_srf(FunctionCallInfo fcinfo, SPITupleTable *tt, uint64 n);
extern int	nadi_exec(SPIPlanPtr plan, Datum *values, const char *nulls, bool read_only, long count);
extern Jsonb *nadi_jsonb(const char *text);
extern JsonbValue *nadi_jsonb_member(Jsonb *j, const char *key);
extern void nadi_check_object(Jsonb *j, const char *name);
extern void nadi_json_str(StringInfo buf, const char *key, const char *value);
extern void nadi_json_int(StringInfo buf, const char *key, int64 value);
extern void nadi_json_raw(StringInfo buf, const char *key, const char *json);
extern Jsonb *nadi_json_strings(const char *key,...);	/* NULL-terminated */
extern char *nadi_jsonb_text(Jsonb *j);
extern char *nadi_timestamptz_iso(TimestampTz ts);
extern void nadi_audit(const char *action, const pg_uuid_t *session_id,
					   const char *tenant, Jsonb *detail);
extern void nadi_connect(void);
extern void nadi_finish(void);
extern SPIPlanPtr nadi_plan(SPIPlanPtr *cache, const char *sql, int nargs, Oid *argtypes);

#define NADI_ARG_NOT_NULL(n, name) \
	do { \
		if (PG_ARGISNULL(n)) \
			ereport(ERROR, \
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), \
					 errmsg("%s must not be null", (name)))); \
	} while (0)

#endif							/* NADI_H */
