//! Sending one request on an HTTP thread: the URL checked with the parser ureq uses, redirects
//! followed here (not by ureq) so that each hop is checked before anything is resolved or sent,
//! and ureq's errors turned into [`Failure`]s whose messages never contain the URL. Pure Rust.

use super::client::{Failure, FailureKind, Request, Response, MAX_REDIRECTS};
use super::policy::Policy;
use super::tls::Trust;
use std::io::{self, Read};
use std::time::{Duration, Instant};
use url::Url;

/// What a thread sends with: one agent (redirects off), the policy and trust store it was made
/// with.
pub struct Agents {
    pub agent: ureq::Agent,
    pub policy: std::sync::Arc<Policy>,
    pub trust: std::sync::Arc<Trust>,
}

pub type Sent = (Result<Response, Failure>, Option<Instant>);

/// Redirect responses' bodies are read (up to this much) so that the connection can be reused.
const REDIRECT_BODY_DRAIN: u64 = 64 * 1024;

fn failure(kind: FailureKind, message: impl Into<String>) -> Failure {
    Failure {
        kind,
        message: message.into(),
    }
}

/// A URL the client can send to: parsed by the `url` crate (as ureq parses it), http or https,
/// with a host. `what`: "the URL" or "a redirect".
pub fn parse_url(u: &str, what: &str) -> Result<Url, Failure> {
    let url = Url::parse(u).map_err(|e| {
        failure(
            FailureKind::Protocol,
            format!("{what} is not a valid URL: {e}"),
        )
    })?;
    check_scheme_and_host(&url, what)?;
    Ok(url)
}

fn check_scheme_and_host(url: &Url, what: &str) -> Result<(), Failure> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(failure(
            FailureKind::Protocol,
            format!(
                "{what} uses the scheme \"{}\": only http and https are sent",
                url.scheme()
            ),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(failure(
            FailureKind::Protocol,
            format!("{what} has no host"),
        ));
    }
    Ok(())
}

/// Sends `r`, following up to [`MAX_REDIRECTS`] redirects when it asks to. Each hop's URL is
/// checked (scheme, host, the allowlist) before it is resolved; the resolver checks the denied
/// networks. The timeout covers the whole exchange.
pub fn send(agents: &Agents, r: &Request) -> Sent {
    let started = Instant::now();
    let deadline = started.checked_add(r.timeout);
    let mut url = match parse_url(&r.url, "the URL") {
        Ok(u) => u,
        Err(f) => return (Err(f), None),
    };
    let mut method = r.method.clone();
    let mut body = r.body.as_deref();
    let mut headers: Vec<&(String, String)> = r.headers.iter().collect();
    let mut redirects = 0;
    loop {
        if url.scheme() == "https" {
            if let Some(problem) = agents.trust.problem() {
                return (
                    Err(failure(
                        FailureKind::NotSent,
                        format!("not sent: {problem}"),
                    )),
                    None,
                );
            }
        }
        if let Err(d) = agents.policy.check_host(&host_of(&url)) {
            return (
                Err(failure(
                    FailureKind::Policy,
                    format!("refused by the address policy: {d}"),
                )),
                None,
            );
        }
        let left = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => Duration::from_secs(86_400),
        };
        if left.is_zero() {
            return (Err(timed_out(r.timeout, "following redirects")), None);
        }
        let mut req = agents.agent.request_url(&method, &url).timeout(left);
        for (k, v) in &headers {
            req = req.set(k, v);
        }
        let res = match body {
            Some(b) => req.send_bytes(b),
            None => req.call(),
        };
        let resp = match res {
            Ok(resp) | Err(ureq::Error::Status(_, resp)) => resp,
            Err(ureq::Error::Transport(t)) => return (Err(transport_failure(&t, r.timeout)), None),
        };
        let at = Instant::now();
        if r.follow_redirects && (300..400).contains(&resp.status()) {
            if let Some(next) = redirect(&url, &method, &resp) {
                let next = match next {
                    Ok(n) => n,
                    Err(f) => return (Err(f), Some(at)),
                };
                if redirects == MAX_REDIRECTS {
                    return (
                        Err(failure(
                            FailureKind::Protocol,
                            format!("more than {MAX_REDIRECTS} redirects"),
                        )),
                        Some(at),
                    );
                }
                redirects += 1;
                // the rest of this response, so that its connection can carry the next request
                let _ = io::copy(
                    &mut resp.into_reader().take(REDIRECT_BODY_DRAIN),
                    &mut io::sink(),
                );
                // as ureq does: no credentials and no body after a redirect (a 307/308 of a
                // request with a body is not followed)
                headers.retain(|(k, _)| {
                    !k.eq_ignore_ascii_case("cookie") && !k.eq_ignore_ascii_case("authorization")
                });
                (url, method) = next;
                body = None;
                continue;
            }
        }
        return read_response(resp, r, at);
    }
}

/// The host as the resolver sees it (ureq hands it `host_str()`; IPv6 without brackets).
fn host_of(url: &Url) -> String {
    url.host_str()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}

