//! Enqueue benchmark (issue 16), side by side with pg_net when the bench server has it preloaded
//! (pg_net is not packaged for Debian; scripts/bench.sh preloads it when its library is
//! installed, for example built from its source): (e) what one `http_post` costs inside a
//! statement making 5,000 of them, with the commit, and (f) end to end, from the start of that statement
//! (autocommit) to the last request arriving at a local keep-alive server.
use super::{connect, cpu_s};
use pulse_e2e::server::Server;
use std::time::{Duration, Instant};

const N: usize = 5_000;
const ROUNDS: usize = 5;

/// Rounds of each part: 5, or PULSE_BENCH_ROUNDS.
fn rounds() -> usize {
    std::env::var("PULSE_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(ROUNDS)
}

/// The kernel's count of connections dropped because a listen queue was full (each is retried by
/// its client a second later): `TcpExt ListenOverflows` in /proc/net/netstat, 0 where unreadable.
fn listen_overflows() -> u64 {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "ListenOverflows")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// The statement making N requests to `url` + a number, with the same JSON body and header.
/// pg_net's default timeout (5 s) is too short for thousands of connections opened at once on a
/// small machine: both get 60 s.
fn statement(system: &str) -> String {
    let timeout = if system == "net" {
        "timeout_milliseconds => 60000"
    } else {
        "timeout => '60 seconds'"
    };
    format!(
        "SELECT count({system}.http_post($1 || g, jsonb_build_object('i', g),
                 headers => '{{\"Authorization\": \"Bearer bench\"}}'::jsonb, {timeout}))
           FROM generate_series(1, {N}) g"
    )
}

/// (e) milliseconds per call: the statement and its commit (pg_pulse stores a transaction's
/// requests in bulk when it commits), then waits until they were sent.
fn enqueue_ms(c: &mut postgres::Client, system: &str, url: &str) -> f64 {
    let mut tx = c.transaction().unwrap();
    let t = Instant::now();
    tx.execute(&statement(system), &[&url]).unwrap();
    tx.commit().unwrap();
    let ms = t.elapsed().as_secs_f64() * 1000.0 / N as f64;
    quiesce(c, system);
    ms
}

/// The processes whose CPU a round reports: the session's backend, the system's worker, and
/// this program (the HTTP server).
fn processes(c: &mut postgres::Client, system: &str) -> Vec<(String, String)> {
    let worker = if system == "net" {
        "pg_net%"
    } else {
        "pg_pulse http"
    };
    let w: Option<i32> = c
        .query_opt(
            "SELECT pid FROM pg_stat_activity WHERE backend_type LIKE $1 LIMIT 1",
            &[&worker],
        )
        .unwrap()
        .map(|r| r.get(0));
    let b: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    vec![
        ("backend".into(), b.to_string()),
        ("worker".into(), w.unwrap_or(0).to_string()),
        (
            "of which main thread".into(),
            format!("{0}/task/{0}", w.unwrap_or(0)),
        ),
        ("server".into(), "self".into()),
    ]
}

