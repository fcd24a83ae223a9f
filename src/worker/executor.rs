//! Executors: claim queued runs and execute each command as the job's owner.

use super::xact::{self, Failure};
use super::{set_latch_of, SlotState, SHARED};
use crate::pgutil::{from_pg_ts, interval_micros};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::cell::RefCell;
use std::ffi::CString;
use std::time::{Duration, Instant};

/// `STATEMENT_TIMEOUT` in PostgreSQL's `TimeoutId` enum (utils/timeout.h), which pgrx does not bind.
const STATEMENT_TIMEOUT: i32 = 3;

unsafe extern "C-unwind" {
    fn enable_timeout_after(id: i32, delay_ms: i32);
    fn disable_timeout(id: i32, keep_indicator: bool);
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
    static MY_SLOT: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
}

pub fn current_run() -> Option<RunContext> {
    CURRENT.with(|c| c.borrow().clone())
}

struct Claimed {
    ctx: RunContext,
    owner: pg_sys::Oid,
    command: Option<String>,
    timeout_ms: Option<i64>,
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pulse_executor_main(arg: pg_sys::Datum) {
    let slot = arg.value();
    unsafe {
        // SIGTERM ends a running command at once (FATAL at the next interrupt check), as in a backend
        pg_sys::pqsignal(libc::SIGTERM, Some(pg_die));
        pg_sys::pqsignal(libc::SIGHUP, Some(pg_reload_handler));
        pg_sys::BackgroundWorkerUnblockSignals();
    }
    let db = crate::database_name();
    pgrx::bgworkers::BackgroundWorker::connect_worker_to_spi(Some(&db), None);
    let pid = unsafe { pg_sys::MyProcPid };
    MY_SLOT.with(|s| s.set(slot));
    unsafe {
        pg_sys::before_shmem_exit(Some(on_exit), pg_sys::Datum::from(slot));
    }
    {
        let mut sh = SHARED.exclusive();
        let s = &mut sh.slots[slot];
        *s = super::Slot {
            state: SlotState::Live,
            pid,
            ..Default::default()
        };
    }

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
        // pulse.max_running_jobs may have been lowered by a reload: surplus idle executors leave
        // (the slot is freed under the lock, so exactly the surplus goes).
        {
            let mut sh = SHARED.exclusive();
            if sh.occupied() > super::max_running() {
                sh.slots[slot] = super::Slot::default();
                return;
            }
        }
        match claim(pid) {
            Ok(Some(run)) => {
                // each run's transaction may claim the next one (see `claim_next`)
                let mut next = Some(run);
                while let Some(run) = next.take() {
                    next = execute(slot, run);
                }
                idle_since = Instant::now();
                if used_temp_objects() {
                    // Temporary tables outlive a transaction; a fresh process is the only clean
                    // slate for the next run, so this executor retires.
                    break;
                }
                continue;
            }
            Ok(None) => {}
            Err(f) => {
                warning!("pg_pulse executor: could not claim a run: {}", f.message);
            }
        }
        let idle_limit = Duration::from_secs(crate::EXECUTOR_IDLE_TIMEOUT.get().max(1) as u64);
        let idle_for = idle_since.elapsed();
        if idle_for >= idle_limit {
            break;
        }
        // (the latch is reset at the top of the loop, before claiming)
        let ms = (idle_limit - idle_for).as_millis().max(1) as i64;
        super::wait_latch(ms);
    }
    // idle for too long, or retiring: give the slot back and let the scheduler restaff if needed
    let scheduler = {
        let mut sh = SHARED.exclusive();
        sh.slots[slot] = super::Slot::default();
        sh.scheduler_pid
    };
    set_latch_of(scheduler);
}

