//! Approval gates: decided through the API by another identity, rejected,
//! timed out (each `on_timeout`), the four-eyes rule, N distinct
//! approvers, and steps that only a role or a group may decide.

use opsdeck_tests::pb::{ApprovalState, DecideRequest, ListApprovalsRequest, RunState, StepState};
use opsdeck_tests::{
    DEADLINE, Engine, EngineOpts, TOKEN_IDENTITY, Worker, assert_status, describe_events, kinds,
    new_token, pb, sh,
};
use tonic::Code;

/// A run whose only step is an approval with these settings.
fn gate_only(settings: &str) -> String {
    format!("name = \"gated\"\n[[step]]\nname = \"gate\"\napproval = {{ {settings} }}\n")
}

async fn approval_by_id(engine: &Engine, id: &str) -> pb::Approval {
    let all = engine
        .api()
        .await
        .approvals
        .list_approvals(ListApprovalsRequest { all: true })
        .await
        .unwrap();
    all.into_inner()
        .approvals
        .into_iter()
        .find(|a| a.id == id)
        .unwrap_or_else(|| panic!("approval {id} is not listed"))
}

#[tokio::test]
async fn exec_approval_exec_succeeds_when_another_identity_approves_and_every_event_is_in_order_with_its_actor()
 {
    let engine = Engine::start_default().await;
    let worker = Worker::start(&engine, "w1", &["build"], 1).await;
    let (built, shipped) = (engine.path("built"), engine.path("shipped"));
    let spec = format!(
        "name = \"deploy\"\n\
         [[step]]\nname = \"build\"\nqueue = \"build\"\nrun = {}\n\
         [[step]]\nname = \"gate\"\napproval = {{ timeout = \"5m\" }}\n\
         [[step]]\nname = \"ship\"\nqueue = \"build\"\nrun = {}\n",
        sh(&format!("echo built > {}", built.display())),
        sh(&format!("echo shipped > {}", shipped.display())),
    );
    let me = engine.os_identity().await;
    assert_ne!(me, TOKEN_IDENTITY);

    let run = engine.submit(&spec).await;
    assert_eq!(
        run.submitted_by, me,
        "a run submitted over the Unix socket belongs to the OS user"
    );
    let approval = engine.pending_approval(&run.id).await;
    assert_eq!(approval.step_index, 1);
    assert_eq!(approval.submitted_by, me);
    let waiting = engine
        .wait_run_state(&run.id, RunState::WaitingApproval, DEADLINE)
        .await;
    assert_eq!(waiting.steps[0].state, StepState::Succeeded as i32);
    assert_eq!(std::fs::read_to_string(&built).unwrap().trim(), "built");
    assert!(
        !shipped.exists(),
        "the step after the gate ran before the approval"
    );

    let decided = engine
        .ci_api()
        .await
        .approvals
        .decide(DecideRequest {
            id: approval.id.clone(),
            approve: true,
            reason: "change ticket 42".into(),
        })
        .await
        .expect("another identity may approve")
        .into_inner();
    assert_eq!(decided.state, ApprovalState::Approved as i32);
    assert_eq!(decided.decisions.len(), 1);
    assert_eq!(decided.decisions[0].actor, TOKEN_IDENTITY);
    assert_eq!(decided.decisions[0].comment, "change ticket 42");

    let done = engine
        .wait_run_state(&run.id, RunState::Succeeded, DEADLINE)
        .await;
    assert!(
        done.steps
            .iter()
            .all(|s| s.state == StepState::Succeeded as i32),
        "{done:#?}"
    );
    assert_eq!(std::fs::read_to_string(&shipped).unwrap().trim(), "shipped");

    let all_of_run = engine.events(&run.id).await;
    let shown = describe_events(&all_of_run);
    assert!(
        all_of_run.windows(2).all(|w| w[0].seq < w[1].seq),
        "events out of seq order:\n{shown}"
    );
    assert!(
        all_of_run
            .iter()
            .all(|e| e.run_id == run.id && !e.actor.is_empty()),
        "an event without its actor:\n{shown}"
    );
    // The kinds this test is about, in order, none missing and none twice
    // (the engine may record more, e.g. lease.released).
    let expected = [
        "run.submitted",
        "step.queued",
        "lease.granted",
        "step.running",
        "step.succeeded",
        "approval.requested",
        "approval.approved",
        "run.succeeded",
    ];
    let events: Vec<pb::Event> = all_of_run
        .iter()
        .filter(|e| expected.contains(&e.kind.as_str()))
        .cloned()
        .collect();
    assert_eq!(
        kinds(&events),
        [
            "run.submitted",
            "step.queued",
            "lease.granted",
            "step.running",
            "step.succeeded",
            "approval.requested",
            "approval.approved",
            "step.succeeded",
            "step.queued",
            "lease.granted",
            "step.running",
            "step.succeeded",
            "run.succeeded",
        ],
        "the run's timeline:\n{shown}"
    );
    let step_of =
        |kind: &str, nth: usize| events.iter().filter(|e| e.kind == kind).nth(nth).unwrap();
    assert_eq!(step_of("run.submitted", 0).actor, me, "{shown}");
    assert_eq!(
        step_of("approval.approved", 0).actor,
        TOKEN_IDENTITY,
        "{shown}"
    );
    assert_eq!(
        step_of("approval.approved", 0).reason,
        "change ticket 42",
        "{shown}"
    );
    assert_eq!(
        step_of("approval.approved", 0).approval_id,
        approval.id,
        "{shown}"
    );
    for nth in 0..2 {
        let running = step_of("step.running", nth);
        assert!(
            running.actor.contains(worker.id()),
            "step.running names its worker:\n{shown}"
        );
        assert_eq!(
            step_of("lease.granted", nth).worker_id,
            worker.id(),
            "{shown}"
        );
    }
    assert_eq!(
        (
            step_of("step.running", 0).step_index,
            step_of("step.running", 1).step_index
        ),
        (0, 2)
    );

    // The global log holds the same events, gap-free.
    let all = engine.all_events(0).await;
    assert!(
        all.windows(2).all(|w| w[1].seq == w[0].seq + 1),
        "the global event log has a gap:\n{}",
        describe_events(&all)
    );
    let ours: Vec<u64> = all
        .iter()
        .filter(|e| e.run_id == run.id)
        .map(|e| e.seq)
        .collect();
    assert_eq!(ours, all_of_run.iter().map(|e| e.seq).collect::<Vec<_>>());
}

