//! A model-based property test of the core: random sequences of submit,
//! worker hello (connect and reconnect), dispatch, heartbeat, clock advance
//! (lease expiry, heartbeat loss, retry backoff, approval deadlines, stuck
//! checks), step start, results with fresh and stale fencing tokens,
//! cancel, approval decisions, force-release, drain, recycle, disconnect and
//! quarantine clearing, applied as the core loop applies them (each command,
//! then timers, then dispatch). After every step the state's invariants
//! must hold:
//!
//! - at most one live lease per step, and a step is leased or running
//!   exactly when it has one;
//! - fencing tokens only grow per step;
//! - final runs and final steps stay as they are;
//! - each queue's ready depth equals its steps in state `queued`, its
//!   delayed count its steps in `retry_wait`, its running count its live
//!   leases;
//! - what the commits wrote (applied to a stored model the way a store
//!   applies a batch: run headers, step rows, leases, approvals) equals
//!   every run in memory, step by step: no change goes unwritten;
//! - finished runs leave memory beyond the cache's bounds (set small here),
//!   runs not final never do;
//! - no more runs hold a concurrency key than its limit, a run with a live
//!   lease holds its key, a final run holds none, and the core's holders
//!   are those runs;
//! - a queue at its `max_running` gets no new lease;
//! - a restart (`State::load` from what was written, as the engine loads
//!   its live set) gets back every run that was not final, as it was.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;

use super::*;
use crate::domain::spec::parse;

const T0: Millis = 1_000_000;

#[derive(Clone, Debug)]
enum Op {
    Submit(u8),
    Hello {
        worker: u8,
        keep_leases: bool,
        slots: u8,
    },
    Heartbeat(u8),
    Advance(u32),
    Started(u8),
    Result {
        pick: u8,
        stale: bool,
        outcome: u8,
    },
    Cancel(u8),
    Decide {
        pick: u8,
        approve: bool,
    },
    ForceRelease {
        pick: u8,
        fail: bool,
    },
    Drain {
        worker: u8,
        on: bool,
    },
    Recycle(u8),
    Disconnect(u8),
    ClearQuarantine(u8),
    /// An operator sets a queue's `max_running`.
    SetMaxRunning {
        queue: u8,
        max: u8,
    },
    /// The engine restarts: state loaded from what was committed, every
    /// worker's session gone.
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..7).prop_map(Op::Submit),
        2 => (0u8..3, any::<bool>(), 1u8..4).prop_map(|(worker, keep_leases, slots)| Op::Hello { worker, keep_leases, slots }),
        2 => (0u8..3).prop_map(Op::Heartbeat),
        3 => prop_oneof![0u32..2_000, 2_000u32..12_000].prop_map(Op::Advance),
        2 => any::<u8>().prop_map(Op::Started),
        4 => (any::<u8>(), any::<bool>(), 0u8..4).prop_map(|(pick, stale, outcome)| Op::Result { pick, stale, outcome }),
        1 => any::<u8>().prop_map(Op::Cancel),
        1 => (any::<u8>(), any::<bool>()).prop_map(|(pick, approve)| Op::Decide { pick, approve }),
        1 => (any::<u8>(), any::<bool>()).prop_map(|(pick, fail)| Op::ForceRelease { pick, fail }),
        1 => (0u8..3, any::<bool>()).prop_map(|(worker, on)| Op::Drain { worker, on }),
        1 => (0u8..3).prop_map(Op::Recycle),
        1 => (0u8..3).prop_map(Op::Disconnect),
        1 => any::<u8>().prop_map(Op::ClearQuarantine),
        1 => (0u8..2, 0u8..3).prop_map(|(queue, max)| Op::SetMaxRunning { queue, max }),
        1 => Just(Op::Restart),
    ]
}

