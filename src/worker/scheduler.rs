//! The scheduler: turns due slots into queued runs and keeps the executor pool staffed.

use super::dispatch::Pool;
use super::SHARED;
use crate::pgutil::{from_pg_ts, to_pg_ts};
use crate::run::RunStatus;
use crate::schedule::Schedule;
use crate::xact::{self, Failure};
use chrono::Utc;
use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
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
    super::pin_worker_settings();
    {
        let mut sh = SHARED.exclusive();
        sh.scheduler_pid = unsafe { pg_sys::MyProcPid };
        sh.scheduler_started_us = Utc::now().timestamp_micros();
        sh.scheduler_heartbeat_us = sh.scheduler_started_us;
    }
    log!("pg_pulse scheduler started for database \"{db}\"");

    let mut s = Scheduler {
        recovered: false,
        housekept_at: None,
        zones_looked_at: None,
        rescued_at: None,
        rescue_wanted: false,
        stale_looked_at: None,
        failed_ticks: 0,
    };
    let mut pool = Pool::new();
    pool.stop_leftovers();
    loop {
        if BackgroundWorker::sigterm_received() {
            break;
        }
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        SHARED.exclusive().scheduler_heartbeat_us = Utc::now().timestamp_micros();
        pool.collect();
        if s.housekept_at.is_none() {
            // at start, before the first tick runs them: alert about jobs that became overdue
            // while the scheduler was down
            s.housekeeping(Duration::from_secs(1));
        }
        let sleep_ms = match s.tick(&mut pool) {
            Ok(Tick::NoExtension) => MAX_SLEEP_MS,
            Ok(Tick::Ran {
                next_due,
                queued_http,
                locked,
                stale_running,
            }) => {
                s.failed_ticks = 0;
                s.rescue_wanted |= stale_running;
                pool.recorded();
                pool.hand_out();
                if queued_http > 0 {
                    super::wake_http_now();
                }
                let ms = match next_due {
                    // runs to queue again (an executor left): next turn at once
                    _ if pool.has_settled() => 0,
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
                };
                if locked {
                    ms.min(LOCKED_RETRY_MS)
                } else {
                    ms
                }
            }
            Err(f) => {
                warning!("pg_pulse scheduler: {}", f.message);
                s.failed_ticks += 1;
                pool.abandon_claim();
                // the runs that ended still end (status and reason), so that no run stays
                // `running` and no slot of its job is skipped behind it
                if !pool.record_minimal(&f.message) && s.failed_ticks >= 3 {
                    pool.drop_settled(&f.message);
                }
                1000
            }
        };
        let sleep_ms = match pool.take_back_in_ms() {
            Some(ms) => sleep_ms.min(ms),
            None => sleep_ms,
        };
        // Housekeeping only in a quiet gap, so it never delays a due slot.
        if sleep_ms >= HOUSEKEEPING_GAP_MS && s.housekeeping_in().is_zero() {
            s.housekeeping(Duration::from_millis(
                (sleep_ms - HOUSEKEEPING_GAP_MS / 2) as u64,
            ));
            continue; // recompute the sleep: time has passed
        }
        // The rescuer, while some SQL run has been running for a while (else it has nothing to
        // look at: an idle scheduler does not wake up for it).
        let rescue_in = s.rescue_in();
        if sleep_ms >= HOUSEKEEPING_GAP_MS && rescue_in == Some(Duration::ZERO) {
            s.rescued_at = Some(Instant::now());
            s.rescue_wanted = false;
            rescue_lost_runs(&pool);
            continue;
        }
        let mut sleep_ms = sleep_ms.min(s.housekeeping_in().as_millis() as i64 + 1);
        if let Some(d) = rescue_in {
            sleep_ms = sleep_ms.min(d.as_millis() as i64 + 1);
        }
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
    // A non-zero exit code: the postmaster starts the scheduler again after its restart time
    // (1 s) unless the server itself is shutting down. With 0 it would stay stopped until the
    // next server start (pg_terminate_backend, pulse.restart_workers()).
    unsafe { pg_sys::proc_exit(1) };
}

enum Tick {
    NoExtension,
    Ran {
        next_due: Option<TimestampWithTimeZone>,
        /// HTTP runs (for the HTTP worker) due within a second: 1 if there are any (read in
        /// job_run_queued_owner_idx's order, which the claim's enable_sort = off makes the plan)
        queued_http: i64,
        /// a due job was skipped because another transaction holds its row
        locked: bool,
        /// a SQL run has been `running` for longer than RESCUE_EVERY (the rescuer looks at it)
        stale_running: bool,
    },
}

