//! `make bench`: fire-lag and idle-cost figures for pg_pulse, side by side with pg_cron.
//!
//! Fire lag = the job's own clock_timestamp() when its command executes minus its scheduled instant.
//! Runs against a server with both pg_pulse and pg_cron preloaded (scripts/bench.sh starts it).
//! Timeline (about 5 minutes):
//!   phase 1: pg_pulse (a) 5 jobs every second for 60 s, then (b) 500 jobs due at one instant,
//!            (c) 20 jobs every second with 4 executors for 30 s, (d) 50 owners x 10 jobs at once;
//!            meanwhile pg_cron holds 100 jobs that are not due, and its launcher's CPU is measured.
//!   phase 2: pg_cron (a) 5 minutely jobs for 2 minutes, then (b) 500 jobs due at one minute,
//!            (d) 50 owners x 10 jobs due at one minute;
//!            meanwhile pg_pulse holds 100 jobs that are not due, and its scheduler's CPU is measured.
use postgres::{Client, NoTls};
use std::time::{Duration, Instant};

mod enqueue;
mod health;
mod http;
mod queue;

fn main() {
    let port: u16 = std::env::var("PULSE_BENCH_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(5435);
    let what: Vec<String> = std::env::args().skip(1).collect();
    let wants = |name: &str| what.is_empty() || what.iter().any(|w| w == name);
    if wants("scheduler") {
        scheduler_bench(port);
    }
    if wants("queue") {
        queue::run(port);
    }
    // HTTP before health: the health data (10,000,000 run rows) keeps autovacuum and the
    // checkpointer busy for minutes afterwards, which would be measured as HTTP throughput
    if wants("http") {
        http::run(port);
    }
    if wants("enqueue") {
        enqueue::run(port);
    }
    if wants("health") {
        health::run(port);
    }
}

fn connect(port: u16) -> Client {
    Client::connect(
        &format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
        NoTls,
    )
    .expect("connect to the bench server")
}

fn scheduler_bench(port: u16) {
    let mut c = Client::connect(
        &format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
        NoTls,
    )
    .expect("connect to the bench server");
    c.batch_execute(
        "CREATE EXTENSION IF NOT EXISTS pg_pulse;
         CREATE EXTENSION IF NOT EXISTS pg_cron;
         DROP SCHEMA IF EXISTS bench CASCADE;
         CREATE SCHEMA bench;
         CREATE TABLE bench.lag(system text, scenario text, scheduled timestamptz, fired timestamptz);
         SELECT pulse.unschedule_job(job_name) FROM pulse.jobs;
         SELECT cron.unschedule(jobid) FROM cron.job;
         TRUNCATE pulse.job_run;",
    )
    .expect("prepare");
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "pg_pulse benchmark: PostgreSQL 15, {cores} cores; pg_cron {}",
        version(&mut c, "pg_cron")
    );
    println!("fire lag = the job's clock_timestamp() when it runs - its scheduled instant\n");

    // ---- phase 1: pg_pulse under load; pg_cron idle with 100 jobs ---------------------------
    for i in 0..100 {
        c.execute(
            "SELECT cron.schedule($1, '0 0 1 1 *', 'SELECT 1')",
            &[&format!("idle_{i}")],
        )
        .unwrap();
    }
    let cron_pid = worker_pid(&mut c, "pg_cron launcher");
    let cron_window = idle_window(cron_pid);

    let pulse_cmd = |scenario: &str| {
        format!(
            "INSERT INTO bench.lag SELECT 'pg_pulse', '{scenario}', scheduled_for, clock_timestamp() FROM pulse.current_run()"
        )
    };
    for i in 0..5 {
        c.execute(
            "SELECT pulse.schedule_job($1, '1 seconds', $2)",
            &[&format!("every_second_{i}"), &pulse_cmd("a")],
        )
        .unwrap();
    }
    eprintln!("[pg_pulse] (a) 5 jobs every second, 60 s ...");
    std::thread::sleep(Duration::from_secs(61));
    c.batch_execute("SELECT pulse.toggle_job(job_name, false) FROM pulse.jobs WHERE job_name LIKE 'every_second_%'")
        .unwrap();

    eprintln!("[pg_pulse] (b) 500 jobs due at the same instant ...");
    c.batch_execute(&format!(
        "SELECT pulse.schedule_once('at_once_' || i, date_trunc('second', now()) + interval '4 seconds', $c${}$c$)
           FROM generate_series(1, 500) i",
        pulse_cmd("b")
    ))
    .unwrap();
    wait_count(&mut c, "pg_pulse", "b", 500);

    eprintln!("[pg_pulse] (c) 20 jobs every second with the default pool (4 executors), 30 s ...");
    set_max_running(&mut c, Some(4));
    for i in 0..20 {
        c.execute(
            "SELECT pulse.schedule_job($1, '1 seconds', $2)",
            &[&format!("twenty_{i}"), &pulse_cmd("c")],
        )
        .unwrap();
    }
    std::thread::sleep(Duration::from_secs(31));
    c.batch_execute(
        "SELECT pulse.toggle_job(job_name, false) FROM pulse.jobs WHERE job_name LIKE 'twenty_%'",
    )
    .unwrap();
    set_max_running(&mut c, None);

    eprintln!("[pg_pulse] (d) 50 owners with 10 jobs each, all due at once ...");
    make_owners(&mut c, 50);
    c.batch_execute(&format!(
        "DO $d$ DECLARE at timestamptz := date_trunc('second', now()) + interval '5 seconds';
         BEGIN
           FOR i IN 1..50 LOOP
             EXECUTE format('SET ROLE bench_owner_%s', i);
             PERFORM pulse.schedule_once('owners_' || i || '_' || j, at, $c${}$c$)
                FROM generate_series(1, 10) j;
             RESET ROLE;
           END LOOP;
         END $d$",
        pulse_cmd("d")
    ))
    .unwrap();
    wait_count(&mut c, "pg_pulse", "d", 500);
    let cron_idle = cron_window.join().expect("idle window");
    c.batch_execute("SELECT cron.unschedule(jobid) FROM cron.job")
        .unwrap();
    c.batch_execute("SELECT pulse.unschedule_job(job_name) FROM pulse.jobs")
        .unwrap();

    // ---- phase 2: pg_cron under load; pg_pulse idle with 100 jobs ---------------------------
    for i in 0..100 {
        c.execute(
            "SELECT pulse.schedule_job($1, '0 0 1 1 *', 'SELECT 1')",
            &[&format!("idle_{i}")],
        )
        .unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    let pulse_pid = worker_pid(&mut c, "pg_pulse scheduler");
    let pulse_window = idle_window(pulse_pid);

    let cron_cmd = |scenario: &str| {
        format!(
            "INSERT INTO bench.lag VALUES ('pg_cron', '{scenario}', date_trunc('minute', clock_timestamp()), clock_timestamp())"
        )
    };
    for i in 0..5 {
        c.execute(
            "SELECT cron.schedule($1, '* * * * *', $2)",
            &[&format!("minutely_{i}"), &cron_cmd("a")],
        )
        .unwrap();
    }
    eprintln!("[pg_cron] (a) 5 minutely jobs, 2 minutes ...");
    wait_count(&mut c, "pg_cron", "a", 10);
    c.batch_execute("SELECT cron.unschedule(jobid) FROM cron.job")
        .unwrap();
    eprintln!("[pg_cron] (b) 500 jobs due at the same minute ...");
    c.batch_execute(&format!(
        "SELECT cron.schedule('at_once_' || i, '* * * * *', $c${}$c$) FROM generate_series(1, 500) i",
        cron_cmd("b")
    ))
    .unwrap();
    wait_count(&mut c, "pg_cron", "b", 500);
    c.batch_execute("SELECT cron.unschedule(jobid) FROM cron.job")
        .unwrap();
    eprintln!("[pg_cron] (d) 50 owners with 10 jobs each, due at the same minute ...");
    c.batch_execute(&format!(
        "SELECT cron.schedule_in_database('owners_' || i || '_' || j, '* * * * *', $c${}$c$,
                                          'postgres', 'bench_owner_' || i)
           FROM generate_series(1, 50) i, generate_series(1, 10) j",
        cron_cmd("d")
    ))
    .unwrap();
    wait_count(&mut c, "pg_cron", "d", 500);
    c.batch_execute("SELECT cron.unschedule(jobid) FROM cron.job")
        .unwrap();
    let pulse_idle = pulse_window.join().expect("idle window");
    c.batch_execute("SELECT pulse.unschedule_job(job_name) FROM pulse.jobs")
        .unwrap();

    // ---- report -------------------------------------------------------------------------------
    println!(
        "{:<46} {:>8} {:>10} {:>10} {:>10}",
        "scenario", "samples", "p50", "p99", "max (= total time of a burst)"
    );
    let rows = c
        .query(
            "SELECT system, scenario, count(*),
                    percentile_cont(0.5) WITHIN GROUP (ORDER BY ms),
                    percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), max(ms)
               FROM (SELECT system, scenario,
                            extract(epoch FROM fired - scheduled)::float8 * 1000 AS ms
                       FROM bench.lag) l
              GROUP BY 1, 2 ORDER BY 2, 1 DESC",
            &[],
        )
        .unwrap();
    for r in rows {
        let system: String = r.get(0);
        let scenario: String = r.get(1);
        let label = match (system.as_str(), scenario.as_str()) {
            ("pg_pulse", "a") => "pg_pulse (a) 5 jobs every second, 60 s",
            ("pg_cron", "a") => "pg_cron  (a) 5 minutely jobs, 2 min",
            ("pg_pulse", "b") => "pg_pulse (b) 500 jobs due at once",
            ("pg_cron", "b") => "pg_cron  (b) 500 jobs due at once",
            ("pg_pulse", "c") => "pg_pulse (c) 20 jobs every second, 4 executors",
            ("pg_pulse", "d") => "pg_pulse (d) 50 owners x 10 jobs at once",
            ("pg_cron", "d") => "pg_cron  (d) 50 owners x 10 jobs at once",
            _ => "?",
        };
        let f = |v: f64| fmt_ms(v);
        println!(
            "{:<46} {:>8} {:>10} {:>10} {:>10}",
            label,
            r.get::<_, i64>(2),
            f(r.get::<_, f64>(3)),
            f(r.get::<_, f64>(4)),
            f(r.get::<_, f64>(5)),
        );
    }
    let tick = ticks_per_second();
    println!("\nidle cost with 100 jobs of which none is due:");
    for (name, (ticks, switches, took)) in [
        ("pg_pulse scheduler", pulse_idle),
        ("pg_cron launcher", cron_idle),
    ] {
        println!(
            "  {name:<20} CPU {:>6.2} s over {:.0} s, {switches} wake-ups (voluntary context switches)",
            ticks as f64 / tick,
            took.as_secs_f64()
        );
    }
    println!("(pg_cron 1.4 has no sub-minute schedules, so its (a) row uses minutely jobs)");
    println!("\ntargets: pg_pulse (a) p99 < 10 ms; (b) p99 < 250 ms; (c) p99 < 20 ms; idle CPU effectively zero");
    println!("(d): every job runs in a session of its owner, so 50 owners need at least 50 sessions (8 executors at a time here)");
}

