/*
 * errcodes.h — the HTTP answer to a SQLSTATE: its status, problem "code"
 * and "title", from the one list of nadi's error codes (src/errcodes.txt,
 * compiled in through the generated nadi_errcodes.h, which also gives the
 * SQLSTATE_* string constants).
 */
#ifndef NADI_DAEMONLIB_ERRCODES_H
#define NADI_DAEMONLIB_ERRCODES_H

#include "nadi_errcodes.h"

typedef struct ErrcodeInfo
{
	const char *sqlstate; /* five characters, or a whole class ("08xxx") */
	int			status;	  /* HTTP status */
	const char *code;	  /* problem+json "code" */
	const char *title;	  /* problem+json "title" */
} ErrcodeInfo;

/*
 * The entry for sqlstate: its own, else its class's; NULL when the list has
 * neither or sqlstate is not five characters of [0-9A-Z].
 */
extern const ErrcodeInfo *errcode_find(const char *sqlstate);

#endif /* NADI_DAEMONLIB_ERRCODES_H */
