//! One Agent.Session stream: open it (Hello up, Welcome down), exchange
//! messages, close it cleanly.

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use opsdeck_proto::{
    failover::EngineList,
    v1::{
        AgentMessage, EngineMessage, Hello, Welcome, agent_client::AgentClient, agent_message,
        engine_message,
    },
};
use tokio::{
    sync::mpsc,
    time::{Instant, Interval, MissedTickBehavior},
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::ClientTlsConfig;
use tonic::{Request, Status, Streaming, metadata::MetadataValue};

/// Messages waiting to go up. Small: a full outbox slows the step output
/// feeding it instead of piling up memory.
const OUTBOX: usize = 64;

/// How long connecting, sending Hello and getting Welcome may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(15);

/// The heartbeat interval when the engine does not name one, and the
/// shortest one honoured (a zero would spin).
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
const MIN_HEARTBEAT: Duration = Duration::from_millis(100);

pub(super) struct Session {
    tx: mpsc::Sender<AgentMessage>,
    inbound: Streaming<EngineMessage>,
    welcome: Welcome,
    heartbeat: Interval,
}

/// What happened on an open session.
// Returned and matched at once, never stored: boxing the message would cost
// an allocation per message for nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum SessionEvent {
    /// A message from the engine, the end of its stream (`Ok(None)`), or an error.
    Message(Result<Option<EngineMessage>, Status>),
    /// Time to send a heartbeat.
    Heartbeat,
}

/// The session ended while sending.
#[derive(Debug, thiserror::Error)]
#[error("the session with the engine closed")]
pub(super) struct Closed;

impl Session {
    /// Connects, sends `hello` and waits for the engine's Welcome.
    pub async fn open(
        engine: EngineList,
        token: Option<String>,
        tls: Option<ClientTlsConfig>,
        hello: Hello,
    ) -> anyhow::Result<Self> {
        tokio::time::timeout(OPEN_TIMEOUT, Self::handshake(engine, token, tls, hello))
            .await
            .map_err(|_| {
                anyhow!(
                    "no Welcome within {}",
                    humantime::format_duration(OPEN_TIMEOUT)
                )
            })?
    }

    async fn handshake(
        engine: EngineList,
        token: Option<String>,
        tls: Option<ClientTlsConfig>,
        hello: Hello,
    ) -> anyhow::Result<Self> {
        // With several addresses, the one that leads.
        let (_, channel) = engine
            .connect_leader(tls.as_ref())
            .await
            .context("could not connect")?;
        let (tx, rx) = mpsc::channel(OUTBOX);
        // Queued before the call so Hello is the first message whatever the engine awaits first.
        tx.send(message(agent_message::Kind::Hello(hello)))
            .await
            .map_err(|_| Closed)?;
        let mut request = Request::new(ReceiverStream::new(rx));
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("authorization", bearer(&token)?);
        }
        let mut inbound = AgentClient::new(channel)
            .session(request)
            .await
            .map_err(|status| anyhow!("the engine refused the session: {}", describe(&status)))?
            .into_inner();
        let welcome = match inbound.message().await {
            Ok(Some(EngineMessage {
                kind: Some(engine_message::Kind::Welcome(welcome)),
            })) => welcome,
            Ok(Some(other)) => bail!("the engine answered Hello with {other:?} instead of Welcome"),
            Ok(None) => bail!("the engine closed the session before its Welcome"),
            Err(status) => bail!("the engine ended the session: {}", describe(&status)),
        };
        let every = match Duration::from_millis(welcome.heartbeat_interval_ms) {
            Duration::ZERO => DEFAULT_HEARTBEAT,
            every => every.max(MIN_HEARTBEAT),
        };
        let mut heartbeat = tokio::time::interval_at(Instant::now() + every, every);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ok(Self {
            tx,
            inbound,
            welcome,
            heartbeat,
        })
    }

    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// A sender for the steps' output, on this session.
    pub fn sender(&self) -> mpsc::Sender<AgentMessage> {
        self.tx.clone()
    }

    pub async fn send(&self, kind: agent_message::Kind) -> Result<(), Closed> {
        self.tx.send(message(kind)).await.map_err(|_| Closed)
    }

    /// The next message or heartbeat tick. Cancel safe.
    pub async fn next(&mut self) -> SessionEvent {
        tokio::select! {
            msg = self.inbound.message() => SessionEvent::Message(msg),
            _ = self.heartbeat.tick() => SessionEvent::Heartbeat,
        }
    }

    /// Ends the stream up (a clean end, which the engine can tell from a
    /// lost worker) and waits up to `wait` for the engine to end its side.
    /// Returns the messages that arrived meanwhile, for the caller to
    /// handle what it still can (acks, cancels).
    ///
    /// The stream up ends once every sender is gone: the caller must have
    /// withdrawn the ones it handed to steps.
    pub async fn close(self, wait: Duration) -> Vec<EngineMessage> {
        let Self {
            tx, mut inbound, ..
        } = self;
        drop(tx);
        let mut late = Vec::new();
        let _ = tokio::time::timeout(wait, async {
            while let Ok(Some(msg)) = inbound.message().await {
                late.push(msg);
            }
        })
        .await;
        late
    }
}

fn message(kind: agent_message::Kind) -> AgentMessage {
    AgentMessage { kind: Some(kind) }
}

fn bearer(token: &str) -> anyhow::Result<MetadataValue<tonic::metadata::Ascii>> {
    MetadataValue::try_from(format!("Bearer {token}"))
        .map_err(|_| anyhow!("the token has characters a gRPC header cannot carry"))
}

/// An error and its causes on one line, each said once: transport errors
/// repeat their cause's text in their own, which `{:#}` would print twice.
pub(super) fn describe_chain(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain().map(ToString::to_string) {
        if line.contains(&cause) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&cause);
    }
    line
}

/// "Unavailable: standby engine; the leader is at …", without tonic's
/// details and metadata dump.
pub(super) fn describe(status: &Status) -> String {
    if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        format!("{:?}: {}", status.code(), status.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_says_each_cause_once() {
        let io = std::io::Error::from_raw_os_error(2);
        let error = anyhow::Error::new(io)
            .context("transport error: No such file or directory (os error 2)")
            .context("could not connect");
        assert_eq!(
            describe_chain(&error),
            "could not connect: transport error: No such file or directory (os error 2)"
        );
    }
}
