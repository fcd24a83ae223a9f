//! From a stored request (as `pulse.http_request` builds it, placeholders unresolved) to a request
//! ready to send: placeholders resolved through a [`Resolve`], URL and headers checked once more
//! (a value may have made them invalid). Errors name what is wrong, never a value. The secrets a
//! request used are returned with it, so that they can be scrubbed from what comes back
//! ([`scrub`]). Pure Rust: the lookups are the caller's.

use super::client;
use super::request;
use super::template::{self, Resolve, Var};
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::time::{Duration, Instant};

/// (name, value) of the secrets a request contains.
pub type Secrets = Vec<(String, String)>;

/// A request ready to send with the secrets it contains, or why it can't be sent.
pub type Resolved = Result<(client::Request, Secrets), String>;

/// A [`Resolve`] that remembers every secret value it hands out.
struct Recording<'a> {
    inner: &'a dyn Resolve,
    used: RefCell<Secrets>,
}

impl Resolve for Recording<'_> {
    fn secret(&self, name: &str) -> Option<String> {
        let v = self.inner.secret(name);
        if let Some(v) = &v {
            self.used.borrow_mut().push((name.to_string(), v.clone()));
        }
        v
    }
    fn setting(&self, name: &str) -> Option<String> {
        self.inner.setting(name)
    }
    fn context(&self, var: Var) -> String {
        self.inner.context(var)
    }
}

/// Builds the request to send from a stored request. `max_body`: longest response body kept;
/// `not_before`: the instant before which it must not go out (a run claimed a little early).
pub fn build(
    req: &Value,
    r: &dyn Resolve,
    max_body: usize,
    not_before: Option<Instant>,
) -> Resolved {
    let ctx = Recording {
        inner: r,
        used: RefCell::new(Vec::new()),
    };
    let render = |s: &str| -> Result<String, String> {
        let parts = template::parse(s).map_err(|e| e.to_string())?;
        template::render(&parts, &ctx).map_err(|m| m.to_string())
    };
    let field = |k: &str| req.get(k).and_then(Value::as_str).unwrap_or_default();
    let method = field("method").to_ascii_uppercase();
    let mut url = render(field("url"))?;
    if let Some(Value::Object(params)) = req.get("params") {
        let mut pairs = Vec::new();
        for (k, v) in params {
            pairs.push((render(k)?, render(v.as_str().unwrap_or_default())?));
        }
        url = client::with_query(&url, &pairs);
    }
    if request::check_resolved_url(&url).is_err() {
        return Err(
            "the URL is not a valid http(s) URL once its placeholders are filled in".into(),
        );
    }
    let mut headers = Vec::new();
    if let Some(Value::Object(h)) = req.get("headers") {
        for (k, v) in h {
            let value = render(v.as_str().unwrap_or_default())?;
            if request::header(k, &value).is_err() {
                return Err(format!(
                    "header \"{k}\" is not valid once its placeholders are filled in"
                ));
            }
            headers.push((k.clone(), value));
        }
    }
    let has = |headers: &[(String, String)], n: &str| {
        headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n))
    };
    let body = match (
        req.get("body").filter(|b| !b.is_null()),
        req.get("body_text").and_then(Value::as_str),
    ) {
        (Some(b), _) => {
            let b = render_json(b, &render)?;
            if !has(&headers, "content-type") {
                headers.push(("Content-Type".into(), "application/json".into()));
            }
            Some(serde_json::to_vec(&b).map_err(|e| e.to_string())?)
        }
        (None, Some(t)) => {
            if !has(&headers, "content-type") {
                headers.push(("Content-Type".into(), "text/plain; charset=utf-8".into()));
            }
            Some(render(t)?.into_bytes())
        }
        (None, None) => None,
    };
    let timeout_ms = req
        .get("timeout_ms")
        .and_then(Value::as_i64)
        .unwrap_or(30_000)
        .max(1);
    let secrets = ctx.used.into_inner();
    Ok((
        client::Request {
            tag: 0,
            key: 0,
            method,
            url,
            headers,
            body,
            timeout: Duration::from_millis(timeout_ms as u64),
            follow_redirects: req
                .get("follow_redirects")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            max_response_bytes: max_body,
            not_before,
        },
        secrets,
    ))
}

/// Resolves every string (not the keys) of a JSON body.
pub fn render_json(
    v: &Value,
    render: &dyn Fn(&str) -> Result<String, String>,
) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) => Value::String(render(s)?),
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| render_json(x, render))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| Ok((k.clone(), render_json(x, render)?)))
                .collect::<Result<Map<_, _>, String>>()?,
        ),
        other => other.clone(),
    })
}

/// Replaces secret values (4 bytes or more), also JSON-escaped or URL-encoded, with
/// `[secret:NAME]` (see `crate::http::scrub`).
pub use super::scrub::scrub;

#[cfg(test)]
mod tests {
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

    fn req() -> Value {
        json!({
            "method": "post",
            "url": "{{setting:app.settings.base}}/hook",
            "params": {"run": "{{run_id}}"},
            "headers": {"Authorization": "Bearer {{secret:key}}"},
            "body": {"job": "{{job_name}}", "n": [1, "{{attempt}}"], "{{job_name}}": true},
            "timeout_ms": 1500
        })
    }

    #[test]
    fn builds_a_request_with_everything_resolved() {
        let (r, secrets) = build(&req(), &R, 100, None).unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(r.url, "http://127.0.0.1:9/hook?run=42");
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
        let v = json!({"method": "PUT", "url": "http://h/x", "body_text": "job {{job_name}}"});
        let (r, secrets) = build(&v, &R, 10, None).unwrap();
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
        let e = build(&v, &R, 10, None).unwrap_err();
        assert!(e.contains("\"other\""), "{e}");
        // a resolved secret is never part of an error
        let v = json!({"method": "GET", "url": "http://h/",
                       "headers": {"X-Key": "{{secret:key}}", "X-S": "{{setting:app.settings.none}}"}});
        let e = build(&v, &R, 10, None).unwrap_err();
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
        let e = build(&v, &Bad, 10, None).unwrap_err();
        assert!(e.contains("URL"), "{e}");
        assert!(!e.contains("not a url"), "{e}");
        let v = json!({"method": "GET", "url": "http://h/", "headers": {"X-A": "{{secret:a}}"}});
        let e = build(&v, &Bad, 10, None).unwrap_err();
        assert!(e.contains("\"X-A\""), "{e}");
        assert!(!e.contains("break"), "{e}");
    }

    #[test]
    fn a_secret_echoed_by_the_server_is_scrubbed() {
        let (_, secrets) = build(&req(), &R, 100, None).unwrap();
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
}
