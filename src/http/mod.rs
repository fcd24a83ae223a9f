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
//! * [`outcome`]: what is stored of a reply, an HTTP run's message and response, retry delays.
//!
//! Shell (feature `pg`):
//! * `api`: `pulse.http_request`, and the after-commit `pulse.http_post` / `http_get` /
//!   `http_delete` / `http`;
//! * `secrets`: `pulse.set_secret` / `pulse.drop_secret` (values readable by no role);
//! * `crate::worker::http`: the HTTP worker that claims, resolves, sends and records.

pub mod client;
pub mod fair;
pub mod outcome;
pub mod policy;
pub mod request;
pub mod resolve;
pub mod send;
pub mod template;
pub mod tls;

#[cfg(feature = "pg")]
pub(crate) mod api;
#[cfg(feature = "pg")]
mod secrets;
