//! The end-to-end harness: real `opsdeckd serve` engines and real
//! `opsdeckd worker` processes in a temporary directory, spoken to over the
//! real gRPC API. No mocks.
//!
//! - [`Engine`]: one engine process on a temp data dir, its Unix socket and a
//!   TCP port picked by the kernel; typed helpers that poll its state with
//!   deadlines ([`Engine::wait_run`], [`Engine::wait_worker`], ...).
//! - [`Worker`]: one `opsdeckd worker` process serving some queues.
//! - [`Clients`]: every service's client over one connection, on the Unix
//!   socket (identity: the OS user) or on TCP with a bearer token.
//! - Small helpers for the steps' real processes: [`sh`] quotes a shell
//!   string for a spec, [`group_alive`] and [`process_alive`] look at `/proc`.
//!
//! Everything a test starts is killed when its handle drops, including the
//! steps' process groups (found by a tag in their environment). When a test
//! is failing, the engine's and the workers' logs are printed first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod tmux;
pub use tmux::Tmux;

use std::fs::File;
use std::future::Future;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use opsdeck_proto::endpoint::EngineAddr;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

pub use opsdeck_proto::v1 as pb;
use pb::agent_client::AgentClient;
use pb::approvals_client::ApprovalsClient;
use pb::console_client::ConsoleClient;
use pb::events_client::EventsClient;
use pb::leases_client::LeasesClient;
use pb::queues_client::QueuesClient;
use pb::runs_client::RunsClient;
use pb::schedules_client::SchedulesClient;
use pb::workers_client::WorkersClient;

/// The usual deadline for something the engine should do soon. Generous:
/// the machine running the tests may be busy.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// How often state is polled while waiting for it.
const POLL: Duration = Duration::from_millis(50);

/// Set in the environment of every process a test starts (the engine, the
/// workers and, through them, the steps) so that all of them can be found
/// and killed at the end, whatever process group they ended up in.
const TAG_VAR: &str = "OPSDECK_E2E_TAG";

/// The identity the engine's config gives to the TCP token (an admin).
pub const TOKEN_IDENTITY: &str = "ci-token";

// ------------------------------------------------------------------ binaries

static BUILD: OnceLock<Result<(), String>> = OnceLock::new();

/// The directory cargo puts binaries in for the profile these tests were
/// built with (`…/target/debug`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut dir = exe
        .parent()
        .expect("the test binary's directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// Set (to anything but empty or `0`) when the binaries were built just
/// before the tests with the same command as [`build_binaries`], as
/// `.ci/run` does: the harness then builds nothing.
pub const PREBUILT_VAR: &str = "OPSDECK_TEST_PREBUILT";

/// Builds `opsdeckd` and `opsdeck` once per test process, so that a test never
/// runs a stale binary, unless [`PREBUILT_VAR`] says they are built. Fails
/// the test with cargo's output if the build fails.
fn build_binaries() {
    let result = BUILD.get_or_init(|| {
        if std::env::var(PREBUILT_VAR).is_ok_and(|v| !v.is_empty() && v != "0") {
            return Ok(());
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let profile = match profile_dir().file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev".to_owned(),
            Some(other) => other.to_owned(),
        };
        let out = Command::new(&cargo)
            .current_dir(workspace_root())
            .args(["build", "--profile", &profile, "-p", "opsdeck-engine", "--bin", "opsdeckd"])
            .args(["-p", "opsdeck-tui", "--bin", "opsdeck"])
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(format!(
                "`cargo build -p opsdeck-engine --bin opsdeckd -p opsdeck-tui --bin opsdeck` failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )),
            Err(e) => Err(format!("cannot run {cargo:?}: {e}")),
        }
    });
    if let Err(why) = result {
        panic!("{why}");
    }
}

/// The `opsdeckd` binary, freshly built.
pub fn opsdeckd() -> PathBuf {
    build_binaries();
    let path = profile_dir().join("opsdeckd");
    assert!(
        path.exists(),
        "{} does not exist after the build",
        path.display()
    );
    path
}

/// The `opsdeck` CLI binary, freshly built.
pub fn opsdeck() -> PathBuf {
    build_binaries();
    let path = profile_dir().join("opsdeck");
    assert!(
        path.exists(),
        "{} does not exist after the build",
        path.display()
    );
    path
}

/// A command for one of our binaries, with a clean `OPSDECK_*` environment,
/// the test's tag, and its own process group.
fn command(program: &Path, tag: &Path) -> Command {
    let mut cmd = Command::new(program);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("OPSDECK_") {
            cmd.env_remove(&name);
        }
    }
    cmd.env(TAG_VAR, tag)
        .env("RUST_LOG", "info,sqlx=warn,h2=warn,tower=warn,hyper=warn")
        .stdin(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd
}

fn log_file(path: &Path) -> (Stdio, Stdio) {
    let file = File::options()
        .create(true)
        .append(true)
        .open(path)
        .expect("open a log file");
    let err = file.try_clone().expect("clone a log file");
    (Stdio::from(file), Stdio::from(err))
}

// ------------------------------------------------------------------ clients

/// Adds `authorization: Bearer <token>` when it has a token.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    pub fn new(token: Option<&str>) -> Self {
        Self(token.map(|t| format!("Bearer {t}").parse().expect("a token is ASCII")))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            req.metadata_mut().insert("authorization", value.clone());
        }
        Ok(req)
    }
}

