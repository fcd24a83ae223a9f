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
    /// A TZif footer that does not agree with the file's last transition (jiff refuses such files;
    /// PostgreSQL's tzcode uses them): the footer's rules apply from `switch` on, `rules` (the
    /// file without its footer) before it, as tzcode extends a file's transitions with the
    /// footer's after the last one.
    later: Option<(i64, TimeZone)>,
}

/// A refused time zone, naming it and why.
pub(super) fn bad(name: &str, reason: impl Into<String>) -> ParseError {
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
            later: None,
        }
    }

    /// Rules from the contents of a TZif file (RFC 8536, versions 1 to 4), read as PostgreSQL's
    /// tzcode reads it: after the file's last transition the footer's rules (the POSIX spec at
    /// the end) take over at their next transition; a footer that does not parse is ignored.
    pub fn from_tzif(name: &str, data: &[u8]) -> Result<Zone, ParseError> {
        let unreadable =
            |e: jiff::Error| bad(name, format!("its zone file could not be read: {e}"));
        let first_error = match TimeZone::tzif(name, data) {
            Ok(rules) => {
                return Ok(Zone {
                    name: name.to_string(),
                    rules,
                    later: None,
                })
            }
            Err(e) => e,
        };
        let Some((body, footer)) = split_footer(data) else {
            return Err(unreadable(first_error));
        };
        let rules = TimeZone::tzif(name, &body).map_err(|_| unreadable(first_error))?;
        let later = std::str::from_utf8(footer)
            .ok()
            .and_then(|f| TimeZone::posix(f).ok())
            .and_then(|footer| {
                let last = rules
                    .preceding(jiff::Timestamp::MAX)
                    .next()
                    .map_or(jiff::Timestamp::MIN, |t| t.timestamp());
                let switch = footer.following(last).next()?.timestamp().as_second();
                Some((switch, footer))
            });
        Ok(Zone {
            name: name.to_string(),
            rules,
            later,
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
            later: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The rules in effect at instant `t`.
    fn rules_at(&self, t: i64) -> &TimeZone {
        match &self.later {
            Some((switch, footer)) if t >= *switch => footer,
            _ => &self.rules,
        }
    }

    /// Seconds east of UTC in effect at `t`.
    pub fn offset_at(&self, t: i64) -> i32 {
        match jiff::Timestamp::from_second(t) {
            Ok(ts) => self.rules_at(t).to_offset(ts).seconds(),
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
        // the rules of the instant this wall time is near (they differ only for a zone with a
        // footer that disagrees with its file, and only from the footer's first transition on)
        let near = as_utc - self.offset_at(as_utc) as i64;
        let secs = match self.rules_at(near).to_ambiguous_timestamp(civil).offset() {
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

/// TZif data of version 2 or later split into the data with its footer emptied (`\n<spec>\n`
/// becomes `\n\n`) and the footer's spec.
fn split_footer(data: &[u8]) -> Option<(Vec<u8>, &[u8])> {
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
    Some((out, &body[start + 1..]))
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
