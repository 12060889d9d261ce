//! `opsdeck demo`: something to look at on a fresh machine, in one
//! command. It starts the real `opsdeckd serve` (found next to this
//! binary) on a temporary data dir, three real `opsdeckd worker`s on the
//! queues `build`, `deploy` and `ops`, and a workload. The workload opens
//! with an incident, all within the first minute ([`INCIDENT`]): a deploy
//! waiting for an approval (self-approval allowed, so the operator can
//! approve from the console), a migration that fails and is retried, a
//! burst that backs the `build` queue up and drains, and a worker drained
//! and then recycled. Then runs that build, wait for an approval, fail
//! and retry, die, or take their time; and now and then a worker drained
//! or recycled. It opens the console on that engine. On the way out it
//! stops every process it started and removes the data dir; should the
//! engine die, the demo says how and where its log is, keeps the data
//! dir, and exits non-zero.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use clap::Args;
use opsdeck_proto::endpoint::EngineAddr;
use opsdeck_proto::v1::{SubmitRunRequest, WhoamiRequest, WorkerActionRequest};
use rand::Rng;
use rand::seq::IndexedRandom;

use crate::cli::output::note;
use crate::client::{Auth, Engine, Origin, Target};
use crate::console;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Runs submitted per second, on average
    #[arg(long, default_value_t = 0.4, value_name = "N")]
    pub rate: f64,
    /// Keep the data dir (the engine's and workers' logs are there)
    #[arg(long)]
    pub keep: bool,
    /// Open the console read-only
    #[arg(long)]
    pub readonly: bool,
    /// Do not open the console: print the engine's address and run until
    /// ctrl-c (to watch it from another terminal)
    #[arg(long)]
    pub headless: bool,
}

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(
        "opsdeckd is not next to this program ({0}): build both with `cargo build` \
         (or `cargo build --release`), then run the opsdeck from the same target directory"
    )]
    NoEngineBinary(PathBuf),
    #[error("cannot make a temporary data dir: {0}")]
    TempDir(std::io::Error),
    #[error("cannot start {what}: {error}")]
    Spawn { what: String, error: std::io::Error },
    #[error("the demo engine did not come up: {why}\n--- {log} (last lines) ---\n{tail}")]
    EngineDown {
        why: String,
        log: String,
        tail: String,
    },
    #[error(
        "the demo engine died: {status}; the demo stopped its workers\n--- {log} (last lines) ---\n{tail}\n\
         (the demo's data and logs are kept in {dir})"
    )]
    EngineDied {
        status: String,
        log: String,
        tail: String,
        dir: String,
    },
    #[error(transparent)]
    Console(#[from] console::ConsoleError),
}

/// The workers: id, queues, slots.
const WORKERS: &[(&str, &[&str], u32)] = &[
    ("build-1", &["build"], 2),
    ("deploy-1", &["deploy"], 1),
    ("ops-1", &["ops", "build"], 2),
];

/// Every process the demo started; stopped when dropped, whatever way the
/// demo ends.
struct Processes {
    children: Vec<(String, Child)>,
}

impl Processes {
    fn stop(&mut self) {
        // A process already reaped is skipped: its pid may be another's by
        // now.
        self.children
            .retain_mut(|(_, child)| !matches!(child.try_wait(), Ok(Some(_))));
        // Workers first, so that they do not spend their grace reconnecting.
        for (_, child) in self.children.iter().rev() {
            signal_group(child, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        for (_, child) in self.children.iter_mut().rev() {
            while std::time::Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            signal_group(child, libc::SIGKILL);
            let _ = child.wait();
        }
        self.children.clear();
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        self.stop();
    }
}

fn signal_group(child: &Child, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) with a negative pid signals that process group;
        // each child was started as the leader of its own group.
        unsafe {
            libc::kill(-pid, signal);
        }
    }
}

pub async fn run(args: DemoArgs) -> ExitCode {
    match demo(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            note(&format!("error: {e}"));
            ExitCode::FAILURE
        }
    }
}

