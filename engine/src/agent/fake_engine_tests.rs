//! The worker loop against a scripted engine: a real tonic server on a Unix
//! socket whose every session the test drives by hand.

use std::{sync::Arc, time::Duration};

use opsdeck_proto::{
    endpoint::EngineAddr,
    v1::{
        AgentMessage, Assignment, CancelStep, EngineMessage, HeldLease, Hello, Outcome, Recycle,
        ResultAck, StepResult, Welcome, agent_message,
        agent_server::{Agent, AgentServer},
        engine_message,
    },
};
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_stream::wrappers::{UnboundedReceiverStream, UnixListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::*;

const PATIENCE: Duration = Duration::from_secs(10);

struct FakeEngine {
    sessions: mpsc::UnboundedSender<EngineSide>,
}

#[tonic::async_trait]
impl Agent for FakeEngine {
    type SessionStream = UnboundedReceiverStream<Result<EngineMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (down, rx) = mpsc::unbounded_channel();
        let _ = self.sessions.send(EngineSide {
            up: request.into_inner(),
            down,
            authorization,
        });
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }
}

/// The engine's end of one session.
struct EngineSide {
    up: Streaming<AgentMessage>,
    down: mpsc::UnboundedSender<Result<EngineMessage, Status>>,
    authorization: Option<String>,
}

impl EngineSide {
    /// The next message up, or `None` once the worker ended the stream.
    async fn next(&mut self) -> Option<agent_message::Kind> {
        let msg = tokio::time::timeout(PATIENCE, self.up.message()).await;
        msg.expect("the worker said nothing")
            .ok()
            .flatten()
            .and_then(|m| m.kind)
    }

    /// The next message that is not a heartbeat.
    async fn recv(&mut self) -> agent_message::Kind {
        loop {
            match self.next().await {
                Some(agent_message::Kind::Heartbeat(_)) => {}
                Some(kind) => return kind,
                None => panic!("the worker ended the session"),
            }
        }
    }

    async fn heartbeat(&mut self) -> Vec<HeldLease> {
        self.whole_heartbeat().await.held
    }

    async fn whole_heartbeat(&mut self) -> opsdeck_proto::v1::AgentHeartbeat {
        loop {
            if let Some(agent_message::Kind::Heartbeat(h)) = self.next().await {
                return h;
            }
        }
    }

    async fn hello(&mut self) -> Hello {
        match self.recv().await {
            agent_message::Kind::Hello(hello) => hello,
            other => panic!("expected Hello, got {other:?}"),
        }
    }

    async fn result(&mut self) -> StepResult {
        loop {
            if let agent_message::Kind::Result(result) = self.recv().await {
                return result;
            }
        }
    }

    /// Waits for the worker's end of the stream, skipping whatever comes first.
    async fn closed(&mut self) {
        while self.next().await.is_some() {}
    }

    fn send(&self, kind: engine_message::Kind) {
        let _ = self.down.send(Ok(EngineMessage { kind: Some(kind) }));
    }

    fn welcome(&self, revoked: &[&str]) {
        self.send(engine_message::Kind::Welcome(Welcome {
            heartbeat_interval_ms: 100,
            lease_ttl_ms: 1_000,
            revoked: revoked.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }));
    }

    fn assign(&self, lease_id: &str, shell: &str) {
        self.send(engine_message::Kind::Assign(Assignment {
            lease_id: lease_id.into(),
            fencing_token: 9,
            run_id: "01RUN".into(),
            shell: shell.into(),
            ..Default::default()
        }));
    }

    fn ack(&self, lease_id: &str) {
        self.send(engine_message::Kind::Ack(ResultAck {
            lease_id: lease_id.into(),
            accepted: true,
            message: String::new(),
        }));
    }

    /// Breaks the session as a restarting engine would.
    fn break_off(self) {
        let _ = self
            .down
            .send(Err(Status::unavailable("engine restarting")));
    }

