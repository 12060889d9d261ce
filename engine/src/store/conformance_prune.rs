//! Retention on both databases: what pruning deletes, a batch at a time,
//! and what it never touches.

use opsdeck_proto::v1 as pb;

use super::conformance::*;
use super::conformance_runs::*;
use super::{Batch, Prune};
use crate::domain::{ApprovalState, Lease, LeaseState, Run, RunState, Worker, WorkerState};

pub(super) fn prune_all(before: i64, batch: u32) -> Prune {
    Prune {
        runs_before: before,
        events_before: before,
        output_before: before,
        workers_before: before,
        batch,
    }
}

#[tokio::test]
async fn prune_deletes_only_what_retention_lets_go_a_batch_at_a_time() {
    for b in backends().await {
        let mut batch = Batch::default();
        // Three old final runs, each with a step, a lease, an approval and
        // output: prunable. A final run holding an active lease, an old
        // live run with a pending approval, a new final run: kept.
        let old: Vec<Run> = (0..3)
            .map(|i| finished(&format!("old{i}"), RunState::Succeeded, 10 + i))
            .collect();
        let kept = [
            finished("held", RunState::Failed, 10),
            run("live", RunState::WaitingApproval),
            finished("new", RunState::Succeeded, 5_000),
        ];
        for r in old.iter().chain(&kept) {
            let one = split(r);
            batch.runs.extend(one.runs);
            batch.steps.extend(one.steps);
            let state = if r.id == "held" {
                LeaseState::Active
            } else {
                LeaseState::Released
            };
            batch.leases.push(Lease {
                id: format!("l-{}", r.id),
                run_id: r.id.clone(),
                ..lease("x", state)
            });
            let mut approval = sample().approvals.remove(0);
            approval.id = format!("a-{}", r.id);
            approval.run_id = r.id.clone();
            if r.id != "live" {
                approval.state = ApprovalState::Approved;
            }
            batch.approvals.push(approval);
            for at in [1, 2] {
                batch.outputs.push(pb::OutputChunk {
                    run_id: r.id.clone(),
                    step_index: 0,
                    attempt: 1,
                    stream: "stdout".into(),
                    data: b"x".to_vec(),
                    at_ms: if r.id == "new" { 5_000 } else { at },
                    truncated: false,
                    offset: at as u64 - 1,
                });
            }
        }
        // Of two runs by turns: each event a row of its own (a batch counts
        // rows; see `events_sharing_rows_are_pruned_whole`).
        for seq in 1..=5 {
            let mut e = event(seq, if seq % 2 == 0 { "old0" } else { "old1" });
            e.at_ms = if seq <= 4 { 1 } else { 5_000 };
            batch.events.push(e);
        }
        let worker = sample().workers.remove(0);
        for (id, state, beat) in [
            ("w-gone", WorkerState::Offline, 1),
            ("w-stopped", WorkerState::Stopped, 2),
            ("w-online", WorkerState::Online, 1),
            ("w-recent", WorkerState::Offline, 5_000),
        ] {
            batch.workers.push(Worker {
                id: id.into(),
                state,
                last_heartbeat_at: beat,
                ..worker.clone()
            });
        }
        b.store.commit(&batch).await.unwrap();
        assert!(b.store.size_bytes().await.unwrap() > 0, "{}", b.name);
        assert_eq!(b.store.first_kept_seq().await.unwrap(), 1, "{}", b.name);

        let p = prune_all(1_000, 2);
        let first = b.store.prune(&p).await.unwrap();
        // The two oldest runs' steps and approvals go, and two of their
        // four output chunks: a run goes once nothing of it is left. Their
        // released leases' rows went when the leases ended.
        assert!((1..=2).contains(&first.runs), "{}", b.name);
        assert_eq!(first.steps, 2, "{}", b.name);
        assert_eq!(first.leases, 0, "{}", b.name);
        assert_eq!(first.approvals, 2, "{}", b.name);
        assert_eq!(first.events, 2, "{}", b.name);
        assert_eq!(first.workers, 2, "{}", b.name);
        // Output: two with the runs, then two by age.
        assert_eq!(first.output, 4, "{}", b.name);
        let mut total = first;
        loop {
            let more = b.store.prune(&p).await.unwrap();
            for n in [
                more.runs,
                more.steps,
                more.leases,
                more.approvals,
                more.events,
                more.workers,
            ] {
                assert!(n <= 2, "{}", b.name);
            }
            assert!(more.output <= 4, "{}", b.name);
            if more.total() == 0 {
                break;
            }
            total += more;
        }
        assert_eq!(total.runs, 3, "{}", b.name);
        assert_eq!(total.steps, 3, "{}", b.name);
        // Only the pruned runs' approvals go: the held run, with its active
        // lease, stays whole.
        assert_eq!(total.leases, 0, "{}", b.name);
        assert_eq!(total.approvals, 3, "{}", b.name);
        assert_eq!(total.events, 4, "{}", b.name);
        // Old runs' (6) and the kept runs' old chunks by age (4).
        assert_eq!(total.output, 10, "{}", b.name);
        assert_eq!(total.workers, 2, "{}", b.name);

        for id in ["old0", "old1", "old2"] {
            assert_eq!(b.store.get_run(id).await.unwrap(), None, "{}", b.name);
        }
        for r in &kept {
            assert_eq!(
                b.store.get_run(&r.id).await.unwrap().as_ref(),
                Some(r),
                "{}",
                b.name
            );
        }
        let loaded = b.store.load(10).await.unwrap();
        assert_eq!(ids(&loaded.runs), ["live", "new", "held"], "{}", b.name);
        assert_eq!(
            ids_of(loaded.leases.iter().map(|l| &l.id)),
            ["l-held"],
            "{}",
            b.name
        );
        assert_eq!(
            ids_of(loaded.approvals.iter().map(|a| &a.id)),
            ["a-live"],
            "{}",
            b.name
        );
        assert_eq!(
            ids_of(loaded.workers.iter().map(|w| &w.id)),
            ["w-online", "w-recent"],
            "{}",
            b.name
        );
        assert_eq!(loaded.seq, 5, "{}", b.name);
        assert_eq!(b.store.first_kept_seq().await.unwrap(), 5, "{}", b.name);
        assert_eq!(
            b.store.output("new", None).await.unwrap().len(),
            2,
            "{}",
            b.name
        );

        // Even the last event, once old, stays: it carries the seq.
        assert_eq!(
            b.store
                .prune(&prune_all(i64::MAX, 100))
                .await
                .unwrap()
                .events,
            0
        );
        assert_eq!(b.store.first_kept_seq().await.unwrap(), 5, "{}", b.name);
    }
}

