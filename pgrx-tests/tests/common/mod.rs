//! Shared helpers for the end-to-end suites: they talk to a real PostgreSQL server that has
//! pg_pulse preloaded (started by `make e2e`, see the Makefile), never to mocks.
#![allow(dead_code)]

use postgres::{Client, NoTls};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub fn port() -> u16 {
    std::env::var("PULSE_TEST_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(5434)
}

pub fn pgdata() -> String {
    std::env::var("PULSE_TEST_PGDATA").unwrap_or_else(|_| "/tmp/pg_pulse_test".into())
}

pub fn connect_as(user: &str) -> Client {
    connect_port(user, port())
}

pub fn connect_port(user: &str, port: u16) -> Client {
    connect_db(user, port, "postgres")
}

/// A session in database `db` of the server on `port`.
pub fn connect_db(user: &str, port: u16, db: &str) -> Client {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match Client::connect(
            &format!("host=127.0.0.1 port={port} user={user} dbname={db}"),
            NoTls,
        ) {
            Ok(c) => return c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("cannot connect to the test server on port {port} as {user}: {e}"),
        }
    }
}

/// A superuser session, with the extension created (idempotent; suites run in parallel).
pub fn admin() -> Client {
    let mut c = connect_as("postgres");
    // Parallel tests may race on CREATE EXTENSION: serialise it with a transaction-scoped advisory
    // lock (one simple query is one transaction, so the lock is held until the extension commits).
    c.batch_execute(
        "SELECT pg_advisory_xact_lock(424242);
         CREATE EXTENSION IF NOT EXISTS pg_pulse;",
    )
    .expect("create extension");
    c
}

thread_local! {
    /// The names `unique` made on this thread (a test runs on one thread): what a `Jobs` guard
    /// looks for.
    static NAMES: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A unique name per call, so parallel tests never share a job, role or table.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    NAMES.with(|n| n.borrow_mut().push(name.clone()));
    name
}

/// Unschedules, when dropped, every job named by a `unique` name made on this thread since the
/// guard was created, as the job's owner: at the end of a test and also when it panics, so a
/// failed assertion leaves no 1-second job running into the next tests. Create it first in the
/// test (it is dropped last, after the test's sessions have let go of their locks).
pub struct Jobs {
    from: usize,
}

impl Jobs {
    pub fn new() -> Jobs {
        Jobs {
            from: NAMES.with(|n| n.borrow().len()),
        }
    }
}

impl Drop for Jobs {
    fn drop(&mut self) {
        let names: Vec<String> = NAMES.with(|n| {
            let mut n = n.borrow_mut();
            let from = self.from.min(n.len());
            n.drain(from..).collect()
        });
        if names.is_empty() {
            return;
        }
        let Ok(mut c) = Client::connect(
            &format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres",
                port()
            ),
            NoTls,
        ) else {
            return;
        };
        let Ok(rows) = c.query(
            "SELECT owner::text, job_name FROM pulse.job WHERE job_name = ANY ($1)",
            &[&names],
        ) else {
            return;
        };
        // a session the test left in a transaction must not hang the clean-up
        let mut scripts = vec!["SET lock_timeout = '10s'".to_string()];
        scripts.extend(rows.iter().map(|r| unschedule_as_sql(r.get(0), r.get(1))));
        drop(c);
        drop(Cleanup(scripts));
    }
}

/// A fresh login role with USAGE on schema pulse (not a superuser).
pub fn new_role(admin: &mut Client, prefix: &str) -> String {
    let role = unique(prefix);
    admin
        // GRANTs on one schema from parallel tests update the same catalog row ("tuple
        // concurrently updated"): the tests take turns.
        .batch_execute(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock(74000001);
             CREATE ROLE {role} LOGIN; GRANT USAGE ON SCHEMA pulse TO {role}; COMMIT;"
        ))
        .expect("create role");
    role
}

/// Drop a role made by `new_role` and everything it owns, taking the same turn as
/// `new_role` (DROP OWNED revokes its USAGE on schema pulse: the same catalog row).
pub fn drop_role(admin: &mut Client, role: &str) {
    admin
        .batch_execute(&drop_role_sql(role))
        .expect("drop role");
}

/// The SQL of `drop_role` (for a `Cleanup`).
pub fn drop_role_sql(role: &str) -> String {
    format!(
        "BEGIN; SELECT pg_advisory_xact_lock(74000001);
         DROP OWNED BY {role}; DROP ROLE {role}; COMMIT;"
    )
}

/// Runs its SQL scripts as a superuser, in order, when dropped: at the end of a test and also
/// when it panics, so a failed test leaves no jobs or roles behind. Errors are ignored (a
/// script may find nothing to clean up).
pub struct Cleanup(pub Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Ok(mut c) = Client::connect(
            &format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres",
                port()
            ),
            NoTls,
        ) else {
            return;
        };
        for sql in &self.0 {
            if c.batch_execute(sql).is_err() {
                let _ = c.batch_execute("ROLLBACK; RESET ROLE");
            }
        }
    }
}

/// The SQL that removes `role`'s job `job` (through pulse.unschedule_job, as the role).
pub fn unschedule_as_sql(role: &str, job: &str) -> String {
    format!(
        "SET ROLE {role}; SELECT pulse.unschedule_job('{}'); RESET ROLE;",
        job.replace('\'', "''")
    )
}

/// The alert id of a pg_pulse alert notification (`{"alert_id": N}`); None for any other payload.
pub fn alert_id_of(payload: &str) -> Option<i64> {
    payload
        .strip_prefix("{\"alert_id\": ")?
        .strip_suffix('}')?
        .parse()
        .ok()
}

