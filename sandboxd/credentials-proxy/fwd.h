/*
 * fwd.h — the libcurl adapter: one upstream exchange, driven from the
 * calling thread (the client connection's).  fwd_start sends the request
 * and returns once the upstream's status and headers are in; fwd_read then
 * pulls the body piece by piece, so nothing waits for a whole body and at
 * most FWD_BUFFER bytes of it are held.
 */
#ifndef CP_FWD_H
#define CP_FWD_H

#include <curl/curl.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "credproxy.h"

#define FWD_BUFFER (256u << 10)

struct fwd;

struct fwd_request
{
	const struct upstream *up;
	const char			  *method;
	const char			  *url;
	struct curl_slist	  *headers; /* "Name: value" lines, the credential included */
	const char			  *body;	/* NULL: none */
	size_t				   body_len;
};

int	 fwd_global_init(void);
void fwd_global_done(void);
/* Close the upstream connections idle for longer than a minute (call now and then). */
void fwd_sweep(void);

/*
 * Send the request; wait for the answer's headers.  0 with *ret; or a
 * negative errno with *ret still set (so its error can be read):
 * -ETIMEDOUT (no headers within upstream_timeout), -ECONNREFUSED (could not
 * connect or resolve), -ECANCELED (shutting down), -EIO (anything else).
 */
int	 fwd_start(const struct fwd_request *req, struct fwd **ret);
void fwd_free(struct fwd *f);

unsigned fwd_status(const struct fwd *f);
int64_t	 fwd_content_length(const struct fwd *f); /* -1 when not announced */
size_t	 fwd_header_count(const struct fwd *f);
/* Header i as name and value (pointers into f, valid until fwd_free). */
void fwd_header(const struct fwd *f, size_t i, const char **name, const char **value);

/*
 * Up to max bytes of the body: > 0 bytes, 0 at its end, or a negative errno
 * as fwd_start returns them (the upstream broke off, timed out, ...).
 */
ssize_t fwd_read(struct fwd *f, char *buf, size_t max);
/* libcurl's description of what went wrong, for the log ("" when nothing). */
const char *fwd_error(const struct fwd *f);
uint64_t	fwd_bytes_sent(const struct fwd *f);

#endif
