//! End-to-end: `pulse.import_pg_cron()` (issue 17) moves the playbooks' pg_cron jobs into
//! pg_pulse. Each test starts a cluster of its own with Debian's pg_cron 1.4
//! (`postgresql-15-cron`) preloaded next to pg_pulse (the `make test` cluster does not load
//! pg_cron), schedules jobs the way the playbooks write them (`../shared/seeds/`: the content
//! pipeline's six `trigger_*()` jobs, the overnight extraction pulse with its `net.http_post`
//! calls and `app.settings.service_role_key`), imports them and checks what the import reports
//! and creates: dry run, real run, re-run, an update, a name collision, owners that cannot run
//! jobs, `disable_source`, and a restart without pg_cron. Each imported HTTP job is run with
//! `pulse.run_job` and what a local HTTP server receives is compared with the request pg_net
//! would have sent for the original command, computed by hand from the command's arguments
//! (pg_net itself is not installed: the `net` schema does not exist, and nothing here needs it).
mod common;
use common::*;
use postgres::Client;
use pulse_e2e::server::{Seen, Server};

/// The service role key, set as the playbooks set it (`ALTER DATABASE postgres SET
/// app.settings.service_role_key = ...`) and imported as the secret `service_role_key`.
const KEY: &str = "eyJhbGciOiJIUzI1NiJ9.service-role-key-of-the-import-test.c2lnbmF0dXJl";
/// Another setting the commands read, left a setting (`{{setting:app.settings.anon_key}}`).
const ANON: &str = "anon-key-of-the-import-test-0123456789";
/// What the real runs pass as `settings_as_secrets`.
const AS_SECRETS: &[&str] = &["app.settings.service_role_key"];

/// This suite's own cluster: pg_cron must be preloaded.
fn start_cluster(tag: &str) -> Cluster {
    let c = Cluster::start(
        &format!("import_{tag}"),
        &[
            "shared_preload_libraries = 'pg_pulse,pg_cron'",
            "cron.database_name = 'postgres'",
            "pulse.http_allowed_hosts = '127.0.0.1'",
        ],
    );
    c.connect()
        .batch_execute("CREATE EXTENSION pg_cron; CREATE EXTENSION pg_pulse;")
        .expect("create the extensions pg_cron and pg_pulse");
    c
}

/// Whether pg_cron is installed into the PostgreSQL under test (`PG_BIN`): Debian packages it for
/// 15 (scripts/setup.sh installs it); for 16 and 18 there is neither a package nor a source the
/// CI machine can reach, so it is there only where someone built it into that PostgreSQL. The
/// suite needs it: without it each test says so and checks nothing.
fn without_pg_cron() -> bool {
    let libdir = std::process::Command::new(format!("{}/pg_config", pg_bin()))
        .arg("--pkglibdir")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let missing = !std::path::Path::new(&libdir).join("pg_cron.so").exists();
    if missing {
        eprintln!(
            "pg_cron is not installed for the PostgreSQL in {} (pkglibdir {libdir:?}): the import suite needs it and checks nothing here",
            pg_bin()
        );
    }
    missing
}

/// One row of `pulse.import_pg_cron(...)`.
#[derive(Debug, Clone, PartialEq)]
struct Imported {
    source_jobid: i64,
    source_jobname: Option<String>,
    job_name: String,
    owner: String,
    database: String,
    kind: String,
    action: String,
    note: Option<String>,
}

fn rows_of(rows: Vec<postgres::Row>) -> Vec<Imported> {
    rows.iter()
        .map(|r| Imported {
            source_jobid: r.get(0),
            source_jobname: r.get(1),
            job_name: r.get(2),
            owner: r.get(3),
            database: r.get(4),
            kind: r.get(5),
            action: r.get(6),
            note: r.get(7),
        })
        .collect()
}

const COLUMNS: &str = "source_jobid, source_jobname, job_name, owner, database, kind, action, note";

/// `pulse.import_pg_cron(dry_run, disable_source, settings_as_secrets)`.
fn import(
    c: &mut Client,
    dry_run: bool,
    disable_source: bool,
    secrets: &[&str],
) -> Result<Vec<Imported>, postgres::Error> {
    let secrets: Vec<String> = secrets.iter().map(|s| s.to_string()).collect();
    c.query(
        &format!(
            "SELECT {COLUMNS} FROM pulse.import_pg_cron(dry_run => $1, disable_source => $2,
                                                         settings_as_secrets => $3::text[])"
        ),
        &[&dry_run, &disable_source, &secrets],
    )
    .map(rows_of)
}

/// `pulse.import_pg_cron()` with every argument left out (a dry run).
fn import_defaults(c: &mut Client) -> Vec<Imported> {
    rows_of(
        c.query(
            &format!("SELECT {COLUMNS} FROM pulse.import_pg_cron()"),
            &[],
        )
        .expect("pulse.import_pg_cron() with its defaults"),
    )
}

/// What one pg_cron job must become.
#[derive(Debug, Clone)]
struct Expect {
    jobid: i64,
    /// cron.job.jobname
    jobname: Option<String>,
    job_name: String,
    owner: &'static str,
    database: &'static str,
    kind: &'static str,
    /// the first real run's action: `create` or `skip`
    action: &'static str,
    /// text the note must contain (case-insensitive)
    note_has: Vec<String>,
    /// a number the note must contain as a word ("5 calls")
    note_number: Option<u32>,
    schedule: String,
    enabled: bool,
    /// the pg_cron command: a SQL job keeps it as it is
    command: String,
}

impl Expect {
    fn sql(
        jobid: i64,
        jobname: &str,
        schedule: &str,
        command: &str,
        action: &'static str,
    ) -> Expect {
        Expect {
            jobid,
            jobname: Some(jobname.to_string()),
            job_name: jobname.to_string(),
            owner: "postgres",
            database: "postgres",
            kind: "sql",
            action,
            note_has: vec![],
            note_number: None,
            schedule: schedule.to_string(),
            enabled: true,
            command: command.to_string(),
        }
    }
}

/// Checks the rows of an import against the expectations (sorted by jobid): one row per
/// cron.job row in jobid order, names, owner, database and kind as expected, `action(e)` as the
/// action, and a note (never NULL or empty) holding what it must.
fn check_rows(
    what: &str,
    rows: &[Imported],
    expected: &[Expect],
    action: impl Fn(&Expect) -> &'static str,
) {
    let ids: Vec<i64> = rows.iter().map(|r| r.source_jobid).collect();
    let want: Vec<i64> = expected.iter().map(|e| e.jobid).collect();
    assert_eq!(
        ids, want,
        "{what}: one row per cron.job row, ordered by jobid; rows: {rows:#?}"
    );
    for (r, e) in rows.iter().zip(expected) {
        let ctx = format!("{what}: pg_cron job {} ({:?}): {r:?}", e.jobid, e.jobname);
        assert_eq!(r.source_jobname, e.jobname, "{ctx}: source_jobname");
        assert_eq!(r.job_name, e.job_name, "{ctx}: job_name");
        assert_eq!(r.owner, e.owner, "{ctx}: owner");
        assert_eq!(r.database, e.database, "{ctx}: database");
        assert_eq!(r.kind, e.kind, "{ctx}: kind");
        assert_eq!(r.action, action(e), "{ctx}: action");
        let note = r
            .note
            .as_deref()
            .unwrap_or_else(|| panic!("{ctx}: the note is NULL"));
        assert!(!note.trim().is_empty(), "{ctx}: the note is empty");
        let lower = note.to_lowercase();
        for w in &e.note_has {
            assert!(
                lower.contains(&w.to_lowercase()),
                "{ctx}: the note should mention {w:?}"
            );
        }
        if let Some(n) = e.note_number {
            assert!(
                has_number(note, n),
                "{ctx}: the note should say how many calls ({n})"
            );
        }
    }
}

