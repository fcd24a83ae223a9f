//! End-to-end: HTTP building blocks. Secrets are stored per role, shown by name only, readable
//! by no role and never written to the server log; `pulse.http_request` validates requests.
mod common;
use common::*;

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
