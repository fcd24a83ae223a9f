-- pg_pulse 0.2.0 -> 0.3.0 (ALTER EXTENSION pg_pulse UPDATE runs this file in one transaction).
-- It turns a 0.2.0 installation into exactly what a fresh 0.3.0 install creates (sql/schema.sql,
-- sql/queue.sql, sql/finalize.sql and the functions pgrx generates), keeping every job, run,
-- secret, request and queue row. Sections are independent: append new ones at the end. Object
-- definitions are copied verbatim from the fresh-install SQL and from `cargo pgrx schema` of
-- 0.3.0, so that the upgraded catalog and a fresh one dump identically
-- (pgrx-tests/tests/upgrade.rs compares them).
\echo Use "ALTER EXTENSION pg_pulse UPDATE TO '0.3.0'" to load this file. \quit

------------------------------------------------------------------------------------------------
-- section: queue/jobs (issue 15)
-- claim_batch dead-letters a row whose lock expired on its last attempt instead of handing it
-- out again (the statement is built in src/queue/spec.rs, no object changes): its comment says so.
------------------------------------------------------------------------------------------------
COMMENT ON FUNCTION pulse.claim_batch(regclass, integer, interval, text) IS
'Atomically claims up to batch_size ready rows (queued and run_after <= now(), or processing with an expired lock), highest priority first then oldest; marks them processing, locked by worker until now() + lock_ttl, counts the attempt, and returns each row as jsonb (in no particular order). A row whose lock expired on its last attempt (attempts >= max_attempts) is dead-lettered (failed, last_error says the lease expired) instead of claimed again. Concurrent callers never wait for or share rows.';
