//! The SQL API for jobs: thin pgrx functions that validate with the pure core and write the
//! catalog as its owner. Every call is idempotent: repeating it with the same arguments changes
//! nothing, so migrations can run them again.

pub mod roles;

use crate::owners::{database_choice, DatabaseChoice};
use crate::pgutil::{self, from_pg_ts, interval_micros, invalid, privileged, raise, to_pg_ts};
use crate::schedule::{self, Schedule};
use chrono::Utc;
use pgrx::prelude::*;
use pgrx::{pg_sys, PgSqlErrorCode};

const JOB_HINT: &str = "See the jobs you can manage with SELECT job_name, owner FROM pulse.jobs;";
const OVERLAP_HINT: &str = "Use overlap => 'skip' (a slot that comes while the previous run is still going is recorded as skipped) or overlap => 'allow'.";

fn required<T>(v: Option<T>, name: &str) -> T {
    v.unwrap_or_else(|| {
        raise(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("{name} must not be NULL"),
            "",
        )
    })
}

fn check_name(name: &str) {
    if name.trim().is_empty() || name.len() > 200 {
        invalid(
            format!("invalid job_name \"{name}\": it must be 1 to 200 characters and not blank"),
            "Use a short unique name such as 'nightly_ingest'.",
        );
    }
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

fn resolve_timezone(tz: Option<&str>) -> chrono_tz::Tz {
    match tz {
        Some(t) => schedule::parse_timezone(t)
            .unwrap_or_else(|e| invalid(e.to_string(), schedule::TIMEZONE_HINT)),
        None => {
            let d = crate::default_timezone();
            schedule::parse_timezone(&d).unwrap_or_else(|e| {
                invalid(
                    format!("pulse.timezone: {e}"),
                    format!(
                        "SET pulse.timezone to a valid zone, or pass timezone =>. {}",
                        schedule::TIMEZONE_HINT
                    ),
                )
            })
        }
    }
}

fn parse_schedule(text: &str, tz: chrono_tz::Tz) -> Schedule {
    Schedule::parse_firing(text, tz, Utc::now())
        .unwrap_or_else(|e| invalid(e.to_string(), schedule::SCHEDULE_HINT))
}

fn check_timeout(t: &Option<Interval>) {
    if let Some(i) = t {
        if interval_micros(i) <= 0 {
            invalid(
                format!("invalid timeout \"{i}\": it must be positive"),
                "Pass an interval such as timeout => '5 minutes', or NULL for no timeout.",
            );
        }
    }
}

/// A one-shot's instant must be a real one: '-infinity' would run at once with scheduled_for
/// -infinity, 'infinity' never.
fn check_run_at(run_at: TimestampWithTimeZone) {
    if !run_at.is_finite() {
        invalid(
            format!("run_at must be a finite timestamp, not {run_at}"),
            "Pass an instant such as now() + interval '10 minutes' (one in the past runs at once); to stop a job, use pulse.toggle_job(job_name, false).",
        );
    }
}

fn check_overlap(o: &str) {
    if o != "skip" && o != "allow" {
        invalid(format!("invalid overlap \"{o}\""), OVERLAP_HINT);
    }
}

const LIST_DATABASES_HINT: &str = "List the databases with SELECT datname FROM pg_database; pass database => NULL (or '') for this database.";

/// Resolves `database =>` for a job of `owner`: None for this database, else the name of a
/// database that exists, accepts connections and on which `owner` has CONNECT (jobs run in a
/// session of their owner there). Raises otherwise. Runs inside `privileged`.
fn resolve_database(arg: Option<&str>, owner: pg_sys::Oid) -> Option<String> {
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
                    quote_ident(&role)
                ),
            )
        }
        (Some(true), _, _) => Some(name.to_string()),
    }
}

fn quote_ident(name: &str) -> String {
    Spi::get_one_with_args::<String>("SELECT pg_catalog.quote_ident($1)", &[name.into()])
        .ok()
        .flatten()
        .unwrap_or_else(|| name.to_string())
}

/// Refuses a job owner that cannot log in: each job runs in a session of its owner (a
/// background worker connected as that role, which PostgreSQL refuses for NOLOGIN roles).
/// Runs inside `privileged`.
fn require_login(owner: pg_sys::Oid) {
    let can = Spi::get_one_with_args::<bool>(
        "SELECT r.rolcanlogin FROM pg_catalog.pg_roles r WHERE r.oid = $1",
        &[owner.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false);
    if !can {
        let name = pgutil::role_name(owner);
        let quoted = quote_ident(&name);
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
            format!("role \"{name}\" cannot own pg_pulse jobs because it cannot log in"),
            format!("Jobs run in a session of their owner (like pg_cron's): ALTER ROLE {quoted} LOGIN; or schedule the job as a role that can log in (RESET ROLE)."),
        );
    }
}