const SPECS: &[&str] = &[
    "name = \"one\"\n[[step]]\nqueue = \"q1\"\nrun = \"true\"\n",
    "name = \"two\"\n[[step]]\nqueue = \"q1\"\nrun = \"a\"\nmax_attempts = 3\nbackoff = \"1s\"\n\
     [[step]]\nqueue = \"q2\"\nrun = \"b\"\npriority = 5\n",
    "name = \"gated\"\n[[step]]\napproval = { timeout = \"20s\", on_timeout = \"fail\" }\n[[step]]\nqueue = \"q2\"\nrun = \"c\"\n",
    "name = \"hangs\"\n[[step]]\nqueue = \"q1\"\nrun = \"d\"\ntimeout = \"2s\"\nmax_attempts = 2\nbackoff = \"500ms\"\n",
    "name = \"hangs\"\n[[step]]\nqueue = \"q2\"\nrun = \"e\"\ntimeout = \"1s\"\n",
    "name = \"keyed\"\nconcurrency = { key = \"k\", limit = 1 }\n[[step]]\nqueue = \"q1\"\nrun = \"f\"\n\
     [[step]]\napproval = { timeout = \"20s\", on_timeout = \"fail\" }\n[[step]]\nqueue = \"q2\"\nrun = \"g\"\n",
    "name = \"keyed2\"\nconcurrency = { key = \"k\", limit = 1 }\n[[step]]\nqueue = \"q2\"\nrun = \"h\"\nmax_attempts = 2\n",
];

/// What the commits wrote, kept as a store keeps it.
#[derive(Default)]
struct Stored {
    runs: BTreeMap<String, Run>,
    steps: BTreeMap<(String, u32), Step>,
    workers: BTreeMap<String, Worker>,
    leases: BTreeMap<String, Lease>,
    approvals: BTreeMap<String, Approval>,
    queues: BTreeMap<String, Queue>,
    quarantines: BTreeMap<String, Quarantine>,
    seq: u64,
}

impl Stored {
    fn apply(&mut self, b: crate::store::Batch) {
        for r in b.runs {
            assert!(r.steps.is_empty(), "a run header carries steps");
            self.runs.insert(r.id.clone(), r);
        }
        for (run, step) in b.steps {
            self.steps.insert((run, step.index), step);
        }
        for w in b.workers {
            self.workers.insert(w.id.clone(), w);
        }
        for l in b.leases {
            self.leases.insert(l.id.clone(), l);
        }
        for a in b.approvals {
            self.approvals.insert(a.id.clone(), a);
        }
        for q in b.queues {
            self.queues.insert(q.name.clone(), q);
        }
        for (name, q) in b.quarantines {
            match q {
                Some(q) => self.quarantines.insert(name, q),
                None => self.quarantines.remove(&name),
            };
        }
        if let Some(e) = b.events.last() {
            self.seq = e.seq;
        }
    }

    /// A run as a store reads it back: its header and its step rows.
    fn run(&self, id: &str) -> Option<Run> {
        let mut run = self.runs.get(id)?.clone();
        run.steps = self
            .steps
            .range((id.to_owned(), 0)..=(id.to_owned(), u32::MAX))
            .map(|(_, s)| s.clone())
            .collect();
        Some(run)
    }

    /// The live set, as `Store::load` returns it.
    fn load(&self) -> Loaded {
        Loaded {
            schedules: Vec::new(),
            runs: self
                .runs
                .values()
                .filter(|r| !r.state.is_final())
                .filter_map(|r| self.run(&r.id))
                .collect(),
            workers: self.workers.values().cloned().collect(),
            leases: self
                .leases
                .values()
                .filter(|l| l.state == LeaseState::Active)
                .cloned()
                .collect(),
            // The model keeps no output.
            output_ends: Default::default(),
            approvals: self
                .approvals
                .values()
                .filter(|a| a.state == ApprovalState::Pending)
                .cloned()
                .collect(),
            queues: self.queues.values().cloned().collect(),
            quarantines: self.quarantines.values().cloned().collect(),
            seq: self.seq,
        }
    }
}

struct Harness {
    s: State,
    cfg: CoreConfig,
    stored: Stored,
    /// What a restart found wrong, reported by the next check.
    broken: Option<String>,
    now: Millis,
    session: u64,
    /// What each connected worker's session received.
    inbox: HashMap<String, mpsc::UnboundedReceiver<pb::EngineMessage>>,
    /// Every assignment ever sent: (worker, assignment).
    sent: Vec<(String, pb::Assignment)>,
    /// The highest fencing token seen per step.
    tokens: BTreeMap<(String, u32), u64>,
    /// Runs and steps seen final, with their state.
    final_runs: BTreeMap<String, RunState>,
    final_steps: BTreeMap<(String, u32), StepState>,
    /// Events by kind, to know what the sequences reached.
    kinds: BTreeMap<String, usize>,
    /// Leases granted by a queue already at its `max_running`.
    granted_at_max: Vec<String>,
}

