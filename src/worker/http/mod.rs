//! The HTTP worker: sends the runs of HTTP jobs and the after-commit requests of
//! `pulse.http_post` & co. through the thread pool of `crate::http::client`.
//!
//! The main thread (the only one that calls PostgreSQL) loops:
//! 1. takes the pool's replies and holds them (`crate::http::answered`);
//! 2. claims pending requests and due HTTP runs (`FOR UPDATE SKIP LOCKED`), resolves their
//!    placeholders as their owner (secrets, settings, run context) and hands them to the pool;
//!    while a backlog is being sent, only now and then (`crate::http::pace`);
//! 3. when nothing more can be claimed (or the held replies are too many, too large or too old),
//!    records the replies in one transaction (request rows in one statement; runs through the
//!    same `finish_run` as SQL jobs), queueing retries;
//! 4. sleeps on its latch (set when a request is committed, or by the scheduler for due runs) and
//!    on a pipe the HTTP threads write to when they have replies.
//!
//! Resolved values live only in memory: what is stored is the template. Secret values are also
//! scrubbed from what a server sends back before it is stored.
//!
//! Here: the loop and its signals. `claim`: claims, recovery and placeholder lookups as the
//! owner; `record`: writing results. The pure parts (building a request from its template,
//! scrubbing, what is stored of a reply) are `crate::http::resolve` and `crate::http::outcome`.

mod claim;
mod record;

use super::SHARED;
use crate::http::answered::Answered;
use crate::http::client::{Pool, Reply};
use crate::http::pace::Pace;
use crate::xact;
use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Requests handed to the pool and not answered yet, at most (the pool's queue stays short).
const MAX_IN_FLIGHT: usize = 2000;
/// Bytes of built requests (URL, headers, body) held in flight at most, plus one request: the
/// worker claims nothing more until replies make room, and gives back what a claim resolved past
/// it. With the threads' responses, this bounds the worker's memory (see the README).
pub(crate) const MAX_IN_FLIGHT_BYTES: usize = 64 << 20;
/// Requests claimed per transaction.
const CLAIM_BATCH: usize = 500;
/// Under load, replies are recorded in batches of up to this many.
const RECORD_BATCH: usize = 500;
/// The longest sleep without a reason.
const MAX_SLEEP_MS: i64 = 10_000;
/// For this long after the worker starts, every claim commits durably: a request that stops the
/// worker (a crash) while it is sent is then surely counted in `interrupted` at the next start,
/// and given up after `claim::MAX_INTERRUPTED` (a claim committed asynchronously may be lost in
/// the crash, and the request sent again uncounted: at most once, since the worker that sends it
/// again has just started). Later, claims of requests alone commit asynchronously (a durable
/// commit costs a WAL flush, milliseconds, on every request's way out).
const DURABLE_CLAIMS_AFTER_START: Duration = Duration::from_secs(10);
/// How often finished requests older than pulse.http_retention are removed.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub(super) enum Item {
    Request {
        id: i64,
        attempt: i32,
        max_attempts: i32,
        backoff_us: i64,
    },
    Run {
        run_id: i64,
        job_id: i64,
        attempt: i32,
    },
}

pub(super) struct InFlight {
    pub item: Item,
    /// whose request it is (fair shares of the in-flight room)
    pub owner: pg_sys::Oid,
    /// (name, value) of the secrets in the request, scrubbed from what comes back.
    pub secrets: crate::http::resolve::Secrets,
    /// Bytes of the built request (counted in `Worker::in_flight_bytes` until it is answered).
    pub bytes: usize,
    /// Its answer came and is held in `Worker::answered` (not recorded yet).
    pub answered: bool,
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pulse_http_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let db = crate::database_name();
    BackgroundWorker::connect_worker_to_spi(Some(&db), None);
    super::pin_worker_settings();
    // Its statements find waiting requests in the order of their index, so that the entries of
    // requests finished since the last vacuum are skipped (and marked dead) as they are passed:
    // a bitmap scan, which the planner picks when it expects few rows, reads them all every time.
    crate::pgutil::pin_guc(c"enable_bitmapscan", c"off");
    {
        let mut sh = SHARED.exclusive();
        sh.http_pid = unsafe { pg_sys::MyProcPid };
        sh.http_started_us = chrono::Utc::now().timestamp_micros();
        sh.http_heartbeat_us = sh.http_started_us;
    }

