//! `pulse.http_request` (builds and validates a request description, jsonb) and the after-commit
//! requests `pulse.http_post`, `http_get`, `http_delete` and `http`: each stores a request in
//! `pulse.http_request` and wakes the HTTP worker when the transaction commits.

use super::request::{self, Spec};
use crate::pgutil::{self, interval_arg, not_null, privileged, raise};
use pgrx::prelude::*;
use pgrx::{JsonB, PgSqlErrorCode};
use serde_json::{Map, Value};

fn reject(e: request::Invalid) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        e.to_string(),
        e.hint,
    )
}

fn bad(field: &'static str, message: String, hint: &'static str) -> request::Invalid {
    request::Invalid {
        field,
        message,
        hint,
    }
}

/// A JSON object of strings (headers, params), checked.
fn string_map(
    field: &'static str,
    v: Option<&Value>,
) -> Result<Map<String, Value>, request::Invalid> {
    match v {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => {
            for (k, v) in m {
                if !v.is_string() {
                    return Err(bad(
                        field,
                        format!("the value of \"{k}\" must be a string, not {v}"),
                        "Pass a JSON object of strings, e.g. '{\"Content-Type\": \"application/json\"}'.",
                    ));
                }
            }
            Ok(m.clone())
        }
        Some(other) => Err(bad(
            field,
            format!("{other} is not a JSON object"),
            "Pass a JSON object of strings, e.g. '{\"Content-Type\": \"application/json\"}'.",
        )),
    }
}

/// An optional boolean of a request description (absent or null: false).
fn flag(
    o: &Map<String, Value>,
    key: &'static str,
    hint: &'static str,
) -> Result<bool, request::Invalid> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(bad(key, format!("{other} is not a boolean"), hint)),
    }
}

/// Checks a request description (as built by `pulse.http_request`, or written by hand) and
/// returns its normalized form: method, url, headers, params, body or body_text, timeout_ms,
/// follow_redirects, and `"body_template": true` when the body is a template. Placeholders are
/// checked in the URL and header values, and in the body only when it is marked as a template:
/// params and an unmarked body are data, sent as they are (`{{...}}` in them is just text).
/// Sizes are checked against the limits (`pulse.http_max_*_bytes`) on what is written; the HTTP
/// worker checks them again on what is sent.
pub fn normalize(v: &Value) -> Result<Value, request::Invalid> {
    let Some(o) = v.as_object() else {
        return Err(bad(
            "request",
            format!("{v} is not a JSON object"),
            "Build it with pulse.http_request('POST', 'https://...', ...).",
        ));
    };
    for k in o.keys() {
        if !matches!(
            k.as_str(),
            "method"
                | "url"
                | "headers"
                | "params"
                | "body"
                | "body_text"
                | "timeout_ms"
                | "follow_redirects"
                | "body_template"
        ) {
            return Err(bad(
                "request",
                format!("unknown key \"{k}\""),
                "Build requests with pulse.http_request(method, url, headers, body, timeout, follow_redirects, body_text, body_template).",
            ));
        }
    }
    let text = |k: &'static str| -> Result<String, request::Invalid> {
        o.get(k)
            .and_then(Value::as_str)
            .map(|s| s.trim().to_string())
            .ok_or_else(|| {
                bad(
                    k,
                    "is missing (it must be a string)".into(),
                    "pulse.http_request('GET', 'https://example.com/health')",
                )
            })
    };
    let method = request::method(&text("method")?)?;
    let url = text("url")?;
    let headers = string_map("headers", o.get("headers"))?;
    let params = string_map("params", o.get("params"))?;
    let body = o.get("body").filter(|b| !b.is_null()).cloned();
    let body_text = match o.get("body_text") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(bad(
                "body_text",
                format!("{other} is not a string"),
                "Pass body_text => 'plain text'.",
            ))
        }
    };
    if body.is_some() && body_text.is_some() {
        return Err(bad(
            "body",
            "pass body (JSON) or body_text, not both".into(),
            "body => '{\"a\": 1}' sends JSON; body_text => 'plain text' sends text.",
        ));
    }
    let body_template = flag(
        o,
        "body_template",
        "Pass body_template => true to fill in placeholders in the body.",
    )?;
    // params and an unmarked body are data: never parsed as templates
    if body_template {
        if let Some(b) = &body {
            check_body_templates(b)?;
        }
        if let Some(t) = &body_text {
            super::template::parse(t)
                .map_err(|e| bad("body", e.to_string(), super::template::TEMPLATE_HINT))?;
        }
    }
    let timeout_ms = match o.get("timeout_ms") {
        None | Some(Value::Null) => 30_000,
        Some(t) => t.as_i64().ok_or_else(|| {
            bad(
                "timeout",
                format!("{t} is not a number of milliseconds"),
                "Use e.g. timeout => '30 seconds'.",
            )
        })?,
    };
    let follow_redirects = flag(o, "follow_redirects", "Pass true or false.")?;
    let body_len = body.as_ref().map_or(0, |b| b.to_string().len())
        + body_text.as_ref().map_or(0, String::len);
    let pairs: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    let spec = Spec {
        method: method.clone(),
        url: url.clone(),
        query_len: super::client::with_query("", &pairs).len(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect(),
        body_len,
        timeout_ms,
    };
    request::check(&spec, &crate::http_limits())?;
    let mut out = Map::new();
    out.insert("method".into(), Value::String(method));
    out.insert("url".into(), Value::String(url));
    out.insert("headers".into(), Value::Object(headers));
    if !params.is_empty() {
        out.insert("params".into(), Value::Object(params));
    }
    out.insert("body".into(), body.unwrap_or(Value::Null));
    out.insert(
        "body_text".into(),
        body_text.map_or(Value::Null, Value::String),
    );
    out.insert("timeout_ms".into(), Value::from(timeout_ms));
    out.insert("follow_redirects".into(), Value::Bool(follow_redirects));
    if body_template {
        out.insert("body_template".into(), Value::Bool(true));
    }
    Ok(Value::Object(out))
}

