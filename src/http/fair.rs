//! The queue of requests waiting for an HTTP thread: taken round-robin between keys (the
//! requests' owners), with a cap on how many requests of one key are being sent at once, so that
//! one owner's backlog never holds another owner's requests back by more than one request's
//! worth of work. Pure Rust.

use std::collections::{HashMap, VecDeque};

/// How many threads one owner's requests may use at once out of `threads`: all but an eighth
/// (at least one) are kept for the others, so a request of another owner finds a free thread at
/// once; with a single thread, that thread.
pub fn owner_cap(threads: usize) -> usize {
    if threads <= 1 {
        1
    } else {
        threads - (threads / 8).max(1)
    }
}

pub struct FairQueue<T> {
    waiting: HashMap<u32, VecDeque<T>>,
    /// Keys with waiting items, in turn order.
    ring: VecDeque<u32>,
    /// Items taken and not yet `done`, per key.
    running: HashMap<u32, usize>,
    len: usize,
}

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        FairQueue {
            waiting: HashMap::new(),
            ring: VecDeque::new(),
            running: HashMap::new(),
            len: 0,
        }
    }
}

impl<T> FairQueue<T> {
    /// Items waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push(&mut self, key: u32, item: T) {
        let q = self.waiting.entry(key).or_default();
        if q.is_empty() {
            self.ring.push_back(key);
        }
        q.push_back(item);
        self.len += 1;
    }

    /// The next item to start: the oldest of the first key in turn with fewer than `cap` items
    /// running (that key then goes to the end of the turn). None if every waiting key is at its cap.
    pub fn pop(&mut self, cap: usize) -> Option<(u32, T)> {
        let i = self
            .ring
            .iter()
            .position(|k| self.running.get(k).copied().unwrap_or(0) < cap)?;
        let key = self.ring.remove(i)?;
        let q = self.waiting.get_mut(&key)?;
        let item = q.pop_front()?;
        if q.is_empty() {
            self.waiting.remove(&key);
        } else {
            self.ring.push_back(key);
        }
        *self.running.entry(key).or_default() += 1;
        self.len -= 1;
        Some((key, item))
    }

    /// Whether `pop` would return an item now.
    pub fn poppable(&self, cap: usize) -> bool {
        self.ring
            .iter()
            .any(|k| self.running.get(k).copied().unwrap_or(0) < cap)
    }

    /// An item of `key` taken with `pop` has finished.
    pub fn done(&mut self, key: u32) {
        if let Some(n) = self.running.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.running.remove(&key);
            }
        }
    }

    /// Takes every waiting item out (none of them started).
    pub fn drain(&mut self) -> Vec<T> {
        self.ring.clear();
        self.len = 0;
        self.waiting.drain().flat_map(|(_, q)| q).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_take_turns_and_a_backlog_does_not_hold_others_back() {
        let mut q = FairQueue::default();
        for i in 0..48 {
            q.push(1, format!("a{i}"));
        }
        q.push(2, "b0".to_string());
        q.push(2, "b1".to_string());
        assert_eq!(q.pop(100).unwrap().1, "a0");
        assert_eq!(q.pop(100).unwrap().1, "b0");
        assert_eq!(q.pop(100).unwrap().1, "a1");
        assert_eq!(q.pop(100).unwrap().1, "b1");
        assert_eq!(q.pop(100).unwrap().1, "a2");
        assert_eq!(q.len(), 45);
    }

    #[test]
    fn the_cap_keeps_threads_for_other_owners() {
        let cap = owner_cap(16);
        assert_eq!(cap, 14);
        assert_eq!(owner_cap(1), 1);
        assert_eq!(owner_cap(2), 1);
        assert_eq!(owner_cap(256), 224);
        let mut q = FairQueue::default();
        for i in 0..48 {
            q.push(7, i);
        }
        for _ in 0..cap {
            assert!(q.pop(cap).is_some());
        }
        // owner 7 is at its cap: its next request waits, another owner's goes at once
        assert!(q.pop(cap).is_none() && !q.poppable(cap));
        q.push(8, 100);
        assert!(q.poppable(cap));
        assert_eq!(q.pop(cap), Some((8, 100)));
        q.done(7);
        assert!(q.poppable(cap));
        assert_eq!(q.pop(cap), Some((7, 14)));
        assert!(q.pop(cap).is_none() && !q.poppable(cap));
    }

    #[test]
    fn drain_returns_what_never_started() {
        let mut q = FairQueue::default();
        q.push(1, 1);
        q.push(2, 2);
        q.push(1, 3);
        assert_eq!(q.pop(10), Some((1, 1)));
        let mut left = q.drain();
        left.sort();
        assert_eq!(left, vec![2, 3]);
        assert!(q.is_empty());
        assert!(q.pop(10).is_none());
        q.push(3, 4);
        assert_eq!(q.pop(10), Some((3, 4)));
    }
}
