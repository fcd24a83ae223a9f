//! Attacks by an ordinary role (LOGIN + USAGE on schema pulse) against other roles' jobs, secrets
//! and the workers they share, found by an independent review of the owner-session change. Each
//! test asserts the safe behaviour (each failed on the code that was reviewed).
mod common;
use common::*;
use pulse_e2e::server::Server;
use std::time::{Duration, Instant};

/// A role's request that sets `Content-Length: 0` but carries a body: ureq sends the body anyway
/// (a user Content-Length replaces its own), so the body is a second, attacker-written request
/// on the shared keep-alive connection. Its Content-Length swallows the next request sent on that
/// connection, another role's, with that role's resolved `{{secret:...}}` header.
#[test]
fn smuggled_request_cannot_capture_another_roles_secret() {
    let mut admin = admin();
    let mallory = new_role(&mut admin, "rv_mallory");
    let alice = new_role(&mut admin, "rv_alice");
    let _cleanup = Cleanup(vec![drop_role_sql(&mallory), drop_role_sql(&alice)]);
    let srv = Server::start();
    let mut m = connect_as(&mallory);
    let mut a = connect_as(&alice);
    a.execute(
        "SELECT pulse.set_secret('tok', 'AliceOnlyToken-8b1f2c')",
        &[],
    )
    .unwrap();
    let smuggled = format!(
        "POST /capture HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: text/plain\r\nContent-Length: 150\r\n\r\n",
        srv.port
    );
    // the framing headers are pg_pulse's to set: refused at call time, in every form
    for (name, sql) in [
        ("Content-Length", "SELECT pulse.http(pulse.http_request('POST', $1, '{\"Content-Length\": \"0\"}', body_text => $2))"),
        ("content-length", "SELECT pulse.http(jsonb_build_object('method', 'POST', 'url', $1::text, 'headers', jsonb_build_object('content-length', '0'), 'body_text', $2::text))"),
        ("Transfer-Encoding", "SELECT pulse.http_post($1, to_jsonb($2::text), '{\"Transfer-Encoding\": \"chunked\"}')"),
        ("Host", "SELECT pulse.http_post($1, to_jsonb($2::text), '{\"Host\": \"elsewhere\"}')"),
    ] {
        let (msg, hint) = expect_error(m.execute(sql, &[&srv.url("/ok/innocent"), &smuggled]), "22023");
        assert!(msg.contains("set by pg_pulse"), "{name}: {msg}");
        assert!(!hint.is_empty());
    }
    // and the smuggled text as a plain body is just a body
    m.execute(
        "SELECT pulse.http(pulse.http_request('POST', $1, '{}', body_text => $2))",
        &[&srv.url("/ok/innocent"), &smuggled],
    )
    .unwrap();
    srv.wait_for("/ok/innocent", 1, Duration::from_secs(10));
    a.execute(
        "SELECT pulse.http_post($1, '{}', '{\"Authorization\": \"Bearer {{secret:tok}}\"}')",
        &[&srv.url("/ok/alice")],
    )
    .unwrap();
    srv.wait_for("/ok/alice", 1, Duration::from_secs(10));
    let captured: Vec<String> = srv.seen("/capture").iter().map(|s| s.body_text()).collect();
    assert!(
        !captured.iter().any(|b| b.contains("AliceOnlyToken")),
        "mallory's smuggled request captured alice's request with her secret: {captured:?}"
    );
}

