//! Roles: bearer tokens with each role, allowed and refused on every
//! service; no token; Unix-socket callers mapped to roles by user and
//! group; worker tokens (agent) that speak only the worker protocol.

use std::process::{Child, Command, Stdio};

use opsdeck_tests::{
    DEADLINE, Engine, EngineOpts, TcpService, assert_status, new_token, opsdeckd, pb, sh, wait_for,
};
use tonic::{Code, Status};

/// An engine whose config has a token per role (and one with no roles
/// listed), by identity.
struct Tokens {
    viewer: String,
    operator: String,
    approver: String,
    admin: String,
    agent: String,
    unlisted: String,
}

async fn engine_with_tokens() -> (Engine, Tokens) {
    let (viewer, v) = new_token("vera", &["viewer"], &[]);
    let (operator, o) = new_token("otto", &["operator"], &[]);
    let (approver, a) = new_token("ada", &["approver"], &[]);
    let (admin, ad) = new_token("adm", &["admin"], &[]);
    let (agent, ag) = new_token("worker-1", &["agent"], &[]);
    let (unlisted, u) = {
        let (t, entry) = new_token("nobody-says", &[], &[]);
        // No `roles` key at all: a token without roles is a viewer.
        let entry = entry.replace("roles = []\n", "");
        (t, entry)
    };
    let engine = Engine::start(EngineOpts {
        config: [v, o, a, ad, ag, u].concat(),
        ..EngineOpts::default()
    })
    .await;
    let tokens = Tokens {
        viewer,
        operator,
        approver,
        admin,
        agent,
        unlisted,
    };
    (engine, tokens)
}

/// One call per role level, with ids that exist nowhere: a call the guard
/// lets through is answered by its service (NOT_FOUND, INVALID_ARGUMENT),
/// and changes nothing.
async fn call(api: &mut opsdeck_tests::Clients<TcpService>, method: &str) -> Result<(), Status> {
    let id = "01NOSUCHTHING0000000000000".to_owned();
    let reason = "roles test".to_owned();
    match method {
        "ListRuns" => api
            .runs
            .list_runs(pb::ListRunsRequest::default())
            .await
            .map(drop),
        "FollowEvents" => api
            .events
            .follow_events(pb::FollowEventsRequest::default())
            .await
            .map(drop),
        "Watch" => api
            .console
            .watch(pb::WatchRequest::default())
            .await
            .map(drop),
        "Whoami" => api.console.whoami(pb::WhoamiRequest {}).await.map(drop),
        "ResolveId" => api
            .console
            .resolve_id(pb::ResolveIdRequest {
                kind: pb::IdKind::Run as i32,
                id,
            })
            .await
            .map(drop),
        "SubmitRun" => api
            .runs
            .submit_run(pb::SubmitRunRequest {
                spec: "not a spec".into(),
                reason,
                ..Default::default()
            })
            .await
            .map(drop),
        "CancelRun" => api
            .runs
            .cancel_run(pb::CancelRunRequest { id, reason })
            .await
            .map(drop),
        "DrainWorker" => api
            .workers
            .drain_worker(pb::WorkerActionRequest { id, reason })
            .await
            .map(drop),
        "PauseQueue" => api
            .queues
            .pause_queue(pb::QueueActionRequest {
                name: "Not A Queue!".into(),
                reason,
                ..Default::default()
            })
            .await
            .map(drop),
        "SetQueue" => api
            .queues
            .set_queue(pb::SetQueueRequest {
                name: "Not A Queue!".into(),
                max_running: Some(1),
                reason,
            })
            .await
            .map(drop),
        "Decide" => api
            .approvals
            .decide(pb::DecideRequest {
                id,
                approve: true,
                reason,
            })
            .await
            .map(drop),
        "ForceRelease" => api
            .leases
            .force_release(pb::ForceReleaseRequest {
                id,
                fail: false,
                reason,
            })
            .await
            .map(drop),
        "RecycleWorker" => api
            .workers
            .recycle_worker(pb::WorkerActionRequest { id, reason })
            .await
            .map(drop),
        "ClearQuarantine" => api
            .runs
            .clear_quarantine(pb::ClearQuarantineRequest {
                name: "no-such-run-name".into(),
                reason,
            })
            .await
            .map(drop),
        // A session that ends before its Hello: refused by the guard, or
        // by the service for the missing Hello.
        "Session" => api
            .agent
            .session(tokio_stream::iter(Vec::<pb::AgentMessage>::new()))
            .await
            .map(drop),
        other => panic!("no call for {other}"),
    }
}

