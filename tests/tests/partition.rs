//! Partitions: a worker frozen (SIGSTOP) past its lease's TTL loses the
//! lease; the step is requeued and done by another worker; when the frozen
//! worker thaws, the result of its attempt is fenced off (refused, and the
//! refusal recorded), and the step is recorded as done once.

use opsdeck_tests::pb::{LeaseState, RunState, StepState};
use opsdeck_tests::{DEADLINE, Engine, Worker, describe_events, kinds, pb, sh, wait_for};

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_worker_frozen_past_its_lease_ttl_loses_the_step_to_another_and_its_late_result_is_refused()
 {
    let engine = Engine::start_default().await;
    let w1 = Worker::start(&engine, "w1", &["work"], 1).await;
    let started = engine.path("started");
    let finished = engine.path("finished");
    let release = engine.path("release");
    // Attempt 1 waits for the test; later attempts finish at once. Each
    // attempt leaves a marker when it starts and when it is done.
    let script = format!(
        "echo $OPSDECK_ATTEMPT >> {started}; \
         if [ \"$OPSDECK_ATTEMPT\" = 1 ]; then while [ ! -f {release} ]; do sleep 0.05; done; fi; \
         echo $OPSDECK_ATTEMPT >> {finished}",
        started = started.display(),
        release = release.display(),
        finished = finished.display(),
    );
    let spec = format!(
        "name = \"partitioned\"\n[[step]]\nname = \"s\"\nqueue = \"work\"\nmax_attempts = 3\nrun = {}\n",
        sh(&script)
    );
    let run = engine.submit(&spec).await;
    engine
        .wait_step_state(&run.id, 0, StepState::Running, DEADLINE)
        .await;
    let first = engine
        .leases()
        .await
        .into_iter()
        .find(|l| l.run_id == run.id && l.state == LeaseState::Active as i32)
        .expect("the first attempt's lease");
    assert_eq!(first.worker_id, "w1");

    // Frozen: no heartbeats. Its lease expires after the TTL and the step
    // goes to w2, which finishes it.
    w1.freeze();
    let _w2 = Worker::start(&engine, "w2", &["work"], 1).await;
    engine
        .wait_event(
            &run.id,
            |e| e.kind == "lease.expired" && e.lease_id == first.id,
            DEADLINE,
        )
        .await;
    let done = engine
        .wait_run_state(&run.id, RunState::Succeeded, DEADLINE)
        .await;
    assert_eq!(
        (done.steps[0].attempt, done.steps[0].worker_id.as_str()),
        (2, "w2"),
        "{done:#?}"
    );

    // The first attempt's process was never frozen (it has its own process
    // group): it finishes too, while its worker is still stopped.
    std::fs::write(&release, "go").unwrap();
    wait_for("attempt 1 to finish", DEADLINE, || async {
        lines(&finished).contains(&"1".to_owned()).then_some(())
    })
    .await;

    // Thawed, w1 reports attempt 1 with the old lease and token: refused,
    // recorded, and acknowledged so that its spool forgets it.
    w1.thaw();
    let refused = engine
        .wait_event(
            "",
            |e| e.kind == "result.refused" && e.message.contains(&first.id),
            DEADLINE,
        )
        .await;
    assert_eq!(refused.worker_id, "w1");
    assert_eq!(
        refused.run_id, run.id,
        "the refusal names the step it was for"
    );
    wait_for(
        "w1's refused result to leave its spool",
        DEADLINE,
        || async { w1.spooled().is_empty().then_some(()) },
    )
    .await;

    // Both attempts ran (at least once is what a partition allows), but the
    // step is recorded as done exactly once, by the attempt that held the
    // lease.
    let mut ran = lines(&started);
    ran.sort();
    assert_eq!(ran, ["1", "2"]);
    let mut ended = lines(&finished);
    ended.sort();
    assert_eq!(ended, ["1", "2"]);
    let events = engine.events(&run.id).await;
    let shown = describe_events(&events);
    let k = kinds(&events);
    assert_eq!(
        k.iter().filter(|k| **k == "step.succeeded").count(),
        1,
        "{shown}"
    );
    assert_eq!(
        k.iter().filter(|k| **k == "run.succeeded").count(),
        1,
        "{shown}"
    );
    let released: Vec<&pb::Event> = events
        .iter()
        .filter(|e| e.kind == "lease.released")
        .collect();
    assert_eq!(released.len(), 1, "{shown}");
    assert_ne!(released[0].lease_id, first.id, "{shown}");
    let after = engine.get_run(&run.id).await;
    assert_eq!(after.state, RunState::Succeeded as i32);
    assert_eq!(after.steps[0].attempt, 2, "{after:#?}");
}
