//! The scheduler's look for updated zone files (a tzdata update): the jobs in a zone whose file
//! changed get their next run computed again with the new rules. Called at housekeeping.

use crate::pgutil::{from_pg_ts, to_pg_ts};
use crate::schedule::Schedule;
use chrono::Utc;
use pgrx::prelude::*;

/// Jobs whose zone file changed on disk since `since` (a tzdata update; None: at any time, for
/// the first look after start): their next run is computed again with the zone's rules now, from
/// their last slot or now. Jobs due within a second are left to fire as they are.
pub(super) fn follow(since: Option<std::time::SystemTime>) {
    // only names that can be files: the work is bounded by the zone directory, not by how many
    // POSIX specs jobs name
    let top = crate::zones::top_level();
    let zones: Vec<String> = Spi::connect(|c| {
        c.select(
            "SELECT DISTINCT timezone FROM pulse.job
              WHERE enabled AND schedule IS NOT NULL AND pg_catalog.split_part(timezone, '/', 1) = ANY($1)",
            None,
            &[top.into()],
        )
        .map(|t| t.filter_map(|r| r.get::<String>(1).ok().flatten()).collect())
        .unwrap_or_default()
    });
    let since = since.unwrap_or(std::time::UNIX_EPOCH);
    // each changed zone's new rules, read once for all its jobs
    let changed: std::collections::HashMap<String, crate::schedule::Zone> = zones
        .into_iter()
        .filter_map(|z| crate::zones::changed_since(&z, since).map(|rules| (z, rules)))
        .collect();
    if changed.is_empty() {
        return;
    }
    let now = Utc::now();
    // rows another transaction holds are left to it (the worker never waits for a row lock)
    let jobs: Vec<(i64, String, String, Option<TimestampWithTimeZone>)> = Spi::connect_mut(|c| {
        c.update(
            "SELECT j.job_id, j.schedule, j.timezone,
                    (SELECT max(r.scheduled_for) FROM pulse.job_run r
                      WHERE r.job_id = j.job_id AND r.trigger = 'schedule')
               FROM pulse.job j
              WHERE j.enabled AND j.schedule IS NOT NULL
                AND j.next_run_at > pg_catalog.now() + interval '1 second'
                AND j.timezone = ANY($1)
                FOR UPDATE OF j SKIP LOCKED",
            None,
            &[changed.keys().cloned().collect::<Vec<String>>().into()],
        )
        .map(|t| {
            t.filter_map(|r| {
                Some((
                    r.get::<i64>(1).ok()??,
                    r.get::<String>(2).ok()??,
                    r.get::<String>(3).ok()??,
                    r.get::<TimestampWithTimeZone>(4).ok()?,
                ))
            })
            .collect()
        })
        .unwrap_or_default()
    });
    let mut ids = Vec::new();
    let mut nexts = Vec::new();
    for (id, text, tz, last) in jobs {
        let (Ok(s), Some(tz)) = (Schedule::parse(&text), changed.get(&tz)) else {
            continue;
        };
        let from = last.map_or(now, |l| now.max(from_pg_ts(l)));
        ids.push(id);
        nexts.push(s.next_after(tz, from).map(to_pg_ts));
    }
    let r = Spi::run_with_args(
        "UPDATE pulse.job j SET next_run_at = u.next FROM unnest($1::bigint[], $2::timestamptz[]) AS u(id, next)
          WHERE j.job_id = u.id AND j.enabled AND j.next_run_at IS DISTINCT FROM u.next",
        &[ids.into(), nexts.into()],
    );
    if let Err(e) = r {
        pgrx::error!("could not move jobs to their zones' new rules: {e}");
    }
    if since > std::time::UNIX_EPOCH {
        log!(
            "pg_pulse scheduler: zone files changed ({}): next runs computed again",
            changed.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
}
