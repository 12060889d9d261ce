//! What an adversary with some access cannot do, end to end with a real
//! engine and real worker processes: an agent credential serves only the
//! worker ids and queues its config entry names; a worker id stays with
//! the identity that registered it; every field of a hello is bounded;
//! idempotency keys are each submitter's own; idle connections and floods
//! of streams do not lock anyone out.

use std::time::{Duration, Instant};

use opsdeck_tests::pb::{self, WhoamiRequest};
use opsdeck_tests::{
    DEADLINE, Engine, EngineOpts, Worker, assert_status, new_token, opsdeck, wait_for,
};
use tonic::{Code, Status};

const BUILD_RUN: &str =
    "name = \"compile\"\n[[step]]\nname = \"make\"\nqueue = \"build\"\nrun = \"echo built\"\n";
const DEPLOY_RUN: &str =
    "name = \"ship\"\n[[step]]\nname = \"push\"\nqueue = \"deploy\"\nrun = \"echo shipped\"\n";

/// The agent tokens of [`engine_with_agents`].
struct Agents {
    /// Worker ids `build-*`, queue `build`.
    builder: String,
    /// Bounds nothing.
    helper: String,
    /// Bounds nothing either: another identity.
    intruder: String,
}

async fn engine_with_agents(more_config: &str) -> (Engine, Agents) {
    let (builder, builder_entry) = new_token("builder", &["agent"], &[]);
    let (helper, helper_entry) = new_token("helper", &["agent"], &[]);
    let (intruder, intruder_entry) = new_token("intruder", &["agent"], &[]);
    let scoped = builder_entry.replacen(
        "roles = [",
        "workers = [\"build-*\"]\nqueues = [\"build\"]\nroles = [",
        1,
    );
    let engine = Engine::start(EngineOpts {
        config: format!("{scoped}{helper_entry}{intruder_entry}{more_config}"),
        ..EngineOpts::default()
    })
    .await;
    (
        engine,
        Agents {
            builder,
            helper,
            intruder,
        },
    )
}

fn hello(id: &str, queues: &[&str]) -> pb::Hello {
    pb::Hello {
        worker_id: id.into(),
        queues: queues.iter().map(|q| q.to_string()).collect(),
        slots: 1,
        generation: 1,
        version: "e2e".into(),
        ..Default::default()
    }
}

/// An open agent session: the engine's messages, and the sender that
/// keeps the session open.
type Session = (
    tonic::Streaming<pb::EngineMessage>,
    tokio::sync::mpsc::Sender<pb::AgentMessage>,
);

/// Opens an agent session over TCP with `token`, saying `hello`.
async fn session(engine: &Engine, token: &str, hello: pb::Hello) -> Result<Session, Status> {
    let (up, rx) = tokio::sync::mpsc::channel(8);
    up.send(pb::AgentMessage {
        kind: Some(pb::agent_message::Kind::Hello(hello)),
    })
    .await
    .unwrap();
    let mut api = engine.tcp_api(Some(token)).await;
    let down = api
        .agent
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok((down, up))
}

fn tcp_worker(engine: &Engine, id: &str, queue: &str, token: &str) -> Worker {
    let engine_addr = format!("http://{}", engine.tcp_addr());
    Worker::spawn(
        engine,
        id,
        &[queue],
        1,
        &["--engine", &engine_addr, "--token", token],
    )
}

/// `opsdeck ARGS` on the engine's socket (as the engine's user: admin).
fn cli(engine: &Engine, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(opsdeck());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("OPSDECK_") {
            cmd.env_remove(&name);
        }
    }
    cmd.env("NO_COLOR", "1")
        .args(["--engine", &engine.unix_addr()])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run opsdeck")
}

