//! End-to-end: job owners and databases. `database =>` (checked, stored, shown), owners that
//! cannot log in, and the role lifecycle (DROP ROLE refused while a role owns jobs or secrets,
//! REASSIGN OWNED and DROP OWNED followed), also against roles that try what they may not.
//! Owners across pg_dump/restore are in upgrade.rs.
mod common;
use common::*;
use postgres::Client;

/// Drops a database (and its sessions) when the test ends, also when it fails.
struct Database<'a> {
    name: String,
    admin: &'a mut Client,
}

impl<'a> Database<'a> {
    fn create(admin: &'a mut Client, prefix: &str, sql_after: &str) -> Database<'a> {
        let name = unique(prefix);
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create database");
        admin
            .batch_execute(&sql_after.replace("{db}", &name))
            .expect("set up database");
        Database { name, admin }
    }
}

impl Drop for Database<'_> {
    fn drop(&mut self) {
        let _ = self.admin.batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}

/// Drops roles made by `new_role` (and what they own) when the test ends, also when it fails.
struct Roles(Vec<String>);

impl Drop for Roles {
    fn drop(&mut self) {
        let mut a = connect_as("postgres");
        for r in &self.0 {
            let exists: bool = a
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)",
                    &[r],
                )
                .map(|row| row.get(0))
                .unwrap_or(false);
            if exists {
                drop_role(&mut a, r);
            }
        }
    }
}

fn job_database(c: &mut Client, job: &str) -> (Option<String>, String) {
    let row = c
        .query_one(
            "SELECT j.database::text, v.database FROM pulse.job j JOIN pulse.jobs v USING (job_id)
              WHERE j.job_name = $1",
            &[&job],
        )
        .expect("read job");
    (row.get(0), row.get(1))
}