/// Whether `n` occurs in `text` as a number of its own (not as part of a longer one).
fn has_number(text: &str, n: impl std::fmt::Display) -> bool {
    let n = n.to_string();
    text.split(|ch: char| !ch.is_ascii_digit())
        .any(|tok| tok == n)
}

/// pg_pulse's jobs as text (what an import may change), for "changes nothing" comparisons.
fn pulse_jobs(c: &mut Client) -> String {
    c.query_one(
        "SELECT coalesce(string_agg(format('%s|%s|%s|%s|%s|%s|%s|%s|%s|%s', job_id, job_name, owner,
                                           schedule, timezone, enabled, command, http, database, comment),
                                    E'\n' ORDER BY job_id), '')
           FROM pulse.jobs",
        &[],
    )
    .expect("read pulse.jobs")
    .get(0)
}

fn pulse_job_count(c: &mut Client) -> i64 {
    c.query_one("SELECT count(*) FROM pulse.jobs", &[])
        .unwrap()
        .get(0)
}

fn secret_count(c: &mut Client) -> i64 {
    c.query_one("SELECT count(*) FROM pulse.secret", &[])
        .expect("count pulse.secret")
        .get(0)
}

/// cron.job as text (every column an import may read or change).
fn cron_jobs(c: &mut Client) -> String {
    c.query_one(
        "SELECT coalesce(string_agg(format('%s|%s|%s|%s|%s|%s|%s', jobid, jobname, schedule, command,
                                           database, username, active), E'\n' ORDER BY jobid), '')
           FROM cron.job",
        &[],
    )
    .expect("read cron.job")
    .get(0)
}

/// (pulse.jobs, secrets, cron.job): what a call that changes nothing leaves as it was.
fn state(c: &mut Client) -> (String, i64, String) {
    (pulse_jobs(c), secret_count(c), cron_jobs(c))
}

fn cron_active(c: &mut Client, jobid: i64) -> bool {
    c.query_one("SELECT active FROM cron.job WHERE jobid = $1", &[&jobid])
        .expect("read cron.job.active")
        .get(0)
}

/// `cron.schedule(name, schedule, command)`: the new jobid.
fn cron_schedule(c: &mut Client, name: &str, schedule: &str, command: &str) -> i64 {
    c.query_one(
        "SELECT cron.schedule($1, $2, $3)",
        &[&name, &schedule, &command],
    )
    .unwrap_or_else(|e| panic!("cron.schedule {name}: {e}"))
    .get(0)
}

/// pg_cron 1.4 rejects `N seconds` and `$` in cron.schedule ("invalid schedule"; both came in
/// 1.5): such jobs are written into cron.job directly, as superuser, as a newer pg_cron would have
/// stored them (its launcher logs "invalid pg_cron schedule" for them and goes on).
fn cron_insert(c: &mut Client, name: &str, schedule: &str, command: &str, active: bool) -> i64 {
    c.query_one(
        "INSERT INTO cron.job (jobname, schedule, command, active) VALUES ($1, $2, $3, $4)
         RETURNING jobid",
        &[&name, &schedule, &command, &active],
    )
    .unwrap_or_else(|e| panic!("insert {name} into cron.job: {e}"))
    .get(0)
}

