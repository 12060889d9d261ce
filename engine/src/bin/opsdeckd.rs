//! `opsdeckd`: the opsdeck engine and its worker.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use opsdeck_engine::config::{
    ConfigFile, DEFAULT_CONFIG, DEFAULT_METRICS_LISTEN, default_data_dir,
};
use opsdeck_engine::serve::{self, ServeOptions};
use opsdeck_engine::store::redacted;
use opsdeck_engine::{agent, allocator, bench, logging, manual, private};
use tokio_util::sync::CancellationToken;

/// mimalloc rather than the system allocator; see [`allocator`].
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "opsdeckd",
    version,
    about = "The opsdeck engine: runs, queues, workers, leases, approvals and events over gRPC"
)]
struct Cli {
    /// Log format on stderr and in the log files; default: [log] format, or plain.
    #[arg(long, global = true, env = "OPSDECK_LOG_FORMAT", value_parser = ["plain", "json"])]
    log_format: Option<String>,
    /// Also write daily rolling log files here (opsdeckd.YYYY-MM-DD.log);
    /// default: [log] dir, or none.
    #[arg(long, global = true, env = "OPSDECK_LOG_DIR", value_name = "DIR")]
    log_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the engine.
    Serve(ServeArgs),
    /// Run a worker that takes steps from the engine's queues.
    Worker(agent::WorkerArgs),
    /// Apply the database migrations and exit.
    Migrate(DbArgs),
    /// Measure throughput and latency on a temporary engine.
    Bench(bench::BenchArgs),
    /// Copy a live SQLite database consistently to PATH (a new file), e.g.
    /// for a nightly backup; restore by stopping the engine and putting the
    /// copy in the database's place.
    Backup {
        /// The file to write; it must not exist yet.
        path: PathBuf,
        /// The engine's config, for [engine] data_dir and database.
        #[arg(long, env = "OPSDECK_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Check a config file and exit.
    CheckConfig {
        #[arg(
            long,
            env = "OPSDECK_CONFIG",
            default_value = "/etc/opsdeck/engine.toml"
        )]
        config: PathBuf,
    },
    /// Make a bearer token: prints it once, and the config lines holding its hash.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Print the completion script for a shell, e.g.
    /// `opsdeckd completions bash > /etc/bash_completion.d/opsdeckd`.
    Completions {
        #[arg(value_enum)]
        shell: manual::Shell,
    },
    /// Print the man page, or with --out-dir write one per command there
    /// (opsdeckd.1, opsdeckd-serve.1, ...).
    Manpage {
        /// The directory to write the pages to, e.g. /usr/local/share/man/man1.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    New {
        #[arg(long)]
        identity: String,
        /// What the token may do (repeat for more): viewer, operator,
        /// approver, admin, or agent for a worker. Default: viewer.
        #[arg(long = "role", value_name = "ROLE", value_parser = parse_role)]
        roles: Vec<opsdeck_engine::domain::Role>,
        /// A group the identity belongs to, for approval steps that name
        /// one (repeat for more).
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
    },
}

fn parse_role(word: &str) -> Result<opsdeck_engine::domain::Role, String> {
    opsdeck_engine::domain::Role::parse(word.trim()).ok_or_else(|| {
        format!("{word:?} is not a role; use viewer, operator, approver, admin or agent")
    })
}

