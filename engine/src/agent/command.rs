//! `opsdeckd worker`: flags, signals, and the re-exec that recycles it.
//!
//! Signals: the first SIGTERM or SIGINT drains (no new steps, running ones
//! finish, then exit — what `systemctl stop` should do to a worker); the
//! second stops the running steps (SIGTERM, SIGKILL after the grace) and
//! exits; a third exits at once, killing their process groups.

use std::{
    collections::BTreeMap,
    ffi::OsString,
    fmt,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};
use opsdeck_proto::failover::EngineList;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{AgentExit, AgentOptions, ProcessExecutor, check_queue_name, host_name};

/// Set by a recycling worker for the process that replaces it.
const GENERATION_ENV: &str = "OPSDECK_WORKER_GENERATION";

/// Run steps from an opsdeck engine's queues.
#[derive(Clone, clap::Args)]
pub struct WorkerArgs {
    /// The engine: http://HOST:PORT, HOST:PORT or unix:///PATH; several,
    /// comma-separated, for engines sharing a database (the worker follows
    /// the one that leads).
    #[arg(
        long,
        value_name = "ADDR",
        env = "OPSDECK_ENGINE",
        default_value = "http://127.0.0.1:7465"
    )]
    pub engine: EngineList,

    /// This worker's stable id [default: the host name].
    #[arg(long = "id", value_name = "ID", env = "OPSDECK_WORKER_ID")]
    pub id: Option<String>,

    /// A queue to take steps from; repeat for several (the variable takes a
    /// comma-separated list).
    #[arg(
        long = "queue",
        value_name = "QUEUE",
        env = "OPSDECK_QUEUES",
        value_delimiter = ',',
        required = true,
        value_parser = parse_queue
    )]
    pub queues: Vec<String>,

    /// How many steps may run at once.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub slots: u32,

    /// A label steps can select this worker by (`worker = { KEY = "VALUE" }`
    /// in a spec); repeat for several.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,

    /// The bearer token to present to the engine. On the command line it is
    /// visible to every local user in `ps`: prefer --token-file.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "OPSDECK_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// A file holding the bearer token (surrounding whitespace is ignored;
    /// an empty file gives none). It must be private to its owner
    /// (chmod 600); under systemd, a credential (LoadCredential=).
    #[arg(long, value_name = "FILE", env = "OPSDECK_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// Whether --token was typed on the command line (not read from
    /// OPSDECK_TOKEN); set by the caller from clap's matches.
    #[arg(skip)]
    pub token_on_command_line: bool,

    /// For an https:// engine: PEM file of the CA that signed its
    /// certificate [default: the system's trusted roots].
    #[arg(long, value_name = "FILE", env = "OPSDECK_CA")]
    pub ca: Option<PathBuf>,

    /// For an engine that requires client certificates (mutual TLS): this
    /// worker's PEM certificate; needs --key.
    #[arg(long, value_name = "FILE", env = "OPSDECK_CERT", requires = "key")]
    pub cert: Option<PathBuf>,

    /// The private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", env = "OPSDECK_KEY", requires = "cert")]
    pub key: Option<PathBuf>,

    /// How long a cancelled or timed-out step has between SIGTERM and SIGKILL.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub cancel_grace: Duration,

    /// Where results wait on disk until the engine acknowledges them
    /// [default: DATA_DIR/spool/ID, DATA_DIR being $XDG_STATE_HOME/opsdeck or
    /// /var/lib/opsdeck as a service]
    #[arg(long, value_name = "DIR", env = "OPSDECK_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
}

impl fmt::Debug for WorkerArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerArgs")
            .field("engine", &self.engine)
            .field("id", &self.id)
            .field("queues", &self.queues)
            .field("slots", &self.slots)
            .field("labels", &self.labels)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("cancel_grace", &self.cancel_grace)
            .field("spool_dir", &self.spool_dir)
            .finish()
    }
}

impl WorkerArgs {
    /// The TLS files, read and checked; `None` when none is given.
    fn tls(&self) -> anyhow::Result<Option<tonic::transport::ClientTlsConfig>> {
        let tls = opsdeck_proto::tls::ClientTls {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        };
        if tls == opsdeck_proto::tls::ClientTls::default() {
            return Ok(None);
        }
        Ok(Some(tls.load()?))
    }

