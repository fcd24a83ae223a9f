//! End-to-end: secrets at rest, in the log and in what servers echo (issue 16, item 3).
//! * table readers (pg_read_all_data), the table's file and the WAL see ciphertext only; the key
//!   file is PGDATA/pg_pulse/secret.key, mode 0600;
//! * a row planted or copied under another role's name does not open as that role's secret;
//!   REASSIGN OWNED re-seals for the new owner;
//! * no value in the server log: an error before pg_pulse runs (STATEMENT line), log_statement
//!   = 'all' (simple and extended protocol), and set_secret_from_file; values written with
//!   escapes or in pieces masked as what they decode to; comments naming set_secret hide nothing;
//! * JSON-escaped and URL-encoded echoes are scrubbed; short values and NULL names are refused.
mod common;
use common::*;
use postgres::Client;
use pulse_e2e::server::Server;
use std::io::{BufRead, BufReader, Write};

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn server_log() -> String {
    std::fs::read_to_string(format!("{}/server.log", pgdata())).unwrap_or_default()
}

/// A role with pg_read_all_data and pg_write_all_data (dropped by the caller's Cleanup).
fn reader_writer(a: &mut Client, prefix: &str) -> String {
    let r = new_role(a, prefix);
    a.batch_execute(&format!("GRANT pg_read_all_data, pg_write_all_data TO {r}"))
        .unwrap();
    r
}

/// An after-commit GET of `url` by the session's role with `Authorization: Bearer {{secret:NAME}}`;
/// waits for it to finish: (state, error).
fn get_with_secret(c: &mut Client, url: &str, name: &str) -> (String, Option<String>) {
    let headers = format!("{{\"Authorization\": \"Bearer {{{{secret:{name}}}}}\"}}");
    let id: i64 = c
        .query_one(
            "SELECT pulse.http_get($1, headers => $2::text::jsonb)",
            &[&url, &headers],
        )
        .unwrap()
        .get(0);
    let (state, _, err) = wait_request_final(c, id);
    (state, err)
}

#[test]
fn table_readers_the_table_file_and_the_wal_see_ciphertext_only() {
    let mut a = admin();
    let alice = new_role(&mut a, "sec_alice");
    let analyst = reader_writer(&mut a, "sec_analyst");
    let _c = Cleanup(vec![drop_role_sql(&alice), drop_role_sql(&analyst)]);
    let value = format!("sk_live_{}", unique("ATREST"));
    let lsn0: String = a
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .unwrap()
        .get(0);
    let mut u = connect_as(&alice);
    u.execute("SELECT pulse.set_secret('api_key', $1)", &[&value])
        .unwrap();
    // what pg_read_all_data reads: every column, as text and as hex
    let mut x = connect_as(&analyst);
    let rows: Vec<String> = x
        .query("SELECT to_jsonb(s)::text FROM pulse.secret s", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!rows.is_empty(), "the analyst reads the table");
    for r in &rows {
        assert!(
            !r.contains(&value),
            "plaintext readable by pg_read_all_data: {r}"
        );
        assert!(
            !r.contains(&hex(value.as_bytes())),
            "plaintext (hex) readable: {r}"
        );
    }
    // the table's file and the WAL written since
    a.batch_execute("CHECKPOINT").unwrap();
    let file: Vec<u8> = a
        .query_one(
            "SELECT pg_read_binary_file(pg_relation_filepath('pulse.secret'))",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        !contains(&file, value.as_bytes()),
        "plaintext in the table's file"
    );
    let wal: Vec<u8> = a
        .query_one(
            "WITH r AS (SELECT $1::text::pg_lsn AS a, pg_current_wal_insert_lsn() AS b)
             SELECT string_agg(pg_read_binary_file('pg_wal/' || f.name,
                        CASE WHEN f.name = pg_walfile_name(r.a) THEN (r.a - '0/0'::pg_lsn)::bigint % 16777216 ELSE 0 END,
                        16777216), ''::bytea ORDER BY f.name)
               FROM r, pg_ls_waldir() f
              WHERE f.name BETWEEN pg_walfile_name(r.a) AND pg_walfile_name(r.b)",
            &[&lsn0],
        )
        .unwrap()
        .get(0);
    assert!(
        wal.len() > 100,
        "read the WAL written since ({} bytes)",
        wal.len()
    );
    assert!(!contains(&wal, value.as_bytes()), "plaintext in the WAL");
    // the key: a file of the data directory, readable only by the server's OS user
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(format!("{}/pg_pulse/secret.key", pgdata()))
        .expect("the key file exists after first use");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // pg_dump of the database leaves secrets out
    let dump = pg_program(
        "pg_dump",
        port(),
        &["-d", "postgres", "--data-only", "--schema=pulse"],
        "",
    );
    assert!(!dump.contains(&value));
}

