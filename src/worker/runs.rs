//! Recording what happened to a run: its outcome (with statistics and alerts) and the retry it
//! may earn. Shared by the scheduler (SQL runs, whose outcomes executors report) and the HTTP
//! worker (HTTP runs).

use super::xact;
use crate::pgutil::interval_micros;
use pgrx::prelude::*;
use std::time::Duration;

/// After a failed attempt: queue the next one (`trigger = retry`) after the job's backoff (and no
/// sooner than a server's Retry-After), if the job allows more attempts and is enabled. Returns
/// whether a retry was queued.
pub(crate) fn schedule_retry(job_id: i64, attempt: i32, retry_after: Option<Duration>) -> bool {
    let Ok((Some(max), Some(backoff), Some(true))) = Spi::get_three_with_args::<i32, Interval, bool>(
        "SELECT max_attempts, retry_backoff, enabled FROM pulse.job WHERE job_id = $1",
        &[job_id.into()],
    ) else {
        return false;
    };
    if attempt >= max {
        return false;
    }
    let base = Duration::from_micros(interval_micros(&backoff).max(1) as u64);
    let policy = crate::retry::Backoff {
        base,
        cap: base.max(Duration::from_secs(3600)),
        jitter: crate::retry::Backoff::default().jitter,
    };
    let unit = unsafe { pg_sys::pg_prng_double(&raw mut pg_sys::pg_global_prng_state) };
    let delay_us = policy
        .delay_honouring(attempt.max(1) as u32, unit, retry_after)
        .as_micros() as i64;
    Spi::run_with_args(
        "INSERT INTO pulse.job_run (job_id, job_name, owner, database, scheduled_for, status, trigger, attempt, kind)
         SELECT j.job_id, j.job_name, j.owner::pg_catalog.oid, j.database,
                pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+) pg_catalog.make_interval(secs => $2::pg_catalog.float8 / 1000000),
                'queued', 'retry', $3, CASE WHEN j.http IS NULL THEN 'sql' ELSE 'http' END
           FROM pulse.job j WHERE j.job_id OPERATOR(pg_catalog.=) $1",
        &[job_id.into(), delay_us.into(), (attempt + 1).into()],
    )
    .is_ok()
}

/// Writes a run's outcome (status, message, real start, finish, an HTTP run's response) and
/// updates the job's statistics and alerts, in the current transaction: the one shared path of
/// successes and failures, SQL and HTTP runs.
pub(crate) fn finish_run(
    o: &crate::health::api::Outcome,
    response: Option<&str>,
) -> Result<(), pgrx::spi::SpiError> {
    Spi::connect_mut(|c| {
        xact::with_plan(
            c,
            "UPDATE pulse.job_run SET status = $2, finished_at = pg_catalog.clock_timestamp(), message = $3,
                    started_at = least($4, pg_catalog.clock_timestamp()), response = $5::pg_catalog.jsonb
              WHERE run_id OPERATOR(pg_catalog.=) $1",
            &[
                PgOid::BuiltIn(PgBuiltInOids::INT8OID),
                PgOid::BuiltIn(PgBuiltInOids::TEXTOID),
                PgOid::BuiltIn(PgBuiltInOids::TEXTOID),
                PgOid::BuiltIn(PgBuiltInOids::TIMESTAMPTZOID),
                PgOid::BuiltIn(PgBuiltInOids::TEXTOID),
            ],
            |c, stmt| {
                c.update(
                    stmt,
                    None,
                    &[
                        o.run_id.into(),
                        o.status.into(),
                        o.message.into(),
                        o.started_at.into(),
                        response.into(),
                    ],
                )
                .map(|_| ())
            },
        )
        .and_then(|r| r)
    })?;
    record_stats(o);
    Ok(())
}

/// A run's statistics and alerts, in a subtransaction: a statistics row locked by a concurrent
/// change of the job (NOWAIT) costs this run's statistics, never the outcome or the other runs'.
fn record_stats(o: &crate::health::api::Outcome) {
    let (job_id, run_id) = (o.job_id, o.run_id);
    let o = std::panic::AssertUnwindSafe(o);
    if xact::in_subxact(move || crate::health::api::record_outcome(*o)).is_none() {
        warning!("pg_pulse: statistics of job {job_id} not updated for run {run_id} (its row is being changed)");
    }
}

