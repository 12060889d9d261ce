//! The console's mirror of the engine: every live run and the most
//! recently finished ones, every worker, queue, live lease, approval and
//! quarantined run name it has heard of, kept current from the snapshot and
//! the events of `Console.Watch`, plus what only a client can keep (queue
//! depth samples for the sparklines, the recent event tail).
//!
//! Events are small deltas: the whole run only on `run.submitted`, then
//! the changed fields of the run (`run_update`) and of its steps
//! (`step_updates`), and the queues whose figures changed. Memory stays
//! bounded however long the console runs: finished runs beyond
//! [`FINISHED_KEPT`] are dropped, the oldest first ([`Runs`]); the Run
//! screen reads one it no longer holds from the engine.
//!
//! No I/O and no view types: [`Data`] is applied to by the app and read by
//! the views. Derived figures (stale and overdue leases, stuck workers,
//! overdue approvals) are pure functions of it and a clock, so that they test
//! without one.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use opsdeck_proto::names::word_of;
use opsdeck_proto::v1::{
    Approval, ApprovalState, Event, Lease, LeaseState, Quarantine, Queue, Run, RunState, RunUpdate,
    Schedule, StepState, StepUpdate, Worker, WorkerState,
};

/// Events kept for the Events screen and the Overview tail.
pub const EVENT_TAIL: usize = 2_000;
/// Queue depth samples kept per queue: one a tick, so ten minutes.
pub const DEPTH_SAMPLES: usize = 600;
/// Finished runs kept beside the live ones (see [`Runs`]).
pub const FINISHED_KEPT: usize = 1_000;
/// Decided approvals kept beside the pending ones.
const DECIDED_KEPT: usize = 500;
/// How long a worker that came back from a recycle is marked "recycled".
const RECYCLED_SHOWN_MS: i64 = 60_000;
/// Heartbeats renew leases without an event, so the console reads the
/// workers and leases again every few seconds ([`Data::refresh`]); a lease
/// counts as past its expiry only when it is older than that by this much.
pub const EXPIRY_SLACK_MS: i64 = 6_000;
/// The window for the Overview's "runs finished" and failure rate.
pub const RATE_WINDOW_MS: i64 = 5 * 60_000;

/// A complete snapshot, as assembled from `SnapshotBegin`, its chunks and
/// `SnapshotEnd`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub seq: u64,
    pub runs: Vec<Run>,
    pub workers: Vec<Worker>,
    pub queues: Vec<opsdeck_proto::v1::Queue>,
    pub leases: Vec<Lease>,
    pub approvals: Vec<Approval>,
    pub quarantines: Vec<Quarantine>,
    pub schedules: Vec<Schedule>,
}

/// A queue's figures and when they were heard, so that the age of its
/// oldest ready step keeps growing between events.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueSeen {
    pub queue: Queue,
    pub seen_at_ms: i64,
}

impl QueueSeen {
    /// The age of the oldest ready step now; 0 when none is ready.
    pub fn oldest_ready_age_ms(&self, now_ms: i64) -> u64 {
        if self.queue.ready == 0 || self.queue.oldest_ready_age_ms == 0 {
            return 0;
        }
        let since = u64::try_from(now_ms.saturating_sub(self.seen_at_ms)).unwrap_or(0);
        self.queue.oldest_ready_age_ms.saturating_add(since)
    }
}

/// The runs the console holds: every run that is not final, and at most
/// a bound of finished ones. Past the bound the one that finished first
/// goes, except the pinned one (the run open on the Run screen), so that
/// the console's memory does not grow with the engine's history.
///
/// Reads look like a map's; every change goes through a method, which
/// keeps the index of finished runs right.
#[derive(Clone, Debug)]
pub struct Runs {
    /// By id: ULIDs sort by creation time, so iteration is oldest first.
    by_id: BTreeMap<String, Run>,
    /// The finished ones, by [`finished_key`]: the first goes first.
    finished: BTreeSet<(i64, String)>,
    /// Kept whatever its age.
    pinned: Option<String>,
    limit: usize,
}

impl Default for Runs {
    fn default() -> Self {
        Self::with_limit(FINISHED_KEPT)
    }
}

/// When a run finished, for the eviction order: its finish time, else
/// its last change (a run that ended without saying when).
fn finished_key(run: &Run) -> (i64, String) {
    let at = if run.finished_at_ms > 0 {
        run.finished_at_ms
    } else {
        run.updated_at_ms.max(run.created_at_ms)
    };
    (at, run.id.clone())
}

