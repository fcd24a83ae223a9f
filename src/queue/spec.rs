//! What makes a table a pg_pulse queue, and the statements that work on one.
//! Pure Rust (no pgrx): the shell feeds it catalog facts and runs the SQL it builds.

/// The states a queue row can be in.
pub const STATUSES: [&str; 5] = ["queued", "processing", "completed", "failed", "blocked"];

/// A column every queue table has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    /// Definition used by `make_queue` when the column is missing.
    pub definition: &'static str,
    /// Type names (as `format_type` prints them, without a length) that are accepted when the
    /// column already exists.
    pub accepted: &'static [&'static str],
}

const TEXTS: &[&str] = &["text", "character varying"];
const INTS: &[&str] = &["integer", "smallint", "bigint"];
const TIMES: &[&str] = &["timestamp with time zone"];

pub const COLUMNS: [Column; 9] = [
    Column {
        name: "status",
        definition: "text NOT NULL DEFAULT 'queued'",
        accepted: TEXTS,
    },
    Column {
        name: "priority",
        definition: "integer NOT NULL DEFAULT 0",
        accepted: INTS,
    },
    Column {
        name: "attempts",
        definition: "integer NOT NULL DEFAULT 0",
        accepted: INTS,
    },
    Column {
        name: "max_attempts",
        definition: "integer NOT NULL DEFAULT 3",
        accepted: INTS,
    },
    Column {
        name: "run_after",
        definition: "timestamptz NOT NULL DEFAULT now()",
        accepted: TIMES,
    },
    Column {
        name: "locked_by",
        definition: "text",
        accepted: TEXTS,
    },
    Column {
        name: "locked_until",
        definition: "timestamptz",
        accepted: TIMES,
    },
    Column {
        name: "last_error",
        definition: "text",
        accepted: TEXTS,
    },
    Column {
        name: "finished_at",
        definition: "timestamptz",
        accepted: TIMES,
    },
];

/// A column that exists with a type a queue cannot use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrongType {
    pub column: &'static str,
    pub found: String,
    pub expected: &'static [&'static str],
}

impl std::fmt::Display for WrongType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "column \"{}\" has type {}, but a queue needs {}",
            self.column,
            self.found,
            self.expected.join(" or ")
        )
    }
}

/// `format_type` output without a type modifier: `character varying(20)` -> `character varying`.
fn base_type(t: &str) -> &str {
    match t.find('(') {
        Some(i) => t[..i].trim_end(),
        None => t.trim(),
    }
}

/// Given the table's existing columns as (name, format_type), the queue columns to add, or the
/// first column whose type is wrong.
pub fn missing_columns(existing: &[(String, String)]) -> Result<Vec<Column>, WrongType> {
    let mut add = Vec::new();
    for col in COLUMNS {
        match existing.iter().find(|(n, _)| n == col.name) {
            None => add.push(col),
            Some((_, t)) => {
                if !col.accepted.contains(&base_type(t)) {
                    return Err(WrongType {
                        column: col.name,
                        found: t.clone(),
                        expected: col.accepted,
                    });
                }
            }
        }
    }
    Ok(add)
}

/// Index and constraint names derived from the table name, within PostgreSQL's 63-byte limit.
pub fn object_name(relname: &str, suffix: &str) -> String {
    let room = 63 - suffix.len() - 1;
    let mut base = String::new();
    for ch in relname.chars() {
        if base.len() + ch.len_utf8() > room {
            break;
        }
        base.push(ch);
    }
    format!("{base}_{suffix}")
}

/// `"quoted"` identifier, as PostgreSQL's quote_ident would always accept.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The check constraint on `status`.
pub fn status_check() -> String {
    let list: Vec<String> = STATUSES.iter().map(|s| format!("'{s}'")).collect();
    format!("CHECK (status IN ({}))", list.join(", "))
}

/// Names of a queue table, already quoted: `table` schema-qualified, `pk` its primary key column,
/// `pk_type` the key's type name (for casts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub table: String,
    pub pk: String,
    pub pk_type: String,
    /// A partitioned table (its rows are addressed by key, not by ctid).
    pub partitioned: bool,
}

/// Why a row whose lease expired on its last attempt is dead-lettered (`last_error`), as SQL over
/// the row `alias` (before the update: its attempts and holder).
pub fn lease_expired_error(alias: &str) -> String {
    format!(
        "format('lease expired: attempt %s of %s (locked by %s) was neither completed nor failed before its lock ran out', \
         {alias}.attempts, {alias}.max_attempts, coalesce({alias}.locked_by, 'an unnamed worker'))"
    )
}

