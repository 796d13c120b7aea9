//! hpcgate: an authenticating reverse proxy and gateway for HPC centres.
//!
//! The request pipeline, one module per step (see `gateway.rs`, which calls them):
//! [`sanitize`] → [`route`] → [`authenticate`] → [`authorize`] → [`upstream`] →
//! [`rewrite`] → log ([`telemetry`]).
#![forbid(unsafe_code)]

pub mod accounting;
pub mod audit;
pub mod authenticate;
pub mod authorize;
pub mod cli;
pub mod config;
pub mod deadlines;
pub mod demo;
pub mod endpoints;
pub mod enforce;
pub mod error;
pub mod gateway;
pub mod health;
pub mod online;
pub mod privileges;
pub mod reload;
pub mod rewrite;
pub mod route;
pub mod sanitize;
pub mod secret;
pub mod server;
pub mod shutdown;
pub mod slurm;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod tokens;
pub mod upstream;
pub mod web;
