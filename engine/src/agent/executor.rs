//! What runs a step: the [`Executor`] trait, what it is given
//! ([`StepContext`]) and what it returns ([`StepExit`]).
//!
//! The agent owns leases, the engine connection and results; an executor only
//! turns one assignment into one exit. It is handed a [`Reporter`] for the
//! live side (started, output) and a [`StepControl`] that says when to stop
//! (cancel, timeout, shutdown). Dropping the future it returns means "stop
//! now, nobody will wait for you": [`ProcessExecutor`](super::ProcessExecutor)
//! kills the step's process group then.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use opsdeck_proto::v1::{
    AgentMessage, Assignment, Outcome, StepOutput, StepStarted, agent_message,
};
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};

/// The largest `StepOutput` chunk sent up (64 KiB).
pub const MAX_OUTPUT_CHUNK: usize = 64 * 1024;

/// How much of a step's latest output is kept with its result (8 KiB), so
/// that the spool holds it and the engine gets it if the live output was
/// lost while it was unreachable.
pub const OUTPUT_TAIL_BYTES: usize = 8 * 1024;

/// The future of one step, resolving to how it ended.
pub type StepFuture = Pin<Box<dyn Future<Output = StepExit> + Send + 'static>>;

/// Runs steps. One instance serves every step of a worker, concurrently.
pub trait Executor: Send + Sync + 'static {
    /// Runs `step` to its end and says how it ended.
    ///
    /// The future should call [`Reporter::started`] once the step is under
    /// way, pass its output to [`Reporter::output`] as it comes, and stop the
    /// step when [`StepControl::stop_requested`] resolves (that also covers
    /// the step's timeout). Dropping the future must stop the step at once.
    fn execute(&self, step: Assignment, ctx: StepContext) -> StepFuture;
}

/// What an executor gets besides the assignment.
pub struct StepContext {
    /// Sends the step's progress to the engine.
    pub reporter: Reporter,
    /// Says when the step must stop.
    pub control: StepControl,
}

/// How a step ended, as the worker reports it in a `StepResult`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepExit {
    pub outcome: Outcome,
    /// The exit status, when the process exited rather than being killed.
    pub exit_code: Option<i32>,
    /// A sentence for people: "exited with status 3", "killed by signal 9 (SIGKILL)".
    pub message: String,
}

impl StepExit {
    /// Finished successfully.
    pub fn succeeded(message: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Succeeded,
            exit_code: Some(0),
            message: message.into(),
        }
    }

    /// Failed: non-zero exit, killed by a signal, or could not start.
    pub fn failed(exit_code: Option<i32>, message: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Failed,
            exit_code,
            message: message.into(),
        }
    }

    /// Ended because it was told to stop; `how` says how the process went.
    pub fn stopped(stop: &Stop, exit_code: Option<i32>, how: &str) -> Self {
        Self {
            outcome: stop.reason.outcome(),
            exit_code,
            message: format!("{}: {how}", stop.reason),
        }
    }
}

/// A request to stop a step: SIGTERM now, SIGKILL after `grace`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stop {
    pub reason: StopReason,
    pub grace: Duration,
}

/// Why a step is being stopped; decides the outcome it is reported with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The engine sent CancelStep (with the operator's reason, if any).
    Cancelled { reason: String },
    /// The step ran longer than its `timeout_ms`.
    TimedOut { after: Duration },
    /// The engine no longer recognises the lease; nobody will take the result.
    Revoked,
    /// The worker is shutting down and will not wait for the step.
    Shutdown,
}

impl StopReason {
    /// The outcome a step stopped for this reason is reported with.
    pub fn outcome(&self) -> Outcome {
        match self {
            Self::Cancelled { .. } | Self::Revoked => Outcome::Cancelled,
            Self::TimedOut { .. } => Outcome::TimedOut,
            // Not the step's fault and not the operator's wish: FAILED lets
            // the engine retry it on another worker.
            Self::Shutdown => Outcome::Failed,
        }
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cancelled { reason } if reason.is_empty() => {
                f.write_str("cancelled by the engine")
            }
            Self::Cancelled { reason } => write!(f, "cancelled by the engine ({reason})"),
            Self::TimedOut { after } => {
                write!(f, "timed out after {}", humantime::format_duration(*after))
            }
            Self::Revoked => f.write_str("stopped because the engine revoked its lease"),
            Self::Shutdown => f.write_str("stopped because the worker is shutting down"),
        }
    }
}

