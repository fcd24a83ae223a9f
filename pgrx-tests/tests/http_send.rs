//! End-to-end: what an HTTP request sends (issue 16). Placeholders are expanded only in what the
//! request's author wrote as a template (URL, header values, a body marked `body_template`), never
//! in data (a body by default, params, an alert's text); every size limit applies to what is sent,
//! after expansion, without the HTTP worker ever building an over-long request; and a stored row
//! is checked again when it is sent. Each test failed on 0.3.0's code.
mod common;
use common::*;
use postgres::Client;
use pulse_e2e::server::Server;
use std::time::Duration;

const BIG: usize = 65_536;

fn request_id(c: &mut Client, sql: &str, url: &str) -> i64 {
    c.query_one(sql, &[&url]).unwrap().get(0)
}

/// A trigger of alice's (SECURITY DEFINER, so its requests are alice's and use her secrets) on a
/// table bob may write: what bob writes is data, sent as it is, and never reaches for her secret.
#[test]
fn data_written_by_another_role_never_expands_the_owners_secret() {
    let srv = Server::start();
    let mut admin = admin();
    let alice = new_role(&mut admin, "snd_alice");
    let bob = new_role(&mut admin, "snd_bob");
    let t = unique("snd_orders");
    let _cleanup = Cleanup(vec![
        format!("DROP TABLE IF EXISTS {t}; DROP FUNCTION IF EXISTS {t}_hook()"),
        drop_role_sql(&bob),
        drop_role_sql(&alice),
    ]);
    admin
        .batch_execute(&format!("GRANT CREATE ON SCHEMA public TO {alice}"))
        .unwrap();
    let secret = format!("alice-{}", unique("SECRET"));
    let mut a = connect_as(&alice);
    a.execute("SELECT pulse.set_secret('alice_key', $1)", &[&secret])
        .unwrap();
    a.batch_execute(&format!(
        "CREATE TABLE {t} (id int, note text, tags text[]);
         CREATE FUNCTION {t}_hook() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
         BEGIN
           PERFORM pulse.http_post('{url}', to_jsonb(NEW),
                                   '{{\"Authorization\": \"Bearer {{{{secret:alice_key}}}}\"}}',
                                   params => jsonb_build_object('note', NEW.note));
           RETURN NEW;
         END $$;
         CREATE TRIGGER {t}_hook AFTER INSERT ON {t} FOR EACH ROW EXECUTE FUNCTION {t}_hook();
         GRANT INSERT ON {t} TO {bob};",
        url = srv.url(&format!("/ok/{t}"))
    ))
    .unwrap();
    let mut b = connect_as(&bob);
    // a valid placeholder, an invalid one and an unclosed one: all just text, no error
    let notes = [
        "{{secret:alice_key}}",
        "{{x}}",
        "{{ setting:app.settings.x",
        "}}{{",
    ];
    for (i, n) in notes.iter().enumerate() {
        b.execute(
            &format!("INSERT INTO {t} VALUES ($1, $2, ARRAY[$2, 'plain'])"),
            &[&(i as i32), n],
        )
        .unwrap();
    }
    let seen = srv.wait_for(&format!("/ok/{t}"), notes.len(), Duration::from_secs(30));
    assert_eq!(seen.len(), notes.len());
    for s in &seen {
        let body = s.body_text();
        let row: serde_like::Row = serde_like::parse(&body);
        let n = notes[row.id as usize];
        // the body is the row's JSON, byte for byte: what to_jsonb(NEW) gives
        let expected: String = a
            .query_one(
                "SELECT jsonb_build_object('id', $1::int, 'note', $2::text, 'tags', ARRAY[$2::text, 'plain'])::text",
                &[&row.id, &n],
            )
            .unwrap()
            .get(0);
        assert_eq!(compact(&expected), body, "the body as sent");
        assert!(
            !body.contains(&secret),
            "alice's secret in the body: {body}"
        );
        assert!(
            !s.path.contains(&secret),
            "alice's secret in the URL: {}",
            s.path
        );
        // the header is alice's template: her secret, as she wrote it
        assert_eq!(
            s.header("authorization"),
            Some(format!("Bearer {secret}").as_str())
        );
    }
    // params are data too: percent-encoded, never expanded
    assert!(seen
        .iter()
        .any(|s| s.path.ends_with("?note=%7B%7Bsecret%3Aalice_key%7D%7D")));
    // (a request is recorded a moment after it arrived)
    let failed: i64 = wait_for(30, "the requests recorded", || {
        let r = admin
            .query_one(
                "SELECT count(*) FILTER (WHERE finished_at IS NULL),
                        count(*) FILTER (WHERE state <> 'succeeded')
                   FROM pulse.http_requests WHERE url LIKE $1",
                &[&format!("%/ok/{t}%")],
            )
            .unwrap();
        (r.get::<_, i64>(0) == 0).then(|| r.get::<_, i64>(1))
    });
    assert_eq!(failed, 0);
}