impl Runs {
    /// Keeping at most `limit` finished runs.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            by_id: BTreeMap::new(),
            finished: BTreeSet::new(),
            pinned: None,
            limit,
        }
    }

    pub fn get(&self, id: &str) -> Option<&Run> {
        self.by_id.get(id)
    }

    pub fn contains_key(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// Oldest first (by id, which is by creation).
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &Run> {
        self.by_id.values()
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &String> {
        self.by_id.keys()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// How many of them are finished.
    pub fn finished(&self) -> usize {
        self.finished.len()
    }

    /// Adds or replaces a run, then drops finished ones past the bound.
    pub fn insert(&mut self, run: Run) {
        self.put(run);
        self.trim();
    }

    /// Replaces them all (a snapshot); the pin stays.
    pub fn replace(&mut self, runs: impl IntoIterator<Item = Run>) {
        self.by_id.clear();
        self.finished.clear();
        for run in runs {
            self.put(run);
        }
        self.trim();
    }

    /// Changes a run we hold; false when we hold none of that id.
    pub fn update(&mut self, id: &str, change: impl FnOnce(&mut Run)) -> bool {
        let Some(run) = self.by_id.get_mut(id) else {
            return false;
        };
        if run_is_final(run) {
            self.finished.remove(&finished_key(run));
        }
        change(run);
        if run_is_final(run) {
            self.finished.insert(finished_key(run));
        }
        self.trim();
        true
    }

    /// Keeps this run (the one being looked at) whatever its age; `None`
    /// lets the last one pinned go the way of the others.
    pub fn pin(&mut self, id: Option<String>) {
        self.pinned = id;
        self.trim();
    }

    pub fn pinned(&self) -> Option<&str> {
        self.pinned.as_deref()
    }

    fn put(&mut self, run: Run) {
        if let Some(old) = self.by_id.get(&run.id)
            && run_is_final(old)
        {
            self.finished.remove(&finished_key(old));
        }
        if run_is_final(&run) {
            self.finished.insert(finished_key(&run));
        }
        self.by_id.insert(run.id.clone(), run);
    }

    fn trim(&mut self) {
        while self.finished.len() > self.limit {
            let pinned = self.pinned.as_deref();
            let Some(victim) = self
                .finished
                .iter()
                .find(|(_, id)| Some(id.as_str()) != pinned)
                .cloned()
            else {
                return;
            };
            self.finished.remove(&victim);
            self.by_id.remove(&victim.1);
        }
    }
}

/// A run's header fields as an event's `run_update` has them.
pub fn apply_run_update(run: &mut Run, update: &RunUpdate) {
    run.state = update.state;
    run.current_step = update.current_step;
    run.message.clone_from(&update.message);
    run.updated_at_ms = update.updated_at_ms;
    run.finished_at_ms = update.finished_at_ms;
}

/// A step's changing fields as an event's `step_updates` have them. A
/// step the run does not have (a newer spec than ours) is left alone.
pub fn apply_step_update(run: &mut Run, update: &StepUpdate) {
    // Steps are in index order, so the index is the position; a search
    // covers a run that says otherwise.
    let at = usize::try_from(update.index).ok().and_then(|i| {
        if run.steps.get(i).is_some_and(|s| s.index == update.index) {
            Some(i)
        } else {
            run.steps.iter().position(|s| s.index == update.index)
        }
    });
    let Some(step) = at.and_then(|i| run.steps.get_mut(i)) else {
        return;
    };
    step.state = update.state;
    step.attempt = update.attempt;
    step.attempts_counted = update.attempts_counted;
    step.attempts_given_back = update.attempts_given_back;
    step.hung = update.hung;
    step.lease_id.clone_from(&update.lease_id);
    step.worker_id.clone_from(&update.worker_id);
    step.exit_code = update.exit_code;
    step.has_exit_code = update.has_exit_code;
    step.message.clone_from(&update.message);
    step.started_at_ms = update.started_at_ms;
    step.finished_at_ms = update.finished_at_ms;
    step.next_attempt_at_ms = update.next_attempt_at_ms;
    step.approval_id.clone_from(&update.approval_id);
}

/// Applies what an event says changed in its run (`run_update`,
/// `step_updates`). False when the event carries such a change for a run
/// this copy is not of.
pub fn apply_run_delta(run: &mut Run, event: &Event) -> bool {
    if run.id != event.run_id {
        return false;
    }
    if let Some(update) = &event.run_update {
        apply_run_update(run, update);
    }
    for update in &event.step_updates {
        apply_step_update(run, update);
    }
    true
}

/// Whether an event carries changes to its run's fields or steps.
pub fn has_run_delta(event: &Event) -> bool {
    event.run_update.is_some() || !event.step_updates.is_empty()
}

/// Everything the console knows. `version` changes with every change, so
/// that derived row lists are recomputed only when needed.
#[derive(Clone, Debug, Default)]
pub struct Data {
    /// The seq of the last event applied (or of the snapshot).
    pub seq: u64,
    pub version: u64,
    /// Whether a snapshot has been applied since start (or a resync).
    pub loaded: bool,
    /// Live runs and the most recently finished ones.
    pub runs: Runs,
    pub workers: BTreeMap<String, Worker>,
    pub queues: BTreeMap<String, QueueSeen>,
    /// Live leases only.
    pub leases: BTreeMap<String, Lease>,
    /// Pending ones, and the decided ones heard of since.
    pub approvals: BTreeMap<String, Approval>,
    /// Quarantined run names, by name.
    pub quarantines: BTreeMap<String, Quarantine>,
    /// Schedules, by name.
    pub schedules: BTreeMap<String, Schedule>,
    /// The global tail, oldest first, without the objects they carried.
    pub events: VecDeque<Event>,
    /// Ready depth per queue, one sample a tick, oldest first.
    pub depth: BTreeMap<String, VecDeque<u64>>,
    /// Workers that came back from a recycle, and when.
    pub recycled: HashMap<String, i64>,
}

impl Data {
    /// Replaces the mirrored objects with a snapshot's. The event tail and
    /// the depth samples are history and stay.
    pub fn apply_snapshot(&mut self, snapshot: Snapshot, now_ms: i64) {
        self.seq = snapshot.seq;
        self.runs.replace(snapshot.runs);
        self.workers = snapshot
            .workers
            .into_iter()
            .map(|w| (w.id.clone(), w))
            .collect();
        let now = now_ms;
        self.queues = snapshot
            .queues
            .into_iter()
            .map(|q| {
                let seen = QueueSeen {
                    queue: q,
                    seen_at_ms: now,
                };
                (seen.queue.name.clone(), seen)
            })
            .collect();
        self.leases = snapshot
            .leases
            .into_iter()
            .filter(|l| l.state() == LeaseState::Active)
            .map(|l| (l.id.clone(), l))
            .collect();
        // Decided approvals the snapshot leaves out are still worth showing.
        self.approvals
            .retain(|_, a| a.state() != ApprovalState::Pending);
        for a in snapshot.approvals {
            self.approvals.insert(a.id.clone(), a);
        }
        self.quarantines = snapshot
            .quarantines
            .into_iter()
            .map(|q| (q.name.clone(), q))
            .collect();
        self.schedules = snapshot
            .schedules
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect();
        self.loaded = true;
        self.version += 1;
    }

    /// Applies one event: a submitted run is added whole, the changes to
    /// a run and its steps are applied to the run we hold (a run we do not
    /// hold is not made up from them: the Run screen reads it whole), the
    /// objects it carries replace ours, and the event (without them) joins
    /// the tail. Returns the stripped event.
    pub fn apply_event(&mut self, mut event: Event, now_ms: i64) -> &Event {
        if let Some(run) = event.run.take() {
            self.runs.insert(*run);
        }
        if has_run_delta(&event) {
            self.runs.update(&event.run_id, |run| {
                apply_run_delta(run, &event);
            });
        }
        if event.kind == "worker.forgotten" {
            self.workers.remove(&event.worker_id);
        }
        if let Some(worker) = event.worker.take() {
            if event.kind == "worker.recycled" {
                self.recycled.insert(worker.id.clone(), event.at_ms);
            }
            self.workers.insert(worker.id.clone(), *worker);
        }
        if let Some(lease) = event.lease.take() {
            // Lease events name their worker without carrying it: its list
            // of leases follows from them.
            if let Some(w) = self.workers.get_mut(&lease.worker_id) {
                w.lease_ids.retain(|id| *id != lease.id);
                if lease.state() == LeaseState::Active {
                    w.lease_ids.push(lease.id.clone());
                }
            }
            if lease.state() == LeaseState::Active {
                self.leases.insert(lease.id.clone(), *lease);
            } else {
                self.leases.remove(&lease.id);
            }
        }
        if let Some(approval) = event.approval.take() {
            self.approvals.insert(approval.id.clone(), *approval);
            self.trim_approvals();
        }
        if let Some(quarantine) = event.quarantine.take() {
            if event.kind == "run_name.quarantine_cleared" {
                self.quarantines.remove(&quarantine.name);
            } else {
                self.quarantines
                    .insert(quarantine.name.clone(), *quarantine);
            }
        }
        if let Some(schedule) = event.schedule.take() {
            if event.kind == "schedule.removed" {
                self.schedules.remove(&schedule.name);
            } else {
                self.schedules.insert(schedule.name.clone(), *schedule);
            }
        }
        for queue in std::mem::take(&mut event.queues) {
            self.queues.insert(
                queue.name.clone(),
                QueueSeen {
                    queue,
                    seen_at_ms: now_ms,
                },
            );
        }
        self.seq = self.seq.max(event.seq);
        self.version += 1;
        self.push_event(event)
    }

    /// Adds an event read from the log (`ListEvents`) to the tail, in seq
    /// order, unless it is there already. Its objects are not applied:
    /// they are older than what the stream gave.
    pub fn backfill(&mut self, mut events: Vec<Event>) {
        for e in &mut events {
            strip(e);
        }
        let mut all: Vec<Event> = self.events.drain(..).chain(events).collect();
        all.sort_by_key(|e| e.seq);
        all.dedup_by_key(|e| e.seq);
        let skip = all.len().saturating_sub(EVENT_TAIL);
        self.events = all.into_iter().skip(skip).collect();
        self.version += 1;
    }

    fn push_event(&mut self, mut event: Event) -> &Event {
        strip(&mut event);
        if self.events.len() >= EVENT_TAIL {
            self.events.pop_front();
        }
        self.events.push_back(event);
        // Just pushed, so there is a back.
        let last = self.events.len() - 1;
        &self.events[last]
    }

    fn trim_approvals(&mut self) {
        let decided = self
            .approvals
            .values()
            .filter(|a| a.state() != ApprovalState::Pending)
            .count();
        if decided <= DECIDED_KEPT {
            return;
        }
        let mut old: Vec<(i64, String)> = self
            .approvals
            .values()
            .filter(|a| a.state() != ApprovalState::Pending)
            .map(|a| (a.decided_at_ms, a.id.clone()))
            .collect();
        old.sort();
        for (_, id) in old.into_iter().take(decided - DECIDED_KEPT) {
            self.approvals.remove(&id);
        }
    }

    /// Merges what `ListWorkers` and `ListLeases` said about the things
    /// heartbeats change without an event: a worker's last heartbeat and a
    /// lease's expiry. Only ever forward, so that an answer older than an
    /// event applied meanwhile cannot undo it.
    pub fn refresh(&mut self, workers: &[Worker], leases: &[Lease]) {
        let mut changed = false;
        for w in workers {
            if let Some(ours) = self.workers.get_mut(&w.id)
                && w.last_heartbeat_at_ms > ours.last_heartbeat_at_ms
            {
                ours.last_heartbeat_at_ms = w.last_heartbeat_at_ms;
                changed = true;
            }
        }
        for l in leases {
            if let Some(ours) = self.leases.get_mut(&l.id)
                && l.expires_at_ms > ours.expires_at_ms
            {
                ours.expires_at_ms = l.expires_at_ms;
                changed = true;
            }
        }
        if changed {
            self.version += 1;
        }
    }

    /// Merges what `ListQueues` said, asked at `asked_at_ms` and heard at
    /// `now_ms`. The watch carries a queue's figures only when a step
    /// changes them, so a queue a connected worker serves but no step has
    /// named is only ever in this list, as are rates that decay with time.
    /// A queue an event told of after the question keeps the event's
    /// figures (they are newer); one the answer leaves out is gone (its
    /// last worker left), unless an event told of it after the question.
    pub fn refresh_queues(&mut self, queues: Vec<Queue>, asked_at_ms: i64, now_ms: i64) {
        let listed: HashSet<&str> = queues.iter().map(|q| q.name.as_str()).collect();
        let before = self.queues.len();
        self.queues
            .retain(|name, seen| listed.contains(name.as_str()) || seen.seen_at_ms > asked_at_ms);
        let mut changed = self.queues.len() != before;
        for queue in queues {
            match self.queues.get_mut(&queue.name) {
                Some(ours) if ours.seen_at_ms > asked_at_ms => {}
                Some(ours) if ours.queue == queue => {}
                Some(ours) => {
                    *ours = QueueSeen {
                        queue,
                        seen_at_ms: now_ms,
                    };
                    changed = true;
                }
                None => {
                    self.queues.insert(
                        queue.name.clone(),
                        QueueSeen {
                            queue,
                            seen_at_ms: now_ms,
                        },
                    );
                    changed = true;
                }
            }
        }
        if changed {
            self.version += 1;
        }
    }

    /// Takes one depth sample per queue (the main loop does, each tick).
    pub fn sample(&mut self) {
        for (name, q) in &self.queues {
            let samples = self.depth.entry(name.clone()).or_default();
            if samples.len() >= DEPTH_SAMPLES {
                samples.pop_front();
            }
            samples.push_back(q.queue.ready);
        }
        self.version += 1;
    }

    /// The event with this seq, if still in the tail.
    pub fn event(&self, seq: u64) -> Option<&Event> {
        let (a, b) = self.events.as_slices();
        let find = |s: &'_ [Event]| s.binary_search_by_key(&seq, |e| e.seq).ok();
        match find(a) {
            Some(i) => a.get(i),
            None => find(b).and_then(|i| b.get(i)),
        }
    }

    /// The pending approval of a run, if it waits for one.
    pub fn pending_approval_of(&self, run_id: &str) -> Option<&Approval> {
        self.approvals
            .values()
            .find(|a| a.run_id == run_id && a.state() == ApprovalState::Pending)
    }

    pub fn pending_approvals(&self) -> usize {
        self.approvals
            .values()
            .filter(|a| a.state() == ApprovalState::Pending)
            .count()
    }
}

/// Drops the objects and changes an event carried: they were applied,
/// and keeping them per event in the tail would multiply memory.
pub fn strip(event: &mut Event) {
    event.run = None;
    event.worker = None;
    event.lease = None;
    event.approval = None;
    event.quarantine = None;
    event.run_update = None;
    event.step_updates = Vec::new();
    event.queues = Vec::new();
}

// ------------------------------------------------------------- derived

/// Whether a run is over.
pub fn run_is_final(run: &Run) -> bool {
    matches!(
        run.state(),
        RunState::Succeeded | RunState::Failed | RunState::Cancelled
    )
}

/// Whether an approval's deadline has passed while it is still pending.
pub fn overdue(a: &Approval, now_ms: i64) -> bool {
    a.state() == ApprovalState::Pending && a.deadline_at_ms > 0 && a.deadline_at_ms < now_ms
}

/// How the holder of a lease is doing, as the Leases screen shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holder {
    /// Connected and online or draining.
    Ok,
    /// Still registered but its connection is gone, or it is offline or
    /// stopped: the lease will expire.
    Gone,
    /// The console has not heard of the worker.
    Unknown,
}

pub fn holder(data: &Data, lease: &Lease) -> Holder {
    match data.workers.get(&lease.worker_id) {
        None => Holder::Unknown,
        Some(w)
            if w.connected && !matches!(w.state(), WorkerState::Offline | WorkerState::Stopped) =>
        {
            Holder::Ok
        }
        Some(_) => Holder::Gone,
    }
}

/// Stale: the holder is gone, so the lease only waits to expire.
pub fn lease_stale(data: &Data, lease: &Lease) -> bool {
    holder(data, lease) != Holder::Ok
}

/// Stuck, as the engine says (`lease.stuck`): the step outlived its
/// timeout, the cancel grace and two heartbeats while its worker kept the
/// lease; the worker could not stop it, and someone has to.
pub fn lease_stuck(lease: &Lease) -> bool {
    lease.stuck
}

/// Overdue, as the console sees it before the engine says stuck: a lease
/// past its expiry (beyond what the refresh can explain) while its worker
/// is connected, or a running step over its timeout (its worker should be
/// stopping it now).
pub fn lease_overdue(data: &Data, lease: &Lease, now_ms: i64) -> bool {
    if lease.stuck || holder(data, lease) != Holder::Ok {
        return false;
    }
    if lease.expires_at_ms > 0 && lease.expires_at_ms + EXPIRY_SLACK_MS < now_ms {
        return true;
    }
    let step = data
        .runs
        .get(&lease.run_id)
        .and_then(|r| r.steps.get(lease.step_index as usize));
    step.is_some_and(|s| {
        s.state() == StepState::Running
            && s.timeout_ms > 0
            && s.started_at_ms > 0
            && now_ms.saturating_sub(s.started_at_ms)
                > i64::try_from(s.timeout_ms).unwrap_or(i64::MAX)
    })
}

/// The state word the Workers screen shows, with what qualifies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerStatus {
    /// `online`, `draining`, `recycling`, `offline`, `stopped`.
    pub word: String,
    /// `idle` / `busy` for an online worker; `recycle asked`,
    /// `recycled`, `disconnected` where they apply.
    pub note: Option<&'static str>,
    pub stuck: bool,
}