/// The agent's current connection to the engine, if any. Steps send their
/// progress straight into it, so a slow engine slows the step's output pipe
/// (as a slow terminal would) rather than growing a buffer in the worker.
pub(crate) type Uplink = watch::Receiver<Option<mpsc::Sender<AgentMessage>>>;

/// Which of a process's output streams a chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

impl OutputStream {
    /// The name used in `StepOutput.stream`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// Sends a step's `StepStarted` and `StepOutput` to the engine.
///
/// While the worker is disconnected, output is dropped (and counted): a
/// process must not stall because the engine is away, and the worker must not
/// hold an unbounded backlog. The result is kept and resent; output is not.
#[derive(Clone)]
pub struct Reporter {
    lease_id: Arc<str>,
    fencing_token: u64,
    uplink: Uplink,
    // A std mutex: held only to read or flip a few fields, never across an await.
    state: Arc<Mutex<ReportState>>,
}

#[derive(Default)]
struct ReportState {
    /// The pid from `started`, once called.
    pid: Option<u32>,
    /// Whether `StepStarted` has gone up on some connection.
    announced: bool,
    /// Output bytes dropped while disconnected.
    lost_bytes: u64,
    /// The last [`OUTPUT_TAIL_BYTES`] of output, stdout and stderr as written.
    tail: std::collections::VecDeque<u8>,
}

impl Reporter {
    pub(crate) fn new(lease_id: &str, fencing_token: u64, uplink: Uplink) -> Self {
        Self {
            lease_id: lease_id.into(),
            fencing_token,
            uplink,
            state: Arc::default(),
        }
    }

    /// The step is under way, as process `pid` (0 when there is no process).
    pub async fn started(&self, pid: u32) {
        self.lock().pid = Some(pid);
        self.announce().await;
    }

    /// A piece of the step's output, sent as chunks of at most 64 KiB.
    pub async fn output(&self, stream: OutputStream, data: &[u8]) {
        // A step that started while the worker was disconnected announces
        // itself before its first output on the new connection.
        self.announce().await;
        {
            let mut state = self.lock();
            let keep = &data[data.len().saturating_sub(OUTPUT_TAIL_BYTES)..];
            state.tail.extend(keep);
            let excess = state.tail.len().saturating_sub(OUTPUT_TAIL_BYTES);
            state.tail.drain(..excess);
        }
        for chunk in data.chunks(MAX_OUTPUT_CHUNK) {
            let msg = agent_message::Kind::Output(StepOutput {
                lease_id: self.lease_id.to_string(),
                fencing_token: self.fencing_token,
                stream: stream.as_str().to_owned(),
                data: chunk.to_vec(),
            });
            if !self.send(msg).await {
                let mut state = self.lock();
                if state.lost_bytes == 0 {
                    tracing::warn!(
                        "the engine is unreachable: dropping this step's output until it is back"
                    );
                }
                state.lost_bytes += chunk.len() as u64;
            }
        }
    }

    /// Output bytes that could not be sent because the worker was disconnected.
    pub fn lost_bytes(&self) -> u64 {
        self.lock().lost_bytes
    }

    /// The last [`OUTPUT_TAIL_BYTES`] of the step's output.
    pub fn tail(&self) -> Vec<u8> {
        self.lock().tail.iter().copied().collect()
    }

    async fn announce(&self) {
        let pid = {
            let state = self.lock();
            match state.pid {
                Some(pid) if !state.announced => pid,
                _ => return,
            }
        };
        let msg = agent_message::Kind::Started(StepStarted {
            lease_id: self.lease_id.to_string(),
            fencing_token: self.fencing_token,
            pid,
        });
        if self.send(msg).await {
            self.lock().announced = true;
        }
    }

