//! Replies waiting to be recorded. While more requests are waiting to be claimed, the HTTP
//! worker sends first and records later: recording costs the worker's main thread (and, on a
//! small machine, the CPU the HTTP threads need) as much as claiming does, and nobody waits for a
//! request's result the way they wait for its arrival. Replies are held only within bounds
//! (count, bytes, age; see [`Answered::must_record`]), and recorded at once when nothing more can
//! be claimed. Pure: no PostgreSQL here.

use crate::http::client::Reply;
use std::time::{Duration, Instant};

/// Replies held at most before they are recorded.
pub const MAX_REPLIES: usize = 5_000;
/// Bytes of held responses (headers and bodies) at most before they are recorded.
pub const MAX_BYTES: usize = 32 << 20;
/// The longest a reply waits to be recorded while the worker is busy sending.
pub const MAX_AGE: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Answered {
    replies: Vec<Reply>,
    bytes: usize,
    oldest: Option<Instant>,
    /// A held reply ends a job's run: runs are recorded at once (the scheduler counts them).
    run: bool,
}

/// The memory a reply holds: its response's headers and body, or its error message.
fn reply_bytes(r: &Reply) -> usize {
    match &r.result {
        Ok(resp) => {
            resp.body.len()
                + resp.reason.len()
                + resp
                    .headers
                    .iter()
                    .map(|(k, v)| k.len() + v.len())
                    .sum::<usize>()
        }
        Err(f) => f.message.len(),
    }
}

impl Answered {
    /// Holds a reply; `ends_run`: it is the reply of a job's run.
    pub fn push(&mut self, r: Reply, ends_run: bool, now: Instant) {
        self.bytes += reply_bytes(&r);
        self.oldest.get_or_insert(now);
        self.run |= ends_run;
        self.replies.push(r);
    }

    pub fn len(&self) -> usize {
        self.replies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.replies.is_empty()
    }

    /// Whether the held replies must be recorded now, although more work may be waiting: too
    /// many, too large, too old, or one of them ends a run.
    pub fn must_record(&self, now: Instant) -> bool {
        self.run
            || self.replies.len() >= MAX_REPLIES
            || self.bytes >= MAX_BYTES
            || self
                .oldest
                .is_some_and(|t| now.saturating_duration_since(t) >= MAX_AGE)
    }

    /// In how long the oldest held reply reaches `MAX_AGE` (None: nothing held).
    pub fn due_in(&self, now: Instant) -> Option<Duration> {
        self.oldest
            .map(|t| MAX_AGE.saturating_sub(now.saturating_duration_since(t)))
    }

    /// Everything held, to record.
    pub fn take(&mut self) -> Vec<Reply> {
        self.bytes = 0;
        self.oldest = None;
        self.run = false;
        std::mem::take(&mut self.replies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::client::{Failure, FailureKind, Response};

    fn reply(tag: u64, body: usize) -> Reply {
        Reply {
            tag,
            result: Ok(Response {
                status: 200,
                reason: "OK".into(),
                headers: vec![("a".into(), "b".into())],
                body: vec![b'x'; body],
                truncated: false,
            }),
            queued: Duration::ZERO,
            headers_after: None,
            total: Duration::ZERO,
        }
    }

    #[test]
    fn held_within_bounds() {
        let t = Instant::now();
        let mut a = Answered::default();
        assert!(!a.must_record(t) && a.due_in(t).is_none());
        a.push(reply(1, 10), false, t);
        assert!(!a.must_record(t + Duration::from_millis(999)));
        assert_eq!(
            a.due_in(t + Duration::from_millis(400)),
            Some(Duration::from_millis(600))
        );
        assert!(a.must_record(t + MAX_AGE));
        let taken = a.take();
        assert_eq!(taken.len(), 1);
        assert!(a.is_empty() && !a.must_record(t + MAX_AGE * 2));
    }

    #[test]
    fn count_bytes_and_runs_force_a_record() {
        let t = Instant::now();
        let mut a = Answered::default();
        for i in 0..MAX_REPLIES as u64 - 1 {
            a.push(reply(i, 0), false, t);
        }
        assert!(!a.must_record(t));
        a.push(reply(0, 0), false, t);
        assert!(a.must_record(t));

        let mut a = Answered::default();
        a.push(reply(1, MAX_BYTES - 10), false, t);
        assert!(!a.must_record(t));
        a.push(reply(2, 10), false, t);
        assert!(a.must_record(t));

        let mut a = Answered::default();
        let failed = Reply {
            result: Err(Failure {
                kind: FailureKind::Timeout,
                message: "timed out".into(),
            }),
            ..reply(3, 0)
        };
        a.push(failed, true, t);
        assert!(a.must_record(t));
        assert_eq!(a.take().iter().map(|r| r.tag).collect::<Vec<_>>(), vec![3]);
    }
}