/// A job row as the API reads it.
struct Job {
    job_id: i64,
    schedule: Option<String>,
    run_at: Option<TimestampWithTimeZone>,
    timezone: String,
    command: Option<String>,
    enabled: bool,
    timeout: Option<Interval>,
    overlap: String,
    comment: Option<String>,
    next_run_at: Option<TimestampWithTimeZone>,
    /// An HTTP job's request (normalized jsonb, as text).
    http: Option<String>,
    /// Where the job runs; None: the database pg_pulse lives in.
    database: Option<String>,
    /// The role the job runs as.
    owner: pg_sys::Oid,
}

/// `owner` is a regrole: read as oid (pgrx would accept it, the cast says what is meant).
const JOB_COLUMNS: &str =
    "job_id, schedule, run_at, timezone, command, enabled, timeout, overlap, comment, next_run_at, http::text, database::text, owner::oid";
/// The number of columns in [`JOB_COLUMNS`].
const JOB_NCOLS: usize = 13;

fn job_from_row(row: &pgrx::spi::SpiHeapTupleData) -> Job {
    let g =
        |e: pgrx::spi::SpiError| -> ! { invalid(format!("pg_pulse catalog read failed: {e}"), "") };
    Job {
        job_id: row
            .get::<i64>(1)
            .unwrap_or_else(|e| g(e))
            .unwrap_or_default(),
        schedule: row.get::<String>(2).unwrap_or_else(|e| g(e)),
        run_at: row.get::<TimestampWithTimeZone>(3).unwrap_or_else(|e| g(e)),
        timezone: row
            .get::<String>(4)
            .unwrap_or_else(|e| g(e))
            .unwrap_or_default(),
        command: row.get::<String>(5).unwrap_or_else(|e| g(e)),
        enabled: row
            .get::<bool>(6)
            .unwrap_or_else(|e| g(e))
            .unwrap_or_default(),
        timeout: row.get::<Interval>(7).unwrap_or_else(|e| g(e)),
        overlap: row
            .get::<String>(8)
            .unwrap_or_else(|e| g(e))
            .unwrap_or_default(),
        comment: row.get::<String>(9).unwrap_or_else(|e| g(e)),
        next_run_at: row
            .get::<TimestampWithTimeZone>(10)
            .unwrap_or_else(|e| g(e)),
        http: row.get::<String>(11).unwrap_or_else(|e| g(e)),
        database: row.get::<String>(12).unwrap_or_else(|e| g(e)),
        owner: row
            .get::<pg_sys::Oid>(13)
            .unwrap_or_else(|e| g(e))
            .unwrap_or(pg_sys::Oid::INVALID),
    }
}

/// Finds (and row-locks) the job of that name the caller may manage: its own, or for a superuser
/// any job of that name (its own first). Must run inside `privileged`.
fn find_job(name: &str) -> Option<Job> {
    let me = pgutil::current_user_oid_outer();
    let superuser = pgutil::outer_is_superuser();
    let q = format!(
        "SELECT {JOB_COLUMNS}, owner::oid = $2 AS mine FROM pulse.job
          WHERE job_name = $1 AND (owner::oid = $2 OR $3)
          ORDER BY owner::oid = $2 DESC, job_id LIMIT 2 FOR UPDATE"
    );
    let rows: Vec<(Job, bool)> = Spi::connect(|c| {
        let t = c
            .select(&q, None, &[name.into(), me.into(), superuser.into()])
            .unwrap_or_else(|e| invalid(format!("pg_pulse catalog read failed: {e}"), ""));
        t.map(|row| {
            let mine = row
                .get::<bool>(JOB_NCOLS + 1)
                .ok()
                .flatten()
                .unwrap_or(false);
            (job_from_row(&row), mine)
        })
        .collect()
    });
    match rows.len() {
        0 => None,
        1 => rows.into_iter().next().map(|(j, _)| j),
        _ => {
            let (first, mine) = rows.into_iter().next().expect("two rows");
            if mine {
                Some(first)
            } else {
                raise(
                    PgSqlErrorCode::ERRCODE_AMBIGUOUS_PARAMETER,
                    format!("several roles own a job named \"{name}\""),
                    "SET ROLE to the job's owner and repeat the call; SELECT job_name, owner FROM pulse.jobs shows the owners.",
                )
            }
        }
    }
}

fn must_find_job(name: &str) -> Job {
    find_job(name).unwrap_or_else(|| {
        raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("job \"{name}\" does not exist"),
            JOB_HINT,
        )
    })
}