    /// Waits until the step's stdout has said `needle`.
    async fn output_until(&mut self, needle: &str) {
        let mut stdout = String::new();
        while !stdout.contains(needle) {
            if let agent_message::Kind::Output(o) = self.recv().await {
                stdout.push_str(&String::from_utf8_lossy(&o.data));
            }
        }
    }
}

struct Harness {
    sessions: mpsc::UnboundedReceiver<EngineSide>,
    engine: EngineAddr,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("engine.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let (tx, sessions) = mpsc::unbounded_channel();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(AgentServer::new(FakeEngine { sessions: tx }))
                .serve_with_incoming(UnixListenerStream::new(listener)),
        );
        Self {
            sessions,
            engine: EngineAddr::Unix(path),
            _dir: dir,
        }
    }

    fn options(&self) -> AgentOptions {
        AgentOptions {
            slots: 4,
            generation: 5,
            token: Some("tok".into()),
            labels: [("zone".to_owned(), "eu-1".to_owned())].into(),
            ..AgentOptions::new(self.engine.clone(), "w1", vec!["build".into()])
        }
    }

    fn spawn(&self, shutdown: &CancellationToken) -> JoinHandle<anyhow::Result<AgentExit>> {
        tokio::spawn(run(
            self.options(),
            Arc::new(ProcessExecutor),
            shutdown.clone(),
        ))
    }

    async fn session(&mut self) -> EngineSide {
        let session = tokio::time::timeout(PATIENCE, self.sessions.recv()).await;
        session
            .expect("the worker did not connect")
            .expect("the fake engine stopped")
    }
}

async fn exit_of(worker: JoinHandle<anyhow::Result<AgentExit>>) -> AgentExit {
    tokio::time::timeout(PATIENCE, worker)
        .await
        .expect("the worker did not return")
        .unwrap()
        .unwrap()
}

fn held(leases: &[HeldLease]) -> Vec<&str> {
    leases.iter().map(|h| h.lease_id.as_str()).collect()
}

