//! The `opsdeck` binary against a small fake engine: exit codes, JSON on
//! stdout, errors on stderr, the bearer token, `submit --wait` and a
//! followed event stream that resumes after the engine ends it.
//!
//! The fake answers only what these tests ask; the real engine's own
//! behaviour is tested end to end in `tests/`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;

use opsdeck_proto::v1::events_server::{Events, EventsServer};
use opsdeck_proto::v1::runs_server::{Runs, RunsServer};
use opsdeck_proto::v1::*;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, UnixListener};
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::{Request, Response, Status};

const TOKEN: &str = "t0k";

fn authorize<T>(request: &Request<T>) -> Result<(), Status> {
    match request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
    {
        Some(v) if v == format!("Bearer {TOKEN}") => Ok(()),
        Some(_) => Err(Status::unauthenticated("unknown token")),
        None => Err(Status::unauthenticated("this engine wants a token")),
    }
}

fn run(id: &str, state: RunState) -> Run {
    Run {
        id: id.into(),
        name: format!("job-{id}"),
        state: state as i32,
        submitted_by: "ann".into(),
        steps: vec![Step {
            index: 0,
            name: "build".into(),
            kind: StepKind::Exec as i32,
            state: if state == RunState::Succeeded {
                StepState::Succeeded
            } else {
                StepState::Failed
            } as i32,
            ..Step::default()
        }],
        ..Run::default()
    }
}

struct FakeEngine;

#[tonic::async_trait]
impl Runs for FakeEngine {
    async fn submit_run(
        &self,
        request: Request<SubmitRunRequest>,
    ) -> Result<Response<SubmitRunResponse>, Status> {
        authorize(&request)?;
        let r = request.into_inner();
        if !r.spec.contains("[[step]]") {
            return Err(Status::invalid_argument("invalid run spec: no steps"));
        }
        let id = if r.spec.contains("fail") {
            "r-fail"
        } else {
            "r-ok"
        };
        Ok(Response::new(SubmitRunResponse {
            run: Some(run(id, RunState::Queued)),
            created: r.idempotency_key != "seen",
        }))
    }

    async fn get_run(&self, request: Request<GetRunRequest>) -> Result<Response<Run>, Status> {
        authorize(&request)?;
        match request.into_inner().id.as_str() {
            "r-ok" => Ok(Response::new(run("r-ok", RunState::Succeeded))),
            "r-fail" => Ok(Response::new(run("r-fail", RunState::Failed))),
            other => Err(Status::not_found(format!("no run {other}"))),
        }
    }

    async fn list_runs(
        &self,
        request: Request<ListRunsRequest>,
    ) -> Result<Response<ListRunsResponse>, Status> {
        authorize(&request)?;
        let states = request.into_inner().states;
        let runs = [
            run("r-ok", RunState::Succeeded),
            run("r-fail", RunState::Failed),
        ]
        .into_iter()
        .filter(|r| states.is_empty() || states.contains(&r.state))
        .collect();
        Ok(Response::new(ListRunsResponse { runs }))
    }

    async fn cancel_run(
        &self,
        request: Request<CancelRunRequest>,
    ) -> Result<Response<Run>, Status> {
        authorize(&request)?;
        let r = request.into_inner();
        let mut cancelled = run(&r.id, RunState::Cancelled);
        cancelled.message = format!("cancelled: {}", r.reason);
        Ok(Response::new(cancelled))
    }

    async fn retry_run(&self, request: Request<RetryRunRequest>) -> Result<Response<Run>, Status> {
        authorize(&request)?;
        Err(Status::failed_precondition("run r-ok did not fail"))
    }

    async fn get_output(
        &self,
        request: Request<GetOutputRequest>,
    ) -> Result<Response<GetOutputResponse>, Status> {
        authorize(&request)?;
        let run_id = request.into_inner().run_id;
        let chunks = vec![OutputChunk {
            run_id,
            step_index: 0,
            attempt: 1,
            stream: "stdout".into(),
            data: b"compiling\nbuilt \x1b[32mok\x1b[0m\n".to_vec(),
            ..OutputChunk::default()
        }];
        Ok(Response::new(GetOutputResponse { chunks }))
    }
}

