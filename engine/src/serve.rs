//! `opsdeckd serve`: open the store, start the core, listen, and run until
//! shutdown. The caller owns the shutdown signal, so tests and the bench run
//! the same engine the binary does.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;

use crate::agent::{self, AgentExit, AgentOptions};
use crate::api::{self, Api, Auth, Listeners};
use crate::core::{self, CoreConfig};
use crate::store;

/// Everything `serve` needs, already merged from flags, environment and file.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub data_dir: PathBuf,
    /// `None`: no TCP listener.
    pub listen: Option<String>,
    /// `None`: no Unix socket.
    pub socket: Option<PathBuf>,
    pub database: String,
    pub local_workers: u32,
    pub core: CoreConfig,
    /// (identity, hex sha256 of the token).
    pub tokens: Vec<(String, String)>,
}

/// Where a started engine listens.
#[derive(Clone, Debug)]
pub struct Bound {
    pub tcp: Option<SocketAddr>,
    pub socket: Option<PathBuf>,
}

/// The file in the data dir that names the bound TCP address, for scripts
/// and tests that listen on port 0.
pub const ADDR_FILE: &str = "engine.addr";

/// How long shutdown waits, in all, for the commit in flight, the streams
/// and the local workers.
const SHUTDOWN_BOUND: Duration = Duration::from_secs(10);

/// Runs an engine until `shutdown` is cancelled. `on_bound` hears where it
/// listens as soon as the listeners are open.
pub async fn run(
    opts: ServeOptions,
    shutdown: CancellationToken,
    on_bound: impl FnOnce(&Bound),
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&opts.data_dir)
        .with_context(|| format!("cannot create the data dir {}", opts.data_dir.display()))?;
    let store = store::open(&opts.database)
        .await
        .with_context(|| format!("cannot open the database {}", opts.database))?;
    let core_stop = CancellationToken::new();
    let (core, core_task) = core::start(opts.core.clone(), store.clone(), core_stop.clone())
        .await
        .context("cannot load the engine's state from its database")?;

    let tcp = match &opts.listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?,
        ),
        None => None,
    };
    let unix = match &opts.socket {
        Some(path) => Some(bind_socket(path)?),
        None => None,
    };
    let bound = Bound {
        tcp: tcp.as_ref().and_then(|l| l.local_addr().ok()),
        socket: opts.socket.clone(),
    };
    if let Some(addr) = bound.tcp {
        std::fs::write(opts.data_dir.join(ADDR_FILE), format!("{addr}\n"))
            .with_context(|| format!("cannot write {}", opts.data_dir.join(ADDR_FILE).display()))?;
    }
    tracing::info!(tcp = ?bound.tcp, socket = ?bound.socket, database = %opts.database, "opsdeckd serving");
    on_bound(&bound);

    let api = Api {
        core,
        store,
        limits: opts.core.limits.clone(),
        engine_id: format!("{}:{}", hostname(), std::process::id()),
    };
    let server_stop = CancellationToken::new();
    let server = tokio::spawn(api::serve(
        api,
        Auth::new(opts.tokens.clone()),
        Listeners { tcp, unix },
        server_stop.clone(),
    ));
    let workers_stop = CancellationToken::new();
    let local = local_workers(&opts, &bound, workers_stop.clone());

    shutdown.cancelled().await;
    tracing::info!("shutting down: no new requests; finishing the commit in flight");
    workers_stop.cancel();
    server_stop.cancel();
    // Stopping the core ends every stream (workers and consoles hear the
    // engine is going), which lets the servers finish.
    core_stop.cancel();
    // One bound for all of it: a client that stopped reading cannot hold
    // the engine up for longer.
    let deadline = tokio::time::Instant::now() + SHUTDOWN_BOUND;
    if tokio::time::timeout_at(deadline, core_task).await.is_err() {
        tracing::warn!("the core did not stop within {SHUTDOWN_BOUND:?}");
    }
    match tokio::time::timeout_at(deadline, server).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "server stopped with an error"),
        Err(_) => tracing::warn!(
            "streams still open {SHUTDOWN_BOUND:?} after the shutdown began; closing them"
        ),
        _ => {}
    }
    let _ = tokio::time::timeout_at(
        deadline.max(tokio::time::Instant::now() + Duration::from_millis(500)),
        local,
    )
    .await;
    if let Some(path) = &opts.socket {
        let _ = std::fs::remove_file(path);
    }
    tracing::info!("opsdeckd stopped");
    Ok(())
}

/// Binds the Unix socket, replacing a stale file left by an engine that
/// died, but never one a live engine is listening on.
fn bind_socket(path: &PathBuf) -> anyhow::Result<UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "another engine is listening on {}; stop it, or give this one another --socket",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))
}

/// `--local-workers N`: one in-process worker with N slots serving every
/// queue, speaking the real Agent protocol over the engine's own socket.
fn local_workers(
    opts: &ServeOptions,
    bound: &Bound,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let engine = match (&bound.socket, bound.tcp) {
        _ if opts.local_workers == 0 => return tokio::spawn(async {}),
        (Some(path), _) => opsdeck_proto::endpoint::EngineAddr::Unix(path.clone()),
        (None, Some(addr)) => opsdeck_proto::endpoint::EngineAddr::Tcp(format!("http://{addr}")),
        (None, None) => return tokio::spawn(async {}),
    };
    let worker_id = format!("{}-local", hostname());
    let mut options = AgentOptions {
        engine,
        spool_dir: Some(opts.data_dir.join("spool").join(&worker_id)),
        worker_id,
        queues: vec![crate::domain::ANY_QUEUE.to_owned()],
        slots: opts.local_workers,
        labels: [("local".to_owned(), "true".to_owned())]
            .into_iter()
            .collect(),
        token: None,
        generation: 1,
        cancel_grace: opts.core.cancel_grace,
    };
    tokio::spawn(async move {
        loop {
            let executor: Arc<dyn agent::Executor> = Arc::new(agent::ProcessExecutor);
            match agent::run(options.clone(), executor, stop.clone()).await {
                Ok(AgentExit::Recycle { next_generation }) => options.generation = next_generation,
                Ok(AgentExit::Stopped) => return,
                Err(e) => {
                    tracing::error!(error = %e, "local worker stopped");
                    return;
                }
            }
        }
    })
}

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}
