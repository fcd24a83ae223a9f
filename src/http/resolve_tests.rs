//! Unit tests of `resolve.rs`.
use super::*;
use serde_json::json;

struct R;
impl Resolve for R {
    fn secret(&self, name: &str) -> Option<String> {
        (name == "key").then(|| "s3cr3t-value".to_string())
    }
    fn setting(&self, name: &str) -> Option<String> {
        (name == "app.settings.base").then(|| "http://127.0.0.1:9".to_string())
    }
    fn context(&self, v: Var) -> String {
        match v {
            Var::JobName => "nightly".into(),
            Var::RunId => "42".into(),
            Var::ScheduledFor => "2026-01-01T00:00:00Z".into(),
            Var::Attempt => "2".into(),
        }
    }
}

const L: Limits = Limits::DEFAULT;

fn req() -> Value {
    json!({
        "method": "post",
        "url": "{{setting:app.settings.base}}/hook",
        "params": {"run": "{{run_id}}"},
        "headers": {"Authorization": "Bearer {{secret:key}}"},
        "body": {"job": "{{job_name}}", "n": [1, "{{attempt}}"], "{{job_name}}": true},
        "body_template": true,
        "timeout_ms": 1500
    })
}

#[test]
fn builds_a_request_with_everything_resolved() {
    let (r, secrets) = build(&req(), &R, &L, 100, None).unwrap();
    assert_eq!(r.method, "POST");
    // params are data: never resolved
    assert_eq!(r.url, "http://127.0.0.1:9/hook?run=%7B%7Brun_id%7D%7D");
    assert!(r
        .headers
        .contains(&("Authorization".into(), "Bearer s3cr3t-value".into())));
    assert!(r
        .headers
        .contains(&("Content-Type".into(), "application/json".into())));
    let body: Value = serde_json::from_slice(r.body.as_deref().unwrap()).unwrap();
    // strings are resolved, keys are not
    assert_eq!(
        body,
        json!({"job": "nightly", "n": [1, "2"], "{{job_name}}": true})
    );
    assert_eq!(r.timeout, Duration::from_millis(1500));
    assert_eq!(r.max_response_bytes, 100);
    assert_eq!(secrets, vec![("key".into(), "s3cr3t-value".into())]);
}

#[test]
fn text_bodies_get_a_text_content_type() {
    let v = json!({"method": "PUT", "url": "http://h/x", "body_text": "job {{job_name}}",
                   "body_template": true});
    let (r, secrets) = build(&v, &R, &L, 10, None).unwrap();
    assert_eq!(r.body.as_deref(), Some(&b"job nightly"[..]));
    assert!(r
        .headers
        .contains(&("Content-Type".into(), "text/plain; charset=utf-8".into())));
    assert!(secrets.is_empty());
    assert_eq!(r.timeout, Duration::from_secs(30));
}

#[test]
fn missing_placeholders_are_named_never_their_values() {
    let v = json!({"method": "GET", "url": "http://h/{{secret:other}}",
                   "headers": {"X-Key": "{{secret:key}}"}});
    let e = build(&v, &R, &L, 10, None).unwrap_err();
    assert!(e.contains("\"other\""), "{e}");
    // a resolved secret is never part of an error
    let v = json!({"method": "GET", "url": "http://h/",
                   "headers": {"X-Key": "{{secret:key}}", "X-S": "{{setting:app.settings.none}}"}});
    let e = build(&v, &R, &L, 10, None).unwrap_err();
    assert!(e.contains("app.settings.none"), "{e}");
    assert!(!e.contains("s3cr3t"), "{e}");
}

