//! The `enforce` step: kind-specific rules that confine what an admitted request may read.
//!
//! [`promql`] rewrites every selector of a PromQL query; [`prometheus`] applies it to the
//! Prometheus HTTP API (which endpoints, which parameters, GET and POST form bodies);
//! [`ownership`] asks the accounting store whose jobs a query names.

pub mod ownership;
pub mod prometheus;
pub mod promql;
