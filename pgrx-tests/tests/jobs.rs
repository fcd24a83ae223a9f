//! End-to-end: the jobs API and the scheduler/executor workers on a live server.
//! No assertion depends on timing; deadlines only bound a hang.
mod common;
use common::*;

#[test]
fn one_second_job_runs_repeatedly_and_toggle_pauses_it() {
    let _jobs = Jobs::new();
    let mut c = admin();
    let job = unique("tick");
    let table = unique("tick_t");
    c.batch_execute(&format!("CREATE TABLE {table}(at timestamptz)"))
        .unwrap();
    let id: i64 = c
        .query_one(
            "SELECT pulse.schedule_job($1, '1 seconds', $2)",
            &[
                &job,
                &format!("INSERT INTO {table} VALUES (clock_timestamp())"),
            ],
        )
        .unwrap()
        .get(0);
    wait_for(60, "three successful runs", || {
        (count_runs(&mut c, &job, "succeeded") >= 3).then_some(())
    });
    // Every run belongs to a distinct, whole-second slot.
    let row = c
        .query_one(
            "SELECT count(*), count(DISTINCT scheduled_for),
                    bool_and(scheduled_for = date_trunc('second', scheduled_for)),
                    bool_and(job_id = $2)
               FROM pulse.job_runs WHERE job_name = $1",
            &[&job, &id],
        )
        .unwrap();
    let (n, distinct, whole, same_id): (i64, i64, bool, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(n, distinct, "one run per slot");
    assert!(whole && same_id);
    let rows: i64 = c
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .unwrap()
        .get(0);
    assert!(rows >= 3, "the command really ran");

    // Pause: no new runs; definition and history stay.
    let state: bool = c
        .query_one("SELECT pulse.toggle_job($1, false)", &[&job])
        .unwrap()
        .get(0);
    assert!(!state);
    wait_idle(&mut c, &job);
    let before: i64 = c
        .query_one(
            "SELECT count(*) FROM pulse.job_runs WHERE job_name = $1",
            &[&job],
        )
        .unwrap()
        .get(0);
    // A 1-second witness job fires in the same whole-second slots: two of its slots after the
    // pause show the scheduler went on firing while this job stayed quiet.
    let witness = unique("tick_witness");
    c.query_one(
        "SELECT pulse.schedule_job($1, '1 seconds', 'SELECT 1')",
        &[&witness],
    )
    .unwrap();
    wait_for(60, "two slots of the witness job", || {
        (count_runs(&mut c, &witness, "succeeded") >= 2).then_some(())
    });
    c.query_one("SELECT pulse.unschedule_job($1)", &[&witness])
        .unwrap();
    let after: i64 = c
        .query_one(
            "SELECT count(*) FROM pulse.job_runs WHERE job_name = $1",
            &[&job],
        )
        .unwrap()
        .get(0);
    assert_eq!(before, after, "a paused job does not fire");
    let row = c
        .query_one(
            "SELECT enabled, next_run_at IS NULL, schedule FROM pulse.jobs WHERE job_name = $1",
            &[&job],
        )
        .unwrap();
    assert!(!row.get::<_, bool>(0));
    assert_eq!(row.get::<_, String>(2), "1 seconds");

    // Toggling again is idempotent, and resuming fires again.
    assert!(!c
        .query_one("SELECT pulse.toggle_job($1, false)", &[&job])
        .unwrap()
        .get::<_, bool>(0));
    assert!(c
        .query_one("SELECT pulse.toggle_job($1, true)", &[&job])
        .unwrap()
        .get::<_, bool>(0));
    wait_for(60, "a run after resuming", || {
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM pulse.job_runs WHERE job_name = $1",
                &[&job],
            )
            .unwrap()
            .get(0);
        (n > after).then_some(())
    });
    c.query_one("SELECT pulse.unschedule_job($1)", &[&job])
        .unwrap();
}

#[test]
fn run_job_fires_at_once_and_records_manual_trigger() {
    let _jobs = Jobs::new();
    let mut c = admin();
    let job = unique("manual");
    c.query_one(
        "SELECT pulse.schedule_job($1, '0 0 1 1 *', 'SELECT 42')",
        &[&job],
    )
    .unwrap();
    let run = run_job(&mut c, &job);
    let (status, message) = wait_run_final(&mut c, run);
    assert_eq!(status, "succeeded");
    assert_eq!(message.as_deref(), Some("SELECT 1"));
    let row = c
        .query_one(
            "SELECT trigger, attempt, started_at >= scheduled_for, finished_at >= started_at,
                    duration IS NOT NULL
               FROM pulse.job_runs WHERE run_id = $1",
            &[&run],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "manual");
    assert_eq!(row.get::<_, i32>(1), 1);
    assert!(row.get::<_, bool>(2) && row.get::<_, bool>(3) && row.get::<_, bool>(4));
    // The job's own view shows the last run.
    let row = c
        .query_one(
            "SELECT last_run_id, last_status FROM pulse.jobs WHERE job_name = $1",
            &[&job],
        )
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), run);
    assert_eq!(row.get::<_, String>(1), "succeeded");
    c.query_one("SELECT pulse.unschedule_job($1)", &[&job])
        .unwrap();
}

