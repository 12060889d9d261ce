//! List, then watch: the feed behind Console.Watch and Events.FollowEvents.
//!
//! The core registers the subscriber at its current seq (the head) in the
//! same step that takes the snapshot, so the snapshot (or the replay of
//! events up to the head, read from the store) and the live events after the
//! head meet exactly: no gap, no duplicate.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use opsdeck_proto::v1 as pb;
use opsdeck_proto::v1::console_server::Console;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{
    Api,
    auth::{caller, grants},
};
use crate::core::{Snapshot, Subscription};
use crate::store::Store;

/// A snapshot chunk stays well under gRPC's default 4 MiB message limit.
const CHUNK_BYTES: usize = 1024 * 1024;
/// Events read from the store per page of a replay.
const REPLAY_PAGE: u64 = 1000;
/// An idle stream hears from the engine this often.
const HEARTBEAT: Duration = Duration::from_secs(10);

pub struct Feed {
    store: std::sync::Arc<dyn Store>,
    sub: Subscription,
    resume_after: u64,
    run: Option<String>,
}

pub async fn feed(
    api: &Api,
    resume_after: u64,
    run: Option<String>,
    snapshot: bool,
) -> Result<Feed, Status> {
    // History pruned since the client's seq cannot be replayed: it gets a
    // fresh snapshot instead, as when its seq is from another database.
    let resume_after = if snapshot && resume_after > 0 {
        let first_kept = api
            .store
            .first_kept_seq()
            .await
            .map_err(super::store_error)?;
        if first_kept == 0 || first_kept > resume_after + 1 {
            0
        } else {
            resume_after
        }
    } else {
        resume_after
    };
    let filter = run.clone();
    let sub = api
        .core
        .call(move |s, tx| Ok(s.subscribe(resume_after, filter, snapshot, tx.now)))
        .await?;
    Ok(Feed {
        store: api.store.clone(),
        sub,
        resume_after,
        run,
    })
}

type Item = Result<pb::WatchMessage, Status>;

fn msg(kind: pb::watch_message::Kind) -> Item {
    Ok(pb::WatchMessage { kind: Some(kind) })
}

impl Feed {
    pub fn into_stream(self) -> ReceiverStream<Item> {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(self.pump(tx));
        ReceiverStream::new(rx)
    }

    /// Sends snapshot or replay, then live events, until the client goes
    /// away, the engine stops, or the client falls behind (resync).
    async fn pump(mut self, out: mpsc::Sender<Item>) {
        use pb::watch_message::Kind;
        let head = self.sub.head;
        if let Some(snapshot) = self.sub.snapshot.take() {
            if send_snapshot(&out, head, snapshot).await.is_err() {
                return;
            }
        } else {
            let mut after = self.resume_after;
            while after < head {
                let until = (after + REPLAY_PAGE).min(head);
                let events = match self.store.events_between(after, until).await {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = out.send(Err(super::store_error(e))).await;
                        return;
                    }
                };
                for e in events {
                    if self.run.as_deref().is_some_and(|r| r != e.run_id) {
                        continue;
                    }
                    if out.send(msg(Kind::Event(e))).await.is_err() {
                        return;
                    }
                }
                after = until;
            }
        }
        let mut last_seq = head;
        let lagged = self.sub.lagged.clone();
        // One timer for the stream, not one made and dropped per event: a
        // heartbeat every HEARTBEAT, busy or quiet.
        let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.sub.rx.recv() => match event {
                    Some(e) => {
                        last_seq = e.seq;
                        // A client that stopped reading blocks this send; once
                        // the core cuts it off, stop waiting and drop what is
                        // buffered, so a stalled client holds no more memory.
                        tokio::select! {
                            biased;
                            () = lagged.wait() => break,
                            // The last watcher to get an event takes it
                            // without a copy.
                            sent = out.send(msg(Kind::Event(Arc::unwrap_or_clone(e)))) => if sent.is_err() {
                                return;
                            },
                        }
                    }
                    None => break,
                },
                _ = beat.tick() => {
                    let beat = pb::Heartbeat { seq: last_seq, at_ms: crate::domain::now_ms() };
                    if out.send(msg(Kind::Heartbeat(beat))).await.is_err() {
                        return;
                    }
                }
                _ = out.closed() => return,
            }
        }
        // Free the buffered events before waiting on a client that may
        // never read again.
        drop(self.sub.rx);
        if lagged.is_set() {
            let reason = format!(
                "this client fell behind (more than its buffer of unread events) after seq {last_seq}"
            );
            let _ = out.send(msg(Kind::Resync(pb::Resync { reason }))).await;
        } else {
            let _ = out
                .send(Err(Status::unavailable(
                    "the engine is shutting down; reconnect and resume from your last seq",
                )))
                .await;
        }
    }
}

async fn send_snapshot(out: &mpsc::Sender<Item>, seq: u64, s: Snapshot) -> Result<(), ()> {
    use pb::watch_message::Kind;
    out.send(msg(Kind::SnapshotBegin(pb::SnapshotBegin { seq })))
        .await
        .map_err(drop)?;
    let mut chunk = pb::SnapshotChunk {
        workers: s.workers,
        queues: s.queues,
        leases: s.leases,
        approvals: s.approvals,
        quarantines: s.quarantines,
        schedules: s.schedules,
        ..Default::default()
    };
    let mut size = chunk.encoded_len();
    for run in s.runs {
        let len = run.encoded_len();
        if size + len > CHUNK_BYTES && !chunk.runs.is_empty() {
            out.send(msg(Kind::SnapshotChunk(std::mem::take(&mut chunk))))
                .await
                .map_err(drop)?;
            size = 0;
        }
        size += len + 8;
        chunk.runs.push(run);
    }
    out.send(msg(Kind::SnapshotChunk(chunk)))
        .await
        .map_err(drop)?;
    out.send(msg(Kind::SnapshotEnd(pb::SnapshotEnd { seq })))
        .await
        .map_err(drop)?;
    Ok(())
}

#[tonic::async_trait]
impl Console for Api {
    async fn whoami(
        &self,
        req: Request<pb::WhoamiRequest>,
    ) -> Result<Response<pb::WhoamiResponse>, Status> {
        let actor = caller(&req)?;
        let grants = grants(&req)?;
        let head_seq = self.core.call(|s, _| Ok(s.seq())).await?;
        Ok(Response::new(pb::WhoamiResponse {
            head_seq,
            identity: actor.name,
            transport: actor.transport.to_owned(),
            engine_version: env!("CARGO_PKG_VERSION").to_owned(),
            engine_id: self.engine_id.clone(),
            // Every role held, included ones too (admin lists operator,
            // approver and viewer), so a client checks for the one an
            // action needs.
            roles: grants.roles().map(|r| r.word().to_owned()).collect(),
            leader_epoch: self.role.borrow().epoch(),
        }))
    }

    async fn resolve_id(
        &self,
        req: Request<pb::ResolveIdRequest>,
    ) -> Result<Response<pb::ResolveIdResponse>, Status> {
        Ok(Response::new(
            Api::resolve_id(self, req.into_inner()).await?,
        ))
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Item> + Send>>;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let req = req.into_inner();
        let feed = feed(self, req.resume_after_seq, None, true).await?;
        Ok(Response::new(Box::pin(feed.into_stream())))
    }
}
