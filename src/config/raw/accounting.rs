//! `[accounting]` (metrics, clusters and their Slurm ingest) and `[web]`, the user page.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `[accounting]`: the built-in accounting service (CEEMS-compatible API). Present = on.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Accounting {
    /// Unix socket the gateway reaches the service on (mode 0600), relative to
    /// `server.state_dir` (default `accounting.sock`). Point a pool at it:
    /// `backends = ["unix:STATE_DIR/accounting.sock"]`.
    pub socket: Option<String>,
    /// `IP:PORT` for `hpcgate accounting serve` (the service alone, for separate replicas).
    pub listen: Option<String>,
    /// The shared secret gateways send as `Authorization: Bearer SECRET` to a service run by
    /// `hpcgate accounting serve` (required with `listen`; at least 32 characters).
    pub shared_secret: Option<String>,
    /// File holding the shared secret.
    pub shared_secret_file: Option<String>,
    /// Users who are accounting admins besides members of `[authorization] admin_groups`.
    #[serde(default)]
    pub admin_users: Vec<String>,
    /// Users (service accounts) that may push units with `POST /api/v1/units`.
    #[serde(default)]
    pub ingest_users: Vec<String>,
    /// Largest page of units a request gets (default 10000); `limit` asks for fewer.
    pub max_page_size: Option<u32>,
    /// Longest `from`..`to` window of a query (default 366d).
    pub max_query_window: Option<String>,
    /// The clusters whose units the service holds (`[accounting.clusters.ID]`).
    #[serde(default)]
    pub clusters: BTreeMap<String, AccountingCluster>,
    /// Aggregate metrics of units from Prometheus (`[accounting.metrics]`).
    pub metrics: Option<AccountingMetrics>,
}

/// `[accounting.metrics]`: on an interval, PromQL per running and recently ended unit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountingMetrics {
    /// A `[pools.NAME]` of Prometheus (or Thanos) with http(s) backends.
    pub pool: String,
    /// Time between passes (default 5m).
    pub interval: Option<String>,
    /// Units that ended within this long are measured again (default 1h); running ones always.
    pub lookback: Option<String>,
    /// Most units per pass (default 5000), most recently ended first.
    pub max_units: Option<usize>,
    /// Query templates, each returning one number per unit, evaluated at the unit's end (now
    /// while running). `{uuid}`, `{cluster}` and `{range}` (the unit's run time, like `3600s`)
    /// are replaced. Unset = not measured.
    #[serde(default)]
    pub queries: MetricQueries,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MetricQueries {
    /// Mean CPU usage in % of the allocation.
    pub cpu_usage: Option<String>,
    /// Mean memory usage in % of the allocation.
    pub mem_usage: Option<String>,
    /// Mean GPU usage in %.
    pub gpu_usage: Option<String>,
    /// Mean power in watts: energy (kWh) = mean power × run time; emissions = energy ×
    /// the cluster's emission_factor.
    pub power_watts: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountingCluster {
    /// `slurm` (default), `openstack` or `k8s`.
    pub manager: Option<String>,
    /// Grid emission factor in gCO2e per kWh (default 0): emissions = energy × factor.
    pub emission_factor: Option<f64>,
    /// Pull this cluster's jobs from slurmrestd's `slurmdb` endpoint.
    pub slurmrestd: Option<SlurmIngest>,
}

/// `[accounting.clusters.ID.slurmrestd]`: incremental pull of finished and running jobs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmIngest {
    /// `http://HOST:PORT` of slurmrestd (with the dbv0.0.38 plugin).
    pub url: String,
    /// OpenAPI version in the path (default `v0.0.38`).
    pub api_version: Option<String>,
    /// The Slurm user whose token reads every job (an operator or the SlurmUser; default root).
    pub user: Option<String>,
    /// Slurm's `jwt_hs256.key`: tokens for `user` are minted with it.
    pub jwt_key_file: Option<String>,
    /// Or a file with a token of `user` (`scontrol token`), re-read on every pass.
    pub token_file: Option<String>,
    /// Only jobs of this Slurm cluster name (default: every job the endpoint returns).
    pub cluster_name: Option<String>,
    /// Time between passes (default 60s).
    pub interval: Option<String>,
    /// How far back the first pass reaches (default 1d).
    pub backfill: Option<String>,
    /// Units per transaction (default 1000); the watermark moves with the last one.
    pub batch_size: Option<usize>,
}

/// `[web]`: the user page at `/` (who am I, my jobs and usage, my API keys). Present = on;
/// needs the `oidc_login` authenticator (the page is for logged-in browsers).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Web {
    /// Link from each job to its Grafana dashboard: `{uuid}`, `{cluster}`, `{start_ms}`,
    /// `{end_ms}` are replaced (URL-encoded). No link when unset.
    pub grafana_url: Option<String>,
    /// Jobs per page (default 25, at most 500).
    pub page_size: Option<u32>,
    /// Where the page links for the API documentation (default `/api/v1/docs/`).
    pub docs_url: Option<String>,
}
