//! Claiming work for the HTTP worker: pending after-commit requests and due HTTP runs
//! (`FOR UPDATE SKIP LOCKED`), within the worker's room and each owner's share of it, handed to
//! the pool (`Worker::claim`); the recovery of work a restart left in flight; and the placeholder
//! values of a claimed request, looked up as its owner (the pure resolution is
//! `crate::http::resolve`).

use super::{
    record, InFlight, Item, Worker, CLAIM_BATCH, DURABLE_CLAIMS_AFTER_START, MAX_IN_FLIGHT,
    MAX_IN_FLIGHT_BYTES, MAX_SLEEP_MS,
};
use crate::http::client::{Failure, FailureKind, Reply};
use crate::http::resolve::{self, Resolved};
use crate::http::template::{Resolve, Var};
use crate::pgutil::from_pg_ts;
use crate::xact;
use pgrx::prelude::*;
use serde_json::Value;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// What a claim read, before its placeholders are resolved.
pub(super) struct Claimed {
    pub item: Item,
    pub owner: pg_sys::Oid,
    /// The stored request, or why it is not sent (gone, or too large to read).
    pub request: Result<Value, String>,
    pub job_name: String,
    pub context_id: i64,
    pub scheduled_for: chrono::DateTime<chrono::Utc>,
}

/// A request found in flight at this many starts of the worker is given up (`failed`): it may be
/// what stops the worker.
pub(super) const MAX_INTERRUPTED: i32 = 3;

/// At start: requests a crash or shutdown left in flight are sent again (at least once: the
/// interrupted send is not counted in `attempts`, which counts recorded sends, but in
/// `interrupted`; at `MAX_INTERRUPTED` the request fails instead); HTTP runs left running
/// fail (as SQL runs do: a run is never silently repeated; see `crate::run::finish::fail_interrupted_http_runs`).
pub(super) fn recover() {
    let n = Spi::connect_mut(|c| {
        c.update(
            "UPDATE pulse.http_request SET interrupted = interrupted + 1, lease_until = NULL,
                    state = (CASE WHEN interrupted + 1 >= $1 THEN 'failed' ELSE 'pending' END)::pulse.http_request_state,
                    finished_at = CASE WHEN interrupted + 1 >= $1 THEN clock_timestamp() END,
                    error = CASE WHEN interrupted + 1 >= $1
                                 THEN 'the HTTP worker stopped ' || (interrupted + 1) || ' times while this request was in flight: it is not sent again'
                                 ELSE error END,
                    next_attempt_at = least(next_attempt_at, now())
              WHERE state = 'sending'",
            None,
            &[MAX_INTERRUPTED.into()],
        )
        .map(|t| t.len())
        .unwrap_or(0)
    });
    if n > 0 {
        log!("pg_pulse http: sending {n} request(s) again that were in flight at a restart");
    }
    let n = crate::run::finish::fail_interrupted_http_runs();
    if n > 0 {
        log!("pg_pulse http: marked {n} HTTP run(s) as failed that were being sent when the worker stopped");
    }
}

