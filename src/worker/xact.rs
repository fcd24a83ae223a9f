//! Transactions inside a background worker, with errors turned into values so that a failing
//! statement never takes the worker down.

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
        Ok(r)
    })
    .catch_others(|e| {
        unsafe {
            pg_sys::AbortCurrentTransaction();
        }
        Err(Failure::from_caught(e))
    })
    .execute()
}

/// `SET LOCAL synchronous_commit = off` for bookkeeping transactions: losing one in a crash only
/// loses state that nothing durable depends on (a later durable commit flushes it too).
pub fn async_commit() {
    let _ = Spi::run("SET LOCAL synchronous_commit TO off");
}
