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

------------------------------------------------------------------------------------------------
-- 3. Secrets encrypted at rest (issue 16, item 3: secrets)
-- pulse.secret.value (plaintext) becomes pulse.secret.sealed (bytea): each value is sealed for its
-- owner and name with the cluster's key (PGDATA/pg_pulse/secret.key, created here if missing) by
-- a function of the new library that exists only during this step. The column keeps its place
-- (ALTER TYPE + RENAME, no dropped column). Plaintext written before the upgrade stays in old WAL
-- segments and backups: set the secrets again to rotate them.
CREATE FUNCTION pulse.seal_secret_for_upgrade(owner oid, name text, value text) RETURNS bytea
    STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'seal_secret_for_upgrade_wrapper';
ALTER TABLE pulse.secret ALTER COLUMN value TYPE bytea
    USING pulse.seal_secret_for_upgrade(owner, name, value);
ALTER TABLE pulse.secret RENAME COLUMN value TO sealed;
DROP FUNCTION pulse.seal_secret_for_upgrade(oid, text, text);
COMMENT ON TABLE pulse.secret IS 'Secret values for {{secret:NAME}} placeholders, sealed with the key in PGDATA/pg_pulse/secret.key for their owner and name; no role may read it: set them with pulse.set_secret, list them in pulse.secrets';
COMMENT ON COLUMN pulse.secret.sealed IS 'The value sealed: version byte, 24-byte nonce, XChaCha20-Poly1305 ciphertext with the owner and name as associated data';

-- src/http/secrets.rs:116
-- pg_pulse::http::secrets::set_secret_from_file
CREATE  FUNCTION "set_secret_from_file"(
	"name" TEXT, /* Option < & str > */
	"path" TEXT, /* Option < & str > */
	"owner" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS bool /* bool */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'set_secret_from_file_wrapper';

COMMENT ON FUNCTION pulse.set_secret(text, text) IS
'Stores a secret of yours for {{secret:NAME}} placeholders in HTTP requests (true: created, false: replaced); 8 to 65536 bytes. The value is stored sealed (encrypted, bound to you and the name) and readable by no role; pg_pulse keeps it out of the server log (no STATEMENT line, literals masked). With log_statement = ''all'' prefer pulse.set_secret_from_file.';
COMMENT ON FUNCTION pulse.drop_secret(text) IS
'Removes a secret of yours; false (and a NOTICE) if there was none. NULL: error 22004.';
COMMENT ON FUNCTION pulse.set_secret_from_file(text, text, text) IS
'Superusers: stores the content of a file the server can read (absolute path, or relative to the data directory; one trailing newline removed) as secret name of role owner (default: you), so that the value is in no statement text and no log. Errors name the file, never its content.';
REVOKE ALL ON FUNCTION pulse.set_secret_from_file(text, text, text) FROM PUBLIC;

------------------------------------------------------------------------------------------------
-- 4. Faster HTTP drain (issue 16): the indexes of waiting requests hold every unfinished one, so
--    that a claim (state, sent_at, lease_until) is a HOT update in the room fillfactor 70 leaves.
--    (Pages written before the update keep no room until they are rewritten.)
------------------------------------------------------------------------------------------------

DROP INDEX pulse.http_request_pending_idx;
DROP INDEX pulse.http_request_pending_owner_idx;
CREATE INDEX http_request_pending_idx ON pulse.http_request (next_attempt_at, id) WHERE finished_at IS NULL;
CREATE INDEX http_request_pending_owner_idx ON pulse.http_request (owner, next_attempt_at, id) WHERE finished_at IS NULL;
ALTER TABLE pulse.http_request SET (fillfactor = 70);
