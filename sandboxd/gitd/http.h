/*
 * http.h — the libmicrohttpd adapter of nadi-gitd.  Each listener (unix
 * socket, TCP) is an MHD daemon with a thread per connection, so a handler
 * may block until a clone or fetch is done; max_connections bounds the
 * threads.  A handler answers once through one of the http_reply_* calls.
 */
#ifndef GITD_HTTP_H
#define GITD_HTTP_H

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

struct http_req;

const char *http_method(const struct http_req *r);
const char *http_path(const struct http_req *r);
/* A query parameter, decoded; NULL when absent. */
const char *http_query(const struct http_req *r, const char *key);
/* The body as a JSON object; answers 400 invalid_json itself and returns NULL on error. */
json_t *http_body_json(struct http_req *r);

void http_reply_json(struct http_req *r, unsigned status, json_t *body); /* steals body */
void http_reply_problem(struct http_req *r, unsigned status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
void http_reply_empty(struct http_req *r, unsigned status);
/* text (taken) and one newline. */
void http_reply_text(struct http_req *r, unsigned status, char *text, const char *content_type);
void http_add_header(struct http_req *r, const char *name, const char *value);

void api_dispatch(struct http_req *r);
/* The TCP port listened on (0: none); answers by status class for /metrics. */
uint16_t http_tcp_port(void);
struct metrics_out;
void http_metrics(struct metrics_out *o);

#endif
