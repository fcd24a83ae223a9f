//! `pulse.import_pg_cron()`: pg_cron's jobs become pg_pulse jobs, in one call that can be repeated.
//!
//! Along the flow of a call:
//! * `source` (shell): reading `cron.job` and pg_cron's time zone; setting imported jobs inactive;
//! * `parse` (shell): a command through PostgreSQL's own parser (`raw_parser`) into
//!   [`command::Stmt`]s;
//! * [`command`] (pure): what a command becomes: an HTTP request (`net.http_*` calls) or SQL;
//!   `value` (pure): what an argument's value is before the job runs;
//! * `api` (shell): the SQL function; each job created or updated as its owner through
//!   `pulse.schedule_job`, settings copied into secrets, and `pulse.job_import`, which remembers
//!   which job came from which pg_cron job (its only writer); `settings`: the settings an HTTP
//!   job reads, as its owner sees them, and copying them into secrets.

pub mod command;
mod value;

#[cfg(feature = "pg")]
mod api;
#[cfg(feature = "pg")]
mod parse;
#[cfg(feature = "pg")]
mod settings;
#[cfg(feature = "pg")]
mod source;
