/*
 * model_client.h — the model behind one small interface.  A step takes the
 * conversation so far (a JSON array of {role, content, name?} messages) and
 * returns a reply {text, tool_calls: [{name, args}]}.  The builtin model
 * answers at once; a network model's step is an HttpRequest the caller has
 * performed and hands back.  No PostgreSQL headers.
 */
#ifndef NADI_MODEL_CLIENT_H
#define NADI_MODEL_CLIENT_H

#include <stdbool.h>
#include <jansson.h>

#include "http_client.h"

typedef struct ModelConfig
{
	const char *provider;		/* "builtin" or "openai" */
	const char *url;			/* openai: base URL of a chat-completions API */
	const char *model;			/* openai: model name */
	long		timeout_ms;
} ModelConfig;

/* Does the provider answer at once, with no request to make? */
extern bool model_is_builtin(const ModelConfig *cfg);

/* Will the next step take a while (a network model, or the builtin's /sleep)? */
extern bool model_is_slow(const ModelConfig *cfg, json_t *messages);

/*
 * The builtin model's "/sleep MS text": how long the step waits before it
 * answers (ms, at most 10 minutes), 0 for any other last message and for
 * any other provider (a tenant cannot hold a cell's slot with it).
 */
extern long model_sleep_ms(const ModelConfig *cfg, json_t *messages);

/*
 * The builtin model's step: 0 and *reply (caller json_decref()s it), or a
 * negative errno with a message in err.
 */
extern int	model_builtin_step(json_t *messages, json_t **reply, char *err, size_t errlen);

/*
 * A network model's step, in two halves: model_request fills req (0, or
 * -EINVAL with err: no URL, an unknown provider); model_take_reply reads
 * what the request got.  model_take_reply returns 0 and *reply, or a
 * negative errno with err; -EAGAIN means "try again later" (the provider
 * was unreachable or overloaded).
 */
extern int	model_request(const ModelConfig *cfg, json_t *messages, json_t *tools,
						  const char *token, HttpRequest *req, char *err, size_t errlen);
extern int	model_take_reply(const HttpReply *answer, json_t **reply, char *err, size_t errlen);

#endif							/* NADI_MODEL_CLIENT_H */
