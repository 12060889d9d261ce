//! The console's mirror of the engine: every run, worker, queue, live
//! lease, approval and quarantined run name it has heard of, kept current from the snapshot and
//! the events of `Console.Watch`, plus what only a client can keep (queue
//! depth samples for the sparklines, the recent event tail).
//!
//! No I/O and no view types: [`Data`] is applied to by the app and read by
//! the views. Derived figures (stale and overdue leases, stuck workers,
//! overdue approvals) are pure functions of it and a clock, so that they test
//! without one.

use std::collections::{BTreeMap, HashMap, VecDeque};

use opsdeck_proto::names::word_of;
use opsdeck_proto::v1::{
    Approval, ApprovalState, Event, Lease, LeaseState, Quarantine, Queue, Run, RunState, StepState,
    Worker, WorkerState,
};

/// Events kept for the Events screen and the Overview tail.
pub const EVENT_TAIL: usize = 2_000;
/// Queue depth samples kept per queue: one a tick, so ten minutes.
pub const DEPTH_SAMPLES: usize = 600;
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

/// Everything the console knows. `version` changes with every change, so
/// that derived row lists are recomputed only when needed.
#[derive(Clone, Debug, Default)]
pub struct Data {
    /// The seq of the last event applied (or of the snapshot).
    pub seq: u64,
    pub version: u64,
    /// Whether a snapshot has been applied since start (or a resync).
    pub loaded: bool,
    /// By id: ULIDs sort by creation time, so iteration is oldest first.
    pub runs: BTreeMap<String, Run>,
    pub workers: BTreeMap<String, Worker>,
    pub queues: BTreeMap<String, QueueSeen>,
    /// Live leases only.
    pub leases: BTreeMap<String, Lease>,
    /// Pending ones, and the decided ones heard of since.
    pub approvals: BTreeMap<String, Approval>,
    /// Quarantined run names, by name.
    pub quarantines: BTreeMap<String, Quarantine>,
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
        self.runs = snapshot
            .runs
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
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
        self.loaded = true;
        self.version += 1;
    }

    /// Applies one event: the objects it carries replace ours, and the
    /// event (without them) joins the tail. Returns the stripped event.
    pub fn apply_event(&mut self, mut event: Event, now_ms: i64) -> &Event {
        if let Some(run) = event.run.take() {
            self.runs.insert(run.id.clone(), run);
        }
        if let Some(worker) = event.worker.take() {
            if event.kind == "worker.recycled" {
                self.recycled.insert(worker.id.clone(), event.at_ms);
            }
            self.workers.insert(worker.id.clone(), worker);
        }
        if let Some(lease) = event.lease.take() {
            if lease.state() == LeaseState::Active {
                self.leases.insert(lease.id.clone(), lease);
            } else {
                self.leases.remove(&lease.id);
            }
        }
        if let Some(approval) = event.approval.take() {
            self.approvals.insert(approval.id.clone(), approval);
            self.trim_approvals();
        }
        if let Some(quarantine) = event.quarantine.take() {
            if event.kind == "run_name.quarantine_cleared" {
                self.quarantines.remove(&quarantine.name);
            } else {
                self.quarantines.insert(quarantine.name.clone(), quarantine);
            }
        }
        if let Some(queue) = event.queue_state.take() {
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

/// Drops the objects an event carried: they were applied, and keeping a
/// copy of a run with its steps per event would multiply memory.
fn strip(event: &mut Event) {
    event.run = None;
    event.worker = None;
    event.lease = None;
    event.approval = None;
    event.queue_state = None;
    event.quarantine = None;
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
    fn events_replace_objects_and_drop_ended_leases() {
        let mut data = Data::default();
        let mut ev = Event {
            seq: 5,
            kind: "lease.granted".into(),
            lease: Some(lease("l1", "w1", NOW)),
            worker: Some(worker("w1", true, &["l1"])),
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
                run: Some(Run {
                    id: "old".into(),
                    ..Run::default()
                }),
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
                lease: Some(stuck),
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
                quarantine: Some(q("nightly")),
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
                quarantine: Some(q("wedged")),
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
        data.runs.insert(
            "r1".into(),
            Run {
                id: "r1".into(),
                steps: vec![Step {
                    state: StepState::Running as i32,
                    timeout_ms: 1_000,
                    started_at_ms: NOW - 5_000,
                    ..Step::default()
                }],
                ..Run::default()
            },
        );
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
            data.runs.insert(
                id.into(),
                Run {
                    id: id.into(),
                    state: state as i32,
                    finished_at_ms: at,
                    ..Run::default()
                },
            );
        }
        let f = figures(&data, NOW);
        assert_eq!((f.finished_recently, f.failed_recently), (2, 1));
        assert_eq!(f.failure_rate(), Some(50));
        assert_eq!(f.active_runs, 1);
    }
}
