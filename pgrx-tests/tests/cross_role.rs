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

/// A role that may write pg_pulse's tables directly (pg_write_all_data; row-level security
/// still makes its rows its own) writes a run row under its own name for another role's job_id:
/// the job's command ran as its owner at a time the writer chose, its error went into the
/// writer's run row, and the owner's statistics counted the run. A run now executes a job only
/// when the job is its owner's: such a row runs nothing and counts for nobody.
#[test]
fn a_run_row_for_another_roles_job_runs_nothing() {
    let _jobs = Jobs::new();
    let mut admin = admin();
    let writer = new_role(&mut admin, "rv_writer");
    let alice = new_role(&mut admin, "rv_alice");
    let _cleanup = Cleanup(vec![drop_role_sql(&writer), drop_role_sql(&alice)]);
    admin
        .batch_execute(&format!("GRANT pg_write_all_data TO {writer}"))
        .unwrap();
    let srv = Server::start();
    let mut a = connect_as(&alice);
    let sql_job: i64 = a
        .query_one(
            "SELECT pulse.schedule_job('private', '0 0 1 1 *',
                    'DO $b$ BEGIN RAISE EXCEPTION ''alice private data, as %'', current_user; END $b$')",
            &[],
        )
        .unwrap()
        .get(0);
    let http_job: i64 = a
        .query_one(
            "SELECT pulse.schedule_job('private-hook', '0 0 1 1 *',
                    http => pulse.http_request('POST', $1, body => '{\"alice\": \"private body\"}'))",
            &[&srv.url("/ok/alice-hook")],
        )
        .unwrap()
        .get(0);
    let mut w = connect_as(&writer);
    let mut runs = Vec::new();
    for (job, kind) in [(sql_job, "sql"), (http_job, "http")] {
        let run: i64 = w
            .query_one(
                "INSERT INTO pulse.job_run (job_id, job_name, owner, scheduled_for, kind)
                 VALUES ($1, 'forged', (SELECT oid FROM pg_roles WHERE rolname = current_user), now(), $2)
                 RETURNING run_id",
                &[&job, &kind],
            )
            .unwrap()
            .get(0);
        runs.push(run);
    }
    // (queued runs are claimed at the scheduler's next turn)
    for run in runs {
        let (status, message) = wait_run_final(&mut admin, run);
        let message = message.unwrap_or_default();
        assert_eq!(status, "failed", "{message}");
        assert!(!message.contains("alice private"), "{message}");
    }
    assert!(
        srv.seen("/ok/alice-hook").is_empty(),
        "alice's request was sent for the writer's run"
    );
    let counted: i64 = admin
        .query_one(
            "SELECT coalesce(sum(failures_total), 0)::int8 FROM (
               SELECT (SELECT sum(x) FROM unnest(s.failures) x) AS failures_total
                 FROM pulse.job_stats s WHERE s.job_id IN ($1, $2)) t",
            &[&sql_job, &http_job],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        counted, 0,
        "the writer's runs counted in alice's statistics"
    );
}
