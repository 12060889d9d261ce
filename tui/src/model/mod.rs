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
mod tests;
