//! Checks for `[accounting]`: the built-in accounting service.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use super::Validator;
use crate::accounting::{AccountingConfig, ClusterConfig};
use crate::config::{raw, resolve_path};

/// The shortest shared secret accepted between gateways and `hpcgate accounting serve`.
const MIN_SECRET_LEN: usize = 32;

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

impl Validator {
    pub(super) fn accounting(
        &mut self,
        raw: raw::Accounting,
        state_dir: &std::path::Path,
        admin_groups: &[String],
    ) -> AccountingConfig {
        let socket = resolve_path(
            state_dir,
            raw.socket.as_deref().unwrap_or("accounting.sock"),
        );
        if socket.as_os_str().len() > 100 {
            // sun_path is 108 bytes on Linux.
            self.err(
                "accounting.socket",
                format!(
                    "{} is too long for a Unix socket path (at most 100 bytes)",
                    socket.display()
                ),
            );
        }
        let listen = raw.listen.as_deref().and_then(|l| match l.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(
                    "accounting.listen",
                    format!("`{l}` is not IP:PORT (e.g. 127.0.0.1:9020)"),
                );
                None
            }
        });
        let shared_secret = self.secret(
            "accounting",
            ("shared_secret", raw.shared_secret),
            ("shared_secret_file", raw.shared_secret_file),
        );
        if let Some(s) = &shared_secret
            && s.expose().len() < MIN_SECRET_LEN
        {
            self.err(
                "accounting.shared_secret",
                format!(
                    "must be at least {MIN_SECRET_LEN} characters (e.g. `openssl rand -hex 32`)"
                ),
            );
        }
        if listen.is_some() && shared_secret.is_none() {
            self.err(
                "accounting.listen",
                "needs shared_secret or shared_secret_file: over TCP the service trusts only \
                 gateways that present it",
            );
        }
        for (field, list) in [
            ("admin_users", &raw.admin_users),
            ("ingest_users", &raw.ingest_users),
        ] {
            for (i, u) in list.iter().enumerate() {
                if u.trim().is_empty() {
                    self.err(format!("accounting.{field}[{i}]"), "must not be empty");
                }
            }
        }
        let max_page_size = match raw.max_page_size {
            None => 10_000,
            Some(n) if (1..=1_000_000).contains(&n) => n as usize,
            Some(_) => {
                self.err("accounting.max_page_size", "must be between 1 and 1000000");
                10_000
            }
        };
        let max_query_window = self.duration(
            "accounting.max_query_window",
            raw.max_query_window.as_deref(),
            Duration::from_secs(366 * 86_400),
        );
        if max_query_window < Duration::from_secs(3600) {
            self.err("accounting.max_query_window", "must be at least 1h");
        }
        let mut clusters = BTreeMap::new();
        for (id, c) in raw.clusters {
            let key = format!("accounting.clusters.{id}");
            if !is_name(&id) {
                self.err(
                    key.clone(),
                    "a cluster id uses only letters, digits, - _ . (at most 64)",
                );
            }
            let manager = c.manager.unwrap_or_else(|| "slurm".into());
            if !["slurm", "openstack", "k8s"].contains(&manager.as_str()) {
                self.err(
                    format!("{key}.manager"),
                    format!("unknown manager `{manager}`; expected slurm, openstack or k8s"),
                );
            }
            let emission_factor = c.emission_factor.unwrap_or(0.0);
            if !emission_factor.is_finite() || !(0.0..=10_000.0).contains(&emission_factor) {
                self.err(
                    format!("{key}.emission_factor"),
                    "must be between 0 and 10000 gCO2e/kWh",
                );
            }
            clusters.insert(
                id,
                ClusterConfig {
                    manager,
                    emission_factor,
                },
            );
        }
        AccountingConfig {
            socket,
            listen,
            shared_secret,
            admin_groups: admin_groups.iter().cloned().collect::<HashSet<_>>(),
            admin_users: raw.admin_users.into_iter().collect(),
            ingest_users: raw.ingest_users.into_iter().collect(),
            max_page_size,
            max_query_window,
            clusters,
        }
    }
}
