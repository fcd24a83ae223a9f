//! Job health: rolling 24-hour statistics, health classification, and alert transitions.
//! Pure Rust (no pgrx): the executor feeds it each run's outcome, `pulse.scheduler_health()` asks
//! it what a job's state is, and it decides when an incident starts and when it recovers.

/// Hourly buckets kept per job (the "last 24 hours" window).
pub const HOURS: usize = 24;
/// Durations kept per job for the p95 (the most recent runs within the window).
pub const RECENT: usize = 100;

/// A job's rolling statistics, stored in `pulse.job_stats`.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// Epoch hour (unix seconds / 3600) of bucket 0, the newest.
    pub hour_base: i64,
    /// Runs finished per hour, newest first.
    pub runs: Vec<i32>,
    /// Failed (failed or timed_out) runs per hour, newest first.
    pub failures: Vec<i32>,
    /// Sum of run durations (ms) per hour, newest first.
    pub dur_ms: Vec<f64>,
    /// (unix seconds, duration ms) of the latest runs, oldest first, at most RECENT.
    pub recent: Vec<(i64, f64)>,
    /// Failures since the last success.
    pub consecutive_failures: i32,
    /// An alert was sent for a failure incident that has not recovered yet.
    pub incident_open: bool,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            hour_base: 0,
            runs: vec![0; HOURS],
            failures: vec![0; HOURS],
            dur_ms: vec![0.0; HOURS],
            recent: Vec::new(),
            consecutive_failures: 0,
            incident_open: false,
        }
    }
}

/// What an outcome means for alerting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertEvent {
    None,
    /// The job just reached its failure threshold: one alert for the incident.
    IncidentStarted,
    /// A success after an alerted incident: one recovery notice.
    Recovered,
}

/// Aggregates over the last 24 hours.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Window {
    pub runs: i64,
    pub failures: i64,
    /// Successful share of finished runs (None without runs).
    pub success_rate: Option<f64>,
    pub avg_ms: Option<f64>,
    pub p95_ms: Option<f64>,
}

fn repair(v: &mut Vec<impl Copy + Default>) {
    v.resize(HOURS, Default::default());
}

impl Stats {
    /// Moves the buckets so that bucket 0 is `hour`; buckets older than 24 hours fall off.
    fn advance(&mut self, hour: i64) {
        repair(&mut self.runs);
        repair(&mut self.failures);
        repair(&mut self.dur_ms);
        if hour <= self.hour_base {
            return;
        }
        let shift = (hour - self.hour_base).min(HOURS as i64) as usize;
        for v in [&mut self.runs, &mut self.failures] {
            v.rotate_right(shift);
            v[..shift].iter_mut().for_each(|x| *x = 0);
        }
        self.dur_ms.rotate_right(shift);
        self.dur_ms[..shift].iter_mut().for_each(|x| *x = 0.0);
        self.hour_base = hour;
    }

    /// Records a finished run at `at` (unix seconds). `threshold` is the number of consecutive
    /// failures that opens an incident (at least 1).
    pub fn record(&mut self, at: i64, failed: bool, ms: f64, threshold: i32) -> AlertEvent {
        let hour = at.div_euclid(3600);
        self.advance(hour);
        let idx = (self.hour_base - hour) as usize;
        if idx < HOURS {
            self.runs[idx] += 1;
            if failed {
                self.failures[idx] += 1;
            }
            self.dur_ms[idx] += ms.max(0.0);
        }
        self.recent.push((at, ms.max(0.0)));
        if self.recent.len() > RECENT {
            let extra = self.recent.len() - RECENT;
            self.recent.drain(..extra);
        }
        if failed {
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            if !self.incident_open && self.consecutive_failures >= threshold.max(1) {
                self.incident_open = true;
                return AlertEvent::IncidentStarted;
            }
            AlertEvent::None
        } else {
            self.consecutive_failures = 0;
            if self.incident_open {
                self.incident_open = false;
                return AlertEvent::Recovered;
            }
            AlertEvent::None
        }
    }

    /// The last 24 hours as of `now` (unix seconds).
    pub fn window(&self, now: i64) -> Window {
        let hour = now.div_euclid(3600);
        let age = (hour - self.hour_base).max(0) as usize;
        let mut w = Window::default();
        let mut dur = 0.0;
        for i in 0..HOURS.saturating_sub(age) {
            w.runs += *self.runs.get(i).unwrap_or(&0) as i64;
            w.failures += *self.failures.get(i).unwrap_or(&0) as i64;
            dur += *self.dur_ms.get(i).unwrap_or(&0.0);
        }
        if w.runs > 0 {
            w.success_rate = Some((w.runs - w.failures) as f64 / w.runs as f64);
            w.avg_ms = Some(dur / w.runs as f64);
        }
        let mut recent: Vec<f64> = self
            .recent
            .iter()
            .filter(|(at, _)| now - at < (HOURS as i64) * 3600)
            .map(|(_, ms)| *ms)
            .collect();
        if !recent.is_empty() {
            recent.sort_by(|a, b| a.total_cmp(b));
            let rank = ((recent.len() as f64) * 0.95).ceil() as usize;
            w.p95_ms = Some(recent[rank.clamp(1, recent.len()) - 1]);
        }
        w
    }
}

