//! Runs on demand and what the API tells about runs: `pulse.run_job`, `pulse.cancel_run`,
//! `pulse.next_runs` (a schedule's preview) and `pulse.current_run`. The run rows themselves are
//! written by `crate::worker::runs`.

use super::args::{required, resolve_timezone};
use super::catalog::must_find_job;
use super::wake;
use crate::pgutil::{self, from_pg_ts, invalid, privileged, raise, to_pg_ts};
use crate::schedule::{self, Schedule};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

/// Runs a job now, out of schedule (paused jobs too). Returns the id of the queued run.
#[pg_extern(volatile, parallel_unsafe)]
fn run_job(job_name: Option<&str>) -> i64 {
    let name = required(job_name, "job_name");
    pgutil::require_scheduler_database();
    privileged(|| {
        let job = must_find_job(name);
        let id = crate::run::queue::queue_manual(job.job_id)
            .unwrap_or_else(|e| invalid(format!("could not queue run: {e}"), ""))
            .unwrap_or_default();
        wake();
        id
    })
}

/// Cancels a queued run, or asks a running one to stop. True if the run was queued or running.
#[pg_extern(volatile, parallel_unsafe)]
fn cancel_run(run_id: Option<i64>) -> bool {
    let run_id = required(run_id, "run_id");
    pgutil::require_scheduler_database();
    privileged(|| {
        let me = pgutil::current_user_oid_outer();
        let sup = pgutil::outer_is_superuser();
        // A queued run is cancelled in place (the scheduler skips a row being changed). A running
        // one is only signalled: the run row is never locked here, since the scheduler records
        // the outcome of every role's runs and must not wait for a caller's open transaction.
        let cancelled = crate::run::finish::cancel_if_queued(run_id, me, sup)
            .unwrap_or_else(|e| invalid(format!("could not cancel run: {e}"), ""));
        if cancelled {
            return true;
        }
        let row = Spi::connect(|c| {
            c.select(
                "SELECT status, executor_pid, kind FROM pulse.job_run WHERE run_id = $1 AND (owner = $2 OR $3)",
                None,
                &[run_id.into(), me.into(), sup.into()],
            )
            .ok()
            .and_then(|t| t.first().get_three::<String, i32, String>().ok())
        });
        let Some((Some(status), pid, kind)) = row else {
            raise(
                PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                format!("run {run_id} does not exist"),
                "See your runs with SELECT run_id, job_name, status FROM pulse.job_runs ORDER BY run_id DESC;",
            )
        };
        match status.as_str() {
            "running" if kind.as_deref() == Some("http") => {
                pgrx::notice!("run {run_id} is an HTTP request in flight: it can't be stopped, its result will be recorded");
                false
            }
            "running" => {
                // claimed a moment ago, it may not be in an executor's hands yet: ask again
                // briefly (the scheduler hands runs out right after their claim commits)
                for _ in 0..100 {
                    if crate::worker::cancel_executor_run(pid.unwrap_or(0), run_id) {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    pgrx::check_for_interrupts!();
                }
                true
            }
            _ => false,
        }
    })
}

/// The next `count` run instants of a schedule strictly after `after`: preview and validator.
#[pg_extern(stable, parallel_safe)]
fn next_runs(
    schedule: Option<&str>,
    timezone: default!(Option<&str>, "NULL"),
    count: default!(Option<i32>, 5),
    after: default!(Option<TimestampWithTimeZone>, "now()"),
) -> SetOfIterator<'static, TimestampWithTimeZone> {
    let text = required(schedule, "schedule");
    let tz = resolve_timezone(timezone);
    let count = crate::pgutil::not_null(count, "count", "Pass count => 10, or leave it out (5).");
    if !(1..=10_000).contains(&count) {
        invalid(
            format!("invalid count {count}: it must be between 1 and 10000"),
            "Pass count => 10, for example.",
        );
    }
    let sched =
        Schedule::parse(text).unwrap_or_else(|e| invalid(e.to_string(), schedule::SCHEDULE_HINT));
    let after = match after {
        Some(a) if a.is_finite() && a < to_pg_ts(schedule::last_instant()) => from_pg_ts(a),
        Some(_) => invalid(
            "after must be a finite timestamp before the year 10000",
            "Pass after => now(), for example.",
        ),
        None => {
            crate::pgutil::not_null(None, "after", "Pass after => now(), or leave it out (now).")
        }
    };
    let runs: Vec<TimestampWithTimeZone> = sched
        .next_runs(&tz, after, count as usize)
        .into_iter()
        .map(to_pg_ts)
        .collect();
    SetOfIterator::new(runs)
}

/// The run this session is executing (inside a job's command); no row outside a job.
#[pg_extern(stable, parallel_restricted)]
fn current_run() -> TableIterator<
    'static,
    (
        name!(run_id, i64),
        name!(job_id, i64),
        name!(job_name, String),
        name!(scheduled_for, TimestampWithTimeZone),
        name!(attempt, i32),
        name!(trigger, String),
    ),
> {
    let rows = crate::worker::current_run()
        .map(|r| {
            (
                r.run_id,
                r.job_id,
                r.job_name,
                r.scheduled_for,
                r.attempt,
                r.trigger,
            )
        })
        .into_iter()
        .collect::<Vec<_>>();
    TableIterator::new(rows)
}
