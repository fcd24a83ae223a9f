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
