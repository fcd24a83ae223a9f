use super::*;
use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};
use proptest::prelude::*;

/// The system's zone database (Debian's tzdata), read as pg_pulse reads PostgreSQL's.
fn zone(name: &str) -> Zone {
    zonedb::ZoneDb::new("/usr/share/zoneinfo")
        .load(name)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
}

fn runs(expr: &str, tz: &str, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
    let s = Schedule::parse(expr).unwrap();
    s.next_runs(&zone(tz), after, n)
}

fn local(tz: &str, t: DateTime<Utc>) -> NaiveDateTime {
    zone(tz).local(t)
}

// ---- the cases the Foundation issue requires -------------------------------------------------

#[test]
fn sunday_is_0_and_7() {
    for expr in ["0 10 * * 0", "0 10 * * 7", "0 10 * * sun", "0 10 * * SUN"] {
        let r = runs(expr, "UTC", utc(2026, 11, 22, 12, 0, 0), 6);
        assert_eq!(r.len(), 6);
        for t in &r {
            assert_eq!(t.weekday(), chrono::Weekday::Sun, "{expr}: {t}");
            assert_eq!((t.hour(), t.minute()), (10, 0));
        }
        // consecutive Sundays, none skipped
        for w in r.windows(2) {
            assert_eq!(w[1] - w[0], Duration::days(7));
        }
        assert_eq!(r[0], utc(2026, 11, 29, 10, 0, 0));
    }
}

#[test]
fn dom_and_dow_both_restricted_means_either() {
    // 0 0 1,15 * 1 fires on the 1st, the 15th, and every Monday
    let r = runs("0 0 1,15 * 1", "UTC", utc(2026, 6, 1, 0, 0, 0), 10);
    let days: Vec<(u32, u32)> = r.iter().map(|t| (t.month(), t.day())).collect();
    // June 2026: Mondays are 1, 8, 15, 22, 29; plus the 15th (a Monday too); July 1 is a Wednesday
    assert_eq!(
        days,
        vec![
            (6, 8),
            (6, 15),
            (6, 22),
            (6, 29),
            (7, 1),
            (7, 6),
            (7, 13),
            (7, 15),
            (7, 20),
            (7, 27)
        ]
    );
}

#[test]
fn star_in_one_day_field_means_and() {
    // day-of-month is '*' so only day-of-week restricts: Mondays only
    let r = runs("0 0 * * 1", "UTC", utc(2026, 6, 1, 0, 0, 0), 4);
    assert!(r.iter().all(|t| t.weekday() == chrono::Weekday::Mon));
    // '*/2' in day-of-month counts as star (Vixie): then weekday must also match
    let r = runs("0 0 */2 * 1", "UTC", utc(2026, 6, 1, 0, 0, 0), 4);
    for t in &r {
        assert_eq!(t.weekday(), chrono::Weekday::Mon);
        assert_eq!(t.day() % 2, 1, "{t}");
    }
}

#[test]
fn overnight_window_every_five_minutes() {
    let r = runs(
        "*/5 20-23,0-7 * * *",
        "UTC",
        utc(2026, 11, 22, 19, 0, 0),
        200,
    );
    assert_eq!(r[0], utc(2026, 11, 22, 20, 0, 0));
    // 12 hours * 12 per hour = 144 runs in one night, then the next night starts at 20:00
    assert_eq!(r[143], utc(2026, 11, 23, 7, 55, 0));
    assert_eq!(r[144], utc(2026, 11, 23, 20, 0, 0));
    for w in r[..144].windows(2) {
        assert_eq!(w[1] - w[0], Duration::minutes(5));
    }
    for t in &r {
        assert!(t.hour() >= 20 || t.hour() <= 7);
        assert_eq!(t.minute() % 5, 0);
    }
}

