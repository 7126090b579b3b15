/*
 * proxy.h — one exchange through the proxy: from the request line to the
 * audit row of its end.  State machine of a request:
 *
 *   new ──(first call: checks, nadi.proxy_authorize)──> refused (answered)
 *     └──> authorized ──(body read)──> forwarding ──(upstream head)──> streaming
 *                                          └──(error)──> answered (502/504)
 *   authorized, forwarding and streaming end in nadi.proxy_finish().
 */
#ifndef CP_PROXY_H
#define CP_PROXY_H

#include <microhttpd.h>
#include <stdatomic.h>

#include "listen.h"

struct exchange;

struct proxy_stats
{
	atomic_ullong requests;		   /* request lines seen */
	atomic_ullong refused;		   /* answered by the proxy without forwarding */
	atomic_ullong forwarded;	   /* sent upstream */
	atomic_ullong upstream_errors; /* timeouts, unreachable upstreams, cut answers */
	atomic_ullong bytes_up;
	atomic_ullong bytes_down;
};

extern struct proxy_stats proxy_stats;

struct exchange *proxy_new(const char *uri, struct client *client);
const char		*proxy_uri(const struct exchange *ex);
struct client	*proxy_client(const struct exchange *ex);
/* The access handler of an exchange (libmicrohttpd's calling convention). */
enum MHD_Result proxy_request(struct exchange *ex, struct MHD_Connection *mc, const char *method,
							  const char *upload_data, size_t *upload_data_size);
/* The end: report it to nadi.proxy_finish() when it was authorized, free it. */
void proxy_end(struct exchange *ex, enum MHD_RequestTerminationCode toe);

#endif