#[test]
fn a_planted_or_copied_row_does_not_open_as_another_roles_secret() {
    let mut a = admin();
    let srv = Server::start();
    let alice = new_role(&mut a, "sec_alice");
    let bob = new_role(&mut a, "sec_bob");
    let writer = reader_writer(&mut a, "sec_writer");
    let _c = Cleanup(vec![
        drop_role_sql(&alice),
        drop_role_sql(&bob),
        drop_role_sql(&writer),
    ]);
    let value = format!("alice_{}", unique("PLANTED"));
    connect_as(&alice)
        .execute("SELECT pulse.set_secret('k', $1)", &[&value])
        .unwrap();
    // alice's row copied under bob's OID (whatever the table's columns), and under another name
    let mut w = connect_as(&writer);
    w.execute(
        "INSERT INTO pulse.secret
         SELECT (jsonb_populate_record(NULL::pulse.secret,
                 to_jsonb(s) || jsonb_build_object('owner', $2::text::regrole::oid))).*
           FROM pulse.secret s WHERE s.owner = $1::text::regrole::oid AND s.name = 'k'",
        &[&alice, &bob],
    )
    .unwrap();
    w.execute(
        "INSERT INTO pulse.secret
         SELECT (jsonb_populate_record(NULL::pulse.secret, to_jsonb(s) || '{\"name\": \"k2\"}')).*
           FROM pulse.secret s WHERE s.owner = $1::text::regrole::oid AND s.name = 'k'",
        &[&alice],
    )
    .unwrap();
    let mut b = connect_as(&bob);
    let (state, err) = get_with_secret(&mut b, &srv.url("/ok/planted_bob"), "k");
    assert_eq!(state, "failed");
    let err = err.unwrap_or_default();
    assert!(err.contains("secret \"k\" cannot be read"), "{err}");
    assert!(!err.contains(&value), "{err}");
    let mut al = connect_as(&alice);
    let (state, err) = get_with_secret(&mut al, &srv.url("/ok/planted_alice"), "k2");
    assert_eq!(state, "failed");
    assert!(err
        .unwrap_or_default()
        .contains("secret \"k2\" cannot be read"));
    assert!(srv.seen("/ok/planted").is_empty(), "nothing was sent");
    // alice's own secret still works
    let (state, err) = get_with_secret(&mut al, &srv.url("/ok/own"), "k");
    assert_eq!(state, "succeeded", "{err:?}");
    assert_eq!(
        srv.seen("/ok/own")[0].header("authorization"),
        Some(format!("Bearer {value}").as_str())
    );
}

