//! Transactions inside a background worker, with errors turned into values so that a failing
//! statement never takes the worker down; prepared statements kept per process; and the
//! statistics a worker must send itself.

use pgrx::pg_sys;
use pgrx::prelude::*;

/// What a caught PostgreSQL (or Rust) error said.
#[derive(Debug, Clone)]
pub struct Failure {
    pub sqlstate: pgrx::PgSqlErrorCode,
    pub message: String,
}

impl Failure {
    pub fn from_caught(e: pg_sys::panic::CaughtError) -> Failure {
        match e {
            pg_sys::panic::CaughtError::PostgresError(r)
            | pg_sys::panic::CaughtError::ErrorReport(r)
            | pg_sys::panic::CaughtError::RustPanic { ereport: r, .. } => {
                let mut message = r.message().to_string();
                if let Some(d) = r.detail() {
                    message.push_str(" (");
                    message.push_str(d);
                    message.push(')');
                }
                Failure {
                    sqlstate: r.sql_error_code(),
                    message,
                }
            }
        }
    }
}

/// Runs `f` in its own transaction with an active snapshot and commits. On any error the
/// transaction is aborted and the error returned.
pub fn run<R>(f: impl FnOnce() -> R + std::panic::UnwindSafe) -> Result<R, Failure> {
    PgTryBuilder::new(|| unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        let r = f();
        if pg_sys::ActiveSnapshotSet() {
            pg_sys::PopActiveSnapshot();
        }
        pg_sys::CommitTransactionCommand();
        flush_stats(false);
        Ok(r)
    })
    .catch_others(|e| {
        unsafe {
            pg_sys::AbortCurrentTransaction();
        }
        flush_stats(false);
        Err(Failure::from_caught(e))
    })
    .execute()
}

/// Runs `f` in a subtransaction of the current transaction. On any error only the subtransaction
/// is rolled back and `None` returned: the enclosing transaction goes on.
pub fn in_subxact<R>(f: impl FnOnce() -> R + std::panic::UnwindSafe) -> Option<R> {
    subxact(f, false).ok()
}

/// [`in_subxact`], keeping the error: its SQLSTATE, and its message followed by its HINT. A cancel
/// (`statement_timeout`, pg_cancel_backend, a shutdown: SQLSTATE class 57) is not caught: it
/// ends the whole statement, as the caller asked.
pub fn try_subxact<R>(
    f: impl FnOnce() -> R + std::panic::UnwindSafe,
) -> Result<R, (pgrx::PgSqlErrorCode, String)> {
    subxact(f, true)
}

fn subxact<R>(
    f: impl FnOnce() -> R + std::panic::UnwindSafe,
    pass_cancels: bool,
) -> Result<R, (pgrx::PgSqlErrorCode, String)> {
    unsafe {
        let context = pg_sys::CurrentMemoryContext;
        let owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        PgTryBuilder::new(|| {
            let r = f();
            pg_sys::ReleaseCurrentSubTransaction();
            pg_sys::MemoryContextSwitchTo(context);
            pg_sys::CurrentResourceOwner = owner;
            Ok(r)
        })
        .catch_others(|e| {
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
            pg_sys::MemoryContextSwitchTo(context);
            pg_sys::CurrentResourceOwner = owner;
            let (hint, cancel) = match &e {
                pg_sys::panic::CaughtError::PostgresError(r)
                | pg_sys::panic::CaughtError::ErrorReport(r)
                | pg_sys::panic::CaughtError::RustPanic { ereport: r, .. } => (
                    r.hint().map(str::to_string),
                    matches!(
                        r.sql_error_code(),
                        pgrx::PgSqlErrorCode::ERRCODE_OPERATOR_INTERVENTION
                            | pgrx::PgSqlErrorCode::ERRCODE_QUERY_CANCELED
                            | pgrx::PgSqlErrorCode::ERRCODE_ADMIN_SHUTDOWN
                            | pgrx::PgSqlErrorCode::ERRCODE_CRASH_SHUTDOWN
                            | pgrx::PgSqlErrorCode::ERRCODE_CANNOT_CONNECT_NOW
                            | pgrx::PgSqlErrorCode::ERRCODE_DATABASE_DROPPED
                    ),
                ),
            };
            if pass_cancels && cancel {
                e.rethrow()
            }
            let f = Failure::from_caught(e);
            let mut m = f.message;
            if let Some(h) = hint {
                m.push_str(". ");
                m.push_str(&h);
            }
            Err((f.sqlstate, m))
        })
        .execute()
    }
}

