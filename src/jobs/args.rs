//! The arguments of the jobs API, checked and resolved: the pure checks of [`super::spec`]
//! raised with their hints, and those that need PostgreSQL (parsing a command, time zones,
//! databases, roles, HTTP requests, jsonb alert targets).

use super::spec::{self, Invalid};
use crate::owners::{database_choice, DatabaseChoice};
use crate::pgutil::{self, invalid, raise};
use crate::schedule::{self, Schedule, Zone};
use chrono::Utc;
use pgrx::prelude::*;
use pgrx::{pg_sys, PgSqlErrorCode};

/// Raises a refused argument (22023) with its hint.
pub(super) fn check<T>(r: Result<T, Invalid>) -> T {
    r.unwrap_or_else(|e| invalid(e.message, e.hint))
}

pub(super) fn required<T>(v: Option<T>, name: &str) -> T {
    pgutil::not_null(v, name, "")
}

fn check_command(command: &str) {
    if command.trim().is_empty() {
        invalid(
            "command must not be empty",
            "Pass the SQL to run, such as 'CALL refresh_stats()' or 'SELECT process_queue()'.",
        );
    }
    // a syntax error is reported now, when the job is created, not at 3 a.m.
    let c = std::ffi::CString::new(command).unwrap_or_else(|_| {
        invalid(
            "command contains a zero byte",
            "Remove the NUL character from the command.",
        )
    });
    unsafe {
        pg_sys::raw_parser(c.as_ptr(), pg_sys::RawParseMode::RAW_PARSE_DEFAULT);
    }
}

/// The zone a user names, or `pulse.timezone`: checked by PostgreSQL, rules read now.
pub(super) fn resolve_timezone(tz: Option<&str>) -> Zone {
    match tz {
        Some(t) => crate::zones::resolve(t).unwrap_or_else(|e| invalid(e, schedule::TIMEZONE_HINT)),
        None => crate::zones::resolve(&crate::default_timezone()).unwrap_or_else(|e| {
            invalid(
                format!("pulse.timezone: {e}"),
                format!(
                    "SET pulse.timezone to a valid zone, or pass timezone =>. {}",
                    schedule::TIMEZONE_HINT
                ),
            )
        }),
    }
}

/// The zone stored with a job, read now; 22023 when it can no longer be read (it is never
/// replaced by another zone behind the owner's back).
pub(super) fn stored_timezone(job_name: &str, tz: &str) -> Zone {
    crate::zones::load(tz).unwrap_or_else(|e| {
        invalid(
            format!("job \"{job_name}\": its time zone can no longer be read: {e}"),
            format!(
                "Give it a zone PostgreSQL knows: SELECT pulse.alter_job('{job_name}', timezone => 'UTC');"
            ),
        )
    })
}

pub(super) fn parse_schedule(text: &str, tz: &Zone) -> Schedule {
    Schedule::parse_firing(text, tz, Utc::now())
        .unwrap_or_else(|e| invalid(e.to_string(), schedule::SCHEDULE_HINT))
}

pub(super) fn check_timeout(t: &Option<Interval>) {
    if let Some(i) = t {
        let us = pgutil::interval_arg("timeout", i, "5 minutes");
        check(spec::check_timeout(&i.to_string(), us));
    }
}

/// A one-shot's instant must be a real one: '-infinity' would run at once with scheduled_for
/// -infinity, 'infinity' never.
pub(super) fn check_run_at(run_at: TimestampWithTimeZone) {
    if !run_at.is_finite() {
        invalid(
            format!("run_at must be a finite timestamp, not {run_at}"),
            "Pass an instant such as now() + interval '10 minutes' (one in the past runs at once); to stop a job, use pulse.toggle_job(job_name, false).",
        );
    }
}

const LIST_DATABASES_HINT: &str = "List the databases with SELECT datname FROM pg_database; pass database => NULL (or '') for this database.";

