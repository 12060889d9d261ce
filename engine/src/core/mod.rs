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

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use opsdeck_proto::v1 as pb;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

pub use state::{
    BulkAction, CoreConfig, Followed, Lagged, OncallFigures, OutputFollow, Snapshot, State,
    Subscription,
};
pub use tx::{Effect, Tx};

use crate::domain::now_ms;
use crate::error::{EngineError, EngineResult};
use crate::store::{Batch, Encoded, Store, StoreError, Turn};

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
    let loaded = store.load(recent(&cfg)).await?;
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

/// What a committed batch publishes: its events, and the output chunks
/// their followers get.
type Committed = (Vec<pb::Event>, Vec<pb::OutputChunk>);

/// Commits in flight at once: one being written while the next is
/// encoded (its JSON bodies and event rows), which then commits only once
/// the first was written (on SQLite it waits to write at all; PostgreSQL
/// runs its statements meanwhile).
const DEPTH: usize = 2;

/// The fewest events a batch has to be sealed while another is written.
const ENCODE_AHEAD_EVENTS: usize = 512;

/// A transaction whose batch is being written: what to do once it is.
struct InFlight {
    /// What the core had applied when the batch was built.
    sealed: u64,
    /// When the commit started, for the log.
    started: std::time::Instant,
    /// The commit, on a task of its own: encoding the batch and the
    /// database's work run beside the core applying the next batch.
    commit: tokio::task::JoinHandle<Result<Committed, StoreError>>,
    effects: Tx,
}

/// The last commit started: what the next one waits for.
struct Last {
    /// Fires once its batch is encoded.
    encoded: Option<oneshot::Receiver<()>>,
    /// Fires once its statements ran (only its commit is left).
    ran: Option<watch::Receiver<bool>>,
    /// Whether they did.
    statements_ran: bool,
    /// Its `ran`, and whether it was written: the next commit commits
    /// (on SQLite, writes) only once it was.
    ends: Option<(watch::Receiver<bool>, oneshot::Receiver<bool>)>,
}

impl Last {
    fn none() -> Self {
        Self {
            encoded: None,
            ran: None,
            statements_ran: false,
            ends: None,
        }
    }
}

/// Starts writing `batch` on a task of its own, after the commit whose
/// ends are `before` (if any).
fn start_commit(
    store: Arc<dyn Store>,
    batch: Batch,
    before: Option<(watch::Receiver<bool>, oneshot::Receiver<bool>)>,
) -> (tokio::task::JoinHandle<Result<Committed, StoreError>>, Last) {
    let (encoded_tx, encoded) = oneshot::channel();
    let (ran_tx, ran) = watch::channel(false);
    let (written_tx, written) = oneshot::channel();
    let commit = tokio::spawn(async move {
        let result = async {
            let rows = Encoded::new(&batch)?;
            let _ = encoded_tx.send(());
            store.write(rows, Turn::new(before, ran_tx)).await
        }
        .await;
        let _ = written_tx.send(result.is_ok());
        result.map(|()| (batch.events, batch.outputs))
    });
    (
        commit,
        Last {
            encoded: Some(encoded),
            ran: Some(ran.clone()),
            statements_ran: false,
            ends: Some((ran, written)),
        },
    )
}

