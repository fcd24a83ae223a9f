//! Changing a job: `pulse.alter_job` (any field, one UPDATE), `pulse.toggle_job` and
//! `pulse.unschedule_job`.

use super::args::{
    check, check_run_at, parse_schedule, required, resolve_database, resolve_timezone,
    stored_timezone, Action, Alerts, Retries,
};
use super::catalog::{find_job, must_find_job, next_for_job, next_from_now};
use super::{spec, wake};
use crate::pgutil::{self, from_pg_ts, invalid, privileged, raise};
use crate::schedule::Schedule;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

fn cancel_queued(job_id: i64, why: &str) {
    crate::run::finish::cancel_queued(&[job_id], why)
        .unwrap_or_else(|e| invalid(format!("could not cancel queued runs: {e}"), ""));
}

/// Removes a job (its run history stays in pulse.job_runs). False if there was no such job.
#[pg_extern(volatile, parallel_unsafe)]
fn unschedule_job(job_name: Option<&str>) -> bool {
    let name = required(job_name, "job_name");
    pgutil::require_scheduler_database();
    privileged(|| match find_job(name) {
        None => {
            pgrx::notice!("job \"{name}\" does not exist, skipping");
            false
        }
        Some(job) => {
            cancel_queued(job.job_id, "the job was unscheduled");
            Spi::run_with_args(
                "DELETE FROM pulse.job WHERE job_id = $1",
                &[job.job_id.into()],
            )
            .unwrap_or_else(|e| invalid(format!("could not delete job: {e}"), ""));
            wake();
            true
        }
    })
}

/// Pauses (false) or resumes (true) a job, keeping its definition and history. Returns the new state.
#[pg_extern(volatile, parallel_unsafe)]
fn toggle_job(job_name: Option<&str>, enabled: Option<bool>) -> bool {
    let name = required(job_name, "job_name");
    let enabled = required(enabled, "enabled");
    pgutil::require_scheduler_database();
    privileged(|| {
        let job = must_find_job(name);
        if job.enabled == enabled {
            return enabled;
        }
        let next = if enabled {
            next_for_job(name, &job)
        } else {
            None
        };
        Spi::run_with_args(
            "UPDATE pulse.job SET enabled = $2, next_run_at = $3, updated_at = now() WHERE job_id = $1",
            &[job.job_id.into(), enabled.into(), next.into()],
        )
        .unwrap_or_else(|e| invalid(format!("could not update job: {e}"), ""));
        if !enabled {
            cancel_queued(job.job_id, "the job was paused");
        }
        wake();
        enabled
    })
}