async fn demo(args: DemoArgs) -> Result<(), DemoError> {
    let opsdeckd = engine_binary()?;
    // In /tmp: a Unix socket's path must stay under about 100 bytes.
    let dir = tempfile::Builder::new()
        .prefix("opsdeck-demo-")
        .tempdir_in("/tmp")
        .map_err(DemoError::TempDir)?;
    let data = dir.path().to_path_buf();
    let mut processes = Processes {
        children: Vec::new(),
    };

    let engine_log = data.join("engine.log");
    let mut serve = command(&opsdeckd, &engine_log)?;
    serve
        .arg("serve")
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen", "127.0.0.1:0"])
        // A demo must not collide with a real engine's metrics port.
        .args(["--metrics-listen", "127.0.0.1:0"])
        .args(["--heartbeat-interval", "1s", "--lease-ttl", "5s"])
        .args(["--worker-timeout", "4s", "--cancel-grace", "2s"]);
    let child = serve.spawn().map_err(|error| DemoError::Spawn {
        what: format!("{} serve", opsdeckd.display()),
        error,
    })?;
    processes.children.push(("engine".to_owned(), child));
    let socket = data.join("engine.sock");
    let engine = wait_for_engine(&socket, &mut processes, &engine_log).await?;

    let addr = format!("unix://{}", socket.display());
    for (id, queues, slots) in WORKERS {
        let mut worker = command(&opsdeckd, &data.join(format!("worker-{id}.log")))?;
        worker.arg("worker").args(["--engine", &addr, "--id", id]);
        for q in *queues {
            worker.args(["--queue", q]);
        }
        worker.args(["--slots", &slots.to_string(), "--cancel-grace", "2s"]);
        // The demo's results spool beside its engine, in its throwaway
        // directory, never in a real worker's spool.
        worker.arg("--spool-dir").arg(data.join("spool").join(id));
        let child = worker.spawn().map_err(|error| DemoError::Spawn {
            what: format!("{} worker {id}", opsdeckd.display()),
            error,
        })?;
        processes.children.push(((*id).to_owned(), child));
    }

    // From here on a signal ends the demo through the same clean-up as
    // quitting does: ctrl-c (once the console has given the terminal
    // back, or in headless mode), SIGTERM, and SIGHUP when the terminal
    // goes away. Listening replaces the default of dying on the spot,
    // which would leave the data dir behind.
    let mut signals = Signals::new();
    let workload = tokio::spawn(workload(engine.clone(), args.rate));
    let engine_pid = processes.children.first().map_or(0, |(_, c)| c.id());
    let ended = if args.headless {
        // A reader that closed stdout (`| head -1`) does not end the
        // demo, nor panic it: it runs until a signal, as without one.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "demo engine: {addr} (pid {engine_pid}; data and logs in {})",
            data.display()
        );
        let _ = writeln!(out, "watch it with: opsdeck --engine {addr}");
        let _ = out.flush();
        drop(out);
        tokio::select! {
            () = signals.any() => Ended::Quit(Ok(())),
            status = engine_exit(&mut processes) => Ended::EngineDied(status),
        }
    } else {
        let target = Target {
            addr: EngineAddr::Unix(socket),
            origin: Origin::Given,
        };
        // An engine that dies ends the console (whose terminal is given
        // back as it is on quitting) rather than leaving it reconnecting
        // to nothing.
        tokio::select! {
            result = console::run(target, Auth::default(), args.readonly) => Ended::Quit(result),
            () = signals.any() => Ended::Quit(Ok(())),
            status = engine_exit(&mut processes) => Ended::EngineDied(status),
        }
    };
    workload.abort();
    processes.stop();
    let result = match ended {
        Ended::Quit(result) => result.map_err(DemoError::from),
        Ended::EngineDied(status) => {
            // Kept, whatever --keep says: the engine's log says why it died.
            let kept = dir.keep();
            return Err(DemoError::EngineDied {
                status: exit_words(&status),
                log: engine_log.display().to_string(),
                tail: tail(&engine_log),
                dir: kept.display().to_string(),
            });
        }
    };
    if args.keep {
        let kept = dir.keep();
        note(&format!(
            "the demo's data and logs are in {}",
            kept.display()
        ));
    }
    result
}

