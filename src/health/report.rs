//! The read side of health: `pulse.scheduler_health()` and `pulse.scheduler_status()`, from the
//! statistics the run lifecycle keeps (`pulse.job_stats`), never from the run history.

use super::{classify, verdict, Facts, Health, Stats, StatusFacts, StatusLimits};
use crate::pgutil::{for_each_row, from_pg_ts, to_pg_ts};
use pgrx::prelude::*;

fn epoch(t: TimestampWithTimeZone) -> i64 {
    from_pg_ts(t).timestamp()
}

fn now_s() -> i64 {
    chrono::Utc::now().timestamp()
}

fn interval_ms(ms: f64) -> Option<Interval> {
    Interval::new(0, 0, (ms * 1000.0) as i64).ok()
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
           FROM pulse.http_request WHERE finished_at IS NULL AND state = 'pending' AND next_attempt_at <= now()",
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
