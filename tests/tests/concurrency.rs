//! Concurrency limits on real workers: runs sharing a concurrency key with
//! limit 1 never overlap, before and across an engine restart; the reason a
//! run waits is shown by `opsdeck run`; a queue's `max_running` lets its
//! steps run one at a time on a worker with more slots, and is kept across
//! a restart; bad values are refused naming what to fix.

use std::path::Path;
use std::process::Output;

use opsdeck_tests::pb::{self, RunState, SubmitRunRequest};
use opsdeck_tests::{DEADLINE, Engine, Worker, assert_status, describe_events, sh, wait_for};
use tonic::Code;

/// A deploy whose key is `deploy-${params.env}`; its one step logs its start
/// and end to `log` around a sleep.
fn deploy(log: &Path, secs: u32) -> String {
    let script = format!(
        "echo \"start $OPSDECK_RUN_ID\" >> {l}; sleep {secs}; echo \"end $OPSDECK_RUN_ID\" >> {l}",
        l = log.display()
    );
    format!(
        "name = \"deploy\"\n\
         concurrency = {{ key = \"deploy-${{params.env}}\", limit = 1 }}\n\
         [params]\nenv = {{ type = \"enum\", values = [\"staging\", \"prod\"], default = \"prod\" }}\n\
         [[step]]\nname = \"roll\"\nqueue = \"deploy\"\nrun = {}\n",
        sh(&script)
    )
}

/// The `at_ms` of the first event of `kind` of the run's step 0.
fn at(events: &[pb::Event], kind: &str) -> i64 {
    events
        .iter()
        .find(|e| e.kind == kind && e.step_index == 0)
        .unwrap_or_else(|| panic!("no {kind} event:\n{}", describe_events(events)))
        .at_ms
}

/// Lines of the step log: "start"/"end" without run ids.
fn log_words(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or("").to_owned())
        .collect()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Two runs of one key with limit 1 on two workers with free slots: the
/// second's step starts only after the first's ended, within a second of
/// it. With `restart`, the engine restarts while the first step runs.
async fn two_runs_one_key(restart: bool) {
    let mut engine = Engine::start_default().await;
    let _w1 = Worker::start(&engine, "w1", &["deploy"], 2).await;
    let _w2 = Worker::start(&engine, "w2", &["deploy"], 2).await;
    let log = engine.path("steps.log");
    let spec = deploy(&log, if restart { 3 } else { 2 });
    let first = engine.submit(&spec).await;
    assert_eq!(first.concurrency_key, "deploy-prod");
    assert_eq!(first.concurrency_limit, 1);
    let second = engine.submit(&spec).await;
    engine
        .wait_step_state(&first.id, 0, pb::StepState::Running, DEADLINE)
        .await;

    // The second waits, and says for what.
    let waiting = engine.get_run(&second.id).await;
    assert_eq!(waiting.state, RunState::Queued as i32, "{waiting:#?}");
    let want = format!(
        "waiting for concurrency key deploy-prod: 1 running: {}",
        first.id
    );
    assert_eq!(waiting.steps[0].waiting_for, want);
    let shown = engine.cli(&["run", &second.id]);
    assert!(text(&shown).contains(&want), "{}", text(&shown));
    assert!(
        text(&shown).contains("deploy-prod (limit 1)"),
        "{}",
        text(&shown)
    );

    if restart {
        engine.restart().await;
        let again = engine.get_run(&second.id).await;
        assert_eq!(again.state, RunState::Queued as i32, "{again:#?}");
        assert_eq!(
            engine.get_run(&first.id).await.steps[0].state,
            pb::StepState::Running as i32
        );
    }

    for id in [&first.id, &second.id] {
        engine
            .wait_run_state(id, RunState::Succeeded, DEADLINE)
            .await;
    }
    assert_eq!(log_words(&log), ["start", "end", "start", "end"]);
    let a = engine.events(&first.id).await;
    let b = engine.events(&second.id).await;
    let (a_start, a_end) = (at(&a, "step.running"), at(&a, "step.succeeded"));
    let (b_leased, b_start, b_end) = (
        at(&b, "lease.granted"),
        at(&b, "step.running"),
        at(&b, "step.succeeded"),
    );
    assert!(a_start < a_end && b_start < b_end);
    assert!(
        b_leased >= a_end,
        "the second was leased at {b_leased}, before the first ended at {a_end}:\n{}\n{}",
        describe_events(&a),
        describe_events(&b)
    );
    assert!(
        b_start - a_end < 1_000,
        "the second started {} ms after the first ended",
        b_start - a_end
    );
}

