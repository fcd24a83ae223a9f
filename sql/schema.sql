-- pg_pulse catalog: jobs and their runs.
-- Rows are written only by pg_pulse's functions and its background workers (which run as the
-- extension owner); every role can read its own rows through row-level security.

CREATE TABLE pulse.job (
    job_id       bigserial PRIMARY KEY,
    job_name     text        NOT NULL CHECK (job_name <> '' AND length(job_name) <= 200),
    owner        regrole     NOT NULL,       -- by OID (survives RENAME), dumped and restored by name
    schedule     text,                       -- NULL for a one-shot job
    run_at       timestamptz,                -- the instant of a one-shot job
    timezone     text        NOT NULL DEFAULT 'UTC',
    command      text,                       -- SQL to run, or NULL for an HTTP job
    http         jsonb,                      -- the request of an HTTP job (pulse.http_request), placeholders unresolved
    enabled      boolean     NOT NULL DEFAULT true,
    timeout      interval,
    overlap      text        NOT NULL DEFAULT 'skip' CHECK (overlap IN ('skip', 'allow')),
    comment      text,
    next_run_at  timestamptz,                -- NULL: paused, or a one-shot that has run
    alert_after_failures integer CHECK (alert_after_failures > 0), -- NULL: pulse.alert_after_failures
    alert        jsonb,                      -- alert target; NULL: pulse.alert_target
    max_attempts integer     NOT NULL DEFAULT 1 CHECK (max_attempts BETWEEN 1 AND 100),
    retry_backoff interval   NOT NULL DEFAULT '10 seconds' CHECK (retry_backoff > '0'),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    -- new columns go last, so that an upgraded installation has the columns of a fresh one
    database     name,                       -- where the job runs; NULL: this database (pulse.database_name)
    CONSTRAINT job_schedule_or_run_at CHECK ((schedule IS NULL) <> (run_at IS NULL)),
    CONSTRAINT job_command_or_http CHECK ((command IS NULL) <> (http IS NULL)),
    CONSTRAINT job_name_per_owner UNIQUE (owner, job_name)
);
-- the scheduler's "what is due" and "when is the next one" lookups
CREATE INDEX job_due_idx ON pulse.job (next_run_at) WHERE enabled;

CREATE TABLE pulse.job_run (
    run_id        bigserial   PRIMARY KEY,
    job_id        bigint      NOT NULL,
    job_name      text        NOT NULL,      -- the job's name when the run was created
    owner         oid         NOT NULL,
    scheduled_for timestamptz NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    started_at    timestamptz,
    finished_at   timestamptz,
    status        text        NOT NULL DEFAULT 'queued' CHECK (status IN
                  ('queued', 'running', 'succeeded', 'failed', 'timed_out', 'skipped', 'cancelled')),
    trigger       text        NOT NULL DEFAULT 'schedule' CHECK (trigger IN ('schedule', 'manual', 'retry')),
    attempt       integer     NOT NULL DEFAULT 1,
    message       text,
    executor_pid  integer,
    kind          text        NOT NULL DEFAULT 'sql' CHECK (kind IN ('sql', 'http')), -- who runs it
    response      jsonb,      -- HTTP runs: status_code, headers, body, body_truncated, timings
    database      name        -- where the run ran, copied from its job; NULL: this database
);
-- "latest runs of job X"
CREATE INDEX job_run_job_idx ON pulse.job_run (job_id, run_id DESC);
-- "failures in the last hour"
CREATE INDEX job_run_failures_idx ON pulse.job_run (finished_at) WHERE status IN ('failed', 'timed_out');
-- work for the executors, and "is a run of this job still going" (overlap = 'skip')
CREATE INDEX job_run_queued_idx ON pulse.job_run (scheduled_for, run_id) WHERE status = 'queued';
CREATE INDEX job_run_active_idx ON pulse.job_run (job_id) WHERE status IN ('queued', 'running');
-- claims round-robin by owner: the owners with queued runs (a skip scan), and each one's in time order
CREATE INDEX job_run_queued_owner_idx ON pulse.job_run (kind, owner, scheduled_for, run_id) WHERE status = 'queued';
-- time ranges ("runs in the last hour", "runs per night", retention) on an append-mostly table
CREATE INDEX job_run_created_brin ON pulse.job_run USING brin (created_at);