#[tokio::test]
async fn rejecting_an_approval_fails_the_run_and_records_the_rejecter_and_reason() {
    let engine = Engine::start_default().await;
    let run = engine.submit(&gate_only("timeout = \"5m\"")).await;
    let approval = engine.pending_approval(&run.id).await;

    let decided = engine
        .ci_api()
        .await
        .approvals
        .decide(DecideRequest {
            id: approval.id.clone(),
            approve: false,
            reason: "not during the freeze".into(),
        })
        .await
        .expect("reject")
        .into_inner();
    assert_eq!(decided.state, ApprovalState::Rejected as i32);

    let done = engine
        .wait_run_state(&run.id, RunState::Failed, DEADLINE)
        .await;
    assert_eq!(done.steps[0].state, StepState::Failed as i32);
    let events = engine.events(&run.id).await;
    let rejected = events
        .iter()
        .find(|e| e.kind == "approval.rejected")
        .expect("an approval.rejected event");
    assert_eq!(rejected.actor, TOKEN_IDENTITY);
    assert_eq!(rejected.reason, "not during the freeze");
    assert_eq!(
        kinds(&events).last(),
        Some(&"run.failed"),
        "{}",
        describe_events(&events)
    );
}

#[tokio::test]
async fn approval_timeout_with_on_timeout_reject_rejects_the_approval_and_fails_the_run() {
    let engine = Engine::start_default().await;
    let run = engine
        .submit(&gate_only("timeout = \"1s\", on_timeout = \"reject\""))
        .await;
    let approval = engine.pending_approval(&run.id).await;
    assert!(approval.deadline_at_ms > 0);

    engine
        .wait_run_state(&run.id, RunState::Failed, DEADLINE)
        .await;
    assert_eq!(
        approval_by_id(&engine, &approval.id).await.state,
        ApprovalState::Rejected as i32
    );
    let events = engine.events(&run.id).await;
    let shown = describe_events(&events);
    assert!(kinds(&events).contains(&"approval.rejected"), "{shown}");
    assert!(!kinds(&events).contains(&"approval.expired"), "{shown}");
    assert_eq!(kinds(&events).last(), Some(&"run.failed"), "{shown}");
}

#[tokio::test]
async fn approval_timeout_with_on_timeout_fail_expires_the_approval_and_fails_the_run() {
    let engine = Engine::start_default().await;
    let run = engine
        .submit(&gate_only("timeout = \"1s\", on_timeout = \"fail\""))
        .await;
    let approval = engine.pending_approval(&run.id).await;

    engine
        .wait_run_state(&run.id, RunState::Failed, DEADLINE)
        .await;
    assert_eq!(
        approval_by_id(&engine, &approval.id).await.state,
        ApprovalState::Expired as i32
    );
    let events = engine.events(&run.id).await;
    let shown = describe_events(&events);
    assert!(kinds(&events).contains(&"approval.expired"), "{shown}");
    assert!(!kinds(&events).contains(&"approval.rejected"), "{shown}");
    assert_eq!(kinds(&events).last(), Some(&"run.failed"), "{shown}");

    // A timed-out approval is decided: nobody can decide it any more.
    let late = engine
        .ci_api()
        .await
        .approvals
        .decide(DecideRequest {
            id: approval.id.clone(),
            approve: true,
            reason: "too late".into(),
        })
        .await;
    assert_status(late, Code::FailedPrecondition, &[&approval.id]);
}

