//! Engine crash: kill -9 the engine while 200 runs are in flight across 4
//! workers, some of them just cancelled and some just approved, then start
//! it again. Every acknowledged submit, decision, cancel and result is still
//! there (the event log before the crash is a prefix of the one after), every
//! run reaches a final state, no step of a cancelled run starts after the
//! cancel was acknowledged, and no step is recorded as done twice.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use opsdeck_tests::pb::{
    CancelRunRequest, DecideRequest, ListApprovalsRequest, ListRunsRequest, RunState,
    SubmitRunRequest,
};
use opsdeck_tests::{Engine, EngineOpts, TOKEN_IDENTITY, Worker, pb, sh};

const RUNS: usize = 200;
const WORKERS: usize = 4;
const SLOTS: u32 = 4;
/// Gated runs approved before the crash, and runs cancelled just before it.
const APPROVE_BEFORE: usize = 25;
const CANCEL_BEFORE: usize = 20;

/// Every fourth run waits for an approval first; the others are two exec
/// steps. Each exec step records `run step attempt` when it starts.
fn spec(i: usize, markers: &std::path::Path) -> String {
    let body = sh(&format!(
        "echo $OPSDECK_RUN_ID $OPSDECK_STEP_INDEX $OPSDECK_ATTEMPT >> {}; sleep 0.3",
        markers.display()
    ));
    if i.is_multiple_of(4) {
        format!(
            "name = \"crash-{i}\"\n\
             [[step]]\nname = \"gate\"\napproval = {{ timeout = \"10m\" }}\n\
             [[step]]\nname = \"after\"\nqueue = \"work\"\nmax_attempts = 5\nrun = {body}\n"
        )
    } else {
        format!(
            "name = \"crash-{i}\"\n\
             [[step]]\nname = \"one\"\nqueue = \"work\"\nmax_attempts = 5\nrun = {body}\n\
             [[step]]\nname = \"two\"\nqueue = \"work\"\nmax_attempts = 5\nrun = {body}\n"
        )
    }
}

fn final_state(state: i32) -> bool {
    [RunState::Succeeded, RunState::Failed, RunState::Cancelled]
        .iter()
        .any(|s| *s as i32 == state)
}

