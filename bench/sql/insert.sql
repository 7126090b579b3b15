-- pgbench -f: one single-row INSERT, one commit per transaction.
INSERT INTO bench_insert (payload) VALUES ('{"name":"noop"}');
