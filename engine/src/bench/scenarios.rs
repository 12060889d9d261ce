//! The scenarios: what each one does and measures.

use super::clients::{Follow, submit_batches, submit_singles};
use super::*;

/// SubmitRun, one call per run, `--concurrency` calls in flight.
pub(super) async fn enqueue(ctx: &Ctx, client: &Client) -> anyhow::Result<Fields> {
    let a = &ctx.args;
    let start = Instant::now();
    let latencies = submit_singles(&client.runs, a.runs, a.concurrency).await?;
    let elapsed = start.elapsed();
    Ok(vec![
        ("runs", json!(a.runs)),
        ("concurrency", json!(a.concurrency)),
        ("runs_per_s", json!(per_s(a.runs, elapsed))),
        ("latency_ms", latency_json(latencies)),
        ("elapsed_s", json!(round(elapsed.as_secs_f64(), 3))),
    ])
}

/// SubmitRuns, `--batch` runs a call, a few calls in flight.
pub(super) async fn enqueue_batch(ctx: &Ctx, client: &Client) -> anyhow::Result<Fields> {
    let a = &ctx.args;
    let start = Instant::now();
    let latencies = submit_batches(&client.runs, a.runs, a.batch).await?;
    let elapsed = start.elapsed();
    Ok(vec![
        ("runs", json!(a.runs)),
        ("batch", json!(a.batch)),
        ("in_flight", json!(BATCH_IN_FLIGHT)),
        ("calls", json!(latencies.len())),
        ("runs_per_s", json!(per_s(a.runs, elapsed))),
        ("latency_ms", latency_json(latencies)),
        ("elapsed_s", json!(round(elapsed.as_secs_f64(), 3))),
    ])
}

/// A full queue first, then the workers: how fast they empty it.
pub(super) async fn drain(ctx: &Ctx, client: &Client, addr: SocketAddr) -> anyhow::Result<Fields> {
    let a = &ctx.args;
    let fill = Instant::now();
    submit_batches(&client.runs, a.runs, a.batch).await?;
    let fill = fill.elapsed();
    let head = client.head_seq().await?;
    let mut follow = Follow::start(
        client.events.clone(),
        head,
        &["lease.granted", "run.succeeded", "run.failed"],
    )
    .await?;
    let workers = Workers::start(addr, &ctx.token, a.workers, a.slots);
    let measured = async {
        let mut granted: std::collections::HashMap<String, Millis> =
            std::collections::HashMap::with_capacity(a.runs);
        let mut latencies = Vec::with_capacity(a.runs);
        let (mut first, mut last, mut failed) = (Millis::MAX, Millis::MIN, 0usize);
        while latencies.len() < a.runs {
            let event = follow.next().await?;
            match event.kind.as_str() {
                "lease.granted" => {
                    granted.entry(event.run_id).or_insert(event.at_ms);
                    first = first.min(event.at_ms);
                }
                "run.succeeded" | "run.failed" => {
                    failed += usize::from(event.kind == "run.failed");
                    let since = granted.remove(&event.run_id).with_context(|| {
                        format!("run {} ended without a lease granted", event.run_id)
                    })?;
                    latencies.push(ms_between(since, event.at_ms));
                    last = last.max(event.at_ms);
                }
                _ => {}
            }
        }
        anyhow::Ok((latencies, ms_between(first, last), failed))
    }
    .await;
    workers.stop().await;
    let (latencies, elapsed, failed) = measured?;
    Ok(vec![
        ("runs", json!(a.runs)),
        ("workers", json!(a.workers)),
        ("slots", json!(a.slots)),
        ("steps_per_s", json!(per_s(a.runs, elapsed))),
        ("latency_ms", latency_json(latencies)),
        ("elapsed_s", json!(round(elapsed.as_secs_f64(), 3))),
        ("fill_s", json!(round(fill.as_secs_f64(), 3))),
        ("failed", json!(failed)),
        ("resyncs", json!(follow.resyncs)),
    ])
}

