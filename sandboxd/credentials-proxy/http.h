/*
 * http.h — the libmicrohttpd adapter: one daemon without a listening socket
 * of its own, a thread per connection, fed with the sockets listen.c
 * accepts.  Its access handler sends /healthz and /metrics of the main
 * listener here and everything else to proxy.c; answers that are not an
 * upstream's are JSON or RFC 9457 problem+json with a stable "code".
 */
#ifndef CP_HTTP_H
#define CP_HTTP_H

#include <jansson.h>
#include <microhttpd.h>
#include <sys/socket.h>

#include "daemonlib/http.h"

int	 http_start(void);
void http_stop(void);
/* Hand an accepted socket to the daemon; it owns (and closes) fd from now on. */
int http_add_connection(int fd, const struct sockaddr *sa, socklen_t len);
/* Requests between their request line and their end. */
unsigned http_active_requests(void);

enum MHD_Result
http_reply_json(struct MHD_Connection *c, unsigned status, json_t *body); /* steals body */
/* headers: extra name, value pairs ending with NULL (or NULL for none). */
enum MHD_Result http_reply_problem(struct MHD_Connection *c, unsigned status, const char *code,
								   const char *const *headers, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

#endif