/// Claims up to $1 rows: expired locks first (a crashed worker's rows), then ready queued rows,
/// highest priority first, then oldest. $2 lock ttl, $3 worker. Returns each row as jsonb.
///
/// Every claim counts an attempt, a takeover of an expired lock too. A row whose lock expired on
/// its last attempt (`attempts >= max_attempts`) is not handed out again: the same statement
/// dead-letters it (`failed`, with [`lease_expired_error`]), as `pulse.fail` would have, so a row
/// that kills its consumer cannot circulate for ever.
///
/// Rows are picked and locked with `FOR UPDATE SKIP LOCKED` and, on a plain table, updated by
/// their `ctid` (a locked row cannot move), which spares a primary-key lookup per row; a
/// partitioned table (where a ctid is not unique) joins on the key instead.
pub fn claim_sql(n: &Names) -> String {
    let Names {
        table,
        pk,
        partitioned,
        ..
    } = n;
    let col = if *partitioned { pk.as_str() } else { "ctid" };
    let reason = lease_expired_error("d");
    format!(
        "WITH stale AS (
           SELECT s.{col} AS id, s.attempts >= s.max_attempts AS spent FROM {table} s
            WHERE s.status = 'processing' AND s.locked_until < now()
            ORDER BY s.locked_until LIMIT $1 FOR UPDATE SKIP LOCKED),
         dead AS (
           UPDATE {table} d SET status = 'failed', finished_at = now(), last_error = {reason},
                  locked_by = NULL, locked_until = NULL
            WHERE d.{col} = ANY (ARRAY(SELECT id FROM stale WHERE spent)))
         UPDATE {table} t SET status = 'processing', attempts = t.attempts + 1,
                locked_by = $3, locked_until = now() + $2
          WHERE t.{col} = ANY (ARRAY(
                SELECT id FROM stale WHERE NOT spent
                UNION ALL
                SELECT id FROM (SELECT q.{col} AS id FROM {table} q
                                 WHERE q.status = 'queued' AND q.run_after <= now()
                                 ORDER BY q.priority DESC, q.run_after, q.{pk}
                                 LIMIT $1 FOR UPDATE SKIP LOCKED) ready
                LIMIT $1))
      RETURNING to_jsonb(t.*)"
    )
}

/// Marks rows in $1 (an array of keys) completed; $2 worker (NULL: any).
pub fn complete_sql(n: &Names) -> String {
    let Names {
        table, pk, pk_type, ..
    } = n;
    format!(
        "UPDATE {table} SET status = 'completed', finished_at = now(), locked_by = NULL, locked_until = NULL
          WHERE {pk} = ANY ($1::{pk_type}[]) AND status = 'processing'
            AND ($2::text IS NULL OR locked_by = $2)"
    )
}

/// Locks one row held by $2 (NULL: any) and returns attempts, max_attempts.
pub fn held_row_sql(n: &Names) -> String {
    let Names {
        table, pk, pk_type, ..
    } = n;
    format!(
        "SELECT attempts::int4, max_attempts::int4 FROM {table}
          WHERE {pk} = $1::{pk_type} AND status = 'processing' AND ($2::text IS NULL OR locked_by = $2)
            FOR UPDATE"
    )
}

/// Puts row $1 back to queued after $2 (interval) with error $3.
pub fn requeue_sql(n: &Names) -> String {
    let Names {
        table, pk, pk_type, ..
    } = n;
    format!(
        "UPDATE {table} SET status = 'queued', run_after = now() + $2, last_error = $3,
                locked_by = NULL, locked_until = NULL
          WHERE {pk} = $1::{pk_type}"
    )
}

/// Dead-letters row $1 with error $2.
pub fn dead_letter_sql(n: &Names) -> String {
    let Names {
        table, pk, pk_type, ..
    } = n;
    format!(
        "UPDATE {table} SET status = 'failed', finished_at = now(), last_error = $2,
                locked_by = NULL, locked_until = NULL
          WHERE {pk} = $1::{pk_type}"
    )
}

/// Extends the lock of row $1 held by $3 (NULL: any) to now() + $2.
pub fn extend_lock_sql(n: &Names) -> String {
    let Names {
        table, pk, pk_type, ..
    } = n;
    format!(
        "UPDATE {table} SET locked_until = now() + $2
          WHERE {pk} = $1::{pk_type} AND status = 'processing' AND ($3::text IS NULL OR locked_by = $3)"
    )
}

/// Re-drives dead letters: all of them, or (`with_ids`) those whose key is in $1. The last
/// parameter resets the attempt count.
pub fn retry_failed_sql(n: &Names, with_ids: bool) -> String {
    let Names {
        table, pk, pk_type, ..
    } = n;
    let (filter, reset) = if with_ids {
        (format!(" AND {pk} = ANY ($1::{pk_type}[])"), "$2")
    } else {
        (String::new(), "$1")
    };
    format!(
        "UPDATE {table} SET status = 'queued', run_after = now(), finished_at = NULL,
                attempts = CASE WHEN {reset} THEN 0 ELSE attempts END
          WHERE status = 'failed'{filter}"
    )
}