#[tokio::test]
async fn an_agent_credential_serves_only_the_ids_and_queues_its_entry_names() {
    let (engine, agents) = engine_with_agents("").await;

    // Every queue, a queue outside its list, an id outside its list: refused,
    // naming what the credential may do.
    assert_status(
        session(&engine, &agents.builder, hello("build-1", &["*"])).await,
        Code::PermissionDenied,
        &["builder", "every queue", "build"],
    );
    assert_status(
        session(
            &engine,
            &agents.builder,
            hello("build-1", &["build", "deploy"]),
        )
        .await,
        Code::PermissionDenied,
        &["\"deploy\"", "`queues`"],
    );
    assert_status(
        session(&engine, &agents.builder, hello("deploy-1", &["build"])).await,
        Code::PermissionDenied,
        &["build-*", "deploy-1"],
    );
    // A credential that bounds nothing still cannot ask for every queue.
    assert_status(
        session(&engine, &agents.helper, hello("h-1", &["*"])).await,
        Code::PermissionDenied,
        &["helper", "every queue"],
    );

    // A real worker process with the scoped token, asking for the deploy
    // queue, gets nothing: the deploy run waits.
    let _rogue = tcp_worker(&engine, "build-9", "deploy", &agents.builder);
    let ship = engine.submit(DEPLOY_RUN).await;
    wait_for(
        "the engine to refuse the rogue worker",
        DEADLINE,
        || async { engine.logs().contains("worker refused").then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let waiting = engine.get_run(&ship.id).await;
    assert_eq!(
        waiting.steps[0].state(),
        pb::StepState::Queued,
        "{waiting:?}"
    );
    assert!(engine.leases().await.is_empty(), "no lease was granted");
    assert!(
        engine.worker("build-9").await.is_none(),
        "the rogue worker was never registered"
    );

    // Within its scope, it works, and the events name the identity.
    let _builder = tcp_worker(&engine, "build-1", "build", &agents.builder);
    let run = engine.submit(BUILD_RUN).await;
    engine
        .wait_run_state(&run.id, pb::RunState::Succeeded, DEADLINE)
        .await;
    let events = engine.all_events(0).await;
    let registered = events
        .iter()
        .find(|e| e.kind == "worker.registered" && e.worker_id == "build-1")
        .expect("a registration event");
    assert_eq!(registered.identity, "builder", "{registered:?}");
    assert!(
        events
            .iter()
            .any(|e| e.run_id == run.id && e.kind == "step.succeeded" && e.identity == "builder"),
        "the result's event names the identity behind the worker"
    );
}

#[tokio::test]
async fn an_offline_workers_id_stays_with_its_identity_until_an_admin_forgets_it() {
    let (engine, agents) = engine_with_agents("").await;
    let first = session(&engine, &agents.helper, hello("shared-1", &["build"]))
        .await
        .expect("helper registers shared-1");
    engine
        .wait_worker("shared-1", |w| w.connected, DEADLINE)
        .await;
    drop(first);
    engine
        .wait_worker("shared-1", |w| !w.connected, DEADLINE)
        .await;

    // Offline, the id is still helper's.
    assert_status(
        session(&engine, &agents.intruder, hello("shared-1", &["build"])).await,
        Code::PermissionDenied,
        &["belongs to helper", "workers forget shared-1"],
    );
    // Connected or not, a live worker cannot be forgotten.
    let back = session(&engine, &agents.helper, hello("shared-1", &["build"]))
        .await
        .expect("helper comes back as shared-1");
    engine
        .wait_worker("shared-1", |w| w.connected, DEADLINE)
        .await;
    let busy = cli(&engine, &["workers", "forget", "shared-1"]);
    assert!(!busy.status.success());
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("is connected"),
        "{}",
        String::from_utf8_lossy(&busy.stderr)
    );
    drop(back);
    engine
        .wait_worker("shared-1", |w| !w.connected, DEADLINE)
        .await;

    // An admin forgets it; then the id is free.
    let forgot = cli(
        &engine,
        &["workers", "forget", "shared-1", "--reason", "host retired"],
    );
    assert!(
        forgot.status.success(),
        "{}",
        String::from_utf8_lossy(&forgot.stderr)
    );
    assert!(engine.worker("shared-1").await.is_none());
    let listed = cli(&engine, &["workers"]);
    assert!(!String::from_utf8_lossy(&listed.stdout).contains("shared-1"));
    let _taken = session(&engine, &agents.intruder, hello("shared-1", &["build"]))
        .await
        .expect("a forgotten id is free");
    let worker = engine
        .wait_worker("shared-1", |w| w.connected, DEADLINE)
        .await;
    assert_eq!(worker.identity, "intruder");
    let events = engine.all_events(0).await;
    assert!(events.iter().any(|e| e.kind == "worker.forgotten"
        && e.worker_id == "shared-1"
        && e.reason == "host retired"));
}

#[tokio::test]
async fn every_field_of_a_hello_is_bounded_and_ids_are_checked() {
    let (engine, agents) = engine_with_agents("").await;
    let mut labels = hello("big-1", &["build"]);
    labels.labels = (0..200)
        .map(|i| (format!("k{i}"), "v".repeat(10)))
        .collect();
    assert_status(
        session(&engine, &agents.helper, labels).await,
        Code::InvalidArgument,
        &["200 labels", "at most 64"],
    );
    let mut value = hello("big-1", &["build"]);
    value.labels = [("rack".to_owned(), "x".repeat(100_000))].into();
    assert_status(
        session(&engine, &agents.helper, value).await,
        Code::InvalidArgument,
        &["label rack"],
    );
    let mut host = hello("big-1", &["build"]);
    host.host = "h".repeat(10_000);
    assert_status(
        session(&engine, &agents.helper, host).await,
        Code::InvalidArgument,
        &["host name"],
    );
    let queues: Vec<String> = (0..65).map(|i| format!("q{i}")).collect();
    let queues: Vec<&str> = queues.iter().map(String::as_str).collect();
    assert_status(
        session(&engine, &agents.helper, hello("big-1", &queues)).await,
        Code::InvalidArgument,
        &["65 queues", "at most 64"],
    );
    // A control character in an id would forge a log line.
    assert_status(
        session(
            &engine,
            &agents.helper,
            hello("evil\nINFO forged", &["build"]),
        )
        .await,
        Code::InvalidArgument,
        &["invalid worker id", "control characters"],
    );
    assert!(!engine.logs().contains("\nINFO forged"));

    // A worker's unused queues are shown while it is connected, and not
    // kept once it is gone.
    let many: Vec<String> = (0..64).map(|i| format!("phantom-{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let wide = session(&engine, &agents.helper, hello("wide-1", &many))
        .await
        .expect("64 queues are within bounds");
    let shown = list_queues(&engine).await;
    assert!(
        shown
            .iter()
            .any(|q| q.name == "phantom-63" && q.workers == 1)
    );
    drop(wide);
    engine
        .wait_worker("wide-1", |w| !w.connected, DEADLINE)
        .await;
    let after = list_queues(&engine).await;
    assert!(
        !after.iter().any(|q| q.name.starts_with("phantom-")),
        "{after:?}"
    );
    let listed = cli(&engine, &["workers"]);
    assert!(listed.status.success());
}

async fn list_queues(engine: &Engine) -> Vec<pb::Queue> {
    engine
        .api()
        .await
        .queues
        .list_queues(pb::ListQueuesRequest {})
        .await
        .unwrap()
        .into_inner()
        .queues
}

#[tokio::test]
async fn idempotency_keys_are_each_submitters_own_and_refuse_another_spec() {
    let (alice, alice_entry) = new_token("alice", &["operator"], &[]);
    let (bob, bob_entry) = new_token("bob", &["operator"], &[]);
    let engine = Engine::start(EngineOpts {
        config: format!("{alice_entry}{bob_entry}"),
        ..EngineOpts::default()
    })
    .await;
    let submit = |token: String, spec: &'static str| {
        let engine = &engine;
        async move {
            engine
                .tcp_api(Some(&token))
                .await
                .runs
                .submit_run(pb::SubmitRunRequest {
                    spec: spec.into(),
                    idempotency_key: "deploy-42".into(),
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner())
        }
    };
    let first = submit(alice.clone(), BUILD_RUN).await.unwrap();
    assert!(first.created);
    let again = submit(alice.clone(), BUILD_RUN).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.run.unwrap().id, first.run.as_ref().unwrap().id);
    // Another identity's same key is another run.
    let bobs = submit(bob.clone(), DEPLOY_RUN).await.unwrap();
    assert!(bobs.created);
    assert_ne!(bobs.run.unwrap().id, first.run.as_ref().unwrap().id);
    // The same key with another spec is refused, naming the run.
    let status = assert_status(
        submit(alice.clone(), DEPLOY_RUN).await,
        Code::AlreadyExists,
        &["deploy-42", "different spec"],
    );
    assert!(status.message().contains(&first.run.unwrap().id));
}

#[tokio::test]
async fn idle_tcp_sockets_lock_out_neither_the_admin_on_the_socket_nor_a_worker() {
    let (engine, agents) =
        engine_with_agents("[limits]\nhandshake_timeout = \"2s\"\nmax_pending_per_peer = 32\n")
            .await;
    let mut worker = tcp_worker(&engine, "steady-1", "build", &agents.helper);
    engine
        .wait_worker("steady-1", |w| w.connected, DEADLINE)
        .await;

    // A thousand sockets that never send a byte.
    let mut idle = Vec::new();
    for _ in 0..1000 {
        if let Ok(s) = tokio::net::TcpStream::connect(engine.tcp_addr()).await {
            idle.push(s);
        }
    }
    assert!(idle.len() >= 900, "only {} sockets opened", idle.len());

    // The admin on the socket gets in at once.
    let started = Instant::now();
    engine
        .api()
        .await
        .console
        .whoami(WhoamiRequest {})
        .await
        .expect("the admin on the socket is served during the flood");
    assert!(started.elapsed() < DEADLINE);

    // A worker that restarts now reconnects: the idle sockets are closed
    // once their handshake time is up.
    worker.kill9();
    let _again = tcp_worker(&engine, "steady-1", "build", &agents.helper);
    let run = engine.submit(BUILD_RUN).await;
    engine
        .wait_run_state(&run.id, pb::RunState::Succeeded, DEADLINE)
        .await;
    // The sockets were closed by the engine, not by this test.
    let mut closed = 0;
    for s in &idle {
        if closed_by_peer(s).await {
            closed += 1;
        }
    }
    assert!(closed >= 900, "only {closed} idle sockets were closed");
}

/// Whether the other end closed `s` (what it sent before is read and
/// dropped).
async fn closed_by_peer(s: &tokio::net::TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_millis(200), s.readable()).await {
            Ok(Ok(())) => match s.try_read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return true,
            },
            _ => return false,
        }
    }
}

