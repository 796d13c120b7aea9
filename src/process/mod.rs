//! The process around the pipeline: serving the listeners ([`server`]), reload on SIGHUP,
//! graceful shutdown, dropping privileges, connection deadlines, TLS material, telemetry
//! (logs and metrics), the audit log, `check-config --online` and the embedded demo.

pub mod audit;
pub mod deadlines;
pub mod demo;
pub mod online;
pub mod privileges;
pub mod reload;
pub mod reload_outcome;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