fn alice() -> Actor {
    Actor {
        name: "alice".into(),
        transport: "unix",
    }
}

fn bob() -> Actor {
    Actor {
        name: "bob".into(),
        transport: "tcp",
    }
}

fn worker_id(n: u8) -> String {
    format!("w{n}")
}

impl Harness {
    fn new() -> Self {
        let cfg = CoreConfig {
            heartbeat_interval: Duration::from_secs(1),
            lease_ttl: Duration::from_secs(5),
            worker_timeout: Duration::from_secs(4),
            cancel_grace: Duration::from_secs(1),
            quarantine_after: 2,
            quarantine_window: Duration::from_secs(3600),
            finished_runs_kept: 3,
            finished_runs_kept_for: Duration::from_secs(8),
            ..CoreConfig::default()
        };
        Self {
            s: State::load(cfg.clone(), Loaded::default(), T0),
            cfg,
            stored: Stored::default(),
            broken: None,
            now: T0,
            session: 0,
            inbox: HashMap::new(),
            sent: Vec::new(),
            tokens: BTreeMap::new(),
            final_runs: BTreeMap::new(),
            final_steps: BTreeMap::new(),
            kinds: BTreeMap::new(),
            granted_at_max: Vec::new(),
        }
    }

    /// Leases sent since `before` of queues that now have more live leases
    /// than their `max_running`: each grant stopped at the limit, so a
    /// queue over it got none.
    fn over_max(&self, before: usize) -> Vec<String> {
        self.sent[before..]
            .iter()
            .filter_map(|(_, a)| {
                let l = self.s.leases.get(&a.lease_id)?;
                let q = self.s.queues.get(&l.queue)?;
                let max = u64::from(q.queue.max_running);
                (max > 0 && q.running > max).then(|| l.id.clone())
            })
            .collect()
    }

    /// One batch: the command, then timers and dispatch, as the core loop.
    fn batch(&mut self, command: impl FnOnce(&mut State, &mut Tx)) {
        let before = self.sent.len();
        let mut tx = Tx::new(self.now);
        command(&mut self.s, &mut tx);
        self.s.fire_timers(&mut tx);
        self.s.dispatch(&mut tx);
        let batch = self.s.batch(&mut tx);
        let sealed = self.s.sealed();
        for e in &batch.events {
            *self.kinds.entry(e.kind.clone()).or_default() += 1;
        }
        self.stored.apply(batch);
        for effect in tx.effects {
            match effect {
                Effect::Reply(f) => f(None),
                Effect::Send(to, m) => {
                    let _ = to.send(*m);
                }
            }
        }
        for (worker, rx) in &mut self.inbox {
            while let Ok(m) = rx.try_recv() {
                match m.kind {
                    Some(pb::engine_message::Kind::Assign(a)) => {
                        self.sent.push((worker.clone(), a))
                    }
                    Some(pb::engine_message::Kind::Assignments(b)) => self
                        .sent
                        .extend(b.assignments.into_iter().map(|a| (worker.clone(), a))),
                    _ => {}
                }
            }
        }
        let over = self.over_max(before);
        self.granted_at_max.extend(over);
        // As the core does once the batch is committed.
        self.s.committed(sealed);
        self.s.evict(self.now);
    }

    /// The engine restarts on what was committed.
    fn restart(&mut self) -> Result<(), String> {
        let live: Vec<Run> = self
            .s
            .runs
            .values()
            .filter(|r| !r.state.is_final())
            .cloned()
            .collect();
        self.s = State::load(self.cfg.clone(), self.stored.load(), self.now);
        self.inbox.clear();
        for run in live {
            match self.s.runs.get(&run.id) {
                Some(loaded) if *loaded == run => {}
                Some(loaded) => {
                    return Err(format!(
                        "run {} came back as {loaded:?}, was {run:?}",
                        run.id
                    ));
                }
                None => return Err(format!("live run {} was not loaded", run.id)),
            }
        }
        Ok(())
    }

    fn connected(&self, worker: &str) -> bool {
        self.s.session_of(worker).is_some()
    }