/// Runs `f` in a subtransaction that is rolled back afterwards: whatever `f` changed is undone (a
/// dry run), what it returns is kept. Its errors propagate.
pub fn rolled_back<R>(f: impl FnOnce() -> R + std::panic::UnwindSafe) -> R {
    unsafe {
        let context = pg_sys::CurrentMemoryContext;
        let owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        let r = PgTryBuilder::new(f)
            .catch_others(|e| {
                pg_sys::RollbackAndReleaseCurrentSubTransaction();
                pg_sys::MemoryContextSwitchTo(context);
                pg_sys::CurrentResourceOwner = owner;
                e.rethrow()
            })
            .execute();
        pg_sys::RollbackAndReleaseCurrentSubTransaction();
        pg_sys::MemoryContextSwitchTo(context);
        pg_sys::CurrentResourceOwner = owner;
        r
    }
}

/// `SET LOCAL synchronous_commit = off` for bookkeeping transactions: losing one in a crash only
/// loses state that nothing durable depends on (a later durable commit flushes it too).
pub fn async_commit() {
    crate::pgutil::set_xact_guc(c"synchronous_commit", c"off");
}

/// The first column of the first row of a read-only query.
///
/// pgrx's `Spi::get_one`, `Spi::run` and `SpiClient::update` mark the transaction as writing,
/// which assigns it a transaction id: a worker's wake-up that finds nothing to do would then
/// still commit, write WAL (keeping an idle server's WAL, archives and checkpoints busy) and, for a
/// synchronous commit, wait for a flush. Worker code reads with this and runs its writes as
/// prepared statements through `SpiClient::select` (see `with_plan`), so that a transaction gets
/// an id only when it changes a row.
pub fn read_one<T: pgrx::FromDatum + pgrx::IntoDatum>(sql: &str) -> Option<T> {
    Spi::connect_mut(|c| {
        c.select(sql, Some(1), &[])
            .ok()?
            .first()
            .get_one::<T>()
            .ok()
            .flatten()
    })
}

thread_local! {
    static PLANS: std::cell::RefCell<std::collections::HashMap<&'static str, pgrx::spi::OwnedPreparedStatement>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// Runs a worker's fixed statement through a plan prepared once per process (PostgreSQL
/// revalidates it if the tables change), saving the parse and plan on every run.
/// The plan is prepared as a writing one, so it runs read-write even through
/// `SpiClient::select`, which (unlike `update`) assigns no transaction id before a row changes:
/// use `select` for statements that often change nothing (claims, pruning).
pub fn with_plan<'conn, R>(
    client: &mut pgrx::spi::SpiClient<'conn>,
    sql: &'static str,
    types: &[PgOid],
    f: impl FnOnce(&mut pgrx::spi::SpiClient<'conn>, &pgrx::spi::OwnedPreparedStatement) -> R,
) -> Result<R, pgrx::spi::SpiError> {
    PLANS.with(|plans| {
        let mut plans = plans.borrow_mut();
        if !plans.contains_key(sql) {
            let stmt = client.prepare_mut(sql, types)?.keep();
            plans.insert(sql, stmt);
        }
        Ok(f(client, plans.get(sql).expect("plan just inserted")))
    })
}

/// Sends this process's table and I/O statistics to the shared statistics (pg_stat_user_tables,
/// and autovacuum, which decides from them when pulse.job_run and friends need a vacuum).
/// Backends do this when idle; a background worker must do it itself, or the rows its
/// transactions insert, update and delete are never counted. Unforced, PostgreSQL flushes at
/// most once a second and never waits for a lock, and the result is how many milliseconds until
/// statistics still pending should be sent (0: nothing pending). Forced, it sends everything.
/// Outside a transaction only.
pub fn flush_stats(force: bool) -> i64 {
    unsafe {
        if pg_sys::IsTransactionOrTransactionBlock() {
            0
        } else {
            pg_sys::pgstat_report_stat(force) as i64
        }
    }
}

/// The stored HTTP request (jsonb) in column `ordinal` of the current row of `t` (`row`), read
/// only when its stored size, taken from the value's header (a TOASTed value is not fetched), is
/// within what a request inside the limits can take; else why it is not read. `missing`: why a
/// NULL is not sent.
pub fn stored_request(
    t: &pgrx::spi::SpiTupleTable<'_>,
    row: &pgrx::spi::SpiHeapTupleData<'_>,
    ordinal: usize,
    missing: &str,
) -> Result<serde_json::Value, String> {
    let max = crate::http_limits().stored_max();
    if let Some(d) = t.get_datum_by_ordinal(ordinal).ok().flatten() {
        let size = unsafe { pg_sys::toast_raw_datum_size(d) };
        if size > max {
            return Err(crate::http::request::stored_too_large(size, max));
        }
    }
    row.get::<pgrx::JsonB>(ordinal)
        .ok()
        .flatten()
        .map(|j| j.0)
        .ok_or_else(|| missing.to_string())
}
