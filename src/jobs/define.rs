//! `pulse.schedule_job` and `pulse.schedule_once`: one [`JobSpec`] (every column of the job row)
//! built from the arguments, written with one INSERT, or one UPDATE of the caller's job of that
//! name, or nothing when the job already matches (migrations repeat these calls).

use super::args::{
    check, check_run_at, check_timeout, parse_schedule, require_login, required, resolve_database,
    resolve_timezone, Action, Alerts, Retries,
};
use super::catalog::{find_job_owned, next_from_now};
use super::{spec, wake};
use crate::pgutil::{self, from_pg_ts, interval_micros, invalid, privileged};
use crate::schedule::{Schedule, Zone};
use pgrx::prelude::*;

/// Everything a job row holds; `None` in `schedule` means a one-shot at `run_at`.
struct JobSpec<'a> {
    name: &'a str,
    schedule: Option<(&'a str, Schedule)>,
    run_at: Option<TimestampWithTimeZone>,
    tz: Zone,
    action: Action,
    enabled: bool,
    timeout: Option<Interval>,
    overlap: &'a str,
    comment: Option<&'a str>,
    /// The `database =>` argument, as given (resolved for the owner when written).
    database: Option<&'a str>,
    alert_after_failures: Option<i32>,
    /// The alert target, jsonb's canonical text.
    alert: Option<String>,
    max_attempts: i32,
    retry_backoff: Interval,
}

impl JobSpec<'_> {
    fn schedule_text(&self) -> Option<String> {
        self.schedule.as_ref().map(|(t, _)| t.to_string())
    }

    fn initial_next(&self) -> Option<TimestampWithTimeZone> {
        match &self.schedule {
            Some((_, s)) => next_from_now(s, &self.tz),
            None => self.run_at,
        }
    }
}

fn micros(i: Option<Interval>) -> Option<i64> {
    i.map(|i| interval_micros(&i))
}

/// Creates the job, or brings the caller's job of that name to this definition (same id, history
/// kept). Writes nothing when the job already matches.
fn upsert(spec: JobSpec) -> i64 {
    pgutil::require_scheduler_database();
    privileged(|| {
        let me = pgutil::current_user_oid_outer();
        require_login(me);
        let database = resolve_database(spec.database, me);
        let schedule_text = spec.schedule_text();
        let http = spec.action.http();
        let Some(job) = find_job_owned(spec.name) else {
            let next = if spec.enabled {
                spec.initial_next()
            } else {
                None
            };
            let id = Spi::get_one_with_args::<i64>(
                // with its (empty) statistics row: the first outcome then only updates it
                "WITH j AS (
                   INSERT INTO pulse.job (job_name, owner, schedule, run_at, timezone, command, enabled, timeout,
                                          overlap, comment, next_run_at, http, database,
                                          alert_after_failures, alert, max_attempts, retry_backoff)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, $13,
                           $14, $15::jsonb, $16, $17)
                   RETURNING job_id, owner),
                 s AS (INSERT INTO pulse.job_stats (job_id, owner) SELECT job_id, owner::oid FROM j)
                 SELECT job_id FROM j",
                &[
                    spec.name.into(),
                    me.into(),
                    schedule_text.into(),
                    spec.run_at.into(),
                    spec.tz.name().into(),
                    spec.action.command().into(),
                    spec.enabled.into(),
                    spec.timeout.into(),
                    spec.overlap.into(),
                    spec.comment.into(),
                    next.into(),
                    http.into(),
                    database.into(),
                    spec.alert_after_failures.into(),
                    spec.alert.clone().into(),
                    spec.max_attempts.into(),
                    spec.retry_backoff.into(),
                ],
            )
            .unwrap_or_else(|e| invalid(format!("could not create job: {e}"), ""))
            .unwrap_or_default();
            wake();
            return id;
        };
        let timing_changed = job.schedule != schedule_text
            || job.timezone != spec.tz.name()
            || job.run_at.map(from_pg_ts) != spec.run_at.map(from_pg_ts);
        // what the scheduler acts on; alerts and retries only matter once a run ends
        let runs_same = !timing_changed
            && job.command.as_deref() == spec.action.command()
            && job.http == http
            && job.enabled == spec.enabled
            && micros(job.timeout) == micros(spec.timeout)
            && job.overlap == spec.overlap
            && job.comment.as_deref() == spec.comment
            && job.database == database;
        let settings_same = job.alert_after_failures == spec.alert_after_failures
            && job.alert == spec.alert
            && job.max_attempts == spec.max_attempts
            && micros(job.retry_backoff) == micros(Some(spec.retry_backoff));
        if runs_same && settings_same {
            return job.job_id;
        }
        let next = if !spec.enabled {
            None
        } else if timing_changed || !job.enabled {
            spec.initial_next()
        } else {
            job.next_run_at
        };
        Spi::run_with_args(
            "UPDATE pulse.job SET schedule = $2, run_at = $3, timezone = $4, command = $5, enabled = $6,
                    timeout = $7, overlap = $8, comment = $9, next_run_at = $10, http = $11::jsonb,
                    database = $12, alert_after_failures = $13, alert = $14::jsonb,
                    max_attempts = $15, retry_backoff = $16, updated_at = now()
              WHERE job_id = $1",
            &[
                job.job_id.into(),
                schedule_text.into(),
                spec.run_at.into(),
                spec.tz.name().into(),
                spec.action.command().into(),
                spec.enabled.into(),
                spec.timeout.into(),
                spec.overlap.into(),
                spec.comment.into(),
                next.into(),
                http.into(),
                database.into(),
                spec.alert_after_failures.into(),
                spec.alert.clone().into(),
                spec.max_attempts.into(),
                spec.retry_backoff.into(),
            ],
        )
        .unwrap_or_else(|e| invalid(format!("could not update job: {e}"), ""));
        if !runs_same {
            if !spec.enabled {
                crate::run::finish::cancel_queued(&[job.job_id], "the job was paused")
                    .unwrap_or_else(|e| invalid(format!("could not cancel queued runs: {e}"), ""));
            }
            wake();
        }
        job.job_id
    })
}

