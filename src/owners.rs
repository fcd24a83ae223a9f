//! Pure rules about job owners and the databases jobs run in (no pgrx): what a `database =>`
//! argument means, and the messages pg_pulse raises when a role that owns jobs or secrets is
//! dropped. The PostgreSQL side is in `jobs` (the SQL API) and `jobs::roles` (the utility hook).

/// What a `database =>` argument asks for: NULL or '' mean the database pg_pulse lives in, and so
/// does that database's own name (all stored as NULL).
#[derive(Debug, PartialEq, Eq)]
pub enum DatabaseChoice<'a> {
    /// The database pg_pulse lives in (stored as NULL).
    Here,
    /// Another database, by name.
    Other(&'a str),
}

pub fn database_choice<'a>(arg: Option<&'a str>, here: &str) -> DatabaseChoice<'a> {
    match arg {
        None | Some("") => DatabaseChoice::Here,
        Some(d) if d == here => DatabaseChoice::Here,
        Some(d) => DatabaseChoice::Other(d),
    }
}

fn plural(n: i64, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

/// The message of the error refusing `DROP ROLE role` while it owns jobs or secrets (None when it
/// owns neither).
pub fn owns_message(role: &str, jobs: i64, secrets: i64) -> Option<String> {
    let what = match (jobs > 0, secrets > 0) {
        (false, false) => return None,
        (true, false) => plural(jobs, "pg_pulse job"),
        (false, true) => plural(secrets, "pg_pulse secret"),
        (true, true) => format!(
            "{} and {}",
            plural(jobs, "pg_pulse job"),
            plural(secrets, "secret")
        ),
    };
    Some(format!("role \"{role}\" owns {what}"))
}

/// Its HINT; `quoted` is the role name quoted as an identifier.
pub fn owns_hint(quoted: &str) -> String {
    format!(
        "Remove them as that role (pulse.unschedule_job, pulse.drop_secret), or move them with REASSIGN OWNED BY {quoted} TO another_role, or remove them with DROP OWNED BY {quoted}: pg_pulse follows both."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_argument() {
        assert_eq!(database_choice(None, "postgres"), DatabaseChoice::Here);
        assert_eq!(database_choice(Some(""), "postgres"), DatabaseChoice::Here);
        assert_eq!(
            database_choice(Some("postgres"), "postgres"),
            DatabaseChoice::Here
        );
        assert_eq!(
            database_choice(Some("Postgres"), "postgres"),
            DatabaseChoice::Other("Postgres")
        );
        assert_eq!(
            database_choice(Some("app"), "postgres"),
            DatabaseChoice::Other("app")
        );
    }

    #[test]
    fn drop_role_messages() {
        assert_eq!(owns_message("r", 0, 0), None);
        assert_eq!(
            owns_message("r", 1, 0).unwrap(),
            "role \"r\" owns 1 pg_pulse job"
        );
        assert_eq!(
            owns_message("r", 3, 0).unwrap(),
            "role \"r\" owns 3 pg_pulse jobs"
        );
        assert_eq!(
            owns_message("r", 0, 2).unwrap(),
            "role \"r\" owns 2 pg_pulse secrets"
        );
        assert_eq!(
            owns_message("r", 2, 1).unwrap(),
            "role \"r\" owns 2 pg_pulse jobs and 1 secret"
        );
        let h = owns_hint("\"R x\"");
        assert!(h.contains("REASSIGN OWNED BY \"R x\" TO") && h.contains("DROP OWNED BY \"R x\""));
        assert!(h.contains("pulse.unschedule_job"));
    }
}
