/*
 * inbox_batch.c — set-based enqueue: many commands, across sessions, in one
 * statement.  Every element goes through the same checks and the same
 * locked path as nadi.command_enqueue (inbox_enqueue_locked); the batch
 * only takes the session locks once each, in one order, and saves each
 * session once.
 */
#include "postgres.h"

#include "access/detoast.h"
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

/*
 * The most bytes the commands of one call may take (as jsonb): a batch holds
 * its payloads in memory until they are stored, so this bounds what one
 * call can make the backend allocate.  A larger payload goes on its own
 * through nadi.command_enqueue.
 */
#define INBOX_BATCH_MAX_BYTES (16 * 1024 * 1024)

/* The longest text form of a uuid that uuid_in accepts, with braces and dashes. */
#define UUID_TEXT_MAX 40

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
static JsonbValue *
element_string(JsonbContainer *obj, const char *name, bool optional)
{
	JsonbValue	k = {.type = jbvString};
	JsonbValue *v;

	k.val.string.val = (char *) name;
	k.val.string.len = strlen(name);
	v = findJsonbValueFromContainer(obj, JB_FOBJECT, &k);
	if (v == NULL || v->type == jbvNull)
	{
		if (!optional)
			element_invalid(psprintf("An element needs a string \"%s\".", name));
		return NULL;
	}
	if (v->type != jbvString)
		element_invalid(psprintf("\"%s\" must be a string.", name));
	return v;
}

/* An element's session_id; a string too long to be a uuid is not echoed whole. */
static pg_uuid_t
element_session_id(JsonbValue *v)
{
	if (v->val.string.len > UUID_TEXT_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid input syntax for type uuid: %s",
						nadi_shown(v->val.string.val, v->val.string.len))));
	return *DatumGetUUIDP(DirectFunctionCall1(uuid_in,
											  CStringGetDatum(pnstrdup(v->val.string.val,
																	   v->val.string.len))));
}

/*
 * Parse and check one element of the array, without touching any table.
 * The element is read in place; only its payload is copied out.
 */
static BatchCommand
element_parse(JsonbValue *elem)
{
	BatchCommand c = {0};
	JsonbContainer *obj;
	JsonbIterator *it;
	JsonbIteratorToken tok;
	JsonbValue	k;
	JsonbValue *v;

	if (elem->type != jbvBinary || !JsonContainerIsObject(elem->val.binary.data))
		element_invalid("Each element must be a JSON object.");
	obj = elem->val.binary.data;

	/* no unknown members: a misspelt "idempotency_key" must not go unnoticed */
	it = JsonbIteratorInit(obj);
	while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
	{
		if (tok != WJB_KEY)
			continue;
		if (!((k.val.string.len == 10 && memcmp(k.val.string.val, "session_id", 10) == 0) ||
			  (k.val.string.len == 4 && memcmp(k.val.string.val, "type", 4) == 0) ||
			  (k.val.string.len == 7 && memcmp(k.val.string.val, "payload", 7) == 0) ||
			  (k.val.string.len == 15 && memcmp(k.val.string.val, "idempotency_key", 15) == 0)))
			element_invalid(psprintf("Unknown member %s; an element has session_id, type, "
									 "payload and idempotency_key.",
									 nadi_shown(k.val.string.val, k.val.string.len)));
	}

	c.session_id = element_session_id(element_string(obj, "session_id", false));
	v = element_string(obj, "type", false);
	c.type = pnstrdup(v->val.string.val, v->val.string.len);

	/*
	 * A missing payload is {} as in nadi.command_enqueue, where it is SQL
	 * NULL; a JSON null is a payload that is not an object there, and here.
	 */
	k.type = jbvString;
	k.val.string.val = "payload";
	k.val.string.len = 7;
	v = findJsonbValueFromContainer(obj, JB_FOBJECT, &k);
	if (v == NULL)
		c.payload = nadi_jsonb("{}");
	else
		c.payload = JsonbValueToJsonb(v);
	v = element_string(obj, "idempotency_key", true);
	c.key = v ? cstring_to_text_with_len(v->val.string.val, v->val.string.len) : NULL;
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
 * batch) returns the command first enqueued with it.  Any refused element
 * refuses the whole batch.  The sessions are locked in ascending order of
 * their ids, as every nadi function that locks several sessions does, before
 * any command is stored; a deadlock needs a transaction that took session
 * locks in another order over several statements (docs/SQL_API.md).
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
	/* measured before it is detoasted: a refused batch is never expanded */
	if (toast_raw_datum_size(PG_GETARG_DATUM(0)) > INBOX_BATCH_MAX_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_NADI_PAYLOAD_TOO_LARGE),
				 errmsg("batch is too large"),
				 errdetail("The commands take %zu bytes as jsonb; a batch may take at most %d bytes. "
						   "Nothing was enqueued.",
						   toast_raw_datum_size(PG_GETARG_DATUM(0)), INBOX_BATCH_MAX_BYTES),
				 errhint("Send the commands in smaller batches, and a large payload on its own "
						 "with nadi.command_enqueue.")));
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

		/*
		 * Each element runs in its own SPI level: what it allocates and the
		 * results of its queries (the stored payload, its event) are freed
		 * once its row is in the result, so memory does not grow with the
		 * batch.  The SessionTx structs live in the outer level;
		 * inbox_enqueue_locked changes only their scalar fields.
		 */
		for (element = 1; element <= n; element++)
		{
			BatchCommand *c = &cmds[element - 1];
			BatchSession *s = &sessions[c->session];
			TupleDesc	desc;
			HeapTuple	row;

			nadi_connect();
			row = inbox_enqueue_locked(s->tx, c->type, c->payload, c->key, &s->open, &desc);
			tuplestore_puttuple(rsinfo->setResult, nadi_row_convert(row, desc, rsinfo->setDesc));
			nadi_finish();
			pfree(c->payload);
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
