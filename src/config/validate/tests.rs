//! Whole files through `parse`: what a minimal config needs and how errors are reported.

use super::*;

fn errors(text: &str) -> Vec<String> {
    match parse(text, Path::new("/nonexistent/t.toml")) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

const MIN: &str = r#"
[[listeners]]
address = "127.0.0.1:8080"
[pools.p]
backends = ["http://127.0.0.1:9000"]
[authenticators.public]
type = "none"
[[routes]]
name = "r"
path_prefix = "/r"
pool = "p"
authenticators = ["public"]
"#;

#[test]
fn a_minimal_config_is_accepted() {
    assert_eq!(errors(MIN), Vec::<String>::new());
}

#[test]
fn every_error_is_reported_with_file_and_key() {
    let text = format!(
        "{MIN}\n[[routes]]\nname = \"r\"\npath_prefix = \"/r/\"\npool = \"nope\"\n\
         authenticators = []\nbogus = 1\n[[routes]]\nname = \"s\"\npath_prefix = \"/s\"\n\
         pool = \"nope\"\nauthenticators = [\"ghost\"]\n"
    );
    let errs = errors(&text);
    assert!(
        errs.iter()
            .any(|e| e.starts_with("/nonexistent/t.toml:routes[1]") && e.contains("bogus")),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.contains("routes[2].pool: unknown pool `nope`")),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.contains("routes[2].authenticators[0]: unknown authenticator")),
        "{errs:?}"
    );
}

#[test]
fn plaintext_outside_loopback_needs_consent() {
    let text = MIN.replace("127.0.0.1:8080", "0.0.0.0:8080");
    assert!(errors(&text)[0].contains("listeners[0].address: plain HTTP"));
    let text = text.replace(
        "address = \"0.0.0.0:8080\"",
        "address = \"0.0.0.0:8080\"\nallow_plaintext = true",
    );
    assert!(errors(&text).is_empty());
}

#[test]
fn public_cannot_mix_with_real_authenticators() {
    let text = MIN.replace(
        "authenticators = [\"public\"]",
        "authenticators = [\"public\", \"public2\"]",
    ) + "[authenticators.public2]\ntype = \"none\"\n";
    assert!(
        errors(&text)
            .iter()
            .any(|e| e.contains("cannot be combined"))
    );
}
