//! End-to-end: the run lifecycle around the workers: they come back after SIGTERM and on
//! `pulse.restart_workers()`; the HTTP worker across its own restarts and the server's (SIGTERM of
//! the worker, crashes around a send: HTTP job slots, after-commit requests); a locked due job
//! does not make the scheduler spin, every run ends (lost runs are rescued, an outcome that
//! cannot be recorded is recorded minimally), and one owner's backlog does not hold another's
//! runs back. These tests stop, signal or measure the shared server's workers, so they run one
//! at a time, in their own test binary (cargo runs binaries one by one).
mod common;
use common::*;
use postgres::Client;
use pulse_e2e::server::Server;
use std::sync::Mutex;
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// (scheduler alive, its pid, HTTP worker alive, its pid, verdict)
fn status(c: &mut Client) -> (bool, Option<i32>, bool, Option<i32>, String) {
    let r = c
        .query_one(
            "SELECT worker_alive, worker_pid, http_worker_alive, http_worker_pid, verdict
               FROM pulse.scheduler_status()",
            &[],
        )
        .unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))
}

/// Waits until both workers are alive; returns their pids.
fn both_alive(c: &mut Client, what: &str) -> (i32, i32) {
    wait_for(60, what, || {
        let s = status(c);
        (s.0 && s.2).then(|| (s.1.unwrap(), s.3.unwrap()))
    })
}

/// A job of the superuser that runs `SELECT 1` on demand: the scheduler works if it succeeds.
fn assert_jobs_run(c: &mut Client, job: &str) {
    let run = run_job(c, job);
    assert_eq!(wait_run_final(c, run).0, "succeeded");
}

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    // fields after the command name (which is in parentheses and may contain spaces)
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0 // USER_HZ
}

#[test]
fn workers_come_back_after_sigterm_and_on_restart_workers() {
    let _g = serial();
    let mut c = admin();
    let job = unique("back");
    let _clean = Cleanup(vec![format!("SELECT pulse.unschedule_job('{job}')")]);
    c.query_one(
        "SELECT pulse.schedule_job($1, '@yearly', 'SELECT 1')",
        &[&job],
    )
    .unwrap();
    let (sched, http) = both_alive(&mut c, "both workers");

    // pg_terminate_backend of the scheduler: the postmaster starts it again
    c.execute("SELECT pg_terminate_backend($1)", &[&sched])
        .unwrap();
    let (sched2, _) = wait_for(60, "a new scheduler", || {
        let s = status(&mut c);
        (s.0 && s.1 != Some(sched)).then(|| (s.1.unwrap(), s.3))
    });
    assert_jobs_run(&mut c, &job);

    // ... and of the HTTP worker
    c.execute("SELECT pg_terminate_backend($1)", &[&http])
        .unwrap();
    let http2 = wait_for(60, "a new HTTP worker", || {
        let s = status(&mut c);
        (s.2 && s.3 != Some(http)).then(|| s.3.unwrap())
    });

    // pulse.restart_workers(): superusers only
    let role = new_role(&mut c, "rw");
    let _r = Cleanup(vec![drop_role_sql(&role)]);
    let mut r = connect_as(&role);
    expect_error(r.query_one("SELECT pulse.restart_workers()", &[]), "42501");
    drop(r);
    let n: i32 = c
        .query_one("SELECT pulse.restart_workers()", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 2, "both workers signalled");
    wait_for(60, "both workers restarted", || {
        let s = status(&mut c);
        (s.0 && s.2 && s.1 != Some(sched2) && s.3 != Some(http2)).then_some(())
    });
    assert_jobs_run(&mut c, &job);
}

#[test]
fn a_locked_due_job_does_not_make_the_scheduler_spin() {
    let _g = serial();
    let mut c = admin();
    let job = unique("locked");
    let _clean = Cleanup(vec![format!("SELECT pulse.unschedule_job('{job}')")]);
    c.query_one(
        "SELECT pulse.schedule_job($1, '1 seconds', 'SELECT 1')",
        &[&job],
    )
    .unwrap();
    wait_for(60, "a run", || {
        (count_runs(&mut c, &job, "succeeded") > 0).then_some(())
    });
    let (sched, _) = both_alive(&mut c, "both workers");
    // another session holds the job's row (an open transaction around a management call)
    let mut holder = admin();
    holder
        .batch_execute(&format!(
            "BEGIN; SELECT pulse.alter_job('{job}', comment => 'x')"
        ))
        .unwrap();
    let before = cpu_seconds(sched);
    // the measurement: the scheduler's CPU while the row is held for 5 seconds
    std::thread::sleep(Duration::from_secs(5));
    let used = cpu_seconds(sched) - before;
    holder.batch_execute("ROLLBACK").unwrap();
    assert!(
        used < 0.5,
        "the scheduler used {used:.2} CPU seconds in 5 s while a due job's row was locked"
    );
    // once the row is free, the job runs again
    let runs = count_runs(&mut c, &job, "succeeded");
    wait_for(60, "a run after the lock", || {
        (count_runs(&mut c, &job, "succeeded") > runs).then_some(())
    });
}