/// jsonb's text (`{"a": 1, "b": [1, 2]}`) as the compact JSON a request carries.
fn compact(jsonb_text: &str) -> String {
    let mut out = String::new();
    let mut in_str = false;
    let mut esc = false;
    for ch in jsonb_text.chars() {
        if in_str {
            out.push(ch);
            if esc {
                esc = false;
            } else if ch == '\\' {
                esc = true;
            } else if ch == '"' {
                in_str = false;
            }
        } else if ch == '"' {
            in_str = true;
            out.push(ch);
        } else if ch != ' ' {
            out.push(ch);
        }
    }
    out
}

/// Just enough JSON to find the row's id.
mod serde_like {
    pub struct Row {
        pub id: i32,
    }
    pub fn parse(body: &str) -> Row {
        let at = body.find("\"id\":").expect("an id") + 5;
        let digits: String = body[at..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        Row {
            id: digits.parse().unwrap(),
        }
    }
}

/// A body is a template only when its author says so (`body_template => true`), in an
/// after-commit request and in an HTTP job; stored as `"body_template": true`.
#[test]
fn a_body_marked_as_a_template_is_expanded() {
    let _jobs = Jobs::new();
    let srv = Server::start();
    let mut admin = admin();
    let role = new_role(&mut admin, "snd_tpl");
    let _cleanup = Cleanup(vec![drop_role_sql(&role)]);
    let mut u = connect_as(&role);
    u.execute(
        "SELECT pulse.set_secret('tpl_key', 'tpl-secret-value')",
        &[],
    )
    .unwrap();
    let stored: String = u
        .query_one(
            "SELECT pulse.http_request('POST', 'https://x.io', body => '{\"k\": \"{{secret:tpl_key}}\"}',
                                       body_template => true)::text",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(stored.contains("\"body_template\": true"), "{stored}");
    // without the mark, an invalid placeholder in a body is accepted (data), with it refused
    let (msg, _) = expect_error(
        u.query_one(
            "SELECT pulse.http_request('POST', 'https://x.io', body => '{\"k\": \"{{x}}\"}', body_template => true)",
            &[],
        ),
        "22023",
    );
    assert!(msg.contains("{{x}}"), "{msg}");
    let id = request_id(
        &mut u,
        "SELECT pulse.http_post($1, '{\"k\": \"{{secret:tpl_key}}\", \"n\": 1}', body_template => true)",
        &srv.url("/ok/tpl-post"),
    );
    assert_eq!(wait_request_final(&mut u, id).0, "succeeded");
    assert_eq!(
        srv.seen("/ok/tpl-post")[0].body_text(),
        r#"{"k":"tpl-secret-value","n":1}"#
    );
    let id = request_id(
        &mut u,
        "SELECT pulse.http(pulse.http_request('PUT', $1, body_text => 'run {{secret:tpl_key}}', body_template => true))",
        &srv.url("/ok/tpl-text"),
    );
    assert_eq!(wait_request_final(&mut u, id).0, "succeeded");
    assert_eq!(
        srv.seen("/ok/tpl-text")[0].body_text(),
        "run tpl-secret-value"
    );
    // the same body unmarked goes as it is
    let id = request_id(
        &mut u,
        "SELECT pulse.http_post($1, '{\"k\": \"{{secret:tpl_key}}\"}')",
        &srv.url("/ok/tpl-plain"),
    );
    assert_eq!(wait_request_final(&mut u, id).0, "succeeded");
    assert_eq!(
        srv.seen("/ok/tpl-plain")[0].body_text(),
        r#"{"k":"{{secret:tpl_key}}"}"#
    );
    // an HTTP job: its run context in a marked body
    let job = unique("snd_tpl_job");
    u.execute(
        "SELECT pulse.schedule_once($1, now(), http => pulse.http_request('POST', $2, '{}',
                    '{\"job\": \"{{job_name}}\", \"try\": \"{{attempt}}\"}', body_template => true))",
        &[&job, &srv.url("/ok/tpl-job")],
    )
    .unwrap();
    let seen = srv.wait_for("/ok/tpl-job", 1, Duration::from_secs(30));
    assert_eq!(
        seen[0].body_text(),
        format!(r#"{{"job":"{job}","try":"1"}}"#)
    );
}

