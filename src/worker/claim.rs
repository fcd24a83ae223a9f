//! Which queued runs the scheduler can hand out, and to which executor: the candidates (with
//! what their owner and database allow), the choice of an executor for each, and the refusal of
//! a run whose owner or database can no longer be used.

use super::handoff::Order;
use super::{Slot, SlotState, QUEUE_DEPTH};
use crate::pgutil::interval_micros;
use crate::run::finish::fail_now;
use crate::xact;
use pgrx::prelude::*;

/// Where a run goes: an idle executor of its role and database; else a new executor in a free
/// slot; else the shortest queue of one of its executors that is not busy with a long run. With
/// no room at all, an idle executor of another role (or database) is retired to make room (the
/// run waits for the next turn).
pub(super) fn pick(
    view: &mut [Slot],
    max: usize,
    db: u32,
    role: u32,
    retire: &mut Vec<usize>,
) -> Option<usize> {
    let mine: Vec<usize> = (0..view.len())
        .filter(|&i| view[i].accepts_runs() && view[i].db == db && view[i].role == role)
        .collect();
    if let Some(&i) = mine.iter().find(|&&i| view[i].pending() == 0) {
        return Some(i);
    }
    let occupied = view.iter().filter(|s| s.state != SlotState::Free).count();
    if occupied < max {
        if let Some(i) = view.iter().position(|s| s.state == SlotState::Free) {
            return Some(i);
        }
    }
    // behind a run that has gone on for long, a run would only be taken back again
    let now = chrono::Utc::now().timestamp_micros();
    if let Some(&i) = mine
        .iter()
        .filter(|&&i| view[i].pending() < QUEUE_DEPTH && !view[i].busy_long(now))
        .min_by_key(|&&i| view[i].pending())
    {
        return Some(i);
    }
    // no room for it: retire an idle executor of another role or database
    if let Some(i) = (0..view.len()).find(|&i| {
        view[i].state == SlotState::Live
            && view[i].accepts_runs()
            && view[i].pending() == 0
            && (view[i].db, view[i].role) != (db, role)
            && !retire.contains(&i)
    }) {
        retire.push(i);
        view[i].retire = true;
    }
    None
}

/// Fairness between owners in the executor pool: each (database, owner) with runs due or
/// executors running has a share of `pulse.max_running_jobs` (at least 1). An owner that holds
/// its share or more gets no further run while an owner below its share has a run waiting:
/// its executors go idle as their runs end, and are retired for the waiting owner (`pick`). So
/// one owner's backlog holds another owner's run back for at most the runs already handed out.
pub(super) struct FairShare {
    held: std::collections::HashMap<(u32, u32), usize>,
    waiting: std::collections::HashSet<(u32, u32)>,
    share: usize,
    occupied: usize,
    max: usize,
}

impl FairShare {
    pub(super) fn new(
        view: &[Slot],
        max: usize,
        due: impl Iterator<Item = (u32, u32)>,
    ) -> FairShare {
        let mut held = std::collections::HashMap::new();
        for s in view.iter().filter(|s| s.state != SlotState::Free) {
            *held.entry((s.db, s.role)).or_insert(0) += 1;
        }
        let waiting: std::collections::HashSet<(u32, u32)> = due.collect();
        let owners = held
            .keys()
            .chain(waiting.iter())
            .collect::<std::collections::HashSet<_>>()
            .len();
        FairShare {
            occupied: held.values().sum(),
            held,
            waiting,
            share: (max / owners.max(1)).max(1),
            max,
        }
    }

    fn holds(&self, key: (u32, u32)) -> usize {
        self.held.get(&key).copied().unwrap_or(0)
    }

    /// Whether `key` must leave its run queued this turn: the pool is full, `key` holds its
    /// share, and another owner below its share has runs due.
    pub(super) fn must_wait(&self, key: (u32, u32)) -> bool {
        self.occupied >= self.max
            && self.holds(key) >= self.share
            && self
                .waiting
                .iter()
                .any(|&other| other != key && self.holds(other) < self.share)
    }

    /// `key` got a new executor.
    pub(super) fn took(&mut self, key: (u32, u32)) {
        *self.held.entry(key).or_insert(0) += 1;
        self.occupied += 1;
    }
}