#[tokio::test]
async fn two_runs_with_one_key_and_limit_one_never_overlap() {
    two_runs_one_key(false).await;
}

#[tokio::test]
async fn an_engine_restart_while_a_key_is_held_changes_nothing() {
    two_runs_one_key(true).await;
}

#[tokio::test]
async fn max_running_one_runs_a_queues_steps_one_at_a_time_and_survives_a_restart() {
    let mut engine = Engine::start_default().await;
    let _w = Worker::start(&engine, "w", &["q"], 4).await;

    let set = engine.cli(&[
        "queue",
        "set",
        "q",
        "--max-running",
        "1",
        "--reason",
        "one at a time",
    ]);
    assert!(set.status.success(), "{}", text(&set));
    let set_event = engine
        .wait_event("", |e| e.kind == "queue.updated", DEADLINE)
        .await;
    assert_eq!(set_event.reason, "one at a time");
    assert!(set_event.message.contains("max_running 1"), "{set_event:?}");

    // Kept: the engine reads it back.
    engine.restart().await;
    let listed = engine.cli(&["queues"]);
    let table = String::from_utf8_lossy(&listed.stdout).to_string();
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("q "))
        .unwrap_or_else(|| panic!("{table}"))
        .split_whitespace()
        .collect();
    let max = header
        .iter()
        .position(|h| *h == "MAX")
        .expect("a MAX column");
    assert_eq!(row[max], "1", "{table}");

    let log = engine.path("steps.log");
    let script = format!(
        "echo start >> {l}; sleep 1; echo end >> {l}",
        l = log.display()
    );
    let spec = format!(
        "name = \"one\"\n[[step]]\nqueue = \"q\"\nrun = {}\n",
        sh(&script)
    );
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(engine.submit(&spec).await);
    }
    let why = wait_for("a run waiting for max_running", DEADLINE, || async {
        for r in &runs {
            let run = engine.get_run(&r.id).await;
            let w = &run.steps[0].waiting_for;
            if w.contains("max_running") {
                return Some(w.clone());
            }
        }
        None
    })
    .await;
    assert_eq!(why, "waiting for queue q: max_running 1 reached");
    for r in &runs {
        engine
            .wait_run_state(&r.id, RunState::Succeeded, DEADLINE)
            .await;
    }
    assert_eq!(
        log_words(&log),
        ["start", "end", "start", "end", "start", "end"]
    );
}

#[tokio::test]
async fn bad_limits_are_refused_naming_what_to_fix() {
    let engine = Engine::start_default().await;
    let _w = Worker::start(&engine, "w", &["q"], 1).await;
    let mut api = engine.api().await;
    for (concurrency, needle) in [
        ("{ key = \"k\", limit = 0 }", "concurrency.limit"),
        ("{ key = \"${params.env}\", limit = 1 }", "concurrency.key"),
        ("{ limit = 1 }", "concurrency.key"),
    ] {
        let spec = format!(
            "name = \"x\"\nconcurrency = {concurrency}\n[params]\nenv = {{}}\n\
             [[step]]\nqueue = \"q\"\nrun = \"true\"\n"
        );
        let refused = api
            .runs
            .submit_run(SubmitRunRequest {
                spec,
                ..Default::default()
            })
            .await;
        assert_status(refused, Code::InvalidArgument, &[needle]);
    }

    // A queue no step has used and no worker serves is most likely a typo.
    let unknown = api
        .queues
        .set_queue(pb::SetQueueRequest {
            name: "deplyo".into(),
            max_running: Some(2),
            reason: String::new(),
        })
        .await;
    assert_status(unknown, Code::NotFound, &["deplyo", "known queues: q"]);
    let out = engine.cli(&["queue", "set", "deplyo", "--max-running", "2"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("no queue named"), "{}", text(&out));

    let nothing = api
        .queues
        .set_queue(pb::SetQueueRequest {
            name: "q".into(),
            max_running: None,
            reason: String::new(),
        })
        .await;
    assert_status(nothing, Code::InvalidArgument, &["max_running"]);
    let out = engine.cli(&["queue", "set", "q"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--max-running"), "{}", text(&out));
}
