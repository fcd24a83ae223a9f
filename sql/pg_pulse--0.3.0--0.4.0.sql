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

-- 2. What an HTTP request sends (issue 16): placeholders are filled in only in the URL and header
--    values, and in a body only when it is marked "body_template": true (pulse.http_request and
--    pulse.http_post get a last argument body_template); params and unmarked bodies are data,
--    sent as they are. Size limits apply to what is sent (new settings pulse.http_max_url_bytes,
--    pulse.http_max_header_bytes, pulse.http_max_headers_bytes; no object for them here).
------------------------------------------------------------------------------------------------

DROP FUNCTION pulse.http_request(text, text, jsonb, jsonb, interval, boolean, text);
CREATE  FUNCTION "http_request"(
	"method" TEXT, /* Option < & str > */
	"url" TEXT, /* Option < & str > */
	"headers" jsonb DEFAULT '{}', /* Option < JsonB > */
	"body" jsonb DEFAULT NULL, /* Option < JsonB > */
	"timeout" interval DEFAULT '30 seconds', /* Option < Interval > */
	"follow_redirects" bool DEFAULT false, /* Option < bool > */
	"body_text" TEXT DEFAULT NULL, /* Option < & str > */
	"body_template" bool DEFAULT false /* Option < bool > */
) RETURNS jsonb /* JsonB */
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'http_request_wrapper';
DROP FUNCTION pulse.http_post(text, jsonb, jsonb, interval, jsonb);
CREATE  FUNCTION "http_post"(
	"url" TEXT, /* Option < & str > */
	"body" jsonb DEFAULT '{}', /* Option < JsonB > */
	"headers" jsonb DEFAULT '{}', /* Option < JsonB > */
	"timeout" interval DEFAULT '30 seconds', /* Option < Interval > */
	"params" jsonb DEFAULT '{}', /* Option < JsonB > */
	"body_template" bool DEFAULT false /* Option < bool > */
) RETURNS bigint /* i64 */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'http_post_wrapper';
COMMENT ON FUNCTION pulse.http_request(text, text, jsonb, jsonb, interval, boolean, text, boolean) IS
'Builds and validates an HTTP request description (method GET/POST/PUT/PATCH/DELETE/HEAD, http(s) URL, headers, JSON body or body_text, timeout, follow_redirects, body_template) as jsonb. Placeholders {{secret:NAME}}, {{setting:name}}, {{job_name}}, {{run_id}}, {{scheduled_for}}, {{attempt}} in the URL and header values (and in the body only with body_template => true) are checked now and resolved only when the request is sent; an unmarked body is sent as it is. Sizes are limited by pulse.http_max_url_bytes, pulse.http_max_header_bytes, pulse.http_max_headers_bytes and pulse.http_max_request_bytes, placeholders filled in.';
COMMENT ON FUNCTION pulse.http_post(text, jsonb, jsonb, interval, jsonb, boolean) IS
'POSTs body (JSON) to url once the calling transaction commits (never if it rolls back); returns the request id at once. Results in pulse.http_responses. Placeholders such as {{secret:NAME}} in url and headers are resolved when it is sent; body and params are sent as they are (body_template => true fills in placeholders in the body). Works in triggers.';

-- 0.3.0 filled in placeholders in every body. So that scheduled HTTP jobs (and their webhook
-- alert targets) and requests waiting to be sent keep sending what they sent, those whose body
-- contains "{{" are marked as templates. Webhook alerts waiting to be sent are not: their body
-- is the alert's text (data). Params are sent as they are from now on.
UPDATE pulse.job SET http = http || '{"body_template": true}'
 WHERE http IS NOT NULL
   AND (strpos(coalesce(http->'body', 'null')::text, '{{') > 0
        OR strpos(coalesce(http->>'body_text', ''), '{{') > 0);
UPDATE pulse.job SET alert = jsonb_set(alert, '{webhook,body_template}', 'true')
 WHERE jsonb_typeof(alert->'webhook') = 'object'
   AND (strpos(coalesce(alert->'webhook'->'body', 'null')::text, '{{') > 0
        OR strpos(coalesce(alert->'webhook'->>'body_text', ''), '{{') > 0);
UPDATE pulse.http_request SET request = request || '{"body_template": true}'
 WHERE state IN ('pending', 'sending') AND origin IS DISTINCT FROM 'alert'
   AND (strpos(coalesce(request->'body', 'null')::text, '{{') > 0
        OR strpos(coalesce(request->>'body_text', ''), '{{') > 0);
