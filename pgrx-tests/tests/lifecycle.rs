//! End-to-end: the server's life cycle around pg_pulse: crashes, immediate shutdowns, downtime,
//! configuration reloads, hot standby and promotion. These tests restart the shared test server,
//! so they run one at a time (a lock), in their own test binary (cargo runs binaries one by one).
mod common;
use common::*;
use postgres::fallible_iterator::FallibleIterator;
use std::sync::Mutex;
use std::time::Duration;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Start a long run and wait until it is `running`; returns (run_id, executor pid).
fn start_long_run(c: &mut postgres::Client, job: &str) -> (i64, i32) {
    c.query_one(
        "SELECT pulse.schedule_job($1, '@yearly', 'SELECT pg_sleep(120)')",
        &[&job],
    )
    .unwrap();
    let run = run_job(c, job);
    let pid = wait_for(60, "the run to start", || {
        let row = c
            .query_one(
                "SELECT status, executor_pid FROM pulse.job_runs WHERE run_id = $1",
                &[&run],
            )
            .unwrap();
        // a run handed to a new executor names it once the executor has connected
        (row.get::<_, String>(0) == "running")
            .then(|| row.get::<_, Option<i32>>(1))
            .flatten()
    });
    (run, pid)
}

/// The scheduler's process id.
fn scheduler_pid(c: &mut postgres::Client) -> i32 {
    wait_for(60, "the scheduler", || {
        c.query_opt(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_pulse scheduler'",
            &[],
        )
        .unwrap()
        .map(|r| r.get(0))
    })
}

fn assert_failed_by_restart(job: &str, run: i64) {
    let mut c = admin();
    let (status, msg) = wait_run_final(&mut c, run);
    assert_eq!(status, "failed");
    assert!(msg.unwrap().contains("server restarted"));
    // The scheduler is back and runs jobs again.
    c.query_one("SELECT pulse.alter_job($1, command => 'SELECT 1')", &[&job])
        .unwrap();
    let again = run_job(&mut c, &job);
    assert_eq!(wait_run_final(&mut c, again).0, "succeeded");
    c.query_one("SELECT pulse.unschedule_job($1)", &[&job])
        .unwrap();
}

#[test]
fn kill_9_of_an_executor_leaves_no_run_running() {
    let _jobs = Jobs::new();
    let _g = serial();
    let mut c = admin();
    let job = unique("killed");
    let (run, pid) = start_long_run(&mut c, &job);
    let scheduler = scheduler_pid(&mut c);
    drop(c);
    // SIGKILL of a backend makes the postmaster reset all processes (crash recovery).
    unsafe {
        assert_eq!(libc_kill(pid, 9), 0);
    }
    // Wait until the postmaster has reaped it (and so begun its crash restart) before reconnecting.
    wait_for(60, "the killed executor to be gone", || unsafe {
        (libc_kill(pid, 0) != 0).then_some(())
    });
    // The reset is over when a session gets in again and a new scheduler has started.
    wait_for(60, "the crash restart to finish", || {
        let mut s = postgres::Client::connect(
            &format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres",
                port()
            ),
            postgres::NoTls,
        )
        .ok()?;
        let now: i32 = s
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_pulse scheduler'",
                &[],
            )
            .ok()??
            .get(0);
        (now != scheduler).then_some(())
    });
    assert_failed_by_restart(&job, run);
}

