//! pg_pulse: a scheduler inside PostgreSQL.
//!
//! Module map.
//!
//! Pure core (no pgrx; tested with `cargo test --lib --no-default-features`):
//! * [`schedule`]: cron, macro and seconds schedules, time zones, next-run math with DST rules;
//! * [`retry`]: exponential backoff with jitter and a cap, retry or dead-letter decisions;
//! * [`health`]: rolling 24-hour job statistics, health classification, alert transitions;
//! * [`queue::spec`]: what makes a table a queue, and the claim/complete/fail statements.
//!
//! PostgreSQL shell (feature `pg`, thin, calls the core):
//! * `gucs` (here): every `pulse.*` setting, registered in `_PG_init`;
//! * `pgutil`: errors with SQLSTATE and HINT, time conversions, running as the extension owner;
//! * `jobs`: the SQL API (`pulse.schedule_job`, `pulse.toggle_job`, `pulse.next_runs`, ...);
//! * `queue::api`: `pulse.make_queue`, `pulse.claim_batch`, `pulse.complete`, `pulse.fail`, ...;
//! * `worker`: shared memory, the scheduler background worker and its pool of executors.
pub mod health;
pub mod queue;
pub mod retry;
pub mod schedule;

#[cfg(feature = "pg")]
mod jobs;
#[cfg(feature = "pg")]
mod pgutil;
#[cfg(feature = "pg")]
mod worker;

#[cfg(feature = "pg")]
pub use shell::*;

#[cfg(feature = "pg")]
mod shell {
    use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
    use pgrx::prelude::*;
    use std::ffi::CString;
    use std::sync::atomic::{AtomicBool, Ordering};

    ::pgrx::pg_module_magic!(name, version);

    pgrx::extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
    pgrx::extension_sql_file!("../sql/queue.sql", name = "queue", requires = ["schema"]);
    pgrx::extension_sql_file!("../sql/finalize.sql", name = "finalize", finalize);

    /// `pulse.database_name`: the database whose jobs the scheduler runs.
    pub static DATABASE_NAME: GucSetting<Option<CString>> =
        GucSetting::<Option<CString>>::new(Some(c"postgres"));
    /// `pulse.timezone`: the time zone of jobs created without one.
    pub static TIMEZONE: GucSetting<Option<CString>> =
        GucSetting::<Option<CString>>::new(Some(c"UTC"));
    /// `pulse.max_running_jobs`: how many runs may execute at once (the executor pool size).
    pub static MAX_RUNNING_JOBS: GucSetting<i32> = GucSetting::<i32>::new(4);
    /// `pulse.executor_idle_timeout`: seconds an idle executor waits for work before it exits.
    pub static EXECUTOR_IDLE_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(300);

    /// Set when the library was loaded through shared_preload_libraries (the worker exists).
    pub static PRELOADED: AtomicBool = AtomicBool::new(false);

    pub fn database_name() -> String {
        DATABASE_NAME
            .get()
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_else(|| "postgres".into())
    }

    pub fn default_timezone() -> String {
        TIMEZONE
            .get()
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_else(|| "UTC".into())
    }

    #[pg_guard]
    pub extern "C-unwind" fn _PG_init() {
        let preloading = unsafe { pg_sys::process_shared_preload_libraries_in_progress };
        // A postmaster-level setting can only be defined while preloading; loaded later (not
        // preloaded), the library still works for previews and says why jobs cannot be managed.
        if preloading {
            GucRegistry::define_string_guc(
                c"pulse.database_name",
                c"Database in which pg_pulse's scheduler runs jobs.",
                c"Create the extension in this database. Changing it needs a restart.",
                &DATABASE_NAME,
                GucContext::Postmaster,
                GucFlags::default(),
            );
        }
        GucRegistry::define_string_guc(
            c"pulse.timezone",
            c"Time zone of jobs scheduled without an explicit timezone argument.",
            c"An IANA name such as UTC or Europe/Berlin.",
            &TIMEZONE,
            GucContext::Userset,
            GucFlags::default(),
        );
        GucRegistry::define_int_guc(
            c"pulse.max_running_jobs",
            c"Maximum number of job runs executing at the same time.",
            c"Each running job uses one background worker: keep it below max_worker_processes.",
            &MAX_RUNNING_JOBS,
            1,
            crate::worker::MAX_EXECUTORS as i32,
            GucContext::Sighup,
            GucFlags::default(),
        );
        GucRegistry::define_int_guc(
            c"pulse.executor_idle_timeout",
            c"Seconds an idle executor worker waits for work before it exits.",
            c"",
            &EXECUTOR_IDLE_TIMEOUT,
            1,
            86400,
            GucContext::Sighup,
            GucFlags::UNIT_S,
        );
        unsafe {
            pg_sys::MarkGUCPrefixReserved(c"pulse".as_ptr());
        }
        if preloading {
            PRELOADED.store(true, Ordering::Relaxed);
            crate::worker::init_shared_memory();
            crate::worker::register_scheduler();
        }
    }
}