    // The HTTP threads write a byte to this pipe when replies are ready (the latch is for
    // PostgreSQL processes; the threads never touch PostgreSQL).
    let mut fds = [0i32; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        pgrx::error!("pg_pulse http: could not create a pipe");
    }
    let (read_fd, write_fd) = (fds[0], fds[1]);
    let pending = Arc::new(AtomicBool::new(false));
    let flag = pending.clone();
    let notify = Box::new(move || {
        if !flag.swap(true, Ordering::AcqRel) {
            unsafe { libc::write(write_fd, b"x".as_ptr().cast(), 1) };
        }
    });
    let policy = crate::http_policy().unwrap_or_else(|e| {
        warning!("pg_pulse http: invalid address policy ({e}); using the default");
        crate::http::policy::Policy::parse("", crate::http::policy::DEFAULT_DENIED)
            .expect("the default policy parses")
    });
    let pool = Pool::new(concurrency(), policy, notify);
    if let Err(e) = pool.set_ca_file(crate::http_ca_file().as_deref()) {
        warning!("pg_pulse http: {e}; HTTPS requests fail until it is fixed");
    }
    let mut w = Worker {
        pool,
        in_flight: HashMap::new(),
        in_flight_bytes: 0,
        answered: Answered::default(),
        pace: Pace::new(Instant::now()),
        next_tag: 1,
        recovered: false,
        pruned_at: None,
        started: Instant::now(),
    };
    log!("pg_pulse http worker started for database \"{db}\"");
    // it keeps watch on the scheduler (see control::Watchdog)
    let mut watchdog = super::control::Watchdog::default();

    loop {
        if BackgroundWorker::sigterm_received() {
            break;
        }
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            w.reconfigure();
        }
        SHARED.exclusive().http_heartbeat_us = chrono::Utc::now().timestamp_micros();
        // set by a commit that queued requests, or by the scheduler (not by replies)
        let woken = unsafe { (*pg_sys::MyLatch).is_set != 0 };
        unsafe { pg_sys::ResetLatch(pg_sys::MyLatch) };
        drain_pipe(read_fd);
        pending.store(false, Ordering::Release);
        w.take_replies();
        let (claimed, next_due_ms) =
            if w.pace
                .worth_claiming(Instant::now(), woken, w.unanswered(), CLAIM_BATCH)
            {
                w.claim()
            } else {
                (0, None)
            };
        if w.pace.backlog() {
            if claimed > 0 && w.unanswered() < MAX_IN_FLIGHT {
                continue; // more is waiting, and there may be room for it
            }
        } else if w.record_answered() {
            // nothing more to claim now: what came back is recorded; a claim then sees when
            // the retries it queued are due
            continue;
        }
        w.prune();
        let mut sleep = next_due_ms.unwrap_or(MAX_SLEEP_MS).clamp(0, MAX_SLEEP_MS);
        if let Some(d) = w.answered.due_in(Instant::now()) {
            sleep = sleep.min(d.as_millis() as i64 + 1);
        }
        if let Some(d) = w.pace.next_claim_in(Instant::now()) {
            sleep = sleep.min(d.as_millis() as i64 + 1);
        }
        sleep = sleep.min(watchdog.check().as_millis() as i64 + 1);
        if let Some(t) = w.pruned_at {
            sleep = sleep.min(PRUNE_EVERY.saturating_sub(t.elapsed()).as_millis() as i64 + 1);
        }
        if sleep > 0 && !pending.load(Ordering::Acquire) {
            sleep = super::stats_before_sleep(sleep);
            unsafe {
                pg_sys::WaitLatchOrSocket(
                    pg_sys::MyLatch,
                    (pg_sys::WL_LATCH_SET
                        | pg_sys::WL_SOCKET_READABLE
                        | pg_sys::WL_TIMEOUT
                        | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
                    read_fd,
                    sleep as _,
                    pg_sys::PG_WAIT_EXTENSION,
                );
            }
        }
    }
    // What no thread has started goes back unsent (nothing counted); what is being sent is
    // finished (briefly); anything left stays leased and is recovered at the next start.
    let unstarted = w.pool.take_unstarted();
    w.release(unstarted);
    w.record_answered();
    let deadline = Instant::now() + Duration::from_secs(3);
    while !w.in_flight.is_empty() && Instant::now() < deadline {
        if let Some(r) = w.pool.recv_timeout(Duration::from_millis(50)) {
            let mut batch = vec![r];
            while let Some(r) = w.pool.try_recv() {
                batch.push(r);
            }
            w.record(batch);
        }
    }
    SHARED.exclusive().http_pid = 0;
    log!("pg_pulse http worker shutting down");
    // A non-zero exit code: the postmaster starts the worker again (after its restart time) when
    // it was stopped alone (pg_terminate_backend); at a server shutdown nothing is restarted.
    // An exit code of 0 would unregister it for good.
    unsafe { pg_sys::proc_exit(1) };
}

