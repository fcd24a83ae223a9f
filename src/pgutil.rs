//! Small PostgreSQL helpers shared by the SQL API and the workers.

use chrono::{DateTime, TimeZone, Utc};
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::{PgLogLevel, PgSqlErrorCode};

/// Microseconds between the Unix epoch and the PostgreSQL epoch (2000-01-01).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

/// Raises an ERROR with a SQLSTATE, a message and a hint. Never returns.
pub fn raise(code: PgSqlErrorCode, message: impl Into<String>, hint: impl Into<String>) -> ! {
    let hint = hint.into();
    let mut report = ErrorReport::new(code, message.into(), "pg_pulse");
    if !hint.is_empty() {
        report = report.set_hint(hint);
    }
    report.report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

pub fn invalid(message: impl Into<String>, hint: impl Into<String>) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        message,
        hint,
    )
}

pub fn to_pg_ts(t: DateTime<Utc>) -> TimestampWithTimeZone {
    let us = t.timestamp_micros() - PG_EPOCH_OFFSET_US;
    // SAFETY-free conversion: any i64 is a representable timestamptz datum
    TimestampWithTimeZone::try_from(us).unwrap_or_else(|_| invalid("timestamp out of range", ""))
}

pub fn from_pg_ts(t: TimestampWithTimeZone) -> DateTime<Utc> {
    let us: i64 = t.into_inner() + PG_EPOCH_OFFSET_US;
    Utc.timestamp_micros(us).single().unwrap_or_else(Utc::now)
}

/// Total microseconds of an interval (a month counts 30 days, as PostgreSQL's own conversions
/// do), None when that does not fit in an i64 (beyond about 292,000 years either way).
pub fn checked_interval_micros(i: &Interval) -> Option<i64> {
    const DAY_US: i64 = 86_400_000_000;
    (i.months() as i64)
        .checked_mul(30 * DAY_US)?
        .checked_add((i.days() as i64).checked_mul(DAY_US)?)?
        .checked_add(i.micros())
}

/// [`checked_interval_micros`], saturated: for intervals already checked or stored (workers).
pub fn interval_micros(i: &Interval) -> i64 {
    checked_interval_micros(i).unwrap_or(if i.months() < 0 || i.days() < 0 || i.micros() < 0 {
        i64::MIN
    } else {
        i64::MAX
    })
}

/// The longest interval any argument of pg_pulse's functions accepts: 1000 years (of 365.25
/// days). Longer ones are refused rather than overflowing timestamps or timeouts later.
pub const MAX_INTERVAL_US: i64 = 1000 * 36_525 * 864_000_000;

/// Microseconds of an interval argument `name`, or `22023` with a HINT when it is longer than
/// [`MAX_INTERVAL_US`] either way (including intervals too large to count in microseconds).
/// `example`: a good value for the HINT.
pub fn interval_arg(name: &str, i: &Interval, example: &str) -> i64 {
    match checked_interval_micros(i) {
        Some(us) if us.checked_abs().is_some_and(|a| a <= MAX_INTERVAL_US) => us,
        _ => invalid(
            format!("{name} \"{i}\" is out of range: at most 1000 years"),
            format!("Use an interval such as {name} => '{example}'."),
        ),
    }
}

/// The value of a required argument, or `22004` (null_value_not_allowed) with a HINT.
pub fn not_null<T>(v: Option<T>, name: &str, hint: &str) -> T {
    v.unwrap_or_else(|| {
        raise(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("{name} must not be NULL"),
            if hint.is_empty() {
                format!(
                    "Pass a value for {name}, or leave the argument out where it has a default."
                )
            } else {
                hint.to_string()
            },
        )
    })
}

thread_local! {
    /// The calling role while `privileged` runs as the catalog owner.
    static CALLER: std::cell::Cell<Option<pg_sys::Oid>> = const { std::cell::Cell::new(None) };
}

/// The role that called the SQL function (also inside `privileged`).
pub fn current_user_oid_outer() -> pg_sys::Oid {
    CALLER
        .with(|c| c.get())
        .unwrap_or_else(|| unsafe { pg_sys::GetUserId() })
}

pub fn outer_is_superuser() -> bool {
    unsafe { pg_sys::superuser_arg(current_user_oid_outer()) }
}

