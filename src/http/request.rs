//! Building and validating an HTTP request (`pulse.http_request`). Pure Rust: the shell turns
//! SQL arguments into a [`Spec`], this module checks it and the shell stores the normalized form.
//! Placeholders (see [`super::template`]) are allowed in the URL and header values, and in body
//! strings when the body is marked `body_template`. The same checks of the method, header names
//! and values run again when a request is sent ([`send_method`], [`header_name`],
//! [`header_value`]), whatever the stored row holds.

use super::template;
use std::fmt;

pub const METHODS: [&str; 6] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"];

/// Size limits of what is sent, in bytes: checked on what the author wrote when a request is
/// made, and on the request as sent (placeholders filled in) before it is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `pulse.http_max_url_bytes`: the URL with its query string.
    pub url: usize,
    /// `pulse.http_max_header_bytes`: one header, name and value.
    pub header: usize,
    /// `pulse.http_max_headers_bytes`: all headers given, names and values.
    pub headers: usize,
    /// `pulse.http_max_request_bytes`: the body.
    pub body: usize,
}

impl Limits {
    /// The most a stored request description (jsonb) may hold for the HTTP worker to read it:
    /// one made through the SQL functions is within the URL, headers and body limits; twice that
    /// (jsonb's binary form of small values is larger than their text) and 64 kB for the rest.
    /// A larger row, only writable by hand, is failed without being read into memory.
    pub fn stored_max(&self) -> usize {
        2 * (self.url + self.headers + self.body) + 65_536
    }
}

/// Why a stored request too large to read is not sent.
pub fn stored_too_large(size: usize, max: usize) -> String {
    format!(
        "the stored request is {size} bytes, more than the {max} bytes a request within pulse.http_max_url_bytes, pulse.http_max_headers_bytes and pulse.http_max_request_bytes can take: not read, not sent"
    )
}

pub const URL_LIMIT: &str = "pulse.http_max_url_bytes";
pub const HEADER_LIMIT: &str = "pulse.http_max_header_bytes";
pub const HEADERS_LIMIT: &str = "pulse.http_max_headers_bytes";
pub const BODY_LIMIT: &str = "pulse.http_max_request_bytes";

impl Limits {
    /// The defaults of the settings.
    pub const DEFAULT: Limits = Limits {
        url: 16_384,
        header: 8_192,
        headers: 32_768,
        body: 1_048_576,
    };
}

/// A request as the user described it.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub method: String,
    pub url: String,
    /// Bytes the query string (from params) adds to the URL, encoded.
    pub query_len: usize,
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