#[tokio::test]
async fn each_role_is_allowed_what_it_needs_and_refused_the_rest_naming_the_role() {
    let (engine, t) = engine_with_tokens().await;
    // (method, role it needs)
    let methods = [
        ("ListRuns", "viewer"),
        ("FollowEvents", "viewer"),
        ("Watch", "viewer"),
        ("ResolveId", "viewer"),
        ("SubmitRun", "operator"),
        ("CancelRun", "operator"),
        ("DrainWorker", "operator"),
        ("PauseQueue", "operator"),
        ("SetQueue", "operator"),
        ("Decide", "approver"),
        ("ForceRelease", "admin"),
        ("RecycleWorker", "admin"),
        ("ClearQuarantine", "admin"),
        ("Session", "agent"),
        ("Whoami", "any"),
    ];
    // (token, identity, the roles it holds, included ones too)
    let callers = [
        (&t.viewer, "vera", vec!["viewer"]),
        (&t.unlisted, "nobody-says", vec!["viewer"]),
        (&t.operator, "otto", vec!["viewer", "operator"]),
        (&t.approver, "ada", vec!["viewer", "approver"]),
        (
            &t.admin,
            "adm",
            vec!["viewer", "operator", "approver", "admin"],
        ),
        (&t.agent, "worker-1", vec!["agent"]),
    ];
    let mut report = Vec::new();
    for (token, identity, holds) in &callers {
        let mut api = engine.tcp_api(Some(token)).await;
        let me = api
            .console
            .whoami(pb::WhoamiRequest {})
            .await
            .expect("every identity may ask who it is")
            .into_inner();
        assert_eq!(
            (me.identity.as_str(), me.transport.as_str()),
            (*identity, "tcp")
        );
        assert_eq!(&me.roles, holds, "{identity}'s roles as Whoami tells them");
        for (method, needs) in methods {
            let allowed = needs == "any" || holds.contains(&needs);
            let result = call(&mut api, method).await;
            match (&result, allowed) {
                (Err(s), true)
                    if matches!(s.code(), Code::PermissionDenied | Code::Unauthenticated) =>
                {
                    report.push(format!("{identity} refused {method}: {}", s.message()));
                }
                (Ok(()), false) => report.push(format!("{identity} allowed {method}")),
                (Err(s), false) => {
                    let m = s.message();
                    let named = s.code() == Code::PermissionDenied
                        && m.contains(&format!("needs the {needs} role"))
                        && m.contains(identity);
                    if !named {
                        report.push(format!(
                            "{identity} refused {method} without naming the role: {:?} {m}",
                            s.code()
                        ));
                    }
                }
                _ => {}
            }
        }
    }
    assert!(report.is_empty(), "{}", report.join("\n"));
}

