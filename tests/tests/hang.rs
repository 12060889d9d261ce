//! Hang detection: a step that sets no timeout gets the engine's default
//! and is killed at it; a spec asking for more than the maximum is refused
//! naming the setting; a run over its own timeout fails; a step that prints
//! nothing for its quiet_timeout is marked hung, keeps running, and is no
//! longer hung once it prints again.

use opsdeck_tests::pb::{RunState, SubmitRunRequest};
use opsdeck_tests::{DEADLINE, Engine, EngineOpts, Worker, assert_status, describe_events, sh};
use tonic::Code;

fn engine_with(config: &str) -> EngineOpts {
    EngineOpts {
        config: config.into(),
        ..EngineOpts::default()
    }
}

#[tokio::test]
async fn a_step_without_a_timeout_is_killed_at_the_default_and_one_over_the_maximum_is_refused() {
    let engine = Engine::start(engine_with(
        "[engine]\ndefault_step_timeout = \"1s\"\nmax_step_timeout = \"1h\"\n",
    ))
    .await;
    let _w = Worker::start(&engine, "w1", &["work"], 1).await;

    let run = engine
        .submit(
            "name = \"forever\"\n[[step]]\nname = \"s\"\nqueue = \"work\"\nrun = \"sleep 60\"\n",
        )
        .await;
    assert_eq!(
        run.steps[0].timeout_ms, 1_000,
        "the default is the step's timeout"
    );
    let done = engine
        .wait_run_state(&run.id, RunState::Failed, DEADLINE)
        .await;
    let events = engine.events(&run.id).await;
    assert!(
        done.steps[0].message.contains("timed out after 1s"),
        "{done:#?}\n{}",
        describe_events(&events)
    );

    let refused = engine
        .api()
        .await
        .runs
        .submit_run(SubmitRunRequest {
            spec: "name = \"long\"\n[[step]]\nqueue = \"work\"\nrun = \"true\"\ntimeout = \"2h\"\n"
                .into(),
            reason: "e2e".into(),
            ..Default::default()
        })
        .await;
    assert_status(
        refused,
        Code::InvalidArgument,
        &["step 1", "timeout 2h", "max_step_timeout"],
    );
}

#[tokio::test]
async fn a_run_over_its_own_timeout_fails_and_its_step_is_stopped() {
    let engine = Engine::start_default().await;
    let _w = Worker::start(&engine, "w1", &["work"], 1).await;
    let run = engine
        .submit(
            "name = \"bounded\"\ntimeout = \"1s\"\n[[step]]\nname = \"s\"\nqueue = \"work\"\n\
             timeout = \"1h\"\nrun = \"sleep 60\"\n",
        )
        .await;
    let done = engine
        .wait_run_state(&run.id, RunState::Failed, DEADLINE)
        .await;
    assert!(done.message.contains("run timed out"), "{done:#?}");
    assert_eq!(done.timeout_ms, 1_000);
    // The worker is told to stop the step and its slot comes free.
    let next = engine
        .submit("name = \"after\"\n[[step]]\nqueue = \"work\"\nrun = \"true\"\n")
        .await;
    engine
        .wait_run_state(&next.id, RunState::Succeeded, DEADLINE)
        .await;
}

#[tokio::test]
async fn a_quiet_step_is_marked_hung_without_being_stopped_until_it_prints_again() {
    let engine = Engine::start_default().await;
    let _w = Worker::start(&engine, "w1", &["work"], 1).await;
    let go = engine.work_dir().join("go");
    let script = format!(
        "echo started; while [ ! -f {go} ]; do sleep 0.1; done; echo resumed; sleep 0.3",
        go = go.display()
    );
    let spec = format!(
        "name = \"quiet\"\n[[step]]\nname = \"s\"\nqueue = \"work\"\nquiet_timeout = \"1s\"\nrun = {}\n",
        sh(&script)
    );
    let run = engine.submit(&spec).await;
    let hung = engine
        .wait_event(&run.id, |e| e.kind == "step.hung", DEADLINE)
        .await;
    assert!(hung.message.contains("no output for 1s"), "{hung:?}");
    let now = engine.get_run(&run.id).await;
    assert!(
        now.steps[0].hung && now.state == RunState::Running as i32,
        "hung, and still running: {now:#?}"
    );
    let shown = engine.cli(&["run", &run.id]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains("hung: no output for 1s"), "{text}");

    std::fs::write(&go, "").unwrap();
    let done = engine
        .wait_run_state(&run.id, RunState::Succeeded, DEADLINE)
        .await;
    assert!(!done.steps[0].hung, "{done:#?}");
    let events = engine.events(&run.id).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let hung_at = kinds.iter().position(|k| *k == "step.hung");
    let unhung_at = kinds.iter().position(|k| *k == "step.unhung");
    assert!(
        matches!((hung_at, unhung_at), (Some(h), Some(u)) if h < u),
        "{}",
        describe_events(&events)
    );
    // The engine never stopped it: it printed after it was marked hung.
    assert!(engine.output_text(&run.id).await.contains("resumed"));
}