#[test]
fn http_requests_in_flight_at_a_crash_are_sent_again() {
    let _g = serial();
    let srv = pulse_e2e::server::Server::start();
    let mut c = admin();
    let path = format!("/slow/2500?{}", unique("inflight"));
    let id: i64 = c
        .query_one(
            "SELECT pulse.http(pulse.http_request('POST', $1, timeout => '20 seconds'))",
            &[&srv.url(&path)],
        )
        .unwrap()
        .get(0);
    // in flight: the server has it and has not answered yet
    srv.wait_for(&path, 1, Duration::from_secs(30));
    drop(c);
    pgctl(&["restart", &pgdata(), "immediate"]);
    let mut c = admin();
    let (state, code, _) = wait_request_final(&mut c, id);
    assert_eq!((state.as_str(), code), ("succeeded", Some(200)));
    assert_eq!(srv.seen(&path).len(), 2, "sent again after the crash");
    // (the claim that counted the first attempt commits asynchronously: a crash may lose it, and
    // the request, which is what matters, is sent again either way)
    let attempts: i32 = c
        .query_one(
            "SELECT attempts FROM pulse.http_requests WHERE id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert!((1..=2).contains(&attempts), "{attempts}");
}

#[test]
fn immediate_shutdown_mid_run_leaves_no_run_running() {
    let _jobs = Jobs::new();
    let _g = serial();
    let mut c = admin();
    let job = unique("immediate");
    let (run, _) = start_long_run(&mut c, &job);
    drop(c);
    pgctl(&["restart", &pgdata(), "immediate"]);
    assert_failed_by_restart(&job, run);
}

#[test]
fn downtime_runs_a_missed_job_once_not_once_per_slot() {
    let _jobs = Jobs::new();
    let _g = serial();
    let mut c = admin();
    let job = unique("missed");
    c.query_one(
        "SELECT pulse.schedule_job($1, '1 seconds', 'SELECT 1')",
        &[&job],
    )
    .unwrap();
    wait_for(60, "the job to run", || {
        (count_runs(&mut c, &job, "succeeded") >= 1).then_some(())
    });
    drop(c);
    pgctl(&["stop", &pgdata()]);
    std::thread::sleep(Duration::from_secs(4)); // four slots pass while the server is down
    pgctl(&["restart", &pgdata()]);
    let mut c = admin();
    // Wait for two runs created after the restart.
    wait_for(60, "runs after the restart", || {
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM pulse.job_runs
                  WHERE job_name = $1 AND created_at >= pg_postmaster_start_time()",
                &[&job],
            )
            .unwrap()
            .get(0);
        (n >= 2).then_some(())
    });
    c.query_one("SELECT pulse.toggle_job($1, false)", &[&job])
        .unwrap();
    let row = c
        .query_one(
            "SELECT count(*) FILTER (WHERE created_at >= pg_postmaster_start_time()
                                       AND scheduled_for < pg_postmaster_start_time()),
                    count(*), count(DISTINCT scheduled_for)
               FROM pulse.job_runs WHERE job_name = $1",
            &[&job],
        )
        .unwrap();
    assert_eq!(
        row.get::<_, i64>(0),
        1,
        "the missed slots produce one catch-up run"
    );
    assert_eq!(
        row.get::<_, i64>(1),
        row.get::<_, i64>(2),
        "one run per slot"
    );
    wait_idle(&mut c, &job);
    c.query_one("SELECT pulse.unschedule_job($1)", &[&job])
        .unwrap();
}

#[test]
fn sighup_reloads_max_running_jobs() {
    let _jobs = Jobs::new();
    let _g = serial();
    let mut c = admin();
    let scheduler = |c: &mut postgres::Client| -> i32 {
        wait_for(60, "the scheduler", || {
            c.query_opt(
                "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_pulse scheduler'",
                &[],
            )
            .unwrap()
            .map(|r| r.get(0))
        })
    };
    let before = scheduler(&mut c);
    set_system(&mut c, &[("pulse.max_running_jobs", "1")]);
    let slow = unique("serial_slow");
    let fast = unique("serial_fast");
    c.query_one(
        "SELECT pulse.schedule_job($1, '@yearly', 'SELECT pg_sleep(1.5)')",
        &[&slow],
    )
    .unwrap();
    c.query_one(
        "SELECT pulse.schedule_job($1, '@yearly', 'SELECT 1')",
        &[&fast],
    )
    .unwrap();
    let a = run_job(&mut c, &slow);
    let b = run_job(&mut c, &fast);
    assert_eq!(wait_run_final(&mut c, a).0, "succeeded");
    assert_eq!(wait_run_final(&mut c, b).0, "succeeded");
    let serialised: bool = c
        .query_one(
            "SELECT (SELECT started_at FROM pulse.job_runs WHERE run_id = $2)
                 >= (SELECT finished_at FROM pulse.job_runs WHERE run_id = $1)",
            &[&a, &b],
        )
        .unwrap()
        .get(0);
    assert!(
        serialised,
        "with pulse.max_running_jobs = 1 runs do not overlap"
    );
    assert_eq!(
        before,
        scheduler(&mut c),
        "a reload does not restart the scheduler"
    );

    // With one executor, consecutive runs share a process: no session state leaks between them.
    let table = unique("session_t");
    c.batch_execute(&format!("CREATE TABLE {table}(work_mem text)"))
        .unwrap();
    let temp = unique("temp_user");
    let probe = unique("probe");
    c.query_one(
        "SELECT pulse.schedule_job($1, '@yearly', 'CREATE TEMP TABLE scratch(x int); SET work_mem = ''77MB''')",
        &[&temp],
    )
    .unwrap();
    c.query_one(
        "SELECT pulse.schedule_job($1, '@yearly', $2)",
        &[
            &probe,
            &format!("INSERT INTO {table} VALUES (current_setting('work_mem'))"),
        ],
    )
    .unwrap();
    for job in [&temp, &temp, &probe] {
        let run = run_job(&mut c, job);
        assert_eq!(wait_run_final(&mut c, run).0, "succeeded", "{job}");
    }
    let wm: String = c
        .query_one(&format!("SELECT work_mem FROM {table}"), &[])
        .unwrap()
        .get(0);
    assert_ne!(wm, "77MB");
    for j in [&temp, &probe] {
        c.query_one("SELECT pulse.unschedule_job($1)", &[j])
            .unwrap();
    }
    reset_system(&mut c, &["pulse.max_running_jobs"]);
    for j in [&slow, &fast] {
        c.query_one("SELECT pulse.unschedule_job($1)", &[j])
            .unwrap();
    }
}

