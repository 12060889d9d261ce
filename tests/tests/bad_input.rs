//! Bad input gets the right gRPC code and a message that says what to fix,
//! and the engine keeps serving afterwards. Health and reflection answer
//! without a token.

use opsdeck_tests::pb::{
    CancelRunRequest, DecideRequest, ForceReleaseRequest, GetRunRequest, GetWorkerRequest,
    ListRunsRequest, QueueActionRequest, RunState, SubmitRunRequest, WhoamiRequest,
    WorkerActionRequest,
};
use opsdeck_tests::{DEADLINE, Engine, TOKEN_IDENTITY, assert_status, sh};
use tonic::Code;

fn submit_request(spec: impl Into<String>) -> SubmitRunRequest {
    SubmitRunRequest {
        spec: spec.into(),
        reason: "e2e".into(),
        ..Default::default()
    }
}

fn one_step(queue: &str, run: &str) -> String {
    format!(
        "name = \"x\"\n[[step]]\nname = \"s\"\nqueue = {}\nrun = {}\n",
        sh(queue),
        sh(run)
    )
}

/// The engine still answers, and still takes and runs work.
async fn still_serving(engine: &Engine) {
    let me = engine
        .api()
        .await
        .console
        .whoami(WhoamiRequest {})
        .await
        .expect("whoami after bad input");
    assert!(!me.into_inner().identity.is_empty());
    let run = engine
        .submit("name = \"ok\"\n[[step]]\nname = \"gate\"\napproval = { timeout = \"5m\" }\n")
        .await;
    engine
        .wait_run_state(&run.id, RunState::WaitingApproval, DEADLINE)
        .await;
}

