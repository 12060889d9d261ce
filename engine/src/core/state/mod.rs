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

mod approvals;
mod breaker;
mod bulk;
mod concurrency;
mod dispatch;
mod feed;
mod figures;
mod follow;
mod hang;
mod leases;
mod notify;
mod quarantine;
mod reads;
mod runs;
mod schedules;
mod timers;
mod workers;

pub use bulk::BulkAction;
pub use figures::OncallFigures;
pub use follow::{Followed, OutputFollow};

use super::tx::{Effect, Tx};
use crate::convert;
use crate::domain::scope::AgentScope;
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
    /// An exec step without a `timeout` gets this one.
    pub default_step_timeout: Duration,
    /// The longest `timeout` a step may ask for.
    pub max_step_timeout: Duration,
    /// A run name whose attempts fail or time out this many times within
    /// `failure_quarantine_window` is quarantined; 0 never quarantines.
    pub failure_quarantine_after: u32,
    pub failure_quarantine_window: Duration,
    /// A worker whose last this many attempts failed or timed out, while
    /// another worker of one of its queues succeeded, is taken out of
    /// dispatch; 0 never.
    pub breaker_after: u32,
    /// An open breaker lets one step through after this long.
    pub breaker_cooldown: Duration,
    /// The config's `[secrets]`, named by specs' secret env entries.
    pub secrets: Secrets,
    /// Finished runs kept in memory for the console, at most this many and
    /// for at most `finished_runs_kept_for`; older ones are read from the
    /// store when asked.
    pub finished_runs_kept: usize,
    pub finished_runs_kept_for: Duration,
    /// `[[notify]]` filters: which notifiers each event goes to.
    pub notify: Arc<crate::notifications::Rules>,
    /// `approval.overdue` this long before a pending approval's deadline.
    pub approval_overdue_before: Duration,
    /// `worker.offline_long` once a worker has been offline this long.
    pub worker_offline_after: Duration,
    /// The config's `[[policy]]` entries, applied to the runs schedules
    /// submit as to any other.
    pub policies: Vec<crate::domain::policy::Policy>,
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
            default_step_timeout: Duration::from_secs(60 * 60),
            max_step_timeout: Duration::from_secs(24 * 60 * 60),
            failure_quarantine_after: 0,
            failure_quarantine_window: Duration::from_secs(60 * 60),
            breaker_after: 5,
            breaker_cooldown: Duration::from_secs(10 * 60),
            secrets: Secrets::default(),
            finished_runs_kept: 10_000,
            finished_runs_kept_for: Duration::from_secs(10 * 60),
            notify: Arc::default(),
            approval_overdue_before: Duration::from_secs(15 * 60),
            worker_offline_after: Duration::from_secs(5 * 60),
            policies: Vec::new(),
        }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Milliseconds of a spec's duration, as a time span.
fn ms_of(v: u64) -> Millis {
    i64::try_from(v).unwrap_or(i64::MAX / 4)
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
    /// When each ready step became ready, by its readiness order.
    ages: BTreeMap<u64, Millis>,
    delayed: u64,
    running: u64,
    enqueued: VecDeque<Millis>,
    completed: VecDeque<Millis>,
    /// Who paused the queue, when and why (this engine's memory only).
    paused_by: Option<(String, Millis, String)>,
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
    /// Whether a run outlived its `timeout`.
    RunDeadline(String),
    /// Whether a lease's step has been quiet for its `quiet_timeout`.
    QuietCheck(String),
    /// Whether a worker's open breaker has cooled down.
    BreakerCooled(String),
    /// Whether a pending approval is near its deadline.
    ApprovalOverdue(String),
    /// Whether a worker has been offline for `worker_offline_after`.
    OfflineLong(String),
    /// Whether a schedule's next fire time has come.
    ScheduleDue(String),
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
    pub schedules: Vec<pb::Schedule>,
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
    /// Carry the worker's new state (worker events); a lease event names
    /// its worker without it.
    worker_changed: bool,
    lease: Option<String>,
    approval: Option<String>,
    queue: Option<String>,
    quarantine: Option<pb::Quarantine>,
    schedule: Option<pb::Schedule>,
    message: String,
    /// A notifier this event is not sent to (the one a
    /// `notification.failed` is about).
    not_to: Option<String>,
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
        self.worker_changed = true;
        self
    }
    /// Names the worker the event is about without a change to it.
    fn on_worker(mut self, id: &str) -> Self {
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
    fn schedule(mut self, s: pb::Schedule) -> Self {
        self.schedule = Some(s);
        self
    }
}

