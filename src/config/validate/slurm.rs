//! Checks for `[routes.slurm]`, the Slurm step of `kind = "slurmrestd"` routes: the token
//! mode, the key or token file (root-equivalent, so refused if group or others may read it),
//! claim names, token lifetime, the user map; and for `[pools.NAME.health_check]`, which
//! slurmrestd pools use with their `ping` endpoint.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::Validator;
use crate::config::{
    AuthenticatorConfig, HealthCheck, RouteKind, SlurmClaims, SlurmRoute, SlurmTokenMode, raw,
    resolve_path,
};

/// Refuses a file that group or others may read or write: it is worth root on the cluster.
fn private_file(path: &Path, what: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{what} {} is not a regular file", path.display()));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{what} {} has mode {mode:04o}: group or others may read it, and it is worth root \
             on the cluster; make it readable only by the gateway's user (chmod 600)",
            path.display()
        ));
    }
    Ok(())
}

impl Validator {
    /// `[pools.NAME.health_check]`.
    pub(super) fn health_check(
        &mut self,
        key: &str,
        raw: Option<raw::HealthCheck>,
    ) -> Option<HealthCheck> {
        let raw = raw?;
        let key = format!("{key}.health_check");
        if !raw.path.starts_with('/') || raw.path.chars().any(|c| c.is_control() || c == ' ') {
            self.err(
                format!("{key}.path"),
                "must be a request path starting with /, e.g. /slurm/v0.0.38/ping",
            );
        }
        let interval = self.duration(
            &format!("{key}.interval"),
            raw.interval.as_deref(),
            Duration::from_secs(5),
        );
        let timeout = self.duration(
            &format!("{key}.timeout"),
            raw.timeout.as_deref(),
            Duration::from_secs(2),
        );
        if interval < Duration::from_millis(100) {
            self.err(format!("{key}.interval"), "must be at least 100ms");
        }
        if timeout.is_zero() || timeout > interval {
            self.err(
                format!("{key}.timeout"),
                "must be greater than 0 and at most the interval",
            );
        }
        Some(HealthCheck {
            path: raw.path,
            interval,
            timeout,
        })
    }