#[derive(clap::Args)]
struct DbArgs {
    #[arg(long, env = "OPSDECK_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Database URL; default: sqlite://DATA_DIR/opsdeck.db.
    #[arg(long, env = "OPSDECK_DATABASE")]
    database: Option<String>,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML config file (tokens, timings, limits).
    #[arg(long, env = "OPSDECK_CONFIG")]
    config: Option<PathBuf>,
    /// Where state lives; default $XDG_STATE_HOME/opsdeck, or /var/lib/opsdeck as a service.
    #[arg(long, env = "OPSDECK_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// TCP address to listen on (port 0 picks one); "none" for no TCP.
    #[arg(long, env = "OPSDECK_LISTEN")]
    listen: Option<String>,
    /// Unix socket; default DATA_DIR/engine.sock; "none" for no socket.
    #[arg(long, env = "OPSDECK_SOCKET")]
    socket: Option<PathBuf>,
    /// Database URL; default sqlite://DATA_DIR/opsdeck.db.
    #[arg(long, env = "OPSDECK_DATABASE")]
    database: Option<String>,
    /// Worker slots to run in this process (serving every queue).
    #[arg(long, env = "OPSDECK_LOCAL_WORKERS")]
    local_workers: Option<u32>,
    /// Run local workers although [secrets] are configured: their steps run
    /// as the engine's user, which can read the secret files and database.
    #[arg(long)]
    trust_local_steps: bool,
    /// Where /metrics, /healthz and /readyz listen (port 0 picks one);
    /// "none" for none. Default: [metrics] listen, or 127.0.0.1:9465.
    #[arg(long, env = "OPSDECK_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<String>,
    #[arg(long, env = "OPSDECK_HEARTBEAT_INTERVAL", value_parser = humantime::parse_duration)]
    heartbeat_interval: Option<Duration>,
    #[arg(long, env = "OPSDECK_LEASE_TTL", value_parser = humantime::parse_duration)]
    lease_ttl: Option<Duration>,
    /// A worker silent for this long is offline.
    #[arg(long, env = "OPSDECK_WORKER_TIMEOUT", value_parser = humantime::parse_duration)]
    worker_timeout: Option<Duration>,
    /// SIGTERM, then SIGKILL after this long, when a step is cancelled.
    #[arg(long, env = "OPSDECK_CANCEL_GRACE", value_parser = humantime::parse_duration)]
    cancel_grace: Option<Duration>,
    /// Quarantine a run name after this many stuck leases within the window (0: never).
    #[arg(long, env = "OPSDECK_QUARANTINE_AFTER", value_name = "N")]
    quarantine_after: Option<u32>,
    /// The window stuck leases are counted in for a quarantine.
    #[arg(long, env = "OPSDECK_QUARANTINE_WINDOW", value_name = "DURATION", value_parser = humantime::parse_duration)]
    quarantine_window: Option<Duration>,
    /// Where clients reach this engine, as standbys name it (several engines
    /// on one PostgreSQL database); default: its TCP address.
    #[arg(long, env = "OPSDECK_ADVERTISE", value_name = "ADDR")]
    advertise: Option<String>,
    /// How long the lead lasts unless renewed: how soon a standby takes over
    /// from a leader that died.
    #[arg(long, env = "OPSDECK_LEADER_TTL", value_name = "DURATION", value_parser = humantime::parse_duration)]
    leader_ttl: Option<Duration>,
}