#[tokio::test]
async fn the_submitter_cannot_approve_their_own_run_by_default() {
    let engine = Engine::start_default().await;
    let run = engine.submit(&gate_only("timeout = \"5m\"")).await;
    let approval = engine.pending_approval(&run.id).await;
    assert!(!approval.allow_self_approval);

    let own = engine
        .api()
        .await
        .approvals
        .decide(DecideRequest {
            id: approval.id.clone(),
            approve: true,
            reason: "me, myself".into(),
        })
        .await;
    assert_status(own, Code::PermissionDenied, &["allow_self_approval"]);
    assert_eq!(
        approval_by_id(&engine, &approval.id).await.state,
        ApprovalState::Pending as i32
    );
    assert_eq!(
        engine.get_run(&run.id).await.state,
        RunState::WaitingApproval as i32
    );

    // Another identity still can.
    engine
        .ci_api()
        .await
        .approvals
        .decide(DecideRequest {
            id: approval.id.clone(),
            approve: true,
            reason: "second pair of eyes".into(),
        })
        .await
        .expect("another identity approves");
    engine
        .wait_run_state(&run.id, RunState::Succeeded, DEADLINE)
        .await;
}

#[tokio::test]
async fn the_submitter_may_approve_their_own_run_when_the_step_allows_self_approval() {
    let engine = Engine::start_default().await;
    let me = engine.os_identity().await;
    let run = engine
        .submit(&gate_only("timeout = \"5m\", allow_self_approval = true"))
        .await;
    let approval = engine.pending_approval(&run.id).await;
    assert!(approval.allow_self_approval);

    let decided = engine
        .api()
        .await
        .approvals
        .decide(DecideRequest {
            id: approval.id.clone(),
            approve: true,
            reason: "allowed".into(),
        })
        .await
        .expect("self-approval is allowed on this step")
        .into_inner();
    assert_eq!(decided.state, ApprovalState::Approved as i32);
    assert_eq!(decided.decisions[0].actor, me);
    engine
        .wait_run_state(&run.id, RunState::Succeeded, DEADLINE)
        .await;
}

/// An engine with a submitter `sam` (operator and approver), approvers
/// `ann` and `ben`, and `dora`, an approver in group `dba`.
struct Team {
    engine: Engine,
    sam: String,
    ann: String,
    ben: String,
    dora: String,
}

async fn team() -> Team {
    let (sam, s) = new_token("sam", &["operator", "approver"], &[]);
    let (ann, a) = new_token("ann", &["approver"], &[]);
    let (ben, b) = new_token("ben", &["approver"], &["web"]);
    let (dora, d) = new_token("dora", &["approver"], &["dba"]);
    let engine = Engine::start(EngineOpts {
        config: [s, a, b, d].concat(),
        ..EngineOpts::default()
    })
    .await;
    Team {
        engine,
        sam,
        ann,
        ben,
        dora,
    }
}

impl Team {
    async fn submit_as_sam(&self, spec: &str) -> pb::Run {
        let run = self
            .engine
            .tcp_api(Some(&self.sam))
            .await
            .runs
            .submit_run(pb::SubmitRunRequest {
                spec: spec.into(),
                reason: "release".into(),
                ..Default::default()
            })
            .await
            .expect("sam submits")
            .into_inner()
            .run
            .expect("the run");
        assert_eq!(run.submitted_by, "sam");
        run
    }

    async fn decide(
        &self,
        token: &str,
        id: &str,
        approve: bool,
    ) -> Result<pb::Approval, tonic::Status> {
        self.engine
            .tcp_api(Some(token))
            .await
            .approvals
            .decide(DecideRequest {
                id: id.into(),
                approve,
                reason: "looked at it".into(),
            })
            .await
            .map(|r| r.into_inner())
    }
}

