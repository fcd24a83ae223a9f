-- pg_pulse 0.2.0 -> 0.3.0 (ALTER EXTENSION pg_pulse UPDATE runs this file in one transaction).
-- Sections are independent: append new ones at the end. Object definitions are copied verbatim
-- from sql/schema.sql, so that the upgraded catalog and a fresh one dump identically.
\echo Use "ALTER EXTENSION pg_pulse UPDATE TO '0.3.0'" to load this file. \quit

------------------------------------------------------------------------------------------------
-- section: http (issue 15)
-- After-commit requests: `attempts` counts sends whose outcome was recorded; a send the HTTP
-- worker's stop interrupted is counted in `interrupted` (shown by pulse.http_requests).
------------------------------------------------------------------------------------------------
ALTER TABLE pulse.http_request ADD COLUMN interrupted integer NOT NULL DEFAULT 0;
COMMENT ON COLUMN pulse.http_request.interrupted IS 'How many times the HTTP worker stopped (crash, restart) while this request was in flight: each such send may or may not have reached the server and is not counted in attempts (which counts sends whose outcome was recorded); at 3 the request fails instead of being sent again';
CREATE OR REPLACE VIEW pulse.http_requests WITH (security_invoker = true) AS
SELECT h.id,
       pg_catalog.pg_get_userbyid(h.owner)::text AS owner,
       h.request->>'method' AS method,
       h.request->>'url' AS url,
       h.origin,
       h.state,
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
