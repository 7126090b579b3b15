/*
 * proto.c — encoding and decoding of daemon ↔ container-init frames (see
 * proto.h).  Linked into both programs; the decoder treats its input as
 * untrusted, since a container's stdout is written from inside a sandbox.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

static void
put_u32(unsigned char *p, uint32_t v)
{
	p[0] = v & 0xff;
	p[1] = (v >> 8) & 0xff;
	p[2] = (v >> 16) & 0xff;
	p[3] = (v >> 24) & 0xff;
}

uint32_t
proto_get_u32(const unsigned char *p)
{
	return (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16 | (uint32_t) p[3] << 24;
}

static void
reserve(struct pbuf *b, size_t extra)
{
	size_t want;
	char  *n;

	if (b->oom)
		return;
	if (extra > PROTO_MAX_FRAME || b->len + extra > PROTO_MAX_FRAME + 4)
	{
		b->oom = -E2BIG;
		return;
	}
	want = b->len + extra;
	if (want <= b->cap)
		return;
	if (want < b->cap * 2)
		want = b->cap * 2;
	if (want < 256)
		want = 256;
	n = realloc(b->data, want);
	if (!n)
	{
		b->oom = -ENOMEM;
		return;
	}
	b->data = n;
	b->cap = want;
}

void
pbuf_begin(struct pbuf *b)
{
	b->len = 0;
	b->oom = 0;
	reserve(b, 4);
	if (!b->oom)
		b->len = 4;
}

void
pbuf_add(struct pbuf *b, uint16_t tag, const void *data, size_t len)
{
	unsigned char hdr[6];

	if (len > UINT32_MAX)
	{
		b->oom = -E2BIG;
		return;
	}
	reserve(b, sizeof hdr + len);
	if (b->oom)
		return;
	hdr[0] = tag & 0xff;
	hdr[1] = tag >> 8;
	put_u32(hdr + 2, (uint32_t) len);
	memcpy(b->data + b->len, hdr, sizeof hdr);
	if (len)
		memcpy(b->data + b->len + sizeof hdr, data, len);
	b->len += sizeof hdr + len;
}

void
pbuf_add_str(struct pbuf *b, uint16_t tag, const char *s)
{
	pbuf_add(b, tag, s, strlen(s));
}

void
pbuf_add_u64(struct pbuf *b, uint16_t tag, uint64_t v)
{
	unsigned char le[8];

	for (int i = 0; i < 8; i++)
		le[i] = (v >> (8 * i)) & 0xff;
	pbuf_add(b, tag, le, sizeof le);
}

int
pbuf_finish(struct pbuf *b)
{
	if (b->oom)
		return b->oom;
	if (b->len - 4 > PROTO_MAX_FRAME)
		return -E2BIG;
	put_u32((unsigned char *) b->data, (uint32_t) (b->len - 4));
	return 0;
}

void
pbuf_free(struct pbuf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

void
preader_init(struct preader *r, const void *payload, size_t len)
{
	r->p = payload;
	r->end = r->p + len;
}

int
preader_next(struct preader *r, uint16_t *tag, const char **val, uint32_t *len)
{
	uint32_t n;

	if (r->p == r->end)
		return 0;
	if ((size_t) (r->end - r->p) < 6)
		return -EBADMSG;
	*tag = (uint16_t) (r->p[0] | r->p[1] << 8);
	n = proto_get_u32(r->p + 2);
	if (n > (size_t) (r->end - r->p) - 6)
		return -EBADMSG;
	*val = (const char *) r->p + 6;
	*len = n;
	r->p += 6 + (size_t) n;
	return 1;
}

int
proto_u64(const char *val, uint32_t len, uint64_t *ret)
{
	const unsigned char *p = (const unsigned char *) val;
	uint64_t			 v = 0;

	if (len != 8)
		return -EBADMSG;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	*ret = v;
	return 0;
}
