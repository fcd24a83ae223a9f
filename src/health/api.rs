//! The SQL side of health: statistics kept by the executors, alerts, retention, and the
//! `pulse.scheduler_health()` / `pulse.scheduler_status()` functions.

use super::{
    classify, notify_payload, valid_channel, verdict, AlertEvent, Facts, Health, Stats, StatusFacts,
    StatusLimits,
};
use crate::pgutil::{for_each_row, from_pg_ts, to_pg_ts};
use crate::worker::xact;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

fn epoch(t: TimestampWithTimeZone) -> i64 {
    from_pg_ts(t).timestamp()
}

fn now_s() -> i64 {
    chrono::Utc::now().timestamp()
}

fn interval_ms(ms: f64) -> Option<Interval> {
    Interval::new(0, 0, (ms * 1000.0) as i64).ok()
}

/// What the executor knows about a finished run.
pub struct Outcome<'a> {
    pub job_id: i64,
    pub run_id: i64,
    pub status: &'a str,
    pub message: Option<&'a str>,
    pub started_at: TimestampWithTimeZone,
    pub duration_ms: f64,
    /// When the run ended, if it is known better than "now" (an executor's report).
    pub finished_at: Option<TimestampWithTimeZone>,
}

/// Called inside the transaction that records a run's outcome: updates the job's rolling
/// statistics and last run, sends an alert when an incident starts or recovers, and (with
/// pulse.log_runs) drops the run row. Cancelled runs only update the last run. The statistics row
/// is locked NOWAIT: the workers record every role's outcomes and never wait for a caller's open
/// transaction (the caller of `finish_run` runs this in a subtransaction).
pub fn record_outcome(o: &Outcome) {
    let failed = matches!(o.status, "failed" | "timed_out");
    let counted = o.status != "cancelled";
    Spi::connect_mut(|c| {
        let read = |c: &mut pgrx::spi::SpiClient<'_>| {
            xact::with_plan(
            c,
            "SELECT s.hour_base, s.runs, s.failures, s.dur_ms, s.recent_at, s.recent_ms,
                    s.consecutive_failures, s.incident_open,
                    coalesce(j.alert_after_failures, $2), coalesce(j.alert::text, $3), j.job_name, j.owner::oid
               FROM pulse.job_stats s JOIN pulse.job j ON j.job_id = s.job_id
              WHERE s.job_id = $1 FOR UPDATE OF s NOWAIT",
            &[
                PgOid::BuiltIn(PgBuiltInOids::INT8OID),
                PgOid::BuiltIn(PgBuiltInOids::INT4OID),
                PgOid::BuiltIn(PgBuiltInOids::TEXTOID),
            ],
            |c, stmt| {
                c.update(
                    stmt,
                    None,
                    &[
                        o.job_id.into(),
                        crate::ALERT_AFTER_FAILURES.get().into(),
                        alert_target_default().into(),
                    ],
                )
                .ok()
                .and_then(|t| {
                    t.into_iter().next().map(|r| {
                        let stats = Stats {
                            hour_base: r.get::<i64>(1).ok().flatten().unwrap_or(0),
                            runs: r.get::<Vec<i32>>(2).ok().flatten().unwrap_or_default(),
                            failures: r.get::<Vec<i32>>(3).ok().flatten().unwrap_or_default(),
                            dur_ms: r.get::<Vec<f64>>(4).ok().flatten().unwrap_or_default(),
                            recent: r
                                .get::<Vec<i64>>(5)
                                .ok()
                                .flatten()
                                .unwrap_or_default()
                                .into_iter()
                                .zip(r.get::<Vec<f64>>(6).ok().flatten().unwrap_or_default())
                                .collect(),
                            consecutive_failures: r.get::<i32>(7).ok().flatten().unwrap_or(0),
                            incident_open: r.get::<bool>(8).ok().flatten().unwrap_or(false),
                        };
                        (
                            stats,
                            r.get::<i32>(9).ok().flatten().unwrap_or(3),
                            r.get::<String>(10).ok().flatten(),
                            r.get::<String>(11).ok().flatten().unwrap_or_default(),
                            r.get::<pg_sys::Oid>(12).ok().flatten(),
                        )
                    })
                })
            },
        )
        .ok()
        .flatten()
        };
        let mut row = read(c);
        if row.is_none() {
            // the job's first finished run: create its statistics row, then read it
            let _ = xact::with_plan(
                c,
                "INSERT INTO pulse.job_stats (job_id, owner)
                 SELECT j.job_id, j.owner::oid FROM pulse.job j WHERE j.job_id = $1
                 ON CONFLICT (job_id) DO NOTHING",
                &[PgOid::BuiltIn(PgBuiltInOids::INT8OID)],
                |c, stmt| c.update(stmt, None, &[o.job_id.into()]).map(|_| ()),
            );
            row = read(c);
        }
        // the job was removed meanwhile: nothing to keep statistics for
        let Some((mut stats, threshold, target, job_name, owner)) = row else {
            return;
        };
        let event = if counted {
            stats.record(now_s(), failed, o.duration_ms, threshold)
        } else {
            AlertEvent::None
        };
        let (recent_at, recent_ms): (Vec<i64>, Vec<f64>) = stats.recent.iter().copied().unzip();
        let _ = xact::with_plan(
            c,
            "UPDATE pulse.job_stats SET hour_base = $2, runs = $3, failures = $4, dur_ms = $5,
                    recent_at = $6, recent_ms = $7, consecutive_failures = $8, incident_open = $9,
                    overdue_alerted = false, last_run_id = $10, last_run_at = $11, last_status = $12,
                    last_message = $13, p95_ms = $14
              WHERE job_id = $1",
            &[
                PgOid::BuiltIn(PgBuiltInOids::INT8OID),
                PgOid::BuiltIn(PgBuiltInOids::INT8OID),
                PgOid::BuiltIn(PgBuiltInOids::INT4ARRAYOID),
                PgOid::BuiltIn(PgBuiltInOids::INT4ARRAYOID),
                PgOid::BuiltIn(PgBuiltInOids::FLOAT8ARRAYOID),
                PgOid::BuiltIn(PgBuiltInOids::INT8ARRAYOID),
                PgOid::BuiltIn(PgBuiltInOids::FLOAT8ARRAYOID),
                PgOid::BuiltIn(PgBuiltInOids::INT4OID),
                PgOid::BuiltIn(PgBuiltInOids::BOOLOID),
                PgOid::BuiltIn(PgBuiltInOids::INT8OID),
                PgOid::BuiltIn(PgBuiltInOids::TIMESTAMPTZOID),
                PgOid::BuiltIn(PgBuiltInOids::TEXTOID),
                PgOid::BuiltIn(PgBuiltInOids::TEXTOID),
                PgOid::BuiltIn(PgBuiltInOids::FLOAT8OID),
            ],
            |c, stmt| {
                c.update(
                    stmt,
                    None,
                    &[
                        o.job_id.into(),
                        stats.hour_base.into(),
                        stats.runs.clone().into(),
                        stats.failures.clone().into(),
                        stats.dur_ms.clone().into(),
                        recent_at.into(),
                        recent_ms.into(),
                        stats.consecutive_failures.into(),
                        stats.incident_open.into(),
                        o.run_id.into(),
                        o.started_at.into(),
                        o.status.into(),
                        o.message.into(),
                        stats.window(now_s()).p95_ms.into(),
                    ],
                )
            },
        );
        let event_name = match event {
            AlertEvent::IncidentStarted => Some("incident"),
            AlertEvent::Recovered => Some("recovered"),
            AlertEvent::None => None,
        };
        if let (Some(event), Some(target)) = (event_name, target) {
            let w = stats.window(now_s());
            send_alert(
                c,
                &target,
                &Alert {
                    event,
                    job_name: &job_name,
                    job_id: o.job_id,
                    owner,
                    run_id: Some(o.run_id),
                    status: Some(o.status),
                    message: o.message,
                    consecutive_failures: stats.consecutive_failures,
                    runs_24h: w.runs,
                    failures_24h: w.failures,
                },
            );
        }
        // pulse.log_runs: keep only the rows asked for (statistics above keep the rest)
        let keep = match crate::LOG_RUNS.get() {
            crate::LogRuns::All => true,
            crate::LogRuns::Failures => failed,
            crate::LogRuns::None => false,
        };
        if !keep {
            let _ = c.update(
                "DELETE FROM pulse.job_run WHERE run_id = $1",
                None,
                &[o.run_id.into()],
            );
        }
    });
}