/// How the demo ended.
enum Ended {
    /// Quit, or told to stop: the console's result.
    Quit(Result<(), console::ConsoleError>),
    /// The engine exited by itself.
    EngineDied(std::process::ExitStatus),
}

/// Waits until the engine (the first process started) exits, and says how.
async fn engine_exit(processes: &mut Processes) -> std::process::ExitStatus {
    loop {
        if let Some((_, child)) = processes.children.first_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// An exit status in words: "exit status 1", "killed by signal 9 (SIGKILL)".
fn exit_words(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("it exited with status {code}"),
        (None, Some(signal)) => {
            let name = match signal {
                libc::SIGKILL => " (SIGKILL)",
                libc::SIGTERM => " (SIGTERM)",
                libc::SIGSEGV => " (SIGSEGV)",
                libc::SIGABRT => " (SIGABRT)",
                libc::SIGINT => " (SIGINT)",
                libc::SIGHUP => " (SIGHUP)",
                _ => "",
            };
            format!("it was killed by signal {signal}{name}")
        }
        (None, None) => status.to_string(),
    }
}

/// SIGINT, SIGTERM and SIGHUP, caught rather than fatal.
struct Signals(Vec<tokio::signal::unix::Signal>);

impl Signals {
    fn new() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        let kinds = [
            SignalKind::interrupt(),
            SignalKind::terminate(),
            SignalKind::hangup(),
        ];
        // A signal that cannot be listened to keeps its default.
        Self(kinds.into_iter().filter_map(|k| signal(k).ok()).collect())
    }

    /// The next of them.
    async fn any(&mut self) {
        if self.0.is_empty() {
            return std::future::pending().await;
        }
        let all = self.0.iter_mut().map(|s| Box::pin(s.recv()));
        futures::future::select_all(all).await;
    }
}

fn engine_binary() -> Result<PathBuf, DemoError> {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("opsdeck"));
    let path = exe.with_file_name("opsdeckd");
    if path.is_file() {
        Ok(path)
    } else {
        Err(DemoError::NoEngineBinary(exe))
    }
}

/// `opsdeckd` with its output to `log`, in a process group of its own
/// (so that stopping it stops the steps it runs), with no `OPSDECK_*`
/// settings from the caller's environment, and ended with the demo even
/// if the demo is killed.
fn command(program: &Path, log: &Path) -> Result<Command, DemoError> {
    let file = std::fs::File::options()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|error| DemoError::Spawn {
            what: format!("a log file at {}", log.display()),
            error,
        })?;
    let err = file.try_clone().map_err(|error| DemoError::Spawn {
        what: "a log file".to_owned(),
        error,
    })?;
    let mut cmd = Command::new(program);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("OPSDECK_") {
            cmd.env_remove(&name);
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(err));
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    // SAFETY: prctl is async-signal-safe, as pre_exec requires; it asks
    // the kernel to SIGTERM the child when the demo dies.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    Ok(cmd)
}

