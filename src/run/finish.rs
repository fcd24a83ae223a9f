//! Run rows another transaction holds are skipped (`SKIP LOCKED`), never waited for: the
//! workers end every role's runs and must not stall behind one caller's open transaction (such a
//! run stays `running` until the rescuer fails it).
//!
//! A run that has not ended (`queued`, `running`) is one without `finished_at`: the statements
//! say so in that form, which no partial index matches, so that they find their rows by primary
//! key (with `status IN ('queued', 'running')` the planner could scan every active run instead,
//! on each turn of a burst).
//!
//! Runs end, once: an outcome (`finish_run`, `finish_reported`, `finish_minimal` when the outcome
//! transaction failed), a failure without a report (`fail_now`, `rescue` of lost and interrupted
//! runs), or a cancellation (`cancel_queued`, `cancel_if_queued`). Every end but a minimal record
//! and a cancellation goes through the outcome (statistics, alerts: `crate::outcome`) and may earn
//! a retry.

use super::queue::schedule_retry;
use crate::run::RunStatus;
use crate::xact;
use pgrx::prelude::*;

/// Writes a run's outcome (status, message, real start, finish, an HTTP run's response) and
/// updates the job's statistics and alerts, in the current transaction: the one shared path of
/// successes and failures, SQL and HTTP runs.
///
/// Only a run that has not ended yet is finished (`queued` or `running`): a run ends once, so a
/// rescuer or a second report finds nothing to do. Returns whether this call ended it.
pub(crate) fn finish_run(
    o: &crate::outcome::Outcome,
    response: Option<&str>,
) -> Result<bool, pgrx::spi::SpiError> {
    let ended = Spi::connect_mut(|c| {
        xact::with_plan(
            c,
            "UPDATE pulse.job_run SET status = $2, finished_at = pg_catalog.clock_timestamp(), message = $3,
                    started_at = least($4, pg_catalog.clock_timestamp()), response = $5::pg_catalog.jsonb
              WHERE run_id OPERATOR(pg_catalog.=) $1 AND finished_at IS NULL
                AND run_id IN (SELECT q.run_id FROM pulse.job_run q
                                WHERE q.run_id OPERATOR(pg_catalog.=) $1 FOR UPDATE SKIP LOCKED)",
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
                        o.status.as_str().into(),
                        o.message.into(),
                        o.started_at.into(),
                        response.into(),
                    ],
                )
                .map(|t| t.len() > 0)
            },
        )
        .and_then(|r| r)
    })?;
    if ended {
        record_stats(o);
    }
    Ok(ended)
}

/// A run's statistics and alerts, in a subtransaction: a statistics row locked by a concurrent
/// change of the job (NOWAIT) costs this run's statistics, never the outcome or the other runs'.
fn record_stats(o: &crate::outcome::Outcome) {
    let (job_id, run_id) = (o.job_id, o.run_id);
    let o = std::panic::AssertUnwindSafe(o);
    if xact::in_subxact(move || crate::outcome::stats::record_outcome(*o)).is_none() {
        warning!("pg_pulse: statistics of job {job_id} not updated for run {run_id} (its row is being changed)");
    }
}