#[test]
fn last_day_of_month() {
    for expr in ["0 0 L * *", "0 0 $ * *", "0 0 l * *"] {
        let r = runs(expr, "UTC", utc(2027, 12, 15, 0, 0, 0), 15);
        let days: Vec<(i32, u32, u32)> = r.iter().map(|t| (t.year(), t.month(), t.day())).collect();
        assert_eq!(days[0], (2027, 12, 31));
        assert_eq!(days[1], (2028, 1, 31));
        assert_eq!(days[2], (2028, 2, 29), "leap year");
        assert_eq!(days[3], (2028, 3, 31));
        assert_eq!(days[4], (2028, 4, 30));
        assert_eq!(days[14], (2029, 2, 28), "common year");
    }
    // L in a list with other days
    let r = runs("0 0 1,L * *", "UTC", utc(2026, 2, 2, 0, 0, 0), 3);
    assert_eq!(
        r,
        vec![
            utc(2026, 2, 28, 0, 0, 0),
            utc(2026, 3, 1, 0, 0, 0),
            utc(2026, 3, 31, 0, 0, 0)
        ]
    );
}

#[test]
fn spring_forward_gap_runs_once_after_the_gap() {
    // 2026-03-08: 02:00 PST jumps to 03:00 PDT in Los Angeles
    let r = runs(
        "30 2 * * *",
        "America/Los_Angeles",
        utc(2026, 3, 7, 8, 0, 0),
        3,
    );
    assert_eq!(
        local("America/Los_Angeles", r[0]),
        NaiveDate::from_ymd_opt(2026, 3, 7)
            .unwrap()
            .and_hms_opt(2, 30, 0)
            .unwrap()
    );
    assert_eq!(r[1], utc(2026, 3, 8, 10, 0, 0), "03:00 PDT = 10:00 UTC");
    assert_eq!(
        local("America/Los_Angeles", r[1]).time(),
        chrono::NaiveTime::from_hms_opt(3, 0, 0).unwrap()
    );
    assert_eq!(
        local("America/Los_Angeles", r[2]),
        NaiveDate::from_ymd_opt(2026, 3, 9)
            .unwrap()
            .and_hms_opt(2, 30, 0)
            .unwrap()
    );
    // several local times inside the gap collapse into one run at its end
    let r = runs(
        "*/15 2 * * *",
        "America/Los_Angeles",
        utc(2026, 3, 8, 0, 0, 0),
        2,
    );
    assert_eq!(r[0], utc(2026, 3, 8, 10, 0, 0));
    assert_eq!(
        local("America/Los_Angeles", r[1]),
        NaiveDate::from_ymd_opt(2026, 3, 9)
            .unwrap()
            .and_hms_opt(2, 0, 0)
            .unwrap()
    );
}

#[test]
fn fall_back_repeated_time_runs_once() {
    // 2026-11-01: 02:00 PDT falls back to 01:00 PST; 01:30 happens twice
    let r = runs(
        "30 1 * * *",
        "America/Los_Angeles",
        utc(2026, 10, 31, 12, 0, 0),
        3,
    );
    assert_eq!(
        r[0],
        utc(2026, 11, 1, 8, 30, 0),
        "first occurrence, 01:30 PDT"
    );
    assert_eq!(
        local("America/Los_Angeles", r[1]),
        NaiveDate::from_ymd_opt(2026, 11, 2)
            .unwrap()
            .and_hms_opt(1, 30, 0)
            .unwrap()
    );
    // asking again from between the two occurrences does not produce the second one
    let r = runs(
        "30 1 * * *",
        "America/Los_Angeles",
        utc(2026, 11, 1, 9, 0, 0),
        1,
    );
    assert_eq!(
        local("America/Los_Angeles", r[0]).date(),
        NaiveDate::from_ymd_opt(2026, 11, 2).unwrap()
    );
    // and from inside the second occurrence
    let r = runs(
        "30 1 * * *",
        "America/Los_Angeles",
        utc(2026, 11, 1, 9, 45, 0),
        1,
    );
    assert_eq!(
        local("America/Los_Angeles", r[0]).date(),
        NaiveDate::from_ymd_opt(2026, 11, 2).unwrap()
    );
}

