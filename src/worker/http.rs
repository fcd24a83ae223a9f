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

use super::xact;
use super::SHARED;
use crate::http::client::{self, Failure, FailureKind, Pool, Reply, Verdict};
use crate::http::request;
use crate::http::template::{self, Resolve, Var};
use crate::pgutil::{from_pg_ts, to_pg_ts};
use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Requests handed to the pool and not answered yet, at most (the pool's queue stays short).
const MAX_IN_FLIGHT: usize = 2000;
/// Requests claimed per transaction.
const CLAIM_BATCH: usize = 500;
/// Under load, replies are recorded in batches of up to this many.
const RECORD_BATCH: usize = 500;
/// The longest sleep without a reason.
const MAX_SLEEP_MS: i64 = 10_000;
/// How often finished requests older than pulse.http_retention are removed.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
enum Item {
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

struct InFlight {
    item: Item,
    /// (name, value) of the secrets in the request, scrubbed from what comes back.
    secrets: Vec<(String, String)>,
}

/// What a claim read, before its placeholders are resolved.
struct Claimed {
    item: Item,
    owner: pg_sys::Oid,
    request: Option<Value>,
    job_name: String,
    context_id: i64,
    scheduled_for: chrono::DateTime<chrono::Utc>,
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pulse_http_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let db = crate::database_name();
    BackgroundWorker::connect_worker_to_spi(Some(&db), None);
    super::pin_worker_settings();
    let pid = unsafe { pg_sys::MyProcPid };
    {
        let mut sh = SHARED.exclusive();
        sh.http_pid = pid;
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
    let mut w = Worker {
        pool: Pool::new(concurrency(), policy, notify),
        in_flight: HashMap::new(),
        next_tag: 1,
        recovered: false,
        pruned_at: None,
    };
    log!("pg_pulse http worker started for database \"{db}\"");
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
        unsafe { pg_sys::ResetLatch(pg_sys::MyLatch) };
        drain_pipe(read_fd);
        pending.store(false, Ordering::Release);
        w.take_replies();
        let (claimed, next_due_ms) = w.claim();
        if claimed >= CLAIM_BATCH && w.in_flight.len() < MAX_IN_FLIGHT {
            continue; // more is waiting
        }
        w.prune();
        let mut sleep = next_due_ms.unwrap_or(MAX_SLEEP_MS).clamp(0, MAX_SLEEP_MS);
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
    // Finish what is in flight (briefly); anything left stays leased and is sent again at start.
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
    // non-zero: the postmaster starts it again (see the scheduler)
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
    in_flight: HashMap<u64, InFlight>,
    next_tag: u64,
    recovered: bool,
    pruned_at: Option<Instant>,
}

impl Worker {
    fn reconfigure(&mut self) {
        match crate::http_policy() {
            Ok(p) => self.pool.set_policy(p),
            Err(e) => {
                warning!("pg_pulse http: invalid address policy ({e}); keeping the previous one")
            }
        }
        self.pool.resize(concurrency());
    }

    /// Records the replies that are ready. Under load (more requests in flight), waits up to
    /// 5 ms for a bigger batch: one transaction per few hundred replies, not per reply.
    fn take_replies(&mut self) {
        let mut batch = Vec::new();
        while let Some(r) = self.pool.try_recv() {
            batch.push(r);
        }
        if batch.is_empty() {
            return;
        }
        let until = Instant::now() + Duration::from_millis(5);
        while batch.len() < RECORD_BATCH && self.in_flight.len() > batch.len() {
            let Some(left) = until.checked_duration_since(Instant::now()) else {
                break;
            };
            match self.pool.recv_timeout(left) {
                Some(r) => batch.push(r),
                None => break,
            }
        }
        self.record(batch);
    }

    /// Records replies (and retries) in one transaction.
    fn record(&mut self, replies: Vec<Reply>) {
        let done: Vec<(InFlight, Reply)> = replies
            .into_iter()
            .filter_map(|r| self.in_flight.remove(&r.tag).map(|f| (f, r)))
            .collect();
        if done.is_empty() {
            return;
        }
        let n = done.len();
        let r = xact::run(move || {
            xact::async_commit();
            // the rows are found by primary key (h.id = ANY), never by reading the table
            crate::pgutil::set_xact_guc(c"enable_seqscan", c"off");
            record_in_xact(&done)
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

    /// Claims work and hands it to the pool. Returns how many requests were claimed and, when
    /// nothing more is pending now, in how many ms the next pending retry is due.
    fn claim(&mut self) -> (usize, Option<i64>) {
        let room = MAX_IN_FLIGHT.saturating_sub(self.in_flight.len());
        // with plenty in flight, claim in big batches (the replies wake the loop anyway)
        if room < CLAIM_BATCH / 2 {
            return (0, None);
        }
        let limit = room.min(CLAIM_BATCH);
        let recovered = self.recovered;
        let pid = unsafe { pg_sys::MyProcPid };
        let max_body = crate::HTTP_MAX_RESPONSE_BYTES.get().max(0) as usize;
        let r = xact::run(move || {
            xact::async_commit();
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
            let mut claimed = claim_runs(pid, limit);
            let n_runs = claimed.len();
            claimed.extend(claim_requests(limit));
            let n_requests = claimed.len() - n_runs;
            let next_due = if n_requests < limit {
                xact::read_one::<f64>(
                    "SELECT (extract(epoch FROM min(next_attempt_at) - clock_timestamp()) * 1000)::float8
                       FROM pulse.http_request WHERE state = 'pending'",
                )
                .map(|ms| ms.ceil().max(0.0) as i64)
            } else {
                None
            };
            let resolved: Vec<(Item, Resolved)> = claimed
                .into_iter()
                .map(|c| {
                    let item = c.item.clone();
                    (item, resolve(&c, max_body))
                })
                .collect();
            Some((resolved, n_requests, next_due))
        });
        let (resolved, n, next_due) = match r {
            Ok(Some(x)) => x,
            Ok(None) => return (0, Some(MAX_SLEEP_MS)),
            Err(f) => {
                warning!("pg_pulse http: could not claim requests: {}", f.message);
                return (0, Some(1000));
            }
        };
        self.recovered = true;
        let mut not_sent = Vec::new();
        for (item, res) in resolved {
            let tag = self.next_tag;
            self.next_tag += 1;
            match res {
                Ok((mut req, secrets)) => {
                    req.tag = tag;
                    self.in_flight.insert(tag, InFlight { item, secrets });
                    self.pool.submit(req);
                }
                Err(message) => {
                    self.in_flight.insert(
                        tag,
                        InFlight {
                            item,
                            secrets: Vec::new(),
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

/// At start: requests a crash or shutdown left in flight are sent again; HTTP runs left running
/// fail (as SQL runs do: a run is never silently repeated).
fn recover() {
    let n = Spi::connect_mut(|c| {
        c.update(
            "UPDATE pulse.http_request SET state = 'pending', lease_until = NULL,
                    next_attempt_at = least(next_attempt_at, now())
              WHERE state = 'sending'",
            None,
            &[],
        )
        .map(|t| t.len())
        .unwrap_or(0)
    });
    if n > 0 {
        log!("pg_pulse http: sending {n} request(s) again that were in flight at a restart");
    }
    let _ = Spi::run(
        "UPDATE pulse.job_run SET status = 'failed', finished_at = clock_timestamp(),
                message = 'the server restarted while this HTTP request was in flight'
          WHERE status = 'running' AND kind = 'http'",
    );
}

fn claim_requests(limit: usize) -> Vec<Claimed> {
    Spi::connect_mut(|c| {
        let t = xact::with_plan(
            c,
            // now(), not clock_timestamp(), so that the pending index is scanned in order: this
            // transaction starts after the commits that woke the worker
            "UPDATE pulse.http_request h SET state = 'sending', attempts = h.attempts + 1,
                    sent_at = clock_timestamp(),
                    lease_until = clock_timestamp()
                        + (least(greatest(coalesce((h.request->>'timeout_ms')::float8, 30000), 0), 86400000) + 60000) * interval '1 millisecond'
              WHERE h.ctid = ANY (ARRAY(
                    SELECT q.ctid FROM pulse.http_request q
                     WHERE q.state = 'pending' AND q.next_attempt_at <= now()
                     ORDER BY q.next_attempt_at, q.id LIMIT $1 FOR UPDATE SKIP LOCKED))
            RETURNING h.id, h.owner, h.request, h.attempts, h.max_attempts,
                      (extract(epoch FROM h.retry_backoff) * 1000000)::bigint, h.created_at",
            &[PgOid::BuiltIn(PgBuiltInOids::INT8OID)],
            |c, stmt| {
                c.select(stmt, None, &[(limit as i64).into()]).map(|t| {
                    t.filter_map(|row| {
                        let id: i64 = row.get(1).ok()??;
                        Some(Claimed {
                            item: Item::Request {
                                id,
                                attempt: row.get(4).ok()??,
                                max_attempts: row.get(5).ok()??,
                                backoff_us: row.get(6).ok()??,
                            },
                            owner: row.get(2).ok()??,
                            request: row.get::<JsonB>(3).ok()?.map(|j| j.0),
                            job_name: String::new(),
                            context_id: id,
                            scheduled_for: from_pg_ts(row.get(7).ok()??),
                        })
                    })
                    .collect::<Vec<_>>()
                })
            },
        );
        match t {
            Ok(Ok(v)) => v,
            Ok(Err(e)) | Err(e) => {
                warning!("pg_pulse http: claiming requests failed: {e}");
                Vec::new()
            }
        }
    })
}

fn claim_runs(pid: i32, limit: usize) -> Vec<Claimed> {
    Spi::connect_mut(|c| {
        let t = xact::with_plan(
            c,
            "UPDATE pulse.job_run r SET status = 'running',
                    started_at = greatest(clock_timestamp(), r.scheduled_for), executor_pid = $1
              WHERE r.ctid = ANY (ARRAY(
                    SELECT q.ctid FROM pulse.job_run q
                     WHERE q.status = 'queued' AND q.kind = 'http'
                       AND q.scheduled_for <= clock_timestamp() + $2 * interval '1 millisecond'
                     ORDER BY q.scheduled_for, q.run_id LIMIT $3 FOR UPDATE SKIP LOCKED))
            RETURNING r.run_id, r.job_id, r.job_name, r.scheduled_for, r.attempt, r.owner,
                      (SELECT j.http FROM pulse.job j WHERE j.job_id = r.job_id)",
            &[
                PgOid::BuiltIn(PgBuiltInOids::INT4OID),
                PgOid::BuiltIn(PgBuiltInOids::INT8OID),
                PgOid::BuiltIn(PgBuiltInOids::INT8OID),
            ],
            |c, stmt| {
                c.select(
                    stmt,
                    None,
                    &[pid.into(), super::LEAD_MS.into(), (limit as i64).into()],
                )
                .map(|t| {
                    t.filter_map(|row| {
                        let run_id: i64 = row.get(1).ok()??;
                        Some(Claimed {
                            item: Item::Run {
                                run_id,
                                job_id: row.get(2).ok()??,
                                attempt: row.get(5).ok()??,
                            },
                            owner: row.get(6).ok()??,
                            request: row.get::<JsonB>(7).ok()?.map(|j| j.0),
                            job_name: row.get(3).ok()??,
                            context_id: run_id,
                            scheduled_for: from_pg_ts(row.get(4).ok()??),
                        })
                    })
                    .collect::<Vec<_>>()
                })
            },
        );
        match t {
            Ok(Ok(v)) => v,
            Ok(Err(e)) | Err(e) => {
                warning!("pg_pulse http: claiming runs failed: {e}");
                Vec::new()
            }
        }
    })
}

/// Placeholder values for one request, looked up as its owner.
struct Ctx<'a> {
    owner: pg_sys::Oid,
    c: &'a Claimed,
    attempt: i32,
    used: RefCell<Vec<(String, String)>>,
}

impl Resolve for Ctx<'_> {
    fn secret(&self, name: &str) -> Option<String> {
        let v = Spi::get_one_with_args::<String>(
            "SELECT value FROM pulse.secret WHERE owner = $1 AND name = $2",
            &[self.owner.into(), name.into()],
        )
        .ok()
        .flatten();
        if let Some(v) = &v {
            self.used.borrow_mut().push((name.to_string(), v.clone()));
        }
        v
    }

    /// ALTER ROLE owner [IN DATABASE] SET, then ALTER DATABASE SET, then the server's own value
    /// (postgresql.conf); settings only superusers may read are not resolved for other roles.
    fn setting(&self, name: &str) -> Option<String> {
        let stored = Spi::get_one_with_args::<String>(
            "SELECT substr(cfg, length($2) + 2) FROM pg_catalog.pg_db_role_setting s, unnest(s.setconfig) cfg
              WHERE s.setrole IN ($1, 0)
                AND s.setdatabase IN (0, (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()))
                AND lower(split_part(cfg, '=', 1)) = lower($2)
              ORDER BY s.setrole <> 0 DESC, s.setdatabase <> 0 DESC LIMIT 1",
            &[self.owner.into(), name.into()],
        )
        .ok()
        .flatten();
        if stored.is_some() {
            return stored;
        }
        let cname = std::ffi::CString::new(name).ok()?;
        unsafe {
            let flags = pg_sys::GetConfigOptionFlags(cname.as_ptr(), true);
            if flags & pg_sys::GUC_SUPERUSER_ONLY as i32 != 0 && !pg_sys::superuser_arg(self.owner)
            {
                return None;
            }
            let v = pg_sys::GetConfigOption(cname.as_ptr(), true, false);
            (!v.is_null()).then(|| std::ffi::CStr::from_ptr(v).to_string_lossy().into_owned())
        }
    }

    fn context(&self, var: Var) -> String {
        match var {
            Var::JobName => self.c.job_name.clone(),
            Var::RunId => self.c.context_id.to_string(),
            Var::ScheduledFor => self
                .c
                .scheduled_for
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            Var::Attempt => self.attempt.to_string(),
        }
    }
}

/// A request ready to send with the secrets it contains, or why it can't be sent.
type Resolved = Result<(client::Request, Vec<(String, String)>), String>;

/// Builds the request to send: placeholders resolved, URL and headers checked once more (a value
/// may have made them invalid). Errors name what is wrong, never a value.
fn resolve(c: &Claimed, max_body: usize) -> Resolved {
    let Some(req) = &c.request else {
        return Err("the job was changed or removed before this run started".into());
    };
    let attempt = match c.item {
        Item::Request { attempt, .. } | Item::Run { attempt, .. } => attempt,
    };
    let ctx = Ctx {
        owner: c.owner,
        c,
        attempt,
        used: RefCell::new(Vec::new()),
    };
    let render = |s: &str| -> Result<String, String> {
        let parts = template::parse(s).map_err(|e| e.to_string())?;
        template::render(&parts, &ctx).map_err(|m| m.to_string())
    };
    let field = |k: &str| req.get(k).and_then(Value::as_str).unwrap_or_default();
    let method = field("method").to_ascii_uppercase();
    let mut url = render(field("url"))?;
    if let Some(Value::Object(params)) = req.get("params") {
        let mut pairs = Vec::new();
        for (k, v) in params {
            pairs.push((render(k)?, render(v.as_str().unwrap_or_default())?));
        }
        url = client::with_query(&url, &pairs);
    }
    if request::check_resolved_url(&url).is_err() {
        return Err(
            "the URL is not a valid http(s) URL once its placeholders are filled in".into(),
        );
    }
    let mut headers = Vec::new();
    if let Some(Value::Object(h)) = req.get("headers") {
        for (k, v) in h {
            let value = render(v.as_str().unwrap_or_default())?;
            if request::header(k, &value).is_err() {
                return Err(format!(
                    "header \"{k}\" is not valid once its placeholders are filled in"
                ));
            }
            headers.push((k.clone(), value));
        }
    }
    let has = |headers: &[(String, String)], n: &str| {
        headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n))
    };
    let body = match (
        req.get("body").filter(|b| !b.is_null()),
        req.get("body_text").and_then(Value::as_str),
    ) {
        (Some(b), _) => {
            let b = render_json(b, &render)?;
            if !has(&headers, "content-type") {
                headers.push(("Content-Type".into(), "application/json".into()));
            }
            Some(serde_json::to_vec(&b).map_err(|e| e.to_string())?)
        }
        (None, Some(t)) => {
            if !has(&headers, "content-type") {
                headers.push(("Content-Type".into(), "text/plain; charset=utf-8".into()));
            }
            Some(render(t)?.into_bytes())
        }
        (None, None) => None,
    };
    let timeout_ms = req
        .get("timeout_ms")
        .and_then(Value::as_i64)
        .unwrap_or(30_000)
        .max(1);
    let not_before = match c.item {
        Item::Run { .. } => (c.scheduled_for - chrono::Utc::now())
            .to_std()
            .ok()
            .map(|d| Instant::now() + d.min(Duration::from_millis(super::LEAD_MS as u64))),
        Item::Request { .. } => None,
    };
    let secrets = ctx.used.into_inner();
    Ok((
        client::Request {
            tag: 0,
            method,
            url,
            headers,
            body,
            timeout: Duration::from_millis(timeout_ms as u64),
            follow_redirects: req
                .get("follow_redirects")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            max_response_bytes: max_body,
            not_before,
        },
        secrets,
    ))
}

fn render_json(
    v: &Value,
    render: &dyn Fn(&str) -> Result<String, String>,
) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) => Value::String(render(s)?),
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| render_json(x, render))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| Ok((k.clone(), render_json(x, render)?)))
                .collect::<Result<Map<_, _>, String>>()?,
        ),
        other => other.clone(),
    })
}

/// Replaces secret values (4 characters or more) with `[secret:NAME]`.
fn scrub(s: &str, secrets: &[(String, String)]) -> String {
    let mut out = s.to_string();
    for (name, value) in secrets {
        if value.len() >= 4 && out.contains(value.as_str()) {
            out = out.replace(value.as_str(), &format!("[secret:{name}]"));
        }
    }
    out
}

/// A reply as stored: status, headers (JSON text), body, truncated, error, timings (JSON text).
struct Stored {
    status_code: Option<i32>,
    headers: Option<String>,
    body: Option<String>,
    truncated: Option<bool>,
    error: Option<String>,
    timings: String,
    retry_after: Option<Duration>,
}

fn stored(r: &Reply, secrets: &[(String, String)]) -> Stored {
    let ms = |d: Duration| (d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
    let mut timings = Map::new();
    timings.insert("queued_ms".into(), Value::from(ms(r.queued)));
    if let Some(h) = r.headers_after {
        timings.insert("headers_ms".into(), Value::from(ms(h)));
    }
    timings.insert("total_ms".into(), Value::from(ms(r.total)));
    let timings = Value::Object(timings).to_string();
    match &r.result {
        Ok(resp) => {
            let mut h = Map::new();
            for (k, v) in &resp.headers {
                let k = k.to_ascii_lowercase();
                let v = scrub(v, secrets);
                match h.get_mut(&k) {
                    Some(Value::String(prev)) => {
                        prev.push_str(", ");
                        prev.push_str(&v);
                    }
                    _ => {
                        h.insert(k, Value::String(v));
                    }
                }
            }
            let body = String::from_utf8_lossy(&resp.body).replace('\0', "\u{FFFD}");
            Stored {
                status_code: Some(resp.status as i32),
                headers: Some(Value::Object(h).to_string()),
                body: Some(scrub(&body, secrets)),
                truncated: Some(resp.truncated),
                error: None,
                timings,
                retry_after: resp
                    .header("retry-after")
                    .and_then(|v| client::parse_retry_after(v, chrono::Utc::now())),
            }
        }
        Err(f) => Stored {
            status_code: None,
            headers: None,
            body: None,
            truncated: None,
            error: Some(scrub(&f.message, secrets)),
            timings,
            retry_after: None,
        },
    }
}

fn status_of(v: Verdict) -> crate::run::RunStatus {
    use crate::run::RunStatus;
    match v {
        Verdict::Succeeded => RunStatus::Succeeded,
        Verdict::Failed { .. } => RunStatus::Failed,
        Verdict::TimedOut => RunStatus::TimedOut,
    }
}

fn unit_random() -> f64 {
    unsafe { pg_sys::pg_prng_double(&raw mut pg_sys::pg_global_prng_state) }
}

/// Inside the recording transaction. Returns whether a run retry was queued.
fn record_in_xact(done: &[(InFlight, Reply)]) -> Result<bool, pgrx::spi::SpiError> {
    let mut ids = Vec::new();
    let mut states = Vec::new();
    let mut codes: Vec<Option<i32>> = Vec::new();
    let mut headers: Vec<Option<String>> = Vec::new();
    let mut bodies: Vec<Option<String>> = Vec::new();
    let mut truncated: Vec<Option<bool>> = Vec::new();
    let mut timed_out = Vec::new();
    let mut errors: Vec<Option<String>> = Vec::new();
    let mut timings = Vec::new();
    let mut delays: Vec<i64> = Vec::new();
    let mut retried_runs = false;
    for (f, reply) in done {
        let verdict = reply.verdict();
        let s = stored(reply, &f.secrets);
        let retryable = matches!(verdict, Verdict::Failed { retry: true } | Verdict::TimedOut);
        match f.item {
            Item::Request {
                id,
                attempt,
                max_attempts,
                backoff_us,
            } => {
                let retry = retryable && attempt < max_attempts;
                let delay = if retry {
                    let base = Duration::from_micros(backoff_us.max(1) as u64);
                    crate::retry::Backoff {
                        base,
                        cap: base.max(Duration::from_secs(3600)),
                        jitter: crate::retry::Backoff::default().jitter,
                    }
                    .delay_honouring(attempt.max(1) as u32, unit_random(), s.retry_after)
                    .as_micros() as i64
                } else {
                    0
                };
                ids.push(id);
                states.push(if retry { "pending" } else { status_of(verdict).as_str() }.to_string());
                codes.push(s.status_code);
                headers.push(s.headers);
                bodies.push(s.body);
                truncated.push(s.truncated);
                timed_out.push(verdict == Verdict::TimedOut);
                errors.push(s.error);
                timings.push(s.timings);
                delays.push(delay);
            }
            Item::Run {
                run_id,
                job_id,
                attempt,
            } => {
                let status = status_of(verdict);
                let message = match (&reply.result, &s.error) {
                    (Ok(resp), _) => {
                        let mut m = format!("HTTP {} {}", resp.status, resp.reason);
                        if verdict != Verdict::Succeeded {
                            if let Some(b) = s.body.as_deref().filter(|b| !b.trim().is_empty()) {
                                // the start of the body, on one line (all of it is in `response`)
                                let head: String =
                                    b.split_whitespace().collect::<Vec<_>>().join(" ");
                                m.push_str(": ");
                                m.push_str(&head.chars().take(300).collect::<String>());
                            }
                        }
                        m
                    }
                    (Err(_), e) => e.clone().unwrap_or_default(),
                };
                let mut response = Map::new();
                response.insert(
                    "status_code".into(),
                    s.status_code.map_or(Value::Null, Value::from),
                );
                response.insert(
                    "headers".into(),
                    s.headers
                        .as_deref()
                        .and_then(|h| serde_json::from_str(h).ok())
                        .unwrap_or(Value::Null),
                );
                response.insert(
                    "body".into(),
                    s.body.clone().map_or(Value::Null, Value::String),
                );
                response.insert(
                    "body_truncated".into(),
                    s.truncated.map_or(Value::Null, Value::Bool),
                );
                response.insert(
                    "error".into(),
                    s.error.clone().map_or(Value::Null, Value::String),
                );
                response.insert(
                    "timings".into(),
                    serde_json::from_str(&s.timings).unwrap_or(Value::Null),
                );
                let started = chrono::Utc::now()
                    - chrono::Duration::from_std(reply.total).unwrap_or_default();
                super::runs::finish_run(
                    &crate::outcome::Outcome {
                        job_id,
                        run_id,
                        status,
                        message: Some(&message),
                        started_at: to_pg_ts(started),
                        duration_ms: reply.total.as_secs_f64() * 1000.0,
                        finished_at: None,
                    },
                    Some(&Value::Object(response).to_string()),
                )?;
                if retryable && super::runs::schedule_retry(job_id, attempt, s.retry_after) {
                    retried_runs = true;
                }
            }
        }
    }
    if !ids.is_empty() {
        let arr = |o| PgOid::BuiltIn(o);
        let types = [
            arr(PgBuiltInOids::INT8ARRAYOID),
            arr(PgBuiltInOids::TEXTARRAYOID),
            arr(PgBuiltInOids::INT4ARRAYOID),
            arr(PgBuiltInOids::TEXTARRAYOID),
            arr(PgBuiltInOids::TEXTARRAYOID),
            arr(PgBuiltInOids::BOOLARRAYOID),
            arr(PgBuiltInOids::BOOLARRAYOID),
            arr(PgBuiltInOids::TEXTARRAYOID),
            arr(PgBuiltInOids::TEXTARRAYOID),
            arr(PgBuiltInOids::INT8ARRAYOID),
        ];
        let args: [pgrx::datum::DatumWithOid; 10] = [
            ids.into(),
            states.into(),
            codes.into(),
            headers.into(),
            bodies.into(),
            truncated.into(),
            timed_out.into(),
            errors.into(),
            timings.into(),
            delays.into(),
        ];
        Spi::connect_mut(|c| {
            xact::with_plan(c, RECORD_SQL, &types, |c, stmt| {
                c.update(stmt, None, &args).map(|_| ())
            })
            .and_then(|r| r)
        })?;
    }
    Ok(retried_runs)
}

/// Results of after-commit requests, one statement per batch.
const RECORD_SQL: &str = "UPDATE pulse.http_request h SET
                    state = u.state,
                    finished_at = CASE WHEN u.state = 'pending' THEN NULL ELSE clock_timestamp() END,
                    next_attempt_at = CASE WHEN u.state = 'pending'
                                           THEN clock_timestamp() + u.delay_us * interval '1 microsecond'
                                           ELSE h.next_attempt_at END,
                    lease_until = NULL, status_code = u.code, response_headers = u.headers::jsonb,
                    body = u.body, body_truncated = u.truncated, timed_out = u.timed_out,
                    error = u.error, timings = u.timings::jsonb
               FROM unnest($1::bigint[], $2::text[], $3::int[], $4::text[], $5::text[], $6::bool[],
                           $7::bool[], $8::text[], $9::text[], $10::bigint[])
                    AS u(id, state, code, headers, body, truncated, timed_out, error, timings, delay_us)
              WHERE h.id = ANY ($1::bigint[]) AND h.id = u.id";
