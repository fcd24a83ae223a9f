//! The scheduler: turns due slots into queued runs and keeps the executor pool staffed.

use super::xact::{self, Failure};
use super::{set_latch_of, SlotState, MAX_EXECUTORS, SHARED};
use crate::pgutil::{from_pg_ts, to_pg_ts};
use crate::schedule::{self, Schedule};
use chrono::Utc;
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, DynamicBackgroundWorker, SignalWakeFlags,
};
use pgrx::prelude::*;
use std::time::{Duration, Instant};

/// The longest the scheduler sleeps without a reason (a safety net against clock jumps).
const MAX_SLEEP_MS: i64 = 60_000;

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pulse_scheduler_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let db = crate::database_name();
    BackgroundWorker::connect_worker_to_spi(Some(&db), None);
    {
        let mut sh = SHARED.exclusive();
        sh.scheduler_pid = unsafe { pg_sys::MyProcPid };
        sh.scheduler_started_us = Utc::now().timestamp_micros();
        sh.scheduler_heartbeat_us = sh.scheduler_started_us;
    }
    log!("pg_pulse scheduler started for database \"{db}\"");

    let mut s = Scheduler {
        handles: (0..MAX_EXECUTORS).map(|_| None).collect(),
        recovered: false,
        warned_at: None,
        housekept_at: None,
    };
    loop {
        if BackgroundWorker::sigterm_received() {
            break;
        }
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        SHARED.exclusive().scheduler_heartbeat_us = Utc::now().timestamp_micros();
        s.reap_executors();
        if s.housekept_at.is_none() {
            // at start, before the first tick runs them: alert about jobs that became overdue
            // while the scheduler was down
            s.housekeeping(Duration::from_secs(1));
        }
        let sleep_ms = match s.tick() {
            Ok(Tick::NoExtension) => MAX_SLEEP_MS,
            Ok(Tick::Ran {
                next_due,
                queued,
                queued_http,
            }) => {
                if queued > 0 {
                    s.staff(queued);
                }
                if queued_http > 0 {
                    super::wake_http_now();
                }
                match next_due {
                    Some(t) => {
                        let us = (from_pg_ts(t)
                            - chrono::Duration::milliseconds(super::LEAD_MS)
                            - Utc::now())
                        .num_microseconds()
                        .unwrap_or(i64::MAX);
                        // round up: waking a little late is fine, waking early means spinning
                        ((us + 999) / 1000).clamp(0, MAX_SLEEP_MS)
                    }
                    None => MAX_SLEEP_MS,
                }
            }
            Err(f) => {
                warning!("pg_pulse scheduler: {}", f.message);
                1000
            }
        };
        // Housekeeping only in a quiet gap, so it never delays a due slot.
        if sleep_ms >= HOUSEKEEPING_GAP_MS && s.housekeeping_in().is_zero() {
            s.housekeeping(Duration::from_millis(
                (sleep_ms - HOUSEKEEPING_GAP_MS / 2) as u64,
            ));
            continue; // recompute the sleep: time has passed
        }
        let sleep_ms = sleep_ms.min(s.housekeeping_in().as_millis() as i64 + 1);
        if sleep_ms > 0 {
            super::wait_latch(sleep_ms);
        } else {
            unsafe { pg_sys::ResetLatch(pg_sys::MyLatch) };
        }
    }
    {
        let mut sh = SHARED.exclusive();
        sh.scheduler_pid = 0;
    }
    log!("pg_pulse scheduler shutting down");
}

enum Tick {
    NoExtension,
    Ran {
        next_due: Option<TimestampWithTimeZone>,
        /// SQL runs (for executors) and HTTP runs (for the HTTP worker) due within a second
        queued: i64,
        queued_http: i64,
    },
}

struct Scheduler {
    handles: Vec<Option<DynamicBackgroundWorker>>,
    recovered: bool,
    warned_at: Option<Instant>,
    housekept_at: Option<Instant>,
}

/// One due job as the scheduler reads it.
struct Due {
    job_id: i64,
    job_name: String,
    owner: pg_sys::Oid,
    schedule: Option<String>,
    timezone: String,
    overlap: String,
    slot: TimestampWithTimeZone,
    active: bool,
    http: bool,
}

/// Housekeeping runs only when the next due wake-up is at least this far away.
const HOUSEKEEPING_GAP_MS: i64 = 200;

/// Half of pulse.overdue_after, between 1 and 60 seconds: an overdue job is noticed in time
/// without waking an idle scheduler more than twice a minute by default.
fn housekeeping_interval() -> Duration {
    Duration::from_secs((crate::OVERDUE_AFTER.get().max(2) as u64 / 2).clamp(1, 60))
}