-- Rolling statistics per job, maintained by the executors at the end of every run (so health
-- checks never scan the run history) and the last finished run (kept even when pulse.log_runs
-- does not keep run rows).
CREATE TABLE pulse.job_stats (
    job_id               bigint      PRIMARY KEY REFERENCES pulse.job ON DELETE CASCADE,
    owner                oid         NOT NULL,
    hour_base            bigint      NOT NULL DEFAULT 0,  -- epoch hour of bucket 1 (the newest)
    runs                 integer[]   NOT NULL DEFAULT '{}', -- runs finished per hour, newest first, 24
    failures             integer[]   NOT NULL DEFAULT '{}',
    dur_ms               float8[]    NOT NULL DEFAULT '{}', -- summed durations per hour
    recent_at            bigint[]    NOT NULL DEFAULT '{}', -- latest runs (epoch s), for the p95
    recent_ms            float8[]    NOT NULL DEFAULT '{}',
    p95_ms               float8,     -- p95 of recent_ms within 24 hours, as of the last run
    consecutive_failures integer     NOT NULL DEFAULT 0,
    incident_open        boolean     NOT NULL DEFAULT false, -- a failure alert awaits its recovery
    overdue_alerted      boolean     NOT NULL DEFAULT false,
    last_run_id          bigint,
    last_run_at          timestamptz,
    last_status          text,
    last_message         text
);

ALTER TABLE pulse.job ENABLE ROW LEVEL SECURITY;
ALTER TABLE pulse.job_run ENABLE ROW LEVEL SECURITY;
ALTER TABLE pulse.job_stats ENABLE ROW LEVEL SECURITY;
CREATE POLICY job_owner ON pulse.job
    USING (owner = (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user));
CREATE POLICY job_run_owner ON pulse.job_run
    USING (owner = (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user));
CREATE POLICY job_stats_owner ON pulse.job_stats
    USING (owner = (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user));

REVOKE ALL ON pulse.job, pulse.job_run, pulse.job_stats FROM PUBLIC;
GRANT SELECT ON pulse.job, pulse.job_run, pulse.job_stats TO PUBLIC;

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

COMMENT ON TABLE pulse.job IS 'pg_pulse jobs (read pulse.jobs; change them with pulse.schedule_job, pulse.alter_job, pulse.toggle_job, pulse.unschedule_job)';
COMMENT ON TABLE pulse.job_stats IS 'Rolling 24-hour statistics and the last finished run of each job (read pulse.scheduler_health())';
COMMENT ON TABLE pulse.job_run IS 'pg_pulse run history, one row per run (read pulse.job_runs)';
COMMENT ON VIEW pulse.jobs IS 'Jobs you own (all jobs for superusers), with the next run, the last run''s status and the database each job runs in';
COMMENT ON VIEW pulse.job_runs IS 'Runs of the jobs you own (all for superusers): queued, running, succeeded, failed, timed_out, skipped, cancelled; database: where each ran';
COMMENT ON COLUMN pulse.job.owner IS 'The role the job runs as (regrole: kept by OID so a RENAME follows, dumped and restored by name)';
COMMENT ON COLUMN pulse.job.database IS 'The database the job runs in, connected as its owner; NULL: the database pg_pulse lives in (pulse.database_name)';
COMMENT ON COLUMN pulse.job_run.database IS 'The database the run ran in (copied from its job); NULL: the database pg_pulse lives in';

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

-- Secrets for {{secret:NAME}} placeholders in HTTP requests. No role has any privilege on the
-- table: values are written by pulse.set_secret and read only by pg_pulse's workers. A value is
-- stored sealed (XChaCha20-Poly1305 under the key in PGDATA/pg_pulse/secret.key, bound to owner
-- and name): table readers, WAL and replicas see ciphertext only. They are not part of pg_dump
-- (set them again after a restore).
CREATE TABLE pulse.secret (
    owner      oid         NOT NULL,
    name       text        NOT NULL,
    sealed     bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner, name)
);
REVOKE ALL ON pulse.secret FROM PUBLIC;
COMMENT ON TABLE pulse.secret IS 'Secret values for {{secret:NAME}} placeholders, sealed with the key in PGDATA/pg_pulse/secret.key for their owner and name; no role may read it: set them with pulse.set_secret, list them in pulse.secrets';
COMMENT ON COLUMN pulse.secret.sealed IS 'The value sealed: version byte, 24-byte nonce, XChaCha20-Poly1305 ciphertext with the owner and name as associated data';
CREATE VIEW pulse.secrets WITH (security_barrier = true) AS
SELECT s.name, pg_catalog.pg_get_userbyid(s.owner)::text AS owner, s.created_at, s.updated_at
  FROM pulse.secret s
 WHERE s.owner = (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user)
    OR (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user);
GRANT SELECT ON pulse.secrets TO PUBLIC;
COMMENT ON VIEW pulse.secrets IS 'Names and timestamps of your secrets (all for superusers); values are never shown';

