//! pg_pulse: a scheduler inside PostgreSQL.
//!
//! Module map.
//!
//! Pure core (no pgrx; tested with `cargo test --lib --no-default-features`):
//! * [`schedule`]: cron, macro and seconds schedules, time zones, next-run math with DST rules;
//! * [`retry`]: exponential backoff with jitter and a cap, retry or dead-letter decisions;
//! * [`health`]: rolling 24-hour job statistics, health classification, alert transitions;
//! * [`http::template`], [`http::policy`]: request templates and the outbound address policy;
//! * [`queue::spec`]: what makes a table a queue, and the claim/complete/fail statements;
//! * [`jobs::spec`]: the checks of the jobs API that need no PostgreSQL, and job defaults;
//! * [`owners`]: what `database =>` means, and the messages about roles that own jobs.
//!
//! PostgreSQL shell (feature `pg`, thin, calls the core):
//! * `gucs` (here): every `pulse.*` setting, registered in `_PG_init`;
//! * `pgutil`: errors with SQLSTATE and HINT, time conversions, running as the extension owner;
//! * `jobs`: the SQL API (`pulse.schedule_job`, `pulse.toggle_job`, `pulse.next_runs`, ...),
//!   split along a call's flow (`args`, `catalog`, `define`, `alter`, `control`);
//!   `jobs::roles`: the utility hook that makes DROP ROLE, REASSIGN OWNED and DROP OWNED
//!   see jobs and secrets;
//! * `queue::api`: `pulse.make_queue`, `pulse.claim_batch`, `pulse.complete`, `pulse.fail`, ...;
//! * `worker`: shared memory, the scheduler background worker and its pool of executors.
pub mod health;
pub mod http;
pub mod jobs;
pub mod owners;
pub mod queue;
pub mod retry;
pub mod run;
pub mod schedule;

#[cfg(feature = "pg")]
mod outcome;
#[cfg(feature = "pg")]
mod pgutil;
#[cfg(feature = "pg")]
mod worker;

#[cfg(feature = "pg")]
mod settings;
#[cfg(feature = "pg")]
pub use settings::*;

#[cfg(feature = "pg")]
mod entry {
    use pgrx::prelude::*;

    ::pgrx::pg_module_magic!(name, version);

    pgrx::extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
    pgrx::extension_sql_file!("../sql/queue.sql", name = "queue", requires = ["schema"]);
    pgrx::extension_sql_file!("../sql/finalize.sql", name = "finalize", finalize);

    /// Loaded: the settings, the utility hook for role commands and, when preloaded, the shared
    /// memory and the two long-lived workers.
    #[pg_guard]
    pub extern "C-unwind" fn _PG_init() {
        let preloading = unsafe { pg_sys::process_shared_preload_libraries_in_progress };
        crate::settings::register(preloading);
        // DROP ROLE, REASSIGN OWNED and DROP OWNED follow jobs and secrets in this database
        crate::jobs::roles::install();
        if preloading {
            crate::worker::init_shared_memory();
            crate::worker::register_scheduler();
            crate::worker::register_http_worker();
        }
    }
}