#[test]
fn time_zone_shifts_the_instant() {
    let r = runs(
        "0 3 * * *",
        "America/Los_Angeles",
        utc(2026, 7, 1, 0, 0, 0),
        1,
    );
    assert_eq!(r[0], utc(2026, 7, 1, 10, 0, 0), "03:00 PDT");
    let r = runs(
        "0 3 * * *",
        "America/Los_Angeles",
        utc(2026, 12, 1, 0, 0, 0),
        1,
    );
    assert_eq!(r[0], utc(2026, 12, 1, 11, 0, 0), "03:00 PST");
    let r = runs("0 3 * * *", "Asia/Kolkata", utc(2026, 12, 1, 0, 0, 0), 1);
    assert_eq!(
        r[0],
        utc(2026, 12, 1, 21, 30, 0),
        "03:00 IST is 21:30 UTC the day before"
    );
}

#[test]
fn seconds_dividing_60_are_wall_clock_aligned() {
    let r = runs("15 seconds", "UTC", utc(2026, 1, 1, 0, 0, 7), 5);
    assert_eq!(
        r,
        vec![
            utc(2026, 1, 1, 0, 0, 15),
            utc(2026, 1, 1, 0, 0, 30),
            utc(2026, 1, 1, 0, 0, 45),
            utc(2026, 1, 1, 0, 1, 0),
            utc(2026, 1, 1, 0, 1, 15)
        ]
    );
    let r = runs("1 seconds", "UTC", utc(2026, 1, 1, 0, 0, 0), 3);
    assert_eq!(r[2], utc(2026, 1, 1, 0, 0, 3));
    // not a divisor of 60: a true period in Unix time (1767225600 = 2026-01-01 is 7 * 252460800)
    let r = runs("7 seconds", "UTC", utc(2026, 1, 1, 0, 0, 50), 3);
    assert_eq!(
        r,
        vec![
            utc(2026, 1, 1, 0, 0, 56),
            utc(2026, 1, 1, 0, 1, 3),
            utc(2026, 1, 1, 0, 1, 10)
        ]
    );
    // sub-second 'after' is strictly before the next whole second
    let after = utc(2026, 1, 1, 0, 0, 14) + Duration::milliseconds(999);
    assert_eq!(
        runs("15 seconds", "UTC", after, 1)[0],
        utc(2026, 1, 1, 0, 0, 15)
    );
    assert_eq!(
        Schedule::parse(" 30 second ").unwrap(),
        Schedule::EverySeconds(30)
    );
}

#[test]
fn strictly_after() {
    let r = runs("0 * * * *", "UTC", utc(2026, 1, 1, 5, 0, 0), 1);
    assert_eq!(r[0], utc(2026, 1, 1, 6, 0, 0));
}

#[test]
fn macros() {
    let a = utc(2026, 5, 17, 13, 3, 0);
    let cases = [
        ("@yearly", utc(2027, 1, 1, 0, 0, 0)),
        ("@annually", utc(2027, 1, 1, 0, 0, 0)),
        ("@monthly", utc(2026, 6, 1, 0, 0, 0)),
        ("@weekly", utc(2026, 5, 24, 0, 0, 0)),
        ("@daily", utc(2026, 5, 18, 0, 0, 0)),
        ("@midnight", utc(2026, 5, 18, 0, 0, 0)),
        ("@hourly", utc(2026, 5, 17, 14, 0, 0)),
        ("@HOURLY", utc(2026, 5, 17, 14, 0, 0)),
    ];
    for (m, want) in cases {
        assert_eq!(runs(m, "UTC", a, 1)[0], want, "{m}");
    }
}

#[test]
fn names_ranges_steps_lists() {
    let c = CronExpr::parse("0-10/5,30 */6 1-7 jan-mar,dec mon-fri").unwrap();
    assert_eq!(c.minute_list().collect::<Vec<_>>(), vec![0, 5, 10, 30]);
    assert_eq!(c.hour_list().collect::<Vec<_>>(), vec![0, 6, 12, 18]);
    for m in [1, 2, 3, 12] {
        assert!(c.matches_month(m));
    }
    assert!(!c.matches_month(4));
    // a/n means a to the end
    let c = CronExpr::parse("10/20 * * * *").unwrap();
    assert_eq!(c.minute_list().collect::<Vec<_>>(), vec![10, 30, 50]);
    // day-of-week ranges through 7
    let c = CronExpr::parse("0 0 * * 5-7").unwrap();
    assert_eq!(c.weekdays, 0b110_0001);
}

