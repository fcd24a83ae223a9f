//! End-to-end: the after-commit requests of a transaction are written to pulse.http_request in
//! bulk (at commit, or when many wait): a request is stored and sent exactly when the
//! (sub)transaction that made it commits, with the id its call returned.
mod common;
use common::*;
use postgres::Client;
use pulse_e2e::server::Server;

/// The paths (without the prefix) the server saw under `prefix`, sorted.
fn paths(srv: &Server, prefix: &str) -> Vec<String> {
    let mut p: Vec<String> = srv
        .seen(prefix)
        .iter()
        .map(|s| s.path.trim_start_matches(prefix).to_string())
        .collect();
    p.sort();
    p
}

/// Waits until every request of `owner` whose URL contains `prefix` is finished; returns how
/// many there are.
fn settled(c: &mut Client, owner: &str, prefix: &str) -> i64 {
    wait_for(60, &format!("the requests under {prefix} finished"), || {
        let r = c
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE finished_at IS NULL)
                   FROM pulse.http_requests WHERE owner = $1 AND url LIKE '%' || $2 || '%'",
                &[&owner, &prefix],
            )
            .unwrap();
        (r.get::<_, i64>(1) == 0).then(|| r.get::<_, i64>(0))
    })
}

/// Each case twice: as a transaction's first requests (written at once) and after 8 others
/// (kept in memory and written at commit).
#[test]
fn requests_follow_their_subtransactions() {
    let srv = Server::start();
    let mut a = admin();
    let role = new_role(&mut a, "outbox_user");
    let mut u = connect_as(&role);
    for kept in [false, true] {
        let p = format!("/ok/{}/", unique("sub"));
        let url = |x: &str| srv.url(&format!("{p}{x}"));
        // requests that come first in a transaction (to a refused host, nothing is sent)
        let fill = if kept {
            "SELECT count(pulse.http_post('http://10.255.255.1/fill/' || g)) FROM generate_series(1, 8) g;"
        } else {
            ""
        };
        let post = |x: &str| format!("SELECT pulse.http_post('{}');", url(x));
        // (one statement at a time: statements sent together run in one transaction)
        u.batch_execute(&format!("BEGIN; {fill} {} COMMIT;", post("a1")))
            .unwrap();
        u.batch_execute(&format!(
            "BEGIN; {fill} {b} ROLLBACK;
             BEGIN; {fill} {c1} SAVEPOINT s; {c2} ROLLBACK TO s; {c3} COMMIT;
             BEGIN; {fill} SAVEPOINT a; SAVEPOINT b; {d1} RELEASE b; ROLLBACK TO a; {d2} COMMIT;
             BEGIN; {fill} {f1} SAVEPOINT s; {f2} ROLLBACK TO s; SAVEPOINT t; {f3} RELEASE t; COMMIT;
             BEGIN; {fill} {g1} SAVEPOINT s; {g2} RELEASE s; SAVEPOINT t; {g3} ROLLBACK TO t; COMMIT;
             DO $$ BEGIN
               PERFORM count(pulse.http_post('http://10.255.255.1/fill/' || g))
                  FROM generate_series(1, CASE WHEN {kept} THEN 8 ELSE 0 END) g;
               PERFORM pulse.http_post('{e1}');
               BEGIN PERFORM pulse.http_post('{e2}'); RAISE EXCEPTION 'x'; EXCEPTION WHEN others THEN NULL; END;
               BEGIN PERFORM pulse.http_post('{e3}'); END;
               PERFORM pulse.http_post('{e4}');
             END $$;",
            b = post("b"),
            c1 = post("c1"),
            c2 = post("c2"),
            c3 = post("c3"),
            d1 = post("d1"),
            d2 = post("d2"),
            f1 = post("f1"),
            f2 = post("f2"),
            f3 = post("f3"),
            g1 = post("g1"),
            g2 = post("g2"),
            g3 = post("g3"),
            e1 = url("e1"),
            e2 = url("e2"),
            e3 = url("e3"),
            e4 = url("e4"),
        ))
        .unwrap();
        let expected = [
            "a1", "c1", "c3", "d2", "e1", "e3", "e4", "f1", "f3", "g1", "g2",
        ];
        assert_eq!(
            settled(&mut u, &role, &p),
            expected.len() as i64,
            "kept: {kept}"
        );
        let stored: Vec<String> = u
            .query(
                "SELECT substr(url, strpos(url, $1) + length($1)) FROM pulse.http_requests
                  WHERE url LIKE '%' || $1 || '%' ORDER BY 1",
                &[&p],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(stored, expected, "kept: {kept}");
        assert_eq!(
            paths(&srv, &p),
            expected,
            "sent exactly the committed ones (kept: {kept})"
        );
    }
    drop(u);
    drop_role(&mut a, &role);
}

#[test]
fn the_returned_id_is_the_stored_request_in_call_order() {
    let srv = Server::start();
    let mut a = admin();
    let role = new_role(&mut a, "outbox_ids");
    let mut u = connect_as(&role);
    let p = format!("/ok/{}/", unique("ids"));
    let mut tx = u.transaction().unwrap();
    let ids: Vec<(i64, i32)> = tx
        .query(
            "SELECT pulse.http_post($1 || g, jsonb_build_object('g', g)), g FROM generate_series(1, 50) g",
            &[&srv.url(&p)],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    tx.commit().unwrap();
    settled(&mut u, &role, &p);
    for (id, g) in &ids {
        let url: String = u
            .query_one("SELECT url FROM pulse.http_requests WHERE id = $1", &[id])
            .unwrap()
            .get(0);
        assert!(url.ends_with(&format!("{p}{g}")), "{id}: {url}");
    }
    assert!(ids.windows(2).all(|w| w[0].0 < w[1].0), "ids in call order");
    drop(u);
    drop_role(&mut a, &role);
}

/// More requests than are kept in memory (10,000) in one transaction: stored in several inserts,
/// and a savepoint rolled back after one of them drops exactly its own requests. They go to a
/// host the address policy refuses, so nothing is sent.
#[test]
fn many_requests_in_one_transaction() {
    let mut a = admin();
    let role = new_role(&mut a, "outbox_many");
    let mut u = connect_as(&role);
    let p = format!("/{}/", unique("many"));
    let base = format!("http://10.255.255.1{p}");
    u.batch_execute(&format!(
        "BEGIN;
         SELECT count(pulse.http_post('{base}' || g)) FROM generate_series(1, 10500) g;
         SAVEPOINT s;
         SELECT count(pulse.http_post('{base}x' || g)) FROM generate_series(1, 10500) g;
         ROLLBACK TO s;
         SELECT count(pulse.http_post('{base}y' || g)) FROM generate_series(1, 7) g;
         COMMIT;"
    ))
    .unwrap();
    assert_eq!(settled(&mut u, &role, &p), 10_507);
    let r = u
        .query_one(
            "SELECT count(*) FILTER (WHERE url LIKE '%x%'), count(DISTINCT id),
                    count(*) FILTER (WHERE state = 'failed' AND error LIKE '%address policy%')
               FROM pulse.http_requests WHERE url LIKE '%' || $1 || '%'",
            &[&p],
        )
        .unwrap();
    assert_eq!(r.get::<_, i64>(0), 0, "rolled back requests were stored");
    assert_eq!(r.get::<_, i64>(1), 10_507);
    assert_eq!(r.get::<_, i64>(2), 10_507);
    drop(u);
    drop_role(&mut a, &role);
}

/// Requests made at commit by a deferred trigger (it runs before the requests are stored).
#[test]
fn requests_from_a_deferred_trigger_are_sent() {
    let srv = Server::start();
    let mut a = admin();
    let role = new_role(&mut a, "outbox_deferred");
    let mut u = connect_as(&role);
    let p = format!("/ok/{}/", unique("deferred"));
    let t = unique("deferred_t");
    a.batch_execute(&format!("GRANT CREATE ON SCHEMA public TO {role}"))
        .unwrap();
    u.batch_execute(&format!(
        "CREATE TABLE public.{t} (id int);
         CREATE FUNCTION public.{t}_f() RETURNS trigger LANGUAGE plpgsql AS $f$
           BEGIN PERFORM pulse.http_post('{url}' || NEW.id); RETURN NULL; END $f$;
         CREATE CONSTRAINT TRIGGER {t}_c AFTER INSERT ON public.{t}
           DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.{t}_f();
         BEGIN; INSERT INTO public.{t} VALUES (1), (2); COMMIT;
         BEGIN; INSERT INTO public.{t} VALUES (3); ROLLBACK;",
        url = srv.url(&p)
    ))
    .unwrap();
    assert_eq!(settled(&mut u, &role, &p), 2);
    assert_eq!(paths(&srv, &p), ["1", "2"]);
    u.batch_execute(&format!(
        "DROP TABLE public.{t}; DROP FUNCTION public.{t}_f();"
    ))
    .unwrap();
    drop(u);
    a.batch_execute(&format!("REVOKE CREATE ON SCHEMA public FROM {role}"))
        .unwrap();
    drop_role(&mut a, &role);
}

/// One role's requests that take long to answer (a backlog the worker is busy sending) do not
/// hold back another role's retry (due at its time) or a prepared transaction's request (whose
/// commit wakes nobody); dropping and making the extension again in the transaction that made a
/// request leaves nothing behind. On a cluster of the test's own (it drops the extension).
#[test]
fn a_slow_backlog_holds_nothing_back_and_a_dropped_table_takes_its_requests() {
    let srv = Server::start();
    let cl = Cluster::start(
        "outbox",
        &[
            "pulse.http_allowed_hosts = '127.0.0.1'",
            "max_prepared_transactions = 4",
        ],
    );
    let mut a = cl.connect();
    a.batch_execute(
        "CREATE EXTENSION pg_pulse;
         CREATE ROLE outbox_slow LOGIN; CREATE ROLE outbox_quick LOGIN;
         GRANT USAGE ON SCHEMA pulse TO outbox_slow, outbox_quick;",
    )
    .unwrap();
    let mut slow = connect_port("outbox_slow", cl.port);
    let mut quick = connect_port("outbox_quick", cl.port);
    // more than the slow role's share of the worker's room, each answered after 30 s
    slow.execute(
        "SELECT count(pulse.http_post($1, timeout => '1 minute')) FROM generate_series(1, 1100) g",
        &[&srv.url("/slow/30000")],
    )
    .unwrap();
    wait_for(
        20,
        "the slow role's requests on every thread it may use",
        || (srv.connections() >= 14).then_some(()),
    );
    // a retry of the other role: 500 first, then 200, one second apart
    let key = unique("flaky");
    let id: i64 = quick
        .query_one(
            "SELECT pulse.http(pulse.http_request('GET', $1), max_attempts => 3, retry_backoff => '1 second')",
            &[&srv.url(&format!("/flaky/{key}"))],
        )
        .unwrap()
        .get(0);
    let t = std::time::Instant::now();
    let (state, code, _) = wait_request_final(&mut quick, id);
    assert_eq!((state.as_str(), code), ("succeeded", Some(200)));
    // its second attempt is due a second after the first was recorded (held up to a second
    // while the worker has a backlog), and claimed when due: well within 10 s
    let took = t.elapsed();
    eprintln!("the retry succeeded after {took:?}");
    assert!(
        took < std::time::Duration::from_secs(10),
        "the retry waited {took:?}"
    );
    // a prepared transaction's request
    quick
        .batch_execute(&format!(
            "BEGIN; SELECT pulse.http_post('{}'); PREPARE TRANSACTION 'outbox_p';",
            srv.url("/ok/prepared")
        ))
        .unwrap();
    let t = std::time::Instant::now();
    a.batch_execute("COMMIT PREPARED 'outbox_p'").unwrap();
    srv.wait_for("/ok/prepared", 1, std::time::Duration::from_secs(15));
    eprintln!("the prepared request arrived after {:?}", t.elapsed());
    // the slow role's backlog goes (pending rows deleted, in flight ones answered)
    a.batch_execute("DELETE FROM pulse.http_request WHERE state = 'pending'")
        .unwrap();

    // a request made before the extension was dropped and made again, in one transaction
    quick
        .batch_execute(&format!(
            "SELECT pulse.http_post('{}')",
            srv.url("/ok/before")
        ))
        .unwrap();
    let mut tx = a.transaction().unwrap();
    // (the first 8 are written at once, the rest kept until the commit)
    tx.execute(
        "SELECT count(pulse.http_post($1 || g)) FROM generate_series(1, 20) g",
        &[&srv.url("/ok/dropped/")],
    )
    .unwrap();
    tx.batch_execute("DROP EXTENSION pg_pulse CASCADE; CREATE EXTENSION pg_pulse;")
        .unwrap();
    tx.commit().unwrap();
    let n: i64 = a
        .query_one("SELECT count(*) FROM pulse.http_request", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        n, 0,
        "the dropped table's request was written into the new one"
    );
    // and every later commit works
    let id: i64 = a
        .query_one("SELECT pulse.http_post($1)", &[&srv.url("/ok/after")])
        .unwrap()
        .get(0);
    assert_eq!(wait_request_final(&mut a, id).0, "succeeded");
    assert!(srv.seen("/ok/dropped").is_empty());
}
