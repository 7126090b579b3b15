/*
 * errcodes.c — looks SQLSTATEs up in the table generated from
 * src/errcodes.txt; see errcodes.h.
 */
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "errcodes.h"

#define ERRCODE_ROW(state, status, code, title) {state, status, code, title},

static const ErrcodeInfo errcode_table[] = {NADI_ERRCODE_TABLE(ERRCODE_ROW)};

static bool
sqlstate_valid(const char *s)
{
	for (int i = 0; i < 5; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'Z')))
			return false;
	return s[5] == '\0';
}

const ErrcodeInfo *
errcode_find(const char *sqlstate)
{
	const size_t n = sizeof(errcode_table) / sizeof(errcode_table[0]);

	if (!sqlstate || !sqlstate_valid(sqlstate))
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (strcmp(errcode_table[i].sqlstate, sqlstate) == 0)
			return &errcode_table[i];
	for (size_t i = 0; i < n; i++)
		if (strcmp(errcode_table[i].sqlstate + 2, "xxx") == 0 &&
			strncmp(errcode_table[i].sqlstate, sqlstate, 2) == 0)
			return &errcode_table[i];
	return NULL;
}
