-- Helpers shared by the regression tests (they run in order in one database).

-- Run a statement; on error show the SQLSTATE, message, detail and hint with
-- uuids and timestamps masked, so the expected output is deterministic.
CREATE FUNCTION try(stmt text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    st text; msg text; det text; hnt text;
BEGIN
    EXECUTE stmt;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                            det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
    RETURN mask(st || ': ' || msg
                || CASE WHEN det <> '' THEN E'\nDETAIL: ' || det ELSE '' END
                || CASE WHEN hnt <> '' THEN E'\nHINT: ' || hnt ELSE '' END);
END $$;

CREATE FUNCTION mask(s text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT regexp_replace(regexp_replace(s,
        '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<uuid>', 'g'),
        '\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d(:\d\d)?|Z)?', '<time>', 'g')
$$;

-- The event log of a session, without its volatile parts.
CREATE FUNCTION evlog(sid uuid) RETURNS TABLE (seq bigint, kind text, command_id bigint, epoch bigint, payload text)
LANGUAGE sql AS $$
    SELECT seq, kind, command_id, epoch, mask(payload::text)
    FROM nadi.events WHERE session_id = sid ORDER BY seq
$$;

-- nadi must refuse to load outside shared_preload_libraries; here it is preloaded.
SHOW shared_preload_libraries;
SELECT extname, extversion FROM pg_extension WHERE extname = 'nadi';
