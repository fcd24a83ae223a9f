//! Unit tests of `client.rs`.
use super::*;

#[test]
fn verdicts() {
    let resp = |status| {
        Ok(Response {
            status,
            reason: String::new(),
            headers: vec![],
            body: vec![],
            truncated: false,
        })
    };
    assert_eq!(verdict(&resp(200)), Verdict::Succeeded);
    assert_eq!(verdict(&resp(204)), Verdict::Succeeded);
    assert_eq!(verdict(&resp(302)), Verdict::Failed { retry: false });
    assert_eq!(verdict(&resp(404)), Verdict::Failed { retry: false });
    assert_eq!(verdict(&resp(429)), Verdict::Failed { retry: true });
    assert_eq!(verdict(&resp(503)), Verdict::Failed { retry: true });
    let fail = |kind| {
        Err(Failure {
            kind,
            message: String::new(),
        })
    };
    assert_eq!(verdict(&fail(FailureKind::Timeout)), Verdict::TimedOut);
    assert_eq!(
        verdict(&fail(FailureKind::Connect)),
        Verdict::Failed { retry: true }
    );
    assert_eq!(
        verdict(&fail(FailureKind::Policy)),
        Verdict::Failed { retry: false }
    );
}

#[test]
fn retry_after() {
    let now = chrono::DateTime::parse_from_rfc3339("2026-11-22T10:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    assert_eq!(
        parse_retry_after("120", now),
        Some(Duration::from_secs(120))
    );
    assert_eq!(
        parse_retry_after("Sun, 22 Nov 2026 10:00:30 GMT", now),
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        parse_retry_after("Sun, 22 Nov 2026 09:00:00 GMT", now),
        Some(Duration::ZERO)
    );
    assert_eq!(parse_retry_after("soon", now), None);
    assert_eq!(
        parse_retry_after("99999999", now),
        Some(Duration::from_secs(86_400))
    );
}

#[test]
fn query_strings() {
    let p = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(with_query("http://h/x", &[]), "http://h/x");
    assert_eq!(
        with_query("http://h/x", &p(&[("a", "1 2"), ("b&", "é")])),
        "http://h/x?a=1%202&b%26=%C3%A9"
    );
    assert_eq!(
        with_query("http://h/x?z=0#top", &p(&[("a", "1")])),
        "http://h/x?z=0&a=1#top"
    );
}

#[test]
fn netlocs() {
    assert_eq!(split_netloc("example.com:443"), ("example.com", "443"));
    assert_eq!(split_netloc("[::1]:8080"), ("::1", "8080"));
}
