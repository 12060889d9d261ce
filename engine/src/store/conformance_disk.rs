//! The conformance suite's part for what is on disk, on every store (see
//! [`super::conformance`]): data written by the schema before history on
//! disk reads back after the upgrade, and what a finished run costs in
//! bytes.

use std::sync::Arc;

use opsdeck_proto::v1 as pb;

use super::conformance::*;
use super::conformance_prune::prune_all;
use super::conformance_runs::{finished, ids, two_step_run};
use super::{Batch, RunFilter, Store, open};
use crate::domain::{
    Approval, ApprovalState, Lease, LeaseState, Queue, Run, RunState, Step, StepState, Worker,
};

// ---- Upgrade: data written by the schema before history on disk ----

/// Rows exactly as the store wrote them before runs and steps were split:
/// a run's body is the whole run, steps and all; events are whole.
struct OldRows {
    runs: Vec<Run>,
    leases: Vec<Lease>,
    approvals: Vec<Approval>,
    workers: Vec<Worker>,
    queues: Vec<Queue>,
    events: Vec<pb::Event>,
    outputs: Vec<pb::OutputChunk>,
}

fn old_rows() -> OldRows {
    let mut live = two_step_run("u1");
    live.state = RunState::Running;
    live.steps[0].state = StepState::Running;
    live.steps[0].attempt = 1;
    live.steps[0].lease_id = Some("l-u1".into());
    let done = Run {
        labels: [("team".to_string(), "dba".to_string())].into(),
        submitted_by: "bob".into(),
        ..finished("u2", RunState::Succeeded, 50)
    };
    let mut approval = sample().approvals.remove(0);
    approval.run_id = "u1".into();
    let mut decided = approval.clone();
    decided.id = "a-done".into();
    decided.state = ApprovalState::Approved;
    let events = (1..=3)
        .map(|seq| pb::Event {
            message: format!("event {seq}"),
            step_index: 1,
            lease: Some(Box::new(pb::Lease {
                id: "l-u1".into(),
                run_id: "u1".into(),
                ..Default::default()
            })),
            ..event(seq, if seq == 2 { "u2" } else { "u1" })
        })
        .collect();
    OldRows {
        runs: vec![live, done],
        leases: vec![
            Lease {
                id: "l-u1".into(),
                run_id: "u1".into(),
                ..lease("x", LeaseState::Active)
            },
            Lease {
                id: "l-u2".into(),
                run_id: "u2".into(),
                ..lease("x", LeaseState::Released)
            },
        ],
        approvals: vec![approval, decided],
        workers: sample().workers,
        // Written before queues had a `max_running`: none.
        queues: sample()
            .queues
            .into_iter()
            .map(|q| Queue {
                max_running: 0,
                ..q
            })
            .collect(),
        events,
        // A second chunk of r1's first attempt: the upgrade places it
        // after the first.
        outputs: {
            let mut outputs = sample().outputs;
            outputs.push(pb::OutputChunk {
                data: b"three".to_vec(),
                offset: 3,
                ..outputs[0].clone()
            });
            outputs
        },
    }
}

