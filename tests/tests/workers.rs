//! Worker drain, undrain and recycle, on real worker processes.

use std::path::Path;

use opsdeck_tests::pb::{RunState, StepState, WorkerActionRequest, WorkerState};
use opsdeck_tests::{DEADLINE, Engine, Worker, sh, wait_for};

/// A one-step run on queue `work` that waits until `release` exists.
fn blocked_until(release: &Path) -> String {
    let script = format!("while [ ! -f {} ]; do sleep 0.05; done", release.display());
    format!(
        "name = \"held\"\n[[step]]\nname = \"wait\"\nqueue = \"work\"\nrun = {}\n",
        sh(&script)
    )
}

fn quick() -> String {
    "name = \"quick\"\n[[step]]\nname = \"true\"\nqueue = \"work\"\nargv = [\"true\"]\n".to_owned()
}

/// Waits for `n` more heartbeats of a worker to reach the engine: by then
/// anything the engine would have dispatched to it has been dispatched.
async fn heartbeats(engine: &Engine, id: &str, n: usize) {
    let mut seen = engine
        .worker(id)
        .await
        .map(|w| w.last_heartbeat_at_ms)
        .unwrap_or_default();
    for _ in 0..n {
        seen = wait_for(&format!("a heartbeat from {id}"), DEADLINE, || async {
            engine
                .worker(id)
                .await
                .map(|w| w.last_heartbeat_at_ms)
                .filter(|t| *t > seen)
        })
        .await;
    }
}

#[tokio::test]
async fn a_drained_worker_finishes_its_step_and_takes_no_more_until_undrained() {
    let engine = Engine::start_default().await;
    let _w1 = Worker::start(&engine, "w1", &["work"], 1).await;
    let release = engine.path("release");
    let held = engine.submit(&blocked_until(&release)).await;
    engine
        .wait_step_state(&held.id, 0, StepState::Running, DEADLINE)
        .await;

    let drained = engine
        .api()
        .await
        .workers
        .drain_worker(WorkerActionRequest {
            id: "w1".into(),
            reason: "kernel update".into(),
        })
        .await
        .expect("drain a worker")
        .into_inner();
    assert_eq!(drained.state, WorkerState::Draining as i32);
    let event = engine
        .wait_event(
            "",
            |e| e.kind == "worker.draining" && e.worker_id == "w1",
            DEADLINE,
        )
        .await;
    assert_eq!(
        (event.actor, event.reason),
        (engine.os_identity().await, "kernel update".to_owned())
    );

    let next = engine.submit(&quick()).await;
    std::fs::write(&release, "go").unwrap();
    let done = engine
        .wait_run_state(&held.id, RunState::Succeeded, DEADLINE)
        .await;
    assert_eq!(
        done.steps[0].worker_id, "w1",
        "the draining worker finished the step it had"
    );

    // Its slot is free now, yet it takes nothing more.
    heartbeats(&engine, "w1", 3).await;
    let waiting = engine.get_run(&next.id).await;
    assert_eq!(
        waiting.steps[0].state,
        StepState::Queued as i32,
        "a draining worker took a new step: {waiting:#?}"
    );
    assert_eq!(
        engine.worker("w1").await.unwrap().state,
        WorkerState::Draining as i32
    );

    let undrained = engine
        .api()
        .await
        .workers
        .undrain_worker(WorkerActionRequest {
            id: "w1".into(),
            reason: "done".into(),
        })
        .await
        .expect("undrain a worker")
        .into_inner();
    assert_eq!(undrained.state, WorkerState::Online as i32);
    let done = engine
        .wait_run_state(&next.id, RunState::Succeeded, DEADLINE)
        .await;
    assert_eq!(done.steps[0].worker_id, "w1");
}

#[tokio::test]
async fn a_queued_step_waits_for_another_worker_while_the_only_one_is_drained() {
    let engine = Engine::start_default().await;
    let _w1 = Worker::start(&engine, "w1", &["work"], 2).await;
    engine
        .api()
        .await
        .workers
        .drain_worker(WorkerActionRequest {
            id: "w1".into(),
            reason: "maintenance".into(),
        })
        .await
        .expect("drain an idle worker");
    let run = engine.submit(&quick()).await;
    heartbeats(&engine, "w1", 3).await;
    assert_eq!(
        engine.get_run(&run.id).await.steps[0].state,
        StepState::Queued as i32
    );

    let _w2 = Worker::start(&engine, "w2", &["work"], 1).await;
    let done = engine
        .wait_run_state(&run.id, RunState::Succeeded, DEADLINE)
        .await;
    assert_eq!(done.steps[0].worker_id, "w2");
}

