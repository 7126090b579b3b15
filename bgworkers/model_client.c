/*
 * model_client.c — models behind one interface.
 *
 * "builtin" is deterministic, so the whole system runs offline and tests are
 * exact.  Its rules, applied to the last message of the conversation:
 *   - a user message "/tool NAME {json}" calls tool NAME with those args
 *     (args default to {} when omitted);
 *   - a tool result is answered with "NAME returned: RESULT";
 *   - a denied tool call is answered with "NAME was not run: permission denied.";
 *   - any other user message gets "You said: TEXT";
 *   - "/sleep MS text" makes the step wait MS milliseconds first (for tests
 *     of crashes and cancels): the runtime asks its driver for a timer.
 *
 * "openai" speaks the chat-completions API with tool calling.  The cell
 * holds no API key: nadi.model_url points at the credentials proxy (or a
 * local endpoint), which adds the key outside the cell.  This file builds
 * the request and reads the answer; it performs no I/O.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_client.h"

static json_t *
reply_new(const char *text)
{
	return json_pack("{s:s, s:[]}", "text", text, "tool_calls");
}

static const char *
str_member(json_t *obj, const char *key)
{
	json_t	   *v = json_object_get(obj, key);

	return json_is_string(v) ? json_string_value(v) : NULL;
}

int
model_builtin_step(json_t *messages, json_t **reply, char *err, size_t errlen)
{
	size_t		n = json_array_size(messages);
	json_t	   *last;
	const char *role;
	const char *content;
	char		buf[8192];

	if (n == 0)
	{
		snprintf(err, errlen, "the conversation is empty");
		return -EINVAL;
	}
	last = json_array_get(messages, n - 1);
	role = str_member(last, "role");
	content = str_member(last, "content");
	if (role == NULL)
	{
		snprintf(err, errlen, "message without a role");
		return -EINVAL;
	}

	if (strcmp(role, "tool") == 0)
	{
		const char *name = str_member(last, "name");
		json_t	   *c = json_object_get(last, "content");
		char	   *text = json_is_string(c) ? strdup(json_string_value(c)) : json_dumps(c, JSON_COMPACT | JSON_ENCODE_ANY);

		snprintf(buf, sizeof(buf), "%s returned: %s", name ? name : "tool", text ? text : "null");
		free(text);
		*reply = reply_new(buf);
		return 0;
	}
	if (strcmp(role, "denied") == 0)
	{
		const char *name = str_member(last, "name");

		snprintf(buf, sizeof(buf), "%s was not run: permission denied.", name ? name : "tool");
		*reply = reply_new(buf);
		return 0;
	}
	if (content == NULL)
		content = "";
	if (strncmp(content, "/tool ", 6) == 0)
	{
		const char *p = content + 6;
		size_t		len = strcspn(p, " \t\n");
		char		name[128];
		json_t	   *args;
		json_error_t jerr;

		if (len == 0 || len >= sizeof(name))
		{
			*reply = reply_new("Usage: /tool NAME {json arguments}");
			return 0;
		}
		memcpy(name, p, len);
		name[len] = '\0';
		p += len;
		p += strspn(p, " \t\n");
		args = *p ? json_loads(p, 0, &jerr) : http_json_object();
		if (args == NULL || !json_is_object(args))
		{
			snprintf(buf, sizeof(buf), "I could not read the arguments for %s: %s", name,
					 args ? "they must be a JSON object" : jerr.text);
			json_decref(args);
			*reply = reply_new(buf);
			return 0;
		}
		snprintf(buf, sizeof(buf), "Calling %s.", name);
		*reply = reply_new(buf);
		json_array_append_new(json_object_get(*reply, "tool_calls"),
							  json_pack("{s:s, s:o}", "name", name, "args", args));
		return 0;
	}
	snprintf(buf, sizeof(buf), "You said: %s", content);
	*reply = reply_new(buf);
	return 0;
}

/* Translate our conversation into chat-completions messages. */
static json_t *
openai_messages(json_t *messages)
{
	json_t	   *out = json_array();
	size_t		i;
	json_t	   *m;

	json_array_foreach(messages, i, m)
	{
		const char *role = str_member(m, "role");
		json_t	   *c = json_object_get(m, "content");
		char	   *text = json_is_string(c) ? strdup(json_string_value(c))
			: json_dumps(c, JSON_COMPACT | JSON_ENCODE_ANY);

		if (role && (strcmp(role, "tool") == 0 || strcmp(role, "denied") == 0))
		{
			char		note[8192];

			/* results go back as user-visible text: no tool_call_id bookkeeping */
			snprintf(note, sizeof(note), "%s %s: %s", str_member(m, "name") ? str_member(m, "name") : "tool",
					 strcmp(role, "tool") == 0 ? "returned" : "was denied", text ? text : "");
			json_array_append_new(out, json_pack("{s:s, s:s}", "role", "user", "content", note));
		}
		else
			json_array_append_new(out, json_pack("{s:s, s:s}", "role", role ? role : "user",
												 "content", text ? text : ""));
		free(text);
	}
	return out;
}