/// Writes [`old_rows`] with the statements of the previous store; `fix`
/// turns `$n` placeholders into the dialect's.
macro_rules! write_old_rows {
    ($pool:expr, $fix:expr) => {{
        use super::codec::{json, state_word};
        use prost::Message;
        let pool = $pool;
        let fix = $fix;
        let old = old_rows();
        for r in &old.runs {
            sqlx::query(sqlx::AssertSqlSafe(fix(
                "INSERT INTO runs (id, name, state, created_at, idempotency_key, body) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )))
            .bind(&r.id)
            .bind(&r.name)
            .bind(state_word(&r.state).unwrap())
            .bind(r.created_at)
            .bind(&r.idempotency_key)
            .bind(json(r).unwrap())
            .execute(pool)
            .await
            .unwrap();
        }
        for w in &old.workers {
            sqlx::query(sqlx::AssertSqlSafe(fix(
                "INSERT INTO workers (id, state, body) VALUES ($1, $2, $3)",
            )))
            .bind(&w.id)
            .bind(state_word(&w.state).unwrap())
            .bind(json(w).unwrap())
            .execute(pool)
            .await
            .unwrap();
        }
        for l in &old.leases {
            sqlx::query(sqlx::AssertSqlSafe(fix(
                "INSERT INTO leases (id, run_id, state, body) VALUES ($1, $2, $3, $4)",
            )))
            .bind(&l.id)
            .bind(&l.run_id)
            .bind(state_word(&l.state).unwrap())
            .bind(json(l).unwrap())
            .execute(pool)
            .await
            .unwrap();
        }
        for a in &old.approvals {
            sqlx::query(sqlx::AssertSqlSafe(fix(
                "INSERT INTO approvals (id, run_id, state, body) VALUES ($1, $2, $3, $4)",
            )))
            .bind(&a.id)
            .bind(&a.run_id)
            .bind(state_word(&a.state).unwrap())
            .bind(json(a).unwrap())
            .execute(pool)
            .await
            .unwrap();
        }
        for q in &old.queues {
            sqlx::query(sqlx::AssertSqlSafe(fix(
                "INSERT INTO queues (name, paused) VALUES ($1, $2)",
            )))
            .bind(&q.name)
            .bind(q.paused)
            .execute(pool)
            .await
            .unwrap();
        }
        for e in &old.events {
            sqlx::query(sqlx::AssertSqlSafe(fix(
                "INSERT INTO events (seq, at, kind, run_id, actor, body) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )))
            .bind(e.seq as i64)
            .bind(e.at_ms)
            .bind(&e.kind)
            .bind((!e.run_id.is_empty()).then_some(&e.run_id))
            .bind(&e.actor)
            .bind(e.encode_to_vec())
            .execute(pool)
            .await
            .unwrap();
        }
        for o in &old.outputs {
            sqlx::query(sqlx::AssertSqlSafe(fix(
                "INSERT INTO output (run_id, step_index, attempt, stream, at, truncated, data) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )))
            .bind(&o.run_id)
            .bind(i64::from(o.step_index))
            .bind(i64::from(o.attempt))
            .bind(&o.stream)
            .bind(o.at_ms)
            .bind(o.truncated)
            .bind(&o.data)
            .execute(pool)
            .await
            .unwrap();
        }
    }};
}

/// Everything [`old_rows`] wrote reads back through the trait.
async fn assert_old_rows_read_back(name: &str, store: Arc<dyn Store>) {
    let old = old_rows();
    let (live, done) = (&old.runs[0], &old.runs[1]);
    assert_eq!(
        store.get_run("u1").await.unwrap().as_ref(),
        Some(live),
        "{name}"
    );
    assert_eq!(
        store.get_run("u2").await.unwrap().as_ref(),
        Some(done),
        "{name}"
    );
    assert_eq!(
        store.list_runs(&RunFilter::default(), 10).await.unwrap(),
        vec![done.clone(), live.clone()],
        "{name}"
    );
    // The new columns were filled from the old bodies.
    let f = RunFilter {
        labels: [("team".to_string(), "dba".to_string())].into(),
        submitted_by: Some("bob".into()),
        states: vec![RunState::Succeeded],
        ..Default::default()
    };
    assert_eq!(
        ids(&store.list_runs(&f, 10).await.unwrap()),
        ["u2"],
        "{name}"
    );
    assert_eq!(
        store
            .run_by_idempotency_key("alice", "key-u1")
            .await
            .unwrap()
            .as_ref(),
        Some(live),
        "{name}"
    );
    let loaded = store.load(10).await.unwrap();
    assert_eq!(loaded.runs, vec![live.clone(), done.clone()], "{name}");
    assert_eq!(loaded.leases, old.leases[..1], "{name}");
    assert_eq!(loaded.approvals, old.approvals[..1], "{name}");
    assert_eq!(loaded.workers, old.workers, "{name}");
    assert_eq!(loaded.queues, old.queues, "{name}");
    assert_eq!(loaded.seq, 3, "{name}");
    assert_eq!(
        store.events_after(0, 10, None).await.unwrap(),
        old.events,
        "{name}"
    );
    assert_eq!(
        store.events_after(0, 10, Some("u2")).await.unwrap(),
        old.events[1..2],
        "{name}"
    );
    assert_eq!(
        store.output("r1", None).await.unwrap(),
        old.outputs,
        "{name}"
    );

    // Old rows take new writes: a step change, and a prune.
    let mut step = live.steps[0].clone();
    step.state = StepState::Succeeded;
    let change = Batch {
        steps: vec![("u1".into(), step.clone())],
        ..Default::default()
    };
    store.commit(&change).await.unwrap();
    assert_eq!(
        store.get_run("u1").await.unwrap().unwrap().steps[0],
        step,
        "{name}"
    );
    let pruned = store.prune(&prune_all(1_000, 100)).await.unwrap();
    // The finished run goes with its step and its released lease: the
    // previous release kept ended leases' rows until retention.
    assert_eq!(
        (pruned.runs, pruned.steps, pruned.leases),
        (1, 1, 1),
        "{name}"
    );
    assert_eq!(store.get_run("u2").await.unwrap(), None, "{name}");
}

#[tokio::test]
async fn data_written_by_the_previous_schema_reads_back_after_the_upgrade() {
    use std::str::FromStr;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("old.db").display());
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(&url)
        .unwrap()
        .create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    super::sqlite::MIGRATOR.run_to(2, &pool).await.unwrap();
    write_old_rows!(&pool, |sql: &str| sql.replace('$', "?"));
    pool.close().await;
    assert_old_rows_read_back("sqlite", open(&url).await.unwrap()).await;

    let Ok(server) = std::env::var("OPSDECK_TEST_POSTGRES") else {
        return;
    };
    let db = fresh_pg_database(&server).await;
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    super::postgres::MIGRATOR.run_to(3, &pool).await.unwrap();
    write_old_rows!(&pool, |sql: &str| sql.to_owned());
    pool.close().await;
    assert_old_rows_read_back("postgres", open(&db.url).await.unwrap()).await;
}

// ---- Bytes on disk ----

/// Commits `n` one-step runs the way the engine does (submit, lease
/// granted, running, released, succeeded: four commits, seven small events
/// a run) and prints the SQLite file's bytes per run after a checkpoint.
/// `cargo test -p opsdeck-engine --lib store::conformance_disk::bytes -- --ignored --nocapture`
#[tokio::test]
#[ignore]
async fn bytes_per_finished_one_step_run() {
    const N: usize = 5_000;
    const GROUP: usize = 250;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bytes.db");
    let url = format!("sqlite://{}", path.display());
    let store = open(&url).await.unwrap();
    fn url_of(p: &std::path::Path) -> String {
        format!("sqlite://{}", p.display())
    }
    async fn size(store: &Arc<dyn Store>, path: &std::path::Path) -> u64 {
        let c = sqlx::SqlitePool::connect(&url_of(path)).await.unwrap();
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&c)
            .await
            .unwrap();
        c.close().await;
        store.size_bytes().await.unwrap()
    }
    let empty = size(&store, &path).await;
    let base = 1_750_000_000_000i64;
    let mut seq = 0u64;
    let ev = |seq: &mut u64, at: i64, kind: &str, run: &str, extra: pb::Event| {
        *seq += 1;
        pb::Event {
            seq: *seq,
            at_ms: at,
            kind: kind.into(),
            actor: "opsdeckd".into(),
            run_id: run.into(),
            transport: "engine".into(),
            ..extra
        }
    };
    for g in 0..N / GROUP {
        let at = base + (g as i64) * 1_000;
        let mut runs: Vec<Run> = (0..GROUP)
            .map(|i| {
                let id = ulid::Ulid::from_parts(at as u64, (g * GROUP + i) as u128).to_string();
                let mut r = run(&id, RunState::Queued);
                r.name = "nightly-report".into();
                r.idempotency_key = None;
                r.created_at = at;
                r.updated_at = at;
                r.steps[0].state = StepState::Queued;
                r.steps[0].ready_since = Some(at);
                r
            })
            .collect();
        let lease_of = |r: &Run, state: LeaseState| Lease {
            id: format!("L{}", &r.id[1..]),
            run_id: r.id.clone(),
            step_index: 0,
            worker_id: "worker-01".into(),
            attempt: 1,
            fencing_token: 1,
            state,
            granted_at: at + 1,
            expires_at: at + 30_001,
            ended_at: (state != LeaseState::Active).then_some(at + 3),
            queue: "q".into(),
            stuck: false,
            waited_ms: None,
        };
        let lease_pb = |l: &Lease| pb::Lease {
            id: l.id.clone(),
            run_id: l.run_id.clone(),
            step_index: 0,
            worker_id: l.worker_id.clone(),
            attempt: 1,
            fencing_token: 1,
            ..Default::default()
        };
        let step_pb = |s: &Step| pb::StepUpdate {
            index: s.index,
            attempt: s.attempt,
            lease_id: s.lease_id.clone().unwrap_or_default(),
            worker_id: s.worker_id.clone().unwrap_or_default(),
            started_at_ms: s.started_at.unwrap_or(0),
            finished_at_ms: s.finished_at.unwrap_or(0),
            ..Default::default()
        };
        // Submit.
        let mut b = Batch::default();
        for r in &runs {
            b.runs.push(r.header());
            b.steps.push((r.id.clone(), r.steps[0].clone()));
            b.events.push(ev(
                &mut seq,
                at,
                "run.submitted",
                &r.id,
                pb::Event {
                    message: "run nightly-report submitted (1 step)".into(),
                    ..Default::default()
                },
            ));
        }
        store.commit(&b).await.unwrap();
        // Lease granted.
        let mut b = Batch::default();
        for r in &mut runs {
            let l = lease_of(r, LeaseState::Active);
            let id = r.id.clone();
            let s = &mut r.steps[0];
            s.state = StepState::Leased;
            s.attempt = 1;
            s.fence = 1;
            s.lease_id = Some(l.id.clone());
            s.worker_id = Some(l.worker_id.clone());
            b.steps.push((id.clone(), s.clone()));
            b.events.push(ev(
                &mut seq,
                at + 1,
                "lease.granted",
                &id,
                pb::Event {
                    lease_id: l.id.clone(),
                    worker_id: l.worker_id.clone(),
                    message: "lease granted to worker-01".into(),
                    lease: Some(Box::new(lease_pb(&l))),
                    ..Default::default()
                },
            ));
            b.events.push(ev(
                &mut seq,
                at + 1,
                "step.leased",
                &id,
                pb::Event {
                    step_updates: vec![step_pb(s)],
                    ..Default::default()
                },
            ));
            b.leases.push(l);
        }
        store.commit(&b).await.unwrap();
        // Running.
        let mut b = Batch::default();
        for r in &mut runs {
            r.state = RunState::Running;
            r.updated_at = at + 2;
            b.runs.push(r.header());
            let id = r.id.clone();
            let s = &mut r.steps[0];
            s.state = StepState::Running;
            s.started_at = Some(at + 2);
            b.steps.push((id.clone(), s.clone()));
            b.events.push(ev(
                &mut seq,
                at + 2,
                "step.running",
                &id,
                pb::Event {
                    message: "step 0 running".into(),
                    step_updates: vec![step_pb(s)],
                    ..Default::default()
                },
            ));
        }
        store.commit(&b).await.unwrap();
        // Released, succeeded.
        let mut b = Batch::default();
        for r in &mut runs {
            let l = lease_of(r, LeaseState::Released);
            r.state = RunState::Succeeded;
            r.updated_at = at + 3;
            r.finished_at = Some(at + 3);
            b.runs.push(r.header());
            let id = r.id.clone();
            let s = &mut r.steps[0];
            s.state = StepState::Succeeded;
            s.exit_code = Some(0);
            s.finished_at = Some(at + 3);
            b.steps.push((id.clone(), s.clone()));
            b.events.push(ev(
                &mut seq,
                at + 3,
                "lease.released",
                &id,
                pb::Event {
                    lease_id: l.id.clone(),
                    message: "lease released".into(),
                    lease: Some(Box::new(lease_pb(&l))),
                    ..Default::default()
                },
            ));
            b.events.push(ev(
                &mut seq,
                at + 3,
                "step.succeeded",
                &id,
                pb::Event {
                    message: "step 0 succeeded (exit 0)".into(),
                    step_updates: vec![step_pb(s)],
                    ..Default::default()
                },
            ));
            b.events.push(ev(
                &mut seq,
                at + 3,
                "run.succeeded",
                &id,
                pb::Event {
                    message: "run succeeded".into(),
                    ..Default::default()
                },
            ));
            b.leases.push(l);
        }
        store.commit(&b).await.unwrap();
    }
    let full = size(&store, &path).await;
    let events = store.events_after(0, 7, None).await.unwrap();
    let event_bytes: usize = events.iter().map(prost::Message::encoded_len).sum();
    println!(
        "{N} runs: {} bytes ({} empty): {} bytes per run; its 7 events encode to {event_bytes} bytes whole",
        full,
        empty,
        (full - empty) / N as u64,
    );
    let c = sqlx::SqlitePool::connect(&url_of(&path)).await.unwrap();
    if let Ok(rows) = sqlx::query_as::<_, (String, i64)>(
        "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC",
    )
    .fetch_all(&c)
    .await
    {
        for (name, bytes) in rows {
            println!("  {name:24} {:>6} bytes per run", bytes / N as i64);
        }
    }
}
