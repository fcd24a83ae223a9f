//! End-to-end: HTTP jobs and after-commit requests against a local HTTP server (started by each
//! test on 127.0.0.1, which the test cluster allows with pulse.http_allowed_hosts). Secrets are
//! stored per role, shown by name only, resolved only when sent, and never stored or logged.
mod common;
mod http_args;
use common::*;
use postgres::Client;
use pulse_e2e::server::Server;
use std::time::Duration;

/// A one-shot HTTP job that runs now; returns the job name.
fn http_job(c: &mut Client, request_sql: &str, extra: &str) -> String {
    let job = unique("http_job");
    c.execute(
        &format!("SELECT pulse.schedule_once($1, now(), http => {request_sql}{extra})"),
        &[&job],
    )
    .expect("schedule the HTTP job");
    job
}

/// The runs of a job, oldest first: (status, message, trigger, attempt, response as text).
fn runs(c: &mut Client, job: &str) -> Vec<(String, Option<String>, String, i32, Option<String>)> {
    c.query(
        "SELECT status, message, trigger, attempt, response::text FROM pulse.job_runs
          WHERE job_name = $1 ORDER BY run_id",
        &[&job],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
    .collect()
}

fn wait_runs_final(
    c: &mut Client,
    job: &str,
    n: usize,
) -> Vec<(String, Option<String>, String, i32, Option<String>)> {
    wait_for(60, &format!("{n} finished runs of {job}"), || {
        let r = runs(c, job);
        (r.len() >= n && r.iter().all(|x| x.0 != "queued" && x.0 != "running")).then_some(r)
    })
}

#[test]
fn after_commit_requests_are_sent_only_after_commit() {
    let srv = Server::start();
    let mut a = admin();
    let role = new_role(&mut a, "http_user");
    let other = new_role(&mut a, "http_other");
    let mut u = connect_as(&role);
    // a rollback sends nothing
    u.batch_execute(&format!(
        "BEGIN; SELECT pulse.http_post('{}', '{{\"n\": 0}}'); ROLLBACK;",
        srv.url("/ok/rolled-back")
    ))
    .unwrap();
    // inside a transaction nothing is sent before the commit
    let mut tx = u.transaction().unwrap();
    let id: i64 = tx
        .query_one(
            "SELECT pulse.http_post($1, '{\"n\": 1}', '{\"X-Token\": \"t1\"}')",
            &[&srv.url("/ok/committed")],
        )
        .unwrap()
        .get(0);
    // a request committed meanwhile is sent: the worker passed the open transaction's one by
    let witness: i64 = a
        .query_one("SELECT pulse.http_get($1)", &[&srv.url("/ok/witness")])
        .unwrap()
        .get(0);
    wait_request_final(&mut a, witness);
    assert!(srv.seen("/ok/committed").is_empty(), "sent before commit");
    tx.commit().unwrap();
    let (state, code, err) = wait_request_final(&mut u, id);
    assert_eq!((state.as_str(), code, err), ("succeeded", Some(200), None));
    let seen = srv.seen("/ok/committed");
    assert_eq!(seen.len(), 1, "sent exactly once");
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].body_text(), r#"{"n":1}"#);
    assert_eq!(seen[0].header("x-token"), Some("t1"));
    assert_eq!(seen[0].header("content-type"), Some("application/json"));
    let row = u
        .query_one(
            "SELECT content, content_type, headers->>'x-test', timed_out, content_truncated, attempts,
                    (timings->>'total_ms')::float8 > 0
               FROM pulse.http_responses WHERE id = $1",
            &[&id],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), r#"{"ok": true}"#);
    assert_eq!(row.get::<_, String>(1), "text/plain");
    assert_eq!(row.get::<_, String>(2), "yes");
    assert!(!row.get::<_, bool>(3) && !row.get::<_, bool>(4));
    assert_eq!(row.get::<_, i32>(5), 1);
    assert!(row.get::<_, bool>(6));
    // GET and DELETE with query parameters
    let g: i64 = u
        .query_one(
            "SELECT pulse.http_get($1, '{\"q\": \"a b\", \"n\": \"1\"}')",
            &[&srv.url("/ok/get")],
        )
        .unwrap()
        .get(0);
    let d: i64 = u
        .query_one(
            "SELECT pulse.http_delete($1, '{\"id\": \"7\"}')",
            &[&srv.url("/ok/del")],
        )
        .unwrap()
        .get(0);
    wait_request_final(&mut u, g);
    wait_request_final(&mut u, d);
    let get = &srv.seen("/ok/get")[0];
    assert_eq!(get.method, "GET");
    assert!(
        get.path == "/ok/get?n=1&q=a%20b" || get.path == "/ok/get?q=a%20b&n=1",
        "{}",
        get.path
    );
    assert_eq!(srv.seen("/ok/del")[0].method, "DELETE");
    assert_eq!(srv.seen("/ok/del")[0].path, "/ok/del?id=7");
    assert!(
        srv.seen("/ok/rolled-back").is_empty(),
        "a rolled-back request was sent"
    );
    // only the requesting role (and superusers) see a request and its response
    let mut o = connect_as(&other);
    for view in [
        "pulse.http_requests",
        "pulse.http_responses",
        "pulse.http_request",
    ] {
        let n: i64 = o
            .query_one(
                &format!("SELECT count(*) FROM {view} WHERE id = $1"),
                &[&id],
            )
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "{view} shows another role's request");
    }
    expect_error(o.execute("DELETE FROM pulse.http_request", &[]), "42501");
    let n: i64 = a
        .query_one(
            "SELECT count(*) FROM pulse.http_responses WHERE id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "superusers see all");
}