/// A role's name, or its OID in digits if there is no such role.
pub fn role_name(oid: pg_sys::Oid) -> String {
    unsafe {
        let p = pg_sys::GetUserNameFromId(oid, true);
        if p.is_null() {
            return oid.to_u32().to_string();
        }
        std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

/// The value of setting `name` that `ALTER ROLE role [IN DATABASE db] SET` or `ALTER DATABASE db
/// SET` gives a session of `role` in database `db` (the most specific first), if any.
pub fn stored_setting(role: pg_sys::Oid, db: pg_sys::Oid, name: &str) -> Option<String> {
    Spi::get_one_with_args::<String>(
        "SELECT substr(cfg, length($3) + 2) FROM pg_catalog.pg_db_role_setting s, pg_catalog.unnest(s.setconfig) cfg
          WHERE s.setrole IN ($1, 0) AND s.setdatabase IN (0, $2)
            AND pg_catalog.lower(pg_catalog.split_part(cfg, '=', 1)) = pg_catalog.lower($3)
          ORDER BY s.setrole <> 0 DESC, s.setdatabase <> 0 DESC LIMIT 1",
        &[role.into(), db.into(), name.into()],
    )
    .ok()
    .flatten()
}

/// An identifier as PostgreSQL's quote_ident writes it (quoted only when it must be).
pub fn quote_ident(name: &str) -> String {
    Spi::get_one_with_args::<String>("SELECT pg_catalog.quote_ident($1)", &[name.into()])
        .ok()
        .flatten()
        .unwrap_or_else(|| name.to_string())
}

pub fn current_database_name() -> String {
    unsafe {
        let p = pg_sys::get_database_name(pg_sys::MyDatabaseId);
        if p.is_null() {
            return String::new();
        }
        std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

/// Runs `f` as the owner of pg_pulse's tables, with `search_path = pg_catalog, pg_temp`, the way a
/// SECURITY DEFINER function with a SET clause would, and puts the caller's identity and settings
/// back afterwards. An error inside `f` aborts the (sub)transaction, which restores both as well.
pub fn privileged<R>(f: impl FnOnce() -> R + std::panic::UnwindSafe) -> R {
    let owner = catalog_owner();
    // The statements `f` runs through SPI are read-write ones: pgrx runs SPI statements
    // read-only until the transaction has an id, and a read-only statement cannot lock rows
    // (FOR UPDATE) or see the rows `f` itself changed. (Not on a standby, where nothing is written.)
    unsafe {
        if !pg_sys::RecoveryInProgress() {
            pg_sys::GetCurrentTransactionId();
        }
    }
    let mut saved_user = pg_sys::Oid::INVALID;
    let mut saved_ctx = 0i32;
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_ctx);
        CALLER.with(|c| c.set(Some(saved_user)));
        let nest = pg_sys::NewGUCNestLevel();
        set_local_guc(c"search_path", c"pg_catalog, pg_temp");
        pg_sys::SetUserIdAndSecContext(
            owner,
            saved_ctx | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
        );
        // on an error the (sub)transaction abort restores the user and the settings; CALLER is
        // cleared here on every path
        let r = PgTryBuilder::new(f)
            .finally(|| CALLER.with(|c| c.set(None)))
            .execute();
        pg_sys::SetUserIdAndSecContext(saved_user, saved_ctx);
        pg_sys::AtEOXact_GUC(true, nest);
        r
    }
}

/// Sets a GUC for the current GUC nest level (reverted by `AtEOXact_GUC`).
pub unsafe fn set_local_guc(name: &std::ffi::CStr, value: &std::ffi::CStr) {
    set_guc(name, value, pg_sys::GucAction::GUC_ACTION_SAVE);
}

/// Sets a GUC until the end of the current transaction, like SET LOCAL but without a statement.
pub fn set_xact_guc(name: &std::ffi::CStr, value: &std::ffi::CStr) {
    set_guc(name, value, pg_sys::GucAction::GUC_ACTION_LOCAL);
}

/// Sets a GUC for the rest of this process's life, over any configuration (a worker's own
/// settings: a reload does not change them).
pub fn pin_guc(name: &std::ffi::CStr, value: &std::ffi::CStr) {
    set_config(
        name,
        value,
        pg_sys::GucAction::GUC_ACTION_SET,
        pg_sys::GucSource::PGC_S_OVERRIDE,
    );
}

fn set_guc(name: &std::ffi::CStr, value: &std::ffi::CStr, action: pg_sys::GucAction::Type) {
    set_config(name, value, action, pg_sys::GucSource::PGC_S_SESSION);
}

fn set_config(
    name: &std::ffi::CStr,
    value: &std::ffi::CStr,
    action: pg_sys::GucAction::Type,
    source: pg_sys::GucSource::Type,
) {
    unsafe {
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_SUSET,
            source,
            action,
            true,
            0,
            false,
        );
    }
}

/// The role that owns `pulse.job` (the extension owner, a superuser).
fn catalog_owner() -> pg_sys::Oid {
    // catalog lookups through the system caches (no SQL): this runs on every call of the
    // functions that write pg_pulse's tables, pulse.http_post among them
    let owner = unsafe {
        let nsp = pg_sys::get_namespace_oid(c"pulse".as_ptr(), true);
        let rel = if nsp == pg_sys::Oid::INVALID {
            pg_sys::Oid::INVALID
        } else {
            pg_sys::get_relname_relid(c"job".as_ptr(), nsp)
        };
        if rel == pg_sys::Oid::INVALID {
            None
        } else {
            let tup = pg_sys::SearchSysCache1(
                pg_sys::SysCacheIdentifier::RELOID as i32,
                pg_sys::Datum::from(rel),
            );
            if tup.is_null() {
                None
            } else {
                let owner =
                    (*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_class>(tup)).relowner;
                pg_sys::ReleaseSysCache(tup);
                Some(owner)
            }
        }
    };
    owner.unwrap_or_else(|| {
        raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            "pg_pulse's catalog pulse.job is missing",
            "Run CREATE EXTENSION pg_pulse in this database.",
        )
    })
}

