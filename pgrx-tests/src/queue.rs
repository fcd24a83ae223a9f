//! Queue benchmark (issue 3): claims per second of `pulse.claim_batch` against the equivalent
//! hand-written `UPDATE ... FROM (SELECT ... FOR UPDATE SKIP LOCKED LIMIT n) ... RETURNING`, on
//! two identical 1,000,000-row queues, then again with 1,000,000 completed rows added to each.
use super::connect;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ROWS: i64 = 1_000_000;
const WINDOW: Duration = Duration::from_millis(1500);
const REPS: usize = 2;

/// What is measured: pg_pulse, or the hand-written query returning rows or jsonb (which is what
/// a claim RPC hands to PostgREST, the users' client).
#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Pulse,
    HandRows,
    HandJsonb,
}

pub fn run(port: u16) {
    let mut c = connect(port);
    eprintln!("[queue] building two 1,000,000-row queues ...");
    c.batch_execute(
        "CREATE EXTENSION IF NOT EXISTS pg_pulse;
         DROP TABLE IF EXISTS bench_q_pulse, bench_q_hand;
         CREATE TABLE bench_q_pulse(id bigserial PRIMARY KEY, payload jsonb NOT NULL);
         CREATE TABLE bench_q_hand(id bigserial PRIMARY KEY, payload jsonb NOT NULL);
         SELECT pulse.make_queue('bench_q_pulse');
         SELECT pulse.make_queue('bench_q_hand');",
    )
    .unwrap();
    for t in ["bench_q_pulse", "bench_q_hand"] {
        c.batch_execute(&format!(
            "INSERT INTO {t}(payload) SELECT jsonb_build_object('n', g, 'url', 'https://example.com/' || g)
               FROM generate_series(1, {ROWS}) g"
        ))
        .unwrap();
        c.batch_execute(&format!("VACUUM ANALYZE {t}")).unwrap();
    }
    println!(
        "\nqueue claims per second, 1,000,000 queued rows (best of {REPS} windows of {:.1} s, variants interleaved):",
        WINDOW.as_secs_f64()
    );
    let first = table(port, &mut c, "");
    eprintln!("[queue] adding 1,000,000 completed rows to each ...");
    for t in ["bench_q_pulse", "bench_q_hand"] {
        c.batch_execute(&format!(
            "INSERT INTO {t}(payload, status, finished_at, attempts)
               SELECT jsonb_build_object('n', g), 'completed', now(), 1 FROM generate_series(1, {ROWS}) g"
        ))
        .unwrap();
        c.batch_execute(&format!("VACUUM ANALYZE {t}")).unwrap();
    }
    println!("\nthe same with 1,000,000 completed rows in each table:");
    let second = table(port, &mut c, "");
    let slow: Vec<f64> = first.iter().zip(&second).map(|(a, b)| b / a).collect();
    println!(
        "pg_pulse with completed rows vs without: {} (1.00x = no slowdown)",
        slow.iter()
            .map(|r| format!("{r:.2}x"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "target (issue 3): pg_pulse / hand-written >= 1.0x at every point. claim_batch returns jsonb, so the\n\
         equivalent hand-written query is the jsonb one; the rows column shows what the JSON itself costs."
    );
    c.batch_execute("DROP TABLE bench_q_pulse, bench_q_hand")
        .unwrap();
}

/// Prints one table of points; returns pg_pulse's rates.
fn table(port: u16, c: &mut postgres::Client, _label: &str) -> Vec<f64> {
    println!(
        "{:>9} {:>6} {:>12} {:>12} {:>7} {:>12} {:>7}",
        "consumers", "batch", "pg_pulse", "hand rows", "ratio", "hand jsonb", "ratio"
    );
    let mut rates = Vec::new();
    for consumers in [1usize, 4, 16] {
        for batch in [1i32, 100] {
            let mut best = [0f64; 3];
            for _ in 0..REPS {
                for (i, v) in [Variant::HandRows, Variant::Pulse, Variant::HandJsonb]
                    .into_iter()
                    .enumerate()
                {
                    let t = if v == Variant::Pulse {
                        "bench_q_pulse"
                    } else {
                        "bench_q_hand"
                    };
                    best[i] = best[i].max(measure(port, t, v, consumers, batch));
                    reset(c, t);
                }
            }
            let [rows, pulse, json] = best;
            println!(
                "{consumers:>9} {batch:>6} {pulse:>12.0} {rows:>12.0} {:>6.2}x {json:>12.0} {:>6.2}x",
                pulse / rows,
                pulse / json
            );
            rates.push(pulse);
        }
    }
    rates
}

/// Claimed rows go back to queued, and the dead tuples are vacuumed, so every point starts alike.
fn reset(c: &mut postgres::Client, t: &str) {
    c.batch_execute(&format!(
        "UPDATE {t} SET status = 'queued', attempts = 0, locked_by = NULL, locked_until = NULL
          WHERE status = 'processing'"
    ))
    .unwrap();
    c.batch_execute(&format!("VACUUM {t}")).unwrap();
}

fn measure(port: u16, table: &str, variant: Variant, consumers: usize, batch: i32) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicU64::new(0));
    let ready = Arc::new(std::sync::Barrier::new(consumers + 1));
    let threads: Vec<_> = (0..consumers)
        .map(|w| {
            let (stop, total, ready) = (stop.clone(), total.clone(), ready.clone());
            let table = table.to_string();
            std::thread::spawn(move || {
                let mut c = connect(port);
                let worker = format!("w{w}");
                let returning = if variant == Variant::HandJsonb {
                    "to_jsonb(q.*)"
                } else {
                    "q.*"
                };
                let stmt = if variant == Variant::Pulse {
                    c.prepare(&format!(
                        "SELECT * FROM pulse.claim_batch('{table}', $1, '15 minutes', $2)"
                    ))
                } else {
                    c.prepare(&format!(
                        "UPDATE {table} q SET status = 'processing', attempts = q.attempts + 1,
                                locked_by = $2::text, locked_until = now() + interval '15 minutes'
                           FROM (SELECT id FROM {table}
                                  WHERE status = 'queued' AND run_after <= now()
                                  ORDER BY priority DESC, run_after, id
                                  LIMIT $1::int4 FOR UPDATE SKIP LOCKED) s
                          WHERE q.id = s.id
                      RETURNING {returning}"
                    ))
                }
                .unwrap();
                ready.wait();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += c.query(&stmt, &[&batch, &worker]).unwrap().len() as u64;
                }
                total.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    ready.wait();
    let start = Instant::now();
    std::thread::sleep(WINDOW);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    total.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}
