//! End-to-end: alert notifications are public (any role may LISTEN on a channel, and pg_notify
//! on it), so they carry only an alert id; the details are in pulse.alerts, readable by the job's
//! owner only, and a forged id is not found there.
mod common;
use common::*;

/// Schedules a job (of the session's role) that fails with `marker` in its error message, opening an incident at its
/// first failure; returns its failed run's id.
fn fail_once(c: &mut postgres::Client, job: &str, marker: &str) -> i64 {
    c.query_one(
        "SELECT pulse.schedule_job($1, '@yearly', $2, alert_after_failures => 1)",
        &[
            &job,
            &format!("DO $$BEGIN RAISE EXCEPTION 'customer row: %', '{marker}'; END$$"),
        ],
    )
    .unwrap();
    let run = run_job(c, job);
    let (status, msg) = wait_run_final(c, run);
    assert_eq!(status, "failed");
    assert!(msg.unwrap_or_default().contains(marker));
    run
}

#[test]
fn another_roles_listener_learns_nothing_from_an_alert() {
    let mut a = admin();
    let alice = new_role(&mut a, "alert_alice");
    let bob = new_role(&mut a, "alert_bob");
    let job = unique("alice_payroll_sync");
    let marker = unique("SECRET_ROW_DATA");
    let _cleanup = Cleanup(vec![
        unschedule_as_sql(&alice, &job),
        format!("DELETE FROM pulse.alert WHERE owner = '{alice}'::regrole"),
        drop_role_sql(&alice),
        drop_role_sql(&bob),
    ]);
    let mut b = connect_as(&bob);
    b.batch_execute("LISTEN pulse_alerts").unwrap();
    let mut u = connect_as(&alice);
    u.batch_execute("LISTEN pulse_alerts").unwrap();

    let run = fail_once(&mut u, &job, &marker);

    // Alice reads her alert, with the details.
    let id: i64 = wait_for(60, "alice's incident alert", || {
        u.query_opt(
            "SELECT alert_id FROM pulse.alerts WHERE job_name = $1 AND event = 'incident'",
            &[&job],
        )
        .unwrap()
        .map(|r| r.get(0))
    });
    let r = u
        .query_one(
            "SELECT owner, run_id, status, message, consecutive_failures, channel,
                    payload->>'job', payload->>'owner', payload->>'message'
               FROM pulse.alerts WHERE alert_id = $1",
            &[&id],
        )
        .unwrap();
    assert_eq!(r.get::<_, String>(0), alice);
    assert_eq!(r.get::<_, Option<i64>>(1), Some(run));
    assert_eq!(r.get::<_, Option<String>>(2).as_deref(), Some("failed"));
    assert!(r.get::<_, String>(3).contains(&marker));
    assert_eq!(r.get::<_, i32>(4), 1);
    assert_eq!(
        r.get::<_, Option<String>>(5).as_deref(),
        Some("pulse_alerts")
    );
    assert_eq!(r.get::<_, String>(6), job);
    assert_eq!(r.get::<_, String>(7), alice);
    assert!(r.get::<_, String>(8).contains(&marker));

    // Both listeners got the same notification: the alert id and nothing else.
    let expected = format!("{{\"alert_id\": {id}}}");
    let seen_by_alice = notifications_until(&mut u, 60, "alice's notification", |p| p == expected);
    let seen_by_bob = notifications_until(&mut b, 60, "the notification of alice's alert", |p| {
        p == expected
    });
    // (other tests' alerts, and their forged notifications, may arrive too: none may carry
    // this job's name, its owner's name or its error text)
    for p in seen_by_bob.iter().chain(&seen_by_alice) {
        for secret in [&job, &alice, &marker] {
            assert!(!p.contains(secret.as_str()), "{secret} leaked in {p}");
        }
    }

    // Bob cannot read alice's alert, through the view or the table, nor write one.
    for sql in [
        "SELECT count(*) FROM pulse.alerts WHERE alert_id = $1",
        "SELECT count(*) FROM pulse.alert WHERE alert_id = $1",
    ] {
        assert_eq!(
            b.query_one(sql, &[&id]).unwrap().get::<_, i64>(0),
            0,
            "{sql}"
        );
    }
    let n: i64 = b
        .query_one(
            "SELECT count(*) FROM pulse.alert WHERE job_name = $1",
            &[&job],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    expect_error(
        b.execute(
            "INSERT INTO pulse.alert (job_id, job_name, owner, event) VALUES (1, 'x', 10, 'incident')",
            &[],
        ),
        "42501",
    );
    expect_error(
        b.execute("DELETE FROM pulse.alert WHERE alert_id = $1", &[&id]),
        "42501",
    );
    // A superuser sees every alert.
    let n: i64 = a
        .query_one(
            "SELECT count(*) FROM pulse.alerts WHERE alert_id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

#[test]
fn a_forged_notification_is_not_found_in_pulse_alerts() {
    let mut a = admin();
    let alice = new_role(&mut a, "alert_alice");
    let bob = new_role(&mut a, "alert_bob");
    let job = unique("alice_nightly");
    let _cleanup = Cleanup(vec![
        unschedule_as_sql(&alice, &job),
        format!("DELETE FROM pulse.alert WHERE owner IN ('{alice}'::regrole, '{bob}'::regrole)"),
        drop_role_sql(&alice),
        drop_role_sql(&bob),
    ]);
    let mut u = connect_as(&alice);
    u.batch_execute("LISTEN pulse_alerts").unwrap();
    let mut b = connect_as(&bob);

    // Bob fakes an incident: a made-up id, and a copy of the old payload format.
    let forged = r#"{"alert_id": 8999999999999999999}"#;
    b.query_one("SELECT pg_notify('pulse_alerts', $1)", &[&forged])
        .unwrap();
    b.query_one(
        "SELECT pg_notify('pulse_alerts', $1)",
        &[&format!(
            r#"{{"event": "incident", "job": "{job}", "owner": "{alice}", "message": "fake"}}"#
        )],
    )
    .unwrap();
    let seen = notifications_until(&mut u, 60, "bob's forged notifications", |p| {
        p.contains("\"fake\"")
    });
    assert!(seen.iter().any(|p| p == forged), "{seen:?}");
    // Alice checks what she received as the README says: look the id up in pulse.alerts.
    for p in seen
        .iter()
        .filter(|p| p.contains("8999999999999999999") || p.contains("fake"))
    {
        let found: i64 = u
            .query_one(
                "SELECT count(*) FROM pulse.alerts
                  WHERE alert_id = ($1::text::jsonb->>'alert_id')::bigint",
                &[p],
            )
            .unwrap()
            .get(0);
        assert_eq!(found, 0, "forged {p} was found");
    }

    // A genuine alert of alice's, by contrast, is found.
    fail_once(&mut u, &job, "replay");
    let id: i64 = wait_for(60, "alice's incident alert", || {
        u.query_opt(
            "SELECT alert_id FROM pulse.alerts WHERE job_name = $1",
            &[&job],
        )
        .unwrap()
        .map(|r| r.get(0))
    });
    let genuine = format!("{{\"alert_id\": {id}}}");
    notifications_until(&mut u, 60, "the genuine notification", |p| p == genuine);
    let found: i64 = u
        .query_one(
            "SELECT count(*) FROM pulse.alerts WHERE alert_id = ($1::text::jsonb->>'alert_id')::bigint",
            &[&genuine],
        )
        .unwrap()
        .get(0);
    assert_eq!(found, 1);
}