/// After a failed attempt: queue the next one (`trigger = retry`) after the job's backoff (and no
/// sooner than a server's Retry-After), if the job allows more attempts and is enabled. Returns
/// whether a retry was queued.
pub(super) fn schedule_retry(job_id: i64, attempt: i32, retry_after: Option<Duration>) -> bool {
    let Ok((Some(max), Some(backoff), Some(true))) = Spi::get_three_with_args::<i32, Interval, bool>(
        "SELECT max_attempts, retry_backoff, enabled FROM pulse.job WHERE job_id = $1",
        &[job_id.into()],
    ) else {
        return false;
    };
    if attempt >= max {
        return false;
    }
    let base = Duration::from_micros(interval_micros(&backoff).max(1) as u64);
    let policy = crate::retry::Backoff {
        base,
        cap: base.max(Duration::from_secs(3600)),
        jitter: crate::retry::Backoff::default().jitter,
    };
    let unit = unsafe { pg_sys::pg_prng_double(&raw mut pg_sys::pg_global_prng_state) };
    let delay_us = policy
        .delay_honouring(attempt.max(1) as u32, unit, retry_after)
        .as_micros() as i64;
    Spi::run_with_args(
        "INSERT INTO pulse.job_run (job_id, job_name, owner, scheduled_for, status, trigger, attempt, kind)
         SELECT j.job_id, j.job_name, j.owner, clock_timestamp() + $2 * interval '1 microsecond',
                'queued', 'retry', $3, CASE WHEN j.http IS NULL THEN 'sql' ELSE 'http' END
           FROM pulse.job j WHERE j.job_id = $1",
        &[job_id.into(), delay_us.into(), (attempt + 1).into()],
    )
    .is_ok()
}

/// Did a command of this session create temporary objects (a temp schema exists)?
fn used_temp_objects() -> bool {
    let mut temp = pg_sys::Oid::INVALID;
    let mut toast = pg_sys::Oid::INVALID;
    unsafe { pg_sys::GetTempNamespaceState(&mut temp, &mut toast) };
    temp != pg_sys::Oid::INVALID
}

/// Exit callback (also on FATAL): flag the slot so the scheduler frees it and fails a run left
/// `running`, and wake the scheduler.
unsafe extern "C-unwind" fn on_exit(_code: i32, arg: pg_sys::Datum) {
    let slot = arg.value();
    let pid = unsafe { pg_sys::MyProcPid };
    let scheduler = {
        let mut sh = SHARED.exclusive();
        let s = &mut sh.slots[slot];
        if s.pid == pid && s.state == SlotState::Live {
            s.exited = true;
        }
        sh.scheduler_pid
    };
    set_latch_of(scheduler);
}

fn claim(pid: i32) -> Result<Option<Claimed>, Failure> {
    // The claim commits synchronously: once a command starts, its `running` mark survives a crash,
    // so a run interrupted by a crash is reported failed, never silently run twice.
    xact::run(move || claim_in_xact(pid))
}

/// At the end of a run's transaction, claim the next due run in the same transaction (in a
/// subtransaction, so that a failing claim costs nothing but itself): its `running` mark then
/// commits, durably, with the finished run's outcome, and a burst of runs needs one WAL flush
/// per run instead of two. Skipped when this executor will not run it: it is surplus, it is
/// being stopped or reconfigured, or a command left temporary objects (the executor retires).
fn claim_next() -> Option<Claimed> {
    let stopping = unsafe {
        pg_sys::ProcDiePending != 0
            || pg_sys::QueryCancelPending != 0
            || pg_sys::ConfigReloadPending != 0
    };
    if stopping || used_temp_objects() {
        return None;
    }
    if SHARED.share().occupied() > super::max_running() {
        return None;
    }
    let pid = unsafe { pg_sys::MyProcPid };
    xact::in_subxact(move || claim_in_xact(pid)).flatten()
}

