//! Leases: a worker killed with SIGKILL loses its lease after the TTL, the
//! step goes to another worker, and a result with the old fencing token is
//! refused; an operator's force-release requeues or fails the step.

use opsdeck_tests::pb::{
    AgentMessage, ForceReleaseRequest, Hello, LeaseState, Outcome, RunState, StepResult, StepState,
    WorkerState, agent_message, engine_message,
};
use opsdeck_tests::{
    DEADLINE, Engine, EngineOpts, TOKEN_IDENTITY, Worker, describe_events, group_alive, kinds, pb,
    sh, wait_for, wait_for_file,
};
use tokio_stream::wrappers::ReceiverStream;

/// The live lease of step `index` of a run, once there is one.
async fn live_lease(engine: &Engine, run_id: &str, index: u32) -> pb::Lease {
    wait_for(
        &format!("an active lease on step {index} of run {run_id}"),
        DEADLINE,
        || async {
            engine.leases().await.into_iter().find(|l| {
                l.run_id == run_id && l.step_index == index && l.state == LeaseState::Active as i32
            })
        },
    )
    .await
}

/// A one-step run on queue `work` that appends its attempt number to
/// `attempts`, writes its shell's pid to `pid-N`, and then runs `body`.
fn attempt_spec(engine: &Engine, body: &str) -> String {
    let script = format!(
        "echo $OPSDECK_ATTEMPT >> {attempts}; echo $$ > {dir}/pid-$OPSDECK_ATTEMPT; {body}",
        attempts = engine.path("attempts").display(),
        dir = engine.work_dir().display(),
    );
    format!(
        "name = \"leased\"\n[[step]]\nname = \"s\"\nqueue = \"work\"\nmax_attempts = 3\nrun = {}\n",
        sh(&script)
    )
}