fn check_body_templates(v: &Value) -> Result<(), request::Invalid> {
    match v {
        Value::String(s) => super::template::parse(s)
            .map(|_| ())
            .map_err(|e| bad("body", e.to_string(), super::template::TEMPLATE_HINT)),
        Value::Array(a) => a.iter().try_for_each(check_body_templates),
        Value::Object(m) => m.values().try_for_each(check_body_templates),
        _ => Ok(()),
    }
}

/// The checked, normalized request, or an ERROR (22023 with a HINT).
pub fn normalize_or_raise(v: &Value) -> Value {
    normalize(v).unwrap_or_else(|e| reject(e))
}

/// The HINT of a NULL argument of the HTTP functions.
const NULL_HINT: &str = "pulse.http_request('POST', 'https://example.com/hook', '{\"Content-Type\": \"application/json\"}', '{\"a\": 1}')";

/// The timeout argument in milliseconds (NULL: 22004; beyond 1000 years: 22023; the request
/// check then allows up to a day).
fn timeout_ms(t: Option<Interval>) -> Value {
    let hint = "Pass timeout => '30 seconds' (at most a day), or leave it out for 30 seconds.";
    let t = not_null(t, "timeout", hint);
    Value::from(interval_arg("timeout", &t, "30 seconds") / 1000)
}

#[allow(clippy::too_many_arguments)]
#[pg_extern(stable, parallel_safe)]
fn http_request(
    method: Option<&str>,
    url: Option<&str>,
    headers: default!(Option<JsonB>, "'{}'"),
    body: default!(Option<JsonB>, "NULL"),
    timeout: default!(Option<Interval>, "'30 seconds'"),
    follow_redirects: default!(Option<bool>, false),
    body_text: default!(Option<&str>, "NULL"),
    body_template: default!(Option<bool>, false),
) -> JsonB {
    let mut o = Map::new();
    o.insert(
        "method".into(),
        Value::String(not_null(method, "method", NULL_HINT).into()),
    );
    o.insert(
        "url".into(),
        Value::String(not_null(url, "url", NULL_HINT).into()),
    );
    o.insert("headers".into(), headers.map_or(Value::Null, |h| h.0));
    o.insert("body".into(), body.map_or(Value::Null, |b| b.0));
    o.insert(
        "body_text".into(),
        body_text.map_or(Value::Null, |t| Value::String(t.into())),
    );
    o.insert("timeout_ms".into(), timeout_ms(timeout));
    o.insert(
        "follow_redirects".into(),
        Value::Bool(not_null(
            follow_redirects,
            "follow_redirects",
            "Pass true or false, or leave it out (false).",
        )),
    );
    o.insert(
        "body_template".into(),
        Value::Bool(body_template.unwrap_or(false)),
    );
    JsonB(normalize_or_raise(&Value::Object(o)))
}

