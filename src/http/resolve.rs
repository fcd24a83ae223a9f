//! From a stored request (as `pulse.http_request` builds it, placeholders unresolved) to a request
//! ready to send. Placeholders are resolved (through a [`Resolve`]) only in the URL and header
//! values, and in the body's strings when the request says `"body_template": true`; params and any
//! other body are sent as stored, byte for byte. Every size limit ([`Limits`]) applies to what is
//! sent, and is checked before the part is built (a too-long request is never built, and nothing
//! is sent). The method, header names and values are checked again, whatever the stored row holds.
//! Errors name what is wrong (and the limit), never a value. The secrets a request used are
//! returned with it (each once), so that they can be scrubbed from what comes back ([`scrub`]).
//! Pure Rust: the lookups are the caller's.

use super::client;
use super::request::{self, Limits, BODY_LIMIT, HEADERS_LIMIT, HEADER_LIMIT, URL_LIMIT};
use super::template::{self, RenderError, Resolve, Var};
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::time::{Duration, Instant};

/// (name, value) of the secrets a request contains.
pub type Secrets = Vec<(String, String)>;

/// A request ready to send with the secrets it contains, or why it can't be sent.
pub type Resolved = Result<(client::Request, Secrets), String>;

/// A [`Resolve`] that looks each secret and setting up once per request and remembers the
/// secrets it handed out (each once).
struct Recording<'a> {
    inner: &'a dyn Resolve,
    secrets: RefCell<HashMap<String, Option<String>>>,
    settings: RefCell<HashMap<String, Option<String>>>,
}

impl Resolve for Recording<'_> {
    fn secret(&self, name: &str) -> Option<String> {
        self.secrets
            .borrow_mut()
            .entry(name.to_string())
            .or_insert_with(|| self.inner.secret(name))
            .clone()
    }
    fn setting(&self, name: &str) -> Option<String> {
        self.settings
            .borrow_mut()
            .entry(name.to_string())
            .or_insert_with(|| self.inner.setting(name))
            .clone()
    }
    fn context(&self, var: Var) -> String {
        self.inner.context(var)
    }
}

fn over(what: &str, len: usize, max: usize, setting: &str) -> String {
    format!(
        "{what} is {len} bytes once its placeholders are filled in, more than {setting} ({max}): not sent"
    )
}

/// The exact length of `params` as [`client::with_query`] appends them (`?k=v&k=v`).
fn query_len(params: &[(String, String)]) -> usize {
    let enc = |s: &str| -> usize {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    1
                } else {
                    3
                }
            })
            .sum()
    };
    params.iter().map(|(k, v)| enc(k) + 1 + enc(v) + 1).sum()
}