/// Errors unless pg_pulse was preloaded and this is the database its scheduler serves.
pub fn require_scheduler_database() {
    if !crate::PRELOADED.load(std::sync::atomic::Ordering::Relaxed) {
        raise(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "pg_pulse is not loaded through shared_preload_libraries, so no scheduler runs jobs",
            "Add pg_pulse to shared_preload_libraries in postgresql.conf (shared_preload_libraries = 'pg_pulse') and restart PostgreSQL.",
        );
    }
    if unsafe { pg_sys::RecoveryInProgress() } {
        raise(
            PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION,
            "pg_pulse jobs cannot be changed or run on a hot standby",
            "Manage jobs on the primary; the change replicates here, and this server's scheduler starts after promotion.",
        );
    }
    // the database of a session and pulse.database_name (a postmaster setting) never change
    thread_local!(static IN_SCHEDULER_DATABASE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
    if IN_SCHEDULER_DATABASE.with(|c| c.get()) {
        return;
    }
    let here = current_database_name();
    let target = crate::database_name();
    if here == target {
        IN_SCHEDULER_DATABASE.with(|c| c.set(true));
    } else {
        raise(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("pg_pulse runs jobs only in database \"{target}\", not in \"{here}\""),
            format!("Connect to \"{target}\" to manage jobs, or set pulse.database_name = '{here}' in postgresql.conf and restart."),
        );
    }
}

/// One row of a result set, its columns deformed once (see [`for_each_row`]).
pub struct Columns<'a> {
    values: &'a [pg_sys::Datum],
    nulls: &'a [bool],
    types: &'a [pg_sys::Oid],
}

impl Columns<'_> {
    /// Column `i` (1-based, like SPI) as `T`; None when NULL or out of range.
    pub fn get<T: FromDatum>(&self, i: usize) -> Option<T> {
        let k = i.checked_sub(1)?;
        if *self.nulls.get(k)? {
            return None;
        }
        // SAFETY: the datum and its type come from the tuple descriptor of the row being read
        unsafe { T::from_polymorphic_datum(self.values[k], false, self.types[k]) }
    }

    /// A number array column copied in one piece; empty when NULL or holding NULLs (pg_pulse
    /// never writes NULL elements in its statistics arrays).
    pub fn numbers<T>(&self, i: usize) -> Vec<T>
    where
        T: pgrx::array::Scalar + 'static,
        for<'x> T: pgrx::datum::UnboxDatum<As<'x> = T>,
    {
        self.get::<pgrx::Array<'_, T>>(i)
            .and_then(|a| a.as_slice().ok().map(<[T]>::to_vec))
            .unwrap_or_default()
    }
}

/// Runs a read-only query without parameters inside the current SPI connection (call it within
/// `Spi::connect`) and calls `f` for each row. Each row is deformed once: with wide rows this is
/// several times faster than reading columns one by one through pgrx's SPI tuples, which find
/// every column from the start of the tuple. Errors are raised as PostgreSQL errors.
pub fn for_each_row(sql: &std::ffi::CStr, mut f: impl FnMut(&Columns)) {
    // SAFETY: SPI is connected by the caller; the tuple table and its rows live until SPI_finish
    unsafe {
        let rc = pg_sys::SPI_execute(sql.as_ptr(), true, 0);
        if rc != pg_sys::SPI_OK_SELECT as i32 {
            error!("pg_pulse: internal query failed (SPI code {rc})");
        }
        let table = pg_sys::SPI_tuptable;
        if table.is_null() {
            return;
        }
        let rows = pg_sys::SPI_processed as usize;
        let desc = (*table).tupdesc;
        let natts = (*desc).natts as usize;
        let types: Vec<pg_sys::Oid> = (0..natts)
            .map(|k| pg_sys::SPI_gettypeid(desc, k as i32 + 1))
            .collect();
        let mut values = vec![pg_sys::Datum::from(0); natts];
        let mut nulls = vec![true; natts];
        for r in 0..rows {
            let tuple = *(*table).vals.add(r);
            pg_sys::heap_deform_tuple(tuple, desc, values.as_mut_ptr(), nulls.as_mut_ptr());
            f(&Columns {
                values: &values,
                nulls: &nulls,
                types: &types,
            });
        }
    }
}
