-- nadi.sessions_ended: which of a sandbox host's sessions ended (nadi-
-- sandboxd's reaper destroys their sandboxes).  Ended (terminated or failed)
-- grace or longer ago, or purged; live and recently ended ones are not, nor
-- an id the database never knew (a sandboxd on the wrong database must not
-- destroy live sandboxes).  Only ids that were asked come back.
\pset null '(null)'

SELECT session_id AS r_live FROM nadi.session_create('reap-acme') \gset
SELECT session_id AS r_term FROM nadi.session_create('reap-acme') \gset
SELECT session_id AS r_fail FROM nadi.session_create('reap-acme') \gset
SELECT session_id AS r_gone FROM nadi.session_create('reap-acme') \gset
SELECT state FROM nadi.session_terminate(:'r_term');
SELECT state FROM nadi.session_transition(:'r_fail', 'failed', 'test');
SELECT state FROM nadi.session_terminate(:'r_gone');
SELECT '6f0c3c1e-0000-4000-8000-000000000000' AS r_none \gset
CREATE TEMP TABLE reap_ids (name text, id uuid);
INSERT INTO reap_ids VALUES ('live', :'r_live'), ('terminated', :'r_term'), ('failed', :'r_fail'),
                            ('purged', :'r_gone'), ('never created', :'r_none');
GRANT SELECT ON reap_ids TO PUBLIC;
CREATE FUNCTION pg_temp.ended(grace interval) RETURNS text LANGUAGE sql AS $$
    SELECT coalesce(string_agg(r.name, ', ' ORDER BY r.name), '(none)')
    FROM nadi.sessions_ended((SELECT array_agg(id) FROM reap_ids), grace) e
    JOIN reap_ids r ON r.id = e
$$;

-- just ended: within a minute's grace none counts (never created: never)
SELECT pg_temp.ended('1 minute');
SELECT pg_temp.ended('0');
-- a minute on (the clock of every expiry decision), the ended ones too
SET nadi.clock_offset = '61s';
SELECT pg_temp.ended('1 minute');
RESET nadi.clock_offset;
-- a legal hold keeps a session's sandbox as it keeps its rows, until released
SELECT hold_id IS NOT NULL AS held FROM nadi.hold_set('reap-acme', :'r_term', 'reaping test');
SET nadi.clock_offset = '61s';
SELECT pg_temp.ended('1 minute');
RESET nadi.clock_offset;
SELECT hold_id IS NOT NULL AS tenant_held FROM nadi.hold_set('reap-acme', NULL, 'the whole tenant');
SELECT nadi.hold_release('reap-acme', :'r_term') AS released;
SET nadi.clock_offset = '61s';
SELECT pg_temp.ended('1 minute');
RESET nadi.clock_offset;
SELECT nadi.hold_release('reap-acme', NULL) AS released;
-- purged: only the tombstone is left, which counts as ended whatever the grace
UPDATE nadi.sessions SET updated_at = updated_at - interval '1 day' WHERE session_id = :'r_gone';
SELECT sessions >= 1 AS purged FROM nadi.purge_batch('12 hours');
SELECT count(*) AS tombstone FROM nadi.purged_sessions WHERE session_id = :'r_gone';
SELECT pg_temp.ended('1 hour');
-- a hold on the tenant set after the purge keeps the purged one's sandbox
SELECT hold_id IS NOT NULL AS held FROM nadi.hold_set('reap-acme', NULL, 'reaping test, tenant');
SELECT pg_temp.ended('1 hour');
SELECT nadi.hold_release('reap-acme', NULL) AS released;

-- only what was asked comes back: an empty question, NULLs, duplicates
SELECT count(*) AS answers FROM nadi.sessions_ended('{}', '0');
SELECT e = :'r_gone' AS purged_once
FROM nadi.sessions_ended(ARRAY[NULL, :'r_gone', :'r_gone', :'r_none', :'r_live']::uuid[], '0') e;
SELECT count(*) AS answers FROM nadi.sessions_ended(ARRAY[:'r_live']::uuid[]);

-- the arguments, checked: at most 1000 ids, a grace of zero or more
SELECT count(*) AS answers FROM nadi.sessions_ended(array_fill(:'r_live'::uuid, ARRAY[1000]), '0');
SELECT try(format($$SELECT nadi.sessions_ended(array_fill(%L::uuid, ARRAY[1001]), '0')$$, :'r_live'));
SELECT try($$SELECT nadi.sessions_ended(NULL, '0')$$);
SELECT try(format($$SELECT nadi.sessions_ended(ARRAY[%L]::uuid[], NULL)$$, :'r_live'));
SELECT try(format($$SELECT nadi.sessions_ended(ARRAY[%L]::uuid[], '-1 second')$$, :'r_live'));

-- who may ask: a sandbox host and an administrator, no one else; the host
-- still reads no session
SET ROLE nadi_sandbox_host;
SELECT pg_temp.ended('1 hour');
SELECT try($$SELECT count(*) FROM nadi.sessions$$);
SELECT try($$SELECT count(*) FROM nadi.purged_sessions$$);
SET ROLE nadi_admin;
SELECT pg_temp.ended('1 hour');
SET ROLE nadi_cell;
SELECT try($$SELECT nadi.sessions_ended('{}', '0')$$);
SET ROLE nadi_edge;
SELECT try($$SELECT nadi.sessions_ended('{}', '0')$$);
RESET ROLE;