/// Resolves `database =>` for a job of `owner`: None for this database, else the name of a
/// database that exists, accepts connections and on which `owner` has CONNECT (jobs run in a
/// session of their owner there). Raises otherwise. Runs inside `privileged`.
pub(super) fn resolve_database(arg: Option<&str>, owner: pg_sys::Oid) -> Option<String> {
    let here = pgutil::current_database_name();
    let DatabaseChoice::Other(name) = database_choice(arg, &here) else {
        return None;
    };
    let row = Spi::connect(|c| {
        c.select(
            "SELECT d.datallowconn,
                    pg_catalog.has_database_privilege($2, d.oid, 'CONNECT'),
                    pg_catalog.quote_ident(d.datname::text)
               FROM pg_catalog.pg_database d WHERE d.datname = $1",
            None,
            &[name.into(), owner.into()],
        )
        .unwrap_or_else(|e| invalid(format!("could not look up database \"{name}\": {e}"), ""))
        .first()
        .get_three::<bool, bool, String>()
        .unwrap_or_default()
    });
    let quoted_db = row.2.clone().unwrap_or_else(|| name.to_string());
    match row {
        (None, ..) => raise(
            PgSqlErrorCode::ERRCODE_INVALID_CATALOG_NAME,
            format!("database \"{name}\" does not exist"),
            LIST_DATABASES_HINT,
        ),
        (Some(false), ..) => raise(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("database \"{name}\" does not allow connections, so no job can run in it"),
            format!(
                "Pick a database that accepts connections (SELECT datname FROM pg_database WHERE datallowconn), or ALTER DATABASE {quoted_db} ALLOW_CONNECTIONS true."
            ),
        ),
        (Some(true), Some(false), _) => {
            let role = pgutil::role_name(owner);
            raise(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!("role \"{role}\" may not connect to database \"{name}\", where its job would run in a session of its own"),
                format!(
                    "GRANT CONNECT ON DATABASE {quoted_db} TO {}; (as the database's owner or a superuser)",
                    pgutil::quote_ident(&role)
                ),
            )
        }
        (Some(true), _, _) => Some(name.to_string()),
    }
}

/// Refuses a job owner that cannot log in: each job runs in a session of its owner (a
/// background worker connected as that role, which PostgreSQL refuses for NOLOGIN roles).
/// Runs inside `privileged`.
pub(super) fn require_login(owner: pg_sys::Oid) {
    let can = Spi::get_one_with_args::<bool>(
        "SELECT r.rolcanlogin FROM pg_catalog.pg_roles r WHERE r.oid = $1",
        &[owner.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false);
    if !can {
        let name = pgutil::role_name(owner);
        let quoted = pgutil::quote_ident(&name);
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
            format!("role \"{name}\" cannot own pg_pulse jobs because it cannot log in"),
            format!("Jobs run in a session of their owner (like pg_cron's): ALTER ROLE {quoted} LOGIN; or schedule the job as a role that can log in (RESET ROLE)."),
        );
    }
}

/// jsonb's canonical text of a JSON text, as the catalog's `column::text` reads it back, so that a
/// stored value and an argument compare as text.
fn canonical_jsonb(text: &str) -> String {
    Spi::get_one_with_args::<String>("SELECT $1::jsonb::text", &[text.into()])
        .ok()
        .flatten()
        .unwrap_or_else(|| text.to_string())
}

/// A job's retries: attempts per run (1 = no retry) and the first backoff (doubling, with jitter,
/// at most an hour); `None`: not given.
pub(super) struct Retries {
    pub max_attempts: Option<i32>,
    pub backoff: Option<Interval>,
}

impl Retries {
    pub fn new(max_attempts: Option<i32>, backoff: Option<Interval>) -> Retries {
        check(spec::check_retries(
            max_attempts,
            backoff.map(|b| pgutil::interval_arg("retry_backoff", &b, "10 seconds")),
        ));
        Retries {
            max_attempts,
            backoff,
        }
    }