#[tokio::test]
async fn a_step_runs_reports_and_is_held_until_acked_then_the_worker_recycles() {
    let mut harness = Harness::start().await;
    let worker = harness.spawn(&CancellationToken::new());

    let mut engine = harness.session().await;
    assert_eq!(engine.authorization.as_deref(), Some("Bearer tok"));
    let hello = engine.hello().await;
    assert_eq!(
        (
            hello.worker_id.as_str(),
            hello.queues.as_slice(),
            hello.slots,
            hello.generation
        ),
        ("w1", ["build".to_owned()].as_slice(), 4, 5)
    );
    assert_eq!(hello.labels.get("zone").map(String::as_str), Some("eu-1"));
    assert_eq!(hello.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(hello.pid, std::process::id());
    assert!(hello.held.is_empty() && !hello.draining);
    engine.welcome(&[]);

    engine.assign("l1", "echo hi");
    match engine.recv().await {
        agent_message::Kind::Started(s) => {
            assert!(s.lease_id == "l1" && s.fencing_token == 9 && s.pid > 0)
        }
        other => panic!("expected StepStarted, got {other:?}"),
    }
    match engine.recv().await {
        agent_message::Kind::Output(o) => assert_eq!(
            (o.stream.as_str(), o.data.as_slice()),
            ("stdout", &b"hi\n"[..])
        ),
        other => panic!("expected StepOutput, got {other:?}"),
    }
    let result = engine.result().await;
    assert_eq!(
        (
            result.lease_id.as_str(),
            result.fencing_token,
            result.outcome,
            result.exit_code,
            result.has_exit_code
        ),
        ("l1", 9, Outcome::Succeeded as i32, 0, true)
    );
    assert!(result.finished_at_ms > 0);

    assert_eq!(held(&engine.heartbeat().await), ["l1"]);
    engine.ack("l1");
    while !engine.heartbeat().await.is_empty() {}

    engine.send(engine_message::Kind::Recycle(Recycle {}));
    assert_eq!(
        exit_of(worker).await,
        AgentExit::Recycle { next_generation: 6 }
    );
    engine.closed().await;
}

#[tokio::test]
async fn heartbeats_say_how_many_results_wait_in_the_spool_until_acked() {
    let mut harness = Harness::start().await;
    let spool = tempfile::tempdir().unwrap();
    let worker = tokio::spawn(run(
        AgentOptions {
            spool_dir: Some(spool.path().to_owned()),
            ..harness.options()
        },
        Arc::new(ProcessExecutor),
        CancellationToken::new(),
    ));
    let mut engine = harness.session().await;
    engine.hello().await;
    engine.welcome(&[]);
    assert_eq!(engine.whole_heartbeat().await.spooled_results, 0);
    engine.assign("l1", "true");
    engine.result().await;
    while engine.whole_heartbeat().await.spooled_results != 1 {}
    engine.ack("l1");
    while engine.whole_heartbeat().await.spooled_results != 0 {}
    engine.send(engine_message::Kind::Recycle(Recycle {}));
    exit_of(worker).await;
}

#[tokio::test]
async fn steps_outlive_a_broken_session_and_results_are_resent_until_acked() {
    let mut harness = Harness::start().await;
    let shutdown = CancellationToken::new();
    let worker = harness.spawn(&shutdown);

    let mut engine = harness.session().await;
    engine.hello().await;
    engine.welcome(&[]);
    engine.assign("l1", "echo ready; sleep 0.5; echo done");
    engine.output_until("ready").await;
    engine.break_off();

    // Still running: the next Hello holds its lease, and its result follows.
    let mut engine = harness.session().await;
    assert_eq!(held(&engine.hello().await.held), ["l1"]);
    engine.welcome(&[]);
    let result = engine.result().await;
    assert_eq!(result.outcome, Outcome::Succeeded as i32);
    engine.break_off();

    // Not acknowledged: still held, and sent again right after Welcome.
    let mut engine = harness.session().await;
    assert_eq!(held(&engine.hello().await.held), ["l1"]);
    engine.welcome(&[]);
    assert_eq!(engine.result().await, result);
    engine.ack("l1");
    while !engine.heartbeat().await.is_empty() {}

    shutdown.cancel();
    assert_eq!(exit_of(worker).await, AgentExit::Stopped);
}

#[tokio::test]
async fn shutdown_tells_the_engine_and_lets_the_running_step_finish() {
    let mut harness = Harness::start().await;
    let shutdown = CancellationToken::new();
    let worker = harness.spawn(&shutdown);

    let mut engine = harness.session().await;
    engine.hello().await;
    engine.welcome(&[]);
    engine.assign("l1", "echo ready; sleep 0.5");
    engine.output_until("ready").await;
    shutdown.cancel();
    engine.closed().await;

    let mut engine = harness.session().await;
    let hello = engine.hello().await;
    assert!(hello.draining);
    assert_eq!(held(&hello.held), ["l1"]);
    engine.welcome(&[]);
    assert_eq!(engine.result().await.outcome, Outcome::Succeeded as i32);
    engine.ack("l1");
    assert_eq!(exit_of(worker).await, AgentExit::Stopped);
}

#[tokio::test]
async fn cancel_step_stops_the_process_and_reports_cancelled() {
    let mut harness = Harness::start().await;
    let shutdown = CancellationToken::new();
    let worker = harness.spawn(&shutdown);

    let mut engine = harness.session().await;
    engine.hello().await;
    engine.welcome(&[]);
    engine.assign("l1", "echo ready; sleep 30");
    engine.output_until("ready").await;
    engine.send(engine_message::Kind::Cancel(CancelStep {
        lease_id: "l1".into(),
        reason: "operator: wrong host".into(),
        grace_ms: 0,
    }));
    let result = engine.result().await;
    assert_eq!(result.outcome, Outcome::Cancelled as i32);
    assert_eq!(
        result.message,
        "cancelled by the engine (operator: wrong host): killed by signal 15 (SIGTERM)"
    );
    assert!(!result.has_exit_code);
    engine.ack("l1");

    shutdown.cancel();
    assert_eq!(exit_of(worker).await, AgentExit::Stopped);
}

#[tokio::test]
async fn a_revoked_lease_is_stopped_and_its_result_not_sent() {
    let mut harness = Harness::start().await;
    let shutdown = CancellationToken::new();
    let worker = harness.spawn(&shutdown);

    let mut engine = harness.session().await;
    engine.hello().await;
    engine.welcome(&[]);
    engine.assign("l1", "echo ready; sleep 30");
    engine.output_until("ready").await;
    engine.break_off();

    let mut engine = harness.session().await;
    assert_eq!(held(&engine.hello().await.held), ["l1"]);
    engine.welcome(&["l1"]);
    loop {
        match engine.next().await {
            Some(agent_message::Kind::Heartbeat(h)) if h.held.is_empty() => break,
            Some(agent_message::Kind::Result(r)) => {
                panic!("sent a result for a revoked lease: {r:?}")
            }
            _ => {}
        }
    }
    shutdown.cancel();
    assert_eq!(exit_of(worker).await, AgentExit::Stopped);
}

#[tokio::test]
async fn a_second_signal_stops_running_steps_and_reports_them_failed() {
    let mut harness = Harness::start().await;
    let (shutdown, kill) = (CancellationToken::new(), CancellationToken::new());
    let worker = tokio::spawn(run_until(
        harness.options(),
        Arc::new(ProcessExecutor),
        shutdown.clone(),
        kill.clone(),
    ));

    let mut engine = harness.session().await;
    engine.hello().await;
    engine.welcome(&[]);
    engine.assign("l1", "echo ready; sleep 30");
    engine.output_until("ready").await;
    kill.cancel();
    engine.closed().await;

    let mut engine = harness.session().await;
    assert!(engine.hello().await.draining);
    engine.welcome(&[]);
    let result = engine.result().await;
    assert_eq!(result.outcome, Outcome::Failed as i32);
    assert!(
        result
            .message
            .starts_with("stopped because the worker is shutting down"),
        "{}",
        result.message
    );
    engine.ack("l1");
    assert_eq!(exit_of(worker).await, AgentExit::Stopped);
}

#[tokio::test]
async fn the_instant_executor_finishes_a_burst_of_steps() {
    let mut harness = Harness::start().await;
    let shutdown = CancellationToken::new();
    let opts = AgentOptions {
        slots: 256,
        ..harness.options()
    };
    let worker = tokio::spawn(run(opts, Arc::new(InstantExecutor), shutdown.clone()));

    let mut engine = harness.session().await;
    engine.hello().await;
    engine.welcome(&[]);
    for n in 0..200 {
        engine.assign(&format!("l{n}"), "");
    }
    for _ in 0..200 {
        let result = engine.result().await;
        assert_eq!(result.outcome, Outcome::Succeeded as i32);
        engine.ack(&result.lease_id);
    }
    shutdown.cancel();
    assert_eq!(exit_of(worker).await, AgentExit::Stopped);
}

#[tokio::test]
async fn an_unreachable_engine_does_not_keep_an_idle_worker_from_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let engine = EngineAddr::Unix(dir.path().join("nobody-listens.sock"));
    let shutdown = CancellationToken::new();
    let opts = AgentOptions::new(engine, "w1", vec!["build".into()]);
    let worker = tokio::spawn(run(opts, Arc::new(InstantExecutor), shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!worker.is_finished());
    shutdown.cancel();
    assert_eq!(exit_of(worker).await, AgentExit::Stopped);
}
