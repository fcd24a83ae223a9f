//! pg_pulse: a scheduler inside PostgreSQL.
//!
//! Module map, along the flow of a job: schedule → job → run → outcome → health.
//!
//! * [`schedule`] (pure): cron, macro and seconds schedules, zone rules as data (`zone`, read at
//!   run time by `zonedb`), next-run math with DST. `zones`: PostgreSQL's zone directory and its
//!   check of zone names.
//! * [`jobs`]: the SQL API that defines jobs. [`jobs::spec`] (pure): checks and defaults; the
//!   rest is PostgreSQL glue along a call (`args` → `catalog` → `define` / `alter` / `control`);
//!   `jobs::roles`: the utility hook that makes DROP ROLE, REASSIGN OWNED and DROP OWNED see
//!   jobs and secrets. [`owners`] (pure): what `database =>` means and the messages about owners.
//! * [`run`]: a run's states ([`run::RunStatus`], pure) and the only code that writes
//!   `pulse.job_run`: `run::queue` → `run::claim` → `run::finish` → `run::history`.
//!   [`retry`] (pure): backoff with jitter, retry or dead letter.
//! * `outcome`: what follows a run's end: `outcome::stats` (`pulse.job_stats`) and
//!   `outcome::alerts` (`pulse.alert`, NOTIFY, webhooks, the overdue scan).
//! * [`health`] (pure: rolling statistics, classification, verdicts); `health::report`: the
//!   read API, `pulse.scheduler_health()` and `pulse.scheduler_status()`.
//! * `worker`: shared memory and the background workers that move runs along: the scheduler
//!   (`scheduler` → `dispatch` / `claim` → `handoff` → `session` → `statements`, outcomes back
//!   through `settle`), the HTTP worker (`worker::http`), their liveness and restart (`control`).
//! * [`http`]: requests and templates (pure: `request`, `template`, `resolve`, `outcome`,
//!   `policy`, `fair`), the HTTP client's thread pool (`client`), the SQL functions (`api`,
//!   `secrets`). [`queue`]: work queues on your own tables ([`queue::spec`] pure, `queue::api`).
//! * `settings`: every `pulse.*` setting; `pgutil`: errors with SQLSTATE and HINT, time
//!   conversions, running as the extension owner. `_PG_init` is here, in `entry`.
//!
//! The pure modules build without the `pg` feature: `cargo test --lib --no-default-features`.
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
mod xact;
#[cfg(feature = "pg")]
mod zones;

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
        // secret values stay out of the server log (errors, log_statement lines)
        crate::http::install_log_hook();
        if preloading {
            crate::worker::init_shared_memory();
            crate::worker::register_scheduler();
            crate::worker::register_http_worker();
        }
    }
}
