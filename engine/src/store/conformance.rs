//! One conformance suite for every store, written once against the trait:
//! on SQLite always, and on PostgreSQL when `OPSDECK_TEST_POSTGRES` holds a
//! server URL (each test gets a database of its own).

use std::collections::BTreeMap;
use std::sync::Arc;

use opsdeck_proto::v1 as pb;

use super::{Batch, Leadership, Store, open};
use crate::domain::spec::{Limits, parse};
use crate::domain::{
    Approval, ApprovalSpec, ApprovalState, Lease, LeaseState, OnTimeout, Quarantine, Queue, Run,
    RunState, Step, Worker, WorkerState,
};

/// A store under test, and what to clean up after it.
struct Backend {
    name: &'static str,
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

async fn backends() -> Vec<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let mut out = vec![Backend {
        name: "sqlite",
        store: open(&url).await.unwrap(),
        _dir: Some(dir),
    }];
    if let Ok(server) = std::env::var("OPSDECK_TEST_POSTGRES") {
        out.push(Backend {
            name: "postgres",
            store: open(&fresh_pg_database(&server).await).await.unwrap(),
            _dir: None,
        });
    }
    out
}

/// Creates an empty database on the server and returns its URL.
async fn fresh_pg_database(server: &str) -> String {
    use sqlx::Connection;
    let name = format!("opsdeck_t_{}", ulid::Ulid::new().to_string().to_lowercase());
    let mut admin = sqlx::PgConnection::connect(server).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let (base, _) = server.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

fn run(id: &str, state: RunState) -> Run {
    let spec = parse(
        "name = \"r\"\n[[step]]\nqueue = \"q\"\nrun = \"true\"\n",
        &Limits::default(),
    )
    .unwrap();
    Run {
        id: id.into(),
        name: "r".into(),
        labels: BTreeMap::from([("team".into(), "sre".into())]),
        submitted_by: "alice".into(),
        state,
        created_at: 1,
        updated_at: 2,
        finished_at: None,
        current_step: 0,
        steps: spec.steps.into_iter().map(|s| Step::new(0, s)).collect(),
        message: String::new(),
        idempotency_key: Some(format!("key-{id}")),
    }
}

fn lease(id: &str, state: LeaseState) -> Lease {
    Lease {
        id: id.into(),
        run_id: "r1".into(),
        step_index: 0,
        worker_id: "w".into(),
        attempt: 1,
        fencing_token: 7,
        state,
        granted_at: 10,
        expires_at: 20,
        ended_at: None,
        queue: "q".into(),
        stuck: false,
    }
}

fn event(seq: u64, run_id: &str) -> pb::Event {
    pb::Event {
        seq,
        at_ms: seq as i64,
        kind: "run.submitted".into(),
        actor: "alice".into(),
        run_id: run_id.into(),
        ..Default::default()
    }
}

fn sample() -> Batch {
    Batch {
        runs: vec![run("r1", RunState::Running)],
        workers: vec![Worker {
            id: "w".into(),
            state: WorkerState::Online,
            queues: vec!["q".into()],
            slots: 2,
            labels: BTreeMap::new(),
            version: "1".into(),
            host: "h".into(),
            pid: 9,
            generation: 3,
            identity: "root".into(),
            registered_at: 1,
            last_heartbeat_at: 2,
            drain_requested: true,
            self_draining: false,
            recycle_requested: false,
        }],
        leases: vec![
            lease("l-live", LeaseState::Active),
            lease("l-done", LeaseState::Released),
        ],
        approvals: vec![Approval {
            id: "a".into(),
            run_id: "r1".into(),
            step_index: 0,
            state: ApprovalState::Pending,
            submitted_by: "alice".into(),
            spec: ApprovalSpec {
                timeout_ms: Some(5),
                on_timeout: OnTimeout::Fail,
                allow_self_approval: false,
                required: 2,
                role: Some(crate::domain::Role::Approver),
                group: Some("dba".into()),
            },
            decisions: vec![],
            requested_at: 1,
            deadline_at: Some(6),
            decided_at: None,
        }],
        queues: vec![Queue {
            name: "q".into(),
            paused: true,
        }],
        events: vec![event(1, "r1"), event(2, ""), event(3, "r1")],
        outputs: vec![
            pb::OutputChunk {
                run_id: "r1".into(),
                step_index: 0,
                attempt: 1,
                stream: "stdout".into(),
                data: b"one".to_vec(),
                at_ms: 1,
                truncated: false,
            },
            pb::OutputChunk {
                run_id: "r1".into(),
                step_index: 1,
                attempt: 1,
                stream: "stderr".into(),
                data: b"two".to_vec(),
                at_ms: 2,
                truncated: true,
            },
        ],
        quarantines: vec![
            ("r".into(), Some(quarantine("r"))),
            ("s".into(), Some(quarantine("s"))),
        ],
    }
}

fn quarantine(name: &str) -> Quarantine {
    Quarantine {
        name: name.into(),
        since: 5,
        stuck_count: 3,
        message: format!("{name} got stuck"),
    }
}

#[tokio::test]
async fn a_quarantine_loads_back_until_it_is_cleared() {
    for b in backends().await {
        b.store.commit(&sample()).await.unwrap();
        assert_eq!(
            b.store.load().await.unwrap().quarantines,
            vec![quarantine("r"), quarantine("s")],
            "{}",
            b.name
        );
        let clear = Batch {
            quarantines: vec![("r".into(), None)],
            ..Default::default()
        };
        b.store.commit(&clear).await.unwrap();
        assert_eq!(
            b.store.load().await.unwrap().quarantines,
            vec![quarantine("s")],
            "{}",
            b.name
        );
    }
}

#[tokio::test]
async fn a_committed_batch_loads_back_whole_with_only_live_leases() {
    for b in backends().await {
        let batch = sample();
        b.store.commit(&batch).await.unwrap();
        let loaded = b.store.load().await.unwrap();
        assert_eq!(loaded.runs, batch.runs, "{}", b.name);
        assert_eq!(loaded.workers, batch.workers, "{}", b.name);
        assert_eq!(loaded.approvals, batch.approvals, "{}", b.name);
        assert_eq!(loaded.queues, batch.queues, "{}", b.name);
        assert_eq!(
            loaded.leases,
            vec![lease("l-live", LeaseState::Active)],
            "{}",
            b.name
        );
        assert_eq!(loaded.seq, 3, "{}", b.name);
    }
}

#[tokio::test]
async fn a_later_commit_replaces_an_object() {
    for b in backends().await {
        b.store.commit(&sample()).await.unwrap();
        let later = Batch {
            runs: vec![run("r1", RunState::Succeeded)],
            leases: vec![lease("l-live", LeaseState::Expired)],
            queues: vec![Queue {
                name: "q".into(),
                paused: false,
            }],
            ..Default::default()
        };
        b.store.commit(&later).await.unwrap();
        let loaded = b.store.load().await.unwrap();
        assert_eq!(loaded.runs[0].state, RunState::Succeeded, "{}", b.name);
        assert!(loaded.leases.is_empty(), "{}", b.name);
        assert!(!loaded.queues[0].paused, "{}", b.name);
    }
}

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
        let e = b.store.events_after(0, 1, None).await.unwrap().remove(0);
        assert_eq!(e, event(1, "r1"), "{}", b.name);
    }
}