fn drain_pipe(fd: i32) {
    let mut buf = [0u8; 256];
    while unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
}

fn concurrency() -> usize {
    crate::HTTP_MAX_CONCURRENCY.get().clamp(1, 256) as usize
}

struct Worker {
    pool: Pool,
    /// Handed to the pool and not recorded yet (answered or not).
    in_flight: HashMap<u64, InFlight>,
    /// The sum of the `bytes` of the requests not answered yet.
    in_flight_bytes: usize,
    /// Replies not recorded yet (see `crate::http::answered`).
    answered: Answered,
    /// When to claim (see `crate::http::pace`).
    pace: Pace,
    next_tag: u64,
    recovered: bool,
    pruned_at: Option<Instant>,
    started: Instant,
}

impl Worker {
    fn reconfigure(&mut self) {
        match crate::http_policy() {
            Ok(p) => self.pool.set_policy(p),
            Err(e) => {
                warning!("pg_pulse http: invalid address policy ({e}); keeping the previous one")
            }
        }
        if let Err(e) = self.pool.set_ca_file(crate::http_ca_file().as_deref()) {
            warning!("pg_pulse http: {e}; HTTPS requests fail until it is fixed");
        }
        self.pool.resize(concurrency());
    }

    /// Requests handed to the pool and not answered yet.
    fn unanswered(&self) -> usize {
        self.in_flight.len() - self.answered.len()
    }

    /// Takes the replies that are ready and holds them (their requests' bytes are free now);
    /// records them at once only when they must be (see `crate::http::answered`).
    fn take_replies(&mut self) {
        while let Some(r) = self.pool.try_recv() {
            self.pool_reply(r);
        }
        if self.answered.must_record(Instant::now()) {
            self.record_answered();
        }
    }

    /// Records the held replies. While requests are still out, waits up to 5 ms for a batch of
    /// `RECORD_BATCH`: one transaction per few hundred replies, not per reply.
    fn record_answered(&mut self) -> bool {
        if self.answered.is_empty() {
            return false;
        }
        let until = Instant::now() + Duration::from_millis(5);
        while self.answered.len() < RECORD_BATCH && self.unanswered() > 0 {
            let Some(left) = until.checked_duration_since(Instant::now()) else {
                break;
            };
            match self.pool.recv_timeout(left) {
                Some(r) => {
                    self.pool_reply(r);
                }
                None => break,
            }
        }
        let batch = self.answered.take();
        self.record(batch);
        true
    }

    /// Holds one reply taken from the pool.
    fn pool_reply(&mut self, r: Reply) {
        if let Some(f) = self.in_flight.get_mut(&r.tag) {
            self.in_flight_bytes = self.in_flight_bytes.saturating_sub(f.bytes);
            f.bytes = 0;
            f.answered = true;
            let ends_run = matches!(f.item, Item::Run { .. });
            self.answered.push(r, ends_run, Instant::now());
            self.pace.answered();
        }
    }