impl Scheduler {
    /// How long until housekeeping is due again (the loop sleeps no longer than this).
    fn housekeeping_in(&self) -> Duration {
        self.housekept_at.map_or(Duration::ZERO, |t| {
            housekeeping_interval().saturating_sub(t.elapsed())
        })
    }

    /// Every housekeeping_interval(): overdue alerts, then run-history retention in small batches (each
    /// its own short transaction, so no long locks).
    fn housekeeping(&mut self, budget: Duration) {
        let start = Instant::now();
        self.housekept_at = Some(start);
        let overdue_checked = xact::run(|| {
            let present = xact::read_one::<bool>(
                "SELECT pg_catalog.to_regclass('pulse.job_stats') IS NOT NULL",
            )
            .unwrap_or(false);
            if present {
                crate::health::api::alert_overdue();
            }
            present
        });
        match overdue_checked {
            Ok(true) => {}
            Ok(false) => return,
            Err(f) => warning!("pg_pulse scheduler: overdue check failed: {}", f.message),
        }
        while start.elapsed() < budget.min(Duration::from_millis(500)) {
            match xact::run(|| {
                xact::async_commit();
                crate::health::api::prune_runs(1000)
            }) {
                Ok(n) if n >= 1000 => continue,
                Ok(_) => break,
                Err(f) => {
                    warning!(
                        "pg_pulse scheduler: pruning run history failed: {}",
                        f.message
                    );
                    break;
                }
            }
        }
    }

    fn tick(&mut self) -> Result<Tick, Failure> {
        let recovered = self.recovered;
        let live_pids = live_executor_pids();
        let r = xact::run(move || {
            xact::async_commit();
            let present = xact::read_one::<bool>("SELECT pg_catalog.to_regclass('pulse.job') IS NOT NULL AND pg_catalog.to_regclass('pulse.job_run') IS NOT NULL")
                .unwrap_or(false);
            if !present {
                return (Tick::NoExtension, false);
            }
            if !recovered {
                recover(&live_pids);
            }
            fire_due_jobs();
            // Next wake-up: the next slot, or a queued run that is not due yet (a retry later on).
            let (next_due, queued_sql, queued_http) = Spi::connect_mut(|c| {
                xact::with_plan(
                    c,
                    "SELECT least((SELECT min(next_run_at) FROM pulse.job WHERE enabled),
                                  (SELECT min(scheduled_for) FROM pulse.job_run
                                    WHERE status = 'queued' AND scheduled_for > now())),
                            q.sql, q.http
                       FROM (SELECT count(*) FILTER (WHERE kind = 'sql') AS sql,
                                    count(*) FILTER (WHERE kind = 'http') AS http
                               FROM (SELECT kind FROM pulse.job_run WHERE status = 'queued'
                                        AND scheduled_for <= now() + interval '1 second'
                                      LIMIT 1000) r) q",
                    &[],
                    |c, stmt| {
                        c.select(stmt, None, &[]).ok().and_then(|t| {
                            t.into_iter().next().map(|row| {
                                (
                                    row.get::<TimestampWithTimeZone>(1).ok().flatten(),
                                    row.get::<i64>(2).ok().flatten(),
                                    row.get::<i64>(3).ok().flatten(),
                                )
                            })
                        })
                    },
                )
                .ok()
                .flatten()
                .unwrap_or((None, None, None))
            });
            (
                Tick::Ran {
                    next_due,
                    queued: queued_sql.unwrap_or(0),
                    queued_http: queued_http.unwrap_or(0),
                },
                true,
            )
        })?;
        if r.1 {
            self.recovered = true;
        }
        Ok(r.0)
    }

    /// Starts executors for queued work and wakes the idle ones.
    fn staff(&mut self, queued: i64) {
        let max = super::max_running();
        let mut to_start = Vec::new();
        {
            let mut sh = SHARED.exclusive();
            let occupied = sh.occupied();
            // executors that will claim work without a new process: idle ones and those starting
            let ready = sh
                .slots
                .iter()
                .filter(|s| {
                    s.state == SlotState::Reserved
                        || (s.state == SlotState::Live && s.run_id == 0 && !s.exited)
                })
                .count();
            let mut need = (queued as usize).saturating_sub(ready);
            let mut room = max.saturating_sub(occupied);
            for (i, slot) in sh.slots.iter_mut().enumerate() {
                if need == 0 || room == 0 {
                    break;
                }
                if slot.state == SlotState::Free {
                    *slot = super::Slot {
                        state: SlotState::Reserved,
                        ..Default::default()
                    };
                    to_start.push(i);
                    need -= 1;
                    room -= 1;
                }
            }
            for slot in sh.slots.iter() {
                if slot.state == SlotState::Live && slot.run_id == 0 {
                    set_latch_of(slot.pid);
                }
            }
        }
        for i in to_start {
            let started = BackgroundWorkerBuilder::new("pg_pulse executor")
                .set_type("pg_pulse executor")
                .set_library("pg_pulse")
                .set_function("pulse_executor_main")
                .enable_spi_access()
                .set_argument(Some(pg_sys::Datum::from(i)))
                .set_notify_pid(unsafe { pg_sys::MyProcPid })
                .set_restart_time(None)
                .load_dynamic();
            match started {
                Ok(h) => self.handles[i] = Some(h),
                Err(_) => {
                    SHARED.exclusive().slots[i] = super::Slot::default();
                    let quiet = self
                        .warned_at
                        .is_some_and(|t| t.elapsed() < Duration::from_secs(60));
                    if !quiet {
                        self.warned_at = Some(Instant::now());
                        ereport!(
                            PgLogLevel::WARNING,
                            PgSqlErrorCode::ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
                            "pg_pulse could not start an executor: no free background worker slot",
                            "Raise max_worker_processes (it must exceed pulse.max_running_jobs plus other workers) and restart."
                        );
                    }
                    break;
                }
            }
        }
    }

    /// Frees the slots of executors that exited, failing any run they left behind.
    fn reap_executors(&mut self) {
        let mut lost: Vec<i32> = Vec::new();
        {
            let mut sh = SHARED.exclusive();
            for (i, slot) in sh.slots.iter_mut().enumerate() {
                let stopped = match &self.handles[i] {
                    Some(h) => matches!(
                        h.pid(),
                        Err(pgrx::bgworkers::BackgroundWorkerStatus::Stopped)
                    ),
                    None => false,
                };
                if slot.state != SlotState::Free && (slot.exited || stopped) {
                    if slot.pid != 0 {
                        lost.push(slot.pid);
                    }
                    *slot = super::Slot::default();
                    self.handles[i] = None;
                } else if slot.state == SlotState::Free {
                    self.handles[i] = None;
                }
            }
        }
        if lost.is_empty() {
            return;
        }
        let r = xact::run(move || {
            Spi::run_with_args(
                "UPDATE pulse.job_run SET status = 'failed', finished_at = clock_timestamp(),
                        message = format('the executor process (pid %s) exited while this run was in progress', executor_pid)
                  WHERE status = 'running' AND executor_pid = ANY ($1)",
                &[lost.into()],
            )
            .ok();
        });
        if let Err(f) = r {
            warning!(
                "pg_pulse scheduler: could not record lost runs: {}",
                f.message
            );
        }
    }
}

