//! End-to-end: upgrading 0.1.0 to 0.5.0 to the current version with ALTER EXTENSION keeps every
//! row and gives what a fresh install gives, and job owners survive pg_dumpall --roles-only + pg_dump into another
//! cluster by name. Each test works in databases of its own (the scheduler serves only
//! `postgres`, so nothing runs there: these tests check the catalog, not runs).
mod common;
use common::*;
use postgres::Client;
use sha2::{Digest, Sha256};

/// sha256 of sql/pg_pulse--0.1.0.sql: the script 0.1.0 installed (`cargo pgrx schema` of commit
/// c688aaa). It is frozen: change the schema in an upgrade script, never here.
const FROZEN_0_1_0_SHA256: &str =
    "6c5b9ecb923fdb658d271fe178a3ea841714a99759967554bab153cb9ab3c9ea";

/// sha256 of sql/pg_pulse--0.2.0.sql: the script 0.2.0 installed (`cargo pgrx schema` of commit
/// 2279329). Frozen too.
const FROZEN_0_2_0_SHA256: &str =
    "a7eac32d1fb8cad7ce994e510239f955fb929e68327d6b907f6c6a46392c4534";

/// sha256 of sql/pg_pulse--0.3.0.sql: the script 0.3.0 installed (`cargo pgrx schema` of commit
/// dcc6da3). Frozen too.
const FROZEN_0_3_0_SHA256: &str =
    "5b4dde7473dcbcb21c51598fad8d3d4750706e70f581e0080f67527bb09aa169";

/// sha256 of sql/pg_pulse--0.4.0.sql: the script 0.4.0 installed (`cargo pgrx schema` of commit
/// 363b916). Frozen too.
const FROZEN_0_4_0_SHA256: &str =
    "5feffe436c161e3b498316899d06661e56b1b10374890a161405ae9eeb6198e5";

/// sha256 of sql/pg_pulse--0.5.0.sql: the script 0.5.0 installed (`cargo pgrx schema` of commit
/// a364f06). Frozen too.
const FROZEN_0_5_0_SHA256: &str =
    "cdfa9d51394f9410f990423bfd0642230be1d8ef6ee4a59764505dcde02d7175";

#[test]
fn frozen_install_scripts_are_unchanged() {
    for (version, sha) in [
        ("0.1.0", FROZEN_0_1_0_SHA256),
        ("0.2.0", FROZEN_0_2_0_SHA256),
        ("0.3.0", FROZEN_0_3_0_SHA256),
        ("0.4.0", FROZEN_0_4_0_SHA256),
        ("0.5.0", FROZEN_0_5_0_SHA256),
    ] {
        let path = format!(
            "{}/../sql/pg_pulse--{version}.sql",
            env!("CARGO_MANIFEST_DIR")
        );
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        let hex: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex, sha,
            "sql/pg_pulse--{version}.sql must stay what {version} installed: put schema changes into an upgrade script"
        );
    }
}

/// The version `CREATE EXTENSION pg_pulse` installs (the control file's default).
fn current_version(c: &mut Client) -> String {
    c.query_one(
        "SELECT default_version FROM pg_available_extensions WHERE name = 'pg_pulse'",
        &[],
    )
    .unwrap()
    .get(0)
}

/// A database of the test server, dropped when the test ends (also when it fails).
struct Db {
    name: String,
    port: u16,
}

impl Db {
    fn create(port: u16, prefix: &str) -> Db {
        let name = unique(prefix);
        connect_port("postgres", port)
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create database");
        Db { name, port }
    }

