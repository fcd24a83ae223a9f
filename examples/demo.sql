-- pg_pulse demo: what `make demo` runs against a fresh server (safe to run again).
\set QUIET on
\pset footer off
CREATE EXTENSION IF NOT EXISTS pg_pulse;

-- A tiny version of the users' ingestion set-up: organisations, and a queue of ingestion jobs.
CREATE SCHEMA IF NOT EXISTS demo;
CREATE TABLE IF NOT EXISTS demo.orgs (
    org_id     int PRIMARY KEY,
    name       text NOT NULL,
    mapped_at  timestamptz
);
CREATE TABLE IF NOT EXISTS demo.ingestion_jobs (
    job_id     bigserial PRIMARY KEY,
    org_id     int NOT NULL REFERENCES demo.orgs,
    kind       text NOT NULL,
    status     text NOT NULL DEFAULT 'queued',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS demo.heartbeat (at timestamptz NOT NULL DEFAULT clock_timestamp());
INSERT INTO demo.orgs(org_id, name, mapped_at) VALUES
    (1, 'Acme Builders', NULL), (2, 'Northwind Fabricators', now() - interval '40 days'),
    (3, 'Globex', now())
ON CONFLICT DO NOTHING;

\echo '== Schedules are validated and previewed before anything is created:'
SELECT t AS "next runs of '0 2 * * *' in Europe/Berlin"
  FROM pulse.next_runs('0 2 * * *', 'Europe/Berlin', 3) AS t;

\echo '== Scheduling jobs (every call is idempotent: this is what a migration does):'
SELECT pulse.schedule_job(
    'heartbeat', '5 seconds',
    $$INSERT INTO demo.heartbeat DEFAULT VALUES$$,
    comment => 'liveness probe, every 5 seconds on the wall clock') AS heartbeat_id;

SELECT pulse.schedule_job(
    'nightly-mapper-queue', '0 2 * * *',
    $$INSERT INTO demo.ingestion_jobs(org_id, kind)
      SELECT org_id, 'mapper' FROM demo.orgs
       WHERE mapped_at IS NULL OR mapped_at < now() - interval '30 days'
       ORDER BY org_id LIMIT 30$$,
    timezone => 'Europe/Berlin', timeout => '5 minutes',
    comment => 'queue mapper jobs for orgs with stale or absent schemas') AS nightly_id;

SELECT pulse.schedule_job(
    'hourly-retry-failed', '0 * * * *',
    $$UPDATE demo.ingestion_jobs SET status = 'queued'
       WHERE status = 'failed' AND created_at > now() - interval '1 day'$$,
    comment => 'requeue recent failures') AS retry_id;

SELECT pulse.schedule_job(
    'always-fails', '@daily', $$SELECT 1/0$$,
    comment => 'shows how a failure is recorded') AS failing_id;

\echo '== Running the nightly job by hand, now (replaces hand-written trigger_*() helpers):'
SELECT pulse.run_job('nightly-mapper-queue') AS run_id;
SELECT pulse.run_job('always-fails') AS run_id;

\echo '== HTTP jobs: call an endpoint every 5 seconds; the URL comes from a setting, the key from a secret'
\echo '   (resolved only when sent, never stored: the playbooks'' trigger_*() helpers, without the helper)'
ALTER DATABASE postgres SET app.settings.edge_url = :'http';
SELECT pulse.set_secret('service_role_key', 'demo-service-role-key-not-a-real-one') AS secret_created;
SELECT pulse.schedule_job(
    'edge-ingest', '5 seconds',
    http => pulse.http_request('POST', '{{setting:app.settings.edge_url}}/ok/functions/v1/ingest',
                               '{"Authorization": "Bearer {{secret:service_role_key}}"}',
                               '{"job": "{{job_name}}", "run": "{{run_id}}", "attempt": "{{attempt}}"}',
                               body_template => true),
    max_attempts => 3, retry_backoff => '2 seconds',
    comment => 'an Edge Function call with retries (connection errors, timeouts, 429, 5xx)') AS edge_id;

\echo '== After-commit requests (the pg_net replacement): sent once the transaction commits'
BEGIN;
SELECT pulse.http_post(:'http' || '/ok/webhooks/order-created', '{"order": 42}') AS request_id;
COMMIT;
BEGIN;
SELECT pulse.http_post(:'http' || '/ok/webhooks/never-sent', '{"order": 43}') AS rolled_back_request;
ROLLBACK;

\echo '== Waiting 11 seconds for the heartbeat to fire a couple of times ...'
SELECT pg_sleep(11);

\echo '== pulse.jobs:'
SELECT job_name, schedule, timezone, enabled, next_run_at, last_status, comment FROM pulse.jobs ORDER BY job_id;

\echo '== Latest runs in pulse.job_runs (fire lag = started_at - scheduled_for):'
SELECT run_id, job_name, trigger, status, scheduled_for, started_at - scheduled_for AS lag, duration, message
  FROM pulse.job_runs ORDER BY run_id DESC LIMIT 10;

\echo '== HTTP runs keep the status, the response and timings; after-commit results are in pulse.http_responses:'
SELECT run_id, status, message, response->'timings'->>'total_ms' AS total_ms
  FROM pulse.job_runs WHERE kind = 'http' ORDER BY run_id DESC LIMIT 3;
SELECT id, status_code, content, timed_out, error_msg FROM pulse.http_responses ORDER BY id DESC LIMIT 3;

\echo '== What the nightly job queued:'
SELECT job_id, org_id, kind, status FROM demo.ingestion_jobs ORDER BY job_id LIMIT 10;

\echo '== Pausing keeps the definition and history (resume with pulse.toggle_job(name, true)):'
SELECT pulse.toggle_job('always-fails', false) AS always_fails_enabled;

\echo '== Is everything running? (pulse.scheduler_status and pulse.scheduler_health)'
SELECT verdict, worker_alive, jobs_total, jobs_failing, jobs_overdue, round(health_pct::numeric, 1) AS health_pct
  FROM pulse.scheduler_status();
SELECT job_name, health, reason, runs_24h, failures_24h FROM pulse.scheduler_health();

\echo '== The ingestion_jobs table as a work queue: claim a batch like a worker would'
SELECT pulse.make_queue('demo.ingestion_jobs') AS made_queue;
SELECT j->>'job_id' AS job_id, j->>'org_id' AS org_id, j->>'status' AS status, j->>'attempts' AS attempts
  FROM pulse.claim_batch('demo.ingestion_jobs', 2, worker => 'demo-worker') AS j;
SELECT * FROM pulse.queue_health('demo.ingestion_jobs');
