//! Owner sessions: a job runs in a session of its owner, as psql would run it. Each test here is
//! a way a role that may schedule jobs could reach the workers' superuser identity, another
//! role's session or pg_pulse's own SQL, and checks that it cannot.

mod common;
use common::*;

use std::sync::RwLock;

/// Tests take it shared; the one that restarts the server takes it alone.
static SERVER: RwLock<()> = RwLock::new(());

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    SERVER.read().unwrap_or_else(|e| e.into_inner())
}

fn alone() -> std::sync::RwLockWriteGuard<'static, ()> {
    SERVER.write().unwrap_or_else(|e| e.into_inner())
}

/// A role with USAGE on schema pulse, a schema of its own and a table there to write probes to
/// (`role.t`); cleaned up by the returned guard (jobs, schema, role), also when the test fails.
fn role_with_table(a: &mut postgres::Client, prefix: &str) -> (String, String, Cleanup) {
    let role = new_role(a, prefix);
    let table = format!("{role}.t");
    a.batch_execute(&format!(
        "CREATE SCHEMA {role} AUTHORIZATION {role}; CREATE TABLE {table}(v text, n serial);
         ALTER TABLE {table} OWNER TO {role}"
    ))
    .unwrap();
    let guard = Cleanup(vec![
        format!("SELECT pulse.unschedule_job(job_name) FROM pulse.jobs WHERE owner = '{role}'"),
        format!("DROP SCHEMA IF EXISTS {role} CASCADE"),
        drop_role_sql(&role),
    ]);
    (role, table, guard)
}

fn schedule_once(c: &mut postgres::Client, job: &str, command: &str) -> i64 {
    c.query_one(
        "SELECT pulse.schedule_once($1, now(), $2)",
        &[&job, &command],
    )
    .unwrap();
    wait_for(60, &format!("the run of {job}"), || {
        c.query_opt(
            "SELECT run_id FROM pulse.job_runs WHERE job_name = $1",
            &[&job],
        )
        .unwrap()
        .map(|r| r.get(0))
    })
}