/// Claims up to `limit` due after-commit requests, round-robin by owner (each owner's first due
/// request, then each one's second, ...), and no more of an owner's than bring its requests in
/// flight to `per_owner` (`in_flight`: (owner, count) now). So one owner's backlog never keeps
/// another owner's request out of the claim, and never fills the worker's whole in-flight room.
pub(super) fn claim_requests(
    limit: usize,
    per_owner: usize,
    in_flight: &[(pg_sys::Oid, i32)],
) -> Vec<Claimed> {
    let (owners, counts): (Vec<pg_sys::Oid>, Vec<i32>) = in_flight.iter().copied().unzip();
    Spi::connect_mut(|c| {
        let t = xact::with_plan(
            c,
            // now(), not clock_timestamp(), so that the pending index is scanned in order: this
            // transaction starts after the commits that woke the worker
            // `attempts` counts sends, recorded with their outcome: the attempt being made is
            // attempts + 1
            // The owners with unfinished requests (pending or sending: the index's rows, in
            // its order, so no sort of them) come from a skip scan of
            // http_request_pending_owner_idx (one probe per owner), each owner's due requests in
            // order from the same index.
            concat!(
                crate::run::claim::owners_skip_scan!("pulse.http_request", "q.finished_at IS NULL"),
                ",
             ranked AS (
               SELECT x.ctid, x.rk, x.next_attempt_at, x.id
                 FROM owners o CROSS JOIN LATERAL (
                      SELECT q.ctid, q.next_attempt_at, q.id,
                             row_number() OVER (ORDER BY q.next_attempt_at, q.id) AS rk
                        FROM pulse.http_request q
                       WHERE q.finished_at IS NULL AND q.state = 'pending' AND q.owner = o.owner AND q.next_attempt_at <= now()
                       ORDER BY q.next_attempt_at, q.id
                       LIMIT least($1, greatest(0, $2 - coalesce(
                             (SELECT f.n FROM unnest($3::oid[], $4::int4[]) AS f(ow, n) WHERE f.ow = o.owner), 0)))) x
                WHERE o.owner IS NOT NULL)
             UPDATE pulse.http_request h SET state = 'sending',
                    sent_at = clock_timestamp(),
                    lease_until = clock_timestamp()
                        + (CASE WHEN pg_column_size(h.request) <= 8192 -- (as stored: a larger one is not read here)
                                THEN least(greatest(coalesce((h.request->>'timeout_ms')::float8, 30000), 0), 86400000)
                                ELSE 86400000 END + 60000) * interval '1 millisecond'
              WHERE h.ctid = ANY (ARRAY(
                    SELECT q.ctid FROM pulse.http_request q
                     WHERE q.ctid = ANY (ARRAY(SELECT r.ctid FROM ranked r ORDER BY r.rk, r.next_attempt_at, r.id LIMIT $1))
                       AND q.state = 'pending'
                       FOR UPDATE SKIP LOCKED))
            RETURNING h.id, h.owner, h.request, h.attempts + 1, h.max_attempts,
                      (extract(epoch FROM h.retry_backoff) * 1000000)::bigint, h.created_at"
            ),
            &[
                PgOid::BuiltIn(PgBuiltInOids::INT8OID),
                PgOid::BuiltIn(PgBuiltInOids::INT8OID),
                PgOid::BuiltIn(PgBuiltInOids::OIDARRAYOID),
                PgOid::BuiltIn(PgBuiltInOids::INT4ARRAYOID),
            ],
            |c, stmt| {
                c.select(
                    stmt,
                    None,
                    &[
                        (limit as i64).into(),
                        (per_owner as i64).into(),
                        owners.into(),
                        counts.into(),
                    ],
                )
                .map(|mut t| {
                    let mut out = Vec::new();
                    while let Some(row) = t.next() {
                        let request =
                            xact::stored_request(&t, &row, 3, "the stored request is missing");
                        out.extend(claimed_request(&row, request));
                    }
                    out
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

/// Due HTTP runs (see `crate::run::claim::claim_http_runs`), as claims to resolve.
pub(super) fn claim_runs(
    pid: i32,
    limit: usize,
    per_owner: usize,
    in_flight: &[(pg_sys::Oid, i32)],
) -> Vec<Claimed> {
    match crate::run::claim::claim_http_runs(
        pid,
        super::super::LEAD_MS,
        limit,
        per_owner,
        in_flight,
    ) {
        Ok(v) => v
            .into_iter()
            .map(|r| Claimed {
                item: Item::Run {
                    run_id: r.run_id,
                    job_id: r.job_id,
                    attempt: r.attempt,
                },
                owner: r.owner,
                request: r.http,
                job_name: r.job_name,
                context_id: r.run_id,
                scheduled_for: from_pg_ts(r.scheduled_for),
            })
            .collect(),
        Err(e) => {
            warning!("pg_pulse http: claiming runs failed: {e}");
            Vec::new()
        }
    }
}

/// Placeholder values for one request, looked up as its owner.
struct Ctx<'a> {
    owner: pg_sys::Oid,
    c: &'a Claimed,
    attempt: i32,
    /// A secret that exists but does not open as the owner's (name, why): the request fails.
    unreadable: std::cell::RefCell<Option<(String, String)>>,
}

impl Resolve for Ctx<'_> {
    /// The owner's secret, opened (`crate::http::secrets::open_secret`); one that does not open
    /// (planted or copied under this owner or name, or another key) resolves to nothing and is
    /// remembered, so that the request fails saying so.
    fn secret(&self, name: &str) -> Option<String> {
        match crate::http::secrets::open_secret(self.owner, name) {
            Ok(v) => v,
            Err(why) => {
                self.unreadable
                    .borrow_mut()
                    .get_or_insert((name.to_string(), why));
                None
            }
        }
    }

    /// ALTER ROLE owner [IN DATABASE] SET, then ALTER DATABASE SET, then the server's own value
    /// (postgresql.conf); settings only superusers may read are not resolved for other roles.
    fn setting(&self, name: &str) -> Option<String> {
        let stored =
            crate::pgutil::stored_setting(self.owner, unsafe { pg_sys::MyDatabaseId }, name);
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

/// Builds the request to send (see `crate::http::resolve::build`), its placeholders resolved as
/// its owner. Errors name what is wrong, never a value.
pub(super) fn resolve(
    c: &Claimed,
    limits: &crate::http::request::Limits,
    max_response: usize,
) -> Resolved {
    let req = c.request.as_ref().map_err(Clone::clone)?;
    let attempt = match c.item {
        Item::Request { attempt, .. } | Item::Run { attempt, .. } => attempt,
    };
    let ctx = Ctx {
        owner: c.owner,
        c,
        attempt,
        unreadable: std::cell::RefCell::new(None),
    };
    let not_before = match c.item {
        Item::Run { .. } => (c.scheduled_for - chrono::Utc::now())
            .to_std()
            .ok()
            .map(|d| Instant::now() + d.min(Duration::from_millis(super::super::LEAD_MS as u64))),
        Item::Request { .. } => None,
    };
    let built = resolve::build(req, &ctx, limits, max_response, not_before);
    if let (Err(_), Some((name, why))) = (&built, ctx.unreadable.borrow_mut().take()) {
        return Err(format!(
            "secret \"{name}\" cannot be read: {why}; nothing was sent. Set it again with pulse.set_secret."
        ));
    }
    built.map(|(mut r, secrets)| {
        // the pool shares its threads fairly between owners
        r.key = c.owner.to_u32();
        (r, secrets)
    })
}

/// A claimed row as the HTTP worker takes it (None if a column is missing).
fn claimed_request(
    row: &pgrx::spi::SpiHeapTupleData<'_>,
    request: Result<serde_json::Value, String>,
) -> Option<Claimed> {
    let id: i64 = row.get(1).ok()??;
    Some(Claimed {
        item: Item::Request {
            id,
            attempt: row.get(4).ok()??,
            // the documented ranges, whatever the row holds (the
            // table has no CHECK constraints: see sql/schema.sql)
            max_attempts: row.get::<i32>(5).ok()??.clamp(1, 100),
            backoff_us: row.get::<i64>(6).ok()??.max(1_000),
        },
        owner: row.get(2).ok()??,
        request,
        job_name: String::new(),
        context_id: id,
        scheduled_for: from_pg_ts(row.get(7).ok()??),
    })
}

impl Worker {
    /// Claims work and hands it to the pool (and tells `pace` whether more may be waiting).
    /// Returns how many items were claimed and, when it looked, in how many ms the next pending
    /// retry is due.
    pub(super) fn claim(&mut self) -> (usize, Option<i64>) {
        self.pace.claiming(Instant::now());
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
        for f in self.in_flight.values().filter(|f| !f.answered) {
            *per_owner.entry(f.owner).or_insert(0) += 1;
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
                // Due and not claimed: their owners are at their share of the room, and the
                // replies that make room wake the loop. And when the next retry is due (however
                // many are due now).
                let r = Spi::connect_mut(|c| {
                    xact::with_plan(c, DUE_SQL, &[], |c, stmt| {
                        c.select(stmt, Some(1), &[])?.first().get_two::<bool, f64>()
                    })?
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
                self.pace.claimed(false, None);
                return (0, Some(MAX_SLEEP_MS));
            }
            Err(f) => {
                warning!("pg_pulse http: could not claim requests: {}", f.message);
                self.pace.claimed(false, None);
                return (0, Some(1000));
            }
        };
        self.pace.claimed(
            backlog,
            next_due.map(|ms| Instant::now() + Duration::from_millis(ms as u64)),
        );
        let n = resolved.len();
        self.recovered = true;
        let mut not_sent = Vec::new();
        let mut to_send = Vec::with_capacity(resolved.len());
        for (item, owner, res) in resolved {
            let tag = self.next_tag;
            self.next_tag += 1;
            let (secrets, bytes) = match res {
                Ok((mut req, secrets)) => {
                    req.tag = tag;
                    let bytes = request_bytes(&req);
                    self.in_flight_bytes += bytes;
                    to_send.push(req);
                    (secrets, bytes)
                }
                Err(message) => {
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
                    (Vec::new(), 0)
                }
            };
            self.in_flight.insert(
                tag,
                InFlight {
                    item,
                    owner,
                    secrets,
                    bytes,
                    answered: false,
                },
            );
        }
        self.pool.submit_all(to_send);
        if !not_sent.is_empty() {
            self.record(not_sent);
        }
        (n, next_due)
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

/// Whether pending requests are due now, and in how many ms the next later one is. A plan
/// prepared as a writing one (`xact::with_plan`): it sees the claim that ran before it in the
/// transaction, and, run through `select`, assigns no transaction id.
const DUE_SQL: &str = "SELECT EXISTS (SELECT FROM pulse.http_request WHERE finished_at IS NULL
                                AND state = 'pending' AND next_attempt_at <= clock_timestamp()),
                      (SELECT (extract(epoch FROM min(next_attempt_at) - clock_timestamp()) * 1000)::float8
                         FROM pulse.http_request WHERE finished_at IS NULL AND state = 'pending'
                          AND next_attempt_at > clock_timestamp())";