async fn wait_for_engine(
    socket: &Path,
    processes: &mut Processes,
    log: &Path,
) -> Result<Engine, DemoError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let target = Target {
        addr: EngineAddr::Unix(socket.to_path_buf()),
        origin: Origin::Given,
    };
    let down = |why: String| DemoError::EngineDown {
        why,
        log: log.display().to_string(),
        tail: tail(log),
    };
    loop {
        if let Some((_, child)) = processes.children.first_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            return Err(down(format!("opsdeckd serve exited ({status})")));
        }
        if socket.exists()
            && let Ok(engine) = Engine::connect(target.clone(), Auth::default()).await
            && engine.console().whoami(WhoamiRequest {}).await.is_ok()
        {
            return Ok(engine);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(down("it did not answer within 30s".to_owned()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// A kind of run the workload submits, and how often (relative weight).
struct Kind {
    weight: u32,
    /// Submitted only while fewer of its runs wait for approval than this.
    gated: bool,
    spec: &'static str,
}

const KINDS: &[Kind] = &[
    Kind {
        weight: 4,
        gated: false,
        spec: r#"
name = "build-api"
labels = { team = "payments" }
[[step]]
name = "compile"
queue = "build"
run = "echo compiling api; for i in 1 2 3 4; do echo \"unit $i/4\"; sleep 1; done; echo built"
timeout = "2m"
[[step]]
name = "test"
queue = "build"
run = "echo running 42 tests; sleep 2; echo 42 passed"
timeout = "2m"
"#,
    },
    Kind {
        weight: 2,
        gated: true,
        spec: r#"
name = "deploy-web"
labels = { team = "web", env = "prod" }
[[step]]
name = "build"
queue = "build"
run = "echo building web; sleep 2; echo image web:1.4.2"
timeout = "2m"
[[step]]
name = "approve-prod"
approval = { timeout = "10m", on_timeout = "reject", allow_self_approval = true }
[[step]]
name = "rollout"
queue = "deploy"
run = "for p in 10 50 100; do echo \"rolled out to $p%\"; sleep 2; done"
timeout = "5m"
"#,
    },
    Kind {
        weight: 2,
        gated: false,
        spec: r#"
name = "migrate-db"
labels = { team = "data" }
[[step]]
name = "migrate"
queue = "ops"
run = "if [ \"$OPSDECK_ATTEMPT\" -lt 2 ]; then echo 'db: connection refused' >&2; exit 1; fi; echo 'applied 3 migrations'"
max_attempts = 3
backoff = "2s"
timeout = "1m"
"#,
    },
    Kind {
        weight: 1,
        gated: false,
        spec: r#"
name = "backup-logs"
labels = { team = "sre" }
[[step]]
name = "backup"
queue = "ops"
run = "echo copying logs; sleep 1; echo 'backup: no space left on device' >&2; exit 28"
max_attempts = 2
backoff = "1s"
timeout = "1m"
"#,
    },
    Kind {
        weight: 1,
        gated: false,
        spec: r#"
name = "nightly-report"
labels = { team = "finance" }
[[step]]
name = "report"
queue = "ops"
run = "echo generating report; for i in 1 2 3 4 5 6; do sleep 5; echo \"page $i\"; done; echo done"
timeout = "5m"
"#,
    },
    Kind {
        weight: 2,
        gated: false,
        spec: r#"
name = "cleanup-tmp"
[[step]]
name = "clean"
queue = "build"
run = "echo removed 12 files"
"#,
    },
];

/// The incident the demo opens with: what an on-call engineer watches
/// the console for, all within the first minute. Each step is taken this
/// long after the start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Incident {
    /// A deploy that stops at its approval gate, and a migration whose
    /// first attempt fails and is retried.
    Open,
    /// [`BURST`] runs at once on `build`: its depth jumps, then drains.
    Burst,
    /// `build-1` drained "for a kernel update", while the burst drains on
    /// the other worker.
    Drain,
    /// `build-1` recycled: it comes back as its next generation ...
    Recycle,
    /// ... and is undrained: back in service.
    Undrain,
}

const INCIDENT: &[(Duration, Incident)] = &[
    (Duration::from_secs(0), Incident::Open),
    (Duration::from_secs(4), Incident::Burst),
    (Duration::from_secs(10), Incident::Drain),
    (Duration::from_secs(20), Incident::Recycle),
    (Duration::from_secs(25), Incident::Undrain),
];

/// Runs submitted at once by [`Incident::Burst`].
pub const BURST: u32 = 30;

/// What the burst submits: a short step on `build`.
const BURST_SPEC: &str = r#"
name = "rebuild-cache"
labels = { team = "platform" }
[[step]]
name = "warm"
queue = "build"
run = "echo warming a cache shard; sleep 2; echo warm"
timeout = "1m"
"#;

/// Plays the [`INCIDENT`], then returns.
async fn incident(engine: Engine) {
    let start = tokio::time::Instant::now();
    let mut runs = engine.runs();
    let mut workers = engine.workers();
    let submit = |spec: &str| SubmitRunRequest {
        spec: spec.to_owned(),
        idempotency_key: String::new(),
        reason: "demo: incident".to_owned(),
        ..Default::default()
    };
    let worker = |reason: &str| WorkerActionRequest {
        id: "build-1".to_owned(),
        reason: reason.to_owned(),
    };
    for (at, step) in INCIDENT {
        tokio::time::sleep_until(start + *at).await;
        // The demo goes on whatever one call says: the console shows it.
        match step {
            Incident::Open => {
                for kind in ["deploy-web", "migrate-db"] {
                    if let Some(k) = KINDS.iter().find(|k| k.spec.contains(kind)) {
                        let _ = runs.submit_run(submit(k.spec)).await;
                    }
                }
            }
            Incident::Burst => {
                let request = opsdeck_proto::v1::SubmitRunsRequest {
                    runs: (0..BURST).map(|_| submit(BURST_SPEC)).collect(),
                };
                let _ = runs.submit_runs(request).await;
            }
            Incident::Drain => {
                let _ = workers
                    .drain_worker(worker("demo: draining for a kernel update"))
                    .await;
            }
            Incident::Recycle => {
                let _ = workers
                    .recycle_worker(worker("demo: kernel updated; restarting"))
                    .await;
            }
            Incident::Undrain => {
                let _ = workers
                    .undrain_worker(worker("demo: back in service"))
                    .await;
            }
        }
    }
}

/// A task aborted when this drops.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs waiting for approval before gated kinds stop being submitted, and
/// runs in flight before nothing is.
const MAX_WAITING: usize = 3;
const MAX_ACTIVE: usize = 20;

/// Plays the opening incident, then submits runs for ever (until
/// aborted), and drains, undrains and recycles a worker now and then.
async fn workload(engine: Engine, rate: f64) {
    let incident = tokio::spawn(incident(engine.clone()));
    // Stopped with the workload: the workload's future is dropped then.
    let _incident = AbortOnDrop(incident);
    let mut runs = engine.runs();
    let mut approvals = engine.approvals();
    let mut workers = engine.workers();
    // Well after the incident, so that the two do not cross.
    let mut next_worker_action = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut round = 0u32;
    let mean = Duration::from_secs_f64(1.0 / rate.clamp(0.01, 1000.0));
    loop {
        let wait = mean.mul_f64(rand::rng().random_range(0.5..1.5));
        tokio::time::sleep(wait).await;
        let active = runs
            .list_runs(opsdeck_proto::v1::ListRunsRequest {
                states: vec![1, 2, 3],
                limit: 1000,
                ..opsdeck_proto::v1::ListRunsRequest::default()
            })
            .await
            .map(|r| r.into_inner().runs.len())
            .unwrap_or(0);
        let waiting = approvals
            .list_approvals(opsdeck_proto::v1::ListApprovalsRequest { all: false })
            .await
            .map(|r| r.into_inner().approvals.len())
            .unwrap_or(0);
        if active < MAX_ACTIVE {
            let choices: Vec<&Kind> = KINDS
                .iter()
                .filter(|k| !k.gated || waiting < MAX_WAITING)
                .collect();
            // Chosen before any await: the thread's RNG cannot be held across one.
            let kind = choices
                .choose_weighted(&mut rand::rng(), |k| k.weight)
                .ok()
                .copied();
            if let Some(kind) = kind {
                let request = SubmitRunRequest {
                    spec: kind.spec.to_owned(),
                    idempotency_key: String::new(),
                    reason: "demo workload".to_owned(),
                    ..Default::default()
                };
                let _ = runs.submit_run(request).await;
            }
        }
        if tokio::time::Instant::now() >= next_worker_action {
            next_worker_action = tokio::time::Instant::now() + Duration::from_secs(45);
            round += 1;
            let request = |id: &str, reason: &str| WorkerActionRequest {
                id: id.to_owned(),
                reason: reason.to_owned(),
            };
            match round % 3 {
                1 => {
                    let _ = workers
                        .drain_worker(request("build-1", "demo: draining for a kernel update"))
                        .await;
                }
                2 => {
                    let _ = workers
                        .undrain_worker(request("build-1", "demo: kernel updated"))
                        .await;
                }
                _ => {
                    let _ = workers
                        .recycle_worker(request("ops-1", "demo: picking up a new config"))
                        .await;
                }
            }
        }
    }
}
