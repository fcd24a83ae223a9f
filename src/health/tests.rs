use super::*;
use proptest::prelude::*;

const H: i64 = 3600;

#[test]
fn an_incident_alerts_once_and_recovers_once() {
    let mut s = Stats::default();
    let t = 1_000 * H;
    assert_eq!(s.record(t, true, 5.0, 3), AlertEvent::None);
    assert_eq!(s.record(t + 1, true, 5.0, 3), AlertEvent::None);
    assert_eq!(s.record(t + 2, true, 5.0, 3), AlertEvent::IncidentStarted);
    for i in 3..10 {
        assert_eq!(
            s.record(t + i, true, 5.0, 3),
            AlertEvent::None,
            "never one per failed run"
        );
    }
    assert_eq!(s.record(t + 10, false, 5.0, 3), AlertEvent::Recovered);
    assert_eq!(s.record(t + 11, false, 5.0, 3), AlertEvent::None);
    // a new incident alerts again
    assert_eq!(s.record(t + 12, true, 5.0, 1), AlertEvent::IncidentStarted);
}

#[test]
fn a_success_below_the_threshold_sends_nothing() {
    let mut s = Stats::default();
    assert_eq!(s.record(10, true, 1.0, 3), AlertEvent::None);
    assert_eq!(s.record(11, false, 1.0, 3), AlertEvent::None);
    assert_eq!(s.consecutive_failures, 0);
}

#[test]
fn the_window_covers_24_hours() {
    let mut s = Stats::default();
    let t0 = 5_000 * H;
    for h in 0..30 {
        s.record(t0 + h * H, h % 2 == 0, 10.0 * (h + 1) as f64, 100);
    }
    let now = t0 + 29 * H + 10;
    let w = s.window(now);
    assert_eq!(w.runs, 24, "hours 6..29");
    assert_eq!(w.failures, 12);
    assert_eq!(w.success_rate, Some(0.5));
    // durations 70..300 ms: average 185
    assert!((w.avg_ms.unwrap() - 185.0).abs() < 1e-9);
    // a day later nothing is left
    let w = s.window(now + 24 * H);
    assert_eq!(w.runs, 0);
    assert_eq!(w.success_rate, None);
    assert_eq!(w.p95_ms, None);
}

#[test]
fn p95_of_recent_durations() {
    let mut s = Stats::default();
    for i in 1..=100 {
        s.record(1_000_000 + i, false, i as f64, 3);
    }
    assert_eq!(s.window(1_000_200).p95_ms, Some(95.0));
    // only the latest RECENT runs are kept
    for i in 0..50 {
        s.record(1_000_300 + i, false, 1000.0, 3);
    }
    assert_eq!(s.recent.len(), RECENT);
    assert_eq!(s.window(1_000_400).p95_ms, Some(1000.0));
}

#[test]
fn a_stored_row_with_short_arrays_is_repaired() {
    let mut s = Stats {
        runs: vec![1],
        failures: vec![],
        dur_ms: vec![],
        hour_base: 10,
        ..Stats::default()
    };
    s.record(10 * H + 5, false, 1.0, 3);
    assert_eq!(s.runs.len(), HOURS);
    assert_eq!(s.runs[0], 2);
}

fn facts() -> Facts {
    Facts {
        enabled: true,
        next_run_at: Some(1_000_100),
        last_run_at: Some(999_000),
        last_status: Some("succeeded".into()),
        threshold: 3,
        window: Window {
            runs: 10,
            failures: 0,
            success_rate: Some(1.0),
            avg_ms: Some(1.0),
            p95_ms: Some(2.0),
        },
        ..Facts::default()
    }
}

#[test]
fn classification() {
    let now = 1_000_000;
    assert_eq!(classify(&facts(), now, 60).0, Health::Healthy);

    let paused = Facts {
        enabled: false,
        ..facts()
    };
    assert_eq!(classify(&paused, now, 60).0, Health::Paused);

    let never = Facts {
        last_run_at: None,
        last_status: None,
        ..facts()
    };
    assert_eq!(classify(&never, now, 60).0, Health::NeverRun);

    let overdue = Facts {
        next_run_at: Some(now - 61),
        ..facts()
    };
    let (h, why) = classify(&overdue, now, 60);
    assert_eq!(h, Health::Overdue);
    assert!(why.contains("scheduler_status"));
    // within the grace period it is not overdue yet
    let late = Facts {
        next_run_at: Some(now - 59),
        ..facts()
    };
    assert_eq!(classify(&late, now, 60).0, Health::Healthy);
    let stuck = Facts {
        oldest_queued: Some(now - 600),
        ..facts()
    };
    assert_eq!(classify(&stuck, now, 60).0, Health::Overdue);

    let failing = Facts {
        last_status: Some("failed".into()),
        last_message: Some("division by zero".into()),
        consecutive_failures: 3,
        ..facts()
    };
    let (h, why) = classify(&failing, now, 60);
    assert_eq!(h, Health::Failing);
    assert!(why.contains("3 consecutive failures") && why.contains("division by zero"));

    let once = Facts {
        consecutive_failures: 1,
        ..failing.clone()
    };
    assert_eq!(classify(&once, now, 60).0, Health::Degraded);

    let flaky = Facts {
        window: Window {
            runs: 10,
            failures: 2,
            success_rate: Some(0.8),
            ..facts().window
        },
        ..facts()
    };
    let (h, why) = classify(&flaky, now, 60);
    assert_eq!(h, Health::Degraded);
    assert!(why.contains("2 of 10"));
    // paused wins over everything
    let paused_failing = Facts {
        enabled: false,
        ..failing
    };
    assert_eq!(classify(&paused_failing, now, 60).0, Health::Paused);
}

