//! pg_cron's side of an import: its jobs (`cron.job`, read whether or not pg_cron's library is
//! loaded), the time zone it evaluates schedules in, and setting imported jobs inactive.

use crate::pgutil::raise;
use pgrx::prelude::*;

/// A row of `cron.job`.
pub(super) struct CronJob {
    pub jobid: i64,
    pub jobname: Option<String>,
    pub schedule: String,
    pub command: String,
    pub database: String,
    pub username: String,
    pub active: bool,
}

/// pg_cron's jobs, by jobid; an ERROR (42P01) when there is no `cron.job` here.
pub(super) fn jobs() -> Vec<CronJob> {
    let here = Spi::get_one::<bool>("SELECT pg_catalog.to_regclass('cron.job') IS NOT NULL")
        .ok()
        .flatten()
        .unwrap_or(false);
    if !here {
        raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            format!(
                "pg_cron's table cron.job does not exist in database \"{}\"",
                crate::pgutil::current_database_name()
            ),
            "Run pulse.import_pg_cron() where pg_cron keeps its jobs (its cron.database_name), which must also be pg_pulse's database (pulse.database_name).",
        );
    }
    Spi::connect(|c| {
        c.select(
            "SELECT jobid::int8, jobname::text, schedule::text, command::text, database::text,
                    username::text, active
               FROM cron.job ORDER BY jobid",
            None,
            &[],
        )
        .map(|t| {
            t.map(|r| CronJob {
                jobid: r.get(1).ok().flatten().unwrap_or_default(),
                jobname: r.get(2).ok().flatten(),
                schedule: r.get(3).ok().flatten().unwrap_or_default(),
                command: r.get(4).ok().flatten().unwrap_or_default(),
                database: r.get(5).ok().flatten().unwrap_or_default(),
                username: r.get(6).ok().flatten().unwrap_or_default(),
                active: r.get(7).ok().flatten().unwrap_or(true),
            })
            .collect()
        })
        .unwrap_or_else(|e| {
            raise(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!("could not read cron.job: {e}"),
                "pulse.import_pg_cron() reads pg_cron's table cron.job as a superuser.",
            )
        })
    })
}

/// The zone pg_cron reads schedules in: `cron.timezone` (pg_cron 1.5 and later), else GMT.
pub(super) fn timezone() -> String {
    Spi::get_one::<String>("SELECT pg_catalog.current_setting('cron.timezone', true)")
        .ok()
        .flatten()
        .filter(|z| !z.trim().is_empty())
        .unwrap_or_else(|| "GMT".to_string())
}

/// Sets these pg_cron jobs inactive (pg_cron's trigger on cron.job tells its launcher). An ERROR
/// when that fails (pg_cron's library not loaded): the import then changes nothing.
pub(super) fn disable(jobids: &[i64]) {
    if jobids.is_empty() {
        return;
    }
    let ids = jobids.to_vec();
    if let Err(e) = crate::xact::try_subxact(move || {
        Spi::run_with_args(
            "UPDATE cron.job SET active = false WHERE jobid = ANY ($1) AND active",
            &[ids.into()],
        )
    })
    .map_err(|(_, m)| m)
    .and_then(|r| r.map_err(|e| e.to_string()))
    {
        raise(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("could not set the imported pg_cron jobs inactive: {e}"),
            "Nothing was imported. Load pg_cron (shared_preload_libraries) for disable_source => true, or import without it and stop the pg_cron jobs yourself (SELECT cron.unschedule(jobid)).",
        );
    }
}