/// `pulse.max_running_jobs` for the bench server (None: back to the server's file), reloaded.
fn set_max_running(c: &mut Client, n: Option<i32>) {
    match n {
        Some(n) => c.batch_execute(&format!("ALTER SYSTEM SET pulse.max_running_jobs = {n}")),
        None => c.batch_execute("ALTER SYSTEM RESET pulse.max_running_jobs"),
    }
    .unwrap();
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    std::thread::sleep(Duration::from_millis(500)); // the workers take the reload at their next wake-up
}

/// `n` login roles that may schedule jobs and write lag rows (bench_owner_1..n).
fn make_owners(c: &mut Client, n: i32) {
    c.batch_execute(&format!(
        "DO $d$ BEGIN
           FOR i IN 1..{n} LOOP
             IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'bench_owner_' || i) THEN
               EXECUTE format('CREATE ROLE bench_owner_%s LOGIN', i);
             END IF;
             EXECUTE format('GRANT USAGE ON SCHEMA pulse, bench TO bench_owner_%s', i);
             EXECUTE format('GRANT INSERT ON bench.lag TO bench_owner_%s', i);
           END LOOP;
         END $d$"
    ))
    .unwrap();
}

/// CPU ticks, voluntary context switches and the exact duration of a 60-second window of `pid`,
/// measured on a thread so the window is 60 s whatever the main thread does meanwhile.
fn idle_window(pid: i32) -> std::thread::JoinHandle<(u64, u64, Duration)> {
    std::thread::spawn(move || {
        let (t0, s0, start) = (cpu_ticks(pid), ctx_switches(pid), Instant::now());
        std::thread::sleep(Duration::from_secs(60));
        (cpu_ticks(pid) - t0, ctx_switches(pid) - s0, start.elapsed())
    })
}