    /// The token: the content of --token-file, or --token (OPSDECK_TOKEN).
    /// An empty file gives way to --token, so that a unit can always name a
    /// token file while an older setup still sets OPSDECK_TOKEN.
    fn token(&self) -> anyhow::Result<Option<String>> {
        let from_file = match &self.token_file {
            Some(path) => read_token_file(path)?,
            None => None,
        };
        match (from_file, &self.token) {
            (Some(_), Some(_)) => bail!(
                "both --token-file and --token (or OPSDECK_TOKEN) give a token; keep the file only"
            ),
            (Some(token), None) => Ok(Some(token)),
            (None, token) => Ok(token.clone()),
        }
    }

    /// The agent's options, for this process's `generation`.
    pub fn options(&self, generation: u64) -> anyhow::Result<AgentOptions> {
        let worker_id = match &self.id {
            Some(id) => id.clone(),
            None => host_name()
                .context("could not read the host name to use as the worker id; pass --id")?,
        };
        let mut seen = std::collections::HashSet::new();
        let queues: Vec<String> = self
            .queues
            .iter()
            .filter(|q| seen.insert(*q))
            .cloned()
            .collect();
        let mut labels = BTreeMap::new();
        for (key, value) in &self.labels {
            if labels.insert(key.clone(), value.clone()).is_some() {
                bail!("label {key:?} is given twice");
            }
        }
        let spool_dir = self.spool_dir.clone().unwrap_or_else(|| {
            crate::config::default_data_dir()
                .join("spool")
                .join(&worker_id)
        });
        let opts = AgentOptions {
            engine: self.engine.clone(),
            spool_dir: Some(spool_dir),
            worker_id,
            queues,
            slots: self.slots,
            labels,
            token: self.token()?,
            tls: self.tls()?,
            generation,
            cancel_grace: self.cancel_grace,
        };
        opts.validate()?;
        Ok(opts)
    }
}

/// Reads a token file, refusing one that other users could read too (the
/// token would be theirs as well). Read at every start, recycles included,
/// so a token replaced in the file is used from the next recycle on.
fn read_token_file(path: &Path) -> anyhow::Result<Option<String>> {
    use std::io::Read as _;
    use std::os::unix::fs::PermissionsExt as _;

    let shown = path.display();
    let cannot_read = || format!("cannot read the token file {shown}");
    // The mode of the file opened, not of whatever the path names later.
    let mut file = std::fs::File::open(path).with_context(cannot_read)?;
    let mode = file
        .metadata()
        .with_context(cannot_read)?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o077 != 0 {
        bail!(
            "the token file {shown} is open to other users (mode {mode:04o}); \
             make it private to the worker's user: chmod 600 {shown}"
        );
    }
    let mut text = String::new();
    file.read_to_string(&mut text).with_context(cannot_read)?;
    let token = text.trim();
    if token.is_empty() {
        // So that a unit can always name a token file (a credential with an
        // empty default), whether or not this worker needs a token.
        info!(file = %shown, "the token file is empty");
        return Ok(None);
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        bail!("the token file {shown} must hold the token alone: printable ASCII without spaces");
    }
    Ok(Some(token.to_owned()))
}

/// Runs `opsdeckd worker`: serves the engine until a signal stops it, and
/// replaces itself with a fresh process when the engine asks for a recycle.
pub async fn worker_command(args: WorkerArgs) -> anyhow::Result<()> {
    let generation = generation_from_env(std::env::var_os(GENERATION_ENV))?;
    if args.token_on_command_line {
        warn!(
            "--token on the command line is visible to every local user in ps; \
             use --token-file (or OPSDECK_TOKEN_FILE)"
        );
    }
    let opts = args.options(generation)?;
    let grace = opts.cancel_grace;
    info!(
        worker_id = opts.worker_id,
        engine = %opts.engine,
        queues = opts.queues.join(","),
        slots = opts.slots,
        generation,
        spool = %opts.spool_dir.as_deref().map(|d| d.display().to_string()).unwrap_or_default(),
        "worker starting"
    );

    let mut signals = Signals::new()?;
    let shutdown = CancellationToken::new();
    let kill = CancellationToken::new();
    let agent = super::run_until(
        opts,
        Arc::new(ProcessExecutor),
        shutdown.clone(),
        kill.clone(),
    );
    tokio::pin!(agent);
    let mut received = 0;
    let exit = loop {
        tokio::select! {
            exit = &mut agent => break exit?,
            name = signals.recv() => {
                received += 1;
                match received {
                    1 => {
                        info!("{name}: draining — no new steps, running steps may finish; send it again to stop them");
                        shutdown.cancel();
                    }
                    2 => {
                        warn!(
                            "{name} again: stopping running steps (SIGTERM, SIGKILL after {}); a third signal exits at once",
                            humantime::format_duration(grace)
                        );
                        kill.cancel();
                    }
                    // Dropping the agent kills the steps' process groups.
                    _ => bail!("{name} a third time: exiting at once; running steps are killed"),
                }
            }
        }
    };
    match exit {
        AgentExit::Stopped => {
            info!("worker stopped");
            Ok(())
        }
        AgentExit::Recycle { next_generation } => Err(reexec(next_generation)),
    }
}

