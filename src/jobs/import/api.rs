//! `pulse.import_pg_cron()`: one row per pg_cron job, saying what became of it. Each job is
//! created or brought up to date as its owner through `pulse.schedule_job` (so every check of
//! that function applies, and a repeated import changes nothing), in a subtransaction of its own:
//! a job that cannot be imported is skipped with the reason, the others go on. A dry run does
//! all of it in a subtransaction that is rolled back. The only writer of `pulse.job_import`.

use super::command::{self, SettingUse, Translation};
use super::settings::{copy_secret, setting_note};
use super::{parse, source};
use crate::pgutil::{self, not_null, raise};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

type Row = (
    i64,
    Option<String>,
    String,
    String,
    String,
    String,
    String,
    String,
);

/// How long the import waits for a row lock (a job's, or a pg_cron job's).
const LOCK_TIMEOUT: &std::ffi::CStr = c"5s";

const SECRETS_HINT: &str =
    "settings_as_secrets lists dotted settings such as '{app.settings.service_role_key}'.";

/// Imports pg_cron's jobs (see the README, "Moving from pg_cron").
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::type_complexity)]
fn import_pg_cron(
    dry_run: default!(Option<bool>, true),
    disable_source: default!(Option<bool>, false),
    settings_as_secrets: default!(Option<Vec<Option<String>>>, "'{}'"),
) -> TableIterator<
    'static,
    (
        name!(source_jobid, i64),
        name!(source_jobname, Option<String>),
        name!(job_name, String),
        name!(owner, String),
        name!(database, String),
        name!(kind, String),
        name!(action, String),
        name!(note, String),
    ),
> {
    let dry_run = not_null(
        dry_run,
        "dry_run",
        "Pass true (report only) or false (import).",
    );
    let disable_source = not_null(
        disable_source,
        "disable_source",
        "Pass true to set the imported pg_cron jobs inactive, or false.",
    );
    let secrets = secret_settings(not_null(
        settings_as_secrets,
        "settings_as_secrets",
        SECRETS_HINT,
    ));
    if !pgutil::outer_is_superuser() {
        raise(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            "only superusers may call pulse.import_pg_cron",
            "It creates jobs for pg_cron's job owners and reads their settings: run it as a superuser (as a migration would).",
        );
    }
    pgutil::require_scheduler_database();
    let work = move || {
        let rows = import(disable_source, &secrets, dry_run);
        if disable_source {
            let ids: Vec<i64> = rows.iter().filter(|r| r.6 != "skip").map(|r| r.0).collect();
            source::disable(&ids);
        }
        rows
    };
    // as the extension's owner with search_path pinned (no operator or function of the caller's
    // path is ever resolved); each job is then written as its owner
    let rows = pgutil::privileged(move || {
        // a job whose rows another transaction holds locked is skipped after this long (the
        // whole call fails if that is a pg_cron job to set inactive), instead of waiting for it
        unsafe { pgutil::set_local_guc(c"lock_timeout", LOCK_TIMEOUT) };
        if dry_run {
            crate::xact::rolled_back(work)
        } else {
            work()
        }
    });
    TableIterator::new(rows)
}

