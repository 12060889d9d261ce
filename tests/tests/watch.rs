//! Console.Watch: a snapshot consistent with a seq, then live events; a
//! client that reconnects with its last seq gets exactly what it missed.

use opsdeck_tests::pb::{DecideRequest, WatchMessage, watch_message::Kind};
use opsdeck_tests::{DEADLINE, Engine, describe_events, next_watch, pb};
use tonic::Streaming;

fn gate(name: &str) -> String {
    format!("name = \"{name}\"\n[[step]]\nname = \"gate\"\napproval = {{ timeout = \"5m\" }}\n")
}

async fn next_event(stream: &mut Streaming<WatchMessage>) -> pb::Event {
    match next_watch(stream).await {
        Kind::Event(e) => e,
        other => panic!("expected an event, got {other:?}"),
    }
}

/// Reads a whole snapshot; returns its seq and its chunks merged.
async fn snapshot(stream: &mut Streaming<WatchMessage>) -> (u64, pb::SnapshotChunk) {
    let Kind::SnapshotBegin(begin) = next_watch(stream).await else {
        panic!("a Watch from 0 starts with a snapshot")
    };
    let mut all = pb::SnapshotChunk::default();
    loop {
        match next_watch(stream).await {
            Kind::SnapshotChunk(c) => {
                all.runs.extend(c.runs);
                all.workers.extend(c.workers);
                all.queues.extend(c.queues);
                all.leases.extend(c.leases);
                all.approvals.extend(c.approvals);
            }
            Kind::SnapshotEnd(end) => {
                assert_eq!(
                    end.seq, begin.seq,
                    "a snapshot ends at the seq it began with"
                );
                return (begin.seq, all);
            }
            other => panic!("unexpected message inside a snapshot: {other:?}"),
        }
    }
}

#[tokio::test]
async fn watch_sends_a_snapshot_then_live_events_and_a_resume_from_seq_s_replays_exactly_the_missed_events_then_live_ones()
 {
    let engine = Engine::start_default().await;
    let first = engine.submit(&gate("first")).await;
    let first_approval = engine.pending_approval(&first.id).await;

    // Snapshot, consistent with the engine's seq.
    let mut stream = engine.watch(0).await;
    let (snap_seq, snap) = snapshot(&mut stream).await;
    let head = engine
        .all_events(0)
        .await
        .last()
        .map(|e| e.seq)
        .unwrap_or(0);
    assert_eq!(
        snap_seq, head,
        "nothing happened since, so the snapshot is at the head"
    );
    assert!(
        snap.runs.iter().any(|r| r.id == first.id),
        "the snapshot holds the run"
    );
    assert!(
        snap.approvals.iter().any(|a| a.id == first_approval.id),
        "the snapshot holds the pending approval"
    );

    // Live events follow, from the snapshot's seq on.
    let second = engine.submit(&gate("second")).await;
    let mut last = snap_seq;
    loop {
        let e = next_event(&mut stream).await;
        assert_eq!(
            e.seq,
            last + 1,
            "live events come in seq order without gaps"
        );
        last = e.seq;
        if e.run_id == second.id && e.kind == "approval.requested" {
            break;
        }
    }
    let s = last;
    drop(stream);

    // Things happen while the client is away.
    let third = engine.submit(&gate("third")).await;
    engine.pending_approval(&third.id).await;
    engine
        .ci_api()
        .await
        .approvals
        .decide(DecideRequest {
            id: first_approval.id.clone(),
            approve: true,
            reason: "ok".into(),
        })
        .await
        .expect("approve");
    let missed = engine.all_events(s).await;
    assert!(
        missed.len() >= 4,
        "the test caused events while disconnected:\n{}",
        describe_events(&missed)
    );
    let missed_head = missed.last().unwrap().seq;

    // Resume: exactly the missed events, in order, no snapshot.
    let mut stream = engine.watch(s).await;
    let mut replayed = Vec::new();
    while replayed
        .last()
        .is_none_or(|e: &pb::Event| e.seq < missed_head)
    {
        replayed.push(next_event(&mut stream).await);
    }
    let got: Vec<(u64, &str)> = replayed.iter().map(|e| (e.seq, e.kind.as_str())).collect();
    let want: Vec<(u64, &str)> = missed.iter().map(|e| (e.seq, e.kind.as_str())).collect();
    assert_eq!(got, want, "the resume replays exactly the missed events");
    assert_eq!(replayed[0].seq, s + 1);
    assert!(replayed.windows(2).all(|w| w[1].seq == w[0].seq + 1));

    // Then live ones, without a duplicate.
    let fourth = engine.submit(&gate("fourth")).await;
    let live = next_event(&mut stream).await;
    assert_eq!(
        live.seq,
        missed_head + 1,
        "the first live event after the replay: {live:#?}"
    );
    assert_eq!(
        (live.kind.as_str(), live.run_id.as_str()),
        ("run.submitted", fourth.id.as_str())
    );
}

#[tokio::test]
async fn watch_resuming_from_a_seq_the_engine_never_reached_gets_a_fresh_snapshot() {
    let engine = Engine::start_default().await;
    let run = engine.submit(&gate("only")).await;
    engine.pending_approval(&run.id).await;
    let head = engine.all_events(0).await.last().unwrap().seq;

    let mut stream = engine.watch(head + 1000).await;
    let (seq, snap) = snapshot(&mut stream).await;
    assert_eq!(seq, head);
    assert!(snap.runs.iter().any(|r| r.id == run.id));
}

#[tokio::test]
async fn a_watch_resumed_after_an_engine_restart_gets_exactly_the_events_it_missed() {
    let mut engine = Engine::start_default().await;
    let first = engine.submit(&gate("before")).await;
    let first_approval = engine.pending_approval(&first.id).await;
    let mut stream = engine.watch(0).await;
    let (s, _) = snapshot(&mut stream).await;

    let status = engine.sigterm().await;
    assert_eq!(status.code(), Some(0), "{status}");
    // The engine ends the stream as it stops.
    let ended = tokio::time::timeout(DEADLINE, async {
        loop {
            match stream.message().await {
                Ok(Some(WatchMessage {
                    kind: Some(Kind::Heartbeat(_)),
                })) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the stream ends when the engine stops");
    assert!(
        !matches!(ended, Ok(Some(_))),
        "no event after the snapshot: {ended:?}"
    );

    engine.restart().await;
    let second = engine.submit(&gate("after")).await;
    engine.pending_approval(&second.id).await;
    engine
        .ci_api()
        .await
        .approvals
        .decide(DecideRequest {
            id: first_approval.id.clone(),
            approve: true,
            reason: "ok".into(),
        })
        .await
        .expect("approve after the restart");
    let missed = engine.all_events(s).await;
    assert_eq!(
        missed.first().map(|e| e.seq),
        Some(s + 1),
        "the seq continues across the restart:\n{}",
        describe_events(&missed)
    );
    let missed_head = missed.last().unwrap().seq;

    let mut stream = engine.watch(s).await;
    let mut replayed = Vec::new();
    while replayed
        .last()
        .is_none_or(|e: &pb::Event| e.seq < missed_head)
    {
        replayed.push(next_event(&mut stream).await);
    }
    let got: Vec<(u64, String)> = replayed.iter().map(|e| (e.seq, e.kind.clone())).collect();
    let want: Vec<(u64, String)> = missed.iter().map(|e| (e.seq, e.kind.clone())).collect();
    assert_eq!(got, want);
}
