//! Executors: each is a session of one role in one database, started by the scheduler and
//! connected as that role (`BackgroundWorkerInitializeConnectionByOid`), the way pg_cron's
//! background workers connect as a job's user. `session_user` and `current_user` are the job's
//! owner from the first byte of the connection: whatever a command makes PostgreSQL run (its
//! statements, deferred triggers at commit, WITH HOLD cursors, index expressions, role
//! settings) runs with the owner's rights only. The process never runs SQL of pg_pulse's own:
//! it receives runs from the scheduler in shared memory (`handoff`) and reports outcomes back.
//!
//! An executor serves only its role's runs in its database, one at a time; between two runs
//! the session is reset as `DISCARD ALL` does (settings, prepared statements, cursors,
//! temporary tables, LISTEN, advisory locks, sequence state, cached plans).

use super::handoff::{Ended, Order, Report, Segment};
use super::{set_latch_of, Phase, SlotState, SHARED};
use crate::pgutil::{from_pg_ts, to_pg_ts};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::cell::RefCell;
use std::time::{Duration, Instant};

unsafe extern "C-unwind" {
    // the C signal handlers themselves (pgrx's pg_sys::die is a Rust wrapper, not a handler)
    #[link_name = "die"]
    fn pg_die(signal: i32);
    #[link_name = "SignalHandlerForConfigReload"]
    fn pg_reload_handler(signal: i32);
}

/// What `pulse.current_run()` shows inside a job's command.
#[derive(Clone)]
pub struct RunContext {
    pub run_id: i64,
    pub job_id: i64,
    pub job_name: String,
    pub scheduled_for: TimestampWithTimeZone,
    pub attempt: i32,
    pub trigger: String,
}

thread_local! {
    static CURRENT: RefCell<Option<RunContext>> = const { RefCell::new(None) };
}

pub fn current_run() -> Option<RunContext> {
    CURRENT.with(|c| c.borrow().clone())
}

/// PostgreSQL's `pqsignal` (a macro over `pqsignal_be` in a backend from 18 on).
unsafe fn pqsignal(signo: i32, handler: pg_sys::pqsigfunc) {
    #[cfg(not(feature = "pg18"))]
    pg_sys::pqsignal(signo, handler);
    #[cfg(feature = "pg18")]
    pg_sys::pqsignal_be(signo, handler);
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pulse_executor_main(arg: pg_sys::Datum) {
    let slot = arg.value();
    unsafe {
        // SIGTERM ends a running command at once (FATAL at the next interrupt check), as in a backend
        pqsignal(libc::SIGTERM, Some(pg_die));
        pqsignal(libc::SIGHUP, Some(pg_reload_handler));
        pg_sys::BackgroundWorkerUnblockSignals();
        pg_sys::before_shmem_exit(Some(on_exit), pg_sys::Datum::from(slot));
    }
    let (db, role) = {
        let sh = SHARED.share();
        (sh.slots[slot].db, sh.slots[slot].role)
    };
    // Connected as the job's owner: PostgreSQL checks LOGIN, CONNECT and the connection limits
    // as for any session, and applies the role's and database's settings.
    unsafe {
        pg_sys::BackgroundWorkerInitializeConnectionByOid(
            pg_sys::Oid::from(db),
            pg_sys::Oid::from(role),
            0,
        );
    }
    let pid = unsafe { pg_sys::MyProcPid };
    {
        let mut sh = SHARED.exclusive();
        let s = &mut sh.slots[slot];
        s.state = SlotState::Live;
        s.pid = pid;
    }
    set_latch_of(SHARED.share().scheduler_pid);

    let mut idle_since = Instant::now();
    loop {
        pgrx::check_for_interrupts!();
        unsafe {
            if pg_sys::ConfigReloadPending != 0 {
                pg_sys::ConfigReloadPending = 0;
                pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP);
            }
            pg_sys::ResetLatch(pg_sys::MyLatch);
        }
        match take(slot) {
            Take::Run(seq, handle, cancelled) => {
                execute(slot, seq, handle, cancelled);
                idle_since = Instant::now();
                continue;
            }
            Take::Retire => break,
            Take::Nothing => {}
        }
        let idle_limit = Duration::from_secs(crate::EXECUTOR_IDLE_TIMEOUT.get().max(1) as u64);
        let idle_for = idle_since.elapsed();
        if idle_for >= idle_limit {
            // leave only with nothing handed out (checked under the lock)
            let mut sh = SHARED.exclusive();
            if sh.slots[slot].pending() == 0 {
                sh.slots[slot].retire = true;
                break;
            }
            continue;
        }
        let ms = (idle_limit - idle_for).as_millis().max(1) as i64;
        super::wait_latch(ms);
    }
    // the exit callback flags the slot; the scheduler frees it
}

enum Take {
    Run(u32, u32, bool),
    Retire,
    Nothing,
}

/// The oldest run handed to this executor, marked taken; or whether to leave.
fn take(slot: usize) -> Take {
    let mut sh = SHARED.exclusive();
    let pool_shrunk = sh.occupied() > super::max_running();
    let s = &mut sh.slots[slot];
    let next = (0..s.queue.len())
        .filter(|&k| s.queue[k].phase == Phase::Assigned)
        .min_by_key(|&k| s.queue[k].seq);
    match next {
        Some(k) => {
            let e = &mut s.queue[k];
            e.phase = Phase::Taken;
            let (seq, handle, run_id, cancel) = (e.seq, e.handle, e.run_id, e.cancel);
            s.run_id = run_id;
            s.run_started_us = chrono::Utc::now().timestamp_micros();
            Take::Run(seq, handle, cancel)
        }
        None if s.retire || (pool_shrunk && s.pending() == 0) => {
            s.retire = true;
            Take::Retire
        }
        None => Take::Nothing,
    }
}

