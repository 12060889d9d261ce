//! The worker's loop: one task that owns the connection, the leases in hand
//! and the steps' tasks, and reacts to one thing at a time — a message from
//! the engine, a heartbeat tick, a step ending, a signal. Steps keep running
//! when the connection drops; the loop reconnects and carries on.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use anyhow::anyhow;
use opsdeck_proto::names::Word as _;
use opsdeck_proto::v1::{
    AgentHeartbeat, AgentMessage, Assignment, EngineMessage, Hello, agent_message, engine_message,
};
use tokio::{
    sync::{mpsc, watch},
    task::{self, JoinError, JoinSet},
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, debug, info, warn};

use super::{
    AgentExit, AgentOptions,
    backoff::Backoff,
    executor::{Executor, Reporter, StepContext, StepControl, StepExit, Stop, StopReason},
    ledger::{Ledger, Revoked, Running},
    session::{self, Session, SessionEvent},
    spool::Spool,
};

/// When winding down, how long to wait for the engine to acknowledge the
/// last results (reconnecting if need be) before leaving without.
const ACK_WAIT: Duration = Duration::from_secs(5);

/// How long a closing session waits for the engine to end its side.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

pub(super) struct Worker {
    opts: AgentOptions,
    executor: Arc<dyn Executor>,
    host: String,
    ledger: Ledger,
    /// Results on disk until acknowledged; `None` keeps them in memory only.
    spool: Option<Spool>,
    /// The running steps. Dropping the set aborts them, which kills their
    /// processes: nobody would be left to report their results.
    steps: JoinSet<Finished>,
    /// The current session's sender, for the steps' output.
    uplink: watch::Sender<Option<mpsc::Sender<AgentMessage>>>,
    conn: Conn,
    backoff: Backoff,
    /// The engine says this worker is draining (operator's Drain).
    engine_draining: bool,
    /// Set once the worker is on its way out.
    ending: Option<Ending>,
    /// The shutdown token fired: the worker drains of its own accord.
    shutting_down: bool,
    /// The kill token fired: running steps are being stopped.
    killing: bool,
    /// While winding down with results unacknowledged: when to give up.
    ack_deadline: Option<Instant>,
    ack_wait_over: bool,
}

enum Conn {
    /// Not connected; try again at this time.
    Down {
        retry_at: Instant,
    },
    Connecting(Pin<Box<dyn Future<Output = anyhow::Result<Session>> + Send>>),
    Up(Box<Session>),
}

