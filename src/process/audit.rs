//! The audit log: one JSON line per decision (who, which route, what, allowed or denied and
//! by which policy, the backend, status and latency), separate from the access log.
//!
//! Lines are handed to a writer thread, so a slow disk never blocks a request. At most
//! `[audit] backlog` lines wait for it: when the disk stalls for longer than that, further
//! records are dropped, counted (`hpcgate_audit_records_dropped_total`) and reported in the
//! log once per episode, rather than held in memory until the process is killed. Nothing
//! secret is ever put in a record: the path without its query, names, and decisions.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};

use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Record<'a> {
    pub time: String,
    pub request_id: &'a str,
    pub client: String,
    pub user: &'a str,
    pub via: &'a str,
    pub auth: &'a str,
    pub route: &'a str,
    pub action: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    /// `allow` or `deny`.
    pub decision: &'static str,
    pub reason: String,
    pub policies: &'a [String],
    pub backend: String,
    pub status: u16,
    pub latency_ms: f64,
    /// The PromQL (`query` or `match[]`) as it went upstream, after enforcement.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promql: Option<&'a str>,
}

/// How long the writer waits after a write before taking the next lines (see `open`).
const COALESCE: std::time::Duration = std::time::Duration::from_millis(2);

pub struct AuditLog {
    tx: Option<mpsc::Sender<String>>,
    /// Lines sent and not yet taken by the writer. (Counted beside an unbounded channel: a
    /// bounded one would allocate all `backlog` slots up front.)
    queued: Arc<AtomicUsize>,
    backlog: usize,
    /// Records are being dropped (the backlog is full).
    dropping: AtomicBool,
}

impl AuditLog {
    /// `backlog`: lines that may wait for the writer before records are dropped.
    pub fn open(sink: &AuditSink, backlog: usize) -> Result<AuditLog, String> {
        let mut out: Box<dyn Write + Send> = match sink {
            AuditSink::Off => {
                return Ok(AuditLog {
                    tx: None,
                    queued: Arc::default(),
                    backlog,
                    dropping: AtomicBool::new(false),
                });
            }
            AuditSink::Stdout => Box::new(std::io::stdout()),
            AuditSink::File(path) => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| format!("audit log directory {}: {e}", dir.display()))?;
                }
                Box::new(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .mode(0o640)
                        .open(path)
                        .map_err(|e| format!("cannot open audit log {}: {e}", path.display()))?,
                )
            }
        };
        let (tx, rx) = mpsc::channel::<String>();
        let queued = Arc::new(AtomicUsize::new(0));
        let taken = queued.clone();
        std::thread::Builder::new()
            .name("hpcgate-audit".into())
            .spawn(move || {
                while let Ok(line) = rx.recv() {
                    let mut batch = line;
                    batch.push('\n');
                    let mut lines = 1;
                    // Take whatever else is queued, then write and flush once.
                    while let Ok(more) = rx.try_recv() {
                        batch.push_str(&more);
                        batch.push('\n');
                        lines += 1;
                    }
                    taken.fetch_sub(lines, Ordering::Relaxed);
                    if out
                        .write_all(batch.as_bytes())
                        .and_then(|_| out.flush())
                        .is_err()
                    {
                        tracing::error!("cannot write the audit log");
                    }
                    // Let lines gather before the next write. A sender only wakes this thread
                    // (a futex call) when it waits in `recv`, so under load this turns one
                    // wake-up and one write(2) per request into one per COALESCE; when idle a
                    // line is still written at once.
                    std::thread::sleep(COALESCE);
                }
            })
            .map_err(|e| format!("cannot start the audit writer: {e}"))?;
        Ok(AuditLog {
            tx: Some(tx),
            queued,
            backlog,
            dropping: AtomicBool::new(false),
        })
    }

    pub fn write(&self, record: &Record<'_>) {
        let Some(tx) = &self.tx else { return };
        if self.queued.load(Ordering::Relaxed) < self.backlog {
            let Ok(line) = serde_json::to_string(record) else {
                return;
            };
            self.queued.fetch_add(1, Ordering::Relaxed);
            if tx.send(line).is_ok() {
                if self.dropping.load(Ordering::Relaxed)
                    && self.dropping.swap(false, Ordering::Relaxed)
                {
                    tracing::warn!("the audit log is being written again");
                }
                return;
            }
        }
        crate::process::telemetry::metrics().audit_dropped.inc();
        if !self.dropping.swap(true, Ordering::Relaxed) {
            tracing::error!(
                "audit records are being dropped: the audit log's writer is behind by \
                 [audit] backlog lines (a stalled or full disk?); see \
                 hpcgate_audit_records_dropped_total"
            );
        }
    }
}

/// Creates the audit log file (and its directory) if missing, so that it can be handed to
/// the unprivileged user before the switch.
pub fn create(path: &std::path::Path) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("audit log directory {}: {e}", dir.display()))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map(|_| ())
        .map_err(|e| format!("cannot open audit log {}: {e}", path.display()))
}

/// Now, as RFC 3339 UTC.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Where audit lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditSink {
    Off,
    Stdout,
    File(std::path::PathBuf),
}
