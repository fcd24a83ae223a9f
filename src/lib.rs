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
pub mod schedule;

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

    /// `pulse.overdue_after`: seconds after a due slot with no run before a job is `overdue`.
    pub static OVERDUE_AFTER: GucSetting<i32> = GucSetting::<i32>::new(60);
    /// `pulse.alert_after_failures`: consecutive failures that open an incident (default per job).
    pub static ALERT_AFTER_FAILURES: GucSetting<i32> = GucSetting::<i32>::new(3);
    /// `pulse.alert_target`: where alerts go for jobs without their own `alert` (jsonb).
    pub static ALERT_TARGET: GucSetting<Option<CString>> =
        GucSetting::<Option<CString>>::new(Some(c"{\"notify\": \"pulse_alerts\"}"));
    /// `pulse.run_retention` / `pulse.run_retention_failed`: seconds run rows are kept.
    pub static RUN_RETENTION: GucSetting<i32> = GucSetting::<i32>::new(7 * 86_400);
    pub static RUN_RETENTION_FAILED: GucSetting<i32> = GucSetting::<i32>::new(30 * 86_400);
    /// `pulse.log_runs`: which finished runs keep a row in pulse.job_run.
    pub static LOG_RUNS: GucSetting<LogRuns> = GucSetting::<LogRuns>::new(LogRuns::All);
    /// `pulse.http_max_request_bytes`: the largest request body `pulse.http_request` accepts.
    pub static HTTP_MAX_REQUEST_BYTES: GucSetting<i32> = GucSetting::<i32>::new(1_048_576);
    /// `pulse.http_max_concurrency`: HTTP threads (and so at most this many connections).
    pub static HTTP_MAX_CONCURRENCY: GucSetting<i32> = GucSetting::<i32>::new(16);
    /// `pulse.http_max_response_bytes`: response bodies are cut to this size (and flagged).
    pub static HTTP_MAX_RESPONSE_BYTES: GucSetting<i32> = GucSetting::<i32>::new(1_048_576);
    /// `pulse.http_allowed_hosts` / `pulse.http_denied_networks`: the outbound address policy.
    pub static HTTP_ALLOWED_HOSTS: GucSetting<Option<CString>> =
        GucSetting::<Option<CString>>::new(None);
    pub static HTTP_DENIED_NETWORKS: GucSetting<Option<CString>> =
        GucSetting::<Option<CString>>::new(Some(crate::http::policy::DEFAULT_DENIED_C));
    /// `pulse.http_retention`: seconds finished after-commit requests are kept.
    pub static HTTP_RETENTION: GucSetting<i32> = GucSetting::<i32>::new(86_400);
    /// `pulse.status_max_failing_jobs` / `pulse.status_min_health_pct`: verdict thresholds.
    pub static STATUS_MAX_FAILING: GucSetting<i32> = GucSetting::<i32>::new(0);
    pub static STATUS_MIN_HEALTH_PCT: GucSetting<i32> = GucSetting::<i32>::new(90);

    #[derive(pgrx::PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
    pub enum LogRuns {
        #[name = c"all"]
        All,
        #[name = c"failures"]
        Failures,
        #[name = c"none"]
        None,
    }

    /// Set when the library was loaded through shared_preload_libraries (the worker exists).
    pub static PRELOADED: AtomicBool = AtomicBool::new(false);

    pub fn database_name() -> String {
        DATABASE_NAME
            .get()
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_else(|| "postgres".into())
    }

    fn guc_text(g: &GucSetting<Option<CString>>) -> String {
        g.get()
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The address policy from `pulse.http_allowed_hosts` and `pulse.http_denied_networks`.
    pub fn http_policy() -> Result<crate::http::policy::Policy, String> {
        crate::http::policy::Policy::parse(
            &guc_text(&HTTP_ALLOWED_HOSTS),
            &guc_text(&HTTP_DENIED_NETWORKS),
        )
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
        let int = |name: &'static std::ffi::CStr,
                   short: &'static std::ffi::CStr,
                   setting: &'static GucSetting<i32>,
                   min: i32,
                   max: i32,
                   flags: GucFlags| {
            GucRegistry::define_int_guc(
                name,
                short,
                c"",
                setting,
                min,
                max,
                GucContext::Sighup,
                flags,
            );
        };
        int(
            c"pulse.overdue_after",
            c"How long after a due slot without a run a job counts as overdue (and alerts).",
            &OVERDUE_AFTER,
            1,
            i32::MAX,
            GucFlags::UNIT_S,
        );
        int(
            c"pulse.alert_after_failures",
            c"Consecutive failures that open an incident, for jobs without alert_after_failures.",
            &ALERT_AFTER_FAILURES,
            1,
            1_000_000,
            GucFlags::default(),
        );
        int(
            c"pulse.run_retention",
            c"How long run rows other than failures are kept.",
            &RUN_RETENTION,
            60,
            i32::MAX,
            GucFlags::UNIT_S,
        );
        int(
            c"pulse.run_retention_failed",
            c"How long failed and timed-out run rows are kept.",
            &RUN_RETENTION_FAILED,
            60,
            i32::MAX,
            GucFlags::UNIT_S,
        );
        int(
            c"pulse.status_max_failing_jobs",
            c"pulse.scheduler_status() says NEEDS_ATTENTION when more jobs than this are failing.",
            &STATUS_MAX_FAILING,
            0,
            i32::MAX,
            GucFlags::default(),
        );
        int(
            c"pulse.status_min_health_pct",
            c"pulse.scheduler_status() says NEEDS_ATTENTION below this share (%) of healthy jobs.",
            &STATUS_MIN_HEALTH_PCT,
            0,
            100,
            GucFlags::default(),
        );
        GucRegistry::define_int_guc(
            c"pulse.http_max_request_bytes",
            c"Largest HTTP request body (JSON or text) accepted by pulse.http_request.",
            c"",
            &HTTP_MAX_REQUEST_BYTES,
            1,
            i32::MAX,
            GucContext::Suset,
            GucFlags::UNIT_BYTE,
        );
        int(
            c"pulse.http_max_concurrency",
            c"Threads sending HTTP requests (each uses at most one connection at a time).",
            &HTTP_MAX_CONCURRENCY,
            1,
            256,
            GucFlags::default(),
        );
        int(
            c"pulse.http_max_response_bytes",
            c"Response bodies longer than this are cut (and flagged as truncated).",
            &HTTP_MAX_RESPONSE_BYTES,
            0,
            1 << 30,
            GucFlags::UNIT_BYTE,
        );
        int(
            c"pulse.http_retention",
            c"How long finished after-commit HTTP requests (pulse.http_responses) are kept.",
            &HTTP_RETENTION,
            60,
            i32::MAX,
            GucFlags::UNIT_S,
        );
        GucRegistry::define_string_guc(
            c"pulse.http_allowed_hosts",
            c"Hosts HTTP requests may reach (comma-separated names, IPs or *.domain); empty: any host not in a denied network.",
            c"A listed host may also be in a denied network: list 127.0.0.1 to call a local service.",
            &HTTP_ALLOWED_HOSTS,
            GucContext::Sighup,
            GucFlags::default(),
        );
        GucRegistry::define_string_guc(
            c"pulse.http_denied_networks",
            c"Networks HTTP requests may not reach, checked after DNS resolution and on every redirect.",
            c"The default refuses link-local and cloud-metadata addresses and loopback.",
            &HTTP_DENIED_NETWORKS,
            GucContext::Sighup,
            GucFlags::default(),
        );
        GucRegistry::define_string_guc(
            c"pulse.alert_target",
            c"Alert target (jsonb) of jobs without their own alert, e.g. {\"notify\": \"pulse_alerts\"}.",
            c"",
            &ALERT_TARGET,
            GucContext::Sighup,
            GucFlags::default(),
        );
        GucRegistry::define_enum_guc(
            c"pulse.log_runs",
            c"Which finished runs keep a row in pulse.job_runs: all, failures or none.",
            c"Statistics, health and the last run are kept in every case.",
            &LOG_RUNS,
            GucContext::Sighup,
            GucFlags::default(),
        );
        unsafe {
            pg_sys::MarkGUCPrefixReserved(c"pulse".as_ptr());
        }
        // DROP ROLE, REASSIGN OWNED and DROP OWNED follow jobs and secrets in this database
        crate::jobs::roles::install();
        if preloading {
            PRELOADED.store(true, Ordering::Relaxed);
            crate::worker::init_shared_memory();
            crate::worker::register_scheduler();
            crate::worker::register_http_worker();
        }
    }
}
