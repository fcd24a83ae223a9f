//! When the HTTP worker claims more work. Without a backlog it claims whenever it wakes. While
//! a backlog is being sent (the last claim took all it asked for, or due requests were left for
//! their owners' share of the room), a claim waits for a batch of answers or until the pool runs
//! short of work, since a claim per answer would cost more than the answers; but a commit's
//! wake-up claims at once (another owner's work may have come), a pending retry is claimed when
//! it is due, and a claim runs at least every [`CLAIM_EVERY`] (a prepared transaction's requests
//! are committed without a wake-up), however long one owner's requests take to answer. Pure: no
//! PostgreSQL here.

use std::time::{Duration, Instant};

/// While a backlog is being sent, a claim runs at least this often.
pub const CLAIM_EVERY: Duration = Duration::from_secs(1);

pub struct Pace {
    backlog: bool,
    /// Answers taken from the pool since the last claim.
    answers: usize,
    /// When the last claim started, and when the next pending retry it saw is due.
    claimed_at: Instant,
    due_at: Option<Instant>,
}

impl Pace {
    pub fn new(now: Instant) -> Pace {
        Pace {
            backlog: false,
            answers: 0,
            claimed_at: now,
            due_at: None,
        }
    }

    /// Whether more may be waiting to be claimed.
    pub fn backlog(&self) -> bool {
        self.backlog
    }

    /// An answer came from the pool.
    pub fn answered(&mut self) {
        self.answers += 1;
    }

    /// A claim starts.
    pub fn claiming(&mut self, now: Instant) {
        self.answers = 0;
        self.claimed_at = now;
    }

    /// What the claim found: whether more may be waiting, and when the next pending retry is due
    /// (None: none is).
    pub fn claimed(&mut self, backlog: bool, next_due: Option<Instant>) {
        self.backlog = backlog;
        self.due_at = next_due;
    }

    /// Whether to claim now. `woken`: a commit (or the scheduler) set the worker's latch;
    /// `unanswered`: requests handed to the pool and not answered yet; `batch`: a claim's size.
    pub fn worth_claiming(
        &self,
        now: Instant,
        woken: bool,
        unanswered: usize,
        batch: usize,
    ) -> bool {
        woken
            || !self.backlog
            || self.answers >= batch / 2
            || unanswered < batch
            || self.next_claim_in(now).is_some_and(|d| d.is_zero())
    }

    /// While a backlog is being sent: how long until a claim is due in any case.
    pub fn next_claim_in(&self, now: Instant) -> Option<Duration> {
        if !self.backlog {
            return None;
        }
        let every = (self.claimed_at + CLAIM_EVERY).saturating_duration_since(now);
        Some(match self.due_at {
            Some(t) => every.min(t.saturating_duration_since(now)),
            None => every,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BATCH: usize = 500;

    #[test]
    fn without_a_backlog_every_wake_up_claims() {
        let t = Instant::now();
        let mut p = Pace::new(t);
        assert!(p.worth_claiming(t, false, 1_000, BATCH));
        p.claiming(t);
        p.claimed(false, Some(t + Duration::from_secs(5)));
        assert!(p.worth_claiming(t, false, 1_000, BATCH));
        assert_eq!(p.next_claim_in(t), None);
    }

    #[test]
    fn a_backlog_waits_for_answers_or_a_short_pool() {
        let t = Instant::now();
        let mut p = Pace::new(t);
        p.claiming(t);
        p.claimed(true, None);
        assert!(p.backlog());
        assert!(!p.worth_claiming(t, false, 1_000, BATCH));
        for _ in 0..BATCH / 2 - 1 {
            p.answered();
        }
        assert!(!p.worth_claiming(t, false, 1_000, BATCH));
        p.answered();
        assert!(p.worth_claiming(t, false, 1_000, BATCH));
        p.claiming(t);
        assert!(!p.worth_claiming(t, false, BATCH, BATCH));
        assert!(
            p.worth_claiming(t, false, BATCH - 1, BATCH),
            "the pool runs short"
        );
        assert!(
            p.worth_claiming(t, true, 1_000, BATCH),
            "a commit woke the worker"
        );
    }

    #[test]
    fn a_backlog_that_is_never_answered_holds_back_no_retry() {
        let t = Instant::now();
        let mut p = Pace::new(t);
        p.claiming(t);
        let due = t + Duration::from_millis(300);
        p.claimed(true, Some(due));
        assert_eq!(p.next_claim_in(t), Some(Duration::from_millis(300)));
        assert!(!p.worth_claiming(t + Duration::from_millis(299), false, 1_000, BATCH));
        assert!(p.worth_claiming(due, false, 1_000, BATCH));
        // no retry waiting: a claim every second all the same
        p.claiming(due);
        p.claimed(true, None);
        assert_eq!(p.next_claim_in(due), Some(CLAIM_EVERY));
        assert!(!p.worth_claiming(due + CLAIM_EVERY / 2, false, 1_000, BATCH));
        assert!(p.worth_claiming(due + CLAIM_EVERY, false, 1_000, BATCH));
    }
}