#[test]
fn reassigned_secrets_are_resealed_for_their_new_owner() {
    let mut a = admin();
    let srv = Server::start();
    let from = new_role(&mut a, "sec_from");
    let to = new_role(&mut a, "sec_to");
    let _c = Cleanup(vec![drop_role_sql(&from), drop_role_sql(&to)]);
    let value = format!("moving_{}", unique("RESEAL"));
    connect_as(&from)
        .execute("SELECT pulse.set_secret('moved', $1)", &[&value])
        .unwrap();
    a.batch_execute(&format!("REASSIGN OWNED BY {from} TO {to}"))
        .unwrap();
    let mut t = connect_as(&to);
    let (state, err) = get_with_secret(&mut t, &srv.url("/ok/moved"), "moved");
    assert_eq!(state, "succeeded", "{err:?}");
    assert_eq!(
        srv.seen("/ok/moved")[0].header("authorization"),
        Some(format!("Bearer {value}").as_str())
    );
}

#[test]
fn values_stay_out_of_the_server_log() {
    let mut a = admin();
    let alice = new_role(&mut a, "sec_log");
    let _c = Cleanup(vec![drop_role_sql(&alice)]);
    let mut u = connect_as(&alice);
    // default settings: an error while the statement is analysed, before set_secret runs
    let v1 = format!("stmt_{}", unique("DEFAULTLOG"));
    let missing = unique("missing_table");
    expect_error(
        u.batch_execute(&format!(
            "SELECT pulse.set_secret('k', '{v1}') FROM {missing}"
        )),
        "42P01",
    );
    // log_statement = 'all' and durations, simple and extended protocol
    let (v2, v3) = (
        format!("all_{}", unique("LOGALL")),
        format!("ext_{}", unique("LOGEXT")),
    );
    // (a query string is checked for log_statement before it runs: SET first)
    a.batch_execute("SET log_statement = 'all'; SET log_min_duration_statement = 0")
        .unwrap();
    a.batch_execute(&format!("SELECT pulse.set_secret('k', '{v2}')"))
        .unwrap();
    a.execute("SELECT pulse.set_secret('k', $1)", &[&v3])
        .unwrap();
    // ...and from a file: the value is in no statement at all
    let v4 = format!("file_{}", unique("FROMFILE"));
    let path = format!("/tmp/{}.secret", unique("pulse_secret_file"));
    std::fs::write(&path, format!("{v4}\n")).unwrap();
    let _f = RemoveFile(path.clone());
    a.execute(
        "SELECT pulse.set_secret_from_file('from_file', $1, owner => $2)",
        &[&path, &alice],
    )
    .unwrap();
    a.batch_execute("RESET log_statement; RESET log_min_duration_statement")
        .unwrap();
    let log = server_log();
    assert!(
        log.contains(&format!("relation \"{missing}\" does not exist")),
        "the error is logged"
    );
    assert!(
        log.contains("SELECT pulse.set_secret('*', '")
            && log.contains("SELECT pulse.set_secret_from_file('from_file', $1, owner => $2)"),
        "statements are logged, their literals masked"
    );
    for v in [&v1, &v2, &v3, &v4] {
        assert!(!log.contains(v.as_str()), "{v} reached the server log");
    }
    // the file's value (one trailing newline removed) is alice's secret
    let srv = Server::start();
    let (state, err) = get_with_secret(&mut u, &srv.url("/ok/from_file"), "from_file");
    assert_eq!(state, "succeeded", "{err:?}");
    assert_eq!(
        srv.seen("/ok/from_file")[0].header("authorization"),
        Some(format!("Bearer {v4}").as_str())
    );
}

