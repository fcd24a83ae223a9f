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
    let mut db = DB.lock().unwrap_or_else(|p| p.into_inner());
    db.get_or_insert_with(|| ZoneDb::new(zone_dir())).load(name)
}

/// When the file of a zone was last modified (None for a POSIX spec or an unknown name).
pub fn modified(name: &str) -> Option<std::time::SystemTime> {
    let mut db = DB.lock().unwrap_or_else(|p| p.into_inner());
    db.get_or_insert_with(|| ZoneDb::new(zone_dir()))
        .modified(name)
}

/// A zone a user names: accepted when PostgreSQL accepts it for `SET timezone` (every name of
/// `pg_timezone_names`, POSIX specs), under PostgreSQL's own spelling of it. The error is a
/// message for 22023.
pub fn resolve(name: &str) -> Result<Zone, String> {
    let refused = || format!("invalid time zone \"{name}\": PostgreSQL does not know it");
    let c = CString::new(name.trim()).map_err(|_| refused())?;
    // SAFETY: pg_tzset takes a C string and returns NULL or a zone it keeps for the session
    let tz = unsafe { pg_sys::pg_tzset(c.as_ptr()) };
    if tz.is_null() || !unsafe { pg_sys::pg_tz_acceptable(tz) } {
        return Err(refused());
    }
    let canonical = unsafe { CStr::from_ptr(pg_sys::pg_get_timezone_name(tz)) }
        .to_string_lossy()
        .into_owned();
    load(&canonical).map_err(|e| format!("{e} (in {})", zone_dir().display()))
}
