//! Reading pulse.job for the API: a job row, finding the job a call means (and may manage), and
//! when a job runs next.

use crate::pgutil::{self, invalid, raise, to_pg_ts};
use crate::schedule::{Schedule, Zone};
use chrono::Utc;
use pgrx::prelude::*;
use pgrx::{pg_sys, PgSqlErrorCode};

const JOB_HINT: &str = "See the jobs you can manage with SELECT job_name, owner FROM pulse.jobs;";

/// A job row as the API reads it.
pub(super) struct Job {
    pub job_id: i64,
    pub schedule: Option<String>,
    pub run_at: Option<TimestampWithTimeZone>,
    pub timezone: String,
    pub command: Option<String>,
    pub enabled: bool,
    pub timeout: Option<Interval>,
    pub overlap: String,
    pub comment: Option<String>,
    pub next_run_at: Option<TimestampWithTimeZone>,
    /// An HTTP job's request (normalized jsonb, as text).
    pub http: Option<String>,
    /// Where the job runs; None: the database pg_pulse lives in.
    pub database: Option<String>,
    /// The role the job runs as.
    pub owner: pg_sys::Oid,
    /// NULL: the server's pulse.alert_after_failures.
    pub alert_after_failures: Option<i32>,
    /// The alert target (jsonb, as text); NULL: pulse.alert_target.
    pub alert: Option<String>,
    pub max_attempts: i32,
    pub retry_backoff: Option<Interval>,
}

/// `owner` is a regrole: read as oid (pgrx would accept it, the cast says what is meant).
const JOB_COLUMNS: &str = "job_id, schedule, run_at, timezone, command, enabled, timeout, overlap, comment, next_run_at, http::text, database::text, owner::oid, alert_after_failures, alert::text, max_attempts, retry_backoff";
/// The number of columns in [`JOB_COLUMNS`].
const JOB_NCOLS: usize = 17;

fn job_from_row(row: &pgrx::spi::SpiHeapTupleData) -> Job {
    let g =
        |e: pgrx::spi::SpiError| -> ! { invalid(format!("pg_pulse catalog read failed: {e}"), "") };
    Job {
        job_id: row
            .get::<i64>(1)
            .unwrap_or_else(|e| g(e))
            .unwrap_or_default(),
        schedule: row.get::<String>(2).unwrap_or_else(|e| g(e)),
        run_at: row.get::<TimestampWithTimeZone>(3).unwrap_or_else(|e| g(e)),
        timezone: row
            .get::<String>(4)
            .unwrap_or_else(|e| g(e))
            .unwrap_or_default(),
        command: row.get::<String>(5).unwrap_or_else(|e| g(e)),
        enabled: row
            .get::<bool>(6)
            .unwrap_or_else(|e| g(e))
            .unwrap_or_default(),
        timeout: row.get::<Interval>(7).unwrap_or_else(|e| g(e)),
        overlap: row
            .get::<String>(8)
            .unwrap_or_else(|e| g(e))
            .unwrap_or_default(),
        comment: row.get::<String>(9).unwrap_or_else(|e| g(e)),
        next_run_at: row
            .get::<TimestampWithTimeZone>(10)
            .unwrap_or_else(|e| g(e)),
        http: row.get::<String>(11).unwrap_or_else(|e| g(e)),
        database: row.get::<String>(12).unwrap_or_else(|e| g(e)),
        owner: row
            .get::<pg_sys::Oid>(13)
            .unwrap_or_else(|e| g(e))
            .unwrap_or(pg_sys::Oid::INVALID),
        alert_after_failures: row.get::<i32>(14).unwrap_or_else(|e| g(e)),
        alert: row.get::<String>(15).unwrap_or_else(|e| g(e)),
        max_attempts: row
            .get::<i32>(16)
            .unwrap_or_else(|e| g(e))
            .unwrap_or(super::spec::DEFAULT_MAX_ATTEMPTS),
        retry_backoff: row.get::<Interval>(17).unwrap_or_else(|e| g(e)),
    }
}

/// Finds (and row-locks) the job of that name the caller may manage: its own, or for a superuser
/// any job of that name (its own first). Must run inside `privileged`.
pub(super) fn find_job(name: &str) -> Option<Job> {
    let me = pgutil::current_user_oid_outer();
    let superuser = pgutil::outer_is_superuser();
    let q = format!(
        "SELECT {JOB_COLUMNS}, owner::oid = $2 AS mine FROM pulse.job
          WHERE job_name = $1 AND (owner::oid = $2 OR $3)
          ORDER BY owner::oid = $2 DESC, job_id LIMIT 2 FOR UPDATE"
    );
    let rows: Vec<(Job, bool)> = Spi::connect(|c| {
        let t = c
            .select(&q, None, &[name.into(), me.into(), superuser.into()])
            .unwrap_or_else(|e| invalid(format!("pg_pulse catalog read failed: {e}"), ""));
        t.map(|row| {
            let mine = row
                .get::<bool>(JOB_NCOLS + 1)
                .ok()
                .flatten()
                .unwrap_or(false);
            (job_from_row(&row), mine)
        })
        .collect()
    });
    match rows.len() {
        0 => None,
        1 => rows.into_iter().next().map(|(j, _)| j),
        _ => {
            let (first, mine) = rows.into_iter().next().expect("two rows");
            if mine {
                Some(first)
            } else {
                raise(
                    PgSqlErrorCode::ERRCODE_AMBIGUOUS_PARAMETER,
                    format!("several roles own a job named \"{name}\""),
                    "SET ROLE to the job's owner and repeat the call; SELECT job_name, owner FROM pulse.jobs shows the owners.",
                )
            }
        }
    }
}

pub(super) fn must_find_job(name: &str) -> Job {
    find_job(name).unwrap_or_else(|| {
        raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("job \"{name}\" does not exist"),
            JOB_HINT,
        )
    })
}

/// The caller's own job of that name (schedule_job and schedule_once never touch another role's job).
pub(super) fn find_job_owned(name: &str) -> Option<Job> {
    let q = format!(
        "SELECT {JOB_COLUMNS} FROM pulse.job WHERE job_name = $1 AND owner::oid = $2 FOR UPDATE"
    );
    Spi::connect(|c| {
        let t = c
            .select(
                &q,
                None,
                &[name.into(), pgutil::current_user_oid_outer().into()],
            )
            .unwrap_or_else(|e| invalid(format!("pg_pulse catalog read failed: {e}"), ""));
        t.map(|row| job_from_row(&row)).next()
    })
}

/// The next run instant of a recurring schedule from now, as stored in `next_run_at`.
pub(super) fn next_from_now(sched: &Schedule, tz: &Zone) -> Option<TimestampWithTimeZone> {
    sched.next_after(tz, Utc::now()).map(to_pg_ts)
}

/// next_run_at of a stored job when it is (re)enabled: the next slot from now, or a one-shot's instant
/// if it has not run yet.
pub(super) fn next_for_job(name: &str, job: &Job) -> Option<TimestampWithTimeZone> {
    match &job.schedule {
        Some(text) => {
            let tz = super::args::stored_timezone(name, &job.timezone);
            Schedule::parse(text)
                .ok()
                .and_then(|s| next_from_now(&s, &tz))
        }
        None => {
            let ran = Spi::get_one_with_args::<bool>(
                "SELECT EXISTS (SELECT 1 FROM pulse.job_run WHERE job_id = $1 AND trigger = 'schedule' AND status <> 'cancelled')",
                &[job.job_id.into()],
            )
            .ok()
            .flatten()
            .unwrap_or(false);
            if ran {
                None
            } else {
                job.run_at
            }
        }
    }
}
