//! Job definitions, pure (no pgrx): the checks of the jobs API that need no PostgreSQL and the
//! settings a definition gets when the call leaves them out. The shell turns an [`Invalid`] into
//! SQLSTATE 22023 with its hint.

/// An argument the jobs API refuses: the error message and a hint telling what to pass instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub message: String,
    pub hint: &'static str,
}

fn invalid(message: impl Into<String>, hint: &'static str) -> Result<(), Invalid> {
    Err(Invalid {
        message: message.into(),
        hint,
    })
}

pub const NAME_HINT: &str = "Use a short unique name such as 'nightly_ingest'.";
pub const OVERLAP_HINT: &str = "Use overlap => 'skip' (a slot that comes while the previous run is still going is recorded as skipped) or overlap => 'allow'.";
pub const RETRY_HINT: &str =
    "Use max_attempts => 3 (1 to 100; 1 means no retries) and retry_backoff => '10 seconds'.";
pub const ALERT_AFTER_HINT: &str =
    "Alert after this many consecutive failures, e.g. alert_after_failures => 3.";
pub const TIMEOUT_HINT: &str =
    "Pass an interval such as timeout => '5 minutes', or NULL for no timeout.";
pub const ALTER_TIMEOUT_HINT: &str = "Pass timeout => '5 minutes', or '0' to remove the timeout.";

/// Attempts per run of a job created without `max_attempts` (1: no retries).
pub const DEFAULT_MAX_ATTEMPTS: i32 = 1;
/// The first retry backoff of a job created without `retry_backoff`, in microseconds.
pub const DEFAULT_RETRY_BACKOFF_US: i64 = 10_000_000;

/// A job name: 1 to 200 characters (bytes, as the catalog's check counts them), not blank.
pub fn check_name(name: &str) -> Result<(), Invalid> {
    if name.trim().is_empty() || name.len() > 200 {
        return invalid(
            format!("invalid job_name \"{name}\": it must be 1 to 200 characters and not blank"),
            NAME_HINT,
        );
    }
    Ok(())
}

pub fn check_overlap(o: &str) -> Result<(), Invalid> {
    if o != "skip" && o != "allow" {
        return invalid(format!("invalid overlap \"{o}\""), OVERLAP_HINT);
    }
    Ok(())
}

/// `schedule_job` / `schedule_once`: a timeout (`shown` as the caller wrote it, `micros` long)
/// must be positive.
pub fn check_timeout(shown: &str, micros: i64) -> Result<(), Invalid> {
    if micros <= 0 {
        return invalid(
            format!("invalid timeout \"{shown}\": it must be positive"),
            TIMEOUT_HINT,
        );
    }
    Ok(())
}

/// `alter_job`: timeout => '0' removes the timeout (`Ok(false)`), a positive one sets it
/// (`Ok(true)`), a negative one is an error.
pub fn alter_timeout(shown: &str, micros: i64) -> Result<bool, Invalid> {
    if micros < 0 {
        return Err(Invalid {
            message: format!("invalid timeout \"{shown}\": it must not be negative"),
            hint: ALTER_TIMEOUT_HINT,
        });
    }
    Ok(micros != 0)
}

/// Retries: `max_attempts` 1 to 100, `retry_backoff` (in microseconds) positive.
pub fn check_retries(
    max_attempts: Option<i32>,
    backoff_micros: Option<i64>,
) -> Result<(), Invalid> {
    if let Some(n) = max_attempts.filter(|n| !(1..=100).contains(n)) {
        return invalid(
            format!("max_attempts must be between 1 and 100, not {n}"),
            RETRY_HINT,
        );
    }
    if backoff_micros.is_some_and(|b| b <= 0) {
        return invalid("retry_backoff must be a positive interval", RETRY_HINT);
    }
    Ok(())
}

/// `alert_after_failures` must be positive (alter_job's 0, "back to the default", is taken out
/// before this check).
pub fn check_alert_after(after: Option<i32>) -> Result<(), Invalid> {
    if let Some(n) = after.filter(|n| *n <= 0) {
        return invalid(
            format!("alert_after_failures must be positive, not {n}"),
            ALERT_AFTER_HINT,
        );
    }
    Ok(())
}

/// An alert target's `"notify"` channel: a name PostgreSQL's NOTIFY accepts (1 to 63 bytes).
pub fn is_channel_name(c: &str) -> bool {
    !c.is_empty() && c.len() <= 63
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_to_two_hundred_bytes_and_not_blank() {
        assert!(check_name("nightly").is_ok());
        assert!(check_name(&"n".repeat(200)).is_ok());
        for bad in ["", "   ", &"n".repeat(201)] {
            let e = check_name(bad).unwrap_err();
            assert!(e.message.starts_with("invalid job_name"), "{e:?}");
            assert_eq!(e.hint, NAME_HINT);
        }
        // 67 three-byte characters are 201 bytes: too long for the catalog's check
        assert!(check_name(&"€".repeat(67)).is_err());
    }

    #[test]
    fn overlap_is_skip_or_allow() {
        assert!(check_overlap("skip").is_ok() && check_overlap("allow").is_ok());
        let e = check_overlap("queue").unwrap_err();
        assert_eq!(e.message, "invalid overlap \"queue\"");
    }

    #[test]
    fn timeouts() {
        assert!(check_timeout("00:00:01", 1_000_000).is_ok());
        assert!(check_timeout("00:00:00", 0).is_err());
        assert!(check_timeout("-00:00:01", -1)
            .unwrap_err()
            .message
            .contains("positive"));
        assert_eq!(alter_timeout("00:00:00", 0), Ok(false));
        assert_eq!(alter_timeout("00:00:05", 5_000_000), Ok(true));
        let e = alter_timeout("-00:00:01", -1_000_000).unwrap_err();
        assert!(e.message.contains("must not be negative"));
        assert_eq!(e.hint, ALTER_TIMEOUT_HINT);
    }

    #[test]
    fn retries_and_alert_thresholds() {
        assert!(check_retries(None, None).is_ok());
        assert!(check_retries(Some(1), Some(1)).is_ok());
        assert!(check_retries(Some(100), None).is_ok());
        for n in [0, 101, -3] {
            let e = check_retries(Some(n), None).unwrap_err();
            assert_eq!(
                e.message,
                format!("max_attempts must be between 1 and 100, not {n}")
            );
        }
        assert!(check_retries(None, Some(0)).is_err());
        assert!(check_alert_after(None).is_ok() && check_alert_after(Some(1)).is_ok());
        assert!(check_alert_after(Some(0)).is_err() && check_alert_after(Some(-1)).is_err());
        assert!(is_channel_name("pulse_alerts"));
        assert!(!is_channel_name("") && !is_channel_name(&"c".repeat(64)));
    }
}