/// An HTTP command and the request pg_net would send for it, written from its arguments.
struct HttpCase {
    job: &'static str,
    schedule: &'static str,
    /// written into cron.job directly (a schedule pg_cron 1.4 rejects)
    direct: bool,
    active: bool,
    command: String,
    method: &'static str,
    /// the path the local server sees, without the query string
    path: &'static str,
    /// the query string's pairs, decoded (order free: pg_net takes them from a jsonb object)
    query: Vec<(&'static str, &'static str)>,
    /// headers that must arrive exactly once, with these values (names case-insensitive)
    headers: Vec<(&'static str, String)>,
    /// headers that must not arrive
    absent: Vec<&'static str>,
    /// the body as JSON; None: no body
    body: Option<&'static str>,
    timeout_ms: i64,
    /// the stored request (pulse.jobs.http) at a JSON path: what current_setting(...) became
    stored: Vec<(Vec<&'static str>, &'static str)>,
}

const BEARER_SECRET: &str = "Bearer {{secret:service_role_key}}";
const SUPABASE_URL: &str = "{{setting:app.settings.supabase_url}}";

/// The HTTP jobs of the test. `base` is the local server (`http://127.0.0.1:PORT`);
/// `app.settings.supabase_url` is `base` + `/ok` (the server answers 200 under /ok).
fn http_cases(base: &str) -> Vec<HttpCase> {
    let bearer = format!("Bearer {KEY}");
    vec![
        // The overnight pulse's hourly discovery (playbook 004) as one call, as Supabase's
        // docs write it (`... AS request_id`), URL from app.settings.supabase_url.
        HttpCase {
            job: "overnight-discover-classic-sellers",
            schedule: "0 20-23,0-7 * * *",
            direct: false,
            active: true,
            command: "SELECT net.http_post(
    url := current_setting('app.settings.supabase_url') || '/functions/v1/discover-classic-sellers',
    headers := jsonb_build_object(
      'Authorization', 'Bearer ' || current_setting('app.settings.service_role_key'),
      'Content-Type', 'application/json'
    ),
    body := jsonb_build_object('max_pages', 3, 'region', 'us'),
    timeout_milliseconds := 120000
  ) AS request_id;"
                .into(),
            method: "POST",
            path: "/ok/functions/v1/discover-classic-sellers",
            query: vec![],
            headers: vec![
                ("Authorization", bearer.clone()),
                ("Content-Type", "application/json".into()),
            ],
            absent: vec![],
            body: Some(r#"{"max_pages": 3, "region": "us"}"#),
            timeout_ms: 120_000,
            stored: vec![
                (
                    vec!["url"],
                    "{{setting:app.settings.supabase_url}}/functions/v1/discover-classic-sellers",
                ),
                (vec!["headers", "Authorization"], BEARER_SECRET),
            ],
        },
        // Named arguments out of the signature's order, jsonb_build_object headers and body
        // (a number, a boolean, a string), no Content-Type given: pg_net sends
        // application/json.
        HttpCase {
            job: "imp-named-post",
            schedule: "*/7 * * * *",
            direct: false,
            active: true,
            command: format!(
                "SELECT net.http_post(
  url := '{base}/ok/imp/named',
  body := jsonb_build_object('batch_size', 20, 'dry', false, 'label', 'nightly run'),
  headers := jsonb_build_object('Authorization', 'Bearer ' || current_setting('app.settings.service_role_key'),
                                'X-Run-Source', 'pg_cron'),
  timeout_milliseconds := 12000
)"
            ),
            method: "POST",
            path: "/ok/imp/named",
            query: vec![],
            headers: vec![
                ("Authorization", bearer.clone()),
                ("X-Run-Source", "pg_cron".into()),
                ("Content-Type", "application/json".into()),
            ],
            absent: vec![],
            body: Some(r#"{"batch_size": 20, "dry": false, "label": "nightly run"}"#),
            timeout_ms: 12_000,
            stored: vec![(vec!["headers", "Authorization"], BEARER_SECRET)],
        },
        // Positional: url and a '{...}'::jsonb body; pg_net's defaults for the rest (headers
        // {"Content-Type": "application/json"}, 5000 ms).
        HttpCase {
            job: "imp-positional-post",
            schedule: "15 * * * *",
            direct: false,
            active: true,
            command: format!(
                "SELECT net.http_post('{base}/ok/imp/positional', '{{\"batch_size\": 10, \"max_results\": 250}}'::jsonb);"
            ),
            method: "POST",
            path: "/ok/imp/positional",
            query: vec![],
            headers: vec![("Content-Type", "application/json".into())],
            absent: vec!["Authorization"],
            body: Some(r#"{"batch_size": 10, "max_results": 250}"#),
            timeout_ms: 5_000,
            stored: vec![],
        },
        // Positional, all five: url, body, params, headers, timeout_milliseconds.
        HttpCase {
            job: "imp-positional-full",
            schedule: "20 4 * * 1-5",
            direct: false,
            active: true,
            command: format!(
                "SELECT net.http_post(
  '{base}/ok/imp/full',
  '{{\"chain_depth\": 6, \"seed_every\": 1, \"bat_import_batch\": 1}}'::jsonb,
  '{{\"mode\": \"full run\", \"since\": \"2026-01-01T00:00:00Z\"}}'::jsonb,
  jsonb_build_object('Authorization', 'Bearer ' || current_setting('app.settings.service_role_key')),
  3000
);"
            ),
            method: "POST",
            path: "/ok/imp/full",
            query: vec![("mode", "full run"), ("since", "2026-01-01T00:00:00Z")],
            headers: vec![
                ("Authorization", bearer.clone()),
                ("Content-Type", "application/json".into()),
            ],
            absent: vec![],
            body: Some(r#"{"chain_depth": 6, "seed_every": 1, "bat_import_batch": 1}"#),
            timeout_ms: 3_000,
            stored: vec![(vec!["headers", "Authorization"], BEARER_SECRET)],
        },
        // http_get with params that need percent-encoding, a header from a setting that stays
        // a setting (current_setting with its second argument). GET: no body, no Content-Type.
        HttpCase {
            job: "imp-get-params",
            schedule: "*/10 * * * *",
            direct: false,
            active: true,
            command: format!(
                "SELECT net.http_get(
  url := '{base}/ok/imp/items',
  params := '{{\"page\": \"2\", \"q\": \"a b&c=d/e\"}}'::jsonb,
  headers := jsonb_build_object('apikey', current_setting('app.settings.anon_key', true),
                                'X-Client-Info', 'pg_cron')
)"
            ),
            method: "GET",
            path: "/ok/imp/items",
            query: vec![("page", "2"), ("q", "a b&c=d/e")],
            headers: vec![("apikey", ANON.into()), ("X-Client-Info", "pg_cron".into())],
            absent: vec!["Content-Type", "Authorization"],
            body: None,
            timeout_ms: 5_000,
            stored: vec![(vec!["headers", "apikey"], "{{setting:app.settings.anon_key}}")],
        },
        // http_delete with jsonb_build_object params and a timeout.
        HttpCase {
            job: "imp-delete",
            schedule: "0 3 * * 0",
            direct: false,
            active: true,
            command: format!(
                "SELECT net.http_delete(
  url := '{base}/ok/imp/items/7',
  params := jsonb_build_object('hard', 'true'),
  headers := jsonb_build_object('Authorization', 'Bearer ' || current_setting('app.settings.service_role_key')),
  timeout_milliseconds := 2500
);"
            ),
            method: "DELETE",
            path: "/ok/imp/items/7",
            query: vec![("hard", "true")],
            headers: vec![("Authorization", bearer.clone())],
            absent: vec!["Content-Type"],
            body: None,
            timeout_ms: 2_500,
            stored: vec![(vec!["headers", "Authorization"], BEARER_SECRET)],
        },
        // A `$` (last day of the month) schedule; the URL from current_setting(..., true) ||
        // a path; a '{...}'::jsonb body with an array, a fraction and a null.
        HttpCase {
            job: "imp-month-end",
            schedule: "0 0 $ * *",
            direct: true,
            active: true,
            command: "SELECT net.http_post(
  url := current_setting('app.settings.supabase_url', true) || '/functions/v1/month-end',
  body := '{\"report\": \"monthly\", \"tags\": [\"a\", \"b\"], \"ratio\": 1.5, \"owner\": null}'::jsonb
)"
            .into(),
            method: "POST",
            path: "/ok/functions/v1/month-end",
            query: vec![],
            headers: vec![("Content-Type", "application/json".into())],
            absent: vec!["Authorization"],
            body: Some(r#"{"report": "monthly", "tags": ["a", "b"], "ratio": 1.5, "owner": null}"#),
            timeout_ms: 5_000,
            stored: vec![(
                vec!["url"],
                "{{setting:app.settings.supabase_url}}/functions/v1/month-end",
            )],
        },
        // A `30 seconds` schedule, paused in pg_cron (so the pg_pulse job is created paused),
        // positional http_get with only a URL.
        HttpCase {
            job: "imp-every-30s",
            schedule: "30 seconds",
            direct: true,
            active: false,
            command: format!("SELECT net.http_get('{base}/ok/imp/heartbeat')"),
            method: "GET",
            path: "/ok/imp/heartbeat",
            query: vec![],
            headers: vec![],
            absent: vec!["Content-Type", "Authorization"],
            body: None,
            timeout_ms: 5_000,
            stored: vec![],
        },
    ]
}

/// The overnight extraction pulse of playbook 004 (`*/5 20-23,0-7 * * *`): the five curl
/// examples as five net.http_post calls with the service role key from app.settings. Not one
/// call: it stays a SQL job, and the note says it makes 5 calls.
const OVERNIGHT_PULSE: &str = "
SELECT net.http_post(
  url := 'https://qkgaybvrernstplzjaam.supabase.co/functions/v1/process-classic-seller-queue',
  headers := jsonb_build_object('Authorization', 'Bearer ' || current_setting('app.settings.service_role_key'),
                                'Content-Type', 'application/json'),
  body := '{\"batch_size\": 20}'::jsonb,
  timeout_milliseconds := 60000);