/// Creates or updates a recurring job and returns its id.
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn schedule_job(
    job_name: Option<&str>,
    schedule: Option<&str>,
    command: default!(Option<&str>, "NULL"),
    timezone: default!(Option<&str>, "NULL"),
    enabled: default!(Option<bool>, true),
    timeout: default!(Option<Interval>, "NULL"),
    overlap: default!(Option<&str>, "'skip'"),
    comment: default!(Option<&str>, "NULL"),
    alert_after_failures: default!(Option<i32>, "NULL"),
    alert: default!(Option<pgrx::JsonB>, "NULL"),
    max_attempts: default!(Option<i32>, "NULL"),
    retry_backoff: default!(Option<Interval>, "NULL"),
    http: default!(Option<pgrx::JsonB>, "NULL"),
    database: default!(Option<&str>, "NULL"),
) -> i64 {
    let name = required(job_name, "job_name");
    let schedule_text = required(schedule, "schedule");
    let (alert_after_failures, alert) = Alerts::new(alert_after_failures, alert).or_defaults();
    let (max_attempts, retry_backoff) = Retries::new(max_attempts, retry_backoff).or_defaults();
    let action = Action::new(command, http);
    check(spec::check_name(name));
    let tz = resolve_timezone(timezone);
    let sched = parse_schedule(schedule_text, &tz);
    check_timeout(&timeout);
    let overlap = pgutil::not_null(
        overlap,
        "overlap",
        "Pass overlap => 'skip' or 'allow', or leave it out ('skip').",
    );
    check(spec::check_overlap(overlap));
    upsert(JobSpec {
        name,
        schedule: Some((schedule_text.trim(), sched)),
        run_at: None,
        tz,
        action,
        enabled: pgutil::not_null(
            enabled,
            "enabled",
            "Pass enabled => true or false, or leave it out (true).",
        ),
        timeout,
        overlap,
        comment,
        database,
        alert_after_failures,
        alert,
        max_attempts,
        retry_backoff,
    })
}

/// Creates or updates a one-shot job that runs once at `run_at` (at once if that has passed).
#[pg_extern(volatile, parallel_unsafe)]
fn schedule_once(
    job_name: Option<&str>,
    run_at: Option<TimestampWithTimeZone>,
    command: default!(Option<&str>, "NULL"),
    enabled: default!(Option<bool>, true),
    timeout: default!(Option<Interval>, "NULL"),
    comment: default!(Option<&str>, "NULL"),
    alert_after_failures: default!(Option<i32>, "NULL"),
    alert: default!(Option<pgrx::JsonB>, "NULL"),
    max_attempts: default!(Option<i32>, "NULL"),
    retry_backoff: default!(Option<Interval>, "NULL"),
    http: default!(Option<pgrx::JsonB>, "NULL"),
    database: default!(Option<&str>, "NULL"),
) -> i64 {
    let name = required(job_name, "job_name");
    let run_at = required(run_at, "run_at");
    let (alert_after_failures, alert) = Alerts::new(alert_after_failures, alert).or_defaults();
    let (max_attempts, retry_backoff) = Retries::new(max_attempts, retry_backoff).or_defaults();
    let action = Action::new(command, http);
    check(spec::check_name(name));
    check_run_at(run_at);
    check_timeout(&timeout);
    upsert(JobSpec {
        name,
        schedule: None,
        run_at: Some(run_at),
        tz: resolve_timezone(None),
        action,
        enabled: pgutil::not_null(
            enabled,
            "enabled",
            "Pass enabled => true or false, or leave it out (true).",
        ),
        timeout,
        overlap: "skip",
        comment,
        database,
        alert_after_failures,
        alert,
        max_attempts,
        retry_backoff,
    })
}