/// Replaces this process with a fresh copy of itself, same arguments, next
/// generation. Returns only if that failed.
fn reexec(next_generation: u64) -> anyhow::Error {
    let exe = match std::env::current_exe() {
        Ok(exe) => upgraded_path(exe),
        Err(e) => return anyhow!("could not find this program's path to recycle the worker: {e}"),
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    info!(next_generation, exe = %exe.display(), "recycling: starting a fresh worker process");
    // exec keeps the umask: hand the fresh process the one this process was
    // started with, for it to restrict again and give its steps. Files made
    // meanwhile by other threads are the spool's, whose modes are explicit.
    let restricted = crate::private::inherited_umask().map(nix::sys::stat::umask);
    let err = std::process::Command::new(&exe)
        .arg0(arg0)
        .args(args)
        .env(GENERATION_ENV, next_generation.to_string())
        .exec();
    if let Some(restricted) = restricted {
        nix::sys::stat::umask(restricted);
    }
    tracing::error!(exe = %exe.display(), "could not re-exec to recycle the worker: {err}");
    anyhow!(
        "could not re-exec {} to recycle the worker: {err}",
        exe.display()
    )
}

/// Linux names a running binary that was replaced on disk (an upgrade)
/// "/path (deleted)"; the file now at the path is the one a recycle should
/// start.
fn upgraded_path(exe: PathBuf) -> PathBuf {
    if !exe.exists()
        && let Some(path) = exe.to_str().and_then(|p| p.strip_suffix(" (deleted)"))
    {
        return PathBuf::from(path);
    }
    exe
}

fn generation_from_env(value: Option<OsString>) -> anyhow::Result<u64> {
    let Some(value) = value else { return Ok(1) };
    value
        .to_str()
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow!("{GENERATION_ENV} must be a whole number, not {value:?}"))
}

fn parse_queue(value: &str) -> Result<String, String> {
    let name = value.trim();
    check_queue_name(name).map_err(|e| e.to_string())?;
    Ok(name.to_owned())
}

fn parse_label(value: &str) -> Result<(String, String), String> {
    match value.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("invalid label {value:?}: use KEY=VALUE")),
    }
}

