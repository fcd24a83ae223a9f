//! The run history: retention (`prune_runs`), `pulse.log_runs` (`forget_unlogged`), and runs that
//! follow their job to a new owner (`reassign`).

use crate::xact;
use pgrx::prelude::*;

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
