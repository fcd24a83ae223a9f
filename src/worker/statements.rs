//! Runs a job's command as top-level statements, the way `psql -c` sends it to a backend
//! (PostgreSQL's simple-query path): parse, analyze, plan, run each statement in a portal.
//!
//! Transactions: a command of one statement runs as a top-level statement, so `VACUUM`,
//! `CREATE INDEX CONCURRENTLY` and procedures that `COMMIT` work. Several statements run in one
//! implicit transaction (as with `psql -c`), unless one of them cannot run inside a transaction
//! block (see [`needs_own_transaction`]): then each statement commits on its own. An explicit
//! `BEGIN` ... `COMMIT` in the command works as in psql; a command that leaves a transaction
//! block open is rolled back and fails.

use crate::xact::Failure;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::CString;
use std::time::Instant;

/// `STATEMENT_TIMEOUT` in PostgreSQL's `TimeoutId` enum (utils/timeout.h).
const STATEMENT_TIMEOUT: i32 = 3;

unsafe extern "C-unwind" {
    fn enable_timeout_after(id: i32, delay_ms: i32);
    fn disable_timeout(id: i32, keep_indicator: bool);
}

/// Why a command failed: the error, and which statement raised it when there were several.
pub struct Failed {
    pub failure: Failure,
    /// (1-based index, count, the statement's text) when the command has several statements.
    pub statement: Option<(usize, usize, String)>,
}

impl Failed {
    pub fn message(&self) -> String {
        match &self.statement {
            Some((i, n, text)) => format!(
                "{} (statement {i} of {n}: {})",
                self.failure.message,
                super::handoff::cut(text.trim(), 200)
            ),
            None => self.failure.message.clone(),
        }
    }
}

/// Runs `command` and returns the last statement's command tag (`INSERT 0 3`, `VACUUM`, ...).
/// `deadline` bounds the whole command (the job's timeout); a `statement_timeout` setting of the
/// owner bounds each statement, as it would in psql.
pub fn run(command: &str, deadline: Option<Instant>) -> Result<String, Failed> {
    let Ok(ccommand) = CString::new(command) else {
        return Err(Failed {
            failure: Failure {
                sqlstate: PgSqlErrorCode::ERRCODE_CHARACTER_NOT_IN_REPERTOIRE,
                message: "the command contains a zero byte".into(),
            },
            statement: None,
        });
    };
    let at = std::cell::Cell::new(None::<(usize, usize, String)>);
    let runctx = unsafe {
        pg_sys::AllocSetContextCreateExtended(
            pg_sys::TopMemoryContext,
            c"pg_pulse command".as_ptr(),
            pg_sys::ALLOCSET_DEFAULT_MINSIZE as usize,
            pg_sys::ALLOCSET_DEFAULT_INITSIZE as usize,
            pg_sys::ALLOCSET_DEFAULT_MAXSIZE as usize,
        )
    };
    let at_ref = std::panic::AssertUnwindSafe(&at);
    let result =
        PgTryBuilder::new(move || unsafe { run_in(&ccommand, command, runctx, deadline, *at_ref) })
            .catch_others(|e| {
                unsafe {
                    disable_timeout(STATEMENT_TIMEOUT, false);
                    pg_sys::AbortCurrentTransaction();
                    pg_sys::AbortOutOfAnyTransaction();
                    pg_sys::PortalErrorCleanup();
                    pg_sys::MemoryContextSwitchTo(pg_sys::TopMemoryContext);
                    if pg_sys::ProcDiePending == 0 {
                        pg_sys::QueryCancelPending = 0;
                    }
                }
                Err(Failure::from_caught(e))
            })
            .execute();
    unsafe {
        disable_timeout(STATEMENT_TIMEOUT, false);
        pg_sys::MemoryContextSwitchTo(pg_sys::TopMemoryContext);
        pg_sys::MemoryContextDelete(runctx);
    }
    result.map_err(|failure| Failed {
        failure,
        statement: at.take(),
    })
}

unsafe fn list_nth(list: *mut pg_sys::List, i: usize) -> *mut std::ffi::c_void {
    unsafe { (*(*list).elements.add(i)).ptr_value }
}

unsafe fn tag_of(node: *mut pg_sys::Node) -> pg_sys::NodeTag {
    unsafe { (*node).type_ }
}

