//! Events: made in a transaction, published after its commit to stream
//! subscribers; snapshots; the batch a commit writes.

use super::*;

impl State {
    /// The identity behind a worker's actor: the credential its session
    /// authenticated as.
    fn identity_behind(&self, actor: &Actor) -> String {
        actor
            .name
            .strip_prefix("worker:")
            .filter(|_| actor.transport == "agent")
            .and_then(|id| self.workers.get(id))
            .map(|w| w.identity.clone())
            .unwrap_or_default()
    }

    pub(super) fn emit(&mut self, tx: &mut Tx, actor: &Actor, reason: &str, ev: Ev) {
        self.seq += 1;
        let run = ev.run.as_deref().and_then(|id| self.runs.get(id));
        let lease = ev.lease.as_deref().and_then(|id| {
            self.leases
                .get(id)
                .or_else(|| tx.lease(id))
                .map(|l| Box::new(convert::lease(l, run)))
        });
        let event = pb::Event {
            seq: self.seq,
            at_ms: tx.now,
            kind: ev.kind.to_owned(),
            actor: actor.name.clone(),
            transport: actor.transport.to_string(),
            identity: self.identity_behind(actor),
            reason: reason.to_owned(),
            run_id: ev.run.clone().unwrap_or_default(),
            step_index: ev.step.unwrap_or(0),
            worker_id: ev.worker.clone().unwrap_or_default(),
            lease_id: ev.lease.clone().unwrap_or_default(),
            approval_id: ev.approval.clone().unwrap_or_default(),
            queue: ev.queue.clone().unwrap_or_default(),
            message: ev.message,
            // A new run whole; every other change as a delta, added to the
            // commit's events by `batch`.
            run: run
                .filter(|_| ev.kind == "run.submitted")
                .map(|r| Box::new(convert::run(r))),
            worker: ev
                .worker
                .as_deref()
                .filter(|_| ev.worker_changed)
                .and_then(|id| self.worker_pb(id))
                .map(Box::new),
            lease,
            approval: ev
                .approval
                .as_deref()
                .and_then(|id| self.approvals.get(id))
                .map(|a| Box::new(convert::approval(a, run))),
            quarantine: ev.quarantine.map(Box::new),
            schedule: ev.schedule.map(Box::new),
            run_update: None,
            step_updates: Vec::new(),
            queues: Vec::new(),
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
        self.notify_of(tx, &event, ev.not_to.as_deref());
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
            schedules: self.list_schedules(),
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

    /// What a transaction's commit writes: the objects it changed, and its
    /// events with the deltas a client applies: each changed run's header
    /// and steps on the last event of that run, and the figures of every
    /// queue that changed on the last event — computed once per commit, not
    /// per event.
    pub fn batch(&mut self, tx: &mut Tx) -> crate::store::Batch {
        let mut events = std::mem::take(&mut tx.events);
        let mut last_of_run: HashMap<&str, usize> = HashMap::new();
        for (i, e) in events.iter().enumerate() {
            if !e.run_id.is_empty() {
                last_of_run.insert(e.run_id.as_str(), i);
            }
        }
        let changed_runs: BTreeSet<&str> = tx
            .runs
            .iter()
            .map(String::as_str)
            .chain(tx.steps.iter().map(|(r, _)| r.as_str()))
            .collect();
        let mut deltas: Vec<(usize, &str)> = Vec::new();
        for run_id in changed_runs {
            match last_of_run.get(run_id) {
                Some(i) => deltas.push((*i, run_id)),
                None => tracing::warn!(%run_id, "a run changed without an event naming it"),
            }
        }
        let deltas: Vec<(usize, pb::RunUpdate, Vec<pb::StepUpdate>)> = deltas
            .into_iter()
            .filter_map(|(i, run_id)| {
                let run = self.runs.get(run_id)?;
                let steps = tx
                    .steps
                    .range((run_id.to_owned(), 0)..=(run_id.to_owned(), u32::MAX))
                    .filter_map(|(_, index)| run.step(*index).map(convert::step_update))
                    .collect();
                Some((i, convert::run_update(run), steps))
            })
            .collect();
        for (i, update, steps) in deltas {
            if let Some(e) = events.get_mut(i) {
                e.run_update = Some(update);
                e.step_updates = steps;
            }
        }
        let queues: Vec<String> = std::mem::take(&mut self.changed_queues)
            .into_iter()
            .collect();
        if let Some(last) = events.last_mut() {
            last.queues = queues
                .iter()
                .filter_map(|q| self.queue_pb(q, tx.now))
                .collect();
        }
        crate::store::Batch {
            runs: tx
                .runs
                .iter()
                .filter_map(|id| self.runs.get(id).map(Run::header))
                .collect(),
            steps: tx
                .steps
                .iter()
                .filter_map(|(run_id, index)| {
                    let step = self.runs.get(run_id)?.step(*index)?;
                    Some((run_id.clone(), step.clone()))
                })
                .collect(),
            workers: tx
                .workers
                .iter()
                .filter_map(|id| self.workers.get(id).cloned())
                .collect(),
            forgotten_workers: tx.forgotten_workers.iter().cloned().collect(),
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
            events,
            outputs: std::mem::take(&mut tx.outputs),
            quarantines: tx
                .quarantines
                .iter()
                .map(|n| (n.clone(), self.quarantines.get(n).cloned()))
                .collect(),
            notifications: std::mem::take(&mut tx.notifications),
            given_up: std::mem::take(&mut tx.given_up),
            schedules: tx
                .schedules
                .iter()
                .map(|n| (n.clone(), self.schedules.get(n).map(|l| l.schedule.clone())))
                .collect(),
        }
    }
}