#[test]
fn errors_name_the_field_and_value() {
    let cases = [
        ("* * * *", "schedule", "expected 5 fields"),
        ("60 * * * *", "minute", "out of range 0-59"),
        ("* 24 * * *", "hour", "out of range 0-23"),
        ("* * 0 * *", "day-of-month", "out of range 1-31"),
        ("* * * 13 *", "month", "out of range 1-12"),
        ("* * * * 8", "day-of-week", "out of range 0-7"),
        ("* * * foo *", "month", "\"foo\" is not"),
        ("*/0 * * * *", "minute", "step 0"),
        ("5-1 * * * *", "minute", "backwards"),
        ("1,,2 * * * *", "minute", "empty list item"),
        ("* * L * L", "day-of-week", "is not"),
        ("@often", "macro", "is not one of"),
        ("0 seconds", "seconds interval", "out of range 1-59"),
        ("60 seconds", "seconds interval", "out of range 1-59"),
        ("x seconds", "seconds interval", "whole number"),
        ("", "schedule", "empty"),
    ];
    for (expr, field, reason) in cases {
        let e = Schedule::parse(expr).unwrap_err();
        assert_eq!(e.field, field, "{expr}: {e}");
        assert!(e.to_string().contains(reason), "{expr}: {e}");
        assert!(e.to_string().contains(&e.value));
    }
}

#[test]
fn schedules_that_never_fire_are_refused() {
    let now = utc(2026, 1, 1, 0, 0, 0);
    assert!(Schedule::parse_firing("0 0 31 2 *", &Zone::utc(), now).is_err());
    assert!(Schedule::parse_firing("0 0 30 2 *", &Zone::utc(), now).is_err());
    // 29 February is rare but real
    let s = Schedule::parse_firing("0 0 29 2 *", &Zone::utc(), now).unwrap();
    assert_eq!(
        s.next_after(&Zone::utc(), now).unwrap(),
        utc(2028, 2, 29, 0, 0, 0)
    );
}

#[test]
fn seconds_that_do_not_divide_60_are_a_true_period() {
    // 45 seconds: every 45 s, not :00 and :45 of each minute (gaps of 45 and 15)
    let r = runs("45 seconds", "UTC", utc(2026, 1, 1, 0, 0, 0), 4);
    let gaps: Vec<i64> = r.windows(2).map(|w| (w[1] - w[0]).num_seconds()).collect();
    assert_eq!(gaps, vec![45, 45, 45]);
    assert!(r.iter().all(|t| t.timestamp() % 45 == 0));
    // 7 seconds never leaves a 4-second gap at the minute
    let r = runs("7 seconds", "UTC", utc(2026, 1, 1, 0, 0, 50), 3);
    assert_eq!(r[1] - r[0], Duration::seconds(7));
    assert_eq!(r[2] - r[1], Duration::seconds(7));
}

#[test]
fn schedules_end_with_the_year_9999() {
    let late = utc(9999, 12, 31, 23, 0, 0);
    assert!(runs("0 * * * *", "Europe/Berlin", late, 3).is_empty());
    assert_eq!(
        runs("30 seconds", "UTC", late + Duration::minutes(59), 5).len(),
        1
    );
    assert_eq!(
        runs("@daily", "UTC", utc(9999, 12, 30, 12, 0, 0), 5),
        vec![utc(9999, 12, 31, 0, 0, 0)]
    );
}

#[test]
fn time_zones_are_read_from_the_directory() {
    let mut db = zonedb::ZoneDb::new("/usr/share/zoneinfo");
    assert_eq!(db.load("Europe/Berlin").unwrap().name(), "Europe/Berlin");
    // as PostgreSQL finds it: ignoring case
    let berlin = db.load("Europe/Berlin").unwrap();
    assert_eq!(berlin.local(utc(2026, 7, 1, 12, 0, 0)).hour(), 14);
    // PostgreSQL's spelling is looked up (crate::zones asks PostgreSQL for it); another spelling
    // would be read as a POSIX spec and refused
    assert!(db.load("europe/berlin").is_err());
    assert_eq!(db.load("UTC").unwrap().offset_at(0), 0);
    // POSIX specs, as PostgreSQL accepts them when no file has the name
    assert_eq!(db.load("<+03>-03").unwrap().offset_at(0), 3 * 3600);
    let us = db.load("XST8XDT").unwrap();
    assert_eq!(us.local(utc(2026, 7, 1, 12, 0, 0)).hour(), 5);
    assert_eq!(us.local(utc(2026, 1, 1, 12, 0, 0)).hour(), 4);
    for name in [
        "Mars/Olympus",
        "../etc/passwd",
        "/etc/passwd",
        "Europe/../Europe/Berlin",
        "",
        "a\0b",
    ] {
        let e = db.load(name).unwrap_err();
        assert_eq!(e.field, "time zone", "{name}");
    }
}

