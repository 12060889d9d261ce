//! `opsdeckd bench`: which part of the engine is slow.
//!
//! Each scenario runs on a fresh engine and a fresh database (a temporary
//! SQLite file, or a new database on the PostgreSQL server `--postgres`
//! names). The engine is a child process (this binary's `serve`), so that
//! its memory is its own; the client and the workers (the real Agent
//! protocol over loopback gRPC, finishing every step at once) stay in this
//! process. Every scenario prints one JSON line:
//!
//! - `enqueue`: SubmitRun, one call per run, `--concurrency` in flight, no
//!   workers: runs/s and the latency of a call.
//! - `enqueue_batch`: SubmitRuns with `--batch` runs a call, a few calls in
//!   flight, no workers: runs/s and the latency of a call.
//! - `drain`: `--runs` runs queued first, then the workers start: steps/s
//!   from the first lease to the last finished run on the engine's clock,
//!   and the latency from a step's lease to its run's end.
//! - `mixed`: submits while the workers drain: steps/s, and the latency
//!   from a run's submit to its end.
//! - `restart` (with `--history N`): N finished runs written straight into
//!   a database, then the time an engine takes to start on it, its memory,
//!   and the database's bytes per run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use opsdeck_proto::endpoint::EngineAddr;
use opsdeck_proto::v1 as pb;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::agent::{self, AgentOptions};
use crate::domain::Millis;
use crate::domain::spec::Limits;

#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// Runs per scenario (one exec step each).
    #[arg(long, default_value_t = 2000)]
    pub runs: usize,
    /// In-process workers (drain, mixed).
    #[arg(long, default_value_t = 4)]
    pub workers: u32,
    /// Slots per worker.
    #[arg(long, default_value_t = 8)]
    pub slots: u32,
    /// SubmitRun calls in flight at once (enqueue, mixed).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Runs per SubmitRuns call (enqueue_batch, and filling the queue for
    /// drain); at most 10,000.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// The scenarios to run (repeat, or a comma list): enqueue,
    /// enqueue_batch, drain, mixed, restart. Default: the first four, and
    /// restart with --history.
    #[arg(
        long = "scenario",
        value_name = "NAME",
        value_enum,
        value_delimiter = ','
    )]
    pub scenarios: Vec<Scenario>,
    /// First write N finished one-step runs into a database and report how
    /// an engine restarts on it (the `restart` line).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub history: usize,
    /// A PostgreSQL server URL to bench on (a fresh database is made on it
    /// for each scenario, and dropped after) instead of temporary SQLite
    /// files.
    #[arg(long, value_name = "URL")]
    pub postgres: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    Enqueue,
    #[value(name = "enqueue_batch", alias = "enqueue-batch")]
    EnqueueBatch,
    Drain,
    Mixed,
    Restart,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Self::Enqueue => "enqueue",
            Self::EnqueueBatch => "enqueue_batch",
            Self::Drain => "drain",
            Self::Mixed => "mixed",
            Self::Restart => "restart",
        }
    }
}

/// The one-step run every scenario submits.
const SPEC: &str = "name = \"bench\"\n[[step]]\nqueue = \"bench\"\nrun = \"true\"\n";
const QUEUE: &str = "bench";
/// The most runs one SubmitRuns call takes.
const MAX_BATCH: usize = 10_000;
/// SubmitRuns calls in flight at once.
const BATCH_IN_FLIGHT: usize = 4;
/// Runs per commit when writing the history.
const HISTORY_CHUNK: usize = 5_000;
/// A scenario fails when no event comes for this long.
const NO_PROGRESS: Duration = Duration::from_secs(60);
/// How long an engine may take to start answering.
const START_BOUND: Duration = Duration::from_secs(300);
/// How long an engine may take to stop after SIGTERM before it is killed.
const STOP_BOUND: Duration = Duration::from_secs(20);

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let plan = Plan::new(&args)?;
    let token = format!("bench_{}", ulid::Ulid::new());
    let exe = std::env::current_exe().context("cannot find this program to start engines")?;
    let database = if args.postgres.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    let ctx = Ctx {
        args,
        token,
        exe,
        database,
    };
    let all = async {
        if plan.restart {
            print_line(restart(&ctx).await.context("the restart scenario failed")?);
        }
        for scenario in plan.scenarios {
            let line = run_scenario(&ctx, scenario)
                .await
                .with_context(|| format!("the {} scenario failed", scenario.name()))?;
            print_line(line);
        }
        anyhow::Ok(())
    };
    // Ctrl-C drops the scenario in hand, and with it its engine and its
    // database, rather than leaving them behind.
    tokio::select! {
        done = all => done,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
    }
}

