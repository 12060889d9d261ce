//! The core's unit tests, and the helpers its other test files share.

use super::*;
use crate::domain::spec::parse;

pub(super) const T0: Millis = 1_000_000;

pub(super) fn state() -> State {
    State::load(CoreConfig::default(), Loaded::default(), T0)
}

pub(super) fn alice() -> Actor {
    Actor {
        name: "alice".into(),
        transport: "unix",
    }
}

pub(super) fn submit(s: &mut State, spec: &str) -> String {
    let mut tx = Tx::new(T0);
    let spec = parse(spec, &Limits::default()).unwrap();
    s.submit(&mut tx, spec, None, &alice(), "test").unwrap().0
}

/// Connects a worker and returns what the engine sends it.
pub(super) fn worker(
    s: &mut State,
    id: &str,
    queues: &[&str],
    slots: u32,
) -> mpsc::UnboundedReceiver<pb::EngineMessage> {
    worker_at(s, id, queues, slots, T0)
}

pub(super) fn worker_at(
    s: &mut State,
    id: &str,
    queues: &[&str],
    slots: u32,
    now: Millis,
) -> mpsc::UnboundedReceiver<pb::EngineMessage> {
    let (out, rx) = mpsc::unbounded_channel();
    let hello = pb::Hello {
        worker_id: id.into(),
        queues: queues.iter().map(|q| q.to_string()).collect(),
        slots,
        generation: 1,
        ..Default::default()
    };
    let mut tx = Tx::new(now);
    s.hello(&mut tx, 1, id, &AgentScope::unbounded(), hello, out)
        .unwrap();
    run_effects(tx);
    rx
}

pub(super) fn run_effects(tx: Tx) {
    for e in tx.effects {
        match e {
            Effect::Reply(f) => f(None),
            Effect::Send(to, m) => {
                let _ = to.send(*m);
            }
        }
    }
}

pub(super) fn assignments(
    rx: &mut mpsc::UnboundedReceiver<pb::EngineMessage>,
) -> Vec<pb::Assignment> {
    let mut out = vec![];
    while let Ok(m) = rx.try_recv() {
        match m.kind {
            Some(pb::engine_message::Kind::Assign(a)) => out.push(a),
            Some(pb::engine_message::Kind::Assignments(b)) => out.extend(b.assignments),
            _ => {}
        }
    }
    out
}

pub(super) fn dispatch(s: &mut State, now: Millis) {
    let mut tx = Tx::new(now);
    s.fire_timers(&mut tx);
    s.dispatch(&mut tx);
    run_effects(tx);
}

pub(super) fn result(
    s: &mut State,
    worker: &str,
    a: &pb::Assignment,
    outcome: pb::Outcome,
    now: Millis,
) -> Vec<pb::Event> {
    let mut tx = Tx::new(now);
    let r = pb::StepResult {
        lease_id: a.lease_id.clone(),
        fencing_token: a.fencing_token,
        outcome: outcome as i32,
        ..Default::default()
    };
    s.step_result(&mut tx, worker, r);
    let events = std::mem::take(&mut tx.events);
    run_effects(tx);
    events
}

const ONE_STEP: &str =
    "name = \"x\"\n[[step]]\nqueue = \"q\"\nrun = \"true\"\nmax_attempts = 2\nbackoff = \"1s\"\n";

#[test]
fn a_result_with_a_stale_fencing_token_is_refused() {
    let mut s = state();
    let mut w1 = worker(&mut s, "w1", &["q"], 1);
    let run = submit(&mut s, ONE_STEP);
    dispatch(&mut s, T0);
    let first = assignments(&mut w1).pop().unwrap();
    // The lease expires; the step is leased again with a higher token.
    dispatch(&mut s, T0 + 31_000);
    let mut w2 = worker_at(&mut s, "w2", &["q"], 1, T0 + 31_000);
    dispatch(&mut s, T0 + 31_001);
    let second = assignments(&mut w2).pop().unwrap();
    assert!(second.fencing_token > first.fencing_token);
    let events = result(&mut s, "w1", &first, pb::Outcome::Succeeded, T0 + 31_002);
    assert_eq!(
        events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["result.refused"]
    );
    let events = result(&mut s, "w2", &second, pb::Outcome::Succeeded, T0 + 31_003);
    assert!(events.iter().any(|e| e.kind == "run.succeeded"));
    assert_eq!(
        s.get_run(&run, T0).unwrap().state,
        pb::RunState::Succeeded as i32
    );
}

