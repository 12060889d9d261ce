//! `opsdeckd serve`: open the store, start the core, listen, and run until
//! shutdown. The caller owns the shutdown signal, so tests and the bench run
//! the same engine the binary does.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;

use crate::agent::{self, AgentExit, AgentOptions};
use crate::api::{self, Api, Auth, Listeners};
use crate::core::{self, CoreConfig};
use crate::ha::{self, HaOptions, HaSettings, Role};
use crate::metrics::{self, Readiness, ReadyState};
use crate::notify;
use crate::private;
use crate::store::{self, Leadership};

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
    /// `/metrics`, `/healthz` and `/readyz`; `None`: not served.
    pub metrics_listen: Option<String>,
    /// Bearer tokens (by hash) with their identities and roles.
    pub tokens: Vec<crate::config::TokenEntry>,
    /// Roles of callers on the Unix socket.
    pub unix: crate::config::UnixSection,
    /// `--advertise` and `[ha]`: several engines on one PostgreSQL database.
    pub ha: HaSettings,
    /// `[tls]`: TLS (and, with a client CA, mutual TLS) on the TCP listener.
    pub tls: Option<opsdeck_proto::tls::ServerTls>,
    /// `[[tls.client]]`: client certificates that identify their callers.
    pub tls_clients: Vec<crate::config::TlsClient>,
    /// `[retention]`: how long history stays in the database.
    pub retention: crate::config::RetentionSection,
    /// `[[policy]]`: queues whose steps need another person's approval.
    pub policies: Vec<crate::domain::policy::Policy>,
    /// `[[notify]]` and `[notifications]`: what delivers the outbox.
    pub notifications: Arc<crate::notifications::Delivery>,
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

/// How long a deposed leader waits for its calls in flight to be answered
/// before it exits.
const STEP_DOWN_BOUND: Duration = Duration::from_secs(3);

