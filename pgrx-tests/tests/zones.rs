//! Time semantics against the server: zone rules are PostgreSQL's own (read at run time from the
//! zone directory PostgreSQL reads), every zone name PostgreSQL knows is accepted, and
//! `N seconds` is a true period.
mod common;
use common::*;
use postgres::Client;

/// The probes around every transition of 2020-2030 (and at fixed instants, for zones without
/// one) of the zones `names_sql` lists, with `oracle` giving PostgreSQL's local time of `t` in
/// zone `name`. For each probe instant t with local time L: the schedule naming L's minute, hour,
/// day and month fires at L's first occurrence (t, or t minus the fold for a repeated time), and
/// only once. Returns (probes, zones, transitions, mismatches).
fn agreement(c: &mut Client, names_sql: &str, oracle: &str) -> (i64, i64, i64, Vec<String>) {
    let off = |t: &str| {
        format!(
            "({o} - ({t} AT TIME ZONE 'UTC'))",
            o = oracle.replace("{t}", t)
        )
    };
    let local = |t: &str| oracle.replace("{t}", t);
    let sql = format!(
        "WITH z AS ({names_sql}),
         wk AS (
           SELECT name, t - interval '7 days' AS a, t AS b FROM (
             SELECT name, t, {off_t} AS o, lag({off_t}) OVER (PARTITION BY name ORDER BY t) AS prev
               FROM z, generate_series(timestamptz '2020-01-01 00:00+00', '2031-01-01 00:00+00', '7 days') t
           ) x WHERE prev IS NOT NULL AND prev <> o),
         hr AS (
           SELECT wk.name, h.t FROM wk, LATERAL (
             SELECT min(t) AS t FROM generate_series(wk.a, wk.b, '1 hour') t WHERE {off_t} <> {off_a}) h),
         mi AS (
           SELECT hr.name, m.t FROM hr, LATERAL (
             SELECT min(t) AS t FROM generate_series(hr.t - interval '1 hour', hr.t, '1 minute') t
              WHERE {off_t} <> {off_h}) m),
         tr AS (
           SELECT mi.name, s.t AS tr, {off_before} AS before, {off_after} AS after FROM mi, LATERAL (
             SELECT min(t) AS t FROM generate_series(mi.t - interval '1 minute', mi.t, '1 second') t
              WHERE {off_t} <> {off_m}) s),
         probe AS (
           SELECT tr.name, tr.tr + d AS t, abs(extract(epoch FROM tr.after - tr.before)) AS fold
             FROM tr, unnest(ARRAY[interval '-3 hours', '-1 hour', '-30 minutes', '-1 minute', '0', '1 minute',
                                   '30 minutes', '1 hour', '3 hours']) d
           UNION ALL
           SELECT name, t, 0 FROM z, unnest(ARRAY[timestamptz '2026-01-15 12:00+00', '2026-07-15 12:00+00',
                                                   '2030-12-31 23:59+00']) t),
         l AS (
           SELECT name, t, {local_t} AS l,
                  CASE WHEN fold > 0 AND {local_f} = {local_t} THEN t - make_interval(secs => fold) ELSE t END AS first
             FROM probe WHERE date_trunc('minute', t) = t),
         checked AS (
           SELECT name, t, l, first,
                  (SELECT r FROM pulse.next_runs(
                     format('%s %s %s %s *', extract(minute FROM l), extract(hour FROM l), extract(day FROM l),
                            extract(month FROM l)), name, 1, first - interval '1 second') r) AS got,
                  (SELECT r FROM pulse.next_runs(
                     format('%s %s %s %s *', extract(minute FROM l), extract(hour FROM l), extract(day FROM l),
                            extract(month FROM l)), name, 1, t - interval '1 second') r) AS again
             FROM l WHERE extract(second FROM l) = 0)
         SELECT (SELECT count(*) FROM checked), (SELECT count(DISTINCT name) FROM checked),
                (SELECT count(*) FROM tr),
                coalesce((SELECT array_agg(format('%s at %s (local %s): pg_pulse fires at %s, PostgreSQL at %s; again %s',
                                                  name, t, l, got, first, again))
                            FROM (SELECT * FROM checked
                                   WHERE got IS DISTINCT FROM first
                                      OR (first <> t AND again = t) LIMIT 20) bad), '{{}}')",
        off_t = off("t"),
        off_a = off("wk.a"),
        off_h = off("(hr.t - interval '1 hour')"),
        off_m = off("(mi.t - interval '1 minute')"),
        off_before = off("(s.t - interval '1 second')"),
        off_after = off("s.t"),
        local_t = local("t"),
        local_f = local("(t - make_interval(secs => fold))"),
    );
    let row = c.query_one(&sql, &[]).expect("agreement query");
    (row.get(0), row.get(1), row.get(2), row.get(3))
}

