//! Runs on real workers: retries with backoff until dead, an operator's
//! retry, step timeouts, secret env, idempotent submits, queue pause and
//! resume, and priority order.

use opsdeck_tests::pb::{
    GetOutputRequest, ListRunsRequest, QueueActionRequest, RetryRunRequest, RunState, StepState,
    SubmitRunRequest, WatchRequest, watch_message::Kind,
};
use opsdeck_tests::{DEADLINE, Engine, Worker, describe_events, kinds, sh, wait_for};

fn lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_failing_step_is_retried_with_backoff_until_dead_and_an_operator_retry_gives_it_new_attempts()
 {
    let engine = Engine::start_default().await;
    let _w1 = Worker::start(&engine, "w1", &["work"], 1).await;
    let attempts = engine.path("attempts");
    // Fails on its first three runs, succeeds from the fourth on.
    let script = format!(
        "n=$(cat {a} 2>/dev/null | wc -l); echo x >> {a}; [ \"$n\" -ge 3 ]",
        a = attempts.display()
    );
    let spec = format!(
        "name = \"flaky\"\n[[step]]\nname = \"s\"\nqueue = \"work\"\nmax_attempts = 3\nbackoff = \"100ms\"\nrun = {}\n",
        sh(&script)
    );
    let run = engine.submit(&spec).await;
    let failed = engine
        .wait_run_state(&run.id, RunState::Failed, DEADLINE)
        .await;
    assert_eq!(failed.steps[0].state, StepState::Dead as i32, "{failed:#?}");
    assert_eq!(failed.steps[0].attempt, 3);
    assert_eq!(failed.steps[0].exit_code, 1);
    assert_eq!(lines(&attempts), 3);
    let events = engine.events(&run.id).await;
    let shown = describe_events(&events);
    let k = kinds(&events);
    assert_eq!(
        k.iter().filter(|k| **k == "step.retry_scheduled").count(),
        2,
        "{shown}"
    );
    assert_eq!(
        k.iter().filter(|k| **k == "lease.granted").count(),
        3,
        "{shown}"
    );
    assert!(k.contains(&"step.dead"), "{shown}");

    let retried = engine
        .api()
        .await
        .runs
        .retry_run(RetryRunRequest {
            id: run.id.clone(),
            reason: "fixed the flake".into(),
            ..Default::default()
        })
        .await
        .expect("retry a failed run")
        .into_inner();
    assert_ne!(retried.state, RunState::Failed as i32);
    let done = engine
        .wait_run_state(&run.id, RunState::Succeeded, DEADLINE)
        .await;
    assert_eq!(done.steps[0].attempt, 4);
    assert_eq!(lines(&attempts), 4);
}

