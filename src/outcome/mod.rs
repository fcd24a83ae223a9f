//! What happened to a run, and what follows from it: the job's rolling statistics and last run
//! (`stats`, the one writer of `pulse.job_stats`) and alerts (`alerts`, the one writer of
//! `pulse.alert`, and the overdue scan). Called by the run lifecycle (`crate::run::store`) in
//! the transaction that ends a run.

pub mod alerts;
pub mod stats;

use crate::run::RunStatus;
use pgrx::prelude::*;

/// What the executor knows about a finished run.
pub struct Outcome<'a> {
    pub job_id: i64,
    pub run_id: i64,
    pub status: RunStatus,
    pub message: Option<&'a str>,
    pub started_at: TimestampWithTimeZone,
    pub duration_ms: f64,
    /// When the run ended, if it is known better than "now" (an executor's report).
    pub finished_at: Option<TimestampWithTimeZone>,
}
