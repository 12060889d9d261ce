//! Bulk cancel and retry: one call acts on every run a filter (or an id
//! list) matches, in one commit with one reason; a run it cannot act on is
//! refused on its own, not the call.

use opsdeck_tests::pb::{
    self, BulkRunsRequest, ListRunsRequest, RunState, SubmitRunRequest, SubmitRunsRequest,
};
use opsdeck_tests::{
    DEADLINE, Engine, EngineOpts, Tmux, Worker, opsdeck, sh, snapshot_runs, wait_for,
};
use tonic::Code;

fn spec(name: &str, queue: &str, run: &str) -> String {
    format!(
        "name = \"{name}\"\n[[step]]\nname = \"only\"\nqueue = \"{queue}\"\nrun = {}\n",
        sh(run)
    )
}

/// Submits these specs in one call; their ids, in order.
async fn submit_all(engine: &Engine, specs: Vec<String>) -> Vec<String> {
    let runs = specs
        .into_iter()
        .map(|spec| SubmitRunRequest {
            spec,
            reason: "e2e test".into(),
            ..Default::default()
        })
        .collect();
    engine
        .api()
        .await
        .runs
        .submit_runs(SubmitRunsRequest { runs })
        .await
        .expect("SubmitRuns")
        .into_inner()
        .runs
        .into_iter()
        .map(|r| r.id)
        .collect()
}