/// The log hook counts only real calls of set_secret: a comment or a literal naming it does not
/// hide a statement from the log (its literals, its STATEMENT line). Values written with
/// escapes (E'', U&'') or in short pieces joined by || are masked as what they decode to.
#[test]
fn comments_hide_nothing_and_escaped_values_stay_out_of_the_log() {
    let mut a = admin();
    let alice = new_role(&mut a, "sec_lex");
    let _c = Cleanup(vec![drop_role_sql(&alice)]);
    let tag = unique("LEX");
    // default settings: an error's STATEMENT line stays, whatever a comment says
    let missing = unique("nothere");
    let select = format!("SELECT 'seen-{tag}' FROM {missing} /* set_secret */");
    expect_error(a.batch_execute(&select), "42P01");
    // values that reach an error message decoded (default settings: client and log)
    let mut u = connect_as(&alice);
    let (vb, vc, vd) = (
        format!("LEAKTEST-B-{tag}"),
        format!("LEAKTEST-C-{tag}"),
        format!("LEAKTEST-D-{tag}"),
    );
    let pieces: Vec<String> = vd
        .as_bytes()
        .chunks(6)
        .map(|p| format!("'{}'", String::from_utf8_lossy(p)))
        .collect();
    for (st, v) in [
        (
            format!("SELECT pulse.set_secret('k1', E'\\x4c{}'::int)", &vb[1..]),
            &vb,
        ),
        (
            format!("SELECT pulse.set_secret('k1', U&'\\004c{}'::int)", &vc[1..]),
            &vc,
        ),
        (
            format!(
                "SELECT pulse.set_secret('k1', ({})::int::text)",
                pieces.join(" || ")
            ),
            &vd,
        ),
    ] {
        let (msg, _) = expect_error(u.batch_execute(&st), "22P02");
        assert!(
            msg.contains("invalid input syntax for type integer"),
            "{msg}"
        );
        assert!(
            !msg.contains(v.as_str()),
            "the client's error holds the value: {msg}"
        );
    }
    // log_statement = 'all': a comment naming set_secret does not mask the statement
    let hidden = format!("evil-audit-hidden-{tag}");
    let update =
        format!("UPDATE pulse.job SET comment='{hidden}' WHERE job_name='{tag}' -- set_secret");
    a.batch_execute("SET log_statement = 'all'").unwrap();
    a.batch_execute(&update).unwrap();
    a.batch_execute("RESET log_statement").unwrap();
    let log = server_log();
    assert!(
        log.contains(&format!("STATEMENT:  {select}")),
        "the STATEMENT line of {select} is logged"
    );
    assert!(
        log.contains(&format!("statement: {update}")),
        "{update} is logged as it is"
    );
    for v in [&vb, &vc, &vd] {
        assert!(!log.contains(v.as_str()), "{v} reached the server log");
    }
}