/// The next run instant of a recurring schedule from now, as stored in `next_run_at`.
fn next_from_now(sched: &Schedule, tz: chrono_tz::Tz) -> Option<TimestampWithTimeZone> {
    sched.next_after(tz, Utc::now()).map(to_pg_ts)
}

/// A job's retries: attempts per run (1 = no retry) and the first backoff (doubling, with jitter,
/// at most an hour).
struct Retries {
    max_attempts: Option<i32>,
    backoff: Option<Interval>,
}

const RETRY_HINT: &str =
    "Use max_attempts => 3 (1 to 100; 1 means no retries) and retry_backoff => '10 seconds'.";

impl Retries {
    fn new(max_attempts: Option<i32>, backoff: Option<Interval>) -> Retries {
        if let Some(n) = max_attempts.filter(|n| !(1..=100).contains(n)) {
            invalid(
                format!("max_attempts must be between 1 and 100, not {n}"),
                RETRY_HINT,
            );
        }
        if backoff.is_some_and(|b| interval_micros(&b) <= 0) {
            invalid("retry_backoff must be a positive interval", RETRY_HINT);
        }
        Retries {
            max_attempts,
            backoff,
        }
    }

    /// Like `Alerts::apply`: `full` resets what is not given to the defaults (1, 10 seconds).
    fn apply(&self, job_id: i64, full: bool) {
        let max = self.max_attempts.or(full.then_some(1));
        let backoff = self
            .backoff
            .or_else(|| full.then(|| Interval::new(0, 0, 10_000_000).expect("10 s")));
        if max.is_none() && backoff.is_none() {
            return;
        }
        Spi::run_with_args(
            "UPDATE pulse.job SET max_attempts = coalesce($2, max_attempts),
                    retry_backoff = coalesce($3, retry_backoff), updated_at = now()
              WHERE job_id = $1
                AND (coalesce($2, max_attempts) IS DISTINCT FROM max_attempts
                     OR coalesce($3, retry_backoff) IS DISTINCT FROM retry_backoff)",
            &[job_id.into(), max.into(), backoff.into()],
        )
        .unwrap_or_else(|e| invalid(format!("could not store retry settings: {e}"), ""));
    }
}

/// A job's alerting: consecutive failures that open an incident, and where alerts go.
struct Alerts {
    after: Option<i32>,
    /// `None`: not given; `Some(None)`: the default target (JSON null); `Some(Some(t))`: a target
    /// (`{}` means no alerts).
    target: Option<Option<String>>,
}

const ALERT_HINT: &str = "Use alert => '{\"notify\": \"pulse_alerts\"}' (a NOTIFY channel), jsonb_build_object('webhook', pulse.http_request('POST', 'https://hooks.slack.com/services/{{secret:slack_path}}')), '{}' for no alerts, or 'null' for the default target (pulse.alert_target).";

impl Alerts {
    fn new(after: Option<i32>, alert: Option<pgrx::JsonB>) -> Alerts {
        if let Some(n) = after.filter(|n| *n <= 0) {
            invalid(
                format!("alert_after_failures must be positive, not {n}"),
                "Alert after this many consecutive failures, e.g. alert_after_failures => 3.",
            );
        }
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
                        let ok = val
                            .as_str()
                            .is_some_and(|c| !c.is_empty() && c.len() <= 63);
                        if !ok {
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
            Some(serde_json::Value::Object(out).to_string())
        });
        Alerts { after, target }
    }

    /// Stores the settings; `full` (schedule_job, schedule_once) sets both fields from the call,
    /// otherwise (alter_job) only those given. Writes nothing when nothing changes.
    fn apply(&self, job_id: i64, full: bool) {
        let (set_after, set_target) = (full || self.after.is_some(), full || self.target.is_some());
        if !set_after && !set_target {
            return;
        }
        let target = self.target.clone().flatten();
        Spi::run_with_args(
            "UPDATE pulse.job SET
                    alert_after_failures = CASE WHEN $2 THEN $3 ELSE alert_after_failures END,
                    alert = CASE WHEN $4 THEN $5::jsonb ELSE alert END,
                    updated_at = now()
              WHERE job_id = $1
                AND (CASE WHEN $2 THEN $3 ELSE alert_after_failures END IS DISTINCT FROM alert_after_failures
                     OR CASE WHEN $4 THEN $5::jsonb ELSE alert END IS DISTINCT FROM alert)",
            &[
                job_id.into(),
                set_after.into(),
                self.after.into(),
                set_target.into(),
                target.into(),
            ],
        )
        .unwrap_or_else(|e| invalid(format!("could not store alert settings: {e}"), ""));
    }

    fn reset_threshold(job_id: i64) {
        let _ = Spi::run_with_args(
            "UPDATE pulse.job SET alert_after_failures = NULL WHERE job_id = $1 AND alert_after_failures IS NOT NULL",
            &[job_id.into()],
        );
    }
}