    fn connect(&self) -> Client {
        connect_db("postgres", self.port, &self.name)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(
            &format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres",
                self.port
            ),
            postgres::NoTls,
        ) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// Plain roles (no privileges), dropped when the test ends.
struct PlainRoles(Vec<String>);

impl PlainRoles {
    fn create(names: &[String]) -> PlainRoles {
        let mut a = connect_as("postgres");
        for n in names {
            a.batch_execute(&format!("CREATE ROLE {n} LOGIN"))
                .expect("create role");
        }
        PlainRoles(names.to_vec())
    }
}

impl Drop for PlainRoles {
    fn drop(&mut self) {
        let mut a = connect_as("postgres");
        for n in &self.0 {
            let _ = a.batch_execute(&format!("DROP ROLE IF EXISTS {n}"));
        }
    }
}

/// Every row of pg_pulse's tables (owners by name) and the sequences, as text. Secrets' values
/// are compared apart ([`secret_values`]): 0.4.0 stores them sealed.
fn snapshot(c: &mut Client) -> Vec<String> {
    let mut out = Vec::new();
    for (table, order) in [
        ("job", "job_id"),
        ("job_run", "run_id"),
        ("job_stats", "job_id"),
        ("secret", "owner, name"),
        ("http_request", "id"),
    ] {
        for row in c
            .query(
                &format!(
                    "SELECT (to_jsonb(t) - 'owner' - 'database' - 'interrupted' - 'value' - 'sealed')::text || ' owner=' || pg_get_userbyid(t.owner::oid)
                       FROM pulse.{table} t ORDER BY {order}"
                ),
                &[],
            )
            .expect("snapshot")
        {
            out.push(format!("{table}: {}", row.get::<_, String>(0)));
        }
    }
    for seq in [
        "job_job_id_seq",
        "job_run_run_id_seq",
        "http_request_id_seq",
    ] {
        let v: i64 = c
            .query_one(&format!("SELECT last_value FROM pulse.{seq}"), &[])
            .expect("sequence")
            .get(0);
        out.push(format!("{seq}: {v}"));
    }
    out
}

/// The secrets' values (owner by name, name, value): plaintext before 0.4.0; from 0.4.0 the
/// sealed value, which must not hold the plaintext, opened with the cluster's key file
/// (PGDATA/pg_pulse/secret.key) as the worker opens it, for its owner and name.
fn secret_values(c: &mut Client) -> Vec<(String, String, String)> {
    let sealed: bool = c
        .query_one(
            "SELECT EXISTS (SELECT FROM pg_attribute WHERE attrelid = 'pulse.secret'::regclass AND attname = 'sealed')",
            &[],
        )
        .unwrap()
        .get(0);
    if !sealed {
        return c
            .query(
                "SELECT pg_get_userbyid(owner), name, value FROM pulse.secret ORDER BY owner, name",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
    }
    let key = pg_pulse::http::keyfile::load(std::path::Path::new(&pgdata()))
        .expect("read the key file")
        .expect("the upgrade created the key file");
    c.query(
        "SELECT pg_get_userbyid(owner), owner, name, sealed FROM pulse.secret ORDER BY owner, name",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| {
        let (owner, oid, name, sealed): (String, u32, String, Vec<u8>) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        assert!(
            !sealed.windows(6).any(|w| w == b"secret"),
            "{name}: plaintext in the sealed form"
        );
        let value = pg_pulse::http::seal::open(&key, oid, &name, &sealed)
            .unwrap_or_else(|e| panic!("{owner}'s secret {name} does not open: {e}"));
        (owner, name, value)
    })
    .collect()
}

/// `pg_dump --schema-only --binary-upgrade` of a database that holds only pg_pulse: a plain dump
/// leaves out the members of an extension (and `--schema=pulse` then leaves out everything),
/// binary-upgrade mode writes each of them (tables with their column order, functions, views,
/// policies, comments, grants and the extension's initial privileges). Normalised: OIDs (5
/// digits and more) become N; the lines that only carry the OIDs, relfilenodes and attribute
/// LSNs to preserve (`binary_upgrade_set_next_*`, relfrozenxid), the sequences' positions (data,
/// compared by `snapshot`), the missing values of added columns (storage) and the random key of
/// `\restrict` go.
fn schema_dump(db: &Db) -> String {
    let dump: String = pg_program(
        "pg_dump",
        db.port,
        &["--schema-only", "--binary-upgrade", "-d", &db.name],
        "",
    )
    .lines()
    .filter(|l| {
        !l.starts_with("\\restrict")
            && !l.starts_with("\\unrestrict")
            && !l.contains("binary_upgrade_set_next_")
            && !l.starts_with("SET relfrozenxid")
            && !l.starts_with("SELECT pg_catalog.setval(")
            // a column added with a default keeps it as a "missing value" for the rows that
            // existed (storage, not schema)
            && !l.contains("binary_upgrade_set_missing_value")
            && *l != "-- set missing value."
    })
    .map(|l| format!("{l}\n"))
    .collect();
    let mut out = String::with_capacity(dump.len());
    let mut digits = String::new();
    for ch in dump.chars() {
        if ch.is_ascii_digit() {
            digits.push(ch);
            continue;
        }
        if digits.len() >= 5 {
            out.push('N');
        } else {
            out.push_str(&digits);
        }
        digits.clear();
        out.push(ch);
    }
    out.push_str(&digits);
    // (the lines taken out above leave runs of blank lines behind)
    while out.contains("\n\n\n") {
        out = out.replace("\n\n\n", "\n\n");
    }
    out
}

fn first_difference(a: &str, b: &str) -> String {
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    for i in 0..la.len().max(lb.len()) {
        if la.get(i) != lb.get(i) {
            let from = i.saturating_sub(5);
            return format!(
                "line {i}:\n--- upgraded\n{}\n--- fresh\n{}",
                la[from.min(la.len())..(i + 10).min(la.len())].join("\n"),
                lb[from.min(lb.len())..(i + 10).min(lb.len())].join("\n")
            );
        }
    }
    String::new()
}

#[test]
fn upgrade_from_0_1_0_keeps_every_row_and_matches_a_fresh_install() {
    let _a = admin(); // the extension exists in postgres (the library is loaded everywhere anyway)
    let base = unique("up");
    let (one, two) = (format!("{base}_one"), format!("{base}_two"));
    let _roles = PlainRoles::create(&[one.clone(), two.clone()]);
    let old = Db::create(port(), "up_old");
    let fresh = Db::create(port(), "up_fresh");
    let mut o = old.connect();
    o.batch_execute("CREATE EXTENSION pg_pulse VERSION '0.1.0'")
        .expect("install 0.1.0");
    let owner_type: String = o
        .query_one(
            "SELECT atttypid::regtype::text FROM pg_attribute WHERE attrelid = 'pulse.job'::regclass AND attname = 'owner'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(owner_type, "oid", "this is 0.1.0's catalog");
    // rows as 0.1.0's functions would have written them (written directly: the 0.1.0 functions
    // whose signature changed are bound to this library's symbols and must not be called)
    o.batch_execute(&format!(
        "INSERT INTO pulse.job (job_name, owner, schedule, command, timezone, comment)
              VALUES ('nightly', '{one}'::regrole::oid, '0 2 * * *', 'SELECT 1', 'Europe/Berlin', 'one''s'),
                     ('nightly', '{two}'::regrole::oid, '@hourly', 'SELECT 2', 'UTC', NULL);
         INSERT INTO pulse.job (job_name, owner, run_at, http, max_attempts)
              VALUES ('hook', '{two}'::regrole::oid, '2026-01-01 00:00:00+00',
                      '{{\"method\": \"POST\", \"url\": \"https://example.com/x\", \"headers\": {{}}}}', 3);
         INSERT INTO pulse.job_run (job_id, job_name, owner, scheduled_for, started_at, finished_at, status, message)
              SELECT job_id, job_name, owner, '2026-01-01', '2026-01-01', '2026-01-01 00:00:01', 'succeeded', 'SELECT 1'
                FROM pulse.job;
         INSERT INTO pulse.job_run (job_id, job_name, owner, scheduled_for, status)
              SELECT job_id, job_name, owner, '2026-01-02', 'queued' FROM pulse.job WHERE job_name = 'nightly';
         INSERT INTO pulse.job_stats (job_id, owner, last_status, consecutive_failures)
              SELECT job_id, owner, 'succeeded', 0 FROM pulse.job;
         INSERT INTO pulse.secret (owner, name, value)
              VALUES ('{one}'::regrole::oid, 'token', 'one-secret'), ('{two}'::regrole::oid, 'token', 'two-secret');
         INSERT INTO pulse.http_request (owner, request, state)
              VALUES ('{one}'::regrole::oid, '{{\"method\": \"GET\", \"url\": \"https://example.com/y\"}}', 'succeeded');"
    ))
    .expect("0.1.0 rows");
    let before = snapshot(&mut o);
    assert!(before.len() >= 12, "{before:?}");
    let values = secret_values(&mut o);
    assert_eq!(values.len(), 2);

    o.batch_execute("ALTER EXTENSION pg_pulse UPDATE")
        .expect("ALTER EXTENSION pg_pulse UPDATE");
    let version: String = o
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'pg_pulse'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(version, current_version(&mut o));
    assert_eq!(snapshot(&mut o), before, "every row kept, owners by name");
    assert_eq!(
        secret_values(&mut o),
        values,
        "secrets sealed, each opens as its owner's"
    );
    let rows: Vec<(String, String, String)> = o
        .query(
            "SELECT job_name, owner, database FROM pulse.jobs ORDER BY job_name, owner",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("hook".to_string(), two.clone(), old.name.clone()),
            ("nightly".to_string(), one.clone(), old.name.clone()),
            ("nightly".to_string(), two.clone(), old.name.clone()),
        ]
    );
    let nulls: i64 = o
        .query_one(
            "SELECT (SELECT count(*) FROM pulse.job WHERE database IS NOT NULL)
                  + (SELECT count(*) FROM pulse.job_run WHERE database IS NOT NULL)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        nulls, 0,
        "existing jobs and runs stay in pg_pulse's database"
    );
    // the re-created functions are bound to 0.2.0's entry points (14 arguments): here, outside
    // pulse.database_name, they answer that jobs are managed in that database
    let (msg, _) = expect_error(
        o.query_one(
            "SELECT pulse.schedule_job('x', '@daily', 'SELECT 1', database => 'postgres')",
            &[],
        ),
        "55000",
    );
    assert!(msg.contains("only in database"), "{msg}");
    drop(o);

    fresh
        .connect()
        .batch_execute("CREATE EXTENSION pg_pulse")
        .expect("fresh install");
    let (upgraded, installed) = (schema_dump(&old), schema_dump(&fresh));
    assert!(
        installed.contains("CREATE TABLE pulse.job (") && installed.contains("regrole"),
        "the dump shows the extension's objects:\n{installed}"
    );
    assert!(
        upgraded == installed,
        "the upgraded schema differs from a fresh install at {}",
        first_difference(&upgraded, &installed)
    );
}

/// Rows as the functions of 0.2.0 and 0.3.0 would have written them (written directly, as above;
/// the two versions' tables take the same rows).
fn rows_of_0_2_0_and_0_3_0(one: &str, two: &str) -> String {
    format!(
        "INSERT INTO pulse.job (job_name, owner, schedule, command, timezone, comment, database)
              VALUES ('nightly', '{one}', '0 2 * * *', 'SELECT 1', 'Europe/Berlin', 'one''s', NULL),
                     ('nightly', '{two}', '@hourly', 'SELECT 2', 'UTC', NULL, 'postgres');
         INSERT INTO pulse.job (job_name, owner, run_at, http, max_attempts)
              VALUES ('hook', '{two}', '2026-01-01 00:00:00+00',
                      '{{\"method\": \"POST\", \"url\": \"https://example.com/x\", \"headers\": {{}}}}', 3);
         INSERT INTO pulse.job_run (job_id, job_name, owner, scheduled_for, started_at, finished_at, status, message)
              SELECT job_id, job_name, owner, '2026-01-01', '2026-01-01', '2026-01-01 00:00:01', 'failed', 'boom'
                FROM pulse.job;
         INSERT INTO pulse.job_run (job_id, job_name, owner, scheduled_for, status)
              SELECT job_id, job_name, owner, '2026-01-02', 'queued' FROM pulse.job WHERE job_name = 'nightly';
         INSERT INTO pulse.job_stats (job_id, owner, last_status, consecutive_failures)
              SELECT job_id, owner, 'failed', 1 FROM pulse.job;
         INSERT INTO pulse.secret (owner, name, value)
              VALUES ('{one}'::regrole::oid, 'token', 'one-secret'), ('{two}'::regrole::oid, 'token', 'two-secret');
         INSERT INTO pulse.http_request (owner, request, state)
              VALUES ('{one}'::regrole::oid, '{{\"method\": \"GET\", \"url\": \"https://example.com/y\"}}', 'pending');"
    )
}

/// Installs `version` in a database of its own, writes its rows, runs ALTER EXTENSION pg_pulse
/// UPDATE and checks that every row is kept and the schema equals a fresh install's.
fn upgrade_keeps_every_row_and_matches_a_fresh_install(version: &str) {
    let _a = admin();
    let tag = version.replace('.', "");
    let base = unique(&format!("up{tag}"));
    let (one, two) = (format!("{base}_one"), format!("{base}_two"));
    let _roles = PlainRoles::create(&[one.clone(), two.clone()]);
    let old = Db::create(port(), &format!("up{tag}_old"));
    let fresh = Db::create(port(), &format!("up{tag}_fresh"));
    let mut o = old.connect();
    o.batch_execute(&format!("CREATE EXTENSION pg_pulse VERSION '{version}'"))
        .unwrap_or_else(|e| panic!("install {version}: {e}"));
    let rows = rows_of_0_2_0_and_0_3_0(&one, &two);
    let (file, _gone) = secret_file("one-secret");
    let rows = if version == "0.2.0" || version == "0.3.0" {
        rows
    } else {
        // from 0.4.0 secrets are sealed: set through the function (as their owners)
        rows.split("INSERT INTO pulse.secret").next().unwrap().to_string()
            + &format!(
                "SELECT pulse.set_secret_from_file('token', '{file}', '{one}');
                 SELECT pulse.set_secret_from_file('token', '{file2}', '{two}');
                 INSERT INTO pulse.http_request (owner, request, state)
                      VALUES ('{one}'::regrole::oid, '{{\"method\": \"GET\", \"url\": \"https://example.com/y\"}}', 'pending');",
                file2 = secret_file_named(&format!("{file}.2"), "two-secret")
            )
    };
    o.batch_execute(&rows)
        .unwrap_or_else(|e| panic!("{version} rows: {e:?}"));
    let before = snapshot(&mut o);
    assert!(before.len() >= 12, "{before:?}");
    let values = secret_values(&mut o);
    assert_eq!(values.len(), 2);
    o.batch_execute("ALTER EXTENSION pg_pulse UPDATE")
        .expect("ALTER EXTENSION pg_pulse UPDATE");
    let installed_version: String = o
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'pg_pulse'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(installed_version, current_version(&mut o));
    assert_eq!(snapshot(&mut o), before, "every row kept");
    assert_eq!(
        secret_values(&mut o),
        values,
        "secrets sealed, each opens as its owner's"
    );
    drop(o);
    fresh
        .connect()
        .batch_execute("CREATE EXTENSION pg_pulse")
        .expect("fresh install");
    let (upgraded, installed) = (schema_dump(&old), schema_dump(&fresh));
    assert!(
        upgraded == installed,
        "the upgraded schema differs from a fresh install at {}",
        first_difference(&upgraded, &installed)
    );
}

#[test]
fn upgrade_from_0_2_0_keeps_every_row_and_matches_a_fresh_install() {
    upgrade_keeps_every_row_and_matches_a_fresh_install("0.2.0");
}

#[test]
fn upgrade_from_0_3_0_keeps_every_row_and_matches_a_fresh_install() {
    upgrade_keeps_every_row_and_matches_a_fresh_install("0.3.0");
}

#[test]
fn upgrade_from_0_4_0_keeps_every_row_and_matches_a_fresh_install() {
    upgrade_keeps_every_row_and_matches_a_fresh_install("0.4.0");
}

#[test]
fn upgrade_from_0_5_0_keeps_every_row_and_matches_a_fresh_install() {
    upgrade_keeps_every_row_and_matches_a_fresh_install("0.5.0");
}

/// Removes the files it names when dropped (also when the test fails).
struct Files(Vec<String>);

impl Drop for Files {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// A file the server can read holding `value` (for pulse.set_secret_from_file).
fn secret_file(value: &str) -> (String, Files) {
    let path = format!("/tmp/{}.secret", unique("upsecret"));
    secret_file_named(&path, value);
    (path.clone(), Files(vec![path.clone(), format!("{path}.2")]))
}

fn secret_file_named(path: &str, value: &str) -> String {
    std::fs::write(path, value).unwrap_or_else(|e| panic!("write {path}: {e}"));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    path.to_string()
}

/// 0.3.0 filled in placeholders in every body; 0.4.0 only in bodies marked `body_template`. The
/// update marks the bodies with `{{` of HTTP jobs, their webhook alert targets and requests
/// waiting to be sent, so they keep sending what they sent; others (and alert texts) are data.
#[test]
fn upgrade_from_0_3_0_keeps_body_templates_working() {
    let _a = admin();
    let base = unique("upbody");
    let one = format!("{base}_one");
    let _roles = PlainRoles::create(std::slice::from_ref(&one));
    let old = Db::create(port(), "upbody_old");
    let mut o = old.connect();
    o.batch_execute("CREATE EXTENSION pg_pulse VERSION '0.3.0'")
        .unwrap();
    o.batch_execute(&format!(
        r#"INSERT INTO pulse.job (job_name, owner, run_at, http, alert) VALUES
             ('tpl', '{one}', '2026-01-01', '{{"method": "POST", "url": "https://x.io/a", "headers": {{}}, "body": {{"run": "{{{{run_id}}}}"}}}}',
              '{{"webhook": {{"method": "POST", "url": "https://x.io/h", "body_text": "job {{{{job_name}}}} failed"}}}}'),
             ('text', '{one}', '2026-01-01', '{{"method": "POST", "url": "https://x.io/b", "body_text": "at {{{{scheduled_for}}}}"}}', NULL),
             ('plain', '{one}', '2026-01-01', '{{"method": "POST", "url": "https://x.io/{{{{job_name}}}}", "body": {{"n": 1}}}}',
              '{{"webhook": {{"method": "POST", "url": "https://x.io/h"}}}}');
           INSERT INTO pulse.http_request (owner, request, state, origin) VALUES
             ('{one}'::regrole::oid, '{{"method": "POST", "url": "https://x.io/p", "body": {{"k": "{{{{secret:token}}}}"}}}}', 'pending', NULL),
             ('{one}'::regrole::oid, '{{"method": "POST", "url": "https://x.io/q", "body": {{"k": "{{{{secret:token}}}}"}}}}', 'succeeded', NULL),
             ('{one}'::regrole::oid, '{{"method": "POST", "url": "https://x.io/r", "body": {{"text": "job {{{{x}}}} failed"}}}}', 'pending', 'alert');"#
    ))
    .unwrap();
    o.batch_execute("ALTER EXTENSION pg_pulse UPDATE").unwrap();
    let marked = |o: &mut Client, sql: &str| -> Vec<(String, bool)> {
        o.query(sql, &[])
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    };
    assert_eq!(
        marked(
            &mut o,
            "SELECT job_name, coalesce((http->>'body_template')::bool, false) FROM pulse.job ORDER BY job_name"
        ),
        vec![
            ("plain".to_string(), false),
            ("text".to_string(), true),
            ("tpl".to_string(), true)
        ]
    );
    assert_eq!(
        marked(
            &mut o,
            "SELECT job_name, coalesce((alert->'webhook'->>'body_template')::bool, false) FROM pulse.job
              WHERE alert IS NOT NULL ORDER BY job_name"
        ),
        vec![("plain".to_string(), false), ("tpl".to_string(), true)]
    );
    assert_eq!(
        marked(
            &mut o,
            "SELECT request->>'url', coalesce((request->>'body_template')::bool, false) FROM pulse.http_request ORDER BY id"
        ),
        vec![
            ("https://x.io/p".to_string(), true),
            ("https://x.io/q".to_string(), false),
            ("https://x.io/r".to_string(), false)
        ]
    );
}

#[test]
fn job_owners_survive_dumpall_roles_and_dump_into_another_cluster_by_name() {
    let _a = admin();
    let base = unique("dr");
    // zed is created first, so in this cluster it has the lower OID; the other cluster gets a
    // decoy role first, so every OID differs there
    let (zed, adam) = (format!("{base}_zed"), format!("{base}_adam"));
    let _roles = PlainRoles::create(&[zed.clone(), adam.clone()]);
    let src = Db::create(port(), "dr_src");
    let mut s = src.connect();
    s.batch_execute(&format!(
        "CREATE EXTENSION pg_pulse;
         INSERT INTO pulse.job (job_name, owner, schedule, command)
              VALUES ('nightly', '{zed}', '@daily', 'SELECT 1'), ('nightly', '{adam}', '@daily', 'SELECT 2'),
                     ('adams_own', '{adam}', '@hourly', 'SELECT 3');"
    ))
    .expect("jobs");
    let jobs = |c: &mut Client| -> Vec<(String, String, u32)> {
        c.query(
            "SELECT job_name, owner::text, owner::oid FROM pulse.job ORDER BY job_name, owner::text",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
    };
    let source = jobs(&mut s);
    assert_eq!(source.len(), 3);
    drop(s);

    // the roles (only this test's: other suites create and drop roles meanwhile) and the database
    let roles_sql: String = pg_program("pg_dumpall", port(), &["--roles-only"], "")
        .lines()
        .filter(|l| l.contains(&base))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        roles_sql.contains(&zed) && roles_sql.contains(&adam),
        "{roles_sql}"
    );
    let dump = pg_program("pg_dump", port(), &["-d", &src.name], "");

    // a second server (tests/common: a free port, removed when the test ends)
    let cluster = Cluster::start("upgrade_restore", &[]);
    let mut b = connect_port("postgres", cluster.port);
    b.batch_execute(&format!("CREATE ROLE {base}_decoy"))
        .unwrap();
    b.batch_execute(&format!("CREATE DATABASE {}", src.name))
        .unwrap();
    let psql = ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d"];
    pg_program(
        "psql",
        cluster.port,
        &[&psql[..], &["postgres"]].concat(),
        &roles_sql,
    );
    pg_program(
        "psql",
        cluster.port,
        &[&psql[..], &[src.name.as_str()]].concat(),
        &dump,
    );
    let mut r = connect_db("postgres", cluster.port, &src.name);
    let restored = jobs(&mut r);
    let names = |v: &[(String, String, u32)]| -> Vec<(String, String)> {
        v.iter().map(|(j, o, _)| (j.clone(), o.clone())).collect()
    };
    assert_eq!(
        names(&restored),
        names(&source),
        "each job keeps its owner by name"
    );
    for (job, owner, oid) in &restored {
        let there: u32 = r
            .query_one("SELECT oid FROM pg_roles WHERE rolname = $1", &[owner])
            .unwrap()
            .get(0);
        assert_eq!(
            *oid, there,
            "{job}: the owner is the role of that name in the new cluster"
        );
        let here = source.iter().find(|(_, o, _)| o == owner).unwrap().2;
        assert_ne!(*oid, here, "{job}: OIDs differ between the clusters");
    }
}
