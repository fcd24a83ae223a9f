//! The SQL API for jobs. Every call is idempotent: repeating it with the same arguments changes
//! nothing, so migrations can run them again.
//!
//! Pure core (no pgrx): [`spec`], the argument checks that need no PostgreSQL and the settings a
//! job gets by default.
//!
//! Shell (feature `pg`), along the flow of a call:
//! * `args`: arguments checked and resolved (commands parsed, time zones, databases, owners,
//!   HTTP requests, alert targets);
//! * `catalog`: reading pulse.job (the job a call means, when it runs next);
//! * `define`: `pulse.schedule_job` / `pulse.schedule_once`, one write of one `JobSpec`;
//! * `alter`: `pulse.alter_job`, `pulse.toggle_job`, `pulse.unschedule_job`;
//! * `control`: `pulse.run_job`, `pulse.cancel_run`, `pulse.next_runs`, `pulse.current_run`;
//! * `roles`: the utility hook that makes DROP ROLE, REASSIGN OWNED and DROP OWNED see jobs;
//! * [`import`]: `pulse.import_pg_cron()`, pg_cron's jobs as pg_pulse jobs ([`import::command`]
//!   pure: what a command becomes).
//!
//! Run rows (pulse.job_run) are written only by `crate::worker::runs`.

pub mod import;
pub mod spec;

#[cfg(feature = "pg")]
mod alter;
#[cfg(feature = "pg")]
mod args;
#[cfg(feature = "pg")]
mod catalog;
#[cfg(feature = "pg")]
mod control;
#[cfg(feature = "pg")]
mod define;
#[cfg(feature = "pg")]
pub mod roles;

/// Wakes the scheduler when the calling transaction commits.
#[cfg(feature = "pg")]
fn wake() {
    crate::worker::wake_scheduler_at_commit();
}

/// Internal: wakes the scheduler when the calling transaction commits (used by CREATE EXTENSION).
#[cfg(feature = "pg")]
#[pgrx::pg_extern(volatile, parallel_unsafe)]
fn _wake_scheduler() {
    wake();
    crate::worker::wake_http_at_commit();
}