bool
model_is_builtin(const ModelConfig *cfg)
{
	return cfg->provider == NULL || strcmp(cfg->provider, "builtin") == 0;
}

static const char *
last_text(json_t *messages)
{
	json_t	   *last = json_array_get(messages, json_array_size(messages) - 1);

	return str_member(last, "content");
}

bool
model_is_slow(const ModelConfig *cfg, json_t *messages)
{
	const char *text = last_text(messages);

	return !model_is_builtin(cfg) || (text && strncmp(text, "/sleep ", 7) == 0);
}

long
model_sleep_ms(const ModelConfig *cfg, json_t *messages)
{
	const char *text = last_text(messages);
	long		ms;

	/* the builtin model's test hook only: a message to a real provider is just text */
	if (!model_is_builtin(cfg) || text == NULL || strncmp(text, "/sleep ", 7) != 0)
		return 0;
	ms = strtol(text + 7, NULL, 10);
	return ms > 0 && ms <= 600000 ? ms : 0;
}

int
model_request(const ModelConfig *cfg, json_t *messages, json_t *tools, const char *token,
			  HttpRequest *req, char *err, size_t errlen)
{
	char		url[2048];
	json_t	   *body;

	if (cfg->provider == NULL || strcmp(cfg->provider, "openai") != 0)
	{
		snprintf(err, errlen, "unknown model provider \"%s\"", cfg->provider ? cfg->provider : "");
		return -EINVAL;
	}
	if (cfg->url == NULL || cfg->url[0] == '\0')
	{
		snprintf(err, errlen, "nadi.model_url is not set");
		return -EINVAL;
	}
	snprintf(url, sizeof(url), "%s/chat/completions", cfg->url);
	body = json_pack("{s:s, s:o}", "model", cfg->model ? cfg->model : "default",
					 "messages", openai_messages(messages));
	if (tools && json_array_size(tools) > 0)
		json_object_set(body, "tools", tools);
	if (http_request_set(req, "POST", url, token, body, cfg->timeout_ms, 4 * 1024 * 1024) < 0)
	{
		snprintf(err, errlen, "out of memory");
		return -EAGAIN;
	}
	return 0;
}

/*
 * What the provider says the call used and which model answered, when it
 * says so: "usage" {"input_tokens", "output_tokens"} (chat completions'
 * prompt_tokens and completion_tokens, or the names themselves) and
 * "model".  They go into the model.reply event, where the operator's
 * numbers count them.
 */
static void
reply_usage(json_t *reply, json_t *resp)
{
	json_t	   *u = json_object_get(resp, "usage");
	json_t	   *in = json_object_get(u, "prompt_tokens");
	json_t	   *out = json_object_get(u, "completion_tokens");

	if (!json_is_integer(in))
		in = json_object_get(u, "input_tokens");
	if (!json_is_integer(out))
		out = json_object_get(u, "output_tokens");
	if (json_is_integer(in) || json_is_integer(out))
		json_object_set_new(reply, "usage",
							json_pack("{s:I, s:I}", "input_tokens",
									  json_is_integer(in) ? json_integer_value(in) : 0,
									  "output_tokens",
									  json_is_integer(out) ? json_integer_value(out) : 0));
	if (str_member(resp, "model"))
		json_object_set(reply, "model", json_object_get(resp, "model"));
}

int
model_take_reply(const HttpReply *answer, json_t **reply, char *err, size_t errlen)
{
	json_t	   *resp = answer->body;
	long		status = answer->status;
	json_t	   *msg;
	json_t	   *calls;
	size_t		i;
	json_t	   *call;

	*reply = NULL;
	if (answer->rc < 0)
	{
		snprintf(err, errlen, "%s", answer->error);
		return answer->rc == -ETIMEDOUT || answer->rc == -ECONNREFUSED ? -EAGAIN : answer->rc;
	}
	if (status == 429 || status >= 500)
	{
		snprintf(err, errlen, "model provider answered HTTP %ld", status);
		return -EAGAIN;
	}
	msg = json_object_get(json_array_get(json_object_get(resp, "choices"), 0), "message");
	if (status != 200 || !json_is_object(msg))
	{
		snprintf(err, errlen, "model provider answered HTTP %ld without a message", status);
		return -EPROTO;
	}
	*reply = reply_new(str_member(msg, "content") ? str_member(msg, "content") : "");
	reply_usage(*reply, resp);
	calls = json_object_get(msg, "tool_calls");
	json_array_foreach(calls, i, call)
	{
		json_t	   *fn = json_object_get(call, "function");
		const char *name = str_member(fn, "name");
		const char *args = str_member(fn, "arguments");
		json_error_t jerr;
		json_t	   *parsed = args ? json_loads(args, 0, &jerr) : http_json_object();

		if (name == NULL || parsed == NULL || !json_is_object(parsed))
		{
			json_decref(parsed);
			continue;
		}
		json_array_append_new(json_object_get(*reply, "tool_calls"),
							  json_pack("{s:s, s:o}", "name", name, "args", parsed));
	}
	return 0;
}