/// Submits at `--concurrency` while the workers drain.
pub(super) async fn mixed(ctx: &Ctx, client: &Client, addr: SocketAddr) -> anyhow::Result<Fields> {
    let a = &ctx.args;
    let head = client.head_seq().await?;
    let mut follow = Follow::start(
        client.events.clone(),
        head,
        &["run.succeeded", "run.failed"],
    )
    .await?;
    let workers = Workers::start(addr, &ctx.token, a.workers, a.slots);
    let submits = tokio::spawn({
        let runs = client.runs.clone();
        let (n, c) = (a.runs, a.concurrency);
        async move { submit_singles(&runs, n, c).await }
    });
    let measured = async {
        let mut latencies = Vec::with_capacity(a.runs);
        let (mut first, mut last, mut failed) = (Millis::MAX, Millis::MIN, 0usize);
        while latencies.len() < a.runs {
            let event = follow.next().await?;
            failed += usize::from(event.kind == "run.failed");
            // Submit to done as the engine recorded them: a run's id is a
            // ULID of its submit time, the event's time is its end's.
            let created = ulid::Ulid::from_string(&event.run_id)
                .with_context(|| format!("run id {:?} is not a ULID", event.run_id))?
                .timestamp_ms();
            let created = Millis::try_from(created).unwrap_or(Millis::MAX);
            latencies.push(ms_between(created, event.at_ms));
            first = first.min(created);
            last = last.max(event.at_ms);
        }
        anyhow::Ok((latencies, ms_between(first, last), failed))
    }
    .await;
    let submitted = submits.await;
    workers.stop().await;
    let (latencies, elapsed, failed) = measured?;
    submitted.context("the submitting task failed")??;
    Ok(vec![
        ("runs", json!(a.runs)),
        ("workers", json!(a.workers)),
        ("slots", json!(a.slots)),
        ("concurrency", json!(a.concurrency)),
        ("steps_per_s", json!(per_s(a.runs, elapsed))),
        ("latency_ms", latency_json(latencies)),
        ("elapsed_s", json!(round(elapsed.as_secs_f64(), 3))),
        ("failed", json!(failed)),
        ("resyncs", json!(follow.resyncs)),
    ])
}

/// `--history N`: N finished runs written through the store, then an
/// engine started on them.
pub(super) async fn restart(ctx: &Ctx) -> anyhow::Result<Map<String, Value>> {
    let n = ctx.args.history;
    let db = Database::fresh(ctx, "history").await?;
    let result = async {
        let fill = Instant::now();
        let store = crate::store::open(&db.url).await.with_context(|| {
            format!(
                "cannot open the history database {}",
                crate::store::redacted(&db.url)
            )
        })?;
        write_history(store.as_ref(), n).await?;
        let fill = fill.elapsed();
        // The database's size as the store counts it: on SQLite, pages in
        // use and free, the write-ahead log's included.
        let bytes = store
            .size_bytes()
            .await
            .context("cannot read the database's size")?;
        drop(store);
        // Let the pool's connections close before the engine opens the file.
        tokio::time::sleep(Duration::from_millis(300)).await;

        let (mut engine, ready) = Engine::spawn(ctx, db.dir.path(), &db.url).await?;
        let memory = engine.memory();
        engine.stop().await;
        let (rss, peak) = memory?;
        anyhow::Ok(vec![
            ("history_runs", json!(n)),
            ("ready_ms", json!(round(ready.as_secs_f64() * 1000.0, 1))),
            ("elapsed_s", json!(round(ready.as_secs_f64(), 3))),
            ("engine_rss_mb", json!(round(rss, 1))),
            ("engine_peak_rss_mb", json!(round(peak, 1))),
            ("db_bytes_per_run", json!((bytes as f64 / n as f64).round())),
            ("fill_s", json!(round(fill.as_secs_f64(), 3))),
            (
                "fill_runs_per_s",
                json!(per_s(n, fill.max(Duration::from_millis(1)))),
            ),
        ])
    }
    .await;
    db.remove().await;
    let mut line = Map::new();
    line.insert("bench".into(), json!("restart"));
    line.insert("database".into(), json!(ctx.database));
    for (k, v) in result? {
        line.insert(k.into(), v);
    }
    Ok(line)
}

