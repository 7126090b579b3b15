/*
 * runtime_output.c — tool.output events: the output of a tool call while
 * it runs, as its sandbox host streams it (runtime.h).  Kept per call, one
 * event per stream that grows until it is written (the host's chunks are
 * contiguous), so a call makes at most a few events a second whatever its
 * host sends; at most RT_OUTPUT_MAX bytes a call, the event that reaches
 * it marked truncated.  The tool.result that follows still has the whole
 * output (as the host keeps it).  Nothing here runs a statement.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime_int.h"

void
rt_output_reset(RtCommand *c)
{
	json_decref(c->out);
	c->out = NULL;
	c->out_bytes = 0;
	c->out_at = 0;
	c->out_cut = false;
}

/* At most n bytes of s that end on a UTF-8 character boundary. */
static size_t
utf8_prefix(const char *s, size_t n)
{
	while (n > 0 && ((unsigned char) s[n] & 0xc0) == 0x80)
		n--;
	return n;
}

void
runtime_tool_output(Runtime *rt, RtSession *s, json_t *output)
{
	RtCommand  *c = &s->cmd;
	const char *stream = json_string_value(json_object_get(output, "stream"));
	json_t	   *data = json_object_get(output, "data");
	json_t	   *off = json_object_get(output, "offset");
	json_t	   *last = c->out ? json_array_get(c->out, json_array_size(c->out) - 1) : NULL;
	bool		cut = json_is_true(json_object_get(output, "truncated"));
	size_t		len,
				take;

	/* only while a call is out, and only what a sandbox host sends */
	if (s->need.kind != RT_NEED_TOOL || c->state != ST_CALL_ANSWERED || c->out_cut || s->epoch < 0)
		return;
	if (stream == NULL || (strcmp(stream, "stdout") != 0 && strcmp(stream, "stderr") != 0) ||
		!json_is_string(data) || !json_is_integer(off) || json_integer_value(off) < 0)
		return;
	len = json_string_length(data);
	take = len;
	if (c->out_bytes + (int64_t) len > RT_OUTPUT_MAX)
	{
		take = utf8_prefix(json_string_value(data), (size_t) (RT_OUTPUT_MAX - c->out_bytes));
		cut = true;
	}
	c->out_bytes += (int64_t) take;
	c->out_cut = cut;
	if (take == 0 && !cut)
		return;
	if (c->out == NULL)
		c->out = json_array();
	/* the same stream, continued: the event grows */
	if (last && strcmp(json_string_value(json_object_get(last, "stream")) ?: "", stream) == 0 &&
		json_integer_value(json_object_get(last, "offset")) +
		(json_int_t) json_string_length(json_object_get(last, "data")) == json_integer_value(off))
	{
		json_t	   *d = json_object_get(last, "data");
		size_t		had = json_string_length(d);
		char	   *joined = malloc(had + take + 1);

		if (joined == NULL)
			return;
		memcpy(joined, json_string_value(d), had);
		memcpy(joined + had, json_string_value(data), take);
		json_object_set_new(last, "data", json_stringn(joined, had + take));
		free(joined);
	}
	else
	{
		last = json_pack("{s:O, s:s, s:s%, s:O}", "name",
						 json_object_get(c->call, "name") ?: json_null(), "stream", stream,
						 "data", json_string_value(data), take, "offset", off);
		json_array_append_new(c->out, last);
	}
	if (cut && last)
		json_object_set_new(last, "truncated", json_true());
}

int64_t
runtime_output_due(const RtSession *s)
{
	const RtCommand *c = &s->cmd;

	if (c->out == NULL || json_array_size(c->out) == 0)
		return 0;
	return c->out_at + RT_OUTPUT_EVERY_US;
}

/* The kept events as fenced appends, queued in s->pending (rt_event). */
static void
queue_events(RtSession *s)
{
	RtCommand  *c = &s->cmd;
	json_t	   *ev;
	size_t		i;

	json_array_foreach(c->out, i, ev)
		rt_event(s, "tool.output", ev);
	json_array_clear(c->out);
	c->out_at = rt_now_us();
}

json_t *
runtime_output_take(RtSession *s)
{
	json_t	   *kept = s->pending;
	json_t	   *stmts;

	s->pending = NULL;
	queue_events(s);
	stmts = s->pending;
	s->pending = kept;
	return stmts;
}

void
rt_output_flush(RtSession *s)
{
	if (s->cmd.out)
		queue_events(s);
}