#[test]
fn a_lost_run_is_rescued_through_the_finish_path() {
    let _g = serial();
    let mut c = admin();
    let job = unique("lost");
    let _clean = Cleanup(vec![format!("SELECT pulse.unschedule_job('{job}')")]);
    c.query_one(
        "SELECT pulse.schedule_job($1, '@yearly', 'SELECT 1', max_attempts => 2,
                retry_backoff => '1 hour', alert_after_failures => 1, alert => '{\"notify\": \"lost_alerts\"}')",
        &[&job],
    )
    .unwrap();
    // a run left `running` that no executor holds (what a bug or a lost report would leave)
    let run: i64 = c
        .query_one(
            "INSERT INTO pulse.job_run (job_id, job_name, owner, scheduled_for, started_at, status, trigger, kind)
             SELECT job_id, job_name, owner::oid, now() - interval '1 minute', now() - interval '1 minute',
                    'running', 'manual', 'sql'
               FROM pulse.job WHERE job_name = $1
             RETURNING run_id",
            &[&job],
        )
        .unwrap()
        .get(0);
    // (the scheduler looks for such runs at most every 5 seconds, when it is awake)
    wait_for(60, "the rescuer to fail the lost run", || {
        c.batch_execute("SELECT pulse._wake_scheduler()").unwrap();
        let st: String = c
            .query_one(
                "SELECT status FROM pulse.job_runs WHERE run_id = $1",
                &[&run],
            )
            .unwrap()
            .get(0);
        (st != "running").then_some(())
    });
    let (status, msg) = wait_run_final(&mut c, run);
    assert_eq!(status, "failed");
    assert!(msg.unwrap_or_default().contains("rescuer"));
    // the shared finish path: statistics, an alert, a retry
    let failures: i32 = c
        .query_one(
            "SELECT consecutive_failures FROM pulse.scheduler_health() WHERE job_name = $1",
            &[&job],
        )
        .unwrap()
        .get(0);
    assert_eq!(failures, 1);
    let incidents: i64 = c
        .query_one(
            "SELECT count(*) FROM pulse.alerts WHERE job_name = $1 AND event = 'incident' AND run_id = $2",
            &[&job, &run],
        )
        .unwrap()
        .get(0);
    assert_eq!(incidents, 1);
    let retries: i64 = c
        .query_one(
            "SELECT count(*) FROM pulse.job_runs WHERE job_name = $1 AND trigger = 'retry' AND attempt = 2",
            &[&job],
        )
        .unwrap()
        .get(0);
    assert_eq!(retries, 1);
}