/// (f) requests/s from the statement's start until the last of them arrived.
fn end_to_end(c: &mut postgres::Client, srv: &Server, system: &str, round: usize) -> f64 {
    let prefix = format!("/ok/e2e-{system}-{round}/");
    srv.forget();
    let procs = processes(c, system);
    let cpu0: Vec<f64> = procs.iter().map(|(_, p)| cpu_s(p)).collect();
    let t0 = Instant::now();
    c.execute(&statement(system), &[&srv.url(&prefix)]).unwrap();
    let stmt = t0.elapsed();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (n, last) = srv.count(&prefix);
        if n >= N {
            let rate = N as f64 / (last.unwrap() - t0).as_secs_f64();
            let first = srv.seen(&prefix).iter().map(|s| s.at).min().unwrap();
            let cpu: Vec<String> = procs
                .iter()
                .zip(&cpu0)
                .map(|((name, p), t)| format!("{name} {:.0}", (cpu_s(p) - t) * 1000.0))
                .collect();
            eprintln!(
                "[enqueue] (f) {system} round {round}: statement {:.0} ms, first arrival {:.0} ms, last {:.0} ms; CPU ms until then: {}",
                stmt.as_secs_f64() * 1000.0,
                (first - t0).as_secs_f64() * 1000.0,
                (last.unwrap() - t0).as_secs_f64() * 1000.0,
                cpu.join(", ")
            );
            quiesce(c, system);
            return rate;
        }
        assert!(
            Instant::now() < deadline,
            "{system}: only {n} of {N} arrived"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits until `system` has recorded every response (pg_net's worker writes them after they
/// arrived), so that the next round, of either system, runs on a quiet server.
fn quiesce(c: &mut postgres::Client, system: &str) {
    let busy = if system == "net" {
        "SELECT EXISTS (SELECT 1 FROM net.http_request_queue)"
    } else {
        "SELECT EXISTS (SELECT 1 FROM pulse.http_request WHERE state IN ('pending', 'sending'))"
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while c.query_one(busy, &[]).unwrap().get::<_, bool>(0) {
        assert!(Instant::now() < deadline, "{system} never finished");
        std::thread::sleep(Duration::from_millis(5));
    }
    if system == "net" {
        // the responses of the round are written in one go after the queue is empty
        std::thread::sleep(Duration::from_millis(200));
    }
    settle();
}

/// Waits (at most 5 s) until the machine is quiet: under 10% of its CPU busy over 200 ms. What
/// a round leaves running (a worker writing responses, autovacuum of the tables a round filled)
/// would otherwise take CPU from the next round, of either system.
fn settle() {
    // busy and total jiffies of all CPUs, from the first line of /proc/stat
    let sample = || -> (u64, u64) {
        let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let v: Vec<u64> = text
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        let total: u64 = v.iter().take(8).sum();
        let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
        (total - idle, total)
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let (b0, t0) = sample();
        std::thread::sleep(Duration::from_millis(200));
        let (b1, t1) = sample();
        if t1 > t0 && (b1 - b0) * 10 < t1 - t0 {
            return;
        }
    }
}

pub fn run(port: u16) {
    let srv = Server::start();
    let mut c = connect(port);
    c.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_pulse; TRUNCATE pulse.http_request;")
        .unwrap();
    let net: bool = c
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_net')
                AND current_setting('shared_preload_libraries') LIKE '%pg_net%'",
            &[],
        )
        .unwrap()
        .get(0);
    let mut systems = vec!["pulse"];
    let mut net_version = String::new();
    if net {
        c.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_net")
            .unwrap();
        net_version = c
            .query_one(
                "SELECT extversion || ', batch_size ' || current_setting('pg_net.batch_size')
                   FROM pg_extension WHERE extname = 'pg_net'",
                &[],
            )
            .unwrap()
            .get(0);
        systems.insert(0, "net");
    }
    let rounds = rounds();
    eprintln!("[enqueue] (e) {N} http_post in one statement, {rounds} rounds each ...");
    let mut per_call: Vec<Vec<f64>> = vec![Vec::new(); systems.len()];
    for _ in 0..rounds {
        for (i, s) in systems.iter().enumerate() {
            per_call[i].push(enqueue_ms(&mut c, s, &srv.url("/ok/enqueue/")));
        }
    }
    eprintln!("[enqueue] (f) {N} requests end to end, {rounds} rounds each ...");
    let mut rate: Vec<Vec<f64>> = vec![Vec::new(); systems.len()];
    let mut overflows = vec![0u64; systems.len()];
    for round in 0..rounds {
        for (i, s) in systems.iter().enumerate() {
            let before = listen_overflows();
            rate[i].push(end_to_end(&mut c, &srv, s, round));
            overflows[i] += listen_overflows().saturating_sub(before);
        }
    }
    for (i, s) in systems.iter().enumerate() {
        let r: Vec<String> = rate[i].iter().map(|x| format!("{x:.0}")).collect();
        eprintln!("[enqueue] (f) {s}: rounds {}", r.join(", "));
    }
    let e: Vec<f64> = per_call.iter_mut().map(|v| median(v)).collect();
    let f: Vec<f64> = rate.iter_mut().map(|v| median(v)).collect();
    println!("\nEnqueue (issue 16): {N} http_post calls in one statement, median of {rounds} rounds, alternating");
    if net {
        println!(
            "{:<58} {:>14} {:>16}",
            "",
            "pg_pulse",
            format!("pg_net {}", net_version.split(',').next().unwrap_or(""))
        );
        println!(
            "{:<58} {:>14} {:>16}",
            "(e) enqueue: ms per call (statement and commit)",
            format!("{:.4}", e[1]),
            format!("{:.4}", e[0])
        );
        println!(
            "{:<58} {:>14} {:>16}",
            "(f) statement start to last arrival: requests/s",
            format!("{:.0}", f[1]),
            format!("{:.0}", f[0])
        );
        println!(
            "    pg_pulse / pg_net: enqueue cost {:.2}x (target <= 1.5x), end to end {:.2}x (target >= 2x)",
            e[1] / e[0],
            f[1] / f[0]
        );
        println!("    pg_net: {net_version} (as tuned in the issue), built from its source on this machine");
        println!(
            "    connections dropped by a full listen queue (retried a second later): pg_pulse {}, pg_net {}",
            overflows[1], overflows[0]
        );
    } else {
        println!(
            "(e) enqueue: ms per call (statement and commit)             {:>14.4}",
            e[0]
        );
        println!(
            "(f) statement start to last arrival: requests/s             {:>14.0}",
            f[0]
        );
        println!("    pg_net is not installed on this machine (it is not packaged for Debian; build it from");
        println!("    https://github.com/supabase/pg_net and run make bench again to see it side by side):");
        println!("    pg_pulse's figures alone.");
    }
}
