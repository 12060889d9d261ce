//! One conformance suite for every store, written once against the trait:
//! on SQLite always, and on PostgreSQL when `OPSDECK_TEST_POSTGRES` holds a
//! server URL (each test gets a database of its own).

use std::collections::BTreeMap;
use std::sync::Arc;

use opsdeck_proto::v1 as pb;

use super::{Batch, Leadership, Store, open};
use crate::domain::schedule::{MissedPolicy, OverlapPolicy, Schedule};
use crate::domain::spec::{Limits, parse};
use crate::domain::{
    Approval, ApprovalSpec, ApprovalState, Lease, LeaseState, OnTimeout, Quarantine, Queue, Run,
    RunState, Step, Worker, WorkerState,
};

/// A store under test, and what to clean up after it.
pub(crate) struct Backend {
    pub(crate) name: &'static str,
    pub(crate) store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
    /// Last: the store lets go of it first.
    _db: Option<PgDatabase>,
}

pub(crate) async fn backends() -> Vec<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let mut out = vec![Backend {
        name: "sqlite",
        store: open(&url).await.unwrap(),
        _dir: Some(dir),
        _db: None,
    }];
    if let Ok(server) = std::env::var("OPSDECK_TEST_POSTGRES") {
        let db = fresh_pg_database(&server).await;
        out.push(Backend {
            name: "postgres",
            store: open(&db.url).await.unwrap(),
            _dir: None,
            _db: Some(db),
        });
    }
    out
}

/// A database of a test's own on the server; dropped from it when this
/// drops, also when the test fails.
pub(super) struct PgDatabase {
    pub(super) url: String,
    server: String,
    name: String,
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // A drop cannot await and may run inside the test's runtime, where
        // another cannot start: a thread with a runtime of its own.
        let server = self.server.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let dropped = std::thread::spawn(move || -> Result<(), String> {
            use sqlx::Connection;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let mut admin = sqlx::PgConnection::connect(&server)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&mut admin)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(())
            })
        })
        .join()
        .unwrap_or_else(|_| Err("the thread dropping it panicked".to_owned()));
        if let Err(why) = dropped {
            // No panic in a drop: it may run while a failed test unwinds.
            eprintln!("cannot drop the test database {}: {why}", self.name);
        }
    }
}

/// Creates an empty database on the server.
pub(super) async fn fresh_pg_database(server: &str) -> PgDatabase {
    use sqlx::Connection;
    let name = format!("opsdeck_t_{}", ulid::Ulid::new().to_string().to_lowercase());
    let mut admin = sqlx::PgConnection::connect(server).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let (base, _) = server.rsplit_once('/').unwrap();
    PgDatabase {
        url: format!("{base}/{name}"),
        server: server.to_owned(),
        name,
    }
}

pub(crate) fn run(id: &str, state: RunState) -> Run {
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
        retried_by: vec!["bob".into()],
        rejected_by: None,
        params: [("version".to_owned(), format!("v-{id}"))].into(),
        template: Some(format!("name = \"{id}\"")),
        retry_of: Some("first".into()),
        timeout_ms: None,
        deadline_at: None,
        concurrency: Some(crate::domain::concurrency::Concurrency {
            key: format!("deploy-{id}"),
            limit: 2,
        }),
        holds_key: state == RunState::Running,
    }
}

pub(super) fn lease(id: &str, state: LeaseState) -> Lease {
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
        waited_ms: None,
    }
}

pub(super) fn event(seq: u64, run_id: &str) -> pb::Event {
    pb::Event {
        seq,
        at_ms: seq as i64,
        kind: "run.submitted".into(),
        actor: "alice".into(),
        run_id: run_id.into(),
        ..Default::default()
    }
}