/// A job's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Healthy,
    Degraded,
    Failing,
    Overdue,
    Paused,
    NeverRun,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Failing => "failing",
            Health::Overdue => "overdue",
            Health::Paused => "paused",
            Health::NeverRun => "never_run",
        }
    }
}

/// What the classification looks at (times in unix seconds).
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub enabled: bool,
    pub next_run_at: Option<i64>,
    /// Slot of the oldest run still queued (not started).
    pub oldest_queued: Option<i64>,
    pub last_run_at: Option<i64>,
    pub last_status: Option<String>,
    pub last_message: Option<String>,
    pub consecutive_failures: i32,
    /// Consecutive failures that make the job failing.
    pub threshold: i32,
    pub window: Window,
}

/// Below this 24-hour success rate a job with a successful last run is still `degraded`.
pub const DEGRADED_BELOW: f64 = 0.9;

fn ago(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}

/// Classifies a job and explains it in words a person can act on.
pub fn classify(f: &Facts, now: i64, overdue_after: i64) -> (Health, String) {
    if !f.enabled {
        return (
            Health::Paused,
            "paused: resume with pulse.toggle_job(name, true)".into(),
        );
    }
    if let Some(slot) = f.oldest_queued.filter(|s| now - s > overdue_after) {
        return (
            Health::Overdue,
            format!(
                "a run due {} ago has not started: are executors available? (pulse.max_running_jobs, max_worker_processes, SELECT * FROM pulse.scheduler_status())",
                ago(now - slot)
            ),
        );
    }
    if let Some(next) = f.next_run_at.filter(|n| now - n > overdue_after) {
        return (
            Health::Overdue,
            format!(
                "its slot passed {} ago without a run: is the scheduler running? (SELECT * FROM pulse.scheduler_status())",
                ago(now - next)
            ),
        );
    }
    let failed_last = matches!(f.last_status.as_deref(), Some("failed") | Some("timed_out"));
    if failed_last && f.consecutive_failures >= f.threshold.max(1) {
        return (
            Health::Failing,
            format!(
                "{} consecutive failures; last: {}",
                f.consecutive_failures,
                f.last_message.as_deref().unwrap_or("(no message)")
            ),
        );
    }
    if f.last_run_at.is_none() {
        return (Health::NeverRun, "has not run yet".into());
    }
    if failed_last {
        return (
            Health::Degraded,
            format!(
                "last run failed ({} in a row): {}",
                f.consecutive_failures.max(1),
                f.last_message.as_deref().unwrap_or("(no message)")
            ),
        );
    }
    if let Some(rate) = f.window.success_rate.filter(|r| *r < DEGRADED_BELOW) {
        return (
            Health::Degraded,
            format!(
                "{} of {} runs failed in the last 24 h ({:.0} % success)",
                f.window.failures,
                f.window.runs,
                rate * 100.0
            ),
        );
    }
    (Health::Healthy, "ok".into())
}

/// What `pulse.scheduler_status()` judges.
#[derive(Debug, Clone, Copy)]
pub struct StatusFacts {
    pub scheduler_alive: bool,
    pub http_worker_alive: bool,
    pub failing: i64,
    pub overdue: i64,
    pub health_pct: Option<f64>,
    /// seconds the oldest due after-commit request has waited (None: none waits)
    pub oldest_request_wait_s: Option<f64>,
}

/// The thresholds of the verdict (`pulse.status_*` settings).
#[derive(Debug, Clone, Copy)]
pub struct StatusLimits {
    pub max_failing: i64,
    pub min_health_pct: f64,
    pub max_request_wait_s: f64,
}

/// The one-word verdict of `pulse.scheduler_status()`: HEALTHY only while both workers are
/// alive, no more jobs fail than allowed, none is overdue, enough jobs are healthy and no
/// after-commit request has waited longer than allowed.
pub fn verdict(f: &StatusFacts, l: &StatusLimits) -> &'static str {
    let ok = f.scheduler_alive
        && f.http_worker_alive
        && f.failing <= l.max_failing
        && f.overdue == 0
        && f.health_pct.is_none_or(|p| p >= l.min_health_pct)
        && f.oldest_request_wait_s
            .is_none_or(|w| w <= l.max_request_wait_s);
    if ok {
        "HEALTHY"
    } else {
        "NEEDS_ATTENTION"
    }
}

/// A NOTIFY channel name pg_notify accepts: not empty, at most 63 bytes.
pub fn valid_channel(ch: &str) -> bool {
    !ch.is_empty() && ch.len() < 64
}

/// The whole NOTIFY payload of an alert: its id in `pulse.alert`, nothing else. Every role may
/// LISTEN on any channel, so the payload carries nothing private; every role may also pg_notify
/// on it, so a listener reads the alert from `pulse.alerts` (an id not found there is forged).
pub fn notify_payload(alert_id: i64) -> String {
    format!("{{\"alert_id\": {alert_id}}}")
}

#[cfg(test)]
mod tests;

#[cfg(feature = "pg")]
pub mod report;