fn alert_target_default() -> Option<String> {
    crate::ALERT_TARGET
        .get()
        .map(|c| c.to_string_lossy().into_owned())
        .filter(|s| !s.trim().is_empty())
}

pub struct Alert<'a> {
    pub event: &'a str,
    pub job_name: &'a str,
    pub job_id: i64,
    pub owner: Option<pg_sys::Oid>,
    pub run_id: Option<i64>,
    pub status: Option<&'a str>,
    pub message: Option<&'a str>,
    pub consecutive_failures: i32,
    pub runs_24h: i64,
    pub failures_24h: i64,
}

/// Sends an alert to a target (`{"notify": "channel", "webhook": request}`), at commit of the
/// current transaction. The alert is a row in `pulse.alert` (readable by the job's owner only);
/// its NOTIFY payload is just `{"alert_id": N}`, because any role may LISTEN on any channel (and
/// pg_notify on it): the details are read from `pulse.alerts`, and an id not found there was not
/// sent by pg_pulse. A webhook goes to the owner's own endpoint and carries the text.
/// Problems are reported in the server log, never raised (the run's outcome must be kept).
pub fn send_alert(c: &mut SpiClient<'_>, target: &str, a: &Alert) {
    let t = match serde_json::from_str::<serde_json::Value>(target) {
        Ok(t) => t,
        Err(e) => {
            warning!(
                "pg_pulse: could not send an alert for job \"{}\": invalid alert target {target}: {e}",
                a.job_name
            );
            return;
        }
    };
    let channel = match t.get("notify") {
        None => None,
        Some(serde_json::Value::String(ch)) if valid_channel(ch) => Some(ch.as_str()),
        Some(other) => {
            warning!(
                "pg_pulse: could not send an alert for job \"{}\": \"notify\" must be a channel name, not {other}",
                a.job_name
            );
            None
        }
    };
    let webhook = t.get("webhook").cloned();
    if channel.is_none() && webhook.is_none() {
        return; // '{}': alerts silenced
    }
    if let Some(id) = record_alert(c, a, channel) {
        if let Some(ch) = channel {
            let r = c.update(
                "SELECT pg_catalog.pg_notify($1, $2)",
                None,
                &[ch.into(), notify_payload(id).into()],
            );
            if let Err(e) = r {
                warning!(
                    "pg_pulse: could not notify alert {id} for job \"{}\": {e}",
                    a.job_name
                );
            }
        }
    }
    if let Some(w) = webhook {
        send_webhook(c, w, a);
    }
}

