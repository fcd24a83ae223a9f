//! Role lifecycle: a `ProcessUtility_hook` that makes `DROP ROLE`, `REASSIGN OWNED` and
//! `DROP OWNED` see pg_pulse's jobs and secrets, which PostgreSQL's dependency tracking does not
//! know about (`pulse.job.owner` is a regrole, `pulse.secret.owner` an oid).
//!
//! * `DROP ROLE r` while `r` owns jobs or secrets fails (2BP01), like a role that owns tables;
//! * `REASSIGN OWNED BY a TO b` moves `a`'s jobs (with their statistics and run history) and
//!   secrets to `b`; a name `b` already uses fails (42710);
//! * `DROP OWNED BY a` removes `a`'s jobs (queued runs are cancelled, history stays) and secrets.
//!
//! PostgreSQL's own processing runs first, so its privilege checks (on the roles named) come
//! before anything pg_pulse does, and pg_pulse's changes commit or roll back with the statement.
//! Only in a database where pg_pulse is installed; elsewhere these statements are not looked at.

use crate::owners;
use crate::pgutil::{self, privileged, raise};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::{pg_sys, PgLogLevel, PgSqlErrorCode};
use std::ffi::c_char;

static mut PREV_HOOK: pg_sys::ProcessUtility_hook_type = None;

/// Installs the hook (from `_PG_init`), chaining the previous one.
pub fn install() {
    // SAFETY: _PG_init runs once per backend, on the main thread, before any statement
    unsafe {
        PREV_HOOK = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(process_utility);
    }
}

/// A role named by the statement: its OID and name, resolved before PostgreSQL processes it
/// (after a DROP ROLE neither can be looked up any more).
#[derive(Clone)]
struct Role {
    oid: pg_sys::Oid,
    name: String,
}

enum Follow {
    DropRole(Vec<Role>),
    Reassign { from: Vec<Role>, to: Role },
    DropOwned(Vec<Role>),
}

unsafe extern "C-unwind" {
    /// PostgreSQL's own processing, called without pgrx's error guard: an ERROR in any utility
    /// statement of the database passes through this hook, and must reach the client exactly
    /// as PostgreSQL raised it (not turned into a Rust panic and re-raised).
    #[link_name = "standard_ProcessUtility"]
    fn standard_process_utility(
        pstmt: *mut pg_sys::PlannedStmt,
        query_string: *const c_char,
        read_only_tree: bool,
        context: pg_sys::ProcessUtilityContext::Type,
        params: pg_sys::ParamListInfo,
        query_env: *mut pg_sys::QueryEnvironment,
        dest: *mut pg_sys::DestReceiver,
        qc: *mut pg_sys::QueryCompletion,
    );
}

/// The hook. Its own frame holds nothing to drop (raw pointers only), so an ERROR raised by
/// PostgreSQL's processing may jump straight over it, as over a C extension's hook; what pg_pulse
/// does before and after runs in guarded functions. (When the statement fails, the small
/// description of what to follow is not freed: only for these three statements.)
#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn process_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    let follow = before(pstmt);
    match PREV_HOOK {
        Some(prev) => prev(
            pstmt,
            query_string,
            read_only_tree,
            context,
            params,
            query_env,
            dest,
            qc,
        ),
        None => standard_process_utility(
            pstmt,
            query_string,
            read_only_tree,
            context,
            params,
            query_env,
            dest,
            qc,
        ),
    }
    if !follow.is_null() {
        after(follow);
    }
}

/// What the statement will need from pg_pulse, found before PostgreSQL processes it.
#[pg_guard]
unsafe extern "C-unwind" fn before(pstmt: *mut pg_sys::PlannedStmt) -> *mut Follow {
    match classify(pstmt) {
        Some(f) => Box::into_raw(Box::new(f)),
        None => std::ptr::null_mut(),
    }
}

/// pg_pulse's part, once PostgreSQL has processed the statement (in the same transaction).
#[pg_guard]
unsafe extern "C-unwind" fn after(follow: *mut Follow) {
    let f = *Box::from_raw(follow);
    pg_sys::CommandCounterIncrement();
    privileged(move || match f {
        Follow::DropRole(roles) => refuse_if_owner(&roles),
        Follow::Reassign { from, to } => reassign(&from, &to),
        Follow::DropOwned(roles) => drop_owned(&roles),
    });
}