    fn live_leases(&self) -> Vec<Lease> {
        let mut v: Vec<Lease> = self.s.leases.values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Submit(i) => {
                let spec = parse(SPECS[i as usize % SPECS.len()], &Limits::default())
                    .unwrap_or_else(|e| panic!("{e}"));
                self.batch(|s, tx| {
                    // Refused while its name is quarantined: fine.
                    let _ = s.submit(tx, spec, None, &alice(), "model");
                });
            }
            Op::Hello {
                worker,
                keep_leases,
                slots,
            } => {
                let id = worker_id(worker);
                let held: Vec<pb::HeldLease> = if keep_leases {
                    self.live_leases()
                        .into_iter()
                        .filter(|l| l.worker_id == id)
                        .map(|l| pb::HeldLease {
                            lease_id: l.id,
                            fencing_token: l.fencing_token,
                        })
                        .collect()
                } else {
                    vec![]
                };
                let queues = if worker == 2 {
                    vec!["q2".to_owned()]
                } else {
                    vec!["q1".to_owned(), "q2".to_owned()]
                };
                let hello = pb::Hello {
                    worker_id: id.clone(),
                    queues,
                    slots: u32::from(slots),
                    generation: 1 + self.session,
                    held,
                    ..Default::default()
                };
                self.session += 1;
                let session = self.session;
                let (out, rx) = mpsc::unbounded_channel();
                self.inbox.insert(id.clone(), rx);
                self.batch(|s, tx| {
                    if let Err(e) = s.hello(tx, session, &id, &AgentScope::unbounded(), hello, out)
                    {
                        panic!("a valid hello was refused: {e}");
                    }
                });
            }
            Op::Heartbeat(worker) => {
                let id = worker_id(worker);
                if !self.connected(&id) {
                    return;
                }
                let held: Vec<pb::HeldLease> = self
                    .live_leases()
                    .into_iter()
                    .filter(|l| l.worker_id == id)
                    .map(|l| pb::HeldLease {
                        lease_id: l.id,
                        fencing_token: l.fencing_token,
                    })
                    .collect();
                let now = self.now;
                self.batch(|s, _| s.heartbeat(&id, &held, now));
            }
            Op::Advance(ms) => {
                self.now += i64::from(ms);
                self.batch(|_, _| {});
            }
            Op::Started(pick) => {
                let live = self.live_leases();
                let Some(l) = pick_from(&live, pick) else {
                    return;
                };
                if !self.connected(&l.worker_id) {
                    return;
                }
                let started = pb::StepStarted {
                    lease_id: l.id.clone(),
                    fencing_token: l.fencing_token,
                    pid: 7,
                };
                self.batch(|s, tx| s.step_started(tx, &l.worker_id, started));
            }
            Op::Result {
                pick,
                stale,
                outcome,
            } => {
                let (worker, lease_id, token) = if stale {
                    let Some((w, a)) = pick_from(&self.sent, pick) else {
                        return;
                    };
                    (
                        w.clone(),
                        a.lease_id.clone(),
                        a.fencing_token.saturating_sub(u64::from(pick % 2)),
                    )
                } else {
                    let live = self.live_leases();
                    let Some(l) = pick_from(&live, pick) else {
                        return;
                    };
                    (l.worker_id.clone(), l.id.clone(), l.fencing_token)
                };
                if !self.connected(&worker) {
                    return;
                }
                let outcome = [
                    pb::Outcome::Succeeded,
                    pb::Outcome::Failed,
                    pb::Outcome::TimedOut,
                    pb::Outcome::Cancelled,
                ][outcome as usize % 4];
                let result = pb::StepResult {
                    lease_id,
                    fencing_token: token,
                    outcome: outcome as i32,
                    output_tail: b"tail".to_vec(),
                    output_lost_bytes: u64::from(pick % 3),
                    ..Default::default()
                };
                self.batch(|s, tx| s.step_result(tx, &worker, result));
            }
            Op::Cancel(pick) => {
                let ids: Vec<String> = self.s.runs.keys().cloned().collect();
                let Some(id) = pick_from(&ids, pick).cloned() else {
                    return;
                };
                self.batch(|s, tx| {
                    let _ = s.cancel_run(tx, &id, &alice(), "model");
                });
            }
            Op::Decide { pick, approve } => {
                let ids: Vec<String> = self.s.approvals.keys().cloned().collect();
                let Some(id) = pick_from(&ids, pick).cloned() else {
                    return;
                };
                self.batch(|s, tx| {
                    let _ = s.decide(
                        tx,
                        &id,
                        approve,
                        &bob(),
                        &crate::domain::Grants::default(),
                        "model",
                    );
                });
            }
            Op::ForceRelease { pick, fail } => {
                let mut ids: Vec<String> = self.live_leases().into_iter().map(|l| l.id).collect();
                ids.extend(self.sent.iter().map(|(_, a)| a.lease_id.clone()));
                let Some(id) = pick_from(&ids, pick).cloned() else {
                    return;
                };
                self.batch(|s, tx| {
                    let _ = s.force_release(tx, &id, fail, &alice(), "model");
                });
            }
            Op::Drain { worker, on } => {
                let id = worker_id(worker);
                self.batch(|s, tx| {
                    let _ = s.drain_worker(tx, &id, on, &alice(), "model");
                });
            }
            Op::Recycle(worker) => {
                let id = worker_id(worker);
                self.batch(|s, tx| {
                    let _ = s.recycle_worker(tx, &id, &alice(), "model");
                });
            }
            Op::Disconnect(worker) => {
                let id = worker_id(worker);
                let Some(session) = self.s.session_of(&id) else {
                    return;
                };
                self.batch(|s, tx| s.session_closed(tx, &id, session));
            }
            Op::ClearQuarantine(pick) => {
                let names: Vec<String> = self.s.quarantines.keys().cloned().collect();
                let Some(name) = pick_from(&names, pick).cloned() else {
                    return;
                };
                self.batch(|s, tx| {
                    let _ = s.clear_quarantine(tx, &name, &alice(), "model");
                });
            }
            Op::SetMaxRunning { queue, max } => {
                let name = format!("q{}", queue + 1);
                self.batch(|s, tx| {
                    let _ = s.set_queue(tx, &name, Some(u32::from(max)), &alice(), "model");
                });
            }
            Op::Restart => {
                if let Err(e) = self.restart() {
                    self.broken.get_or_insert(e);
                }
            }
        }
    }

    /// Every invariant, or what broke.
    fn check(&mut self) -> Result<(), String> {
        if let Some(broken) = self.broken.take() {
            return Err(broken);
        }
        let s = &self.s;
        // Everything in memory was written as it is.
        for run in s.runs.values() {
            match self.stored.run(&run.id) {
                Some(stored) if stored == *run => {}
                Some(stored) => {
                    return Err(format!(
                        "run {} in memory differs from what was written:\n  memory {run:?}\n  stored {stored:?}",
                        run.id
                    ));
                }
                None => return Err(format!("run {} was never written", run.id)),
            }
        }
        for a in s.approvals.values() {
            if self.stored.approvals.get(&a.id) != Some(a) {
                return Err(format!(
                    "approval {} in memory differs from what was written",
                    a.id
                ));
            }
        }
        // The cache of finished runs keeps to its bounds; live runs stay.
        let finished = s.runs.values().filter(|r| r.state.is_final()).count();
        if finished > self.cfg.finished_runs_kept {
            return Err(format!(
                "{finished} finished runs in memory, more than the {} kept",
                self.cfg.finished_runs_kept
            ));
        }
        for stored in self.stored.runs.values() {
            if !stored.state.is_final() && !s.runs.contains_key(&stored.id) {
                return Err(format!("live run {} left memory", stored.id));
            }
        }
        // At most one live lease per step; leased/running exactly when held.
        let mut per_step: BTreeMap<(String, u32), &Lease> = BTreeMap::new();
        for l in s.leases.values() {
            if let Some(other) = per_step.insert((l.run_id.clone(), l.step_index), l) {
                return Err(format!(
                    "two live leases on {}/{}: {} and {}",
                    l.run_id, l.step_index, other.id, l.id
                ));
            }
            let step = s
                .runs
                .get(&l.run_id)
                .and_then(|r| r.step(l.step_index))
                .ok_or("a lease of no step")?;
            if !matches!(step.state, StepState::Leased | StepState::Running)
                || step.lease_id.as_deref() != Some(&l.id)
            {
                return Err(format!(
                    "live lease {} but its step is {:?} (lease {:?})",
                    l.id, step.state, step.lease_id
                ));
            }
            if !s
                .worker_leases
                .get(&l.worker_id)
                .is_some_and(|set| set.contains(&l.id))
            {
                return Err(format!("live lease {} missing from its worker's set", l.id));
            }
        }
        let listed: usize = s.worker_leases.values().map(|set| set.len()).sum();
        if listed != s.leases.len() {
            return Err(format!(
                "workers list {listed} leases, {} are live",
                s.leases.len()
            ));
        }
        // Fencing tokens only grow, per step.
        for (w, a) in &self.sent {
            let key = (a.run_id.clone(), a.step_index);
            let _ = w;
            let seen = self.tokens.entry(key).or_insert(0);
            *seen = (*seen).max(a.fencing_token);
        }
        for run in s.runs.values() {
            for step in &run.steps {
                let key = (run.id.clone(), step.index);
                let seen = self.tokens.get(&key).copied().unwrap_or(0);
                if step.fence < seen {
                    return Err(format!(
                        "step {}/{} fence {} below token {seen} already handed out",
                        run.id, step.index, step.fence
                    ));
                }
                self.tokens.insert(key, step.fence.max(seen));
            }
        }
        let mut by_step: BTreeMap<(String, u32), Vec<u64>> = BTreeMap::new();
        for (_, a) in &self.sent {
            by_step
                .entry((a.run_id.clone(), a.step_index))
                .or_default()
                .push(a.fencing_token);
        }
        for (key, tokens) in by_step {
            if tokens.windows(2).any(|w| w[1] <= w[0]) {
                return Err(format!("tokens of {key:?} did not grow: {tokens:?}"));
            }
        }
        // Final stays final.
        for run in s.runs.values() {
            if let Some(was) = self.final_runs.get(&run.id)
                && *was != run.state
            {
                return Err(format!(
                    "final run {} went from {was:?} to {:?}",
                    run.id, run.state
                ));
            }
            if run.state.is_final() {
                self.final_runs.insert(run.id.clone(), run.state);
            }
            for step in &run.steps {
                let key = (run.id.clone(), step.index);
                if let Some(was) = self.final_steps.get(&key)
                    && *was != step.state
                {
                    return Err(format!(
                        "final step {key:?} went from {was:?} to {:?}",
                        step.state
                    ));
                }
                if step.state.is_final() {
                    self.final_steps.insert(key, step.state);
                }
            }
        }
        if let Some(l) = self.granted_at_max.first() {
            return Err(format!("lease {l} granted by a queue at its max_running"));
        }
        // Concurrency keys: at most the limit hold each, live leases hold.
        let mut holders: HashMap<String, BTreeSet<String>> = HashMap::new();
        for run in s.runs.values() {
            if run.holds_key && run.state.is_final() {
                return Err(format!("final run {} holds its key", run.id));
            }
            let Some(c) = &run.concurrency else { continue };
            if s.leases.values().any(|l| l.run_id == run.id) && !run.holds_key {
                return Err(format!("run {} has a lease but not its key", run.id));
            }
            if run.holds_key {
                holders
                    .entry(c.key.clone())
                    .or_default()
                    .insert(run.id.clone());
            }
        }
        for (key, runs) in &holders {
            if runs.len() > 1 {
                return Err(format!("key {key} (limit 1) held by {runs:?}"));
            }
        }
        if holders != s.key_holders {
            return Err(format!(
                "the core's key holders {:?} are not the runs holding keys {holders:?}",
                s.key_holders
            ));
        }
        // Queue figures equal the steps and leases they count.
        let mut queued: BTreeMap<String, u64> = BTreeMap::new();
        let mut waiting: BTreeMap<String, u64> = BTreeMap::new();
        for run in s.runs.values() {
            for step in &run.steps {
                let Some(q) = step.queue() else { continue };
                match step.state {
                    StepState::Queued => *queued.entry(q.to_owned()).or_default() += 1,
                    StepState::RetryWait => *waiting.entry(q.to_owned()).or_default() += 1,
                    _ => {}
                }
            }
        }
        for (name, q) in &s.queues {
            let ready = q.ready.len() as u64;
            let want = queued.get(name).copied().unwrap_or(0);
            if ready != want {
                return Err(format!(
                    "queue {name} has {ready} ready but {want} steps are queued"
                ));
            }
            for k in &q.ready {
                let state = s
                    .runs
                    .get(&k.run_id)
                    .and_then(|r| r.step(k.step))
                    .map(|st| st.state);
                if state != Some(StepState::Queued) {
                    return Err(format!("ready entry {}/{} is {state:?}", k.run_id, k.step));
                }
            }
            let delayed = waiting.get(name).copied().unwrap_or(0);
            if q.delayed != delayed {
                return Err(format!(
                    "queue {name} counts {} delayed but {delayed} steps wait to retry",
                    q.delayed
                ));
            }
            let running = s.leases.values().filter(|l| &l.queue == name).count() as u64;
            if q.running != running {
                return Err(format!(
                    "queue {name} counts {} running but {running} leases are live",
                    q.running
                ));
            }
        }
        Ok(())
    }
}

