//! The live state and every transition of it.
//!
//! Only the core task touches a [`State`]. Each transition records what it
//! changed in a [`Tx`]: the objects to persist, the events to publish and
//! the effects (answers, messages to workers) to carry out once the
//! transaction is committed. Nothing here does I/O, so every rule can be
//! tested with a plain clock.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use opsdeck_proto::v1 as pb;
use tokio::sync::mpsc;

use super::tx::{Effect, Tx};
use crate::convert;
use crate::domain::spec::{Limits, RunSpec};
use crate::domain::{
    Actor, Approval, ApprovalState, Decision, Grants, Lease, LeaseState, Millis, OnTimeout,
    Quarantine, Queue, Run, RunState, Step, StepKindSpec, StepState, Worker, WorkerState,
    validate_queue_name,
};
use crate::error::{EngineError, EngineResult};
use crate::secrets::Secrets;
use crate::store::Loaded;

/// Timings and limits of the core.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    pub heartbeat_interval: Duration,
    pub lease_ttl: Duration,
    /// A worker without a heartbeat for this long is offline.
    pub worker_timeout: Duration,
    /// Sent with cancels: SIGTERM, then SIGKILL after this long.
    pub cancel_grace: Duration,
    pub limits: Limits,
    /// Output kept per attempt; the rest is dropped and marked truncated.
    pub output_cap_bytes: usize,
    /// Events a stream subscriber may have unread before it is cut off.
    pub subscriber_buffer: usize,
    /// A run name whose leases get stuck this many times within
    /// `quarantine_window` is quarantined; 0 never quarantines.
    pub quarantine_after: u32,
    pub quarantine_window: Duration,
    /// The config's `[secrets]`, named by specs' secret env entries.
    pub secrets: Secrets,
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(5),
            lease_ttl: Duration::from_secs(30),
            worker_timeout: Duration::from_secs(15),
            cancel_grace: Duration::from_secs(10),
            limits: Limits::default(),
            output_cap_bytes: 1024 * 1024,
            subscriber_buffer: 4096,
            quarantine_after: 5,
            quarantine_window: Duration::from_secs(60 * 60),
            secrets: Secrets::default(),
        }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Ready steps sort by priority (highest first), then by readiness (oldest first).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ReadyKey {
    priority: Reverse<i32>,
    order: u64,
    run_id: String,
    step: u32,
}

#[derive(Debug, Default)]
struct QueueLive {
    queue: Queue,
    ready: BTreeSet<ReadyKey>,
    delayed: u64,
    running: u64,
    enqueued: VecDeque<Millis>,
    completed: VecDeque<Millis>,
}

const RATE_WINDOW_MS: Millis = 60_000;