fn send_after_commit(request: Value, max_attempts: i32, retry_backoff: Option<Interval>) -> i64 {
    pgutil::require_scheduler_database();
    let request = normalize_or_raise(&request);
    // stored for the HTTP worker, which sends it after this transaction commits, with the
    // caller's secrets and settings
    privileged(move || {
        let owner = pgutil::current_user_oid_outer();
        super::outbox::store(request.to_string(), owner, max_attempts, retry_backoff)
            .unwrap_or_else(|e| pgutil::invalid(format!("could not store the request: {e}"), ""))
    })
}

fn simple(
    method: &str,
    url: Option<&str>,
    params: Option<JsonB>,
    headers: Option<JsonB>,
    body: Option<JsonB>,
    timeout: Option<Interval>,
    body_template: bool,
) -> i64 {
    let mut o = Map::new();
    o.insert("method".into(), Value::String(method.into()));
    o.insert(
        "url".into(),
        Value::String(not_null(url, "url", NULL_HINT).into()),
    );
    o.insert("headers".into(), headers.map_or(Value::Null, |h| h.0));
    o.insert("params".into(), params.map_or(Value::Null, |p| p.0));
    o.insert("body".into(), body.map_or(Value::Null, |b| b.0));
    o.insert("timeout_ms".into(), timeout_ms(timeout));
    if body_template {
        o.insert("body_template".into(), Value::Bool(true));
    }
    send_after_commit(Value::Object(o), 1, None)
}

/// POSTs a JSON body after the transaction commits (never if it rolls back). Returns the id.
/// The body is sent as it is, unless `body_template` (then its strings' placeholders are filled).
#[pg_extern(volatile, parallel_unsafe)]
fn http_post(
    url: Option<&str>,
    body: default!(Option<JsonB>, "'{}'"),
    headers: default!(Option<JsonB>, "'{}'"),
    timeout: default!(Option<Interval>, "'30 seconds'"),
    params: default!(Option<JsonB>, "'{}'"),
    body_template: default!(Option<bool>, false),
) -> i64 {
    simple(
        "POST",
        url,
        params,
        headers,
        body,
        timeout,
        body_template.unwrap_or(false),
    )
}

/// GETs a URL (with query parameters) after the transaction commits. Returns the id.
#[pg_extern(volatile, parallel_unsafe)]
fn http_get(
    url: Option<&str>,
    params: default!(Option<JsonB>, "'{}'"),
    headers: default!(Option<JsonB>, "'{}'"),
    timeout: default!(Option<Interval>, "'30 seconds'"),
) -> i64 {
    simple("GET", url, params, headers, None, timeout, false)
}

/// DELETEs a URL (with query parameters) after the transaction commits. Returns the id.
#[pg_extern(volatile, parallel_unsafe)]
fn http_delete(
    url: Option<&str>,
    params: default!(Option<JsonB>, "'{}'"),
    headers: default!(Option<JsonB>, "'{}'"),
    timeout: default!(Option<Interval>, "'30 seconds'"),
) -> i64 {
    simple("DELETE", url, params, headers, None, timeout, false)
}

/// Sends any request built with `pulse.http_request` after the transaction commits, with retries
/// on connection errors, timeouts, 429 and 5xx when max_attempts > 1. Returns the id.
#[pg_extern(volatile, parallel_unsafe)]
fn http(
    request: Option<JsonB>,
    max_attempts: default!(Option<i32>, 1),
    retry_backoff: default!(Option<Interval>, "'10 seconds'"),
) -> i64 {
    let request = not_null(request, "request", NULL_HINT).0;
    let max_attempts = not_null(
        max_attempts,
        "max_attempts",
        "Pass max_attempts => 3 (1 means no retries), or leave it out (1).",
    );
    let retry_backoff = Some(not_null(
        retry_backoff,
        "retry_backoff",
        "Pass retry_backoff => '10 seconds', or leave it out (10 seconds).",
    ));
    if !(1..=100).contains(&max_attempts) {
        pgutil::invalid(
            format!("max_attempts must be between 1 and 100, not {max_attempts}"),
            "Use max_attempts => 3 (1 means no retries).",
        );
    }
    if retry_backoff.is_some_and(|b| interval_arg("retry_backoff", &b, "10 seconds") <= 0) {
        pgutil::invalid(
            "retry_backoff must be a positive interval",
            "Use retry_backoff => '10 seconds'.",
        );
    }
    send_after_commit(request, max_attempts, retry_backoff)
}
