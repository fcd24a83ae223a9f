//! The HTTP client: a pool of threads that send requests with ureq (keep-alive connections, at
//! most one connection in use per thread), checking the allowlist before any DNS lookup and the
//! denied networks after it, on every redirect too (see [`super::send`]); HTTPS trusts
//! [`super::tls::Trust`]. Pure Rust: the threads never call PostgreSQL; the HTTP worker hands
//! requests in with [`Pool::submit`] and takes replies out with [`Pool::try_recv`], and a
//! `notify` callback (the worker writes to a pipe it waits on) says that replies are ready.

use super::fair::{owner_cap, FairQueue};
use super::policy::Policy;
use super::send::{send, Agents};
use super::tls::Trust;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Redirects followed by a request with `follow_redirects` (each checked against the policy).
pub const MAX_REDIRECTS: u32 = 5;

/// A resolved request (placeholders already replaced), ready to send.
#[derive(Debug, Clone)]
pub struct Request {
    /// The caller's handle, returned in the reply.
    pub tag: u64,
    /// Whose request it is (the owner's OID): threads are shared fairly between keys (see
    /// `crate::http::fair`).
    pub key: u32,
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub timeout: Duration,
    pub follow_redirects: bool,
    /// Response bodies longer than this are cut (and flagged).
    pub max_response_bytes: usize,
    /// Do not send before this instant (a scheduled run claimed a little early).
    pub not_before: Option<Instant>,
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub truncated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// No answer within the request's timeout.
    Timeout,
    /// The connection could not be made or broke (refused, reset, DNS failure).
    Connect,
    /// Refused by pulse.http_allowed_hosts / pulse.http_denied_networks.
    Policy,
    /// The server answered with something that is not HTTP, or redirected too often.
    Protocol,
    /// The request could not be built (a missing secret or setting): it was not sent.
    NotSent,
}

/// Why there is no response. The message never contains the URL (which may hold a secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

#[derive(Debug)]
pub struct Reply {
    pub tag: u64,
    pub result: Result<Response, Failure>,
    /// Time spent waiting for a free thread (and for `not_before`).
    pub queued: Duration,
    /// Until the response headers arrived.
    pub headers_after: Option<Duration>,
    /// Until the whole body was read (or the failure).
    pub total: Duration,
}

/// How a reply ends a run or request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Succeeded,
    /// `retry`: worth another attempt (connection errors, timeouts, 429, 5xx).
    Failed {
        retry: bool,
    },
    TimedOut,
}

impl Reply {
    pub fn verdict(&self) -> Verdict {
        verdict(&self.result)
    }
}

pub fn verdict(r: &Result<Response, Failure>) -> Verdict {
    match r {
        Ok(resp) if (200..300).contains(&resp.status) => Verdict::Succeeded,
        Ok(resp) => Verdict::Failed {
            retry: resp.status == 429 || resp.status >= 500,
        },
        Err(f) => match f.kind {
            FailureKind::Timeout => Verdict::TimedOut,
            FailureKind::Connect => Verdict::Failed { retry: true },
            FailureKind::Policy | FailureKind::Protocol | FailureKind::NotSent => {
                Verdict::Failed { retry: false }
            }
        },
    }
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `Retry-After`: delay seconds, or an HTTP date (relative to `now`). None if unparsable.
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(86_400)));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    Some(
        (at.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(Duration::from_secs(86_400)),
    )
}

/// Splits `host:port` (IPv6 in brackets) as ureq hands it to a resolver.
fn split_netloc(netloc: &str) -> (&str, &str) {
    match netloc.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() => (h.trim_start_matches('[').trim_end_matches(']'), p),
        _ => (netloc, ""),
    }
}

/// Resolves a host and refuses it unless the policy allows every address it resolves to. A host
/// the allowlist does not name is refused before it is looked up.
struct PolicyResolver(Arc<Policy>);

impl ureq::Resolver for PolicyResolver {
    fn resolve(&self, netloc: &str) -> io::Result<Vec<SocketAddr>> {
        let (host, _) = split_netloc(netloc);
        let refuse = |d: super::policy::Denied| {
            io::Error::new(io::ErrorKind::PermissionDenied, d.to_string())
        };
        self.0.check_host(host).map_err(refuse)?;
        let addrs: Vec<SocketAddr> = netloc.to_socket_addrs()?.collect();
        let ips: Vec<IpAddr> = addrs.iter().map(SocketAddr::ip).collect();
        self.0.check(host, &ips).map_err(refuse)?;
        Ok(addrs)
    }
}

