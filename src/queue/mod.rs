//! Durable work queues on the users' own tables (`pulse.make_queue`, `pulse.claim_batch`, ...).
//!
//! [`spec`] is the pure core (which columns make a queue, the statements that work on one);
//! `api` is the thin SQL shell, `exec` runs its statements (cached names and plans). Every statement runs as the caller: table privileges and
//! row-level security apply exactly as they would to the caller's own query.

pub mod spec;

#[cfg(feature = "pg")]
mod api;
#[cfg(feature = "pg")]
mod exec;
