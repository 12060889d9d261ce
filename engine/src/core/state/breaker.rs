//! A breaker per worker: a worker whose last attempts all failed or timed
//! out, while another worker succeeded on the same queue meanwhile, takes no
//! new work. It keeps what it runs. After the cool-down one step may go to
//! it (half-open); a success closes the breaker, a failure opens it again.
//! An operator closes it with `opsdeck reset-breaker`.

use super::*;
use crate::domain::Breaker;

/// What the breakers remember between results (this engine's memory only:
/// a restart starts every count again, and keeps open breakers open).
#[derive(Debug, Default)]
pub(super) struct Tracker {
    /// Per worker: attempts failed or timed out in a row, and when the
    /// first of them ended.
    streaks: HashMap<String, (u32, Millis)>,
    /// Per queue: the last success, and whose.
    successes: HashMap<String, (Millis, String)>,
}

impl State {
    /// Counts a result of `lease`'s attempt towards its worker's breaker.
    pub(super) fn breaker_result(&mut self, tx: &mut Tx, lease: &Lease, outcome: pb::Outcome) {
        let worker = lease.worker_id.as_str();
        match outcome {
            pb::Outcome::Succeeded => {
                self.breakers
                    .successes
                    .insert(lease.queue.clone(), (tx.now, worker.to_owned()));
                self.breakers.streaks.remove(worker);
                if self
                    .workers
                    .get(worker)
                    .is_some_and(|w| w.breaker.is_some())
                {
                    let msg = format!(
                        "worker {worker}'s breaker closed: a step succeeded on it; it takes work again"
                    );
                    self.close_breaker(tx, worker, &Actor::worker(worker), "", msg);
                }
            }
            pb::Outcome::Failed | pb::Outcome::TimedOut => {
                let streak = self
                    .breakers
                    .streaks
                    .entry(worker.to_owned())
                    .or_insert((0, tx.now));
                streak.0 += 1;
                let (count, since) = *streak;
                self.maybe_open_breaker(tx, lease, count, since);
            }
            _ => {}
        }
    }

    fn maybe_open_breaker(&mut self, tx: &mut Tx, lease: &Lease, count: u32, since: Millis) {
        let after = self.cfg.breaker_after;
        let worker = lease.worker_id.as_str();
        let Some(w) = self.workers.get(worker) else {
            return;
        };
        let half_open = w.breaker.as_ref().is_some_and(|b| b.half_open);
        if after == 0 || (count < after && !half_open) || (w.breaker.is_some() && !half_open) {
            return;
        }
        // Only a worker failing where others succeed: when every worker
        // fails, the steps are at fault, not the host.
        let Some((_, other)) = self
            .breakers
            .successes
            .get(&lease.queue)
            .filter(|(at, by)| *at >= since && by != worker)
            .cloned()
        else {
            if !half_open {
                return;
            }
            // A half-open trial that failed opens the breaker again.
            return self.open_breaker(
                tx,
                worker,
                count,
                "its trial step after the cool-down failed too".into(),
            );
        };
        let why = format!(
            "its last {count} attempts failed or timed out while {other} succeeded on queue {}",
            lease.queue
        );
        self.open_breaker(tx, worker, count, why);
    }

    pub(super) fn open_breaker(&mut self, tx: &mut Tx, worker: &str, count: u32, why: String) {
        let cooldown = self.cfg.breaker_cooldown;
        let Some(w) = self.workers.get_mut(worker) else {
            return;
        };
        let message = format!(
            "{why}; it takes no new work until `opsdeck reset-breaker {worker} --reason TEXT`, or one \
             step after {} that succeeds (breaker_after and breaker_cooldown in the engine config)",
            humantime::format_duration(cooldown)
        );
        w.breaker = Some(Breaker {
            opened_at: tx.now,
            failures: count,
            message: message.clone(),
            half_open: false,
        });
        tx.workers.insert(worker.to_owned());
        self.timers.push(Reverse((
            tx.now.saturating_add(ms(cooldown)),
            Timer::BreakerCooled(worker.to_owned()),
        )));
        let msg = format!("worker {worker}'s breaker opened: {message}");
        self.emit(
            tx,
            &Actor::engine(),
            "",
            Ev::new("worker.breaker_opened", msg).worker(worker),
        );
    }

    fn close_breaker(
        &mut self,
        tx: &mut Tx,
        worker: &str,
        actor: &Actor,
        reason: &str,
        msg: String,
    ) {
        let Some(w) = self.workers.get_mut(worker) else {
            return;
        };
        w.breaker = None;
        self.breakers.streaks.remove(worker);
        tx.workers.insert(worker.to_owned());
        self.emit(
            tx,
            actor,
            reason,
            Ev::new("worker.breaker_closed", msg).worker(worker),
        );
    }

    /// The cool-down of an open breaker passed: one step may go through.
    pub(super) fn breaker_cooled(&mut self, tx: &mut Tx, worker: &str) {
        let cooldown = ms(self.cfg.breaker_cooldown);
        let Some(w) = self.workers.get_mut(worker) else {
            return;
        };
        let Some(b) = w.breaker.as_mut().filter(|b| !b.half_open) else {
            return;
        };
        // Opened again since this timer was set: a later one is.
        if b.opened_at.saturating_add(cooldown) > tx.now {
            return;
        }
        b.half_open = true;
        tx.workers.insert(worker.to_owned());
        let msg = format!(
            "worker {worker}'s breaker half-open: one step may go to it, and a success closes the breaker"
        );
        self.emit(
            tx,
            &Actor::engine(),
            "",
            Ev::new("worker.breaker_half_open", msg).worker(worker),
        );
    }

    /// Of `free` slots of a worker, those dispatch may fill: none while
    /// its breaker is open, one at a time while it is half-open.
    pub(super) fn breaker_slots(&self, worker: &Worker, free: u32) -> u32 {
        match &worker.breaker {
            None => free,
            Some(b) if b.half_open && self.slots_taken(&worker.id) == 0 => free.min(1),
            Some(_) => 0,
        }
    }

    /// Cool-down timers of the open breakers of a state just loaded.
    pub(super) fn load_breaker_timers(&mut self) {
        let cooldown = ms(self.cfg.breaker_cooldown);
        let open: Vec<(Millis, String)> = self
            .workers
            .values()
            .filter_map(|w| {
                let b = w.breaker.as_ref().filter(|b| !b.half_open)?;
                Some((b.opened_at.saturating_add(cooldown), w.id.clone()))
            })
            .collect();
        for (at, id) in open {
            self.timers.push(Reverse((at, Timer::BreakerCooled(id))));
        }
    }

    /// An operator closes a worker's breaker.
    pub fn reset_breaker(
        &mut self,
        tx: &mut Tx,
        id: &str,
        actor: &Actor,
        reason: &str,
    ) -> EngineResult<pb::Worker> {
        let w = self
            .workers
            .get(id)
            .ok_or_else(|| not_found("worker", id, "opsdeck workers"))?;
        if w.breaker.is_none() {
            return Err(EngineError::FailedPrecondition(format!(
                "worker {id}'s breaker is not open; `opsdeck workers` shows each worker's breaker"
            )));
        }
        let msg = format!(
            "worker {id}'s breaker closed by {}: it takes work again",
            actor.name
        );
        self.close_breaker(tx, id, actor, reason, msg);
        self.get_worker(id)
    }
}
