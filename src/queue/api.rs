//! The SQL functions of the queue module. Declared in `sql/queue.sql` (their arguments are
//! `regclass`, `anyarray` and `anyelement`, which the generated SQL cannot spell).

use super::spec;
use crate::pgutil::{interval_arg, interval_micros, invalid, not_null, raise};
use crate::retry::{self, Backoff};
use pgrx::datum::{AnyArray, AnyElement};
use pgrx::prelude::*;
use pgrx::{pg_sys, PgSqlErrorCode};
use std::time::Duration;

use super::exec::*;

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
    let queue = not_null(
        queue,
        "queue",
        "Pass the queue table, e.g. pulse.make_queue('jobs').",
    );
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