fn agents(policy: &Arc<Policy>, trust: &Arc<Trust>, threads: usize) -> Agents {
    let mut b = ureq::AgentBuilder::new()
        .resolver(PolicyResolver(policy.clone()))
        // redirects are followed by `send`, which checks each one first
        .redirects(0)
        .max_idle_connections(threads * 2)
        .max_idle_connections_per_host(threads)
        .no_delay(true)
        .user_agent(concat!("pg_pulse/", env!("CARGO_PKG_VERSION")));
    if let Ok(c) = &trust.config {
        b = b.tls_config(c.clone());
    }
    Agents {
        agent: b.build(),
        policy: policy.clone(),
        trust: trust.clone(),
    }
}

/// Requests waiting for a thread, and how many threads should exit.
struct Waiting {
    queue: FairQueue<(Request, Instant)>,
    quit: usize,
    /// Requests of one key being sent at once, at most.
    cap: usize,
}

struct Inner {
    agents: RwLock<Arc<Agents>>,
    policy: RwLock<Arc<Policy>>,
    trust: RwLock<Arc<Trust>>,
    threads: AtomicUsize,
    notify: Box<dyn Fn() + Send + Sync>,
}

/// The thread pool. Dropping it lets the threads finish the request in hand and exit.
pub struct Pool {
    inner: Arc<Inner>,
    waiting: Arc<(Mutex<Waiting>, Condvar)>,
    done_tx: mpsc::Sender<Reply>,
    done_rx: mpsc::Receiver<Reply>,
    handles: Vec<JoinHandle<()>>,
    size: usize,
}