#[test]
fn failing_command_records_failed_with_error_text() {
    let _jobs = Jobs::new();
    let mut c = admin();
    let job = unique("fails");
    c.query_one(
        "SELECT pulse.schedule_job($1, '@yearly', 'SELECT 1/0')",
        &[&job],
    )
    .unwrap();
    let run = run_job(&mut c, &job);
    let (status, message) = wait_run_final(&mut c, run);
    assert_eq!(status, "failed");
    assert!(message.unwrap().contains("division by zero"));

    // The failed command's transaction was rolled back: nothing half-done stays.
    let table = unique("rolled_back");
    c.batch_execute(&format!("CREATE TABLE {table}(x int)"))
        .unwrap();
    c.query_one(
        "SELECT pulse.alter_job($1, command => $2)",
        &[&job, &format!("INSERT INTO {table} VALUES (1); SELECT 1/0")],
    )
    .unwrap();
    let run = run_job(&mut c, &job);
    assert_eq!(wait_run_final(&mut c, run).0, "failed");
    let n: i64 = c
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    c.query_one("SELECT pulse.unschedule_job($1)", &[&job])
        .unwrap();
}

#[test]
fn timeout_records_timed_out() {
    let _jobs = Jobs::new();
    let mut c = admin();
    let job = unique("slow");
    c.query_one(
        "SELECT pulse.schedule_job($1, '@yearly', 'SELECT pg_sleep(30)', timeout => '200 milliseconds')",
        &[&job],
    )
    .unwrap();
    let run = run_job(&mut c, &job);
    let (status, message) = wait_run_final(&mut c, run);
    assert_eq!(status, "timed_out");
    assert!(message.unwrap().contains("statement timeout"));
    // The executor survives a timeout and runs the next job.
    c.query_one(
        "SELECT pulse.alter_job($1, command => 'SELECT 1', timeout => '0')",
        &[&job],
    )
    .unwrap();
    let run = run_job(&mut c, &job);
    assert_eq!(wait_run_final(&mut c, run).0, "succeeded");
    c.query_one("SELECT pulse.unschedule_job($1)", &[&job])
        .unwrap();
}

#[test]
fn cancel_run_stops_a_running_command() {
    let _jobs = Jobs::new();
    let mut c = admin();
    let job = unique("cancel");
    c.query_one(
        "SELECT pulse.schedule_job($1, '@yearly', 'SELECT pg_sleep(60)')",
        &[&job],
    )
    .unwrap();
    let run = run_job(&mut c, &job);
    wait_for(60, "the run to start", || {
        let s: String = c
            .query_one(
                "SELECT status FROM pulse.job_runs WHERE run_id = $1",
                &[&run],
            )
            .unwrap()
            .get(0);
        (s == "running").then_some(())
    });
    assert!(c
        .query_one("SELECT pulse.cancel_run($1)", &[&run])
        .unwrap()
        .get::<_, bool>(0));
    assert_eq!(wait_run_final(&mut c, run).0, "cancelled");
    // Cancelling a finished run is a no-op.
    assert!(!c
        .query_one("SELECT pulse.cancel_run($1)", &[&run])
        .unwrap()
        .get::<_, bool>(0));
    c.query_one("SELECT pulse.unschedule_job($1)", &[&job])
        .unwrap();
}

#[test]
fn schedule_job_is_idempotent_and_updates_in_place() {
    let _jobs = Jobs::new();
    let mut c = admin();
    let job = unique("migr");
    let first: i64 = c
        .query_one(
            "SELECT pulse.schedule_job($1, '*/5 * * * *', 'SELECT 1', timezone => 'Europe/Berlin')",
            &[&job],
        )
        .unwrap()
        .get(0);
    let run = run_job(&mut c, &job);
    wait_run_final(&mut c, run);
    let stamp = |c: &mut postgres::Client| -> String {
        c.query_one(
            "SELECT updated_at::text || next_run_at::text FROM pulse.jobs WHERE job_name = $1",
            &[&job],
        )
        .unwrap()
        .get(0)
    };
    let s1 = stamp(&mut c);
    // The same migration again: same id, nothing changes.
    let again: i64 = c
        .query_one(
            "SELECT pulse.schedule_job($1, '*/5 * * * *', 'SELECT 1', timezone => 'Europe/Berlin')",
            &[&job],
        )
        .unwrap()
        .get(0);
    assert_eq!(first, again);
    assert_eq!(s1, stamp(&mut c));
    // A changed definition: same id, history kept, new schedule in effect.
    let changed: i64 = c
        .query_one(
            "SELECT pulse.schedule_job($1, '@daily', 'SELECT 2')",
            &[&job],
        )
        .unwrap()
        .get(0);
    assert_eq!(first, changed);
    let row = c
        .query_one(
            "SELECT schedule, command, timezone,
                    next_run_at = (SELECT min(t) FROM pulse.next_runs('@daily', 'UTC', 1) t)
               FROM pulse.jobs WHERE job_name = $1",
            &[&job],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "@daily");
    assert_eq!(row.get::<_, String>(1), "SELECT 2");
    assert_eq!(row.get::<_, String>(2), "UTC");
    assert!(row.get::<_, bool>(3));
    let runs: i64 = c
        .query_one(
            "SELECT count(*) FROM pulse.job_runs WHERE job_id = $1",
            &[&first],
        )
        .unwrap()
        .get(0);
    assert_eq!(runs, 1, "history is kept");

    // Rename via alter_job keeps the id too.
    let renamed = unique("renamed");
    let id: i64 = c
        .query_one(
            "SELECT pulse.alter_job($1, new_name => $2)",
            &[&job, &renamed],
        )
        .unwrap()
        .get(0);
    assert_eq!(id, first);
    let (_, hint) = expect_error(c.query_one("SELECT pulse.run_job($1)", &[&job]), "42704");
    assert!(hint.contains("pulse.jobs"));
    // Unschedule: true, then false (safe to repeat); history stays.
    assert!(c
        .query_one("SELECT pulse.unschedule_job($1)", &[&renamed])
        .unwrap()
        .get::<_, bool>(0));
    assert!(!c
        .query_one("SELECT pulse.unschedule_job($1)", &[&renamed])
        .unwrap()
        .get::<_, bool>(0));
    let runs: i64 = c
        .query_one(
            "SELECT count(*) FROM pulse.job_runs WHERE job_id = $1",
            &[&first],
        )
        .unwrap()
        .get(0);
    assert_eq!(runs, 1);
}