/// Writes `n` finished one-step runs exactly as the engine writes them:
/// the engine's own core (`State`) submits them, leases them to a worker,
/// hears each start and result, and every transaction's batch goes to the
/// store, `HISTORY_CHUNK` runs at a time.
pub(super) async fn write_history(store: &dyn crate::store::Store, n: usize) -> anyhow::Result<()> {
    use crate::core::{Effect, State, Tx};
    let spec = crate::domain::spec::parse(SPEC, &Limits::default())
        .map_err(|e| anyhow::anyhow!("the bench's own spec is refused: {e}"))?;
    let cfg = crate::core::CoreConfig {
        // Finished runs leave memory at once: the history is the store's.
        finished_runs_kept: 0,
        ..Default::default()
    };
    let mut state = State::load(
        cfg,
        crate::store::Loaded::default(),
        crate::domain::now_ms(),
    );
    let (to_worker, mut worker_inbox) = tokio::sync::mpsc::unbounded_channel();
    let actor = crate::domain::Actor {
        name: "bench".into(),
        transport: "tcp",
    };
    let worker = "bench-history";
    let hello = pb::Hello {
        worker_id: worker.into(),
        queues: vec![QUEUE.into()],
        slots: u32::try_from(HISTORY_CHUNK).unwrap_or(u32::MAX),
        version: env!("CARGO_PKG_VERSION").into(),
        generation: 1,
        ..Default::default()
    };
    // One transaction of the core, written as the core writes it.
    pub(super) async fn commit(
        state: &mut State,
        store: &dyn crate::store::Store,
        mut tx: Tx,
        to_worker: &mut Vec<pb::EngineMessage>,
    ) -> anyhow::Result<()> {
        state.dispatch(&mut tx);
        let batch = state.batch(&mut tx);
        let sealed = state.sealed();
        store.commit(&batch).await.context("cannot write history")?;
        state.committed(sealed);
        state.evict(tx.now);
        for effect in tx.effects {
            if let Effect::Send(_, msg) = effect {
                to_worker.push(*msg);
            }
        }
        Ok(())
    }
    let mut sent = Vec::new();
    let mut tx = Tx::new(crate::domain::now_ms());
    state
        .hello(
            &mut tx,
            1,
            "bench",
            &crate::domain::scope::AgentScope::unbounded(),
            hello,
            to_worker,
        )
        .map_err(|e| anyhow::anyhow!("the history worker was refused: {e}"))?;
    commit(&mut state, store, tx, &mut sent).await?;
    let mut start = 0;
    while start < n {
        let end = (start + HISTORY_CHUNK).min(n);
        let mut tx = Tx::new(crate::domain::now_ms());
        for _ in start..end {
            state
                .submit(&mut tx, spec.clone(), None, &actor, "")
                .map_err(|e| anyhow::anyhow!("a history run was refused: {e}"))?;
        }
        // Submitted and leased in one transaction.
        commit(&mut state, store, tx, &mut sent).await?;
        let mut assignments = Vec::new();
        for msg in sent.drain(..) {
            match msg.kind {
                Some(pb::engine_message::Kind::Assign(a)) => assignments.push(a),
                Some(pb::engine_message::Kind::Assignments(b)) => assignments.extend(b.assignments),
                _ => {}
            }
        }
        while worker_inbox.try_recv().is_ok() {}
        let mut tx = Tx::new(crate::domain::now_ms());
        for a in &assignments {
            let started = pb::StepStarted {
                lease_id: a.lease_id.clone(),
                fencing_token: a.fencing_token,
                pid: 0,
            };
            state.step_started(&mut tx, worker, started);
        }
        commit(&mut state, store, tx, &mut sent).await?;
        let mut tx = Tx::new(crate::domain::now_ms());
        for a in assignments {
            let result = pb::StepResult {
                lease_id: a.lease_id,
                fencing_token: a.fencing_token,
                outcome: pb::Outcome::Succeeded as i32,
                has_exit_code: true,
                ..Default::default()
            };
            state.step_result(&mut tx, worker, result);
        }
        commit(&mut state, store, tx, &mut sent).await?;
        sent.clear();
        start = end;
    }
    Ok(())
}
