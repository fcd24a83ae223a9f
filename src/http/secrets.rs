//! `pulse.set_secret`, `pulse.set_secret_from_file`, `pulse.drop_secret`: values for
//! `{{secret:NAME}}` placeholders. A secret belongs to the role that set it. `pulse.secret` holds
//! its value sealed (`crate::http::seal`: XChaCha20-Poly1305 under the cluster's key in
//! `PGDATA/pg_pulse/secret.key`, bound to owner and name); the table has no grants, and only the
//! HTTP worker opens a value, for that role's own requests ([`open_secret`]). REASSIGN OWNED
//! re-seals under the new owner ([`reassign`]).

use super::keyfile;
use super::seal::{self, Key};
use super::template::valid_secret_name;
use crate::pgutil::{self, invalid, not_null, privileged, raise};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::sync::OnceLock;

const NAME_HINT: &str =
    "A secret name is letters, digits, _ and - (at most 128), e.g. 'service_role_key'.";
const MIN_VALUE: usize = 8;
const MAX_VALUE: usize = 65_536;

/// The key, once read in this process.
static KEY: OnceLock<Key> = OnceLock::new();

fn data_dir() -> std::path::PathBuf {
    unsafe {
        std::ffi::CStr::from_ptr(pg_sys::DataDir)
            .to_string_lossy()
            .into_owned()
            .into()
    }
}

/// The key to seal with: created on first use.
fn sealing_key() -> Key {
    if let Some(k) = KEY.get() {
        return k.clone();
    }
    match keyfile::load_or_create(&data_dir()) {
        Ok(k) => KEY.get_or_init(|| k).clone(),
        Err(e) => raise(
            PgSqlErrorCode::ERRCODE_IO_ERROR,
            format!("pg_pulse cannot seal secrets: {e}"),
            format!("The key file is {} in the data directory, readable and writable only by the server's OS user.", keyfile::KEY_FILE),
        ),
    }
}

/// The key to open with; never creates one (a missing key cannot open what was sealed).
fn opening_key() -> Result<Key, String> {
    if let Some(k) = KEY.get() {
        return Ok(k.clone());
    }
    match keyfile::load(&data_dir())? {
        Some(k) => Ok(KEY.get_or_init(|| k).clone()),
        None => Err(format!(
            "the key file {} is missing from the data directory (after pg_upgrade or a restore, copy it from the old data directory; otherwise set the secret again)",
            keyfile::KEY_FILE
        )),
    }
}

/// Checks and seals a value, and stores it as `owner`'s secret `name`; true when created.
pub(crate) fn store(owner: pg_sys::Oid, name: &str, value: &str) -> bool {
    check(name, value);
    if unsafe { pg_sys::RecoveryInProgress() } {
        // (and no key file is created on a standby: it would differ from the primary's)
        raise(
            PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION,
            "cannot set a secret on a standby",
            "Set secrets on the primary.",
        );
    }
    let sealed = seal::seal(&sealing_key(), owner.to_u32(), name, value)
        .unwrap_or_else(|e| raise(PgSqlErrorCode::ERRCODE_IO_ERROR, e, ""));
    // true when created, false when an existing secret was replaced
    Spi::get_one_with_args::<bool>(
        "INSERT INTO pulse.secret (owner, name, sealed) VALUES ($1, $2, $3)
         ON CONFLICT (owner, name) DO UPDATE SET sealed = EXCLUDED.sealed, updated_at = now()
         RETURNING xmax = 0",
        &[owner.into(), name.into(), sealed.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false)
}

/// An ERROR (22023 with a HINT) unless `value` may be stored as secret `name`.
pub(crate) fn check(name: &str, value: &str) {
    if !valid_secret_name(name) {
        invalid(format!("invalid secret name \"{name}\""), NAME_HINT);
    }
    if value.len() < MIN_VALUE {
        invalid(
            format!("the value of secret \"{name}\" is shorter than {MIN_VALUE} bytes"),
            "Store the whole key or token: a short value is easy to guess and cannot be scrubbed reliably from what servers echo.",
        );
    }
    if value.len() > MAX_VALUE {
        invalid(
            format!("the value of secret \"{name}\" is longer than {MAX_VALUE} bytes"),
            "Store the key or token itself.",
        );
    }
}

#[pg_extern(volatile, parallel_unsafe)]
fn set_secret(name: Option<&str>, value: Option<&str>) -> bool {
    privileged(|| {
        let name = not_null(name, "name", NAME_HINT);
        let value = not_null(
            value,
            "the secret's value",
            "Remove a secret with pulse.drop_secret(name).",
        );
        store(pgutil::current_user_oid_outer(), name, value)
    })
}

#[pg_extern(volatile, parallel_unsafe)]
fn set_secret_from_file(
    name: Option<&str>,
    path: Option<&str>,
    owner: default!(Option<&str>, "NULL"),
) -> bool {
    privileged(|| {
        if !pgutil::outer_is_superuser() {
            raise(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                "only superusers may call pulse.set_secret_from_file",
                "The file is read by the server's OS user. Ask a superuser, or use pulse.set_secret(name, value) (see the README about log_statement).",
            );
        }
        let name = not_null(name, "name", NAME_HINT);
        let path = not_null(
            path,
            "path",
            "Give the path of a file the server can read, absolute or relative to the data directory.",
        );
        let owner = match owner {
            None => pgutil::current_user_oid_outer(),
            Some(r) => Spi::get_one_with_args::<pg_sys::Oid>(
                "SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = $1",
                &[r.into()],
            )
            .ok()
            .flatten()
            .unwrap_or_else(|| {
                raise(
                    PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                    format!("role \"{r}\" does not exist"),
                    "owner => is the name of the role whose secret this is (default: you).",
                )
            }),
        };
        let full = data_dir().join(path);
        let fail = |code: PgSqlErrorCode, why: String| -> ! {
            raise(
                code,
                format!("could not read secret file \"{}\": {why}", full.display()),
                "The file must be readable by the server's OS user and hold the value alone (one trailing newline is removed).",
            )
        };
        let io = |e: std::io::Error| -> ! {
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                PgSqlErrorCode::ERRCODE_UNDEFINED_FILE
            } else {
                PgSqlErrorCode::ERRCODE_IO_ERROR
            };
            fail(code, e.to_string())
        };
        let meta = std::fs::metadata(&full).unwrap_or_else(|e| io(e));
        if !meta.is_file() || meta.len() > MAX_VALUE as u64 + 2 {
            fail(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("it is not a regular file of at most {MAX_VALUE} bytes"),
            );
        }
        let bytes = std::fs::read(&full).unwrap_or_else(|e| io(e));
        let value = seal::value_from_file(bytes).unwrap_or_else(|why| {
            fail(
                PgSqlErrorCode::ERRCODE_CHARACTER_NOT_IN_REPERTOIRE,
                why.into(),
            )
        });
        store(owner, name, &value)
    })
}

