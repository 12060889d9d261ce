//! The `opsdeck` CLI against a real engine and a real worker: exit codes,
//! one JSON document on stdout with lowercase states, the gRPC code on
//! stderr, tokens over TCP, and reasons recorded in the audit trail.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use opsdeck_tests::pb::RunState;
use opsdeck_tests::{DEADLINE, Engine, TOKEN_IDENTITY, Worker, opsdeck, sh};
use serde_json::Value;

/// Runs the CLI against an engine address, with an optional token.
fn cli(engine: &str, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(opsdeck());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("OPSDECK_") {
            cmd.env_remove(&name);
        }
    }
    cmd.env("NO_COLOR", "1")
        .arg("--engine")
        .arg(engine)
        .args(args)
        .stdin(Stdio::null());
    if let Some(t) = token {
        cmd.env("OPSDECK_TOKEN", t);
    }
    cmd.output().expect("run opsdeck")
}

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "opsdeck failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not one JSON document ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn write_spec(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a spec");
    path.display().to_string()
}

#[tokio::test]
async fn submit_wait_exits_zero_and_prints_the_finished_run_as_json_with_lowercase_states() {
    let engine = Engine::start_default().await;
    let _worker = Worker::start(&engine, "w1", &["build"], 1).await;
    let spec = write_spec(
        &engine.work_dir(),
        "ok.toml",
        &format!(
            "name = \"cli-ok\"\n[[step]]\nqueue = \"build\"\nrun = {}\n",
            sh("echo hi")
        ),
    );
    let out = cli(
        &engine.unix_addr(),
        None,
        &[
            "submit", &spec, "--wait", "--output", "json", "--reason", "ci",
        ],
    );
    let doc = json(&out);
    let run = &doc["run"];
    assert_eq!(run["state"], "succeeded", "{doc}");
    assert_eq!(run["steps"][0]["state"], "succeeded");
    assert_eq!(run["steps"][0]["kind"], "exec");
    let id = run["id"].as_str().expect("a run id");
    assert_eq!(engine.get_run(id).await.state, RunState::Succeeded as i32);

    let runs = json(&cli(
        &engine.unix_addr(),
        None,
        &["runs", "--output", "json"],
    ));
    assert!(
        runs["runs"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["id"] == id)),
        "{runs}"
    );
}

#[tokio::test]
async fn a_failing_run_makes_submit_wait_exit_one() {
    let engine = Engine::start_default().await;
    let _worker = Worker::start(&engine, "w1", &["build"], 1).await;
    let spec = write_spec(
        &engine.work_dir(),
        "bad.toml",
        "name = \"cli-bad\"\n[[step]]\nqueue = \"build\"\nrun = \"exit 3\"\n",
    );
    let out = cli(
        &engine.unix_addr(),
        None,
        &["submit", &spec, "--wait", "--output", "json"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("the finished run, as JSON");
    assert_eq!(doc["run"]["state"], "failed");
    assert_eq!(doc["run"]["steps"][0]["exit_code"], 3);
}

#[tokio::test]
async fn refusals_exit_one_with_the_grpc_code_and_usage_errors_exit_two() {
    let engine = Engine::start_default().await;
    let addr = engine.unix_addr();

    let unknown = cli(&addr, None, &["cancel", "01NOPE", "--reason", "x"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        stderr(&unknown).contains("NOT_FOUND"),
        "{}",
        stderr(&unknown)
    );

    let malformed = write_spec(
        &engine.work_dir(),
        "malformed.toml",
        "name = \"x\"\n[[step]\n",
    );
    let out = cli(&addr, None, &["submit", &malformed]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("INVALID_ARGUMENT") && stderr(&out).contains("line 2"),
        "{}",
        stderr(&out)
    );

    let missing = cli(&addr, None, &["submit", "/nonexistent/spec.toml"]);
    assert_eq!(missing.status.code(), Some(2), "{}", stderr(&missing));
    let bad_flag = cli(&addr, None, &["runs", "--bogus"]);
    assert_eq!(bad_flag.status.code(), Some(2));

    let pause = cli(&addr, None, &["pause", "Bad Queue!", "--reason", "x"]);
    assert_eq!(pause.status.code(), Some(1));
    assert!(
        stderr(&pause).contains("INVALID_ARGUMENT"),
        "{}",
        stderr(&pause)
    );

    // The engine still serves after all of that.
    assert!(cli(&addr, None, &["queues"]).status.success());
}

#[tokio::test]
async fn over_tcp_the_token_is_the_identity_and_no_token_is_unauthenticated() {
    let engine = Engine::start_default().await;
    let tcp = format!("http://{}", engine.tcp_addr());
    let spec = write_spec(
        &engine.work_dir(),
        "gate.toml",
        "name = \"gate\"\n[[step]]\napproval = {}\n",
    );

    let anonymous = cli(&tcp, None, &["runs"]);
    assert_eq!(anonymous.status.code(), Some(1));
    assert!(
        stderr(&anonymous).contains("UNAUTHENTICATED"),
        "{}",
        stderr(&anonymous)
    );
    let wrong = cli(&tcp, Some("not-the-token"), &["runs"]);
    assert!(
        stderr(&wrong).contains("UNAUTHENTICATED"),
        "{}",
        stderr(&wrong)
    );

    let submitted = json(&cli(
        &tcp,
        Some(engine.token()),
        &["submit", &spec, "--output", "json"],
    ));
    assert_eq!(submitted["run"]["submitted_by"], TOKEN_IDENTITY);
    assert_eq!(submitted["run"]["state"], "waiting_approval");
}

#[tokio::test]
async fn approve_records_the_identity_and_the_typed_reason_in_the_event() {
    let engine = Engine::start_default().await;
    let spec = write_spec(
        &engine.work_dir(),
        "gate.toml",
        "name = \"gate\"\n[[step]]\napproval = {}\n",
    );
    let tcp = format!("http://{}", engine.tcp_addr());
    let run = json(&cli(
        &tcp,
        Some(engine.token()),
        &["submit", &spec, "--output", "json"],
    ));
    let run_id = run["run"]["id"].as_str().expect("run id").to_owned();
    let approvals = json(&cli(
        &engine.unix_addr(),
        None,
        &["approvals", "--output", "json"],
    ));
    let approval = approvals
        .as_array()
        .and_then(|a| a.first())
        .expect("a pending approval");
    let id = approval["id"].as_str().expect("approval id");

    let me = engine.os_identity().await;
    let decided = json(&cli(
        &engine.unix_addr(),
        None,
        &["approve", id, "--reason", "change ticket 42", "-o", "json"],
    ));
    assert_eq!(decided["state"], "approved");
    engine
        .wait_run_state(&run_id, RunState::Succeeded, DEADLINE)
        .await;

    let twice = cli(
        &engine.unix_addr(),
        None,
        &["approve", id, "--reason", "again"],
    );
    assert_eq!(twice.status.code(), Some(1));
    assert!(
        stderr(&twice).contains("FAILED_PRECONDITION"),
        "{}",
        stderr(&twice)
    );

    let events = json(&cli(
        &engine.unix_addr(),
        None,
        &["events", "--run", &run_id, "--output", "json"],
    ));
    let approved = events
        .as_array()
        .and_then(|e| e.iter().find(|e| e["kind"] == "approval.approved"))
        .expect("an approval.approved event");
    assert_eq!(approved["actor"], me.as_str());
    assert_eq!(approved["reason"], "change ticket 42");
}
