//! The SQL functions of the queue module. Declared in `sql/queue.sql` (their arguments are
//! `regclass`, `anyarray` and `anyelement`, which the generated SQL cannot spell).

use super::spec::{self, Names};
use crate::pgutil::{interval_arg, interval_micros, invalid, not_null, raise};
use crate::retry::{self, Backoff};
use pgrx::datum::{AnyArray, AnyElement};
use pgrx::prelude::*;
use pgrx::{pg_sys, PgSqlErrorCode};
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

const NOT_A_QUEUE_HINT: &str =
    "Turn the table into a queue first: SELECT pulse.make_queue('your_table');";

thread_local! {
    /// Names of validated queue tables, by table oid.
    static META: RefCell<HashMap<u32, Names>> = RefCell::new(HashMap::new());
    /// Prepared statements (kept SPI plans) per (table oid, statement, argument type).
    static PLANS: RefCell<HashMap<(u32, &'static str, u32), Plan>> =
        RefCell::new(HashMap::new());
    /// Tables changed since they were cached (filled by the relcache callback; u32::MAX = all).
    static DIRTY: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    static CALLBACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
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

fn prune_caches() {
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

struct TableInfo {
    names: Names,
    relname: String,
    columns: Vec<(String, String)>,
}

fn table_info(queue: pg_sys::Oid) -> TableInfo {
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
fn queue_names(queue: Option<pg_sys::Oid>) -> (u32, Names) {
    let queue = queue.unwrap_or_else(|| {
        raise(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            "queue must not be NULL",
            NOT_A_QUEUE_HINT,
        )
    });
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
struct Plan(*mut pg_sys::_SPI_plan);

impl Drop for Plan {
    fn drop(&mut self) {
        unsafe {
            pg_sys::SPI_freeplan(self.0);
        }
    }
}

/// One statement argument.
struct Arg {
    datum: pg_sys::Datum,
    null: bool,
}

fn arg<T: IntoDatum>(v: T) -> Arg {
    match v.into_datum() {
        Some(datum) => Arg { datum, null: false },
        None => Arg {
            datum: pg_sys::Datum::from(0),
            null: true,
        },
    }
}

fn raw_arg(datum: pg_sys::Datum) -> Arg {
    Arg { datum, null: false }
}

/// Runs statement `key` (built by `sql`, with argument types `types`) inside an SPI connection,
/// then `read` with the number of rows processed (SPI_tuptable holds any rows). Statements run
/// as the caller, with the caller's privileges and row-level security.
fn run<R>(
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
unsafe fn value(i: usize, col: i32) -> Option<pg_sys::Datum> {
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

fn positive_interval(name: &str, v: Option<Interval>, example: &str) -> Interval {
    let hint =
        format!("Use an interval such as {name} => '{example}', or leave it out for the default.");
    let v = not_null(v, name, &hint);
    if interval_arg(name, &v, example) <= 0 {
        invalid(format!("{name} must be a positive interval"), hint);
    }
    v
}

/// A jsonb value passed through without converting it to Rust and back.
pub struct RawJsonb(pg_sys::Datum);

impl IntoDatum for RawJsonb {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        Some(self.0)
    }
    fn type_oid() -> pg_sys::Oid {
        pg_sys::JSONBOID
    }
}

unsafe impl pgrx::callconv::BoxRet for RawJsonb {
    unsafe fn box_into<'fcx>(
        self,
        fcinfo: &mut pgrx::callconv::FcInfo<'fcx>,
    ) -> pgrx::datum::Datum<'fcx> {
        unsafe { fcinfo.return_raw_datum(self.0) }
    }
}

unsafe impl pgrx::pgrx_sql_entity_graph::metadata::SqlTranslatable for RawJsonb {
    const TYPE_IDENT: &'static str = pgrx::pgrx_resolved_type!(RawJsonb);
    const TYPE_ORIGIN: pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin =
        pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin::External;
    const ARGUMENT_SQL: Result<
        pgrx::pgrx_sql_entity_graph::metadata::SqlMappingRef,
        pgrx::pgrx_sql_entity_graph::metadata::ArgumentError,
    > = Ok(pgrx::pgrx_sql_entity_graph::metadata::SqlMappingRef::literal("jsonb"));
    const RETURN_SQL: Result<
        pgrx::pgrx_sql_entity_graph::metadata::ReturnsRef,
        pgrx::pgrx_sql_entity_graph::metadata::ReturnsError,
    > = Ok(pgrx::pgrx_sql_entity_graph::metadata::ReturnsRef::One(
        pgrx::pgrx_sql_entity_graph::metadata::SqlMappingRef::literal("jsonb"),
    ));
}

#[pg_extern(sql = false, volatile, parallel_unsafe)]
fn make_queue(queue: Option<pg_sys::Oid>) -> Vec<String> {
    let queue = queue.unwrap_or_else(|| {
        raise(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            "queue must not be NULL",
            "Pass the queue table, e.g. pulse.make_queue('jobs').",
        )
    });
    prune_caches();
    let info = table_info(queue);
    let missing = spec::missing_columns(&info.columns).unwrap_or_else(|e| {
        raise(
            PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
            format!("cannot make \"{}\" a queue: {e}", info.relname),
            format!(
                "Change the column's type (ALTER TABLE {} ALTER COLUMN {} TYPE {}) or rename your column, then run pulse.make_queue again.",
                info.names.table, e.column, e.expected[0]
            ),
        )
    });
    let table = &info.names.table;
    let mut done = Vec::new();
    if !missing.is_empty() {
        let adds: Vec<String> = missing
            .iter()
            .map(|c| format!("ADD COLUMN IF NOT EXISTS {} {}", c.name, c.definition))
            .collect();
        Spi::run(&format!("ALTER TABLE {table} {}", adds.join(", ")))
            .unwrap_or_else(|e| invalid(format!("could not add queue columns: {e}"), ""));
        let names: Vec<&str> = missing.iter().map(|c| c.name).collect();
        done.push(format!("added columns {}", names.join(", ")));
    }
    let exists = |kind: &str, name: &str| -> bool {
        let q = match kind {
            "constraint" => "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint WHERE conrelid = $1 AND conname = $2)",
            _ => "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
                                   WHERE i.indrelid = $1 AND c.relname = $2)",
        };
        Spi::get_one_with_args::<bool>(q, &[queue.into(), name.into()])
            .ok()
            .flatten()
            .unwrap_or(false)
    };
    let check = spec::object_name(&info.relname, "pulse_status_check");
    if !exists("constraint", &check) {
        Spi::run(&format!(
            "ALTER TABLE {table} ADD CONSTRAINT {} {}",
            spec::quote_ident(&check),
            spec::status_check()
        ))
        .unwrap_or_else(|e| invalid(format!("could not add the status check: {e}"), ""));
        done.push(format!("added constraint {check}"));
    }
    let pk = &info.names.pk;
    for (suffix, def) in [
        (
            "pulse_ready_idx",
            format!("(priority DESC, run_after, {pk}) WHERE status = 'queued'"),
        ),
        (
            "pulse_stale_idx",
            "(locked_until) WHERE status = 'processing'".to_string(),
        ),
    ] {
        let name = spec::object_name(&info.relname, suffix);
        if !exists("index", &name) {
            Spi::run(&format!(
                "CREATE INDEX IF NOT EXISTS {} ON {table} {def}",
                spec::quote_ident(&name)
            ))
            .unwrap_or_else(|e| invalid(format!("could not create index {name}: {e}"), ""));
            done.push(format!("created index {name}"));
        }
    }
    META.with(|m| m.borrow_mut().remove(&queue.to_u32()));
    done
}

#[pg_extern(sql = false, volatile, parallel_unsafe)]
fn claim_batch(
    queue: Option<pg_sys::Oid>,
    batch_size: Option<i32>,
    lock_ttl: Option<Interval>,
    worker: Option<&str>,
) -> SetOfIterator<'static, RawJsonb> {
    let batch_size = not_null(
        batch_size,
        "batch_size",
        "Pass a batch size of 1 to 10000, or leave it out for 10: pulse.claim_batch('jobs').",
    );
    if !(1..=10_000).contains(&batch_size) {
        invalid(
            format!("batch_size must be between 1 and 10000, not {batch_size}"),
            "Claim a batch of 1 to 10000 rows, e.g. pulse.claim_batch('jobs', 100).",
        );
    }
    let ttl = positive_interval("lock_ttl", lock_ttl, "15 minutes");
    let (key, names) = queue_names(queue);
    let rows = run(
        (key, "claim", 0),
        || spec::claim_sql(&names),
        &[pg_sys::INT4OID, pg_sys::INTERVALOID, pg_sys::TEXTOID],
        &[arg(batch_size), arg(ttl), arg(worker)],
        |n| {
            // each jsonb value is copied to the caller's memory, which outlives SPI
            (0..n)
                .filter_map(|i| unsafe { value(i, 1) })
                .map(|d| RawJsonb(unsafe { pg_sys::SPI_datumTransfer(d, false, -1) }))
                .collect::<Vec<_>>()
        },
    );
    SetOfIterator::new(rows)
}

#[pg_extern(sql = false, volatile, parallel_unsafe)]
fn complete(queue: Option<pg_sys::Oid>, ids: Option<AnyArray>, worker: Option<&str>) -> i64 {
    let (key, names) = queue_names(queue);
    let Some(ids) = ids else { return 0 };
    run(
        (key, "complete", ids.oid().to_u32()),
        || spec::complete_sql(&names),
        &[ids.oid(), pg_sys::TEXTOID],
        &[raw_arg(ids.datum()), arg(worker)],
        |n| n as i64,
    )
}

#[allow(clippy::too_many_arguments)]
#[pg_extern(sql = false, volatile, parallel_unsafe)]
fn fail(
    queue: Option<pg_sys::Oid>,
    id: Option<AnyElement>,
    error: Option<&str>,
    retry: Option<bool>,
    worker: Option<&str>,
    backoff: Option<Interval>,
    max_backoff: Option<Interval>,
) -> Option<String> {
    let (key, names) = queue_names(queue);
    let id = not_null(id, "id", "Pass the key of the row that failed.");
    let error = Some(not_null(
        error,
        "error",
        "Pass what went wrong, e.g. SQLERRM in an exception handler.",
    ));
    let retry = not_null(
        retry,
        "retry",
        "Pass retry => false to dead-letter the row now, or leave it out (true).",
    );
    let base = positive_interval("backoff", backoff, "30 seconds");
    let cap = positive_interval("max_backoff", max_backoff, "1 hour");
    let t = id.oid();
    let held = run(
        (key, "held", t.to_u32()),
        || spec::held_row_sql(&names),
        &[t, pg_sys::TEXTOID],
        &[raw_arg(id.datum()), arg(worker)],
        |n| unsafe {
            (n > 0).then(|| {
                let get = |c| value(0, c).map_or(0, |d| d.value() as i32);
                (get(1), get(2))
            })
        },
    );
    let (attempts, max_attempts) = held?;
    match retry::decide(attempts, max_attempts, retry) {
        retry::Outcome::Retry => {
            let policy = Backoff {
                base: Duration::from_micros(interval_micros(&base) as u64),
                cap: Duration::from_micros(interval_micros(&cap) as u64),
                jitter: Backoff::default().jitter,
            };
            let unit = unsafe { pg_sys::pg_prng_double(&raw mut pg_sys::pg_global_prng_state) };
            let delay = policy.delay(attempts.max(1) as u32, unit);
            let delay = Interval::new(0, 0, delay.as_micros() as i64).unwrap_or(base);
            run(
                (key, "requeue", t.to_u32()),
                || spec::requeue_sql(&names),
                &[t, pg_sys::INTERVALOID, pg_sys::TEXTOID],
                &[raw_arg(id.datum()), arg(delay), arg(error)],
                |_| (),
            );
            Some("queued".to_string())
        }
        retry::Outcome::DeadLetter => {
            run(
                (key, "dead", t.to_u32()),
                || spec::dead_letter_sql(&names),
                &[t, pg_sys::TEXTOID],
                &[raw_arg(id.datum()), arg(error)],
                |_| (),
            );
            Some("failed".to_string())
        }
    }
}

#[pg_extern(sql = false, volatile, parallel_unsafe)]
fn extend_lock(
    queue: Option<pg_sys::Oid>,
    id: Option<AnyElement>,
    ttl: Option<Interval>,
    worker: Option<&str>,
) -> bool {
    let (key, names) = queue_names(queue);
    let id = not_null(id, "id", "Pass the key of the row being processed.");
    let ttl = positive_interval("ttl", ttl, "15 minutes");
    run(
        (key, "extend", id.oid().to_u32()),
        || spec::extend_lock_sql(&names),
        &[id.oid(), pg_sys::INTERVALOID, pg_sys::TEXTOID],
        &[raw_arg(id.datum()), arg(ttl), arg(worker)],
        |n| n > 0,
    )
}

fn reset_attempts_arg(v: Option<bool>) -> bool {
    not_null(
        v,
        "reset_attempts",
        "Pass reset_attempts => false to keep the attempt counts, or leave it out (true).",
    )
}

#[pg_extern(sql = false, volatile, parallel_unsafe)]
fn retry_failed_all(queue: Option<pg_sys::Oid>, reset_attempts: Option<bool>) -> i64 {
    let (key, names) = queue_names(queue);
    run(
        (key, "retry_all", 0),
        || spec::retry_failed_sql(&names, false),
        &[pg_sys::BOOLOID],
        &[arg(reset_attempts_arg(reset_attempts))],
        |n| n as i64,
    )
}

#[pg_extern(sql = false, volatile, parallel_unsafe)]
fn retry_failed_ids(
    queue: Option<pg_sys::Oid>,
    ids: Option<AnyArray>,
    reset_attempts: Option<bool>,
) -> i64 {
    let (key, names) = queue_names(queue);
    let Some(ids) = ids else { return 0 };
    run(
        (key, "retry_ids", ids.oid().to_u32()),
        || spec::retry_failed_sql(&names, true),
        &[ids.oid(), pg_sys::BOOLOID],
        &[
            raw_arg(ids.datum()),
            arg(reset_attempts_arg(reset_attempts)),
        ],
        |n| n as i64,
    )
}

#[pg_extern(sql = false, stable, parallel_safe)]
fn queue_health(
    queue: Option<pg_sys::Oid>,
) -> TableIterator<
    'static,
    (
        name!(queued, i64),
        name!(ready, i64),
        name!(delayed, i64),
        name!(processing, i64),
        name!(stuck, i64),
        name!(completed, i64),
        name!(failed, i64),
        name!(blocked, i64),
        name!(oldest_ready_age, Option<Interval>),
        name!(completed_last_hour, i64),
        name!(failed_last_hour, i64),
    ),
> {
    let (_, names) = queue_names(queue);
    let row = Spi::connect(|c| {
        let t = c
            .select(&spec::health_sql(&names), None, &[])
            .unwrap_or_else(|e| invalid(format!("queue_health failed: {e}"), ""));
        let r = t.into_iter().next().expect("an aggregate returns one row");
        let n = |i: usize| r.get::<i64>(i).ok().flatten().unwrap_or(0);
        (
            n(1),
            n(2),
            n(3),
            n(4),
            n(5),
            n(6),
            n(7),
            n(8),
            r.get::<Interval>(9).ok().flatten(),
            n(10),
            n(11),
        )
    });
    TableIterator::once(row)
}