#[test]
fn schedule_once_fires_once_soon_after_creation() {
    let _jobs = Jobs::new();
    let mut c = admin();
    let job = unique("once");
    // Due in two seconds: the scheduler is woken by the change, not by polling.
    c.query_one(
        "SELECT pulse.schedule_once($1, now() + interval '2 seconds', 'SELECT 7')",
        &[&job],
    )
    .unwrap();
    let run: i64 = wait_for(60, "the one-shot run", || {
        c.query_opt(
            "SELECT run_id FROM pulse.job_runs WHERE job_name = $1",
            &[&job],
        )
        .unwrap()
        .map(|r| r.get(0))
    });
    assert_eq!(wait_run_final(&mut c, run).0, "succeeded");
    let row = c
        .query_one(
            "SELECT next_run_at IS NULL, (SELECT count(*) FROM pulse.job_runs WHERE job_name = $1)
               FROM pulse.jobs WHERE job_name = $1",
            &[&job],
        )
        .unwrap();
    assert!(row.get::<_, bool>(0), "a one-shot job has no next run");
    assert_eq!(row.get::<_, i64>(1), 1);
}

#[test]
fn overlap_skip_records_skipped_slots_and_allow_overlaps() {
    let _jobs = Jobs::new();
    let mut c = admin();
    let skip = unique("skip");
    c.query_one(
        "SELECT pulse.schedule_job($1, '1 seconds', 'SELECT pg_sleep(2.5)')",
        &[&skip],
    )
    .unwrap();
    wait_for(60, "a skipped slot", || {
        (count_runs(&mut c, &skip, "skipped") >= 1).then_some(())
    });
    c.query_one("SELECT pulse.toggle_job($1, false)", &[&skip])
        .unwrap();
    // Never two runs of a 'skip' job at the same time.
    let overlapping: i64 = c
        .query_one(
            "SELECT count(*) FROM pulse.job_runs a JOIN pulse.job_runs b
                ON a.job_id = b.job_id AND a.run_id < b.run_id
             WHERE a.job_name = $1 AND a.status <> 'skipped' AND b.status <> 'skipped'
               AND b.started_at < a.finished_at",
            &[&skip],
        )
        .unwrap()
        .get(0);
    assert_eq!(overlapping, 0);

    let allow = unique("allow");
    c.query_one(
        "SELECT pulse.schedule_job($1, '1 seconds', 'SELECT pg_sleep(2.5)', overlap => 'allow')",
        &[&allow],
    )
    .unwrap();
    wait_for(60, "two runs of the same job at once", || {
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM pulse.job_runs WHERE job_name = $1 AND status = 'running'",
                &[&allow],
            )
            .unwrap()
            .get(0);
        (n >= 2).then_some(())
    });
    c.query_one("SELECT pulse.toggle_job($1, false)", &[&allow])
        .unwrap();
    assert_eq!(count_runs(&mut c, &allow, "skipped"), 0);
    wait_idle(&mut c, &skip);
    wait_idle(&mut c, &allow);
    for j in [&skip, &allow] {
        c.query_one("SELECT pulse.unschedule_job($1)", &[j])
            .unwrap();
    }
}