#[test]
fn a_footer_that_does_not_parse_is_ignored_as_postgresql_ignores_it() {
    let mut data = std::fs::read("/usr/share/zoneinfo/Europe/Berlin").unwrap();
    let end = data.len() - 1;
    let start = data[..end].iter().rposition(|&b| b == b'\n').unwrap();
    // a two-letter abbreviation: zic writes it, POSIX (and jiff) refuse it
    data.splice(start + 1..end, b"X-1".iter().copied());
    let z = Zone::from_tzif("Broken/Berlin", &data).unwrap();
    // the transitions in the file still hold
    assert_eq!(z.local(utc(2026, 7, 1, 12, 0, 0)).hour(), 14);
    assert!(Zone::from_tzif("Broken", b"TZif2 not a zone").is_err());
}

#[test]
fn a_footer_that_disagrees_with_the_file_takes_over_after_the_last_transition() {
    // PostgreSQL 16.2's own copy of America/Ojinaga is such a file: jiff refuses it, tzcode reads
    // it. Made here from Berlin's file with a US Central footer.
    let mut data = std::fs::read("/usr/share/zoneinfo/Europe/Berlin").unwrap();
    let end = data.len() - 1;
    let start = data[..end].iter().rposition(|&b| b == b'\n').unwrap();
    data.splice(start + 1..end, b"CST6CDT,M3.2.0,M11.1.0".iter().copied());
    assert!(jiff::tz::TimeZone::tzif("x", &data).is_err());
    let z = Zone::from_tzif("Mixed", &data).unwrap();
    // after the file's last transition the footer's rules hold (CDT in July 2040)
    assert_eq!(
        z.offset_at(utc(2040, 7, 1, 12, 0, 0).timestamp()),
        -5 * 3600
    );
    assert_eq!(
        z.offset_at(utc(2040, 1, 1, 12, 0, 0).timestamp()),
        -6 * 3600
    );
    // wall times resolve with the rules of their instant: 2040-03-11 02:30 is in a US gap
    let gap = NaiveDate::from_ymd_opt(2040, 3, 11)
        .unwrap()
        .and_hms_opt(2, 30, 0)
        .unwrap();
    assert_eq!(z.resolve(gap), utc(2040, 3, 11, 8, 0, 0));
    if data.len() > 2000 {
        // Debian's files are "fat": Berlin's transitions are written out until 2037
        assert_eq!(z.local(utc(2026, 7, 1, 12, 0, 0)).hour(), 14);
    }
}

