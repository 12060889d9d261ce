//! Engine restarts with runs in flight on real workers: after a graceful
//! stop (SIGTERM) or a crash (SIGKILL), the engine reloads its state from
//! its database, every run it acknowledged is there, and all of them finish.

use std::time::Duration;

use opsdeck_tests::pb::{GetRunRequest, RunState, StepState};
use opsdeck_tests::{Engine, Worker, describe_events, sh};

/// Runs finish after a restart within this; workers reconnect with backoff.
const FINISH: Duration = Duration::from_secs(90);

const RUNS: usize = 6;

fn spec(i: usize, done: &std::path::Path) -> String {
    format!(
        "name = \"restart-{i}\"\n\
         [[step]]\nname = \"one\"\nqueue = \"work\"\nrun = \"sleep 1\"\n\
         [[step]]\nname = \"two\"\nqueue = \"work\"\nrun = {}\n",
        sh(&format!(
            "sleep 1; echo $OPSDECK_RUN_ID >> {}",
            done.display()
        ))
    )
}

#[derive(Clone, Copy, PartialEq)]
enum Stop {
    Sigterm,
    Kill9,
}

/// Submits runs, waits until some are running, stops the engine, starts it
/// again on the same data dir, and checks that every acknowledged run is
/// there and succeeds.
async fn runs_in_flight_survive(stop: Stop) {
    let mut engine = Engine::start_default().await;
    let _w1 = Worker::start(&engine, "w1", &["work"], 2).await;
    let _w2 = Worker::start(&engine, "w2", &["work"], 2).await;
    let done = engine.path("done");
    let mut acknowledged = Vec::new();
    for i in 0..RUNS {
        acknowledged.push(engine.submit(&spec(i, &done)).await.id);
    }
    // In flight: at least one step is running on a worker.
    let first = acknowledged[0].clone();
    engine
        .wait_run(
            &first,
            |r| r.steps.iter().any(|s| s.state == StepState::Running as i32),
            FINISH,
        )
        .await;
    let head_before = engine
        .all_events(0)
        .await
        .last()
        .map(|e| e.seq)
        .unwrap_or(0);

    match stop {
        Stop::Sigterm => {
            let status = engine.sigterm().await;
            assert_eq!(
                status.code(),
                Some(0),
                "SIGTERM is a graceful stop: exit code 0, not {status}\n{}",
                engine.logs()
            );
        }
        Stop::Kill9 => engine.kill9(),
    }
    engine.restart().await;

    // Everything acknowledged was reloaded: each run is known at once.
    let mut api = engine.api().await;
    for id in &acknowledged {
        let got = api.runs.get_run(GetRunRequest { id: id.clone() }).await;
        assert!(
            got.is_ok(),
            "run {id} was acknowledged before the stop but is gone after it: {got:?}\n{}",
            engine.logs()
        );
    }
    for id in &acknowledged {
        let run = engine.wait_run_state(id, RunState::Succeeded, FINISH).await;
        assert!(
            run.steps
                .iter()
                .all(|s| s.state == StepState::Succeeded as i32),
            "{run:#?}"
        );
    }
    let finished: Vec<String> = std::fs::read_to_string(&done)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    for id in &acknowledged {
        assert!(
            finished.contains(id),
            "the last step of run {id} never ran; done: {finished:?}"
        );
    }
    let all = engine.all_events(0).await;
    assert!(
        all.last().map(|e| e.seq).unwrap_or(0) > head_before,
        "the event log continues after the restart"
    );
    assert!(
        all.windows(2).all(|w| w[1].seq == w[0].seq + 1),
        "the event log has a gap across the restart:\n{}",
        describe_events(&all)
    );
}

#[tokio::test]
async fn after_a_graceful_sigterm_stop_with_exit_code_0_the_engine_reloads_and_every_acknowledged_run_succeeds()
 {
    runs_in_flight_survive(Stop::Sigterm).await;
}

#[tokio::test]
async fn after_a_kill_9_crash_the_engine_reloads_and_every_acknowledged_run_succeeds() {
    runs_in_flight_survive(Stop::Kill9).await;
}