    /// schedule_job, schedule_once: what is not given is the default (1 attempt, 10 seconds).
    pub fn or_defaults(&self) -> (i32, Interval) {
        (
            self.max_attempts.unwrap_or(spec::DEFAULT_MAX_ATTEMPTS),
            self.backoff.unwrap_or_else(|| {
                Interval::new(0, 0, spec::DEFAULT_RETRY_BACKOFF_US).expect("10 s")
            }),
        )
    }
}

/// A job's alerting: consecutive failures that open an incident, and where alerts go.
pub(super) struct Alerts {
    pub after: Option<i32>,
    /// `None`: not given; `Some(None)`: the default target (JSON null); `Some(Some(t))`: a target
    /// (`{}` means no alerts), as jsonb's canonical text.
    pub target: Option<Option<String>>,
}

const ALERT_HINT: &str = "Use alert => '{\"notify\": \"pulse_alerts\"}' (a NOTIFY channel), jsonb_build_object('webhook', pulse.http_request('POST', 'https://hooks.slack.com/services/{{secret:slack_path}}')), '{}' for no alerts, or 'null' for the default target (pulse.alert_target).";

impl Alerts {
    pub fn new(after: Option<i32>, alert: Option<pgrx::JsonB>) -> Alerts {
        check(spec::check_alert_after(after));
        let target = alert.map(|j| {
            let v = j.0;
            if v.is_null() {
                return None;
            }
            let Some(obj) = v.as_object() else {
                invalid(format!("invalid alert target {v}: not a JSON object"), ALERT_HINT);
            };
            let mut out = obj.clone();
            for (k, val) in obj {
                match k.as_str() {
                    "notify" => {
                        if !val.as_str().is_some_and(spec::is_channel_name) {
                            invalid(
                                format!("invalid alert target: \"notify\" must be a channel name, not {val}"),
                                ALERT_HINT,
                            );
                        }
                    }
                    "webhook" => {
                        let w = crate::http::api::normalize(val).unwrap_or_else(|e| {
                            invalid(format!("invalid webhook alert target: {e}"), ALERT_HINT)
                        });
                        out.insert(k.clone(), w);
                    }
                    other => invalid(format!("invalid alert target: unknown key \"{other}\""), ALERT_HINT),
                }
            }
            Some(canonical_jsonb(&serde_json::Value::Object(out).to_string()))
        });
        Alerts { after, target }
    }

    /// schedule_job, schedule_once: both fields from the call (what is not given: NULL, the
    /// server's defaults pulse.alert_after_failures and pulse.alert_target).
    pub fn or_defaults(&self) -> (Option<i32>, Option<String>) {
        (self.after, self.target.clone().flatten())
    }
}

/// What a job does: run SQL (`command`) or send an HTTP request (`http`), exactly one of them.
pub(super) enum Action {
    Command(String),
    /// The normalized request, as jsonb text.
    Http(String),
}

const ACTION_HINT: &str = "Pass command => 'SELECT ...' for a SQL job, or http => pulse.http_request('POST', 'https://...') for an HTTP job.";

impl Action {
    pub fn new(command: Option<&str>, http: Option<pgrx::JsonB>) -> Action {
        let http = http.map(|j| j.0).filter(|v| !v.is_null());
        match (command, http) {
            (Some(_), Some(_)) => invalid(
                "a job has a command or an http request, not both",
                ACTION_HINT,
            ),
            (None, None) => invalid("a job needs a command or an http request", ACTION_HINT),
            (Some(c), None) => {
                check_command(c);
                Action::Command(c.to_string())
            }
            (None, Some(v)) => Action::Http(crate::http::api::normalize_or_raise(&v).to_string()),
        }
    }

    pub fn command(&self) -> Option<&str> {
        match self {
            Action::Command(c) => Some(c),
            Action::Http(_) => None,
        }
    }

    /// Compared with the stored `http::text`: both are jsonb's canonical text.
    pub fn http(&self) -> Option<String> {
        match self {
            Action::Http(h) => Some(canonical_jsonb(h)),
            Action::Command(_) => None,
        }
    }
}