#[tokio::test]
async fn two_required_approvals_need_two_distinct_approvers_and_not_the_submitter() {
    let t = team().await;
    let run = t
        .submit_as_sam(&gate_only("timeout = \"5m\", approvals = 2"))
        .await;
    let approval = t.engine.pending_approval(&run.id).await;
    assert_eq!(approval.required, 2);

    // Four eyes: sam holds the approver role but submitted the run.
    assert_status(
        t.decide(&t.sam, &approval.id, true).await,
        Code::PermissionDenied,
        &["four eyes", "sam"],
    );
    let first = t
        .decide(&t.ann, &approval.id, true)
        .await
        .expect("ann approves");
    assert_eq!(first.state, ApprovalState::Pending as i32);
    assert_eq!(first.decisions.len(), 1);
    // The same approver twice does not count twice.
    assert_status(
        t.decide(&t.ann, &approval.id, true).await,
        Code::FailedPrecondition,
        &["ann has already approved", "2 distinct approvers"],
    );
    assert_eq!(
        approval_by_id(&t.engine, &approval.id).await.state,
        ApprovalState::Pending as i32
    );
    assert_eq!(
        t.engine.get_run(&run.id).await.state,
        RunState::WaitingApproval as i32
    );
    let second = t
        .decide(&t.ben, &approval.id, true)
        .await
        .expect("ben approves");
    assert_eq!(second.state, ApprovalState::Approved as i32);
    let actors: Vec<&str> = second.decisions.iter().map(|d| d.actor.as_str()).collect();
    assert_eq!(actors, ["ann", "ben"]);
    t.engine
        .wait_run_state(&run.id, RunState::Succeeded, DEADLINE)
        .await;
    // A decided approval cannot be decided again, by anyone.
    assert_status(
        t.decide(&t.dora, &approval.id, false).await,
        Code::FailedPrecondition,
        &["already approved"],
    );
}

#[tokio::test]
async fn one_rejection_rejects_an_approval_that_already_has_other_approvals() {
    let t = team().await;
    let run = t
        .submit_as_sam(&gate_only("timeout = \"5m\", approvals = 3"))
        .await;
    let approval = t.engine.pending_approval(&run.id).await;
    t.decide(&t.ann, &approval.id, true)
        .await
        .expect("ann approves");
    let rejected = t
        .decide(&t.ben, &approval.id, false)
        .await
        .expect("ben rejects");
    assert_eq!(rejected.state, ApprovalState::Rejected as i32);
    let failed = t
        .engine
        .wait_run_state(&run.id, RunState::Failed, DEADLINE)
        .await;
    assert!(
        failed.message.contains("rejected by ben"),
        "{}",
        failed.message
    );
}

#[tokio::test]
async fn a_step_that_names_a_role_is_decided_only_by_callers_holding_it() {
    let t = team().await;
    let run = t
        .submit_as_sam(&gate_only("timeout = \"5m\", role = \"admin\""))
        .await;
    let approval = t.engine.pending_approval(&run.id).await;
    assert_eq!(approval.role, "admin", "the console is told who may decide");
    assert_status(
        t.decide(&t.ann, &approval.id, true).await,
        Code::PermissionDenied,
        &["only by the admin role", "approval.role", "ann"],
    );
    // The ci token is an admin.
    let decided = t
        .decide(t.engine.token(), &approval.id, true)
        .await
        .expect("an admin approves");
    assert_eq!(decided.state, ApprovalState::Approved as i32);
    t.engine
        .wait_run_state(&run.id, RunState::Succeeded, DEADLINE)
        .await;
}

#[tokio::test]
async fn a_step_that_names_a_group_is_decided_only_by_its_members_by_token_or_unix_group() {
    let t = team().await;
    let run = t
        .submit_as_sam(&gate_only("timeout = \"5m\", group = \"dba\""))
        .await;
    let approval = t.engine.pending_approval(&run.id).await;
    assert_eq!(approval.group, "dba");
    // Not in it: an approver in another group, and an admin in none.
    for token in [t.ben.as_str(), t.engine.token()] {
        assert_status(
            t.decide(token, &approval.id, true).await,
            Code::PermissionDenied,
            &["members of group \"dba\"", "approval.group"],
        );
    }
    let decided = t
        .decide(&t.dora, &approval.id, true)
        .await
        .expect("a member of dba approves");
    assert_eq!(decided.state, ApprovalState::Approved as i32);
    t.engine
        .wait_run_state(&run.id, RunState::Succeeded, DEADLINE)
        .await;

    // Over the socket, the caller's Unix groups count.
    let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .unwrap()
        .expect("the test's user is in the user database");
    let group = nix::unistd::Group::from_gid(user.gid)
        .unwrap()
        .expect("the user's primary group is in the group database")
        .name;
    let run = t
        .submit_as_sam(&gate_only(&format!("timeout = \"5m\", group = {group:?}")))
        .await;
    let approval = t.engine.pending_approval(&run.id).await;
    assert_status(
        t.decide(&t.dora, &approval.id, true).await,
        Code::PermissionDenied,
        &[&group],
    );
    t.engine
        .api()
        .await
        .approvals
        .decide(DecideRequest {
            id: approval.id.clone(),
            approve: true,
            reason: "in the group".into(),
        })
        .await
        .expect("a socket user in the group approves");
    t.engine
        .wait_run_state(&run.id, RunState::Succeeded, DEADLINE)
        .await;
}
