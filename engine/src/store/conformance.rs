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
pub(super) struct Backend {
    pub(super) name: &'static str,
    pub(super) store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
    /// Last: the store lets go of it first.
    _db: Option<PgDatabase>,
}

pub(super) async fn backends() -> Vec<Backend> {
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

pub(super) fn run(id: &str, state: RunState) -> Run {
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

// ---- History on disk: runs and steps as rows, reads, pruning ----

use super::{Prune, RunFilter};
use crate::domain::StepState;

/// A run in the form the core commits it: the header in `runs`, every
/// step in `steps`.
fn split(r: &Run) -> Batch {
    Batch {
        runs: vec![r.header()],
        steps: r.steps.iter().map(|s| (r.id.clone(), s.clone())).collect(),
        ..Default::default()
    }
}

pub(super) fn two_step_run(id: &str) -> Run {
    let spec = parse(
        "name = \"deploy\"\n[[step]]\nqueue = \"q\"\nrun = \"true\"\n[[step]]\nqueue = \"q\"\nrun = \"false\"\n",
        &Limits::default(),
    )
    .unwrap();
    Run {
        name: "deploy".into(),
        steps: spec
            .steps
            .into_iter()
            .enumerate()
            .map(|(i, s)| Step::new(i as u32, s))
            .collect(),
        ..run(id, RunState::Queued)
    }
}

pub(super) fn finished(id: &str, state: RunState, at: i64) -> Run {
    Run {
        finished_at: Some(at),
        ..run(id, state)
    }
}

pub(super) fn ids(runs: &[Run]) -> Vec<&str> {
    runs.iter().map(|r| r.id.as_str()).collect()
}

#[tokio::test]
async fn a_new_run_committed_as_header_and_steps_reads_back_whole() {
    for b in backends().await {
        let r = two_step_run("r1");
        b.store.commit(&split(&r)).await.unwrap();
        assert_eq!(
            b.store.get_run("r1").await.unwrap(),
            Some(r.clone()),
            "{}",
            b.name
        );
        assert_eq!(b.store.get_run("nope").await.unwrap(), None, "{}", b.name);
        assert_eq!(
            b.store.load(10).await.unwrap().runs,
            vec![r.clone()],
            "{}",
            b.name
        );
        let listed = b.store.list_runs(&RunFilter::default(), 10).await.unwrap();
        assert_eq!(listed, vec![r], "{}", b.name);
    }
}

#[tokio::test]
async fn a_runs_spec_text_is_written_with_it_and_never_again() {
    for b in backends().await {
        let made = run("r1", RunState::Running);
        assert!(made.template.is_some());
        b.store
            .commit(&Batch {
                runs: vec![made.clone()],
                ..Default::default()
            })
            .await
            .unwrap();
        // A later header that does not carry the text (or carries another)
        // leaves the first one.
        for template in [None, Some("name = \"other\"".to_owned())] {
            let later = Run {
                state: RunState::Succeeded,
                template,
                ..made.clone()
            };
            b.store
                .commit(&Batch {
                    runs: vec![later],
                    ..Default::default()
                })
                .await
                .unwrap();
            let read = b.store.get_run("r1").await.unwrap().unwrap();
            assert_eq!(read.state, RunState::Succeeded, "{}", b.name);
            assert_eq!(read.template, made.template, "{}", b.name);
        }
    }
}

#[tokio::test]
async fn a_step_change_rewrites_only_that_step() {
    for b in backends().await {
        let mut r = two_step_run("r1");
        b.store.commit(&split(&r)).await.unwrap();
        let mut second = r.steps[1].clone();
        second.state = StepState::Running;
        second.attempt = 1;
        second.worker_id = Some("w".into());
        r.steps[1] = second.clone();
        let change = Batch {
            steps: vec![("r1".into(), second)],
            ..Default::default()
        };
        b.store.commit(&change).await.unwrap();
        assert_eq!(
            b.store.get_run("r1").await.unwrap(),
            Some(r.clone()),
            "{}",
            b.name
        );

        // A header change leaves the steps as they are.
        r.state = RunState::Running;
        r.message = "going".into();
        let header = Batch {
            runs: vec![r.header()],
            ..Default::default()
        };
        b.store.commit(&header).await.unwrap();
        assert_eq!(b.store.get_run("r1").await.unwrap(), Some(r), "{}", b.name);
    }
}

#[tokio::test]
async fn load_returns_the_live_runs_and_at_most_recent_finished_ones_newest_first() {
    for b in backends().await {
        let mut batch = Batch::default();
        for r in [
            run("a-live", RunState::Queued),
            run("b-live", RunState::WaitingApproval),
            finished("c-old", RunState::Succeeded, 100),
            finished("d-newest", RunState::Failed, 300),
            finished("e-mid", RunState::Cancelled, 200),
        ] {
            let one = split(&r);
            batch.runs.extend(one.runs);
            batch.steps.extend(one.steps);
        }
        b.store.commit(&batch).await.unwrap();
        let loaded = b.store.load(2).await.unwrap();
        assert_eq!(
            ids(&loaded.runs),
            ["a-live", "b-live", "d-newest", "e-mid"],
            "{}",
            b.name
        );
        assert!(loaded.runs.iter().all(|r| r.steps.len() == 1), "{}", b.name);
        assert_eq!(
            ids(&b.store.load(0).await.unwrap().runs),
            ["a-live", "b-live"],
            "{}",
            b.name
        );
    }
}

#[tokio::test]
async fn a_run_is_found_by_its_idempotency_key() {
    for b in backends().await {
        let r = two_step_run("r1");
        b.store.commit(&split(&r)).await.unwrap();
        assert_eq!(
            b.store
                .run_by_idempotency_key("alice", "key-r1")
                .await
                .unwrap(),
            Some(r.clone()),
            "{}",
            b.name
        );
        assert_eq!(
            b.store
                .run_by_idempotency_key("alice", "key-r2")
                .await
                .unwrap(),
            None,
            "{}",
            b.name
        );
        // Keys are each submitter's own: bob's key-r1 is another run.
        assert_eq!(
            b.store
                .run_by_idempotency_key("bob", "key-r1")
                .await
                .unwrap(),
            None,
            "{}",
            b.name
        );
        let mut bobs = two_step_run("r9");
        bobs.submitted_by = "bob".into();
        bobs.idempotency_key = Some("key-r1".into());
        b.store.commit(&split(&bobs)).await.unwrap();
        assert_eq!(
            b.store
                .run_by_idempotency_key("bob", "key-r1")
                .await
                .unwrap()
                .map(|r| r.id),
            Some("r9".to_owned()),
            "{}",
            b.name
        );
    }
}

/// Runs with every filtered field varied: (id, name, state, labels,
/// submitted_by, created_at).
fn catalogue() -> Vec<Run> {
    type Row = (
        &'static str,
        &'static str,
        RunState,
        &'static [(&'static str, &'static str)],
        &'static str,
        i64,
    );
    let rows: [Row; 8] = [
        (
            "r01",
            "deploy-web",
            RunState::Succeeded,
            &[("team", "sre"), ("env", "prod")],
            "alice",
            10,
        ),
        (
            "r02",
            "deploy-db",
            RunState::Failed,
            &[("team", "dba")],
            "bob",
            20,
        ),
        (
            "r03",
            "deploy_x",
            RunState::Running,
            &[("team", "sre")],
            "alice",
            30,
        ),
        ("r04", "deployXx", RunState::Queued, &[], "carol", 40),
        (
            "r05",
            "Deploy-web",
            RunState::Succeeded,
            &[("we\"ird", "v'al")],
            "alice",
            50,
        ),
        (
            "r06",
            "backup",
            RunState::Cancelled,
            &[("team", "sre"), ("env", "dev")],
            "bob",
            60,
        ),
        (
            "r07",
            "deploy-web",
            RunState::Running,
            &[("env", "prod")],
            "alice",
            70,
        ),
        (
            "r08",
            "deploy%",
            RunState::Succeeded,
            &[("team", "sre"), ("env", "prod")],
            "dave",
            80,
        ),
    ];
    rows.into_iter()
        .map(|(id, name, state, labels, who, at)| Run {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            submitted_by: who.into(),
            created_at: at,
            finished_at: state.is_final().then_some(at + 1),
            idempotency_key: None,
            ..run(id, state)
        })
        .collect()
}

async fn commit_all(store: &Arc<dyn Store>, runs: &[Run]) {
    let mut batch = Batch::default();
    for r in runs {
        let one = split(r);
        batch.runs.extend(one.runs);
        batch.steps.extend(one.steps);
    }
    store.commit(&batch).await.unwrap();
}

#[tokio::test]
async fn list_runs_applies_every_filter_newest_first_as_run_filter_matches() {
    for b in backends().await {
        commit_all(&b.store, &catalogue()).await;
        let list = |f: RunFilter| {
            let store = b.store.clone();
            async move {
                let runs = store.list_runs(&f, 100).await.unwrap();
                let ids = runs.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
                // The engine matches the runs it holds in memory by the
                // same rules (bulk cancel and retry).
                let mut held: Vec<String> = catalogue()
                    .iter()
                    .filter(|r| f.matches(r))
                    .map(|r| r.id.clone())
                    .collect();
                held.sort_by(|a, b| b.cmp(a));
                assert_eq!(held, ids, "in memory vs stored: {f:?}");
                ids
            }
        };
        let all = list(RunFilter::default()).await;
        assert_eq!(
            all,
            ["r08", "r07", "r06", "r05", "r04", "r03", "r02", "r01"],
            "{}",
            b.name
        );
        let f = RunFilter {
            states: vec![RunState::Running, RunState::Failed],
            ..Default::default()
        };
        assert_eq!(list(f).await, ["r07", "r03", "r02"], "{}", b.name);
        let name = |n: &str| RunFilter {
            name: Some(n.into()),
            ..Default::default()
        };
        assert_eq!(list(name("deploy-web")).await, ["r07", "r01"], "{}", b.name);
        assert_eq!(
            list(name("deploy-*")).await,
            ["r07", "r02", "r01"],
            "{}",
            b.name
        );
        // Wildcards of LIKE are plain characters, and case counts.
        assert_eq!(list(name("deploy_*")).await, ["r03"], "{}", b.name);
        assert_eq!(list(name("deploy%*")).await, ["r08"], "{}", b.name);
        assert_eq!(list(name("deploy%")).await, ["r08"], "{}", b.name);
        assert_eq!(list(name("Deploy*")).await, ["r05"], "{}", b.name);
        assert_eq!(list(name("*")).await.len(), 8, "{}", b.name);
        let labels = |l: &[(&str, &str)]| RunFilter {
            labels: l
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        assert_eq!(
            list(labels(&[("team", "sre")])).await,
            ["r08", "r06", "r03", "r01"],
            "{}",
            b.name
        );
        assert_eq!(
            list(labels(&[("team", "sre"), ("env", "prod")])).await,
            ["r08", "r01"],
            "{}",
            b.name
        );
        assert_eq!(
            list(labels(&[("we\"ird", "v'al")])).await,
            ["r05"],
            "{}",
            b.name
        );
        assert!(
            list(labels(&[("team", "nobody")])).await.is_empty(),
            "{}",
            b.name
        );
        let f = RunFilter {
            submitted_by: Some("bob".into()),
            ..Default::default()
        };
        assert_eq!(list(f).await, ["r06", "r02"], "{}", b.name);
        let f = RunFilter {
            since: Some(30),
            until: Some(60),
            ..Default::default()
        };
        assert_eq!(list(f).await, ["r05", "r04", "r03"], "{}", b.name);
        let f = RunFilter {
            before_id: Some("r03".into()),
            ..Default::default()
        };
        assert_eq!(list(f).await, ["r02", "r01"], "{}", b.name);
        let f = RunFilter {
            states: vec![RunState::Succeeded],
            name: Some("deploy*".into()),
            labels: [("env".to_string(), "prod".to_string())].into(),
            submitted_by: Some("alice".into()),
            since: Some(1),
            until: Some(100),
            before_id: Some("r09".into()),
        };
        assert_eq!(list(f).await, ["r01"], "{}", b.name);
    }
}

#[tokio::test]
async fn paging_with_before_id_returns_every_matching_run_exactly_once() {
    for b in backends().await {
        let runs: Vec<Run> = (0..23)
            .map(|i| Run {
                labels: [(
                    "team".to_string(),
                    if i % 3 == 0 { "dba" } else { "sre" }.to_string(),
                )]
                .into(),
                ..two_step_run(&format!("r{i:02}"))
            })
            .collect();
        commit_all(&b.store, &runs).await;
        let mut filter = RunFilter {
            labels: [("team".to_string(), "sre".to_string())].into(),
            ..Default::default()
        };
        let mut seen = Vec::new();
        loop {
            let page = b.store.list_runs(&filter, 4).await.unwrap();
            assert!(page.len() <= 4, "{}", b.name);
            assert!(page.iter().all(|r| r.steps.len() == 2), "{}", b.name);
            let Some(last) = page.last() else { break };
            filter.before_id = Some(last.id.clone());
            seen.extend(page.into_iter().map(|r| r.id));
        }
        let want: Vec<String> = runs
            .iter()
            .rev()
            .filter(|r| r.labels["team"] == "sre")
            .map(|r| r.id.clone())
            .collect();
        assert_eq!(seen, want, "{}", b.name);
    }
}

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
        // The two oldest runs' steps, leases and approvals go, and two of
        // their four output chunks: a run goes once nothing of it is left.
        assert!((1..=2).contains(&first.runs), "{}", b.name);
        assert_eq!(first.steps, 2, "{}", b.name);
        assert_eq!(first.leases, 2, "{}", b.name);
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
        // Only the pruned runs' leases and approvals go: the held run, with
        // its active lease, stays whole.
        assert_eq!(total.leases, 3, "{}", b.name);
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
async fn a_large_batch_commits_in_few_statements_and_reads_back() {
    for b in backends().await {
        // 20,000 one-step runs: more rows than one statement may bind.
        let runs: Vec<Run> = (0..20_000)
            .map(|i| run(&format!("r{i:05}"), RunState::Queued))
            .collect();
        commit_all(&b.store, &runs).await;
        let loaded = b.store.load(0).await.unwrap();
        assert_eq!(loaded.runs.len(), 20_000, "{}", b.name);
        assert_eq!(loaded.runs[19_999], runs[19_999], "{}", b.name);
    }
}

#[tokio::test]
async fn ids_are_matched_whole_by_prefix_and_by_suffix() {
    use super::IdTable;
    for b in backends().await {
        let runs: Vec<Run> = [
            "01HAAAAAAA0000000000QFDW01",
            "01HAAAAAAA0000000000QFDW02",
            "01HBBBBBBB1111111111XYZ123",
        ]
        .iter()
        .map(|id| run(id, RunState::Succeeded))
        .collect();
        commit_all(&b.store, &runs).await;
        b.store.commit(&sample()).await.unwrap();
        let find = |table, text: &'static str| {
            let store = b.store.clone();
            async move { store.match_ids(table, text, 11).await.unwrap().ids }
        };
        let name = b.name;
        // Whole, a prefix, a suffix: one each.
        assert_eq!(
            find(IdTable::Runs, "01HAAAAAAA0000000000QFDW02").await,
            ["01HAAAAAAA0000000000QFDW02"],
            "{name}"
        );
        assert_eq!(
            find(IdTable::Runs, "01HBBB").await,
            ["01HBBBBBBB1111111111XYZ123"],
            "{name}"
        );
        assert_eq!(
            find(IdTable::Runs, "QFDW02").await,
            ["01HAAAAAAA0000000000QFDW02"],
            "{name}"
        );
        // Several: every candidate; none: nothing.
        assert_eq!(
            find(IdTable::Runs, "01HAAAAAAA").await,
            ["01HAAAAAAA0000000000QFDW01", "01HAAAAAAA0000000000QFDW02"],
            "{name}"
        );
        assert!(find(IdTable::Runs, "NOSUCH").await.is_empty(), "{name}");
        // Each kind in its own table.
        assert_eq!(find(IdTable::Workers, "w").await, ["w"], "{name}");
        assert!(find(IdTable::Leases, "01HBBB").await.is_empty(), "{name}");
        let stored = b.store.match_ids(IdTable::Runs, "QFDW", 11).await.unwrap();
        assert!(
            !stored.bounded,
            "{name}: three runs are well under the scan"
        );
    }
}