#[test]
fn hot_standby_runs_nothing_until_promoted() {
    let _jobs = Jobs::new();
    let _g = serial();
    let mut c = admin();
    let job = unique("standby");
    let table = unique("standby_t");
    c.batch_execute(&format!("CREATE TABLE {table}(at timestamptz)"))
        .unwrap();
    c.query_one(
        "SELECT pulse.schedule_job($1, '1 seconds', $2)",
        &[&job, &format!("INSERT INTO {table} VALUES (now())")],
    )
    .unwrap();
    let dir = format!("{}_standby", pgdata());
    let standby_port = port() + 100;
    let _ = std::fs::remove_dir_all(&dir);
    let bin = pg_bin();
    let as_pg = |args: &[&str]| {
        let st = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .args(args)
            .status()
            .expect("runuser");
        assert!(st.success(), "{args:?} failed");
    };
    std::fs::create_dir_all(&dir).unwrap();
    for cmd in [["chown", "postgres:postgres"], ["chmod", "700"]] {
        let st = std::process::Command::new(cmd[0])
            .args([cmd[1], &dir])
            .status()
            .unwrap();
        assert!(st.success());
    }
    let p = port().to_string();
    as_pg(&[
        &format!("{bin}/pg_basebackup"),
        "-h",
        "127.0.0.1",
        "-p",
        &p,
        "-U",
        "postgres",
        "-D",
        &dir,
        "-R",
        "-X",
        "stream",
    ]);
    let conf = format!("{dir}/postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str(&format!("\nport = {standby_port}\n"));
    std::fs::write(&conf, text).unwrap();
    as_pg(&[
        &format!("{bin}/pg_ctl"),
        "-D",
        &dir,
        "-l",
        &format!("{dir}/server.log"),
        "-w",
        "start",
    ]);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut s = connect_port("postgres", standby_port);
        let in_recovery: bool = s
            .query_one("SELECT pg_is_in_recovery()", &[])
            .unwrap()
            .get(0);
        assert!(in_recovery);
        // Reading works on the standby, but no scheduler runs and nothing can be changed.
        let n: i64 = s
            .query_one(
                "SELECT count(*) FROM pulse.jobs WHERE job_name = $1",
                &[&job],
            )
            .unwrap()
            .get(0);
        assert_eq!(n, 1);
        // Nothing to wait on for an absence: a worker allowed on a standby would be running
        // within moments of it accepting connections, so a short bounded window.
        std::thread::sleep(Duration::from_secs(2));
        let workers: i64 = s
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'pg_pulse%'",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(workers, 0, "no pg_pulse worker on a hot standby");
        expect_error(s.query_one("SELECT pulse.run_job($1)", &[&job]), "25006");
        // Stop the primary's copy of the job, then promote: the standby's scheduler takes over.
        c.query_one("SELECT pulse.toggle_job($1, false)", &[&job])
            .unwrap();
        let promoted_at: String = c.query_one("SELECT now()::text", &[]).unwrap().get(0);
        wait_for(60, "the standby to replay the toggle", || {
            let e: bool = s
                .query_one(
                    "SELECT enabled FROM pulse.jobs WHERE job_name = $1",
                    &[&job],
                )
                .unwrap()
                .get(0);
            (!e).then_some(())
        });
        s.batch_execute("SELECT pg_promote(true, 60)").unwrap();
        s.query_one("SELECT pulse.toggle_job($1, true)", &[&job])
            .unwrap();
        wait_for(60, "a run on the promoted server", || {
            let n: i64 = s
                .query_one(
                    &format!("SELECT count(*) FROM {table} WHERE at > $1::text::timestamptz"),
                    &[&promoted_at],
                )
                .unwrap()
                .get(0);
            (n >= 1).then_some(())
        });
    }));
    as_pg(&[
        &format!("{bin}/pg_ctl"),
        "-D",
        &dir,
        "-m",
        "fast",
        "-w",
        "stop",
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    c.query_one("SELECT pulse.unschedule_job($1)", &[&job])
        .unwrap();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn without_preloading_or_in_another_database_calls_fail_with_a_hint() {
    let _jobs = Jobs::new();
    let _g = serial();
    // Another database than pulse.database_name on the test server.
    let mut c = admin();
    let db = unique("otherdb");
    c.batch_execute(&format!("CREATE DATABASE {db}")).unwrap();
    let result = std::panic::catch_unwind(|| {
        let mut o = postgres::Client::connect(
            &format!("host=127.0.0.1 port={} user=postgres dbname={db}", port()),
            postgres::NoTls,
        )
        .unwrap();
        o.batch_execute("CREATE EXTENSION pg_pulse").unwrap();
        let (msg, hint) = expect_error(
            o.query_one("SELECT pulse.schedule_job('x', '@daily', 'SELECT 1')", &[]),
            "55000",
        );
        assert!(
            msg.contains("postgres") && hint.contains("pulse.database_name"),
            "{msg} / {hint}"
        );
        // Previewing schedules needs no scheduler.
        let n = o
            .query("SELECT * FROM pulse.next_runs('@daily')", &[])
            .unwrap()
            .len();
        assert_eq!(n, 5);
    });
    c.batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .unwrap();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }

    // A server that does not preload pg_pulse.
    let dir = format!("{}_nopreload", pgdata());
    let p = port() + 200;
    pgctl(&["stop", &dir]);
    let _ = std::fs::remove_dir_all(&dir);
    pgctl(&[
        "start",
        &dir,
        &p.to_string(),
        "shared_preload_libraries = ''",
    ]);
    let result = std::panic::catch_unwind(|| {
        let mut n = connect_port("postgres", p);
        n.batch_execute("CREATE EXTENSION pg_pulse").unwrap();
        let (_, hint) = expect_error(
            n.query_one("SELECT pulse.schedule_job('x', '@daily', 'SELECT 1')", &[]),
            "55000",
        );
        assert!(hint.contains("shared_preload_libraries"), "{hint}");
    });
    pgctl(&["stop", &dir]);
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// Runs due together, one executor: the scheduler hands it several runs ahead, and it goes from
/// run to run. Each run still runs exactly once, in its own transaction, with no session state
/// from the previous one (settings, temporary tables), as the job's owner.
#[test]
fn runs_due_together_run_once_each_in_a_clean_session() {
    let _jobs = Jobs::new();
    let _g = serial();
    let mut c = admin();
    set_system(&mut c, &[("pulse.max_running_jobs", "1")]);
    let table = unique("chain_t");
    c.batch_execute(&format!(
        "CREATE TABLE {table}(job text, pid int, work_mem text, scratch boolean, role name)"
    ))
    .unwrap();
    let probe = format!(
        "INSERT INTO {table} SELECT r.job_name, pg_backend_pid(), current_setting('work_mem'),
                pg_catalog.to_regclass('pg_temp.scratch') IS NOT NULL, current_user
           FROM pulse.current_run() r"
    );
    let prefix = unique("chain");
    // queued in this order (run ids follow it): each probe follows a run that could leave state
    let temp = "CREATE TEMP TABLE scratch(x int); SET work_mem = '77MB'";
    let set = "SET work_mem = '77MB'; SET search_path = pg_catalog";
    let fail = "SET work_mem = '77MB'; SELECT 1/0";
    let kinds = [
        ("temp0", temp, "succeeded"),
        ("probe0", probe.as_str(), "succeeded"),
        ("set0", set, "succeeded"),
        ("probe1", probe.as_str(), "succeeded"),
        ("fail0", fail, "failed"),
        ("probe2", probe.as_str(), "succeeded"),
        ("set1", set, "succeeded"),
        ("temp1", temp, "succeeded"),
        ("probe3", probe.as_str(), "succeeded"),
        ("fail1", fail, "failed"),
    ];
    let jobs: Vec<(String, String, &str)> = kinds
        .iter()
        .map(|(k, cmd, st)| (format!("{prefix}_{k}"), cmd.to_string(), *st))
        .collect();
    // all due at one instant, two seconds away
    let at: std::time::SystemTime = c
        .query_one(
            "SELECT date_trunc('second', now()) + interval '2 seconds'",
            &[],
        )
        .unwrap()
        .get(0);
    for (name, command, _) in &jobs {
        c.query_one(
            "SELECT pulse.schedule_once($1, $2, $3)",
            &[name, &at, command],
        )
        .unwrap();
    }
    let pattern = format!("{prefix}_%");
    let runs: Vec<(String, String, i32)> = wait_for(60, "every run to finish", || {
        let rows = c
            .query(
                "SELECT job_name, status, executor_pid FROM pulse.job_runs WHERE job_name LIKE $1",
                &[&pattern],
            )
            .unwrap();
        let done = rows.len() == jobs.len()
            && rows.iter().all(|r| {
                let s: String = r.get(1);
                s != "queued" && s != "running"
            });
        done.then(|| {
            rows.iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect()
        })
    });
    // Nothing more comes: the scheduler cleared each one-shot's next_run_at in the transaction
    // that queued its run.
    let pending: i64 = c
        .query_one(
            "SELECT count(*) FROM pulse.jobs WHERE job_name LIKE $1 AND next_run_at IS NOT NULL",
            &[&pattern],
        )
        .unwrap()
        .get(0);
    assert_eq!(pending, 0, "a one-shot job still has a next run");
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM pulse.job_runs WHERE job_name LIKE $1",
            &[&pattern],
        )
        .unwrap()
        .get(0);
    assert_eq!(n as usize, jobs.len(), "one run per job");
    for (name, _, status) in &jobs {
        let run = runs.iter().find(|r| &r.0 == name).expect("a run per job");
        assert_eq!(run.1, *status, "{name}");
    }
    // one at a time: no two runs overlapped
    let overlaps: i64 = c
        .query_one(
            "SELECT count(*) FROM pulse.job_runs a JOIN pulse.job_runs b
                 ON a.run_id < b.run_id AND a.started_at < b.finished_at AND b.started_at < a.finished_at
              WHERE a.job_name LIKE $1 AND b.job_name LIKE $1",
            &[&pattern],
        )
        .unwrap()
        .get(0);
    assert_eq!(overlaps, 0);
    // every probe ran once, in a clean session, as the job's owner
    let probes = c
        .query(
            &format!("SELECT job, work_mem, scratch, role::text FROM {table} ORDER BY job"),
            &[],
        )
        .unwrap();
    assert_eq!(probes.len(), 4);
    for p in &probes {
        assert_ne!(p.get::<_, String>(1), "77MB", "{}", p.get::<_, String>(0));
        assert!(!p.get::<_, bool>(2), "no temp table left by a previous run");
        assert_eq!(p.get::<_, String>(3), "postgres");
    }
    // one executor served them all, one session reset (as DISCARD ALL) after each run
    let pids: std::collections::HashSet<i32> = runs.iter().map(|r| r.2).collect();
    assert_eq!(pids.len(), 1, "{runs:?}");
    for (name, _, _) in &jobs {
        c.query_one("SELECT pulse.unschedule_job($1)", &[name])
            .unwrap();
    }
    reset_system(&mut c, &["pulse.max_running_jobs"]);
}

/// An idle pg_pulse assigns no transaction ids: its wake-ups (the scheduler's housekeeping, the
/// HTTP worker's checks, idle executors) commit nothing, so an idle server writes no WAL for them.
#[test]
fn an_idle_pg_pulse_assigns_no_transaction_ids() {
    let _g = serial();
    let mut c = admin();
    // housekeeping every second; autovacuum's ANALYZE would take transaction ids of its own
    set_system(
        &mut c,
        &[("pulse.overdue_after", "2"), ("autovacuum", "off")],
    );
    wait_for(60, "nothing due, queued, running or pending", || {
        let busy: bool = c
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pulse.jobs WHERE enabled AND next_run_at < now() + interval '1 minute')
                     OR EXISTS (SELECT 1 FROM pulse.job_runs WHERE status IN ('queued', 'running'))
                     OR EXISTS (SELECT 1 FROM pulse.http_requests WHERE state IN ('pending', 'sending'))
                     OR EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'autovacuum worker')",
                &[],
            )
            .unwrap()
            .get(0);
        (!busy).then_some(())
    });
    let next_xid = |c: &mut postgres::Client| -> String {
        c.query_one("SELECT pg_snapshot_xmax(pg_current_snapshot())::text", &[])
            .unwrap()
            .get(0)
    };
    let before = next_xid(&mut c);
    // longer than the HTTP worker's longest sleep (10 s): every worker wakes at least once
    std::thread::sleep(Duration::from_secs(12));
    let after = next_xid(&mut c);
    reset_system(&mut c, &["pulse.overdue_after", "autovacuum"]);
    assert_eq!(before, after, "transaction ids were assigned while idle");
}

