//! Timers: lease expiry, heartbeat loss, approval deadlines, retries
//! and stuck checks, fired by the core loop.

use super::*;

/// A timer this late means the engine itself did not run (a paused VM,
/// SIGSTOP, a swap storm): what was due meanwhile is not the workers' fault.
pub const STALL_MS: Millis = 2_000;

impl State {
    /// Notices that the engine stalled: the earliest timer, due at `due`,
    /// is more than [`STALL_MS`] late at `tx.now`. Workers could not be
    /// heard meanwhile, so every live lease and every worker gets a fresh
    /// window (a lease TTL, a worker timeout) before it expires or goes
    /// offline.
    pub fn notice_stall(&mut self, tx: &mut Tx, due: Option<Millis>) {
        let Some(late) = due.map(|d| tx.now - d).filter(|late| *late > STALL_MS) else {
            return;
        };
        let lease_until = tx.now + ms(self.cfg.lease_ttl);
        for lease in self.leases.values_mut() {
            lease.expires_at = lease.expires_at.max(lease_until);
        }
        self.heartbeat_grace_until = tx.now + ms(self.cfg.worker_timeout);
        let stalled = humantime::format_duration(std::time::Duration::from_millis(
            u64::try_from(late).unwrap_or(0),
        ));
        tracing::warn!(
            %stalled,
            "the engine stalled (its process did not run); leases and workers get a fresh heartbeat window"
        );
        let msg = format!(
            "the engine stalled for {stalled}; its {} live leases and connected workers get a fresh \
             heartbeat window before anything expires",
            self.leases.len()
        );
        self.emit(tx, &Actor::engine(), "", Ev::new("engine.stalled", msg));
    }

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
                    let due = (w.last_heartbeat_at + ms(self.cfg.worker_timeout))
                        .max(self.heartbeat_grace_until);
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
                    self.set_offline_long_timer(&id, tx.now);
                }
                Timer::ApprovalDeadline(id) => self.approval_timed_out(tx, &id),
                Timer::StuckCheck(id) => self.stuck_check(tx, &id),
                Timer::RunDeadline(id) => self.run_deadline(tx, &id),
                Timer::QuietCheck(id) => self.quiet_check(tx, &id),
                Timer::BreakerCooled(id) => self.breaker_cooled(tx, &id),
                Timer::ApprovalOverdue(id) => self.approval_overdue(tx, &id),
                Timer::OfflineLong(id) => self.offline_long(tx, &id),
                Timer::ScheduleDue(name) => self.schedule_due(tx, &name),
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
        let live = 2 * self.leases.len()
            + self.workers.len()
            + self.approvals.len()
            + self.schedules.len()
            + 64;
        if self.timers.len() <= 4 * live {
            return;
        }
        let mut seen: BTreeSet<Timer> = BTreeSet::new();
        let timers = std::mem::take(&mut self.timers).into_sorted_vec();
        // Sorted latest first (the heap holds `Reverse`): keep the earliest
        // of duplicates by walking from the end.
        for Reverse((at, timer)) in timers.into_iter().rev() {
            let alive = match &timer {
                Timer::LeaseExpiry(id) | Timer::StuckCheck(id) | Timer::QuietCheck(id) => {
                    self.leases.contains_key(id)
                }
                Timer::RunDeadline(id) => self.runs.get(id).is_some_and(|r| !r.state.is_final()),
                Timer::Heartbeat(id) | Timer::BreakerCooled(id) | Timer::OfflineLong(id) => {
                    self.workers.contains_key(id)
                }
                Timer::ScheduleDue(name) => self.schedules.contains_key(name),
                Timer::ApprovalDeadline(id) | Timer::ApprovalOverdue(id) => self
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