/// Where a 3xx response leads and with which method, if it is followed: None when it is not a
/// redirect to follow (no Location, a 300/304/305, a 307/308 of a method that may carry a body),
/// as ureq decides.
fn redirect(
    url: &Url,
    method: &str,
    resp: &ureq::Response,
) -> Option<Result<(Url, String), Failure>> {
    let location = resp.header("location")?;
    let method = match resp.status() {
        301..=303 if matches!(method, "GET" | "HEAD") => method,
        301..=303 => "GET",
        307 | 308 if matches!(method, "GET" | "HEAD" | "OPTIONS" | "TRACE") => method,
        _ => return None,
    };
    let next = match url.join(location) {
        Ok(u) => u,
        Err(e) => {
            return Some(Err(failure(
                FailureKind::Protocol,
                format!("a redirect is not a valid URL: {e}"),
            )))
        }
    };
    Some(check_scheme_and_host(&next, "a redirect").map(|()| (next, method.to_string())))
}

fn read_response(resp: ureq::Response, r: &Request, at: Instant) -> Sent {
    let status = resp.status();
    let reason = resp.status_text().to_string();
    let mut headers = Vec::new();
    for name in resp.headers_names() {
        for v in resp.all(&name) {
            headers.push((name.clone(), v.to_string()));
        }
    }
    let mut body = Vec::new();
    let limit = r.max_response_bytes;
    let read = resp
        .into_reader()
        .take(limit as u64 + 1)
        .read_to_end(&mut body);
    if let Err(e) = read {
        return (
            Err(io_failure(&e, r.timeout, "reading the response body")),
            Some(at),
        );
    }
    let truncated = body.len() > limit;
    body.truncate(limit);
    (
        Ok(Response {
            status,
            reason,
            headers,
            body,
            truncated,
        }),
        Some(at),
    )
}

fn timed_out(timeout: Duration, doing: &str) -> Failure {
    failure(
        FailureKind::Timeout,
        format!("timed out after {} ms ({doing})", timeout.as_millis()),
    )
}

fn io_failure(e: &io::Error, timeout: Duration, doing: &str) -> Failure {
    use io::ErrorKind as K;
    // a certificate the trust store does not accept, or another TLS failure: not worth a retry
    if let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return failure(
            FailureKind::Protocol,
            format!(
                "TLS handshake failed: {tls} (trusted: the system's root certificates and pulse.http_ca_file)"
            ),
        );
    }
    match e.kind() {
        K::TimedOut | K::WouldBlock => timed_out(timeout, doing),
        K::PermissionDenied => failure(
            FailureKind::Policy,
            format!("refused by the address policy: {e}"),
        ),
        K::ConnectionRefused => failure(FailureKind::Connect, "connection refused"),
        _ => failure(FailureKind::Connect, format!("{doing}: {e}")),
    }
}

fn transport_failure(t: &ureq::Transport, timeout: Duration) -> Failure {
    use ureq::ErrorKind as K;
    let io = std::error::Error::source(t).and_then(|s| s.downcast_ref::<io::Error>());
    let doing = match t.kind() {
        K::Dns => "resolving the host",
        K::ConnectionFailed => "connecting",
        _ => "sending the request",
    };
    if let Some(e) = io {
        let f = io_failure(e, timeout, doing);
        // a resolver error that is not a refusal is a DNS failure
        if t.kind() == K::Dns && f.kind != FailureKind::Policy {
            return failure(
                FailureKind::Connect,
                format!("could not resolve the host: {e}"),
            );
        }
        return f;
    }
    let detail = t.message().unwrap_or("").to_string();
    match t.kind() {
        K::Dns => failure(
            FailureKind::Connect,
            format!("could not resolve the host {detail}").trim_end(),
        ),
        K::ConnectionFailed | K::Io => failure(
            FailureKind::Connect,
            format!("connection failed {detail}").trim_end(),
        ),
        K::TooManyRedirects => failure(
            FailureKind::Protocol,
            format!("more than {MAX_REDIRECTS} redirects"),
        ),
        K::InvalidUrl | K::UnknownScheme => failure(FailureKind::Protocol, "invalid URL"),
        _ => failure(
            FailureKind::Protocol,
            format!("invalid HTTP response {detail}").trim_end(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_with_the_clients_parser() {
        assert!(parse_url("http://127.0.0.1:8080/x", "the URL").is_ok());
        assert!(parse_url("https://[::1]/x", "the URL").is_ok());
        for (bad, says) in [
            ("http://[::1/x", "not a valid URL"),
            ("file:///etc/passwd", "scheme \"file\""),
            ("data:text/plain,hi", "scheme \"data\""),
            ("http://exa mple.com/", "not a valid URL"),
            ("http://example.com:99999/", "not a valid URL"),
        ] {
            let f = parse_url(bad, "the URL").unwrap_err();
            assert_eq!(f.kind, FailureKind::Protocol);
            assert!(f.message.contains(says), "{bad}: {f:?}");
        }
    }

    #[test]
    fn ipv6_hosts_as_the_resolver_sees_them() {
        assert_eq!(host_of(&Url::parse("http://[::]:80/").unwrap()), "::");
        assert_eq!(
            host_of(&Url::parse("http://[::ffff:127.0.0.1]/").unwrap()),
            "::ffff:7f00:1",
            "the url crate's form, as in the resolver"
        );
        assert_eq!(
            host_of(&Url::parse("http://Example.COM/").unwrap()),
            "example.com"
        );
    }
}