/// The outcomes executors reported in one turn of the scheduler, written together: one UPDATE of
/// the run rows, then statistics and alerts for each (all in one subtransaction, or each in its
/// own when that fails, so that one locked statistics row costs only its own run's statistics).
/// `started_at` of each is the real start; `finished_at` is start + duration.
pub(crate) fn finish_reported(
    reported: &[(crate::health::api::Outcome, i32)],
) -> Result<(), pgrx::spi::SpiError> {
    if reported.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = reported.iter().map(|(o, _)| o.run_id).collect();
    let statuses: Vec<&str> = reported.iter().map(|(o, _)| o.status).collect();
    let messages: Vec<Option<&str>> = reported.iter().map(|(o, _)| o.message).collect();
    let starts: Vec<TimestampWithTimeZone> = reported.iter().map(|(o, _)| o.started_at).collect();
    let ends: Vec<Option<TimestampWithTimeZone>> =
        reported.iter().map(|(o, _)| o.finished_at).collect();
    let pids: Vec<i32> = reported.iter().map(|(_, p)| *p).collect();
    Spi::run_with_args(
        "UPDATE pulse.job_run r SET status = u.status, message = u.message,
                started_at = least(u.started, clock_timestamp()),
                finished_at = coalesce(u.finished, clock_timestamp()), executor_pid = u.pid
           FROM unnest($1::int8[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::int4[])
                AS u(id, status, message, started, finished, pid)
          WHERE r.run_id = u.id",
        &[
            ids.into(),
            statuses.into(),
            messages.into(),
            starts.into(),
            ends.into(),
            pids.into(),
        ],
    )?;
    let all = std::panic::AssertUnwindSafe(reported);
    let together = xact::in_subxact(move || {
        for (o, _) in all.iter() {
            crate::health::api::record_outcome(o);
        }
    });
    if together.is_none() {
        for (o, _) in reported {
            record_stats(o);
        }
    }
    Ok(())
}

/// The outcomes executors reported, written together (see `runs::finish_reported`), then the
/// retries they earn.
pub(crate) fn record_reported(reported: &[(super::handoff::Order, super::handoff::Report, i32)]) {
    let now = crate::pgutil::to_pg_ts(chrono::Utc::now());
    let outcomes: Vec<(crate::health::api::Outcome, i32)> = reported
        .iter()
        .map(|(order, report, pid)| {
            let started = TimestampWithTimeZone::try_from(report.started_at).unwrap_or(now);
            let finished =
                TimestampWithTimeZone::try_from(report.started_at + report.duration_us).ok();
            (
                crate::health::api::Outcome {
                    job_id: order.job_id,
                    run_id: order.run_id,
                    status: report.ended.as_str(),
                    message: Some(report.message.as_str()),
                    started_at: started,
                    duration_ms: report.duration_us as f64 / 1000.0,
                    finished_at: finished,
                },
                *pid,
            )
        })
        .collect();
    if let Err(e) = finish_reported(&outcomes) {
        pgrx::error!(
            "could not record the outcomes of {} runs: {e}",
            outcomes.len()
        );
    }
    for (order, report, _) in reported {
        if matches!(
            report.ended,
            super::handoff::Ended::Failed | super::handoff::Ended::TimedOut
        ) {
            schedule_retry(order.job_id, order.attempt, None);
        }
    }
}

/// A run that failed without an executor's report (it never ran, or its executor is gone),
/// through the shared finish path, then a retry if the job allows one.
pub(crate) fn fail_now(job_id: i64, run_id: i64, attempt: i32, message: &str) {
    let o = crate::health::api::Outcome {
        job_id,
        run_id,
        status: "failed",
        message: Some(message),
        started_at: crate::pgutil::to_pg_ts(chrono::Utc::now()),
        duration_ms: 0.0,
        finished_at: None,
    };
    if let Err(e) = finish_run(&o, None) {
        pgrx::error!("could not record the outcome of run {run_id}: {e}");
    }
    // a retry is queued in the future: the scheduler's next wake-up accounts for it
    if job_id != 0 {
        schedule_retry(job_id, attempt, None);
    }
}

/// A queued HTTP run the HTTP worker claimed (now `running`).
pub(crate) struct HttpRunClaim {
    pub run_id: i64,
    pub job_id: i64,
    pub job_name: String,
    pub scheduled_for: TimestampWithTimeZone,
    pub attempt: i32,
    pub owner: pg_sys::Oid,
    /// The job's request now; None if the job is gone or no longer an HTTP job.
    pub http: Option<pgrx::JsonB>,
}

/// The HTTP worker (`pid`) claims up to `limit` queued HTTP runs due within `lead_ms`, oldest
/// slot first: they become `running`, in the current transaction. The caller commits it durably
/// before anything is sent, so that a crash can never send a slot twice.
pub(crate) fn claim_http_runs(
    pid: i32,
    lead_ms: i64,
    limit: usize,
) -> Result<Vec<HttpRunClaim>, pgrx::spi::SpiError> {
    Spi::connect_mut(|c| {
        xact::with_plan(
            c,
            "UPDATE pulse.job_run r SET status = 'running',
                    started_at = greatest(clock_timestamp(), r.scheduled_for), executor_pid = $1
              WHERE r.ctid = ANY (ARRAY(
                    SELECT q.ctid FROM pulse.job_run q
                     WHERE q.status = 'queued' AND q.kind = 'http'
                       AND q.scheduled_for <= clock_timestamp() + $2 * interval '1 millisecond'
                     ORDER BY q.scheduled_for, q.run_id LIMIT $3 FOR UPDATE SKIP LOCKED))
            RETURNING r.run_id, r.job_id, r.job_name, r.scheduled_for, r.attempt, r.owner,
                      (SELECT j.http FROM pulse.job j WHERE j.job_id = r.job_id)",
            &[
                PgOid::BuiltIn(PgBuiltInOids::INT4OID),
                PgOid::BuiltIn(PgBuiltInOids::INT8OID),
                PgOid::BuiltIn(PgBuiltInOids::INT8OID),
            ],
            |c, stmt| {
                c.select(
                    stmt,
                    None,
                    &[pid.into(), lead_ms.into(), (limit as i64).into()],
                )
                .map(|t| {
                    t.filter_map(|row| {
                        Some(HttpRunClaim {
                            run_id: row.get(1).ok()??,
                            job_id: row.get(2).ok()??,
                            job_name: row.get(3).ok()??,
                            scheduled_for: row.get(4).ok()??,
                            attempt: row.get(5).ok()??,
                            owner: row.get(6).ok()??,
                            http: row.get::<pgrx::JsonB>(7).ok()?,
                        })
                    })
                    .collect::<Vec<_>>()
                })
            },
        )
        .and_then(|r| r)
    })
}

/// At the HTTP worker's start: HTTP runs left `running` (claimed durably, maybe sent, no outcome
/// recorded: a crash, an immediate shutdown or the worker's own restart) become `failed`, as SQL
/// runs do. They are not sent again: the server may have received them. Returns how many.
pub(crate) fn fail_interrupted_http_runs() -> usize {
    Spi::connect_mut(|c| {
        c.update(
            "UPDATE pulse.job_run SET status = 'failed', finished_at = clock_timestamp(),
                    message = 'the HTTP worker stopped (a server crash or restart, or pg_terminate_backend) while this run''s request was being sent: it may or may not have reached the server, and it is not sent again'
              WHERE status = 'running' AND kind = 'http'",
            None,
            &[],
        )
        .map(|t| t.len())
        .unwrap_or(0)
    })
}

/// HTTP runs the HTTP worker claimed and, stopping, never handed to a thread (nothing was sent):
/// `queued` again, for its next start.
pub(crate) fn requeue_unsent_http_runs(run_ids: &[i64]) -> Result<(), pgrx::spi::SpiError> {
    Spi::run_with_args(
        "UPDATE pulse.job_run SET status = 'queued', started_at = NULL, executor_pid = NULL
          WHERE run_id = ANY ($1::bigint[]) AND status = 'running' AND kind = 'http'",
        &[run_ids.to_vec().into()],
    )
}