/// Does the alert table exist? (The library may be newer than the extension's SQL.)
fn alert_table_present(c: &mut SpiClient<'_>) -> bool {
    c.select(
        "SELECT pg_catalog.to_regclass('pulse.alert') IS NOT NULL",
        Some(1),
        &[],
    )
    .ok()
    .and_then(|t| t.first().get_one::<bool>().ok().flatten())
    .unwrap_or(false)
}

/// Writes the alert's row in `pulse.alert` (in the current transaction); returns its id.
/// `None` (and a warning) when the table is missing: the extension's SQL is older than this
/// library (run ALTER EXTENSION pg_pulse UPDATE); nothing is notified then, since the details
/// would have nowhere private to go.
fn record_alert(c: &mut SpiClient<'_>, a: &Alert, channel: Option<&str>) -> Option<i64> {
    let owner = a.owner?;
    let present = alert_table_present(c);
    if !present {
        warning!(
            "pg_pulse: alert \"{}\" for job \"{}\" not sent: table pulse.alert is missing (run ALTER EXTENSION pg_pulse UPDATE)",
            a.event,
            a.job_name
        );
        return None;
    }
    let r = c.update(
        "INSERT INTO pulse.alert (job_id, job_name, owner, event, run_id, status, message,
                                  consecutive_failures, runs_24h, failures_24h, channel, database)
         VALUES ($1, $2, $3, $4, $5, $6, left($7, 2000), $8, $9, $10, $11,
                 (SELECT j.database FROM pulse.job j WHERE j.job_id = $1))
         RETURNING alert_id",
        Some(1),
        &[
            a.job_id.into(),
            a.job_name.into(),
            owner.into(),
            a.event.into(),
            a.run_id.into(),
            a.status.into(),
            a.message.into(),
            a.consecutive_failures.into(),
            a.runs_24h.into(),
            a.failures_24h.into(),
            channel.into(),
        ],
    );
    match r.map(|t| t.first().get_one::<i64>()) {
        Ok(Ok(Some(id))) => Some(id),
        Ok(Ok(None)) => None,
        Ok(Err(e)) | Err(e) => {
            warning!(
                "pg_pulse: could not record an alert for job \"{}\": {e}",
                a.job_name
            );
            None
        }
    }
}