fn wake() {
    crate::worker::wake_scheduler_at_commit();
}

/// What a job does: run SQL (`command`) or send an HTTP request (`http`), exactly one of them.
enum Action {
    Command(String),
    /// The normalized request, as jsonb text.
    Http(String),
}

const ACTION_HINT: &str = "Pass command => 'SELECT ...' for a SQL job, or http => pulse.http_request('POST', 'https://...') for an HTTP job.";

impl Action {
    fn new(command: Option<&str>, http: Option<pgrx::JsonB>) -> Action {
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

    fn command(&self) -> Option<&str> {
        match self {
            Action::Command(c) => Some(c),
            Action::Http(_) => None,
        }
    }

    /// Compared with the stored `http::text`: both are jsonb's canonical text.
    fn http(&self) -> Option<String> {
        match self {
            Action::Http(h) => Some(
                Spi::get_one_with_args::<String>("SELECT $1::jsonb::text", &[h.as_str().into()])
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| h.clone()),
            ),
            Action::Command(_) => None,
        }
    }
}

/// Everything a job definition holds; `None` in `schedule` means a one-shot at `run_at`.
struct Def<'a> {
    name: &'a str,
    schedule: Option<(&'a str, Schedule)>,
    run_at: Option<TimestampWithTimeZone>,
    tz: chrono_tz::Tz,
    action: &'a Action,
    enabled: bool,
    timeout: Option<Interval>,
    overlap: &'a str,
    comment: Option<&'a str>,
    /// The `database =>` argument, as given.
    database: Option<&'a str>,
}

/// Creates the job, or brings the caller's job of that name to this definition (same id, history
/// kept). Writes nothing when the job already matches.
fn upsert(def: Def) -> i64 {
    pgutil::require_scheduler_database();
    privileged(|| {
        let me = pgutil::current_user_oid_outer();
        require_login(me);
        let database = resolve_database(def.database, me);
        if let Some(job) = find_job_owned(def.name) {
            let schedule_text = def.schedule.as_ref().map(|(t, _)| t.to_string());
            let timing_changed = job.schedule != schedule_text
                || job.timezone != def.tz.name()
                || job.run_at.map(from_pg_ts) != def.run_at.map(from_pg_ts);
            let same = !timing_changed
                && job.command.as_deref() == def.action.command()
                && job.http == def.action.http()
                && job.enabled == def.enabled
                && job.timeout.map(|i| interval_micros(&i))
                    == def.timeout.map(|i| interval_micros(&i))
                && job.overlap == def.overlap
                && job.comment.as_deref() == def.comment
                && job.database == database;
            if same {
                return job.job_id;
            }
            let next = if !def.enabled {
                None
            } else if timing_changed || !job.enabled {
                initial_next(&def)
            } else {
                job.next_run_at
            };
            Spi::run_with_args(
                "UPDATE pulse.job SET schedule = $2, run_at = $3, timezone = $4, command = $5, enabled = $6,
                        timeout = $7, overlap = $8, comment = $9, next_run_at = $10, http = $11::jsonb,
                        database = $12, updated_at = now()
                  WHERE job_id = $1",
                &[
                    job.job_id.into(),
                    schedule_text.into(),
                    def.run_at.into(),
                    def.tz.name().into(),
                    def.action.command().into(),
                    def.enabled.into(),
                    def.timeout.into(),
                    def.overlap.into(),
                    def.comment.into(),
                    next.into(),
                    def.action.http().into(),
                    database.clone().into(),
                ],
            )
            .unwrap_or_else(|e| invalid(format!("could not update job: {e}"), ""));
            if !def.enabled {
                cancel_queued(job.job_id, "the job was paused");
            }
            wake();
            job.job_id
        } else {
            let next = if def.enabled {
                initial_next(&def)
            } else {
                None
            };
            let id = Spi::get_one_with_args::<i64>(
                // with its (empty) statistics row: the first outcome then only updates it
                "WITH j AS (
                   INSERT INTO pulse.job (job_name, owner, schedule, run_at, timezone, command, enabled, timeout,
                                          overlap, comment, next_run_at, http, database)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, $13)
                   RETURNING job_id, owner),
                 s AS (INSERT INTO pulse.job_stats (job_id, owner) SELECT job_id, owner::oid FROM j)
                 SELECT job_id FROM j",
                &[
                    def.name.into(),
                    me.into(),
                    def.schedule.as_ref().map(|(t, _)| t.to_string()).into(),
                    def.run_at.into(),
                    def.tz.name().into(),
                    def.action.command().into(),
                    def.enabled.into(),
                    def.timeout.into(),
                    def.overlap.into(),
                    def.comment.into(),
                    next.into(),
                    def.action.http().into(),
                    database.into(),
                ],
            )
            .unwrap_or_else(|e| invalid(format!("could not create job: {e}"), ""))
            .unwrap_or_default();
            wake();
            id
        }
    })
}

