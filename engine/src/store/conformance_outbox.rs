//! The conformance suite's part for the notification outbox, on every
//! store (see [`super::conformance`]).

use opsdeck_proto::v1 as pb;

use super::conformance::backends;
use super::{Attempt, Batch, GivenUp, Notification, NotificationState, Prune};

fn event(seq: u64, kind: &str) -> pb::Event {
    pb::Event {
        seq,
        at_ms: 100,
        kind: kind.into(),
        actor: "engine".into(),
        ..Default::default()
    }
}

/// Two events, one notified to two notifiers, the other to one.
fn batch() -> Batch {
    Batch {
        events: vec![event(1, "run.failed"), event(2, "step.dead")],
        notifications: vec![
            Notification::new(1, "run.failed", "oncall", 100, "{\"a\":1}".into()),
            Notification::new(1, "run.failed", "chat", 100, "{\"b\":1}".into()),
            Notification::new(2, "step.dead", "oncall", 100, "{\"c\":1}".into()),
        ],
        ..Default::default()
    }
}

fn ids(list: &[Notification]) -> Vec<&str> {
    list.iter().map(|n| n.id.as_str()).collect()
}

#[tokio::test]
async fn notifications_commit_with_their_events_and_read_back_due_oldest_first() {
    for b in backends().await {
        b.store.commit(&batch()).await.unwrap();
        let due = b.store.due_notifications(100, 10).await.unwrap();
        assert_eq!(ids(&due), ["1-chat", "1-oncall", "2-oncall"], "{}", b.name);
        let first = due.iter().find(|n| n.id == "1-oncall").unwrap();
        assert_eq!(first.state, NotificationState::Pending, "{}", b.name);
        assert_eq!(first.payload, "{\"a\":1}", "{}", b.name);
        assert_eq!((first.event_seq, first.attempts), (1, 0), "{}", b.name);
        assert!(
            b.store.due_notifications(99, 10).await.unwrap().is_empty(),
            "{}",
            b.name
        );
        assert_eq!(
            b.store.pending_notifications().await.unwrap(),
            3,
            "{}",
            b.name
        );
    }
}

#[tokio::test]
async fn attempts_are_recorded_and_a_given_up_one_is_failed() {
    for b in backends().await {
        b.store.commit(&batch()).await.unwrap();
        // Delivered: no longer due, and not attempted again.
        let done = Attempt {
            at: 150,
            retry: None,
        };
        assert!(
            b.store
                .notification_attempted("1-oncall", &done)
                .await
                .unwrap()
        );
        assert!(
            !b.store
                .notification_attempted("1-oncall", &done)
                .await
                .unwrap(),
            "{}",
            b.name
        );
        // Failed: due again later, with the error.
        let retry = Attempt {
            at: 150,
            retry: Some(("HTTP 500".into(), 400)),
        };
        assert!(
            b.store
                .notification_attempted("1-chat", &retry)
                .await
                .unwrap()
        );
        let due = b.store.due_notifications(300, 10).await.unwrap();
        assert_eq!(ids(&due), ["2-oncall"], "{}", b.name);
        let due = b.store.due_notifications(400, 10).await.unwrap();
        assert_eq!(
            ids(&due),
            ["2-oncall", "1-chat"],
            "the longest due first: {}",
            b.name
        );
        let chat = &due[1];
        assert_eq!((chat.attempts, chat.next_at), (1, 400), "{}", b.name);
        assert_eq!(chat.last_error, "HTTP 500", "{}", b.name);

        // Given up in the commit of its event.
        let give_up = Batch {
            events: vec![event(3, "notification.failed")],
            given_up: vec![GivenUp {
                id: "1-chat".into(),
                at: 500,
                last_error: "HTTP 500".into(),
            }],
            ..Default::default()
        };
        b.store.commit(&give_up).await.unwrap();
        let failed = b
            .store
            .list_notifications(&[NotificationState::Failed], 10)
            .await
            .unwrap();
        assert_eq!(ids(&failed), ["1-chat"], "{}", b.name);
        assert_eq!(failed[0].updated_at, 500, "{}", b.name);
        let all = b.store.list_notifications(&[], 10).await.unwrap();
        assert_eq!(
            ids(&all),
            ["2-oncall", "1-chat", "1-oncall"],
            "newest event first: {}",
            b.name
        );
        let open = b
            .store
            .list_notifications(&[NotificationState::Pending, NotificationState::Failed], 10)
            .await
            .unwrap();
        assert_eq!(ids(&open), ["2-oncall", "1-chat"], "{}", b.name);
        assert_eq!(
            b.store.pending_notifications().await.unwrap(),
            1,
            "{}",
            b.name
        );

        // Writing the same notification again leaves it as it is.
        b.store
            .commit(&Batch {
                notifications: vec![Notification::new(
                    1,
                    "run.failed",
                    "oncall",
                    900,
                    "{}".into(),
                )],
                ..Default::default()
            })
            .await
            .unwrap();
        let all = b
            .store
            .list_notifications(&[NotificationState::Delivered], 10)
            .await
            .unwrap();
        assert_eq!(all[0].payload, "{\"a\":1}", "{}", b.name);
    }
}

#[tokio::test]
async fn retention_prunes_delivered_and_failed_notifications_never_pending_ones() {
    for b in backends().await {
        b.store.commit(&batch()).await.unwrap();
        let done = Attempt {
            at: 150,
            retry: None,
        };
        b.store
            .notification_attempted("1-oncall", &done)
            .await
            .unwrap();
        b.store
            .commit(&Batch {
                given_up: vec![GivenUp {
                    id: "1-chat".into(),
                    at: 160,
                    last_error: "gone".into(),
                }],
                ..Default::default()
            })
            .await
            .unwrap();
        let prune = |before| Prune {
            runs_before: 0,
            events_before: before,
            output_before: 0,
            workers_before: 0,
            batch: 1,
        };
        // Too recent: nothing goes.
        assert_eq!(
            b.store.prune(&prune(150)).await.unwrap().notifications,
            0,
            "{}",
            b.name
        );
        assert_eq!(
            b.store.prune(&prune(1_000)).await.unwrap().notifications,
            1,
            "{}",
            b.name
        );
        assert_eq!(
            b.store.prune(&prune(1_000)).await.unwrap().notifications,
            1,
            "{}",
            b.name
        );
        assert_eq!(
            b.store.prune(&prune(1_000)).await.unwrap().notifications,
            0,
            "{}",
            b.name
        );
        let left = b.store.list_notifications(&[], 10).await.unwrap();
        assert_eq!(
            ids(&left),
            ["2-oncall"],
            "the pending one stays: {}",
            b.name
        );
    }
}
