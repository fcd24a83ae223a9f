//! End-to-end: 0.1.0 installed in the scheduler's own database (a cluster of this suite's own),
//! filled as 0.1.0 would have been (jobs of two owners, runs, secrets, a queue, a pending HTTP
//! request), then `ALTER EXTENSION pg_pulse UPDATE`: the jobs fire again, as their owners, the
//! secrets resolve in what an HTTP job sends, the queue claims and completes, the pending request
//! is sent. (tests/upgrade.rs compares the upgraded schema with a fresh install's, from every
//! released version.)

mod common;
use common::*;
use pulse_e2e::server::Server;

#[test]
fn after_an_upgrade_from_0_1_0_jobs_fire_secrets_resolve_and_queues_work() {
    let srv = Server::start();
    let cl = Cluster::start("upgrade_live", &["pulse.http_allowed_hosts = '127.0.0.1'"]);
    let mut a = cl.connect();
    a.batch_execute(
        "CREATE ROLE live_one LOGIN; CREATE ROLE live_two LOGIN;
         CREATE EXTENSION pg_pulse VERSION '0.1.0';
         GRANT USAGE ON SCHEMA pulse TO live_one, live_two;
         CREATE TABLE public.live_log (who text, what text);
         GRANT INSERT ON public.live_log TO live_one, live_two;
         CREATE TABLE public.live_q (id bigserial PRIMARY KEY, payload text);
         GRANT SELECT, UPDATE ON public.live_q TO live_two;",
    )
    .expect("0.1.0 and its users");
    // rows as 0.1.0's functions wrote them (directly: 0.1.0's functions whose signature changed
    // are bound to this library's symbols); the queue through make_queue, unchanged since 0.1.0
    let hook = srv.url("/ok/live/hook");
    let pending = srv.url("/ok/live/pending");
    a.batch_execute(&format!(
        "INSERT INTO pulse.job (job_name, owner, schedule, command, timezone)
              VALUES ('nightly', 'live_one'::regrole::oid, '0 2 * * *',
                      'INSERT INTO public.live_log VALUES (current_user, ''nightly'')', 'Europe/Berlin'),
                     ('nightly', 'live_two'::regrole::oid, '@hourly',
                      'INSERT INTO public.live_log VALUES (current_user, ''nightly'')', 'UTC');
         INSERT INTO pulse.job (job_name, owner, schedule, http)
              VALUES ('hook', 'live_two'::regrole::oid, '0 3 * * *',
                      '{{\"method\": \"POST\", \"url\": \"{hook}\", \"headers\": {{\"Authorization\": \"Bearer {{{{secret:token}}}}\"}}, \"body\": {{\"from\": \"0.1.0\"}}}}');
         INSERT INTO pulse.job_run (job_id, job_name, owner, scheduled_for, started_at, finished_at, status, message)
              SELECT job_id, job_name, owner, '2026-01-01', '2026-01-01', '2026-01-01 00:00:01', 'succeeded', 'INSERT 0 1'
                FROM pulse.job;
         INSERT INTO pulse.job_stats (job_id, owner, last_status, consecutive_failures)
              SELECT job_id, owner, 'succeeded', 0 FROM pulse.job;
         INSERT INTO pulse.secret (owner, name, value)
              VALUES ('live_one'::regrole::oid, 'token', 'one-secret-of-0.1.0'),
                     ('live_two'::regrole::oid, 'token', 'two-secret-of-0.1.0');
         INSERT INTO pulse.http_request (owner, request, state)
              VALUES ('live_one'::regrole::oid,
                      '{{\"method\": \"GET\", \"url\": \"{pending}\", \"headers\": {{\"Authorization\": \"Bearer {{{{secret:token}}}}\"}}}}',
                      'pending');
         SELECT pulse.make_queue('public.live_q');
         INSERT INTO public.live_q (payload) VALUES ('a'), ('b');"
    ))
    .expect("0.1.0 rows");
    assert!(
        srv.seen("/ok/live/").is_empty(),
        "nothing runs on a 0.1.0 catalog"
    );

    a.batch_execute("ALTER EXTENSION pg_pulse UPDATE")
        .expect("ALTER EXTENSION pg_pulse UPDATE");

    // the pending after-commit request goes out, its secret resolved as its owner's
    let seen = wait_for(60, "the pending request to be sent", || {
        srv.seen("/ok/live/pending").into_iter().next()
    });
    assert_eq!(
        header(&seen.headers, "authorization"),
        Some("Bearer one-secret-of-0.1.0".to_string())
    );
    // each owner's job fires, as that owner
    for who in ["live_one", "live_two"] {
        let mut c = connect_port(who, cl.port);
        let run = run_job(&mut c, "nightly");
        let (status, message) = wait_run_final(&mut a, run);
        assert_eq!(status, "succeeded", "{who}'s nightly: {message:?}");
    }
    let log: Vec<String> = a
        .query("SELECT who FROM public.live_log ORDER BY who", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        log,
        vec!["live_one", "live_two"],
        "each job ran as its owner"
    );
    // the HTTP job sends with its owner's secret
    let mut two = connect_port("live_two", cl.port);
    let run = run_job(&mut two, "hook");
    let (status, message) = wait_run_final(&mut a, run);
    assert_eq!(status, "succeeded", "hook: {message:?}");
    let seen = srv.seen("/ok/live/hook");
    assert_eq!(seen.len(), 1);
    assert_eq!(
        header(&seen[0].headers, "authorization"),
        Some("Bearer two-secret-of-0.1.0".to_string())
    );
    assert_eq!(
        String::from_utf8_lossy(&seen[0].body),
        r#"{"from":"0.1.0"}"#
    );
    // the queue made in 0.1.0 claims and completes
    let ids: Vec<i64> = two
        .query(
            "SELECT (j->>'id')::bigint FROM pulse.claim_batch('public.live_q', 10) j",
            &[],
        )
        .expect("claim_batch after the upgrade")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    let done: i64 = two
        .query_one(
            "SELECT pulse.complete('public.live_q', $1::bigint[])",
            &[&ids],
        )
        .expect("complete")
        .get(0);
    assert_eq!(done, 2);
}

fn header(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
}