#[pg_extern(volatile, parallel_unsafe)]
fn drop_secret(name: Option<&str>) -> bool {
    privileged(|| {
        let name = not_null(
            name,
            "name",
            "Give the name of one of your secrets (see pulse.secrets).",
        );
        let gone = Spi::get_one_with_args::<bool>(
            "WITH d AS (DELETE FROM pulse.secret WHERE owner = $1 AND name = $2 RETURNING 1)
             SELECT count(*) > 0 FROM d",
            &[pgutil::current_user_oid_outer().into(), name.into()],
        )
        .ok()
        .flatten()
        .unwrap_or(false);
        if !gone {
            notice!("secret \"{name}\" does not exist, skipping");
        }
        gone
    })
}

/// `owner`'s secret `name` for the HTTP worker: None if there is none, Err (why, never a value)
/// if its stored form does not open as that role's secret of that name.
pub(crate) fn open_secret(owner: pg_sys::Oid, name: &str) -> Result<Option<String>, String> {
    let sealed = Spi::get_one_with_args::<Vec<u8>>(
        // (one row whether or not there is a secret: NULL when there is none)
        "SELECT (SELECT sealed FROM pulse.secret WHERE owner = $1 AND name = $2)",
        &[owner.into(), name.into()],
    )
    .map_err(|e| format!("reading it failed: {e}"))?;
    let Some(sealed) = sealed else {
        return Ok(None);
    };
    let key = opening_key()?;
    seal::open(&key, owner.to_u32(), name, &sealed)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// REASSIGN OWNED: `from`'s secrets become `to`'s, each re-sealed for its new owner. A stored
/// form that does not open as `from`'s is moved as it is (it opens for nobody).
pub(crate) fn reassign(from: pg_sys::Oid, to: pg_sys::Oid) -> Result<(), String> {
    let rows: Vec<(String, Vec<u8>)> = Spi::connect(|c| {
        c.select(
            "SELECT name, sealed FROM pulse.secret WHERE owner = $1 ORDER BY name",
            None,
            &[from.into()],
        )
        .map(|t| {
            t.filter_map(|r| Some((r.get::<String>(1).ok()??, r.get::<Vec<u8>>(2).ok()??)))
                .collect()
        })
    })
    .map_err(|e| e.to_string())?;
    let key = if rows.is_empty() {
        None
    } else {
        opening_key().ok()
    };
    for (name, sealed) in rows {
        let moved = match key
            .as_ref()
            .and_then(|k| seal::open(k, from.to_u32(), &name, &sealed).ok())
        {
            Some(v) => seal::seal(key.as_ref().unwrap(), to.to_u32(), &name, &v)?,
            None => sealed,
        };
        Spi::run_with_args(
            "UPDATE pulse.secret SET owner = $2, sealed = $4, updated_at = now()
              WHERE owner = $1 AND name = $3",
            &[from.into(), to.into(), name.as_str().into(), moved.into()],
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Used once by the upgrade script from 0.3.0 (`ALTER COLUMN value TYPE bytea USING ...`), which
/// creates and drops its SQL function: it seals a plaintext value of 0.3.0 (no length rules).
#[pg_extern(sql = false, strict, volatile, parallel_unsafe)]
fn seal_secret_for_upgrade(owner: pg_sys::Oid, name: &str, value: &str) -> Vec<u8> {
    seal::seal(&sealing_key(), owner.to_u32(), name, value)
        .unwrap_or_else(|e| raise(PgSqlErrorCode::ERRCODE_IO_ERROR, e, ""))
}
