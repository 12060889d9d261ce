//! Notifications on a plain clock: each matching event's outbox row is in
//! the batch that writes the event; derived events fire once.

use super::tests::{T0, assignments, dispatch, run_effects, submit, worker};
use super::*;
use crate::notifications::{NotifierEntry, Rules};

fn entry(name: &str, on: &[&str], run_name: Option<&str>) -> NotifierEntry {
    NotifierEntry {
        name: name.into(),
        url: Some("http://127.0.0.1:1/hook".into()),
        exec: None,
        secret: None,
        timeout: Duration::from_secs(1),
        on: crate::domain::scope::Patterns::new(on.iter().map(|s| s.to_string()).collect())
            .unwrap(),
        queue: None,
        run_name: run_name.map(str::to_owned),
        label: BTreeMap::new(),
    }
}

fn state_notifying(entries: &[NotifierEntry]) -> State {
    let cfg = CoreConfig {
        notify: Arc::new(Rules::new(entries).unwrap()),
        approval_overdue_before: Duration::from_secs(60),
        worker_offline_after: Duration::from_secs(30),
        ..CoreConfig::default()
    };
    State::load(cfg, Loaded::default(), T0)
}

const FAILS: &str =
    "name = \"deploy-api\"\n[[step]]\nname = \"migrate\"\nqueue = \"q\"\nrun = \"false\"\n";

#[test]
fn a_matching_event_and_its_notification_are_in_the_same_batch() {
    let mut s = state_notifying(&[
        entry("oncall", &["run.failed", "step.*"], Some("deploy-*")),
        entry("other", &["run.failed"], Some("backup")),
    ]);
    let mut w = worker(&mut s, "w", &["q"], 1);
    submit(&mut s, FAILS);
    dispatch(&mut s, T0);
    let a = assignments(&mut w).remove(0);
    let mut tx = Tx::new(T0 + 5);
    s.step_result(
        &mut tx,
        "w",
        pb::StepResult {
            lease_id: a.lease_id.clone(),
            fencing_token: a.fencing_token,
            outcome: pb::Outcome::Failed as i32,
            exit_code: 1,
            ..Default::default()
        },
    );
    let batch = s.batch(&mut tx);
    run_effects(tx);
    let failed = batch
        .events
        .iter()
        .find(|e| e.kind == "run.failed")
        .unwrap();
    let ids: Vec<&str> = batch.notifications.iter().map(|n| n.id.as_str()).collect();
    assert!(
        ids.contains(&format!("{}-oncall", failed.seq).as_str()),
        "{ids:?}"
    );
    assert!(
        batch.notifications.iter().all(|n| n.notifier == "oncall"),
        "the other notifier's run_name does not match: {ids:?}"
    );
    let n = batch
        .notifications
        .iter()
        .find(|n| n.event_kind == "run.failed")
        .unwrap();
    let body: serde_json::Value = serde_json::from_str(&n.payload).unwrap();
    assert_eq!(body["version"], 1);
    assert_eq!(body["id"], n.id.as_str());
    assert_eq!(body["event"]["run_name"], "deploy-api");
    assert_eq!(body["event"]["queue"], "q");
    assert!(
        body["summary"]
            .as_str()
            .unwrap()
            .starts_with("run deploy-api "),
        "{body}"
    );
}

#[test]
fn giving_up_is_an_event_not_sent_to_the_notifier_that_failed() {
    let mut s = state_notifying(&[
        entry("oncall", &["notification.*"], None),
        entry("chat", &["notification.failed"], None),
    ]);
    let mut tx = Tx::new(T0);
    s.notification_given_up(
        &mut tx,
        "7-oncall",
        "oncall",
        "run.failed",
        7,
        3,
        "HTTP 500",
    );
    let batch = s.batch(&mut tx);
    assert_eq!(batch.given_up.len(), 1);
    assert_eq!(batch.given_up[0].id, "7-oncall");
    assert_eq!(batch.events[0].kind, "notification.failed");
    let to: Vec<&str> = batch
        .notifications
        .iter()
        .map(|n| n.notifier.as_str())
        .collect();
    assert_eq!(to, ["chat"]);
}

#[test]
fn an_approval_is_overdue_once_before_its_deadline() {
    let mut s = state_notifying(&[entry("oncall", &["approval.overdue"], None)]);
    submit(
        &mut s,
        "name = \"gated\"\n[[step]]\nname = \"gate\"\napproval = { timeout = \"5m\" }\n",
    );
    let mut kinds = Vec::new();
    for at in [T0 + 1_000, T0 + 240_000, T0 + 241_000, T0 + 250_000] {
        let mut tx = Tx::new(at);
        s.fire_timers(&mut tx);
        let batch = s.batch(&mut tx);
        kinds.extend(batch.events.iter().map(|e| (at, e.kind.clone())));
        assert_eq!(batch.notifications.len(), batch.events.len());
    }
    assert_eq!(kinds, [(T0 + 240_000, "approval.overdue".to_owned())]);
}