/// The text of an alert, for people (Slack's `text`).
pub fn alert_text(a: &Alert) -> String {
    let what = match a.event {
        "incident" => format!(
            ":rotating_light: pg_pulse job \"{}\" is failing ({} consecutive failures, {} of {} runs failed in 24 h)",
            a.job_name, a.consecutive_failures, a.failures_24h, a.runs_24h
        ),
        "recovered" => format!(":white_check_mark: pg_pulse job \"{}\" recovered", a.job_name),
        "overdue" => format!(":warning: pg_pulse job \"{}\" is overdue", a.job_name),
        other => format!("pg_pulse job \"{}\": {other}", a.job_name),
    };
    match (a.status, a.message) {
        (Some(st), Some(m)) => format!(
            "{what}. Last run {st}: {}",
            m.chars().take(500).collect::<String>()
        ),
        (None, Some(m)) => format!("{what}: {m}"),
        _ => what,
    }
}

/// A webhook alert: the target's request (built with pulse.http_request) goes out after commit
/// through pulse.http_request, as the job's owner (its secrets), with up to 3 attempts. Without a
/// body it sends Slack-compatible JSON: {"text": "..."}.
fn send_webhook(c: &mut SpiClient<'_>, mut request: serde_json::Value, a: &Alert) {
    if let Some(o) = request.as_object_mut() {
        let empty = |k: &str| o.get(k).is_none_or(|v| v.is_null());
        if empty("body") && empty("body_text") {
            o.insert("body".into(), serde_json::json!({ "text": alert_text(a) }));
        }
    }
    let Some(owner) = a.owner else { return };
    let r = c.update(
        "INSERT INTO pulse.http_request (owner, request, max_attempts, origin)
         VALUES ($1, $2::jsonb, 3, 'alert')",
        None,
        &[owner.into(), request.to_string().into()],
    );
    match r {
        Ok(_) => crate::worker::wake_http_at_commit(),
        Err(e) => warning!(
            "pg_pulse: could not queue the webhook alert for job \"{}\": {e}",
            a.job_name
        ),
    }
}

/// Scheduler: alert once per job whose due slot passed more than pulse.overdue_after ago without
/// a run starting (the scheduler was down, or no executor was free). Returns how many.
pub fn alert_overdue() -> i64 {
    let overdue = crate::OVERDUE_AFTER.get() as i64;
    Spi::connect_mut(|c| {
        let rows: Vec<(
            i64,
            String,
            Option<pg_sys::Oid>,
            Option<String>,
            Option<TimestampWithTimeZone>,
        )> = c
            .select(
                "WITH queued AS (
                   SELECT job_id, min(scheduled_for) AS slot FROM pulse.job_run
                    WHERE status = 'queued' GROUP BY job_id),
                 late AS (
                   SELECT j.job_id, j.job_name, j.owner::oid AS owner, coalesce(j.alert::text, $2) AS target,
                          least(CASE WHEN j.enabled THEN j.next_run_at END, q.slot) AS slot
                     FROM pulse.job j LEFT JOIN queued q ON q.job_id = j.job_id)
                 SELECT l.job_id, l.job_name, l.owner, l.target, l.slot FROM late l
                   LEFT JOIN pulse.job_stats s ON s.job_id = l.job_id
                  WHERE l.slot < now() - $1 * interval '1 second'
                    AND NOT coalesce(s.overdue_alerted, false)",
                None,
                &[overdue.into(), alert_target_default().into()],
            )
            .map(|t| {
                t.map(|r| {
                    (
                        r.get::<i64>(1).ok().flatten().unwrap_or(0),
                        r.get::<String>(2).ok().flatten().unwrap_or_default(),
                        r.get::<pg_sys::Oid>(3).ok().flatten(),
                        r.get::<String>(4).ok().flatten(),
                        r.get::<TimestampWithTimeZone>(5).ok().flatten(),
                    )
                })
                .collect()
            })
            .unwrap_or_default();
        for (job_id, name, owner, target, slot) in &rows {
            let _ = c.update(
                "INSERT INTO pulse.job_stats (job_id, owner, overdue_alerted) VALUES ($1, $2, true)
                 ON CONFLICT (job_id) DO UPDATE SET overdue_alerted = true",
                None,
                &[(*job_id).into(), (*owner).into()],
            );
            log!(
                "pg_pulse: job \"{name}\" is overdue: its slot at {} has not run",
                slot.map(|s| from_pg_ts(s).to_rfc3339()).unwrap_or_default()
            );
            if let Some(target) = target {
                let msg = slot.map(|s| {
                    format!(
                        "the slot at {} has not run: the scheduler was down or no executor was free",
                        from_pg_ts(s).to_rfc3339()
                    )
                });
                send_alert(
                    c,
                    target,
                    &Alert {
                        event: "overdue",
                        job_name: name,
                        job_id: *job_id,
                        owner: *owner,
                        run_id: None,
                        status: None,
                        message: msg.as_deref(),
                        consecutive_failures: 0,
                        runs_24h: 0,
                        failures_24h: 0,
                    },
                );
            }
        }
        rows.len() as i64
    })
}

