//! Concurrency keys and queues' `max_running`, on a plain clock.

use super::tests::{T0, alice, assignments, dispatch, result, state, submit, worker};
use super::*;

fn keyed(queue: &str, priority: i32) -> String {
    format!(
        "name = \"deploy\"\nconcurrency = {{ key = \"deploy-prod\", limit = 1 }}\n\
         [[step]]\nqueue = \"{queue}\"\nrun = \"true\"\npriority = {priority}\n\
         [[step]]\napproval = {{}}\n\
         [[step]]\nqueue = \"{queue}\"\nrun = \"true\"\n"
    )
}

fn waiting_for(s: &State, run: &str) -> String {
    let r = s.get_run(run, T0).unwrap();
    r.steps[r.current_step as usize].waiting_for.clone()
}

#[test]
fn a_run_holds_its_key_through_an_approval_gate_until_it_is_final() {
    let mut s = state();
    let mut w = worker(&mut s, "w", &["q"], 4);
    let first = submit(&mut s, &keyed("q", 0));
    let second = submit(&mut s, &keyed("q", 0));
    dispatch(&mut s, T0 + 1);
    let a = assignments(&mut w);
    assert_eq!(a.len(), 1, "one run of the key at a time");
    assert_eq!(a[0].run_id, first);
    assert_eq!(
        waiting_for(&s, &second),
        format!("waiting for concurrency key deploy-prod: 1 running: {first}")
    );
    result(&mut s, "w", &a[0], pb::Outcome::Succeeded, T0 + 2);
    // At the gate: still holding.
    dispatch(&mut s, T0 + 3);
    assert!(assignments(&mut w).is_empty());
    let approval = s.list_approvals(false)[0].id.clone();
    let mut tx = Tx::new(T0 + 4);
    let bob = Actor {
        name: "bob".into(),
        transport: "tcp",
    };
    let approver = Grants::new([crate::domain::Role::Approver], []);
    s.decide(&mut tx, &approval, true, &bob, &approver, "ok")
        .unwrap();
    super::tests::run_effects(tx);
    dispatch(&mut s, T0 + 5);
    let last = assignments(&mut w);
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].run_id, first, "the holder's own next step goes");
    result(&mut s, "w", &last[0], pb::Outcome::Succeeded, T0 + 6);
    dispatch(&mut s, T0 + 7);
    let next = assignments(&mut w);
    assert_eq!(next.len(), 1);
    assert_eq!(
        next[0].run_id, second,
        "the key is free once the run is final"
    );
}

#[test]
fn waiting_runs_take_the_key_in_order_across_queues() {
    let mut s = state();
    let mut w1 = worker(&mut s, "w1", &["q1"], 1);
    let holder = submit(&mut s, &keyed("q1", 0));
    dispatch(&mut s, T0 + 1);
    assert_eq!(assignments(&mut w1).len(), 1);
    // Waits first, on q1, whose one slot is taken.
    let earlier = submit(&mut s, &keyed("q1", 0));
    // Waits later, on q2, whose worker is free.
    let mut w2 = worker(&mut s, "w2", &["q2"], 1);
    let later = submit(&mut s, &keyed("q2", 0));
    let mut tx = Tx::new(T0 + 2);
    s.cancel_run(&mut tx, &holder, &alice(), "done").unwrap();
    super::tests::run_effects(tx);
    // The cancelled step's slot on w1 stays taken until its worker says so.
    dispatch(&mut s, T0 + 3);
    assert!(
        assignments(&mut w2).is_empty(),
        "a later run took the key an earlier one waits for"
    );
    assert_eq!(
        waiting_for(&s, &later),
        format!(
            "waiting for concurrency key deploy-prod: 0 running, 1 waiting ahead of it: {earlier}"
        )
    );
    s.heartbeat("w1", &[], T0 + 4);
    dispatch(&mut s, T0 + 5);
    let got = assignments(&mut w1);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].run_id, earlier);
}

#[test]
fn a_queue_at_max_running_leases_no_more_until_one_ends() {
    let mut s = state();
    let mut w = worker(&mut s, "w", &["q"], 4);
    let mut tx = Tx::new(T0);
    let q = s
        .set_queue(&mut tx, "q", Some(2), &alice(), "slow down")
        .unwrap();
    assert_eq!(q.max_running, 2);
    assert!(tx.events.iter().any(|e| e.kind == "queue.updated"
        && e.reason == "slow down"
        && e.message.contains("max_running 2 (was unlimited)")));
    let one = "name = \"o\"\n[[step]]\nqueue = \"q\"\nrun = \"true\"\n";
    let runs: Vec<String> = (0..3).map(|_| submit(&mut s, one)).collect();
    dispatch(&mut s, T0 + 1);
    let a = assignments(&mut w);
    assert_eq!(a.len(), 2);
    assert_eq!(
        waiting_for(&s, &runs[2]),
        "waiting for queue q: max_running 2 reached"
    );
    result(&mut s, "w", &a[0], pb::Outcome::Succeeded, T0 + 2);
    dispatch(&mut s, T0 + 3);
    assert_eq!(assignments(&mut w).len(), 1);

    let mut tx = Tx::new(T0 + 4);
    let err = s
        .set_queue(&mut tx, "nope", Some(1), &alice(), "")
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::NotFound(m) if m.contains("known queues: q")),
        "{err:?}"
    );
    let err = s.set_queue(&mut tx, "q", None, &alice(), "").unwrap_err();
    assert!(
        matches!(&err, EngineError::InvalidArgument(m) if m.contains("max_running")),
        "{err:?}"
    );
}
