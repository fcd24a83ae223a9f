//! The after-commit requests of the current transaction, written to `pulse.http_request` in bulk:
//! `pulse.http_post` & co. take an id from the table's sequence; a transaction's first
//! `AT_ONCE` rows are inserted at once, the rest kept in memory and inserted with one statement
//! when the transaction commits (or prepares), when many are waiting, or at once when the
//! subtransaction rules below need it. Nobody else sees a
//! request before its transaction commits, so storing it later changes nothing for others: the
//! HTTP worker sends it after the commit, as before, and a rollback sends nothing.
//!
//! Subtransactions: a row kept in memory belongs to the subtransaction that made it (its id). A
//! rolled-back subtransaction drops its rows and those of its children. Rows are inserted only
//! while every kept row belongs to the current subtransaction or to children of it that
//! committed (their ids are not lower than the current one): so an inserted row is rolled back
//! exactly when its request should be. When that does not hold (a request made in a
//! subtransaction while its parent still keeps rows), the new row is inserted at once.
//!
//! The one writer of `pulse.http_request` rows made by callers (`crate::http::api` builds
//! and checks the requests).

use crate::pgutil;
use pgrx::prelude::*;
use std::cell::{Cell, RefCell};

/// A transaction's first requests are inserted at once, one by one: a transaction that makes a
/// few pays nothing more at its commit (which is when they start on their way), and one that
/// makes many has the rest written together.
const AT_ONCE: usize = 8;
/// Rows kept at most before they are inserted (in one statement).
const MAX_ROWS: usize = 10_000;
/// Bytes of kept requests at most before they are inserted.
const MAX_BYTES: usize = 16 << 20;

struct Row {
    id: i64,
    owner: pg_sys::Oid,
    /// The checked request, as JSON text.
    request: String,
    max_attempts: i32,
    retry_backoff: Option<Interval>,
    subid: pg_sys::SubTransactionId,
    /// The sequence the id came from: a row whose table was dropped (and made again) in this
    /// transaction is not written into the new one.
    seq: pg_sys::Oid,
}

#[derive(Default)]
struct Kept {
    rows: Vec<Row>,
    bytes: usize,
    /// The lowest and highest subtransaction ids of the kept rows.
    min_subid: Option<pg_sys::SubTransactionId>,
    max_subid: Option<pg_sys::SubTransactionId>,
    /// Requests made in this transaction (since the last bulk insert).
    made: usize,
}

thread_local! {
    static KEPT: RefCell<Kept> = RefCell::new(Kept::default());
    static REGISTERED: Cell<bool> = const { Cell::new(false) };
    /// The commit's insert has run: a request made after it (by another extension's commit
    /// callback) is inserted at once.
    static COMMITTING: Cell<bool> = const { Cell::new(false) };
}

const INSERT_SQL: &str = "INSERT INTO pulse.http_request (id, owner, request, max_attempts, retry_backoff)
     SELECT u.id, u.owner, u.request::jsonb, u.max_attempts, coalesce(u.backoff, interval '10 seconds')
       FROM unnest($1::int8[], $2::oid[], $3::text[], $4::int4[], $5::interval[])
            AS u(id, owner, request, max_attempts, backoff)";

/// Stores a checked request (`request`, JSON text) for the HTTP worker, which sends it after this
/// transaction commits. Returns its id. Runs privileged (see `crate::pgutil::privileged`).
pub fn store(
    request: String,
    owner: pg_sys::Oid,
    max_attempts: i32,
    retry_backoff: Option<Interval>,
) -> Result<i64, String> {
    register();
    let seq = sequence().ok_or("the sequence pulse.http_request_id_seq is missing")?;
    let id = unsafe { pgrx::direct_function_call::<i64>(pg_sys::nextval_oid, &[seq.into_datum()]) }
        .ok_or("nextval returned NULL")?;
    let subid = unsafe { pg_sys::GetCurrentSubTransactionId() };
    let row = Row {
        id,
        owner,
        request,
        max_attempts,
        retry_backoff,
        subid,
        seq,
    };
    let (at_once, full) = KEPT.with(|k| {
        let mut k = k.borrow_mut();
        k.made += 1;
        if k.made <= AT_ONCE || COMMITTING.get() || k.min_subid.is_some_and(|m| m < subid) {
            return (Some(row), false);
        }
        k.bytes += row.request.len();
        k.min_subid.get_or_insert(subid);
        k.max_subid = k.max_subid.max(Some(subid));
        k.rows.push(row);
        (None, k.rows.len() >= MAX_ROWS || k.bytes >= MAX_BYTES)
    });
    if let Some(row) = at_once {
        insert(vec![row], seq)?;
    } else if full {
        flush(seq)?;
    }
    crate::worker::wake_http_at_commit();
    Ok(id)
}