/// Collects the payloads of the notifications `c` receives (it must LISTEN already) until one
/// satisfies `done`, or panics after `secs` seconds with `what` and what it received.
pub fn notifications_until(
    c: &mut Client,
    secs: u64,
    what: &str,
    mut done: impl FnMut(&str) -> bool,
) -> Vec<String> {
    use postgres::fallible_iterator::FallibleIterator;
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut seen = Vec::new();
    loop {
        {
            let mut n = c.notifications();
            let mut it = n.timeout_iter(Duration::from_millis(200));
            while let Ok(Some(msg)) = it.next() {
                seen.push(msg.payload().to_string());
                if done(msg.payload()) {
                    return seen;
                }
            }
        }
        if Instant::now() > deadline {
            panic!("timed out after {secs}s waiting for: {what}; received {seen:?}");
        }
    }
}

/// Poll `f` until it returns Some, or panic after `secs` seconds with `what`.
/// Deadlines are generous: they bound a hang, they do not measure speed.
pub fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {secs}s waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Wait until run `run_id` reaches a final status; returns (status, message).
pub fn wait_run_final(c: &mut Client, run_id: i64) -> (String, Option<String>) {
    wait_for(60, &format!("run {run_id} to finish"), || {
        let row = c
            .query_one(
                "SELECT status, message FROM pulse.job_runs WHERE run_id = $1",
                &[&run_id],
            )
            .expect("read run");
        let status: String = row.get(0);
        if status == "queued" || status == "running" {
            None
        } else {
            Some((status, row.get(1)))
        }
    })
}

/// `pulse.run_job(job)`: the new run's id.
pub fn run_job(c: &mut Client, job: &str) -> i64 {
    c.query_one("SELECT pulse.run_job($1)", &[&job])
        .expect("run_job")
        .get(0)
}

/// Count runs of a job by status.
pub fn count_runs(c: &mut Client, job: &str, status: &str) -> i64 {
    c.query_one(
        "SELECT count(*) FROM pulse.job_runs WHERE job_name = $1 AND status = $2",
        &[&job, &status],
    )
    .expect("count runs")
    .get(0)
}

/// Wait until a job has no queued or running run.
pub fn wait_idle(c: &mut Client, job: &str) {
    wait_for(60, &format!("job {job} to go idle"), || {
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM pulse.job_runs WHERE job_name = $1
                   AND status IN ('queued','running')",
                &[&job],
            )
            .expect("count active")
            .get(0);
        (n == 0).then_some(())
    })
}

/// Assert that `r` failed with `sqlstate`; returns (message, hint).
pub fn expect_error<T: std::fmt::Debug>(
    r: Result<T, postgres::Error>,
    sqlstate: &str,
) -> (String, String) {
    let e = r.expect_err("the call should have failed");
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not a database error: {e}"));
    assert_eq!(
        db.code().code(),
        sqlstate,
        "unexpected SQLSTATE for error: {} ({:?})",
        db.message(),
        db.hint()
    );
    (
        db.message().to_string(),
        db.hint().unwrap_or_default().to_string(),
    )
}

/// Run a shell script from the repository's scripts/ folder (cluster control).
pub fn pgctl(args: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/pgctl.sh");
    let st = std::process::Command::new(script)
        .args(args)
        .status()
        .expect("run pgctl.sh");
    assert!(st.success(), "pgctl.sh {args:?} failed");
}

/// Wait until after-commit request `id` is finished; returns (state, status_code, error).
pub fn wait_request_final(c: &mut Client, id: i64) -> (String, Option<i32>, Option<String>) {
    wait_for(60, &format!("request {id} to finish"), || {
        let row = c
            .query_one(
                "SELECT state, status_code, error FROM pulse.http_requests WHERE id = $1",
                &[&id],
            )
            .expect("read request");
        let state: String = row.get(0);
        (state != "pending" && state != "sending").then(|| (state, row.get(1), row.get(2)))
    })
}

/// The directory of the PostgreSQL programs (pg_dump, psql, ...): `PG_BIN` (the Makefile exports
/// it from PG_CONFIG), else Debian's.
pub fn pg_bin() -> String {
    std::env::var("PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into())
}

/// Runs a PostgreSQL program from `pg_bin()` against the server on `port` as postgres, with
/// `stdin` as its input; returns its standard output, panicking with its errors if it fails.
pub fn pg_program(program: &str, port: u16, args: &[&str], stdin: &str) -> String {
    use std::io::Write;
    let path = format!("{}/{program}", pg_bin());
    let mut child = std::process::Command::new(&path)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {path}: {e}"));
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.as_bytes().to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait");
    let _ = writer.join();
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// A cluster of a suite's own (scripts/pgctl.sh: initdb, pg_pulse preloaded, plus `conf` lines,
/// which override earlier ones), in a fresh directory under /tmp on a free port; stopped and
/// removed when dropped, also when the test fails.
pub struct Cluster {
    pub dir: String,
    pub port: u16,
}

impl Cluster {
    pub fn start(tag: &str, conf: &[&str]) -> Cluster {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
            l.local_addr().unwrap().port()
        };
        let c = Cluster {
            dir: format!("/tmp/pg_pulse_{tag}_{}_{port}", std::process::id()),
            port,
        };
        let _ = std::fs::remove_dir_all(&c.dir);
        let port_text = port.to_string();
        let mut args = vec!["start", c.dir.as_str(), port_text.as_str()];
        args.extend_from_slice(conf);
        pgctl(&args);
        c
    }

    /// A superuser session in database postgres (pg_pulse's database).
    pub fn connect(&self) -> Client {
        connect_port("postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/pgctl.sh");
        let _ = std::process::Command::new(script)
            .args(["stop", &self.dir])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