#[test]
fn values_that_break_the_url_or_a_header_are_refused_without_showing_them() {
    struct Bad;
    impl Resolve for Bad {
        fn secret(&self, _: &str) -> Option<String> {
            Some("line\r\nbreak".into())
        }
        fn setting(&self, _: &str) -> Option<String> {
            Some("not a url".into())
        }
        fn context(&self, _: Var) -> String {
            String::new()
        }
    }
    let v = json!({"method": "GET", "url": "{{setting:app.settings.x}}"});
    let e = build(&v, &Bad, &L, 10, None).unwrap_err();
    assert!(e.contains("URL"), "{e}");
    assert!(!e.contains("not a url"), "{e}");
    let v = json!({"method": "GET", "url": "http://h/", "headers": {"X-A": "{{secret:a}}"}});
    let e = build(&v, &Bad, &L, 10, None).unwrap_err();
    assert!(e.contains("\"X-A\""), "{e}");
    assert!(!e.contains("break"), "{e}");
}

#[test]
fn a_secret_echoed_by_the_server_is_scrubbed() {
    let (_, secrets) = build(&req(), &R, &L, 100, None).unwrap();
    let echoed = "authorization: Bearer s3cr3t-value\n{\"k\": \"s3cr3t-value\"}";
    let s = scrub(echoed, &secrets);
    assert!(!s.contains("s3cr3t-value"), "{s}");
    assert_eq!(
        s,
        "authorization: Bearer [secret:key]\n{\"k\": \"[secret:key]\"}"
    );
    // values shorter than 4 characters are left alone (they would scrub ordinary text)
    assert_eq!(scrub("a ab abc", &[("x".into(), "ab".into())]), "a ab abc");
}

#[test]
fn data_is_sent_as_it_is() {
    // a body not marked as a template, params: placeholders (valid or not) are just text
    let v = json!({"method": "POST", "url": "http://h/x",
                   "headers": {"Authorization": "Bearer {{secret:key}}"},
                   "params": {"q": "{{secret:key}}", "{{x}}": "{{x"},
                   "body": {"name": "{{secret:key}}", "bad": "{{x}}", "open": "{{"}});
    let (r, secrets) = build(&v, &R, &L, 10, None).unwrap();
    assert_eq!(
        r.url,
        "http://h/x?q=%7B%7Bsecret%3Akey%7D%7D&%7B%7Bx%7D%7D=%7B%7Bx"
    );
    let body: Value = serde_json::from_slice(r.body.as_deref().unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"name": "{{secret:key}}", "bad": "{{x}}", "open": "{{"})
    );
    assert!(!String::from_utf8_lossy(r.body.as_deref().unwrap()).contains("s3cr3t"));
    // the header (a template) was resolved: its secret is recorded once
    assert_eq!(secrets, vec![("key".into(), "s3cr3t-value".into())]);
    let v = json!({"method": "POST", "url": "http://h/x", "body_text": "{{secret:key}} {{x}}"});
    let (r, secrets) = build(&v, &R, &L, 10, None).unwrap();
    assert_eq!(r.body.as_deref(), Some(&b"{{secret:key}} {{x}}"[..]));
    assert!(secrets.is_empty());
}

struct Big;
impl Resolve for Big {
    fn secret(&self, _: &str) -> Option<String> {
        Some("x".repeat(65_536))
    }
    fn setting(&self, _: &str) -> Option<String> {
        None
    }
    fn context(&self, _: Var) -> String {
        String::new()
    }
}

