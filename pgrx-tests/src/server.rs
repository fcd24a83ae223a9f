//! A small HTTP/1.1 server on 127.0.0.1 for the HTTP tests and the benchmark: keep-alive, one
//! thread per connection, every request recorded (with its arrival instant).
//!
//! Routes: `/ok` (200, JSON), `/status/N`, `/flaky/KEY` (500 the first time, then 200),
//! `/busy/KEY` (429 with `Retry-After: 1` the first time, then 200), `/slow/MS`, `/redirect`
//! (302 to /ok), `/goto?to=LOCATION` (302 to LOCATION, as written), `/hops/N` (302 to
//! /hops/N-1; /hops/0 is 200), `/big/N` (N bytes), `/garbage` (not HTTP), `/echo` (the request's
//! headers and body), anything else 404.
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Default)]
struct State {
    seen: Mutex<Vec<Seen>>,
    hits: Mutex<HashMap<String, u32>>,
    connections: AtomicUsize,
}

#[derive(Clone)]
pub struct Server {
    pub port: u16,
    state: Arc<State>,
}

impl Server {
    pub fn start() -> Server {
        Server::start_on(0)
    }

    /// On a fixed port (0: any free one).
    pub fn start_on(port: u16) -> Server {
        Server::start_at(&format!("127.0.0.1:{port}"))
    }

    /// On an address such as `[::]:0` (IPv6 and IPv4 on Linux: `::`, `::ffff:127.0.0.1` and
    /// `127.0.0.1` all reach it).
    pub fn start_at(addr: &str) -> Server {
        // a long backlog: a client opening thousands of connections at once (pg_net does) must
        // not see SYNs dropped and retried a second later
        let sa: std::net::SocketAddr = addr
            .parse()
            .unwrap_or_else(|e| panic!("address {addr}: {e}"));
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(sa),
            socket2::Type::STREAM,
            None,
        )
        .expect("socket");
        let _ = sock.set_reuse_address(true);
        if sa.is_ipv6() {
            let _ = sock.set_only_v6(false);
        }
        sock.bind(&sa.into())
            .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        sock.listen(4096).expect("listen");
        let listener: TcpListener = sock.into();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State::default());
        let st = state.clone();
        // The accepting thread only accepts: starting a thread per connection is slower than
        // accepting one, and a client opening thousands at once (pg_net does) would otherwise
        // overflow the accept queue, so that its dropped SYNs are retried a second later.
        let (tx, rx) = std::sync::mpsc::channel::<std::net::TcpStream>();
        std::thread::spawn(move || {
            for conn in rx {
                let st = st.clone();
                let _ = std::thread::Builder::new()
                    .stack_size(256 << 10)
                    .spawn(move || serve(conn, st));
            }
        });
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                st.connections.fetch_add(1, Ordering::Relaxed);
                if tx.send(conn).is_err() {
                    break;
                }
            }
        });
        Server { port, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Requests received so far whose path starts with `prefix`.
    pub fn seen(&self, prefix: &str) -> Vec<Seen> {
        self.state
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// How many requests with that prefix arrived, and the latest arrival.
    pub fn count(&self, prefix: &str) -> (usize, Option<Instant>) {
        let seen = self.state.seen.lock().unwrap();
        let mut n = 0;
        let mut last = None;
        for s in seen.iter().filter(|s| s.path.starts_with(prefix)) {
            n += 1;
            last = Some(last.map_or(s.at, |l: Instant| l.max(s.at)));
        }
        (n, last)
    }

    /// Waits until at least `n` requests with that prefix arrived (or the timeout passed).
    pub fn wait_for(&self, prefix: &str, n: usize, timeout: Duration) -> Vec<Seen> {
        let t = Instant::now();
        loop {
            let s = self.seen(prefix);
            if s.len() >= n || t.elapsed() > timeout {
                return s;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Forgets the requests received so far. A benchmark calls it between rounds: `count` and
    /// `seen` scan every recorded request under the lock the serving threads take to record one,
    /// so polling a record that grows round after round would take CPU and the lock from the
    /// server it measures.
    pub fn forget(&self) {
        self.state.seen.lock().unwrap().clear();
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::Relaxed)
    }
}

fn serve(conn: TcpStream, st: Arc<State>) {
    let _ = conn.set_nodelay(true);
    let mut out = match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    };
    let mut r = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let len = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let at = Instant::now();
        st.seen.lock().unwrap().push(Seen {
            method: method.clone(),
            path: path.clone(),
            headers,
            body,
            at,
        });
        let first_hit = |key: &str| {
            let mut hits = st.hits.lock().unwrap();
            let n = hits.entry(key.to_string()).or_insert(0);
            *n += 1;
            *n == 1
        };
        let p = path.split('?').next().unwrap_or("").to_string();
        let seg: Vec<&str> = p.trim_start_matches('/').split('/').collect();
        let (status, extra, body): (u16, Vec<String>, Vec<u8>) = match seg.as_slice() {
            ["ok", ..] => (200, vec![], br#"{"ok": true}"#.to_vec()),
            ["status", n] => (n.parse().unwrap_or(500), vec![], b"status".to_vec()),
            ["flaky", key] => {
                if first_hit(&format!("flaky/{key}")) {
                    (500, vec![], b"try again".to_vec())
                } else {
                    (200, vec![], b"recovered".to_vec())
                }
            }
            ["busy", key] => {
                if first_hit(&format!("busy/{key}")) {
                    (429, vec!["Retry-After: 1".into()], b"slow down".to_vec())
                } else {
                    (200, vec![], b"ok now".to_vec())
                }
            }
            ["slow", ms] => {
                std::thread::sleep(Duration::from_millis(ms.parse().unwrap_or(1000)));
                (200, vec![], b"finally".to_vec())
            }
            ["echo", ..] => {
                let seen = st.seen.lock().unwrap();
                let last = seen.last().unwrap();
                let mut b = String::new();
                for (k, v) in &last.headers {
                    b.push_str(&format!("{k}: {v}\n"));
                }
                b.push_str(&String::from_utf8_lossy(&last.body));
                (
                    200,
                    vec![format!(
                        "X-Echo-Auth: {}",
                        last.header("authorization").unwrap_or("")
                    )],
                    b.into_bytes(),
                )
            }
            ["redirect", ..] => (302, vec!["Location: /ok".into()], Vec::new()),
            ["goto"] => {
                let to = path.split_once("?to=").map_or("/ok", |(_, t)| t);
                (302, vec![format!("Location: {to}")], Vec::new())
            }
            ["hops", n] => match n.parse::<u32>().unwrap_or(0) {
                0 => (200, vec![], b"arrived".to_vec()),
                n => (302, vec![format!("Location: /hops/{}", n - 1)], Vec::new()),
            },
            ["big", n] => (200, vec![], vec![b'x'; n.parse().unwrap_or(0)]),
            ["garbage", ..] => {
                let _ = out.write_all(b"this is not HTTP\r\n\r\n");
                return;
            }
            _ => (404, vec![], b"not found".to_vec()),
        };
        let mut head = format!(
            "HTTP/1.1 {status} {}\r\nContent-Length: {}\r\nContent-Type: text/plain\r\nX-Test: yes\r\n",
            reason(status),
            body.len()
        );
        for e in extra {
            head.push_str(&e);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        let mut msg = head.into_bytes();
        if method != "HEAD" {
            msg.extend_from_slice(&body);
        }
        if out.write_all(&msg).is_err() {
            return;
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        302 => "Found",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
