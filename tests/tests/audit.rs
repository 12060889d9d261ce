//! The audit trail through the real CLI: every change's event names its
//! actor, the transport it came by and its reason, and `opsdeck events`
//! filters by actor and kind (exact or a family) on the engine's side,
//! listed or followed live.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use opsdeck_tests::{DEADLINE, Engine, TOKEN_IDENTITY, Worker, opsdeck, sh};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

fn base(engine_addr: &str, token: Option<&str>) -> Command {
    let mut cmd = Command::new(opsdeck());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("OPSDECK_") {
            cmd.env_remove(&name);
        }
    }
    cmd.env("NO_COLOR", "1")
        .args(["--engine", engine_addr])
        .stdin(Stdio::null());
    if let Some(t) = token {
        cmd.env("OPSDECK_TOKEN", t);
    }
    cmd
}

fn run_ok(engine_addr: &str, token: Option<&str>, args: &[&str]) -> Output {
    let out = base(engine_addr, token)
        .args(args)
        .output()
        .expect("run opsdeck");
    assert!(
        out.status.success(),
        "opsdeck {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn events_json(engine: &Engine, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["events", "-o", "json"];
    all.extend_from_slice(args);
    let out = run_ok(&engine.unix_addr(), None, &all);
    let doc: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    doc.as_array().expect("a JSON array of events").clone()
}

fn field<'a>(event: &'a Value, name: &str) -> &'a str {
    event[name].as_str().unwrap_or_default()
}

/// Changes by two people over two transports: the OS user on the socket,
/// and the token's identity over TCP; and a run a worker finishes.
async fn history(engine: &Engine) -> String {
    let tcp = format!("http://{}", engine.tcp_addr());
    let token = Some(engine.token());
    run_ok(
        &engine.unix_addr(),
        None,
        &["pause", "q1", "--create", "--reason", "socket pause"],
    );
    run_ok(&tcp, token, &["resume", "q1", "--reason", "tcp resume"]);
    let spec = engine.work_dir().join("audit.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"audited\"\n[[step]]\nqueue = \"build\"\nrun = {}\n",
            sh("true")
        ),
    )
    .expect("write the spec");
    let out = run_ok(
        &tcp,
        token,
        &[
            "submit",
            &spec.display().to_string(),
            "--wait",
            "-o",
            "json",
            "--reason",
            "tcp submit",
        ],
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("the run as JSON");
    assert_eq!(doc["run"]["state"], "succeeded", "{doc}");
    run_ok(
        &tcp,
        token,
        &["pause", "q2", "--create", "--reason", "tcp pause"],
    );
    engine.os_identity().await
}

