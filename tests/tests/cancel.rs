//! Cancelling a run: the run is cancelled at once, the step's process group
//! gets SIGTERM and, after the grace (1 s here), SIGKILL; nothing of the run
//! runs afterwards.

use std::path::Path;

use opsdeck_tests::pb::{
    ApprovalState, CancelRunRequest, ListApprovalsRequest, RunState, StepState,
};
use opsdeck_tests::{
    DEADLINE, Engine, Worker, describe_events, group_alive, kinds, sh, wait_for, wait_for_file,
};

/// A two-step run on queue `work`: `first`, then a step that writes `after`.
fn two_steps(first: &str, after: &Path) -> String {
    format!(
        "name = \"cancel-me\"\n\
         [[step]]\nname = \"long\"\nqueue = \"work\"\nrun = {}\n\
         [[step]]\nname = \"next\"\nqueue = \"work\"\nrun = {}\n",
        sh(first),
        sh(&format!("echo ran > {}", after.display())),
    )
}

/// Runs one more step on queue `work` to its end: by then the worker has
/// taken whatever it would have taken from the cancelled run.
async fn barrier(engine: &Engine) {
    let marker = engine.path("barrier");
    let spec = format!(
        "name = \"barrier\"\n[[step]]\nqueue = \"work\"\nrun = {}\n",
        sh(&format!("echo ok > {}", marker.display()))
    );
    let run = engine.submit(&spec).await;
    engine
        .wait_run_state(&run.id, RunState::Succeeded, DEADLINE)
        .await;
}

#[tokio::test]
async fn cancelling_mid_step_kills_a_sigterm_ignoring_process_group_after_the_grace_and_runs_no_later_step()
 {
    let engine = Engine::start_default().await;
    let _worker = Worker::start(&engine, "w1", &["work"], 1).await;
    let (pid_file, started, after) = (
        engine.path("pid"),
        engine.path("started"),
        engine.path("after"),
    );
    let first = format!(
        "trap '' TERM; echo $$ > {}; echo started > {}; sleep 30",
        pid_file.display(),
        started.display()
    );
    let run = engine.submit(&two_steps(&first, &after)).await;
    wait_for_file(&started, DEADLINE).await;
    let pgid: i32 = wait_for_file(&pid_file, DEADLINE)
        .await
        .trim()
        .parse()
        .unwrap();
    engine
        .wait_step_state(&run.id, 0, StepState::Running, DEADLINE)
        .await;
    assert!(
        group_alive(pgid),
        "the step's process group should be running"
    );

    let cancelled = engine
        .api()
        .await
        .runs
        .cancel_run(CancelRunRequest {
            id: run.id.clone(),
            reason: "wrong release".into(),
        })
        .await
        .expect("cancel a running run")
        .into_inner();
    assert_eq!(
        cancelled.state,
        RunState::Cancelled as i32,
        "the run is cancelled at once: {cancelled:#?}"
    );
    assert_eq!(cancelled.steps[0].state, StepState::Cancelled as i32);

    // TERM is ignored by every process of the group: only the SIGKILL after
    // the grace ends it.
    wait_for(
        "the step's process group to be killed",
        DEADLINE,
        || async { (!group_alive(pgid)).then_some(()) },
    )
    .await;

    barrier(&engine).await;
    assert!(!after.exists(), "the step after the cancelled one ran");
    let run = engine.get_run(&run.id).await;
    assert_eq!(run.state, RunState::Cancelled as i32);
    assert!(
        ![
            StepState::Queued,
            StepState::Leased,
            StepState::Running,
            StepState::Succeeded
        ]
        .iter()
        .any(|s| run.steps[1].state == *s as i32),
        "the step after the cancelled one moved: {:#?}",
        run.steps[1]
    );
    let events = engine.events(&run.id).await;
    let shown = describe_events(&events);
    assert!(
        !events
            .iter()
            .any(|e| e.step_index == 1 && e.kind == "lease.granted"),
        "{shown}"
    );
    let me = engine.os_identity().await;
    let cancel = events
        .iter()
        .find(|e| e.kind == "run.cancelled")
        .unwrap_or_else(|| panic!("no run.cancelled:\n{shown}"));
    assert_eq!(
        (cancel.actor.as_str(), cancel.reason.as_str()),
        (me.as_str(), "wrong release"),
        "{shown}"
    );
    assert_eq!(
        kinds(&events)
            .iter()
            .filter(|k| **k == "run.cancelled")
            .count(),
        1,
        "{shown}"
    );
}