#[tokio::test]
async fn a_flood_of_streams_on_one_connection_is_refused_past_the_limit() {
    let engine = Engine::start_default().await;
    let channel = engine.tcp_channel().await;
    let rss_before = engine.rss_kib();
    let mut calls = Vec::new();
    for _ in 0..10_000 {
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        calls.push(tokio::spawn(async move {
            health
                .watch(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map(|r| r.into_inner())
        }));
    }
    let mut open = Vec::new();
    let (mut refused, mut cut) = (0, 0);
    for c in calls {
        match c.await.unwrap() {
            Ok(stream) => open.push(stream),
            Err(s)
                if s.code() == Code::ResourceExhausted
                    && s.message().contains("max_subscribers") =>
            {
                refused += 1;
            }
            // A flood of refused streams may make the engine's HTTP/2 layer
            // close the whole connection (too many resets, or a GOAWAY with
            // ENHANCE_YOUR_CALM, which tonic reads as RESOURCE_EXHAUSTED):
            // also a refusal.
            Err(s) => {
                let h2_calm = s.code() == Code::ResourceExhausted
                    && s.message().contains("h2 protocol error");
                assert!(
                    h2_calm
                        || matches!(
                            s.code(),
                            Code::Unknown | Code::Unavailable | Code::Cancelled
                        ),
                    "{s:?}"
                );
                cut += 1;
            }
        }
    }
    assert!(open.len() <= 64, "{} watches were served", open.len());
    assert_eq!(open.len() + refused + cut, 10_000);
    assert!(
        refused > 0,
        "the limit refused none: {cut} cut, {} open",
        open.len()
    );
    let rss_after = engine.rss_kib();
    assert!(
        rss_after < rss_before + 64 * 1024,
        "the engine grew from {rss_before} KiB to {rss_after} KiB"
    );
    drop(open);
    // The engine still serves a new connection.
    let mut health = tonic_health::pb::health_client::HealthClient::new(engine.tcp_channel().await);
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("the engine still answers after the flood");
}

/// A run that must pass an approval gate before its deploy step.
const GATED_DEPLOY: &str = "name = \"ship\"\n[[step]]\nname = \"go\"\napproval = { allow_self_approval = true, timeout = \"1h\" }\n\
    [[step]]\nname = \"push\"\nqueue = \"deploy\"\nrun = \"echo shipped\"\n";

/// The same, whose gate expires at once.
const HASTY_DEPLOY: &str = "name = \"ship\"\n[[step]]\nname = \"go\"\napproval = { timeout = \"1s\", on_timeout = \"fail\" }\n\
    [[step]]\nname = \"push\"\nqueue = \"deploy\"\nrun = \"echo shipped\"\n";

struct People {
    alice: String,
    bob: String,
    carol: String,
}

async fn engine_with_policy() -> (Engine, People) {
    let (alice, a) = new_token("alice", &["operator", "approver"], &[]);
    let (bob, b) = new_token("bob", &["operator", "approver"], &[]);
    let (carol, c) = new_token("carol", &["approver"], &[]);
    let engine = Engine::start(EngineOpts {
        config: format!("{a}{b}{c}[[policy]]\nqueues = [\"deploy\"]\n"),
        ..EngineOpts::default()
    })
    .await;
    (engine, People { alice, bob, carol })
}

async fn submit_as(engine: &Engine, token: &str, spec: &str) -> Result<pb::Run, Status> {
    engine
        .tcp_api(Some(token))
        .await
        .runs
        .submit_run(pb::SubmitRunRequest {
            spec: spec.into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().run.unwrap())
}

async fn decide_as(
    engine: &Engine,
    token: &str,
    approval: &str,
    approve: bool,
) -> Result<pb::Approval, Status> {
    engine
        .tcp_api(Some(token))
        .await
        .approvals
        .decide(pb::DecideRequest {
            id: approval.into(),
            approve,
            reason: "looked at it".into(),
        })
        .await
        .map(|r| r.into_inner())
}

async fn retry_as(engine: &Engine, token: &str, run: &str) -> Result<pb::Run, Status> {
    engine
        .tcp_api(Some(token))
        .await
        .runs
        .retry_run(pb::RetryRunRequest {
            id: run.into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn a_policy_gated_queue_needs_another_persons_approval_that_no_spec_turns_off() {
    let (engine, people) = engine_with_policy().await;
    let _worker = Worker::start(&engine, "deployer-1", &["deploy"], 1).await;

    // No gate before the deploy step: refused at submit, naming the policy.
    assert_status(
        submit_as(&engine, &people.alice, DEPLOY_RUN).await,
        Code::PermissionDenied,
        &["queue \"deploy\"", "policy 1", "approval step before it"],
    );

    // A gate that allows self-approval does not, on a gated queue.
    let run = submit_as(&engine, &people.alice, GATED_DEPLOY)
        .await
        .unwrap();
    let approval = engine.pending_approval(&run.id).await;
    assert!(!approval.allow_self_approval, "{approval:?}");
    assert_status(
        decide_as(&engine, &people.alice, &approval.id, true).await,
        Code::PermissionDenied,
        &["four eyes", "alice submitted"],
    );
    decide_as(&engine, &people.bob, &approval.id, true)
        .await
        .expect("another person approves");
    engine
        .wait_run_state(&run.id, pb::RunState::Succeeded, DEADLINE)
        .await;
}

#[tokio::test]
async fn a_rejection_is_final_and_a_retrier_counts_as_a_submitter() {
    let (engine, people) = engine_with_policy().await;

    // Rejected: nobody retries it into a fresh approval.
    let run = submit_as(&engine, &people.alice, GATED_DEPLOY)
        .await
        .unwrap();
    let approval = engine.pending_approval(&run.id).await;
    decide_as(&engine, &people.bob, &approval.id, false)
        .await
        .expect("bob rejects");
    engine
        .wait_run_state(&run.id, pb::RunState::Failed, DEADLINE)
        .await;
    for who in [&people.alice, &people.bob] {
        assert_status(
            retry_as(&engine, who, &run.id).await,
            Code::FailedPrecondition,
            &["rejected by bob", "rejection is final"],
        );
    }

    // Expired, then retried by bob: bob counts as a submitter, as does
    // alice; a third person approves.
    let run = submit_as(&engine, &people.alice, HASTY_DEPLOY)
        .await
        .unwrap();
    engine
        .wait_run_state(&run.id, pb::RunState::Failed, DEADLINE)
        .await;
    retry_as(&engine, &people.bob, &run.id)
        .await
        .expect("an expired gate may be retried");
    let fresh = engine.pending_approval(&run.id).await;
    assert_status(
        decide_as(&engine, &people.bob, &fresh.id, true).await,
        Code::PermissionDenied,
        &["bob retried"],
    );
    assert_status(
        decide_as(&engine, &people.alice, &fresh.id, true).await,
        Code::PermissionDenied,
        &["alice submitted"],
    );
    decide_as(&engine, &people.carol, &fresh.id, true)
        .await
        .expect("a third person approves");
}

#[tokio::test]
async fn a_secret_outside_its_scope_is_refused_at_submit_naming_the_secret_and_scope() {
    let keep = tempfile::tempdir().unwrap();
    let file = keep.path().join("deploy_token");
    std::fs::write(&file, "tok-value-123\n").unwrap();
    let (alice, a) = new_token("alice", &["operator"], &[]);
    let (mallory, m) = new_token("mallory", &["operator"], &[]);
    let engine = Engine::start(EngineOpts {
        config: format!(
            "{a}{m}[secrets]\ndeploy_token = {{ file = {:?}, queues = [\"deploy\"], submitters = [\"alice\"] }}\n",
            file.display().to_string()
        ),
        ..EngineOpts::default()
    })
    .await;
    let on = |queue: &str| {
        format!(
            "name = \"s\"\n[[step]]\nqueue = \"{queue}\"\nrun = \"echo $T | base64\"\nenv = {{ T = {{ secret = \"deploy_token\" }} }}\n"
        )
    };
    assert_status(
        submit_as(&engine, &alice, &on("build")).await,
        Code::PermissionDenied,
        &["deploy_token", "queues deploy", "not queue \"build\""],
    );
    assert_status(
        submit_as(&engine, &mallory, &on("deploy")).await,
        Code::PermissionDenied,
        &["deploy_token", "runs of alice", "not of mallory"],
    );
    submit_as(&engine, &alice, &on("deploy"))
        .await
        .expect("within its scope");
}

#[tokio::test]
async fn a_local_workers_step_gets_no_role_on_the_engines_socket() {
    // The engine's own user is admin on the socket; a step of its local
    // workers runs as that user, and tries to approve its own gated run.
    let engine = Engine::start(EngineOpts {
        args: vec!["--local-workers".into(), "1".into()],
        ..EngineOpts::default()
    })
    .await;
    // Submitted by another identity, so four eyes would let the engine's
    // user approve it.
    let gate = engine
        .ci_api()
        .await
        .runs
        .submit_run(pb::SubmitRunRequest {
            spec: "name = \"gated\"\n[[step]]\nname = \"ok\"\napproval = { timeout = \"1h\" }\n"
                .into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    let approval = engine.pending_approval(&gate.id).await;
    let script = format!(
        "{cli} --engine {addr} approve {id} --reason mine; echo \"approve=$?\"; \
         sh -c '{cli} --engine {addr} workers; echo \"grandchild=$?\"'",
        cli = opsdeck().display(),
        addr = engine.unix_addr(),
        id = approval.id
    );
    let spec = format!(
        "name = \"escalate\"\n[[step]]\nname = \"try\"\nqueue = \"any\"\nrun = {}\n",
        opsdeck_tests::sh(&script)
    );
    let run = engine
        .ci_api()
        .await
        .runs
        .submit_run(pb::SubmitRunRequest {
            spec,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    engine
        .wait_run_state(&run.id, pb::RunState::Succeeded, DEADLINE)
        .await;
    let text = engine.output_text(&run.id).await;
    assert!(
        text.contains("approve=1") && text.contains("grandchild=1"),
        "the step and what it started were refused: {text}"
    );
    assert!(text.contains("local workers"), "{text}");
    let still = engine.pending_approval(&gate.id).await;
    assert_eq!(still.id, approval.id);
    assert!(still.decisions.is_empty(), "{still:?}");
    // The engine's user itself, outside the engine, is still admin.
    engine
        .api()
        .await
        .approvals
        .decide(pb::DecideRequest {
            id: approval.id.clone(),
            approve: true,
            reason: "the admin, not a step".into(),
        })
        .await
        .expect("the engine's user approves from outside");
}

#[tokio::test]
async fn local_workers_with_secrets_are_refused_unless_trusted() {
    let engine = Engine::start_default().await;
    let config = engine.path("secrets.toml");
    std::fs::write(
        &config,
        "[secrets]\napi = { env = \"OPSDECK_SECRET_API\" }\n",
    )
    .unwrap();
    let out = std::process::Command::new(opsdeck_tests::opsdeckd())
        .args([
            "serve",
            "--local-workers",
            "1",
            "--listen",
            "none",
            "--metrics-listen",
            "none",
        ])
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(engine.path("other"))
        .env("OPSDECK_SECRET_API", "value-1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--trust-local-steps") && err.contains("[secrets]"),
        "{err}"
    );
}