SELECT net.http_post(
  url := 'https://qkgaybvrernstplzjaam.supabase.co/functions/v1/process-inventory-sync-queue',
  headers := jsonb_build_object('Authorization', 'Bearer ' || current_setting('app.settings.service_role_key'),
                                'Content-Type', 'application/json'),
  body := '{\"batch_size\": 10, \"max_results\": 250}'::jsonb,
  timeout_milliseconds := 60000);
SELECT net.http_post(
  url := 'https://qkgaybvrernstplzjaam.supabase.co/functions/v1/process-import-queue',
  headers := jsonb_build_object('Authorization', 'Bearer ' || current_setting('app.settings.service_role_key'),
                                'Content-Type', 'application/json'),
  body := '{\"batch_size\": 40}'::jsonb,
  timeout_milliseconds := 60000);
SELECT net.http_post(
  url := 'https://qkgaybvrernstplzjaam.supabase.co/functions/v1/process-bat-extraction-queue',
  headers := jsonb_build_object('Authorization', 'Bearer ' || current_setting('app.settings.service_role_key'),
                                'Content-Type', 'application/json'),
  body := '{\"batchSize\": 10}'::jsonb,
  timeout_milliseconds := 60000);
SELECT net.http_post(
  url := 'https://qkgaybvrernstplzjaam.supabase.co/functions/v1/go-grinder',
  headers := jsonb_build_object('Authorization', 'Bearer ' || current_setting('app.settings.service_role_key'),
                                'Content-Type', 'application/json'),
  body := '{\"chain_depth\": 6, \"seed_every\": 1, \"bat_import_batch\": 1}'::jsonb,
  timeout_milliseconds := 60000);
";

/// Playbook 001's table: (job, schedule, helper, the setting its URL comes from).
const PIPELINE: [(&str, &str, &str, &str); 6] = [
    (
        "content_pipeline_main",
        "*/5 * * * *",
        "trigger_content_automation",
        "app.content_automation_url",
    ),
    (
        "content_pipeline_sweeper",
        "*/15 * * * *",
        "trigger_sweeper",
        "app.sweeper_url",
    ),
    (
        "content_pipeline_monitor",
        "0 * * * *",
        "trigger_monitoring",
        "app.monitor_url",
    ),
    (
        "content_pipeline_metrics",
        "*/30 * * * *",
        "trigger_metrics_collection",
        "app.metrics_url",
    ),
    (
        "content_pipeline_health",
        "*/10 * * * *",
        "trigger_health_checks",
        "app.health_url",
    ),
    (
        "content_pipeline_cleanup",
        "0 2 * * *",
        "trigger_cleanup",
        "app.cleanup_url",
    ),
];

/// Decodes `%XX` escapes (a `+` stays a `+`: pg_net percent-encodes, spaces as %20).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let byte = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .unwrap_or_else(|| panic!("bad percent-encoding in {s:?}"));
            out.push(byte);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| panic!("{s:?} does not decode to UTF-8"))
}

/// The decoded (key, value) pairs of a query string, sorted.
fn query_pairs(q: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = q
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    v.sort();
    v
}

/// Compares a request the local server received with the one pg_net would have sent.
fn check_request(c: &mut Client, case: &HttpCase, got: &Seen) {
    let ctx = format!("{}: received {got:?}", case.job);
    assert_eq!(got.method, case.method, "{ctx}: method");
    let (path, query) = got.path.split_once('?').unwrap_or((&got.path, ""));
    assert_eq!(path, case.path, "{ctx}: path");
    let mut want: Vec<(String, String)> = case
        .query
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    want.sort();
    assert_eq!(query_pairs(query), want, "{ctx}: query string");
    for (name, value) in &case.headers {
        let values: Vec<&str> = got
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(
            values,
            vec![value.as_str()],
            "{ctx}: header {name} (exactly once)"
        );
    }
    for name in &case.absent {
        assert!(got.header(name).is_none(), "{ctx}: no {name} header");
    }
    match case.body {
        Some(json) => {
            let text = got.body_text();
            let same: bool = c
                .query_one("SELECT $1::text::jsonb = $2::text::jsonb", &[&text, &json])
                .unwrap_or_else(|e| panic!("{ctx}: the body is not JSON: {e}"))
                .get(0);
            assert!(same, "{ctx}: body {text} should be the JSON value {json}");
        }
        None => assert!(got.body.is_empty(), "{ctx}: no body"),
    }
}

/// The pg_pulse job (owner, schedule, timezone, enabled, command, http as text, database,
/// comment) of `owner` named `job`, if any.
#[allow(clippy::type_complexity)]
fn pulse_job(
    c: &mut Client,
    owner: &str,
    job: &str,
) -> Option<(
    String,
    String,
    String,
    bool,
    Option<String>,
    Option<String>,
    String,
    Option<String>,
)> {
    c.query_opt(
        "SELECT owner, schedule, timezone, enabled, command, http::text, database, comment
           FROM pulse.jobs WHERE owner = $1 AND job_name = $2",
        &[&owner, &job],
    )
    .expect("read pulse.jobs")
    .map(|r| {
        (
            r.get(0),
            r.get(1),
            r.get(2),
            r.get(3),
            r.get(4),
            r.get(5),
            r.get(6),
            r.get(7),
        )
    })
}