    /// Gives back claimed work that was never handed to a thread: requests become pending again,
    /// runs queued again (committed durably: nothing of them was sent).
    fn release(&mut self, tags: Vec<u64>) {
        let (mut requests, mut runs) = (Vec::new(), Vec::new());
        for t in tags {
            match self.take(t).map(|f| f.item) {
                Some(Item::Request { id, .. }) => requests.push(id),
                Some(Item::Run { run_id, .. }) => runs.push(run_id),
                None => {}
            }
        }
        if requests.is_empty() && runs.is_empty() {
            return;
        }
        let n = requests.len() + runs.len();
        let r = xact::run(move || record::release(requests, runs));
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warning!("pg_pulse http: could not give back {n} unsent item(s): {e}"),
            Err(f) => warning!(
                "pg_pulse http: could not give back {n} unsent item(s): {}",
                f.message
            ),
        }
    }

    /// Takes an item out of the in-flight map (and its bytes out of the count).
    fn take(&mut self, tag: u64) -> Option<InFlight> {
        let f = self.in_flight.remove(&tag)?;
        self.in_flight_bytes = self.in_flight_bytes.saturating_sub(f.bytes);
        Some(f)
    }

    /// Records replies (and retries) in one transaction.
    fn record(&mut self, replies: Vec<Reply>) {
        let done: Vec<(InFlight, Reply)> = replies
            .into_iter()
            .filter_map(|r| self.take(r.tag).map(|f| (f, r)))
            .collect();
        if done.is_empty() {
            return;
        }
        let n = done.len();
        let r = xact::run(move || {
            xact::async_commit();
            // the rows are found by primary key (h.id = ANY), never by reading the table
            crate::pgutil::set_xact_guc(c"enable_seqscan", c"off");
            record::record_in_xact(&done)
        });
        match r {
            Ok(Ok(retried_runs)) => {
                if retried_runs {
                    super::wake_scheduler_now();
                }
            }
            Ok(Err(e)) => warning!("pg_pulse http: could not record {n} result(s): {e}"),
            Err(f) => warning!(
                "pg_pulse http: could not record {n} result(s): {}",
                f.message
            ),
        }
    }

    /// Every minute: finished requests older than pulse.http_retention go, 1,000 per transaction.
    fn prune(&mut self) {
        if self.pruned_at.is_some_and(|t| t.elapsed() < PRUNE_EVERY) {
            return;
        }
        self.pruned_at = Some(Instant::now());
        let keep_s = crate::HTTP_RETENTION.get().max(60) as i64;
        for _ in 0..100 {
            let r = xact::run(move || {
                xact::async_commit();
                // nothing to prune before CREATE EXTENSION (or after DROP EXTENSION)
                let present = xact::read_one::<bool>(
                    "SELECT pg_catalog.to_regclass('pulse.http_request') IS NOT NULL",
                )
                .unwrap_or(false);
                if !present {
                    return 0;
                }
                Spi::connect_mut(|c| {
                    xact::with_plan(
                        c,
                        "DELETE FROM pulse.http_request h
                          USING (SELECT id FROM pulse.http_request
                                  WHERE created_at < now() - $1 * interval '1 second' AND finished_at IS NOT NULL
                                  LIMIT 1000) old
                          WHERE h.id = old.id",
                        &[PgOid::BuiltIn(PgBuiltInOids::INT8OID)],
                        |c, stmt| {
                            c.select(stmt, None, &[keep_s.into()])
                                .map(|t| t.len())
                                .unwrap_or(0)
                        },
                    )
                    .unwrap_or(0)
                })
            });
            match r {
                Ok(n) if n >= 1000 => continue,
                Ok(_) => break,
                Err(f) => {
                    warning!("pg_pulse http: pruning requests failed: {}", f.message);
                    break;
                }
            }
        }
    }
}
