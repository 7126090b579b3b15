/*
 * proto.h — the wire format between nadi-sandboxd and nadi-sbx-init, the
 * small init that runs as PID 1 inside each container.  The daemon writes
 * requests to the container's stdin and reads replies from its stdout.
 *
 * A frame is a little-endian u32 payload length followed by the payload: a
 * sequence of records, each a u16 tag, a u32 length and that many bytes.
 * Integers are u64 little-endian records of length 8.  Unknown tags are
 * skipped, so either side can grow without breaking the other.
 */
#ifndef SBX_PROTO_H
#define SBX_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define PROTO_VERSION 1
#define PROTO_MAX_FRAME (80u << 20)
#define PROTO_MAX_ARGS 4096

enum proto_tag
{
	/* init → daemon, once, when the container is up */
	PT_HELLO = 1, /* u64 protocol version */

	/* daemon → init: run one command */
	PT_ARGV = 10,		/* repeated, one per argument */
	PT_ENV = 11,		/* repeated, "KEY=VALUE" */
	PT_STDIN = 12,		/* bytes fed to the command's stdin */
	PT_CWD = 13,		/* working directory inside the container */
	PT_TIMEOUT_MS = 14, /* u64 wall-time limit */
	PT_OUT_LIMIT = 15,	/* u64 bytes kept per output stream */
	PT_FSIZE = 16,		/* u64 RLIMIT_FSIZE */
	PT_AS = 17,			/* u64 RLIMIT_AS (0: none) */
	PT_NPROC = 18,		/* u64 RLIMIT_NPROC (0: none) */
	PT_UID = 19,		/* u64 */
	PT_GID = 20,		/* u64 */
	PT_STREAM_MS = 21,	/* u64: send PT_PARTIAL frames at most this often (0 or absent: none) */
	PT_STREAM_MAX = 22, /* u64: bytes of partial output per call, both streams together */

	/* init → daemon: the result */
	PT_EXIT = 40,	/* u64 exit status, when the command exited */
	PT_SIGNAL = 41, /* u64 signal, when it was killed */
	PT_STDOUT = 42,
	PT_STDERR = 43,
	PT_FLAGS = 44,		 /* u64 PF_* */
	PT_DURATION_US = 45, /* u64 */
	PT_ERROR = 46,		 /* text: why the command could not run */

	/*
	 * init → daemon, while the command runs and only when the request had
	 * PT_STREAM_MS: a frame whose first record is PT_PARTIAL, then the
	 * stream's new bytes (PT_STDOUT or PT_STDERR, at most one of each) and
	 * their offsets; PF_STREAM_CUT in PT_FLAGS once PT_STREAM_MAX is reached
	 * (no partial frame follows).  The final frame is the result as always.
	 */
	PT_PARTIAL = 50,	   /* u64 0 */
	PT_STDOUT_OFFSET = 51, /* u64: offset in the call's stdout of this PT_STDOUT */
	PT_STDERR_OFFSET = 52, /* u64 */
};

enum
{
	PF_STDOUT_TRUNCATED = 1 << 0,
	PF_STDERR_TRUNCATED = 1 << 1,
	PF_TIMED_OUT = 1 << 2,
	PF_EXEC_FAILED = 1 << 3,
	PF_OOM_KILLED = 1 << 4, /* rlimit mode: the call went over memory_max (see sbx_init.c) */
	PF_STREAM_CUT = 1 << 5, /* a partial frame: the call's PT_STREAM_MAX is reached */
};

/*
 * The egress relay (nadi-sbx-init, started with --proxy-relay): it listens
 * on 127.0.0.1:SBX_PROXY_PORT inside the container and relays every
 * connection to the credentials proxy's socket, which nadi-sandboxd binds
 * from PROXY_DIR/<sandbox id>/ at SBX_PROXY_MOUNT.
 */
#define SBX_PROXY_PORT 3128
#define SBX_PROXY_MOUNT "/.nadi/proxy"
#define SBX_PROXY_SOCKET "proxy.sock"
#define SBX_PROXY_MAX_CONNS 64
#define SBX_PROXY_TOKEN_MAX 4096 /* bytes of a call's proxy_token */

struct pbuf
{
	char  *data;
	size_t len, cap;
	int	   oom;
};

/* Builder: start a frame, add records, finish (writes the length prefix). */
void pbuf_begin(struct pbuf *b);
void pbuf_add(struct pbuf *b, uint16_t tag, const void *data, size_t len);
void pbuf_add_str(struct pbuf *b, uint16_t tag, const char *s);
void pbuf_add_u64(struct pbuf *b, uint16_t tag, uint64_t v);
int	 pbuf_finish(struct pbuf *b); /* 0 or -ENOMEM / -E2BIG */
void pbuf_free(struct pbuf *b);

/*
 * Parser over one payload (without its length prefix).  Returns 1 and fills
 * tag/val/len for each record, 0 at the end, -EBADMSG on a malformed payload.
 */
struct preader
{
	const unsigned char *p, *end;
};
void	 preader_init(struct preader *r, const void *payload, size_t len);
int		 preader_next(struct preader *r, uint16_t *tag, const char **val, uint32_t *len);
int		 proto_u64(const char *val, uint32_t len, uint64_t *ret);
uint32_t proto_get_u32(const unsigned char *p);

#endif
