//! The settings an imported HTTP job reads: their values as a session of the job's owner would
//! see them, what the import's note says about them, and copying one into the owner's secret.

use super::command::SettingUse;
use crate::pgutil;
use pgrx::prelude::*;

/// The value of a setting as a session of `owner` in database `db` starts with it: ALTER ROLE /
/// ALTER DATABASE settings, else the server's configuration files; never a setting only
/// superusers may read, for another role (as the HTTP worker fills in placeholders).
pub(super) fn setting_value(owner: pg_sys::Oid, db: pg_sys::Oid, name: &str) -> Option<String> {
    let cname = std::ffi::CString::new(name).ok()?;
    let flags = unsafe { pg_sys::GetConfigOptionFlags(cname.as_ptr(), true) };
    if flags & pg_sys::GUC_SUPERUSER_ONLY as i32 != 0 && !unsafe { pg_sys::superuser_arg(owner) } {
        return None;
    }
    pgutil::stored_setting(owner, db, name).or_else(|| {
        Spi::get_one_with_args::<String>(
            "SELECT setting FROM pg_catalog.pg_file_settings
              WHERE pg_catalog.lower(name) = pg_catalog.lower($1) AND error IS NULL
              ORDER BY seqno DESC LIMIT 1",
            &[name.into()],
        )
        .ok()
        .flatten()
    })
}

/// What a note says about a setting the request reads; Err: the job is skipped.
pub(super) fn setting_note(
    owner: pg_sys::Oid,
    db: pg_sys::Oid,
    db_name: &str,
    here: &str,
    u: &SettingUse,
    role: &str,
) -> Result<Option<String>, String> {
    let in_source = setting_value(owner, db, &u.setting);
    if let Some(secret) = &u.secret {
        return match in_source {
            Some(_) => Ok(Some(format!(
                "{} is sent as secret \"{secret}\" of role \"{role}\"",
                u.setting
            ))),
            None => Err(format!(
                "Setting {} has no value for role \"{role}\" in database \"{db_name}\", so it cannot be copied into a secret: set it, or leave it out of settings_as_secrets.",
                u.setting
            )),
        };
    }
    let here_oid = unsafe { pg_sys::MyDatabaseId };
    let sent = setting_value(owner, here_oid, &u.setting);
    Ok(match (&in_source, &sent) {
        (_, None) => Some(format!(
            "{{{{setting:{}}}}} has no value for role \"{role}\" in database \"{here}\", where the HTTP worker fills it in: the job fails until it is set (ALTER DATABASE ... SET), or pass it in settings_as_secrets",
            u.setting
        )),
        (Some(a), Some(b)) if a != b => Some(format!(
            "{} differs between database \"{db_name}\" and \"{here}\", where the HTTP worker fills it in: check it, or pass it in settings_as_secrets",
            u.setting
        )),
        _ => None,
    })
}

/// Copies a setting's value into the owner's secret (checked only, in a dry run); a secret that
/// already holds the value is left as it is.
pub(super) fn copy_secret(
    owner: pg_sys::Oid,
    db: pg_sys::Oid,
    db_name: &str,
    setting: &str,
    secret: &str,
    dry_run: bool,
) {
    let Some(value) = setting_value(owner, db, setting) else {
        pgutil::invalid(
            format!("setting {setting} has no value in database \"{db_name}\""),
            "Set it, or leave it out of settings_as_secrets.",
        );
    };
    crate::http::secrets::check(secret, &value);
    if dry_run {
        return;
    }
    if crate::http::secrets::open_secret(owner, secret)
        .ok()
        .flatten()
        .as_deref()
        != Some(&value)
    {
        crate::http::secrets::store(owner, secret, &value);
    }
}
