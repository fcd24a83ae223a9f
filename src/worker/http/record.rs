//! Recording what the HTTP threads report: after-commit requests in one statement per batch,
//! HTTP runs through `crate::run::finish::finish_run` (and `crate::run::queue::schedule_retry`), with the request's secrets
//! scrubbed from what is stored (`crate::http::outcome`).

use super::{InFlight, Item};
use crate::http::client::{Reply, Verdict};
use crate::http::outcome::{
    self, request_retry_delay, retryable, run_message, run_response, status_of,
};
use crate::pgutil::to_pg_ts;
use crate::xact;
use pgrx::prelude::*;

fn unit_random() -> f64 {
    unsafe { pg_sys::pg_prng_double(&raw mut pg_sys::pg_global_prng_state) }
}

/// Inside the recording transaction. Returns whether a run retry was queued.
pub(super) fn record_in_xact(done: &[(InFlight, Reply)]) -> Result<bool, pgrx::spi::SpiError> {
    let mut ids = Vec::new();
    let mut states = Vec::new();
    let mut codes: Vec<Option<i32>> = Vec::new();
    let mut headers: Vec<Option<String>> = Vec::new();
    let mut bodies: Vec<Option<String>> = Vec::new();
    let mut truncated: Vec<Option<bool>> = Vec::new();
    let mut timed_out = Vec::new();
    let mut errors: Vec<Option<String>> = Vec::new();
    let mut timings = Vec::new();
    let mut delays: Vec<i64> = Vec::new();
    // 1: the request was sent (an attempt), 0: it could not be built and was not
    let mut sent: Vec<i32> = Vec::new();
    let mut retried_runs = false;
    for (f, reply) in done {
        let verdict = reply.verdict();
        let s = outcome::stored(reply, &f.secrets);
        let retryable = retryable(verdict);
        match f.item {
            Item::Request {
                id,
                attempt,
                max_attempts,
                backoff_us,
            } => {
                let retry = retryable && attempt < max_attempts;
                let delay = if retry {
                    request_retry_delay(backoff_us, attempt, unit_random(), s.retry_after)
                        .as_micros() as i64
                } else {
                    0
                };
                ids.push(id);
                states.push(
                    if retry {
                        "pending"
                    } else {
                        status_of(verdict).as_str()
                    }
                    .to_string(),
                );
                codes.push(s.status_code);
                headers.push(s.headers);
                bodies.push(s.body);
                truncated.push(s.truncated);
                timed_out.push(verdict == Verdict::TimedOut);
                errors.push(s.error);
                timings.push(s.timings);
                delays.push(delay);
                sent.push(match &reply.result {
                    Err(f) if f.kind == crate::http::client::FailureKind::NotSent => 0,
                    _ => 1,
                });
            }
            Item::Run {
                run_id,
                job_id,
                attempt,
            } => {
                let message = run_message(reply, &s);
                let started = chrono::Utc::now()
                    - chrono::Duration::from_std(reply.total).unwrap_or_default();
                let ended = crate::run::finish::finish_run(
                    &crate::outcome::Outcome {
                        job_id,
                        run_id,
                        status: status_of(verdict),
                        message: Some(&message),
                        started_at: to_pg_ts(started),
                        duration_ms: reply.total.as_secs_f64() * 1000.0,
                        finished_at: None,
                    },
                    Some(&run_response(&s)),
                )?;
                if ended
                    && retryable
                    && crate::run::queue::schedule_retry(job_id, attempt, s.retry_after)
                {
                    retried_runs = true;
                }
            }
        }
    }
    if !ids.is_empty() {
        let arr = |o| PgOid::BuiltIn(o);
        let types = [
            arr(PgBuiltInOids::INT8ARRAYOID),
            arr(PgBuiltInOids::TEXTARRAYOID),
            arr(PgBuiltInOids::INT4ARRAYOID),
            arr(PgBuiltInOids::TEXTARRAYOID),
            arr(PgBuiltInOids::TEXTARRAYOID),
            arr(PgBuiltInOids::BOOLARRAYOID),
            arr(PgBuiltInOids::BOOLARRAYOID),
            arr(PgBuiltInOids::TEXTARRAYOID),
            arr(PgBuiltInOids::TEXTARRAYOID),
            arr(PgBuiltInOids::INT8ARRAYOID),
            arr(PgBuiltInOids::INT4ARRAYOID),
        ];
        let args: [pgrx::datum::DatumWithOid; 11] = [
            ids.into(),
            states.into(),
            codes.into(),
            headers.into(),
            bodies.into(),
            truncated.into(),
            timed_out.into(),
            errors.into(),
            timings.into(),
            delays.into(),
            sent.into(),
        ];
        Spi::connect_mut(|c| {
            xact::with_plan(c, RECORD_SQL, &types, |c, stmt| {
                c.update(stmt, None, &args).map(|_| ())
            })
            .and_then(|r| r)
        })?;
    }
    Ok(retried_runs)
}

/// Claimed requests and runs that were never handed to a thread: back to `pending` / `queued`.
pub(super) fn release(requests: Vec<i64>, run_ids: Vec<i64>) -> Result<(), pgrx::spi::SpiError> {
    if !requests.is_empty() {
        Spi::run_with_args(
            "UPDATE pulse.http_request SET state = 'pending', lease_until = NULL
              WHERE id = ANY ($1::bigint[]) AND state = 'sending'",
            &[requests.into()],
        )?;
    }
    if !run_ids.is_empty() {
        crate::run::claim::requeue_unsent_http_runs(&run_ids)?;
    }
    Ok(())
}

/// Results of after-commit requests, one statement per batch; a send counts as an attempt here,
/// with its outcome (a claim that a crash interrupts costs no attempt).
const RECORD_SQL: &str = "UPDATE pulse.http_request h SET
                    state = u.state::pulse.http_request_state,
                    finished_at = CASE WHEN u.state = 'pending' THEN NULL ELSE clock_timestamp() END,
                    next_attempt_at = CASE WHEN u.state = 'pending'
                                           THEN clock_timestamp() + u.delay_us * interval '1 microsecond'
                                           ELSE h.next_attempt_at END,
                    lease_until = NULL, status_code = u.code, response_headers = u.headers::jsonb,
                    body = u.body, body_truncated = u.truncated, timed_out = u.timed_out,
                    error = u.error, timings = u.timings::jsonb, attempts = h.attempts + u.sent
               FROM unnest($1::bigint[], $2::text[], $3::int[], $4::text[], $5::text[], $6::bool[],
                           $7::bool[], $8::text[], $9::text[], $10::bigint[], $11::int[])
                    AS u(id, state, code, headers, body, truncated, timed_out, error, timings, delay_us, sent)
              WHERE h.id = ANY ($1::bigint[]) AND h.id = u.id";