fn initial_next(def: &Def) -> Option<TimestampWithTimeZone> {
    match &def.schedule {
        Some((_, s)) => next_from_now(s, def.tz),
        None => def.run_at,
    }
}

/// The caller's own job of that name (schedule_job and schedule_once never touch another role's job).
fn find_job_owned(name: &str) -> Option<Job> {
    let q = format!(
        "SELECT {JOB_COLUMNS} FROM pulse.job WHERE job_name = $1 AND owner::oid = $2 FOR UPDATE"
    );
    Spi::connect(|c| {
        let t = c
            .select(
                &q,
                None,
                &[name.into(), pgutil::current_user_oid_outer().into()],
            )
            .unwrap_or_else(|e| invalid(format!("pg_pulse catalog read failed: {e}"), ""));
        t.map(|row| job_from_row(&row)).next()
    })
}

fn cancel_queued(job_id: i64, why: &str) {
    Spi::run_with_args(
        "UPDATE pulse.job_run SET status = 'cancelled', finished_at = clock_timestamp(), message = $2
          WHERE job_id = $1 AND status = 'queued'",
        &[job_id.into(), why.into()],
    )
    .unwrap_or_else(|e| invalid(format!("could not cancel queued runs: {e}"), ""));
}

/// Creates or updates a recurring job and returns its id.
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::too_many_arguments)]
fn schedule_job(
    job_name: Option<&str>,
    schedule: Option<&str>,
    command: default!(Option<&str>, "NULL"),
    timezone: default!(Option<&str>, "NULL"),
    enabled: default!(Option<bool>, true),
    timeout: default!(Option<Interval>, "NULL"),
    overlap: default!(Option<&str>, "'skip'"),
    comment: default!(Option<&str>, "NULL"),
    alert_after_failures: default!(Option<i32>, "NULL"),
    alert: default!(Option<pgrx::JsonB>, "NULL"),
    max_attempts: default!(Option<i32>, "NULL"),
    retry_backoff: default!(Option<Interval>, "NULL"),
    http: default!(Option<pgrx::JsonB>, "NULL"),
    database: default!(Option<&str>, "NULL"),
) -> i64 {
    let name = required(job_name, "job_name");
    let schedule_text = required(schedule, "schedule");
    let alerts = Alerts::new(alert_after_failures, alert);
    let retries = Retries::new(max_attempts, retry_backoff);
    let action = Action::new(command, http);
    check_name(name);
    let tz = resolve_timezone(timezone);
    let sched = parse_schedule(schedule_text, tz);
    check_timeout(&timeout);
    let overlap = overlap.unwrap_or("skip");
    check_overlap(overlap);
    let id = upsert(Def {
        name,
        schedule: Some((schedule_text.trim(), sched)),
        run_at: None,
        tz,
        action: &action,
        enabled: enabled.unwrap_or(true),
        timeout,
        overlap,
        comment,
        database,
    });
    privileged(|| {
        alerts.apply(id, true);
        retries.apply(id, true);
    });
    id
}

/// Creates or updates a one-shot job that runs once at `run_at` (at once if that has passed).
#[pg_extern(volatile, parallel_unsafe)]
fn schedule_once(
    job_name: Option<&str>,
    run_at: Option<TimestampWithTimeZone>,
    command: default!(Option<&str>, "NULL"),
    enabled: default!(Option<bool>, true),
    timeout: default!(Option<Interval>, "NULL"),
    comment: default!(Option<&str>, "NULL"),
    alert_after_failures: default!(Option<i32>, "NULL"),
    alert: default!(Option<pgrx::JsonB>, "NULL"),
    max_attempts: default!(Option<i32>, "NULL"),
    retry_backoff: default!(Option<Interval>, "NULL"),
    http: default!(Option<pgrx::JsonB>, "NULL"),
    database: default!(Option<&str>, "NULL"),
) -> i64 {
    let name = required(job_name, "job_name");
    let run_at = required(run_at, "run_at");
    let alerts = Alerts::new(alert_after_failures, alert);
    let retries = Retries::new(max_attempts, retry_backoff);
    let action = Action::new(command, http);
    check_name(name);
    check_run_at(run_at);
    check_timeout(&timeout);
    let id = upsert(Def {
        name,
        schedule: None,
        run_at: Some(run_at),
        tz: resolve_timezone(None),
        action: &action,
        enabled: enabled.unwrap_or(true),
        timeout,
        overlap: "skip",
        comment,
        database,
    });
    privileged(|| {
        alerts.apply(id, true);
        retries.apply(id, true);
    });
    id
}