/// Changes any field of a job; NULL arguments leave a field as it is. Returns the job id.
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::too_many_arguments)]
fn alter_job(
    job_name: Option<&str>,
    schedule: default!(Option<&str>, "NULL"),
    command: default!(Option<&str>, "NULL"),
    timezone: default!(Option<&str>, "NULL"),
    enabled: default!(Option<bool>, "NULL"),
    timeout: default!(Option<Interval>, "NULL"),
    overlap: default!(Option<&str>, "NULL"),
    comment: default!(Option<&str>, "NULL"),
    new_name: default!(Option<&str>, "NULL"),
    run_at: default!(Option<TimestampWithTimeZone>, "NULL"),
    alert_after_failures: default!(Option<i32>, "NULL"),
    alert: default!(Option<pgrx::JsonB>, "NULL"),
    max_attempts: default!(Option<i32>, "NULL"),
    retry_backoff: default!(Option<Interval>, "NULL"),
    http: default!(Option<pgrx::JsonB>, "NULL"),
    database: default!(Option<&str>, "NULL"),
) -> i64 {
    let name = required(job_name, "job_name");
    pgutil::require_scheduler_database();
    // a new command makes it a SQL job, a new request an HTTP job
    let action = (command.is_some() || http.is_some()).then(|| Action::new(command, http));
    // alert_after_failures => 0: back to the server's default (NULL)
    let alerts = Alerts::new(alert_after_failures.filter(|n| *n != 0), alert);
    let retries = Retries::new(max_attempts, retry_backoff);
    let reset_threshold = alert_after_failures == Some(0);
    if schedule.is_some() && run_at.is_some() {
        invalid(
            "pass either schedule or run_at, not both",
            "A job is either recurring (schedule) or one-shot (run_at).",
        );
    }
    if let Some(o) = overlap {
        check(spec::check_overlap(o));
    }
    if let Some(r) = run_at {
        check_run_at(r);
    }
    if let Some(n) = new_name {
        check(spec::check_name(n));
    }
    // timeout => '0' removes the timeout; a negative one is an error
    let timeout_change: Option<Option<Interval>> = timeout.map(|i| {
        let us = pgutil::interval_arg("timeout", &i, "5 minutes");
        check(spec::alter_timeout(&i.to_string(), us)).then_some(i)
    });
    privileged(|| {
        let job = must_find_job(name);
        // '' (like NULL in schedule_job) means the database pg_pulse lives in
        let new_database = match database {
            None => job.database.clone(),
            Some(d) => resolve_database(Some(d), job.owner),
        };
        let tz = match timezone {
            Some(t) => resolve_timezone(Some(t)),
            None => stored_timezone(name, &job.timezone),
        };
        let new_schedule: Option<String> = match (schedule, run_at) {
            (Some(s), _) => {
                parse_schedule(s, &tz);
                Some(s.trim().to_string())
            }
            (None, Some(_)) => None,
            (None, None) => {
                if let Some(s) = &job.schedule {
                    parse_schedule(s, &tz);
                }
                job.schedule.clone()
            }
        };
        let new_run_at = match (schedule, run_at) {
            (Some(_), _) => None,
            (None, Some(r)) => Some(r),
            (None, None) => job.run_at,
        };
        let enabled_now = enabled.unwrap_or(job.enabled);
        let timing_changed = new_schedule != job.schedule
            || tz.name() != job.timezone
            || new_run_at.map(from_pg_ts) != job.run_at.map(from_pg_ts);
        let next = if !enabled_now {
            None
        } else if timing_changed {
            match &new_schedule {
                Some(s) => Schedule::parse(s)
                    .ok()
                    .and_then(|sc| next_from_now(&sc, &tz)),
                None => new_run_at,
            }
        } else if !job.enabled {
            next_for_job(name, &job)
        } else {
            job.next_run_at
        };
        let new_timeout = match timeout_change {
            Some(t) => t,
            None => job.timeout,
        };
        let new_comment: Option<String> = match comment {
            Some("") => None,
            Some(c) => Some(c.to_string()),
            None => job.comment.clone(),
        };
        let (new_command, new_http) = match &action {
            Some(a) => (a.command().map(str::to_string), a.http()),
            None => (job.command.clone(), job.http.clone()),
        };
        let new_after = match (reset_threshold, alerts.after) {
            (true, _) => None,
            (false, Some(n)) => Some(n),
            (false, None) => job.alert_after_failures,
        };
        let new_alert = match &alerts.target {
            Some(t) => t.clone(),
            None => job.alert.clone(),
        };
        let r = Spi::run_with_args(
            "UPDATE pulse.job SET job_name = coalesce($2, job_name), schedule = $3, run_at = $4, timezone = $5,
                    command = $6, enabled = $7, timeout = $8, overlap = $9, comment = $10, next_run_at = $11,
                    http = $12::jsonb, database = $13, alert_after_failures = $14, alert = $15::jsonb,
                    max_attempts = coalesce($16, max_attempts), retry_backoff = coalesce($17, retry_backoff),
                    updated_at = now()
              WHERE job_id = $1",
            &[
                job.job_id.into(),
                new_name.into(),
                new_schedule.into(),
                new_run_at.into(),
                tz.name().into(),
                new_command.into(),
                enabled_now.into(),
                new_timeout.into(),
                overlap.unwrap_or(&job.overlap).into(),
                new_comment.into(),
                next.into(),
                new_http.into(),
                new_database.into(),
                new_after.into(),
                new_alert.into(),
                retries.max_attempts.into(),
                retries.backoff.into(),
            ],
        );
        if let Err(e) = r {
            if new_name.is_some() {
                raise(
                    PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT,
                    format!(
                        "could not rename job \"{name}\" to \"{}\": {e}",
                        new_name.unwrap_or_default()
                    ),
                    "You already own a job with that name; pick another new_name.",
                );
            }
            invalid(format!("could not update job: {e}"), "");
        }
        if !enabled_now {
            cancel_queued(job.job_id, "the job was paused");
        }
        wake();
        job.job_id
    })
}
