//! `pulse.http_request`: builds and validates a request description (jsonb) for HTTP jobs.

use super::request::{self, Spec};
use crate::pgutil::{interval_micros, raise};
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
) -> JsonB {
    let null = |what: &str| -> ! {
        raise(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("{what} must not be NULL"),
            "pulse.http_request('POST', 'https://example.com/hook', '{\"Content-Type\": \"application/json\"}', '{\"a\": 1}')",
        )
    };
    let method =
        request::method(method.unwrap_or_else(|| null("method"))).unwrap_or_else(|e| reject(e));
    let url = url.unwrap_or_else(|| null("url")).trim().to_string();
    let mut hdrs = Map::new();
    let mut pairs = Vec::new();
    match headers.map(|h| h.0) {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                let Value::String(s) = v else {
                    reject(request::Invalid {
                        field: "header",
                        message: format!("the value of \"{k}\" must be a string, not {v}"),
                        hint: "Pass headers as a JSON object of strings.",
                    });
                };
                pairs.push((k.clone(), s.clone()));
                hdrs.insert(k, Value::String(s));
            }
        }
        Some(other) => reject(request::Invalid {
            field: "headers",
            message: format!("{other} is not a JSON object"),
            hint: "Pass headers as a JSON object, e.g. '{\"Content-Type\": \"application/json\"}'.",
        }),
    }
    let body = body.map(|b| b.0).filter(|b| !b.is_null());
    if body.is_some() && body_text.is_some() {
        reject(request::Invalid {
            field: "body",
            message: "pass body (JSON) or body_text, not both".into(),
            hint: "body => '{\"a\": 1}' sends JSON; body_text => 'plain text' sends text.",
        });
    }
    let body_len = body.as_ref().map_or(0, |b| b.to_string().len()) + body_text.map_or(0, str::len);
    let timeout_ms = timeout
        .map(|t| interval_micros(&t) / 1000)
        .unwrap_or(30_000);
    let spec = Spec {
        method: method.clone(),
        url: url.clone(),
        headers: pairs,
        body_len,
        timeout_ms,
    };
    request::check(&spec, crate::HTTP_MAX_REQUEST_BYTES.get().max(1) as usize)
        .unwrap_or_else(|e| reject(e));
    let mut out = Map::new();
    out.insert("method".into(), Value::String(method));
    out.insert("url".into(), Value::String(url));
    out.insert("headers".into(), Value::Object(hdrs));
    out.insert("body".into(), body.unwrap_or(Value::Null));
    out.insert(
        "body_text".into(),
        body_text.map_or(Value::Null, |t| Value::String(t.to_string())),
    );
    out.insert("timeout_ms".into(), Value::from(timeout_ms));
    out.insert(
        "follow_redirects".into(),
        Value::Bool(follow_redirects.unwrap_or(false)),
    );
    JsonB(Value::Object(out))
}
