//! Part of the `http` suite: what every SQL function does with NULL arguments (one table of
//! expectations), interval arguments that overflow, URLs checked at call time with the client's
//! parser, and HTTPS through `pulse.http_ca_file` (issue 16).
use crate::common::*;
use pulse_e2e::tls_server::TlsServer;

/// Runs `call` in a subtransaction; "ok" or the SQLSTATE.
fn outcome(c: &mut postgres::Client, call: &str) -> String {
    let mut tx = c.transaction().unwrap();
    let r = tx.batch_execute(&format!("SELECT ({call})"));
    let out = match r {
        Ok(()) => "ok".to_string(),
        Err(e) => match e.as_db_error() {
            Some(db) => {
                assert!(
                    db.code().code() != "22004" || db.hint().is_some_and(|h| !h.is_empty()),
                    "{call}: 22004 without a HINT ({})",
                    db.message()
                );
                db.code().code().to_string()
            }
            None => panic!("{call}: {e}"),
        },
    };
    tx.rollback().unwrap();
    out
}

#[test]
fn null_arguments_give_22004_unless_documented() {
    let _jobs = Jobs::new();
    let mut c = admin();
    let q = unique("nullq");
    let job = unique("nulljob");
    c.batch_execute(&format!(
        "CREATE TABLE {q} (id bigserial PRIMARY KEY, v text);
         SELECT pulse.make_queue('{q}');
         SELECT pulse.schedule_job('{job}', '0 3 * * *', 'SELECT 1');"
    ))
    .unwrap();
    let _drop = Cleanup(vec![format!("DROP TABLE IF EXISTS {q}")]);
    let url = "'http://127.0.0.1:9/'";
    let req = format!("pulse.http_request('GET', {url})");
    // (call, expected): "ok" where README gives NULL a meaning (a NULL default, alter_job's
    // "keep", complete/retry_failed ids, the HTTP maps and http_post's body), else 22004
    let table: Vec<(String, &str)> = vec![
        ("pulse.make_queue(NULL)".into(), "22004"),
        ("(SELECT count(*) FROM pulse.claim_batch(NULL))".into(), "22004"),
        (format!("(SELECT count(*) FROM pulse.claim_batch('{q}', NULL))"), "22004"),
        (format!("(SELECT count(*) FROM pulse.claim_batch('{q}', 10, NULL))"), "22004"),
        (format!("(SELECT count(*) FROM pulse.claim_batch('{q}', 10, '1 min', NULL))"), "ok"),
        ("pulse.complete(NULL, ARRAY[1::bigint])".into(), "22004"),
        (format!("pulse.complete('{q}', NULL::bigint[])"), "ok"),
        (format!("pulse.complete('{q}', ARRAY[1::bigint], NULL)"), "ok"),
        ("pulse.fail(NULL, 1::bigint, 'e')".into(), "22004"),
        (format!("pulse.fail('{q}', NULL::bigint, 'e')"), "22004"),
        (format!("pulse.fail('{q}', 1::bigint, NULL)"), "22004"),
        (format!("pulse.fail('{q}', 1::bigint, 'e', NULL)"), "22004"),
        (format!("pulse.fail('{q}', 1::bigint, 'e', true, NULL)"), "ok"),
        (format!("pulse.fail('{q}', 1::bigint, 'e', true, NULL, NULL)"), "22004"),
        (format!("pulse.fail('{q}', 1::bigint, 'e', true, NULL, '1s', NULL)"), "22004"),
        ("pulse.extend_lock(NULL, 1::bigint)".into(), "22004"),
        (format!("pulse.extend_lock('{q}', NULL::bigint)"), "22004"),
        (format!("pulse.extend_lock('{q}', 1::bigint, NULL)"), "22004"),
        (format!("pulse.extend_lock('{q}', 1::bigint, '1 min', NULL)"), "ok"),
        ("pulse.retry_failed(NULL::regclass)".into(), "22004"),
        (format!("pulse.retry_failed('{q}', NULL::boolean)"), "22004"),
        ("pulse.retry_failed(NULL::regclass, ARRAY[1::bigint])".into(), "22004"),
        (format!("pulse.retry_failed('{q}', NULL::bigint[])"), "ok"),
        (format!("pulse.retry_failed('{q}', ARRAY[1::bigint], NULL)"), "22004"),
        ("(SELECT count(*) FROM pulse.queue_health(NULL))".into(), "22004"),
        ("pulse.cancel_run(NULL)".into(), "22004"),
        ("pulse.drop_secret(NULL)".into(), "22004"),
        ("pulse.set_secret(NULL, 'value-long-enough')".into(), "22004"),
        ("pulse.set_secret('k', NULL)".into(), "22004"),
        // (owner NULL: you, its default)
        ("pulse.import_pg_cron(NULL)".into(), "22004"),
        ("pulse.import_pg_cron(true, NULL)".into(), "22004"),
        ("pulse.import_pg_cron(true, false, NULL)".into(), "22004"),
        ("pulse.import_pg_cron(true, false, '{NULL}')".into(), "22004"),
        ("pulse.set_secret_from_file(NULL, 'f')".into(), "22004"),
        ("pulse.set_secret_from_file('k', NULL)".into(), "22004"),
        ("pulse.run_job(NULL)".into(), "22004"),
        ("pulse.unschedule_job(NULL)".into(), "22004"),
        ("pulse.toggle_job(NULL, true)".into(), "22004"),
        (format!("pulse.toggle_job('{job}', NULL)"), "22004"),
        ("(SELECT count(*) FROM pulse.next_runs(NULL))".into(), "22004"),
        ("(SELECT count(*) FROM pulse.next_runs('* * * * *', NULL))".into(), "ok"),
        ("(SELECT count(*) FROM pulse.next_runs('* * * * *', 'UTC', NULL))".into(), "22004"),
        ("(SELECT count(*) FROM pulse.next_runs('* * * * *', 'UTC', 5, NULL))".into(), "22004"),
        (format!("pulse.http_request(NULL, {url})"), "22004"),
        ("pulse.http_request('GET', NULL)".into(), "22004"),
        (format!("pulse.http_request('GET', {url}, NULL)"), "ok"),
        (format!("pulse.http_request('GET', {url}, '{{}}', NULL)"), "ok"),
        (format!("pulse.http_request('GET', {url}, '{{}}', NULL, NULL)"), "22004"),
        (format!("pulse.http_request('GET', {url}, '{{}}', NULL, '1s', NULL)"), "22004"),
        (format!("pulse.http_request('GET', {url}, '{{}}', NULL, '1s', false, NULL)"), "ok"),
        ("pulse.http_post(NULL)".into(), "22004"),
        (format!("pulse.http_post({url}, NULL)"), "ok"),
        (format!("pulse.http_post({url}, '{{}}', NULL)"), "ok"),
        (format!("pulse.http_post({url}, '{{}}', '{{}}', NULL)"), "22004"),
        (format!("pulse.http_post({url}, '{{}}', '{{}}', '1s', NULL)"), "ok"),
        ("pulse.http_get(NULL)".into(), "22004"),
        (format!("pulse.http_get({url}, NULL)"), "ok"),
        (format!("pulse.http_get({url}, '{{}}', NULL)"), "ok"),
        (format!("pulse.http_get({url}, '{{}}', '{{}}', NULL)"), "22004"),
        ("pulse.http_delete(NULL)".into(), "22004"),
        (format!("pulse.http_delete({url}, NULL)"), "ok"),
        (format!("pulse.http_delete({url}, '{{}}', NULL)"), "ok"),
        (format!("pulse.http_delete({url}, '{{}}', '{{}}', NULL)"), "22004"),
        ("pulse.http(NULL)".into(), "22004"),
        (format!("pulse.http({req}, NULL)"), "22004"),
        (format!("pulse.http({req}, 1, NULL)"), "22004"),
        ("pulse.schedule_job(NULL, '0 3 * * *', 'SELECT 1')".into(), "22004"),
        (format!("pulse.schedule_job('{job}', NULL, 'SELECT 1')"), "22004"),
        // command and http both default to NULL: "a job needs a command or an http request"
        (format!("pulse.schedule_job('{job}', '0 3 * * *', NULL)"), "22023"),
        (format!("pulse.schedule_job('{job}', '0 3 * * *', 'SELECT 1', enabled => NULL)"), "22004"),
        (format!("pulse.schedule_job('{job}', '0 3 * * *', 'SELECT 1', overlap => NULL)"), "22004"),
        (
            format!(
                "pulse.schedule_job('{job}', '0 3 * * *', 'SELECT 1', timezone => NULL, timeout => NULL,
                   comment => NULL, alert_after_failures => NULL, alert => NULL, max_attempts => NULL,
                   retry_backoff => NULL, http => NULL, database => NULL)"
            ),
            "ok",
        ),
        ("pulse.schedule_once(NULL, now(), 'SELECT 1')".into(), "22004"),
        (format!("pulse.schedule_once('{job}_1', NULL, 'SELECT 1')"), "22004"),
        (
            format!("pulse.schedule_once('{job}_1', now() + interval '1 day', 'SELECT 1', enabled => NULL)"),
            "22004",
        ),
        ("pulse.alter_job(NULL)".into(), "22004"),
        (
            format!(
                "pulse.alter_job('{job}', schedule => NULL, command => NULL, timezone => NULL,
                   enabled => NULL, timeout => NULL, overlap => NULL, comment => NULL, new_name => NULL,
                   run_at => NULL, alert_after_failures => NULL, alert => NULL, max_attempts => NULL,
                   retry_backoff => NULL, http => NULL, database => NULL)"
            ),
            "ok",
        ),
    ];
    let mut wrong = Vec::new();
    for (call, expected) in &table {
        let got = outcome(&mut c, call);
        if got != *expected {
            wrong.push(format!("{call}: expected {expected}, got {got}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // every function with arguments is in the table
    let functions: Vec<String> = c
        .query(
            "SELECT DISTINCT proname::text FROM pg_proc
              WHERE pronamespace = 'pulse'::regnamespace AND pronargs > 0",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for f in functions {
        assert!(
            table
                .iter()
                .any(|(call, _)| call.contains(&format!("pulse.{f}("))),
            "pulse.{f} is not in the NULL table"
        );
    }
}

#[test]
fn overflowing_intervals_are_22023() {
    let _jobs = Jobs::new();
    let mut c = admin();
    let q = unique("ovq");
    let job = unique("ovjob");
    c.batch_execute(&format!(
        "CREATE TABLE {q} (id bigserial PRIMARY KEY, v text); SELECT pulse.make_queue('{q}');"
    ))
    .unwrap();
    let _drop = Cleanup(vec![format!("DROP TABLE IF EXISTS {q}")]);
    let huge = "'178000000 years'";
    let req = "pulse.http_request('GET', 'http://127.0.0.1:9/')";
    for call in [
        format!("pulse.http_request('GET', 'http://127.0.0.1:9/', timeout => {huge})"),
        format!("pulse.http_request('GET', 'http://127.0.0.1:9/', timeout => '-178000000 years')"),
        format!("pulse.http_post('http://127.0.0.1:9/', timeout => {huge})"),
        format!("pulse.http_get('http://127.0.0.1:9/', timeout => {huge})"),
        format!("pulse.http_delete('http://127.0.0.1:9/', timeout => {huge})"),
        format!("pulse.http({req}, 3, {huge})"),
        format!("pulse.http({req}, 3, '200000 years')"),
        format!("pulse.schedule_job('{job}', '0 3 * * *', 'SELECT 1', timeout => {huge})"),
        format!("pulse.schedule_job('{job}', '0 3 * * *', 'SELECT 1', retry_backoff => {huge})"),
        format!("pulse.schedule_once('{job}', now(), 'SELECT 1', timeout => {huge})"),
        format!("pulse.alter_job('{job}', timeout => {huge})"),
        format!("pulse.alter_job('{job}', retry_backoff => {huge})"),
        format!("(SELECT count(*) FROM pulse.claim_batch('{q}', 10, {huge}))"),
        format!("(SELECT count(*) FROM pulse.claim_batch('{q}', 10, '290000 years'))"),
        format!("pulse.extend_lock('{q}', 1::bigint, {huge})"),
        format!("pulse.fail('{q}', 1::bigint, 'e', true, NULL, {huge})"),
        format!("pulse.fail('{q}', 1::bigint, 'e', true, NULL, '1s', {huge})"),
    ] {
        let mut tx = c.transaction().unwrap();
        let (msg, hint) = expect_error(tx.batch_execute(&format!("SELECT {call}")), "22023");
        assert!(
            msg.contains("out of range: at most 1000 years") || msg.contains("at most a day"),
            "{call}: {msg}"
        );
        assert!(hint.contains("=> '"), "{call}: {hint}");
        tx.rollback().unwrap();
    }
    // the stored timeout is what was asked for, never a wrapped-around value
    let t: i64 = c
        .query_one(
            &format!(
                "SELECT ({req_t} ->> 'timeout_ms')::bigint",
                req_t = "pulse.http_request('GET', 'http://127.0.0.1:9/', timeout => '1 day')"
            ),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(t, 86_400_000);
}

#[test]
fn urls_are_checked_at_call_time_with_the_clients_parser() {
    let _jobs = Jobs::new();
    let mut c = admin();
    let job = unique("urljob");
    for call in [
        "pulse.http_get('http://[::1/x')".to_string(),
        "pulse.http_post('http://[::1/x')".to_string(),
        "pulse.http_delete('http://999.1.1.1/')".to_string(),
        "pulse.http_request('GET', 'http://[::1/{{job_name}}')".to_string(),
        "pulse.http_request('GET', 'https://{{setting:app.settings.host}}:99999/')".to_string(),
        "pulse.http('{\"method\": \"GET\", \"url\": \"http://[::1/x\"}')".to_string(),
        format!(
            "pulse.schedule_once('{job}', now(), http => '{{\"method\": \"GET\", \"url\": \"http://exa%mple.com/\"}}')"
        ),
    ] {
        let mut tx = c.transaction().unwrap();
        let (msg, hint) = expect_error(tx.batch_execute(&format!("SELECT {call}")), "22023");
        assert!(msg.starts_with("invalid url:"), "{call}: {msg}");
        assert!(hint.contains("http"), "{call}: {hint}");
        tx.rollback().unwrap();
    }
    // placeholders standing for the scheme and host, a port or a path are fine
    for url in [
        "{{setting:app.settings.url}}/functions/v1/x",
        "https://{{setting:app.settings.host}}/x",
        "http://127.0.0.1:{{setting:app.settings.port}}/x",
        "http://[::ffff:127.0.0.1]:8080/a?b=c",
    ] {
        c.query_one("SELECT pulse.http_request('GET', $1)", &[&url])
            .unwrap_or_else(|e| panic!("{url}: {e}"));
    }
}

#[test]
fn https_with_a_company_ca_through_pulse_http_ca_file() {
    let tls = TlsServer::start();
    let mut c = admin();
    let _reset = Cleanup(vec![
        "ALTER SYSTEM RESET pulse.http_ca_file".into(),
        "SELECT pg_reload_conf()".into(),
    ]);
    let set = |c: &mut postgres::Client, path: &str| {
        c.batch_execute(&format!("ALTER SYSTEM SET pulse.http_ca_file = '{path}'"))
            .unwrap();
        c.batch_execute("SELECT pg_reload_conf()").unwrap();
    };
    let send = |c: &mut postgres::Client| -> (String, Option<i32>, Option<String>) {
        let id: i64 = c
            .query_one("SELECT pulse.http_get($1)", &[&tls.url("/x")])
            .unwrap()
            .get(0);
        wait_request_final(c, id)
    };
    // the system's roots do not include the test CA
    let (state, _, error) = send(&mut c);
    assert_eq!(state, "failed");
    let error = error.unwrap_or_default();
    assert!(
        error.contains("TLS handshake failed") && error.contains("certificate"),
        "{error}"
    );
    set(&mut c, tls.ca_file.to_str().unwrap());
    let (state, code, error) = wait_for(30, "the CA file to be used", || {
        let r = send(&mut c);
        (r.0 == "succeeded").then_some(r)
    });
    assert_eq!(
        (state.as_str(), code, error),
        ("succeeded", Some(200), None)
    );
    // an unreadable file: a WARNING in the log at reload, HTTPS requests fail saying why
    set(&mut c, "/nonexistent/pulse-ca.pem");
    let error = wait_for(30, "the unreadable CA file to be reported", || {
        let (state, _, error) = send(&mut c);
        let e = error.unwrap_or_default();
        (state == "failed" && e.contains("pulse.http_ca_file")).then_some(e)
    });
    assert!(
        error.contains("\"/nonexistent/pulse-ca.pem\" cannot be read"),
        "{error}"
    );
    let log = std::fs::read_to_string(format!("{}/server.log", pgdata())).unwrap_or_default();
    assert!(
        log.contains("WARNING:  pg_pulse http: pulse.http_ca_file \"/nonexistent/pulse-ca.pem\" cannot be read"),
        "no WARNING in the server log"
    );
}
