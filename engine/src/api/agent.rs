//! The Agent service: one bidirectional stream per worker process.
//!
//! The handler does no work itself: it forwards each message to the core in
//! order and relays what the core sends back on the session's channel.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

use opsdeck_proto::v1 as pb;
use opsdeck_proto::v1::agent_server::Agent;
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt, wrappers::UnboundedReceiverStream};
use tonic::{Request, Response, Status, Streaming};

use super::{Api, auth::caller};
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
            .call(move |s, tx| s.hello(tx, session, &identity, hello, out))
            .await?;
        tracing::info!(worker_id = %worker_id, session, identity = %actor.name, "worker connected");
        tokio::spawn(pump(self.core.clone(), worker_id, session, inbound));
        Ok(Response::new(Box::pin(
            UnboundedReceiverStream::new(rx).map(Ok),
        )))
    }
}

/// Forwards a session's messages to the core until the stream ends.
async fn pump(
    core: CoreHandle,
    worker: String,
    session: u64,
    mut inbound: Streaming<pb::AgentMessage>,
) {
    use pb::agent_message::Kind;
    loop {
        let next = inbound.next().await;
        let kind = match next {
            Some(Ok(pb::AgentMessage { kind: Some(kind) })) => kind,
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                tracing::info!(worker_id = %worker, error = %e, "worker stream broke");
                break;
            }
            None => break,
        };
        let w = worker.clone();
        let sent = core
            .cast(move |s, tx| {
                // Messages of a session the worker has since replaced are stale.
                if s.session_of(&w) != Some(session) {
                    return;
                }
                match kind {
                    Kind::Heartbeat(h) => s.heartbeat(&w, &h.held, tx.now),
                    Kind::Started(st) => s.step_started(tx, &w, st),
                    Kind::Output(o) => s.step_output(tx, &w, o),
                    Kind::Result(r) => s.step_result(tx, &w, r),
                    Kind::Hello(_) => {
                        tracing::warn!(worker_id = %w, "ignoring a second hello on one session")
                    }
                }
            })
            .await;
        if sent.is_err() {
            return;
        }
    }
    let _ = core
        .cast(move |s, tx| s.session_closed(tx, &worker, session))
        .await;
}