#[tokio::test]
async fn after_a_kill_9_with_200_runs_in_flight_everything_acknowledged_is_kept_and_every_run_finishes()
 {
    // A TTL that outlasts the restart and the workers' reconnect backoff.
    let opts = EngineOpts {
        lease_ttl: "15s".into(),
        worker_timeout: "10s".into(),
        ..EngineOpts::default()
    };
    let mut engine = Engine::start(opts).await;
    let mut workers = Vec::new();
    for n in 1..=WORKERS {
        workers.push(Worker::start(&engine, &format!("w{n}"), &["work"], SLOTS).await);
    }
    let markers = engine.path("markers");

    // Submits, each acknowledged with its run.
    let mut api = engine.api().await;
    let mut submitted: Vec<String> = Vec::new();
    for i in 0..RUNS {
        let req = SubmitRunRequest {
            spec: spec(i, &markers),
            reason: "crash test".into(),
            ..Default::default()
        };
        let run = api.runs.submit_run(req).await.expect("submit").into_inner();
        submitted.push(run.run.expect("the run").id);
    }

    // Decisions, by another identity than the submitter (four eyes).
    let mut ci = engine.ci_api().await;
    let pending = api
        .approvals
        .list_approvals(ListApprovalsRequest { all: false })
        .await
        .expect("ListApprovals")
        .into_inner()
        .approvals;
    assert_eq!(
        pending.len(),
        RUNS / 4,
        "every gated run waits for its approval"
    );
    let mut approved: BTreeMap<String, String> = BTreeMap::new();
    for a in pending.iter().take(APPROVE_BEFORE) {
        ci.approvals
            .decide(DecideRequest {
                id: a.id.clone(),
                approve: true,
                reason: "crash test".into(),
            })
            .await
            .expect("approve");
        approved.insert(a.id.clone(), a.run_id.clone());
    }

    // Cancels of runs still in flight, right before the crash: the newest
    // first. However fast the workers were meanwhile (exec runs may all
    // have ended on a quick machine, none on a loaded one), the gated runs
    // left unapproved are still waiting, so there are always enough.
    let mut cancelled: BTreeSet<String> = BTreeSet::new();
    let mut refused = Vec::new();
    for id in submitted.iter().rev() {
        if cancelled.len() == CANCEL_BEFORE {
            break;
        }
        let req = CancelRunRequest {
            id: id.clone(),
            reason: "crash test".into(),
        };
        match api.runs.cancel_run(req).await {
            Ok(_) => {
                cancelled.insert(id.clone());
            }
            Err(status) => refused.push(format!("{id}: {status:?}")),
        }
    }
    assert_eq!(
        cancelled.len(),
        CANCEL_BEFORE,
        "enough runs were still in flight to cancel; refused: {refused:#?}"
    );

    let before = engine.all_events(0).await;
    let live_before = api
        .runs
        .list_runs(ListRunsRequest {
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("ListRuns")
        .into_inner()
        .runs
        .iter()
        .filter(|r| !final_state(r.state))
        .count();
    engine.kill9();
    drop(api);
    drop(ci);
    assert!(
        live_before > 20,
        "the crash must catch runs in flight, not {live_before}"
    );

    engine.restart().await;
    let mut api = engine.api().await;

    // Every event committed before the crash is still there, unchanged: the
    // acknowledged submits, decisions, cancels and results among them.
    let after_restart = engine.all_events(0).await;
    assert!(after_restart.len() >= before.len());
    for (b, a) in before.iter().zip(&after_restart) {
        assert_eq!(
            (b.seq, &b.kind, &b.run_id, &b.message, b.at_ms),
            (a.seq, &a.kind, &a.run_id, &a.message, a.at_ms),
            "event {} changed across the crash",
            b.seq
        );
    }
    for id in &submitted {
        api.runs
            .get_run(pb::GetRunRequest { id: id.clone() })
            .await
            .unwrap_or_else(|e| panic!("acknowledged run {id} is gone after the crash: {e:?}"));
    }
    let decided: BTreeMap<String, pb::Approval> = api
        .approvals
        .list_approvals(ListApprovalsRequest { all: true })
        .await
        .expect("ListApprovals")
        .into_inner()
        .approvals
        .into_iter()
        .map(|a| (a.id.clone(), a))
        .collect();
    for id in approved.keys() {
        let a = &decided[id];
        assert_eq!(a.state, pb::ApprovalState::Approved as i32, "{a:#?}");
        assert!(
            a.decisions
                .iter()
                .any(|d| d.actor == TOKEN_IDENTITY && d.approve),
            "{a:#?}"
        );
    }
    for id in &cancelled {
        let run = engine.get_run(id).await;
        assert_eq!(
            run.state,
            RunState::Cancelled as i32,
            "acknowledged cancel of {id} lost"
        );
    }

    // Decide what is still pending, then every run finishes.
    let mut ci = engine.ci_api().await;
    for a in decided
        .values()
        .filter(|a| a.state == pb::ApprovalState::Pending as i32)
    {
        ci.approvals
            .decide(DecideRequest {
                id: a.id.clone(),
                approve: true,
                reason: "after the crash".into(),
            })
            .await
            .expect("approve after the restart");
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let runs = loop {
        let runs = api
            .runs
            .list_runs(ListRunsRequest {
                limit: 1000,
                ..Default::default()
            })
            .await
            .expect("ListRuns")
            .into_inner()
            .runs;
        let open = runs.iter().filter(|r| !final_state(r.state)).count();
        if open == 0 {
            break runs;
        }
        assert!(
            Instant::now() < deadline,
            "{open} runs did not finish after the restart\n{}",
            engine.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(runs.len(), RUNS);
    let by_state = |s: RunState| runs.iter().filter(|r| r.state == s as i32).count();
    assert_eq!(by_state(RunState::Cancelled), CANCEL_BEFORE);
    assert_eq!(
        by_state(RunState::Succeeded),
        RUNS - CANCEL_BEFORE,
        "nothing failed"
    );

    // Counted from the whole log: each exec step done exactly once (once
    // for every succeeded run, at most once for a cancelled one), and
    // nothing of a cancelled run leased after its cancel's seq.
    let events = engine.all_events(0).await;
    assert!(
        events.windows(2).all(|w| w[1].seq == w[0].seq + 1),
        "the event log has a gap"
    );
    let mut succeeded: BTreeMap<(String, u32), usize> = BTreeMap::new();
    let mut cancel_seq: BTreeMap<String, u64> = BTreeMap::new();
    for e in &events {
        match e.kind.as_str() {
            "step.succeeded" => {
                *succeeded
                    .entry((e.run_id.clone(), e.step_index))
                    .or_default() += 1
            }
            "run.cancelled" => {
                cancel_seq.insert(e.run_id.clone(), e.seq);
            }
            _ => {}
        }
    }
    assert!(
        succeeded.values().all(|n| *n == 1),
        "a step was recorded as done twice"
    );
    let mut granted_before_cancel: BTreeSet<(String, u32, u32)> = BTreeSet::new();
    for e in &events {
        let Some(cut) = cancel_seq.get(&e.run_id) else {
            continue;
        };
        if matches!(e.kind.as_str(), "lease.granted" | "step.running") {
            assert!(
                e.seq < *cut,
                "run {} was cancelled at seq {cut} but {} at seq {}",
                e.run_id,
                e.kind,
                e.seq
            );
        }
        if e.kind == "lease.granted"
            && let Some(l) = &e.lease
        {
            granted_before_cancel.insert((e.run_id.clone(), l.step_index, l.attempt));
        }
    }
    let ran: Vec<(String, u32, u32)> = std::fs::read_to_string(&markers)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((
                f.next()?.to_owned(),
                f.next()?.parse().ok()?,
                f.next()?.parse().ok()?,
            ))
        })
        .collect();
    for (run, step, attempt) in &ran {
        if cancelled.contains(run) {
            assert!(
                granted_before_cancel.contains(&(run.clone(), *step, *attempt)),
                "step {step} attempt {attempt} of cancelled run {run} ran without a lease granted before the cancel"
            );
        }
    }
    let steps_of_succeeded_runs: usize = runs
        .iter()
        .filter(|r| r.state == RunState::Succeeded as i32)
        .map(|r| r.steps.len())
        .sum();
    let exec_steps_done: usize = runs
        .iter()
        .filter(|r| r.state == RunState::Succeeded as i32)
        .map(|r| {
            r.steps
                .iter()
                .filter(|s| s.kind == pb::StepKind::Exec as i32)
                .count()
        })
        .sum();
    let reruns = ran.iter().filter(|(_, _, attempt)| *attempt > 1).count();
    eprintln!(
        "crash: {RUNS} runs, {} in flight at the kill, {} events before it and {} after; \
         {} succeeded, {} cancelled; {exec_steps_done} exec steps done once each; \
         {} step processes started, {reruns} of them later attempts (leased just before the kill, \
         the assignment lost with the engine, so attempt 1 never ran)",
        live_before,
        before.len(),
        events.len(),
        by_state(RunState::Succeeded),
        by_state(RunState::Cancelled),
        ran.len()
    );
    assert_eq!(
        succeeded
            .iter()
            .filter(|((run, _), _)| !cancelled.contains(run))
            .count(),
        steps_of_succeeded_runs,
        "every step of every succeeded run succeeded once"
    );
    assert!(ran.len() >= exec_steps_done);
}
