//! Offline results: a worker that cannot reach the engine keeps the result
//! of a step that finished meanwhile in its spool dir (with the tail of its
//! output), delivers it once the engine is back, and deletes the file only
//! after the engine acknowledged it — also when the worker itself was killed
//! and a new process of it finds the file.

use std::time::Duration;

use opsdeck_tests::pb::{GetOutputRequest, RunState, StepState};
use opsdeck_tests::{
    DEADLINE, Engine, EngineOpts, Worker, describe_events, kinds, sh, wait_for, wait_for_file,
};

/// Long enough for a worker's reconnect backoff across an engine restart:
/// the lease it holds must still be current when it comes back.
fn patient() -> EngineOpts {
    EngineOpts {
        lease_ttl: "30s".into(),
        worker_timeout: "20s".into(),
        ..EngineOpts::default()
    }
}

/// A one-step run that waits for `release`, then prints a line and records
/// its attempt.
fn gated_spec(engine: &Engine) -> String {
    let script = format!(
        "while [ ! -f {release} ]; do sleep 0.05; done; echo finished-while-the-engine-was-away; echo $OPSDECK_ATTEMPT >> {attempts}",
        release = engine.path("release").display(),
        attempts = engine.path("attempts").display(),
    );
    format!(
        "name = \"offline\"\n[[step]]\nname = \"s\"\nqueue = \"work\"\nmax_attempts = 3\nrun = {}\n",
        sh(&script)
    )
}

async fn spooled_file(worker: &Worker) -> std::path::PathBuf {
    wait_for("a result file in the worker's spool", DEADLINE, || async {
        worker.spooled().into_iter().next()
    })
    .await
}

fn attempts(engine: &Engine) -> Vec<String> {
    std::fs::read_to_string(engine.path("attempts"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Checks the delivered run: one attempt, one success, nothing refused, and
/// the output lost while the engine was away recovered from the spool's tail.
async fn delivered_once(engine: &Engine, run_id: &str, worker: &str) {
    let done = engine
        .wait_run_state(run_id, RunState::Succeeded, Duration::from_secs(60))
        .await;
    let step = &done.steps[0];
    assert_eq!(
        (step.state, step.attempt, step.worker_id.as_str()),
        (StepState::Succeeded as i32, 1, worker),
        "{done:#?}"
    );
    assert_eq!(attempts(engine), ["1"], "the step ran once");
    let events = engine.events(run_id).await;
    let shown = describe_events(&events);
    let k = kinds(&events);
    assert_eq!(
        k.iter().filter(|k| **k == "step.succeeded").count(),
        1,
        "{shown}"
    );
    assert_eq!(
        k.iter().filter(|k| **k == "lease.granted").count(),
        1,
        "{shown}"
    );
    assert!(!k.contains(&"result.refused"), "{shown}");
    let output = engine
        .api()
        .await
        .runs
        .get_output(GetOutputRequest {
            run_id: run_id.to_owned(),
            ..Default::default()
        })
        .await
        .expect("GetOutput")
        .into_inner()
        .chunks;
    let text: String = output
        .iter()
        .map(|c| String::from_utf8_lossy(&c.data).into_owned())
        .collect();
    assert!(
        text.contains("could not reach the engine")
            && text.contains("finished-while-the-engine-was-away"),
        "the output printed while the engine was down comes back from the spooled tail: {text:?}"
    );
}

#[tokio::test]
async fn a_result_finished_while_the_engine_is_down_is_spooled_and_delivered_once_it_is_back() {
    let mut engine = Engine::start(patient()).await;
    let w1 = Worker::start(&engine, "w1", &["work"], 1).await;
    let run = engine.submit(&gated_spec(&engine)).await;
    engine
        .wait_step_state(&run.id, 0, StepState::Running, DEADLINE)
        .await;
    let lease_id = engine.get_run(&run.id).await.steps[0].lease_id.clone();

    engine.kill9();
    // Let the worker notice the engine is gone before the step prints.
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::write(engine.path("release"), "go").unwrap();
    wait_for_file(&engine.path("attempts"), DEADLINE).await;

    // The engine is down: the result waits in a file named for its lease.
    let file = spooled_file(&w1).await;
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("result-") && name.ends_with(&format!("-{lease_id}.json")),
        "{name}"
    );
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).expect("the spool file is JSON");
    assert_eq!(record["lease_id"], lease_id.as_str());
    assert_eq!(record["outcome"], "succeeded");
    assert!(
        record["output_tail"]
            .as_str()
            .unwrap_or_default()
            .contains("finished-while-the-engine-was-away"),
        "{record}"
    );

    engine.restart().await;
    delivered_once(&engine, &run.id, "w1").await;
    wait_for(
        "the acknowledged result's file to be deleted",
        DEADLINE,
        || async { w1.spooled().is_empty().then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn a_worker_killed_with_a_spooled_result_replays_it_when_it_starts_again() {
    let mut engine = Engine::start(patient()).await;
    let mut w1 = Worker::start(&engine, "w1", &["work"], 1).await;
    let run = engine.submit(&gated_spec(&engine)).await;
    engine
        .wait_step_state(&run.id, 0, StepState::Running, DEADLINE)
        .await;

    engine.kill9();
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::write(engine.path("release"), "go").unwrap();
    wait_for_file(&engine.path("attempts"), DEADLINE).await;
    let file = spooled_file(&w1).await;

    // The worker dies with the result unacknowledged; the file stays.
    w1.kill9();
    assert!(
        file.exists(),
        "a killed worker's spooled result stays on disk"
    );

    // A new process of the same worker finds it, holds its lease in its
    // Hello, and delivers it once the engine is back.
    let again = Worker::spawn(&engine, "w1", &["work"], 1, &[]);
    engine.restart().await;
    delivered_once(&engine, &run.id, "w1").await;
    wait_for(
        "the replayed result's file to be deleted",
        DEADLINE,
        || async { again.spooled().is_empty().then_some(()) },
    )
    .await;
    let w = engine.worker("w1").await.expect("w1 is known");
    assert_eq!(w.pid, again.pid(), "the new process delivered it");
}