#[tonic::async_trait]
impl Events for FakeEngine {
    async fn list_events(
        &self,
        request: Request<ListEventsRequest>,
    ) -> Result<Response<ListEventsResponse>, Status> {
        authorize(&request)?;
        let after = request.into_inner().after_seq;
        Ok(Response::new(ListEventsResponse {
            events: vec![event(after + 1, None)],
        }))
    }

    type FollowEventsStream = tokio_stream::Iter<std::vec::IntoIter<Result<Event, Status>>>;

    /// For a run: its life to the end. Otherwise the next two events, then
    /// the stream ends, as when an engine restarts.
    async fn follow_events(
        &self,
        request: Request<FollowEventsRequest>,
    ) -> Result<Response<Self::FollowEventsStream>, Status> {
        authorize(&request)?;
        let r = request.into_inner();
        let events = if r.run_id.is_empty() {
            vec![event(r.after_seq + 1, None), event(r.after_seq + 2, None)]
        } else {
            let end = if r.run_id == "r-fail" {
                RunState::Failed
            } else {
                RunState::Succeeded
            };
            vec![
                event(1, Some(run(&r.run_id, RunState::Running))),
                event(2, Some(run(&r.run_id, end))),
            ]
        };
        Ok(Response::new(tokio_stream::iter(
            events.into_iter().map(Ok).collect::<Vec<_>>(),
        )))
    }
}

fn event(seq: u64, run: Option<Run>) -> Event {
    Event {
        seq,
        kind: "run.changed".into(),
        run_id: run.as_ref().map(|r| r.id.clone()).unwrap_or_default(),
        message: format!("event {seq}"),
        run,
        ..Event::default()
    }
}

fn router() -> tonic::transport::server::Router {
    tonic::transport::Server::builder()
        .add_service(RunsServer::new(FakeEngine))
        .add_service(EventsServer::new(FakeEngine))
}

/// A fake engine on a free local port; its address.
async fn tcp_engine() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(router().serve_with_incoming(TcpListenerStream::new(listener)));
    addr.to_string()
}

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn opsdeck(engine: &str, token: Option<&str>, args: &[&str], stdin: &str) -> Outcome {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_opsdeck"));
    command
        .args(["--engine", engine])
        .args(args)
        .env_remove("OPSDECK_ENGINE")
        .env_remove("OPSDECK_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(token) = token {
        command.env("OPSDECK_TOKEN", token);
    }
    let mut child = command.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut input, stdin.as_bytes())
        .await
        .unwrap();
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("opsdeck finished in time")
        .unwrap();
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

const SPEC: &str = "name = \"x\"\n[[step]]\nrun = \"true\"\n";

#[tokio::test]
async fn lists_print_a_table_or_one_json_array() {
    let engine = tcp_engine().await;
    let text = opsdeck(&engine, Some(TOKEN), &["runs"], "").await;
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(text.stdout.starts_with("ID "), "{}", text.stdout);
    assert!(text.stdout.contains("r-fail"));

    let json = opsdeck(
        &engine,
        Some(TOKEN),
        &["runs", "--state", "failed", "-o", "json"],
        "",
    )
    .await;
    assert_eq!(json.code, 0, "{}", json.stderr);
    let runs: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 1);
    assert_eq!(runs[0]["state"], "failed");
}