/// Statements PostgreSQL refuses inside a transaction block, or that may end transactions
/// themselves (procedures and DO blocks that COMMIT). A command containing one runs each
/// statement in a transaction of its own.
unsafe fn needs_own_transaction(stmt: *mut pg_sys::Node) -> bool {
    use pg_sys::NodeTag::*;
    unsafe {
        match tag_of(stmt) {
            T_VacuumStmt
            | T_CallStmt
            | T_DoStmt
            | T_CreatedbStmt
            | T_DropdbStmt
            | T_AlterSystemStmt
            | T_CreateTableSpaceStmt
            | T_DropTableSpaceStmt
            | T_CreateSubscriptionStmt
            | T_DropSubscriptionStmt
            | T_AlterSubscriptionStmt
            | T_ReindexStmt
            | T_ClusterStmt => true,
            T_IndexStmt => (*(stmt as *mut pg_sys::IndexStmt)).concurrent,
            T_DropStmt => (*(stmt as *mut pg_sys::DropStmt)).concurrent,
            _ => false,
        }
    }
}

unsafe fn run_in(
    ccommand: &CString,
    command: &str,
    runctx: pg_sys::MemoryContext,
    deadline: Option<Instant>,
    at: &std::cell::Cell<Option<(usize, usize, String)>>,
) -> Result<String, Failure> {
    unsafe {
        let query = ccommand.as_ptr();
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        let mut xact_started = true;
        pg_sys::MemoryContextSwitchTo(runctx);
        let list = pg_sys::pg_parse_query(query);
        let n = if list.is_null() {
            0
        } else {
            (*list).length as usize
        };
        let mut autocommit = false;
        for i in 0..n {
            let raw = list_nth(list, i) as *mut pg_sys::RawStmt;
            autocommit |= needs_own_transaction((*raw).stmt);
        }
        let implicit_block = n > 1 && !autocommit;
        let mut tag = String::new();
        for i in 0..n {
            let raw = list_nth(list, i) as *mut pg_sys::RawStmt;
            if n > 1 {
                at.set(Some((i + 1, n, statement_text(command, raw))));
            }
            let stmt = (*raw).stmt;
            let command_tag = pg_sys::CreateCommandTag(stmt);
            if !xact_started {
                pg_sys::SetCurrentStatementStartTimestamp();
                pg_sys::StartTransactionCommand();
                xact_started = true;
            }
            if implicit_block {
                pg_sys::BeginImplicitTransactionBlock();
            }
            arm_timeout(deadline);
            pgrx::check_for_interrupts!();

            let stmtctx = pg_sys::AllocSetContextCreateExtended(
                runctx,
                c"pg_pulse statement".as_ptr(),
                pg_sys::ALLOCSET_DEFAULT_MINSIZE as usize,
                pg_sys::ALLOCSET_DEFAULT_INITSIZE as usize,
                pg_sys::ALLOCSET_DEFAULT_MAXSIZE as usize,
            );
            let snapshot = pg_sys::analyze_requires_snapshot(raw);
            if snapshot {
                pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
            }
            let old = pg_sys::MemoryContextSwitchTo(stmtctx);
            let queries = pg_sys::pg_analyze_and_rewrite_fixedparams(
                raw,
                query,
                std::ptr::null_mut(),
                0,
                std::ptr::null_mut(),
            );
            let plans = pg_sys::pg_plan_queries(
                queries,
                query,
                pg_sys::CURSOR_OPT_PARALLEL_OK as i32,
                std::ptr::null_mut(),
            );
            if snapshot {
                pg_sys::PopActiveSnapshot();
            }
            pgrx::check_for_interrupts!();
            let portal = pg_sys::CreatePortal(c"".as_ptr(), true, true);
            (*portal).visible = false;
            pg_sys::PortalDefineQuery(
                portal,
                std::ptr::null(),
                query,
                command_tag,
                plans,
                std::ptr::null_mut(),
            );
            pg_sys::PortalStart(portal, std::ptr::null_mut(), 0, std::ptr::null_mut());
            let mut format: i16 = 0;
            pg_sys::PortalSetResultFormat(portal, 1, &mut format);
            let receiver = pg_sys::CreateDestReceiver(pg_sys::CommandDest::DestNone);
            pg_sys::MemoryContextSwitchTo(old);
            let mut qc = pg_sys::QueryCompletion {
                commandTag: command_tag,
                nprocessed: 0,
            };
            // (PostgreSQL 18 dropped the run_once argument)
            #[cfg(not(feature = "pg18"))]
            pg_sys::PortalRun(
                portal,
                std::ffi::c_long::MAX,
                true,
                true,
                receiver,
                receiver,
                &mut qc,
            );
            #[cfg(feature = "pg18")]
            pg_sys::PortalRun(
                portal,
                std::ffi::c_long::MAX,
                true,
                receiver,
                receiver,
                &mut qc,
            );
            if let Some(destroy) = (*receiver).rDestroy {
                destroy(receiver);
            }
            pg_sys::PortalDrop(portal, false);
            tag = completion(&qc);

            let last = i + 1 == n;
            if last || autocommit || tag_of(stmt) == pg_sys::NodeTag::T_TransactionStmt {
                if last && implicit_block {
                    pg_sys::EndImplicitTransactionBlock();
                }
                if last && pg_sys::IsTransactionBlock() {
                    at.set(None);
                    // BEGIN without COMMIT: psql would leave it open until the session ends
                    pgrx::ereport!(
                        PgLogLevel::ERROR,
                        PgSqlErrorCode::ERRCODE_INVALID_TRANSACTION_TERMINATION,
                        "the command ended inside a transaction block (BEGIN without COMMIT), so it was rolled back; end it with COMMIT"
                    );
                }
                // the timeout covers the commit too: deferred triggers and WITH HOLD cursors
                // run there
                pg_sys::CommitTransactionCommand();
                disable_timeout(STATEMENT_TIMEOUT, false);
                xact_started = false;
            } else {
                pg_sys::CommandCounterIncrement();
                disable_timeout(STATEMENT_TIMEOUT, false);
            }
            pg_sys::MemoryContextDelete(stmtctx);
        }
        if xact_started {
            // an empty command (only comments): nothing ran
            pg_sys::CommitTransactionCommand();
        }
        at.set(None);
        Ok(tag)
    }
}