/// Scheduler: deletes up to `batch` run rows past their retention, and up to `batch` alerts
/// older than pulse.run_retention_failed (alerts are about failures); returns the larger count,
/// so the caller goes on while either filled its batch.
pub fn prune_runs(batch: i64) -> i64 {
    let keep = crate::RUN_RETENTION.get() as i64;
    let keep_failed = crate::RUN_RETENTION_FAILED.get() as i64;
    Spi::connect_mut(|c| {
        let runs = xact::with_plan(
            c,
            "DELETE FROM pulse.job_run WHERE run_id IN (
               SELECT run_id FROM pulse.job_run
                WHERE created_at < now() - least($1, $2) * interval '1 second'
                  AND status NOT IN ('queued', 'running')
                  AND finished_at < now() - CASE WHEN status IN ('failed', 'timed_out')
                                                 THEN $2 ELSE $1 END * interval '1 second'
                LIMIT $3)",
            &[
                PgOid::BuiltIn(PgBuiltInOids::INT8OID),
                PgOid::BuiltIn(PgBuiltInOids::INT8OID),
                PgOid::BuiltIn(PgBuiltInOids::INT8OID),
            ],
            |c, stmt| {
                // select: a pass that deletes nothing assigns no transaction id (see xact::read_one)
                c.select(stmt, None, &[keep.into(), keep_failed.into(), batch.into()])
                    .map(|t| t.len() as i64)
                    .unwrap_or(0)
            },
        )
        .unwrap_or(0);
        // (the library may be newer than the extension's SQL: no table yet, nothing to prune)
        let alerts_present = alert_table_present(c);
        let alerts = if alerts_present {
            xact::with_plan(
                c,
                "DELETE FROM pulse.alert WHERE alert_id IN (
                   SELECT alert_id FROM pulse.alert
                    WHERE created_at < now() - $1 * interval '1 second'
                    LIMIT $2)",
                &[
                    PgOid::BuiltIn(PgBuiltInOids::INT8OID),
                    PgOid::BuiltIn(PgBuiltInOids::INT8OID),
                ],
                |c, stmt| {
                    c.select(stmt, None, &[keep_failed.into(), batch.into()])
                        .map(|t| t.len() as i64)
                        .unwrap_or(0)
                },
            )
            .unwrap_or(0)
        } else {
            0
        };
        runs.max(alerts)
    })
}

struct Row {
    job_id: i64,
    facts: Facts,
    name: String,
    schedule: Option<String>,
    timezone: String,
    next_run_at: Option<TimestampWithTimeZone>,
    last_run_at: Option<TimestampWithTimeZone>,
    stats: Stats,
    /// where the job runs; None: this database
    database: Option<String>,
}

/// Every visible job (row-level security applies: the caller's own, or all for superusers) with
/// its facts, ordered by job name (byte order) and id; the one query behind both health functions.
/// The order is made here, not with ORDER BY: sorting 10,000 wide rows under a linguistic
/// collation took longer than everything else together.
fn gather() -> Vec<Row> {
    let mut rows = gather_unordered();
    rows.sort_unstable_by(|a, b| a.name.cmp(&b.name).then(a.job_id.cmp(&b.job_id)));
    rows
}