#[test]
fn verdicts() {
    let ok = StatusFacts {
        scheduler_alive: true,
        http_worker_alive: true,
        failing: 0,
        overdue: 0,
        health_pct: Some(100.0),
        oldest_request_wait_s: None,
    };
    let l = StatusLimits {
        max_failing: 0,
        min_health_pct: 90.0,
        max_request_wait_s: 60.0,
    };
    let v = |f: StatusFacts, l: StatusLimits| verdict(&f, &l);
    assert_eq!(v(ok, l), "HEALTHY");
    assert_eq!(
        v(
            StatusFacts {
                health_pct: None,
                ..ok
            },
            l
        ),
        "HEALTHY"
    );
    assert_eq!(
        v(
            StatusFacts {
                scheduler_alive: false,
                ..ok
            },
            l
        ),
        "NEEDS_ATTENTION"
    );
    assert_eq!(
        v(
            StatusFacts {
                http_worker_alive: false,
                ..ok
            },
            l
        ),
        "NEEDS_ATTENTION"
    );
    let failing = StatusFacts {
        failing: 1,
        health_pct: Some(99.0),
        ..ok
    };
    assert_eq!(v(failing, l), "NEEDS_ATTENTION");
    assert_eq!(
        v(
            failing,
            StatusLimits {
                max_failing: 1,
                ..l
            }
        ),
        "HEALTHY"
    );
    let overdue = StatusFacts { overdue: 1, ..ok };
    assert_eq!(
        v(
            overdue,
            StatusLimits {
                max_failing: 5,
                ..l
            }
        ),
        "NEEDS_ATTENTION"
    );
    assert_eq!(
        v(
            StatusFacts {
                health_pct: Some(80.0),
                ..ok
            },
            l
        ),
        "NEEDS_ATTENTION"
    );
    assert_eq!(
        v(
            StatusFacts {
                oldest_request_wait_s: Some(60.0),
                ..ok
            },
            l
        ),
        "HEALTHY"
    );
    assert_eq!(
        v(
            StatusFacts {
                oldest_request_wait_s: Some(61.0),
                ..ok
            },
            l
        ),
        "NEEDS_ATTENTION"
    );
}

proptest! {
    #[test]
    fn window_counts_equal_recorded_runs_within_a_day(
        events in proptest::collection::vec((0i64..86_399, any::<bool>()), 1..300)
    ) {
        let mut sorted = events.clone();
        sorted.sort();
        let mut s = Stats::default();
        let base = 10_000 * H;
        for (off, failed) in &sorted {
            s.record(base + off, *failed, 1.0, 1000);
        }
        let now = base + sorted.last().unwrap().0;
        let w = s.window(now);
        // every event is within 24 h of the last one, but buckets are hourly: events in the hour
        // 24 hours before `now`'s hour fall off
        let cutoff_hour = now / H - (HOURS as i64 - 1);
        let expect = sorted.iter().filter(|(o, _)| (base + o) / H >= cutoff_hour).count() as i64;
        prop_assert_eq!(w.runs, expect);
        let fails = sorted.iter().filter(|(o, f)| *f && (base + o) / H >= cutoff_hour).count() as i64;
        prop_assert_eq!(w.failures, fails);
    }

    #[test]
    fn alerts_alternate(outcomes in proptest::collection::vec(any::<bool>(), 1..200), threshold in 1i32..5) {
        let mut s = Stats::default();
        let mut open = false;
        for (i, failed) in outcomes.iter().enumerate() {
            match s.record(i as i64, *failed, 1.0, threshold) {
                AlertEvent::IncidentStarted => { prop_assert!(!open); open = true; }
                AlertEvent::Recovered => { prop_assert!(open); open = false; }
                AlertEvent::None => {}
            }
        }
        prop_assert_eq!(open, s.incident_open);
    }
}

#[test]
fn a_notify_payload_is_the_alert_id_alone() {
    assert_eq!(notify_payload(17), r#"{"alert_id": 17}"#);
    assert_eq!(
        notify_payload(i64::MAX),
        r#"{"alert_id": 9223372036854775807}"#
    );
}

#[test]
fn channel_names_pg_notify_accepts() {
    assert!(valid_channel("pulse_alerts"));
    assert!(valid_channel(&"x".repeat(63)));
    assert!(!valid_channel(&"x".repeat(64)));
    assert!(!valid_channel(""));
}