-- After-commit HTTP requests (pulse.http_post, http_get, http_delete, http) and webhook alerts.
-- A logged table: a request is visible to the HTTP worker only once its transaction commits, is
-- leased (state 'sending') while in flight, and is sent again if a crash interrupted it.
-- No CHECK constraints: PostgreSQL reads and plans each one on every insert, which was a third of
-- what pulse.http_post cost. The functions check what they store, the state is a type, and the
-- HTTP worker takes max_attempts and retry_backoff within their documented ranges whatever a row holds.
CREATE TYPE pulse.http_request_state AS ENUM ('pending', 'sending', 'succeeded', 'failed', 'timed_out');
COMMENT ON TYPE pulse.http_request_state IS 'The state of an after-commit HTTP request: pending (waiting to be sent, or for its next attempt), sending (in flight), succeeded, failed, timed_out';
CREATE TABLE pulse.http_request (
    id               bigserial   PRIMARY KEY,
    owner            oid         NOT NULL,
    request          jsonb       NOT NULL,   -- as pulse.http_request builds it, placeholders unresolved
    origin           text,                   -- NULL: a call; 'alert': a webhook alert
    state            pulse.http_request_state NOT NULL DEFAULT 'pending',
    attempts         integer     NOT NULL DEFAULT 0,
    max_attempts     integer     NOT NULL DEFAULT 1,     -- 1 to 100
    retry_backoff    interval    NOT NULL DEFAULT '10 seconds', -- positive
    created_at       timestamptz NOT NULL DEFAULT now(),
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_until      timestamptz,            -- while 'sending'
    sent_at          timestamptz,            -- the last attempt
    finished_at      timestamptz,
    status_code      integer,
    response_headers jsonb,
    body             text,                   -- cut to pulse.http_max_response_bytes
    body_truncated   boolean,
    timed_out        boolean,
    error            text,
    timings          jsonb,                  -- queued_ms, headers_ms, total_ms of the last attempt
    interrupted      integer     NOT NULL DEFAULT 0 -- in flight when the HTTP worker stopped (not in attempts)
) WITH (fillfactor = 70);
-- The indexes of waiting requests hold every unfinished one (pending or sending; the queries
-- add state = 'pending'), so that a claim, which changes only state, sent_at and lease_until, is
-- a HOT update (no new index entries) in the room the fillfactor leaves on the row's page.
CREATE INDEX http_request_pending_idx ON pulse.http_request (next_attempt_at, id) WHERE finished_at IS NULL;
-- claims round-robin by owner: the owners with pending requests (a skip scan), each one's in order
CREATE INDEX http_request_pending_owner_idx ON pulse.http_request (owner, next_attempt_at, id) WHERE finished_at IS NULL;
CREATE INDEX http_request_created_brin ON pulse.http_request USING brin (created_at);
ALTER TABLE pulse.http_request ENABLE ROW LEVEL SECURITY;
CREATE POLICY http_request_owner ON pulse.http_request
    USING (owner = (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user));
REVOKE ALL ON pulse.http_request FROM PUBLIC;
GRANT SELECT ON pulse.http_request TO PUBLIC;

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

-- pg_net's net._http_response, for finished requests
CREATE VIEW pulse.http_responses WITH (security_invoker = true) AS
SELECT h.id,
       h.status_code,
       h.response_headers->>'content-type' AS content_type,
       h.response_headers AS headers,
       h.body AS content,
       h.body_truncated AS content_truncated,
       coalesce(h.timed_out, false) AS timed_out,
       h.error AS error_msg,
       h.created_at AS created,
       h.finished_at,
       h.attempts,
       h.timings
  FROM pulse.http_request h
 WHERE h.finished_at IS NOT NULL;
GRANT SELECT ON pulse.http_requests, pulse.http_responses TO PUBLIC;
COMMENT ON TABLE pulse.http_request IS 'After-commit HTTP requests and their results (read pulse.http_requests and pulse.http_responses)';
COMMENT ON COLUMN pulse.http_request.interrupted IS 'How many times the HTTP worker stopped (crash, restart) while this request was in flight: each such send may or may not have reached the server and is not counted in attempts (which counts sends whose outcome was recorded); at 3 the request fails instead of being sent again';
COMMENT ON VIEW pulse.http_requests IS 'Your after-commit HTTP requests (all for superusers): state pending, sending, succeeded, failed or timed_out';
COMMENT ON VIEW pulse.http_responses IS 'Results of your finished HTTP requests: status, headers, body (content), timed_out, error (pg_net''s net._http_response)';

-- Which job pulse.import_pg_cron() made from which pg_cron job: a later import updates only these
-- (another job of the same name and owner is left alone). Written only by that function.
CREATE TABLE pulse.job_import (
    job_id      bigint      PRIMARY KEY REFERENCES pulse.job (job_id) ON DELETE CASCADE,
    cron_jobid  bigint      NOT NULL,
    imported_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON pulse.job_import FROM PUBLIC;
COMMENT ON TABLE pulse.job_import IS 'The jobs pulse.import_pg_cron() created from pg_cron jobs: the next import brings these up to date and leaves other jobs of the same name alone';
COMMENT ON COLUMN pulse.job_import.cron_jobid IS 'The pg_cron job (cron.job.jobid) it was last imported from';

-- jobs are part of a pg_dump of the database; run history is not
SELECT pg_catalog.pg_extension_config_dump('pulse.job', '');
SELECT pg_catalog.pg_extension_config_dump('pulse.job_job_id_seq', '');