/// The outcomes executors reported in one turn of the scheduler, written together: one UPDATE of
/// the run rows, then statistics and alerts for each (all in one subtransaction, or each in its
/// own when that fails, so that one locked statistics row costs only its own run's statistics).
/// `started_at` of each is the real start; `finished_at` is start + duration.
pub(crate) fn finish_reported(
    reported: &[(crate::outcome::Outcome, i32)],
) -> Result<(), pgrx::spi::SpiError> {
    if reported.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = reported.iter().map(|(o, _)| o.run_id).collect();
    let statuses: Vec<&str> = reported.iter().map(|(o, _)| o.status.as_str()).collect();
    let messages: Vec<Option<&str>> = reported.iter().map(|(o, _)| o.message).collect();
    let starts: Vec<TimestampWithTimeZone> = reported.iter().map(|(o, _)| o.started_at).collect();
    let ends: Vec<Option<TimestampWithTimeZone>> =
        reported.iter().map(|(o, _)| o.finished_at).collect();
    let pids: Vec<i32> = reported.iter().map(|(_, p)| *p).collect();
    // only runs not ended yet (a run ends once: see finish_run)
    let ended: std::collections::HashSet<i64> = Spi::connect_mut(|c| {
        c.update(
            "UPDATE pulse.job_run r SET status = u.status, message = u.message,
                    started_at = least(u.started, clock_timestamp()),
                    finished_at = coalesce(u.finished, clock_timestamp()), executor_pid = u.pid
               FROM unnest($1::int8[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::int4[])
                    AS u(id, status, message, started, finished, pid)
              WHERE r.run_id = u.id AND r.finished_at IS NULL
                AND r.run_id IN (SELECT q.run_id FROM pulse.job_run q
                                  WHERE q.run_id = ANY ($1) FOR UPDATE SKIP LOCKED)
          RETURNING r.run_id",
            None,
            &[
                ids.into(),
                statuses.into(),
                messages.into(),
                starts.into(),
                ends.into(),
                pids.into(),
            ],
        )
        .map(|t| t.filter_map(|r| r.get::<i64>(1).ok().flatten()).collect())
    })?;
    let reported: Vec<&(crate::outcome::Outcome, i32)> = reported
        .iter()
        .filter(|(o, _)| ended.contains(&o.run_id))
        .collect();
    let all = std::panic::AssertUnwindSafe(&reported);
    let together = xact::in_subxact(move || {
        for (o, _) in all.iter() {
            crate::outcome::stats::record_outcome(o);
        }
    });
    if together.is_none() {
        for (o, _) in reported {
            record_stats(o);
        }
    }
    Ok(())
}

/// When the transaction that records outcomes failed (the reason is `why`): the runs still end,
/// with their status and message and nothing else (no statistics, alerts or retries), in a
/// transaction of their own. Only runs not ended yet.
pub(crate) fn finish_minimal(ended: &[(i64, RunStatus, &str)], why: &str) -> usize {
    let ids: Vec<i64> = ended.iter().map(|(id, _, _)| *id).collect();
    let statuses: Vec<&str> = ended.iter().map(|(_, st, _)| st.as_str()).collect();
    let messages: Vec<String> = ended
        .iter()
        .map(|(_, _, m)| {
            let m: String = m.chars().take(2000).collect();
            format!("{m} [pg_pulse recorded only this outcome: {why}]")
        })
        .collect();
    Spi::connect_mut(|c| {
        c.update(
            "UPDATE pulse.job_run r SET status = u.status, message = u.message,
                    finished_at = clock_timestamp()
               FROM unnest($1::int8[], $2::text[], $3::text[]) AS u(id, status, message)
              WHERE r.run_id = u.id AND r.finished_at IS NULL
                AND r.run_id IN (SELECT q.run_id FROM pulse.job_run q
                                  WHERE q.run_id = ANY ($1) FOR UPDATE SKIP LOCKED)",
            None,
            &[ids.into(), statuses.into(), messages.into()],
        )
        .map(|t| t.len())
        .unwrap_or_else(|e| pgrx::error!("could not record outcomes: {e}"))
    })
}

/// A run that failed without an executor's report (it never ran, or its executor is gone),
/// through the shared finish path, then a retry if the job allows one.
pub(crate) fn fail_now(job_id: i64, run_id: i64, attempt: i32, message: &str) {
    let o = crate::outcome::Outcome {
        job_id,
        run_id,
        status: RunStatus::Failed,
        message: Some(message),
        started_at: crate::pgutil::to_pg_ts(chrono::Utc::now()),
        duration_ms: 0.0,
        finished_at: None,
    };
    match finish_run(&o, None) {
        Err(e) => pgrx::error!("could not record the outcome of run {run_id}: {e}"),
        // a retry is queued in the future: the scheduler's next wake-up accounts for it
        Ok(true) if job_id != 0 => {
            schedule_retry(job_id, attempt, None);
        }
        Ok(_) => {}
    }
}

/// Runs left `running` that no process holds any more (`lost`: run id, job, attempt): each
/// fails through the shared finish path (statistics, alerts, a retry if the job allows one),
/// each in a subtransaction of its own so that one bad row does not keep the others running.
pub(crate) fn rescue(lost: &[(i64, i64, i32)], message: &str) -> usize {
    let mut n = 0;
    for &(run_id, job_id, attempt) in lost {
        if xact::in_subxact(move || fail_now(job_id, run_id, attempt, message)).is_some() {
            n += 1;
        }
    }
    n
}

/// `running` runs of `kind` (`sql`, `http`) that started more than `older_than_s` seconds ago
/// (all of them for a negative value), at most `limit`: (run id, job, attempt).
pub(crate) fn running_runs(kind: &str, older_than_s: i64, limit: i64) -> Vec<(i64, i64, i32)> {
    Spi::connect(|c| {
        c.select(
            "SELECT run_id, job_id, attempt FROM pulse.job_run
              WHERE status = 'running' AND kind = $1
                AND ($2 < 0 OR coalesce(started_at, created_at) < now() - $2 * interval '1 second')
              ORDER BY run_id LIMIT $3",
            None,
            &[kind.into(), older_than_s.into(), limit.into()],
        )
        .map(|t| {
            t.filter_map(|r| {
                Some((
                    r.get::<i64>(1).ok()??,
                    r.get::<i64>(2).ok()??,
                    r.get::<i32>(3).ok()?.unwrap_or(1),
                ))
            })
            .collect()
        })
        .unwrap_or_default()
    })
}

/// At the HTTP worker's start: HTTP runs left `running` (claimed durably, maybe sent, no outcome
/// recorded: a crash, an immediate shutdown or the worker's own restart) fail through the shared
/// finish path (statistics, alerts, a retry as a new attempt if the job allows one), as SQL runs
/// do. They are not sent again as they are: the server may have received them. Returns how many.
pub(crate) fn fail_interrupted_http_runs() -> usize {
    let lost = running_runs("http", -1, i64::MAX);
    rescue(
        &lost,
        "the HTTP worker stopped (a server crash or restart, or pg_terminate_backend) while this run's request was being sent: it may or may not have reached the server, and it is not sent again",
    )
}

/// Cancels the queued runs of jobs `job_ids` (a job unscheduled, paused or dropped with its
/// owner): `cancelled` now, with `why` as message. Running runs are left to finish.
pub(crate) fn cancel_queued(job_ids: &[i64], why: &str) -> Result<(), pgrx::spi::SpiError> {
    if job_ids.is_empty() {
        return Ok(());
    }
    Spi::run_with_args(
        "UPDATE pulse.job_run SET status = 'cancelled', finished_at = clock_timestamp(), message = $2
          WHERE job_id = ANY ($1) AND status = 'queued'",
        &[job_ids.to_vec().into(), why.into()],
    )
}

/// `pulse.cancel_run` of a run that is still queued: cancelled in place, if it belongs to
/// `owner` (any run for a superuser, `any_owner`). Whether it was. The scheduler skips a run row
/// being changed; a running run is never touched here (see `crate::worker::cancel_executor_run`).
pub(crate) fn cancel_if_queued(
    run_id: i64,
    owner: pg_sys::Oid,
    any_owner: bool,
) -> Result<bool, pgrx::spi::SpiError> {
    Spi::connect_mut(|c| {
        c.update(
            "UPDATE pulse.job_run SET status = 'cancelled', finished_at = clock_timestamp(),
                    message = 'cancelled by pulse.cancel_run'
              WHERE run_id = $1 AND (owner = $2 OR $3) AND status = 'queued' RETURNING 1",
            None,
            &[run_id.into(), owner.into(), any_owner.into()],
        )
        .map(|t| t.len() > 0)
    })
}