/// A queued run with what the claim needs to know about its owner and database.
pub(super) struct Candidate {
    pub order: Order,
    pub owner: u32,
    owner_name: Option<String>,
    db_name: String,
    pub db_oid: u32,
    command_missing: bool,
    can_login: bool,
    usage: bool,
    connect: bool,
    allow_conn: bool,
    /// 1 for its owner's first due run, 2 for the second, ... (the round-robin order)
    rank: i64,
}

impl Candidate {
    /// Why the run cannot start in a session of its owner (the job is paused), if it cannot.
    pub(super) fn unusable(&self) -> Option<String> {
        let role = self.owner_name.clone().unwrap_or_default();
        let db = &self.db_name;
        let resume = "then resume it with pulse.toggle_job(job_name, true)";
        let why = if self.command_missing {
            "the job no longer exists or is no longer a SQL job".to_string()
        } else if self.owner_name.is_none() {
            format!("the job's owner (role with OID {}) no longer exists, so the job is paused; a superuser can remove it with pulse.unschedule_job", self.owner)
        } else if !self.usage {
            format!("role \"{role}\" no longer has USAGE on schema pulse, so the job is paused; GRANT USAGE ON SCHEMA pulse TO \"{role}\", {resume}")
        } else if !self.can_login {
            format!("role \"{role}\" cannot log in (NOLOGIN), and jobs run in a session of their owner, so the job is paused; ALTER ROLE \"{role}\" LOGIN, {resume}")
        } else if self.db_oid == 0 {
            format!("database \"{db}\" does not exist, so the job is paused; pulse.alter_job(job_name, database => ...), {resume}")
        } else if !self.allow_conn {
            format!("database \"{db}\" does not allow connections, so the job is paused")
        } else if !self.connect {
            format!("role \"{role}\" may not connect to database \"{db}\", so the job is paused; GRANT CONNECT ON DATABASE \"{db}\" TO \"{role}\", {resume}")
        } else {
            return None;
        };
        Some(why)
    }
}