/// The method of a stored request, at send time: exactly one of [`METHODS`] (any case), nothing
/// around it. The message shows the stored value escaped (`{:?}`), never raw.
pub fn send_method(m: &str) -> Result<String, Invalid> {
    let up = m.to_ascii_uppercase();
    if METHODS.contains(&up.as_str()) {
        Ok(up)
    } else {
        Err(bad(
            "method",
            format!(
                "{:?} is not one of GET, POST, PUT, PATCH, DELETE, HEAD",
                m.chars().take(40).collect::<String>()
            ),
            "Build requests with pulse.http_request(method, url, ...).",
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

/// A header name: token characters, not one of the headers pg_pulse sets itself. The message
/// shows a bad name escaped (`{:?}`), so a line break in it is not written out.
pub fn header_name(name: &str) -> Result<(), Invalid> {
    if name.is_empty() || !name.chars().all(token_char) {
        return Err(bad(
            "header",
            format!(
                "name {:?} is not a valid header name",
                name.chars().take(60).collect::<String>()
            ),
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
    Ok(())
}

/// A header value (as sent, or as written): one line, no NUL.
pub fn header_value(name: &str, value: &str) -> Result<(), Invalid> {
    if value.chars().any(|c| c == '\r' || c == '\n' || c == '\0') {
        return Err(bad(
            "header",
            format!("the value of \"{name}\" contains a line break or a NUL character"),
            HEADER_HINT,
        ));
    }
    Ok(())
}

/// A header as written: name, value and the placeholders in the value.
pub fn header(name: &str, value: &str) -> Result<(), Invalid> {
    header_name(name)?;
    header_value(name, value)?;
    template::parse(value).map_err(|e| bad("header", e.to_string(), template::TEMPLATE_HINT))?;
    Ok(())
}

/// The error of a request over a size limit (`what` is e.g. "the URL", `len` its size).
pub fn too_long(field: &'static str, what: &str, len: usize, max: usize, setting: &str) -> Invalid {
    Invalid {
        field,
        message: format!("{what} is {len} bytes, more than {setting} ({max})"),
        hint: "Send less, or ask a superuser to raise the limit (postgresql.conf or ALTER SYSTEM, then reload).",
    }
}

/// The least size of a template once resolved: its text outside placeholders.
fn written_len(s: &str) -> usize {
    template::parse(s).map_or(s.len(), |p| template::literal_len(&p))
}

/// Checks a whole request against the limits. The sizes checked are the least the request can
/// be once sent (text outside placeholders): what can never fit is refused now, the rest is
/// checked again on the request as sent.
pub fn check(s: &Spec, limits: &Limits) -> Result<(), Invalid> {
    method(&s.method)?;
    url(&s.url)?;
    let url_len = written_len(&s.url).saturating_add(s.query_len);
    if url_len > limits.url {
        return Err(too_long("url", "the URL", url_len, limits.url, URL_LIMIT));
    }
    let mut total = 0usize;
    for (n, v) in &s.headers {
        header(n, v)?;
        let len = n.len().saturating_add(written_len(v));
        if len > limits.header {
            return Err(too_long(
                "header",
                &format!("header \"{n}\""),
                len,
                limits.header,
                HEADER_LIMIT,
            ));
        }
        total = total.saturating_add(len);
    }
    if total > limits.headers {
        return Err(too_long(
            "headers",
            "the headers together",
            total,
            limits.headers,
            HEADERS_LIMIT,
        ));
    }
    if s.timeout_ms <= 0 || s.timeout_ms > MAX_TIMEOUT_MS {
        return Err(bad(
            "timeout",
            "must be a positive interval of at most a day".into(),
            "Use e.g. timeout => '30 seconds'.",
        ));
    }
    if s.body_len > limits.body {
        return Err(too_long(
            "body",
            "the body",
            s.body_len,
            limits.body,
            BODY_LIMIT,
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
            query_len: 0,
            headers: vec![("Authorization".into(), "Bearer {{secret:key}}".into())],
            body_len: 10,
            timeout_ms: 30_000,
        }
    }

    #[test]
    fn a_good_request_passes() {
        assert!(check(&spec(), &lim(1024)).is_ok());
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
        assert_eq!(check(&s, &lim(1024)).unwrap_err().field, "timeout");
        let mut s = spec();
        s.body_len = 2000;
        let e = check(&s, &lim(1024)).unwrap_err();
        assert_eq!(e.field, "body");
        assert!(
            e.message.contains("pulse.http_max_request_bytes (1024)"),
            "{e}"
        );
    }

    fn lim(body: usize) -> Limits {
        Limits {
            body,
            ..Limits::DEFAULT
        }
    }

    #[test]
    fn url_and_header_sizes_count_what_is_written() {
        let mut s = spec();
        s.url = format!("https://h/{}", "a".repeat(16_384));
        let e = check(&s, &Limits::DEFAULT).unwrap_err();
        assert!(
            e.message.contains("pulse.http_max_url_bytes (16384)"),
            "{e}"
        );
        // params count, encoded
        let mut s = spec();
        s.query_len = 16_384;
        assert_eq!(check(&s, &Limits::DEFAULT).unwrap_err().field, "url");
        // a 5 MB header is refused when the request is made
        let mut s = spec();
        s.headers = vec![("X-Big".into(), "v".repeat(5 << 20))];
        let e = check(&s, &Limits::DEFAULT).unwrap_err();
        assert!(
            e.message.contains("header \"X-Big\" is 5242885 bytes"),
            "{e}"
        );
        assert!(
            e.message.contains("pulse.http_max_header_bytes (8192)"),
            "{e}"
        );
        // placeholders count as nothing now (their values are checked when sent)
        let mut s = spec();
        s.headers = vec![("X-K".into(), "{{secret:k}}".repeat(1000))];
        assert!(check(&s, &Limits::DEFAULT).is_ok());
        // all headers together
        let mut s = spec();
        s.headers = (0..5)
            .map(|i| (format!("X-{i}"), "v".repeat(8000)))
            .collect();
        let e = check(&s, &Limits::DEFAULT).unwrap_err();
        assert!(
            e.message.contains("pulse.http_max_headers_bytes (32768)"),
            "{e}"
        );
    }

    #[test]
    fn send_time_checks_take_nothing_on_trust() {
        assert_eq!(send_method("post").unwrap(), "POST");
        for m in ["GET\r\nX-Evil: 1", " GET", "GET ", "TRACE", "", "G\0ET"] {
            let e = send_method(m).unwrap_err();
            assert!(
                !e.message.contains('\n') && !e.message.contains('\r'),
                "{e}"
            );
        }
        for n in ["X-A\r\nEvil", "X A", "", "X:A", "Host", "Content-Length"] {
            let e = header_name(n).unwrap_err();
            assert!(!e.message.contains('\n'), "{e}");
        }
        assert!(header_name("X-Fine_1").is_ok());
        for v in ["a\rb", "a\nb", "a\0b"] {
            assert!(header_value("X-A", v).is_err(), "{v:?}");
        }
        // a value that looks like a placeholder is fine once resolved
        assert!(header_value("X-A", "{{x").is_ok());
    }
}