#[test]
fn database_argument_is_checked_stored_and_shown() {
    let _jobs = Jobs::new();
    let mut a = admin();
    let role = new_role(&mut a, "db_user");
    let _roles = Roles(vec![role.clone()]);
    // a database nobody may connect to but its owner (and superusers)
    let mut db_admin = connect_as("postgres");
    let db = Database::create(
        &mut db_admin,
        "jobs_db",
        "REVOKE CONNECT ON DATABASE {db} FROM PUBLIC",
    );
    let job = unique("elsewhere");
    let id: i64 = a
        .query_one(
            "SELECT pulse.schedule_job($1, '@yearly', 'SELECT 1', database => $2)",
            &[&job, &db.name],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        job_database(&mut a, &job),
        (Some(db.name.clone()), db.name.clone())
    );
    // the same call again changes nothing (idempotent, also the database)
    let before: String = a
        .query_one(
            "SELECT updated_at::text FROM pulse.job WHERE job_id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    let again: i64 = a
        .query_one(
            "SELECT pulse.schedule_job($1, '@yearly', 'SELECT 1', database => $2)",
            &[&job, &db.name],
        )
        .unwrap()
        .get(0);
    let after: String = a
        .query_one(
            "SELECT updated_at::text FROM pulse.job WHERE job_id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        (again, &after),
        (id, &before),
        "unchanged input changes nothing"
    );
    // runs name the job's database
    let run = run_job(&mut a, &job);
    let run_db: (Option<String>, String) = a
        .query_one(
            "SELECT r.database::text, v.database FROM pulse.job_run r JOIN pulse.job_runs v USING (run_id)
              WHERE run_id = $1",
            &[&run],
        )
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(run_db, (Some(db.name.clone()), db.name.clone()));
    // '' is this database again; the database's own name is stored as NULL too
    a.query_one("SELECT pulse.alter_job($1, database => '')", &[&job])
        .unwrap();
    assert_eq!(job_database(&mut a, &job), (None, "postgres".to_string()));
    a.query_one(
        "SELECT pulse.alter_job($1, database => $2)",
        &[&job, &db.name],
    )
    .unwrap();
    assert_eq!(job_database(&mut a, &job).0, Some(db.name.clone()));
    a.query_one(
        "SELECT pulse.schedule_job($1, '@yearly', 'SELECT 1', database => current_database())",
        &[&job],
    )
    .unwrap();
    assert_eq!(job_database(&mut a, &job).0, None);
    // positional calls without the new argument still work and keep NULL
    a.query_one(
        "SELECT pulse.schedule_once($1, now() + interval '1 day', 'SELECT 1')",
        &[&job],
    )
    .unwrap();
    assert_eq!(job_database(&mut a, &job).0, None);

    // an unknown database
    let (msg, hint) = expect_error(
        a.query_one(
            "SELECT pulse.schedule_job($1, '@yearly', 'SELECT 1', database => 'no_such_db_h1')",
            &[&job],
        ),
        "3D000",
    );
    assert!(msg.contains("no_such_db_h1"), "{msg}");
    assert!(hint.contains("SELECT datname FROM pg_database"), "{hint}");
    expect_error(
        a.query_one(
            "SELECT pulse.alter_job($1, database => 'no_such_db_h1')",
            &[&job],
        ),
        "3D000",
    );
    // a database that takes no connections
    let (msg, hint) = expect_error(
        a.query_one(
            "SELECT pulse.schedule_once($1, now(), 'SELECT 1', database => 'template0')",
            &[&job],
        ),
        "55000",
    );
    assert!(
        msg.contains("template0") && msg.contains("connections"),
        "{msg}"
    );
    assert!(hint.contains("datallowconn"), "{hint}");
    a.query_one("SELECT pulse.unschedule_job($1)", &[&job])
        .unwrap();

    // a role without CONNECT on the database cannot schedule a job there, nor move one there
    let mut u = connect_as(&role);
    let ujob = unique("u_elsewhere");
    let (msg, hint) = expect_error(
        u.query_one(
            "SELECT pulse.schedule_job($1, '@yearly', 'SELECT 1', database => $2)",
            &[&ujob, &db.name],
        ),
        "42501",
    );
    assert!(msg.contains(&role) && msg.contains(&db.name), "{msg}");
    assert!(
        hint.contains(&format!("GRANT CONNECT ON DATABASE {} TO {role}", db.name)),
        "{hint}"
    );
    u.query_one(
        "SELECT pulse.schedule_job($1, '@yearly', 'SELECT 1')",
        &[&ujob],
    )
    .unwrap();
    expect_error(
        u.query_one(
            "SELECT pulse.alter_job($1, database => $2)",
            &[&ujob, &db.name],
        ),
        "42501",
    );
    // nor can a superuser move the role's job there: the owner is checked, not the caller
    expect_error(
        a.query_one(
            "SELECT pulse.alter_job($1, database => $2)",
            &[&ujob, &db.name],
        ),
        "42501",
    );
    let n: i64 = a
        .query_one(
            "SELECT count(*) FROM pulse.job WHERE job_name = $1 AND database IS NULL",
            &[&ujob],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "refused calls changed nothing");
    // with CONNECT it may
    a.batch_execute(&format!("GRANT CONNECT ON DATABASE {} TO {role}", db.name))
        .unwrap();
    u.query_one(
        "SELECT pulse.alter_job($1, database => $2)",
        &[&ujob, &db.name],
    )
    .unwrap();
    assert_eq!(job_database(&mut a, &ujob).0, Some(db.name.clone()));
    u.query_one("SELECT pulse.unschedule_job($1)", &[&ujob])
        .unwrap();
    drop(u);
    a.batch_execute(&format!(
        "REVOKE CONNECT ON DATABASE {} FROM {role}",
        db.name
    ))
    .unwrap();
}

#[test]
fn owners_that_cannot_log_in_are_refused() {
    let _jobs = Jobs::new();
    let mut a = admin();
    let role = new_role(&mut a, "nologin");
    let _roles = Roles(vec![role.clone()]);
    a.batch_execute(&format!("ALTER ROLE {role} NOLOGIN"))
        .unwrap();
    let job = unique("nologin_job");
    a.batch_execute(&format!("SET ROLE {role}")).unwrap();
    let (msg, hint) = expect_error(
        a.query_one(
            "SELECT pulse.schedule_job($1, '@daily', 'SELECT 1')",
            &[&job],
        ),
        "28000",
    );
    assert!(msg.contains(&role), "{msg}");
    assert!(hint.contains(&format!("ALTER ROLE {role} LOGIN")), "{hint}");
    assert!(hint.contains("session of their owner"), "{hint}");
    expect_error(
        a.query_one("SELECT pulse.schedule_once($1, now(), 'SELECT 1')", &[&job]),
        "28000",
    );
    a.batch_execute("RESET ROLE").unwrap();
    let n: i64 = a
        .query_one(
            "SELECT count(*) FROM pulse.job WHERE job_name = $1",
            &[&job],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    // once it may log in, it may own jobs
    a.batch_execute(&format!("ALTER ROLE {role} LOGIN; SET ROLE {role}"))
        .unwrap();
    a.query_one(
        "SELECT pulse.schedule_job($1, '@daily', 'SELECT 1')",
        &[&job],
    )
    .unwrap();
    assert!(a
        .query_one("SELECT pulse.unschedule_job($1)", &[&job])
        .unwrap()
        .get::<_, bool>(0));
    a.batch_execute("RESET ROLE").unwrap();
}

/// REVOKE USAGE on schema pulse (so that PostgreSQL itself would let DROP ROLE through), in the
/// same turn as new_role's GRANTs.
fn revoke_usage(a: &mut Client, role: &str) {
    a.batch_execute(&format!(
        "BEGIN; SELECT pg_advisory_xact_lock(74000001);
         REVOKE USAGE ON SCHEMA pulse FROM {role}; COMMIT;"
    ))
    .unwrap();
}

fn role_oid(a: &mut Client, role: &str) -> u32 {
    a.query_one("SELECT oid FROM pg_roles WHERE rolname = $1", &[&role])
        .unwrap()
        .get(0)
}

#[test]
fn drop_role_is_refused_while_it_owns_jobs_or_secrets_and_drop_owned_removes_them() {
    let _jobs = Jobs::new();
    let mut a = admin();
    let role = new_role(&mut a, "dropped");
    let _roles = Roles(vec![role.clone()]);
    let job = unique("owned");
    let mut u = connect_as(&role);
    u.query_one(
        "SELECT pulse.schedule_job($1, '@yearly', 'SELECT 1')",
        &[&job],
    )
    .unwrap();
    u.query_one("SELECT pulse.set_secret('k', 'v-long-enough')", &[])
        .unwrap();
    let run = run_job(&mut u, &job);
    wait_run_final(&mut u, run);
    drop(u);
    let oid = role_oid(&mut a, &role);
    revoke_usage(&mut a, &role);

    let (msg, hint) = expect_error(a.batch_execute(&format!("DROP ROLE {role}")), "2BP01");
    assert_eq!(
        msg,
        format!("role \"{role}\" owns 1 pg_pulse job and 1 secret")
    );
    assert!(
        hint.contains(&format!("REASSIGN OWNED BY {role} TO")),
        "{hint}"
    );
    assert!(hint.contains(&format!("DROP OWNED BY {role}")), "{hint}");
    assert!(hint.contains("pulse.unschedule_job"), "{hint}");
    // the role is still there, with its job
    assert_eq!(role_oid(&mut a, &role), oid);
    // also inside a transaction block and among other roles
    let other = unique("other_role");
    expect_error(
        a.batch_execute(&format!(
            "BEGIN; CREATE ROLE {other}; DROP ROLE IF EXISTS no_such_role_h1, {other}, {role}; COMMIT;"
        )),
        "2BP01",
    );
    a.batch_execute("ROLLBACK").unwrap();

    // DROP OWNED removes the jobs and secrets (history stays), then DROP ROLE goes through
    a.batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
        .unwrap();
    let row = a
        .query_one(
            "SELECT (SELECT count(*) FROM pulse.job WHERE owner::oid = $1),
                    (SELECT count(*) FROM pulse.secret WHERE owner = $1),
                    (SELECT count(*) FROM pulse.job_run WHERE owner = $1)",
            &[&oid],
        )
        .unwrap();
    let (jobs, secrets, runs): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!((jobs, secrets), (0, 0));
    assert!(runs >= 1, "run history stays");
}

#[test]
fn reassign_owned_moves_jobs_and_secrets_and_others_cannot_touch_them() {
    let _jobs = Jobs::new();
    let mut a = admin();
    let from = new_role(&mut a, "from");
    let to = new_role(&mut a, "to");
    let hostile = new_role(&mut a, "hostile");
    let _roles = Roles(vec![from.clone(), to.clone(), hostile.clone()]);
    let (job, same) = (unique("moving"), unique("same"));
    let mut f = connect_as(&from);
    let mut t = connect_as(&to);
    for j in [&job, &same] {
        f.query_one("SELECT pulse.schedule_job($1, '@yearly', 'SELECT 1')", &[j])
            .unwrap();
    }
    t.query_one(
        "SELECT pulse.schedule_job($1, '@yearly', 'SELECT 2')",
        &[&same],
    )
    .unwrap();
    f.query_one("SELECT pulse.set_secret('token', 'from-token')", &[])
        .unwrap();
    let run = run_job(&mut f, &job);
    wait_run_final(&mut f, run);

    // other roles may not move or drop them: PostgreSQL's own privilege checks come first
    // (the hostile role owns a job of the same name and from owns jobs: were pg_pulse's checks
    // first, these would fail with 42710 and 2BP01 instead)
    let mut h = connect_as(&hostile);
    h.query_one(
        "SELECT pulse.schedule_job($1, '@yearly', 'SELECT 1')",
        &[&same],
    )
    .unwrap();
    expect_error(
        h.batch_execute(&format!("REASSIGN OWNED BY {from} TO {hostile}")),
        "42501",
    );
    expect_error(h.batch_execute(&format!("DROP OWNED BY {from}")), "42501");
    expect_error(h.batch_execute(&format!("DROP ROLE {from}")), "42501");
    h.query_one("SELECT pulse.unschedule_job($1)", &[&same])
        .unwrap();
    drop(h);
    let count_owned = |a: &mut Client, role: &str| -> i64 {
        a.query_one(
            "SELECT count(*) FROM pulse.job WHERE owner = $1::text::regrole",
            &[&role],
        )
        .unwrap()
        .get(0)
    };
    assert_eq!(count_owned(&mut a, &from), 2, "untouched");

    // a name clash is refused, with what to do
    let (msg, hint) = expect_error(
        a.batch_execute(&format!("REASSIGN OWNED BY {from} TO {to}")),
        "42710",
    );
    assert!(msg.contains(&same) && msg.contains(&to), "{msg}");
    assert!(hint.contains("new_name"), "{hint}");
    assert_eq!(count_owned(&mut a, &from), 2, "rolled back");
    f.query_one(
        "SELECT pulse.alter_job($1, new_name => $2)",
        &[&same, &format!("{same}_from")],
    )
    .unwrap();
    // ...and so is a secret's
    t.query_one("SELECT pulse.set_secret('token', 'to-token')", &[])
        .unwrap();
    let (msg, _) = expect_error(
        a.batch_execute(&format!("REASSIGN OWNED BY {from} TO {to}")),
        "42710",
    );
    assert!(msg.contains("token"), "{msg}");
    t.query_one("SELECT pulse.drop_secret('token')", &[])
        .unwrap();

    a.batch_execute(&format!("REASSIGN OWNED BY {from} TO {to}"))
        .unwrap();
    assert_eq!(count_owned(&mut a, &from), 0);
    let mut names: Vec<String> = t
        .query("SELECT job_name FROM pulse.jobs ORDER BY job_name", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    names.sort();
    let mut expected = vec![job.clone(), same.clone(), format!("{same}_from")];
    expected.sort();
    assert_eq!(names, expected, "the new owner sees and manages them");
    let runs: i64 = t
        .query_one(
            "SELECT count(*) FROM pulse.job_runs WHERE run_id = $1",
            &[&run],
        )
        .unwrap()
        .get(0);
    assert_eq!(runs, 1, "the run history follows the job");
    let secrets: Vec<String> = t
        .query("SELECT name FROM pulse.secrets", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(secrets, vec!["token".to_string()]);
    let stats_owner: i64 = a
        .query_one(
            "SELECT count(*) FROM pulse.job_stats s JOIN pulse.job j USING (job_id)
              WHERE j.job_name = $1 AND s.owner <> j.owner::oid",
            &[&job],
        )
        .unwrap()
        .get(0);
    assert_eq!(stats_owner, 0, "statistics follow the job");
    t.query_one("SELECT pulse.alter_job($1, command => 'SELECT 3')", &[&job])
        .unwrap();
    drop((f, t));
    // now the old role can go
    revoke_usage(&mut a, &from);
    a.batch_execute(&format!("DROP ROLE {from}")).unwrap();
}

#[test]
fn renamed_owner_keeps_its_jobs() {
    let _jobs = Jobs::new();
    let mut a = admin();
    let role = new_role(&mut a, "renamed");
    let renamed = format!("{role}_new");
    let _roles = Roles(vec![role.clone(), renamed.clone()]);
    let job = unique("kept");
    let mut u = connect_as(&role);
    u.query_one(
        "SELECT pulse.schedule_job($1, '@yearly', 'SELECT 1')",
        &[&job],
    )
    .unwrap();
    drop(u);
    a.batch_execute(&format!("ALTER ROLE {role} RENAME TO {renamed}"))
        .unwrap();
    let owner: String = a
        .query_one("SELECT owner FROM pulse.jobs WHERE job_name = $1", &[&job])
        .unwrap()
        .get(0);
    assert_eq!(owner, renamed);
    let mut u = connect_as(&renamed);
    assert!(u
        .query_one("SELECT pulse.unschedule_job($1)", &[&job])
        .unwrap()
        .get::<_, bool>(0));
}

#[test]
fn reassign_owned_to_a_role_that_cannot_log_in_warns() {
    let _jobs = Jobs::new();
    let mut a = admin();
    let from = new_role(&mut a, "from_nl");
    let to = new_role(&mut a, "to_nl");
    let _roles = Roles(vec![from.clone(), to.clone()]);
    let job = unique("to_nologin");
    let mut f = connect_as(&from);
    f.query_one(
        "SELECT pulse.schedule_job($1, '@yearly', 'SELECT 1')",
        &[&job],
    )
    .unwrap();
    drop(f);
    a.batch_execute(&format!("ALTER ROLE {to} NOLOGIN"))
        .unwrap();
    let notices = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
    let seen = notices.clone();
    let mut w = postgres::Config::new()
        .host("127.0.0.1")
        .port(port())
        .user("postgres")
        .dbname("postgres")
        .notice_callback(move |n| {
            seen.lock().unwrap().push((
                n.message().to_string(),
                n.hint().unwrap_or_default().to_string(),
            ))
        })
        .connect(postgres::NoTls)
        .unwrap();
    w.batch_execute(&format!("REASSIGN OWNED BY {from} TO {to}"))
        .unwrap();
    let notices = notices.lock().unwrap().clone();
    assert!(
        notices.iter().any(|(m, h)| m.contains(&to)
            && m.contains("cannot log in")
            && h.contains(&format!("ALTER ROLE {to} LOGIN"))),
        "{notices:?}"
    );
    let owner: String = a
        .query_one("SELECT owner FROM pulse.jobs WHERE job_name = $1", &[&job])
        .unwrap()
        .get(0);
    assert_eq!(owner, to, "the job moved all the same");
}