#[tokio::test]
async fn engine_refusals_exit_1_with_the_code_words() {
    let engine = tcp_engine().await;
    let out = opsdeck(&engine, Some(TOKEN), &["run", "nope"], "").await;
    assert_eq!(out.code, 1);
    assert_eq!(out.stdout, "");
    assert_eq!(out.stderr.trim(), "error: NOT_FOUND: no run nope");

    let out = opsdeck(&engine, None, &["runs"], "").await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .starts_with("error: UNAUTHENTICATED: this engine wants a token")
    );
    assert!(
        out.stderr.contains("hint: pass a token with --token"),
        "{}",
        out.stderr
    );

    let out = opsdeck(&engine, Some(TOKEN), &["workers"], "").await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.starts_with("error: UNIMPLEMENTED: "),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn a_change_sends_its_reason_and_prints_the_new_state() {
    let engine = tcp_engine().await;
    let out = opsdeck(
        &engine,
        Some(TOKEN),
        &["cancel", "r-ok", "--reason", "wrong branch", "-o", "json"],
        "",
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let run: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(run["state"], "cancelled");
    assert_eq!(run["message"], "cancelled: wrong branch");
}

#[tokio::test]
async fn run_shows_steps_and_a_cleaned_output_tail() {
    let engine = tcp_engine().await;
    let out = opsdeck(&engine, Some(TOKEN), &["run", "r-ok"], "").await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("state      succeeded"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("--- step 1 build, attempt 1, last 2 lines\n  compiling\n  built ok\n")
    );

    let out = opsdeck(&engine, Some(TOKEN), &["run", "r-ok", "-o", "json"], "").await;
    let detail: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(detail["run"]["id"], "r-ok");
    assert_eq!(
        detail["output"][0]["text"],
        "compiling\nbuilt \u{1b}[32mok\u{1b}[0m\n"
    );
}

#[tokio::test]
async fn submit_reads_stdin_and_wait_exits_by_the_runs_outcome() {
    let engine = tcp_engine().await;
    let out = opsdeck(&engine, Some(TOKEN), &["submit", "-", "-o", "json"], SPEC).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let response: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        (response["created"].as_bool(), &response["run"]["state"]),
        (Some(true), &"queued".into())
    );

    let out = opsdeck(
        &engine,
        Some(TOKEN),
        &["submit", "-", "--wait", "-o", "json"],
        SPEC,
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let response: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(response["run"]["state"], "succeeded");

    let failing = format!("{SPEC}# fail\n");
    let out = opsdeck(&engine, Some(TOKEN), &["submit", "-", "--wait"], &failing).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stdout.contains("state      failed"), "{}", out.stdout);
    assert!(
        out.stderr.contains("waiting for it to end"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn submit_usage_errors_exit_2_and_bad_specs_exit_1() {
    let engine = tcp_engine().await;
    let out = opsdeck(&engine, Some(TOKEN), &["submit", "/no/such/spec.toml"], "").await;
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .starts_with("error: cannot read the run spec from /no/such/spec.toml")
    );

    let out = opsdeck(&engine, Some(TOKEN), &["submit", "-"], "name = \"x\"\n").await;
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr.trim(),
        "error: INVALID_ARGUMENT: invalid run spec: no steps"
    );
}

#[tokio::test]
async fn following_events_resumes_after_the_stream_ends_without_gaps_or_repeats() {
    let engine = tcp_engine().await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_opsdeck"))
        .args([
            "--engine", &engine, "--token", TOKEN, "events", "-f", "--from", "5", "-o", "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seqs = Vec::new();
    while seqs.len() < 4 {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("an event in time")
            .unwrap()
            .expect("a line");
        let event: Value = serde_json::from_str(&line).unwrap();
        seqs.push(event["seq"].as_u64().unwrap());
    }
    child.kill().await.unwrap();
    assert_eq!(seqs, [5, 6, 7, 8]);
}

#[tokio::test]
async fn unix_socket_engines_are_reached_and_missing_ones_explained() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("engine.sock");
    let listener = UnixListener::bind(&path).unwrap();
    tokio::spawn(router().serve_with_incoming(UnixListenerStream::new(listener)));
    let addr = format!("unix://{}", path.display());
    let out = opsdeck(&addr, Some(TOKEN), &["events"], "").await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("event 1"), "{}", out.stdout);

    let missing = format!("unix://{}", dir.path().join("gone.sock").display());
    let out = opsdeck(&missing, Some(TOKEN), &["runs"], "").await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .starts_with(&format!("error: cannot reach the engine at {missing}"))
    );
    assert!(
        out.stderr.contains("hint: there is no socket at"),
        "{}",
        out.stderr
    );
}
