//! Standard five-field cron expressions with Vixie (ISC cron / pg_cron) semantics.
//!
//! Fields: minute hour day-of-month month day-of-week.
//! * numbers, ranges `a-b`, steps `*/n` and `a-b/n` (and `a/n`, meaning `a-max/n`), lists `a,b,c`;
//! * month names `jan`..`dec`, weekday names `sun`..`sat` (case-insensitive);
//! * day-of-week 0-7, where 0 and 7 are both Sunday;
//! * `L` or `$` in day-of-month: the last day of the month (alone or in a list, e.g. `1,15,L`);
//! * when both day-of-month and day-of-week are restricted (neither starts with `*`), a day
//!   matches if EITHER matches; otherwise both must match (one of them being `*`).

use std::fmt;

/// One parsed cron expression. Bit sets hold the allowed values of every field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CronExpr {
    pub(crate) minutes: u64,   // bits 0..59
    pub(crate) hours: u32,     // bits 0..23
    pub(crate) days: u32,      // bits 1..31
    pub(crate) last_day: bool, // `L` / `$` in day-of-month
    pub(crate) months: u16,    // bits 1..12
    pub(crate) weekdays: u8,   // bits 0..6, 0 = Sunday
    pub(crate) dom_star: bool,
    pub(crate) dow_star: bool,
}

/// Why an expression was refused: which field, which value, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub field: &'static str,
    pub value: String,
    pub reason: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {} \"{}\": {}",
            self.field, self.value, self.reason
        )
    }
}

const FIELD_NAMES: [&str; 5] = ["minute", "hour", "day-of-month", "month", "day-of-week"];
const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    names_base: u32,
}

const SPECS: [FieldSpec; 5] = [
    FieldSpec {
        name: FIELD_NAMES[0],
        min: 0,
        max: 59,
        names: &[],
        names_base: 0,
    },
    FieldSpec {
        name: FIELD_NAMES[1],
        min: 0,
        max: 23,
        names: &[],
        names_base: 0,
    },
    FieldSpec {
        name: FIELD_NAMES[2],
        min: 1,
        max: 31,
        names: &[],
        names_base: 0,
    },
    FieldSpec {
        name: FIELD_NAMES[3],
        min: 1,
        max: 12,
        names: &MONTHS,
        names_base: 1,
    },
    FieldSpec {
        name: FIELD_NAMES[4],
        min: 0,
        max: 7,
        names: &WEEKDAYS,
        names_base: 0,
    },
];

impl CronExpr {
    /// Parses five whitespace-separated fields (macros are expanded by the caller).
    pub fn parse(expr: &str) -> Result<CronExpr, ParseError> {
        let fields: Vec<&str> = expr.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(ParseError {
                field: "schedule",
                value: expr.to_string(),
                reason: format!(
                    "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
                    fields.len()
                ),
            });
        }
        let mut sets = [0u64; 5];
        let mut last_day = false;
        for (i, field) in fields.iter().enumerate() {
            let (bits, l) = parse_field(field, &SPECS[i], i == 2)?;
            sets[i] = bits;
            last_day |= l;
        }
        // day-of-week 7 is Sunday, like 0
        let mut weekdays = (sets[4] & 0x7f) as u8;
        if sets[4] & (1 << 7) != 0 {
            weekdays |= 1;
        }
        Ok(CronExpr {
            minutes: sets[0],
            hours: sets[1] as u32,
            days: sets[2] as u32,
            last_day,
            months: sets[3] as u16,
            weekdays,
            dom_star: fields[2].starts_with('*'),
            dow_star: fields[4].starts_with('*'),
        })
    }

    pub fn matches_minute(&self, m: u32) -> bool {
        self.minutes & (1u64 << m) != 0
    }
    pub fn matches_hour(&self, h: u32) -> bool {
        self.hours & (1u32 << h) != 0
    }
    pub fn matches_month(&self, month: u32) -> bool {
        self.months & (1u16 << month) != 0
    }

    /// Does the calendar day match (day-of-month / day-of-week with Vixie's OR rule, and month)?
    /// `weekday` is 0 = Sunday; `days_in_month` is needed for `L`.
    pub fn matches_day(&self, month: u32, day: u32, weekday: u32, days_in_month: u32) -> bool {
        if !self.matches_month(month) {
            return false;
        }
        let dom = self.days & (1u32 << day) != 0 || (self.last_day && day == days_in_month);
        let dow = self.weekdays & (1u8 << weekday) != 0;
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// Minutes that match, ascending.
    pub fn minute_list(&self) -> impl Iterator<Item = u32> + '_ {
        (0..60).filter(move |m| self.matches_minute(*m))
    }
    /// Hours that match, ascending.
    pub fn hour_list(&self) -> impl Iterator<Item = u32> + '_ {
        (0..24).filter(move |h| self.matches_hour(*h))
    }
}

