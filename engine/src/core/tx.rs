//! What one batch of commands changed, and what to do once it is committed.

use std::collections::{BTreeMap, BTreeSet};

use opsdeck_proto::v1 as pb;
use tokio::sync::mpsc;

use crate::domain::{Lease, Millis};
use crate::error::EngineError;
use crate::store::{GivenUp, Notification};

/// Answers a caller. Given the commit's error, if it failed, so the
/// caller hears about that instead of a change that did not happen.
pub type Reply = Box<dyn FnOnce(Option<&EngineError>) + Send>;

/// Carried out only after the batch's transaction committed.
pub enum Effect {
    Reply(Reply),
    /// A message to a worker's session.
    Send(
        mpsc::UnboundedSender<pb::EngineMessage>,
        Box<pb::EngineMessage>,
    ),
}

/// The changes of one batch: ids of objects to persist, events, output
/// chunks and effects.
pub struct Tx {
    /// The batch's clock: every change in it happens at this instant.
    pub now: Millis,
    /// Runs made or whose header changed.
    pub runs: BTreeSet<String>,
    /// Steps made or changed: (run id, step index).
    pub steps: BTreeSet<(String, u32)>,
    pub workers: BTreeSet<String>,
    /// Workers an admin forgot: deleted from the store.
    pub forgotten_workers: BTreeSet<String>,
    /// Leases leave the live set when they end, so their last state is kept here.
    pub leases: BTreeMap<String, Lease>,
    pub approvals: BTreeSet<String>,
    pub queues: BTreeSet<String>,
    /// Run names whose quarantine was set or cleared.
    pub quarantines: BTreeSet<String>,
    /// Schedules added, changed, fired or removed, by name.
    pub schedules: BTreeSet<String>,
    pub events: Vec<pb::Event>,
    pub outputs: Vec<pb::OutputChunk>,
    /// Notifications of `events`, for the outbox.
    pub notifications: Vec<Notification>,
    /// Notifications given up on.
    pub given_up: Vec<GivenUp>,
    pub effects: Vec<Effect>,
}

impl Tx {
    pub fn new(now: Millis) -> Self {
        Self {
            now,
            runs: BTreeSet::new(),
            steps: BTreeSet::new(),
            workers: BTreeSet::new(),
            forgotten_workers: BTreeSet::new(),
            leases: BTreeMap::new(),
            approvals: BTreeSet::new(),
            queues: BTreeSet::new(),
            quarantines: BTreeSet::new(),
            schedules: BTreeSet::new(),
            events: Vec::new(),
            outputs: Vec::new(),
            notifications: Vec::new(),
            given_up: Vec::new(),
            effects: Vec::new(),
        }
    }

    /// A run's header (state, current step, message, times) changed.
    pub fn run_changed(&mut self, run_id: &str) {
        if !self.runs.contains(run_id) {
            self.runs.insert(run_id.to_owned());
        }
    }

    /// A step changed.
    pub fn step_changed(&mut self, run_id: &str, index: u32) {
        self.steps.insert((run_id.to_owned(), index));
    }

    pub fn lease(&self, id: &str) -> Option<&Lease> {
        self.leases.get(id)
    }

    /// Whether anything needs writing.
    pub fn has_writes(&self) -> bool {
        !(self.runs.is_empty()
            && self.steps.is_empty()
            && self.workers.is_empty()
            && self.forgotten_workers.is_empty()
            && self.leases.is_empty()
            && self.approvals.is_empty()
            && self.queues.is_empty()
            && self.quarantines.is_empty()
            && self.schedules.is_empty()
            && self.events.is_empty()
            && self.outputs.is_empty()
            && self.given_up.is_empty())
    }

    /// Queues an answer to a caller.
    pub fn reply<T: Send + 'static>(
        &mut self,
        to: tokio::sync::oneshot::Sender<Result<T, EngineError>>,
        value: Result<T, EngineError>,
    ) {
        self.effects.push(Effect::Reply(Box::new(move |failed| {
            // The caller may have gone away; nothing to do then.
            let _ = to.send(match failed {
                Some(e) => Err(e.clone()),
                None => value,
            });
        })));
    }
}
