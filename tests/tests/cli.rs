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
    // A typo of a queue is not a new queue: NOT_FOUND listing the known
    // ones; pausing one ahead of its first use takes --create.
    let typo = cli(&addr, None, &["pause", "opps", "--reason", "x"]);
    assert_eq!(typo.status.code(), Some(1));
    assert!(
        stderr(&typo).contains("NOT_FOUND")
            && stderr(&typo).contains("no queue named \"opps\"")
            && stderr(&typo).contains("--create"),
        "{}",
        stderr(&typo)
    );
    let unknown_resume = cli(&addr, None, &["resume", "opps", "--reason", "x"]);
    assert!(stderr(&unknown_resume).contains("NOT_FOUND"));
    let ahead = cli(
        &addr,
        None,
        &[
            "pause",
            "opps",
            "--create",
            "--reason",
            "before the rollout",
        ],
    );
    assert!(ahead.status.success(), "{}", stderr(&ahead));
    let listed = cli(&addr, None, &["queues"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("opps"));

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

#[tokio::test]
async fn submit_takes_several_files_and_a_count_and_runs_pages_through_them_with_filters() {
    let engine = Engine::start_default().await;
    let dir = engine.work_dir();
    let deploy = write_spec(
        &dir,
        "deploy.toml",
        "name = \"deploy-api\"\nlabels = { team = \"web\" }\n[[step]]\nqueue = \"q\"\nrun = \"true\"\n",
    );
    let backup = write_spec(
        &dir,
        "backup.toml",
        "name = \"backup\"\nlabels = { team = \"db\" }\n[[step]]\nqueue = \"q\"\nrun = \"true\"\n",
    );
    let addr = engine.unix_addr();
    let made = json(&cli(
        &addr,
        None,
        &[
            "submit", &deploy, &backup, "--count", "3", "--output", "json",
        ],
    ));
    let made = made["runs"].as_array().expect("the runs made");
    assert_eq!(made.len(), 6, "{made:?}");
    assert_eq!(made[0]["name"], "deploy-api");
    assert_eq!(made[5]["name"], "backup");

    // One page of 4, then the rest with the token it gave.
    let first = json(&cli(
        &addr,
        None,
        &["runs", "--limit", "4", "--output", "json"],
    ));
    assert_eq!(first["runs"].as_array().map(Vec::len), Some(4));
    let token = first["next_page_token"].as_str().expect("a page token");
    assert!(!token.is_empty(), "{first}");
    let second = json(&cli(
        &addr,
        None,
        &["runs", "--limit", "4", "--page", token, "--output", "json"],
    ));
    assert_eq!(second["runs"].as_array().map(Vec::len), Some(2));
    assert_eq!(second["next_page_token"], "");
    let all = json(&cli(
        &addr,
        None,
        &["runs", "--all", "--limit", "4", "--output", "json"],
    ));
    assert_eq!(all["runs"].as_array().map(Vec::len), Some(6));

    // Filters: a name prefix and a label.
    let deploys = json(&cli(
        &addr,
        None,
        &[
            "runs", "--name", "deploy-*", "--label", "team=web", "--output", "json",
        ],
    ));
    let deploys = deploys["runs"].as_array().expect("runs");
    assert_eq!(deploys.len(), 3);
    assert!(deploys.iter().all(|r| r["name"] == "deploy-api"));

    // Without --all on a pipe, the hint to the next page goes to stderr.
    let out = cli(&addr, None, &["runs", "--limit", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("--page"), "{}", stderr(&out));

    // One bad spec refuses the whole call: nothing of it is made.
    let bad = write_spec(
        &dir,
        "bad.toml",
        "name = \"bad\"\n[[step]]\nrun = \"true\"\n",
    );
    let out = cli(&addr, None, &["submit", &deploy, &bad]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("INVALID_ARGUMENT"),
        "{}",
        stderr(&out)
    );
    let after = json(&cli(&addr, None, &["runs", "--all", "--output", "json"]));
    assert_eq!(after["runs"].as_array().map(Vec::len), Some(6));
}

#[tokio::test]
async fn events_from_a_pruned_seq_say_where_history_starts() {
    let engine = opsdeck_tests::Engine::start(opsdeck_tests::EngineOpts {
        config: "[retention]\nevents = \"1s\"\ninterval = \"1s\"\n".into(),
        ..Default::default()
    })
    .await;
    let _worker = Worker::start(&engine, "w1", &["q"], 1).await;
    let spec = write_spec(
        &engine.work_dir(),
        "one.toml",
        "name = \"one\"\n[[step]]\nqueue = \"q\"\nrun = \"true\"\n",
    );
    let addr = engine.unix_addr();
    let out = cli(&addr, None, &["submit", &spec, "--wait"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Something newer than the retention, so that the old events can go.
    opsdeck_tests::wait_for("old events to be pruned", DEADLINE, || {
        let addr = addr.clone();
        let spec = spec.clone();
        async move {
            let _ = cli(&addr, None, &["submit", &spec]);
            let out = cli(&addr, None, &["events", "--from", "1", "--output", "json"]);
            stderr(&out).contains("pruned by retention").then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn a_run_waiting_on_its_queue_is_queued_and_says_why() {
    let engine = Engine::start_default().await;
    let addr = engine.unix_addr();
    let _worker = Worker::start(&engine, "w1", &["work"], 1).await;
    let paused = cli(&addr, None, &["pause", "work", "--reason", "incident 7"]);
    assert!(paused.status.success(), "{}", stderr(&paused));

    let held = engine
        .submit("name = \"held\"\n[[step]]\nname = \"s\"\nqueue = \"work\"\nrun = \"true\"\n")
        .await;
    let orphan = engine
        .submit("name = \"orphan\"\n[[step]]\nname = \"s\"\nqueue = \"nowhere\"\nrun = \"true\"\n")
        .await;
    for (run, why) in [
        (&held, "waits: queue work paused by"),
        (&orphan, "waits: no connected worker serves queue nowhere"),
    ] {
        let shown = cli(&addr, None, &["run", &run.id]);
        let text = String::from_utf8_lossy(&shown.stdout).into_owned();
        assert!(text.contains(why), "{text}");
        let doc = json(&cli(&addr, None, &["-o", "json", "run", &run.id]));
        assert_eq!(doc["run"]["state"], "queued", "{doc}");
    }
    let text = String::from_utf8_lossy(&cli(&addr, None, &["run", &held.id]).stdout).into_owned();
    assert!(text.contains("incident 7"), "{text}");

    let resumed = cli(&addr, None, &["resume", "work", "--reason", "over"]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    engine
        .wait_run_state(&held.id, RunState::Succeeded, DEADLINE)
        .await;
}

#[tokio::test]
async fn events_shows_the_newest_like_tail_follows_from_there_and_says_when_it_cut() {
    let engine = Engine::start_default().await;
    let addr = engine.unix_addr();
    let spec = write_spec(
        &engine.work_dir(),
        "noise.toml",
        "name = \"noise\"\n[[step]]\nqueue = \"nobody\"\nrun = \"true\"\n",
    );
    let made = cli(&addr, None, &["submit", &spec, "--count", "40"]);
    assert!(made.status.success(), "{}", stderr(&made));
    let seqs = |out: &Output| -> Vec<u64> {
        json(out)
            .as_array()
            .expect("an array of events")
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect()
    };
    let all = engine.all_events(0).await;
    let head = all.last().unwrap().seq;
    assert!(head > 60, "enough events to cut: {head}");

    // The newest 50, oldest first, and a note that older ones exist.
    let tail = cli(&addr, None, &["events", "-o", "json"]);
    let shown = seqs(&tail);
    assert_eq!(shown.len(), 50);
    assert_eq!(*shown.last().unwrap(), head);
    assert_eq!(shown[0], head - 49);
    assert!(
        stderr(&tail).contains("showing the newest 50 events"),
        "{}",
        stderr(&tail)
    );
    let five = seqs(&cli(&addr, None, &["events", "-o", "json", "--limit", "5"]));
    assert_eq!(five, (head - 4..=head).collect::<Vec<_>>());
    // Filtered, too.
    let submitted = json(&cli(
        &addr,
        None,
        &[
            "events",
            "-o",
            "json",
            "--kind",
            "run.submitted",
            "--limit",
            "3",
        ],
    ));
    let submitted = submitted.as_array().unwrap();
    assert_eq!(submitted.len(), 3);
    assert!(submitted.iter().all(|e| e["kind"] == "run.submitted"));

    // A range from a seq, cut at its limit, says where to go on.
    let range = cli(
        &addr,
        None,
        &["events", "-o", "json", "--from", "1", "--limit", "10"],
    );
    assert_eq!(seqs(&range), (1..=10).collect::<Vec<_>>());
    assert!(
        stderr(&range).contains("go on with --from 11"),
        "{}",
        stderr(&range)
    );

    // --follow prints the tail, then what happens next; not the history.
    let mut follow = tokio::process::Command::new(opsdeck())
        .env("NO_COLOR", "1")
        .env_remove("OPSDECK_TOKEN")
        .args([
            "--engine", &addr, "events", "--follow", "-o", "json", "--limit", "3",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn opsdeck events --follow");
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(follow.stdout.take().unwrap()).lines();
    let mut got = Vec::new();
    for _ in 0..3 {
        let line = tokio::time::timeout(DEADLINE, lines.next_line())
            .await
            .expect("a line in time")
            .unwrap()
            .unwrap();
        let event: Value = serde_json::from_str(&line).unwrap();
        got.push(event["seq"].as_u64().unwrap());
    }
    assert_eq!(got, (head - 2..=head).collect::<Vec<_>>());
    let more = cli(&addr, None, &["submit", &spec]);
    assert!(more.status.success());
    let line = tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .expect("a new event in time")
        .unwrap()
        .unwrap();
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["seq"].as_u64().unwrap(), head + 1);
}

#[tokio::test]
async fn every_cli_submit_carries_an_idempotency_key_so_asking_again_is_safe() {
    let engine = Engine::start_default().await;
    let addr = engine.unix_addr();
    let spec = write_spec(
        &engine.work_dir(),
        "one.toml",
        "name = \"one\"\n[[step]]\nqueue = \"nobody\"\nrun = \"true\"\n",
    );
    let one = json(&cli(&addr, None, &["submit", &spec, "-o", "json"]));
    let key = one["run"]["idempotency_key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("cli-"), "{one}");
    let many = json(&cli(
        &addr,
        None,
        &["submit", &spec, "--count", "3", "-o", "json"],
    ));
    let ids: Vec<&str> = many["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    for id in ids {
        let run = engine.get_run(id).await;
        assert!(run.idempotency_key.starts_with("cli-"), "{run:?}");
    }
    // Asked again with its key, a submit answers the first run.
    let again = json(&cli(
        &addr,
        None,
        &["submit", &spec, "--idempotency-key", &key, "-o", "json"],
    ));
    assert_eq!(again["created"], false);
    assert_eq!(again["run"]["id"], one["run"]["id"]);
}

#[tokio::test]
async fn with_json_output_an_error_is_a_json_document_on_stdout_too() {
    let engine = Engine::start_default().await;
    let out = cli(
        &engine.unix_addr(),
        None,
        &["-o", "json", "run", "NO-SUCH-RUN"],
    );
    assert_eq!(out.status.code(), Some(1));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("a JSON document on stdout");
    assert_eq!(doc["error"]["code"], "NOT_FOUND", "{doc}");
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .contains("NO-SUCH-RUN"),
        "{doc}"
    );
    assert!(stderr(&out).contains("NOT_FOUND"));
}