/// SIGTERM (systemd, kill) and SIGINT (Ctrl-C), as one stream.
struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        let listen = |kind| signal(kind).context("could not listen for signals");
        Ok(Self {
            term: listen(SignalKind::terminate())?,
            int: listen(SignalKind::interrupt())?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            Some(()) = self.term.recv() => "SIGTERM",
            Some(()) = self.int.recv() => "SIGINT",
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use clap::Parser;
    use opsdeck_proto::endpoint::EngineAddr;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        worker: WorkerArgs,
    }

    fn parse(args: &[&str]) -> Result<WorkerArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("opsdeckd").chain(args.iter().copied()))
            .map(|c| c.worker)
    }

    #[test]
    fn flags_become_options() {
        let args = parse(&[
            "--engine",
            "unix:///run/opsdeck/engine.sock",
            "--id",
            "build-7",
            "--queue",
            "build",
            "--queue",
            "deploy.eu",
            "--slots",
            "4",
            "--label",
            "zone=eu-1",
            "--cancel-grace",
            "1m 30s",
            "--spool-dir",
            "/var/spool/opsdeck/build-7",
        ])
        .unwrap();
        let opts = args.options(3).unwrap();
        assert_eq!(
            opts.engine,
            EngineAddr::Unix("/run/opsdeck/engine.sock".into())
        );
        assert_eq!(opts.worker_id, "build-7");
        assert_eq!(opts.queues, ["build", "deploy.eu"]);
        assert_eq!(opts.slots, 4);
        assert_eq!(
            opts.labels,
            BTreeMap::from([("zone".into(), "eu-1".into())])
        );
        assert_eq!(opts.cancel_grace, Duration::from_secs(90));
        assert_eq!(opts.generation, 3);
        assert_eq!(
            opts.spool_dir,
            Some(PathBuf::from("/var/spool/opsdeck/build-7"))
        );
    }

    #[test]
    fn defaults_fill_the_rest() {
        let opts = parse(&["--queue", "default"]).unwrap().options(1).unwrap();
        assert_eq!(opts.engine, EngineAddr::Tcp("http://127.0.0.1:7465".into()));
        assert_eq!(opts.slots, 1);
        assert_eq!(opts.cancel_grace, Duration::from_secs(10));
        assert!(!opts.worker_id.is_empty());
        let spool = opts.spool_dir.unwrap();
        assert!(
            spool.ends_with(format!("spool/{}", opts.worker_id)),
            "{spool:?}"
        );
    }

    #[test]
    fn bad_input_is_refused_with_a_reason() {
        let no_queue = parse(&[]).err().map(|e| e.kind());
        assert_eq!(
            no_queue,
            Some(clap::error::ErrorKind::MissingRequiredArgument)
        );
        let bad_queue = parse(&["--queue", "Build"])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            bad_queue.contains("invalid queue name \"Build\""),
            "{bad_queue}"
        );
        assert!(parse(&["--queue", "q", "--slots", "0"]).is_err());
        assert!(parse(&["--queue", "q", "--label", "novalue"]).is_err());
        assert!(parse(&["--queue", "q", "--engine", "ftp://x"]).is_err());
        let twice = parse(&["--queue", "q", "--label", "a=1", "--label", "a=2"])
            .unwrap()
            .options(1);
        assert!(twice.is_err());
    }

    #[test]
    fn a_comma_list_gives_several_queues() {
        let opts = parse(&["--queue", "a, b"]).unwrap().options(1).unwrap();
        assert_eq!(opts.queues, ["a", "b"]);
    }

    #[test]
    fn a_token_file_is_read_trimmed_and_must_be_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("worker.token");
        let path = file.to_str().unwrap();
        let chmod =
            |mode| std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        let token = |args: &[&str]| parse(args).unwrap().options(1).map(|o| o.token);

        std::fs::write(&file, "  tok_abc123\n").unwrap();
        chmod(0o600);
        let read = token(&["--queue", "q", "--token-file", path]).unwrap();
        assert_eq!(read.as_deref(), Some("tok_abc123"));

        for open in [0o640, 0o604, 0o620] {
            chmod(open);
            let refused = token(&["--queue", "q", "--token-file", path]).unwrap_err();
            let message = format!("{refused:#}");
            assert!(message.contains(path), "{message}");
            assert!(message.contains(&format!("chmod 600 {path}")), "{message}");
            assert!(message.contains(&format!("{open:04o}")), "{message}");
        }

        chmod(0o400);
        std::fs::write(dir.path().join("empty"), "\n").unwrap();
        let empty = dir.path().join("empty");
        std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o600)).unwrap();
        let none = token(&["--queue", "q", "--token-file", empty.to_str().unwrap()]).unwrap();
        assert_eq!(none, None, "an empty token file: no token");

        let missing = dir.path().join("missing");
        let refused =
            token(&["--queue", "q", "--token-file", missing.to_str().unwrap()]).unwrap_err();
        assert!(
            format!("{refused:#}").contains(&missing.display().to_string()),
            "{refused:#}"
        );

        let both = token(&["--queue", "q", "--token", "t", "--token-file", path]).unwrap_err();
        assert!(format!("{both}").contains("keep the file only"), "{both}");
        let empty = empty.to_str().unwrap();
        let older = token(&["--queue", "q", "--token", "t", "--token-file", empty]).unwrap();
        assert_eq!(
            older.as_deref(),
            Some("t"),
            "an empty file gives way to --token"
        );
    }

    #[test]
    fn generation_defaults_to_one_and_must_be_a_number() {
        assert_eq!(generation_from_env(None).unwrap(), 1);
        assert_eq!(generation_from_env(Some("7".into())).unwrap(), 7);
        assert!(generation_from_env(Some("seven".into())).is_err());
    }

    #[test]
    fn a_binary_replaced_on_disk_is_recycled_into_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("opsdeckd");
        std::fs::write(&new, b"").unwrap();
        let deleted = PathBuf::from(format!("{} (deleted)", new.display()));
        assert_eq!(upgraded_path(deleted), new);
        assert_eq!(upgraded_path(new.clone()), new);
    }
}