fn live_executor_pids() -> Vec<i32> {
    SHARED
        .share()
        .slots
        .iter()
        .filter(|s| s.state == SlotState::Live && !s.exited)
        .map(|s| s.pid)
        .collect()
}

/// At start: runs left `running` by processes that no longer exist (a crash, `kill -9`, an
/// immediate shutdown) become `failed`.
fn recover(live_pids: &[i32]) {
    let n = Spi::connect_mut(|c| {
        c.update(
            "UPDATE pulse.job_run SET status = 'failed', finished_at = clock_timestamp(),
                    message = 'the server restarted while this run was in progress'
              WHERE status = 'running' AND kind = 'sql' AND NOT (coalesce(executor_pid, 0) = ANY ($1))",
            None,
            &[live_pids.to_vec().into()],
        )
        .map(|t| t.len())
        .unwrap_or(0)
    });
    if n > 0 {
        log!("pg_pulse: marked {n} interrupted run(s) as failed");
    }
}

/// Turns every due slot into one run row and moves each job's next_run_at past now.
fn fire_due_jobs() {
    let now = Utc::now();
    // Slots up to LEAD_MS ahead are queued now; executors start them at their exact instant.
    let horizon = now + chrono::Duration::milliseconds(super::LEAD_MS);
    let due: Vec<Due> = Spi::connect_mut(|c| {
        let t = xact::with_plan(
            c,
            "SELECT j.job_id, j.job_name, j.owner, j.schedule, j.timezone, j.overlap, j.next_run_at,
                    EXISTS (SELECT 1 FROM pulse.job_run r WHERE r.job_id = j.job_id AND r.status IN ('queued', 'running')),
                    j.http IS NOT NULL
               FROM pulse.job j
              WHERE j.enabled AND j.next_run_at <= $1
              ORDER BY j.next_run_at
                FOR UPDATE OF j SKIP LOCKED",
            &[PgOid::BuiltIn(PgBuiltInOids::TIMESTAMPTZOID)],
            |c, stmt| {
                c.select(stmt, None, &[to_pg_ts(horizon).into()])
                    .map(|t| t.filter_map(|row| due_from_row(&row)).collect::<Vec<Due>>())
            },
        );
        match t {
            Ok(Ok(v)) => v,
            _ => Vec::new(),
        }
    });
    if due.is_empty() {
        return;
    }
    fire(now, due);
}