/// Sets server settings (ALTER SYSTEM + reload), waits until this session sees them, then gives
/// the workers a moment to process their SIGHUP. Values are given in the settings' base units.
fn set_system(c: &mut postgres::Client, settings: &[(&str, &str)]) {
    for (k, v) in settings {
        c.batch_execute(&format!("ALTER SYSTEM SET {k} = '{v}'"))
            .unwrap();
    }
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    for (k, v) in settings {
        wait_for(60, &format!("the reload of {k}"), || {
            let seen: String = c
                .query_one("SELECT setting FROM pg_settings WHERE name = $1", &[k])
                .unwrap()
                .get(0);
            (seen == *v).then_some(())
        });
    }
    // the workers' own reload cannot be observed from a session: give them a moment
    std::thread::sleep(Duration::from_millis(500));
}

fn reset_system(c: &mut postgres::Client, names: &[&str]) {
    for k in names {
        c.batch_execute(&format!("ALTER SYSTEM RESET {k}")).unwrap();
    }
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    for k in names {
        wait_for(60, &format!("the reload of the reset {k}"), || {
            let reset: bool = c
                .query_one(
                    "SELECT coalesce(sourcefile, '') NOT LIKE '%postgresql.auto.conf'
                       FROM pg_settings WHERE name = $1",
                    &[k],
                )
                .unwrap()
                .get(0);
            reset.then_some(())
        });
    }
    // the workers' reload cannot be observed from a session: a short window, as in set_system
    std::thread::sleep(Duration::from_millis(300));
}