#[test]
fn non_superuser_jobs_run_as_that_role_and_are_private() {
    let _jobs = Jobs::new();
    let mut a = admin();
    let role = new_role(&mut a, "pulse_user");
    let other = new_role(&mut a, "pulse_other");
    let table = unique("who_t");
    a.batch_execute(&format!(
        "CREATE TABLE {table}(who text, su bool); GRANT INSERT ON {table} TO {role};"
    ))
    .unwrap();
    let admin_job = unique("admins");
    a.query_one(
        "SELECT pulse.schedule_job($1, '@yearly', 'SELECT 1')",
        &[&admin_job],
    )
    .unwrap();

    let mut u = connect_as(&role);
    let job = unique("users");
    u.query_one(
        "SELECT pulse.schedule_job($1, '@yearly', $2)",
        &[
            &job,
            &format!(
                "INSERT INTO {table} SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user"
            ),
        ],
    )
    .unwrap();
    let run = run_job(&mut u, &job);
    assert_eq!(wait_run_final(&mut u, run).0, "succeeded");
    let row = a
        .query_one(&format!("SELECT who, su FROM {table}"), &[])
        .unwrap();
    assert_eq!(row.get::<_, String>(0), role, "the job ran as its owner");
    assert!(!row.get::<_, bool>(1));

    // A job that needs a privilege the owner lacks fails: it never borrows superuser rights.
    let priv_job = unique("needs_su");
    u.query_one(
        "SELECT pulse.schedule_job($1, '@yearly', 'SELECT count(*) FROM pg_authid')",
        &[&priv_job],
    )
    .unwrap();
    let run = run_job(&mut u, &priv_job);
    let (status, msg) = wait_run_final(&mut u, run);
    assert_eq!(status, "failed");
    assert!(msg.unwrap().contains("permission denied"));

    // The user sees only their own jobs and runs.
    let names: Vec<String> = u
        .query("SELECT job_name FROM pulse.jobs", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(names.contains(&job) && !names.contains(&admin_job));
    let foreign_runs: i64 = u
        .query_one(
            "SELECT count(*) FROM pulse.job_runs WHERE owner <> current_user::text",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(foreign_runs, 0);
    // Health covers the same jobs: the user's own, in job-name order; the superuser sees all.
    let health: Vec<String> = u
        .query("SELECT job_name FROM pulse.scheduler_health()", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut expected = vec![job.clone(), priv_job.clone()];
    expected.sort();
    assert_eq!(
        health, expected,
        "scheduler_health: own jobs, ordered by name"
    );
    let total: i64 = u
        .query_one("SELECT jobs_total FROM pulse.scheduler_status()", &[])
        .unwrap()
        .get(0);
    assert_eq!(total, 2, "scheduler_status counts the caller's jobs");
    let seen: i64 = a
        .query_one(
            "SELECT count(*) FROM pulse.scheduler_health() WHERE job_name IN ($1, $2, $3)",
            &[&job, &priv_job, &admin_job],
        )
        .unwrap()
        .get(0);
    assert_eq!(seen, 3);
    // ...and cannot change or run anyone else's.
    expect_error(
        u.query_one("SELECT pulse.toggle_job($1, false)", &[&admin_job]),
        "42704",
    );
    expect_error(
        u.query_one("SELECT pulse.run_job($1)", &[&admin_job]),
        "42704",
    );
    let mut o = connect_as(&other);
    let found: bool = o
        .query_one("SELECT pulse.unschedule_job($1)", &[&job])
        .unwrap()
        .get(0);
    assert!(!found, "another role must not unschedule the job");
    expect_error(
        o.query_one("SELECT pulse.alter_job($1, command => 'SELECT 2')", &[&job]),
        "42704",
    );
    // Direct writes to the catalog are refused.
    expect_error(
        u.execute("UPDATE pulse.job SET enabled = false", &[]),
        "42501",
    );
    expect_error(
        u.execute("INSERT INTO pulse.job_run(job_id, job_name, owner, scheduled_for, status, trigger) VALUES (1, 'x', 10, now(), 'queued', 'manual')", &[]),
        "42501",
    );
    // The superuser sees everyone's jobs.
    let n: i64 = a
        .query_one(
            "SELECT count(*) FROM pulse.jobs WHERE job_name IN ($1, $2)",
            &[&job, &admin_job],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    // A role without USAGE on the schema cannot schedule at all.
    let outsider = unique("outsider");
    a.batch_execute(&format!("CREATE ROLE {outsider} LOGIN"))
        .unwrap();
    let mut x = connect_as(&outsider);
    expect_error(
        x.query_one("SELECT pulse.schedule_job('x', '@daily', 'SELECT 1')", &[]),
        "42501",
    );
    for j in [&job, &priv_job] {
        u.query_one("SELECT pulse.unschedule_job($1)", &[j])
            .unwrap();
    }
    a.query_one("SELECT pulse.unschedule_job($1)", &[&admin_job])
        .unwrap();
}

#[test]
fn job_of_a_dropped_role_fails_clearly_and_the_scheduler_goes_on() {
    let _jobs = Jobs::new();
    let mut a = admin();
    let role = new_role(&mut a, "pulse_gone");
    let mut u = connect_as(&role);
    let job = unique("orphan");
    u.query_one(
        "SELECT pulse.schedule_job($1, '@yearly', 'SELECT 1')",
        &[&job],
    )
    .unwrap();
    drop(u);
    // In pg_pulse's database DROP ROLE is refused while the role owns jobs (roles.rs); a role
    // dropped from another database of the cluster leaves its jobs behind. Its USAGE on schema
    // pulse goes first (in the same turn as new_role's GRANTs), else PostgreSQL refuses the drop.
    let other = unique("other_db");
    a.batch_execute(&format!(
        "BEGIN; SELECT pg_advisory_xact_lock(74000001);
         REVOKE USAGE ON SCHEMA pulse FROM {role}; COMMIT;"
    ))
    .unwrap();
    a.batch_execute(&format!("CREATE DATABASE {other}"))
        .unwrap();
    let mut elsewhere = connect_db("postgres", port(), &other);
    elsewhere
        .batch_execute(&format!("DROP ROLE {role}"))
        .unwrap();
    drop(elsewhere);
    a.batch_execute(&format!("DROP DATABASE {other} WITH (FORCE)"))
        .unwrap();
    let run = run_job(&mut a, &job);
    let (status, msg) = wait_run_final(&mut a, run);
    assert_eq!(status, "failed");
    assert!(msg.unwrap().contains("no longer exists"));
    // Other jobs still run.
    let ok = unique("still_ok");
    a.query_one(
        "SELECT pulse.schedule_job($1, '@yearly', 'SELECT 1')",
        &[&ok],
    )
    .unwrap();
    let run = run_job(&mut a, &ok);
    assert_eq!(wait_run_final(&mut a, run).0, "succeeded");
    for j in [&job, &ok] {
        assert!(a
            .query_one("SELECT pulse.unschedule_job($1)", &[j])
            .unwrap()
            .get::<_, bool>(0));
    }
}

#[test]
fn bad_input_is_rejected_with_sqlstate_and_hint() {
    let _jobs = Jobs::new();
    let mut c = admin();
    let job = unique("bad");
    let (msg, hint) = expect_error(
        c.query_one(
            "SELECT pulse.schedule_job($1, '61 * * * *', 'SELECT 1')",
            &[&job],
        ),
        "22023",
    );
    assert!(msg.contains("minute") && msg.contains("61"), "{msg}");
    assert!(hint.contains("next_runs"), "{hint}");
    let (msg, hint) = expect_error(
        c.query_one(
            "SELECT pulse.schedule_job($1, '@daily', 'SELECT 1', timezone => 'Mars/Olympus')",
            &[&job],
        ),
        "22023",
    );
    assert!(msg.contains("Mars/Olympus"), "{msg}");
    assert!(hint.contains("Europe/Berlin"), "{hint}");
    expect_error(
        c.query_one(
            "SELECT pulse.schedule_job($1, '90 seconds', 'SELECT 1')",
            &[&job],
        ),
        "22023",
    );
    expect_error(
        c.query_one(
            "SELECT pulse.schedule_job($1, '0 0 30 2 *', 'SELECT 1')",
            &[&job],
        ),
        "22023",
    );
    expect_error(
        c.query_one(
            "SELECT pulse.schedule_job($1, '@daily', 'SELECT 1', overlap => 'sometimes')",
            &[&job],
        ),
        "22023",
    );
    let (msg, _) = expect_error(
        c.query_one(
            "SELECT pulse.schedule_job($1, '@daily', 'SELEC 1')",
            &[&job],
        ),
        "42601",
    );
    assert!(msg.contains("syntax"), "{msg}");
    expect_error(
        c.query_one("SELECT pulse.schedule_job(NULL, '@daily', 'SELECT 1')", &[]),
        "22004",
    );
    expect_error(
        c.query_one(
            "SELECT pulse.schedule_job($1, '@daily', 'SELECT 1', timeout => '-1 second')",
            &[&job],
        ),
        "22023",
    );
    // Nothing was created by the failed calls.
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM pulse.jobs WHERE job_name = $1",
            &[&job],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    // Altering a job to a bad schedule is rejected too, and leaves it unchanged.
    c.query_one(
        "SELECT pulse.schedule_job($1, '@daily', 'SELECT 1')",
        &[&job],
    )
    .unwrap();
    expect_error(
        c.query_one("SELECT pulse.alter_job($1, schedule => '* * * *')", &[&job]),
        "22023",
    );
    let (msg, hint) = expect_error(
        c.query_one("SELECT pulse.toggle_job('no_such_job_anywhere', true)", &[]),
        "42704",
    );
    assert!(msg.contains("no_such_job_anywhere") && hint.contains("pulse.jobs"));
    c.query_one("SELECT pulse.unschedule_job($1)", &[&job])
        .unwrap();
}

/// Every function, table and view pg_pulse installs is documented with COMMENT ON (`\df+`, `\d+`).
#[test]
fn every_object_has_a_comment() {
    let mut c = admin();
    let missing: Vec<String> = c
        .query(
            "SELECT p.oid::regprocedure::text FROM pg_proc p
              WHERE p.pronamespace = 'pulse'::regnamespace AND obj_description(p.oid, 'pg_proc') IS NULL
             UNION ALL
             SELECT c.oid::regclass::text FROM pg_class c
              WHERE c.relnamespace = 'pulse'::regnamespace AND c.relkind IN ('r', 'p', 'v')
                AND obj_description(c.oid, 'pg_class') IS NULL
             ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(missing.is_empty(), "no COMMENT ON: {missing:?}");
}

#[test]
fn next_runs_previews_schedules() {
    let mut c = admin();
    let text = |c: &mut postgres::Client, q: &str| -> Vec<String> {
        c.query(q, &[])
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect()
    };
    c.batch_execute("SET TimeZone = 'UTC'").unwrap();
    assert_eq!(
        text(
            &mut c,
            "SELECT t::text FROM pulse.next_runs('0 10 * * 0', 'UTC', 3, '2026-11-22 10:00+00') t"
        ),
        vec![
            "2026-11-29 10:00:00+00",
            "2026-12-06 10:00:00+00",
            "2026-12-13 10:00:00+00"
        ]
    );
    assert_eq!(
        text(
            &mut c,
            "SELECT t::text FROM pulse.next_runs('0 0 1,15 * 1', 'UTC', 4, '2026-06-01 00:00+00') t"
        ),
        vec![
            "2026-06-08 00:00:00+00",
            "2026-06-15 00:00:00+00",
            "2026-06-22 00:00:00+00",
            "2026-06-29 00:00:00+00"
        ]
    );
    // Spring forward in Los Angeles: 02:30 does not exist on 2026-03-08, runs at 03:00 local.
    assert_eq!(
        text(
            &mut c,
            "SELECT (t AT TIME ZONE 'America/Los_Angeles')::text
               FROM pulse.next_runs('30 2 * * *', 'America/Los_Angeles', 3, '2026-03-07 12:00-08') t"
        ),
        vec![
            "2026-03-08 03:00:00",
            "2026-03-09 02:30:00",
            "2026-03-10 02:30:00"
        ]
    );
    // Fall back: 01:30 happens twice on 2026-11-01, runs once (the first, PDT).
    assert_eq!(
        text(
            &mut c,
            "SELECT t::text FROM pulse.next_runs('30 1 * * *', 'America/Los_Angeles', 2, '2026-10-31 12:00-07') t"
        ),
        vec!["2026-11-01 08:30:00+00", "2026-11-02 09:30:00+00"]
    );
    assert_eq!(
        text(
            &mut c,
            "SELECT t::text FROM pulse.next_runs('15 seconds', NULL, 3, '2026-01-01 00:00:07+00') t"
        ),
        vec![
            "2026-01-01 00:00:15+00",
            "2026-01-01 00:00:30+00",
            "2026-01-01 00:00:45+00"
        ]
    );
    // Default count is 5, default start is now(): strictly after.
    let row = c
        .query_one(
            "SELECT count(*), bool_and(t > now()) FROM pulse.next_runs('@hourly') t",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 5);
    assert!(row.get::<_, bool>(1));
    // The GUC pulse.timezone is the default zone.
    c.batch_execute("SET pulse.timezone = 'Asia/Tokyo'")
        .unwrap();
    assert_eq!(
        text(
            &mut c,
            "SELECT t::text FROM pulse.next_runs('0 9 * * *', NULL, 1, '2026-01-01 00:00+00') t"
        ),
        vec!["2026-01-02 00:00:00+00"]
    );
    expect_error(
        c.query("SELECT * FROM pulse.next_runs('@daily', NULL, 0)", &[]),
        "22023",
    );
}

#[test]
fn current_run_describes_the_run_inside_its_command() {
    let _jobs = Jobs::new();
    let mut c = admin();
    let job = unique("ctx");
    let table = unique("ctx_t");
    c.batch_execute(&format!(
        "CREATE TABLE {table}(run_id bigint, job_id bigint, job_name text, scheduled_for timestamptz, attempt int, trigger text)"
    ))
    .unwrap();
    let id: i64 = c
        .query_one(
            "SELECT pulse.schedule_job($1, '@yearly', $2)",
            &[
                &job,
                &format!("INSERT INTO {table} SELECT * FROM pulse.current_run()"),
            ],
        )
        .unwrap()
        .get(0);
    let run = run_job(&mut c, &job);
    assert_eq!(wait_run_final(&mut c, run).0, "succeeded");
    let row = c
        .query_one(
            &format!(
                "SELECT t.run_id, t.job_id, t.job_name, t.attempt, t.trigger, t.scheduled_for = r.scheduled_for
                   FROM {table} t JOIN pulse.job_runs r USING (run_id)"
            ),
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), run);
    assert_eq!(row.get::<_, i64>(1), id);
    assert_eq!(row.get::<_, String>(2), job);
    assert_eq!(row.get::<_, i32>(3), 1);
    assert_eq!(row.get::<_, String>(4), "manual");
    assert!(row.get::<_, bool>(5));
    // Outside a job there is no current run.
    let n: i64 = c
        .query_one("SELECT count(*) FROM pulse.current_run()", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    c.query_one("SELECT pulse.unschedule_job($1)", &[&job])
        .unwrap();
}

#[test]
fn per_job_alert_settings() {
    let _jobs = Jobs::new();
    use postgres::fallible_iterator::FallibleIterator;
    let mut c = admin();
    let job = unique("alerting");
    let channel = unique("chan");
    let mut l = connect_as("postgres");
    l.batch_execute(&format!("LISTEN {channel}")).unwrap();
    c.query_one(
        "SELECT pulse.schedule_job($1, '@yearly', 'SELECT 1/0', alert_after_failures => 1,
                                   alert => jsonb_build_object('notify', $2::text))",
        &[&job, &channel],
    )
    .unwrap();
    let r = run_job(&mut c, &job);
    assert_eq!(wait_run_final(&mut c, r).0, "failed");
    let got = {
        let mut n = l.notifications();
        let mut it = n.timeout_iter(std::time::Duration::from_secs(10));
        it.next().unwrap()
    };
    let msg = got.expect("an alert on the job's own channel");
    // the payload is the alert's id; the alert is in pulse.alerts
    let id = alert_id_of(msg.payload()).unwrap_or_else(|| panic!("{}", msg.payload()));
    let a = c
        .query_one(
            "SELECT event, job_name, channel FROM pulse.alerts WHERE alert_id = $1",
            &[&id],
        )
        .unwrap();
    assert_eq!(a.get::<_, String>(0), "incident");
    assert_eq!(a.get::<_, String>(1), job);
    assert_eq!(a.get::<_, Option<String>>(2), Some(channel.clone()));
    let row = c
        .query_one(
            "SELECT alert_after_failures, alert->>'notify' FROM pulse.jobs WHERE job_name = $1",
            &[&job],
        )
        .unwrap();
    assert_eq!(row.get::<_, Option<i32>>(0), Some(1));
    assert_eq!(row.get::<_, Option<String>>(1), Some(channel.clone()));
    // alter_job: 0 and 'null' go back to the defaults; '{}' silences the job.
    c.query_one(
        "SELECT pulse.alter_job($1, alert_after_failures => 0, alert => '{}')",
        &[&job],
    )
    .unwrap();
    let row = c
        .query_one(
            "SELECT alert_after_failures, alert::text FROM pulse.jobs WHERE job_name = $1",
            &[&job],
        )
        .unwrap();
    assert_eq!(row.get::<_, Option<i32>>(0), None);
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("{}"));
    for (target, code) in [
        ("'[1]'", "22023"),
        ("'{\"notify\": 5}'", "22023"),
        ("'{\"email\": \"x\"}'", "22023"),
        ("'{\"webhook\": {}}'", "22023"),
    ] {
        expect_error(
            c.query_one(
                &format!("SELECT pulse.alter_job($1, alert => {target})"),
                &[&job],
            ),
            code,
        );
    }
    expect_error(
        c.query_one(
            "SELECT pulse.alter_job($1, alert_after_failures => -2)",
            &[&job],
        ),
        "22023",
    );
    c.query_one("SELECT pulse.unschedule_job($1)", &[&job])
        .unwrap();
}

#[test]
fn failed_attempts_are_retried_with_backoff_as_their_own_runs() {
    let _jobs = Jobs::new();
    let mut c = admin();
    let job = unique("retrying");
    c.query_one(
        "SELECT pulse.schedule_job($1, '@yearly', 'SELECT 1/0', max_attempts => 3, retry_backoff => '1 second')",
        &[&job],
    )
    .unwrap();
    let first = run_job(&mut c, &job);
    wait_for(60, "three attempts", || {
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM pulse.job_runs WHERE job_name = $1 AND status = 'failed'",
                &[&job],
            )
            .unwrap()
            .get(0);
        (n >= 3).then_some(())
    });
    // A retry is queued in the transaction that records the failed attempt: a fourth attempt
    // would be visible now.
    let rows = c
        .query(
            "SELECT attempt, trigger, status,
                    extract(epoch FROM scheduled_for - lag(finished_at) OVER (ORDER BY run_id))::float8
               FROM pulse.job_runs WHERE job_name = $1 ORDER BY run_id",
            &[&job],
        )
        .unwrap();
    assert_eq!(rows.len(), 3, "no fourth attempt");
    let got: Vec<(i32, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        got,
        vec![
            (1, "manual".to_string()),
            (2, "retry".to_string()),
            (3, "retry".to_string())
        ]
    );
    // backoff 1 s, then 2 s, each less at most 20 % jitter
    assert!(
        rows[1].get::<_, f64>(3) >= 0.79,
        "{}",
        rows[1].get::<_, f64>(3)
    );
    assert!(
        rows[2].get::<_, f64>(3) >= 1.59,
        "{}",
        rows[2].get::<_, f64>(3)
    );
    let _ = first;

    // A retry that succeeds ends the sequence.
    c.query_one(
        "SELECT pulse.alter_job($1, command => 'SELECT 1 / ((SELECT attempt FROM pulse.current_run()) - 1)')",
        &[&job],
    )
    .unwrap();
    let r = run_job(&mut c, &job);
    wait_for(60, "the retry to succeed", || {
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM pulse.job_runs WHERE job_name = $1 AND run_id > $2 AND status = 'succeeded'",
                &[&job, &r],
            )
            .unwrap()
            .get(0);
        (n == 1).then_some(())
    });
    let row = c
        .query_one(
            "SELECT max_attempts, retry_backoff::text FROM pulse.jobs WHERE job_name = $1",
            &[&job],
        )
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 3);
    assert_eq!(row.get::<_, String>(1), "00:00:01");
    expect_error(
        c.query_one("SELECT pulse.alter_job($1, max_attempts => 0)", &[&job]),
        "22023",
    );
    expect_error(
        c.query_one("SELECT pulse.alter_job($1, retry_backoff => '0')", &[&job]),
        "22023",
    );
    c.query_one("SELECT pulse.unschedule_job($1)", &[&job])
        .unwrap();
}

