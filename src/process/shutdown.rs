//! Graceful stop: SIGTERM or SIGINT stop the listeners, in-flight requests finish, and the
//! process exits as soon as none is left or the configured grace period is over, whichever
//! comes first. A second signal exits at once. SIGQUIT is pingora's graceful upgrade.
//!
//! pingora alone would sleep the whole grace period even when nothing is in flight; the
//! in-flight count here lets a quiet gateway stop in a fraction of a second.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{SignalKind, signal};

static DRAINING: AtomicBool = AtomicBool::new(false);
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// True once a stop signal arrived: `/-/ready` answers 503.
pub fn draining() -> bool {
    DRAINING.load(Ordering::Relaxed)
}

/// Counts one request in flight for as long as it lives.
pub struct InFlight(());

impl InFlight {
    pub fn start() -> Self {
        IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
        InFlight(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct Signals;

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            tracing::error!("cannot install signal handlers; stopping");
            return ShutdownSignal::FastShutdown;
        };
        let name = tokio::select! {
            _ = quit.recv() => {
                tracing::info!("SIGQUIT: handing listeners to the new process (graceful upgrade)");
                return ShutdownSignal::GracefulUpgrade;
            }
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        DRAINING.store(true, Ordering::Relaxed);
        tracing::info!(
            signal = name,
            in_flight = IN_FLIGHT.load(Ordering::Relaxed),
            "stopping: no new connections; waiting for in-flight requests"
        );
        // A second signal means "now".
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::warn!("second stop signal: exiting without waiting");
            std::process::exit(1);
        });
        std::thread::spawn(|| {
            // Give connections that were just accepted a moment to register their request.
            std::thread::sleep(Duration::from_millis(200));
            let mut quiet = 0;
            loop {
                if IN_FLIGHT.load(Ordering::Relaxed) == 0 {
                    quiet += 1;
                    if quiet >= 3 {
                        tracing::info!("no request in flight: exiting");
                        std::process::exit(0);
                    }
                } else {
                    quiet = 0;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        });
        ShutdownSignal::GracefulTerminate
    }
}
