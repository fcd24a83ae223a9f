//! Time zone rules as data. Pure Rust, no pgrx.
//!
//! A [`Zone`] is built from the bytes of a TZif file (what PostgreSQL reads from its zone
//! directory) or from a POSIX TZ spec such as `<+03>-03` or `EST5EDT,M3.2.0,M11.1.0` (what
//! PostgreSQL accepts when no file has that name). Nothing is compiled in: [`super::zonedb`]
//! reads the files at run time, so a zone updated on disk is followed without a rebuild.
//!
//! [`Zone::resolve`] maps a wall-clock time to an instant with the DST rules of the schedule
//! module: a time in a gap runs at the first instant after the gap, a repeated time at its first
//! occurrence.

use super::cron::ParseError;
use chrono::{DateTime, NaiveDateTime, TimeZone as _, Utc};
use jiff::tz::{AmbiguousOffset, TimeZone};

/// One time zone's rules, with the name they were loaded under.
#[derive(Clone, Debug)]
pub struct Zone {
    name: String,
    rules: TimeZone,
}

fn bad(name: &str, reason: impl Into<String>) -> ParseError {
    ParseError {
        field: "time zone",
        value: name.to_string(),
        reason: reason.into(),
    }
}

impl Zone {
    /// UTC, needing no file.
    pub fn utc() -> Zone {
        Zone {
            name: "UTC".into(),
            rules: TimeZone::UTC,
        }
    }

    /// Rules from the contents of a TZif file (RFC 8536, versions 1 to 4). A footer (the POSIX
    /// rule for times after the last transition) that does not parse is ignored, as PostgreSQL
    /// ignores it: the last transition's offset then stays in effect.
    pub fn from_tzif(name: &str, data: &[u8]) -> Result<Zone, ParseError> {
        let rules = TimeZone::tzif(name, data)
            .or_else(|e| match without_footer(data) {
                Some(d) => TimeZone::tzif(name, &d).map_err(|_| e),
                None => Err(e),
            })
            .map_err(|e| bad(name, format!("its zone file could not be read: {e}")))?;
        Ok(Zone {
            name: name.to_string(),
            rules,
        })
    }

    /// Rules from a POSIX TZ spec (`STD offset [DST [offset] [,start[/time],end[/time]]]`).
    /// A spec with a DST name and no rule gets the US rule, as PostgreSQL gives it when its zone
    /// directory has no `posixrules` file.
    pub fn from_posix(spec: &str) -> Result<Zone, ParseError> {
        let parsed = TimeZone::posix(spec).or_else(|first| {
            if spec.contains(',') {
                Err(first)
            } else {
                TimeZone::posix(&format!("{spec},M3.2.0,M11.1.0")).map_err(|_| first)
            }
        });
        let rules = parsed.map_err(|_| bad(spec, "is not a known time zone"))?;
        Ok(Zone {
            name: spec.to_string(),
            rules,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Seconds east of UTC in effect at `t`.
    pub fn offset_at(&self, t: i64) -> i32 {
        match jiff::Timestamp::from_second(t) {
            Ok(ts) => self.rules.to_offset(ts).seconds(),
            Err(_) => 0,
        }
    }

    /// The wall-clock time at instant `t` (to the second).
    pub fn local(&self, t: DateTime<Utc>) -> NaiveDateTime {
        let off = self.offset_at(t.timestamp());
        t.naive_utc() + chrono::Duration::seconds(off as i64)
    }

    /// Maps a wall-clock time to an instant: a time in a gap maps to the first instant after the
    /// gap, a time that occurs twice to its first occurrence.
    pub fn resolve(&self, naive: NaiveDateTime) -> DateTime<Utc> {
        let as_utc = naive.and_utc().timestamp();
        let civil = match to_civil(naive) {
            Some(c) => c,
            None => return Utc.from_utc_datetime(&naive),
        };
        let secs = match self.rules.to_ambiguous_timestamp(civil).offset() {
            AmbiguousOffset::Unambiguous { offset } => as_utc - offset.seconds() as i64,
            AmbiguousOffset::Fold { before, after } => {
                (as_utc - before.seconds() as i64).min(as_utc - after.seconds() as i64)
            }
            AmbiguousOffset::Gap { before, after } => {
                // the transition lies in (as_utc - after, as_utc - before]: the offset is `before`
                // until it and `after` from it on
                let (mut lo, mut hi) = (
                    as_utc - after.seconds() as i64,
                    as_utc - before.seconds() as i64,
                );
                let after_off = after.seconds();
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    if self.offset_at(mid) == after_off {
                        hi = mid;
                    } else {
                        lo = mid;
                    }
                }
                hi
            }
        };
        Utc.timestamp_opt(secs, 0)
            .single()
            .unwrap_or_else(|| Utc.from_utc_datetime(&naive))
    }
}

/// TZif data of version 2 or later with its footer emptied (`\n<spec>\n` becomes `\n\n`).
fn without_footer(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < 6 || &data[..4] != b"TZif" || data[4] < b'2' || data.last() != Some(&b'\n') {
        return None;
    }
    let body = &data[..data.len() - 1];
    let start = body.iter().rposition(|&b| b == b'\n')?;
    if start + 1 == body.len() {
        return None;
    }
    let mut out = data[..=start].to_vec();
    out.push(b'\n');
    Some(out)
}

fn to_civil(n: NaiveDateTime) -> Option<jiff::civil::DateTime> {
    use chrono::{Datelike, Timelike};
    jiff::civil::DateTime::new(
        i16::try_from(n.year()).ok()?,
        n.month() as i8,
        n.day() as i8,
        n.hour() as i8,
        n.minute() as i8,
        n.second() as i8,
        0,
    )
    .ok()
}