#[test]
fn import_pg_cron_moves_the_playbooks_jobs_and_sends_what_pg_net_would() {
    if without_pg_cron() {
        return;
    }
    let srv = Server::start();
    let base = srv.url("");
    let cl = start_cluster("main");
    let mut a = cl.connect();

    // ---- the settings the commands read (playbook 004's ALTER DATABASE), roles, a database
    a.batch_execute(&format!(
        "ALTER DATABASE postgres SET app.settings.supabase_url = '{base}/ok';
         ALTER DATABASE postgres SET app.settings.service_role_key = '{KEY}';
         ALTER DATABASE postgres SET app.settings.anon_key = '{ANON}';
         CREATE ROLE imp_app LOGIN;
         GRANT USAGE ON SCHEMA pulse TO imp_app;
         CREATE ROLE imp_nologin LOGIN;"
    ))
    .expect("settings and roles");
    a.batch_execute("CREATE DATABASE imp_analytics")
        .expect("create database imp_analytics");
    connect_db("postgres", cl.port, "imp_analytics")
        .batch_execute(
            "CREATE TABLE rollup_log (at timestamptz NOT NULL DEFAULT now(),
                                      db text NOT NULL DEFAULT current_database(),
                                      who text NOT NULL DEFAULT current_user);
             GRANT SELECT, INSERT ON rollup_log TO imp_app;",
        )
        .expect("table in imp_analytics");
    // sessions opened from now on see the ALTER DATABASE settings
    drop(a);
    let mut a = cl.connect();
    let seen_key: String = a
        .query_one(
            "SELECT current_setting('app.settings.service_role_key')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(seen_key, KEY);

    let mut expected: Vec<Expect> = Vec::new();

    // ---- 1. the content pipeline (playbook 001): six trigger_*() helpers, each a net.http_post
    // call in plpgsql (not checked at CREATE: the net schema does not exist), and six jobs
    // `SELECT trigger_x();` exactly as the playbook schedules them
    for (job, schedule, helper, setting) in PIPELINE {
        a.batch_execute(&format!(
            "CREATE FUNCTION public.{helper}() RETURNS bigint LANGUAGE plpgsql AS $fn$
             DECLARE request_id bigint;
             BEGIN
               SELECT net.http_post(
                 url := current_setting('{setting}'),
                 headers := jsonb_build_object(
                   'Content-Type', 'application/json',
                   'Authorization', 'Bearer ' || current_setting('app.service_role_key')),
                 body := jsonb_build_object('trigger_type', 'scheduled', 'function', '{helper}')
               ) INTO request_id;
               RETURN request_id;
             END $fn$;"
        ))
        .unwrap_or_else(|e| panic!("create {helper}: {e}"));
        let command = format!("SELECT {helper}();");
        let id = cron_schedule(&mut a, job, schedule, &command);
        let mut e = Expect::sql(id, job, schedule, &command, "create");
        // the note names the helper that makes the HTTP call
        e.note_has = vec![helper.to_string()];
        expected.push(e);
    }

    // ---- 2. the overnight extraction pulse (playbook 004): five calls, a SQL job
    let pulse_id = cron_schedule(
        &mut a,
        "overnight-extraction-pulse",
        "*/5 20-23,0-7 * * *",
        OVERNIGHT_PULSE,
    );
    let mut e = Expect::sql(
        pulse_id,
        "overnight-extraction-pulse",
        "*/5 20-23,0-7 * * *",
        OVERNIGHT_PULSE,
        "create",
    );
    e.note_has = vec!["calls".into()];
    e.note_number = Some(5);
    expected.push(e);

    // ---- 2 and 3. the HTTP jobs (the discovery job of playbook 004 first)
    let cases = http_cases(&base);
    for case in &cases {
        let id = if case.direct {
            cron_insert(&mut a, case.job, case.schedule, &case.command, case.active)
        } else {
            let id = cron_schedule(&mut a, case.job, case.schedule, &case.command);
            assert!(case.active, "{}: scheduled jobs start active", case.job);
            id
        };
        let mut e = Expect::sql(id, case.job, case.schedule, &case.command, "create");
        e.kind = "http";
        e.enabled = case.active;
        expected.push(e);
    }

    // one net.http_post call followed by another statement: not exactly one call, a SQL job
    let mixed = format!(
        "SELECT net.http_post(url := '{base}/ok/imp/mixed'); SELECT pg_catalog.pg_sleep(0);"
    );
    let id = cron_schedule(&mut a, "imp-post-then-sql", "5 5 * * *", &mixed);
    expected.push(Expect::sql(
        id,
        "imp-post-then-sql",
        "5 5 * * *",
        &mixed,
        "create",
    ));

    // a hostile command: a net.http_get whose URL is 50,000 `||` deep (the parser builds it
    // without recursing); reading it must not exhaust the importing backend's stack: a SQL job
    let deep = format!(
        "SELECT net.http_get({}'{base}/ok/imp/deep')",
        "'x' || ".repeat(50_000)
    );
    let id = cron_schedule(&mut a, "imp-deep", "6 5 * * *", &deep);
    let mut e = Expect::sql(id, "imp-deep", "6 5 * * *", &deep, "create");
    e.note_has = vec!["nested too deeply".into()];
    expected.push(e);

    // an unnamed job (pg_cron's two-argument cron.schedule): named pg_cron_<jobid>
    let cleanup = "DELETE FROM cron.job_run_details WHERE end_time < now() - interval '7 days'";
    let id: i64 = a
        .query_one("SELECT cron.schedule($1, $2)", &[&"*/20 * * * *", &cleanup])
        .expect("an unnamed pg_cron job")
        .get(0);
    let mut e = Expect::sql(id, "", "*/20 * * * *", cleanup, "create");
    e.jobname = None;
    e.job_name = format!("pg_cron_{id}");
    expected.push(e);

    // ---- 4. a second role's job in a second database
    let rollup = "INSERT INTO rollup_log DEFAULT VALUES";
    let rollup_id: i64 = a
        .query_one(
            "SELECT cron.schedule_in_database('analytics-rollup', '15 3 * * *', $1, 'imp_analytics', 'imp_app')",
            &[&rollup],
        )
        .expect("cron.schedule_in_database")
        .get(0);
    let mut e = Expect::sql(
        rollup_id,
        "analytics-rollup",
        "15 3 * * *",
        rollup,
        "create",
    );
    e.owner = "imp_app";
    e.database = "imp_analytics";
    expected.push(e);

    // ---- 5. owners that cannot run a job: skipped, with a note naming the role.
    // pg_cron 1.4 refuses to schedule for a NOLOGIN role ("can not log in"): the role loses
    // LOGIN after its job was scheduled, as happens when a role is retired.
    let nologin_id: i64 = a
        .query_one(
            "SELECT cron.schedule_in_database('nologin-report', '0 6 * * 1', 'SELECT 1', 'postgres', 'imp_nologin')",
            &[],
        )
        .expect("a job of imp_nologin")
        .get(0);
    a.batch_execute("ALTER ROLE imp_nologin NOLOGIN").unwrap();
    let mut e = Expect::sql(
        nologin_id,
        "nologin-report",
        "0 6 * * 1",
        "SELECT 1",
        "skip",
    );
    e.owner = "imp_nologin";
    e.note_has = vec!["imp_nologin".into()];
    expected.push(e);
    // a role that does not exist (cron.job is written directly: pg_cron checks the role)
    let ghost_id: i64 = a
        .query_one(
            "INSERT INTO cron.job (jobname, schedule, command, username)
             VALUES ('ghost-report', '0 1 * * *', 'SELECT 2', 'imp_ghost') RETURNING jobid",
            &[],
        )
        .unwrap()
        .get(0);
    let mut e = Expect::sql(ghost_id, "ghost-report", "0 1 * * *", "SELECT 2", "skip");
    e.owner = "imp_ghost";
    e.note_has = vec!["imp_ghost".into()];
    expected.push(e);

    // a pg_pulse job made by hand whose name (and owner) a pg_cron job has too: skipped
    a.query_one(
        "SELECT pulse.schedule_job('nightly-vacuum', '0 4 * * *', 'VACUUM ANALYZE')",
        &[],
    )
    .expect("a pg_pulse job of its own");
    let vacuum_id = cron_schedule(&mut a, "nightly-vacuum", "30 4 * * *", "VACUUM ANALYZE");
    expected.push(Expect::sql(
        vacuum_id,
        "nightly-vacuum",
        "30 4 * * *",
        "VACUUM ANALYZE",
        "skip",
    ));
    let own_vacuum = pulse_job(&mut a, "postgres", "nightly-vacuum").unwrap();

    expected.sort_by_key(|e| e.jobid);
    let created: Vec<&Expect> = expected.iter().filter(|e| e.action == "create").collect();
    let skipped: Vec<i64> = expected
        .iter()
        .filter(|e| e.action == "skip")
        .map(|e| e.jobid)
        .collect();
    let first = |e: &Expect| e.action;
    let again = |e: &Expect| {
        if e.action == "skip" {
            "skip"
        } else {
            "unchanged"
        }
    };

    // ---- dry runs: the defaults, then with the real run's arguments; nothing changes
    let before = state(&mut a);
    assert_eq!(pulse_job_count(&mut a), 1);
    assert_eq!(before.1, 0, "no secrets yet");
    let defaults = import_defaults(&mut a);
    check_rows(
        "pulse.import_pg_cron() (defaults: a dry run)",
        &defaults,
        &expected,
        first,
    );
    assert_eq!(state(&mut a), before, "a dry run changes nothing");
    let dry = import(&mut a, true, false, AS_SECRETS).expect("dry run");
    check_rows("dry run", &dry, &expected, first);
    assert_eq!(state(&mut a), before, "a dry run changes nothing");

    // ---- the real run: exactly the rows of the dry run
    let real = import(&mut a, false, false, AS_SECRETS).expect("real run");
    assert_eq!(
        real, dry,
        "a dry run returns exactly the rows of the real run"
    );
    assert_eq!(
        cron_jobs(&mut a),
        before.2,
        "without disable_source cron.job is left as it is"
    );
    assert_eq!(pulse_job_count(&mut a), 1 + created.len() as i64);
    for e in &created {
        let ctx = format!("pg_pulse job {} of {}", e.job_name, e.owner);
        let (owner, schedule, timezone, enabled, command, http, database, comment) =
            pulse_job(&mut a, e.owner, &e.job_name)
                .unwrap_or_else(|| panic!("{ctx} was not created"));
        assert_eq!(owner, e.owner, "{ctx}: owner");
        assert_eq!(schedule, e.schedule, "{ctx}: the schedule is copied as is");
        assert_eq!(
            timezone, "GMT",
            "{ctx}: pg_cron 1.4 evaluates schedules in GMT"
        );
        assert_eq!(enabled, e.enabled, "{ctx}: enabled iff active in pg_cron");
        assert_eq!(database, e.database, "{ctx}: database");
        let comment = comment.unwrap_or_else(|| panic!("{ctx}: no comment"));
        assert!(
            comment.contains("pg_cron") && has_number(&comment, e.jobid),
            "{ctx}: the comment should say it was imported from pg_cron job {}: {comment:?}",
            e.jobid
        );
        if e.kind == "sql" {
            assert_eq!(
                command.as_deref(),
                Some(e.command.as_str()),
                "{ctx}: command"
            );
            assert_eq!(http, None, "{ctx}: a SQL job");
        } else {
            assert_eq!(command, None, "{ctx}: an HTTP job has no command");
            let http = http.unwrap_or_else(|| panic!("{ctx}: no http"));
            assert!(
                !http.contains("current_setting"),
                "{ctx}: current_setting(...) became placeholders: {http}"
            );
        }
    }
    for (owner, job) in [
        ("imp_nologin", "nologin-report"),
        ("imp_ghost", "ghost-report"),
    ] {
        assert!(
            a.query_opt("SELECT 1 FROM pulse.jobs WHERE job_name = $1", &[&job])
                .unwrap()
                .is_none(),
            "{owner}'s job {job} is skipped, not created"
        );
    }
    assert_eq!(
        pulse_job(&mut a, "postgres", "nightly-vacuum").unwrap(),
        own_vacuum,
        "the pg_pulse job of the same name is left as it was"
    );
    // the key is a secret of the HTTP jobs' owner now, and its value is stored nowhere
    let secrets: Vec<(String, String)> = a
        .query(
            "SELECT name, owner FROM pulse.secrets ORDER BY owner, name",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        secrets,
        vec![("service_role_key".to_string(), "postgres".to_string())],
        "app.settings.service_role_key became postgres's secret service_role_key"
    );
    let leaks: Vec<String> = a
        .query(
            "SELECT j.job_name FROM pulse.job j WHERE strpos(j::text, $1) > 0",
            &[&KEY],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(leaks.is_empty(), "the key's value is stored in {leaks:?}");

    // ---- each HTTP job: the stored request, then a run and what the server received
    for case in &cases {
        let row = a
            .query_one(
                "SELECT http->>'method', (http->>'timeout_ms')::bigint, http::text
                   FROM pulse.jobs WHERE owner = 'postgres' AND job_name = $1",
                &[&case.job],
            )
            .unwrap_or_else(|e| panic!("{}: {e}", case.job));
        let (method, timeout_ms, http): (Option<String>, Option<i64>, String) =
            (row.get(0), row.get(1), row.get(2));
        assert_eq!(method.as_deref(), Some(case.method), "{}: {http}", case.job);
        assert_eq!(
            timeout_ms,
            Some(case.timeout_ms),
            "{}: timeout (pg_net's default is 5000 ms): {http}",
            case.job
        );
        for (path, want) in &case.stored {
            let got: Option<String> = a
                .query_one(
                    "SELECT http #>> $2::text[] FROM pulse.jobs WHERE owner = 'postgres' AND job_name = $1",
                    &[&case.job, path],
                )
                .unwrap()
                .get(0);
            assert_eq!(
                got.as_deref(),
                Some(*want),
                "{}: {path:?} in {http}",
                case.job
            );
        }
        let uses_key = case.command.contains("service_role_key");
        assert_eq!(
            http.contains("{{secret:service_role_key}}"),
            uses_key,
            "{}: the key becomes {{{{secret:service_role_key}}}}: {http}",
            case.job
        );
        assert!(
            !http.contains(KEY),
            "{}: the key's value is stored",
            case.job
        );
        assert!(
            !http.contains(SUPABASE_URL) || case.command.contains("app.settings.supabase_url"),
            "{}: {http}",
            case.job
        );
    }
    // run them all (as their owner, postgres), then the second role's SQL job as imp_app
    let runs: Vec<(&HttpCase, i64)> = cases
        .iter()
        .map(|case| (case, run_job(&mut a, case.job)))
        .collect();
    a.batch_execute("SET ROLE imp_app").unwrap();
    let rollup_run = run_job(&mut a, "analytics-rollup");
    a.batch_execute("RESET ROLE").unwrap();
    for (case, run) in &runs {
        let (status, message) = wait_run_final(&mut a, *run);
        assert_eq!(status, "succeeded", "{}: run {run}: {message:?}", case.job);
        // scheduled runs of the job may have come too: each sends the same request
        let got: Vec<Seen> = srv
            .seen("/ok/")
            .into_iter()
            .filter(|s| s.path.split('?').next() == Some(case.path))
            .collect();
        assert!(!got.is_empty(), "{}: nothing received", case.job);
        for g in &got {
            check_request(&mut a, case, g);
        }
    }
    let (status, message) = wait_run_final(&mut a, rollup_run);
    assert_eq!(status, "succeeded", "analytics-rollup: {message:?}");
    let logged: Vec<(String, String)> = connect_db("postgres", cl.port, "imp_analytics")
        .query("SELECT db, who FROM rollup_log", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(
        logged
            .iter()
            .all(|l| *l == ("imp_analytics".to_string(), "imp_app".to_string()))
            && !logged.is_empty(),
        "analytics-rollup runs in imp_analytics as imp_app: {logged:?}"
    );

    // ---- a second real run: unchanged
    let jobs_before = pulse_jobs(&mut a);
    let second = import(&mut a, false, false, AS_SECRETS).expect("second real run");
    check_rows("second real run", &second, &expected, again);
    assert_eq!(
        pulse_jobs(&mut a),
        jobs_before,
        "a second run changes no job"
    );
    assert_eq!(secret_count(&mut a), 1);

    // ---- a pg_cron job's schedule changes: update
    let health = expected
        .iter()
        .find(|e| e.job_name == "content_pipeline_health")
        .unwrap()
        .jobid;
    a.execute(
        "SELECT cron.alter_job($1, schedule := '*/20 * * * *')",
        &[&health],
    )
    .expect("cron.alter_job");
    let third = import(&mut a, false, false, AS_SECRETS).expect("third real run");
    check_rows("after cron.alter_job", &third, &expected, |e| {
        if e.jobid == health {
            "update"
        } else {
            again(e)
        }
    });
    let (_, schedule, timezone, enabled, command, ..) =
        pulse_job(&mut a, "postgres", "content_pipeline_health").unwrap();
    assert_eq!(
        schedule, "*/20 * * * *",
        "the update brings the new schedule"
    );
    assert_eq!(timezone, "GMT");
    assert!(enabled);
    assert_eq!(command.as_deref(), Some("SELECT trigger_health_checks();"));

    // ---- disable_source: the imported pg_cron jobs go inactive, the skipped ones stay active
    let jobs_before = pulse_jobs(&mut a);
    let fourth = import(&mut a, false, true, AS_SECRETS).expect("disable_source");
    check_rows("disable_source", &fourth, &expected, again);
    for e in &expected {
        let active = cron_active(&mut a, e.jobid);
        if skipped.contains(&e.jobid) {
            assert!(active, "skipped pg_cron job {} stays active", e.job_name);
        } else {
            assert!(!active, "pg_cron job {} is set inactive", e.job_name);
        }
    }
    assert_eq!(
        pulse_jobs(&mut a),
        jobs_before,
        "disable_source changes no pg_pulse job"
    );

    // ---- the non-superuser and missing-table errors (this cluster: pg_cron loaded)
    let mut u = connect_port("imp_app", cl.port);
    expect_error(
        u.query("SELECT * FROM pulse.import_pg_cron()", &[]),
        "42501",
    );
    drop(u);

    // ---- restart without pg_cron: reading cron.job still works, writing it does not.
    // Before that: a new pg_cron job (a real run would create it) and an imported one active
    // again (disable_source would set it inactive), so a failed call has something to undo.
    let late_id = cron_schedule(&mut a, "late-addition", "45 1 * * *", "SELECT 42");
    let main_id = expected[0].jobid;
    assert_eq!(expected[0].job_name, "content_pipeline_main");
    a.execute(
        "UPDATE cron.job SET active = true WHERE jobid = $1",
        &[&main_id],
    )
    .unwrap();
    let mut expected = expected.clone();
    expected.push(Expect::sql(
        late_id,
        "late-addition",
        "45 1 * * *",
        "SELECT 42",
        "create",
    ));
    a.batch_execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_pulse'")
        .unwrap();
    drop(a);
    pgctl(&["restart", &cl.dir]);
    let mut a = cl.connect();
    let spl: String = a
        .query_one("SHOW shared_preload_libraries", &[])
        .unwrap()
        .get(0);
    assert_eq!(spl, "pg_pulse");
    // the ones imported before are up to date or brought up to date (content_pipeline_main's
    // active flag changed in pg_cron): not created again, not skipped
    let after_restart = |e: &Expect| -> &'static str {
        match e.action {
            "skip" => "skip",
            _ if e.jobid == late_id => "create",
            _ => "",
        }
    };
    let check_after_restart = |what: &str, rows: &[Imported]| {
        let ids: Vec<i64> = rows.iter().map(|r| r.source_jobid).collect();
        let want: Vec<i64> = expected.iter().map(|e| e.jobid).collect();
        assert_eq!(ids, want, "{what}: {rows:#?}");
        for (r, e) in rows.iter().zip(&expected) {
            assert_eq!(r.job_name, e.job_name, "{what}: {r:?}");
            assert_eq!(r.kind, e.kind, "{what}: {r:?}");
            match after_restart(e) {
                "" => assert!(
                    r.action == "unchanged" || r.action == "update",
                    "{what}: imported before: {r:?}"
                ),
                want => assert_eq!(r.action, want, "{what}: {r:?}"),
            }
            assert!(
                r.note.as_deref().is_some_and(|n| !n.trim().is_empty()),
                "{what}: a note: {r:?}"
            );
        }
    };
    let before = state(&mut a);
    let dry = import(&mut a, true, false, AS_SECRETS).expect("dry run without pg_cron loaded");
    check_after_restart("dry run without pg_cron loaded", &dry);
    assert_eq!(state(&mut a), before, "a dry run changes nothing");
    let err = import(&mut a, false, true, AS_SECRETS)
        .expect_err("disable_source cannot work while pg_cron is not loaded");
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("not a database error: {err}"));
    let said = format!("{} {}", db.message(), db.hint().unwrap_or_default());
    assert!(
        said.to_lowercase().contains("pg_cron"),
        "the error should say pg_cron is what is missing: {said}"
    );
    assert_eq!(
        state(&mut a),
        before,
        "the failed call changes nothing (no job created, no pg_cron job disabled)"
    );
    assert!(cron_active(&mut a, main_id));
    let real = import(&mut a, false, false, AS_SECRETS).expect("real run without pg_cron loaded");
    check_after_restart("real run without pg_cron loaded", &real);
    let (owner, schedule, timezone, enabled, command, ..) =
        pulse_job(&mut a, "postgres", "late-addition").expect("late-addition created");
    assert_eq!(
        (
            owner.as_str(),
            schedule.as_str(),
            timezone.as_str(),
            enabled
        ),
        ("postgres", "45 1 * * *", "GMT", true)
    );
    assert_eq!(command.as_deref(), Some("SELECT 42"));
    assert_eq!(
        cron_jobs(&mut a),
        before.2,
        "without disable_source cron.job is left as it is"
    );
}