/// `settings_as_secrets`, checked: dotted names, lower case, and no two that become one secret.
fn secret_settings(list: Vec<Option<String>>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in list {
        let s = not_null(s, "an element of settings_as_secrets", SECRETS_HINT).to_ascii_lowercase();
        let secret = command::secret_name(&s);
        if !crate::http::template::valid_setting_name(&s)
            || !crate::http::template::valid_secret_name(&secret)
        {
            pgutil::invalid(
                format!("invalid setting \"{s}\" in settings_as_secrets"),
                SECRETS_HINT,
            );
        }
        if let Some(other) = out
            .iter()
            .find(|o| **o != s && command::secret_name(o) == secret)
        {
            pgutil::invalid(
                format!("settings \"{other}\" and \"{s}\" would both become secret \"{secret}\""),
                "A setting becomes the secret named after its last part: import them in two calls, or rename one setting.",
            );
        }
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

fn import(disable_source: bool, secrets: &[String], dry_run: bool) -> Vec<Row> {
    let tz = source::timezone();
    let here = pgutil::current_database_name();
    // (owner, job name) -> the pg_cron job that became it
    let mut taken: std::collections::HashMap<(String, String), i64> = Default::default();
    source::jobs()
        .into_iter()
        .map(|j| {
            let name = match j.jobname.as_deref() {
                Some(n) if !n.is_empty() => n.to_string(),
                _ => format!("pg_cron_{}", j.jobid),
            };
            let (kind, action, note) = match taken.get(&(j.username.clone(), name.clone())) {
                // an unnamed job N and one named pg_cron_N of the same owner
                Some(first) => (
                    "sql",
                    "skip",
                    format!("pg_cron job {first} of the same owner becomes pg_pulse job \"{name}\" already: give this one another name in pg_cron (cron.alter_job or cron.schedule with a name), then import again."),
                ),
                None => {
                    taken.insert((j.username.clone(), name.clone()), j.jobid);
                    parse::scratch(|| one(&j, &name, &tz, &here, secrets, dry_run))
                }
            };
            let note = if disable_source && action != "skip" {
                format!("{note} The pg_cron job is set inactive.")
            } else {
                note
            };
            (
                j.jobid,
                j.jobname.clone(),
                name,
                j.username.clone(),
                j.database.clone(),
                kind.to_string(),
                action.to_string(),
                note,
            )
        })
        .collect()
}

/// What one pg_cron job becomes: (kind, action, note).
fn one(
    j: &source::CronJob,
    name: &str,
    tz: &str,
    here: &str,
    secrets: &[String],
    dry_run: bool,
) -> (&'static str, &'static str, String) {
    let translation = match parse::statements(&j.command) {
        Ok(stmts) => {
            let t = command::translate(&stmts, &|s| secrets.iter().any(|x| x.as_str() == s));
            (t, Some(stmts))
        }
        Err(e) => (
            Translation::Sql {
                why: format!("PostgreSQL cannot parse it ({e})"),
            },
            None,
        ),
    };
    let kind = match translation.0 {
        Translation::Http { .. } => "http",
        Translation::Sql { .. } => "sql",
    };
    let Some(owner) = role(&j.username) else {
        return (
            kind,
            "skip",
            format!(
                "Role \"{}\" does not exist: create it (CREATE ROLE ... LOGIN), then import again.",
                j.username
            ),
        );
    };
    if !has_pulse_usage(owner) {
        // the job would be paused at its first run (see the README, Permissions)
        return (
            kind,
            "skip",
            format!(
                "Role \"{0}\" has no USAGE on schema pulse, which an owner of jobs needs: GRANT USAGE ON SCHEMA pulse TO {1}; then import again.",
                j.username,
                pgutil::quote_ident(&j.username)
            ),
        );
    }
    let existing = existing(owner, name);
    if let Some((_, _, false, _)) = existing {
        return (
            kind,
            "skip",
            format!(
                "A pg_pulse job \"{name}\" of role \"{}\" exists and was not imported from pg_cron: rename it (pulse.alter_job(..., new_name => ...)) or unschedule it, then import again.",
                j.username
            ),
        );
    }
    let db_oid = database_oid(&j.database);
    let mut notes = Vec::new();
    let (command_text, http, database) = match &translation.0 {
        Translation::Http {
            function,
            request,
            settings,
        } => {
            notes.push(format!(
                "An HTTP job now (the command was one {function} call)"
            ));
            for u in settings {
                match setting_note(owner, db_oid, &j.database, here, u, &j.username) {
                    Ok(Some(n)) => notes.push(n),
                    Ok(None) => {}
                    Err(n) => return (kind, "skip", n),
                }
            }
            (None, Some(request.clone()), None)
        }
        Translation::Sql { why } => {
            notes.push(sql_note(
                why,
                translation.1.as_deref(),
                j.database == here,
                &j.username,
                &j.database,
            ));
            let db = (j.database != here).then(|| j.database.clone());
            (Some(j.command.clone()), None, db)
        }
    };
    let enabled = existing.as_ref().map_or(j.active, |e| e.3);
    let before = existing.as_ref().map(|e| e.1.clone());
    let settings: Vec<SettingUse> = match &translation.0 {
        Translation::Http { settings, .. } => settings.clone(),
        _ => Vec::new(),
    };
    let schedule = j.schedule.clone();
    let (name_owned, tz_owned, jobid) = (name.to_string(), tz.to_string(), j.jobid);
    let source_db = j.database.clone();
    let created = crate::xact::try_subxact(move || {
        parse::scratch(move || {
            // (as the catalog's owner: the secret is written for the owner, by OID)
            for u in &settings {
                if let Some(secret) = &u.secret {
                    copy_secret(owner, db_oid, &source_db, &u.setting, secret, dry_run);
                }
            }
            as_role(owner, || {
                super::super::define::schedule_job(
                    Some(&name_owned),
                    Some(&schedule),
                    command_text.as_deref(),
                    Some(&tz_owned),
                    Some(enabled),
                    None,
                    Some("skip"),
                    Some(&format!("imported from pg_cron job {jobid}")),
                    None,
                    None,
                    None,
                    None,
                    http.map(pgrx::JsonB),
                    database.as_deref(),
                )
            })
        })
    });
    let job_id = match created {
        Ok(id) => id,
        Err((code, _)) if code == PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE => {
            return (
                kind,
                "skip",
                "Another transaction holds its pg_pulse job (or the owner's secret) locked, and the import waits at most 5 seconds: import again once it has finished.".into(),
            )
        }
        Err((_, e)) => {
            return (
                kind,
                "skip",
                format!("It cannot be imported: {e} (fix it in pg_cron, then import again)"),
            )
        }
    };
    remember(job_id, j.jobid);
    let action = match before {
        None => "create",
        Some(ctid) if Some(&ctid) == existing_ctid(job_id).as_ref() => "unchanged",
        Some(_) => "update",
    };
    if !j.active && action == "create" {
        notes.push("created disabled, as the pg_cron job is inactive".into());
    }
    let mut note = notes.join("; ");
    note.push('.');
    (kind, action, note)
}

/// The note of a command that stays SQL: why, and what to do when it sends HTTP requests.
fn sql_note(
    why: &str,
    stmts: Option<&[command::Stmt]>,
    here: bool,
    role: &str,
    database: &str,
) -> String {
    let (net, functions) = stmts.map(command::calls).unwrap_or_default();
    let to_do = "pulse.schedule_job(name, schedule, http => pulse.http_request(...)) sends a request as an HTTP job (README, \"From pg_net and pg_cron\"); until then the command needs pg_net";
    if net > 1 {
        return format!("Kept as a SQL job: it makes {net} calls of net.http_*; schedule one HTTP job per call: {to_do}");
    }
    if net == 1 {
        return format!(
            "Kept as a SQL job: its net.http_* call cannot become an HTTP job ({why}); {to_do}"
        );
    }
    let helpers: Vec<String> = if here {
        functions.iter().filter_map(|f| http_helper(f)).collect()
    } else {
        Vec::new()
    };
    if !helpers.is_empty() {
        return format!(
            "Kept as a SQL job: it calls {}, whose body calls net.http_*: make that request an HTTP job and drop the helper; {to_do}",
            helpers.join(", ")
        );
    }
    format!("A SQL job, run in a session of role \"{role}\" in database \"{database}\" as pg_cron ran it")
}

/// `name()` when a function of that name (in that schema, if qualified) has a body that calls
/// net.http_* (a `trigger_*()` helper); a note only, so a plain text search of the body.
fn http_helper(name: &[String]) -> Option<String> {
    let (schema, f) = match name {
        [s, f] => (Some(s.clone()), f.clone()),
        [f] => (None, f.clone()),
        _ => return None,
    };
    Spi::get_one_with_args::<String>(
        "SELECT p.oid::pg_catalog.regprocedure::text FROM pg_catalog.pg_proc p
           JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
          WHERE p.proname = $1 AND ($2::text IS NULL OR n.nspname = $2)
            AND p.prosrc ~ 'net\\.http_(get|post|delete)' LIMIT 1",
        &[f.into(), schema.into()],
    )
    .ok()
    .flatten()
}

/// A role's OID.
fn role(name: &str) -> Option<pg_sys::Oid> {
    Spi::get_one_with_args::<pg_sys::Oid>(
        "SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $1",
        &[name.into()],
    )
    .ok()
    .flatten()
}

fn has_pulse_usage(owner: pg_sys::Oid) -> bool {
    Spi::get_one_with_args::<bool>(
        "SELECT pg_catalog.has_schema_privilege($1, 'pulse', 'USAGE')",
        &[owner.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false)
}

fn database_oid(name: &str) -> pg_sys::Oid {
    Spi::get_one_with_args::<pg_sys::Oid>(
        "SELECT oid FROM pg_catalog.pg_database WHERE datname = $1",
        &[name.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(pg_sys::Oid::INVALID)
}

/// The owner's job of that name: (job_id, its row version, imported before, enabled).
fn existing(owner: pg_sys::Oid, name: &str) -> Option<(i64, String, bool, bool)> {
    Spi::connect(|c| {
        let t = c
            .select(
                "SELECT j.job_id, j.ctid::text,
                        EXISTS (SELECT 1 FROM pulse.job_import i WHERE i.job_id = j.job_id), j.enabled
                   FROM pulse.job j WHERE j.owner = $1 AND j.job_name = $2",
                None,
                &[owner.into(), name.into()],
            )
            .ok()?;
        let r = t.first();
        Some((
            r.get::<i64>(1).ok()??,
            r.get::<String>(2).ok()??,
            r.get::<bool>(3).ok()??,
            r.get::<bool>(4).ok()??,
        ))
    })
}

fn existing_ctid(job_id: i64) -> Option<String> {
    Spi::get_one_with_args::<String>(
        "SELECT ctid::text FROM pulse.job WHERE job_id = $1",
        &[job_id.into()],
    )
    .ok()
    .flatten()
}

fn remember(job_id: i64, cron_jobid: i64) {
    Spi::run_with_args(
        "INSERT INTO pulse.job_import (job_id, cron_jobid) VALUES ($1, $2)
         ON CONFLICT (job_id) DO UPDATE SET cron_jobid = EXCLUDED.cron_jobid, imported_at = now()
          WHERE pulse.job_import.cron_jobid <> EXCLUDED.cron_jobid",
        &[job_id.into(), cron_jobid.into()],
    )
    .unwrap_or_else(|e| pgutil::invalid(format!("could not record the import: {e}"), ""));
}

/// Runs `f` with `role` as the current user (as SET ROLE would); an error inside restores the
/// user with the subtransaction's abort.
fn as_role<R>(role: pg_sys::Oid, f: impl FnOnce() -> R) -> R {
    let (mut user, mut ctx) = (pg_sys::Oid::INVALID, 0i32);
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut user, &mut ctx);
        pg_sys::SetUserIdAndSecContext(role, ctx | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32);
    }
    let r = f();
    unsafe { pg_sys::SetUserIdAndSecContext(user, ctx) };
    r
}
