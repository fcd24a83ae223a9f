//! End-to-end: the HTTP worker across its own restarts and the server's: SIGTERM of the worker,
//! crashes around a send (HTTP job slots, after-commit requests). These tests stop the HTTP worker
//! or restart the shared test server, so they run one at a time (a lock), in their own test
//! binary (cargo runs binaries one by one).
mod common;
use common::*;
use postgres::Client;
use pulse_e2e::server::Server;
use std::sync::Mutex;
use std::time::Duration;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

fn http_worker_pid(c: &mut Client) -> Option<i32> {
    c.query_opt(
        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_pulse http'",
        &[],
    )
    .unwrap()
    .map(|r| r.get(0))
}

#[test]
fn the_http_worker_comes_back_after_sigterm() {
    let _g = serial();
    let srv = Server::start();
    let mut c = admin();
    let old = wait_for(60, "the HTTP worker", || http_worker_pid(&mut c));
    let stopped: bool = c
        .query_one("SELECT pg_terminate_backend($1)", &[&old])
        .unwrap()
        .get(0);
    assert!(stopped);
    wait_for(30, "the stopped HTTP worker to exit", || unsafe {
        (libc_kill(old, 0) != 0).then_some(())
    });
    // a request committed after it exited is sent by the worker the postmaster starts again
    let path = format!("/ok/{}", unique("after_sigterm"));
    let id: i64 = c
        .query_one("SELECT pulse.http_post($1, '{}')", &[&srv.url(&path)])
        .unwrap()
        .get(0);
    let (state, code, _) = wait_request_final(&mut c, id);
    assert_eq!((state.as_str(), code), ("succeeded", Some(200)));
    assert_eq!(srv.seen(&path).len(), 1);
    let new = http_worker_pid(&mut c).expect("an HTTP worker");
    assert_ne!(new, old);
}