impl Pool {
    pub fn new(threads: usize, policy: Policy, notify: Box<dyn Fn() + Send + Sync>) -> Pool {
        let threads = threads.max(1);
        let policy = Arc::new(policy);
        let trust = Arc::new(Trust::load(None));
        let (done_tx, done_rx) = mpsc::channel();
        let mut pool = Pool {
            inner: Arc::new(Inner {
                agents: RwLock::new(Arc::new(agents(&policy, &trust, threads))),
                policy: RwLock::new(policy),
                trust: RwLock::new(trust),
                threads: AtomicUsize::new(threads),
                notify,
            }),
            waiting: Arc::new((
                Mutex::new(Waiting {
                    queue: FairQueue::default(),
                    quit: 0,
                    cap: owner_cap(threads),
                }),
                Condvar::new(),
            )),
            done_tx,
            done_rx,
            handles: Vec::new(),
            size: 0,
        };
        pool.resize(threads);
        pool
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Grows or shrinks the pool (a shrinking thread finishes its request first).
    pub fn resize(&mut self, threads: usize) {
        let threads = threads.max(1);
        while self.size < threads {
            let rx = self.waiting.clone();
            let done = self.done_tx.clone();
            let inner = self.inner.clone();
            let h = std::thread::Builder::new()
                .name("pg_pulse http".into())
                .spawn(move || worker(rx, done, inner))
                .expect("spawn an HTTP thread");
            self.handles.push(h);
            self.size += 1;
        }
        if self.size > threads {
            self.lock().quit += self.size - threads;
            self.waiting.1.notify_all();
            self.size = threads;
        }
        self.lock().cap = owner_cap(threads);
        if self.inner.threads.swap(threads, Ordering::Relaxed) != threads {
            // connection pools sized for the new number of threads
            self.rebuild_agents();
        }
        self.handles.retain(|h| !h.is_finished());
    }

    /// A new address policy; connections made under the old one are closed.
    pub fn set_policy(&self, policy: Policy) {
        {
            let mut p = self.inner.policy.write().expect("policy lock");
            if **p == policy {
                return;
            }
            *p = Arc::new(policy);
        }
        self.rebuild_agents();
    }

    /// Trust the system's root certificates and those of `ca_file` (`pulse.http_ca_file`; None
    /// or empty: none), read again now; connections are kept when nothing changed. Returns the
    /// problem HTTPS requests will fail with (until the file is fixed and this is called again).
    pub fn set_ca_file(&self, ca_file: Option<&str>) -> Result<(), String> {
        let current = self.inner.trust.read().expect("trust lock").clone();
        if !current.is_current(ca_file) {
            *self.inner.trust.write().expect("trust lock") = Arc::new(Trust::load(ca_file));
            self.rebuild_agents();
        }
        let trust = self.inner.trust.read().expect("trust lock");
        trust.problem().map_or(Ok(()), |p| Err(p.to_string()))
    }

    fn rebuild_agents(&self) {
        let policy = self.inner.policy.read().expect("policy lock").clone();
        let trust = self.inner.trust.read().expect("trust lock").clone();
        let threads = self.inner.threads.load(Ordering::Relaxed);
        *self.inner.agents.write().expect("agents lock") =
            Arc::new(agents(&policy, &trust, threads));
    }

    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.waiting.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn submit(&self, r: Request) {
        self.submit_all(vec![r]);
    }

    /// Hands in several requests at once.
    pub fn submit_all(&self, rs: Vec<Request>) {
        if rs.is_empty() {
            return;
        }
        let now = Instant::now();
        let n = rs.len();
        let mut w = self.lock();
        for r in rs {
            w.queue.push(r.key, (r, now));
        }
        drop(w);
        // as many threads as there are requests (waking all for one costs each a context switch)
        if n >= self.size {
            self.waiting.1.notify_all();
        } else {
            for _ in 0..n {
                self.waiting.1.notify_one();
            }
        }
    }

    /// Takes back the requests no thread has started: their tags (they were never sent).
    pub fn take_unstarted(&self) -> Vec<u64> {
        let left = self.lock().queue.drain();
        left.into_iter().map(|(r, _)| r.tag).collect()
    }

    pub fn try_recv(&self) -> Option<Reply> {
        self.done_rx.try_recv().ok()
    }

    pub fn recv_timeout(&self, d: Duration) -> Option<Reply> {
        self.done_rx.recv_timeout(d).ok()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.lock().quit += self.size;
        self.waiting.1.notify_all();
    }
}

fn worker(waiting: Arc<(Mutex<Waiting>, Condvar)>, done: mpsc::Sender<Reply>, inner: Arc<Inner>) {
    let (lock, cv) = &*waiting;
    let relock = || lock.lock().unwrap_or_else(|e| e.into_inner());
    // the request this thread took when it finished the previous one
    let mut next: Option<(u32, Request, Instant)> = None;
    loop {
        let (key, req, queued_at) = if let Some(n) = next.take() {
            n
        } else {
            let mut w = relock();
            loop {
                if w.quit > 0 {
                    w.quit -= 1;
                    return;
                }
                let cap = w.cap;
                if let Some((key, (r, t))) = w.queue.pop(cap) {
                    break (key, r, t);
                }
                w = cv.wait(w).unwrap_or_else(|e| e.into_inner());
            }
        };
        if let Some(t) = req.not_before {
            let now = Instant::now();
            if t > now {
                std::thread::sleep(t - now);
            }
        }
        let agents = inner.agents.read().expect("agents lock").clone();
        let queued = queued_at.elapsed();
        let tag = req.tag;
        let start = Instant::now();
        // a panic in the client (it should not happen) becomes a failed request, not a lost one
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| send(&agents, &req)))
                .unwrap_or_else(|_| {
                    (
                        Err(Failure {
                            kind: FailureKind::Protocol,
                            message: "internal error in the HTTP client".into(),
                        }),
                        None,
                    )
                });
        let reply = Reply {
            tag,
            result: outcome.0,
            queued,
            headers_after: outcome.1.map(|t: Instant| t - start),
            total: start.elapsed(),
        };
        // This thread takes its next request itself, at once (unless it is to exit). Another
        // thread is woken only when more can start (one that waits for this key's cap, say):
        // waking one for nothing costs two context switches per request.
        {
            let mut w = relock();
            w.queue.done(key);
            let cap = w.cap;
            if w.quit == 0 {
                next = w.queue.pop(cap).map(|(k, (r, t))| (k, r, t));
            }
            if w.queue.poppable(cap) {
                cv.notify_one();
            }
        }
        if done.send(reply).is_err() {
            return;
        }
        (inner.notify)();
    }
}

/// Percent-encodes a query-string component (RFC 3986 unreserved characters stay).
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Appends `params` to a URL as a query string.
pub fn with_query(url: &str, params: &[(String, String)]) -> String {
    if params.is_empty() {
        return url.to_string();
    }
    let (base, fragment) = match url.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (url, None),
    };
    let mut out = base.to_string();
    out.push(if base.contains('?') { '&' } else { '?' });
    let q: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", encode_component(k), encode_component(v)))
        .collect();
    out.push_str(&q.join("&"));
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
