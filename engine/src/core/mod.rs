//! The single-writer engine loop.
//!
//! One task owns the [`State`]. Commands arrive on a channel; everything
//! that arrived while the previous transaction was committing is applied in
//! order, written in one transaction (group commit), and only then are the
//! callers answered, the workers told and the events published. Timers
//! (lease expiry, heartbeat loss, approval deadlines, retry backoff) are
//! fired by the same loop, so there are no races between handlers.

mod state;
mod tx;

use std::sync::Arc;
use std::time::Duration;

use opsdeck_proto::v1 as pb;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub use state::{CoreConfig, Lagged, Snapshot, State, Subscription};
pub use tx::{Effect, Tx};

use crate::domain::now_ms;
use crate::error::{EngineError, EngineResult};
use crate::store::{Store, StoreError};

/// Finished runs loaded at start for the console's cache.
const RECENT_FINISHED: u32 = 1000;

/// The most commands applied in one transaction.
const MAX_BATCH: usize = 2048;

type Job = Box<dyn FnOnce(&mut State, &mut Tx) + Send>;

/// A cheap handle to the core, cloned into every service. It exists
/// before the core does: a standby serves with a handle whose core starts
/// only once the engine leads (see [`start`]).
#[derive(Clone, Default)]
pub struct CoreHandle {
    tx: Arc<std::sync::OnceLock<mpsc::Sender<Job>>>,
}

impl CoreHandle {
    /// A handle to a core not started yet; calls answer UNAVAILABLE until
    /// [`start`] starts it.
    pub fn unstarted() -> Self {
        Self::default()
    }

    fn sender(&self) -> EngineResult<&mpsc::Sender<Job>> {
        self.tx.get().ok_or_else(|| {
            EngineError::Unavailable(
                "this engine is a standby and holds no state; call the leader".into(),
            )
        })
    }

    /// Runs `f` on the live state inside the next batch; its answer is
    /// delivered once that batch is committed.
    pub async fn call<T, F>(&self, f: F) -> EngineResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut State, &mut Tx) -> EngineResult<T> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job: Job = Box::new(move |state, tx| {
            let result = f(state, tx);
            tx.reply(reply, result);
        });
        self.sender()?.send(job).await.map_err(|_| stopping())?;
        rx.await.map_err(|_| stopping())?
    }

    /// Like [`call`](Self::call) without waiting for the answer (agent
    /// messages: heartbeats, output), keeping their order.
    pub async fn cast<F>(&self, f: F) -> EngineResult<()>
    where
        F: FnOnce(&mut State, &mut Tx) + Send + 'static,
    {
        self.sender()?
            .send(Box::new(f))
            .await
            .map_err(|_| stopping())
    }
}

fn stopping() -> EngineError {
    EngineError::Unavailable(
        "the engine is shutting down; retry against the engine once it is back".into(),
    )
}

/// The core task's end: `Ok` once `shutdown` was cancelled and the batch
/// in flight committed; [`StoreError::Fenced`] when another engine took
/// the lead, after which this one must not go on.
pub type CoreTask = tokio::task::JoinHandle<Result<(), StoreError>>;

/// Starts the core behind `handle` on `store`, loading its state (the
/// events' `seq` goes on from the store's last one, whichever engine wrote
/// it). A handle is started once; starting it again is refused.
pub async fn start(
    handle: &CoreHandle,
    cfg: CoreConfig,
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
) -> Result<CoreTask, StoreError> {
    let loaded = store.load(RECENT_FINISHED).await?;
    let state = State::load(cfg.clone(), loaded, now_ms());
    tracing::info!(seq = state.seq(), "state loaded");
    let (tx, rx) = mpsc::channel(8192);
    if handle.tx.set(tx).is_err() {
        return Err(StoreError::Corrupt {
            what: "engine core".into(),
            why: "started twice".into(),
        });
    }
    Ok(tokio::spawn(run(state, cfg, store, rx, shutdown)))
}

async fn run(
    mut state: State,
    cfg: CoreConfig,
    store: Arc<dyn Store>,
    mut rx: mpsc::Receiver<Job>,
    shutdown: CancellationToken,
) -> Result<(), StoreError> {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    loop {
        let wake = state
            .next_timer()
            .map(|at| Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)))
            .unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            n = rx.recv_many(&mut batch, MAX_BATCH) => if n == 0 { break },
            _ = tokio::time::sleep(wake) => {}
        }
        let mut tx = Tx::new(now_ms());
        for job in batch.drain(..) {
            job(&mut state, &mut tx);
        }
        state.fire_timers(&mut tx);
        state.dispatch(&mut tx);
        let committed = if tx.has_writes() {
            let b = state.batch(&mut tx);
            store.commit(&b).await.map(|()| b.events)
        } else {
            Ok(Vec::new())
        };
        match committed {
            Ok(events) => {
                finish(tx, None);
                let events: Vec<Arc<pb::Event>> = events.into_iter().map(Arc::new).collect();
                crate::metrics::observe_committed(&events);
                state.publish(&events);
            }
            Err(e @ StoreError::Fenced { .. }) => {
                // Another engine leads now: whatever this one holds is
                // stale, and it must neither write nor answer from it.
                tracing::error!(error = %e, "fenced: another engine took the lead; stopping the core");
                let err = EngineError::Unavailable(format!("{e}; retry against the leader"));
                finish(tx, Some(&err));
                return Err(e);
            }
            Err(e) => {
                // The live state holds changes the database refused: answer
                // every caller UNAVAILABLE and rebuild from what was committed.
                tracing::error!(error = %e, "commit failed; reloading state from the database");
                let err = EngineError::Unavailable(format!(
                    "the engine could not write to its database ({e}); nothing of this request was kept, retry it"
                ));
                finish(tx, Some(&err));
                state = reload(&cfg, &store, state).await;
            }
        }
    }
    tracing::info!("engine core stopped");
    Ok(())
}

fn finish(tx: Tx, failed: Option<&EngineError>) {
    for effect in tx.effects {
        match effect {
            Effect::Reply(f) => f(failed),
            Effect::Send(to, msg) => {
                if failed.is_none() {
                    // A closed session is already being cleaned up.
                    let _ = to.send(*msg);
                }
            }
        }
    }
}

/// Rebuilds the state from the store, keeping the connected workers and
/// stream subscribers of the old one.
async fn reload(cfg: &CoreConfig, store: &Arc<dyn Store>, old: State) -> State {
    let mut delay = Duration::from_millis(200);
    loop {
        match store.load(RECENT_FINISHED).await {
            Ok(loaded) => {
                let mut state = State::load(cfg.clone(), loaded, now_ms());
                state.adopt_connections(old);
                return state;
            }
            Err(e) => {
                tracing::error!(error = %e, "reloading state failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}
