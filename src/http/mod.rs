//! HTTP jobs and after-commit requests.
//!
//! Pure core (no pgrx):
//! * [`template`]: `{{secret:..}}`, `{{setting:..}}` and run-context placeholders;
//! * [`request`]: building and validating a request (`pulse.http_request`);
//! * [`policy`]: which hosts and networks outbound requests may reach;
//! * [`client`]: the pool of HTTP threads (ureq, keep-alive) that send resolved requests.
//!
//! Shell (feature `pg`):
//! * `api`: `pulse.http_request`, and the after-commit `pulse.http_post` / `http_get` /
//!   `http_delete` / `http`;
//! * `secrets`: `pulse.set_secret` / `pulse.drop_secret` (values readable by no role);
//! * `send` (in `crate::worker::http`): the HTTP worker that resolves, sends and records.

pub mod client;
pub mod policy;
pub mod request;
pub mod template;

#[cfg(feature = "pg")]
pub(crate) mod api;
#[cfg(feature = "pg")]
mod secrets;