fn health_of(c: &mut postgres::Client, job: &str) -> (String, String) {
    let r = c
        .query_one(
            "SELECT health, reason FROM pulse.scheduler_health() WHERE job_name = $1",
            &[&job],
        )
        .unwrap();
    (r.get(0), r.get(1))
}

/// The alert a notification announces, if it is one of `job`'s: (event, consecutive_failures,
/// has a run id, message).
fn alert_of(
    c: &mut postgres::Client,
    payload: &str,
    job: &str,
) -> Option<(String, i32, bool, Option<String>)> {
    let id = alert_id_of(payload)?;
    c.query_opt(
        "SELECT event, consecutive_failures, run_id IS NOT NULL, message
           FROM pulse.alerts WHERE alert_id = $1 AND job_name = $2",
        &[&id, &job],
    )
    .unwrap()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
}

#[test]
fn health_states_and_one_alert_per_incident() {
    let _jobs = Jobs::new();
    let _g = serial();
    let mut c = admin();
    let mut listener = connect_as("postgres");
    listener.batch_execute("LISTEN pulse_alerts").unwrap();

    let ok = unique("h_ok");
    let bad = unique("h_bad");
    let paused = unique("h_paused");
    let never = unique("h_never");
    for (j, cmd) in [
        (&ok, "SELECT 1"),
        (&bad, "SELECT 1/0"),
        (&paused, "SELECT 1"),
        (&never, "SELECT 1"),
    ] {
        c.query_one("SELECT pulse.schedule_job($1, '@yearly', $2)", &[j, &cmd])
            .unwrap();
    }
    c.query_one("SELECT pulse.toggle_job($1, false)", &[&paused])
        .unwrap();
    let r = run_job(&mut c, &ok);
    assert_eq!(wait_run_final(&mut c, r).0, "succeeded");
    assert_eq!(health_of(&mut c, &ok).0, "healthy");
    assert_eq!(health_of(&mut c, &paused).0, "paused");
    assert_eq!(health_of(&mut c, &never).0, "never_run");

    // Five failures in a row: degraded, then failing at the threshold (3), one alert only.
    for i in 1..=5 {
        let r = run_job(&mut c, &bad);
        assert_eq!(wait_run_final(&mut c, r).0, "failed");
        let (h, why) = health_of(&mut c, &bad);
        if i < 3 {
            assert_eq!(h, "degraded", "after {i}");
        } else {
            assert_eq!(h, "failing", "after {i}");
            assert!(why.contains("division by zero"), "{why}");
        }
    }
    let row = c
        .query_one(
            "SELECT runs_24h, failures_24h, success_rate, consecutive_failures, p95_duration IS NOT NULL
               FROM pulse.scheduler_health() WHERE job_name = $1",
            &[&bad],
        )
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 5);
    assert_eq!(row.get::<_, i64>(1), 5);
    assert_eq!(row.get::<_, Option<f64>>(2), Some(0.0));
    assert_eq!(row.get::<_, i32>(3), 5);
    assert!(row.get::<_, bool>(4));
    // scheduler_status counts the failing job (every job on the server: other suites' failing
    // jobs may add to it, never take away)
    let failing: i64 = c
        .query_one("SELECT jobs_failing FROM pulse.scheduler_status()", &[])
        .unwrap()
        .get(0);
    assert!(failing >= 1, "a failing job is not counted: {failing}");
    // Recovery.
    c.query_one("SELECT pulse.alter_job($1, command => 'SELECT 2')", &[&bad])
        .unwrap();
    let r = run_job(&mut c, &bad);
    assert_eq!(wait_run_final(&mut c, r).0, "succeeded");
    assert_eq!(health_of(&mut c, &bad).0, "degraded", "5 of 6 failed today");

    // Exactly two notifications for this job: the incident and its recovery. A notification
    // is just {"alert_id": N}; the alert is read from pulse.alerts (this listener is a superuser).
    let mut events = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut quiet_until = None; // after the second: half a second more, to catch a third
    while quiet_until.is_none_or(|q| std::time::Instant::now() < q) {
        let mut payloads = Vec::new();
        {
            let mut n = listener.notifications();
            let mut it = n.timeout_iter(Duration::from_millis(200));
            while let Ok(Some(msg)) = it.next() {
                payloads.push(msg.payload().to_string());
            }
        }
        for p in payloads {
            assert!(!p.contains(&bad), "the job's name in {p}");
            if let Some(e) = alert_of(&mut c, &p, &bad) {
                events.push(e);
            }
        }
        if events.len() >= 2 && quiet_until.is_none() {
            quiet_until = Some(std::time::Instant::now() + Duration::from_millis(500));
        }
        if std::time::Instant::now() > deadline {
            break;
        }
    }
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0].0, "incident", "{events:?}");
    assert_eq!(events[0].1, 3, "{events:?}");
    assert!(events[0].2, "{events:?}");
    assert!(
        events[0]
            .3
            .as_deref()
            .is_some_and(|m| m.contains("division by zero")),
        "{events:?}"
    );
    assert_eq!(events[1].0, "recovered", "{events:?}");

    let s = c
        .query_one(
            "SELECT worker_alive, jobs_failing, verdict FROM pulse.scheduler_status()",
            &[],
        )
        .unwrap();
    assert!(s.get::<_, bool>(0));
    for j in [&ok, &bad, &paused, &never] {
        c.query_one("SELECT pulse.unschedule_job($1)", &[j])
            .unwrap();
    }
}