/// A TCP connection that sends a bearer token (or none).
pub type TcpService = InterceptedService<Channel, Bearer>;

/// Every service's client over one connection.
#[derive(Clone)]
pub struct Clients<T> {
    pub runs: RunsClient<T>,
    pub events: EventsClient<T>,
    pub workers: WorkersClient<T>,
    pub queues: QueuesClient<T>,
    pub approvals: ApprovalsClient<T>,
    pub leases: LeasesClient<T>,
    pub schedules: SchedulesClient<T>,
    pub console: ConsoleClient<T>,
    pub agent: AgentClient<T>,
}

macro_rules! clients {
    ($make:expr) => {
        Clients {
            runs: RunsClient::new($make),
            events: EventsClient::new($make),
            workers: WorkersClient::new($make),
            queues: QueuesClient::new($make),
            approvals: ApprovalsClient::new($make),
            leases: LeasesClient::new($make),
            schedules: SchedulesClient::new($make),
            console: ConsoleClient::new($make),
            agent: AgentClient::new($make),
        }
    };
}

impl Clients<Channel> {
    pub fn new(channel: Channel) -> Self {
        clients!(channel.clone())
    }
}

impl Clients<TcpService> {
    pub fn with_token(channel: Channel, token: Option<&str>) -> Self {
        let bearer = Bearer::new(token);
        clients!(InterceptedService::new(channel.clone(), bearer.clone()))
    }
}

// ------------------------------------------------------------------- engine

/// How to start an engine. The defaults are short timings for tests.
#[derive(Clone, Debug)]
pub struct EngineOpts {
    /// Write a config with a `[[token]]` for [`TOKEN_IDENTITY`], an admin.
    pub token: bool,
    pub heartbeat_interval: String,
    pub lease_ttl: String,
    pub worker_timeout: String,
    pub cancel_grace: String,
    /// More TOML for the config file (e.g. a `[limits]` table).
    pub config: String,
    /// More `opsdeckd serve` arguments (e.g. `--database URL`, `--leader-ttl 2s`).
    pub args: Vec<String>,
    /// Ready once it answers its health check, as leader or standby
    /// (engines sharing a database); otherwise once it answers Whoami.
    pub standby_ok: bool,
    /// More environment for the engine process (e.g. `NOTIFY_SOCKET`).
    pub env: Vec<(String, String)>,
}

impl Default for EngineOpts {
    fn default() -> Self {
        Self {
            token: true,
            heartbeat_interval: "200ms".into(),
            lease_ttl: "2s".into(),
            worker_timeout: "1500ms".into(),
            cancel_grace: "1s".into(),
            config: String::new(),
            args: Vec::new(),
            standby_ok: false,
            env: Vec::new(),
        }
    }
}

/// A real `opsdeckd serve` on a temp data dir. Killed (with everything the
/// test started) on drop.
pub struct Engine {
    opts: EngineOpts,
    /// The data dir; also holds the logs and the tag. Removed on drop.
    root: tempfile::TempDir,
    child: Option<Child>,
    starts: u32,
    token: String,
    tcp: Option<SocketAddr>,
}

impl Engine {
    /// Starts an engine and waits until it answers on its Unix socket.
    pub async fn start(opts: EngineOpts) -> Engine {
        let root = tempfile::Builder::new()
            .prefix("od")
            .tempdir_in("/tmp")
            .expect("a temp dir in /tmp");
        std::fs::create_dir_all(root.path().join("w")).expect("create the work dir");
        let token = format!("tok_{}", hex::encode(rand::random::<[u8; 16]>()));
        let mut engine = Engine {
            opts,
            root,
            child: None,
            starts: 0,
            token,
            tcp: None,
        };
        engine.write_config();
        engine.spawn().await;
        engine
    }

    /// An engine with the default options.
    pub async fn start_default() -> Engine {
        Self::start(EngineOpts::default()).await
    }

    fn config_path(&self) -> PathBuf {
        self.root.path().join("engine.toml")
    }

    fn write_config(&self) {
        let mut text = String::new();
        if self.opts.token {
            text.push_str(&token_entry(&self.token, TOKEN_IDENTITY, &["admin"], &[]));
        }
        text.push_str(&self.opts.config);
        std::fs::write(self.config_path(), text).expect("write the engine config");
    }