    pub(super) fn slurm_route(
        &mut self,
        key: &str,
        kind: RouteKind,
        raw: Option<raw::SlurmRoute>,
        authenticators: &[String],
        auths: &BTreeMap<String, AuthenticatorConfig>,
    ) -> Option<SlurmRoute> {
        let route_key = key;
        let key = format!("{key}.slurm");
        if kind != RouteKind::Slurmrestd {
            if raw.is_some() {
                self.err(key, "only for routes of kind = \"slurmrestd\"");
            }
            return None;
        }
        if authenticators
            .iter()
            .any(|a| matches!(auths.get(a), Some(AuthenticatorConfig::None)))
        {
            self.err(
                format!("{route_key}.authenticators"),
                "a slurmrestd route cannot be public: Slurm must be told who the user is",
            );
        }
        let raw = raw.unwrap_or_default();
        let mode = raw.token_mode.as_deref().unwrap_or("mint");
        if !matches!(mode, "mint" | "impersonate" | "passthrough") {
            self.err(
                format!("{key}.token_mode"),
                format!("unknown mode `{mode}`; expected mint, impersonate or passthrough"),
            );
        }
        if mode != "mint" && raw.jwt_key_file.is_some() {
            self.err(
                format!("{key}.jwt_key_file"),
                "only for token_mode = \"mint\"",
            );
        }
        if mode != "impersonate" && raw.token_file.is_some() {
            self.err(
                format!("{key}.token_file"),
                "only for token_mode = \"impersonate\"",
            );
        }
        let token_mode = match mode {
            "mint" => self.jwt_key(&key, raw.jwt_key_file.as_deref()),
            "impersonate" => self.token_file(&key, raw.token_file.as_deref()),
            "passthrough" => Some(SlurmTokenMode::Passthrough),
            _ => None,
        };
        let token_lifetime = self.duration(
            &format!("{key}.token_lifetime"),
            raw.token_lifetime.as_deref(),
            Duration::from_secs(600),
        );
        if token_lifetime < Duration::from_secs(30) || token_lifetime > Duration::from_secs(86400) {
            self.err(
                format!("{key}.token_lifetime"),
                "must be between 30s and 24h",
            );
        }
        let mut claim = |field: &str, v: Option<String>, default: &str| {
            let v = v.unwrap_or_else(|| default.to_string());
            if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                self.err(
                    format!("{key}.{field}"),
                    format!("`{v}` is not a claim name (letters, digits, _)"),
                );
            }
            v
        };
        let claims = SlurmClaims {
            user: claim("user_claim", raw.user_claim, "sun"),
            issued_at: claim("issued_at_claim", raw.issued_at_claim, "iat"),
            expires: claim("expires_claim", raw.expires_claim, "exp"),
        };
        if claims.issued_at == claims.user {
            self.err(
                format!("{key}.issued_at_claim"),
                "must differ from user_claim",
            );
        }
        if claims.expires == claims.user || claims.expires == claims.issued_at {
            self.err(
                format!("{key}.expires_claim"),
                "must differ from user_claim and issued_at_claim",
            );
        }
        let health_user = raw.health_user.unwrap_or_else(|| "root".into());
        if !crate::enforce::slurmrestd::is_posix_name(&health_user) {
            self.err(
                format!("{key}.health_user"),
                format!("`{health_user}` is not a valid POSIX user name"),
            );
        }
        for (from, to) in &raw.user_map {
            if !crate::enforce::slurmrestd::is_posix_name(to) {
                self.err(
                    format!("{key}.user_map.{from}"),
                    format!("`{to}` is not a valid POSIX user name"),
                );
            }
        }
        Some(SlurmRoute {
            mode: token_mode?,
            token_lifetime,
            claims,
            user_map: raw.user_map,
            admin_diag: raw.admin_diag,
            health_user,
            denied_users: raw.denied_users.unwrap_or_else(|| vec!["root".into()]),
        })
    }

    pub(super) fn jwt_key(&mut self, key: &str, file: Option<&str>) -> Option<SlurmTokenMode> {
        let field = format!("{key}.jwt_key_file");
        let Some(file) = file else {
            self.err(
                field,
                "required for token_mode = \"mint\" (the default): the path of Slurm's \
                 jwt_hs256.key (AuthAltParameters=jwt_key=…)",
            );
            return None;
        };
        let path = resolve_path(&self.base, file);
        let read = private_file(&path, "Slurm JWT key").and_then(|()| {
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        });
        match read {
            Ok(bytes) if bytes.len() < 16 => {
                self.err(
                    field,
                    format!(
                        "{} holds {} bytes; Slurm's key should be 32 random bytes",
                        path.display(),
                        bytes.len()
                    ),
                );
                None
            }
            Ok(bytes) => Some(SlurmTokenMode::Mint {
                key: crate::enforce::slurmrestd::JwtKey::new(bytes),
            }),
            Err(e) => {
                self.err(field, e);
                None
            }
        }
    }

    pub(super) fn token_file(&mut self, key: &str, file: Option<&str>) -> Option<SlurmTokenMode> {
        let field = format!("{key}.token_file");
        let Some(file) = file else {
            self.err(
                field,
                "required for token_mode = \"impersonate\": a file with a token of the \
                 SlurmUser (scontrol token username=…)",
            );
            return None;
        };
        let path = resolve_path(&self.base, file);
        let checked = private_file(&path, "Slurm token file")
            .and_then(|()| crate::secret::read_secret_file(&path))
            .and_then(|t| {
                crate::enforce::slurmrestd::unverified_expiry(&t)
                    .map(|_| ())
                    .ok_or_else(|| format!("{} does not hold a JWT", path.display()))
            });
        match checked {
            Ok(()) => Some(SlurmTokenMode::Impersonate { token_file: path }),
            Err(e) => {
                self.err(field, e);
                None
            }
        }
    }
}
