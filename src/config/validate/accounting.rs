//! Checks for `[accounting]`: the built-in accounting service.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use super::Validator;
use crate::accounting::ingest::metrics::{MetricKind, MetricsConfig};
use crate::accounting::ingest::slurm::SlurmIngest;
use crate::accounting::{AccountingConfig, ClusterConfig};
use crate::config::{BackendAddr, PoolConfig, raw, resolve_path};

/// The shortest shared secret accepted between gateways and `hpcgate accounting serve`.
const MIN_SECRET_LEN: usize = 32;

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

impl Validator {
    fn metrics(
        &mut self,
        raw: raw::AccountingMetrics,
        pools: &BTreeMap<String, PoolConfig>,
    ) -> Option<MetricsConfig> {
        let key = "accounting.metrics";
        let pool = match pools.get(&raw.pool) {
            None => {
                self.err(
                    format!("{key}.pool"),
                    format!("unknown pool `{}`", raw.pool),
                );
                None
            }
            Some(p) => {
                let mut bases = Vec::new();
                for b in &p.backends {
                    match b {
                        BackendAddr::Tcp { addr, host, tls } => {
                            let host = if host.contains(':') { format!("[{host}]") } else { host.clone() };
                            bases.push(format!("{}://{host}:{}", if *tls { "https" } else { "http" }, addr.port()));
                        }
                        BackendAddr::Unix(_) => self.err(
                            format!("{key}.pool"),
                            format!("pool `{}` has a unix: backend; the metrics queries need http(s) backends", raw.pool),
                        ),
                    }
                }
                Some((bases, p.authorization.clone()))
            }
        };
        let interval = self.duration(
            &format!("{key}.interval"),
            raw.interval.as_deref(),
            Duration::from_secs(300),
        );
        if interval < Duration::from_secs(1) {
            self.err(format!("{key}.interval"), "must be at least 1s");
        }
        let lookback = self.duration(
            &format!("{key}.lookback"),
            raw.lookback.as_deref(),
            Duration::from_secs(3600),
        );
        let max_units = raw.max_units.unwrap_or(5000);
        if !(1..=1_000_000).contains(&max_units) {
            self.err(format!("{key}.max_units"), "must be between 1 and 1000000");
        }
        let q = raw.queries;
        let mut queries = Vec::new();
        let mut given = 0;
        for (name, kind, template) in [
            ("cpu_usage", MetricKind::CpuUsage, q.cpu_usage),
            ("mem_usage", MetricKind::MemUsage, q.mem_usage),
            ("gpu_usage", MetricKind::GpuUsage, q.gpu_usage),
            ("power_watts", MetricKind::PowerWatts, q.power_watts),
        ] {
            let Some(t) = template else { continue };
            given += 1;
            let sample =
                crate::accounting::ingest::metrics::expand(&t, "0123-abc", "cluster-0", 3600);
            // The gateway's parse: promql-parser panics on a few inputs; this catches that.
            if let Err(
                crate::enforce::promql::Refusal::Invalid(e)
                | crate::enforce::promql::Refusal::Forbidden(e),
            ) = crate::enforce::promql::parse(&sample)
            {
                self.err(
                    format!("{key}.queries.{name}"),
                    format!(
                        "not PromQL once {{uuid}}, {{cluster}} and {{range}} are filled in: {e}"
                    ),
                );
                continue;
            }
            queries.push((kind, t));
        }
        if given == 0 {
            self.err(
                format!("{key}.queries"),
                "set at least one of cpu_usage, mem_usage, gpu_usage, power_watts",
            );
        }
        let (bases, authorization) = pool?;
        Some(MetricsConfig {
            bases,
            authorization,
            interval,
            lookback,
            max_units,
            queries,
        })
    }

    fn slurm_ingest(&mut self, cluster_key: &str, raw: raw::SlurmIngest) -> Option<SlurmIngest> {
        let key = format!("{cluster_key}.slurmrestd");
        let url = raw.url.trim_end_matches('/').to_string();
        let ok_url = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'));
        if !ok_url {
            self.err(
                format!("{key}.url"),
                format!(
                    "`{}` must be http://HOST:PORT or https://HOST:PORT",
                    raw.url
                ),
            );
        }
        let api_version = raw.api_version.unwrap_or_else(|| "v0.0.38".into());
        if !api_version.starts_with('v')
            || !api_version[1..]
                .chars()
                .all(|c| c.is_ascii_digit() || c == '.')
        {
            self.err(
                format!("{key}.api_version"),
                format!("`{api_version}` is not like v0.0.38"),
            );
        }
        let user = raw.user.unwrap_or_else(|| "root".into());
        if !crate::enforce::slurmrestd::is_posix_name(&user) {
            self.err(
                format!("{key}.user"),
                format!("`{user}` is not a valid POSIX user name"),
            );
        }
        let token = match (raw.jwt_key_file, raw.token_file) {
            (Some(_), Some(_)) => {
                self.err(
                    format!("{key}.token_file"),
                    "set jwt_key_file or token_file, not both",
                );
                None
            }
            (Some(f), None) => self.jwt_key(&key, Some(&f)),
            (None, Some(f)) => self.token_file(&key, Some(&f)),
            (None, None) => {
                self.err(
                    format!("{key}.jwt_key_file"),
                    "the ingest needs a Slurm token: jwt_key_file (Slurm's jwt_hs256.key) or \
                     token_file",
                );
                None
            }
        };
        let interval = self.duration(
            &format!("{key}.interval"),
            raw.interval.as_deref(),
            Duration::from_secs(60),
        );
        if interval < Duration::from_secs(1) {
            self.err(format!("{key}.interval"), "must be at least 1s");
        }
        let backfill = self.duration(
            &format!("{key}.backfill"),
            raw.backfill.as_deref(),
            Duration::from_secs(86_400),
        );
        let batch_size = raw.batch_size.unwrap_or(1000);
        if !(1..=100_000).contains(&batch_size) {
            self.err(format!("{key}.batch_size"), "must be between 1 and 100000");
        }
        Some(SlurmIngest {
            url,
            api_version,
            user,
            token: token?,
            cluster_name: raw.cluster_name,
            interval,
            backfill,
            batch_size,
        })
    }

    pub(super) fn accounting(
        &mut self,
        raw: raw::Accounting,
        state_dir: &std::path::Path,
        admin_groups: &[String],
        pools: &BTreeMap<String, PoolConfig>,
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
            let slurmrestd = c.slurmrestd.and_then(|s| self.slurm_ingest(&key, s));
            clusters.insert(
                id,
                ClusterConfig {
                    manager,
                    emission_factor,
                    slurmrestd,
                },
            );
        }
        let metrics = raw.metrics.and_then(|m| self.metrics(m, pools));
        AccountingConfig {
            metrics,
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