/// Only superusers may import (42501), and without a `cron.job` table there is nothing to
/// import from (42P01: here the table renamed in a transaction that is rolled back).
#[test]
fn import_pg_cron_needs_a_superuser_and_cron_job() {
    if without_pg_cron() {
        return;
    }
    let cl = start_cluster("errors");
    let mut a = cl.connect();
    a.batch_execute(
        "CREATE ROLE imp_user LOGIN; GRANT USAGE ON SCHEMA pulse TO imp_user;
         SELECT cron.schedule('errors-job', '0 1 * * *', 'SELECT 1');",
    )
    .unwrap();
    let before = state(&mut a);

    let mut u = connect_port("imp_user", cl.port);
    expect_error(
        u.query("SELECT * FROM pulse.import_pg_cron()", &[]),
        "42501",
    );
    expect_error(
        u.query(
            "SELECT * FROM pulse.import_pg_cron(dry_run => false, disable_source => true)",
            &[],
        ),
        "42501",
    );
    // SET ROLE from a superuser session: the current role is what counts
    a.batch_execute("SET ROLE imp_user").unwrap();
    expect_error(
        a.query("SELECT * FROM pulse.import_pg_cron(dry_run => false)", &[]),
        "42501",
    );
    a.batch_execute("RESET ROLE").unwrap();
    assert_eq!(state(&mut a), before, "refused calls change nothing");

    {
        let mut tx = a.transaction().unwrap();
        tx.batch_execute("SET LOCAL lock_timeout = '10s'; ALTER TABLE cron.job RENAME TO job_x")
            .expect("rename cron.job");
        let (message, _) = expect_error(
            tx.query("SELECT * FROM pulse.import_pg_cron()", &[]),
            "42P01",
        );
        assert!(
            message.contains("cron.job"),
            "the error names the missing table: {message}"
        );
        // dropped: rolled back
    }
    let rows = import(&mut a, true, false, &[]).expect("cron.job is back");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].job_name, "errors-job");
    assert_eq!(rows[0].action, "create");
    assert_eq!(state(&mut a), before);
}