#[tokio::test]
async fn a_step_over_its_timeout_is_killed_and_fails() {
    let engine = Engine::start_default().await;
    let _w1 = Worker::start(&engine, "w1", &["work"], 1).await;
    let pid_file = engine.path("pid");
    let script = format!("echo $$ > {}; sleep 60", pid_file.display());
    let spec = format!(
        "name = \"slow\"\n[[step]]\nname = \"s\"\nqueue = \"work\"\ntimeout = \"1s\"\nrun = {}\n",
        sh(&script)
    );
    let run = engine.submit(&spec).await;
    let failed = engine
        .wait_run_state(&run.id, RunState::Failed, DEADLINE)
        .await;
    let step = &failed.steps[0];
    assert!(
        [StepState::Dead as i32, StepState::Failed as i32].contains(&step.state),
        "{step:#?}"
    );
    assert!(
        step.message.to_lowercase().contains("time"),
        "the step says it timed out: {step:#?}"
    );
    let pgid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_for(
        "the timed-out step's processes to stop",
        DEADLINE,
        || async { (!opsdeck_tests::group_alive(pgid)).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn a_secret_env_value_reaches_the_step_but_never_an_answer_an_event_the_output_or_a_log() {
    let secret = "s3cr3t-e2e-value-7f1c";
    let engine = Engine::start(opsdeck_tests::EngineOpts {
        config: "[secrets]\napi_token = { env = \"OPSDECK_SECRET_API_TOKEN\" }\n".into(),
        env: vec![("OPSDECK_SECRET_API_TOKEN".into(), secret.into())],
        ..Default::default()
    })
    .await;
    let _w1 = Worker::start(&engine, "w1", &["work"], 1).await;
    let seen = engine.path("seen");
    let script = format!(
        "printf %s \"$API_TOKEN\" > {}; echo \"plain=$PLAIN\"",
        seen.display()
    );
    let spec = format!(
        "name = \"secretive\"\n[[step]]\nname = \"s\"\nqueue = \"work\"\nrun = {}\n\
         env = {{ PLAIN = \"visible\", API_TOKEN = {{ secret = \"api_token\" }} }}\n",
        sh(&script)
    );
    let run = engine.submit(&spec).await;
    let done = engine
        .wait_run_state(&run.id, RunState::Succeeded, DEADLINE)
        .await;
    assert_eq!(
        std::fs::read_to_string(&seen).unwrap(),
        secret,
        "the step got the secret"
    );

    let env = &done.steps[0].env;
    let token = env
        .iter()
        .find(|e| e.name == "API_TOKEN")
        .expect("the secret entry is listed by name");
    assert!(token.secret && token.value.is_empty(), "{env:#?}");
    assert!(
        env.iter()
            .any(|e| e.name == "PLAIN" && e.value == "visible")
    );

    let mut api = engine.api().await;
    let mut answers = format!("{:?}{:?}", run, done);
    answers.push_str(&format!(
        "{:?}",
        api.runs
            .list_runs(ListRunsRequest::default())
            .await
            .unwrap()
            .into_inner()
    ));
    answers.push_str(&format!("{:?}", engine.all_events(0).await));
    let output = api
        .runs
        .get_output(GetOutputRequest {
            run_id: run.id.clone(),
            step_index: None,
            tail_bytes: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let text: String = output
        .chunks
        .iter()
        .map(|c| String::from_utf8_lossy(&c.data).into_owned())
        .collect();
    assert!(
        text.contains("plain=visible"),
        "the output is kept: {text:?}"
    );
    answers.push_str(&text);
    let mut watch = api
        .console
        .watch(WatchRequest {
            resume_after_seq: 0,
        })
        .await
        .unwrap()
        .into_inner();
    loop {
        let msg = tokio::time::timeout(DEADLINE, watch.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        answers.push_str(&format!("{msg:?}"));
        if matches!(msg.kind, Some(Kind::SnapshotEnd(_))) {
            break;
        }
    }
    assert!(
        !answers.contains(secret),
        "the secret leaked into an API answer"
    );
    assert!(
        !engine.logs().contains(secret),
        "the secret leaked into a log"
    );
}

#[tokio::test]
async fn submitting_twice_with_one_idempotency_key_returns_the_first_run() {
    let engine = Engine::start_default().await;
    let mut runs = engine.api().await.runs;
    let request = SubmitRunRequest {
        spec: "name = \"once\"\n[[step]]\nname = \"gate\"\napproval = { timeout = \"5m\" }\n"
            .into(),
        idempotency_key: "deploy-2024-42".into(),
        reason: "e2e".into(),
        ..Default::default()
    };
    let first = runs.submit_run(request.clone()).await.unwrap().into_inner();
    let second = runs.submit_run(request).await.unwrap().into_inner();
    assert!(first.created && !second.created);
    assert_eq!(first.run.unwrap().id, second.run.unwrap().id);
    let list = runs
        .list_runs(ListRunsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.runs.len(), 1);
}

#[tokio::test]
async fn a_paused_queue_hands_out_nothing_until_resumed_and_then_the_highest_priority_step_goes_first()
 {
    let engine = Engine::start_default().await;
    let _w1 = Worker::start(&engine, "w1", &["work"], 1).await;
    let mut queues = engine.api().await.queues;
    let paused = queues
        .pause_queue(QueueActionRequest {
            name: "work".into(),
            reason: "incident 7".into(),
            ..Default::default()
        })
        .await
        .expect("pause")
        .into_inner();
    assert!(paused.paused);
    let event = engine
        .wait_event("", |e| e.kind == "queue.paused", DEADLINE)
        .await;
    assert_eq!(event.reason, "incident 7");

    let order = engine.path("order");
    let spec = |name: &str, priority: i32| {
        format!(
            "name = \"{name}\"\n[[step]]\nname = \"s\"\nqueue = \"work\"\npriority = {priority}\nrun = {}\n",
            sh(&format!("echo {name} >> {}", order.display()))
        )
    };
    let low = engine.submit(&spec("low", 0)).await;
    let high = engine.submit(&spec("high", 10)).await;
    // Several heartbeats later, nothing has been handed out.
    let mut beat = engine.worker("w1").await.unwrap().last_heartbeat_at_ms;
    for _ in 0..3 {
        beat = wait_for("a heartbeat", DEADLINE, || async {
            engine
                .worker("w1")
                .await
                .map(|w| w.last_heartbeat_at_ms)
                .filter(|t| *t > beat)
        })
        .await;
    }
    for id in [&low.id, &high.id] {
        assert_eq!(
            engine.get_run(id).await.steps[0].state,
            StepState::Queued as i32
        );
    }

    queues
        .resume_queue(QueueActionRequest {
            name: "work".into(),
            reason: "over".into(),
            ..Default::default()
        })
        .await
        .expect("resume");
    engine
        .wait_run_state(&low.id, RunState::Succeeded, DEADLINE)
        .await;
    engine
        .wait_run_state(&high.id, RunState::Succeeded, DEADLINE)
        .await;
    let ran: Vec<String> = std::fs::read_to_string(&order)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        ran,
        ["high", "low"],
        "the higher priority step, submitted later, goes first"
    );
}