#[test]
fn worker_writes_are_counted_for_autovacuum() {
    let _jobs = Jobs::new();
    // Background workers must flush their table statistics themselves: otherwise the rows their
    // transactions write never reach pg_stat_user_tables, and autovacuum never vacuums the
    // run history that the scheduler and executors churn.
    let mut a = admin();
    let table = unique("stats_t");
    a.batch_execute(&format!("CREATE TABLE {table}(x int)"))
        .unwrap();
    let job = unique("stats_job");
    a.query_one(
        "SELECT pulse.schedule_job($1, '@yearly', $2)",
        &[
            &job,
            &format!("INSERT INTO {table} SELECT generate_series(1, 10)"),
        ],
    )
    .unwrap();
    let run = run_job(&mut a, &job);
    assert_eq!(wait_run_final(&mut a, run).0, "succeeded");
    // Only the executor wrote to the table; it now idles (for minutes) and must have reported.
    wait_for(30, "the executor's inserts in pg_stat_user_tables", || {
        let n: i64 = a
            .query_one(
                "SELECT n_tup_ins FROM pg_catalog.pg_stat_user_tables WHERE relid = $1::text::regclass",
                &[&table],
            )
            .unwrap()
            .get(0);
        (n == 10).then_some(())
    });
    a.query_one("SELECT pulse.unschedule_job($1)", &[&job])
        .unwrap();
    a.batch_execute(&format!("DROP TABLE {table}")).unwrap();
}