impl Conn {
    async fn next(&mut self) -> Wake {
        match self {
            Self::Down { retry_at } => {
                tokio::time::sleep_until(*retry_at).await;
                Wake::Retry
            }
            Self::Connecting(opening) => Wake::Opened(opening.await),
            Self::Up(session) => Wake::Session(session.next().await),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    Stop,
    Recycle,
}

/// What a step's task returns.
struct Finished {
    lease_id: String,
    exit: StepExit,
    finished_at_ms: i64,
}

/// What woke the loop.
enum Wake {
    Shutdown,
    Kill,
    StepDone(Result<(task::Id, Finished), JoinError>),
    Retry,
    Opened(anyhow::Result<Session>),
    Session(SessionEvent),
    AckWaitOver,
}

impl Worker {
    /// A worker with `spool`, holding the results an earlier process of it
    /// left there (`spooled`) to send first.
    pub fn new(
        opts: AgentOptions,
        executor: Arc<dyn Executor>,
        host: String,
        spool: Option<Spool>,
        spooled: Vec<opsdeck_proto::v1::StepResult>,
    ) -> Self {
        let mut ledger = Ledger::default();
        if !spooled.is_empty() {
            info!(
                results = spooled.len(),
                "found results an earlier process of this worker spooled; they go to the engine first"
            );
        }
        for result in spooled {
            ledger.restore(result);
        }
        Self {
            opts,
            executor,
            host,
            ledger,
            spool,
            steps: JoinSet::new(),
            uplink: watch::channel(None).0,
            conn: Conn::Down {
                retry_at: Instant::now(),
            },
            backoff: Backoff::default(),
            engine_draining: false,
            ending: None,
            shutting_down: false,
            killing: false,
            ack_deadline: None,
            ack_wait_over: false,
        }
    }

    /// Serves the engine until told to stop (`shutdown`: drain, then stop;
    /// `kill`: stop running steps too) or to recycle.
    pub async fn run(mut self, shutdown: CancellationToken, kill: CancellationToken) -> AgentExit {
        loop {
            if let Some(exit) = self.exit_now() {
                self.hang_up().await;
                return exit;
            }
            let wake = self.next(&shutdown, &kill).await;
            self.handle(wake).await;
        }
    }

    async fn next(&mut self, shutdown: &CancellationToken, kill: &CancellationToken) -> Wake {
        let ack_deadline = self.ack_deadline;
        tokio::select! {
            () = kill.cancelled(), if !self.killing => Wake::Kill,
            () = shutdown.cancelled(), if !self.shutting_down => Wake::Shutdown,
            Some(done) = self.steps.join_next_with_id() => Wake::StepDone(done),
            wake = self.conn.next() => wake,
            () = async move {
                match ack_deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => Wake::AckWaitOver,
        }
    }

    async fn handle(&mut self, wake: Wake) {
        match wake {
            Wake::Shutdown => self.on_shutdown().await,
            Wake::Kill => self.on_kill().await,
            Wake::StepDone(done) => self.on_step_done(done).await,
            Wake::Retry => self.conn = Conn::Connecting(self.open()),
            Wake::Opened(Ok(session)) => self.on_welcome(session).await,
            Wake::Opened(Err(e)) => self.retry_later(&e),
            Wake::Session(SessionEvent::Message(Ok(Some(msg)))) => self.on_message(msg).await,
            Wake::Session(SessionEvent::Message(Ok(None))) => {
                self.retry_later(&anyhow!("the engine closed the session"));
            }
            Wake::Session(SessionEvent::Message(Err(status))) => {
                self.retry_later(&anyhow!(
                    "the session broke: {}",
                    session::describe(&status)
                ));
            }
            Wake::Session(SessionEvent::Heartbeat) => {
                let held = self.ledger.held();
                let spooled = self.spool.as_ref().map_or(0, Spool::len);
                self.send(agent_message::Kind::Heartbeat(AgentHeartbeat {
                    held,
                    spooled_results: u32::try_from(spooled).unwrap_or(u32::MAX),
                }))
                .await;
            }
            Wake::AckWaitOver => {
                self.ack_deadline = None;
                self.ack_wait_over = true;
            }
        }
    }

    /// The Hello for a new session, from what is in hand now.
    fn hello(&self) -> Hello {
        let opts = &self.opts;
        Hello {
            worker_id: opts.worker_id.clone(),
            queues: opts.queues.clone(),
            slots: opts.slots,
            labels: opts
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            host: self.host.clone(),
            pid: std::process::id(),
            generation: opts.generation,
            held: self.ledger.held(),
            draining: self.engine_draining || self.shutting_down,
        }
    }

    fn open(&self) -> Pin<Box<dyn Future<Output = anyhow::Result<Session>> + Send>> {
        debug!(engine = %self.opts.engine, "connecting to the engine");
        Box::pin(Session::open(
            self.opts.engine.clone(),
            self.opts.token.clone(),
            self.opts.tls.clone(),
            self.hello(),
        ))
    }

    /// Drops the session, if any, and schedules the next attempt.
    fn retry_later(&mut self, error: &anyhow::Error) {
        self.uplink.send_replace(None);
        let attempt = self.backoff.failures() + 1;
        let delay = self.backoff.next_delay();
        let shown = Duration::from_millis(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
        warn!(
            attempt,
            engine = %self.opts.engine,
            "no session with the engine: {}; retrying in {}",
            session::describe_chain(error),
            humantime::format_duration(shown)
        );
        self.conn = Conn::Down {
            retry_at: Instant::now() + delay,
        };
    }

    async fn on_welcome(&mut self, session: Session) {
        self.backoff.reset();
        let welcome = session.welcome();
        info!(
            engine = %self.opts.engine,
            heartbeat_ms = welcome.heartbeat_interval_ms,
            lease_ttl_ms = welcome.lease_ttl_ms,
            generation = welcome.generation,
            held = self.ledger.running() + self.ledger.unacked(),
            draining = welcome.draining,
            "connected to the engine"
        );
        self.engine_draining = welcome.draining;
        let revoke = Stop {
            reason: StopReason::Revoked,
            grace: self.opts.cancel_grace,
        };
        for lease_id in &welcome.revoked {
            match self.ledger.revoke(lease_id, revoke.clone()) {
                Revoked::Stopping => {
                    warn!(lease_id, "the engine revoked this lease: stopping its step")
                }
                Revoked::Finished => {
                    warn!(
                        lease_id,
                        "the engine no longer holds this lease for this worker: sending its result anyway, \
                         for the engine to refuse and record"
                    )
                }
                Revoked::Unknown => debug!(lease_id, "the engine revoked a lease not held here"),
            }
        }
        // Results the last session did not see acknowledged go first, before
        // any step can send more on this session.
        for result in self.ledger.results() {
            if session
                .send(agent_message::Kind::Result(result))
                .await
                .is_err()
            {
                self.retry_later(&anyhow!("the session closed while resending results"));
                return;
            }
        }
        self.uplink.send_replace(Some(session.sender()));
        self.conn = Conn::Up(Box::new(session));
    }

    async fn on_message(&mut self, msg: EngineMessage) {
        use engine_message::Kind;
        match msg.kind {
            Some(Kind::Assign(assignment)) => self.start_step(assignment),
            Some(Kind::Assignments(batch)) => {
                for assignment in batch.assignments {
                    self.start_step(assignment);
                }
            }
            Some(Kind::Cancel(cancel)) => {
                let grace = match cancel.grace_ms {
                    0 => self.opts.cancel_grace,
                    ms => Duration::from_millis(ms),
                };
                let stop = Stop {
                    reason: StopReason::Cancelled {
                        reason: cancel.reason,
                    },
                    grace,
                };
                if !self.ledger.stop(&cancel.lease_id, stop) {
                    debug!(
                        lease_id = cancel.lease_id,
                        "cancel for a step not running here"
                    );
                }
            }
            Some(Kind::Drain(drain)) => {
                if drain.draining != self.engine_draining {
                    info!(
                        draining = drain.draining,
                        "the engine changed this worker's draining"
                    );
                }
                self.engine_draining = drain.draining;
            }
            Some(Kind::Recycle(_)) if self.ending.is_none() => {
                info!(
                    next_generation = self.opts.generation + 1,
                    running = self.ledger.running(),
                    "the engine asked for a recycle: restarting once idle"
                );
                self.ending = Some(Ending::Recycle);
            }
            Some(Kind::Recycle(_)) => debug!("recycle ignored: already on the way out"),
            Some(Kind::Ack(ack)) => {
                match self.ledger.ack(&ack.lease_id) {
                    Some(_) if ack.accepted => debug!(lease_id = ack.lease_id, "result accepted"),
                    Some(_) => warn!(
                        lease_id = ack.lease_id,
                        "the engine refused the step's result: {}", ack.message
                    ),
                    None => debug!(lease_id = ack.lease_id, "ack for a result not held here"),
                }
                // Accepted or refused for good: either way the engine has
                // decided, and the spool need not keep it.
                if let Some(spool) = &mut self.spool {
                    spool.remove(&ack.lease_id);
                }
            }
            Some(Kind::Welcome(_)) => warn!("the engine sent a second Welcome; ignoring it"),
            None => debug!("empty message from the engine"),
        }
    }

    fn start_step(&mut self, step: Assignment) {
        if self.ending == Some(Ending::Stop) {
            // Sent before the engine saw this worker draining. Not in the
            // next Hello's `held`, so the engine requeues it then.
            info!(
                lease_id = step.lease_id,
                "not starting an assignment: the worker is shutting down"
            );
            return;
        }
        if self.ledger.contains(&step.lease_id) {
            warn!(
                lease_id = step.lease_id,
                "assigned a lease already in hand; ignoring the duplicate"
            );
            return;
        }
        if self.ledger.running() >= self.opts.slots as usize {
            warn!(
                slots = self.opts.slots,
                "the engine assigned more steps than this worker has slots"
            );
        }
        let span = tracing::info_span!(
            "step",
            run_id = %step.run_id,
            step_index = step.step_index,
            lease_id = %step.lease_id,
            worker_id = %self.opts.worker_id,
            attempt = step.attempt,
        );
        span.in_scope(|| debug!(step = %step.step_name, "step assigned"));

        let (stop, requests) = watch::channel(None);
        let timeout = (step.timeout_ms > 0).then(|| Duration::from_millis(step.timeout_ms));
        let reporter = Reporter::new(&step.lease_id, step.fencing_token, self.uplink.subscribe());
        let ctx = StepContext {
            reporter: reporter.clone(),
            control: StepControl::new(requests, timeout, self.opts.cancel_grace),
        };
        let lease_id = step.lease_id.clone();
        let fencing_token = step.fencing_token;
        let running = self.executor.execute(step, ctx);
        let task = self.steps.spawn(
            {
                let lease_id = lease_id.clone();
                async move {
                    let exit = running.await;
                    info!(
                        outcome = exit.outcome.word(),
                        "step finished: {}", exit.message
                    );
                    Finished {
                        lease_id,
                        exit,
                        finished_at_ms: now_ms(),
                    }
                }
            }
            .instrument(span),
        );
        self.ledger.start(
            lease_id,
            Running {
                fencing_token,
                task: task.id(),
                stop,
                revoked: false,
                reporter,
            },
        );
    }

    async fn on_step_done(&mut self, done: Result<(task::Id, Finished), JoinError>) {
        let finished = match done {
            Ok((_, finished)) => finished,
            Err(e) => {
                let Some(lease_id) = self.ledger.lease_of(e.id()) else {
                    return;
                };
                tracing::error!(lease_id, "the step's executor failed: {e}");
                let exit = StepExit::failed(None, format!("the worker's executor failed: {e}"));
                Finished {
                    lease_id,
                    exit,
                    finished_at_ms: now_ms(),
                }
            }
        };
        if let Some(result) =
            self.ledger
                .finish(&finished.lease_id, finished.exit, finished.finished_at_ms)
        {
            // On disk before it goes: if this process dies before the engine
            // acknowledges it, the next one sends it.
            if let Some(spool) = &mut self.spool
                && let Err(e) = spool.write(&result).await
            {
                tracing::error!(
                    lease_id = result.lease_id,
                    "cannot spool the step's result ({e:#}); it is kept in memory only"
                );
            }
            self.send(agent_message::Kind::Result(result)).await;
        }
    }

    async fn on_shutdown(&mut self) {
        self.shutting_down = true;
        self.ending = Some(Ending::Stop);
        let running = self.ledger.running();
        if running == 0 {
            return;
        }
        info!(
            running,
            "draining: no new steps; the running ones may finish"
        );
        // The engine hears of a worker's own draining only in a Hello: start
        // a new session that says so, keeping the running steps' leases.
        match std::mem::replace(
            &mut self.conn,
            Conn::Down {
                retry_at: Instant::now(),
            },
        ) {
            Conn::Up(session) => {
                self.uplink.send_replace(None);
                for msg in session.close(CLOSE_WAIT).await {
                    self.on_message(msg).await;
                }
                self.conn = Conn::Connecting(self.open());
            }
            Conn::Connecting(_) => self.conn = Conn::Connecting(self.open()),
            down @ Conn::Down { .. } => self.conn = down,
        }
    }

    async fn on_kill(&mut self) {
        self.killing = true;
        if !self.shutting_down {
            self.on_shutdown().await;
        }
        let running = self.ledger.running();
        if running > 0 {
            warn!(running, "stopping the running steps");
            self.ledger.stop_all(&Stop {
                reason: StopReason::Shutdown,
                grace: self.opts.cancel_grace,
            });
        }
    }

    /// Sends on the current session, if any; a result that cannot go now
    /// stays in the ledger and goes after the next Welcome.
    async fn send(&mut self, kind: agent_message::Kind) {
        if let Conn::Up(session) = &self.conn
            && session.send(kind).await.is_err()
        {
            self.retry_later(&anyhow!("the session closed while sending"));
        }
    }

    /// Whether the worker is done: on its way out, no step running, and the
    /// last results acknowledged (or no longer waited for).
    fn exit_now(&mut self) -> Option<AgentExit> {
        let ending = self.ending?;
        if self.ledger.running() > 0 {
            return None;
        }
        let unacked = self.ledger.unacked();
        if unacked > 0 && !self.ack_wait_over {
            self.ack_deadline
                .get_or_insert_with(|| Instant::now() + ACK_WAIT);
            return None;
        }
        if unacked > 0 {
            match &self.spool {
                Some(spool) => warn!(
                    unacked,
                    spool = %spool.dir().display(),
                    "leaving with results the engine has not acknowledged: they stay in the spool, \
                     and the next process of this worker sends them"
                ),
                None => warn!(
                    unacked,
                    "leaving with results the engine has not acknowledged: their leases will expire \
                     and the engine will run those steps again"
                ),
            }
        }
        Some(match ending {
            Ending::Stop => AgentExit::Stopped,
            Ending::Recycle => AgentExit::Recycle {
                next_generation: self.opts.generation + 1,
            },
        })
    }

    async fn hang_up(&mut self) {
        self.uplink.send_replace(None);
        if let Conn::Up(session) = std::mem::replace(
            &mut self.conn,
            Conn::Down {
                retry_at: Instant::now(),
            },
        ) {
            session.close(CLOSE_WAIT).await;
        }
    }
}

fn now_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}
