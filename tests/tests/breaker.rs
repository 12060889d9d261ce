//! A breaker per worker: a worker whose attempts keep failing while another
//! worker of the same queue succeeds is taken out of dispatch, the healthy
//! worker takes the work, and an operator closes the breaker with
//! `opsdeck reset-breaker`.

use opsdeck_tests::pb::RunState;
use opsdeck_tests::{DEADLINE, Engine, EngineOpts, Worker, describe_events};

#[tokio::test]
async fn a_worker_with_a_broken_path_trips_its_breaker_while_a_healthy_one_takes_the_work() {
    let engine = Engine::start(EngineOpts {
        config: "[engine]\nbreaker_after = 2\nbreaker_cooldown = \"1h\"\n".into(),
        ..EngineOpts::default()
    })
    .await;
    // Its steps cannot start: `sh` is nowhere on its PATH.
    let _broken =
        Worker::start_with_env(&engine, "broken", &["work"], 1, &[("PATH", "/nonexistent")]).await;
    let _healthy = Worker::start(&engine, "healthy", &["work"], 1).await;

    let spec = "name = \"job\"\n[[step]]\nname = \"s\"\nqueue = \"work\"\nrun = \"true\"\n\
                max_attempts = 6\nbackoff = \"50ms\"\n";
    let mut runs = Vec::new();
    for _ in 0..8 {
        runs.push(engine.submit(spec).await.id);
    }
    for id in &runs {
        engine
            .wait_run_state(id, RunState::Succeeded, DEADLINE)
            .await;
    }
    let events = engine.all_events(0).await;
    let shown = describe_events(&events);
    let opened = events
        .iter()
        .find(|e| e.kind == "worker.breaker_opened" && e.worker_id == "broken")
        .unwrap_or_else(|| panic!("the broken worker's breaker opens:\n{shown}"));
    assert!(
        opened.message.contains("healthy succeeded on queue work"),
        "{shown}"
    );
    assert!(
        !events
            .iter()
            .any(|e| e.kind == "worker.breaker_opened" && e.worker_id == "healthy"),
        "{shown}"
    );
    // Nothing more goes to it once it is open.
    let granted_after = events
        .iter()
        .filter(|e| e.seq > opened.seq && e.kind == "lease.granted" && e.worker_id == "broken")
        .count();
    assert_eq!(granted_after, 0, "{shown}");
    let w = engine.worker("broken").await.expect("the worker");
    assert_eq!(w.breaker, "open", "{w:#?}");
    assert!(w.breaker_message.contains("attempts failed"), "{w:#?}");

    let listed = engine.cli(&["workers"]);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(text.contains("online (breaker open)"), "{text}");

    let reset = engine.cli(&["reset-breaker", "broken", "--reason", "PATH fixed"]);
    assert!(
        reset.status.success(),
        "{}",
        String::from_utf8_lossy(&reset.stderr)
    );
    let w = engine.worker("broken").await.expect("the worker");
    assert!(w.breaker.is_empty(), "{w:#?}");
    let closed = engine.all_events(opened.seq).await;
    let closed = closed
        .iter()
        .find(|e| e.kind == "worker.breaker_closed")
        .unwrap_or_else(|| panic!("{}", describe_events(&closed)));
    assert_eq!(
        (closed.worker_id.as_str(), closed.reason.as_str()),
        ("broken", "PATH fixed")
    );
    // A breaker that is not open cannot be reset.
    let again = engine.cli(&["reset-breaker", "broken", "--reason", "twice"]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not open"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}
