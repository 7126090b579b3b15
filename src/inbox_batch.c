/*
 * inbox_batch.c — set-based enqueue: many commands, across sessions, in one
 * statement.  Every element goes through the same checks and the same
 * locked path as nadi.command_enqueue (inbox_enqueue_locked); the batch
 * only takes the session locks once each, in one order, and saves each
 * session once.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "nadi.h"
#include "session.h"


/*
 * The most commands one call may enqueue: a batch locks each of its
 * sessions and holds every element in memory until it commits.
 */
#define INBOX_BATCH_MAX 1000

typedef struct BatchCommand
{
	pg_uuid_t	session_id;
	char	   *type;
	Jsonb	   *payload;
	text	   *key;			/* NULL: none */
	int			session;		/* index into the batch's sessions */
} BatchCommand;

typedef struct BatchSession
{
	pg_uuid_t	id;
	int			first;			/* the first element naming it */
	SessionTx  *tx;
	int64		open;			/* open commands, -1 until counted */
} BatchSession;

static void
element_invalid(const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid element in commands"),
			 errdetail("%s", detail)));
}

/* A member of an element that must be a string, or NULL when optional. */
static char *
element_string(JsonbValue *v, const char *name, bool optional)
{
	if (v == NULL || v->type == jbvNull)
	{
		if (!optional)
			element_invalid(psprintf("An element needs a string \"%s\".", name));
		return NULL;
	}
	if (v->type != jbvString)
		element_invalid(psprintf("\"%s\" must be a string.", name));
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/* Parse and check one element of the array, without touching any table. */
static BatchCommand
element_parse(JsonbValue *elem)
{
	BatchCommand c = {0};
	Jsonb	   *obj;
	JsonbIterator *it;
	JsonbIteratorToken tok;
	JsonbValue	k;
	JsonbValue *v;
	char	   *s;

	if (elem->type != jbvBinary || !JsonContainerIsObject(elem->val.binary.data))
		element_invalid("Each element must be a JSON object.");
	obj = JsonbValueToJsonb(elem);

	/* no unknown members: a misspelt "idempotency_key" must not go unnoticed */
	it = JsonbIteratorInit(&obj->root);
	while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
	{
		char	   *name;

		if (tok != WJB_KEY)
			continue;
		name = pnstrdup(k.val.string.val, k.val.string.len);
		if (strcmp(name, "session_id") != 0 && strcmp(name, "type") != 0 &&
			strcmp(name, "payload") != 0 && strcmp(name, "idempotency_key") != 0)
			element_invalid(psprintf("Unknown member \"%s\"; an element has session_id, type, "
									 "payload and idempotency_key.", name));
	}

	s = element_string(nadi_jsonb_member(obj, "session_id"), "session_id", false);
	c.session_id = *DatumGetUUIDP(DirectFunctionCall1(uuid_in, CStringGetDatum(s)));
	c.type = element_string(nadi_jsonb_member(obj, "type"), "type", false);
	v = nadi_jsonb_member(obj, "payload");
	if (v == NULL || v->type == jbvNull)
		c.payload = nadi_jsonb("{}");
	else if (v->type == jbvBinary)
		c.payload = JsonbValueToJsonb(v);
	else
		c.payload = nadi_jsonb("null");	/* a scalar: refused as not an object */
	s = element_string(nadi_jsonb_member(obj, "idempotency_key"), "idempotency_key", true);
	c.key = s ? cstring_to_text(s) : NULL;
	inbox_check_key(c.key);
	inbox_check_command(c.type, c.payload);
	return c;
}

static int
session_cmp(const void *a, const void *b)
{
	return memcmp(&((const BatchSession *) a)->id, &((const BatchSession *) b)->id,
				  UUID_LEN);
}

/*
 * Raise the error being handled again, naming the element it came from
 * (counting from 1, as WITH ORDINALITY does) in its detail.
 */
static void
rethrow_for_element(MemoryContext cxt, int element)
{
	ErrorData  *e;

	MemoryContextSwitchTo(cxt);
	e = CopyErrorData();
	FlushErrorState();
	e->detail = psprintf("%s%sThe batch was refused at element %d (counting from 1); "
						 "no command of it was enqueued.",
						 e->detail ? e->detail : "", e->detail ? " " : "", element);
	ReThrowError(e);
}

/*
 * nadi.command_enqueue_many(commands jsonb) → SETOF command_inbox
 * commands is an array of {session_id, type, payload, idempotency_key}
 * (payload and idempotency_key optional).  Returns one row per element, in
 * the array's order, as nadi.command_enqueue would have returned it: a key
 * already used in the session (also by an earlier element of the same
 * batch) returns the command first enqueued with it.  The sessions are
 * locked in the order of their ids, so batches over the same sessions never
 * deadlock; any refused element refuses the whole batch.
 */
PG_FUNCTION_INFO_V1(nadi_command_enqueue_many);
Datum
nadi_command_enqueue_many(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext cxt = CurrentMemoryContext;
	Jsonb	   *commands;
	BatchCommand *cmds;
	BatchSession *sessions;
	int			n;
	int			nsessions = 0;
	volatile int element = 0;

	NADI_ARG_NOT_NULL(0, "commands");
	commands = PG_GETARG_JSONB_P(0);
	if (!JB_ROOT_IS_ARRAY(commands) || JB_ROOT_IS_SCALAR(commands))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("commands must be a JSON array"),
				 errdetail("Each element is an object with session_id, type, payload and idempotency_key.")));
	InitMaterializedSRF(fcinfo, 0);
	n = JB_ROOT_COUNT(commands);
	if (n == 0)
		return (Datum) 0;
	if (n > INBOX_BATCH_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("a batch holds at most %d commands", INBOX_BATCH_MAX),
				 errdetail("The batch has %d; nothing was enqueued.", n),
				 errhint("Send the commands in several batches.")));
	cmds = palloc0(sizeof(BatchCommand) * n);
	sessions = palloc0(sizeof(BatchSession) * n);

	PG_TRY();
	{
		Datum	   *values = NULL;
		bool	   *nulls = NULL;

		/* every element checked before any lock is taken */
		for (element = 1; element <= n; element++)
		{
			JsonbValue *elem = getIthJsonbValueFromContainer(&commands->root, element - 1);

			cmds[element - 1] = element_parse(elem);
			sessions[element - 1].id = cmds[element - 1].session_id;
			sessions[element - 1].first = element;
		}

		element = 0;

		/* the distinct sessions in id order, each naming its first element */
		qsort(sessions, n, sizeof(BatchSession), session_cmp);
		for (int i = 0; i < n; i++)
		{
			if (nsessions > 0 && session_cmp(&sessions[nsessions - 1], &sessions[i]) == 0)
			{
				sessions[nsessions - 1].first = Min(sessions[nsessions - 1].first, sessions[i].first);
				continue;
			}
			sessions[nsessions++] = sessions[i];
		}
		for (int i = 0; i < n; i++)
		{
			BatchSession key = {.id = cmds[i].session_id};
			BatchSession *s = bsearch(&key, sessions, nsessions, sizeof(BatchSession), session_cmp);

			cmds[i].session = s - sessions;
		}

		nadi_connect();
		for (int i = 0; i < nsessions; i++)
		{
			element = sessions[i].first;
			sessions[i].tx = session_lock(&sessions[i].id);
			sessions[i].open = -1;
		}

		for (element = 1; element <= n; element++)
		{
			BatchCommand *c = &cmds[element - 1];
			BatchSession *s = &sessions[c->session];
			TupleDesc	desc;
			HeapTuple	row = inbox_enqueue_locked(s->tx, c->type, c->payload, c->key,
												   &s->open, &desc);

			if (values == NULL)
			{
				values = palloc(sizeof(Datum) * desc->natts);
				nulls = palloc(sizeof(bool) * desc->natts);
			}
			heap_deform_tuple(row, desc, values, nulls);
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
			heap_freetuple(row);
			FreeTupleDesc(desc);
		}
		element = 0;
		for (int i = 0; i < nsessions; i++)
			session_save(sessions[i].tx);
		nadi_finish();
	}
	PG_CATCH();
	{
		if (element > 0)
			rethrow_for_element(cxt, element);
		PG_RE_THROW();
	}
	PG_END_TRY();
	return (Datum) 0;
}
