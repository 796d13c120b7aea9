//! The accounting tables: one migration for SQLite and PostgreSQL alike (portable DDL:
//! `BIGINT` times in Unix seconds, `DOUBLE PRECISION` metrics, 0/1 flags).

/// Run by [`crate::db`] as migration 2.
pub const SCHEMA: &str = "
CREATE TABLE acct_clusters (
    id TEXT PRIMARY KEY,
    manager TEXT NOT NULL,
    emission_factor DOUBLE PRECISION NOT NULL DEFAULT 0
);
CREATE TABLE acct_units (
    cluster_id TEXT NOT NULL,
    uuid TEXT NOT NULL,
    resource_manager TEXT NOT NULL,
    name TEXT NOT NULL,
    username TEXT NOT NULL,
    project TEXT NOT NULL,
    groupname TEXT NOT NULL,
    partition_name TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    ended_at BIGINT NOT NULL,
    elapsed BIGINT NOT NULL,
    alloc_cpus BIGINT NOT NULL,
    alloc_mem BIGINT NOT NULL,
    alloc_gpus BIGINT NOT NULL,
    alloc_nodes BIGINT NOT NULL,
    cpu_usage DOUBLE PRECISION,
    cpu_time DOUBLE PRECISION,
    mem_usage DOUBLE PRECISION,
    gpu_usage DOUBLE PRECISION,
    energy_kwh DOUBLE PRECISION,
    emissions_g DOUBLE PRECISION,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (cluster_id, uuid)
);
CREATE INDEX acct_units_user_end ON acct_units (username, ended_at);
CREATE INDEX acct_units_project_end ON acct_units (project, ended_at);
CREATE INDEX acct_units_end ON acct_units (ended_at);
CREATE INDEX acct_units_uuid ON acct_units (uuid);
CREATE INDEX acct_units_rollup ON acct_units (cluster_id, username, project);
CREATE TABLE acct_users (
    name TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL
);
CREATE TABLE acct_projects (
    name TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL
);
CREATE TABLE acct_memberships (
    project TEXT NOT NULL,
    username TEXT NOT NULL,
    group_admin BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (project, username)
);
CREATE INDEX acct_memberships_user ON acct_memberships (username, project);
CREATE TABLE acct_admins (
    username TEXT PRIMARY KEY,
    source TEXT NOT NULL
);
CREATE TABLE acct_usage (
    cluster_id TEXT NOT NULL,
    username TEXT NOT NULL,
    project TEXT NOT NULL,
    resource_manager TEXT NOT NULL,
    num_units BIGINT NOT NULL,
    walltime BIGINT NOT NULL,
    alloc_cputime BIGINT NOT NULL,
    alloc_gputime BIGINT NOT NULL,
    cpu_usage_weighted DOUBLE PRECISION NOT NULL,
    cpu_weight BIGINT NOT NULL,
    gpu_usage_weighted DOUBLE PRECISION NOT NULL,
    gpu_weight BIGINT NOT NULL,
    energy_kwh DOUBLE PRECISION NOT NULL,
    emissions_g DOUBLE PRECISION NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (cluster_id, username, project)
);
CREATE INDEX acct_usage_project ON acct_usage (project);
CREATE TABLE acct_watermarks (
    cluster_id TEXT NOT NULL,
    source TEXT NOT NULL,
    value BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (cluster_id, source)
);
";