/// Fails with the mismatches `agreement` found, if any.
fn assert_agree(bad: &[String], oracle: &str) {
    assert!(
        bad.is_empty(),
        "pg_pulse and {oracle} disagree:\n{}",
        bad.join("\n")
    );
}

const NOT_ABBREV: &str = "lower(name) NOT IN (SELECT lower(abbrev) FROM pg_timezone_abbrevs)";
/// the zones the file-change test below writes (and removes) while this one runs
const NOT_OURS: &str = "name NOT LIKE 'PulseTest%'";

#[test]
fn every_zone_agrees_with_postgresql_around_every_transition() {
    let mut c = admin();
    // names that are not also time zone abbreviations: AT TIME ZONE reads them as zones
    let (probes, zones, transitions, bad) = agreement(
        &mut c,
        &format!("SELECT name FROM pg_timezone_names WHERE {NOT_ABBREV} AND {NOT_OURS}"),
        "timezone(name, {t})",
    );
    assert_agree(&bad, "AT TIME ZONE");
    let all: i64 = c
        .query_one(
            &format!("SELECT count(*) FROM pg_timezone_names WHERE {NOT_ABBREV} AND {NOT_OURS}"),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(zones, all, "every zone is checked");
    assert!(transitions > 1000, "{transitions} transitions found");
    eprintln!("{zones} zones, {transitions} transitions, {probes} instants: all agree");

    // CET, EET, MET, WET, EST, ... are also abbreviations, which AT TIME ZONE prefers (CET is
    // always +01 there). A job's zone is read as SET timezone reads it: the zone file, summer
    // time included. Those are compared with the session zone's conversion.
    let colliding: Vec<String> = c
        .query(
            "SELECT name FROM pg_timezone_names
              WHERE lower(name) IN (SELECT lower(abbrev) FROM pg_timezone_abbrevs) ORDER BY name",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!colliding.is_empty());
    for name in &colliding {
        c.batch_execute(&format!("SET timezone = '{name}'"))
            .unwrap();
        let (_, zones, _, bad) = agreement(
            &mut c,
            &format!("SELECT '{name}'::text AS name"),
            "({t})::timestamp",
        );
        assert_agree(&bad, "SET timezone");
        assert_eq!(zones, 1, "{name}");
    }
    c.batch_execute("RESET timezone").unwrap();
}

/// The directory PostgreSQL reads zones from, as pg_config tells.
fn zone_dir() -> std::path::PathBuf {
    let out = |arg: &str| {
        let o = std::process::Command::new(format!("{}/pg_config", pg_bin()))
            .arg(arg)
            .output()
            .expect("run pg_config");
        String::from_utf8(o.stdout).unwrap().trim().to_string()
    };
    let configure = out("--configure");
    if let Some(d) = configure
        .split_whitespace()
        .map(|w| w.trim_matches('\''))
        .find_map(|w| w.strip_prefix("--with-system-tzdata="))
    {
        return d.into();
    }
    std::path::Path::new(&out("--sharedir")).join("timezone")
}

/// Removes the test's zone directory, also when the test fails.
struct ZoneFiles(std::path::PathBuf);
impl Drop for ZoneFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Compiles zone source text with zic into PostgreSQL's zone directory, as a tzdata update does.
fn zic(dir: &std::path::Path, source: &str) {
    let src = std::env::temp_dir().join(format!("pulse-zone-{}.zi", std::process::id()));
    std::fs::write(&src, source).unwrap();
    let st = std::process::Command::new("zic")
        .arg("-d")
        .arg(dir)
        .arg(&src)
        .status()
        .expect("run zic (Debian's libc-bin)");
    let _ = std::fs::remove_file(&src);
    assert!(st.success(), "zic failed");
}

fn at(c: &mut Client, q: &str) -> String {
    c.query_one(&format!("SELECT ({q})::text"), &[])
        .unwrap()
        .get(0)
}

#[test]
fn a_changed_zone_file_is_followed_without_a_rebuild() {
    let _jobs = Jobs::new();
    let dir = zone_dir();
    let tag = format!("PulseTest{}", std::process::id());
    let _files = ZoneFiles(dir.join(&tag));
    let zone = format!("{tag}/Shifted");
    // A country on +01 with EU summer time...
    zic(
        &dir,
        &format!(
            "Rule PT 2020 max - Mar lastSun 1:00u 1:00 S\n\
             Rule PT 2020 max - Oct lastSun 1:00u 0 -\n\
             Zone {zone} 1:00 PT PE%sT\n"
        ),
    );
    let mut c = admin();
    c.batch_execute("SET timezone = 'UTC'").unwrap();
    let noon = format!(
        "(SELECT min(t) FROM pulse.next_runs('0 12 * * *', '{zone}', 1, '2027-07-01 00:00+00') t)"
    );
    assert_eq!(at(&mut c, &noon), "2027-07-01 10:00:00+00");
    let job = unique("zone_job");
    c.execute(
        "SELECT pulse.schedule_job($1, '0 12 * * *', 'SELECT 1', timezone => $2)",
        &[&job, &zone],
    )
    .unwrap();
    // the hour (UTC) of the job's next run
    let hour = |c: &mut Client| -> String {
        c.query_one(
            "SELECT extract(hour FROM next_run_at AT TIME ZONE 'UTC')::text FROM pulse.job WHERE job_name = $1",
            &[&job],
        )
        .unwrap()
        .get(0)
    };
    // the next noon from now: 10:00 or 11:00 UTC, whatever the season
    let first = hour(&mut c);
    assert!(first == "10" || first == "11", "{first}");

    // ...abolishes summer time and moves to +03 (the file is replaced, as a tzdata update does;
    // dpkg also gives the new file the package's old modification time)
    zic(&dir, &format!("Zone {zone} 3:00 - PTT\n"));
    let st = std::process::Command::new("touch")
        .args(["-m", "-d", "2020-01-01 00:00:00"])
        .arg(dir.join(&zone))
        .status()
        .unwrap();
    assert!(st.success());
    // the same session (PostgreSQL itself keeps the old rules for its own use in a session)
    assert_eq!(at(&mut c, &noon), "2027-07-01 09:00:00+00");
    // a new session: pg_pulse and AT TIME ZONE agree on the new rule
    let mut fresh = admin();
    fresh.batch_execute("SET timezone = 'UTC'").unwrap();
    assert_eq!(at(&mut fresh, &noon), "2027-07-01 09:00:00+00");
    assert_eq!(
        at(
            &mut fresh,
            &format!("timestamp '2027-07-01 12:00' AT TIME ZONE '{zone}'")
        ),
        "2027-07-01 09:00:00+00"
    );
    // the scheduler moves the job's next run to the new rule by itself (it looks for changed
    // zone files at every housekeeping turn, at most a minute apart)
    wait_for(120, "the job's next run to follow the new rule", || {
        (hour(&mut fresh) == "9").then_some(())
    });
}

#[test]
fn zone_names_are_the_ones_postgresql_knows() {
    let _jobs = Jobs::new();
    let mut c = admin();
    c.batch_execute("SET timezone = 'UTC'").unwrap();
    // PostgreSQL's spelling is stored, whatever the case given
    let job = unique("zone_name");
    c.execute(
        "SELECT pulse.schedule_job($1, '0 9 * * *', 'SELECT 1', timezone => 'europe/berlin')",
        &[&job],
    )
    .unwrap();
    let tz: String = c
        .query_one(
            "SELECT timezone FROM pulse.job WHERE job_name = $1",
            &[&job],
        )
        .unwrap()
        .get(0);
    assert_eq!(tz, "Europe/Berlin");
    // POSIX specs that SET timezone accepts
    for (name, want) in [
        ("<+03>-03", "2026-07-01 09:00:00+00"),
        ("EST5EDT", "2026-07-01 16:00:00+00"),
        ("<-02>2", "2026-07-01 14:00:00+00"),
    ] {
        let got = at(
            &mut c,
            &format!("SELECT min(t) FROM pulse.next_runs('0 12 * * *', '{name}', 1, '2026-07-01 00:00+00') t"),
        );
        assert_eq!(got, want, "{name}");
        let pg = at(
            &mut c,
            &format!("timestamp '2026-07-01 12:00' AT TIME ZONE '{name}'"),
        );
        assert_eq!(got, pg, "{name}");
    }
    // names PostgreSQL refuses, paths out of the zone directory, numeric offsets (SET timezone
    // takes them, but they are not zones), and a POSIX spec pg_pulse would read differently from
    // PostgreSQL (jiff and tzcode disagree on a transition at the end of day 0)
    for name in [
        "Mars/Olympus",
        "../../../etc/passwd",
        "/etc/passwd",
        "",
        "PST",
        "5",
        "+05:30",
        "EST5EDT4,0/0,J365/25",
    ] {
        let (msg, hint) = expect_error(
            c.query("SELECT * FROM pulse.next_runs('@daily', $1, 1)", &[&name]),
            "22023",
        );
        assert!(msg.contains("time zone"), "{msg}");
        assert!(hint.contains("pg_timezone_names"), "{hint}");
    }
    // a long name is not echoed whole
    let (msg, _) = expect_error(
        c.query(
            "SELECT * FROM pulse.next_runs('@daily', repeat('x', 100000), 1)",
            &[],
        ),
        "22023",
    );
    assert!(msg.len() < 300, "{} bytes", msg.len());
    // after the year 9999 nothing is computed (zone rules end there)
    expect_error(
        c.query(
            "SELECT * FROM pulse.next_runs('@daily', 'UTC', 1, '250000-01-01 00:00+00')",
            &[],
        ),
        "22023",
    );
    let late: i64 = c
        .query_one(
            "SELECT count(*) FROM pulse.next_runs('@hourly', 'Europe/Berlin', 10, '9999-12-31 20:00+00')",
            &[],
        )
        .unwrap()
        .get(0);
    // 21:00 and 22:00 UTC: 23:00 UTC is already the year 10000 in Berlin
    assert_eq!(late, 2);
    let (_, hint) = expect_error(
        c.execute(
            "SELECT pulse.schedule_job($1, '@daily', 'SELECT 1', timezone => 'Mars/Olympus')",
            &[&unique("zone_bad")],
        ),
        "22023",
    );
    assert!(hint.contains("pg_timezone_names"), "{hint}");
}

#[test]
fn a_stored_zone_that_can_no_longer_be_read_is_never_replaced_by_another() {
    let _jobs = Jobs::new();
    let mut c = admin();
    let job = unique("zone_gone");
    c.execute(
        "SELECT pulse.schedule_job($1, '0 2 * * *', 'SELECT 1', timezone => 'Europe/Berlin')",
        &[&job],
    )
    .unwrap();
    // as after an update of the zone database that dropped the name
    c.execute(
        "UPDATE pulse.job SET timezone = 'Gone/Zone' WHERE job_name = $1",
        &[&job],
    )
    .unwrap();
    // pausing needs no zone; anything that computes a run says what to do
    c.execute("SELECT pulse.toggle_job($1, false)", &[&job])
        .unwrap();
    for call in [
        "SELECT pulse.alter_job($1, comment => 'just a comment')",
        "SELECT pulse.toggle_job($1, true)",
    ] {
        let (msg, hint) = expect_error(c.execute(call, &[&job]), "22023");
        assert!(msg.contains("Gone/Zone"), "{msg}");
        assert!(hint.contains("timezone =>"), "{hint}");
    }
    let tz: String = c
        .query_one(
            "SELECT timezone FROM pulse.job WHERE job_name = $1",
            &[&job],
        )
        .unwrap()
        .get(0);
    assert_eq!(tz, "Gone/Zone");
    // a new zone mends it
    c.execute("SELECT pulse.alter_job($1, timezone => 'UTC')", &[&job])
        .unwrap();
    c.execute("SELECT pulse.toggle_job($1, true)", &[&job])
        .unwrap();
}

#[test]
fn seconds_schedules_are_a_true_period() {
    let mut c = admin();
    c.batch_execute("SET timezone = 'UTC'").unwrap();
    let runs = |c: &mut Client, s: &str| -> Vec<String> {
        c.query(
            &format!(
                "SELECT t::text FROM pulse.next_runs('{s}', NULL, 4, '2026-01-01 00:00:00+00') t"
            ),
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    // 45 seconds: every 45 seconds (not :00 and :45 of each minute)
    assert_eq!(
        runs(&mut c, "45 seconds"),
        [
            "2026-01-01 00:00:45+00",
            "2026-01-01 00:01:30+00",
            "2026-01-01 00:02:15+00",
            "2026-01-01 00:03:00+00"
        ]
    );
    // divisors of 60 keep their seconds of the minute
    assert_eq!(
        runs(&mut c, "20 seconds"),
        [
            "2026-01-01 00:00:20+00",
            "2026-01-01 00:00:40+00",
            "2026-01-01 00:01:00+00",
            "2026-01-01 00:01:20+00"
        ]
    );
}