/// The loop: apply what arrives to the state at once, and write it while
/// the next arrivals are applied. Batches are written one at a time, in
/// order (the next one encoded meanwhile); a batch's callers are answered,
/// its workers told and its events published only once it is committed.
async fn run(
    mut state: State,
    cfg: CoreConfig,
    store: Arc<dyn Store>,
    mut rx: mpsc::Receiver<Job>,
    shutdown: CancellationToken,
) -> Result<(), StoreError> {
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    // Applied to the state, waiting for a commit to start.
    let mut pending: Option<(Tx, usize)> = None;
    let mut in_flight: VecDeque<InFlight> = VecDeque::with_capacity(DEPTH);
    let mut last = Last::none();
    let mut stopping = false;
    let overlaps = store.overlaps_writes();
    loop {
        let due = state.next_timer();
        let wake = due
            .map(|at| Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)))
            .unwrap_or(Duration::from_secs(3600));
        // A pending batch that is full waits for a commit to start.
        let room = MAX_BATCH - pending.as_ref().map_or(0, |(_, n)| *n);
        let mut committed = None;
        tokio::select! {
            biased;
            _ = shutdown.cancelled(), if !stopping => stopping = true,
            result = async {
                match in_flight.front_mut() {
                    // A panicked commit is a failed one: the state is
                    // reloaded from what the database holds.
                    Some(f) => (&mut f.commit)
                        .await
                        .unwrap_or_else(|e| Err(StoreError::CommitTask(e.to_string()))),
                    None => std::future::pending().await,
                }
            }, if !in_flight.is_empty() => committed = Some(result),
            _ = async {
                match last.encoded.as_mut() {
                    Some(encoded) => {
                        let _ = encoded.await;
                    }
                    None => std::future::pending().await,
                }
            }, if last.encoded.is_some() => last.encoded = None,
            _ = async {
                match last.ran.as_mut() {
                    Some(ran) => {
                        let _ = ran.wait_for(|ran| *ran).await;
                    }
                    None => std::future::pending().await,
                }
            }, if last.ran.is_some() => {
                last.ran = None;
                last.statements_ran = true;
            }
            n = rx.recv_many(&mut jobs, room), if room > 0 && !stopping => if n == 0 { stopping = true },
            _ = tokio::time::sleep(wake), if !stopping => {}
            else => {}
        }
        if let Some(result) = committed {
            let Some(done) = in_flight.pop_front() else {
                continue;
            };
            match result {
                Ok((events, outputs)) => {
                    tracing::debug!(
                        events = events.len(),
                        ms = done.started.elapsed().as_secs_f64() * 1000.0,
                        "committed"
                    );
                    finish(done.effects, None);
                    let events: Vec<Arc<pb::Event>> = events.into_iter().map(Arc::new).collect();
                    crate::metrics::observe_committed(&events);
                    state.publish_output(outputs, &events);
                    state.publish(&events);
                    state.committed(done.sealed);
                    state.evict(now_ms());
                }
                Err(e) => {
                    let fenced = matches!(e, StoreError::Fenced { .. });
                    let err = if fenced {
                        // Another engine leads now: whatever this one holds
                        // is stale, and it must neither write nor answer
                        // from it.
                        tracing::error!(error = %e, "fenced: another engine took the lead; stopping the core");
                        EngineError::Unavailable(format!("{e}; retry against the leader"))
                    } else {
                        // The live state holds changes the database refused
                        // (and the later ones built on them): answer every
                        // caller UNAVAILABLE and rebuild from what was
                        // committed.
                        tracing::error!(error = %e, "commit failed; reloading state from the database");
                        EngineError::Unavailable(format!(
                            "the engine could not write to its database ({e}); nothing of this request was kept, retry it"
                        ))
                    };
                    finish(done.effects, Some(&err));
                    // The commits after it write nothing: they wait for its
                    // word, which was no.
                    for later in in_flight.drain(..) {
                        let _ = later.commit.await;
                        finish(later.effects, Some(&err));
                    }
                    last = Last::none();
                    if let Some((tx, _)) = pending.take() {
                        finish(tx, Some(&err));
                    }
                    if fenced {
                        return Err(e);
                    }
                    state = reload(&cfg, &store, state).await;
                    continue;
                }
            }
        }
        if !stopping || !jobs.is_empty() {
            let (tx, applied) = pending.get_or_insert_with(|| (Tx::new(now_ms()), 0));
            tx.now = now_ms();
            *applied += jobs.len();
            for job in jobs.drain(..) {
                job(&mut state, tx);
            }
            if !stopping {
                state.notice_stall(tx, due);
                state.fire_timers(tx);
                state.dispatch(tx);
            }
        }
        // The next batch is sealed at once when nothing is being written.
        // While something is, once the last one started is encoded: at
        // once if the store runs a write's statements while the one before
        // commits (PostgreSQL); else once the last one's statements ran, so
        // that it is encoded while that one syncs (SQLite), or before if it
        // is big enough for its encoding to be worth doing meanwhile (small
        // ones wait: another commit costs more than it saves).
        let seal = match pending.as_ref() {
            Some(_) if in_flight.is_empty() => true,
            Some((tx, _)) => {
                in_flight.len() < DEPTH
                    && last.encoded.is_none()
                    && (overlaps || last.statements_ran || tx.events.len() >= ENCODE_AHEAD_EVENTS)
            }
            None => false,
        };
        if seal && let Some((mut tx, applied)) = pending.take() {
            if tx.has_writes() {
                let batch = state.batch(&mut tx);
                let after = if in_flight.is_empty() {
                    None
                } else {
                    last.ends.take()
                };
                let (commit, next) = start_commit(store.clone(), batch, after);
                last = next;
                in_flight.push_back(InFlight {
                    sealed: state.sealed(),
                    started: std::time::Instant::now(),
                    commit,
                    effects: tx,
                });
            } else if in_flight.is_empty() {
                // Reads only, and nothing before them to wait for.
                finish(tx, None);
            } else {
                // Reads only: answered once what they read is committed.
                pending = Some((tx, applied));
            }
        }
        if stopping && in_flight.is_empty() && pending.is_none() {
            break;
        }
        if in_flight.is_empty() {
            // Idle: finished runs past the cache's age can go.
            state.evict(now_ms());
        }
    }
    tracing::info!("engine core stopped");
    Ok(())
}

