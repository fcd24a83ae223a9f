//! A job's rolling statistics and last run, updated as each run ends (`pulse.job_stats`).

use super::alerts::{alert_target_default, send_alert, Alert};
use super::Outcome;
use crate::health::{AlertEvent, Stats};
use crate::xact;
use pgrx::prelude::*;

fn now_s() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Called inside the transaction that records a run's outcome: updates the job's rolling
/// statistics and last run, sends an alert when an incident starts or recovers, and (with
/// pulse.log_runs) drops the run row. Cancelled runs only update the last run. The statistics row
/// is locked NOWAIT: the workers record every role's outcomes and never wait for a caller's open
/// transaction (the caller of `finish_run` runs this in a subtransaction).
pub fn record_outcome(o: &Outcome) {
    let failed = o.status.is_failure();
    let counted = o.status.is_counted();
    Spi::connect_mut(|c| {
        let read = |c: &mut pgrx::spi::SpiClient<'_>| {
            xact::with_plan(
            c,
            "SELECT s.hour_base, s.runs, s.failures, s.dur_ms, s.recent_at, s.recent_ms,
                    s.consecutive_failures, s.incident_open,
                    coalesce(j.alert_after_failures, $2), coalesce(j.alert::text, $3), j.job_name, j.owner::oid
               FROM pulse.job_stats s JOIN pulse.job j ON j.job_id = s.job_id
              WHERE s.job_id = $1
                -- only the job owner's own runs count (a run row written under another role's
                -- name for this job_id is not this job's run)
                AND EXISTS (SELECT 1 FROM pulse.job_run r WHERE r.run_id = $4 AND r.owner = j.owner::oid)
                FOR UPDATE OF s NOWAIT",
            &[
                PgOid::BuiltIn(PgBuiltInOids::INT8OID),
                PgOid::BuiltIn(PgBuiltInOids::INT4OID),
                PgOid::BuiltIn(PgBuiltInOids::TEXTOID),
                PgOid::BuiltIn(PgBuiltInOids::INT8OID),
            ],
            |c, stmt| {
                c.update(
                    stmt,
                    None,
                    &[
                        o.job_id.into(),
                        crate::ALERT_AFTER_FAILURES.get().into(),
                        alert_target_default().into(),
                        o.run_id.into(),
                    ],
                )
                .ok()
                .and_then(|t| {
                    t.into_iter().next().map(|r| {
                        let stats = Stats {
                            hour_base: r.get::<i64>(1).ok().flatten().unwrap_or(0),
                            runs: r.get::<Vec<i32>>(2).ok().flatten().unwrap_or_default(),
                            failures: r.get::<Vec<i32>>(3).ok().flatten().unwrap_or_default(),
                            dur_ms: r.get::<Vec<f64>>(4).ok().flatten().unwrap_or_default(),
                            recent: r
                                .get::<Vec<i64>>(5)
                                .ok()
                                .flatten()
                                .unwrap_or_default()
                                .into_iter()
                                .zip(r.get::<Vec<f64>>(6).ok().flatten().unwrap_or_default())
                                .collect(),
                            consecutive_failures: r.get::<i32>(7).ok().flatten().unwrap_or(0),
                            incident_open: r.get::<bool>(8).ok().flatten().unwrap_or(false),
                        };
                        (
                            stats,
                            r.get::<i32>(9).ok().flatten().unwrap_or(3),
                            r.get::<String>(10).ok().flatten(),
                            r.get::<String>(11).ok().flatten().unwrap_or_default(),
                            r.get::<pg_sys::Oid>(12).ok().flatten(),
                        )
                    })
                })
            },
        )
        .ok()
        .flatten()
        };
        let mut row = read(c);
        if row.is_none() {
            // the job's first finished run: create its statistics row, then read it
            let _ = xact::with_plan(
                c,
                "INSERT INTO pulse.job_stats (job_id, owner)
                 SELECT j.job_id, j.owner::oid FROM pulse.job j WHERE j.job_id = $1
                    AND EXISTS (SELECT 1 FROM pulse.job_run r WHERE r.run_id = $2 AND r.owner = j.owner::oid)
                 ON CONFLICT (job_id) DO NOTHING",
                &[
                    PgOid::BuiltIn(PgBuiltInOids::INT8OID),
                    PgOid::BuiltIn(PgBuiltInOids::INT8OID),
                ],
                |c, stmt| c.update(stmt, None, &[o.job_id.into(), o.run_id.into()]).map(|_| ()),
            );
            row = read(c);
        }
        // the job was removed meanwhile: nothing to keep statistics for
        let Some((mut stats, threshold, target, job_name, owner)) = row else {
            return;
        };
        let event = if counted {
            stats.record(now_s(), failed, o.duration_ms, threshold)
        } else {
            AlertEvent::None
        };
        let (recent_at, recent_ms): (Vec<i64>, Vec<f64>) = stats.recent.iter().copied().unzip();
        let _ = xact::with_plan(
            c,
            "UPDATE pulse.job_stats SET hour_base = $2, runs = $3, failures = $4, dur_ms = $5,
                    recent_at = $6, recent_ms = $7, consecutive_failures = $8, incident_open = $9,
                    overdue_alerted = false, last_run_id = $10, last_run_at = $11, last_status = $12,
                    last_message = $13, p95_ms = $14
              WHERE job_id = $1",
            &[
                PgOid::BuiltIn(PgBuiltInOids::INT8OID),
                PgOid::BuiltIn(PgBuiltInOids::INT8OID),
                PgOid::BuiltIn(PgBuiltInOids::INT4ARRAYOID),
                PgOid::BuiltIn(PgBuiltInOids::INT4ARRAYOID),
                PgOid::BuiltIn(PgBuiltInOids::FLOAT8ARRAYOID),
                PgOid::BuiltIn(PgBuiltInOids::INT8ARRAYOID),
                PgOid::BuiltIn(PgBuiltInOids::FLOAT8ARRAYOID),
                PgOid::BuiltIn(PgBuiltInOids::INT4OID),
                PgOid::BuiltIn(PgBuiltInOids::BOOLOID),
                PgOid::BuiltIn(PgBuiltInOids::INT8OID),
                PgOid::BuiltIn(PgBuiltInOids::TIMESTAMPTZOID),
                PgOid::BuiltIn(PgBuiltInOids::TEXTOID),
                PgOid::BuiltIn(PgBuiltInOids::TEXTOID),
                PgOid::BuiltIn(PgBuiltInOids::FLOAT8OID),
            ],
            |c, stmt| {
                c.update(
                    stmt,
                    None,
                    &[
                        o.job_id.into(),
                        stats.hour_base.into(),
                        stats.runs.clone().into(),
                        stats.failures.clone().into(),
                        stats.dur_ms.clone().into(),
                        recent_at.into(),
                        recent_ms.into(),
                        stats.consecutive_failures.into(),
                        stats.incident_open.into(),
                        o.run_id.into(),
                        o.started_at.into(),
                        o.status.as_str().into(),
                        o.message.into(),
                        stats.window(now_s()).p95_ms.into(),
                    ],
                )
            },
        );
        let event_name = match event {
            AlertEvent::IncidentStarted => Some("incident"),
            AlertEvent::Recovered => Some("recovered"),
            AlertEvent::None => None,
        };
        if let (Some(event), Some(target)) = (event_name, target) {
            let w = stats.window(now_s());
            send_alert(
                c,
                &target,
                &Alert {
                    event,
                    job_name: &job_name,
                    job_id: o.job_id,
                    owner,
                    run_id: Some(o.run_id),
                    status: Some(o.status.as_str()),
                    message: o.message,
                    consecutive_failures: stats.consecutive_failures,
                    runs_24h: w.runs,
                    failures_24h: w.failures,
                },
            );
        }
        // pulse.log_runs: keep only the rows asked for (statistics above keep the rest)
        crate::run::history::forget_unlogged(c, o.run_id, failed);
    });
}