#[test]
fn requests_from_a_trigger() {
    let srv = Server::start();
    let mut a = admin();
    let t = unique("orders");
    a.batch_execute(&format!(
        "CREATE TABLE {t} (id int PRIMARY KEY, note text);
         CREATE FUNCTION {t}_hook() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           PERFORM pulse.http_post('{url}', jsonb_build_object('id', NEW.id, 'note', NEW.note));
           RETURN NEW;
         END $$;
         CREATE TRIGGER {t}_hook AFTER INSERT ON {t} FOR EACH ROW EXECUTE FUNCTION {t}_hook();
         INSERT INTO {t} VALUES (1, 'first'), (2, 'second');",
        url = srv.url(&format!("/ok/{t}"))
    ))
    .unwrap();
    let seen = srv.wait_for(&format!("/ok/{t}"), 2, Duration::from_secs(30));
    let mut bodies: Vec<String> = seen.iter().map(|s| s.body_text()).collect();
    bodies.sort();
    assert_eq!(
        bodies,
        vec![r#"{"id":1,"note":"first"}"#, r#"{"id":2,"note":"second"}"#]
    );
    a.batch_execute(&format!("DROP TABLE {t}; DROP FUNCTION {t}_hook();"))
        .unwrap();
}

#[test]
fn retries_500_then_success_and_429_retry_after() {
    let _jobs = Jobs::new();
    let srv = Server::start();
    let mut a = admin();
    // an HTTP job: a 500, then a retry (its own run row) that succeeds
    let key = unique("k");
    let job = http_job(
        &mut a,
        &format!(
            "pulse.http_request('POST', '{}', body => '{{\"x\": 1}}')",
            srv.url(&format!("/flaky/{key}"))
        ),
        ", max_attempts => 3, retry_backoff => '1 second'",
    );
    let r = wait_runs_final(&mut a, &job, 2);
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!(
        (r[0].0.as_str(), r[0].2.as_str(), r[0].3),
        ("failed", "schedule", 1)
    );
    assert!(r[0].1.as_deref().unwrap().starts_with("HTTP 500"), "{r:?}");
    assert_eq!(
        (r[1].0.as_str(), r[1].2.as_str(), r[1].3),
        ("succeeded", "retry", 2)
    );
    let resp: serde_like::Resp = serde_like::parse(r[1].4.as_deref().unwrap());
    assert_eq!(resp.status_code, "200");
    assert!(resp.body.contains("recovered"));
    assert_eq!(srv.seen(&format!("/flaky/{key}")).len(), 2);
    // an after-commit request: 429 with Retry-After: 1, then success
    let key = unique("b");
    let id: i64 = a
        .query_one(
            "SELECT pulse.http(pulse.http_request('GET', $1), max_attempts => 2, retry_backoff => '100 milliseconds')",
            &[&srv.url(&format!("/busy/{key}"))],
        )
        .unwrap()
        .get(0);
    let (state, code, _) = wait_request_final(&mut a, id);
    assert_eq!((state.as_str(), code), ("succeeded", Some(200)));
    let seen = srv.seen(&format!("/busy/{key}"));
    assert_eq!(seen.len(), 2);
    let gap = seen[1].at - seen[0].at;
    assert!(
        gap >= Duration::from_millis(900),
        "Retry-After honoured: {gap:?}"
    );
    // and the retry is claimed when it is due (the worker sleeps until then, not longer)
    assert!(gap < Duration::from_secs(5), "the retry waited {gap:?}");
    let attempts: i32 = a
        .query_one(
            "SELECT attempts FROM pulse.http_requests WHERE id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(attempts, 2);
    // without max_attempts, a 500 is final
    let id: i64 = a
        .query_one(
            "SELECT pulse.http_post($1)",
            &[&srv.url(&format!("/flaky/{}", unique("once")))],
        )
        .unwrap()
        .get(0);
    let (state, code, _) = wait_request_final(&mut a, id);
    assert_eq!((state.as_str(), code), ("failed", Some(500)));
}

/// Just enough JSON reading for the run's response (no serde in the test crate).
mod serde_like {
    pub struct Resp {
        pub status_code: String,
        pub body: String,
    }
    pub fn parse(s: &str) -> Resp {
        let field = |k: &str| {
            s.split(&format!("\"{k}\": "))
                .nth(1)
                .map(|r| {
                    r.split([',', '}'])
                        .next()
                        .unwrap_or("")
                        .trim_matches('"')
                        .to_string()
                })
                .unwrap_or_default()
        };
        Resp {
            status_code: field("status_code"),
            body: field("body"),
        }
    }
}

#[test]
fn failures_are_recorded_and_the_worker_keeps_going() {
    let _jobs = Jobs::new();
    let srv = Server::start();
    let mut a = admin();
    let send = |a: &mut Client, req: &str| -> i64 {
        a.query_one(&format!("SELECT pulse.http({req})"), &[])
            .unwrap()
            .get(0)
    };
    let dead_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let timeout = send(
        &mut a,
        &format!(
            "pulse.http_request('GET', '{}', timeout => '300 milliseconds')",
            srv.url("/slow/3000")
        ),
    );
    let refused = send(
        &mut a,
        &format!("pulse.http_request('GET', 'http://127.0.0.1:{dead_port}/x')"),
    );
    let redirect = send(
        &mut a,
        &format!("pulse.http_request('GET', '{}')", srv.url("/redirect")),
    );
    let followed = send(
        &mut a,
        &format!(
            "pulse.http_request('GET', '{}', follow_redirects => true)",
            srv.url("/redirect")
        ),
    );
    let big = send(
        &mut a,
        &format!("pulse.http_request('GET', '{}')", srv.url("/big/3000000")),
    );
    let garbage = send(
        &mut a,
        &format!("pulse.http_request('GET', '{}')", srv.url("/garbage")),
    );
    let metadata = send(
        &mut a,
        "pulse.http_request('GET', 'http://169.254.169.254/latest/meta-data')",
    );
    let not_listed = send(
        &mut a,
        &format!(
            "pulse.http_request('GET', 'http://localhost:{}/ok')",
            srv.port
        ),
    );
    let (st, _, err) = wait_request_final(&mut a, timeout);
    assert_eq!(st, "timed_out");
    assert!(err.unwrap().contains("timed out after 300 ms"));
    let to: bool = a
        .query_one(
            "SELECT timed_out FROM pulse.http_responses WHERE id = $1",
            &[&timeout],
        )
        .unwrap()
        .get(0);
    assert!(to);
    let (st, _, err) = wait_request_final(&mut a, refused);
    assert_eq!(st, "failed");
    assert!(err.unwrap().contains("connection refused"));
    let (st, code, _) = wait_request_final(&mut a, redirect);
    assert_eq!(
        (st.as_str(), code),
        ("failed", Some(302)),
        "a redirect is not followed by default"
    );
    let loc: String = a
        .query_one(
            "SELECT headers->>'location' FROM pulse.http_responses WHERE id = $1",
            &[&redirect],
        )
        .unwrap()
        .get(0);
    assert_eq!(loc, "/ok");
    let (st, code, _) = wait_request_final(&mut a, followed);
    assert_eq!((st.as_str(), code), ("succeeded", Some(200)));
    let (st, _, _) = wait_request_final(&mut a, big);
    assert_eq!(st, "succeeded");
    let (len, cut): (i32, bool) = {
        let r = a
            .query_one(
                "SELECT length(content), content_truncated FROM pulse.http_responses WHERE id = $1",
                &[&big],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(
        (len, cut),
        (1_048_576, true),
        "cut to pulse.http_max_response_bytes"
    );
    let (st, _, err) = wait_request_final(&mut a, garbage);
    assert_eq!(st, "failed", "{err:?}");
    let (st, _, err) = wait_request_final(&mut a, metadata);
    assert_eq!(st, "failed");
    assert!(
        err.as_deref()
            .unwrap()
            .contains("refused by the address policy"),
        "{err:?}"
    );
    let (st, _, err) = wait_request_final(&mut a, not_listed);
    assert_eq!(st, "failed");
    assert!(
        err.as_deref()
            .unwrap()
            .contains("not in pulse.http_allowed_hosts"),
        "{err:?}"
    );
    // and the worker still sends
    let ok = send(
        &mut a,
        &format!("pulse.http_request('GET', '{}')", srv.url("/ok")),
    );
    assert_eq!(wait_request_final(&mut a, ok).0, "succeeded");
    // an HTTP job's run that times out is timed_out, with the reason
    let job = http_job(
        &mut a,
        &format!(
            "pulse.http_request('GET', '{}', timeout => '200 milliseconds')",
            srv.url("/slow/2000")
        ),
        "",
    );
    let r = wait_runs_final(&mut a, &job, 1);
    assert_eq!(r[0].0, "timed_out");
    assert!(
        r[0].1
            .as_deref()
            .unwrap()
            .contains("timed out after 200 ms"),
        "{r:?}"
    );
    let job = http_job(
        &mut a,
        &format!("pulse.http_request('GET', '{}')", srv.url("/status/404")),
        "",
    );
    let r = wait_runs_final(&mut a, &job, 1);
    assert_eq!(r[0].0, "failed");
    assert!(r[0].1.as_deref().unwrap().starts_with("HTTP 404"), "{r:?}");
}

#[test]
fn secrets_and_settings_resolve_at_send_time_and_are_never_stored() {
    let _jobs = Jobs::new();
    let srv = Server::start();
    let mut a = admin();
    let role = new_role(&mut a, "http_secret_role");
    let value = format!("sk_{}", unique("TOPSECRET"));
    a.execute(
        &format!(
            "ALTER ROLE {role} SET app.settings.base_url = '{}'",
            srv.url("")
        ),
        &[],
    )
    .unwrap();
    let mut u = connect_as(&role);
    u.execute("SELECT pulse.set_secret('api_key', $1)", &[&value])
        .unwrap();
    let job = http_job(
        &mut u,
        "pulse.http_request('POST', '{{setting:app.settings.base_url}}/echo?job={{job_name}}',
                            '{\"Authorization\": \"Bearer {{secret:api_key}}\"}',
                            '{\"run\": \"{{run_id}}\", \"attempt\": \"{{attempt}}\", \"key\": \"{{secret:api_key}}\"}',
                            body_template => true)",
        "",
    );
    let r = wait_runs_final(&mut u, &job, 1);
    assert_eq!(r[0].0, "succeeded", "{r:?}");
    let seen = srv.seen(&format!("/echo?job={job}"));
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {value}").as_str())
    );
    assert!(
        seen[0].body_text().contains(r#""attempt":"1""#),
        "{}",
        seen[0].body_text()
    );
    assert!(seen[0].body_text().contains(&format!(r#""key":"{value}""#)));
    // the server echoed the secret back: it is stored scrubbed
    let resp = r[0].4.clone().unwrap();
    assert!(
        resp.contains("[secret:api_key]") && !resp.contains(&value),
        "{resp}"
    );
    // after-commit, too
    let id: i64 = u
        .query_one(
            "SELECT pulse.http_post('{{setting:app.settings.base_url}}/echo', '{}',
                                    '{\"Authorization\": \"Bearer {{secret:api_key}}\"}')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(wait_request_final(&mut u, id).0, "succeeded");
    assert_eq!(
        srv.seen("/echo").last().unwrap().header("authorization"),
        Some(format!("Bearer {value}").as_str())
    );
    // a missing secret or setting fails the run, naming it (and not sending anything)
    let before = srv.seen("/").len();
    let job2 = http_job(
        &mut u,
        "pulse.http_request('GET', '{{setting:app.settings.base_url}}/ok', '{\"X-Key\": \"{{secret:no_such_secret}}\"}')",
        "",
    );
    let r = wait_runs_final(&mut u, &job2, 1);
    assert_eq!(r[0].0, "failed");
    assert!(
        r[0].1
            .as_deref()
            .unwrap()
            .contains("secret \"no_such_secret\" does not exist"),
        "{r:?}"
    );
    let id: i64 = u
        .query_one(
            "SELECT pulse.http_get('{{setting:app.settings.nope}}/x')",
            &[],
        )
        .unwrap()
        .get(0);
    let (st, _, err) = wait_request_final(&mut u, id);
    assert_eq!(st, "failed");
    assert!(err
        .unwrap()
        .contains("setting \"app.settings.nope\" is not set"));
    assert_eq!(srv.seen("/").len(), before, "nothing was sent");
    // the value is in no table and not in the log
    for table in ["job", "job_run", "job_stats", "http_request"] {
        let n: i64 = a
            .query_one(
                &format!("SELECT count(*) FROM pulse.{table} x WHERE to_jsonb(x)::text LIKE '%' || $1 || '%'"),
                &[&value],
            )
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "the secret value is stored in pulse.{table}");
    }
    let log = std::fs::read_to_string(format!("{}/server.log", pgdata())).unwrap_or_default();
    assert!(
        !log.contains(&value),
        "the secret value reached the server log"
    );
    a.execute(
        &format!("ALTER ROLE {role} RESET app.settings.base_url"),
        &[],
    )
    .unwrap();
}

#[test]
fn http_jobs_reject_bad_input() {
    let _jobs = Jobs::new();
    let mut a = admin();
    let job = unique("bad_http");
    for (sql, code) in [
        ("SELECT pulse.schedule_job($1, '* * * * *', 'SELECT 1', http => pulse.http_request('GET', 'https://x.io'))", "22023"),
        ("SELECT pulse.schedule_job($1, '* * * * *')", "22023"),
        ("SELECT pulse.schedule_once($1, now())", "22023"),
        ("SELECT pulse.schedule_job($1, '* * * * *', http => '{\"url\": 1}')", "22023"),
        ("SELECT pulse.schedule_job($1, '* * * * *', http => '{\"method\": \"GET\", \"url\": \"gopher://x\"}')", "22023"),
        ("SELECT pulse.schedule_job($1, '* * * * *', http => '{\"method\": \"GET\", \"url\": \"https://x\", \"extra\": 1}')", "22023"),
    ] {
        let (msg, hint) = expect_error(a.query_one(sql, &[&job]), code);
        assert!(!hint.is_empty(), "{sql}: {msg}");
    }
    for (sql, code) in [
        ("SELECT pulse.http_post('ftp://x.io/a')", "22023"),
        (
            "SELECT pulse.http_post('https://x.io/a', timeout => '-1 second')",
            "22023",
        ),
        (
            "SELECT pulse.http_get('https://x.io/a', '{\"a\": 1}')",
            "22023",
        ),
        (
            "SELECT pulse.http_post('https://x.io/a', headers => '{\"Bad Header\": \"x\"}')",
            "22023",
        ),
        ("SELECT pulse.http(NULL)", "22004"),
        (
            "SELECT pulse.http(pulse.http_request('GET', 'https://x.io'), max_attempts => 0)",
            "22023",
        ),
    ] {
        let (msg, hint) = expect_error(a.query_one(sql, &[]), code);
        assert!(!hint.is_empty(), "{sql}: {msg}");
    }
    // the address policy is the superuser's: not settable in a session, nor by ALTER SYSTEM
    let role = new_role(&mut a, "http_policy");
    let mut u = connect_as(&role);
    expect_error(
        u.batch_execute("SET pulse.http_allowed_hosts = '*'"),
        "55P02",
    );
    expect_error(
        u.batch_execute("ALTER SYSTEM SET pulse.http_denied_networks = ''"),
        "42501",
    );
    // a job switches between SQL and HTTP with alter_job, and schedule_job is idempotent
    let req = "pulse.http_request('GET', 'https://example.com/{{job_name}}')";
    let id: i64 = a
        .query_one(
            &format!("SELECT pulse.schedule_job($1, '0 3 * * *', http => {req})"),
            &[&job],
        )
        .unwrap()
        .get(0);
    let again: i64 = a
        .query_one(
            &format!("SELECT pulse.schedule_job($1, '0 3 * * *', http => {req})"),
            &[&job],
        )
        .unwrap()
        .get(0);
    assert_eq!(id, again);
    let upd: String = a
        .query_one(
            "SELECT updated_at::text FROM pulse.jobs WHERE job_id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    let (cmd, http): (Option<String>, Option<String>) = {
        let r = a
            .query_one(
                "SELECT command, http->>'url' FROM pulse.jobs WHERE job_id = $1",
                &[&id],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(
        (cmd, http.as_deref()),
        (None, Some("https://example.com/{{job_name}}"))
    );
    a.execute(
        &format!("SELECT pulse.schedule_job($1, '0 3 * * *', http => {req})"),
        &[&job],
    )
    .unwrap();
    let upd2: String = a
        .query_one(
            "SELECT updated_at::text FROM pulse.jobs WHERE job_id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(upd, upd2, "an unchanged definition is not rewritten");
    a.execute("SELECT pulse.alter_job($1, command => 'SELECT 2')", &[&job])
        .unwrap();
    let r = a
        .query_one(
            "SELECT command, http IS NULL FROM pulse.jobs WHERE job_id = $1",
            &[&id],
        )
        .unwrap();
    assert_eq!(
        (
            r.get::<_, Option<String>>(0).as_deref(),
            r.get::<_, bool>(1)
        ),
        (Some("SELECT 2"), true)
    );
    expect_error(
        a.query_one(
            &format!("SELECT pulse.alter_job($1, command => 'SELECT 1', http => {req})"),
            &[&job],
        ),
        "22023",
    );
    a.execute("SELECT pulse.unschedule_job($1)", &[&job])
        .unwrap();
}

#[test]
fn webhook_alerts_once_per_incident_and_on_recovery() {
    let _jobs = Jobs::new();
    let srv = Server::start();
    let mut a = admin();
    let t = unique("flag");
    a.batch_execute(&format!(
        "CREATE TABLE {t} (ok int); INSERT INTO {t} VALUES (0);"
    ))
    .unwrap();
    let job = unique("webhook_alert");
    a.execute(
        &format!(
            "SELECT pulse.schedule_job($1, '1 seconds', 'SELECT 1 / ok FROM {t}',
                      alert_after_failures => 2,
                      alert => jsonb_build_object('webhook', pulse.http_request('POST', $2)))"
        ),
        &[&job, &srv.url(&format!("/ok/hook/{job}"))],
    )
    .unwrap();
    let path = format!("/ok/hook/{job}");
    let hooks = srv.wait_for(&path, 1, Duration::from_secs(30));
    assert!(
        hooks[0]
            .body_text()
            .starts_with(r#"{"text":":rotating_light: pg_pulse job"#),
        "{}",
        hooks[0].body_text()
    );
    assert!(
        hooks[0].body_text().contains(&job) && hooks[0].body_text().contains("division by zero")
    );
    // more failures: still one alert
    wait_for(30, "two more failures", || {
        (count_runs(&mut a, &job, "failed") >= 4).then_some(())
    });
    assert_eq!(srv.seen(&path).len(), 1, "one alert per incident");
    a.execute(&format!("UPDATE {t} SET ok = 1"), &[]).unwrap();
    let hooks = srv.wait_for(&path, 2, Duration::from_secs(30));
    assert!(
        hooks[1].body_text().contains("recovered"),
        "{}",
        hooks[1].body_text()
    );
    a.execute("SELECT pulse.unschedule_job($1)", &[&job])
        .unwrap();
    a.batch_execute(&format!("DROP TABLE {t}")).unwrap();
    // the job's last runs are over and no alert of it waits to be sent: nothing more can come
    wait_idle(&mut a, &job);
    wait_for(30, "no alert request of the job pending", || {
        let n: i64 = a
            .query_one(
                "SELECT count(*) FROM pulse.http_requests
                  WHERE url LIKE '%' || $1 AND state IN ('pending', 'sending')",
                &[&path],
            )
            .unwrap()
            .get(0);
        (n == 0).then_some(())
    });
    assert_eq!(srv.seen(&path).len(), 2);
}

#[test]
fn secrets_are_private_and_never_logged() {
    let mut a = admin();
    let role = new_role(&mut a, "secret_owner");
    let other = new_role(&mut a, "secret_other");
    let mut u = connect_as(&role);
    let value = format!("sk_live_{}", unique("VALUE"));
    let created: bool = u
        .query_one("SELECT pulse.set_secret('service_key', $1)", &[&value])
        .unwrap()
        .get(0);
    assert!(created);
    let replaced: bool = u
        .query_one("SELECT pulse.set_secret('service_key', $1)", &[&value])
        .unwrap()
        .get(0);
    assert!(!replaced, "the second call replaces");
    // Names only, and only one's own.
    let row = u
        .query_one("SELECT to_jsonb(s)::text FROM pulse.secrets s", &[])
        .unwrap();
    let shown: String = row.get(0);
    assert!(
        shown.contains("service_key") && !shown.contains(&value),
        "{shown}"
    );
    let mut o = connect_as(&other);
    let n: i64 = o
        .query_one("SELECT count(*) FROM pulse.secrets", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    // The table itself is readable by no role but its owner.
    expect_error(u.query("SELECT * FROM pulse.secret", &[]), "42501");
    expect_error(o.query("SELECT * FROM pulse.secret", &[]), "42501");
    // A failing call reports the error without the statement (which holds the value) in the log.
    let leaked = format!("leak_{}", unique("CHECK"));
    expect_error(
        u.query_one("SELECT pulse.set_secret('bad name!', $1)", &[&leaked]),
        "22023",
    );
    expect_error(
        u.query_one(
            &format!("SELECT pulse.set_secret('also bad!', '{leaked}')"),
            &[],
        ),
        "22023",
    );
    let log = std::fs::read_to_string(format!("{}/server.log", pgdata())).unwrap_or_default();
    assert!(
        log.contains("invalid secret name"),
        "the error itself is logged"
    );
    assert!(
        !log.contains(&leaked),
        "a secret value reached the server log"
    );
    assert!(!log.contains(&value));
    // drop: true, then false.
    assert!(u
        .query_one("SELECT pulse.drop_secret('service_key')", &[])
        .unwrap()
        .get::<_, bool>(0));
    assert!(!u
        .query_one("SELECT pulse.drop_secret('service_key')", &[])
        .unwrap()
        .get::<_, bool>(0));
}

#[test]
fn http_request_builds_and_validates() {
    let mut c = admin();
    let v: String = c
        .query_one(
            "SELECT pulse.http_request('post', '{{setting:app.settings.supabase_url}}/functions/v1/ingest',
                      '{\"Authorization\": \"Bearer {{secret:service_role_key}}\"}', '{\"job\": \"{{job_name}}\"}')::text",
            &[],
        )
        .unwrap()
        .get(0);
    for part in [
        "\"method\": \"POST\"",
        "\"timeout_ms\": 30000",
        "\"follow_redirects\": false",
        "{{secret:service_role_key}}",
        "\"body_text\": null",
    ] {
        assert!(v.contains(part), "{part} in {v}");
    }
    let v: String = c
        .query_one(
            "SELECT pulse.http_request('GET', 'http://127.0.0.1:9/x', timeout => '2 seconds',
                                       follow_redirects => true, body_text => 'hi')::text",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        v.contains("\"timeout_ms\": 2000") && v.contains("\"body_text\": \"hi\""),
        "{v}"
    );
    for (sql, field) in [
        (
            "SELECT pulse.http_request('TRACE', 'https://x.io')",
            "method",
        ),
        ("SELECT pulse.http_request('GET', 'ftp://x.io')", "url"),
        ("SELECT pulse.http_request('GET', 'x.io/path')", "url"),
        (
            "SELECT pulse.http_request('GET', 'https://x.io/{{nope}}')",
            "url",
        ),
        (
            "SELECT pulse.http_request('GET', 'https://x.io', '{\"Bad Name\": \"x\"}')",
            "header",
        ),
        (
            "SELECT pulse.http_request('GET', 'https://x.io', '{\"X\": 5}')",
            "header",
        ),
        (
            "SELECT pulse.http_request('GET', 'https://x.io', '[1]')",
            "headers",
        ),
        (
            "SELECT pulse.http_request('GET', 'https://x.io', timeout => '-1 second')",
            "timeout",
        ),
        (
            "SELECT pulse.http_request('POST', 'https://x.io', body => '{}', body_text => 'x')",
            "body",
        ),
        (
            "SELECT pulse.http_request('POST', 'https://x.io', body_text => repeat('x', 2000000))",
            "body",
        ),
    ] {
        let (msg, hint) = expect_error(c.query_one(sql, &[]), "22023");
        assert!(msg.starts_with(&format!("invalid {field}")), "{sql}: {msg}");
        assert!(!hint.is_empty(), "{sql}: a hint");
    }
}

#[test]
fn one_owners_backlog_does_not_hold_another_owners_request_back() {
    let srv = Server::start();
    let mut a = admin();
    let busy = new_role(&mut a, "http_busy");
    let lone = new_role(&mut a, "http_lone");
    let _cleanup = Cleanup(vec![drop_role_sql(&busy), drop_role_sql(&lone)]);
    let key = unique("fair");
    let slow = format!("/slow/2000?{key}-busy-");
    let mut b = connect_as(&busy);
    b.query_one(
        "SELECT count(pulse.http_post($1 || g, '{}')) FROM generate_series(1, 48) g",
        &[&srv.url(&slow)],
    )
    .unwrap();
    // the busy role's requests hold the HTTP threads
    srv.wait_for(&slow, 8, Duration::from_secs(30));
    let path = format!("/ok/{key}-lone");
    let mut l = connect_as(&lone);
    let t0 = std::time::Instant::now();
    l.query_one("SELECT pulse.http_post($1, '{}')", &[&srv.url(&path)])
        .unwrap();
    let seen = srv.wait_for(&path, 1, Duration::from_secs(60));
    assert_eq!(seen.len(), 1);
    let waited = seen[0].at - t0;
    // one slow request takes 2 s and the busy role's 48 take 6 s or more on 16 threads: the lone
    // request goes out on a thread kept for other owners
    assert!(
        waited < Duration::from_millis(1000),
        "the lone request waited {waited:?} behind another role's backlog"
    );
    let done_busy = srv.seen(&slow).len();
    assert!(done_busy < 48, "measured while the backlog was still going");
}