/// Removes a job (its run history stays in pulse.job_runs). False if there was no such job.
#[pg_extern(volatile, parallel_unsafe)]
fn unschedule_job(job_name: Option<&str>) -> bool {
    let name = required(job_name, "job_name");
    pgutil::require_scheduler_database();
    privileged(|| match find_job(name) {
        None => {
            pgrx::notice!("job \"{name}\" does not exist, skipping");
            false
        }
        Some(job) => {
            cancel_queued(job.job_id, "the job was unscheduled");
            Spi::run_with_args(
                "DELETE FROM pulse.job WHERE job_id = $1",
                &[job.job_id.into()],
            )
            .unwrap_or_else(|e| invalid(format!("could not delete job: {e}"), ""));
            wake();
            true
        }
    })
}

/// Pauses (false) or resumes (true) a job, keeping its definition and history. Returns the new state.
#[pg_extern(volatile, parallel_unsafe)]
fn toggle_job(job_name: Option<&str>, enabled: Option<bool>) -> bool {
    let name = required(job_name, "job_name");
    let enabled = required(enabled, "enabled");
    pgutil::require_scheduler_database();
    privileged(|| {
        let job = must_find_job(name);
        if job.enabled == enabled {
            return enabled;
        }
        let next = if enabled { next_for_job(&job) } else { None };
        Spi::run_with_args(
            "UPDATE pulse.job SET enabled = $2, next_run_at = $3, updated_at = now() WHERE job_id = $1",
            &[job.job_id.into(), enabled.into(), next.into()],
        )
        .unwrap_or_else(|e| invalid(format!("could not update job: {e}"), ""));
        if !enabled {
            cancel_queued(job.job_id, "the job was paused");
        }
        wake();
        enabled
    })
}

/// next_run_at of a stored job when it is (re)enabled: the next slot from now, or a one-shot's instant
/// if it has not run yet.
fn next_for_job(job: &Job) -> Option<TimestampWithTimeZone> {
    match &job.schedule {
        Some(text) => {
            let tz = schedule::parse_timezone(&job.timezone).unwrap_or(chrono_tz::Tz::UTC);
            Schedule::parse(text)
                .ok()
                .and_then(|s| next_from_now(&s, tz))
        }
        None => {
            let ran = Spi::get_one_with_args::<bool>(
                "SELECT EXISTS (SELECT 1 FROM pulse.job_run WHERE job_id = $1 AND trigger = 'schedule' AND status <> 'cancelled')",
                &[job.job_id.into()],
            )
            .ok()
            .flatten()
            .unwrap_or(false);
            if ran {
                None
            } else {
                job.run_at
            }
        }
    }
}

