//! Building and validating an HTTP request (`pulse.http_request`). Pure Rust: the shell turns
//! SQL arguments into a [`Spec`], this module checks it and the shell stores the normalized form.
//! Placeholders (see [`super::template`]) are allowed in the URL, header values and body strings.

use super::template;
use std::fmt;

pub const METHODS: [&str; 6] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"];

/// A request as the user described it.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    /// Body bytes as they will be sent (JSON text or plain text), before templating.
    pub body_len: usize,
    pub timeout_ms: i64,
}

/// What is wrong, naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: &'static str,
    pub message: String,
    pub hint: &'static str,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.field, self.message)
    }
}

fn bad(field: &'static str, message: String, hint: &'static str) -> Invalid {
    Invalid {
        field,
        message,
        hint,
    }
}

const URL_HINT: &str = "Use an absolute http or https URL, e.g. 'https://project.supabase.co/functions/v1/ingest' or '{{setting:app.settings.supabase_url}}/functions/v1/ingest'.";
const HEADER_HINT: &str = "Header names are letters, digits and !#$%&'*+-.^_`|~; values are one line, e.g. '{\"Authorization\": \"Bearer {{secret:service_role_key}}\"}'.";

/// The method in upper case, if it is one of [`METHODS`].
pub fn method(m: &str) -> Result<String, Invalid> {
    let up = m.trim().to_ascii_uppercase();
    if METHODS.contains(&up.as_str()) {
        Ok(up)
    } else {
        Err(bad(
            "method",
            format!("\"{m}\" is not supported"),
            "Use GET, POST, PUT, PATCH, DELETE or HEAD.",
        ))
    }
}

/// Checks an absolute URL as the HTTP client will parse it (the `url` crate, ureq's parser):
/// scheme http or https, a host, a valid port. Placeholders are checked as written, and the URL
/// is checked with each placeholder standing for a neutral value: `http://1` when the URL starts
/// with one (it holds at least the scheme and host, as in
/// `{{setting:app.settings.url}}/functions/v1/x`), `1` elsewhere (in a host, a port, a path or
/// a query). So a URL whose fixed text cannot be right (`http://[::1/x`) is refused at once; the
/// whole URL is checked again once its placeholders are filled in ([`check_resolved_url`]).
pub fn url(u: &str) -> Result<(), Invalid> {
    let parts =
        template::parse(u).map_err(|e| bad("url", e.to_string(), template::TEMPLATE_HINT))?;
    if parts.iter().all(|p| matches!(p, template::Part::Text(_))) {
        return check_resolved_url(u);
    }
    let mut neutral = String::with_capacity(u.len());
    for (i, p) in parts.iter().enumerate() {
        match p {
            template::Part::Text(t) => neutral.push_str(t),
            _ if i == 0 => neutral.push_str("http://1"),
            _ => neutral.push('1'),
        }
    }
    check_resolved_url(&neutral).map_err(|e| Invalid {
        message: format!(
            "\"{u}\" {} (placeholders taken as neutral values)",
            e.message
                .strip_prefix(&format!("\"{neutral}\" "))
                .unwrap_or(&e.message)
        ),
        ..e
    })
}

/// The same check for a resolved URL: no spaces or control characters, a scheme and a host
/// after `://`, then parsed by the `url` crate: http or https, a host, a port other than 0.
pub fn check_resolved_url(u: &str) -> Result<(), Invalid> {
    let err = |what: String| Err(bad("url", format!("\"{u}\" {what}"), URL_HINT));
    if u.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return err("contains spaces or control characters".into());
    }
    let Some((scheme, rest)) = u.split_once("://") else {
        return err("is not an absolute URL".into());
    };
    if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") {
        return Err(bad(
            "url",
            format!("scheme \"{scheme}\" is not allowed (only http and https)"),
            URL_HINT,
        ));
    }
    // `https:///x` would be read as host `x`
    if rest.starts_with(['/', '?', '#']) || rest.is_empty() {
        return err("has no host".into());
    }
    let parsed = match url::Url::parse(u) {
        Ok(p) => p,
        Err(url::ParseError::EmptyHost) => return err("has no host".into()),
        Err(url::ParseError::InvalidPort) => return err("has an invalid port".into()),
        Err(e) => return err(format!("is not a valid URL: {e}")),
    };
    if parsed.host_str().is_none_or(str::is_empty) {
        return err("has no host".into());
    }
    if parsed.port() == Some(0) {
        return err("has an invalid port".into());
    }
    Ok(())
}

fn token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// Headers that frame the message or the connection. pg_pulse sets them from the request itself;
/// set by hand they could make a body read as a second request on a kept-alive connection that
/// carries other roles' requests next.
const RESERVED_HEADERS: [&str; 11] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "host",
    "expect",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "http2-settings",
];

