//! Recording what happened to a run: its outcome (with statistics and alerts) and the retry it
//! may earn. Shared by the scheduler (SQL runs, whose outcomes executors report) and the HTTP
//! worker (HTTP runs).

use super::xact;
use crate::run::RunStatus;
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
              WHERE run_id OPERATOR(pg_catalog.=) $1 AND status IN ('queued', 'running')",
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
              WHERE r.run_id = u.id AND r.status IN ('queued', 'running')
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
    let reported: Vec<&(crate::outcome::Outcome, i32)> =
        reported.iter().filter(|(o, _)| ended.contains(&o.run_id)).collect();
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
              WHERE r.run_id = u.id AND r.status IN ('queued', 'running')",
            None,
            &[ids.into(), statuses.into(), messages.into()],
        )
        .map(|t| t.len())
        .unwrap_or_else(|e| pgrx::error!("could not record outcomes: {e}"))
    })
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

/// `running` SQL runs that started before `older_than_s` seconds ago: (run id, job, attempt).
pub(crate) fn running_sql_runs(older_than_s: i64) -> Vec<(i64, i64, i32)> {
    Spi::connect(|c| {
        c.select(
            "SELECT run_id, job_id, attempt FROM pulse.job_run
              WHERE status = 'running' AND kind = 'sql'
                AND coalesce(started_at, created_at) < now() - $1 * interval '1 second'
              ORDER BY run_id LIMIT 1000",
            None,
            &[older_than_s.into()],
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

/// The outcomes executors reported, written together (see `runs::finish_reported`), then the
/// retries they earn.
pub(crate) fn record_reported(reported: &[(super::handoff::Order, super::handoff::Report, i32)]) {
    let now = crate::pgutil::to_pg_ts(chrono::Utc::now());
    let outcomes: Vec<(crate::outcome::Outcome, i32)> = reported
        .iter()
        .map(|(order, report, pid)| {
            let started = TimestampWithTimeZone::try_from(report.started_at).unwrap_or(now);
            let finished =
                TimestampWithTimeZone::try_from(report.started_at + report.duration_us).ok();
            (
                crate::outcome::Outcome {
                    job_id: order.job_id,
                    run_id: order.run_id,
                    status: report.ended.status(),
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

/// Scheduler: deletes up to `batch` run rows past their retention (and up to `batch` alerts,
/// see `outcome::alerts::prune_alerts`); returns the larger count, so the caller goes on while
/// either filled its batch.
pub(crate) fn prune_runs(batch: i64) -> i64 {
    let keep = crate::RUN_RETENTION.get() as i64;
    let keep_failed = crate::RUN_RETENTION_FAILED.get() as i64;
    Spi::connect_mut(|c| {
        let runs = xact::with_plan(
            c,
            "DELETE FROM pulse.job_run WHERE run_id IN (
               SELECT run_id FROM pulse.job_run
                WHERE created_at < now() - least($1, $2) * interval '1 second'
                  AND status NOT IN ('queued', 'running')
                  AND finished_at < now() - CASE WHEN status IN ('failed', 'timed_out')
                                                 THEN $2 ELSE $1 END * interval '1 second'
                LIMIT $3)",
            &[
                PgOid::BuiltIn(PgBuiltInOids::INT8OID),
                PgOid::BuiltIn(PgBuiltInOids::INT8OID),
                PgOid::BuiltIn(PgBuiltInOids::INT8OID),
            ],
            |c, stmt| {
                // select: a pass that deletes nothing assigns no transaction id (see xact::read_one)
                c.select(stmt, None, &[keep.into(), keep_failed.into(), batch.into()])
                    .map(|t| t.len() as i64)
                    .unwrap_or(0)
            },
        )
        .unwrap_or(0);
        runs.max(crate::outcome::alerts::prune_alerts(c, batch))
    })
}

/// pulse.log_runs: once a run's statistics are kept, its row goes unless the setting keeps it
/// (`failed`: the run failed or timed out).
pub(crate) fn forget_unlogged(c: &mut pgrx::spi::SpiClient<'_>, run_id: i64, failed: bool) {
    let keep = match crate::LOG_RUNS.get() {
        crate::LogRuns::All => true,
        crate::LogRuns::Failures => failed,
        crate::LogRuns::None => false,
    };
    if !keep {
        let _ = c.update(
            "DELETE FROM pulse.job_run WHERE run_id = $1",
            None,
            &[run_id.into()],
        );
    }
}

/// Due slots become runs (the scheduler's fire): one row per slot, `queued` (or `skipped` by the
/// overlap rule, or `failed` for a schedule that no longer parses), in the tick's transaction.
/// With pulse.log_runs = failures | none a skipped slot leaves no row.
pub(crate) fn queue_slots(
    ids: &[i64],
    names: Vec<String>,
    owners: Vec<pg_sys::Oid>,
    slots: Vec<TimestampWithTimeZone>,
    statuses: &[RunStatus],
    messages: Vec<Option<String>>,
    kinds: Vec<String>,
) {
    let statuses: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
    Spi::run_with_args(
        "INSERT INTO pulse.job_run (job_id, job_name, owner, database, scheduled_for, status, trigger, message, finished_at, kind)
         SELECT u.id, u.name, u.owner, (SELECT j.database FROM pulse.job j WHERE j.job_id = u.id),
                u.slot, u.status, 'schedule', u.message,
                CASE WHEN u.status = 'queued' THEN NULL ELSE clock_timestamp() END, u.kind
           FROM unnest($1::bigint[], $2::text[], $3::oid[], $4::timestamptz[], $5::text[], $6::text[], $8::text[])
                AS u(id, name, owner, slot, status, message, kind)
          WHERE u.status <> 'skipped' OR $7",
        &[
            ids.to_vec().into(),
            names.into(),
            owners.into(),
            slots.into(),
            statuses.into(),
            messages.into(),
            (crate::LOG_RUNS.get() == crate::LogRuns::All).into(),
            kinds.into(),
        ],
    )
    .unwrap_or_else(|e| pgrx::error!("could not record runs: {e}"));
}

/// Claimed SQL runs become `running` (with their executor, if it is known yet), in the claim's
/// transaction: durably `running` before any executor sees them.
pub(crate) fn mark_running(ids: Vec<i64>, pids: Vec<Option<i32>>) {
    Spi::run_with_args(
        "UPDATE pulse.job_run r SET status = 'running',
                started_at = greatest(clock_timestamp(), r.scheduled_for), executor_pid = u.pid
           FROM unnest($1::int8[], $2::int4[]) AS u(id, pid)
          WHERE r.run_id = u.id",
        &[ids.into(), pids.into()],
    )
    .unwrap_or_else(|e| pgrx::error!("could not claim runs: {e}"));
}

/// The executors of runs handed out before their process was known.
pub(crate) fn record_executors(ids: Vec<i64>, pids: Vec<i32>) {
    Spi::run_with_args(
        "UPDATE pulse.job_run r SET executor_pid = u.pid
           FROM unnest($1::int8[], $2::int4[]) AS u(id, pid)
          WHERE r.run_id = u.id AND r.status = 'running'",
        &[ids.into(), pids.into()],
    )
    .unwrap_or_else(|e| pgrx::error!("could not record executors: {e}"));
}

/// Runs taken back before they started (their executor left, or they waited behind a long run)
/// are `queued` again.
pub(crate) fn requeue(ids: Vec<i64>) {
    Spi::run_with_args(
        "UPDATE pulse.job_run SET status = 'queued', started_at = NULL, executor_pid = NULL
          WHERE run_id = ANY ($1) AND status = 'running'",
        &[ids.into()],
    )
    .unwrap_or_else(|e| pgrx::error!("could not queue runs again: {e}"));
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

/// Queues a run of job `job_id` now, out of schedule (`pulse.run_job`); the new run's id.
pub(crate) fn queue_manual(job_id: i64) -> Result<Option<i64>, pgrx::spi::SpiError> {
    Spi::get_one_with_args::<i64>(
        "INSERT INTO pulse.job_run (job_id, job_name, owner, scheduled_for, status, trigger, kind, database)
         SELECT job_id, job_name, owner::oid, clock_timestamp(), 'queued', 'manual',
                CASE WHEN http IS NULL THEN 'sql' ELSE 'http' END, database
           FROM pulse.job WHERE job_id = $1
         RETURNING run_id",
        &[job_id.into()],
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

/// `REASSIGN OWNED BY from TO to`: the runs of the moved jobs `job_ids` follow their job.
pub(crate) fn reassign(
    job_ids: &[i64],
    from: pg_sys::Oid,
    to: pg_sys::Oid,
) -> Result<(), pgrx::spi::SpiError> {
    if job_ids.is_empty() {
        return Ok(());
    }
    Spi::run_with_args(
        "UPDATE pulse.job_run SET owner = $3 WHERE owner = $2 AND job_id = ANY ($1)",
        &[job_ids.to_vec().into(), from.into(), to.into()],
    )
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
            // round-robin by owner, as SQL runs are claimed (see claim::candidates)
            "WITH RECURSIVE owners AS (
                 (SELECT q.owner FROM pulse.job_run q
                   WHERE q.status = 'queued' AND q.kind = 'http' ORDER BY q.owner LIMIT 1)
               UNION ALL
                 SELECT (SELECT q.owner FROM pulse.job_run q
                          WHERE q.status = 'queued' AND q.kind = 'http' AND q.owner > o.owner
                          ORDER BY q.owner LIMIT 1)
                   FROM owners o WHERE o.owner IS NOT NULL),
             ranked AS (
               SELECT x.ctid, x.rk, x.scheduled_for, x.run_id
                 FROM owners o CROSS JOIN LATERAL (
                      SELECT q.ctid, q.scheduled_for, q.run_id,
                             row_number() OVER (ORDER BY q.scheduled_for, q.run_id) AS rk
                        FROM pulse.job_run q
                       WHERE q.status = 'queued' AND q.kind = 'http' AND q.owner = o.owner
                         AND q.scheduled_for <= clock_timestamp() + $2 * interval '1 millisecond'
                       ORDER BY q.scheduled_for, q.run_id LIMIT $3) x
                WHERE o.owner IS NOT NULL)
             UPDATE pulse.job_run r SET status = 'running',
                    started_at = greatest(clock_timestamp(), r.scheduled_for), executor_pid = $1
              WHERE r.ctid = ANY (ARRAY(
                    SELECT q.ctid FROM pulse.job_run q
                     WHERE q.ctid = ANY (ARRAY(SELECT k.ctid FROM ranked k ORDER BY k.rk, k.scheduled_for, k.run_id LIMIT $3))
                       AND q.status = 'queued'
                       FOR UPDATE SKIP LOCKED))
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
/// recorded: a crash, an immediate shutdown or the worker's own restart) fail through the shared
/// finish path (statistics, alerts, a retry as a new attempt if the job allows one), as SQL runs
/// do. They are not sent again as they are: the server may have received them. Returns how many.
pub(crate) fn fail_interrupted_http_runs() -> usize {
    let lost: Vec<(i64, i64, i32)> = Spi::connect(|c| {
        c.select(
            "SELECT run_id, job_id, attempt FROM pulse.job_run
              WHERE status = 'running' AND kind = 'http' ORDER BY run_id",
            None,
            &[],
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
    });
    rescue(
        &lost,
        "the HTTP worker stopped (a server crash or restart, or pg_terminate_backend) while this run's request was being sent: it may or may not have reached the server, and it is not sent again",
    )
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
