//! End-to-end: the HTTP worker across its own restarts and the server's: SIGTERM of the worker,
//! crashes around a send (HTTP job slots, after-commit requests). These tests stop the HTTP worker
//! or restart the shared test server, so they run one at a time (a lock), in their own test
//! binary (cargo runs binaries one by one).
mod common;
use common::*;
use postgres::Client;
use pulse_e2e::server::Server;
use std::sync::Mutex;
use std::time::Duration;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

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
    for round in 0..6 {
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