#[tokio::test]
async fn no_token_or_an_unknown_one_is_unauthenticated_but_health_needs_none() {
    let (engine, _t) = engine_with_tokens().await;
    let mut anonymous = engine.tcp_api(None).await;
    for method in ["ListRuns", "Whoami", "Session", "SubmitRun"] {
        let result = call(&mut anonymous, method).await;
        assert_status(result, Code::Unauthenticated, &["no identity", "token"]);
    }
    let mut wrong = engine.tcp_api(Some("tok_not_in_the_config")).await;
    assert_status(
        call(&mut wrong, "ListRuns").await,
        Code::Unauthenticated,
        &["not known"],
    );
    let health = tonic_health::pb::health_client::HealthClient::new(engine.tcp_channel().await)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health needs no token");
    assert_eq!(
        health.into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

#[tokio::test]
async fn an_operator_runs_and_cancels_while_a_viewer_only_watches() {
    let (engine, t) = engine_with_tokens().await;
    let mut operator = engine.tcp_api(Some(&t.operator)).await;
    let mut viewer = engine.tcp_api(Some(&t.viewer)).await;
    let spec = "name = \"held\"\n[[step]]\nqueue = \"nobody-serves-this\"\nrun = \"true\"\n";
    let refused = viewer
        .runs
        .submit_run(pb::SubmitRunRequest {
            spec: spec.into(),
            ..Default::default()
        })
        .await;
    assert_status(
        refused,
        Code::PermissionDenied,
        &["operator", "vera", "viewer"],
    );
    let run = operator
        .runs
        .submit_run(pb::SubmitRunRequest {
            spec: spec.into(),
            reason: "deploy".into(),
            ..Default::default()
        })
        .await
        .expect("an operator submits")
        .into_inner()
        .run
        .expect("the run");
    assert_eq!(run.submitted_by, "otto");
    let seen = viewer
        .runs
        .get_run(pb::GetRunRequest { id: run.id.clone() })
        .await
        .expect("a viewer reads runs")
        .into_inner();
    assert_eq!(seen.id, run.id);
    let cancel = |id: String| pb::CancelRunRequest {
        id,
        reason: "not today".into(),
    };
    assert_status(
        viewer.runs.cancel_run(cancel(run.id.clone())).await,
        Code::PermissionDenied,
        &["operator"],
    );
    operator
        .runs
        .cancel_run(cancel(run.id.clone()))
        .await
        .expect("an operator cancels");
    engine
        .wait_run_state(&run.id, pb::RunState::Cancelled, DEADLINE)
        .await;
}

/// `opsdeckd worker` over TCP with `--token`, killed (with its group) on drop.
struct TcpWorker(Child);

impl TcpWorker {
    fn spawn(engine: &Engine, id: &str, token: &str) -> TcpWorker {
        let log = std::fs::File::create(engine.data_dir().join(format!("worker-{id}.log")))
            .expect("create the worker's log");
        let mut cmd = Command::new(opsdeckd());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("OPSDECK_") {
                cmd.env_remove(&name);
            }
        }
        cmd.arg("worker")
            .args(["--engine", &format!("http://{}", engine.tcp_addr())])
            .args(["--id", id, "--queue", "build", "--slots", "1"])
            .args(["--token", token])
            .arg("--spool-dir")
            .arg(engine.data_dir().join("spool").join(id))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log"))
            .stderr(log);
        TcpWorker(cmd.spawn().expect("spawn opsdeckd worker"))
    }
}

impl Drop for TcpWorker {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_worker_with_an_agent_token_runs_steps_and_one_with_an_operator_token_is_refused() {
    let (engine, t) = engine_with_tokens().await;
    let _refused = TcpWorker::spawn(&engine, "w-operator", &t.operator);
    let _agent = TcpWorker::spawn(&engine, "w-agent", &t.agent);
    let marker = engine.path("ran");
    let run = engine
        .submit(&format!(
            "name = \"build\"\n[[step]]\nqueue = \"build\"\nrun = {}\n",
            sh(&format!("echo ok > {}", marker.display()))
        ))
        .await;
    let done = engine
        .wait_run_state(&run.id, pb::RunState::Succeeded, DEADLINE)
        .await;
    assert_eq!(done.steps[0].state, pb::StepState::Succeeded as i32);
    assert!(marker.exists());
    let worker = engine.worker("w-agent").await.expect("w-agent registered");
    assert!(worker.connected);
    // The operator's worker was told why, and never registered.
    let log = engine.data_dir().join("worker-w-operator.log");
    wait_for("the refused worker to log why", DEADLINE, || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        (text.contains("agent role")).then_some(())
    })
    .await;
    assert!(engine.worker("w-operator").await.is_none());
}

#[tokio::test]
async fn an_agent_token_opens_a_worker_session_and_an_admin_token_cannot() {
    let (engine, t) = engine_with_tokens().await;
    let hello = |id: &str| pb::AgentMessage {
        kind: Some(pb::agent_message::Kind::Hello(pb::Hello {
            worker_id: id.into(),
            queues: vec!["build".into()],
            slots: 1,
            generation: 1,
            version: "roles-test".into(),
            ..Default::default()
        })),
    };
    let mut admin = engine.tcp_api(Some(&t.admin)).await;
    let refused = admin
        .agent
        .session(tokio_stream::iter(vec![hello("as-admin")]))
        .await;
    assert_status(refused, Code::PermissionDenied, &["agent role", "adm"]);

    let mut agent = engine.tcp_api(Some(&t.agent)).await;
    let (up, rx) = tokio::sync::mpsc::channel(4);
    up.send(hello("as-agent")).await.unwrap();
    let mut down = agent
        .agent
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("an agent token opens a session")
        .into_inner();
    let first = tokio::time::timeout(DEADLINE, down.message())
        .await
        .expect("the engine answers the Hello")
        .expect("a message")
        .expect("the stream is open");
    assert!(
        matches!(first.kind, Some(pb::engine_message::Kind::Welcome(_))),
        "{first:?}"
    );
    assert_status(
        agent.runs.list_runs(pb::ListRunsRequest::default()).await,
        Code::PermissionDenied,
        &["viewer role", "worker-1", "agent"],
    );
    drop(up);
}

/// The OS user's name and primary group's name, as the engine looks them up.
fn me() -> (String, String) {
    let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .unwrap()
        .expect("the test's user is in the user database");
    let group = nix::unistd::Group::from_gid(user.gid)
        .unwrap()
        .expect("the user's primary group is in the group database");
    (user.name, group.name)
}

#[tokio::test]
async fn a_socket_user_gets_the_roles_its_name_and_groups_map_to() {
    let (user, group) = me();
    let engine = Engine::start(EngineOpts {
        config: format!(
            "[[unix.user]]\nname = {user:?}\nroles = [\"viewer\"]\n\n\
             [[unix.group]]\nname = {group:?}\nroles = [\"approver\"]\n"
        ),
        ..EngineOpts::default()
    })
    .await;
    let mut api = engine.api().await;
    let me = api
        .console
        .whoami(pb::WhoamiRequest {})
        .await
        .expect("whoami")
        .into_inner();
    assert_eq!(
        (me.identity.as_str(), me.transport.as_str()),
        (user.as_str(), "unix")
    );
    assert_eq!(me.roles, ["viewer", "approver"]);
    api.runs
        .list_runs(pb::ListRunsRequest::default())
        .await
        .expect("a viewer lists runs");
    let refused = api
        .runs
        .submit_run(pb::SubmitRunRequest {
            spec: "name = \"x\"\n[[step]]\nqueue = \"q\"\nrun = \"true\"\n".into(),
            ..Default::default()
        })
        .await;
    assert_status(
        refused,
        Code::PermissionDenied,
        &[
            "needs the operator role",
            &user,
            "viewer, approver",
            "[unix]",
        ],
    );
    let worker = api
        .agent
        .session(tokio_stream::iter(Vec::<pb::AgentMessage>::new()))
        .await;
    assert_status(worker, Code::PermissionDenied, &["agent role"]);
}

#[tokio::test]
async fn the_engines_own_user_is_an_admin_and_an_agent_on_the_socket_by_default() {
    let engine = Engine::start_default().await;
    let me = engine
        .api()
        .await
        .console
        .whoami(pb::WhoamiRequest {})
        .await
        .expect("whoami")
        .into_inner();
    assert_eq!(
        me.roles,
        ["viewer", "operator", "approver", "admin", "agent"]
    );
}

#[tokio::test]
async fn token_new_prints_a_token_once_and_the_config_lines_that_give_it_its_roles() {
    let out = Command::new(opsdeckd())
        .args(["token", "new", "--identity", "deploy-bot"])
        .args(["--role", "operator", "--role", "approver", "--group", "web"])
        .stdin(Stdio::null())
        .output()
        .expect("run opsdeckd token new");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let token = text
        .lines()
        .find_map(|l| l.strip_prefix("token (shown once; give it to deploy-bot): "))
        .unwrap_or_else(|| panic!("no token line in:\n{text}"))
        .to_owned();
    assert_eq!(text.matches(&token).count(), 1, "the token is shown once");
    let (_, lines) = text
        .split_once("add to the engine's config:\n")
        .unwrap_or_else(|| panic!("no config lines in:\n{text}"));
    assert!(!lines.contains(&token), "the config holds only the hash");
    let engine = Engine::start(EngineOpts {
        config: lines.to_owned(),
        ..EngineOpts::default()
    })
    .await;
    let me = engine
        .tcp_api(Some(&token))
        .await
        .console
        .whoami(pb::WhoamiRequest {})
        .await
        .expect("the new token is known")
        .into_inner();
    assert_eq!(me.identity, "deploy-bot");
    assert_eq!(me.roles, ["viewer", "operator", "approver"]);

    let bad = Command::new(opsdeckd())
        .args(["token", "new", "--identity", "x", "--role", "boss"])
        .stdin(Stdio::null())
        .output()
        .expect("run opsdeckd token new");
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("\"boss\" is not a role"), "{err}");
}

