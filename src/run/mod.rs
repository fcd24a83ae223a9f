//! A run: one execution of a job's slot (or of `pulse.run_job`, or a retry). Its states are a
//! type here (pure); `queue` → `claim` → `finish` → `history` (PostgreSQL) are the only code that
//! writes `pulse.job_run`, one step of the lifecycle each.
//!
//! ```text
//! queued ──claim──> running ──> succeeded | failed | timed_out | cancelled
//!   │                  └──(taken back before it started)──> queued
//!   └──> skipped (overlap), cancelled, failed (refused: owner or database unusable)
//! ```
//! A run ends once: only a `queued` or `running` run can be finished.

#[cfg(feature = "pg")]
pub(crate) mod claim;
#[cfg(feature = "pg")]
pub(crate) mod finish;
#[cfg(feature = "pg")]
pub(crate) mod history;
#[cfg(feature = "pg")]
pub(crate) mod queue;

/// The status of a run, as `pulse.job_run.status` stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
    Skipped,
}

impl RunStatus {
    pub const ALL: [RunStatus; 7] = [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::TimedOut,
        RunStatus::Cancelled,
        RunStatus::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::TimedOut => "timed_out",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<RunStatus> {
        RunStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Not ended yet: the only states a run can be finished from.
    pub fn is_open(self) -> bool {
        matches!(self, RunStatus::Queued | RunStatus::Running)
    }

    /// A failure for statistics, alerts and retries.
    pub fn is_failure(self) -> bool {
        matches!(self, RunStatus::Failed | RunStatus::TimedOut)
    }

    /// Counted in a job's statistics (a cancelled run only becomes its last run).
    pub fn is_counted(self) -> bool {
        !matches!(self, RunStatus::Cancelled)
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_their_names() {
        for st in RunStatus::ALL {
            assert_eq!(RunStatus::parse(st.as_str()), Some(st));
        }
        assert_eq!(RunStatus::parse("done"), None);
    }

    #[test]
    fn only_queued_and_running_runs_are_open() {
        let open: Vec<_> = RunStatus::ALL.into_iter().filter(|s| s.is_open()).collect();
        assert_eq!(open, vec![RunStatus::Queued, RunStatus::Running]);
        assert!(RunStatus::TimedOut.is_failure() && RunStatus::Failed.is_failure());
        assert!(!RunStatus::Cancelled.is_counted() && RunStatus::Skipped.is_counted());
    }

    #[test]
    fn the_names_are_the_ones_the_catalog_allows() {
        // sql/schema.sql: CHECK (status IN (...))
        let schema = include_str!("../../sql/schema.sql");
        let start = schema.find("CREATE TABLE pulse.job_run").unwrap();
        let table = &schema[start..start + schema[start..].find(");").unwrap()];
        for st in RunStatus::ALL {
            assert!(table.contains(&format!("'{}'", st.as_str())), "{st}");
        }
    }
}
