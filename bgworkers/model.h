/*
 * model.h — the model behind one small interface.  A step takes the
 * conversation so far (a JSON array of {role, content, name?} messages) and
 * returns a reply {text, tool_calls: [{name, args}]}.  No PostgreSQL headers:
 * the same code serves the embedded cell and an external cell daemon.
 */
#ifndef NADI_MODEL_H
#define NADI_MODEL_H

#include <jansson.h>

typedef struct ModelConfig
{
	const char *provider;		/* "builtin" or "openai" */
	const char *url;			/* openai: base URL of a chat-completions API */
	const char *model;			/* openai: model name */
	long		timeout_ms;
	const char *token;			/* openai: bearer token for the credentials proxy, or NULL */
} ModelConfig;

/*
 * Returns 0 and sets *reply (caller json_decref()s it), or a negative errno
 * with a message in err.  -EAGAIN means "try again later" (the provider was
 * unreachable or overloaded).
 */
extern int	model_step(const ModelConfig *cfg, json_t *messages, json_t *tools,
					   json_t **reply, char *err, size_t errlen);
extern int	model_builtin_step(json_t *messages, json_t **reply, char *err, size_t errlen);

#endif							/* NADI_MODEL_H */