#[test]
fn session_advisory_locks_of_a_command_are_released_after_its_run() {
    let _jobs = Jobs::new();
    let mut a = admin();
    let key: i64 = 7_400_000 + (std::process::id() as i64 % 100_000);
    let job = unique("advisory");
    a.query_one(
        "SELECT pulse.schedule_job($1, '@yearly', $2)",
        &[&job, &format!("SELECT pg_advisory_lock({key})")],
    )
    .unwrap();
    let run = run_job(&mut a, &job);
    assert_eq!(wait_run_final(&mut a, run).0, "succeeded");
    // The executor lives on for the next run; the lock its command took must not.
    let got: bool = a
        .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
        .unwrap()
        .get(0);
    assert!(got, "the executor still holds the command's advisory lock");
    a.query_one("SELECT pg_advisory_unlock($1)", &[&key])
        .unwrap();
    a.query_one("SELECT pulse.unschedule_job($1)", &[&job])
        .unwrap();
}

#[test]
fn non_finite_run_at_is_refused() {
    let _jobs = Jobs::new();
    let mut c = admin();
    let job = unique("inf_at");
    c.query_one(
        "SELECT pulse.schedule_job($1, '@yearly', 'SELECT 1')",
        &[&job],
    )
    .unwrap();
    for at in ["-infinity", "infinity"] {
        let (msg, hint) = expect_error(
            c.query_one(
                "SELECT pulse.alter_job($1, run_at => $2::text::timestamptz)",
                &[&job, &at],
            ),
            "22023",
        );
        assert!(msg.contains("finite") && msg.contains(at), "{msg}");
        assert!(hint.contains("now() + interval"), "{hint}");
        let (msg, _) = expect_error(
            c.query_one(
                "SELECT pulse.schedule_once($1, $2::text::timestamptz, 'SELECT 1')",
                &[&unique("inf_once"), &at],
            ),
            "22023",
        );
        assert!(msg.contains("finite"), "{msg}");
    }
    // The job is as it was: recurring, with a finite next run and no run queued.
    let row = c
        .query_one(
            "SELECT schedule, run_at IS NULL, isfinite(next_run_at),
                    (SELECT count(*) FROM pulse.job_runs r WHERE r.job_name = j.job_name)
               FROM pulse.jobs j WHERE job_name = $1",
            &[&job],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "@yearly");
    assert!(row.get::<_, bool>(1) && row.get::<_, bool>(2));
    assert_eq!(row.get::<_, i64>(3), 0);
}

