//! Notifications: each event's outbox rows, made in the event's commit;
//! the derived events notifiers may ask for (`approval.overdue`,
//! `worker.offline_long`); and the event that gives one up.

use super::*;
use crate::notifications::payload;
use crate::store::{GivenUp, Notification};

impl State {
    /// Puts a notification of `event` in the outbox for every notifier
    /// whose filters match it, but `not_to`.
    pub(super) fn notify_of(&self, tx: &mut Tx, event: &pb::Event, not_to: Option<&str>) {
        if self.cfg.notify.is_empty() {
            return;
        }
        let run = (!event.run_id.is_empty())
            .then(|| self.runs.get(&event.run_id))
            .flatten();
        let queue = if event.queue.is_empty() {
            run.and_then(|r| r.step(event.step_index))
                .and_then(|s| s.queue())
                .unwrap_or_default()
        } else {
            event.queue.as_str()
        };
        for name in self.cfg.notify.matching(&event.kind, queue, run) {
            if not_to == Some(name) {
                continue;
            }
            let id = Notification::id_of(event.seq, name);
            let body = payload::body(&id, name, event, run, queue);
            tx.notifications.push(Notification::new(
                event.seq,
                &event.kind,
                name,
                tx.now,
                body,
            ));
        }
    }

    /// Gives up on notification `id` (to `notifier`, of event `seq` of
    /// `kind`) after `attempts`, with a `notification.failed` event in the
    /// same commit.
    #[allow(clippy::too_many_arguments)]
    pub fn notification_given_up(
        &mut self,
        tx: &mut Tx,
        id: &str,
        notifier: &str,
        kind: &str,
        seq: u64,
        attempts: u32,
        error: &str,
    ) {
        tx.given_up.push(GivenUp {
            id: id.to_owned(),
            at: tx.now,
            last_error: error.to_owned(),
        });
        let msg = format!(
            "notification {id} of event {seq} ({kind}) to {notifier} given up after {attempts} attempts: {error}"
        );
        let mut ev = Ev::new("notification.failed", msg);
        ev.not_to = Some(notifier.to_owned());
        self.emit(tx, &Actor::engine(), "", ev);
    }

    /// Sets the timer of a pending approval's `approval.overdue`.
    pub(super) fn set_overdue_timer(&mut self, a: &Approval) {
        if a.overdue_noted || a.state != ApprovalState::Pending {
            return;
        }
        if let Some(deadline) = a.deadline_at {
            let at = deadline - ms(self.cfg.approval_overdue_before);
            self.timers
                .push(Reverse((at, Timer::ApprovalOverdue(a.id.clone()))));
        }
    }

    /// `approval.overdue`: once per approval, while it is pending and
    /// before its deadline.
    pub(super) fn approval_overdue(&mut self, tx: &mut Tx, id: &str) {
        let Some(a) = self.approvals.get_mut(id) else {
            return;
        };
        let Some(deadline) = a.deadline_at else {
            return;
        };
        if a.state != ApprovalState::Pending || a.overdue_noted || deadline <= tx.now {
            return;
        }
        a.overdue_noted = true;
        tx.approvals.insert(id.to_owned());
        let left = std::time::Duration::from_millis(u64::try_from(deadline - tx.now).unwrap_or(0));
        let msg = format!(
            "approval {id} is still pending {} before its deadline; on_timeout = {}",
            humantime::format_duration(std::time::Duration::from_secs(left.as_secs())),
            a.spec.on_timeout.word()
        );
        let ev = Ev::new("approval.overdue", msg).approval(a);
        self.emit(tx, &Actor::engine(), "", ev);
    }

    /// Sets the timer of an offline worker's `worker.offline_long`, counted
    /// from `since`.
    pub(super) fn set_offline_long_timer(&mut self, id: &str, since: Millis) {
        let at = since + ms(self.cfg.worker_offline_after);
        self.timers
            .push(Reverse((at, Timer::OfflineLong(id.to_owned()))));
    }

    /// `worker.offline_long`: once per time offline.
    pub(super) fn offline_long(&mut self, tx: &mut Tx, id: &str) {
        let after = self.cfg.worker_offline_after;
        let Some(w) = self.workers.get_mut(id) else {
            return;
        };
        if w.state != WorkerState::Offline || w.offline_long_noted {
            return;
        }
        w.offline_long_noted = true;
        tx.workers.insert(id.to_owned());
        let msg = format!(
            "worker {id} has been offline for more than {}",
            humantime::format_duration(after)
        );
        self.emit(
            tx,
            &Actor::engine(),
            "",
            Ev::new("worker.offline_long", msg).on_worker(id),
        );
    }

    /// At load: the timers of workers offline and not noted yet.
    pub(super) fn load_offline_long_timers(&mut self) {
        let offline: Vec<(String, Millis)> = self
            .workers
            .values()
            .filter(|w| w.state == WorkerState::Offline && !w.offline_long_noted)
            .map(|w| {
                (
                    w.id.clone(),
                    w.last_heartbeat_at + ms(self.cfg.worker_timeout),
                )
            })
            .collect();
        for (id, since) in offline {
            self.set_offline_long_timer(&id, since);
        }
    }
}