pub(super) fn sample() -> Batch {
    Batch {
        forgotten_workers: Vec::new(),
        runs: vec![run("r1", RunState::Running)],
        steps: Vec::new(),
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
            breaker: None,
            offline_long_noted: false,
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
            retried_by: vec!["bob".into()],
            decisions: vec![],
            requested_at: 1,
            deadline_at: Some(6),
            decided_at: None,
            overdue_noted: false,
        }],
        queues: vec![Queue {
            name: "q".into(),
            paused: true,
            max_running: 4,
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
                offset: 0,
            },
            pb::OutputChunk {
                run_id: "r1".into(),
                step_index: 1,
                attempt: 1,
                stream: "stderr".into(),
                data: b"two".to_vec(),
                at_ms: 2,
                truncated: true,
                offset: 0,
            },
        ],
        quarantines: vec![
            ("r".into(), Some(quarantine("r"))),
            ("s".into(), Some(quarantine("s"))),
        ],
        notifications: vec![],
        given_up: vec![],
        schedules: vec![
            ("nightly".into(), Some(schedule("nightly"))),
            ("hourly".into(), Some(schedule("hourly"))),
        ],
    }
}

fn schedule(name: &str) -> Schedule {
    Schedule {
        name: name.into(),
        spec: "name = \"r\"\n[[step]]\nqueue = \"q\"\nrun = \"echo ${params.v}\"\n".into(),
        params: [("v".to_owned(), "1".to_owned())].into(),
        run_name: "r".into(),
        cron: "0 3 * * *".into(),
        timezone: "Europe/Berlin".into(),
        missed: MissedPolicy::RunOnce,
        overlap: OverlapPolicy::CancelPrevious,
        paused: false,
        next_fire_at: Some(7_000),
        last_fire_at: None,
        last_run_id: None,
        created_at: 1,
        created_by: "alice".into(),
        updated_at: 2,
        updated_by: "bob".into(),
    }
}

#[tokio::test]
async fn a_schedule_loads_back_with_its_fires_until_it_is_removed() {
    for b in backends().await {
        b.store.commit(&sample()).await.unwrap();
        assert_eq!(
            b.store.load(100).await.unwrap().schedules,
            vec![schedule("hourly"), schedule("nightly")],
            "{}",
            b.name
        );
        // A fire: the run and the schedule's new times in one batch; a
        // later change of the same schedule in the batch wins.
        let mut fired = schedule("nightly");
        fired.last_fire_at = Some(7_000);
        fired.next_fire_at = Some(9_000);
        fired.last_run_id = Some("r9".into());
        let mut paused = schedule("hourly");
        paused.paused = true;
        paused.next_fire_at = None;
        let fire = Batch {
            runs: vec![run("r9", RunState::Queued)],
            schedules: vec![
                ("nightly".into(), Some(schedule("nightly"))),
                ("nightly".into(), Some(fired.clone())),
                ("hourly".into(), Some(paused.clone())),
            ],
            ..Default::default()
        };
        b.store.commit(&fire).await.unwrap();
        let loaded = b.store.load(100).await.unwrap();
        assert_eq!(loaded.schedules, vec![paused, fired.clone()], "{}", b.name);
        assert!(loaded.runs.iter().any(|r| r.id == "r9"), "{}", b.name);
        let remove = Batch {
            schedules: vec![("hourly".into(), None)],
            ..Default::default()
        };
        b.store.commit(&remove).await.unwrap();
        assert_eq!(
            b.store.load(100).await.unwrap().schedules,
            vec![fired],
            "{}",
            b.name
        );
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
            b.store.load(100).await.unwrap().quarantines,
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
            b.store.load(100).await.unwrap().quarantines,
            vec![quarantine("s")],
            "{}",
            b.name
        );
    }
}