fn main() -> ExitCode {
    // First, before any thread starts (the umask is process-wide): whatever
    // opsdeckd creates — data dir, database, spool, logs, backups — is the
    // owner's alone. See `opsdeck_engine::private`.
    private::restrict_umask();
    allocator::return_freed_memory_promptly();
    let cli = parse_cli();
    // The engine and the worker hold tokens, the database URL and secrets
    // in their memory and environment; their steps run as the same user.
    let hardened = matches!(cli.command, Command::Serve(_) | Command::Worker(_))
        .then(private::make_non_dumpable);
    let _log = match init_logging(&cli) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("opsdeckd: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(Err(e)) = hardened {
        tracing::warn!(
            "cannot make this process non-dumpable (prctl PR_SET_DUMPABLE: {e}); \
             its steps may be able to read its environment and memory"
        );
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("opsdeckd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("opsdeckd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The command line; for `worker`, also whether `--token` was typed on it
/// (rather than read from `OPSDECK_TOKEN`), which deserves a warning.
fn parse_cli() -> Cli {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Command::Worker(args) = &mut cli.command {
        args.token_on_command_line = matches
            .subcommand_matches("worker")
            .and_then(|m| m.value_source("token"))
            == Some(ValueSource::CommandLine);
    }
    cli
}

/// Flags, then `OPSDECK_LOG_*`, then the engine's config file ([log]).
fn init_logging(cli: &Cli) -> anyhow::Result<logging::LogGuard> {
    let file = match &cli.command {
        Command::Serve(args) => engine_config(args.config.as_deref())?.log,
        _ => Default::default(),
    };
    let format = match cli.log_format.as_deref().or(file.format.as_deref()) {
        Some(word) => word.parse().map_err(anyhow::Error::msg)?,
        None => logging::Format::Plain,
    };
    logging::init(&logging::LogOptions {
        format,
        dir: cli.log_dir.clone().or(file.dir),
    })
}

/// The engine's config: `--config`, else /etc/opsdeck/engine.toml when it
/// exists, else the defaults.
fn engine_config(path: Option<&std::path::Path>) -> anyhow::Result<ConfigFile> {
    let default = std::path::Path::new(DEFAULT_CONFIG);
    Ok(match path {
        Some(path) => ConfigFile::load(path)?,
        None if default.exists() => ConfigFile::load(default)?,
        None => ConfigFile::default(),
    })
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve_command(args).await,
        Command::Worker(args) => agent::worker_command(args).await,
        Command::Migrate(args) => {
            let data_dir = args.data_dir.unwrap_or_else(default_data_dir);
            private::create_dir_all(&data_dir)
                .with_context(|| format!("cannot create the data dir {}", data_dir.display()))?;
            let url = args.database.unwrap_or_else(|| sqlite_url(&data_dir));
            opsdeck_engine::store::open(&url)
                .await
                .with_context(|| format!("cannot migrate {}", redacted(&url)))?;
            println!("migrations applied to {}", redacted(&url));
            Ok(())
        }
        Command::Bench(args) => bench::run(args).await,
        Command::Completions { shell } => print(&manual::completions(Cli::command(), shell)),
        Command::Manpage { out_dir: None } => print(&manual::man_page(Cli::command())?),
        Command::Manpage { out_dir: Some(dir) } => {
            for page in manual::write_man_pages(Cli::command(), &dir)
                .with_context(|| format!("cannot write the man pages to {}", dir.display()))?
            {
                println!("{}", page.display());
            }
            Ok(())
        }
        Command::Backup { path, config, db } => {
            let file = engine_config(config.as_deref())?;
            let data_dir = db
                .data_dir
                .or(file.engine.data_dir)
                .unwrap_or_else(default_data_dir);
            let url = db
                .database
                .or(file.engine.database)
                .unwrap_or_else(|| sqlite_url(&data_dir));
            opsdeck_engine::backup::backup(&url, &path).await?;
            println!("backed up {} to {}", redacted(&url), path.display());
            Ok(())
        }
        Command::CheckConfig { config } => {
            let file = ConfigFile::load(&config)?;
            let secrets = opsdeck_engine::secrets::Secrets::load(&file.secrets)
                .map_err(anyhow::Error::msg)?;
            opsdeck_engine::notifications::Delivery::new(
                &file.notify,
                file.notifications.clone(),
                &secrets,
            )
            .map_err(anyhow::Error::msg)?;
            if let Some(tls) = &file.tls {
                tls.server_tls().load()?;
            }
            // The data dir the engine would use: a warning, not a refusal,
            // as a running engine's files are at stake and only a person
            // should change who may read them.
            let data_dir = file
                .engine
                .data_dir
                .clone()
                .unwrap_or_else(default_data_dir);
            if let Some(warning) = private::data_dir_warning(&data_dir) {
                eprintln!("warning: {warning}");
            }
            for warning in file.warnings() {
                eprintln!("warning: {warning}");
            }
            println!("{}: ok", config.display());
            Ok(())
        }
        Command::Token {
            command:
                TokenCommand::New {
                    identity,
                    mut roles,
                    groups,
                },
        } => {
            anyhow::ensure!(
                !identity.trim().is_empty(),
                "--identity is empty; name who will use the token"
            );
            if roles.is_empty() {
                roles.push(opsdeck_engine::domain::Role::Viewer);
            }
            roles.sort();
            roles.dedup();
            let list = |items: Vec<String>| {
                let quoted: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
                format!("[{}]", quoted.join(", "))
            };
            let token = format!("odk_{}", hex_token());
            println!("token (shown once; give it to {identity}): {token}");
            println!();
            println!("add to the engine's config:");
            println!("[[token]]");
            println!("identity = {identity:?}");
            println!(
                "sha256 = \"{}\"",
                opsdeck_engine::api::auth::token_hash(&token)
            );
            println!(
                "roles = {}",
                list(roles.iter().map(|r| r.word().to_owned()).collect())
            );
            if !groups.is_empty() {
                println!("groups = {}", list(groups));
            }
            Ok(())
        }
    }
}

/// Bytes to stdout; a closed pipe (`| head`) is an error, not a panic.
fn print(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
}

fn hex_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn sqlite_url(data_dir: &std::path::Path) -> String {
    format!("sqlite://{}", data_dir.join("opsdeck.db").display())
}

async fn serve_command(args: ServeArgs) -> anyhow::Result<()> {
    let file = engine_config(args.config.as_deref())?;
    let mut core = file.core_config();
    core.heartbeat_interval = args.heartbeat_interval.unwrap_or(core.heartbeat_interval);
    core.lease_ttl = args.lease_ttl.unwrap_or(core.lease_ttl);
    core.worker_timeout = args.worker_timeout.unwrap_or(core.worker_timeout);
    core.cancel_grace = args.cancel_grace.unwrap_or(core.cancel_grace);
    core.quarantine_after = args.quarantine_after.unwrap_or(core.quarantine_after);
    core.quarantine_window = args.quarantine_window.unwrap_or(core.quarantine_window);
    core.secrets =
        opsdeck_engine::secrets::Secrets::load(&file.secrets).map_err(anyhow::Error::msg)?;
    core.notify = std::sync::Arc::new(
        opsdeck_engine::notifications::Rules::new(&file.notify).map_err(anyhow::Error::msg)?,
    );
    let notifications = opsdeck_engine::notifications::Delivery::new(
        &file.notify,
        file.notifications.clone(),
        &core.secrets,
    )
    .map_err(anyhow::Error::msg)?;
    // A finished run is not kept in memory past the time its history is kept.
    core.finished_runs_kept_for = core.finished_runs_kept_for.min(file.retention.runs);
    anyhow::ensure!(
        core.heartbeat_interval < core.lease_ttl,
        "heartbeat_interval ({:?}) must be shorter than lease_ttl ({:?}), or leases expire between heartbeats",
        core.heartbeat_interval,
        core.lease_ttl
    );
    let e = &file.engine;
    let data_dir = args
        .data_dir
        .or(e.data_dir.clone())
        .unwrap_or_else(default_data_dir);
    let listen = args
        .listen
        .or(e.listen.clone())
        .unwrap_or_else(|| format!("127.0.0.1:{}", opsdeck_proto::DEFAULT_PORT));
    let socket = args
        .socket
        .or(e.socket.clone())
        .unwrap_or_else(|| data_dir.join("engine.sock"));
    for warning in file.warnings() {
        tracing::warn!("{warning}");
    }
    let local_workers = args.local_workers.or(e.local_workers).unwrap_or(0);
    anyhow::ensure!(
        local_workers == 0
            || file.secrets.is_empty()
            || args.trust_local_steps
            || e.trust_local_steps == Some(true),
        "--local-workers {local_workers} with [secrets] in the config: the steps of the engine's own \
         workers run as the engine's user, which can read the secret files and the database; run \
         `opsdeckd worker` processes as another user instead, or accept this with \
         --trust-local-steps ([engine] trust_local_steps = true)"
    );
    let opts = ServeOptions {
        database: args
            .database
            .or(e.database.clone())
            .unwrap_or_else(|| sqlite_url(&data_dir)),
        listen: (listen != "none").then_some(listen),
        socket: (socket.as_os_str() != "none").then_some(socket),
        local_workers,
        core,
        metrics_listen: Some(
            args.metrics_listen
                .or(file.metrics.listen.clone())
                .unwrap_or_else(|| DEFAULT_METRICS_LISTEN.to_owned()),
        )
        .filter(|l| !l.is_empty() && l != "none"),
        tokens: file.token.clone(),
        unix: file.unix.clone(),
        ha: opsdeck_engine::ha::HaSettings {
            advertise: args.advertise.or(file.ha.advertise.clone()),
            leader_ttl: args
                .leader_ttl
                .or(file.ha.leader_ttl)
                .unwrap_or(opsdeck_engine::ha::DEFAULT_LEADER_TTL),
        },
        tls: file.tls.as_ref().map(|t| t.server_tls()),
        retention: file.retention.clone(),
        policies: file.policy.clone(),
        notifications: std::sync::Arc::new(notifications),
        tls_clients: file
            .tls
            .as_ref()
            .map(|t| t.client.clone())
            .unwrap_or_default(),
        data_dir,
    };
    let scheme = if opts.tls.is_some() { "https" } else { "http" };
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        signal.cancel();
    });
    serve::run(opts, shutdown, |bound| {
        let mut parts = Vec::new();
        if let Some(a) = bound.tcp {
            parts.push(format!("{scheme}://{a}"));
        }
        if let Some(p) = &bound.socket {
            parts.push(format!("unix://{}", p.display()));
        }
        println!("opsdeckd listening on {}", parts.join(" and "));
    })
    .await
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