#[test]
fn every_run_ends_even_when_its_outcome_cannot_be_recorded() {
    let _g = serial();
    let mut c = admin();
    let job = unique("unrecorded");
    let func = unique("fail_outcome");
    let _clean = Cleanup(vec![
        format!("DROP TRIGGER IF EXISTS {func} ON pulse.job_run"),
        format!("DROP FUNCTION IF EXISTS public.{func}()"),
        format!("SELECT pulse.unschedule_job('{job}')"),
    ]);
    // a long non-ASCII error message and an alert on the first failure (the case that once left
    // runs `running`: the notification was cut by characters, not bytes)
    let job_id: i64 = c
        .query_one(
            "SELECT pulse.schedule_job($1, '@yearly', $2,
                    alert_after_failures => 1, alert => '{\"notify\": \"unrecorded_alerts\"}')",
            &[
                &job,
                &"DO $$ BEGIN RAISE EXCEPTION '%', repeat('ü€', 3000); END $$",
            ],
        )
        .unwrap()
        .get(0);
    let run = run_job(&mut c, &job);
    let (status, msg) = wait_run_final(&mut c, run);
    assert_eq!(status, "failed");
    assert!(msg.unwrap_or_default().contains("ü€ü€"));
    let alerts: i64 = c
        .query_one(
            "SELECT count(*) FROM pulse.alerts WHERE job_name = $1 AND event = 'incident'",
            &[&job],
        )
        .unwrap()
        .get(0);
    assert_eq!(alerts, 1);

    // Now the transaction that records outcomes fails (a fault injected with a trigger that
    // lets only a minimal record through): the run still ends, with its status and reason.
    c.batch_execute(&format!(
        "CREATE FUNCTION public.{func}() RETURNS trigger LANGUAGE plpgsql AS $f$
         BEGIN
           IF NEW.job_id = {job_id} AND NEW.status <> 'running'
              AND NEW.message NOT LIKE '%recorded only this outcome%' THEN
             RAISE EXCEPTION 'injected: the outcome transaction fails';
           END IF;
           RETURN NEW;
         END $f$;
         CREATE TRIGGER {func} BEFORE UPDATE ON pulse.job_run FOR EACH ROW EXECUTE FUNCTION public.{func}();"
    ))
    .unwrap();
    c.query_one(
        "SELECT pulse.alter_job($1, command => 'SELECT 1/0')",
        &[&job],
    )
    .unwrap();
    let run = run_job(&mut c, &job);
    let (status, msg) = wait_run_final(&mut c, run);
    let msg = msg.unwrap_or_default();
    assert_eq!(status, "failed");
    assert!(msg.contains("division by zero"), "{msg}");
    assert!(
        msg.contains("injected: the outcome transaction fails"),
        "{msg}"
    );
    c.batch_execute(&format!("DROP TRIGGER {func} ON pulse.job_run"))
        .unwrap();
    // nothing is left behind: the next run of the job runs (not skipped behind a stuck one)
    c.query_one("SELECT pulse.alter_job($1, command => 'SELECT 1')", &[&job])
        .unwrap();
    assert_jobs_run(&mut c, &job);
}

#[test]
fn one_owners_backlog_does_not_hold_back_another_owners_run() {
    let _g = serial();
    let mut c = admin();
    let (a, b) = (new_role(&mut c, "busy"), new_role(&mut c, "lone"));
    let (ja, jb) = (unique("backlog"), unique("lone"));
    let _clean = Cleanup(vec![
        unschedule_as_sql(&a, &ja),
        unschedule_as_sql(&b, &jb),
        drop_role_sql(&a),
        drop_role_sql(&b),
    ]);
    let mut ca = connect_as(&a);
    ca.query_one(
        "SELECT pulse.schedule_job($1, '@yearly', 'SELECT pg_sleep(0.5)', overlap => 'allow')",
        &[&ja],
    )
    .unwrap();
    // 40 runs of half a second for 8 executors: about 2.5 seconds of backlog
    ca.batch_execute(&format!(
        "BEGIN; SELECT pulse.run_job('{ja}') FROM generate_series(1, 40); COMMIT"
    ))
    .unwrap();
    wait_for(60, "the backlog to start", || {
        (count_runs(&mut c, &ja, "running") > 0).then_some(())
    });
    let mut cb = connect_as(&b);
    cb.query_one(
        "SELECT pulse.schedule_job($1, '@yearly', 'SELECT 1')",
        &[&jb],
    )
    .unwrap();
    let rb = run_job(&mut cb, &jb);
    let (status, _) = wait_run_final(&mut cb, rb);
    assert_eq!(status, "succeeded");
    wait_idle(&mut c, &ja);
    // first come, first served would start all 40 before b's run; a fair share starts it after
    // the runs already in the executors' hands
    let after: i64 = c
        .query_one(
            "SELECT count(*) FROM pulse.job_runs
              WHERE job_name = $1 AND started_at > (SELECT started_at FROM pulse.job_runs WHERE run_id = $2)",
            &[&ja, &rb],
        )
        .unwrap()
        .get(0);
    assert!(
        after >= 16,
        "only {after} of the 40 runs started after the other owner's run"
    );
}