#[tokio::test]
async fn every_change_names_actor_transport_and_reason_and_events_filter_by_actor_and_kind() {
    let engine = Engine::start_default().await;
    let _worker = Worker::start(&engine, "w1", &["build"], 1).await;
    let os_user = history(&engine).await;

    // Every event says who, how and (for people's changes) why.
    let all = engine.all_events(0).await;
    for e in &all {
        assert!(!e.actor.is_empty(), "an event without an actor: {e:?}");
        assert!(
            !e.transport.is_empty(),
            "an event without a transport: {e:?}"
        );
    }
    let by = |kind: &str, actor: &str| {
        all.iter()
            .find(|e| e.kind == kind && e.actor == actor)
            .unwrap_or_else(|| panic!("no {kind} by {actor}: {all:#?}"))
            .clone()
    };
    let paused = by("queue.paused", &os_user);
    assert_eq!(
        (paused.transport.as_str(), paused.reason.as_str()),
        ("unix", "socket pause")
    );
    let resumed = by("queue.resumed", TOKEN_IDENTITY);
    assert_eq!(
        (resumed.transport.as_str(), resumed.reason.as_str()),
        ("tcp", "tcp resume")
    );
    let submitted = by("run.submitted", TOKEN_IDENTITY);
    assert_eq!(
        (submitted.transport.as_str(), submitted.reason.as_str()),
        ("tcp", "tcp submit")
    );
    assert_eq!(by("lease.granted", "opsdeckd").transport, "engine");
    assert!(
        all.iter()
            .any(|e| e.actor == "worker:w1" && e.transport == "agent"),
        "a worker's events name it and the agent transport: {all:#?}"
    );

    // --actor: only that identity's events, all of them.
    let mine = events_json(&engine, &["--actor", TOKEN_IDENTITY]);
    let expected = all.iter().filter(|e| e.actor == TOKEN_IDENTITY).count();
    assert_eq!(mine.len(), expected, "{mine:#?}");
    assert!(mine.iter().all(|e| field(e, "actor") == TOKEN_IDENTITY));
    assert!(mine.iter().any(|e| field(e, "kind") == "queue.paused"));
    assert!(mine.iter().any(|e| field(e, "transport") == "tcp"));

    // --kind, repeated: a family and an exact kind.
    let kinds = events_json(&engine, &["--kind", "run", "--kind", "queue.paused"]);
    assert!(!kinds.is_empty());
    for e in &kinds {
        let kind = field(e, "kind");
        assert!(kind.starts_with("run.") || kind == "queue.paused", "{kind}");
    }
    let expected = all
        .iter()
        .filter(|e| e.kind.starts_with("run.") || e.kind == "queue.paused")
        .count();
    assert_eq!(kinds.len(), expected);
    assert!(kinds.iter().any(|e| field(e, "kind") == "run.succeeded"));
    assert_eq!(
        events_json(&engine, &["--kind", "run.*"]).len(),
        all.iter().filter(|e| e.kind.starts_with("run.")).count()
    );

    // Both: the socket user's queue changes only.
    let both = events_json(&engine, &["--actor", &os_user, "--kind", "queue"]);
    assert_eq!(both.len(), 1, "{both:#?}");
    assert_eq!(field(&both[0], "reason"), "socket pause");

    // The table too; and a filter that matches nothing prints nothing found.
    let table = run_ok(
        &engine.unix_addr(),
        None,
        &[
            "events",
            "--actor",
            TOKEN_IDENTITY,
            "--kind",
            "queue.resumed",
        ],
    );
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("queue.resumed") && text.contains("tcp resume"),
        "{text}"
    );
    assert!(!text.contains("queue.paused"), "{text}");
    assert!(events_json(&engine, &["--actor", "nobody"]).is_empty());

    // A blank kind is refused by the engine naming what to give: exit 1.
    let refused = base(&engine.unix_addr(), None)
        .args(["events", "--kind", " "])
        .output()
        .expect("run opsdeck");
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("INVALID_ARGUMENT"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[tokio::test]
async fn events_follow_filters_live_events_on_the_engine() {
    let engine = Engine::start_default().await;
    let tcp = format!("http://{}", engine.tcp_addr());
    let token = Some(engine.token());
    let mut follow = tokio::process::Command::from(base(&engine.unix_addr(), None))
        .args([
            "events",
            "--follow",
            "-o",
            "json",
            "--kind",
            "queue",
            "--actor",
            TOKEN_IDENTITY,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn opsdeck events --follow");
    let mut lines = BufReader::new(follow.stdout.take().expect("stdout")).lines();

    // Not for this filter: another actor's queue change, a run's events.
    run_ok(
        &engine.unix_addr(),
        None,
        &["pause", "q1", "--create", "--reason", "not mine"],
    );
    engine
        .submit("name = \"noise\"\n[[step]]\nqueue = \"nobody-serves\"\nrun = \"true\"\n")
        .await;
    // For it, last.
    run_ok(
        &tcp,
        token,
        &["pause", "q2", "--create", "--reason", "mine"],
    );

    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !seen.iter().any(|e: &Value| field(e, "queue") == "q2") {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .expect("the followed event within the deadline")
            .expect("read a line")
            .expect("the follow went on");
        seen.push(serde_json::from_str(&line).expect("a JSON line"));
    }
    // Give anything unfiltered that was in flight a moment to show up.
    if let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_millis(300), lines.next_line()).await
    {
        seen.push(serde_json::from_str(&line).expect("a JSON line"));
    }
    for e in &seen {
        assert_eq!(field(e, "actor"), TOKEN_IDENTITY, "{seen:#?}");
        assert!(field(e, "kind").starts_with("queue."), "{seen:#?}");
    }
    assert_eq!(seen.len(), 1, "{seen:#?}");
    let _ = follow.kill().await;
}