fn due_from_row(row: &pgrx::spi::SpiHeapTupleData) -> Option<Due> {
    Some(Due {
        job_id: row.get::<i64>(1).ok()??,
        job_name: row.get::<String>(2).ok()??,
        owner: row.get::<pg_sys::Oid>(3).ok()??,
        schedule: row.get::<String>(4).ok()?,
        timezone: row.get::<String>(5).ok()??,
        overlap: row.get::<String>(6).ok()??,
        slot: row.get::<TimestampWithTimeZone>(7).ok()??,
        active: row.get::<bool>(8).ok()??,
        http: row.get::<bool>(9).ok()??,
    })
}

fn fire(now: chrono::DateTime<Utc>, due: Vec<Due>) {
    let n = due.len();
    let mut ids = Vec::with_capacity(n);
    let mut names = Vec::with_capacity(n);
    let mut owners = Vec::with_capacity(n);
    let mut slots = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    let mut messages: Vec<Option<String>> = Vec::with_capacity(n);
    let mut nexts: Vec<Option<TimestampWithTimeZone>> = Vec::with_capacity(n);
    let mut kinds = Vec::with_capacity(n);
    for d in due {
        let (status, message, next) = match &d.schedule {
            None => {
                // a one-shot job: this is its only run
                let status = if d.active && d.overlap == "skip" {
                    "skipped"
                } else {
                    "queued"
                };
                (status, None, None)
            }
            Some(text) => {
                let tz = schedule::parse_timezone(&d.timezone);
                match (Schedule::parse(text), tz) {
                    (Ok(s), Ok(tz)) => {
                        // after downtime the missed slots collapse into this one run
                        // (a slot queued ahead of time is in the future: count from it)
                        let from = now.max(from_pg_ts(d.slot));
                        let next = s.next_after(tz, from).map(to_pg_ts);
                        if d.active && d.overlap == "skip" {
                            ("skipped", Some("the previous run was still queued or running (overlap = 'skip')".to_string()), next)
                        } else {
                            ("queued", None, next)
                        }
                    }
                    (Err(e), _) | (_, Err(e)) => ("failed", Some(format!("the stored schedule is invalid: {e}; the job stops until it is fixed with pulse.alter_job")), None),
                }
            }
        };
        ids.push(d.job_id);
        kinds.push(if d.http { "http" } else { "sql" }.to_string());
        names.push(d.job_name);
        owners.push(d.owner);
        slots.push(d.slot);
        statuses.push(status.to_string());
        messages.push(message);
        nexts.push(next);
    }
    let r = Spi::run_with_args(
        "INSERT INTO pulse.job_run (job_id, job_name, owner, scheduled_for, status, trigger, message, finished_at, kind)
         SELECT u.id, u.name, u.owner, u.slot, u.status, 'schedule', u.message,
                CASE WHEN u.status = 'queued' THEN NULL ELSE clock_timestamp() END, u.kind
           FROM unnest($1::bigint[], $2::text[], $3::oid[], $4::timestamptz[], $5::text[], $6::text[], $8::text[])
                AS u(id, name, owner, slot, status, message, kind)
          WHERE u.status <> 'skipped' OR $7",
        &[
            ids.clone().into(),
            names.into(),
            owners.into(),
            slots.into(),
            statuses.into(),
            messages.into(),
            // pulse.log_runs = failures | none: a skipped slot leaves no row
            (crate::LOG_RUNS.get() == crate::LogRuns::All).into(),
            kinds.into(),
        ],
    );
    if let Err(e) = r {
        pgrx::error!("could not record runs: {e}");
    }
    let r = Spi::run_with_args(
        "UPDATE pulse.job j SET next_run_at = u.next FROM unnest($1::bigint[], $2::timestamptz[]) AS u(id, next)
          WHERE j.job_id = u.id",
        &[ids.into(), nexts.into()],
    );
    if let Err(e) = r {
        pgrx::error!("could not advance jobs: {e}");
    }
}
