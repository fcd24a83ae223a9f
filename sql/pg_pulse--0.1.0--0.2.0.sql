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

-- 2. Private alerts: the details of an alert are in pulse.alert (its owner only); a NOTIFY
--    carries only {"alert_id": N}.
-- Alerts: one row per alert pg_pulse sends (incident, recovered, overdue), written in the
-- transaction that decides it. A NOTIFY channel is readable by every role that LISTENs on it and
-- writable by every role (pg_notify), so a notification carries only {"alert_id": N}: the details
-- are here, readable only by the job's owner (and superusers), and an id that is not here (or not
-- yours) was not sent by pg_pulse. Pruned like failed runs (pulse.run_retention_failed); not part
-- of pg_dump.
CREATE TABLE pulse.alert (
    alert_id             bigserial   PRIMARY KEY,
    job_id               bigint      NOT NULL,  -- no foreign key: alerts outlive their job, as runs do
    job_name             text        NOT NULL,  -- the job's name when the alert was sent
    owner                oid         NOT NULL,
    event                text        NOT NULL CHECK (event IN ('incident', 'recovered', 'overdue')),
    run_id               bigint,                -- the run that opened or closed the incident
    status               text,                  -- that run's status
    message              text,                  -- that run's message (its first 2,000 characters)
    consecutive_failures integer     NOT NULL DEFAULT 0,
    runs_24h             bigint      NOT NULL DEFAULT 0,
    failures_24h         bigint      NOT NULL DEFAULT 0,
    channel              text,                  -- the NOTIFY channel announced on; NULL: webhook only
    created_at           timestamptz NOT NULL DEFAULT now(),
    database             name                   -- where the job runs; NULL: this database
);
-- retention
CREATE INDEX alert_created_idx ON pulse.alert (created_at);
ALTER TABLE pulse.alert ENABLE ROW LEVEL SECURITY;
CREATE POLICY alert_owner ON pulse.alert
    USING (owner = (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user));
REVOKE ALL ON pulse.alert FROM PUBLIC;
GRANT SELECT ON pulse.alert TO PUBLIC;

CREATE VIEW pulse.alerts WITH (security_invoker = true) AS
SELECT a.alert_id,
       a.event,
       a.job_id,
       a.job_name,
       pg_catalog.pg_get_userbyid(a.owner)::text AS owner,
       a.run_id,
       a.status,
       a.message,
       a.consecutive_failures,
       a.runs_24h,
       a.failures_24h,
       a.channel,
       a.created_at,
       coalesce(a.database, pg_catalog.current_database())::text AS database,
       pg_catalog.jsonb_build_object(
           'alert_id', a.alert_id, 'event', a.event, 'job', a.job_name, 'job_id', a.job_id,
           'owner', pg_catalog.pg_get_userbyid(a.owner), 'run_id', a.run_id, 'status', a.status,
           'message', a.message, 'consecutive_failures', a.consecutive_failures,
           'runs_24h', a.runs_24h, 'failures_24h', a.failures_24h, 'at', a.created_at,
           'database', coalesce(a.database, pg_catalog.current_database())) AS payload
  FROM pulse.alert a;
GRANT SELECT ON pulse.alerts TO PUBLIC;

COMMENT ON TABLE pulse.alert IS 'Alerts pg_pulse sent (incident, recovered, overdue), one row each; NOTIFY carries only the alert_id (read pulse.alerts)';
COMMENT ON VIEW pulse.alerts IS 'Alerts about the jobs you own (all for superusers): look up the alert_id of a pulse_alerts notification here; an id not found here was not sent to you by pg_pulse';

-- 3. Health shows where each job runs: pulse.scheduler_health() gets a last column, database.
DROP FUNCTION pulse.scheduler_health();
-- pg_pulse::health::api::scheduler_health (as `cargo pgrx schema` generates it for 0.2.0)
CREATE  FUNCTION "scheduler_health"() RETURNS TABLE (
	"job_id" bigint,  /* i64 */
	"job_name" TEXT,  /* String */
	"enabled" bool,  /* bool */
	"schedule" TEXT,  /* Option < String > */
	"timezone" TEXT,  /* String */
	"next_run_at" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"last_run_at" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"last_status" TEXT,  /* Option < String > */
	"runs_24h" bigint,  /* i64 */
	"failures_24h" bigint,  /* i64 */
	"success_rate" double precision,  /* Option < f64 > */
	"avg_duration" interval,  /* Option < Interval > */
	"p95_duration" interval,  /* Option < Interval > */
	"consecutive_failures" INT,  /* i32 */
	"health" TEXT,  /* String */
	"reason" TEXT,  /* String */
	"database" TEXT  /* String */
)
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'scheduler_health_wrapper';
COMMENT ON FUNCTION pulse.scheduler_health() IS
'One row per job you can see: schedule, next and last run, runs and failures in the last 24 hours, success rate, average and p95 duration, consecutive failures, health (healthy, degraded, failing, overdue, paused, never_run) with a reason to act on, and the database the job runs in.';