#[tokio::test]
async fn output_reads_back_in_order_per_run_and_step() {
    for b in backends().await {
        let batch = sample();
        b.store.commit(&batch).await.unwrap();
        assert_eq!(
            b.store.output("r1", None).await.unwrap(),
            batch.outputs,
            "{}",
            b.name
        );
        assert_eq!(
            b.store.output("r1", Some(1)).await.unwrap(),
            batch.outputs[1..],
            "{}",
            b.name
        );
        assert!(
            b.store.output("other", None).await.unwrap().is_empty(),
            "{}",
            b.name
        );
    }
}

#[tokio::test]
async fn a_failed_commit_writes_nothing_of_its_batch() {
    for b in backends().await {
        b.store.commit(&sample()).await.unwrap();
        // Seq 3 exists: the whole batch, its run included, must be refused.
        let clash = Batch {
            runs: vec![run("r2", RunState::Queued)],
            events: vec![event(4, "r2"), event(3, "r2")],
            ..Default::default()
        };
        assert!(b.store.commit(&clash).await.is_err(), "{}", b.name);
        let loaded = b.store.load().await.unwrap();
        assert_eq!(loaded.runs.len(), 1, "{}", b.name);
        assert_eq!(loaded.seq, 3, "{}", b.name);
    }
}

#[tokio::test]
async fn a_single_engine_store_always_leads() {
    for b in backends().await.into_iter().filter(|b| b.name == "sqlite") {
        let ttl = std::time::Duration::from_secs(1);
        let lead = b.store.lead("a", "http://a", ttl, None).await.unwrap();
        assert_eq!(lead, Leadership::Leader { epoch: 1 });
        b.store.commit(&sample()).await.unwrap();
    }
}

/// Two engines on one PostgreSQL database: one leads at a time, a lapsed
/// lead is taken over with a higher epoch, and the deposed leader's next
/// commit is refused whole.
#[tokio::test]
async fn a_deposed_leader_cannot_commit() {
    let Ok(server) = std::env::var("OPSDECK_TEST_POSTGRES") else {
        eprintln!("OPSDECK_TEST_POSTGRES is not set: no PostgreSQL to elect a leader on");
        return;
    };
    let url = fresh_pg_database(&server).await;
    let (a, b) = (open(&url).await.unwrap(), open(&url).await.unwrap());
    let ttl = std::time::Duration::from_millis(300);
    assert_eq!(
        a.lead("a", "http://a", ttl, None).await.unwrap(),
        Leadership::Leader { epoch: 1 }
    );
    assert_eq!(
        b.lead("b", "http://b", ttl, None).await.unwrap(),
        Leadership::Follower {
            epoch: 1,
            address: Some("http://a".into())
        }
    );
    assert_eq!(
        a.lead("a", "http://a", ttl, Some(1)).await.unwrap(),
        Leadership::Leader { epoch: 1 }
    );
    a.commit(&sample()).await.unwrap();

    // a stops renewing; once its lead lapses b takes over.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match b.lead("b", "http://b", ttl, None).await.unwrap() {
            Leadership::Leader { epoch } => {
                assert_eq!(epoch, 2);
                break;
            }
            Leadership::Follower { .. } => {
                assert!(std::time::Instant::now() < deadline, "b never took over");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
    let late = Batch {
        runs: vec![run("r2", RunState::Queued)],
        events: vec![event(4, "r2")],
        ..Default::default()
    };
    match a.commit(&late).await {
        Err(super::StoreError::Fenced { mine: 1, now: 2 }) => {}
        other => panic!("a deposed leader's commit must be fenced, got {other:?}"),
    }
    assert_eq!(b.load().await.unwrap().runs.len(), 1);
    assert_eq!(
        a.lead("a", "http://a", ttl, Some(1)).await.unwrap(),
        Leadership::Follower {
            epoch: 2,
            address: Some("http://b".into())
        }
    );
    b.commit(&late).await.unwrap();

    // Resigning hands the lead over at once.
    b.resign(2).await.unwrap();
    assert_eq!(
        a.lead("a", "http://a", ttl, None).await.unwrap(),
        Leadership::Leader { epoch: 3 }
    );
}