pub fn worker_status(data: &Data, w: &Worker, now_ms: i64) -> WorkerStatus {
    let word = word_of::<WorkerState>(w.state);
    let live = matches!(w.state(), WorkerState::Online | WorkerState::Draining);
    let recently_recycled = data
        .recycled
        .get(&w.id)
        .is_some_and(|at| now_ms.saturating_sub(*at) < RECYCLED_SHOWN_MS);
    let note = if live && !w.connected {
        Some("disconnected")
    } else if w.recycle_requested && w.state() != WorkerState::Recycling {
        Some("recycle asked")
    } else if w.state() == WorkerState::Online && recently_recycled {
        Some("recycled")
    } else if w.state() == WorkerState::Online {
        Some(if w.lease_ids.is_empty() {
            "idle"
        } else {
            "busy"
        })
    } else {
        None
    };
    let stuck = w
        .lease_ids
        .iter()
        .filter_map(|id| data.leases.get(id))
        .any(lease_stuck);
    WorkerStatus { word, note, stuck }
}

/// The Overview's figures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Figures {
    pub online_idle: usize,
    pub online_busy: usize,
    pub draining: usize,
    pub recycling: usize,
    pub offline: usize,
    pub stopped: usize,
    pub stuck: usize,
    pub pending_approvals: usize,
    pub overdue_approvals: usize,
    pub oldest_pending_ms: u64,
    pub live_leases: usize,
    pub stale_leases: usize,
    /// Leases the engine marked stuck.
    pub stuck_leases: usize,
    /// Quarantined run names.
    pub quarantines: usize,
    pub ready: u64,
    pub running: u64,
    pub delayed: u64,
    pub enqueued_per_min: u64,
    pub completed_per_min: u64,
    pub active_runs: usize,
    /// Runs that ended within [`RATE_WINDOW_MS`], and how many failed.
    pub finished_recently: usize,
    pub failed_recently: usize,
}