#[test]
fn zone_files_are_read_again_when_they_change() {
    let dir = std::env::temp_dir().join(format!("pulse-zonedb-{}", std::process::id()));
    struct Gone(std::path::PathBuf);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _gone = Gone(dir.clone());
    std::fs::create_dir_all(dir.join("Test")).unwrap();
    let copy = |from: &str| {
        let tmp = dir.join("Test/.new");
        std::fs::copy(format!("/usr/share/zoneinfo/{from}"), &tmp).unwrap();
        std::fs::rename(&tmp, dir.join("Test/Zone")).unwrap();
    };
    let mut db = zonedb::ZoneDb::new(&dir);
    copy("Asia/Tokyo");
    let noon = utc(2026, 7, 1, 12, 0, 0);
    assert_eq!(db.load("Test/Zone").unwrap().local(noon).hour(), 21);
    let since = std::time::SystemTime::now();
    assert!(db
        .changed_since("Test/Zone", since + std::time::Duration::from_secs(5))
        .is_none());
    // replaced as a package manager does: new content, the old modification time
    copy("America/New_York");
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
    std::fs::File::options()
        .write(true)
        .open(dir.join("Test/Zone"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let moved = db.changed_since("Test/Zone", since).unwrap();
    assert_eq!(moved.local(noon).hour(), 8);
    assert_eq!(db.top_level(), vec!["Test".to_string()]);
    assert_eq!(db.load("Test/Zone").unwrap().local(noon).hour(), 8);
    std::fs::remove_file(dir.join("Test/Zone")).unwrap();
    assert!(db.load("Test/Zone").is_err());
}

#[test]
fn gaps_and_folds_follow_the_dst_rules() {
    let la = zone("America/Los_Angeles");
    let at = |d: u32, h: u32, m: u32| {
        NaiveDate::from_ymd_opt(2026, if d == 8 { 3 } else { 11 }, d)
            .unwrap()
            .and_hms_opt(h, m, 0)
            .unwrap()
    };
    // 2026-03-08 02:00-03:00 does not exist: 02:30 runs at 03:00 PDT = 10:00 UTC
    assert_eq!(la.resolve(at(8, 2, 30)), utc(2026, 3, 8, 10, 0, 0));
    assert_eq!(la.resolve(at(8, 2, 0)), utc(2026, 3, 8, 10, 0, 0));
    // 2026-11-01 01:30 occurs twice: the first (PDT, 08:30 UTC)
    assert_eq!(la.resolve(at(1, 1, 30)), utc(2026, 11, 1, 8, 30, 0));
    // Lord Howe moves by 30 minutes
    let lh = zone("Australia/Lord_Howe");
    let n = NaiveDate::from_ymd_opt(2026, 10, 4)
        .unwrap()
        .and_hms_opt(2, 10, 0)
        .unwrap();
    assert_eq!(
        lh.local(lh.resolve(n)),
        NaiveDate::from_ymd_opt(2026, 10, 4)
            .unwrap()
            .and_hms_opt(2, 30, 0)
            .unwrap()
    );
}

// ---- property tests: compare against a brute-force minute-by-minute oracle -------------------

/// Oracle: walks instants minute by minute. An instant fires when its local time matches and it
/// is that local time's first occurrence, or when it ends a DST gap that hid a matching time.
fn oracle_next(
    c: &CronExpr,
    tz: &Zone,
    after: DateTime<Utc>,
    limit_minutes: i64,
) -> Option<DateTime<Utc>> {
    let start = after.with_second(0).unwrap().with_nanosecond(0).unwrap() + Duration::minutes(1);
    let matches = |n: NaiveDateTime| {
        let dim = days_in_month(n.year(), n.month());
        c.matches_day(n.month(), n.day(), n.weekday().num_days_from_sunday(), dim)
            && c.matches_hour(n.hour())
            && c.matches_minute(n.minute())
    };
    // the latest local time seen so far: a local time not above it is a repeat (fall back)
    let mut seen = (1..=180)
        .map(|b| tz.local(start - Duration::minutes(b)))
        .max()
        .unwrap();
    let mut prev = tz.local(start - Duration::minutes(1));
    for k in 0..limit_minutes {
        let u = start + Duration::minutes(k);
        let l = tz.local(u);
        let first = l > seen;
        if first {
            seen = l;
        }
        if first && matches(l) {
            return Some(u);
        }
        // a gap just ended: local times strictly between prev+1min and l never existed
        let mut n = prev + Duration::minutes(1);
        while n < l {
            if matches(n) {
                return Some(u);
            }
            n += Duration::minutes(1);
        }
        prev = l;
    }
    None
}

fn field(max_lo: u32, max: u32) -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_string()),
        (max_lo..=max).prop_map(|v| v.to_string()),
        (max_lo..=max, max_lo..=max).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
        (1..=max.max(1)).prop_map(|s| format!("*/{s}")),
        (max_lo..=max, 1..=max.max(1)).prop_map(|(a, s)| format!("{a}/{s}")),
        proptest::collection::vec(max_lo..=max, 1..4).prop_map(|v| v
            .iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(",")),
    ]
}