/// The claim itself, in the current transaction.
fn claim_in_xact(pid: i32) -> Option<Claimed> {
    {
        Spi::connect_mut(|c| {
            // Runs are queued up to LEAD_MS ahead of their instant; the executor claims one that
            // early and waits for the exact instant itself (see `execute`).
            // The plan must walk job_run_queued_idx in order and stop at the first unlocked row.
            // Planned while little is queued (the usual case), the planner prefers reading every
            // active run and sorting them, which costs O(queued) per claim and O(n^2) for a burst
            // of n runs due together; without sorts it can only take the ordered index.
            crate::pgutil::set_xact_guc(c"enable_sort", c"off");
            let t = xact::with_plan(
                c,
                "UPDATE pulse.job_run r SET status = 'running',
                        started_at = greatest(clock_timestamp(), r.scheduled_for), executor_pid = $1
                  WHERE r.run_id = (SELECT q.run_id FROM pulse.job_run q
                                     WHERE q.status = 'queued' AND q.kind = 'sql'
                                       AND q.scheduled_for <= clock_timestamp() + $2 * interval '1 millisecond'
                                     ORDER BY q.scheduled_for, q.run_id LIMIT 1 FOR UPDATE SKIP LOCKED)
              RETURNING r.run_id, r.job_id, r.job_name, r.scheduled_for, r.attempt, r.trigger, r.owner,
                        (SELECT j.command FROM pulse.job j WHERE j.job_id = r.job_id),
                        (SELECT j.timeout FROM pulse.job j WHERE j.job_id = r.job_id)",
                &[
                    PgOid::BuiltIn(PgBuiltInOids::INT4OID),
                    PgOid::BuiltIn(PgBuiltInOids::INT8OID),
                ],
                // select, not update: a claim that finds nothing assigns no transaction id
                |c, stmt| c.select(stmt, None, &[pid.into(), super::LEAD_MS.into()]),
            )
            .ok()?
            .ok()?;
            let row = t.into_iter().next()?;
            let timeout: Option<Interval> = row.get(9).ok()?;
            Some(Claimed {
                ctx: RunContext {
                    run_id: row.get(1).ok()??,
                    job_id: row.get(2).ok()??,
                    job_name: row.get(3).ok()??,
                    scheduled_for: row.get(4).ok()??,
                    attempt: row.get(5).ok()??,
                    trigger: row.get(6).ok()??,
                },
                owner: row.get(7).ok()??,
                command: row.get(8).ok()?,
                timeout_ms: timeout.map(|i| (interval_micros(&i) / 1000).max(1)),
            })
        })
    }
}

/// Runs a claimed run and records its outcome; returns the next run, if the outcome's
/// transaction claimed one.
fn execute(slot: usize, run: Claimed) -> Option<Claimed> {
    let run_id = run.ctx.run_id;
    {
        let mut sh = SHARED.exclusive();
        sh.slots[slot].run_id = run_id;
        sh.slots[slot].cancel_run_id = 0;
    }
    CURRENT.with(|c| *c.borrow_mut() = Some(run.ctx.clone()));
    // Claimed a little ahead of time: start at the scheduled instant, to the microsecond.
    let early = (from_pg_ts(run.ctx.scheduled_for) - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    if !early.is_zero() {
        std::thread::sleep(early.min(Duration::from_millis(super::LEAD_MS as u64)));
    }
    let started = Instant::now();
    // the real start, recorded with the outcome (the claim wrote an estimate)
    let started_at = crate::pgutil::to_pg_ts(chrono::Utc::now());
    let owner = run.owner;
    let command = run.command.clone();
    let timeout_ms = run.timeout_ms;

    let job_id = run.ctx.job_id;
    let result = xact::run(move || {
        run_as_owner(
            (run_id, job_id, started),
            started_at,
            owner,
            command.as_deref(),
            timeout_ms,
        )
    });
    unsafe {
        disable_timeout(STATEMENT_TIMEOUT, false);
    }
    CURRENT.with(|c| *c.borrow_mut() = None);

    let mut next = None;
    match result {
        Ok(claimed) => next = claimed,
        Err(f) => {
            let cancelled = SHARED.share().slots[slot].cancel_run_id == run_id;
            let status = if f.sqlstate == PgSqlErrorCode::ERRCODE_QUERY_CANCELED {
                let timed_out = timeout_ms
                    .is_some_and(|ms| started.elapsed() >= Duration::from_millis(ms as u64));
                if timed_out && !cancelled {
                    "timed_out"
                } else {
                    "cancelled"
                }
            } else {
                "failed"
            };
            let message = f.message.clone();
            let attempt = run.ctx.attempt;
            let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
            let r = xact::run(move || {
                let r = finish_run(
                    &crate::health::api::Outcome {
                        job_id,
                        run_id,
                        status,
                        message: Some(&message),
                        started_at,
                        duration_ms,
                    },
                    None,
                );
                let retried = status != "cancelled" && schedule_retry(job_id, attempt, None);
                let next = if r.is_ok() { claim_next() } else { None };
                (r, retried, next)
            });
            let r = r.map(|(r, retried, claimed)| {
                if retried {
                    // the retry is due later: let the scheduler plan its wake-up
                    set_latch_of(SHARED.share().scheduler_pid);
                }
                next = claimed;
                r
            });
            if !matches!(r, Ok(Ok(()))) {
                warning!("pg_pulse executor: could not record the outcome of run {run_id}");
            }
        }
    }
    unsafe {
        pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_IDLE, std::ptr::null());
    }
    let mut sh = SHARED.exclusive();
    sh.slots[slot].run_id = 0;
    sh.slots[slot].cancel_run_id = 0;
    next
}

