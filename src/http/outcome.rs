//! What is stored of a reply: status, headers and body with the request's secrets scrubbed,
//! timings, the message and `response` of an HTTP run, and the delay before a request's retry.
//! Pure Rust.

use super::client::{self, Reply, Verdict};
use super::resolve::scrub;
use crate::run::RunStatus;
use serde_json::{Map, Value};
use std::time::Duration;

/// A reply as stored: status, headers (JSON text), body, truncated, error, timings (JSON text).
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub status_code: Option<i32>,
    pub headers: Option<String>,
    pub body: Option<String>,
    pub truncated: Option<bool>,
    pub error: Option<String>,
    pub timings: String,
    pub retry_after: Option<Duration>,
}

/// The stored form of a reply; `secrets` (name, value) are replaced with `[secret:NAME]`.
pub fn stored(r: &Reply, secrets: &[(String, String)]) -> Stored {
    let ms = |d: Duration| (d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
    let mut timings = Map::new();
    timings.insert("queued_ms".into(), Value::from(ms(r.queued)));
    if let Some(h) = r.headers_after {
        timings.insert("headers_ms".into(), Value::from(ms(h)));
    }
    timings.insert("total_ms".into(), Value::from(ms(r.total)));
    let timings = Value::Object(timings).to_string();
    match &r.result {
        Ok(resp) => {
            let mut h = Map::new();
            for (k, v) in &resp.headers {
                let k = k.to_ascii_lowercase();
                let v = scrub(v, secrets);
                match h.get_mut(&k) {
                    Some(Value::String(prev)) => {
                        prev.push_str(", ");
                        prev.push_str(&v);
                    }
                    _ => {
                        h.insert(k, Value::String(v));
                    }
                }
            }
            let body = String::from_utf8_lossy(&resp.body).replace('\0', "\u{FFFD}");
            Stored {
                status_code: Some(resp.status as i32),
                headers: Some(Value::Object(h).to_string()),
                body: Some(scrub(&body, secrets)),
                truncated: Some(resp.truncated),
                error: None,
                timings,
                retry_after: resp
                    .header("retry-after")
                    .and_then(|v| client::parse_retry_after(v, chrono::Utc::now())),
            }
        }
        Err(f) => Stored {
            status_code: None,
            headers: None,
            body: None,
            truncated: None,
            error: Some(scrub(&f.message, secrets)),
            timings,
            retry_after: None,
        },
    }
}

/// A run's or request's final status for a verdict.
pub fn status_of(v: Verdict) -> RunStatus {
    match v {
        Verdict::Succeeded => RunStatus::Succeeded,
        Verdict::Failed { .. } => RunStatus::Failed,
        Verdict::TimedOut => RunStatus::TimedOut,
    }
}

/// Worth another attempt (connection errors, timeouts, 429, 5xx).
pub fn retryable(v: Verdict) -> bool {
    matches!(v, Verdict::Failed { retry: true } | Verdict::TimedOut)
}

/// An HTTP run's message: `HTTP 200 OK`, with the start of the body (on one line) when it did not
/// succeed, or the error.
pub fn run_message(r: &Reply, s: &Stored) -> String {
    match &r.result {
        Ok(resp) => {
            let mut m = format!("HTTP {} {}", resp.status, resp.reason);
            if r.verdict() != Verdict::Succeeded {
                if let Some(b) = s.body.as_deref().filter(|b| !b.trim().is_empty()) {
                    // the start of the body, on one line (all of it is in `response`)
                    let head: String = b.split_whitespace().collect::<Vec<_>>().join(" ");
                    m.push_str(": ");
                    m.push_str(&head.chars().take(300).collect::<String>());
                }
            }
            m
        }
        Err(_) => s.error.clone().unwrap_or_default(),
    }
}

/// An HTTP run's `response` (JSON text): status_code, headers, body, body_truncated, error,
/// timings.
pub fn run_response(s: &Stored) -> String {
    let mut response = Map::new();
    response.insert(
        "status_code".into(),
        s.status_code.map_or(Value::Null, Value::from),
    );
    response.insert(
        "headers".into(),
        s.headers
            .as_deref()
            .and_then(|h| serde_json::from_str(h).ok())
            .unwrap_or(Value::Null),
    );
    response.insert(
        "body".into(),
        s.body.clone().map_or(Value::Null, Value::String),
    );
    response.insert(
        "body_truncated".into(),
        s.truncated.map_or(Value::Null, Value::Bool),
    );
    response.insert(
        "error".into(),
        s.error.clone().map_or(Value::Null, Value::String),
    );
    response.insert(
        "timings".into(),
        serde_json::from_str(&s.timings).unwrap_or(Value::Null),
    );
    Value::Object(response).to_string()
}

/// The delay before attempt `attempt + 1` of an after-commit request (backoff `backoff_us`,
/// doubling, jitter from `unit` in [0, 1), no sooner than a server's Retry-After).
pub fn request_retry_delay(
    backoff_us: i64,
    attempt: i32,
    unit: f64,
    retry_after: Option<Duration>,
) -> Duration {
    let base = Duration::from_micros(backoff_us.max(1) as u64);
    crate::retry::Backoff {
        base,
        cap: base.max(Duration::from_secs(3600)),
        jitter: crate::retry::Backoff::default().jitter,
    }
    .delay_honouring(attempt.max(1) as u32, unit, retry_after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use client::{Failure, FailureKind, Response};

    fn reply(result: Result<Response, Failure>) -> Reply {
        Reply {
            tag: 1,
            result,
            queued: Duration::from_micros(1500),
            headers_after: Some(Duration::from_millis(3)),
            total: Duration::from_millis(4),
        }
    }

    fn resp(status: u16, headers: &[(&str, &str)], body: &str) -> Response {
        Response {
            status,
            reason: "Reason".into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
            truncated: false,
        }
    }

    #[test]
    fn echoed_secrets_are_scrubbed_from_headers_body_and_errors() {
        let secrets = vec![("token".to_string(), "tok-123456".to_string())];
        let r = reply(Ok(resp(
            200,
            &[("X-Echo", "Bearer tok-123456"), ("x-echo", "again")],
            "you sent tok-123456",
        )));
        let s = stored(&r, &secrets);
        assert_eq!(s.body.as_deref(), Some("you sent [secret:token]"));
        let h: Value = serde_json::from_str(s.headers.as_deref().unwrap()).unwrap();
        assert_eq!(h["x-echo"], "Bearer [secret:token], again");
        let r = reply(Err(Failure {
            kind: FailureKind::Connect,
            message: "failed near tok-123456".into(),
        }));
        let s = stored(&r, &secrets);
        assert_eq!(s.error.as_deref(), Some("failed near [secret:token]"));
        assert!(!run_response(&s).contains("tok-123456"));
        assert!(!run_message(&r, &s).contains("tok-123456"));
    }

    #[test]
    fn run_messages_and_responses() {
        let r = reply(Ok(resp(500, &[("Retry-After", "7")], "  boom\n  here ")));
        let s = stored(&r, &[]);
        assert_eq!(run_message(&r, &s), "HTTP 500 Reason: boom here");
        assert_eq!(s.retry_after, Some(Duration::from_secs(7)));
        assert_eq!(status_of(r.verdict()), RunStatus::Failed);
        assert!(retryable(r.verdict()));
        let v: Value = serde_json::from_str(&run_response(&s)).unwrap();
        assert_eq!(v["status_code"], 500);
        assert_eq!(v["timings"]["queued_ms"], 1.5);
        let r = reply(Ok(resp(204, &[], "ignored on success")));
        assert_eq!(run_message(&r, &stored(&r, &[])), "HTTP 204 Reason");
        assert!(!retryable(r.verdict()));
    }

    #[test]
    fn retry_delays_honour_retry_after() {
        let d = request_retry_delay(1_000_000, 1, 0.5, Some(Duration::from_secs(30)));
        assert!(d >= Duration::from_secs(30), "{d:?}");
        let d = request_retry_delay(1_000_000, 1, 0.5, None);
        assert!(d <= Duration::from_secs(2), "{d:?}");
    }
}
