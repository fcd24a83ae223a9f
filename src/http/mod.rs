//! HTTP jobs and after-commit requests (in progress): the pure pieces come first.
//! * [`template`]: `{{secret:..}}`, `{{setting:..}}` and run-context placeholders;
//! * [`policy`]: which hosts and networks outbound requests may reach.

pub mod policy;
pub mod template;