/// The HTTP worker's peak memory (VmHWM) in kB.
fn http_worker_hwm_kb(c: &mut Client) -> (i32, u64) {
    let pid: i32 = c
        .query_one(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_pulse http'",
            &[],
        )
        .unwrap()
        .get(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM");
    (pid, kb)
}

/// 0.3.0 checked the body's size before its placeholders were filled in: 140 KB of
/// `{{secret:big}}` with a 64 KB secret sent 655 MB, and the worker grew to 1.4 GB. Now the
/// request fails, naming the limit, nothing is sent, and the worker never builds it.
#[test]
fn limits_apply_after_expansion_and_memory_stays_bounded() {
    let srv = Server::start();
    let mut admin = admin();
    let role = new_role(&mut admin, "snd_big");
    let _cleanup = Cleanup(vec![drop_role_sql(&role)]);
    let mut u = connect_as(&role);
    u.execute(
        "SELECT pulse.set_secret('big', repeat('s', $1))",
        &[&(BIG as i32)],
    )
    .unwrap();
    let (pid, before) = http_worker_hwm_kb(&mut admin);
    let header = request_id(
        &mut u,
        "SELECT pulse.http_get($1, headers => '{\"X-Big\": \"{{secret:big}}\"}')",
        &srv.url("/ok/big-header"),
    );
    let url = request_id(
        &mut u,
        "SELECT pulse.http_get($1 || '?k={{secret:big}}')",
        &srv.url("/ok/big-url"),
    );
    let (state, _, err) = wait_request_final(&mut u, header);
    assert_eq!(state, "failed");
    assert_eq!(
        err.as_deref(),
        Some("header \"X-Big\" is 65541 bytes once its placeholders are filled in, more than pulse.http_max_header_bytes (8192): not sent")
    );
    let (state, _, err) = wait_request_final(&mut u, url);
    assert_eq!(state, "failed");
    assert!(
        err.as_deref()
            .unwrap()
            .contains("pulse.http_max_url_bytes (16384)"),
        "{err:?}"
    );
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(request_id(
            &mut u,
            "SELECT pulse.http(pulse.http_request('POST', $1, body_text => repeat('{{secret:big}}', 10000),
                                                  body_template => true))",
            &srv.url(&format!("/ok/big-body/{i}")),
        ));
    }
    for id in &ids {
        let (state, code, err) = wait_request_final(&mut u, *id);
        assert_eq!((state.as_str(), code), ("failed", None));
        assert_eq!(
            err.as_deref(),
            Some("the body is 655360000 bytes once its placeholders are filled in, more than pulse.http_max_request_bytes (1048576): not sent")
        );
    }
    assert!(
        srv.seen("/ok/big").is_empty(),
        "an over-long request was sent"
    );
    assert_eq!(srv.connections(), 0);
    let (pid2, after) = http_worker_hwm_kb(&mut admin);
    assert_eq!(pid, pid2, "the HTTP worker restarted");
    assert!(
        after < before + 64 * 1024,
        "the HTTP worker's peak grew from {before} kB to {after} kB"
    );
    // refused at call time when what is written is already over a limit
    for (sql, setting) in [
        (
            "SELECT pulse.http_get('http://127.0.0.1:9/', headers => jsonb_build_object('X-Big', repeat('v', 5 * 1024 * 1024)))",
            "pulse.http_max_header_bytes (8192)",
        ),
        (
            "SELECT pulse.http_get('http://127.0.0.1:9/' || repeat('p', 20000))",
            "pulse.http_max_url_bytes (16384)",
        ),
        (
            "SELECT pulse.http_get('http://127.0.0.1:9/', jsonb_build_object('q', repeat('é', 6000)))",
            "pulse.http_max_url_bytes (16384)",
        ),
        (
            "SELECT pulse.http_request('GET', 'http://127.0.0.1:9/', (SELECT jsonb_object_agg('X-' || i, repeat('v', 8000)) FROM generate_series(1, 5) i))",
            "pulse.http_max_headers_bytes (32768)",
        ),
    ] {
        let (msg, hint) = expect_error(u.query_one(sql, &[]), "22023");
        assert!(msg.contains(setting), "{sql}: {msg}");
        assert!(hint.contains("raise the limit"), "{hint}");
    }
}