/// One scan of the table: counts by state and the age of the oldest ready row.
pub fn health_sql(n: &Names) -> String {
    let table = &n.table;
    format!(
        "SELECT count(*) FILTER (WHERE status = 'queued'),
                count(*) FILTER (WHERE status = 'queued' AND run_after <= now()),
                count(*) FILTER (WHERE status = 'queued' AND run_after > now()),
                count(*) FILTER (WHERE status = 'processing'),
                count(*) FILTER (WHERE status = 'processing' AND locked_until < now()),
                count(*) FILTER (WHERE status = 'completed'),
                count(*) FILTER (WHERE status = 'failed'),
                count(*) FILTER (WHERE status = 'blocked'),
                now() - min(run_after) FILTER (WHERE status = 'queued' AND run_after <= now()),
                count(*) FILTER (WHERE status = 'completed' AND finished_at > now() - interval '1 hour'),
                count(*) FILTER (WHERE status = 'failed' AND finished_at > now() - interval '1 hour')
           FROM {table}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn a_bare_table_gets_every_column() {
        let add = missing_columns(&cols(&[("id", "bigint"), ("payload", "jsonb")])).unwrap();
        assert_eq!(add.len(), COLUMNS.len());
    }

    #[test]
    fn existing_compatible_columns_are_kept() {
        let existing = cols(&[
            ("id", "uuid"),
            ("status", "character varying(20)"),
            ("priority", "smallint"),
            ("run_after", "timestamp with time zone"),
        ]);
        let add: Vec<&str> = missing_columns(&existing)
            .unwrap()
            .iter()
            .map(|c| c.name)
            .collect();
        assert!(!add.contains(&"status") && !add.contains(&"priority"));
        assert!(add.contains(&"attempts") && add.contains(&"locked_until"));
    }

    #[test]
    fn a_wrong_type_names_the_column() {
        let e = missing_columns(&cols(&[("status", "integer")])).unwrap_err();
        assert_eq!(e.column, "status");
        assert!(e.to_string().contains("\"status\" has type integer"));
        let e =
            missing_columns(&cols(&[("run_after", "timestamp without time zone")])).unwrap_err();
        assert_eq!(e.column, "run_after");
    }

    #[test]
    fn fully_equipped_table_needs_nothing() {
        let existing: Vec<(String, String)> = COLUMNS
            .iter()
            .map(|c| (c.name.to_string(), c.accepted[0].to_string()))
            .collect();
        assert!(missing_columns(&existing).unwrap().is_empty());
    }

    #[test]
    fn object_names_fit_in_63_bytes() {
        let long = "q".repeat(80);
        let n = object_name(&long, "pulse_claim_idx");
        assert_eq!(n.len(), 63);
        assert!(n.ends_with("_pulse_claim_idx"));
        assert_eq!(
            object_name("jobs", "pulse_claim_idx"),
            "jobs_pulse_claim_idx"
        );
        // never splits a multi-byte character
        let n = object_name(&"é".repeat(40), "pulse_claim_idx");
        assert!(n.len() <= 63 && n.is_char_boundary(n.len()));
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(
            status_check(),
            "CHECK (status IN ('queued', 'processing', 'completed', 'failed', 'blocked'))"
        );
    }

    #[test]
    fn claim_locks_without_waiting_and_never_touches_blocked_rows() {
        let n = Names {
            table: "\"public\".\"q\"".into(),
            pk: "\"id\"".into(),
            pk_type: "bigint".into(),
            partitioned: false,
        };
        for partitioned in [false, true] {
            let n = Names {
                partitioned,
                ..n.clone()
            };
            let sql = claim_sql(&n);
            assert_eq!(sql.matches("FOR UPDATE SKIP LOCKED").count(), 2);
            assert!(!sql.contains("blocked"));
            assert!(sql.contains("ORDER BY q.priority DESC, q.run_after, q.\"id\""));
            assert_eq!(sql.contains("ctid"), !partitioned);
            // a stale row on its last attempt is dead-lettered, never handed out again
            assert!(sql.contains("s.attempts >= s.max_attempts AS spent"));
            assert!(sql.contains("status = 'failed'") && sql.contains("lease expired"));
            assert!(sql.contains("SELECT id FROM stale WHERE NOT spent"));
        }
        assert!(complete_sql(&n).contains("ANY ($1::bigint[])"));
    }
}
