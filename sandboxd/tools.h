/*
 * tools.h — the tools of a sandbox (tools.c): echo, uppercase, exec and
 * git_clone in the container; list_files, read_file, write_file, edit_file
 * on the workspace.
 */
#ifndef SBX_TOOLS_H
#define SBX_TOOLS_H

#include <jansson.h>
#include <stdbool.h>

struct http_req;
struct sbx_sandbox;

json_t *tools_list_json(void);
/*
 * Validate args and run; answers r now or when the container replies.
 * proxy_token (may be NULL, already validated) goes into the environment
 * of exec and git_clone when the host has a proxy_dir.
 */
void tools_call(struct http_req *r, struct sbx_sandbox *sb, const char *name, json_t *args,
				const char *proxy_token);
/*
 * The same, streamed (the caller accepts application/x-ndjson): an exec
 * answers 200 with a line {"output": {stream, data, offset, truncated?}}
 * per partial output while it runs, then {"result": <the answer>}.  Other
 * tools, and anything refused before the command runs, answer as
 * tools_call does.
 */
void tools_call_streamed(struct http_req *r, struct sbx_sandbox *sb, const char *name, json_t *args,
						 const char *proxy_token);

#endif