/// Arms the statement timeout: what is left of the job's timeout, or the owner's own
/// `statement_timeout` for one statement, whichever ends first.
unsafe fn arm_timeout(deadline: Option<Instant>) {
    let run_left = deadline.map(|d| {
        d.saturating_duration_since(Instant::now())
            .as_millis()
            .clamp(1, i32::MAX as u128) as i64
    });
    let per_statement = unsafe { pg_sys::StatementTimeout } as i64;
    let ms = match (run_left, per_statement > 0) {
        (Some(r), true) => Some(r.min(per_statement)),
        (Some(r), false) => Some(r),
        (None, true) => Some(per_statement),
        (None, false) => None,
    };
    if let Some(ms) = ms {
        unsafe { enable_timeout_after(STATEMENT_TIMEOUT, ms as i32) };
    }
}

/// The command tag as psql prints it (`INSERT 0 3`, `UPDATE 2`, `VACUUM`).
fn completion(qc: &pg_sys::QueryCompletion) -> String {
    unsafe {
        let name = std::ffi::CStr::from_ptr(pg_sys::GetCommandTagName(qc.commandTag))
            .to_string_lossy()
            .into_owned();
        if !pg_sys::command_tag_display_rowcount(qc.commandTag) {
            name
        } else if qc.commandTag == pg_sys::CommandTag::CMDTAG_INSERT {
            format!("{name} 0 {}", qc.nprocessed)
        } else {
            format!("{name} {}", qc.nprocessed)
        }
    }
}

/// The text of one statement of the command (for error messages).
unsafe fn statement_text(command: &str, raw: *mut pg_sys::RawStmt) -> String {
    let (loc, len) = unsafe { ((*raw).stmt_location, (*raw).stmt_len) };
    let bytes = command.as_bytes();
    let start = (loc.max(0) as usize).min(bytes.len());
    let end = if len > 0 {
        (start + len as usize).min(bytes.len())
    } else {
        bytes.len()
    };
    String::from_utf8_lossy(&bytes[start..end]).into_owned()
}
