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

mod child;
mod clients;
mod scenarios;

use child::{Database, Engine};
use clients::{Client, Workers};
use scenarios::{drain, enqueue, enqueue_batch, mixed, restart};

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