    async fn spawn(&mut self) {
        assert!(self.child.is_none(), "the engine is already running");
        let data = self.data_dir();
        let _ = std::fs::remove_file(data.join("engine.addr"));
        self.starts += 1;
        let (out, err) = log_file(&data.join(format!("engine-{}.log", self.starts)));
        let mut cmd = command(&opsdeckd(), self.root.path());
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", "127.0.0.1:0"])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .args(["--heartbeat-interval", &self.opts.heartbeat_interval])
            .args(["--lease-ttl", &self.opts.lease_ttl])
            .args(["--worker-timeout", &self.opts.worker_timeout])
            .args(["--cancel-grace", &self.opts.cancel_grace])
            .args(&self.opts.args)
            .envs(self.opts.env.iter().map(|(k, v)| (k, v)))
            .arg("--config")
            .arg(self.config_path())
            .stdout(out)
            .stderr(err);
        self.child = Some(cmd.spawn().expect("spawn opsdeckd serve"));
        self.wait_ready().await;
    }

    /// Ready: `engine.addr` written and a call over the Unix socket answered.
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr_file = self.data_dir().join("engine.addr");
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                panic!(
                    "opsdeckd serve exited before it was ready ({status}):\n{}",
                    self.logs()
                );
            }
            if let Ok(text) = std::fs::read_to_string(&addr_file)
                && let Ok(addr) = text.trim().parse::<SocketAddr>()
                && let Ok(channel) = EngineAddr::Unix(self.socket()).connect().await
                && (if self.opts.standby_ok {
                    tonic_health::pb::health_client::HealthClient::new(channel)
                        .check(tonic_health::pb::HealthCheckRequest::default())
                        .await
                        .is_ok()
                } else {
                    ConsoleClient::new(channel)
                        .whoami(pb::WhoamiRequest {})
                        .await
                        .is_ok()
                })
            {
                self.tcp = Some(addr);
                return;
            }
            assert!(
                Instant::now() < deadline,
                "opsdeckd serve was not ready within 30s:\n{}",
                self.logs()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// A command for `program` (e.g. [`opsdeckd`]) as the harness starts its
    /// own: a clean `OPSDECK_*` environment, its own process group, and this
    /// engine's tag, so that dropping the engine kills it and its steps.
    pub fn tagged_command(&self, program: &Path) -> Command {
        command(program, self.root.path())
    }

    /// The engine's data dir (also where its logs go).
    pub fn data_dir(&self) -> PathBuf {
        self.root.path().to_path_buf()
    }

    /// A directory for the steps' marker files.
    pub fn work_dir(&self) -> PathBuf {
        self.root.path().join("w")
    }

    /// A path in [`work_dir`](Self::work_dir).
    pub fn path(&self, name: &str) -> PathBuf {
        self.work_dir().join(name)
    }

    pub fn socket(&self) -> PathBuf {
        self.data_dir().join("engine.sock")
    }

    /// `unix:///…/engine.sock`, as workers are given it.
    pub fn unix_addr(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// Runs the `opsdeck` CLI against this engine over its socket, with a
    /// clean `OPSDECK_*` environment and no colour.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        self.cli_command(args).output().expect("run opsdeck")
    }

    /// The command [`cli`](Self::cli) runs, for a test that reads its
    /// output as it comes (`logs -f`) or waits on it.
    pub fn cli_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(opsdeck());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("OPSDECK_") {
                cmd.env_remove(&name);
            }
        }
        cmd.env("NO_COLOR", "1")
            .arg("--engine")
            .arg(self.unix_addr())
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp.expect("the engine listens on TCP")
    }

    /// The bearer token of [`TOKEN_IDENTITY`].
    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the engine is running").id()
    }

    /// A new connection over the Unix socket: the caller is the OS user.
    pub async fn channel(&self) -> Channel {
        EngineAddr::Unix(self.socket())
            .connect()
            .await
            .expect("connect to the engine's Unix socket")
    }

    /// A new connection over TCP (no identity by itself: see [`tcp_api`](Self::tcp_api)).
    pub async fn tcp_channel(&self) -> Channel {
        EngineAddr::Tcp(format!("http://{}", self.tcp_addr()))
            .connect()
            .await
            .expect("connect to the engine over TCP")
    }

    /// Clients over the Unix socket, as the OS user.
    pub async fn api(&self) -> Clients<Channel> {
        Clients::new(self.channel().await)
    }

    /// Clients over TCP sending `token` (none: no `authorization` header).
    pub async fn tcp_api(&self, token: Option<&str>) -> Clients<TcpService> {
        Clients::with_token(self.tcp_channel().await, token)
    }

    /// Clients over TCP as [`TOKEN_IDENTITY`].
    pub async fn ci_api(&self) -> Clients<TcpService> {
        self.tcp_api(Some(&self.token.clone())).await
    }

    /// The OS user's name, as the engine sees callers on its socket.
    pub async fn os_identity(&self) -> String {
        self.api()
            .await
            .console
            .whoami(pb::WhoamiRequest {})
            .await
            .expect("whoami")
            .into_inner()
            .identity
    }

    // ------------------------------------------------------------ lifecycle

    /// SIGKILL to the engine; waits until it is gone.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    /// SIGTERM to the engine; waits (up to 30 s) for it to exit and returns
    /// how it exited. Async, so that this test's own idle connections keep
    /// being served (and close when the engine says GOAWAY) meanwhile.
    pub async fn sigterm(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the engine is running");
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("SIGTERM the engine");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait for the engine") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the engine did not exit within 30s of SIGTERM:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGSTOP to the engine: it holds its sockets open and answers
    /// nothing, as a hung process or a stalled VM does.
    pub fn freeze(&self) {
        kill(Pid::from_raw(self.pid() as i32), Signal::SIGSTOP).expect("SIGSTOP the engine");
    }

    /// SIGCONT after [`freeze`](Self::freeze).
    pub fn thaw(&self) {
        kill(Pid::from_raw(self.pid() as i32), Signal::SIGCONT).expect("SIGCONT the engine");
    }

    /// Starts a new engine process on the same data dir (stopping the old one
    /// with SIGTERM first if it is still running) and waits until it is ready.
    pub async fn restart(&mut self) {
        if self.child.is_some() {
            self.sigterm().await;
        }
        self.spawn().await;
    }

    /// The tail of every log in the data dir (engine starts and workers).
    pub fn logs(&self) -> String {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.data_dir())
            .map(|dir| dir.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        names.retain(|p| p.extension().is_some_and(|e| e == "log"));
        names.sort();
        let mut out = String::new();
        for path in names {
            let mut text = String::new();
            if let Ok(mut f) = File::open(&path) {
                let _ = f.read_to_string(&mut text);
            }
            let lines: Vec<&str> = text.lines().collect();
            let skip = lines.len().saturating_sub(400);
            out.push_str(&format!(
                "===== {} ({} lines, last {}) =====\n",
                path.display(),
                lines.len(),
                lines.len() - skip
            ));
            for line in &lines[skip..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    // ------------------------------------------------------------- helpers

    /// Submits a spec over the Unix socket; the run as the engine answered.
    pub async fn submit(&self, spec: &str) -> pb::Run {
        let req = pb::SubmitRunRequest {
            spec: spec.to_owned(),
            reason: "e2e test".into(),
            ..Default::default()
        };
        match self.api().await.runs.submit_run(req).await {
            Ok(resp) => resp
                .into_inner()
                .run
                .expect("SubmitRun answers with the run"),
            Err(status) => panic!("SubmitRun refused {spec:?}: {status:?}\n{}", self.logs()),
        }
    }

    /// A run's output as text, every step and stream in the order kept.
    pub async fn output_text(&self, run_id: &str) -> String {
        self.api()
            .await
            .runs
            .get_output(pb::GetOutputRequest {
                run_id: run_id.to_owned(),
                ..Default::default()
            })
            .await
            .expect("GetOutput")
            .into_inner()
            .chunks
            .iter()
            .map(|c| String::from_utf8_lossy(&c.data).into_owned())
            .collect()
    }

    pub async fn get_run(&self, id: &str) -> pb::Run {
        self.api()
            .await
            .runs
            .get_run(pb::GetRunRequest { id: id.to_owned() })
            .await
            .expect("GetRun")
            .into_inner()
    }

    /// Polls GetRun every 50 ms until `pred` holds; fails the test with the
    /// run, its events and the logs when `timeout` passes first. Transient
    /// errors (an engine restarting) are retried.
    pub async fn wait_run(
        &self,
        id: &str,
        pred: impl Fn(&pb::Run) -> bool,
        timeout: Duration,
    ) -> pb::Run {
        let deadline = Instant::now() + timeout;
        loop {
            let got = match EngineAddr::Unix(self.socket()).connect().await {
                Ok(ch) => RunsClient::new(ch)
                    .get_run(pb::GetRunRequest { id: id.to_owned() })
                    .await
                    .map(|r| r.into_inner()),
                Err(e) => Err(Status::unavailable(e.to_string())),
            };
            if let Ok(run) = &got
                && pred(run)
            {
                return run.clone();
            }
            if Instant::now() > deadline {
                let events = self.try_events(id).await;
                panic!(
                    "run {id} did not reach the expected state within {timeout:?}; last answer: {got:#?}\nevents:\n{}\n{}",
                    describe_events(&events),
                    self.logs()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the run is in `state`.
    pub async fn wait_run_state(
        &self,
        id: &str,
        state: pb::RunState,
        timeout: Duration,
    ) -> pb::Run {
        self.wait_run(id, |r| r.state == state as i32, timeout)
            .await
    }

    /// Waits until step `index` of the run is in `state`.
    pub async fn wait_step_state(
        &self,
        id: &str,
        index: usize,
        state: pb::StepState,
        timeout: Duration,
    ) -> pb::Run {
        self.wait_run(
            id,
            |r| r.steps.get(index).is_some_and(|s| s.state == state as i32),
            timeout,
        )
        .await
    }

    async fn try_events(&self, run_id: &str) -> Vec<pb::Event> {
        let Ok(ch) = EngineAddr::Unix(self.socket()).connect().await else {
            return vec![];
        };
        let req = pb::ListEventsRequest {
            after_seq: 0,
            limit: 10_000,
            run_id: run_id.to_owned(),
            ..Default::default()
        };
        EventsClient::new(ch)
            .list_events(req)
            .await
            .map(|r| r.into_inner().events)
            .unwrap_or_default()
    }

    /// Opens `Console.Watch` over the Unix socket, resuming after
    /// `resume_after_seq` (0: from a snapshot).
    pub async fn watch(&self, resume_after_seq: u64) -> tonic::Streaming<pb::WatchMessage> {
        self.api()
            .await
            .console
            .watch(pb::WatchRequest { resume_after_seq })
            .await
            .expect("Watch")
            .into_inner()
    }

    /// Every event of a run, in the order the engine lists them.
    pub async fn events(&self, run_id: &str) -> Vec<pb::Event> {
        let req = pb::ListEventsRequest {
            after_seq: 0,
            limit: 10_000,
            run_id: run_id.to_owned(),
            ..Default::default()
        };
        self.api()
            .await
            .events
            .list_events(req)
            .await
            .expect("ListEvents")
            .into_inner()
            .events
    }

    /// Every event after `after_seq`, of every run (read page by page).
    pub async fn all_events(&self, after_seq: u64) -> Vec<pb::Event> {
        let mut api = self.api().await;
        let mut out: Vec<pb::Event> = Vec::new();
        let mut after = after_seq;
        loop {
            let req = pb::ListEventsRequest {
                after_seq: after,
                limit: 10_000,
                run_id: String::new(),
                ..Default::default()
            };
            let page = api
                .events
                .list_events(req)
                .await
                .expect("ListEvents")
                .into_inner()
                .events;
            let Some(last) = page.last() else {
                return out;
            };
            after = last.seq;
            out.extend(page);
        }
    }

    /// The engine process's resident memory, in KiB, from `/proc`.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read the engine's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc status")
    }

    /// Polls the event log (all runs when `run_id` is empty) until an event
    /// matches `pred`, and returns it.
    pub async fn wait_event(
        &self,
        run_id: &str,
        pred: impl Fn(&pb::Event) -> bool,
        timeout: Duration,
    ) -> pb::Event {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.try_events(run_id).await;
            if let Some(e) = events.iter().find(|e| pred(e)) {
                return e.clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "no matching event within {timeout:?} (run {run_id:?}); events:\n{}\n{}",
                    describe_events(&events),
                    self.logs()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    pub async fn worker(&self, id: &str) -> Option<pb::Worker> {
        let ch = EngineAddr::Unix(self.socket()).connect().await.ok()?;
        WorkersClient::new(ch)
            .get_worker(pb::GetWorkerRequest { id: id.to_owned() })
            .await
            .ok()
            .map(|r| r.into_inner())
    }

    /// Polls GetWorker until `pred` holds.
    pub async fn wait_worker(
        &self,
        id: &str,
        pred: impl Fn(&pb::Worker) -> bool,
        timeout: Duration,
    ) -> pb::Worker {
        let deadline = Instant::now() + timeout;
        loop {
            let w = self.worker(id).await;
            if let Some(w) = &w
                && pred(w)
            {
                return w.clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "worker {id} did not reach the expected state within {timeout:?}; last: {w:#?}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits for the pending approval of a run's step and returns it.
    pub async fn pending_approval(&self, run_id: &str) -> pb::Approval {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let list = self
                .api()
                .await
                .approvals
                .list_approvals(pb::ListApprovalsRequest { all: false })
                .await
                .expect("ListApprovals")
                .into_inner()
                .approvals;
            if let Some(a) = list
                .into_iter()
                .find(|a| a.run_id == run_id && a.state == pb::ApprovalState::Pending as i32)
            {
                return a;
            }
            if Instant::now() > deadline {
                let events = self.try_events(run_id).await;
                panic!(
                    "run {run_id} has no pending approval after {DEADLINE:?}; events:\n{}\n{}",
                    describe_events(&events),
                    self.logs()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Every lease (live ones and recently ended ones).
    pub async fn leases(&self) -> Vec<pb::Lease> {
        self.api()
            .await
            .leases
            .list_leases(pb::ListLeasesRequest { all: true })
            .await
            .expect("ListLeases")
            .into_inner()
            .leases
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- logs of the failed test's engine and workers -----\n{}",
                self.logs()
            );
        }
        if let Some(mut child) = self.child.take() {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
        kill_tagged(self.root.path());
    }
}

// ------------------------------------------------------------------- worker

/// A real `opsdeckd worker` process. Killed (with its process group) on drop.
pub struct Worker {
    id: String,
    child: Option<Child>,
    pid: u32,
    spool: PathBuf,
}

impl Worker {
    /// Starts `opsdeckd worker` on the engine's Unix socket and waits until
    /// the engine lists it online and connected.
    pub async fn start(engine: &Engine, id: &str, queues: &[&str], slots: u32) -> Worker {
        let worker = Self::spawn(engine, id, queues, slots, &[]);
        engine
            .wait_worker(
                id,
                |w| w.state == pb::WorkerState::Online as i32 && w.connected && w.pid == worker.pid,
                DEADLINE,
            )
            .await;
        worker
    }

    /// Starts the process without waiting for it to register.
    pub fn spawn(engine: &Engine, id: &str, queues: &[&str], slots: u32, extra: &[&str]) -> Worker {
        Self::spawn_with_env(engine, id, queues, slots, extra, &[])
    }

    /// Starts the process with more environment (e.g. a broken `PATH`),
    /// and waits until the engine lists it online and connected.
    pub async fn start_with_env(
        engine: &Engine,
        id: &str,
        queues: &[&str],
        slots: u32,
        env: &[(&str, &str)],
    ) -> Worker {
        let worker = Self::spawn_with_env(engine, id, queues, slots, &[], env);
        engine
            .wait_worker(
                id,
                |w| w.state == pb::WorkerState::Online as i32 && w.connected && w.pid == worker.pid,
                DEADLINE,
            )
            .await;
        worker
    }

    fn spawn_with_env(
        engine: &Engine,
        id: &str,
        queues: &[&str],
        slots: u32,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Worker {
        let log = engine.data_dir().join(format!("worker-{id}.log"));
        let (out, err) = log_file(&log);
        let mut cmd = command(&opsdeckd(), engine.root.path());
        cmd.envs(env.iter().copied());
        cmd.arg("worker").args(["--id", id]);
        // `extra` may name other engines (`--engine a,b,c`).
        if !extra.contains(&"--engine") {
            cmd.args(["--engine", &engine.unix_addr()]);
        }
        for q in queues {
            cmd.args(["--queue", q]);
        }
        // Each test's workers spool in its own data dir: tests run at once
        // with the same worker ids.
        let spool = Self::spool_dir_of(engine, id);
        if !extra.contains(&"--spool-dir") {
            cmd.arg("--spool-dir").arg(&spool);
        }
        cmd.args(["--slots", &slots.to_string()])
            .args(["--cancel-grace", &engine.opts.cancel_grace])
            .args(extra)
            .stdout(out)
            .stderr(err);
        let child = cmd.spawn().expect("spawn opsdeckd worker");
        Worker {
            id: id.to_owned(),
            pid: child.id(),
            child: Some(child),
            spool,
        }
    }

    /// Where the harness has worker `id` of `engine` spool its results.
    pub fn spool_dir_of(engine: &Engine, id: &str) -> PathBuf {
        engine.data_dir().join("spool").join(id)
    }

    /// The result files in this worker's spool (lock and temporary files left out).
    pub fn spooled(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.spool)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.retain(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.'))
        });
        files.sort();
        files
    }

    /// SIGSTOP to the worker process alone: frozen, as by a partition or a
    /// stalled VM. Its steps, in their own process groups, keep running.
    pub fn freeze(&self) {
        kill(Pid::from_raw(self.pid as i32), Signal::SIGSTOP).expect("SIGSTOP the worker");
    }

    /// SIGCONT after [`freeze`](Self::freeze).
    pub fn thaw(&self) {
        kill(Pid::from_raw(self.pid as i32), Signal::SIGCONT).expect("SIGCONT the worker");
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// SIGKILL to the worker process alone (its steps, in their own process
    /// groups, are left running, as after a real crash).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A frozen process does not die of SIGKILL until it runs again.
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGCONT);
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}

// --------------------------------------------------------------- fake agent

/// A hand-driven Agent.Session: the test says Hello, reads what the engine
/// sends and answers as it likes (e.g. heartbeats forever, never a result).
pub struct FakeAgent {
    pub id: String,
    up: tokio::sync::mpsc::Sender<pb::AgentMessage>,
    down: tonic::Streaming<pb::EngineMessage>,
    /// The rest of an Assignments message, one Assign each.
    unread: std::collections::VecDeque<pb::EngineMessage>,
}

impl FakeAgent {
    /// Opens a session as worker `id` serving `queues` and waits for the Welcome.
    pub async fn connect(
        engine: &Engine,
        id: &str,
        queues: &[&str],
        slots: u32,
    ) -> (FakeAgent, pb::Welcome) {
        let (up, rx) = tokio::sync::mpsc::channel(64);
        let hello = pb::Hello {
            worker_id: id.into(),
            queues: queues.iter().map(|q| q.to_string()).collect(),
            slots,
            generation: 1,
            version: "e2e-fake".into(),
            ..Default::default()
        };
        up.send(pb::AgentMessage {
            kind: Some(pb::agent_message::Kind::Hello(hello)),
        })
        .await
        .unwrap();
        let down = engine
            .api()
            .await
            .agent
            .session(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("open an agent session")
            .into_inner();
        let mut agent = FakeAgent {
            id: id.to_owned(),
            up,
            down,
            unread: Default::default(),
        };
        let welcome = match agent.next().await.kind {
            Some(pb::engine_message::Kind::Welcome(w)) => w,
            other => panic!("expected a Welcome, got {other:?}"),
        };
        (agent, welcome)
    }

    /// The next message from the engine (within [`DEADLINE`]). Several
    /// steps sent in one Assignments message come as one Assign each.
    pub async fn next(&mut self) -> pb::EngineMessage {
        if let Some(m) = self.unread.pop_front() {
            return m;
        }
        let m = tokio::time::timeout(DEADLINE, self.down.message())
            .await
            .expect("a message from the engine in time")
            .expect("the session stays open")
            .expect("a message, not the end of the session");
        match m.kind {
            Some(pb::engine_message::Kind::Assignments(batch)) => {
                self.unread
                    .extend(batch.assignments.into_iter().map(|a| pb::EngineMessage {
                        kind: Some(pb::engine_message::Kind::Assign(a)),
                    }));
                self.unread
                    .pop_front()
                    .expect("an Assignments message holds at least one step")
            }
            kind => pb::EngineMessage { kind },
        }
    }

    /// The next assignment, skipping other messages.
    pub async fn assignment(&mut self) -> pb::Assignment {
        loop {
            if let Some(pb::engine_message::Kind::Assign(a)) = self.next().await.kind {
                return a;
            }
        }
    }

    pub async fn send(&self, kind: pb::agent_message::Kind) {
        self.up
            .send(pb::AgentMessage { kind: Some(kind) })
            .await
            .expect("the session is open");
    }

    /// Says the step of `a` started, as process `pid`.
    pub async fn started(&self, a: &pb::Assignment, pid: u32) {
        self.send(pb::agent_message::Kind::Started(pb::StepStarted {
            lease_id: a.lease_id.clone(),
            fencing_token: a.fencing_token,
            pid,
        }))
        .await;
    }

    /// Heartbeats holding `held` every `every` until the task is aborted
    /// (or the session ends): a worker that is alive but makes no progress.
    pub fn keep_heartbeating(
        &self,
        held: &[&pb::Assignment],
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let held: Vec<pb::HeldLease> = held
            .iter()
            .map(|a| pb::HeldLease {
                lease_id: a.lease_id.clone(),
                fencing_token: a.fencing_token,
            })
            .collect();
        let up = self.up.clone();
        tokio::spawn(async move {
            loop {
                let beat = pb::AgentMessage {
                    kind: Some(pb::agent_message::Kind::Heartbeat(pb::AgentHeartbeat {
                        held: held.clone(),
                        ..Default::default()
                    })),
                };
                if up.send(beat).await.is_err() {
                    return;
                }
                tokio::time::sleep(every).await;
            }
        })
    }

    /// One heartbeat holding `held`.
    pub async fn heartbeat(&self, held: &[&pb::Assignment]) {
        let held = held
            .iter()
            .map(|a| pb::HeldLease {
                lease_id: a.lease_id.clone(),
                fencing_token: a.fencing_token,
            })
            .collect();
        self.send(pb::agent_message::Kind::Heartbeat(pb::AgentHeartbeat {
            held,
            ..Default::default()
        }))
        .await;
    }
}

// ---------------------------------------------------------------- processes

/// SIGKILL to every process whose environment carries this test's tag.
fn kill_tagged(tag: &Path) {
    let needle = format!("{TAG_VAR}={}", tag.display()).into_bytes();
    for _ in 0..3 {
        let mut found = false;
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in dir.filter_map(|e| e.ok()) {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            if pid == std::process::id() as i32 {
                continue;
            }
            let Ok(env) = std::fs::read(entry.path().join("environ")) else {
                continue;
            };
            if env.split(|b| *b == 0).any(|var| var == needle.as_slice()) {
                found = true;
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        if !found {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// (state, process group) of a process, from `/proc/PID/stat`.
fn stat(pid: i32) -> Option<(char, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// Whether the process is stopped (SIGSTOP): state `T` in `/proc`.
pub fn process_stopped(pid: i32) -> bool {
    stat(pid).is_some_and(|(state, _)| state == 'T')
}

/// Whether the process exists and is not a zombie.
pub fn process_alive(pid: i32) -> bool {
    stat(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

/// Whether any live (non-zombie) process is in process group `pgid`.
pub fn group_alive(pgid: i32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter_map(stat)
        .any(|(state, pgrp)| pgrp == pgid && state != 'Z' && state != 'X')
}

// ------------------------------------------------------------------ helpers

/// Polls `check` every 50 ms until it returns `Some`; fails the test naming
/// `what` when `timeout` passes first.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The next Watch message that is not a heartbeat (within [`DEADLINE`]).
pub async fn next_watch(
    stream: &mut tonic::Streaming<pb::WatchMessage>,
) -> pb::watch_message::Kind {
    loop {
        let msg = tokio::time::timeout(DEADLINE, stream.message())
            .await
            .expect("a Watch message within the deadline")
            .expect("the Watch stream stays open")
            .expect("the Watch stream does not end");
        match msg.kind.expect("a message kind") {
            pb::watch_message::Kind::Heartbeat(_) => continue,
            kind => return kind,
        }
    }
}

/// The runs of a snapshot the stream starts with, and its seq.
pub async fn snapshot_runs(stream: &mut tonic::Streaming<pb::WatchMessage>) -> (u64, Vec<pb::Run>) {
    use pb::watch_message::Kind;
    let Kind::SnapshotBegin(begin) = next_watch(stream).await else {
        panic!("the Watch starts with a snapshot")
    };
    let mut runs = Vec::new();
    loop {
        match next_watch(stream).await {
            Kind::SnapshotChunk(c) => runs.extend(c.runs),
            Kind::SnapshotEnd(_) => return (begin.seq, runs),
            other => panic!("unexpected message inside a snapshot: {other:?}"),
        }
    }
}

/// Waits until `path` exists with non-empty content, and returns the content.
pub async fn wait_for_file(path: &Path, timeout: Duration) -> String {
    wait_for(
        &format!("{} to be written", path.display()),
        timeout,
        || async {
            std::fs::read_to_string(path)
                .ok()
                .filter(|t| !t.trim().is_empty())
        },
    )
    .await
}

/// The engine config's `[[token]]` entry for `token`: its SHA-256 only,
/// with `identity`, `roles` and `groups`.
pub fn token_entry(token: &str, identity: &str, roles: &[&str], groups: &[&str]) -> String {
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()));
    let list = |items: &[&str]| {
        items
            .iter()
            .map(|i| format!("{i:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "[[token]]\nidentity = {identity:?}\nsha256 = \"{hash}\"\nroles = [{}]\ngroups = [{}]\n\n",
        list(roles),
        list(groups)
    )
}

/// A fresh random token for `identity`, and its `[[token]]` entry.
pub fn new_token(identity: &str, roles: &[&str], groups: &[&str]) -> (String, String) {
    let token = format!("tok_{}", hex::encode(rand::random::<[u8; 16]>()));
    let entry = token_entry(&token, identity, roles, groups);
    (token, entry)
}

/// A database of its own on the PostgreSQL server that
/// `OPSDECK_TEST_POSTGRES` names (CI sets it), named `PREFIX_<ulid>`; `None`
/// when no server is set. Dropped from the server when the guard drops,
/// also when the test fails, so that runs of the suite leave none behind.
pub async fn fresh_postgres_database(prefix: &str) -> Option<PgDatabase> {
    use sqlx::Connection;
    let server = std::env::var("OPSDECK_TEST_POSTGRES").ok()?;
    let name = format!("{prefix}_{}", ulid::Ulid::new().to_string().to_lowercase());
    let mut admin = sqlx::PgConnection::connect(&server)
        .await
        .expect("connect to OPSDECK_TEST_POSTGRES");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create a database");
    let (base, _) = server
        .rsplit_once('/')
        .expect("a database URL ending in /DBNAME");
    Some(PgDatabase {
        url: format!("{base}/{name}"),
        server,
        name,
    })
}

/// A database [`fresh_postgres_database`] made: its URL (as `&str` and in
/// `format!`). Dropping it drops the database, whoever is still connected
/// (engines a test started are killed first when declared after it).
#[derive(Debug)]
pub struct PgDatabase {
    url: String,
    server: String,
    name: String,
}

impl std::ops::Deref for PgDatabase {
    type Target = str;
    fn deref(&self) -> &str {
        &self.url
    }
}

impl std::fmt::Display for PgDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if let Err(why) = drop_postgres_database(&self.server, &self.name) {
            // No panic in a drop (it may run while a failed test unwinds).
            eprintln!(
                "cannot drop the test database {}: {why}; drop it by hand",
                self.name
            );
        }
    }
}

/// `DROP DATABASE … WITH (FORCE)`, from a plain thread: a drop cannot
/// await, and may run inside a test's runtime, where another cannot start.
fn drop_postgres_database(server: &str, name: &str) -> Result<(), String> {
    let (server, sql) = (
        server.to_owned(),
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    );
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            use sqlx::Connection;
            let mut admin = sqlx::PgConnection::connect(&server)
                .await
                .map_err(|e| e.to_string())?;
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut admin)
                .await
                .map_err(|e| e.to_string())?;
            Ok(())
        })
    })
    .join()
    .unwrap_or_else(|_| Err("the thread dropping it panicked".to_owned()))
}

/// A TOML basic string holding `s` (for `run = …` in a spec).
pub fn sh(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One line per event, for failure messages.
pub fn describe_events(events: &[pb::Event]) -> String {
    events
        .iter()
        .map(|e| {
            format!(
                "  #{} {} step={} actor={:?} reason={:?} worker={:?} lease={:?}: {}",
                e.seq, e.kind, e.step_index, e.actor, e.reason, e.worker_id, e.lease_id, e.message
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The kinds of `events`, in order.
pub fn kinds(events: &[pb::Event]) -> Vec<&str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

/// Asserts that `result` failed with `code` and a message containing every
/// one of `needles` (case-insensitive); returns the status.
pub fn assert_status<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    needles: &[&str],
) -> Status {
    let status = match result {
        Ok(v) => panic!("expected {code:?}, but the call succeeded: {v:?}"),
        Err(s) => s,
    };
    assert_eq!(
        status.code(),
        code,
        "wrong code; message: {:?}",
        status.message()
    );
    let message = status.message().to_lowercase();
    for needle in needles {
        assert!(
            message.contains(&needle.to_lowercase()),
            "the {code:?} message does not mention {needle:?}: {:?}",
            status.message()
        );
    }
    status
}
