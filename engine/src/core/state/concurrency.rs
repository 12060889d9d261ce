//! Concurrency keys and queues' `max_running`: what holds a step back
//! while workers have free slots.
//!
//! A run holds its spec's concurrency key from its first lease until it is
//! final (its flag is kept with the run, so a restarted or new leader reads
//! who holds what from the runs it loads). Runs waiting for a key take it in
//! the order their steps became ready (priority first), whatever their
//! queue: a later run never takes a slot an earlier one waits for.

use super::*;

/// Why a run waits for its concurrency key.
pub(super) struct KeyWait<'a> {
    key: &'a str,
    /// The runs holding the key.
    holders: Vec<&'a str>,
    /// Runs waiting for it that come first, when the key has room.
    ahead: Vec<&'a str>,
}

impl std::fmt::Display for KeyWait<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.holders.len();
        write!(f, "waiting for concurrency key {}: {n} running", self.key)?;
        if self.ahead.is_empty() {
            write!(f, ": {}", self.holders.join(", "))
        } else {
            write!(
                f,
                ", {} waiting ahead of it: {}",
                self.ahead.len(),
                self.ahead.join(", ")
            )
        }
    }
}

/// Where a waiting run stands among those waiting for its key: priority
/// (highest first), then readiness order.
pub(super) type Waiter = (Reverse<i32>, u64, String);

impl State {
    /// Sets a queue's `max_running` (0: no limit). A queue no step has used
    /// and no worker serves is NOT_FOUND.
    pub fn set_queue(
        &mut self,
        tx: &mut Tx,
        name: &str,
        max_running: Option<u32>,
        actor: &Actor,
        reason: &str,
    ) -> EngineResult<pb::Queue> {
        validate_queue_name(name).map_err(EngineError::InvalidArgument)?;
        let Some(max) = max_running else {
            return Err(EngineError::InvalidArgument(
                "nothing to set: give max_running (opsdeck queue set QUEUE --max-running N)".into(),
            ));
        };
        self.known_queue(name, "")?;
        let q = self.queue_live(name);
        let was = q.queue.max_running;
        if was != max {
            q.queue.max_running = max;
            tx.queues.insert(name.to_owned());
            let said = |n: u32| {
                if n == 0 {
                    "unlimited".to_owned()
                } else {
                    n.to_string()
                }
            };
            let msg = format!(
                "queue {name}: max_running {} (was {})",
                said(max),
                said(was)
            );
            self.emit(tx, actor, reason, Ev::new("queue.updated", msg).queue(name));
        }
        self.queue_pb(name, tx.now)
            .ok_or_else(|| not_found("queue", name, "opsdeck queues"))
    }

    /// Whether a queue has as many active leases as its `max_running`.
    pub(super) fn queue_full(&self, queue: &str) -> Option<u32> {
        let q = self.queues.get(queue)?;
        let max = q.queue.max_running;
        (max > 0 && q.running >= u64::from(max)).then_some(max)
    }

    /// Notes a run's step waiting on the ready list, if its run waits for a
    /// concurrency key.
    pub(super) fn key_wait(&mut self, run_id: &str, priority: i32, order: u64) {
        let Some(run) = self.runs.get(run_id).filter(|r| !r.holds_key) else {
            return;
        };
        let Some(c) = &run.concurrency else { return };
        let waiting = self.key_waiting.entry(c.key.clone()).or_default();
        waiting.retain(|(_, _, id)| id != run_id);
        waiting.insert((Reverse(priority), order, run_id.to_owned()));
    }

    /// The run takes its concurrency key (its first lease since it was
    /// submitted or retried).
    pub(super) fn take_key(&mut self, tx: &mut Tx, run_id: &str) {
        let Some(run) = self.runs.get_mut(run_id).filter(|r| !r.holds_key) else {
            return;
        };
        let Some(c) = &run.concurrency else { return };
        run.holds_key = true;
        let key = c.key.clone();
        tx.run_changed(run_id);
        if let Some(waiting) = self.key_waiting.get_mut(&key) {
            waiting.retain(|(_, _, id)| id != run_id);
            if waiting.is_empty() {
                self.key_waiting.remove(&key);
            }
        }
        self.key_holders
            .entry(key)
            .or_default()
            .insert(run_id.to_owned());
    }

    /// The run, now final, gives its key back (or stops waiting for it).
    pub(super) fn release_key(&mut self, run_id: &str) {
        let Some(run) = self.runs.get_mut(run_id) else {
            return;
        };
        let held = std::mem::take(&mut run.holds_key);
        let Some(key) = run.concurrency.as_ref().map(|c| c.key.clone()) else {
            return;
        };
        if held && let Some(holders) = self.key_holders.get_mut(&key) {
            holders.remove(run_id);
            if holders.is_empty() {
                self.key_holders.remove(&key);
            }
        }
        if let Some(waiting) = self.key_waiting.get_mut(&key) {
            waiting.retain(|(_, _, id)| id != run_id);
            if waiting.is_empty() {
                self.key_waiting.remove(&key);
            }
        }
    }

    /// Rebuilds who holds which key from the runs loaded.
    pub(super) fn load_key_holders(&mut self) {
        for run in self.runs.values().filter(|r| r.holds_key) {
            if run.state.is_final() {
                continue;
            }
            if let Some(c) = &run.concurrency {
                self.key_holders
                    .entry(c.key.clone())
                    .or_default()
                    .insert(run.id.clone());
            }
        }
    }

    /// What holds a run's step back for its concurrency key: the key's
    /// holders are at its limit, or runs that waited longer come first.
    /// `None` when it may go.
    pub(super) fn key_holds_back(&self, run_id: &str) -> Option<KeyWait<'_>> {
        let run = self.runs.get(run_id).filter(|r| !r.holds_key)?;
        let c = run.concurrency.as_ref()?;
        let holders: Vec<&str> = self
            .key_holders
            .get(&c.key)
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        let free = (c.limit as usize).saturating_sub(holders.len());
        if free == 0 {
            return Some(KeyWait {
                key: &c.key,
                holders,
                ahead: Vec::new(),
            });
        }
        let ahead: Vec<&str> = self
            .key_waiting
            .get(&c.key)
            .into_iter()
            .flatten()
            .map(|(_, _, id)| id.as_str())
            .take_while(|id| *id != run_id)
            .filter(|id| self.waits_for_key(id))
            .take(free)
            .collect();
        (ahead.len() >= free).then_some(KeyWait {
            key: &c.key,
            holders,
            ahead,
        })
    }

    /// Whether a run noted as waiting for its key still does: it is live,
    /// does not hold it, and its step in hand is ready on a queue that is
    /// not paused.
    fn waits_for_key(&self, run_id: &str) -> bool {
        let Some(run) = self
            .runs
            .get(run_id)
            .filter(|r| !r.state.is_final() && !r.holds_key)
        else {
            return false;
        };
        if self.quarantines.contains_key(&run.name) {
            return false;
        }
        run.step(run.current_step)
            .filter(|s| s.state == StepState::Queued)
            .and_then(|s| s.queue())
            .is_some_and(|q| self.queues.get(q).is_some_and(|q| !q.queue.paused))
    }
}