/// Runs one handed-out run and reports its outcome to the scheduler.
fn execute(slot: usize, seq: u32, handle: u32, cancelled_before: bool) {
    // without the envelope (gone with a scheduler that exited) there is nothing to run, and
    // the scheduler fails the run when it finds no report
    if let Some(seg) = Segment::attach(handle) {
        let order = seg.order();
        let report = if cancelled_before {
            Report {
                ended: Ended::Cancelled,
                started_at: to_pg_ts(chrono::Utc::now()).into_inner(),
                duration_us: 0,
                message: "cancelled by pulse.cancel_run".into(),
            }
        } else {
            let report = run(slot, order);
            // the session is clean before the run counts as finished (no lock, cursor or
            // temporary table of it outlives it, even while this executor idles)
            reset_session();
            report
        };
        seg.report(&report);
        seg.detach();
    }
    let scheduler = {
        let mut sh = SHARED.exclusive();
        let s = &mut sh.slots[slot];
        s.run_id = 0;
        if let Some(e) = s
            .queue
            .iter_mut()
            .find(|e| e.seq == seq && e.phase == Phase::Taken)
        {
            e.phase = Phase::Done;
        }
        sh.scheduler_pid
    };
    set_latch_of(scheduler);
    crate::xact::flush_stats(false);
}

fn run(slot: usize, order: Order) -> Report {
    let ctx = RunContext {
        run_id: order.run_id,
        job_id: order.job_id,
        job_name: order.job_name.clone(),
        scheduled_for: TimestampWithTimeZone::try_from(order.scheduled_for)
            .unwrap_or_else(|_| to_pg_ts(chrono::Utc::now())),
        attempt: order.attempt,
        trigger: order.trigger.clone(),
    };
    // Handed out a little ahead of time: start at the scheduled instant, to the microsecond.
    let early = (from_pg_ts(ctx.scheduled_for) - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    if !early.is_zero() {
        std::thread::sleep(early.min(Duration::from_millis(super::LEAD_MS as u64)));
    }
    unsafe {
        // a cancel meant for an earlier run must not hit this one
        if pg_sys::ProcDiePending == 0 {
            pg_sys::QueryCancelPending = 0;
        }
    }
    // ... but a cancel of this one, asked after it was taken (the signal may have come just
    // before the line above), must: pulse.cancel_run marks the run before it signals
    let cancelled = {
        let sh = SHARED.share();
        sh.slots[slot]
            .queue
            .iter()
            .any(|e| e.run_id == order.run_id && e.cancel)
    };
    if cancelled {
        return Report {
            ended: Ended::Cancelled,
            started_at: to_pg_ts(chrono::Utc::now()).into_inner(),
            duration_us: 0,
            message: "cancelled by pulse.cancel_run".into(),
        };
    }
    CURRENT.with(|c| *c.borrow_mut() = Some(ctx));
    let command = order.command;
    let ccommand = std::ffi::CString::new(command.replace('\0', " ")).unwrap_or_default();
    unsafe {
        pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_RUNNING, ccommand.as_ptr());
    }
    let started_at = to_pg_ts(chrono::Utc::now()).into_inner();
    let t0 = Instant::now();
    let deadline = order
        .timeout_ms
        .map(|ms| t0 + Duration::from_millis(ms as u64));
    let result = super::statements::run(&command, deadline);
    let duration_us = t0.elapsed().as_micros() as i64;
    CURRENT.with(|c| *c.borrow_mut() = None);
    unsafe {
        pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_IDLE, std::ptr::null());
    }
    let (ended, message) = match result {
        Ok(tag) => (Ended::Succeeded, tag),
        Err(f) => {
            let cancelled = {
                let sh = SHARED.share();
                sh.slots[slot]
                    .queue
                    .iter()
                    .any(|e| e.run_id == order.run_id && e.cancel)
            };
            let ended = if f.failure.sqlstate == PgSqlErrorCode::ERRCODE_QUERY_CANCELED {
                if cancelled {
                    Ended::Cancelled
                } else if deadline.is_some_and(|d| Instant::now() + Duration::from_millis(2) >= d) {
                    // (the timer has millisecond resolution)
                    Ended::TimedOut
                } else {
                    Ended::Failed
                }
            } else {
                Ended::Failed
            };
            let message = if ended == Ended::Cancelled {
                "cancelled by pulse.cancel_run".to_string()
            } else {
                f.message()
            };
            (ended, message)
        }
    };
    Report {
        ended,
        started_at,
        duration_us,
        message,
    }
}

/// After each run: what `DISCARD ALL` does (the session authorization, settings, prepared
/// statements, cursors, temporary tables, LISTEN, advisory locks, sequence state, cached plans).
fn reset_session() {
    if let Err(f) = super::statements::run("DISCARD ALL", None) {
        // a session that cannot be reset must not run anything more
        pgrx::ereport!(
            PgLogLevel::FATAL,
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!(
                "pg_pulse executor: could not reset the session between runs: {}",
                f.message()
            )
        );
    }
}

/// Exit callback (also on FATAL): flag the slot so the scheduler frees it and settles the runs
/// handed to it, and wake the scheduler.
unsafe extern "C-unwind" fn on_exit(_code: i32, arg: pg_sys::Datum) {
    let slot = arg.value();
    let pid = unsafe { pg_sys::MyProcPid };
    let scheduler = {
        let mut sh = SHARED.exclusive();
        let s = &mut sh.slots[slot];
        if s.state != SlotState::Free && (s.pid == pid || s.pid == 0) {
            s.exited = true;
        }
        sh.scheduler_pid
    };
    set_latch_of(scheduler);
}