/// Runs an engine until `shutdown` is cancelled. `on_bound` hears where it
/// listens as soon as the listeners are open.
pub async fn run(
    opts: ServeOptions,
    shutdown: CancellationToken,
    on_bound: impl FnOnce(&Bound),
) -> anyhow::Result<()> {
    if let Some(warning) = private::data_dir_warning(&opts.data_dir) {
        tracing::warn!("{warning}");
    }
    private::create_dir_all(&opts.data_dir)
        .with_context(|| format!("cannot create the data dir {}", opts.data_dir.display()))?;
    opts.ha.check()?;
    let store = store::open(&opts.database).await.with_context(|| {
        format!(
            "cannot open the database {}",
            store::redacted(&opts.database)
        )
    })?;
    let core_stop = CancellationToken::new();
    let core = core::CoreHandle::unstarted();
    let tls = match &opts.tls {
        Some(tls) if opts.listen.is_some() => Some(
            tls.load()
                .context("cannot set up TLS for the TCP listener")?,
        ),
        _ => None,
    };

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
    let advertise = opts
        .ha
        .advertise
        .clone()
        .unwrap_or_else(|| default_advertise(&bound, tls.is_some()));
    let ha = HaOptions {
        holder: format!("{advertise} on {}", hostname()),
        advertise,
        leader_ttl: opts.ha.leader_ttl,
    };

    // Take the lead now if it is free (always, on SQLite), so that a lone
    // engine answers its very first call as the leader.
    let (role_tx, role) = tokio::sync::watch::channel(Role::Standby {
        leader: None,
        epoch: 0,
    });
    // Renewing a lead starts the moment it is won, and goes on while the
    // state loads: a load longer than the TTL must not let another engine
    // take the lead meanwhile.
    let lead_stop = CancellationToken::new();
    let keep_lead = |epoch: u64| {
        let (store, ha, stop) = (store.clone(), ha.clone(), lead_stop.clone());
        tokio::spawn(async move { ha::hold(&store, &ha, epoch, &stop).await })
    };
    let mut core_task = None;
    match store
        .lead(&ha.holder, &ha.advertise, ha.leader_ttl, None)
        .await
        .context("cannot take part in the leader election on the database")?
    {
        Leadership::Leader { epoch } => {
            let mut renewing = keep_lead(epoch);
            let task = load_while_leading(&core, &opts, &store, &core_stop, &mut renewing).await?;
            core_task = Some((task, renewing));
            role_tx.send_replace(Role::Leader { epoch });
        }
        Leadership::Follower { epoch, address } => {
            tracing::info!(epoch, leader = ?address, advertise = %ha.advertise, "another engine leads; standing by");
            role_tx.send_replace(Role::Standby {
                leader: address,
                epoch,
            });
        }
    }

    if let Some(addr) = bound.tcp {
        private::write(&opts.data_dir.join(ADDR_FILE), format!("{addr}\n"))
            .with_context(|| format!("cannot write {}", opts.data_dir.join(ADDR_FILE).display()))?;
    }
    let metrics_listener = match &opts.metrics_listen {
        Some(addr) => Some(metrics::bind(addr, &opts.data_dir).await?),
        None => None,
    };
    tracing::info!(tcp = ?bound.tcp, socket = ?bound.socket, database = %store::redacted(&opts.database), "opsdeckd serving");
    on_bound(&bound);

    let api = Api {
        core: core.clone(),
        store: store.clone(),
        limits: opts.core.limits.clone(),
        engine_id: format!("{}:{}", hostname(), std::process::id()),
        role: role.clone(),
        policies: opts.policies.clone().into(),
    };
    let server_stop = CancellationToken::new();
    let server = tokio::spawn(api::serve(
        api,
        Auth::new(&opts.tokens, &opts.tls_clients, opts.unix.clone()),
        Listeners { tcp, unix, tls },
        server_stop.clone(),
    ));
    let readiness = Readiness::default();
    let ops_stop = CancellationToken::new();
    let sources = metrics::Sources {
        core: core.clone(),
        store: store.clone(),
        readiness: readiness.clone(),
    };
    if let Some(listener) = metrics_listener {
        tokio::spawn(metrics::serve(listener, sources.clone(), ops_stop.clone()));
    }
    let _watchdog = notify::watchdog(sources, ops_stop.clone());
    let leading = role.borrow().is_leader();
    readiness.set(if leading {
        ReadyState::Serving
    } else {
        ReadyState::Standby
    });
    notify::ready(&format!(
        "{} on {}",
        if leading { "leading" } else { "standing by" },
        describe(&bound)
    ));

    let (epoch, mut core_task, mut renewing) = match core_task {
        Some((task, renewing)) => (role.borrow().epoch(), task, renewing),
        None => match ha::campaign(&store, &ha, &role_tx, &shutdown).await {
            None => {
                // Shut down while standing by: nothing to commit or hand over.
                readiness.set(ReadyState::Stopping);
                notify::stopping("stopping");
                ops_stop.cancel();
                server_stop.cancel();
                let _ = tokio::time::timeout(SHUTDOWN_BOUND, server).await;
                if let Some(path) = &opts.socket {
                    let _ = std::fs::remove_file(path);
                }
                tracing::info!("opsdeckd stopped");
                return Ok(());
            }
            Some(epoch) => {
                tracing::info!(epoch, "this engine now leads; loading the state");
                let mut renewing = keep_lead(epoch);
                let task =
                    load_while_leading(&core, &opts, &store, &core_stop, &mut renewing).await?;
                role_tx.send_replace(Role::Leader { epoch });
                (epoch, task, renewing)
            }
        },
    };
    tracing::info!(epoch, advertise = %ha.advertise, "leading");
    readiness.set(ReadyState::Serving);
    notify::status(&format!("leading (epoch {epoch}) on {}", describe(&bound)));
    let workers_stop = CancellationToken::new();
    let local = local_workers(&opts, &bound, workers_stop.clone());
    // Only the leader prunes; it stops with the lead.
    let _retention =
        crate::retention::spawn(store.clone(), opts.retention.clone(), lead_stop.clone());
    // Only the leader delivers notifications; it stops with the lead.
    let _delivery = crate::notifications::deliver::spawn(
        opts.notifications.clone(),
        store.clone(),
        core.clone(),
        lead_stop.clone(),
    );

    let lost = tokio::select! {
        _ = shutdown.cancelled() => None,
        held = &mut renewing => match held {
            Ok(held) => held.err(),
            Err(e) => Some(format!("renewing the lead failed: {e}")),
        },
        ended = &mut core_task => Some(match ended {
            Ok(Err(e)) => e.to_string(),
            Ok(Ok(())) => "the engine core stopped".to_owned(),
            Err(e) => format!("the engine core failed: {e}"),
        }),
    };
    lead_stop.cancel();
    if let Some(why) = lost {
        // Another engine leads, or may: stop answering and writing at once,
        // and leave it to the supervisor to start this one again as a standby.
        role_tx.send_replace(Role::Standby {
            leader: None,
            epoch,
        });
        core_stop.cancel();
        workers_stop.cancel();
        server_stop.cancel();
        if let Some(path) = &opts.socket {
            let _ = std::fs::remove_file(path);
        }
        tracing::error!(epoch, "stepping down: {why}");
        readiness.set(ReadyState::Standby);
        notify::stopping(&format!("stepping down: {why}"));
        ops_stop.cancel();
        // Calls already in flight are answered UNAVAILABLE (the core is
        // stopped, nothing more is written) rather than cut off by the exit.
        if tokio::time::timeout(STEP_DOWN_BOUND, server).await.is_err() {
            tracing::warn!(
                "calls still open {STEP_DOWN_BOUND:?} after stepping down; leaving them"
            );
        }
        anyhow::bail!(
            "this engine stepped down as leader (epoch {epoch}): {why}; it exits so that its supervisor starts it again as a standby"
        );
    }
    tracing::info!("shutting down: no new requests; finishing the commit in flight");
    readiness.set(ReadyState::Stopping);
    notify::stopping("stopping: finishing the commit in flight");
    ops_stop.cancel();
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
    // Hand the lead over at once rather than when it lapses.
    if let Err(e) = store.resign(epoch).await {
        tracing::warn!(error = %e, "could not give up the lead; a standby takes it once it lapses");
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

/// Loads the state for a lead just won while `renewing` keeps the lead;
/// losing it meanwhile ends the start (the supervisor starts the engine
/// again, as a standby).
async fn load_while_leading(
    core: &core::CoreHandle,
    opts: &ServeOptions,
    store: &Arc<dyn store::Store>,
    stop: &CancellationToken,
    renewing: &mut tokio::task::JoinHandle<Result<(), String>>,
) -> anyhow::Result<core::CoreTask> {
    tokio::select! {
        started = core::start(core, opts.core.clone(), store.clone(), stop.clone()) => {
            started.context("took the lead but cannot load the state from the database")
        }
        lost = renewing => Err(anyhow::anyhow!(
            "lost the lead while loading the state: {}",
            match lost {
                Ok(Err(why)) => why,
                Ok(Ok(())) => "its renewal stopped".to_owned(),
                Err(e) => e.to_string(),
            }
        )),
    }
}

/// Where the engine listens, for status lines.
fn describe(bound: &Bound) -> String {
    let mut parts = Vec::new();
    if let Some(a) = bound.tcp {
        parts.push(format!("tcp {a}"));
    }
    if let Some(p) = &bound.socket {
        parts.push(format!("unix {}", p.display()));
    }
    parts.join(", ")
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
        private::create_socket_dirs(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    // Made under the restricted umask: open it as far as the umask the
    // engine was started with allows (`UMask=0007`: the group may connect).
    if let Some(inherited) = private::inherited_umask() {
        let mode = std::fs::Permissions::from_mode(private::socket_mode(inherited));
        std::fs::set_permissions(path, mode)
            .with_context(|| format!("cannot set the permissions of {}", path.display()))?;
    }
    Ok(listener)
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
        engine: engine.into(),
        spool_dir: Some(opts.data_dir.join("spool").join(&worker_id)),
        worker_id,
        queues: vec![crate::domain::ANY_QUEUE.to_owned()],
        slots: opts.local_workers,
        labels: [("local".to_owned(), "true".to_owned())]
            .into_iter()
            .collect(),
        token: None,
        tls: None,
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

/// Where clients reach this engine when `--advertise` is not given: its
/// TCP address (with the host name for a wildcard address; `https://` when
/// it speaks TLS), else its socket.
fn default_advertise(bound: &Bound, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    match (bound.tcp, &bound.socket) {
        (Some(addr), _) if addr.ip().is_unspecified() => {
            format!("{scheme}://{}:{}", hostname(), addr.port())
        }
        (Some(addr), _) => format!("{scheme}://{addr}"),
        (None, Some(path)) => format!("unix://{}", path.display()),
        (None, None) => hostname(),
    }
}

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}
