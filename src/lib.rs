//! hpcgate: an authenticating reverse proxy and gateway for HPC centres.
//!
//! The request's way through the crate (ARCHITECTURE.md has the whole map):
//! [`proxy`] (sanitize → route, the pingora callbacks, upstream pools, rewrite) →
//! [`authenticate`] → [`authorize`] → [`enforce`] (one gate per route kind) → upstream.
//! Beside the pipeline: [`site`] (the gateway's own endpoints and pages), [`accounting`]
//! (the CEEMS-compatible service), [`db`] (the shared database), [`process`] (serving,
//! reload, shutdown, privileges, TLS, telemetry, audit) and [`config`].
#![forbid(unsafe_code)]

pub mod accounting;
pub mod authenticate;
pub mod authorize;
pub mod cli;
pub mod config;
pub mod db;
pub mod enforce;
pub mod error;
pub mod process;
pub mod proxy;
pub mod secret;
pub mod site;
pub mod tokens;
