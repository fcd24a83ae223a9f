//! `pulse.set_secret`, `pulse.drop_secret`: values for `{{secret:NAME}}` placeholders. A secret
//! belongs to the role that set it; its value is readable by no role (the table has no grants)
//! and only the workers resolve it, for that role's own requests.

use super::template::valid_secret_name;
use crate::pgutil::{self, invalid, privileged, raise};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

const NAME_HINT: &str =
    "A secret name is letters, digits, _ and - (at most 128), e.g. 'service_role_key'.";
const MAX_VALUE: usize = 65_536;

/// Inside the calling transaction, errors no longer log the statement that caused them (it holds
/// the secret's value); the setting returns to normal at the end of the call.
fn hide_statement_from_error_log() {
    unsafe { pgutil::set_local_guc(c"log_min_error_statement", c"panic") };
}

#[pg_extern(volatile, parallel_unsafe)]
fn set_secret(name: Option<&str>, value: Option<&str>) -> bool {
    privileged(|| {
        hide_statement_from_error_log();
        let name = name.unwrap_or_else(|| {
            raise(
                PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                "name must not be NULL",
                NAME_HINT,
            )
        });
        if !valid_secret_name(name) {
            invalid(format!("invalid secret name \"{name}\""), NAME_HINT);
        }
        let value = value.unwrap_or_else(|| {
            raise(
                PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                "the secret's value must not be NULL",
                "Remove a secret with pulse.drop_secret(name).",
            )
        });
        if value.is_empty() || value.len() > MAX_VALUE {
            invalid(
                format!("the value of secret \"{name}\" must be 1 to {MAX_VALUE} bytes"),
                "Store the key or token itself.",
            );
        }
        // true when created, false when an existing secret was replaced
        Spi::get_one_with_args::<bool>(
            "INSERT INTO pulse.secret (owner, name, value) VALUES ($1, $2, $3)
             ON CONFLICT (owner, name) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
             RETURNING xmax = 0",
            &[
                pgutil::current_user_oid_outer().into(),
                name.into(),
                value.into(),
            ],
        )
        .ok()
        .flatten()
        .unwrap_or(false)
    })
}

#[pg_extern(volatile, parallel_unsafe)]
fn drop_secret(name: Option<&str>) -> bool {
    privileged(|| {
        let Some(name) = name else { return false };
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
