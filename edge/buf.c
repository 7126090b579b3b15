/*
 * buf.c — growable byte buffers with a consumed prefix, for request bodies,
 * stream output and socket I/O.  Growth doubles; the consumed prefix is
 * reclaimed when it is more than half the buffer.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edge.h"

static int
buf_reserve(EdgeBuf *b, size_t extra)
{
	size_t need;
	size_t cap;
	char  *p;

	if (b->off > 0 && (b->off >= b->len || b->off > b->cap / 2))
	{
		memmove(b->data, b->data + b->off, b->len - b->off);
		b->len -= b->off;
		b->off = 0;
	}
	need = b->len + extra + 1; /* room for a terminator */
	if (need <= b->cap)
		return 0;
	cap = b->cap ? b->cap : 256;
	while (cap < need)
		cap *= 2;
	p = realloc(b->data, cap);
	if (p == NULL)
		return -ENOMEM;
	b->data = p;
	b->cap = cap;
	return 0;
}

int
buf_append(EdgeBuf *b, const void *p, size_t n)
{
	int r = buf_reserve(b, n);

	if (r < 0)
		return r;
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

int
buf_puts(EdgeBuf *b, const char *s)
{
	return buf_append(b, s, strlen(s));
}

int
buf_printf(EdgeBuf *b, const char *fmt, ...)
{
	va_list ap;
	int		n;
	int		r;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -EINVAL;
	r = buf_reserve(b, (size_t) n);
	if (r < 0)
		return r;
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t) n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t) n;
	return 0;
}

void
buf_consume(EdgeBuf *b, size_t n)
{
	b->off += n;
	if (b->off >= b->len)
		b->off = b->len = 0;
}

void
buf_reset(EdgeBuf *b)
{
	b->off = b->len = 0;
}

void
buf_free(EdgeBuf *b)
{
	free(b->data);
	memset(b, 0, sizeof(*b));
}

char *
buf_cstr(EdgeBuf *b)
{
	if (buf_reserve(b, 0) < 0)
		return NULL;
	b->data[b->len] = '\0';
	return b->data + b->off;
}
