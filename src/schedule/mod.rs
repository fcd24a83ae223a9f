//! Schedules: parsing and next-run math. Pure Rust, no pgrx: tested with plain `cargo test`.
//!
//! A schedule is one of
//! * a standard five-field cron expression (see [`cron`]) evaluated in an IANA time zone,
//! * a macro (`@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly`),
//! * `'N seconds'` with N in 1..=59: a true period, firing at every instant whose Unix time is a
//!   multiple of N. For divisors of 60 that is every minute at the same seconds (`'15 seconds'`
//!   fires at :00, :15, :30 and :45); `'45 seconds'` fires every 45 seconds, on the minute only
//!   every third minute.
//!
//! Cron schedules are evaluated in a [`Zone`], whose rules are data read at run time
//! ([`zonedb`]), never compiled in.
//!
//! Daylight saving time, for cron schedules in a zone that has it:
//! * a local time that does not exist that day (spring forward) runs once, at the first instant
//!   after the gap (`30 2 * * *` in America/Los_Angeles on 2026-03-08 runs at 03:00 PDT);
//!   several such times collapse into that one run;
//! * a local time that occurs twice (fall back) runs once, at its first occurrence.

pub mod cron;
pub mod zone;
pub mod zonedb;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
pub use cron::{CronExpr, ParseError};
pub use zone::Zone;

/// How far ahead we look for the next matching day before declaring that a schedule never fires.
/// Eight years always contain a 29 February (the Gregorian gap around 2100 is 8 years).
const SEARCH_DAYS: i64 = 366 * 8 + 2;

/// A parsed schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Schedule {
    Cron(CronExpr),
    EverySeconds(u32),
}

/// An example shown in error hints.
pub const SCHEDULE_HINT: &str =
    "Use five cron fields such as '*/5 * * * *' (every 5 minutes) or '0 3 * * 1-5' (03:00 on weekdays), \
     a macro such as '@daily', or '30 seconds'. Preview with SELECT * FROM pulse.next_runs('0 3 * * *');";

pub const TIMEZONE_HINT: &str =
    "Use a time zone name PostgreSQL knows, such as 'UTC', 'Europe/Berlin' or 'America/Los_Angeles' \
     (SELECT name FROM pg_timezone_names lists them), or a POSIX spec such as '<+03>-03'.";

impl Schedule {
    /// Parses a schedule; the error names the bad field and value.
    pub fn parse(text: &str) -> Result<Schedule, ParseError> {
        let t = text.trim();
        if t.is_empty() {
            return Err(ParseError {
                field: "schedule",
                value: text.to_string(),
                reason: "is empty".into(),
            });
        }
        if let Some(m) = t.strip_prefix('@') {
            let expr = match m.to_ascii_lowercase().as_str() {
                "yearly" | "annually" => "0 0 1 1 *",
                "monthly" => "0 0 1 * *",
                "weekly" => "0 0 * * 0",
                "daily" | "midnight" => "0 0 * * *",
                "hourly" => "0 * * * *",
                _ => {
                    return Err(ParseError {
                        field: "macro",
                        value: t.to_string(),
                        reason: "is not one of @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly"
                            .into(),
                    })
                }
            };
            return CronExpr::parse(expr).map(Schedule::Cron);
        }
        if let Some(n) = parse_seconds(t) {
            return n.map(Schedule::EverySeconds);
        }
        CronExpr::parse(t).map(Schedule::Cron)
    }

    /// The first run instant strictly after `after`, or None if the schedule never fires again.
    /// Schedules end with the year 9999 (zone rules are not defined beyond it).
    pub fn next_after(&self, tz: &Zone, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if after >= last_instant() {
            return None;
        }
        let next = match self {
            Schedule::EverySeconds(n) => Some(next_seconds(*n, after)),
            Schedule::Cron(c) => next_cron(c, tz, after),
        };
        next.filter(|t| *t < last_instant())
    }