struct RemoveFile(String);
impl Drop for RemoveFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn set_secret_from_file_is_for_superusers_and_never_shows_the_content() {
    let mut a = admin();
    let alice = new_role(&mut a, "sec_file");
    let _c = Cleanup(vec![drop_role_sql(&alice)]);
    let dir = format!("/tmp/{}", unique("pulse_secret_dir"));
    std::fs::create_dir_all(&dir).unwrap();
    let _d = RemoveFile(dir.clone());
    let file = |name: &str, content: &[u8]| {
        let p = format!("{dir}/{name}");
        std::fs::write(&p, content).unwrap();
        p
    };
    let ok = file("ok", b"sufficiently-long-value\n");
    expect_error(
        connect_as(&alice).query_one("SELECT pulse.set_secret_from_file('k', $1)", &[&ok]),
        "42501",
    );
    let (msg, _) = expect_error(
        a.query_one(
            "SELECT pulse.set_secret_from_file('k', $1)",
            &[&format!("{dir}/none")],
        ),
        "58P01",
    );
    assert!(msg.contains("/none"), "{msg}");
    let short = file("short", b"SHORTV\n");
    let (msg, hint) = expect_error(
        a.query_one("SELECT pulse.set_secret_from_file('k', $1)", &[&short]),
        "22023",
    );
    assert!(!msg.contains("SHORTV") && !hint.is_empty(), "{msg}");
    let binary = file("binary", b"NOTUTF8-\xff\xfe-CONTENT");
    let (msg, _) = expect_error(
        a.query_one("SELECT pulse.set_secret_from_file('k', $1)", &[&binary]),
        "22021",
    );
    assert!(!msg.contains("NOTUTF8"), "{msg}");
    let (_, hint) = expect_error(
        a.query_one(
            "SELECT pulse.set_secret_from_file('k', $1, owner => 'no_such_role_sec')",
            &[&ok],
        ),
        "42704",
    );
    assert!(hint.contains("owner"), "{hint}");
    assert!(a
        .query_one(
            "SELECT pulse.set_secret_from_file('k', $1, owner => $2)",
            &[&ok, &alice]
        )
        .unwrap()
        .get::<_, bool>(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn short_values_and_null_names_are_refused() {
    let mut a = admin();
    let alice = new_role(&mut a, "sec_short");
    let _c = Cleanup(vec![drop_role_sql(&alice)]);
    let mut u = connect_as(&alice);
    let (msg, hint) = expect_error(
        u.query_one("SELECT pulse.set_secret('k', 'seven77')", &[]),
        "22023",
    );
    assert!(
        msg.contains("shorter than 8 bytes") && !msg.contains("seven77"),
        "{msg}"
    );
    assert!(!hint.is_empty());
    assert!(u
        .query_one("SELECT pulse.set_secret('k', 'eight888')", &[])
        .unwrap()
        .get::<_, bool>(0));
    let (_, hint) = expect_error(u.query_one("SELECT pulse.drop_secret(NULL)", &[]), "22004");
    assert!(!hint.is_empty());
    expect_error(
        u.query_one("SELECT pulse.set_secret(NULL, 'eight888')", &[]),
        "22004",
    );
}

/// A server that answers every request with its Authorization header echoed encoded: JSON with
/// `\"`, `\\` and `\/` escapes, JSON with every non-alphanumeric ASCII as `\u00XX`, a form value
/// (`+` for space) and percent-encoded (`%20`), in the body and in a header.
fn encoding_echo_server() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut auth = String::new();
            let mut line = String::new();
            while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) && line != "\r\n" {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("authorization:") {
                    auth = line[line.len() - v.len()..].trim().to_string();
                }
                line.clear();
            }
            let json = auth
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('/', "\\/");
            let uesc: String = auth
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_string()
                    } else {
                        format!("\\u{:04X}", c as u32)
                    }
                })
                .collect();
            let pct = |form: bool| -> String {
                auth.bytes()
                    .map(|b| match b {
                        b' ' if form => "+".to_string(),
                        b if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) => {
                            (b as char).to_string()
                        }
                        b => format!("%{b:02X}"),
                    })
                    .collect()
            };
            let body = format!(
                "{{\"auth\": \"{json}\", \"u\": \"{uesc}\", \"form\": \"a={}\", \"pct\": \"{}\"}}",
                pct(true),
                pct(false)
            );
            let mut out = s;
            let _ = write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Echo: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                pct(false),
                body.len()
            );
        }
    });
    port
}

#[test]
fn json_escaped_and_url_encoded_echoes_are_scrubbed() {
    let mut a = admin();
    let alice = new_role(&mut a, "sec_echo");
    let _c = Cleanup(vec![drop_role_sql(&alice)]);
    let value = format!("q\"u\\o/te s+p&a={}", unique("ECHO"));
    let mut u = connect_as(&alice);
    u.execute("SELECT pulse.set_secret('k', $1)", &[&value])
        .unwrap();
    let port = encoding_echo_server();
    let (state, err) = get_with_secret(&mut u, &format!("http://127.0.0.1:{port}/echo"), "k");
    assert_eq!(state, "succeeded", "{err:?}");
    let stored: String = u
        .query_one(
            "SELECT coalesce(headers::text, '') || content FROM pulse.http_responses ORDER BY id DESC LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(stored.matches("[secret:k]").count(), 5, "{stored}");
    let tail = value.split('=').next_back().unwrap();
    assert!(
        !stored.contains(tail),
        "an encoded echo of the secret was stored: {stored}"
    );
}