/// What a hostile pg_cron user tried in review (as their own jobs, then a superuser imports):
/// a job held locked, a name that another job of the same owner becomes, a cast that cuts the
/// URL, and an ordinary owner whose setting becomes its secret.
#[test]
fn import_pg_cron_holds_up_against_a_hostile_job_owner() {
    if without_pg_cron() {
        return;
    }
    let cl = start_cluster("hostile");
    let mut a = cl.connect();
    a.batch_execute(
        "CREATE ROLE imp_mallory LOGIN; GRANT USAGE ON SCHEMA pulse, cron TO imp_mallory;
         ALTER DATABASE postgres SET app.settings.mallory_key = 'mallorys-own-key-0123';",
    )
    .unwrap();
    let mut m = Client::connect(
        &format!(
            "host=127.0.0.1 port={} user=imp_mallory dbname=postgres",
            cl.port
        ),
        postgres::NoTls,
    )
    .expect("connect as imp_mallory");
    let job = |m: &mut Client, name: Option<&str>, command: &str| -> i64 {
        match name {
            Some(n) => m.query_one("SELECT cron.schedule($1, '0 1 * * *', $2)", &[&n, &command]),
            None => m.query_one("SELECT cron.schedule('0 1 * * *', $1)", &[&command]),
        }
        .expect("cron.schedule as imp_mallory")
        .get(0)
    };
    let unnamed = job(&mut m, None, "SELECT 1");
    let same_name = job(&mut m, Some(&format!("pg_cron_{unnamed}")), "SELECT 2");
    let cut = job(
        &mut m,
        Some("cut"),
        "SELECT net.http_get('http://127.0.0.1.attacker.example/'::varchar(16))",
    );
    let hook = job(
        &mut m,
        Some("hook"),
        "SELECT net.http_post(url := 'http://127.0.0.1:9/ok/hook', headers := jsonb_build_object('Authorization', 'Bearer ' || current_setting('app.settings.mallory_key')))",
    );
    let locked = job(&mut m, Some("locked"), "SELECT 3");
    let rows = import(&mut a, false, false, &["app.settings.mallory_key"]).expect("import");
    let row = |id: i64| rows.iter().find(|r| r.source_jobid == id).unwrap().clone();
    assert_eq!(row(unnamed).action, "create");
    let r = row(same_name);
    assert_eq!(r.action, "skip", "{r:?}");
    assert!(
        r.note
            .as_deref()
            .unwrap_or_default()
            .contains(&format!("pg_cron job {unnamed}")),
        "{r:?}"
    );
    let r = row(cut);
    assert_eq!(
        (r.kind.as_str(), r.action.as_str()),
        ("sql", "create"),
        "{r:?}"
    );
    assert!(
        r.note.as_deref().unwrap_or_default().contains("length"),
        "a cut URL is not followed: {r:?}"
    );
    let r = row(hook);
    assert_eq!(
        (r.kind.as_str(), r.action.as_str()),
        ("http", "create"),
        "{r:?}"
    );
    let secrets: Vec<(String, String)> = a
        .query("SELECT owner, name FROM pulse.secrets", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        secrets,
        vec![("imp_mallory".to_string(), "mallory_key".to_string())],
        "an ordinary owner's setting becomes its secret"
    );
    assert_eq!(row(locked).action, "create");

    // the owner holds its pg_pulse job locked: the import skips it after a few seconds
    let mut tx = m.transaction().unwrap();
    tx.query_one("SELECT pulse.alter_job('locked', comment => 'held')", &[])
        .expect("lock the job");
    let started = std::time::Instant::now();
    let again = import(&mut a, false, false, &["app.settings.mallory_key"]).expect("import");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "the import waited {:?}",
        started.elapsed()
    );
    let r = again.iter().find(|r| r.source_jobid == locked).unwrap();
    assert_eq!(r.action, "skip", "{r:?}");
    assert!(
        r.note.as_deref().unwrap_or_default().contains("locked"),
        "{r:?}"
    );
    let r = again.iter().find(|r| r.source_jobid == hook).unwrap();
    assert_eq!(r.action, "unchanged", "the other jobs go on: {r:?}");
    tx.rollback().unwrap();

    // a cancel (statement_timeout) ends the whole call, it is not taken for one job's failure
    let mut tx = m.transaction().unwrap();
    tx.query_one("SELECT pulse.alter_job('locked', comment => 'held')", &[])
        .unwrap();
    a.batch_execute("SET statement_timeout = '2s'").unwrap();
    expect_error(
        a.query(
            "SELECT * FROM pulse.import_pg_cron(dry_run => false, settings_as_secrets => '{app.settings.mallory_key}')",
            &[],
        ),
        "57014",
    );
    a.batch_execute("RESET statement_timeout").unwrap();
    tx.rollback().unwrap();
}
