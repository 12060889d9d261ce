//! The events table on both databases: reads by range and by run, rows
//! that hold several events, and their pruning.

use opsdeck_proto::v1 as pb;

use super::Batch;
use super::conformance::{backends, event, sample};
use super::conformance_prune::prune_all;

#[tokio::test]
async fn events_read_back_in_seq_order_by_range_and_by_run() {
    for b in backends().await {
        b.store.commit(&sample()).await.unwrap();
        let seqs = |v: Vec<pb::Event>| v.into_iter().map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(
            seqs(b.store.events_after(0, 10, None).await.unwrap()),
            [1, 2, 3],
            "{}",
            b.name
        );
        assert_eq!(
            seqs(b.store.events_after(1, 1, None).await.unwrap()),
            [2],
            "{}",
            b.name
        );
        assert_eq!(
            seqs(b.store.events_after(0, 10, Some("r1")).await.unwrap()),
            [1, 3],
            "{}",
            b.name
        );
        assert_eq!(
            seqs(b.store.events_between(1, 3).await.unwrap()),
            [2, 3],
            "{}",
            b.name
        );
        // The tail, newest first.
        assert_eq!(
            seqs(b.store.events_before(u64::MAX, 0, 2, None).await.unwrap()),
            [3, 2],
            "{}",
            b.name
        );
        assert_eq!(
            seqs(b.store.events_before(3, 0, 10, Some("r1")).await.unwrap()),
            [1],
            "{}",
            b.name
        );
        assert_eq!(
            seqs(b.store.events_before(u64::MAX, 2, 10, None).await.unwrap()),
            [3],
            "{}",
            b.name
        );
        let e = b.store.events_after(0, 1, None).await.unwrap().remove(0);
        assert_eq!(e, event(1, "r1"), "{}", b.name);
    }
}

/// Events as a busy commit makes them: runs of several events of one run
/// (stored as one row each), single events between them, events of no run,
/// each with its own kind, actor and objects.
fn busy_events(first: u64, at: i64) -> Vec<pb::Event> {
    let runs = [
        "r1", "r1", "r1", "r2", "r1", "r1", "r2", "r2", "r2", "r2", "", "r1", "r3", "r3", "r3",
        "r1", "r1", "r1", "r1", "r2",
    ];
    runs.iter()
        .enumerate()
        .map(|(i, run)| {
            let seq = first + i as u64;
            let mut e = pb::Event {
                seq,
                at_ms: at,
                kind: format!("kind.{}", seq % 4),
                actor: format!("worker:w{}", seq % 3),
                run_id: (*run).into(),
                worker_id: format!("w{}", seq % 3),
                message: format!("event {seq}"),
                ..Default::default()
            };
            if seq.is_multiple_of(5) {
                e.lease_id = format!("l{seq}");
                e.lease = Some(Box::new(pb::Lease {
                    id: e.lease_id.clone(),
                    run_id: e.run_id.clone(),
                    worker_id: e.worker_id.clone(),
                    attempt: 2,
                    ..Default::default()
                }));
            }
            e
        })
        .collect()
}

#[tokio::test]
async fn events_sharing_rows_read_back_whole_from_every_position() {
    for b in backends().await {
        // Two commits (instants differ): the second's runs of events are
        // rows of their own, after the first's.
        let mut all = busy_events(1, 10);
        all.extend(busy_events(21, 20));
        for half in all.chunks(20) {
            let batch = Batch {
                events: half.to_vec(),
                ..Default::default()
            };
            b.store.commit(&batch).await.unwrap();
        }
        let last = all.len() as u64;
        for run in [None, Some("r1"), Some("r2"), Some("r3")] {
            let of_run: Vec<&pb::Event> = all
                .iter()
                .filter(|e| run.is_none_or(|r| e.run_id == r))
                .collect();
            for after in 0..=last {
                for limit in [1, 3, 100] {
                    let want: Vec<pb::Event> = of_run
                        .iter()
                        .filter(|e| e.seq > after)
                        .take(limit)
                        .map(|e| (*e).clone())
                        .collect();
                    let got = b
                        .store
                        .events_after(after, limit as u32, run)
                        .await
                        .unwrap();
                    assert_eq!(
                        got, want,
                        "{}: after {after}, limit {limit}, run {run:?}",
                        b.name
                    );
                }
            }
            for before in 1..=last + 1 {
                for after in [0, before / 2, before.saturating_sub(2)] {
                    for limit in [1, 3, 100] {
                        let want: Vec<pb::Event> = of_run
                            .iter()
                            .rev()
                            .filter(|e| e.seq < before && e.seq > after)
                            .take(limit)
                            .map(|e| (*e).clone())
                            .collect();
                        let got = b
                            .store
                            .events_before(before, after, limit as u32, run)
                            .await
                            .unwrap();
                        assert_eq!(
                            got, want,
                            "{}: before {before}, after {after}, limit {limit}, run {run:?}",
                            b.name
                        );
                    }
                }
            }
        }
        for after in 0..=last {
            for until in after..=last {
                let want: Vec<pb::Event> = all
                    .iter()
                    .filter(|e| e.seq > after && e.seq <= until)
                    .cloned()
                    .collect();
                let got = b.store.events_between(after, until).await.unwrap();
                assert_eq!(got, want, "{}: between {after} and {until}", b.name);
            }
        }
        let loaded = b.store.load(10).await.unwrap();
        assert_eq!(loaded.seq, last, "{}: the last seq is inside a row", b.name);
    }
}

#[tokio::test]
async fn events_sharing_rows_are_pruned_whole_and_counted_one_by_one() {
    for b in backends().await {
        // Seqs 1-3 share a row, then 4 and 5 are rows of their own; only
        // 5 is new.
        let events: Vec<pb::Event> = [(1, "r1", 1), (2, "r1", 1), (3, "r1", 1), (4, "r2", 1)]
            .into_iter()
            .chain([(5, "r1", 5_000)])
            .map(|(seq, run, at)| pb::Event {
                at_ms: at,
                ..event(seq, run)
            })
            .collect();
        let batch = Batch {
            events,
            ..Default::default()
        };
        b.store.commit(&batch).await.unwrap();
        let first = b.store.prune(&prune_all(1_000, 1)).await.unwrap();
        assert_eq!(first.events, 3, "{}: one row of three events", b.name);
        assert_eq!(b.store.first_kept_seq().await.unwrap(), 4, "{}", b.name);
        let second = b.store.prune(&prune_all(1_000, 1)).await.unwrap();
        assert_eq!(second.events, 1, "{}", b.name);
        let third = b.store.prune(&prune_all(1_000, 1)).await.unwrap();
        assert_eq!(third.events, 0, "{}: the newest stays", b.name);
        let left = b.store.events_after(0, 10, None).await.unwrap();
        assert_eq!(
            left.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [5],
            "{}",
            b.name
        );
    }
}
