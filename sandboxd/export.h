/*
 * export.h — export of sandbox snapshots as btrfs send streams into the
 * object-store directory, and restore of such streams as new sandboxes.
 */
#ifndef SBX_EXPORT_H
#define SBX_EXPORT_H

#include <jansson.h>

struct http_req;
struct sbx_sandbox;

/* Export snapshot (or a new one when NULL); answers 201 with the object. */
void export_snapshot(struct http_req *r, struct sbx_sandbox *sb, const char *snapshot);
/* Restore object as a sandbox for session_id (or the exported session). */
void	restore_object(struct http_req *r, const char *object, const char *session_id);
json_t *objects_json(void);

#endif