fn fmt_ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2} s", v / 1000.0)
    } else {
        format!("{v:.1} ms")
    }
}

fn version(c: &mut Client, ext: &str) -> String {
    c.query_opt(
        "SELECT extversion FROM pg_extension WHERE extname = $1",
        &[&ext],
    )
    .unwrap()
    .map_or("?".into(), |r| r.get(0))
}

fn worker_pid(c: &mut Client, backend_type: &str) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(r) = c
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE backend_type = $1",
                &[&backend_type],
            )
            .unwrap()
        {
            return r.get(0);
        }
        assert!(Instant::now() < deadline, "no {backend_type} process");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wait_count(c: &mut Client, system: &str, scenario: &str, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let have: i64 = c
            .query_one(
                "SELECT count(*) FROM bench.lag WHERE system = $1 AND scenario = $2",
                &[&system, &scenario],
            )
            .unwrap()
            .get(0);
        if have >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{system} {scenario}: only {have} of {n} runs"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// utime + stime in clock ticks (/proc/PID/stat fields 14 and 15) of `pid` ("self", a PID, or
/// "PID/task/TID" for one thread); None where unreadable.
fn stat_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// CPU seconds (user and system) used so far by `pid` (as in `stat_ticks`), 0 where unreadable.
fn cpu_s(pid: &str) -> f64 {
    stat_ticks(pid).unwrap_or(0) as f64 / ticks_per_second()
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    stat_ticks(&pid.to_string()).expect("read /proc stat")
}

fn ctx_switches(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn ticks_per_second() -> f64 {
    100.0 // USER_HZ on Linux
}
