//! Every `pulse.*` setting in one place: the statics the code reads (`crate::MAX_RUNNING_JOBS`,
//! ...), their registration, and small accessors (`database_name`, `http_policy`, ...).
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::prelude::*;
use std::ffi::CString;
use std::sync::atomic::{AtomicBool, Ordering};

/// `pulse.database_name`: the database whose jobs the scheduler runs.
pub static DATABASE_NAME: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"postgres"));
/// `pulse.timezone`: the time zone of jobs created without one.
pub static TIMEZONE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"UTC"));
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
/// `pulse.http_max_url_bytes`, `pulse.http_max_header_bytes`, `pulse.http_max_headers_bytes`:
/// the longest URL (with its query string), header (name and value) and all headers together
/// that a request sends, placeholders filled in (see `crate::http::request::Limits`).
pub static HTTP_MAX_URL_BYTES: GucSetting<i32> =
    GucSetting::<i32>::new(crate::http::request::Limits::DEFAULT.url as i32);
pub static HTTP_MAX_HEADER_BYTES: GucSetting<i32> =
    GucSetting::<i32>::new(crate::http::request::Limits::DEFAULT.header as i32);
pub static HTTP_MAX_HEADERS_BYTES: GucSetting<i32> =
    GucSetting::<i32>::new(crate::http::request::Limits::DEFAULT.headers as i32);
/// `pulse.http_max_concurrency`: HTTP threads (and so at most this many connections).
pub static HTTP_MAX_CONCURRENCY: GucSetting<i32> = GucSetting::<i32>::new(16);
/// `pulse.http_max_response_bytes`: response bodies are cut to this size (and flagged).
pub static HTTP_MAX_RESPONSE_BYTES: GucSetting<i32> = GucSetting::<i32>::new(1_048_576);
/// `pulse.http_allowed_hosts` / `pulse.http_denied_networks`: the outbound address policy.
pub static HTTP_ALLOWED_HOSTS: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);
pub static HTTP_DENIED_NETWORKS: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(crate::http::policy::DEFAULT_DENIED_C));
/// `pulse.http_ca_file`: a PEM file of CA certificates HTTPS trusts besides the system's roots.
pub static HTTP_CA_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// `pulse.http_retention`: seconds finished after-commit requests are kept.
pub static HTTP_RETENTION: GucSetting<i32> = GucSetting::<i32>::new(86_400);
/// `pulse.status_max_failing_jobs` / `pulse.status_min_health_pct`: verdict thresholds.
pub static STATUS_MAX_FAILING: GucSetting<i32> = GucSetting::<i32>::new(0);
pub static STATUS_MIN_HEALTH_PCT: GucSetting<i32> = GucSetting::<i32>::new(90);
/// `pulse.status_max_request_wait`: seconds a due after-commit request may wait unsent before
/// pulse.scheduler_status() says NEEDS_ATTENTION.
pub static STATUS_MAX_REQUEST_WAIT: GucSetting<i32> = GucSetting::<i32>::new(60);

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

/// `pulse.http_ca_file`, None when unset or empty.
pub fn http_ca_file() -> Option<String> {
    Some(guc_text(&HTTP_CA_FILE)).filter(|s| !s.trim().is_empty())
}

pub fn default_timezone() -> String {
    TIMEZONE
        .get()
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_else(|| "UTC".into())
}

/// Defines every `pulse.*` setting (called from `_PG_init`; `preloading`: through
/// shared_preload_libraries, when postmaster-level settings can be defined).
pub fn register(preloading: bool) {
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
    int(
        c"pulse.status_max_request_wait",
        c"pulse.scheduler_status() says NEEDS_ATTENTION while a due after-commit HTTP request has waited longer than this.",
        &STATUS_MAX_REQUEST_WAIT,
        1,
        i32::MAX,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"pulse.http_max_request_bytes",
        c"Largest HTTP request body (JSON or text) sent, placeholders filled in.",
        c"",
        &HTTP_MAX_REQUEST_BYTES,
        1,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_BYTE,
    );
    for (name, desc, setting) in [
        (
            c"pulse.http_max_url_bytes",
            c"Longest URL (with its query string) an HTTP request sends, placeholders filled in.",
            &HTTP_MAX_URL_BYTES,
        ),
        (
            c"pulse.http_max_header_bytes",
            c"Longest header (name and value) an HTTP request sends, placeholders filled in.",
            &HTTP_MAX_HEADER_BYTES,
        ),
        (
            c"pulse.http_max_headers_bytes",
            c"Most bytes of headers (names and values, together) an HTTP request sends, placeholders filled in.",
            &HTTP_MAX_HEADERS_BYTES,
        ),
    ] {
        GucRegistry::define_int_guc(
            name,
            desc,
            c"",
            setting,
            1,
            1 << 30,
            GucContext::Suset,
            GucFlags::UNIT_BYTE,
        );
    }
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
        c"pulse.http_ca_file",
        c"PEM file of CA certificates HTTPS requests trust besides the system's root certificates.",
        c"For endpoints behind a company CA. Read by the HTTP worker at start and at each reload; if it cannot be used, HTTPS requests fail saying why.",
        &HTTP_CA_FILE,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
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
    if preloading {
        PRELOADED.store(true, Ordering::Relaxed);
    }
}

/// The size limits of what HTTP requests send (`pulse.http_max_url_bytes`, `..._header_bytes`,
/// `..._headers_bytes`, `pulse.http_max_request_bytes`), as this session sees them.
pub fn http_limits() -> crate::http::request::Limits {
    let get = |g: &GucSetting<i32>| g.get().max(1) as usize;
    crate::http::request::Limits {
        url: get(&HTTP_MAX_URL_BYTES),
        header: get(&HTTP_MAX_HEADER_BYTES),
        headers: get(&HTTP_MAX_HEADERS_BYTES),
        body: get(&HTTP_MAX_REQUEST_BYTES),
    }
}