#[tokio::test]
async fn a_forgotten_worker_is_gone_from_the_store() {
    for b in backends().await {
        b.store.commit(&sample()).await.unwrap();
        assert_eq!(
            b.store.load(100).await.unwrap().workers.len(),
            1,
            "{}",
            b.name
        );
        let forget = Batch {
            forgotten_workers: vec!["w".into()],
            ..Default::default()
        };
        b.store.commit(&forget).await.unwrap();
        assert!(
            b.store.load(100).await.unwrap().workers.is_empty(),
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
        let loaded = b.store.load(100).await.unwrap();
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
                max_running: 0,
            }],
            ..Default::default()
        };
        b.store.commit(&later).await.unwrap();
        let loaded = b.store.load(100).await.unwrap();
        assert_eq!(loaded.runs[0].state, RunState::Succeeded, "{}", b.name);
        assert!(loaded.leases.is_empty(), "{}", b.name);
        assert!(!loaded.queues[0].paused, "{}", b.name);
        assert_eq!(loaded.queues[0].max_running, 0, "{}", b.name);
    }
}

fn chunk(run: &str, step: u32, attempt: u32, offset: u64, data: &str) -> pb::OutputChunk {
    pb::OutputChunk {
        run_id: run.into(),
        step_index: step,
        attempt,
        stream: if offset.is_multiple_of(2) {
            "stdout"
        } else {
            "stderr"
        }
        .into(),
        data: data.as_bytes().to_vec(),
        at_ms: 1,
        truncated: false,
        offset,
    }
}

#[tokio::test]
async fn output_is_read_from_a_position_by_step_attempt_and_offset() {
    use super::{OutputPos, OutputQuery};
    let pos = |step_index, attempt, offset| OutputPos {
        step_index,
        attempt,
        offset,
    };
    for b in backends().await {
        let name = b.name;
        let outputs = vec![
            chunk("f", 0, 1, 0, "ab"),
            chunk("g", 0, 1, 0, "other run"),
            chunk("f", 0, 1, 2, "cde"),
            chunk("f", 0, 2, 0, "x"),
            chunk("f", 1, 1, 0, "yz"),
        ];
        let batch = Batch {
            outputs: outputs.clone(),
            leases: vec![Lease {
                run_id: "f".into(),
                attempt: 2,
                ..lease("lf", LeaseState::Active)
            }],
            ..Default::default()
        };
        b.store.commit(&batch).await.unwrap();
        let read = |step, attempt, from, limit| {
            let store = b.store.clone();
            async move {
                let q = OutputQuery {
                    run_id: "f".into(),
                    step,
                    attempt,
                    from,
                };
                store.output_from(&q, limit).await.unwrap()
            }
        };
        let f: Vec<_> = [0, 2, 3, 4].map(|i| outputs[i].clone()).into();
        assert_eq!(read(None, None, pos(0, 0, 0), 100).await, f, "{name}");
        assert_eq!(read(None, None, pos(0, 0, 0), 1).await, f[..1], "{name}");
        // A position inside a chunk cuts it; one at its end skips it.
        let mut cut = f[1].clone();
        cut.data = b"de".to_vec();
        cut.offset = 3;
        assert_eq!(
            read(None, None, pos(0, 1, 3), 100).await,
            [cut, f[2].clone(), f[3].clone()],
            "{name}"
        );
        assert_eq!(read(None, None, pos(0, 1, 5), 100).await, f[2..], "{name}");
        // Only a step's, only an attempt's.
        assert_eq!(
            read(Some(0), None, pos(0, 2, 0), 100).await,
            f[2..3],
            "{name}"
        );
        assert_eq!(
            read(Some(0), Some(1), pos(0, 0, 0), 100).await,
            f[..2],
            "{name}"
        );
        assert!(
            read(Some(1), None, pos(1, 1, 2), 100).await.is_empty(),
            "{name}"
        );
        // The live lease's attempt's output ends where its last chunk does.
        let loaded = b.store.load(10).await.unwrap();
        assert_eq!(
            loaded.output_ends,
            [("lf".to_string(), 1u64)].into(),
            "{name}"
        );
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
        let loaded = b.store.load(100).await.unwrap();
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
    let db = fresh_pg_database(&server).await;
    let (a, b) = (open(&db.url).await.unwrap(), open(&db.url).await.unwrap());
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
    assert_eq!(b.load(100).await.unwrap().runs.len(), 1);
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
