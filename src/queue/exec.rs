//! How the queue functions run their statements: each queue table's names, validated once and
//! cached per session (pruned on relcache invalidation), and its statements prepared once
//! (kept SPI plans), executed as the caller.

use super::spec::{self, Names};
use crate::pgutil::{invalid, raise};
use pgrx::prelude::*;
use pgrx::{pg_sys, PgSqlErrorCode};
use std::cell::RefCell;
use std::collections::HashMap;

pub(super) const NOT_A_QUEUE_HINT: &str =
    "Turn the table into a queue first: SELECT pulse.make_queue('your_table');";

thread_local! {
    /// Names of validated queue tables, by table oid.
    pub(super) static META: RefCell<HashMap<u32, Names>> = RefCell::new(HashMap::new());
    /// Prepared statements (kept SPI plans) per (table oid, statement, argument type).
    pub(super) static PLANS: RefCell<HashMap<(u32, &'static str, u32), Plan>> =
        RefCell::new(HashMap::new());
    /// Tables changed since they were cached (filled by the relcache callback; u32::MAX = all).
    pub(super) static DIRTY: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    pub(super) static CALLBACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Relcache invalidation: remember which tables changed; the caches are pruned on next use
/// (no freeing inside the callback).
unsafe extern "C-unwind" fn relcache_changed(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    let _ = DIRTY.try_with(|d| {
        if let Ok(mut d) = d.try_borrow_mut() {
            d.push(if relid == pg_sys::Oid::INVALID {
                u32::MAX
            } else {
                relid.to_u32()
            });
        }
    });
}

pub(super) fn prune_caches() {
    if !CALLBACK.with(|c| c.replace(true)) {
        unsafe {
            pg_sys::CacheRegisterRelcacheCallback(Some(relcache_changed), pg_sys::Datum::from(0));
        }
    }
    let dirty: Vec<u32> = DIRTY.with(|d| std::mem::take(&mut *d.borrow_mut()));
    if dirty.is_empty() {
        return;
    }
    let all = dirty.contains(&u32::MAX);
    META.with(|m| {
        let mut m = m.borrow_mut();
        if all {
            m.clear();
        } else {
            m.retain(|k, _| !dirty.contains(k));
        }
    });
    PLANS.with(|p| {
        let mut p = p.borrow_mut();
        // dropping a Plan frees it (outside the invalidation callback, so this is safe)
        p.retain(|(k, _, _), _| !all && !dirty.contains(k));
    });
}

pub(super) struct TableInfo {
    pub(super) names: Names,
    pub(super) relname: String,
    pub(super) columns: Vec<(String, String)>,
}

pub(super) fn table_info(queue: pg_sys::Oid) -> TableInfo {
    let row = Spi::connect(|c| {
        c.select(
            "SELECT format('%I.%I', n.nspname, c.relname), c.relname::text, c.relkind::text,
                    (SELECT format('%I', a.attname) FROM pg_catalog.pg_index i
                       JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                      WHERE i.indrelid = c.oid AND i.indisprimary AND i.indnatts = 1),
                    (SELECT pg_catalog.format_type(a.atttypid, NULL) FROM pg_catalog.pg_index i
                       JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                      WHERE i.indrelid = c.oid AND i.indisprimary AND i.indnatts = 1),
                    ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a
                           WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum),
                    ARRAY(SELECT pg_catalog.format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a
                           WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum)
               FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
              WHERE c.oid = $1",
            None,
            &[queue.into()],
        )
        .ok()
        .and_then(|t| {
            t.into_iter().next().map(|r| {
                (
                    r.get::<String>(1).ok().flatten(),
                    r.get::<String>(2).ok().flatten(),
                    r.get::<String>(3).ok().flatten(),
                    r.get::<String>(4).ok().flatten(),
                    r.get::<String>(5).ok().flatten(),
                    r.get::<Vec<String>>(6).ok().flatten().unwrap_or_default(),
                    r.get::<Vec<String>>(7).ok().flatten().unwrap_or_default(),
                )
            })
        })
    });
    let Some((Some(table), Some(relname), relkind, pk, pk_type, names, types)) = row else {
        raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            format!("relation with OID {} does not exist", queue.to_u32()),
            NOT_A_QUEUE_HINT,
        );
    };
    if !matches!(relkind.as_deref(), Some("r") | Some("p")) {
        raise(
            PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            format!("\"{relname}\" is not a table"),
            "A queue is an ordinary (or partitioned) table with a primary key.",
        );
    }
    let (Some(pk), Some(pk_type)) = (pk, pk_type) else {
        invalid(
            format!("table \"{relname}\" has no single-column primary key"),
            format!(
                "Queue rows are addressed by their key: ALTER TABLE {table} ADD PRIMARY KEY (id);"
            ),
        );
    };
    TableInfo {
        names: Names {
            table,
            pk,
            pk_type,
            partitioned: relkind.as_deref() == Some("p"),
        },
        relname,
        columns: names.into_iter().zip(types).collect(),
    }
}