fn pick_from<T>(items: &[T], pick: u8) -> Option<&T> {
    if items.is_empty() {
        None
    } else {
        items.get(pick as usize % items.len())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, max_shrink_iters: 4096, ..ProptestConfig::default() })]

    #[test]
    fn random_command_sequences_never_break_the_core_invariants(ops in prop::collection::vec(op(), 1..80)) {
        let mut h = Harness::new();
        for (i, op) in ops.iter().enumerate() {
            h.apply(op.clone());
            if let Err(broken) = h.check() {
                prop_assert!(false, "after op #{i} {op:?}: {broken}");
            }
        }
    }
}

#[test]
fn random_sequences_reach_every_kind_of_transition() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..300 {
        let ops = prop::collection::vec(op(), 1..80)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let mut h = Harness::new();
        for op in ops {
            h.apply(op);
        }
        for (k, n) in h.kinds {
            *kinds.entry(k).or_default() += n;
        }
    }
    for kind in [
        "lease.granted",
        "step.running",
        "lease.released",
        "lease.expired",
        "lease.force_released",
        "lease.stuck",
        "result.refused",
        "step.retry_scheduled",
        "step.dead",
        "run.succeeded",
        "run.failed",
        "run.cancelled",
        "approval.approved",
        "approval.rejected",
        "worker.recycling",
        "worker.offline",
        "run_name.quarantined",
        "run_name.quarantine_cleared",
    ] {
        assert!(
            kinds.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} in 300 random sequences: {kinds:?}"
        );
    }
}