/// Changes any field of a job; NULL arguments leave a field as it is. Returns the job id.
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::too_many_arguments)]
fn alter_job(
    job_name: Option<&str>,
    schedule: default!(Option<&str>, "NULL"),
    command: default!(Option<&str>, "NULL"),
    timezone: default!(Option<&str>, "NULL"),
    enabled: default!(Option<bool>, "NULL"),
    timeout: default!(Option<Interval>, "NULL"),
    overlap: default!(Option<&str>, "NULL"),
    comment: default!(Option<&str>, "NULL"),
    new_name: default!(Option<&str>, "NULL"),
    run_at: default!(Option<TimestampWithTimeZone>, "NULL"),
    alert_after_failures: default!(Option<i32>, "NULL"),
    alert: default!(Option<pgrx::JsonB>, "NULL"),
    max_attempts: default!(Option<i32>, "NULL"),
    retry_backoff: default!(Option<Interval>, "NULL"),
    http: default!(Option<pgrx::JsonB>, "NULL"),
    database: default!(Option<&str>, "NULL"),
) -> i64 {
    let name = required(job_name, "job_name");
    pgutil::require_scheduler_database();
    // a new command makes it a SQL job, a new request an HTTP job
    let action = (command.is_some() || http.is_some()).then(|| Action::new(command, http));
    let alerts = Alerts::new(alert_after_failures.filter(|n| *n != 0), alert);
    let retries = Retries::new(max_attempts, retry_backoff);
    let reset_threshold = alert_after_failures == Some(0);
    if schedule.is_some() && run_at.is_some() {
        invalid(
            "pass either schedule or run_at, not both",
            "A job is either recurring (schedule) or one-shot (run_at).",
        );
    }
    if let Some(o) = overlap {
        check_overlap(o);
    }
    if let Some(r) = run_at {
        check_run_at(r);
    }
    if let Some(n) = new_name {
        check_name(n);
    }
    // timeout => '0' removes the timeout; a negative one is an error
    let timeout_change: Option<Option<Interval>> = timeout.map(|i| {
        let us = interval_micros(&i);
        if us < 0 {
            invalid(
                format!("invalid timeout \"{i}\": it must not be negative"),
                "Pass timeout => '5 minutes', or '0' to remove the timeout.",
            );
        }
        if us == 0 {
            None
        } else {
            Some(i)
        }
    });
    privileged(|| {
        let job = must_find_job(name);
        // '' (like NULL in schedule_job) means the database pg_pulse lives in
        let new_database = match database {
            None => job.database.clone(),
            Some(d) => resolve_database(Some(d), job.owner),
        };
        let tz = match timezone {
            Some(t) => resolve_timezone(Some(t)),
            None => schedule::parse_timezone(&job.timezone).unwrap_or(chrono_tz::Tz::UTC),
        };
        let new_schedule: Option<String> = match (schedule, run_at) {
            (Some(s), _) => {
                parse_schedule(s, tz);
                Some(s.trim().to_string())
            }
            (None, Some(_)) => None,
            (None, None) => {
                if let Some(s) = &job.schedule {
                    parse_schedule(s, tz);
                }
                job.schedule.clone()
            }
        };
        let new_run_at = match (schedule, run_at) {
            (Some(_), _) => None,
            (None, Some(r)) => Some(r),
            (None, None) => job.run_at,
        };
        let enabled_now = enabled.unwrap_or(job.enabled);
        let timing_changed = new_schedule != job.schedule
            || tz.name() != job.timezone
            || new_run_at.map(from_pg_ts) != job.run_at.map(from_pg_ts);
        let next = if !enabled_now {
            None
        } else if timing_changed {
            match &new_schedule {
                Some(s) => Schedule::parse(s)
                    .ok()
                    .and_then(|sc| next_from_now(&sc, tz)),
                None => new_run_at,
            }
        } else if !job.enabled {
            next_for_job(&job)
        } else {
            job.next_run_at
        };
        let new_timeout = match timeout_change {
            Some(t) => t,
            None => job.timeout,
        };
        let new_comment: Option<String> = match comment {
            Some("") => None,
            Some(c) => Some(c.to_string()),
            None => job.comment.clone(),
        };
        let (new_command, new_http) = match &action {
            Some(a) => (a.command().map(str::to_string), a.http()),
            None => (job.command.clone(), job.http.clone()),
        };
        let r = Spi::run_with_args(
            "UPDATE pulse.job SET job_name = coalesce($2, job_name), schedule = $3, run_at = $4, timezone = $5,
                    command = $6, enabled = $7, timeout = $8, overlap = $9, comment = $10, next_run_at = $11,
                    http = $12::jsonb, database = $13, updated_at = now()
              WHERE job_id = $1",
            &[
                job.job_id.into(),
                new_name.into(),
                new_schedule.into(),
                new_run_at.into(),
                tz.name().into(),
                new_command.into(),
                enabled_now.into(),
                new_timeout.into(),
                overlap.unwrap_or(&job.overlap).into(),
                new_comment.into(),
                next.into(),
                new_http.into(),
                new_database.into(),
            ],
        );
        if let Err(e) = r {
            if new_name.is_some() {
                raise(
                    PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT,
                    format!(
                        "could not rename job \"{name}\" to \"{}\": {e}",
                        new_name.unwrap_or_default()
                    ),
                    "You already own a job with that name; pick another new_name.",
                );
            }
            invalid(format!("could not update job: {e}"), "");
        }
        if !enabled_now {
            cancel_queued(job.job_id, "the job was paused");
        }
        wake();
        if reset_threshold {
            Alerts::reset_threshold(job.job_id);
        }
        alerts.apply(job.job_id, false);
        retries.apply(job.job_id, false);
        job.job_id
    })
}

/// Runs a job now, out of schedule (paused jobs too). Returns the id of the queued run.
#[pg_extern(volatile, parallel_unsafe)]
fn run_job(job_name: Option<&str>) -> i64 {
    let name = required(job_name, "job_name");
    pgutil::require_scheduler_database();
    privileged(|| {
        let job = must_find_job(name);
        let id = Spi::get_one_with_args::<i64>(
            "INSERT INTO pulse.job_run (job_id, job_name, owner, scheduled_for, status, trigger, kind, database)
             SELECT job_id, job_name, owner::oid, clock_timestamp(), 'queued', 'manual',
                    CASE WHEN http IS NULL THEN 'sql' ELSE 'http' END, database
               FROM pulse.job WHERE job_id = $1
             RETURNING run_id",
            &[job.job_id.into()],
        )
        .unwrap_or_else(|e| invalid(format!("could not queue run: {e}"), ""))
        .unwrap_or_default();
        wake();
        id
    })
}