pub(super) fn candidates(limit: i64) -> Vec<Candidate> {
    // Round-robin by owner: the owners with queued runs (a skip scan of
    // job_run_queued_owner_idx, one probe per owner), each one's due runs in time order from
    // the same index, locked as they are read, an equal share of the limit each; they are handed
    // out the first of every owner, then the second of every owner, and so on (rank). One
    // owner's backlog never hides another owner's runs, and no turn of a burst reads more than
    // the runs it takes (no scan or sort of the whole backlog: see the README on bursts).
    crate::pgutil::set_xact_guc(c"enable_sort", c"off");
    Spi::connect_mut(|c| {
        let rows = xact::with_plan(
            c,
            concat!(
                crate::run::claim::owners_skip_scan!("pulse.job_run", "q.status = 'queued' AND q.kind = 'sql'"),
                ",
             share AS (
               SELECT greatest(1, ceil($2::float8 / greatest(1, count(*))))::int8 AS k
                 FROM owners WHERE owner IS NOT NULL),
             ranked AS (
               SELECT x.*, row_number() OVER (PARTITION BY o.owner ORDER BY x.scheduled_for, x.run_id) AS rk
                 FROM owners o CROSS JOIN share s CROSS JOIN LATERAL (
                      SELECT q.run_id, q.job_id, q.job_name, q.scheduled_for, q.attempt, q.trigger, q.owner
                        FROM pulse.job_run q
                       WHERE q.status = 'queued' AND q.kind = 'sql' AND q.owner = o.owner
                         AND q.scheduled_for <= clock_timestamp() + make_interval(secs => $1::float8 / 1000)
                       ORDER BY q.scheduled_for, q.run_id LIMIT s.k
                         FOR UPDATE OF q SKIP LOCKED) x
                WHERE o.owner IS NOT NULL)
             SELECT r.run_id, r.job_id, r.job_name, r.scheduled_for, r.attempt, r.trigger,
                    coalesce(j.owner::oid, r.owner), j.command, j.timeout,
                    a.rolname::text, coalesce(j.database, current_database())::text, d.oid,
                    coalesce(a.rolcanlogin, false),
                    CASE WHEN a.oid IS NULL THEN false
                         ELSE has_schema_privilege(a.oid, 'pulse', 'USAGE') END,
                    CASE WHEN a.oid IS NULL OR d.oid IS NULL THEN false
                         ELSE has_database_privilege(a.oid, d.oid, 'CONNECT') END,
                    coalesce(d.datallowconn, false), r.rk
               FROM ranked r
               -- (one lookup by key per run, never a scan of all jobs)
               -- (the job only if the run is its owner's: a run row written under another
               -- role's name for this job_id runs nothing, as if the job were gone)
               LEFT JOIN LATERAL (SELECT j.owner, j.command, j.timeout, j.database FROM pulse.job j
                                   WHERE j.job_id = r.job_id AND j.owner::oid = r.owner OFFSET 0) j ON true
               LEFT JOIN pg_roles a ON a.oid = coalesce(j.owner::oid, r.owner)
               LEFT JOIN pg_database d ON d.datname = coalesce(j.database, current_database())"
            ),
            &[
                PgOid::BuiltIn(PgBuiltInOids::INT8OID),
                PgOid::BuiltIn(PgBuiltInOids::INT8OID),
            ],
            |c, stmt| {
                c.select(stmt, None, &[super::LEAD_MS.into(), limit.into()])
                    .map(|t| {
                        t.filter_map(|row| {
                            let timeout: Option<Interval> = row.get(9).ok()?;
                            let command: Option<String> = row.get(8).ok()?;
                            Some(Candidate {
                                order: Order {
                                    run_id: row.get(1).ok()??,
                                    job_id: row.get(2).ok()??,
                                    job_name: row.get(3).ok()??,
                                    scheduled_for: row
                                        .get::<TimestampWithTimeZone>(4)
                                        .ok()??
                                        .into_inner(),
                                    attempt: row.get(5).ok()??,
                                    trigger: row.get(6).ok()??,
                                    timeout_ms: timeout
                                        .map(|i| (interval_micros(&i) / 1000).max(1)),
                                    command: command.clone().unwrap_or_default(),
                                },
                                owner: row.get::<pg_sys::Oid>(7).ok()??.to_u32(),
                                owner_name: row.get(10).ok()?,
                                db_name: row.get(11).ok()??,
                                db_oid: row
                                    .get::<pg_sys::Oid>(12)
                                    .ok()?
                                    .map_or(0, |o| o.to_u32()),
                                command_missing: command.is_none(),
                                can_login: row.get(13).ok()??,
                                usage: row.get(14).ok()??,
                                connect: row.get(15).ok()??,
                                allow_conn: row.get(16).ok()??,
                                rank: row.get::<i64>(17).ok()??,
                            })
                        })
                        .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
            },
        );
        // round-robin by owner, each owner's in time order (the join need not keep the order;
        // a sort in SQL would be planned at enable_sort = off's cost)
        let mut rows = rows.unwrap_or_default();
        rows.sort_by_key(|c| (c.rank, c.order.scheduled_for, c.order.run_id));
        rows
    })
}

/// A run that cannot start: one failed run, and its job paused (with its other queued runs
/// cancelled), so a broken owner or database costs one clear failure, not one per slot.
pub(super) fn refuse(c: &Candidate, why: &str) {
    // no retry: the job is paused
    fail_now(c.order.job_id, c.order.run_id, i32::MAX, why);
    if c.command_missing {
        return;
    }
    Spi::run_with_args(
        "UPDATE pulse.job SET enabled = false, next_run_at = NULL, updated_at = now()
          WHERE job_id = $1 AND enabled",
        &[c.order.job_id.into()],
    )
    .unwrap_or_else(|e| pgrx::error!("could not pause job: {e}"));
    crate::run::finish::cancel_queued(&[c.order.job_id], "the job was paused")
        .unwrap_or_else(|e| pgrx::error!("could not cancel queued runs: {e}"));
    log!(
        "pg_pulse: job {} (\"{}\"): {why}",
        c.order.job_id,
        c.order.job_name
    );
}
