//! End-to-end: secrets are stored per role, shown by name only, readable by no role, and never
//! written to the server log, even when a call fails.
mod common;
use common::*;

#[test]
fn secrets_are_private_and_never_logged() {
    let mut a = admin();
    let role = new_role(&mut a, "secret_owner");
    let other = new_role(&mut a, "secret_other");
    let mut u = connect_as(&role);
    let value = format!("sk_live_{}", unique("VALUE"));
    let created: bool = u
        .query_one("SELECT pulse.set_secret('service_key', $1)", &[&value])
        .unwrap()
        .get(0);
    assert!(created);
    let replaced: bool = u
        .query_one("SELECT pulse.set_secret('service_key', $1)", &[&value])
        .unwrap()
        .get(0);
    assert!(!replaced, "the second call replaces");
    // Names only, and only one's own.
    let row = u
        .query_one("SELECT to_jsonb(s)::text FROM pulse.secrets s", &[])
        .unwrap();
    let shown: String = row.get(0);
    assert!(
        shown.contains("service_key") && !shown.contains(&value),
        "{shown}"
    );
    let mut o = connect_as(&other);
    let n: i64 = o
        .query_one("SELECT count(*) FROM pulse.secrets", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    // The table itself is readable by no role but its owner.
    expect_error(u.query("SELECT * FROM pulse.secret", &[]), "42501");
    expect_error(o.query("SELECT * FROM pulse.secret", &[]), "42501");
    // A failing call reports the error without the statement (which holds the value) in the log.
    let leaked = format!("leak_{}", unique("CHECK"));
    expect_error(
        u.query_one("SELECT pulse.set_secret('bad name!', $1)", &[&leaked]),
        "22023",
    );
    expect_error(
        u.query_one(
            &format!("SELECT pulse.set_secret('also bad!', '{leaked}')"),
            &[],
        ),
        "22023",
    );
    let log = std::fs::read_to_string(format!("{}/server.log", pgdata())).unwrap_or_default();
    assert!(
        log.contains("invalid secret name"),
        "the error itself is logged"
    );
    assert!(
        !log.contains(&leaked),
        "a secret value reached the server log"
    );
    assert!(!log.contains(&value));
    // drop: true, then false.
    assert!(u
        .query_one("SELECT pulse.drop_secret('service_key')", &[])
        .unwrap()
        .get::<_, bool>(0));
    assert!(!u
        .query_one("SELECT pulse.drop_secret('service_key')", &[])
        .unwrap()
        .get::<_, bool>(0));
}