fn trim_window(q: &mut VecDeque<Millis>, now: Millis) {
    while q.front().is_some_and(|t| *t <= now - RATE_WINDOW_MS) {
        q.pop_front();
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    LeaseExpiry(String),
    Heartbeat(String),
    ApprovalDeadline(String),
    RetryDue(String, u32),
    /// Whether a lease outlived its step's timeout, the cancel grace and two
    /// heartbeats: its worker could not stop the step.
    StuckCheck(String),
}

/// A connected worker process.
struct Session {
    id: u64,
    tx: mpsc::UnboundedSender<pb::EngineMessage>,
}

/// A stream subscriber (console Watch, event follow).
struct Subscriber {
    tx: mpsc::Sender<Arc<pb::Event>>,
    /// Events up to here were in its snapshot or replay.
    after: u64,
    run_id: Option<String>,
    lagged: Arc<Lagged>,
}

/// Set by the core when it cuts a subscriber off for falling behind; the
/// stream's task stops at once (dropping what it had buffered) and sends
/// the client a resync.
#[derive(Default)]
pub struct Lagged {
    flag: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl Lagged {
    fn set(&self) {
        self.flag.store(true, std::sync::atomic::Ordering::SeqCst);
        // Stores a permit when nobody waits yet, so it is never missed.
        self.notify.notify_one();
    }

    pub fn is_set(&self) -> bool {
        self.flag.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Resolves once the subscriber has been cut off.
    pub async fn wait(&self) {
        if !self.is_set() {
            self.notify.notified().await;
        }
    }
}

/// What a new subscriber gets: the seq it starts after, a snapshot when it
/// needs one, and the live feed.
pub struct Subscription {
    pub head: u64,
    pub snapshot: Option<Snapshot>,
    pub rx: mpsc::Receiver<Arc<pb::Event>>,
    /// Set when the feed was cut off because the subscriber fell behind.
    pub lagged: Arc<Lagged>,
}

#[derive(Default)]
pub struct Snapshot {
    pub runs: Vec<pb::Run>,
    pub workers: Vec<pb::Worker>,
    pub queues: Vec<pb::Queue>,
    pub leases: Vec<pb::Lease>,
    pub approvals: Vec<pb::Approval>,
    pub quarantines: Vec<pb::Quarantine>,
}

/// An event being put together: its kind, its subjects and a sentence.
#[derive(Default)]
pub struct Ev {
    kind: &'static str,
    run: Option<String>,
    step: Option<u32>,
    worker: Option<String>,
    lease: Option<String>,
    approval: Option<String>,
    queue: Option<String>,
    quarantine: Option<pb::Quarantine>,
    message: String,
}

impl Ev {
    fn new(kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            ..Default::default()
        }
    }
    fn run(mut self, id: &str) -> Self {
        self.run = Some(id.to_owned());
        self
    }
    fn step(mut self, run: &str, index: u32) -> Self {
        self.run = Some(run.to_owned());
        self.step = Some(index);
        self
    }
    fn worker(mut self, id: &str) -> Self {
        self.worker = Some(id.to_owned());
        self
    }
    fn lease(mut self, l: &Lease) -> Self {
        self.lease = Some(l.id.clone());
        self.worker = Some(l.worker_id.clone());
        self.queue = Some(l.queue.clone());
        self.step(&l.run_id, l.step_index)
    }
    fn approval(mut self, a: &Approval) -> Self {
        self.approval = Some(a.id.clone());
        self.step(&a.run_id, a.step_index)
    }
    fn queue(mut self, q: &str) -> Self {
        self.queue = Some(q.to_owned());
        self
    }
    fn quarantine(mut self, q: &Quarantine) -> Self {
        self.quarantine = Some(convert::quarantine(q));
        self
    }
}

pub struct State {
    cfg: CoreConfig,
    runs: BTreeMap<String, Run>,
    idempotency: HashMap<String, String>,
    queues: BTreeMap<String, QueueLive>,
    workers: BTreeMap<String, Worker>,
    sessions: HashMap<String, Session>,
    /// Live leases only; ended ones are kept in `recent_leases` for listing.
    leases: HashMap<String, Lease>,
    worker_leases: HashMap<String, BTreeSet<String>>,
    recent_leases: VecDeque<Lease>,
    approvals: BTreeMap<String, Approval>,
    /// Run names refused (and not dispatched) until an operator clears them.
    quarantines: BTreeMap<String, Quarantine>,
    /// When leases of runs of each name got stuck, within the window.
    stuck_at: HashMap<String, VecDeque<Millis>>,
    timers: BinaryHeap<Reverse<(Millis, Timer)>>,
    subscribers: Vec<Subscriber>,
    output_bytes: HashMap<String, usize>,
    seq: u64,
    ready_order: u64,
    /// Round-robin position among workers of equal standing.
    rr: usize,
}

const RECENT_LEASES: usize = 500;

impl State {
    /// Rebuilds the live state from what the store holds. Live leases get a
    /// fresh TTL from `now`, so their workers have time to reconnect.
    pub fn load(cfg: CoreConfig, loaded: Loaded, now: Millis) -> Self {
        let mut s = Self {
            cfg,
            runs: BTreeMap::new(),
            idempotency: HashMap::new(),
            queues: BTreeMap::new(),
            workers: BTreeMap::new(),
            sessions: HashMap::new(),
            leases: HashMap::new(),
            worker_leases: HashMap::new(),
            recent_leases: VecDeque::new(),
            approvals: BTreeMap::new(),
            quarantines: loaded
                .quarantines
                .into_iter()
                .map(|q| (q.name.clone(), q))
                .collect(),
            stuck_at: HashMap::new(),
            timers: BinaryHeap::new(),
            subscribers: Vec::new(),
            output_bytes: HashMap::new(),
            seq: loaded.seq,
            ready_order: 0,
            rr: 0,
        };
        for q in loaded.queues {
            s.queues.insert(
                q.name.clone(),
                QueueLive {
                    queue: q,
                    ..Default::default()
                },
            );
        }
        let ttl = ms(s.cfg.lease_ttl);
        for mut l in loaded.leases {
            if l.state != LeaseState::Active {
                continue;
            }
            l.expires_at = l.expires_at.max(now + ttl);
            s.queue_live(&l.queue).running += 1;
            s.worker_leases
                .entry(l.worker_id.clone())
                .or_default()
                .insert(l.id.clone());
            s.timers
                .push(Reverse((l.expires_at, Timer::LeaseExpiry(l.id.clone()))));
            s.leases.insert(l.id.clone(), l);
        }
        let timeout = ms(s.cfg.worker_timeout);
        for mut w in loaded.workers {
            if matches!(
                w.state,
                WorkerState::Online | WorkerState::Draining | WorkerState::Recycling
            ) {
                // Not connected yet: give it a heartbeat timeout to come back.
                w.last_heartbeat_at = now;
                s.timers
                    .push(Reverse((now + timeout, Timer::Heartbeat(w.id.clone()))));
            }
            s.workers.insert(w.id.clone(), w);
        }
        let mut ready = Vec::new();
        for run in loaded.runs {
            if let Some(k) = &run.idempotency_key {
                s.idempotency.insert(k.clone(), run.id.clone());
            }
            if !run.state.is_final() {
                for step in &run.steps {
                    let Some(queue) = step.queue() else { continue };
                    match step.state {
                        StepState::Queued => {
                            ready.push((step.ready_since.unwrap_or(0), run.id.clone(), step.index))
                        }
                        StepState::RetryWait => {
                            s.queue_live(queue).delayed += 1;
                            let due = step.next_attempt_at.unwrap_or(now);
                            s.timers
                                .push(Reverse((due, Timer::RetryDue(run.id.clone(), step.index))));
                        }
                        _ => {}
                    }
                }
            }
            s.runs.insert(run.id.clone(), run);
        }
        ready.sort();
        for (_, run_id, index) in ready {
            s.enqueue_ready(&run_id, index);
        }
        let live: Vec<(String, Millis)> = s
            .leases
            .values()
            .filter(|l| !l.stuck)
            .filter_map(|l| Some((l.id.clone(), s.stuck_check_at(l)?)))
            .collect();
        for (id, at) in live {
            s.timers.push(Reverse((at, Timer::StuckCheck(id))));
        }
        for a in loaded.approvals {
            if a.state == ApprovalState::Pending
                && let Some(deadline) = a.deadline_at
            {
                s.timers
                    .push(Reverse((deadline, Timer::ApprovalDeadline(a.id.clone()))));
            }
            s.approvals.insert(a.id.clone(), a);
        }
        s
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn config(&self) -> &CoreConfig {
        &self.cfg
    }

    pub fn next_timer(&self) -> Option<Millis> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    // ---------------------------------------------------------------- events

    fn emit(&mut self, tx: &mut Tx, actor: &Actor, reason: &str, ev: Ev) {
        self.seq += 1;
        let run = ev.run.as_deref().and_then(|id| self.runs.get(id));
        let lease = ev.lease.as_deref().and_then(|id| {
            self.leases
                .get(id)
                .or_else(|| tx.lease(id))
                .map(|l| convert::lease(l, run))
        });
        let event = pb::Event {
            seq: self.seq,
            at_ms: tx.now,
            kind: ev.kind.to_owned(),
            actor: actor.name.clone(),
            transport: actor.transport.to_string(),
            reason: reason.to_owned(),
            run_id: ev.run.clone().unwrap_or_default(),
            step_index: ev.step.unwrap_or(0),
            worker_id: ev.worker.clone().unwrap_or_default(),
            lease_id: ev.lease.clone().unwrap_or_default(),
            approval_id: ev.approval.clone().unwrap_or_default(),
            queue: ev.queue.clone().unwrap_or_default(),
            message: ev.message,
            run: run.map(convert::run),
            worker: ev.worker.as_deref().and_then(|id| self.worker_pb(id)),
            lease,
            approval: ev
                .approval
                .as_deref()
                .and_then(|id| self.approvals.get(id))
                .map(|a| convert::approval(a, run)),
            queue_state: ev.queue.as_deref().and_then(|q| self.queue_pb(q, tx.now)),
            quarantine: ev.quarantine,
        };
        tracing::debug!(
            seq = event.seq,
            kind = %event.kind,
            run_id = %event.run_id,
            step_index = event.step_index,
            worker_id = %event.worker_id,
            lease_id = %event.lease_id,
            "event"
        );
        tx.events.push(event);
    }

    /// Sends the events of a committed transaction to every subscriber. A
    /// subscriber whose buffer is full is cut off (and told to resync) rather
    /// than slowing the engine or growing without bound.
    pub fn publish(&mut self, events: &[Arc<pb::Event>]) {
        self.subscribers.retain(|sub| {
            for e in events {
                if e.seq <= sub.after {
                    continue;
                }
                if sub.run_id.as_deref().is_some_and(|r| r != e.run_id) {
                    continue;
                }
                match sub.tx.try_send(e.clone()) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        sub.lagged.set();
                        return false;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                }
            }
            true
        });
    }

    pub fn subscriber_count(&self) -> usize {
        self.subscribers.len()
    }

    /// Registers a subscriber. `resume_after` = 0 asks for a snapshot; a
    /// seq the engine has not reached (another database's) gets one too.
    pub fn subscribe(
        &mut self,
        resume_after: u64,
        run_id: Option<String>,
        snapshot: bool,
        now: Millis,
    ) -> Subscription {
        let (tx, rx) = mpsc::channel(self.cfg.subscriber_buffer);
        let lagged = Arc::new(Lagged::default());
        let head = self.seq;
        self.subscribers.push(Subscriber {
            tx,
            after: head,
            run_id,
            lagged: lagged.clone(),
        });
        let snapshot =
            (snapshot && (resume_after == 0 || resume_after > head)).then(|| self.snapshot(now));
        Subscription {
            head,
            snapshot,
            rx,
            lagged,
        }
    }

    pub fn snapshot(&self, now: Millis) -> Snapshot {
        Snapshot {
            runs: self.runs.values().rev().map(convert::run).collect(),
            workers: self
                .workers
                .keys()
                .filter_map(|id| self.worker_pb(id))
                .collect(),
            queues: self
                .queues
                .keys()
                .filter_map(|q| self.queue_pb(q, now))
                .collect(),
            leases: self.list_leases(false),
            approvals: self.list_approvals(false),
            quarantines: self.list_quarantines(),
        }
    }

    /// Quarantined run names, by name.
    pub fn list_quarantines(&self) -> Vec<pb::Quarantine> {
        self.quarantines.values().map(convert::quarantine).collect()
    }

    // ---------------------------------------------------------------- reads

    pub fn get_run(&self, id: &str) -> EngineResult<pb::Run> {
        self.runs
            .get(id)
            .map(convert::run)
            .ok_or_else(|| not_found("run", id, "opsdeck runs"))
    }

    pub fn list_runs(&self, states: &[RunState], limit: usize) -> Vec<pb::Run> {
        self.runs
            .values()
            .rev()
            .filter(|r| states.is_empty() || states.contains(&r.state))
            .take(limit)
            .map(convert::run)
            .collect()
    }

    pub fn worker_pb(&self, id: &str) -> Option<pb::Worker> {
        let w = self.workers.get(id)?;
        let leases = self
            .worker_leases
            .get(id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        Some(convert::worker(w, self.sessions.contains_key(id), leases))
    }

    pub fn get_worker(&self, id: &str) -> EngineResult<pb::Worker> {
        self.worker_pb(id)
            .ok_or_else(|| not_found("worker", id, "opsdeck workers"))
    }

    pub fn list_workers(&self) -> Vec<pb::Worker> {
        self.workers
            .keys()
            .filter_map(|id| self.worker_pb(id))
            .collect()
    }

    pub fn queue_pb(&self, name: &str, now: Millis) -> Option<pb::Queue> {
        let q = self.queues.get(name)?;
        let oldest = q
            .ready
            .iter()
            .filter_map(|k| self.runs.get(&k.run_id)?.step(k.step)?.ready_since)
            .min();
        let in_window =
            |v: &VecDeque<Millis>| v.iter().filter(|t| **t > now - RATE_WINDOW_MS).count() as u64;
        Some(pb::Queue {
            name: name.to_owned(),
            paused: q.queue.paused,
            ready: q.ready.len() as u64,
            delayed: q.delayed,
            running: q.running,
            oldest_ready_age_ms: oldest.map_or(0, |t| u64::try_from(now - t).unwrap_or(0)),
            enqueued_last_minute: in_window(&q.enqueued),
            completed_last_minute: in_window(&q.completed),
            workers: self
                .workers
                .values()
                .filter(|w| self.sessions.contains_key(&w.id) && w.serves(name))
                .count() as u32,
        })
    }

    pub fn list_queues(&self, now: Millis) -> Vec<pb::Queue> {
        self.queues
            .keys()
            .filter_map(|q| self.queue_pb(q, now))
            .collect()
    }

    /// Live leases, those whose holder is gone first, then by expiry.
    pub fn list_leases(&self, all: bool) -> Vec<pb::Lease> {
        let mut live: Vec<&Lease> = self.leases.values().collect();
        live.sort_by_key(|l| {
            (
                self.sessions.contains_key(&l.worker_id),
                l.expires_at,
                l.id.clone(),
            )
        });
        let mut out: Vec<pb::Lease> = live
            .into_iter()
            .map(|l| convert::lease(l, self.runs.get(&l.run_id)))
            .collect();
        if all {
            out.extend(
                self.recent_leases
                    .iter()
                    .rev()
                    .map(|l| convert::lease(l, self.runs.get(&l.run_id))),
            );
        }
        out
    }

    /// Pending approvals (oldest first), then decided ones if asked.
    pub fn list_approvals(&self, all: bool) -> Vec<pb::Approval> {
        let pending = self
            .approvals
            .values()
            .filter(|a| a.state == ApprovalState::Pending);
        let decided = self
            .approvals
            .values()
            .rev()
            .filter(|a| a.state != ApprovalState::Pending);
        pending
            .chain(decided.take(if all { usize::MAX } else { 0 }))
            .map(|a| convert::approval(a, self.runs.get(&a.run_id)))
            .collect()
    }

    // ------------------------------------------------------------ commands

    pub fn submit(
        &mut self,
        tx: &mut Tx,
        spec: RunSpec,
        idempotency_key: Option<String>,
        actor: &Actor,
        reason: &str,
    ) -> EngineResult<(pb::Run, bool)> {
        if let Some(existing) = idempotency_key
            .as_ref()
            .and_then(|k| self.idempotency.get(k))
            && let Some(run) = self.runs.get(existing)
        {
            return Ok((convert::run(run), false));
        }
        if let Some(q) = self.quarantines.get(&spec.name) {
            return Err(EngineError::FailedPrecondition(format!(
                "run name {:?} is quarantined since {}: {} of its leases got stuck within {} \
                 (quarantine_after and quarantine_window in the engine config); fix what makes its steps hang, \
                 then clear it with `opsdeck unquarantine {} --reason TEXT`",
                q.name,
                time_word(q.since),
                q.stuck_count,
                humantime::format_duration(self.cfg.quarantine_window),
                q.name
            )));
        }
        self.check_secrets(&spec)?;
        let id = ulid::Ulid::new().to_string();
        let run = Run {
            id: id.clone(),
            name: spec.name,
            labels: spec.labels,
            submitted_by: actor.name.clone(),
            state: RunState::Queued,
            created_at: tx.now,
            updated_at: tx.now,
            finished_at: None,
            current_step: 0,
            steps: spec
                .steps
                .into_iter()
                .enumerate()
                .map(|(i, s)| Step::new(i as u32, s))
                .collect(),
            message: String::new(),
            idempotency_key: idempotency_key.clone(),
        };
        if let Some(k) = idempotency_key {
            self.idempotency.insert(k, id.clone());
        }
        let steps = run.steps.len();
        let msg = format!(
            "run {} submitted with {steps} step{}",
            run.name,
            if steps == 1 { "" } else { "s" }
        );
        self.runs.insert(id.clone(), run);
        tx.runs.insert(id.clone());
        self.emit(tx, actor, reason, Ev::new("run.submitted", msg).run(&id));
        self.start_step(tx, &id, 0, actor, reason);
        Ok((
            self.runs.get(&id).map(convert::run).unwrap_or_default(),
            true,
        ))
    }

    /// Refuses a spec whose env names a secret this engine does not have.
    fn check_secrets(&self, spec: &RunSpec) -> EngineResult<()> {
        for (i, step) in spec.steps.iter().enumerate() {
            let crate::domain::StepKindSpec::Exec(exec) = &step.kind else {
                continue;
            };
            for entry in &exec.env {
                if let Some(name) = &entry.secret
                    && !self.cfg.secrets.contains(name)
                {
                    return Err(EngineError::InvalidArgument(format!(
                        "step {} ({:?}): env {} names the secret {name:?}, which this engine does not have; \
                         define it in the engine config under [secrets] as {name} = {{ file = \"PATH\" }} \
                         or {name} = {{ env = \"VARIABLE\" }} and restart the engine, or fix the name",
                        i + 1,
                        step.name,
                        entry.name
                    )));
                }
            }
        }
        Ok(())
    }

    pub fn cancel_run(
        &mut self,
        tx: &mut Tx,
        id: &str,
        actor: &Actor,
        reason: &str,
    ) -> EngineResult<pb::Run> {
        let run = self
            .runs
            .get(id)
            .ok_or_else(|| not_found("run", id, "opsdeck runs"))?;
        if run.state.is_final() {
            return Err(EngineError::FailedPrecondition(format!(
                "run {id} is already {}; only a queued, running or waiting run can be cancelled",
                word(run.state)
            )));
        }
        let index = run.current_step;
        self.stop_step(
            tx,
            id,
            index,
            StepState::Cancelled,
            "run cancelled",
            actor,
            reason,
        );
        self.finish_run(
            tx,
            id,
            RunState::Cancelled,
            format!("cancelled by {}", actor.name),
            actor,
            reason,
        );
        self.get_run(id)
    }

    /// Retries a failed run from the step that failed, with a fresh attempt budget.
    pub fn retry_run(
        &mut self,
        tx: &mut Tx,
        id: &str,
        actor: &Actor,
        reason: &str,
    ) -> EngineResult<pb::Run> {
        let run = self
            .runs
            .get_mut(id)
            .ok_or_else(|| not_found("run", id, "opsdeck runs"))?;
        let index = run.current_step;
        let step_state = run.step(index).map(|s| s.state);
        if run.state != RunState::Failed
            || !matches!(step_state, Some(StepState::Dead | StepState::Failed))
        {
            return Err(EngineError::FailedPrecondition(format!(
                "run {id} is {}; only a failed run (a dead or failed step) can be retried",
                word(run.state)
            )));
        }
        run.state = RunState::Running;
        run.finished_at = None;
        run.message.clear();
        if let Some(step) = run.step_mut(index) {
            step.attempt_base = step.attempt;
            step.exit_code = None;
            step.message.clear();
            step.finished_at = None;
            step.approval_id = None;
        }
        tx.runs.insert(id.to_owned());
        self.emit(
            tx,
            actor,
            reason,
            Ev::new(
                "run.retried",
                format!("step {} gets new attempts", self.step_name(id, index)),
            )
            .step(id, index),
        );
        self.start_step(tx, id, index, actor, reason);
        self.get_run(id)
    }

    pub fn decide(
        &mut self,
        tx: &mut Tx,
        id: &str,
        approve: bool,
        actor: &Actor,
        grants: &Grants,
        comment: &str,
    ) -> EngineResult<pb::Approval> {
        let a = self
            .approvals
            .get_mut(id)
            .ok_or_else(|| not_found("approval", id, "opsdeck approvals"))?;
        if a.state != ApprovalState::Pending {
            let by = a
                .decisions
                .last()
                .map(|d| format!(" by {}", d.actor))
                .unwrap_or_default();
            return Err(EngineError::FailedPrecondition(format!(
                "approval {id} is already {}{by}; a decided approval cannot be decided again",
                approval_word(a.state)
            )));
        }
        if let Some(role) = a.spec.role
            && !grants.has(role)
        {
            return Err(EngineError::PermissionDenied(format!(
                "approval {id} may be decided only by the {role} role (the step's approval.role); \
                 {} has {}",
                actor.name,
                grants.describe_roles()
            )));
        }
        if let Some(group) = &a.spec.group
            && !grants.in_group(group)
        {
            return Err(EngineError::PermissionDenied(format!(
                "approval {id} may be decided only by members of group {group:?} (the step's approval.group); \
                 {} is not one: add the user to the Unix group, or the group to the token's `groups` in the engine's config",
                actor.name
            )));
        }
        if actor.name == a.submitted_by && !a.spec.allow_self_approval {
            return Err(EngineError::PermissionDenied(format!(
                "four eyes: {} submitted run {}, so another approver must decide approval {id} \
                 (a step may allow it with approval.allow_self_approval = true)",
                actor.name, a.run_id
            )));
        }
        if a.decisions.iter().any(|d| d.actor == actor.name) {
            return Err(EngineError::FailedPrecondition(format!(
                "{} has already approved approval {id}; it needs {} distinct approvers",
                actor.name, a.spec.required
            )));
        }
        a.decisions.push(Decision {
            actor: actor.name.clone(),
            approve,
            comment: comment.to_owned(),
            at: tx.now,
        });
        let approvals = a.decisions.iter().filter(|d| d.approve).count() as u32;
        let (run_id, index, required) = (a.run_id.clone(), a.step_index, a.spec.required);
        tx.approvals.insert(id.to_owned());
        if !approve {
            a.state = ApprovalState::Rejected;
            a.decided_at = Some(tx.now);
            let ev =
                Ev::new("approval.rejected", format!("rejected by {}", actor.name)).approval(a);
            self.emit(tx, actor, comment, ev);
            let msg = format!("rejected by {}: {comment}", actor.name);
            self.fail_step(
                tx,
                &run_id,
                index,
                StepState::Failed,
                msg.clone(),
                actor,
                comment,
            );
            self.finish_run(tx, &run_id, RunState::Failed, msg, actor, comment);
        } else if approvals >= required {
            a.state = ApprovalState::Approved;
            a.decided_at = Some(tx.now);
            let ev =
                Ev::new("approval.approved", format!("approved by {}", actor.name)).approval(a);
            self.emit(tx, actor, comment, ev);
            self.succeed_step(
                tx,
                &run_id,
                index,
                None,
                format!("approved by {}", actor.name),
                actor,
                comment,
            );
        } else {
            let ev = Ev::new(
                "approval.approved",
                format!("approved by {} ({approvals} of {required})", actor.name),
            )
            .approval(a);
            self.emit(tx, actor, comment, ev);
        }
        self.approvals
            .get(id)
            .map(|a| convert::approval(a, self.runs.get(&a.run_id)))
            .ok_or_else(|| not_found("approval", id, "opsdeck approvals"))
    }

    pub fn set_queue_paused(
        &mut self,
        tx: &mut Tx,
        name: &str,
        paused: bool,
        actor: &Actor,
        reason: &str,
    ) -> EngineResult<pb::Queue> {
        validate_queue_name(name).map_err(EngineError::InvalidArgument)?;
        let q = self.queue_live(name);
        if q.queue.paused != paused {
            q.queue.paused = paused;
            tx.queues.insert(name.to_owned());
            let (kind, msg) = if paused {
                (
                    "queue.paused",
                    format!("queue {name} paused: no new leases"),
                )
            } else {
                ("queue.resumed", format!("queue {name} resumed"))
            };
            self.emit(tx, actor, reason, Ev::new(kind, msg).queue(name));
        }
        self.queue_pb(name, tx.now)
            .ok_or_else(|| not_found("queue", name, "opsdeck queues"))
    }

    pub fn drain_worker(
        &mut self,
        tx: &mut Tx,
        id: &str,
        drain: bool,
        actor: &Actor,
        reason: &str,
    ) -> EngineResult<pb::Worker> {
        let w = self
            .workers
            .get_mut(id)
            .ok_or_else(|| not_found("worker", id, "opsdeck workers"))?;
        if !drain && w.recycle_requested {
            return Err(EngineError::FailedPrecondition(format!(
                "worker {id} is being recycled; it comes back undrained with the next generation"
            )));
        }
        if w.drain_requested != drain {
            w.drain_requested = drain;
            if matches!(w.state, WorkerState::Online | WorkerState::Draining) {
                w.state = if drain || w.self_draining {
                    WorkerState::Draining
                } else {
                    WorkerState::Online
                };
            }
            tx.workers.insert(id.to_owned());
            let (kind, msg) = if drain {
                (
                    "worker.draining",
                    format!("worker {id} draining: finishes what it has, takes no more"),
                )
            } else {
                ("worker.undrained", format!("worker {id} takes work again"))
            };
            self.emit(tx, actor, reason, Ev::new(kind, msg).worker(id));
            self.send(
                tx,
                id,
                pb::engine_message::Kind::Drain(pb::Drain { draining: drain }),
            );
        }
        self.get_worker(id)
    }

    pub fn recycle_worker(
        &mut self,
        tx: &mut Tx,
        id: &str,
        actor: &Actor,
        reason: &str,
    ) -> EngineResult<pb::Worker> {
        let connected = self.sessions.contains_key(id);
        let w = self
            .workers
            .get_mut(id)
            .ok_or_else(|| not_found("worker", id, "opsdeck workers"))?;
        if !connected {
            return Err(EngineError::FailedPrecondition(format!(
                "worker {id} is not connected; a recycle needs a running worker (start it again instead)"
            )));
        }
        if !w.recycle_requested {
            w.recycle_requested = true;
            w.state = WorkerState::Draining;
            tx.workers.insert(id.to_owned());
            let msg = format!(
                "worker {id} will drain, then restart as generation {}",
                w.generation + 1
            );
            self.emit(
                tx,
                actor,
                reason,
                Ev::new("worker.recycle_requested", msg).worker(id),
            );
            self.maybe_recycle(tx, id, actor, reason);
        }
        self.get_worker(id)
    }

    pub fn force_release(
        &mut self,
        tx: &mut Tx,
        id: &str,
        fail: bool,
        actor: &Actor,
        reason: &str,
    ) -> EngineResult<pb::Lease> {
        let Some(lease) = self.leases.get(id).cloned() else {
            return Err(match self.recent_leases.iter().find(|l| l.id == id) {
                Some(l) => EngineError::FailedPrecondition(format!(
                    "lease {id} has already ended ({}); only an active lease can be released",
                    lease_word(l.state)
                )),
                None => not_found("lease", id, "opsdeck leases"),
            });
        };
        self.end_lease(tx, id, LeaseState::ForceReleased);
        let action = if fail { "step failed" } else { "step requeued" };
        let ev = Ev::new(
            "lease.force_released",
            format!("lease force-released by {}: {action}", actor.name),
        )
        .lease(&lease);
        self.emit(tx, actor, reason, ev);
        self.cancel_on_worker(tx, &lease, "lease force-released by an operator");
        if fail {
            let msg = format!("failed by {} (force-release): {reason}", actor.name);
            self.fail_step(
                tx,
                &lease.run_id,
                lease.step_index,
                StepState::Failed,
                msg.clone(),
                actor,
                reason,
            );
            self.finish_run(tx, &lease.run_id, RunState::Failed, msg, actor, reason);
        } else {
            self.requeue(tx, &lease.run_id, lease.step_index, actor, reason);
        }
        self.maybe_recycle(tx, &lease.worker_id, actor, reason);
        Ok(self
            .recent_leases
            .iter()
            .rev()
            .find(|l| l.id == id)
            .map(|l| convert::lease(l, self.runs.get(&l.run_id)))
            .unwrap_or_default())
    }

    /// Lets runs of a quarantined name be submitted and dispatched again.
    pub fn clear_quarantine(
        &mut self,
        tx: &mut Tx,
        name: &str,
        actor: &Actor,
        reason: &str,
    ) -> EngineResult<pb::Quarantine> {
        let Some(q) = self.quarantines.remove(name) else {
            return Err(EngineError::NotFound(format!(
                "run name {name:?} is not quarantined; `opsdeck quarantines` lists the ones that are"
            )));
        };
        self.stuck_at.remove(name);
        tx.quarantines.insert(name.to_owned());
        let msg = format!(
            "run name {name} cleared by {}: runs of it are taken again",
            actor.name
        );
        self.emit(
            tx,
            actor,
            reason,
            Ev::new("run_name.quarantine_cleared", msg).quarantine(&q),
        );
        Ok(convert::quarantine(&q))
    }

    // ---------------------------------------------------------------- agent

    /// A worker said hello on a new session.
    pub fn hello(
        &mut self,
        tx: &mut Tx,
        session: u64,
        identity: &str,
        hello: pb::Hello,
        out: mpsc::UnboundedSender<pb::EngineMessage>,
    ) -> EngineResult<()> {
        let id = hello.worker_id.trim().to_owned();
        if id.is_empty() || id.len() > 128 {
            return Err(EngineError::InvalidArgument(
                "worker id must be 1 to 128 characters".into(),
            ));
        }
        if hello.queues.is_empty() {
            return Err(EngineError::InvalidArgument(format!(
                "worker {id} serves no queue; give it at least one --queue"
            )));
        }
        for q in hello
            .queues
            .iter()
            .filter(|q| *q != crate::domain::ANY_QUEUE)
        {
            validate_queue_name(q)
                .map_err(|e| EngineError::InvalidArgument(format!("worker {id}: {e}")))?;
        }
        if hello.slots == 0 {
            return Err(EngineError::InvalidArgument(format!(
                "worker {id} has 0 slots; give it --slots 1 or more"
            )));
        }
        // A connected worker's session (and the assignments, secrets
        // included, that go down it) is not for another identity to take.
        if let Some(live) = self.workers.get(&id).filter(|w| {
            matches!(
                w.state,
                WorkerState::Online | WorkerState::Draining | WorkerState::Recycling
            ) && !w.identity.is_empty()
                && w.identity != identity
                && self.sessions.contains_key(&id)
        }) {
            return Err(EngineError::PermissionDenied(format!(
                "worker {id} is connected as {}, and {identity} may not take over its session; \
                 give this worker another --id, or stop the other process first",
                live.identity
            )));
        }
        let actor = Actor::worker(&id);
        // A second process with the same id replaces the first: the newest
        // hello is the one that can still do work.
        if self.sessions.remove(&id).is_some() {
            tracing::warn!(worker_id = %id, "a new session replaced the worker's previous one");
        }
        self.sessions.insert(
            id.clone(),
            Session {
                id: session,
                tx: out.clone(),
            },
        );
        let now = tx.now;
        let prior = self.workers.get(&id).cloned();
        let recycled = prior
            .as_ref()
            .is_some_and(|w| w.recycle_requested && hello.generation > w.generation);
        let mut w = prior.clone().unwrap_or_else(|| Worker {
            id: id.clone(),
            state: WorkerState::Online,
            queues: vec![],
            slots: 0,
            labels: BTreeMap::new(),
            version: String::new(),
            host: String::new(),
            pid: 0,
            generation: 0,
            identity: String::new(),
            registered_at: now,
            last_heartbeat_at: now,
            drain_requested: false,
            self_draining: false,
            recycle_requested: false,
        });
        w.queues = hello.queues.clone();
        w.slots = hello.slots;
        w.labels = hello.labels.clone().into_iter().collect();
        w.version = hello.version.clone();
        w.host = hello.host.clone();
        w.pid = hello.pid;
        w.generation = w.generation.max(hello.generation);
        w.identity = identity.to_owned();
        w.registered_at = now;
        w.last_heartbeat_at = now;
        if recycled {
            w.recycle_requested = false;
        }
        w.self_draining = hello.draining;
        w.state = if w.drain_requested || w.recycle_requested || w.self_draining {
            WorkerState::Draining
        } else {
            WorkerState::Online
        };
        for q in w.queues.iter().filter(|q| *q != crate::domain::ANY_QUEUE) {
            self.queue_live(q);
        }
        let draining = w.drain_requested;
        let generation = w.generation;
        self.workers.insert(id.clone(), w);
        tx.workers.insert(id.clone());
        self.timers.push(Reverse((
            now + ms(self.cfg.worker_timeout),
            Timer::Heartbeat(id.clone()),
        )));
        let (kind, msg) = if recycled {
            (
                "worker.recycled",
                format!("worker {id} is back as generation {generation}"),
            )
        } else {
            (
                "worker.registered",
                format!("worker {id} online, serving {}", hello.queues.join(", ")),
            )
        };
        self.emit(tx, &actor, "", Ev::new(kind, msg).worker(&id));

        // Keep the leases it still holds; return its others to their queues
        // now rather than after their TTL.
        let held: HashMap<&str, u64> = hello
            .held
            .iter()
            .map(|h| (h.lease_id.as_str(), h.fencing_token))
            .collect();
        let ours: Vec<String> = self
            .worker_leases
            .get(&id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for lease_id in ours {
            let Some(lease) = self.leases.get_mut(&lease_id) else {
                continue;
            };
            if held.get(lease_id.as_str()) == Some(&lease.fencing_token) {
                lease.expires_at = now + ms(self.cfg.lease_ttl);
            } else {
                let lease = lease.clone();
                self.end_lease(tx, &lease_id, LeaseState::Expired);
                let ev = Ev::new(
                    "lease.expired",
                    format!("worker {id} re-registered without lease {lease_id}"),
                )
                .lease(&lease);
                self.emit(tx, &actor, "", ev);
                self.requeue(tx, &lease.run_id, lease.step_index, &actor, "");
            }
        }
        let revoked = hello
            .held
            .iter()
            .filter(|h| {
                self.leases
                    .get(&h.lease_id)
                    .is_none_or(|l| l.fencing_token != h.fencing_token || l.worker_id != id)
            })
            .map(|h| h.lease_id.clone())
            .collect();
        let welcome = pb::Welcome {
            worker_id: id.clone(),
            generation,
            heartbeat_interval_ms: self.cfg.heartbeat_interval.as_millis() as u64,
            lease_ttl_ms: self.cfg.lease_ttl.as_millis() as u64,
            revoked,
            draining,
        };
        self.send(tx, &id, pb::engine_message::Kind::Welcome(welcome));
        // A recycle asked for before this process connected still applies.
        self.maybe_recycle(tx, &id, &actor, "");
        Ok(())
    }

    /// The session of a worker ended (stream closed or broken).
    pub fn session_closed(&mut self, tx: &mut Tx, worker_id: &str, session: u64) {
        if self.sessions.get(worker_id).is_none_or(|s| s.id != session) {
            return;
        }
        self.sessions.remove(worker_id);
        let Some(w) = self.workers.get_mut(worker_id) else {
            return;
        };
        if w.state == WorkerState::Recycling {
            // Expected: it is replacing its process. The heartbeat timer
            // marks it offline if it does not come back.
            return;
        }
        w.state = WorkerState::Offline;
        tx.workers.insert(worker_id.to_owned());
        let held = self.worker_leases.get(worker_id).map_or(0, |s| s.len());
        let msg = format!(
            "worker {worker_id} disconnected; its {held} leases expire after their TTL unless it returns"
        );
        self.emit(
            tx,
            &Actor::worker(worker_id),
            "",
            Ev::new("worker.offline", msg).worker(worker_id),
        );
    }

    pub fn session_of(&self, worker_id: &str) -> Option<u64> {
        self.sessions.get(worker_id).map(|s| s.id)
    }

    pub fn heartbeat(&mut self, worker_id: &str, held: &[pb::HeldLease], now: Millis) {
        let ttl = ms(self.cfg.lease_ttl);
        if let Some(w) = self.workers.get_mut(worker_id) {
            w.last_heartbeat_at = now;
        }
        for h in held {
            if let Some(l) = self.leases.get_mut(&h.lease_id)
                && l.worker_id == worker_id
                && l.fencing_token == h.fencing_token
            {
                l.expires_at = now + ttl;
            }
        }
    }

    pub fn step_started(&mut self, tx: &mut Tx, worker_id: &str, started: pb::StepStarted) {
        let Some(lease) = self.current_lease(worker_id, &started.lease_id, started.fencing_token)
        else {
            return;
        };
        let (run_id, index) = (lease.run_id.clone(), lease.step_index);
        let Some(step) = self.runs.get_mut(&run_id).and_then(|r| r.step_mut(index)) else {
            return;
        };
        if step.state != StepState::Leased {
            return;
        }
        step.state = StepState::Running;
        step.started_at = Some(tx.now);
        tx.runs.insert(run_id.clone());
        let msg = format!(
            "step {} running on {worker_id} (pid {})",
            self.step_name(&run_id, index),
            started.pid
        );
        self.emit(
            tx,
            &Actor::worker(worker_id),
            "",
            Ev::new("step.running", msg)
                .step(&run_id, index)
                .worker(worker_id),
        );
    }

    pub fn step_output(&mut self, tx: &mut Tx, worker_id: &str, out: pb::StepOutput) {
        let Some(lease) = self
            .current_lease(worker_id, &out.lease_id, out.fencing_token)
            .cloned()
        else {
            return;
        };
        self.keep_output(tx, &lease, &out.stream, out.data);
    }

    /// Keeps output of a lease's attempt, up to the per-attempt cap. The
    /// output that reaches the cap is followed by a marker chunk (marked
    /// truncated) that says so and names the setting; later output is dropped.
    fn keep_output(&mut self, tx: &mut Tx, lease: &Lease, stream: &str, mut data: Vec<u8>) {
        let cap = self.cfg.output_cap_bytes;
        let used = self.output_bytes.entry(lease.id.clone()).or_insert(0);
        if *used >= cap {
            return;
        }
        let room = cap - *used;
        let truncated = data.len() > room;
        data.truncate(room);
        *used += data.len();
        if truncated {
            // Mark the cap once; later chunks are dropped above.
            *used = cap;
        }
        let stream = if stream == "stderr" {
            "stderr"
        } else {
            "stdout"
        };
        let chunk = |data: Vec<u8>, truncated: bool| pb::OutputChunk {
            run_id: lease.run_id.clone(),
            step_index: lease.step_index,
            attempt: lease.attempt,
            stream: stream.to_owned(),
            data,
            at_ms: tx.now,
            truncated,
        };
        let marker = truncated.then(|| {
            let text = format!(
                "\n[opsdeck: output of this attempt capped at {cap} bytes (output_cap_bytes in the engine config); \
                 the rest was dropped]\n"
            );
            chunk(text.into_bytes(), true)
        });
        if !data.is_empty() {
            tx.outputs.push(chunk(data, false));
        }
        tx.outputs.extend(marker);
    }

    /// A result from a worker. Accepted only from the holder of the live
    /// lease with its fencing token; anything else is refused and recorded.
    pub fn step_result(&mut self, tx: &mut Tx, worker_id: &str, result: pb::StepResult) {
        let actor = Actor::worker(worker_id);
        let ack = |accepted: bool, message: String| {
            pb::engine_message::Kind::Ack(pb::ResultAck {
                lease_id: result.lease_id.clone(),
                accepted,
                message,
            })
        };
        let Some(lease) = self
            .current_lease(worker_id, &result.lease_id, result.fencing_token)
            .cloned()
        else {
            let why = match self
                .leases
                .get(&result.lease_id)
                .or_else(|| self.recent_leases.iter().find(|l| l.id == result.lease_id))
            {
                Some(l) if l.fencing_token != result.fencing_token => format!(
                    "stale fencing token {} (current {})",
                    result.fencing_token, l.fencing_token
                ),
                Some(l) if l.state != LeaseState::Active => {
                    format!("lease already {}", lease_word(l.state))
                }
                Some(l) => format!("lease is held by {}", l.worker_id),
                None => "unknown lease".to_owned(),
            };
            let msg = format!("result for lease {} refused: {why}", result.lease_id);
            let mut ev = Ev::new("result.refused", msg.clone()).worker(worker_id);
            if let Some(l) = self
                .recent_leases
                .iter()
                .find(|l| l.id == result.lease_id)
                .cloned()
            {
                ev = ev.step(&l.run_id, l.step_index);
            }
            self.emit(tx, &actor, "", ev);
            self.send(tx, worker_id, ack(false, msg));
            return;
        };
        if result.output_lost_bytes > 0 && !result.output_tail.is_empty() {
            // Output sent while the engine was unreachable was lost; the
            // tail the worker kept with its result is the best there is.
            let mut data = format!(
                "[opsdeck: {} bytes of output were lost while the worker could not reach the engine; \
                 the last {} bytes of the step's output follow]\n",
                result.output_lost_bytes,
                result.output_tail.len()
            )
            .into_bytes();
            data.extend_from_slice(&result.output_tail);
            self.keep_output(tx, &lease, "stdout", data);
        }
        self.end_lease(tx, &lease.id, LeaseState::Released);
        self.queue_live(&lease.queue).completed.push_back(tx.now);
        let outcome = pb::Outcome::try_from(result.outcome).unwrap_or(pb::Outcome::Failed);
        let msg = format!(
            "lease released: result {} accepted",
            opsdeck_proto::names::Word::word(outcome)
        );
        self.emit(tx, &actor, "", Ev::new("lease.released", msg).lease(&lease));
        let exit = result.has_exit_code.then_some(result.exit_code);
        if outcome == pb::Outcome::Succeeded {
            self.succeed_step(
                tx,
                &lease.run_id,
                lease.step_index,
                exit,
                String::new(),
                &actor,
                "",
            );
        } else {
            let message = if result.message.is_empty() {
                format!("attempt {} failed", lease.attempt)
            } else {
                result.message.clone()
            };
            self.attempt_failed(tx, &lease.run_id, lease.step_index, exit, message, &actor);
        }
        self.send(tx, worker_id, ack(true, String::new()));
        self.maybe_recycle(tx, worker_id, &actor, "");
    }

    fn current_lease(&self, worker_id: &str, lease_id: &str, token: u64) -> Option<&Lease> {
        self.leases
            .get(lease_id)
            .filter(|l| l.worker_id == worker_id && l.fencing_token == token)
    }

    // ---------------------------------------------------------------- timers

    /// Fires every timer due at `tx.now`.
    pub fn fire_timers(&mut self, tx: &mut Tx) {
        let engine = Actor::engine();
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > tx.now {
                break;
            }
            let Some(Reverse((_, timer))) = self.timers.pop() else {
                break;
            };
            match timer {
                Timer::LeaseExpiry(id) => {
                    let Some(lease) = self.leases.get(&id).cloned() else {
                        continue;
                    };
                    if lease.expires_at > tx.now {
                        // Renewed by heartbeats since this timer was set.
                        self.timers
                            .push(Reverse((lease.expires_at, Timer::LeaseExpiry(id))));
                        continue;
                    }
                    self.end_lease(tx, &id, LeaseState::Expired);
                    let msg = format!(
                        "lease {id} expired: no heartbeat from {} within the TTL",
                        lease.worker_id
                    );
                    self.emit(tx, &engine, "", Ev::new("lease.expired", msg).lease(&lease));
                    self.cancel_on_worker(tx, &lease, "lease expired");
                    self.requeue(tx, &lease.run_id, lease.step_index, &engine, "");
                }
                Timer::Heartbeat(id) => {
                    let Some(w) = self.workers.get_mut(&id) else {
                        continue;
                    };
                    let due = w.last_heartbeat_at + ms(self.cfg.worker_timeout);
                    if !matches!(
                        w.state,
                        WorkerState::Online | WorkerState::Draining | WorkerState::Recycling
                    ) {
                        continue;
                    }
                    if due > tx.now {
                        self.timers.push(Reverse((due, Timer::Heartbeat(id))));
                        continue;
                    }
                    w.state = WorkerState::Offline;
                    tx.workers.insert(id.clone());
                    self.sessions.remove(&id);
                    let msg = format!(
                        "worker {id} offline: no heartbeat for {}",
                        humantime::format_duration(self.cfg.worker_timeout)
                    );
                    self.emit(tx, &engine, "", Ev::new("worker.offline", msg).worker(&id));
                }
                Timer::ApprovalDeadline(id) => self.approval_timed_out(tx, &id),
                Timer::StuckCheck(id) => self.stuck_check(tx, &id),
                Timer::RetryDue(run_id, index) => {
                    let Some(step) = self.runs.get(&run_id).and_then(|r| r.step(index)) else {
                        continue;
                    };
                    if step.state != StepState::RetryWait {
                        continue;
                    }
                    let queue = step.queue().unwrap_or_default().to_owned();
                    let q = self.queue_live(&queue);
                    q.delayed = q.delayed.saturating_sub(1);
                    self.make_ready(tx, &run_id, index, &engine, "");
                }
            }
        }
    }

    /// When a live lease counts as stuck: its step's timeout, then the
    /// worker's SIGTERM-to-SIGKILL grace, then two heartbeats for the
    /// worker to report. `None` for a step without a timeout.
    fn stuck_check_at(&self, lease: &Lease) -> Option<Millis> {
        let step = self.runs.get(&lease.run_id)?.step(lease.step_index)?;
        let timeout = i64::try_from(step.exec()?.timeout_ms?).unwrap_or(i64::MAX / 4);
        let slack = ms(self.cfg.cancel_grace).saturating_add(2 * ms(self.cfg.heartbeat_interval));
        Some(
            lease
                .granted_at
                .saturating_add(timeout)
                .saturating_add(slack),
        )
    }

    /// A lease still live past its stuck check: its worker keeps it (it
    /// heartbeats) but could not stop the step. Flag it, and quarantine the
    /// run name once that happens too often.
    fn stuck_check(&mut self, tx: &mut Tx, id: &str) {
        let engine = Actor::engine();
        let Some(lease) = self.leases.get_mut(id) else {
            return;
        };
        if lease.stuck {
            return;
        }
        lease.stuck = true;
        let lease = lease.clone();
        tx.leases.insert(id.to_owned(), lease.clone());
        let Some(run) = self.runs.get(&lease.run_id) else {
            return;
        };
        let name = run.name.clone();
        let timeout = run
            .step(lease.step_index)
            .and_then(|s| s.exec()?.timeout_ms)
            .unwrap_or(0);
        let msg = format!(
            "lease {id} stuck: {}/{} is still held by {} after its {} timeout and the {} cancel grace; \
             the worker could not stop it: look at the process on that host, then force-release the lease",
            name,
            self.step_name(&lease.run_id, lease.step_index),
            lease.worker_id,
            humantime::format_duration(Duration::from_millis(timeout)),
            humantime::format_duration(self.cfg.cancel_grace),
        );
        self.emit(tx, &engine, "", Ev::new("lease.stuck", msg).lease(&lease));

        let window = ms(self.cfg.quarantine_window);
        let times = self.stuck_at.entry(name.clone()).or_default();
        times.push_back(tx.now);
        while times.front().is_some_and(|t| *t <= tx.now - window) {
            times.pop_front();
        }
        let count = times.len() as u32;
        let after = self.cfg.quarantine_after;
        if after == 0 || count < after || self.quarantines.contains_key(&name) {
            return;
        }
        let q = Quarantine {
            name: name.clone(),
            since: tx.now,
            stuck_count: count,
            message: format!(
                "{count} leases of runs named {name} got stuck within {}: new runs of it are refused and its \
                 queued steps wait until an operator clears it with `opsdeck unquarantine {name} --reason TEXT`",
                humantime::format_duration(self.cfg.quarantine_window)
            ),
        };
        let msg = format!("run name {name} quarantined: {}", q.message);
        tx.quarantines.insert(name.clone());
        self.quarantines.insert(name, q.clone());
        self.emit(
            tx,
            &engine,
            "",
            Ev::new("run_name.quarantined", msg)
                .run(&lease.run_id)
                .quarantine(&q),
        );
    }

    fn approval_timed_out(&mut self, tx: &mut Tx, id: &str) {
        let engine = Actor::engine();
        let Some(a) = self.approvals.get_mut(id) else {
            return;
        };
        if a.state != ApprovalState::Pending || a.deadline_at.is_none_or(|d| d > tx.now) {
            return;
        }
        a.decided_at = Some(tx.now);
        let (state, kind) = match a.spec.on_timeout {
            OnTimeout::Reject => (ApprovalState::Rejected, "approval.rejected"),
            OnTimeout::Fail => (ApprovalState::Expired, "approval.expired"),
        };
        a.state = state;
        tx.approvals.insert(id.to_owned());
        let msg = format!(
            "approval timed out; on_timeout = {}",
            a.spec.on_timeout.word()
        );
        let (run_id, index) = (a.run_id.clone(), a.step_index);
        let ev = Ev::new(kind, msg.clone()).approval(a);
        self.emit(tx, &engine, "approval timeout", ev);
        self.fail_step(
            tx,
            &run_id,
            index,
            StepState::Failed,
            msg.clone(),
            &engine,
            "approval timeout",
        );
        self.finish_run(
            tx,
            &run_id,
            RunState::Failed,
            msg,
            &engine,
            "approval timeout",
        );
    }

    // -------------------------------------------------------------- dispatch

    /// Leases ready steps to free workers: per queue, highest priority and
    /// oldest first, round-robin among the workers that can take them.
    pub fn dispatch(&mut self, tx: &mut Tx) {
        let queues: Vec<String> = self
            .queues
            .iter()
            .filter(|(_, q)| !q.queue.paused && !q.ready.is_empty())
            .map(|(n, _)| n.clone())
            .collect();
        if queues.is_empty() {
            return;
        }
        let mut free: Vec<(String, u32)> = self
            .workers
            .values()
            .filter(|w| w.state == WorkerState::Online && self.sessions.contains_key(&w.id))
            .map(|w| {
                let used = self.worker_leases.get(&w.id).map_or(0, |s| s.len() as u32);
                (w.id.clone(), w.slots.saturating_sub(used))
            })
            .filter(|(_, f)| *f > 0)
            .collect();
        if free.is_empty() {
            return;
        }
        let n = free.len();
        free.rotate_left(self.rr % n);
        self.rr = self.rr.wrapping_add(1);
        for queue in queues {
            while let Some(slot) = free.iter().position(|(id, f)| {
                *f > 0 && self.workers.get(id).is_some_and(|w| w.serves(&queue))
            }) {
                let Some(key) = self.next_ready(&queue) else {
                    break;
                };
                let worker_id = free[slot].0.clone();
                free[slot].1 -= 1;
                // Spread work: the next step goes to the next worker.
                let entry = free.remove(slot);
                free.push(entry);
                self.grant(tx, &key.run_id, key.step, &worker_id);
            }
        }
    }

    /// Takes the next ready step of a queue, passing over quarantined run names.
    fn next_ready(&mut self, queue: &str) -> Option<ReadyKey> {
        let q = self.queues.get_mut(queue)?;
        if self.quarantines.is_empty() {
            return q.ready.pop_first();
        }
        let runs = &self.runs;
        let quarantines = &self.quarantines;
        let key = q
            .ready
            .iter()
            .find(|k| {
                runs.get(&k.run_id)
                    .is_none_or(|r| !quarantines.contains_key(&r.name))
            })?
            .clone();
        q.ready.remove(&key);
        Some(key)
    }

    fn grant(&mut self, tx: &mut Tx, run_id: &str, index: u32, worker_id: &str) {
        let now = tx.now;
        let Some(run) = self.runs.get_mut(run_id) else {
            return;
        };
        let run_name = run.name.clone();
        let Some(step) = run.step_mut(index) else {
            return;
        };
        let Some(exec) = step.exec().cloned() else {
            return;
        };
        step.attempt += 1;
        step.fence += 1;
        let lease = Lease {
            id: ulid::Ulid::new().to_string(),
            run_id: run_id.to_owned(),
            step_index: index,
            worker_id: worker_id.to_owned(),
            attempt: step.attempt,
            fencing_token: step.fence,
            state: LeaseState::Active,
            granted_at: now,
            expires_at: now + ms(self.cfg.lease_ttl),
            ended_at: None,
            queue: exec.queue.clone(),
            stuck: false,
        };
        step.state = StepState::Leased;
        step.lease_id = Some(lease.id.clone());
        step.worker_id = Some(worker_id.to_owned());
        step.exit_code = None;
        let step_name = step.spec.name.clone();
        tx.runs.insert(run_id.to_owned());
        tx.leases.insert(lease.id.clone(), lease.clone());
        self.queue_live(&exec.queue).running += 1;
        self.worker_leases
            .entry(worker_id.to_owned())
            .or_default()
            .insert(lease.id.clone());
        self.timers.push(Reverse((
            lease.expires_at,
            Timer::LeaseExpiry(lease.id.clone()),
        )));
        self.leases.insert(lease.id.clone(), lease.clone());
        if let Some(at) = self.stuck_check_at(&lease) {
            self.timers
                .push(Reverse((at, Timer::StuckCheck(lease.id.clone()))));
        }
        let msg = format!(
            "{run_name}/{step_name} attempt {} leased to {worker_id}",
            lease.attempt
        );
        self.emit(
            tx,
            &Actor::engine(),
            "",
            Ev::new("lease.granted", msg).lease(&lease),
        );
        let (shell, argv) = match exec.command {
            crate::domain::Command::Shell(s) => (s, vec![]),
            crate::domain::Command::Argv(a) => (String::new(), a),
        };
        self.send(
            tx,
            worker_id,
            pb::engine_message::Kind::Assign(pb::Assignment {
                lease_id: lease.id.clone(),
                fencing_token: lease.fencing_token,
                run_id: run_id.to_owned(),
                step_index: index,
                step_name,
                attempt: lease.attempt,
                shell,
                argv,
                secret_env: exec
                    .env
                    .iter()
                    .filter(|e| e.secret.is_some())
                    .map(|e| e.name.clone())
                    .collect(),
                env: self.step_env(exec.env),
                workdir: exec.workdir.unwrap_or_default(),
                timeout_ms: exec.timeout_ms.unwrap_or(0),
                expires_at_ms: lease.expires_at,
            }),
        );
    }

    // ------------------------------------------------------------- helpers

    /// A step's env as its worker gets it: secret entries get their values
    /// from the engine's secrets. One the engine no longer has (its config
    /// changed since the submit) is left out, and said by name.
    fn step_env(&self, env: Vec<crate::domain::EnvEntry>) -> HashMap<String, String> {
        env.into_iter()
            .filter_map(|e| match &e.secret {
                None => Some((e.name, e.value)),
                // A run stored before secrets were named kept its value.
                Some(name) if name.is_empty() => Some((e.name, e.value)),
                Some(name) => match self.cfg.secrets.get(name) {
                    Some(value) => Some((e.name, value.to_owned())),
                    None => {
                        tracing::warn!(
                            env = %e.name,
                            secret = %name,
                            "the step's env names a secret that is no longer in the engine config's [secrets]; left out"
                        );
                        None
                    }
                },
            })
            .collect()
    }

    fn queue_live(&mut self, name: &str) -> &mut QueueLive {
        self.queues
            .entry(name.to_owned())
            .or_insert_with(|| QueueLive {
                queue: Queue {
                    name: name.to_owned(),
                    paused: false,
                },
                ..Default::default()
            })
    }

    fn send(&self, tx: &mut Tx, worker_id: &str, kind: pb::engine_message::Kind) {
        if let Some(s) = self.sessions.get(worker_id) {
            tx.effects.push(Effect::Send(
                s.tx.clone(),
                Box::new(pb::EngineMessage { kind: Some(kind) }),
            ));
        }
    }

    fn cancel_on_worker(&self, tx: &mut Tx, lease: &Lease, reason: &str) {
        self.send(
            tx,
            &lease.worker_id,
            pb::engine_message::Kind::Cancel(pb::CancelStep {
                lease_id: lease.id.clone(),
                reason: reason.to_owned(),
                grace_ms: self.cfg.cancel_grace.as_millis() as u64,
            }),
        );
    }

    fn enqueue_ready(&mut self, run_id: &str, index: u32) {
        let Some(step) = self.runs.get(run_id).and_then(|r| r.step(index)) else {
            return;
        };
        let Some(exec) = step.exec() else { return };
        let (queue, priority) = (exec.queue.clone(), exec.priority);
        self.ready_order += 1;
        let key = ReadyKey {
            priority: Reverse(priority),
            order: self.ready_order,
            run_id: run_id.to_owned(),
            step: index,
        };
        self.queue_live(&queue).ready.insert(key);
    }

    fn remove_ready(&mut self, queue: &str, run_id: &str, index: u32) {
        if let Some(q) = self.queues.get_mut(queue) {
            q.ready.retain(|k| !(k.run_id == run_id && k.step == index));
        }
    }

    fn end_lease(&mut self, tx: &mut Tx, id: &str, state: LeaseState) {
        let Some(mut lease) = self.leases.remove(id) else {
            return;
        };
        lease.state = state;
        lease.ended_at = Some(tx.now);
        if let Some(set) = self.worker_leases.get_mut(&lease.worker_id) {
            set.remove(id);
        }
        self.output_bytes.remove(id);
        let q = self.queue_live(&lease.queue);
        q.running = q.running.saturating_sub(1);
        if let Some(step) = self
            .runs
            .get_mut(&lease.run_id)
            .and_then(|r| r.step_mut(lease.step_index))
            && step.lease_id.as_deref() == Some(id)
        {
            step.lease_id = None;
        }
        tx.runs.insert(lease.run_id.clone());
        tx.leases.insert(id.to_owned(), lease.clone());
        self.recent_leases.push_back(lease);
        while self.recent_leases.len() > RECENT_LEASES {
            self.recent_leases.pop_front();
        }
    }

    /// Starts step `index` of a run: exec steps go to their queue, approval
    /// steps open an approval.
    fn start_step(&mut self, tx: &mut Tx, run_id: &str, index: u32, actor: &Actor, reason: &str) {
        let Some(run) = self.runs.get_mut(run_id) else {
            return;
        };
        run.current_step = index;
        run.updated_at = tx.now;
        let submitted_by = run.submitted_by.clone();
        let Some(step) = run.step_mut(index) else {
            return;
        };
        match step.spec.kind.clone() {
            StepKindSpec::Exec(_) => {
                run.state = RunState::Running;
                self.make_ready(tx, run_id, index, actor, reason);
            }
            StepKindSpec::Approval(spec) => {
                let id = ulid::Ulid::new().to_string();
                step.state = StepState::Waiting;
                step.approval_id = Some(id.clone());
                step.started_at = Some(tx.now);
                run.state = RunState::WaitingApproval;
                let deadline_at = spec
                    .timeout_ms
                    .map(|t| tx.now + i64::try_from(t).unwrap_or(i64::MAX / 4));
                let a = Approval {
                    id: id.clone(),
                    run_id: run_id.to_owned(),
                    step_index: index,
                    state: ApprovalState::Pending,
                    submitted_by,
                    spec,
                    decisions: vec![],
                    requested_at: tx.now,
                    deadline_at,
                    decided_at: None,
                };
                if let Some(d) = deadline_at {
                    self.timers
                        .push(Reverse((d, Timer::ApprovalDeadline(id.clone()))));
                }
                tx.runs.insert(run_id.to_owned());
                tx.approvals.insert(id.clone());
                let ev = Ev::new("approval.requested", "step waits for approval").approval(&a);
                self.approvals.insert(id, a);
                self.emit(tx, actor, reason, ev);
            }
        }
    }

    /// Puts an exec step on its queue's ready list.
    fn make_ready(&mut self, tx: &mut Tx, run_id: &str, index: u32, actor: &Actor, reason: &str) {
        let Some(step) = self.runs.get_mut(run_id).and_then(|r| r.step_mut(index)) else {
            return;
        };
        step.state = StepState::Queued;
        step.ready_since = Some(tx.now);
        step.next_attempt_at = None;
        step.worker_id = None;
        let queue = step.queue().unwrap_or_default().to_owned();
        tx.runs.insert(run_id.to_owned());
        self.enqueue_ready(run_id, index);
        self.queue_live(&queue).enqueued.push_back(tx.now);
        let q = self.queue_live(&queue);
        trim_window(&mut q.enqueued, tx.now);
        trim_window(&mut q.completed, tx.now);
        let ev = Ev::new(
            "step.queued",
            format!(
                "step {} ready on queue {queue}",
                self.step_name(run_id, index)
            ),
        )
        .step(run_id, index)
        .queue(&queue);
        self.emit(tx, actor, reason, ev);
    }

    /// Returns a step whose lease ended early to its queue, unless the run
    /// has moved on (cancelled, failed).
    fn requeue(&mut self, tx: &mut Tx, run_id: &str, index: u32, actor: &Actor, reason: &str) {
        let Some(run) = self.runs.get(run_id) else {
            return;
        };
        let live = run
            .step(index)
            .is_some_and(|s| matches!(s.state, StepState::Leased | StepState::Running));
        if run.state.is_final() || !live {
            return;
        }
        self.make_ready(tx, run_id, index, actor, reason);
    }

    #[allow(clippy::too_many_arguments)]
    fn succeed_step(
        &mut self,
        tx: &mut Tx,
        run_id: &str,
        index: u32,
        exit: Option<i32>,
        message: String,
        actor: &Actor,
        reason: &str,
    ) {
        let Some(run) = self.runs.get_mut(run_id) else {
            return;
        };
        let last = index as usize + 1 >= run.steps.len();
        let Some(step) = run.step_mut(index) else {
            return;
        };
        step.state = StepState::Succeeded;
        step.exit_code = exit;
        step.finished_at = Some(tx.now);
        step.message = message;
        tx.runs.insert(run_id.to_owned());
        self.emit(
            tx,
            actor,
            reason,
            Ev::new(
                "step.succeeded",
                format!("step {} succeeded", self.step_name(run_id, index)),
            )
            .step(run_id, index),
        );
        if last {
            self.finish_run(
                tx,
                run_id,
                RunState::Succeeded,
                "every step succeeded".into(),
                actor,
                reason,
            );
        } else {
            self.start_step(tx, run_id, index + 1, actor, reason);
        }
    }

    fn attempt_failed(
        &mut self,
        tx: &mut Tx,
        run_id: &str,
        index: u32,
        exit: Option<i32>,
        message: String,
        actor: &Actor,
    ) {
        let Some(step) = self.runs.get_mut(run_id).and_then(|r| r.step_mut(index)) else {
            return;
        };
        step.exit_code = exit;
        if step.has_attempts_left() {
            let delay = step
                .exec()
                .map_or(0, |e| e.backoff_after(step.attempt - step.attempt_base));
            let due = tx.now + i64::try_from(delay).unwrap_or(i64::MAX / 4);
            step.state = StepState::RetryWait;
            step.next_attempt_at = Some(due);
            step.message = message.clone();
            let queue = step.queue().unwrap_or_default().to_owned();
            tx.runs.insert(run_id.to_owned());
            self.queue_live(&queue).delayed += 1;
            self.timers
                .push(Reverse((due, Timer::RetryDue(run_id.to_owned(), index))));
            let msg = format!(
                "step {} failed ({message}); retry in {}",
                self.step_name(run_id, index),
                humantime::format_duration(Duration::from_millis(delay))
            );
            self.emit(
                tx,
                actor,
                "",
                Ev::new("step.retry_scheduled", msg)
                    .step(run_id, index)
                    .queue(&queue),
            );
        } else {
            let attempts = step.attempt;
            let msg = format!(
                "step {} dead after {attempts} attempts: {message}",
                self.step_name(run_id, index)
            );
            self.fail_step(tx, run_id, index, StepState::Dead, message, actor, "");
            self.finish_run(tx, run_id, RunState::Failed, msg, actor, "");
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn fail_step(
        &mut self,
        tx: &mut Tx,
        run_id: &str,
        index: u32,
        state: StepState,
        message: String,
        actor: &Actor,
        reason: &str,
    ) {
        let Some(step) = self.runs.get_mut(run_id).and_then(|r| r.step_mut(index)) else {
            return;
        };
        step.state = state;
        step.finished_at = Some(tx.now);
        step.message = message.clone();
        tx.runs.insert(run_id.to_owned());
        let kind = if state == StepState::Dead {
            "step.dead"
        } else {
            "step.failed"
        };
        self.emit(
            tx,
            actor,
            reason,
            Ev::new(
                kind,
                format!("step {}: {message}", self.step_name(run_id, index)),
            )
            .step(run_id, index),
        );
    }

    /// Takes a step out of whatever it is doing (queue, lease, backoff,
    /// approval) and leaves it in `state`.
    #[allow(clippy::too_many_arguments)]
    fn stop_step(
        &mut self,
        tx: &mut Tx,
        run_id: &str,
        index: u32,
        state: StepState,
        why: &str,
        actor: &Actor,
        reason: &str,
    ) {
        let Some(step) = self.runs.get(run_id).and_then(|r| r.step(index)).cloned() else {
            return;
        };
        let queue = step.queue().unwrap_or_default().to_owned();
        match step.state {
            StepState::Queued => self.remove_ready(&queue, run_id, index),
            StepState::RetryWait => {
                let q = self.queue_live(&queue);
                q.delayed = q.delayed.saturating_sub(1);
            }
            StepState::Leased | StepState::Running => {
                if let Some(lease) = step
                    .lease_id
                    .as_deref()
                    .and_then(|id| self.leases.get(id))
                    .cloned()
                {
                    self.end_lease(tx, &lease.id, LeaseState::Released);
                    let ev =
                        Ev::new("lease.released", format!("lease released: {why}")).lease(&lease);
                    self.emit(tx, actor, reason, ev);
                    self.cancel_on_worker(tx, &lease, why);
                    self.maybe_recycle(tx, &lease.worker_id, actor, reason);
                }
            }
            StepState::Waiting => {
                if let Some(a) = step
                    .approval_id
                    .as_deref()
                    .and_then(|id| self.approvals.get_mut(id))
                {
                    a.state = ApprovalState::Cancelled;
                    a.decided_at = Some(tx.now);
                    tx.approvals.insert(a.id.clone());
                    let ev = Ev::new("approval.cancelled", why.to_owned()).approval(a);
                    self.emit(tx, actor, reason, ev);
                }
            }
            _ => return,
        }
        if let Some(step) = self.runs.get_mut(run_id).and_then(|r| r.step_mut(index)) {
            step.state = state;
            step.finished_at = Some(tx.now);
            step.message = why.to_owned();
            tx.runs.insert(run_id.to_owned());
        }
    }

    fn finish_run(
        &mut self,
        tx: &mut Tx,
        run_id: &str,
        state: RunState,
        message: String,
        actor: &Actor,
        reason: &str,
    ) {
        let Some(run) = self.runs.get_mut(run_id) else {
            return;
        };
        run.state = state;
        run.finished_at = Some(tx.now);
        run.updated_at = tx.now;
        run.message = message.clone();
        tx.runs.insert(run_id.to_owned());
        let kind = match state {
            RunState::Succeeded => "run.succeeded",
            RunState::Cancelled => "run.cancelled",
            _ => "run.failed",
        };
        self.emit(tx, actor, reason, Ev::new(kind, message).run(run_id));
    }

    /// Recycles a worker that asked for it once its last lease has ended.
    fn maybe_recycle(&mut self, tx: &mut Tx, worker_id: &str, actor: &Actor, reason: &str) {
        let busy = self
            .worker_leases
            .get(worker_id)
            .is_some_and(|s| !s.is_empty());
        let Some(w) = self.workers.get_mut(worker_id) else {
            return;
        };
        if !w.recycle_requested
            || busy
            || w.state == WorkerState::Recycling
            || !self.sessions.contains_key(worker_id)
        {
            return;
        }
        w.state = WorkerState::Recycling;
        tx.workers.insert(worker_id.to_owned());
        let msg = format!(
            "worker {worker_id} drained; restarting as generation {}",
            w.generation + 1
        );
        self.emit(
            tx,
            actor,
            reason,
            Ev::new("worker.recycling", msg).worker(worker_id),
        );
        self.send(
            tx,
            worker_id,
            pb::engine_message::Kind::Recycle(pb::Recycle {}),
        );
    }

    /// Copies of every object a transaction changed, for the store.
    pub fn batch(&self, tx: &mut Tx) -> crate::store::Batch {
        crate::store::Batch {
            runs: tx
                .runs
                .iter()
                .filter_map(|id| self.runs.get(id).map(Run::header))
                .collect(),
            steps: tx
                .runs
                .iter()
                .filter_map(|id| self.runs.get(id))
                .flat_map(|r| r.steps.iter().map(|s| (r.id.clone(), s.clone())))
                .collect(),
            workers: tx
                .workers
                .iter()
                .filter_map(|id| self.workers.get(id).cloned())
                .collect(),
            leases: tx
                .leases
                .keys()
                .filter_map(|id| {
                    self.leases
                        .get(id)
                        .cloned()
                        .or_else(|| tx.lease(id).cloned())
                })
                .collect(),
            approvals: tx
                .approvals
                .iter()
                .filter_map(|id| self.approvals.get(id).cloned())
                .collect(),
            queues: tx
                .queues
                .iter()
                .filter_map(|n| self.queues.get(n).map(|q| q.queue.clone()))
                .collect(),
            events: std::mem::take(&mut tx.events),
            outputs: std::mem::take(&mut tx.outputs),
            quarantines: tx
                .quarantines
                .iter()
                .map(|n| (n.clone(), self.quarantines.get(n).cloned()))
                .collect(),
        }
    }
}

impl State {
    /// A step's name, for sentences.
    fn step_name(&self, run_id: &str, index: u32) -> String {
        self.runs
            .get(run_id)
            .and_then(|r| r.step(index))
            .map_or_else(|| format!("#{}", index + 1), |s| s.spec.name.clone())
    }
}

/// A Unix-milliseconds time as people read it (UTC).
fn time_word(at: Millis) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(at).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

fn not_found(what: &str, id: &str, list: &str) -> EngineError {
    EngineError::NotFound(format!("no {what} with id {id:?}; `{list}` lists them"))
}

fn word(s: RunState) -> String {
    use opsdeck_proto::names::Word;
    convert::run_state(s).word()
}

fn approval_word(s: ApprovalState) -> &'static str {
    match s {
        ApprovalState::Pending => "pending",
        ApprovalState::Approved => "approved",
        ApprovalState::Rejected => "rejected",
        ApprovalState::Expired => "expired",
        ApprovalState::Cancelled => "cancelled",
    }
}

fn lease_word(s: LeaseState) -> &'static str {
    match s {
        LeaseState::Active => "active",
        LeaseState::Released => "released",
        LeaseState::Expired => "expired",
        LeaseState::ForceReleased => "force_released",
    }
}

impl State {
    /// Takes over the worker sessions and stream subscribers of a state
    /// being replaced by a reload.
    pub fn adopt_connections(&mut self, old: State) {
        self.sessions = old.sessions;
        self.subscribers = old.subscribers;
    }
}

#[cfg(test)]
mod model_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::spec::parse;

    const T0: Millis = 1_000_000;

    fn state() -> State {
        State::load(CoreConfig::default(), Loaded::default(), T0)
    }

    fn alice() -> Actor {
        Actor {
            name: "alice".into(),
            transport: "unix",
        }
    }

    fn submit(s: &mut State, spec: &str) -> String {
        let mut tx = Tx::new(T0);
        let spec = parse(spec, &Limits::default()).unwrap();
        s.submit(&mut tx, spec, None, &alice(), "test")
            .unwrap()
            .0
            .id
    }

    /// Connects a worker and returns what the engine sends it.
    fn worker(
        s: &mut State,
        id: &str,
        queues: &[&str],
        slots: u32,
    ) -> mpsc::UnboundedReceiver<pb::EngineMessage> {
        worker_at(s, id, queues, slots, T0)
    }

    fn worker_at(
        s: &mut State,
        id: &str,
        queues: &[&str],
        slots: u32,
        now: Millis,
    ) -> mpsc::UnboundedReceiver<pb::EngineMessage> {
        let (out, rx) = mpsc::unbounded_channel();
        let hello = pb::Hello {
            worker_id: id.into(),
            queues: queues.iter().map(|q| q.to_string()).collect(),
            slots,
            generation: 1,
            ..Default::default()
        };
        let mut tx = Tx::new(now);
        s.hello(&mut tx, 1, id, hello, out).unwrap();
        run_effects(tx);
        rx
    }

    fn run_effects(tx: Tx) {
        for e in tx.effects {
            match e {
                Effect::Reply(f) => f(None),
                Effect::Send(to, m) => {
                    let _ = to.send(*m);
                }
            }
        }
    }

    fn assignments(rx: &mut mpsc::UnboundedReceiver<pb::EngineMessage>) -> Vec<pb::Assignment> {
        let mut out = vec![];
        while let Ok(m) = rx.try_recv() {
            if let Some(pb::engine_message::Kind::Assign(a)) = m.kind {
                out.push(a);
            }
        }
        out
    }

    fn dispatch(s: &mut State, now: Millis) {
        let mut tx = Tx::new(now);
        s.fire_timers(&mut tx);
        s.dispatch(&mut tx);
        run_effects(tx);
    }

    fn result(
        s: &mut State,
        worker: &str,
        a: &pb::Assignment,
        outcome: pb::Outcome,
        now: Millis,
    ) -> Vec<pb::Event> {
        let mut tx = Tx::new(now);
        let r = pb::StepResult {
            lease_id: a.lease_id.clone(),
            fencing_token: a.fencing_token,
            outcome: outcome as i32,
            ..Default::default()
        };
        s.step_result(&mut tx, worker, r);
        let events = std::mem::take(&mut tx.events);
        run_effects(tx);
        events
    }

    const ONE_STEP: &str = "name = \"x\"\n[[step]]\nqueue = \"q\"\nrun = \"true\"\nmax_attempts = 2\nbackoff = \"1s\"\n";

    #[test]
    fn a_result_with_a_stale_fencing_token_is_refused() {
        let mut s = state();
        let mut w1 = worker(&mut s, "w1", &["q"], 1);
        let run = submit(&mut s, ONE_STEP);
        dispatch(&mut s, T0);
        let first = assignments(&mut w1).pop().unwrap();
        // The lease expires; the step is leased again with a higher token.
        dispatch(&mut s, T0 + 31_000);
        let mut w2 = worker_at(&mut s, "w2", &["q"], 1, T0 + 31_000);
        dispatch(&mut s, T0 + 31_001);
        let second = assignments(&mut w2).pop().unwrap();
        assert!(second.fencing_token > first.fencing_token);
        let events = result(&mut s, "w1", &first, pb::Outcome::Succeeded, T0 + 31_002);
        assert_eq!(
            events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
            ["result.refused"]
        );
        let events = result(&mut s, "w2", &second, pb::Outcome::Succeeded, T0 + 31_003);
        assert!(events.iter().any(|e| e.kind == "run.succeeded"));
        assert_eq!(
            s.get_run(&run).unwrap().state,
            pb::RunState::Succeeded as i32
        );
    }

    #[test]
    fn a_failed_attempt_is_retried_after_its_backoff_then_dead() {
        let mut s = state();
        let mut w = worker(&mut s, "w", &["q"], 1);
        let run = submit(&mut s, ONE_STEP);
        dispatch(&mut s, T0);
        let a = assignments(&mut w).pop().unwrap();
        let events = result(&mut s, "w", &a, pb::Outcome::Failed, T0 + 10);
        assert!(events.iter().any(|e| e.kind == "step.retry_scheduled"));
        dispatch(&mut s, T0 + 500);
        assert!(
            assignments(&mut w).is_empty(),
            "no retry before the backoff"
        );
        dispatch(&mut s, T0 + 1_010);
        let b = assignments(&mut w).pop().unwrap();
        assert_eq!(b.attempt, 2);
        let events = result(&mut s, "w", &b, pb::Outcome::Failed, T0 + 1_020);
        assert!(events.iter().any(|e| e.kind == "step.dead"));
        assert_eq!(s.get_run(&run).unwrap().state, pb::RunState::Failed as i32);
    }

    #[test]
    fn steps_are_leased_by_priority_then_in_order() {
        let mut s = state();
        let low = submit(&mut s, ONE_STEP);
        let high = submit(
            &mut s,
            "name = \"h\"\n[[step]]\nqueue = \"q\"\nrun = \"true\"\npriority = 5\n",
        );
        let later = submit(&mut s, ONE_STEP);
        let mut w = worker(&mut s, "w", &["q"], 1);
        let mut order = vec![];
        for i in 0..3 {
            dispatch(&mut s, T0 + i);
            let a = assignments(&mut w).pop().unwrap();
            order.push(a.run_id.clone());
            result(&mut s, "w", &a, pb::Outcome::Succeeded, T0 + i);
        }
        assert_eq!(order, [high, low, later]);
    }

    #[test]
    fn the_submitter_cannot_approve_unless_the_step_allows_it() {
        let mut s = state();
        submit(&mut s, "name = \"a\"\n[[step]]\napproval = {}\n");
        let id = s.list_approvals(false)[0].id.clone();
        let mut tx = Tx::new(T0);
        let approver = Grants::new([crate::domain::Role::Approver], []);
        let err = s
            .decide(&mut tx, &id, true, &alice(), &approver, "mine")
            .unwrap_err();
        assert!(matches!(err, EngineError::PermissionDenied(m) if m.contains("four eyes")));
        let bob = Actor {
            name: "bob".into(),
            transport: "tcp",
        };
        s.decide(&mut tx, &id, true, &bob, &approver, "ok").unwrap();
        let again = s
            .decide(&mut tx, &id, true, &bob, &approver, "ok")
            .unwrap_err();
        assert!(matches!(again, EngineError::FailedPrecondition(_)));
    }

    #[test]
    fn a_paused_queue_hands_out_nothing_until_resumed() {
        let mut s = state();
        let mut w = worker(&mut s, "w", &["q"], 1);
        let mut tx = Tx::new(T0);
        s.set_queue_paused(&mut tx, "q", true, &alice(), "incident")
            .unwrap();
        submit(&mut s, ONE_STEP);
        dispatch(&mut s, T0);
        assert!(assignments(&mut w).is_empty());
        let mut tx = Tx::new(T0);
        s.set_queue_paused(&mut tx, "q", false, &alice(), "over")
            .unwrap();
        dispatch(&mut s, T0);
        assert_eq!(assignments(&mut w).len(), 1);
    }

    #[test]
    fn a_reregistering_worker_keeps_held_leases_and_returns_the_others() {
        let mut s = state();
        let mut w = worker(&mut s, "w", &["q"], 2);
        submit(&mut s, ONE_STEP);
        submit(&mut s, ONE_STEP);
        dispatch(&mut s, T0);
        let leased = assignments(&mut w);
        assert_eq!(leased.len(), 2);
        let (out, _rx) = mpsc::unbounded_channel();
        let hello = pb::Hello {
            worker_id: "w".into(),
            queues: vec!["q".into()],
            slots: 2,
            generation: 1,
            held: vec![pb::HeldLease {
                lease_id: leased[0].lease_id.clone(),
                fencing_token: leased[0].fencing_token,
            }],
            ..Default::default()
        };
        let mut tx = Tx::new(T0 + 5);
        s.hello(&mut tx, 2, "w", hello, out).unwrap();
        let live: Vec<String> = s.list_leases(false).into_iter().map(|l| l.id).collect();
        assert_eq!(live, [leased[0].lease_id.clone()]);
        assert!(
            tx.events
                .iter()
                .any(|e| e.kind == "lease.expired" && e.lease_id == leased[1].lease_id)
        );
    }

    #[test]
    fn another_identity_cannot_take_over_a_connected_workers_session() {
        let mut s = state();
        let mut w = worker(&mut s, "w", &["q"], 1);
        let (out, _rx) = mpsc::unbounded_channel();
        let hello = pb::Hello {
            worker_id: "w".into(),
            queues: vec!["*".into()],
            slots: 8,
            generation: 1,
            ..Default::default()
        };
        let mut tx = Tx::new(T0 + 5);
        let refused = s.hello(&mut tx, 2, "mallory", hello, out);
        assert!(
            matches!(&refused, Err(EngineError::PermissionDenied(m)) if m.contains("connected as w")),
            "{refused:?}"
        );
        // The worker keeps its session and its work.
        submit(&mut s, ONE_STEP);
        dispatch(&mut s, T0 + 10);
        assert_eq!(assignments(&mut w).len(), 1);
    }
}
