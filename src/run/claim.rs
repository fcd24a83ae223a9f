//! Queued runs are claimed: SQL runs by the scheduler for its executors (`mark_running`,
//! `record_executors`, `requeue` of runs taken back), HTTP runs by the HTTP worker
//! (`claim_http_runs`, `requeue_unsent_http_runs`).

use crate::xact;
use pgrx::prelude::*;

/// SQL text: `WITH RECURSIVE owners AS (...)`, the distinct owners of the rows of `$table` (alias
/// `q`) that match `$filter`, one index probe per owner (a skip scan: the table needs an index
/// leading with the filter's columns, then `owner`). Its last row is NULL. The claims of SQL
/// runs, HTTP runs and after-commit requests take work round-robin by these owners.
macro_rules! owners_skip_scan {
    ($table:literal, $filter:literal) => {
        concat!(
            "WITH RECURSIVE owners AS (
                 (SELECT q.owner FROM ",
            $table,
            " q WHERE ",
            $filter,
            " ORDER BY q.owner LIMIT 1)
               UNION ALL
                 SELECT (SELECT q.owner FROM ",
            $table,
            " q
                          WHERE ",
            $filter,
            " AND q.owner > o.owner ORDER BY q.owner LIMIT 1)
                   FROM owners o WHERE o.owner IS NOT NULL)"
        )
    };
}
pub(crate) use owners_skip_scan;

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
          WHERE r.run_id = u.id AND r.status = 'running'
            AND r.run_id IN (SELECT q.run_id FROM pulse.job_run q
                              WHERE q.run_id = ANY ($1) FOR UPDATE SKIP LOCKED)",
        &[ids.into(), pids.into()],
    )
    .unwrap_or_else(|e| pgrx::error!("could not record executors: {e}"));
}

/// Runs taken back before they started (their executor left, or they waited behind a long run)
/// are `queued` again.
pub(crate) fn requeue(ids: Vec<i64>) {
    Spi::run_with_args(
        "UPDATE pulse.job_run SET status = 'queued', started_at = NULL, executor_pid = NULL
          WHERE run_id = ANY ($1) AND status = 'running'
            AND run_id IN (SELECT q.run_id FROM pulse.job_run q
                            WHERE q.run_id = ANY ($1) FOR UPDATE SKIP LOCKED)",
        &[ids.into()],
    )
    .unwrap_or_else(|e| pgrx::error!("could not queue runs again: {e}"));
}

/// A queued HTTP run the HTTP worker claimed (now `running`).
pub(crate) struct HttpRunClaim {
    pub run_id: i64,
    pub job_id: i64,
    pub job_name: String,
    pub scheduled_for: TimestampWithTimeZone,
    pub attempt: i32,
    pub owner: pg_sys::Oid,
    /// The job's request now, or why it is not sent (the job is gone, no longer an HTTP job, not
    /// this run's owner's, or its stored request is too large to read).
    pub http: Result<serde_json::Value, String>,
}

/// The HTTP worker (`pid`) claims up to `limit` queued HTTP runs due within `lead_ms`,
/// round-robin by owner, each owner's oldest slot first, and no more of an owner's than bring its
/// work in flight to `per_owner` (`in_flight`: (owner, count) now): they become `running`, in the
/// current transaction. The caller commits it durably before anything is sent, so that a crash
/// can never send a slot twice.
pub(crate) fn claim_http_runs(
    pid: i32,
    lead_ms: i64,
    limit: usize,
    per_owner: usize,
    in_flight: &[(pg_sys::Oid, i32)],
) -> Result<Vec<HttpRunClaim>, pgrx::spi::SpiError> {
    let (owners, counts): (Vec<pg_sys::Oid>, Vec<i32>) = in_flight.iter().copied().unzip();
    Spi::connect_mut(|c| {
        xact::with_plan(
            c,
            // round-robin by owner, as SQL runs are claimed (see claim::candidates)
            concat!(
                owners_skip_scan!("pulse.job_run", "q.status = 'queued' AND q.kind = 'http'"),
                ",
             ranked AS (
               SELECT x.ctid, x.rk, x.scheduled_for, x.run_id
                 FROM owners o CROSS JOIN LATERAL (
                      SELECT q.ctid, q.scheduled_for, q.run_id,
                             row_number() OVER (ORDER BY q.scheduled_for, q.run_id) AS rk
                        FROM pulse.job_run q
                       WHERE q.status = 'queued' AND q.kind = 'http' AND q.owner = o.owner
                         AND q.scheduled_for <= clock_timestamp() + $2 * interval '1 millisecond'
                       ORDER BY q.scheduled_for, q.run_id
                       LIMIT least($3, greatest(0, $4 - coalesce(
                             (SELECT f.n FROM unnest($5::oid[], $6::int4[]) AS f(ow, n) WHERE f.ow = o.owner), 0)))) x
                WHERE o.owner IS NOT NULL)
             UPDATE pulse.job_run r SET status = 'running',
                    started_at = greatest(clock_timestamp(), r.scheduled_for), executor_pid = $1
              WHERE r.ctid = ANY (ARRAY(
                    SELECT q.ctid FROM pulse.job_run q
                     WHERE q.ctid = ANY (ARRAY(SELECT k.ctid FROM ranked k ORDER BY k.rk, k.scheduled_for, k.run_id LIMIT $3))
                       AND q.status = 'queued'
                       FOR UPDATE SKIP LOCKED))
            RETURNING r.run_id, r.job_id, r.job_name, r.scheduled_for, r.attempt, r.owner,
                      (SELECT j.http FROM pulse.job j WHERE j.job_id = r.job_id AND j.owner::oid = r.owner)"
            ),
            &[
                PgOid::BuiltIn(PgBuiltInOids::INT4OID),
                PgOid::BuiltIn(PgBuiltInOids::INT8OID),
                PgOid::BuiltIn(PgBuiltInOids::INT8OID),
                PgOid::BuiltIn(PgBuiltInOids::INT8OID),
                PgOid::BuiltIn(PgBuiltInOids::OIDARRAYOID),
                PgOid::BuiltIn(PgBuiltInOids::INT4ARRAYOID),
            ],
            |c, stmt| {
                c.select(
                    stmt,
                    None,
                    &[
                        pid.into(),
                        lead_ms.into(),
                        (limit as i64).into(),
                        (per_owner as i64).into(),
                        owners.into(),
                        counts.into(),
                    ],
                )
                .map(|mut t| {
                    let mut out = Vec::new();
                    while let Some(row) = t.next() {
                        let http = xact::stored_request(
                            &t,
                            &row,
                            7,
                            "the job was changed or removed before this run started",
                        );
                        out.extend(claimed_http_run(&row, http));
                    }
                    out
                })
            },
        )
        .and_then(|r| r)
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

/// A claimed row as the HTTP worker takes it (None if a column is missing).
fn claimed_http_run(
    row: &pgrx::spi::SpiHeapTupleData<'_>,
    http: Result<serde_json::Value, String>,
) -> Option<HttpRunClaim> {
    Some(HttpRunClaim {
        run_id: row.get(1).ok()??,
        job_id: row.get(2).ok()??,
        job_name: row.get(3).ok()??,
        scheduled_for: row.get(4).ok()??,
        attempt: row.get(5).ok()??,
        owner: row.get(6).ok()??,
        http,
    })
}
