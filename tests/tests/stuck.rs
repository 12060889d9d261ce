//! Stuck work: a step past its timeout is killed by its worker and retried
//! per its policy; a lease whose worker keeps heartbeating but cannot stop
//! its step is marked stuck, and a run name stuck too often is quarantined —
//! new runs of it refused, saying why and how to clear it — until an
//! operator clears it with `opsdeck unquarantine`.

use std::time::Duration;

use opsdeck_tests::pb::{RunState, StepState, SubmitRunRequest};
use opsdeck_tests::{
    DEADLINE, Engine, EngineOpts, FakeAgent, Worker, assert_status, describe_events, group_alive,
    kinds, sh, wait_for, wait_for_file,
};
use tonic::Code;

#[tokio::test]
async fn a_step_past_its_timeout_is_killed_and_retried_per_its_policy_and_the_retry_succeeds() {
    let engine = Engine::start_default().await;
    let _w1 = Worker::start(&engine, "w1", &["work"], 1).await;
    let script = format!(
        "echo $$ > {dir}/pid-$OPSDECK_ATTEMPT; if [ \"$OPSDECK_ATTEMPT\" = 1 ]; then sleep 60; fi",
        dir = engine.work_dir().display()
    );
    let spec = format!(
        "name = \"slow-then-fast\"\n[[step]]\nname = \"s\"\nqueue = \"work\"\ntimeout = \"1s\"\n\
         max_attempts = 2\nbackoff = \"100ms\"\nrun = {}\n",
        sh(&script)
    );
    let run = engine.submit(&spec).await;
    let done = engine
        .wait_run_state(&run.id, RunState::Succeeded, DEADLINE)
        .await;
    assert_eq!(done.steps[0].attempt, 2, "{done:#?}");
    let events = engine.events(&run.id).await;
    let shown = describe_events(&events);
    let retry = events
        .iter()
        .find(|e| e.kind == "step.retry_scheduled")
        .unwrap_or_else(|| panic!("the timed-out attempt is retried:\n{shown}"));
    assert!(retry.message.contains("timed out after 1s"), "{shown}");
    let pgid: i32 = wait_for_file(&engine.work_dir().join("pid-1"), DEADLINE)
        .await
        .trim()
        .parse()
        .unwrap();
    wait_for(
        "the timed-out attempt's processes to be gone",
        DEADLINE,
        || async { (!group_alive(pgid)).then_some(()) },
    )
    .await;
}

const WEDGED: &str = "name = \"wedged\"\n[[step]]\nname = \"s\"\nqueue = \"hang\"\ntimeout = \"1s\"\nrun = \"true\"\n";

#[tokio::test]
async fn a_lease_that_outlives_its_timeout_is_stuck_and_a_name_stuck_twice_is_quarantined_until_an_operator_clears_it()
 {
    let opts = EngineOpts {
        config: "[engine]\nquarantine_after = 2\nquarantine_window = \"10m\"\n".into(),
        ..EngineOpts::default()
    };
    let engine = Engine::start(opts).await;
    // A worker that takes the steps and keeps heartbeating, but never
    // reports: as one whose processes cannot be killed.
    let (mut fake, _) = FakeAgent::connect(&engine, "wedged-host", &["hang"], 2).await;
    let first = engine.submit(WEDGED).await;
    let second = engine.submit(WEDGED).await;
    let a = fake.assignment().await;
    let b = fake.assignment().await;
    fake.started(&a, 4242).await;
    fake.started(&b, 4243).await;
    let beating = fake.keep_heartbeating(&[&a, &b], Duration::from_millis(100));

    // Timeout 1s + cancel grace 1s + 2 heartbeats: both leases are stuck,
    // still held (the worker is alive), and the name is quarantined.
    for run in [&first, &second] {
        let stuck = engine
            .wait_event(&run.id, |e| e.kind == "lease.stuck", DEADLINE)
            .await;
        assert_eq!(stuck.worker_id, "wedged-host");
        assert!(stuck.lease.as_ref().is_some_and(|l| l.stuck), "{stuck:#?}");
        assert!(stuck.message.contains("force-release"), "{}", stuck.message);
    }
    let quarantined = engine
        .wait_event("", |e| e.kind == "run_name.quarantined", DEADLINE)
        .await;
    let q = quarantined
        .quarantine
        .clone()
        .expect("the event carries the quarantine");
    assert_eq!((q.name.as_str(), q.stuck_count), ("wedged", 2), "{q:#?}");
    let live = engine.leases().await;
    assert!(
        live.iter()
            .filter(|l| l.run_name == "wedged" && l.stuck)
            .count()
            == 2,
        "{live:#?}"
    );
    assert_eq!(
        engine.get_run(&first.id).await.steps[0].state,
        StepState::Running as i32,
        "a stuck lease stays with its worker until it reports or is force-released"
    );

    // New runs of the name are refused, saying why and how to clear it;
    // other names are not affected.
    let mut runs = engine.api().await.runs;
    let refused = runs
        .submit_run(SubmitRunRequest {
            spec: WEDGED.into(),
            reason: "again".into(),
            ..Default::default()
        })
        .await;
    assert_status(
        refused,
        Code::FailedPrecondition,
        &[
            "wedged",
            "quarantined",
            "stuck",
            "quarantine_after",
            "opsdeck unquarantine wedged",
        ],
    );
    let other = engine
        .submit("name = \"fine\"\n[[step]]\nname = \"gate\"\napproval = {}\n")
        .await;
    assert_eq!(other.name, "fine");

    // The operator lists it and clears it, with a reason.
    let listed = engine.cli(&["quarantines", "--output", "json"]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed[0]["name"], "wedged", "{listed}");
    assert_eq!(listed[0]["stuck_count"], 2, "{listed}");
    let table = engine.cli(&["quarantines"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("wedged"));
    let cleared = engine.cli(&["unquarantine", "wedged", "--reason", "fixed the NFS mount"]);
    assert!(
        cleared.status.success(),
        "{}",
        String::from_utf8_lossy(&cleared.stderr)
    );
    let event = engine
        .wait_event("", |e| e.kind == "run_name.quarantine_cleared", DEADLINE)
        .await;
    assert_eq!(event.reason, "fixed the NFS mount");
    assert_eq!(event.actor, engine.os_identity().await);
    let again = engine.cli(&["unquarantine", "wedged"]);
    assert_eq!(again.status.code(), Some(1), "clearing twice is refused");
    assert!(String::from_utf8_lossy(&again.stderr).contains("not quarantined"));

    // Runs of the name are taken again.
    let after = engine.submit(WEDGED).await;
    assert_eq!(after.steps[0].state, StepState::Queued as i32, "{after:#?}");
    let events = engine.all_events(0).await;
    let k = kinds(&events);
    assert_eq!(
        k.iter().filter(|k| **k == "lease.stuck").count(),
        2,
        "{}",
        describe_events(&events)
    );
    beating.abort();
}