#[tokio::test]
async fn a_recycled_worker_comes_back_with_the_next_generation_and_its_in_flight_step_still_succeeds()
 {
    let engine = Engine::start_default().await;
    let _w1 = Worker::start(&engine, "w1", &["work"], 1).await;
    let before = engine.worker("w1").await.unwrap().generation;
    let release = engine.path("release");
    let held = engine.submit(&blocked_until(&release)).await;
    engine
        .wait_step_state(&held.id, 0, StepState::Running, DEADLINE)
        .await;

    let asked = engine
        .api()
        .await
        .workers
        .recycle_worker(WorkerActionRequest {
            id: "w1".into(),
            reason: "new binary".into(),
        })
        .await
        .expect("recycle a connected worker")
        .into_inner();
    assert!(asked.recycle_requested, "{asked:#?}");
    assert_eq!(
        asked.generation, before,
        "the generation goes up only once the new process registers"
    );
    let event = engine
        .wait_event(
            "",
            |e| e.kind == "worker.recycle_requested" && e.worker_id == "w1",
            DEADLINE,
        )
        .await;
    assert_eq!(event.reason, "new binary");

    // The step in hand finishes before the worker goes.
    std::fs::write(&release, "go").unwrap();
    let done = engine
        .wait_run_state(&held.id, RunState::Succeeded, DEADLINE)
        .await;
    assert_eq!(
        done.steps[0].attempt, 1,
        "the in-flight step was not run again"
    );

    let back = engine
        .wait_worker(
            "w1",
            |w| w.generation == before + 1 && w.connected && w.state == WorkerState::Online as i32,
            DEADLINE,
        )
        .await;
    assert!(!back.recycle_requested, "{back:#?}");
    let recycled = engine
        .wait_event(
            "",
            |e| e.kind == "worker.recycled" && e.worker_id == "w1",
            DEADLINE,
        )
        .await;
    assert_eq!(
        recycled.worker.as_ref().map(|w| w.generation),
        Some(before + 1),
        "{recycled:#?}"
    );

    // The new process does work.
    let next = engine.submit(&quick()).await;
    let done = engine
        .wait_run_state(&next.id, RunState::Succeeded, DEADLINE)
        .await;
    assert_eq!(done.steps[0].worker_id, "w1");
}

#[tokio::test]
async fn a_step_selecting_worker_labels_runs_only_on_a_worker_carrying_them() {
    let engine = Engine::start_default().await;
    let ams = Worker::spawn(&engine, "w-ams", &["sites"], 2, &["--label", "site=ams1"]);
    let fra = Worker::spawn(
        &engine,
        "w-fra",
        &["sites"],
        2,
        &["--label", "site=fra1", "--label", "gpu=yes"],
    );
    for w in [&ams, &fra] {
        engine.wait_worker(w.id(), |x| x.connected, DEADLINE).await;
    }
    let picky = "name = \"train\"\n[[step]]\nqueue = \"sites\"\nrun = \"echo trained\"\nworker = { site = \"fra1\", gpu = \"yes\" }\n";
    let mut runs = Vec::new();
    for _ in 0..4 {
        runs.push(engine.submit(picky).await);
    }
    for run in &runs {
        let done = engine
            .wait_run_state(&run.id, RunState::Succeeded, DEADLINE)
            .await;
        assert_eq!(done.steps[0].worker_id, "w-fra", "{done:?}");
        assert_eq!(
            done.steps[0].worker.get("site").map(String::as_str),
            Some("fra1")
        );
    }
    // Nobody carries it: the step waits, saying why.
    let nowhere = engine
        .submit("name = \"nyc\"\n[[step]]\nqueue = \"sites\"\nrun = \"true\"\nworker = { site = \"nyc1\" }\n")
        .await;
    let waiting = wait_for("the step to say why it waits", DEADLINE, || async {
        let run = engine.get_run(&nowhere.id).await;
        (!run.steps[0].waiting_for.is_empty()).then_some(run)
    })
    .await;
    assert_eq!(waiting.state(), RunState::Queued);
    assert!(
        waiting.steps[0].waiting_for.contains("site=nyc1"),
        "{:?}",
        waiting.steps[0].waiting_for
    );
}