/// What to run, from the flags.
#[derive(Debug)]
struct Plan {
    restart: bool,
    scenarios: Vec<Scenario>,
}

impl Plan {
    fn new(args: &BenchArgs) -> anyhow::Result<Self> {
        anyhow::ensure!(args.runs > 0, "--runs must be at least 1");
        anyhow::ensure!(args.workers > 0, "--workers must be at least 1");
        anyhow::ensure!(args.slots > 0, "--slots must be at least 1");
        anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
        anyhow::ensure!(
            (1..=MAX_BATCH).contains(&args.batch),
            "--batch must be from 1 to {MAX_BATCH} (the most runs one SubmitRuns call takes), not {}",
            args.batch
        );
        if let Some(url) = &args.postgres {
            anyhow::ensure!(
                url.starts_with("postgres://") || url.starts_with("postgresql://"),
                "--postgres must be a postgres://USER@HOST:PORT/DATABASE URL, not {:?}",
                crate::store::redacted(url)
            );
            anyhow::ensure!(
                url.rsplit_once('/')
                    .is_some_and(|(base, _)| base.len() > "postgres://".len()),
                "--postgres must end in /DATABASE (a database to connect to while making fresh ones), e.g. postgres://postgres@127.0.0.1:5432/postgres"
            );
        }
        let mut asked = args.scenarios.clone();
        asked.dedup();
        let restart_asked = asked.contains(&Scenario::Restart);
        anyhow::ensure!(
            !restart_asked || args.history > 0,
            "--scenario restart needs --history N: the finished runs to restart on"
        );
        let mut scenarios: Vec<Scenario> = Vec::new();
        let pick = |s: Scenario| asked.is_empty() || asked.contains(&s);
        for s in [
            Scenario::Enqueue,
            Scenario::EnqueueBatch,
            Scenario::Drain,
            Scenario::Mixed,
        ] {
            if pick(s) {
                scenarios.push(s);
            }
        }
        Ok(Self {
            restart: args.history > 0,
            scenarios,
        })
    }
}

struct Ctx {
    args: BenchArgs,
    token: String,
    exe: PathBuf,
    /// "sqlite" or "postgres", for the lines.
    database: &'static str,
}

fn print_line(line: Map<String, Value>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    // A closed stdout is the reader's business; the bench goes on.
    let _ = writeln!(out, "{}", Value::Object(line));
    let _ = out.flush();
}

async fn run_scenario(ctx: &Ctx, scenario: Scenario) -> anyhow::Result<Map<String, Value>> {
    let db = Database::fresh(ctx, scenario.name()).await?;
    let result = async {
        let (mut engine, _) = Engine::spawn(ctx, db.dir.path(), &db.url).await?;
        let measured = async {
            let client = Client::connect(engine.addr, &ctx.token).await?;
            match scenario {
                Scenario::Enqueue => enqueue(ctx, &client).await,
                Scenario::EnqueueBatch => enqueue_batch(ctx, &client).await,
                Scenario::Drain => drain(ctx, &client, engine.addr).await,
                Scenario::Mixed => mixed(ctx, &client, engine.addr).await,
                Scenario::Restart => anyhow::bail!("restart is not a scenario of its own"),
            }
        }
        .await;
        let memory = engine.memory();
        engine.stop().await;
        let mut fields = measured.map_err(|e| engine.explain(e))?;
        let (rss, peak) = memory?;
        fields.push(("engine_rss_mb", json!(round(rss, 1))));
        fields.push(("engine_peak_rss_mb", json!(round(peak, 1))));
        anyhow::Ok(fields)
    }
    .await;
    db.remove().await;
    let mut line = Map::new();
    line.insert("bench".into(), json!(scenario.name()));
    line.insert("database".into(), json!(ctx.database));
    for (k, v) in result? {
        line.insert(k.into(), v);
    }
    Ok(line)
}

