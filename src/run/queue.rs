//! Runs come into being: due slots (`queue_slots`), `pulse.run_job` (`queue_manual`) and retries
//! (`schedule_retry`), as `queued` rows of `pulse.job_run`.

use crate::pgutil::interval_micros;
use crate::run::RunStatus;
use pgrx::prelude::*;
use std::time::Duration;

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