pub struct State {
    cfg: CoreConfig,
    /// Runs not final, and the cache of recently finished ones.
    runs: BTreeMap<String, Run>,
    /// Finished runs in the cache, in the order they finished: (when, id).
    finished: VecDeque<(Millis, String)>,
    /// Runs ever put in `finished`, and how many of those had their final
    /// state committed: only those may leave memory.
    finished_pushed: u64,
    finished_committed: u64,
    run_ids: ulid::Generator,
    /// Run ids by (submitter, idempotency key).
    idempotency: HashMap<(String, String), String>,
    queues: BTreeMap<String, QueueLive>,
    workers: BTreeMap<String, Worker>,
    sessions: HashMap<String, Session>,
    /// Live leases only; ended ones are kept in `recent_leases` for listing.
    leases: HashMap<String, Lease>,
    worker_leases: HashMap<String, BTreeSet<String>>,
    /// Leases the engine ended while their worker may still be stopping
    /// the step (a cancel's grace period): each keeps its slot taken until
    /// the worker says the step is gone (its result, or a heartbeat or
    /// hello that no longer holds it).
    stopping: HashMap<String, BTreeSet<String>>,
    recent_leases: VecDeque<Lease>,
    approvals: BTreeMap<String, Approval>,
    /// Run names refused (and not dispatched) until an operator clears them.
    quarantines: BTreeMap<String, Quarantine>,
    /// Schedules by name, with their parsed cron expressions.
    schedules: BTreeMap<String, schedules::Live>,
    /// When leases of runs of each name got stuck, within the window.
    stuck_at: HashMap<String, VecDeque<Millis>>,
    /// When attempts of runs of each name failed or timed out, within the
    /// failure window.
    failed_at: HashMap<String, VecDeque<Millis>>,
    /// When each live lease's step last printed (this engine's memory only).
    last_output: HashMap<String, Millis>,
    /// Failures and successes the worker breakers count.
    breakers: breaker::Tracker,
    /// Results each connected worker has spooled and not had acknowledged,
    /// as its last heartbeat said.
    spooled: HashMap<String, u32>,
    timers: BinaryHeap<Reverse<(Millis, Timer)>>,
    /// After a stall of the engine's own, no worker goes offline for want
    /// of heartbeats before this.
    heartbeat_grace_until: Millis,
    subscribers: Vec<Subscriber>,
    output_followers: Vec<follow::OutputFollower>,
    output_bytes: HashMap<String, usize>,
    /// Where each live lease's attempt's output ends so far (bytes): the
    /// offset of its next chunk.
    output_ends: HashMap<String, u64>,
    /// Queues whose figures changed since the last commit's events.
    changed_queues: BTreeSet<String>,
    seq: u64,
    ready_order: u64,
    /// Round-robin position among workers of equal standing.
    rr: usize,
    /// Live runs holding each concurrency key.
    key_holders: HashMap<String, BTreeSet<String>>,
    /// Runs whose steps are ready but that do not hold their concurrency
    /// key yet, per key, in the order they take it.
    key_waiting: HashMap<String, BTreeSet<concurrency::Waiter>>,
}

const RECENT_LEASES: usize = 500;

impl State {
    /// Rebuilds the live state from what the store holds. Live leases get a
    /// fresh TTL from `now`, so their workers have time to reconnect.
    pub fn load(cfg: CoreConfig, loaded: Loaded, now: Millis) -> Self {
        let mut s = Self {
            cfg,
            runs: BTreeMap::new(),
            finished: VecDeque::new(),
            finished_pushed: 0,
            finished_committed: 0,
            run_ids: ulid::Generator::new(),
            idempotency: HashMap::new(),
            queues: BTreeMap::new(),
            workers: BTreeMap::new(),
            sessions: HashMap::new(),
            leases: HashMap::new(),
            worker_leases: HashMap::new(),
            stopping: HashMap::new(),
            recent_leases: VecDeque::new(),
            approvals: BTreeMap::new(),
            quarantines: loaded
                .quarantines
                .into_iter()
                .map(|q| (q.name.clone(), q))
                .collect(),
            schedules: BTreeMap::new(),
            stuck_at: HashMap::new(),
            failed_at: HashMap::new(),
            last_output: HashMap::new(),
            breakers: breaker::Tracker::default(),
            spooled: HashMap::new(),
            timers: BinaryHeap::new(),
            heartbeat_grace_until: 0,
            subscribers: Vec::new(),
            output_followers: Vec::new(),
            output_bytes: HashMap::new(),
            output_ends: loaded.output_ends,
            changed_queues: BTreeSet::new(),
            seq: loaded.seq,
            ready_order: 0,
            rr: 0,
            key_holders: HashMap::new(),
            key_waiting: HashMap::new(),
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
                s.idempotency
                    .insert((run.submitted_by.clone(), k.clone()), run.id.clone());
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
            if run.state.is_final() {
                s.finished
                    .push_back((run.finished_at.unwrap_or(run.updated_at), run.id.clone()));
            }
            s.runs.insert(run.id.clone(), run);
        }
        s.load_key_holders();
        s.finished.make_contiguous().sort();
        // Loaded from the store: committed.
        s.finished_pushed = s.finished.len() as u64;
        s.finished_committed = s.finished_pushed;
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
        s.load_hang_timers(now);
        s.load_schedules(loaded.schedules, now);
        s.load_breaker_timers();
        s.load_offline_long_timers();
        for a in loaded.approvals {
            if a.state == ApprovalState::Pending
                && let Some(deadline) = a.deadline_at
            {
                s.timers
                    .push(Reverse((deadline, Timer::ApprovalDeadline(a.id.clone()))));
                s.set_overdue_timer(&a);
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

    /// When the next timer is due, or the oldest finished run leaves the cache.
    pub fn next_timer(&self) -> Option<Millis> {
        let timer = self.timers.peek().map(|Reverse((at, _))| *at);
        // Only a run whose end is committed can leave; the commit's end
        // wakes the loop anyway.
        let front = self.finished_pushed - self.finished.len() as u64;
        let evict = self
            .finished
            .front()
            .filter(|_| front < self.finished_committed)
            .map(|(at, _)| at + ms(self.cfg.finished_runs_kept_for));
        match (timer, evict) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
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
        self.output_followers = old.output_followers;
    }
}

#[cfg(test)]
mod model_tests;

#[cfg(test)]
mod oncall_tests;

#[cfg(test)]
mod concurrency_tests;
#[cfg(test)]
mod notify_tests;

#[cfg(test)]
mod tests;
