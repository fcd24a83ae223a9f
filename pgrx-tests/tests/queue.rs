//! End-to-end: durable work queues on the users' own tables.
mod common;
use common::*;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// A queue table named `name` with `n` rows (payload = row number).
fn queue_table(c: &mut postgres::Client, name: &str, n: i64) {
    c.batch_execute(&format!(
        "CREATE TABLE {name}(id bigserial PRIMARY KEY, payload int NOT NULL);
         INSERT INTO {name}(payload) SELECT g FROM generate_series(1, {n}) g;"
    ))
    .unwrap();
    c.query_one("SELECT pulse.make_queue($1::text::regclass)", &[&name])
        .unwrap();
}

fn claim_ids(
    c: &mut postgres::Client,
    q: &str,
    n: i32,
    ttl: &str,
    worker: Option<&str>,
) -> Vec<i64> {
    c.query(
        "SELECT (j->>'id')::bigint FROM pulse.claim_batch($1::text::regclass, $2, $3::text::interval, $4) j",
        &[&q, &n, &ttl, &worker],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[test]
fn make_queue_adds_what_is_missing_and_is_idempotent() {
    let mut c = admin();
    let q = unique("mq");
    c.batch_execute(&format!(
        "CREATE TABLE {q}(key uuid PRIMARY KEY DEFAULT gen_random_uuid(), status varchar(20) NOT NULL DEFAULT 'queued', body jsonb);
         INSERT INTO {q}(body) SELECT jsonb_build_object('n', g) FROM generate_series(1, 50) g;"
    ))
    .unwrap();
    let done: Vec<String> = c
        .query_one("SELECT pulse.make_queue($1::text::regclass)", &[&q])
        .unwrap()
        .get(0);
    assert!(
        done.iter().any(|d| d.starts_with("added columns priority")),
        "{done:?}"
    );
    assert!(
        !done.iter().any(|d| d.contains("status,")),
        "an existing status column is kept"
    );
    let again: Vec<String> = c
        .query_one("SELECT pulse.make_queue($1::text::regclass)", &[&q])
        .unwrap()
        .get(0);
    assert!(again.is_empty(), "nothing to do the second time: {again:?}");
    // Existing rows are claimable, keyed by their uuid.
    let n = c
        .query(
            "SELECT * FROM pulse.claim_batch($1::text::regclass, 100)",
            &[&q],
        )
        .unwrap()
        .len();
    assert_eq!(n, 50);
    // The status check holds.
    expect_error(
        c.execute(&format!("UPDATE {q} SET status = 'bogus'"), &[]),
        "23514",
    );

    // A column of the wrong type is named.
    let bad = unique("badq");
    c.batch_execute(&format!(
        "CREATE TABLE {bad}(id int PRIMARY KEY, attempts text)"
    ))
    .unwrap();
    let (msg, hint) = expect_error(
        c.query_one("SELECT pulse.make_queue($1::text::regclass)", &[&bad]),
        "42804",
    );
    assert!(
        msg.contains("\"attempts\"") && msg.contains("text"),
        "{msg}"
    );
    assert!(hint.contains("ALTER TABLE"), "{hint}");
    // No primary key.
    let nopk = unique("nopk");
    c.batch_execute(&format!("CREATE TABLE {nopk}(x int)"))
        .unwrap();
    let (_, hint) = expect_error(
        c.query_one("SELECT pulse.make_queue($1::text::regclass)", &[&nopk]),
        "22023",
    );
    assert!(hint.contains("PRIMARY KEY"), "{hint}");
}

#[test]
fn eight_sessions_drain_100k_rows_each_exactly_once() {
    let mut c = admin();
    let q = unique("big");
    queue_table(&mut c, &q, 100_000);
    let seen = Arc::new(Mutex::new(Vec::<i64>::new()));
    let threads: Vec<_> = (0..8)
        .map(|w| {
            let q = q.clone();
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut c = connect_as("postgres");
                let worker = format!("w{w}");
                let mut mine = Vec::new();
                loop {
                    let ids = claim_ids(&mut c, &q, 100, "15 minutes", Some(&worker));
                    if ids.is_empty() {
                        break;
                    }
                    let done: i64 = c
                        .query_one(
                            "SELECT pulse.complete($1::text::regclass, $2::bigint[], $3)",
                            &[&q, &ids, &worker],
                        )
                        .unwrap()
                        .get(0);
                    assert_eq!(done, ids.len() as i64, "a claimed row is ours to complete");
                    mine.extend(ids);
                }
                seen.lock().unwrap().extend(mine);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let seen = seen.lock().unwrap();
    let unique_ids: HashSet<i64> = seen.iter().copied().collect();
    assert_eq!(seen.len(), 100_000, "no row claimed twice");
    assert_eq!(unique_ids.len(), 100_000, "no row lost");
    let row = c
        .query_one(
            &format!(
                "SELECT count(*) FILTER (WHERE status = 'completed'), max(attempts), min(attempts) FROM {q}"
            ),
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 100_000);
    assert_eq!(row.get::<_, i32>(1), 1);
    assert_eq!(row.get::<_, i32>(2), 1);
    c.batch_execute(&format!("DROP TABLE {q}")).unwrap();
}

#[test]
fn an_expired_lock_is_taken_over_and_the_old_holder_loses_it() {
    let mut c = admin();
    let q = unique("stale");
    queue_table(&mut c, &q, 1);
    let first = claim_ids(&mut c, &q, 10, "200 milliseconds", Some("crashed"));
    assert_eq!(first.len(), 1);
    // Still locked: nobody else gets it.
    assert!(claim_ids(&mut c, &q, 10, "15 minutes", Some("other")).is_empty());
    let taken = wait_for(30, "the lock to expire", || {
        let ids = claim_ids(&mut c, &q, 10, "15 minutes", Some("rescuer"));
        (!ids.is_empty()).then_some(ids)
    });
    assert_eq!(taken, first);
    let row = c
        .query_one(&format!("SELECT attempts, locked_by FROM {q}"), &[])
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 2, "the takeover counts as an attempt");
    assert_eq!(row.get::<_, String>(1), "rescuer");
    // The crashed worker can no longer complete, fail or extend the row; the rescuer can.
    let n: i64 = c
        .query_one(
            "SELECT pulse.complete($1::text::regclass, $2::bigint[], 'crashed')",
            &[&q, &first],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    let s: Option<String> = c
        .query_one(
            "SELECT pulse.fail($1::text::regclass, $2::bigint, 'x', worker => 'crashed')",
            &[&q, &first[0]],
        )
        .unwrap()
        .get(0);
    assert!(s.is_none());
    assert!(!c
        .query_one(
            "SELECT pulse.extend_lock($1::text::regclass, $2::bigint, '1 hour', 'crashed')",
            &[&q, &first[0]],
        )
        .unwrap()
        .get::<_, bool>(0));
    assert!(c
        .query_one(
            "SELECT pulse.extend_lock($1::text::regclass, $2::bigint, '1 hour', 'rescuer')",
            &[&q, &first[0]],
        )
        .unwrap()
        .get::<_, bool>(0));
    let n: i64 = c
        .query_one(
            "SELECT pulse.complete($1::text::regclass, $2::bigint[], 'rescuer')",
            &[&q, &first],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

#[test]
fn failures_back_off_exponentially_then_dead_letter() {
    let mut c = admin();
    let q = unique("retry");
    queue_table(&mut c, &q, 1);
    let mut delays = Vec::new();
    for attempt in 1..=3 {
        let ids = claim_ids(&mut c, &q, 1, "15 minutes", None);
        assert_eq!(ids.len(), 1, "attempt {attempt}");
        let status: String = c
            .query_one(
                "SELECT pulse.fail($1::text::regclass, $2::bigint, $3, backoff => '10 seconds')",
                &[&q, &ids[0], &format!("boom {attempt}")],
            )
            .unwrap()
            .get(0);
        let row = c
            .query_one(
                &format!(
                    "SELECT status, extract(epoch FROM run_after - now())::float8, last_error, attempts FROM {q}"
                ),
                &[],
            )
            .unwrap();
        assert_eq!(row.get::<_, String>(0), status);
        assert_eq!(row.get::<_, String>(2), format!("boom {attempt}"));
        assert_eq!(row.get::<_, i32>(3), attempt);
        if attempt < 3 {
            assert_eq!(status, "queued");
            delays.push(row.get::<_, f64>(1));
            // Not claimable before its backoff has passed.
            assert!(claim_ids(&mut c, &q, 1, "15 minutes", None).is_empty());
            c.batch_execute(&format!("UPDATE {q} SET run_after = now()"))
                .unwrap();
        } else {
            assert_eq!(status, "failed", "dead letter after max_attempts");
        }
    }
    // 10 s then 20 s, each with up to 20 % jitter taken off.
    assert!((7.9..=10.01).contains(&delays[0]), "{delays:?}");
    assert!((15.9..=20.01).contains(&delays[1]), "{delays:?}");
    // A dead letter is never claimed, until re-driven.
    assert!(claim_ids(&mut c, &q, 1, "15 minutes", None).is_empty());
    let n: i64 = c
        .query_one("SELECT pulse.retry_failed($1::text::regclass)", &[&q])
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    let ids = claim_ids(&mut c, &q, 1, "15 minutes", None);
    assert_eq!(ids.len(), 1);
    // retry => false dead-letters at once; re-drive by key keeps the attempt count if asked.
    let s: String = c
        .query_one(
            "SELECT pulse.fail($1::text::regclass, $2::bigint, 'fatal', retry => false)",
            &[&q, &ids[0]],
        )
        .unwrap()
        .get(0);
    assert_eq!(s, "failed");
    let n: i64 = c
        .query_one(
            "SELECT pulse.retry_failed($1::text::regclass, $2::bigint[], reset_attempts => false)",
            &[&q, &ids],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    let attempts: i32 = c
        .query_one(&format!("SELECT attempts FROM {q}"), &[])
        .unwrap()
        .get(0);
    assert_eq!(attempts, 1);
}

#[test]
fn priority_order_and_blocked_rows() {
    let mut c = admin();
    let q = unique("prio");
    queue_table(&mut c, &q, 6);
    c.batch_execute(&format!(
        "UPDATE {q} SET priority = 10 WHERE payload IN (5, 6);
         UPDATE {q} SET status = 'blocked' WHERE payload = 6;
         UPDATE {q} SET run_after = now() - interval '1 hour' WHERE payload = 3;"
    ))
    .unwrap();
    let claim = |c: &mut postgres::Client, n: i32| -> Vec<i32> {
        let mut v: Vec<i32> = c
            .query(
                "SELECT (j->>'payload')::int FROM pulse.claim_batch($1::text::regclass, $2) j",
                &[&q, &n],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        v.sort();
        v
    };
    // Highest priority first, then oldest; the blocked row is never claimed.
    assert_eq!(claim(&mut c, 1), vec![5]);
    assert_eq!(claim(&mut c, 1), vec![3]);
    assert_eq!(claim(&mut c, 2), vec![1, 2]);
    assert_eq!(claim(&mut c, 10), vec![4]);
    assert!(claim(&mut c, 10).is_empty());
    let h = c
        .query_one(
            "SELECT queued, processing, blocked, completed FROM pulse.queue_health($1::text::regclass)",
            &[&q],
        )
        .unwrap();
    assert_eq!(
        (
            h.get::<_, i64>(0),
            h.get::<_, i64>(1),
            h.get::<_, i64>(2),
            h.get::<_, i64>(3)
        ),
        (0, 5, 1, 0)
    );
}

#[test]
fn queue_health_reports_backlog_and_stuck_rows() {
    let mut c = admin();
    let q = unique("health");
    queue_table(&mut c, &q, 10);
    c.batch_execute(&format!(
        "UPDATE {q} SET run_after = now() + interval '1 hour' WHERE payload = 10;
         UPDATE {q} SET run_after = now() - interval '5 minutes' WHERE payload = 1;"
    ))
    .unwrap();
    let ids = claim_ids(&mut c, &q, 3, "15 minutes", None);
    c.query_one(
        "SELECT pulse.complete($1::text::regclass, $2::bigint[])",
        &[&q, &ids[..1].to_vec()],
    )
    .unwrap();
    c.query_one(
        "SELECT pulse.fail($1::text::regclass, $2::bigint, 'x', retry => false)",
        &[&q, &ids[1]],
    )
    .unwrap();
    c.batch_execute(&format!(
        "UPDATE {q} SET locked_until = now() - interval '1 second' WHERE status = 'processing'"
    ))
    .unwrap();
    let h = c
        .query_one(
            "SELECT queued, ready, delayed, processing, stuck, completed, failed, blocked,
                    oldest_ready_age > interval '4 minutes', completed_last_hour, failed_last_hour
               FROM pulse.queue_health($1::text::regclass)",
            &[&q],
        )
        .unwrap();
    let v: Vec<i64> = (0..8).map(|i| h.get::<_, i64>(i)).collect();
    assert_eq!(v, vec![7, 6, 1, 1, 1, 1, 1, 0]);
    assert!(!h.get::<_, bool>(8), "the oldest ready row was claimed");
    assert_eq!((h.get::<_, i64>(9), h.get::<_, i64>(10)), (1, 1));
}

#[test]
fn bad_input_and_privileges() {
    let mut c = admin();
    let q = unique("guarded");
    queue_table(&mut c, &q, 4);
    for (sql, code) in [
        (
            "SELECT * FROM pulse.claim_batch($1::text::regclass, 0)",
            "22023",
        ),
        (
            "SELECT * FROM pulse.claim_batch($1::text::regclass, 10001)",
            "22023",
        ),
        (
            "SELECT * FROM pulse.claim_batch($1::text::regclass, 1, '0 seconds')",
            "22023",
        ),
        (
            "SELECT * FROM pulse.claim_batch($1::text::regclass, 1, '-1 minute')",
            "22023",
        ),
    ] {
        expect_error(c.query(sql, &[&q]), code);
    }
    let plain = unique("plain");
    c.batch_execute(&format!("CREATE TABLE {plain}(id int PRIMARY KEY)"))
        .unwrap();
    let (_, hint) = expect_error(
        c.query(
            "SELECT * FROM pulse.claim_batch($1::text::regclass)",
            &[&plain],
        ),
        "22023",
    );
    assert!(hint.contains("make_queue"));
    expect_error(
        c.query("SELECT * FROM pulse.claim_batch('no_such_table_here')", &[]),
        "42P01",
    );

    // Table privileges apply: SELECT alone is not enough to claim.
    let role = new_role(&mut c, "q_reader");
    c.batch_execute(&format!("GRANT SELECT ON {q} TO {role}"))
        .unwrap();
    let mut r = connect_as(&role);
    expect_error(
        r.query("SELECT * FROM pulse.claim_batch($1::text::regclass)", &[&q]),
        "42501",
    );
    // Row-level security applies: a worker role sees, and so claims, only its tenant's rows.
    c.batch_execute(&format!(
        "ALTER TABLE {q} ADD COLUMN tenant text NOT NULL DEFAULT 'a';
         UPDATE {q} SET tenant = 'b' WHERE payload > 2;
         ALTER TABLE {q} ENABLE ROW LEVEL SECURITY;
         CREATE POLICY tenant_a ON {q} USING (tenant = 'a');
         GRANT SELECT, UPDATE ON {q} TO {role};"
    ))
    .unwrap();
    let mut r = connect_as(&role);
    let got: Vec<i32> = r
        .query(
            "SELECT (j->>'payload')::int FROM pulse.claim_batch($1::text::regclass, 10) j",
            &[&q],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(got, vec![1, 2]);
}

#[test]
fn partitioned_tables_are_queues_too() {
    let mut c = admin();
    let q = unique("parted");
    c.batch_execute(&format!(
        "CREATE TABLE {q}(id bigint PRIMARY KEY, payload int) PARTITION BY RANGE (id);
         CREATE TABLE {q}_a PARTITION OF {q} FOR VALUES FROM (0) TO (10);
         CREATE TABLE {q}_b PARTITION OF {q} FOR VALUES FROM (10) TO (100);
         INSERT INTO {q} SELECT g, g FROM generate_series(1, 20) g;"
    ))
    .unwrap();
    c.query_one("SELECT pulse.make_queue($1::text::regclass)", &[&q])
        .unwrap();
    let mut all = Vec::new();
    loop {
        let ids = claim_ids(&mut c, &q, 7, "15 minutes", Some("w"));
        if ids.is_empty() {
            break;
        }
        let n: i64 = c
            .query_one(
                "SELECT pulse.complete($1::text::regclass, $2::bigint[], 'w')",
                &[&q, &ids],
            )
            .unwrap()
            .get(0);
        assert_eq!(n, ids.len() as i64);
        all.extend(ids);
    }
    all.sort();
    assert_eq!(all, (1..=20).collect::<Vec<i64>>());
}

#[test]
fn a_scheduled_sql_job_drains_a_queue_with_per_row_failures() {
    let _jobs = Jobs::new();
    let mut c = admin();
    let q = unique("drain");
    queue_table(&mut c, &q, 20);
    let func = unique("drain_fn");
    // The README's pattern: claim, process, complete or fail each row.
    c.batch_execute(&format!(
        "CREATE FUNCTION {func}() RETURNS void LANGUAGE plpgsql AS $f$
         DECLARE r jsonb;
         BEGIN
           FOR r IN SELECT * FROM pulse.claim_batch('{q}', 50, '5 minutes', 'sql-drainer') LOOP
             BEGIN
               IF (r->>'payload')::int % 5 = 0 THEN
                 RAISE EXCEPTION 'payload % is bad', r->>'payload';
               END IF;
               PERFORM pulse.complete('{q}', ARRAY[(r->>'id')::bigint], 'sql-drainer');
             EXCEPTION WHEN OTHERS THEN
               PERFORM pulse.fail('{q}', (r->>'id')::bigint, SQLERRM, worker => 'sql-drainer');
             END;
           END LOOP;
         END $f$;"
    ))
    .unwrap();
    let job = unique("drain_job");
    c.query_one(
        "SELECT pulse.schedule_job($1, '@hourly', $2)",
        &[&job, &format!("SELECT {func}()")],
    )
    .unwrap();
    let run = run_job(&mut c, &job);
    assert_eq!(wait_run_final(&mut c, run).0, "succeeded");
    let row = c
        .query_one(
            &format!(
                "SELECT count(*) FILTER (WHERE status = 'completed'),
                        count(*) FILTER (WHERE status = 'queued' AND last_error LIKE 'payload % is bad'
                                           AND run_after > now())
                   FROM {q}"
            ),
            &[],
        )
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (16, 4));
    c.query_one("SELECT pulse.unschedule_job($1)", &[&job])
        .unwrap();
}

#[test]
fn a_row_whose_lease_keeps_expiring_is_dead_lettered_after_max_attempts() {
    let mut c = admin();
    let q = unique("poison");
    queue_table(&mut c, &q, 1);
    // Each consumer dies holding the row (never completes nor fails it): its lease expires and
    // the next claim takes the row over, counting an attempt.
    for attempt in 1..=3 {
        let worker = format!("victim{attempt}");
        let ids = wait_for(30, &format!("claim number {attempt}"), || {
            let ids = claim_ids(&mut c, &q, 10, "100 milliseconds", Some(&worker));
            (!ids.is_empty()).then_some(ids)
        });
        assert_eq!(ids.len(), 1);
        let attempts: i32 = c
            .query_one(&format!("SELECT attempts FROM {q}"), &[])
            .unwrap()
            .get(0);
        assert_eq!(attempts, attempt);
    }
    // The last lease expires: the next claim dead-letters the row instead of handing it out.
    wait_for(30, "the row to be dead-lettered", || {
        let ids = claim_ids(&mut c, &q, 10, "100 milliseconds", Some("victim4"));
        assert!(ids.is_empty(), "a row past max_attempts was claimed again");
        let status: String = c
            .query_one(&format!("SELECT status FROM {q}"), &[])
            .unwrap()
            .get(0);
        (status == "failed").then_some(())
    });
    let row = c
        .query_one(
            &format!(
                "SELECT attempts, last_error, locked_by, locked_until IS NULL, finished_at IS NOT NULL FROM {q}"
            ),
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 3, "no fourth attempt");
    let error: String = row.get(1);
    assert!(
        error.contains("lease expired")
            && error.contains("attempt 3 of 3")
            && error.contains("victim3"),
        "{error}"
    );
    assert_eq!(row.get::<_, Option<String>>(2), None);
    assert!(row.get::<_, bool>(3) && row.get::<_, bool>(4));
    // A dead letter stays put: not claimed, not stuck, until re-driven.
    assert!(claim_ids(&mut c, &q, 10, "15 minutes", None).is_empty());
    let h = c
        .query_one(
            "SELECT stuck, failed FROM pulse.queue_health($1::text::regclass)",
            &[&q],
        )
        .unwrap();
    assert_eq!((h.get::<_, i64>(0), h.get::<_, i64>(1)), (0, 1));
    let n: i64 = c
        .query_one("SELECT pulse.retry_failed($1::text::regclass)", &[&q])
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    assert_eq!(claim_ids(&mut c, &q, 10, "15 minutes", None).len(), 1);
    c.batch_execute(&format!("DROP TABLE {q}")).unwrap();
}
