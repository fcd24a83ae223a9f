-- pg_pulse 0.2.0 -> 0.3.0 (ALTER EXTENSION pg_pulse UPDATE runs this file in one transaction).
-- It turns a 0.2.0 installation into exactly what a fresh 0.3.0 install creates (sql/schema.sql,
-- sql/queue.sql, sql/finalize.sql and the functions pgrx generates), keeping every job, run,
-- secret, request and queue row. Sections are independent: append new ones at the end. Object
-- definitions are copied verbatim from the fresh-install SQL and from `cargo pgrx schema` of
-- 0.3.0, so that the upgraded catalog and a fresh one dump identically
-- (pgrx-tests/tests/upgrade.rs compares them).
\echo Use "ALTER EXTENSION pg_pulse UPDATE TO '0.3.0'" to load this file. \quit

------------------------------------------------------------------------------------------------
-- 1. Run lifecycle (issue 15): claims round-robin by owner; workers' liveness and restart.
------------------------------------------------------------------------------------------------

CREATE INDEX job_run_queued_owner_idx ON pulse.job_run (kind, owner, scheduled_for, run_id) WHERE status = 'queued';

-- pulse.scheduler_status() reports the HTTP worker and waiting after-commit requests (new
-- columns last): its result type changes, so it is dropped and created again.
DROP FUNCTION pulse.scheduler_status();
CREATE  FUNCTION "scheduler_status"() RETURNS TABLE (
	"worker_alive" bool,  /* bool */
	"worker_pid" INT,  /* Option < i32 > */
	"worker_started_at" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"last_heartbeat" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"database_name" TEXT,  /* String */
	"jobs_total" bigint,  /* i64 */
	"jobs_enabled" bigint,  /* i64 */
	"jobs_paused" bigint,  /* i64 */
	"jobs_failing" bigint,  /* i64 */
	"jobs_overdue" bigint,  /* i64 */
	"runs_last_hour" bigint,  /* i64 */
	"failures_last_hour" bigint,  /* i64 */
	"health_pct" double precision,  /* Option < f64 > */
	"verdict" TEXT,  /* String */
	"http_worker_alive" bool,  /* bool */
	"http_worker_pid" INT,  /* Option < i32 > */
	"http_worker_started_at" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"requests_waiting" bigint,  /* i64 */
	"oldest_request_wait" interval  /* Option < Interval > */
)
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'scheduler_status_wrapper';
CREATE  FUNCTION "restart_workers"() RETURNS INT /* i32 */
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'restart_workers_wrapper';
COMMENT ON FUNCTION pulse.scheduler_status() IS
'One row: is the scheduler alive (pid, started at, last heartbeat, database), job counts (total, enabled, paused, failing, overdue), runs and failures in the last hour, the share of healthy jobs, whether the HTTP worker is alive, how many due after-commit requests wait and for how long, and a verdict HEALTHY or NEEDS_ATTENTION (both workers alive, thresholds: pulse.status_max_failing_jobs, pulse.status_min_health_pct, pulse.status_max_request_wait).';
COMMENT ON FUNCTION pulse.restart_workers() IS
'Superusers: stops the scheduler and the HTTP worker; the server starts them again within about a second. SQL runs in progress fail (and are retried if their job allows); requests being sent are sent again. Returns how many workers were signalled.';
REVOKE ALL ON FUNCTION pulse.restart_workers() FROM PUBLIC;

------------------------------------------------------------------------------------------------
-- 2. Queues (issue 15): claim_batch dead-letters a row whose lock expired on its last attempt
--    instead of handing it out again (the statement is built in src/queue/spec.rs, no object
--    changes): its comment says so.
------------------------------------------------------------------------------------------------
COMMENT ON FUNCTION pulse.claim_batch(regclass, integer, interval, text) IS
'Atomically claims up to batch_size ready rows (queued and run_after <= now(), or processing with an expired lock), highest priority first then oldest; marks them processing, locked by worker until now() + lock_ttl, counts the attempt, and returns each row as jsonb (in no particular order). A row whose lock expired on its last attempt (attempts >= max_attempts) is dead-lettered (failed, last_error says the lease expired) instead of claimed again. Concurrent callers never wait for or share rows.';

------------------------------------------------------------------------------------------------
-- 3. HTTP (issue 15): after-commit requests: `attempts` counts sends whose outcome was recorded;
--    a send the HTTP worker's stop interrupted is counted in `interrupted` (pulse.http_requests).
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

-- claims of after-commit requests round-robin by owner
CREATE INDEX http_request_pending_owner_idx ON pulse.http_request (owner, next_attempt_at, id) WHERE state = 'pending';
