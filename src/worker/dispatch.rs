//! The scheduler's side of the executor pool: hands queued SQL runs to executors of the run's
//! owner and database (starting, reusing or retiring executors within
//! `pulse.max_running_jobs`), collects the outcomes they report, and settles the runs of
//! executors that exited.
//!
//! Every step that writes `pulse.job_run` happens in the scheduler's transaction
//! ([`Pool::settle`], [`Pool::claim`]); shared memory changes only after that transaction has
//! committed ([`Pool::hand_out`]), so a run is `running` durably before any executor sees it,
//! and a crash can never run it twice.

use super::claim;
use super::handoff::{Order, Report, Segment};
use super::settle::{Settled, Settlement};
use super::{set_latch_of, Phase, Slot, SlotState, MAX_EXECUTORS, QUEUE_DEPTH, SHARED};
use pgrx::bgworkers::{BackgroundWorkerBuilder, BackgroundWorkerStatus, DynamicBackgroundWorker};
use pgrx::prelude::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A run to hand out once the claim has committed.
struct Handout {
    slot: usize,
    order: Order,
}

/// The scheduler's view of the pool: worker handles and the envelopes it made.
pub struct Pool {
    handles: Vec<Option<DynamicBackgroundWorker>>,
    segments: HashMap<i64, Segment>,
    /// what became of handed-out runs, until it is recorded
    settlement: Settlement,
    handouts: Vec<Handout>,
    /// slots reserved by the last claim, with their database and role
    reserve: Vec<(usize, u32, u32)>,
    /// idle executors of other roles to retire for a waiting run
    retire: Vec<usize>,
    warned_at: Option<Instant>,
}

impl Pool {
    pub fn new() -> Pool {
        Pool {
            handles: (0..MAX_EXECUTORS).map(|_| None).collect(),
            segments: HashMap::new(),
            settlement: Settlement::default(),
            handouts: Vec::new(),
            reserve: Vec::new(),
            retire: Vec::new(),
            warned_at: None,
        }
    }