#[test]
fn each_definition_call_writes_the_job_row_once() {
    let _jobs = Jobs::new();
    let mut c = admin();
    let job = unique("one_write");
    // (inserts, updates) of pulse.job in the call's own transaction, in a new session (a session's
    // xact counters also hold its earlier transactions' counts until they are flushed)
    let writes = |call: &str| -> (i64, i64) {
        let mut s = connect_as("postgres");
        let mut t = s.transaction().unwrap();
        t.query_one(call, &[&job]).unwrap();
        let row = t
            .query_one(
                "SELECT n_tup_ins, n_tup_upd FROM pg_catalog.pg_stat_xact_user_tables
                  WHERE relid = 'pulse.job'::regclass",
                &[],
            )
            .unwrap();
        t.commit().unwrap();
        (row.get(0), row.get(1))
    };
    let define = "SELECT pulse.schedule_job($1, '@yearly', 'SELECT 1', alert_after_failures => 2,
                         alert => '{\"notify\": \"x\"}', max_attempts => 3, retry_backoff => '5 seconds')";
    assert_eq!(writes(define), (1, 0), "created with one INSERT");
    assert_eq!(writes(define), (0, 0), "the same call writes nothing");
    let changed = "SELECT pulse.schedule_job($1, '@yearly', 'SELECT 2', alert_after_failures => 4,
                          alert => '{}', max_attempts => 5, retry_backoff => '1 minute')";
    assert_eq!(writes(changed), (0, 1), "changed with one UPDATE");
    let altered = "SELECT pulse.alter_job($1, comment => 'c', alert_after_failures => 0,
                          alert => 'null', max_attempts => 2, retry_backoff => '2 seconds')";
    assert_eq!(writes(altered), (0, 1), "alter_job: one UPDATE");
    let row = c
        .query_one(
            "SELECT command, comment, alert_after_failures, alert IS NULL, max_attempts,
                    retry_backoff = interval '2 seconds'
               FROM pulse.job WHERE job_name = $1",
            &[&job],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "SELECT 2");
    assert_eq!(row.get::<_, String>(1), "c");
    assert_eq!(row.get::<_, Option<i32>>(2), None);
    assert!(row.get::<_, bool>(3));
    assert_eq!(row.get::<_, i32>(4), 2);
    assert!(row.get::<_, bool>(5));
    // schedule_once with only its settings changed: one UPDATE too
    let once = unique("one_write_once");
    let call = |max: i32| {
        let mut s = connect_as("postgres");
        let mut t = s.transaction().unwrap();
        t.query_one(
            "SELECT pulse.schedule_once($1, '2100-01-01', 'SELECT 1', max_attempts => $2)",
            &[&once, &max],
        )
        .unwrap();
        let upd: i64 = t
            .query_one(
                "SELECT n_tup_ins + n_tup_upd FROM pg_catalog.pg_stat_xact_user_tables
                  WHERE relid = 'pulse.job'::regclass",
                &[],
            )
            .unwrap()
            .get(0);
        t.commit().unwrap();
        upd
    };
    assert_eq!(call(2), 1);
    assert_eq!(call(3), 1);
    assert_eq!(call(3), 0);
}