/// The longest timeout of one request: a day.
pub const MAX_TIMEOUT_MS: i64 = 86_400_000;

pub fn header(name: &str, value: &str) -> Result<(), Invalid> {
    if name.is_empty() || !name.chars().all(token_char) {
        return Err(bad(
            "header",
            format!("name \"{name}\" is not a valid header name"),
            HEADER_HINT,
        ));
    }
    if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(bad(
            "header",
            format!("\"{name}\" is set by pg_pulse from the request (URL and body), not by hand"),
            "Remove it: Host comes from the URL, Content-Length from the body, connections are managed by pg_pulse.",
        ));
    }
    if value.chars().any(|c| c == '\r' || c == '\n' || c == '\0') {
        return Err(bad(
            "header",
            format!("the value of \"{name}\" contains a line break"),
            HEADER_HINT,
        ));
    }
    template::parse(value).map_err(|e| bad("header", e.to_string(), template::TEMPLATE_HINT))?;
    Ok(())
}

/// Checks a whole request against the size limit.
pub fn check(s: &Spec, max_body: usize) -> Result<(), Invalid> {
    method(&s.method)?;
    url(&s.url)?;
    for (n, v) in &s.headers {
        header(n, v)?;
    }
    if s.timeout_ms <= 0 || s.timeout_ms > MAX_TIMEOUT_MS {
        return Err(bad(
            "timeout",
            "must be a positive interval of at most a day".into(),
            "Use e.g. timeout => '30 seconds'.",
        ));
    }
    if s.body_len > max_body {
        return Err(bad(
            "body",
            format!(
                "{} bytes exceed pulse.http_max_request_bytes ({max_body})",
                s.body_len
            ),
            "Send less, or raise pulse.http_max_request_bytes.",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec {
            method: "post".into(),
            url: "https://x.supabase.co/functions/v1/ingest".into(),
            headers: vec![("Authorization".into(), "Bearer {{secret:key}}".into())],
            body_len: 10,
            timeout_ms: 30_000,
        }
    }

    #[test]
    fn a_good_request_passes() {
        assert!(check(&spec(), 1024).is_ok());
        assert_eq!(method("patch").unwrap(), "PATCH");
    }

    #[test]
    fn urls() {
        for ok in [
            "http://127.0.0.1:8080/x",
            "https://example.com",
            "https://user:pw@example.com:443/a?b=c#d",
            "http://[::1]:9000/",
            "{{setting:app.settings.supabase_url}}/functions/v1/x",
            "https://example.com/{{job_name}}?run={{run_id}}",
            "https://{{setting:app.settings.host}}/x",
            "http://127.0.0.1:{{setting:app.settings.port}}/x",
            "{{setting:app.settings.url}}:8080/path",
            "https://api-{{setting:app.env}}.example.com/{{secret:tenant_key}}",
            "http://[::ffff:127.0.0.1]:8080/",
        ] {
            assert!(url(ok).is_ok(), "{ok}");
        }
        for (badurl, what) in [
            ("ftp://example.com/x", "scheme"),
            ("file:///etc/passwd", "scheme"),
            ("example.com/x", "absolute"),
            ("https:///x", "no host"),
            ("https://exa mple.com", "spaces"),
            ("http://example.com:0/", "port"),
            ("http://example.com:99999/", "port"),
            ("https://x/{{nope}}", "unknown variable"),
            ("http://[::1/x", "not a valid URL: invalid IPv6 address"),
            ("http://[::1/{{job_name}}", "invalid IPv6 address"),
            ("http://exa%mple.com/", "not a valid URL"),
            ("http://999.1.1.1/", "not a valid URL"),
            ("https://{{setting:app.host}}:99999/", "port"),
            ("{{setting:app.settings.url}}:http/x", "port"),
            ("http://user@/x", "no host"),
        ] {
            let e = url(badurl).unwrap_err();
            assert_eq!(e.field, "url");
            assert!(e.message.contains(what), "{badurl}: {e}");
        }
    }

    #[test]
    fn headers_methods_timeouts_and_size() {
        assert!(header("X-Ok", "a b c").is_ok());
        assert!(header("Bad Name", "x").is_err());
        assert!(header("X-Injected", "a\r\nHost: evil").is_err());
        for reserved in [
            "Content-Length",
            "transfer-encoding",
            "Host",
            "CONNECTION",
            "TE",
        ] {
            assert!(header(reserved, "0").is_err(), "{reserved}");
        }
        assert!(method("TRACE").is_err());
        let mut s = spec();
        s.timeout_ms = 0;
        assert_eq!(check(&s, 1024).unwrap_err().field, "timeout");
        let mut s = spec();
        s.body_len = 2000;
        assert_eq!(check(&s, 1024).unwrap_err().field, "body");
    }
}
