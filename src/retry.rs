//! Retry policy: exponential backoff with jitter and a cap, and the retry / dead-letter decision.
//! Pure Rust (no pgrx): used by queue rows (`pulse.fail`) and, later, by job retries.

use std::time::Duration;

/// How long to wait between attempts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay after the first failed attempt.
    pub base: Duration,
    /// No delay is ever longer than this.
    pub cap: Duration,
    /// Fraction (0..=1) of the delay that is randomised away, so that many rows failing together
    /// do not all come back at the same instant.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(30),
            cap: Duration::from_secs(3600),
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// The delay before attempt `failed_attempts + 1`, given that `failed_attempts` (>= 1) have
    /// failed. `unit` is a random number in [0, 1). The result lies in
    /// `[d * (1 - jitter), d]` where `d = min(cap, base * 2^(failed_attempts - 1))`.
    pub fn delay(&self, failed_attempts: u32, unit: f64) -> Duration {
        let exp = failed_attempts.saturating_sub(1).min(62);
        let full = self
            .base
            .checked_mul(1u32.checked_shl(exp.min(31)).unwrap_or(u32::MAX))
            .unwrap_or(self.cap)
            .min(self.cap);
        let jitter = self.jitter.clamp(0.0, 1.0);
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.0
        };
        full.mul_f64(1.0 - jitter * unit)
    }

    /// Like `delay`, but never earlier than a server's `Retry-After` (still capped).
    pub fn delay_honouring(
        &self,
        failed_attempts: u32,
        unit: f64,
        retry_after: Option<Duration>,
    ) -> Duration {
        let d = self.delay(failed_attempts, unit);
        match retry_after {
            Some(r) => d.max(r).min(self.cap.max(d)),
            None => d,
        }
    }
}

/// What to do with an item whose attempt just failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Try again after the backoff delay.
    Retry,
    /// Give up: the item becomes a dead letter (`failed`).
    DeadLetter,
}

/// `attempts` is the number of attempts made so far (including the one that failed).
pub fn decide(attempts: i32, max_attempts: i32, retry: bool) -> Outcome {
    if retry && attempts < max_attempts {
        Outcome::Retry
    } else {
        Outcome::DeadLetter
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn doubles_from_the_base_without_jitter() {
        let b = Backoff {
            base: secs(10),
            cap: secs(3600),
            jitter: 0.0,
        };
        let got: Vec<u64> = (1..=6).map(|n| b.delay(n, 0.7).as_secs()).collect();
        assert_eq!(got, vec![10, 20, 40, 80, 160, 320]);
    }

    #[test]
    fn never_exceeds_the_cap_even_for_huge_attempt_counts() {
        let b = Backoff::default();
        for n in [12, 13, 31, 32, 63, 64, 1000, u32::MAX] {
            assert_eq!(b.delay(n, 0.0), b.cap, "attempt {n}");
        }
    }

    #[test]
    fn attempt_zero_is_treated_as_the_first() {
        let b = Backoff::default();
        assert_eq!(b.delay(0, 0.0), b.base);
    }

    #[test]
    fn retry_after_is_honoured_but_capped() {
        let b = Backoff {
            base: secs(10),
            cap: secs(600),
            jitter: 0.0,
        };
        assert_eq!(b.delay_honouring(1, 0.0, Some(secs(120))), secs(120));
        assert_eq!(b.delay_honouring(1, 0.0, Some(secs(5))), secs(10));
        assert_eq!(b.delay_honouring(1, 0.0, Some(secs(86400))), secs(600));
        assert_eq!(b.delay_honouring(1, 0.0, None), secs(10));
    }

    #[test]
    fn decide_retries_until_max_attempts() {
        assert_eq!(decide(1, 3, true), Outcome::Retry);
        assert_eq!(decide(2, 3, true), Outcome::Retry);
        assert_eq!(decide(3, 3, true), Outcome::DeadLetter);
        assert_eq!(decide(1, 3, false), Outcome::DeadLetter);
        assert_eq!(decide(5, 1, true), Outcome::DeadLetter);
    }

    #[test]
    fn bad_random_input_is_harmless() {
        let b = Backoff::default();
        assert_eq!(b.delay(1, f64::NAN), b.base);
        assert_eq!(b.delay(1, -3.0), b.base);
        assert_eq!(b.delay(1, 7.0), b.base.mul_f64(0.8));
    }

    proptest! {
        #[test]
        fn delay_within_jitter_band_and_cap(
            base_ms in 1u64..100_000, cap_ms in 1u64..10_000_000, jitter in 0.0f64..=1.0,
            n in 1u32..200, unit in 0.0f64..1.0,
        ) {
            let b = Backoff { base: Duration::from_millis(base_ms), cap: Duration::from_millis(cap_ms), jitter };
            let d = b.delay(n, unit);
            let full = b.delay(n, 0.0);
            prop_assert!(d <= full);
            prop_assert!(full <= b.cap);
            prop_assert!(d >= full.mul_f64(1.0 - jitter) - Duration::from_nanos(1));
        }

        #[test]
        fn delay_is_monotonic_in_attempts_without_jitter(
            base_ms in 1u64..100_000, cap_ms in 1u64..10_000_000, n in 1u32..100,
        ) {
            let b = Backoff { base: Duration::from_millis(base_ms), cap: Duration::from_millis(cap_ms), jitter: 0.0 };
            prop_assert!(b.delay(n, 0.5) <= b.delay(n + 1, 0.5));
        }
    }
}