fn attempts(engine: &Engine) -> Vec<String> {
    std::fs::read_to_string(engine.path("attempts"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_killed_workers_lease_expires_after_the_ttl_another_worker_finishes_the_step_and_a_stale_result_is_refused()
 {
    let engine = Engine::start_default().await;
    let mut w1 = Worker::start(&engine, "w1", &["work"], 1).await;
    let release = engine.path("release");
    // Attempt 1 hangs (its worker dies under it); later ones wait for the test.
    let body = format!(
        "if [ \"$OPSDECK_ATTEMPT\" = 1 ]; then sleep 60; else while [ ! -f {} ]; do sleep 0.05; done; fi",
        release.display()
    );
    let run = engine.submit(&attempt_spec(&engine, &body)).await;
    engine
        .wait_step_state(&run.id, 0, StepState::Running, DEADLINE)
        .await;
    let first = live_lease(&engine, &run.id, 0).await;
    assert_eq!(first.worker_id, "w1");
    assert_eq!(first.attempt, 1);

    w1.kill9();
    let _w2 = Worker::start(&engine, "w2", &["work"], 1).await;

    // After the TTL the lease expires and the step goes back to its queue,
    // whence w2 takes it.
    let expired = engine
        .wait_event(
            &run.id,
            |e| e.kind == "lease.expired" && e.lease_id == first.id,
            DEADLINE,
        )
        .await;
    assert!(!expired.actor.is_empty());
    let second = live_lease(&engine, &run.id, 0).await;
    assert_eq!(
        (second.worker_id.as_str(), second.attempt),
        ("w2", 2),
        "{second:#?}"
    );
    assert!(
        second.fencing_token > first.fencing_token,
        "a new attempt gets a higher fencing token"
    );
    let ended = engine
        .leases()
        .await
        .into_iter()
        .find(|l| l.id == first.id)
        .expect("the first lease is still listed");
    assert_eq!(ended.state, LeaseState::Expired as i32);
    // Its heartbeats stopped, so the engine has marked it offline too.
    engine
        .wait_worker(
            "w1",
            |w| w.state == WorkerState::Offline as i32 && !w.connected,
            DEADLINE,
        )
        .await;
    engine
        .wait_step_state(&run.id, 0, StepState::Running, DEADLINE)
        .await;
    wait_for_file(&engine.work_dir().join("pid-2"), DEADLINE).await;

    // w1 "comes back" and reports its attempt with the old lease and token.
    let (up, rx) = tokio::sync::mpsc::channel(8);
    let hello = Hello {
        worker_id: "w1".into(),
        queues: vec!["fenced-off".into()],
        slots: 1,
        generation: 1,
        version: "e2e".into(),
        ..Default::default()
    };
    up.send(AgentMessage {
        kind: Some(agent_message::Kind::Hello(hello)),
    })
    .await
    .unwrap();
    let mut down = engine
        .api()
        .await
        .agent
        .session(ReceiverStream::new(rx))
        .await
        .expect("open a session")
        .into_inner();
    let welcome = down
        .message()
        .await
        .expect("the session stays open")
        .expect("a first message");
    assert!(
        matches!(welcome.kind, Some(engine_message::Kind::Welcome(_))),
        "{welcome:?}"
    );
    let stale = StepResult {
        lease_id: first.id.clone(),
        fencing_token: first.fencing_token,
        outcome: Outcome::Failed as i32,
        exit_code: 1,
        has_exit_code: true,
        message: "stale attempt".into(),
        finished_at_ms: 0,
        ..Default::default()
    };
    up.send(AgentMessage {
        kind: Some(agent_message::Kind::Result(stale)),
    })
    .await
    .unwrap();
    let ack = loop {
        let msg = tokio::time::timeout(DEADLINE, down.message())
            .await
            .expect("an answer to the stale result")
            .expect("the session stays open")
            .expect("a message");
        if let Some(engine_message::Kind::Ack(ack)) = msg.kind
            && ack.lease_id == first.id
        {
            break ack;
        }
    };
    assert!(
        !ack.accepted,
        "a result with a stale fencing token was accepted: {ack:?}"
    );
    assert!(!ack.message.is_empty(), "a refusal says why");
    let refused = engine
        .wait_event(
            "",
            |e| e.kind == "result.refused" && e.message.contains(&first.id),
            DEADLINE,
        )
        .await;
    assert_eq!(refused.worker_id, "w1");

    // The refused result changed nothing: attempt 2 is still running, and
    // it finishes the run.
    let still = engine.get_run(&run.id).await;
    assert_eq!(still.state, RunState::Running as i32, "{still:#?}");
    assert_eq!(still.steps[0].state, StepState::Running as i32);
    std::fs::write(&release, "go").unwrap();
    let done = engine
        .wait_run_state(&run.id, RunState::Succeeded, DEADLINE)
        .await;
    assert_eq!(done.steps[0].attempt, 2);
    assert_eq!(done.steps[0].worker_id, "w2");
    assert_eq!(attempts(&engine), ["1", "2"]);
    drop(up);
}

#[tokio::test]
async fn force_release_requeues_the_step_and_its_event_names_the_operator_and_reason() {
    let engine = Engine::start_default().await;
    let _w1 = Worker::start(&engine, "w1", &["work"], 1).await;
    let release = engine.path("release");
    let body = format!("while [ ! -f {} ]; do sleep 0.05; done", release.display());
    let run = engine.submit(&attempt_spec(&engine, &body)).await;
    engine
        .wait_step_state(&run.id, 0, StepState::Running, DEADLINE)
        .await;
    let first = live_lease(&engine, &run.id, 0).await;
    let pgid: i32 = wait_for_file(&engine.work_dir().join("pid-1"), DEADLINE)
        .await
        .trim()
        .parse()
        .unwrap();

    let released = engine
        .ci_api()
        .await
        .leases
        .force_release(ForceReleaseRequest {
            id: first.id.clone(),
            fail: false,
            reason: "worker wedged".into(),
        })
        .await
        .expect("force-release an active lease")
        .into_inner();
    assert_eq!(released.id, first.id);
    assert_eq!(released.state, LeaseState::ForceReleased as i32);

    let event = engine
        .wait_event(&run.id, |e| e.kind == "lease.force_released", DEADLINE)
        .await;
    assert_eq!(event.actor, TOKEN_IDENTITY);
    assert_eq!(event.reason, "worker wedged");
    assert_eq!(event.lease_id, first.id);

    // The old attempt's processes are stopped, and the step runs again.
    wait_for(
        "the released attempt's processes to stop",
        DEADLINE,
        || async { (!group_alive(pgid)).then_some(()) },
    )
    .await;
    let second = live_lease(&engine, &run.id, 0).await;
    assert_eq!(second.attempt, 2);
    std::fs::write(&release, "go").unwrap();
    let done = engine
        .wait_run_state(&run.id, RunState::Succeeded, DEADLINE)
        .await;
    assert_eq!(done.steps[0].attempt, 2);
    let events = engine.events(&run.id).await;
    let shown = describe_events(&events);
    let k = kinds(&events);
    let at = k.iter().position(|k| *k == "lease.force_released").unwrap();
    assert!(
        k[at..].contains(&"step.queued"),
        "the step was not requeued after the force-release:\n{shown}"
    );
    assert!(!k.contains(&"run.failed"), "{shown}");
}

#[tokio::test]
async fn force_release_with_fail_fails_the_step_and_the_run_and_its_event_names_the_operator_and_reason()
 {
    let engine = Engine::start_default().await;
    let _w1 = Worker::start(&engine, "w1", &["work"], 1).await;
    let body = format!(
        "while [ ! -f {} ]; do sleep 0.05; done",
        engine.path("never").display()
    );
    let run = engine.submit(&attempt_spec(&engine, &body)).await;
    engine
        .wait_step_state(&run.id, 0, StepState::Running, DEADLINE)
        .await;
    let lease = live_lease(&engine, &run.id, 0).await;
    let pgid: i32 = wait_for_file(&engine.work_dir().join("pid-1"), DEADLINE)
        .await
        .trim()
        .parse()
        .unwrap();

    let released = engine
        .ci_api()
        .await
        .leases
        .force_release(ForceReleaseRequest {
            id: lease.id.clone(),
            fail: true,
            reason: "bad host".into(),
        })
        .await
        .expect("force-release an active lease")
        .into_inner();
    assert_eq!(released.state, LeaseState::ForceReleased as i32);

    let done = engine
        .wait_run_state(&run.id, RunState::Failed, DEADLINE)
        .await;
    assert_eq!(done.steps[0].state, StepState::Failed as i32, "{done:#?}");
    let events = engine.events(&run.id).await;
    let shown = describe_events(&events);
    let event = events
        .iter()
        .find(|e| e.kind == "lease.force_released")
        .unwrap_or_else(|| panic!("{shown}"));
    assert_eq!(
        (event.actor.as_str(), event.reason.as_str()),
        (TOKEN_IDENTITY, "bad host"),
        "{shown}"
    );
    let k = kinds(&events);
    let at = k.iter().position(|k| *k == "lease.force_released").unwrap();
    assert!(
        !k[at..].contains(&"step.queued") && !k[at..].contains(&"lease.granted"),
        "a failed step is not requeued:\n{shown}"
    );
    // (The stopped attempt's own result may still come in; it is refused.)
    assert!(k[at..].contains(&"run.failed"), "{shown}");
    wait_for(
        "the released attempt's processes to stop",
        DEADLINE,
        || async { (!group_alive(pgid)).then_some(()) },
    )
    .await;
    assert_eq!(attempts(&engine), ["1"]);
}

#[tokio::test]
async fn a_worker_that_comes_back_with_the_same_id_without_its_lease_gets_the_step_requeued_at_once_not_after_the_ttl()
 {
    // A TTL far longer than the deadline below: only the re-registration can
    // return the lease in time.
    let opts = EngineOpts {
        lease_ttl: "120s".into(),
        worker_timeout: "60s".into(),
        ..EngineOpts::default()
    };
    let engine = Engine::start(opts).await;
    let mut w1 = Worker::start(&engine, "w1", &["work"], 1).await;
    let body = "if [ \"$OPSDECK_ATTEMPT\" = 1 ]; then sleep 60; fi";
    let run = engine.submit(&attempt_spec(&engine, body)).await;
    engine
        .wait_step_state(&run.id, 0, StepState::Running, DEADLINE)
        .await;
    let first = live_lease(&engine, &run.id, 0).await;

    w1.kill9();
    let _again = Worker::start(&engine, "w1", &["work"], 1).await;

    let done = engine
        .wait_run_state(&run.id, RunState::Succeeded, DEADLINE)
        .await;
    assert_eq!(done.steps[0].attempt, 2);
    let ended = engine
        .leases()
        .await
        .into_iter()
        .find(|l| l.id == first.id)
        .expect("the first lease is still listed");
    assert_eq!(ended.state, LeaseState::Expired as i32);
    assert_eq!(attempts(&engine), ["1", "2"]);
}
