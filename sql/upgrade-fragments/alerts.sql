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
    created_at           timestamptz NOT NULL DEFAULT now()
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
       pg_catalog.jsonb_build_object(
           'alert_id', a.alert_id, 'event', a.event, 'job', a.job_name, 'job_id', a.job_id,
           'owner', pg_catalog.pg_get_userbyid(a.owner), 'run_id', a.run_id, 'status', a.status,
           'message', a.message, 'consecutive_failures', a.consecutive_failures,
           'runs_24h', a.runs_24h, 'failures_24h', a.failures_24h, 'at', a.created_at) AS payload
  FROM pulse.alert a;
GRANT SELECT ON pulse.alerts TO PUBLIC;

COMMENT ON TABLE pulse.alert IS 'Alerts pg_pulse sent (incident, recovered, overdue), one row each; NOTIFY carries only the alert_id (read pulse.alerts)';
COMMENT ON VIEW pulse.alerts IS 'Alerts about the jobs you own (all for superusers): look up the alert_id of a pulse_alerts notification here; an id not found here was not sent to you by pg_pulse';