#[test]
fn a_failed_attempt_is_retried_after_its_backoff_then_dead() {
    let mut s = state();
    let mut w = worker(&mut s, "w", &["q"], 1);
    let run = submit(&mut s, ONE_STEP);
    dispatch(&mut s, T0);
    let a = assignments(&mut w).pop().unwrap();
    let events = result(&mut s, "w", &a, pb::Outcome::Failed, T0 + 10);
    assert!(events.iter().any(|e| e.kind == "step.retry_scheduled"));
    dispatch(&mut s, T0 + 500);
    assert!(
        assignments(&mut w).is_empty(),
        "no retry before the backoff"
    );
    dispatch(&mut s, T0 + 1_010);
    let b = assignments(&mut w).pop().unwrap();
    assert_eq!(b.attempt, 2);
    let events = result(&mut s, "w", &b, pb::Outcome::Failed, T0 + 1_020);
    assert!(events.iter().any(|e| e.kind == "step.dead"));
    assert_eq!(
        s.get_run(&run, T0).unwrap().state,
        pb::RunState::Failed as i32
    );
}

#[test]
fn steps_are_leased_by_priority_then_in_order() {
    let mut s = state();
    let low = submit(&mut s, ONE_STEP);
    let high = submit(
        &mut s,
        "name = \"h\"\n[[step]]\nqueue = \"q\"\nrun = \"true\"\npriority = 5\n",
    );
    let later = submit(&mut s, ONE_STEP);
    let mut w = worker(&mut s, "w", &["q"], 1);
    let mut order = vec![];
    for i in 0..3 {
        dispatch(&mut s, T0 + i);
        let a = assignments(&mut w).pop().unwrap();
        order.push(a.run_id.clone());
        result(&mut s, "w", &a, pb::Outcome::Succeeded, T0 + i);
    }
    assert_eq!(order, [high, low, later]);
}

#[test]
fn the_submitter_cannot_approve_unless_the_step_allows_it() {
    let mut s = state();
    submit(&mut s, "name = \"a\"\n[[step]]\napproval = {}\n");
    let id = s.list_approvals(false)[0].id.clone();
    let mut tx = Tx::new(T0);
    let approver = Grants::new([crate::domain::Role::Approver], []);
    let err = s
        .decide(&mut tx, &id, true, &alice(), &approver, "mine")
        .unwrap_err();
    assert!(matches!(err, EngineError::PermissionDenied(m) if m.contains("four eyes")));
    let bob = Actor {
        name: "bob".into(),
        transport: "tcp",
    };
    s.decide(&mut tx, &id, true, &bob, &approver, "ok").unwrap();
    let again = s
        .decide(&mut tx, &id, true, &bob, &approver, "ok")
        .unwrap_err();
    assert!(matches!(again, EngineError::FailedPrecondition(_)));
}

#[test]
fn a_paused_queue_hands_out_nothing_until_resumed() {
    let mut s = state();
    let mut w = worker(&mut s, "w", &["q"], 1);
    let mut tx = Tx::new(T0);
    s.set_queue_paused(&mut tx, "q", true, false, &alice(), "incident")
        .unwrap();
    submit(&mut s, ONE_STEP);
    dispatch(&mut s, T0);
    assert!(assignments(&mut w).is_empty());
    let mut tx = Tx::new(T0);
    s.set_queue_paused(&mut tx, "q", false, false, &alice(), "over")
        .unwrap();
    dispatch(&mut s, T0);
    assert_eq!(assignments(&mut w).len(), 1);
}

#[test]
fn a_reregistering_worker_keeps_held_leases_and_returns_the_others() {
    let mut s = state();
    let mut w = worker(&mut s, "w", &["q"], 2);
    submit(&mut s, ONE_STEP);
    submit(&mut s, ONE_STEP);
    dispatch(&mut s, T0);
    let leased = assignments(&mut w);
    assert_eq!(leased.len(), 2);
    let (out, _rx) = mpsc::unbounded_channel();
    let hello = pb::Hello {
        worker_id: "w".into(),
        queues: vec!["q".into()],
        slots: 2,
        generation: 1,
        held: vec![pb::HeldLease {
            lease_id: leased[0].lease_id.clone(),
            fencing_token: leased[0].fencing_token,
        }],
        ..Default::default()
    };
    let mut tx = Tx::new(T0 + 5);
    s.hello(&mut tx, 2, "w", &AgentScope::unbounded(), hello, out)
        .unwrap();
    let live: Vec<String> = s.list_leases(false).into_iter().map(|l| l.id).collect();
    assert_eq!(live, [leased[0].lease_id.clone()]);
    assert!(
        tx.events
            .iter()
            .any(|e| e.kind == "lease.expired" && e.lease_id == leased[1].lease_id)
    );
}