/// Cancels a queued run, or asks a running one to stop. True if the run was queued or running.
#[pg_extern(volatile, parallel_unsafe)]
fn cancel_run(run_id: Option<i64>) -> bool {
    let run_id = required(run_id, "run_id");
    pgutil::require_scheduler_database();
    privileged(|| {
        let me = pgutil::current_user_oid_outer();
        let sup = pgutil::outer_is_superuser();
        // A queued run is cancelled in place (the scheduler skips a row being changed). A running
        // one is only signalled: the run row is never locked here, since the scheduler records
        // the outcome of every role's runs and must not wait for a caller's open transaction.
        let cancelled = Spi::connect_mut(|c| {
            c.update(
                "UPDATE pulse.job_run SET status = 'cancelled', finished_at = clock_timestamp(),
                        message = 'cancelled by pulse.cancel_run'
                  WHERE run_id = $1 AND (owner = $2 OR $3) AND status = 'queued' RETURNING 1",
                None,
                &[run_id.into(), me.into(), sup.into()],
            )
            .map(|t| t.len() > 0)
        })
        .unwrap_or_else(|e| invalid(format!("could not cancel run: {e}"), ""));
        if cancelled {
            return true;
        }
        let row = Spi::connect(|c| {
            c.select(
                "SELECT status, executor_pid, kind FROM pulse.job_run WHERE run_id = $1 AND (owner = $2 OR $3)",
                None,
                &[run_id.into(), me.into(), sup.into()],
            )
            .ok()
            .and_then(|t| t.first().get_three::<String, i32, String>().ok())
        });
        let Some((Some(status), pid, kind)) = row else {
            raise(
                PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                format!("run {run_id} does not exist"),
                "See your runs with SELECT run_id, job_name, status FROM pulse.job_runs ORDER BY run_id DESC;",
            )
        };
        match status.as_str() {
            "running" if kind.as_deref() == Some("http") => {
                pgrx::notice!("run {run_id} is an HTTP request in flight: it can't be stopped, its result will be recorded");
                false
            }
            "running" => {
                crate::worker::cancel_executor_run(pid.unwrap_or(0), run_id);
                true
            }
            _ => false,
        }
    })
}

/// The next `count` run instants of a schedule strictly after `after`: preview and validator.
#[pg_extern(stable, parallel_safe)]
fn next_runs(
    schedule: Option<&str>,
    timezone: default!(Option<&str>, "NULL"),
    count: default!(Option<i32>, 5),
    after: default!(Option<TimestampWithTimeZone>, "now()"),
) -> SetOfIterator<'static, TimestampWithTimeZone> {
    let text = required(schedule, "schedule");
    let tz = resolve_timezone(timezone);
    let count = count.unwrap_or(5);
    if !(1..=10_000).contains(&count) {
        invalid(
            format!("invalid count {count}: it must be between 1 and 10000"),
            "Pass count => 10, for example.",
        );
    }
    let sched =
        Schedule::parse(text).unwrap_or_else(|e| invalid(e.to_string(), schedule::SCHEDULE_HINT));
    let after = match after {
        Some(a) if a.is_finite() => from_pg_ts(a),
        Some(_) => invalid(
            "after must be a finite timestamp",
            "Pass after => now(), for example.",
        ),
        None => Utc::now(),
    };
    let runs: Vec<TimestampWithTimeZone> = sched
        .next_runs(tz, after, count as usize)
        .into_iter()
        .map(to_pg_ts)
        .collect();
    SetOfIterator::new(runs)
}

/// The run this session is executing (inside a job's command); no row outside a job.
#[pg_extern(stable, parallel_restricted)]
fn current_run() -> TableIterator<
    'static,
    (
        name!(run_id, i64),
        name!(job_id, i64),
        name!(job_name, String),
        name!(scheduled_for, TimestampWithTimeZone),
        name!(attempt, i32),
        name!(trigger, String),
    ),
> {
    let rows = crate::worker::current_run()
        .map(|r| {
            (
                r.run_id,
                r.job_id,
                r.job_name,
                r.scheduled_for,
                r.attempt,
                r.trigger,
            )
        })
        .into_iter()
        .collect::<Vec<_>>();
    TableIterator::new(rows)
}

/// Internal: wakes the scheduler when the calling transaction commits (used by CREATE EXTENSION).
#[pg_extern(volatile, parallel_unsafe)]
fn _wake_scheduler() {
    wake();
    crate::worker::wake_http_at_commit();
}