/// The queue's names, validated once per backend (until the table changes).
pub(super) fn queue_names(queue: Option<pg_sys::Oid>) -> (u32, Names) {
    let queue = crate::pgutil::not_null(queue, "queue", NOT_A_QUEUE_HINT);
    prune_caches();
    let key = queue.to_u32();
    if let Some(n) = META.with(|m| m.borrow().get(&key).cloned()) {
        return (key, n);
    }
    let info = table_info(queue);
    match spec::missing_columns(&info.columns) {
        Ok(missing) if missing.is_empty() => {}
        Ok(missing) => invalid(
            format!(
                "table \"{}\" is not a pg_pulse queue: it has no column \"{}\"",
                info.relname, missing[0].name
            ),
            format!("Run SELECT pulse.make_queue('{}'); first.", info.names.table.replace('\'', "''")),
        ),
        Err(e) => raise(
            PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
            format!("table \"{}\" is not a usable pg_pulse queue: {e}", info.relname),
            "Change the column's type (ALTER TABLE ... ALTER COLUMN ... TYPE) or rename it, then run pulse.make_queue.",
        ),
    }
    META.with(|m| m.borrow_mut().insert(key, info.names.clone()));
    (key, info.names)
}

/// A kept SPI plan, always planned generically: a custom plan per call (PostgreSQL's default for
/// the first executions, and for good when `LIMIT $1` makes the generic estimate look worse)
/// would replan on every claim.
pub(super) struct Plan(*mut pg_sys::_SPI_plan);

impl Drop for Plan {
    fn drop(&mut self) {
        unsafe {
            pg_sys::SPI_freeplan(self.0);
        }
    }
}

/// One statement argument.
pub(super) struct Arg {
    pub(super) datum: pg_sys::Datum,
    pub(super) null: bool,
}

pub(super) fn arg<T: IntoDatum>(v: T) -> Arg {
    match v.into_datum() {
        Some(datum) => Arg { datum, null: false },
        None => Arg {
            datum: pg_sys::Datum::from(0),
            null: true,
        },
    }
}

pub(super) fn raw_arg(datum: pg_sys::Datum) -> Arg {
    Arg { datum, null: false }
}

/// Runs statement `key` (built by `sql`, with argument types `types`) inside an SPI connection,
/// then `read` with the number of rows processed (SPI_tuptable holds any rows). Statements run
/// as the caller, with the caller's privileges and row-level security.
pub(super) fn run<R>(
    key: (u32, &'static str, u32),
    sql: impl FnOnce() -> String,
    types: &[pg_sys::Oid],
    args: &[Arg],
    read: impl FnOnce(usize) -> R,
) -> R {
    Spi::connect_mut(|_client| unsafe {
        let plan = PLANS.with(|plans| {
            let mut plans = plans.borrow_mut();
            if let Some(p) = plans.get(&key) {
                return p.0;
            }
            let text = std::ffi::CString::new(sql()).expect("no NUL in generated SQL");
            let mut argtypes = types.to_vec();
            let plan = pg_sys::SPI_prepare_cursor(
                text.as_ptr(),
                argtypes.len() as i32,
                argtypes.as_mut_ptr(),
                pg_sys::CURSOR_OPT_GENERIC_PLAN as i32,
            );
            if plan.is_null() {
                invalid("could not prepare a queue statement", "");
            }
            pg_sys::SPI_keepplan(plan);
            plans.insert(key, Plan(plan));
            plan
        });
        let mut values: Vec<pg_sys::Datum> = args.iter().map(|a| a.datum).collect();
        let nulls: Vec<std::os::raw::c_char> = args
            .iter()
            .map(|a| if a.null { b'n' as _ } else { b' ' as _ })
            .collect();
        let rc = pg_sys::SPI_execute_plan(plan, values.as_mut_ptr(), nulls.as_ptr(), false, 0);
        if rc < 0 {
            invalid(format!("queue statement failed (SPI code {rc})"), "");
        }
        read(pg_sys::SPI_processed as usize)
    })
}

/// Column `col` (1-based) of row `i` of the last statement's result, if not NULL.
pub(super) unsafe fn value(i: usize, col: i32) -> Option<pg_sys::Datum> {
    unsafe {
        let tt = pg_sys::SPI_tuptable;
        if tt.is_null() {
            return None;
        }
        let tup = *(*tt).vals.add(i);
        let mut isnull = false;
        let d = pg_sys::SPI_getbinval(tup, (*tt).tupdesc, col, &mut isnull);
        (!isnull).then_some(d)
    }
}
