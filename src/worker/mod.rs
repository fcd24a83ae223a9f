//! Background workers: one scheduler (registered at server start, connected to
//! `pulse.database_name`) and a pool of executors it starts on demand, up to
//! `pulse.max_running_jobs`. They meet in a small shared-memory area.
//!
//! * The scheduler sleeps on its latch until the next due instant. Backends that change jobs set
//!   its latch when their transaction commits; executors set it when they connect, finish a run
//!   or exit.
//! * Due slots become `queued` rows in `pulse.job_run` (together with the job's new `next_run_at`,
//!   in one transaction: exactly one run row per slot, also across restarts).
//! * The scheduler claims queued runs (`running`, durably) for executors of the run's owner and
//!   database (`dispatch`, `claim`), hands them out in shared memory (`handoff`) and records the
//!   outcomes they report (`runs`). Executors (`session`) are sessions of one role in one
//!   database that run commands as top-level statements (`statements`).
//! * At housekeeping the scheduler also looks for updated zone files (`zone_updates`) and moves
//!   the next run of the jobs in those zones.
//! * One HTTP worker (registered at server start too) sends HTTP job runs and after-commit
//!   requests through a pool of threads that never call PostgreSQL (`crate::http::client`).

mod claim;
mod control;
mod dispatch;
mod handoff;
mod http;
mod scheduler;
mod session;
mod settle;
mod statements;
mod zone_updates;

pub use control::{http_worker_liveness, scheduler_liveness};
pub use session::current_run;

use pgrx::bgworkers::{BackgroundWorkerBuilder, BgWorkerStartTime};
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgLwLock};
use std::cell::Cell;
use std::time::Duration;

/// Upper bound of `pulse.max_running_jobs` (the size of the slot table in shared memory).
pub const MAX_EXECUTORS: usize = 64;

/// How far ahead of its instant a run is queued and claimed: the executor then waits for the exact
/// instant itself, so the scheduler's and the claim's own latency do not delay the start.
pub const LEAD_MS: i64 = 20;

/// Sleeps on this process's latch for at most `ms` milliseconds (or until it is set), then resets
/// it. Exits if the postmaster dies.
pub fn wait_latch(ms: i64) {
    let ms = stats_before_sleep(ms);
    unsafe {
        pg_sys::WaitLatch(
            pg_sys::MyLatch,
            (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
            ms.max(0) as _,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
    }
}

/// Before a worker sleeps: a long sleep sends pending statistics first (so an idle worker never
/// sits on them); a short one only if that costs nothing, else it is cut to when they are due.
pub fn stats_before_sleep(ms: i64) -> i64 {
    let pending = crate::xact::flush_stats(ms >= 1000);
    if pending > 0 {
        ms.min(pending)
    } else {
        ms
    }
}

/// Settings of the workers that run pg_pulse's own SQL as superuser (scheduler, HTTP worker),
/// fixed with the highest priority so that no database or role setting (`ALTER DATABASE ...
/// SET`, which a database owner who is not a superuser may run) can change them:
/// * `search_path`: functions and operators resolve in `pg_catalog` only (a role with CREATE on
///   a schema in the path could otherwise capture a call and run code as superuser);
/// * transaction defaults and timeouts: read-only transactions, serializable isolation or a
///   short statement timeout would stop the workers for every role; a lock is waited for at
///   most 5 seconds (the workers never wait long for a row a caller holds);
/// * `jit = off`: the workers' statements are small and run often.
///
/// These workers run no user command.
const WORKER_SETTINGS: [(&std::ffi::CStr, &std::ffi::CStr); 8] = [
    (c"search_path", c"pg_catalog, pg_temp"),
    (c"default_transaction_read_only", c"off"),
    (c"default_transaction_isolation", c"read committed"),
    (c"default_transaction_deferrable", c"off"),
    (c"statement_timeout", c"0"),
    (c"idle_in_transaction_session_timeout", c"0"),
    (c"lock_timeout", c"5s"),
    // small statements on hot paths: compiling them would cost more than it saves
    (c"jit", c"off"),
];

pub fn pin_worker_settings() {
    for (name, value) in WORKER_SETTINGS {
        crate::pgutil::pin_guc(name, value);
    }
}

/// `pulse.max_running_jobs`, within the slot array's bounds.
pub fn max_running() -> usize {
    crate::MAX_RUNNING_JOBS.get().clamp(1, MAX_EXECUTORS as i32) as usize
}

impl Shared {
    /// Executor slots in use (starting, idle or busy).
    pub fn occupied(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.state != SlotState::Free)
            .count()
    }
}

#[derive(Copy, Clone, Default, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum SlotState {
    #[default]
    Free,
    /// The scheduler asked the postmaster for a worker; it has not attached yet.
    Reserved,
    /// An executor process owns the slot.
    Live,
}