#[test]
fn the_model_reaches_the_interesting_states() {
    // A fixed sequence that leases, expires, retries, gets stuck and
    // quarantines, so the random runs above are known to be able to.
    let mut h = Harness::new();
    let ops = [
        Op::Hello {
            worker: 0,
            keep_leases: false,
            slots: 2,
        },
        Op::Submit(3),
        Op::Submit(4),
        Op::Started(0),
        Op::Heartbeat(0),
        Op::Advance(1_500),
        Op::Heartbeat(0),
        Op::Advance(1_500),
        Op::Heartbeat(0),
        Op::Advance(1_500),
        Op::Heartbeat(0),
        Op::Advance(1_000),
    ];
    for op in ops {
        h.apply(op);
        h.check().unwrap();
    }
    assert!(h.s.leases.values().any(|l| l.stuck), "a lease got stuck");
    assert!(
        h.s.quarantines.contains_key("hangs"),
        "the name got quarantined"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Request validation of the agent protocol: any Hello is taken or
    /// refused as INVALID_ARGUMENT naming the worker or what is wrong.
    #[test]
    fn any_hello_is_taken_or_refused_as_invalid_argument(
        worker_id in "\\PC{0,140}",
        queues in prop::collection::vec("\\PC{0,70}", 0..4),
        slots in 0u32..3,
    ) {
        let mut h = Harness::new();
        let hello = pb::Hello { worker_id: worker_id.clone(), queues, slots, ..Default::default() };
        let (out, _rx) = mpsc::unbounded_channel();
        let mut tx = Tx::new(h.now);
        match h.s.hello(&mut tx, 1, "someone", &AgentScope::unbounded(), hello, out) {
            Ok(()) => prop_assert!(h.s.session_of(worker_id.trim()).is_some()),
            Err(e) => {
                prop_assert!(matches!(e, EngineError::InvalidArgument(_)), "{e:?}");
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }
}
