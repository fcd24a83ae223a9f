//! Watching and restarting the two long-lived workers: their liveness (for
//! `pulse.scheduler_status()` and the watchdog) and `pulse.restart_workers()`.

use super::SHARED;
use pgrx::prelude::*;

/// What shared memory says about one worker.
#[derive(Debug, Clone, Copy, Default)]
pub struct Liveness {
    pub alive: bool,
    pub pid: Option<i32>,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub heartbeat: Option<chrono::DateTime<chrono::Utc>>,
}

/// A worker is alive while its process exists and its loop has turned within `stale_after`
/// (a worker stopped with SIGSTOP, or stuck, has a process but no heartbeat). A worker that has
/// not written a heartbeat yet counts by its process.
fn liveness(pid: i32, started_us: i64, beat_us: i64, stale_after: std::time::Duration) -> Liveness {
    let ts = |us: i64| {
        (us > 0)
            .then(|| chrono::DateTime::from_timestamp_micros(us))
            .flatten()
    };
    let exists = pid != 0 && unsafe { !pg_sys::BackendPidGetProc(pid).is_null() };
    let age_us = chrono::Utc::now().timestamp_micros() - beat_us;
    let fresh = beat_us == 0 || age_us <= stale_after.as_micros() as i64;
    Liveness {
        alive: exists && fresh,
        pid: (pid != 0).then_some(pid),
        started_at: ts(started_us),
        heartbeat: ts(beat_us),
    }
}

/// The scheduler turns its loop at least every housekeeping interval: with pulse.overdue_after
/// on top, a heartbeat older than this means it is stuck or stopped.
fn scheduler_stale_after() -> std::time::Duration {
    super::scheduler::housekeeping_interval()
        + std::time::Duration::from_secs(crate::OVERDUE_AFTER.get().max(1) as u64)
}

/// The HTTP worker turns its loop at least every 10 seconds.
const HTTP_STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

fn preloaded() -> bool {
    crate::PRELOADED.load(std::sync::atomic::Ordering::Relaxed)
}

/// The scheduler's liveness.
pub fn scheduler_liveness() -> Liveness {
    if !preloaded() {
        return Liveness::default();
    }
    let (pid, started, beat) = {
        let sh = SHARED.share();
        (
            sh.scheduler_pid,
            sh.scheduler_started_us,
            sh.scheduler_heartbeat_us,
        )
    };
    liveness(pid, started, beat, scheduler_stale_after())
}

/// The HTTP worker's liveness.
pub fn http_worker_liveness() -> Liveness {
    if !preloaded() {
        return Liveness::default();
    }
    let (pid, started, beat) = {
        let sh = SHARED.share();
        (sh.http_pid, sh.http_started_us, sh.http_heartbeat_us)
    };
    liveness(pid, started, beat, HTTP_STALE_AFTER)
}

/// `pulse.restart_workers()`: stops the scheduler and the HTTP worker (SIGTERM, as
/// pg_terminate_backend); the postmaster starts them again within about a second. Runs the
/// scheduler's executors had are failed by the new scheduler and retried if their job allows;
/// requests being sent are sent again. Superusers only. Returns how many workers were signalled.
#[pg_extern(volatile, parallel_unsafe)]
fn restart_workers() -> i32 {
    if !unsafe { pg_sys::superuser() } {
        crate::pgutil::raise(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            "permission denied to restart pg_pulse's workers",
            "Only a superuser can call pulse.restart_workers(); pulse.scheduler_status() shows whether they are alive.",
        );
    }
    if !preloaded() {
        crate::pgutil::raise(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "pg_pulse's workers are not running: the library is not preloaded",
            "Add pg_pulse to shared_preload_libraries and restart the server.",
        );
    }
    let mut n = 0;
    for l in [scheduler_liveness(), http_worker_liveness()] {
        if let (true, Some(pid)) = (l.alive, l.pid) {
            if unsafe { libc::kill(pid, libc::SIGTERM) } == 0 {
                n += 1;
            }
        }
    }
    n
}

/// The watchdog the HTTP worker keeps on the scheduler: a scheduler the postmaster does not
/// bring back (it fails at start again and again), or one that is stuck (no heartbeat), would
/// leave every job silently unrun. Once the scheduler has been down for `pulse.overdue_after`, the HTTP worker
/// logs a warning and sends the overdue alerts itself (once per job, as the scheduler would).
#[derive(Default)]
pub struct Watchdog {
    down_since: Option<std::time::Instant>,
    alerted: bool,
    next_at: Option<std::time::Instant>,
}

impl Watchdog {
    /// Looks at the scheduler (outside a transaction). Returns how soon to look again.
    pub fn check(&mut self) -> std::time::Duration {
        use std::time::{Duration, Instant};
        if let Some(t) = self.next_at {
            if Instant::now() < t {
                return t - Instant::now();
            }
        }
        let after = Duration::from_secs(crate::OVERDUE_AFTER.get().max(1) as u64);
        if scheduler_liveness().alive {
            if self.alerted {
                log!("pg_pulse: the scheduler is running again");
            }
            *self = Watchdog::default();
            return Duration::from_secs(10);
        }
        let since = *self.down_since.get_or_insert_with(Instant::now);
        let down = since.elapsed();
        if down < after {
            return after - down;
        }
        if !self.alerted {
            warning!(
                "pg_pulse: the scheduler has not been running for {} s: no job runs until it is back (the server log says why; SELECT pulse.restart_workers() starts it again)",
                down.as_secs()
            );
        }
        // overdue alerts for the jobs whose slots pass meanwhile (each job once)
        match crate::xact::run(|| {
            crate::xact::read_one::<bool>(
                "SELECT pg_catalog.to_regclass('pulse.job_stats') IS NOT NULL",
            )
            .unwrap_or(false)
            .then(crate::outcome::alerts::alert_overdue)
        }) {
            Ok(_) => self.alerted = true,
            Err(f) => warning!("pg_pulse: overdue check failed: {}", f.message),
        }
        let again = (after / 2).max(Duration::from_secs(1));
        self.next_at = Some(Instant::now() + again);
        again
    }
}