/// Runs handed to one executor ahead of time: while it runs one, the scheduler records the
/// previous outcome and hands it the next, so a burst never waits for the scheduler's commits.
pub const QUEUE_DEPTH: usize = 3;

/// Runs waiting behind an executor's run that has gone on for this long are taken back and
/// handed out again, so a long run never holds up runs handed to its executor ahead of time.
pub const TAKE_BACK_AFTER_MS: i64 = 100;

#[derive(Copy, Clone, Default, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Phase {
    #[default]
    Empty,
    /// Handed to the executor (its run row is `running`), not started yet.
    Assigned,
    /// The executor took it and is running it.
    Taken,
    /// Finished: the outcome is in the run's envelope, for the scheduler to record.
    Done,
}

/// One run handed to an executor: the envelope (`handoff`) lives in a dynamic shared memory
/// segment made by the scheduler.
#[derive(Copy, Clone, Default, Debug)]
pub struct Entry {
    pub phase: Phase,
    /// Order of hand-out: an executor takes its entries oldest first.
    pub seq: u32,
    pub handle: u32,
    pub run_id: i64,
    /// `pulse.cancel_run` asked to cancel this run (before or while it runs).
    pub cancel: bool,
    /// The run row names this entry's executor (`executor_pid`).
    pub pid_recorded: bool,
}

/// One executor: a session of one role in one database, serving only that role's runs there.
#[derive(Copy, Clone, Default, Debug)]
pub struct Slot {
    pub state: SlotState,
    pub pid: i32,
    /// The database and role the executor connects to (set when the slot is reserved).
    pub db: u32,
    pub role: u32,
    /// The run being executed, 0 when idle, and when it started (Unix microseconds).
    pub run_id: i64,
    pub run_started_us: i64,
    /// The scheduler wants the slot for another role: exit once nothing is handed out.
    pub retire: bool,
    /// The process exited (set from its exit callback); the scheduler frees the slot.
    pub exited: bool,
    pub next_seq: u32,
    pub queue: [Entry; QUEUE_DEPTH],
}

impl Slot {
    /// Entries handed out and not yet recorded by the scheduler.
    pub fn pending(&self) -> usize {
        self.queue
            .iter()
            .filter(|e| e.phase != Phase::Empty)
            .count()
    }

    /// An executor (starting or live) that may be handed runs: not leaving, not gone.
    pub fn accepts_runs(&self) -> bool {
        self.state != SlotState::Free && !self.retire && !self.exited
    }

    /// Its current run has gone on for `TAKE_BACK_AFTER_MS` or more (`now_us`: Unix µs).
    pub fn busy_long(&self, now_us: i64) -> bool {
        self.run_id != 0 && now_us - self.run_started_us >= TAKE_BACK_AFTER_MS * 1000
    }
}

#[derive(Copy, Clone)]
pub struct Shared {
    pub scheduler_pid: i32,
    pub http_pid: i32,
    /// Unix microseconds: when the running scheduler started, and when its loop last turned.
    pub scheduler_started_us: i64,
    pub scheduler_heartbeat_us: i64,
    /// Unix microseconds: when the running HTTP worker started, and when its loop last turned.
    pub http_started_us: i64,
    pub http_heartbeat_us: i64,
    pub slots: [Slot; MAX_EXECUTORS],
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            scheduler_pid: 0,
            http_pid: 0,
            scheduler_started_us: 0,
            scheduler_heartbeat_us: 0,
            http_started_us: 0,
            http_heartbeat_us: 0,
            slots: [Slot::default(); MAX_EXECUTORS],
        }
    }
}

