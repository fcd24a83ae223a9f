-- pg_pulse 0.1.0 -> 0.2.0 (ALTER EXTENSION pg_pulse UPDATE runs this file in one transaction).
-- It turns a 0.1.0 installation into exactly what a fresh 0.2.0 install creates (sql/schema.sql,
-- sql/finalize.sql and the functions pgrx generates), keeping every job, run, secret and request.
-- Sections are independent: append new ones at the end. Object definitions are copied verbatim
-- from sql/schema.sql and from `cargo pgrx schema` of 0.2.0, so that the upgraded catalog and a
-- fresh one dump identically (pgrx-tests/tests/upgrade.rs compares them).
\echo Use "ALTER EXTENSION pg_pulse UPDATE TO '0.2.0'" to load this file. \quit

------------------------------------------------------------------------------------------------
-- 1. Owner sessions: pulse.job.owner becomes a regrole (kept by OID so a RENAME follows it,
--    dumped and restored by name); jobs and runs name the database they run in (NULL: this one).
------------------------------------------------------------------------------------------------

-- The views and the policy read pulse.job.owner, whose type changes: drop them, re-create them.
DROP VIEW pulse.jobs;
DROP VIEW pulse.job_runs;
DROP POLICY job_owner ON pulse.job;

-- oid -> regrole is binary-coercible: the values stay (the unique constraint's index is rebuilt)
ALTER TABLE pulse.job ALTER COLUMN owner TYPE regrole USING owner::regrole;
-- new columns go last, in a fresh install too
ALTER TABLE pulse.job ADD COLUMN database name;
ALTER TABLE pulse.job_run ADD COLUMN database name;

CREATE POLICY job_owner ON pulse.job
    USING (owner = (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user));

CREATE VIEW pulse.jobs WITH (security_invoker = true) AS
SELECT j.job_id,
       j.job_name,
       pg_catalog.pg_get_userbyid(j.owner)::text AS owner,
       j.schedule,
       j.run_at,
       j.timezone,
       j.command,
       j.http,
       j.enabled,
       j.timeout,
       j.overlap,
       j.comment,
       j.next_run_at,
       s.last_run_id,
       s.last_run_at,
       s.last_status,
       s.last_message,
       j.alert_after_failures,
       j.alert,
       j.max_attempts,
       j.retry_backoff,
       j.created_at,
       j.updated_at,
       coalesce(j.database, pg_catalog.current_database())::text AS database
  FROM pulse.job j
  LEFT JOIN pulse.job_stats s ON s.job_id = j.job_id;

CREATE VIEW pulse.job_runs WITH (security_invoker = true) AS
SELECT r.run_id,
       r.job_id,
       r.job_name,
       pg_catalog.pg_get_userbyid(r.owner)::text AS owner,
       r.scheduled_for,
       r.started_at,
       r.finished_at,
       r.status,
       r.trigger,
       r.attempt,
       r.message,
       r.finished_at - r.started_at AS duration,
       r.created_at,
       r.executor_pid,
       r.kind,
       r.response,
       coalesce(r.database, pg_catalog.current_database())::text AS database
  FROM pulse.job_run r;

GRANT SELECT ON pulse.jobs, pulse.job_runs TO PUBLIC;

COMMENT ON VIEW pulse.jobs IS 'Jobs you own (all jobs for superusers), with the next run, the last run''s status and the database each job runs in';
COMMENT ON VIEW pulse.job_runs IS 'Runs of the jobs you own (all for superusers): queued, running, succeeded, failed, timed_out, skipped, cancelled; database: where each ran';
COMMENT ON COLUMN pulse.job.owner IS 'The role the job runs as (regrole: kept by OID so a RENAME follows, dumped and restored by name)';
COMMENT ON COLUMN pulse.job.database IS 'The database the job runs in, connected as its owner; NULL: the database pg_pulse lives in (pulse.database_name)';
COMMENT ON COLUMN pulse.job_run.database IS 'The database the run ran in (copied from its job); NULL: the database pg_pulse lives in';

-- schedule_job, schedule_once and alter_job take database => as their last argument
DROP FUNCTION pulse.schedule_job(text, text, text, text, boolean, interval, text, text, integer, jsonb, integer, interval, jsonb);
DROP FUNCTION pulse.schedule_once(text, timestamptz, text, boolean, interval, text, integer, jsonb, integer, interval, jsonb);
DROP FUNCTION pulse.alter_job(text, text, text, text, boolean, interval, text, text, text, timestamptz, integer, jsonb, integer, interval, jsonb);

-- as `cargo pgrx schema` generates them for 0.2.0 (the wrappers are in the new library)
-- pg_pulse::jobs::schedule_job
CREATE  FUNCTION "schedule_job"(
	"job_name" TEXT, /* Option < & str > */
	"schedule" TEXT, /* Option < & str > */
	"command" TEXT DEFAULT NULL, /* Option < & str > */
	"timezone" TEXT DEFAULT NULL, /* Option < & str > */
	"enabled" bool DEFAULT true, /* Option < bool > */
	"timeout" interval DEFAULT NULL, /* Option < Interval > */
	"overlap" TEXT DEFAULT 'skip', /* Option < & str > */
	"comment" TEXT DEFAULT NULL, /* Option < & str > */
	"alert_after_failures" INT DEFAULT NULL, /* Option < i32 > */
	"alert" jsonb DEFAULT NULL, /* Option < pgrx :: JsonB > */
	"max_attempts" INT DEFAULT NULL, /* Option < i32 > */
	"retry_backoff" interval DEFAULT NULL, /* Option < Interval > */
	"http" jsonb DEFAULT NULL, /* Option < pgrx :: JsonB > */
	"database" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS bigint /* i64 */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'schedule_job_wrapper';

-- pg_pulse::jobs::schedule_once
CREATE  FUNCTION "schedule_once"(
	"job_name" TEXT, /* Option < & str > */
	"run_at" timestamp with time zone, /* Option < TimestampWithTimeZone > */
	"command" TEXT DEFAULT NULL, /* Option < & str > */
	"enabled" bool DEFAULT true, /* Option < bool > */
	"timeout" interval DEFAULT NULL, /* Option < Interval > */
	"comment" TEXT DEFAULT NULL, /* Option < & str > */
	"alert_after_failures" INT DEFAULT NULL, /* Option < i32 > */
	"alert" jsonb DEFAULT NULL, /* Option < pgrx :: JsonB > */
	"max_attempts" INT DEFAULT NULL, /* Option < i32 > */
	"retry_backoff" interval DEFAULT NULL, /* Option < Interval > */
	"http" jsonb DEFAULT NULL, /* Option < pgrx :: JsonB > */
	"database" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS bigint /* i64 */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'schedule_once_wrapper';

-- pg_pulse::jobs::alter_job
CREATE  FUNCTION "alter_job"(
	"job_name" TEXT, /* Option < & str > */
	"schedule" TEXT DEFAULT NULL, /* Option < & str > */
	"command" TEXT DEFAULT NULL, /* Option < & str > */
	"timezone" TEXT DEFAULT NULL, /* Option < & str > */
	"enabled" bool DEFAULT NULL, /* Option < bool > */
	"timeout" interval DEFAULT NULL, /* Option < Interval > */
	"overlap" TEXT DEFAULT NULL, /* Option < & str > */
	"comment" TEXT DEFAULT NULL, /* Option < & str > */
	"new_name" TEXT DEFAULT NULL, /* Option < & str > */
	"run_at" timestamp with time zone DEFAULT NULL, /* Option < TimestampWithTimeZone > */
	"alert_after_failures" INT DEFAULT NULL, /* Option < i32 > */
	"alert" jsonb DEFAULT NULL, /* Option < pgrx :: JsonB > */
	"max_attempts" INT DEFAULT NULL, /* Option < i32 > */
	"retry_backoff" interval DEFAULT NULL, /* Option < Interval > */
	"http" jsonb DEFAULT NULL, /* Option < pgrx :: JsonB > */
	"database" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS bigint /* i64 */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'alter_job_wrapper';

COMMENT ON FUNCTION pulse.schedule_job(text, text, text, text, boolean, interval, text, text, integer, jsonb, integer, interval, jsonb, text) IS
'Creates a recurring job, or updates your job of that name in place (same id, history kept): schedule_job(job_name, schedule, command, timezone, enabled, timeout, overlap, comment, alert_after_failures, alert, max_attempts, retry_backoff, http, database). A job runs SQL (command) or sends an HTTP request (http => pulse.http_request(...)), as you, in a session of yours (you need LOGIN), in database (default: this one; you need CONNECT there). Returns the job id. Safe to repeat in migrations.';
COMMENT ON FUNCTION pulse.schedule_once(text, timestamptz, text, boolean, interval, text, integer, jsonb, integer, interval, jsonb, text) IS
'Creates or updates a one-shot job that runs once at run_at (at once if run_at has passed): SQL (command) or an HTTP request (http), in database (default: this one). Returns the job id.';
COMMENT ON FUNCTION pulse.alter_job(text, text, text, text, boolean, interval, text, text, text, timestamptz, integer, jsonb, integer, interval, jsonb, text) IS
'Changes any field of a job; NULL leaves a field unchanged; command => makes it a SQL job, http => an HTTP job. new_name renames, timeout => ''0'' removes the timeout, comment => '''' clears the comment, alert_after_failures => 0 and alert => ''null'' return to the defaults, database => ''x'' moves it to database x and database => '''' back to this one. Returns the job id.';
