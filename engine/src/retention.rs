//! Retention: history older than `[retention]` says is pruned in the
//! background, by the leader only, in small batches.
//!
//! Each pass deletes at most `batch` rows of a table per statement, in
//! short transactions, and pauses between them, so that it never holds the
//! database for long: the core's group commits go on between the batches.
//! Runs not final, pending approvals and held leases are never pruned,
//! however old (the store's [`Store::prune`] promises it).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::RetentionSection;
use crate::domain::{Millis, now_ms};
use crate::store::{Prune, Pruned, Store};

/// The pause between two batches of one pass: the core's commits get the
/// database in between.
const BETWEEN_BATCHES: Duration = Duration::from_millis(20);

/// What one pass may delete, as of `now`.
pub fn cutoffs(r: &RetentionSection, now: Millis) -> Prune {
    let before = |d: Duration| now.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Prune {
        runs_before: before(r.runs),
        events_before: before(r.events),
        output_before: before(r.output),
        workers_before: before(r.workers),
        batch: r.batch,
    }
}

/// Prunes until nothing more is due (or `stop`), batch by batch; returns
/// what it deleted.
pub async fn pass(
    store: &dyn Store,
    r: &RetentionSection,
    stop: &CancellationToken,
) -> Result<Pruned, crate::store::StoreError> {
    let what = cutoffs(r, now_ms());
    let mut total = Pruned::default();
    loop {
        let p = store.prune(&what).await?;
        crate::metrics::observe_pruned(&p);
        total += p;
        let full = [p.runs, p.events, p.output, p.workers]
            .iter()
            .any(|n| *n >= u64::from(what.batch));
        if !full || stop.is_cancelled() {
            break;
        }
        tokio::time::sleep(BETWEEN_BATCHES).await;
    }
    Ok(total)
}

/// Runs a pass every `interval` until `stop`.
pub fn spawn(
    store: Arc<dyn Store>,
    r: RetentionSection,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(r.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            match pass(store.as_ref(), &r, &stop).await {
                Ok(p) if p.total() > 0 => tracing::info!(
                    runs = p.runs,
                    events = p.events,
                    output = p.output,
                    leases = p.leases,
                    workers = p.workers,
                    "retention pruned history"
                ),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "pruning history failed; trying again next interval")
                }
            }
            match store.size_bytes().await {
                Ok(bytes) => crate::metrics::observe_database_bytes(bytes),
                Err(e) => tracing::warn!(error = %e, "could not read the database size"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutoffs_lie_each_period_before_now() {
        let r = RetentionSection::default();
        let now = 100 * 24 * 3600 * 1000;
        let p = cutoffs(&r, now);
        assert_eq!(p.runs_before, now - 30 * 24 * 3600 * 1000);
        assert_eq!(p.output_before, now - 7 * 24 * 3600 * 1000);
        assert_eq!(p.batch, 1000);
    }
}