/// The sequence of `pulse.http_request`'s ids (None: the extension is not there).
fn sequence() -> Option<pg_sys::Oid> {
    let seq = unsafe {
        let nsp = pg_sys::get_namespace_oid(c"pulse".as_ptr(), true);
        if nsp == pg_sys::Oid::INVALID {
            pg_sys::Oid::INVALID
        } else {
            pg_sys::get_relname_relid(c"http_request_id_seq".as_ptr(), nsp)
        }
    };
    (seq != pg_sys::Oid::INVALID).then_some(seq)
}

/// Inserts every kept row; `seq`: the current table's sequence (see `insert`).
fn flush(seq: pg_sys::Oid) -> Result<(), String> {
    let rows = KEPT.with(|k| std::mem::take(&mut *k.borrow_mut())).rows;
    insert(rows, seq)
}

/// Inserts rows into the table whose sequence is `seq` (the current one); rows whose ids came
/// from another sequence belonged to a table dropped in this transaction and went with it.
fn insert(mut rows: Vec<Row>, seq: pg_sys::Oid) -> Result<(), String> {
    rows.retain(|r| r.seq == seq);
    if rows.is_empty() {
        return Ok(());
    }
    let n = rows.len();
    let (mut ids, mut owners, mut requests, mut attempts, mut backoffs) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for r in rows {
        ids.push(r.id);
        owners.push(r.owner);
        requests.push(r.request);
        attempts.push(r.max_attempts);
        backoffs.push(r.retry_backoff);
    }
    let types = [
        PgOid::BuiltIn(PgBuiltInOids::INT8ARRAYOID),
        PgOid::BuiltIn(PgBuiltInOids::OIDARRAYOID),
        PgOid::BuiltIn(PgBuiltInOids::TEXTARRAYOID),
        PgOid::BuiltIn(PgBuiltInOids::INT4ARRAYOID),
        PgOid::BuiltIn(PgBuiltInOids::INTERVALARRAYOID),
    ];
    Spi::connect_mut(|c| {
        crate::xact::with_plan(c, INSERT_SQL, &types, |c, stmt| {
            c.update(
                stmt,
                None,
                &[
                    ids.into(),
                    owners.into(),
                    requests.into(),
                    attempts.into(),
                    backoffs.into(),
                ],
            )
            .map(|_| ())
        })
        .and_then(|r| r)
    })
    .map_err(|e| e.to_string())
}

/// Registers the transaction callbacks, once per process.
fn register() {
    if REGISTERED.replace(true) {
        return;
    }
    unsafe {
        pg_sys::RegisterXactCallback(Some(on_xact), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(on_subxact), std::ptr::null_mut());
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_xact(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    use pg_sys::XactEvent::*;
    match event {
        XACT_EVENT_PRE_COMMIT | XACT_EVENT_PRE_PREPARE => {
            if KEPT.with(|k| k.borrow().rows.is_empty()) {
                COMMITTING.set(true);
                return;
            }
            // the extension may have been dropped in this transaction: its requests are gone
            // with it (and are not written into a table made again since: see `insert`)
            let r = if let Some(seq) = sequence() {
                // (no statement is running at commit: the insert needs a snapshot of its own)
                unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot()) };
                let r = pgutil::privileged(move || flush(seq));
                unsafe { pg_sys::PopActiveSnapshot() };
                r
            } else {
                KEPT.with(|k| k.take());
                Ok(())
            };
            COMMITTING.set(true);
            if let Err(e) = r {
                pgutil::invalid(
                    format!("could not store the requests of pulse.http_post & co.: {e}"),
                    "",
                );
            }
        }
        XACT_EVENT_COMMIT
        | XACT_EVENT_ABORT
        | XACT_EVENT_PREPARE
        | XACT_EVENT_PARALLEL_COMMIT
        | XACT_EVENT_PARALLEL_ABORT => {
            KEPT.with(|k| k.take());
            COMMITTING.set(false);
        }
        _ => {}
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_subxact(
    event: pg_sys::SubXactEvent::Type,
    my_subid: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    if event != pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        return;
    }
    KEPT.with(|k| {
        let mut k = k.borrow_mut();
        if k.max_subid.is_none_or(|m| m < my_subid) {
            return;
        }
        k.rows.retain(|r| r.subid < my_subid);
        k.bytes = k.rows.iter().map(|r| r.request.len()).sum();
        k.min_subid = k.rows.iter().map(|r| r.subid).min();
        k.max_subid = k.rows.iter().map(|r| r.subid).max();
    });
}
