//! Config parsing on arbitrary text: `config::parse` returns a checked config or a list of
//! `FILE:KEY: reason` errors, never panics, and never echoes the config text.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    // Beside the test configs, so that the files they name (users, policies, keys) exist and
    // the seeds get past the file checks. The validator only reads files.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/configs/fuzz.toml");
    if let Err(errors) = hpcgate::config::parse(text, &path) {
        assert!(!errors.0.is_empty(), "an error with no problems in it");
        for e in &errors.0 {
            assert!(!e.reason.is_empty());
            let _ = e.to_string();
        }
    }
});
