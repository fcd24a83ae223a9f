-- pg_pulse 0.3.0 -> 0.4.0 (ALTER EXTENSION pg_pulse UPDATE runs this file in one transaction).
-- It turns a 0.3.0 installation into exactly what a fresh 0.4.0 install creates (sql/schema.sql,
-- sql/queue.sql, sql/finalize.sql and the functions pgrx generates), keeping every job, run,
-- secret, request and queue row. Sections are independent: append new ones at the end. Object
-- definitions are copied verbatim from the fresh-install SQL and from `cargo pgrx schema` of
-- 0.4.0, so that the upgraded catalog and a fresh one dump identically
-- (pgrx-tests/tests/upgrade.rs compares them).
\echo Use "ALTER EXTENSION pg_pulse UPDATE TO '0.4.0'" to load this file. \quit

------------------------------------------------------------------------------------------------
-- 1. Cheaper inserts into pulse.http_request (issue 16, enqueue speed): the state is a type, and
--    the CHECK constraints, which PostgreSQL reads and plans on every insert, are gone.
------------------------------------------------------------------------------------------------

CREATE TYPE pulse.http_request_state AS ENUM ('pending', 'sending', 'succeeded', 'failed', 'timed_out');
COMMENT ON TYPE pulse.http_request_state IS 'The state of an after-commit HTTP request: pending (waiting to be sent, or for its next attempt), sending (in flight), succeeded, failed, timed_out';
-- the view and the partial indexes name the column: they are made again around the change
DROP VIEW pulse.http_requests;
DROP INDEX pulse.http_request_pending_idx;
DROP INDEX pulse.http_request_pending_owner_idx;
ALTER TABLE pulse.http_request
    DROP CONSTRAINT http_request_state_check,
    DROP CONSTRAINT http_request_max_attempts_check,
    DROP CONSTRAINT http_request_retry_backoff_check,
    ALTER COLUMN state DROP DEFAULT;
ALTER TABLE pulse.http_request ALTER COLUMN state TYPE pulse.http_request_state USING state::pulse.http_request_state;
ALTER TABLE pulse.http_request ALTER COLUMN state SET DEFAULT 'pending';
CREATE INDEX http_request_pending_idx ON pulse.http_request (next_attempt_at, id) WHERE state = 'pending';
CREATE INDEX http_request_pending_owner_idx ON pulse.http_request (owner, next_attempt_at, id) WHERE state = 'pending';
CREATE VIEW pulse.http_requests WITH (security_invoker = true) AS
SELECT h.id,
       pg_catalog.pg_get_userbyid(h.owner)::text AS owner,
       h.request->>'method' AS method,
       h.request->>'url' AS url,
       h.origin,
       h.state::text AS state,
       h.attempts,
       h.max_attempts,
       h.created_at,
       h.next_attempt_at,
       h.sent_at,
       h.finished_at,
       h.status_code,
       h.error,
       h.interrupted
  FROM pulse.http_request h;
GRANT SELECT ON pulse.http_requests TO PUBLIC;
COMMENT ON VIEW pulse.http_requests IS 'Your after-commit HTTP requests (all for superusers): state pending, sending, succeeded, failed or timed_out';