    /// At scheduler start: executors of an earlier scheduler process are stopped (their
    /// outcomes could not be collected), so that every run left `running` can be failed.
    pub fn stop_leftovers(&mut self) {
        let pids: Vec<i32> = {
            let sh = SHARED.share();
            sh.slots
                .iter()
                .filter(|s| s.state != SlotState::Free && s.pid != 0)
                .map(|s| s.pid)
                .collect()
        };
        for &pid in &pids {
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline
            && pids
                .iter()
                .any(|&p| unsafe { !pg_sys::BackendPidGetProc(p).is_null() })
        {
            super::wait_latch(20);
        }
        let mut sh = SHARED.exclusive();
        for s in sh.slots.iter_mut() {
            let seq = s.next_seq;
            *s = Slot {
                next_seq: seq.wrapping_add(1000),
                ..Default::default()
            };
        }
    }

    /// Collects reported outcomes and settles the runs of executors that exited (shared memory
    /// only; recorded by [`Pool::settle`]).
    pub fn collect(&mut self) {
        let mut sh = SHARED.exclusive();
        for (i, slot) in sh.slots.iter_mut().enumerate() {
            if slot.state == SlotState::Free {
                self.handles[i] = None;
                continue;
            }
            let stopped = self.handles[i]
                .as_ref()
                .is_some_and(|h| matches!(h.pid(), Err(BackgroundWorkerStatus::Stopped)));
            let gone = slot.exited || stopped;
            // runs waiting behind a long run go back to the queue, for another executor
            let long_run = slot.busy_long(chrono::Utc::now().timestamp_micros());
            for e in slot.queue.iter_mut() {
                if long_run && !gone && e.phase == Phase::Assigned {
                    self.release(e.run_id);
                    self.settlement.settled.push(Settled::Requeue(e.run_id));
                    *e = Default::default();
                    continue;
                }
                if slot.pid != 0
                    && !e.pid_recorded
                    && matches!(e.phase, Phase::Assigned | Phase::Taken)
                {
                    e.pid_recorded = true;
                    self.settlement.pids.push((e.run_id, slot.pid));
                }
                let settled = match e.phase {
                    Phase::Empty => continue,
                    Phase::Done => match self.release(e.run_id) {
                        (Some(order), Some(report)) => Settled::Reported {
                            order,
                            report,
                            pid: slot.pid,
                        },
                        (order, _) => Settled::Lost {
                            run_id: e.run_id,
                            job_id: order.as_ref().map_or(0, |o| o.job_id),
                            attempt: order.as_ref().map_or(1, |o| o.attempt),
                            message: "the executor could not read this run's command".into(),
                        },
                    },
                    _ if !gone => continue,
                    phase => {
                        let (order, _) = self.release(e.run_id);
                        let (job_id, attempt) =
                            order.as_ref().map_or((0, 1), |o| (o.job_id, o.attempt));
                        if phase == Phase::Assigned && slot.pid != 0 {
                            Settled::Requeue(e.run_id)
                        } else if phase == Phase::Assigned {
                            Settled::NoSession {
                                run_id: e.run_id,
                                job_id,
                                attempt,
                                role: slot.role,
                                db: slot.db,
                            }
                        } else {
                            Settled::Lost {
                                run_id: e.run_id,
                                job_id,
                                attempt,
                                message: format!(
                                    "the executor process (pid {}) exited while this run was in progress",
                                    slot.pid
                                ),
                            }
                        }
                    }
                };
                self.settlement.settled.push(settled);
                *e = Default::default();
            }
            if gone {
                let seq = slot.next_seq;
                *slot = Slot {
                    next_seq: seq,
                    ..Default::default()
                };
                self.handles[i] = None;
            }
        }
    }

    /// Unmaps the envelope of a run this process made (the last mapping destroys it) and
    /// returns its order and the executor's report, if there are any.
    fn release(&mut self, run_id: i64) -> (Option<Order>, Option<Report>) {
        match self.segments.remove(&run_id) {
            Some(seg) => {
                let found = (Some(seg.order()), seg.read_report());
                seg.detach();
                found
            }
            None => (None, None),
        }
    }

    /// Claims queued SQL runs that are due (up to `LEAD_MS` ahead) for the executors that can
    /// take them, in the current transaction: each claimed run becomes `running` now, and is
    /// handed out by [`Pool::hand_out`] once this transaction has committed. Runs whose owner
    /// or database can no longer be used fail once, and their job is paused. Returns the number
    /// of runs claimed or failed.
    pub fn claim(&mut self) -> usize {
        self.handouts.clear();
        self.reserve.clear();
        self.retire.clear();
        let mut view: Vec<Slot> = SHARED.share().slots.to_vec();
        let max = super::max_running();
        // room in the queues of executors that take runs, and for executors not yet started
        let occupied = view.iter().filter(|s| s.state != SlotState::Free).count();
        let open_queues: usize = view
            .iter()
            .filter(|s| s.accepts_runs())
            .map(|s| QUEUE_DEPTH - s.pending())
            .sum();
        let capacity = open_queues + max.saturating_sub(occupied) * QUEUE_DEPTH;
        if capacity == 0 {
            return 0;
        }
        let candidates = claim::candidates((capacity * 4).clamp(16, 1024) as i64);
        if candidates.is_empty() {
            return 0;
        }
        let mut claimed: Vec<(i64, Option<i32>)> = Vec::new();
        let mut refused = 0;
        let mut share =
            claim::FairShare::new(&view, max, candidates.iter().map(|c| (c.db_oid, c.owner)));
        for c in candidates {
            if let Some(why) = c.unusable() {
                claim::refuse(&c, &why);
                refused += 1;
                continue;
            }
            let (db, role) = (c.db_oid, c.owner);
            // an owner at its share of the pool waits while another owner's runs wait for room
            if share.must_wait((db, role)) {
                continue;
            }
            let Some(slot) = claim::pick(&mut view, max, db, role, &mut self.retire) else {
                continue;
            };
            if view[slot].state == SlotState::Free {
                share.took((db, role));
                view[slot] = Slot {
                    state: SlotState::Reserved,
                    db,
                    role,
                    ..Default::default()
                };
                self.reserve.push((slot, db, role));
            }
            // count it as pending in the view
            if let Some(e) = view[slot]
                .queue
                .iter_mut()
                .find(|e| e.phase == Phase::Empty)
            {
                e.phase = Phase::Assigned;
            }
            let pid = view[slot].pid;
            claimed.push((c.order.run_id, (pid != 0).then_some(pid)));
            self.handouts.push(Handout {
                slot,
                order: c.order,
            });
        }
        if !claimed.is_empty() {
            let (ids, pids): (Vec<i64>, Vec<Option<i32>>) = claimed.into_iter().unzip();
            crate::run::claim::mark_running(ids, pids);
        }
        self.handouts.len() + refused
    }

    /// After the claim committed: reserves slots, writes envelopes, starts executors and wakes
    /// the ones that have work.
    pub fn hand_out(&mut self) {
        let handouts = std::mem::take(&mut self.handouts);
        let reserve = std::mem::take(&mut self.reserve);
        let retire = std::mem::take(&mut self.retire);
        let mut made: Vec<(usize, i64, Segment)> = Vec::with_capacity(handouts.len());
        for h in handouts {
            // out of shared memory for a (large) command: that run fails, the scheduler goes on
            let order = std::panic::AssertUnwindSafe(&h.order);
            let seg = PgTryBuilder::new(move || Some(Segment::create(*order)))
                .catch_others(|_| None)
                .execute();
            match seg {
                Some(seg) => made.push((h.slot, h.order.run_id, seg)),
                None => self.settlement.settled.push(Settled::Lost {
                    run_id: h.order.run_id,
                    job_id: h.order.job_id,
                    attempt: h.order.attempt,
                    message: format!(
                        "pg_pulse could not hand this run's command ({} bytes) to an executor: out of shared memory",
                        h.order.command.len()
                    ),
                }),
            }
        }
        let mut to_start = Vec::new();
        let mut lost = Vec::new();
        let mut wake = Vec::new();
        {
            let mut sh = SHARED.exclusive();
            for (slot, db, role) in reserve {
                if sh.slots[slot].state == SlotState::Free {
                    let seq = sh.slots[slot].next_seq;
                    sh.slots[slot] = Slot {
                        state: SlotState::Reserved,
                        db,
                        role,
                        next_seq: seq,
                        ..Default::default()
                    };
                    to_start.push(slot);
                }
            }
            for (slot, run_id, seg) in made {
                let s = &mut sh.slots[slot];
                let free = s.queue.iter().position(|e| e.phase == Phase::Empty);
                match (s.accepts_runs(), free) {
                    (true, Some(k)) => {
                        let seq = s.next_seq;
                        s.next_seq = seq.wrapping_add(1);
                        s.queue[k] = super::Entry {
                            phase: Phase::Assigned,
                            seq,
                            handle: seg.handle(),
                            run_id,
                            cancel: false,
                            pid_recorded: s.pid != 0,
                        };
                        self.segments.insert(run_id, seg);
                        if s.pid != 0 {
                            wake.push(s.pid);
                        }
                    }
                    _ => {
                        seg.detach();
                        lost.push(run_id);
                    }
                }
            }
            for slot in retire {
                let s = &mut sh.slots[slot];
                if s.state == SlotState::Live && s.pending() == 0 {
                    s.retire = true;
                    wake.push(s.pid);
                }
            }
        }
        for pid in wake {
            set_latch_of(pid);
        }
        // an executor left between the claim and now: its runs are queued again next time
        self.settlement
            .settled
            .extend(lost.into_iter().map(Settled::Requeue));
        for slot in to_start {
            self.start(slot);
        }
    }

    /// How long until runs waiting behind a running one may have to be taken back (None: no run
    /// waits behind another).
    pub fn take_back_in_ms(&self) -> Option<i64> {
        let sh = SHARED.share();
        let now = chrono::Utc::now().timestamp_micros();
        sh.slots
            .iter()
            .filter(|s| {
                s.state == SlotState::Live
                    && s.run_id != 0
                    && s.queue.iter().any(|e| e.phase == Phase::Assigned)
            })
            .map(|s| (super::TAKE_BACK_AFTER_MS - (now - s.run_started_us) / 1000).max(1))
            .min()
    }

    /// Records what [`Pool::collect`] gathered, in the current transaction (see `settle`).
    /// Returns how many outcomes it wrote (they need a durable commit).
    pub fn settle(&mut self) -> usize {
        self.settlement.settle()
    }

    /// Whether something waits to be recorded.
    pub fn has_settled(&self) -> bool {
        !self.settlement.settled.is_empty()
    }

    /// The tick's transaction committed: what it settled is recorded.
    pub fn recorded(&mut self) {
        self.settlement.recorded();
    }

    /// The tick's transaction failed: the runs that ended are recorded minimally (see
    /// `Settlement::record_minimal`). Whether that committed.
    pub fn record_minimal(&mut self, why: &str) -> bool {
        self.settlement.record_minimal(why)
    }

    /// It failed again and again: these outcomes are given up (the rescuer fails the runs).
    pub fn drop_settled(&mut self, why: &str) {
        self.settlement.drop_settled(why);
    }

    /// Whether this scheduler holds run `run_id`: handed out to an executor, or ended and
    /// waiting to be recorded. A `running` run it does not hold is lost (see
    /// `run::finish::rescue`).
    pub fn holds(&self, run_id: i64) -> bool {
        self.segments.contains_key(&run_id) || self.settlement.holds(run_id)
    }

    fn start(&mut self, slot: usize) {
        let started = BackgroundWorkerBuilder::new("pg_pulse executor")
            .set_type("pg_pulse executor")
            .set_library("pg_pulse")
            .set_function("pulse_executor_main")
            .enable_spi_access()
            .set_argument(Some(pg_sys::Datum::from(slot)))
            .set_notify_pid(unsafe { pg_sys::MyProcPid })
            .set_restart_time(None)
            .load_dynamic();
        match started {
            Ok(h) => self.handles[slot] = Some(h),
            Err(_) => {
                // settled as lost ("could not start a session") by the next collect
                SHARED.exclusive().slots[slot].exited = true;
                let quiet = self
                    .warned_at
                    .is_some_and(|t| t.elapsed() < Duration::from_secs(60));
                if !quiet {
                    self.warned_at = Some(Instant::now());
                    ereport!(
                        PgLogLevel::WARNING,
                        PgSqlErrorCode::ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
                        "pg_pulse could not start an executor: no free background worker slot",
                        "Raise max_worker_processes (it must exceed pulse.max_running_jobs plus other workers) and restart."
                    );
                }
            }
        }
    }
}

impl Pool {
    /// The tick's transaction failed: nothing it claimed was handed out (the claim rolled back).
    pub fn abandon_claim(&mut self) {
        self.handouts.clear();
        self.reserve.clear();
        self.retire.clear();
    }
}