fn expr() -> impl Strategy<Value = String> {
    (
        field(0, 59),
        field(0, 23),
        prop_oneof![field(1, 31), Just("L".to_string())],
        field(1, 12),
        field(0, 7),
    )
        .prop_map(|(a, b, c, d, e)| format!("{a} {b} {c} {d} {e}"))
}

fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    // 2024-01-01 .. 2030-01-01, to the second
    (1_704_067_200i64..1_893_456_000i64).prop_map(|s| Utc.timestamp_opt(s, 0).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn next_matches_oracle_utc(e in expr(), after in instant()) {
        let c = CronExpr::parse(&e).unwrap();
        // a window of 40 days for the oracle keeps it fast; schedules sparser than that are
        // compared only when the fast answer falls inside it
        let want = oracle_next(&c, &Zone::utc(), after, 60 * 24 * 40);
        let got = next_cron(&c, &Zone::utc(), after);
        match want {
            Some(w) => prop_assert_eq!(got, Some(w), "{}", e),
            None => prop_assert!(got.map_or(true, |g| g > after + Duration::days(40)), "{}", e),
        }
    }

    #[test]
    fn next_runs_match_oracle_across_dst(
        e in expr(),
        tz in prop_oneof![Just("America/Los_Angeles"), Just("Europe/Berlin"), Just("Australia/Lord_Howe")],
        // around the 2026 transitions, where mistakes would show
        offset in 0i64..(3 * 24 * 3600),
        which in 0usize..4,
    ) {
        let anchors = [utc(2026, 3, 7, 0, 0, 0), utc(2026, 10, 31, 0, 0, 0), utc(2026, 3, 28, 0, 0, 0), utc(2026, 4, 4, 0, 0, 0)];
        let after = anchors[which] + Duration::seconds(offset);
        let c = CronExpr::parse(&e).unwrap();
        let s = Schedule::Cron(c.clone());
        let tz = &zone(tz);
        // every instant returned is the oracle's next one: each matches and none is skipped
        let mut t = after;
        for _ in 0..5 {
            let want = oracle_next(&c, tz, t, 60 * 24 * 3);
            let got = s.next_after(tz, t);
            match want {
                Some(w) => { prop_assert_eq!(got, Some(w), "{} in {} after {}", e, tz.name(), t); t = w; }
                None => { prop_assert!(got.map_or(true, |g| g > t + Duration::days(3)), "{}", e); break; }
            }
        }
    }

    #[test]
    fn seconds_schedules_are_a_true_period(n in 1u32..60, after in instant()) {
        let s = Schedule::EverySeconds(n);
        let r = s.next_runs(&Zone::utc(), after, 10);
        prop_assert_eq!(r.len(), 10);
        // the first is the next multiple of n in Unix time, then every n seconds exactly
        prop_assert!(r[0] > after && r[0] - after <= Duration::seconds(n as i64));
        for t in &r {
            prop_assert_eq!(t.timestamp() % n as i64, 0);
            prop_assert_eq!(t.nanosecond(), 0);
        }
        for w in r.windows(2) {
            prop_assert_eq!(w[1] - w[0], Duration::seconds(n as i64));
        }
    }

    #[test]
    fn seconds_schedules_dividing_60_keep_their_seconds(
        n in prop_oneof![Just(1u32), Just(2), Just(3), Just(4), Just(5), Just(6), Just(10), Just(12), Just(15), Just(20), Just(30)],
        after in instant(),
    ) {
        // what 0.5.0 did (the seconds of the minute that are multiples of n), as the oracle
        let old = |after: DateTime<Utc>| {
            let base = after.with_nanosecond(0).unwrap();
            (1..=60).map(|k| base + Duration::seconds(k)).find(|c| c.second() % n == 0).unwrap()
        };
        let s = Schedule::EverySeconds(n);
        let mut t = after;
        for got in s.next_runs(&Zone::utc(), after, 10) {
            prop_assert_eq!(got, old(t));
            t = got;
        }
    }

    #[test]
    fn parser_never_panics(s in "\\PC{0,40}") {
        let _ = Schedule::parse(&s);
    }
}