fn values(c: &mut postgres::Client, table: &str) -> Vec<String> {
    c.query(&format!("SELECT v FROM {table} ORDER BY n"), &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn is_superuser(a: &mut postgres::Client, role: &str) -> bool {
    a.query_one("SELECT rolsuper FROM pg_roles WHERE rolname = $1", &[&role])
        .unwrap()
        .get(0)
}

/// Deferred triggers fire at commit, and a WITH HOLD cursor is materialised at commit: both run
/// as the job's owner (the escalation, verbatim, no longer makes the role a superuser,
/// and pulse.secret stays unreadable).
#[test]
fn code_run_at_commit_runs_as_the_owner() {
    let _jobs = Jobs::new();
    let _s = shared();
    let mut a = admin();
    let (bob, table, _g) = role_with_table(&mut a, "commit_bob");
    let alice = new_role(&mut a, "commit_alice");
    let _ga = Cleanup(vec![drop_role_sql(&alice)]);
    let mut al = connect_as(&alice);
    al.query_one(
        "SELECT pulse.set_secret('alice_key', 'alice-secret-value-1')",
        &[],
    )
    .unwrap();
    let mut b = connect_as(&bob);
    let escalate = format!(
        "CREATE TEMP TABLE t(x int); CREATE FUNCTION pg_temp.e() RETURNS trigger LANGUAGE plpgsql AS \
         $f$BEGIN EXECUTE 'ALTER ROLE {bob} SUPERUSER'; RETURN NULL; END$f$; CREATE CONSTRAINT TRIGGER e \
         AFTER INSERT ON t DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION pg_temp.e(); \
         INSERT INTO t VALUES (1)"
    );
    let r1 = schedule_once(&mut b, &unique("escalate"), &escalate);
    let steal = format!(
        "CREATE TEMP TABLE t(x int); CREATE FUNCTION pg_temp.s() RETURNS trigger LANGUAGE plpgsql AS \
         $f$BEGIN INSERT INTO {table}(v) SELECT s::text FROM pulse.secret s; RETURN NULL; END$f$; \
         CREATE CONSTRAINT TRIGGER s AFTER INSERT ON t DEFERRABLE INITIALLY DEFERRED FOR EACH ROW \
         EXECUTE FUNCTION pg_temp.s(); INSERT INTO t VALUES (1)"
    );
    let r2 = schedule_once(&mut b, &unique("steal"), &steal);
    b.batch_execute(&format!(
        "CREATE FUNCTION {bob}.f() RETURNS int LANGUAGE plpgsql AS $f$BEGIN
           INSERT INTO {table}(v) VALUES (session_user || '/' || current_user || '/' || current_setting('is_superuser'));
           RETURN 1; END$f$"
    ))
    .unwrap();
    let r3 = schedule_once(
        &mut b,
        &unique("hold"),
        &format!("DECLARE c CURSOR WITH HOLD FOR SELECT {bob}.f() FROM generate_series(1, 2)"),
    );
    let (s1, m1) = wait_run_final(&mut a, r1);
    assert_eq!(s1, "failed");
    // PostgreSQL 15: "must be superuser to alter superuser roles or change superuser
    // attribute"; 16 and later: "permission denied to alter role"
    let m1 = m1.unwrap();
    assert!(
        m1.contains("must be superuser") || m1.contains("permission denied to alter role"),
        "{m1}"
    );
    assert!(!is_superuser(&mut a, &bob));
    let (s2, m2) = wait_run_final(&mut a, r2);
    assert_eq!(s2, "failed");
    assert!(m2.unwrap().contains("permission denied"));
    assert_eq!(wait_run_final(&mut a, r3).0, "succeeded");
    let seen = values(&mut a, &table);
    assert!(!seen.iter().any(|v| v.contains("alice-secret")), "{seen:?}");
    assert_eq!(seen, vec![format!("{bob}/{bob}/off"); 2]);
    a.batch_execute(&format!("DROP FUNCTION {bob}.f()"))
        .unwrap();
    al.query_one("SELECT pulse.drop_secret('alice_key')", &[])
        .unwrap();
}

/// Inside a job the session is the owner's: no way back to the worker's identity.
#[test]
fn a_job_cannot_reach_the_workers_identity() {
    let _jobs = Jobs::new();
    let _s = shared();
    let mut a = admin();
    let (bob, table, _g) = role_with_table(&mut a, "ident_bob");
    let mut b = connect_as(&bob);
    let probe = format!(
        "INSERT INTO {table}(v) VALUES (session_user || '/' || current_user || '/' || current_setting('is_superuser'))"
    );
    let ok = [
        probe.clone(),
        format!("RESET SESSION AUTHORIZATION; {probe}"),
        format!("SET SESSION AUTHORIZATION DEFAULT; {probe}"),
        format!("RESET ROLE; {probe}"),
    ];
    let refused = [
        "SET SESSION AUTHORIZATION postgres",
        "SET ROLE postgres",
        "SELECT set_config('role', 'postgres', false)",
        "ALTER ROLE postgres NOSUPERUSER",
    ];
    let mut runs = Vec::new();
    for cmd in &ok {
        runs.push((schedule_once(&mut b, &unique("ok"), cmd), "succeeded"));
    }
    for cmd in &refused {
        runs.push((schedule_once(&mut b, &unique("no"), cmd), "failed"));
    }
    for (run, want) in runs {
        let (status, msg) = wait_run_final(&mut a, run);
        assert_eq!(status, want, "{msg:?}");
        if want == "failed" {
            let msg = msg.unwrap();
            assert!(
                msg.contains("permission denied") || msg.contains("must be superuser"),
                "{msg}"
            );
        }
    }
    // a role setting that names a role it is not a member of is ignored at connection
    a.batch_execute(&format!("ALTER ROLE {bob} SET role = 'postgres'"))
        .unwrap();
    // a fresh session: make the current executor of bob leave first
    a.batch_execute(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE backend_type = 'pg_pulse executor' AND usename = '{bob}'"
    ))
    .unwrap();
    let r = schedule_once(&mut b, &unique("roleset"), &probe);
    wait_run_final(&mut a, r);
    a.batch_execute(&format!("ALTER ROLE {bob} RESET role"))
        .unwrap();
    let seen = values(&mut a, &table);
    assert!(!seen.is_empty());
    for v in &seen {
        assert_eq!(v, &format!("{bob}/{bob}/off"));
    }
    assert!(!is_superuser(&mut a, &bob));
    assert!(is_superuser(&mut a, "postgres"));
}

/// No session state crosses from one run to the next: never between owners (they never share
/// a process), and within one owner each run starts as after DISCARD ALL.
#[test]
fn no_session_state_crosses_runs() {
    let _jobs = Jobs::new();
    let _s = shared();
    let mut a = admin();
    let (alice, at, _ga) = role_with_table(&mut a, "state_alice");
    let (bob, bt, _gb) = role_with_table(&mut a, "state_bob");
    a.batch_execute(&format!(
        "GRANT INSERT ON {bt} TO {alice}; GRANT USAGE ON SEQUENCE {bt}_n_seq TO {alice};
         CREATE SCHEMA {alice}_s AUTHORIZATION {alice}"
    ))
    .unwrap();
    let mut al = connect_as(&alice);
    let mut b = connect_as(&bob);
    let leave = format!(
        "PREPARE secret_plan AS SELECT 'alice-private-text'; \
         DECLARE alice_cur CURSOR WITH HOLD FOR SELECT 'alice-row' FROM generate_series(1, 3); \
         SET work_mem = '77MB'; SET search_path = {alice}_s, pg_catalog; \
         CREATE TEMP TABLE alice_tmp(x int); SELECT pg_advisory_lock(4242); \
         SELECT nextval('{at}_n_seq')"
    );
    let probe = |table: &str| {
        format!(
            "INSERT INTO {table}(v) SELECT concat_ws('|', session_user,
               (SELECT count(*) FROM pg_prepared_statements), (SELECT count(*) FROM pg_cursors),
               current_setting('work_mem'),
               current_setting('search_path'), to_regclass('pg_temp.alice_tmp') IS NULL,
               (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()))"
        )
    };
    let r1 = schedule_once(&mut al, &unique("leave"), &leave);
    assert_eq!(wait_run_final(&mut a, r1).0, "succeeded");
    let r2 = schedule_once(&mut al, &unique("probe"), &probe(&at));
    let r3 = schedule_once(&mut b, &unique("probe"), &probe(&bt));
    assert_eq!(wait_run_final(&mut a, r2).0, "succeeded");
    assert_eq!(wait_run_final(&mut a, r3).0, "succeeded");
    // what a fresh session of the server has
    let default_path: String = a.query_one("SHOW search_path", &[]).unwrap().get(0);
    let default_mem: String = a.query_one("SHOW work_mem", &[]).unwrap().get(0);
    let clean = |who: &str| format!("{who}|0|0|{default_mem}|{default_path}|t|0");
    assert_eq!(values(&mut a, &at), vec![clean(&alice)]);
    assert_eq!(values(&mut a, &bt), vec![clean(&bob)]);
    // the advisory lock is gone as soon as the run is over
    let free: bool = a
        .query_one("SELECT pg_try_advisory_lock(4242)", &[])
        .unwrap()
        .get(0);
    assert!(free);
    a.batch_execute("SELECT pg_advisory_unlock(4242)").unwrap();
    // different owners, different sessions
    let pids: Vec<Option<i32>> = a
        .query(
            "SELECT executor_pid FROM pulse.job_runs WHERE run_id = ANY($1) ORDER BY run_id",
            &[&vec![r1, r2, r3]],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_ne!(pids[2], pids[0]);
    assert_ne!(pids[2], pids[1]);
    a.batch_execute(&format!("DROP SCHEMA {alice}_s CASCADE"))
        .unwrap();
}

/// A command runs as top-level statements, as `psql -c` would.
#[test]
fn commands_run_as_top_level_statements() {
    let _jobs = Jobs::new();
    let _s = shared();
    let mut a = admin();
    let (bob, table, _g) = role_with_table(&mut a, "toplevel_bob");
    let mut b = connect_as(&bob);
    b.batch_execute(&format!(
        "CREATE TABLE {bob}.v(x int);
         CREATE PROCEDURE {bob}.p() LANGUAGE plpgsql AS $$BEGIN
           INSERT INTO {table}(v) VALUES ('p1'); COMMIT;
           INSERT INTO {table}(v) VALUES ('p2'); ROLLBACK;
           INSERT INTO {table}(v) VALUES ('p3'); END$$"
    ))
    .unwrap();
    let cases: Vec<(String, &str, &str)> = vec![
        (format!("VACUUM ANALYZE {bob}.v"), "succeeded", "VACUUM"),
        (format!("CALL {bob}.p()"), "succeeded", "CALL"),
        (
            format!("CREATE INDEX CONCURRENTLY vx ON {bob}.v(x)"),
            "succeeded",
            "CREATE INDEX",
        ),
        (
            format!("REINDEX INDEX CONCURRENTLY {bob}.vx; VACUUM {bob}.v; ANALYZE {bob}.v"),
            "succeeded",
            "ANALYZE",
        ),
        (
            format!("INSERT INTO {table}(v) VALUES ('m1'); INSERT INTO {table}(v) VALUES ('m2'), ('m3')"),
            "succeeded",
            "INSERT 0 2",
        ),
        // one implicit transaction: the failure rolls back the first statement too
        (
            format!("INSERT INTO {table}(v) VALUES ('rolled back'); SELECT 1/0; SELECT 2"),
            "failed",
            "division by zero (statement 2 of 3: SELECT 1/0)",
        ),
        (
            format!("BEGIN; INSERT INTO {table}(v) VALUES ('never')"),
            "failed",
            "BEGIN without COMMIT",
        ),
        (
            format!("BEGIN; INSERT INTO {table}(v) VALUES ('b1'); COMMIT; SELECT 1/0"),
            "failed",
            "statement 4 of 4",
        ),
    ];
    for (cmd, status, text) in &cases {
        let run = schedule_once(&mut b, &unique("stmt"), cmd);
        let (s, m) = wait_run_final(&mut a, run);
        assert_eq!(&s, status, "{cmd}: {m:?}");
        assert!(m.as_deref().unwrap_or("").contains(text), "{cmd}: {m:?}");
    }
    assert_eq!(
        values(&mut a, &table),
        vec!["p1", "p3", "m1", "m2", "m3", "b1"]
    );
    // the timeout bounds the whole run, not each statement
    b.query_one(
        "SELECT pulse.schedule_job($1, '@yearly', 'SELECT pg_sleep(0.4); SELECT pg_sleep(0.4)', timeout => '600 milliseconds')",
        &[&unique("slow")],
    )
    .unwrap();
    let job: String = b
        .query_one(
            "SELECT job_name FROM pulse.jobs WHERE command LIKE 'SELECT pg_sleep(0.4)%'",
            &[],
        )
        .unwrap()
        .get(0);
    let run = run_job(&mut b, &job);
    assert_eq!(wait_run_final(&mut a, run).0, "timed_out");
    a.batch_execute(&format!("DROP TABLE {bob}.v; DROP PROCEDURE {bob}.p()"))
        .unwrap();
}

/// A role that loses what a session of it needs (USAGE on schema pulse, LOGIN) gets one clear
/// failed run and its job paused, not a failure every second; a renamed role keeps its jobs.
#[test]
fn role_changes_pause_a_job_once_or_keep_it_running() {
    let _jobs = Jobs::new();
    let _s = shared();
    let mut a = admin();
    for change in [
        "REVOKE USAGE ON SCHEMA pulse FROM {r}",
        "ALTER ROLE {r} NOLOGIN",
    ] {
        let (bob, table, _g) = role_with_table(&mut a, "lose_bob");
        let mut b = connect_as(&bob);
        let job = unique("every_second");
        b.query_one(
            "SELECT pulse.schedule_job($1, '1 seconds', $2)",
            &[&job, &format!("INSERT INTO {table}(v) VALUES ('ran')")],
        )
        .unwrap();
        wait_for(60, "a first run", || {
            (count_runs(&mut a, &job, "succeeded") > 0).then_some(())
        });
        drop(b);
        a.batch_execute(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock(74000001); {}; COMMIT",
            change.replace("{r}", &bob)
        ))
        .unwrap();
        let (enabled, next): (bool, Option<std::time::SystemTime>) =
            wait_for(60, "the job to pause", || {
                let r = a
                    .query_one(
                        "SELECT enabled, next_run_at FROM pulse.jobs WHERE job_name = $1",
                        &[&job],
                    )
                    .unwrap();
                let e: bool = r.get(0);
                (!e).then(|| (e, r.get(1)))
            });
        assert!(!enabled && next.is_none());
        wait_idle(&mut a, &job);
        let failed: Vec<String> = a
            .query(
                "SELECT message FROM pulse.job_runs WHERE job_name = $1 AND status = 'failed'",
                &[&job],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(
            failed[0].contains(&bob) && failed[0].contains("paused"),
            "{failed:?}"
        );
        if change.contains("NOLOGIN") {
            assert!(failed[0].contains("LOGIN"), "{failed:?}");
        } else {
            assert!(failed[0].contains("USAGE"), "{failed:?}");
        }
    }
    // renamed: the job follows the role (it is kept by OID)
    let (bob, table, _g) = role_with_table(&mut a, "rename_bob");
    let mut b = connect_as(&bob);
    let job = unique("renamed");
    b.query_one(
        "SELECT pulse.schedule_job($1, '@yearly', $2)",
        &[
            &job,
            &format!("INSERT INTO {table}(v) VALUES (session_user)"),
        ],
    )
    .unwrap();
    drop(b);
    let renamed = format!("{bob}_x");
    a.batch_execute(&format!("ALTER ROLE {bob} RENAME TO {renamed}"))
        .unwrap();
    let _gr = Cleanup(vec![
        format!("SELECT pulse.unschedule_job(job_name) FROM pulse.jobs WHERE owner = '{renamed}'"),
        format!("DROP SCHEMA IF EXISTS {renamed} CASCADE"),
        drop_role_sql(&renamed),
    ]);
    let owner: String = a
        .query_one("SELECT owner FROM pulse.jobs WHERE job_name = $1", &[&job])
        .unwrap()
        .get(0);
    assert_eq!(owner, renamed);
    let run = run_job(&mut a, &job);
    assert_eq!(wait_run_final(&mut a, run).0, "succeeded");
    assert_eq!(values(&mut a, &table), vec![renamed.clone()]);
}

/// pg_pulse's own SQL runs as superuser in the scheduler and HTTP worker: it resolves nothing
/// through a search_path that a role could write to. Planted: `public.clock_timestamp()`, an
/// operator `public.*(bigint, interval)`, and a database-level search_path set by a database
/// owner who is not a superuser; the workers are restarted to pick the setting up.
#[test]
fn worker_sql_cannot_be_hijacked_through_search_path() {
    let _jobs = Jobs::new();
    let _s = alone();
    let mut a = admin();
    let (evil, table, _g) = role_with_table(&mut a, "hijack_evil");
    a.batch_execute(&format!(
        "GRANT CREATE ON SCHEMA public TO {evil}; ALTER DATABASE postgres OWNER TO {evil}"
    ))
    .unwrap();
    let _restore = Cleanup(vec![
        "ALTER DATABASE postgres RESET search_path".into(),
        "ALTER DATABASE postgres OWNER TO postgres".into(),
        format!("DROP FUNCTION IF EXISTS public.clock_timestamp(); DROP OPERATOR IF EXISTS public.* (bigint, interval); DROP FUNCTION IF EXISTS {evil}.mul(bigint, interval); REVOKE CREATE ON SCHEMA public FROM {evil}"),
    ]);
    let mut e = connect_as(&evil);
    e.batch_execute(&format!(
        "CREATE FUNCTION public.clock_timestamp() RETURNS timestamptz LANGUAGE plpgsql AS $f$
         BEGIN
           INSERT INTO {table}(v) VALUES ('clock ' || current_user);
           IF current_setting('is_superuser') = 'on' THEN EXECUTE 'ALTER ROLE {evil} SUPERUSER'; END IF;
           RETURN pg_catalog.clock_timestamp();
         END $f$;
         CREATE FUNCTION {evil}.mul(bigint, interval) RETURNS interval LANGUAGE plpgsql AS $f$
         BEGIN
           INSERT INTO {table}(v) VALUES ('mul ' || current_user);
           IF current_setting('is_superuser') = 'on' THEN EXECUTE 'ALTER ROLE {evil} SUPERUSER'; END IF;
           RETURN $1::float8 * $2;
         END $f$;
         CREATE OPERATOR public.* (LEFTARG = bigint, RIGHTARG = interval, FUNCTION = {evil}.mul);
         GRANT INSERT ON {table} TO PUBLIC; GRANT USAGE ON SEQUENCE {table}_n_seq TO PUBLIC;
         ALTER DATABASE postgres SET search_path = public, pg_catalog;"
    ))
    .unwrap();
    drop(e);
    // the workers read the database's settings when they start
    pgctl(&["restart", &pgdata()]);
    let mut a = admin();
    let job = unique("hijack_job");
    // a superuser's job that fails and is retried (retries compute their instant in SQL), then a
    // run by hand and an after-commit request: every worker path that writes with its own SQL
    a.query_one(
        "SELECT pulse.schedule_job($1, '1 seconds', 'SELECT 1/0', max_attempts => 2, retry_backoff => '100 milliseconds')",
        &[&job],
    )
    .unwrap();
    wait_for(60, "a retried run", || {
        let n: i64 = a
            .query_one(
                "SELECT count(*) FROM pulse.job_runs WHERE job_name = $1 AND trigger = 'retry' AND status = 'failed'",
                &[&job],
            )
            .unwrap()
            .get(0);
        (n > 0).then_some(())
    });
    a.query_one("SELECT pulse.unschedule_job($1)", &[&job])
        .unwrap();
    let id: i64 = a
        .query_one("SELECT pulse.http_get('http://127.0.0.1:9/none')", &[])
        .unwrap()
        .get(0);
    wait_request_final(&mut a, id);
    a.batch_execute(
        "SELECT * FROM pulse.scheduler_health(); SELECT * FROM pulse.scheduler_status()",
    )
    .unwrap();
    let calls: Vec<String> = values(&mut a, &table)
        .into_iter()
        .filter(|v| v.ends_with("postgres"))
        .collect();
    assert!(calls.is_empty(), "planted code ran as superuser: {calls:?}");
    assert!(!is_superuser(&mut a, &evil));
    a.batch_execute(
        "ALTER DATABASE postgres RESET search_path; ALTER DATABASE postgres OWNER TO postgres",
    )
    .unwrap();
    pgctl(&["restart", &pgdata()]);
}

/// `database => 'x'`: the job is stored here and runs there, as its owner; without CONNECT
/// there it fails once and is paused.
#[test]
fn jobs_run_in_other_databases() {
    let _jobs = Jobs::new();
    let _s = shared();
    let mut a = admin();
    let (bob, _table, _g) = role_with_table(&mut a, "db_bob");
    let db = unique("analytics");
    a.batch_execute(&format!("CREATE DATABASE {db}")).unwrap();
    let _gd = Cleanup(vec![format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")]);
    let mut other = connect_db("postgres", port(), &db);
    other
        .batch_execute(&format!(
            "CREATE TABLE public.seen(db text, who text, n serial); ALTER TABLE public.seen OWNER TO {bob}"
        ))
        .unwrap();
    let mut b = connect_as(&bob);
    let job = unique("elsewhere");
    b.query_one(
        "SELECT pulse.schedule_job($1, '@yearly', 'INSERT INTO public.seen(db, who) VALUES (current_database(), session_user)',
                                   database => $2, alert_after_failures => 1)",
        &[&job, &db],
    )
    .unwrap();
    let shown: String = b
        .query_one(
            "SELECT database FROM pulse.jobs WHERE job_name = $1",
            &[&job],
        )
        .unwrap()
        .get(0);
    assert_eq!(shown, db);
    let run = run_job(&mut b, &job);
    assert_eq!(wait_run_final(&mut a, run).0, "succeeded");
    let (ran_in, who): (String, String) = {
        let r = other
            .query_one("SELECT db, who FROM public.seen", &[])
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((ran_in.as_str(), who.as_str()), (db.as_str(), bob.as_str()));
    let run_db: String = a
        .query_one(
            "SELECT database FROM pulse.job_runs WHERE run_id = $1",
            &[&run],
        )
        .unwrap()
        .get(0);
    assert_eq!(run_db, db);
    // without CONNECT: one failed run, the job paused
    a.batch_execute(&format!("REVOKE CONNECT ON DATABASE {db} FROM PUBLIC"))
        .unwrap();
    let run = run_job(&mut b, &job);
    let (status, msg) = wait_run_final(&mut a, run);
    assert_eq!(status, "failed");
    assert!(msg.unwrap().contains("CONNECT"));
    let enabled: bool = a
        .query_one(
            "SELECT enabled FROM pulse.jobs WHERE job_name = $1",
            &[&job],
        )
        .unwrap()
        .get(0);
    assert!(!enabled);
    // health and alerts say where the job runs
    let (health_db, alert_db): (String, String) = {
        let r = b
            .query_one(
                "SELECT (SELECT database FROM pulse.scheduler_health() WHERE job_name = $1),
                        (SELECT database FROM pulse.alerts WHERE job_name = $1 AND event = 'incident'
                          ORDER BY alert_id DESC LIMIT 1)",
                &[&job],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(
        (health_db.as_str(), alert_db.as_str()),
        (db.as_str(), db.as_str())
    );
    drop(other);
}
