//! An engine that stalls (a paused VM, SIGSTOP, a swap storm) comes back
//! serving, and does not charge its own stall to the workers: a lone SQLite
//! engine keeps its lead, and leases and workers get a fresh heartbeat
//! window before anything expires.

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use opsdeck_tests::pb::{self, WhoamiRequest};
use opsdeck_tests::{DEADLINE, Engine, EngineOpts, Worker, kinds, process_alive};

#[tokio::test]
async fn a_stalled_engine_comes_back_leading_and_expires_nothing_of_the_workers() {
    let engine = Engine::start(EngineOpts {
        // Shorter than the stall below, as are the lease TTL (2s) and the
        // worker timeout (1.5s).
        args: vec!["--leader-ttl".into(), "3s".into()],
        ..EngineOpts::default()
    })
    .await;
    let _worker = Worker::start(&engine, "w1", &["work"], 1).await;
    let run = engine
        .submit("name = \"long\"\n[[step]]\nname = \"wait\"\nqueue = \"work\"\nrun = \"sleep 7; echo done\"\n")
        .await;
    engine
        .wait_step_state(&run.id, 0, pb::StepState::Running, DEADLINE)
        .await;

    let pid = Pid::from_raw(engine.pid() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    kill(pid, Signal::SIGCONT).unwrap();

    let done = engine
        .wait_run_state(&run.id, pb::RunState::Succeeded, DEADLINE)
        .await;
    assert!(
        process_alive(engine.pid() as i32),
        "the engine kept running"
    );
    engine
        .api()
        .await
        .console
        .whoami(WhoamiRequest {})
        .await
        .expect("the engine still serves as the leader");
    assert_eq!(done.steps[0].attempt, 1, "the step ran once: {done:?}");
    let events = engine.all_events(0).await;
    let seen = kinds(&events);
    assert!(seen.contains(&"engine.stalled"), "{seen:?}");
    assert!(
        !seen.contains(&"lease.expired") && !seen.contains(&"worker.offline"),
        "the engine's stall was charged to the worker: {seen:?}"
    );
    assert!(
        !engine.logs().contains("stepping down"),
        "a lone engine has nobody to hand over to"
    );
}
