//! Time zones of schedules, the PostgreSQL side: the directory PostgreSQL reads its zone files
//! from, and names checked by PostgreSQL itself. The rules are read (and read again when a file
//! changes) by the pure [`crate::schedule::zonedb`].

use crate::schedule::{zonedb::ZoneDb, ParseError, Zone};
use pgrx::pg_sys;
use std::ffi::{c_char, CStr, CString};
use std::path::PathBuf;
use std::sync::Mutex;

/// This process's zones (a backend and its Postgres APIs are single-threaded; the lock only
/// makes the static safe to share).
static DB: Mutex<Option<ZoneDb>> = Mutex::new(None);

fn exec_path() -> *const c_char {
    std::ptr::addr_of!(pg_sys::my_exec_path) as *const c_char
}

/// `--with-system-tzdata=DIR` from the options PostgreSQL was built with (Debian's packages).
fn system_tzdata() -> Option<PathBuf> {
    let mut n: usize = 0;
    // SAFETY: get_configdata returns n palloc'd name/setting pairs for our executable
    let data = unsafe { pg_sys::get_configdata(exec_path(), &mut n) };
    if data.is_null() {
        return None;
    }
    (0..n).find_map(|i| {
        let item = unsafe { &*data.add(i) };
        if item.name.is_null() || item.setting.is_null() {
            return None;
        }
        let name = unsafe { CStr::from_ptr(item.name) };
        if name.to_bytes() != b"CONFIGURE" {
            return None;
        }
        let setting = unsafe { CStr::from_ptr(item.setting) }.to_string_lossy();
        setting
            .split_whitespace()
            .map(|w| w.trim_matches('\''))
            .find_map(|w| {
                w.strip_prefix("--with-system-tzdata=")
                    .or_else(|| w.strip_prefix("-Dsystem_tzdata="))
            })
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
    })
}

/// The directory PostgreSQL reads zones from: the system's when it was built with
/// `--with-system-tzdata`, else its own `share/timezone`.
pub fn zone_dir() -> PathBuf {
    if let Some(d) = system_tzdata() {
        return d;
    }
    let mut buf = [0 as c_char; pg_sys::MAXPGPATH as usize];
    // SAFETY: buf holds MAXPGPATH bytes, as get_share_path expects
    unsafe { pg_sys::get_share_path(exec_path(), buf.as_mut_ptr()) };
    let share = unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    let own = PathBuf::from(share).join("timezone");
    if own.is_dir() {
        own
    } else {
        PathBuf::from("/usr/share/zoneinfo")
    }
}

/// The rules of a zone stored with a job (a name PostgreSQL gave), read from PostgreSQL's zone
/// directory now.
pub fn load(name: &str) -> Result<Zone, ParseError> {
    with_db(|db| db.load(name))
}

fn with_db<T>(f: impl FnOnce(&mut ZoneDb) -> T) -> T {
    let mut db = DB.lock().unwrap_or_else(|p| p.into_inner());
    f(db.get_or_insert_with(|| ZoneDb::new(zone_dir())))
}

/// The top-level names of PostgreSQL's zone directory: a zone whose first part is not one of
/// them has no file (a POSIX spec).
pub fn top_level() -> Vec<String> {
    with_db(|db| db.top_level())
}

/// The rules of a zone whose file changed since `since` (read again), None if it did not.
pub fn changed_since(name: &str, since: std::time::SystemTime) -> Option<Zone> {
    with_db(|db| db.changed_since(name, since))
}

/// A zone name as messages show it: at most 100 characters.
fn shown(name: &str) -> String {
    match name.char_indices().nth(100) {
        Some((i, _)) => format!("{}...", &name[..i]),
        None => name.to_string(),
    }
}

/// Whether pg_pulse's reading of a zone gives PostgreSQL's UTC offset at every hour from the
/// start of last year to the end of next year (a spec read differently, such as a POSIX rule
/// with transitions days out of place, is refused rather than followed at other times).
fn agrees_with_postgresql(zone: &Zone, tz: *const pg_sys::pg_tz) -> bool {
    use chrono::{Datelike, TimeZone, Utc};
    let year = Utc::now().year();
    let start = Utc
        .with_ymd_and_hms(year - 1, 1, 1, 0, 0, 0)
        .unwrap()
        .timestamp();
    let end = Utc
        .with_ymd_and_hms(year + 2, 1, 1, 0, 0, 0)
        .unwrap()
        .timestamp();
    (start..end).step_by(3600).all(|t| {
        let pt: pg_sys::pg_time_t = t;
        // SAFETY: pg_localtime reads the zone PostgreSQL loaded; NULL when t is out of its range
        let tm = unsafe { pg_sys::pg_localtime(&pt, tz) };
        tm.is_null() || unsafe { (*tm).tm_gmtoff } as i64 == zone.offset_at(t) as i64
    })
}

thread_local! {
    /// Names this backend has compared with PostgreSQL's reading (PostgreSQL keeps its own zones
    /// for the session, so once is enough).
    static AGREED: std::cell::RefCell<std::collections::HashSet<String>> =
        std::cell::RefCell::new(std::collections::HashSet::new());
}

/// A zone a user names: accepted when PostgreSQL's `SET timezone` accepts it as a zone name (every
/// name of `pg_timezone_names`, POSIX specs) and pg_pulse reads it as PostgreSQL does; stored
/// under PostgreSQL's own spelling. The error is a message for 22023.
pub fn resolve(name: &str) -> Result<Zone, String> {
    let refused = || {
        format!(
            "invalid time zone \"{}\": PostgreSQL does not know it",
            shown(name)
        )
    };
    let c = CString::new(name.trim()).map_err(|_| refused())?;
    // SAFETY: pg_tzset takes a C string and returns NULL or a zone it keeps for the session
    let tz = unsafe { pg_sys::pg_tzset(c.as_ptr()) };
    if tz.is_null() || !unsafe { pg_sys::pg_tz_acceptable(tz) } {
        return Err(refused());
    }
    let canonical = unsafe { CStr::from_ptr(pg_sys::pg_get_timezone_name(tz)) }
        .to_string_lossy()
        .into_owned();
    let unreadable = || {
        format!(
            "time zone \"{}\" is one pg_pulse cannot read as PostgreSQL does; use a zone name of pg_timezone_names",
            shown(name)
        )
    };
    let zone = load(&canonical).map_err(|_| unreadable())?;
    if !AGREED.with(|a| a.borrow().contains(&canonical)) {
        if !agrees_with_postgresql(&zone, tz) {
            return Err(unreadable());
        }
        AGREED.with(|a| {
            let mut a = a.borrow_mut();
            if a.len() >= 4096 {
                a.clear();
            }
            a.insert(canonical);
        });
    }
    Ok(zone)
}
