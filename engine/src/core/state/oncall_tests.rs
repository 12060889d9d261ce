//! Hang detection and worker breakers, on a plain clock.

use super::tests::{T0, alice, assignments, dispatch, result, run_effects, submit, worker};
use super::*;
use crate::domain::spec::parse;

fn state_with(cfg: CoreConfig) -> State {
    State::load(cfg, Loaded::default(), T0)
}

const FAILS: &str = "name = \"f\"\n[[step]]\nqueue = \"q\"\nrun = \"false\"\n";

fn kinds(events: &[pb::Event]) -> Vec<&str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

#[test]
fn a_step_without_a_timeout_is_sent_with_the_default_and_one_over_the_maximum_is_refused() {
    let mut s = state_with(CoreConfig {
        default_step_timeout: Duration::from_secs(90),
        max_step_timeout: Duration::from_secs(600),
        ..CoreConfig::default()
    });
    let mut w = worker(&mut s, "w", &["q"], 1);
    submit(&mut s, FAILS);
    dispatch(&mut s, T0);
    assert_eq!(assignments(&mut w)[0].timeout_ms, 90_000);

    let long = parse(
        "name = \"l\"\n[[step]]\nqueue = \"q\"\nrun = \"true\"\ntimeout = \"11m\"\n",
        &Limits::default(),
    )
    .unwrap();
    let mut tx = Tx::new(T0);
    let err = s.submit(&mut tx, long, None, &alice(), "").unwrap_err();
    assert!(
        matches!(&err, EngineError::InvalidArgument(m) if m.contains("max_step_timeout") && m.contains("11m")),
        "{err:?}"
    );
}

#[test]
fn a_resubmit_with_the_same_key_finds_the_run_the_default_timeout_was_added_to() {
    let mut s = state_with(CoreConfig::default());
    let spec = || parse(FAILS, &Limits::default()).unwrap();
    let mut tx = Tx::new(T0);
    let (first, new) = s
        .submit(&mut tx, spec(), Some("k".into()), &alice(), "")
        .unwrap();
    let (again, new_again) = s
        .submit(&mut tx, spec(), Some("k".into()), &alice(), "")
        .unwrap();
    assert_eq!((first, new), (again, !new_again));
}

#[test]
fn attempts_failing_too_often_quarantine_their_run_name() {
    let mut s = state_with(CoreConfig {
        failure_quarantine_after: 2,
        ..CoreConfig::default()
    });
    let mut w = worker(&mut s, "w", &["q"], 1);
    for i in 0..2 {
        submit(&mut s, FAILS);
        dispatch(&mut s, T0 + i);
        let a = assignments(&mut w).remove(0);
        let events = result(&mut s, "w", &a, pb::Outcome::Failed, T0 + i);
        assert_eq!(
            events.iter().any(|e| e.kind == "run_name.quarantined"),
            i == 1,
            "{:?}",
            kinds(&events)
        );
    }
    let spec = parse(FAILS, &Limits::default()).unwrap();
    let mut tx = Tx::new(T0 + 5);
    let err = s.submit(&mut tx, spec, None, &alice(), "").unwrap_err();
    assert!(
        matches!(&err, EngineError::FailedPrecondition(m) if m.contains("failure_quarantine_after")),
        "{err:?}"
    );
}

#[test]
fn a_workers_breaker_opens_only_while_another_succeeds_and_a_success_after_the_cooldown_closes_it()
{
    let mut s = state_with(CoreConfig {
        breaker_after: 2,
        breaker_cooldown: Duration::from_secs(10),
        ..CoreConfig::default()
    });
    let mut a = worker(&mut s, "a", &["q"], 1);
    let mut b = worker(&mut s, "b", &["q"], 1);
    let mut now = T0;
    let mut step =
        |s: &mut State, now: &mut Millis| -> (Vec<pb::Assignment>, Vec<pb::Assignment>) {
            *now += 10;
            dispatch(s, *now);
            (assignments(&mut a), assignments(&mut b))
        };
    // Both fail: the steps are at fault, not a worker.
    for _ in 0..4 {
        submit(&mut s, FAILS);
    }
    let mut events = Vec::new();
    for _ in 0..2 {
        let (on_a, on_b) = step(&mut s, &mut now);
        for x in on_a {
            events.extend(result(&mut s, "a", &x, pb::Outcome::Failed, now));
        }
        for x in on_b {
            events.extend(result(&mut s, "b", &x, pb::Outcome::Failed, now));
        }
    }
    assert!(
        !kinds(&events).contains(&"worker.breaker_opened"),
        "{:?}",
        kinds(&events)
    );

    // b succeeds while a keeps failing: a's breaker opens.
    submit(&mut s, FAILS);
    submit(&mut s, FAILS);
    let (on_a, on_b) = step(&mut s, &mut now);
    assert_eq!((on_a.len(), on_b.len()), (1, 1));
    result(&mut s, "b", &on_b[0], pb::Outcome::Succeeded, now);
    let ev = result(&mut s, "a", &on_a[0], pb::Outcome::TimedOut, now);
    assert!(
        kinds(&ev).contains(&"worker.breaker_opened"),
        "{:?}",
        kinds(&ev)
    );
    assert_eq!(s.get_worker("a").unwrap().breaker, "open");

    // While it is open only b takes work; b holds this one.
    submit(&mut s, FAILS);
    let (on_a, on_b) = step(&mut s, &mut now);
    assert_eq!((on_a.len(), on_b.len()), (0, 1));
    submit(&mut s, FAILS);
    let (on_a, on_b) = step(&mut s, &mut now);
    assert_eq!(
        (on_a.len(), on_b.len()),
        (0, 0),
        "an open breaker takes nothing"
    );

    // After the cool-down one step goes to a; its success closes the breaker.
    now += 10_000;
    let (on_a, _) = step(&mut s, &mut now);
    assert_eq!(on_a.len(), 1);
    assert_eq!(s.get_worker("a").unwrap().breaker, "half_open");
    let ev = result(&mut s, "a", &on_a[0], pb::Outcome::Succeeded, now);
    assert!(
        kinds(&ev).contains(&"worker.breaker_closed"),
        "{:?}",
        kinds(&ev)
    );
    assert_eq!(s.get_worker("a").unwrap().breaker, "");
}

#[test]
fn an_operator_closes_an_open_breaker_and_one_that_is_closed_cannot_be_reset() {
    let mut s = state_with(CoreConfig::default());
    let _w = worker(&mut s, "w", &["q"], 1);
    let mut tx = Tx::new(T0);
    let err = s.reset_breaker(&mut tx, "w", &alice(), "why").unwrap_err();
    assert!(matches!(err, EngineError::FailedPrecondition(_)), "{err:?}");
    s.open_breaker(&mut tx, "w", 5, "test".into());
    let w = s.reset_breaker(&mut tx, "w", &alice(), "fixed").unwrap();
    assert!(w.breaker.is_empty());
    run_effects(tx);
}
