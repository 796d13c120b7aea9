//! [`Secret`]: a value that must never be printed, logged or compared in variable time.

use subtle::ConstantTimeEq;

/// A secret string. `Debug` prints `***`; equality is constant-time.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }
    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn ct_eq(&self, other: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(other).into()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Expands `${NAME}` references to environment variables in a secret given inline.
/// An unset variable is an error naming it (never the value).
pub fn expand_env(value: &str) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "unterminated `${` in value".to_string())?;
        let name = &after[..end];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "`${{{name}}}` is not a valid environment variable name"
            ));
        }
        let v =
            std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))?;
        out.push_str(&v);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Reads a secret from a file, trimming one trailing newline.
pub fn read_secret_file(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
    let value = text.strip_suffix('\n').unwrap_or(&text);
    let value = value.strip_suffix('\r').unwrap_or(value);
    if value.is_empty() {
        return Err(format!("secret file {} is empty", path.display()));
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        assert_eq!(format!("{:?}", Secret::new("hunter2".into())), "***");
    }

    #[test]
    fn env_references_expand_and_unset_ones_are_named() {
        let path = std::env::var("PATH").unwrap();
        assert_eq!(expand_env("x ${PATH} y").unwrap(), format!("x {path} y"));
        let err = expand_env("${HPCGATE_TEST_UNSET_Y}").unwrap_err();
        assert!(err.contains("HPCGATE_TEST_UNSET_Y"));
        assert!(expand_env("${bad-name}").is_err());
        assert!(expand_env("${OPEN").is_err());
    }
}
