//! systemd's notify protocol (`Type=notify`): READY=1 once the API
//! listens, WATCHDOG=1 at half of `WATCHDOG_USEC` while the core answers,
//! STOPPING=1 when shutdown begins, and STATUS= lines along the way.
//!
//! Without `NOTIFY_SOCKET` (not under systemd) every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::metrics::{ReadyState, Sources};

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// READY=1 with a status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// STOPPING=1 with a status line.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// A STATUS= line.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// Pings the watchdog at half of `WATCHDOG_USEC`, when systemd set it, as
/// long as the core answers: a wedged core stops the pings and systemd
/// restarts the engine. A standby, which runs no core, pings while alive.
pub fn watchdog(sources: Sources, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    let Some(timeout) = sd_notify::watchdog_enabled() else {
        return tokio::spawn(async {});
    };
    let every = (timeout / 2).max(Duration::from_millis(10));
    tracing::info!(interval = ?every, "pinging the systemd watchdog");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if sources.readiness.get() != ReadyState::Serving {
                send(&[NotifyState::Watchdog]);
                continue;
            }
            match tokio::time::timeout(every, sources.core.call(|_, _| Ok(()))).await {
                Ok(Ok(())) => send(&[NotifyState::Watchdog]),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "the core does not answer; no watchdog ping")
                }
                Err(_) => {
                    tracing::warn!("the core did not answer within {every:?}; no watchdog ping")
                }
            }
        }
    })
}