#[test]
fn cancel_run_stops_only_the_run_it_names() {
    let _g = serial();
    let mut c = admin();
    let job = unique("cancel_one");
    let _clean = Cleanup(vec![format!("SELECT pulse.unschedule_job('{job}')")]);
    c.query_one(
        "SELECT pulse.schedule_job($1, '@yearly', 'SELECT pg_sleep(0.03)', overlap => 'allow')",
        &[&job],
    )
    .unwrap();
    // runs back to back on the same executors: a cancel that lands late would hit the next one
    let ids: Vec<i64> = c
        .query(
            &format!("SELECT pulse.run_job('{job}') FROM generate_series(1, 40)"),
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut asked = std::collections::HashSet::new();
    for &id in &ids {
        let status = wait_for(60, "the run to leave the queue", || {
            let st: String = c
                .query_one(
                    "SELECT status FROM pulse.job_runs WHERE run_id = $1",
                    &[&id],
                )
                .unwrap()
                .get(0);
            (st != "queued").then_some(st)
        });
        if status == "running" {
            let _: bool = c
                .query_one("SELECT pulse.cancel_run($1)", &[&id])
                .unwrap()
                .get(0);
            asked.insert(id);
        }
    }
    wait_idle(&mut c, &job);
    assert!(!asked.is_empty(), "some runs were cancelled while running");
    for r in c
        .query(
            "SELECT run_id, status FROM pulse.job_runs WHERE job_name = $1",
            &[&job],
        )
        .unwrap()
    {
        let (id, status): (i64, String) = (r.get(0), r.get(1));
        if status == "cancelled" {
            assert!(
                asked.contains(&id),
                "run {id} was cancelled, but cancel_run named others"
            );
        } else {
            assert_eq!(status, "succeeded", "run {id}");
        }
    }
}

/// `pulse.overdue_after` for the test server (None: back to the server's file), reloaded.
fn set_overdue_after(c: &mut Client, secs: Option<i32>) {
    let sql = match secs {
        Some(s) => format!("ALTER SYSTEM SET pulse.overdue_after = {s}"),
        None => "ALTER SYSTEM RESET pulse.overdue_after".to_string(),
    };
    c.batch_execute(&sql).unwrap();
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    let want = secs.map_or("60".to_string(), |s| s.to_string());
    wait_for(60, "the reload of pulse.overdue_after", || {
        let seen: String = c
            .query_one(
                "SELECT setting FROM pg_settings WHERE name = 'pulse.overdue_after'",
                &[],
            )
            .unwrap()
            .get(0);
        (seen == want).then_some(())
    });
    // (the workers read it at their next wake-up: no session can see that)
    std::thread::sleep(Duration::from_millis(500));
}

/// Found by the hostile review (it stalled every role's slots and overdue alerts). A role leaves `pulse.unschedule_job(own_job)` uncommitted. The cascaded delete
/// locks its `pulse.job_stats` row, and the job stays due (its job row is locked, so the
/// scheduler skips it) and becomes overdue. The scheduler's overdue check does
/// `INSERT INTO pulse.job_stats ... ON CONFLICT DO UPDATE` with no NOWAIT: every housekeeping
/// pass blocks for lock_timeout (5 s), delaying every role's due slots, and then aborts the
/// whole overdue check, so no role gets an overdue alert while the lock is held.
#[test]
fn an_open_unschedule_stalls_the_scheduler_and_suppresses_everyones_overdue_alerts() {
    let _g = serial();
    let _jobs = Jobs::new();
    let mut a = admin();
    set_overdue_after(&mut a, Some(3));
    let evil = new_role(&mut a, "rv_evil");
    let victim = new_role(&mut a, "rv_victim");
    let table = unique("rv_ticks");
    let _cleanup = Cleanup(vec![
        "ALTER SYSTEM RESET pulse.overdue_after; SELECT pg_reload_conf();".into(),
        format!("DROP TABLE IF EXISTS public.{table}"),
        drop_role_sql(&evil),
        drop_role_sql(&victim),
    ]);
    a.batch_execute(&format!(
        "CREATE TABLE public.{table} (at timestamptz DEFAULT clock_timestamp());
         GRANT INSERT ON public.{table} TO {victim};"
    ))
    .unwrap();
    let mut v = connect_as(&victim);
    let tick = unique("rv_tick");
    v.execute(
        "SELECT pulse.schedule_job($1, '1 seconds', $2)",
        &[&tick, &format!("INSERT INTO public.{table} DEFAULT VALUES")],
    )
    .unwrap();
    // the victim's own job that becomes overdue in a way of the victim's own (its row held by a
    // long migration of the victim's): it deserves one overdue alert
    let late = unique("rv_late");
    v.execute(
        "SELECT pulse.schedule_job($1, '1 seconds', 'SELECT 1')",
        &[&late],
    )
    .unwrap();
    let mut e = connect_as(&evil);
    let ej = unique("rv_evil_job");
    e.execute(
        "SELECT pulse.schedule_job($1, '1 seconds', 'SELECT 1')",
        &[&ej],
    )
    .unwrap();
    wait_for(60, "the jobs to run", || {
        (count_runs(&mut a, &ej, "succeeded") > 0 && count_runs(&mut a, &late, "succeeded") > 0)
            .then_some(())
    });

    // the attack: one open transaction
    // (RV_CONTROL=1: without the attack, the test passes)
    e.batch_execute("BEGIN").unwrap();
    if std::env::var("RV_CONTROL").is_err() {
        e.execute("SELECT pulse.unschedule_job($1)", &[&ej])
            .unwrap();
    }
    // the victim's migration
    let mut v2 = connect_as(&victim);
    v2.batch_execute("BEGIN").unwrap();
    v2.execute(
        "SELECT pulse.alter_job($1, comment => 'migrating')",
        &[&late],
    )
    .unwrap();

    let count = |a: &mut Client| -> i64 {
        a.query_one(&format!("SELECT count(*) FROM public.{table}"), &[])
            .unwrap()
            .get(0)
    };
    let before = count(&mut a);
    let t0 = Instant::now();
    // the measurement: what the victim's jobs get while both transactions are open
    std::thread::sleep(Duration::from_secs(8));
    let ticks = count(&mut a) - before;
    let alerts: i64 = a
        .query_one(
            "SELECT count(*) FROM pulse.alert WHERE job_name = $1 AND event = 'overdue'",
            &[&late],
        )
        .unwrap()
        .get(0);
    let secs = t0.elapsed().as_secs();
    let _ = e.batch_execute("ROLLBACK");
    let _ = v2.batch_execute("ROLLBACK");
    set_overdue_after(&mut a, None);
    let _ = e.execute("SELECT pulse.unschedule_job($1)", &[&ej]);
    assert!(
        ticks >= (secs as i64) * 3 / 4 && alerts >= 1,
        "another role's open transaction: the victim's 1-second job ran {ticks} times in {secs} s, \
         and the victim's overdue job got {alerts} overdue alert(s)"
    );
}

/// Found by the hostile review (the lone request waited 34.6 s). HTTP runs had no per-owner in-flight cap (only after-commit requests do), and the
/// worker claims nothing while fewer than CLAIM_BATCH / 2 of its MAX_IN_FLIGHT (2000) places are
/// free. One owner's 2,100 slow HTTP runs (pulse.run_job in a loop) fill all 2,000 places, and
/// another owner's after-commit request is not even claimed until 250 of them have finished.
#[test]
fn one_owners_http_runs_hold_another_owners_request_back() {
    let _g = serial();
    let _jobs = Jobs::new();
    let srv = Server::start();
    let mut a = admin();
    let evil = new_role(&mut a, "rv_hevil");
    let victim = new_role(&mut a, "rv_hvictim");
    let job = unique("rv_hjob");
    let _cleanup = Cleanup(vec![
        unschedule_as_sql(&evil, &job),
        // the runs being sent: stopped (they fail at the worker's start)
        "SELECT pulse.restart_workers(); SELECT pg_sleep(3);".into(),
        drop_role_sql(&evil),
        drop_role_sql(&victim),
    ]);
    let mut e = connect_as(&evil);
    e.execute(
        "SELECT pulse.schedule_job($1, '0 0 1 1 *',
                http => pulse.http_request('GET', $2, timeout => '60 s'), overlap => 'allow')",
        &[&job, &srv.url("/slow/2000")],
    )
    .unwrap();
    e.execute(
        "SELECT pulse.run_job($1) FROM generate_series(1, 2100)",
        &[&job],
    )
    .unwrap();
    // (an owner may hold a share of the worker's in-flight room: about 1,000 of these)
    wait_for(60, "the HTTP worker to claim the backlog", || {
        let n = count_runs(&mut e, &job, "running");
        (n >= 900).then_some(())
    });
    let mut v = connect_as(&victim);
    let path = format!("/ok/{}", unique("rv_lone"));
    let t0 = Instant::now();
    let id: i64 = v
        .query_one("SELECT pulse.http_get($1)", &[&srv.url(&path)])
        .unwrap()
        .get(0);
    let waited = loop {
        let state: String = v
            .query_one(
                "SELECT state FROM pulse.http_requests WHERE id = $1",
                &[&id],
            )
            .unwrap()
            .get(0);
        if state != "pending" && state != "sending" {
            break t0.elapsed();
        }
        if t0.elapsed() > Duration::from_secs(150) {
            break t0.elapsed();
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = e.execute("SELECT pulse.unschedule_job($1)", &[&job]);
    assert!(
        waited < Duration::from_secs(10),
        "a lone request of another owner waited {:.1} s behind one owner's HTTP runs",
        waited.as_secs_f64()
    );
}

// ---- the HTTP worker across restarts ----

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

fn http_worker_pid(c: &mut Client) -> Option<i32> {
    c.query_opt(
        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_pulse http'",
        &[],
    )
    .unwrap()
    .map(|r| r.get(0))
}

#[test]
fn the_http_worker_comes_back_after_sigterm() {
    let _g = serial();
    let srv = Server::start();
    let mut c = admin();
    let old = wait_for(60, "the HTTP worker", || http_worker_pid(&mut c));
    let stopped: bool = c
        .query_one("SELECT pg_terminate_backend($1)", &[&old])
        .unwrap()
        .get(0);
    assert!(stopped);
    wait_for(30, "the stopped HTTP worker to exit", || unsafe {
        (libc_kill(old, 0) != 0).then_some(())
    });
    // a request committed after it exited is sent by the worker the postmaster starts again
    let path = format!("/ok/{}", unique("after_sigterm"));
    let id: i64 = c
        .query_one("SELECT pulse.http_post($1, '{}')", &[&srv.url(&path)])
        .unwrap()
        .get(0);
    let (state, code, _) = wait_request_final(&mut c, id);
    assert_eq!((state.as_str(), code), ("succeeded", Some(200)));
    assert_eq!(srv.seen(&path).len(), 1);
    let new = http_worker_pid(&mut c).expect("an HTTP worker");
    assert_ne!(new, old);
}

/// Stops the server the way `pg_ctl stop -m immediate` does (SIGQUIT to the postmaster) at a
/// precise instant, waits until it is gone, and starts it again.
fn immediate_restart_now() {
    let pidfile = std::fs::read_to_string(format!("{}/postmaster.pid", pgdata()))
        .expect("read postmaster.pid");
    let pm: i32 = pidfile.lines().next().unwrap().trim().parse().unwrap();
    unsafe {
        assert_eq!(libc_kill(pm, 3), 0, "SIGQUIT to the postmaster");
    }
    wait_for(60, "the postmaster to exit", || unsafe {
        (libc_kill(pm, 0) != 0).then_some(())
    });
    pgctl(&["start", &pgdata(), &port().to_string()]);
}

/// Sleeps until `ms` milliseconds past the next whole second (wall clock, as the scheduler's).
fn sleep_until_past_second(ms: u32) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let into = now.subsec_nanos() as u64;
    let target = 1_000_000_000 + ms as u64 * 1_000_000;
    std::thread::sleep(Duration::from_nanos(target - into));
}

#[test]
fn an_http_job_slot_is_sent_at_most_once_across_crashes() {
    let _g = serial();
    let srv = Server::start();
    let mut c = admin();
    let job = unique("http_slots");
    let _cleanup = Cleanup(vec![format!("SELECT pulse.unschedule_job('{job}')")]);
    let prefix = format!("/ok/{job}/");
    c.execute(
        "SELECT pulse.schedule_job($1, '1 seconds', http => pulse.http_request('GET', $2))",
        &[
            &job,
            &srv.url(&format!("{prefix}{{{{run_id}}}}/{{{{scheduled_for}}}}")),
        ],
    )
    .unwrap();
    for round in 0..3 {
        // the job is being sent again (after the previous restart)
        let n = srv.seen(&prefix).len();
        wait_for(60, &format!("a delivery before crash {round}"), || {
            (srv.seen(&prefix).len() > n).then_some(())
        });
        drop(c);
        sleep_until_past_second(2);
        immediate_restart_now();
        c = admin();
    }
    let n = srv.seen(&prefix).len();
    wait_for(60, "a delivery after the last crash", || {
        (srv.seen(&prefix).len() > n).then_some(())
    });
    c.execute("SELECT pulse.toggle_job($1, false)", &[&job])
        .unwrap();
    wait_idle(&mut c, &job);
    let mut slots = std::collections::HashMap::<String, Vec<i64>>::new();
    for s in srv.seen(&prefix) {
        let rest = s.path.strip_prefix(&prefix).unwrap();
        let (run, slot) = rest.split_once('/').unwrap();
        let run: i64 = run.parse().unwrap();
        // every delivery has its run row, for that very slot
        let same: Option<bool> = c
            .query_opt(
                "SELECT scheduled_for = $2::text::timestamptz FROM pulse.job_run WHERE run_id = $1",
                &[&run, &slot],
            )
            .unwrap()
            .map(|r| r.get(0));
        assert_eq!(same, Some(true), "run {run} for slot {slot} has no run row");
        slots.entry(slot.to_string()).or_default().push(run);
    }
    let twice: Vec<_> = slots.iter().filter(|(_, runs)| runs.len() > 1).collect();
    assert!(twice.is_empty(), "slots sent more than once: {twice:?}");
}

/// (attempts, interrupted, state) of after-commit requests whose URL contains `key`, by id.
fn requests_of(c: &mut Client, key: &str) -> Vec<(i64, i32, i32, String)> {
    c.query(
        "SELECT id, attempts, interrupted, state FROM pulse.http_requests
          WHERE url LIKE '%' || $1 || '%' ORDER BY id",
        &[&key],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect()
}

#[test]
fn a_crash_mid_drain_costs_no_attempt() {
    let _g = serial();
    let srv = Server::start();
    let mut c = admin();
    let key = unique("drain");
    let prefix = format!("/slow/1500?{key}-");
    let n: i64 = c
        .query_one(
            "SELECT count(pulse.http_post($1 || g, '{}')) FROM generate_series(1, 64) g",
            &[&srv.url(&prefix)],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 64);
    // some are being sent, most wait for a thread; the claim is on disk (async commits are
    // flushed within a second)
    srv.wait_for(&prefix, 8, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(1200));
    drop(c);
    pgctl(&["restart", &pgdata(), "immediate"]);
    let mut c = admin();
    let done = wait_for(120, "every request to finish", || {
        let r = requests_of(&mut c, &key);
        r.iter()
            .all(|x| x.3 != "pending" && x.3 != "sending")
            .then_some(r)
    });
    assert_eq!(done.len(), 64);
    let seen = srv.seen(&prefix);
    for (id, attempts, interrupted, state) in &done {
        assert_eq!(state, "succeeded", "request {id}");
        // one send recorded, whatever the crash interrupted
        assert_eq!(*attempts, 1, "request {id}: attempts counts sends");
        assert!(*interrupted <= 1, "request {id}");
    }
    let twice = seen.len() - 64;
    assert!(twice >= 1, "some request was being sent at the crash");
    let interrupted: i32 = done.iter().map(|x| x.2).sum();
    assert!(interrupted as usize >= twice);
}

#[test]
fn a_request_in_flight_at_three_restarts_is_given_up() {
    let _g = serial();
    let srv = Server::start();
    let mut c = admin();
    let path = format!("/slow/20000?{}", unique("poison"));
    let id: i64 = c
        .query_one(
            "SELECT pulse.http(pulse.http_request('GET', $1, timeout => '60 seconds'), max_attempts => 5)",
            &[&srv.url(&path)],
        )
        .unwrap()
        .get(0);
    for round in 1..=3 {
        srv.wait_for(&path, round, Duration::from_secs(60));
        assert_eq!(srv.seen(&path).len(), round);
        // the claim is on disk (claims commit durably just after a start, asynchronous commits
        // are flushed within a second)
        std::thread::sleep(Duration::from_millis(1200));
        drop(c);
        pgctl(&["restart", &pgdata(), "immediate"]);
        c = admin();
    }
    let (state, code, error) = wait_request_final(&mut c, id);
    assert_eq!((state.as_str(), code), ("failed", None));
    assert!(
        error.as_deref().unwrap_or("").contains("stopped 3 times"),
        "{error:?}"
    );
    let row = c
        .query_one(
            "SELECT attempts, interrupted FROM pulse.http_requests WHERE id = $1",
            &[&id],
        )
        .unwrap();
    assert_eq!((row.get::<_, i32>(0), row.get::<_, i32>(1)), (0, 3));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(srv.seen(&path).len(), 3, "not sent a fourth time");
}
