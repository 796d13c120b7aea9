//! The outcome of the last config (re)load, kept apart from [`crate::process::reload`] so
//! that `/-/status` (`site::ops`) can read it without importing the reload machinery and,
//! through it, the config.

use std::path::Path;
use std::sync::Mutex;

use serde_json::{Value, json};

/// The outcome of the last (re)load, for `/-/status`.
struct Outcome {
    config: String,
    at: String,
    ok: bool,
    error: Option<String>,
    applied_at: String,
}

static OUTCOME: Mutex<Option<Outcome>> = Mutex::new(None);

pub(crate) fn record(result: Result<(), String>, path: &Path) {
    let at = crate::process::audit::now_rfc3339();
    if let Ok(mut o) = OUTCOME.lock() {
        let applied_at = match (&result, o.as_ref()) {
            (Err(_), Some(prev)) => prev.applied_at.clone(),
            _ => at.clone(),
        };
        *o = Some(Outcome {
            config: path.display().to_string(),
            at,
            ok: result.is_ok(),
            error: result.err(),
            applied_at,
        });
    }
}

/// The config file, when it was applied, and the last reload's outcome.
pub fn status() -> Value {
    match OUTCOME.lock().ok().as_deref().and_then(|o| o.as_ref()) {
        Some(o) => json!({
            "file": o.config,
            "applied_at": o.applied_at,
            "last_reload": {"at": o.at, "ok": o.ok, "error": o.error},
        }),
        None => Value::Null,
    }
}