#[test]
fn another_identity_cannot_take_over_a_workers_id_connected_or_not() {
    let mut s = state();
    let mut w = worker(&mut s, "w", &["q"], 1);
    let hello = || pb::Hello {
        worker_id: "w".into(),
        queues: vec!["q".into()],
        slots: 8,
        generation: 1,
        ..Default::default()
    };
    let (out, _rx) = mpsc::unbounded_channel();
    let mut tx = Tx::new(T0 + 5);
    let refused = s.hello(
        &mut tx,
        2,
        "mallory",
        &AgentScope::unbounded(),
        hello(),
        out,
    );
    assert!(
        matches!(&refused, Err(EngineError::PermissionDenied(m)) if m.contains("belongs to w")),
        "{refused:?}"
    );
    // The worker keeps its session and its work.
    submit(&mut s, ONE_STEP);
    dispatch(&mut s, T0 + 10);
    assert_eq!(assignments(&mut w).len(), 1);

    // Gone, its id is still not another's to take.
    let mut tx = Tx::new(T0 + 20);
    s.session_closed(&mut tx, "w", 1);
    let (out, _rx) = mpsc::unbounded_channel();
    let refused = s.hello(
        &mut tx,
        3,
        "mallory",
        &AgentScope::unbounded(),
        hello(),
        out,
    );
    assert!(
        matches!(&refused, Err(EngineError::PermissionDenied(m)) if m.contains("workers forget w")),
        "{refused:?}"
    );
    // Its own identity comes back.
    let (out, _rx) = mpsc::unbounded_channel();
    s.hello(&mut tx, 4, "w", &AgentScope::unbounded(), hello(), out)
        .unwrap();
}

#[test]
fn a_credential_serves_only_its_ids_and_queues() {
    let mut s = state();
    let patterns = |p: &[&str]| {
        Some(
            crate::domain::scope::Patterns::new(p.iter().map(|s| (*s).to_owned()).collect())
                .unwrap(),
        )
    };
    let scope = AgentScope {
        workers: patterns(&["build-*"]),
        queues: patterns(&["build"]),
        unbounded: false,
    };
    let mut try_hello = |id: &str, queue: &str| {
        let (out, _rx) = mpsc::unbounded_channel();
        let hello = pb::Hello {
            worker_id: id.into(),
            queues: vec![queue.into()],
            slots: 1,
            generation: 1,
            ..Default::default()
        };
        let mut tx = Tx::new(T0);
        s.hello(&mut tx, 1, "ci", &scope, hello, out)
    };
    assert!(matches!(
        try_hello("build-1", "*"),
        Err(EngineError::PermissionDenied(_))
    ));
    assert!(matches!(
        try_hello("build-1", "deploy"),
        Err(EngineError::PermissionDenied(_))
    ));
    assert!(matches!(
        try_hello("deploy-1", "build"),
        Err(EngineError::PermissionDenied(_))
    ));
    try_hello("build-1", "build").unwrap();
}

#[test]
fn a_cancelled_steps_slot_stays_taken_until_its_worker_says_it_is_gone() {
    let mut s = state();
    let mut w = worker(&mut s, "w", &["q"], 1);
    let first = submit(&mut s, ONE_STEP);
    dispatch(&mut s, T0 + 1);
    let held = assignments(&mut w);
    assert_eq!(held.len(), 1);
    let mut tx = Tx::new(T0 + 2);
    s.cancel_run(&mut tx, &first, &alice(), "stop").unwrap();
    run_effects(tx);

    // The process may still be in its cancel grace: no new step yet.
    submit(&mut s, ONE_STEP);
    dispatch(&mut s, T0 + 3);
    assert!(
        assignments(&mut w).is_empty(),
        "a stopping step's slot was given away"
    );
    let still = [pb::HeldLease {
        lease_id: held[0].lease_id.clone(),
        fencing_token: held[0].fencing_token,
    }];
    s.heartbeat("w", &still, T0 + 4);
    dispatch(&mut s, T0 + 5);
    assert!(assignments(&mut w).is_empty());

    // Its result says the process is gone: the slot is free.
    let mut tx = Tx::new(T0 + 6);
    s.step_result(
        &mut tx,
        "w",
        pb::StepResult {
            lease_id: held[0].lease_id.clone(),
            fencing_token: held[0].fencing_token,
            ..Default::default()
        },
    );
    run_effects(tx);
    dispatch(&mut s, T0 + 7);
    assert_eq!(assignments(&mut w).len(), 1);
}

