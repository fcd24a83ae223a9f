//! Health benchmark (issue 4): `pulse.scheduler_health()` and `pulse.scheduler_status()` with
//! 10,000 jobs and 10,000,000 run rows.
use super::connect;
use std::time::Instant;

const JOBS: i64 = 10_000;
const RUNS: i64 = 10_000_000;

pub fn run(port: u16) {
    let mut c = connect(port);
    eprintln!("[health] creating {JOBS} jobs and {RUNS} run rows (a few minutes) ...");
    c.batch_execute(
        "CREATE EXTENSION IF NOT EXISTS pg_pulse;
         SELECT pulse.unschedule_job(job_name) FROM pulse.jobs;
         TRUNCATE pulse.job_run;",
    )
    .unwrap();
    // Jobs are created through the API in one transaction; none is due during the benchmark.
    c.batch_execute(&format!(
        "SELECT pulse.schedule_job('bench_health_' || g, '0 0 1 1 *', 'SELECT 1',
                                   enabled => g % 10 <> 0)
           FROM generate_series(1, {JOBS}) g"
    ))
    .unwrap();
    // 24 hours of statistics per job, as the executors keep them.
    c.batch_execute(
        "INSERT INTO pulse.job_stats (job_id, owner, hour_base, runs, failures, dur_ms, recent_at, recent_ms,
                                      consecutive_failures, last_run_id, last_run_at, last_status, last_message, p95_ms)
         SELECT j.job_id, j.owner, (extract(epoch FROM now()) / 3600)::bigint,
                array_fill(40, ARRAY[24]), array_fill((j.job_id % 3)::int, ARRAY[24]),
                array_fill(1200.0::float8, ARRAY[24]),
                ARRAY(SELECT (extract(epoch FROM now()) - i * 60)::bigint FROM generate_series(1, 100) i),
                ARRAY(SELECT (random() * 100)::float8 FROM generate_series(1, 100) i),
                (j.job_id % 5)::int, j.job_id, now() - interval '1 minute',
                CASE WHEN j.job_id % 5 = 0 THEN 'succeeded' ELSE 'failed' END, 'bench', random() * 100
           FROM pulse.job j
         ON CONFLICT (job_id) DO NOTHING",
    )
    .unwrap();
    let t = Instant::now();
    c.batch_execute(&format!(
        "INSERT INTO pulse.job_run (job_id, job_name, owner, scheduled_for, created_at, started_at, finished_at, status, message, database)
         SELECT j.job_id, j.job_name, j.owner::oid, ts, ts, ts, ts + interval '20 ms',
                CASE WHEN g % 50 = 0 THEN 'failed' ELSE 'succeeded' END, 'bench', j.database
           FROM generate_series(1, {RUNS}) g
           JOIN pulse.job j ON j.job_id = (SELECT min(job_id) FROM pulse.job) + g % {JOBS}
          CROSS JOIN LATERAL (SELECT now() - (({RUNS} - g) * interval '30 days' / {RUNS}) AS ts) x"
    ))
    .unwrap();
    c.batch_execute("VACUUM ANALYZE pulse.job_run").unwrap();
    c.batch_execute("VACUUM ANALYZE pulse.job, pulse.job_stats")
        .unwrap();
    // Settle the bulk load's I/O (dirty buffers, WAL) so the timings measure the functions,
    // not a checkpoint of 10,000,000 freshly written rows running beside them.
    c.batch_execute("CHECKPOINT").unwrap();
    eprintln!("[health] data ready in {:.0} s", t.elapsed().as_secs_f64());
    println!(
        "\nhealth functions with {JOBS} jobs and {RUNS} run rows (5 calls each after a warm-up):"
    );
    for f in ["pulse.scheduler_health()", "pulse.scheduler_status()"] {
        let q = format!("SELECT count(*) FROM {f}");
        c.query_one(&q, &[]).unwrap();
        let mut times: Vec<f64> = (0..5)
            .map(|_| {
                let t = Instant::now();
                c.query_one(&q, &[]).unwrap();
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        times.sort_by(|a, b| a.total_cmp(b));
        println!(
            "  {f:<26} median {:>7.1} ms   max {:>7.1} ms",
            times[2], times[4]
        );
    }
    println!("target (issue 4): under 100 ms each");
    if std::env::var_os("PULSE_BENCH_KEEP").is_some() {
        return;
    }
    c.batch_execute(
        "SELECT pulse.unschedule_job(job_name) FROM pulse.jobs WHERE job_name LIKE 'bench_health_%';
         TRUNCATE pulse.job_run;",
    )
    .unwrap();
}