fn ids_of<'a>(ids: impl Iterator<Item = &'a String>) -> Vec<&'a str> {
    ids.map(String::as_str).collect()
}

#[tokio::test]
async fn first_kept_seq_is_zero_without_events() {
    for b in backends().await {
        assert_eq!(b.store.first_kept_seq().await.unwrap(), 0, "{}", b.name);
        assert!(b.store.size_bytes().await.unwrap() > 0, "{}", b.name);
    }
}

#[tokio::test]
async fn an_ended_leases_row_goes_when_the_lease_ends() {
    for b in backends().await {
        let done = finished("r-done", RunState::Succeeded, 10);
        let held = Lease {
            run_id: "r-done".into(),
            ..lease("l-held", LeaseState::Active)
        };
        let mut first = split(&done);
        first.leases = vec![
            held.clone(),
            // Granted and ended in one batch: never written.
            Lease {
                run_id: "r-done".into(),
                ..lease("l-brief", LeaseState::Active)
            },
            Lease {
                run_id: "r-done".into(),
                ..lease("l-brief", LeaseState::Expired)
            },
        ];
        b.store.commit(&first).await.unwrap();
        let loaded = b.store.load(100).await.unwrap();
        assert_eq!(loaded.leases, std::slice::from_ref(&held), "{}", b.name);
        // A final run holding a lease is not pruned.
        let p = prune_all(1_000, 100);
        assert_eq!(b.store.prune(&p).await.unwrap().runs, 0, "{}", b.name);

        let released = Batch {
            leases: vec![Lease {
                state: LeaseState::Released,
                ..held
            }],
            ..Default::default()
        };
        b.store.commit(&released).await.unwrap();
        assert!(
            b.store.load(100).await.unwrap().leases.is_empty(),
            "{}",
            b.name
        );
        // Nothing of the lease is left for retention: its run goes alone.
        let pruned = b.store.prune(&p).await.unwrap();
        assert_eq!((pruned.runs, pruned.leases), (1, 0), "{}", b.name);
    }
}