/// The three statements this hook follows, with their roles; None for anything else, and in a
/// database without pg_pulse.
unsafe fn classify(pstmt: *mut pg_sys::PlannedStmt) -> Option<Follow> {
    if pstmt.is_null() || (*pstmt).utilityStmt.is_null() {
        return None;
    }
    let node = (*pstmt).utilityStmt;
    let follow = match (*node).type_ {
        pg_sys::NodeTag::T_DropRoleStmt => {
            let s = node as *mut pg_sys::DropRoleStmt;
            let roles = role_list((*s).roles);
            (!roles.is_empty() && pulse_installed()).then_some(Follow::DropRole(roles))?
        }
        pg_sys::NodeTag::T_ReassignOwnedStmt => {
            let s = node as *mut pg_sys::ReassignOwnedStmt;
            let to = role_spec((*s).newrole)?;
            let from: Vec<Role> = role_list((*s).roles)
                .into_iter()
                .filter(|r| r.oid != to.oid)
                .collect();
            (!from.is_empty() && pulse_installed()).then_some(Follow::Reassign { from, to })?
        }
        pg_sys::NodeTag::T_DropOwnedStmt => {
            let s = node as *mut pg_sys::DropOwnedStmt;
            let roles = role_list((*s).roles);
            (!roles.is_empty() && pulse_installed()).then_some(Follow::DropOwned(roles))?
        }
        _ => return None,
    };
    Some(follow)
}

/// Does this database have pg_pulse's catalog? (catalog cache lookups, no SQL)
fn pulse_installed() -> bool {
    unsafe {
        let nsp = pg_sys::get_namespace_oid(c"pulse".as_ptr(), true);
        nsp != pg_sys::Oid::INVALID
            && pg_sys::get_relname_relid(c"job".as_ptr(), nsp) != pg_sys::Oid::INVALID
            && pg_sys::get_relname_relid(c"secret".as_ptr(), nsp) != pg_sys::Oid::INVALID
    }
}

/// The existing roles of a list of RoleSpec (missing ones and PUBLIC are left to PostgreSQL,
/// which reports them), without duplicates.
unsafe fn role_list(list: *mut pg_sys::List) -> Vec<Role> {
    let mut out: Vec<Role> = Vec::new();
    if list.is_null() {
        return out;
    }
    for i in 0..(*list).length.max(0) as usize {
        let spec = (*(*list).elements.add(i)).ptr_value as *mut pg_sys::RoleSpec;
        if let Some(r) = role_spec(spec) {
            if !out.iter().any(|o| o.oid == r.oid) {
                out.push(r);
            }
        }
    }
    out
}

unsafe fn role_spec(spec: *mut pg_sys::RoleSpec) -> Option<Role> {
    if spec.is_null() || (*spec).roletype == pg_sys::RoleSpecType::ROLESPEC_PUBLIC {
        return None;
    }
    let oid = pg_sys::get_rolespec_oid(spec, true);
    (oid != pg_sys::Oid::INVALID).then(|| Role {
        oid,
        name: pgutil::role_name(oid),
    })
}

fn count(sql: &str, oid: pg_sys::Oid) -> i64 {
    Spi::get_one_with_args::<i64>(sql, &[oid.into()])
        .unwrap_or_else(|e| {
            raise(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                format!("pg_pulse could not read its catalog: {e}"),
                "",
            )
        })
        .unwrap_or(0)
}

/// DROP ROLE: the roles are gone by now (in this transaction); refuse if one owned anything.
fn refuse_if_owner(roles: &[Role]) {
    for r in roles {
        let jobs = count(
            "SELECT count(*) FROM pulse.job WHERE owner::oid = $1",
            r.oid,
        );
        let secrets = count("SELECT count(*) FROM pulse.secret WHERE owner = $1", r.oid);
        if let Some(message) = owners::owns_message(&r.name, jobs, secrets) {
            raise(
                PgSqlErrorCode::ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST,
                message,
                owners::owns_hint(&pgutil::quote_ident(&r.name)),
            );
        }
    }
}

fn catalog_error(what: &str, e: pgrx::spi::SpiError) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        format!("pg_pulse could not {what}: {e}"),
        "",
    )
}