#[tokio::test]
async fn a_malformed_spec_is_invalid_argument_naming_the_line_to_fix() {
    let engine = Engine::start_default().await;
    let mut runs = engine.api().await.runs;

    let broken = "name = \"x\"\n[[step]]\nqueue = \"q\"\nrun = \n";
    assert_status(
        runs.submit_run(submit_request(broken)).await,
        Code::InvalidArgument,
        &["line 4"],
    );

    let unknown_field = "name = \"x\"\n[[step]]\nqueue = \"q\"\nrun = \"true\"\ntimeot = \"5s\"\n";
    assert_status(
        runs.submit_run(submit_request(unknown_field)).await,
        Code::InvalidArgument,
        &["timeot", "line 5"],
    );

    let no_command = "name = \"x\"\n[[step]]\nqueue = \"q\"\n";
    assert_status(
        runs.submit_run(submit_request(no_command)).await,
        Code::InvalidArgument,
        &["run", "argv"],
    );

    let bad_duration =
        "name = \"x\"\n[[step]]\nqueue = \"q\"\nrun = \"true\"\ntimeout = \"soon\"\n";
    assert_status(
        runs.submit_run(submit_request(bad_duration)).await,
        Code::InvalidArgument,
        &["timeout", "soon"],
    );

    let list = runs
        .list_runs(ListRunsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(list.runs.is_empty(), "a refused spec made a run: {list:#?}");
    still_serving(&engine).await;
}

#[tokio::test]
async fn unknown_run_approval_worker_and_lease_ids_are_not_found_naming_the_id() {
    let engine = Engine::start_default().await;
    let api = engine.api().await;
    let missing = "01NOSUCHTHING0000000000000";

    let r = api
        .runs
        .clone()
        .get_run(GetRunRequest { id: missing.into() })
        .await;
    assert_status(r, Code::NotFound, &[missing, "run"]);
    let r = api
        .runs
        .clone()
        .cancel_run(CancelRunRequest {
            id: missing.into(),
            reason: "x".into(),
        })
        .await;
    assert_status(r, Code::NotFound, &[missing, "run"]);
    let r = api
        .approvals
        .clone()
        .decide(DecideRequest {
            id: missing.into(),
            approve: true,
            reason: "x".into(),
        })
        .await;
    assert_status(r, Code::NotFound, &[missing, "approval"]);
    let r = api
        .workers
        .clone()
        .get_worker(GetWorkerRequest { id: missing.into() })
        .await;
    assert_status(r, Code::NotFound, &[missing, "worker"]);
    let r = api
        .workers
        .clone()
        .drain_worker(WorkerActionRequest {
            id: missing.into(),
            reason: "x".into(),
        })
        .await;
    assert_status(r, Code::NotFound, &[missing, "worker"]);
    let r = api
        .leases
        .clone()
        .force_release(ForceReleaseRequest {
            id: missing.into(),
            fail: false,
            reason: "x".into(),
        })
        .await;
    assert_status(r, Code::NotFound, &[missing, "lease"]);
    still_serving(&engine).await;
}

#[tokio::test]
async fn approving_twice_or_deciding_a_decided_approval_is_failed_precondition() {
    let engine = Engine::start_default().await;
    let run = engine
        .submit("name = \"gated\"\n[[step]]\nname = \"gate\"\napproval = { timeout = \"5m\" }\n")
        .await;
    let approval = engine.pending_approval(&run.id).await;
    let mut ci = engine.ci_api().await.approvals;
    let approve = |approve: bool| DecideRequest {
        id: approval.id.clone(),
        approve,
        reason: "x".into(),
    };

    ci.decide(approve(true)).await.expect("the first approval");
    assert_status(
        ci.decide(approve(true)).await,
        Code::FailedPrecondition,
        &[&approval.id, "already approved"],
    );
    let mut mine = engine.api().await.approvals;
    assert_status(
        mine.decide(approve(false)).await,
        Code::FailedPrecondition,
        &[&approval.id, "already"],
    );
    engine
        .wait_run_state(&run.id, RunState::Succeeded, DEADLINE)
        .await;
    still_serving(&engine).await;
}

#[tokio::test]
async fn an_empty_or_invalid_queue_name_is_invalid_argument_saying_what_a_queue_name_may_hold() {
    let engine = Engine::start_default().await;
    let api = engine.api().await;

    for name in ["", "Not A Queue!"] {
        let r = api
            .queues
            .clone()
            .pause_queue(QueueActionRequest {
                name: name.into(),
                reason: "x".into(),
                ..Default::default()
            })
            .await;
        assert_status(r, Code::InvalidArgument, &["queue name", "a-z"]);
        let r = api
            .runs
            .clone()
            .submit_run(submit_request(one_step(name, "true")))
            .await;
        assert_status(r, Code::InvalidArgument, &["queue name", "a-z"]);
    }
    let r = api
        .queues
        .clone()
        .pause_queue(QueueActionRequest {
            name: "q".repeat(65),
            reason: "x".into(),
            ..Default::default()
        })
        .await;
    assert_status(r, Code::InvalidArgument, &["64"]);
    still_serving(&engine).await;
}

#[tokio::test]
async fn a_10_mb_command_is_resource_exhausted_naming_the_limit_to_raise() {
    let engine = Engine::start_default().await;
    let mut runs = engine.api().await.runs;

    let huge = format!("echo {}", "a".repeat(10 * 1024 * 1024));
    let status = assert_status(
        runs.submit_run(submit_request(one_step("work", &huge)))
            .await,
        Code::ResourceExhausted,
        &[],
    );
    let message = status.message();
    assert!(
        message.contains("max_spec_bytes") || message.contains("max_command_bytes"),
        "the message names the limit: {message:?}"
    );
    // Under the spec limit but over the command limit: the command's limit.
    let big = format!("echo {}", "a".repeat(100 * 1024));
    assert_status(
        runs.submit_run(submit_request(one_step("work", &big)))
            .await,
        Code::ResourceExhausted,
        &["max_command_bytes"],
    );
    still_serving(&engine).await;
}

#[tokio::test]
async fn tcp_calls_without_a_token_or_with_an_unknown_token_are_unauthenticated() {
    let engine = Engine::start_default().await;

    let mut anonymous = engine.tcp_api(None).await;
    let r = anonymous.runs.list_runs(ListRunsRequest::default()).await;
    assert_status(r, Code::Unauthenticated, &["token"]);
    let r = anonymous
        .runs
        .submit_run(submit_request(one_step("work", "true")))
        .await;
    assert_status(r, Code::Unauthenticated, &["token"]);

    let mut wrong = engine.tcp_api(Some("not-the-token")).await;
    let r = wrong.console.whoami(WhoamiRequest {}).await;
    assert_status(r, Code::Unauthenticated, &["token"]);

    let list = engine
        .api()
        .await
        .runs
        .list_runs(ListRunsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(list.runs.is_empty(), "an unauthenticated submit made a run");

    let me = engine
        .ci_api()
        .await
        .console
        .whoami(WhoamiRequest {})
        .await
        .expect("whoami with the token")
        .into_inner();
    assert_eq!(
        (me.identity.as_str(), me.transport.as_str()),
        (TOKEN_IDENTITY, "tcp")
    );
    still_serving(&engine).await;
}

#[tokio::test]
async fn grpc_health_and_reflection_answer_over_tcp_without_a_token() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let engine = Engine::start_default().await;
    let channel = engine.tcp_channel().await;

    let health = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health answers without a token")
        .into_inner();
    assert_eq!(health.status, ServingStatus::Serving as i32);

    macro_rules! list_services {
        ($pb:path) => {{
            use $pb as r;
            let request = r::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(r::server_reflection_request::MessageRequest::ListServices(
                    String::new(),
                )),
            };
            let mut answers =
                r::server_reflection_client::ServerReflectionClient::new(channel.clone())
                    .server_reflection_info(tokio_stream::iter([request]))
                    .await
                    .expect("reflection answers without a token")
                    .into_inner();
            let answer = answers
                .message()
                .await
                .expect("a reflection answer")
                .expect("one answer");
            match answer.message_response {
                Some(r::server_reflection_response::MessageResponse::ListServicesResponse(
                    list,
                )) => list
                    .service
                    .into_iter()
                    .map(|s| s.name)
                    .collect::<Vec<String>>(),
                other => panic!("unexpected reflection answer: {other:?}"),
            }
        }};
    }
    for services in [
        list_services!(tonic_reflection::pb::v1),
        list_services!(tonic_reflection::pb::v1alpha),
    ] {
        for want in [
            "opsdeck.v1.Runs",
            "opsdeck.v1.Console",
            "opsdeck.v1.Agent",
            "grpc.health.v1.Health",
        ] {
            assert!(
                services.iter().any(|s| s == want),
                "reflection does not list {want}: {services:?}"
            );
        }
    }
    still_serving(&engine).await;
}