type Fields = Vec<(&'static str, Value)>;

/// SubmitRun, one call per run, `--concurrency` calls in flight.
async fn enqueue(ctx: &Ctx, client: &Client) -> anyhow::Result<Fields> {
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
async fn enqueue_batch(ctx: &Ctx, client: &Client) -> anyhow::Result<Fields> {
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
async fn drain(ctx: &Ctx, client: &Client, addr: SocketAddr) -> anyhow::Result<Fields> {
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
async fn mixed(ctx: &Ctx, client: &Client, addr: SocketAddr) -> anyhow::Result<Fields> {
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
async fn restart(ctx: &Ctx) -> anyhow::Result<Map<String, Value>> {
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
async fn write_history(store: &dyn crate::store::Store, n: usize) -> anyhow::Result<()> {
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
    async fn commit(
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

/// A scenario's database: a SQLite file in a temporary directory, or a
/// fresh database on the PostgreSQL server. The directory is also the
/// engine's.
struct Database {
    dir: tempfile::TempDir,
    url: String,
    /// (server URL, database name) to drop afterwards, on PostgreSQL.
    postgres: Option<(String, String)>,
}

impl Database {
    async fn fresh(ctx: &Ctx, what: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("opsdeck-bench-{what}-"))
            .tempdir()
            .context("cannot create a temporary directory")?;
        Ok(match &ctx.args.postgres {
            Some(server) => {
                let (url, name) = fresh_postgres_database(server).await?;
                Self {
                    dir,
                    url,
                    postgres: Some((server.clone(), name)),
                }
            }
            None => {
                let path = dir.path().join("bench.db");
                Self {
                    url: format!("sqlite://{}", path.display()),
                    dir,
                    postgres: None,
                }
            }
        })
    }

    /// Drops a PostgreSQL database (the directory goes with `self`).
    async fn remove(mut self) {
        if let Some((server, name)) = self.postgres.take()
            && let Err(e) = drop_postgres_database(&server, &name).await
        {
            warn_not_dropped(&name, &e);
        }
    }
}

/// A scenario that did not get to [`Database::remove`] (a panic, or its
/// future dropped at ctrl-c) still drops its database.
impl Drop for Database {
    fn drop(&mut self) {
        let Some((server, name)) = self.postgres.take() else {
            return;
        };
        // A drop cannot await, and runs inside the bench's runtime, where
        // another cannot start: a thread with a runtime of its own.
        let dropped = std::thread::spawn({
            let name = name.clone();
            move || -> anyhow::Result<()> {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
                    .block_on(drop_postgres_database(&server, &name))
            }
        })
        .join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the thread dropping it panicked")));
        if let Err(e) = dropped {
            warn_not_dropped(&name, &e);
        }
    }
}

fn warn_not_dropped(name: &str, e: &anyhow::Error) {
    tracing::warn!(database = %name, error = %format!("{e:#}"), "cannot drop the bench database; drop it by hand");
}

/// Makes an empty database on a PostgreSQL server: its URL and name.
async fn fresh_postgres_database(server: &str) -> anyhow::Result<(String, String)> {
    use sqlx::Connection;
    let name = format!(
        "opsdeck_bench_{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    let mut admin = sqlx::PgConnection::connect(server)
        .await
        .with_context(|| format!("cannot connect to {}", crate::store::redacted(server)))?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .with_context(|| format!("cannot create the database {name}"))?;
    let (base, _) = server
        .rsplit_once('/')
        .context("--postgres must end in /DATABASE")?;
    Ok((format!("{base}/{name}"), name))
}

async fn drop_postgres_database(server: &str, name: &str) -> anyhow::Result<()> {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(server).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await?;
    Ok(())
}

/// An engine started as a child process: `opsdeckd serve` on its own
/// data dir, TCP on a free loopback port, with one token for the bench.
struct Engine {
    child: tokio::process::Child,
    pid: u32,
    addr: SocketAddr,
    log: PathBuf,
}

impl Engine {
    /// Starts one and waits until it answers Whoami with the token: the
    /// engine, and how long that took from the spawn.
    async fn spawn(ctx: &Ctx, dir: &Path, database: &str) -> anyhow::Result<(Self, Duration)> {
        let config = dir.join("engine.toml");
        let data = dir.join("engine");
        let log = dir.join("engine.log");
        std::fs::create_dir_all(&data)
            .with_context(|| format!("cannot create {}", data.display()))?;
        let entry = format!(
            "[[token]]\nidentity = \"bench\"\nsha256 = \"{}\"\nroles = [\"operator\", \"agent\"]\n",
            crate::api::auth::token_hash(&ctx.token)
        );
        std::fs::write(&config, entry)
            .with_context(|| format!("cannot write {}", config.display()))?;
        let out = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = tokio::process::Command::new(&ctx.exe);
        // The engine under test is the one the flags describe, whatever
        // this shell's OPSDECK_* settings say.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("OPSDECK_") {
                cmd.env_remove(key);
            }
        }
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", "127.0.0.1:0"])
            .args(["--socket", "none"])
            .args(["--metrics-listen", "none"])
            .arg("--database")
            .arg(database)
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        let spawned = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {} serve", ctx.exe.display()))?;
        let pid = child.id().context("the engine exited at once")?;
        let addr_file = data.join(crate::serve::ADDR_FILE);
        let deadline = spawned + START_BOUND;
        loop {
            if let Some(status) = child.try_wait()? {
                anyhow::bail!(
                    "the engine exited ({status}) before it answered{}",
                    log_tail(&log)
                );
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the engine did not answer within {START_BOUND:?}{}",
                log_tail(&log)
            );
            let addr = std::fs::read_to_string(&addr_file)
                .ok()
                .and_then(|s| s.trim().parse::<SocketAddr>().ok());
            if let Some(addr) = addr
                && let Ok(client) = Client::connect(addr, &ctx.token).await
                && client.head_seq().await.is_ok()
            {
                let ready = spawned.elapsed();
                return Ok((
                    Self {
                        child,
                        pid,
                        addr,
                        log,
                    },
                    ready,
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// (VmRSS, VmHWM) in MiB, from /proc.
    fn memory(&self) -> anyhow::Result<(f64, f64)> {
        let path = format!("/proc/{}/status", self.pid);
        let status =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        let field = |name: &str| -> anyhow::Result<f64> {
            let line = status
                .lines()
                .find(|l| l.starts_with(name))
                .with_context(|| format!("{path} has no {name}"))?;
            let kb: f64 = line
                .trim_start_matches(name)
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .with_context(|| format!("{path}: cannot read {line:?}"))?;
            Ok(kb / 1024.0)
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// SIGTERM, then a kill if it has not stopped within [`STOP_BOUND`].
    async fn stop(&mut self) {
        if let Ok(pid) = i32::try_from(self.pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        match tokio::time::timeout(STOP_BOUND, self.child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                tracing::warn!(
                    pid = self.pid,
                    "the bench engine did not stop on SIGTERM; killing it"
                );
                let _ = self.child.kill().await;
            }
        }
    }

    /// A scenario's error with the end of the engine's log.
    fn explain(&self, e: anyhow::Error) -> anyhow::Error {
        anyhow::anyhow!("{e:#}; the engine's log ends:{}", log_tail(&self.log))
    }
}

/// The last lines of an engine's log, for an error.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(15)..].join("\n  ");
    if tail.is_empty() {
        format!(" ({} is empty)", log.display())
    } else {
        format!("\n  {tail}\n(all of it in {})", log.display())
    }
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
struct Bearer(MetadataValue<Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

type Svc = InterceptedService<Channel, Bearer>;

/// The bench's client of one engine.
struct Client {
    runs: pb::runs_client::RunsClient<Svc>,
    events: pb::events_client::EventsClient<Svc>,
    console: pb::console_client::ConsoleClient<Svc>,
}

impl Client {
    async fn connect(addr: SocketAddr, token: &str) -> anyhow::Result<Self> {
        let channel = EngineAddr::Tcp(format!("http://{addr}")).connect().await?;
        let bearer = Bearer(format!("Bearer {token}").parse()?);
        Ok(Self {
            // SubmitRuns answers with every run it made.
            runs: pb::runs_client::RunsClient::with_interceptor(channel.clone(), bearer.clone())
                .max_decoding_message_size(256 * 1024 * 1024)
                .max_encoding_message_size(256 * 1024 * 1024),
            events: pb::events_client::EventsClient::with_interceptor(
                channel.clone(),
                bearer.clone(),
            ),
            console: pb::console_client::ConsoleClient::with_interceptor(channel, bearer),
        })
    }

    /// The engine's latest event seq.
    async fn head_seq(&self) -> anyhow::Result<u64> {
        let me = self
            .console
            .clone()
            .whoami(pb::WhoamiRequest {})
            .await?
            .into_inner();
        Ok(me.head_seq)
    }
}

/// `count` SubmitRun calls, `in_flight` at once: the latency of each.
async fn submit_singles(
    runs: &pb::runs_client::RunsClient<Svc>,
    count: usize,
    in_flight: usize,
) -> anyhow::Result<Vec<Duration>> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..in_flight.min(count) {
        let (mut client, next) = (runs.clone(), next.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let start = Instant::now();
                client
                    .submit_run(pb::SubmitRunRequest {
                        spec: SPEC.into(),
                        ..Default::default()
                    })
                    .await
                    .context("SubmitRun failed")?
                    .into_inner()
                    .run
                    .context("SubmitRun answered without a run")?;
                latencies.push(start.elapsed());
            }
            anyhow::Ok(latencies)
        });
    }
    let mut all = Vec::with_capacity(count);
    while let Some(done) = tasks.join_next().await {
        all.extend(done??);
    }
    Ok(all)
}

/// `count` runs in SubmitRuns calls of `batch`, [`BATCH_IN_FLIGHT`] calls
/// at once: the latency of each call.
async fn submit_batches(
    runs: &pb::runs_client::RunsClient<Svc>,
    count: usize,
    batch: usize,
) -> anyhow::Result<Vec<Duration>> {
    let calls = count.div_ceil(batch);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..BATCH_IN_FLIGHT.min(calls) {
        let (mut client, next) = (runs.clone(), next.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let call = next.fetch_add(1, Ordering::Relaxed);
                if call >= calls {
                    break;
                }
                let size = batch.min(count - call * batch);
                let request = pb::SubmitRunsRequest {
                    runs: vec![
                        pb::SubmitRunRequest {
                            spec: SPEC.into(),
                            ..Default::default()
                        };
                        size
                    ],
                };
                let start = Instant::now();
                let made = client
                    .submit_runs(request)
                    .await
                    .context("SubmitRuns failed")?
                    .into_inner()
                    .runs
                    .len();
                latencies.push(start.elapsed());
                anyhow::ensure!(
                    made == size,
                    "SubmitRuns answered {made} runs for {size} specs"
                );
            }
            anyhow::Ok(latencies)
        });
    }
    let mut all = Vec::with_capacity(calls);
    while let Some(done) = tasks.join_next().await {
        all.extend(done??);
    }
    Ok(all)
}

/// Events.FollowEvents of some kinds, followed again from the last event
/// seen when the engine cuts the reader off for falling behind.
struct Follow {
    client: pb::events_client::EventsClient<Svc>,
    kinds: Vec<String>,
    stream: tonic::Streaming<pb::Event>,
    last_seq: u64,
    /// How often the engine cut this reader off.
    resyncs: u64,
}

impl Follow {
    async fn start(
        mut client: pb::events_client::EventsClient<Svc>,
        after_seq: u64,
        kinds: &[&str],
    ) -> anyhow::Result<Self> {
        let kinds: Vec<String> = kinds.iter().map(|k| (*k).to_owned()).collect();
        let stream = client
            .follow_events(pb::FollowEventsRequest {
                after_seq,
                kinds: kinds.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        Ok(Self {
            client,
            kinds,
            stream,
            last_seq: after_seq,
            resyncs: 0,
        })
    }

    async fn next(&mut self) -> anyhow::Result<pb::Event> {
        loop {
            let item = tokio::time::timeout(NO_PROGRESS, self.stream.message())
                .await
                .with_context(|| format!("no event for {NO_PROGRESS:?}"))?;
            match item {
                Ok(Some(event)) => {
                    self.last_seq = event.seq;
                    return Ok(event);
                }
                Ok(None) => anyhow::bail!("the event stream ended"),
                Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                    // Cut off for falling behind: follow again from the
                    // last event seen, as any client would.
                    self.resyncs += 1;
                    self.stream = self
                        .client
                        .follow_events(pb::FollowEventsRequest {
                            after_seq: self.last_seq,
                            kinds: self.kinds.clone(),
                            ..Default::default()
                        })
                        .await?
                        .into_inner();
                }
                Err(status) => return Err(status.into()),
            }
        }
    }
}

/// In-process workers speaking the real Agent protocol over TCP, finishing
/// every step at once.
struct Workers {
    stop: CancellationToken,
    tasks: tokio::task::JoinSet<()>,
}

impl Workers {
    fn start(addr: SocketAddr, token: &str, workers: u32, slots: u32) -> Self {
        let stop = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..workers {
            let options = AgentOptions {
                engine: EngineAddr::Tcp(format!("http://{addr}")).into(),
                worker_id: format!("bench-{i}"),
                queues: vec![QUEUE.into()],
                slots,
                labels: Default::default(),
                token: Some(token.to_owned()),
                tls: None,
                generation: 1,
                cancel_grace: Duration::from_secs(1),
                // The bench measures the engine; results stay in memory.
                spool_dir: None,
            };
            let executor: Arc<dyn agent::Executor> = Arc::new(agent::InstantExecutor);
            let stop = stop.clone();
            tasks.spawn(async move {
                if let Err(e) = agent::run(options, executor, stop).await {
                    tracing::warn!(error = %format!("{e:#}"), "a bench worker stopped");
                }
            });
        }
        Self { stop, tasks }
    }

    async fn stop(mut self) {
        self.stop.cancel();
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .is_err()
        {
            self.tasks.abort_all();
        }
    }
}

/// The time from `from` to `to` (engine milliseconds); never negative.
fn ms_between(from: Millis, to: Millis) -> Duration {
    Duration::from_millis(u64::try_from(to.saturating_sub(from)).unwrap_or(0))
}

fn per_s(count: usize, elapsed: Duration) -> f64 {
    // Engine times are whole milliseconds: a sub-millisecond span is 1 ms.
    let secs = elapsed.as_secs_f64().max(0.001);
    round(count as f64 / secs, 1)
}

fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

/// `{p50, p99}` in milliseconds.
fn latency_json(mut latencies: Vec<Duration>) -> Value {
    latencies.sort();
    let pct = |p: f64| match latencies.len() {
        0 => 0.0,
        n => {
            let i = ((n as f64 * p).ceil() as usize).clamp(1, n) - 1;
            latencies[i].as_secs_f64() * 1000.0
        }
    };
    json!({ "p50": round(pct(0.50), 1), "p99": round(pct(0.99), 1) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn plan(args: &[&str]) -> anyhow::Result<Plan> {
        let cli = Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))?;
        Plan::new(&cli.bench)
    }

    #[test]
    fn scenarios_default_to_all_four_and_take_lists() {
        let p = plan(&[]).unwrap();
        assert!(!p.restart);
        assert_eq!(p.scenarios.len(), 4);
        let p = plan(&["--scenario", "drain,enqueue_batch", "--scenario", "mixed"]).unwrap();
        assert_eq!(
            p.scenarios,
            [Scenario::EnqueueBatch, Scenario::Drain, Scenario::Mixed]
        );
        let p = plan(&["--history", "10", "--scenario", "restart"]).unwrap();
        assert!(p.restart && p.scenarios.is_empty());
        let p = plan(&["--history", "10"]).unwrap();
        assert!(p.restart && p.scenarios.len() == 4);
    }

    #[test]
    fn bad_flags_are_named() {
        let e = plan(&["--scenario", "restart"]).unwrap_err().to_string();
        assert!(e.contains("--history"), "{e}");
        let e = plan(&["--batch", "20000"]).unwrap_err().to_string();
        assert!(e.contains("--batch"), "{e}");
        let e = plan(&["--concurrency", "0"]).unwrap_err().to_string();
        assert!(e.contains("--concurrency"), "{e}");
        assert!(plan(&["--scenario", "nope"]).is_err());
        let e = plan(&["--postgres", "mysql://x/y"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--postgres"), "{e}");
    }
}
