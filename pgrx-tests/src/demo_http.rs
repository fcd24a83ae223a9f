//! `make demo`'s local HTTP endpoint (127.0.0.1:8787 by default): the test server's routes
//! (`/ok/...` answers 200), printing one line per request it receives.
use pulse_e2e::server::Server;
use std::time::Duration;

fn main() {
    let port = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(8787);
    let srv = Server::start_on(port);
    println!("demo HTTP endpoint listening on http://127.0.0.1:{port}");
    let mut shown = 0;
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let seen = srv.seen("/");
        for s in &seen[shown..] {
            let auth = s.header("authorization").map_or(String::new(), |a| {
                // show that the secret arrived, without printing it
                format!(
                    " Authorization: {}...",
                    a.chars().take(10).collect::<String>()
                )
            });
            println!("{} {}{auth} {}", s.method, s.path, s.body_text());
        }
        shown = seen.len();
    }
}
