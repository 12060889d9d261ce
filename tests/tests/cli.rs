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

/// The last `n` characters of an id, as the console's tables show it.
fn last(id: &str, n: usize) -> &str {
    &id[id.len() - n..]
}

#[tokio::test]
async fn a_unique_prefix_or_suffix_of_an_id_names_a_run_approval_lease_or_worker() {
    let engine = Engine::start_default().await;
    let _worker = Worker::start(&engine, "suffix-worker-1", &["build"], 1).await;
    let addr = engine.unix_addr();
    let gate = engine
        .submit("name = \"gate\"\n[[step]]\napproval = { allow_self_approval = true }\n")
        .await;
    let slow = engine
        .submit(&format!(
            "name = \"slow\"\n[[step]]\nqueue = \"build\"\nrun = {}\n",
            sh("sleep 30")
        ))
        .await;
    let approval = engine.pending_approval(&gate.id).await;
    let lease = opsdeck_tests::wait_for("the slow step's lease", DEADLINE, || async {
        engine.leases().await.into_iter().find(|l| {
            l.run_id == slow.id && l.state == opsdeck_tests::pb::LeaseState::Active as i32
        })
    })
    .await;

    // A run by the last 8 characters a table shows, and by a lowercase
    // suffix; the answer names it whole.
    for short in [
        last(&gate.id, 8).to_owned(),
        last(&gate.id, 6).to_lowercase(),
    ] {
        let out = cli(&addr, None, &["run", &short, "-o", "json"]);
        assert_eq!(json(&out)["run"]["id"], gate.id.as_str(), "{short}");
    }
    // An approval, a lease and a worker by theirs.
    let out = cli(
        &addr,
        None,
        &["approve", last(&approval.id, 8), "--reason", "short id"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    engine
        .wait_run_state(&gate.id, RunState::Succeeded, DEADLINE)
        .await;
    let out = cli(
        &addr,
        None,
        &[
            "release",
            last(&lease.id, 7),
            "--fail",
            "--reason",
            "short id",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli(
        &addr,
        None,
        &["drain", "suffix-worker", "--reason", "prefix"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let drained = engine.worker("suffix-worker-1").await.expect("the worker");
    assert_eq!(
        drained.state,
        opsdeck_tests::pb::WorkerState::Draining as i32
    );

    // Finished runs are matched in the database, not only among live ones.
    let out = cli(
        &addr,
        None,
        &["events", "--run", last(&gate.id, 8), "-o", "json"],
    );
    let events = json(&out);
    assert!(
        events
            .as_array()
            .is_some_and(|e| !e.is_empty() && e.iter().all(|e| e["run_id"] == gate.id.as_str())),
        "{events}"
    );

    // Nothing matches: NOT_FOUND naming what was typed.
    let none = cli(&addr, None, &["run", "HR1GQFDW"]);
    assert_eq!(none.status.code(), Some(1));
    assert!(
        stderr(&none).contains("NOT_FOUND") && stderr(&none).contains("\"HR1GQFDW\""),
        "{}",
        stderr(&none)
    );
    // Several match: refused, listing them.
    let common = gate
        .id
        .chars()
        .zip(slow.id.chars())
        .take_while(|(a, b)| a == b)
        .count();
    assert!(
        common >= 6,
        "two ULIDs made a moment apart share their time"
    );
    let prefix = &gate.id[..common];
    let several = cli(&addr, None, &["cancel", prefix, "--reason", "which?"]);
    assert_eq!(several.status.code(), Some(1));
    assert!(
        stderr(&several).contains("INVALID_ARGUMENT")
            && stderr(&several).contains(&gate.id)
            && stderr(&several).contains(&slow.id),
        "{}",
        stderr(&several)
    );
    // Too short to be a part of an id, and not an id: NOT_FOUND saying so.
    let short = cli(&addr, None, &["drain", "suff", "--reason", "x"]);
    assert!(
        stderr(&short).contains("NOT_FOUND") && stderr(&short).contains("at least 6"),
        "{}",
        stderr(&short)
    );
}

#[tokio::test]
async fn json_counts_steps_from_one_says_null_for_what_is_not_there_and_queue_states_in_words() {
    let engine = Engine::start_default().await;
    let _worker = Worker::start(&engine, "w1", &["build"], 1).await;
    let addr = engine.unix_addr();
    let run = engine
        .submit(&format!(
            "name = \"two\"\n[[step]]\nqueue = \"build\"\nrun = {}\n[[step]]\napproval = {{}}\n",
            sh("exit 0")
        ))
        .await;
    engine.pending_approval(&run.id).await;

    let doc = json(&cli(&addr, None, &["run", &run.id, "-o", "json"]));
    let shown = &doc["run"];
    assert_eq!(shown["current_step_number"], 2, "{shown}");
    assert_eq!(shown.get("current_step"), None);
    assert_eq!(shown["finished_at_ms"], Value::Null, "{shown}");
    let (exec, gate) = (&shown["steps"][0], &shown["steps"][1]);
    assert_eq!(
        (exec["number"].as_u64(), gate["number"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(exec.get("index"), None);
    assert_eq!(exec["exit_code"], 0, "{exec}");
    assert_eq!(exec.get("has_exit_code"), None);
    assert_eq!(gate["exit_code"], Value::Null, "{gate}");
    assert_eq!(gate["next_attempt_at_ms"], Value::Null, "{gate}");
    for output in doc["output"].as_array().expect("the output") {
        assert_eq!(output["step_number"], 1, "{output}");
    }

    let approvals = json(&cli(&addr, None, &["approvals", "-o", "json"]));
    assert_eq!(approvals[0]["step_number"], 2, "{approvals}");
    let events = json(&cli(
        &addr,
        None,
        &["events", "--run", &run.id, "-o", "json"],
    ));
    let of = |kind: &str| {
        events
            .as_array()
            .and_then(|e| e.iter().find(|e| e["kind"] == kind).cloned())
            .unwrap_or_else(|| panic!("no {kind} in {events}"))
    };
    assert_eq!(of("step.succeeded")["step_number"], 1);
    assert_eq!(of("run.submitted")["step_number"], Value::Null);

    let paused = json(&cli(
        &addr,
        None,
        &["pause", "build", "-o", "json", "--reason", "x"],
    ));
    assert_eq!(paused["state"], "paused", "{paused}");
    assert_eq!(paused.get("paused"), None);
    let queues = json(&cli(&addr, None, &["queues", "-o", "json"]));
    let build = queues
        .as_array()
        .and_then(|q| q.iter().find(|q| q["name"] == "build"))
        .expect("the build queue");
    assert_eq!(build["state"], "paused");
    assert_eq!(
        build["oldest_ready_age_ms"],
        Value::Null,
        "nothing ready: {build}"
    );
}

/// What `opsdeck ARGS` prints on a `width`-column terminal (tmux), each
/// line as the terminal holds it, wrapped lines joined back.
async fn on_a_terminal(engine: &str, args: &[&str], width: u16) -> Vec<String> {
    let mut all = vec!["--engine", engine];
    all.extend(args);
    let tmux = opsdeck_tests::Tmux::start(&opsdeck(), &all, width, 50);
    let screen = opsdeck_tests::wait_for("the command's end", DEADLINE, || async {
        let out = tmux.run(&["capture-pane", "-p", "-J", "-S", "-500", "-t", "console"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("[console exited: ").then_some(text)
    })
    .await;
    assert!(screen.contains("[console exited: 0]"), "{screen}");
    screen
        .lines()
        .take_while(|l| !l.starts_with("[console exited"))
        .map(|l| l.trim_end().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

#[tokio::test]
async fn tables_fit_an_80_column_terminal_keeping_ids_whole_and_are_whole_in_a_pipe() {
    let engine = Engine::start_default().await;
    let _worker = Worker::start(
        &engine,
        "worker-with-a-rather-long-name-on-a-host",
        &[
            "build",
            "deploy-to-the-production-cluster",
            "nightly-maintenance",
        ],
        1,
    )
    .await;
    let addr = engine.unix_addr();
    let name = "deploy-the-payments-api-to-production-in-every-region";
    let gate = engine
        .submit(&format!(
            "name = \"{name}\"\n[[step]]\nname = \"ask-the-database-owners-for-approval\"\n\
             approval = {{ timeout = \"1h\", on_timeout = \"reject\" }}\n"
        ))
        .await;
    let slow = engine
        .submit(&format!(
            "name = \"{name}\"\n[[step]]\nname = \"roll-out-to-the-first-region-slowly\"\n\
             queue = \"build\"\nrun = {}\n",
            sh("sleep 60")
        ))
        .await;
    engine.pending_approval(&gate.id).await;
    let lease = opsdeck_tests::wait_for("the slow step's lease", DEADLINE, || async {
        engine
            .leases()
            .await
            .into_iter()
            .find(|l| l.run_id == slow.id)
    })
    .await;

    // How an absolute time starts (2026-…).
    let year = format!("{}-", 1970 + (gate.created_at_ms / 31_557_600_000));
    for (args, whole) in [
        (&["runs"][..], gate.id.as_str()),
        (&["approvals"], gate.id.as_str()),
        (&["leases"], lease.id.as_str()),
        (&["workers"], "worker-with-a-rather-long-name-on-a-host"),
        (&["events"], gate.id.as_str()),
    ] {
        let lines = on_a_terminal(&addr, args, 80).await;
        for line in &lines {
            assert!(
                line.chars().count() <= 80,
                "{args:?} wraps at 80 columns: {line:?}\n{}",
                lines.join("\n")
            );
        }
        let text = lines.join("\n");
        assert!(text.contains('…'), "{args:?}: something was cut:\n{text}");
        if args != ["approvals"] {
            assert!(
                text.contains(whole),
                "{args:?} keeps {whole} whole:\n{text}"
            );
        }
        assert!(
            !text.contains(&year),
            "{args:?}: relative times on a terminal:\n{text}"
        );

        // In a pipe: every cell whole, times absolute.
        let piped = cli(&addr, None, args);
        let piped = String::from_utf8_lossy(&piped.stdout).into_owned();
        assert!(!piped.contains('…'), "{args:?} piped:\n{piped}");
        assert!(
            !piped.contains(" ago") && piped.contains(&year),
            "{args:?} piped:\n{piped}"
        );
    }
    let piped = cli(&addr, None, &["runs"]);
    let piped = String::from_utf8_lossy(&piped.stdout).into_owned();
    assert!(piped.contains(name), "{piped}");
    assert!(
        piped.contains(&year) && piped.contains('Z'),
        "RFC 3339 in UTC: {piped}"
    );
    let relative = cli(&addr, None, &["runs", "--time", "relative"]);
    let relative = String::from_utf8_lossy(&relative.stdout).into_owned();
    assert!(
        relative.contains(gate.id.as_str()) && !relative.contains(&year),
        "{relative}"
    );
}

#[tokio::test]
async fn followed_events_stay_aligned_within_the_terminal_with_ages_of_when_they_print() {
    let engine = Engine::start_default().await;
    let _worker = Worker::start(&engine, "w1", &["build"], 1).await;
    let addr = engine.unix_addr();
    let tmux = opsdeck_tests::Tmux::start(
        &opsdeck(),
        &["--engine", &addr, "events", "--follow", "--limit", "1"],
        80,
        40,
    );
    tmux.wait("the header", DEADLINE, |s| s.contains("MESSAGE"))
        .await;
    let run = engine
        .submit(&format!(
            "name = \"a-run-whose-events-have-long-messages-to-cut\"\n[[step]]\n\
             name = \"a-step-with-a-long-name-too\"\nqueue = \"build\"\nrun = {}\n",
            sh("echo done")
        ))
        .await;
    engine
        .wait_run_state(&run.id, RunState::Succeeded, DEADLINE)
        .await;
    let screen = tmux
        .wait("the run's end", DEADLINE, |s| s.contains("run.succeeded"))
        .await;
    let out = tmux.run(&["capture-pane", "-p", "-J", "-t", "console"]);
    let joined = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = joined.lines().filter(|l| !l.trim().is_empty()).collect();
    let header = lines
        .iter()
        .find(|l| l.starts_with("SEQ"))
        .unwrap_or_else(|| panic!("no header:\n{screen}"));
    let kind_at = header.find("KIND").expect("a KIND column");
    let subject_at = header.find("SUBJECT").expect("a SUBJECT column");
    for line in lines.iter().filter(|l| l.contains(&run.id)) {
        assert!(line.chars().count() <= 80, "{line:?}\n{joined}");
        let chars: Vec<char> = line.chars().collect();
        let kind: String = chars[kind_at..].iter().take_while(|c| **c != ' ').collect();
        assert!(
            kind.contains('.') && chars[kind_at - 1] == ' ',
            "KIND column aligned: {line:?}\n{joined}"
        );
        let subject: String = chars[subject_at..].iter().collect();
        if kind.starts_with("run.") || kind.starts_with("step.") {
            assert!(
                subject.starts_with(&run.id),
                "SUBJECT column aligned: {line:?}\n{joined}"
            );
        }
    }
}
