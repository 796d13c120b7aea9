//! The `enforce` step: kind-specific rules that confine what an admitted request may read.
//!
//! [`promql`] rewrites every selector of a PromQL query; [`prometheus`] applies it to the
//! Prometheus HTTP API (which endpoints, which parameters, GET and POST form bodies);
//! [`ownership`] asks the accounting store whose jobs a query names; [`go_form`] models how
//! Prometheus itself reads a request's parameters, for the tests that judge what is forwarded;
//! [`slurmrestd`] mints Slurm tokens and classifies Slurm's admin paths.

pub mod go_form;
pub mod ownership;
pub mod prometheus;
pub mod promql;
pub mod slurmrestd;
