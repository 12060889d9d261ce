//! Graceful shutdown: SIGTERM stops the engine within its bound with exit
//! code 0, telling the consoles (their streams end UNAVAILABLE, saying why)
//! and the workers (their sessions end); the workers keep their steps
//! running, reconnect when the engine is back, and a step that ran across
//! the restart succeeds on its first attempt.

use std::time::{Duration, Instant};

use opsdeck_tests::pb::{RunState, StepState, WatchRequest, watch_message::Kind};
use opsdeck_tests::{DEADLINE, Engine, EngineOpts, Worker, describe_events, kinds, sh};
use tonic::Code;

/// The engine's promise: stopped this long after SIGTERM at most.
const BOUND: Duration = Duration::from_secs(10);

#[tokio::test]
async fn sigterm_exits_0_within_the_bound_telling_consoles_and_a_step_running_across_the_restart_succeeds_on_attempt_1()
 {
    // A lease TTL that outlasts the restart and the worker's reconnect.
    let opts = EngineOpts {
        lease_ttl: "20s".into(),
        worker_timeout: "15s".into(),
        ..EngineOpts::default()
    };
    let mut engine = Engine::start(opts).await;
    let w1 = Worker::start(&engine, "w1", &["work"], 1).await;
    let attempts = engine.path("attempts");
    let spec = format!(
        "name = \"across\"\n[[step]]\nname = \"s\"\nqueue = \"work\"\nmax_attempts = 3\nrun = {}\n",
        sh(&format!(
            "sleep 3; echo $OPSDECK_ATTEMPT >> {}",
            attempts.display()
        ))
    );
    let run = engine.submit(&spec).await;
    engine
        .wait_step_state(&run.id, 0, StepState::Running, DEADLINE)
        .await;

    // A console watching.
    let mut watch = engine
        .api()
        .await
        .console
        .watch(WatchRequest {
            resume_after_seq: 0,
        })
        .await
        .expect("watch")
        .into_inner();
    loop {
        let msg = watch
            .message()
            .await
            .expect("the snapshot")
            .expect("a message");
        if matches!(msg.kind, Some(Kind::SnapshotEnd(_))) {
            break;
        }
    }

    let asked = Instant::now();
    let status = engine.sigterm().await;
    let took = asked.elapsed();
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM is a clean stop: {status}\n{}",
        engine.logs()
    );
    assert!(
        took < BOUND,
        "the engine took {took:?} to stop after SIGTERM"
    );

    // The console was told, in words, and can resume from its last seq.
    let told = loop {
        match tokio::time::timeout(DEADLINE, watch.message())
            .await
            .expect("the stream ends")
        {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the watch ended without saying why"),
            Err(status) => break status,
        }
    };
    assert_eq!(told.code(), Code::Unavailable, "{told:?}");
    assert!(told.message().contains("shutting down"), "{told:?}");
    let log = std::fs::read_to_string(engine.data_dir().join("engine-1.log")).unwrap();
    assert!(
        log.contains("shutting down"),
        "the engine logs its shutdown"
    );

    // The step kept running without the engine; the worker reconnects and
    // its result lands on attempt 1.
    engine.restart().await;
    let done = engine
        .wait_run_state(&run.id, RunState::Succeeded, DEADLINE)
        .await;
    assert_eq!(done.steps[0].attempt, 1, "{done:#?}");
    assert_eq!(std::fs::read_to_string(&attempts).unwrap().trim(), "1");
    let events = engine.events(&run.id).await;
    let k = kinds(&events);
    assert_eq!(
        k.iter().filter(|k| **k == "lease.granted").count(),
        1,
        "{}",
        describe_events(&events)
    );
    let w = engine.wait_worker("w1", |w| w.connected, DEADLINE).await;
    assert_eq!(w.pid, w1.pid(), "the same worker process, reconnected");
}