#[tokio::test]
async fn a_demoted_engine_user_keeps_its_local_workers_but_their_steps_cannot_act_as_it() {
    // Who the tests run as: the engine's own user, admin by default.
    let me = Engine::start_default().await.os_identity().await;
    let engine = Engine::start(EngineOpts {
        config: format!("[[unix.user]]\nname = \"{me}\"\nroles = [\"viewer\"]\n"),
        args: vec!["--local-workers".into(), "1".into()],
        ..EngineOpts::default()
    })
    .await;
    // The engine's in-process worker still runs steps; the step, running as
    // the engine's user, tries to act on the engine through its socket.
    let script = format!(
        "{} --engine {} drain no-such-worker --reason escalate; echo \"exit=$?\"",
        opsdeck_tests::opsdeck().display(),
        engine.unix_addr()
    );
    let spec = format!(
        "name = \"escalate\"\n[[step]]\nname = \"try\"\nqueue = \"any\"\nrun = {}\n",
        sh(&script)
    );
    // Submitted over TCP with the tests' admin token: the socket's user is
    // only a viewer now (which may still read).
    let mut runs = engine.ci_api().await.runs;
    let run = runs
        .submit_run(pb::SubmitRunRequest {
            spec,
            reason: "escalation attempt".into(),
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
        text.contains("PERMISSION_DENIED") && text.contains("exit=1"),
        "the step was refused as a viewer: {text}"
    );
}