/// REASSIGN OWNED BY from TO to: jobs (with their statistics and runs) and secrets follow.
fn reassign(from: &[Role], to: &Role) {
    let mut moved = 0i64;
    for r in from {
        let clash = Spi::get_one_with_args::<String>(
            "SELECT (SELECT j.job_name FROM pulse.job j
                      WHERE j.owner::oid = $1
                        AND EXISTS (SELECT 1 FROM pulse.job k WHERE k.owner::oid = $2 AND k.job_name = j.job_name)
                      ORDER BY 1 LIMIT 1)",
            &[r.oid.into(), to.oid.into()],
        )
        .unwrap_or_else(|e| catalog_error("read its jobs", e));
        if let Some(job) = clash {
            raise(
                PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT,
                format!(
                    "cannot reassign pg_pulse job \"{job}\" of role \"{}\" to role \"{}\": \"{}\" already owns a job of that name",
                    r.name, to.name, to.name
                ),
                format!(
                    "Rename one of the two first, as its owner: SELECT pulse.alter_job('{}', new_name => '{}_{}'); then repeat REASSIGN OWNED.",
                    job.replace('\'', "''"),
                    job.replace('\'', "''"),
                    r.name.replace('\'', "''")
                ),
            );
        }
        let clash = Spi::get_one_with_args::<String>(
            "SELECT (SELECT s.name FROM pulse.secret s
                      WHERE s.owner = $1
                        AND EXISTS (SELECT 1 FROM pulse.secret t WHERE t.owner = $2 AND t.name = s.name)
                      ORDER BY 1 LIMIT 1)",
            &[r.oid.into(), to.oid.into()],
        )
        .unwrap_or_else(|e| catalog_error("read its secrets", e));
        if let Some(secret) = clash {
            raise(
                PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT,
                format!(
                    "cannot reassign pg_pulse secret \"{secret}\" of role \"{}\" to role \"{}\": \"{}\" already has a secret of that name",
                    r.name, to.name, to.name
                ),
                "Drop one of the two first, as its owner (SELECT pulse.drop_secret(name)), then repeat REASSIGN OWNED.",
            );
        }
        // (data-modifying WITH queries run whether or not they are referenced)
        let (n, ids) = Spi::get_two_with_args::<i64, Vec<i64>>(
            "WITH moved AS (
                 UPDATE pulse.job SET owner = $2::pg_catalog.regrole, updated_at = now()
                  WHERE owner::oid = $1 RETURNING job_id),
             stats AS (
                 UPDATE pulse.job_stats SET owner = $2 WHERE job_id IN (SELECT job_id FROM moved)),
             alerts AS (
                 UPDATE pulse.alert SET owner = $2
                  WHERE owner = $1 AND job_id IN (SELECT job_id FROM moved))
             SELECT count(*), coalesce(array_agg(job_id), '{}') FROM moved",
            &[r.oid.into(), to.oid.into()],
        )
        .unwrap_or_else(|e| catalog_error("reassign jobs and secrets", e));
        // secrets are sealed for their owner: re-sealed for the new one
        if let Err(e) = crate::http::secrets::reassign(r.oid, to.oid) {
            raise(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                format!("pg_pulse could not reassign secrets: {e}"),
                "",
            );
        }
        let ids = ids.unwrap_or_default();
        // the moved jobs' runs follow them
        crate::run::history::reassign(&ids, r.oid, to.oid)
            .unwrap_or_else(|e| catalog_error("reassign jobs and secrets", e));
        moved += n.unwrap_or(0);
    }
    let can_login = Spi::get_one_with_args::<bool>(
        "SELECT (SELECT r.rolcanlogin FROM pg_catalog.pg_roles r WHERE r.oid = $1)",
        &[to.oid.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(true);
    if moved > 0 && !can_login {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_WARNING,
            format!(
                "role \"{}\" now owns {moved} pg_pulse job(s) but cannot log in: they will not run",
                to.name
            ),
            "pg_pulse",
        )
        .set_hint(format!(
            "Jobs run in a session of their owner: ALTER ROLE {} LOGIN;",
            pgutil::quote_ident(&to.name)
        ))
        .report(PgLogLevel::WARNING);
    }
    wake();
}

/// DROP OWNED BY: the roles' jobs go (queued runs cancelled, history kept), and their secrets.
fn drop_owned(roles: &[Role]) {
    for r in roles {
        let gone = Spi::get_one_with_args::<Vec<i64>>(
            "WITH gone AS (DELETE FROM pulse.job WHERE owner::oid = $1 RETURNING job_id),
             secrets AS (DELETE FROM pulse.secret WHERE owner = $1)
             SELECT coalesce(array_agg(job_id), '{}') FROM gone",
            &[r.oid.into()],
        )
        .unwrap_or_else(|e| catalog_error("remove jobs and secrets", e))
        .unwrap_or_default();
        // their queued runs are cancelled (run rows carry the job id, not a reference to it)
        crate::run::finish::cancel_queued(&gone, "the job was removed by DROP OWNED")
            .unwrap_or_else(|e| catalog_error("remove jobs and secrets", e));
    }
    wake();
}

/// Wakes the scheduler at commit (only where it exists: the library was preloaded).
fn wake() {
    if crate::PRELOADED.load(std::sync::atomic::Ordering::Relaxed) {
        crate::worker::wake_scheduler_at_commit();
    }
}