fn gather_unordered() -> Vec<Row> {
    let default_threshold = crate::ALERT_AFTER_FAILURES.get();
    let now = now_s();
    Spi::connect(|_| {
        let mut queued = std::collections::HashMap::<i64, i64>::new();
        for_each_row(
            c"SELECT job_id, min(scheduled_for) FROM pulse.job_run WHERE status = 'queued' GROUP BY job_id",
            |r| {
                if let (Some(id), Some(at)) = (r.get::<i64>(1), r.get::<TimestampWithTimeZone>(2)) {
                    queued.insert(id, epoch(at));
                }
            },
        );
        let mut rows = Vec::new();
        for_each_row(
            c"SELECT j.job_id, j.job_name, j.schedule, j.timezone, j.enabled, j.next_run_at,
                     j.alert_after_failures, s.hour_base, s.runs, s.failures, s.dur_ms,
                     s.p95_ms, s.consecutive_failures, s.last_run_at, s.last_status, s.last_message,
                     j.database::text
                FROM pulse.job j LEFT JOIN pulse.job_stats s ON s.job_id = j.job_id",
            |r| {
                let job_id = r.get::<i64>(1).unwrap_or(0);
                let stats = Stats {
                    hour_base: r.get::<i64>(8).unwrap_or(0),
                    runs: r.numbers::<i32>(9),
                    failures: r.numbers::<i32>(10),
                    dur_ms: r.numbers::<f64>(11),
                    recent: Vec::new(),
                    consecutive_failures: r.get::<i32>(13).unwrap_or(0),
                    incident_open: false,
                };
                let p95 = r.get::<f64>(12);
                let next_run_at = r.get::<TimestampWithTimeZone>(6);
                let last_run_at = r.get::<TimestampWithTimeZone>(14);
                rows.push(Row {
                    job_id,
                    facts: Facts {
                        enabled: r.get::<bool>(5).unwrap_or(false),
                        next_run_at: next_run_at.map(epoch),
                        oldest_queued: queued.get(&job_id).copied(),
                        last_run_at: last_run_at.map(epoch),
                        last_status: r.get::<String>(15),
                        last_message: r.get::<String>(16),
                        consecutive_failures: stats.consecutive_failures,
                        threshold: r.get::<i32>(7).unwrap_or(default_threshold),
                        // the p95 is kept as of the job's last run (see pulse.job_stats.p95_ms)
                        window: super::Window {
                            p95_ms: p95
                                .filter(|_| last_run_at.is_some_and(|t| now - epoch(t) < 86_400)),
                            ..stats.window(now)
                        },
                    },
                    name: r.get::<String>(2).unwrap_or_default(),
                    schedule: r.get::<String>(3),
                    timezone: r.get::<String>(4).unwrap_or_default(),
                    next_run_at,
                    last_run_at,
                    stats,
                    database: r.get::<String>(17),
                });
            },
        );
        rows
    })
}

type HealthRow = (
    i64,
    String,
    bool,
    Option<String>,
    String,
    Option<TimestampWithTimeZone>,
    Option<TimestampWithTimeZone>,
    Option<String>,
    i64,
    i64,
    Option<f64>,
    Option<Interval>,
    Option<Interval>,
    i32,
    String,
    String,
    String,
);

#[pg_extern(stable, parallel_safe)]
fn scheduler_health() -> TableIterator<
    'static,
    (
        name!(job_id, i64),
        name!(job_name, String),
        name!(enabled, bool),
        name!(schedule, Option<String>),
        name!(timezone, String),
        name!(next_run_at, Option<TimestampWithTimeZone>),
        name!(last_run_at, Option<TimestampWithTimeZone>),
        name!(last_status, Option<String>),
        name!(runs_24h, i64),
        name!(failures_24h, i64),
        name!(success_rate, Option<f64>),
        name!(avg_duration, Option<Interval>),
        name!(p95_duration, Option<Interval>),
        name!(consecutive_failures, i32),
        name!(health, String),
        name!(reason, String),
        name!(database, String),
    ),