    async fn send(&self, kind: agent_message::Kind) -> bool {
        let tx = self.uplink.borrow().clone();
        match tx {
            Some(tx) => tx.send(AgentMessage { kind: Some(kind) }).await.is_ok(),
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReportState> {
        // The state is a few plain fields: a panic elsewhere cannot leave it
        // inconsistent, so a poisoned lock is still good to use.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Tells an executor when its step must stop.
pub struct StepControl {
    requests: watch::Receiver<Option<Stop>>,
    /// The agent dropped its end: no more requests will come.
    closed: bool,
    /// When the step's timeout fires, and the timeout; `None` once fired or
    /// when the step has none.
    deadline: Option<(Instant, Duration)>,
    grace: Duration,
}

impl StepControl {
    /// `timeout` counts from now; `grace` is the SIGTERM-to-SIGKILL wait used
    /// when the step times out.
    pub(crate) fn new(
        requests: watch::Receiver<Option<Stop>>,
        timeout: Option<Duration>,
        grace: Duration,
    ) -> Self {
        let deadline = timeout.map(|after| (Instant::now() + after, after));
        Self {
            requests,
            closed: false,
            deadline,
            grace,
        }
    }

    /// Resolves with the next request to stop: from the engine, the worker,
    /// or the step's own timeout. Later calls resolve with later requests
    /// (e.g. a cancel with a shorter grace arriving during a timeout's grace).
    /// This is cancel safe.
    pub async fn stop_requested(&mut self) -> Stop {
        loop {
            let deadline = self.deadline;
            let timeout = async move {
                match deadline {
                    Some((at, _)) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = self.requests.changed(), if !self.closed => {
                    if changed.is_err() {
                        self.closed = true;
                        continue;
                    }
                    if let Some(stop) = self.requests.borrow_and_update().clone() {
                        return stop;
                    }
                }
                () = timeout => {
                    self.deadline = None;
                    let after = deadline.map(|(_, after)| after).unwrap_or_default();
                    return Stop { reason: StopReason::TimedOut { after }, grace: self.grace };
                }
            }
        }
    }
}

/// The bench's executor: every step succeeds at once, without a process, so
/// a benchmark measures the engine and the protocol rather than `fork`.
#[derive(Clone, Copy, Debug, Default)]
pub struct InstantExecutor;

impl Executor for InstantExecutor {
    fn execute(&self, _step: Assignment, ctx: StepContext) -> StepFuture {
        Box::pin(async move {
            ctx.reporter.started(0).await;
            StepExit::succeeded("finished at once (no process: instant executor)")
        })
    }
}

/// Builds a [`StepContext`] wired to channels a test can watch.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// The other ends of a test step's context.
    pub(crate) struct Harness {
        /// Everything the step sent up.
        pub up: mpsc::Receiver<AgentMessage>,
        /// Stop requests, as the agent would send them.
        pub stop: watch::Sender<Option<Stop>>,
        _link: watch::Sender<Option<mpsc::Sender<AgentMessage>>>,
    }

    impl Harness {
        /// Collects what was sent so far: (pids started, stdout, stderr, chunk sizes).
        pub(crate) fn drain(&mut self) -> Sent {
            let mut sent = Sent::default();
            while let Ok(msg) = self.up.try_recv() {
                match msg.kind {
                    Some(agent_message::Kind::Started(s)) => sent.started.push(s.pid),
                    Some(agent_message::Kind::Output(o)) => {
                        sent.chunks.push(o.data.len());
                        match o.stream.as_str() {
                            "stdout" => sent.stdout.extend(o.data),
                            _ => sent.stderr.extend(o.data),
                        }
                    }
                    _ => {}
                }
            }
            sent
        }
    }

    #[derive(Default, Debug)]
    pub(crate) struct Sent {
        pub started: Vec<u32>,
        pub stdout: Vec<u8>,
        pub stderr: Vec<u8>,
        pub chunks: Vec<usize>,
    }

    pub(crate) fn context(step: &Assignment, grace: Duration) -> (StepContext, Harness) {
        let (tx, up) = mpsc::channel(1024);
        let (link, uplink) = watch::channel(Some(tx));
        let (stop, requests) = watch::channel(None);
        let timeout = (step.timeout_ms > 0).then(|| Duration::from_millis(step.timeout_ms));
        let ctx = StepContext {
            reporter: Reporter::new(&step.lease_id, step.fencing_token, uplink),
            control: StepControl::new(requests, timeout, grace),
        };
        (
            ctx,
            Harness {
                up,
                stop,
                _link: link,
            },
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn stop_requested_fires_at_the_timeout_with_the_default_grace() {
        let (_tx, rx) = watch::channel(None);
        let mut control =
            StepControl::new(rx, Some(Duration::from_secs(5)), Duration::from_secs(2));
        let start = Instant::now();
        let stop = control.stop_requested().await;
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert_eq!(
            stop,
            Stop {
                reason: StopReason::TimedOut {
                    after: Duration::from_secs(5)
                },
                grace: Duration::from_secs(2)
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stop_requested_returns_each_new_request_once() {
        let (tx, rx) = watch::channel(None);
        let mut control = StepControl::new(rx, None, Duration::from_secs(10));
        let cancel = Stop {
            reason: StopReason::Cancelled {
                reason: "wrong host".into(),
            },
            grace: Duration::from_secs(3),
        };
        tx.send_replace(Some(cancel.clone()));
        assert_eq!(control.stop_requested().await, cancel);
        // No new request: it waits (here: forever, so the timeout wins).
        let again = tokio::time::timeout(Duration::from_secs(60), control.stop_requested()).await;
        assert!(again.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_agent_never_stops_the_step_by_itself() {
        let (tx, rx) = watch::channel(None);
        let mut control = StepControl::new(rx, None, Duration::from_secs(10));
        drop(tx);
        let waited = tokio::time::timeout(Duration::from_secs(60), control.stop_requested()).await;
        assert!(waited.is_err());
    }

    #[test]
    fn stop_reasons_read_as_sentences_and_pick_the_outcome() {
        let cancelled = StopReason::Cancelled {
            reason: String::new(),
        };
        assert_eq!(cancelled.to_string(), "cancelled by the engine");
        assert_eq!(cancelled.outcome(), Outcome::Cancelled);
        let timed_out = StopReason::TimedOut {
            after: Duration::from_secs(90),
        };
        assert_eq!(timed_out.to_string(), "timed out after 1m 30s");
        assert_eq!(timed_out.outcome(), Outcome::TimedOut);
        assert_eq!(StopReason::Shutdown.outcome(), Outcome::Failed);
    }

    #[tokio::test]
    async fn instant_executor_reports_started_then_succeeds() {
        let step = Assignment {
            lease_id: "l1".into(),
            fencing_token: 7,
            ..Default::default()
        };
        let (ctx, mut harness) = testing::context(&step, Duration::from_secs(1));
        let exit = InstantExecutor.execute(step, ctx).await;
        assert_eq!(exit.outcome, Outcome::Succeeded);
        assert_eq!(exit.exit_code, Some(0));
        assert_eq!(harness.drain().started, vec![0]);
    }

    #[tokio::test]
    async fn output_is_split_into_64k_chunks_and_announced_first() {
        let step = Assignment {
            lease_id: "l1".into(),
            fencing_token: 7,
            ..Default::default()
        };
        let (ctx, mut harness) = testing::context(&step, Duration::from_secs(1));
        ctx.reporter.started(42).await;
        ctx.reporter
            .output(OutputStream::Stdout, &vec![b'x'; 150_000])
            .await;
        let sent = harness.drain();
        assert_eq!(sent.started, vec![42]);
        assert_eq!(sent.chunks, vec![65_536, 65_536, 18_928]);
    }

    #[tokio::test]
    async fn output_while_disconnected_is_dropped_and_counted_and_started_waits() {
        let (link, uplink) = watch::channel(None);
        let reporter = Reporter::new("l1", 1, uplink);
        reporter.started(42).await;
        reporter.output(OutputStream::Stderr, b"lost").await;
        assert_eq!(reporter.lost_bytes(), 4);

        let (tx, mut up) = mpsc::channel(8);
        link.send_replace(Some(tx));
        reporter.output(OutputStream::Stderr, b"kept").await;
        let first = up.try_recv().map(|m| m.kind);
        assert!(matches!(first, Ok(Some(agent_message::Kind::Started(s))) if s.pid == 42));
        let second = up.try_recv().map(|m| m.kind);
        assert!(matches!(second, Ok(Some(agent_message::Kind::Output(o))) if o.data == b"kept"));
    }
}
