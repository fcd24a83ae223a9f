//! The HTTP worker: sends the runs of HTTP jobs and the after-commit requests of
//! `pulse.http_post` & co. through the thread pool of `crate::http::client`.
//!
//! The main thread (the only one that calls PostgreSQL) loops:
//! 1. takes the pool's replies and records them in one transaction (request rows in one
//!    statement; runs through the same `finish_run` as SQL jobs), queueing retries;
//! 2. claims pending requests and due HTTP runs (`FOR UPDATE SKIP LOCKED`), resolves their
//!    placeholders as their owner (secrets, settings, run context) and hands them to the pool;
//! 3. sleeps on its latch (set when a request is committed, or by the scheduler for due runs) and
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
use crate::http::client::{Failure, FailureKind, Pool, Reply};
use crate::xact;
use claim::{claim_requests, claim_runs, recover, resolve};
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
/// While a backlog is being sent, a claim runs at least this often (see `Worker::worth_claiming`).
const BACKLOG_CLAIM_EVERY: Duration = Duration::from_secs(1);
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
    /// Bytes of the built request (counted in `Worker::in_flight_bytes`).
    pub bytes: usize,
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
        backlog: false,
        replies_since_claim: 0,
        claimed_at: Instant::now(),
        due_at: None,
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
        let (claimed, next_due_ms) = if w.worth_claiming(woken) {
            w.claim()
        } else {
            (0, None)
        };
        if w.backlog {
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
        if let Some(d) = w.next_claim_in() {
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
    /// The last claim took all it asked for: more may be waiting.
    backlog: bool,
    /// Replies taken from the pool since the last claim.
    replies_since_claim: usize,
    /// When the last claim ran, and when the next pending retry it saw is due.
    claimed_at: Instant,
    due_at: Option<Instant>,
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

    /// Whether to claim now. While a backlog is being sent, a claim waits until a few replies
    /// made room or the pool runs short of work (a claim per reply would cost more than the
    /// replies); a commit or the scheduler (`woken`) may bring another owner's work: at once.
    /// However long one owner's requests take to answer, a pending retry is claimed when it is
    /// due, and anything else (a prepared transaction's requests, committed without a wake-up)
    /// within `BACKLOG_CLAIM_EVERY`.
    fn worth_claiming(&self, woken: bool) -> bool {
        woken
            || !self.backlog
            || self.replies_since_claim >= CLAIM_BATCH / 2
            || self.unanswered() < CLAIM_BATCH
            || self.next_claim_in().is_some_and(|d| d.is_zero())
    }

    /// While a backlog is being sent: how long until the next claim is due in any case.
    fn next_claim_in(&self) -> Option<Duration> {
        if !self.backlog {
            return None;
        }
        let now = Instant::now();
        let every = (self.claimed_at + BACKLOG_CLAIM_EVERY).saturating_duration_since(now);
        Some(match self.due_at {
            Some(t) => every.min(t.saturating_duration_since(now)),
            None => every,
        })
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
            let ends_run = matches!(f.item, Item::Run { .. });
            self.answered.push(r, ends_run, Instant::now());
            self.replies_since_claim += 1;
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

    /// Claims work and hands it to the pool; `backlog` says whether more may be waiting. Returns
    /// how many items were claimed and, when nothing more is pending now, in how many ms the next
    /// pending retry is due.
    fn claim(&mut self) -> (usize, Option<i64>) {
        self.replies_since_claim = 0;
        self.claimed_at = Instant::now();
        let room = MAX_IN_FLIGHT.saturating_sub(self.unanswered());
        // (whenever there is room at all: an owner new to the worker must not wait for a whole
        // batch of another owner's replies)
        if room == 0 || self.in_flight_bytes >= MAX_IN_FLIGHT_BYTES {
            return (0, None);
        }
        // what this claim may build: at least one request
        let byte_room = MAX_IN_FLIGHT_BYTES - self.in_flight_bytes;
        let limit = room.min(CLAIM_BATCH);
        let recovered = self.recovered;
        let durable = self.started.elapsed() < DURABLE_CLAIMS_AFTER_START;
        let pid = unsafe { pg_sys::MyProcPid };
        let max_response = crate::HTTP_MAX_RESPONSE_BYTES.get().max(0) as usize;
        let limits = crate::http_limits();
        let mut per_owner: HashMap<pg_sys::Oid, i32> = HashMap::new();
        let answered: std::collections::HashSet<u64> = self.answered.tags().collect();
        for (tag, f) in &self.in_flight {
            if !answered.contains(tag) {
                *per_owner.entry(f.owner).or_insert(0) += 1;
            }
        }
        // Each owner in flight may hold at most its share of the room, counting one more owner
        // than there are: whoever comes next always finds room kept for it.
        let per_owner_cap = MAX_IN_FLIGHT / (per_owner.len() + 1);
        let in_flight: Vec<(pg_sys::Oid, i32)> = per_owner.into_iter().collect();
        let r = xact::run(move || {
            // claimed rows are updated by ctid (stable: they are locked), which must be a TID scan
            // even when the statistics still say the table is tiny
            crate::pgutil::set_xact_guc(c"enable_seqscan", c"off");
            let present = xact::read_one::<bool>(
                "SELECT pg_catalog.to_regclass('pulse.http_request') IS NOT NULL",
            )
            .unwrap_or(false);
            if !present {
                return None;
            }
            if !recovered {
                recover();
            }
            let mut claimed = claim_runs(pid, limit, per_owner_cap, &in_flight);
            let n_runs = claimed.len();
            claimed.extend(claim_requests(limit, per_owner_cap, &in_flight));
            let n_requests = claimed.len() - n_runs;
            // Claimed HTTP runs commit durably (the server's synchronous_commit) before anything
            // is sent: a crash then finds them `running` and fails them, never sends a slot again
            // under a new run. The flush also covers the scheduler's asynchronous commit that
            // queued them. One durable commit per claim; requests alone commit asynchronously (a
            // lost claim only means they are sent, as they would be anyway), except just after
            // the worker started (see DURABLE_CLAIMS_AFTER_START).
            if n_runs == 0 && !durable {
                xact::async_commit();
            }
            let (next_due, due_now) = if n_requests < limit {
                // due and not claimed: their owners are at their share of the room, and the
                // replies that make room wake the loop
                // and the next retry (however many are due now); run as a writing statement, so
                // that it sees this transaction's claim
                let r = Spi::connect_mut(|c| {
                    c.update(
                    "SELECT EXISTS (SELECT FROM pulse.http_request WHERE finished_at IS NULL
                                       AND state = 'pending' AND next_attempt_at <= clock_timestamp()),
                            (SELECT (extract(epoch FROM min(next_attempt_at) - clock_timestamp()) * 1000)::float8
                               FROM pulse.http_request WHERE finished_at IS NULL AND state = 'pending'
                                AND next_attempt_at > clock_timestamp())",
                    Some(1),
                    &[],
                )?
                .first()
                .get_two::<bool, f64>()
                })
                .unwrap_or((None, None));
                (
                    r.1.map(|ms| ms.ceil().max(1.0) as i64),
                    r.0.unwrap_or(false),
                )
            } else {
                (None, true)
            };
            // Built one by one until they fill the byte room; the rest goes back unsent (in this
            // transaction: as if never claimed), to be claimed when replies have made room.
            let mut built = 0usize;
            let mut resolved: Vec<(Item, pg_sys::Oid, crate::http::resolve::Resolved)> = Vec::new();
            let (mut back_requests, mut back_runs) = (Vec::new(), Vec::new());
            for c in claimed {
                if built >= byte_room {
                    match c.item {
                        Item::Request { id, .. } => back_requests.push(id),
                        Item::Run { run_id, .. } => back_runs.push(run_id),
                    }
                    continue;
                }
                let r = resolve(&c, &limits, max_response);
                if let Ok((req, _)) = &r {
                    built = built.saturating_add(request_bytes(req));
                }
                resolved.push((c.item.clone(), c.owner, r));
            }
            let n_back = back_requests.len();
            if !back_requests.is_empty() || !back_runs.is_empty() {
                if let Err(e) = record::release(back_requests, back_runs) {
                    pgrx::error!("pg_pulse http: could not give back unsent work: {e}");
                }
            }
            let backlog = n_runs + n_requests >= limit || due_now || n_back > 0;
            Some((resolved, backlog, next_due))
        });
        let (resolved, backlog, next_due) = match r {
            Ok(Some(x)) => x,
            Ok(None) => {
                self.backlog = false;
                return (0, Some(MAX_SLEEP_MS));
            }
            Err(f) => {
                warning!("pg_pulse http: could not claim requests: {}", f.message);
                self.backlog = false;
                return (0, Some(1000));
            }
        };
        self.backlog = backlog;
        self.due_at = next_due.map(|ms| Instant::now() + Duration::from_millis(ms as u64));
        let n = resolved.len();
        self.recovered = true;
        let mut not_sent = Vec::new();
        let mut to_send = Vec::with_capacity(resolved.len());
        for (item, owner, res) in resolved {
            let tag = self.next_tag;
            self.next_tag += 1;
            match res {
                Ok((mut req, secrets)) => {
                    req.tag = tag;
                    let bytes = request_bytes(&req);
                    self.in_flight_bytes += bytes;
                    self.in_flight.insert(
                        tag,
                        InFlight {
                            item,
                            owner,
                            secrets,
                            bytes,
                        },
                    );
                    to_send.push(req);
                }
                Err(message) => {
                    self.in_flight.insert(
                        tag,
                        InFlight {
                            item,
                            owner,
                            secrets: Vec::new(),
                            bytes: 0,
                        },
                    );
                    not_sent.push(Reply {
                        tag,
                        result: Err(Failure {
                            kind: FailureKind::NotSent,
                            message,
                        }),
                        queued: Duration::ZERO,
                        headers_after: None,
                        total: Duration::ZERO,
                    });
                }
            }
        }
        self.pool.submit_all(to_send);
        if !not_sent.is_empty() {
            self.record(not_sent);
        }
        (n, next_due)
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

/// The memory a built request holds: URL, headers, body.
fn request_bytes(r: &crate::http::client::Request) -> usize {
    r.url.len()
        + r.headers
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
        + r.body.as_ref().map_or(0, Vec::len)
}
