//! `opsdeckd bench`: a real engine on a temporary SQLite file, workers that
//! speak the real Agent protocol over loopback gRPC but finish each step at
//! once, and M one-step runs. Prints one JSON line.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use opsdeck_proto::endpoint::EngineAddr;
use opsdeck_proto::v1 as pb;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataValue;

use crate::agent::{self, AgentOptions};
use crate::core::CoreConfig;
use crate::serve::{self, ServeOptions};

#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// Runs to submit (one exec step each).
    #[arg(long, default_value_t = 2000)]
    pub runs: usize,
    /// In-process workers.
    #[arg(long, default_value_t = 4)]
    pub workers: u32,
    /// Slots per worker.
    #[arg(long, default_value_t = 8)]
    pub slots: u32,
    /// Submits in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// A PostgreSQL server URL to bench on (a fresh database is made on it)
    /// instead of a temporary SQLite file.
    #[arg(long)]
    pub postgres: Option<String>,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.runs > 0 && args.workers > 0 && args.slots > 0,
        "--runs, --workers and --slots must be at least 1"
    );
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let token = ulid::Ulid::new().to_string();
    let opts = ServeOptions {
        data_dir: dir.path().to_owned(),
        listen: Some("127.0.0.1:0".into()),
        socket: None,
        database: match &args.postgres {
            Some(server) => fresh_postgres_database(server).await?,
            None => format!("sqlite://{}", dir.path().join("bench.db").display()),
        },
        local_workers: 0,
        core: CoreConfig::default(),
        metrics_listen: None,
        // One token for the submitter and the workers.
        tokens: vec![crate::config::TokenEntry {
            identity: "bench".into(),
            sha256: crate::api::auth::token_hash(&token),
            roles: vec![crate::domain::Role::Operator, crate::domain::Role::Agent],
            groups: Vec::new(),
        }],
        unix: Default::default(),
        ha: Default::default(),
        tls: None,
        tls_clients: Vec::new(),
    };
    let stop = CancellationToken::new();
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let engine = tokio::spawn(serve::run(opts, stop.clone(), move |b| {
        let _ = bound_tx.send(b.tcp);
    }));
    let addr = bound_rx
        .await
        .ok()
        .flatten()
        .context("the bench engine did not start")?;
    let engine_addr = EngineAddr::Tcp(format!("http://{addr}"));

    for i in 0..args.workers {
        let options = AgentOptions {
            engine: engine_addr.clone().into(),
            worker_id: format!("bench-{i}"),
            queues: vec!["bench".into()],
            slots: args.slots,
            labels: Default::default(),
            token: Some(token.clone()),
            tls: None,
            generation: 1,
            cancel_grace: Duration::from_secs(1),
            // The bench measures the engine; results stay in memory.
            spool_dir: None,
        };
        let executor: Arc<dyn agent::Executor> = Arc::new(agent::InstantExecutor);
        tokio::spawn(agent::run(options, executor, stop.clone()));
    }

    let channel = engine_addr.connect().await?;
    let bearer: MetadataValue<_> = format!("Bearer {token}").parse()?;
    let auth = move |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("authorization", bearer.clone());
        Ok(req)
    };
    let mut events =
        pb::events_client::EventsClient::with_interceptor(channel.clone(), auth.clone());
    let runs = pb::runs_client::RunsClient::with_interceptor(channel, auth);
    let mut follow = events
        .follow_events(pb::FollowEventsRequest::default())
        .await?
        .into_inner();

    let spec = "name = \"bench\"\n[[step]]\nqueue = \"bench\"\nrun = \"true\"\n";
    let sem = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let mut submits = tokio::task::JoinSet::new();
    for _ in 0..args.runs {
        let permit = sem.clone().acquire_owned().await?;
        let mut client = runs.clone();
        submits.spawn(async move {
            let reply = client
                .submit_run(pb::SubmitRunRequest {
                    spec: spec.into(),
                    ..Default::default()
                })
                .await;
            drop(permit);
            reply?.into_inner().run.context("no run in the answer")?;
            anyhow::Ok(())
        });
    }

    let mut latencies = Vec::with_capacity(args.runs);
    let mut last_seq = 0;
    let (mut first_created, mut last_done) = (i64::MAX, i64::MIN);
    while latencies.len() < args.runs {
        let event = match tokio::time::timeout(Duration::from_secs(60), follow.next())
            .await
            .context("no progress for 60 s")?
            .context("the event stream ended")?
        {
            Ok(event) => event,
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                // This reader fell behind the engine and was cut off: follow
                // again from the last event it saw, as any client would.
                let again = pb::FollowEventsRequest {
                    after_seq: last_seq,
                    ..Default::default()
                };
                follow = events.follow_events(again).await?.into_inner();
                continue;
            }
            Err(status) => return Err(status.into()),
        };
        last_seq = event.seq;
        if event.kind != "run.succeeded" && event.kind != "run.failed" {
            continue;
        }
        // Submit to done as the engine recorded it: the commit that
        // created the run to the one that finished it. A client reading
        // the stream late does not inflate it.
        let created = event.run.as_ref().map_or(event.at_ms, |r| r.created_at_ms);
        latencies.push(Duration::from_millis(
            u64::try_from(event.at_ms - created).unwrap_or(0),
        ));
        first_created = first_created.min(created);
        last_done = last_done.max(event.at_ms);
    }
    // The engine's own clock, for the same reason.
    let elapsed =
        Duration::from_millis(u64::try_from(last_done - first_created).unwrap_or(1).max(1));
    while let Some(r) = submits.join_next().await {
        r??;
    }
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), engine).await;

    latencies.sort();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i].as_secs_f64() * 1000.0
    };
    let line = serde_json::json!({
        "database": if args.postgres.is_some() { "postgres" } else { "sqlite" },
        "runs": args.runs,
        "workers": args.workers,
        "slots": args.slots,
        "elapsed_s": (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        "steps_per_s": ((args.runs as f64 / elapsed.as_secs_f64()) * 10.0).round() / 10.0,
        "latency_ms": { "p50": (pct(0.50) * 10.0).round() / 10.0, "p99": (pct(0.99) * 10.0).round() / 10.0 },
    });
    println!("{line}");
    Ok(())
}

/// Makes an empty database on a PostgreSQL server and returns its URL.
async fn fresh_postgres_database(server: &str) -> anyhow::Result<String> {
    use sqlx::Connection;
    let name = format!(
        "opsdeck_bench_{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    let mut admin = sqlx::PgConnection::connect(server)
        .await
        .with_context(|| format!("cannot connect to {server}"))?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await?;
    let (base, _) = server
        .rsplit_once('/')
        .context("the PostgreSQL URL must end in /DATABASE")?;
    Ok(format!("{base}/{name}"))
}