fn bad(spec: &FieldSpec, value: &str, reason: impl Into<String>) -> ParseError {
    ParseError {
        field: spec.name,
        value: value.to_string(),
        reason: reason.into(),
    }
}

fn parse_value(spec: &FieldSpec, whole: &str, s: &str) -> Result<u32, ParseError> {
    if s.is_empty() {
        return Err(bad(spec, whole, "empty value"));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        let v: u32 = s
            .parse()
            .map_err(|_| bad(spec, whole, format!("\"{s}\" is not a number")))?;
        if v < spec.min || v > spec.max {
            return Err(bad(
                spec,
                whole,
                format!("{v} is out of range {}-{}", spec.min, spec.max),
            ));
        }
        return Ok(v);
    }
    let lower = s.to_ascii_lowercase();
    if let Some(pos) = spec.names.iter().position(|n| *n == lower) {
        return Ok(pos as u32 + spec.names_base);
    }
    let expected = if spec.names.is_empty() {
        format!("a number {}-{}", spec.min, spec.max)
    } else {
        format!(
            "a number {}-{} or a name ({}...)",
            spec.min,
            spec.max,
            spec.names[..3].join(", ")
        )
    };
    Err(bad(spec, whole, format!("\"{s}\" is not {expected}")))
}

/// Returns the field's bit set and whether it contained `L`/`$` (day-of-month only).
fn parse_field(field: &str, spec: &FieldSpec, allow_last: bool) -> Result<(u64, bool), ParseError> {
    let mut bits = 0u64;
    let mut last = false;
    for item in field.split(',') {
        if item.is_empty() {
            return Err(bad(spec, field, "empty list item"));
        }
        if allow_last && (item.eq_ignore_ascii_case("l") || item == "$") {
            last = true;
            continue;
        }
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                if !s.bytes().all(|b| b.is_ascii_digit()) || s.is_empty() {
                    return Err(bad(
                        spec,
                        field,
                        format!("step \"{s}\" is not a positive number"),
                    ));
                }
                let step: u32 = s
                    .parse()
                    .map_err(|_| bad(spec, field, format!("step \"{s}\" is too large")))?;
                if step == 0 || step > spec.max {
                    return Err(bad(
                        spec,
                        field,
                        format!("step {step} is out of range 1-{}", spec.max),
                    ));
                }
                (r, Some(step))
            }
            None => (item, None),
        };
        let (lo, hi) = if range == "*" {
            (spec.min, spec.max)
        } else if let Some((a, b)) = range.split_once('-') {
            let lo = parse_value(spec, field, a)?;
            let hi = parse_value(spec, field, b)?;
            if lo > hi {
                return Err(bad(spec, field, format!("range {lo}-{hi} runs backwards")));
            }
            (lo, hi)
        } else {
            let v = parse_value(spec, field, range)?;
            // `a/n` means from a to the end of the range, as in Vixie cron
            if step.is_some() {
                (v, spec.max)
            } else {
                (v, v)
            }
        };
        let step = step.unwrap_or(1);
        let mut v = lo;
        while v <= hi {
            bits |= 1u64 << v;
            v += step;
        }
    }
    if bits == 0 && !last {
        return Err(bad(spec, field, "matches nothing"));
    }
    Ok((bits, last))
}