/// Inside the run's transaction: apply the owner's role settings, switch to the owner, arm the
/// timeout, run the command, switch back, undo the command's session-level settings, and record
/// success (committed together with the command's own changes, and with the claim of the next
/// run, which it returns).
fn run_as_owner(
    (run_id, job_id, t0): (i64, i64, Instant),
    started_at: TimestampWithTimeZone,
    owner: pg_sys::Oid,
    command: Option<&str>,
    timeout_ms: Option<i64>,
) -> Option<Claimed> {
    let Some(command) = command else {
        pgrx::error!("the job was removed before this run started");
    };
    let role_exists = unsafe {
        pg_sys::SearchSysCacheExists(
            pg_sys::SysCacheIdentifier::AUTHOID as i32,
            pg_sys::Datum::from(owner),
            pg_sys::Datum::from(0),
            pg_sys::Datum::from(0),
            pg_sys::Datum::from(0),
        )
    };
    if !role_exists {
        ereport!(
            PgLogLevel::ERROR,
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("the role that owns this job (oid {}) no longer exists", owner.to_u32()),
            "Recreate the job as an existing role with pulse.schedule_job, or remove it with pulse.unschedule_job."
        );
    }
    let ccommand =
        CString::new(command).unwrap_or_else(|_| pgrx::error!("the command contains a zero byte"));
    unsafe {
        let nest = pg_sys::NewGUCNestLevel();
        apply_role_settings(owner);
        let mut saved_user = pg_sys::Oid::INVALID;
        let mut saved_ctx = 0i32;
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_ctx);
        pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_RUNNING, ccommand.as_ptr());
        // SET ROLE / SET SESSION AUTHORIZATION are refused while a local user id change is in force
        pg_sys::SetUserIdAndSecContext(
            owner,
            saved_ctx | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
        );
        if let Some(ms) = timeout_ms {
            enable_timeout_after(STATEMENT_TIMEOUT, ms.min(i32::MAX as i64) as i32);
        }
        let tag = run_command(&ccommand);
        disable_timeout(STATEMENT_TIMEOUT, false);
        pg_sys::SetUserIdAndSecContext(saved_user, saved_ctx);
        pg_sys::AtEOXact_GUC(false, nest);
        // session-level advisory locks taken by the command must not outlive its run
        // (what pg_advisory_unlock_all() does, without a statement)
        pg_sys::LockReleaseSession(pg_sys::USER_LOCKMETHOD as pg_sys::LOCKMETHODID);
        finish_run(
            &crate::health::api::Outcome {
                job_id,
                run_id,
                status: "succeeded",
                message: Some(&tag),
                started_at,
                duration_ms: t0.elapsed().as_secs_f64() * 1000.0,
            },
            None,
        )
        .unwrap_or_else(|e| pgrx::error!("could not record success: {e}"));
    }
    claim_next()
}