/// `cancel_run` locks the run row (SELECT ... FOR UPDATE) in the caller's transaction. Left open,
/// the scheduler's next write of that row (recording the outcome) waits for it, inside the tick
/// that serves every role: nobody's jobs run until the attacker commits.
#[test]
fn an_open_transaction_cannot_stop_other_roles_jobs() {
    let _jobs = Jobs::new();
    let mut admin = admin();
    let mallory = new_role(&mut admin, "rv_mallory");
    let alice = new_role(&mut admin, "rv_alice");
    let _cleanup = Cleanup(vec![drop_role_sql(&mallory), drop_role_sql(&alice)]);
    let mut m = connect_as(&mallory);
    let mut a = connect_as(&alice);
    a.execute(
        "SELECT pulse.schedule_job('victim', '0 0 1 1 *', 'SELECT 1')",
        &[],
    )
    .unwrap();
    // mallory holds, in an open transaction, what the API locks: a running run (cancel_run),
    // then a job with its statistics (unschedule_job) while its run is recorded
    for hold_sql in [
        "SELECT pulse.cancel_run($1)",
        "SELECT pulse.unschedule_job('busy') AND $1::bigint > 0",
    ] {
        m.execute(
            "SELECT pulse.schedule_job('busy', '0 0 1 1 *', 'SELECT pg_sleep(1)')",
            &[],
        )
        .unwrap();
        let run: i64 = m
            .query_one("SELECT pulse.run_job('busy')", &[])
            .unwrap()
            .get(0);
        wait_for(30, "mallory's run running", || {
            let s: String = m
                .query_one(
                    "SELECT status FROM pulse.job_runs WHERE run_id = $1",
                    &[&run],
                )
                .unwrap()
                .get(0);
            (s == "running").then_some(())
        });
        let mut hold = connect_as(&mallory);
        hold.batch_execute("BEGIN").unwrap();
        hold.execute(hold_sql, &[&run]).unwrap();
        // alice's runs go on while mallory's transaction stays open (also past mallory's run)
        for _ in 0..2 {
            let arun: i64 = a
                .query_one("SELECT pulse.run_job('victim')", &[])
                .unwrap()
                .get(0);
            let t = Instant::now();
            let mut status = String::new();
            while t.elapsed() < Duration::from_secs(10) {
                status = a
                    .query_one(
                        "SELECT status FROM pulse.job_runs WHERE run_id = $1",
                        &[&arun],
                    )
                    .unwrap()
                    .get(0);
                if status == "succeeded" {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            assert_eq!(
                status, "succeeded",
                "alice's run did not finish within 10 s while mallory held `{hold_sql}` open"
            );
        }
        // mallory's own run was recorded too
        wait_run_final(&mut admin, run);
        hold.batch_execute("ROLLBACK").unwrap();
        let _ = m.execute("SELECT pulse.unschedule_job('busy')", &[]);
    }
    let _ = a.execute("SELECT pulse.unschedule_job('victim')", &[]);
}

/// A hand-written request with a huge `timeout_ms` passes validation (it is positive), and then
/// the HTTP worker's claim computes `lease_until` with it: "bigint out of range" aborts the whole
/// claim, every second, for every role's requests and HTTP job runs.
#[test]
fn one_request_cannot_stop_the_http_worker() {
    let mut admin = admin();
    let mallory = new_role(&mut admin, "rv_mallory");
    let alice = new_role(&mut admin, "rv_alice");
    let _cleanup = Cleanup(vec![
        format!("DELETE FROM pulse.http_request WHERE owner = '{mallory}'::regrole"),
        drop_role_sql(&mallory),
        drop_role_sql(&alice),
    ]);
    let srv = Server::start();
    let mut m = connect_as(&mallory);
    let mut a = connect_as(&alice);
    // a timeout beyond a day is refused when the request is made
    expect_error(
        m.execute(
            "SELECT pulse.http(jsonb_build_object('method', 'GET', 'url', $1::text, 'timeout_ms', 9223372036854775000))",
            &[&srv.url("/ok/poison")],
        ),
        "22023",
    );
    a.execute("SELECT pulse.http_get($1)", &[&srv.url("/ok/alice")])
        .unwrap();
    let seen = srv.wait_for("/ok/alice", 1, Duration::from_secs(10));
    admin
        .execute(
            "DELETE FROM pulse.http_request WHERE owner = $1::text::regrole",
            &[&mallory],
        )
        .unwrap();
    assert_eq!(
        seen.len(),
        1,
        "alice's request was not sent within 10 s: mallory's timeout_ms stops every claim"
    );
}
