//! What became of the runs the scheduler handed out, recorded in its transaction: outcomes the
//! executors reported, runs of executors that exited (failed, or queued again if they had not
//! started), and, when that transaction fails, a minimal record so that every run still ends.

use super::handoff::{Order, Report};
use crate::run::finish::fail_now;
use crate::run::RunStatus;
use crate::xact;
use pgrx::prelude::*;

/// What became of a handed-out run, to be recorded.
#[derive(Clone)]
pub(super) enum Settled {
    /// The executor reported an outcome.
    Reported {
        order: Order,
        report: Report,
        pid: i32,
    },
    /// It never started, and its executor is gone: queue it again.
    Requeue(i64),
    /// Its executor could not connect (the server log says why).
    NoSession {
        run_id: i64,
        job_id: i64,
        attempt: i32,
        role: u32,
        db: u32,
    },
    /// Lost: the executor exited while running it.
    Lost {
        run_id: i64,
        job_id: i64,
        attempt: i32,
        message: String,
    },
}

/// What the scheduler's pool gathered and has not recorded yet (see `Pool::collect`).
#[derive(Default)]
pub(super) struct Settlement {
    pub(super) settled: Vec<Settled>,
    /// runs handed to an executor before its process was known: (run, pid) to record
    pub(super) pids: Vec<(i64, i32)>,
}

impl Settlement {
    /// Records what `Pool::collect` gathered, in the current transaction. Returns how many
    /// outcomes it wrote (they need a durable commit).
    pub fn settle(&mut self) -> usize {
        // kept until the transaction has committed (see `recorded`)
        let settled = self.settled.clone();
        let n = settled.len();
        let mut requeue = Vec::new();
        let mut reported = Vec::new();
        for s in settled {
            match s {
                Settled::Reported { order, report, pid } => reported.push((order, report, pid)),
                Settled::Lost {
                    run_id,
                    job_id,
                    attempt,
                    message,
                } => {
                    let job_id = if job_id != 0 {
                        job_id
                    } else {
                        xact::read_one::<i64>(&format!(
                            "SELECT job_id FROM pulse.job_run WHERE run_id = {run_id}"
                        ))
                        .unwrap_or(0)
                    };
                    fail_now(job_id, run_id, attempt, &message);
                }
                Settled::NoSession {
                    run_id,
                    job_id,
                    attempt,
                    role,
                    db,
                } => {
                    let names = Spi::get_two_with_args::<String, String>(
                        "SELECT (SELECT rolname::text FROM pg_roles WHERE oid = $1),
                                (SELECT datname::text FROM pg_database WHERE oid = $2)",
                        &[pg_sys::Oid::from(role).into(), pg_sys::Oid::from(db).into()],
                    )
                    .unwrap_or((None, None));
                    let message = format!(
                        "pg_pulse could not start a session as role \"{}\" in database \"{}\" (the server log says why: connection limits, a dropped role or database)",
                        names.0.unwrap_or_else(|| format!("OID {role}")),
                        names.1.unwrap_or_else(|| format!("OID {db}")),
                    );
                    fail_now(job_id, run_id, attempt, &message);
                }
                Settled::Requeue(run_id) => requeue.push(run_id),
            }
        }
        record_reported(&reported);
        let pids = std::mem::take(&mut self.pids);
        if !pids.is_empty() {
            let (ids, pids): (Vec<i64>, Vec<i32>) = pids.into_iter().unzip();
            crate::run::claim::record_executors(ids, pids);
        }
        if !requeue.is_empty() {
            crate::run::claim::requeue(requeue);
        }
        n
    }

    /// The tick's transaction committed: what it settled is recorded.
    pub fn recorded(&mut self) {
        self.settled.clear();
    }

    /// The tick's transaction failed (`why`): the runs that ended still end, with their status
    /// and message only (`run::finish::finish_minimal`), in a transaction of their own. Runs to queue
    /// again stay for the next turn. Returns whether that transaction committed.
    pub fn record_minimal(&mut self, why: &str) -> bool {
        let ended: Vec<(i64, RunStatus, String)> = self
            .settled
            .iter()
            .filter_map(|s| match s {
                Settled::Reported { order, report, .. } => {
                    Some((order.run_id, report.ended.status(), report.message.clone()))
                }
                Settled::Lost {
                    run_id, message, ..
                } => Some((*run_id, RunStatus::Failed, message.clone())),
                Settled::NoSession { run_id, .. } => Some((
                    *run_id,
                    RunStatus::Failed,
                    "pg_pulse could not start a session for this run".into(),
                )),
                Settled::Requeue(_) => None,
            })
            .collect();
        if ended.is_empty() {
            return true;
        }
        let reason = why.to_string();
        let r = xact::run(move || {
            let rows: Vec<(i64, RunStatus, &str)> = ended
                .iter()
                .map(|(id, st, m)| (*id, *st, m.as_str()))
                .collect();
            crate::run::finish::finish_minimal(&rows, &reason)
        });
        match r {
            Ok(n) => {
                warning!("pg_pulse scheduler: recorded {n} run outcome(s) without statistics, alerts or retries: {why}");
                self.settled.retain(|s| matches!(s, Settled::Requeue(_)));
                true
            }
            Err(f) => {
                warning!(
                    "pg_pulse scheduler: could not record run outcomes: {}",
                    f.message
                );
                false
            }
        }
    }

    /// Whether run `run_id` ended and waits to be recorded.
    pub fn holds(&self, run_id: i64) -> bool {
        self.settled.iter().any(|s| match s {
            Settled::Reported { order, .. } => order.run_id == run_id,
            Settled::Requeue(id) => *id == run_id,
            Settled::NoSession { run_id: id, .. } | Settled::Lost { run_id: id, .. } => {
                *id == run_id
            }
        })
    }

    /// The tick's transaction failed again and again: give up on recording these outcomes
    /// (the rescuer fails the runs later), so that scheduling goes on.
    pub fn drop_settled(&mut self, why: &str) {
        if !self.settled.is_empty() {
            warning!(
                "pg_pulse scheduler: could not record {} run outcome(s): {why}",
                self.settled.len()
            );
            self.settled.clear();
        }
    }
}

/// The outcomes executors reported, written together (see `run::finish::finish_reported`), then the
/// retries they earn.
fn record_reported(reported: &[(Order, Report, i32)]) {
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
    if let Err(e) = crate::run::finish::finish_reported(&outcomes) {
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
            crate::run::queue::schedule_retry(order.job_id, order.attempt, None);
        }
    }
}
