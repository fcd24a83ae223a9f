//! HTTP jobs and after-commit requests.
//!
//! Pure core (no pgrx):
//! * [`template`]: `{{secret:..}}`, `{{setting:..}}` and run-context placeholders;
//! * [`request`]: building and validating a request (`pulse.http_request`);
//! * [`policy`]: which hosts and networks outbound requests may reach;
//! * [`client`]: the pool of HTTP threads (ureq, keep-alive) that send resolved requests;
//! * [`send`]: one request on a thread: URL checks, redirects (each checked), failures;
//! * [`tls`]: the root certificates HTTPS trusts (the system's, plus `pulse.http_ca_file`);
//! * [`fair`]: the queue of requests waiting for a thread, fair between owners;
//! * [`resolve`]: a stored request to a request ready to send (placeholders resolved through the
//!   caller's lookups), and scrubbing secrets from what comes back;
//! * [`scrub`]: secrets scrubbed from what comes back, also JSON-escaped or URL-encoded;
//! * [`seal`]: secrets sealed at rest (XChaCha20-Poly1305, bound to owner and name);
//!   [`keyfile`]: the cluster's key in the data directory, created on first use;
//! * [`redact`]: what the log hook masks in log lines of statements that set secrets;
//!   [`sqllex`]: the small SQL lexer it uses (comments, literals decoded, identifiers);
//! * [`outcome`]: what is stored of a reply, an HTTP run's message and response, retry delays;
//! * [`answered`]: replies held until the worker records them (it sends first while busy);
//!   [`pace`]: when the worker claims more work.
//!
//! Shell (feature `pg`):
//! * `api`: `pulse.http_request`, and the after-commit `pulse.http_post` / `http_get` /
//!   `http_delete` / `http`;
//! * `secrets`: `pulse.set_secret` / `set_secret_from_file` / `drop_secret` (values sealed,
//!   readable by no role), opening them for the worker, re-sealing them for REASSIGN OWNED;
//! * `outbox`: the transaction's after-commit requests, written to `pulse.http_request` in bulk;
//! * `loghook`: the `emit_log_hook` that keeps secret values out of the server log;
//! * `crate::worker::http`: the HTTP worker that claims, resolves, sends and records.

pub mod answered;
pub mod client;
pub mod fair;
pub mod keyfile;
pub mod outcome;
pub mod pace;
pub mod policy;
pub mod redact;
pub mod request;
pub mod resolve;
pub mod scrub;
pub mod seal;
pub mod send;
pub mod sqllex;
pub mod template;
pub mod tls;

#[cfg(feature = "pg")]
pub(crate) mod api;
#[cfg(feature = "pg")]
mod loghook;
#[cfg(feature = "pg")]
mod outbox;
#[cfg(feature = "pg")]
pub(crate) mod secrets;

/// Installs the log hook that keeps secret values out of the server log (`loghook`).
#[cfg(feature = "pg")]
pub(crate) fn install_log_hook() {
    loghook::install();
}