struct Scheduler {
    recovered: bool,
    housekept_at: Option<Instant>,
    /// when housekeeping last looked for changed zone files (None: not yet since start)
    zones_looked_at: Option<std::time::SystemTime>,
    /// when the rescuer last looked for lost runs
    rescued_at: Option<Instant>,
    /// the last tick saw a SQL run `running` for longer than RESCUE_EVERY
    rescue_wanted: bool,
    /// when a tick last looked for such runs
    stale_looked_at: Option<Instant>,
    /// consecutive ticks whose transaction failed
    failed_ticks: u32,
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

/// How soon a due job whose row another transaction holds is tried again. pg_pulse's own
/// functions wake the scheduler when they commit; this bounds the wait after a rollback, or for
/// a row locked some other way, at 4 turns a second.
const LOCKED_RETRY_MS: i64 = 250;

/// Housekeeping runs only when the next due wake-up is at least this far away.
const HOUSEKEEPING_GAP_MS: i64 = 200;

/// Half of pulse.overdue_after, between 1 and 60 seconds: an overdue job is noticed in time
/// without waking an idle scheduler more than twice a minute by default.
pub(super) fn housekeeping_interval() -> Duration {
    Duration::from_secs((crate::OVERDUE_AFTER.get().max(2) as u64 / 2).clamp(1, 60))
}

impl Scheduler {
    /// How long until the rescuer should look (None: nothing for it to look at).
    fn rescue_in(&self) -> Option<Duration> {
        self.rescue_wanted.then(|| {
            self.rescued_at
                .map_or(Duration::ZERO, |t| RESCUE_EVERY.saturating_sub(t.elapsed()))
        })
    }

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
                crate::outcome::alerts::alert_overdue();
            }
            present
        });
        match overdue_checked {
            Ok(true) => {}
            Ok(false) => return,
            Err(f) => warning!("pg_pulse scheduler: overdue check failed: {}", f.message),
        }
        // zone files changed since the previous look (every zone at the first look after start,
        // as the files may have changed while the server was down)
        let looked = std::time::SystemTime::now();
        match xact::run(|| super::zone_updates::follow(self.zones_looked_at)) {
            Ok(()) => self.zones_looked_at = Some(looked - Duration::from_secs(2)),
            Err(f) => warning!(
                "pg_pulse scheduler: following zone updates failed: {}",
                f.message
            ),
        }
        while start.elapsed() < budget.min(Duration::from_millis(500)) {
            match xact::run(|| {
                xact::async_commit();
                crate::run::history::prune_runs(1000)
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

    fn tick(&mut self, pool: &mut Pool) -> Result<Tick, Failure> {
        let recovered = self.recovered;
        // whether to look for SQL runs running long enough to be lost: at most every
        // RESCUE_EVERY (the look reads every active run; a burst's turns must not)
        let look_for_stale = self
            .stale_looked_at
            .is_none_or(|t| t.elapsed() >= RESCUE_EVERY);
        if look_for_stale {
            self.stale_looked_at = Some(Instant::now());
        }
        let pool = std::panic::AssertUnwindSafe(pool);
        let r = xact::run(move || {
            let pool = pool;
            let present = xact::read_one::<bool>("SELECT pg_catalog.to_regclass('pulse.job') IS NOT NULL AND pg_catalog.to_regclass('pulse.job_run') IS NOT NULL")
                .unwrap_or(false);
            if !present {
                return (Tick::NoExtension, false);
            }
            if !recovered {
                recover();
            }
            // outcomes executors reported, then due slots, then runs for the executors
            let settled = pool.0.settle();
            let horizon = fire_due_jobs();
            let claimed = pool.0.claim();
            if settled == 0 && claimed == 0 {
                // only queued runs (or nothing) changed: losing them in a crash loses no work
                xact::async_commit();
            }
            // Next wake-up: the next slot, or a queued run that is not due yet (a retry later on).
            // A job still due after fire_due_jobs (next_run_at within its horizon) was skipped
            // because another transaction holds its row: it is tried again in LOCKED_RETRY_MS
            // (or at once when that transaction commits a change, which wakes the scheduler),
            // never in a loop that does not sleep.
            let (next_due, queued_http, locked, stale_running) = Spi::connect_mut(|c| {
                xact::with_plan(
                    c,
                    "SELECT least((SELECT min(next_run_at) FROM pulse.job WHERE enabled AND next_run_at > $1),
                                  (SELECT min(scheduled_for) FROM pulse.job_run
                                    WHERE status = 'queued' AND scheduled_for > now())),
                            (SELECT count(*) FROM (SELECT 1 FROM pulse.job_run WHERE status = 'queued'
                                AND kind = 'http' AND scheduled_for <= now() + interval '1 second'
                                ORDER BY kind, owner, scheduled_for, run_id LIMIT 1) r),
                            EXISTS (SELECT 1 FROM pulse.job WHERE enabled AND next_run_at <= $1),
                            $3 AND EXISTS (SELECT 1 FROM pulse.job_run WHERE status = 'running' AND kind = 'sql'
                                       AND coalesce(started_at, created_at) < now() - $2 * interval '1 second')",
                    &[
                        PgOid::BuiltIn(PgBuiltInOids::TIMESTAMPTZOID),
                        PgOid::BuiltIn(PgBuiltInOids::INT8OID),
                        PgOid::BuiltIn(PgBuiltInOids::BOOLOID),
                    ],
                    |c, stmt| {
                        let rescue_s = RESCUE_EVERY.as_secs() as i64;
                        c.select(
                            stmt,
                            None,
                            &[to_pg_ts(horizon).into(), rescue_s.into(), look_for_stale.into()],
                        )
                        .ok()
                        .and_then(|t| {
                            t.into_iter().next().map(|row| {
                                (
                                    row.get::<TimestampWithTimeZone>(1).ok().flatten(),
                                    row.get::<i64>(2).ok().flatten(),
                                    row.get::<bool>(3).ok().flatten().unwrap_or(false),
                                    row.get::<bool>(4).ok().flatten().unwrap_or(false),
                                )
                            })
                        })
                    },
                )
                .ok()
                .flatten()
                .unwrap_or((None, None, false, false))
            });
            (
                Tick::Ran {
                    next_due,
                    queued_http: queued_http.unwrap_or(0),
                    locked,
                    stale_running,
                },
                true,
            )
        })?;
        if r.1 {
            self.recovered = true;
        }
        Ok(r.0)
    }
}

/// At start: SQL runs left `running` (a crash, `kill -9`, an immediate shutdown, or a scheduler
/// restart, which stops the executors of the previous one) fail through the shared finish path
/// (statistics, alerts, a retry if the job allows one).
fn recover() {
    let lost = crate::run::finish::running_runs("sql", -1, i64::MAX);
    let n = crate::run::finish::rescue(
        &lost,
        "the server restarted (or the scheduler did) while this run was in progress",
    );
    if n > 0 {
        log!("pg_pulse: marked {n} interrupted run(s) as failed");
    }
}

/// How often the rescuer looks for lost runs, and how old a `running` run must be before it
/// can count as lost.
const RESCUE_EVERY: Duration = Duration::from_secs(5);

/// The rescuer: a SQL run `running` for more than RESCUE_EVERY that this scheduler does not
/// hold (no executor has it, no outcome waits to be recorded) is lost; it fails through the
/// shared finish path. Nothing the scheduler does should lose a run: this is the net under it.
fn rescue_lost_runs(pool: &Pool) {
    let pool = std::panic::AssertUnwindSafe(pool);
    let r = xact::run(move || {
        let lost: Vec<(i64, i64, i32)> =
            crate::run::finish::running_runs("sql", RESCUE_EVERY.as_secs() as i64, 1000)
                .into_iter()
                .filter(|(run_id, _, _)| !pool.holds(*run_id))
                .collect();
        crate::run::finish::rescue(
            &lost,
            "pg_pulse lost track of this run (no executor holds it): failed by the rescuer",
        )
    });
    match r {
        Ok(0) => {}
        Ok(n) => warning!("pg_pulse scheduler: the rescuer failed {n} lost run(s)"),
        Err(f) => warning!("pg_pulse scheduler: the rescuer failed: {}", f.message),
    }
}

/// Turns every due slot into one run row and moves each job's next_run_at past now. Returns the
/// horizon it used: a job still due up to it afterwards was locked by another transaction.
fn fire_due_jobs() -> chrono::DateTime<Utc> {
    let now = Utc::now();
    // Slots up to LEAD_MS ahead are queued now; executors start them at their exact instant.
    let horizon = now + chrono::Duration::milliseconds(super::LEAD_MS);
    let due: Vec<Due> = Spi::connect_mut(|c| {
        let t = xact::with_plan(
            c,
            "SELECT j.job_id, j.job_name, j.owner::oid, j.schedule, j.timezone, j.overlap, j.next_run_at,
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
    if !due.is_empty() {
        fire(now, due);
    }
    horizon
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
                    RunStatus::Skipped
                } else {
                    RunStatus::Queued
                };
                (status, None, None)
            }
            Some(text) => {
                let tz = crate::zones::load(&d.timezone);
                match (Schedule::parse(text), tz) {
                    (Ok(s), Ok(tz)) => {
                        // after downtime the missed slots collapse into this one run
                        // (a slot queued ahead of time is in the future: count from it)
                        let from = now.max(from_pg_ts(d.slot));
                        let next = s.next_after(&tz, from).map(to_pg_ts);
                        if d.active && d.overlap == "skip" {
                            (RunStatus::Skipped, Some("the previous run was still queued or running (overlap = 'skip')".to_string()), next)
                        } else {
                            (RunStatus::Queued, None, next)
                        }
                    }
                    (Err(e), _) | (_, Err(e)) => (RunStatus::Failed, Some(format!("the stored schedule is invalid: {e}; the job stops until it is fixed with pulse.alter_job")), None),
                }
            }
        };
        ids.push(d.job_id);
        kinds.push(if d.http { "http" } else { "sql" }.to_string());
        names.push(d.job_name);
        owners.push(d.owner);
        slots.push(d.slot);
        statuses.push(status);
        messages.push(message);
        nexts.push(next);
    }
    crate::run::queue::queue_slots(&ids, names, owners, slots, &statuses, messages, kinds);
    let r = Spi::run_with_args(
        "UPDATE pulse.job j SET next_run_at = u.next FROM unnest($1::bigint[], $2::timestamptz[]) AS u(id, next)
          WHERE j.job_id = u.id",
        &[ids.into(), nexts.into()],
    );
    if let Err(e) = r {
        pgrx::error!("could not advance jobs: {e}");
    }
}