/// Every run named by `name` (a pattern as ListRuns takes it).
async fn runs_named(engine: &Engine, name: &str) -> Vec<pb::Run> {
    engine
        .api()
        .await
        .runs
        .list_runs(ListRunsRequest {
            name: name.into(),
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("ListRuns")
        .into_inner()
        .runs
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn a_bulk_cancel_by_name_cancels_500_queued_runs_in_one_commit_with_one_reason() {
    let engine = Engine::start_default().await;
    // A worker, but not for queue `work`: every run stays queued.
    let _worker = Worker::start(&engine, "w1", &["elsewhere"], 4).await;
    let mut specs: Vec<String> = (0..500)
        .map(|i| spec(&format!("deploy-{i:03}"), "work", "true"))
        .collect();
    specs.extend((0..10).map(|i| spec(&format!("build-{i}"), "work", "true")));
    submit_all(&engine, specs).await;
    let me = engine.os_identity().await;

    // Piped without --yes: the matches are shown, nothing is done.
    let asked = engine.cli(&["cancel", "--name", "deploy-*", "--reason", "bad release"]);
    assert_eq!(asked.status.code(), Some(2), "{asked:?}");
    let err = text(&asked.stderr);
    assert!(err.contains("500 runs to cancel; the first 10:"), "{err}");
    assert!(err.contains("deploy-499"), "newest first: {err}");
    assert!(err.contains("pass --yes"), "{err}");
    // A dry run lists them all and changes nothing either.
    let dry = engine.cli(&["cancel", "--name", "deploy-*", "--dry-run"]);
    assert!(dry.status.success(), "{dry:?}");
    let out = text(&dry.stdout);
    assert!(out.starts_with("500 runs would be cancelled\n"), "{out}");
    assert!(
        out.contains("deploy-000") && !out.contains("build-"),
        "{out}"
    );
    assert!(
        runs_named(&engine, "deploy-*")
            .await
            .iter()
            .all(|r| r.state == RunState::Queued as i32),
        "neither the question nor the dry run cancelled anything"
    );

    let head = engine.all_events(0).await.last().map_or(0, |e| e.seq);
    let done = engine.cli(&[
        "cancel",
        "--name",
        "deploy-*",
        "--yes",
        "--reason",
        "bad release",
    ]);
    assert!(done.status.success(), "{done:?}");
    assert_eq!(text(&done.stdout), "cancelled 500 runs\n");

    let deploys = runs_named(&engine, "deploy-*").await;
    assert_eq!(deploys.len(), 500);
    assert!(
        deploys
            .iter()
            .all(|r| r.state == RunState::Cancelled as i32),
        "every deploy run is cancelled"
    );
    assert!(
        runs_named(&engine, "build-*")
            .await
            .iter()
            .all(|r| r.state == RunState::Queued as i32),
        "runs of other names are untouched"
    );
    let cancelled: Vec<pb::Event> = engine
        .all_events(head)
        .await
        .into_iter()
        .filter(|e| e.kind == "run.cancelled")
        .collect();
    assert_eq!(cancelled.len(), 500);
    for e in &cancelled {
        assert_eq!(e.reason, "bad release", "{e:?}");
        assert_eq!(e.actor, me, "{e:?}");
    }
    let mut ids: Vec<&str> = cancelled.iter().map(|e| e.run_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 500, "one event per run");
    // One command applied them all at once: no other change came between.
    let (first, last) = (cancelled[0].seq, cancelled[499].seq);
    assert_eq!(last - first, 499, "the 500 events are contiguous");
}

#[tokio::test]
async fn a_bulk_retry_by_filter_runs_failed_runs_again_even_from_history() {
    // Finished runs leave memory soon: the failed ones are found on disk.
    let engine = Engine::start(EngineOpts {
        config: "[engine]\nfinished_runs_kept = 1\n".into(),
        ..Default::default()
    })
    .await;
    let _worker = Worker::start(&engine, "w1", &["work"], 4).await;
    let fixed = engine.path("fixed");
    let flaky = format!("test -f {}", fixed.display());
    let mut specs: Vec<String> = (0..3)
        .map(|i| spec(&format!("flaky-{i}"), "work", &flaky))
        .collect();
    specs.push(spec("flaky-fine", "work", "true"));
    let ids = submit_all(&engine, specs).await;
    for id in &ids[..3] {
        engine.wait_run_state(id, RunState::Failed, DEADLINE).await;
    }
    engine
        .wait_run_state(&ids[3], RunState::Succeeded, DEADLINE)
        .await;
    // At least two of the failed runs are no longer in the engine's memory.
    wait_for("finished runs to leave memory", DEADLINE, || async {
        let (_, held) = snapshot_runs(&mut engine.watch(0).await).await;
        (held.iter().filter(|r| ids[..3].contains(&r.id)).count() <= 1).then_some(())
    })
    .await;

    // Asking for succeeded runs: each is refused, and the exit says so.
    let wrong = engine.cli(&[
        "retry",
        "--name",
        "flaky-*",
        "--state",
        "succeeded",
        "--yes",
    ]);
    assert_eq!(wrong.status.code(), Some(1), "{wrong:?}");
    let out = text(&wrong.stdout);
    assert!(out.starts_with("retried 0 runs; 1 run refused\n"), "{out}");
    assert!(
        out.contains(&ids[3]) && out.contains("FAILED_PRECONDITION"),
        "{out}"
    );

    std::fs::write(&fixed, "").unwrap();
    let done = engine.cli(&["retry", "--name", "flaky-*", "--yes", "--reason", "fixed"]);
    assert!(done.status.success(), "{done:?}");
    assert_eq!(text(&done.stdout), "retried 3 runs\n");
    for id in &ids[..3] {
        engine
            .wait_run_state(id, RunState::Succeeded, DEADLINE)
            .await;
        let retried = engine.events(id).await;
        assert!(
            retried
                .iter()
                .any(|e| e.kind == "run.retried" && e.reason == "fixed"),
            "{retried:?}"
        );
    }

    // By ids: each one not failed, or unknown, is refused on its own.
    let unknown = "01JZZZZZZZZZZZZZZZZZZZZZZZ".to_owned();
    let answer = engine
        .api()
        .await
        .runs
        .retry_runs(BulkRunsRequest {
            ids: vec![ids[0].clone(), unknown.clone()],
            reason: "again".into(),
            ..Default::default()
        })
        .await
        .expect("RetryRuns")
        .into_inner();
    assert!(answer.done.is_empty(), "{answer:?}");
    assert_eq!(answer.matched, 2);
    let codes: Vec<(&str, &str)> = answer
        .refused
        .iter()
        .map(|r| (r.id.as_str(), r.code.as_str()))
        .collect();
    assert_eq!(
        codes,
        [
            (ids[0].as_str(), "FAILED_PRECONDITION"),
            (unknown.as_str(), "NOT_FOUND")
        ]
    );
    assert!(
        answer.refused[0].message.contains("succeeded"),
        "{answer:?}"
    );
}

#[tokio::test]
async fn bulk_calls_refuse_an_empty_filter_and_name_each_run_they_cannot_touch() {
    let engine = Engine::start_default().await;
    let ids = submit_all(
        &engine,
        vec![spec("keep", "work", "true"), spec("stop", "work", "true")],
    )
    .await;
    let mut runs = engine.api().await.runs;

    let empty = runs
        .cancel_runs(BulkRunsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert!(
        empty
            .message()
            .contains("an empty filter would match every run"),
        "{empty:?}"
    );
    let both = runs
        .cancel_runs(BulkRunsRequest {
            ids: vec![ids[0].clone()],
            name: "keep".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(both.code(), Code::InvalidArgument, "{both:?}");
    let final_state = runs
        .cancel_runs(BulkRunsRequest {
            states: vec![RunState::Succeeded as i32],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(final_state.code(), Code::InvalidArgument);
    assert!(
        final_state.message().contains("succeeded"),
        "{final_state:?}"
    );

    // Ids: the known run is cancelled, the unknown one refused, in order.
    let unknown = "01JZZZZZZZZZZZZZZZZZZZZZZZ".to_owned();
    let answer = runs
        .cancel_runs(BulkRunsRequest {
            ids: vec![unknown.clone(), ids[1].clone()],
            reason: "not needed".into(),
            ..Default::default()
        })
        .await
        .expect("CancelRuns")
        .into_inner();
    assert_eq!(answer.matched, 2);
    assert_eq!(answer.done.len(), 1, "{answer:?}");
    assert_eq!(answer.done[0].id, ids[1]);
    assert_eq!(answer.done[0].state, RunState::Cancelled as i32);
    assert_eq!(answer.refused.len(), 1, "{answer:?}");
    assert_eq!(answer.refused[0].id, unknown);
    assert_eq!(answer.refused[0].code, "NOT_FOUND");
    // Again: now already final, refused; the other run was never touched.
    let again = runs
        .cancel_runs(BulkRunsRequest {
            ids: vec![ids[1].clone()],
            ..Default::default()
        })
        .await
        .expect("CancelRuns")
        .into_inner();
    assert_eq!(again.refused[0].code, "FAILED_PRECONDITION", "{again:?}");
    assert!(
        again.refused[0].message.contains("already cancelled"),
        "{again:?}"
    );
    assert_eq!(engine.get_run(&ids[0]).await.state, RunState::Queued as i32);

    // The CLI refuses a command with neither a run nor a filter.
    let none = engine.cli(&["cancel", "--yes"]);
    assert_eq!(none.status.code(), Some(2), "{none:?}");
}

#[tokio::test]
async fn on_a_terminal_a_bulk_cancel_shows_the_matches_and_acts_only_on_yes() {
    let engine = Engine::start_default().await;
    let ids = submit_all(
        &engine,
        (0..3)
            .map(|i| spec(&format!("nightly-{i}"), "work", "true"))
            .collect(),
    )
    .await;
    let addr = engine.unix_addr();
    let cancel = [
        "--engine",
        &addr,
        "cancel",
        "--name",
        "nightly-*",
        "--reason",
        "skip tonight",
    ];

    let declined = Tmux::start(&opsdeck(), &cancel, 120, 30);
    let screen = declined
        .wait("the question", DEADLINE, |s| {
            s.contains("cancel 3 runs? [y/N]")
        })
        .await;
    assert!(screen.contains("3 runs to cancel:"), "{screen}");
    assert!(
        ids.iter().all(|id| screen.contains(id.as_str())),
        "{screen}"
    );
    declined.keys(&["n", "Enter"]);
    let screen = declined
        .wait("the command to end", DEADLINE, |s| {
            s.contains("[console exited: 2]")
        })
        .await;
    assert!(screen.contains("nothing done"), "{screen}");
    for id in &ids {
        assert_eq!(engine.get_run(id).await.state, RunState::Queued as i32);
    }

    let accepted = Tmux::start(&opsdeck(), &cancel, 120, 30);
    accepted
        .wait("the question", DEADLINE, |s| {
            s.contains("cancel 3 runs? [y/N]")
        })
        .await;
    accepted.keys(&["y", "Enter"]);
    let screen = accepted
        .wait("the command to end", DEADLINE, |s| {
            s.contains("[console exited: 0]")
        })
        .await;
    assert!(screen.contains("cancelled 3 runs"), "{screen}");
    for id in &ids {
        let run = engine.get_run(id).await;
        assert_eq!(run.state, RunState::Cancelled as i32);
    }
}

#[tokio::test]
async fn one_spec_submitted_many_times_in_a_call_keeps_each_runs_own_parameters() {
    let engine = Engine::start_default().await;
    let spec = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/params.toml"
    ))
    .expect("examples/params.toml");
    // The same text each time; the parameters change, then repeat.
    let envs = ["staging", "staging", "prod", "prod", "staging"];
    let runs = envs
        .iter()
        .map(|env| SubmitRunRequest {
            spec: spec.clone(),
            params: [("env".to_owned(), (*env).to_owned())].into(),
            reason: "e2e test".into(),
            ..Default::default()
        })
        .collect();
    let api = engine.api().await;
    let submitted = api
        .runs
        .clone()
        .submit_runs(SubmitRunsRequest { runs })
        .await
        .expect("SubmitRuns")
        .into_inner()
        .runs;
    assert_eq!(submitted.len(), envs.len());
    for (run, env) in submitted.iter().zip(envs) {
        let got = engine.get_run(&run.id).await;
        assert_eq!(
            got.params.get("env").map(String::as_str),
            Some(env),
            "{got:?}"
        );
        assert_eq!(
            got.labels.get("env").map(String::as_str),
            Some(env),
            "the label made from the parameter: {got:?}"
        );
    }
    // A bad value in the middle refuses the call, naming that run.
    let runs = ["staging", "nowhere", "prod"]
        .iter()
        .map(|env| SubmitRunRequest {
            spec: spec.clone(),
            params: [("env".to_owned(), (*env).to_owned())].into(),
            ..Default::default()
        })
        .collect();
    let refused = api
        .runs
        .clone()
        .submit_runs(SubmitRunsRequest { runs })
        .await
        .expect_err("a value outside the enum");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().starts_with("run 2 of 3:"), "{refused:?}");
}