/// Finished runs loaded at start for the console's cache.
fn recent(cfg: &CoreConfig) -> u32 {
    u32::try_from(cfg.finished_runs_kept).unwrap_or(u32::MAX)
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
        match store.load(recent(cfg)).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn batch_of(seq: u64) -> Batch {
        Batch {
            events: vec![pb::Event {
                seq,
                at_ms: 1,
                kind: "run.submitted".into(),
                actor: "alice".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    async fn seqs(store: &Arc<dyn Store>) -> Vec<u64> {
        let events = store.events_after(0, 100, None).await.unwrap();
        events.into_iter().map(|e| e.seq).collect()
    }

    #[tokio::test]
    async fn commits_started_together_are_written_in_order() {
        for b in crate::store::conformance::backends().await {
            let store = b.store;
            let (first, last) = start_commit(store.clone(), batch_of(1), None);
            let (second, _) = start_commit(store.clone(), batch_of(2), last.ends);
            assert!(second.await.unwrap().is_ok(), "{}", b.name);
            assert!(first.await.unwrap().is_ok(), "{}", b.name);
            assert_eq!(seqs(&store).await, [1, 2], "{}", b.name);
        }
    }

    #[tokio::test]
    async fn a_commit_after_a_failed_one_writes_nothing() {
        for b in crate::store::conformance::backends().await {
            let store = b.store;
            store.commit(&batch_of(1)).await.unwrap();
            // Seq 1 again: the database refuses the first commit. (On
            // PostgreSQL the second runs its statements meanwhile, and
            // rolls them back.)
            let (first, last) = start_commit(store.clone(), batch_of(1), None);
            let (second, _) = start_commit(store.clone(), batch_of(2), last.ends);
            assert!(first.await.unwrap().is_err(), "{}", b.name);
            assert!(
                matches!(second.await.unwrap(), Err(StoreError::EarlierCommitFailed)),
                "{}",
                b.name
            );
            assert_eq!(
                seqs(&store).await,
                [1],
                "the second batch was not written ({})",
                b.name
            );
        }
    }

    #[tokio::test]
    async fn a_commit_changing_what_the_one_before_wrote_lands_after_it() {
        use crate::domain::RunState;
        use crate::store::conformance::run;
        use crate::store::conformance_runs::split;
        for b in crate::store::conformance::backends().await {
            let store = b.store;
            // The second changes the run the first makes (on PostgreSQL its
            // statements wait for the first's row, then commit after it).
            let mut made = split(&run("r1", RunState::Queued));
            made.events = batch_of(1).events;
            let mut changed = split(&run("r1", RunState::Running));
            changed.steps.clear();
            changed.events = batch_of(2).events;
            let (first, last) = start_commit(store.clone(), made, None);
            let (second, _) = start_commit(store.clone(), changed, last.ends);
            assert!(second.await.unwrap().is_ok(), "{}", b.name);
            assert!(first.await.unwrap().is_ok(), "{}", b.name);
            let got = store.get_run("r1").await.unwrap().unwrap();
            assert_eq!(got.state, RunState::Running, "{}", b.name);
            assert_eq!(got.steps.len(), 1, "{}", b.name);
            assert_eq!(seqs(&store).await, [1, 2], "{}", b.name);
        }
    }
}
