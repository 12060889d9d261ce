//! Timers: lease expiry, heartbeat loss, approval deadlines, retries
//! and stuck checks, fired by the core loop.

use super::*;

impl State {
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

    /// Drops timers that can no longer fire anything (their lease ended,
    /// their approval was decided, their run left memory) and duplicates,
    /// once they outnumber the live ones: a lease's expiry timer stays in
    /// the heap for its TTL after the step is done, and at thousands of
    /// steps a second that is most of the heap.
    pub(super) fn compact_timers(&mut self) {
        let live = 2 * self.leases.len() + self.workers.len() + self.approvals.len() + 64;
        if self.timers.len() <= 4 * live {
            return;
        }
        let mut seen: BTreeSet<Timer> = BTreeSet::new();
        let timers = std::mem::take(&mut self.timers).into_sorted_vec();
        // Sorted latest first (the heap holds `Reverse`): keep the earliest
        // of duplicates by walking from the end.
        for Reverse((at, timer)) in timers.into_iter().rev() {
            let alive = match &timer {
                Timer::LeaseExpiry(id) | Timer::StuckCheck(id) => self.leases.contains_key(id),
                Timer::Heartbeat(id) => self.workers.contains_key(id),
                Timer::ApprovalDeadline(id) => self
                    .approvals
                    .get(id)
                    .is_some_and(|a| a.state == ApprovalState::Pending),
                Timer::RetryDue(run, index) => self
                    .runs
                    .get(run)
                    .and_then(|r| r.step(*index))
                    .is_some_and(|s| s.state == StepState::RetryWait),
            };
            if alive && seen.insert(timer.clone()) {
                self.timers.push(Reverse((at, timer)));
            }
        }
    }
}
