//! The `emit_log_hook` that keeps secret values out of the server log: for every log entry
//! (error, `log_statement` line, duration line...) raised while a statement that sets a secret
//! runs (its text calls `set_secret` outside comments and string literals, see
//! `crate::http::redact`), the STATEMENT line is left out (`hide_stmt`) and the literals of the
//! statement, as written and as decoded, are masked in the message, detail, hint, context and
//! internal query. Other statements cost one `memchr` scan of their text per log entry. It is installed in every process that loads pg_pulse, so in
//! every backend when pg_pulse is in `shared_preload_libraries` (also for errors raised while a
//! statement is parsed, before any pg_pulse function runs). The masking changes what the client
//! receives in the same way.

use crate::http::redact;
use pgrx::pg_sys;
use std::ffi::CStr;

static mut PREVIOUS: pg_sys::emit_log_hook_type = None;

/// Installs the hook (once per process, from `_PG_init`), keeping any hook installed before.
pub fn install() {
    unsafe {
        PREVIOUS = pg_sys::emit_log_hook;
        pg_sys::emit_log_hook = Some(hook);
    }
}

unsafe fn mask(field: *mut std::ffi::c_char, needles: &[Vec<u8>]) {
    if field.is_null() {
        return;
    }
    let len = CStr::from_ptr(field).to_bytes().len();
    let bytes = std::slice::from_raw_parts_mut(field as *mut u8, len);
    redact::mask_field(bytes, needles);
}

unsafe extern "C-unwind" fn hook(edata: *mut pg_sys::ErrorData) {
    // nothing here may raise an error or unwind into PostgreSQL's error reporting
    let _ = std::panic::catch_unwind(|| unsafe {
        let q = pg_sys::debug_query_string;
        if edata.is_null() || q.is_null() {
            return;
        }
        let statement = CStr::from_ptr(q).to_bytes();
        if !redact::sets_secret(statement) {
            return;
        }
        let e = &mut *edata;
        e.hide_stmt = true;
        let needles = redact::needles(statement);
        for field in [
            e.message,
            e.detail,
            e.detail_log,
            e.hint,
            e.context,
            e.internalquery,
        ] {
            mask(field, &needles);
        }
    });
    if let Some(prev) = PREVIOUS {
        prev(edata);
    }
}
