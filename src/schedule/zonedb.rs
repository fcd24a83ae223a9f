//! Zones by name, read at run time from a zone directory (PostgreSQL's: see `crate::zones`).
//! Pure Rust with std only, no pgrx.
//!
//! A name is PostgreSQL's spelling of a zone (`crate::zones` asks PostgreSQL for it): a file of
//! that path under the directory, else a POSIX TZ spec. Loaded zones are kept, and a file is read
//! again when its size, inode, modification or change time differs, so an updated zone database
//! is followed by a running server (package managers keep a file's old modification time, but
//! replacing a file gives it a new inode and change time).

use super::cron::ParseError;
use super::zone::{bad, Zone};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// TZif files are a few kilobytes; a larger file is not a zone.
const MAX_FILE_BYTES: u64 = 1 << 20;
/// Names kept per process before the cache starts over (there are about 600 zones).
const MAX_CACHED: usize = 2048;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    ino: u64,
    modified: Option<SystemTime>,
    /// the inode's change time (seconds, nanoseconds): set when the file is written or replaced
    changed: (i64, i64),
}

#[derive(Debug)]
struct Cached {
    /// the file and how it looked when read; None for a POSIX spec
    file: Option<(PathBuf, Stamp)>,
    zone: Zone,
}

/// The zones of one directory, cached.
#[derive(Debug)]
pub struct ZoneDb {
    dir: PathBuf,
    cache: HashMap<String, Cached>,
}

fn stamp_of(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    m.is_file().then(|| Stamp {
        len: m.len(),
        ino: m.ino(),
        modified: m.modified().ok(),
        changed: (m.ctime(), m.ctime_nsec()),
    })
}

/// A name that can be a relative path under the directory: no empty, `.` or `..` component, not
/// absolute, no NUL. Anything else can only be a POSIX spec.
fn is_relative_path(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && !name.contains('\0')
        && name
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

impl ZoneDb {
    pub fn new(dir: impl Into<PathBuf>) -> ZoneDb {
        ZoneDb {
            dir: dir.into(),
            cache: HashMap::new(),
        }
    }

    /// The file of a zone name, if there is one.
    fn find_file(&self, name: &str) -> Option<(PathBuf, Stamp)> {
        if !is_relative_path(name) {
            return None;
        }
        let path = self.dir.join(name);
        stamp_of(&path).map(|s| (path, s))
    }

    /// The names of the directory's top level (`Europe`, `UTC`, ...): a name whose first part is
    /// not among them cannot be a file, whatever it is.
    pub fn top_level(&self) -> Vec<String> {
        std::fs::read_dir(&self.dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The rules of a zone whose file changed since `since` (its modification or change time is
    /// not older), read again; None when it did not change, or for a POSIX spec or unknown name.
    pub fn changed_since(&mut self, name: &str, since: SystemTime) -> Option<Zone> {
        let (_, stamp) = self.find_file(name)?;
        let changed = std::time::UNIX_EPOCH
            + std::time::Duration::new(
                stamp.changed.0.max(0) as u64,
                stamp.changed.1.max(0) as u32,
            );
        let latest = stamp.modified.map_or(changed, |m| m.max(changed));
        if latest < since {
            return None;
        }
        self.load(name).ok()
    }

    /// The rules of a zone, read from its file (again if the file changed) or parsed as a POSIX
    /// spec.
    pub fn load(&mut self, name: &str) -> Result<Zone, ParseError> {
        if name.is_empty() || name.len() > 255 {
            return Err(bad(name, "is not a known time zone"));
        }
        if let Some(c) = self.cache.get(name) {
            match &c.file {
                None => return Ok(c.zone.clone()),
                Some((path, stamp)) if stamp_of(path) == Some(*stamp) => return Ok(c.zone.clone()),
                Some(_) => {}
            }
        }
        let (zone, file) = match self.find_file(name) {
            Some((path, stamp)) => {
                if stamp.len > MAX_FILE_BYTES {
                    return Err(bad(name, "its zone file is too large to be a zone"));
                }
                let data = std::fs::read(&path)
                    .map_err(|_| bad(name, "its zone file could not be read"))?;
                (Zone::from_tzif(name, &data)?, Some((path, stamp)))
            }
            None if name.eq_ignore_ascii_case("GMT") || name.eq_ignore_ascii_case("UTC") => {
                (Zone::utc(), None)
            }
            None => (Zone::from_posix(name)?, None),
        };
        if self.cache.len() >= MAX_CACHED {
            self.cache.clear();
        }
        self.cache.insert(
            name.to_string(),
            Cached {
                file,
                zone: zone.clone(),
            },
        );
        Ok(zone)
    }
}