/// Builds the request to send from a stored request. `limits`: what may be sent;
/// `max_response`: longest response body kept; `not_before`: the instant before which it must not
/// go out (a run claimed a little early).
pub fn build(
    req: &Value,
    r: &dyn Resolve,
    limits: &Limits,
    max_response: usize,
    not_before: Option<Instant>,
) -> Resolved {
    let ctx = Recording {
        inner: r,
        secrets: RefCell::new(HashMap::new()),
        settings: RefCell::new(HashMap::new()),
    };
    // Resolves a template within `max` bytes: Ok(Err(len)) when it would be longer.
    let render_raw = |s: &str, max: usize, what: &str| -> Result<Result<String, usize>, String> {
        let parts = template::parse(s).map_err(|e| format!("{what}: {e}"))?;
        match template::render_within(&parts, &ctx, max) {
            Ok(v) => Ok(Ok(v)),
            Err(RenderError::TooLong { len }) => Ok(Err(len)),
            Err(RenderError::Missing(m)) => Err(m.to_string()),
        }
    };
    // The same, `what` and `setting` naming the part and its limit.
    let render = |s: &str, max: usize, what: &str, setting: &str| -> Result<String, String> {
        render_raw(s, max, what)?.map_err(|len| over(what, len, max, setting))
    };
    let field = |k: &str| req.get(k).and_then(Value::as_str).unwrap_or_default();
    let method = request::send_method(field("method")).map_err(|e| e.to_string())?;
    let body_template = req.get("body_template").and_then(Value::as_bool) == Some(true);

    let mut url = render(field("url"), limits.url, "the URL", URL_LIMIT)?;
    if let Some(Value::Object(params)) = req.get("params") {
        // params are data: sent as they are (percent-encoded), never resolved
        let pairs: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        let len = url.len().saturating_add(query_len(&pairs));
        if len > limits.url {
            return Err(over("the URL with its params", len, limits.url, URL_LIMIT));
        }
        url = client::with_query(&url, &pairs);
    }
    if request::check_resolved_url(&url).is_err() {
        return Err(
            "the URL is not a valid http(s) URL once its placeholders are filled in".into(),
        );
    }

    let mut headers = Vec::new();
    let mut total = 0usize;
    if let Some(Value::Object(h)) = req.get("headers") {
        for (k, v) in h {
            request::header_name(k).map_err(|e| e.to_string())?;
            let what = format!("header \"{k}\"");
            let room = limits.header.saturating_sub(k.len());
            let value =
                render_raw(v.as_str().unwrap_or_default(), room, &what)?.map_err(|len| {
                    over(
                        &what,
                        len.saturating_add(k.len()),
                        limits.header,
                        HEADER_LIMIT,
                    )
                })?;
            if request::header_value(k, &value).is_err() {
                return Err(format!(
                    "header \"{k}\" would contain a CR, LF or NUL character once its placeholders are filled in: not sent"
                ));
            }
            total = total.saturating_add(k.len() + value.len());
            if total > limits.headers {
                return Err(over(
                    "the headers together",
                    total,
                    limits.headers,
                    HEADERS_LIMIT,
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
            let bytes = if body_template {
                // each byte of a string is at least one byte of the JSON text: the strings
                // together may use the limit, then the JSON text is written within it
                let mut used = 0usize;
                let b = render_json(b, &mut |s: &str| {
                    let v = render_raw(s, limits.body - used, "the body")?.map_err(|len| {
                        let at_least = used.saturating_add(len);
                        over("the body", at_least, limits.body, BODY_LIMIT)
                            .replace(" is ", " is at least ")
                    })?;
                    used += v.len();
                    Ok(v)
                })?;
                json_within(&b, limits.body)?
            } else {
                json_within(b, limits.body)?
            };
            if !has(&headers, "content-type") {
                headers.push(("Content-Type".into(), "application/json".into()));
            }
            Some(bytes)
        }
        (None, Some(t)) => {
            if !has(&headers, "content-type") {
                headers.push(("Content-Type".into(), "text/plain; charset=utf-8".into()));
            }
            if body_template {
                Some(render(t, limits.body, "the body", BODY_LIMIT)?.into_bytes())
            } else if t.len() > limits.body {
                return Err(over("the body", t.len(), limits.body, BODY_LIMIT));
            } else {
                Some(t.as_bytes().to_vec())
            }
        }
        (None, None) => None,
    };
    let timeout_ms = req
        .get("timeout_ms")
        .and_then(Value::as_i64)
        .unwrap_or(30_000)
        .max(1);
    let mut secrets: Secrets = ctx
        .secrets
        .into_inner()
        .into_iter()
        .filter_map(|(n, v)| v.map(|v| (n, v)))
        .collect();
    secrets.sort();
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
            max_response_bytes: max_response,
            not_before,
        },
        secrets,
    ))
}

/// A `Vec` that refuses to grow past `max` bytes.
struct Bounded {
    buf: Vec<u8>,
    max: usize,
}

impl io::Write for Bounded {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        if self.buf.len() + b.len() > self.max {
            return Err(io::Error::other("over the limit"));
        }
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The JSON text of a body, if it is at most `max` bytes (never more is written).
fn json_within(v: &Value, max: usize) -> Result<Vec<u8>, String> {
    let mut w = Bounded {
        buf: Vec::new(),
        max,
    };
    match serde_json::to_writer(&mut w, v) {
        Ok(()) => Ok(w.buf),
        Err(e) if e.is_io() => Err(format!(
            "the body is more than {BODY_LIMIT} ({max}) bytes as JSON: not sent"
        )),
        Err(e) => Err(format!("the body could not be written as JSON: {e}")),
    }
}

/// Resolves every string (not the keys) of a JSON body.
pub fn render_json(
    v: &Value,
    render: &mut dyn FnMut(&str) -> Result<String, String>,
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
#[path = "resolve_tests.rs"]
mod tests;