/// Sends SIGCONT to a stopped process when dropped (also when the test fails).
struct Continue(i32);

impl Drop for Continue {
    fn drop(&mut self) {
        unsafe {
            libc_kill(self.0, 18); // SIGCONT
        }
    }
}

#[test]
fn overdue_jobs_and_a_stuck_scheduler_are_reported() {
    let _jobs = Jobs::new();
    let _g = serial();
    let mut c = admin();
    set_system(&mut c, &[("pulse.overdue_after", "2")]);
    let job = unique("h_overdue");
    let _clean = Cleanup(vec![
        format!("SELECT pulse.unschedule_job('{job}')"),
        "ALTER SYSTEM RESET pulse.overdue_after; SELECT pg_reload_conf()".into(),
    ]);
    c.query_one(
        "SELECT pulse.schedule_job($1, '1 seconds', 'SELECT 1')",
        &[&job],
    )
    .unwrap();
    wait_for(60, "a run", || {
        (count_runs(&mut c, &job, "succeeded") > 0).then_some(())
    });
    assert_eq!(health_of(&mut c, &job).0, "healthy");
    // The scheduler stops turning (as if stuck; a stopped one is started again by the
    // postmaster): its process is there, its heartbeat is not.
    let sched: i32 = c
        .query_one("SELECT worker_pid FROM pulse.scheduler_status()", &[])
        .unwrap()
        .get(0);
    assert_eq!(unsafe { libc_kill(sched, 19) }, 0); // SIGSTOP
    let cont = Continue(sched);
    let (h, why) = wait_for(60, "the job to be overdue", || {
        let (h, why) = health_of(&mut c, &job);
        (h == "overdue").then_some((h, why))
    });
    assert_eq!(h, "overdue");
    assert!(why.contains("scheduler_status"), "{why}");
    let s = wait_for(60, "the status to see the scheduler down", || {
        let r = c
            .query_one(
                "SELECT worker_alive, jobs_overdue, verdict, http_worker_alive FROM pulse.scheduler_status()",
                &[],
            )
            .unwrap();
        (!r.get::<_, bool>(0)).then_some(r)
    });
    assert!(s.get::<_, i64>(1) >= 1);
    assert_eq!(s.get::<_, String>(2), "NEEDS_ATTENTION");
    assert!(s.get::<_, bool>(3), "the HTTP worker is alive");
    // The HTTP worker, still alive, notices and sends the overdue alert (once per job).
    wait_for(60, "the overdue alert", || {
        let log = std::fs::read_to_string(format!("{}/server.log", pgdata())).unwrap_or_default();
        (log.contains(&format!("job \"{job}\" is overdue"))
            && log.contains("the scheduler has not been running"))
        .then_some(())
    });
    // ... and pulse.alerts has it (the notification carried only its id)
    let (n, msg): (i64, Option<String>) = {
        let r = c
            .query_one(
                "SELECT count(*), max(message) FROM pulse.alerts
                  WHERE job_name = $1 AND event = 'overdue' AND run_id IS NULL",
                &[&job],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(n, 1, "one overdue alert");
    assert!(msg.unwrap_or_default().contains("has not run"));
    // The scheduler goes on; the job runs and is healthy again.
    drop(cont);
    wait_for(60, "the job to be healthy again", || {
        (health_of(&mut c, &job).0 == "healthy").then_some(())
    });
}

#[test]
fn retention_prunes_old_runs_and_log_runs_failures_keeps_only_failures() {
    let _jobs = Jobs::new();
    let _g = serial();
    let mut c = admin();
    let job = unique("h_ret");
    let id: i64 = c
        .query_one(
            "SELECT pulse.schedule_job($1, '@yearly', 'SELECT 1')",
            &[&job],
        )
        .unwrap()
        .get(0);
    // History: old successes (8 days), old failures (10 and 31 days), and recent rows.
    c.execute(
        "INSERT INTO pulse.job_run (job_id, job_name, owner, scheduled_for, created_at, started_at, finished_at, status, message)
         SELECT $1, $2, 10, t, t, t, t, s, m
           FROM (VALUES (now() - interval '8 days', 'succeeded', 'old ok'),
                        (now() - interval '10 days', 'failed', 'recent enough failure'),
                        (now() - interval '31 days', 'failed', 'old failure'),
                        (now() - interval '1 hour', 'succeeded', 'recent ok')) v(t, s, m)",
        &[&id, &job],
    )
    .unwrap();
    // Alerts are pruned like failed runs (pulse.run_retention_failed, 30 days).
    c.execute(
        "INSERT INTO pulse.alert (job_id, job_name, owner, event, message, created_at)
         SELECT $1, $2, 10, 'incident', m, now() - t
           FROM (VALUES (interval '10 days', 'recent enough alert'),
                        (interval '31 days', 'old alert')) v(t, m)",
        &[&id, &job],
    )
    .unwrap();
    set_system(&mut c, &[("pulse.overdue_after", "2")]); // housekeeping every second
    wait_for(60, "old rows to be pruned", || {
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM pulse.job_run WHERE job_id = $1 AND message IN ('old ok', 'old failure')",
                &[&id],
            )
            .unwrap()
            .get(0);
        (n == 0).then_some(())
    });
    let kept: Vec<String> = c
        .query(
            "SELECT message FROM pulse.job_run WHERE job_id = $1 ORDER BY created_at",
            &[&id],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(kept, vec!["recent enough failure", "recent ok"]);
    wait_for(60, "the old alert to be pruned", || {
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM pulse.alert WHERE job_id = $1 AND message = 'old alert'",
                &[&id],
            )
            .unwrap()
            .get(0);
        (n == 0).then_some(())
    });
    let kept: Vec<String> = c
        .query("SELECT message FROM pulse.alert WHERE job_id = $1", &[&id])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(kept, vec!["recent enough alert"]);
    c.execute("DELETE FROM pulse.alert WHERE job_id = $1", &[&id])
        .unwrap();

    // log_runs = failures: a success leaves no row, a failure does; the last run is still known.
    set_system(&mut c, &[("pulse.log_runs", "failures")]);
    let before: i64 = c
        .query_one(
            "SELECT count(*) FROM pulse.job_run WHERE job_id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    let r = run_job(&mut c, &job);
    wait_for(60, "the run to be recorded", || {
        let last: Option<i64> = c
            .query_one(
                "SELECT last_run_id FROM pulse.jobs WHERE job_id = $1",
                &[&id],
            )
            .unwrap()
            .get(0);
        (last == Some(r)).then_some(())
    });
    let after: i64 = c
        .query_one(
            "SELECT count(*) FROM pulse.job_run WHERE job_id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(before, after, "the successful run left no row");
    c.query_one(
        "SELECT pulse.alter_job($1, command => 'SELECT 1/0')",
        &[&job],
    )
    .unwrap();
    let r = run_job(&mut c, &job);
    assert_eq!(wait_run_final(&mut c, r).0, "failed");
    reset_system(&mut c, &["pulse.log_runs", "pulse.overdue_after"]);
    c.query_one("SELECT pulse.unschedule_job($1)", &[&job])
        .unwrap();
}

/// With the pool full, runs handed to an executor ahead of time do not wait behind a long run:
/// they are taken back and run by another executor of the same owner.
#[test]
fn runs_handed_ahead_do_not_wait_behind_a_long_run() {
    let _jobs = Jobs::new();
    let _g = serial();
    let mut c = admin();
    set_system(&mut c, &[("pulse.max_running_jobs", "2")]);
    let prefix = unique("ahead");
    let _jobs = Cleanup(vec![format!(
        "SELECT pulse.unschedule_job(job_name) FROM pulse.jobs WHERE job_name LIKE '{prefix}%'"
    )]);
    let at: std::time::SystemTime = c
        .query_one(
            "SELECT date_trunc('second', now()) + interval '2 seconds'",
            &[],
        )
        .unwrap()
        .get(0);
    // run ids follow this order: the long run first
    for (name, cmd) in [
        ("0_long", "SELECT pg_sleep(3)"),
        ("1_short", "SELECT 1"),
        ("2_short", "SELECT 2"),
        ("3_short", "SELECT 3"),
    ] {
        c.query_one(
            "SELECT pulse.schedule_once($1, $2, $3)",
            &[&format!("{prefix}_{name}"), &at, &cmd],
        )
        .unwrap();
    }
    let pattern = format!("{prefix}_%");
    let late: i64 = wait_for(60, "every run to finish", || {
        let r = c
            .query_one(
                "SELECT count(*) FILTER (WHERE status NOT IN ('succeeded')),
                        count(*) FILTER (WHERE job_name NOT LIKE '%long'
                                           AND finished_at >= (SELECT finished_at FROM pulse.job_runs l
                                                                WHERE l.job_name LIKE $1 AND l.job_name LIKE '%long'))
                   FROM pulse.job_runs WHERE job_name LIKE $1",
                &[&pattern],
            )
            .unwrap();
        let (unfinished, late): (i64, i64) = (r.get(0), r.get(1));
        (unfinished == 0 && count_like(&mut c, &pattern) == 4).then_some(late)
    });
    assert_eq!(late, 0, "a short run waited for the long one");
    reset_system(&mut c, &["pulse.max_running_jobs"]);
}

fn count_like(c: &mut postgres::Client, pattern: &str) -> i64 {
    c.query_one(
        "SELECT count(*) FROM pulse.job_runs WHERE job_name LIKE $1",
        &[&pattern],
    )
    .unwrap()
    .get(0)
}
