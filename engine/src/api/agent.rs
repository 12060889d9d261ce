//! The Agent service: one bidirectional stream per worker process.
//!
//! The handler does no work itself: it forwards each message to the core in
//! order and relays what the core sends back on the session's channel.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::FutureExt;
use opsdeck_proto::v1 as pb;
use opsdeck_proto::v1::agent_server::Agent;
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt, wrappers::UnboundedReceiverStream};
use tonic::{Request, Response, Status, Streaming};

use super::Api;
use super::auth::{agent_scope, caller};
use crate::core::CoreHandle;

static SESSIONS: AtomicU64 = AtomicU64::new(1);

#[tonic::async_trait]
impl Agent for Api {
    type SessionStream = Pin<Box<dyn Stream<Item = Result<pb::EngineMessage, Status>> + Send>>;

    async fn session(
        &self,
        req: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let actor = caller(&req)?;
        let scope = agent_scope(&req)?;
        let mut inbound = req.into_inner();
        let first = inbound.message().await?.ok_or_else(|| {
            Status::invalid_argument("the worker closed its stream before saying hello")
        })?;
        let Some(pb::agent_message::Kind::Hello(hello)) = first.kind else {
            return Err(Status::invalid_argument(
                "the first message of an agent session must be a Hello",
            ));
        };
        let session = SESSIONS.fetch_add(1, Ordering::Relaxed);
        let worker_id = hello.worker_id.trim().to_owned();
        let (out, rx) = mpsc::unbounded_channel();
        let identity = actor.name.clone();
        self.core
            .call(move |s, tx| s.hello(tx, session, &identity, &scope, hello, out))
            .await?;
        tracing::info!(worker_id = ?worker_id, session, identity = ?actor.name, "worker connected");
        tokio::spawn(pump(self.core.clone(), worker_id, session, inbound));
        Ok(Response::new(Box::pin(
            UnboundedReceiverStream::new(rx).map(Ok),
        )))
    }
}

/// The most messages of a session applied as one job of the core.
const MAX_BURST: usize = 512;

/// Forwards a session's messages to the core until the stream ends: every
/// message already received goes in one job (in order), so that a worker
/// reporting many results at once costs the core one hand-off, not one each.
async fn pump(
    core: CoreHandle,
    worker: String,
    session: u64,
    mut inbound: Streaming<pb::AgentMessage>,
) {
    loop {
        let mut burst = Vec::new();
        let Ok(first) = next_kind(&worker, inbound.next().await) else {
            break;
        };
        burst.extend(first);
        while burst.len() < MAX_BURST {
            let Some(next) = inbound.next().now_or_never() else {
                break;
            };
            match next_kind(&worker, next) {
                Ok(kind) => burst.extend(kind),
                Err(Ended) => {
                    apply(&core, &worker, session, burst).await;
                    return closed(&core, worker, session).await;
                }
            }
        }
        if !apply(&core, &worker, session, burst).await {
            return;
        }
    }
    closed(&core, worker, session).await;
}

/// The session's stream ended or broke.
struct Ended;

/// A message's kind (`None` for a message without one, which is skipped).
fn next_kind(
    worker: &str,
    next: Option<Result<pb::AgentMessage, Status>>,
) -> Result<Option<pb::agent_message::Kind>, Ended> {
    match next {
        Some(Ok(m)) => Ok(m.kind),
        Some(Err(e)) => {
            tracing::info!(worker_id = %worker, error = %e, "worker stream broke");
            Err(Ended)
        }
        None => Err(Ended),
    }
}

/// Hands a burst of a session's messages to the core; false once the core
/// is gone.
async fn apply(
    core: &CoreHandle,
    worker: &str,
    session: u64,
    burst: Vec<pb::agent_message::Kind>,
) -> bool {
    use pb::agent_message::Kind;
    let w = worker.to_owned();
    core.cast(move |s, tx| {
        // Messages of a session the worker has since replaced are stale.
        if s.session_of(&w) != Some(session) {
            return;
        }
        for kind in burst {
            match kind {
                Kind::Heartbeat(h) => {
                    s.heartbeat(&w, &h.held, tx.now);
                    s.note_spooled(&w, h.spooled_results);
                }
                Kind::Started(st) => s.step_started(tx, &w, st),
                Kind::Output(o) => s.step_output(tx, &w, o),
                Kind::Result(r) => s.step_result(tx, &w, r),
                Kind::Hello(_) => {
                    tracing::warn!(worker_id = %w, "ignoring a second hello on one session")
                }
            }
        }
    })
    .await
    .is_ok()
}

async fn closed(core: &CoreHandle, worker: String, session: u64) {
    let _ = core
        .cast(move |s, tx| s.session_closed(tx, &worker, session))
        .await;
}