> {
    let now = now_s();
    let overdue = crate::OVERDUE_AFTER.get() as i64;
    let here = crate::pgutil::current_database_name();
    let rows: Vec<HealthRow> = gather()
        .into_iter()
        .map(|r| {
            let (health, reason) = classify(&r.facts, now, overdue);
            let w = r.facts.window;
            (
                r.job_id,
                r.name,
                r.facts.enabled,
                r.schedule,
                r.timezone,
                r.next_run_at,
                r.last_run_at,
                r.facts.last_status,
                w.runs,
                w.failures,
                w.success_rate,
                w.avg_ms.and_then(interval_ms),
                w.p95_ms.and_then(interval_ms),
                r.stats.consecutive_failures,
                health.as_str().to_string(),
                reason,
                r.database.unwrap_or_else(|| here.clone()),
            )
        })
        .collect();
    TableIterator::new(rows)
}

#[pg_extern(stable, parallel_safe)]
fn scheduler_status() -> TableIterator<
    'static,
    (
        name!(worker_alive, bool),
        name!(worker_pid, Option<i32>),
        name!(worker_started_at, Option<TimestampWithTimeZone>),
        name!(last_heartbeat, Option<TimestampWithTimeZone>),
        name!(database_name, String),
        name!(jobs_total, i64),
        name!(jobs_enabled, i64),
        name!(jobs_paused, i64),
        name!(jobs_failing, i64),
        name!(jobs_overdue, i64),
        name!(runs_last_hour, i64),
        name!(failures_last_hour, i64),
        name!(health_pct, Option<f64>),
        name!(verdict, String),
        name!(http_worker_alive, bool),
        name!(http_worker_pid, Option<i32>),
        name!(http_worker_started_at, Option<TimestampWithTimeZone>),
        name!(requests_waiting, i64),
        name!(oldest_request_wait, Option<Interval>),
    ),
> {
    let now = now_s();
    let overdue = crate::OVERDUE_AFTER.get() as i64;
    let sched = crate::worker::scheduler_liveness();
    let http = crate::worker::http_worker_liveness();
    let rows = gather_unordered();
    let mut enabled = 0i64;
    let mut failing = 0i64;
    let mut overdue_n = 0i64;
    let mut good = 0i64;
    for r in &rows {
        let (h, _) = classify(&r.facts, now, overdue);
        if r.facts.enabled {
            enabled += 1;
        }
        match h {
            Health::Failing => failing += 1,
            Health::Overdue => overdue_n += 1,
            Health::Healthy | Health::NeverRun => good += 1,
            _ => {}
        }
    }
    let pct = (enabled > 0).then(|| good as f64 * 100.0 / enabled as f64);
    let (runs_hour, failures_hour) = Spi::get_two::<i64, i64>(
        "SELECT (SELECT count(*) FROM pulse.job_run WHERE created_at > now() - interval '1 hour'),
                (SELECT count(*) FROM pulse.job_run WHERE status IN ('failed', 'timed_out')
                                                     AND finished_at > now() - interval '1 hour')",
    )
    .unwrap_or((None, None));
    // after-commit requests due and not sent yet (those the caller may see)
    let (waiting, oldest_s) = Spi::get_two::<i64, f64>(
        "SELECT count(*), extract(epoch FROM now() - min(next_attempt_at))::float8
           FROM pulse.http_request WHERE state = 'pending' AND next_attempt_at <= now()",
    )
    .unwrap_or((None, None));
    let oldest_s = oldest_s.map(|s| s.max(0.0));
    let v = verdict(
        &StatusFacts {
            scheduler_alive: sched.alive,
            http_worker_alive: http.alive,
            failing,
            overdue: overdue_n,
            health_pct: pct,
            oldest_request_wait_s: oldest_s,
        },
        &StatusLimits {
            max_failing: crate::STATUS_MAX_FAILING.get() as i64,
            min_health_pct: crate::STATUS_MIN_HEALTH_PCT.get() as f64,
            max_request_wait_s: crate::STATUS_MAX_REQUEST_WAIT.get() as f64,
        },
    );
    TableIterator::once((
        sched.alive,
        sched.pid,
        sched.started_at.map(to_pg_ts),
        sched.heartbeat.map(to_pg_ts),
        crate::database_name(),
        rows.len() as i64,
        enabled,
        rows.len() as i64 - enabled,
        failing,
        overdue_n,
        runs_hour.unwrap_or(0),
        failures_hour.unwrap_or(0),
        pct,
        v.to_string(),
        http.alive,
        http.pid,
        http.started_at.map(to_pg_ts),
        waiting.unwrap_or(0),
        oldest_s.and_then(|s| interval_ms(s * 1000.0)),
    ))
}