    /// The next `count` instants strictly after `after`.
    pub fn next_runs(&self, tz: &Zone, after: DateTime<Utc>, count: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(count.min(1024));
        let mut t = after;
        while out.len() < count {
            match self.next_after(tz, t) {
                Some(n) => {
                    out.push(n);
                    t = n;
                }
                None => break,
            }
        }
        out
    }

    /// Parses and checks that the schedule fires at all (e.g. `0 0 31 2 *` never does).
    pub fn parse_firing(text: &str, tz: &Zone, now: DateTime<Utc>) -> Result<Schedule, ParseError> {
        let s = Schedule::parse(text)?;
        if s.next_after(tz, now).is_none() {
            return Err(ParseError {
                field: "schedule",
                value: text.to_string(),
                reason: "never fires (no such day in the next 8 years)".into(),
            });
        }
        Ok(s)
    }
}

/// The end of 9999-12-31 UTC: no run is computed at or after it.
pub fn last_instant() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0)
        .single()
        .expect("a valid date")
}

/// `N seconds` / `N second`: Some(Ok(n)) for a valid one, Some(Err) for a malformed seconds
/// schedule, None when the text is not a seconds schedule at all.
fn parse_seconds(t: &str) -> Option<Result<u32, ParseError>> {
    let lower = t.to_ascii_lowercase();
    let rest = lower
        .strip_suffix("seconds")
        .or_else(|| lower.strip_suffix("second"))?;
    let num = rest.trim();
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Err(ParseError {
            field: "seconds interval",
            value: t.to_string(),
            reason: "expected a whole number of seconds from 1 to 59, such as '10 seconds'".into(),
        }));
    }
    match num.parse::<u32>() {
        Ok(n) if (1..=59).contains(&n) => Some(Ok(n)),
        _ => Some(Err(ParseError {
            field: "seconds interval",
            value: t.to_string(),
            reason: format!(
                "{num} is out of range 1-59 (use a cron expression for a minute or more)"
            ),
        })),
    }
}

/// A true period: the first instant after `after` whose Unix time is a multiple of n. Minutes
/// start at multiples of 60, so for divisors of 60 these are the same seconds of every minute.
fn next_seconds(n: u32, after: DateTime<Utc>) -> DateTime<Utc> {
    let n = i64::from(n.max(1));
    let next = after.timestamp().div_euclid(n) * n + n;
    Utc.timestamp_opt(next, 0).single().unwrap_or(after)
}

fn days_in_month(year: i32, month: u32) -> u32 {
    let (ny, nm) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    let first_next = NaiveDate::from_ymd_opt(ny, nm, 1).expect("valid date");
    first_next.pred_opt().expect("valid date").day()
}

fn next_cron(c: &CronExpr, tz: &Zone, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    // Candidates in local wall-clock order map to non-decreasing instants, and every candidate
    // whose wall-clock time is not later than `after`'s maps to an instant <= `after`. So we can
    // start at `after`'s local time and return the first candidate that lands after it.
    let local_after = tz.local(after);
    let mut date = local_after.date();
    for _ in 0..SEARCH_DAYS {
        let dim = days_in_month(date.year(), date.month());
        if c.matches_day(
            date.month(),
            date.day(),
            date.weekday().num_days_from_sunday(),
            dim,
        ) {
            for h in c.hour_list() {
                let hour_start = date.and_hms_opt(h, 0, 0).expect("valid");
                if hour_start + Duration::minutes(59) <= local_after {
                    continue;
                }
                for m in c.minute_list() {
                    let naive = date.and_hms_opt(h, m, 0).expect("valid");
                    if naive <= local_after {
                        continue;
                    }
                    let inst = tz.resolve(naive);
                    if inst > after {
                        return Some(inst);
                    }
                }
            }
        }
        date = date.succ_opt()?;
    }
    None
}

#[cfg(test)]
mod tests;