#[test]
fn a_heartbeat_without_the_stopping_step_frees_its_slot() {
    let mut s = state();
    let mut w = worker(&mut s, "w", &["q"], 1);
    let first = submit(&mut s, ONE_STEP);
    dispatch(&mut s, T0 + 1);
    assert_eq!(assignments(&mut w).len(), 1);
    let mut tx = Tx::new(T0 + 2);
    s.cancel_run(&mut tx, &first, &alice(), "stop").unwrap();
    run_effects(tx);
    submit(&mut s, ONE_STEP);
    s.heartbeat("w", &[], T0 + 3);
    dispatch(&mut s, T0 + 4);
    assert_eq!(assignments(&mut w).len(), 1);
}

#[test]
fn a_step_whose_start_was_lost_is_recorded_running_before_its_result() {
    let mut s = state();
    let mut w = worker(&mut s, "w", &["q"], 1);
    submit(&mut s, ONE_STEP);
    dispatch(&mut s, T0 + 1);
    let a = assignments(&mut w).remove(0);
    // No StepStarted reached this engine (a failover, say).
    let events = result(&mut s, "w", &a, pb::Outcome::Succeeded, T0 + 2);
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let running = kinds.iter().position(|k| *k == "step.running");
    let succeeded = kinds.iter().position(|k| *k == "step.succeeded");
    assert!(
        matches!((running, succeeded), (Some(r), Some(d)) if r < d),
        "{kinds:?}"
    );
}

#[test]
fn a_step_goes_only_to_a_worker_carrying_the_labels_it_selects() {
    let mut s = state();
    let (out, mut ams) = mpsc::unbounded_channel();
    let hello = |id: &str, site: &str| pb::Hello {
        worker_id: id.into(),
        queues: vec!["q".into()],
        slots: 4,
        generation: 1,
        labels: [("site".to_owned(), site.to_owned())].into(),
        ..Default::default()
    };
    let mut tx = Tx::new(T0);
    s.hello(
        &mut tx,
        1,
        "ams",
        &AgentScope::unbounded(),
        hello("ams", "ams1"),
        out,
    )
    .unwrap();
    run_effects(tx);
    let picky =
        "name = \"p\"\n[[step]]\nqueue = \"q\"\nrun = \"true\"\nworker = { site = \"fra1\" }\n";
    let waiting = submit(&mut s, picky);
    let plain = submit(&mut s, ONE_STEP);
    dispatch(&mut s, T0 + 1);
    // The plain step behind it goes; the picky one keeps its place.
    let got = assignments(&mut ams);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].run_id, plain);
    let why = s.get_run(&waiting, T0 + 2).unwrap().steps[0]
        .waiting_for
        .clone();
    assert!(why.contains("site=fra1"), "{why}");

    let (out, mut fra) = mpsc::unbounded_channel();
    let mut tx = Tx::new(T0 + 3);
    s.hello(
        &mut tx,
        2,
        "fra",
        &AgentScope::unbounded(),
        hello("fra", "fra1"),
        out,
    )
    .unwrap();
    run_effects(tx);
    dispatch(&mut s, T0 + 4);
    let got = assignments(&mut fra);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].run_id, waiting);
    assert!(assignments(&mut ams).is_empty());
}

#[test]
fn an_attempt_whose_lease_was_lost_is_given_back_not_counted() {
    let mut s = state();
    let mut w = worker(&mut s, "w", &["q"], 1);
    let once = "name = \"o\"\n[[step]]\nqueue = \"q\"\nrun = \"true\"\n";
    let run = submit(&mut s, once);
    dispatch(&mut s, T0 + 1);
    let first = assignments(&mut w).remove(0);
    let mut tx = Tx::new(T0 + 2);
    s.force_release(&mut tx, &first.lease_id, false, &alice(), "stuck")
        .unwrap();
    run_effects(tx);
    let mut tx = Tx::new(T0 + 3);
    s.step_result(
        &mut tx,
        "w",
        pb::StepResult {
            lease_id: first.lease_id.clone(),
            fencing_token: first.fencing_token,
            ..Default::default()
        },
    );
    run_effects(tx);
    dispatch(&mut s, T0 + 4);
    assert_eq!(assignments(&mut w).len(), 1);
    let step = s.get_run(&run, T0 + 5).unwrap().steps[0].clone();
    assert_eq!(
        (
            step.attempt,
            step.attempts_counted,
            step.attempts_given_back
        ),
        (2, 1, 1),
        "the second lease is the first attempt that counts"
    );
}