/// Writes a run's outcome (status, message, real start, finish, an HTTP run's response) and
/// updates the job's statistics and alerts, in the current transaction: the one shared path of
/// successes and failures, SQL and HTTP runs.
pub(super) fn finish_run(
    o: &crate::health::api::Outcome,
    response: Option<&str>,
) -> Result<(), pgrx::spi::SpiError> {
    Spi::connect_mut(|c| {
        xact::with_plan(
            c,
            "UPDATE pulse.job_run SET status = $2, finished_at = clock_timestamp(), message = $3,
                    started_at = least($4, clock_timestamp()), response = $5::jsonb
              WHERE run_id = $1",
            &[
                PgOid::BuiltIn(PgBuiltInOids::INT8OID),
                PgOid::BuiltIn(PgBuiltInOids::TEXTOID),
                PgOid::BuiltIn(PgBuiltInOids::TEXTOID),
                PgOid::BuiltIn(PgBuiltInOids::TIMESTAMPTZOID),
                PgOid::BuiltIn(PgBuiltInOids::TEXTOID),
            ],
            |c, stmt| {
                c.update(
                    stmt,
                    None,
                    &[
                        o.run_id.into(),
                        o.status.into(),
                        o.message.into(),
                        o.started_at.into(),
                        response.into(),
                    ],
                )
                .map(|_| ())
            },
        )
        .and_then(|r| r)
    })?;
    crate::health::api::record_outcome(o);
    Ok(())
}

/// Settings from ALTER ROLE owner [IN DATABASE this] SET ..., applied for this run only.
fn apply_role_settings(owner: pg_sys::Oid) {
    let settings: Vec<String> = Spi::connect_mut(|c| {
        xact::with_plan(
            c,
            "SELECT cfg FROM pg_catalog.pg_db_role_setting s, unnest(s.setconfig) cfg
              WHERE s.setrole = $1 AND s.setdatabase IN (0, (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()))
              ORDER BY s.setdatabase <> 0",
            &[PgOid::BuiltIn(PgBuiltInOids::OIDOID)],
            |c, stmt| {
                c.select(stmt, None, &[owner.into()])
                    .map(|t| t.filter_map(|r| r.get::<String>(1).ok().flatten()).collect())
                    .unwrap_or_default()
            },
        )
        .unwrap_or_default()
    });
    for s in settings {
        if let Some((name, value)) = s.split_once('=') {
            Spi::run_with_args(
                "SELECT pg_catalog.set_config($1, $2, true)",
                &[name.into(), value.into()],
            )
            .unwrap_or_else(|e| pgrx::error!("could not apply role setting {name}: {e}"));
        }
    }
}

/// Executes the command string (one or more statements) with SPI and returns a status message.
unsafe fn run_command(command: &CString) -> String {
    unsafe {
        if pg_sys::SPI_connect() < 0 {
            pgrx::error!("SPI_connect failed");
        }
        let rc = pg_sys::SPI_execute(command.as_ptr(), false, 0);
        let n = pg_sys::SPI_processed;
        pg_sys::SPI_finish();
        match rc as u32 {
            pg_sys::SPI_OK_SELECT => format!("SELECT {n}"),
            pg_sys::SPI_OK_INSERT | pg_sys::SPI_OK_INSERT_RETURNING => format!("INSERT 0 {n}"),
            pg_sys::SPI_OK_UPDATE | pg_sys::SPI_OK_UPDATE_RETURNING => format!("UPDATE {n}"),
            pg_sys::SPI_OK_DELETE | pg_sys::SPI_OK_DELETE_RETURNING => format!("DELETE {n}"),
            pg_sys::SPI_OK_MERGE => format!("MERGE {n}"),
            _ if rc < 0 => {
                if rc == pg_sys::SPI_ERROR_TRANSACTION {
                    ereport!(
                        PgLogLevel::ERROR,
                        PgSqlErrorCode::ERRCODE_INVALID_TRANSACTION_TERMINATION,
                        "a job's command can't use transaction control (COMMIT, ROLLBACK, ...)",
                        "Each run is one transaction: remove COMMIT/ROLLBACK, or use a procedure called outside pg_pulse."
                    );
                }
                pgrx::error!("SPI_execute failed with code {rc}")
            }
            _ => "OK".to_string(),
        }
    }
}