#[test]
fn limits_apply_to_what_is_sent() {
    // the 655 MB body of 0.3.0: refused from the lengths alone
    let v = json!({"method": "POST", "url": "http://h/x", "body_template": true,
                   "body_text": "{{secret:big}}".repeat(10_000)});
    let e = build(&v, &Big, &L, 10, None).unwrap_err();
    assert_eq!(
        e,
        "the body is 655360000 bytes once its placeholders are filled in, more than pulse.http_max_request_bytes (1048576): not sent"
    );
    // a JSON template body: strings count as they are resolved, the JSON text is bounded
    let v = json!({"method": "POST", "url": "http://h/x", "body_template": true,
                   "body": vec!["{{secret:big}}"; 10_000]});
    let e = build(&v, &Big, &L, 10, None).unwrap_err();
    assert_eq!(e, "the body is at least 1114112 bytes once its placeholders are filled in, more than pulse.http_max_request_bytes (1048576): not sent");
    let v = json!({"method": "POST", "url": "http://h/x", "body_template": true,
                   "body": vec!["\u{1}"; 200_000]});
    let e = build(&v, &Big, &L, 10, None).unwrap_err();
    assert!(
        e.contains("more than pulse.http_max_request_bytes (1048576) bytes as JSON"),
        "{e}"
    );
    // a stored body over the limit (a raw row) is not sent either
    let v = json!({"method": "POST", "url": "http://h/x", "body_text": "x".repeat(1_048_577)});
    assert!(build(&v, &Big, &L, 10, None)
        .unwrap_err()
        .contains("1048577 bytes"));
    let v = json!({"method": "POST", "url": "http://h/x", "body": "x".repeat(1_048_577)});
    assert!(build(&v, &Big, &L, 10, None).is_err());
    // URL, one header, all headers
    let v = json!({"method": "GET", "url": "http://h/{{secret:big}}"});
    let e = build(&v, &Big, &L, 10, None).unwrap_err();
    assert_eq!(e, "the URL is 65545 bytes once its placeholders are filled in, more than pulse.http_max_url_bytes (16384): not sent");
    let v = json!({"method": "GET", "url": "http://h/", "params": {"q": "x".repeat(16_380)}});
    let e = build(&v, &Big, &L, 10, None).unwrap_err();
    assert!(e.contains("the URL with its params is 16392 bytes"), "{e}");
    let v = json!({"method": "GET", "url": "http://h/", "headers": {"X-K": "{{secret:big}}"}});
    let e = build(&v, &Big, &L, 10, None).unwrap_err();
    assert_eq!(e, "header \"X-K\" is 65539 bytes once its placeholders are filled in, more than pulse.http_max_header_bytes (8192): not sent");
    let small = Limits {
        header: 100_000,
        ..L
    };
    let h: Map<String, Value> = (0..3)
        .map(|i| (format!("X-{i}"), Value::from("{{secret:big}}")))
        .collect();
    let v = json!({"method": "GET", "url": "http://h/", "headers": h});
    let e = build(&v, &Big, &small, 10, None).unwrap_err();
    assert!(e.starts_with("the headers together is"), "{e}");
    assert!(e.contains("pulse.http_max_headers_bytes (32768)"), "{e}");
    // at the limit exactly: sent
    let v = json!({"method": "POST", "url": "http://h/x", "body_template": true,
                   "body_text": "{{secret:big}}".repeat(16)});
    assert_eq!(
        build(&v, &Big, &L, 10, None).unwrap().0.body.unwrap().len(),
        1_048_576
    );
}

#[test]
fn a_stored_row_is_checked_again_when_sent() {
    for (v, what) in [
        (
            json!({"method": "GET\r\nX-Evil: 1", "url": "http://h/"}),
            "method",
        ),
        (
            json!({"method": "GET / HTTP/1.1\r\n", "url": "http://h/"}),
            "method",
        ),
        (
            json!({"method": "GET", "url": "http://h/", "headers": {"X-A\r\nEvil": "1"}}),
            "name",
        ),
        (
            json!({"method": "GET", "url": "http://h/", "headers": {"X-A": "1\r\nEvil: 2"}}),
            "CR, LF",
        ),
        (
            json!({"method": "GET", "url": "http://h/", "headers": {"Host": "evil"}}),
            "Host",
        ),
        (json!({"method": "GET", "url": "http://h/\r\nX: 1"}), "URL"),
    ] {
        let e = build(&v, &R, &L, 10, None).unwrap_err();
        assert!(e.contains(what), "{v}: {e}");
        assert!(!e.contains('\r') && !e.contains('\n'), "{v}: {e}");
    }
}
