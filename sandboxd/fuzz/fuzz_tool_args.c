/*
 * fuzz_tool_args.c — libFuzzer target for the validation of a tool call's
 * arguments (tools.c, with the real fsops.c on a scratch workspace): any
 * tool name and any JSON a caller may send as "args".  The container side
 * is a fake: run_submit checks the frame the call would send into the
 * sandbox (every record inside it, as proto.c reads it) and the call then
 * fails as if the container had.  It checks that every call is answered
 * exactly once, and that file tools never touch anything outside the
 * workspace (a canary file beside it stays as it was).
 *
 * Input: "TOOL\nARGS-JSON".
 *
 *   make -C sandboxd fuzz/fuzz-tool-args && sandboxd/fuzz/fuzz-tool-args -max_total_time=60
 */
#include <assert.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sbx.h"
#include "fsops.h"
#include "http.h"
#include "limits.h"
#include "metrics.h"
#include "proto.h"
#include "sandbox.h"
#include "btrfs_store.h"
#include "tools.h"

struct sbx_config cfg = {
	.call_timeout_ms = 1000,
	.call_timeout_max_ms = 5000,
	.fsize_max = 1 << 20,
	.max_file_bytes = 1 << 16,
	.max_queue = 4,
	.output_limit = 1 << 16,
	.run_uid = 65534,
	.run_gid = 65534,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char root[512];

static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void
rm_root(void)
{
	nftw(root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

char *
store_sandbox_path(const char *id)
{
	return xasprintf("%s/%s", root, id);
}

/* ---- the request ---- */

struct http_req
{
	int		 replies;
	unsigned status;
};

#include "daemonlib/fuzz_http.h"

void
http_reply_errno(struct http_req *r, int err, const char *what)
{
	assert(err < 0);
	reply(r, 500);
}

/* Streamed answers: never asked for here (tools_call only). */
struct http_stream *
http_stream_start(struct http_req *r, unsigned status, const char *content_type)
{
	abort();
}

int
http_stream_write(struct http_stream *s, const char *data, size_t len)
{
	abort();
}

void
http_stream_end(struct http_stream *s)
{
	abort();
}

void
http_reply_text(struct http_req *r, unsigned status, const char *content_type, char *text,
				size_t len)
{
	free(text);
	reply(r, status);
}

/* ---- the container side ---- */

void
limits_call_rlimits(uint64_t *as, uint64_t *nproc)
{
	*as = 1 << 30;
	*nproc = 64;
}

void
metrics_call(const char *tool, const char *outcome, bool cold, uint64_t duration_us)
{
}

/* workspace.c: no snapshots here */
json_t *
ws_after_call(struct sbx_sandbox *sb, bool side_effects)
{
	return NULL;
}

static struct sbx_call *pending;

int
run_submit(struct sbx_sandbox *sb, struct sbx_call *c)
{
	struct preader rd;
	uint16_t	   tag;
	const char	  *val;
	uint32_t	   len;
	int			   k;

	assert(pending == NULL && c->done);
	c->sb = sb;
	assert(c->timeout_ms > 0 && c->timeout_ms <= cfg.call_timeout_max_ms);
	/* a length prefix, then the records */
	assert(c->frame.len >= 4 &&
		   proto_get_u32((const unsigned char *) c->frame.data) == c->frame.len - 4);
	preader_init(&rd, c->frame.data + 4, c->frame.len - 4);
	while ((k = preader_next(&rd, &tag, &val, &len)) > 0)
		assert(val >= (const char *) c->frame.data + 4 &&
			   val + len <= (const char *) c->frame.data + c->frame.len);
	assert(k == 0);
	pbuf_free(&c->frame); /* run.c owns the frame once submitted */
	pending = c;
	return 0;
}

void
run_result_free(struct sbx_result *r)
{
}

static struct stat canary_st;

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct sbx_sandbox sb = {.id = "fuzz0000", .tenant = "acme"};
	struct http_req			  r = {0};
	const uint8_t			 *nl = memchr(data, '\n', size);
	char					  tool[80];
	json_t					 *args;
	struct stat				  st;

	if (!root[0])
	{
		char path[700];
		int	 fd;

		const char *tmp = getenv("TMPDIR");

		snprintf(root, sizeof root, "%s/nadi-fuzz-tools.XXXXXX", tmp && *tmp ? tmp : "/tmp");
		assert(mkdtemp(root));
		atexit(rm_root);
		snprintf(path, sizeof path, "%s/%s", root, sb.id);
		assert(mkdir(path, 0700) == 0);
		snprintf(path, sizeof path, "%s/%s/%s", root, sb.id, SBX_WORKSPACE);
		assert(mkdir(path, 0700) == 0);
		snprintf(path, sizeof path, "%s/%s/canary", root, sb.id);
		fd = open(path, O_CREAT | O_WRONLY, 0600);
		assert(fd >= 0 && write(fd, "canary", 6) == 6);
		close(fd);
		assert(stat(path, &canary_st) == 0);
	}
	if (!nl || (size_t) (nl - data) >= sizeof tool || memchr(data, '\0', (size_t) (nl - data)))
		return 0;
	memcpy(tool, data, (size_t) (nl - data));
	tool[nl - data] = '\0';
	args = json_loadb((const char *) nl + 1, size - (size_t) (nl - data) - 1,
					  JSON_REJECT_DUPLICATES, NULL);

	tools_call(&r, &sb, tool, args, (data[0] & 1) ? "proxy-token" : NULL);
	if (pending)
	{
		struct sbx_call *c = pending;

		pending = NULL;
		assert(r.replies == 0);
		snprintf(c->errmsg, sizeof c->errmsg, "the container failed (fuzz)");
		c->done(c, -EIO);
	}
	assert(r.replies == 1);
	json_decref(args);

	/* nothing outside the workspace was touched */
	{
		char path[700];

		snprintf(path, sizeof path, "%s/%s/canary", root, sb.id);
		assert(stat(path, &st) == 0 && st.st_size == canary_st.st_size &&
			   st.st_mtime == canary_st.st_mtime);
	}
	return 0;
}