impl Figures {
    /// Failed runs among those finished recently, in percent.
    pub fn failure_rate(&self) -> Option<u64> {
        let finished = u64::try_from(self.finished_recently).ok()?;
        let failed = u64::try_from(self.failed_recently).ok()?;
        (finished > 0).then(|| failed * 100 / finished)
    }
}

pub fn figures(data: &Data, now_ms: i64) -> Figures {
    let mut f = Figures::default();
    for w in data.workers.values() {
        let status = worker_status(data, w, now_ms);
        if status.stuck {
            f.stuck += 1;
        }
        match w.state() {
            WorkerState::Online if w.lease_ids.is_empty() => f.online_idle += 1,
            WorkerState::Online => f.online_busy += 1,
            WorkerState::Draining => f.draining += 1,
            WorkerState::Recycling => f.recycling += 1,
            WorkerState::Offline => f.offline += 1,
            WorkerState::Stopped | WorkerState::Unspecified => f.stopped += 1,
        }
    }
    for a in data.approvals.values() {
        if a.state() == ApprovalState::Pending {
            f.pending_approvals += 1;
            if overdue(a, now_ms) {
                f.overdue_approvals += 1;
            }
            let age = u64::try_from(now_ms.saturating_sub(a.requested_at_ms)).unwrap_or(0);
            f.oldest_pending_ms = f.oldest_pending_ms.max(age);
        }
    }
    f.live_leases = data.leases.len();
    f.stale_leases = data
        .leases
        .values()
        .filter(|l| lease_stale(data, l))
        .count();
    f.stuck_leases = data.leases.values().filter(|l| lease_stuck(l)).count();
    f.quarantines = data.quarantines.len();
    for q in data.queues.values() {
        f.ready += q.queue.ready;
        f.running += q.queue.running;
        f.delayed += q.queue.delayed;
        f.enqueued_per_min += q.queue.enqueued_last_minute;
        f.completed_per_min += q.queue.completed_last_minute;
    }
    for r in data.runs.values() {
        if !run_is_final(r) {
            f.active_runs += 1;
        } else if r.finished_at_ms > now_ms - RATE_WINDOW_MS {
            f.finished_recently += 1;
            if r.state() == RunState::Failed {
                f.failed_recently += 1;
            }
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use opsdeck_proto::v1::Step;

    const NOW: i64 = 1_700_000_000_000;

    fn worker(id: &str, connected: bool, leases: &[&str]) -> Worker {
        Worker {
            id: id.into(),
            state: WorkerState::Online as i32,
            connected,
            lease_ids: leases.iter().map(|l| (*l).to_owned()).collect(),
            slots: 2,
            ..Worker::default()
        }
    }

    fn lease(id: &str, worker: &str, expires_at_ms: i64) -> Lease {
        Lease {
            id: id.into(),
            worker_id: worker.into(),
            run_id: "r1".into(),
            state: LeaseState::Active as i32,
            expires_at_ms,
            ..Lease::default()
        }
    }

    #[test]
    fn lease_events_keep_their_worker_s_list_of_leases() {
        let mut data = Data::default();
        data.workers.insert("w1".into(), worker("w1", true, &[]));
        let granted = Event {
            seq: 1,
            kind: "lease.granted".into(),
            lease: Some(Box::new(lease("l1", "w1", NOW))),
            ..Event::default()
        };
        data.apply_event(granted, NOW);
        assert_eq!(data.workers["w1"].lease_ids, vec!["l1".to_owned()]);
        let mut ended = lease("l1", "w1", NOW);
        ended.state = LeaseState::Released as i32;
        let released = Event {
            seq: 2,
            kind: "lease.released".into(),
            lease: Some(Box::new(ended)),
            ..Event::default()
        };
        data.apply_event(released, NOW);
        assert!(data.workers["w1"].lease_ids.is_empty());
        assert!(data.leases.is_empty());
    }

    fn step(index: u32, state: StepState) -> Step {
        Step {
            index,
            name: format!("step-{index}"),
            state: state as i32,
            queue: "build".into(),
            max_attempts: 3,
            timeout_ms: 60_000,
            ..Step::default()
        }
    }

    fn submitted(id: &str, seq: u64) -> Event {
        Event {
            seq,
            kind: "run.submitted".into(),
            run_id: id.into(),
            run: Some(Box::new(Run {
                id: id.into(),
                name: "deploy".into(),
                state: RunState::Queued as i32,
                created_at_ms: NOW,
                steps: vec![step(0, StepState::Queued), step(1, StepState::Blocked)],
                ..Run::default()
            })),
            ..Event::default()
        }
    }

    fn finished_run(id: &str, finished_at_ms: i64) -> Run {
        Run {
            id: id.into(),
            state: RunState::Succeeded as i32,
            finished_at_ms,
            ..Run::default()
        }
    }

    #[test]
    fn run_submitted_inserts_the_whole_run_and_the_tail_keeps_none_of_it() {
        let mut data = Data::default();
        data.apply_event(submitted("r1", 7), NOW);
        let run = data.runs.get("r1").unwrap();
        assert_eq!(run.name, "deploy");
        assert_eq!(run.steps.len(), 2);
        assert!(data.events[0].run.is_none());
        assert_eq!(data.seq, 7);
    }

    #[test]
    fn a_run_update_changes_the_runs_header_and_nothing_else() {
        let mut data = Data::default();
        data.apply_event(submitted("r1", 1), NOW);
        let version = data.version;
        data.apply_event(
            Event {
                seq: 2,
                kind: "run.finished".into(),
                run_id: "r1".into(),
                run_update: Some(RunUpdate {
                    state: RunState::Failed as i32,
                    current_step: 1,
                    message: "step 2 failed: exit 3".into(),
                    updated_at_ms: NOW + 5,
                    finished_at_ms: NOW + 5,
                }),
                ..Event::default()
            },
            NOW,
        );
        let run = data.runs.get("r1").unwrap();
        assert_eq!(run.state(), RunState::Failed);
        assert_eq!(run.current_step, 1);
        assert_eq!(run.message, "step 2 failed: exit 3");
        assert_eq!((run.updated_at_ms, run.finished_at_ms), (NOW + 5, NOW + 5));
        assert_eq!(run.name, "deploy", "what a delta does not carry stays");
        assert_eq!(run.steps.len(), 2);
        assert!(data.version > version);
        assert_eq!(data.runs.finished(), 1, "it counts as finished now");
        assert!(
            data.events[1].run_update.is_none(),
            "the tail keeps no deltas"
        );
    }

    #[test]
    fn step_updates_change_the_steps_they_name() {
        let mut data = Data::default();
        data.apply_event(submitted("r1", 1), NOW);
        data.apply_event(
            Event {
                seq: 2,
                kind: "step.failed".into(),
                run_id: "r1".into(),
                step_updates: vec![
                    StepUpdate {
                        index: 0,
                        state: StepState::RetryWait as i32,
                        attempt: 1,
                        lease_id: "l1".into(),
                        worker_id: "w1".into(),
                        exit_code: 3,
                        has_exit_code: true,
                        message: "exit 3".into(),
                        started_at_ms: NOW - 10,
                        finished_at_ms: NOW - 1,
                        next_attempt_at_ms: NOW + 1_000,
                        approval_id: String::new(),
                        attempts_counted: 1,
                        attempts_given_back: 0,
                        hung: false,
                    },
                    StepUpdate {
                        index: 1,
                        state: StepState::Waiting as i32,
                        approval_id: "a1".into(),
                        ..StepUpdate::default()
                    },
                    // A step the run does not have is left alone.
                    StepUpdate {
                        index: 9,
                        ..StepUpdate::default()
                    },
                ],
                ..Event::default()
            },
            NOW,
        );
        let steps = &data.runs.get("r1").unwrap().steps;
        assert_eq!(steps.len(), 2);
        let s = &steps[0];
        assert_eq!(s.state(), StepState::RetryWait);
        assert_eq!((s.attempt, s.exit_code, s.has_exit_code), (1, 3, true));
        assert_eq!((s.lease_id.as_str(), s.worker_id.as_str()), ("l1", "w1"));
        assert_eq!(s.message, "exit 3");
        assert_eq!(
            (s.started_at_ms, s.finished_at_ms, s.next_attempt_at_ms),
            (NOW - 10, NOW - 1, NOW + 1_000)
        );
        assert_eq!(
            (s.name.as_str(), s.timeout_ms),
            ("step-0", 60_000),
            "the spec stays"
        );
        assert_eq!(steps[1].state(), StepState::Waiting);
        assert_eq!(steps[1].approval_id, "a1");
        assert!(
            data.events[1].step_updates.is_empty(),
            "the tail keeps no deltas"
        );
    }

    #[test]
    fn a_delta_for_a_run_not_held_is_ignored_and_makes_no_run() {
        let mut data = Data::default();
        data.apply_event(
            Event {
                seq: 3,
                kind: "step.running".into(),
                run_id: "gone".into(),
                run_update: Some(RunUpdate {
                    state: RunState::Running as i32,
                    ..RunUpdate::default()
                }),
                step_updates: vec![StepUpdate::default()],
                ..Event::default()
            },
            NOW,
        );
        assert!(data.runs.is_empty());
        assert_eq!(data.events.len(), 1, "the event still joins the tail");
        assert_eq!(data.seq, 3);
    }

    #[test]
    fn queues_carried_by_an_event_replace_ours_and_are_seen_now() {
        let mut data = Data::default();
        let q = |name: &str, ready| Queue {
            name: name.into(),
            ready,
            ..Queue::default()
        };
        data.apply_snapshot(
            Snapshot {
                queues: vec![q("build", 4), q("ops", 1)],
                ..Snapshot::default()
            },
            NOW - 10_000,
        );
        data.apply_event(
            Event {
                seq: 1,
                kind: "step.leased".into(),
                queues: vec![q("build", 3), q("deploy", 2)],
                ..Event::default()
            },
            NOW,
        );
        assert_eq!(data.queues["build"].queue.ready, 3);
        assert_eq!(data.queues["build"].seen_at_ms, NOW);
        assert_eq!(data.queues["deploy"].queue.ready, 2);
        assert_eq!(
            data.queues["ops"].queue.ready, 1,
            "a queue not carried stays"
        );
        assert!(data.events[0].queues.is_empty(), "the tail keeps no queues");
    }

    #[test]
    fn finished_runs_past_the_bound_go_the_first_finished_first_and_live_ones_all_stay() {
        let mut runs = Runs::with_limit(3);
        for i in 0..10 {
            runs.insert(Run {
                id: format!("live{i}"),
                state: RunState::Running as i32,
                ..Run::default()
            });
        }
        // Finished in an order other than their ids'.
        for (id, at) in [("f1", 50), ("f2", 10), ("f3", 40), ("f4", 30), ("f5", 20)] {
            runs.insert(finished_run(id, NOW + at));
        }
        assert_eq!(runs.finished(), 3);
        assert_eq!(runs.len(), 13);
        let kept: Vec<&String> = runs.keys().filter(|k| k.starts_with('f')).collect();
        assert_eq!(kept, ["f1", "f3", "f4"], "f2 and f5 finished first");

        // A live run finishing counts against the bound too.
        runs.update("live0", |r| {
            r.state = RunState::Failed as i32;
            r.finished_at_ms = NOW + 60;
        });
        assert_eq!(runs.finished(), 3);
        assert!(runs.contains_key("live0"));
        assert!(!runs.contains_key("f4"));
        assert_eq!(runs.len(), 12);
        // A finished run retried is live again, and kept whatever happens.
        runs.update("f3", |r| r.state = RunState::Running as i32);
        assert_eq!(runs.finished(), 2);
        for i in 0..5 {
            runs.insert(finished_run(&format!("g{i}"), NOW + 100 + i));
        }
        assert!(runs.contains_key("f3"));
        assert_eq!(runs.finished(), 3);
        assert_eq!(runs.len(), 9 + 1 + 3, "nine live, f3, three finished");
    }

    #[test]
    fn the_default_bound_holds_through_a_snapshot_and_a_stream_of_runs() {
        let mut data = Data::default();
        data.apply_snapshot(
            Snapshot {
                runs: (0..FINISHED_KEPT + 500)
                    .map(|i| finished_run(&format!("s{i:05}"), NOW + i as i64))
                    .collect(),
                ..Snapshot::default()
            },
            NOW,
        );
        assert_eq!(data.runs.len(), FINISHED_KEPT);
        assert!(!data.runs.contains_key("s00499"));
        assert!(data.runs.contains_key("s00500"));
        for i in 0..3 * FINISHED_KEPT as u64 {
            let id = format!("e{i:05}");
            data.apply_event(submitted(&id, i + 1), NOW);
            data.apply_event(
                Event {
                    seq: i + 1,
                    run_id: id,
                    run_update: Some(RunUpdate {
                        state: RunState::Succeeded as i32,
                        finished_at_ms: NOW + 10_000 + i as i64,
                        ..RunUpdate::default()
                    }),
                    ..Event::default()
                },
                NOW,
            );
        }
        assert_eq!(data.runs.len(), FINISHED_KEPT);
        assert_eq!(data.runs.finished(), FINISHED_KEPT);
        assert!(data.runs.keys().all(|k| k.starts_with('e')));
    }

    #[test]
    fn a_pinned_run_is_kept_whatever_its_age_and_goes_first_once_unpinned() {
        let mut runs = Runs::with_limit(2);
        runs.insert(finished_run("old", NOW - 1_000));
        runs.pin(Some("old".into()));
        for i in 0..5 {
            runs.insert(finished_run(&format!("new{i}"), NOW + i));
        }
        assert!(runs.contains_key("old"));
        assert_eq!(runs.finished(), 2, "the pinned one counts");
        assert_eq!(runs.pinned(), Some("old"));
        // Unpinned, it is the first to go when the next one finishes.
        runs.pin(None);
        runs.insert(finished_run("newer", NOW + 10));
        assert!(!runs.contains_key("old"));
        assert_eq!(runs.keys().collect::<Vec<_>>(), ["new4", "newer"]);
    }

    #[test]
    fn events_replace_objects_and_drop_ended_leases() {
        let mut data = Data::default();
        let mut ev = Event {
            seq: 5,
            kind: "lease.granted".into(),
            lease: Some(Box::new(lease("l1", "w1", NOW))),
            worker: Some(Box::new(worker("w1", true, &["l1"]))),
            ..Event::default()
        };
        data.apply_event(ev.clone(), NOW);
        assert!(data.leases.contains_key("l1"));
        assert_eq!(data.seq, 5);
        assert!(data.events[0].lease.is_none(), "the tail keeps no objects");

        ev.seq = 6;
        ev.kind = "lease.released".into();
        ev.lease.as_mut().unwrap().state = LeaseState::Released as i32;
        data.apply_event(ev, NOW);
        assert!(data.leases.is_empty());
        assert_eq!(data.events.len(), 2);
        assert_eq!(data.event(6).unwrap().kind, "lease.released");
    }

    #[test]
    fn a_snapshot_replaces_objects_but_keeps_history() {
        let mut data = Data::default();
        data.apply_event(
            Event {
                seq: 1,
                run: Some(Box::new(Run {
                    id: "old".into(),
                    ..Run::default()
                })),
                ..Event::default()
            },
            NOW,
        );
        data.apply_snapshot(
            Snapshot {
                seq: 10,
                runs: vec![Run {
                    id: "new".into(),
                    ..Run::default()
                }],
                ..Snapshot::default()
            },
            NOW,
        );
        assert_eq!(data.runs.keys().collect::<Vec<_>>(), ["new"]);
        assert_eq!(data.events.len(), 1);
        assert_eq!(data.seq, 10);
        assert!(data.loaded);
    }

    #[test]
    fn backfill_merges_in_seq_order_without_duplicates() {
        let mut data = Data::default();
        let ev = |seq| Event {
            seq,
            ..Event::default()
        };
        data.apply_event(ev(5), NOW);
        data.backfill(vec![ev(3), ev(4), ev(5)]);
        let seqs: Vec<u64> = data.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [3, 4, 5]);
    }

    #[test]
    fn refresh_only_moves_heartbeats_and_expiries_forward() {
        let mut data = Data::default();
        data.workers.insert("w1".into(), worker("w1", true, &[]));
        data.leases.insert("l1".into(), lease("l1", "w1", NOW));
        let mut newer = worker("w1", true, &[]);
        newer.last_heartbeat_at_ms = NOW;
        data.refresh(&[newer], &[lease("l1", "w1", NOW - 5)]);
        assert_eq!(data.workers["w1"].last_heartbeat_at_ms, NOW);
        assert_eq!(data.leases["l1"].expires_at_ms, NOW);
    }

    #[test]
    fn listed_queues_are_merged_newest_first_and_a_queue_no_longer_listed_goes() {
        let q = |name: &str, ready, workers| Queue {
            name: name.into(),
            ready,
            workers,
            ..Queue::default()
        };
        let mut data = Data::default();
        data.apply_snapshot(
            Snapshot {
                queues: vec![q("build", 4, 1), q("old", 0, 0)],
                ..Snapshot::default()
            },
            NOW,
        );
        // Asked at NOW + 10; meanwhile an event tells build's new depth
        // and of a queue the answer predates.
        data.apply_event(
            Event {
                seq: 1,
                queues: vec![q("build", 2, 1), q("fresh", 1, 0)],
                ..Event::default()
            },
            NOW + 20,
        );
        let version = data.version;
        data.refresh_queues(
            vec![q("build", 4, 1), q("deploy", 0, 2)],
            NOW + 10,
            NOW + 30,
        );
        assert_eq!(
            data.queues.keys().map(String::as_str).collect::<Vec<_>>(),
            ["build", "deploy", "fresh"],
            "a queue only a worker serves is added; one no longer listed goes"
        );
        assert_eq!(data.queues["build"].queue.ready, 2, "the event is newer");
        assert_eq!(data.queues["deploy"].queue.workers, 2);
        assert_eq!(data.queues["deploy"].seen_at_ms, NOW + 30);
        assert!(data.version > version);

        // Asked after the event: the answer is the newer.
        data.refresh_queues(
            vec![q("build", 7, 1), q("deploy", 0, 2), q("fresh", 1, 0)],
            NOW + 40,
            NOW + 50,
        );
        assert_eq!(data.queues["build"].queue.ready, 7);
        let version = data.version;
        data.refresh_queues(
            vec![q("build", 7, 1), q("deploy", 0, 2), q("fresh", 1, 0)],
            NOW + 60,
            NOW + 70,
        );
        assert_eq!(data.version, version, "nothing changed, nothing redrawn");
    }

    #[test]
    fn a_lease_is_stale_when_its_holder_is_gone_and_overdue_when_past_expiry_on_a_live_one() {
        let mut data = Data::default();
        data.workers
            .insert("up".into(), worker("up", true, &["l1"]));
        data.workers
            .insert("down".into(), worker("down", false, &["l2"]));
        let overdue_lease = lease("l1", "up", NOW - EXPIRY_SLACK_MS - 1);
        let held_by_gone = lease("l2", "down", NOW - 60_000);
        assert!(!lease_stale(&data, &overdue_lease));
        assert!(lease_overdue(&data, &overdue_lease, NOW));
        assert!(!lease_stuck(&overdue_lease), "only the engine says stuck");
        assert!(lease_stale(&data, &held_by_gone));
        assert!(!lease_overdue(&data, &held_by_gone, NOW));
        assert!(!lease_overdue(&data, &lease("l3", "up", NOW + 1000), NOW));
    }

    #[test]
    fn a_lease_the_engine_marked_stuck_makes_its_worker_stuck_and_is_counted() {
        let mut data = Data::default();
        data.workers
            .insert("up".into(), worker("up", true, &["l1"]));
        let mut stuck = lease("l1", "up", NOW + 10_000);
        stuck.stuck = true;
        data.apply_event(
            Event {
                seq: 1,
                kind: "lease.stuck".into(),
                lease: Some(Box::new(stuck)),
                ..Event::default()
            },
            NOW,
        );
        assert!(lease_stuck(&data.leases["l1"]));
        assert!(
            !lease_overdue(&data, &data.leases["l1"], NOW),
            "stuck, not merely overdue"
        );
        assert!(worker_status(&data, &data.workers["up"], NOW).stuck);
        let f = figures(&data, NOW);
        assert_eq!((f.stuck, f.stuck_leases), (1, 1));
    }

    #[test]
    fn quarantines_come_from_the_snapshot_and_go_with_their_cleared_event() {
        let mut data = Data::default();
        let q = |name: &str| Quarantine {
            name: name.into(),
            since_ms: NOW,
            stuck_count: 2,
            message: "stuck twice".into(),
        };
        data.apply_snapshot(
            Snapshot {
                seq: 3,
                quarantines: vec![q("wedged")],
                ..Snapshot::default()
            },
            NOW,
        );
        assert_eq!(data.quarantines.keys().collect::<Vec<_>>(), ["wedged"]);
        data.apply_event(
            Event {
                seq: 4,
                kind: "run_name.quarantined".into(),
                quarantine: Some(Box::new(q("nightly"))),
                ..Event::default()
            },
            NOW,
        );
        assert_eq!(figures(&data, NOW).quarantines, 2);
        assert!(
            data.events[0].quarantine.is_none(),
            "the tail keeps no objects"
        );
        data.apply_event(
            Event {
                seq: 5,
                kind: "run_name.quarantine_cleared".into(),
                quarantine: Some(Box::new(q("wedged"))),
                ..Event::default()
            },
            NOW,
        );
        assert_eq!(data.quarantines.keys().collect::<Vec<_>>(), ["nightly"]);
        // A snapshot replaces them whole.
        data.apply_snapshot(Snapshot::default(), NOW);
        assert!(data.quarantines.is_empty());
    }

    #[test]
    fn a_step_over_its_timeout_makes_its_lease_overdue_but_not_its_worker_stuck() {
        let mut data = Data::default();
        data.workers
            .insert("up".into(), worker("up", true, &["l1"]));
        data.runs.insert(Run {
            id: "r1".into(),
            steps: vec![Step {
                state: StepState::Running as i32,
                timeout_ms: 1_000,
                started_at_ms: NOW - 5_000,
                ..Step::default()
            }],
            ..Run::default()
        });
        data.leases
            .insert("l1".into(), lease("l1", "up", NOW + 10_000));
        assert!(lease_overdue(&data, &data.leases["l1"], NOW));
        let status = worker_status(&data, &data.workers["up"], NOW);
        assert!(!status.stuck, "the worker may still stop it");
        assert_eq!(status.note, Some("busy"));
    }

    #[test]
    fn the_oldest_ready_step_keeps_ageing_between_events() {
        let q = QueueSeen {
            queue: Queue {
                ready: 1,
                oldest_ready_age_ms: 1_000,
                ..Queue::default()
            },
            seen_at_ms: NOW - 4_000,
        };
        assert_eq!(q.oldest_ready_age_ms(NOW), 5_000);
    }

    #[test]
    fn figures_count_failures_among_recently_finished_runs() {
        let mut data = Data::default();
        for (id, state, at) in [
            ("a", RunState::Succeeded, NOW - 1_000),
            ("b", RunState::Failed, NOW - 2_000),
            ("c", RunState::Failed, NOW - RATE_WINDOW_MS - 1),
            ("d", RunState::Running, 0),
        ] {
            data.runs.insert(Run {
                id: id.into(),
                state: state as i32,
                finished_at_ms: at,
                ..Run::default()
            });
        }
        let f = figures(&data, NOW);
        assert_eq!((f.finished_recently, f.failed_recently), (2, 1));
        assert_eq!(f.failure_rate(), Some(50));
        assert_eq!(f.active_runs, 1);
    }
}
