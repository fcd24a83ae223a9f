//! The envelope of one run handed from the scheduler to an executor: a dynamic shared memory
//! segment that the scheduler fills (what to run) and the executor completes (what happened).
//! Executors may be connected to another database, so they never read pg_pulse's tables: all
//! they know of a run is in its envelope.
//!
//! Layout: `Header`, then the job name, the command, and room for the outcome's message.

use crate::run::RunStatus;
use pgrx::pg_sys;

/// The longest outcome message kept (an error and its detail); longer ones are cut at a
/// character boundary and end in "...".
pub const MESSAGE_CAP: usize = 16 * 1024;

#[repr(C)]
#[derive(Copy, Clone, Default)]
struct Header {
    run_id: i64,
    job_id: i64,
    /// PostgreSQL timestamptz (microseconds since 2000-01-01)
    scheduled_for: i64,
    attempt: i32,
    trigger: u8,
    /// 0: no timeout
    timeout_ms: i64,
    name_len: u32,
    command_len: u32,
    // the outcome, written by the executor
    status: u8,
    started_at: i64,
    duration_us: i64,
    message_len: u32,
}

/// Outcome codes, written by the executor into the envelope.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Ended {
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
}

impl Ended {
    fn code(self) -> u8 {
        match self {
            Ended::Succeeded => 1,
            Ended::Failed => 2,
            Ended::TimedOut => 3,
            Ended::Cancelled => 4,
        }
    }
    fn from_code(c: u8) -> Option<Ended> {
        Some(match c {
            1 => Ended::Succeeded,
            2 => Ended::Failed,
            3 => Ended::TimedOut,
            4 => Ended::Cancelled,
            _ => return None,
        })
    }
    pub fn status(self) -> RunStatus {
        match self {
            Ended::Succeeded => RunStatus::Succeeded,
            Ended::Failed => RunStatus::Failed,
            Ended::TimedOut => RunStatus::TimedOut,
            Ended::Cancelled => RunStatus::Cancelled,
        }
    }
}

/// What the scheduler hands out.
#[derive(Clone, Debug)]
pub struct Order {
    pub run_id: i64,
    pub job_id: i64,
    pub job_name: String,
    pub scheduled_for: i64,
    pub attempt: i32,
    pub trigger: String,
    pub timeout_ms: Option<i64>,
    pub command: String,
}

/// What the executor reports.
#[derive(Clone, Debug)]
pub struct Report {
    pub ended: Ended,
    pub started_at: i64,
    pub duration_us: i64,
    pub message: String,
}

const TRIGGERS: [&str; 3] = ["schedule", "manual", "retry"];

fn total_size(o: &Order) -> usize {
    std::mem::size_of::<Header>() + o.job_name.len() + o.command.len() + MESSAGE_CAP
}

/// A segment mapped in this process.
pub struct Segment(*mut pg_sys::dsm_segment);

impl Segment {
    /// Creates and fills the envelope of an order (scheduler side; outside or inside a
    /// transaction: the mapping is pinned to the process either way).
    pub fn create(o: &Order) -> Segment {
        unsafe {
            let seg = pg_sys::dsm_create(total_size(o), 0);
            pg_sys::dsm_pin_mapping(seg);
            let base = pg_sys::dsm_segment_address(seg) as *mut u8;
            let h = Header {
                run_id: o.run_id,
                job_id: o.job_id,
                scheduled_for: o.scheduled_for,
                attempt: o.attempt,
                trigger: TRIGGERS.iter().position(|t| *t == o.trigger).unwrap_or(0) as u8,
                timeout_ms: o.timeout_ms.unwrap_or(0),
                name_len: o.job_name.len() as u32,
                command_len: o.command.len() as u32,
                ..Default::default()
            };
            std::ptr::write_unaligned(base as *mut Header, h);
            let mut p = base.add(std::mem::size_of::<Header>());
            std::ptr::copy_nonoverlapping(o.job_name.as_ptr(), p, o.job_name.len());
            p = p.add(o.job_name.len());
            std::ptr::copy_nonoverlapping(o.command.as_ptr(), p, o.command.len());
            Segment(seg)
        }
    }

    /// Maps an envelope made by the scheduler (executor side). None if it is gone.
    pub fn attach(handle: u32) -> Option<Segment> {
        unsafe {
            let seg = pg_sys::dsm_attach(handle as pg_sys::dsm_handle);
            if seg.is_null() {
                return None;
            }
            pg_sys::dsm_pin_mapping(seg);
            Some(Segment(seg))
        }
    }

    pub fn handle(&self) -> u32 {
        unsafe { pg_sys::dsm_segment_handle(self.0) as u32 }
    }

    fn base(&self) -> *mut u8 {
        unsafe { pg_sys::dsm_segment_address(self.0) as *mut u8 }
    }

    fn header(&self) -> Header {
        unsafe { std::ptr::read_unaligned(self.base() as *const Header) }
    }

    /// The order, as the scheduler wrote it.
    pub fn order(&self) -> Order {
        let h = self.header();
        unsafe {
            let p = self.base().add(std::mem::size_of::<Header>());
            let name = std::slice::from_raw_parts(p, h.name_len as usize);
            let command =
                std::slice::from_raw_parts(p.add(h.name_len as usize), h.command_len as usize);
            Order {
                run_id: h.run_id,
                job_id: h.job_id,
                job_name: String::from_utf8_lossy(name).into_owned(),
                scheduled_for: h.scheduled_for,
                attempt: h.attempt,
                trigger: TRIGGERS[(h.trigger as usize).min(2)].to_string(),
                timeout_ms: (h.timeout_ms > 0).then_some(h.timeout_ms),
                command: String::from_utf8_lossy(command).into_owned(),
            }
        }
    }

    /// Writes the outcome (executor side).
    pub fn report(&self, r: &Report) {
        let mut h = self.header();
        let msg = cut(&r.message, MESSAGE_CAP);
        h.status = r.ended.code();
        h.started_at = r.started_at;
        h.duration_us = r.duration_us;
        h.message_len = msg.len() as u32;
        unsafe {
            let p = self
                .base()
                .add(std::mem::size_of::<Header>() + h.name_len as usize + h.command_len as usize);
            std::ptr::copy_nonoverlapping(msg.as_ptr(), p, msg.len());
            std::ptr::write_unaligned(self.base() as *mut Header, h);
        }
    }

    /// The outcome, if the executor wrote one.
    pub fn read_report(&self) -> Option<Report> {
        let h = self.header();
        let ended = Ended::from_code(h.status)?;
        unsafe {
            let p = self
                .base()
                .add(std::mem::size_of::<Header>() + h.name_len as usize + h.command_len as usize);
            let msg = std::slice::from_raw_parts(p, (h.message_len as usize).min(MESSAGE_CAP));
            Some(Report {
                ended,
                started_at: h.started_at,
                duration_us: h.duration_us,
                message: String::from_utf8_lossy(msg).into_owned(),
            })
        }
    }

    /// Unmaps the segment; the last process to detach destroys it.
    pub fn detach(self) {
        unsafe { pg_sys::dsm_detach(self.0) }
    }
}

/// `s` cut to at most `max` bytes at a character boundary, ending in "..." when cut.
pub fn cut(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return s.into();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end]).into()
}