/// A row written straight into pulse.http_request (a superuser, or a role with
/// pg_write_all_data) with CR/LF in its method or a header: checked again when sent, it fails
/// with a clear message and nothing reaches the server.
#[test]
fn a_raw_row_cannot_split_the_request() {
    let srv = Server::start();
    let mut admin = admin();
    let role = new_role(&mut admin, "snd_raw");
    let _cleanup = Cleanup(vec![drop_role_sql(&role)]);
    let url = srv.url("/ok/raw");
    let smuggle = format!(
        "GET /smuggled HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\nGET",
        srv.port
    );
    let mut ids = Vec::new();
    for (req, what) in [
        (
            format!(
                r#"{{"method": {}, "url": "{url}", "headers": {{}}}}"#,
                json_str(&smuggle)
            ),
            "invalid method",
        ),
        (
            format!(r#"{{"method": "GET", "url": "{url}", "headers": {{"X-A\r\nX-Evil": "1"}}}}"#),
            "not a valid header name",
        ),
        (
            format!(
                r#"{{"method": "GET", "url": "{url}", "headers": {{"X-A": "1\r\n\r\nGET /smuggled HTTP/1.1"}}}}"#
            ),
            "CR, LF or NUL",
        ),
        (
            format!(r#"{{"method": "GET", "url": "{url}", "headers": {{"Content-Length": "0"}}}}"#),
            "set by pg_pulse",
        ),
    ] {
        let id: i64 = admin
            .query_one(
                "INSERT INTO pulse.http_request (owner, request) VALUES ($1::text::regrole::oid, $2::text::jsonb) RETURNING id",
                &[&role, &req],
            )
            .unwrap()
            .get(0);
        ids.push((id, what));
    }
    // wakes the worker at once
    admin
        .execute("SELECT pulse.http_get($1)", &[&srv.url("/ok/witness")])
        .unwrap();
    for (id, what) in ids {
        let (state, code, err) = wait_request_final(&mut admin, id);
        assert_eq!((state.as_str(), code), ("failed", None), "{what}");
        let err = err.unwrap();
        assert!(err.contains(what), "{what}: {err}");
        assert!(!err.contains('\r') && !err.contains('\n'), "{err:?}");
    }
    srv.wait_for("/ok/witness", 1, Duration::from_secs(30));
    assert!(srv.seen("/smuggled").is_empty(), "the request was split");
    assert!(
        srv.seen("/ok/raw").is_empty(),
        "a malformed request was sent"
    );
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// pg_pulse's own webhook alert carries the job's name and the run's error: data, sent as it is.
/// 0.3.0 expanded them: `{{x}}` in an error lost the alert, `{{secret:...}}` sent the owner's
/// secret to the alert endpoint.
#[test]
fn a_webhook_alert_sends_its_text_as_it_is() {
    let _jobs = Jobs::new();
    let srv = Server::start();
    let mut admin = admin();
    let role = new_role(&mut admin, "snd_alert");
    let _cleanup = Cleanup(vec![drop_role_sql(&role)]);
    let mut u = connect_as(&role);
    u.execute(
        "SELECT pulse.set_secret('hook_key', 'hook-secret-value')",
        &[],
    )
    .unwrap();
    let job = format!(
        "{} {{{{x}}}} {{{{secret:hook_key}}}}",
        unique("snd_alert_job")
    );
    u.execute(
        "SELECT pulse.schedule_once($1, now(),
                  $q$DO $b$ BEGIN RAISE EXCEPTION 'boom {{x}} {{secret:hook_key}} {{'; END $b$$q$,
                  alert_after_failures => 1,
                  alert => jsonb_build_object('webhook', pulse.http_request('POST', $2)))",
        &[&job, &srv.url("/ok/alert-hook")],
    )
    .unwrap();
    let hooks = srv.wait_for("/ok/alert-hook", 1, Duration::from_secs(60));
    assert_eq!(hooks.len(), 1, "the alert was not sent");
    let body = hooks[0].body_text();
    assert!(!body.contains("hook-secret-value"), "{body}");
    assert!(body.contains(&job), "{body}");
    assert!(body.contains("boom {{x}} {{secret:hook_key}} {{"), "{body}");
}

/// A row written into pulse.http_request by hand (superuser or pg_write_all_data) is small on
/// disk when its text compresses, but 50 MB once read: the worker read every claimed row whole
/// (four such rows took its peak memory from 34 MB to 525 MB). Now a stored request larger than
/// any request within the limits fails unread, naming the limits, and nothing is sent.
#[test]
fn a_stored_request_too_large_to_read_fails_unread() {
    let srv = Server::start();
    let mut admin = admin();
    let role = new_role(&mut admin, "snd_huge");
    let _cleanup = Cleanup(vec![drop_role_sql(&role)]);
    let (_, before) = http_worker_hwm_kb(&mut admin);
    let ids: Vec<i64> = admin
        .query(
            "INSERT INTO pulse.http_request (owner, request)
             SELECT $1::text::regrole::oid,
                    jsonb_build_object('method', 'GET', 'url', $2::text, 'headers', '{}'::jsonb,
                                       'body_text', repeat('x', 50000000))
               FROM generate_series(1, 4) RETURNING id",
            &[&role, &srv.url("/ok/huge")],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    admin
        .execute("SELECT pulse.http_get($1)", &[&srv.url("/ok/witness-huge")])
        .unwrap();
    for id in ids {
        let (state, code, err) = wait_request_final(&mut admin, id);
        assert_eq!((state.as_str(), code), ("failed", None));
        let err = err.unwrap();
        assert!(
            err.contains("the stored request is") && err.contains("pulse.http_max_request_bytes"),
            "{err}"
        );
    }
    srv.wait_for("/ok/witness-huge", 1, Duration::from_secs(30));
    assert!(srv.seen("/ok/huge").is_empty(), "an oversized row was sent");
    let (_, after) = http_worker_hwm_kb(&mut admin);
    // the rows are never read whole: far less than one of them (50 MB)
    assert!(
        after < before + 40_000,
        "the HTTP worker's peak memory grew from {before} kB to {after} kB"
    );
}
