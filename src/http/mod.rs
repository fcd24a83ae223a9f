//! HTTP jobs and after-commit requests (in progress): the pure pieces come first.
//! * [`template`]: `{{secret:..}}`, `{{setting:..}}` and run-context placeholders;
//! * [`request`]: building and validating a request (`pulse.http_request`);
//! * [`policy`]: which hosts and networks outbound requests may reach;
//! * `secrets`: `pulse.set_secret` / `pulse.drop_secret` (values readable by no role).

pub mod policy;
pub mod request;
pub mod template;

#[cfg(feature = "pg")]
mod api;
#[cfg(feature = "pg")]
mod secrets;
