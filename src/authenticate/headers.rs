//! Which request headers carry identity, and how header names compare.
//!
//! Authentication owns the list of identity headers a client may not send; the proxy's
//! sanitize step strips them and its rewrite step compares names with the same rule.

/// The built-in inbound identity headers that are always stripped.
pub const IDENTITY_HEADERS: &[&str] = &[
    "x-slurm-user-name",
    "x-slurm-user-token",
    "x-grafana-user",
    "x-forwarded-user",
    "x-forwarded-groups",
    "x-forwarded-email",
    "x-forwarded-preferred-username",
    "x-remote-user",
    "remote-user",
    "x-auth-request-user",
    "x-auth-request-email",
    "x-auth-request-groups",
    "x-authenticated-user",
    "x-ceems-admin-user",
    "x-ceems-logged-user",
    "x-hpcgate-user",
    "x-hpcgate-groups",
];

/// Headers that ask an upstream to act as if the request had another method. Always
/// stripped on the way in: policy decides on the request's own method, so a read-only
/// permission must not become a write through `X-HTTP-Method-Override: DELETE`.
pub const METHOD_OVERRIDE_HEADERS: &[&str] = &[
    "x-http-method-override",
    "x-method-override",
    "x-http-method",
];

/// Header names compare case-insensitively with `_` ≡ `-`.
pub fn normalize_header_name(name: &str) -> String {
    name.trim()
        .chars()
        .map(|c| {
            if c == '_' {
                '-'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// Whether header `name` is `normalized` (lower case, `-`) under the same rule as
/// [`normalize_header_name`], without allocating: for per-request checks of one name.
pub fn header_is(name: &str, normalized: &str) -> bool {
    let name = name.trim();
    name.len() == normalized.len()
        && name.bytes().zip(normalized.bytes()).all(|(a, b)| {
            let a = if a == b'_' {
                b'-'
            } else {
                a.to_ascii_lowercase()
            };
            a == b
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_agrees_with_normalize_header_name() {
        for name in [
            "X-API-Key",
            "x_api_key",
            "X_Api-KEY",
            " x-api-key ",
            "x-api-keys",
            "x-apikey",
        ] {
            assert_eq!(
                header_is(name, "x-api-key"),
                normalize_header_name(name) == "x-api-key",
                "{name}"
            );
        }
    }
}
