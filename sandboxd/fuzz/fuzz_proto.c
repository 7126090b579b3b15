/*
 * fuzz_proto.c — libFuzzer target for the frame decoder that reads what a
 * container sends back (untrusted: it is written from inside a sandbox).
 * Every record must lie inside the payload, and the decoder must end.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct preader r;
	uint16_t	   tag;
	const char	  *val;
	uint32_t	   len;
	uint64_t	   v;
	size_t		   seen = 0;
	int			   k;

	preader_init(&r, data, size);
	while ((k = preader_next(&r, &tag, &val, &len)) > 0)
	{
		assert((const uint8_t *) val >= data && (const uint8_t *) val + len <= data + size);
		seen += 6 + (size_t) len;
		assert(seen <= size);
		(void) proto_u64(val, len, &v);
	}
	assert(k == 0 || k < 0);
	if (k == 0)
		assert(seen == size);
	return 0;
}