#[tokio::test]
async fn cancelling_mid_step_sends_sigterm_to_the_step_first_and_sigkill_after_the_grace() {
    let engine = Engine::start_default().await;
    let _worker = Worker::start(&engine, "w1", &["work"], 1).await;
    let (pid_file, log, after) = (engine.path("pid"), engine.path("log"), engine.path("after"));
    // Records the TERM and keeps going: it survives SIGTERM, so only SIGKILL
    // can end it.
    let first = format!(
        "trap 'echo TERM >> {log}' TERM; echo $$ > {pid}; while :; do echo tick >> {log}; sleep 0.1; done",
        log = log.display(),
        pid = pid_file.display()
    );
    let run = engine.submit(&two_steps(&first, &after)).await;
    let pgid: i32 = wait_for_file(&pid_file, DEADLINE)
        .await
        .trim()
        .parse()
        .unwrap();
    wait_for_file(&log, DEADLINE).await;
    engine
        .wait_step_state(&run.id, 0, StepState::Running, DEADLINE)
        .await;

    let cancelled = engine
        .api()
        .await
        .runs
        .cancel_run(CancelRunRequest {
            id: run.id.clone(),
            reason: "stop".into(),
        })
        .await
        .expect("cancel a running run")
        .into_inner();
    assert_eq!(cancelled.state, RunState::Cancelled as i32);

    wait_for(
        "the step's process group to be killed",
        DEADLINE,
        || async { (!group_alive(pgid)).then_some(()) },
    )
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let term_at = lines
        .iter()
        .position(|l| *l == "TERM")
        .unwrap_or_else(|| panic!("the step never got SIGTERM:\n{text}"));
    assert!(
        lines[term_at + 1..].contains(&"tick"),
        "the step kept running after SIGTERM until the SIGKILL, so it must have ticked after TERM:\n{text}"
    );
    assert_eq!(
        lines.iter().filter(|l| **l == "TERM").count(),
        1,
        "one SIGTERM, then SIGKILL:\n{text}"
    );

    barrier(&engine).await;
    assert!(!after.exists(), "the step after the cancelled one ran");
}

#[tokio::test]
async fn cancelling_a_run_waiting_for_approval_cancels_its_approval() {
    let engine = Engine::start_default().await;
    let run = engine
        .submit("name = \"gated\"\n[[step]]\nname = \"gate\"\napproval = { timeout = \"5m\" }\n")
        .await;
    let approval = engine.pending_approval(&run.id).await;

    let cancelled = engine
        .api()
        .await
        .runs
        .cancel_run(CancelRunRequest {
            id: run.id.clone(),
            reason: "not needed".into(),
        })
        .await
        .expect("cancel a waiting run")
        .into_inner();
    assert_eq!(cancelled.state, RunState::Cancelled as i32);
    let all = engine
        .api()
        .await
        .approvals
        .list_approvals(ListApprovalsRequest { all: true })
        .await
        .unwrap()
        .into_inner();
    let a = all
        .approvals
        .iter()
        .find(|a| a.id == approval.id)
        .expect("the approval is listed");
    assert_eq!(a.state, ApprovalState::Cancelled as i32);
    let events = engine.events(&run.id).await;
    assert!(
        kinds(&events).contains(&"approval.cancelled"),
        "{}",
        describe_events(&events)
    );
}