unsafe impl PGRXSharedMemory for Shared {}

pub static SHARED: PgLwLock<Shared> = unsafe { PgLwLock::new(c"pg_pulse_shared") };

pub fn init_shared_memory() {
    pg_shmem_init!(SHARED);
}

pub fn register_scheduler() {
    BackgroundWorkerBuilder::new("pg_pulse scheduler")
        .set_type("pg_pulse scheduler")
        .set_library("pg_pulse")
        .set_function("pulse_scheduler_main")
        .enable_spi_access()
        // never on a hot standby: the postmaster starts it once recovery has finished (promotion)
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        // it exits with code 1 when stopped (SIGTERM): started again after a second
        .set_restart_time(Some(Duration::from_secs(1)))
        .load();
}

pub fn register_http_worker() {
    BackgroundWorkerBuilder::new("pg_pulse http")
        .set_type("pg_pulse http")
        .set_library("pg_pulse")
        .set_function("pulse_http_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(1)))
        .load();
}

/// Sets the latch of a backend by pid (no-op if it is gone).
pub(crate) fn set_latch_of(pid: i32) {
    if pid == 0 {
        return;
    }
    unsafe {
        let proc_ = pg_sys::BackendPidGetProc(pid);
        if !proc_.is_null() {
            pg_sys::SetLatch(&mut (*proc_).procLatch);
        }
    }
}

pub(crate) fn wake_scheduler_now() {
    let pid = SHARED.share().scheduler_pid;
    set_latch_of(pid);
}

pub(crate) fn wake_http_now() {
    let pid = SHARED.share().http_pid;
    set_latch_of(pid);
}

thread_local! {
    static WAKE_REGISTERED: Cell<bool> = const { Cell::new(false) };
    static WAKE_HTTP_REGISTERED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `wake` when the current transaction commits (once per transaction and `flag`).
fn at_commit(flag: &'static std::thread::LocalKey<Cell<bool>>, wake: fn()) {
    if !crate::PRELOADED.load(std::sync::atomic::Ordering::Relaxed)
        || flag.with(|w| w.replace(true))
    {
        return;
    }
    use pgrx::{register_xact_callback, PgXactCallbackEvent};
    register_xact_callback(PgXactCallbackEvent::Commit, move || {
        flag.with(|w| w.set(false));
        wake();
    });
    register_xact_callback(PgXactCallbackEvent::Abort, move || {
        flag.with(|w| w.set(false));
    });
}

/// Wakes the scheduler when the current transaction commits.
pub fn wake_scheduler_at_commit() {
    at_commit(&WAKE_REGISTERED, wake_scheduler_now);
}

/// Wakes the HTTP worker when the current transaction commits (after-commit requests).
pub fn wake_http_at_commit() {
    at_commit(&WAKE_HTTP_REGISTERED, wake_http_now);
}

/// Asks the executor holding `run_id` to cancel it: skipped if it has not started, interrupted
/// (SIGINT, as pg_cancel_backend) if it is running. `_pid` is the run's recorded executor.
/// Whether an executor holds it: a run claimed a moment ago may not be handed out yet (the
/// scheduler hands runs out right after the claim commits), and the caller asks again.
pub fn cancel_executor_run(_pid: i32, run_id: i64) -> bool {
    let mut sh = SHARED.exclusive();
    for slot in sh.slots.iter_mut().filter(|s| s.state != SlotState::Free) {
        let running = slot.run_id == run_id;
        if let Some(e) = slot
            .queue
            .iter_mut()
            .find(|e| e.phase != Phase::Empty && e.run_id == run_id)
        {
            e.cancel = true;
            if running && slot.pid != 0 {
                unsafe {
                    libc::kill(slot.pid, libc::SIGINT);
                }
            }
            return true;
        }
    }
    false
}
