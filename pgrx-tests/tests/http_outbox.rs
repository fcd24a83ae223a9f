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

#[test]
fn requests_follow_their_subtransactions() {
    let srv = Server::start();
    let mut a = admin();
    let role = new_role(&mut a, "outbox_user");
    let mut u = connect_as(&role);
    let p = format!("/ok/{}/", unique("sub"));
    let url = |x: &str| srv.url(&format!("{p}{x}"));
    let post = |x: &str| format!("SELECT pulse.http_post('{}');", url(x));
    // (one statement at a time: statements sent together run in one transaction)
    u.batch_execute(&post("a1")).unwrap();
    u.batch_execute(&format!(
        "BEGIN; {b} ROLLBACK;
         BEGIN; {c1} SAVEPOINT s; {c2} ROLLBACK TO s; {c3} COMMIT;
         BEGIN; SAVEPOINT a; SAVEPOINT b; {d1} RELEASE b; ROLLBACK TO a; {d2} COMMIT;
         BEGIN; {f1} SAVEPOINT s; {f2} ROLLBACK TO s; SAVEPOINT t; {f3} RELEASE t; COMMIT;
         BEGIN; {g1} SAVEPOINT s; {g2} RELEASE s; SAVEPOINT t; {g3} ROLLBACK TO t; COMMIT;
         DO $$ BEGIN
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
    assert_eq!(settled(&mut u, &role, &p), expected.len() as i64);
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
    assert_eq!(stored, expected);
    assert_eq!(paths(&srv, &p), expected, "sent exactly the committed ones");
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
